//! The sqllogictest corpus (`tests/slt/*.slt`), run through the Rust Flight
//! SQL client against a 1-worker cluster and against a 3-worker cluster
//! whose distributed tables default to 5 shards (2 + 2 + 1 per worker, most
//! of them nearly empty or empty with the corpus's small tables). Both
//! shapes must give the same answers: the expected results in the files.
//!
//! Each file runs on a fresh cluster; records labelled `onlyif fsql` hold
//! our own semantics (where we differ from DuckDB, see `docs/sql.md`),
//! `onlyif duckdb` records show DuckDB's answer and are skipped here.
//!
//! Environment:
//! * `FSQL_SLT_FILTER=substr` runs only the files whose name contains it;
//! * `FSQL_SLT_KNOWN=1` runs `tests/slt/known_failures/` instead: records
//!   that fail today, kept out of CI;
//! * `FSQL_SLT_COMPLETE=1` makes the `complete` test rewrite the expected
//!   results of every (filtered) file from single-node DuckDB:
//!   `FSQL_SLT_COMPLETE=1 cargo nextest run --workspace --test slt complete`
//!   (records under `onlyif fsql` are kept as written).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};

use common::*;
use flight_coordinator::engine::{StatementKind, classify};
use sqllogictest::{DBOutput, DefaultColumnType, Runner};
use tests::slt::{DuckDb, SltError, rows_output};

/// The cluster as a sqllogictest database.
struct ClusterDb {
    client: Client,
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for ClusterDb {
    type Error = SltError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, SltError> {
        let kind = classify(sql).map_err(|e| SltError(e.to_string()))?;
        if kind == StatementKind::Update {
            let n = self
                .client
                .update(sql)
                .await
                .map_err(|s| SltError(s.message().to_string()))?;
            return Ok(DBOutput::StatementComplete(n.max(0) as u64));
        }
        let info = self
            .client
            .info(sql)
            .await
            .map_err(|s| SltError(s.message().to_string()))?;
        let schema = info
            .clone()
            .try_decode_schema()
            .map_err(|e| SltError(e.to_string()))?;
        let batches = self
            .client
            .read_info(&info)
            .await
            .map_err(|s| SltError(s.message().to_string()))?;
        Ok(rows_output(&schema, &batches))
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "fsql"
    }

    async fn sleep(dur: std::time::Duration) {
        tokio::time::sleep(dur).await;
    }
}

fn corpus() -> Vec<PathBuf> {
    let mut dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("slt");
    if std::env::var("FSQL_SLT_KNOWN").is_ok() {
        dir = dir.join("known_failures");
    }
    let filter = std::env::var("FSQL_SLT_FILTER").unwrap_or_default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "slt"))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(&filter))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in {}", dir.display());
    files
}

async fn run_corpus(workers: usize, default_shards: Option<u32>) {
    let mut failures = Vec::new();
    for file in corpus() {
        let cluster = TestCluster::start_sharded(workers, true, default_shards).await;
        let url = cluster.cluster.url();
        let mut runner = Runner::new(move || {
            let url = url.clone();
            async move {
                Ok::<_, SltError>(ClusterDb {
                    client: Client::connect(&url).await,
                })
            }
        });
        runner.add_label("fsql");
        if let Err(e) = runner.run_file_async(&file).await {
            failures.push(format!("{}\n{}", file.display(), e.display(false)));
        }
        runner.shutdown_async().await;
        cluster.stop().await;
    }
    assert!(
        failures.is_empty(),
        "{} failure(s) on {workers} worker(s):\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corpus_on_one_worker() {
    run_corpus(1, None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn corpus_on_three_workers_uneven_shards() {
    run_corpus(3, Some(5)).await;
}

/// `FSQL_SLT_COMPLETE=1`: rewrite expected results from single-node DuckDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete() {
    if std::env::var("FSQL_SLT_COMPLETE").is_err() {
        return;
    }
    for file in corpus() {
        let mut runner = Runner::new(|| async { DuckDb::open() });
        runner.add_label("duckdb");
        runner
            .update_test_file(
                &file,
                " ",
                sqllogictest::default_validator,
                sqllogictest::default_normalizer,
                sqllogictest::default_column_validator,
            )
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        runner.shutdown_async().await;
    }
}
