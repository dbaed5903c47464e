//! A real worker on 127.0.0.1:0 in a temporary directory, driven through
//! the Flight client the coordinator uses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, AsArray, Int64Array, RecordBatch, StringArray};
use arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightData, FlightDescriptor, SchemaAsIpc, Ticket};
use bytes::Bytes;
use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use flight_worker::fragment::{ShardScanTable, encode_fragment};
use flight_worker::{WorkerConfig, WorkerHandle};
use fsql_proto::sign::Signer;
use fsql_proto::worker_request::Request as Command;
use fsql_proto::{
    CreateShard, DropShard, ShardStat, ShardStatsRequest, ShardStatsResponse, ShardTarget,
    ShardTicket, ShardWrite, WorkerRequest, WriteControl, WriteResult, write_control::Step,
};
use futures::{StreamExt, TryStreamExt};
use prost::Message;
use tonic::Code;

const SECRET: &[u8] = b"worker-test-secret-0123456789";
const TIMEOUT: Duration = Duration::from_secs(120);

async fn with_timeout<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(TIMEOUT, f)
        .await
        .expect("test timed out")
}

async fn start(dir: &Path) -> WorkerHandle {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut config = WorkerConfig::new(dir, Bytes::from_static(SECRET));
    config.memory_limit = Some("512MB".into());
    config.threads = Some(2);
    flight_worker::start(config, listener).await.unwrap()
}

async fn client(worker: &WorkerHandle) -> FlightClient {
    let url = worker.url().replacen("grpc://", "http://", 1);
    let channel = tonic::transport::Channel::from_shared(url)
        .unwrap()
        .connect()
        .await
        .unwrap();
    FlightClient::new(channel)
}

fn status(e: &FlightError) -> &tonic::Status {
    match e {
        FlightError::Tonic(status) => status,
        other => panic!("expected a gRPC status, got {other}"),
    }
}

fn code(e: &FlightError) -> Code {
    status(e).code()
}

fn signed(command: Command) -> Bytes {
    let mut request = WorkerRequest {
        version: fsql_proto::WIRE_VERSION,
        expires_at_ms: fsql_proto::now_ms() + 60_000,
        signature: Bytes::new(),
        request: Some(command),
    };
    Signer::new(SECRET).sign(&mut request)
}

fn target(table: &str, shard: u32) -> ShardTarget {
    ShardTarget {
        table: table.into(),
        shard,
        reference: false,
    }
}

fn table_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("name", DataType::Utf8, true),
    ]))
}

fn batch(from: i64, to: i64) -> RecordBatch {
    RecordBatch::try_new(
        table_schema(),
        vec![
            Arc::new(Int64Array::from_iter_values(from..to)),
            Arc::new(StringArray::from_iter_values(
                (from..to).map(|i| format!("n{i}")),
            )),
        ],
    )
    .unwrap()
}

async fn action(
    client: &mut FlightClient,
    kind: &str,
    body: Bytes,
) -> Result<Vec<Bytes>, FlightError> {
    client
        .do_action(Action {
            r#type: kind.into(),
            body,
        })
        .await?
        .try_collect()
        .await
}

async fn create(
    client: &mut FlightClient,
    t: &ShardTarget,
    schema: &Schema,
) -> Result<(), FlightError> {
    let body = signed(Command::CreateShard(CreateShard {
        target: Some(t.clone()),
        schema: fsql_proto::ipc::schema_to_bytes(schema).unwrap(),
    }));
    let results = action(client, "create_shard", body).await?;
    assert!(results.is_empty());
    Ok(())
}

async fn stats(client: &mut FlightClient, targets: &[ShardTarget]) -> Vec<ShardStat> {
    let body = signed(Command::ShardStats(ShardStatsRequest {
        targets: targets.to_vec(),
    }));
    let results = action(client, "shard_stats", body).await.unwrap();
    assert_eq!(results.len(), 1);
    ShardStatsResponse::decode(results[0].clone())
        .unwrap()
        .stats
}

async fn put(
    client: &mut FlightClient,
    t: &ShardTarget,
    batches: Vec<RecordBatch>,
) -> Result<u64, FlightError> {
    let schema = batches.first().map_or_else(table_schema, |b| b.schema());
    put_as(client, t, schema, batches).await
}

/// The message carrying a write step: a schema message with the step as
/// its app_metadata.
fn control(step: Step) -> FlightData {
    FlightData::from(SchemaAsIpc::new(
        &table_schema(),
        &IpcWriteOptions::default(),
    ))
    .with_app_metadata(WriteControl { step: step as i32 }.encode_to_vec())
}

/// Writes `batches` with the stream schema `schema` and commits, as the
/// coordinator does for a single replica.
async fn put_as(
    client: &mut FlightClient,
    t: &ShardTarget,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<u64, FlightError> {
    let descriptor = FlightDescriptor::new_cmd(signed(Command::Write(ShardWrite {
        target: Some(t.clone()),
    })));
    let data = FlightDataEncoderBuilder::new()
        .with_flight_descriptor(Some(descriptor))
        .with_schema(schema)
        .build(futures::stream::iter(batches.into_iter().map(Ok)))
        .chain(futures::stream::once(async { Ok(control(Step::Commit)) }));
    let results: Vec<_> = client.do_put(data).await?.try_collect().await?;
    assert_eq!(results.len(), 1);
    let result = WriteResult::decode(results[0].app_metadata.clone()).unwrap();
    assert!(result.committed);
    Ok(result.rows)
}

/// A ticket scanning shard `t` of table `table`, expecting `expected`.
fn scan_ticket(
    table: &str,
    shard: u32,
    schema: SchemaRef,
    expected: &Schema,
    signer: &Signer,
) -> Ticket {
    let provider = ShardScanTable {
        table: table.into(),
        reference: false,
        schema,
        files: None,
    };
    let plan = LogicalPlanBuilder::scan(table, provider_as_source(Arc::new(provider)), None)
        .unwrap()
        .build()
        .unwrap();
    let mut ticket = ShardTicket {
        version: fsql_proto::WIRE_VERSION,
        query_id: "q-test".into(),
        shard,
        fragment: encode_fragment(&plan).unwrap(),
        expected_schema: fsql_proto::ipc::schema_to_bytes(expected).unwrap(),
        expires_at_ms: fsql_proto::now_ms() + 60_000,
        signature: Bytes::new(),
    };
    Ticket::new(signer.sign(&mut ticket))
}

async fn get(
    client: &mut FlightClient,
    ticket: Ticket,
) -> Result<(SchemaRef, Vec<RecordBatch>), FlightError> {
    let mut stream = client.do_get(ticket).await?;
    let mut batches = Vec::new();
    while let Some(b) = stream.next().await {
        batches.push(b?);
    }
    let schema = stream
        .schema()
        .cloned()
        .expect("the stream carries a schema");
    Ok((schema, batches))
}

#[tokio::test]
async fn health_and_list_actions() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let worker = start(dir.path()).await;
        let mut c = client(&worker).await;
        let id = action(&mut c, "health", Bytes::new()).await.unwrap();
        assert_eq!(id, vec![Bytes::from(worker.id().to_string())]);
        let actions: Vec<_> = c.list_actions().await.unwrap().try_collect().await.unwrap();
        let names: Vec<_> = actions.iter().map(|a| a.r#type.as_str()).collect();
        assert_eq!(
            names,
            [
                "create_shard",
                "drop_shard",
                "shard_stats",
                "health",
                "cancel",
                "describe_files",
                "SetSessionOptions",
                "GetSessionOptions",
                "CloseSession"
            ]
        );
        worker.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn create_put_stats_drop() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let worker = start(dir.path()).await;
        let mut c = client(&worker).await;
        let t = target("orders", 3);

        create(&mut c, &t, &table_schema()).await.unwrap();
        // Idempotent for the same columns, a conflict for others.
        create(&mut c, &t, &table_schema()).await.unwrap();
        let other = Schema::new(vec![Field::new("x", DataType::Int32, true)]);
        let err = create(&mut c, &t, &other).await.unwrap_err();
        assert_eq!(code(&err), Code::AlreadyExists, "{err}");

        let rows = put(&mut c, &t, vec![batch(0, 10), batch(10, 5000)])
            .await
            .unwrap();
        assert_eq!(rows, 5000);
        // An empty write commits nothing and succeeds.
        assert_eq!(put(&mut c, &t, vec![]).await.unwrap(), 0);

        let missing = target("orders", 4);
        let s = stats(&mut c, &[t.clone(), missing.clone()]).await;
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].target.as_ref(), Some(&t));
        assert!(s[0].exists);
        assert_eq!(s[0].rows, 5000);
        assert!(s[0].bytes > 5000 * 8, "bytes {}", s[0].bytes);
        assert!(!s[1].exists);
        assert_eq!(s[1].rows, 0);

        let body = signed(Command::DropShard(DropShard {
            target: Some(t.clone()),
        }));
        assert!(
            action(&mut c, "drop_shard", body.clone())
                .await
                .unwrap()
                .is_empty()
        );
        // Dropping again is fine.
        assert!(action(&mut c, "drop_shard", body).await.unwrap().is_empty());
        assert!(!stats(&mut c, std::slice::from_ref(&t)).await[0].exists);

        // Writing to a missing shard is NOT_FOUND.
        let err = put(&mut c, &t, vec![batch(0, 1)]).await.unwrap_err();
        assert_eq!(code(&err), Code::NotFound, "{err}");
        worker.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn put_needs_commit() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let worker = start(dir.path()).await;
        let mut c = client(&worker).await;
        let t = target("events", 0);
        create(&mut c, &t, &table_schema()).await.unwrap();
        let descriptor = || {
            Some(FlightDescriptor::new_cmd(signed(Command::Write(
                ShardWrite {
                    target: Some(t.clone()),
                },
            ))))
        };

        // Rows, then a clean end of the stream without COMMIT (a
        // coordinator giving up on the statement): nothing lands.
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(descriptor())
            .build(futures::stream::iter(vec![Ok(batch(0, 100))]));
        let err = c
            .do_put(data)
            .await
            .unwrap()
            .try_collect::<Vec<_>>()
            .await
            .unwrap_err();
        assert_eq!(code(&err), Code::Cancelled, "{err}");
        assert_eq!(stats(&mut c, std::slice::from_ref(&t)).await[0].rows, 0);

        // PREPARE is answered with the rows held, still invisible; the end
        // of the stream without COMMIT rolls them back.
        let (mut tx, rx) = futures::channel::mpsc::channel(4);
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(descriptor())
            .build(futures::stream::iter(vec![
                Ok(batch(0, 100)),
                Ok(batch(100, 250)),
            ]))
            .chain(rx.map(Ok));
        let mut replies = c.do_put(data).await.unwrap();
        futures::SinkExt::send(&mut tx, control(Step::Prepare))
            .await
            .unwrap();
        let prepared =
            WriteResult::decode(replies.next().await.unwrap().unwrap().app_metadata).unwrap();
        assert_eq!((prepared.rows, prepared.committed), (250, false));
        assert_eq!(stats(&mut c, std::slice::from_ref(&t)).await[0].rows, 0);
        drop(tx);
        let err = replies.next().await.unwrap().unwrap_err();
        assert_eq!(code(&err), Code::Cancelled, "{err}");
        assert_eq!(stats(&mut c, std::slice::from_ref(&t)).await[0].rows, 0);

        // PREPARE then COMMIT: the rows land.
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(descriptor())
            .build(futures::stream::iter(vec![Ok(batch(0, 40))]))
            .chain(futures::stream::iter(vec![
                Ok(control(Step::Prepare)),
                Ok(control(Step::Commit)),
            ]));
        let replies: Vec<_> = c.do_put(data).await.unwrap().try_collect().await.unwrap();
        let replies: Vec<_> = replies
            .into_iter()
            .map(|r| {
                let r = WriteResult::decode(r.app_metadata).unwrap();
                (r.rows, r.committed)
            })
            .collect();
        assert_eq!(replies, vec![(40, false), (40, true)]);
        assert_eq!(stats(&mut c, std::slice::from_ref(&t)).await[0].rows, 40);
        worker.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn put_is_all_or_nothing() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let worker = start(dir.path()).await;
        let mut c = client(&worker).await;
        let t = target("events", 0);
        create(&mut c, &t, &table_schema()).await.unwrap();

        // A null in the NOT NULL column after good rows: nothing lands.
        let nullable = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
        ]));
        let good =
            RecordBatch::try_new(Arc::clone(&nullable), batch(0, 3000).columns().to_vec()).unwrap();
        let bad = RecordBatch::try_new(
            Arc::clone(&nullable),
            vec![
                Arc::new(Int64Array::from(vec![Some(1), None])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let err = put_as(&mut c, &t, nullable, vec![good, bad])
            .await
            .unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");
        assert!(status(&err).message().contains("NOT NULL"), "{err}");

        // Wrong number of columns.
        let narrow = RecordBatch::try_new(
            Arc::new(Schema::new(vec![Field::new("id", DataType::Int64, false)])),
            vec![Arc::new(Int64Array::from(vec![1]))],
        )
        .unwrap();
        let err = put(&mut c, &t, vec![narrow]).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");

        // Values that do not fit the column type.
        let text = RecordBatch::try_new(
            Arc::new(Schema::new(vec![
                Field::new("id", DataType::Utf8, false),
                Field::new("name", DataType::Utf8, true),
            ])),
            vec![
                Arc::new(StringArray::from(vec!["1", "not a number"])),
                Arc::new(StringArray::from(vec!["a", "b"])),
            ],
        )
        .unwrap();
        let err = put(&mut c, &t, vec![text]).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");

        assert_eq!(stats(&mut c, std::slice::from_ref(&t)).await[0].rows, 0);
        worker.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn bad_tickets_and_requests_are_refused() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let worker = start(dir.path()).await;
        let mut c = client(&worker).await;
        let schema = table_schema();

        // Signed with another secret.
        let forged = scan_ticket("t", 0, Arc::clone(&schema), &schema, &Signer::new("other"));
        let err = get(&mut c, forged).await.unwrap_err();
        assert_eq!(code(&err), Code::Unauthenticated, "{err}");

        // Not a protobuf message.
        let garbage = Ticket::new(Bytes::from_static(b"\xff\xff\xff garbage"));
        let err = get(&mut c, garbage).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");

        // Empty and unsigned.
        let err = get(&mut c, Ticket::new(Bytes::new())).await.unwrap_err();
        assert_eq!(code(&err), Code::Unauthenticated, "{err}");

        // Expired.
        let signer = Signer::new(SECRET);
        let mut expired = ShardTicket {
            version: fsql_proto::WIRE_VERSION,
            expires_at_ms: fsql_proto::now_ms() - 1_000,
            ..Default::default()
        };
        let err = get(&mut c, Ticket::new(signer.sign(&mut expired)))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Code::Unauthenticated, "{err}");

        // Well signed, but the fragment is not a plan.
        let mut junk = ShardTicket {
            version: fsql_proto::WIRE_VERSION,
            fragment: Bytes::from_static(b"\x0a\x03abc"),
            expected_schema: fsql_proto::ipc::schema_to_bytes(&schema).unwrap(),
            expires_at_ms: fsql_proto::now_ms() + 60_000,
            ..Default::default()
        };
        let err = get(&mut c, Ticket::new(signer.sign(&mut junk)))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");

        // Actions: unsigned, unknown, mismatched.
        let body = Bytes::from(
            WorkerRequest {
                version: fsql_proto::WIRE_VERSION,
                request: Some(Command::DropShard(DropShard {
                    target: Some(target("t", 0)),
                })),
                ..Default::default()
            }
            .encode_to_vec(),
        );
        let err = action(&mut c, "drop_shard", body).await.unwrap_err();
        assert_eq!(code(&err), Code::Unauthenticated, "{err}");
        let err = action(&mut c, "vacuum", Bytes::new()).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");
        assert!(status(&err).message().contains("create_shard"), "{err}");
        let body = signed(Command::DropShard(DropShard {
            target: Some(target("t", 0)),
        }));
        let err = action(&mut c, "create_shard", body).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");

        // Unsupported column types are named.
        let odd = Schema::new(vec![Field::new("n", DataType::Null, true)]);
        let err = create(&mut c, &target("odd", 0), &odd).await.unwrap_err();
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");
        assert!(status(&err).message().contains("column \"n\""), "{err}");

        // A DoPut without a descriptor.
        let data = FlightDataEncoderBuilder::new()
            .with_schema(table_schema())
            .build(futures::stream::iter(vec![Ok(batch(0, 1))]));
        let err = match c.do_put(data).await {
            Ok(results) => results.try_collect::<Vec<_>>().await.unwrap_err(),
            Err(e) => e,
        };
        assert_eq!(code(&err), Code::InvalidArgument, "{err}");

        // Other RPCs.
        let err = c
            .get_flight_info(FlightDescriptor::new_path(vec!["x".into()]))
            .await
            .unwrap_err();
        assert_eq!(code(&err), Code::Unimplemented, "{err}");

        // Still serving.
        let id = action(&mut c, "health", Bytes::new()).await.unwrap();
        assert_eq!(id.len(), 1);
        worker.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn restart_keeps_id_and_rows() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let t = target("kept", 1);
        let worker = start(dir.path()).await;
        let id = worker.id().to_string();
        {
            let mut c = client(&worker).await;
            create(&mut c, &t, &table_schema()).await.unwrap();
            assert_eq!(put(&mut c, &t, vec![batch(0, 123)]).await.unwrap(), 123);
        }
        worker.shutdown().await;

        let worker = start(dir.path()).await;
        assert_eq!(worker.id(), id);
        let mut c = client(&worker).await;
        let s = stats(&mut c, std::slice::from_ref(&t)).await;
        assert!(s[0].exists);
        assert_eq!(s[0].rows, 123);
        worker.shutdown().await;
    })
    .await;
}

// The tests below run fragments, so they need `sqlgen`.

#[tokio::test]
async fn do_get_reads_back_cast_to_the_expected_schema() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let worker = start(dir.path()).await;
        let mut c = client(&worker).await;
        let signer = Signer::new(SECRET);
        let t = target("items", 2);
        let schema = table_schema();
        create(&mut c, &t, &schema).await.unwrap();

        // Empty shard: the schema still arrives.
        let ticket = scan_ticket("items", 2, Arc::clone(&schema), &schema, &signer);
        let (got, batches) = get(&mut c, ticket).await.unwrap();
        assert_eq!(got, schema);
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 0);

        put(&mut c, &t, vec![batch(0, 4000), batch(4000, 10_000)])
            .await
            .unwrap();

        // Names and types come from the expected schema, by position.
        let expected = Schema::new(vec![
            Field::new("k", DataType::Int64, false),
            Field::new("label", DataType::LargeUtf8, true),
        ]);
        let ticket = scan_ticket("items", 2, Arc::clone(&schema), &expected, &signer);
        let (got, batches) = get(&mut c, ticket).await.unwrap();
        assert_eq!(got.as_ref(), &expected);
        let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
        assert_eq!(rows, 10_000);
        let mut sum = 0i64;
        for b in &batches {
            assert_eq!(b.schema().as_ref(), &expected);
            sum += b
                .column(0)
                .as_primitive::<Int64Type>()
                .values()
                .iter()
                .sum::<i64>();
            assert_eq!(b.column(1).data_type(), &DataType::LargeUtf8);
            assert_eq!(b.column(1).null_count(), 0);
        }
        assert_eq!(sum, (0..10_000i64).sum::<i64>());

        // Another shard of the same table does not exist here.
        let ticket = scan_ticket("items", 7, Arc::clone(&schema), &schema, &signer);
        let err = get(&mut c, ticket).await.unwrap_err();
        assert_eq!(code(&err), Code::NotFound, "{err}");

        // A ticket whose expected schema has the wrong arity is refused.
        let one = Schema::new(vec![Field::new("k", DataType::Int64, false)]);
        let ticket = scan_ticket("items", 2, Arc::clone(&schema), &one, &signer);
        let err = get(&mut c, ticket).await.unwrap_err();
        assert_eq!(code(&err), Code::Internal, "{err}");
        worker.shutdown().await;
    })
    .await;
}

#[tokio::test]
async fn abandoned_stream_does_not_block_the_worker() {
    with_timeout(async {
        let dir = tempfile::tempdir().unwrap();
        let worker = start(dir.path()).await;
        let mut c = client(&worker).await;
        let signer = Signer::new(SECRET);
        let t = target("big", 0);
        let schema = table_schema();
        create(&mut c, &t, &schema).await.unwrap();
        let batches: Vec<_> = (0..20)
            .map(|i| batch(i * 10_000, (i + 1) * 10_000))
            .collect();
        assert_eq!(put(&mut c, &t, batches).await.unwrap(), 200_000);

        // Read one batch of a big result and walk away, several times.
        for _ in 0..8 {
            let ticket = scan_ticket("big", 0, Arc::clone(&schema), &schema, &signer);
            let mut stream = c.do_get(ticket).await.unwrap();
            let first = stream.next().await.unwrap().unwrap();
            assert!(first.num_rows() > 0);
            drop(stream);
        }

        // The worker still answers, and still reads whole results.
        let ticket = scan_ticket("big", 0, Arc::clone(&schema), &schema, &signer);
        let (_, batches) = get(&mut c, ticket).await.unwrap();
        assert_eq!(batches.iter().map(|b| b.num_rows()).sum::<usize>(), 200_000);
        let started = std::time::Instant::now();
        worker.shutdown().await;
        assert!(started.elapsed() < Duration::from_secs(5));
    })
    .await;
}
