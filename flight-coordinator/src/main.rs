//! `flight-coordinator`: the cluster's Flight SQL endpoint.
//!
//! `local` starts an embedded cluster (coordinator + workers) in one
//! process; `serve` fronts workers started separately.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use flight_coordinator::engine::EngineConfig;
use flight_coordinator::local::{LocalCluster, LocalConfig};
use flight_coordinator::server::CoordinatorConfig;
use tokio::net::TcpListener;

#[derive(Parser, Debug)]
#[command(
    name = "flight-coordinator",
    version,
    about = "Arrow Flight SQL cluster coordinator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start an embedded cluster: the coordinator and N workers in one process.
    Local {
        /// Number of workers.
        #[arg(long, env = "FSQL_WORKERS", default_value_t = 2)]
        workers: usize,
        /// Address of the Flight SQL endpoint (port 0 picks a free port).
        #[arg(long, env = "FSQL_LISTEN", default_value = "127.0.0.1:32010")]
        listen: SocketAddr,
        /// Where the workers' DuckDB files and the catalog are kept.
        #[arg(long, env = "FSQL_DATA_DIR", default_value = "./data/local")]
        data_dir: PathBuf,
        /// Generate and load TPC-H at this scale factor (e.g. 0.1, 1).
        #[arg(long, env = "FSQL_DEMO_TPCH")]
        demo_tpch: Option<f64>,
        /// Shards per distributed demo table (default: one per worker).
        #[arg(long, env = "FSQL_DEMO_SHARDS")]
        demo_shards: Option<u32>,
        /// Demo table layout: `star` (only orders and lineitem distributed)
        /// or `distributed` (customer, part and partsupp distributed too).
        #[arg(long, env = "FSQL_DEMO_LAYOUT", default_value = "star")]
        demo_layout: DemoLayout,
        /// Merge every result at the coordinator (clients never read workers).
        #[arg(long, env = "FSQL_NO_DIRECT")]
        no_direct: bool,
        /// DuckDB threads per worker.
        #[arg(long, env = "FSQL_WORKER_THREADS")]
        worker_threads: Option<usize>,
        /// DuckDB memory limit per worker, e.g. 4GB.
        #[arg(long, env = "FSQL_WORKER_MEMORY_LIMIT")]
        worker_memory_limit: Option<String>,
    },
    /// Serve the Flight SQL endpoint for workers started separately.
    Serve {
        #[arg(long, env = "FSQL_LISTEN", default_value = "0.0.0.0:32010")]
        listen: SocketAddr,
        /// Worker addresses, HOST:PORT[,HOST:PORT...].
        #[arg(long, env = "FSQL_WORKERS", value_delimiter = ',', required = true)]
        workers: Vec<String>,
        /// Cluster secret shared with the workers (signs tickets).
        #[arg(long, env = "FSQL_SECRET", hide_env_values = true)]
        secret: String,
        /// Where the catalog is kept (default: in memory).
        #[arg(long, env = "FSQL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        #[arg(long, env = "FSQL_NO_DIRECT")]
        no_direct: bool,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum DemoLayout {
    Star,
    Distributed,
}

impl From<DemoLayout> for flight_coordinator::tpch::Layout {
    fn from(l: DemoLayout) -> Self {
        match l {
            DemoLayout::Star => Self::Star,
            DemoLayout::Distributed => Self::Distributed,
        }
    }
}

fn worker_url(addr: &str) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else {
        format!("grpc://{addr}")
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, Box<dyn std::error::Error>> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}").into())
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("FSQL_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Local {
            workers,
            listen,
            data_dir,
            demo_tpch,
            demo_shards,
            demo_layout,
            no_direct,
            worker_threads,
            worker_memory_limit,
        } => {
            let listener = bind(listen).await?;
            let cluster = LocalCluster::start(
                LocalConfig {
                    workers,
                    data_dir,
                    engine: EngineConfig {
                        direct: !no_direct,
                        default_shards: None,
                    },
                    worker_threads,
                    worker_memory_limit,
                },
                listener,
            )
            .await?;
            if let Some(sf) = demo_tpch {
                let shards = demo_shards.unwrap_or(workers as u32);
                tracing::info!(sf, shards, "loading TPC-H demo data");
                flight_coordinator::local::load_tpch(
                    cluster.engine(),
                    sf,
                    shards,
                    demo_layout.into(),
                )
                .await?;
            }
            println!("flight-coordinator listening on {}", cluster.url());
            shutdown_signal().await;
            tracing::info!("shutting down");
            cluster.shutdown().await;
        }
        Command::Serve {
            listen,
            workers,
            secret,
            data_dir,
            no_direct,
        } => {
            let listener = bind(listen).await?;
            let coordinator = flight_coordinator::server::start(
                CoordinatorConfig {
                    secret: secret.into_bytes().into(),
                    data_dir,
                    engine: EngineConfig {
                        direct: !no_direct,
                        default_shards: None,
                    },
                },
                workers.iter().map(|w| worker_url(w)).collect(),
                listener,
            )
            .await?;
            println!("flight-coordinator listening on {}", coordinator.url());
            shutdown_signal().await;
            coordinator.shutdown().await;
        }
    }
    Ok(())
}
