//! The static registry: a fixed list of workers, all of them live.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fsql_proto::{TableRecord, WorkerRecord};
use tokio::sync::watch;

use super::embedded::MemCatalog;
use super::{
    Announcement, CasOutcome, Registry, RegistryError, Result, VersionedTable, check_worker_record,
};

/// One worker of a static list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticWorker {
    /// The worker id (default: `HOST:PORT`).
    pub id: String,
    /// Flight URL, e.g. `grpc://127.0.0.1:5001`.
    pub address: String,
}

impl StaticWorker {
    /// Parses `[ID@]HOST:PORT` or `[ID@]grpc[+tls]://HOST:PORT`.
    pub fn parse(entry: &str) -> Result<Self> {
        let entry = entry.trim();
        let (id, addr) = match entry.split_once('@') {
            Some((id, addr)) => (Some(id.trim()), addr.trim()),
            None => (None, entry),
        };
        let host_port = addr
            .strip_prefix("grpc://")
            .or_else(|| addr.strip_prefix("grpc+tls://"))
            .unwrap_or(addr)
            .trim_end_matches('/');
        if host_port.is_empty() || host_port.contains('/') || !host_port.contains(':') {
            return Err(RegistryError::Invalid(format!(
                "static worker {entry:?} is not [ID@]HOST:PORT"
            )));
        }
        let address = if addr.contains("://") {
            addr.trim_end_matches('/').to_string()
        } else {
            format!("grpc://{host_port}")
        };
        let id = id.unwrap_or(host_port).to_string();
        fsql_proto::registry::check_segment("worker id", &id)?;
        Ok(Self { id, address })
    }
}

/// A fixed list of workers (all live, whatever they announce) and a catalog
/// in memory or in a file. Clones share the same catalog.
#[derive(Debug, Clone)]
pub struct StaticRegistry {
    url: String,
    workers: Arc<watch::Sender<Vec<WorkerRecord>>>,
    catalog: Arc<MemCatalog>,
}

impl StaticRegistry {
    /// The given workers; the catalog in `catalog_file` (length-delimited
    /// `TableRecord`s, loaded if it exists) or in memory.
    pub fn new(workers: Vec<StaticWorker>, catalog_file: Option<PathBuf>) -> Result<Self> {
        if workers.is_empty() {
            return Err(RegistryError::Invalid(
                "a static registry needs at least one worker".into(),
            ));
        }
        let mut records: Vec<WorkerRecord> = workers
            .iter()
            .map(|w| WorkerRecord {
                id: w.id.clone(),
                address: w.address.clone(),
                ..Default::default()
            })
            .collect();
        records.sort_by(|a, b| a.id.cmp(&b.id));
        if records.windows(2).any(|w| w[0].id == w[1].id) {
            return Err(RegistryError::Invalid(
                "a static registry lists the same worker id twice".into(),
            ));
        }
        let url = format!(
            "static://{}{}",
            workers
                .iter()
                .map(|w| format!("{}@{}", w.id, w.address))
                .collect::<Vec<_>>()
                .join(","),
            catalog_file
                .as_ref()
                .map(|p| format!("?catalog={}", p.display()))
                .unwrap_or_default()
        );
        let catalog = match catalog_file {
            Some(path) => MemCatalog::open(path)?,
            None => MemCatalog::in_memory(),
        };
        Ok(Self {
            url,
            workers: Arc::new(watch::channel(records).0),
            catalog: Arc::new(catalog),
        })
    }

    /// Parses what follows `static://`: `ENTRY[,ENTRY...][?catalog=PATH]`.
    pub fn from_url_body(body: &str) -> Result<Self> {
        let (list, query) = match body.split_once('?') {
            Some((list, query)) => (list, Some(query)),
            None => (body, None),
        };
        let mut catalog = None;
        if let Some(query) = query {
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("catalog", path)) if !path.is_empty() => {
                        catalog = Some(PathBuf::from(path));
                    }
                    _ => {
                        return Err(RegistryError::Invalid(format!(
                            "unknown static registry option {pair:?} (expected catalog=PATH)"
                        )));
                    }
                }
            }
        }
        let workers = list
            .split(',')
            .filter(|e| !e.trim().is_empty())
            .map(StaticWorker::parse)
            .collect::<Result<Vec<_>>>()?;
        Self::new(workers, catalog)
    }
}

super::impl_registry_with_mem_catalog!(StaticRegistry {
    fn describe(&self) -> String {
        self.url.clone()
    }

    /// Accepted and ignored: the list says who is live.
    async fn announce(&self, record: WorkerRecord, ttl: Duration) -> Result<Announcement> {
        check_worker_record(&record, ttl)?;
        let announcement = Announcement::spawn(record, |task| async move {
            task.registered.send_replace(true);
            if let Ok(ack) = task.withdraw.await {
                let _ = ack.send(Ok(()));
            }
        });
        let _ = announcement.registered().wait_for(|r| *r).await;
        Ok(announcement)
    }

    async fn workers(&self) -> Result<Vec<WorkerRecord>> {
        Ok(self.workers.borrow().clone())
    }

    async fn watch_workers(&self) -> Result<watch::Receiver<Vec<WorkerRecord>>> {
        Ok(self.workers.subscribe())
    }

});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_entries() -> Result<()> {
        let w = StaticWorker::parse("127.0.0.1:5001")?;
        assert_eq!(w.id, "127.0.0.1:5001");
        assert_eq!(w.address, "grpc://127.0.0.1:5001");
        let w = StaticWorker::parse("w2@grpc+tls://db2:5001")?;
        assert_eq!(w.id, "w2");
        assert_eq!(w.address, "grpc+tls://db2:5001");
        assert!(StaticWorker::parse("nohost").is_err());
        let r = StaticRegistry::from_url_body("a@h:1,h:2")?;
        assert_eq!(r.workers.borrow().len(), 2);
        assert!(StaticRegistry::from_url_body("h:1?bogus=1").is_err());
        Ok(())
    }
}
