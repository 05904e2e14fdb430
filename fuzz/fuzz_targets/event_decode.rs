//! Fuzz target `event_decode`: `fintoc::event::decode` never panics on any bytes, and what it
//! returns is internally consistent and agrees with a plain `serde_json::Value` reading of the
//! same body. The store and the metrics trust these invariants (an id to dedupe on, an
//! account to push to, a bounded label), so a decoded value that broke one would corrupt
//! state rather than crash.

#![no_main]

use fintoc_refresh::domain::ResultStatus;
use fintoc_refresh::fintoc::event::{Decoded, FAILED, REJECTED, SUCCEEDED, decode, type_label};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

const RESULT_TYPES: [&str; 3] = [SUCCEEDED, FAILED, REJECTED];

fn str_at<'a>(value: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter()
        .try_fold(value, |v, key| v.get(key))
        .and_then(Value::as_str)
}

fuzz_target!(|body: &[u8]| {
    let decoded = decode(body);
    assert_eq!(
        decode(body),
        decoded,
        "decode is not a function of the bytes"
    );

    if let Some(id) = decoded.event_id() {
        assert!(!id.is_empty(), "empty event id: {decoded:?}");
    }
    let label = type_label(decoded.event_type());
    match &decoded {
        Decoded::Result(e) => {
            assert!(!e.account_id.is_empty(), "empty account id: {decoded:?}");
            assert_ne!(e.status, ResultStatus::TimedOut, "Fintoc has no such event");
            let kind = decoded.event_type().expect("a result has a type");
            assert!(RESULT_TYPES.contains(&kind), "{decoded:?}");
            assert_eq!(label, kind);
        }
        Decoded::Other { event_type, .. } => {
            // A result type that did not decode as a result must be Unparseable, never
            // acknowledged as an ignorable "other" event.
            assert!(!RESULT_TYPES.contains(&event_type.as_str()), "{decoded:?}");
        }
        Decoded::Unparseable { .. } => {}
    }

    // serde_json's own tree must see the same id, type and account. Bodies it refuses (say,
    // nesting past its depth limit inside an ignored field) have nothing to compare with.
    let Ok(tree) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    if let Some(id) = decoded.event_id() {
        assert_eq!(str_at(&tree, &["id"]), Some(id), "{decoded:?}");
    }
    if let Some(kind) = match &decoded {
        Decoded::Result(_) => None, // checked through the status above and the data below
        Decoded::Other { event_type, .. } => Some(event_type.as_str()),
        Decoded::Unparseable { event_type, .. } => event_type.as_deref(),
    } {
        assert_eq!(str_at(&tree, &["type"]), Some(kind), "{decoded:?}");
    }
    if let Decoded::Result(e) = &decoded {
        assert_eq!(str_at(&tree, &["type"]), decoded.event_type());
        assert_eq!(
            str_at(&tree, &["data", "refreshed_object_id"]),
            Some(e.account_id.as_str())
        );
        let movements = tree["data"].get("new_movements").and_then(Value::as_u64);
        assert_eq!(movements.unwrap_or(0), u64::from(e.new_movements));
    }
});
