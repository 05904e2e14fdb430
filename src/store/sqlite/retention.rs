//! Retention: removing results, raw events, finished intents and idempotency keys (with
//! their counts of spent Fintoc keys) past their age, in small chunks so each writer job stays short and the intake never waits long.

use diesel::prelude::*;

use super::Tx;
use super::schema::{
    fintoc_key_series, idempotency_keys, intent_accounts, log_horizon, refresh_intents, results,
    webhook_events,
};
use crate::clock::Millis;
use crate::store::queries;
use crate::store::{Pruned, StoreResult};

/// Removes up to `limit` rows of each kind older than `cutoff_ms` (idempotency keys older than
/// `key_cutoff_ms`). The log is pruned from its oldest end only, so the retained sequences
/// stay contiguous and a cursor is either fully served or refused with OUT_OF_RANGE.
pub(super) fn prune(
    tx: &mut Tx<'_>,
    cutoff_ms: Millis,
    key_cutoff_ms: Millis,
    limit: i64,
) -> StoreResult<Pruned> {
    queries::prune!(tx.conn, cutoff_ms, key_cutoff_ms, limit, [])
}

#[cfg(test)]
mod tests {
    use crate::store::seam::Backend as _;
    use diesel::connection::SimpleConnection;

    use super::*;
    use crate::store::sqlite::tests::open;

    /// Old rows go in chunks from the oldest end; young rows and held events stay; the log
    /// stays contiguous.
    #[tokio::test]
    async fn prunes_old_rows_in_chunks_from_the_oldest_end() {
        let (_dir, store) = open().await;
        store
            .write(|tx| {
                let mut sql = String::new();
                for i in 0..10 {
                    // Five old (t=1), five young (t=100); one old event is held.
                    let at = if i < 5 { 1 } else { 100 };
                    let disposition = if i == 1 { "held" } else { "result" };
                    sql.push_str(&format!(
                        "INSERT INTO webhook_events (event_key, disposition, received_at_ms, body) \
                         VALUES ('evt_{i}', '{disposition}', {at}, x'7b7d'); \
                         INSERT INTO results (account_id, link_id, refresh_intent_id, status, \
                         new_movements, public_error, event_id, occurred_at_ms, committed_at_ms) \
                         VALUES ('acc', '', '', 'succeeded', 0, '', 'evt_{i}', {at}, {at});"
                    ));
                }
                sql.push_str(
                    "INSERT INTO refresh_intents (id, link_id, refresh_type, status, created_at_ms, \
                     completed_at_ms) VALUES ('ri_old', 'l', 'only_last', 'succeeded', 1, 1), \
                     ('ri_young', 'l', 'only_last', 'succeeded', 1, 100), \
                     ('ri_pending', 'l', 'only_last', 'pending', 1, NULL); \
                     INSERT INTO idempotency_keys VALUES ('k_old', 's', 'only_last', 'ri_old', 0, 1), \
                     ('k_young', 's', 'only_last', 'ri_young', 0, 100);",
                );
                tx.conn.batch_execute(&sql)?;
                Ok(())
            })
            .await
            .unwrap();
        let first = store.prune(50, 50, 3).await.unwrap();
        assert_eq!(
            first,
            Pruned {
                results: 3,
                events: 3,
                intents: 1,
                keys: 1
            }
        );
        let second = store.prune(50, 50, 3).await.unwrap();
        assert_eq!((second.results, second.events), (2, 1));
        let third = store.prune(50, 50, 3).await.unwrap();
        assert_eq!(third.total(), 0, "nothing young is touched");
        let left = store.counts().await.unwrap();
        assert_eq!(
            (left.results, left.webhook_events, left.held_events),
            (5, 6, 1)
        );
        let bounds = store.log_bounds().await.unwrap();
        assert_eq!((bounds.oldest, bounds.newest), (6, 10));
        store.close().await;
    }
}
