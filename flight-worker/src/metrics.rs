//! A minimal Prometheus registry and its text exposition (format 0.0.4).
//!
//! Counters, gauges and histograms (fixed [`BUCKETS`], in seconds), each a
//! family of series told apart by their label values. Looking a series up
//! locks a small map once; the returned handle ([`Counter`], [`Gauge`],
//! [`Histogram`]) is a shared atomic, cheap to update from hot paths, so
//! callers keep handles for their fixed label sets and look up only labels
//! that vary per event (an error code).
//!
//! [`global()`] is the registry of the process. In the coordinator's `local`
//! mode the coordinator and its workers share the process and one HTTP
//! port, so every worker series carries a `worker` label. This module also
//! holds the worker's own series ([`WorkerMetrics`]) and its HTTP routes
//! ([`worker_routes`]); it knows nothing of gRPC beyond code names and runs
//! DuckDB only through [`crate::storage`] on the blocking pool.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use crate::http::{Response, Router};
use crate::storage::Storage;

/// Upper bounds of every histogram's buckets, in seconds (`+Inf` follows).
pub const BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The content type of the text exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The registry of this process.
pub fn global() -> &'static Registry {
    static GLOBAL: LazyLock<Registry> = LazyLock::new(Registry::default);
    &GLOBAL
}

/// The name of a gRPC status code as tonic spells it (`NotFound`,
/// `InvalidArgument`, ...), for `code` labels.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "Ok",
        Code::Cancelled => "Cancelled",
        Code::Unknown => "Unknown",
        Code::InvalidArgument => "InvalidArgument",
        Code::DeadlineExceeded => "DeadlineExceeded",
        Code::NotFound => "NotFound",
        Code::AlreadyExists => "AlreadyExists",
        Code::PermissionDenied => "PermissionDenied",
        Code::ResourceExhausted => "ResourceExhausted",
        Code::FailedPrecondition => "FailedPrecondition",
        Code::Aborted => "Aborted",
        Code::OutOfRange => "OutOfRange",
        Code::Unimplemented => "Unimplemented",
        Code::Internal => "Internal",
        Code::Unavailable => "Unavailable",
        Code::DataLoss => "DataLoss",
        Code::Unauthenticated => "Unauthenticated",
    }
}

/// A monotonically increasing count.
#[derive(Debug, Clone, Default)]
pub struct Counter(Arc<AtomicU64>);

impl Counter {
    pub fn inc(&self) {
        self.inc_by(1);
    }

    pub fn inc_by(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }

    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// A value that goes up and down (an integer: bytes, counts).
#[derive(Debug, Clone, Default)]
pub struct Gauge(Arc<AtomicI64>);

impl Gauge {
    pub fn set(&self, v: i64) {
        self.0.store(v, Ordering::Relaxed);
    }

    pub fn add(&self, v: i64) {
        self.0.fetch_add(v, Ordering::Relaxed);
    }

    pub fn get(&self) -> i64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
struct HistogramCore {
    /// Observations per bucket (not cumulative); the last one is `+Inf`.
    buckets: [AtomicU64; BUCKETS.len() + 1],
    count: AtomicU64,
    /// The sum of observations, as `f64` bits.
    sum: AtomicU64,
}

/// Observations (durations in seconds) in the fixed [`BUCKETS`].
#[derive(Debug, Clone, Default)]
pub struct Histogram(Arc<HistogramCore>);

impl Histogram {
    pub fn observe(&self, v: f64) {
        let v = if v.is_finite() { v.max(0.0) } else { 0.0 };
        let i = BUCKETS
            .iter()
            .position(|b| v <= *b)
            .unwrap_or(BUCKETS.len());
        self.0.buckets[i].fetch_add(1, Ordering::Relaxed);
        let _ = self
            .0
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + v).to_bits())
            });
        self.0.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn observe_duration(&self, d: Duration) {
        self.observe(d.as_secs_f64());
    }

    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.0.count.load(Ordering::Relaxed)
    }

    /// Sum of observations.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }

    /// A timer observing the time until it is dropped.
    pub fn start_timer(&self) -> HistogramTimer {
        HistogramTimer {
            histogram: self.clone(),
            started: Instant::now(),
        }
    }
}

/// Observes the time from [`Histogram::start_timer`] until it is dropped.
#[derive(Debug)]
pub struct HistogramTimer {
    histogram: Histogram,
    started: Instant,
}

impl Drop for HistogramTimer {
    fn drop(&mut self) {
        self.histogram.observe_duration(self.started.elapsed());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Debug, Clone)]
enum Series {
    Counter(Counter),
    Gauge(Gauge),
    Histogram(Histogram),
}

impl Series {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Counter => Series::Counter(Counter::default()),
            Kind::Gauge => Series::Gauge(Gauge::default()),
            Kind::Histogram => Series::Histogram(Histogram::default()),
        }
    }
}

/// Label pairs, in the order the caller gave them.
type Labels = Vec<(String, String)>;

#[derive(Debug)]
struct Family {
    help: String,
    kind: Kind,
    series: BTreeMap<Labels, Series>,
}

/// Metric families by name.
#[derive(Debug, Default)]
pub struct Registry {
    families: Mutex<BTreeMap<String, Family>>,
}

impl Registry {
    /// The counter `name{labels}`, created at 0 on first use.
    pub fn counter(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Counter {
        match self.series(name, help, Kind::Counter, labels) {
            Some(Series::Counter(c)) => c,
            _ => Counter::default(),
        }
    }

    /// The gauge `name{labels}`, created at 0 on first use.
    pub fn gauge(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Gauge {
        match self.series(name, help, Kind::Gauge, labels) {
            Some(Series::Gauge(g)) => g,
            _ => Gauge::default(),
        }
    }

    /// The histogram `name{labels}` with the fixed [`BUCKETS`].
    pub fn histogram(&self, name: &str, help: &str, labels: &[(&str, &str)]) -> Histogram {
        match self.series(name, help, Kind::Histogram, labels) {
            Some(Series::Histogram(h)) => h,
            _ => Histogram::default(),
        }
    }

    /// The series, or `None` (logged; the caller gets a detached metric)
    /// when `name` is already registered with another type.
    fn series(
        &self,
        name: &str,
        help: &str,
        kind: Kind,
        labels: &[(&str, &str)],
    ) -> Option<Series> {
        let mut families = self.families.lock();
        let family = families.entry(name.to_string()).or_insert_with(|| Family {
            help: help.to_string(),
            kind,
            series: BTreeMap::new(),
        });
        if family.kind != kind {
            tracing::warn!(
                metric = name,
                "metric registered as a {} and used as a {}; not exported",
                family.kind.name(),
                kind.name()
            );
            return None;
        }
        let key: Labels = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect();
        Some(
            family
                .series
                .entry(key)
                .or_insert_with(|| Series::new(kind))
                .clone(),
        )
    }

    /// Every family in the text exposition format 0.0.4, sorted by name.
    pub fn render(&self) -> String {
        let families = self.families.lock();
        let mut out = String::with_capacity(4096);
        for (name, family) in families.iter() {
            let _ = writeln!(out, "# HELP {name} {}", escape_help(&family.help));
            let _ = writeln!(out, "# TYPE {name} {}", family.kind.name());
            for (labels, series) in &family.series {
                match series {
                    Series::Counter(c) => {
                        let _ = writeln!(out, "{name}{} {}", label_set(labels, None), c.get());
                    }
                    Series::Gauge(g) => {
                        let _ = writeln!(out, "{name}{} {}", label_set(labels, None), g.get());
                    }
                    Series::Histogram(h) => render_histogram(&mut out, name, labels, h),
                }
            }
        }
        out
    }
}

fn render_histogram(out: &mut String, name: &str, labels: &Labels, h: &Histogram) {
    let mut cumulative = 0;
    for (i, bound) in BUCKETS.iter().enumerate() {
        cumulative += h.0.buckets[i].load(Ordering::Relaxed);
        let le = format_float(*bound);
        let _ = writeln!(
            out,
            "{name}_bucket{} {cumulative}",
            label_set(labels, Some(&le))
        );
    }
    cumulative += h.0.buckets[BUCKETS.len()].load(Ordering::Relaxed);
    // `count` is updated last, so a concurrent observation may show in the
    // buckets before it does; the `+Inf` bucket equals `count` all the same.
    let count = h.count().max(cumulative);
    let _ = writeln!(
        out,
        "{name}_bucket{} {count}",
        label_set(labels, Some("+Inf"))
    );
    let _ = writeln!(
        out,
        "{name}_sum{} {}",
        label_set(labels, None),
        format_float(h.sum())
    );
    let _ = writeln!(out, "{name}_count{} {count}", label_set(labels, None));
}

/// `{a="x",b="y"}` (with `le` last when given), or nothing without labels.
fn label_set(labels: &Labels, le: Option<&str>) -> String {
    if labels.is_empty() && le.is_none() {
        return String::new();
    }
    let mut out = String::from("{");
    let pairs = labels
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .chain(le.map(|le| ("le", le)));
    for (i, (k, v)) in pairs.enumerate() {
        if i > 0 {
            out.push(',');
        }
        let _ = write!(out, "{k}=\"{}\"", escape_label_value(v));
    }
    out.push('}');
    out
}

/// A label value with `\`, `"` and newlines escaped.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Help text with `\` and newlines escaped.
fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A sample value: Rust's shortest round-trip form, `+Inf`, `-Inf`, `NaN`.
fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{v}")
    }
}

// ---------------------------------------------------------------------------
// The worker's series

/// Shard reads (DoGet of a shard ticket) started.
pub const WORKER_FRAGMENTS: &str = "fsql_worker_fragments_total";
/// Shard reads that ended in an error, by gRPC code.
pub const WORKER_FRAGMENT_ERRORS: &str = "fsql_worker_fragment_errors_total";
/// Time from DoGet to the end of its stream.
pub const WORKER_FRAGMENT_SECONDS: &str = "fsql_worker_fragment_seconds";
/// Arrow IPC bytes of DoGet streams.
pub const WORKER_BYTES_SENT: &str = "fsql_worker_bytes_sent_total";
/// Rows of DoGet streams.
pub const WORKER_ROWS_SENT: &str = "fsql_worker_rows_sent_total";
/// Rows committed by DoPut.
pub const WORKER_ROWS_WRITTEN: &str = "fsql_worker_rows_written_total";
/// DuckDB's memory use.
pub const WORKER_DUCKDB_MEMORY: &str = "fsql_worker_duckdb_memory_bytes";
/// Shard tables in the worker's database.
pub const WORKER_SHARDS: &str = "fsql_worker_shards";

/// The series of one worker, labelled `worker="<id>"`.
#[derive(Debug, Clone)]
pub struct WorkerMetrics {
    worker: Arc<str>,
    pub fragments: Counter,
    pub fragment_seconds: Histogram,
    pub bytes_sent: Counter,
    pub rows_sent: Counter,
    pub rows_written: Counter,
}

impl WorkerMetrics {
    /// The series of worker `worker` in the [`global()`] registry.
    pub fn new(worker: &str) -> Self {
        let r = global();
        let l = [("worker", worker)];
        Self {
            worker: worker.into(),
            fragments: r.counter(
                WORKER_FRAGMENTS,
                "Shard reads (DoGet of a shard ticket) started.",
                &l,
            ),
            fragment_seconds: r.histogram(
                WORKER_FRAGMENT_SECONDS,
                "Seconds from a shard read's DoGet until its stream ended (or was dropped).",
                &l,
            ),
            bytes_sent: r.counter(
                WORKER_BYTES_SENT,
                "Arrow IPC bytes (FlightData header and body) sent by shard reads.",
                &l,
            ),
            rows_sent: r.counter(WORKER_ROWS_SENT, "Rows sent by shard reads.", &l),
            rows_written: r.counter(
                WORKER_ROWS_WRITTEN,
                "Rows committed to shard tables by DoPut.",
                &l,
            ),
        }
    }

    /// Counts a failed shard read with the gRPC code it ended with.
    pub fn fragment_error(&self, code: tonic::Code) {
        global()
            .counter(
                WORKER_FRAGMENT_ERRORS,
                "Shard reads that failed (before or during the stream), by gRPC code.",
                &[("worker", &self.worker), ("code", code_name(code))],
            )
            .inc();
    }
}

/// Sets the worker's scrape-time gauges (DuckDB memory, shard tables),
/// querying DuckDB on the blocking pool; the gauges appear with the first
/// update. Failures (a worker shutting down) leave the last values and are
/// logged at debug level.
pub async fn update_worker_gauges(storage: &Arc<Storage>) {
    let worker = storage.worker_id().to_string();
    let storage = Arc::clone(storage);
    let usage = tokio::task::spawn_blocking(move || {
        let conn = storage.connect()?;
        crate::storage::resource_usage(&conn)
    })
    .await;
    match usage {
        Ok(Ok(usage)) => {
            let r = global();
            let l = [("worker", worker.as_str())];
            r.gauge(
                WORKER_DUCKDB_MEMORY,
                "Memory DuckDB uses (sum of duckdb_memory()), at the last scrape.",
                &l,
            )
            .set(i64::try_from(usage.memory_bytes).unwrap_or(i64::MAX));
            r.gauge(
                WORKER_SHARDS,
                "Shard tables in the worker's database, at the last scrape.",
                &l,
            )
            .set(i64::try_from(usage.shard_tables).unwrap_or(i64::MAX));
        }
        Ok(Err(e)) => tracing::debug!("reading DuckDB resource use: {e}"),
        Err(e) => tracing::debug!("reading DuckDB resource use: {e}"),
    }
}

/// Whether a server is ready: `Ok` or the reason it is not.
pub type Readiness = std::result::Result<(), String>;

/// The worker's HTTP routes:
///
/// * `/metrics`: sets the scrape-time gauges of `storage`'s worker, then
///   renders the [`global()`] registry;
/// * `/health`: 200 `ok` while the process serves HTTP;
/// * `/ready`: 200 `ready` when `ready()` is `Ok`, else 503 with the reason.
pub fn worker_routes(
    storage: Arc<Storage>,
    ready: impl Fn() -> Readiness + Send + Sync + 'static,
) -> Router {
    Router::new()
        .route("/metrics", move |_req| {
            let storage = Arc::clone(&storage);
            async move {
                update_worker_gauges(&storage).await;
                Response::prometheus(global().render())
            }
        })
        .route("/health", |_req| async { Response::text(200, "ok\n") })
        .route("/ready", ready_route(ready))
}

/// The handler of `/ready` over a readiness check.
pub fn ready_route(
    ready: impl Fn() -> Readiness + Send + Sync + 'static,
) -> impl Fn(crate::http::Request) -> std::future::Ready<Response> + Send + Sync + 'static {
    move |_req| {
        std::future::ready(match ready() {
            Ok(()) => Response::text(200, "ready\n"),
            Err(reason) => Response::text(503, format!("not ready: {reason}\n")),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn counters_gauges_and_escaping() {
        let r = Registry::default();
        r.counter("a_total", "Things.\nMore \\ help.", &[("k", "v\"\\\nx")])
            .inc_by(3);
        r.counter("a_total", "ignored", &[("k", "w")]).inc();
        r.gauge("b", "A gauge.", &[]).set(-5);
        let text = r.render();
        let expected = "# HELP a_total Things.\\nMore \\\\ help.\n\
                        # TYPE a_total counter\n\
                        a_total{k=\"v\\\"\\\\\\nx\"} 3\n\
                        a_total{k=\"w\"} 1\n\
                        # HELP b A gauge.\n\
                        # TYPE b gauge\n\
                        b -5\n";
        assert_eq!(text, expected);
    }

    #[test]
    fn same_series_shares_one_value() {
        let r = Registry::default();
        let a = r.counter("c_total", "C.", &[("x", "1")]);
        let b = r.counter("c_total", "C.", &[("x", "1")]);
        a.inc();
        b.inc();
        assert_eq!(a.get(), 2);
        // A type clash gives a detached metric and leaves the family alone.
        r.gauge("c_total", "C.", &[("x", "1")]).set(9);
        assert!(r.render().contains("c_total{x=\"1\"} 2\n"));
    }

    #[test]
    fn histogram_exposition() {
        let r = Registry::default();
        let h = r.histogram("d_seconds", "D.", &[("w", "1")]);
        h.observe(0.0005);
        h.observe(0.003);
        h.observe(100.0);
        let text = r.render();
        assert!(text.contains("# TYPE d_seconds histogram\n"), "{text}");
        assert!(
            text.contains("d_seconds_bucket{w=\"1\",le=\"0.001\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{w=\"1\",le=\"0.0025\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{w=\"1\",le=\"0.005\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{w=\"1\",le=\"60\"} 2\n"),
            "{text}"
        );
        assert!(
            text.contains("d_seconds_bucket{w=\"1\",le=\"+Inf\"} 3\n"),
            "{text}"
        );
        assert!((h.sum() - 100.0035).abs() < 1e-9);
        assert!(
            text.contains(&format!("d_seconds_sum{{w=\"1\"}} {}\n", h.sum())),
            "{text}"
        );
        assert!(text.contains("d_seconds_count{w=\"1\"} 3\n"), "{text}");
        // Buckets are in increasing order and there are 15 plus +Inf.
        assert_eq!(text.matches("d_seconds_bucket").count(), BUCKETS.len() + 1);
    }

    #[test]
    fn float_format() {
        assert_eq!(format_float(60.0), "60");
        assert_eq!(format_float(0.0025), "0.0025");
        assert_eq!(format_float(f64::INFINITY), "+Inf");
        assert_eq!(format_float(f64::NAN), "NaN");
    }

    #[test]
    fn code_names() {
        assert_eq!(code_name(tonic::Code::NotFound), "NotFound");
        assert_eq!(code_name(tonic::Code::InvalidArgument), "InvalidArgument");
    }
}
