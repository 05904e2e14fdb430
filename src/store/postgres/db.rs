//! The replica's pool, and the one way every part of this backend (the store's calls, the
//! log's tail, the leases) runs work on it: bounded in time (`session.rs`), and inside a
//! transaction whenever that is needed — for writes always, and for reads too when the pool
//! leads to a transaction pooler (a statement prepared outside a transaction could be run
//! on another server session than the one that prepared it).

use diesel_async::AsyncPgConnection;

use super::Manager;
use super::connect::Pool;
use super::session::{Bounds, OnConnMut, poison};
use crate::store::{StoreError, StoreResult};

#[derive(Clone)]
pub(super) struct Db {
    pool: Pool,
    pub(super) bounds: Bounds,
    /// The pool leads to a transaction pooler: every statement runs inside a transaction.
    pooled: bool,
}

impl Db {
    pub(super) fn new(pool: Pool, bounds: Bounds, pooled: bool) -> Db {
        Db {
            pool,
            bounds,
            pooled,
        }
    }

    /// A pooled connection (the pool waits a few seconds at most for one).
    pub(super) async fn conn(&self) -> StoreResult<bb8::PooledConnection<'_, Manager>> {
        self.pool
            .get()
            .await
            .map_err(|e| StoreError::Unavailable(format!("no database connection: {e}")))
    }

    /// Runs `work` on a pooled connection, bounded by [`Bounds::answer`] (see the module
    /// docs for when it runs in a transaction).
    pub(super) async fn read<T, F>(&self, work: F) -> StoreResult<T>
    where
        for<'c> F: AsyncFnMut(&'c mut AsyncPgConnection) -> StoreResult<T>
            + OnConnMut<&'c mut AsyncPgConnection, StoreResult<T>, Fut: Send>,
    {
        let mut conn = self.conn().await?;
        if self.pooled {
            return self.bounds.transaction(&mut conn, work).await;
        }
        let mut work = work;
        let answered = tokio::time::timeout(self.bounds.answer, work(&mut conn)).await;
        answered.unwrap_or_else(|_| {
            poison(&mut conn);
            Err(self.bounds.no_answer())
        })
    }

    /// Runs `work` in a transaction on a pooled connection (see [`Bounds::transaction`]).
    pub(super) async fn write<T, F>(&self, work: F) -> StoreResult<T>
    where
        for<'c> F: AsyncFnMut(&'c mut AsyncPgConnection) -> StoreResult<T>
            + OnConnMut<&'c mut AsyncPgConnection, StoreResult<T>, Fut: Send>,
    {
        let mut conn = self.conn().await?;
        self.bounds.transaction(&mut conn, work).await
    }
}
