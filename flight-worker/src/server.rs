//! Starting and stopping a worker.
//!
//! [`start`] opens the database and serves the Flight service on a listener
//! the caller bound (port 0 in tests, the configured address in the
//! binary, ephemeral ports in the coordinator's `local` mode). The returned
//! [`WorkerHandle`] shuts it down gracefully; [`run`] is the same for callers
//! that only want to wait for a shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use fsql_proto::sign::Signer;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::{CancellationToken, DropGuard};
use tokio_util::task::TaskTracker;

use arrow_flight::flight_service_server::FlightServiceServer;

use crate::auth::{AuthLayer, AuthMode, Authenticator};
use crate::config::WorkerConfig;
use crate::error::{Error, Result};
use crate::service::WorkerService;
use crate::storage::Storage;

/// How long a shutdown waits for open streams before cutting them off.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// How long a shutdown waits for connections after cutting streams off.
const SHUTDOWN_HARD: Duration = Duration::from_secs(5);

/// Opens the worker's database and serves the Flight service on `listener`
/// until [`WorkerHandle::shutdown`].
pub async fn start(config: WorkerConfig, listener: TcpListener) -> Result<WorkerHandle> {
    config.validate()?;
    let addr = listener.local_addr().map_err(Error::Listener)?;
    let signer = Signer::new(config.secret.clone());
    let authenticator =
        Authenticator::new(&signer, &config.auth).map_err(|e| Error::Config(e.to_string()))?;
    let auth_layer = AuthLayer::new(Arc::new(authenticator), AuthMode::IfPresent);
    let max_message_size = config.max_message_size;
    let tls = config.tls.clone();
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        builder = builder
            .tls_config(tls.server())
            .map_err(|e| Error::Config(format!("TLS certificate or key: {e}")))?;
    }
    let storage = tokio::task::spawn_blocking(move || Storage::open(&config)).await??;
    let storage = Arc::new(storage);
    let id = storage.worker_id().to_string();

    let tasks = TaskTracker::new();
    let stop = CancellationToken::new();
    let abort = CancellationToken::new();
    let service = WorkerService::new(Arc::clone(&storage), signer, tasks.clone(), abort.clone());
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(conn) = &conn {
            // Small messages (actions, the schema of a stream) must not wait
            // for Nagle.
            let _ = conn.set_nodelay(true);
        }
        conn
    });
    let server = FlightServiceServer::new(service)
        .max_decoding_message_size(max_message_size)
        .max_encoding_message_size(max_message_size.max(crate::config::DEFAULT_MAX_MESSAGE_SIZE));
    let server = tokio::spawn(
        builder
            .layer(auth_layer)
            .add_service(server)
            .serve_with_incoming_shutdown(incoming, stop.clone().cancelled_owned()),
    );
    tracing::info!(worker_id = %id, %addr, tls = tls.is_some(), db = %storage.path().display(), "worker serving");
    Ok(WorkerHandle {
        id,
        addr,
        tls: tls.is_some(),
        abort,
        tasks,
        storage,
        server: Some(server),
        _stop_on_drop: stop.clone().drop_guard(),
        stop,
    })
}

/// Starts a worker and serves until `shutdown` completes (or the server
/// fails), then shuts down gracefully.
pub async fn run(
    config: WorkerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    start(config, listener).await?.run_until(shutdown).await
}

/// A running worker.
#[derive(Debug)]
pub struct WorkerHandle {
    id: String,
    addr: SocketAddr,
    tls: bool,
    /// Stops accepting connections and requests.
    stop: CancellationToken,
    /// Cuts open streams off and interrupts their queries.
    abort: CancellationToken,
    tasks: TaskTracker,
    storage: Arc<Storage>,
    server: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
    /// A handle dropped without `shutdown` still stops accepting requests.
    _stop_on_drop: DropGuard,
}

impl WorkerHandle {
    /// The stable worker id (kept in the data directory).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The worker's database.
    pub fn storage(&self) -> Arc<Storage> {
        Arc::clone(&self.storage)
    }

    /// The address the worker listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The Flight URL of the worker, `grpc://ip:port` (`grpc+tls://` when it
    /// serves TLS).
    pub fn url(&self) -> String {
        if self.tls {
            format!("grpc+tls://{}", self.addr)
        } else {
            format!("grpc://{}", self.addr)
        }
    }

    /// Serves until `shutdown` completes or the server fails, then shuts
    /// down gracefully. A server failure is returned.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<()> {
        let failed = match self.server.as_mut() {
            Some(server) => tokio::select! {
                () = shutdown => None,
                served = server => Some(flatten(served)),
            },
            None => None,
        };
        if failed.is_some() {
            // The server task is finished; there is nothing to wait for.
            self.server = None;
        }
        self.shutdown_within(SHUTDOWN_GRACE).await;
        match failed {
            Some(Err(e)) => Err(e),
            _ => Ok(()),
        }
    }

    /// Stops accepting work, lets open streams finish (up to
    /// [`SHUTDOWN_GRACE`], then cuts them off with an error and interrupts
    /// their queries), waits for DuckDB to be idle and closes the database.
    pub async fn shutdown(self) {
        self.shutdown_within(SHUTDOWN_GRACE).await;
    }

    /// [`Self::shutdown`] with another grace period for open streams.
    pub async fn shutdown_within(mut self, grace: Duration) {
        tracing::info!(worker_id = %self.id, "worker shutting down");
        self.stop.cancel();
        if let Some(mut server) = self.server.take() {
            let served = match tokio::time::timeout(grace, &mut server).await {
                Ok(served) => Some(served),
                Err(_) => {
                    tracing::warn!("streams still open after {grace:?}; cutting them off");
                    self.abort.cancel();
                    match tokio::time::timeout(SHUTDOWN_HARD, &mut server).await {
                        Ok(served) => Some(served),
                        Err(_) => {
                            tracing::warn!("connections still open; closing the server anyway");
                            server.abort();
                            None
                        }
                    }
                }
            };
            if let Some(Err(e)) = served.map(flatten) {
                tracing::error!("gRPC server: {e}");
            }
        }
        // Nothing may use the database once this returns.
        self.abort.cancel();
        let storage = Arc::clone(&self.storage);
        if let Err(e) = tokio::task::spawn_blocking(move || storage.close()).await {
            tracing::error!("closing the database: {e}");
        }
        self.tasks.close();
        self.tasks.wait().await;
        // Every connection is closed now, and with the last one the database
        // file (after a checkpoint).
        self.storage.release();
        tracing::info!(worker_id = %self.id, "worker stopped");
    }
}

fn flatten(
    served: std::result::Result<Result<(), tonic::transport::Error>, tokio::task::JoinError>,
) -> Result<()> {
    Ok(served??)
}
