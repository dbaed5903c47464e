//! The statements this coordinator ran: the running ones and a bounded
//! history of finished ones, read as `system.queries`.
//!
//! A [`Tracked`] statement is registered when it starts; rows and bytes are
//! added as its result streams; it is finished with its outcome (dropped
//! unfinished: `cancelled`, the client stopped reading). The history keeps
//! the last `capacity` finished statements (`--query-history`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::Mutex;

/// Finished statements kept by default.
pub const DEFAULT_HISTORY: usize = 1000;

/// Longest statement text kept (longer ones are cut, marked with `...`).
const MAX_SQL: usize = 16 * 1024;

/// One statement, running or finished.
#[derive(Debug, Clone)]
pub struct QueryEntry {
    /// The query id (the one in its tickets), or a fresh id for updates.
    pub id: String,
    pub user: String,
    pub sql: String,
    pub started: SystemTime,
    /// Set when finished.
    pub duration: Option<Duration>,
    /// Rows returned (queries merged here) or written (updates); unknown
    /// for results read directly from the workers.
    pub rows: Option<u64>,
    /// Arrow bytes streamed by this coordinator.
    pub bytes: Option<u64>,
    /// `running`, `finished`, `failed` or `cancelled`.
    pub state: &'static str,
    pub error: Option<String>,
    /// Where the result was read: `coordinator`, or `N direct` endpoints.
    pub endpoints: String,
    /// How far a load has got (`37% (3/8 files, 1200000 rows written)`),
    /// the last value reported while it ran.
    pub progress: Option<String>,
}

#[derive(Debug, Default)]
struct State {
    next: u64,
    running: BTreeMap<u64, QueryEntry>,
    done: VecDeque<QueryEntry>,
}

/// Running statements and the recent history.
#[derive(Debug)]
pub struct QueryLog {
    capacity: usize,
    state: Mutex<State>,
}

impl QueryLog {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            state: Mutex::default(),
        }
    }

    /// Registers a statement that starts now.
    pub fn start(self: &Arc<Self>, id: &str, user: &str, sql: &str) -> Tracked {
        let mut sql = sql.trim().to_string();
        if sql.len() > MAX_SQL {
            let mut cut = MAX_SQL;
            while !sql.is_char_boundary(cut) {
                cut -= 1;
            }
            sql.truncate(cut);
            sql.push_str("...");
        }
        let entry = QueryEntry {
            id: id.to_string(),
            user: user.to_string(),
            sql,
            started: SystemTime::now(),
            duration: None,
            rows: None,
            bytes: None,
            state: "running",
            error: None,
            endpoints: "coordinator".into(),
            progress: None,
        };
        let mut state = self.state.lock();
        state.next += 1;
        let key = state.next;
        state.running.insert(key, entry);
        Tracked {
            log: Arc::clone(self),
            key,
            started: Instant::now(),
            rows: 0,
            bytes: 0,
            counted: false,
            done: false,
        }
    }

    /// Running statements (oldest first), then finished ones (newest first).
    pub fn entries(&self) -> Vec<QueryEntry> {
        let state = self.state.lock();
        let now = SystemTime::now();
        state
            .running
            .values()
            .map(|e| {
                let mut e = e.clone();
                e.duration = now.duration_since(e.started).ok();
                e
            })
            .chain(state.done.iter().rev().cloned())
            .collect()
    }
}

tokio::task_local! {
    static PROGRESS: ProgressSink;
    static QUERY_ID: String;
}

/// Runs `f` as the work of query `id`: inside a `query` span, with the id
/// sent to the workers in the gRPC metadata of its requests
/// (`x-fsql-query-id`; shard tickets carry it too), where their spans and
/// log lines name it.
pub async fn in_query<F: std::future::Future>(id: String, f: F) -> F::Output {
    use tracing::Instrument;
    let span = tracing::info_span!("query", query_id = %id);
    QUERY_ID.scope(id, f.instrument(span)).await
}

/// `f`, to be spawned, still working for the current task's query (its
/// span and id).
pub fn carry<F: std::future::Future>(f: F) -> impl std::future::Future<Output = F::Output> {
    use tracing::Instrument;
    let id = current_query_id();
    let f = f.instrument(tracing::Span::current());
    async move {
        match id {
            Some(id) => QUERY_ID.scope(id, f).await,
            None => f.await,
        }
    }
}

/// The id of the query the current task works for (see [`in_query`]).
pub fn current_query_id() -> Option<String> {
    QUERY_ID.try_with(Clone::clone).ok()
}

/// The progress of one running statement, see [`report_progress`].
#[derive(Debug, Clone)]
pub struct ProgressSink {
    log: Arc<QueryLog>,
    key: u64,
}

impl ProgressSink {
    /// Runs `f` with this as the sink of [`report_progress`].
    pub async fn scope<F: std::future::Future>(self, f: F) -> F::Output {
        PROGRESS.scope(self, f).await
    }

    fn set(&self, text: String) {
        if let Some(e) = self.log.state.lock().running.get_mut(&self.key) {
            e.progress = Some(text);
        }
    }
}

/// Sets the progress of the statement the current task runs (see
/// [`ProgressSink::scope`]); nothing when it has none.
pub fn report_progress(text: impl FnOnce() -> String) {
    let _ = PROGRESS.try_with(|sink| sink.set(text()));
}

/// A statement in the log; see the module docs.
#[derive(Debug)]
pub struct Tracked {
    log: Arc<QueryLog>,
    key: u64,
    started: Instant,
    rows: u64,
    bytes: u64,
    /// Whether rows were counted (else they stay unknown).
    counted: bool,
    done: bool,
}

impl Tracked {
    /// Counts a batch of the result.
    pub fn add(&mut self, rows: u64, bytes: u64) {
        self.rows += rows;
        self.bytes += bytes;
        self.counted = true;
    }

    /// Results are read from the workers at `n` endpoints.
    pub fn direct(&mut self, n: usize) {
        self.update(|e| e.endpoints = format!("{n} direct"));
    }

    /// Where the code running this statement reports its progress.
    pub fn progress_sink(&self) -> ProgressSink {
        ProgressSink {
            log: Arc::clone(&self.log),
            key: self.key,
        }
    }

    /// The statement's id.
    pub fn id(&self) -> String {
        let log = self.log.state.lock();
        log.running
            .get(&self.key)
            .map(|e| e.id.clone())
            .unwrap_or_default()
    }

    /// Moves the statement to the one with `id` (a query id known only
    /// after the statement was registered).
    pub fn set_id(&mut self, id: &str) {
        self.update(|e| e.id = id.to_string());
    }

    fn update(&self, f: impl FnOnce(&mut QueryEntry)) {
        if let Some(e) = self.log.state.lock().running.get_mut(&self.key) {
            f(e);
        }
    }

    /// Finished successfully; `rows` overrides the counted rows (updates).
    pub fn finish(mut self, rows: Option<u64>) {
        if let Some(r) = rows {
            self.rows = r;
            self.counted = true;
        }
        self.end("finished", None);
    }

    /// Failed with `error`.
    pub fn fail(mut self, error: &tonic::Status) {
        let state = if error.code() == tonic::Code::Cancelled {
            "cancelled"
        } else {
            "failed"
        };
        self.end(
            state,
            Some(format!("{:?}: {}", error.code(), error.message())),
        );
    }

    fn end(&mut self, state: &'static str, error: Option<String>) {
        if self.done {
            return;
        }
        self.done = true;
        let mut log = self.log.state.lock();
        let Some(mut e) = log.running.remove(&self.key) else {
            return;
        };
        e.duration = Some(self.started.elapsed());
        e.state = state;
        e.error = error;
        tracing::info!(
            query_id = %e.id,
            user = %e.user,
            state,
            rows = self.counted.then_some(self.rows),
            duration_ms = e.duration.unwrap_or_default().as_secs_f64() * 1000.0,
            error = e.error.as_deref(),
            "statement"
        );
        if self.counted {
            e.rows = Some(self.rows);
            e.bytes = Some(self.bytes);
        }
        if self.log.capacity > 0 {
            while log.done.len() >= self.log.capacity {
                log.done.pop_front();
            }
            log.done.push_back(e);
        }
    }
}

impl Drop for Tracked {
    /// A statement dropped unfinished: its client stopped reading.
    fn drop(&mut self) {
        self.end("cancelled", Some("the client stopped reading".into()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_history_newest_first() {
        let log = Arc::new(QueryLog::new(2));
        for i in 0..3 {
            let mut t = log.start(&format!("q{i}"), "alice", &format!("SELECT {i}"));
            t.add(1, 8);
            t.finish(None);
        }
        let running = log.start("r", "bob", "SELECT 9");
        let e = log.entries();
        let ids: Vec<&str> = e.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, ["r", "q2", "q1"]);
        assert_eq!(e[0].state, "running");
        assert_eq!((e[1].rows, e[1].bytes), (Some(1), Some(8)));
        running.fail(&tonic::Status::not_found("no table"));
        assert_eq!(log.entries()[0].state, "failed");
        drop(log.start("x", "", "SELECT 1"));
        assert_eq!(log.entries()[0].state, "cancelled");
    }
}
