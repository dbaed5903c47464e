//! Talking to workers: one gRPC channel per worker, signed requests, shard
//! reads (DoGet) and shard writes (DoPut).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::ipc::writer::IpcWriteOptions;
use arrow::record_batch::RecordBatch;
use arrow_flight::decode::FlightRecordBatchStream;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::{Action, FlightClient, FlightData, FlightDescriptor, SchemaAsIpc, Ticket};
use bytes::Bytes;
use fsql_proto::sign::Signer;
use fsql_proto::write_control::Step;
use fsql_proto::{ShardTarget, WorkerRequest, WriteControl, WriteResult, worker_request};
use futures::{Stream, StreamExt, TryStreamExt};
use parking_lot::Mutex;
use prost::Message;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
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

    /// Writes a stream of batches to one shard replica and commits;
    /// returns the rows written. An error in `batches` rolls the write back
    /// and is returned.
    pub async fn put(
        &self,
        url: &str,
        target: ShardTarget,
        schema: SchemaRef,
        batches: impl Stream<Item = Result<RecordBatch>>,
    ) -> Result<u64> {
        let mut writer = self.open_write(url, target, schema)?;
        futures::pin_mut!(batches);
        while let Some(batch) = batches.next().await {
            writer.send(batch?).await?;
        }
        writer.commit().await
    }

    /// Opens a two-phase write of one shard replica (see `ShardWrite` in
    /// `fsql.proto`).
    pub fn open_write(
        &self,
        url: &str,
        target: ShardTarget,
        schema: SchemaRef,
    ) -> Result<ShardWriter> {
        let cmd = self.signed(worker_request::Request::Write(fsql_proto::ShardWrite {
            target: Some(target),
        }));
        let mut client = self.client(url)?;
        let (batches, batch_rx) = mpsc::channel(4);
        let (control, control_rx) = mpsc::channel(2);
        let (reply_tx, replies) = mpsc::channel(2);
        // The rows, then the control steps once the rows have ended.
        let data = FlightDataEncoderBuilder::new()
            .with_flight_descriptor(Some(FlightDescriptor::new_cmd(cmd)))
            .with_schema(Arc::clone(&schema))
            .build(ReceiverStream::new(batch_rx).map(Ok))
            .chain(ReceiverStream::new(control_rx).map(Ok));
        let worker = url.to_string();
        let task = tokio::spawn(crate::query_log::carry(async move {
            let forwarded = async {
                let mut results = client
                    .do_put(data)
                    .await
                    .map_err(|e| worker_err(&worker, "write", e))?;
                while let Some(result) = results.next().await {
                    let result = result.map_err(|e| worker_err(&worker, "write", e))?;
                    let result = WriteResult::decode(result.app_metadata).map_err(|e| {
                        Error::Internal(format!("worker {worker} sent a bad write result: {e}"))
                    })?;
                    if reply_tx.send(Ok(result)).await.is_err() {
                        break;
                    }
                }
                Ok(())
            }
            .await;
            if let Err(e) = forwarded {
                let _ = reply_tx.send(Err(e)).await;
            }
        }));
        Ok(ShardWriter {
            schema: SchemaAsIpc::new(&schema, &IpcWriteOptions::default()).into(),
            url: url.to_string(),
            batches: Some(batches),
            control,
            replies,
            task,
        })
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

/// One shard replica's write in progress: rows go in with
/// [`ShardWriter::send`], then [`ShardWriter::prepare`] (every row is in the
/// worker's open transaction) and [`ShardWriter::commit`]. Dropped before
/// `commit`, the write is rolled back on the worker.
pub struct ShardWriter {
    /// The schema message that carries each write step.
    schema: FlightData,
    url: String,
    /// `None` once the rows have ended.
    batches: Option<mpsc::Sender<RecordBatch>>,
    control: mpsc::Sender<FlightData>,
    replies: mpsc::Receiver<Result<WriteResult>>,
    task: JoinHandle<()>,
}

impl ShardWriter {
    /// Sends rows; an error when the worker has stopped the write (its own
    /// error when it gave one).
    pub async fn send(&mut self, batch: RecordBatch) -> Result<()> {
        let sent = match &self.batches {
            Some(tx) => tx.send(batch).await.is_ok(),
            None => {
                return Err(Error::Internal(format!(
                    "rows sent after the write to {} was prepared",
                    self.url
                )));
            }
        };
        if sent {
            return Ok(());
        }
        Err(self.reply().await.err().unwrap_or_else(|| {
            Error::Internal(format!("the write to worker {} stopped early", self.url))
        }))
    }

    /// Ends the rows and waits until the worker holds them all in its open
    /// transaction; returns their count.
    pub async fn prepare(&mut self) -> Result<u64> {
        let result = self.step(Step::Prepare).await?;
        if result.committed {
            return Err(Error::Internal(format!(
                "worker {} committed a write it was asked to prepare",
                self.url
            )));
        }
        Ok(result.rows)
    }

    /// Commits the write (prepared or not); returns the rows written.
    pub async fn commit(mut self) -> Result<u64> {
        let result = self.step(Step::Commit).await?;
        if !result.committed {
            return Err(Error::Internal(format!(
                "worker {} did not confirm the commit of a write",
                self.url
            )));
        }
        Ok(result.rows)
    }

    async fn step(&mut self, step: Step) -> Result<WriteResult> {
        // Ends the row stream, so the control step follows the last row.
        self.batches = None;
        let message = self
            .schema
            .clone()
            .with_app_metadata(WriteControl { step: step as i32 }.encode_to_vec());
        // A closed channel means the write has ended: the reply says why.
        let _ = self.control.send(message).await;
        self.reply().await
    }

    async fn reply(&mut self) -> Result<WriteResult> {
        match self.replies.recv().await {
            Some(reply) => reply,
            None => Err(Error::Unavailable(format!(
                "the write to worker {} ended without an answer",
                self.url
            ))),
        }
    }
}

impl Drop for ShardWriter {
    fn drop(&mut self) {
        // Ends the DoPut without COMMIT: the worker rolls back.
        self.task.abort();
    }
}
