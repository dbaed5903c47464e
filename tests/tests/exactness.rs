//! Exactness on skewed shards: one shard holds 100,000 rows, another one
//! row, the rest none; plus an empty table. Every answer must equal
//! single-process DuckDB's over the same rows.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arrow::array::{ArrayRef, Decimal128Array, Float64Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Schema};
use arrow_flight::sql::CommandStatementIngest;
use arrow_flight::sql::{TableDefinitionOptions, TableExistsOption, TableNotExistOption};
use common::*;

const SHARDS: u32 = 4;

fn schema() -> Arc<Schema> {
    Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("g", DataType::Int64, true),
        Field::new("v", DataType::Float64, true),
        Field::new("d", DataType::Decimal128(10, 2), true),
        Field::new("s", DataType::Utf8, true),
    ]))
}

/// Two keys that land in different shards.
fn skewed_keys() -> (i64, i64) {
    let keys: ArrayRef = Arc::new(Int64Array::from_iter_values(0..100));
    let shards = fsql_proto::hash::shard_of(&keys, SHARDS).unwrap();
    let b = (1..100).find(|i| shards[*i] != shards[0]).unwrap();
    (0, b as i64)
}

fn data() -> RecordBatch {
    let (big, small) = skewed_keys();
    let n = 100_000usize;
    let mut k = vec![big; n];
    k.push(small);
    let g: Vec<Option<i64>> = (0..=n)
        .map(|i| (i % 13 != 0).then_some((i % 97) as i64))
        .collect();
    let v: Vec<Option<f64>> = (0..=n)
        .map(|i| (i % 17 != 0).then_some(i as f64 * 0.25 - 1000.0))
        .collect();
    let d: Vec<Option<i128>> = (0..=n)
        .map(|i| (i % 5 != 0).then_some((i as i128 * 37) % 100_000 - 3))
        .collect();
    let s: Vec<Option<String>> = (0..=n)
        .map(|i| (i % 11 != 0).then(|| format!("s{}", i % 1000)))
        .collect();
    RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(Int64Array::from(k)),
            Arc::new(Int64Array::from(g)),
            Arc::new(Float64Array::from(v)),
            Arc::new(
                Decimal128Array::from(d)
                    .with_precision_and_scale(10, 2)
                    .unwrap(),
            ),
            Arc::new(StringArray::from(s)),
        ],
    )
    .unwrap()
}

const QUERIES: &[(&str, bool)] = &[
    (
        "SELECT count(*), count(g), count(v), count(DISTINCT g), count(DISTINCT s) FROM skew",
        true,
    ),
    (
        "SELECT avg(v), sum(v), min(v), max(v), avg(d), sum(d), min(d), max(d) FROM skew",
        true,
    ),
    ("SELECT min(s), max(s), count(DISTINCT k) FROM skew", true),
    (
        "SELECT g, count(*), avg(v), sum(d) FROM skew GROUP BY g ORDER BY g NULLS FIRST",
        true,
    ),
    (
        "SELECT g, count(DISTINCT s) FROM skew GROUP BY g HAVING count(*) > 1000 ORDER BY g",
        true,
    ),
    (
        "SELECT k, count(*), avg(v) FROM skew GROUP BY k ORDER BY k",
        true,
    ),
    (
        "SELECT k, g, v FROM skew ORDER BY v DESC NULLS LAST, g LIMIT 7",
        true,
    ),
    (
        "SELECT k, g, v FROM skew WHERE v IS NOT NULL ORDER BY v LIMIT 5 OFFSET 3",
        true,
    ),
    (
        "SELECT s, sum(v) FROM skew WHERE g IS NULL GROUP BY s ORDER BY s NULLS LAST LIMIT 20",
        true,
    ),
    ("SELECT count(*) FROM skew WHERE k = 0", true),
    ("SELECT DISTINCT g FROM skew ORDER BY g", true),
    (
        "SELECT count(*), count(v), avg(v), sum(v), min(s), count(DISTINCT g) FROM empty_t",
        true,
    ),
    ("SELECT g, sum(v) FROM empty_t GROUP BY g", false),
    ("SELECT k, v FROM empty_t ORDER BY v LIMIT 3", true),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn skewed_shards_and_empty_tables_match_duckdb() {
    let batch = data();
    let reference = {
        let batch = batch.clone();
        tokio::task::spawn_blocking(move || {
            let conn = tests::reference::open().unwrap();
            tests::reference::load_table(&conn, "skew", &schema(), vec![batch]).unwrap();
            tests::reference::load_table(&conn, "empty_t", &schema(), vec![]).unwrap();
            QUERIES
                .iter()
                .map(|(q, _)| tests::reference::query(&conn, q).unwrap())
                .collect::<Vec<_>>()
        })
    };
    let c = TestCluster::start(3).await;
    let mut cl = c.client().await;
    for t in ["skew", "empty_t"] {
        cl.update(&format!(
            "CREATE TABLE {t} (k BIGINT NOT NULL, g BIGINT, v DOUBLE, d DECIMAL(10,2), s VARCHAR) \
             WITH (distribution = 'hash(k)', shards = {SHARDS})"
        ))
        .await
        .unwrap();
    }
    let n = cl
        .sql
        .execute_ingest(
            CommandStatementIngest {
                table_definition_options: Some(TableDefinitionOptions {
                    if_not_exist: TableNotExistOption::Fail as i32,
                    if_exists: TableExistsOption::Append as i32,
                }),
                table: "skew".into(),
                ..Default::default()
            },
            futures::stream::iter(vec![Ok(batch)]),
        )
        .await
        .unwrap();
    assert_eq!(n, 100_001);
    let expected = reference.await.unwrap();
    let mut failures = Vec::new();
    for ((q, ordered), exp) in QUERIES.iter().zip(&expected) {
        match cl.query(q).await {
            Ok(actual) => {
                if let Err(e) = tests::compare::compare_results(exp, &actual, *ordered) {
                    failures.push(format!("{q}\n{e}"));
                }
            }
            Err(e) => failures.push(format!("{q}\n{e}")),
        }
    }
    c.stop().await;
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
