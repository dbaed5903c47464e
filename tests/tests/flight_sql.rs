//! Flight SQL beyond queries: sessions, GetSchema, PollFlightInfo,
//! cancellation, and the metadata commands' exact schemas, through the
//! Rust Flight SQL client against a real local cluster.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashMap;

use arrow::array::{Array, AsArray, RecordBatch, UnionArray};
use arrow::datatypes::{DataType, Int64Type};
use arrow_flight::sql::{
    CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys, CommandGetImportedKeys,
    CommandGetPrimaryKeys, CommandGetTables, CommandStatementQuery, ProstMessageExt, SqlInfo,
};
use arrow_flight::{
    Action, CancelFlightInfoRequest, CancelFlightInfoResult, CancelStatus, FlightDescriptor,
    FlightInfo,
};
use common::{Client, TestCluster, channel, rows, to_status};
use flight_worker::session::set_options_action;
use fsql_proto::flight_session::{
    CloseSessionResult, GetSessionOptionsResult, SetSessionOptionsResult,
    session_option_value::OptionValue,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::Code;

/// Runs an action with the given cookie; returns the result bodies and the
/// `set-cookie` header.
async fn action(
    url: &str,
    action: Action,
    cookie: Option<&str>,
) -> Result<(Vec<bytes::Bytes>, Option<String>), tonic::Status> {
    let mut client =
        arrow_flight::flight_service_client::FlightServiceClient::new(channel(url).await);
    let mut request = tonic::Request::new(action);
    if let Some(c) = cookie {
        request.metadata_mut().insert("cookie", c.parse().unwrap());
    }
    let response = client.do_action(request).await?;
    let set_cookie = response
        .metadata()
        .get("set-cookie")
        .map(|v| v.to_str().unwrap().to_string());
    let bodies: Vec<_> = response
        .into_inner()
        .map_ok(|r| r.body)
        .try_collect()
        .await?;
    Ok((bodies, set_cookie))
}

fn cookie_of(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_string()
}

async fn setup(cl: &mut Client) {
    cl.update(
        "CREATE TABLE facts (k BIGINT, v BIGINT) WITH (distribution = 'hash(k)', shards = 3)",
    )
    .await
    .unwrap();
    cl.update(
        "INSERT INTO facts SELECT value AS k, value % 10 AS v FROM generate_series(1, 20000)",
    )
    .await
    .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sessions_set_get_close_and_undistributed_queries() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    setup(&mut cl).await;
    let url = c.cluster.url();

    // Unknown names and bad values are reported per option; good ones set.
    let (bodies, set_cookie) = action(
        &url,
        set_options_action(&[
            ("distributed", OptionValue::BoolValue(false)),
            ("catalog", OptionValue::StringValue("fsql".into())),
            ("schema", OptionValue::StringValue("nope".into())),
            ("colour", OptionValue::StringValue("red".into())),
        ]),
        None,
    )
    .await
    .unwrap();
    let result = SetSessionOptionsResult::decode(bodies[0].as_ref()).unwrap();
    let mut failed: Vec<_> = result.errors.keys().cloned().collect();
    failed.sort();
    assert_eq!(failed, vec!["colour", "schema"]);
    let cookie = cookie_of(&set_cookie.expect("SetSessionOptions sets the session cookie"));
    assert!(cookie.starts_with("arrow_flight_session_id="));

    let (bodies, _) = action(&url, Action::new("GetSessionOptions", ""), Some(&cookie))
        .await
        .unwrap();
    let options = GetSessionOptionsResult::decode(bodies[0].as_ref())
        .unwrap()
        .session_options;
    assert_eq!(
        options["distributed"].option_value,
        Some(OptionValue::BoolValue(false))
    );
    assert_eq!(
        options["catalog"].option_value,
        Some(OptionValue::StringValue("fsql".into()))
    );

    // distributed = false: even a plain scan is merged at the coordinator,
    // and every answer is the same as the distributed one.
    let sqls = [
        "SELECT k, v FROM facts WHERE v = 3 ORDER BY k",
        "SELECT v, count(*), sum(k) FROM facts GROUP BY v ORDER BY v",
        "SELECT count(DISTINCT v), avg(k) FROM facts",
    ];
    let mut session = c.client().await;
    session.sql.set_header("cookie", cookie.clone());
    let scan = session.info("SELECT k FROM facts").await.unwrap();
    assert_eq!(scan.endpoint.len(), 1);
    assert!(
        scan.endpoint[0].location.is_empty(),
        "merged at the coordinator"
    );
    let direct = cl.info("SELECT k FROM facts").await.unwrap();
    assert_eq!(direct.endpoint.len(), 3, "one endpoint per shard");
    for sql in sqls {
        let a = session.query(sql).await.unwrap();
        let b = cl.query(sql).await.unwrap();
        assert_eq!(common::pretty(&a), common::pretty(&b), "{sql}");
    }
    let explain = session
        .query("EXPLAIN SELECT v, count(*) FROM facts GROUP BY v")
        .await
        .unwrap();
    let text = common::pretty(&explain);
    assert!(
        !text.contains("partial"),
        "no partial aggregate undistributed:\n{text}"
    );

    // CloseSession ends it; the cookie is then unknown.
    let (bodies, _) = action(&url, Action::new("CloseSession", ""), Some(&cookie))
        .await
        .unwrap();
    assert_eq!(
        CloseSessionResult::decode(bodies[0].as_ref())
            .unwrap()
            .status,
        1
    );
    let e = session.info("SELECT 1").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound, "{e}");

    // Workers answer the session actions too (the JDBC driver sends them to
    // every location it reads from).
    let worker = direct.endpoint[0].location[0].uri.clone();
    let (_, set_cookie) = action(
        &worker,
        set_options_action(&[("catalog", OptionValue::StringValue("fsql".into()))]),
        None,
    )
    .await
    .unwrap();
    let worker_cookie = cookie_of(&set_cookie.unwrap());
    let (bodies, _) = action(
        &worker,
        Action::new("CloseSession", ""),
        Some(&worker_cookie),
    )
    .await
    .unwrap();
    assert_eq!(
        CloseSessionResult::decode(bodies[0].as_ref())
            .unwrap()
            .status,
        1
    );
    c.stop().await;
}

fn descriptor(cmd: impl ProstMessageExt) -> FlightDescriptor {
    FlightDescriptor::new_cmd(cmd.as_any().encode_to_vec())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn get_schema_and_poll_flight_info() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    setup(&mut cl).await;
    let sql = "SELECT v, count(*) AS n, CAST(sum(k) AS DOUBLE) AS s FROM facts GROUP BY v";
    let info = cl.info(sql).await.unwrap();
    let stream_schema = info.clone().try_decode_schema().unwrap();

    let mut flight = cl.sql.inner().clone();
    let cmd = CommandStatementQuery {
        query: sql.into(),
        transaction_id: None,
    };
    let result = flight
        .get_schema(descriptor(cmd))
        .await
        .unwrap()
        .into_inner();
    let schema = arrow::datatypes::Schema::try_from(&result).unwrap();
    assert_eq!(schema, stream_schema);

    // GetSchema of DDL neither fails nor runs it.
    let ddl = CommandStatementQuery {
        query: "CREATE TABLE never (a INT)".into(),
        transaction_id: None,
    };
    let result = flight
        .get_schema(descriptor(ddl))
        .await
        .unwrap()
        .into_inner();
    assert!(
        arrow::datatypes::Schema::try_from(&result)
            .unwrap()
            .fields()
            .is_empty()
    );
    let e = cl.query("SELECT * FROM never").await.unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // Metadata commands: the schema of their reply.
    let tables = CommandGetTables {
        include_schema: true,
        ..Default::default()
    };
    let result = flight
        .get_schema(descriptor(tables.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        arrow::datatypes::Schema::try_from(&result).unwrap(),
        *tables.into_builder().schema()
    );

    // PollFlightInfo completes at once with the whole FlightInfo.
    let cmd = CommandStatementQuery {
        query: sql.into(),
        transaction_id: None,
    };
    let poll = flight
        .poll_flight_info(descriptor(cmd))
        .await
        .unwrap()
        .into_inner();
    assert!(poll.flight_descriptor.is_none(), "nothing left to poll");
    assert_eq!(poll.progress, Some(1.0));
    let info = poll.info.unwrap();
    let batches = cl.read_info(&info).await.unwrap();
    assert_eq!(rows(&batches), 10);
    c.stop().await;
}

async fn cancel(url: &str, info: &FlightInfo) -> CancelStatus {
    let body = CancelFlightInfoRequest::new(info.clone()).encode_to_vec();
    let (bodies, _) = action(url, Action::new("CancelFlightInfo", body), None)
        .await
        .unwrap();
    let result = CancelFlightInfoResult::decode(bodies[0].as_ref()).unwrap();
    CancelStatus::try_from(result.status).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cancel_flight_info_reaches_coordinator_and_workers() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    setup(&mut cl).await;
    let url = c.cluster.url();

    // Direct endpoints: after the cancel every worker refuses the tickets.
    let direct = cl.info("SELECT k FROM facts").await.unwrap();
    assert!(direct.endpoint.iter().all(|e| !e.location.is_empty()));
    assert_eq!(cancel(&url, &direct).await, CancelStatus::Cancelled);
    let e = cl.read_info(&direct).await.unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e}");

    // Merged: the coordinator refuses the ticket.
    let merged = cl
        .info("SELECT v, count(*) FROM facts GROUP BY v")
        .await
        .unwrap();
    assert_eq!(cancel(&url, &merged).await, CancelStatus::Cancelled);
    let e = cl.read_info(&merged).await.unwrap_err();
    assert_eq!(e.code(), Code::Cancelled, "{e}");

    // A stream in progress ends with CANCELLED, never as a short result.
    cl.update(
        "INSERT INTO facts SELECT value AS k, value % 10 AS v FROM generate_series(20001, 400000)",
    )
    .await
    .unwrap();
    let running = cl.info("SELECT k, v FROM facts ORDER BY k").await.unwrap();
    let ticket = running.endpoint[0].ticket.clone().unwrap();
    let mut stream = cl.sql.do_get(ticket).await.unwrap();
    let first = stream.next().await.unwrap().unwrap();
    assert!(first.num_rows() > 0);
    assert_eq!(cancel(&url, &running).await, CancelStatus::Cancelled);
    let mut read = first.num_rows();
    let mut outcome = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(b) => read += b.num_rows(),
            Err(e) => {
                outcome = Some(to_status(e));
                break;
            }
        }
    }
    let status = outcome.expect("a cancelled stream ends with an error");
    assert_eq!(status.code(), Code::Cancelled, "{status}");
    assert!(
        read < 400_000,
        "the whole result arrived despite the cancel"
    );

    // Metadata tickets are not cancellable; other queries still run.
    let tables = cl
        .sql
        .get_tables(CommandGetTables::default())
        .await
        .unwrap();
    assert_eq!(cancel(&url, &tables).await, CancelStatus::NotCancellable);
    let b = cl.query("SELECT count(*) FROM facts").await.unwrap();
    assert_eq!(b[0].column(0).as_primitive::<Int64Type>().value(0), 400_000);
    c.stop().await;
}

/// The values of a string column.
fn strings(batches: &[RecordBatch], column: usize) -> Vec<String> {
    batches
        .iter()
        .flat_map(|b| {
            b.column(column)
                .as_string::<i32>()
                .iter()
                .map(|s| s.unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The SqlInfo values by id, as (union type id, value as text).
fn sql_info_values(batch: &RecordBatch) -> HashMap<u32, (i8, String)> {
    let ids = batch
        .column(0)
        .as_primitive::<arrow::datatypes::UInt32Type>();
    let values = batch
        .column(1)
        .as_any()
        .downcast_ref::<UnionArray>()
        .unwrap();
    let mut out = HashMap::new();
    for i in 0..batch.num_rows() {
        let value = values.value(i);
        let text = arrow::util::display::array_value_to_string(&value, 0).unwrap();
        out.insert(ids.value(i), (values.type_id(i), text));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn metadata_schemas_and_values_follow_the_spec() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    for t in ["orders", "order_items", "ordinal", "ord_x"] {
        cl.update(&format!(
            "CREATE TABLE {t} (id BIGINT, amount DECIMAL(12, 2), note VARCHAR)"
        ))
        .await
        .unwrap();
    }

    // SqlInfo: every id the drivers read, with the spec's union member
    // (0 string, 1 bool, 2 bigint, 3 int32 bitmask, 4 string list, 5 map).
    let info = cl.sql.get_sql_info(vec![]).await.unwrap();
    let values = sql_info_values(
        &arrow::compute::concat_batches(
            &info.clone().try_decode_schema().unwrap().into(),
            &cl.read_info(&info).await.unwrap(),
        )
        .unwrap(),
    );
    let member = |id: SqlInfo| values.get(&(id as u32)).map(|(t, _)| *t);
    assert_eq!(member(SqlInfo::FlightSqlServerName), Some(0));
    assert_eq!(member(SqlInfo::FlightSqlServerReadOnly), Some(1));
    assert_eq!(member(SqlInfo::FlightSqlServerTransaction), Some(3));
    assert_eq!(member(SqlInfo::SqlIdentifierQuoteChar), Some(0));
    assert_eq!(member(SqlInfo::SqlKeywords), Some(4));
    assert_eq!(member(SqlInfo::SqlSupportsConvert), Some(5));
    assert_eq!(member(SqlInfo::SqlMaxColumnsInTable), Some(2));
    assert_eq!(member(SqlInfo::SqlOuterJoinsSupportLevel), Some(3));
    assert_eq!(member(SqlInfo::SqlNullOrdering), Some(3));
    for id in (0..=5).chain([8, 9, 10]).chain(500..=576) {
        assert!(values.contains_key(&id), "SqlInfo {id} missing");
    }
    assert_eq!(values[&504].1, "\"");
    assert!(values[&508].1.contains("SELECT"), "{}", values[&508].1);

    // GetTables: LIKE patterns with %, _ and an escaped _.
    for (pattern, expected) in [
        ("ord%", vec!["ord_x", "order_items", "orders", "ordinal"]),
        ("order_", vec!["orders"]),
        ("ord\\_%", vec!["ord_x"]),
        ("%items", vec!["order_items"]),
        ("none%", vec![]),
    ] {
        let request = CommandGetTables {
            table_name_filter_pattern: Some(pattern.to_string()),
            ..Default::default()
        };
        let info = cl.sql.get_tables(request).await.unwrap();
        let got = strings(&cl.read_info(&info).await.unwrap(), 2);
        assert_eq!(got, expected, "pattern {pattern}");
    }
    // Schema filters: the one schema matches `pub%`, nothing matches `x%`.
    for (pattern, expected) in [("pub%", 1), ("x%", 0)] {
        let request = CommandGetDbSchemas {
            catalog: None,
            db_schema_filter_pattern: Some(pattern.into()),
        };
        let info = cl.sql.get_db_schemas(request).await.unwrap();
        assert_eq!(
            rows(&cl.read_info(&info).await.unwrap()),
            expected,
            "{pattern}"
        );
    }

    // include_schema: XDBC column metadata for JDBC's getColumns.
    let info = cl
        .sql
        .get_tables(CommandGetTables {
            table_name_filter_pattern: Some("orders".into()),
            include_schema: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let b = cl.read_info(&info).await.unwrap();
    let bytes = b[0].column(4).as_binary::<i32>().value(0);
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(bytes).unwrap();
    let amount = schema.field_with_name("amount").unwrap();
    assert_eq!(amount.data_type(), &DataType::Decimal128(12, 2));
    let md = amount.metadata();
    assert_eq!(md["ARROW:FLIGHT:SQL:TYPE_NAME"], "DECIMAL");
    assert_eq!(md["ARROW:FLIGHT:SQL:PRECISION"], "12");
    assert_eq!(md["ARROW:FLIGHT:SQL:SCALE"], "2");
    assert_eq!(md["ARROW:FLIGHT:SQL:TABLE_NAME"], "orders");
    assert_eq!(md["ARROW:FLIGHT:SQL:SCHEMA_NAME"], "public");
    assert_eq!(md["ARROW:FLIGHT:SQL:IS_AUTO_INCREMENT"], "0");
    assert_eq!(
        schema.field_with_name("note").unwrap().metadata()["ARROW:FLIGHT:SQL:TYPE_NAME"],
        "VARCHAR"
    );

    // Keys: no declared keys, the spec's schemas, empty replies.
    let pk = cl
        .sql
        .get_primary_keys(CommandGetPrimaryKeys {
            table: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let pk_schema = pk.clone().try_decode_schema().unwrap();
    let names_types: Vec<_> = pk_schema
        .fields()
        .iter()
        .map(|f| (f.name().as_str(), f.data_type().clone(), f.is_nullable()))
        .collect();
    assert_eq!(
        names_types,
        vec![
            ("catalog_name", DataType::Utf8, true),
            ("db_schema_name", DataType::Utf8, true),
            ("table_name", DataType::Utf8, false),
            ("column_name", DataType::Utf8, false),
            ("key_name", DataType::Utf8, true),
            ("key_sequence", DataType::Int32, false),
        ]
    );
    assert_eq!(rows(&cl.read_info(&pk).await.unwrap()), 0);
    let imported = cl
        .sql
        .get_imported_keys(CommandGetImportedKeys {
            table: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let exported = cl
        .sql
        .get_exported_keys(CommandGetExportedKeys {
            table: "orders".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let cross = cl
        .sql
        .get_cross_reference(CommandGetCrossReference {
            pk_table: "orders".into(),
            fk_table: "order_items".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    for info in [imported, exported, cross] {
        let schema = info.clone().try_decode_schema().unwrap();
        assert_eq!(schema.fields().len(), 13);
        assert_eq!(schema.field(12).name(), "delete_rule");
        assert_eq!(schema.field(12).data_type(), &DataType::UInt8);
        assert_eq!(rows(&cl.read_info(&info).await.unwrap()), 0);
    }

    // XdbcTypeInfo lists the types of CREATE TABLE, sorted by data type.
    let info = cl.sql.get_xdbc_type_info(Default::default()).await.unwrap();
    let b = cl.read_info(&info).await.unwrap();
    let types = strings(&b, 0);
    for t in ["BIGINT", "VARCHAR", "DECIMAL", "TIMESTAMP", "BOOLEAN"] {
        assert!(types.contains(&t.to_string()), "{t} missing from {types:?}");
    }
    let data_types = b[0].column(1).as_primitive::<arrow::datatypes::Int32Type>();
    assert!(data_types.values().windows(2).all(|w| w[0] <= w[1]));
    assert!(data_types.null_count() == 0);
    c.stop().await;
}

/// Constant queries (`SELECT 1`, the connection check of JDBC pools) are
/// planned once; every execution still gives its own, complete answer, and
/// queries whose answer changes (now(), random()) are planned each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn constant_queries_answer_every_execution() {
    let c = TestCluster::start(2).await;
    let mut cl = c.client().await;
    let text = |b: &[RecordBatch]| {
        arrow::util::pretty::pretty_format_batches(b)
            .unwrap()
            .to_string()
    };
    for sql in [
        "SELECT 1",
        "SELECT count(*), sum(x) FROM (VALUES (1), (2), (3)) AS t(x)",
        "SELECT x FROM (VALUES (3), (1), (2)) AS t(x) ORDER BY x",
    ] {
        let first = text(&cl.query(sql).await.unwrap());
        for _ in 0..3 {
            assert_eq!(text(&cl.query(sql).await.unwrap()), first, "{sql}");
        }
    }
    assert!(
        text(
            &cl.query("SELECT count(*) FROM (VALUES (1), (2), (3)) AS t(x)")
                .await
                .unwrap()
        )
        .contains("| 3 ")
    );
    for sql in ["SELECT now()", "SELECT random()"] {
        let first = text(&cl.query(sql).await.unwrap());
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        assert_ne!(text(&cl.query(sql).await.unwrap()), first, "{sql}");
    }
    c.stop().await;
}
