//! A Link as it stands, on PostgreSQL (GetLink, ListLinks): its accounts' latest results,
//! its pending intent and last successes, read inside the caller's read transaction.

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::intents::{last_success, pending_intent};
use super::schema::{accounts, links, results};
use crate::clock::Millis;
use crate::domain::{RefreshType, ResultRow};
use crate::store::queries;
use crate::store::{KnownLink, LinkSnapshot, LinkState, LinksFrom, StoreResult};

/// The Links `from` covers (at most `limit`), each as it stands: read on one connection,
/// inside the caller's read transaction.
pub(super) async fn snapshots(
    conn: &mut AsyncPgConnection,
    from: &LinksFrom,
    limit: i64,
) -> StoreResult<Vec<LinkSnapshot>> {
    let known = queries::links_from!(conn, from, limit, [.await])?;
    let mut found = Vec::with_capacity(known.len());
    for link in known {
        let id = link.link_id.as_str();
        let pending = pending_intent(conn, id).await?;
        found.push(LinkSnapshot {
            accounts: queries::link_accounts!(conn, id, [.await])?,
            only_last: LinkState {
                pending: pending.clone(),
                last_success: last_success(conn, id, RefreshType::OnlyLast).await?,
            },
            historical: LinkState {
                pending,
                last_success: last_success(conn, id, RefreshType::Historical).await?,
            },
            link,
        });
    }
    Ok(found)
}
