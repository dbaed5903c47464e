//! Flight SQL bulk ingest (`CommandStatementIngest`, ADBC `adbc_ingest`).
//!
//! Resolves the target table according to the table-definition options
//! (create, fail, append, replace), creates it with the default
//! distribution when needed, and streams the uploaded batches through the
//! common shard router. A table created here is dropped again if the upload
//! fails, so a failed ingest leaves nothing behind.

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

    let mut created = false;
    let meta = match engine.catalog.table(&name) {
        Some(meta) => match if_exists {
            TableExistsOption::Append => meta,
            TableExistsOption::Replace => {
                let (dist, shards) = (meta.distribution.clone(), meta.shard_count);
                engine.drop_table(&name, true).await?;
                created = true;
                engine
                    .new_table(
                        &name,
                        storage_schema(&schema),
                        dist,
                        Some(shards),
                        Some(meta.replicas),
                    )
                    .await?
            }
            TableExistsOption::Fail | TableExistsOption::Unspecified => {
                return Err(Error::AlreadyExists(format!(
                    "table {name} already exists; ingest in append or replace mode"
                )));
            }
        },
        None => match if_not_exist {
            TableNotExistOption::Create => {
                created = true;
                engine
                    .new_table(
                        &name,
                        storage_schema(&schema),
                        Distribution::RoundRobin,
                        None,
                        None,
                    )
                    .await?
            }
            TableNotExistOption::Fail | TableNotExistOption::Unspecified => {
                return Err(Error::NotFound(format!(
                    "table {name} does not exist; ingest in create mode to create it"
                )));
            }
        },
    };
    if meta.schema.fields().len() != schema.fields().len() {
        return Err(Error::InvalidArgument(format!(
            "table {name} has {} columns but the upload has {}",
            meta.schema.fields().len(),
            schema.fields().len()
        )));
    }
    let batches = futures::stream::iter(first.map(Ok)).chain(
        stream.map_err(|e| Error::InvalidArgument(format!("reading the uploaded data: {e}"))),
    );
    match engine.write(&meta, Box::pin(batches)).await {
        Ok(rows) => Ok(rows as i64),
        Err(e) => {
            if created && let Err(drop_err) = engine.drop_table(&name, true).await {
                tracing::error!(table = %name, "dropping table after failed ingest: {drop_err}");
            }
            Err(e)
        }
    }
}
