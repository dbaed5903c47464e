//! Replicated tables: placement on distinct workers, reads that fail over to
//! another replica when a worker is gone, and no partial answers when a
//! shard has no live replica.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;

use common::*;
use tonic::Code;

const ROWS: i64 = 600;

async fn fill(cl: &mut Client, table: &str) {
    let values: Vec<String> = (1..=ROWS).map(|i| format!("({i}, {})", i * 10)).collect();
    let n = cl
        .update(&format!("INSERT INTO {table} VALUES {}", values.join(", ")))
        .await
        .unwrap();
    assert_eq!(n, ROWS);
}

fn one_row(batches: &[arrow::array::RecordBatch]) -> String {
    pretty(batches)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_fail_over_and_never_answer_partially() {
    // Merged at the coordinator: every shard is read by ShardGatherExec.
    let mut c = TestCluster::start_with(3, false).await;
    let mut cl = c.client().await;

    let err = cl
        .update("CREATE TABLE r4 (k BIGINT) WITH (distribution = 'hash(k)', replicas = 4)")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert!(err.message().contains("replicas = 4"), "{err}");

    cl.update(
        "CREATE TABLE r2 (k BIGINT, v BIGINT) \
         WITH (distribution = 'hash(k)', shards = 6, replicas = 2)",
    )
    .await
    .unwrap();
    cl.update("CREATE TABLE r1 (k BIGINT, v BIGINT) WITH (distribution = 'hash(k)', shards = 6)")
        .await
        .unwrap();
    fill(&mut cl, "r2").await;
    fill(&mut cl, "r1").await;

    // Every shard of r2 on two distinct workers.
    let meta = c.cluster.engine().catalog.table("r2").unwrap();
    assert_eq!(meta.replicas, 2);
    for (shard, workers) in meta.placement.iter().enumerate() {
        let distinct: HashSet<&String> = workers.iter().collect();
        assert_eq!(distinct.len(), 2, "shard {shard}: {workers:?}");
    }

    let total = "SELECT count(*) AS n, sum(v) AS s, count(DISTINCT k) AS d FROM r2";
    let expected = one_row(&cl.query(total).await.unwrap());
    assert!(expected.contains("| 600 | 1803000 | 600 |"), "{expected}");

    // Direct endpoints list every replica's location.
    let direct = TestCluster::start_with(2, true).await;
    let mut dcl = direct.client().await;
    dcl.update("CREATE TABLE d2 (k BIGINT) WITH (distribution = 'hash(k)', replicas = 2)")
        .await
        .unwrap();
    let info = dcl.info("SELECT k FROM d2").await.unwrap();
    assert!(!info.endpoint.is_empty());
    for ep in &info.endpoint {
        assert_eq!(ep.location.len(), 2, "{ep:?}");
    }
    direct.stop().await;

    // A worker goes away: r2 still answers completely from the replicas.
    let gone = c.cluster.workers.remove(1);
    let gone_url = gone.url();
    gone.shutdown().await;
    for _ in 0..3 {
        let got = one_row(&cl.query(total).await.unwrap());
        assert_eq!(got, expected);
    }
    let rows = cl.query("SELECT k, v FROM r2").await.unwrap();
    assert_eq!(rows_of(&rows), ROWS as usize);

    // r1 has shards only on the missing worker: UNAVAILABLE naming the shard
    // and the worker, never a partial count.
    let err = cl
        .query("SELECT count(*) FROM r1")
        .await
        .expect_err("a shard without a live replica must fail the query");
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    assert!(err.message().contains("shard"), "{err}");
    let gone_addr = gone_url.trim_start_matches("grpc://");
    assert!(err.message().contains(gone_addr), "{err}");

    // Writes need every replica.
    let err = cl
        .update("INSERT INTO r2 VALUES (1000, 1)")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable, "{err}");
    let got = one_row(&cl.query(total).await.unwrap());
    assert_eq!(got, expected, "a failed write must not change the table");

    c.stop().await;
}

fn rows_of(batches: &[arrow::array::RecordBatch]) -> usize {
    rows(batches)
}
