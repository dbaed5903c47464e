//! Tables written before anyone sees them: `CREATE TABLE ... AS`, `CREATE
//! OR REPLACE TABLE` and ADBC ingest in create or replace mode.
//!
//! The new table's shards are created under a fresh storage name
//! (`<name>__v<id>`, see `TableRecord.storage`), the data is written into
//! them, and one catalog write publishes the table: a compare-and-swap that
//! the name is still free, or that the replaced table is still at the
//! revision read at the start. Until then readers see the old table (or
//! none); a failure anywhere before it drops the new shards and leaves the
//! old table as it was. The replaced table's shards are dropped in the
//! background once the queries running at the switch have finished.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::logical_expr::LogicalPlan;

use crate::catalog::{Catalog, Distribution, TableMeta};
use crate::engine::Engine;
use crate::error::{Error, Result};
use crate::workers::WorkerPool;
use flight_worker::cancel::Cancels;

/// How long a replaced or moved shard is kept for the queries that still
/// read it.
pub(crate) const DRAIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Extra time for clients that hold direct-endpoint tickets of it.
pub(crate) const TICKET_GRACE: Duration = Duration::from_secs(2);

/// What `CREATE TABLE name` (or an ingest) finds under its name.
#[derive(Debug)]
pub enum Room {
    /// No such table.
    Free,
    /// The table exists and stays (`IF NOT EXISTS`).
    Keep,
    /// The table exists and is replaced: as read, at this catalog revision.
    Replace(TableMeta, u64),
}

/// A table to create: its name, schema and placement options.
#[derive(Debug)]
pub struct NewTable<'a> {
    pub name: &'a str,
    pub schema: SchemaRef,
    pub distribution: Distribution,
    pub shards: Option<u32>,
    pub replicas: Option<u32>,
}

/// A table whose shards exist on the workers but which is not in the
/// catalog yet. Publish it with [`Engine::publish`] or drop it with
/// [`Engine::discard`].
#[derive(Debug)]
pub struct StagedTable {
    pub meta: TableMeta,
    replaces: Option<(TableMeta, u64)>,
}

impl Engine {
    /// Looks up `name` before creating a table of that name: an existing
    /// table is kept (`if_not_exists`), replaced (`or_replace`) or an
    /// ALREADY_EXISTS error.
    pub async fn make_room(
        &self,
        name: &str,
        if_not_exists: bool,
        or_replace: bool,
    ) -> Result<Room> {
        match self.catalog.revision(name).await? {
            None => Ok(Room::Free),
            Some(_) if if_not_exists => Ok(Room::Keep),
            Some((meta, revision)) if or_replace => Ok(Room::Replace(meta, revision)),
            Some(_) => Err(Error::AlreadyExists(format!("table {name} already exists"))),
        }
    }

    /// Creates a table (or replaces it, per `room`) holding the rows of
    /// `input` if there is one, published once they are all written;
    /// returns the rows written.
    pub async fn create_with(
        &self,
        table: NewTable<'_>,
        room: Room,
        input: Option<(LogicalPlan, Option<&RecordBatch>)>,
    ) -> Result<i64> {
        let replaces = match room {
            Room::Keep => return Ok(0),
            Room::Free => None,
            Room::Replace(meta, revision) => Some((meta, revision)),
        };
        let NewTable {
            name,
            schema,
            distribution,
            shards,
            replicas,
        } = table;
        if replaces.is_none() && input.is_none() {
            self.new_table(name, schema, distribution, shards, replicas)
                .await?;
            return Ok(0);
        }
        let staged = self
            .stage_table(name, schema, distribution, shards, replicas, replaces)
            .await?;
        let loaded = match input {
            None => Ok(0),
            Some((plan, params)) => {
                async {
                    let query_id = crate::engine::statement_query_id();
                    let planned = self.plan_logical(plan, params, &query_id, true).await?;
                    self.load(&staged.meta, planned, true).await
                }
                .await
            }
        };
        match loaded {
            Ok(rows) => {
                self.publish(staged).await?;
                Ok(rows as i64)
            }
            Err(e) => {
                self.discard(staged).await;
                Err(e)
            }
        }
    }

    /// Places a new table and creates its (empty) shards under a fresh
    /// storage name; nothing is in the catalog yet.
    pub async fn stage_table(
        &self,
        name: &str,
        schema: SchemaRef,
        distribution: Distribution,
        shards: Option<u32>,
        replicas: Option<u32>,
        replaces: Option<(TableMeta, u64)>,
    ) -> Result<StagedTable> {
        let storage = fresh_storage(name);
        let meta = self
            .place_table(name, &storage, schema, distribution, shards, replicas)
            .await?;
        Ok(StagedTable { meta, replaces })
    }

    /// Empties a table (`TRUNCATE`, `DELETE` without `WHERE`): an empty
    /// staged copy with the same placement replaces it in one catalog
    /// write, so every shard and replica is emptied at once or not at all.
    /// Returns the rows deleted.
    pub async fn truncate(&self, name: &str) -> Result<i64> {
        // Writes through this coordinator finish first and wait for it.
        let lock = self.table_lock(name);
        let _writes_wait = lock.write().await;
        let (meta, revision) = self
            .catalog
            .revision(name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("table {name} does not exist")))?;
        let rows = self.row_count(&meta).await?;
        let empty = TableMeta {
            storage: fresh_storage(name),
            ..meta.clone()
        };
        self.create_shards(&empty).await?;
        self.publish(StagedTable {
            meta: empty,
            replaces: Some((meta, revision)),
        })
        .await?;
        Ok(rows)
    }

    /// The rows of a table: one live replica's count per shard.
    async fn row_count(&self, meta: &TableMeta) -> Result<i64> {
        let mut by_worker: std::collections::BTreeMap<String, Vec<fsql_proto::ShardTarget>> =
            Default::default();
        let mut counted = vec![false; meta.placement.len()];
        for (target, url) in crate::engine::replica_targets(&self.catalog, meta, false)? {
            if !std::mem::replace(&mut counted[target.shard as usize], true) {
                by_worker.entry(url).or_default().push(target);
            }
        }
        if let Some(shard) = counted.iter().position(|c| !c) {
            return Err(Error::Unavailable(format!(
                "shard {shard} of table {} has no live replica; retry when its worker is back",
                meta.name
            )));
        }
        let mut rows = 0;
        for (url, targets) in by_worker {
            for stat in self.pool.shard_stats(&url, targets).await? {
                rows += stat.rows as i64;
            }
        }
        Ok(rows)
    }

    /// Writes batches into a staged table (no one else knows it, so there
    /// is no lock to take and no placement to read again).
    pub async fn write_staged(
        &self,
        staged: &TableMeta,
        stream: impl futures::Stream<Item = Result<RecordBatch>> + Unpin,
    ) -> Result<u64> {
        let catalog = Arc::clone(&self.catalog);
        crate::ingest::write_table(&self.pool, move |id| catalog.worker_url(id), staged, stream)
            .await
    }

    /// Publishes a staged table with one conditional catalog write: the
    /// commit point. ALREADY_EXISTS (a new table) or ABORTED (a replaced
    /// one) when another statement changed the name meanwhile; then the
    /// staged shards are dropped.
    pub async fn publish(&self, staged: StagedTable) -> Result<Arc<TableMeta>> {
        let StagedTable { meta, replaces } = staged;
        let published = match &replaces {
            None => self.catalog.create_table(meta.clone()).await,
            Some((_, revision)) => self
                .catalog
                .replace_table(&meta, *revision)
                .await
                .map(|()| {
                    self.catalog
                        .table(&meta.name)
                        .unwrap_or_else(|| Arc::new(meta.clone()))
                }),
        };
        match published {
            Ok(table) => {
                if let Some((old, _)) = replaces {
                    self.retire(old);
                }
                Ok(table)
            }
            Err(e) => {
                self.drop_shards(&meta).await;
                Err(e)
            }
        }
    }

    /// Drops a staged table's shards (its statement failed).
    pub async fn discard(&self, staged: StagedTable) {
        for e in self.drop_shards(&staged.meta).await {
            tracing::warn!(table = %staged.meta.name, "dropping the shards of a failed write: {e}");
        }
    }

    /// Drops the shards of a table that was replaced, in the background,
    /// once the queries running now (which may read them) have finished.
    fn retire(&self, old: TableMeta) {
        let running = self.running_queries();
        let (catalog, pool, cancels) = (
            Arc::clone(&self.catalog),
            Arc::clone(&self.pool),
            self.cancels(),
        );
        tokio::spawn(async move {
            drained(&cancels, &running).await;
            for e in drop_replicas(&catalog, &pool, &old).await {
                tracing::warn!(table = %old.name, "dropping a shard of a replaced table: {e}");
            }
        });
    }
}

/// A storage name for a new copy of table `name`: `<name>__v<id>`.
fn fresh_storage(name: &str) -> String {
    let id = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}__v{}", &id[..12])
}

/// Waits (at most [`DRAIN_TIMEOUT`], then [`TICKET_GRACE`]) until none of the
/// queries in `running` runs any more.
pub(crate) async fn drained(cancels: &Cancels, running: &[String]) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while Instant::now() < deadline {
        let now = cancels.running();
        if !running.iter().any(|q| now.contains(q)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(TICKET_GRACE).await;
}

/// Drops every replica of a table's shards on the live workers; returns
/// what failed. Replicas on workers that are gone are left behind (a new
/// shard of the same name replaces them: see `Engine::fresh_shard`).
pub(crate) async fn drop_replicas(
    catalog: &Catalog,
    pool: &WorkerPool,
    meta: &TableMeta,
) -> Vec<Error> {
    let live = crate::engine::replica_targets(catalog, meta, false).unwrap_or_default();
    let results = futures::future::join_all(
        live.into_iter()
            .map(|(target, url)| crate::engine::drop_shard(pool, url, target)),
    )
    .await;
    results.into_iter().filter_map(|r| r.err()).collect()
}
