//! The RequestRefresh flow on both backends: every outcome of a refresh (succeeded, failed,
//! rejected then held, MFA), one upstream create for concurrent callers, an
//! intent adopted from Fintoc, idempotency keys, results that come before the create call
//! returns, and results nobody asked for.

use std::time::Duration;

use super::support::*;
use crate::common::*;
use fintoc_refresh::pb::{RefreshStatus, RefreshType};
use fintoc_refresh::simulator::{LinkSpec, Outcome};
use tonic::Code;
use tonic_types::StatusExt;

on_both_backends!(happy_path_three_accounts_succeed);
async fn happy_path_three_accounts_succeed(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1), ok(0), ok(5)]));
    let answer = request(&server, &link.token, "").await.unwrap();
    assert!(!answer.joined_existing);
    let intent = answer.refresh_intent.unwrap();
    assert!(intent.id.starts_with("ri_"));
    assert_eq!(intent.link_id, link.link_id);
    assert_eq!(intent.accounts.len(), 3);
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    let mut accounts = Vec::new();
    for _ in 0..3 {
        match watch.next_event().await {
            Seen::Result {
                account,
                intent: ri,
                status,
                event,
                ..
            } => {
                assert_eq!(ri, intent.id);
                assert_eq!(status, RefreshStatus::Succeeded);
                assert!(event.starts_with("evt_"));
                accounts.push(account);
            }
            other => panic!("{other:?}"),
        }
    }
    accounts.sort();
    let mut expected = link.account_ids.clone();
    expected.sort();
    assert_eq!(accounts, expected);
    assert!(matches!(
        watch.next_event().await,
        Seen::Completed {
            status: RefreshStatus::Succeeded,
            ..
        }
    ));
    let got = server.get_refresh(&intent.id).await.refresh_intent.unwrap();
    assert_eq!(got.status(), RefreshStatus::Succeeded);
    let movements: Vec<u32> = got.accounts.iter().map(|a| a.new_movements).collect();
    assert_eq!(movements.iter().sum::<u32>(), 6);
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 1);
}

on_both_backends!(one_failed_account_fails_the_intent);
async fn one_failed_account_fails_the_intent(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![
        ok(1),
        Outcome::Fail {
            public_error: "bank down".into(),
        },
    ]));
    let (results, status, _) = refresh_to_end(&server, &link).await;
    assert_eq!(results.len(), 2);
    assert_eq!(status, RefreshStatus::Failed);
    // A failed refresh starts no cooldown: retrying at once reaches Fintoc.
    let again = request(&server, &link.token, "").await.unwrap();
    assert!(!again.joined_existing);
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 2);
}

on_both_backends!(rejected_credentials_reject_the_intent_then_hold_the_link);
async fn rejected_credentials_reject_the_intent_then_hold_the_link(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![Outcome::Reject, ok(1)]));
    let (_, status, _) = refresh_to_end(&server, &link).await;
    assert_eq!(status, RefreshStatus::Rejected);

    let held = request(&server, &link.token, "").await.unwrap_err();
    assert_eq!(held.code(), Code::FailedPrecondition);
    assert!(held.message().contains("reconnect"), "{}", held.message());
    let info = held.get_details_error_info().unwrap();
    assert_eq!(
        (info.reason.as_str(), info.domain.as_str()),
        ("CREDENTIALS_REJECTED", "fintoc-refresh")
    );
    assert_eq!(
        sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1),
        1,
        "answered locally"
    );

    // After the hold, Fintoc is asked again and says the same, mapped the same way.
    server.clock.advance(Duration::from_secs(3601));
    let fintoc_says = request(&server, &link.token, "").await.unwrap_err();
    assert_eq!(fintoc_says.code(), Code::FailedPrecondition);
    assert_eq!(
        fintoc_says.get_details_error_info().unwrap().reason,
        "CREDENTIALS_REJECTED"
    );
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 2);
}

on_both_backends!(concurrent_requests_make_one_upstream_post_and_one_joins);
async fn concurrent_requests_make_one_upstream_post_and_one_joins(backend: Backend) {
    let mut config = sim_config();
    config.delivery_delay = Duration::from_secs(600); // stays pending during the test
    let server = with_sim(backend, config).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1), ok(2)]));
    let (a, b) = tokio::join!(
        request(&server, &link.token, ""),
        request(&server, &link.token, "")
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(
        a.refresh_intent.as_ref().unwrap().id,
        b.refresh_intent.as_ref().unwrap().id
    );
    assert_eq!(
        [a.joined_existing, b.joined_existing]
            .iter()
            .filter(|j| **j)
            .count(),
        1
    );
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 1);
    // A later request joins too, still without a POST.
    let c = request(&server, &link.token, "").await.unwrap();
    assert!(c.joined_existing);
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 1);
}

on_both_backends!(an_intent_in_progress_at_fintoc_is_adopted);
async fn an_intent_in_progress_at_fintoc_is_adopted(backend: Backend) {
    let mut config = sim_config();
    config.delivery_delay = Duration::from_secs(600);
    let server = with_sim(backend, config).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    // Someone else (another service, the dashboard) starts a refresh at Fintoc.
    let other = reqwest::Client::new()
        .post(format!("{}/v1/refresh_intents", sim(&server).url()))
        .header("Authorization", API_KEY)
        .json(&serde_json::json!({ "link_token": link.token }))
        .send()
        .await
        .unwrap();
    let theirs: serde_json::Value = other.json().await.unwrap();
    let answer = request(&server, &link.token, "").await.unwrap();
    assert!(answer.joined_existing);
    assert_eq!(
        answer.refresh_intent.unwrap().id,
        theirs["id"].as_str().unwrap()
    );
}

on_both_backends!(idempotency_keys_return_the_first_answer_in_its_current_state);
async fn idempotency_keys_return_the_first_answer_in_its_current_state(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let first = request(&server, &link.token, "key-1").await.unwrap();
    let id = first.refresh_intent.unwrap().id;
    let mut watch = server.watch(intent_target(&id), None).await;
    watch.next_event().await;
    assert!(matches!(watch.next_event().await, Seen::Completed { .. }));

    // Now in cooldown, yet the repeat wins: same intent, current state, no Fintoc call.
    let again = request(&server, &link.token, "key-1").await.unwrap();
    assert!(!again.joined_existing);
    let intent = again.refresh_intent.unwrap();
    assert_eq!(intent.id, id);
    assert_eq!(intent.status(), RefreshStatus::Succeeded);
    assert_eq!(sim(&server).requests(POST_INTENTS.0, POST_INTENTS.1), 1);
    // The same key for another type or link is refused.
    let err = request_typed(&server, &link.token, "key-1", RefreshType::Historical)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("idempotency_key"));
    let other = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    assert_eq!(
        request(&server, &other.token, "key-1")
            .await
            .unwrap_err()
            .code(),
        Code::InvalidArgument
    );
    // Keys are remembered for at least 24 hours.
    server.clock.advance(Duration::from_secs(24 * 3600));
    assert_eq!(
        request(&server, &link.token, "key-1")
            .await
            .unwrap()
            .refresh_intent
            .unwrap()
            .id,
        id
    );
}

on_both_backends!(results_that_arrive_before_the_create_call_returns_are_matched);
async fn results_that_arrive_before_the_create_call_returns_are_matched(backend: Backend) {
    let mut config = sim_config();
    config.deliver_before_response = true;
    let server = with_sim(backend, config).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1), ok(2)]));
    let answer = request(&server, &link.token, "").await.unwrap();
    let intent = answer.refresh_intent.unwrap();
    assert!(
        sim(&server).deliveries().len() >= 2,
        "webhooks were delivered before the answer"
    );
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    for _ in 0..2 {
        assert!(
            matches!(watch.next_event().await, Seen::Result { ref intent, .. } if !intent.is_empty())
        );
    }
    assert!(matches!(
        watch.next_event().await,
        Seen::Completed {
            status: RefreshStatus::Succeeded,
            ..
        }
    ));
    assert_eq!(server.counts().await.held_events, 0);
}

on_both_backends!(unsolicited_results_reach_link_and_account_watchers_without_an_intent);
async fn unsolicited_results_reach_link_and_account_watchers_without_an_intent(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let (_, _, _) = refresh_to_end(&server, &link).await;
    let account = &link.account_ids[0];
    let mut by_link = server.watch(link_target(&link.link_id), None).await;
    by_link.next().await;
    // Fintoc's scheduled refresh: nobody here asked for it.
    let at = server.clock.now_ms();
    server
        .post_event(&event("evt_sched", account, "succeeded", at))
        .await;
    assert!(
        matches!(by_link.next_event().await, Seen::Result { ref intent, ref event, .. } if intent.is_empty() && event == "evt_sched")
    );
    // An account whose Link was never resolved still reaches its account watchers.
    let mut stranger = server.watch(account_target("acc_unknown"), None).await;
    stranger.next().await;
    server
        .post_event(&event("evt_stranger", "acc_unknown", "failed", at))
        .await;
    assert!(
        matches!(stranger.next_event().await, Seen::Result { ref intent, .. } if intent.is_empty())
    );
}

on_both_backends!(mfa_links_return_the_widget_token_and_complete_after_the_user_does);
async fn mfa_links_return_the_widget_token_and_complete_after_the_user_does(backend: Backend) {
    let server = with_sim(backend, sim_config()).await;
    let link = sim(&server).add_link(LinkSpec {
        mfa: true,
        ..LinkSpec::new(vec![ok(1)])
    });
    let answer = request(&server, &link.token, "").await.unwrap();
    let intent = answer.refresh_intent.unwrap();
    assert_eq!(intent.status(), RefreshStatus::Pending);
    assert!(
        intent.mfa_widget_token.contains("_sec_"),
        "{}",
        intent.mfa_widget_token
    );
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    watch.next_event().await;
    assert!(matches!(
        watch.next_event().await,
        Seen::Completed {
            status: RefreshStatus::Succeeded,
            ..
        }
    ));
}
