//! The simulator's model of Fintoc: Links, accounts, refresh intents, events, movements,
//! webhook endpoints, idempotency records, injected faults and a request log. Pure data and
//! rules; the HTTP layer and the clock live elsewhere. Here: the types and the model's
//! fields; its operations by resource in `links.rs`, `intents.rs`, `movements.rs` (the
//! listing), `changes.rs` (what happens to movements after a refresh) and `requests.rs`.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use rand::RngExt;
use serde_json::{Value, json};

use crate::clock::{Millis, format_rfc3339_ms};
use crate::domain::RefreshType;

mod changes;
mod intents;
mod links;
mod movements;
mod requests;
#[cfg(test)]
mod tests;

pub use movements::MovementQuery;

/// What refreshing one account produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `account.refresh_intent.succeeded` with this many new movements.
    Succeed { new_movements: u32 },
    /// `account.refresh_intent.succeeded` with this many new movements (`new_movements`
    /// counts them all), of which the newest `pending` are still `pending` (as a bank shows a
    /// transfer in process); `Simulator::confirm_pending` confirms them later.
    SucceedWithPending { new_movements: u32, pending: u32 },
    /// `account.refresh_intent.failed`.
    Fail { public_error: String },
    /// `account.refresh_intent.rejected`, and Fintoc confirms the credentials are invalid:
    /// new refreshes are refused until the Link is reconnected.
    Reject,
    /// `account.refresh_intent.rejected` as the bank reported it, not yet confirmed by
    /// Fintoc: new refreshes are refused for an hour (so the user's bank login does not get
    /// locked), then allowed again.
    RejectUnconfirmed,
    /// No event at all (the bank never answers).
    Silent,
    /// The event exists (listed by `/v2/events`) but its webhook is never delivered.
    Dropped,
}

/// A failure to inject into the next API requests. Injected into a POST that carries an
/// `Idempotency-Key`, it becomes that key's stored answer, like any answer Fintoc gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status and Fintoc's error envelope.
    Status(u16),
    /// Answer 200 with a body that is not JSON.
    Malformed,
    /// Wait this long before answering normally.
    Slow(Duration),
}

/// Why a Link's refreshes are refused after a rejected one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Fintoc confirmed the credentials are invalid: reconnect the Link.
    Confirmed,
    /// The bank said so at this instant; refused until an hour later.
    Unconfirmed { at_ms: Millis },
}

/// How long a Link is refused after an unconfirmed rejection.
pub const UNCONFIRMED_REJECTION_WAIT_MS: Millis = 3_600_000;

/// How long an `Idempotency-Key`'s answer is kept (Fintoc may purge keys from 24 h on).
pub const IDEMPOTENCY_TTL_MS: Millis = 24 * 3_600_000;

/// The first answer given to a POST with an `Idempotency-Key`, replayed as is.
#[derive(Debug, Clone)]
pub struct StoredAnswer {
    /// The request's method, path and parameters, to refuse a reuse with other ones.
    pub fingerprint: String,
    pub status: u16,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub at_ms: Millis,
}

#[derive(Debug)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub number: String,
    pub outcome: Outcome,
}

#[derive(Debug)]
pub struct Link {
    pub id: String,
    pub token: String,
    pub accounts: Vec<Account>,
    pub mfa: bool,
    pub rejection: Option<Rejection>,
    /// `active` in the Link's answer (Fintoc does not refresh an inactive Link).
    pub active: bool,
    /// Whether `GET /v1/links/{token}` lists the accounts, or answers `accounts: null`.
    pub accounts_inline: bool,
    /// The token no longer works (the Link was deleted at Fintoc): every request with it
    /// gets the invalid-token error.
    pub revoked: bool,
    pub in_progress: Option<String>,
    /// When the last succeeded refresh of each type completed.
    pub last_success: HashMap<&'static str, Millis>,
    pub created_at_ms: Millis,
}

#[derive(Debug, Clone)]
pub struct Intent {
    pub id: String,
    pub link_token: String,
    pub link_id: String,
    pub refresh_type: RefreshType,
    pub status: &'static str,
    pub created_at_ms: Millis,
    pub widget_token: Option<String>,
}

impl Intent {
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "object": "refresh_intent",
            "refreshed_object": "link",
            "refreshed_object_id": self.link_id,
            "status": self.status,
            "type": self.refresh_type.as_str(),
            "created_at": format_rfc3339_ms(self.created_at_ms),
            "requires_mfa": self.widget_token.as_ref().map(|t| json!({ "widget_token": t })),
            "new_movements": 0,
        })
    }
}

/// An event as Fintoc stores it: listed by `/v2/events` and delivered as a webhook body.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub event_type: String,
    pub body: String,
    pub deliver: bool,
}

impl Event {
    /// A Fintoc event of `event_type` about `data`, created at `now_ms`, to be delivered.
    pub fn new(mode: &str, event_type: &str, data: Value, now_ms: Millis) -> Event {
        let id = new_id("evt");
        let body = json!({
            "id": id,
            "type": event_type,
            "mode": mode,
            "created_at": format_rfc3339_ms(now_ms),
            "data": data,
            "object": "event",
        });
        Event {
            id,
            event_type: event_type.to_owned(),
            body: body.to_string(),
            deliver: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Endpoint {
    pub id: String,
    pub url: String,
    pub secret: String,
    pub enabled_events: Vec<String>,
    pub description: Option<String>,
    pub disabled: bool,
    pub created_at_ms: Millis,
}

impl Endpoint {
    pub fn to_json(&self, mode: &str, with_secret: bool) -> Value {
        json!({
            "id": self.id,
            "object": "webhook_endpoint",
            "url": self.url,
            "enabled_events": self.enabled_events,
            "description": self.description,
            "mode": mode,
            "status": if self.disabled { "disabled" } else { "enabled" },
            "secret": with_secret.then(|| self.secret.clone()),
            "created_at": format_rfc3339_ms(self.created_at_ms),
        })
    }
}

pub struct State {
    pub mode: &'static str,
    pub base_url: String,
    pub links: Vec<Link>,
    pub intents: Vec<Intent>,
    pub events: Vec<Event>,
    /// Each account's movements, oldest created first (the listing orders them).
    pub movements: HashMap<String, Vec<Value>>,
    /// (account id, page): the next request for that page first gets a new movement.
    pub shifts: Vec<(String, u32)>,
    pub endpoints: Vec<Endpoint>,
    /// Idempotency-Key → its first answer.
    idempotency: HashMap<String, StoredAnswer>,
    /// Faults in injection order, each for any request or for one (method, path).
    faults: VecDeque<(Option<(String, String)>, Fault)>,
    requests: Vec<(String, String)>,
}

const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A Fintoc-looking id: `prefix_` and 16 random characters.
pub fn new_id(prefix: &str) -> String {
    let mut rng = rand::rng();
    let tail: String = (0..16)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("{prefix}_{tail}")
}

impl State {
    pub fn new(api_key: &str, base_url: &str) -> State {
        State {
            mode: if api_key.starts_with("sk_live_") {
                "live"
            } else {
                "test"
            },
            base_url: base_url.to_owned(),
            links: Vec::new(),
            intents: Vec::new(),
            events: Vec::new(),
            movements: HashMap::new(),
            shifts: Vec::new(),
            endpoints: Vec::new(),
            idempotency: HashMap::new(),
            faults: VecDeque::new(),
            requests: Vec::new(),
        }
    }
}
