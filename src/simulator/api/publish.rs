//! Publishing events: every stored event meant for delivery goes to each configured webhook
//! and each enabled endpoint subscribed to its type, signed, with the configured duplicates
//! and ordering. Refresh results, movement changes and scheduled refreshes all go through
//! here, so they are delivered alike.

use super::Shared;
use crate::simulator::state::Event;

impl Shared {
    /// Delivers `events` (those marked to be delivered) and returns when every delivery is
    /// over (succeeded, out of retries, or shut down).
    pub async fn publish(&self, events: Vec<Event>) {
        let targets: Vec<(String, String, Vec<String>)> = {
            let model = self.model();
            let mut targets: Vec<_> = self
                .config
                .webhooks
                .iter()
                .map(|(url, secret)| (url.clone(), secret.clone(), vec!["*".into()]))
                .collect();
            targets.extend(
                model
                    .endpoints
                    .iter()
                    .filter(|e| !e.disabled)
                    .map(|e| (e.url.clone(), e.secret.clone(), e.enabled_events.clone())),
            );
            targets
        };
        // Every (event, target) pair, in the order the events were produced (reversed by
        // `reorder` for a refresh's results, which also stored them that way).
        let mut round = Vec::new();
        for event in events.into_iter().filter(|e| e.deliver) {
            for (url, secret, wanted) in &targets {
                if wanted.iter().any(|w| w == "*" || *w == event.event_type) {
                    round.push((event.clone(), url.clone(), secret.clone()));
                }
            }
        }
        let rounds = if self.config.duplicate { 2 } else { 1 };
        for _ in 0..rounds {
            if self.config.reorder {
                // One after another, so the receiver sees exactly this order.
                for (event, url, secret) in &round {
                    self.deliverer
                        .deliver(&event.id, url, secret, &event.body)
                        .await;
                }
            } else {
                let all = round.iter().map(|(event, url, secret)| {
                    let (d, id, url, secret, body) = (
                        self.deliverer.clone(),
                        event.id.clone(),
                        url.clone(),
                        secret.clone(),
                        event.body.clone(),
                    );
                    self.runtime
                        .spawn(async move { d.deliver(&id, &url, &secret, &body).await })
                });
                for delivery in all.collect::<Vec<_>>() {
                    let _ = delivery.await;
                }
            }
        }
    }

    /// [`Shared::publish`] in the background: for events produced outside a request (the
    /// test handles on `Simulator`, possibly called from outside the runtime, and the
    /// scheduled refreshes).
    pub fn publish_later(&self, events: Vec<Event>) {
        if events.iter().any(|e| e.deliver) {
            let s = self.clone();
            self.runtime.spawn(async move { s.publish(events).await });
        }
    }

    pub fn now_ms(&self) -> crate::clock::Millis {
        self.config.clock.now_ms()
    }
}
