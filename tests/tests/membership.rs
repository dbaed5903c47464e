//! A local cluster's membership seen through SQL: the system tables, a
//! worker joining (used by tables created afterwards) and shard moves onto
//! it with queries running, rows counted before and after.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use arrow::datatypes::Int64Type;
use common::*;
use flight_worker::membership;
use flight_worker::registry::DEFAULT_TTL;
use tonic::Code;

fn column_strings(batches: &[RecordBatch], col: usize) -> Vec<String> {
    let mut out = Vec::new();
    for b in batches {
        let c = arrow::compute::cast(b.column(col), &arrow::datatypes::DataType::Utf8).unwrap();
        for v in c.as_string::<i32>().iter() {
            out.push(v.unwrap_or("NULL").to_string());
        }
    }
    out
}

fn one_i64(batches: &[RecordBatch]) -> i64 {
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn system_tables_describe_the_cluster() {
    let c = TestCluster::start_with(2, false).await;
    let mut cl = c.client().await;
    cl.update("CREATE TABLE st (k BIGINT, v VARCHAR) WITH (distribution = 'hash(k)', shards = 3, replicas = 2)")
        .await
        .unwrap();
    let values: Vec<String> = (0..300).map(|i| format!("({i}, 'x')")).collect();
    cl.update(&format!("INSERT INTO st VALUES {}", values.join(",")))
        .await
        .unwrap();
    cl.update("CREATE TABLE sr (k BIGINT) WITH (distribution = 'reference')")
        .await
        .unwrap();
    cl.update("INSERT INTO sr VALUES (1), (2)").await.unwrap();

    let w = cl
        .query("SELECT id, address, state, shards, version FROM system.workers ORDER BY id")
        .await
        .unwrap();
    let mut ids: Vec<String> = c
        .cluster
        .workers
        .iter()
        .map(|w| w.id().to_string())
        .collect();
    ids.sort();
    assert_eq!(column_strings(&w, 0), ids);
    assert_eq!(column_strings(&w, 2), ["live", "live"]);
    for (i, addr) in column_strings(&w, 1).iter().enumerate() {
        let worker = c.cluster.workers.iter().find(|w| w.id() == ids[i]).unwrap();
        assert_eq!(addr, &worker.url());
    }
    assert_eq!(column_strings(&w, 4)[0], env!("CARGO_PKG_VERSION"));

    let t = cl
        .query("SELECT name, distribution, shards, replicas, rows FROM system.tables ORDER BY name")
        .await
        .unwrap();
    assert_eq!(column_strings(&t, 0), ["sr", "st"]);
    assert_eq!(column_strings(&t, 1), ["reference", "hash(k)"]);
    assert_eq!(column_strings(&t, 2), ["1", "3"]);
    assert_eq!(column_strings(&t, 3), ["1", "2"]);
    assert_eq!(column_strings(&t, 4), ["2", "300"]);

    let s = cl
        .query("SELECT sum(rows), count(*), min(live_replicas) FROM system.shards WHERE \"table\" = 'st'")
        .await
        .unwrap();
    assert_eq!(
        pretty(&s)
            .lines()
            .nth(3)
            .unwrap()
            .split('|')
            .map(str::trim)
            .collect::<Vec<_>>()[1..4],
        ["300", "3", "2"]
    );

    // The statements run so far, newest first.
    let _ = cl.query("SELECT * FROM no_such_table").await.unwrap_err();
    cl.query("SELECT count(*) AS n FROM st").await.unwrap();
    let q = cl
        .query(
            "SELECT sql, state, rows, error, endpoints, duration_ms >= 0 FROM system.queries \
             WHERE sql NOT LIKE '%system.queries%'",
        )
        .await
        .unwrap();
    let sql = column_strings(&q, 0);
    let state = column_strings(&q, 1);
    let rows_col = column_strings(&q, 2);
    assert_eq!(sql[0], "SELECT count(*) AS n FROM st");
    assert_eq!((state[0].as_str(), rows_col[0].as_str()), ("finished", "1"));
    assert_eq!(column_strings(&q, 4)[0], "coordinator");
    assert_eq!(column_strings(&q, 5)[0], "true");
    assert_eq!(sql[1], "SELECT * FROM no_such_table");
    assert_eq!(state[1], "failed");
    assert!(
        column_strings(&q, 3)[1].contains("NotFound"),
        "{:?}",
        column_strings(&q, 3)
    );
    let insert = sql
        .iter()
        .position(|s| s.starts_with("INSERT INTO st"))
        .unwrap();
    assert_eq!(
        (state[insert].as_str(), rows_col[insert].as_str()),
        ("finished", "300")
    );

    // The system tables are listed with the others.
    let info = cl
        .sql
        .get_tables(arrow_flight::sql::CommandGetTables {
            catalog: None,
            db_schema_filter_pattern: Some("system".into()),
            table_name_filter_pattern: None,
            table_types: vec![],
            include_schema: false,
        })
        .await
        .unwrap();
    let listed = cl.read_info(&info).await.unwrap();
    assert_eq!(
        column_strings(&listed, 2),
        ["queries", "shards", "tables", "workers"]
    );

    // A worker that leaves is shown as gone.
    let mut c = c;
    let gone = c.cluster.workers.remove(0);
    let gone_id = gone.id().to_string();
    gone.shutdown().await;
    let w = cl
        .query(&format!(
            "SELECT state FROM system.workers WHERE id = '{gone_id}'"
        ))
        .await
        .unwrap();
    assert_eq!(column_strings(&w, 0), ["gone"]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_joining_worker_gets_new_tables_and_shards_moved_onto_it() {
    let c = TestCluster::start_with(2, true).await;
    let mut cl = c.client().await;
    cl.update("CREATE TABLE m (k BIGINT, v BIGINT) WITH (distribution = 'hash(k)', shards = 4)")
        .await
        .unwrap();
    let values: Vec<String> = (0..2000).map(|i| format!("({i}, {})", i * 3)).collect();
    cl.update(&format!("INSERT INTO m VALUES {}", values.join(",")))
        .await
        .unwrap();
    let check = "SELECT count(*) AS n, sum(v) AS s FROM m";
    let expected = pretty(&cl.query(check).await.unwrap());
    assert!(expected.contains("| 2000 | 5997000 |"), "{expected}");

    // A third worker joins the cluster's registry.
    let secret = std::fs::read(c.dir.path().join("coordinator").join("secret")).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = flight_worker::WorkerConfig::new(c.dir.path().join("worker-new"), secret);
    config.threads = Some(1);
    let joined = flight_worker::start(config, listener).await.unwrap();
    let new_id = joined.id().to_string();
    let member = membership::join(&c.cluster.registry, &joined, joined.url(), DEFAULT_TTL, 1)
        .await
        .unwrap();
    let start = Instant::now();
    while c.cluster.engine().catalog.workers().len() < 3 {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "the worker did not join"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Tables created from now on use it.
    cl.update("CREATE TABLE later (k BIGINT) WITH (distribution = 'hash(k)')")
        .await
        .unwrap();
    let later = c.cluster.engine().catalog.table("later").unwrap();
    assert_eq!(later.shard_count, 3);
    assert!(later.placement.iter().any(|w| w.contains(&new_id)));

    // Move two shards of m onto it while clients keep querying.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..4)
        .map(|_| {
            let (url, stop, expected) = (c.cluster.url(), Arc::clone(&stop), expected.clone());
            tokio::spawn(async move {
                let mut cl = Client::connect(&url).await;
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let got = pretty(&cl.query(check).await.unwrap());
                    assert_eq!(got, expected, "a query during the move");
                    let rows = cl.query("SELECT k, v FROM m").await.unwrap();
                    assert_eq!(rows_count(&rows), 2000, "a direct read during the move");
                    n += 1;
                }
                n
            })
        })
        .collect();
    let meta = c.cluster.engine().catalog.table("m").unwrap();
    for shard in [0u32, 1] {
        let from = meta.placement[shard as usize][0].clone();
        let before = one_i64(
            &cl.query(&format!(
                "SELECT rows FROM system.shards WHERE \"table\" = 'm' AND shard = {shard}"
            ))
            .await
            .unwrap(),
        );
        let moved = cl
            .update(&format!(
                "ALTER TABLE m MOVE SHARD {shard} FROM '{from}' TO '{new_id}'"
            ))
            .await
            .unwrap();
        assert_eq!(moved, before, "rows moved");
        let after = cl
            .query(&format!(
                "SELECT workers, rows FROM system.shards WHERE \"table\" = 'm' AND shard = {shard}"
            ))
            .await
            .unwrap();
        assert_eq!(column_strings(&after, 0), std::slice::from_ref(&new_id));
        assert_eq!(column_strings(&after, 1), [before.to_string()]);
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        assert!(r.await.unwrap() > 0);
    }
    assert_eq!(pretty(&cl.query(check).await.unwrap()), expected);
    // Writes after the move land on the new placement.
    cl.update("INSERT INTO m VALUES (5000, 1)").await.unwrap();
    let n = pretty(&cl.query("SELECT count(*) AS n FROM m").await.unwrap());
    assert!(n.contains("| 2001 |"), "{n}");

    // Refused moves say why.
    let err = cl
        .update(&format!(
            "ALTER TABLE m MOVE SHARD 0 FROM '{new_id}' TO '{new_id}'"
        ))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = cl
        .update("ALTER TABLE m MOVE SHARD 9 FROM 'a' TO 'b'")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = cl
        .update("ALTER TABLE nope MOVE SHARD 0 FROM 'a' TO 'b'")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    let err = cl
        .update("ALTER TABLE m MOVE SHARD 0 TO 'b'")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");

    member.leave().await;
    joined.shutdown().await;
    c.stop().await;
}

fn rows_count(batches: &[RecordBatch]) -> usize {
    rows(batches)
}
