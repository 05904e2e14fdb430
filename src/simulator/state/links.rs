//! Links and their accounts: adding a Link (its accounts and their movements), finding it by
//! token or id, and reconnecting a rejected one.

use std::collections::HashMap;

use serde_json::{Value, json};

use super::Account;
use super::{Link, State, new_id};
use crate::clock::{Millis, format_rfc3339_ms};
use crate::simulator::{LinkSpec, SimLinkInfo};

impl State {
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
}

/// A deterministic movement `n`, posted `age_ms` before `now_ms`.
pub(super) fn movement(n: usize, age_ms: Millis, now_ms: Millis) -> Value {
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
