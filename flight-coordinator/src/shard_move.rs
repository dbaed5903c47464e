//! `ALTER TABLE name MOVE SHARD n FROM 'worker' TO 'worker'`: moves one
//! replica of a shard to another worker (e.g. one that just joined).
//!
//! The move copies the shard from the source replica into a fresh shard on
//! the target, checks that both hold the same number of rows, and switches
//! the placement in one conditional catalog write (it fails if the table
//! changed meanwhile). Queries planned before the switch read the old copy,
//! queries planned after it the new one; no query reads a half-copied
//! shard. Writes to the table through this coordinator wait for the move.
//! The old copy is dropped once the queries running at the switch have
//! finished.

use std::sync::Arc;
use std::time::Instant;

use datafusion::datasource::provider_as_source;
use datafusion::logical_expr::LogicalPlanBuilder;
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
use futures::TryStreamExt;

use crate::engine::Engine;
use crate::error::{Error, Result};
use flight_worker::fragment::ShardScanTable;

/// A parsed `ALTER TABLE ... MOVE SHARD` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MoveShard {
    pub table: String,
    pub shard: u32,
    pub from: String,
    pub to: String,
}

const SYNTAX: &str = "ALTER TABLE name MOVE SHARD n FROM 'worker id' TO 'worker id'";

/// Recognizes `ALTER TABLE name MOVE SHARD n FROM 'a' TO 'b'` (keywords in
/// any case; the worker ids as string literals or identifiers). `None` when
/// the statement is something else; an error when it is a malformed move.
pub fn parse(sql: &str) -> Option<Result<MoveShard>> {
    let tokens = Tokenizer::new(&GenericDialect {}, sql).tokenize().ok()?;
    let tokens: Vec<Token> = tokens
        .into_iter()
        .filter(|t| !matches!(t, Token::Whitespace(_)))
        .collect();
    let word = |i: usize, kw: &str| matches!(tokens.get(i), Some(Token::Word(w)) if w.quote_style.is_none() && w.value.eq_ignore_ascii_case(kw));
    if !(word(0, "ALTER") && word(1, "TABLE") && word(3, "MOVE") && word(4, "SHARD")) {
        return None;
    }
    let bad = || Some(Err(Error::InvalidArgument(format!("expected {SYNTAX}"))));
    let name = |t: Option<&Token>| match t {
        Some(Token::Word(w)) => Some(if w.quote_style.is_some() {
            w.value.clone()
        } else {
            w.value.to_lowercase()
        }),
        Some(Token::SingleQuotedString(s)) => Some(s.clone()),
        _ => None,
    };
    let Some(table) = name(tokens.get(2)) else {
        return bad();
    };
    let Some(Token::Number(n, _)) = tokens.get(5) else {
        return bad();
    };
    let Ok(shard) = n.parse::<u32>() else {
        return bad();
    };
    let worker = |t: Option<&Token>| match t {
        Some(Token::SingleQuotedString(s)) => Some(s.clone()),
        Some(Token::Word(w)) => Some(w.value.clone()),
        _ => None,
    };
    let (Some(from), Some(to)) = (worker(tokens.get(7)), worker(tokens.get(9))) else {
        return bad();
    };
    let rest_ok = matches!(tokens.get(10), None | Some(Token::SemiColon | Token::EOF));
    if !word(6, "FROM") || !word(8, "TO") || !rest_ok {
        return bad();
    }
    Some(Ok(MoveShard {
        table,
        shard,
        from,
        to,
    }))
}

impl Engine {
    /// Runs a shard move; returns the rows moved.
    pub async fn move_shard(&self, m: &MoveShard) -> Result<i64> {
        let lock = self.table_lock(&m.table);
        let _writes_wait = lock.write().await;
        let (mut meta, revision) = self
            .catalog
            .revision(&m.table)
            .await?
            .ok_or_else(|| Error::NotFound(format!("table {} does not exist", m.table)))?;
        if meta.is_reference() {
            return Err(Error::InvalidArgument(format!(
                "table {} is a reference table: every worker holds a copy, there is no shard to move",
                m.table
            )));
        }
        let holders = meta.placement.get(m.shard as usize).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "table {} has shards 0 to {}, not {}",
                m.table,
                meta.shard_count.saturating_sub(1),
                m.shard
            ))
        })?;
        if !holders.contains(&m.from) {
            return Err(Error::InvalidArgument(format!(
                "shard {} of {} is not on worker {} (it is on {}; see system.shards)",
                m.shard,
                m.table,
                m.from,
                holders.join(", ")
            )));
        }
        if holders.contains(&m.to) {
            return Err(Error::InvalidArgument(format!(
                "worker {} already holds a replica of shard {} of {}",
                m.to, m.shard, m.table
            )));
        }
        let from_url = self.catalog.worker_url(&m.from).ok_or_else(|| {
            Error::Unavailable(format!(
                "worker {} is not live: the shard is copied from it (see system.workers)",
                self.catalog.describe_worker(&m.from)
            ))
        })?;
        let to_url = self.catalog.worker_url(&m.to).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "worker {} is not live (see system.workers for the live workers)",
                m.to
            ))
        })?;
        let target = fsql_proto::ShardTarget {
            table: meta.storage.clone(),
            shard: m.shard,
            reference: false,
        };
        let started = Instant::now();
        let copied = self.copy_shard(&meta, &target, &from_url, &to_url).await;
        let rows = match copied {
            Ok(rows) => rows,
            Err(e) => {
                self.drop_replica(&to_url, &target).await;
                return Err(e);
            }
        };
        let holders = &mut meta.placement[m.shard as usize];
        for h in holders.iter_mut() {
            if *h == m.from {
                h.clone_from(&m.to);
            }
        }
        let running = self.running_queries();
        if let Err(e) = self.catalog.replace_table(&meta, revision).await {
            self.drop_replica(&to_url, &target).await;
            return Err(e);
        }
        tracing::info!(
            table = %m.table,
            shard = m.shard,
            from = %m.from,
            to = %m.to,
            rows,
            secs = started.elapsed().as_secs_f64(),
            "shard moved"
        );
        // Queries planned before the switch may still read the old copy.
        crate::staged::drained(&self.cancels(), &running).await;
        self.drop_replica(&from_url, &target).await;
        Ok(rows as i64)
    }

    /// Copies one shard replica from `from_url` into a fresh shard at
    /// `to_url`; checks both hold the same rows. Returns the rows copied.
    async fn copy_shard(
        &self,
        meta: &crate::catalog::TableMeta,
        target: &fsql_proto::ShardTarget,
        from_url: &str,
        to_url: &str,
    ) -> Result<u64> {
        let schema = fsql_proto::ipc::schema_to_bytes(&meta.schema)?;
        self.fresh_shard(to_url.to_string(), target.clone(), schema.clone())
            .await?;
        let scan = LogicalPlanBuilder::scan(
            meta.name.as_str(),
            provider_as_source(Arc::new(ShardScanTable {
                table: meta.storage.clone(),
                reference: false,
                schema: Arc::clone(&meta.schema),
                files: None,
            })),
            None,
        )?
        .build()?;
        let fragment = flight_worker::fragment::encode_fragment(&scan)?;
        let query_id = format!("move-{}", uuid::Uuid::new_v4());
        let ticket =
            crate::gather::shard_ticket(&self.pool, &query_id, target.shard, &fragment, &schema);
        let source = self.pool.get(from_url, ticket).await?;
        // A read error rolls the copy back.
        let batches = source.map_err(|e| {
            Error::Unavailable(format!(
                "reading shard {} of {} from {from_url}: {e}",
                target.shard, meta.name
            ))
        });
        let written = self
            .pool
            .put(to_url, target.clone(), Arc::clone(&meta.schema), batches)
            .await?;
        let count = |url: &str| {
            let target = target.clone();
            let url = url.to_string();
            async move {
                let stats = self.pool.shard_stats(&url, vec![target]).await?;
                Ok::<_, Error>(stats.first().map(|s| s.rows))
            }
        };
        let (before, after) = (count(from_url).await?, count(to_url).await?);
        if before != Some(written) || after != Some(written) {
            return Err(Error::Aborted(format!(
                "shard {} of {} changed while it was copied ({before:?} rows at the source, \
                 {written} copied, {after:?} at the target); nothing was moved, retry",
                target.shard, meta.name
            )));
        }
        Ok(written)
    }

    async fn drop_replica(&self, url: &str, target: &fsql_proto::ShardTarget) {
        if let Err(e) = crate::engine::drop_shard(&self.pool, url.to_string(), target.clone()).await
        {
            tracing::warn!(
                table = %target.table,
                shard = target.shard,
                worker = url,
                "dropping a shard replica: {e}"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_moves() {
        let m = parse("alter table Orders move shard 3 from 'w-1' to 'w-2';")
            .unwrap()
            .unwrap();
        assert_eq!(
            m,
            MoveShard {
                table: "orders".into(),
                shard: 3,
                from: "w-1".into(),
                to: "w-2".into()
            }
        );
        assert!(parse("ALTER TABLE t ADD COLUMN x INT").is_none());
        assert!(parse("SELECT 1").is_none());
        assert!(
            parse("ALTER TABLE t MOVE SHARD x FROM 'a' TO 'b'")
                .unwrap()
                .is_err()
        );
        assert!(
            parse("ALTER TABLE t MOVE SHARD 1 FROM 'a'")
                .unwrap()
                .is_err()
        );
        assert!(
            parse("ALTER TABLE t MOVE SHARD 1 FROM 'a' TO 'b' now")
                .unwrap()
                .is_err()
        );
    }
}
