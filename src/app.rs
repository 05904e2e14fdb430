//! The state every handler shares, and what builds it: the configuration, storage, the hub
//! that wakes watchers, metrics and the Fintoc client. Handlers (`http/`, `grpc/`, `tasks`)
//! import [`App`] from here; `server.rs` only wires listeners and servers around it.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use anyhow::Context;

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
}

impl App {
    /// Opens the database and builds the shared state. The one place the store is told
    /// where durable commits go: the hub.
    pub async fn start(config: Config) -> anyhow::Result<Arc<App>> {
        let hub = Arc::new(Hub::new(config.watch_buffer));
        let metrics = Arc::new(Metrics::new());
        let publish: Publish = {
            let hub = hub.clone();
            Arc::new(move |rows: &[Arc<ResultRow>]| hub.publish(rows))
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
        let fintoc = Client::new(&config, metrics.clone())?;
        Ok(Arc::new(App {
            config,
            store,
            hub,
            metrics,
            fintoc,
            draining: AtomicBool::new(false),
        }))
    }
}
