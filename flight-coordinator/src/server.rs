//! Starting a coordinator: catalog, worker pool, engine, Flight SQL server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use arrow_flight::flight_service_server::FlightServiceServer;
use bytes::Bytes;
use flight_worker::auth::{AuthConfig, AuthLayer, AuthMode, Authenticator};
use flight_worker::tls::TlsConfig;
use fsql_proto::sign::Signer;
use futures::StreamExt;
use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_util::sync::CancellationToken;

use crate::catalog::{Catalog, WorkerInfo};
use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::service::{CoordinatorFlightService, FlightSqlServiceImpl};
use crate::workers::WorkerPool;
use flight_worker::registry::{Registry, StaticRegistry, StaticWorker};

/// Default largest message a client may send (ingest batches, parameters).
pub const MAX_MESSAGE_BYTES: usize = flight_worker::config::DEFAULT_MAX_MESSAGE_SIZE;

/// Who may connect and how: users, TLS, message size.
#[derive(Debug, Clone)]
pub struct Security {
    /// Users (argon2 password hashes, hashed API tokens) and the lifetime of
    /// session tokens.
    pub auth: AuthConfig,
    /// Every call but `Handshake` needs a bearer token. Without it, nothing
    /// is checked (only for loopback `local` clusters and `serve --no-auth`).
    pub require_auth: bool,
    /// Serve TLS with this certificate and key (the `local` workers too).
    pub tls: Option<TlsConfig>,
    /// PEM CA bundle trusted for `grpc+tls://` workers; when unset and `tls`
    /// is set, the coordinator's own certificate file is trusted.
    pub tls_ca: Option<Vec<u8>>,
    /// Largest gRPC message accepted (DoPut batches) or sent.
    pub max_message_size: usize,
}

impl Default for Security {
    /// No authentication, plaintext, the default message size.
    fn default() -> Self {
        Self {
            auth: AuthConfig::default(),
            require_auth: false,
            tls: None,
            tls_ca: None,
            max_message_size: MAX_MESSAGE_BYTES,
        }
    }
}

impl Security {
    /// The CA bundle for TLS workers, if any.
    pub fn worker_ca(&self) -> Option<&[u8]> {
        self.tls_ca
            .as_deref()
            .or(self.tls.as_ref().map(|t| t.cert_pem.as_slice()))
    }
}

#[derive(Debug, Clone)]
pub struct CoordinatorConfig {
    /// The cluster secret shared with the workers.
    pub secret: Bytes,
    pub engine: EngineConfig,
    pub security: Security,
}

/// A running coordinator.
pub struct CoordinatorHandle {
    addr: SocketAddr,
    tls: bool,
    engine: Arc<Engine>,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl CoordinatorHandle {
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `grpc://ip:port`, or `grpc+tls://ip:port` when serving TLS.
    pub fn url(&self) -> String {
        if self.tls {
            format!("grpc+tls://{}", self.addr)
        } else {
            format!("grpc://{}", self.addr)
        }
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

/// The worker URLs of `serve --workers` as a static registry (ids learnt
/// from the workers) whose catalog is kept in `catalog_file`.
pub async fn static_registry(
    pool: &WorkerPool,
    urls: &[String],
    catalog_file: Option<PathBuf>,
) -> Result<Arc<dyn Registry>> {
    let workers = discover_workers(pool, urls)
        .await?
        .into_iter()
        .map(|w| StaticWorker {
            id: w.id,
            address: w.url,
        })
        .collect();
    Ok(Arc::new(
        StaticRegistry::new(workers, catalog_file).map_err(|e| Error::Config(e.to_string()))?,
    ))
}

/// The pool of channels to workers, trusting the configured CA for TLS ones.
pub fn worker_pool(config: &CoordinatorConfig) -> WorkerPool {
    let mut pool = WorkerPool::new(Signer::new(config.secret.clone()));
    if let Some(ca) = config.security.worker_ca() {
        pool = pool.with_tls(flight_worker::tls::client_config(ca));
    }
    pool
}

/// Starts a coordinator following `registry` (live workers and catalog) on
/// `listener`.
pub async fn start(
    config: CoordinatorConfig,
    registry: Arc<dyn Registry>,
    listener: TcpListener,
) -> Result<CoordinatorHandle> {
    let security = &config.security;
    let signer = Signer::new(config.secret.clone());
    let authenticator = Arc::new(
        Authenticator::new(&signer, &security.auth).map_err(|e| Error::Config(e.to_string()))?,
    );
    if security.require_auth && !authenticator.has_users() {
        return Err(Error::Config(
            "authentication is required but no users are configured ([[users]] in --config)".into(),
        ));
    }
    let pool = Arc::new(worker_pool(&config));
    let catalog = Arc::new(Catalog::open(registry, security.tls.is_some()).await?);
    let engine = Arc::new(Engine::new(catalog, pool, config.engine.clone())?);
    let service = FlightSqlServiceImpl::new(Arc::clone(&engine))
        .map_err(|e| Error::Internal(e.message().to_string()))?;
    let addr = listener
        .local_addr()
        .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
    let shutdown = CancellationToken::new();
    let token = shutdown.clone();
    let server = FlightServiceServer::new(CoordinatorFlightService::new(service))
        .max_decoding_message_size(security.max_message_size)
        .max_encoding_message_size(security.max_message_size.max(MAX_MESSAGE_BYTES));
    let mode = if security.require_auth {
        AuthMode::Required
    } else {
        AuthMode::Off
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &security.tls {
        builder = builder
            .tls_config(tls.server())
            .map_err(|e| Error::Config(format!("TLS certificate or key: {e}")))?;
    }
    let router = builder
        .layer(AuthLayer::new(authenticator, mode))
        .add_service(server);
    // `Server::tcp_nodelay` only applies to listeners tonic binds itself:
    // set it on every accepted connection, or each small response (a
    // FlightInfo, the schema message of a stream) waits for the client's
    // delayed ACK (40 ms on Linux).
    let incoming = TcpListenerStream::new(listener).map(|conn| {
        if let Ok(conn) = &conn {
            let _ = conn.set_nodelay(true);
        }
        conn
    });
    let task = tokio::spawn(async move {
        let result = router
            .serve_with_incoming_shutdown(incoming, token.cancelled())
            .await;
        if let Err(e) = result {
            tracing::error!("coordinator server stopped: {e}");
        }
    });
    Ok(CoordinatorHandle {
        addr,
        tls: config.security.tls.is_some(),
        engine,
        shutdown,
        task,
    })
}
