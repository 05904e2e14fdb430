//! Links and their accounts: adding a Link (its accounts and their movements), finding it by
//! token or id, reconnecting a rejected one and revoking a token.

use std::collections::HashMap;

use super::Account;
use super::movements::movement;
use super::{Link, State, new_id};
use crate::simulator::{LinkSpec, SimLinkInfo};

/// When the seeded movements and the Links were created (2023-11-14).
const SEEDED_AT_MS: i64 = 1_700_000_000_000;

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
                .map(|n| movement(n, SEEDED_AT_MS - 86_400_000 * (60 - n as i64 / 2), false))
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
            revoked: false,
            in_progress: None,
            last_success: HashMap::new(),
            created_at_ms: SEEDED_AT_MS,
        });
        info
    }

    /// The Link whose token this is, unless that token was revoked.
    pub fn link_by_token(&self, token: &str) -> Option<&Link> {
        self.links.iter().find(|l| l.token == token && !l.revoked)
    }

    pub fn link_mut(&mut self, link_id: &str) -> Option<&mut Link> {
        self.links.iter_mut().find(|l| l.id == link_id)
    }

    pub fn reconnect(&mut self, link_id: &str) {
        if let Some(link) = self.link_mut(link_id) {
            link.rejection = None;
        }
    }

    /// From now on the Link's token is refused everywhere, as Fintoc refuses the token of a
    /// deleted Link.
    pub fn revoke(&mut self, link_id: &str) {
        if let Some(link) = self.link_mut(link_id) {
            link.revoked = true;
        }
    }
}
