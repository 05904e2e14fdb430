//! The reads both backends make, written once. Diesel's query builder is the same for
//! SQLite and PostgreSQL, but the two schemas are distinct types and the two drivers differ
//! in one token — diesel-async's calls end in `.await` — so a shared query is a macro: its
//! paths (`results::table`, …) resolve where it is used, against that backend's schema, and
//! the last argument is the tokens that finish a call (`[]` on SQLite, `[.await]` on
//! PostgreSQL). Each expands to a block that evaluates to a `StoreResult`.
//!
//! What stays in a backend is what really differs there: how writes are batched and
//! locked, and statements tuned to one planner (partial-index predicates, `unnest`).

/// The intent `$id` (`&str`) as an `IntentView`, or `None` if unknown: its row, its expected
/// accounts and their results.
macro_rules! get_intent {
    ($conn:expr, $id:expr, [$($aw:tt)*]) => {{
        let id: &str = $id;
        let row: Option<$crate::store::view::IntentRow> = refresh_intents::table
            .find(id)
            .select((
                refresh_intents::id,
                refresh_intents::link_id,
                refresh_intents::refresh_type,
                refresh_intents::status,
                refresh_intents::mfa_widget_token,
                refresh_intents::created_at_ms,
                refresh_intents::completed_at_ms,
                refresh_intents::completed_sequence,
            ))
            .first(&mut *$conn)
            $($aw)*
            .optional()?;
        match row {
            None => Ok(None),
            Some(row) => {
                let expected: Vec<(String, Option<i64>)> = intent_accounts::table
                    .filter(intent_accounts::refresh_intent_id.eq(id))
                    .order(intent_accounts::account_id.asc())
                    .select((intent_accounts::account_id, intent_accounts::result_sequence))
                    .load(&mut *$conn)
                    $($aw)*?;
                let answered = $crate::store::view::answered(&expected);
                let results: Vec<$crate::store::rows::ResultRecord> = results::table
                    .filter(results::sequence.eq_any(&answered))
                    .select(results::all_columns)
                    .load(&mut *$conn)
                    $($aw)*?;
                let results = results.into_iter().map(ResultRow::from).collect();
                $crate::store::view::intent_view(row, expected, results).map(Some)
            }
        }
    }};
}
pub(super) use get_intent;

/// Up to `$limit` results of `$target` (`&Target`) after `$after` and at most `$upto`,
/// oldest first. The log is indexed by account only (each index is paid for on every
/// write): an intent's results are found through `intent_accounts`, which points at each
/// answer, and a Link's through its accounts.
macro_rules! results_after {
    ($conn:expr, $target:expr, $after:expr, $upto:expr, $limit:expr, [$($aw:tt)*]) => {{
        let query = results::table
            .select(results::all_columns)
            .filter(results::sequence.gt($after))
            .filter(results::sequence.le($upto))
            .order(results::sequence.asc())
            .limit($limit);
        let rows: Vec<$crate::store::rows::ResultRecord> = match $target {
            Target::Intent(id) => {
                let answers = intent_accounts::table
                    .filter(intent_accounts::refresh_intent_id.eq(id))
                    .filter(intent_accounts::result_sequence.is_not_null())
                    .select(intent_accounts::result_sequence.assume_not_null());
                // Its movements entries too (they carry its id): found by its accounts.
                let accounts = intent_accounts::table
                    .filter(intent_accounts::refresh_intent_id.eq(id))
                    .select(intent_accounts::account_id);
                query
                    .filter(
                        results::sequence.eq_any(answers).or(results::account_id
                            .eq_any(accounts)
                            .and(results::detail.ne(""))),
                    )
                    .filter(results::refresh_intent_id.eq(id))
                    .load($conn)
                    $($aw)*?
            }
            Target::Link(id) => {
                let accounts = accounts::table
                    .filter(accounts::link_id.eq(id))
                    .select(accounts::account_id);
                query
                    .filter(results::account_id.eq_any(accounts))
                    .filter(results::link_id.eq(id))
                    .load($conn)
                    $($aw)*?
            }
            Target::Account(id) => query.filter(results::account_id.eq(id)).load($conn)$($aw)*?,
            // Walked in sequence order from the cursor (the primary key), each row tested
            // against the ids: no index per id kind is paid for on every write, and a page
            // reads at most what lies between the cursor and its last row.
            Target::Selection(selection) => query
                .filter(
                    results::link_id
                        .eq_any(selection.link_ids())
                        .or(results::account_id.eq_any(selection.account_ids())),
                )
                .load($conn)
                $($aw)*?,
            Target::All => query.load($conn)$($aw)*?,
        };
        StoreResult::Ok(rows.into_iter().map(ResultRow::from).collect::<Vec<ResultRow>>())
    }};
}
pub(super) use results_after;

/// What a seek to `$at_ms` reads after the log's bounds (see `decide::seek`): the first
/// retained result stamped at or after it (stamps never go back along the log, so ordering by
/// stamp is one index probe that finds the lowest such sequence), and the newest stamp
/// retention removed.
macro_rules! log_times {
    ($conn:expr, $bounds:expr, $at_ms:expr, [$($aw:tt)*]) => {{
        let at_ms: Millis = $at_ms;
        let first_at_or_after: Option<i64> = results::table
            .filter(results::committed_at_ms.ge(at_ms))
            .order((results::committed_at_ms.asc(), results::sequence.asc()))
            .select(results::sequence)
            .first(&mut *$conn)
            $($aw)*
            .optional()?;
        let pruned_through_ms: Millis = log_horizon::table
            .select(log_horizon::pruned_through_ms)
            .first(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok($crate::store::decide::LogTimes {
            bounds: $bounds,
            first_at_or_after,
            pruned_through_ms,
        })
    }};
}
pub(super) use log_times;

/// The id of the Link's pending intent, if any (the newest, should there be several).
macro_rules! pending_intent_id {
    ($conn:expr, $link_id:expr, [$($aw:tt)*]) => {{
        let id: Option<String> = refresh_intents::table
            .filter(refresh_intents::link_id.eq($link_id))
            .filter(refresh_intents::status.eq(IntentStatus::Pending.as_str()))
            .order(refresh_intents::created_at_ms.desc())
            .select(refresh_intents::id)
            .first(&mut *$conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(id)
    }};
}
pub(super) use pending_intent_id;

/// The most recently completed succeeded intent of `$refresh_type` for the Link: (id,
/// completed at).
macro_rules! last_success {
    ($conn:expr, $link_id:expr, $refresh_type:expr, [$($aw:tt)*]) => {{
        let found: Option<(String, Millis)> = refresh_intents::table
            .filter(refresh_intents::link_id.eq($link_id))
            .filter(refresh_intents::refresh_type.eq($refresh_type.as_str()))
            .filter(refresh_intents::status.eq(IntentStatus::Succeeded.as_str()))
            .filter(refresh_intents::completed_at_ms.is_not_null())
            .order(refresh_intents::completed_at_ms.desc())
            .select((
                refresh_intents::id,
                refresh_intents::completed_at_ms.assume_not_null(),
            ))
            .first($conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(found)
    }};
}
pub(super) use last_success;

/// How many Fintoc keys derived from the caller's `$key` Fintoc has answered (0 if unknown).
macro_rules! fintoc_keys_spent {
    ($conn:expr, $key:expr, [$($aw:tt)*]) => {{
        let spent: Option<i64> = fintoc_key_series::table
            .find($key)
            .select(fintoc_key_series::spent)
            .first($conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(spent.map_or(0, |n| u64::try_from(n).unwrap_or(0)))
    }};
}
pub(super) use fintoc_keys_spent;

/// The answer remembered for the idempotency `$key`, if any.
macro_rules! idempotency_record {
    ($conn:expr, $key:expr, [$($aw:tt)*]) => {{
        let found: Option<(String, String, String, bool, Millis)> = idempotency_keys::table
            .find($key)
            .select((
                idempotency_keys::token_sha256,
                idempotency_keys::refresh_type,
                idempotency_keys::refresh_intent_id,
                idempotency_keys::joined_existing,
                idempotency_keys::created_at_ms,
            ))
            .first(&mut *$conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(found.map(
            |(token_sha256, refresh_type, refresh_intent_id, joined_existing, created_at_ms)| {
                IdempotencyRecord {
                    token_sha256,
                    refresh_type,
                    refresh_intent_id,
                    joined_existing,
                    created_at_ms,
                }
            },
        ))
    }};
}
pub(super) use idempotency_record;

/// Raises the count of answered Fintoc keys for `$key` to `$spent` (never lowers it,
/// whichever replica wrote last); `$greatest` is the dialect's SQL for the larger of the
/// stored and the new count.
macro_rules! remember_fintoc_keys_spent {
    ($conn:expr, $key:expr, $spent:expr, $now_ms:expr, $greatest:literal, [$($aw:tt)*]) => {{
        let spent = i64::try_from($spent).unwrap_or(i64::MAX);
        diesel::insert_into(fintoc_key_series::table)
            .values((
                fintoc_key_series::idempotency_key.eq($key),
                fintoc_key_series::spent.eq(spent),
                fintoc_key_series::updated_at_ms.eq($now_ms),
            ))
            .on_conflict(fintoc_key_series::idempotency_key)
            .do_update()
            .set((
                fintoc_key_series::spent
                    .eq(diesel::dsl::sql::<diesel::sql_types::BigInt>($greatest)),
                fintoc_key_series::updated_at_ms.eq($now_ms),
            ))
            .execute($conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use remember_fintoc_keys_spent;

/// Marks `$account` of `$intent` answered by the result at `$sequence`.
macro_rules! write_answer {
    ($conn:expr, $intent:expr, $account:expr, $sequence:expr, [$($aw:tt)*]) => {{
        diesel::update(intent_accounts::table.find(($intent, $account)))
            .set(intent_accounts::result_sequence.eq($sequence))
            .execute($conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use write_answer;

/// Writes an intent's completion (`decide::Completion` `$done`); `$sequence` is the result
/// that completed it.
macro_rules! write_completion {
    ($conn:expr, $intent:expr, $done:expr, $sequence:expr, [$($aw:tt)*]) => {{
        let done: $crate::store::decide::Completion = $done;
        diesel::update(refresh_intents::table.find($intent))
            .set((
                refresh_intents::status.eq(done.status.as_str()),
                refresh_intents::completed_at_ms.eq(done.at_ms),
                refresh_intents::completed_sequence.eq($sequence),
            ))
            .execute($conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use write_completion;

/// Attributes results already logged without an intent to the newly registered `$new` (an
/// intent adopted from Fintoc may have had results arrive before we knew of it): loads, per
/// expected account, the first unattributed result since `decide::claim_since`, and writes
/// what `decide::claims` makes of them.
macro_rules! claim_unsolicited {
    ($conn:expr, $new:expr, $now_ms:expr, [$($aw:tt)*]) => {{
        let new: &NewIntent = $new;
        let since = $crate::store::decide::claim_since(new.created_at_ms);
        let mut found = Vec::new();
        for account in &new.accounts {
            let first: Option<(i64, String, Millis)> = results::table
                .filter(results::account_id.eq(account))
                .filter(results::refresh_intent_id.eq(""))
                .filter(results::detail.eq(""))
                .filter(results::occurred_at_ms.ge(since))
                .order(results::sequence.asc())
                .select((results::sequence, results::status, results::occurred_at_ms))
                .first(&mut *$conn)
                $($aw)*
                .optional()?;
            if let Some((sequence, status, occurred_at_ms)) = first {
                found.push($crate::store::decide::Unclaimed {
                    account_id: account.clone(),
                    sequence,
                    status: ResultStatus::parse(&status)?,
                    occurred_at_ms,
                });
            }
        }
        let claims = $crate::store::decide::claims(&new.accounts, found, $now_ms);
        for (account, sequence) in &claims.claimed {
            diesel::update(results::table.find(sequence))
                .set(results::refresh_intent_id.eq(&new.id))
                .execute(&mut *$conn)
                $($aw)*?;
            queries::write_answer!(&mut *$conn, &new.id, account, *sequence, [$($aw)*])?;
        }
        if let Some((done, last)) = claims.completes {
            diesel::update(results::table.find(last))
                .set(results::completes_intent.eq(true))
                .execute(&mut *$conn)
                $($aw)*?;
            queries::write_completion!(&mut *$conn, &new.id, done, last, [$($aw)*])?;
        }
        StoreResult::Ok(())
    }};
}
pub(super) use claim_unsolicited;

/// Removes up to `$limit` rows of each kind older than `$cutoff_ms` (idempotency keys and
/// their Fintoc key counts older than `$key_cutoff_ms`). The log is pruned from its oldest
/// end only, so the retained sequences stay contiguous and a cursor is either fully served
/// or refused with OUT_OF_RANGE; held events wait for their intent however old they are.
macro_rules! prune {
    ($conn:expr, $cutoff_ms:expr, $key_cutoff_ms:expr, $limit:expr, [$($aw:tt)*]) => {{
        let (cutoff_ms, key_cutoff_ms, limit): (Millis, Millis, i64) =
            ($cutoff_ms, $key_cutoff_ms, $limit);
        let mut pruned = Pruned::default();
        // Sequences and event ids grow with arrival, so the first row young enough to keep
        // is found by walking from the oldest end: the walk reads only what is to be pruned.
        let oldest_kept: Option<i64> = results::table
            .filter(results::committed_at_ms.ge(cutoff_ms))
            .order(results::sequence.asc())
            .select(results::sequence)
            .limit(1)
            .get_result(&mut *$conn)
            $($aw)*
            .optional()?;
        // Old by its own stamp too: on PostgreSQL a result committed between the two reads
        // (none young enough yet, then a young one) must not be taken for an old one.
        let below: Vec<i64> = results::table
            .filter(results::sequence.lt(oldest_kept.unwrap_or(i64::MAX)))
            .filter(results::committed_at_ms.lt(cutoff_ms))
            .order(results::sequence.asc())
            .limit(limit)
            .select(results::sequence)
            .load(&mut *$conn)
            $($aw)*?;
        if let Some(last) = below.last() {
            // The newest stamp pruned, for seeks by time (stamps never go back along the log).
            // Another pruner (a replica taking over the lead) may have removed the row since
            // it was listed: then that one records its stamp.
            let stamp: Option<Millis> = results::table
                .find(last)
                .select(results::committed_at_ms)
                .get_result(&mut *$conn)
                $($aw)*
                .optional()?;
            pruned.results = diesel::delete(results::table.filter(results::sequence.le(last)))
                .execute(&mut *$conn)
                $($aw)*?;
            if let Some(stamp) = stamp {
                diesel::update(
                    log_horizon::table.filter(log_horizon::pruned_through_ms.lt(stamp)),
                )
                .set(log_horizon::pruned_through_ms.eq(stamp))
                .execute(&mut *$conn)
                $($aw)*?;
            }
        }
        let first_kept: Option<i64> = webhook_events::table
            .filter(webhook_events::received_at_ms.ge(cutoff_ms))
            .order(webhook_events::id.asc())
            .select(webhook_events::id)
            .limit(1)
            .get_result(&mut *$conn)
            $($aw)*
            .optional()?;
        let events: Vec<i64> = webhook_events::table
            .filter(webhook_events::id.lt(first_kept.unwrap_or(i64::MAX)))
            .filter(webhook_events::received_at_ms.lt(cutoff_ms))
            .filter(webhook_events::disposition.ne("held"))
            .order(webhook_events::id.asc())
            .limit(limit)
            .select(webhook_events::id)
            .load(&mut *$conn)
            $($aw)*?;
        pruned.events =
            diesel::delete(webhook_events::table.filter(webhook_events::id.eq_any(&events)))
                .execute(&mut *$conn)
                $($aw)*?;
        let intents: Vec<String> = refresh_intents::table
            .filter(refresh_intents::completed_at_ms.lt(cutoff_ms))
            .limit(limit)
            .select(refresh_intents::id)
            .load(&mut *$conn)
            $($aw)*?;
        diesel::delete(
            intent_accounts::table.filter(intent_accounts::refresh_intent_id.eq_any(&intents)),
        )
        .execute(&mut *$conn)
        $($aw)*?;
        pruned.intents =
            diesel::delete(refresh_intents::table.filter(refresh_intents::id.eq_any(&intents)))
                .execute(&mut *$conn)
                $($aw)*?;
        let keys: Vec<String> = idempotency_keys::table
            .filter(idempotency_keys::created_at_ms.lt(key_cutoff_ms))
            .limit(limit)
            .select(idempotency_keys::idempotency_key)
            .load(&mut *$conn)
            $($aw)*?;
        pruned.keys = diesel::delete(
            idempotency_keys::table.filter(idempotency_keys::idempotency_key.eq_any(&keys)),
        )
        .execute(&mut *$conn)
        $($aw)*?;
        // A caller key's count of spent Fintoc keys goes with it: Fintoc forgets its keys
        // after 24 h, well within the caller key's life.
        let series: Vec<String> = fintoc_key_series::table
            .filter(fintoc_key_series::updated_at_ms.lt(key_cutoff_ms))
            .limit(limit)
            .select(fintoc_key_series::idempotency_key)
            .load(&mut *$conn)
            $($aw)*?;
        pruned.keys += diesel::delete(
            fintoc_key_series::table.filter(fintoc_key_series::idempotency_key.eq_any(&series)),
        )
        .execute(&mut *$conn)
        $($aw)*?;
        StoreResult::Ok(pruned)
    }};
}
pub(super) use prune;

/// Inserts the intent `$new`'s row as pending, unless it is known already; how many rows
/// were inserted (0 or 1).
macro_rules! insert_intent {
    ($conn:expr, $new:expr, [$($aw:tt)*]) => {{
        let new: &NewIntent = $new;
        let inserted: usize = diesel::insert_into(refresh_intents::table)
            .values((
                refresh_intents::id.eq(&new.id),
                refresh_intents::link_id.eq(&new.link_id),
                refresh_intents::refresh_type.eq(new.refresh_type.as_str()),
                refresh_intents::status.eq(IntentStatus::Pending.as_str()),
                refresh_intents::mfa_widget_token.eq(&new.mfa_widget_token),
                refresh_intents::created_at_ms.eq(new.created_at_ms),
            ))
            .on_conflict_do_nothing()
            .execute($conn)
            $($aw)*?;
        StoreResult::Ok(inserted)
    }};
}
pub(super) use insert_intent;

/// Records the Link `$link_id` as resolved at `$now_ms` with the token hash `$token_sha256`
/// (the accounts are the caller's to assign).
macro_rules! upsert_link {
    ($conn:expr, $link_id:expr, $token_sha256:expr, $now_ms:expr, [$($aw:tt)*]) => {{
        diesel::insert_into(links::table)
            .values((
                links::link_id.eq($link_id),
                links::token_sha256.eq($token_sha256),
                links::resolved_at_ms.eq($now_ms),
            ))
            .on_conflict(links::link_id)
            .do_update()
            .set((
                links::token_sha256.eq($token_sha256),
                links::resolved_at_ms.eq($now_ms),
            ))
            .execute($conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use upsert_link;

/// The Link last resolved with the token hash `$token_sha256`.
macro_rules! link_by_token {
    ($conn:expr, $token_sha256:expr, [$($aw:tt)*]) => {{
        let found = links::table
            .filter(links::token_sha256.eq($token_sha256))
            .order(links::resolved_at_ms.desc())
            .select((links::link_id, links::rejected_at_ms))
            .first::<(String, Option<Millis>)>($conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(found.map(|(link_id, rejected_at_ms)| KnownLink {
            link_id,
            rejected_at_ms,
        }))
    }};
}
pub(super) use link_by_token;

/// The Link `$link_id` (`&str`), if known.
macro_rules! link_by_id {
    ($conn:expr, $link_id:expr, [$($aw:tt)*]) => {{
        let link_id: &str = $link_id;
        let found = links::table
            .find(link_id)
            .select(links::rejected_at_ms)
            .first::<Option<Millis>>($conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(found.map(|rejected_at_ms| KnownLink {
            link_id: link_id.to_owned(),
            rejected_at_ms,
        }))
    }};
}
pub(super) use link_by_id;

/// Pending intents (`$is_pending`: the dialect's filter for them) created at or before
/// `$created_before_ms`, oldest first, with when each was last reconciled.
macro_rules! pending_intents_due {
    ($conn:expr, $is_pending:expr, $created_before_ms:expr, [$($aw:tt)*]) => {{
        let due: Vec<(String, Millis, Option<Millis>)> = refresh_intents::table
            .filter($is_pending)
            .filter(refresh_intents::created_at_ms.le($created_before_ms))
            .order(refresh_intents::created_at_ms.asc())
            .select((
                refresh_intents::id,
                refresh_intents::created_at_ms,
                refresh_intents::reconciled_at_ms,
            ))
            .load($conn)
            $($aw)*?;
        StoreResult::Ok(
            due.into_iter()
                .map(|(id, created_at_ms, reconciled_at_ms)| DueIntent {
                    id,
                    created_at_ms,
                    reconciled_at_ms,
                })
                .collect::<Vec<DueIntent>>(),
        )
    }};
}
pub(super) use pending_intents_due;

/// Remembers the first answer given for `$key` (`&KeyRecord`) at `$now_ms`: a later call
/// with the same key keeps the first.
macro_rules! remember_key {
    ($conn:expr, $key:expr, $now_ms:expr, [$($aw:tt)*]) => {{
        let key: &KeyRecord = $key;
        diesel::insert_into(idempotency_keys::table)
            .values((
                idempotency_keys::idempotency_key.eq(&key.key),
                idempotency_keys::token_sha256.eq(&key.token_sha256),
                idempotency_keys::refresh_type.eq(key.refresh_type.as_str()),
                idempotency_keys::refresh_intent_id.eq(&key.refresh_intent_id),
                idempotency_keys::joined_existing.eq(key.joined_existing),
                idempotency_keys::created_at_ms.eq($now_ms),
            ))
            .on_conflict_do_nothing()
            .execute($conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use remember_key;

/// The ids of the Links `$from` (`&LinksFrom`) may cover, at most `$limit`, in id order:
/// one Link's id is known without a read (whether it exists is read with the rest).
macro_rules! link_ids_from {
    ($conn:expr, $from:expr, $limit:expr, [$($aw:tt)*]) => {{
        let ids: Vec<String> = match $from {
            LinksFrom::One(id) => vec![id.clone()],
            LinksFrom::After(id) => links::table
                .filter(links::link_id.gt(id))
                .order(links::link_id.asc())
                .limit($limit)
                .select(links::link_id)
                .load(&mut *$conn)
                $($aw)*?,
        };
        StoreResult::Ok(ids)
    }};
}
pub(super) use link_ids_from;

/// Loads several independent queries: one after another on SQLite (`[]`); on PostgreSQL
/// (`[.await]`) pipelined on the one connection — sent together, answered in order, one
/// round trip for all of them. Binds each result to its name, as `let` would.
macro_rules! load_together {
    ([], $conn:expr; $($name:ident: $ty:ty = $query:expr),+ $(,)?) => {
        $( let $name: $ty = $query.load(&mut *$conn)?; )+
    };
    ([.await], $conn:expr; $($name:ident: $ty:ty = $query:expr),+ $(,)?) => {
        let shared: &diesel_async::AsyncPgConnection = &*$conn;
        let ($($name,)+): ($($ty,)+) =
            futures_util::try_join!($( $query.load(&mut &*shared) ),+)?;
    };
}
pub(super) use load_together;

/// The Links `$from` covers (at most `$limit`), each as it stands: its accounts (by id) with
/// their latest retained results, its pending intent and its last success of each type. A
/// page of Links costs four rounds of queries, one Link (whose id needs no read) three — not
/// a few queries per Link; on PostgreSQL each round is one round trip (`load_together!`). A
/// pending intent's view, rare, costs one more read.
macro_rules! link_snapshots {
    ($conn:expr, $from:expr, $limit:expr, [$($aw:tt)*]) => {{
        use std::collections::HashMap;
        let ids = queries::link_ids_from!($conn, $from, $limit, [$($aw)*])?;
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        let succeeded = || {
            refresh_intents::table
                .filter(refresh_intents::link_id.eq_any(&ids))
                .filter(refresh_intents::status.eq(IntentStatus::Succeeded.as_str()))
                .filter(refresh_intents::completed_at_ms.is_not_null())
        };
        queries::load_together!([$($aw)*], $conn;
            known: Vec<(String, Option<Millis>)> = links::table
                .filter(links::link_id.eq_any(&ids))
                .order(links::link_id.asc())
                .select((links::link_id, links::rejected_at_ms)),
            accounts: Vec<(String, String)> = accounts::table
                .filter(accounts::link_id.eq_any(&ids))
                .order((accounts::link_id.asc(), accounts::account_id.asc()))
                .select((accounts::link_id, accounts::account_id)),
            // Newest first: the first seen for a Link is its pending intent.
            pending_ids: Vec<(String, String)> = refresh_intents::table
                .filter(refresh_intents::link_id.eq_any(&ids))
                .filter(refresh_intents::status.eq(IntentStatus::Pending.as_str()))
                .order(refresh_intents::created_at_ms.desc())
                .select((refresh_intents::link_id, refresh_intents::id)),
            // The newest completion of each (Link, type).
            newest_done: Vec<Option<Millis>> = succeeded()
                .group_by((refresh_intents::link_id, refresh_intents::refresh_type))
                .select(diesel::dsl::max(refresh_intents::completed_at_ms)),
            kept: Vec<String> = link_tokens::table
                .filter(link_tokens::link_id.eq_any(&ids))
                .select(link_tokens::link_id),
        );
        let account_ids: Vec<&str> = accounts.iter().map(|(_, a)| a.as_str()).collect();
        let times: Vec<Millis> = newest_done.into_iter().flatten().collect();
        queries::load_together!([$($aw)*], $conn;
            // Each account's newest retained result (not a movements entry), through the
            // (account, sequence) index.
            newest: Vec<Option<i64>> = results::table
                .filter(results::account_id.eq_any(&account_ids))
                .filter(results::detail.eq(""))
                .group_by(results::account_id)
                .select(diesel::dsl::max(results::sequence)),
            // The intents completed at those times (a time newest for one Link may be an
            // older completion of another: sorted out below).
            at_newest: Vec<(String, String, String, Millis)> = succeeded()
                .filter(refresh_intents::completed_at_ms.eq_any(&times))
                .order(refresh_intents::id.asc())
                .select((
                    refresh_intents::link_id,
                    refresh_intents::refresh_type,
                    refresh_intents::id,
                    refresh_intents::completed_at_ms.assume_not_null(),
                )),
        );
        let newest: Vec<i64> = newest.into_iter().flatten().collect();
        let rows: Vec<$crate::store::rows::ResultRecord> = results::table
            .filter(results::sequence.eq_any(&newest))
            .select(results::all_columns)
            .load(&mut *$conn)
            $($aw)*?;
        let mut last: HashMap<String, ResultRow> = rows
            .into_iter()
            .map(|r| (r.account_id.clone(), ResultRow::from(r)))
            .collect();
        let mut pending: HashMap<String, IntentView> = HashMap::new();
        for (link_id, id) in pending_ids {
            if pending.contains_key(&link_id) {
                continue;
            }
            if let Some(view) = queries::get_intent!($conn, &id, [$($aw)*])? {
                pending.insert(link_id, view);
            }
        }
        // The newest per (Link, type); the first id at a tie.
        let mut last_success: HashMap<(String, String), (String, Millis)> = HashMap::new();
        for (link_id, kind, id, at) in at_newest {
            let slot = last_success.entry((link_id, kind)).or_insert((id.clone(), at));
            if at > slot.1 {
                *slot = (id, at);
            }
        }
        let mut by_link: HashMap<String, Vec<(String, Option<ResultRow>)>> = HashMap::new();
        for (link_id, account_id) in accounts {
            let result = last.remove(&account_id);
            by_link.entry(link_id).or_default().push((account_id, result));
        }
        let snapshots: Vec<LinkSnapshot> = known
            .into_iter()
            .map(|(link_id, rejected_at_ms)| KnownLink {
                link_id,
                rejected_at_ms,
            })
            .map(|link| {
                let id = link.link_id.clone();
                let pending = pending.remove(&id);
                let success = |kind: RefreshType| {
                    last_success.get(&(id.clone(), kind.as_str().to_owned())).cloned()
                };
                LinkSnapshot {
                    token_kept: kept.contains(&id),
                    accounts: by_link.remove(&id).unwrap_or_default(),
                    only_last: LinkState {
                        pending: pending.clone(),
                        last_success: success(RefreshType::OnlyLast),
                    },
                    historical: LinkState {
                        pending,
                        last_success: success(RefreshType::Historical),
                    },
                    link,
                }
            })
            .collect();
        StoreResult::Ok(snapshots)
    }};
}
pub(super) use link_snapshots;
