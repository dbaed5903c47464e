//! The registry key layout, shared by every registry implementation and by
//! anyone reading an etcd cluster with `etcdctl`.
//!
//! ```text
//! /<prefix>/<cluster>/workers/<worker id>   WorkerRecord (prost-encoded), under the worker's lease
//! /<prefix>/<cluster>/catalog/<table>       TableRecord  (prost-encoded), placement included
//! ```
//!
//! The prefix defaults to [`DEFAULT_PREFIX`] (`fsql`). Values are the
//! protobuf encodings of the `fsql.v1` messages in `proto/fsql.proto`, so a
//! newer peer can add fields without breaking an older one. A table's shard
//! placement (`TableRecord.placement`) travels inside its record, so one
//! key write changes a table and its placement atomically.

use std::fmt;

/// The default first path segment of every key.
pub const DEFAULT_PREFIX: &str = "fsql";

/// Why a prefix, cluster name, worker id or table name cannot be a key segment.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid registry {what} {value:?}: {reason}")]
pub struct KeyError {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// Checks that `value` can be one path segment of a key: not empty, no `/`,
/// no control characters, at most 255 bytes.
pub fn check_segment(what: &'static str, value: &str) -> Result<(), KeyError> {
    let err = |reason| {
        Err(KeyError {
            what,
            value: value.to_string(),
            reason,
        })
    };
    if value.is_empty() {
        return err("must not be empty");
    }
    if value.len() > 255 {
        return err("must be at most 255 bytes");
    }
    if value.contains('/') {
        return err("must not contain '/'");
    }
    if value.chars().any(char::is_control) {
        return err("must not contain control characters");
    }
    Ok(())
}

/// The keys of one cluster: `/<prefix>/<cluster>/...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyLayout {
    prefix: String,
    cluster: String,
}

impl KeyLayout {
    /// The layout of `cluster` under `prefix` (both checked with
    /// [`check_segment`]; a leading or trailing `/` of the prefix is ignored).
    pub fn new(prefix: &str, cluster: &str) -> Result<Self, KeyError> {
        let prefix = prefix.trim_matches('/');
        check_segment("prefix", prefix)?;
        check_segment("cluster name", cluster)?;
        Ok(Self {
            prefix: prefix.to_string(),
            cluster: cluster.to_string(),
        })
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn cluster(&self) -> &str {
        &self.cluster
    }

    /// `/<prefix>/<cluster>/`: everything of this cluster.
    pub fn cluster_root(&self) -> String {
        format!("/{}/{}/", self.prefix, self.cluster)
    }

    /// `/<prefix>/<cluster>/workers/`: the live workers (watch this prefix).
    pub fn workers_prefix(&self) -> String {
        format!("{}workers/", self.cluster_root())
    }

    /// `/<prefix>/<cluster>/workers/<id>`.
    pub fn worker_key(&self, id: &str) -> Result<String, KeyError> {
        check_segment("worker id", id)?;
        Ok(format!("{}{id}", self.workers_prefix()))
    }

    /// `/<prefix>/<cluster>/catalog/`: the tables (watch this prefix).
    pub fn catalog_prefix(&self) -> String {
        format!("{}catalog/", self.cluster_root())
    }

    /// `/<prefix>/<cluster>/catalog/<table>`.
    pub fn table_key(&self, table: &str) -> Result<String, KeyError> {
        check_segment("table name", table)?;
        Ok(format!("{}{table}", self.catalog_prefix()))
    }

    /// The worker id of a key under [`Self::workers_prefix`].
    pub fn worker_id_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        leaf(key, &self.workers_prefix())
    }

    /// The table name of a key under [`Self::catalog_prefix`].
    pub fn table_of<'a>(&self, key: &'a str) -> Option<&'a str> {
        leaf(key, &self.catalog_prefix())
    }
}

impl fmt::Display for KeyLayout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.cluster_root())
    }
}

fn leaf<'a>(key: &'a str, prefix: &str) -> Option<&'a str> {
    key.strip_prefix(prefix)
        .filter(|rest| !rest.is_empty() && !rest.contains('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout() -> Result<(), KeyError> {
        let k = KeyLayout::new("/fsql/", "prod")?;
        assert_eq!(k.workers_prefix(), "/fsql/prod/workers/");
        assert_eq!(k.worker_key("w1")?, "/fsql/prod/workers/w1");
        assert_eq!(k.table_key("orders")?, "/fsql/prod/catalog/orders");
        assert_eq!(k.worker_id_of("/fsql/prod/workers/w1"), Some("w1"));
        assert_eq!(k.worker_id_of("/fsql/prod/workers/"), None);
        assert_eq!(k.table_of("/fsql/prod/catalog/a/b"), None);
        assert!(k.worker_key("a/b").is_err());
        assert!(KeyLayout::new("fsql", "").is_err());
        Ok(())
    }
}
