//! A Link as it stands, on PostgreSQL (GetLink, ListLinks): its accounts' latest results,
//! its pending intent and last successes, read inside the caller's read transaction.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::schema::{accounts, intent_accounts, link_tokens, links, refresh_intents, results};
use crate::clock::Millis;
use crate::domain::{IntentStatus, IntentView, RefreshType, ResultRow};
use crate::store::queries;
use crate::store::{KnownLink, LinkSnapshot, LinkState, LinksFrom, StoreResult};

/// The Links `from` covers (at most `limit`), each as it stands: read on one connection,
/// inside the caller's read transaction, in a fixed number of queries per page.
pub(super) async fn snapshots(
    conn: &mut AsyncPgConnection,
    from: &LinksFrom,
    limit: i64,
) -> StoreResult<Vec<LinkSnapshot>> {
    queries::link_snapshots!(conn, from, limit, [.await])
}
