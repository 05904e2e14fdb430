//! GetLink and ListLinks: a Link's state to re-sync from — each account's latest result
//! with its sequence, the pending intent, and eligibility that says exactly what
//! RequestRefresh would answer (reason and time) — and `as_of_sequence`, after which a
//! watch misses nothing. Real server, real simulator, real gRPC.

use std::time::Duration;

use fintoc_refresh::pb::{self, RefreshStatus, RefreshType};
use fintoc_refresh::simulator::{LinkSpec, Outcome, SimConfig, SimLinkInfo};
use tonic::Code;
use tonic_types::StatusExt;

use crate::common::*;

async fn server(backend: Backend) -> TestServer {
    let mut sim = SimConfig::new(API_KEY);
    sim.delivery_delay = Duration::ZERO;
    sim.mfa_delay = Duration::ZERO;
    TestServer::with(Options {
        backend,
        simulator: Some(sim),
        tune: Some(Box::new(|c| c.fintoc_backoff = Duration::from_millis(10))),
        ..Options::default()
    })
    .await
}

fn link(server: &TestServer, outcomes: Vec<Outcome>) -> SimLinkInfo {
    server
        .sim
        .as_ref()
        .unwrap()
        .add_link(LinkSpec::new(outcomes))
}

fn ok() -> Outcome {
    Outcome::Succeed { new_movements: 1 }
}

async fn request(
    server: &TestServer,
    token: &str,
    kind: RefreshType,
) -> Result<pb::RefreshIntent, tonic::Status> {
    let answer = server
        .client()
        .await
        .request_refresh(pb::RequestRefreshRequest {
            link_token: token.into(),
            refresh_type: kind.into(),
            idempotency_key: String::new(),
            keep_link_token: false,
        })
        .await?;
    Ok(answer.into_inner().refresh_intent.unwrap())
}

async fn get_link(server: &TestServer, id: &str) -> Result<pb::GetLinkResponse, tonic::Status> {
    let answer = server
        .client()
        .await
        .get_link(pb::GetLinkRequest { link_id: id.into() })
        .await?;
    Ok(answer.into_inner())
}

async fn list(
    server: &TestServer,
    page_size: u32,
    page_token: &str,
) -> Result<pb::ListLinksResponse, tonic::Status> {
    let answer = server
        .client()
        .await
        .list_links(pb::ListLinksRequest {
            page_size,
            page_token: page_token.into(),
        })
        .await?;
    Ok(answer.into_inner())
}

/// Follows an intent to its summary.
async fn until_complete(server: &TestServer, intent: &str) -> RefreshStatus {
    let mut watch = server.watch(intent_target(intent), None).await;
    loop {
        if let Seen::Completed { status, .. } = watch.next_event().await {
            return status;
        }
    }
}

/// A new Link whose accounts end as `outcomes` say, refreshed here to its end (`ending`).
async fn refreshed(
    server: &TestServer,
    outcomes: Vec<Outcome>,
    ending: RefreshStatus,
) -> SimLinkInfo {
    let l = link(server, outcomes);
    let intent = request(server, &l.token, RefreshType::OnlyLast)
        .await
        .unwrap();
    assert_eq!(until_complete(server, &intent.id).await, ending);
    l
}

/// GetLink's state of a Link that must be known.
async fn state_of(server: &TestServer, id: &str) -> pb::LinkState {
    get_link(server, id).await.unwrap().link.unwrap()
}

fn millis_of(t: &prost_types::Timestamp) -> i64 {
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

on_both_backends!(a_links_state_says_what_request_refresh_would_answer);
async fn a_links_state_says_what_request_refresh_would_answer(backend: Backend) {
    let server = server(backend).await;
    let pending = link(&server, vec![ok(), Outcome::Silent]);
    let unknown = get_link(&server, &pending.link_id).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound, "a Link never resolved here");

    // Pending: one account answered, one not; RequestRefresh would join the intent.
    let intent = request(&server, &pending.token, RefreshType::OnlyLast)
        .await
        .unwrap();
    let mut watch = server.watch(intent_target(&intent.id), None).await;
    let first = watch.next_event().await.seq();
    let state = get_link(&server, &pending.link_id).await.unwrap();
    assert!(
        state.as_of_sequence >= first,
        "{} < {first}",
        state.as_of_sequence
    );
    let link_state = state.link.unwrap();
    assert_eq!(link_state.pending_intent.unwrap().id, intent.id);
    let only_last = link_state.only_last.unwrap();
    assert_eq!(
        (only_last.allowed, only_last.reason.as_str()),
        (false, "IN_PROGRESS")
    );
    let mut accounts = pending.account_ids.clone();
    accounts.sort();
    let listed: Vec<&str> = link_state
        .accounts
        .iter()
        .map(|a| a.account_id.as_str())
        .collect();
    assert_eq!(listed, accounts);
    let answered: Vec<(u64, Option<i32>)> = link_state
        .accounts
        .iter()
        .map(|a| (a.last_sequence, a.last_result.as_ref().map(|r| r.status)))
        .collect();
    assert!(
        answered.contains(&(first, Some(RefreshStatus::Succeeded as i32)))
            && answered.contains(&(0, None)),
        "{answered:?}"
    );
    let joined = request(&server, &pending.token, RefreshType::OnlyLast)
        .await
        .unwrap();
    assert_eq!(
        joined.id, intent.id,
        "RequestRefresh joins, as IN_PROGRESS said"
    );

    // Succeeded: cooldown, until the time RequestRefresh names too.
    let done = refreshed(&server, vec![ok(), ok()], RefreshStatus::Succeeded).await;
    let state = state_of(&server, &done.link_id).await;
    assert!(state.pending_intent.is_none());
    let cooling = state.only_last.unwrap();
    assert_eq!(
        (cooling.allowed, cooling.reason.as_str()),
        (false, "REFRESH_COOLDOWN")
    );
    let until = millis_of(cooling.next_allowed_at.as_ref().unwrap());
    let refused = request(&server, &done.token, RefreshType::OnlyLast)
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted);
    let info = refused.get_details_error_info().unwrap();
    assert_eq!(info.reason, "REFRESH_COOLDOWN");
    let retry = refused
        .get_details_retry_info()
        .unwrap()
        .retry_delay
        .unwrap();
    let left = until - server.clock.now_ms();
    assert_eq!(
        retry.as_secs(),
        (left as u64).div_ceil(1000),
        "the same end, rounded up"
    );
    // The other type has its own window: whatever GetLink says, RequestRefresh does.
    let historical = state.historical.unwrap();
    let asked = request(&server, &done.token, RefreshType::Historical).await;
    assert_eq!(
        historical.allowed,
        asked.is_ok(),
        "{historical:?} vs {asked:?}"
    );
    if !historical.allowed {
        assert_eq!(historical.reason, "REFRESH_COOLDOWN");
    }

    // Rejected credentials: held back, with the hold's end.
    let rejected = refreshed(&server, vec![Outcome::Reject], RefreshStatus::Rejected).await;
    let held = state_of(&server, &rejected.link_id)
        .await
        .only_last
        .unwrap();
    assert_eq!(
        (held.allowed, held.reason.as_str()),
        (false, "CREDENTIALS_REJECTED")
    );
    assert!(millis_of(held.next_allowed_at.as_ref().unwrap()) > server.clock.now_ms());
    let refused = request(&server, &rejected.token, RefreshType::OnlyLast)
        .await
        .unwrap_err();
    assert_eq!(
        refused.get_details_error_info().unwrap().reason,
        "CREDENTIALS_REJECTED"
    );

    // Once the cooldown is over, both say yes.
    server.clock.advance(Duration::from_secs(24 * 3600));
    let free = state_of(&server, &done.link_id).await.only_last.unwrap();
    assert_eq!(
        (free.allowed, free.reason.as_str(), free.next_allowed_at),
        (true, "", None)
    );
    assert!(
        request(&server, &done.token, RefreshType::OnlyLast)
            .await
            .is_ok()
    );
}

on_both_backends!(list_links_pages_every_link_in_id_order_and_a_watch_after_as_of_misses_nothing);
async fn list_links_pages_every_link_in_id_order_and_a_watch_after_as_of_misses_nothing(
    backend: Backend,
) {
    let server = server(backend).await;
    let mut ids = Vec::new();
    let mut any_account = String::new();
    for _ in 0..3 {
        let l = refreshed(&server, vec![ok()], RefreshStatus::Succeeded).await;
        ids.push(l.link_id);
        any_account = l.account_ids[0].clone();
    }
    ids.sort();

    let first = list(&server, 2, "").await.unwrap();
    let second = list(&server, 2, &first.next_page_token).await.unwrap();
    let listed: Vec<String> = first
        .links
        .iter()
        .chain(&second.links)
        .map(|l| l.link_id.clone())
        .collect();
    assert_eq!(listed, ids);
    assert!(!first.next_page_token.is_empty() && second.next_page_token.is_empty());
    // A page reads its Links together; each must come out as GetLink shows it alone (its
    // own accounts, results, last success and eligibility, nobody else's).
    for listed in first.links.iter().chain(&second.links) {
        assert_eq!(*listed, state_of(&server, &listed.link_id).await);
    }
    assert_eq!(
        list(&server, 0, "").await.unwrap().links.len(),
        3,
        "0 means the default page"
    );
    assert!(
        first
            .links
            .iter()
            .all(|l| l.accounts.iter().all(|a| a.last_sequence > 0))
    );

    // Watching after the first page's as_of_sequence misses nothing that came later.
    let mut feed = server
        .watch(account_target(&any_account), Some(first.as_of_sequence))
        .await;
    let now = server.clock.now_ms();
    let (status, _) = server
        .post_event(&event("evt_later", &any_account, "failed", now))
        .await;
    assert_eq!(status, 200);
    match feed.next_event().await {
        Seen::Result { event, .. } => assert_eq!(event, "evt_later"),
        other => panic!("{other:?}"),
    }

    for (size, token, says) in [
        (501, "", "page_size is 501"),
        (
            10,
            "not-a-token",
            "page_token is not one this service gave out",
        ),
    ] {
        let refused = list(&server, size, token).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument);
        assert!(refused.message().contains(says), "{}", refused.message());
    }
    let empty = get_link(&server, "").await.unwrap_err();
    assert_eq!(empty.code(), Code::InvalidArgument);
}

// The re-sync CONTRACT §6 promises: a consumer back after retention pruned past its cursor
// is refused (CURSOR_EXPIRED), lists every page, then watches after the first page's
// `as_of_sequence`: a result stored while it was listing, and every one after, reaches it.
on_both_backends!(after_an_expired_cursor_list_then_watch_misses_nothing);
async fn after_an_expired_cursor_list_then_watch_misses_nothing(backend: Backend) {
    let server = server(backend).await;
    let now = server.clock.now_ms();
    let (code, _) = server
        .post_event(&event("evt_old", "acc_elsewhere", "succeeded", now))
        .await; // 1
    assert_eq!(code, 200);
    let old = refreshed(&server, vec![ok()], RefreshStatus::Succeeded).await;
    server.clock.advance(Duration::from_secs(8 * 86_400));
    let kept = refreshed(&server, vec![ok()], RefreshStatus::Succeeded).await;
    fintoc_refresh::tasks::prune(&server.app).await.unwrap();
    let all = all_target();

    let expired = server
        .client()
        .await
        .watch_refresh(pb::WatchRefreshRequest {
            target: Some(all.clone()),
            after_sequence: Some(1),
            ..Default::default()
        })
        .await
        .expect_err("the cursor is older than retention");
    assert_eq!(expired.code(), Code::OutOfRange);
    assert_eq!(
        expired.get_details_error_info().unwrap().reason,
        "CURSOR_EXPIRED"
    );

    let first = list(&server, 1, "").await.unwrap();
    let now = server.clock.now_ms();
    let during = &kept.account_ids[0];
    let (code, _) = server
        .post_event(&event("evt_during", during, "failed", now))
        .await;
    assert_eq!(code, 200);
    let mut links = first.links.clone();
    let mut token = first.next_page_token.clone();
    while !token.is_empty() {
        let page = list(&server, 1, &token).await.unwrap();
        links.extend(page.links);
        token = page.next_page_token;
    }
    let state = |id: &str| links.iter().find(|l| l.link_id == id).cloned().unwrap();
    assert!(
        state(&old.link_id)
            .accounts
            .iter()
            .all(|a| a.last_result.is_none() && a.last_sequence == 0),
        "the pruned Link's results are gone: {:?}",
        state(&old.link_id)
    );
    // (A page listed after evt_during may already show it: sequences tell them apart.)
    let kept_state = state(&kept.link_id);
    assert!(kept_state.accounts.iter().all(|a| a.last_sequence > 0));

    let mut feed = server.watch(all, Some(first.as_of_sequence)).await;
    match feed.next_event().await {
        Seen::Result { seq, event, .. } => {
            assert_eq!(event, "evt_during");
            assert!(seq > first.as_of_sequence);
        }
        other => panic!("{other:?}"),
    }
    let now = server.clock.now_ms();
    let (code, _) = server
        .post_event(&event("evt_after", during, "failed", now))
        .await;
    assert_eq!(code, 200);
    match feed.next_event().await {
        Seen::Result { event, .. } => assert_eq!(event, "evt_after"),
        other => panic!("{other:?}"),
    }
}
