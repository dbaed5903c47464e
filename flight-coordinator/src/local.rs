//! The embedded local cluster: a coordinator and N workers in one process,
//! on loopback, with the embedded registry (workers announce themselves in
//! it; the catalog is kept in `<data_dir>/coordinator/catalog.pb`). No etcd,
//! no other setup.
//!
//! Without users it runs without authentication, and then only on a
//! loopback address. With TLS the workers serve TLS with the same
//! certificate, so no plaintext location is ever advertised.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use flight_worker::membership::{self, Membership};
use flight_worker::registry::{DEFAULT_TTL, EmbeddedRegistry, Registry};
use flight_worker::{WorkerConfig, WorkerHandle};
use futures::StreamExt;
use tokio::net::TcpListener;

use crate::engine::{Engine, EngineConfig};
use crate::error::{Error, Result};
use crate::server::{CoordinatorConfig, CoordinatorHandle, Security};

#[derive(Debug, Clone)]
pub struct LocalConfig {
    pub workers: usize,
    pub data_dir: PathBuf,
    pub engine: EngineConfig,
    /// DuckDB threads per worker (default: DuckDB's own choice).
    pub worker_threads: Option<usize>,
    pub worker_memory_limit: Option<String>,
    /// Users, TLS and message size, for the coordinator and its workers.
    pub security: Security,
}

pub struct LocalCluster {
    pub coordinator: CoordinatorHandle,
    pub workers: Vec<LocalWorker>,
    pub registry: Arc<dyn Registry>,
}

/// A worker of a local cluster and its place in the registry.
pub struct LocalWorker {
    pub handle: WorkerHandle,
    membership: Option<Membership>,
}

impl LocalWorker {
    pub fn id(&self) -> &str {
        self.handle.id()
    }

    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    pub fn url(&self) -> String {
        self.handle.url()
    }

    /// Leaves the live set, then stops the worker.
    pub async fn shutdown(mut self) {
        if let Some(m) = self.membership.take() {
            m.leave().await;
        }
        self.handle.shutdown().await;
    }
}

impl LocalCluster {
    /// Starts the workers on ephemeral loopback ports and the coordinator
    /// on `listener`.
    pub async fn start(config: LocalConfig, listener: TcpListener) -> Result<Self> {
        if config.workers == 0 {
            return Err(Error::InvalidArgument(
                "a local cluster needs at least one worker".into(),
            ));
        }
        let addr = listener
            .local_addr()
            .map_err(|e| Error::Internal(format!("listener address: {e}")))?;
        if !config.security.require_auth && !addr.ip().is_loopback() {
            return Err(Error::Config(format!(
                "refusing to serve {addr} without authentication: a local cluster without \
                 users only listens on loopback (127.0.0.1 or ::1); configure [[users]] \
                 (--config) or listen on 127.0.0.1"
            )));
        }
        std::fs::create_dir_all(&config.data_dir)
            .map_err(|e| Error::Internal(format!("creating {}: {e}", config.data_dir.display())))?;
        let secret = local_secret(&config.data_dir)?;
        let registry: Arc<dyn Registry> = Arc::new(
            EmbeddedRegistry::with_catalog_file(
                config.data_dir.join("coordinator").join("catalog.pb"),
            )
            .map_err(|e| Error::Config(e.to_string()))?,
        );
        let mut workers = Vec::new();
        for i in 0..config.workers {
            let l = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| Error::Internal(format!("binding a worker port: {e}")))?;
            let handle = flight_worker::start(
                WorkerConfig {
                    data_dir: config.data_dir.join(format!("worker-{i}")),
                    secret: secret.clone(),
                    memory_limit: config.worker_memory_limit.clone(),
                    threads: config.worker_threads,
                    tls: config.security.tls.clone(),
                    auth: config.security.auth.clone(),
                    max_message_size: config.security.max_message_size,
                },
                l,
            )
            .await
            .map_err(|e| Error::Internal(format!("starting worker {i}: {e}")))?;
            let capacity = config.worker_threads.unwrap_or(1) as u32;
            let membership =
                membership::join(&registry, &handle, handle.url(), DEFAULT_TTL, capacity)
                    .await
                    .map_err(|e| Error::Internal(format!("announcing worker {i}: {e}")))?;
            workers.push(LocalWorker {
                handle,
                membership: Some(membership),
            });
        }
        let coordinator = crate::server::start(
            CoordinatorConfig {
                secret,
                engine: config.engine,
                security: config.security,
            },
            Arc::clone(&registry),
            listener,
        )
        .await?;
        Ok(Self {
            coordinator,
            workers,
            registry,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.coordinator.addr()
    }

    pub fn url(&self) -> String {
        self.coordinator.url()
    }

    pub fn engine(&self) -> &Arc<Engine> {
        self.coordinator.engine()
    }

    pub async fn shutdown(self) {
        self.coordinator.shutdown().await;
        for w in self.workers {
            w.shutdown().await;
        }
    }
}

/// The local cluster's secret, kept in its data dir so tickets survive a
/// restart.
fn local_secret(dir: &std::path::Path) -> Result<Bytes> {
    std::fs::create_dir_all(dir.join("coordinator"))
        .map_err(|e| Error::Internal(format!("creating {}: {e}", dir.display())))?;
    let path = dir.join("coordinator").join("secret");
    if let Ok(s) = std::fs::read(&path)
        && !s.is_empty()
    {
        return Ok(Bytes::from(s));
    }
    let secret: [u8; 32] = rand::random();
    let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    std::fs::write(&path, &hex)
        .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))?;
    Ok(Bytes::from(hex))
}

/// Generates TPC-H at scale factor `sf` and loads it through the cluster's
/// own ingest path. Tables that already exist are left alone.
pub async fn load_tpch(
    engine: &Engine,
    sf: f64,
    shards: u32,
    layout: crate::tpch::Layout,
) -> Result<()> {
    for table in crate::tpch::TABLES {
        if engine.catalog.table(table).is_some() {
            tracing::info!(table, "TPC-H table exists, not reloading");
            continue;
        }
        engine
            .execute_update(&crate::tpch::create_table_sql(table, shards, layout), None)
            .await?;
        let meta = engine
            .catalog
            .table(table)
            .ok_or_else(|| Error::Internal(format!("table {table} vanished")))?;
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let name = table.to_string();
        let generator = tokio::task::spawn_blocking(move || -> Result<()> {
            let batches = crate::tpch::generate(&name, sf, 64 * 1024).map_err(Error::Internal)?;
            for b in batches {
                if tx.blocking_send(Ok(b)).is_err() {
                    break;
                }
            }
            Ok(())
        });
        let started = std::time::Instant::now();
        let rows = engine
            .write(
                &meta,
                tokio_stream::wrappers::ReceiverStream::new(rx).boxed(),
            )
            .await?;
        generator
            .await
            .map_err(|e| Error::Internal(format!("TPC-H generator: {e}")))??;
        tracing::info!(
            table,
            rows,
            secs = started.elapsed().as_secs_f64(),
            "loaded TPC-H table"
        );
    }
    Ok(())
}
