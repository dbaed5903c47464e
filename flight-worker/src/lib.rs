//! The flight-worker: an Arrow Flight service over one DuckDB database file
//! holding this worker's shards.
//!
//! A worker keeps shard tables in `<data_dir>/shards.duckdb` and a stable id
//! in `<data_dir>/worker_id`. The coordinator talks to it with signed
//! messages only (see `fsql-proto`):
//!
//! * `DoGet(ShardTicket)` decodes the ticket's fragment ([`fragment`]),
//!   turns it into DuckDB SQL ([`sqlgen`]), runs it and streams Arrow cast
//!   to the schema the ticket expects;
//! * `DoPut(ShardWrite)` appends a stream of batches to a shard in one
//!   transaction;
//! * `DoAction` creates and drops shard tables, reports their stats, and
//!   answers an unsigned `health` probe;
//! * `Handshake` echoes a session token of the cluster or checks Basic
//!   credentials against the configured users ([`auth`]); any call carrying
//!   an `authorization` header must carry a valid token.
//!
//! Modules: [`config`] (command line, config file and runtime
//! configuration), [`auth`] (bearer tokens and Basic handshakes, shared with
//! the coordinator), [`tls`] (PEM files to tonic's rustls config), [`error`]
//! (the error type and its gRPC codes), [`storage`] (everything that talks
//! to DuckDB, all blocking), [`service`] (the Flight service: async, moves
//! DuckDB work to the blocking pool through bounded channels) and the
//! [`start`]/[`run`] seam used by the binary, by the coordinator's embedded
//! `local` mode and by tests. [`registry`] is the membership and catalog
//! store (embedded, static, etcd) shared with the coordinator. [`http`] is a
//! tiny HTTP/1.1 server and [`metrics`] a Prometheus registry with the
//! worker's series and its `/metrics`, `/health` and `/ready` routes. The
//! worker does not plan queries, route rows or know about other workers.

pub mod auth;
pub mod cancel;
pub mod config;
pub mod error;
pub mod fragment;
pub mod http;
pub mod membership;
pub mod metrics;
pub mod registry;
mod server;
pub mod service;
pub mod session;
pub mod sqlgen;
pub mod storage;
pub mod tls;

pub use config::{WorkerArgs, WorkerConfig};

/// Logs to stderr with `filter`: text lines, or one JSON object per event
/// with its span fields (`query_id` among them) when `FSQL_LOG_FORMAT=json`.
pub fn init_logging(filter: tracing_subscriber::EnvFilter) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let json = std::env::var("FSQL_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init();
    } else {
        builder.with_ansi(std::io::stderr().is_terminal()).init();
    }
}
pub use error::{Error, Result};
pub use server::{SHUTDOWN_GRACE, WorkerHandle, run, start};
pub use service::{
    ACTION_CANCEL, ACTION_CREATE_SHARD, ACTION_DESCRIBE_FILES, ACTION_DROP_SHARD, ACTION_HEALTH,
    ACTION_SHARD_STATS, QUERY_ID_HEADER, WorkerService,
};
