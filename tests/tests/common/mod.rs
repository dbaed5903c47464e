//! Shared fixtures: an in-process local cluster on loopback and a Flight SQL
//! client that reads every endpoint of a FlightInfo like a real driver.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod etcd;

use std::time::Duration;

use arrow::array::RecordBatch;
use arrow_flight::FlightInfo;
use arrow_flight::sql::client::FlightSqlServiceClient;
use flight_coordinator::engine::EngineConfig;
use flight_coordinator::local::{LocalCluster, LocalConfig};
use flight_coordinator::server::Security;
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

pub struct TestCluster {
    pub cluster: LocalCluster,
    pub dir: tempfile::TempDir,
}

impl TestCluster {
    pub async fn start(workers: usize) -> Self {
        Self::start_with(workers, true).await
    }

    pub async fn start_with(workers: usize, direct: bool) -> Self {
        Self::start_sharded(workers, direct, None).await
    }

    /// A cluster whose distributed tables get `default_shards` shards when
    /// `CREATE TABLE` names none (default: one per worker).
    pub async fn start_sharded(workers: usize, direct: bool, default_shards: Option<u32>) -> Self {
        Self::start_full(workers, direct, default_shards, Security::default()).await
    }

    /// A cluster with users, TLS or a message size (see `auth_tls.rs`).
    pub async fn start_secure(workers: usize, security: Security) -> Self {
        Self::start_full(workers, true, None, security).await
    }

    pub async fn start_full(
        workers: usize,
        direct: bool,
        default_shards: Option<u32>,
        security: Security,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let cluster = tokio::time::timeout(
            Duration::from_secs(60),
            LocalCluster::start(
                LocalConfig {
                    workers,
                    data_dir: dir.path().to_path_buf(),
                    engine: EngineConfig {
                        direct,
                        default_shards,
                        ..EngineConfig::default()
                    },
                    worker_threads: Some(1),
                    worker_memory_limit: Some("1GB".into()),
                    security,
                },
                listener,
            ),
        )
        .await
        .expect("cluster start timed out")
        .expect("cluster start");
        Self { cluster, dir }
    }

    pub async fn client(&self) -> Client {
        Client::connect(&self.cluster.url()).await
    }

    pub async fn stop(self) {
        self.cluster.shutdown().await;
    }
}

pub async fn channel(url: &str) -> Channel {
    let uri = flight_coordinator::workers::http_uri(url);
    Endpoint::from_shared(uri)
        .unwrap()
        .connect_timeout(Duration::from_secs(5))
        .connect()
        .await
        .unwrap()
}

pub struct Client {
    pub url: String,
    pub sql: FlightSqlServiceClient<Channel>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        Self {
            url: url.to_string(),
            sql: FlightSqlServiceClient::new(channel(url).await),
        }
    }

    /// Reads every endpoint of `info` (following locations to the workers),
    /// checking each stream's schema against the FlightInfo schema.
    pub async fn read_info(
        &mut self,
        info: &FlightInfo,
    ) -> Result<Vec<RecordBatch>, tonic::Status> {
        let expected = info.clone().try_decode_schema().unwrap();
        let mut out = Vec::new();
        for ep in &info.endpoint {
            let ticket = ep.ticket.clone().unwrap();
            let stream = if ep.location.is_empty() {
                self.sql.do_get(ticket).await
            } else {
                let mut c = FlightSqlServiceClient::new(channel(&ep.location[0].uri).await);
                c.do_get(ticket).await
            }
            .map_err(to_status)?;
            let batches: Vec<RecordBatch> = stream.try_collect().await.map_err(to_status)?;
            for b in &batches {
                assert_eq!(
                    b.schema().as_ref(),
                    &expected,
                    "endpoint schema differs from FlightInfo schema"
                );
            }
            out.extend(batches);
        }
        Ok(out)
    }

    pub async fn query(&mut self, sql: &str) -> Result<Vec<RecordBatch>, tonic::Status> {
        let info = self
            .sql
            .execute(sql.to_string(), None)
            .await
            .map_err(to_status)?;
        self.read_info(&info).await
    }

    pub async fn info(&mut self, sql: &str) -> Result<FlightInfo, tonic::Status> {
        self.sql
            .execute(sql.to_string(), None)
            .await
            .map_err(to_status)
    }

    pub async fn update(&mut self, sql: &str) -> Result<i64, tonic::Status> {
        self.sql
            .execute_update(sql.to_string(), None)
            .await
            .map_err(to_status)
    }
}

pub fn to_status(e: arrow_flight::error::FlightError) -> tonic::Status {
    match e {
        arrow_flight::error::FlightError::Tonic(s) => *s,
        other => tonic::Status::unknown(other.to_string()),
    }
}

pub fn rows(batches: &[RecordBatch]) -> usize {
    batches.iter().map(|b| b.num_rows()).sum()
}

/// The batches as aligned text (for assertions and messages).
pub fn pretty(batches: &[RecordBatch]) -> String {
    arrow::util::pretty::pretty_format_batches(batches)
        .unwrap()
        .to_string()
}
