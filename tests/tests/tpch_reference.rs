//! Validates the TPC-H query texts: all 22 run in DuckDB (two independent loads agree) and in
//! DataFusion; DataFusion's answers are compared with DuckDB's and known type-driven
//! differences are listed explicitly.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::RecordBatch;
use datafusion::datasource::MemTable;
use datafusion::prelude::{SessionConfig, SessionContext};
use flight_coordinator::tpch;
use tests::compare::compare_results;
use tests::reference;

const SF: f64 = 0.01;

/// Runs all 22 queries on one DuckDB connection (with the data already loaded).
fn run_all_duckdb(conn: &reference::Connection) -> Vec<Vec<RecordBatch>> {
    (1..=22)
        .map(|n| {
            reference::query(conn, tpch::query(n).unwrap())
                .unwrap_or_else(|e| panic!("Q{n} failed in DuckDB: {e}"))
        })
        .collect()
}

async fn duckdb_answers(sf: f64) -> Vec<Vec<RecordBatch>> {
    tokio::task::spawn_blocking(move || {
        let conn = reference::open().unwrap();
        reference::load_tpch(&conn, sf).unwrap();
        run_all_duckdb(&conn)
    })
    .await
    .unwrap()
}

fn datafusion_context(sf: f64, config: SessionConfig) -> SessionContext {
    let ctx = SessionContext::new_with_config(config);
    for table in tpch::TABLES {
        let schema = tpch::schema(table).unwrap();
        let batches: Vec<RecordBatch> = tpch::generate(table, sf, 8192).unwrap().collect();
        let mem = MemTable::try_new(schema, vec![batches]).unwrap();
        ctx.register_table(table, Arc::new(mem)).unwrap();
    }
    ctx
}

fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_duckdb_two_loads_agree() {
    let (a, b) = tokio::join!(duckdb_answers(SF), duckdb_answers(SF));
    for n in 1..=22 {
        let (a, b) = (&a[n - 1], &b[n - 1]);
        assert!(rows(a) > 0, "Q{n} returned no rows in DuckDB");
        compare_results(a, b, tpch::query_orders_fully(n))
            .unwrap_or_else(|e| panic!("Q{n}: two DuckDB loads disagree:\n{e}"));
    }
}

/// Queries whose DataFusion answer may differ from DuckDB's beyond the comparator's
/// tolerance, and why. Both are result-type differences, not wrong rows: DuckDB returns
/// DOUBLE for AVG of a decimal and for decimal / decimal, DataFusion returns a decimal of
/// limited scale, truncated. Any difference outside this list fails the tests.
fn known_differences() -> BTreeMap<usize, &'static str> {
    BTreeMap::from([
        (
            1,
            "avg_qty, avg_disc: DataFusion's AVG of DECIMAL(15,2) is DECIMAL(19,6), truncated \
             to 6 places (SF 1 avg_disc 0.049985 vs DuckDB DOUBLE 0.049985295838397614, \
             relative 5.9e-6; avg_qty 25.522005 vs 25.522005853257337, 3.3e-8); avg_price \
             happens to stay within 1e-9",
        ),
        (
            8,
            "mkt_share: DataFusion's DECIMAL / DECIMAL is DECIMAL(38,8) (SF 1: 0.03443589 vs \
             DuckDB DOUBLE 0.0344358904066548, relative 1.2e-8); equal at SF 0.01",
        ),
    ])
}

fn check_differences(differences: &BTreeMap<usize, String>) {
    let known = known_differences();
    let unexpected: Vec<&usize> = differences
        .keys()
        .filter(|n| !known.contains_key(n))
        .collect();
    for n in differences.keys() {
        if let Some(why) = known.get(n) {
            println!("Q{n}: known difference: {why}");
        }
    }
    assert!(
        unexpected.is_empty(),
        "DataFusion differs from DuckDB on {unexpected:?} (see the output above)"
    );
}

async fn compare_with_datafusion(
    sf: f64,
    config: SessionConfig,
    label: &str,
) -> BTreeMap<usize, String> {
    let duck = duckdb_answers(sf).await;
    let ctx = datafusion_context(sf, config);
    let mut differences = BTreeMap::new();
    for n in 1..=22 {
        let sql = tpch::query(n).unwrap();
        let df = ctx
            .sql(sql)
            .await
            .unwrap_or_else(|e| panic!("Q{n} does not plan in DataFusion ({label}): {e}"));
        let got = df
            .collect()
            .await
            .unwrap_or_else(|e| panic!("Q{n} fails in DataFusion ({label}): {e}"));
        let expected = &duck[n - 1];
        if let Err(e) = compare_results(expected, &got, tpch::query_orders_fully(n)) {
            println!("---- Q{n}: DataFusion ({label}) differs from DuckDB:\n{e}");
            differences.insert(n, e);
        }
    }
    differences
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_datafusion_matches_duckdb() {
    let differences = compare_with_datafusion(SF, SessionConfig::new(), "default config").await;
    assert!(
        differences.contains_key(&1),
        "Q1's AVG is expected to differ by type"
    );
    check_differences(&differences);
}

/// With `datafusion.sql_parser.parse_float_as_decimal` literals such as `0.0001`, `100.00`
/// and `7.0` are decimals instead of Float64; the queries must still plan and agree.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tpch_datafusion_decimal_literals_match_duckdb() {
    let mut config = SessionConfig::new();
    config.options_mut().sql_parser.parse_float_as_decimal = true;
    let differences = compare_with_datafusion(SF, config, "parse_float_as_decimal").await;
    check_differences(&differences);
}

/// The same comparison at SF 1 (slow):
/// `cargo test -p tests --test tpch_reference tpch_sf1 -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore]
async fn tpch_sf1_datafusion_matches_duckdb() {
    let differences = compare_with_datafusion(1.0, SessionConfig::new(), "default config").await;
    check_differences(&differences);
}

/// The validation answers at SF 1 published with the TPC-H tools (as shipped in the
/// `tpchgen` crate) against DuckDB running our query texts: checks the substitution
/// parameters. Slow (SF 1 generation and load):
/// `cargo test -p tests --test tpch_reference tpch_sf1 -- --ignored`
#[test]
#[ignore]
fn tpch_sf1_matches_official_answers() {
    use arrow::util::display::array_value_to_string;
    let conn = reference::open().unwrap();
    reference::load_tpch(&conn, 1.0).unwrap();
    let mut failures = Vec::new();
    for n in 1..=22 {
        let answer = tpchgen::q_and_a::answers_sf1::answer(n as i32).unwrap();
        let mut lines = answer.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next().unwrap().split('|').collect();
        let want: Vec<Vec<String>> = lines
            .map(|l| l.split('|').map(|f| f.trim().to_string()).collect())
            .collect();
        let batches = reference::query(&conn, tpch::query(n).unwrap()).unwrap();
        let mut got: Vec<Vec<String>> = Vec::new();
        for b in &batches {
            for r in 0..b.num_rows() {
                got.push(
                    b.columns()
                        .iter()
                        .map(|c| array_value_to_string(c, r).unwrap().trim().to_string())
                        .collect(),
                );
            }
        }
        let width = batches.first().map(|b| b.num_columns()).unwrap_or(0);
        if width != header.len() || got.len() != want.len() {
            failures.push(format!(
                "Q{n}: shape {}x{width}, official {}x{}",
                got.len(),
                want.len(),
                header.len()
            ));
            continue;
        }
        'rows: for (r, (g, w)) in got.iter().zip(&want).enumerate() {
            for (c, (gv, wv)) in g.iter().zip(w).enumerate() {
                let same = match (n, c, gv.parse::<f64>(), wv.parse::<f64>()) {
                    // Quirk of the answer file: Q11's ps_partkey was printed right-aligned
                    // in 6 characters and cut to 4 ("129760" -> "1297", "9412" -> "  94").
                    (11, 0, _, _) => format!("{gv:>6}").get(..4).map(str::trim) == Some(wv),
                    // Quirk of the official answer set: Q17 is listed as 348406.02 while the
                    // exact result is 348406.0542857 (every engine, and the TPC-H spec
                    // text, give 348406.05).
                    (17, 0, Ok(x), _) if wv == "348406.02" => (x - 348406.05).abs() <= 0.005,
                    // the answers round to 2 decimal places
                    (_, _, Ok(x), Ok(y)) if wv.contains('.') => {
                        (x - y).abs() <= 0.005 + 1e-9 * y.abs()
                    }
                    _ => gv == wv,
                };
                if !same {
                    failures.push(format!(
                        "Q{n} row {r} column {c} `{}`: DuckDB {gv:?}, official {wv:?}",
                        header[c].trim()
                    ));
                    break 'rows;
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
