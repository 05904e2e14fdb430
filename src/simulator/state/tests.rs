//! The model's rules, table by table: outcomes, rejections, cooldowns, idempotency, faults.

use super::*;
use crate::simulator::{LinkSpec, SimLinkInfo};

fn state_with(outcomes: Vec<Outcome>) -> (State, SimLinkInfo) {
    let mut s = State::new("sk_test_x", "http://sim");
    let info = s.add_link(LinkSpec::new(outcomes));
    (s, info)
}

#[test]
fn one_refresh_at_a_time_then_cooldown_only_after_success() {
    let (mut s, info) = state_with(vec![Outcome::Succeed { new_movements: 2 }]);
    let t = 1_800_000_000_000;
    let link = s.link_by_token(&info.token).unwrap();
    assert!(s.refusal(link, RefreshType::OnlyLast, t, 400).is_none());
    let intent = s.create_intent(&info.token, RefreshType::OnlyLast, t);
    let link = s.link_by_token(&info.token).unwrap();
    assert_eq!(
        s.refusal(link, RefreshType::OnlyLast, t, 400).unwrap().2,
        "refresh_intent_in_progress"
    );
    let events = s.run_intent(&intent.id, t + 1000, false);
    assert_eq!(events.len(), 1);
    let link = s.link_by_token(&info.token).unwrap();
    assert_eq!(
        s.refusal(link, RefreshType::OnlyLast, t + 60_000, 400)
            .unwrap()
            .2,
        "rate_limit_exceeded"
    );
    assert!(
        s.refusal(link, RefreshType::OnlyLast, t + 1000 + 300_000, 400)
            .is_none()
    );
    assert!(
        s.refusal(link, RefreshType::Historical, t + 60_000, 400)
            .is_none(),
        "cooldowns are per type"
    );
    assert_eq!(s.movements[&info.account_ids[0]].len(), 47);
}

#[test]
fn failures_start_no_cooldown_and_rejections_block() {
    let (mut s, info) = state_with(vec![Outcome::Fail {
        public_error: "x".into(),
    }]);
    let t = 1_800_000_000_000;
    let intent = s.create_intent(&info.token, RefreshType::OnlyLast, t);
    s.run_intent(&intent.id, t, false);
    let link = s.link_by_token(&info.token).unwrap();
    assert!(s.refusal(link, RefreshType::OnlyLast, t + 1, 400).is_none());

    let (mut s, info) = state_with(vec![Outcome::Reject, Outcome::Succeed { new_movements: 0 }]);
    let intent = s.create_intent(&info.token, RefreshType::OnlyLast, t);
    let events = s.run_intent(&intent.id, t, false);
    assert_eq!(events.len(), 2);
    assert_eq!(s.intents[0].status, "rejected");
    let link = s.link_by_token(&info.token).unwrap();
    assert_eq!(
        s.refusal(link, RefreshType::OnlyLast, t, 400).unwrap().2,
        "rejected_refresh_intent"
    );
    s.reconnect(&info.link_id);
    let link = s.link_by_token(&info.token).unwrap();
    assert!(s.refusal(link, RefreshType::OnlyLast, t, 400).is_none());
}

#[test]
fn an_unconfirmed_rejection_refuses_for_an_hour_then_allows() {
    let (mut s, info) = state_with(vec![Outcome::RejectUnconfirmed, Outcome::Reject]);
    let t = 1_800_000_000_000;
    let intent = s.create_intent(&info.token, RefreshType::OnlyLast, t);
    s.run_intent(&intent.id, t, false);
    let link = s.link_by_token(&info.token).unwrap();
    let refusal = s.refusal(link, RefreshType::OnlyLast, t, 400).unwrap();
    assert!(
        refusal.3.contains("reconnect"),
        "confirmed wins: {refusal:?}"
    );

    let (mut s, info) = state_with(vec![Outcome::RejectUnconfirmed]);
    let intent = s.create_intent(&info.token, RefreshType::OnlyLast, t);
    s.run_intent(&intent.id, t, false);
    assert_eq!(s.intents[0].status, "rejected");
    let link = s.link_by_token(&info.token).unwrap();
    let hour = UNCONFIRMED_REJECTION_WAIT_MS;
    let (status, kind, code, message) = s
        .refusal(link, RefreshType::OnlyLast, t + hour - 1, 400)
        .unwrap();
    assert_eq!(
        (status, kind, code),
        (400, "link_error", "rejected_refresh_intent")
    );
    assert_eq!(
        message,
        "The institution indicated that the credentials are invalid. You have to wait at least an hour to avoid locking your credentials"
    );
    assert!(
        s.refusal(link, RefreshType::OnlyLast, t + hour, 400)
            .is_none()
    );
}

#[test]
fn targeted_faults_wait_for_their_request_and_keep_their_order() {
    let mut s = State::new("sk_test_x", "http://sim");
    s.inject(Some(("POST", "/v1/refresh_intents")), Fault::Status(503), 2);
    s.inject(None, Fault::Status(500), 1);
    assert_eq!(s.next_fault("GET", "/v1/links/t"), Some(Fault::Status(500)));
    assert_eq!(s.next_fault("GET", "/v1/links/t"), None);
    assert_eq!(
        s.next_fault("POST", "/v1/refresh_intents"),
        Some(Fault::Status(503))
    );
    assert_eq!(
        s.next_fault("post", "/v1/refresh_intents"),
        Some(Fault::Status(503))
    );
    assert_eq!(s.next_fault("POST", "/v1/refresh_intents"), None);
}

#[test]
fn idempotency_answers_are_kept_first_come_for_24_hours() {
    let mut s = State::new("sk_test_x", "http://sim");
    let answer = |status: u16, at_ms| StoredAnswer {
        fingerprint: "f".into(),
        status,
        content_type: None,
        body: Bytes::new(),
        at_ms,
    };
    s.remember("k".into(), answer(503, 0));
    s.remember("k".into(), answer(201, 5));
    assert_eq!(s.recall("k", IDEMPOTENCY_TTL_MS - 1).unwrap().status, 503);
    assert!(s.recall("k", IDEMPOTENCY_TTL_MS).is_none());
    s.remember("k".into(), answer(201, IDEMPOTENCY_TTL_MS));
    assert_eq!(s.recall("k", IDEMPOTENCY_TTL_MS).unwrap().status, 201);
    s.remember("old".into(), answer(400, 0));
    s.remember("new".into(), answer(400, IDEMPOTENCY_TTL_MS));
    assert_eq!(s.idempotency.len(), 2, "expired keys are purged on insert");
}

#[test]
fn silent_accounts_send_nothing_and_dropped_ones_are_listed_but_not_delivered() {
    let (mut s, info) = state_with(vec![
        Outcome::Silent,
        Outcome::Dropped,
        Outcome::Succeed { new_movements: 0 },
    ]);
    let intent = s.create_intent(&info.token, RefreshType::OnlyLast, 0);
    let events = s.run_intent(&intent.id, 0, true);
    assert_eq!(events.len(), 2);
    assert!(events.iter().filter(|e| e.deliver).count() == 1);
    assert_eq!(s.intents[0].status, "failed");
    assert_eq!(s.events.len(), 2);
}
