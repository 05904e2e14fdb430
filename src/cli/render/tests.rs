//! The unit tests of `render.rs`.

use super::*;
use pb::RefreshStatus as S;
use tonic_types::ErrorDetails;

fn result(id: &str, status: S, movements: u32, error: &str) -> pb::AccountResult {
    let done = status != S::Pending;
    pb::AccountResult {
        account_id: id.into(),
        link_id: "link_1".into(),
        refresh_intent_id: "ri_1".into(),
        status: status.into(),
        new_movements: movements,
        public_error: error.into(),
        event_id: if done {
            format!("evt_{id}")
        } else {
            String::new()
        },
        occurred_at: done.then_some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 123_000_000,
        }),
    }
}

fn intent(status: S, accounts: Vec<pb::AccountResult>) -> pb::RefreshIntent {
    pb::RefreshIntent {
        id: "ri_1".into(),
        link_id: "link_1".into(),
        refresh_type: pb::RefreshType::OnlyLast.into(),
        status: status.into(),
        accounts,
        mfa_widget_token: String::new(),
        created_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 0,
        }),
        completed_at: None,
    }
}

fn msg(sequence: u64, event: Event) -> pb::WatchRefreshResponse {
    pb::WatchRefreshResponse {
        sequence,
        event: Some(event),
    }
}

#[test]
fn names_strip_prefixes_and_default_the_type() {
    assert_eq!(status_name(S::TimedOut.into()), "TIMED_OUT");
    assert_eq!(status_name(99), "UNKNOWN");
    assert_eq!(type_name(0), "ONLY_LAST");
    assert_eq!(type_name(2), "HISTORICAL");
    assert_eq!(code_name(Code::ResourceExhausted), "RESOURCE_EXHAUSTED");
}

#[test]
fn timestamps_are_rfc3339_utc() {
    let ts = prost_types::Timestamp {
        seconds: 1_700_000_000,
        nanos: 123_000_000,
    };
    assert_eq!(
        rfc3339(Some(&ts)).as_deref(),
        Some("2023-11-14T22:13:20.123Z")
    );
    assert_eq!(rfc3339(None), None);
}

#[test]
fn retry_delays_round_up_to_seconds() {
    assert_eq!(retry_delay(Duration::from_millis(251_200)), "4m12s");
    assert_eq!(retry_delay(Duration::from_millis(1)), "1s");
    assert_eq!(retry_delay(Duration::from_secs(3600)), "1h");
}

#[test]
fn cooldown_error_names_reason_code_message_and_delay() {
    let mut details = ErrorDetails::with_error_info("REFRESH_COOLDOWN", "fintoc-refresh", []);
    details.set_retry_info(Some(Duration::from_secs(252)));
    let status = Status::with_error_details(Code::ResourceExhausted, "too soon", details);
    assert_eq!(
        error_line("refresh request failed", &status),
        "error: cooldown (RESOURCE_EXHAUSTED): too soon; retry in 4m12s"
    );
}

#[test]
fn other_errors_use_the_context_and_stay_on_one_line() {
    let status = Status::not_found("no such\nlink");
    assert_eq!(
        error_line("refresh request failed", &status),
        "error: refresh request failed (NOT_FOUND): no such link"
    );
    let details = ErrorDetails::with_error_info("CREDENTIALS_REJECTED", "fintoc-refresh", []);
    let status = Status::with_error_details(Code::FailedPrecondition, "reconnect", details);
    assert_eq!(
        error_line("x", &status),
        "error: credentials rejected (FAILED_PRECONDITION): reconnect"
    );
}

#[test]
fn requested_and_mfa_lines() {
    let pending = vec![
        result("acc_a", S::Pending, 0, ""),
        result("acc_b", S::Pending, 0, ""),
    ];
    let i = intent(S::Pending, pending);
    assert_eq!(
        plain_requested(&i, false),
        "refresh ri_1 of link link_1 (ONLY_LAST, new): expecting 2 account(s): acc_a, acc_b"
    );
    assert_eq!(
        requested_line(&i, true),
        "refresh ri_1 of link link_1 (ONLY_LAST, joined existing)"
    );
    assert_eq!(
        mfa_line("wt_9"),
        "mfa required: the bank asks for multi-factor authentication; the user must complete \
         the Fintoc widget with widget_token=wt_9 (still waiting for results)"
    );
}

#[test]
fn outcome_lines_count_accounts_and_advise() {
    let ok = vec![
        result("a", S::Succeeded, 3, ""),
        result("b", S::Succeeded, 12, ""),
    ];
    assert_eq!(
        outcome_line(&intent(S::Succeeded, ok)),
        "refresh ri_1 SUCCEEDED: 2 succeeded (15 new movements)"
    );
    let bad = vec![
        result("a", S::Succeeded, 3, ""),
        result("b", S::TimedOut, 0, ""),
    ];
    assert_eq!(
        outcome_line(&intent(S::TimedOut, bad)),
        "refresh ri_1 TIMED_OUT: 1 succeeded, 1 timed out; no result arrived in time"
    );
    let rejected = vec![result("a", S::Rejected, 0, "bad password")];
    assert_eq!(
        outcome_line(&intent(S::Rejected, rejected)),
        "refresh ri_1 REJECTED: 1 rejected; the bank rejected the Link's credentials: \
         reconnect the Link"
    );
}

#[test]
fn plain_message_lines() {
    let r = msg(
        12,
        Event::AccountResult(result("acc_a", S::Failed, 0, "bank down")),
    );
    assert_eq!(
        message_line(&r, false).unwrap(),
        "#12 account acc_a FAILED new_movements=0 error=\"bank down\" intent=\"ri_1\" \
         link=\"link_1\" event=\"evt_acc_a\" at=2023-11-14T22:13:20.123Z"
    );
    let h = msg(13, Event::Heartbeat(pb::Heartbeat { server_time: None }));
    assert_eq!(message_line(&h, false).unwrap(), "#13 heartbeat ");
    assert_eq!(
        message_line(&h, true).unwrap(),
        "\x1b[2m#13 heartbeat \x1b[0m"
    );
    let failed = vec![result("acc_a", S::Failed, 0, "bank down")];
    let done = msg(12, Event::RefreshCompleted(intent(S::Failed, failed)));
    assert_eq!(
        message_line(&done, false).unwrap(),
        "#12 refresh ri_1 FAILED: 1 failed; retrying now is allowed"
    );
}

#[test]
fn json_lines_put_the_event_first() {
    let i = intent(S::Pending, vec![result("acc_a", S::Pending, 0, "")]);
    assert_eq!(
        json_requested(&i, true),
        r#"{"event":"requested","refresh_intent_id":"ri_1","link_id":"link_1","refresh_type":"ONLY_LAST","status":"PENDING","created_at":"2023-11-14T22:13:20Z","completed_at":null,"accounts":[{"account_id":"acc_a","link_id":"link_1","refresh_intent_id":"ri_1","status":"PENDING","new_movements":0,"public_error":"","event_id":"","occurred_at":null}],"joined_existing":true,"mfa_widget_token":null}"#
    );
    let r = msg(
        7,
        Event::AccountResult(result("acc_a", S::Succeeded, 4, "")),
    );
    assert_eq!(
        json_message(&r).unwrap(),
        r#"{"event":"account_result","sequence":7,"account_id":"acc_a","link_id":"link_1","refresh_intent_id":"ri_1","status":"SUCCEEDED","new_movements":4,"public_error":"","event_id":"evt_acc_a","occurred_at":"2023-11-14T22:13:20.123Z"}"#
    );
    let h = msg(8, Event::Heartbeat(pb::Heartbeat { server_time: None }));
    assert_eq!(
        json_message(&h).unwrap(),
        r#"{"event":"heartbeat","sequence":8,"server_time":null}"#
    );
    let done = msg(7, Event::RefreshCompleted(intent(S::Succeeded, vec![])));
    assert_eq!(
        json_message(&done).unwrap(),
        r#"{"event":"refresh_completed","sequence":7,"refresh_intent_id":"ri_1","link_id":"link_1","refresh_type":"ONLY_LAST","status":"SUCCEEDED","created_at":"2023-11-14T22:13:20Z","completed_at":null,"accounts":[]}"#
    );
}

#[test]
fn board_redraws_in_place() {
    let pending = [
        result("acc_a", S::Pending, 0, ""),
        result("acc_bb", S::Pending, 0, ""),
    ];
    let mut board = Board::new(&pending, false);
    assert_eq!(
        board.frame(),
        "\r\x1b[2K  acc_a   PENDING\n\r\x1b[2K  acc_bb  PENDING\n\
         \r\x1b[2Kwaiting for 2 of 2 account(s)…\n"
    );
    board.apply(&result("acc_bb", S::Failed, 0, "bank down"));
    assert_eq!(
        board.lines(),
        [
            "  acc_a   PENDING",
            "  acc_bb  FAILED     0 new movements  (bank down)",
            "waiting for 1 of 2 account(s)…"
        ]
    );
    board.set_footer(Some("done".into()));
    assert_eq!(
        board.frame(),
        "\x1b[3A\r\x1b[2K  acc_a   PENDING\n\
         \r\x1b[2K  acc_bb  FAILED     0 new movements  (bank down)\n\r\x1b[2Kdone\n"
    );
    board.apply(&result("acc_c", S::Succeeded, 2, ""));
    assert_eq!(board.lines()[2], "  acc_c   SUCCEEDED  2 new movements");
}

#[test]
fn board_colors_status_words() {
    let board = Board::new(&[result("a", S::Succeeded, 1, "")], true);
    assert_eq!(
        board.lines()[0],
        "  a  \x1b[32mSUCCEEDED\x1b[0m  1 new movement"
    );
}

fn at(seconds: i64) -> Option<prost_types::Timestamp> {
    Some(prost_types::Timestamp { seconds, nanos: 0 })
}

/// A Link with a pending intent, one type cooling down, one account with a retained result
/// and one without.
fn link_state() -> pb::LinkState {
    let mut pending = intent(S::Pending, vec![]);
    pending.id = "ri_2".into();
    pending.refresh_type = pb::RefreshType::Historical.into();
    pb::LinkState {
        link_token_kept: false,
        link_id: "link_1".into(),
        accounts: vec![
            pb::AccountState {
                account_id: "acc_a".into(),
                last_result: Some(result("acc_a", S::Failed, 0, "bank down")),
                last_sequence: 7,
            },
            pb::AccountState {
                account_id: "acc_long_id".into(),
                last_result: None,
                last_sequence: 0,
            },
        ],
        pending_intent: Some(pending),
        only_last: Some(pb::Eligibility {
            allowed: false,
            next_allowed_at: at(1_700_000_300),
            reason: "REFRESH_COOLDOWN".into(),
        }),
        historical: Some(pb::Eligibility {
            allowed: false,
            next_allowed_at: None,
            reason: "IN_PROGRESS".into(),
        }),
    }
}

#[test]
fn a_link_is_a_table_of_its_state_and_one_row_per_account() {
    assert_eq!(
        link_lines(&link_state(), 12),
        [
            "link        link_1",
            "as of       #12 (watch --link-id link_1 --after 12 misses nothing after it)",
            "pending     refresh ri_2 (HISTORICAL), created 2023-11-14T22:13:20Z",
            "only_last   not allowed (REFRESH_COOLDOWN), next allowed at 2023-11-14T22:18:20Z",
            "historical  not allowed (IN_PROGRESS)",
            "",
            "account      last result  new movements  at                        sequence",
            "acc_a        FAILED       0              2023-11-14T22:13:20.123Z  #7  (bank down)",
            "acc_long_id  no retained result",
        ]
    );
}

#[test]
fn an_idle_link_says_allowed_none_pending_and_no_accounts() {
    let idle = pb::LinkState {
        link_id: "link_2".into(),
        only_last: Some(pb::Eligibility {
            allowed: true,
            ..Default::default()
        }),
        ..Default::default()
    };
    assert_eq!(
        link_lines(&idle, 0)[2..],
        [
            "pending     none",
            "only_last   allowed",
            "historical  unknown (the server did not say)",
            "",
            "no accounts known for this Link",
        ]
    );
}

#[test]
fn a_link_in_json_is_the_get_link_response_with_watchs_objects() {
    let response = pb::GetLinkResponse {
        link: Some(link_state()),
        as_of_sequence: 12,
    };
    assert_eq!(
        link_json(&response),
        r#"{"link":{"link_id":"link_1","accounts":[{"account_id":"acc_a","last_result":{"account_id":"acc_a","link_id":"link_1","refresh_intent_id":"ri_1","status":"FAILED","new_movements":0,"public_error":"bank down","event_id":"evt_acc_a","occurred_at":"2023-11-14T22:13:20.123Z"},"last_sequence":7},{"account_id":"acc_long_id","last_result":null,"last_sequence":0}],"pending_intent":{"refresh_intent_id":"ri_2","link_id":"link_1","refresh_type":"HISTORICAL","status":"PENDING","created_at":"2023-11-14T22:13:20Z","completed_at":null,"accounts":[]},"only_last":{"allowed":false,"next_allowed_at":"2023-11-14T22:18:20Z","reason":"REFRESH_COOLDOWN"},"historical":{"allowed":false,"next_allowed_at":null,"reason":"IN_PROGRESS"}},"as_of_sequence":12}"#
    );
    let parsed: serde_json::Value = serde_json::from_str(&link_json(&response)).unwrap();
    assert_eq!(parsed["link"]["accounts"][0]["last_sequence"], 7);
}
