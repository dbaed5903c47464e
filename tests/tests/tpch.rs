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

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn explain_q1_aggregates_on_the_shards() {
    let c = TestCluster::start(2).await;
    flight_coordinator::local::load_tpch(c.cluster.engine(), 0.001, 4, tpch::Layout::Star)
        .await
        .unwrap();
    let mut cl = c.client().await;
    let b = cl
        .query(&format!("EXPLAIN {}", tpch::query(1).unwrap()))
        .await
        .unwrap();
    let text: String = b
        .iter()
        .flat_map(|b| {
            let t = b.column(0).as_string::<i32>();
            let p = b.column(1).as_string::<i32>();
            (0..b.num_rows())
                .map(|i| format!("{}\n{}\n", t.value(i), p.value(i)))
                .collect::<Vec<_>>()
        })
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
    c.stop().await;
}
