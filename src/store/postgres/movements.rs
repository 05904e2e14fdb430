//! Movements on PostgreSQL: sealed tokens, owed fetches and the entries they lead to, as
//! `store::decide::movements` decides. What appends to the log runs in the writer's
//! transaction (holding the counter's lock); the rest in a transaction of its own. The
//! statements are shared with SQLite (`store/movement_queries.rs`).

use std::sync::Arc;

use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};

use super::log::Appender;
use super::schema::{
    accounts, fetch_jobs, intent_accounts, link_tokens, links, movements, results,
};
use crate::clock::Millis;
use crate::domain::{Detail, ResultRow};
use crate::fintoc::event::{MovementsChange, MovementsEvent};
use crate::store::decide::movements::{self as decide, FetchWrite};
use crate::store::movement_queries;
use crate::store::{
    FetchClaim, FetchDone, FetchJob, FetchOutcome, MovementsPage, SealedToken, StoreResult,
};

/// Claims run one at a time across replicas under this transaction-scoped advisory lock, so
/// two never lease the same Link's jobs (the key is arbitrary, fixed for this purpose).
const CLAIM_LOCK: &str = "SELECT pg_advisory_xact_lock(7361001)";

/// Appends one movements entry for `job`-like attribution.
fn append_entry(
    log: &mut Appender,
    (account_id, link_id, intent_id, event_id): (&str, &str, &str, &str),
    detail: Detail,
    now_ms: Millis,
) -> ResultRow {
    log.append(ResultRow {
        sequence: 0,
        account_id: account_id.to_owned(),
        link_id: link_id.to_owned(),
        refresh_intent_id: intent_id.to_owned(),
        status: detail.status().unwrap_or_default().to_owned(),
        new_movements: 0,
        public_error: String::new(),
        event_id: event_id.to_owned(),
        occurred_at_ms: now_ms,
        committed_at_ms: now_ms,
        completes_intent: false,
        detail,
        fetches_movements: false,
        trace_context: String::new(),
    })
}

pub(super) async fn insert_fetch_job(
    conn: &mut AsyncPgConnection,
    row: &ResultRow,
) -> StoreResult<()> {
    let now = row.committed_at_ms;
    movement_queries::insert_fetch_job!(conn, row, now, [.await])
}

pub(super) async fn keep_token(
    conn: &mut AsyncPgConnection,
    link_id: &str,
    sealed: &SealedToken,
    at_ms: Millis,
) -> StoreResult<()> {
    movement_queries::keep_token!(conn, link_id, sealed, at_ms, [.await])
}

pub(super) async fn reseal_token(
    conn: &mut AsyncPgConnection,
    link_id: &str,
    from_key: &str,
    sealed: &SealedToken,
) -> StoreResult<()> {
    movement_queries::reseal_token!(conn, link_id, from_key, sealed, [.await])
}

pub(super) async fn token_keys(conn: &mut AsyncPgConnection) -> StoreResult<Vec<(String, i64)>> {
    movement_queries::token_keys!(conn, [.await])
}

pub(super) async fn drop_tokens_of_key(
    conn: &mut AsyncPgConnection,
    key_id: &str,
) -> StoreResult<usize> {
    movement_queries::drop_tokens_of_key!(conn, key_id, [.await])
}

pub(super) async fn drop_expired_tokens(
    conn: &mut AsyncPgConnection,
    before_ms: Millis,
) -> StoreResult<usize> {
    movement_queries::drop_expired_tokens!(conn, before_ms, [.await])
}

pub(super) async fn claim(
    conn: &mut AsyncPgConnection,
    owner: &str,
    now_ms: Millis,
    lease_ms: Millis,
) -> StoreResult<Option<FetchClaim>> {
    diesel::sql_query(CLAIM_LOCK).execute(conn).await?;
    movement_queries::claim_fetches!(conn, owner, now_ms, lease_ms, [.await])
}

/// Forgets the Link's token and stored movements; each fetch it still owes ends
/// TOKEN_NOT_KEPT. `false` for an unknown Link. In the writer's transaction.
pub(super) async fn forget_link(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    link_id: &str,
    now_ms: Millis,
) -> StoreResult<bool> {
    let known: Option<String> = links::table
        .find(link_id)
        .select(links::link_id)
        .get_result(conn)
        .await
        .optional()?;
    if known.is_none() {
        return Ok(false);
    }
    movement_queries::forget_link_data!(conn, link_id, [.await])?;
    let jobs = movement_queries::jobs_of_link!(conn, link_id, [.await])?;
    for account_jobs in decide::by_account(jobs) {
        let write = decide::settle_fetch(
            &account_jobs,
            FetchOutcome::TokenGone,
            &Default::default(),
            now_ms,
        );
        apply(conn, log, &account_jobs, write, now_ms).await?;
    }
    Ok(true)
}

/// Settles one account's leased jobs with their outcome (`decide::settle_fetch`), in the
/// writer's transaction.
pub(super) async fn finish(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    owner: &str,
    jobs: &[FetchJob],
    outcome: FetchOutcome,
    now_ms: Millis,
) -> StoreResult<FetchDone> {
    let sequences: Vec<i64> = jobs.iter().map(|j| j.result_sequence).collect();
    if movement_queries::still_leased!(conn, owner, &sequences, [.await])? != jobs.len() {
        return Ok(FetchDone::LeaseLost);
    }
    let Some(first) = jobs.first() else {
        return Ok(FetchDone::Written);
    };
    let stored = match &outcome {
        FetchOutcome::Listed { movements, .. } => {
            let ids = decide::ids_of(movements);
            movement_queries::stored_movements!(conn, &first.account_id, &ids, [.await])?
        }
        _ => Default::default(),
    };
    let write = decide::settle_fetch(jobs, outcome, &stored, now_ms);
    if let Some(due) = write.retry_at_ms {
        movement_queries::retry_jobs!(conn, &sequences, due, [.await])?;
        return Ok(FetchDone::Retrying);
    }
    apply(conn, log, jobs, write, now_ms).await?;
    Ok(FetchDone::Written)
}

/// Writes a settled fetch: the token dropped if refused, the movements stored, the jobs
/// gone and their entries appended.
async fn apply(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    jobs: &[FetchJob],
    write: FetchWrite,
    now_ms: Millis,
) -> StoreResult<()> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    if write.drop_token {
        diesel::delete(link_tokens::table.find(&first.link_id))
            .execute(conn)
            .await?;
    }
    let none: &[String] = &[];
    movement_queries::write_movements!(
        conn,
        &first.account_id,
        &first.link_id,
        &write.upserts,
        none,
        [.await]
    )?;
    let sequences: Vec<i64> = jobs.iter().map(|j| j.result_sequence).collect();
    movement_queries::delete_jobs!(conn, &sequences, [.await])?;
    let mut intents = Vec::with_capacity(jobs.len());
    for job in jobs {
        intents.push(movement_queries::intent_of_result!(conn, job.result_sequence, [.await])?);
    }
    for (i, detail) in write.entries {
        let job = &jobs[i];
        append_entry(
            log,
            (&job.account_id, &job.link_id, &intents[i], &job.event_id),
            detail,
            now_ms,
        );
    }
    log.flush(conn).await
}

/// Applies a `movements_modified` / `movements_removed` event to an account whose Link's
/// token is kept (others' are stored raw only); the last entry's sequence, if it changed
/// anything. In the writer's transaction.
pub(super) async fn apply_event(
    conn: &mut AsyncPgConnection,
    log: &mut Appender,
    event: &MovementsEvent,
    now_ms: Millis,
) -> StoreResult<Option<i64>> {
    let link_id: Option<String> = accounts::table
        .find(&event.account_id)
        .select(accounts::link_id)
        .get_result(conn)
        .await
        .optional()?;
    let Some(link_id) = link_id else {
        return Ok(None);
    };
    if !movement_queries::token_kept!(conn, &link_id, [.await])? {
        return Ok(None);
    }
    let named: Vec<&str> = match &event.change {
        MovementsChange::Modified(list) => decide::ids_of(list),
        MovementsChange::Removed(ids) => ids.iter().map(String::as_str).collect(),
    };
    let stored = movement_queries::stored_movements!(conn, &event.account_id, &named, [.await])?;
    let changes = decide::on_event(&stored, &event.change);
    let upserts: Vec<_> = changes.upserts().cloned().collect();
    movement_queries::write_movements!(
        conn,
        &event.account_id,
        &link_id,
        &upserts,
        &changes.removed_ids,
        [.await]
    )?;
    let mut last = None;
    for entry in changes.entries(false) {
        let row = append_entry(
            log,
            (&event.account_id, &link_id, "", &event.event_id),
            Detail::Movements(Arc::new(entry)),
            now_ms,
        );
        last = Some(row.sequence);
    }
    log.flush(conn).await?;
    Ok(last)
}

/// A page of an account's movements, read inside the caller's read transaction.
pub(super) async fn list(
    conn: &mut AsyncPgConnection,
    account_id: &str,
    after: &Option<(String, String)>,
    limit: i64,
    upto: i64,
) -> StoreResult<Option<MovementsPage>> {
    let found = movement_queries::list_movements!(conn, account_id, after, limit, [.await])?;
    Ok(found.map(|(movements, more)| MovementsPage {
        movements,
        more,
        as_of_sequence: upto,
    }))
}

pub(super) async fn settled(
    conn: &mut AsyncPgConnection,
    intent_id: &str,
) -> StoreResult<Option<i64>> {
    movement_queries::movements_settled!(conn, intent_id, [.await])
}
