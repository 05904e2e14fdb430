//! A Fintoc look-alike: a real HTTP server speaking the parts of Fintoc's API this service
//! uses, as Fintoc documents them, that delivers **signed** account events to webhook URLs
//! the way Fintoc does (retries on non-2xx with exponential backoff, optional duplicates and
//! reordering). `serve --simulate` embeds it on its own port; `fintoc-refresh simulate` runs
//! it alone for other teams' integration tests; the end-to-end tests drive it directly.
//!
//! What it enforces like Fintoc: the raw secret key in `Authorization`; JSON error envelopes
//! with Fintoc's codes; one refresh in progress per Link; 5 / 60 minute spacing after a
//! succeeded only_last / historical refresh (none after a failed one); rejected credentials
//! (reconnect, or wait an hour while unconfirmed); MFA via `requires_mfa.widget_token`;
//! `Idempotency-Key` on POST: the first answer, errors and injected faults included, replayed
//! for 24 hours, another request under the same key refused; Link-header pagination;
//! `/v2/events` with its `starting_after` / `ending_before` cursors. Endpoints whose
//! parameters Fintoc documents (create, events) refuse any other parameter, so a client that
//! drifts off the documented API fails here rather than in production. Time for those rules
//! comes from the injected clock.
//!
//! Movements are listed as Fintoc lists them (since / until / confirmed_only, newest first,
//! offset pages); besides refresh results the simulator produces the movement events Fintoc
//! sends: pending movements confirmed (`movements_modified`), movements removed
//! (`movements_removed`), and recurring refreshes no intent asked for (`succeeded`).
//!
//! Layout: `state/` the model and its rules, `api/` the HTTP endpoints (and publishing
//! events), `deliver.rs` webhook delivery, `schedule.rs` recurring refreshes.

mod api;
mod deliver;
mod schedule;
mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use deliver::Delivery;
pub use state::{Fault, Outcome};

use crate::clock::Clock;

/// How the simulator behaves.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The secret key callers must send (`sk_test_…` selects test mode, `sk_live_…` live).
    pub api_key: String,
    /// Webhook targets that receive every account event (besides endpoints created through
    /// `/v1/webhook_endpoints`), each with its signing secret.
    pub webhooks: Vec<(String, String)>,
    /// Time between a refresh intent's creation and its account events.
    pub delivery_delay: Duration,
    /// How long the simulated end user takes to complete the MFA widget.
    pub mfa_delay: Duration,
    /// First retry delay after a failed delivery; doubled each time (Fintoc: 3 s).
    pub retry_base: Duration,
    /// Retries per delivery after the first attempt (Fintoc: 17).
    pub max_retries: u32,
    /// Deliver every event twice: the second copies once the first round is over, as Fintoc
    /// redelivers an event it believes failed.
    pub duplicate: bool,
    /// Deliver each refresh's events one after another, newest first (the reverse of the
    /// order they were produced in), instead of all at once.
    pub reorder: bool,
    /// Produce and deliver the events before answering the create call.
    pub deliver_before_response: bool,
    /// HTTP status of the cooldown error (`rate_limit_exceeded`); Fintoc's is undocumented.
    pub cooldown_status: u16,
    /// Deliver to `https://` targets without checking their certificate. Only for
    /// `serve --simulate` with an HTTPS intake: it delivers to its own process over loopback,
    /// and the operator's certificate names the public host, not 127.0.0.1.
    pub insecure_webhook_tls: bool,
    /// Run Fintoc's recurring refresh of every Link this often (of `clock`'s time), each
    /// adding 1–3 movements per account; None (the default) runs none.
    pub scheduled_every: Option<Duration>,
    pub clock: Clock,
}

impl SimConfig {
    pub fn new(api_key: impl Into<String>) -> SimConfig {
        SimConfig {
            api_key: api_key.into(),
            webhooks: Vec::new(),
            delivery_delay: Duration::from_secs(2),
            mfa_delay: Duration::from_secs(5),
            retry_base: Duration::from_secs(3),
            max_retries: 17,
            duplicate: false,
            reorder: false,
            deliver_before_response: false,
            cooldown_status: 400,
            insecure_webhook_tls: false,
            scheduled_every: None,
            clock: Clock::System,
        }
    }
}

/// A Link to create in the simulator: one outcome per account.
#[derive(Debug, Clone)]
pub struct LinkSpec {
    pub accounts: Vec<Outcome>,
    /// The institution asks for MFA on every refresh.
    pub mfa: bool,
    /// A fixed token (demo links), or `None` for a random one.
    pub token: Option<String>,
}

impl LinkSpec {
    pub fn new(accounts: Vec<Outcome>) -> LinkSpec {
        LinkSpec {
            accounts,
            mfa: false,
            token: None,
        }
    }
}

/// A Link the simulator serves.
#[derive(Debug, Clone)]
pub struct SimLinkInfo {
    pub link_id: String,
    pub token: String,
    pub account_ids: Vec<String>,
}

/// A running simulator: its address and handles for tests.
#[derive(Clone)]
pub struct Simulator {
    addr: SocketAddr,
    state: Arc<Mutex<state::State>>,
    deliveries: Arc<Mutex<Vec<Delivery>>>,
    /// To publish the events the test handles produce, as the API publishes its own.
    shared: api::Shared,
}

impl Simulator {
    /// Serves on `listener` until `shutdown` is cancelled.
    pub fn start(
        listener: TcpListener,
        config: SimConfig,
        shutdown: CancellationToken,
    ) -> std::io::Result<Simulator> {
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let state = Arc::new(Mutex::new(state::State::new(&config.api_key, &base_url)));
        let deliveries = Arc::new(Mutex::new(Vec::new()));
        let scheduled = config
            .scheduled_every
            .map(|every| (every, config.clock.clone()));
        let shared = api::Shared::new(config, state.clone(), deliveries.clone(), shutdown.clone());
        if let Some((every, clock)) = scheduled {
            schedule::spawn(shared.clone(), clock, every, shutdown.clone());
        }
        let router = api::router(shared.clone());
        tokio::spawn(async move {
            // No Nagle: an answer must not wait for the peer's delayed ACK.
            let listener = axum::serve::ListenerExt::tap_io(listener, |tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await
            {
                tracing::error!(error = %e, "simulator stopped");
            }
        });
        Ok(Simulator {
            addr,
            state,
            deliveries,
            shared,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The base URL to give the service as `--fintoc-api-url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn add_link(&self, spec: LinkSpec) -> SimLinkInfo {
        self.state.lock().expect("simulator state").add_link(spec)
    }

    /// The four demo Links `serve --simulate` prints.
    pub fn add_demo_links(&self) -> Vec<(&'static str, SimLinkInfo)> {
        demo_links()
            .into_iter()
            .map(|(name, spec)| (name, self.add_link(spec)))
            .collect()
    }

    /// Makes the next `count` API requests fail with `fault`. A faulted POST with an
    /// `Idempotency-Key` keeps that fault as the key's answer: a retry with the same key
    /// gets it again (without using up another fault), as it would from Fintoc.
    pub fn inject(&self, fault: Fault, count: usize) {
        self.state
            .lock()
            .expect("simulator state")
            .inject(None, fault, count);
    }

    /// Makes the next `count` requests to `method` `path` (exact path, no query; e.g.
    /// `"POST", "/v1/refresh_intents"`) fail with `fault`; other requests are untouched.
    pub fn inject_on(&self, method: &str, path: &str, fault: Fault, count: usize) {
        self.state
            .lock()
            .expect("simulator state")
            .inject(Some((method, path)), fault, count);
    }

    /// Drops the faults still queued (by [`Simulator::inject`] or [`Simulator::inject_on`]).
    pub fn clear_faults(&self) {
        self.state.lock().expect("simulator state").clear_faults();
    }

    /// Marks a Link active or not: its answer says `active: false` when not (Fintoc does
    /// not refresh an inactive Link).
    pub fn set_active(&self, link_id: &str, active: bool) {
        if let Some(link) = self
            .state
            .lock()
            .expect("simulator state")
            .link_mut(link_id)
        {
            link.active = active;
        }
    }

    /// `GET /v1/links/{token}` answers `accounts: null` for this Link (as Fintoc's lists
    /// do); `GET /v1/accounts` still lists them.
    pub fn list_accounts_separately(&self, link_id: &str) {
        if let Some(link) = self
            .state
            .lock()
            .expect("simulator state")
            .link_mut(link_id)
        {
            link.accounts_inline = false;
        }
    }

    /// How many API requests matched `method` and `path` (exact path, no query).
    pub fn requests(&self, method: &str, path: &str) -> usize {
        self.state
            .lock()
            .expect("simulator state")
            .count_requests(method, path)
    }

    /// Marks a Link's credentials as valid again (the user reconnected it).
    pub fn reconnect(&self, link_id: &str) {
        self.state
            .lock()
            .expect("simulator state")
            .reconnect(link_id);
    }

    /// Confirms the account's pending movements and publishes one
    /// `account.refresh_intent.movements_modified` event about them (listed by `/v2/events`,
    /// delivered like every event); returns how many were confirmed (0: no event).
    pub fn confirm_pending(&self, account_id: &str) -> usize {
        let now = self.shared.now_ms();
        let event = self.model().confirm_pending(account_id, now);
        self.publish(event, "movements_changed")
    }

    /// Removes these movements of the account (unknown ids ignored) and publishes one
    /// `account.refresh_intent.movements_removed` event, whose data — undocumented by
    /// Fintoc, modelled on `movements_modified` — is
    /// `{"account_id": …, "movements_removed": [the whole movements as they were]}`.
    /// Returns how many were removed (0: no event).
    pub fn remove_movements(&self, account_id: &str, ids: &[String]) -> usize {
        let now = self.shared.now_ms();
        let event = self.model().remove_movements(account_id, ids, now);
        self.publish(event, "movements_removed")
    }

    /// Fintoc's recurring refresh of the Link: each account gets `new_movements` confirmed
    /// movements and an `account.refresh_intent.succeeded` event (`type: "only_last"`) no
    /// refresh intent asked for. Returns the events' ids (none for an unknown, revoked or
    /// inactive Link).
    pub fn scheduled_refresh(&self, link_id: &str, new_movements: u32) -> Vec<String> {
        let now = self.shared.now_ms();
        let events = self.model().scheduled_refresh(link_id, new_movements, now);
        let ids = events.iter().map(|e| e.id.clone()).collect();
        self.shared.publish_later(events);
        ids
    }

    /// From now on every request with the Link's token (refresh intents, the Link, its
    /// accounts and movements) gets Fintoc's invalid-token error, as for a deleted Link.
    pub fn revoke_token(&self, link_id: &str) {
        self.model().revoke(link_id);
    }

    /// The next request for `page` (1 when absent) of the account's movements first gets
    /// one new confirmed movement, posted no earlier than any other: offset pages shift by
    /// one, as at Fintoc when a movement lands mid-read. One-shot.
    pub fn shift_on_page(&self, account_id: &str, page: u32) {
        self.model().shift_on_page(account_id, page);
    }

    /// How many times the account's movements were listed (`GET …/movements`, any page).
    pub fn movements_requests(&self, account_id: &str) -> usize {
        self.requests("GET", &format!("/v1/accounts/{account_id}/movements"))
    }

    /// The account's movements as the listing orders them (newest first), pending,
    /// reversed and duplicated ones included: what a client should end up with.
    pub fn movements(&self, account_id: &str) -> Vec<serde_json::Value> {
        let all = state::MovementQuery {
            confirmed_only: false,
            ..Default::default()
        };
        self.model().list_movements(account_id, &all)
    }

    /// Every webhook delivery attempt so far.
    pub fn deliveries(&self) -> Vec<Delivery> {
        self.deliveries.lock().expect("deliveries").clone()
    }

    /// Ids of the events produced so far, oldest first.
    pub fn event_ids(&self) -> Vec<String> {
        self.state.lock().expect("simulator state").event_ids()
    }

    fn model(&self) -> std::sync::MutexGuard<'_, state::State> {
        self.state.lock().expect("simulator state")
    }

    /// Publishes a movement-change event, if there is one; returns how many movements its
    /// `list` field names.
    fn publish(&self, event: Option<state::Event>, list: &str) -> usize {
        let Some(event) = event else { return 0 };
        let count = serde_json::from_str::<serde_json::Value>(&event.body)
            .ok()
            .and_then(|body| body["data"][list].as_array().map(Vec::len))
            .unwrap_or(0);
        self.shared.publish_later(vec![event]);
        count
    }
}

/// Random characters for generated keys and secrets.
pub fn random_suffix() -> String {
    state::new_id("x")[2..].to_owned()
}

/// all-succeed, one-fails, rejected, mfa-required: fixed tokens, so the README can show them.
pub fn demo_links() -> Vec<(&'static str, LinkSpec)> {
    let spec = |accounts: Vec<Outcome>, mfa: bool, token: &str| LinkSpec {
        accounts,
        mfa,
        token: Some(token.to_owned()),
    };
    let ok = |n| Outcome::Succeed { new_movements: n };
    vec![
        (
            "all-succeed",
            spec(
                vec![ok(3), ok(0), ok(12)],
                false,
                "link_demoAllSucceed_token_sim0001",
            ),
        ),
        (
            "one-fails",
            spec(
                vec![
                    ok(2),
                    Outcome::Fail {
                        public_error: "The bank did not answer in time".into(),
                    },
                    ok(1),
                ],
                false,
                "link_demoOneFails_token_sim0002",
            ),
        ),
        (
            "rejected",
            spec(
                vec![Outcome::Reject, Outcome::Reject],
                false,
                "link_demoRejected_token_sim0003",
            ),
        ),
        (
            "mfa-required",
            spec(
                vec![ok(4), ok(1)],
                true,
                "link_demoMfaRequired_token_sim0004",
            ),
        ),
    ]
}
