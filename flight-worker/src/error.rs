//! The worker's error type and its mapping to gRPC status codes.
//!
//! Every failure on a request path ends up as an [`Error`]; the
//! `From<Error> for tonic::Status` conversion is the one place that decides
//! the gRPC code a client sees and the level the failure is logged at. User
//! mistakes (bad tickets, bad data, SQL the data cannot satisfy) are never
//! `INTERNAL`.

use arrow::datatypes::DataType;
use arrow::error::ArrowError;
use arrow_flight::error::FlightError;
use datafusion::error::DataFusionError;
use fsql_proto::sign::SignError;
use tonic::Code;

/// Result alias for the worker.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the worker.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is unusable (empty secret, zero threads, a memory
    /// limit DuckDB does not accept).
    #[error("invalid configuration: {0}")]
    Config(String),

    /// Reading or writing a file of the data directory failed.
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A signed ticket or request was refused (forged, expired, another
    /// wire version, or not a protobuf message at all).
    #[error(transparent)]
    Signature(#[from] SignError),

    /// A request that is well signed but makes no sense (wrong command,
    /// missing field, wrong number of columns, ...).
    #[error("{0}")]
    BadRequest(String),

    /// An IPC-encoded schema inside a message does not decode.
    #[error("malformed {what}: {source}")]
    BadSchema {
        what: &'static str,
        #[source]
        source: ArrowError,
    },

    /// A column type that shard tables cannot hold.
    #[error("column {column:?} has type {data_type}, which a shard table cannot store: {reason}")]
    UnsupportedType {
        column: String,
        data_type: DataType,
        reason: &'static str,
    },

    /// The fragment in a shard ticket does not decode.
    #[error("malformed fragment in shard ticket: {0}")]
    BadFragment(#[source] DataFusionError),

    /// The fragment decodes but cannot be turned into DuckDB SQL.
    #[error("fragment cannot run on this worker: {0}")]
    Translate(#[source] DataFusionError),

    /// No file matches a pattern of a file read.
    #[error(
        "no file matches {0:?} (paths are read on the workers: every worker must see the files)"
    )]
    FileNotFound(String),

    /// The shard table a request names does not exist on this worker.
    #[error("shard table {table} does not exist on this worker")]
    ShardNotFound { table: String },

    /// `create_shard` found a table of that name with other columns.
    #[error(
        "shard table {table} already exists with different columns ({existing}); drop it first"
    )]
    ShardConflict { table: String, existing: String },

    /// DuckDB refused or failed a statement.
    #[error("{context}: {source}")]
    DuckDb {
        context: String,
        #[source]
        source: duckdb::Error,
    },

    /// A column of incoming data cannot be converted to the shard table's
    /// column type.
    #[error("column {index} ({column:?}) cannot be written as {to}: {source}")]
    InputCast {
        index: usize,
        column: String,
        to: DataType,
        #[source]
        source: ArrowError,
    },

    /// A column of a fragment's result cannot be converted to the type the
    /// ticket expects: the coordinator's plan and the worker disagree.
    #[error(
        "result column {index} ({column:?}) cannot be converted from {from} to the expected {to}: {source}"
    )]
    ResultCast {
        index: usize,
        column: String,
        from: DataType,
        to: DataType,
        #[source]
        source: ArrowError,
    },

    /// A fragment's result has a different shape than its ticket expects.
    #[error("fragment result does not match the expected schema: {0}")]
    ResultShape(String),

    /// The Arrow Flight stream a client sent does not decode.
    #[error("reading the DoPut stream: {0}")]
    Input(#[source] FlightError),

    /// The operation stopped before it finished: the client went away or
    /// the worker is shutting down.
    #[error("{0}")]
    Cancelled(String),

    /// The worker is shutting down and takes no new work.
    #[error("worker is shutting down")]
    ShuttingDown,

    /// An RPC or action this worker does not serve.
    #[error("{0}")]
    Unimplemented(String),

    /// A blocking task died (panicked or was aborted).
    #[error("worker task failed: {0}")]
    Task(#[from] tokio::task::JoinError),

    /// The listener handed to `start` is unusable.
    #[error("listener: {0}")]
    Listener(#[source] std::io::Error),

    /// The gRPC server failed.
    #[error("gRPC server: {0}")]
    Transport(#[from] tonic::transport::Error),
}

impl Error {
    /// Wraps a DuckDB error with what the worker was doing.
    pub fn duckdb(context: impl Into<String>) -> impl FnOnce(duckdb::Error) -> Self {
        let context = context.into();
        move |source| Self::DuckDb { context, source }
    }

    /// The gRPC code this error is reported with.
    pub fn code(&self) -> Code {
        match self {
            Error::Config(_) => Code::InvalidArgument,
            Error::Io { .. } => Code::Internal,
            Error::Signature(e) => match e {
                SignError::Malformed { .. } | SignError::Version { .. } => Code::InvalidArgument,
                SignError::BadSignature { .. } | SignError::Expired { .. } => Code::Unauthenticated,
            },
            Error::BadRequest(_) | Error::BadSchema { .. } | Error::UnsupportedType { .. } => {
                Code::InvalidArgument
            }
            Error::BadFragment(_) => Code::InvalidArgument,
            Error::Translate(e) => match e {
                DataFusionError::NotImplemented(_) => Code::Unimplemented,
                _ => Code::Internal,
            },
            Error::ShardNotFound { .. } | Error::FileNotFound(_) => Code::NotFound,
            Error::ShardConflict { .. } => Code::AlreadyExists,
            Error::DuckDb { source, .. } => duckdb_code(source),
            Error::InputCast { .. } => Code::InvalidArgument,
            Error::ResultCast { .. } | Error::ResultShape(_) => Code::Internal,
            Error::Input(e) => match e {
                FlightError::Tonic(status) => status.code(),
                _ => Code::InvalidArgument,
            },
            Error::Cancelled(_) => Code::Cancelled,
            Error::ShuttingDown => Code::Unavailable,
            Error::Unimplemented(_) => Code::Unimplemented,
            Error::Task(_) | Error::Listener(_) | Error::Transport(_) => Code::Internal,
        }
    }
}

/// The DuckDB error class, the words before `Error:` in its message
/// (`Binder`, `Conversion`, `Catalog`, ...), if there is one. Prefixes
/// added by duckdb-rs (`Failed to append: ...`) are skipped.
fn duckdb_class(err: &duckdb::Error) -> Option<&str> {
    let duckdb::Error::DuckDBFailure(_, Some(message)) = err else {
        return None;
    };
    let (head, _) = message.split_once(" Error:")?;
    Some(head.rsplit_once(": ").map_or(head, |(_, class)| class))
}

/// Picks the gRPC code for a DuckDB error from its class.
fn duckdb_code(err: &duckdb::Error) -> Code {
    let message = err.to_string();
    match duckdb_class(err) {
        Some("INTERRUPT") => Code::Cancelled,
        Some("Out of Memory") => Code::ResourceExhausted,
        Some("TransactionContext") => Code::Aborted,
        Some("Catalog") if message.contains("does not exist") => Code::NotFound,
        Some("IO") if message.contains("No files found") => Code::NotFound,
        Some(
            "Invalid"
            | "Out of Range"
            | "Conversion"
            | "Unknown Type"
            | "Decimal"
            | "Mismatch Type"
            | "Divide by Zero"
            | "Invalid type"
            | "Not implemented"
            | "Expression"
            | "Catalog"
            | "Parser"
            | "Binder"
            | "Constraint"
            | "Syntax"
            | "Invalid Input"
            | "Parameter Not Resolved"
            | "Parameter Not Allowed"
            | "Dependency"
            | "Sequence"
            | "Object Size",
        ) => Code::InvalidArgument,
        // The appender reports constraint violations without a class.
        None if message.contains("constraint failed") => Code::InvalidArgument,
        _ => match err {
            // Errors raised by duckdb-rs itself when converting values.
            duckdb::Error::ArrowTypeToDuckdbType(..)
            | duckdb::Error::InvalidParameterCount(..)
            | duckdb::Error::ToSqlConversionFailure(_) => Code::InvalidArgument,
            _ => Code::Internal,
        },
    }
}

/// Writes `err` and its chain of sources as one line.
fn chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        // thiserror messages usually embed their source already.
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

impl From<Error> for tonic::Status {
    fn from(err: Error) -> Self {
        let code = err.code();
        let message = chain(&err);
        match code {
            Code::Internal | Code::Unknown | Code::DataLoss => {
                tracing::error!(code = ?code, "{message}");
            }
            Code::ResourceExhausted | Code::Unavailable | Code::Aborted => {
                tracing::warn!(code = ?code, "{message}");
            }
            _ => tracing::debug!(code = ?code, "{message}"),
        }
        tonic::Status::new(code, message)
    }
}

impl From<Error> for FlightError {
    /// Keeps the gRPC code when an error travels inside a Flight stream.
    fn from(err: Error) -> Self {
        FlightError::Tonic(Box::new(err.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn duck(message: &str) -> Error {
        Error::DuckDb {
            context: "running".into(),
            source: duckdb::Error::DuckDBFailure(
                duckdb::ffi::Error::new(duckdb::ffi::DuckDBError),
                Some(message.into()),
            ),
        }
    }

    #[test]
    fn duckdb_errors_are_classified() {
        assert_eq!(
            duck("Catalog Error: Table with name t__s0 does not exist!").code(),
            Code::NotFound
        );
        assert_eq!(
            duck("Conversion Error: Could not convert string 'x' to INT32").code(),
            Code::InvalidArgument
        );
        assert_eq!(
            duck("Constraint Error: NOT NULL constraint failed: t.a").code(),
            Code::InvalidArgument
        );
        assert_eq!(
            duck("INTERRUPT Error: Interrupted!").code(),
            Code::Cancelled
        );
        assert_eq!(
            duck("Out of Memory Error: could not allocate block").code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            duck("Failed to append: NOT NULL constraint failed: t__s0.a").code(),
            Code::InvalidArgument
        );
        assert_eq!(
            duck("Failed to append: Conversion Error: Could not convert").code(),
            Code::InvalidArgument
        );
        assert_eq!(duck("IO Error: disk full").code(), Code::Internal);
        assert_eq!(duck("no class at all").code(), Code::Internal);
    }

    #[test]
    fn ticket_errors_are_unauthenticated_or_invalid() {
        let forged = Error::from(SignError::BadSignature {
            what: "shard ticket",
        });
        assert_eq!(forged.code(), Code::Unauthenticated);
        let expired = Error::from(SignError::Expired {
            what: "shard ticket",
            ago_ms: 5,
        });
        assert_eq!(expired.code(), Code::Unauthenticated);
        let garbage = Error::from(SignError::Malformed {
            what: "shard ticket",
            reason: "bad wire type".into(),
        });
        assert_eq!(garbage.code(), Code::InvalidArgument);
    }

    #[test]
    fn status_message_carries_the_source() {
        let status = tonic::Status::from(duck("Binder Error: column x not found"));
        assert_eq!(status.code(), Code::InvalidArgument);
        assert!(status.message().contains("running"));
        assert!(status.message().contains("column x not found"));
    }
}
