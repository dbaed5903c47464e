//! The wire contract between the coordinator and the workers.
//!
//! This crate owns the protobuf messages (shard tickets, worker requests,
//! statement tickets, prepared handles, registry records), their HMAC
//! signing and verification, the shard hash and the naming of shard tables.
//! It does no networking and knows nothing of DuckDB or DataFusion.

pub mod hash;
pub mod ipc;
pub mod registry;
pub mod sign;

#[allow(clippy::all)]
mod generated {
    include!(concat!(env!("OUT_DIR"), "/fsql.v1.rs"));
}

pub use generated::*;

/// The Flight RPC session-option messages (bodies of the
/// `SetSessionOptions`, `GetSessionOptions` and `CloseSession` actions).
#[allow(clippy::all)]
pub mod flight_session {
    include!(concat!(env!("OUT_DIR"), "/fsql.flight.rs"));
}

/// Version written into every ticket and request this build produces.
pub const WIRE_VERSION: u32 = 1;

/// Name of the DuckDB table holding one shard of a cluster table on a worker.
///
/// Distributed shards are `<table>__s<shard>`, the copy of a reference table
/// is `<table>__ref`. Cluster table names are lowercase identifiers, so the
/// result is a plain identifier too (it is still always quoted in SQL).
pub fn shard_table_name(table: &str, shard: u32, reference: bool) -> String {
    if reference {
        format!("{table}__ref")
    } else {
        format!("{table}__s{shard}")
    }
}

/// Quotes an identifier for DuckDB SQL.
pub fn quote_ident(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
