//! The cluster catalog: tables, their distribution and shard placement, and
//! the set of workers.
//!
//! This module owns the in-memory view and its persistence (a file of
//! `TableRecord`s in the coordinator's data directory when one is given).
//! It does not talk to workers; DDL in `engine` does that and then updates
//! the catalog once every shard agrees.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use bytes::Bytes;
use fsql_proto::{ShardPlacement, TableRecord, table_record};
use parking_lot::RwLock;
use prost::Message;

use crate::error::{Error, Result};

/// How a table's rows are spread over shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Distribution {
    /// Hash of one column (see `fsql_proto::hash`).
    Hash(String),
    /// Rows dealt to shards in turn.
    RoundRobin,
    /// A full copy on every worker.
    Reference,
}

impl std::fmt::Display for Distribution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Distribution::Hash(c) => write!(f, "hash({c})"),
            Distribution::RoundRobin => f.write_str("round_robin"),
            Distribution::Reference => f.write_str("reference"),
        }
    }
}

/// One cluster table.
#[derive(Debug, Clone)]
pub struct TableMeta {
    pub name: String,
    pub schema: SchemaRef,
    pub distribution: Distribution,
    pub shard_count: u32,
    /// Copies of each shard, on distinct workers (1 for reference tables,
    /// which are copied to every worker anyway).
    pub replicas: u32,
    /// Worker ids holding each shard (index = shard). Reference tables have
    /// one entry listing every worker.
    pub placement: Vec<Vec<String>>,
}

impl TableMeta {
    pub fn is_reference(&self) -> bool {
        self.distribution == Distribution::Reference
    }

    /// Index of the hash distribution column in the schema.
    pub fn hash_column(&self) -> Option<usize> {
        match &self.distribution {
            Distribution::Hash(c) => self.schema.index_of(c).ok(),
            _ => None,
        }
    }

    pub fn to_record(&self) -> Result<TableRecord> {
        let (distribution, column) = match &self.distribution {
            Distribution::Hash(c) => (table_record::Distribution::Hash, c.clone()),
            Distribution::RoundRobin => (table_record::Distribution::RoundRobin, String::new()),
            Distribution::Reference => (table_record::Distribution::Reference, String::new()),
        };
        Ok(TableRecord {
            name: self.name.clone(),
            schema: fsql_proto::ipc::schema_to_bytes(&self.schema)?,
            distribution: distribution as i32,
            distribution_column: column,
            shard_count: self.shard_count,
            replicas: self.replicas,
            placement: self
                .placement
                .iter()
                .enumerate()
                .map(|(i, w)| ShardPlacement {
                    shard: i as u32,
                    workers: w.clone(),
                })
                .collect(),
        })
    }

    pub fn from_record(r: &TableRecord) -> Result<Self> {
        let schema = fsql_proto::ipc::schema_from_bytes(&r.schema)?;
        let distribution = match table_record::Distribution::try_from(r.distribution) {
            Ok(table_record::Distribution::Hash) => {
                Distribution::Hash(r.distribution_column.clone())
            }
            Ok(table_record::Distribution::RoundRobin) => Distribution::RoundRobin,
            Ok(table_record::Distribution::Reference) => Distribution::Reference,
            Err(_) => {
                return Err(Error::Internal(format!(
                    "table record {} has unknown distribution {}",
                    r.name, r.distribution
                )));
            }
        };
        let mut placement = vec![Vec::new(); r.placement.len()];
        for p in &r.placement {
            if let Some(slot) = placement.get_mut(p.shard as usize) {
                *slot = p.workers.clone();
            }
        }
        Ok(Self {
            name: r.name.clone(),
            schema,
            distribution,
            shard_count: r.shard_count,
            replicas: r.replicas.max(1),
            placement,
        })
    }
}

/// A worker as the coordinator knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub id: String,
    /// `grpc://host:port`
    pub url: String,
}

/// Tables and workers.
#[derive(Debug, Default)]
pub struct Catalog {
    tables: RwLock<BTreeMap<String, Arc<TableMeta>>>,
    workers: RwLock<Vec<WorkerInfo>>,
    path: Option<PathBuf>,
}

impl Catalog {
    /// A catalog persisted to `dir/catalog.pb` (loaded if present).
    pub fn open(dir: Option<PathBuf>) -> Result<Self> {
        if let Some(d) = &dir {
            std::fs::create_dir_all(d)
                .map_err(|e| Error::Internal(format!("creating {}: {e}", d.display())))?;
        }
        let path = dir.map(|d| d.join("catalog.pb"));
        let mut tables = BTreeMap::new();
        if let Some(p) = path.as_ref().filter(|p| p.exists()) {
            let bytes = std::fs::read(p)
                .map_err(|e| Error::Internal(format!("reading {}: {e}", p.display())))?;
            let mut buf = Bytes::from(bytes);
            while !buf.is_empty() {
                let rec = TableRecord::decode_length_delimited(&mut buf).map_err(|e| {
                    Error::Internal(format!("corrupt catalog file {}: {e}", p.display()))
                })?;
                let meta = TableMeta::from_record(&rec)?;
                tables.insert(meta.name.clone(), Arc::new(meta));
            }
        }
        Ok(Self {
            tables: RwLock::new(tables),
            workers: RwLock::new(Vec::new()),
            path,
        })
    }

    fn persist(&self, tables: &BTreeMap<String, Arc<TableMeta>>) -> Result<()> {
        let Some(path) = &self.path else {
            return Ok(());
        };
        let mut buf = Vec::new();
        for t in tables.values() {
            t.to_record()?
                .encode_length_delimited(&mut buf)
                .map_err(|e| Error::Internal(e.to_string()))?;
        }
        let tmp = path.with_extension("pb.tmp");
        std::fs::write(&tmp, &buf)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| Error::Internal(format!("writing {}: {e}", path.display())))
    }

    pub fn table(&self, name: &str) -> Option<Arc<TableMeta>> {
        self.tables.read().get(name).cloned()
    }

    pub fn tables(&self) -> Vec<Arc<TableMeta>> {
        self.tables.read().values().cloned().collect()
    }

    pub fn put_table(&self, meta: TableMeta) -> Result<Arc<TableMeta>> {
        let meta = Arc::new(meta);
        let mut tables = self.tables.write();
        tables.insert(meta.name.clone(), Arc::clone(&meta));
        self.persist(&tables)?;
        Ok(meta)
    }

    pub fn remove_table(&self, name: &str) -> Result<Option<Arc<TableMeta>>> {
        let mut tables = self.tables.write();
        let old = tables.remove(name);
        self.persist(&tables)?;
        Ok(old)
    }

    pub fn set_workers(&self, mut workers: Vec<WorkerInfo>) {
        workers.sort_by(|a, b| a.id.cmp(&b.id));
        *self.workers.write() = workers;
    }

    /// Live workers, sorted by id.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.workers.read().clone()
    }

    pub fn worker_url(&self, id: &str) -> Option<String> {
        self.workers
            .read()
            .iter()
            .find(|w| w.id == id)
            .map(|w| w.url.clone())
    }
}
