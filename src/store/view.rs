//! An intent's view, built from what a backend read. Both backends read the same columns
//! through their own schemas; what they make of them is decided once, here.

use diesel::Queryable;

use crate::clock::Millis;
use crate::domain::{AccountState, IntentStatus, IntentView, RefreshType, ResultRow};
use crate::store::StoreResult;

/// An intent's own columns, selected in this order by each backend.
#[derive(Debug, Clone, Queryable)]
pub(super) struct IntentRow {
    pub id: String,
    pub link_id: String,
    pub refresh_type: String,
    pub status: String,
    pub mfa_widget_token: String,
    pub created_at_ms: Millis,
    pub completed_at_ms: Option<Millis>,
    pub completed_sequence: Option<i64>,
}

/// The sequences of the results that answered `expected` accounts: what to read next.
pub(super) fn answered(expected: &[(String, Option<i64>)]) -> Vec<i64> {
    expected.iter().filter_map(|(_, seq)| *seq).collect()
}

/// The view of intent `row`: its expected accounts, in order, each with the result (among
/// `results`) whose sequence answered it.
pub(super) fn intent_view(
    row: IntentRow,
    expected: Vec<(String, Option<i64>)>,
    mut results: Vec<ResultRow>,
) -> StoreResult<IntentView> {
    let accounts = expected
        .into_iter()
        .map(|(account_id, seq)| {
            let result = seq.and_then(|s| {
                results
                    .iter()
                    .position(|r| r.sequence == s)
                    .map(|i| results.swap_remove(i))
            });
            AccountState { account_id, result }
        })
        .collect();
    Ok(IntentView {
        refresh_type: RefreshType::parse(&row.refresh_type)?,
        status: IntentStatus::parse(&row.status)?,
        id: row.id,
        link_id: row.link_id,
        mfa_widget_token: row.mfa_widget_token,
        created_at_ms: row.created_at_ms,
        completed_at_ms: row.completed_at_ms,
        completed_sequence: row.completed_sequence,
        accounts,
    })
}
