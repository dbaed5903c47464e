//! Cluster membership and the catalog store: the [`Registry`] trait and its
//! three implementations.
//!
//! * [`EmbeddedRegistry`] (`embedded`): in-process. One value shared (as an
//!   `Arc`) by the coordinator and the workers of a `local` cluster and by
//!   tests. Leases are emulated: a worker whose announcement stops being
//!   kept alive leaves the live set within one TTL.
//! * [`StaticRegistry`] (`static://...`): a fixed list of worker addresses,
//!   all of them live; announcing is accepted and does nothing. The catalog
//!   is kept in memory, or in a file when one is named.
//! * [`EtcdRegistry`] (`etcd://...`): etcd v3 (3.4 or newer). Workers put
//!   their record under a lease kept alive every TTL/3; the coordinator
//!   watches the workers prefix; tables live under the catalog prefix.
//!
//! Keys and values (see [`fsql_proto::registry`]):
//!
//! ```text
//! /<prefix>/<cluster>/workers/<worker id>   WorkerRecord, prost-encoded, under the worker's lease
//! /<prefix>/<cluster>/catalog/<table>       TableRecord, prost-encoded (placement inside)
//! ```
//!
//! [`connect`] builds a registry from its URL. Every implementation passes
//! the same conformance suite (`tests/tests/registry.rs`).
//!
//! Revisions: [`Registry::table`] returns a table's revision, and
//! [`Registry::put_table_if`] writes only if the revision is still the one
//! read (0: the table must not exist), so two coordinators cannot overwrite
//! each other's catalog changes. For etcd a revision is the key's
//! `mod_revision`; for the in-process stores it is a counter of that store.

mod embedded;
mod etcd;
mod fixed;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fsql_proto::registry::{DEFAULT_PREFIX, KeyError, KeyLayout};
use fsql_proto::{TableRecord, WorkerRecord};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

pub use embedded::EmbeddedRegistry;
pub use etcd::{EtcdOptions, EtcdRegistry};
pub use fixed::{StaticRegistry, StaticWorker};

/// Default lease TTL of a worker's announcement.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// Default cluster name.
pub const DEFAULT_CLUSTER: &str = "default";

/// Result alias of the registry.
pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// What can go wrong talking to a registry.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry cannot be reached (etcd down, a request timed out).
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// A bad URL, name or record.
    #[error("invalid registry request: {0}")]
    Invalid(String),
    /// A stored value does not decode.
    #[error("corrupt registry entry {key}: {reason}")]
    Corrupt { key: String, reason: String },
    /// Reading or writing the catalog file of a static registry failed.
    #[error("registry file {path}: {source}")]
    Io {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl From<KeyError> for RegistryError {
    fn from(e: KeyError) -> Self {
        RegistryError::Invalid(e.to_string())
    }
}

/// A table record with the revision it was stored at.
#[derive(Debug, Clone, PartialEq)]
pub struct VersionedTable {
    pub record: TableRecord,
    /// Never 0 for a stored record.
    pub revision: u64,
}

/// Outcome of [`Registry::put_table_if`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CasOutcome {
    /// Written; the table's new revision.
    Written { revision: u64 },
    /// Not written: the table's current revision (0 when it does not exist)
    /// is not the one expected.
    Conflict { current: u64 },
}

/// Membership and catalog store of one cluster.
///
/// Worker side: [`announce`](Registry::announce). Coordinator side:
/// [`workers`](Registry::workers) and
/// [`watch_workers`](Registry::watch_workers) (the live set), and the
/// catalog methods. Lists are sorted by worker id and table name.
#[async_trait]
pub trait Registry: Send + Sync + fmt::Debug {
    /// The URL this registry was built from (`embedded`, `static://...`,
    /// `etcd://...`), for logs.
    fn describe(&self) -> String;

    /// Puts `record` into the live set until the returned handle is
    /// withdrawn or stops being kept alive (dropped, aborted, the process
    /// died): then the record leaves the set within `ttl`. The handle keeps
    /// the record alive in a background task (every `ttl / 3`) and
    /// re-registers it whenever the registry lost it (etcd restarted, the
    /// lease expired while etcd was unreachable). Fails only on a bad
    /// record or TTL; an unreachable etcd is retried in the background.
    async fn announce(&self, record: WorkerRecord, ttl: Duration) -> Result<Announcement>;

    /// The live workers, read now.
    async fn workers(&self) -> Result<Vec<WorkerRecord>>;

    /// The live workers, kept up to date. The first call reads the current
    /// set (and fails if the registry cannot be reached); afterwards the
    /// receiver holds the last known set, also while the registry is
    /// unreachable.
    async fn watch_workers(&self) -> Result<watch::Receiver<Vec<WorkerRecord>>>;

    /// Every table of the catalog, read now.
    async fn tables(&self) -> Result<Vec<TableRecord>>;

    /// One table and its revision.
    async fn table(&self, name: &str) -> Result<Option<VersionedTable>>;

    /// Creates or replaces a table; returns its new revision.
    async fn put_table(&self, record: &TableRecord) -> Result<u64>;

    /// Creates or replaces a table only if its revision is `expected` (0:
    /// only if it does not exist).
    async fn put_table_if(&self, record: &TableRecord, expected: u64) -> Result<CasOutcome>;

    /// Removes a table; false if there was none.
    async fn delete_table(&self, name: &str) -> Result<bool>;

    /// The catalog, kept up to date (changes made through any client of the
    /// same registry, e.g. another coordinator). Same contract as
    /// [`watch_workers`](Registry::watch_workers).
    async fn watch_tables(&self) -> Result<watch::Receiver<Vec<TableRecord>>>;
}

/// Options of [`connect`].
#[derive(Debug, Clone)]
pub struct RegistryOptions {
    /// The cluster name (second key segment). Default `default`.
    pub cluster: String,
    /// The first key segment. Default `fsql`.
    pub prefix: String,
    /// etcd connection settings.
    pub etcd: EtcdOptions,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        Self {
            cluster: DEFAULT_CLUSTER.to_string(),
            prefix: DEFAULT_PREFIX.to_string(),
            etcd: EtcdOptions::default(),
        }
    }
}

impl RegistryOptions {
    /// The key layout of these options.
    pub fn keys(&self) -> Result<KeyLayout> {
        Ok(KeyLayout::new(&self.prefix, &self.cluster)?)
    }
}

/// Builds a registry from its URL:
///
/// * `embedded` — a new in-process registry (share the returned `Arc` to
///   share the registry);
/// * `static://[ID@]HOST:PORT[,[ID@]HOST:PORT...][?catalog=PATH]` — fixed
///   workers (an entry may also be a full `grpc://` or `grpc+tls://` URL;
///   the id defaults to `HOST:PORT`), the catalog in memory or in `PATH`;
/// * `etcd://HOST:PORT[,HOST:PORT...]` — an etcd cluster (plain HTTP).
///
/// Connecting to etcd does not wait for it to be reachable.
pub async fn connect(url: &str, options: &RegistryOptions) -> Result<Arc<dyn Registry>> {
    let url = url.trim();
    let keys = options.keys()?;
    if url == "embedded" || url == "embedded://" {
        return Ok(Arc::new(EmbeddedRegistry::new()));
    }
    if let Some(rest) = url.strip_prefix("static://") {
        return Ok(Arc::new(StaticRegistry::from_url_body(rest)?));
    }
    if let Some(rest) = url.strip_prefix("etcd://") {
        let endpoints = parse_etcd_endpoints(rest)?;
        return Ok(Arc::new(
            EtcdRegistry::connect(&endpoints, keys, options.etcd.clone()).await?,
        ));
    }
    Err(RegistryError::Invalid(format!(
        "unknown registry {url:?}: expected `embedded`, `static://HOST:PORT,...` or \
         `etcd://HOST:PORT,...`"
    )))
}

/// `HOST:PORT[,HOST:PORT...]` to etcd endpoint URLs (`http://HOST:PORT`).
fn parse_etcd_endpoints(body: &str) -> Result<Vec<String>> {
    let body = body.trim_end_matches('/');
    let mut endpoints = Vec::new();
    for part in body.split(',').map(str::trim) {
        if part.is_empty() {
            continue;
        }
        if part.contains('/') || !part.contains(':') {
            return Err(RegistryError::Invalid(format!(
                "etcd endpoint {part:?} is not HOST:PORT"
            )));
        }
        endpoints.push(format!("http://{part}"));
    }
    if endpoints.is_empty() {
        return Err(RegistryError::Invalid(
            "etcd:// needs at least one HOST:PORT".into(),
        ));
    }
    Ok(endpoints)
}

/// Checks a record before it is announced.
fn check_worker_record(record: &WorkerRecord, ttl: Duration) -> Result<()> {
    fsql_proto::registry::check_segment("worker id", &record.id)?;
    if ttl < Duration::from_secs(1) {
        return Err(RegistryError::Invalid(format!(
            "lease TTL {ttl:?} is shorter than one second"
        )));
    }
    Ok(())
}

/// The keepalive interval of a lease of `ttl`.
fn keepalive_interval(ttl: Duration) -> Duration {
    (ttl / 3).max(Duration::from_millis(100))
}

/// Exponential backoff between `min` and `max`.
#[derive(Debug)]
struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            next: min,
        }
    }

    fn next(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    fn reset(&mut self) {
        self.next = self.min;
    }
}

/// A withdraw request: answered when the record is gone.
type WithdrawRequest = oneshot::Sender<Result<()>>;

/// What the background task of an announcement receives.
struct AnnounceTask {
    record: watch::Receiver<WorkerRecord>,
    withdraw: oneshot::Receiver<WithdrawRequest>,
    registered: watch::Sender<bool>,
}

/// A worker's presence in the registry (see [`Registry::announce`]).
///
/// Dropping it (or [`abort`](Announcement::abort)) stops the keepalive
/// without removing the record, as if the process died: the record leaves
/// the live set when its lease runs out. [`withdraw`](Announcement::withdraw)
/// removes it at once.
pub struct Announcement {
    id: String,
    record: watch::Sender<WorkerRecord>,
    withdraw: Option<oneshot::Sender<WithdrawRequest>>,
    registered: watch::Receiver<bool>,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Announcement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Announcement")
            .field("id", &self.id)
            .field("registered", &*self.registered.borrow())
            .finish()
    }
}

impl Announcement {
    /// Starts `run` as the background task of an announcement of `record`.
    fn spawn<F, Fut>(record: WorkerRecord, run: F) -> Self
    where
        F: FnOnce(AnnounceTask) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let id = record.id.clone();
        let (record_tx, record_rx) = watch::channel(record);
        let (withdraw_tx, withdraw_rx) = oneshot::channel();
        let (registered_tx, registered_rx) = watch::channel(false);
        let task = tokio::spawn(run(AnnounceTask {
            record: record_rx,
            withdraw: withdraw_rx,
            registered: registered_tx,
        }));
        Self {
            id,
            record: record_tx,
            withdraw: Some(withdraw_tx),
            registered: registered_rx,
            task: Some(task),
        }
    }

    /// The announced worker id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The record as last given (it is in the registry once the registry
    /// is reachable).
    pub fn record(&self) -> WorkerRecord {
        self.record.borrow().clone()
    }

    /// Replaces the announced record (e.g. the shards held changed). The id
    /// must stay the same. Written in the background, at once when the
    /// registry is reachable.
    pub fn update(&self, record: WorkerRecord) -> Result<()> {
        if record.id != self.id {
            return Err(RegistryError::Invalid(format!(
                "an announcement of worker {} cannot announce worker {}",
                self.id, record.id
            )));
        }
        self.record.send_replace(record);
        Ok(())
    }

    /// A handle changing the announced record in place (the id must stay
    /// the same), e.g. from a task that keeps the shard list current.
    pub(crate) fn record_sender(&self) -> watch::Sender<WorkerRecord> {
        self.record.clone()
    }

    /// Whether the record is in the registry as far as this worker knows
    /// (false while etcd is unreachable and until it has re-registered).
    pub fn is_registered(&self) -> bool {
        *self.registered.borrow()
    }

    /// Follows [`is_registered`](Announcement::is_registered).
    pub fn registered(&self) -> watch::Receiver<bool> {
        self.registered.clone()
    }

    /// Removes the record from the live set now and stops the keepalive.
    pub async fn withdraw(mut self) -> Result<()> {
        let Some(tx) = self.withdraw.take() else {
            return Ok(());
        };
        let (ack_tx, ack_rx) = oneshot::channel();
        if tx.send(ack_tx).is_err() {
            return Err(RegistryError::Unavailable(
                "the announcement task has stopped".into(),
            ));
        }
        let result = ack_rx.await.unwrap_or_else(|_| {
            Err(RegistryError::Unavailable(
                "the announcement task has stopped".into(),
            ))
        });
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
        result
    }

    /// Stops the keepalive without removing the record (it expires with
    /// its lease), as if the worker process died.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Announcement {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// `impl Registry for $ty` with the given membership methods and the catalog
/// methods of a `MemCatalog` in the field `catalog` (the embedded and static
/// registries).
macro_rules! impl_registry_with_mem_catalog {
    ($ty:ty { $($membership:tt)* }) => {
        #[async_trait]
        impl Registry for $ty {
        $($membership)*

        async fn tables(&self) -> Result<Vec<TableRecord>> {
            Ok(self.catalog.tables())
        }

        async fn table(&self, name: &str) -> Result<Option<VersionedTable>> {
            Ok(self.catalog.table(name))
        }

        async fn put_table(&self, record: &TableRecord) -> Result<u64> {
            self.catalog.put(record)
        }

        async fn put_table_if(&self, record: &TableRecord, expected: u64) -> Result<CasOutcome> {
            self.catalog.put_if(record, expected)
        }

        async fn delete_table(&self, name: &str) -> Result<bool> {
            self.catalog.delete(name)
        }

        async fn watch_tables(&self) -> Result<watch::Receiver<Vec<TableRecord>>> {
            Ok(self.catalog.watch())
        }
        }
    };
}
use impl_registry_with_mem_catalog;

/// Publishes `new` into `tx` if it differs from the current value.
fn publish<T: PartialEq>(tx: &watch::Sender<Vec<T>>, new: Vec<T>) {
    tx.send_if_modified(|current| {
        if *current == new {
            false
        } else {
            *current = new;
            true
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_endpoints() -> Result<()> {
        assert_eq!(
            parse_etcd_endpoints("a:2379, b:2379/")?,
            vec!["http://a:2379", "http://b:2379"]
        );
        assert!(parse_etcd_endpoints("").is_err());
        assert!(parse_etcd_endpoints("a").is_err());
        Ok(())
    }

    #[test]
    fn backoff() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        assert_eq!(b.next(), Duration::from_millis(100));
        assert_eq!(b.next(), Duration::from_millis(200));
        assert_eq!(b.next(), Duration::from_millis(300));
        assert_eq!(b.next(), Duration::from_millis(300));
        b.reset();
        assert_eq!(b.next(), Duration::from_millis(100));
    }
}
