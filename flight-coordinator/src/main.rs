//! `flight-coordinator`: the cluster's Flight SQL endpoint.
//!
//! `local` starts an embedded cluster (coordinator + workers) in one
//! process; `serve` fronts workers started separately.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use flight_coordinator::engine::EngineConfig;
use flight_coordinator::local::{LocalCluster, LocalConfig};
use flight_coordinator::metrics::{coordinator_routes, worker_collector};
use flight_coordinator::server::{CoordinatorConfig, MAX_MESSAGE_BYTES, Security};
use flight_worker::auth::{AuthConfig, DEFAULT_TOKEN_TTL, UserConfig};
use flight_worker::config::{DurationValue, SizeValue, parse_duration, parse_size, read_toml};
use flight_worker::http::Router;
use flight_worker::registry::{Registry, RegistryOptions};
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error>;

#[derive(Parser, Debug)]
#[command(
    name = "flight-coordinator",
    version,
    about = "Arrow Flight SQL cluster coordinator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Flags every server command takes. Each is also an environment variable
/// and a key of the command's config file section (`[local]` or
/// `[coordinator]`); flags and variables win over the file.
#[derive(Args, Debug)]
struct ServerArgs {
    /// TOML config file: the `[local]` or `[coordinator]` section and the
    /// `[[users]]` (see deploy/fsql.example.toml).
    #[arg(long, env = "FSQL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Serve TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "FSQL_TLS_CERT", value_name = "PEM")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "FSQL_TLS_KEY", value_name = "PEM")]
    tls_key: Option<PathBuf>,
    /// PEM CA bundle trusted for TLS workers (default: the --tls-cert file).
    #[arg(long, env = "FSQL_TLS_CA", value_name = "PEM")]
    tls_ca: Option<PathBuf>,
    /// Largest gRPC message accepted (DoPut batches), e.g. 256MiB (default).
    #[arg(long, env = "FSQL_MAX_MESSAGE_SIZE", value_name = "SIZE", value_parser = parse_size)]
    max_message_size: Option<usize>,
    /// Lifetime of session tokens, e.g. 12h (default), 30m.
    #[arg(long, env = "FSQL_TOKEN_TTL", value_name = "DURATION", value_parser = parse_duration)]
    token_ttl: Option<Duration>,
    /// Address of the HTTP port serving /metrics (Prometheus), /health and
    /// /ready, e.g. 0.0.0.0:8080 (port 0 picks a free port) [default: off].
    #[arg(long, env = "FSQL_HTTP_LISTEN", value_name = "ADDR")]
    http_listen: Option<SocketAddr>,
    /// Finished statements kept in system.queries [default: 1000].
    #[arg(long, env = "FSQL_QUERY_HISTORY", value_name = "N")]
    query_history: Option<usize>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Start an embedded cluster: the coordinator and N workers in one process.
    ///
    /// Without [[users]] in the config file it runs without authentication,
    /// and then only on a loopback address.
    Local {
        /// Number of workers [default: 2].
        #[arg(long, env = "FSQL_WORKERS")]
        workers: Option<usize>,
        /// Address of the Flight SQL endpoint (port 0 picks a free port)
        /// [default: 127.0.0.1:32010].
        #[arg(long, env = "FSQL_LISTEN")]
        listen: Option<SocketAddr>,
        /// Where the workers' DuckDB files and the catalog are kept
        /// [default: ./data/local].
        #[arg(long, env = "FSQL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Generate and load TPC-H at this scale factor (e.g. 0.1, 1).
        #[arg(long, env = "FSQL_DEMO_TPCH")]
        demo_tpch: Option<f64>,
        /// Shards per distributed demo table (default: one per worker).
        #[arg(long, env = "FSQL_DEMO_SHARDS")]
        demo_shards: Option<u32>,
        /// Demo table layout: `star` (only orders and lineitem distributed)
        /// or `distributed` (customer, part and partsupp distributed too)
        /// [default: star].
        #[arg(long, env = "FSQL_DEMO_LAYOUT")]
        demo_layout: Option<DemoLayout>,
        /// Merge every result at the coordinator (clients never read workers).
        #[arg(long, env = "FSQL_NO_DIRECT")]
        no_direct: bool,
        /// DuckDB threads per worker.
        #[arg(long, env = "FSQL_WORKER_THREADS")]
        worker_threads: Option<usize>,
        /// DuckDB memory limit per worker, e.g. 4GB.
        #[arg(long, env = "FSQL_WORKER_MEMORY_LIMIT")]
        worker_memory_limit: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Serve the Flight SQL endpoint for workers started separately.
    ///
    /// Refuses to start without [[users]] unless --no-auth is given.
    Serve {
        /// [default: 0.0.0.0:32010]
        #[arg(long, env = "FSQL_LISTEN")]
        listen: Option<SocketAddr>,
        /// Registry to follow for the live workers and the catalog:
        /// etcd://HOST:PORT[,HOST:PORT...]. The alternative to --workers.
        #[arg(long, env = "FSQL_REGISTRY", value_name = "URL")]
        registry: Option<String>,
        /// Cluster name in the registry [default: default].
        #[arg(long, env = "FSQL_CLUSTER", value_name = "NAME")]
        cluster: Option<String>,
        /// A fixed list of worker addresses, HOST:PORT[,HOST:PORT...]
        /// (grpc+tls:// is implied when TLS is configured), instead of a
        /// registry; the catalog is then kept in --data-dir.
        #[arg(long, env = "FSQL_WORKERS", value_delimiter = ',')]
        workers: Vec<String>,
        /// Cluster secret shared with the workers (signs tickets and
        /// session tokens).
        #[arg(long, env = "FSQL_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// With --workers: where the catalog is kept (default: in memory).
        /// With --registry the catalog is in the registry.
        #[arg(long, env = "FSQL_DATA_DIR")]
        data_dir: Option<PathBuf>,
        /// Merge every result at the coordinator (clients never read workers).
        #[arg(long, env = "FSQL_NO_DIRECT")]
        no_direct: bool,
        /// Serve without authentication when no users are configured
        /// (anyone who can reach the port can read and change all data).
        #[arg(long, env = "FSQL_NO_AUTH")]
        no_auth: bool,
        #[command(flatten)]
        server: ServerArgs,
    },
    /// A SQL shell for any Flight SQL server: one statement with -c, a
    /// script on stdin, or an interactive prompt.
    Sql {
        /// The server, grpc://HOST:PORT or grpc+tls://HOST:PORT.
        #[arg(long, env = "FSQL_URI", default_value = "grpc://127.0.0.1:32010")]
        uri: String,
        /// Run this statement (or ;-separated statements) and exit.
        #[arg(short = 'c', long = "command")]
        command: Option<String>,
        /// Log in with this user (Basic auth handshake).
        #[arg(long, short = 'u', env = "FSQL_USER")]
        user: Option<String>,
        /// The user's password.
        #[arg(long, env = "FSQL_PASSWORD", hide_env_values = true)]
        password: Option<String>,
        /// PEM CA bundle trusted for grpc+tls:// (default: system roots).
        #[arg(long, env = "FSQL_TLS_CA", value_name = "PEM")]
        tls_ca: Option<PathBuf>,
    },
    /// Read a password from stdin and print its argon2 hash (the
    /// `password_hash` of a user in the config file).
    HashPassword,
    /// Print a new random API token and its hash (for `api_tokens` of a
    /// user in the config file; clients send the token as a bearer token).
    GenToken,
}

/// The config file as the coordinator reads it.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    coordinator: ServeSection,
    #[serde(default)]
    local: LocalSection,
    worker: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    users: Vec<UserConfig>,
}

/// `[coordinator]`: the keys of `serve`, named like its flags.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct ServeSection {
    listen: Option<SocketAddr>,
    registry: Option<String>,
    cluster: Option<String>,
    workers: Option<Vec<String>>,
    secret: Option<String>,
    data_dir: Option<PathBuf>,
    no_direct: Option<bool>,
    no_auth: Option<bool>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    max_message_size: Option<SizeValue>,
    token_ttl: Option<DurationValue>,
    http_listen: Option<SocketAddr>,
    query_history: Option<usize>,
}

/// `[local]`: the keys of `local`, named like its flags.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalSection {
    workers: Option<usize>,
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    demo_tpch: Option<f64>,
    demo_shards: Option<u32>,
    demo_layout: Option<DemoLayout>,
    no_direct: Option<bool>,
    worker_threads: Option<usize>,
    worker_memory_limit: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    max_message_size: Option<SizeValue>,
    token_ttl: Option<DurationValue>,
    http_listen: Option<SocketAddr>,
    query_history: Option<usize>,
}

/// The security keys of a section.
struct FileSecurity {
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    max_message_size: Option<SizeValue>,
    token_ttl: Option<DurationValue>,
}

fn load_file(path: Option<&Path>) -> Result<FileConfig, BoxError> {
    let file: FileConfig = match path {
        Some(path) => read_toml(path)?,
        None => FileConfig::default(),
    };
    let _ = &file.worker;
    Ok(file)
}

/// Flags over file over defaults.
fn security(
    args: &ServerArgs,
    file: FileSecurity,
    users: Vec<UserConfig>,
    require_auth: bool,
) -> Result<Security, BoxError> {
    let tls = flight_worker::config::tls_from(
        args.tls_cert.clone().or(file.tls_cert).as_deref(),
        args.tls_key.clone().or(file.tls_key).as_deref(),
    )?;
    let tls_ca = match args.tls_ca.clone().or(file.tls_ca) {
        Some(path) => Some(flight_worker::tls::read_ca(&path)?),
        None => None,
    };
    let max_message_size = match (args.max_message_size, file.max_message_size) {
        (Some(n), _) => n,
        (None, Some(v)) => v.bytes()?,
        (None, None) => MAX_MESSAGE_BYTES,
    };
    let token_ttl = match (args.token_ttl, file.token_ttl) {
        (Some(d), _) => d,
        (None, Some(v)) => v.duration()?,
        (None, None) => DEFAULT_TOKEN_TTL,
    };
    Ok(Security {
        auth: AuthConfig { users, token_ttl },
        require_auth,
        tls,
        tls_ca,
        max_message_size,
    })
}

#[derive(Debug, Clone, Copy, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
enum DemoLayout {
    Star,
    Distributed,
}

impl From<DemoLayout> for flight_coordinator::tpch::Layout {
    fn from(l: DemoLayout) -> Self {
        match l {
            DemoLayout::Star => Self::Star,
            DemoLayout::Distributed => Self::Distributed,
        }
    }
}

/// The engine settings of `local` and `serve`.
fn engine_config(no_direct: bool, query_history: Option<usize>) -> EngineConfig {
    EngineConfig {
        direct: !no_direct,
        query_history: query_history.unwrap_or(flight_coordinator::query_log::DEFAULT_HISTORY),
        ..EngineConfig::default()
    }
}

fn worker_url(addr: &str, tls: bool) -> String {
    if addr.contains("://") {
        addr.to_string()
    } else if tls {
        format!("grpc+tls://{addr}")
    } else {
        format!("grpc://{addr}")
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

/// Waits until the registry answers (it may start after the coordinator),
/// or Ctrl-C.
async fn wait_for_registry(registry: &Arc<dyn Registry>) -> Result<(), BoxError> {
    let mut logged = false;
    loop {
        match registry.tables().await {
            Ok(_) => return Ok(()),
            Err(e) => {
                if !logged {
                    eprintln!("waiting for the registry {}: {e}", registry.describe());
                    logged = true;
                }
                tracing::warn!(registry = %registry.describe(), "registry not reachable yet: {e}");
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(2)) => {}
            () = shutdown_signal() => return Err("interrupted while waiting for the registry".into()),
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, BoxError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}").into())
}

/// The HTTP server of `--http-listen` (metrics and health probes).
struct HttpServer {
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Serves `routes` on `listener` and prints the address.
    fn start(listener: TcpListener, routes: Router) -> Result<Self, BoxError> {
        let addr = listener
            .local_addr()
            .map_err(|e| format!("the HTTP listener's address: {e}"))?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            flight_worker::http::serve(listener, routes, stopped.cancelled_owned()).await;
        });
        println!("flight-coordinator http on http://{addr}");
        Ok(Self { stop, task })
    }

    /// Stops accepting and drops open connections.
    async fn shutdown(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn stop_http(http: Option<HttpServer>) {
    if let Some(http) = http {
        http.shutdown().await;
    }
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    flight_worker::init_logging(
        tracing_subscriber::EnvFilter::try_from_env("FSQL_LOG")
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
    );
    let cli = Cli::parse();
    match cli.command {
        Command::Local {
            workers,
            listen,
            data_dir,
            demo_tpch,
            demo_shards,
            demo_layout,
            no_direct,
            worker_threads,
            worker_memory_limit,
            server,
        } => {
            let file = load_file(server.config.as_deref())?;
            let f = file.local;
            let workers = workers.or(f.workers).unwrap_or(2);
            let listen = listen
                .or(f.listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 32010)));
            let http_listen = server.http_listen.or(f.http_listen);
            let require_auth = !file.users.is_empty();
            if !require_auth && !listen.ip().is_loopback() {
                return Err(format!(
                    "refusing to start: `local` without users only listens on loopback, \
                     not {listen}; add [[users]] to a config file (--config) or use \
                     --listen 127.0.0.1:PORT"
                )
                .into());
            }
            if let Some(http) = http_listen
                && !require_auth
                && !http.ip().is_loopback()
            {
                return Err(format!(
                    "refusing to start: `local` without users only listens on loopback, \
                     not {http}; add [[users]] to a config file (--config) or use \
                     --http-listen 127.0.0.1:PORT"
                )
                .into());
            }
            let security = security(
                &server,
                FileSecurity {
                    tls_cert: f.tls_cert,
                    tls_key: f.tls_key,
                    tls_ca: f.tls_ca,
                    max_message_size: f.max_message_size,
                    token_ttl: f.token_ttl,
                },
                file.users,
                require_auth,
            )?;
            let tls = security.tls.is_some();
            let listener = bind(listen).await?;
            let http_listener = match http_listen {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            };
            let cluster = LocalCluster::start(
                LocalConfig {
                    workers,
                    data_dir: data_dir
                        .or(f.data_dir)
                        .unwrap_or_else(|| PathBuf::from("./data/local")),
                    engine: engine_config(
                        no_direct || f.no_direct.unwrap_or(false),
                        server.query_history.or(f.query_history),
                    ),
                    worker_threads: worker_threads.or(f.worker_threads),
                    worker_memory_limit: worker_memory_limit.or(f.worker_memory_limit),
                    security,
                },
                listener,
            )
            .await?;
            if let Some(sf) = demo_tpch.or(f.demo_tpch) {
                let shards = demo_shards.or(f.demo_shards).unwrap_or(workers as u32);
                let layout = demo_layout.or(f.demo_layout).unwrap_or(DemoLayout::Star);
                tracing::info!(sf, shards, "loading TPC-H demo data");
                flight_coordinator::local::load_tpch(cluster.engine(), sf, shards, layout.into())
                    .await?;
            }
            if require_auth {
                println!("auth: on (bearer tokens; Basic handshake for configured users)");
            } else {
                println!("auth: off (loopback only)");
            }
            println!("tls: {}", if tls { "on" } else { "off" });
            let http = match http_listener {
                Some(listener) => {
                    let collectors = cluster
                        .workers
                        .iter()
                        .map(|w| worker_collector(w.handle.storage()))
                        .collect();
                    let routes = coordinator_routes(Arc::clone(cluster.engine()), collectors);
                    Some(HttpServer::start(listener, routes)?)
                }
                None => None,
            };
            println!("flight-coordinator listening on {}", cluster.url());
            shutdown_signal().await;
            tracing::info!("shutting down");
            stop_http(http).await;
            cluster.shutdown().await;
        }
        Command::Serve {
            listen,
            registry,
            cluster,
            workers,
            secret,
            data_dir,
            no_direct,
            no_auth,
            server,
        } => {
            let file = load_file(server.config.as_deref())?;
            let f = file.coordinator;
            let listen = listen
                .or(f.listen)
                .unwrap_or(SocketAddr::from(([0, 0, 0, 0], 32010)));
            let workers = if workers.is_empty() {
                f.workers.unwrap_or_default()
            } else {
                workers
            };
            let registry = registry.or(f.registry);
            let cluster = cluster
                .or(f.cluster)
                .unwrap_or_else(|| flight_worker::registry::DEFAULT_CLUSTER.to_string());
            match (&registry, workers.is_empty()) {
                (None, true) => {
                    return Err(
                        "no workers: give a registry (--registry etcd://HOST:PORT) or a \
                         worker list (--workers HOST:PORT,...)"
                            .into(),
                    );
                }
                (Some(_), false) => {
                    return Err("give either --registry or --workers, not both".into());
                }
                _ => {}
            }
            let secret = secret
                .or(f.secret)
                .ok_or("no cluster secret (--secret, FSQL_SECRET or `secret` in [coordinator])")?;
            let no_auth = no_auth || f.no_auth.unwrap_or(false);
            let require_auth = !file.users.is_empty();
            if !require_auth && !no_auth {
                return Err("refusing to start without authentication: no users are \
                     configured; add [[users]] to the config file (--config), or pass \
                     --no-auth to serve without authentication"
                    .into());
            }
            let security = security(
                &server,
                FileSecurity {
                    tls_cert: f.tls_cert,
                    tls_key: f.tls_key,
                    tls_ca: f.tls_ca,
                    max_message_size: f.max_message_size,
                    token_ttl: f.token_ttl,
                },
                file.users,
                require_auth,
            )?;
            let worker_tls = security.tls.is_some() || security.tls_ca.is_some();
            let tls = security.tls.is_some();
            let listener = bind(listen).await?;
            let http_listener = match server.http_listen.or(f.http_listen) {
                Some(addr) => Some(bind(addr).await?),
                None => None,
            };
            let config = CoordinatorConfig {
                secret: secret.into_bytes().into(),
                engine: engine_config(
                    no_direct || f.no_direct.unwrap_or(false),
                    server.query_history.or(f.query_history),
                ),
                security,
            };
            let registry = match registry {
                Some(url) => {
                    let options = RegistryOptions {
                        cluster,
                        ..RegistryOptions::default()
                    };
                    let registry = flight_worker::registry::connect(&url, &options).await?;
                    wait_for_registry(&registry).await?;
                    registry
                }
                None => {
                    let urls: Vec<String> =
                        workers.iter().map(|w| worker_url(w, worker_tls)).collect();
                    if tls && let Some(plain) = urls.iter().find(|u| !u.starts_with("grpc+tls://"))
                    {
                        return Err(format!(
                            "the coordinator serves TLS but worker {plain} is plaintext: clients \
                             would be sent to a plaintext location; give the workers TLS \
                             certificates (grpc+tls://)"
                        )
                        .into());
                    }
                    let pool = flight_coordinator::server::worker_pool(&config);
                    let catalog_file = data_dir.or(f.data_dir).map(|d| d.join("catalog.pb"));
                    if let Some(dir) = catalog_file.as_ref().and_then(|p| p.parent()) {
                        std::fs::create_dir_all(dir)
                            .map_err(|e| format!("creating {}: {e}", dir.display()))?;
                    }
                    flight_coordinator::server::static_registry(&pool, &urls, catalog_file).await?
                }
            };
            let coordinator = flight_coordinator::server::start(config, registry, listener).await?;
            if require_auth {
                println!("auth: on (bearer tokens; Basic handshake for configured users)");
            } else {
                eprintln!(
                    "WARNING: auth: off (--no-auth): anyone who can reach {listen} can read \
                     and change all data"
                );
                tracing::warn!("serving without authentication (--no-auth)");
                println!("auth: off (--no-auth)");
            }
            println!("tls: {}", if tls { "on" } else { "off" });
            let http = match http_listener {
                Some(listener) => Some(HttpServer::start(
                    listener,
                    coordinator_routes(Arc::clone(coordinator.engine()), Vec::new()),
                )?),
                None => None,
            };
            println!("flight-coordinator listening on {}", coordinator.url());
            shutdown_signal().await;
            stop_http(http).await;
            coordinator.shutdown().await;
        }
        Command::Sql {
            uri,
            command,
            user,
            password,
            tls_ca,
        } => {
            let tls_ca = match tls_ca {
                Some(p) => {
                    Some(std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()))?)
                }
                None => None,
            };
            let connect = flight_coordinator::shell::Connect {
                uri,
                user,
                password,
                tls_ca,
            };
            flight_coordinator::shell::main(connect, command)
                .await
                .map_err(|e| -> BoxError { e.to_string().into() })?;
        }
        Command::HashPassword => {
            let mut input = String::new();
            std::io::stdin().read_line(&mut input)?;
            let password = input.strip_suffix('\n').unwrap_or(&input);
            let password = password.strip_suffix('\r').unwrap_or(password);
            if password.is_empty() {
                return Err("no password on stdin".into());
            }
            let hash = flight_worker::auth::hash_password(password)
                .map_err(|e| format!("hashing the password: {e}"))?;
            println!("{hash}");
        }
        Command::GenToken => {
            let (token, hash) = flight_worker::auth::generate_api_token();
            println!("token: {token}");
            println!("api_tokens entry: \"{hash}\"");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn the_example_config_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/fsql.example.toml");
        let file = load_file(Some(&path)).unwrap();
        assert_eq!(file.coordinator.workers.unwrap().len(), 2);
        assert_eq!(file.local.workers, Some(2));
        assert!(file.users.is_empty());
    }

    #[test]
    fn http_listen_is_a_key_of_both_sections() {
        let dir = std::env::temp_dir().join(format!("fsql-http-listen-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fsql.toml");
        std::fs::write(
            &path,
            "[coordinator]\nhttp_listen = \"0.0.0.0:8080\"\n\
             [local]\nhttp_listen = \"127.0.0.1:8081\"\n",
        )
        .unwrap();
        let file = load_file(Some(&path));
        std::fs::remove_dir_all(&dir).unwrap();
        let file = file.unwrap();
        assert_eq!(
            file.coordinator.http_listen,
            Some(SocketAddr::from(([0, 0, 0, 0], 8080)))
        );
        assert_eq!(
            file.local.http_listen,
            Some(SocketAddr::from(([127, 0, 0, 1], 8081)))
        );
    }

    #[test]
    fn flags_parse() {
        let cli = Cli::try_parse_from([
            "flight-coordinator",
            "serve",
            "--workers",
            "a:1,b:2",
            "--max-message-size",
            "1GiB",
            "--token-ttl",
            "30m",
            "--no-auth",
            "--http-listen",
            "127.0.0.1:8080",
        ])
        .unwrap();
        match cli.command {
            Command::Serve {
                workers,
                server,
                no_auth,
                ..
            } => {
                assert_eq!(workers, ["a:1", "b:2"]);
                assert_eq!(server.max_message_size, Some(1 << 30));
                assert_eq!(server.token_ttl, Some(Duration::from_secs(1800)));
                assert!(no_auth);
                assert_eq!(
                    server.http_listen,
                    Some(SocketAddr::from(([127, 0, 0, 1], 8080)))
                );
            }
            other => panic!("{other:?}"),
        }
    }
}
