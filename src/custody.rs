//! Link tokens sealed at rest. A link token is a bank credential: the database holds it only
//! as AES-256-GCM ciphertext under a key from `LINK_TOKEN_KEYS` (CONTRACT.md §7), never in
//! clear, and nothing here prints a token or a key.
//!
//! - Keys: `LINK_TOKEN_KEYS = "<kid>:<base64 of 32 bytes>[,<kid>:<base64>…]"`. The first key
//!   seals; every key opens, so a key is rotated by putting a new one first and keeping the
//!   old one until its tokens have been resealed ([`Opened::reseal`]) or expired.
//! - Binding: the associated data names the format version, the key id and the Link id, so a
//!   sealed token copied onto another Link's row, or relabelled with another key id, fails
//!   to open instead of handing a Link someone else's credential.
//! - Nonces: a fresh random 96-bit nonce per seal. Seals happen only when a token is given
//!   to be kept or resealed after a rotation, far below the 2^32 seals per key past which
//!   random GCM nonces start to risk a collision.
//!
//! AES-GCM comes from aws-lc-rs, the crypto library rustls already uses for TLS here (one
//! library, FIPS-grade, already compiled).

use std::fmt;
use std::sync::Arc;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::secret::Secret;

/// The env var the keys come from; every parse error names it.
const ENV: &str = "LINK_TOKEN_KEYS";
const KEY_LEN: usize = 32;
const MAX_KID_LEN: usize = 32;
/// The associated data's prefix: bump the version if the sealed format ever changes.
const AAD_PREFIX: &[u8] = b"fintoc-refresh/link-token/v1\0";

/// The keys that seal and open link tokens: the first seals, all open. Cheap to clone.
#[derive(Clone)]
pub struct LinkTokenKeys {
    keys: Arc<[Key]>,
}

struct Key {
    kid: String,
    aead: LessSafeKey,
}

/// A sealed link token, as it is stored. `ciphertext` is the encrypted token with GCM's
/// 16-byte tag appended; `nonce` is the 12-byte nonce it was sealed with. Neither is secret,
/// but neither means anything without the key named by `key_id` and the Link id it was
/// sealed for.
#[derive(Clone, PartialEq, Eq)]
pub struct Sealed {
    pub key_id: String,
    pub nonce: Vec<u8>,
    pub ciphertext: Vec<u8>,
}

impl fmt::Debug for Sealed {
    /// The key id and sizes only: a log line has no use for the bytes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sealed")
            .field("key_id", &self.key_id)
            .field("nonce_len", &self.nonce.len())
            .field("ciphertext_len", &self.ciphertext.len())
            .finish()
    }
}

/// An opened token, and its new sealed form when it was sealed under an older key: the
/// caller stores `reseal` in place of the old one, so tokens move to the new key as they are
/// used and the old key can be retired.
#[derive(Debug)]
pub struct Opened {
    pub token: Secret,
    pub reseal: Option<Sealed>,
}

/// Why a sealed token did not open. Neither variant carries token or key bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// The key it was sealed under is no longer in `LINK_TOKEN_KEYS`.
    #[error(
        "the link token was sealed with key {kid:?}, which LINK_TOKEN_KEYS no longer holds; \
         add that key back, or register the Link's token again"
    )]
    UnknownKey { kid: String },
    /// Authentication failed: the ciphertext was altered, or it belongs to another Link or
    /// was relabelled with another key id.
    #[error("the sealed link token failed authentication (altered, or sealed for another Link)")]
    Corrupt,
}

impl LinkTokenKeys {
    /// Reads the value of `LINK_TOKEN_KEYS`. The error is one line that names the variable,
    /// the entry (by position, and by key id once that is known to be well-formed) and what
    /// is wrong with it; it never quotes key material. Whitespace around entries is ignored
    /// (a value read from a file often ends with a newline).
    pub fn parse(value: &str) -> Result<LinkTokenKeys, String> {
        let value = value.trim();
        if value.is_empty() {
            return Err(format!(
                "{ENV} is set but empty: give <kid>:<base64 of 32 bytes>[,…], or unset it to \
                 keep no link tokens"
            ));
        }
        let mut keys: Vec<Key> = Vec::new();
        for (index, entry) in value.split(',').enumerate() {
            let n = index + 1;
            let entry = entry.trim();
            if entry.is_empty() {
                return Err(format!(
                    "{ENV} entry {n} is empty (a stray comma?); expected <kid>:<base64 of 32 bytes>"
                ));
            }
            // Nothing of an entry is quoted until its kid is known to be a well-formed kid:
            // a malformed entry may be a bare key, or a key and kid swapped.
            let Some((kid, encoded)) = entry.split_once(':') else {
                return Err(format!(
                    "{ENV} entry {n} has no ':'; expected <kid>:<base64 of 32 bytes>"
                ));
            };
            let kid = kid.trim();
            if kid.is_empty() {
                return Err(format!("{ENV} entry {n} has an empty key id before ':'"));
            }
            if kid.len() > MAX_KID_LEN {
                return Err(format!(
                    "{ENV} entry {n}: the key id is longer than {MAX_KID_LEN} characters (is a \
                     key where the kid should be?)"
                ));
            }
            if !kid
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            {
                return Err(format!(
                    "{ENV} entry {n}: the key id may only hold A-Z, a-z, 0-9, '_' and '-'"
                ));
            }
            if let Some(first) = keys.iter().position(|k| k.kid == kid) {
                return Err(format!(
                    "{ENV} entries {} and {n} share the key id {kid:?}; each key needs its own",
                    first + 1
                ));
            }
            let Some(bytes) = decode_base64(encoded.trim()) else {
                return Err(format!(
                    "{ENV} key {kid:?} (entry {n}) is not valid base64 (standard alphabet, e.g. \
                     from `openssl rand -base64 32`)"
                ));
            };
            if bytes.len() != KEY_LEN {
                return Err(format!(
                    "{ENV} key {kid:?} (entry {n}) is {} bytes; AES-256-GCM needs exactly \
                     {KEY_LEN} (e.g. from `openssl rand -base64 32`)",
                    bytes.len()
                ));
            }
            keys.push(Key::new(kid, &bytes));
        }
        Ok(LinkTokenKeys { keys: keys.into() })
    }

    /// A random key with kid `demo`, for `serve --simulate`, and that kid. The key lives only
    /// in this process: tokens sealed with it do not open after a restart.
    pub fn demo() -> (LinkTokenKeys, String) {
        let mut bytes = [0u8; KEY_LEN];
        aws_lc_rs::rand::fill(&mut bytes).expect("the system's random number generator");
        let keys = LinkTokenKeys {
            keys: vec![Key::new("demo", &bytes)].into(),
        };
        (keys, "demo".to_owned())
    }

    /// The id of the key that seals (the first).
    pub fn sealing_kid(&self) -> &str {
        &self.keys[0].kid
    }

    /// Whether a key with this id is among the keys (so what it sealed can be opened).
    pub fn holds(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// Seals `token` for the Link `link_id` under the first key, with a fresh random nonce.
    pub fn seal(&self, link_id: &str, token: &Secret) -> Sealed {
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).expect("the system's random number generator");
        let mut in_out = token.expose().as_bytes().to_vec();
        key.aead
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad(&key.kid, link_id)),
                &mut in_out,
            )
            .expect("a link token is far below GCM's length limit");
        Sealed {
            key_id: key.kid.clone(),
            nonce: nonce.to_vec(),
            ciphertext: in_out,
        }
    }

    /// Opens a token sealed for `link_id`. One sealed under another key than the first comes
    /// back with `reseal`, its seal under the first key, for the caller to store.
    pub fn open(&self, link_id: &str, sealed: &Sealed) -> Result<Opened, OpenError> {
        let (index, key) = self
            .keys
            .iter()
            .enumerate()
            .find(|(_, k)| k.kid == sealed.key_id)
            .ok_or_else(|| OpenError::UnknownKey {
                kid: sealed.key_id.clone(),
            })?;
        let nonce =
            Nonce::try_assume_unique_for_key(&sealed.nonce).map_err(|_| OpenError::Corrupt)?;
        let mut in_out = sealed.ciphertext.clone();
        let plain = key
            .aead
            .open_in_place(nonce, Aad::from(aad(&key.kid, link_id)), &mut in_out)
            .map_err(|_| OpenError::Corrupt)?;
        // Authentic bytes that are not UTF-8 were never sealed by `seal`.
        let token = Secret::new(std::str::from_utf8(plain).map_err(|_| OpenError::Corrupt)?);
        let reseal = (index != 0).then(|| self.seal(link_id, &token));
        Ok(Opened { token, reseal })
    }
}

impl fmt::Debug for LinkTokenKeys {
    /// Key ids only.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkTokenKeys")
            .field(
                "kids",
                &self.keys.iter().map(|k| k.kid.as_str()).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Key {
    fn new(kid: &str, bytes: &[u8]) -> Key {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes).expect("a 32-byte AES-256 key");
        Key {
            kid: kid.to_owned(),
            aead: LessSafeKey::new(unbound),
        }
    }
}

/// The associated data: format version, key id, Link id. A kid holds no NUL (its alphabet is
/// checked) and the Link id comes last, so no two (kid, link id) pairs share one.
fn aad(kid: &str, link_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(AAD_PREFIX.len() + kid.len() + 1 + link_id.len());
    aad.extend_from_slice(AAD_PREFIX);
    aad.extend_from_slice(kid.as_bytes());
    aad.push(0);
    aad.extend_from_slice(link_id.as_bytes());
    aad
}

/// Standard base64 (RFC 4648 §4), padding optional. Hand-written because it is twenty lines
/// and only ever reads a few keys at startup: not worth a dependency.
fn decode_base64(text: &str) -> Option<Vec<u8>> {
    let text = text.as_bytes();
    let body = text.strip_suffix(b"==").or_else(|| text.strip_suffix(b"="));
    let body = body.unwrap_or(text);
    if body.len() % 4 == 1 || (body.len() != text.len() && !text.len().is_multiple_of(4)) {
        return None;
    }
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in body {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    // Leftover bits must be zero, or two texts would decode to one key.
    (acc & ((1 << bits) - 1) == 0).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 32 bytes of `fill` as base64 (test keys only).
    fn b64(fill: u8) -> String {
        encode_base64(&[fill; KEY_LEN])
    }

    fn encode_base64(bytes: &[u8]) -> String {
        const ABC: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    fn keys(spec: &[(&str, u8)]) -> LinkTokenKeys {
        let value: Vec<String> = spec
            .iter()
            .map(|(kid, fill)| format!("{kid}:{}", b64(*fill)))
            .collect();
        LinkTokenKeys::parse(&value.join(",")).unwrap()
    }

    fn token() -> Secret {
        Secret::new("link_abc_token_XYZsecret")
    }

    #[test]
    fn round_trip() {
        let k = keys(&[("k1", 1)]);
        let sealed = k.seal("link_1", &token());
        assert_eq!(sealed.key_id, "k1");
        assert_eq!(sealed.nonce.len(), 12);
        assert!(
            !sealed.ciphertext.windows(6).any(|w| w == b"secret"),
            "the token is not in clear"
        );
        let opened = k.open("link_1", &sealed).unwrap();
        assert_eq!(opened.token, token());
        assert!(opened.reseal.is_none());
    }

    #[test]
    fn bound_to_its_link() {
        let k = keys(&[("k1", 1)]);
        let sealed = k.seal("link_1", &token());
        assert_eq!(k.open("link_2", &sealed).unwrap_err(), OpenError::Corrupt);
    }

    #[test]
    fn bound_to_its_key_id() {
        // Both keys equal: only the kid in the associated data tells them apart.
        let k = keys(&[("a", 1), ("b", 1)]);
        let mut sealed = k.seal("link_1", &token());
        sealed.key_id = "b".into();
        assert_eq!(k.open("link_1", &sealed).unwrap_err(), OpenError::Corrupt);
    }

    #[test]
    fn tampering_fails() {
        let k = keys(&[("k1", 1)]);
        let sealed = k.seal("link_1", &token());
        for i in 0..sealed.ciphertext.len() {
            let mut bad = sealed.clone();
            bad.ciphertext[i] ^= 1;
            assert_eq!(k.open("link_1", &bad).unwrap_err(), OpenError::Corrupt);
        }
        let mut bad = sealed.clone();
        bad.nonce[0] ^= 1;
        assert_eq!(k.open("link_1", &bad).unwrap_err(), OpenError::Corrupt);
        let mut bad = sealed.clone();
        bad.nonce.pop();
        assert_eq!(k.open("link_1", &bad).unwrap_err(), OpenError::Corrupt);
        let mut bad = sealed;
        bad.ciphertext.truncate(4);
        assert_eq!(k.open("link_1", &bad).unwrap_err(), OpenError::Corrupt);
    }

    #[test]
    fn rotation_reseals_under_the_first_key() {
        let old = keys(&[("old", 2)]);
        let rotated = keys(&[("new", 1), ("old", 2)]);
        assert_eq!(rotated.sealing_kid(), "new");

        let opened = rotated
            .open("link_1", &old.seal("link_1", &token()))
            .unwrap();
        assert_eq!(opened.token, token());
        let reseal = opened.reseal.expect("an old-key token is resealed");
        assert_eq!(reseal.key_id, "new");
        let again = rotated.open("link_1", &reseal).unwrap();
        assert_eq!(again.token, token());
        assert!(again.reseal.is_none());

        let fresh = rotated.seal("link_1", &token());
        assert!(rotated.open("link_1", &fresh).unwrap().reseal.is_none());
    }

    #[test]
    fn unknown_key() {
        let sealed = keys(&[("gone", 3)]).seal("link_1", &token());
        let err = keys(&[("k1", 1)]).open("link_1", &sealed).unwrap_err();
        assert_eq!(err, OpenError::UnknownKey { kid: "gone".into() });
        assert!(err.to_string().contains("LINK_TOKEN_KEYS"), "{err}");
    }

    #[test]
    fn nonces_differ() {
        let k = keys(&[("k1", 1)]);
        let (a, b) = (k.seal("link_1", &token()), k.seal("link_1", &token()));
        assert_ne!(a.nonce, b.nonce);
        assert_ne!(a.ciphertext, b.ciphertext);
    }

    #[test]
    fn parse_errors_name_the_variable_and_never_the_key() {
        let key = b64(7);
        let short = encode_base64(&[7; 16]);
        let long_kid = "k".repeat(33);
        let cases = [
            ("".to_owned(), "empty"),
            ("  ".to_owned(), "empty"),
            (format!("k1:{key},"), "entry 2 is empty"),
            (key.clone(), "entry 1 has no ':'"),
            (format!(":{key}"), "entry 1 has an empty key id"),
            (format!("k 1:{key}"), "entry 1: the key id may only hold"),
            (format!("k.1:{key}"), "entry 1: the key id may only hold"),
            (format!("{key}:k1"), "entry 1: the key id"),
            (format!("{long_kid}:{key}"), "longer than 32"),
            (format!("a:{key},b:{key},a:{key}"), "entries 1 and 3 share"),
            (
                format!("k1:{key},k2:{}!", &key[..43]),
                "\"k2\" (entry 2) is not valid base64",
            ),
            (format!("k1:{short}"), "\"k1\" (entry 1) is 16 bytes"),
            (
                format!("k1:{key}{key}"),
                "\"k1\" (entry 1) is not valid base64",
            ),
        ];
        for (value, expected) in cases {
            let err = LinkTokenKeys::parse(&value).unwrap_err();
            assert!(err.starts_with("LINK_TOKEN_KEYS "), "{value:?}: {err}");
            assert!(err.contains(expected), "{value:?}: {err}");
            assert!(!err.contains('\n'), "{err}");
            assert!(!err.contains(&key[..16]), "key material in {err}");
            assert!(!err.contains(&short[..16]), "key material in {err}");
        }
        assert!(LinkTokenKeys::parse(&format!(" k1:{key} , k2:{}\n", b64(8))).is_ok());
        // Without padding too.
        assert!(LinkTokenKeys::parse(&format!("k1:{}", key.trim_end_matches('='))).is_ok());
    }

    #[test]
    fn base64_is_strict() {
        assert_eq!(decode_base64("").unwrap(), b"");
        assert_eq!(decode_base64("Zg==").unwrap(), b"f");
        assert_eq!(decode_base64("Zm8=").unwrap(), b"fo");
        assert_eq!(decode_base64("Zm9v").unwrap(), b"foo");
        assert_eq!(decode_base64("Zm9vYg").unwrap(), b"foob");
        assert_eq!(decode_base64("+/+/").unwrap(), [0xfb, 0xff, 0xbf]);
        for bad in ["Z", "Zg=", "Zh==", "Zm9v=", "Zg==Zg==", "Zm9-", "Zm 9v"] {
            assert!(decode_base64(bad).is_none(), "{bad}");
        }
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(decode_base64(&encode_base64(&bytes)).unwrap(), bytes);
        }
    }

    #[test]
    fn debug_shows_kids_only() {
        let k = keys(&[("new", 0xab), ("old", 0xcd)]);
        let printed = format!("{k:?}");
        assert_eq!(printed, r#"LinkTokenKeys { kids: ["new", "old"] }"#);
        let sealed = format!("{:?}", k.seal("link_1", &token()));
        assert!(
            sealed.contains("\"new\"") && !sealed.contains('['),
            "{sealed}"
        );
    }

    #[test]
    fn demo_keys_work() {
        let (k, kid) = LinkTokenKeys::demo();
        assert_eq!((kid.as_str(), k.sealing_kid()), ("demo", "demo"));
        let sealed = k.seal("link_1", &token());
        assert_eq!(k.open("link_1", &sealed).unwrap().token, token());
        let (other, _) = LinkTokenKeys::demo();
        assert_eq!(
            other.open("link_1", &sealed).unwrap_err(),
            OpenError::Corrupt
        );
    }
}
