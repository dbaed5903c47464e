//! Worker configuration.
//!
//! [`WorkerArgs`] is the command line of the `flight-worker` binary (clap;
//! every flag is also an `FSQL_*` environment variable). [`WorkerConfig`] is
//! the validated runtime configuration that [`crate::start`] takes; the
//! coordinator's embedded `local` mode builds it directly. This module does
//! no I/O beyond reading the config file and the TLS PEM files it names:
//! the data directory is created and the database opened by
//! [`crate::storage`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;

use crate::auth::{AuthConfig, UserConfig};
use crate::error::{Error, Result};
use crate::tls::TlsConfig;

/// Shortest cluster secret accepted without a warning.
const SHORT_SECRET: usize = 16;

/// Default largest gRPC message (a DoPut batch) a server accepts: 256 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 256 * 1024 * 1024;

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
    /// Serve TLS with this certificate and key.
    pub tls: Option<TlsConfig>,
    /// Users who may run a Basic handshake against this worker (clients
    /// that re-authenticate at every endpoint location, like JDBC and
    /// ADBC), and their API tokens. Session tokens of the cluster are
    /// accepted whatever this holds.
    pub auth: AuthConfig,
    /// Largest gRPC message accepted or sent.
    pub max_message_size: usize,
}

impl WorkerConfig {
    /// A configuration with DuckDB's default memory limit and threads,
    /// plaintext, no users, the default message size.
    pub fn new(data_dir: impl Into<PathBuf>, secret: impl Into<Bytes>) -> Self {
        Self {
            data_dir: data_dir.into(),
            secret: secret.into(),
            memory_limit: None,
            threads: None,
            tls: None,
            auth: AuthConfig::default(),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
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
        if self.max_message_size < 1024 {
            return Err(Error::Config(
                "the max message size must be at least 1 KiB".into(),
            ));
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
            .field("tls", &self.tls.is_some())
            .field("users", &self.auth.users.len())
            .field("max_message_size", &self.max_message_size)
            .finish()
    }
}

/// Command line of the `flight-worker` binary. Every flag is also an
/// environment variable and (except `--config` and `--log`) a key of the
/// `[worker]` section of the config file; flags and variables win over the
/// file.
#[derive(clap::Parser)]
#[command(
    name = "flight-worker",
    version,
    about = "Arrow Flight worker serving shards kept in DuckDB"
)]
pub struct WorkerArgs {
    /// TOML config file: the `[worker]` section and the `[[users]]`.
    #[arg(long, env = "FSQL_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Address to listen on, e.g. 0.0.0.0:50051 (port 0 picks a free port).
    #[arg(long, env = "FSQL_LISTEN", value_name = "ADDR")]
    pub listen: Option<String>,

    /// Directory for the DuckDB database file and the worker id.
    #[arg(long, env = "FSQL_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// Cluster secret shared with the coordinator (prefer the environment
    /// variable or the config file: command lines are visible to other
    /// users).
    #[arg(
        long,
        env = "FSQL_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub secret: Option<String>,

    /// DuckDB memory limit, e.g. 4GB or 80%.
    #[arg(long, env = "FSQL_MEMORY_LIMIT", value_name = "SIZE")]
    pub memory_limit: Option<String>,

    /// DuckDB worker threads (default: all cores).
    #[arg(long, env = "FSQL_THREADS", value_name = "N")]
    pub threads: Option<usize>,

    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "FSQL_TLS_CERT", value_name = "PEM")]
    pub tls_cert: Option<PathBuf>,

    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FSQL_TLS_KEY", value_name = "PEM")]
    pub tls_key: Option<PathBuf>,

    /// Largest gRPC message accepted, e.g. 256MiB (default) or 1GiB.
    #[arg(long, env = "FSQL_MAX_MESSAGE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    pub max_message_size: Option<usize>,

    /// Lifetime of session tokens issued by a Basic handshake here, e.g. 12h.
    #[arg(long, env = "FSQL_TOKEN_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub token_ttl: Option<Duration>,

    /// Registry to announce this worker in: etcd://HOST:PORT[,HOST:PORT...]
    /// (or static://... for a fixed list, where announcing does nothing).
    /// Without it the worker does not announce itself; the coordinator then
    /// needs its address in --workers.
    #[arg(long, env = "FSQL_REGISTRY", value_name = "URL")]
    pub registry: Option<String>,

    /// Cluster name: the registry keeps clusters apart by it [default: default].
    #[arg(long, env = "FSQL_CLUSTER", value_name = "NAME")]
    pub cluster: Option<String>,

    /// Lease of the worker's registry record: a worker that stops renewing
    /// it (every TTL/3) leaves the live set after this long [default: 10s].
    #[arg(long, env = "FSQL_LEASE_TTL", value_name = "DURATION", value_parser = parse_duration)]
    pub lease_ttl: Option<Duration>,

    /// HOST:PORT the coordinator and clients reach this worker at [default:
    /// the listen address; the host name with the listen port when listening
    /// on all interfaces].
    #[arg(long, env = "FSQL_ADVERTISE", value_name = "HOST:PORT")]
    pub advertise: Option<String>,

    /// Address of the HTTP port serving /metrics (Prometheus), /health and
    /// /ready, e.g. 0.0.0.0:8080 [default: off].
    #[arg(long, env = "FSQL_HTTP_LISTEN", value_name = "ADDR")]
    pub http_listen: Option<String>,

    /// Log filter (tracing-subscriber `EnvFilter` syntax), e.g. info or
    /// flight_worker=debug.
    #[arg(long, env = "FSQL_LOG", value_name = "FILTER", default_value = "info")]
    pub log: String,
}

impl std::fmt::Debug for WorkerArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerArgs")
            .field("config", &self.config)
            .field("listen", &self.listen)
            .field("data_dir", &self.data_dir)
            .field("secret", &"<redacted>")
            .field("memory_limit", &self.memory_limit)
            .field("threads", &self.threads)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("max_message_size", &self.max_message_size)
            .field("token_ttl", &self.token_ttl)
            .field("registry", &self.registry)
            .field("cluster", &self.cluster)
            .field("lease_ttl", &self.lease_ttl)
            .field("advertise", &self.advertise)
            .field("http_listen", &self.http_listen)
            .field("log", &self.log)
            .finish()
    }
}

/// The `[worker]` section of the config file (keys named like the flags).
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerSection {
    listen: Option<String>,
    data_dir: Option<PathBuf>,
    secret: Option<String>,
    memory_limit: Option<String>,
    threads: Option<usize>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    max_message_size: Option<SizeValue>,
    token_ttl: Option<DurationValue>,
    registry: Option<String>,
    cluster: Option<String>,
    lease_ttl: Option<DurationValue>,
    advertise: Option<String>,
    http_listen: Option<String>,
}

/// Where and how a worker announces itself (`--registry`).
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    /// The registry URL (see `registry::connect`).
    pub registry: String,
    pub cluster: String,
    pub lease_ttl: Duration,
    /// `HOST:PORT` to announce instead of the listen address.
    pub advertise: Option<String>,
}

/// Everything the `flight-worker` command line and config file say.
#[derive(Debug)]
pub struct Resolved {
    /// The address to listen on.
    pub listen: String,
    pub config: WorkerConfig,
    /// Set when the worker announces itself in a registry.
    pub membership: Option<MembershipConfig>,
    /// The HTTP port for metrics and health checks, if any.
    pub http_listen: Option<String>,
}

/// The config file as the worker reads it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkerFile {
    #[serde(default)]
    worker: WorkerSection,
    #[serde(default)]
    users: Vec<UserConfig>,
    coordinator: Option<serde::de::IgnoredAny>,
    local: Option<serde::de::IgnoredAny>,
}

impl WorkerArgs {
    /// The validated configuration: flags (and environment variables) over
    /// the config file.
    pub fn resolve(&self) -> Result<Resolved> {
        let file: WorkerFile = match &self.config {
            Some(path) => read_toml(path)?,
            None => WorkerFile::default(),
        };
        let _ = (&file.coordinator, &file.local);
        let section = file.worker;
        let listen = self.listen.clone().or(section.listen).ok_or_else(|| {
            Error::Config("no address to listen on (--listen or `listen` in [worker])".into())
        })?;
        let data_dir = self.data_dir.clone().or(section.data_dir).ok_or_else(|| {
            Error::Config("no data directory (--data-dir or `data_dir` in [worker])".into())
        })?;
        let secret = self.secret.clone().or(section.secret).ok_or_else(|| {
            Error::Config(
                "no cluster secret (--secret, FSQL_SECRET or `secret` in [worker])".into(),
            )
        })?;
        let tls = tls_from(
            self.tls_cert.clone().or(section.tls_cert).as_deref(),
            self.tls_key.clone().or(section.tls_key).as_deref(),
        )?;
        let max_message_size = match self.max_message_size {
            Some(n) => n,
            None => match section.max_message_size {
                Some(v) => v.bytes()?,
                None => DEFAULT_MAX_MESSAGE_SIZE,
            },
        };
        let token_ttl = match self.token_ttl {
            Some(d) => d,
            None => match section.token_ttl {
                Some(v) => v.duration()?,
                None => crate::auth::DEFAULT_TOKEN_TTL,
            },
        };
        let config = WorkerConfig {
            data_dir,
            secret: Bytes::from(secret.into_bytes()),
            memory_limit: self.memory_limit.clone().or(section.memory_limit),
            threads: self.threads.or(section.threads),
            tls,
            auth: AuthConfig {
                users: file.users,
                token_ttl,
            },
            max_message_size,
        };
        config.validate()?;
        let lease_ttl = match self.lease_ttl {
            Some(d) => d,
            None => match section.lease_ttl {
                Some(v) => v.duration()?,
                None => crate::registry::DEFAULT_TTL,
            },
        };
        let cluster = self
            .cluster
            .clone()
            .or(section.cluster)
            .unwrap_or_else(|| crate::registry::DEFAULT_CLUSTER.to_string());
        let membership =
            self.registry
                .clone()
                .or(section.registry)
                .map(|registry| MembershipConfig {
                    registry,
                    cluster,
                    lease_ttl,
                    advertise: self.advertise.clone().or(section.advertise),
                });
        Ok(Resolved {
            listen,
            config,
            membership,
            http_listen: self.http_listen.clone().or(section.http_listen),
        })
    }
}

impl TryFrom<&WorkerArgs> for WorkerConfig {
    type Error = Error;

    fn try_from(args: &WorkerArgs) -> Result<Self> {
        Ok(args.resolve()?.config)
    }
}

/// Reads a TOML config file into `T`.
pub fn read_toml<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
        what: "reading the config file",
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
}

/// TLS from a certificate and a key path: both or neither.
pub fn tls_from(cert: Option<&Path>, key: Option<&Path>) -> Result<Option<TlsConfig>> {
    match (cert, key) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(TlsConfig::from_files(cert, key)?)),
        _ => Err(Error::Config(
            "TLS needs both a certificate (--tls-cert) and its key (--tls-key)".into(),
        )),
    }
}

/// A size in the config file: bytes, or a string like `256MiB`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum SizeValue {
    Bytes(u64),
    Text(String),
}

impl SizeValue {
    pub fn bytes(&self) -> Result<usize> {
        match self {
            SizeValue::Bytes(n) => {
                usize::try_from(*n).map_err(|_| Error::Config(format!("size {n} is too large")))
            }
            SizeValue::Text(s) => parse_size(s).map_err(Error::Config),
        }
    }
}

/// A duration in the config file: seconds, or a string like `12h`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(untagged)]
pub enum DurationValue {
    Seconds(u64),
    Text(String),
}

impl DurationValue {
    pub fn duration(&self) -> Result<Duration> {
        match self {
            DurationValue::Seconds(n) => Ok(Duration::from_secs(*n)),
            DurationValue::Text(s) => parse_duration(s).map_err(Error::Config),
        }
    }
}

fn split_number(s: &str) -> Result<(u64, String), String> {
    let s = s.trim();
    let digits = s.chars().take_while(|c| c.is_ascii_digit()).count();
    let (number, unit) = s.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{s:?} does not start with a number"))?;
    Ok((number, unit.trim().to_ascii_lowercase()))
}

/// Parses a byte size: `1048576`, `64KiB`, `256MiB`, `1GiB` (or KB/MB/GB,
/// also powers of 1024).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (n, unit) = split_number(s)?;
    let factor: u64 = match unit.as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        other => {
            return Err(format!(
                "unknown size unit {other:?} in {s:?} (use KiB, MiB, GiB)"
            ));
        }
    };
    n.checked_mul(factor)
        .and_then(|b| usize::try_from(b).ok())
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Parses a duration: `3600` (seconds), `90s`, `30m`, `12h`, `7d`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let (n, unit) = split_number(s)?;
    let factor: u64 = match unit.as_str() {
        "" | "s" => 1,
        "m" | "min" => 60,
        "h" => 3600,
        "d" => 86_400,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} in {s:?} (use s, m, h, d)"
            ));
        }
    };
    let secs = n
        .checked_mul(factor)
        .ok_or_else(|| format!("duration {s:?} is too large"))?;
    if secs == 0 {
        return Err("a duration must be positive".into());
    }
    Ok(Duration::from_secs(secs))
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
    fn file_and_flags_merge() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fsql.toml");
        std::fs::write(
            &path,
            r#"
[coordinator]
listen = "0.0.0.0:1"
[worker]
listen = "127.0.0.1:7"
data_dir = "/tmp/from-file"
secret = "0123456789abcdef-file"
max_message_size = "1GiB"
token_ttl = "2h"
registry = "etcd://127.0.0.1:2379"
lease_ttl = "3s"
[[users]]
name = "alice"
api_tokens = []
"#,
        )
        .unwrap();
        let args = WorkerArgs::try_parse_from([
            "flight-worker",
            "--config",
            path.to_str().unwrap(),
            "--data-dir",
            "/tmp/from-flag",
        ])
        .unwrap();
        let resolved = args.resolve().unwrap();
        let config = resolved.config;
        assert_eq!(resolved.listen, "127.0.0.1:7");
        assert_eq!(config.data_dir, PathBuf::from("/tmp/from-flag"));
        assert_eq!(config.max_message_size, 1 << 30);
        assert_eq!(config.auth.token_ttl, Duration::from_secs(7200));
        assert_eq!(config.auth.users.len(), 1);
        let membership = resolved.membership.unwrap();
        assert_eq!(membership.registry, "etcd://127.0.0.1:2379");
        assert_eq!(membership.cluster, "default");
        assert_eq!(membership.lease_ttl, Duration::from_secs(3));
        std::fs::write(&path, "[worker]\nlisen = \"x\"\n").unwrap();
        assert!(args.resolve().is_err(), "unknown keys are refused");
    }

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fsql.example.toml");
        let file: WorkerFile = read_toml(&path).unwrap();
        assert_eq!(file.worker.listen.as_deref(), Some("0.0.0.0:32011"));
        assert_eq!(
            file.worker.max_message_size.unwrap().bytes().unwrap(),
            DEFAULT_MAX_MESSAGE_SIZE
        );
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1024"), Ok(1024));
        assert!(parse_size("12 parsecs").is_err());
        assert_eq!(parse_duration("12h"), Ok(Duration::from_secs(43_200)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert!(parse_duration("0s").is_err());
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
