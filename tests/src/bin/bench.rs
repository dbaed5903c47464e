//! Benchmarks: TPC-H on the local cluster against single-process DuckDB.
//!
//! `cargo run --release -p tests --bin bench -- tpch --sf 1` generates the
//! data, loads it into an in-memory DuckDB and into a local cluster, then
//! runs the 22 queries alternating between the two, and prints per-query
//! medians, ratios and totals (as a Markdown table).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use clap::{Parser, Subcommand};
use flight_coordinator::engine::EngineConfig;
use flight_coordinator::local::{LocalCluster, LocalConfig};
use flight_coordinator::tpch;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(about = "fsql benchmarks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// TPC-H: local cluster vs single-process DuckDB on the same data.
    Tpch {
        /// Scale factor.
        #[arg(long, default_value_t = 1.0)]
        sf: f64,
        /// Workers in the local cluster.
        #[arg(long, default_value_t = 2)]
        workers: usize,
        /// DuckDB threads per worker; single-process DuckDB gets
        /// workers × this many.
        #[arg(long, default_value_t = 1)]
        threads_per_worker: usize,
        /// Shards per distributed table (default: one per worker).
        #[arg(long)]
        shards: Option<u32>,
        /// Table layout: star (dimension tables replicated) or distributed.
        #[arg(long, default_value = "star")]
        layout: String,
        /// Timed runs per query and side (the median is reported).
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Only these queries (comma separated), default all 22.
        #[arg(long, value_delimiter = ',')]
        queries: Vec<usize>,
    },
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn run_cluster_query(client: &mut FlightSqlServiceClient<Channel>, sql: &str) -> usize {
    let info = client.execute(sql.to_string(), None).await.unwrap();
    let mut rows = 0;
    for ep in info.endpoint {
        let ticket = ep.ticket.unwrap();
        let mut worker;
        let source = match ep.location.first() {
            None => &mut *client,
            Some(loc) => {
                worker = FlightSqlServiceClient::new(connect(&loc.uri).await);
                &mut worker
            }
        };
        let batches: Vec<RecordBatch> = source
            .do_get(ticket)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        rows += batches.iter().map(|b| b.num_rows()).sum::<usize>();
    }
    rows
}

async fn connect(url: &str) -> Channel {
    Endpoint::from_shared(flight_coordinator::workers::http_uri(url))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    match cli.command {
        Cmd::Tpch {
            sf,
            workers,
            threads_per_worker,
            shards,
            layout,
            runs,
            queries,
        } => {
            let layout = match layout.as_str() {
                "star" => tpch::Layout::Star,
                "distributed" => tpch::Layout::Distributed,
                other => panic!("unknown layout {other}; use star or distributed"),
            };
            let queries: Vec<usize> = if queries.is_empty() {
                (1..=22).collect()
            } else {
                queries
            };
            let total_threads = workers * threads_per_worker;
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

            let dir = tempfile::tempdir().unwrap();
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let cluster = LocalCluster::start(
                LocalConfig {
                    workers,
                    data_dir: dir.path().to_path_buf(),
                    engine: EngineConfig::default(),
                    worker_threads: Some(threads_per_worker),
                    worker_memory_limit: None,
                    security: Default::default(),
                },
                listener,
            )
            .await
            .unwrap();
            eprintln!("loading TPC-H SF {sf} into a {workers}-worker local cluster");
            let t = Instant::now();
            flight_coordinator::local::load_tpch(
                cluster.engine(),
                sf,
                shards.unwrap_or(workers as u32),
                layout,
            )
            .await
            .unwrap();
            eprintln!("  {:.1}s", t.elapsed().as_secs_f64());
            let mut client = FlightSqlServiceClient::new(connect(&cluster.url()).await);

            let duck = std::sync::Arc::new(std::sync::Mutex::new(duck));
            println!("| query | DuckDB (ms) | cluster (ms) | ratio |");
            println!("| --- | ---: | ---: | ---: |");
            let (mut total_d, mut total_c) = (Duration::ZERO, Duration::ZERO);
            for n in queries {
                let sql = tpch::query(n).unwrap();
                let (mut d, mut c) = (Vec::new(), Vec::new());
                // One warm-up each, then alternate.
                for i in 0..=runs {
                    let conn = std::sync::Arc::clone(&duck);
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
                    run_cluster_query(&mut client, sql).await;
                    let ce = t.elapsed();
                    if i > 0 {
                        d.push(elapsed);
                        c.push(ce);
                    }
                }
                let (md, mc) = (median(d), median(c));
                total_d += md;
                total_c += mc;
                println!(
                    "| Q{n} | {:.1} | {:.1} | {:.2} |",
                    md.as_secs_f64() * 1e3,
                    mc.as_secs_f64() * 1e3,
                    mc.as_secs_f64() / md.as_secs_f64()
                );
            }
            println!(
                "| **total** | {:.1} | {:.1} | {:.2} |",
                total_d.as_secs_f64() * 1e3,
                total_c.as_secs_f64() * 1e3,
                total_c.as_secs_f64() / total_d.as_secs_f64()
            );
            cluster.shutdown().await;
        }
    }
}
