//! Follows every result of some Links and keeps the cursor in a file, so a restart misses
//! nothing and repeats nothing:
//!
//! ```sh
//! cargo run -p fintoc-refresh-client --example follow -- http://127.0.0.1:50051 cursor.txt link_1 link_2
//! ```

use fintoc_refresh_client::pb::watch_refresh_response::Event;
use fintoc_refresh_client::{Client, Options, Target, WatchEvent};
use futures_util::StreamExt;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (server, cursor_file) = match (args.next(), args.next()) {
        (Some(server), Some(file)) => (server, file),
        _ => return Err("usage: follow <server> <cursor file> <link id>...".into()),
    };
    let links: Vec<String> = args.collect();
    let stored = std::fs::read_to_string(&cursor_file)
        .ok()
        .and_then(|text| text.trim().parse().ok());

    let client = Client::connect([server], Options::default())?;
    let mut watcher = client.watch(Target::links(links)).after(stored);
    while let Some(event) = watcher.next().await {
        match event? {
            WatchEvent::Message(message) => {
                if let Some(Event::AccountResult(result)) = message.event {
                    println!(
                        "#{} {} {:?}",
                        message.sequence,
                        result.account_id,
                        result.status()
                    );
                }
            }
            WatchEvent::Resynced { links, .. } => println!("re-synced: {} Links", links.len()),
            WatchEvent::Reconnecting { delay, .. } => eprintln!("reconnecting in {delay:?}"),
        }
        // Stored after each event: a crash between the two repeats at most that one.
        if let Some(cursor) = watcher.cursor() {
            std::fs::write(&cursor_file, cursor.to_string())?;
        }
    }
    Ok(())
}
