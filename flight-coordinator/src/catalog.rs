//! The cluster catalog: tables, their distribution and shard placement, and
//! the live workers, as the coordinator sees them in the registry.
//!
//! The registry (`flight_worker::registry`: embedded, static or etcd) is the
//! source of truth. [`Catalog`] follows its two watches: the catalog (every
//! `TableRecord`, placement included; another coordinator's changes arrive
//! the same way) and the live workers (records under leases). While the
//! registry is unreachable both views keep their last known state, so
//! queries go on; catalog changes fail with UNAVAILABLE. The catalog does
//! not talk to workers; DDL in `engine` does that and then records the
//! table once every shard agrees.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use arrow::datatypes::SchemaRef;
use flight_worker::registry::{CasOutcome, Registry, RegistryError};
use fsql_proto::{ShardPlacement, TableRecord, WorkerRecord, table_record};
use parking_lot::{Mutex, RwLock};
use tokio::sync::watch;

use crate::error::{Error, Result};

/// How long a catalog change may take to come back through the registry's
/// watch before the coordinator goes on without it.
const WATCH_WAIT: Duration = Duration::from_secs(5);

/// How a table's rows are spread over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// Hash of one column (see `fsql_proto::hash`).
    Hash(String),
    /// Rows dealt to shards in turn.
    RoundRobin,
    /// A full copy on every worker.
    Reference,
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distribution::Hash(c) => write!(f, "hash({c})"),
            Distribution::RoundRobin => f.write_str("round_robin"),
            Distribution::Reference => f.write_str("reference"),
        }
    }
}

/// One cluster table.
#[derive(Debug, Clone)]
pub struct TableMeta {
    pub name: String,
    /// Base name of the shard tables on the workers (the name, or a fresh
    /// one for a table that replaced another of its name).
    pub storage: String,
    pub schema: SchemaRef,
    pub distribution: Distribution,
    pub shard_count: u32,
    /// Copies of each shard, on distinct workers (1 for reference tables,
    /// which are copied to every worker anyway).
    pub replicas: u32,
    /// Worker ids holding each shard (index = shard). Reference tables have
    /// one entry listing every worker.
    pub placement: Vec<Vec<String>>,
}

impl TableMeta {
    pub fn is_reference(&self) -> bool {
        self.distribution == Distribution::Reference
    }

    /// Index of the hash distribution column in the schema.
    pub fn hash_column(&self) -> Option<usize> {
        match &self.distribution {
            Distribution::Hash(c) => self.schema.index_of(c).ok(),
            _ => None,
        }
    }

    pub fn to_record(&self) -> Result<TableRecord> {
        let (distribution, column) = match &self.distribution {
            Distribution::Hash(c) => (table_record::Distribution::Hash, c.clone()),
            Distribution::RoundRobin => (table_record::Distribution::RoundRobin, String::new()),
            Distribution::Reference => (table_record::Distribution::Reference, String::new()),
        };
        Ok(TableRecord {
            name: self.name.clone(),
            storage: if self.storage == self.name {
                String::new()
            } else {
                self.storage.clone()
            },
            schema: fsql_proto::ipc::schema_to_bytes(&self.schema)?,
            distribution: distribution as i32,
            distribution_column: column,
            shard_count: self.shard_count,
            replicas: self.replicas,
            placement: self
                .placement
                .iter()
                .enumerate()
                .map(|(i, w)| ShardPlacement {
                    shard: i as u32,
                    workers: w.clone(),
                })
                .collect(),
        })
    }

    pub fn from_record(r: &TableRecord) -> Result<Self> {
        let schema = fsql_proto::ipc::schema_from_bytes(&r.schema)?;
        let distribution = match table_record::Distribution::try_from(r.distribution) {
            Ok(table_record::Distribution::Hash) => {
                Distribution::Hash(r.distribution_column.clone())
            }
            Ok(table_record::Distribution::RoundRobin) => Distribution::RoundRobin,
            Ok(table_record::Distribution::Reference) => Distribution::Reference,
            Err(_) => {
                return Err(Error::Internal(format!(
                    "table record {} has unknown distribution {}",
                    r.name, r.distribution
                )));
            }
        };
        let mut placement = vec![Vec::new(); r.placement.len()];
        for p in &r.placement {
            if let Some(slot) = placement.get_mut(p.shard as usize) {
                *slot = p.workers.clone();
            }
        }
        Ok(Self {
            name: r.name.clone(),
            storage: if r.storage.is_empty() {
                r.name.clone()
            } else {
                r.storage.clone()
            },
            schema,
            distribution,
            shard_count: r.shard_count,
            replicas: r.replicas.max(1),
            placement,
        })
    }
}

/// A worker as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: String,
    /// `grpc://host:port`
    pub url: String,
}

/// Whether a known worker is in the live set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Live,
    /// Was live, left the set (lease expired or withdrawn).
    Gone,
}

impl std::fmt::Display for WorkerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            WorkerState::Live => "live",
            WorkerState::Gone => "gone",
        })
    }
}

/// A worker this coordinator has seen since it started.
#[derive(Debug, Clone)]
pub struct KnownWorker {
    /// Its last record.
    pub record: WorkerRecord,
    pub state: WorkerState,
    /// When it entered `state`.
    pub since: SystemTime,
    /// When the coordinator last saw it in the live set (now, for a live one).
    pub last_seen: SystemTime,
}

#[derive(Debug, Default)]
struct Members {
    live: Vec<WorkerInfo>,
    known: BTreeMap<String, KnownWorker>,
}

/// The tables as last read from the registry's watch.
#[derive(Debug)]
struct TableView {
    rx: watch::Receiver<Vec<TableRecord>>,
    tables: Arc<BTreeMap<String, Arc<TableMeta>>>,
}

/// Tables and workers, following the registry.
#[derive(Debug)]
pub struct Catalog {
    registry: Arc<dyn Registry>,
    tables: Mutex<TableView>,
    members: Arc<RwLock<Members>>,
    watcher: tokio::task::JoinHandle<()>,
}

impl Drop for Catalog {
    fn drop(&mut self) {
        self.watcher.abort();
    }
}

fn registry_error(e: RegistryError) -> Error {
    match e {
        RegistryError::Unavailable(m) => Error::Unavailable(format!(
            "the catalog store (registry) is unavailable: {m}; catalog changes are refused \
             until it is back (queries go on)"
        )),
        RegistryError::Invalid(m) => Error::InvalidArgument(m),
        other => Error::Internal(other.to_string()),
    }
}

impl Catalog {
    /// Reads the catalog and the live workers from `registry` and follows
    /// both. Fails when the registry cannot be reached now. With
    /// `tls_workers`, workers announcing a plaintext address are not used
    /// (clients of a TLS coordinator must never be sent to one).
    pub async fn open(registry: Arc<dyn Registry>, tls_workers: bool) -> Result<Self> {
        let tables_rx = registry.watch_tables().await.map_err(registry_error)?;
        let mut workers_rx = registry.watch_workers().await.map_err(registry_error)?;
        let members = Arc::new(RwLock::new(Members::default()));
        update_members(&members, &workers_rx.borrow_and_update(), tls_workers);
        let watcher = {
            let members = Arc::clone(&members);
            tokio::spawn(async move {
                while workers_rx.changed().await.is_ok() {
                    let records = workers_rx.borrow_and_update().clone();
                    update_members(&members, &records, tls_workers);
                }
            })
        };
        let mut view = TableView {
            rx: tables_rx,
            tables: Arc::default(),
        };
        refresh(&mut view, true);
        tracing::info!(
            registry = %registry.describe(),
            tables = view.tables.len(),
            workers = members.read().live.len(),
            "catalog loaded"
        );
        Ok(Self {
            registry,
            tables: Mutex::new(view),
            members,
            watcher,
        })
    }

    fn snapshot(&self) -> Arc<BTreeMap<String, Arc<TableMeta>>> {
        let mut view = self.tables.lock();
        refresh(&mut view, false);
        Arc::clone(&view.tables)
    }

    pub fn table(&self, name: &str) -> Option<Arc<TableMeta>> {
        self.snapshot().get(name).cloned()
    }

    pub fn tables(&self) -> Vec<Arc<TableMeta>> {
        self.snapshot().values().cloned().collect()
    }

    /// Records a new table; ALREADY_EXISTS when another coordinator
    /// created one of that name meanwhile.
    pub async fn create_table(&self, meta: TableMeta) -> Result<Arc<TableMeta>> {
        let record = meta.to_record()?;
        match self
            .registry
            .put_table_if(&record, 0)
            .await
            .map_err(registry_error)?
        {
            CasOutcome::Written { .. } => {}
            CasOutcome::Conflict { .. } => {
                return Err(Error::AlreadyExists(format!(
                    "table {} already exists",
                    meta.name
                )));
            }
        }
        self.wait_for(|tables| tables.contains(&record)).await;
        Ok(self.table(&meta.name).unwrap_or_else(|| Arc::new(meta)))
    }

    /// Replaces a table's record if it is still at `revision` (read with
    /// [`Self::revision`]); ABORTED when it changed meanwhile.
    pub async fn replace_table(&self, meta: &TableMeta, revision: u64) -> Result<()> {
        let record = meta.to_record()?;
        match self
            .registry
            .put_table_if(&record, revision)
            .await
            .map_err(registry_error)?
        {
            CasOutcome::Written { .. } => {
                self.wait_for(|tables| tables.contains(&record)).await;
                Ok(())
            }
            CasOutcome::Conflict { .. } => Err(Error::Aborted(format!(
                "table {} was changed by someone else meanwhile; retry",
                meta.name
            ))),
        }
    }

    /// A table as stored now, with its revision.
    pub async fn revision(&self, name: &str) -> Result<Option<(TableMeta, u64)>> {
        match self.registry.table(name).await.map_err(registry_error)? {
            Some(v) => Ok(Some((TableMeta::from_record(&v.record)?, v.revision))),
            None => Ok(None),
        }
    }

    pub async fn remove_table(&self, name: &str) -> Result<()> {
        self.registry
            .delete_table(name)
            .await
            .map_err(registry_error)?;
        self.wait_for(|tables| tables.iter().all(|t| t.name != name))
            .await;
        Ok(())
    }

    /// Waits (a bounded time) until the registry's watch shows a change
    /// this coordinator made, so its next statement sees it.
    async fn wait_for(&self, done: impl FnMut(&Vec<TableRecord>) -> bool) {
        let mut rx = self.tables.lock().rx.clone();
        if tokio::time::timeout(WATCH_WAIT, rx.wait_for(done))
            .await
            .is_err()
        {
            tracing::warn!(
                "a catalog change did not come back through the registry's watch within {WATCH_WAIT:?}"
            );
        }
    }

    /// Live workers, sorted by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.members.read().live.clone()
    }

    pub fn worker_url(&self, id: &str) -> Option<String> {
        self.members
            .read()
            .live
            .iter()
            .find(|w| w.id == id)
            .map(|w| w.url.clone())
    }

    /// Every worker seen since this coordinator started, live or gone.
    pub fn known_workers(&self) -> Vec<KnownWorker> {
        let now = SystemTime::now();
        self.members
            .read()
            .known
            .values()
            .map(|k| {
                let mut k = k.clone();
                if k.state == WorkerState::Live {
                    k.last_seen = now;
                }
                k
            })
            .collect()
    }

    /// `id` with its last known address, for error messages.
    pub fn describe_worker(&self, id: &str) -> String {
        match self.members.read().known.get(id) {
            Some(k) => format!("{id} at {}", k.record.address),
            None => id.to_string(),
        }
    }
}

/// Rebuilds the table map when the watch moved (or `force`), keeping the
/// `TableMeta` of unchanged records.
fn refresh(view: &mut TableView, force: bool) {
    if !force && !view.rx.has_changed().unwrap_or(false) {
        return;
    }
    let records = view.rx.borrow_and_update().clone();
    let mut tables = BTreeMap::new();
    for record in &records {
        let meta = match view.tables.get(&record.name) {
            Some(old) if old.to_record().ok().as_ref() == Some(record) => Arc::clone(old),
            _ => match TableMeta::from_record(record) {
                Ok(meta) => Arc::new(meta),
                Err(e) => {
                    tracing::error!(table = %record.name, "unreadable catalog record: {e}");
                    continue;
                }
            },
        };
        tables.insert(record.name.clone(), meta);
    }
    view.tables = Arc::new(tables);
}

/// Takes in a new live set: logs who joined and who left.
fn update_members(members: &RwLock<Members>, records: &[WorkerRecord], tls_workers: bool) {
    let now = SystemTime::now();
    let mut m = members.write();
    let mut live = Vec::new();
    for r in records {
        if tls_workers && !r.address.starts_with("grpc+tls://") {
            tracing::error!(
                worker_id = %r.id,
                address = %r.address,
                "not using a worker with a plaintext address: this coordinator serves TLS \
                 and must not send clients there; give the worker a TLS certificate"
            );
            continue;
        }
        live.push(WorkerInfo {
            id: r.id.clone(),
            url: r.address.clone(),
        });
        match m.known.get_mut(&r.id) {
            Some(k) if k.state == WorkerState::Live => {
                if k.record.address != r.address {
                    tracing::info!(worker_id = %r.id, address = %r.address, "worker moved");
                }
                k.record = r.clone();
            }
            _ => {
                tracing::info!(worker_id = %r.id, address = %r.address, "worker joined");
                m.known.insert(
                    r.id.clone(),
                    KnownWorker {
                        record: r.clone(),
                        state: WorkerState::Live,
                        since: now,
                        last_seen: now,
                    },
                );
            }
        }
    }
    live.sort_by(|a, b| a.id.cmp(&b.id));
    for (id, k) in m.known.iter_mut() {
        if k.state == WorkerState::Live && !live.iter().any(|w| &w.id == id) {
            tracing::warn!(worker_id = %id, address = %k.record.address, "worker left the live set");
            k.state = WorkerState::Gone;
            k.since = now;
            k.last_seen = now;
        }
    }
    m.live = live;
}
