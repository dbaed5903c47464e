//! `flight-worker`: serves this machine's shards to the coordinator.
//!
//! Parses the command line, starts logging (to stderr), binds, starts the
//! worker, prints one ready line to stdout and serves until Ctrl-C or
//! SIGTERM.

use std::process::ExitCode;

use clap::Parser;
use flight_worker::registry::{self, RegistryOptions};
use flight_worker::{WorkerArgs, http, membership, metrics};
use tokio_util::sync::CancellationToken;
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
    flight_worker::init_logging(filter);
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
    // Bound before the worker starts so that a taken port fails fast.
    let http_listener = match &resolved.http_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("binding the HTTP address {addr}: {e}"))?,
        ),
        None => None,
    };
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
    // Cancelled on Ctrl-C/SIGTERM: /ready fails from then on.
    let stopping = CancellationToken::new();
    let stop_http = CancellationToken::new();
    let http = match http_listener {
        Some(http_listener) => {
            let addr = http_listener
                .local_addr()
                .map_err(|e| format!("the HTTP listener's address: {e}"))?;
            let ready = readiness(membership.as_ref(), stopping.clone());
            let routes = metrics::worker_routes(worker.storage(), ready);
            let stop = stop_http.clone();
            let task = tokio::spawn(async move {
                http::serve(http_listener, routes, stop.cancelled_owned()).await;
            });
            println!("flight-worker {} http on http://{addr}", worker.id());
            Some(task)
        }
        None => None,
    };
    println!(
        "flight-worker {} listening on {}",
        worker.id(),
        worker.url()
    );
    let served = worker
        .run_until(async move {
            shutdown_signal().await;
            stopping.cancel();
            if let Some(m) = membership {
                m.leave().await;
            }
        })
        .await;
    // /health and /metrics answer until the worker has shut down.
    stop_http.cancel();
    if let Some(task) = http {
        let _ = task.await;
    }
    served?;
    Ok(())
}

/// `/ready`: fails once `stopping` is cancelled; otherwise always ready
/// without a registry, and with one once the worker's record was
/// registered. It stays ready while the registry is unreachable later: the
/// worker goes on serving the coordinators that know it.
fn readiness(
    membership: Option<&membership::Membership>,
    stopping: CancellationToken,
) -> impl Fn() -> metrics::Readiness + Send + Sync + 'static {
    let registered = membership.map(membership::Membership::registered);
    let announced = std::sync::atomic::AtomicBool::new(false);
    move || {
        if stopping.is_cancelled() {
            return Err("shutting down".into());
        }
        match &registered {
            None => Ok(()),
            Some(Some(registered)) if *registered.borrow() => {
                announced.store(true, std::sync::atomic::Ordering::Relaxed);
                Ok(())
            }
            Some(_) if announced.load(std::sync::atomic::Ordering::Relaxed) => Ok(()),
            Some(_) => Err("not registered in the registry yet".into()),
        }
    }
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
