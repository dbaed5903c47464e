//! Randomized differential testing with a fixed seed: a few hundred random
//! queries on a 3-worker cluster (uneven 5- and 4-shard tables, an empty
//! table) and on single-process DuckDB over the same rows. Any difference
//! fails with the SQL and a minimized reproduction.
//!
//! More queries, another seed: `cargo run -p tests --bin difftest -- --help`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tests::difftest::{self, ClusterConn};

/// The seed and the number of queries CI runs.
const SEED: u64 = 20_261_121;
const QUERIES: usize = 300;

pub struct Conn(pub Client);

#[async_trait::async_trait]
impl ClusterConn for Conn {
    async fn query(&mut self, sql: &str) -> Result<Vec<arrow::array::RecordBatch>, String> {
        self.0.query(sql).await.map_err(|s| s.message().to_string())
    }

    async fn update(&mut self, sql: &str) -> Result<(), String> {
        self.0
            .update(sql)
            .await
            .map(|_| ())
            .map_err(|s| s.message().to_string())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_queries_match_duckdb() {
    let seed = std::env::var("FSQL_DIFFTEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SEED);
    let cluster = TestCluster::start(3).await;
    let mut conn = Conn(cluster.client().await);
    let duck = tests::reference::open().unwrap();
    difftest::setup(&mut conn, &duck, seed).await.unwrap();
    let report = difftest::run(&mut conn, &duck, seed, QUERIES, 5, |_, _| {}).await;
    cluster.stop().await;
    println!("{}", report.summary(seed));
    assert!(report.differences.is_empty(), "{}", report.summary(seed));
    // The generator must mostly produce queries both engines accept.
    assert!(
        report.both_failed * 10 < report.queries,
        "too many queries refused by both engines: {}",
        report.summary(seed)
    );
}
