//! Cancellation of client queries by id, on the workers (their fragments)
//! and on the coordinator (its merged streams): `CancelFlightInfo`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

/// How long a cancelled query id is remembered: as long as its tickets live,
/// so a ticket read after the cancel is refused.
pub const CANCELLED_TTL: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Default)]
struct State {
    /// Queries with work running here: their token and how many holders.
    running: HashMap<String, (CancellationToken, usize)>,
    /// Queries cancelled recently.
    cancelled: HashMap<String, Instant>,
}

/// The cancellation tokens of the queries running here, and the queries
/// cancelled recently. Running queries leave when their last
/// [`CancelGuard`] drops, so the maps stay small.
#[derive(Debug, Default)]
pub struct Cancels {
    state: Mutex<State>,
}

impl Cancels {
    /// A hold on `query_id`'s token for one more piece of work, or `None`
    /// when the query was cancelled.
    pub fn register(self: &Arc<Self>, query_id: &str) -> Option<CancelGuard> {
        let mut state = self.state.lock();
        if state.cancelled.contains_key(query_id) {
            return None;
        }
        let entry = state
            .running
            .entry(query_id.to_string())
            .or_insert_with(|| (CancellationToken::new(), 0));
        entry.1 += 1;
        Some(CancelGuard {
            cancels: Arc::clone(self),
            query_id: query_id.to_string(),
            token: entry.0.clone(),
        })
    }

    /// The ids of the queries with work running now.
    pub fn running(&self) -> Vec<String> {
        self.state.lock().running.keys().cloned().collect()
    }

    /// Cancels the running work of `query_id` and refuses new work for it.
    pub fn cancel(&self, query_id: &str) {
        let now = Instant::now();
        let mut state = self.state.lock();
        state
            .cancelled
            .retain(|_, at| now.duration_since(*at) < CANCELLED_TTL);
        state.cancelled.insert(query_id.to_string(), now);
        if let Some((token, _)) = state.running.get(query_id) {
            token.cancel();
        }
    }
}

/// A running piece of work's hold on its query's cancellation token.
#[derive(Debug)]
pub struct CancelGuard {
    cancels: Arc<Cancels>,
    query_id: String,
    token: CancellationToken,
}

impl CancelGuard {
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }
}

impl Drop for CancelGuard {
    fn drop(&mut self) {
        let mut state = self.cancels.state.lock();
        if let Some(entry) = state.running.get_mut(&self.query_id) {
            entry.1 -= 1;
            if entry.1 == 0 {
                state.running.remove(&self.query_id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn cancel_reaches_running_work_and_refuses_new_work() {
        let cancels = Arc::new(Cancels::default());
        let a = cancels.register("q").unwrap();
        let b = cancels.register("q").unwrap();
        assert_eq!(cancels.running(), ["q"]);
        cancels.cancel("q");
        assert!(a.token().is_cancelled() && b.token().is_cancelled());
        assert!(cancels.register("q").is_none());
        drop((a, b));
        assert!(cancels.state.lock().running.is_empty());
        // Other queries are untouched, and finished ones leave no trace.
        let c = cancels.register("other").unwrap();
        assert!(!c.token().is_cancelled());
        drop(c);
        assert!(cancels.state.lock().running.is_empty());
    }
}
