//! A bank movement as this service keeps and pushes it ([`Movement`]), read from Fintoc's JSON
//! leniently (fintoc-api.md §8.2: nulls become empty strings, unknown fields are ignored), and
//! what one Fintoc event changed in an account's movements ([`MovementsEntry`]), the payload of
//! a `movements` log entry.

use serde::{Deserialize, Deserializer, Serialize};

/// One movement. Its content (every field) is what "changed" is judged on.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movement {
    pub id: String,
    #[serde(default)]
    pub amount: i64,
    #[serde(default, deserialize_with = "text")]
    pub currency: String,
    #[serde(default, deserialize_with = "text")]
    pub description: String,
    #[serde(default, deserialize_with = "text")]
    pub post_date: String,
    #[serde(default, deserialize_with = "text")]
    pub transaction_date: String,
    #[serde(default, rename = "type", deserialize_with = "text")]
    pub kind: String,
    #[serde(default, deserialize_with = "text")]
    pub status: String,
    #[serde(default, deserialize_with = "flag")]
    pub pending: bool,
    #[serde(default, deserialize_with = "text")]
    pub reference_id: String,
    #[serde(default, deserialize_with = "text")]
    pub comment: String,
    #[serde(default)]
    pub sender_account: Option<TransferAccount>,
    #[serde(default)]
    pub recipient_account: Option<TransferAccount>,
}

/// The other side of a transfer. Fintoc nests the institution (`institution: {id, name}`);
/// it is kept flat here, as the wire message has it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct TransferAccount {
    pub holder_id: String,
    pub holder_name: String,
    pub number: String,
    pub institution_id: String,
    pub institution_name: String,
}

impl<'de> Deserialize<'de> for TransferAccount {
    /// Reads both Fintoc's nested shape and the flat one this service stores.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<TransferAccount, D::Error> {
        #[derive(Deserialize, Default)]
        struct Institution {
            #[serde(default, deserialize_with = "text")]
            id: String,
            #[serde(default, deserialize_with = "text")]
            name: String,
        }
        #[derive(Deserialize)]
        struct Wire {
            #[serde(default, deserialize_with = "text")]
            holder_id: String,
            #[serde(default, deserialize_with = "text")]
            holder_name: String,
            #[serde(default, deserialize_with = "text")]
            number: String,
            #[serde(default)]
            institution: Option<Institution>,
            #[serde(default, deserialize_with = "text")]
            institution_id: String,
            #[serde(default, deserialize_with = "text")]
            institution_name: String,
        }
        let w = Wire::deserialize(d)?;
        let institution = w.institution.unwrap_or_default();
        Ok(TransferAccount {
            holder_id: w.holder_id,
            holder_name: w.holder_name,
            number: w.number,
            institution_id: if w.institution_id.is_empty() {
                institution.id
            } else {
                w.institution_id
            },
            institution_name: if w.institution_name.is_empty() {
                institution.name
            } else {
                w.institution_name
            },
        })
    }
}

/// A string field that Fintoc may send as null (or, for ids, as a number).
fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(other) => other.to_string(),
    })
}

fn flag<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or(false))
}

impl Movement {
    /// A movement from Fintoc's JSON object; `None` without an `id`.
    pub fn from_fintoc(value: &serde_json::Value) -> Option<Movement> {
        let movement: Movement = serde_json::from_value(value.clone()).ok()?;
        (!movement.id.is_empty()).then_some(movement)
    }

    /// Its stored form (JSON of the normalized fields).
    pub fn to_stored(&self) -> String {
        serde_json::to_string(self).expect("a movement serializes")
    }

    /// Reads a stored form back.
    pub fn from_stored(text: &str) -> Result<Movement, serde_json::Error> {
        serde_json::from_str(text)
    }
}

/// What one Fintoc event changed in an account's movements: one `movements` log entry (an
/// event's changes may take several, at most [`MovementsEntry::MAX_MOVEMENTS`] movements each,
/// the last one `complete`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MovementsEntry {
    #[serde(default)]
    pub added: Vec<Movement>,
    #[serde(default)]
    pub modified: Vec<Movement>,
    #[serde(default)]
    pub removed_ids: Vec<String>,
    #[serde(default)]
    pub complete: bool,
}

impl MovementsEntry {
    /// Movements (and removed ids) one message carries at most.
    pub const MAX_MOVEMENTS: usize = 500;
}

/// Why an account's movements were not pushed (`movements_unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The Link's token is not kept here.
    TokenNotKept,
    /// Fintoc refused the kept token; it was dropped.
    LinkTokenInvalid,
    /// Fintoc kept failing, after retries.
    FetchFailed,
}

impl Unavailable {
    pub fn as_str(self) -> &'static str {
        match self {
            Unavailable::TokenNotKept => "TOKEN_NOT_KEPT",
            Unavailable::LinkTokenInvalid => "LINK_TOKEN_INVALID",
            Unavailable::FetchFailed => "FETCH_FAILED",
        }
    }

    pub fn parse(s: &str) -> Option<Unavailable> {
        [
            Unavailable::TokenNotKept,
            Unavailable::LinkTokenInvalid,
            Unavailable::FetchFailed,
        ]
        .into_iter()
        .find(|u| u.as_str() == s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_fintocs_shape_with_nulls_and_nested_institutions() {
        let m = Movement::from_fintoc(&json!({
            "id": "mov_1", "object": "movement", "amount": -1250, "currency": "CLP",
            "description": "Pago", "post_date": "2026-12-01T00:00:00Z", "transaction_date": null,
            "type": "transfer", "pending": false, "status": "confirmed", "reference_id": null,
            "comment": null, "sender_account": null,
            "recipient_account": {"holder_id": "1", "holder_name": "Ana", "number": "123",
                                  "institution": {"id": "cl_banco", "country": "cl", "name": "Banco"}}
        }))
        .unwrap();
        assert_eq!(m.amount, -1250);
        assert_eq!(m.transaction_date, "");
        assert_eq!(m.kind, "transfer");
        let r = m.recipient_account.clone().unwrap();
        assert_eq!(
            (r.institution_id.as_str(), r.institution_name.as_str()),
            ("cl_banco", "Banco")
        );
        assert_eq!(Movement::from_stored(&m.to_stored()).unwrap(), m);
        assert!(Movement::from_fintoc(&json!({"amount": 1})).is_none());
    }
}
