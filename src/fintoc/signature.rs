//! The `Fintoc-Signature` scheme: `t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>." + raw body`, keyed with the endpoint secret's UTF-8 bytes.
//!
//! Verification runs on the raw bytes before any parsing and is stricter and more tolerant
//! than Fintoc's own SDKs where it matters: the timestamp must be within ±300 s in *both*
//! directions (a future timestamp is as suspicious as an old one), several `v1` values and
//! several configured secrets are accepted (rotation), whitespace around parts is ignored,
//! unknown schemes are skipped, and comparisons are constant-time. `now` is passed in.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secret::Secret;

/// Fintoc's tolerance: signatures older (or newer) than this are refused.
pub const TOLERANCE_SECS: i64 = 300;
/// A real header is ~80 bytes; anything this long is not Fintoc and is refused unread.
const MAX_HEADER_LEN: usize = 4096;
/// Rotation needs two or three; a flood of candidates would only cost us CPU.
const MAX_SIGNATURES: usize = 16;

/// Why a signature was refused. Shown to nobody but our logs and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing Fintoc-Signature header")]
    Missing,
    #[error("malformed Fintoc-Signature header")]
    Malformed,
    #[error("no timestamp in Fintoc-Signature header")]
    NoTimestamp,
    #[error("no v1 signature in Fintoc-Signature header")]
    NoSignature,
    #[error("timestamp outside the tolerance window")]
    OutsideWindow,
    #[error("signature mismatch")]
    Mismatch,
}

impl SignatureError {
    /// A short stable label for metrics.
    pub fn label(self) -> &'static str {
        match self {
            SignatureError::Missing => "missing",
            SignatureError::Malformed => "malformed",
            SignatureError::NoTimestamp => "no_timestamp",
            SignatureError::NoSignature => "no_signature",
            SignatureError::OutsideWindow => "outside_window",
            SignatureError::Mismatch => "mismatch",
        }
    }
}

fn mac(secret: &[u8], timestamp: &str, body: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().into()
}

/// The `v1` value Fintoc would send for `body` signed at `timestamp` (lowercase hex).
pub fn sign(secret: &str, timestamp: i64, body: &[u8]) -> String {
    hex::encode(mac(secret.as_bytes(), &timestamp.to_string(), body))
}

/// A complete header value, as Fintoc sends it.
pub fn header(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, body))
}

/// The parts of a header that verification needs.
#[derive(Debug, PartialEq, Eq)]
struct Parsed<'a> {
    timestamp: &'a str,
    seconds: i64,
    signatures: Vec<[u8; 32]>,
}

fn parse(header: &str) -> Result<Parsed<'_>, SignatureError> {
    if header.trim().is_empty() {
        return Err(SignatureError::Missing);
    }
    if header.len() > MAX_HEADER_LEN {
        return Err(SignatureError::Malformed);
    }
    let mut timestamp = None;
    let mut signatures = Vec::new();
    let mut v1_parts = 0;
    for part in header.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let (key, value) = part.split_once('=').ok_or(SignatureError::Malformed)?;
        match key.trim() {
            "t" => {
                let value = value.trim();
                // Two timestamps would make "which one was signed" ambiguous.
                if timestamp.is_some()
                    || value.is_empty()
                    || !value.bytes().all(|b| b.is_ascii_digit())
                {
                    return Err(SignatureError::Malformed);
                }
                let seconds = value.parse().map_err(|_| SignatureError::Malformed)?;
                timestamp = Some((value, seconds));
            }
            "v1" => {
                v1_parts += 1;
                if v1_parts > MAX_SIGNATURES {
                    return Err(SignatureError::Malformed);
                }
                // A value that is not 64 hex digits can never match: skip it, as an unknown
                // scheme would be, rather than letting it mask a valid sibling.
                let mut raw = [0u8; 32];
                if hex::decode_to_slice(value.trim(), &mut raw).is_ok() {
                    signatures.push(raw);
                }
            }
            // Other schemes (v0, future ones) are ignored.
            _ => {}
        }
    }
    let (timestamp, seconds) = timestamp.ok_or(SignatureError::NoTimestamp)?;
    if signatures.is_empty() {
        return Err(SignatureError::NoSignature);
    }
    Ok(Parsed {
        timestamp,
        seconds,
        signatures,
    })
}

/// Checks `header` against the raw `body` with any of `secrets`, at `now_secs`.
pub fn verify(
    header: Option<&str>,
    body: &[u8],
    secrets: &[Secret],
    now_secs: i64,
) -> Result<(), SignatureError> {
    let parsed = parse(header.ok_or(SignatureError::Missing)?)?;
    // `abs_diff`: with a clock far off (or negative) and a 19-digit `t`, `now - t` does not
    // fit in an i64; a subtraction would panic in debug builds and, wrapped in release, pass
    // the window check.
    if now_secs.abs_diff(parsed.seconds) > TOLERANCE_SECS.unsigned_abs() {
        return Err(SignatureError::OutsideWindow);
    }
    // Check every pair without an early exit so timing says nothing about which matched.
    let mut matched = subtle::Choice::from(0);
    for secret in secrets {
        let expected = mac(secret.expose().as_bytes(), parsed.timestamp, body);
        for candidate in &parsed.signatures {
            matched |= expected.ct_eq(candidate);
        }
    }
    if bool::from(matched) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// signature test vector 2 of docs/fintoc.md, computed with both official SDKs.
    const RI_BODY: &str = r#"{"id":"evt_sim0001","type":"account.refresh_intent.succeeded","mode":"test","created_at":"2025-01-01T00:00:05.000Z","data":{"object":"refresh_intent","refreshed_object":"account","refreshed_object_id":"acc_sim0001","status":"succeeded","public_error":null,"created_at":"2025-01-01T00:00:00.000Z","type":"only_last","new_movements":2},"object":"event"}"#;
    const RI_T: i64 = 1735689605;
    const RI_V1: &str = "a7f28de282fda58693b6c71f10af46b4d47d0b9ee1fdc4ddb36b2cbc3c5eaf9b";

    /// signature test vector 1 of docs/fintoc.md: the Node SDK's own spec payload, whitespace removed.
    const NODE_BODY: &str = include_str!("testdata/node_sdk_payment_intent.json");
    const NODE_T: i64 = 1743890251;
    const NODE_V1: &str = "11b98dd8f5500109246aa4d9875fad2e97d462560b012a5f50ff924411de0b0f";

    fn secrets(list: &[&str]) -> Vec<Secret> {
        list.iter().map(|s| Secret::new(*s)).collect()
    }

    #[test]
    fn reproduces_the_documented_vectors() {
        assert_eq!(RI_BODY.len(), 351);
        assert_eq!(sign("whsec_sim_secret", RI_T, RI_BODY.as_bytes()), RI_V1);
        let node_body = NODE_BODY.trim_end_matches('\n');
        assert_eq!(node_body.len(), 785);
        assert_eq!(
            sign("whsec_test_secret", NODE_T, node_body.as_bytes()),
            NODE_V1
        );
        let h = format!("t={NODE_T},v1={NODE_V1}");
        let ok = verify(
            Some(&h),
            node_body.as_bytes(),
            &secrets(&["whsec_test_secret"]),
            NODE_T,
        );
        assert_eq!(ok, Ok(()));
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of cases reads best inline
    fn verification_table() {
        let body = RI_BODY.as_bytes();
        let good = format!("t={RI_T},v1={RI_V1}");
        let other = "0".repeat(64);
        let s = secrets(&["whsec_sim_secret"]);
        let table: Vec<(
            &str,
            Option<String>,
            &[u8],
            Vec<Secret>,
            i64,
            Result<(), SignatureError>,
        )> = vec![
            ("exact", Some(good.clone()), body, s.clone(), RI_T, Ok(())),
            (
                "299 s late",
                Some(good.clone()),
                body,
                s.clone(),
                RI_T + 299,
                Ok(()),
            ),
            (
                "300 s late",
                Some(good.clone()),
                body,
                s.clone(),
                RI_T + 300,
                Ok(()),
            ),
            (
                "301 s late",
                Some(good.clone()),
                body,
                s.clone(),
                RI_T + 301,
                Err(SignatureError::OutsideWindow),
            ),
            (
                "300 s early",
                Some(good.clone()),
                body,
                s.clone(),
                RI_T - 300,
                Ok(()),
            ),
            (
                "301 s early",
                Some(good.clone()),
                body,
                s.clone(),
                RI_T - 301,
                Err(SignatureError::OutsideWindow),
            ),
            (
                "missing header",
                None,
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Missing),
            ),
            (
                "empty header",
                Some(String::new()),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Missing),
            ),
            (
                "blank header",
                Some("  ".into()),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Missing),
            ),
            (
                "whitespace around parts",
                Some(format!("  t = {RI_T} ,  v1 = {RI_V1}  ")),
                body,
                s.clone(),
                RI_T,
                Ok(()),
            ),
            (
                "parts reversed",
                Some(format!("v1={RI_V1},t={RI_T}")),
                body,
                s.clone(),
                RI_T,
                Ok(()),
            ),
            (
                "trailing comma",
                Some(format!("t={RI_T},v1={RI_V1},")),
                body,
                s.clone(),
                RI_T,
                Ok(()),
            ),
            (
                "second v1 matches",
                Some(format!("t={RI_T},v1={other},v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Ok(()),
            ),
            (
                "first v1 matches",
                Some(format!("t={RI_T},v1={RI_V1},v1={other}")),
                body,
                s.clone(),
                RI_T,
                Ok(()),
            ),
            (
                "garbage v1 beside a good one",
                Some(format!("t={RI_T},v1=zz,v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Ok(()),
            ),
            (
                "unknown scheme ignored",
                Some(format!("t={RI_T},v0=abc,v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Ok(()),
            ),
            (
                "uppercase hex",
                Some(format!("t={RI_T},v1={}", RI_V1.to_uppercase())),
                body,
                s.clone(),
                RI_T,
                Ok(()),
            ),
            (
                "second secret matches",
                Some(good.clone()),
                body,
                secrets(&["whsec_old", "whsec_sim_secret"]),
                RI_T,
                Ok(()),
            ),
            (
                "no secret matches",
                Some(good.clone()),
                body,
                secrets(&["whsec_old", "whsec_new"]),
                RI_T,
                Err(SignatureError::Mismatch),
            ),
            (
                "no secrets configured",
                Some(good.clone()),
                body,
                vec![],
                RI_T,
                Err(SignatureError::Mismatch),
            ),
            (
                "tampered body",
                Some(good.clone()),
                b"{\"id\":\"evt_sim0001\"}",
                s.clone(),
                RI_T,
                Err(SignatureError::Mismatch),
            ),
            (
                "body with a trailing newline",
                Some(good.clone()),
                format!("{RI_BODY}\n").as_bytes().to_vec().leak(),
                s.clone(),
                RI_T,
                Err(SignatureError::Mismatch),
            ),
            (
                "timestamp changed",
                Some(format!("t={},v1={RI_V1}", RI_T + 1)),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Mismatch),
            ),
            (
                "timestamp with leading zero",
                Some(format!("t=0{RI_T},v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Mismatch),
            ),
            (
                "no timestamp",
                Some(format!("v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::NoTimestamp),
            ),
            (
                "no signature",
                Some(format!("t={RI_T}")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::NoSignature),
            ),
            (
                "only garbage signatures",
                Some(format!("t={RI_T},v1=nothex")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::NoSignature),
            ),
            (
                "short signature",
                Some(format!("t={RI_T},v1={}", &RI_V1[..62])),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::NoSignature),
            ),
            (
                "negative timestamp",
                Some(format!("t=-{RI_T},v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Malformed),
            ),
            (
                "timestamp not a number",
                Some(format!("t=soon,v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Malformed),
            ),
            (
                "huge timestamp",
                Some(format!("t=99999999999999999999999,v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Malformed),
            ),
            (
                "two timestamps",
                Some(format!("t={RI_T},t={RI_T},v1={RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Malformed),
            ),
            (
                "part without =",
                Some(format!("t={RI_T},v1{RI_V1}")),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Malformed),
            ),
            (
                "too many signatures",
                Some(format!("t={RI_T}{}", ",v1=00".repeat(17))),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Malformed),
            ),
            (
                "oversized header",
                Some(format!("t={RI_T},v1={RI_V1},x={}", "a".repeat(5000))),
                body,
                s.clone(),
                RI_T,
                Err(SignatureError::Malformed),
            ),
        ];
        for (name, header, body, secrets, now, want) in table {
            assert_eq!(
                verify(header.as_deref(), body, &secrets, now),
                want,
                "{name}"
            );
        }
    }

    /// Found by the property `any_clock_reading_gets_a_clean_answer`: `now - t` overflowed.
    #[test]
    fn window_arithmetic_cannot_overflow() {
        let s = secrets(&["whsec_x"]);
        for (t, now) in [
            (i64::MAX, -1),
            (i64::MAX, i64::MIN),
            (0, i64::MIN),
            (i64::MAX, 0),
        ] {
            let h = header("whsec_x", t, b"{}");
            assert_eq!(
                verify(Some(&h), b"{}", &s, now),
                Err(SignatureError::OutsideWindow),
                "t={t} now={now}"
            );
        }
        let h = header("whsec_x", i64::MAX, b"{}");
        assert_eq!(verify(Some(&h), b"{}", &s, i64::MAX - 300), Ok(()));
    }

    #[test]
    fn header_round_trips_through_verify() {
        let h = header("whsec_x", 1_800_000_000, b"{}");
        assert!(h.starts_with("t=1800000000,v1="));
        assert_eq!(
            verify(Some(&h), b"{}", &secrets(&["whsec_x"]), 1_800_000_000),
            Ok(())
        );
    }
}
