//! Several Switchboards behind a SIP load balancer, sharing one PostgreSQL store.
//!
//! Each node is a whole server: its own SIP sockets, RTP ports and calls, which it alone
//! owns. What they share goes through the database they already write their records to:
//! - the **ACD** runs on one node at a time, the leader ([`membership`]); the others send
//!   it their callers and their phones' answers, and it sends back its offers ([`bus`]).
//!   So a queue has one order, whichever node each caller reached, and an agent is
//!   offered callers of every node;
//! - **registrations**: each node publishes its registered phones, so a node can ring an
//!   agent whose REGISTER reached another one;
//! - **the event log and call records**: one log numbered across nodes, each event
//!   naming its node, so a survivor can record a dead node's calls in progress.
//!
//! See docs/scale-out.md for the design, its limits and the measured figures.

pub mod bus;
pub mod membership;

use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use tracing::warn;

pub use bus::{BusMsg, BusSender, SharedBinding, To};

use crate::config::ClusterConfig;
use crate::store::{now_ms, Store};

/// A node's part in the cluster.
pub struct Cluster {
    pub config: ClusterConfig,
    pub bus: BusSender,
    pub membership: membership::Membership,
    /// What the bus brings for the ACD task, taken by it at its start.
    pub acd_inbox: Option<mpsc::UnboundedReceiver<(String, BusMsg)>>,
    /// Other nodes' registered phones, taken by the switch at its start.
    pub bindings_inbox: Option<mpsc::UnboundedReceiver<(String, String, Vec<SharedBinding>)>>,
    pub registrations: Registrations,
}

/// Joins the cluster the configuration names, on the store's PostgreSQL database.
pub async fn join(config: &ClusterConfig, store: &Store) -> anyhow::Result<Cluster> {
    let Some(pool) = store.postgres().cloned() else {
        anyhow::bail!("a cluster needs a PostgreSQL store");
    };
    let (acd, acd_inbox) = mpsc::unbounded_channel();
    let (bindings, bindings_inbox) = mpsc::unbounded_channel();
    // Listening before anything is sent, so no node's answer to our first word is missed.
    bus::listen(&pool, &config.node, bus::Inbox { acd, bindings }).await?;
    let bus = bus::sender(pool.clone(), &config.node);
    let membership = membership::start(
        pool.clone(),
        &config.node,
        Duration::from_secs(config.dead_after_secs),
    )
    .await?;
    let registrations = Registrations::start(pool, bus.clone());
    Ok(Cluster {
        config: config.clone(),
        bus,
        membership,
        acd_inbox: Some(acd_inbox),
        bindings_inbox: Some(bindings_inbox),
        registrations,
    })
}

/// Publishes this node's registered phones: kept in `registrations` (for nodes that start
/// later) and announced on the bus (for those running), in the order they changed.
#[derive(Clone)]
pub struct Registrations {
    tx: mpsc::UnboundedSender<(String, Vec<SharedBinding>)>,
    pool: PgPool,
    node: std::sync::Arc<str>,
}

impl Registrations {
    fn start(pool: PgPool, bus: BusSender) -> Registrations {
        let (tx, mut rx) = mpsc::unbounded_channel::<(String, Vec<SharedBinding>)>();
        let node: std::sync::Arc<str> = bus.node().into();
        let (p, n) = (pool.clone(), node.clone());
        tokio::spawn(async move {
            while let Some((user, bindings)) = rx.recv().await {
                if let Err(e) = save(&p, &n, &user, &bindings).await {
                    warn!(error = %e, %user, "could not share a registration");
                }
                bus.send(To::All, BusMsg::Bindings { user, bindings });
            }
        });
        Registrations { tx, pool, node }
    }

    /// `user`'s phones registered on this node now (empty: none left).
    pub fn publish(&self, user: &str, bindings: Vec<SharedBinding>) {
        let _ = self.tx.send((user.to_string(), bindings));
    }

    /// Every other node's unexpired registrations: (node, user, phones).
    pub async fn others(&self) -> anyhow::Result<Vec<(String, String, Vec<SharedBinding>)>> {
        let rows: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT node, username, bindings FROM registrations
             WHERE node <> $1 AND expires_ms > $2",
        )
        .bind(&*self.node)
        .bind(now_ms())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .filter_map(|(node, user, json)| {
                serde_json::from_str(&json)
                    .ok()
                    .map(|bindings| (node, user, bindings))
            })
            .collect())
    }
}

async fn save(
    pool: &PgPool,
    node: &str,
    user: &str,
    bindings: &[SharedBinding],
) -> anyhow::Result<()> {
    if bindings.is_empty() {
        sqlx::query("DELETE FROM registrations WHERE node = $1 AND username = $2")
            .bind(node)
            .bind(user)
            .execute(pool)
            .await?;
        return Ok(());
    }
    let expires = bindings.iter().map(|b| b.expires_ms).max().unwrap_or(0);
    sqlx::query(
        "INSERT INTO registrations (node, username, bindings, expires_ms) VALUES ($1, $2, $3, $4)
         ON CONFLICT (node, username) DO UPDATE SET bindings = $3, expires_ms = $4",
    )
    .bind(node)
    .bind(user)
    .bind(serde_json::to_string(bindings)?)
    .bind(expires)
    .execute(pool)
    .await?;
    Ok(())
}
