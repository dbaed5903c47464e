//! Metrics and health over HTTP: the coordinator's and a worker's routes
//! served by `flight_worker::http`, scraped with a plain TCP client while
//! queries run through the Flight SQL client.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestCluster, rows};
use flight_coordinator::metrics::coordinator_routes;
use flight_worker::http::{Router, serve};
use flight_worker::metrics::{code_name, worker_routes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// An HTTP server of `router` on an ephemeral loopback port; dropping the
/// sender stops it.
async fn start_http(router: Router) -> (SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, router, async {
        let _ = stopped.await;
    }));
    (addr, stop)
}

/// `METHOD path` over a fresh connection: status, headers, body.
async fn request(addr: SocketAddr, method: &str, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("{method} {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut out))
        .await
        .expect("HTTP response timed out")
        .unwrap();
    let text = String::from_utf8(out).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("no end of headers");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head:?}"));
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .expect("Content-Length")
        .parse()
        .unwrap();
    assert!(head.contains("\r\nConnection: close"), "{head}");
    if method != "HEAD" {
        assert_eq!(length, body.len(), "Content-Length of {path}");
    }
    (status, head.to_string(), body.to_string())
}

async fn scrape(addr: SocketAddr) -> String {
    let (status, head, body) = request(addr, "GET", "/metrics").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    body
}

/// The value of `series` (name and label set exactly as exposed), 0 when
/// absent.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
        .unwrap_or(0.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_and_worker_metrics_follow_queries() {
    let c = TestCluster::start(2).await;
    let engine = Arc::clone(c.cluster.engine());
    let (addr, _stop) = start_http(coordinator_routes(engine, vec![])).await;
    let w = c.cluster.workers[0].id().to_string();
    let ws = |name: &str| format!("{name}{{worker=\"{w}\"}}");

    assert_eq!(request(addr, "GET", "/health").await.0, 200);
    let (status, _, body) = request(addr, "GET", "/ready").await;
    assert_eq!((status, body.as_str()), (200, "ready\n"));
    assert_eq!(request(addr, "GET", "/nope").await.0, 404);
    let (status, head, body) = request(addr, "GET", "/").await;
    assert_eq!(status, 200, "{body}");
    assert!(head.contains("Content-Type: text/html"), "{head}");
    assert!(body.contains("<section id=\"workers\">"), "{body}");
    assert_eq!(request(addr, "POST", "/metrics").await.0, 405);
    let (status, head, body) = request(addr, "HEAD", "/metrics").await;
    assert_eq!(status, 200);
    assert!(
        body.is_empty() && head.contains("Content-Length: "),
        "{head}"
    );

    let before = scrape(addr).await;
    assert_eq!(value(&before, "fsql_live_workers"), 2.0, "{before}");
    for family in [
        "# TYPE fsql_queries_total counter",
        "# TYPE fsql_query_duration_seconds histogram",
        "# TYPE fsql_bytes_streamed_total counter",
        "# TYPE fsql_worker_fragments_total counter",
        "# TYPE fsql_worker_fragment_seconds histogram",
    ] {
        assert!(before.contains(family), "{family} missing:\n{before}");
    }

    let mut client = c.client().await;
    client
        .update("CREATE TABLE m (a BIGINT, b VARCHAR) WITH (distribution = 'hash(a)')")
        .await
        .unwrap();
    let values: Vec<String> = (0..200).map(|i| format!("({i}, 'v{i}')")).collect();
    client
        .update(&format!("INSERT INTO m VALUES {}", values.join(", ")))
        .await
        .unwrap();
    // Merged at the coordinator (a final aggregate over shard partials).
    let merged = client.query("SELECT count(*) AS n FROM m").await.unwrap();
    assert_eq!(rows(&merged), 1);
    // Direct: the client reads the shards from the workers.
    let direct = client
        .query("SELECT a, b FROM m WHERE a >= 0")
        .await
        .unwrap();
    assert_eq!(rows(&direct), 200);
    let catalogs = client.sql.get_catalogs().await.unwrap();
    assert_eq!(rows(&client.read_info(&catalogs).await.unwrap()), 1);
    let failed = client
        .query("SELECT * FROM no_such_table")
        .await
        .unwrap_err();
    let code = code_name(failed.code());

    let after = scrape(addr).await;
    let delta = |series: &str| value(&after, series) - value(&before, series);
    assert_eq!(delta("fsql_queries_total{kind=\"query\"}"), 3.0, "{after}");
    assert_eq!(delta("fsql_queries_total{kind=\"update\"}"), 2.0, "{after}");
    assert_eq!(
        delta("fsql_queries_total{kind=\"metadata\"}"),
        1.0,
        "{after}"
    );
    assert!(
        delta("fsql_bytes_streamed_total{path=\"metadata\"}") > 0.0,
        "{after}"
    );
    // Scrape-time worker gauges appear only where a collector runs (the
    // other test's worker has some).
    assert!(!after.contains(&ws("fsql_worker_shards")), "{after}");
    let errors = format!("fsql_query_errors_total{{code=\"{code}\"}}");
    assert!(
        matches!(code, "NotFound" | "InvalidArgument"),
        "unexpected code for an unknown table: {failed}"
    );
    assert_eq!(delta(&errors), 1.0, "{errors} in\n{after}");
    // Two updates, the merged query (planning + stream), the direct one
    // (planning), the failed one.
    assert!(
        delta("fsql_query_duration_seconds_count") >= 5.0,
        "duration count: {after}"
    );
    assert!(
        delta("fsql_query_duration_seconds_bucket{le=\"+Inf\"}") >= 5.0,
        "{after}"
    );
    assert!(
        delta("fsql_bytes_streamed_total{path=\"merged\"}") > 0.0,
        "{after}"
    );

    // Worker 0 holds a shard of `m`: both reads touched it, the insert
    // wrote to it. (Worker series share the process's registry.)
    assert!(delta(&ws("fsql_worker_fragments_total")) >= 2.0, "{after}");
    assert!(
        delta(&format!(
            "fsql_worker_fragment_seconds_count{{worker=\"{w}\"}}"
        )) >= 2.0,
        "{after}"
    );
    assert!(delta(&ws("fsql_worker_bytes_sent_total")) > 0.0, "{after}");
    assert!(delta(&ws("fsql_worker_rows_sent_total")) > 0.0, "{after}");
    assert!(
        delta(&ws("fsql_worker_rows_written_total")) > 0.0,
        "{after}"
    );
    let sum_written: f64 = c
        .cluster
        .workers
        .iter()
        .map(|w| {
            let s = format!("fsql_worker_rows_written_total{{worker=\"{}\"}}", w.id());
            value(&after, &s) - value(&before, &s)
        })
        .sum();
    assert_eq!(sum_written, 200.0, "{after}");

    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_routes_report_duckdb_and_readiness() {
    let dir = tempfile::tempdir().unwrap();
    let config = flight_worker::WorkerConfig::new(dir.path().join("w"), "secret");
    let storage = Arc::new(
        tokio::task::spawn_blocking(move || flight_worker::storage::Storage::open(&config))
            .await
            .unwrap()
            .unwrap(),
    );
    let id = storage.worker_id().to_string();
    let ready = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&ready);
    let routes = worker_routes(Arc::clone(&storage), move || {
        if flag.load(Ordering::SeqCst) {
            Ok(())
        } else {
            Err("still loading".into())
        }
    });
    let (addr, _stop) = start_http(routes).await;

    assert_eq!(request(addr, "GET", "/health").await.0, 200);
    let (status, _, body) = request(addr, "GET", "/ready").await;
    assert_eq!(status, 503);
    assert!(body.contains("still loading"), "{body}");
    ready.store(true, Ordering::SeqCst);
    assert_eq!(request(addr, "GET", "/ready").await.0, 200);

    let text = scrape(addr).await;
    let memory = format!("fsql_worker_duckdb_memory_bytes{{worker=\"{id}\"}}");
    let shards = format!("fsql_worker_shards{{worker=\"{id}\"}}");
    assert!(text.contains(&format!("{memory} ")), "{text}");
    assert!(text.contains(&format!("{shards} 0\n")), "{text}");

    storage.close();
    storage.release();
}
