//! Advisory locks that make replicas take turns: one replica at a time runs the background
//! work ([`Leader`]), and one RequestRefresh at a time works on a link token ([`Turn`]).
//!
//! Both are session-level PostgreSQL advisory locks, so they die with the session that holds
//! them: a replica that crashes (or loses its connection) gives them up without anyone
//! having to notice, and another takes over.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use diesel::sql_types::{BigInt, Bool, Integer, Text};
use diesel_async::{AsyncPgConnection, RunQueryDsl, SimpleAsyncConnection};
use tokio_util::sync::CancellationToken;

use super::connect::{Pool, connect};
use crate::store::{StoreError, StoreResult};

/// Lock keys of this service ("fref" and a number), clear of other users of the database.
pub(super) const MIGRATION_LOCK: i64 = 0x6672_6566_0001;
const LEADER_LOCK: i64 = 0x6672_6566_0002;
/// The first half of a link token's two-part lock key; the second is a hash of the token.
const TURN_SPACE: i32 = 0x6672_6566;

/// How often a replica that does not lead tries to, and one that does checks its session.
const LEADER_CHECK: Duration = Duration::from_secs(1);

#[derive(diesel::QueryableByName)]
struct Taken {
    #[diesel(sql_type = Bool)]
    taken: bool,
}

/// Whether this replica holds the leader lock, kept up to date by its own task.
#[derive(Clone)]
pub(super) struct Leader {
    leads: Arc<AtomicBool>,
}

impl Leader {
    /// The handle and the task that campaigns for the lock until `stop`.
    pub(super) fn new(
        url: String,
        stop: CancellationToken,
    ) -> (Leader, impl Future<Output = ()> + Send + 'static) {
        let leads = Arc::new(AtomicBool::new(false));
        let flag = leads.clone();
        let task = async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = campaign(&url, &flag) => {}
            }
            flag.store(false, Ordering::Release);
        };
        (Leader { leads }, task)
    }

    pub(super) fn leads(&self) -> bool {
        AtomicBool::load(&self.leads, Ordering::Acquire)
    }
}

/// Tries for the leader lock on a session of its own; once held, checks the session every
/// [`LEADER_CHECK`] and steps down the moment it fails (the lock went with it).
async fn campaign(url: &str, leads: &AtomicBool) {
    loop {
        if let Ok(mut conn) = connect(url).await {
            loop {
                match try_lead(&mut conn, leads.load(Ordering::Acquire)).await {
                    Ok(held) => {
                        if held && !leads.swap(true, Ordering::AcqRel) {
                            tracing::info!("this replica now runs the background work");
                        }
                    }
                    Err(e) => {
                        if leads.swap(false, Ordering::AcqRel) {
                            tracing::warn!(error = %e, "lost the background-work lock");
                        }
                        break;
                    }
                }
                tokio::time::sleep(LEADER_CHECK).await;
            }
        }
        tokio::time::sleep(LEADER_CHECK).await;
    }
}

/// One round: try the lock (or, holding it, check the session is alive).
async fn try_lead(conn: &mut AsyncPgConnection, holding: bool) -> StoreResult<bool> {
    if holding {
        conn.batch_execute("SELECT 1").await?;
        return Ok(true);
    }
    let taken: Taken = diesel::sql_query("SELECT pg_try_advisory_lock($1) AS taken")
        .bind::<BigInt, _>(LEADER_LOCK)
        .get_result(conn)
        .await?;
    Ok(taken.taken)
}

/// A link token's turn, held on a pooled session until dropped.
pub struct Turn {
    conn: Option<bb8::PooledConnection<'static, super::Manager>>,
    token_sha256: String,
}

impl Turn {
    /// Waits (in PostgreSQL) until no other replica's RequestRefresh works on this token.
    pub(super) async fn take(pool: &Pool, token_sha256: &str) -> StoreResult<Turn> {
        let mut conn = pool
            .get_owned()
            .await
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))?;
        diesel::sql_query("SELECT pg_advisory_lock($1, hashtext($2))")
            .bind::<Integer, _>(TURN_SPACE)
            .bind::<Text, _>(token_sha256)
            .execute(&mut *conn)
            .await?;
        Ok(Turn {
            conn: Some(conn),
            token_sha256: token_sha256.to_owned(),
        })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let Some(mut conn) = self.conn.take() else {
            return;
        };
        let token = std::mem::take(&mut self.token_sha256);
        // Unlocking is a round trip, and Drop cannot wait for it.
        tokio::spawn(async move {
            let unlocked = diesel::sql_query("SELECT pg_advisory_unlock($1, hashtext($2))")
                .bind::<Integer, _>(TURN_SPACE)
                .bind::<Text, _>(&token)
                .execute(&mut *conn)
                .await;
            // Failing to unlock means the session is gone (the pool drops broken
            // connections), and the lock went with it.
            if let Err(e) = unlocked {
                tracing::warn!(error = %e, "could not release a link turn; its session is gone");
            }
        });
    }
}
