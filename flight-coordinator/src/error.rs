//! The coordinator's error type and its mapping to gRPC status codes.

use datafusion::error::DataFusionError;
use tonic::Status;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The statement is malformed or not valid for its tables.
    #[error("{0}")]
    InvalidArgument(String),
    /// A table (or other object) named by the user does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The object already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// Known SQL that this cluster does not run.
    #[error("{0}")]
    Unsupported(String),
    /// A shard has no live replica, or a worker cannot be reached.
    #[error("{0}")]
    Unavailable(String),
    /// A concurrent change won (e.g. the catalog record moved on); retry.
    #[error("{0}")]
    Aborted(String),
    /// A ticket or handle failed verification.
    #[error("{0}")]
    Unauthenticated(String),
    /// The query was cancelled.
    #[error("query cancelled")]
    Cancelled,
    #[error("{context}: {source}")]
    Worker {
        context: String,
        #[source]
        source: Status,
    },
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),
    /// The configuration is unusable (said at startup).
    #[error("invalid configuration: {0}")]
    Config(String),
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<fsql_proto::sign::SignError> for Error {
    fn from(e: fsql_proto::sign::SignError) -> Self {
        match e {
            fsql_proto::sign::SignError::Malformed { .. } => Error::InvalidArgument(e.to_string()),
            _ => Error::Unauthenticated(e.to_string()),
        }
    }
}

/// Marker prefixes carried through DataFusion's error type so the gRPC code
/// survives a trip through a DataFusion stream.
const UNAVAILABLE: &str = "UNAVAILABLE: ";

/// An error raised inside DataFusion execution that must surface as
/// UNAVAILABLE (a shard could not be read).
pub fn unavailable_df(msg: impl std::fmt::Display) -> DataFusionError {
    DataFusionError::External(format!("{UNAVAILABLE}{msg}").into())
}

/// Picks the gRPC code for a DataFusion error.
fn datafusion_status(e: &DataFusionError) -> Status {
    let root = e.find_root();
    match root {
        DataFusionError::SQL(..) => Status::invalid_argument(format!("SQL error: {root}")),
        DataFusionError::Plan(msg) if is_missing_table(msg) => Status::not_found(msg.clone()),
        DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(root.to_string())
        }
        DataFusionError::NotImplemented(_) => Status::unimplemented(root.to_string()),
        DataFusionError::ArrowError(inner, _) => match inner.as_ref() {
            arrow::error::ArrowError::DivideByZero
            | arrow::error::ArrowError::CastError(_)
            | arrow::error::ArrowError::ArithmeticOverflow(_)
            | arrow::error::ArrowError::ComputeError(_) => {
                Status::invalid_argument(root.to_string())
            }
            _ => Status::internal(root.to_string()),
        },
        DataFusionError::Execution(_) => Status::invalid_argument(root.to_string()),
        DataFusionError::External(inner) => {
            if let Some(status) = inner.downcast_ref::<Status>() {
                return Status::new(status.code(), status.message().to_string());
            }
            let msg = inner.to_string();
            if let Some(rest) = msg.strip_prefix(UNAVAILABLE) {
                Status::unavailable(rest.to_string())
            } else {
                Status::internal(msg)
            }
        }
        _ => Status::internal(root.to_string()),
    }
}

fn is_missing_table(msg: &str) -> bool {
    msg.contains("table '") && msg.contains("not found")
        || msg.starts_with("table ") && msg.contains("not found")
}

impl From<Error> for Status {
    fn from(e: Error) -> Self {
        let status = match &e {
            Error::InvalidArgument(m) => Status::invalid_argument(m.clone()),
            Error::NotFound(m) => Status::not_found(m.clone()),
            Error::AlreadyExists(m) => Status::already_exists(m.clone()),
            Error::Unsupported(m) => Status::unimplemented(m.clone()),
            Error::Unavailable(m) => Status::unavailable(m.clone()),
            Error::Unauthenticated(m) => Status::unauthenticated(m.clone()),
            Error::Aborted(m) => Status::aborted(m.clone()),
            Error::Cancelled => Status::cancelled("query cancelled"),
            Error::Worker { context, source } => {
                Status::new(source.code(), format!("{context}: {}", source.message()))
            }
            Error::DataFusion(d) => datafusion_status(d),
            Error::Arrow(a) => Status::internal(a.to_string()),
            Error::Config(m) => Status::failed_precondition(m.clone()),
            Error::Internal(m) => Status::internal(m.clone()),
        };
        match status.code() {
            tonic::Code::Internal | tonic::Code::Unavailable => {
                tracing::error!(code = ?status.code(), "{}", status.message())
            }
            _ => tracing::debug!(code = ?status.code(), "{}", status.message()),
        }
        status
    }
}

/// Converts any DataFusion error raised while streaming to a Status.
pub fn df_to_status(e: DataFusionError) -> Status {
    Error::DataFusion(e).into()
}
