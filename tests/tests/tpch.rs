//! TPC-H: the 22 queries through the Flight SQL client on a 1-worker and a
//! 3-worker cluster (uneven shard counts), compared value by value with
//! single-process DuckDB over the same generated data.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use arrow::array::AsArray;
use common::*;
use flight_coordinator::tpch;

const SF: f64 = 0.01;

async fn run(workers: usize, shards: u32, layout: tpch::Layout) {
    let reference = tokio::task::spawn_blocking(|| {
        let conn = tests::reference::open().unwrap();
        tests::reference::load_tpch(&conn, SF).unwrap();
        let mut out = Vec::new();
        for n in 1..=22 {
            let sql = tpch::query(n).unwrap();
            out.push(tests::reference::query(&conn, sql).unwrap());
        }
        out
    });
    let c = TestCluster::start(workers).await;
    flight_coordinator::local::load_tpch(c.cluster.engine(), SF, shards, layout)
        .await
        .unwrap();
    let expected = reference.await.unwrap();
    let mut cl = c.client().await;
    let mut failures = Vec::new();
    for n in 1..=22 {
        let sql = tpch::query(n).unwrap();
        match cl.query(sql).await {
            Ok(actual) => {
                if let Err(e) = tests::compare::compare_results(
                    &expected[n - 1],
                    &actual,
                    tpch::query_orders_fully(n),
                ) {
                    failures.push(format!("Q{n}: {e}"));
                }
            }
            Err(e) => failures.push(format!("Q{n}: {e}")),
        }
    }
    c.stop().await;
    assert!(
        failures.is_empty(),
        "{} of 22 TPC-H queries differ on {workers} worker(s), {layout:?} layout:\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_one_worker() {
    run(1, 1, tpch::Layout::Distributed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_two_workers_star_layout() {
    run(2, 4, tpch::Layout::Star).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tpch_three_workers_uneven_shards() {
    run(3, 5, tpch::Layout::Distributed).await;
}

/// The (plan_type, plan) rows of an EXPLAIN statement.
async fn explain(cl: &mut Client, sql: &str) -> Vec<(String, String)> {
    let mut parts = Vec::new();
    for b in &cl.query(sql).await.unwrap() {
        let t = b.column(0).as_string::<i32>();
        let p = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            parts.push((t.value(i).to_string(), p.value(i).to_string()));
        }
    }
    parts
}

/// The plan rewrites made for TPC-H: correlated subqueries over
/// lineitem/orders whose outer side is a filtered reference table reduce the
/// shards' rows to that table's keys before aggregating or sending them, the
/// anti join's side arrives deduplicated, Q18's IN filters orders before
/// the joins (`reduce.rs`), and Q13 counts orders on the shards (`eager.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_tpch_plan_rewrites() {
    let c = TestCluster::start(2).await;
    flight_coordinator::local::load_tpch(c.cluster.engine(), 0.001, 2, tpch::Layout::Star)
        .await
        .unwrap();
    let mut cl = c.client().await;
    // (query, distributed table, reference table its fragment must also read)
    for (n, table, reducer) in [
        (17, "lineitem__s0", "part__ref"),
        (20, "lineitem__s0", "partsupp__ref"),
        (22, "orders__s0", "customer__ref"),
    ] {
        let parts = explain(&mut cl, &format!("EXPLAIN {}", tpch::query(n).unwrap())).await;
        let text: String = parts.iter().map(|(t, p)| format!("{t}\n{p}\n")).collect();
        // The fragment reading the distributed table, as DuckDB SQL.
        let fragment = parts
            .iter()
            .filter(|(t, _)| t.starts_with("fragment #"))
            .map(|(_, p)| p.lines().nth(1).unwrap_or_default())
            .find(|sql| sql.contains(table) && sql.contains("GROUP BY"))
            .unwrap_or_else(|| panic!("Q{n}: no aggregating fragment over {table} in {text}"));
        assert!(
            fragment.contains(reducer) && fragment.contains("SEMI JOIN"),
            "Q{n}: {fragment}"
        );
    }
    // Q13 counts each customer's orders on the shards before the outer join
    // with customer (`eager.rs`).
    let parts = explain(&mut cl, &format!("EXPLAIN {}", tpch::query(13).unwrap())).await;
    assert!(
        parts.iter().any(|(t, p)| t.starts_with("fragment #")
            && p.contains("orders__s0")
            && p.contains("count(")
            && p.contains("GROUP BY")),
        "{parts:?}"
    );
    // Q18's `o_orderkey IN (...)` filters orders before the join with
    // lineitem, not the joined rows.
    let parts = explain(&mut cl, &format!("EXPLAIN {}", tpch::query(18).unwrap())).await;
    let plan = &parts
        .iter()
        .find(|(t, _)| t.starts_with("fragment #"))
        .unwrap()
        .1;
    let line = |needle: &str| {
        plan.lines()
            .position(|l| l.contains(needle))
            .unwrap_or_else(|| panic!("no {needle} in {plan}"))
    };
    assert!(
        line("LeftSemi Join") > line("Inner Join: orders.o_orderkey = lineitem.l_orderkey"),
        "{plan}"
    );
    // Q7's five inner joins reach DuckDB as one FROM of six inputs, so its
    // optimizer can order them (it does not reorder across nested joins).
    let parts = explain(&mut cl, &format!("EXPLAIN {}", tpch::query(7).unwrap())).await;
    let fragment = parts
        .iter()
        .find(|(t, _)| t.starts_with("fragment #"))
        .and_then(|(_, p)| p.lines().nth(1))
        .unwrap();
    assert!(
        fragment.contains(") AS t5 WHERE") && !fragment.contains(" JOIN "),
        "{fragment}"
    );
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_q1_aggregates_on_the_shards() {
    let c = TestCluster::start(2).await;
    flight_coordinator::local::load_tpch(c.cluster.engine(), 0.001, 4, tpch::Layout::Star)
        .await
        .unwrap();
    let mut cl = c.client().await;
    let text: String = explain(&mut cl, &format!("EXPLAIN {}", tpch::query(1).unwrap()))
        .await
        .iter()
        .map(|(t, p)| format!("{t}\n{p}\n"))
        .collect();
    // The merge plan aggregates the shards' partial aggregates ...
    assert!(text.contains("Merged at the coordinator"), "{text}");
    assert!(
        text.contains("FragmentScan: 4 shard(s) of lineitem"),
        "{text}"
    );
    // ... and the fragment each shard runs is itself a GROUP BY.
    let fragment = text
        .split("runs on 4 shard(s)")
        .nth(1)
        .unwrap_or_else(|| panic!("no fragment in {text}"));
    assert!(fragment.contains("GROUP BY"), "{fragment}");
    assert!(fragment.contains("sum("), "{fragment}");
    assert!(fragment.contains("count("), "{fragment}");
    // AVG of a decimal: the shards sum the decimals exactly (not as DOUBLE).
    let sql = fragment.lines().nth(1).unwrap_or_default();
    assert!(!sql.contains("AS DOUBLE"), "{sql}");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_analyze_q3_shows_every_shard() {
    let c = TestCluster::start(2).await;
    flight_coordinator::local::load_tpch(c.cluster.engine(), 0.001, 3, tpch::Layout::Distributed)
        .await
        .unwrap();
    let mut cl = c.client().await;
    let b = cl
        .query(&format!("EXPLAIN ANALYZE {}", tpch::query(3).unwrap()))
        .await
        .unwrap();
    let mut parts = Vec::new();
    for b in &b {
        let t = b.column(0).as_string::<i32>();
        let p = b.column(1).as_string::<i32>();
        for i in 0..b.num_rows() {
            parts.push((t.value(i).to_string(), p.value(i).to_string()));
        }
    }
    let text: String = parts.iter().map(|(t, p)| format!("{t}\n{p}\n")).collect();
    let fragments: Vec<&String> = parts
        .iter()
        .filter(|(t, _)| t.starts_with("fragment #"))
        .map(|(_, p)| p)
        .collect();
    assert!(!fragments.is_empty(), "{text}");
    let workers: Vec<String> = c.cluster.workers.iter().map(|w| w.url()).collect();
    for f in &fragments {
        // Every shard of the fragment's table, with its rows, time and worker.
        for shard in 0..3 {
            let line = f
                .lines()
                .find(|l| l.trim_start().starts_with(&format!("shard {shard}: ")))
                .unwrap_or_else(|| panic!("shard {shard} missing in {f}"));
            assert!(
                line.contains(" rows in ") && line.contains(" ms from "),
                "{line}"
            );
            assert!(workers.iter().any(|w| line.ends_with(w.as_str())), "{line}");
        }
    }
    // The merge plan with its metrics, and the result's size.
    assert!(text.contains("output_rows="), "{text}");
    let expected = rows(&cl.query(tpch::query(3).unwrap()).await.unwrap());
    let total = &parts.last().unwrap().1;
    assert!(
        total.starts_with(&format!("{expected} rows in ")),
        "{total}"
    );
    c.stop().await;
}

/// Every worker holds the reference tables; their fragments take turns
/// among the workers instead of all landing on the first one.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reference_reads_take_turns_among_workers() {
    let c = TestCluster::start(2).await;
    flight_coordinator::local::load_tpch(c.cluster.engine(), 0.001, 2, tpch::Layout::Star)
        .await
        .unwrap();
    let mut cl = c.client().await;
    let mut used = std::collections::BTreeSet::new();
    for _ in 0..4 {
        let b = cl
            .query("EXPLAIN ANALYZE SELECT count(*) FROM nation")
            .await
            .unwrap();
        for b in &b {
            let p = b.column(1).as_string::<i32>();
            for i in 0..b.num_rows() {
                for line in p.value(i).lines() {
                    if let Some((_, url)) = line.trim().split_once(" from ") {
                        used.insert(url.to_string());
                    }
                }
            }
        }
    }
    let workers: std::collections::BTreeSet<String> =
        c.cluster.workers.iter().map(|w| w.url()).collect();
    assert_eq!(used, workers);
    c.stop().await;
}
