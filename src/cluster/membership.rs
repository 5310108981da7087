//! Which nodes are alive, and which one leads the ACD.
//!
//! Every node beats once a second in `cluster_nodes`. The leader is whichever node holds
//! a PostgreSQL advisory lock on its own connection: the database grants it to one
//! session at a time and releases it the moment that session's connection dies, so a
//! killed leader is replaced within a beat, with no election protocol of our own. The
//! leader also watches the others' beats: a node silent for `dead_after_secs` is marked
//! dead (one UPDATE, so only one survivor acts on it), its calls in progress are recorded
//! as interrupted, and the ACD forgets them (their agents go on to wrap-up).

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::store::now_ms;

/// The ACD leader's advisory lock key (an arbitrary constant).
const LEADER_LOCK: i64 = 0x5357_4254_4c45_4144;

/// What membership tells the rest of the node.
pub struct Membership {
    /// Whether this node leads the ACD now.
    pub leading: watch::Receiver<bool>,
    /// Nodes found dead, with their last beat (epoch ms), for this (leading) node to
    /// clean up after.
    pub lost: mpsc::UnboundedReceiver<(String, i64)>,
    state: mpsc::UnboundedSender<&'static str>,
}

impl Membership {
    /// `draining` or `stopped`, written with the next beat (at once).
    pub fn set_state(&self, state: &'static str) {
        let _ = self.state.send(state);
    }

    /// For a task that changes the state later.
    pub fn state_sender(&self) -> mpsc::UnboundedSender<&'static str> {
        self.state.clone()
    }
}

pub async fn start(pool: PgPool, node: &str, dead_after: Duration) -> anyhow::Result<Membership> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO cluster_nodes (name, started_ms, beat_ms, state) VALUES ($1, $2, $2, 'serving')
         ON CONFLICT (name) DO UPDATE SET started_ms = $2, beat_ms = $2, state = 'serving'",
    )
    .bind(node)
    .bind(now)
    .execute(&pool)
    .await?;
    let (leading_tx, leading) = watch::channel(false);
    let (lost_tx, lost) = mpsc::unbounded_channel();
    let (state, state_rx) = mpsc::unbounded_channel();
    tokio::spawn(run(
        pool,
        node.to_string(),
        dead_after,
        leading_tx,
        lost_tx,
        state_rx,
    ));
    Ok(Membership {
        leading,
        lost,
        state,
    })
}

async fn run(
    pool: PgPool,
    node: String,
    dead_after: Duration,
    leading: watch::Sender<bool>,
    lost: mpsc::UnboundedSender<(String, i64)>,
    mut state_rx: mpsc::UnboundedReceiver<&'static str>,
) {
    let mut state = "serving";
    let mut lock: Option<(PgConnection, bool)> = None;
    let mut every = tokio::time::interval(Duration::from_secs(1));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => {}
            s = state_rx.recv() => match s {
                Some(s) => state = s,
                None => return,
            },
        }
        let now = now_ms();
        let beat = sqlx::query("UPDATE cluster_nodes SET beat_ms = $2, state = $3 WHERE name = $1")
            .bind(&node)
            .bind(now)
            .bind(state)
            .execute(&pool)
            .await;
        if let Err(e) = beat {
            warn!(error = %e, "could not write the cluster heartbeat");
        }
        if state == "stopped" {
            return;
        }
        // Hold the leader's lock, or try to take it; a stopping node gives it up.
        let lead = if state == "serving" {
            hold_lock(&pool, &mut lock).await
        } else {
            lock = None;
            false
        };
        if *leading.borrow() != lead {
            info!(%node, leading = lead, "ACD leadership changed");
            let _ = leading.send(lead);
        }
        if lead {
            match mark_dead(&pool, &node, now, dead_after).await {
                Ok(dead) => {
                    for (name, beat) in dead {
                        warn!(node = %name, last_beat_ms = beat, "a node stopped beating: taken for dead");
                        let _ = lost.send((name, beat));
                    }
                }
                Err(e) => warn!(error = %e, "could not look for dead nodes"),
            }
        }
    }
}

/// Whether this node holds the leader's lock after this call. The lock lives on one
/// connection kept for it: while that connection works a held lock is still held; when
/// it breaks, the lock is gone with it and the next call tries again on a new one.
async fn hold_lock(pool: &PgPool, lock: &mut Option<(PgConnection, bool)>) -> bool {
    if let Some((conn, held)) = lock.as_mut() {
        if *held {
            if conn.ping().await.is_ok() {
                return true;
            }
            *lock = None;
        }
    }
    if lock.is_none() {
        let Ok(conn) = pool.acquire().await else {
            return false;
        };
        *lock = Some((conn.detach(), false));
    }
    let Some((conn, held)) = lock.as_mut() else {
        return false;
    };
    match sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
        .bind(LEADER_LOCK)
        .fetch_one(&mut *conn)
        .await
    {
        Ok(got) => {
            *held = got;
            got
        }
        Err(_) => {
            *lock = None;
            false
        }
    }
}

/// Marks every other node silent for `dead_after` as dead; returns those with their last
/// beat. Atomic, so two leaders in a hand-over never both act on one node.
async fn mark_dead(
    pool: &PgPool,
    node: &str,
    now: i64,
    dead_after: Duration,
) -> anyhow::Result<Vec<(String, i64)>> {
    let cutoff = now - dead_after.as_millis() as i64;
    Ok(sqlx::query_as(
        "UPDATE cluster_nodes SET state = 'dead'
         WHERE name <> $1 AND state IN ('serving', 'draining') AND beat_ms < $2
         RETURNING name, beat_ms",
    )
    .bind(node)
    .bind(cutoff)
    .fetch_all(pool)
    .await?)
}
