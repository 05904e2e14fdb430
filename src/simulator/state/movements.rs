//! Movements: Fintoc's Movement object, adding an account's new ones, and the listing rules of
//! `GET /v1/accounts/{id}/movements` (since / until on `post_date`, `confirmed_only`, newest
//! first), plus the one-shot "a movement lands mid-read" page shift.

use serde_json::{Value, json};

use super::{State, new_id};
use crate::clock::{Millis, format_rfc3339_ms, parse_rfc3339_ms};

/// What a movements listing asks for (already validated by the HTTP layer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementQuery {
    /// `YYYY-MM-DD`: movements posted that day or later.
    pub since: Option<String>,
    /// `YYYY-MM-DD`: movements posted before that day (exclusive, as Fintoc documents).
    pub until: Option<String>,
    /// Fintoc's default: only `confirmed` movements; false adds `pending`, `reversed` and
    /// `duplicated` ones.
    pub confirmed_only: bool,
}

impl Default for MovementQuery {
    fn default() -> MovementQuery {
        MovementQuery {
            since: None,
            until: None,
            confirmed_only: true,
        }
    }
}

/// The `YYYY-MM-DD` a movement was posted on.
pub(super) fn post_day(movement: &Value) -> &str {
    let date = movement["post_date"].as_str().unwrap_or_default();
    date.get(..10).unwrap_or(date)
}

impl State {
    /// Adds `count` movements posted at `now_ms` to the account, the newest `pending` of them
    /// still pending; returns them.
    pub fn add_movements(
        &mut self,
        account_id: &str,
        count: u32,
        pending: u32,
        now_ms: Millis,
    ) -> Vec<Value> {
        let list = self.movements.entry(account_id.to_owned()).or_default();
        let start = list.len();
        let confirmed = count.saturating_sub(pending) as usize;
        let added: Vec<Value> = (0..count as usize)
            .map(|i| movement(start + i, now_ms, i >= confirmed))
            .collect();
        list.extend(added.iter().cloned());
        added
    }

    /// The account's movements as Fintoc lists them: filtered by `query`, newest `post_date`
    /// first and, within a day, the newest created first (so the order is stable between
    /// pages as long as nothing new lands).
    pub fn list_movements(&self, account_id: &str, query: &MovementQuery) -> Vec<Value> {
        let mut items: Vec<&Value> = self
            .movements
            .get(account_id)
            .into_iter()
            .flatten()
            .rev()
            .filter(|m| {
                let day = post_day(m);
                query.since.as_deref().is_none_or(|s| day >= s)
                    && query.until.as_deref().is_none_or(|u| day < u)
                    && (!query.confirmed_only || m["status"] == "confirmed")
            })
            .collect();
        // Stable: equal days keep the newest-created-first order from `rev()`.
        items.sort_by(|a, b| post_day(b).cmp(post_day(a)));
        items.into_iter().cloned().collect()
    }

    /// Arms a one-shot shift: the next request for `page` of the account's movements first
    /// gets one new confirmed movement, posted no earlier than any other, so offset pages move
    /// by one as they do at Fintoc when a movement lands while a client is reading.
    pub fn shift_on_page(&mut self, account_id: &str, page: u32) {
        self.shifts.push((account_id.to_owned(), page));
    }

    /// Fires the shift armed for this page, if any; true when a movement was added.
    pub fn take_shift(&mut self, account_id: &str, page: u32, now_ms: Millis) -> bool {
        let Some(i) = self
            .shifts
            .iter()
            .position(|(a, p)| a == account_id && *p == page)
        else {
            return false;
        };
        self.shifts.remove(i);
        let list = self.movements.entry(account_id.to_owned()).or_default();
        let newest = list
            .iter()
            .filter_map(|m| m["post_date"].as_str().and_then(parse_rfc3339_ms))
            .max()
            .unwrap_or(now_ms);
        list.push(movement(list.len(), now_ms.max(newest), false));
        true
    }
}

/// Counterparties some transfers name, as Fintoc's Transfer Account object.
const COUNTERPARTIES: [(&str, &str, &str, &str, &str); 3] = [
    (
        "771433855",
        "Comercial Los Andes SpA",
        "000012345678",
        "cl_banco_santander",
        "Banco Santander",
    ),
    (
        "183456789",
        "María José Pérez",
        "000098765432",
        "cl_banco_estado",
        "BancoEstado",
    ),
    (
        "965432107",
        "Servicios Australes Ltda",
        "000045678901",
        "cl_banco_bci",
        "Banco BCI",
    ),
];

/// The description a pending movement shows until the bank confirms it.
pub(super) const PENDING_SUFFIX: &str = " (en proceso)";

/// Movement `n` of an account (deterministic but for its random id), posted on `posted_ms`'s
/// day (UTC); `pending` ones have `status: "pending"` and say so in their description.
pub(super) fn movement(n: usize, posted_ms: Millis, pending: bool) -> Value {
    let posted = format_rfc3339_ms(posted_ms);
    let amount = if n.is_multiple_of(3) {
        -((n as i64 + 1) * 1_250)
    } else {
        (n as i64 + 1) * 3_100
    };
    let transfer = n.is_multiple_of(2);
    let description = match (transfer, amount < 0) {
        (true, true) => "Transferencia a terceros",
        (true, false) => "Transferencia recibida",
        (false, true) => "Pago con tarjeta",
        (false, false) => "Abono",
    };
    // Every other transfer names its counterparty: the sender of money in, the recipient
    // of money out; the rest carry null, as many Fintoc movements do.
    let counterparty = (transfer && n.is_multiple_of(4)).then(|| {
        let (holder_id, holder_name, number, id, name) = COUNTERPARTIES[n / 4 % 3];
        json!({"holder_id": holder_id, "holder_name": holder_name, "number": number,
               "institution": {"id": id, "country": "cl", "name": name}})
    });
    let (sender, recipient) = match counterparty {
        Some(c) if amount < 0 => (Value::Null, c),
        Some(c) => (c, Value::Null),
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": new_id("mov"),
        "object": "movement",
        "amount": amount,
        "currency": "CLP",
        "description": if pending { format!("{description}{PENDING_SUFFIX}") } else { description.to_owned() },
        "post_date": format!("{}T00:00:00Z", &posted[..10]),
        "transaction_date": posted,
        "type": if transfer { "transfer" } else { "other" },
        "pending": pending,
        "status": if pending { "pending" } else { "confirmed" },
        "reference_id": format!("{:08}", 40_000 + n),
        "comment": transfer.then(|| format!("Factura {}", 1_000 + n)),
        "sender_account": sender,
        "recipient_account": recipient,
    })
}
