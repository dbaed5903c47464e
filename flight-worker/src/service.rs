//! The worker's Arrow Flight service.
//!
//! * `DoGet` takes a signed [`ShardTicket`], turns its fragment into DuckDB
//!   SQL (`sqlgen`), runs it on this worker's shard and streams the result
//!   cast to the schema the ticket expects.
//! * `DoPut` takes a signed [`WorkerRequest`] holding a `ShardWrite` as its
//!   descriptor command and appends the stream to the shard atomically.
//! * `DoAction` runs the signed shard DDL and stats actions, plus an
//!   unsigned `health` probe.
//!
//! Nothing here touches DuckDB directly: every database call goes through
//! [`crate::storage`] on the blocking pool, each request on its own
//! connection, and results travel through bounded channels. When a client
//! goes away its DuckDB query is interrupted. Other Flight RPCs are not
//! served: clients talk to the coordinator.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use arrow_flight::decode::{DecodedFlightData, DecodedPayload, FlightDataDecoder};
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_descriptor::DescriptorType;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use duckdb::{Connection, InterruptHandle};
use fsql_proto::sign::Signer;
use fsql_proto::worker_request::Request as WorkerCommand;
use fsql_proto::write_control::Step;
use fsql_proto::{ShardStatsResponse, ShardTicket, WorkerRequest, WriteControl, WriteResult};
use futures::stream::{self, BoxStream};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tonic::{Request, Response, Status, Streaming};
use tracing::{Instrument, Span};

use crate::cancel::{CancelGuard, Cancels};
use crate::error::{Error, Result};
use crate::metrics::WorkerMetrics;
use crate::session::{self, Sessions};
use crate::storage::{self, AppendMessage, Storage};
use crate::{fragment, sqlgen};

/// gRPC metadata key carrying the id of the client query a request belongs
/// to (for logs; `DoGet` takes it from the ticket instead).
pub const QUERY_ID_HEADER: &str = "x-fsql-query-id";

/// `DoAction` type: create a shard table (signed `CreateShard`).
pub const ACTION_CREATE_SHARD: &str = "create_shard";
/// `DoAction` type: drop a shard table (signed `DropShard`).
pub const ACTION_DROP_SHARD: &str = "drop_shard";
/// `DoAction` type: row counts and sizes (signed `ShardStatsRequest`).
pub const ACTION_SHARD_STATS: &str = "shard_stats";
/// `DoAction` type: liveness probe, unsigned; replies with the worker id.
pub const ACTION_HEALTH: &str = "health";
/// `DoAction` type: stop a client query's fragments (signed `CancelQuery`).
pub const ACTION_CANCEL: &str = "cancel";
/// `DoAction` type: list files and their schema (signed `DescribeFiles`).
pub const ACTION_DESCRIBE_FILES: &str = "describe_files";

const ACTIONS: [(&str, &str); 9] = [
    (
        ACTION_CREATE_SHARD,
        "Create a shard table if it does not exist. Body: signed WorkerRequest{create_shard}. No results.",
    ),
    (
        ACTION_DROP_SHARD,
        "Drop a shard table if it exists. Body: signed WorkerRequest{drop_shard}. No results.",
    ),
    (
        ACTION_SHARD_STATS,
        "Rows and estimated Arrow bytes of shard tables. Body: signed WorkerRequest{shard_stats}. \
         One result: ShardStatsResponse.",
    ),
    (
        ACTION_HEALTH,
        "Liveness probe (runs SELECT 1). No body, no signature. One result: the worker id (UTF-8).",
    ),
    (
        ACTION_CANCEL,
        "Interrupt every fragment of a client query and refuse its tickets from now on. \
         Body: signed WorkerRequest{cancel}. No results.",
    ),
    (
        ACTION_DESCRIBE_FILES,
        "List the files matching glob patterns and the schema a DuckDB file function reads \
         from them. Body: signed WorkerRequest{describe_files}. One result: FilesDescription.",
    ),
    (
        session::ACTION_SET,
        "Flight SetSessionOptions (catalog, schema, distributed). Sets the session cookie.",
    ),
    (session::ACTION_GET, "Flight GetSessionOptions."),
    (session::ACTION_CLOSE, "Flight CloseSession."),
];

/// Record batches in flight between a DuckDB query and its gRPC stream.
const BATCH_CHANNEL: usize = 4;

/// Target size of one `FlightData` message of a result stream: batches are
/// cut (by rows) to about this many bytes, so results stream well under
/// the gRPC message limits of clients (4 MiB by default) whatever the
/// width of a DuckDB chunk. A single row larger than this travels alone.
pub const MAX_FLIGHT_DATA_BYTES: usize = 2 * 1024 * 1024;

/// Largest gRPC message the worker accepts or sends.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;

/// Longest query id kept for logs.
const MAX_QUERY_ID: usize = 128;

/// The Flight service of one worker.
#[derive(Debug, Clone)]
pub struct WorkerService {
    storage: Arc<Storage>,
    signer: Signer,
    /// Every blocking task, so shutdown can wait for DuckDB to be idle.
    tasks: TaskTracker,
    /// Cancelled when a shutdown stops waiting for streams to finish.
    abort: CancellationToken,
    cancels: Arc<Cancels>,
    sessions: Arc<Sessions>,
    /// This worker's series in the process's metrics registry.
    metrics: WorkerMetrics,
}

impl WorkerService {
    /// A service over `storage`, verifying with `signer`. Blocking work is
    /// tracked by `tasks`; cancelling `abort` cuts open streams short (with
    /// an error, never a silently truncated result) and interrupts their
    /// queries.
    pub fn new(
        storage: Arc<Storage>,
        signer: Signer,
        tasks: TaskTracker,
        abort: CancellationToken,
    ) -> Self {
        let metrics = WorkerMetrics::new(storage.worker_id());
        Self {
            storage,
            signer,
            tasks,
            abort,
            cancels: Arc::default(),
            sessions: Arc::default(),
            metrics,
        }
    }

    /// The tonic service, with message size limits set.
    pub fn into_server(self) -> FlightServiceServer<Self> {
        FlightServiceServer::new(self)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    }

    /// Runs `f` on the blocking pool with a fresh connection.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
        T: Send + 'static,
    {
        let storage = Arc::clone(&self.storage);
        let span = Span::current();
        self.tasks
            .spawn_blocking(move || {
                let _entered = span.enter();
                let conn = storage.connect()?;
                f(&conn)
            })
            .await?
    }

    async fn get(
        &self,
        ticket: ShardTicket,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>> {
        let expected =
            fsql_proto::ipc::schema_from_bytes(&ticket.expected_schema).map_err(|source| {
                Error::BadSchema {
                    what: "expected schema in shard ticket",
                    source,
                }
            })?;
        let guard = self
            .cancels
            .register(&ticket.query_id)
            .ok_or_else(|| Error::Cancelled(format!("query {} was cancelled", ticket.query_id)))?;
        let cancel = guard.token().clone();
        let (tx, rx) = mpsc::channel(BATCH_CHANNEL);
        let (ready_tx, ready_rx) = oneshot::channel();
        let job = FragmentJob {
            storage: Arc::clone(&self.storage),
            runtime: tokio::runtime::Handle::current(),
            abort: self.abort.clone(),
            cancel: guard,
            expected: Arc::clone(&expected),
            tx,
        };
        let span = Span::current();
        self.tasks.spawn_blocking(move || {
            let _entered = span.enter();
            job.run(ticket, ready_tx);
        });
        match ready_rx.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {
                return Err(Error::Cancelled(
                    "the fragment stopped before it started streaming".into(),
                ));
            }
        }
        let rows_sent = self.metrics.rows_sent.clone();
        let batches = ReceiverStream::new(rx).inspect(move |batch| {
            if let Ok(batch) = batch {
                rows_sent.inc_by(batch.num_rows() as u64);
            }
        });
        let flight = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(MAX_FLIGHT_DATA_BYTES)
            .with_schema(expected)
            .build(batches)
            .map_err(Status::from);
        Ok(until_aborted(flight, self.abort.clone(), cancel).boxed())
    }

    /// Verifies a DoGet's shard ticket and starts its fragment.
    async fn open_fragment(
        &self,
        request: Request<Ticket>,
    ) -> Result<BoxStream<'static, Result<FlightData, Status>>, Status> {
        let ticket: ShardTicket = self
            .signer
            .verify(&request.get_ref().ticket)
            .map_err(Error::from)?;
        let span = tracing::info_span!("do_get", query_id = %ticket.query_id, shard = ticket.shard);
        async move { self.get(ticket).await.map_err(Status::from) }
            .instrument(span)
            .await
    }

    /// Runs a two-phase shard write (see `ShardWrite` in `fsql.proto`):
    /// the prepared reply goes to `replies` as soon as the rows are in the
    /// open transaction; returns the rows once committed.
    async fn put(
        &self,
        first: FlightData,
        target: fsql_proto::ShardTarget,
        input: Streaming<FlightData>,
        replies: mpsc::Sender<Result<PutResult, Status>>,
    ) -> Result<u64> {
        let (tx, mut rx) = mpsc::channel(BATCH_CHANNEL);
        let writer = self.blocking(move |conn| {
            storage::append(
                conn,
                &target,
                || rx.blocking_recv(),
                // The coordinator waits for this reply; if it went away,
                // the missing COMMIT rolls the write back.
                |rows| drop(replies.blocking_send(Ok(write_result(rows, false)))),
            )
        });
        let data =
            stream::once(futures::future::ready(Ok(first))).chain(input.map_err(FlightError::from));
        let messages = FlightDataDecoder::new(data);
        let (written, fed) = tokio::join!(writer, feed(messages, tx, self.abort.clone()));
        // A broken input stream explains a rolled-back write best.
        fed?;
        written
    }

    async fn action(&self, action: Action) -> Result<Vec<arrow_flight::Result>> {
        let kind = action.r#type.as_str();
        let expected = match kind {
            ACTION_HEALTH => {
                // Proves the database answers, not just the gRPC server.
                self.blocking(storage::ping).await?;
                return Ok(vec![arrow_flight::Result {
                    body: self.storage.worker_id().to_string().into(),
                }]);
            }
            ACTION_CREATE_SHARD => "create_shard",
            ACTION_DROP_SHARD => "drop_shard",
            ACTION_SHARD_STATS => "shard_stats",
            ACTION_CANCEL => "cancel",
            ACTION_DESCRIBE_FILES => "describe_files",
            other => {
                let names: Vec<&str> = ACTIONS.iter().map(|(name, _)| *name).collect();
                return Err(Error::BadRequest(format!(
                    "unknown action {other:?}; this worker serves {}",
                    names.join(", ")
                )));
            }
        };
        let request: WorkerRequest = self.signer.verify(&action.body)?;
        match request.request {
            Some(WorkerCommand::CreateShard(create)) if kind == ACTION_CREATE_SHARD => {
                let target = create
                    .target
                    .ok_or_else(|| Error::BadRequest("create_shard without a target".into()))?;
                let schema =
                    fsql_proto::ipc::schema_from_bytes(&create.schema).map_err(|source| {
                        Error::BadSchema {
                            what: "schema in create_shard",
                            source,
                        }
                    })?;
                let table = storage::table_name(&target)?;
                let created = self
                    .blocking(move |conn| storage::create_shard(conn, &target, &schema))
                    .await?;
                tracing::info!(table, created, "create_shard");
                Ok(vec![])
            }
            Some(WorkerCommand::DropShard(drop)) if kind == ACTION_DROP_SHARD => {
                let target = drop
                    .target
                    .ok_or_else(|| Error::BadRequest("drop_shard without a target".into()))?;
                let table = storage::table_name(&target)?;
                let existed = self
                    .blocking(move |conn| storage::drop_shard(conn, &target))
                    .await?;
                tracing::info!(table, existed, "drop_shard");
                Ok(vec![])
            }
            Some(WorkerCommand::ShardStats(request)) if kind == ACTION_SHARD_STATS => {
                let stats = self
                    .blocking(move |conn| {
                        request
                            .targets
                            .iter()
                            .map(|target| storage::shard_stats(conn, target))
                            .collect::<Result<Vec<_>>>()
                    })
                    .await?;
                let body = ShardStatsResponse { stats }.encode_to_vec();
                Ok(vec![arrow_flight::Result { body: body.into() }])
            }
            Some(WorkerCommand::DescribeFiles(request)) if kind == ACTION_DESCRIBE_FILES => {
                let description = self
                    .blocking(move |conn| {
                        storage::describe_files(
                            conn,
                            &request.function,
                            &request.patterns,
                            &request.options,
                        )
                    })
                    .await?;
                tracing::info!(files = description.files.len(), "describe_files");
                Ok(vec![arrow_flight::Result {
                    body: description.encode_to_vec().into(),
                }])
            }
            Some(WorkerCommand::Cancel(cancel)) if kind == ACTION_CANCEL => {
                tracing::info!(query_id = %cancel.query_id, "cancel");
                self.cancels.cancel(&cancel.query_id);
                Ok(vec![])
            }
            other => Err(Error::BadRequest(format!(
                "action {kind} needs a WorkerRequest holding {expected}, got {}",
                command_name(other.as_ref())
            ))),
        }
    }
}

/// Name of a worker request's command, for error messages.
fn command_name(command: Option<&WorkerCommand>) -> &'static str {
    match command {
        None => "no command",
        Some(WorkerCommand::CreateShard(_)) => "create_shard",
        Some(WorkerCommand::DropShard(_)) => "drop_shard",
        Some(WorkerCommand::ShardStats(_)) => "shard_stats",
        Some(WorkerCommand::Write(_)) => "write",
        Some(WorkerCommand::Cancel(_)) => "cancel",
        Some(WorkerCommand::DescribeFiles(_)) => "describe_files",
    }
}

/// The query id a caller put in the request metadata, if any.
fn query_id<T>(request: &Request<T>) -> String {
    let id = request
        .metadata()
        .get(QUERY_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    id.chars().take(MAX_QUERY_ID).collect()
}

/// The `PutResult` of a write step.
fn write_result(rows: u64, committed: bool) -> PutResult {
    PutResult {
        app_metadata: WriteResult { rows, committed }.encode_to_vec().into(),
    }
}

/// Reads a DoPut stream into the appender's channel: record batches, and
/// the `WriteControl` steps carried by data-less messages. Returns after
/// `Commit`; returns early (without `Commit`, so the write rolls back) when
/// the stream ends or breaks first, or on a shutdown.
async fn feed(
    mut messages: FlightDataDecoder,
    tx: mpsc::Sender<AppendMessage>,
    abort: CancellationToken,
) -> Result<()> {
    loop {
        let next = tokio::select! {
            biased;
            () = abort.cancelled() => {
                return Err(Error::Cancelled(
                    "worker is shutting down; the write was rolled back".into(),
                ));
            }
            // The appender stopped: its error tells why.
            () = tx.closed() => return Ok(()),
            next = messages.next() => next,
        };
        let message = match next {
            Some(Ok(DecodedFlightData {
                payload: DecodedPayload::RecordBatch(batch),
                ..
            })) => AppendMessage::Batch(batch),
            // A step rides on a schema message (the decoder takes nothing
            // else without data).
            Some(Ok(DecodedFlightData {
                payload: DecodedPayload::Schema(_) | DecodedPayload::None,
                inner,
            })) => {
                if inner.app_metadata.is_empty() {
                    continue;
                }
                let control = WriteControl::decode(inner.app_metadata).map_err(|e| {
                    Error::BadRequest(format!("malformed WriteControl in a shard write: {e}"))
                })?;
                match control.step() {
                    Step::Prepare => AppendMessage::Prepare,
                    Step::Commit => {
                        // If the appender already stopped, its error is reported.
                        let _ = tx.send(AppendMessage::Commit).await;
                        return Ok(());
                    }
                    Step::Unspecified => {
                        return Err(Error::BadRequest(
                            "WriteControl without a step (PREPARE or COMMIT)".into(),
                        ));
                    }
                }
            }
            Some(Err(e)) => return Err(Error::Input(e)),
            // Ended without COMMIT: dropping `tx` rolls the write back.
            None => return Ok(()),
        };
        if tx.send(message).await.is_err() {
            return Ok(());
        }
    }
}

/// Ends `stream` with UNAVAILABLE when `abort` fires and with CANCELLED when
/// the query is cancelled, so that a client never mistakes a cut-off result
/// for a complete one.
fn until_aborted<S>(
    stream: S,
    abort: CancellationToken,
    cancel: CancellationToken,
) -> impl Stream<Item = Result<FlightData, Status>> + Send + 'static
where
    S: Stream<Item = Result<FlightData, Status>> + Send + Unpin + 'static,
{
    stream::unfold(Some((stream, abort, cancel)), |state| async move {
        let (mut stream, abort, cancel) = state?;
        let next = tokio::select! {
            biased;
            () = abort.cancelled() => Err(Status::unavailable(
                "worker is shutting down; the result stream was cut off",
            )),
            () = cancel.cancelled() => Err(Status::cancelled("the query was cancelled")),
            item = stream.next() => Ok(item),
        };
        match next {
            Err(status) => Some((Err(status), None)),
            Ok(None) => None,
            Ok(Some(item)) => Some((item, Some((stream, abort, cancel)))),
        }
    })
}

/// One fragment run, on the blocking pool.
struct FragmentJob {
    storage: Arc<Storage>,
    runtime: tokio::runtime::Handle,
    abort: CancellationToken,
    /// Keeps the query's cancellation token registered while running.
    cancel: CancelGuard,
    expected: SchemaRef,
    tx: mpsc::Sender<Result<RecordBatch, FlightError>>,
}

impl FragmentJob {
    /// Runs the fragment. Errors before the first batch go to `ready` (and
    /// become the RPC's status); later ones end the stream.
    fn run(self, ticket: ShardTicket, ready: oneshot::Sender<Result<()>>) {
        let mut ready = Some(ready);
        let Err(e) = self.execute(&ticket, &mut ready) else {
            return;
        };
        if let Some(ready) = ready.take() {
            let _ = ready.send(Err(e));
        } else if self.tx.is_closed() {
            tracing::debug!("client went away: {e}");
        } else {
            let _ = self.tx.blocking_send(Err(e.into()));
        }
    }

    fn execute(
        &self,
        ticket: &ShardTicket,
        ready: &mut Option<oneshot::Sender<Result<()>>>,
    ) -> Result<()> {
        let plan = fragment::decode_fragment(&ticket.fragment).map_err(Error::BadFragment)?;
        let sql = sqlgen::fragment_to_sql(&plan, ticket.shard).map_err(Error::Translate)?;
        tracing::debug!(%sql, "fragment SQL");
        let conn = self.storage.connect()?;
        let done = CancellationToken::new();
        let _finished = done.clone().drop_guard();
        self.runtime.spawn(interrupt_when_abandoned(
            self.tx.clone(),
            self.abort.clone(),
            self.cancel.token().clone(),
            done,
            conn.interrupt_handle(),
        ));
        let stats = storage::run_query(
            &conn,
            &sql,
            &self.expected,
            || ready.take().is_some_and(|tx| tx.send(Ok(())).is_ok()),
            |batch| self.tx.blocking_send(Ok(batch)).is_ok(),
        )?;
        if stats.abandoned {
            tracing::debug!(rows = stats.rows, "client went away; fragment stopped");
        }
        tracing::info!(
            query_id = %ticket.query_id,
            shard = ticket.shard,
            rows = stats.rows,
            abandoned = stats.abandoned,
            "fragment finished"
        );
        Ok(())
    }
}

/// Interrupts the DuckDB query of a fragment when its client goes away or
/// the worker aborts streams, until `done`.
async fn interrupt_when_abandoned(
    tx: mpsc::Sender<Result<RecordBatch, FlightError>>,
    abort: CancellationToken,
    cancel: CancellationToken,
    done: CancellationToken,
    interrupt: Arc<InterruptHandle>,
) {
    tokio::select! {
        () = done.cancelled() => {}
        () = cancel.cancelled() => {
            tracing::debug!("query cancelled; interrupting it");
            interrupt.interrupt();
        }
        () = tx.closed() => {
            tracing::debug!("client went away; interrupting its query");
            interrupt.interrupt();
        }
        () = abort.cancelled() => {
            tracing::debug!("shutting down; interrupting a query");
            interrupt.interrupt();
        }
    }
}

fn unimplemented(rpc: &str) -> Status {
    Status::from(Error::Unimplemented(format!(
        "flight-worker does not serve {rpc}: it only runs signed shard tickets (DoGet), \
         shard writes (DoPut) and shard actions (DoAction); connect Flight SQL clients \
         to the coordinator"
    )))
}

#[tonic::async_trait]
impl FlightService for WorkerService {
    type HandshakeStream = BoxStream<'static, Result<HandshakeResponse, Status>>;
    type ListFlightsStream = BoxStream<'static, Result<FlightInfo, Status>>;
    type DoGetStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoPutStream = BoxStream<'static, Result<PutResult, Status>>;
    type DoExchangeStream = BoxStream<'static, Result<FlightData, Status>>;
    type DoActionStream = BoxStream<'static, Result<arrow_flight::Result, Status>>;
    type ListActionsStream = BoxStream<'static, Result<ActionType, Status>>;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        // Clients re-authenticate at each endpoint location: a session token
        // of the cluster is echoed back, Basic credentials are checked when
        // this worker knows the users (see `crate::auth`).
        crate::auth::handshake(request).await
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        Err(unimplemented("ListFlights"))
    }

    async fn get_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        Err(unimplemented("GetFlightInfo"))
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(unimplemented("PollFlightInfo"))
    }

    async fn get_schema(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        Err(unimplemented(
            "GetSchema (the schema travels in the shard ticket)",
        ))
    }

    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        // Metrics: every DoGet is a shard read started; its time runs
        // until the stream ends or is dropped; errors before or during the
        // stream are counted by code.
        self.metrics.fragments.inc();
        let timer = self.metrics.fragment_seconds.start_timer();
        let started = self.open_fragment(request).await;
        let stream = match started {
            Ok(stream) => stream,
            Err(status) => {
                self.metrics.fragment_error(status.code());
                return Err(status);
            }
        };
        let metrics = self.metrics.clone();
        let stream = stream.inspect(move |item| match item {
            Ok(data) => metrics
                .bytes_sent
                .inc_by((data.data_header.len() + data.data_body.len()) as u64),
            Err(status) => metrics.fragment_error(status.code()),
        });
        // The time is observed when the stream ends (before the client
        // sees the end) or is dropped.
        let mut timer = Some(timer);
        let stream = stream.chain(stream::poll_fn(move |_| {
            drop(timer.take());
            std::task::Poll::Ready(None)
        }));
        Ok(Response::new(stream.boxed()))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        let query_id = query_id(&request);
        let mut input = request.into_inner();
        let first = input.message().await?.ok_or_else(|| {
            Error::BadRequest(
                "empty DoPut stream: the first message must carry a FlightDescriptor \
                 whose command is a signed ShardWrite"
                    .into(),
            )
        })?;
        let command = match &first.flight_descriptor {
            Some(d) if d.r#type() == DescriptorType::Cmd => d.cmd.clone(),
            _ => {
                return Err(Error::BadRequest(
                    "DoPut needs a FlightDescriptor of type CMD holding a signed ShardWrite".into(),
                )
                .into());
            }
        };
        let request: WorkerRequest = self.signer.verify(&command).map_err(Error::from)?;
        let target = match request.request {
            Some(WorkerCommand::Write(write)) => write
                .target
                .ok_or_else(|| Error::BadRequest("ShardWrite without a target".into()))?,
            other => {
                return Err(Error::BadRequest(format!(
                    "DoPut needs a WorkerRequest holding write, got {}",
                    command_name(other.as_ref())
                ))
                .into());
            }
        };
        let table = storage::table_name(&target)?;
        let span = tracing::info_span!("do_put", query_id = %query_id, table = %table);
        // The replies stream while the client is still sending (the
        // prepared reply comes before the client's COMMIT).
        let (replies, rx) = mpsc::channel(2);
        let service = self.clone();
        self.tasks.spawn(
            async move {
                let reply = match service.put(first, target, input, replies.clone()).await {
                    Ok(rows) => {
                        service.metrics.rows_written.inc_by(rows);
                        tracing::info!(rows, "append committed");
                        Ok(write_result(rows, true))
                    }
                    Err(e) => Err(Status::from(e)),
                };
                // Nobody listening: the client went away.
                let _ = replies.send(reply).await;
            }
            .instrument(span),
        );
        Ok(Response::new(ReceiverStream::new(rx).boxed()))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(unimplemented("DoExchange"))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        if Sessions::handles(&request.get_ref().r#type) {
            let reply = self
                .sessions
                .action(request.get_ref(), request.metadata())?;
            return Ok(
                reply.into_response(|results| stream::iter(results.into_iter().map(Ok)).boxed())
            );
        }
        let query_id = query_id(&request);
        let action = request.into_inner();
        let span = tracing::info_span!("do_action", action = %action.r#type, query_id = %query_id);
        let results = self
            .action(action)
            .instrument(span.clone())
            .await
            .map_err(|e| span.in_scope(|| Status::from(e)))?;
        Ok(Response::new(
            stream::iter(results.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let actions = ACTIONS.iter().map(|(name, description)| {
            Ok(ActionType {
                r#type: (*name).to_string(),
                description: (*description).to_string(),
            })
        });
        Ok(Response::new(stream::iter(actions).boxed()))
    }
}
