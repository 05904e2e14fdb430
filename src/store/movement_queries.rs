//! The movements statements both backends run, written once as macros (as `queries.rs`
//! explains: the paths resolve against the backend's schema, the last argument finishes a
//! call — `[]` on SQLite, `[.await]` on PostgreSQL). What stays in a backend is how a log
//! entry is appended (SQLite's AUTOINCREMENT, PostgreSQL's counter under its lock).
//!
//! Sealed tokens (`link_tokens`), stored movements (`movements`) and owed fetches
//! (`fetch_jobs`) are described in the migration `2026-12-04-000001_movements`.

/// A fetch job's columns, in `decide::movements::JobRow`'s order.
macro_rules! job_columns {
    () => {
        (
            fetch_jobs::result_sequence,
            fetch_jobs::account_id,
            fetch_jobs::link_id,
            fetch_jobs::event_id,
            fetch_jobs::new_movements,
            fetch_jobs::occurred_at_ms,
            fetch_jobs::attempts,
        )
    };
}
pub(super) use job_columns;

/// Whether the Link's token is kept.
macro_rules! token_kept {
    ($conn:expr, $link_id:expr, [$($aw:tt)*]) => {{
        let found: Option<String> = link_tokens::table
            .find($link_id)
            .select(link_tokens::link_id)
            .get_result(&mut *$conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(found.is_some())
    }};
}
pub(super) use token_kept;

/// Keeps (or replaces) the Link's sealed token, given at `$at_ms`.
macro_rules! keep_token {
    ($conn:expr, $link_id:expr, $sealed:expr, $at_ms:expr, [$($aw:tt)*]) => {{
        let sealed: &$crate::store::SealedToken = $sealed;
        diesel::insert_into(link_tokens::table)
            .values((
                link_tokens::link_id.eq($link_id),
                link_tokens::key_id.eq(&sealed.key_id),
                link_tokens::nonce.eq(&sealed.nonce),
                link_tokens::ciphertext.eq(&sealed.ciphertext),
                link_tokens::given_at_ms.eq($at_ms),
            ))
            .on_conflict(link_tokens::link_id)
            .do_update()
            .set((
                link_tokens::key_id.eq(&sealed.key_id),
                link_tokens::nonce.eq(&sealed.nonce),
                link_tokens::ciphertext.eq(&sealed.ciphertext),
                link_tokens::given_at_ms.eq($at_ms),
            ))
            .execute(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use keep_token;

/// Replaces a token still sealed under `$from_key` (rotation); a token given again since,
/// under the new key, is left alone.
macro_rules! reseal_token {
    ($conn:expr, $link_id:expr, $from_key:expr, $sealed:expr, [$($aw:tt)*]) => {{
        let sealed: &$crate::store::SealedToken = $sealed;
        diesel::update(
            link_tokens::table
                .filter(link_tokens::link_id.eq($link_id))
                .filter(link_tokens::key_id.eq($from_key)),
        )
        .set((
            link_tokens::key_id.eq(&sealed.key_id),
            link_tokens::nonce.eq(&sealed.nonce),
            link_tokens::ciphertext.eq(&sealed.ciphertext),
        ))
        .execute(&mut *$conn)
        $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use reseal_token;

/// The Link's sealed token, if kept.
macro_rules! sealed_token {
    ($conn:expr, $link_id:expr, [$($aw:tt)*]) => {{
        let found: Option<(String, Vec<u8>, Vec<u8>)> = link_tokens::table
            .find($link_id)
            .select((link_tokens::key_id, link_tokens::nonce, link_tokens::ciphertext))
            .get_result(&mut *$conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(found.map(|(key_id, nonce, ciphertext)| $crate::store::SealedToken {
            key_id,
            nonce,
            ciphertext,
        }))
    }};
}
pub(super) use sealed_token;

/// Drops tokens last given before `$before_ms`; how many.
macro_rules! drop_expired_tokens {
    ($conn:expr, $before_ms:expr, [$($aw:tt)*]) => {{
        let dropped: usize =
            diesel::delete(link_tokens::table.filter(link_tokens::given_at_ms.lt($before_ms)))
                .execute(&mut *$conn)
                $($aw)*?;
        StoreResult::Ok(dropped)
    }};
}
pub(super) use drop_expired_tokens;

/// The stored movements of `$account_id` among `$ids`, by id.
macro_rules! stored_movements {
    ($conn:expr, $account_id:expr, $ids:expr, [$($aw:tt)*]) => {{
        let mut stored = std::collections::HashMap::new();
        // In slices: a listing can name more ids than a statement may bind (SQLite: 32,766).
        for ids in $ids.chunks(1_000) {
            let rows: Vec<(String, String)> = movements::table
                .filter(movements::account_id.eq($account_id))
                .filter(movements::movement_id.eq_any(ids))
                .select((movements::movement_id, movements::body))
                .load(&mut *$conn)
                $($aw)*?;
            for (id, body) in rows {
                let movement = $crate::domain::Movement::from_stored(&body).map_err(|e| {
                    $crate::store::StoreError::Corrupt(format!("stored movement {id}: {e}"))
                })?;
                stored.insert(id, movement);
            }
        }
        StoreResult::Ok(stored)
    }};
}
pub(super) use stored_movements;

/// Stores `$list` (`&[Movement]`) as `$account_id`'s (of `$link_id`) movements as they now
/// are, and forgets `$removed` (`&[String]`).
macro_rules! write_movements {
    ($conn:expr, $account_id:expr, $link_id:expr, $list:expr, $removed:expr, [$($aw:tt)*]) => {{
        for movement in $list {
            let body = movement.to_stored();
            diesel::insert_into(movements::table)
                .values((
                    movements::account_id.eq($account_id),
                    movements::movement_id.eq(&movement.id),
                    movements::link_id.eq($link_id),
                    movements::post_date.eq(&movement.post_date),
                    movements::body.eq(&body),
                ))
                .on_conflict((movements::account_id, movements::movement_id))
                .do_update()
                .set((
                    movements::post_date.eq(&movement.post_date),
                    movements::body.eq(&body),
                ))
                .execute(&mut *$conn)
                $($aw)*?;
        }
        let removed: &[String] = $removed;
        if !removed.is_empty() {
            diesel::delete(
                movements::table
                    .filter(movements::account_id.eq($account_id))
                    .filter(movements::movement_id.eq_any(removed)),
            )
            .execute(&mut *$conn)
            $($aw)*?;
        }
        StoreResult::Ok(())
    }};
}
pub(super) use write_movements;

/// Writes the fetch owed for the result at `$sequence` (`&ResultRow`), due now.
macro_rules! insert_fetch_job {
    ($conn:expr, $row:expr, $now_ms:expr, [$($aw:tt)*]) => {{
        let row: &$crate::domain::ResultRow = $row;
        diesel::insert_into(fetch_jobs::table)
            .values((
                fetch_jobs::result_sequence.eq(row.sequence),
                fetch_jobs::account_id.eq(&row.account_id),
                fetch_jobs::link_id.eq(&row.link_id),
                fetch_jobs::event_id.eq(&row.event_id),
                fetch_jobs::new_movements.eq(row.new_movements),
                fetch_jobs::occurred_at_ms.eq(row.occurred_at_ms),
                fetch_jobs::due_at_ms.eq($now_ms),
            ))
            .execute(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use insert_fetch_job;

/// Leases one Link's due fetches to `$owner` until `$now_ms + $lease_ms`: the Link of the
/// oldest due job that nobody holds, and only if no job of that Link is held (one Link's
/// fetches run one at a time, cluster-wide). Read and leased in the caller's transaction,
/// which claims run one at a time (SQLite: the writer's; PostgreSQL: one holding the claim's
/// advisory lock), so two never lease the same job.
macro_rules! claim_fetches {
    ($conn:expr, $owner:expr, $now_ms:expr, $lease_ms:expr, [$($aw:tt)*]) => {{
        let (owner, now_ms, lease_ms): (&str, Millis, Millis) = ($owner, $now_ms, $lease_ms);
        // Links with a job leased now (few: one per fetching process).
        let held: Vec<String> = fetch_jobs::table
            .filter(fetch_jobs::lease_until_ms.gt(now_ms))
            .select(fetch_jobs::link_id)
            .distinct()
            .load(&mut *$conn)
            $($aw)*?;
        let link: Option<String> = fetch_jobs::table
            .filter(fetch_jobs::due_at_ms.le(now_ms))
            .filter(fetch_jobs::lease_until_ms.le(now_ms))
            .filter(fetch_jobs::link_id.ne_all(&held))
            .order((fetch_jobs::due_at_ms.asc(), fetch_jobs::result_sequence.asc()))
            .select(fetch_jobs::link_id)
            .first(&mut *$conn)
        $($aw)*
        .optional()?;
        match link {
            None => StoreResult::Ok(None),
            Some(link_id) => {
                let rows: Vec<$crate::store::decide::movements::JobRow> = fetch_jobs::table
                    .filter(fetch_jobs::link_id.eq(&link_id))
                    .filter(fetch_jobs::due_at_ms.le(now_ms))
                    .filter(fetch_jobs::lease_until_ms.le(now_ms))
                    .order(fetch_jobs::result_sequence.asc())
                    .limit(200)
                    .select(movement_queries::job_columns!())
                    .load(&mut *$conn)
                    $($aw)*?;
                let sequences: Vec<i64> = rows.iter().map(|r| r.0).collect();
                diesel::update(fetch_jobs::table.filter(fetch_jobs::result_sequence.eq_any(&sequences)))
                    .set((
                        fetch_jobs::lease_owner.eq(owner),
                        fetch_jobs::lease_until_ms.eq(now_ms + lease_ms),
                    ))
                    .execute(&mut *$conn)
                    $($aw)*?;
                let token = movement_queries::sealed_token!($conn, &link_id, [$($aw)*])?;
                let jobs = rows
                    .into_iter()
                    .map($crate::store::decide::movements::job_of)
                    .collect();
                StoreResult::Ok(Some($crate::store::FetchClaim {
                    owner: owner.to_owned(),
                    link_id,
                    token,
                    jobs,
                }))
            }
        }
    }};
}
pub(super) use claim_fetches;

/// How many of the jobs at `$sequences` are still leased to `$owner` (a lease that ran out
/// still counts until another process claims the job: the claim is what moves it).
macro_rules! still_leased {
    ($conn:expr, $owner:expr, $sequences:expr, [$($aw:tt)*]) => {{
        let count: i64 = fetch_jobs::table
            .filter(fetch_jobs::result_sequence.eq_any($sequences))
            .filter(fetch_jobs::lease_owner.eq($owner))
            .count()
            .get_result(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok(count as usize)
    }};
}
pub(super) use still_leased;

/// Puts the jobs at `$sequences` back, due again at `$due_ms`, one more attempt counted.
macro_rules! retry_jobs {
    ($conn:expr, $sequences:expr, $due_ms:expr, [$($aw:tt)*]) => {{
        diesel::update(fetch_jobs::table.filter(fetch_jobs::result_sequence.eq_any($sequences)))
            .set((
                fetch_jobs::attempts.eq(fetch_jobs::attempts + 1),
                fetch_jobs::due_at_ms.eq($due_ms),
                fetch_jobs::lease_owner.eq(""),
                fetch_jobs::lease_until_ms.eq(0i64),
            ))
            .execute(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use retry_jobs;

/// Deletes the jobs at `$sequences`.
macro_rules! delete_jobs {
    ($conn:expr, $sequences:expr, [$($aw:tt)*]) => {{
        diesel::delete(fetch_jobs::table.filter(fetch_jobs::result_sequence.eq_any($sequences)))
            .execute(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use delete_jobs;

/// The jobs a Link still owes, as `FetchJob`s (ForgetLink concludes each).
macro_rules! jobs_of_link {
    ($conn:expr, $link_id:expr, [$($aw:tt)*]) => {{
        let rows: Vec<$crate::store::decide::movements::JobRow> = fetch_jobs::table
            .filter(fetch_jobs::link_id.eq($link_id))
            .order(fetch_jobs::result_sequence.asc())
            .select(movement_queries::job_columns!())
            .load(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok(
            rows.into_iter()
                .map($crate::store::decide::movements::job_of)
                .collect::<Vec<$crate::store::FetchJob>>(),
        )
    }};
}
pub(super) use jobs_of_link;

/// The intent of the result at `$sequence` ("" when none, or when it was pruned).
macro_rules! intent_of_result {
    ($conn:expr, $sequence:expr, [$($aw:tt)*]) => {{
        let intent: Option<String> = results::table
            .find($sequence)
            .select(results::refresh_intent_id)
            .get_result(&mut *$conn)
            $($aw)*
            .optional()?;
        StoreResult::Ok(intent.unwrap_or_default())
    }};
}
pub(super) use intent_of_result;

/// Forgets the Link's token and its accounts' stored movements.
macro_rules! forget_link_data {
    ($conn:expr, $link_id:expr, [$($aw:tt)*]) => {{
        diesel::delete(link_tokens::table.find($link_id))
            .execute(&mut *$conn)
            $($aw)*?;
        diesel::delete(movements::table.filter(movements::link_id.eq($link_id)))
            .execute(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok(())
    }};
}
pub(super) use forget_link_data;

/// A page of `$account_id`'s stored movements, newest post_date first (then newest id),
/// after `$after` ((post_date, id) of the previous page's last), at most `$limit`; `None`
/// for an account never seen here. The caller reads it in one snapshot with the log's
/// position.
macro_rules! list_movements {
    ($conn:expr, $account_id:expr, $after:expr, $limit:expr, [$($aw:tt)*]) => {{
        let known: Option<String> = accounts::table
            .find($account_id)
            .select(accounts::account_id)
            .get_result(&mut *$conn)
            $($aw)*
            .optional()?;
        let stored: i64 = if known.is_some() {
            1
        } else {
            movements::table
                .filter(movements::account_id.eq($account_id))
                .count()
                .get_result(&mut *$conn)
                $($aw)*?
        };
        if stored == 0 {
            StoreResult::Ok(None)
        } else {
            let after: &Option<(String, String)> = $after;
            let mut query = movements::table
                .filter(movements::account_id.eq($account_id))
                .order((movements::post_date.desc(), movements::movement_id.desc()))
                .select(movements::body)
                .limit($limit + 1)
                .into_boxed();
            if let Some((date, id)) = after {
                query = query.filter(
                    movements::post_date
                        .lt(date.clone())
                        .or(movements::post_date.eq(date.clone()).and(movements::movement_id.lt(id.clone()))),
                );
            }
            let bodies: Vec<String> = query.load(&mut *$conn)$($aw)*?;
            let more = bodies.len() as i64 > $limit;
            let list = bodies
                .iter()
                .take($limit as usize)
                .map(|b| {
                    $crate::domain::Movement::from_stored(b).map_err(|e| {
                        $crate::store::StoreError::Corrupt(format!("a stored movement: {e}"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            StoreResult::Ok(Some((list, more)))
        }
    }};
}
pub(super) use list_movements;

/// `Some(newest sequence of the intent's movements entries, 0 if none)` once none of its
/// results owes a fetch; `None` while one does.
macro_rules! movements_settled {
    ($conn:expr, $intent_id:expr, [$($aw:tt)*]) => {{
        let answers = intent_accounts::table
            .filter(intent_accounts::refresh_intent_id.eq($intent_id))
            .filter(intent_accounts::result_sequence.is_not_null())
            .select(intent_accounts::result_sequence.assume_not_null());
        let owed: i64 = fetch_jobs::table
            .filter(fetch_jobs::result_sequence.eq_any(answers))
            .count()
            .get_result(&mut *$conn)
            $($aw)*?;
        if owed > 0 {
            StoreResult::Ok(None)
        } else {
            let accounts = intent_accounts::table
                .filter(intent_accounts::refresh_intent_id.eq($intent_id))
                .select(intent_accounts::account_id);
            let newest: Option<i64> = results::table
                .filter(results::account_id.eq_any(accounts))
                .filter(results::refresh_intent_id.eq($intent_id))
                .filter(results::detail.ne(""))
                .select(diesel::dsl::max(results::sequence))
                .get_result(&mut *$conn)
                $($aw)*?;
            StoreResult::Ok(Some(newest.unwrap_or(0)))
        }
    }};
}
pub(super) use movements_settled;

/// The keys kept tokens are sealed under, with how many each seals.
macro_rules! token_keys {
    ($conn:expr, [$($aw:tt)*]) => {{
        let keys: Vec<(String, i64)> = link_tokens::table
            .group_by(link_tokens::key_id)
            .select((link_tokens::key_id, diesel::dsl::count_star()))
            .load(&mut *$conn)
            $($aw)*?;
        StoreResult::Ok(keys)
    }};
}
pub(super) use token_keys;

/// Drops the tokens sealed under `$kid`; how many.
macro_rules! drop_tokens_of_key {
    ($conn:expr, $kid:expr, [$($aw:tt)*]) => {{
        let dropped: usize =
            diesel::delete(link_tokens::table.filter(link_tokens::key_id.eq($kid)))
                .execute(&mut *$conn)
                $($aw)*?;
        StoreResult::Ok(dropped)
    }};
}
pub(super) use drop_tokens_of_key;
