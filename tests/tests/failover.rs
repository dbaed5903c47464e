//! Membership with real processes: `flight-worker` processes announcing
//! themselves in a real etcd, a coordinator following it, eight clients
//! running TPC-H queries in a loop, and workers killed with SIGKILL, etcd
//! stopped, coordinators restarted.
//!
//! Every answer is compared with single-process DuckDB over the same data:
//! with two replicas every query must succeed; with one, the queries that
//! need the dead worker must fail with UNAVAILABLE, and none may return a
//! wrong or partial answer. The measured times (failure detection, recovery)
//! are printed (`--nocapture`).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use common::etcd::Etcd;
use common::*;
use flight_coordinator::engine::EngineConfig;
use flight_coordinator::server::{CoordinatorConfig, CoordinatorHandle};
use flight_coordinator::tpch;
use flight_worker::registry::{self, RegistryOptions};
use tonic::Code;

const SF: f64 = 0.01;
const SECRET: &str = "failover-test-secret-0123456789";
/// The workers' lease TTL.
const TTL: Duration = Duration::from_secs(3);
const CLIENTS: usize = 8;

fn binary(name: &str, var: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var).filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    // target/debug/deps/failover-... -> target/debug/<name>
    let exe = std::env::current_exe().unwrap();
    let path = exe.parent().unwrap().parent().unwrap().join(name);
    assert!(
        path.is_file(),
        "{} not found: build it (cargo build --workspace --bins) or set {var}",
        path.display()
    );
    path
}

/// Starts `cmd`, logging to `log`, and returns it with the first stdout
/// line containing `marker` (stdout is drained afterwards).
fn spawn_until(mut cmd: Command, log: &Path, marker: &str) -> (Child, String) {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("process exited before printing {marker:?}");
        }
        if line.contains(marker) {
            break;
        }
    }
    std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    (child, line.trim().to_string())
}

/// A `flight-worker` process announcing itself in etcd.
struct WorkerProc {
    child: Option<Child>,
    dir: PathBuf,
    etcd: String,
    cluster: String,
    id: String,
}

impl WorkerProc {
    fn start(dir: PathBuf, etcd: &str, cluster: &str) -> Self {
        let mut w = Self {
            child: None,
            dir,
            etcd: etcd.to_string(),
            cluster: cluster.to_string(),
            id: String::new(),
        };
        w.spawn();
        w
    }

    fn spawn(&mut self) {
        let mut cmd = Command::new(binary("flight-worker", "FSQL_WORKER_BIN"));
        cmd.arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(self.dir.join("data"))
            .arg("--registry")
            .arg(format!("etcd://{}", self.etcd))
            .arg("--cluster")
            .arg(&self.cluster)
            .arg("--lease-ttl")
            .arg(format!("{}s", TTL.as_secs()))
            .args(["--threads", "1", "--memory-limit", "1GB"])
            .env("FSQL_SECRET", SECRET)
            .env("FSQL_LOG", "info");
        std::fs::create_dir_all(&self.dir).unwrap();
        let (child, line) = spawn_until(cmd, &self.dir.join("worker.log"), "listening on");
        // "flight-worker <id> listening on <url>"
        self.id = line.split_whitespace().nth(1).unwrap().to_string();
        self.child = Some(child);
    }

    /// SIGKILL: no goodbye to the registry.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A coordinator in this process, following the registry in etcd.
async fn coordinator(etcd: &str, cluster: &str, replicas: u32) -> CoordinatorHandle {
    let options = RegistryOptions {
        cluster: cluster.to_string(),
        ..RegistryOptions::default()
    };
    let registry = registry::connect(&format!("etcd://{etcd}"), &options)
        .await
        .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    flight_coordinator::server::start(
        CoordinatorConfig {
            secret: SECRET.into(),
            engine: EngineConfig {
                default_replicas: replicas,
                default_shards: Some(4),
                ..EngineConfig::default()
            },
            security: Default::default(),
        },
        registry,
        listener,
    )
    .await
    .unwrap()
}

/// Waits until the coordinator's live set is exactly `ids`; returns how long
/// it took.
async fn wait_live(c: &CoordinatorHandle, ids: &[&str], within: Duration) -> Duration {
    let start = Instant::now();
    let mut want: Vec<&str> = ids.to_vec();
    want.sort();
    loop {
        let live = c.engine().catalog.workers();
        let got: Vec<&str> = live.iter().map(|w| w.id.as_str()).collect();
        if got == want {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < within,
            "live set {got:?} is not {want:?} after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn reference_answers() -> tokio::task::JoinHandle<Vec<Vec<RecordBatch>>> {
    tokio::task::spawn_blocking(|| {
        let conn = tests::reference::open().unwrap();
        tests::reference::load_tpch(&conn, SF).unwrap();
        (1..=22)
            .map(|n| tests::reference::query(&conn, tpch::query(n).unwrap()).unwrap())
            .collect()
    })
}

/// What the clients saw.
#[derive(Debug, Default)]
struct Tally {
    ok: usize,
    /// (query, code, message) of every failed query.
    failed: Vec<(usize, Code, String)>,
    /// Answers that differ from DuckDB's: never allowed.
    wrong: Vec<String>,
}

/// Eight clients running the 22 queries round-robin until `stop`.
fn workload(
    url: String,
    expected: Arc<Vec<Vec<RecordBatch>>>,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Tally>> {
    (0..CLIENTS)
        .map(|c| {
            let (url, expected, stop) = (url.clone(), Arc::clone(&expected), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut cl = Client::connect(&url).await;
                let mut tally = Tally::default();
                let mut i = c * 3;
                while !stop.load(Ordering::Relaxed) {
                    let n = i % 22 + 1;
                    i += 1;
                    match cl.query(tpch::query(n).unwrap()).await {
                        Ok(actual) => match tests::compare::compare_results(
                            &expected[n - 1],
                            &actual,
                            tpch::query_orders_fully(n),
                        ) {
                            Ok(()) => tally.ok += 1,
                            Err(e) => tally.wrong.push(format!("Q{n}: {e}")),
                        },
                        Err(s) => tally.failed.push((n, s.code(), s.message().to_string())),
                    }
                }
                tally
            })
        })
        .collect()
}

async fn finish(tasks: Vec<tokio::task::JoinHandle<Tally>>) -> Tally {
    let mut total = Tally::default();
    for t in tasks {
        let t = t.await.unwrap();
        total.ok += t.ok;
        total.failed.extend(t.failed);
        total.wrong.extend(t.wrong);
    }
    total
}

/// Runs all 22 queries once; every answer must be right.
async fn all_correct(url: &str, expected: &[Vec<RecordBatch>]) {
    let mut cl = Client::connect(url).await;
    for n in 1..=22 {
        let actual = cl
            .query(tpch::query(n).unwrap())
            .await
            .unwrap_or_else(|e| panic!("Q{n}: {e}"));
        tests::compare::compare_results(&expected[n - 1], &actual, tpch::query_orders_fully(n))
            .unwrap_or_else(|e| panic!("Q{n}: {e}"));
    }
}

struct Setup {
    _etcd: Etcd,
    dir: tempfile::TempDir,
    workers: Vec<WorkerProc>,
    coordinator: CoordinatorHandle,
    expected: Arc<Vec<Vec<RecordBatch>>>,
}

/// etcd, three worker processes, a coordinator, TPC-H loaded with
/// `replicas` copies of every distributed shard.
async fn setup(cluster: &str, replicas: u32) -> Option<Setup> {
    let etcd = Etcd::start().await?;
    let reference = reference_answers();
    let dir = tempfile::tempdir().unwrap();
    let workers: Vec<WorkerProc> = (0..3)
        .map(|i| WorkerProc::start(dir.path().join(format!("w{i}")), &etcd.endpoint(), cluster))
        .collect();
    let coordinator = coordinator(&etcd.endpoint(), cluster, replicas).await;
    let ids: Vec<&str> = workers.iter().map(|w| w.id.as_str()).collect();
    wait_live(&coordinator, &ids, Duration::from_secs(10)).await;
    flight_coordinator::local::load_tpch(coordinator.engine(), SF, 4, tpch::Layout::Distributed)
        .await
        .unwrap();
    let expected = Arc::new(reference.await.unwrap());
    Some(Setup {
        _etcd: etcd,
        dir,
        workers,
        coordinator,
        expected,
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_a_worker_with_two_replicas_every_answer_stays_complete() {
    let Some(mut s) = setup("r2", 2).await else {
        return;
    };
    let url = s.coordinator.url();
    let lineitem = s.coordinator.engine().catalog.table("lineitem").unwrap();
    assert_eq!(lineitem.replicas, 2);

    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload(url.clone(), Arc::clone(&s.expected), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(3)).await;

    // SIGKILL worker 1 in the middle of the workload.
    let victim = s.workers[1].id.clone();
    s.workers[1].kill();
    let killed = Instant::now();
    let survivors = [s.workers[0].id.as_str(), s.workers[2].id.as_str()];
    let detection = wait_live(&s.coordinator, &survivors, TTL).await;
    let mut cl = Client::connect(&url).await;
    let state = cl
        .query(&format!(
            "SELECT state FROM system.workers WHERE id = '{victim}'"
        ))
        .await
        .unwrap();
    assert!(pretty(&state).contains("gone"), "{}", pretty(&state));
    tokio::time::sleep(Duration::from_secs(2)).await;

    // The same worker comes back on the same data directory (a new port).
    let restarted = Instant::now();
    s.workers[1].spawn();
    assert_eq!(
        s.workers[1].id, victim,
        "the worker id is kept in its data dir"
    );
    let all: Vec<&str> = s.workers.iter().map(|w| w.id.as_str()).collect();
    let recovery = wait_live(&s.coordinator, &all, Duration::from_secs(10)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = finish(tasks).await;
    eprintln!(
        "R=2: {} answers correct, {} failed, {} wrong; worker killed -> left the live set in \
         {detection:?} (TTL {TTL:?}); restarted -> live again in {recovery:?} ({:?} after the kill)",
        tally.ok,
        tally.failed.len(),
        tally.wrong.len(),
        restarted.duration_since(killed) + recovery,
    );
    assert!(tally.wrong.is_empty(), "wrong answers: {:#?}", tally.wrong);
    assert!(
        tally.failed.is_empty(),
        "failed queries: {:#?}",
        tally.failed
    );
    assert!(
        tally.ok >= CLIENTS,
        "the workload ran ({} answers)",
        tally.ok
    );

    // The restarted worker serves its shards: with another worker gone,
    // some shards are only on it.
    s.workers[2].kill();
    wait_live(
        &s.coordinator,
        &[s.workers[0].id.as_str(), s.workers[1].id.as_str()],
        TTL,
    )
    .await;
    all_correct(&url, &s.expected).await;
    s.coordinator.shutdown().await;
    drop(s.dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_a_worker_without_replicas_fails_queries_cleanly() {
    let Some(mut s) = setup("r1", 1).await else {
        return;
    };
    let url = s.coordinator.url();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload(url.clone(), Arc::clone(&s.expected), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(3)).await;
    let victim = s.workers[0].id.clone();
    s.workers[0].kill();
    let survivors = [s.workers[1].id.as_str(), s.workers[2].id.as_str()];
    let detection = wait_live(&s.coordinator, &survivors, TTL).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let tally = finish(tasks).await;
    eprintln!(
        "R=1: {} answers correct, {} failed (all UNAVAILABLE), {} wrong; detection {detection:?}",
        tally.ok,
        tally.failed.len(),
        tally.wrong.len()
    );
    assert!(tally.wrong.is_empty(), "wrong answers: {:#?}", tally.wrong);
    assert!(
        !tally.failed.is_empty(),
        "queries needing the dead worker must fail"
    );
    for (n, code, msg) in &tally.failed {
        assert_eq!(*code, Code::Unavailable, "Q{n}: {msg}");
        assert!(msg.contains("shard"), "Q{n}: {msg}");
    }
    // After the lease expired, the error names the missing worker.
    let err = Client::connect(&url)
        .await
        .query(tpch::query(1).unwrap())
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains(&victim), "{err}");

    // Back on the same data: every answer is complete again.
    s.workers[0].spawn();
    let all: Vec<&str> = s.workers.iter().map(|w| w.id.as_str()).collect();
    wait_live(&s.coordinator, &all, Duration::from_secs(10)).await;
    all_correct(&url, &s.expected).await;
    s.coordinator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_outage_queries_go_on_and_workers_reregister() {
    let Some(mut s) = setup("outage", 1).await else {
        return;
    };
    let outage = Duration::from_secs(
        std::env::var("FSQL_ETCD_OUTAGE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(30),
    );
    let url = s.coordinator.url();
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = workload(url.clone(), Arc::clone(&s.expected), Arc::clone(&stop));
    tokio::time::sleep(Duration::from_secs(2)).await;
    s._etcd.kill();
    tokio::time::sleep(outage).await;
    // The last known membership is kept: all three workers still serve.
    assert_eq!(s.coordinator.engine().catalog.workers().len(), 3);
    // Catalog changes need the registry.
    let err = Client::connect(&url)
        .await
        .update("CREATE TABLE during_outage (x BIGINT)")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    stop.store(true, Ordering::Relaxed);
    let tally = finish(tasks).await;
    eprintln!(
        "etcd down {outage:?}: {} answers correct, {} failed, {} wrong",
        tally.ok,
        tally.failed.len(),
        tally.wrong.len()
    );
    assert!(tally.wrong.is_empty(), "wrong answers: {:#?}", tally.wrong);
    assert!(
        tally.failed.is_empty(),
        "failed queries: {:#?}",
        tally.failed
    );

    // etcd returns: the workers are registered again.
    s._etcd.restart().await;
    let options = RegistryOptions {
        cluster: "outage".into(),
        ..RegistryOptions::default()
    };
    let fresh = registry::connect(&format!("etcd://{}", s._etcd.endpoint()), &options)
        .await
        .unwrap();
    let start = Instant::now();
    loop {
        let ids: Vec<String> = fresh
            .workers()
            .await
            .map(|w| w.into_iter().map(|r| r.id).collect())
            .unwrap_or_default();
        if s.workers.iter().all(|w| ids.contains(&w.id)) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "workers not re-registered: {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "workers re-registered {:?} after etcd came back",
        start.elapsed()
    );
    Client::connect(&url)
        .await
        .update("CREATE TABLE after_outage (x BIGINT)")
        .await
        .unwrap();
    s.workers.clear();
    s.coordinator.shutdown().await;
}

async fn raw_client(
    url: &str,
) -> arrow_flight::flight_service_client::FlightServiceClient<tonic::transport::Channel> {
    arrow_flight::flight_service_client::FlightServiceClient::new(channel(url).await)
}

/// A `flight-coordinator serve --registry` process.
fn serve(etcd: &str, cluster: &str, log: &Path) -> (Child, String) {
    let mut cmd = Command::new(binary("flight-coordinator", "FSQL_COORDINATOR_BIN"));
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--no-auth", "--cluster", cluster])
        .arg("--registry")
        .arg(format!("etcd://{etcd}"))
        .env("FSQL_SECRET", SECRET);
    let (child, line) = spawn_until(cmd, log, "listening on");
    let url = line.split_whitespace().last().unwrap().to_string();
    (child, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn coordinators_share_the_catalog_and_survive_restarts() {
    use arrow_flight::sql::{
        ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult, Any,
        CommandPreparedStatementQuery, ProstMessageExt,
    };
    use prost::Message;

    let Some(etcd) = Etcd::start().await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let _workers: Vec<WorkerProc> = (0..2)
        .map(|i| WorkerProc::start(dir.path().join(format!("w{i}")), &etcd.endpoint(), "two"))
        .collect();
    let log = dir.path().join("coordinators.log");
    let (mut a, a_url) = serve(&etcd.endpoint(), "two", &log);
    let mut cl = Client::connect(&a_url).await;
    // The workers may still be joining.
    let start = Instant::now();
    while let Err(e) = cl
        .update("CREATE TABLE t (k BIGINT, v VARCHAR) WITH (distribution = 'hash(k)', shards = 4, replicas = 2)")
        .await
    {
        assert!(start.elapsed() < Duration::from_secs(10), "{e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let values: Vec<String> = (0..500).map(|i| format!("({i}, 'v{i}')")).collect();
    assert_eq!(
        cl.update(&format!("INSERT INTO t VALUES {}", values.join(",")))
            .await
            .unwrap(),
        500
    );
    let check = "SELECT count(*) AS n, sum(k) AS s FROM t";
    let expected = pretty(&cl.query(check).await.unwrap());
    assert!(expected.contains("| 500 | 124750 |"), "{expected}");

    // A prepared statement made on A.
    let request = ActionCreatePreparedStatementRequest {
        query: "SELECT count(*) AS n FROM t WHERE k < 100".into(),
        transaction_id: None,
    };
    let mut raw = raw_client(&a_url).await;
    let mut results = raw
        .do_action(arrow_flight::Action::new(
            "CreatePreparedStatement",
            request.as_any().encode_to_vec(),
        ))
        .await
        .unwrap()
        .into_inner();
    let body = futures::StreamExt::next(&mut results)
        .await
        .unwrap()
        .unwrap();
    let prepared: ActionCreatePreparedStatementResult =
        Any::decode(body.body).unwrap().unpack().unwrap().unwrap();

    // A second coordinator serves the same tables and A's handle.
    let (mut b, b_url) = serve(&etcd.endpoint(), "two", &log);
    let mut bl = Client::connect(&b_url).await;
    assert_eq!(pretty(&bl.query(check).await.unwrap()), expected);
    let cmd = CommandPreparedStatementQuery {
        prepared_statement_handle: prepared.prepared_statement_handle,
    };
    let info = raw_client(&b_url)
        .await
        .get_flight_info(arrow_flight::FlightDescriptor::new_cmd(
            cmd.as_any().encode_to_vec(),
        ))
        .await
        .unwrap()
        .into_inner();
    let got = pretty(&bl.read_info(&info).await.unwrap());
    assert!(got.contains("| 100 |"), "{got}");
    // Tables created on B are seen on A.
    bl.update("CREATE TABLE from_b (x BIGINT)").await.unwrap();
    bl.update("INSERT INTO from_b VALUES (1), (2)")
        .await
        .unwrap();
    let n = pretty(&cl.query("SELECT count(*) AS n FROM from_b").await.unwrap());
    assert!(n.contains("| 2 |"), "{n}");

    // A restarts: every table and row is still there.
    a.kill().unwrap();
    a.wait().unwrap();
    let (mut a2, a2_url) = serve(&etcd.endpoint(), "two", &log);
    let mut cl = Client::connect(&a2_url).await;
    assert_eq!(pretty(&cl.query(check).await.unwrap()), expected);
    let n = pretty(&cl.query("SELECT count(*) AS n FROM from_b").await.unwrap());
    assert!(n.contains("| 2 |"), "{n}");
    for c in [&mut a2, &mut b] {
        c.kill().unwrap();
        c.wait().unwrap();
    }
}
