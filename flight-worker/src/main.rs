//! `flight-worker`: serves this machine's shards to the coordinator.
//!
//! Parses the command line, starts logging (to stderr), binds, starts the
//! worker, prints one ready line to stdout and serves until Ctrl-C or
//! SIGTERM.

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use flight_worker::WorkerArgs;
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
    let (listen, config) = args.resolve()?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .map_err(|e| format!("binding {listen}: {e}"))?;
    let worker = flight_worker::start(config, listener).await?;
    println!(
        "flight-worker {} listening on {}",
        worker.id(),
        worker.url()
    );
    worker.run_until(shutdown_signal()).await?;
    Ok(())
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
