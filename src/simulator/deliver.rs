//! Webhook delivery the way Fintoc does it: POST the event JSON with `Content-Type` and
//! `Fintoc-Signature` (signed at each attempt with the endpoint's secret), success is any 2xx,
//! anything else (or no answer) is retried after `retry_base`, doubling, up to `max_retries`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::fintoc::signature;

/// One delivery attempt, for tests and the simulator's own log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub event_id: String,
    pub url: String,
    pub attempt: u32,
    /// The HTTP status, or None when the request failed (refused, timed out).
    pub status: Option<u16>,
}

/// Fintoc's delivery timeout is undocumented; 10 s is generous for a receiver that should
/// answer in milliseconds.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Deliverer {
    pub http: reqwest::Client,
    pub clock: Clock,
    pub retry_base: Duration,
    pub max_retries: u32,
    pub log: Arc<Mutex<Vec<Delivery>>>,
    pub shutdown: CancellationToken,
}

impl Deliverer {
    /// Delivers `body` to `url` until a 2xx, the retries run out, or shutdown.
    pub async fn deliver(&self, event_id: &str, url: &str, secret: &str, body: &str) -> bool {
        let mut delay = self.retry_base;
        for attempt in 0..=self.max_retries {
            let t = self.clock.now_ms().div_euclid(1000);
            let result = self
                .http
                .post(url)
                .header("Content-Type", "application/json")
                .header(
                    "Fintoc-Signature",
                    signature::header(secret, t, body.as_bytes()),
                )
                .timeout(ATTEMPT_TIMEOUT)
                .body(body.to_owned())
                .send()
                .await;
            let status = result.as_ref().ok().map(|r| r.status().as_u16());
            self.log.lock().expect("delivery log").push(Delivery {
                event_id: event_id.to_owned(),
                url: url.to_owned(),
                attempt,
                status,
            });
            if status.is_some_and(|s| (200..300).contains(&s)) {
                return true;
            }
            tracing::debug!(
                event_id,
                attempt,
                ?status,
                "simulator webhook delivery failed; will retry"
            );
            tokio::select! {
                _ = self.shutdown.cancelled() => return false,
                _ = tokio::time::sleep(delay) => {}
            }
            delay = delay.saturating_mul(2);
        }
        false
    }
}
