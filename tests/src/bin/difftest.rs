//! Randomized differential testing at scale: random queries on a local
//! cluster and on single-process DuckDB over the same rows.
//!
//! `cargo run -p tests --bin difftest -- --queries 10000` (random seed,
//! printed) or `-- --seed N --queries 10000` to repeat a run. Exits 1 when
//! any query differs, printing each with a minimized reproduction.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use clap::Parser;
use flight_coordinator::engine::EngineConfig;
use flight_coordinator::local::{LocalCluster, LocalConfig};
use futures::TryStreamExt;
use tests::difftest::{self, ClusterConn};
use tonic::transport::{Channel, Endpoint};

#[derive(Parser)]
#[command(about = "random SQL on the cluster vs single-process DuckDB")]
struct Cli {
    /// Seed of the data and the queries (default: random).
    #[arg(long)]
    seed: Option<u64>,
    /// Number of random queries.
    #[arg(long, default_value_t = 1000)]
    queries: usize,
    /// Workers in the local cluster.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Stop after this many differences.
    #[arg(long, default_value_t = 10)]
    max_differences: usize,
    /// Print each query before running it.
    #[arg(long)]
    verbose: bool,
    /// Check these queries (repeatable) on the seed's data instead of random
    /// ones, printing each outcome; `EXPLAIN ...` prints the cluster's plan.
    #[arg(long)]
    sql: Vec<String>,
}

async fn connect(url: &str) -> Result<Channel, String> {
    Endpoint::from_shared(flight_coordinator::workers::http_uri(url))
        .map_err(|e| e.to_string())?
        .connect()
        .await
        .map_err(|e| format!("connecting to {url}: {e}"))
}

/// A Flight SQL client reading every endpoint (following worker locations).
struct Conn {
    sql: FlightSqlServiceClient<Channel>,
    verbose: bool,
}

#[async_trait::async_trait]
impl ClusterConn for Conn {
    async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, String> {
        if self.verbose {
            eprintln!("{sql}");
        }
        let info = self
            .sql
            .execute(sql.to_string(), None)
            .await
            .map_err(|e| e.to_string())?;
        let mut out = Vec::new();
        for ep in info.endpoint {
            let ticket = ep.ticket.ok_or("endpoint without a ticket")?;
            let mut worker;
            let source = match ep.location.first() {
                None => &mut self.sql,
                Some(loc) => {
                    worker = FlightSqlServiceClient::new(connect(&loc.uri).await?);
                    &mut worker
                }
            };
            let batches: Vec<RecordBatch> = source
                .do_get(ticket)
                .await
                .map_err(|e| e.to_string())?
                .try_collect()
                .await
                .map_err(|e| e.to_string())?;
            out.extend(batches);
        }
        Ok(out)
    }

    async fn update(&mut self, sql: &str) -> Result<(), String> {
        self.sql
            .execute_update(sql.to_string(), None)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 4)]
async fn main() {
    let cli = Cli::parse();
    let seed = cli.seed.unwrap_or_else(rand::random);
    eprintln!(
        "difftest: seed {seed}, {} queries, {} workers",
        cli.queries, cli.workers
    );
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cluster = LocalCluster::start(
        LocalConfig {
            workers: cli.workers,
            data_dir: dir.path().to_path_buf(),
            engine: EngineConfig::default(),
            worker_threads: Some(1),
            worker_memory_limit: Some("1GB".into()),
            security: Default::default(),
        },
        listener,
    )
    .await
    .unwrap();
    let mut conn = Conn {
        sql: FlightSqlServiceClient::new(connect(&cluster.url()).await.unwrap()),
        verbose: cli.verbose,
    };
    let duck = tests::reference::open().unwrap();
    difftest::setup(&mut conn, &duck, seed).await.unwrap();
    if !cli.sql.is_empty() {
        let mut failed = false;
        for sql in &cli.sql {
            println!("{sql}");
            if sql.trim_start().to_ascii_uppercase().starts_with("EXPLAIN") {
                match conn.query(sql).await {
                    Ok(b) => println!(
                        "{}",
                        arrow::util::pretty::pretty_format_batches(&b).unwrap()
                    ),
                    Err(e) => println!("cluster error: {e}"),
                }
                continue;
            }
            match difftest::check(&mut conn, &duck, sql, false).await {
                difftest::Outcome::Agree => println!("-> agree"),
                difftest::Outcome::BothFailed(e) => println!("-> both failed:\n{e}"),
                difftest::Outcome::Differ(d) => {
                    failed = true;
                    println!("-> differ:\n{d}")
                }
            }
        }
        cluster.shutdown().await;
        std::process::exit(i32::from(failed));
    }
    let start = std::time::Instant::now();
    let mut reported = 0;
    let report = difftest::run(
        &mut conn,
        &duck,
        seed,
        cli.queries,
        cli.max_differences,
        |n, r| {
            if r.differences.len() > reported {
                reported = r.differences.len();
                if let Some((sql, min, diff)) = r.differences.last() {
                    eprintln!(
                        "difference #{reported} at query {n}:\n{sql}\nminimized:\n{min}\n{diff}"
                    );
                }
            }
            if n % 500 == 0 {
                eprintln!(
                    "{n} queries, {} differ, {} refused by both ({:.0?})",
                    r.differences.len(),
                    r.both_failed,
                    start.elapsed()
                );
            }
        },
    )
    .await;
    cluster.shutdown().await;
    println!("{}", report.summary(seed));
    if !report.differences.is_empty() {
        std::process::exit(1);
    }
}
