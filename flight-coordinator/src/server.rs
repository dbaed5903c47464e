//! Starting a coordinator: catalog, worker pool, engine, Flight SQL server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use bytes::Bytes;
use fsql_proto::sign::Signer;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, WorkerInfo};
use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::service::{CoordinatorFlightService, FlightSqlServiceImpl};
use crate::workers::WorkerPool;

/// Largest message a client may send (ingest batches, parameters).
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The cluster secret shared with the workers.
    pub secret: Bytes,
    /// Where the catalog is kept; `None` keeps it in memory only.
    pub data_dir: Option<PathBuf>,
    pub engine: EngineConfig,
}

/// A running coordinator.
pub struct CoordinatorHandle {
    addr: SocketAddr,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl CoordinatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `grpc://ip:port`
    pub fn url(&self) -> String {
        format!("grpc://{}", self.addr)
    }

    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Stops accepting requests and waits for the server to finish.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), self.task).await;
    }
}

/// Learns each worker's id (retrying while it starts).
pub async fn discover_workers(pool: &WorkerPool, urls: &[String]) -> Result<Vec<WorkerInfo>> {
    let mut out = Vec::new();
    for url in urls {
        let mut attempt = 0;
        let id = loop {
            match pool.health(url).await {
                Ok(id) => break id,
                Err(e) if attempt < 50 => {
                    attempt += 1;
                    tracing::debug!(%url, "worker not ready yet: {e}");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(Error::Unavailable(format!("worker {url}: {e}"))),
            }
        };
        out.push(WorkerInfo {
            id,
            url: url.clone(),
        });
    }
    Ok(out)
}

/// Starts a coordinator over the given workers on `listener`.
pub async fn start(
    config: CoordinatorConfig,
    workers: Vec<String>,
    listener: TcpListener,
) -> Result<CoordinatorHandle> {
    let catalog = Arc::new(Catalog::open(config.data_dir.clone())?);
    let pool = Arc::new(WorkerPool::new(Signer::new(config.secret.clone())));
    catalog.set_workers(discover_workers(&pool, &workers).await?);
    let engine = Arc::new(Engine::new(catalog, pool, config.engine.clone())?);
    let service = FlightSqlServiceImpl::new(Arc::clone(&engine))
        .map_err(|e| Error::Internal(e.message().to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let server = FlightServiceServer::new(CoordinatorFlightService::new(service))
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let task = tokio::spawn(async move {
        let result = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(server)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), token.cancelled())
            .await;
        if let Err(e) = result {
            tracing::error!("coordinator server stopped: {e}");
        }
    });
    Ok(CoordinatorHandle {
        addr,
        engine,
        shutdown,
        task,
    })
}
