//! The in-process registry, and the in-memory catalog store shared with the
//! static registry.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use fsql_proto::{TableRecord, WorkerRecord};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{
    AnnounceTask, Announcement, CasOutcome, Registry, RegistryError, Result, VersionedTable,
    check_worker_record, keepalive_interval, publish,
};

/// In-process registry: membership with emulated leases and an in-memory
/// catalog. Clones share the same store.
#[derive(Debug, Clone)]
pub struct EmbeddedRegistry {
    members: Arc<Members>,
    catalog: Arc<MemCatalog>,
}

impl Default for EmbeddedRegistry {
    fn default() -> Self {
        Self::new()
    }
}

impl EmbeddedRegistry {
    pub fn new() -> Self {
        Self {
            members: Arc::new(Members::new()),
            catalog: Arc::new(MemCatalog::in_memory()),
        }
    }

    /// An in-process registry whose catalog is kept in `path` (a file of
    /// length-delimited `TableRecord`s, loaded if it exists): the `local`
    /// cluster's tables survive a restart.
    pub fn with_catalog_file(path: PathBuf) -> Result<Self> {
        Ok(Self {
            members: Arc::new(Members::new()),
            catalog: Arc::new(MemCatalog::open(path)?),
        })
    }
}

/// The live workers and their emulated leases.
#[derive(Debug)]
struct Members {
    state: Mutex<MemberState>,
    tx: watch::Sender<Vec<WorkerRecord>>,
}

#[derive(Debug, Default)]
struct MemberState {
    workers: BTreeMap<String, Lease>,
    next_lease: u64,
}

#[derive(Debug)]
struct Lease {
    record: WorkerRecord,
    lease: u64,
    deadline: Instant,
}

impl Members {
    fn new() -> Self {
        Self {
            state: Mutex::new(MemberState::default()),
            tx: watch::channel(Vec::new()).0,
        }
    }

    fn publish(&self, state: &MemberState) {
        publish(
            &self.tx,
            state.workers.values().map(|l| l.record.clone()).collect(),
        );
    }

    /// Puts `record` under a new lease and starts the lease's expiry task.
    fn register(self: &Arc<Self>, record: WorkerRecord, ttl: Duration) -> u64 {
        let mut state = self.state.lock();
        state.next_lease += 1;
        let lease = state.next_lease;
        let id = record.id.clone();
        let deadline = Instant::now() + ttl;
        state.workers.insert(
            id.clone(),
            Lease {
                record,
                lease,
                deadline,
            },
        );
        self.publish(&state);
        drop(state);
        let members = Arc::clone(self);
        tokio::spawn(async move { members.expire(id, lease, deadline).await });
        lease
    }

    /// Removes the record of `id` once its lease's deadline passes without
    /// a keepalive; ends when the lease is gone or replaced.
    async fn expire(&self, id: String, lease: u64, mut deadline: Instant) {
        loop {
            tokio::time::sleep_until(deadline).await;
            let mut state = self.state.lock();
            match state.workers.get(&id) {
                Some(l) if l.lease == lease => {
                    if l.deadline <= Instant::now() {
                        state.workers.remove(&id);
                        self.publish(&state);
                        tracing::info!(worker = %id, "embedded registry: lease expired");
                        return;
                    }
                    deadline = l.deadline;
                }
                _ => return,
            }
        }
    }

    /// Extends the lease; false if it is gone (expired or replaced).
    fn keepalive(&self, id: &str, lease: u64, ttl: Duration) -> bool {
        let mut state = self.state.lock();
        match state.workers.get_mut(id) {
            Some(l) if l.lease == lease => {
                l.deadline = Instant::now() + ttl;
                true
            }
            _ => false,
        }
    }

    /// Replaces the record under the lease; false if the lease is gone.
    fn update(&self, record: WorkerRecord, lease: u64) -> bool {
        let mut state = self.state.lock();
        match state.workers.get_mut(&record.id) {
            Some(l) if l.lease == lease => {
                l.record = record;
                self.publish(&state);
                true
            }
            _ => false,
        }
    }

    fn remove(&self, id: &str, lease: u64) {
        let mut state = self.state.lock();
        if state.workers.get(id).is_some_and(|l| l.lease == lease) {
            state.workers.remove(id);
            self.publish(&state);
        }
    }

    async fn run(self: Arc<Self>, ttl: Duration, mut task: AnnounceTask) {
        let record = task.record.borrow_and_update().clone();
        let id = record.id.clone();
        let mut lease = self.register(record, ttl);
        task.registered.send_replace(true);
        let mut tick = tokio::time::interval(keepalive_interval(ttl));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    if !self.keepalive(&id, lease, ttl) {
                        tracing::warn!(worker = %id, "embedded registry: lease lost; registering again");
                        lease = self.register(task.record.borrow().clone(), ttl);
                    }
                }
                changed = task.record.changed() => {
                    if changed.is_err() {
                        // The handle is gone without a withdraw: stop
                        // keeping the lease alive.
                        return;
                    }
                    let record = task.record.borrow_and_update().clone();
                    if !self.update(record.clone(), lease) {
                        lease = self.register(record, ttl);
                    }
                }
                request = &mut task.withdraw => {
                    self.remove(&id, lease);
                    task.registered.send_replace(false);
                    if let Ok(ack) = request {
                        let _ = ack.send(Ok(()));
                    }
                    return;
                }
            }
        }
    }
}

/// An in-memory catalog, optionally persisted to a file of length-delimited
/// `TableRecord`s (written to a temporary file and renamed on every change).
/// Revisions count changes of this store (starting at 1 when loaded).
#[derive(Debug)]
pub(super) struct MemCatalog {
    state: Mutex<CatalogState>,
    tx: watch::Sender<Vec<TableRecord>>,
    path: Option<PathBuf>,
}

#[derive(Debug, Default)]
struct CatalogState {
    tables: BTreeMap<String, VersionedTable>,
    revision: u64,
}

impl MemCatalog {
    pub(super) fn in_memory() -> Self {
        Self {
            state: Mutex::new(CatalogState::default()),
            tx: watch::channel(Vec::new()).0,
            path: None,
        }
    }

    /// A catalog kept in `path`, loaded if the file exists.
    pub(super) fn open(path: PathBuf) -> Result<Self> {
        let mut state = CatalogState::default();
        if path.exists() {
            let bytes = std::fs::read(&path).map_err(|source| RegistryError::Io {
                path: path.clone(),
                source,
            })?;
            let mut buf = Bytes::from(bytes);
            while !buf.is_empty() {
                let record = TableRecord::decode_length_delimited(&mut buf).map_err(|e| {
                    RegistryError::Corrupt {
                        key: path.display().to_string(),
                        reason: e.to_string(),
                    }
                })?;
                state.revision += 1;
                let revision = state.revision;
                state
                    .tables
                    .insert(record.name.clone(), VersionedTable { record, revision });
            }
        }
        let tables = state.tables.values().map(|t| t.record.clone()).collect();
        Ok(Self {
            state: Mutex::new(state),
            tx: watch::channel(tables).0,
            path: Some(path),
        })
    }

    fn persist(&self, state: &CatalogState) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut buf = Vec::new();
        for t in state.tables.values() {
            t.record
                .encode_length_delimited(&mut buf)
                .map_err(|e| RegistryError::Invalid(e.to_string()))?;
        }
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &buf)
            .and_then(|()| std::fs::rename(&tmp, path))
            .map_err(|source| RegistryError::Io {
                path: path.clone(),
                source,
            })
    }

    /// Applies `change` to a copy of the tables; if it reports a change
    /// (`.1`), persists the copy, then makes it current and publishes it.
    /// All under the lock, so a check inside `change` and the write are one
    /// atomic step.
    fn change<R>(
        &self,
        change: impl FnOnce(&mut BTreeMap<String, VersionedTable>, u64) -> (R, bool),
    ) -> Result<R> {
        let mut state = self.state.lock();
        let revision = state.revision + 1;
        let mut tables = state.tables.clone();
        let (out, changed) = change(&mut tables, revision);
        if !changed {
            return Ok(out);
        }
        let next = CatalogState { tables, revision };
        self.persist(&next)?;
        *state = next;
        publish(
            &self.tx,
            state.tables.values().map(|t| t.record.clone()).collect(),
        );
        Ok(out)
    }

    pub(super) fn tables(&self) -> Vec<TableRecord> {
        self.state
            .lock()
            .tables
            .values()
            .map(|t| t.record.clone())
            .collect()
    }

    pub(super) fn table(&self, name: &str) -> Option<VersionedTable> {
        self.state.lock().tables.get(name).cloned()
    }

    pub(super) fn put(&self, record: &TableRecord) -> Result<u64> {
        fsql_proto::registry::check_segment("table name", &record.name)?;
        self.change(|tables, revision| {
            tables.insert(
                record.name.clone(),
                VersionedTable {
                    record: record.clone(),
                    revision,
                },
            );
            (revision, true)
        })
    }

    pub(super) fn put_if(&self, record: &TableRecord, expected: u64) -> Result<CasOutcome> {
        fsql_proto::registry::check_segment("table name", &record.name)?;
        self.change(|tables, revision| {
            let current = tables.get(&record.name).map_or(0, |t| t.revision);
            if current != expected {
                return (CasOutcome::Conflict { current }, false);
            }
            tables.insert(
                record.name.clone(),
                VersionedTable {
                    record: record.clone(),
                    revision,
                },
            );
            (CasOutcome::Written { revision }, true)
        })
    }

    pub(super) fn delete(&self, name: &str) -> Result<bool> {
        self.change(|tables, _| {
            let removed = tables.remove(name).is_some();
            (removed, removed)
        })
    }

    pub(super) fn watch(&self) -> watch::Receiver<Vec<TableRecord>> {
        self.tx.subscribe()
    }
}

super::impl_registry_with_mem_catalog!(EmbeddedRegistry {
    fn describe(&self) -> String {
        "embedded".to_string()
    }

    async fn announce(&self, record: WorkerRecord, ttl: Duration) -> Result<Announcement> {
        check_worker_record(&record, ttl)?;
        let members = Arc::clone(&self.members);
        let announcement = Announcement::spawn(record, move |task| members.run(ttl, task));
        // The record is in the set when announce returns.
        let mut registered = announcement.registered();
        let _ = registered.wait_for(|r| *r).await;
        Ok(announcement)
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        Ok(self.members.tx.borrow().clone())
    }

    async fn watch_workers(&self) -> Result<watch::Receiver<Vec<WorkerRecord>>> {
        Ok(self.members.tx.subscribe())
    }

});
