//! Idempotency keys, both kinds: the caller's (the answer remembered under it, so a repeat
//! is replayed) and the `Idempotency-Key` series sent to Fintoc's POST (derived from the
//! caller's, so a retry after a crash, or of a call whose outcome was unknown, replays
//! Fintoc's answer rather than creating a second intent).

use super::Ask;
use crate::app::App;
use crate::error::AppError;
use crate::fintoc::client::IdempotencyKeys;
use crate::secret::sha256_hex;
use crate::store::KeyRecord;

/// What to remember under the caller's key (if it gave one) for this answer.
pub(super) fn record(
    ask: &Ask,
    refresh_intent_id: &str,
    joined_existing: bool,
) -> Option<KeyRecord> {
    ask.key.as_ref().map(|key| KeyRecord {
        key: key.clone(),
        token_sha256: ask.token_sha256.clone(),
        refresh_type: ask.refresh_type,
        refresh_intent_id: refresh_intent_id.to_owned(),
        joined_existing,
    })
}

/// The `Idempotency-Key` series sent to Fintoc. With a caller key it is derived from it,
/// past the keys Fintoc already answered for it; without one it is random.
pub(super) async fn fintoc_keys(app: &App, ask: &Ask) -> Result<IdempotencyKeys, AppError> {
    Ok(match &ask.key {
        Some(key) => {
            let spent = app.store.fintoc_keys_spent(key.clone()).await?;
            IdempotencyKeys::new(fintoc_key_base(ask), spent)
        }
        None => IdempotencyKeys::new(uuid::Uuid::new_v4().to_string(), 0),
    })
}

/// Fintoc answered some of this caller key's Fintoc keys (`keys` went past `spent_before`):
/// a later call with the same caller key starts after them, instead of being replayed their
/// answers for a day.
pub(super) async fn remember_spent(
    app: &App,
    ask: &Ask,
    keys: &IdempotencyKeys,
    spent_before: u64,
) {
    let Some(caller_key) = &ask.key else {
        return;
    };
    if keys.spent() <= spent_before {
        return;
    }
    let kept = app
        .store
        .remember_fintoc_keys_spent(caller_key.clone(), keys.spent())
        .await;
    if let Err(e) = kept {
        // Not fatal: the series is deterministic, so a later call replays the answered
        // keys (spending them again) until it reaches a fresh one.
        tracing::warn!(error = %e, "could not record the Fintoc keys spent");
    }
}

/// The first key of a caller key's series: a digest of the caller key, the token and the
/// type (so a key reused elsewhere can never collide), short enough for Fintoc's 255.
fn fintoc_key_base(ask: &Ask) -> String {
    let key = ask.key.as_deref().unwrap_or_default();
    format!(
        "fintoc-refresh-{}",
        &sha256_hex(&format!(
            "{key}\n{}\n{}",
            ask.token_sha256, ask.refresh_type
        ))[..48]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::RefreshType;
    use crate::secret::Secret;

    #[test]
    fn derived_fintoc_keys_are_stable_and_bounded() {
        let ask = |key: Option<&str>| {
            Ask::new(
                Secret::new("t"),
                RefreshType::OnlyLast,
                key.map(str::to_owned),
            )
        };
        assert_eq!(
            fintoc_key_base(&ask(Some("k"))),
            fintoc_key_base(&ask(Some("k")))
        );
        assert_ne!(
            fintoc_key_base(&ask(Some("k"))),
            fintoc_key_base(&ask(Some("j")))
        );
        // The series: the base first, then a new key for each one Fintoc answered.
        let base = fintoc_key_base(&ask(Some(&"x".repeat(255))));
        assert_eq!(IdempotencyKeys::new(base.clone(), 0).current(), base);
        let later = IdempotencyKeys::new(base.clone(), 12).current();
        assert_eq!(later, format!("{base}-12"));
        assert!(later.len() <= 255);
    }

    #[test]
    fn a_key_record_only_for_a_caller_key() {
        let without = Ask::new(Secret::new("t"), RefreshType::OnlyLast, None);
        assert_eq!(record(&without, "ri_1", false), None);
        let with = Ask::new(Secret::new("t"), RefreshType::Historical, Some("k".into()));
        assert_eq!(
            record(&with, "ri_1", true),
            Some(KeyRecord {
                key: "k".into(),
                token_sha256: sha256_hex("t"),
                refresh_type: RefreshType::Historical,
                refresh_intent_id: "ri_1".into(),
                joined_existing: true,
            })
        );
    }
}
