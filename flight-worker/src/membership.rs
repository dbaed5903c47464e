//! A worker's place in the cluster's registry.
//!
//! [`join`] announces a running worker (its stable id, the Flight address
//! the coordinator and clients reach it at, the shards it holds, its version
//! and capacity) under a lease of the registry (see [`crate::registry`]),
//! and keeps the record's shard list current. Dropping the [`Membership`]
//! stops the keepalive, as a crash would: the record expires with its lease.
//! [`Membership::leave`] removes it at once (a clean shutdown).

use std::sync::Arc;
use std::time::Duration;

use fsql_proto::{ShardTarget, WorkerRecord};
use tokio::task::JoinHandle;

use crate::error::{Error, Result};
use crate::registry::{Announcement, Registry};
use crate::server::WorkerHandle;
use crate::storage::Storage;

/// How often the shard list of the record is compared with the database.
const SHARD_POLL: Duration = Duration::from_secs(2);

/// A worker's announcement and the task keeping its shard list current.
#[derive(Debug)]
pub struct Membership {
    announcement: Option<Announcement>,
    task: JoinHandle<()>,
}

/// Announces `worker` at `address` (a Flight URL such as
/// `grpc://host:port`) in `registry` under a lease of `ttl`.
pub async fn join(
    registry: &Arc<dyn Registry>,
    worker: &WorkerHandle,
    address: String,
    ttl: Duration,
    capacity: u32,
) -> Result<Membership> {
    let storage = worker.storage();
    let record = WorkerRecord {
        id: worker.id().to_string(),
        address,
        version: env!("CARGO_PKG_VERSION").to_string(),
        capacity,
        shards: shards(&storage).await?,
    };
    let announcement = registry
        .announce(record, ttl)
        .await
        .map_err(|e| Error::Config(format!("announcing in {}: {e}", registry.describe())))?;
    tracing::info!(
        worker_id = %announcement.id(),
        registry = %registry.describe(),
        ttl_secs = ttl.as_secs_f64(),
        "announced"
    );
    let updates = announcement.record_sender();
    let task = tokio::spawn(async move {
        loop {
            tokio::time::sleep(SHARD_POLL).await;
            match shards(&storage).await {
                Ok(now) => {
                    updates.send_if_modified(|record| {
                        if record.shards == now {
                            false
                        } else {
                            record.shards = now;
                            true
                        }
                    });
                }
                // The database is closing: the worker is shutting down.
                Err(Error::ShuttingDown) => return,
                Err(e) => tracing::warn!("listing shards for the registry: {e}"),
            }
        }
    });
    Ok(Membership {
        announcement: Some(announcement),
        task,
    })
}

impl Membership {
    /// Whether the record is in the registry as far as this worker knows,
    /// kept current.
    pub fn registered(&self) -> Option<tokio::sync::watch::Receiver<bool>> {
        self.announcement.as_ref().map(Announcement::registered)
    }

    /// Removes the record from the live set now (before a clean shutdown,
    /// so the coordinator stops sending work here at once).
    pub async fn leave(mut self) {
        self.task.abort();
        if let Some(announcement) = self.announcement.take() {
            let id = announcement.id().to_string();
            match tokio::time::timeout(Duration::from_secs(5), announcement.withdraw()).await {
                Ok(Ok(())) => tracing::info!(worker_id = %id, "left the registry"),
                Ok(Err(e)) => {
                    tracing::warn!(worker_id = %id, "leaving the registry: {e}; the record expires with its lease")
                }
                Err(_) => tracing::warn!(
                    worker_id = %id,
                    "the registry did not answer within 5 s; the record expires with its lease"
                ),
            }
        }
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The shards held in the worker's database, sorted.
async fn shards(storage: &Arc<Storage>) -> Result<Vec<ShardTarget>> {
    let storage = Arc::clone(storage);
    tokio::task::spawn_blocking(move || {
        let conn = storage.connect()?;
        list_shards(&conn)
    })
    .await?
}

/// Shard tables (`<table>__s<n>`, `<table>__ref`) of the database.
fn list_shards(conn: &duckdb::Connection) -> Result<Vec<ShardTarget>> {
    let mut stmt = conn
        .prepare(
            "SELECT table_name FROM duckdb_tables() \
             WHERE database_name = current_database() AND schema_name = current_schema() \
             ORDER BY table_name",
        )
        .map_err(Error::duckdb("listing shard tables"))?;
    let names = stmt
        .query_map([], |row| row.get::<_, String>(0))
        .map_err(Error::duckdb("listing shard tables"))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(Error::duckdb("listing shard tables"))?;
    Ok(names.iter().filter_map(|n| parse_shard_table(n)).collect())
}

/// The shard a DuckDB table name stands for (the inverse of
/// `fsql_proto::shard_table_name`).
fn parse_shard_table(name: &str) -> Option<ShardTarget> {
    let (table, suffix) = name.rsplit_once("__")?;
    if table.is_empty() {
        return None;
    }
    let (shard, reference) = match suffix {
        "ref" => (0, true),
        s => (s.strip_prefix('s')?.parse().ok()?, false),
    };
    Some(ShardTarget {
        table: table.to_string(),
        shard,
        reference,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_table_names_round_trip() {
        for (table, shard, reference) in [("t", 3, false), ("a__b", 0, true), ("x", 12, false)] {
            let name = fsql_proto::shard_table_name(table, shard, reference);
            let parsed = parse_shard_table(&name).unwrap();
            assert_eq!(
                (parsed.table.as_str(), parsed.shard, parsed.reference),
                (table, shard, reference)
            );
        }
        assert!(parse_shard_table("plain").is_none());
        assert!(parse_shard_table("t__sx").is_none());
    }
}
