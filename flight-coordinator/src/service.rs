//! The Flight SQL service: the cluster's one client-facing endpoint.
//!
//! Maps Flight SQL commands onto the [`Engine`]: statements and prepared
//! statements (self-contained signed handles), updates, bulk ingest and
//! catalog metadata. Plain unions of shard results are answered with one
//! endpoint per shard located at the workers; everything else with one
//! endpoint here, whose ticket is a signed, self-contained
//! `StatementTicket`.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::{Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, XdbcTypeInfoData};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionBeginSavepointRequest, ActionBeginSavepointResult, ActionBeginTransactionRequest,
    ActionBeginTransactionResult, ActionCancelQueryRequest, ActionCancelQueryResult,
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, ActionEndSavepointRequest, ActionEndTransactionRequest,
    Any, CommandGetCatalogs, CommandGetCrossReference, CommandGetDbSchemas, CommandGetExportedKeys,
    CommandGetImportedKeys, CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes,
    CommandGetTables, CommandGetXdbcTypeInfo, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{CATALOG, Engine, NO_TRANSACTIONS, PlannedQuery, SCHEMA, StatementKind};
use crate::error::{Error, df_to_status};
use crate::gather::shard_ticket;
use crate::metadata;
use crate::metrics::{QueryKind, StatementTimer, metrics};
use crate::planner::Distributed;
use crate::query_log::Tracked;
use flight_worker::session::{SessionSettings, Sessions};

/// How long a prepared-statement handle stays valid.
const HANDLE_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a planned merged query waits for its DoGet before re-planning.
const PLAN_CACHE_TTL: Duration = Duration::from_secs(300);
const PLAN_CACHE_MAX: usize = 1024;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct FlightSqlServiceImpl {
    engine: Arc<Engine>,
    sql_info: SqlInfoData,
    xdbc_types: XdbcTypeInfoData,
    sessions: Sessions,
    /// Planned merged queries by query id: when cached, the plan, and how
    /// long planning took (for `fsql_query_duration_seconds`).
    plans: Mutex<HashMap<String, CachedPlan>>,
}

fn status(e: Error) -> Status {
    e.into()
}

/// A merged query planned by GetFlightInfo, waiting for its DoGet: when it
/// was cached, the plan, the planning time and its query-log entry.
type CachedPlan = (Instant, PlannedQuery, Duration, Tracked);

/// The user a request was authenticated as ("" without authentication).
fn user_of<T>(request: &Request<T>) -> String {
    request
        .extensions()
        .get::<flight_worker::auth::AuthenticatedUser>()
        .map(|u| u.name.clone())
        .unwrap_or_default()
}

/// Refuses a statement that names a transaction: this server has no
/// transactions yet (`FlightSqlServerTransaction` says so), so it never
/// hands out a transaction id, and running the statement outside the
/// transaction the client means would make its ROLLBACK a silent commit.
fn refuse_transaction(transaction_id: Option<&Bytes>) -> Result<(), Status> {
    match transaction_id {
        None => Ok(()),
        Some(_) => Err(Status::unimplemented(NO_TRANSACTIONS)),
    }
}

/// The Flight SQL actions this server does not offer, left out of
/// `ListActions`: transactions, savepoints and Substrait plans.
const UNOFFERED_ACTIONS: [&str; 5] = [
    "BeginTransaction",
    "EndTransaction",
    "BeginSavepoint",
    "EndSavepoint",
    "CreatePreparedSubstraitPlan",
];

/// Records an update's outcome in the query log and returns it.
fn logged(tracked: Tracked, result: crate::error::Result<i64>) -> Result<i64, Status> {
    match result {
        Ok(rows) => {
            tracked.finish(Some(rows.max(0) as u64));
            Ok(rows)
        }
        Err(e) => {
            let e = status(e);
            tracked.fail(&e);
            Err(e)
        }
    }
}

fn schema_ipc(schema: &Schema) -> Result<Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
    Ok(bytes)
}

/// Collects a DoPut stream of parameter or data batches.
async fn collect_batches(stream: PeekableFlightDataStream) -> Result<Vec<RecordBatch>, Status> {
    // Messages with no IPC header (a bare descriptor) carry no data.
    let stream = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(
        stream
            .try_filter(|fd| futures::future::ready(!fd.data_header.is_empty()))
            .map_err(FlightError::from),
    );
    stream
        .try_collect()
        .await
        .map_err(|e| Status::invalid_argument(format!("reading the uploaded batches: {e}")))
}

fn concat(batches: &[RecordBatch]) -> Result<Option<RecordBatch>, Status> {
    let Some(first) = batches.first() else {
        return Ok(None);
    };
    arrow::compute::concat_batches(&first.schema(), batches)
        .map(Some)
        .map_err(|e| Status::invalid_argument(format!("parameter batches differ: {e}")))
}

fn params_from_bytes(bytes: &[u8]) -> Result<Option<RecordBatch>, Status> {
    if bytes.is_empty() {
        return Ok(None);
    }
    let (_, batches) = fsql_proto::ipc::batches_from_bytes(bytes)
        .map_err(|e| Status::invalid_argument(format!("bad bound parameters: {e}")))?;
    concat(&batches)
}

fn params_to_bytes(params: Option<&RecordBatch>) -> Result<Bytes, Status> {
    match params {
        None => Ok(Bytes::new()),
        Some(p) => fsql_proto::ipc::batches_to_bytes(&p.schema(), std::slice::from_ref(p))
            .map_err(|e| Status::internal(e.to_string())),
    }
}

impl FlightSqlServiceImpl {
    pub fn new(engine: Arc<Engine>) -> Result<Self, Status> {
        Ok(Self {
            engine,
            sql_info: metadata::sql_info()?,
            xdbc_types: metadata::xdbc_type_info()?,
            sessions: Sessions::default(),
            plans: Mutex::new(HashMap::new()),
        })
    }

    /// The session options of a request (defaults without a session).
    fn settings<T>(&self, request: &Request<T>) -> Result<SessionSettings, Status> {
        self.sessions.settings(request.metadata())
    }

    fn signer(&self) -> &fsql_proto::sign::Signer {
        self.engine.pool.signer()
    }

    fn new_handle(&self, sql: &str, params: Option<&RecordBatch>) -> Result<Bytes, Status> {
        let mut h = fsql_proto::PreparedHandle {
            version: fsql_proto::WIRE_VERSION,
            sql: sql.to_string(),
            parameters: params_to_bytes(params)?,
            signature: Bytes::new(),
            expires_at_ms: fsql_proto::now_ms() + HANDLE_TTL.as_millis() as i64,
        };
        Ok(self.signer().sign(&mut h))
    }

    fn open_handle(&self, bytes: &[u8]) -> Result<(String, Option<RecordBatch>), Status> {
        let h: fsql_proto::PreparedHandle =
            self.signer().verify(bytes).map_err(|e| status(e.into()))?;
        let params = params_from_bytes(&h.parameters)?;
        Ok((h.sql, params))
    }

    /// Plans or runs a statement and describes where its results are.
    async fn flight_info(
        &self,
        sql: &str,
        params: Option<RecordBatch>,
        descriptor: FlightDescriptor,
        settings: &SessionSettings,
        user: &str,
    ) -> Result<FlightInfo, Status> {
        // Observed on return (updates, direct results, failures), or
        // handed to the DoGet of a merged result.
        let timer = StatementTimer::start();
        let tracked = self.engine.query_log.start("", user, sql);
        let failed = |tracked: Tracked, e: crate::error::Error| {
            let e = status(e);
            tracked.fail(&e);
            e
        };
        let kind = match crate::engine::classify(sql) {
            Ok(kind) => kind,
            Err(e) => return Err(failed(tracked, e)),
        };
        if kind == StatementKind::Update {
            // DDL/DML sent as a query (ADBC does this): run it now and
            // answer with an empty result.
            let rows = self.run_update(tracked, sql, params.as_ref()).await?;
            // One endpoint with an empty stream: clients that read the first
            // endpoint unconditionally (flightsql-dbapi) work too.
            let ticket = self.statement_ticket("", "", None, true)?;
            return FlightInfo::new()
                .try_with_schema(&Schema::empty())
                .map(|i| {
                    i.with_descriptor(descriptor)
                        .with_total_records(rows)
                        .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
                })
                .map_err(|e| Status::internal(e.to_string()));
        }
        let query_id = uuid::Uuid::new_v4().to_string();
        let mut tracked = tracked;
        tracked.set_id(&query_id);
        let planned = match crate::query_log::in_query(
            query_id.clone(),
            self.engine
                .plan_query(sql, params.as_ref(), &query_id, settings.distributed),
        )
        .await
        {
            Ok(planned) => planned,
            Err(e) => return Err(failed(tracked, e)),
        };
        let mut info = FlightInfo::new()
            .try_with_schema(&planned.schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_total_bytes(-1);
        match &planned.plan {
            Distributed::Direct {
                fragment, routes, ..
            } if settings.direct => {
                let fragment =
                    flight_worker::fragment::encode_fragment(fragment).map_err(df_to_status)?;
                let expected = fsql_proto::ipc::schema_to_bytes(&planned.schema)
                    .map_err(|e| Status::internal(e.to_string()))?;
                for route in routes {
                    let ticket = shard_ticket(
                        &self.engine.pool,
                        &query_id,
                        route.shard,
                        &fragment,
                        &expected,
                    );
                    let mut ep = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
                    for url in &route.urls {
                        ep = ep.with_location(url);
                    }
                    info = info.with_endpoint(ep);
                }
                // The rows go from the workers to the client.
                tracked.direct(routes.len());
                tracked.finish(None);
            }
            // Merged here (a direct plan too when the client asked for
            // one endpoint: `execute` gathers its shards).
            _ => {
                let ticket =
                    self.statement_ticket(&query_id, sql, params.as_ref(), settings.distributed)?;
                info = info.with_endpoint(FlightEndpoint::new().with_ticket(ticket));
                info = info.with_ordered(true);
                let planning = timer.defer();
                let mut plans = self.plans.lock();
                let now = Instant::now();
                plans.retain(|_, (t, ..)| now.duration_since(*t) < PLAN_CACHE_TTL);
                if plans.len() < PLAN_CACHE_MAX {
                    plans.insert(query_id, (now, planned, planning, tracked));
                }
            }
        }
        Ok(info)
    }

    /// Registers an update (DML, DDL, ingest) in the query log.
    /// Runs DDL or DML as the statement `tracked`, which follows its
    /// progress and outcome.
    async fn run_update(
        &self,
        tracked: Tracked,
        sql: &str,
        params: Option<&RecordBatch>,
    ) -> Result<i64, Status> {
        let mut tracked = tracked;
        let mut id = tracked.id();
        if id.is_empty() {
            id = uuid::Uuid::new_v4().to_string();
            tracked.set_id(&id);
        }
        let run = tracked
            .progress_sink()
            .scope(self.engine.execute_update(sql, params));
        let result = crate::query_log::in_query(id, run).await;
        logged(tracked, result)
    }

    /// Prepares a statement: its parameter and result schemas.
    async fn prepare(
        &self,
        sql: &str,
        request: &Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let kind = crate::engine::classify(sql).map_err(status)?;
        let settings = self.settings(request)?;
        let parameter_schema = match kind {
            StatementKind::Query => self.engine.parameter_schema(sql).await.map_err(status)?,
            // Our DDL (`CREATE TABLE ... WITH (...)`, DROP) is not DataFusion
            // SQL: its parameters are those DataFusion finds, if any, and
            // the statement is checked when it runs.
            StatementKind::Update => match self.engine.parameter_schema(sql).await {
                Ok(schema) => schema,
                Err(_) => Arc::new(Schema::empty()),
            },
        };
        let dataset_schema = match kind {
            StatementKind::Update => Bytes::new(),
            StatementKind::Query => {
                // Plan with NULL parameters of the right types to learn the
                // result schema.
                let schema = self
                    .statement_schema(sql, Some(null_params(&parameter_schema)?), &settings)
                    .await?;
                schema_ipc(&schema)?
            }
        };
        let parameter_schema = if parameter_schema.fields().is_empty() {
            Bytes::new()
        } else {
            schema_ipc(&parameter_schema)?
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.new_handle(sql, None)?,
            dataset_schema,
            parameter_schema,
        })
    }

    fn track_update<T>(&self, request: &Request<T>, sql: &str) -> Tracked {
        let id = uuid::Uuid::new_v4().to_string();
        self.engine.query_log.start(&id, &user_of(request), sql)
    }

    /// The signed ticket of a result merged at this coordinator; an empty
    /// `sql` is the empty result of a statement that already ran.
    fn statement_ticket(
        &self,
        query_id: &str,
        sql: &str,
        params: Option<&RecordBatch>,
        distributed: bool,
    ) -> Result<Ticket, Status> {
        let mut t = fsql_proto::StatementTicket {
            version: fsql_proto::WIRE_VERSION,
            query_id: query_id.to_string(),
            sql: sql.to_string(),
            parameters: params_to_bytes(params)?,
            expires_at_ms: fsql_proto::now_ms() + crate::workers::TICKET_TTL.as_millis() as i64,
            signature: Bytes::new(),
            distributed,
        };
        let ticket = TicketStatementQuery {
            statement_handle: self.signer().sign(&mut t),
        };
        Ok(Ticket::new(ticket.as_any().encode_to_vec()))
    }

    fn batch_info(
        &self,
        schema: SchemaRef,
        cmd: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = Ticket::new(cmd.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    fn batch_stream(
        batch: Result<RecordBatch, FlightError>,
    ) -> Result<Response<BoxStream<arrow_flight::FlightData>>, Status> {
        let batch = batch.map_err(|e| Status::internal(e.to_string()))?;
        let schema = batch.schema();
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(futures::stream::once(async move { Ok(batch) }))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    fn tables_batch(&self, query: CommandGetTables) -> Result<RecordBatch, FlightError> {
        let include_schema = query.include_schema;
        let mut b = query.into_builder();
        for t in self.engine.catalog.tables() {
            if include_schema {
                let schema = metadata::with_column_metadata(&t.name, &t.schema);
                b.append(CATALOG, SCHEMA, &t.name, "TABLE", &schema)?;
            } else {
                b.append(CATALOG, SCHEMA, &t.name, "TABLE", &t.schema)?;
            }
        }
        for name in crate::system::SYSTEM_TABLES {
            if let Some(schema) = crate::system::table_schema(name) {
                b.append(
                    CATALOG,
                    crate::system::SYSTEM_SCHEMA,
                    name,
                    "SYSTEM TABLE",
                    &schema,
                )?;
            }
        }
        b.build()
    }

    /// The result schema of a query (empty for DDL/DML), planned with NULL
    /// parameters of the right types when none are bound.
    async fn statement_schema(
        &self,
        sql: &str,
        params: Option<RecordBatch>,
        settings: &SessionSettings,
    ) -> Result<SchemaRef, Status> {
        if crate::engine::classify(sql).map_err(status)? == StatementKind::Update {
            return Ok(Arc::new(Schema::empty()));
        }
        let params = match params {
            Some(p) => p,
            None => null_params(&self.engine.parameter_schema(sql).await.map_err(status)?)?,
        };
        let planned = self
            .engine
            .plan_query(sql, Some(&params), "schema", settings.distributed)
            .await
            .map_err(status)?;
        Ok(planned.schema)
    }

    /// `GetSchema`: the schema `GetFlightInfo` would announce, without
    /// running anything.
    async fn schema_of(&self, request: &Request<FlightDescriptor>) -> Result<SchemaRef, Status> {
        use arrow_flight::sql::Command;
        let settings = self.settings(request)?;
        let any = Any::decode(request.get_ref().cmd.as_ref())
            .map_err(|e| Status::invalid_argument(format!("malformed Flight SQL command: {e}")))?;
        let command = Command::try_from(any)
            .map_err(|e| Status::invalid_argument(format!("malformed Flight SQL command: {e}")))?;
        Ok(match command {
            Command::CommandStatementQuery(q) => {
                self.statement_schema(&q.query, None, &settings).await?
            }
            Command::CommandPreparedStatementQuery(cmd) => {
                let (sql, params) = self.open_handle(&cmd.prepared_statement_handle)?;
                self.statement_schema(&sql, params, &settings).await?
            }
            Command::CommandGetCatalogs(c) => c.into_builder().schema(),
            Command::CommandGetDbSchemas(c) => c.into_builder().schema(),
            Command::CommandGetTables(c) => c.into_builder().schema(),
            Command::CommandGetTableTypes(c) => c.into_builder().schema(),
            Command::CommandGetSqlInfo(c) => c.into_builder(&self.sql_info).schema(),
            Command::CommandGetXdbcTypeInfo(c) => c.into_builder(&self.xdbc_types).schema(),
            Command::CommandGetPrimaryKeys(_) => metadata::primary_keys_schema(),
            Command::CommandGetImportedKeys(_)
            | Command::CommandGetExportedKeys(_)
            | Command::CommandGetCrossReference(_) => metadata::foreign_keys_schema(),
            other => {
                return Err(Status::invalid_argument(format!(
                    "GetSchema does not apply to {}",
                    other.type_url()
                )));
            }
        })
    }

    /// The client query ids behind a FlightInfo's tickets (merged or
    /// direct endpoints); tickets of metadata commands have none.
    fn query_ids(&self, info: &FlightInfo) -> Vec<String> {
        let mut ids: Vec<String> = info
            .endpoint
            .iter()
            .filter_map(|ep| ep.ticket.as_ref())
            .filter_map(|t| {
                if let Ok(Some(ticket)) = Any::decode(t.ticket.as_ref())
                    .map_err(|_| ())
                    .and_then(|any| any.unpack::<TicketStatementQuery>().map_err(|_| ()))
                {
                    let st: fsql_proto::StatementTicket =
                        self.signer().verify(&ticket.statement_handle).ok()?;
                    return Some(st.query_id);
                }
                let shard: fsql_proto::ShardTicket = self.signer().verify(&t.ticket).ok()?;
                Some(shard.query_id)
            })
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// Cancels the queries behind `info`.
    async fn cancel(&self, info: &FlightInfo) -> arrow_flight::CancelStatus {
        let ids = self.query_ids(info);
        if ids.is_empty() {
            return arrow_flight::CancelStatus::NotCancellable;
        }
        let mut all = true;
        for id in &ids {
            all &= self.engine.cancel(id).await;
        }
        if all {
            arrow_flight::CancelStatus::Cancelled
        } else {
            arrow_flight::CancelStatus::Cancelling
        }
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServiceImpl {
    type FlightService = FlightSqlServiceImpl;

    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        // The auth layer (`flight_worker::auth`) has checked the
        // `authorization` header; this answers with the session token (or
        // checks a BasicAuth payload). Without authentication: an empty
        // answer.
        flight_worker::auth::handshake(request).await
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        refuse_transaction(query.transaction_id.as_ref())?;
        let settings = self.settings(&request)?;
        let user = user_of(&request);
        let info = self
            .flight_info(&query.query, None, request.into_inner(), &settings, &user)
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (sql, params) = self.open_handle(&cmd.prepared_statement_handle)?;
        let settings = self.settings(&request)?;
        let user = user_of(&request);
        let info = self
            .flight_info(&sql, params, request.into_inner(), &settings, &user)
            .await?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let t: fsql_proto::StatementTicket = self
            .signer()
            .verify(&ticket.statement_handle)
            .map_err(|e| status(e.into()))?;
        if t.sql.is_empty() {
            let stream = FlightDataEncoderBuilder::new()
                .with_schema(Arc::new(Schema::empty()))
                .build(futures::stream::empty())
                .map_err(Status::from);
            return Ok(Response::new(Box::pin(stream)));
        }
        let cached = self
            .plans
            .lock()
            .remove(&t.query_id)
            .map(|(_, p, planning, tracked)| (p, planning, tracked));
        // Observed when the stream ends or is dropped (or on an error).
        let (planned, timer, tracked) = match cached {
            Some((p, planning, tracked)) => (p, StatementTimer::resume(planning), tracked),
            None => {
                // A ticket read again, or on another coordinator.
                let timer = StatementTimer::start();
                let tracked = self
                    .engine
                    .query_log
                    .start(&t.query_id, &user_of(&request), &t.sql);
                let params = params_from_bytes(&t.parameters)?;
                let planned = match self
                    .engine
                    .plan_query(&t.sql, params.as_ref(), &t.query_id, t.distributed)
                    .await
                {
                    Ok(planned) => planned,
                    Err(e) => {
                        let e = status(e);
                        tracked.fail(&e);
                        return Err(e);
                    }
                };
                (planned, timer, tracked)
            }
        };
        let schema = Arc::clone(&planned.schema);
        let stream = match self.engine.execute(planned).await {
            Ok(stream) => stream,
            Err(e) => {
                let e = status(e);
                tracked.fail(&e);
                return Err(e);
            }
        };
        // The query log counts the batches and records how the stream ended.
        let tracked = Arc::new(Mutex::new(Some(tracked)));
        let (on_batch, on_error, on_end) = (
            Arc::clone(&tracked),
            Arc::clone(&tracked),
            Arc::clone(&tracked),
        );
        let stream = stream
            .inspect(move |b| {
                if let (Ok(b), Some(t)) = (b, on_batch.lock().as_mut()) {
                    t.add(b.num_rows() as u64, b.get_array_memory_size() as u64);
                }
            })
            .map_err(move |e| {
                let e = df_to_status(e);
                if let Some(t) = on_error.lock().take() {
                    t.fail(&e);
                }
                FlightError::Tonic(Box::new(e))
            });
        let stream = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(flight_worker::service::MAX_FLIGHT_DATA_BYTES)
            .with_schema(schema)
            .build(stream)
            .map_err(Status::from);
        // The statement is observed when its stream ends (before the
        // client sees the end) or is dropped.
        let mut timer = Some(timer);
        let stream = stream.chain(futures::stream::poll_fn(move |_| {
            drop(timer.take());
            if let Some(t) = on_end.lock().take() {
                t.finish(None);
            }
            std::task::Poll::Ready(None)
        }));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn do_get_fallback(
        &self,
        _request: Request<Ticket>,
        message: Any,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Err(Status::invalid_argument(format!(
            "this ticket ({}) is not one this coordinator issued; shard tickets are read from the workers",
            message.type_url
        )))
    }

    async fn do_put_statement_update(
        &self,
        cmd: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        refuse_transaction(cmd.transaction_id.as_ref())?;
        metrics().query(QueryKind::Update);
        let _timer = StatementTimer::start();
        let tracked = self.track_update(&request, &cmd.query);
        self.run_update(tracked, &cmd.query, None).await
    }

    async fn do_put_prepared_statement_query(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let (sql, _) = self.open_handle(&cmd.prepared_statement_handle)?;
        let batches = collect_batches(request.into_inner()).await?;
        let params = concat(&batches)?;
        let handle = self.new_handle(&sql, params.as_ref())?;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(handle),
        })
    }

    async fn do_put_prepared_statement_update(
        &self,
        cmd: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        metrics().query(QueryKind::Prepared);
        let _timer = StatementTimer::start();
        let (sql, bound) = self.open_handle(&cmd.prepared_statement_handle)?;
        let tracked = self.track_update(&request, &sql);
        let batches = collect_batches(request.into_inner()).await?;
        let params = match concat(&batches)? {
            Some(p) if p.num_rows() > 0 => Some(p),
            _ => bound,
        };
        self.run_update(tracked, &sql, params.as_ref()).await
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        metrics().query(QueryKind::Ingest);
        let _timer = StatementTimer::start();
        let tracked = self.track_update(&request, &format!("-- bulk ingest into {}", cmd.table));
        logged(
            tracked,
            crate::ingest_cmd::ingest(&self.engine, cmd, request.into_inner()).await,
        )
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        refuse_transaction(query.transaction_id.as_ref())?;
        let sql = query.query;
        let prepared = self.prepare(&sql, &request).await;
        if let Err(e) = &prepared {
            // A statement that fails already here (ADBC and JDBC prepare
            // every statement) is a failed query in system.queries too.
            self.engine
                .query_log
                .start("", &user_of(&request), &sql)
                .fail(e);
        }
        prepared
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        // Handles are self-contained: nothing to free.
        Ok(())
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.batch_info(schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG);
        Self::batch_stream(b.build())
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.batch_info(schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append(CATALOG, SCHEMA);
        b.append(CATALOG, crate::system::SYSTEM_SCHEMA);
        Self::batch_stream(b.build())
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        self.batch_info(schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Self::batch_stream(self.tables_batch(query))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        self.batch_info(schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        b.append("SYSTEM TABLE");
        b.append("TABLE");
        Self::batch_stream(b.build())
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(&self.sql_info).schema();
        self.batch_info(schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Self::batch_stream(query.into_builder(&self.sql_info).build())
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.batch_info(metadata::primary_keys_schema(), query, request.into_inner())
    }

    async fn do_get_primary_keys(
        &self,
        _query: CommandGetPrimaryKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Self::batch_stream(Ok(metadata::empty(metadata::primary_keys_schema())))
    }

    async fn get_flight_info_imported_keys(
        &self,
        query: CommandGetImportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.batch_info(metadata::foreign_keys_schema(), query, request.into_inner())
    }

    async fn do_get_imported_keys(
        &self,
        _query: CommandGetImportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Self::batch_stream(Ok(metadata::empty(metadata::foreign_keys_schema())))
    }

    async fn get_flight_info_exported_keys(
        &self,
        query: CommandGetExportedKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.batch_info(metadata::foreign_keys_schema(), query, request.into_inner())
    }

    async fn do_get_exported_keys(
        &self,
        _query: CommandGetExportedKeys,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Self::batch_stream(Ok(metadata::empty(metadata::foreign_keys_schema())))
    }

    async fn get_flight_info_cross_reference(
        &self,
        query: CommandGetCrossReference,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.batch_info(metadata::foreign_keys_schema(), query, request.into_inner())
    }

    async fn do_get_cross_reference(
        &self,
        _query: CommandGetCrossReference,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Self::batch_stream(Ok(metadata::empty(metadata::foreign_keys_schema())))
    }

    async fn get_flight_info_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder(&self.xdbc_types).schema();
        self.batch_info(schema, query, request.into_inner())
    }

    async fn do_get_xdbc_type_info(
        &self,
        query: CommandGetXdbcTypeInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Self::batch_stream(query.into_builder(&self.xdbc_types).build())
    }

    async fn do_action_cancel_query(
        &self,
        query: ActionCancelQueryRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCancelQueryResult, Status> {
        let info = FlightInfo::decode(query.info.as_ref())
            .map_err(|e| Status::invalid_argument(format!("malformed FlightInfo: {e}")))?;
        // CancelStatus and CancelResult share their numbering.
        Ok(ActionCancelQueryResult {
            result: self.cancel(&info).await as i32,
        })
    }

    async fn do_action_begin_transaction(
        &self,
        _query: ActionBeginTransactionRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginTransactionResult, Status> {
        Err(Status::unimplemented(NO_TRANSACTIONS))
    }

    async fn do_action_end_transaction(
        &self,
        _query: ActionEndTransactionRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented(NO_TRANSACTIONS))
    }

    async fn do_action_begin_savepoint(
        &self,
        _query: ActionBeginSavepointRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionBeginSavepointResult, Status> {
        Err(Status::unimplemented(NO_TRANSACTIONS))
    }

    async fn do_action_end_savepoint(
        &self,
        _query: ActionEndSavepointRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        Err(Status::unimplemented(NO_TRANSACTIONS))
    }

    async fn list_custom_actions(&self) -> Option<Vec<Result<arrow_flight::ActionType, Status>>> {
        let action = |name: &str, description: &str| {
            Ok(arrow_flight::ActionType {
                r#type: name.to_string(),
                description: description.to_string(),
            })
        };
        Some(vec![
            action(
                CANCEL_FLIGHT_INFO,
                "Cancel the query behind a FlightInfo, on the coordinator and the workers.",
            ),
            action(
                flight_worker::session::ACTION_SET,
                "Set session options: catalog, schema, distributed (bool).",
            ),
            action(
                flight_worker::session::ACTION_GET,
                "Get the session options.",
            ),
            action(flight_worker::session::ACTION_CLOSE, "Close the session."),
        ])
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

/// The Flight RPC action cancelling a FlightInfo.
const CANCEL_FLIGHT_INFO: &str = "CancelFlightInfo";

/// One row of NULL parameters of the given types.
fn null_params(schema: &SchemaRef) -> Result<RecordBatch, Status> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| arrow::array::new_null_array(f.data_type(), 1))
        .collect();
    RecordBatch::try_new_with_options(
        Arc::clone(schema),
        columns,
        &arrow::array::RecordBatchOptions::new().with_row_count(Some(1)),
    )
    .map_err(|e| Status::internal(e.to_string()))
}

/// The coordinator's Flight service: [`FlightSqlServiceImpl`] behind a
/// front that validates commands and tickets first, so malformed protobuf
/// is INVALID_ARGUMENT with a readable message (arrow-flight's dispatcher
/// would answer INTERNAL with a debug dump).
pub struct CoordinatorFlightService {
    inner: FlightSqlServiceImpl,
}

impl CoordinatorFlightService {
    pub fn new(inner: FlightSqlServiceImpl) -> Self {
        Self { inner }
    }
}

fn decode_command(bytes: &[u8], what: &str) -> Result<arrow_flight::sql::Command, Status> {
    let any = Any::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))?;
    arrow_flight::sql::Command::try_from(any)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
}

/// The `fsql_queries_total` kind of a `GetFlightInfo` command.
fn info_kind(command: &arrow_flight::sql::Command) -> QueryKind {
    use arrow_flight::sql::Command;
    match command {
        Command::CommandStatementQuery(_) => QueryKind::Query,
        Command::CommandPreparedStatementQuery(_) => QueryKind::Prepared,
        _ => QueryKind::Metadata,
    }
}

type Resp<T> = Result<Response<T>, Status>;

#[tonic::async_trait]
impl FlightService for CoordinatorFlightService {
    type HandshakeStream = <FlightSqlServiceImpl as FlightService>::HandshakeStream;
    type ListFlightsStream = <FlightSqlServiceImpl as FlightService>::ListFlightsStream;
    type DoGetStream = <FlightSqlServiceImpl as FlightService>::DoGetStream;
    type DoPutStream = <FlightSqlServiceImpl as FlightService>::DoPutStream;
    type DoActionStream = <FlightSqlServiceImpl as FlightService>::DoActionStream;
    type ListActionsStream = <FlightSqlServiceImpl as FlightService>::ListActionsStream;
    type DoExchangeStream = <FlightSqlServiceImpl as FlightService>::DoExchangeStream;

    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Resp<Self::HandshakeStream> {
        metrics().counted(FlightService::handshake(&self.inner, request).await)
    }

    async fn list_flights(
        &self,
        request: Request<arrow_flight::Criteria>,
    ) -> Resp<Self::ListFlightsStream> {
        metrics().counted(FlightService::list_flights(&self.inner, request).await)
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Resp<FlightInfo> {
        let result: Resp<FlightInfo> = async {
            let command = decode_command(&request.get_ref().cmd, "Flight SQL command")?;
            metrics().query(info_kind(&command));
            FlightService::get_flight_info(&self.inner, request).await
        }
        .await;
        metrics().counted(result)
    }

    /// Planning is quick, so a poll completes at once: the reply holds the
    /// whole FlightInfo and no descriptor to poll again. (Metrics are
    /// counted by `get_flight_info`.)
    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Resp<arrow_flight::PollInfo> {
        let info = self.get_flight_info(request).await?.into_inner();
        Ok(Response::new(arrow_flight::PollInfo {
            info: Some(info),
            flight_descriptor: None,
            progress: Some(1.0),
            expiration_time: None,
        }))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Resp<arrow_flight::SchemaResult> {
        let result: Resp<arrow_flight::SchemaResult> = async {
            let schema = self.inner.schema_of(&request).await?;
            let schema = schema_ipc(&schema)?;
            Ok(Response::new(arrow_flight::SchemaResult { schema }))
        }
        .await;
        metrics().counted(result)
    }

    async fn do_get(&self, request: Request<Ticket>) -> Resp<Self::DoGetStream> {
        let result: Resp<Self::DoGetStream> = async {
            let command = decode_command(
                &request.get_ref().ticket,
                "ticket (not one this coordinator issued)",
            )?;
            let bytes = match command {
                arrow_flight::sql::Command::TicketStatementQuery(_) => &metrics().bytes_merged,
                _ => &metrics().bytes_metadata,
            };
            let stream = FlightService::do_get(&self.inner, request).await?;
            // Bytes streamed and errors ending the stream.
            let stream = stream.into_inner().inspect(move |item| match item {
                Ok(data) => bytes.inc_by((data.data_header.len() + data.data_body.len()) as u64),
                Err(status) => metrics().error(status.code()),
            });
            Ok(Response::new(Box::pin(stream) as Self::DoGetStream))
        }
        .await;
        metrics().counted(result)
    }

    async fn do_put(
        &self,
        request: Request<Streaming<arrow_flight::FlightData>>,
    ) -> Resp<Self::DoPutStream> {
        metrics().counted(FlightService::do_put(&self.inner, request).await)
    }

    async fn do_action(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Resp<Self::DoActionStream> {
        metrics().counted(self.action(request).await)
    }

    async fn list_actions(
        &self,
        request: Request<arrow_flight::Empty>,
    ) -> Resp<Self::ListActionsStream> {
        let result: Resp<Self::ListActionsStream> = async {
            let actions = FlightService::list_actions(&self.inner, request)
                .await?
                .into_inner()
                .try_filter(|a| {
                    futures::future::ready(!UNOFFERED_ACTIONS.contains(&a.r#type.as_str()))
                });
            Ok(Response::new(Box::pin(actions) as Self::ListActionsStream))
        }
        .await;
        metrics().counted(result)
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<arrow_flight::FlightData>>,
    ) -> Resp<Self::DoExchangeStream> {
        metrics().counted(FlightService::do_exchange(&self.inner, request).await)
    }
}

impl CoordinatorFlightService {
    /// `DoAction`: session actions, `CancelFlightInfo`, then the Flight SQL
    /// actions.
    async fn action(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Resp<<Self as FlightService>::DoActionStream> {
        let kind = request.get_ref().r#type.as_str();
        if Sessions::handles(kind) {
            let reply = self
                .inner
                .sessions
                .action(request.get_ref(), request.metadata())?;
            return Ok(reply.into_response(|results| {
                Box::pin(futures::stream::iter(results.into_iter().map(Ok)))
                    as <Self as FlightService>::DoActionStream
            }));
        }
        if kind == CANCEL_FLIGHT_INFO {
            let cancel =
                arrow_flight::CancelFlightInfoRequest::decode(request.get_ref().body.as_ref())
                    .map_err(|e| {
                        Status::invalid_argument(format!("malformed CancelFlightInfoRequest: {e}"))
                    })?;
            let info = cancel.info.ok_or_else(|| {
                Status::invalid_argument("CancelFlightInfoRequest without a FlightInfo")
            })?;
            let result = arrow_flight::CancelFlightInfoResult::new(self.inner.cancel(&info).await);
            let body = arrow_flight::Result {
                body: result.encode_to_vec().into(),
            };
            return Ok(Response::new(Box::pin(futures::stream::once(async {
                Ok(body)
            }))));
        }
        FlightService::do_action(&self.inner, request).await
    }
}
