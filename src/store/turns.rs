//! Turns per Link within one process: RequestRefresh work for one link token runs one at a
//! time, so concurrent callers make one upstream create call and the others join it. On
//! SQLite the store belongs to one process, so an in-process lock per token (by its hash) is
//! the whole answer; PostgreSQL replicas take turns under an advisory lock instead.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type Locks = Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>;

/// The locks of the tokens someone holds or waits for.
#[derive(Clone, Default)]
pub(super) struct LinkLocks {
    locks: Locks,
}

impl LinkLocks {
    /// Waits for this token's turn.
    pub(super) async fn turn(&self, token_sha256: &str) -> LocalTurn {
        let lock = self
            .locks
            .lock()
            .expect("link locks")
            .entry(token_sha256.to_owned())
            .or_default()
            .clone();
        let guard = lock.clone().lock_owned().await;
        LocalTurn {
            locks: self.locks.clone(),
            key: token_sha256.to_owned(),
            lock,
            guard: Some(guard),
        }
    }
}

/// One link token's turn; the next caller's begins when it is dropped. The lock itself is
/// forgotten when nobody else wants it, so the map holds only tokens in use.
pub struct LocalTurn {
    locks: Locks,
    key: String,
    lock: Arc<tokio::sync::Mutex<()>>,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl Drop for LocalTurn {
    fn drop(&mut self) {
        self.guard.take();
        let mut locks = self.locks.lock().expect("link locks");
        // Ours plus the map's: nobody else holds or waits for it.
        if Arc::strong_count(&self.lock) == 2 {
            locks.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_turn_at_a_time_per_token_and_nothing_left_behind() {
        let locks = LinkLocks::default();
        let first = locks.turn("a").await;
        let other = locks.turn("b").await;
        let waiting = tokio::spawn({
            let locks = locks.clone();
            async move {
                let _turn = locks.turn("a").await;
            }
        });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "a second turn of the same token waits"
        );
        drop(first);
        waiting.await.unwrap();
        drop(other);
        assert!(locks.locks.lock().unwrap().is_empty());
    }
}
