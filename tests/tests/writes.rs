//! The write path through the Rust Flight SQL client against real local
//! clusters: what the server cannot honour (transactions) is refused rather
//! than ignored, a statement that fails leaves nothing of itself behind, and
//! a replace that fails keeps the old table.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arrow::array::{AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::sql::{
    CommandStatementIngest, DoPutUpdateResult, ProstMessageExt, TableDefinitionOptions,
    TableExistsOption, TableNotExistOption,
};
use arrow_flight::{FlightClient, FlightDescriptor};
use bytes::Bytes;
use common::{Client, TestCluster, channel, to_status};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::Code;

async fn count(cl: &mut Client, table: &str) -> i64 {
    let batches = cl
        .query(&format!("SELECT count(*) FROM {table}"))
        .await
        .unwrap();
    batches[0].column(0).as_primitive::<Int64Type>().value(0)
}

/// `(k, s)` rows `from..to`, `s` the decimal text of `k` except for `bad`.
fn rows(from: i64, to: i64, bad: Option<i64>) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("k", DataType::Int64, true),
        Field::new("s", DataType::Utf8, true),
    ]));
    let keys: Vec<i64> = (from..to).collect();
    let text: Vec<String> = keys
        .iter()
        .map(|k| {
            if Some(*k) == bad {
                "oops".to_string()
            } else {
                k.to_string()
            }
        })
        .collect();
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(keys)),
            Arc::new(StringArray::from(text)),
        ],
    )
    .unwrap()
}

/// One `(k, s, extra)` row: a column more than [`rows`].
fn wide_row(k: i64) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new("s", DataType::Utf8, true),
            Field::new("extra", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(vec![k])),
            Arc::new(StringArray::from(vec![k.to_string()])),
            Arc::new(Int64Array::from(vec![k])),
        ],
    )
    .unwrap()
}

fn ingest_cmd(table: &str, if_exists: TableExistsOption) -> CommandStatementIngest {
    CommandStatementIngest {
        table: table.to_string(),
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Create as i32,
            if_exists: if_exists as i32,
        }),
        ..CommandStatementIngest::default()
    }
}

async fn ingest(
    cl: &mut Client,
    cmd: CommandStatementIngest,
    batches: Vec<RecordBatch>,
) -> Result<i64, tonic::Status> {
    cl.sql
        .execute_ingest(cmd, futures::stream::iter(batches.into_iter().map(Ok)))
        .await
        .map_err(to_status)
}

/// An ingest whose upload changes schema after the batches of `first`
/// (each part is encoded with its own schema message, as a client whose
/// data changes shape sends it).
async fn ingest_reshaped(
    url: &str,
    cmd: CommandStatementIngest,
    first: Vec<RecordBatch>,
    then: Vec<RecordBatch>,
) -> Result<i64, tonic::Status> {
    let descriptor = FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec());
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .build(futures::stream::iter(first.into_iter().map(Ok)))
        .chain(
            FlightDataEncoderBuilder::new().build(futures::stream::iter(then.into_iter().map(Ok))),
        );
    let mut client = FlightClient::new(channel(url).await);
    let results: Vec<_> = client
        .do_put(data)
        .await
        .map_err(to_status)?
        .try_collect()
        .await
        .map_err(to_status)?;
    let result = DoPutUpdateResult::decode(results[0].app_metadata.clone()).unwrap();
    Ok(result.record_count)
}

fn assert_unimplemented(what: &str, err: &tonic::Status) {
    assert_eq!(err.code(), Code::Unimplemented, "{what}: {err}");
    assert!(
        err.message().contains("transactions are not supported"),
        "{what}: {err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn transactions_are_refused_not_ignored() {
    let cluster = TestCluster::start(1).await;
    let mut cl = cluster.client().await;
    cl.update("CREATE TABLE t (x BIGINT)").await.unwrap();

    // ListActions offers no transaction or savepoint actions...
    let mut flight =
        arrow_flight::flight_service_client::FlightServiceClient::new(channel(&cl.url).await);
    let actions: Vec<String> = flight
        .list_actions(arrow_flight::Empty {})
        .await
        .unwrap()
        .into_inner()
        .map_ok(|a| a.r#type)
        .try_collect()
        .await
        .unwrap();
    assert!(
        actions.iter().any(|a| a == "CreatePreparedStatement"),
        "{actions:?}"
    );
    for unoffered in [
        "BeginTransaction",
        "EndTransaction",
        "BeginSavepoint",
        "EndSavepoint",
    ] {
        assert!(
            !actions.iter().any(|a| a == unoffered),
            "{unoffered} is advertised: {actions:?}"
        );
    }
    // ...and refuses them with a message saying so.
    let err = to_status(cl.sql.begin_transaction().await.unwrap_err());
    assert_unimplemented("BeginTransaction", &err);

    // A statement naming a transaction is refused, not run outside it.
    let txn = Bytes::from_static(b"a-transaction-id");
    let err = cl
        .sql
        .execute_update("INSERT INTO t VALUES (1)".into(), Some(txn.clone()))
        .await
        .unwrap_err();
    assert_unimplemented("update in a transaction", &to_status(err));
    let err = cl
        .sql
        .execute("SELECT * FROM t".into(), Some(txn.clone()))
        .await
        .unwrap_err();
    assert_unimplemented("query in a transaction", &to_status(err));
    let err = cl
        .sql
        .prepare("INSERT INTO t VALUES (2)".into(), Some(txn.clone()))
        .await
        .unwrap_err();
    assert_unimplemented("prepare in a transaction", &to_status(err));
    let mut cmd = ingest_cmd("t", TableExistsOption::Append);
    cmd.transaction_id = Some(txn);
    let x = RecordBatch::try_new(
        Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)])),
        vec![Arc::new(Int64Array::from(vec![3]))],
    )
    .unwrap();
    let err = ingest(&mut cl, cmd, vec![x]).await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");

    // SQL transaction control likewise.
    for sql in [
        "BEGIN",
        "START TRANSACTION",
        "COMMIT",
        "ROLLBACK",
        "SAVEPOINT s1",
        "RELEASE SAVEPOINT s1",
    ] {
        let err = cl.update(sql).await.unwrap_err();
        assert_unimplemented(sql, &err);
    }
    assert_eq!(count(&mut cl, "t").await, 0);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_write_leaves_nothing() {
    let cluster = TestCluster::start(3).await;
    let mut cl = cluster.client().await;
    // 20,000 rows over three shards, one of which cannot be read as an
    // integer.
    let src = vec![rows(0, 10_000, None), rows(10_000, 20_000, Some(17_777))];
    let cmd = ingest_cmd("src", TableExistsOption::Fail);
    assert_eq!(ingest(&mut cl, cmd, src).await.unwrap(), 20_000);

    // INSERT ... SELECT failing on one row: none of its rows land, on any
    // shard.
    cl.update("CREATE TABLE dst (k BIGINT, v INTEGER) WITH (distribution = 'hash(k)')")
        .await
        .unwrap();
    cl.update("INSERT INTO dst VALUES (-1, -1)").await.unwrap();
    let err = cl
        .update("INSERT INTO dst SELECT k, CAST(s AS INTEGER) FROM src")
        .await
        .unwrap_err();
    assert!(err.message().contains("oops"), "{err}");
    assert_eq!(count(&mut cl, "dst").await, 1);

    // CREATE TABLE AS failing likewise: no table.
    let err = cl
        .update("CREATE TABLE dst2 AS SELECT k, CAST(s AS INTEGER) AS v FROM src")
        .await
        .unwrap_err();
    assert!(err.message().contains("oops"), "{err}");
    let err = cl.query("SELECT * FROM dst2").await.unwrap_err();
    assert!(err.message().contains("dst2"), "{err}");

    // An ingest creating its table, failing on its second batch (a column
    // more than the first): no table.
    let wide = wide_row(1);
    let cmd = ingest_cmd("fresh", TableExistsOption::Fail);
    let err = ingest_reshaped(&cl.url, cmd, vec![rows(0, 5000, None)], vec![wide])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    let err = cl.query("SELECT * FROM fresh").await.unwrap_err();
    assert!(err.message().contains("fresh"), "{err}");

    // The cluster still takes writes to all of them.
    cl.update("INSERT INTO dst SELECT k, CAST(k AS INTEGER) FROM src WHERE k < 100")
        .await
        .unwrap();
    assert_eq!(count(&mut cl, "dst").await, 101);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failing_replace_keeps_the_old_table() {
    let cluster = TestCluster::start(2).await;
    let mut cl = cluster.client().await;
    let cmd = ingest_cmd("src", TableExistsOption::Fail);
    let src = vec![rows(0, 3000, Some(2999))];
    assert_eq!(ingest(&mut cl, cmd, src).await.unwrap(), 3000);
    cl.update("CREATE TABLE r (k BIGINT, s VARCHAR) WITH (distribution = 'hash(k)')")
        .await
        .unwrap();
    cl.update("INSERT INTO r VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await
        .unwrap();

    // CREATE OR REPLACE TABLE ... AS a query that fails: r as it was.
    let err = cl
        .update("CREATE OR REPLACE TABLE r AS SELECT k, CAST(s AS INTEGER) AS s FROM src")
        .await
        .unwrap_err();
    assert!(err.message().contains("oops"), "{err}");
    assert_eq!(count(&mut cl, "r").await, 3);

    // Ingest in replace mode whose upload fails: r as it was.
    let wide = wide_row(9);
    let cmd = ingest_cmd("r", TableExistsOption::Replace);
    let err = ingest_reshaped(&cl.url, cmd, vec![rows(100, 200, None)], vec![wide])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err}");
    assert_eq!(count(&mut cl, "r").await, 3);
    let kept = cl.query("SELECT s FROM r ORDER BY k").await.unwrap();
    let kept: Vec<&str> = kept[0]
        .column(0)
        .as_string::<i32>()
        .iter()
        .flatten()
        .collect();
    assert_eq!(kept, ["a", "b", "c"]);

    // Replaces that succeed swap the whole table.
    let replaced = cl
        .update("CREATE OR REPLACE TABLE r AS SELECT k, s FROM src WHERE k < 10")
        .await
        .unwrap();
    assert_eq!(replaced, 10);
    assert_eq!(count(&mut cl, "r").await, 10);
    let cmd = ingest_cmd("r", TableExistsOption::Replace);
    assert_eq!(
        ingest(&mut cl, cmd, vec![rows(0, 5, None)]).await.unwrap(),
        5
    );
    assert_eq!(count(&mut cl, "r").await, 5);
    cl.update("INSERT INTO r VALUES (7, 'x')").await.unwrap();
    assert_eq!(count(&mut cl, "r").await, 6);
    cluster.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn truncate_empties_every_shard_and_replica() {
    let cluster = TestCluster::start(3).await;
    let mut cl = cluster.client().await;
    cl.update("CREATE TABLE t (k BIGINT, s VARCHAR) WITH (distribution = 'hash(k)', replicas = 2)")
        .await
        .unwrap();
    let cmd = ingest_cmd("t", TableExistsOption::Append);
    assert_eq!(
        ingest(&mut cl, cmd, vec![rows(0, 1000, None)])
            .await
            .unwrap(),
        1000
    );
    let shards_of = |batches: &[RecordBatch]| -> Vec<i64> {
        batches
            .iter()
            .flat_map(|b| b.column(0).as_primitive::<Int64Type>().values().to_vec())
            .collect()
    };
    let before = cl
        .query("SELECT count(*) FROM system.shards WHERE \"table\" = 't'")
        .await
        .unwrap();

    // TRUNCATE reports the rows it deleted, like DuckDB.
    assert_eq!(cl.update("TRUNCATE t").await.unwrap(), 1000);
    assert_eq!(count(&mut cl, "t").await, 0);
    // Every shard is empty, the placement unchanged.
    let after = cl
        .query("SELECT rows FROM system.shards WHERE \"table\" = 't'")
        .await
        .unwrap();
    assert_eq!(shards_of(&after).len() as i64, shards_of(&before)[0]);
    assert!(shards_of(&after).iter().all(|r| *r == 0), "{after:?}");

    // The table takes writes again; DELETE without WHERE is TRUNCATE.
    cl.update("INSERT INTO t VALUES (1, 'a'), (2, 'b'), (3, 'c')")
        .await
        .unwrap();
    assert_eq!(count(&mut cl, "t").await, 3);
    assert_eq!(cl.update("DELETE FROM t").await.unwrap(), 3);
    assert_eq!(count(&mut cl, "t").await, 0);
    assert_eq!(cl.update("TRUNCATE TABLE t").await.unwrap(), 0);

    // What is not supported yet is refused, and changes nothing.
    cl.update("INSERT INTO t VALUES (1, 'a')").await.unwrap();
    let err = cl.update("DELETE FROM t WHERE k = 1").await.unwrap_err();
    assert_eq!(err.code(), Code::Unimplemented, "{err}");
    assert_eq!(count(&mut cl, "t").await, 1);
    let err = cl.update("TRUNCATE missing").await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err}");
    cluster.stop().await;
}
