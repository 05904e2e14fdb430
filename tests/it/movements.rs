//! Movements pushed with the results (CONTRACT.md §7), end to end: the real server on each
//! backend, the simulator as Fintoc, real gRPC. What each test can fail on is said in its
//! name; the fetcher runs as in production (woken by the result's commit, polling besides),
//! so the tests wait for what it logs rather than drive it.

mod support;

use std::time::Duration;

use crate::common::*;
use fintoc_refresh::pb;
use fintoc_refresh::simulator::{Fault, LinkSpec, Outcome};
use support::*;

// A refresh asked with keep_link_token: its intent stream delivers the result, then the
// fetched movements (each new one added, the last message complete), then refresh_completed
// with a cursor past them; ListMovements lists them; GetLink says the token is kept.
on_both_backends!(a_kept_links_refresh_streams_its_movements_before_it_completes);
async fn a_kept_links_refresh_streams_its_movements_before_it_completes(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(3), ok(0)]));
    let mut client = server.client().await;
    let intent = refresh(&mut client, &link.token, true).await.unwrap();
    let seen = intent_to_end(&server, &intent.id).await;

    let account = &link.account_ids[0];
    let new_at_fintoc: Vec<String> = listed_at_fintoc(&server, account)
        .into_iter()
        .take(3)
        .collect();
    let mut pushed = added(&seen);
    pushed.sort();
    let mut expected = new_at_fintoc.clone();
    expected.sort();
    assert_eq!(
        pushed, expected,
        "exactly the refresh's new movements: {seen:?}"
    );
    let last_movements = seen
        .iter()
        .rposition(|s| matches!(s, Seen::Movements { .. }))
        .unwrap();
    assert!(
        matches!(&seen[last_movements], Seen::Movements { complete: true, account: a, .. } if a == account)
    );
    let Some(Seen::Completed { seq, status }) = seen.last() else {
        panic!("{seen:?}")
    };
    assert_eq!(*status, pb::RefreshStatus::Succeeded);
    assert!(
        *seq >= seen[last_movements].seq(),
        "the cursor passes the movements"
    );
    assert!(
        unavailable(&seen).is_empty(),
        "the account without new movements owes none"
    );
    let mut listed = stored(&server, account).await.unwrap();
    listed.sort();
    assert_eq!(listed, expected, "ListMovements has them");
    assert!(token_kept(&server, &link.link_id).await);
    assert_eq!(
        sim(&server).movements_requests(account),
        1,
        "one listing pass"
    );
}

// The next refresh pushes only what is new since; Fintoc redelivering every event (twice
// each) pushes nothing twice: the result is deduplicated, so is its fetch.
on_both_backends!(a_second_refresh_pushes_only_the_new_movements_and_redeliveries_nothing);
async fn a_second_refresh_pushes_only_the_new_movements_and_redeliveries_nothing(backend: Backend) {
    let mut config = sim_config();
    config.duplicate = true;
    let server = server_with(backend, config, KEY_ONE).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(2)]));
    let account = link.account_ids[0].clone();
    let mut client = server.client().await;
    let mut feed = watch_movements(&server, account_target(&account), None).await;

    let first = refresh(&mut client, &link.token, true).await.unwrap();
    intent_to_end(&server, &first.id).await;
    server.clock.advance(Duration::from_secs(6 * 60)); // past Fintoc's 5-minute spacing
    let second = refresh(&mut client, &link.token, false).await.unwrap();
    intent_to_end(&server, &second.id).await;

    let seen = gather(&mut feed, |s| {
        s.iter()
            .filter(|m| matches!(m, Seen::Movements { complete: true, .. }))
            .count()
            == 2
    })
    .await;
    // Redeliveries arrive after their first copies; give them time to (not) show.
    nothing_more(&mut feed, Duration::from_millis(500), "pushed again").await;
    let pushed = added(&seen);
    assert_eq!(pushed.len(), 4, "2 + 2, each once: {seen:?}");
    let mut unique = pushed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 4);
    let mut at_fintoc = listed_at_fintoc(&server, &account)[..4].to_vec();
    at_fintoc.sort();
    assert_eq!(unique, at_fintoc);
}

// Without LINK_TOKEN_KEYS every way in answers FAILED_PRECONDITION, saying how to enable it.
on_both_backends!(without_keys_movements_are_refused_saying_how_to_enable_them);
async fn without_keys_movements_are_refused_saying_how_to_enable_them(backend: Backend) {
    let server = TestServer::with(Options {
        backend,
        simulator: Some(sim_config()),
        ..Options::default()
    })
    .await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let mut client = server.client().await;
    let check = |status: tonic::Status| {
        assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
        assert!(
            status.message().contains("LINK_TOKEN_KEYS"),
            "{}",
            status.message()
        );
        let details = tonic_types::StatusExt::get_error_details(&status);
        assert_eq!(details.error_info().unwrap().reason, "MOVEMENTS_DISABLED");
        assert!(!status.message().contains(&link.token));
    };
    check(refresh(&mut client, &link.token, true).await.unwrap_err());
    check(
        client
            .register_link(pb::RegisterLinkRequest {
                link_token: link.token.clone(),
            })
            .await
            .unwrap_err(),
    );
    check(
        client
            .watch_refresh(pb::WatchRefreshRequest {
                target: Some(link_target(&link.link_id)),
                include_movements: true,
                ..Default::default()
            })
            .await
            .unwrap_err(),
    );
    // Refused before anything happened: no refresh was created.
    assert_eq!(sim(&server).requests("POST", "/v1/refresh_intents"), 0);
}

// A Link whose token is not kept: its result with new movements is followed, before the
// refresh completes, by movements_unavailable TOKEN_NOT_KEPT.
on_both_backends!(a_link_whose_token_is_not_kept_says_so_before_it_completes);
async fn a_link_whose_token_is_not_kept_says_so_before_it_completes(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(2)]));
    let mut client = server.client().await;
    let intent = refresh(&mut client, &link.token, false).await.unwrap();
    let seen = intent_to_end(&server, &intent.id).await;
    assert_eq!(
        unavailable(&seen),
        vec!["TOKEN_NOT_KEPT".to_owned()],
        "{seen:?}"
    );
    assert!(matches!(seen.last(), Some(Seen::Completed { .. })));
    assert!(!token_kept(&server, &link.link_id).await);
    assert_eq!(sim(&server).movements_requests(&link.account_ids[0]), 0);
}

// RegisterLink keeps a token without refreshing; Fintoc's own scheduled refreshes then have
// their movements pushed on a feed of the Link.
on_both_backends!(scheduled_refreshes_of_a_registered_link_push_their_movements);
async fn scheduled_refreshes_of_a_registered_link_push_their_movements(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(0), ok(0)]));
    let mut client = server.client().await;
    let registered = client
        .register_link(pb::RegisterLinkRequest {
            link_token: link.token.clone(),
        })
        .await
        .unwrap()
        .into_inner()
        .link
        .unwrap();
    assert!(registered.link_token_kept);
    assert_eq!(registered.accounts.len(), 2);
    assert_eq!(sim(&server).requests("POST", "/v1/refresh_intents"), 0);

    let mut feed = watch_movements(&server, link_target(&link.link_id), None).await;
    sim(&server).scheduled_refresh(&link.link_id, 2);
    let seen = gather(&mut feed, |s| {
        s.iter()
            .filter(|m| matches!(m, Seen::Movements { complete: true, .. }))
            .count()
            == 2
    })
    .await;
    let results = seen
        .iter()
        .filter(|s| matches!(s, Seen::Result { intent, .. } if intent.is_empty()))
        .count();
    assert_eq!(results, 2, "two unsolicited results: {seen:?}");
    assert_eq!(added(&seen).len(), 4);
}

// A pending movement, pushed as added, is confirmed later: Fintoc's movements_modified
// webhook becomes a `modified` entry with the confirmed content; the same event delivered
// again changes nothing.
on_both_backends!(a_confirmed_pending_movement_arrives_as_modified_once);
async fn a_confirmed_pending_movement_arrives_as_modified_once(backend: Backend) {
    let mut config = sim_config();
    config.duplicate = true;
    let server = server_with(backend, config, KEY_ONE).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![Outcome::SucceedWithPending {
        new_movements: 3,
        pending: 1,
    }]));
    let account = link.account_ids[0].clone();
    let mut client = server.client().await;
    let mut feed = watch_movements(&server, account_target(&account), None).await;
    let intent = refresh(&mut client, &link.token, true).await.unwrap();
    let seen = intent_to_end(&server, &intent.id).await;
    assert_eq!(added(&seen).len(), 3, "the pending one too: {seen:?}");

    assert_eq!(sim(&server).confirm_pending(&account), 1);
    let seen = gather(&mut feed, |s| !modified(s).is_empty()).await;
    let modified = modified(&seen);
    assert_eq!(modified.len(), 1);
    let listed = server
        .client()
        .await
        .list_movements(pb::ListMovementsRequest {
            account_id: account.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let stored = listed
        .movements
        .iter()
        .find(|m| m.id == modified[0])
        .unwrap();
    assert!(
        !stored.pending && stored.status == "confirmed",
        "{stored:?}"
    );
    nothing_more(
        &mut feed,
        Duration::from_millis(500),
        "the redelivered event pushes nothing",
    )
    .await;
}

// Fintoc removes movements (movements_removed, in the shape we decided to read): pushed as
// removed_ids, and gone from ListMovements.
on_both_backends!(removed_movements_are_pushed_as_removed_ids);
async fn removed_movements_are_pushed_as_removed_ids(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(2)]));
    let account = link.account_ids[0].clone();
    let mut client = server.client().await;
    let intent = refresh(&mut client, &link.token, true).await.unwrap();
    let pushed = added(&intent_to_end(&server, &intent.id).await);
    let mut feed = watch_movements(&server, account_target(&account), None).await;
    assert_eq!(sim(&server).remove_movements(&account, &pushed[..1]), 1);
    let seen = gather(&mut feed, |s| {
        s.iter()
            .any(|m| matches!(m, Seen::Movements { removed, .. } if !removed.is_empty()))
    })
    .await;
    let Some(Seen::Movements { removed, .. }) = seen.last() else {
        panic!("{seen:?}")
    };
    assert_eq!(removed, &pushed[..1]);
    let mut left = stored(&server, &account).await.unwrap();
    left.sort();
    let mut expected = pushed[1..].to_vec();
    expected.sort();
    assert_eq!(left, expected);
}

// Fintoc refuses the kept token (revoked): the result's movements are LINK_TOKEN_INVALID and
// the token is dropped.
on_both_backends!(a_token_fintoc_refuses_is_dropped_and_said);
async fn a_token_fintoc_refuses_is_dropped_and_said(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let mut client = server.client().await;
    client
        .register_link(pb::RegisterLinkRequest {
            link_token: link.token.clone(),
        })
        .await
        .unwrap();
    let mut feed = watch_movements(&server, link_target(&link.link_id), None).await;
    sim(&server).scheduled_refresh(&link.link_id, 1);
    // Refused from the fetch on (the result is delivered first: revoked after it is sent).
    sim(&server).revoke_token(&link.link_id);
    let seen = gather(&mut feed, |s| !unavailable(s).is_empty()).await;
    assert_eq!(unavailable(&seen), vec!["LINK_TOKEN_INVALID".to_owned()]);
    assert!(!token_kept(&server, &link.link_id).await);
}

// 429s on the listing are retried on Fintoc's schedule: the movements still arrive, once.
on_both_backends!(throttled_listings_are_retried_and_pushed_once);
async fn throttled_listings_are_retried_and_pushed_once(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(2)]));
    let account = link.account_ids[0].clone();
    sim(&server).inject_on(
        "GET",
        &format!("/v1/accounts/{account}/movements"),
        Fault::Status(429),
        2,
    );
    let mut client = server.client().await;
    let intent = refresh(&mut client, &link.token, true).await.unwrap();
    let seen = intent_to_end(&server, &intent.id).await;
    assert_eq!(added(&seen).len(), 2, "{seen:?}");
    assert_eq!(
        sim(&server).movements_requests(&account),
        3,
        "two 429s, then the page"
    );
}

// Fintoc failing every time: the fetch is retried (later, on the clock), and after its last
// attempt the result's movements are FETCH_FAILED; the intent stream then completes.
on_both_backends!(a_fetch_that_keeps_failing_ends_fetch_failed);
async fn a_fetch_that_keeps_failing_ends_fetch_failed(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(1)]));
    let account = link.account_ids[0].clone();
    sim(&server).inject_on(
        "GET",
        &format!("/v1/accounts/{account}/movements"),
        Fault::Status(500),
        10_000,
    );
    let mut client = server.client().await;
    let intent = refresh(&mut client, &link.token, true).await.unwrap();
    let mut watch = watch_movements(&server, intent_target(&intent.id), None).await;
    let mut seen = Vec::new();
    let completed = loop {
        match watch.try_next(Duration::from_millis(200)).await {
            Some(Ok(Seen::Heartbeat { .. })) => {}
            Some(Ok(done @ Seen::Completed { .. })) => break done,
            Some(Ok(other)) => seen.push(other),
            Some(Err(status)) => panic!("{status:?}"),
            // Nothing yet: the next attempt is due later; move the clock on.
            None => server.clock.advance(Duration::from_secs(70)),
        }
    };
    assert!(matches!(completed, Seen::Completed { .. }));
    assert_eq!(
        unavailable(&seen),
        vec!["FETCH_FAILED".to_owned()],
        "{seen:?}"
    );
    assert!(added(&seen).is_empty());
}

// ForgetLink drops the token and the stored movements; asking again is fine, an unknown Link
// is NOT_FOUND.
on_both_backends!(forgetting_a_link_drops_its_token_and_movements);
async fn forgetting_a_link_drops_its_token_and_movements(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(2)]));
    let account = link.account_ids[0].clone();
    let mut client = server.client().await;
    let intent = refresh(&mut client, &link.token, true).await.unwrap();
    intent_to_end(&server, &intent.id).await;
    assert_eq!(stored(&server, &account).await.unwrap().len(), 2);
    let forget = |id: &str| pb::ForgetLinkRequest { link_id: id.into() };
    client.forget_link(forget(&link.link_id)).await.unwrap();
    client.forget_link(forget(&link.link_id)).await.unwrap();
    assert!(!token_kept(&server, &link.link_id).await);
    assert!(stored(&server, &account).await.unwrap().is_empty());
    let unknown = client.forget_link(forget("link_nobody")).await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    let unknown = stored(&server, "acc_nobody").await.unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
}

// Key rotation, across restarts on one store: a token sealed under k1 opens after a restart
// with "k2,k1" and is resealed under k2 as it is used; then k2 alone opens it; and a restart
// whose keys cannot open a kept token is refused, naming LINK_TOKEN_KEYS. (The simulator
// outlives the servers here, so results are posted by hand: the event of a scheduled
// refresh, as Fintoc would deliver it.)
on_both_backends!(rotated_keys_reseal_tokens_as_they_are_used);
async fn rotated_keys_reseal_tokens_as_they_are_used(backend: Backend) {
    let (clock, hand) = fintoc_refresh::clock::Clock::manual(START_MS);
    let mut config = sim_config();
    config.clock = clock.clone();
    let stop = tokio_util::sync::CancellationToken::new();
    let _stop_sim = stop.clone().drop_guard();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fintoc = fintoc_refresh::simulator::Simulator::start(listener, config, stop).unwrap();
    let link = fintoc.add_link(LinkSpec::new(vec![ok(0)]));
    let account = link.account_ids[0].clone();
    let start = |options: Options, keys: String| {
        let mut options = options;
        options.fintoc_url = Some(fintoc.url());
        options.clock = Some((clock.clone(), hand.clone()));
        options.tune = Some(with_keys(&keys));
        options
    };
    // Posts a result with 2 new movements (the event helper's) after Fintoc made them.
    let refreshed = |server: &TestServer, n: usize| {
        fintoc.scheduled_refresh(&link.link_id, 2);
        event(
            &format!("evt_rot{n}"),
            &account,
            "succeeded",
            server.clock.now_ms(),
        )
    };

    let server = TestServer::with(start(
        Options {
            backend,
            ..Options::default()
        },
        KEY_ONE.into(),
    ))
    .await;
    server
        .client()
        .await
        .register_link(pb::RegisterLinkRequest {
            link_token: link.token.clone(),
        })
        .await
        .unwrap();
    assert_eq!(
        server.app.store.token_keys().await.unwrap(),
        vec![("k1".to_owned(), 1)]
    );
    let kept = server.stop_keep_store().await;

    let server = TestServer::with(start(kept.options(), format!("{KEY_TWO},{KEY_ONE}"))).await;
    let mut feed = watch_movements(&server, account_target(&account), None).await;
    assert_eq!(server.post_event(&refreshed(&server, 1)).await.0, 200);
    let seen = gather(&mut feed, |s| added(s).len() == 2).await;
    assert!(unavailable(&seen).is_empty(), "{seen:?}");
    assert_eq!(
        server.app.store.token_keys().await.unwrap(),
        vec![("k2".to_owned(), 1)],
        "resealed under the first key as it was used"
    );
    let kept = server.stop_keep_store().await;

    let server = TestServer::with(start(kept.options(), KEY_TWO.into())).await;
    let mut feed = watch_movements(&server, account_target(&account), None).await;
    assert_eq!(server.post_event(&refreshed(&server, 2)).await.0, 200);
    let seen = gather(&mut feed, |s| added(s).len() == 2).await;
    assert!(unavailable(&seen).is_empty(), "{seen:?}");
    let kept = server.stop_keep_store().await;

    // k1 alone cannot open a token sealed under k2: refused at start.
    let refused =
        std::panic::AssertUnwindSafe(TestServer::with(start(kept.options(), KEY_ONE.into())));
    let refused = futures_util::FutureExt::catch_unwind(refused).await;
    let why = match refused {
        Ok(_) => panic!("a server that cannot open its kept tokens started"),
        Err(panic) => panic.downcast_ref::<String>().cloned().unwrap_or_default(),
    };
    assert!(
        why.contains("LINK_TOKEN_KEYS has no key") && why.contains("k2"),
        "{why}"
    );
}

// A fetcher that claimed a fetch and then stalled past its lease (a frozen replica): another
// fetcher takes the job over and pushes the movements; when the stalled one wakes with its
// own listing, its commit finds the lease gone and writes nothing. Pushed once.
on_both_backends!(a_fetch_that_outlives_its_lease_is_redone_and_pushed_once);
async fn a_fetch_that_outlives_its_lease_is_redone_and_pushed_once(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(2)]));
    let account = link.account_ids[0].clone();
    // Fintoc's first answer takes two seconds: the server's fetcher stalls on it.
    sim(&server).inject_on(
        "GET",
        &format!("/v1/accounts/{account}/movements"),
        Fault::Slow(Duration::from_secs(2)),
        1,
    );
    let mut feed = watch_movements(&server, account_target(&account), None).await;
    let mut client = server.client().await;
    let intent = refresh(&mut client, &link.token, true).await.unwrap();
    eventually("the fetcher called Fintoc", || async {
        sim(&server).movements_requests(&account) == 1
    })
    .await;
    // Past its lease, another replica's fetcher takes the job over.
    server.clock.advance(Duration::from_secs(121));
    let mut pace = fintoc_refresh::fetch::Pace::new(100);
    assert!(
        fintoc_refresh::fetch::step(&server.app, "other-replica", &mut pace)
            .await
            .unwrap()
    );
    let seen = intent_to_end(&server, &intent.id).await;
    assert_eq!(added(&seen).len(), 2, "{seen:?}");
    // The stalled fetcher wakes, lists, and finds its lease gone.
    let lost = "fintoc_refresh_movement_fetches_total{outcome=\"listed\",settled=\"lease_lost\"}";
    eventually("the stalled fetcher settled", || async {
        sample(&server.app.metrics.render(0), lost) == 1
    })
    .await;
    let on_feed = gather(&mut feed, |s| {
        s.iter()
            .any(|m| matches!(m, Seen::Movements { complete: true, .. }))
    })
    .await;
    assert_eq!(added(&on_feed).len(), 2);
    nothing_more(&mut feed, Duration::from_millis(300), "pushed twice").await;
    assert_eq!(sim(&server).movements_requests(&account), 2);
}

// A kept token is dropped --link-token-retention after a caller last gave it (retention's
// run drops it); the Link's next result then says TOKEN_NOT_KEPT. Giving it again (here:
// RegisterLink a day before the end) restarts the count.
on_both_backends!(a_token_not_given_again_within_its_retention_is_dropped);
async fn a_token_not_given_again_within_its_retention_is_dropped(backend: Backend) {
    let server = server(backend).await;
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(0)]));
    let mut client = server.client().await;
    let register = pb::RegisterLinkRequest {
        link_token: link.token.clone(),
    };
    client.register_link(register.clone()).await.unwrap();
    let day = Duration::from_secs(86_400);
    server.clock.advance(29 * day);
    client.register_link(register).await.unwrap();
    server.clock.advance(29 * day);
    fintoc_refresh::tasks::prune(&server.app).await.unwrap();
    assert!(
        token_kept(&server, &link.link_id).await,
        "given again 29 days ago"
    );
    server.clock.advance(2 * day);
    fintoc_refresh::tasks::prune(&server.app).await.unwrap();
    assert!(
        !token_kept(&server, &link.link_id).await,
        "30 days after it was last given"
    );

    let mut feed = watch_movements(&server, link_target(&link.link_id), None).await;
    sim(&server).scheduled_refresh(&link.link_id, 1);
    let seen = gather(&mut feed, |s| !unavailable(s).is_empty()).await;
    assert_eq!(unavailable(&seen), vec!["TOKEN_NOT_KEPT".to_owned()]);
}

// A listing that shifts while it is read (a movement lands before page 2 is asked for, so
// page 2 repeats page 1's last one): the fetcher reads the list again and misses nothing,
// repeats nothing.
on_both_backends!(a_listing_that_shifts_while_read_misses_and_repeats_nothing);
async fn a_listing_that_shifts_while_read_misses_and_repeats_nothing(backend: Backend) {
    let server = server(backend).await;
    // 350 new movements: two pages of Fintoc's largest (300).
    let link = sim(&server).add_link(LinkSpec::new(vec![ok(350)]));
    let account = link.account_ids[0].clone();
    sim(&server).shift_on_page(&account, 2);
    let mut client = server.client().await;
    let intent = refresh(&mut client, &link.token, true).await.unwrap();
    let seen = intent_to_end(&server, &intent.id).await;
    let pushed = added(&seen);
    let mut unique = pushed.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), pushed.len(), "nothing repeated");
    let mut at_fintoc = listed_at_fintoc(&server, &account);
    at_fintoc.truncate(351); // the 350 and the one that landed mid-read (newest first)
    at_fintoc.sort();
    assert_eq!(unique, at_fintoc, "nothing missed");
    assert_eq!(
        sim(&server).movements_requests(&account),
        4,
        "two pages, then both again"
    );
}
