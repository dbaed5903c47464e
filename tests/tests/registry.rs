//! Registry conformance: one set of test functions run against the embedded
//! registry, a real etcd server (started here on loopback ephemeral ports,
//! stopped at the end of each test) and, where they apply, the static one.
//!
//! etcd comes from `FSQL_ETCD_BIN` or `etcd` on PATH (`scripts/test.sh`
//! installs it). Without one the etcd tests are skipped with a message,
//! unless `FSQL_REQUIRE_ETCD=1`, which makes them fail.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flight_worker::registry::{
    self, CasOutcome, EmbeddedRegistry, EtcdOptions, Registry, RegistryOptions, StaticRegistry,
};
use fsql_proto::{ShardPlacement, ShardTarget, TableRecord, WorkerRecord, table_record};
use tokio::sync::watch;

/// Lease TTL used by the tests.
const TTL: Duration = Duration::from_secs(2);
/// How much later than one TTL a dead worker may still be listed (etcd
/// checks lease expiry every 500 ms).
const EXPIRY_SLACK: Duration = Duration::from_millis(1500);

use common::etcd::Etcd;

// --- backends ------------------------------------------------------------------------

/// A registry under test; `client()` gives another client of the same store
/// (the coordinator's, another coordinator's, a worker's).
enum Backend {
    Embedded(Arc<EmbeddedRegistry>),
    Static(Arc<StaticRegistry>),
    Etcd { etcd: Etcd, cluster: String },
}

fn etcd_options() -> EtcdOptions {
    EtcdOptions {
        request_timeout: Duration::from_secs(1),
        max_backoff: Duration::from_millis(500),
        ..EtcdOptions::default()
    }
}

impl Backend {
    fn embedded() -> Self {
        Backend::Embedded(Arc::new(EmbeddedRegistry::new()))
    }

    fn fixed() -> Self {
        Backend::Static(Arc::new(
            StaticRegistry::from_url_body("w1@127.0.0.1:5001,127.0.0.1:5002").unwrap(),
        ))
    }

    async fn etcd() -> Option<Self> {
        let etcd = Etcd::start().await?;
        Some(Backend::Etcd {
            etcd,
            cluster: format!("test-{}", std::process::id()),
        })
    }

    async fn client(&self) -> Arc<dyn Registry> {
        match self {
            Backend::Embedded(r) => r.clone(),
            Backend::Static(r) => r.clone(),
            Backend::Etcd { etcd, cluster } => {
                let options = RegistryOptions {
                    cluster: cluster.clone(),
                    etcd: etcd_options(),
                    ..RegistryOptions::default()
                };
                registry::connect(&format!("etcd://{}", etcd.endpoint()), &options)
                    .await
                    .unwrap()
            }
        }
    }
}

// --- helpers -------------------------------------------------------------------------

fn worker(id: &str, port: u16) -> WorkerRecord {
    WorkerRecord {
        id: id.to_string(),
        address: format!("grpc://127.0.0.1:{port}"),
        version: "test".into(),
        capacity: 1,
        shards: Vec::new(),
    }
}

fn table(name: &str, shards: u32) -> TableRecord {
    TableRecord {
        name: name.to_string(),
        schema: bytes::Bytes::from_static(b"schema"),
        distribution: table_record::Distribution::Hash as i32,
        distribution_column: "id".into(),
        shard_count: shards,
        replicas: 1,
        placement: (0..shards)
            .map(|s| ShardPlacement {
                shard: s,
                workers: vec![format!("w{s}")],
            })
            .collect(),
        storage: String::new(),
    }
}

fn ids(workers: &[WorkerRecord]) -> Vec<&str> {
    workers.iter().map(|w| w.id.as_str()).collect()
}

fn names(tables: &[TableRecord]) -> Vec<&str> {
    tables.iter().map(|t| t.name.as_str()).collect()
}

/// Waits until `pred` holds for the watched value; panics after `timeout`.
async fn wait_for<T: Clone>(
    rx: &mut watch::Receiver<T>,
    timeout: Duration,
    what: &str,
    pred: impl FnMut(&T) -> bool,
) -> T {
    match tokio::time::timeout(timeout, rx.wait_for(pred)).await {
        Ok(Ok(v)) => v.clone(),
        Ok(Err(_)) => panic!("{what}: the watch channel closed"),
        Err(_) => panic!("{what}: not within {timeout:?}"),
    }
}

// --- the conformance suite -------------------------------------------------------------

/// Announced workers are listed and watched by another client, sorted by id.
/// Waits (up to 5 s) until an announcement's record is in the registry.
async fn wait_registered(a: &registry::Announcement) {
    wait_for(
        &mut a.registered(),
        Duration::from_secs(5),
        "registered",
        |r| *r,
    )
    .await;
}

async fn announce_list_watch(b: &Backend) {
    let coordinator = b.client().await;
    let mut live = coordinator.watch_workers().await.unwrap();
    let w = b.client().await;
    let a2 = w.announce(worker("w2", 5002), TTL).await.unwrap();
    let a1 = w.announce(worker("w1", 5001), TTL).await.unwrap();
    let set = wait_for(&mut live, Duration::from_secs(5), "both workers", |s| {
        s.len() == 2
    })
    .await;
    assert_eq!(ids(&set), ["w1", "w2"]);
    assert_eq!(set[0], worker("w1", 5001));
    let listed = coordinator.workers().await.unwrap();
    assert_eq!(ids(&listed), ["w1", "w2"]);
    wait_registered(&a1).await;
    assert!(a1.is_registered());
    assert_eq!(a1.id(), "w1");
    a1.withdraw().await.unwrap();
    a2.withdraw().await.unwrap();
}

/// A withdrawn worker leaves the live set at once (well before its TTL).
async fn withdraw_removes_at_once(b: &Backend) {
    let coordinator = b.client().await;
    let mut live = coordinator.watch_workers().await.unwrap();
    let w = b.client().await;
    let a = w
        .announce(worker("w1", 5001), Duration::from_secs(30))
        .await
        .unwrap();
    wait_for(&mut live, Duration::from_secs(5), "announced", |s| {
        ids(s) == ["w1"]
    })
    .await;
    let start = Instant::now();
    a.withdraw().await.unwrap();
    wait_for(&mut live, Duration::from_secs(5), "withdrawn", |s| {
        s.is_empty()
    })
    .await;
    eprintln!("withdraw seen after {:?}", start.elapsed());
    assert!(coordinator.workers().await.unwrap().is_empty());
}

/// A kept-alive worker stays past several TTLs; one whose keepalive stops
/// (the process died) leaves the live set within one TTL.
async fn lease_expires_when_keepalive_stops(b: &Backend) {
    let coordinator = b.client().await;
    let mut live = coordinator.watch_workers().await.unwrap();
    let w = b.client().await;
    let alive = w.announce(worker("w1", 5001), TTL).await.unwrap();
    let dying = w.announce(worker("w2", 5002), TTL).await.unwrap();
    wait_for(&mut live, Duration::from_secs(5), "announced", |s| {
        s.len() == 2
    })
    .await;
    tokio::time::sleep(TTL * 2 + TTL / 2).await;
    assert_eq!(
        ids(&coordinator.workers().await.unwrap()),
        ["w1", "w2"],
        "kept-alive workers must stay"
    );
    let start = Instant::now();
    dying.abort();
    wait_for(&mut live, TTL + EXPIRY_SLACK, "w2 expired", |s| {
        ids(s) == ["w1"]
    })
    .await;
    eprintln!(
        "dead worker left the live set {:?} after its keepalive stopped (TTL {TTL:?})",
        start.elapsed()
    );
    assert!(start.elapsed() <= TTL + EXPIRY_SLACK);
    assert_eq!(ids(&coordinator.workers().await.unwrap()), ["w1"]);
    // Dropping the handle is a death too.
    drop(alive);
    wait_for(&mut live, TTL + EXPIRY_SLACK, "w1 expired", |s| {
        s.is_empty()
    })
    .await;
}

/// `update` replaces the record (shards held), seen by the watcher.
async fn update_replaces_record(b: &Backend) {
    let coordinator = b.client().await;
    let mut live = coordinator.watch_workers().await.unwrap();
    let w = b.client().await;
    let a = w.announce(worker("w1", 5001), TTL).await.unwrap();
    wait_for(&mut live, Duration::from_secs(5), "announced", |s| {
        s.len() == 1
    })
    .await;
    let mut updated = worker("w1", 5001);
    updated.shards = vec![ShardTarget {
        table: "t".into(),
        shard: 3,
        reference: false,
    }];
    a.update(updated.clone()).unwrap();
    let set = wait_for(&mut live, Duration::from_secs(5), "updated", |s| {
        s.first().is_some_and(|r| r.shards.len() == 1)
    })
    .await;
    assert_eq!(set, vec![updated.clone()]);
    assert_eq!(a.record(), updated);
    assert!(
        a.update(worker("other", 1)).is_err(),
        "the id cannot change"
    );
    // The update lives under the same lease: still there after two TTLs.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(coordinator.workers().await.unwrap(), vec![updated]);
    a.withdraw().await.unwrap();
}

/// Tables written by one client are read and watched by another.
async fn catalog_put_get_delete_watch(b: &Backend) {
    let c1 = b.client().await;
    let c2 = b.client().await;
    let mut watched = c2.watch_tables().await.unwrap();
    assert!(watched.borrow().is_empty());
    let r1 = c1.put_table(&table("orders", 4)).await.unwrap();
    c1.put_table(&table("lineitem", 4)).await.unwrap();
    let seen = wait_for(&mut watched, Duration::from_secs(5), "two tables", |t| {
        t.len() == 2
    })
    .await;
    assert_eq!(names(&seen), ["lineitem", "orders"]);
    assert_eq!(seen[1], table("orders", 4));
    assert_eq!(names(&c2.tables().await.unwrap()), ["lineitem", "orders"]);
    let got = c2.table("orders").await.unwrap().unwrap();
    assert_eq!(got.record, table("orders", 4));
    assert_eq!(got.revision, r1);
    // Replace (placement changed).
    let r2 = c1.put_table(&table("orders", 8)).await.unwrap();
    assert!(r2 > r1);
    wait_for(&mut watched, Duration::from_secs(5), "replaced", |t| {
        t.iter().any(|t| t.name == "orders" && t.shard_count == 8)
    })
    .await;
    // Delete.
    assert!(c1.delete_table("orders").await.unwrap());
    assert!(!c1.delete_table("orders").await.unwrap());
    let seen = wait_for(&mut watched, Duration::from_secs(5), "deleted", |t| {
        t.len() == 1
    })
    .await;
    assert_eq!(names(&seen), ["lineitem"]);
    assert!(c2.table("orders").await.unwrap().is_none());
    // A new watcher starts from the current catalog.
    let c3 = b.client().await;
    assert_eq!(
        names(&c3.watch_tables().await.unwrap().borrow()),
        ["lineitem"]
    );
}

/// `put_table_if` writes only over the expected revision.
async fn catalog_compare_and_swap(b: &Backend) {
    let c1 = b.client().await;
    let c2 = b.client().await;
    // 0: create only if absent.
    let CasOutcome::Written { revision: r1 } = c1.put_table_if(&table("t", 2), 0).await.unwrap()
    else {
        panic!("create over 0 must succeed");
    };
    assert_eq!(
        c2.put_table_if(&table("t", 3), 0).await.unwrap(),
        CasOutcome::Conflict { current: r1 }
    );
    let CasOutcome::Written { revision: r2 } = c2.put_table_if(&table("t", 3), r1).await.unwrap()
    else {
        panic!("write over the current revision must succeed");
    };
    assert!(r2 > r1);
    // c1 still holds r1: refused, and told the current revision.
    assert_eq!(
        c1.put_table_if(&table("t", 4), r1).await.unwrap(),
        CasOutcome::Conflict { current: r2 }
    );
    assert_eq!(c1.table("t").await.unwrap().unwrap().record.shard_count, 3);
    assert!(c1.delete_table("t").await.unwrap());
    assert_eq!(
        c1.put_table_if(&table("t", 5), r2).await.unwrap(),
        CasOutcome::Conflict { current: 0 }
    );
}

/// Names that cannot be key segments are refused.
async fn bad_names_refused(b: &Backend) {
    let c = b.client().await;
    assert!(c.announce(worker("a/b", 1), TTL).await.is_err());
    assert!(c.announce(worker("", 1), TTL).await.is_err());
    assert!(
        c.announce(worker("w", 1), Duration::from_millis(10))
            .await
            .is_err()
    );
    assert!(c.put_table(&table("x/y", 1)).await.is_err());
    assert!(c.put_table(&table("", 1)).await.is_err());
}

macro_rules! suite {
    ($backend:ident: $($name:ident),* $(,)?) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(b) = super::backend(stringify!($backend)).await else {
                        return;
                    };
                    super::$name(&b).await;
                }
            )*
        }
    };
}

async fn backend(kind: &str) -> Option<Backend> {
    match kind {
        "embedded" => Some(Backend::embedded()),
        "fixed" => Some(Backend::fixed()),
        "etcd" => Backend::etcd().await,
        _ => unreachable!(),
    }
}

suite!(embedded:
    announce_list_watch,
    withdraw_removes_at_once,
    lease_expires_when_keepalive_stops,
    update_replaces_record,
    catalog_put_get_delete_watch,
    catalog_compare_and_swap,
    bad_names_refused,
);

suite!(etcd:
    announce_list_watch,
    withdraw_removes_at_once,
    lease_expires_when_keepalive_stops,
    update_replaces_record,
    catalog_put_get_delete_watch,
    catalog_compare_and_swap,
    bad_names_refused,
);

// The static registry: the catalog part of the suite.
suite!(fixed:
    catalog_put_get_delete_watch,
    catalog_compare_and_swap,
    bad_names_refused,
);

// --- static only -----------------------------------------------------------------------

/// The list is the live set, whatever is announced or withdrawn.
#[tokio::test]
async fn static_workers_are_the_list() {
    let r = registry::connect(
        "static://w1@127.0.0.1:5001, 127.0.0.1:5002,grpc+tls://db:5003",
        &RegistryOptions::default(),
    )
    .await
    .unwrap();
    let listed = r.workers().await.unwrap();
    assert_eq!(ids(&listed), ["127.0.0.1:5002", "db:5003", "w1"]);
    assert_eq!(listed[1].address, "grpc+tls://db:5003");
    assert_eq!(listed[2].address, "grpc://127.0.0.1:5001");
    let watched = r.watch_workers().await.unwrap();
    assert_eq!(*watched.borrow(), listed);
    let a = r.announce(worker("w9", 9), TTL).await.unwrap();
    assert!(a.is_registered());
    a.withdraw().await.unwrap();
    let gone = r.announce(worker("w1", 5001), TTL).await.unwrap();
    gone.abort();
    tokio::time::sleep(TTL + EXPIRY_SLACK).await;
    assert_eq!(r.workers().await.unwrap(), listed);
    assert!(
        registry::connect("static://", &RegistryOptions::default())
            .await
            .is_err()
    );
}

/// With `?catalog=PATH` the catalog survives a restart (a new registry on
/// the same file).
#[tokio::test]
async fn static_catalog_file_persists() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.pb");
    let url = format!("static://127.0.0.1:5001?catalog={}", file.display());
    {
        let r = registry::connect(&url, &RegistryOptions::default())
            .await
            .unwrap();
        r.put_table(&table("a", 1)).await.unwrap();
        r.put_table(&table("b", 2)).await.unwrap();
        r.delete_table("a").await.unwrap();
    }
    assert!(Path::new(&file).exists());
    let r = registry::connect(&url, &RegistryOptions::default())
        .await
        .unwrap();
    assert_eq!(r.tables().await.unwrap(), vec![table("b", 2)]);
    assert_eq!(names(&r.watch_tables().await.unwrap().borrow()), ["b"]);
}

// --- URLs ----------------------------------------------------------------------------

#[tokio::test]
async fn registry_urls() {
    let o = RegistryOptions::default();
    assert_eq!(
        registry::connect("embedded", &o).await.unwrap().describe(),
        "embedded"
    );
    for bad in [
        "zookeeper://x:1",
        "etcd://",
        "etcd://nohostport",
        "static://x",
    ] {
        assert!(registry::connect(bad, &o).await.is_err(), "{bad}");
    }
    let bad_cluster = RegistryOptions {
        cluster: "a/b".into(),
        ..RegistryOptions::default()
    };
    assert!(registry::connect("embedded", &bad_cluster).await.is_err());
    // Connecting does not wait for etcd: nothing listens on port 1.
    let r = registry::connect(
        "etcd://127.0.0.1:1",
        &RegistryOptions {
            etcd: etcd_options(),
            ..RegistryOptions::default()
        },
    )
    .await
    .unwrap();
    assert!(r.describe().starts_with("etcd://127.0.0.1:1"));
    assert!(r.workers().await.is_err(), "no etcd there");
    assert!(r.watch_workers().await.is_err(), "no etcd there");
}

// --- etcd only -------------------------------------------------------------------------

/// Two clusters on one etcd do not see each other's workers or tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_clusters_are_separate() {
    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let connect = |cluster: &str| {
        let options = RegistryOptions {
            cluster: cluster.into(),
            etcd: etcd_options(),
            ..RegistryOptions::default()
        };
        let url = format!("etcd://{}", etcd.endpoint());
        async move { registry::connect(&url, &options).await.unwrap() }
    };
    let a = connect("a").await;
    let b = connect("b").await;
    let w = a.announce(worker("w1", 1), TTL).await.unwrap();
    // Announcing returns at once; the record is put in the background.
    wait_registered(&w).await;
    a.put_table(&table("t", 1)).await.unwrap();
    assert_eq!(ids(&a.workers().await.unwrap()), ["w1"]);
    assert!(b.workers().await.unwrap().is_empty());
    assert!(b.tables().await.unwrap().is_empty());
}

/// etcd stopped: the coordinator keeps the last known live set and catalog,
/// the worker keeps trying; etcd restarted on the same ports and data: the
/// worker registers again under a fresh lease, watches resume, writes work
/// through the clients made before the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_keeps_last_set_and_reregisters() {
    let Some(mut b) = Backend::etcd().await else {
        return;
    };
    let coordinator = b.client().await;
    let mut live = coordinator.watch_workers().await.unwrap();
    let mut tables = coordinator.watch_tables().await.unwrap();
    let w = b.client().await;
    let a1 = w.announce(worker("w1", 5001), TTL).await.unwrap();
    let a2 = w.announce(worker("w2", 5002), TTL).await.unwrap();
    let mut registered = a1.registered();
    wait_for(&mut live, Duration::from_secs(5), "announced", |s| {
        s.len() == 2
    })
    .await;
    coordinator.put_table(&table("t", 2)).await.unwrap();
    wait_for(&mut tables, Duration::from_secs(5), "table", |t| {
        t.len() == 1
    })
    .await;

    let Backend::Etcd { etcd, .. } = &mut b else {
        unreachable!()
    };
    etcd.kill();
    let down = Instant::now();
    // The worker notices within a keepalive round (TTL/3 + request timeout).
    wait_for(
        &mut registered,
        TTL * 2 + Duration::from_secs(2),
        "worker notices",
        |r| !*r,
    )
    .await;
    eprintln!("worker noticed the outage after {:?}", down.elapsed());
    // Well past the TTL: the last known sets stay.
    tokio::time::sleep(TTL * 3).await;
    assert_eq!(ids(&live.borrow()), ["w1", "w2"]);
    assert_eq!(names(&tables.borrow()), ["t"]);
    assert!(coordinator.workers().await.is_err(), "etcd is down");
    // A worker dying during the outage: its lease cannot be kept alive.
    a2.abort();

    etcd.restart().await;
    let up = Instant::now();
    wait_for(
        &mut registered,
        Duration::from_secs(15),
        "worker re-registers",
        |r| *r,
    )
    .await;
    eprintln!(
        "worker registered again {:?} after etcd restarted",
        up.elapsed()
    );
    // w2's lease (restored by etcd with a fresh TTL) runs out; w1 stays.
    let set = wait_for(
        &mut live,
        TTL * 2 + Duration::from_secs(5),
        "w2 expires",
        |s| ids(s) == ["w1"],
    )
    .await;
    assert_eq!(set, vec![worker("w1", 5001)]);
    eprintln!(
        "live set after the restart settled {:?} after etcd came back",
        up.elapsed()
    );
    // Writes and watches through clients made before the outage.
    coordinator.put_table(&table("u", 1)).await.unwrap();
    wait_for(
        &mut tables,
        Duration::from_secs(10),
        "table after restart",
        |t| t.len() == 2,
    )
    .await;
    let mut update = worker("w1", 5001);
    update.capacity = 7;
    a1.update(update).unwrap();
    wait_for(
        &mut live,
        Duration::from_secs(10),
        "update after restart",
        |s| s.first().is_some_and(|r| r.capacity == 7),
    )
    .await;
    // The re-registration is under a live lease: stopping its keepalive
    // still removes the worker within one TTL.
    tokio::time::sleep(TTL * 2).await;
    assert_eq!(ids(&coordinator.workers().await.unwrap()), ["w1"]);
    let start = Instant::now();
    a1.abort();
    wait_for(&mut live, TTL + EXPIRY_SLACK, "w1 expires", |s| {
        s.is_empty()
    })
    .await;
    eprintln!(
        "after the outage a dead worker left in {:?}",
        start.elapsed()
    );
}
