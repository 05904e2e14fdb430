//! The in-memory fan-out that wakes watchers when results are committed.
//!
//! The database is the truth; the hub only saves watchers a query. Once a commit is durable
//! the store hands the hub the new log entries, in sequence order (shared `Arc`s, never copied per
//! watcher). Each subscriber is indexed by its target, so an entry reaches only the watchers of
//! its intent, Link and account (a lookup per entry, not per watcher); it goes into that
//! subscriber's own bounded queue and the subscriber is woken. A selection's one subscriber is
//! indexed under each of its ids (sharing the id strings with the selection itself: one
//! mailbox, not one per id), and an entry matched both by its Link and its account is queued
//! once. Watchers of every result sit in a list of their own: no lookup at all.
//!
//! The writer never waits on a watcher: when a queue is full the subscriber is marked
//! *lagged* and its queue dropped; the watcher then catches up from the database from its
//! last cursor, so it is never silently skipped.
//!
//! `high_water` is the newest sequence handed out. It is stored after the entries are queued
//! (release) and read before a watcher checks its queue (acquire): a watcher that finds its
//! queue empty after reading `h` has seen every entry up to `h` meant for it, which makes `h`
//! a safe heartbeat cursor.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::domain::{ResultRow, Target};

type Entry = Arc<ResultRow>;

/// One watcher's mailbox.
pub struct Subscriber {
    queue: Mutex<Queue>,
    wake: Notify,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Entry>,
    lagged: bool,
    /// The newest sequence offered to this subscriber: an entry reached through two of its
    /// keys (a selection listing both the Link and the account) is queued once.
    last: i64,
}

/// What a watcher finds in its mailbox.
pub enum Next {
    /// The next entry meant for it.
    Entry(Entry),
    /// It fell behind: entries were dropped; catch up from the database.
    Lagged,
    /// Nothing queued; everything up to `high_water` meant for it has been handed over.
    Idle { high_water: i64 },
    /// The server is shutting down.
    Closed,
}

/// The subscribers under one key. Most keys have one watcher: a short list costs far less
/// than a map per key, which matters when a selection registers under 1,000 keys.
type Subscribers = Vec<(u64, Arc<Subscriber>)>;

#[derive(Default)]
struct Index {
    by_intent: HashMap<Arc<str>, Subscribers>,
    by_link: HashMap<Arc<str>, Subscribers>,
    by_account: HashMap<Arc<str>, Subscribers>,
    all: Subscribers,
}

impl Index {
    /// Every (map, key) a target's subscriber is registered under.
    fn keys<'a>(
        &'a mut self,
        target: &'a Target,
        mut each: impl FnMut(&mut HashMap<Arc<str>, Subscribers>, &Arc<str>),
    ) {
        match target {
            Target::Intent(id) => each(&mut self.by_intent, &Arc::from(id.as_str())),
            Target::Link(id) => each(&mut self.by_link, &Arc::from(id.as_str())),
            Target::Account(id) => each(&mut self.by_account, &Arc::from(id.as_str())),
            Target::Selection(selection) => {
                for id in &selection.links {
                    each(&mut self.by_link, id);
                }
                for id in &selection.accounts {
                    each(&mut self.by_account, id);
                }
            }
            Target::All => {}
        }
    }

    fn insert(&mut self, target: &Target, id: u64, sub: &Arc<Subscriber>) {
        if let Target::All = target {
            self.all.push((id, sub.clone()));
            return;
        }
        self.keys(target, |map, key| {
            map.entry(key.clone()).or_default().push((id, sub.clone()));
        });
    }

    fn remove(&mut self, target: &Target, id: u64) {
        if let Target::All = target {
            self.all.retain(|(other, _)| *other != id);
            return;
        }
        self.keys(target, |map, key| {
            if let Some(subs) = map.get_mut(&**key) {
                subs.retain(|(other, _)| *other != id);
                if subs.is_empty() {
                    map.remove(&**key);
                }
            }
        });
    }

    fn every(&self) -> impl Iterator<Item = &Arc<Subscriber>> {
        [&self.by_intent, &self.by_link, &self.by_account]
            .into_iter()
            .flat_map(|map| map.values().flatten())
            .chain(self.all.iter())
            .map(|(_, sub)| sub)
    }
}

pub struct Hub {
    index: Mutex<Index>,
    high_water: AtomicI64,
    next_id: AtomicU64,
    open: AtomicU64,
    closed: AtomicBool,
    /// Entries a subscriber may have queued before it is marked lagged.
    capacity: usize,
}

impl Hub {
    pub fn new(capacity: usize) -> Hub {
        Hub {
            index: Mutex::default(),
            high_water: AtomicI64::new(0),
            next_id: AtomicU64::new(0),
            open: AtomicU64::new(0),
            closed: AtomicBool::new(false),
            capacity: capacity.max(1),
        }
    }

    /// The newest sequence handed to the hub.
    pub fn high_water(&self) -> i64 {
        self.high_water.load(Ordering::Acquire)
    }

    /// Sets the starting point (the log's newest sequence when the server starts).
    pub fn start_at(&self, sequence: i64) {
        self.high_water.fetch_max(sequence, Ordering::AcqRel);
    }

    /// Open subscriptions (watch streams).
    pub fn open_streams(&self) -> u64 {
        self.open.load(Ordering::Relaxed)
    }

    /// Registers a watcher of `target`. Entries committed from now on reach it; the watcher
    /// reads anything older from the database. Dropping the subscription unregisters it.
    pub fn subscribe(self: &Arc<Self>, target: Target) -> Subscription {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let sub = Arc::new(Subscriber {
            queue: Mutex::default(),
            wake: Notify::new(),
        });
        self.index
            .lock()
            .expect("hub lock")
            .insert(&target, id, &sub);
        self.open.fetch_add(1, Ordering::Relaxed);
        Subscription {
            hub: self.clone(),
            target,
            id,
            sub,
        }
    }

    /// Hands newly committed entries (in sequence order) to their watchers. Never blocks on a
    /// watcher.
    pub fn publish(&self, entries: &[Entry]) {
        let Some(last) = entries.last() else { return };
        {
            let index = self.index.lock().expect("hub lock");
            for entry in entries {
                let maps = [
                    (&index.by_intent, entry.refresh_intent_id.as_str()),
                    (&index.by_link, entry.link_id.as_str()),
                    (&index.by_account, entry.account_id.as_str()),
                ];
                for (map, key) in maps {
                    if key.is_empty() {
                        continue;
                    }
                    if let Some(subs) = map.get(key) {
                        for (_, sub) in subs {
                            self.deliver(sub, entry);
                        }
                    }
                }
                for (_, sub) in &index.all {
                    self.deliver(sub, entry);
                }
            }
            // Still under the index lock: a subscriber registering concurrently either got
            // these entries queued or reads a high water that already covers them.
            self.high_water.fetch_max(last.sequence, Ordering::AcqRel);
        }
    }

    fn deliver(&self, sub: &Subscriber, entry: &Entry) {
        let mut queue = sub.queue.lock().expect("subscriber lock");
        if entry.sequence <= queue.last {
            return;
        }
        queue.last = entry.sequence;
        if queue.lagged {
            return;
        }
        if queue.items.len() >= self.capacity {
            // Drop what it has not read: it will re-read all of it from the database.
            queue.lagged = true;
            queue.items = VecDeque::new();
        } else {
            queue.items.push_back(entry.clone());
        }
        drop(queue);
        sub.wake.notify_one();
    }

    /// Ends every subscription: watchers see `Next::Closed`.
    pub fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let index = self.index.lock().expect("hub lock");
        for sub in index.every() {
            sub.wake.notify_one();
        }
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }
}

/// A registered watcher; unregistered on drop, so a disconnect frees it at once.
pub struct Subscription {
    hub: Arc<Hub>,
    target: Target,
    id: u64,
    sub: Arc<Subscriber>,
}

impl Subscription {
    /// Takes the next thing in the mailbox without waiting.
    pub fn try_next(&self) -> Next {
        if self.hub.is_closed() {
            return Next::Closed;
        }
        let high_water = self.hub.high_water();
        let mut queue = self.sub.queue.lock().expect("subscriber lock");
        if queue.lagged {
            return Next::Lagged;
        }
        match queue.items.pop_front() {
            Some(entry) => Next::Entry(entry),
            None => Next::Idle { high_water },
        }
    }

    /// Clears the lagged mark before catching up from the database: anything committed after
    /// this point is queued (or marks it lagged again), anything before it is in the database.
    ///
    /// It holds the hub's lock while doing so: a publish is then either wholly before it (its
    /// entries are at or below the high water read afterwards, so in the catch-up's range) or
    /// wholly after it (queued).
    pub fn recover(&self) {
        let _publishing = self.hub.index.lock().expect("hub lock");
        let mut queue = self.sub.queue.lock().expect("subscriber lock");
        queue.lagged = false;
        queue.items.clear();
    }

    /// Waits until something is delivered (or the hub closes). May wake spuriously.
    pub async fn changed(&self) {
        self.sub.wake.notified().await;
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub
            .index
            .lock()
            .expect("hub lock")
            .remove(&self.target, self.id);
        self.hub.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(sequence: i64, link: &str, account: &str, intent: &str) -> Entry {
        Arc::new(ResultRow::example(sequence, account).of(link, intent))
    }

    fn seq(next: Next) -> i64 {
        match next {
            Next::Entry(e) => e.sequence,
            Next::Idle { high_water } => -high_water,
            Next::Lagged => i64::MIN,
            Next::Closed => i64::MAX,
        }
    }

    #[test]
    fn routes_by_target_and_reports_idle_high_water() {
        let hub = Arc::new(Hub::new(8));
        let link = hub.subscribe(Target::Link("link_a".into()));
        let account = hub.subscribe(Target::Account("acc_2".into()));
        let intent = hub.subscribe(Target::Intent("ri_1".into()));
        hub.publish(&[
            row(1, "link_a", "acc_1", "ri_1"),
            row(2, "link_a", "acc_2", ""),
            row(3, "link_b", "acc_3", ""),
        ]);
        assert_eq!(seq(link.try_next()), 1);
        assert_eq!(seq(link.try_next()), 2);
        assert_eq!(seq(link.try_next()), -3);
        assert_eq!(seq(account.try_next()), 2);
        assert_eq!(seq(account.try_next()), -3);
        assert_eq!(seq(intent.try_next()), 1);
        assert_eq!(seq(intent.try_next()), -3);
        assert_eq!(hub.open_streams(), 3);
        drop((link, account, intent));
        assert_eq!(hub.open_streams(), 0);
        assert!(hub.index.lock().unwrap().by_link.is_empty());
    }

    #[test]
    fn a_full_queue_lags_instead_of_blocking_and_recovers() {
        let hub = Arc::new(Hub::new(2));
        let slow = hub.subscribe(Target::Link("l".into()));
        let fast = hub.subscribe(Target::Link("l".into()));
        hub.publish(&[row(1, "l", "a", ""), row(2, "l", "a", "")]);
        assert_eq!(seq(fast.try_next()), 1);
        assert_eq!(seq(fast.try_next()), 2);
        hub.publish(&[row(3, "l", "a", "")]);
        assert_eq!(seq(fast.try_next()), 3);
        assert_eq!(
            seq(slow.try_next()),
            i64::MIN,
            "slow watcher must be told it lagged"
        );
        assert_eq!(seq(slow.try_next()), i64::MIN, "lag sticks until recovered");
        slow.recover();
        hub.publish(&[row(4, "l", "a", "")]);
        assert_eq!(seq(slow.try_next()), 4);
    }

    #[test]
    fn a_selection_gets_each_entry_once_and_all_gets_everything() {
        let hub = Arc::new(Hub::new(8));
        let selection = crate::domain::Selection::new(["link_a", "link_c"], ["acc_1", "acc_3"]);
        let some = hub.subscribe(Target::Selection(Arc::new(selection)));
        let every = hub.subscribe(Target::All);
        hub.publish(&[
            // Listed both by its Link and its account: once.
            row(1, "link_a", "acc_1", ""),
            row(2, "link_b", "acc_2", ""),
            row(3, "link_b", "acc_3", ""),
            row(4, "link_c", "acc_4", "ri_1"),
        ]);
        let taken: Vec<i64> = std::iter::from_fn(|| Some(seq(some.try_next())))
            .take_while(|s| *s > 0)
            .collect();
        assert_eq!(taken, [1, 3, 4]);
        let taken: Vec<i64> = std::iter::from_fn(|| Some(seq(every.try_next())))
            .take_while(|s| *s > 0)
            .collect();
        assert_eq!(taken, [1, 2, 3, 4]);
        // Dropping them leaves no key behind (a selection is registered under every id).
        drop((some, every));
        let index = hub.index.lock().unwrap();
        assert!(index.by_link.is_empty() && index.by_account.is_empty() && index.all.is_empty());
    }

    #[test]
    fn close_reaches_every_subscriber() {
        let hub = Arc::new(Hub::new(2));
        let sub = hub.subscribe(Target::Account("a".into()));
        let all = hub.subscribe(Target::All);
        hub.close();
        assert_eq!(seq(sub.try_next()), i64::MAX);
        assert_eq!(seq(all.try_next()), i64::MAX);
    }
}
