//! The model's rules, table by table: outcomes, rejections, cooldowns, idempotency, faults,
//! and movements (listing, pending, modified, removed, scheduled refreshes, page shifts).

use super::movements::post_day;
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

// Movements: listing, pending ones, changes after a refresh, recurring refreshes.

/// 2027-01-15T08:00:00Z, years after the seeded movements (2023).
const NOW: Millis = 1_800_000_000_000;

fn ids_of(items: &[Value]) -> Vec<String> {
    items
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

fn all() -> MovementQuery {
    MovementQuery {
        confirmed_only: false,
        ..MovementQuery::default()
    }
}

fn body(event: &Event) -> Value {
    serde_json::from_str(&event.body).unwrap()
}

#[test]
fn movements_list_newest_post_date_first_and_newest_created_first_within_a_day() {
    let (mut s, info) = state_with(vec![Outcome::Succeed { new_movements: 0 }]);
    let account = &info.account_ids[0];
    let added = s.add_movements(account, 3, 0, NOW);
    let listed = s.list_movements(account, &MovementQuery::default());
    assert_eq!(listed.len(), 48);
    let mut newest = ids_of(&added);
    newest.reverse();
    assert_eq!(
        ids_of(&listed[..3]),
        newest,
        "today's, newest created first"
    );
    let days: Vec<&str> = listed.iter().map(post_day).collect();
    assert!(days.windows(2).all(|w| w[0] >= w[1]), "{days:?}");
    // Seeded movements come two per day: of each pair the later-created is listed first.
    let seeded = &s.movements[account];
    assert_eq!(listed[3]["id"], seeded[44]["id"]);
    assert_eq!(listed[4]["id"], seeded[43]["id"]);
    assert_eq!(
        listed,
        s.list_movements(account, &MovementQuery::default()),
        "stable"
    );
}

#[test]
fn since_is_inclusive_and_until_exclusive_on_the_post_date() {
    let (mut s, info) = state_with(vec![Outcome::Succeed { new_movements: 0 }]);
    let account = &info.account_ids[0];
    let day = post_day(&s.movements[account][10]).to_owned();
    let on_day = |s: &State, q: MovementQuery| {
        s.list_movements(account, &q)
            .iter()
            .map(|m| post_day(m).to_owned())
            .collect::<Vec<_>>()
    };
    let since = on_day(
        &s,
        MovementQuery {
            since: Some(day.clone()),
            ..MovementQuery::default()
        },
    );
    assert_eq!(since.last(), Some(&day));
    let until = on_day(
        &s,
        MovementQuery {
            until: Some(day.clone()),
            ..MovementQuery::default()
        },
    );
    assert!(until.iter().all(|d| *d < day) && !until.is_empty());
    assert_eq!(since.len() + until.len(), 45);
    let just_that_day = on_day(
        &s,
        MovementQuery {
            since: Some(day.clone()),
            until: Some(day.clone()),
            ..MovementQuery::default()
        },
    );
    assert!(just_that_day.is_empty(), "until is exclusive");
    s.add_movements(account, 1, 0, NOW);
    let today = on_day(
        &s,
        MovementQuery {
            since: Some("2027-01-15".into()),
            until: Some("2027-01-16".into()),
            ..MovementQuery::default()
        },
    );
    assert_eq!(today, ["2027-01-15"], "new movements are posted today");
}

#[test]
fn confirmed_only_hides_pending_reversed_and_duplicated_movements() {
    let (mut s, info) = state_with(vec![Outcome::Succeed { new_movements: 0 }]);
    let account = &info.account_ids[0];
    let list = s.movements.get_mut(account).unwrap();
    list[0]["status"] = json!("reversed");
    list[1]["status"] = json!("duplicated");
    s.add_movements(account, 2, 1, NOW);
    assert_eq!(
        s.list_movements(account, &MovementQuery::default()).len(),
        44
    );
    let everything = s.list_movements(account, &all());
    assert_eq!(everything.len(), 47);
    assert_eq!(everything[0]["status"], "pending");
    assert_eq!(everything[0]["pending"], true);
}

#[test]
fn a_refresh_with_pending_movements_counts_them_all_as_new() {
    let (mut s, info) = state_with(vec![Outcome::SucceedWithPending {
        new_movements: 5,
        pending: 2,
    }]);
    let intent = s.create_intent(&info.token, RefreshType::OnlyLast, NOW);
    let events = s.run_intent(&intent.id, NOW, false);
    assert_eq!(body(&events[0])["data"]["new_movements"], 5);
    assert_eq!(body(&events[0])["data"]["status"], "succeeded");
    let account = &info.account_ids[0];
    let new: Vec<Value> = s
        .list_movements(account, &all())
        .into_iter()
        .take(5)
        .collect();
    let pending: Vec<bool> = new.iter().map(|m| m["pending"] == true).collect();
    assert_eq!(pending, [true, true, false, false, false], "the newest two");
    assert_eq!(s.intents[0].status, "succeeded");
}

#[test]
fn confirming_pending_movements_records_one_movements_modified_event() {
    let (mut s, info) = state_with(vec![Outcome::SucceedWithPending {
        new_movements: 3,
        pending: 2,
    }]);
    let account = info.account_ids[0].clone();
    let intent = s.create_intent(&info.token, RefreshType::OnlyLast, NOW);
    s.run_intent(&intent.id, NOW, false);
    let pending_ids: Vec<String> = ids_of(&s.list_movements(&account, &all())[..2]);
    let event = s.confirm_pending(&account, NOW + 60_000).unwrap();
    assert_eq!(
        event.event_type,
        "account.refresh_intent.movements_modified"
    );
    let body = body(&event);
    assert_eq!(body["object"], "event");
    assert_eq!(body["type"], event.event_type);
    assert_eq!(body["id"], event.id);
    assert_eq!(body["created_at"], "2027-01-15T08:01:00.000Z");
    assert_eq!(body["data"]["account_id"], account.as_str());
    let changed = body["data"]["movements_changed"].as_array().unwrap();
    let mut changed_ids = ids_of(changed);
    changed_ids.sort();
    let mut expected = pending_ids.clone();
    expected.sort();
    assert_eq!(changed_ids, expected);
    for m in changed {
        assert_eq!(
            (&m["status"], &m["pending"]),
            (&json!("confirmed"), &json!(false))
        );
        assert!(!m["description"].as_str().unwrap().contains("en proceso"));
        assert_eq!(m["object"], "movement");
    }
    assert_eq!(
        s.list_movements(&account, &MovementQuery::default()).len(),
        48
    );
    assert_eq!(
        s.events.last().unwrap().id,
        event.id,
        "listed by /v2/events"
    );
    assert!(s.confirm_pending(&account, NOW).is_none(), "nothing left");
}

#[test]
fn removed_movements_leave_the_listing_and_are_sent_whole() {
    let (mut s, info) = state_with(vec![Outcome::Succeed { new_movements: 0 }]);
    let account = info.account_ids[0].clone();
    let before = s.list_movements(&account, &MovementQuery::default());
    let gone = vec![before[3].clone(), before[7].clone()];
    let ids = ids_of(&gone);
    let event = s
        .remove_movements(
            &account,
            &[ids[0].clone(), ids[1].clone(), "mov_unknown".into()],
            NOW,
        )
        .unwrap();
    assert_eq!(event.event_type, "account.refresh_intent.movements_removed");
    let body = body(&event);
    assert_eq!(body["data"]["account_id"], account.as_str());
    let removed = body["data"]["movements_removed"].as_array().unwrap();
    let mut sent = removed.clone();
    sent.sort_by_key(|m| m["id"].as_str().unwrap().to_owned());
    let mut expected = gone.clone();
    expected.sort_by_key(|m| m["id"].as_str().unwrap().to_owned());
    assert_eq!(sent, expected, "whole movements as they were");
    let after = ids_of(&s.list_movements(&account, &all()));
    assert_eq!(after.len(), 43);
    assert!(ids.iter().all(|id| !after.contains(id)));
    assert!(s.remove_movements(&account, &ids, NOW).is_none());
    assert_eq!(s.events.len(), 1);
}

#[test]
fn a_scheduled_refresh_adds_movements_and_a_succeeded_event_per_account() {
    let (mut s, info) = state_with(vec![
        Outcome::Succeed { new_movements: 0 },
        Outcome::Fail {
            public_error: "x".into(),
        },
    ]);
    let events = s.scheduled_refresh(&info.link_id, 2, NOW);
    assert_eq!(events.len(), 2);
    for (event, account) in events.iter().zip(&info.account_ids) {
        let body = body(event);
        assert_eq!(body["type"], "account.refresh_intent.succeeded");
        assert_eq!(
            body["data"],
            json!({"object": "refresh_intent", "refreshed_object": "account",
                   "refreshed_object_id": account, "status": "succeeded", "public_error": null,
                   "created_at": "2027-01-15T08:00:00.000Z", "type": "only_last", "new_movements": 2})
        );
        assert_eq!(s.movements[account].len(), 47);
    }
    assert!(s.intents.is_empty(), "no refresh intent behind it");
    assert_eq!(s.event_ids(), ids_of_events(&events));
    assert_eq!(s.scheduled_links(), std::slice::from_ref(&info.link_id));
    s.link_mut(&info.link_id).unwrap().active = false;
    assert!(
        s.scheduled_refresh(&info.link_id, 2, NOW).is_empty(),
        "inactive"
    );
    assert!(s.scheduled_links().is_empty());
}

fn ids_of_events(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.id.clone()).collect()
}

#[test]
fn a_revoked_token_finds_no_link() {
    let (mut s, info) = state_with(vec![Outcome::Succeed { new_movements: 0 }]);
    s.revoke(&info.link_id);
    assert!(s.link_by_token(&info.token).is_none());
    assert!(s.scheduled_refresh(&info.link_id, 1, NOW).is_empty());
    assert!(s.scheduled_links().is_empty());
}

#[test]
fn a_page_shift_adds_one_newest_movement_once() {
    let (mut s, info) = state_with(vec![Outcome::Succeed { new_movements: 0 }]);
    let account = info.account_ids[0].clone();
    let before = s.list_movements(&account, &MovementQuery::default());
    s.shift_on_page(&account, 2);
    assert!(!s.take_shift(&account, 1, NOW), "another page");
    assert!(!s.take_shift("acc_other", 2, NOW), "another account");
    // A clock behind the newest movement still puts the new one first.
    assert!(s.take_shift(&account, 2, 0));
    assert!(!s.take_shift(&account, 2, NOW), "one-shot");
    let after = s.list_movements(&account, &MovementQuery::default());
    assert_eq!(after.len(), 46);
    assert_eq!(&after[1..], &before[..], "everything moved down by one");
    assert_eq!(post_day(&after[0]), post_day(&before[0]));
}

#[test]
fn movements_look_like_fintoc_s() {
    let (mut s, info) = state_with(vec![Outcome::Succeed { new_movements: 0 }]);
    let account = info.account_ids[0].clone();
    s.add_movements(&account, 300, 0, NOW);
    let listed = s.list_movements(&account, &all());
    let mut ids = ids_of(&listed);
    assert!(
        ids.iter()
            .all(|id| id.starts_with("mov_") && id.len() == 20)
    );
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 345, "unique ids");
    let fields = [
        "id",
        "object",
        "amount",
        "currency",
        "description",
        "post_date",
        "transaction_date",
        "type",
        "pending",
        "status",
        "reference_id",
        "comment",
        "sender_account",
        "recipient_account",
    ];
    for m in &listed {
        let keys: Vec<&String> = m.as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), fields.len(), "{m}");
        assert!(fields.iter().all(|f| m.get(*f).is_some()), "{m}");
        assert!(m["post_date"].as_str().unwrap().ends_with("T00:00:00Z"));
    }
    let with_counterparty: Vec<&Value> = listed
        .iter()
        .filter(|m| !m["sender_account"].is_null() || !m["recipient_account"].is_null())
        .collect();
    assert!(!with_counterparty.is_empty());
    for m in with_counterparty {
        assert_eq!(m["type"], "transfer");
        let party = if m["amount"].as_i64().unwrap() < 0 {
            &m["recipient_account"]
        } else {
            &m["sender_account"]
        };
        assert_eq!(party["institution"]["country"], "cl", "{m}");
        assert!(party["holder_name"].is_string() && party["number"].is_string());
    }
}
