//! Conversions between stored rows / domain values and the wire messages. Statuses and
//! types are closed sets on both sides: every match is exhaustive.

use crate::clock::Millis;
use crate::domain::{
    Detail, IntentStatus, IntentView, Movement, RefreshType, ResultRow, ResultStatus,
    TransferAccount,
};
use crate::pb;
use crate::pb::watch_refresh_response::Event;

pub fn timestamp(ms: Millis) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// A wire timestamp in milliseconds (sub-millisecond part dropped, as stored times have
/// none); `None` when it is not a valid timestamp (nanos out of range, or too far out).
pub fn millis(t: &prost_types::Timestamp) -> Option<Millis> {
    if !(0..1_000_000_000).contains(&t.nanos) {
        return None;
    }
    t.seconds
        .checked_mul(1000)?
        .checked_add(i64::from(t.nanos / 1_000_000))
}

pub fn refresh_type_to_pb(t: RefreshType) -> pb::RefreshType {
    match t {
        RefreshType::OnlyLast => pb::RefreshType::OnlyLast,
        RefreshType::Historical => pb::RefreshType::Historical,
    }
}

/// The request's type; UNSPECIFIED means only_last. An out-of-range number is refused.
pub fn refresh_type_from_pb(value: i32) -> Option<RefreshType> {
    match pb::RefreshType::try_from(value).ok()? {
        pb::RefreshType::Unspecified | pb::RefreshType::OnlyLast => Some(RefreshType::OnlyLast),
        pb::RefreshType::Historical => Some(RefreshType::Historical),
    }
}

pub fn result_status_to_pb(s: ResultStatus) -> pb::RefreshStatus {
    match s {
        ResultStatus::Succeeded => pb::RefreshStatus::Succeeded,
        ResultStatus::Failed => pb::RefreshStatus::Failed,
        ResultStatus::Rejected => pb::RefreshStatus::Rejected,
        ResultStatus::TimedOut => pb::RefreshStatus::TimedOut,
    }
}

pub fn intent_status_to_pb(s: IntentStatus) -> pb::RefreshStatus {
    match s {
        IntentStatus::Pending => pb::RefreshStatus::Pending,
        IntentStatus::Succeeded => pb::RefreshStatus::Succeeded,
        IntentStatus::Failed => pb::RefreshStatus::Failed,
        IntentStatus::Rejected => pb::RefreshStatus::Rejected,
        IntentStatus::TimedOut => pb::RefreshStatus::TimedOut,
    }
}

pub fn account_result(row: &ResultRow) -> pb::AccountResult {
    // The CHECK constraint keeps unknown statuses out of the table; should one appear
    // anyway it is shown as UNSPECIFIED rather than guessed.
    let status = ResultStatus::parse(&row.status)
        .map(result_status_to_pb)
        .unwrap_or(pb::RefreshStatus::Unspecified);
    pb::AccountResult {
        account_id: row.account_id.clone(),
        link_id: row.link_id.clone(),
        refresh_intent_id: row.refresh_intent_id.clone(),
        status: status.into(),
        new_movements: u32::try_from(row.new_movements).unwrap_or(u32::MAX),
        public_error: row.public_error.clone(),
        event_id: row.event_id.clone(),
        occurred_at: Some(timestamp(row.occurred_at_ms)),
    }
}

/// A movement as the wire has it.
pub fn movement(m: &Movement) -> pb::Movement {
    let account = |a: &TransferAccount| pb::TransferAccount {
        holder_id: a.holder_id.clone(),
        holder_name: a.holder_name.clone(),
        number: a.number.clone(),
        institution_id: a.institution_id.clone(),
        institution_name: a.institution_name.clone(),
    };
    pb::Movement {
        id: m.id.clone(),
        amount: m.amount,
        currency: m.currency.clone(),
        description: m.description.clone(),
        post_date: m.post_date.clone(),
        transaction_date: m.transaction_date.clone(),
        r#type: m.kind.clone(),
        status: m.status.clone(),
        pending: m.pending,
        reference_id: m.reference_id.clone(),
        comment: m.comment.clone(),
        sender_account: m.sender_account.as_ref().map(account),
        recipient_account: m.recipient_account.as_ref().map(account),
    }
}

/// The wire event of a log entry: an account result, or what became of movements.
pub fn entry_event(row: &ResultRow) -> Event {
    match &row.detail {
        Detail::Result => Event::AccountResult(account_result(row)),
        Detail::Movements(entry) => Event::Movements(pb::MovementsChanged {
            account_id: row.account_id.clone(),
            link_id: row.link_id.clone(),
            refresh_intent_id: row.refresh_intent_id.clone(),
            event_id: row.event_id.clone(),
            added: entry.added.iter().map(movement).collect(),
            modified: entry.modified.iter().map(movement).collect(),
            removed_ids: entry.removed_ids.clone(),
            complete: entry.complete,
        }),
        Detail::Unavailable(u) => Event::MovementsUnavailable(pb::MovementsUnavailable {
            account_id: row.account_id.clone(),
            link_id: row.link_id.clone(),
            event_id: row.event_id.clone(),
            reason: u.reason.as_str().to_owned(),
            message: u.message.clone(),
        }),
    }
}

pub fn refresh_intent(view: &IntentView) -> pb::RefreshIntent {
    pb::RefreshIntent {
        id: view.id.clone(),
        link_id: view.link_id.clone(),
        refresh_type: refresh_type_to_pb(view.refresh_type).into(),
        status: intent_status_to_pb(view.status).into(),
        accounts: view
            .accounts
            .iter()
            .map(|a| match &a.result {
                Some(row) => account_result(row),
                None => pb::AccountResult {
                    account_id: a.account_id.clone(),
                    link_id: view.link_id.clone(),
                    refresh_intent_id: view.id.clone(),
                    status: pb::RefreshStatus::Pending.into(),
                    ..Default::default()
                },
            })
            .collect(),
        mfa_widget_token: view.mfa_widget_token.clone(),
        created_at: Some(timestamp(view.created_at_ms)),
        completed_at: view.completed_at_ms.map(timestamp),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_timestamps_read_back_as_millis_and_bad_ones_are_refused() {
        for ms in [0, 1_764_547_200_123, -1] {
            assert_eq!(super::millis(&super::timestamp(ms)), Some(ms));
        }
        let bad = |seconds, nanos| prost_types::Timestamp { seconds, nanos };
        assert_eq!(super::millis(&bad(1, -1)), None);
        assert_eq!(super::millis(&bad(1, 1_000_000_000)), None);
        assert_eq!(super::millis(&bad(i64::MAX, 0)), None);
    }

    #[test]
    fn timestamps_keep_milliseconds_and_handle_negative() {
        assert_eq!(
            timestamp(1_500),
            prost_types::Timestamp {
                seconds: 1,
                nanos: 500_000_000
            }
        );
        assert_eq!(
            timestamp(-1),
            prost_types::Timestamp {
                seconds: -1,
                nanos: 999_000_000
            }
        );
    }

    #[test]
    fn refresh_types() {
        assert_eq!(refresh_type_from_pb(0), Some(RefreshType::OnlyLast));
        assert_eq!(refresh_type_from_pb(1), Some(RefreshType::OnlyLast));
        assert_eq!(refresh_type_from_pb(2), Some(RefreshType::Historical));
        assert_eq!(refresh_type_from_pb(9), None);
        for t in [RefreshType::OnlyLast, RefreshType::Historical] {
            assert_eq!(refresh_type_from_pb(refresh_type_to_pb(t).into()), Some(t));
        }
    }
}
