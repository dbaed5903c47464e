//! A Flight SQL client as BI drivers use it: one connection to the
//! coordinator, connections to workers opened once and kept, the endpoints of
//! a result read in parallel.

use std::collections::HashMap;

use arrow::array::RecordBatch;
use arrow_flight::sql::client::FlightSqlServiceClient;
use arrow_flight::{FlightInfo, Ticket};
use futures::TryStreamExt;
use tonic::transport::{Channel, Endpoint};

pub async fn connect(url: &str) -> Channel {
    Endpoint::from_shared(flight_coordinator::workers::http_uri(url))
        .unwrap()
        .tcp_nodelay(true)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("connecting to {url}: {e}"))
}

pub struct Client {
    pub coord: FlightSqlServiceClient<Channel>,
    workers: HashMap<String, FlightSqlServiceClient<Channel>>,
}

impl Client {
    pub async fn connect(url: &str) -> Self {
        Self {
            coord: FlightSqlServiceClient::new(connect(url).await),
            workers: HashMap::new(),
        }
    }

    /// `CommandStatementQuery` and every endpoint read; the number of rows.
    pub async fn query(&mut self, sql: &str) -> Result<usize, String> {
        let info = self
            .coord
            .execute(sql.to_string(), None)
            .await
            .map_err(|e| e.to_string())?;
        self.read(info).await
    }

    /// The client for each endpoint: the coordinator's when it names no
    /// location, else a kept connection to the first location.
    async fn sources(
        &mut self,
        info: FlightInfo,
    ) -> Result<Vec<(FlightSqlServiceClient<Channel>, Ticket)>, String> {
        let mut out = Vec::with_capacity(info.endpoint.len());
        for ep in info.endpoint {
            let ticket = ep.ticket.ok_or("an endpoint without a ticket")?;
            let client = match ep.location.first() {
                None => self.coord.clone(),
                Some(loc) => match self.workers.get(&loc.uri) {
                    Some(c) => c.clone(),
                    None => {
                        let c = FlightSqlServiceClient::new(connect(&loc.uri).await);
                        self.workers.insert(loc.uri.clone(), c.clone());
                        c
                    }
                },
            };
            out.push((client, ticket));
        }
        Ok(out)
    }

    /// Reads every endpoint in parallel, folding each stream's batches.
    async fn fold<T: Clone + Send + 'static>(
        &mut self,
        info: FlightInfo,
        init: T,
        f: fn(T, &RecordBatch) -> T,
    ) -> Result<Vec<T>, String> {
        let sources = self.sources(info).await?;
        let reads = sources.into_iter().map(|(mut client, ticket)| {
            let init = init.clone();
            async move {
                let mut stream = client.do_get(ticket).await.map_err(|e| e.to_string())?;
                let mut acc = init;
                while let Some(b) = stream.try_next().await.map_err(|e| e.to_string())? {
                    acc = f(acc, &b);
                }
                Ok::<_, String>(acc)
            }
        });
        futures::future::try_join_all(reads).await
    }

    /// Reads a result; the number of rows.
    pub async fn read(&mut self, info: FlightInfo) -> Result<usize, String> {
        let per = self.fold(info, 0usize, |n, b| n + b.num_rows()).await?;
        Ok(per.into_iter().sum())
    }

    /// Reads a result; the bytes of its Arrow buffers.
    pub async fn read_bytes(&mut self, info: FlightInfo) -> Result<usize, String> {
        let per = self
            .fold(info, 0usize, |n, b| n + crate::batch_bytes(b))
            .await?;
        Ok(per.into_iter().sum())
    }

    /// Reads a result and keeps its batches, one list per endpoint.
    pub async fn read_streams(
        &mut self,
        info: FlightInfo,
    ) -> Result<Vec<Vec<RecordBatch>>, String> {
        self.fold(info, Vec::new(), |mut v, b| {
            v.push(b.clone());
            v
        })
        .await
    }
}
