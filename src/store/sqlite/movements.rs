//! Movements on SQLite: sealed tokens, owed fetches and the entries they lead to, written by
//! the writer thread (one transaction per group commit), as `store::decide::movements`
//! decides. The statements are shared with PostgreSQL (`store/movement_queries.rs`).

use diesel::prelude::*;
use diesel::sqlite::SqliteConnection;

use super::Tx;
use super::log::append;
use super::models::NewResult;
use super::schema::{
    accounts, fetch_jobs, intent_accounts, link_tokens, links, movements, results,
};
use crate::clock::Millis;
use crate::domain::{Detail, ResultRow};
use crate::fintoc::event::MovementsEvent;
use crate::store::decide::movements::{self as decide, FetchWrite};
use crate::store::movement_queries;
use crate::store::{
    FetchClaim, FetchDone, FetchJob, FetchOutcome, MovementsPage, SealedToken, StoreResult,
};

/// What a movements entry is attributed to.
pub(super) struct Owner<'a> {
    pub account_id: &'a str,
    pub link_id: &'a str,
    pub intent_id: &'a str,
    pub event_id: &'a str,
}

/// Appends one movements entry.
pub(super) fn append_entry(
    tx: &mut Tx<'_>,
    owner: &Owner<'_>,
    detail: Detail,
) -> StoreResult<ResultRow> {
    let now = tx.now_ms();
    append(
        tx,
        &NewResult {
            account_id: owner.account_id,
            link_id: owner.link_id,
            refresh_intent_id: owner.intent_id,
            status: detail.status().unwrap_or_default(),
            new_movements: 0,
            public_error: "",
            event_id: owner.event_id,
            occurred_at_ms: now,
            committed_at_ms: now,
            completes_intent: false,
            stored_detail: detail.to_stored(),
            detail,
            fetches_movements: false,
            trace_context: String::new(),
        },
    )
}

pub(super) fn token_kept(conn: &mut SqliteConnection, link_id: &str) -> StoreResult<bool> {
    movement_queries::token_kept!(conn, link_id, [])
}

pub(super) fn insert_fetch_job(tx: &mut Tx<'_>, row: &ResultRow) -> StoreResult<()> {
    let now = tx.now_ms();
    movement_queries::insert_fetch_job!(tx.conn, row, now, [])
}

pub(super) fn keep_token(
    tx: &mut Tx<'_>,
    link_id: &str,
    sealed: &SealedToken,
    at_ms: Millis,
) -> StoreResult<()> {
    movement_queries::keep_token!(tx.conn, link_id, sealed, at_ms, [])
}

pub(super) fn reseal_token(
    tx: &mut Tx<'_>,
    link_id: &str,
    from_key: &str,
    sealed: &SealedToken,
) -> StoreResult<()> {
    movement_queries::reseal_token!(tx.conn, link_id, from_key, sealed, [])
}

pub(super) fn token_keys(conn: &mut SqliteConnection) -> StoreResult<Vec<(String, i64)>> {
    movement_queries::token_keys!(conn, [])
}

pub(super) fn drop_tokens_of_key(tx: &mut Tx<'_>, key_id: &str) -> StoreResult<usize> {
    movement_queries::drop_tokens_of_key!(tx.conn, key_id, [])
}

pub(super) fn drop_expired_tokens(tx: &mut Tx<'_>, before_ms: Millis) -> StoreResult<usize> {
    movement_queries::drop_expired_tokens!(tx.conn, before_ms, [])
}

/// Forgets the Link's token and stored movements; each fetch it still owes ends
/// TOKEN_NOT_KEPT. `false` for an unknown Link.
pub(super) fn forget_link(tx: &mut Tx<'_>, link_id: &str) -> StoreResult<bool> {
    let known: Option<String> = links::table
        .find(link_id)
        .select(links::link_id)
        .get_result(tx.conn)
        .optional()?;
    if known.is_none() {
        return Ok(false);
    }
    movement_queries::forget_link_data!(tx.conn, link_id, [])?;
    let jobs = movement_queries::jobs_of_link!(tx.conn, link_id, [])?;
    for account_jobs in decide::by_account(jobs) {
        let write = decide::settle_fetch(
            &account_jobs,
            FetchOutcome::TokenGone,
            &Default::default(),
            tx.now_ms(),
        );
        apply(tx, &account_jobs, write)?;
    }
    Ok(true)
}

pub(super) fn claim(
    tx: &mut Tx<'_>,
    owner: &str,
    lease_ms: Millis,
) -> StoreResult<Option<FetchClaim>> {
    let now = tx.now_ms();
    movement_queries::claim_fetches!(tx.conn, owner, now, lease_ms, [])
}

/// Settles one account's leased jobs with their outcome (see `decide::settle_fetch`).
pub(super) fn finish(
    tx: &mut Tx<'_>,
    owner: &str,
    jobs: &[FetchJob],
    outcome: FetchOutcome,
) -> StoreResult<FetchDone> {
    let sequences: Vec<i64> = jobs.iter().map(|j| j.result_sequence).collect();
    if movement_queries::still_leased!(tx.conn, owner, &sequences, [])? != jobs.len() {
        return Ok(FetchDone::LeaseLost);
    }
    let Some(first) = jobs.first() else {
        return Ok(FetchDone::Written);
    };
    let stored = match &outcome {
        FetchOutcome::Listed { movements, .. } => {
            let ids = decide::ids_of(movements);
            movement_queries::stored_movements!(tx.conn, &first.account_id, &ids, [])?
        }
        _ => Default::default(),
    };
    let write = decide::settle_fetch(jobs, outcome, &stored, tx.now_ms());
    if let Some(due) = write.retry_at_ms {
        movement_queries::retry_jobs!(tx.conn, &sequences, due, [])?;
        return Ok(FetchDone::Retrying);
    }
    apply(tx, jobs, write)?;
    Ok(FetchDone::Written)
}

/// Writes a settled fetch: the token dropped if refused, the movements stored, the jobs
/// gone and their entries appended.
fn apply(tx: &mut Tx<'_>, jobs: &[FetchJob], write: FetchWrite) -> StoreResult<()> {
    let Some(first) = jobs.first() else {
        return Ok(());
    };
    if write.drop_token {
        diesel::delete(link_tokens::table.find(&first.link_id)).execute(tx.conn)?;
    }
    movement_queries::write_movements!(
        tx.conn,
        &first.account_id,
        &first.link_id,
        &write.upserts,
        &[],
        []
    )?;
    let sequences: Vec<i64> = jobs.iter().map(|j| j.result_sequence).collect();
    movement_queries::delete_jobs!(tx.conn, &sequences, [])?;
    let mut intents = Vec::with_capacity(jobs.len());
    for job in jobs {
        intents.push(movement_queries::intent_of_result!(
            tx.conn,
            job.result_sequence,
            []
        )?);
    }
    for (i, detail) in write.entries {
        let job = &jobs[i];
        let owner = Owner {
            account_id: &job.account_id,
            link_id: &job.link_id,
            intent_id: &intents[i],
            event_id: &job.event_id,
        };
        append_entry(tx, &owner, detail)?;
    }
    Ok(())
}

/// Applies a `movements_modified` / `movements_removed` event to an account whose Link's
/// token is kept (others' are stored raw only); the last entry's sequence, if it changed
/// anything.
pub(super) fn apply_event(tx: &mut Tx<'_>, event: &MovementsEvent) -> StoreResult<Option<i64>> {
    if !tx.movements() {
        return Ok(None);
    }
    let link_id: Option<String> = accounts::table
        .find(&event.account_id)
        .select(accounts::link_id)
        .get_result(tx.conn)
        .optional()?;
    let Some(link_id) = link_id else {
        return Ok(None);
    };
    if !token_kept(tx.conn, &link_id)? {
        return Ok(None);
    }
    let named: Vec<&str> = match &event.change {
        crate::fintoc::event::MovementsChange::Modified(list) => decide::ids_of(list),
        crate::fintoc::event::MovementsChange::Removed(ids) => {
            ids.iter().map(String::as_str).collect()
        }
    };
    let stored = movement_queries::stored_movements!(tx.conn, &event.account_id, &named, [])?;
    let changes = decide::on_event(&stored, &event.change);
    let upserts: Vec<_> = changes.upserts().cloned().collect();
    movement_queries::write_movements!(
        tx.conn,
        &event.account_id,
        &link_id,
        &upserts,
        &changes.removed_ids,
        []
    )?;
    let owner = Owner {
        account_id: &event.account_id,
        link_id: &link_id,
        intent_id: "",
        event_id: &event.event_id,
    };
    let mut last = None;
    for entry in changes.entries(false) {
        last =
            Some(append_entry(tx, &owner, Detail::Movements(std::sync::Arc::new(entry)))?.sequence);
    }
    Ok(last)
}

/// A page of an account's movements and the log position it reflects, in one snapshot.
pub(super) fn list(
    conn: &mut SqliteConnection,
    account_id: &str,
    after: &Option<(String, String)>,
    limit: i64,
    upto: i64,
) -> StoreResult<Option<MovementsPage>> {
    conn.transaction(|conn| {
        let found = movement_queries::list_movements!(conn, account_id, after, limit, [])?;
        Ok(found.map(|(movements, more)| MovementsPage {
            movements,
            more,
            as_of_sequence: upto,
        }))
    })
}

pub(super) fn settled(conn: &mut SqliteConnection, intent_id: &str) -> StoreResult<Option<i64>> {
    movement_queries::movements_settled!(conn, intent_id, [])
}
