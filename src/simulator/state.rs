//! The simulator's model of Fintoc: Links, accounts, refresh intents, events, movements,
//! webhook endpoints, idempotency records, injected faults and a request log. Pure data and
//! rules; the HTTP layer and the clock live elsewhere.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;

use rand::RngExt;
use serde_json::{Value, json};

use super::{LinkSpec, SimLinkInfo};
use crate::clock::{Millis, format_rfc3339_ms};
use crate::domain::RefreshType;
use crate::domain::policy::cooldown_for;

/// What refreshing one account produces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// `account.refresh_intent.succeeded` with this many new movements.
    Succeed { new_movements: u32 },
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
    pub movements: HashMap<String, Vec<Value>>,
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
            endpoints: Vec::new(),
            idempotency: HashMap::new(),
            faults: VecDeque::new(),
            requests: Vec::new(),
        }
    }

    pub fn add_link(&mut self, spec: LinkSpec) -> SimLinkInfo {
        let id = match &spec.token {
            Some(token) => token.split("_token_").next().unwrap_or(token).to_owned(),
            None => new_id("link"),
        };
        let token = spec
            .token
            .unwrap_or_else(|| format!("{id}_token_{}", &new_id("x")[2..]));
        let accounts: Vec<Account> = spec
            .accounts
            .into_iter()
            .enumerate()
            .map(|(i, outcome)| Account {
                id: new_id("acc"),
                name: ["Cuenta Corriente", "Cuenta Vista", "Línea de Crédito"][i % 3].to_owned(),
                number: format!("{:09}", 100_000_000 + i * 7919 + self.links.len() * 104_729),
                outcome,
            })
            .collect();
        for account in &accounts {
            // 45 older movements: more than one default page (30), so pagination shows.
            let seeded = (0..45)
                .map(|n| movement(n, 86_400_000 * (60 - n as i64 / 2), 1_700_000_000_000))
                .collect();
            self.movements.insert(account.id.clone(), seeded);
        }
        let info = SimLinkInfo {
            link_id: id.clone(),
            token: token.clone(),
            account_ids: accounts.iter().map(|a| a.id.clone()).collect(),
        };
        self.links.push(Link {
            id,
            token,
            accounts,
            mfa: spec.mfa,
            rejection: None,
            active: true,
            accounts_inline: true,
            in_progress: None,
            last_success: HashMap::new(),
            created_at_ms: 1_700_000_000_000,
        });
        info
    }

    pub fn link_by_token(&self, token: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.token == token)
    }

    pub fn link_mut(&mut self, link_id: &str) -> Option<&mut Link> {
        self.links.iter_mut().find(|l| l.id == link_id)
    }

    pub fn reconnect(&mut self, link_id: &str) {
        if let Some(link) = self.link_mut(link_id) {
            link.rejection = None;
        }
    }

    /// Queues `count` faults for the next requests, or only for those matching `target`
    /// (method, exact path).
    pub fn inject(&mut self, target: Option<(&str, &str)>, fault: Fault, count: usize) {
        let target = target.map(|(m, p)| (m.to_owned(), p.to_owned()));
        self.faults
            .extend(std::iter::repeat_n((target, fault), count));
    }

    /// Drops every fault still queued.
    pub fn clear_faults(&mut self) {
        self.faults.clear();
    }

    /// The oldest queued fault that applies to this request, removed from the queue.
    pub fn next_fault(&mut self, method: &str, path: &str) -> Option<Fault> {
        let index = self.faults.iter().position(|(target, _)| {
            target
                .as_ref()
                .is_none_or(|(m, p)| m.eq_ignore_ascii_case(method) && p == path)
        })?;
        self.faults.remove(index).map(|(_, fault)| fault)
    }

    /// The answer stored for `key`, unless it is 24 hours old (then it is forgotten).
    pub fn recall(&mut self, key: &str, now_ms: Millis) -> Option<StoredAnswer> {
        let stored = self.idempotency.get(key)?;
        if now_ms - stored.at_ms >= IDEMPOTENCY_TTL_MS {
            self.idempotency.remove(key);
            return None;
        }
        Some(stored.clone())
    }

    /// Stores the first answer for `key` (a concurrent first request that finished earlier
    /// keeps its place), and forgets keys past their 24 hours.
    pub fn remember(&mut self, key: String, answer: StoredAnswer) {
        let now = answer.at_ms;
        self.idempotency
            .retain(|_, a| now - a.at_ms < IDEMPOTENCY_TTL_MS);
        self.idempotency.entry(key).or_insert(answer);
    }

    pub fn record_request(&mut self, method: &str, path: &str) {
        self.requests.push((method.to_owned(), path.to_owned()));
    }

    pub fn count_requests(&self, method: &str, path: &str) -> usize {
        self.requests
            .iter()
            .filter(|(m, p)| m == method && p == path)
            .count()
    }

    pub fn event_ids(&self) -> Vec<String> {
        self.events.iter().map(|e| e.id.clone()).collect()
    }

    /// Why a new refresh of this Link must be refused, as (status, type, code, message).
    pub fn refusal(
        &self,
        link: &Link,
        refresh_type: RefreshType,
        now_ms: Millis,
        cooldown_status: u16,
    ) -> Option<(u16, &'static str, &'static str, String)> {
        match link.rejection {
            Some(Rejection::Confirmed) => {
                return Some((
                    400,
                    "link_error",
                    "rejected_refresh_intent",
                    "The institution indicated that the credentials are invalid. You need to reconnect the account.".into(),
                ));
            }
            Some(Rejection::Unconfirmed { at_ms })
                if now_ms < at_ms + UNCONFIRMED_REJECTION_WAIT_MS =>
            {
                return Some((
                    400,
                    "link_error",
                    "rejected_refresh_intent",
                    "The institution indicated that the credentials are invalid. You have to wait at least an hour to avoid locking your credentials".into(),
                ));
            }
            Some(Rejection::Unconfirmed { .. }) | None => {}
        }
        if link.in_progress.is_some() {
            return Some((
                400,
                "invalid_request_error",
                "refresh_intent_in_progress",
                format!(
                    "There is already a refresh intent in progress for {}.",
                    link.id
                ),
            ));
        }
        let last = link.last_success.get(refresh_type.as_str())?;
        let cooldown = cooldown_for(refresh_type).as_millis() as Millis;
        (now_ms < last + cooldown).then(|| {
            (
                cooldown_status,
                "invalid_request_error",
                "rate_limit_exceeded",
                format!(
                    "This Link was recently refreshed.You have to wait at least {} minutes between refresh intents",
                    cooldown / 60_000
                ),
            )
        })
    }

    /// Creates an intent for the Link (the caller checked [`State::refusal`]).
    pub fn create_intent(
        &mut self,
        token: &str,
        refresh_type: RefreshType,
        now_ms: Millis,
    ) -> Intent {
        let link = self
            .links
            .iter_mut()
            .find(|l| l.token == token)
            .expect("checked link");
        let id = new_id("ri");
        let widget_token = link.mfa.then(|| format!("{id}_sec_{}", &new_id("x")[2..]));
        link.in_progress = Some(id.clone());
        let intent = Intent {
            id,
            link_token: token.to_owned(),
            link_id: link.id.clone(),
            refresh_type,
            status: "created",
            created_at_ms: now_ms,
            widget_token,
        };
        self.intents.push(intent.clone());
        intent
    }

    /// Produces the intent's account events (stored, to be delivered by the caller) and
    /// settles it: succeeded only if every account succeeded.
    pub fn run_intent(&mut self, intent_id: &str, now_ms: Millis, reorder: bool) -> Vec<Event> {
        let Some(intent) = self.intents.iter().find(|i| i.id == intent_id).cloned() else {
            return Vec::new();
        };
        let mode = self.mode;
        let link = self
            .links
            .iter_mut()
            .find(|l| l.id == intent.link_id)
            .expect("intent's link");
        let mut events = Vec::new();
        let (mut all_ok, mut rejected) = (true, None);
        let mut new_movements = Vec::new();
        for account in &link.accounts {
            let (kind, status, movements, public_error) = match &account.outcome {
                Outcome::Succeed { new_movements } => {
                    ("succeeded", "succeeded", *new_movements, Value::Null)
                }
                Outcome::Fail { public_error } => ("failed", "failed", 0, json!(public_error)),
                Outcome::Reject | Outcome::RejectUnconfirmed => (
                    "rejected",
                    "rejected",
                    0,
                    json!("The institution indicated that the credentials are invalid"),
                ),
                Outcome::Silent => {
                    all_ok = false;
                    continue;
                }
                Outcome::Dropped => ("succeeded", "succeeded", 1, Value::Null),
            };
            all_ok &= status == "succeeded";
            // A confirmed rejection outweighs an unconfirmed one.
            rejected = match (&account.outcome, rejected) {
                (Outcome::Reject, _) => Some(Rejection::Confirmed),
                (Outcome::RejectUnconfirmed, None) => {
                    Some(Rejection::Unconfirmed { at_ms: now_ms })
                }
                (_, kept) => kept,
            };
            if movements > 0 {
                new_movements.push((account.id.clone(), movements));
            }
            let id = new_id("evt");
            let body = json!({
                "id": id,
                "type": format!("account.refresh_intent.{kind}"),
                "mode": mode,
                "created_at": format_rfc3339_ms(now_ms),
                "data": {
                    "object": "refresh_intent",
                    "refreshed_object": "account",
                    "refreshed_object_id": account.id,
                    "status": status,
                    "public_error": public_error,
                    "created_at": format_rfc3339_ms(intent.created_at_ms),
                    "type": intent.refresh_type.as_str(),
                    "new_movements": movements,
                },
                "object": "event",
            });
            events.push(Event {
                id,
                event_type: format!("account.refresh_intent.{kind}"),
                body: body.to_string(),
                deliver: account.outcome != Outcome::Dropped,
            });
        }
        link.in_progress = None;
        if rejected.is_some() {
            link.rejection = rejected;
        }
        let status = if rejected.is_some() {
            "rejected"
        } else if all_ok {
            link.last_success
                .insert(intent.refresh_type.as_str(), now_ms);
            "succeeded"
        } else {
            "failed"
        };
        if let Some(i) = self.intents.iter_mut().find(|i| i.id == intent_id) {
            i.status = status;
        }
        for (account, count) in new_movements {
            let list = self.movements.entry(account).or_default();
            let start = list.len();
            list.extend((start..start + count as usize).map(|n| movement(n, 0, now_ms)));
        }
        if reorder {
            events.reverse();
        }
        self.events.extend(events.iter().cloned());
        events
    }
}

/// A deterministic movement `n`, posted `age_ms` before `now_ms`.
fn movement(n: usize, age_ms: Millis, now_ms: Millis) -> Value {
    let posted = format_rfc3339_ms(now_ms - age_ms);
    let amount = if n.is_multiple_of(3) {
        -((n as i64 + 1) * 1_250)
    } else {
        (n as i64 + 1) * 3_100
    };
    json!({
        "id": new_id("mov"),
        "object": "movement",
        "amount": amount,
        "currency": "CLP",
        "description": if amount < 0 { "Pago con tarjeta" } else { "Transferencia recibida" },
        "post_date": format!("{}T00:00:00Z", &posted[..10]),
        "transaction_date": posted,
        "type": if n.is_multiple_of(2) { "transfer" } else { "other" },
        "pending": false,
        "status": "confirmed",
        "reference_id": format!("{:08}", 40_000 + n),
        "comment": null,
        "sender_account": null,
        "recipient_account": null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

        let (mut s, info) =
            state_with(vec![Outcome::Reject, Outcome::Succeed { new_movements: 0 }]);
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
}
