//! A bare arrow-flight server, in process: `DoGet(ticket "i")` streams the
//! i-th list of batches from memory, encoded like the workers encode theirs.
//! The ceiling a Flight result stream can reach on this machine.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaResult, Ticket,
};
use futures::{Stream, StreamExt, TryStreamExt};
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

struct Bare {
    streams: Arc<Vec<Vec<RecordBatch>>>,
}

pub struct BareServer {
    addr: SocketAddr,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl BareServer {
    pub async fn start(streams: Vec<Vec<RecordBatch>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let token = shutdown.clone();
        let service = FlightServiceServer::new(Bare {
            streams: Arc::new(streams),
        })
        .max_encoding_message_size(usize::MAX);
        let incoming = TcpListenerStream::new(listener).map(|conn| {
            if let Ok(conn) = &conn {
                let _ = conn.set_nodelay(true);
            }
            conn
        });
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming_shutdown(incoming, token.cancelled())
                .await
                .unwrap();
        });
        Self {
            addr,
            shutdown,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    /// A FlightInfo with one endpoint per stream, at this server.
    pub fn flight_info(&self, streams: usize) -> FlightInfo {
        let mut info = FlightInfo::new();
        for i in 0..streams {
            info =
                info.with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(i.to_string())));
        }
        info
    }

    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = self.task.await;
    }
}

fn unimplemented<T>() -> Result<T, Status> {
    Err(Status::unimplemented("bare benchmark server: DoGet only"))
}

#[tonic::async_trait]
impl FlightService for Bare {
    type HandshakeStream = BoxStream<HandshakeResponse>;
    type ListFlightsStream = BoxStream<FlightInfo>;
    type DoGetStream = BoxStream<FlightData>;
    type DoPutStream = BoxStream<PutResult>;
    type DoExchangeStream = BoxStream<FlightData>;
    type DoActionStream = BoxStream<arrow_flight::Result>;
    type ListActionsStream = BoxStream<ActionType>;

    async fn handshake(
        &self,
        _: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        unimplemented()
    }
    async fn list_flights(
        &self,
        _: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        unimplemented()
    }
    async fn get_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        unimplemented()
    }
    async fn poll_flight_info(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        unimplemented()
    }
    async fn get_schema(
        &self,
        _: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        unimplemented()
    }
    async fn do_get(
        &self,
        request: Request<Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let i: usize = std::str::from_utf8(&request.get_ref().ticket)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| Status::invalid_argument("ticket: a stream number"))?;
        let batches = self
            .streams
            .get(i)
            .ok_or_else(|| Status::not_found("no such stream"))?
            .clone();
        let mut builder = FlightDataEncoderBuilder::new()
            .with_max_flight_data_size(flight_worker::service::MAX_FLIGHT_DATA_BYTES);
        if let Some(b) = batches.first() {
            builder = builder.with_schema(b.schema());
        }
        let stream = builder
            .build(futures::stream::iter(batches.into_iter().map(Ok)))
            .map_err(Status::from);
        Ok(Response::new(stream.boxed()))
    }
    async fn do_put(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        unimplemented()
    }
    async fn do_exchange(
        &self,
        _: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        unimplemented()
    }
    async fn do_action(
        &self,
        _: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        unimplemented()
    }
    async fn list_actions(
        &self,
        _: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        unimplemented()
    }
}
