//! Routing rows to shards: the one write path behind `INSERT`, `CREATE
//! TABLE AS`, ADBC ingest and the demo loader.
//!
//! Each incoming batch is cast to the table's schema, checked against its
//! NOT NULL columns, split by the table's distribution (hash of the
//! distribution column, round robin, or a full copy for reference tables)
//! and streamed to every replica of every shard over one two-phase DoPut per
//! replica, through bounded channels so a slow worker slows the writer down.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use arrow::array::{ArrayRef, RecordBatch, UInt32Array};
use arrow::compute::{cast, take_record_batch};
use futures::{Stream, StreamExt};

use crate::catalog::{Distribution, TableMeta};
use crate::error::{Error, Result};
use crate::workers::{ShardWriter, WorkerPool};

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

/// Writes a stream of batches into a table; returns the rows written.
///
/// Each shard replica written to gets one two-phase write
/// ([`ShardWriter`]). Once every row is sent, all of them are prepared (each
/// worker holds its rows in an open transaction, so conversion and
/// constraint errors have surfaced), and only when every one is prepared
/// are they committed. Any error before that, in the input or on a worker,
/// rolls every replica back.
pub async fn write_table(
    pool: &Arc<WorkerPool>,
    worker_url: impl Fn(&str) -> Option<String>,
    meta: &TableMeta,
    mut input: impl Stream<Item = Result<RecordBatch>> + Unpin,
) -> Result<u64> {
    let shards = meta.shard_count.max(1);
    // Dropped on an early return: every replica's write rolls back.
    let mut writers: HashMap<(u32, String), ShardWriter> = HashMap::new();
    let mut rows: u64 = 0;
    let mut rr_offset: u64 = 0;
    let reference = meta.is_reference();
    let hash_col = meta.hash_column();

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
            let replicas = meta
                .placement
                .get(shard as usize)
                .cloned()
                .unwrap_or_default();
            if replicas.is_empty() {
                return Err(Error::Internal(format!(
                    "shard {shard} of table {} has no placement",
                    meta.name
                )));
            }
            for worker in replicas {
                let writer = match writers.entry((shard, worker)) {
                    Entry::Occupied(e) => e.into_mut(),
                    Entry::Vacant(e) => {
                        let worker = &e.key().1;
                        let url = worker_url(worker).ok_or_else(|| {
                            Error::Unavailable(format!(
                                "cannot write shard {shard} of table {}: worker {worker} is not live",
                                meta.name
                            ))
                        })?;
                        let target = fsql_proto::ShardTarget {
                            table: meta.storage.clone(),
                            shard,
                            reference,
                        };
                        e.insert(pool.open_write(&url, target, Arc::clone(&meta.schema))?)
                    }
                };
                writer.send(part.clone()).await?;
            }
        }
    }

    // Phase one: every replica holds its rows, not yet visible.
    let prepared = futures::future::join_all(writers.values_mut().map(ShardWriter::prepare)).await;
    if let Some(e) = prepared.into_iter().find_map(Result::err) {
        return Err(e);
    }
    // Phase two.
    let committed = futures::future::join_all(
        writers
            .into_iter()
            .map(|((shard, worker), w)| async move { (shard, worker, w.commit().await) }),
    )
    .await;
    let failed: Vec<String> = committed
        .into_iter()
        .filter_map(|(shard, worker, r)| r.err().map(|e| format!("shard {shard} on {worker}: {e}")))
        .collect();
    if failed.is_empty() {
        return Ok(rows);
    }
    Err(Error::Internal(format!(
        "the write to table {} was prepared on every shard replica but its commit failed on \
         some ({}); the other replicas committed, so the table may hold part of the statement",
        meta.name,
        failed.join("; ")
    )))
}
