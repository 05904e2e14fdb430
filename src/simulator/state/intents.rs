//! Refresh intents: whether a refresh may start (cooldown, a rejected Link), creating an
//! intent, and running it into account results and events.

use serde_json::{Value, json};

use super::UNCONFIRMED_REJECTION_WAIT_MS;
use super::{Event, Intent, Link, Outcome, Rejection, State, new_id};
use crate::clock::{Millis, format_rfc3339_ms};
use crate::domain::RefreshType;
use crate::domain::policy::cooldown_for;

impl State {
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
            let (kind, status, movements, pending, public_error) = match &account.outcome {
                Outcome::Succeed { new_movements } => {
                    ("succeeded", "succeeded", *new_movements, 0, Value::Null)
                }
                Outcome::SucceedWithPending {
                    new_movements,
                    pending,
                } => (
                    "succeeded",
                    "succeeded",
                    *new_movements,
                    (*pending).min(*new_movements),
                    Value::Null,
                ),
                Outcome::Fail { public_error } => ("failed", "failed", 0, 0, json!(public_error)),
                Outcome::Reject | Outcome::RejectUnconfirmed => (
                    "rejected",
                    "rejected",
                    0,
                    0,
                    json!("The institution indicated that the credentials are invalid"),
                ),
                Outcome::Silent => {
                    all_ok = false;
                    continue;
                }
                Outcome::Dropped => ("succeeded", "succeeded", 1, 0, Value::Null),
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
                new_movements.push((account.id.clone(), movements, pending));
            }
            let data = result_data(
                &account.id,
                status,
                public_error,
                intent.created_at_ms,
                intent.refresh_type.as_str(),
                movements,
            );
            let mut event = Event::new(
                mode,
                &format!("account.refresh_intent.{kind}"),
                data,
                now_ms,
            );
            event.deliver = account.outcome != Outcome::Dropped;
            events.push(event);
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
        for (account, count, pending) in new_movements {
            self.add_movements(&account, count, pending, now_ms);
        }
        if reorder {
            events.reverse();
        }
        self.events.extend(events.iter().cloned());
        events
    }
}

/// The `data` of an account's refresh result event (`account.refresh_intent.*`), as Fintoc
/// documents it: no `id`, so it cannot be joined to the intent that asked for it.
pub(super) fn result_data(
    account_id: &str,
    status: &str,
    public_error: Value,
    created_at_ms: Millis,
    refresh_type: &str,
    new_movements: u32,
) -> Value {
    json!({
        "object": "refresh_intent",
        "refreshed_object": "account",
        "refreshed_object_id": account_id,
        "status": status,
        "public_error": public_error,
        "created_at": format_rfc3339_ms(created_at_ms),
        "type": refresh_type,
        "new_movements": new_movements,
    })
}
