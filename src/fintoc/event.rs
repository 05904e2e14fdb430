//! Fintoc webhook event payloads, decoded leniently: unknown fields and new event types are
//! expected (Fintoc adds them without a version bump), so only what a result needs is read.
//! A body that cannot be understood is still kept verbatim by the caller.

use std::borrow::Cow;

use serde::Deserialize;

use crate::clock::{Millis, parse_rfc3339_ms};
use crate::domain::{Movement, RefreshType, ResultStatus};

/// One account's refresh result, as carried by an `account.refresh_intent.*` event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccountEvent {
    /// Fintoc's `evt_…` id.
    pub event_id: String,
    pub status: ResultStatus,
    pub account_id: String,
    pub new_movements: u32,
    /// Fintoc's `public_error`, as text ("" when null or absent).
    pub public_error: String,
    /// The event's `created_at`, when Fintoc produced the result.
    pub occurred_at_ms: Option<Millis>,
    pub refresh_type: Option<RefreshType>,
}

/// What an `account.refresh_intent.movements_modified` or `…movements_removed` event says
/// about one account's movements.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovementsEvent {
    pub event_id: String,
    pub account_id: String,
    pub change: MovementsChange,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MovementsChange {
    /// `movements_modified`: the movements as they now are (`data.movements_changed`).
    Modified(Vec<Movement>),
    /// `movements_removed`: the ids removed from the statement.
    Removed(Vec<String>),
}

/// What a signed webhook body turned out to be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An account refresh result: stored, correlated and pushed.
    Result(AccountEvent),
    /// Changed or removed movements of an account: stored, and pushed where its movements
    /// are kept.
    Movements(MovementsEvent),
    /// A well-formed event of a type we do not push (stored and acknowledged).
    Other {
        event_id: String,
        event_type: String,
    },
    /// Not understood: stored raw and acknowledged so Fintoc stops retrying, never pushed.
    Unparseable {
        event_id: Option<String>,
        event_type: Option<String>,
    },
}

impl Decoded {
    /// The Fintoc event id, when the body had one.
    pub fn event_id(&self) -> Option<&str> {
        match self {
            Decoded::Result(e) => Some(&e.event_id),
            Decoded::Movements(e) => Some(&e.event_id),
            Decoded::Other { event_id, .. } => Some(event_id),
            Decoded::Unparseable { event_id, .. } => event_id.as_deref(),
        }
    }

    pub fn event_type(&self) -> Option<&str> {
        match self {
            Decoded::Result(e) => Some(match e.status {
                ResultStatus::Succeeded => SUCCEEDED,
                ResultStatus::Failed => FAILED,
                ResultStatus::Rejected => REJECTED,
                ResultStatus::TimedOut => "timed_out",
            }),
            Decoded::Movements(e) => Some(match e.change {
                MovementsChange::Modified(_) => MOVEMENTS_MODIFIED,
                MovementsChange::Removed(_) => MOVEMENTS_REMOVED,
            }),
            Decoded::Other { event_type, .. } => Some(event_type),
            Decoded::Unparseable { event_type, .. } => event_type.as_deref(),
        }
    }
}

pub const SUCCEEDED: &str = "account.refresh_intent.succeeded";
pub const FAILED: &str = "account.refresh_intent.failed";
pub const REJECTED: &str = "account.refresh_intent.rejected";
pub const MOVEMENTS_MODIFIED: &str = "account.refresh_intent.movements_modified";
/// Fintoc does not document this event's payload (fintoc-api.md, open question 7). Read
/// only when it has the shape of its documented sibling, `movements_modified`:
/// `{"account_id": …, "movements_removed": [movement objects or ids]}`; anything else is
/// kept raw and acknowledged, never guessed at.
pub const MOVEMENTS_REMOVED: &str = "account.refresh_intent.movements_removed";

/// Event types we know by name; anything else is reported as "other" in metrics so a
/// hostile sender cannot mint unbounded label values.
const KNOWN_TYPES: &[&str] = &[
    SUCCEEDED,
    FAILED,
    REJECTED,
    MOVEMENTS_REMOVED,
    MOVEMENTS_MODIFIED,
    "link.refresh_intent.succeeded",
    "link.refresh_intent.failed",
    "link.credentials_changed",
    "link.created",
];

/// A bounded metrics label for an event type.
pub fn type_label(event_type: Option<&str>) -> &'static str {
    match event_type {
        None => "unparseable",
        Some(t) => KNOWN_TYPES
            .iter()
            .find(|k| **k == t)
            .copied()
            .unwrap_or("other"),
    }
}

#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, default)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow, rename = "type", default)]
    kind: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    created_at: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    data: Option<&'a serde_json::value::RawValue>,
}

#[derive(Deserialize)]
struct RefreshData<'a> {
    #[serde(borrow, default)]
    refreshed_object: Option<Cow<'a, str>>,
    #[serde(borrow)]
    refreshed_object_id: Cow<'a, str>,
    #[serde(default)]
    new_movements: Option<u32>,
    #[serde(default)]
    public_error: Option<serde_json::Value>,
    #[serde(borrow, rename = "type", default)]
    kind: Option<Cow<'a, str>>,
}

/// serde's derived structs also fill from a JSON array, field by field in order, so without
/// this `["evt_1","link.created"]` would pass for an event (and an array `data` for a
/// result). Fintoc's events and their `data` are objects; the first byte settles it.
fn is_object(json: &[u8]) -> bool {
    json.trim_ascii_start().first() == Some(&b'{')
}

/// Decodes a body whose signature has already been verified.
pub fn decode(body: &[u8]) -> Decoded {
    let env = if is_object(body) {
        serde_json::from_slice::<Envelope<'_>>(body).ok()
    } else {
        None
    };
    let Some(env) = env else {
        return Decoded::Unparseable {
            event_id: None,
            event_type: None,
        };
    };
    let event_id = env.id.filter(|id| !id.is_empty()).map(Cow::into_owned);
    let event_type = env.kind.map(Cow::into_owned);
    let (Some(id), Some(kind)) = (event_id.clone(), event_type.clone()) else {
        return Decoded::Unparseable {
            event_id,
            event_type,
        };
    };
    let status = match kind.as_str() {
        SUCCEEDED => ResultStatus::Succeeded,
        FAILED => ResultStatus::Failed,
        REJECTED => ResultStatus::Rejected,
        MOVEMENTS_MODIFIED | MOVEMENTS_REMOVED => {
            let data = env.data.map(|raw| raw.get()).unwrap_or("null");
            return match movements(&kind, data) {
                Some((account_id, change)) => Decoded::Movements(MovementsEvent {
                    event_id: id,
                    account_id,
                    change,
                }),
                None if kind == MOVEMENTS_REMOVED => Decoded::Other {
                    event_id: id,
                    event_type: kind,
                },
                None => Decoded::Unparseable {
                    event_id,
                    event_type,
                },
            };
        }
        _ => {
            return Decoded::Other {
                event_id: id,
                event_type: kind,
            };
        }
    };
    let data = env
        .data
        .filter(|raw| is_object(raw.get().as_bytes()))
        .and_then(|raw| serde_json::from_str::<RefreshData<'_>>(raw.get()).ok())
        .filter(|d| {
            !d.refreshed_object_id.is_empty()
                && d.refreshed_object.as_deref().is_none_or(|o| o == "account")
        });
    let Some(data) = data else {
        return Decoded::Unparseable {
            event_id,
            event_type,
        };
    };
    Decoded::Result(AccountEvent {
        event_id: id,
        status,
        account_id: data.refreshed_object_id.into_owned(),
        new_movements: data.new_movements.unwrap_or(0),
        public_error: match data.public_error {
            None | Some(serde_json::Value::Null) => String::new(),
            Some(serde_json::Value::String(s)) => s,
            Some(other) => other.to_string(),
        },
        occurred_at_ms: env.created_at.as_deref().and_then(parse_rfc3339_ms),
        refresh_type: data
            .kind
            .as_deref()
            .and_then(|k| RefreshType::parse(k).ok()),
    })
}

/// A movements event's account and change, when its `data` has the expected shape.
fn movements(kind: &str, data: &str) -> Option<(String, MovementsChange)> {
    if !is_object(data.as_bytes()) {
        return None;
    }
    let data: serde_json::Value = serde_json::from_str(data).ok()?;
    let account_id = data.get("account_id")?.as_str().filter(|a| !a.is_empty())?;
    let change = if kind == MOVEMENTS_MODIFIED {
        let list = data.get("movements_changed")?.as_array()?;
        MovementsChange::Modified(
            list.iter()
                .map(Movement::from_fintoc)
                .collect::<Option<Vec<_>>>()?,
        )
    } else {
        let list = data.get("movements_removed")?.as_array()?;
        MovementsChange::Removed(
            list.iter()
                .map(|m| {
                    m.as_str()
                        .or_else(|| m.get("id")?.as_str())
                        .filter(|id| !id.is_empty())
                        .map(str::to_owned)
                })
                .collect::<Option<Vec<_>>>()?,
        )
    };
    Some((account_id.to_owned(), change))
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOC_EXAMPLE: &str = r#"{"id":"evt_00000000","type":"account.refresh_intent.succeeded","mode":"live",
 "created_at":"2021-12-07T21:43:54.343Z",
 "data":{"object":"refresh_intent","refreshed_object":"account","refreshed_object_id":"acc_00000000",
         "status":"succeeded","public_error":null,"created_at":"2021-12-03T00:00:00.000Z",
         "type":"only_last","new_movements":5},
 "object":"event"}"#;

    #[test]
    fn decodes_the_documented_example() {
        let Decoded::Result(e) = decode(DOC_EXAMPLE.as_bytes()) else {
            panic!("not a result")
        };
        assert_eq!(e.event_id, "evt_00000000");
        assert_eq!(e.account_id, "acc_00000000");
        assert_eq!(e.status, ResultStatus::Succeeded);
        assert_eq!(e.new_movements, 5);
        assert_eq!(e.public_error, "");
        assert_eq!(e.refresh_type, Some(RefreshType::OnlyLast));
        assert_eq!(
            e.occurred_at_ms,
            parse_rfc3339_ms("2021-12-07T21:43:54.343Z")
        );
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases reads best inline
    fn decode_table() {
        let result = |t: &str, data: &str| {
            format!(
                r#"{{"id":"evt_1","type":"{t}","created_at":"2025-01-01T00:00:05Z","data":{data},"new_field":[1,2]}}"#
            )
        };
        let unparseable = |id: Option<&str>, t: Option<&str>| Decoded::Unparseable {
            event_id: id.map(str::to_owned),
            event_type: t.map(str::to_owned),
        };
        let table: Vec<(&str, String, Box<dyn Fn(&Decoded) -> bool>)> = vec![
            ("failed with a string error", result(FAILED, r#"{"refreshed_object":"account","refreshed_object_id":"acc_1","public_error":"bank down","extra":true}"#),
                Box::new(|d| matches!(d, Decoded::Result(e) if e.status == ResultStatus::Failed && e.public_error == "bank down" && e.new_movements == 0))),
            ("rejected with an object error", result(REJECTED, r#"{"refreshed_object_id":"acc_1","public_error":{"code":"invalid_credentials"}}"#),
                Box::new(|d| matches!(d, Decoded::Result(e) if e.status == ResultStatus::Rejected && e.public_error == r#"{"code":"invalid_credentials"}"#))),
            ("escaped strings", r#"{"id":"evt_\u0031","type":"account.refresh_intent.succeeded","data":{"refreshed_object_id":"acc_\"q\""}}"#.to_owned(),
                Box::new(|d| matches!(d, Decoded::Result(e) if e.event_id == "evt_1" && e.account_id == "acc_\"q\"" && e.occurred_at_ms.is_none()))),
            ("unknown type", result("link.credentials_changed", "{}"),
                Box::new(|d| *d == Decoded::Other { event_id: "evt_1".into(), event_type: "link.credentials_changed".into() })),
            ("result for a link, not an account", result(SUCCEEDED, r#"{"refreshed_object":"link","refreshed_object_id":"link_1"}"#),
                Box::new(move |d| *d == unparseable(Some("evt_1"), Some(SUCCEEDED)))),
            ("result without data", r#"{"id":"evt_1","type":"account.refresh_intent.failed"}"#.to_owned(),
                Box::new(move |d| *d == unparseable(Some("evt_1"), Some(FAILED)))),
            ("negative movements", result(SUCCEEDED, r#"{"refreshed_object_id":"acc_1","new_movements":-3}"#),
                Box::new(move |d| *d == unparseable(Some("evt_1"), Some(SUCCEEDED)))),
            ("no id", r#"{"type":"account.refresh_intent.failed","data":{}}"#.to_owned(),
                Box::new(move |d| *d == unparseable(None, Some(FAILED)))),
            ("id of the wrong type", r#"{"id":7,"type":"x"}"#.to_owned(), Box::new(move |d| *d == unparseable(None, None))),
            ("not json", "hello".to_owned(), Box::new(move |d| *d == unparseable(None, None))),
            ("json array", "[1]".to_owned(), Box::new(move |d| *d == unparseable(None, None))),
            // Found by fuzz/event_decode: serde fills structs from arrays too.
            ("array shaped like an event", r#"["evt_1","account.refresh_intent.succeeded",null,["account","acc_1",3]]"#.to_owned(),
                Box::new(move |d| *d == unparseable(None, None))),
            ("array shaped like an id", r#" ["i^"]"#.to_owned(), Box::new(move |d| *d == unparseable(None, None))),
            ("array shaped like result data", r#"{"id":"evt_1","type":"account.refresh_intent.succeeded","data":["account","acc_1",3]}"#.to_owned(),
                Box::new(move |d| *d == unparseable(Some("evt_1"), Some(SUCCEEDED)))),
            ("whitespace before the object", format!(" \n\t{}", result(SUCCEEDED, r#"{"refreshed_object_id":"acc_1"}"#)),
                Box::new(|d| matches!(d, Decoded::Result(e) if e.account_id == "acc_1"))),
        ];
        for (name, body, check) in table {
            let got = decode(body.as_bytes());
            assert!(check(&got), "{name}: {got:?}");
        }
    }

    #[test]
    fn movements_events_are_read_only_in_the_shapes_we_understand() {
        // fintoc-api.md §5.3, verbatim.
        let modified = r#"{"id":"evt_L0zlW5YvC6oZDweQ","type":"account.refresh_intent.movements_modified","mode":"live",
  "created_at":"2025-10-14T19:42:42.486Z","data":{"account_id":"acc_3gmPYoV3TrKbEp7q",
  "movements_changed":[{"id":"mov_6EdV8pvHZz3YR50g","type":"transfer","amount":110000,
  "status":"confirmed","currency":"CLP","post_date":"2025-09-29T00:00:00Z",
  "description":"...","pending":false}]},"object":"event"}"#;
        let Decoded::Movements(e) = decode(modified.as_bytes()) else {
            panic!("not read");
        };
        assert_eq!(e.account_id, "acc_3gmPYoV3TrKbEp7q");
        let MovementsChange::Modified(list) = &e.change else {
            panic!("{e:?}");
        };
        assert_eq!(
            (list[0].id.as_str(), list[0].amount),
            ("mov_6EdV8pvHZz3YR50g", 110000)
        );

        let removed = |data: &str| {
            decode(
                format!(r#"{{"id":"evt_r","type":"{MOVEMENTS_REMOVED}","data":{data}}}"#)
                    .as_bytes(),
            )
        };
        assert!(matches!(
            removed(r#"{"account_id":"acc_1","movements_removed":[{"id":"mov_1"},"mov_2"]}"#),
            Decoded::Movements(MovementsEvent { change: MovementsChange::Removed(ids), .. }) if ids == ["mov_1", "mov_2"]
        ));
        // Another shape: kept raw, acknowledged, never guessed at.
        for data in [
            r#"{"account_id":"acc_1","movement_ids":["mov_1"]}"#,
            r#"{"movements_removed":["mov_1"]}"#,
            "[1]",
        ] {
            assert_eq!(
                removed(data),
                Decoded::Other {
                    event_id: "evt_r".into(),
                    event_type: MOVEMENTS_REMOVED.into()
                },
                "{data}"
            );
        }
    }

    #[test]
    fn metric_labels_are_bounded() {
        assert_eq!(type_label(Some(SUCCEEDED)), SUCCEEDED);
        assert_eq!(type_label(Some("made.up.by.an.attacker")), "other");
        assert_eq!(type_label(None), "unparseable");
    }
}
