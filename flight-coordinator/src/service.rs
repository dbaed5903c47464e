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
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    SqlSupportedTransaction, TicketStatementQuery,
};
use arrow_flight::{
    FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use bytes::Bytes;
use futures::{Stream, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::engine::{CATALOG, Engine, PlannedQuery, SCHEMA, StatementKind};
use crate::error::{Error, df_to_status};
use crate::gather::shard_ticket;
use crate::planner::Distributed;

/// How long a prepared-statement handle stays valid.
const HANDLE_TTL: Duration = Duration::from_secs(12 * 3600);
/// How long a planned merged query waits for its DoGet before re-planning.
const PLAN_CACHE_TTL: Duration = Duration::from_secs(300);
const PLAN_CACHE_MAX: usize = 1024;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

pub struct FlightSqlServiceImpl {
    engine: Arc<Engine>,
    sql_info: SqlInfoData,
    plans: Mutex<HashMap<String, (Instant, PlannedQuery)>>,
}

fn sql_info() -> Result<SqlInfoData, Status> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "fsql-cluster");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "58");
    b.append(SqlInfo::FlightSqlServerReadOnly, false);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::FlightSqlServerStatementTimeout, 0i32);
    b.append(SqlInfo::FlightSqlServerTransactionTimeout, 0i32);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, true);
    b.append(SqlInfo::SqlIdentifierCase, 1i32); // case-insensitive (lowercased)
    b.append(SqlInfo::SqlQuotedIdentifierCase, 3i32); // case-sensitive
    b.append(SqlInfo::SqlSchemaTerm, "schema");
    b.append(SqlInfo::SqlCatalogTerm, "catalog");
    b.append(SqlInfo::SqlProcedureTerm, "procedure");
    b.build()
        .map_err(|e| Status::internal(format!("building SqlInfo: {e}")))
}

fn status(e: Error) -> Status {
    e.into()
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
            sql_info: sql_info()?,
            plans: Mutex::new(HashMap::new()),
        })
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
    ) -> Result<FlightInfo, Status> {
        if crate::engine::classify(sql).map_err(status)? == StatementKind::Update {
            // DDL/DML sent as a query (ADBC does this): run it now and
            // answer with an empty result.
            let rows = self
                .engine
                .execute_update(sql, params.as_ref())
                .await
                .map_err(status)?;
            return FlightInfo::new()
                .try_with_schema(&Schema::empty())
                .map(|i| i.with_descriptor(descriptor).with_total_records(rows))
                .map_err(|e| Status::internal(e.to_string()));
        }
        let query_id = uuid::Uuid::new_v4().to_string();
        let planned = self
            .engine
            .plan_query(sql, params.as_ref(), &query_id)
            .await
            .map_err(status)?;
        let mut info = FlightInfo::new()
            .try_with_schema(&planned.schema)
            .map_err(|e| Status::internal(e.to_string()))?
            .with_descriptor(descriptor)
            .with_total_records(-1)
            .with_total_bytes(-1);
        match &planned.plan {
            Distributed::Direct {
                fragment, routes, ..
            } => {
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
            }
            Distributed::Merged(_) => {
                let mut t = fsql_proto::StatementTicket {
                    version: fsql_proto::WIRE_VERSION,
                    query_id: query_id.clone(),
                    sql: sql.to_string(),
                    parameters: params_to_bytes(params.as_ref())?,
                    expires_at_ms: fsql_proto::now_ms()
                        + crate::workers::TICKET_TTL.as_millis() as i64,
                    signature: Bytes::new(),
                    distributed: true,
                };
                let handle = self.signer().sign(&mut t);
                let ticket = TicketStatementQuery {
                    statement_handle: handle,
                };
                info = info.with_endpoint(
                    FlightEndpoint::new().with_ticket(Ticket::new(ticket.as_any().encode_to_vec())),
                );
                info = info.with_ordered(true);
                let mut plans = self.plans.lock();
                let now = Instant::now();
                plans.retain(|_, (t, _)| now.duration_since(*t) < PLAN_CACHE_TTL);
                if plans.len() < PLAN_CACHE_MAX {
                    plans.insert(query_id, (now, planned));
                }
            }
        }
        Ok(info)
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
        let mut b = query.into_builder();
        for t in self.engine.catalog.tables() {
            b.append(CATALOG, SCHEMA, &t.name, "TABLE", &t.schema)?;
        }
        b.build()
    }
}

#[tonic::async_trait]
impl FlightSqlService for FlightSqlServiceImpl {
    type FlightService = FlightSqlServiceImpl;

    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<BoxStream<HandshakeResponse>>, Status> {
        // Local and static clusters run without client authentication.
        let response = HandshakeResponse {
            protocol_version: 0,
            payload: Bytes::new(),
        };
        Ok(Response::new(Box::pin(futures::stream::once(async {
            Ok(response)
        }))))
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let info = self
            .flight_info(&query.query, None, request.into_inner())
            .await?;
        Ok(Response::new(info))
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let (sql, params) = self.open_handle(&cmd.prepared_statement_handle)?;
        let info = self.flight_info(&sql, params, request.into_inner()).await?;
        Ok(Response::new(info))
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let t: fsql_proto::StatementTicket = self
            .signer()
            .verify(&ticket.statement_handle)
            .map_err(|e| status(e.into()))?;
        let cached = self.plans.lock().remove(&t.query_id).map(|(_, p)| p);
        let planned = match cached {
            Some(p) => p,
            None => {
                let params = params_from_bytes(&t.parameters)?;
                self.engine
                    .plan_query(&t.sql, params.as_ref(), &t.query_id)
                    .await
                    .map_err(status)?
            }
        };
        let schema = Arc::clone(&planned.schema);
        let stream = self.engine.execute(planned).await.map_err(status)?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(stream.map_err(|e| FlightError::Tonic(Box::new(df_to_status(e)))))
            .map_err(Status::from);
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
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.engine
            .execute_update(&cmd.query, None)
            .await
            .map_err(status)
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
        let (sql, bound) = self.open_handle(&cmd.prepared_statement_handle)?;
        let batches = collect_batches(request.into_inner()).await?;
        let params = match concat(&batches)? {
            Some(p) if p.num_rows() > 0 => Some(p),
            _ => bound,
        };
        self.engine
            .execute_update(&sql, params.as_ref())
            .await
            .map_err(status)
    }

    async fn do_put_statement_ingest(
        &self,
        cmd: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        crate::ingest_cmd::ingest(&self.engine, cmd, request.into_inner())
            .await
            .map_err(status)
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let sql = query.query;
        let kind = crate::engine::classify(&sql).map_err(status)?;
        let parameter_schema = self.engine.parameter_schema(&sql).await.map_err(status)?;
        let dataset_schema = match kind {
            StatementKind::Update => Bytes::new(),
            StatementKind::Query => {
                // Plan with NULL parameters of the right types to learn the
                // result schema.
                let planned = self
                    .engine
                    .plan_query(&sql, Some(&null_params(&parameter_schema)?), "prepare")
                    .await
                    .map_err(status)?;
                schema_ipc(&planned.schema)?
            }
        };
        let parameter_schema = if parameter_schema.fields().is_empty() {
            Bytes::new()
        } else {
            schema_ipc(&parameter_schema)?
        };
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.new_handle(&sql, None)?,
            dataset_schema,
            parameter_schema,
        })
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

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

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

fn decode_command(bytes: &[u8], what: &str) -> Result<(), Status> {
    let any = Any::decode(bytes)
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))?;
    arrow_flight::sql::Command::try_from(any)
        .map(|_| ())
        .map_err(|e| Status::invalid_argument(format!("malformed {what}: {e}")))
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
        FlightService::handshake(&self.inner, request).await
    }

    async fn list_flights(
        &self,
        request: Request<arrow_flight::Criteria>,
    ) -> Resp<Self::ListFlightsStream> {
        FlightService::list_flights(&self.inner, request).await
    }

    async fn get_flight_info(&self, request: Request<FlightDescriptor>) -> Resp<FlightInfo> {
        decode_command(&request.get_ref().cmd, "Flight SQL command")?;
        FlightService::get_flight_info(&self.inner, request).await
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Resp<arrow_flight::PollInfo> {
        FlightService::poll_flight_info(&self.inner, request).await
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Resp<arrow_flight::SchemaResult> {
        FlightService::get_schema(&self.inner, request).await
    }

    async fn do_get(&self, request: Request<Ticket>) -> Resp<Self::DoGetStream> {
        decode_command(
            &request.get_ref().ticket,
            "ticket (not one this coordinator issued)",
        )?;
        FlightService::do_get(&self.inner, request).await
    }

    async fn do_put(
        &self,
        request: Request<Streaming<arrow_flight::FlightData>>,
    ) -> Resp<Self::DoPutStream> {
        FlightService::do_put(&self.inner, request).await
    }

    async fn do_action(
        &self,
        request: Request<arrow_flight::Action>,
    ) -> Resp<Self::DoActionStream> {
        FlightService::do_action(&self.inner, request).await
    }

    async fn list_actions(
        &self,
        request: Request<arrow_flight::Empty>,
    ) -> Resp<Self::ListActionsStream> {
        FlightService::list_actions(&self.inner, request).await
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<arrow_flight::FlightData>>,
    ) -> Resp<Self::DoExchangeStream> {
        FlightService::do_exchange(&self.inner, request).await
    }
}
