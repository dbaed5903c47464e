//! Benchmarks of the cluster (issue 5). See `docs/benchmarks.md`.
//!
//! `cargo run --release -p tests --bin bench -- <command> [options]` generates
//! TPC-H itself, starts the clusters it needs on loopback and prints Markdown
//! tables. Commands:
//!
//! * `tpch`: the 2-worker local cluster against single-process DuckDB with
//!   the same total threads, per query, alternating;
//! * `scaling`: separately started `flight-worker` processes pinned to one
//!   core each (`taskset`), 1 worker against 2 workers on the same data;
//! * `latency`: `SELECT 1`, a point query and `GetTables`, through prepared
//!   statements and through `CommandStatementQuery`, p50/p99;
//! * `concurrency`: 8/32/64 clients running TPC-H queries for a fixed time;
//! * `throughput`: a large result read through direct endpoints, through the
//!   coordinator, and from a bare in-process arrow-flight server;
//! * `ingest`: ADBC `adbc_ingest` of lineitem (the Python driver, through
//!   `tests/bench/adbc_ingest.py`);
//! * `all`: every one of them, sharing one loaded cluster where possible.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bare;
mod client;
mod procs;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, RecordBatch};
use arrow_flight::sql::CommandGetTables;
use clap::{Args, Parser, Subcommand};
use flight_coordinator::engine::EngineConfig;
use flight_coordinator::local::{LocalCluster, LocalConfig};
use flight_coordinator::tpch;

use client::Client;

#[derive(Parser)]
#[command(about = "fsql benchmarks (see docs/benchmarks.md)")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum Cmd {
    /// TPC-H: 2-worker local cluster vs single-process DuckDB on the same data.
    Tpch,
    /// 1 vs 2 worker processes, each pinned to one core (taskset).
    Scaling,
    /// SELECT 1, a point query and GetTables: prepared vs plain statements.
    Latency,
    /// 8/32/64 concurrent clients running TPC-H queries for a fixed time.
    Concurrency,
    /// A large result: direct endpoints vs merged vs a bare arrow-flight server.
    Throughput,
    /// ADBC adbc_ingest of lineitem into a hash-distributed table.
    Ingest,
    /// Every benchmark above, in one run.
    All,
}

/// Options of every command (they may follow the command name).
#[derive(Args, Clone)]
struct Opts {
    /// TPC-H scale factor.
    #[arg(long, global = true, default_value_t = 1.0)]
    sf: f64,
    /// Workers of the local cluster (tpch, latency, concurrency, throughput, ingest).
    #[arg(long, global = true, default_value_t = 2)]
    workers: usize,
    /// DuckDB threads per worker; single-process DuckDB gets workers × this many.
    #[arg(long, global = true, default_value_t = 1)]
    threads_per_worker: usize,
    /// Shards per distributed table (default: one per worker; `scaling`: 2 in both
    /// clusters, so both hold the same shards).
    #[arg(long, global = true)]
    shards: Option<u32>,
    /// Table layout: star (dimension tables replicated) or distributed.
    #[arg(long, global = true, default_value = "star")]
    layout: String,
    /// Timed runs per measurement and side (the median is reported); one
    /// warm-up run comes first.
    #[arg(long, global = true, default_value_t = 3)]
    runs: usize,
    /// Only these TPC-H queries (comma separated), default all 22 (tpch,
    /// scaling, and the concurrency mix).
    #[arg(long, global = true, value_delimiter = ',')]
    queries: Vec<usize>,
    /// Calls per latency measurement.
    #[arg(long, global = true, default_value_t = 1000)]
    calls: usize,
    /// Client counts of the concurrency benchmark.
    #[arg(long, global = true, value_delimiter = ',', default_values_t = [8, 32, 64])]
    clients: Vec<usize>,
    /// Seconds each concurrency level runs.
    #[arg(long, global = true, default_value_t = 30.0)]
    duration: f64,
    /// The flight-worker binary for `scaling` (default: next to this binary).
    #[arg(long, global = true)]
    worker_bin: Option<PathBuf>,
    /// Python with the ADBC Flight SQL driver for `ingest` (default: FSQL_BENCH_PYTHON,
    /// else the repository's .venv).
    #[arg(long, global = true)]
    python: Option<PathBuf>,
}

impl Opts {
    fn layout(&self) -> tpch::Layout {
        match self.layout.as_str() {
            "star" => tpch::Layout::Star,
            "distributed" => tpch::Layout::Distributed,
            other => panic!("unknown layout {other}; use star or distributed"),
        }
    }

    fn queries(&self) -> Vec<usize> {
        if self.queries.is_empty() {
            (1..=22).collect()
        } else {
            self.queries.clone()
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `p`-th percentile (nearest rank) of `v`.
fn percentile(v: &mut [Duration], p: f64) -> Duration {
    if v.is_empty() {
        return Duration::ZERO;
    }
    v.sort();
    let rank = ((p / 100.0) * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Bytes of the Arrow buffers a batch covers (what a client holds after decoding).
fn batch_bytes(b: &RecordBatch) -> usize {
    b.columns()
        .iter()
        .map(|c| c.to_data().get_slice_memory_size().unwrap_or(0))
        .sum()
}

/// The local cluster and the data loaded into it.
struct Local {
    cluster: LocalCluster,
    _dir: tempfile::TempDir,
}

async fn start_local(opts: &Opts) -> Local {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster = LocalCluster::start(
        LocalConfig {
            workers: opts.workers,
            data_dir: dir.path().to_path_buf(),
            engine: EngineConfig::default(),
            worker_threads: Some(opts.threads_per_worker),
            worker_memory_limit: None,
            security: Default::default(),
        },
        listener,
    )
    .await
    .unwrap();
    let workers = opts.workers;
    eprintln!(
        "loading TPC-H SF {} into a {workers}-worker local cluster ({} layout)",
        opts.sf, opts.layout
    );
    let t = Instant::now();
    flight_coordinator::local::load_tpch(
        cluster.engine(),
        opts.sf,
        opts.shards.unwrap_or(workers as u32),
        opts.layout(),
    )
    .await
    .unwrap();
    eprintln!("  {:.1}s", t.elapsed().as_secs_f64());
    Local { cluster, _dir: dir }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    let opts = cli.opts;
    let cmd = cli.command;
    let started = Instant::now();
    println!("# fsql benchmarks");
    println!();
    println!("{}", machine_line(&opts));
    let mut targets = Vec::new();
    if cmd == Cmd::Scaling || cmd == Cmd::All {
        let speedup = procs::scaling(&opts).await;
        targets.push((
            "2 pinned workers vs 1 pinned worker, TPC-H total speedup",
            ">= 1.85",
            format!("{speedup:.2}"),
            speedup >= 1.85,
        ));
    }
    if cmd != Cmd::Scaling {
        let local = start_local(&opts).await;
        let url = local.cluster.url();
        if matches!(cmd, Cmd::Tpch | Cmd::All) {
            let ratio = tpch_vs_duckdb(&opts, &url).await;
            targets.push((
                "TPC-H total, 2-worker cluster / single-process DuckDB",
                "<= 1.15",
                format!("{ratio:.2}"),
                ratio <= 1.15,
            ));
        }
        if matches!(cmd, Cmd::Latency | Cmd::All) {
            let p50 = latency(&opts, &url).await;
            targets.push((
                "SELECT 1 p50 through the prepared path",
                "<= 1 ms",
                format!("{:.3} ms", ms(p50)),
                p50 <= Duration::from_millis(1),
            ));
        }
        if matches!(cmd, Cmd::Concurrency | Cmd::All) {
            let (clients, errors) = concurrency(&opts, &url).await;
            targets.push((
                "errors at the most concurrent clients",
                "0",
                format!("{errors} at {clients} clients"),
                errors == 0,
            ));
        }
        if matches!(cmd, Cmd::Throughput | Cmd::All) {
            let share = throughput(&opts, &url).await;
            targets.push((
                "direct-endpoint throughput / bare arrow-flight server",
                ">= 0.80",
                format!("{share:.2}"),
                share >= 0.8,
            ));
        }
        if matches!(cmd, Cmd::Ingest | Cmd::All) {
            let rps = ingest(&opts, &url).await;
            targets.push((
                "ADBC ingest of lineitem, rows/s",
                ">= 1,000,000",
                format!("{rps:.0}"),
                rps >= 1e6,
            ));
        }
        local.cluster.shutdown().await;
    }
    println!();
    println!("## Targets (issue 5)");
    println!();
    println!("| target | wanted | measured | met |");
    println!("| --- | --- | --- | --- |");
    for (name, wanted, got, met) in targets {
        println!(
            "| {name} | {wanted} | {got} | {} |",
            if met { "yes" } else { "no" }
        );
    }
    eprintln!("bench done in {:.1}s", started.elapsed().as_secs_f64());
}

fn machine_line(opts: &Opts) -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let build = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    format!(
        "Machine: {cpus} CPUs ({model}); build: {build}; TPC-H SF {}; {} layout; \
         {} timed runs (median) after one warm-up.",
        opts.sf, opts.layout, opts.runs
    )
}

// ---------------------------------------------------------------------------------------
// 1. TPC-H against single-process DuckDB
// ---------------------------------------------------------------------------------------

async fn tpch_vs_duckdb(opts: &Opts, url: &str) -> f64 {
    let total_threads = opts.workers * opts.threads_per_worker;
    let sf = opts.sf;
    eprintln!("loading TPC-H SF {sf} into single-process DuckDB ({total_threads} threads)");
    let t = Instant::now();
    let duck = tokio::task::spawn_blocking(move || {
        let conn = tests::reference::open().unwrap();
        conn.execute_batch(&format!("SET threads = {total_threads}"))
            .unwrap();
        tests::reference::load_tpch(&conn, sf).unwrap();
        conn
    })
    .await
    .unwrap();
    eprintln!("  {:.1}s", t.elapsed().as_secs_f64());
    let duck = Arc::new(std::sync::Mutex::new(duck));
    let mut client = Client::connect(url).await;

    println!();
    println!(
        "## TPC-H SF {sf}: {}-worker cluster ({} DuckDB thread(s) each) vs single-process \
         DuckDB ({total_threads} threads)",
        opts.workers, opts.threads_per_worker
    );
    println!();
    let mut table = Comparison::new("DuckDB (ms)", "cluster (ms)", "ratio", |d, c| c / d);
    for n in opts.queries() {
        let sql = tpch::query(n).unwrap();
        let (mut d, mut c) = (Vec::new(), Vec::new());
        // One warm-up each, then alternate.
        for i in 0..=opts.runs {
            let conn = Arc::clone(&duck);
            let q = sql.to_string();
            let elapsed = tokio::task::spawn_blocking(move || {
                let conn = conn.lock().unwrap();
                let t = Instant::now();
                tests::reference::query(&conn, &q).unwrap();
                t.elapsed()
            })
            .await
            .unwrap();
            let t = Instant::now();
            client
                .query(sql)
                .await
                .unwrap_or_else(|e| panic!("Q{n}: {e}"));
            let ce = t.elapsed();
            if i > 0 {
                d.push(elapsed);
                c.push(ce);
            }
        }
        table.row(n, d, c);
    }
    table.total()
}

/// A per-query table of the medians of two sides, with their ratio, and a
/// total row (the sums of the medians).
pub(crate) struct Comparison {
    ratio: fn(f64, f64) -> f64,
    totals: (Duration, Duration),
}

impl Comparison {
    /// Prints the header; `ratio(a, b)` of the two sides' seconds.
    pub(crate) fn new(a: &str, b: &str, ratio_name: &str, ratio: fn(f64, f64) -> f64) -> Self {
        println!("| query | {a} | {b} | {ratio_name} |");
        println!("| --- | ---: | ---: | ---: |");
        Self {
            ratio,
            totals: (Duration::ZERO, Duration::ZERO),
        }
    }

    /// One query's row: the medians of `a` and `b`.
    pub(crate) fn row(&mut self, n: usize, a: Vec<Duration>, b: Vec<Duration>) {
        let (ma, mb) = (median(a), median(b));
        self.totals.0 += ma;
        self.totals.1 += mb;
        self.print(&format!("Q{n}"), ma, mb);
    }

    fn print(&self, label: &str, a: Duration, b: Duration) -> f64 {
        let r = (self.ratio)(a.as_secs_f64(), b.as_secs_f64());
        println!("| {label} | {:.1} | {:.1} | {r:.2} |", ms(a), ms(b));
        r
    }

    /// Prints the total row; returns its ratio.
    pub(crate) fn total(self) -> f64 {
        self.print("**total**", self.totals.0, self.totals.1)
    }
}

// ---------------------------------------------------------------------------------------
// 3. Latency
// ---------------------------------------------------------------------------------------

const POINT_QUERY: &str =
    "SELECT o_orderkey, o_custkey, o_orderstatus, o_totalprice FROM orders WHERE o_orderkey = 32";

/// Returns the p50 of `SELECT 1` through the prepared path.
async fn latency(opts: &Opts, url: &str) -> Duration {
    let mut client = Client::connect(url).await;
    println!();
    println!(
        "## Latency: {} calls per path, alternating (one client, connections kept open)",
        opts.calls
    );
    println!();
    println!("| call | path | p50 (ms) | p99 (ms) | mean (ms) |");
    println!("| --- | --- | ---: | ---: | ---: |");
    let warmup = (opts.calls / 10).clamp(1, 100);
    let mut select1_prepared = Duration::ZERO;
    for (name, sql) in [("SELECT 1", "SELECT 1"), ("point query", POINT_QUERY)] {
        let mut prepared = client.coord.prepare(sql.to_string(), None).await.unwrap();
        let (mut p, mut s) = (Vec::new(), Vec::new());
        for i in 0..warmup + opts.calls {
            let t = Instant::now();
            let info = prepared.execute().await.unwrap();
            let rows = client.read(info).await.unwrap();
            let pe = t.elapsed();
            assert_eq!(rows, 1, "{name} through the prepared path");
            let t = Instant::now();
            let rows = client.query(sql).await.unwrap();
            let se = t.elapsed();
            assert_eq!(rows, 1, "{name} through CommandStatementQuery");
            if i >= warmup {
                p.push(pe);
                s.push(se);
            }
        }
        prepared.close().await.unwrap();
        if sql == "SELECT 1" {
            select1_prepared = percentile(&mut p, 50.0);
        }
        for (path, v) in [
            (
                "prepared (GetFlightInfo(CommandPreparedStatementQuery) + DoGet)",
                &mut p,
            ),
            (
                "statement (GetFlightInfo(CommandStatementQuery) + DoGet)",
                &mut s,
            ),
        ] {
            latency_row(name, path, v);
        }
    }
    let mut g = Vec::new();
    for i in 0..warmup + opts.calls {
        let t = Instant::now();
        let info = client
            .coord
            .get_tables(CommandGetTables {
                catalog: None,
                db_schema_filter_pattern: None,
                table_name_filter_pattern: None,
                table_types: vec![],
                include_schema: false,
            })
            .await
            .unwrap();
        let rows = client.read(info).await.unwrap();
        assert!(rows >= 8, "GetTables lists the TPC-H tables");
        if i >= warmup {
            g.push(t.elapsed());
        }
    }
    latency_row(
        "GetTables",
        "GetFlightInfo(CommandGetTables) + DoGet",
        &mut g,
    );
    select1_prepared
}

fn latency_row(name: &str, path: &str, v: &mut [Duration]) {
    let mean = v.iter().sum::<Duration>() / v.len().max(1) as u32;
    let (p50, p99) = (percentile(v, 50.0), percentile(v, 99.0));
    println!(
        "| {name} | {path} | {:.3} | {:.3} | {:.3} |",
        ms(p50),
        ms(p99),
        ms(mean)
    );
}

// ---------------------------------------------------------------------------------------
// 4. Concurrency
// ---------------------------------------------------------------------------------------

/// Returns the largest client count and its errors.
async fn concurrency(opts: &Opts, url: &str) -> (usize, usize) {
    let mix = opts.queries();
    println!();
    println!(
        "## Concurrency: clients running TPC-H queries {} (each client its own connection, \
         starting at a different query) for {:.0} s",
        if opts.queries.is_empty() {
            "Q1-Q22 in turn".to_string()
        } else {
            format!("{mix:?} in turn")
        },
        opts.duration
    );
    println!();
    println!("| clients | queries | wall (s) | queries/s | p50 (ms) | p99 (ms) | errors |");
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    let mut last = (0, 0);
    for &clients in &opts.clients {
        let started = Instant::now();
        let deadline = started + Duration::from_secs_f64(opts.duration);
        let mut tasks = Vec::new();
        for c in 0..clients {
            let url = url.to_string();
            let mix = mix.clone();
            tasks.push(tokio::spawn(async move {
                let mut client = Client::connect(&url).await;
                let (mut lat, mut errors) = (Vec::new(), Vec::new());
                let mut k = c;
                while Instant::now() < deadline {
                    let n = mix[k % mix.len()];
                    k += 1;
                    let t = Instant::now();
                    match client.query(tpch::query(n).unwrap()).await {
                        Ok(_) => lat.push(t.elapsed()),
                        Err(e) => errors.push(format!("Q{n}: {e}")),
                    }
                }
                (lat, errors)
            }));
        }
        let (mut lat, mut errors) = (Vec::new(), Vec::new());
        for t in tasks {
            let (l, e) = t.await.unwrap();
            lat.extend(l);
            errors.extend(e);
        }
        let wall = started.elapsed();
        let done = lat.len();
        println!(
            "| {clients} | {done} | {:.1} | {:.2} | {:.0} | {:.0} | {} |",
            wall.as_secs_f64(),
            done as f64 / wall.as_secs_f64(),
            ms(percentile(&mut lat, 50.0)),
            ms(percentile(&mut lat, 99.0)),
            errors.len()
        );
        for e in errors.iter().take(3) {
            eprintln!("  error at {clients} clients: {e}");
        }
        last = (clients, errors.len());
    }
    last
}

// ---------------------------------------------------------------------------------------
// 5. Result throughput
// ---------------------------------------------------------------------------------------

const LARGE_RESULT: &str = "SELECT l_orderkey, l_partkey, l_suppkey, l_quantity, l_extendedprice, l_shipdate FROM lineitem";

/// Returns direct-endpoint throughput as a share of the bare server's.
async fn throughput(opts: &Opts, url: &str) -> f64 {
    let mut client = Client::connect(url).await;
    let mut merged = Client::connect(url).await;
    merged.coord.set_header("fsql-direct", "false");

    // The batches the bare server serves: exactly what the direct path returns,
    // one stream per endpoint.
    let info = client
        .coord
        .execute(LARGE_RESULT.into(), None)
        .await
        .unwrap();
    let endpoints = info.endpoint.len();
    let streams = client.read_streams(info).await.unwrap();
    let rows: usize = streams.iter().flatten().map(|b| b.num_rows()).sum();
    let bytes: usize = streams.iter().flatten().map(batch_bytes).sum();
    let bare = bare::BareServer::start(streams).await;
    let mut bare_client = Client::connect(&bare.url()).await;

    let (mut d, mut m, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..=opts.runs {
        let t = Instant::now();
        let info = client
            .coord
            .execute(LARGE_RESULT.into(), None)
            .await
            .unwrap();
        let got = client.read_bytes(info).await.unwrap();
        let de = t.elapsed();
        assert_eq!(got, bytes, "direct path");
        let t = Instant::now();
        let info = merged
            .coord
            .execute(LARGE_RESULT.into(), None)
            .await
            .unwrap();
        assert_eq!(info.endpoint.len(), 1, "merged at the coordinator");
        let got = merged.read_bytes(info).await.unwrap();
        let me = t.elapsed();
        assert_eq!(got, bytes, "merged path");
        let t = Instant::now();
        let got = bare_client
            .read_bytes(bare.flight_info(endpoints))
            .await
            .unwrap();
        let be = t.elapsed();
        assert_eq!(got, bytes, "bare server");
        if i > 0 {
            d.push(de);
            m.push(me);
            b.push(be);
        }
    }
    let gbs = |t: Duration| bytes as f64 / 1e9 / t.as_secs_f64();
    let (d, m, b) = (median(d), median(m), median(b));
    println!();
    println!(
        "## Result throughput: `{LARGE_RESULT}` ({rows} rows, {:.1} MB of Arrow buffers, \
         {endpoints} endpoint(s) in the direct result)",
        bytes as f64 / 1e6
    );
    println!();
    println!("| path | time (ms) | GB/s | vs bare server |");
    println!("| --- | ---: | ---: | ---: |");
    println!(
        "| direct worker endpoints (read in parallel) | {:.1} | {:.3} | {:.2} |",
        ms(d),
        gbs(d),
        gbs(d) / gbs(b)
    );
    println!(
        "| merged at the coordinator (one endpoint) | {:.1} | {:.3} | {:.2} |",
        ms(m),
        gbs(m),
        gbs(m) / gbs(b)
    );
    println!(
        "| bare arrow-flight server ({endpoints} stream(s) from memory, read in parallel) | \
         {:.1} | {:.3} | 1.00 |",
        ms(b),
        gbs(b)
    );
    bare.shutdown().await;
    gbs(d) / gbs(b)
}

// ---------------------------------------------------------------------------------------
// 6. Ingest
// ---------------------------------------------------------------------------------------

/// Returns the ADBC ingest rate in rows/s.
async fn ingest(opts: &Opts, url: &str) -> f64 {
    let python = opts
        .python
        .clone()
        .or_else(|| std::env::var_os("FSQL_BENCH_PYTHON").map(PathBuf::from))
        .unwrap_or_else(|| {
            PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../.venv/bin/python"))
        });
    let script = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/bench/adbc_ingest.py"));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("lineitem.arrow");
    let sf = opts.sf;
    let path = file.clone();
    let (rows, batches) = tokio::task::spawn_blocking(move || {
        let schema = tpch::schema("lineitem").unwrap();
        let out = std::fs::File::create(&path).unwrap();
        let mut w = arrow::ipc::writer::FileWriter::try_new(out, &schema).unwrap();
        let mut rows = 0;
        let mut batches = Vec::new();
        for b in tpch::generate("lineitem", sf, 64 * 1024).unwrap() {
            rows += b.num_rows();
            w.write(&b).unwrap();
            batches.push(b);
        }
        w.finish().unwrap();
        (rows, batches)
    })
    .await
    .unwrap();
    let shards = opts.shards.unwrap_or(opts.workers as u32);
    let create = tpch::create_table_sql("lineitem", shards, tpch::Layout::Star).replacen(
        "CREATE TABLE lineitem ",
        "CREATE TABLE bench_ingest ",
        1,
    );
    let plain = tpch::create_table_sql_plain("lineitem");
    let batches = Arc::new(batches);

    let (mut a, mut d) = (Vec::new(), Vec::new());
    for _ in 0..opts.runs.max(1) {
        let out = std::process::Command::new(&python)
            .arg(&script)
            .args(["--uri", url, "--file"])
            .arg(&file)
            .args(["--table", "bench_ingest", "--create", &create])
            .output()
            .unwrap_or_else(|e| panic!("running {}: {e}", python.display()));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{} {} failed:\n{stdout}\n{}",
            python.display(),
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .find(|l| l.starts_with("rows="))
            .unwrap_or_else(|| panic!("no result line from the ingest script: {stdout}"));
        let mut it = line.split_whitespace();
        let got: usize = it.next().unwrap()[5..].parse().unwrap();
        let secs: f64 = it.next().unwrap()[8..].parse().unwrap();
        assert_eq!(got, rows, "rows ingested");
        a.push(Duration::from_secs_f64(secs));

        // The reference: the same batches appended to single-process DuckDB.
        let (batches, plain) = (Arc::clone(&batches), plain.clone());
        let threads = opts.workers * opts.threads_per_worker;
        d.push(
            tokio::task::spawn_blocking(move || {
                let conn = tests::reference::open().unwrap();
                conn.execute_batch(&format!("SET threads = {threads}; {plain}"))
                    .unwrap();
                let t = Instant::now();
                let mut app = conn.appender("lineitem").unwrap();
                for b in batches.iter() {
                    app.append_record_batch(b.clone()).unwrap();
                }
                app.flush().unwrap();
                drop(app);
                t.elapsed()
            })
            .await
            .unwrap(),
        );
    }
    let (a, d) = (median(a), median(d));
    let rps = |t: Duration| rows as f64 / t.as_secs_f64();
    println!();
    println!(
        "## Ingest: lineitem ({rows} rows) with ADBC `adbc_ingest` (Python driver, mode \
         append) into a table hash-distributed on l_orderkey, {shards} shards"
    );
    println!();
    println!("| path | time (s) | rows/s |");
    println!("| --- | ---: | ---: |");
    println!(
        "| ADBC adbc_ingest → coordinator → {} workers | {:.2} | {:.0} |",
        opts.workers,
        a.as_secs_f64(),
        rps(a)
    );
    println!(
        "| (reference) DuckDB Arrow appender, in process, same batches | {:.2} | {:.0} |",
        d.as_secs_f64(),
        rps(d)
    );
    rps(a)
}
