//! Fuzz target `signature_verify`: `fintoc::signature::verify` never panics, and its answer
//! for every input equals that of an independent, deliberately naive re-statement of the
//! rules, whose notion of "the right signature" comes from `sign`. So no header that lacks the
//! correct `v1` for the body at its own timestamp can be accepted.
//!
//! Input layout, chosen so seeds can be written by hand (see fuzz/README.md):
//!
//! ```text
//! <now> [<signed_at>]\n<Fintoc-Signature header>\n<body bytes>
//! ```
//!
//! With no newline at all the header is absent. In the header, `{t}` becomes `<signed_at>`
//! (default: `<now>`) and `{sig}`, `{old}`, `{foreign}` become the `v1` that `sign` gives at
//! `<signed_at>` for the current, the previous and a never-configured secret. Blind mutation
//! can never forge an HMAC, so without these the accepting paths would only ever be reached
//! by the few seeds that carry a literal signature.

#![no_main]

use fintoc_refresh::fintoc::signature::{SignatureError, TOLERANCE_SECS, sign, verify};
use fintoc_refresh::secret::Secret;
use libfuzzer_sys::fuzz_target;

/// signature test vector 2 of docs/fintoc.md's secret.
const CURRENT: &str = "whsec_sim_secret";
/// signature test vector 1 of docs/fintoc.md's secret, standing in for the one being rotated out.
const PREVIOUS: &str = "whsec_test_secret";
/// Never configured: a well-formed signature with it must count for nothing.
const FOREIGN: &str = "whsec_not_ours";

/// What the rules say `verify` must answer.
#[derive(Debug, PartialEq, Eq)]
enum Expect {
    /// Missing, malformed, no timestamp, or no usable `v1`.
    Refused,
    OutsideWindow,
    Mismatch,
    Accepted,
}

/// The rules, written out anew rather than shared with the parser, so a slip in one is
/// caught by the other. Kept naive on purpose: vectors instead of early exits, `i128`
/// arithmetic instead of care, and hex compared as text instead of decoded.
fn expect(header: Option<&str>, body: &[u8], secrets: &[&str], now: i64) -> Expect {
    let Some(header) = header else {
        return Expect::Refused;
    };
    if header.trim().is_empty() || header.len() > 4096 {
        return Expect::Refused;
    }
    let mut timestamps = Vec::new();
    let mut v1s = Vec::new();
    for part in header.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, value)) = part.split_once('=') else {
            return Expect::Refused;
        };
        match key.trim() {
            "t" => timestamps.push(value.trim()),
            "v1" => v1s.push(value.trim()),
            _ => {}
        }
    }
    let [t_text] = timestamps[..] else {
        return Expect::Refused;
    };
    if v1s.len() > 16 || t_text.is_empty() || !t_text.bytes().all(|b| b.is_ascii_digit()) {
        return Expect::Refused;
    }
    let Ok(t) = t_text.parse::<i64>() else {
        return Expect::Refused;
    };
    let well_formed: Vec<String> = v1s
        .iter()
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(|v| v.to_ascii_lowercase())
        .collect();
    if well_formed.is_empty() {
        return Expect::Refused;
    }
    if (i128::from(now) - i128::from(t)).abs() > i128::from(TOLERANCE_SECS) {
        return Expect::OutsideWindow;
    }
    // Fintoc signs `<t>.` with `t` written plainly. A zero-padded `t` is signed over its own
    // text by verify, so a `v1` made for the plain number must not carry over to it. (A `v1`
    // over the padded text would pass verify and fail here; only a holder of the secret can
    // make one, and no seed carries one.)
    let canonical = t.to_string() == t_text;
    let right = secrets
        .iter()
        .map(|s| sign(s, t, body))
        .any(|want| canonical && well_formed.contains(&want));
    if right {
        Expect::Accepted
    } else {
        Expect::Mismatch
    }
}

/// verify's answer in the rules' terms. Exhaustive on purpose: a new error kind has to be
/// placed here before this target builds again.
fn verdict(got: Result<(), SignatureError>) -> Expect {
    match got {
        Ok(()) => Expect::Accepted,
        Err(SignatureError::OutsideWindow) => Expect::OutsideWindow,
        Err(SignatureError::Mismatch) => Expect::Mismatch,
        Err(
            SignatureError::Missing
            | SignatureError::Malformed
            | SignatureError::NoTimestamp
            | SignatureError::NoSignature,
        ) => Expect::Refused,
    }
}

/// `<now> [<signed_at>]`; an unreadable line still yields some clock, so mutations of it keep
/// exercising the window arithmetic (including its extremes) instead of being thrown away.
fn clock(line: &[u8]) -> (i64, i64) {
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let now = words
        .next()
        .and_then(|w| w.parse().ok())
        .unwrap_or_else(|| {
            line.iter().fold(0i64, |acc, &b| {
                acc.wrapping_mul(257).wrapping_add(i64::from(b))
            })
        });
    let signed_at = words.next().and_then(|w| w.parse().ok()).unwrap_or(now);
    (now, signed_at)
}

fn expand(header: &str, signed_at: i64, body: &[u8]) -> String {
    let mut header = header.replace("{t}", &signed_at.to_string());
    for (placeholder, secret) in [
        ("{sig}", CURRENT),
        ("{old}", PREVIOUS),
        ("{foreign}", FOREIGN),
    ] {
        if header.contains(placeholder) {
            header = header.replace(placeholder, &sign(secret, signed_at, body));
        }
    }
    header
}

fuzz_target!(|data: &[u8]| {
    let mut pieces = data.splitn(3, |&b| b == b'\n');
    let (now, signed_at) = clock(pieces.next().unwrap_or_default());
    let raw_header = pieces.next();
    let body = pieces.next().unwrap_or_default();

    // Invalid UTF-8 is lossily replaced rather than skipped: the intake only ever passes
    // visible ASCII, but verify takes any &str and must hold for all of them.
    let header = raw_header.map(|h| expand(&String::from_utf8_lossy(h), signed_at, body));
    let header = header.as_deref();

    // One secret, then rotation (the newer one listed second, so a match is not always the
    // first pair tried), then none at all.
    for configured in [&[CURRENT][..], &[PREVIOUS, CURRENT][..], &[][..]] {
        let secrets: Vec<Secret> = configured.iter().map(|s| Secret::new(*s)).collect();
        let got = verify(header, body, &secrets, now);
        let want = expect(header, body, configured, now);
        assert_eq!(
            verdict(got),
            want,
            "verify said {got:?}\nnow={now} secrets={configured:?}\nheader={header:?}\nbody={:?}",
            String::from_utf8_lossy(body)
        );
    }
    if header.is_none() {
        assert_eq!(
            verify(None, body, &[Secret::new(CURRENT)], now),
            Err(SignatureError::Missing)
        );
    }
});
