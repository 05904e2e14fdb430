//! The unit tests of `client.rs`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use clap::Parser;
use tonic::{Code, Request, Response};
use tonic_types::{ErrorDetails, StatusExt};

use super::*;
use crate::pb::RefreshStatus as S;
use crate::pb::refresh_service_server::{RefreshService, RefreshServiceServer};

type Script = Vec<Result<pb::WatchRefreshResponse, Status>>;

/// A fake server: each WatchRefresh call plays the next script and records its request.
#[derive(Default, Clone)]
struct Scripted {
    scripts: Arc<Mutex<VecDeque<Script>>>,
    requests: Arc<Mutex<Vec<pb::WatchRefreshRequest>>>,
}

#[tonic::async_trait]
impl RefreshService for Scripted {
    async fn request_refresh(
        &self,
        _: Request<pb::RequestRefreshRequest>,
    ) -> Result<Response<pb::RequestRefreshResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    type WatchRefreshStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::WatchRefreshResponse, Status>>>;

    async fn watch_refresh(
        &self,
        request: Request<pb::WatchRefreshRequest>,
    ) -> Result<Response<Self::WatchRefreshStream>, Status> {
        self.requests.lock().unwrap().push(request.into_inner());
        let script = self.scripts.lock().unwrap().pop_front().unwrap_or_default();
        Ok(Response::new(tokio_stream::iter(script)))
    }

    async fn get_refresh(
        &self,
        _: Request<pb::GetRefreshRequest>,
    ) -> Result<Response<pb::GetRefreshResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn get_link(
        &self,
        _: Request<pb::GetLinkRequest>,
    ) -> Result<Response<pb::GetLinkResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_links(
        &self,
        _: Request<pb::ListLinksRequest>,
    ) -> Result<Response<pb::ListLinksResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn register_link(
        &self,
        _: Request<pb::RegisterLinkRequest>,
    ) -> Result<Response<pb::RegisterLinkResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn forget_link(
        &self,
        _: Request<pb::ForgetLinkRequest>,
    ) -> Result<Response<pb::ForgetLinkResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }

    async fn list_movements(
        &self,
        _: Request<pb::ListMovementsRequest>,
    ) -> Result<Response<pb::ListMovementsResponse>, Status> {
        Err(Status::unimplemented("not scripted"))
    }
}

/// Runs `follow` against the scripts on a port-0 server, in plain mode; returns the exit
/// code, each request's cursor, stdout and stderr.
async fn follow_scripts(
    target: Target,
    scripts: Vec<Script>,
) -> (ExitCode, Vec<Option<u64>>, String, String) {
    let (code, requests, out, err) = follow_spec(WatchSpec::target(target), scripts).await;
    let cursors = requests.iter().map(|r| r.after_sequence).collect();
    (code, cursors, out, err)
}

/// The same for a whole spec, returning the requests as the server received them.
async fn follow_spec(
    spec: WatchSpec,
    scripts: Vec<Script>,
) -> (ExitCode, Vec<pb::WatchRefreshRequest>, String, String) {
    let fake = Scripted::default();
    fake.scripts.lock().unwrap().extend(scripts);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let server = tonic::transport::Server::builder()
        .add_service(RefreshServiceServer::new(fake.clone()))
        .serve_with_incoming(incoming);
    tokio::spawn(server);
    let args = ConnectArgs::plain(addr.to_string());
    let connection = connect::connect(&args, Credentials::default())
        .await
        .unwrap();
    let mut display = Display::new(Mode::Plain, Vec::new(), Vec::new(), true);
    let code = follow(&connection.library, &spec, None, &mut display).await;
    let out = String::from_utf8(display.out).unwrap();
    let err = String::from_utf8(display.err).unwrap();
    let requests = fake.requests.lock().unwrap().clone();
    (code, requests, out, err)
}

fn result(id: &str, status: S) -> pb::AccountResult {
    pb::AccountResult {
        account_id: id.into(),
        status: status.into(),
        ..Default::default()
    }
}

fn account(sequence: u64, id: &str, status: S) -> pb::WatchRefreshResponse {
    let event = Event::AccountResult(result(id, status));
    pb::WatchRefreshResponse {
        sequence,
        event: Some(event),
    }
}

fn completed(
    sequence: u64,
    status: S,
    accounts: Vec<pb::AccountResult>,
) -> pb::WatchRefreshResponse {
    let intent = pb::RefreshIntent {
        id: "ri_1".into(),
        status: status.into(),
        accounts,
        ..Default::default()
    };
    pb::WatchRefreshResponse {
        sequence,
        event: Some(Event::RefreshCompleted(intent)),
    }
}

fn heartbeat(sequence: u64) -> pb::WatchRefreshResponse {
    let event = Event::Heartbeat(pb::Heartbeat { server_time: None });
    pb::WatchRefreshResponse {
        sequence,
        event: Some(event),
    }
}

#[tokio::test]
async fn an_intent_resumes_after_the_last_sequence_when_the_server_restarts() {
    let accounts = vec![result("acc_a", S::Succeeded), result("acc_b", S::Succeeded)];
    let scripts = vec![
        vec![
            Ok(account(1, "acc_a", S::Succeeded)),
            Err(Status::unavailable("restarting")),
        ],
        vec![
            Ok(account(4, "acc_b", S::Succeeded)),
            Ok(completed(4, S::Succeeded, accounts)),
        ],
    ];
    let target = Target::RefreshIntentId("ri_1".into());
    let (code, cursors, out, err) = follow_scripts(target, scripts).await;
    assert_eq!(code, ExitCode::SUCCESS);
    assert_eq!(cursors, [None, Some(1)]);
    assert_eq!(
        out,
        "#1 account acc_a SUCCEEDED new_movements=0\n\
         #4 account acc_b SUCCEEDED new_movements=0\n\
         #4 refresh ri_1 SUCCEEDED: 2 succeeded (0 new movements)\n"
    );
    // The delay is the library's jittered backoff (about 100 ms first).
    assert!(
        err.starts_with("connection lost (UNAVAILABLE: restarting); reconnecting in ")
            && err.ends_with(" (attempt 1 of 5, resuming after #1)\n"),
        "{err}"
    );
}

#[tokio::test]
async fn a_failed_intent_exits_1() {
    let scripts = vec![vec![
        Ok(account(2, "acc_a", S::Failed)),
        Ok(completed(2, S::Failed, vec![result("acc_a", S::Failed)])),
    ]];
    let target = Target::RefreshIntentId("ri_1".into());
    let (code, ..) = follow_scripts(target, scripts).await;
    assert_eq!(code, ExitCode::from(1));
}

// A proxy that loses its backend mid-stream reports INTERNAL (a reset stream): resumed, as
// UNAVAILABLE is; a definitive answer (INVALID_ARGUMENT) exits 2 at once.
#[tokio::test]
async fn a_feed_from_now_resumes_after_its_first_heartbeat_and_definitive_errors_exit_2() {
    let scripts = vec![
        vec![
            Ok(heartbeat(9)),
            Err(Status::internal("stream reset by the proxy")),
        ],
        vec![Ok(heartbeat(10)), Err(Status::invalid_argument("boom"))],
    ];
    let (code, cursors, out, err) = follow_scripts(Target::LinkId("link_1".into()), scripts).await;
    assert_eq!(code, ExitCode::from(2));
    assert_eq!(cursors, [None, Some(9)]);
    assert_eq!(out, "#9 heartbeat \n#10 heartbeat \n");
    assert!(
        err.contains("(INTERNAL: stream reset by the proxy)"),
        "{err}"
    );
}

// An intent stream that ends without its outcome is resumed like a failure, and given up
// after the attempts allowed.
#[tokio::test]
async fn an_intent_stream_ending_without_its_outcome_is_an_error() {
    let scripts = vec![vec![Ok(account(1, "acc_a", S::Succeeded))]];
    let target = Target::RefreshIntentId("ri_1".into());
    let (code, cursors, ..) = follow_scripts(target, scripts).await;
    assert_eq!(code, ExitCode::from(2));
    assert_eq!(cursors, [None, Some(1), Some(1), Some(1), Some(1), Some(1)]);
}

fn pending_intent(mfa: &str) -> pb::RefreshIntent {
    pb::RefreshIntent {
        id: "ri_1".into(),
        link_id: "link_1".into(),
        status: S::Pending.into(),
        accounts: vec![result("acc_a", S::Pending)],
        mfa_widget_token: mfa.into(),
        ..Default::default()
    }
}

#[test]
fn plain_refresh_shows_mfa_and_hides_heartbeats() {
    let mut d = Display::new(Mode::Plain, Vec::new(), Vec::new(), false);
    d.requested(&pending_intent("wt_1"), false).unwrap();
    d.message(&heartbeat(3)).unwrap();
    d.message(&account(4, "acc_a", S::Succeeded)).unwrap();
    let out = String::from_utf8(d.out).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0],
        "refresh ri_1 of link link_1 (ONLY_LAST, new): expecting 1 account(s): acc_a"
    );
    assert!(lines[1].starts_with("mfa required:") && lines[1].contains("widget_token=wt_1"));
    assert_eq!(lines[2], "#4 account acc_a SUCCEEDED new_movements=0");
}

#[test]
fn json_watch_writes_one_object_per_message_heartbeats_included() {
    let mut d = Display::new(Mode::Json, Vec::new(), Vec::new(), true);
    d.message(&heartbeat(3)).unwrap();
    d.note("reconnecting").unwrap();
    assert_eq!(
        String::from_utf8(d.out).unwrap(),
        "{\"event\":\"heartbeat\",\"sequence\":3,\"server_time\":null}\n"
    );
    assert_eq!(String::from_utf8(d.err).unwrap(), "reconnecting\n");
}

#[test]
fn live_watch_replaces_a_heartbeat_with_the_next_line() {
    let mut d = Display::new(Mode::Live, Vec::new(), Vec::new(), true);
    d.message(&heartbeat(3)).unwrap();
    d.message(&heartbeat(4)).unwrap();
    let out = String::from_utf8(d.out).unwrap();
    assert_eq!(out.matches(REPLACE_LINE).count(), 1);
    assert!(out.ends_with(&format!("{REPLACE_LINE}\x1b[2m#4 heartbeat \x1b[0m\n")));
}

#[test]
fn live_refresh_redraws_the_board_and_puts_notes_in_its_footer() {
    let mut d = Display::new(Mode::Live, Vec::new(), Vec::new(), false);
    d.requested(&pending_intent(""), true).unwrap();
    d.out.clear();
    d.note("reconnecting").unwrap();
    assert_eq!(
        String::from_utf8(std::mem::take(&mut d.out)).unwrap(),
        "\x1b[2A\r\x1b[2K  acc_a  \x1b[33mPENDING\x1b[0m\n\r\x1b[2Kreconnecting\n"
    );
    d.message(&completed(
        5,
        S::Succeeded,
        vec![result("acc_a", S::Succeeded)],
    ))
    .unwrap();
    let out = String::from_utf8(d.out).unwrap();
    assert!(out.ends_with("\r\x1b[2Krefresh ri_1 SUCCEEDED: 1 succeeded (0 new movements)\n"));
    assert!(d.err.is_empty());
}

#[test]
fn arguments_become_requests() {
    let args = RefreshArgs {
        link_token: "tok".into(),
        historical: true,
        connection: ConnectArgs::plain("x"),
        json: false,
        idempotency_key: Some("k1".into()),
        movements: true,
    };
    let request = refresh_request(&args);
    assert_eq!(request.refresh_type, i32::from(RefreshType::Historical));
    assert_eq!(request.idempotency_key, "k1");
    assert!(request.keep_link_token, "--movements keeps the token");
}

/// `fintoc-refresh watch <args>` as clap parses it.
fn watch_args(args: &[&str]) -> Result<WatchArgs, clap::Error> {
    let argv = ["fintoc-refresh", "watch"].iter().chain(args);
    match super::super::Cli::try_parse_from(argv)?.command {
        super::super::Command::Watch(args) => Ok(args),
        other => panic!("parsed as {other:?}"),
    }
}

fn target_of(args: &[&str]) -> Target {
    watch_target(&watch_args(args).unwrap()).unwrap()
}

fn selection(links: &[&str], accounts: &[&str], all: bool) -> Target {
    Target::Selection(pb::Selection {
        link_ids: links.iter().map(|s| s.to_string()).collect(),
        account_ids: accounts.iter().map(|s| s.to_string()).collect(),
        all,
    })
}

#[test]
fn one_id_keeps_its_single_target_and_more_become_a_selection() {
    assert_eq!(
        target_of(&["--account-id", "acc_1"]),
        Target::AccountId("acc_1".into())
    );
    assert_eq!(
        target_of(&["--link-id", "link_1", "--link-id", "link_1"]),
        Target::LinkId("link_1".into()),
        "a repeated id counts once"
    );
    assert_eq!(
        target_of(&["--link-id", "link_1", "--link-id", "link_2"]),
        selection(&["link_1", "link_2"], &[], false)
    );
    assert_eq!(
        target_of(&["--account-id", "acc_1", "--link-id", "link_1"]),
        selection(&["link_1"], &["acc_1"], false)
    );
    assert_eq!(target_of(&["--all"]), selection(&[], &[], true));
    assert_eq!(
        target_of(&["--refresh-intent-id", "ri_1"]),
        Target::RefreshIntentId("ri_1".into())
    );
}

#[test]
fn conflicting_or_missing_targets_and_starts_are_usage_errors() {
    use clap::error::ErrorKind;
    for (args, kind) in [
        (&[][..], ErrorKind::MissingRequiredArgument),
        (
            &["--all", "--link-id", "l"][..],
            ErrorKind::ArgumentConflict,
        ),
        (
            &["--refresh-intent-id", "r", "--account-id", "a"],
            ErrorKind::ArgumentConflict,
        ),
        (
            &["--refresh-intent-id", "r", "--all"],
            ErrorKind::ArgumentConflict,
        ),
        (
            &["--all", "--since", "1h", "--after", "3"],
            ErrorKind::ArgumentConflict,
        ),
        (
            &["--refresh-intent-id", "r", "--since", "1h"],
            ErrorKind::ArgumentConflict,
        ),
        (
            &["--all", "--since", "yesterday"],
            ErrorKind::ValueValidation,
        ),
        (&["--all", "--status", "pending"], ErrorKind::InvalidValue),
    ] {
        let err = watch_args(args).unwrap_err();
        assert_eq!(err.kind(), kind, "{args:?}: {err}");
    }
}

#[test]
fn since_and_statuses_go_into_the_request() {
    let now = 1_800_000_000_000;
    let args = watch_args(&[
        "--link-id",
        "link_1",
        "--since",
        "90m",
        "--status",
        "FAILED",
        "--status",
        "timed_out",
        "--status",
        "Timed-Out",
    ])
    .unwrap();
    let spec = watch_spec(&args, now).unwrap();
    let since = crate::grpc::convert::timestamp(now - 90 * 60_000);
    assert_eq!(spec.start_time, Some(since));
    let failed = i32::from(S::Failed);
    let timed_out = i32::from(S::TimedOut);
    assert_eq!(spec.statuses, [failed, timed_out, timed_out]);
    // That a cursor then replaces the start time and the filter stays on every request:
    // `since_goes_only_until_a_message_gives_a_cursor`, over the wire.

    let at = watch_args(&["--all", "--since", "2026-12-03T10:00:00Z"]).unwrap();
    let start = watch_spec(&at, now).unwrap().start_time.unwrap();
    assert_eq!((start.seconds, start.nanos), (1_796_292_000, 0));
    let plain = watch_spec(&watch_args(&["--all"]).unwrap(), now).unwrap();
    assert_eq!((plain.start_time, plain.statuses), (None, vec![]));
}

/// The server refuses `start_time` with `after_sequence`, so on every reconnect the CLI
/// must send one or the other: the start time while no message has given a cursor (here a
/// stream that failed before its first message), the cursor once one did (a heartbeat).
#[tokio::test]
async fn since_goes_only_until_a_message_gives_a_cursor() {
    let max_age = || {
        let info = ErrorDetails::with_error_info(
            crate::error::reason::STREAM_MAX_AGE,
            crate::error::DOMAIN,
            [],
        );
        Status::with_error_details(Code::Unavailable, "max age", info)
    };
    let scripts = vec![
        vec![Err(Status::unavailable("restarting"))],
        vec![Ok(heartbeat(5)), Err(max_age())],
        vec![Ok(account(6, "acc_a", S::Failed)), Err(max_age())],
        vec![Err(Status::invalid_argument("boom"))],
    ];
    let since = crate::grpc::convert::timestamp(1_800_000_000_000);
    let spec = WatchSpec {
        target: selection(&["link_1", "link_2"], &[], false),
        start_time: Some(since),
        statuses: vec![i32::from(S::Failed)],
        movements: true,
    };
    let (code, requests, out, _) = follow_spec(spec.clone(), scripts).await;
    assert_eq!(code, ExitCode::from(2));
    let asked: Vec<(Option<u64>, Option<prost_types::Timestamp>)> = requests
        .iter()
        .map(|r| (r.after_sequence, r.start_time))
        .collect();
    assert_eq!(
        asked,
        [
            (None, Some(since)),
            (None, Some(since)),
            (Some(5), None),
            (Some(6), None)
        ]
    );
    assert!(
        requests
            .iter()
            .all(|r| r.target == Some(spec.target.clone()) && r.statuses == spec.statuses),
        "target and filter on every request: {requests:?}"
    );
    assert_eq!(
        out,
        "#5 heartbeat \n#6 account acc_a FAILED new_movements=0\n"
    );
}
