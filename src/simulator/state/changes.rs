//! What happens to an account's movements outside the refreshes the service asks for, each
//! with the event Fintoc sends about it: pending movements confirmed by the bank
//! (`movements_modified`), movements the bank took back (`movements_removed`), and Fintoc's
//! own recurring refreshes (`succeeded` events no refresh intent of ours asked for).

use serde_json::{Value, json};

use super::intents::result_data;
use super::movements::PENDING_SUFFIX;
use super::{Event, State};
use crate::clock::Millis;

impl State {
    /// Confirms the account's pending movements (`status: "confirmed"`, `pending: false`,
    /// the description the bank settles on) and records one
    /// `account.refresh_intent.movements_modified` event about them, shaped as Fintoc's
    /// changelog shows: `{"account_id", "movements_changed": [Movement…]}` with the movements
    /// as they are now. None when nothing was pending.
    pub fn confirm_pending(&mut self, account_id: &str, now_ms: Millis) -> Option<Event> {
        let list = self.movements.get_mut(account_id)?;
        let mut changed = Vec::new();
        for m in list.iter_mut().filter(|m| m["status"] == "pending") {
            m["status"] = json!("confirmed");
            m["pending"] = json!(false);
            if let Some(settled) = m["description"]
                .as_str()
                .and_then(|d| d.strip_suffix(PENDING_SUFFIX))
            {
                m["description"] = json!(settled);
            }
            changed.push(m.clone());
        }
        if changed.is_empty() {
            return None;
        }
        let data = json!({"account_id": account_id, "movements_changed": changed});
        Some(self.record("account.refresh_intent.movements_modified", data, now_ms))
    }

    /// Removes these movements (unknown ids are ignored) and records one
    /// `account.refresh_intent.movements_removed` event. Fintoc lists that event type but
    /// does not document its payload; we model it like `movements_modified`:
    /// `{"account_id", "movements_removed": [Movement…]}`, each movement whole, as it was
    /// before it was removed. None when none of the ids was the account's.
    pub fn remove_movements(
        &mut self,
        account_id: &str,
        ids: &[String],
        now_ms: Millis,
    ) -> Option<Event> {
        let list = self.movements.get_mut(account_id)?;
        let (removed, kept): (Vec<Value>, Vec<Value>) =
            std::mem::take(list).into_iter().partition(|m| {
                m["id"]
                    .as_str()
                    .is_some_and(|id| ids.iter().any(|i| i == id))
            });
        *list = kept;
        if removed.is_empty() {
            return None;
        }
        let data = json!({"account_id": account_id, "movements_removed": removed});
        Some(self.record("account.refresh_intent.movements_removed", data, now_ms))
    }

    /// Fintoc's recurring refresh of a Link: every account gets `new_movements` confirmed
    /// movements and an `account.refresh_intent.succeeded` event (`type: "only_last"`, created
    /// now) that no refresh intent asked for. Nothing for an unknown, revoked or inactive Link
    /// (Fintoc does not refresh inactive Links).
    pub fn scheduled_refresh(
        &mut self,
        link_id: &str,
        new_movements: u32,
        now_ms: Millis,
    ) -> Vec<Event> {
        let Some(link) = self.links.iter().find(|l| l.id == link_id) else {
            return Vec::new();
        };
        if link.revoked || !link.active {
            return Vec::new();
        }
        let accounts: Vec<String> = link.accounts.iter().map(|a| a.id.clone()).collect();
        accounts
            .iter()
            .map(|account| {
                self.add_movements(account, new_movements, 0, now_ms);
                let data = result_data(
                    account,
                    "succeeded",
                    Value::Null,
                    now_ms,
                    "only_last",
                    new_movements,
                );
                self.record("account.refresh_intent.succeeded", data, now_ms)
            })
            .collect()
    }

    /// The Links Fintoc's recurring refreshes visit: active, token valid, credentials not
    /// rejected.
    pub fn scheduled_links(&self) -> Vec<String> {
        self.links
            .iter()
            .filter(|l| l.active && !l.revoked && l.rejection.is_none())
            .map(|l| l.id.clone())
            .collect()
    }

    /// A new event, stored (so `/v2/events` lists it) and returned for delivery.
    fn record(&mut self, event_type: &str, data: Value, now_ms: Millis) -> Event {
        let event = Event::new(self.mode, event_type, data, now_ms);
        self.events.push(event.clone());
        event
    }
}
