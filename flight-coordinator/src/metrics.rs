//! The coordinator's metrics and its HTTP routes (`/metrics`, `/health`,
//! `/ready`, and the status page `/` rendered by [`crate::status`]).
//!
//! The series live in the process's registry ([`flight_worker::metrics::global`]),
//! so in `local` mode one `/metrics` shows the coordinator and its workers
//! (worker series carry `worker="<id>"`). `service` updates them:
//!
//! | metric | meaning |
//! | --- | --- |
//! | `fsql_queries_total{kind}` | statements and metadata requests received, by `kind` (see [`QueryKind`]) |
//! | `fsql_query_errors_total{code}` | errors returned to clients by any RPC of the Flight service (including errors ending a DoGet stream), by gRPC code name (`NotFound`, `InvalidArgument`, ...) |
//! | `fsql_query_duration_seconds` | one observation per statement, see [`StatementTimer`] |
//! | `fsql_bytes_streamed_total{path}` | Arrow IPC bytes (FlightData header and body) of the DoGet streams served here: `path="merged"` for statement results merged here, `path="metadata"` for catalog and SqlInfo results; direct results travel from the workers (`fsql_worker_bytes_sent_total`) |
//! | `fsql_live_workers` | workers in the catalog's worker set, set at each scrape |
//!
//! Nothing here plans or runs queries.

use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use flight_worker::http::{Response, Router};
use flight_worker::metrics::{Counter, Gauge, Histogram, code_name, global};
use flight_worker::storage::Storage;
use futures::future::BoxFuture;

use crate::engine::Engine;

pub const QUERIES: &str = "fsql_queries_total";
pub const QUERY_ERRORS: &str = "fsql_query_errors_total";
pub const QUERY_DURATION: &str = "fsql_query_duration_seconds";
pub const BYTES_STREAMED: &str = "fsql_bytes_streamed_total";
pub const LIVE_WORKERS: &str = "fsql_live_workers";

/// What a client asked for, by Flight SQL command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `GetFlightInfo`/`PollFlightInfo` of `CommandStatementQuery`
    /// (including DDL/DML sent as a query, as ADBC does).
    Query,
    /// `GetFlightInfo` of `CommandPreparedStatementQuery` and `DoPut` of
    /// `CommandPreparedStatementUpdate`: executions of prepared statements.
    Prepared,
    /// `DoPut` of `CommandStatementUpdate`.
    Update,
    /// `DoPut` of `CommandStatementIngest` (bulk ingest).
    Ingest,
    /// `GetFlightInfo` of the catalog commands (`GetTables`, `GetSqlInfo`,
    /// `GetXdbcTypeInfo`, ...).
    Metadata,
}

impl QueryKind {
    pub const ALL: [QueryKind; 5] = [
        QueryKind::Query,
        QueryKind::Prepared,
        QueryKind::Update,
        QueryKind::Ingest,
        QueryKind::Metadata,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::Query => "query",
            QueryKind::Prepared => "prepared",
            QueryKind::Update => "update",
            QueryKind::Ingest => "ingest",
            QueryKind::Metadata => "metadata",
        }
    }
}

/// The coordinator's series.
#[derive(Debug)]
pub struct CoordinatorMetrics {
    queries: [Counter; QueryKind::ALL.len()],
    pub duration: Histogram,
    pub bytes_merged: Counter,
    pub bytes_metadata: Counter,
    pub live_workers: Gauge,
}

/// The coordinator's series in the process's registry, registered (at 0)
/// on first use.
pub fn metrics() -> &'static CoordinatorMetrics {
    static METRICS: LazyLock<CoordinatorMetrics> = LazyLock::new(|| {
        let r = global();
        let bytes_help = "Arrow IPC bytes (FlightData header and body) the coordinator streamed \
                          to clients, by path (merged statement results, metadata results).";
        CoordinatorMetrics {
            queries: QueryKind::ALL.map(|kind| {
                r.counter(
                    QUERIES,
                    "Statements and metadata requests received, by kind.",
                    &[("kind", kind.as_str())],
                )
            }),
            duration: r.histogram(
                QUERY_DURATION,
                "Seconds per statement: planning plus, for results merged at the coordinator, \
                 execution until the stream ended; updates: their execution.",
                &[],
            ),
            bytes_merged: r.counter(BYTES_STREAMED, bytes_help, &[("path", "merged")]),
            bytes_metadata: r.counter(BYTES_STREAMED, bytes_help, &[("path", "metadata")]),
            live_workers: r.gauge(
                LIVE_WORKERS,
                "Workers in the coordinator's worker set, at the last scrape.",
                &[],
            ),
        }
    });
    &METRICS
}

impl CoordinatorMetrics {
    /// Counts a request of `kind`.
    pub fn query(&self, kind: QueryKind) {
        let i = QueryKind::ALL
            .iter()
            .position(|k| *k == kind)
            .unwrap_or_default();
        self.queries[i].inc();
    }

    /// Counts an error returned to a client.
    pub fn error(&self, code: tonic::Code) {
        global()
            .counter(
                QUERY_ERRORS,
                "Errors returned to clients (any RPC, including errors ending a stream), \
                 by gRPC code.",
                &[("code", code_name(code))],
            )
            .inc();
    }

    /// Passes `result` on, counting its error.
    pub fn counted<T>(&self, result: Result<T, tonic::Status>) -> Result<T, tonic::Status> {
        if let Err(status) = &result {
            self.error(status.code());
        }
        result
    }
}

/// Times one statement into `fsql_query_duration_seconds`, observed when
/// dropped (so failures count too):
///
/// * a query whose result is merged here: planning in `GetFlightInfo`
///   ([`Self::defer`] hands the planning time to the cached plan), then
///   from `DoGet` until its stream ends or is dropped ([`Self::resume`]);
///   a merged query never fetched is not observed;
/// * a query answered with direct endpoints: planning (the workers' time
///   is in `fsql_worker_fragment_seconds`);
/// * DDL/DML and ingest: their execution.
#[derive(Debug)]
pub struct StatementTimer {
    started: Instant,
    before: Duration,
    armed: bool,
}

impl StatementTimer {
    pub fn start() -> Self {
        Self::resume(Duration::ZERO)
    }

    /// Goes on timing a statement that already took `before`.
    pub fn resume(before: Duration) -> Self {
        Self {
            started: Instant::now(),
            before,
            armed: true,
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.before + self.started.elapsed()
    }

    /// Stops without observing; returns the time so far for a later
    /// [`Self::resume`].
    pub fn defer(mut self) -> Duration {
        self.armed = false;
        self.elapsed()
    }
}

impl Drop for StatementTimer {
    fn drop(&mut self) {
        if self.armed {
            metrics().duration.observe_duration(self.elapsed());
        }
    }
}

/// Work done at each scrape before rendering (e.g. a worker's DuckDB
/// gauges).
pub type Collector = Arc<dyn Fn() -> BoxFuture<'static, ()> + Send + Sync>;

/// The scrape-time gauges of a worker of this process (`local` mode).
pub fn worker_collector(storage: Arc<Storage>) -> Collector {
    Arc::new(move || {
        let storage = Arc::clone(&storage);
        Box::pin(async move { flight_worker::metrics::update_worker_gauges(&storage).await })
    })
}

/// The coordinator's HTTP routes:
///
/// * `/metrics`: sets `fsql_live_workers`, runs `collectors` (in `local`
///   mode one [`worker_collector`] per worker), renders the registry;
/// * `/health`: 200 `ok` while the process serves HTTP;
/// * `/ready`: 200 when the worker set is not empty, else 503 saying so;
/// * `/`: the HTML status page ([`crate::status`]).
///
/// Other paths are 404.
pub fn coordinator_routes(engine: Arc<Engine>, collectors: Vec<Collector>) -> Router {
    let collectors = Arc::new(collectors);
    let scrape_engine = Arc::clone(&engine);
    let status_engine = Arc::clone(&engine);
    Router::new()
        .route("/", move |_req| {
            let engine = Arc::clone(&status_engine);
            async move { Response::html(200, crate::status::render(&engine).await) }
        })
        .route("/metrics", move |_req| {
            let engine = Arc::clone(&scrape_engine);
            let collectors = Arc::clone(&collectors);
            async move {
                let live = engine.catalog.workers().len();
                metrics()
                    .live_workers
                    .set(i64::try_from(live).unwrap_or(i64::MAX));
                for collect in collectors.iter() {
                    collect().await;
                }
                Response::prometheus(global().render())
            }
        })
        .route("/health", |_req| async { Response::text(200, "ok\n") })
        .route(
            "/ready",
            flight_worker::metrics::ready_route(move || {
                if engine.catalog.workers().is_empty() {
                    Err("no live workers".into())
                } else {
                    Ok(())
                }
            }),
        )
}
