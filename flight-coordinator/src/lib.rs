//! The coordinator: the cluster's Flight SQL endpoint.
//!
//! It owns sessions and the Flight SQL protocol (`service`), the catalog and
//! worker set (`catalog`), SQL planning with DataFusion and the distributed
//! planner (`engine`, `planner`, `semantics`), the merge executor that reads
//! shard fragments (`gather`), the shard router for every write (`ingest`,
//! `ingest_cmd`), shard moves (`shard_move`), the `system` tables (`system`), the embedded `local` cluster, and metrics with the
//! `/metrics`, `/health` and `/ready` HTTP routes (`metrics`). It never
//! touches DuckDB directly: workers do, through signed tickets and requests.

pub mod catalog;
pub mod eager;
pub mod engine;
pub mod error;
pub mod files;
pub mod gather;
pub mod ingest;
pub mod ingest_cmd;
pub mod local;
pub mod metadata;
pub mod metrics;
pub mod optimizer;
pub mod planner;
pub mod query_log;
pub mod reduce;
pub mod semantics;
pub mod server;
pub mod service;
pub mod shard_move;
pub mod shell;
pub mod staged;
pub mod status;
pub mod system;
pub mod table;
pub mod tpch;
pub mod types;
pub mod workers;

pub use error::{Error, Result};
