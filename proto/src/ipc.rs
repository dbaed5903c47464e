//! Arrow IPC helpers for schemas and batches carried inside messages.

use arrow::datatypes::{Schema, SchemaRef};
use arrow::error::ArrowError;
use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::{IpcWriteOptions, StreamWriter};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use std::sync::Arc;

/// Encodes a schema as an IPC stream with no batches.
pub fn schema_to_bytes(schema: &Schema) -> Result<Bytes, ArrowError> {
    batches_to_bytes(schema, &[])
}

/// Decodes a schema written by [`schema_to_bytes`].
pub fn schema_from_bytes(bytes: &[u8]) -> Result<SchemaRef, ArrowError> {
    let reader = StreamReader::try_new(bytes, None)?;
    Ok(reader.schema())
}

/// Encodes batches as one IPC stream.
pub fn batches_to_bytes(schema: &Schema, batches: &[RecordBatch]) -> Result<Bytes, ArrowError> {
    let mut buf = Vec::new();
    {
        let mut w =
            StreamWriter::try_new_with_options(&mut buf, schema, IpcWriteOptions::default())?;
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    Ok(Bytes::from(buf))
}

/// Decodes an IPC stream into its schema and batches.
pub fn batches_from_bytes(bytes: &[u8]) -> Result<(SchemaRef, Vec<RecordBatch>), ArrowError> {
    let reader = StreamReader::try_new(bytes, None)?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok((Arc::clone(&schema), batches))
}
