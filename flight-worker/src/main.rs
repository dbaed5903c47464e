//! `flight-worker`: serves this machine's shards to the coordinator.
//!
//! Parses the command line, starts logging (to stderr), binds, starts the
//! worker, prints one ready line to stdout and serves until Ctrl-C or
//! SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use flight_worker::registry::{self, RegistryOptions};
use flight_worker::{WorkerArgs, membership};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let args = WorkerArgs::parse();
    let filter = EnvFilter::try_new(&args.log).unwrap_or_else(|e| {
        eprintln!(
            "flight-worker: invalid log filter {:?} ({e}); using info",
            args.log
        );
        EnvFilter::new("info")
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    match serve(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("flight-worker: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: &WorkerArgs) -> Result<(), Box<dyn std::error::Error>> {
    let resolved = args.resolve()?;
    let listen = &resolved.listen;
    let capacity = resolved.config.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(usize::from)
            .unwrap_or(1)
    });
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("binding {listen}: {e}"))?;
    let worker = flight_worker::start(resolved.config, listener).await?;
    let membership = match &resolved.membership {
        Some(m) => {
            let options = RegistryOptions {
                cluster: m.cluster.clone(),
                ..RegistryOptions::default()
            };
            let registry = registry::connect(&m.registry, &options).await?;
            let address = advertised_url(&worker, m.advertise.as_deref())?;
            let capacity = u32::try_from(capacity).unwrap_or(u32::MAX);
            let membership =
                membership::join(&registry, &worker, address.clone(), m.lease_ttl, capacity)
                    .await?;
            println!(
                "flight-worker {} announced as {address} in {} (cluster {})",
                worker.id(),
                registry.describe(),
                m.cluster
            );
            Some(membership)
        }
        None => None,
    };
    println!(
        "flight-worker {} listening on {}",
        worker.id(),
        worker.url()
    );
    worker
        .run_until(async move {
            shutdown_signal().await;
            if let Some(m) = membership {
                m.leave().await;
            }
        })
        .await?;
    Ok(())
}

/// The Flight URL to announce: `--advertise`, else the listen address, else
/// (listening on all interfaces) the host name with the listen port.
fn advertised_url(
    worker: &flight_worker::WorkerHandle,
    advertise: Option<&str>,
) -> Result<String, String> {
    let scheme = if worker.url().starts_with("grpc+tls://") {
        "grpc+tls"
    } else {
        "grpc"
    };
    let host_port = match advertise {
        Some(a) if a.contains("://") => return Ok(a.to_string()),
        Some(a) => a.to_string(),
        None if worker.addr().ip().is_unspecified() => {
            let host = host_name().ok_or(
                "listening on all interfaces and the host name is unknown: \
                 give the address to announce with --advertise HOST:PORT",
            )?;
            format!("{host}:{}", worker.addr().port())
        }
        None => worker.addr().to_string(),
    };
    Ok(format!("{scheme}://{host_port}"))
}

fn host_name() -> Option<String> {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
}

/// Completes on Ctrl-C or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::error!("cannot listen for SIGTERM: {e}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received"),
        () = terminate => tracing::info!("SIGTERM received"),
    }
}
