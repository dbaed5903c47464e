//! The cluster through the Rust Flight SQL client: DDL, DML, ingest,
//! queries (direct and merged), prepared statements, metadata and errors.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arrow::array::{Array, AsArray, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow_flight::Ticket;
use arrow_flight::sql::{CommandGetTables, CommandStatementIngest};
use arrow_flight::sql::{TableDefinitionOptions, TableExistsOption, TableNotExistOption};
use common::*;
use futures::TryStreamExt;
use tonic::Code;

fn i64s(batches: &[RecordBatch], col: usize) -> Vec<Option<i64>> {
    batches
        .iter()
        .flat_map(|b| {
            let c = arrow::compute::cast(b.column(col), &DataType::Int64).unwrap();
            c.as_primitive::<Int64Type>().iter().collect::<Vec<_>>()
        })
        .collect()
}

fn sorted(mut v: Vec<Option<i64>>) -> Vec<Option<i64>> {
    v.sort();
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ddl_dml_and_queries() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    cl.update(
        "CREATE TABLE t (a BIGINT NOT NULL, b VARCHAR, c DOUBLE) \
         WITH (distribution = 'hash(a)', shards = 4)",
    )
    .await
    .unwrap();
    let n = cl
        .update("INSERT INTO t VALUES (1, 'x', 1.5), (2, 'y', 2.5), (3, NULL, NULL), (4, 'z', 4.0)")
        .await
        .unwrap();
    assert_eq!(n, 4);

    // A plain scan comes back as one endpoint per shard, at the workers.
    let info = cl.info("SELECT a, b FROM t WHERE a > 1").await.unwrap();
    assert_eq!(info.endpoint.len(), 4);
    let worker_urls: Vec<String> = c.cluster.workers.iter().map(|w| w.url()).collect();
    for ep in &info.endpoint {
        assert_eq!(ep.location.len(), 1);
        assert!(
            worker_urls.contains(&ep.location[0].uri),
            "{:?}",
            ep.location
        );
    }
    let b = cl.read_info(&info).await.unwrap();
    assert_eq!(sorted(i64s(&b, 0)), vec![Some(2), Some(3), Some(4)]);

    // An aggregate is merged at the coordinator: one endpoint.
    let info = cl
        .info("SELECT count(*), count(b), sum(a), avg(c), min(b), max(a) FROM t")
        .await
        .unwrap();
    assert_eq!(info.endpoint.len(), 1);
    assert!(info.endpoint[0].location.is_empty());
    let b = cl.read_info(&info).await.unwrap();
    assert_eq!(i64s(&b, 0), vec![Some(4)]);
    assert_eq!(i64s(&b, 1), vec![Some(3)]);
    assert_eq!(i64s(&b, 2), vec![Some(10)]);
    let avg = b[0]
        .column(3)
        .as_primitive::<arrow::datatypes::Float64Type>()
        .value(0);
    assert!((avg - 8.0 / 3.0).abs() < 1e-12, "avg {avg}");
    assert_eq!(b[0].column(4).as_string::<i32>().value(0), "x");

    // ORDER BY ... LIMIT across shards.
    let b = cl
        .query("SELECT a FROM t ORDER BY a DESC LIMIT 2")
        .await
        .unwrap();
    assert_eq!(i64s(&b, 0), vec![Some(4), Some(3)]);

    // INSERT ... SELECT, CREATE TABLE AS, round robin and reference tables.
    cl.update("CREATE TABLE r (a BIGINT, b VARCHAR) WITH (distribution = 'reference')")
        .await
        .unwrap();
    assert_eq!(
        cl.update("INSERT INTO r SELECT a, b FROM t WHERE a <= 2")
            .await
            .unwrap(),
        2
    );
    cl.update("CREATE TABLE rr WITH (distribution = 'round_robin', shards = 3) AS SELECT a * 10 AS x FROM t")
        .await
        .unwrap();
    let b = cl.query("SELECT x FROM rr").await.unwrap();
    assert_eq!(
        sorted(i64s(&b, 0)),
        vec![Some(10), Some(20), Some(30), Some(40)]
    );
    // Join with a reference table runs on the shards.
    let b = cl
        .query("SELECT t.a, r.b FROM t JOIN r ON t.a = r.a")
        .await
        .unwrap();
    assert_eq!(sorted(i64s(&b, 0)), vec![Some(1), Some(2)]);

    // DROP removes every shard: the name is free again.
    cl.update("DROP TABLE rr").await.unwrap();
    let e = cl.query("SELECT * FROM rr").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    cl.update("DROP TABLE IF EXISTS rr").await.unwrap();
    cl.update("CREATE TABLE rr (x BIGINT)").await.unwrap();
    assert_eq!(rows(&cl.query("SELECT * FROM rr").await.unwrap()), 0);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prepared_statements_with_parameters() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    cl.update(
        "CREATE TABLE p (id BIGINT, name VARCHAR) WITH (distribution = 'hash(id)', shards = 3)",
    )
    .await
    .unwrap();

    // DML prepared: empty dataset schema, parameters bound by DoPut.
    let mut ins = cl
        .sql
        .prepare("INSERT INTO p VALUES (?, ?)".into(), None)
        .await
        .unwrap();
    assert!(ins.dataset_schema().unwrap().fields().is_empty());
    assert_eq!(ins.parameter_schema().unwrap().fields().len(), 2);
    let params = RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("a", DataType::Int32, true),
            Field::new("b", DataType::Utf8, true),
        ])),
        vec![
            Arc::new(Int32Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec!["one", "two", "three"])),
        ],
    )
    .unwrap();
    ins.set_parameters(params).unwrap();
    assert_eq!(ins.execute_update().await.unwrap(), 3);
    ins.close().await.unwrap();

    // Query prepared: dataset schema known before execution.
    let mut q = cl
        .sql
        .prepare("SELECT name FROM p WHERE id = ?".into(), None)
        .await
        .unwrap();
    assert_eq!(q.dataset_schema().unwrap().field(0).name(), "name");
    assert_eq!(
        q.parameter_schema().unwrap().field(0).data_type(),
        &DataType::Int64
    );
    for (id, name) in [(2i64, "two"), (3, "three")] {
        q.set_parameters(
            RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, true)])),
                vec![Arc::new(Int64Array::from(vec![id]))],
            )
            .unwrap(),
        )
        .unwrap();
        let info = q.execute().await.unwrap();
        let b = cl.read_info(&info).await.unwrap();
        assert_eq!(rows(&b), 1);
        let got = b.iter().find(|b| b.num_rows() > 0).unwrap();
        assert_eq!(got.column(0).as_string::<i32>().value(0), name);
    }
    q.close().await.unwrap();
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ingest_and_metadata() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, false),
        Field::new("v", DataType::Utf8, true),
    ]));
    let batch = RecordBatch::try_new(
        Arc::clone(&schema),
        vec![
            Arc::new(Int64Array::from_iter_values(0..1000)),
            Arc::new(StringArray::from_iter(
                (0..1000).map(|i| (i % 7 != 0).then(|| format!("v{i}"))),
            )),
        ],
    )
    .unwrap();
    let cmd = |exists: TableExistsOption, not_exist: TableNotExistOption| CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: not_exist as i32,
            if_exists: exists as i32,
        }),
        table: "ing".into(),
        ..Default::default()
    };
    let n = cl
        .sql
        .execute_ingest(
            cmd(TableExistsOption::Fail, TableNotExistOption::Create),
            futures::stream::iter(vec![Ok(batch.clone())]),
        )
        .await
        .unwrap();
    assert_eq!(n, 1000);
    let n = cl
        .sql
        .execute_ingest(
            cmd(TableExistsOption::Append, TableNotExistOption::Fail),
            futures::stream::iter(vec![Ok(batch.clone())]),
        )
        .await
        .unwrap();
    assert_eq!(n, 1000);
    let b = cl
        .query("SELECT count(*), count(v), count(DISTINCT k), sum(k) FROM ing")
        .await
        .unwrap();
    assert_eq!(i64s(&b, 0), vec![Some(2000)]);
    assert_eq!(i64s(&b, 1), vec![Some(2 * (1000 - 143))]);
    assert_eq!(i64s(&b, 2), vec![Some(1000)]);
    assert_eq!(i64s(&b, 3), vec![Some(2 * 499_500)]);
    // Fail mode on an existing table is refused.
    let e = cl
        .sql
        .execute_ingest(
            cmd(TableExistsOption::Fail, TableNotExistOption::Create),
            futures::stream::iter(vec![Ok(batch.clone())]),
        )
        .await
        .unwrap_err();
    assert_eq!(to_status(e).code(), Code::AlreadyExists);

    // Catalogs and tables with their schemas.
    let info = cl.sql.get_catalogs().await.unwrap();
    let b = cl.read_info(&info).await.unwrap();
    assert_eq!(b[0].column(0).as_string::<i32>().value(0), "fsql");
    let info = cl
        .sql
        .get_tables(CommandGetTables {
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let b = cl.read_info(&info).await.unwrap();
    let names: Vec<&str> = b
        .iter()
        .flat_map(|b| b.column(2).as_string::<i32>().iter().flatten())
        .collect();
    // The table, then the system tables.
    assert_eq!(names, vec!["ing", "queries", "shards", "tables", "workers"]);
    let schema_bytes = b[0].column(4).as_binary::<i32>().value(0);
    let decoded = arrow::ipc::convert::try_schema_from_ipc_buffer(schema_bytes).unwrap();
    assert_eq!(decoded.field(0).name(), "k");
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_input_is_refused_and_servers_keep_serving() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    cl.update("CREATE TABLE t (a BIGINT) WITH (distribution = 'hash(a)', shards = 2)")
        .await
        .unwrap();
    cl.update("INSERT INTO t VALUES (1), (2), (3)")
        .await
        .unwrap();

    let e = cl.query("SELEC 1").await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    assert!(e.message().contains("SQL error"), "{e}");
    let e = cl.query("SELECT * FROM no_such_table").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");
    assert!(e.message().contains("no_such_table"), "{e}");
    let e = cl
        .update("CREATE TABLE bad (a BIGINT) WITH (distribution = 'hash(zz)')")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e}");
    let e = cl.update("CREATE TABLE t (a BIGINT)").await.unwrap_err();
    assert_eq!(e.code(), Code::AlreadyExists, "{e}");

    // Garbage tickets at the coordinator.
    for garbage in [&b"garbage"[..], &[0xff; 64][..], &[][..]] {
        let r = cl.sql.do_get(Ticket::new(garbage.to_vec())).await;
        let e = match r {
            Err(e) => to_status(e),
            Ok(s) => to_status(s.try_collect::<Vec<_>>().await.unwrap_err()),
        };
        assert!(
            matches!(e.code(), Code::InvalidArgument | Code::Unauthenticated),
            "{e}"
        );
    }
    // A shard ticket altered by the client, and one signed with another
    // secret, are refused by the worker.
    let info = cl.info("SELECT a FROM t").await.unwrap();
    let ep = &info.endpoint[0];
    let mut w = Client::connect(&ep.location[0].uri).await;
    let mut forged = ep.ticket.clone().unwrap().ticket.to_vec();
    let last = forged.len() - 1;
    forged[last] ^= 0x55;
    let e = match w.sql.do_get(Ticket::new(forged)).await {
        Err(e) => to_status(e),
        Ok(s) => to_status(s.try_collect::<Vec<_>>().await.unwrap_err()),
    };
    assert!(
        matches!(e.code(), Code::Unauthenticated | Code::InvalidArgument),
        "{e}"
    );
    let mut other = fsql_proto::ShardTicket {
        version: fsql_proto::WIRE_VERSION,
        query_id: "forged".into(),
        shard: 0,
        expires_at_ms: fsql_proto::now_ms() + 60_000,
        ..Default::default()
    };
    let bytes = fsql_proto::sign::Signer::new("not the secret").sign(&mut other);
    let e = match w.sql.do_get(Ticket::new(bytes)).await {
        Err(e) => to_status(e),
        Ok(s) => to_status(s.try_collect::<Vec<_>>().await.unwrap_err()),
    };
    assert_eq!(e.code(), Code::Unauthenticated, "{e}");

    // Everyone still serves.
    let b = cl.query("SELECT a FROM t").await.unwrap();
    assert_eq!(sorted(i64s(&b, 0)), vec![Some(1), Some(2), Some(3)]);
    c.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn merged_only_mode_reads_through_the_coordinator() {
    let c = TestCluster::start_with(2, false).await;
    let mut cl = c.client().await;
    cl.update("CREATE TABLE t (a BIGINT) WITH (distribution = 'hash(a)', shards = 4)")
        .await
        .unwrap();
    cl.update("INSERT INTO t VALUES (1), (2), (3), (4), (5)")
        .await
        .unwrap();
    let info = cl.info("SELECT a FROM t").await.unwrap();
    assert_eq!(info.endpoint.len(), 1);
    assert!(info.endpoint[0].location.is_empty());
    let b = cl.read_info(&info).await.unwrap();
    assert_eq!(rows(&b), 5);
    assert!(b.iter().all(|b| b.column(0).null_count() == 0));
    c.stop().await;
}
