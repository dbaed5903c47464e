//! Worker configuration.
//!
//! [`WorkerArgs`] is the command line of the `flight-worker` binary (clap;
//! every flag is also an `FSQL_*` environment variable). [`WorkerConfig`] is
//! the validated runtime configuration that [`crate::start`] takes; the
//! coordinator's embedded `local` mode builds it directly. This module does
//! no I/O: the data directory is created and the database opened by
//! [`crate::storage`].

use std::path::PathBuf;

use bytes::Bytes;

use crate::error::{Error, Result};

/// Shortest cluster secret accepted without a warning.
const SHORT_SECRET: usize = 16;

/// What a worker needs to run.
#[derive(Clone)]
pub struct WorkerConfig {
    /// Directory holding `shards.duckdb` and `worker_id`; created if missing.
    pub data_dir: PathBuf,
    /// The cluster secret that signs tickets and requests.
    pub secret: Bytes,
    /// DuckDB `memory_limit`, e.g. `4GB` or `80%`; DuckDB's default if unset.
    pub memory_limit: Option<String>,
    /// DuckDB `threads`; the number of cores if unset.
    pub threads: Option<usize>,
}

impl WorkerConfig {
    /// A configuration with DuckDB's default memory limit and threads.
    pub fn new(data_dir: impl Into<PathBuf>, secret: impl Into<Bytes>) -> Self {
        Self {
            data_dir: data_dir.into(),
            secret: secret.into(),
            memory_limit: None,
            threads: None,
        }
    }

    /// Checks what can be checked without opening the database (DuckDB
    /// itself validates the memory limit when it is applied).
    pub fn validate(&self) -> Result<()> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(Error::Config("the data directory must not be empty".into()));
        }
        if self.secret.is_empty() {
            return Err(Error::Config(
                "the cluster secret must not be empty (set --secret or FSQL_SECRET)".into(),
            ));
        }
        if self.secret.len() < SHORT_SECRET {
            tracing::warn!(
                "the cluster secret is shorter than {SHORT_SECRET} bytes; use a long random secret"
            );
        }
        if self.threads == Some(0) {
            return Err(Error::Config("threads must be at least 1".into()));
        }
        if let Some(limit) = &self.memory_limit
            && limit.trim().is_empty()
        {
            return Err(Error::Config(
                "memory limit must not be empty (e.g. 4GB or 80%)".into(),
            ));
        }
        Ok(())
    }
}

impl std::fmt::Debug for WorkerConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerConfig")
            .field("data_dir", &self.data_dir)
            .field("secret", &"<redacted>")
            .field("memory_limit", &self.memory_limit)
            .field("threads", &self.threads)
            .finish()
    }
}

/// Command line of the `flight-worker` binary.
#[derive(clap::Parser)]
#[command(
    name = "flight-worker",
    version,
    about = "Arrow Flight worker serving shards kept in DuckDB"
)]
pub struct WorkerArgs {
    /// Address to listen on, e.g. 0.0.0.0:50051 (port 0 picks a free port).
    #[arg(long, env = "FSQL_LISTEN", value_name = "ADDR")]
    pub listen: String,

    /// Directory for the DuckDB database file and the worker id.
    #[arg(long, env = "FSQL_DATA_DIR", value_name = "DIR")]
    pub data_dir: PathBuf,

    /// Cluster secret shared with the coordinator (prefer the environment
    /// variable: command lines are visible to other users).
    #[arg(
        long,
        env = "FSQL_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub secret: String,

    /// DuckDB memory limit, e.g. 4GB or 80%.
    #[arg(long, env = "FSQL_MEMORY_LIMIT", value_name = "SIZE")]
    pub memory_limit: Option<String>,

    /// DuckDB worker threads (default: all cores).
    #[arg(long, env = "FSQL_THREADS", value_name = "N")]
    pub threads: Option<usize>,

    /// Log filter (tracing-subscriber `EnvFilter` syntax), e.g. info or
    /// flight_worker=debug.
    #[arg(long, env = "FSQL_LOG", value_name = "FILTER", default_value = "info")]
    pub log: String,
}

impl std::fmt::Debug for WorkerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerArgs")
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("secret", &"<redacted>")
            .field("memory_limit", &self.memory_limit)
            .field("threads", &self.threads)
            .field("log", &self.log)
            .finish()
    }
}

impl TryFrom<&WorkerArgs> for WorkerConfig {
    type Error = Error;

    fn try_from(args: &WorkerArgs) -> Result<Self> {
        let config = WorkerConfig {
            data_dir: args.data_dir.clone(),
            secret: Bytes::copy_from_slice(args.secret.as_bytes()),
            memory_limit: args.memory_limit.clone(),
            threads: args.threads,
        };
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn args_build_a_config() {
        let args = WorkerArgs::try_parse_from([
            "flight-worker",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            "/tmp/w",
            "--secret",
            "0123456789abcdef",
            "--memory-limit",
            "1GB",
            "--threads",
            "2",
        ])
        .unwrap();
        let config = WorkerConfig::try_from(&args).unwrap();
        assert_eq!(config.data_dir, PathBuf::from("/tmp/w"));
        assert_eq!(config.memory_limit.as_deref(), Some("1GB"));
        assert_eq!(config.threads, Some(2));
        assert!(!format!("{config:?}").contains("0123456789abcdef"));
        assert!(!format!("{args:?}").contains("0123456789abcdef"));
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(WorkerConfig::new("/tmp/w", "").validate().is_err());
        let mut c = WorkerConfig::new("/tmp/w", "secret");
        c.threads = Some(0);
        assert!(c.validate().is_err());
        c.threads = None;
        c.memory_limit = Some(" ".into());
        assert!(c.validate().is_err());
    }
}
