//! Telling, at start, whether `DATABASE_URL` leads to a connection pooler in transaction (or
//! statement) mode, such as PgBouncer's `pool_mode = transaction`.
//!
//! Through such a pooler each transaction may run on a different server session, and a
//! server session serves other clients in between. Most of what a replica sends works
//! there when it keeps no state between transactions (`session.rs`, and pooled connections
//! that prepare no statement beyond its transaction: `connect::pool`), but three things
//! cannot: LISTEN (notifications go to a session, not to a client), the migrations' session
//! lock, and the writer's statements kept prepared across group commits. Those need
//! `DATABASE_DIRECT_URL`; without it, a replica behind such a pooler must refuse to start
//! rather than print its listening line and fail later.
//!
//! The sign: two client connections that share a server session (the backend pid), or one
//! client connection whose server session changes. Neither can happen on a direct or a
//! session-pooled connection. The pooler hands the most recently released server session out
//! next, so one round almost always shows it; a busy pooler may hide it for a round, so a few
//! rounds are tried.

use std::time::Duration;

use super::connect::plain;
use crate::store::{StoreError, StoreResult};

/// Rounds tried before concluding there is no transaction pooler.
const ROUNDS: usize = 5;
/// Longest one probe query waits: a pooler out of server sessions while another client of
/// ours holds one in a transaction may make it wait.
const PROBE_WAIT: Duration = Duration::from_secs(2);

/// Whether `url` leads to a pooler that shares server sessions between transactions.
pub(super) async fn shares_sessions(url: &str) -> StoreResult<bool> {
    let a = plain(url).await.map_err(super::unavailable)?;
    let b = plain(url).await.map_err(super::unavailable)?;
    for _ in 0..ROUNDS {
        let first = pid(&a).await?;
        probe(&b, "BEGIN").await?;
        let other = pid(&b).await?;
        // While `b` holds its transaction open, `a` needs a session of its own.
        let again = tokio::time::timeout(PROBE_WAIT, pid(&a)).await;
        probe(&b, "COMMIT").await?;
        match again {
            // A client that must wait for another's transaction is sharing a session pool.
            Err(_) => return Ok(true),
            Ok(again) => {
                if other == first || again? != first {
                    return Ok(true);
                }
            }
        }
    }
    Ok(false)
}

/// The line a replica refuses to start with behind such a pooler.
pub(super) fn refusal() -> StoreError {
    StoreError::Invalid(
        "DATABASE_URL leads to a connection pooler in transaction mode (two of its \
         connections shared one PostgreSQL session); LISTEN, the migrations' lock and the \
         writer's prepared statements cannot work through it: set DATABASE_DIRECT_URL \
         (--database-direct-url) to a direct or session-pooled connection to the same database"
            .into(),
    )
}

async fn pid(client: &tokio_postgres::Client) -> StoreResult<String> {
    let rows = tokio::time::timeout(PROBE_WAIT, client.simple_query("SELECT pg_backend_pid()"))
        .await
        .map_err(|_| StoreError::Unavailable("no answer to a probe query".into()))?
        .map_err(|e| StoreError::Unavailable(e.to_string()))?;
    rows.iter()
        .find_map(|message| match message {
            tokio_postgres::SimpleQueryMessage::Row(row) => row.get(0).map(str::to_owned),
            _ => None,
        })
        .ok_or_else(|| StoreError::Unavailable("pg_backend_pid() answered no row".into()))
}

async fn probe(client: &tokio_postgres::Client, sql: &str) -> StoreResult<()> {
    tokio::time::timeout(PROBE_WAIT, client.batch_execute(sql))
        .await
        .map_err(|_| StoreError::Unavailable("no answer to a probe query".into()))?
        .map_err(|e| StoreError::Unavailable(e.to_string()))
}
