//! Fintoc's recurring refreshes, simulated: every `scheduled_every` of the simulator's clock,
//! each Link Fintoc would refresh gets 1–3 new movements per account and the `succeeded`
//! events no refresh intent asked for, so a running `serve --simulate` shows movements
//! flowing without anyone creating refresh intents. Stops with the simulator.

use std::time::Duration;

use rand::RngExt;
use tokio_util::sync::CancellationToken;

use super::api::Shared;
use crate::clock::Clock;

pub(super) fn spawn(shared: Shared, clock: Clock, every: Duration, shutdown: CancellationToken) {
    let every_ms = crate::clock::millis(every).max(1);
    // Counted from the start, read before the task runs: a test that moves a manual clock
    // right after starting the simulator still gets its round.
    let mut next = clock.now_ms().saturating_add(every_ms);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                // The injected clock's time: a test advancing a manual clock triggers rounds.
                _ = clock.sleep_until(next) => {}
            }
            // One round per wake-up: after a jump past several periods, the next round is a
            // whole period away rather than a burst of the missed ones.
            let now = clock.now_ms();
            next = next.saturating_add(every_ms);
            if next <= now {
                next = now.saturating_add(every_ms);
            }
            let events = {
                let mut model = shared.model();
                let now = clock.now_ms();
                let links = model.scheduled_links();
                let mut rng = rand::rng();
                links
                    .iter()
                    .flat_map(|link| {
                        let new_movements = rng.random_range(1..=3);
                        model.scheduled_refresh(link, new_movements, now)
                    })
                    .collect::<Vec<_>>()
            };
            shared.publish_later(events);
        }
    });
}
