//! Leases that make replicas take turns: one replica at a time runs the background work
//! ([`Leader`]), and one RequestRefresh at a time works on a link token ([`Turn`]).
//!
//! Both are rows with an expiry (`leader_lease`, `link_turns`), judged by the database's
//! clock and renewed by their holder while it works, not session locks: a replica that
//! freezes (a paused VM, a partition) keeps its sessions open, and a session lock would stay
//! held with them. A silent holder's lease runs out within [`LEASE`], and another replica
//! takes over. Waiting for a lease holds no connection: a crowd of callers cannot drain the
//! pool.
//!
//! The leader stops counting itself leader *before* anyone else can start: it measures its
//! lease from the moment it sent the renewal (the database stamped it later), less a margin
//! for clocks that run at slightly different rates.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use diesel::sql_types::{Double, Text};
use diesel_async::RunQueryDsl;
use tokio_util::sync::CancellationToken;

use super::db::Db;
use crate::store::{StoreError, StoreResult};

/// Lock key of the migrations ("fref" and a number), clear of other users of the database.
pub(super) const MIGRATION_LOCK: i64 = 0x6672_6566_0001;

/// How long a lease lasts past its last renewal.
pub(super) const LEASE: Duration = Duration::from_secs(5);
/// How often a lease is renewed (and a replica that does not lead tries to).
const RENEW: Duration = Duration::from_secs(1);
/// Taken off the leader's own reckoning of its lease: rate differences between its clock and
/// the database's over one lease are far below this.
const MARGIN: Duration = Duration::from_secs(1);
/// Longest a shutdown waits to give the leader's lease back.
const RESIGN_WAIT: Duration = Duration::from_secs(1);
/// The first and the longest pause between two tries for a link turn held elsewhere.
const TURN_POLL_FIRST: Duration = Duration::from_millis(20);
const TURN_POLL_MAX: Duration = Duration::from_millis(250);

#[derive(diesel::QueryableByName)]
struct Holder {
    #[diesel(sql_type = Text)]
    #[allow(dead_code)] // only whether a row came back matters
    holder: String,
}

/// Who this replica is in the lease tables: its process id and a random part, so an
/// operator reading `leader_lease` can tell replicas apart.
pub(super) fn replica_id() -> String {
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("pid{}-{}", std::process::id(), &random[..12])
}

/// Whether this replica runs the cluster's background work, kept up to date by its task.
#[derive(Clone)]
pub(super) struct Leader {
    /// Until when this replica may act as leader (None: it does not lead).
    until: Arc<Mutex<Option<Instant>>>,
    db: Db,
    me: Arc<str>,
}

impl Leader {
    /// The handle and the task that campaigns for the lease (and renews it) until `stop`.
    pub(super) fn new(
        db: Db,
        me: &str,
        stop: CancellationToken,
    ) -> (Leader, impl Future<Output = ()> + Send + 'static) {
        let leader = Leader {
            until: Arc::default(),
            db,
            me: me.into(),
        };
        let campaign = leader.clone();
        let task = async move {
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = campaign.campaign() => {}
            }
            campaign.set_until(None);
        };
        (leader, task)
    }

    /// Whether this replica leads now: its lease, as it reckons it, has not run out.
    pub(super) fn leads(&self) -> bool {
        self.until().is_some_and(|until| Instant::now() < until)
    }

    /// Resolves once this replica does not lead (at once if it does not now).
    pub(super) async fn lost(&self) {
        while let Some(until) = self.until().filter(|u| Instant::now() < *u) {
            tokio::time::sleep_until(until.into()).await;
        }
    }

    /// Gives the lease up, so another replica takes over at its next try rather than after
    /// the lease runs out (a clean shutdown).
    /// Bounded by [`RESIGN_WAIT`]: a shutdown does not wait on a database that is away (the
    /// lease then runs out by itself).
    pub(super) async fn resign(&self) {
        self.set_until(None);
        let me = self.me.clone();
        let given_back = self.db.write(async |c| {
            diesel::sql_query("DELETE FROM leader_lease WHERE holder = $1")
                .bind::<Text, _>(&*me)
                .execute(c)
                .await?;
            Ok(())
        });
        let _ = tokio::time::timeout(RESIGN_WAIT, given_back).await;
    }

    fn until(&self) -> Option<Instant> {
        *self.until.lock().expect("leader lease")
    }

    fn set_until(&self, until: Option<Instant>) {
        *self.until.lock().expect("leader lease") = until;
    }

    async fn campaign(&self) {
        let mut was_leading = false;
        loop {
            let sent = Instant::now();
            match self.try_lead().await {
                Ok(true) => self.set_until(Some(sent + LEASE - MARGIN)),
                Ok(false) => self.set_until(None),
                // Unanswered: the lease (if held) runs out by itself, here and in the
                // database alike.
                Err(e) if was_leading => {
                    tracing::warn!(error = %e, "could not renew the background-work lease")
                }
                Err(_) => {}
            }
            let leading = self.leads();
            if leading != was_leading {
                if leading {
                    tracing::info!("this replica now runs the background work");
                } else {
                    tracing::warn!("this replica no longer runs the background work");
                }
                was_leading = leading;
            }
            tokio::time::sleep(RENEW).await;
        }
    }

    /// One round: takes the lease if nobody holds it (or its holder went silent), renews it
    /// if this replica holds it. Whether this replica holds it now.
    async fn try_lead(&self) -> StoreResult<bool> {
        let me = self.me.clone();
        self.db
            .write(async |tx| {
                let held: Vec<Holder> = diesel::sql_query(
                    "INSERT INTO leader_lease (singleton, holder, expires_at) \
                     VALUES (TRUE, $1, clock_timestamp() + make_interval(secs => $2)) \
                     ON CONFLICT (singleton) DO UPDATE \
                     SET holder = excluded.holder, expires_at = excluded.expires_at \
                     WHERE leader_lease.holder = excluded.holder \
                        OR leader_lease.expires_at < clock_timestamp() \
                     RETURNING holder",
                )
                .bind::<Text, _>(&*me)
                .bind::<Double, _>(LEASE.as_secs_f64())
                .load(tx)
                .await?;
                Ok(!held.is_empty())
            })
            .await
    }
}

/// A link token's turn, held until dropped; renewed meanwhile by a task of its own.
pub struct Turn {
    renewal: tokio::task::JoinHandle<()>,
    release: Option<Release>,
}

/// What dropping a turn gives back.
struct Release {
    db: Db,
    token_sha256: String,
    me: String,
}

impl Turn {
    /// Waits until no other request, on any replica, works on this token, then takes the
    /// turn. Waits without holding a connection, and no later than `deadline`.
    pub(super) async fn take(db: &Db, token_sha256: &str, deadline: Instant) -> StoreResult<Turn> {
        let me = replica_id();
        let mut pause = TURN_POLL_FIRST;
        loop {
            if try_turn(db, token_sha256, &me).await? {
                break;
            }
            if Instant::now() + pause >= deadline {
                return Err(StoreError::Unavailable(
                    "another request for this Link is still being worked on; retry shortly".into(),
                ));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(TURN_POLL_MAX);
        }
        let release = Release {
            db: db.clone(),
            token_sha256: token_sha256.to_owned(),
            me,
        };
        let renewal = tokio::spawn(renew_turn(
            db.clone(),
            release.token_sha256.clone(),
            release.me.clone(),
        ));
        Ok(Turn {
            renewal,
            release: Some(release),
        })
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        self.renewal.abort();
        let Some(Release {
            db,
            token_sha256,
            me,
        }) = self.release.take()
        else {
            return;
        };
        // Giving the turn back is a round trip, and Drop cannot wait for it. Should it fail,
        // the lease runs out by itself.
        tokio::spawn(async move {
            let released = db
                .write(async |c| {
                    diesel::sql_query(
                        "DELETE FROM link_turns WHERE token_sha256 = $1 AND holder = $2",
                    )
                    .bind::<Text, _>(&token_sha256)
                    .bind::<Text, _>(&me)
                    .execute(c)
                    .await?;
                    Ok(())
                })
                .await;
            if let Err(e) = released {
                tracing::warn!(error = %e, "could not give a link turn back; its lease will run out");
            }
        });
    }
}

/// Takes the turn of `token_sha256` for `me` if it is free or its holder went silent.
async fn try_turn(db: &Db, token_sha256: &str, me: &str) -> StoreResult<bool> {
    db.write(async |tx| {
        let held: Vec<Holder> = diesel::sql_query(
            "INSERT INTO link_turns (token_sha256, holder, expires_at) \
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3)) \
             ON CONFLICT (token_sha256) DO UPDATE \
             SET holder = excluded.holder, expires_at = excluded.expires_at \
             WHERE link_turns.expires_at < clock_timestamp() \
             RETURNING holder",
        )
        .bind::<Text, _>(token_sha256)
        .bind::<Text, _>(me)
        .bind::<Double, _>(LEASE.as_secs_f64())
        .load(tx)
        .await?;
        Ok(!held.is_empty())
    })
    .await
}

/// Keeps a turn's lease from running out while its holder works (until aborted).
async fn renew_turn(db: Db, token_sha256: String, me: String) {
    loop {
        tokio::time::sleep(RENEW).await;
        let renewed = db
            .write(async |c| {
                Ok(diesel::sql_query(
                    "UPDATE link_turns \
                     SET expires_at = clock_timestamp() + make_interval(secs => $3) \
                     WHERE token_sha256 = $1 AND holder = $2",
                )
                .bind::<Text, _>(&token_sha256)
                .bind::<Text, _>(&me)
                .bind::<Double, _>(LEASE.as_secs_f64())
                .execute(c)
                .await?)
            })
            .await;
        match renewed {
            Ok(0) => {
                tracing::warn!("a link turn's lease ran out while its request still worked");
                return;
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "could not renew a link turn"),
        }
    }
}
