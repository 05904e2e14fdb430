//! The state every handler shares, and what builds it: the configuration, storage, the hub
//! that wakes watchers, metrics and the Fintoc client. Handlers (`http/`, `grpc/`, `tasks`)
//! import [`App`] from here; `server.rs` only wires listeners and servers around it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;
use tokio::sync::Notify;

use crate::config::Config;
use crate::domain::ResultRow;
use crate::fintoc::client::Client;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::store::{Publish, Store, redacted};

/// State shared by every handler.
pub struct App {
    pub config: Config,
    pub store: Store,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    pub fintoc: Client,
    /// Set once shutdown starts: readiness fails, new work is refused.
    pub draining: AtomicBool,
    /// Wakes the movements fetcher (`fetch.rs`) when a result owing a fetch is published.
    pub fetch_wake: Arc<Notify>,
}

impl App {
    /// Opens the database and builds the shared state. The one place the store is told
    /// where durable commits go: the hub.
    pub async fn start(config: Config) -> anyhow::Result<Arc<App>> {
        let hub = Arc::new(Hub::new(config.watch_buffer));
        let metrics = Arc::new(Metrics::new());
        let fetch_wake = Arc::new(Notify::new());
        let publish: Publish = {
            let (hub, wake) = (hub.clone(), fetch_wake.clone());
            Arc::new(move |rows: &[Arc<ResultRow>]| {
                hub.publish(rows);
                if rows.iter().any(|r| r.fetches_movements) {
                    wake.notify_one();
                }
            })
        };
        let store = Store::open(&config, metrics.clone(), publish)
            .await
            .with_context(|| {
                // A PostgreSQL URL may carry a password: never print it.
                format!(
                    "cannot open the database {:?}",
                    redacted(&config.database_url)
                )
            })?;
        // Where the store's sink starts, not a later read of the log: entries committed in
        // between reach the hub through the sink, and a hub ahead of it would heartbeat a
        // resumed watcher past entries it has not been given yet.
        hub.start_at(store.published_through().await?);
        check_token_keys(&config, &store).await?;
        let fintoc = Client::new(&config, metrics.clone())?;
        Ok(Arc::new(App {
            config,
            store,
            hub,
            metrics,
            fintoc,
            draining: AtomicBool::new(false),
            fetch_wake,
        }))
    }
}

/// Refuses to start when kept tokens are sealed under a key LINK_TOKEN_KEYS lacks (it was
/// dropped from the list, or the variable is unset): their Links' movements could never be
/// fetched again, silently. A demo key (`serve --simulate` without LINK_TOKEN_KEYS) is new
/// on every run: the tokens an earlier run sealed with its own are dropped instead.
async fn check_token_keys(config: &Config, store: &Store) -> anyhow::Result<()> {
    for (kid, count) in store.token_keys().await? {
        let held = config
            .link_token_keys
            .as_ref()
            .is_some_and(|keys| keys.holds(&kid));
        if held {
            continue;
        }
        if config.link_token_keys_demo {
            store.drop_tokens_of_key(kid.clone()).await?;
            tracing::warn!(
                kid,
                count,
                "link tokens kept by an earlier run's demo key were dropped"
            );
            continue;
        }
        let what = if config.link_token_keys.is_some() {
            "has no key"
        } else {
            "is not set, but it needs the key"
        };
        anyhow::bail!(
            "LINK_TOKEN_KEYS {what} {kid:?}, which seals {count} kept Link token(s): put that \
             key back (after the new one while rotating), or forget those Links"
        );
    }
    Ok(())
}
