//! Talking to workers: one gRPC channel per worker, signed requests, shard
//! reads (DoGet) and shard writes (DoPut).

use std::collections::HashMap;
use std::time::Duration;

use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightDescriptor, Ticket};
use bytes::Bytes;
use fsql_proto::sign::Signer;
use fsql_proto::{ShardTarget, WorkerRequest, worker_request};
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::error::{Error, Result};

/// How long a signed ticket or request stays valid.
pub const TICKET_TTL: Duration = Duration::from_secs(600);

/// Turns a Flight location (`grpc://`, `grpc+tcp://`) into a tonic URI.
pub fn http_uri(url: &str) -> String {
    for prefix in ["grpc+tcp://", "grpc://"] {
        if let Some(rest) = url.strip_prefix(prefix) {
            return format!("http://{rest}");
        }
    }
    if let Some(rest) = url.strip_prefix("grpc+tls://") {
        return format!("https://{rest}");
    }
    url.to_string()
}

fn worker_err(url: &str, what: &str, e: FlightError) -> Error {
    let status = match e {
        FlightError::Tonic(s) => *s,
        other => tonic::Status::internal(other.to_string()),
    };
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::Unknown
            if status.message().contains("transport") =>
        {
            Error::Unavailable(format!(
                "worker {url} is unreachable ({what}): {}",
                status.message()
            ))
        }
        _ => Error::Worker {
            context: format!("worker {url} ({what})"),
            source: status,
        },
    }
}

/// Channels to workers and the cluster secret.
#[derive(Debug)]
pub struct WorkerPool {
    signer: Signer,
    channels: Mutex<HashMap<String, Channel>>,
    /// Trust for `grpc+tls://` workers.
    tls: Option<ClientTlsConfig>,
}

impl WorkerPool {
    pub fn new(signer: Signer) -> Self {
        Self {
            signer,
            channels: Mutex::new(HashMap::new()),
            tls: None,
        }
    }

    /// Connects to `grpc+tls://` workers trusting `tls`.
    pub fn with_tls(mut self, tls: ClientTlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    /// A (lazily connecting, cached) channel to a worker.
    pub fn channel(&self, url: &str) -> Result<Channel> {
        let mut channels = self.channels.lock();
        if let Some(c) = channels.get(url) {
            return Ok(c.clone());
        }
        let mut endpoint = Endpoint::from_shared(http_uri(url))
            .map_err(|e| Error::InvalidArgument(format!("bad worker address {url}: {e}")))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_adaptive_window(true);
        if url.starts_with("grpc+tls://") {
            let tls = self.tls.clone().ok_or_else(|| {
                Error::Config(format!(
                    "worker {url} serves TLS but no CA is configured to trust it (--tls-ca)"
                ))
            })?;
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|e| Error::Config(format!("TLS to worker {url}: {e}")))?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(url.to_string(), channel.clone());
        Ok(channel)
    }

    fn client(&self, url: &str) -> Result<FlightClient> {
        // Worker messages may exceed tonic's 4 MiB default (one wide row).
        let inner =
            arrow_flight::flight_service_client::FlightServiceClient::new(self.channel(url)?)
                .max_decoding_message_size(flight_worker::service::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(flight_worker::service::MAX_MESSAGE_BYTES);
        let mut client = FlightClient::new_from_inner(inner);
        if let Some(id) = crate::query_log::current_query_id() {
            // An id that is not a valid header value is left out.
            let _ = client.add_header(flight_worker::QUERY_ID_HEADER, &id);
        }
        Ok(client)
    }

    fn signed(&self, request: worker_request::Request) -> Bytes {
        let mut req = WorkerRequest {
            version: fsql_proto::WIRE_VERSION,
            expires_at_ms: fsql_proto::now_ms() + TICKET_TTL.as_millis() as i64,
            signature: Bytes::new(),
            request: Some(request),
        };
        self.signer.sign(&mut req)
    }

    /// Runs a signed DoAction and returns the result bodies.
    pub async fn action(
        &self,
        url: &str,
        kind: &str,
        request: worker_request::Request,
    ) -> Result<Vec<Bytes>> {
        let body = self.signed(request);
        let mut client = self.client(url)?;
        let stream = client
            .do_action(Action::new(kind, body))
            .await
            .map_err(|e| worker_err(url, kind, e))?;
        stream
            .try_collect()
            .await
            .map_err(|e| worker_err(url, kind, e))
    }

    /// Asks a worker for its id.
    pub async fn health(&self, url: &str) -> Result<String> {
        let mut client = self.client(url)?;
        let stream = client
            .do_action(Action::new("health", Bytes::new()))
            .await
            .map_err(|e| worker_err(url, "health", e))?;
        let bodies: Vec<Bytes> = stream
            .try_collect()
            .await
            .map_err(|e| worker_err(url, "health", e))?;
        let body = bodies.into_iter().next().unwrap_or_default();
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    /// Row counts and sizes of shards held by one worker.
    pub async fn shard_stats(
        &self,
        url: &str,
        targets: Vec<ShardTarget>,
    ) -> Result<Vec<fsql_proto::ShardStat>> {
        let bodies = self
            .action(
                url,
                flight_worker::ACTION_SHARD_STATS,
                worker_request::Request::ShardStats(fsql_proto::ShardStatsRequest { targets }),
            )
            .await?;
        let body = bodies.into_iter().next().unwrap_or_default();
        Ok(fsql_proto::ShardStatsResponse::decode(body)
            .map_err(|e| Error::Internal(format!("worker {url} sent bad shard stats: {e}")))?
            .stats)
    }

    /// Appends a stream of batches to one shard replica; returns rows written.
    pub async fn put(
        &self,
        url: &str,
        target: ShardTarget,
        batches: impl Stream<Item = RecordBatch> + Send + 'static,
    ) -> Result<u64> {
        let cmd = self.signed(worker_request::Request::Write(fsql_proto::ShardWrite {
            target: Some(target),
        }));
        let mut client = self.client(url)?;
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(cmd)))
            .build(batches.map(Ok));
        let results: Vec<_> = client
            .do_put(data)
            .await
            .map_err(|e| worker_err(url, "write", e))?
            .try_collect()
            .await
            .map_err(|e| worker_err(url, "write", e))?;
        let mut rows = 0;
        for r in results {
            rows += fsql_proto::WriteResult::decode(r.app_metadata)
                .map_err(|e| Error::Internal(format!("worker {url} sent a bad write result: {e}")))?
                .rows;
        }
        Ok(rows)
    }

    /// Reads a shard fragment with a signed ticket.
    pub async fn get(&self, url: &str, ticket: Bytes) -> Result<FlightRecordBatchStream> {
        let mut client = self.client(url)?;
        client
            .do_get(Ticket::new(ticket))
            .await
            .map_err(|e| worker_err(url, "read", e))
    }
}
