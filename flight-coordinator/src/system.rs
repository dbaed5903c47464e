//! The `system` schema: the cluster described as tables, computed when they
//! are read (at the coordinator; never sharded).
//!
//! * `system.workers`: every worker this coordinator has seen, live or gone;
//! * `system.tables`: the cluster tables with their layout, rows and bytes;
//! * `system.shards`: one row per shard with its replicas, rows and bytes;
//! * `system.queries`: the statements running on this coordinator and its
//!   recent history (`query_log`).
//!
//! Rows and bytes come from the workers (`shard_stats`), one request per
//! live worker; a shard whose replicas are all gone has NULL rows and bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use async_trait::async_trait;
use datafusion::catalog::{SchemaProvider, Session, TableProvider};
use datafusion::common::{DataFusionError, Result};
use datafusion::datasource::MemTable;
use datafusion::logical_expr::TableType;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::prelude::Expr;
use fsql_proto::ShardTarget;

use crate::catalog::{Catalog, TableMeta};
use crate::query_log::QueryLog;
use crate::workers::WorkerPool;

/// The schema name.
pub const SYSTEM_SCHEMA: &str = "system";

/// The tables of the `system` schema, in listing order.
pub const SYSTEM_TABLES: [&str; 4] = ["queries", "shards", "tables", "workers"];

/// The `system` schema.
#[derive(Debug)]
pub struct SystemSchema {
    pub catalog: Arc<Catalog>,
    pub pool: Arc<WorkerPool>,
    pub queries: Arc<QueryLog>,
}

#[async_trait]
impl SchemaProvider for SystemSchema {
    fn table_names(&self) -> Vec<String> {
        SYSTEM_TABLES.iter().map(|t| t.to_string()).collect()
    }

    async fn table(&self, name: &str) -> Result<Option<Arc<dyn TableProvider>>> {
        let kind = match name {
            "workers" => Kind::Workers,
            "tables" => Kind::Tables,
            "shards" => Kind::Shards,
            "queries" => Kind::Queries,
            _ => return Ok(None),
        };
        Ok(Some(Arc::new(SystemTable {
            kind,
            catalog: Arc::clone(&self.catalog),
            pool: Arc::clone(&self.pool),
            queries: Arc::clone(&self.queries),
        })))
    }

    fn table_exist(&self, name: &str) -> bool {
        SYSTEM_TABLES.contains(&name)
    }
}

/// The schema of a system table, by name (for catalog listings).
pub fn table_schema(name: &str) -> Option<SchemaRef> {
    Some(match name {
        "workers" => Kind::Workers.schema(),
        "tables" => Kind::Tables.schema(),
        "shards" => Kind::Shards.schema(),
        "queries" => Kind::Queries.schema(),
        _ => return None,
    })
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Workers,
    Tables,
    Shards,
    Queries,
}

fn utc_micros() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

impl Kind {
    fn schema(self) -> SchemaRef {
        let s = |n: &str| Field::new(n, DataType::Utf8, true);
        let i = |n: &str| Field::new(n, DataType::Int64, true);
        let t = |n: &str| Field::new(n, utc_micros(), true);
        Arc::new(Schema::new(match self {
            Kind::Workers => vec![
                s("id"),
                s("address"),
                s("state"),
                t("since"),
                t("last_heartbeat"),
                i("shards"),
                s("version"),
                i("capacity"),
            ],
            Kind::Tables => vec![
                s("name"),
                s("distribution"),
                i("shards"),
                i("replicas"),
                i("rows"),
                i("bytes"),
            ],
            Kind::Shards => vec![
                s("table"),
                i("shard"),
                s("workers"),
                i("live_replicas"),
                i("rows"),
                i("bytes"),
            ],
            Kind::Queries => vec![
                s("id"),
                s("user"),
                s("sql"),
                t("started"),
                Field::new("duration_ms", DataType::Float64, true),
                i("rows"),
                i("bytes"),
                s("state"),
                s("error"),
                s("endpoints"),
                s("progress"),
            ],
        }))
    }
}

#[derive(Debug)]
struct SystemTable {
    kind: Kind,
    catalog: Arc<Catalog>,
    pool: Arc<WorkerPool>,
    queries: Arc<QueryLog>,
}

#[async_trait]
impl TableProvider for SystemTable {
    fn schema(&self) -> SchemaRef {
        self.kind.schema()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let batch = match self.kind {
            Kind::Workers => self.workers(),
            Kind::Tables => self.tables().await,
            Kind::Shards => self.shards().await,
            Kind::Queries => self.queries(),
        }
        .map_err(|e| DataFusionError::ArrowError(Box::new(e), None))?;
        MemTable::try_new(batch.schema(), vec![vec![batch]])?
            .scan(state, projection, filters, limit)
            .await
    }
}

fn micros(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

/// Rows and bytes of one shard replica.
type Stat = (u64, u64);

impl SystemTable {
    fn queries(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let q = self.queries.entries();
        let text = |f: &dyn Fn(&crate::query_log::QueryEntry) -> Option<String>| -> ArrayRef {
            Arc::new(q.iter().map(f).collect::<StringArray>())
        };
        let int = |f: &dyn Fn(&crate::query_log::QueryEntry) -> Option<u64>| -> ArrayRef {
            Arc::new(
                q.iter()
                    .map(|e| f(e).map(|v| v as i64))
                    .collect::<Int64Array>(),
            )
        };
        RecordBatch::try_new(
            self.kind.schema(),
            vec![
                text(&|e| Some(e.id.clone())),
                text(&|e| Some(e.user.clone())),
                text(&|e| Some(e.sql.clone())),
                Arc::new(
                    q.iter()
                        .map(|e| Some(micros(e.started)))
                        .collect::<TimestampMicrosecondArray>()
                        .with_timezone("UTC"),
                ),
                Arc::new(
                    q.iter()
                        .map(|e| e.duration.map(|d| d.as_secs_f64() * 1000.0))
                        .collect::<arrow::array::Float64Array>(),
                ),
                int(&|e| e.rows),
                int(&|e| e.bytes),
                text(&|e| Some(e.state.to_string())),
                text(&|e| e.error.clone()),
                text(&|e| Some(e.endpoints.clone())),
                text(&|e| e.progress.clone()),
            ],
        )
    }

    fn workers(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let known = self.catalog.known_workers();
        let col = |f: &dyn Fn(&crate::catalog::KnownWorker) -> Option<String>| -> ArrayRef {
            Arc::new(known.iter().map(f).collect::<StringArray>())
        };
        let time = |f: &dyn Fn(&crate::catalog::KnownWorker) -> SystemTime| -> ArrayRef {
            Arc::new(
                known
                    .iter()
                    .map(|k| Some(micros(f(k))))
                    .collect::<TimestampMicrosecondArray>()
                    .with_timezone("UTC"),
            )
        };
        RecordBatch::try_new(
            self.kind.schema(),
            vec![
                col(&|k| Some(k.record.id.clone())),
                col(&|k| Some(k.record.address.clone())),
                col(&|k| Some(k.state.to_string())),
                time(&|k| k.since),
                time(&|k| k.last_seen),
                Arc::new(
                    known
                        .iter()
                        .map(|k| Some(k.record.shards.len() as i64))
                        .collect::<Int64Array>(),
                ),
                col(&|k| Some(k.record.version.clone()).filter(|v| !v.is_empty())),
                Arc::new(
                    known
                        .iter()
                        .map(|k| Some(i64::from(k.record.capacity)).filter(|c| *c > 0))
                        .collect::<Int64Array>(),
                ),
            ],
        )
    }

    /// Stats of every shard replica on a live worker, by (table, shard).
    async fn stats(&self, tables: &[Arc<TableMeta>]) -> HashMap<(String, u32), Stat> {
        let mut by_worker: BTreeMap<String, Vec<ShardTarget>> = BTreeMap::new();
        for t in tables {
            for (shard, workers) in t.placement.iter().enumerate() {
                for w in workers {
                    if let Some(url) = self.catalog.worker_url(w) {
                        by_worker.entry(url).or_default().push(ShardTarget {
                            table: t.storage.clone(),
                            shard: shard as u32,
                            reference: t.is_reference(),
                        });
                    }
                }
            }
        }
        let answers = futures::future::join_all(
            by_worker
                .into_iter()
                .map(|(url, targets)| async move { self.pool.shard_stats(&url, targets).await }),
        )
        .await;
        let mut out = HashMap::new();
        for answer in answers {
            match answer {
                Ok(stats) => {
                    for s in stats.into_iter().filter(|s| s.exists) {
                        if let Some(t) = s.target {
                            out.entry((t.table, t.shard)).or_insert((s.rows, s.bytes));
                        }
                    }
                }
                Err(e) => tracing::warn!("system tables: shard stats: {e}"),
            }
        }
        out
    }

    async fn tables(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let tables = self.catalog.tables();
        let stats = self.stats(&tables).await;
        let mut rows = Vec::new();
        let mut bytes = Vec::new();
        for t in &tables {
            let per_shard: Option<Vec<Stat>> = (0..t.placement.len())
                .map(|s| stats.get(&(t.storage.clone(), s as u32)).copied())
                .collect();
            let total = per_shard.map(|v| {
                v.iter()
                    .fold((0u64, 0u64), |(r, b), (r2, b2)| (r + r2, b + b2))
            });
            rows.push(total.map(|(r, _)| r as i64));
            bytes.push(total.map(|(_, b)| b as i64));
        }
        RecordBatch::try_new(
            self.kind.schema(),
            vec![
                Arc::new(
                    tables
                        .iter()
                        .map(|t| Some(t.name.clone()))
                        .collect::<StringArray>(),
                ),
                Arc::new(
                    tables
                        .iter()
                        .map(|t| Some(t.distribution.to_string()))
                        .collect::<StringArray>(),
                ),
                Arc::new(
                    tables
                        .iter()
                        .map(|t| Some(i64::from(t.shard_count)))
                        .collect::<Int64Array>(),
                ),
                Arc::new(
                    tables
                        .iter()
                        .map(|t| Some(i64::from(t.replicas)))
                        .collect::<Int64Array>(),
                ),
                Arc::new(Int64Array::from(rows)),
                Arc::new(Int64Array::from(bytes)),
            ],
        )
    }

    async fn shards(&self) -> Result<RecordBatch, arrow::error::ArrowError> {
        let tables = self.catalog.tables();
        let stats = self.stats(&tables).await;
        let (mut table, mut shard, mut workers, mut live, mut rows, mut bytes) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        for t in &tables {
            for (s, holders) in t.placement.iter().enumerate() {
                let stat = stats.get(&(t.storage.clone(), s as u32));
                table.push(Some(t.name.clone()));
                shard.push(Some(s as i64));
                workers.push(Some(holders.join(",")));
                live.push(Some(
                    holders
                        .iter()
                        .filter(|w| self.catalog.worker_url(w).is_some())
                        .count() as i64,
                ));
                rows.push(stat.map(|(r, _)| *r as i64));
                bytes.push(stat.map(|(_, b)| *b as i64));
            }
        }
        RecordBatch::try_new(
            self.kind.schema(),
            vec![
                Arc::new(StringArray::from(table)),
                Arc::new(Int64Array::from(shard)),
                Arc::new(StringArray::from(workers)),
                Arc::new(Int64Array::from(live)),
                Arc::new(Int64Array::from(rows)),
                Arc::new(Int64Array::from(bytes)),
            ],
        )
    }
}
