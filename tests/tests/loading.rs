//! Loading files: `CREATE TABLE ... AS SELECT ... FROM read_parquet(glob)`
//! and `read_csv(glob)` (gzip too), split by file across the workers, with
//! row counts and checksums compared with DuckDB reading the same files,
//! progress in `system.queries`, and the error cases leaving no table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::DataType;
use common::*;
use tonic::Code;

/// Every value of every row, as text (NULL for nulls).
fn texts(batches: &[RecordBatch]) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for b in batches {
        let cols: Vec<_> = b
            .columns()
            .iter()
            .map(|c| arrow::compute::cast(c, &DataType::Utf8).unwrap())
            .collect();
        for r in 0..b.num_rows() {
            out.push(
                cols.iter()
                    .map(|c| {
                        let c = c.as_string::<i32>();
                        if c.is_null(r) {
                            "NULL".to_string()
                        } else {
                            c.value(r).to_string()
                        }
                    })
                    .collect(),
            );
        }
    }
    out
}

/// The first row DuckDB answers to `sql`.
fn duckdb_row(sql: &str) -> Vec<String> {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    let mut stmt = conn.prepare(sql).unwrap();
    let batches: Vec<RecordBatch> = stmt.query_arrow([]).unwrap().collect();
    texts(&batches).remove(0)
}

/// The summary query answered by DuckDB over `source`.
fn duckdb_summary(source: &str) -> Vec<String> {
    duckdb_row(&summary_sql(source))
}

/// Row count and checksums of the test files' columns.
fn summary_sql(source: &str) -> String {
    format!(
        "SELECT count(*) AS n, sum(id) AS ids, CAST(sum(price) AS DECIMAL(18, 2)) AS prices, \
         min(name) AS lo, max(name) AS hi, count(DISTINCT day) AS days, \
         sum(CASE WHEN note IS NULL THEN 1 ELSE 0 END) AS nulls FROM {source}"
    )
}

/// Writes `files` files of `rows` rows each with DuckDB's COPY in `format`.
fn write_files(dir: &Path, stem: &str, files: usize, rows: usize, copy_options: &str) {
    let conn = duckdb::Connection::open_in_memory().unwrap();
    for f in 0..files {
        let start = f * rows;
        let path = dir.join(format!("{stem}{f}"));
        conn.execute_batch(&format!(
            "COPY (SELECT i AS id, 'name ' || lpad(i::VARCHAR, 6, '0') AS name, \
             round(i * 1.25, 2) AS price, DATE '2024-01-01' + (i % 300)::INTEGER AS day, \
             CASE WHEN i % 7 = 0 THEN NULL ELSE 'n' || i END AS note \
             FROM range({start}, {end}) t(i)) TO '{path}' ({copy_options})",
            end = start + rows,
            path = path.display(),
        ))
        .unwrap();
    }
}

fn one_text(batches: &[RecordBatch]) -> Vec<String> {
    texts(batches).remove(0)
}

async fn table_count(cl: &mut Client, name: &str) -> usize {
    rows(
        &cl.query(&format!(
            "SELECT name FROM system.tables WHERE name = '{name}'"
        ))
        .await
        .unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parquet_and_csv_globs_load_across_workers() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    write_files(dir, "part-", 4, 5_000, "FORMAT parquet");
    let glob = format!("{}/part-*", dir.display());
    let loaded = cl
        .update(&format!(
            "CREATE TABLE pq WITH (distribution = 'hash(id)', shards = 3) AS \
             SELECT * FROM read_parquet('{glob}')"
        ))
        .await
        .unwrap();
    assert_eq!(loaded, 20_000);
    let reference = format!("read_parquet('{glob}')");
    assert_eq!(
        one_text(&cl.query(&summary_sql("pq")).await.unwrap()),
        duckdb_summary(&reference)
    );
    // The same answer reading the files directly, merged at the coordinator.
    assert_eq!(
        one_text(&cl.query(&summary_sql(&reference)).await.unwrap()),
        duckdb_summary(&reference)
    );

    // Split by file: both workers read a share of the files.
    let explain = texts(
        &cl.query(&format!("EXPLAIN ANALYZE SELECT count(*) FROM {reference}"))
            .await
            .unwrap(),
    );
    let text: String = explain.iter().map(|r| r.join(" ")).collect();
    assert!(text.contains("read_parquet(4 files)"), "{text}");
    for w in &c.cluster.workers {
        let addr = w.addr().to_string();
        assert!(text.contains(&addr), "worker {addr} read no file:\n{text}");
    }

    // The load's progress and outcome in system.queries.
    let q = texts(
        &cl.query(
            "SELECT state, rows, progress FROM system.queries \
             WHERE sql LIKE 'CREATE TABLE pq%'",
        )
        .await
        .unwrap(),
    );
    assert_eq!(
        q,
        [vec![
            "finished".to_string(),
            "20000".to_string(),
            "100% (4/4 files read, 20000 rows written)".to_string()
        ]]
    );

    // CSV, plain and gzip, with options; a projection and filter run on
    // the workers while loading.
    write_files(dir, "plain-", 2, 3_000, "FORMAT csv, HEADER true");
    write_files(
        dir,
        "packed-",
        2,
        2_000,
        "FORMAT csv, HEADER true, COMPRESSION gzip",
    );
    for f in 0..2 {
        std::fs::rename(
            dir.join(format!("packed-{f}")),
            dir.join(format!("packed-{f}.csv.gz")),
        )
        .unwrap();
        std::fs::rename(
            dir.join(format!("plain-{f}")),
            dir.join(format!("plain-{f}.csv")),
        )
        .unwrap();
    }
    let csv = format!(
        "read_csv(['{0}/plain-*.csv', '{0}/packed-*.csv.gz'], header = true)",
        dir.display()
    );
    let loaded = cl
        .update(&format!("CREATE TABLE cs AS SELECT * FROM {csv}"))
        .await
        .unwrap();
    assert_eq!(loaded, 10_000);
    assert_eq!(
        one_text(&cl.query(&summary_sql("cs")).await.unwrap()),
        duckdb_summary(&csv)
    );
    let loaded = cl
        .update(&format!(
            "CREATE TABLE cs_some AS SELECT id, upper(name) AS name FROM {csv} WHERE id % 2 = 0"
        ))
        .await
        .unwrap();
    assert_eq!(loaded, 5_000);
    assert_eq!(
        one_text(
            &cl.query("SELECT count(*), sum(id), max(name) FROM cs_some")
                .await
                .unwrap()
        ),
        duckdb_row(&format!(
            "SELECT count(*), sum(id), max(upper(name)) FROM {csv} WHERE id % 2 = 0"
        ))
    );

    // INSERT ... SELECT from files appends (ids below 10 are in both the
    // plain and the gzip files).
    let added = cl
        .update(&format!("INSERT INTO cs SELECT * FROM {csv} WHERE id < 10"))
        .await
        .unwrap();
    assert_eq!(added, 20);
    assert_eq!(
        one_text(&cl.query("SELECT count(*) FROM cs").await.unwrap()),
        ["10020"]
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failed_loads_leave_no_table() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();

    // No file matches.
    let err = cl
        .update(&format!(
            "CREATE TABLE missing AS SELECT * FROM read_parquet('{}/nothing-*.parquet')",
            dir.display()
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    assert!(err.message().contains("nothing-*.parquet"), "{err}");
    assert_eq!(table_count(&mut cl, "missing").await, 0);

    // A CSV file with a malformed row far past the sniffer's sample: the
    // other files load, this one fails mid-way, and the table goes away.
    std::fs::write(dir.join("good.csv"), "x,y\n1,a\n2,b\n").unwrap();
    let mut bad = String::from("x,y\n");
    for i in 0..30_000 {
        bad.push_str(&format!("{i},v{i}\n"));
    }
    bad.push_str("4,d,e\n5,f\n");
    std::fs::write(dir.join("bad.csv"), bad).unwrap();
    let err = cl
        .update(&format!(
            "CREATE TABLE broken AS SELECT * FROM read_csv('{}/*.csv')",
            dir.display()
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(
        err.message().contains("Expected Number of Columns"),
        "{err}"
    );
    assert_eq!(table_count(&mut cl, "broken").await, 0);
    let failed = texts(
        &cl.query("SELECT state FROM system.queries WHERE sql LIKE 'CREATE TABLE broken%'")
            .await
            .unwrap(),
    );
    assert_eq!(failed, [vec!["failed".to_string()]]);

    // Options must be constants: nothing reaches the workers' DuckDB.
    let err = cl
        .update(&format!(
            "CREATE TABLE sneaky AS SELECT * FROM read_csv('{}/good.csv', \
             delim = (SELECT 'x'))",
            dir.display()
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(table_count(&mut cl, "sneaky").await, 0);
    c.stop().await;
}
