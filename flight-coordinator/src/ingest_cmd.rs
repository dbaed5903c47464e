//! Flight SQL bulk ingest (`CommandStatementIngest`, ADBC `adbc_ingest`).
//!
//! Resolves the target table according to the table-definition options
//! (create, fail, append, replace), creates it with the default
//! distribution when needed, and streams the uploaded batches through the
//! common shard router. A table created or replaced here is written as a
//! staged table (`staged`) and published only once every row is in, so a
//! failed ingest leaves nothing behind and a failed replace keeps the old
//! table.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::error::FlightError;
use arrow_flight::sql::server::PeekableFlightDataStream;
use arrow_flight::sql::{CommandStatementIngest, TableExistsOption, TableNotExistOption};
use futures::{StreamExt, TryStreamExt};

use crate::catalog::Distribution;
use crate::engine::Engine;
use crate::error::{Error, Result};

/// Storage types for uploaded columns (views, dictionaries and large
/// variants are stored as their plain forms, nested members included).
fn storage_type(dt: &DataType) -> DataType {
    match crate::types::client_type(dt) {
        DataType::LargeUtf8 => DataType::Utf8,
        DataType::LargeBinary => DataType::Binary,
        other => other,
    }
}

/// The table schema for an upload. Field metadata is kept, so a column
/// marked with its DuckDB type (`HUGEINT`, `UUID`; see `docs/types.md`),
/// as in this cluster's own results, keeps that type.
fn storage_schema(schema: &Schema) -> SchemaRef {
    Arc::new(Schema::new(
        schema
            .fields()
            .iter()
            .map(|f| {
                Field::new(f.name(), storage_type(f.data_type()), f.is_nullable())
                    .with_metadata(f.metadata().clone())
            })
            .collect::<Vec<_>>(),
    ))
}

pub async fn ingest(
    engine: &Engine,
    cmd: CommandStatementIngest,
    input: PeekableFlightDataStream,
) -> Result<i64> {
    if cmd.transaction_id.is_some() {
        return Err(Error::Unsupported("transactions are not supported".into()));
    }
    if cmd.temporary {
        return Err(Error::Unsupported(
            "temporary tables are not supported; ingest into a regular table".into(),
        ));
    }
    let name = cmd.table.clone();
    if name.is_empty() {
        return Err(Error::InvalidArgument("ingest needs a table name".into()));
    }
    let opts = cmd.table_definition_options.unwrap_or_default();
    let if_not_exist = TableNotExistOption::try_from(opts.if_not_exist)
        .unwrap_or(TableNotExistOption::Unspecified);
    let if_exists =
        TableExistsOption::try_from(opts.if_exists).unwrap_or(TableExistsOption::Unspecified);

    let mut stream =
        FlightRecordBatchStream::new_from_flight_data(input.map_err(FlightError::from));
    let first = stream
        .next()
        .await
        .transpose()
        .map_err(|e| Error::InvalidArgument(format!("reading the uploaded data: {e}")))?;
    let schema = match (&first, stream.schema()) {
        (Some(b), _) => b.schema(),
        (None, Some(s)) => Arc::clone(s),
        (None, None) => {
            return Err(Error::InvalidArgument(
                "the upload carries no schema".into(),
            ));
        }
    };

    // Append: into the table as it is. Create and replace: into a staged
    // table, published (or swapped in) once every row is written.
    let (meta, staged) = match engine.catalog.revision(&name).await? {
        Some((meta, revision)) => match if_exists {
            TableExistsOption::Append => (meta, None),
            TableExistsOption::Replace => {
                let staged = engine
                    .stage_table(
                        &name,
                        storage_schema(&schema),
                        meta.distribution.clone(),
                        Some(meta.shard_count),
                        Some(meta.replicas),
                        Some((meta, revision)),
                    )
                    .await?;
                (staged.meta.clone(), Some(staged))
            }
            TableExistsOption::Fail | TableExistsOption::Unspecified => {
                return Err(Error::AlreadyExists(format!(
                    "table {name} already exists; ingest in append or replace mode"
                )));
            }
        },
        None => match if_not_exist {
            TableNotExistOption::Create => {
                let staged = engine
                    .stage_table(
                        &name,
                        storage_schema(&schema),
                        Distribution::RoundRobin,
                        None,
                        None,
                        None,
                    )
                    .await?;
                (staged.meta.clone(), Some(staged))
            }
            TableNotExistOption::Fail | TableNotExistOption::Unspecified => {
                return Err(Error::NotFound(format!(
                    "table {name} does not exist; ingest in create mode to create it"
                )));
            }
        },
    };
    let written = async {
        if meta.schema.fields().len() != schema.fields().len() {
            return Err(Error::InvalidArgument(format!(
                "table {name} has {} columns but the upload has {}",
                meta.schema.fields().len(),
                schema.fields().len()
            )));
        }
        let batches = Box::pin(futures::stream::iter(first.map(Ok)).chain(
            stream.map_err(|e| Error::InvalidArgument(format!("reading the uploaded data: {e}"))),
        ));
        match &staged {
            Some(staged) => engine.write_staged(&staged.meta, batches).await,
            None => engine.write(&meta, batches).await,
        }
    }
    .await;
    match (written, staged) {
        (Ok(rows), Some(staged)) => {
            engine.publish(staged).await?;
            Ok(rows as i64)
        }
        (Ok(rows), None) => Ok(rows as i64),
        (Err(e), Some(staged)) => {
            engine.discard(staged).await;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}
