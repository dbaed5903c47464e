//! The etcd registry (etcd v3 API; etcd 3.4 or newer).
//!
//! * A worker's announcement grants a lease of the TTL less one keepalive
//!   interval (whole seconds, at least 1), so that a worker dying just after
//!   a keepalive still leaves the live set within the TTL (etcd checks
//!   expiry every 500 ms), puts its `WorkerRecord` under
//!   `/<prefix>/<cluster>/workers/<id>` with that lease and keeps the lease
//!   alive every TTL/3 over one keepalive stream. If a keepalive or a write
//!   fails (etcd down, the lease expired), it forgets the lease and
//!   registers again with a new one, retrying with backoff until etcd
//!   answers; stale leases are revoked once etcd is back.
//! * The live set and the catalog are watched with one background task
//!   each: a `get` of the prefix, then a watch from the next revision; after
//!   a watch error or a compaction it reads the prefix again. While etcd is
//!   unreachable the last known set stays published.
//! * Every unary call has a deadline ([`EtcdOptions::request_timeout`]), so
//!   nothing hangs on an unreachable etcd.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use fsql_proto::registry::KeyLayout;
use fsql_proto::{TableRecord, WorkerRecord};
use prost::Message;
use tokio::sync::{OnceCell, watch};
use tokio::task::AbortHandle;

use super::{
    AnnounceTask, Announcement, Backoff, CasOutcome, Registry, RegistryError, Result,
    VersionedTable, check_worker_record, keepalive_interval, publish,
};

/// Connection settings of the etcd registry.
#[derive(Clone)]
pub struct EtcdOptions {
    /// Deadline of every unary request (get, put, txn, lease grant).
    pub request_timeout: Duration,
    /// Deadline of establishing a connection.
    pub connect_timeout: Duration,
    /// Longest wait between two attempts to reach an unreachable etcd.
    pub max_backoff: Duration,
    /// `user:password` for etcd authentication, if enabled.
    pub user: Option<(String, String)>,
}

impl std::fmt::Debug for EtcdOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdOptions")
            .field("request_timeout", &self.request_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_backoff", &self.max_backoff)
            .field("user", &self.user.as_ref().map(|(u, _)| u))
            .finish()
    }
}

impl Default for EtcdOptions {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            max_backoff: Duration::from_secs(2),
            user: None,
        }
    }
}

/// A registry kept in etcd. Cheap to clone: clones share the connection and
/// the watch tasks.
#[derive(Debug, Clone)]
pub struct EtcdRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    keys: KeyLayout,
    endpoints: Vec<String>,
    options: EtcdOptions,
    workers: OnceCell<watch::Receiver<Vec<WorkerRecord>>>,
    tables: OnceCell<watch::Receiver<Vec<TableRecord>>>,
    watchers: parking_lot::Mutex<Vec<AbortHandle>>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdRegistry")
            .field("endpoints", &self.endpoints)
            .field("keys", &self.keys)
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in self.watchers.get_mut().drain(..) {
            w.abort();
        }
    }
}

fn unavailable(what: &str, e: impl std::fmt::Display) -> RegistryError {
    RegistryError::Unavailable(format!("etcd {what}: {e}"))
}

/// Runs one etcd request with the configured deadline.
async fn timed<T>(
    timeout: Duration,
    what: &str,
    fut: impl std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
) -> Result<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(unavailable(what, e)),
        Err(_) => Err(unavailable(what, format!("no answer within {timeout:?}"))),
    }
}

fn decode<T: Message + Default>(key: &[u8], value: &[u8]) -> Result<T> {
    T::decode(value).map_err(|e| RegistryError::Corrupt {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: e.to_string(),
    })
}

fn revision_of(header: Option<&etcd_client::ResponseHeader>) -> u64 {
    header.map_or(0, |h| h.revision().max(0) as u64)
}

impl EtcdRegistry {
    /// A client of the etcd cluster at `endpoints` (`http://HOST:PORT`).
    /// Does not wait for etcd to be reachable.
    pub async fn connect(
        endpoints: &[String],
        keys: KeyLayout,
        options: EtcdOptions,
    ) -> Result<Self> {
        if endpoints.is_empty() {
            return Err(RegistryError::Invalid("no etcd endpoints".into()));
        }
        let mut connect = ConnectOptions::new()
            .with_connect_timeout(options.connect_timeout)
            // etcd refuses pings more often than every 5 s
            // (--grpc-keepalive-min-time) and pings without an open stream.
            .with_keep_alive(Duration::from_secs(10), Duration::from_secs(5))
            .with_keep_alive_while_idle(false);
        if let Some((user, password)) = &options.user {
            connect = connect.with_user(user.clone(), password.clone());
        }
        let client = Client::connect(endpoints, Some(connect))
            .await
            .map_err(|e| unavailable("connect", e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                keys,
                endpoints: endpoints.to_vec(),
                options,
                workers: OnceCell::new(),
                tables: OnceCell::new(),
                watchers: parking_lot::Mutex::new(Vec::new()),
            }),
        })
    }

    /// The key layout of this registry.
    pub fn keys(&self) -> &KeyLayout {
        &self.inner.keys
    }

    fn client(&self) -> Client {
        self.inner.client.clone()
    }

    fn timeout(&self) -> Duration {
        self.inner.options.request_timeout
    }

    /// Every record under `prefix` by key, and the store revision.
    async fn entries<T: Message + Default>(
        &self,
        prefix: &str,
    ) -> Result<(BTreeMap<Vec<u8>, T>, u64)> {
        let resp = timed(
            self.timeout(),
            "get",
            self.client()
                .get(prefix, Some(GetOptions::new().with_prefix())),
        )
        .await?;
        Ok((decode_all(resp.kvs()), revision_of(resp.header())))
    }

    /// Every record under `prefix`, sorted by key.
    async fn list<T: Message + Default>(&self, prefix: &str) -> Result<Vec<T>> {
        Ok(self.entries(prefix).await?.0.into_values().collect())
    }

    /// Starts (once) the watch task of `prefix` publishing into a watch
    /// channel, after a first successful read.
    async fn watched<T>(
        &self,
        cell: &OnceCell<watch::Receiver<Vec<T>>>,
        prefix: String,
    ) -> Result<watch::Receiver<Vec<T>>>
    where
        T: Message + Default + Clone + PartialEq + Send + Sync + 'static,
    {
        let rx = cell
            .get_or_try_init(|| async {
                let (map, revision) = self.entries::<T>(&prefix).await?;
                let (tx, rx) = watch::channel(map.values().cloned().collect());
                let task = tokio::spawn(watch_prefix(
                    self.client(),
                    prefix.clone(),
                    self.inner.options.clone(),
                    tx,
                    map,
                    revision,
                ));
                self.inner.watchers.lock().push(task.abort_handle());
                Ok::<_, RegistryError>(rx)
            })
            .await?;
        Ok(rx.clone())
    }
}

/// Decodes key-values, skipping (with a warning) what does not decode.
fn decode_all<T: Message + Default>(kvs: &[etcd_client::KeyValue]) -> BTreeMap<Vec<u8>, T> {
    let mut map = BTreeMap::new();
    for kv in kvs {
        match decode::<T>(kv.key(), kv.value()) {
            Ok(v) => {
                map.insert(kv.key().to_vec(), v);
            }
            Err(e) => tracing::warn!("etcd registry: skipping {e}"),
        }
    }
    map
}

/// Keeps `tx` equal to the records under `prefix`: watch from `revision + 1`
/// and apply events; on any error read the prefix again (with backoff),
/// keeping the last published set meanwhile.
async fn watch_prefix<T>(
    mut client: Client,
    prefix: String,
    options: EtcdOptions,
    tx: watch::Sender<Vec<T>>,
    mut map: BTreeMap<Vec<u8>, T>,
    mut revision: u64,
) where
    T: Message + Default + Clone + PartialEq,
{
    let mut backoff = Backoff::new(Duration::from_millis(100), options.max_backoff);
    let mut synced = true;
    let mut failing = false;
    loop {
        if !synced {
            match timed(
                options.request_timeout,
                "get",
                client.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await
            {
                Ok(resp) => {
                    map = decode_all(resp.kvs());
                    revision = revision_of(resp.header());
                    publish(&tx, map.values().cloned().collect());
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(
                            prefix = %prefix,
                            "etcd registry: cannot read (keeping the last known set): {e}"
                        );
                        failing = true;
                    }
                    tokio::time::sleep(backoff.next()).await;
                    continue;
                }
            }
        }
        let watch = timed(
            options.request_timeout,
            "watch",
            client.watch(
                prefix.as_str(),
                Some(
                    WatchOptions::new()
                        .with_prefix()
                        .with_start_revision(revision as i64 + 1),
                ),
            ),
        )
        .await;
        let mut stream = match watch {
            Ok(s) => s,
            Err(e) => {
                if !failing {
                    tracing::warn!(prefix = %prefix, "etcd registry: cannot watch: {e}");
                    failing = true;
                }
                synced = false;
                tokio::time::sleep(backoff.next()).await;
                continue;
            }
        };
        if failing {
            tracing::info!(prefix = %prefix, "etcd registry: watching again");
            failing = false;
        }
        backoff.reset();
        loop {
            match stream.message().await {
                Ok(Some(resp)) => {
                    if resp.canceled() {
                        tracing::warn!(
                            prefix = %prefix,
                            compact_revision = resp.compact_revision(),
                            "etcd registry: watch canceled ({}); reading again",
                            resp.cancel_reason()
                        );
                        break;
                    }
                    let mut changed = false;
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        revision = revision.max(kv.mod_revision().max(0) as u64);
                        match ev.event_type() {
                            EventType::Put => match decode::<T>(kv.key(), kv.value()) {
                                Ok(v) => {
                                    map.insert(kv.key().to_vec(), v);
                                    changed = true;
                                }
                                Err(e) => tracing::warn!("etcd registry: skipping {e}"),
                            },
                            EventType::Delete => {
                                changed |= map.remove(kv.key()).is_some();
                            }
                        }
                    }
                    if let Some(h) = resp.header() {
                        revision = revision.max(h.revision().max(0) as u64);
                    }
                    if changed {
                        publish(&tx, map.values().cloned().collect());
                    }
                }
                Ok(None) => {
                    tracing::warn!(prefix = %prefix, "etcd registry: watch stream ended");
                    break;
                }
                Err(e) => {
                    tracing::warn!(
                        prefix = %prefix,
                        "etcd registry: watch failed (keeping the last known set): {e}"
                    );
                    failing = true;
                    break;
                }
            }
        }
        synced = false;
        tokio::time::sleep(backoff.next()).await;
    }
}

/// A registered announcement: the lease and its keepalive stream.
struct Registration {
    lease: i64,
    keeper: LeaseKeeper,
    stream: LeaseKeepAliveStream,
}

impl EtcdRegistry {
    /// Grants a lease, puts the record under it, opens the keepalive stream.
    async fn register(
        &self,
        key: &str,
        record: &WorkerRecord,
        ttl_secs: i64,
    ) -> Result<Registration> {
        let mut client = self.client();
        let lease = timed(
            self.timeout(),
            "lease grant",
            client.lease_grant(ttl_secs, None),
        )
        .await?
        .id();
        let put = async {
            timed(
                self.timeout(),
                "put",
                client.put(
                    key,
                    record.encode_to_vec(),
                    Some(PutOptions::new().with_lease(lease)),
                ),
            )
            .await?;
            let (keeper, stream) = timed(
                self.timeout(),
                "lease keepalive",
                client.lease_keep_alive(lease),
            )
            .await?;
            Ok::<_, RegistryError>(Registration {
                lease,
                keeper,
                stream,
            })
        };
        match put.await {
            Ok(r) => Ok(r),
            Err(e) => {
                self.revoke(lease).await;
                Err(e)
            }
        }
    }

    /// Best-effort revoke of a lease (deletes its keys).
    async fn revoke(&self, lease: i64) -> bool {
        timed(
            self.timeout(),
            "lease revoke",
            self.client().lease_revoke(lease),
        )
        .await
        .is_ok()
    }

    /// One keepalive round trip; false if the lease is gone or etcd failed.
    async fn keep_alive(&self, reg: &mut Registration) -> Result<bool> {
        let round = async {
            reg.keeper.keep_alive().await?;
            reg.stream.message().await
        };
        match timed(self.timeout(), "lease keepalive", round).await? {
            Some(resp) => Ok(resp.ttl() > 0),
            None => Err(RegistryError::Unavailable(
                "etcd lease keepalive stream ended".into(),
            )),
        }
    }

    /// The background task of an announcement.
    ///
    /// See [`lease_secs`] for the lease it grants.
    async fn run(self, key: String, ttl: Duration, mut task: AnnounceTask) {
        let ttl_secs = lease_secs(ttl);
        let id = task.record.borrow().id.clone();
        let mut backoff = Backoff::new(
            Duration::from_millis(100),
            self.inner.options.max_backoff.min(keepalive_interval(ttl)),
        );
        let mut reg: Option<Registration> = None;
        // Leases given up while etcd was unreachable: revoked once it is back.
        let mut stale: Vec<i64> = Vec::new();
        let mut tick = tokio::time::interval(keepalive_interval(ttl));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if reg.is_none() {
                let record = task.record.borrow_and_update().clone();
                match self.register(&key, &record, ttl_secs).await {
                    Ok(r) => {
                        tracing::info!(
                            worker = %id, lease = r.lease, ttl_secs,
                            "etcd registry: registered {key}"
                        );
                        reg = Some(r);
                        task.registered.send_replace(true);
                        backoff.reset();
                        tick.reset();
                        for lease in std::mem::take(&mut stale) {
                            self.revoke(lease).await;
                        }
                    }
                    Err(e) => {
                        if task.registered.send_replace(false) || backoff.next == backoff.min {
                            tracing::warn!(worker = %id, "etcd registry: cannot register: {e}");
                        }
                        tokio::select! {
                            () = tokio::time::sleep(backoff.next()) => continue,
                            request = &mut task.withdraw => {
                                // Nothing registered to remove (a lease not
                                // kept alive expires by itself).
                                if let Ok(ack) = request {
                                    let _ = ack.send(Ok(()));
                                }
                                return;
                            }
                        }
                    }
                }
            }
            let Some(r) = reg.as_mut() else { continue };
            let lost = tokio::select! {
                _ = tick.tick() => match self.keep_alive(r).await {
                    Ok(true) => None,
                    Ok(false) => Some("the lease expired".to_string()),
                    Err(e) => Some(e.to_string()),
                },
                changed = task.record.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    let record = task.record.borrow_and_update().clone();
                    match timed(
                        self.timeout(),
                        "put",
                        self.client().put(
                            key.as_str(),
                            record.encode_to_vec(),
                            Some(PutOptions::new().with_lease(r.lease)),
                        ),
                    )
                    .await
                    {
                        Ok(_) => None,
                        Err(e) => Some(e.to_string()),
                    }
                }
                request = &mut task.withdraw => {
                    let lease = r.lease;
                    let result = if self.revoke(lease).await {
                        Ok(())
                    } else {
                        // Revoke failed: delete the key at least.
                        timed(self.timeout(), "delete", self.client().delete(key.as_str(), None))
                            .await
                            .map(|_| ())
                    };
                    task.registered.send_replace(false);
                    match &result {
                        Ok(()) => tracing::info!(worker = %id, "etcd registry: withdrew {key}"),
                        Err(e) => tracing::warn!(worker = %id, "etcd registry: withdraw failed: {e}"),
                    }
                    if let Ok(ack) = request {
                        let _ = ack.send(result);
                    }
                    return;
                }
            };
            if let Some(reason) = lost {
                tracing::warn!(
                    worker = %id,
                    "etcd registry: lost the registration ({reason}); registering again"
                );
                if let Some(r) = reg.take() {
                    stale.push(r.lease);
                }
                task.registered.send_replace(false);
                // Registering again right away; backoff applies if that fails.
            }
        }
    }
}

#[async_trait]
impl Registry for EtcdRegistry {
    fn describe(&self) -> String {
        let hosts: Vec<&str> = self
            .inner
            .endpoints
            .iter()
            .map(|e| e.trim_start_matches("http://"))
            .collect();
        format!("etcd://{} ({})", hosts.join(","), self.inner.keys)
    }

    async fn announce(&self, record: WorkerRecord, ttl: Duration) -> Result<Announcement> {
        check_worker_record(&record, ttl)?;
        let key = self.inner.keys.worker_key(&record.id)?;
        let this = self.clone();
        Ok(Announcement::spawn(record, move |task| {
            this.run(key, ttl, task)
        }))
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        self.list(&self.inner.keys.workers_prefix()).await
    }

    async fn watch_workers(&self) -> Result<watch::Receiver<Vec<WorkerRecord>>> {
        self.watched(&self.inner.workers, self.inner.keys.workers_prefix())
            .await
    }

    async fn tables(&self) -> Result<Vec<TableRecord>> {
        self.list(&self.inner.keys.catalog_prefix()).await
    }

    async fn table(&self, name: &str) -> Result<Option<VersionedTable>> {
        let key = self.inner.keys.table_key(name)?;
        let resp = timed(self.timeout(), "get", self.client().get(key, None)).await?;
        match resp.kvs().first() {
            Some(kv) => Ok(Some(VersionedTable {
                record: decode(kv.key(), kv.value())?,
                revision: kv.mod_revision().max(0) as u64,
            })),
            None => Ok(None),
        }
    }

    async fn put_table(&self, record: &TableRecord) -> Result<u64> {
        let key = self.inner.keys.table_key(&record.name)?;
        let resp = timed(
            self.timeout(),
            "put",
            self.client().put(key, record.encode_to_vec(), None),
        )
        .await?;
        Ok(revision_of(resp.header()))
    }

    async fn put_table_if(&self, record: &TableRecord, expected: u64) -> Result<CasOutcome> {
        let key = self.inner.keys.table_key(&record.name)?;
        let txn = Txn::new()
            .when([Compare::mod_revision(
                key.as_str(),
                CompareOp::Equal,
                expected as i64,
            )])
            .and_then([TxnOp::put(key.as_str(), record.encode_to_vec(), None)])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let resp = timed(self.timeout(), "txn", self.client().txn(txn)).await?;
        if resp.succeeded() {
            return Ok(CasOutcome::Written {
                revision: revision_of(resp.header()),
            });
        }
        let current = resp
            .op_responses()
            .into_iter()
            .find_map(|r| match r {
                TxnOpResponse::Get(g) => Some(
                    g.kvs()
                        .first()
                        .map_or(0, |kv| kv.mod_revision().max(0) as u64),
                ),
                _ => None,
            })
            .unwrap_or(0);
        Ok(CasOutcome::Conflict { current })
    }

    async fn delete_table(&self, name: &str) -> Result<bool> {
        let key = self.inner.keys.table_key(name)?;
        let resp = timed(self.timeout(), "delete", self.client().delete(key, None)).await?;
        Ok(resp.deleted() > 0)
    }

    async fn watch_tables(&self) -> Result<watch::Receiver<Vec<TableRecord>>> {
        self.watched(&self.inner.tables, self.inner.keys.catalog_prefix())
            .await
    }
}
/// The etcd lease of an announcement with `ttl`: the TTL less one
/// keepalive interval, in whole seconds (at least 1).
fn lease_secs(ttl: Duration) -> i64 {
    (ttl.saturating_sub(keepalive_interval(ttl)).as_secs() as i64).max(1)
}
