//! Property tests for the two parsers that see attacker-controlled bytes: the
//! `Fintoc-Signature` verifier and the event decoder. They run in plain `cargo test`, since CI
//! cannot run libFuzzer (fuzz/ explores the same ground for longer, by hand). Every property
//! uses a fixed seed, so each run tries the same cases and a failure reproduces exactly; case
//! counts keep the whole file within a few seconds in a debug build.

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config, RngSeed};

use super::event::{Decoded, FAILED, REJECTED, SUCCEEDED, decode};
use super::signature::{SignatureError, TOLERANCE_SECS, header, sign, verify};
use crate::domain::ResultStatus;
use crate::secret::Secret;

fn config(cases: u32) -> Config {
    Config {
        cases,
        rng_seed: RngSeed::Fixed(0xF1_7C0C),
        ..Config::default()
    }
}

fn secrets(list: &[&str]) -> Vec<Secret> {
    list.iter().map(|s| Secret::new(*s)).collect()
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..400)
}

/// Any key, not only `whsec_…` ASCII: the key is the secret's UTF-8 bytes, whatever they are.
fn secret() -> impl Strategy<Value = String> {
    prop_oneof!["whsec_[A-Za-z0-9]{8,32}", any::<String>()]
}

/// From the epoch to the last second whose whole window still fits in an i64.
fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        1_600_000_000i64..2_200_000_000,
        0..=i64::MAX - TOLERANCE_SECS,
    ]
}

/// What an HTTP header value may hold, plus the shapes that stress this parser in particular.
fn hostile_header() -> impl Strategy<Value = String> {
    let part = prop_oneof![
        Just(String::new()),
        Just(" ".to_owned()),
        "t=[0-9]{0,25}",
        "t=-?[0-9 ]{0,12}",
        "v1=[0-9a-fA-F]{0,70}",
        "v[0-9]=[ -~]{0,10}",
        "[ -~]{0,12}",
        "\\PC{0,12}",
        Just("=".to_owned()),
        Just("\u{3000}t\u{00a0}=\u{2003}1".to_owned()),
    ];
    prop_oneof![
        any::<String>(),
        "[ -~]{0,200}",
        prop::collection::vec(part, 0..40).prop_map(|parts| parts.join(",")),
        (0usize..6000).prop_map(|n| ",".repeat(n)),
        (0usize..300).prop_map(|n| format!("t=1700000000{}", ",v1=".repeat(n))),
        (0usize..40, any::<bool>()).prop_map(|(n, pad)| {
            let v1 = format!(",v1={}", "ab".repeat(32));
            let filler = if pad { "x".repeat(4000) } else { String::new() };
            format!("t=1700000000{}{filler}", v1.repeat(n))
        }),
    ]
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn signed_bodies_are_accepted_within_the_window(
        body in body(),
        secret in secret(),
        t in timestamp(),
        skew in -TOLERANCE_SECS..=TOLERANCE_SECS,
    ) {
        let h = header(&secret, t, &body);
        prop_assert_eq!(verify(Some(&h), &body, &secrets(&[&secret]), t + skew), Ok(()));
    }

    #[test]
    fn any_change_to_one_body_byte_is_refused(
        body in prop::collection::vec(any::<u8>(), 1..400),
        secret in secret(),
        t in timestamp(),
        at in any::<Index>(),
        flip in 1u8..=255,
    ) {
        let h = header(&secret, t, &body);
        let mut tampered = body.clone();
        tampered[at.index(body.len())] ^= flip;
        prop_assert_eq!(
            verify(Some(&h), &tampered, &secrets(&[&secret]), t),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn any_change_to_one_signature_byte_is_refused_unless_only_its_case_changed(
        body in body(),
        secret in secret(),
        t in timestamp(),
        at in 0usize..64,
        new in 0x20u8..0x7f,
    ) {
        let v1 = sign(&secret, t, &body);
        let old = v1.as_bytes()[at];
        prop_assume!(new != old);
        let mut bytes = v1.into_bytes();
        bytes[at] = new;
        let h = format!("t={t},v1={}", String::from_utf8(bytes).unwrap());
        let got = verify(Some(&h), &body, &secrets(&[&secret]), t);
        // Hex is case-insensitive: `a` -> `A` is the same signature, not a forgery.
        if new.to_ascii_lowercase() == old {
            prop_assert_eq!(got, Ok(()));
        } else {
            prop_assert!(got.is_err(), "{h} accepted");
        }
    }

    #[test]
    fn any_change_to_one_timestamp_byte_is_refused(
        body in body(),
        secret in secret(),
        t in timestamp(),
        at in any::<Index>(),
        new in 0x20u8..0x7f,
    ) {
        let v1 = sign(&secret, t, &body);
        let text = t.to_string();
        let at = at.index(text.len());
        prop_assume!(new != text.as_bytes()[at]);
        let mut changed = text.clone().into_bytes();
        changed[at] = new;
        let changed = String::from_utf8(changed).unwrap();
        let got = verify(Some(&format!("t={changed},v1={v1}")), &body, &secrets(&[&secret]), t);
        prop_assert!(got.is_err(), "t={changed} accepted for t={text}");
        // Another number close enough is judged by its signature, one far off by the window.
        if let Some(moved) = changed.parse::<i64>().ok().filter(|_| new.is_ascii_digit()) {
            let want = if moved.abs_diff(t) > TOLERANCE_SECS as u64 {
                SignatureError::OutsideWindow
            } else {
                SignatureError::Mismatch
            };
            prop_assert_eq!(got, Err(want));
        }
    }

    #[test]
    fn timestamps_beyond_the_window_are_refused_either_way(
        body in body(),
        secret in secret(),
        t in 1_000_000i64..4_000_000_000,
        beyond in TOLERANCE_SECS + 1..1_000_000,
        late in any::<bool>(),
    ) {
        let h = header(&secret, t, &body);
        let now = if late { t + beyond } else { t - beyond };
        prop_assert_eq!(
            verify(Some(&h), &body, &secrets(&[&secret]), now),
            Err(SignatureError::OutsideWindow)
        );
    }

    /// The clock is ours, but a misconfigured one must still get a clean answer, and at the
    /// extremes `now - t` does not fit in an i64.
    #[test]
    fn any_clock_reading_gets_a_clean_answer(
        t in prop_oneof![0..=i64::MAX, Just(i64::MAX), Just(0)],
        now in prop_oneof![any::<i64>(), Just(i64::MIN), Just(i64::MAX), Just(-1)],
    ) {
        let h = header("whsec_x", t, b"{}");
        let want = if now.abs_diff(t) > TOLERANCE_SECS as u64 {
            Err(SignatureError::OutsideWindow)
        } else {
            Ok(())
        };
        prop_assert_eq!(verify(Some(&h), b"{}", &secrets(&["whsec_x"]), now), want);
    }

    #[test]
    fn hostile_headers_never_panic_and_never_pass(
        h in hostile_header(),
        body in body(),
        now in prop_oneof![Just(1_700_000_000i64), any::<i64>()],
    ) {
        // No secret can make a random header right, so anything but a refusal is a forgery.
        prop_assert!(verify(Some(&h), &body, &secrets(&["whsec_x", ""]), now).is_err());
        prop_assert!(verify(Some(&h), &body, &[], now).is_err());
    }

    #[test]
    fn rotation_accepts_exactly_when_one_pair_matches(
        configured in prop::collection::vec("whsec_[a-z0-9]{1,12}", 1..4),
        signer_is_configured in any::<bool>(),
        which in any::<Index>(),
        decoys in prop::collection::vec(prop::array::uniform32(any::<u8>()), 0..10),
        include_real in any::<bool>(),
        position in any::<Index>(),
        body in body(),
        t in timestamp(),
    ) {
        let signer = if signer_is_configured {
            configured[which.index(configured.len())].clone()
        } else {
            // Longer than every configured secret, so it is none of them.
            format!("{}_rotated_out", configured.concat())
        };
        let mut v1s: Vec<String> = decoys.iter().map(hex::encode).collect();
        if include_real {
            v1s.insert(position.index(v1s.len() + 1), sign(&signer, t, &body));
        }
        let mut h = format!("t={t}");
        for v1 in &v1s {
            h.push_str(",v1=");
            h.push_str(v1);
        }
        let list: Vec<&str> = configured.iter().map(String::as_str).collect();
        let got = verify(Some(&h), &body, &secrets(&list), t);
        let want = if v1s.is_empty() {
            Err(SignatureError::NoSignature)
        } else if include_real && signer_is_configured {
            Ok(())
        } else {
            Err(SignatureError::Mismatch)
        };
        prop_assert_eq!(got, want);
    }
}

/// What a decoded event must satisfy whatever the bytes were: the store dedupes on the id
/// and pushes to the account, so an empty one would corrupt state rather than crash.
fn assert_consistent(decoded: &Decoded) {
    if let Some(id) = decoded.event_id() {
        assert!(!id.is_empty(), "{decoded:?}");
    }
    match decoded {
        Decoded::Result(e) => {
            assert!(!e.account_id.is_empty(), "{decoded:?}");
            assert_ne!(e.status, ResultStatus::TimedOut, "{decoded:?}");
        }
        Decoded::Movements(e) => {
            assert!(!e.account_id.is_empty(), "{decoded:?}");
        }
        Decoded::Other { event_type, .. } => {
            assert!(![SUCCEEDED, FAILED, REJECTED].contains(&event_type.as_str()));
        }
        Decoded::Unparseable { .. } => {}
    }
}

const SAMPLE_EVENTS: &[&str] = &[
    r#"{"id":"evt_sim0001","type":"account.refresh_intent.succeeded","mode":"test","created_at":"2025-01-01T00:00:05.000Z","data":{"object":"refresh_intent","refreshed_object":"account","refreshed_object_id":"acc_sim0001","status":"succeeded","public_error":null,"created_at":"2025-01-01T00:00:00.000Z","type":"only_last","new_movements":2},"object":"event"}"#,
    r#"{"id":"evt_1","type":"account.refresh_intent.failed","created_at":"2025-01-01T00:00:05Z","data":{"refreshed_object_id":"acc_1","public_error":{"code":"bank_down"},"type":"historical"}}"#,
    r#"{"id":"evt_2","type":"link.credentials_changed","data":{"id":"link_1","object":"link"}}"#,
    include_str!("testdata/node_sdk_payment_intent.json"),
];

/// One edit of a valid event: overwrite, insert or delete a byte, or cut the tail.
#[derive(Debug, Clone)]
enum Edit {
    Set(Index, u8),
    Insert(Index, u8),
    Delete(Index),
    Truncate(Index),
}

fn edit() -> impl Strategy<Value = Edit> {
    // JSON's structural bytes are where a decoder's assumptions break, so they are favoured.
    let byte = prop_oneof![
        any::<u8>(),
        prop::sample::select(b"{}[]\":,\\0-9e.n ".to_vec()),
    ];
    prop_oneof![
        (any::<Index>(), byte.clone()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<Index>(), byte).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<Index>().prop_map(Edit::Delete),
        any::<Index>().prop_map(Edit::Truncate),
    ]
}

fn apply(body: &mut Vec<u8>, edit: &Edit) {
    if body.is_empty() {
        return;
    }
    match *edit {
        Edit::Set(i, b) => {
            let i = i.index(body.len());
            body[i] = b;
        }
        Edit::Insert(i, b) => body.insert(i.index(body.len() + 1), b),
        Edit::Delete(i) => {
            body.remove(i.index(body.len()));
        }
        Edit::Truncate(i) => body.truncate(i.index(body.len())),
    }
}

/// A JSON value of a type chosen at random, for fields whose type a sender might get wrong.
fn any_json() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u32>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        Just(json!("")),
        "\\PC{0,12}".prop_map(Value::from),
        Just(json!([])),
        Just(json!({})),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        assert_consistent(&decode(&bytes));
    }

    #[test]
    fn decode_never_panics_on_edited_events(
        which in any::<Index>(),
        edits in prop::collection::vec(edit(), 1..8),
    ) {
        let mut body = SAMPLE_EVENTS[which.index(SAMPLE_EVENTS.len())].as_bytes().to_vec();
        for e in &edits {
            apply(&mut body, e);
        }
        assert_consistent(&decode(&body));
    }

    /// Built field by field, so the expected result is known: a result exactly when the id,
    /// type and account are all usable, and then with those very values.
    #[test]
    fn decode_reads_what_was_built(
        id in prop_oneof![Just(None), any_json().prop_map(Some), "evt_[A-Za-z0-9]{1,16}".prop_map(|s| Some(s.into()))],
        kind in prop::sample::select(vec![SUCCEEDED, FAILED, REJECTED, "link.created", ""]),
        account in prop_oneof![Just(None), any_json().prop_map(Some), "acc_\\PC{1,16}".prop_map(|s| Some(s.into()))],
        movements in prop_oneof![Just(None), any_json().prop_map(Some), any::<u32>().prop_map(|n| Some(n.into()))],
        extra in prop::collection::btree_map("[a-z_]{1,8}", any_json(), 0..4),
    ) {
        use serde_json::{Map, Value};
        let mut data = Map::new();
        for (k, v) in [("refreshed_object_id", &account), ("new_movements", &movements)] {
            if let Some(v) = v {
                data.insert(k.into(), v.clone());
            }
        }
        let mut envelope: Map<String, Value> = extra
            .into_iter()
            .filter(|(k, _)| !["id", "type", "created_at", "data"].contains(&k.as_str()))
            .collect();
        if let Some(id) = &id {
            envelope.insert("id".into(), id.clone());
        }
        envelope.insert("type".into(), kind.into());
        envelope.insert("data".into(), Value::Object(data));
        let body = serde_json::to_vec(&envelope).unwrap();
        let decoded = decode(&body);
        assert_consistent(&decoded);

        // An id of the wrong type sinks the whole envelope, type included.
        let envelope_reads = matches!(id, None | Some(Value::Null | Value::String(_)));
        let id = id.as_ref().and_then(Value::as_str).filter(|s| !s.is_empty());
        let account = account.as_ref().and_then(Value::as_str).filter(|s| !s.is_empty());
        let movements = match &movements {
            None | Some(Value::Null) => Some(0),
            Some(v) => v.as_u64().and_then(|n| u32::try_from(n).ok()),
        };
        prop_assert_eq!(decoded.event_id(), id);
        let is_result = [SUCCEEDED, FAILED, REJECTED].contains(&kind);
        match (&decoded, id, account, movements) {
            (Decoded::Result(e), Some(_), Some(account), Some(n)) if is_result => {
                prop_assert_eq!(&e.account_id, account);
                prop_assert_eq!(e.new_movements, n);
                prop_assert_eq!(decoded.event_type(), Some(kind));
            }
            (Decoded::Other { event_type, .. }, Some(_), _, _) if !is_result => {
                prop_assert_eq!(event_type.as_str(), kind);
            }
            (Decoded::Unparseable { event_type, .. }, _, _, _) => {
                let usable = id.is_some() && (!is_result || (account.is_some() && movements.is_some()));
                prop_assert!(!usable, "usable event left unparsed: {}", String::from_utf8_lossy(&body));
                prop_assert_eq!(event_type.as_deref(), envelope_reads.then_some(kind));
            }
            _ => prop_assert!(false, "{decoded:?} from {}", String::from_utf8_lossy(&body)),
        }
    }
}
