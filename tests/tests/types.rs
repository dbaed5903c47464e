//! Every DuckDB type round-trips: CREATE TABLE in DuckDB spelling → INSERT
//! (SQL literals, INSERT ... SELECT) and ingest (CommandStatementIngest) →
//! SELECT through the merged path and the direct worker endpoints, compared
//! value by value with single-node DuckDB running the same DDL and INSERT
//! → every type as a prepared-statement parameter. See `docs/types.md`.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, IntervalUnit, Schema, TimeUnit};
use arrow_flight::sql::{CommandStatementIngest, TableDefinitionOptions};
use arrow_flight::sql::{TableExistsOption, TableNotExistOption};
use common::{Client, TestCluster, pretty, rows};
use tests::compare::compare_results;
use tests::reference;

/// Column name, DuckDB type, and the Arrow type clients see.
fn columns() -> Vec<(&'static str, &'static str, DataType)> {
    use DataType as D;
    let utc = D::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
    vec![
        ("id", "INTEGER", D::Int32),
        ("i8", "TINYINT", D::Int8),
        ("i16", "SMALLINT", D::Int16),
        ("i32", "INTEGER", D::Int32),
        ("i64", "BIGINT", D::Int64),
        ("i128", "HUGEINT", D::Decimal128(38, 0)),
        ("u8", "UTINYINT", D::UInt8),
        ("u16", "USMALLINT", D::UInt16),
        ("u32", "UINTEGER", D::UInt32),
        ("u64", "UBIGINT", D::UInt64),
        ("f32", "FLOAT", D::Float32),
        ("f64", "DOUBLE", D::Float64),
        ("d4", "DECIMAL(4,2)", D::Decimal128(4, 2)),
        ("d18", "DECIMAL(18,6)", D::Decimal128(18, 6)),
        ("d38", "DECIMAL(38,10)", D::Decimal128(38, 10)),
        ("s", "VARCHAR", D::Utf8),
        ("b", "BLOB", D::Binary),
        ("bo", "BOOLEAN", D::Boolean),
        ("dt", "DATE", D::Date32),
        ("tm", "TIME", D::Time64(TimeUnit::Microsecond)),
        ("ts", "TIMESTAMP", D::Timestamp(TimeUnit::Microsecond, None)),
        ("ts_s", "TIMESTAMP_S", D::Timestamp(TimeUnit::Second, None)),
        (
            "ts_ms",
            "TIMESTAMP_MS",
            D::Timestamp(TimeUnit::Millisecond, None),
        ),
        (
            "ts_ns",
            "TIMESTAMP_NS",
            D::Timestamp(TimeUnit::Nanosecond, None),
        ),
        ("tz", "TIMESTAMPTZ", utc.clone()),
        ("tz2", "TIMESTAMP WITH TIME ZONE", utc),
        ("iv", "INTERVAL", D::Interval(IntervalUnit::MonthDayNano)),
        ("u", "UUID", D::Utf8),
        ("li", "INTEGER[]", D::new_list(D::Int32, true)),
        ("lv", "VARCHAR[]", D::new_list(D::Utf8, true)),
        (
            "st",
            "STRUCT(a INTEGER, b VARCHAR)",
            D::Struct(
                vec![
                    Field::new("a", D::Int32, true),
                    Field::new("b", D::Utf8, true),
                ]
                .into(),
            ),
        ),
        (
            "m",
            "MAP(VARCHAR, INTEGER)",
            flight_coordinator::types::map_type(D::Utf8, D::Int32),
        ),
    ]
}

fn ddl(table: &str) -> String {
    let cols: Vec<String> = columns()
        .iter()
        .map(|(n, t, _)| format!("{n} {t}"))
        .collect();
    format!("CREATE TABLE {table} ({})", cols.join(", "))
}

/// Rows as SQL literals that DataFusion and DuckDB read alike (decimals as
/// strings: a literal with a point is a DOUBLE in DataFusion).
const ROWS: [&str; 4] = [
    // minimums, negatives, empties, before 1970
    "(1, -128, -32768, -2147483648, -9223372036854775808, \
      -99999999999999999999999999999999999999, 0, 0, 0, 0, -3.5, -1.5e300, \
      '-99.99', '-999999999999.999999', '-9999999999999999999999999999.9999999999', \
      '', '', false, '1900-01-01', '00:00:00', '1901-12-13 20:45:52.123456', \
      '1960-01-01 00:00:01', '1969-12-31 23:59:59.999', '1969-12-31 23:59:59.123456789', \
      '1950-06-01 12:00:00+00', '1969-07-20 20:17:40.5+00', \
      INTERVAL '-1 day', '00000000-0000-0000-0000-000000000000', [], [], \
      {'a': -1, 'b': ''}, MAP {'': 0})",
    // maximums, unicode
    "(2, 127, 32767, 2147483647, 9223372036854775807, \
      99999999999999999999999999999999999999, 255, 65535, 4294967295, \
      18446744073709551615, 1.25, 1.7976931348623157e308, \
      '99.99', '999999999999.999999', '9999999999999999999999999999.9999999999', \
      'ünïcödé ✓ 日本語 🎉', 'bytes', true, '2262-04-11', '23:59:59.999999', \
      '2262-04-11 23:47:16.854775', '2262-04-11 23:47:16', '2262-04-11 23:47:16.854', \
      '2250-01-01 12:00:00.123456789', '2100-01-01 00:00:00+05:30', \
      '2000-02-29 23:59:59.999999+00', \
      INTERVAL '1 year 2 months 3 days 4 hours 5 minutes 6.789 seconds', \
      'ffffffff-ffff-ffff-ffff-ffffffffffff', [1, NULL, -2147483648], ['a', NULL, 'ü', ''], \
      {'a': 2147483647, 'b': 'ü'}, MAP {'k1': 1, 'k2': NULL})",
    // all NULL
    "(3, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
      NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, \
      NULL, NULL, NULL, NULL)",
    // ordinary values; HUGEINT beyond 64 bits
    "(4, 7, -300, 123456, -1234567890123, 12345678901234567890123, 7, 300, 123456, \
      12345678901234567890, 0.1, 3.141592653589793, \
      '12.34', '-0.000001', '0.0000000001', \
      'it''s', 'abc', true, '2024-02-29', '12:34:56.5', '2024-02-29 12:34:56.789', \
      '2024-02-29 12:34:56', '2024-02-29 12:34:56.789', '2024-02-29 12:34:56.000000001', \
      '2024-02-29 12:34:56.789+01', '2024-02-29 00:00:00+00', INTERVAL '36 hours', \
      'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', [42], ['x'], {'a': NULL, 'b': NULL}, \
      MAP {'z': -1})",
];

fn insert_sql(table: &str) -> String {
    format!("INSERT INTO {table} VALUES {}", ROWS.join(", "))
}

/// What single-node DuckDB answers for the same DDL and INSERT.
fn reference_rows() -> Vec<RecordBatch> {
    let conn = reference::open().unwrap();
    conn.execute_batch(&ddl("t")).unwrap();
    conn.execute_batch(&insert_sql("t")).unwrap();
    reference::query(&conn, "SELECT * FROM t ORDER BY id").unwrap()
}

fn check_schema(schema: &Schema) {
    let expected = columns();
    assert_eq!(schema.fields().len(), expected.len());
    for (f, (name, duck, dt)) in schema.fields().iter().zip(&expected) {
        assert_eq!(f.name(), name);
        assert_eq!(f.data_type(), dt, "column {name} ({duck})");
    }
}

async fn select_merged(client: &mut Client, table: &str) -> Vec<RecordBatch> {
    let info = client
        .info(&format!("SELECT * FROM {table} ORDER BY id"))
        .await
        .unwrap();
    assert!(
        info.endpoint.iter().all(|e| e.location.is_empty()),
        "ORDER BY is merged at the coordinator"
    );
    check_schema(&info.clone().try_decode_schema().unwrap());
    client.read_info(&info).await.unwrap()
}

async fn select_direct(client: &mut Client, table: &str) -> Vec<RecordBatch> {
    let info = client
        .info(&format!("SELECT * FROM {table}"))
        .await
        .unwrap();
    assert!(info.endpoint.len() >= 2, "one endpoint per shard");
    assert!(
        info.endpoint.iter().all(|e| !e.location.is_empty()),
        "a plain scan is read from the workers"
    );
    check_schema(&info.clone().try_decode_schema().unwrap());
    client.read_info(&info).await.unwrap()
}

fn same(expected: &[RecordBatch], actual: &[RecordBatch], ordered: bool, what: &str) {
    if let Err(e) = compare_results(expected, actual, ordered) {
        panic!(
            "{what}: {e}\nexpected:\n{}\nactual:\n{}",
            pretty(expected),
            pretty(actual)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_type_round_trips() {
    let reference = tokio::task::spawn_blocking(reference_rows).await.unwrap();
    assert_eq!(rows(&reference), 4);

    let cluster = TestCluster::start(2).await;
    let mut client = cluster.client().await;
    client
        .update(&format!(
            "{} WITH (distribution = 'hash(id)', shards = 4)",
            ddl("t")
        ))
        .await
        .unwrap();
    assert_eq!(client.update(&insert_sql("t")).await.unwrap(), 4);

    // SQL literals, merged and direct.
    let merged = select_merged(&mut client, "t").await;
    same(&reference, &merged, true, "INSERT VALUES, merged");
    let direct = select_direct(&mut client, "t").await;
    same(&reference, &direct, false, "INSERT VALUES, direct");
    for b in merged.iter().chain(&direct) {
        check_schema(&b.schema());
    }

    // INSERT ... SELECT, and a hash distribution on other key types.
    for (key, table) in [("i128", "t_sel"), ("u", "t_sel2"), ("ts_ns", "t_sel3")] {
        client
            .update(&format!(
                "{} WITH (distribution = 'hash({key})', shards = 3)",
                ddl(table)
            ))
            .await
            .unwrap();
        assert_eq!(
            client
                .update(&format!("INSERT INTO {table} SELECT * FROM t"))
                .await
                .unwrap(),
            4
        );
        let got = select_merged(&mut client, table).await;
        same(
            &reference,
            &got,
            true,
            &format!("INSERT SELECT into {table}"),
        );
    }

    // Ingest (CommandStatementIngest) of what the cluster returned.
    let cmd = CommandStatementIngest {
        table_definition_options: Some(TableDefinitionOptions {
            if_not_exist: TableNotExistOption::Create.into(),
            if_exists: TableExistsOption::Fail.into(),
        }),
        table: "t_ingest".into(),
        ..Default::default()
    };
    let batches = merged.clone();
    let n = client
        .sql
        .execute_ingest(cmd, futures::stream::iter(batches.into_iter().map(Ok)))
        .await
        .unwrap();
    assert_eq!(n, 4);
    let got = select_merged(&mut client, "t_ingest").await;
    same(&reference, &got, true, "ingest");
    let got = select_direct(&mut client, "t_ingest").await;
    same(&reference, &got, false, "ingest, direct");

    // Types that cannot be distribution keys are refused clearly.
    for key in ["li", "st", "m", "iv"] {
        let err = client
            .update(&format!(
                "{} WITH (distribution = 'hash({key})')",
                ddl(&format!("bad_{key}"))
            ))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{key}: {err}");
        assert!(err.message().contains("cannot hash-distribute"), "{err}");
    }

    // Filters on each column (pushed to the workers where they translate,
    // on the coordinator otherwise) agree with DuckDB.
    let conn = tokio::task::spawn_blocking(|| {
        let conn = reference::open().unwrap();
        conn.execute_batch(&ddl("t")).unwrap();
        conn.execute_batch(&insert_sql("t")).unwrap();
        conn
    })
    .await
    .unwrap();
    let conn = Arc::new(std::sync::Mutex::new(conn));
    for (name, _, _) in columns().into_iter().skip(1) {
        if matches!(name, "m" | "st" | "li" | "lv") {
            continue;
        }
        for sql in [
            format!("SELECT id FROM t WHERE {name} IS NULL ORDER BY id"),
            format!(
                "SELECT id FROM t WHERE {name} = (SELECT {name} FROM t WHERE id = 2) ORDER BY id"
            ),
        ] {
            let expected = {
                let conn = Arc::clone(&conn);
                let sql = sql.clone();
                tokio::task::spawn_blocking(move || {
                    reference::query(&conn.lock().unwrap(), &sql).unwrap()
                })
                .await
                .unwrap()
            };
            let got = client
                .query(&sql)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
            same(&expected, &got, true, &sql);
        }
    }

    // Every type as a prepared-statement parameter.
    parameters(&mut client, &merged).await;

    cluster.stop().await;
}

/// Binds row 2's value of each column (as the cluster's own Arrow type, and
/// as a type a client would send instead) in `WHERE c = ?`.
async fn parameters(client: &mut Client, merged: &[RecordBatch]) {
    let all = arrow::compute::concat_batches(&merged[0].schema(), merged).unwrap();
    // Row 2 (id = 2) is at index 1.
    for (i, (name, duck, _)) in columns().into_iter().enumerate().skip(1) {
        let value = all.column(i).slice(1, 1);
        let mut bindings: Vec<ArrayRef> = vec![Arc::clone(&value)];
        // What drivers typically send instead: strings for temporal and
        // decimal values, 64-bit integers for integers.
        match value.data_type() {
            DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::UInt8 => {
                bindings.push(arrow::compute::cast(&value, &DataType::Int64).unwrap());
            }
            DataType::Decimal128(..)
            | DataType::Date32
            | DataType::Time64(_)
            | DataType::Timestamp(..) => {
                bindings.push(arrow::compute::cast(&value, &DataType::Utf8).unwrap());
            }
            _ => {}
        }
        let sql = format!("SELECT id FROM t WHERE {name} = ?");
        let skip_eq = matches!(name, "m");
        for binding in bindings {
            let mut stmt = client.sql.prepare(sql.clone(), None).await.unwrap();
            let ps = stmt.parameter_schema().unwrap().clone();
            assert_eq!(ps.fields().len(), 1, "{sql}");
            assert!(ps.field(0).is_nullable(), "{sql}");
            let batch = RecordBatch::try_new(
                Arc::new(Schema::new(vec![Field::new(
                    "p",
                    binding.data_type().clone(),
                    true,
                )])),
                vec![Arc::clone(&binding)],
            )
            .unwrap();
            stmt.set_parameters(batch).unwrap();
            let info = match stmt.execute().await {
                Ok(info) => info,
                Err(e) if skip_eq => {
                    eprintln!("{name} ({duck}) cannot be compared: {e}");
                    continue;
                }
                Err(e) => panic!("{sql} with {} ({duck}): {e}", binding.data_type()),
            };
            let got = client.read_info(&info).await.unwrap();
            let mut ids: Vec<String> = got
                .iter()
                .flat_map(|b| {
                    (0..b.num_rows()).map(move |r| {
                        arrow::util::display::array_value_to_string(b.column(0), r).unwrap()
                    })
                })
                .collect();
            ids.sort();
            // Row 4 shares row 2's BOOLEAN value.
            let expected: &[&str] = if name == "bo" { &["2", "4"] } else { &["2"] };
            assert_eq!(
                ids,
                expected,
                "{sql} bound as {} ({duck})",
                binding.data_type()
            );
        }
        // NULL of the column's type matches nothing with `=`, the NULL row
        // with IS NOT DISTINCT FROM.
        if !matches!(name, "m") {
            let sql = format!("SELECT id FROM t WHERE {name} IS NOT DISTINCT FROM ?");
            let mut stmt = client.sql.prepare(sql.clone(), None).await.unwrap();
            let null = arrow::array::new_null_array(value.data_type(), 1);
            stmt.set_parameters(
                RecordBatch::try_new(
                    Arc::new(Schema::new(vec![Field::new(
                        "p",
                        value.data_type().clone(),
                        true,
                    )])),
                    vec![null],
                )
                .unwrap(),
            )
            .unwrap();
            let info = stmt.execute().await.unwrap();
            let got = client.read_info(&info).await.unwrap();
            assert_eq!(rows(&got), 1, "{sql}: {}", pretty(&got));
        }
    }

    // A value that does not fit the parameter's type is INVALID_ARGUMENT.
    let mut stmt = client
        .sql
        .prepare("SELECT id FROM t WHERE i8 = ?".to_string(), None)
        .await
        .unwrap();
    stmt.set_parameters(
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("p", DataType::Int64, true)])),
            vec![Arc::new(arrow::array::Int64Array::from(vec![1000]))],
        )
        .unwrap(),
    )
    .unwrap();
    let err = common::to_status(stmt.execute().await.unwrap_err());
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    let mut stmt = client
        .sql
        .prepare("SELECT id FROM t WHERE dt = ?".to_string(), None)
        .await
        .unwrap();
    stmt.set_parameters(
        RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("p", DataType::Utf8, true)])),
            vec![Arc::new(arrow::array::StringArray::from(vec![
                "not a date",
            ]))],
        )
        .unwrap(),
    )
    .unwrap();
    let err = common::to_status(stmt.execute().await.unwrap_err());
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
}

/// Rows far wider than one gRPC message stream in pieces, through both
/// paths, and no result carries a view or dictionary type.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wide_rows_stream_in_small_messages() {
    let cluster = TestCluster::start(2).await;
    let mut client = cluster.client().await;
    client
        .update("CREATE TABLE w (id INTEGER, s VARCHAR) WITH (distribution = 'hash(id)')")
        .await
        .unwrap();
    // 64 rows of 1 MiB each: 64 MiB per shard stream without cutting.
    client
        .update(
            "INSERT INTO w SELECT CAST(value AS INTEGER), repeat('x', 1048576) \
             FROM generate_series(1, 64)",
        )
        .await
        .unwrap();
    for sql in [
        "SELECT * FROM w",
        "SELECT * FROM w ORDER BY id",
        "SELECT id, s || 'y' AS s FROM w",
    ] {
        let info = client.info(sql).await.unwrap();
        let got = client
            .read_info(&info)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(rows(&got), 64, "{sql}");
        for b in &got {
            for f in b.schema().fields() {
                assert!(
                    !matches!(
                        f.data_type(),
                        DataType::Utf8View | DataType::BinaryView | DataType::Dictionary(..)
                    ),
                    "{sql}: {f}"
                );
            }
            // One decoded batch per FlightData message: cut to ~2 MiB,
            // i.e. at most two of these 1 MiB rows.
            assert!(
                b.num_rows() <= 2,
                "{sql}: {} rows in one message",
                b.num_rows()
            );
        }
    }
    cluster.stop().await;
}
