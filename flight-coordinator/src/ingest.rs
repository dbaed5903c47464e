//! Routing rows to shards: the one write path behind `INSERT`, `CREATE
//! TABLE AS`, ADBC ingest and the demo loader.
//!
//! Each incoming batch is cast to the table's schema, checked against its
//! NOT NULL columns, split by the table's distribution (hash of the
//! distribution column, round robin, or a full copy for reference tables)
//! and streamed to every replica of every shard over one DoPut per replica,
//! through bounded channels so a slow worker slows the writer down.

use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::catalog::{Distribution, TableMeta};
use crate::error::{Error, Result};
use crate::workers::WorkerPool;

/// Casts `batch` to the table schema by position and checks NOT NULL.
pub fn conform(meta: &TableMeta, batch: &RecordBatch) -> Result<RecordBatch> {
    let schema = &meta.schema;
    if batch.num_columns() != schema.fields().len() {
        return Err(Error::InvalidArgument(format!(
            "table {} has {} columns but the data has {}",
            meta.name,
            schema.fields().len(),
            batch.num_columns()
        )));
    }
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(batch.num_columns());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        let c = if column.data_type() == field.data_type() {
            Arc::clone(column)
        } else {
            cast(column, field.data_type()).map_err(|e| {
                Error::InvalidArgument(format!(
                    "cannot store {} values in column {}.{} of type {}: {e}",
                    column.data_type(),
                    meta.name,
                    field.name(),
                    field.data_type()
                ))
            })?
        };
        if !field.is_nullable() && c.null_count() > 0 {
            return Err(Error::InvalidArgument(format!(
                "NULL value in column {}.{}, which is NOT NULL",
                meta.name,
                field.name()
            )));
        }
        columns.push(c);
    }
    Ok(RecordBatch::try_new(Arc::clone(schema), columns)?)
}

struct Destination {
    tx: mpsc::Sender<RecordBatch>,
    task: JoinHandle<Result<u64>>,
}

/// Writes a stream of batches into a table; returns the rows written.
pub async fn write_table(
    pool: &Arc<WorkerPool>,
    worker_url: impl Fn(&str) -> Option<String>,
    meta: &TableMeta,
    mut input: impl Stream<Item = Result<RecordBatch>> + Unpin,
) -> Result<u64> {
    let shards = meta.shard_count.max(1);
    let mut destinations: HashMap<(u32, String), Destination> = HashMap::new();
    let mut rows: u64 = 0;
    let mut rr_offset: u64 = 0;
    let reference = meta.is_reference();
    let hash_col = meta.hash_column();

    let result: Result<()> = async {
        while let Some(batch) = input.next().await {
            let batch = conform(meta, &batch?)?;
            if batch.num_rows() == 0 {
                continue;
            }
            rows += batch.num_rows() as u64;
            let parts: Vec<(u32, RecordBatch)> = if reference || shards == 1 {
                vec![(0, batch)]
            } else {
                let assignment: Vec<u32> = match (&meta.distribution, hash_col) {
                    (Distribution::Hash(_), Some(i)) => {
                        fsql_proto::hash::shard_of(batch.column(i), shards)
                            .map_err(Error::InvalidArgument)?
                    }
                    _ => {
                        let start = rr_offset;
                        rr_offset += batch.num_rows() as u64;
                        (0..batch.num_rows() as u64)
                            .map(|r| ((start + r) % u64::from(shards)) as u32)
                            .collect()
                    }
                };
                let mut idx: Vec<Vec<u32>> = vec![Vec::new(); shards as usize];
                for (row, s) in assignment.into_iter().enumerate() {
                    idx[s as usize].push(row as u32);
                }
                let mut parts = Vec::new();
                for (s, rows) in idx.into_iter().enumerate() {
                    if rows.is_empty() {
                        continue;
                    }
                    let part = take_record_batch(&batch, &UInt32Array::from(rows))?;
                    parts.push((s as u32, part));
                }
                parts
            };
            for (shard, part) in parts {
                let replicas = meta.placement.get(shard as usize).cloned().unwrap_or_default();
                if replicas.is_empty() {
                    return Err(Error::Internal(format!(
                        "shard {shard} of table {} has no placement",
                        meta.name
                    )));
                }
                for worker in replicas {
                    let key = (shard, worker.clone());
                    if !destinations.contains_key(&key) {
                        let url = worker_url(&worker).ok_or_else(|| {
                            Error::Unavailable(format!(
                                "cannot write shard {shard} of table {}: worker {worker} is not live",
                                meta.name
                            ))
                        })?;
                        let (tx, rx) = mpsc::channel(4);
                        let pool = Arc::clone(pool);
                        let target = fsql_proto::ShardTarget {
                            table: meta.name.clone(),
                            shard,
                            reference,
                        };
                        let task = tokio::spawn(crate::query_log::carry(async move {
                            pool.put(&url, target, ReceiverStream::new(rx)).await
                        }));
                        destinations.insert(key.clone(), Destination { tx, task });
                    }
                    let Some(dest) = destinations.get(&key) else {
                        continue;
                    };
                    if dest.tx.send(part.clone()).await.is_err() {
                        // The writer task ended early: report its error.
                        if let Some(dest) = destinations.remove(&key) {
                            return match dest.task.await {
                                Ok(Err(e)) => Err(e),
                                Ok(Ok(_)) => Err(Error::Internal(
                                    "shard writer stopped early".into(),
                                )),
                                Err(e) => Err(Error::Internal(e.to_string())),
                            };
                        }
                    }
                }
            }
        }
        Ok(())
    }
    .await;

    if let Err(e) = result {
        // Abort every shard write: dropping the in-flight DoPut resets its
        // stream, and the worker rolls that write back.
        for (_, dest) in destinations {
            dest.task.abort();
        }
        return Err(e);
    }
    let mut first_err = None;
    for (_, dest) in destinations {
        drop(dest.tx);
        let r = match dest.task.await {
            Ok(r) => r,
            Err(e) => Err(Error::Internal(format!("shard writer failed: {e}"))),
        };
        if let (Err(e), None) = (r, &first_err) {
            first_err = Some(e);
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(rows),
    }
}
