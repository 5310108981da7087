//! Messages between nodes, over PostgreSQL's LISTEN/NOTIFY on the store every node
//! already uses: no second piece of infrastructure to run.
//!
//! One task sends, on one connection, so a node's messages arrive everywhere in the order
//! it sent them (an offer before its cancel); what piles up while a notification is in
//! flight goes out together in the next (a payload holds up to 8000 bytes). One task
//! listens and hands each message to the part of the node it is for. A message sent while
//! the listener reconnects is lost: the ACD's followers send their waiting callers again
//! whenever a leader announces itself, and registrations are also read from the table.

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use crate::acd::{CallId, Event};
use crate::call::acd::AcdMsg;

/// The notification channel every node listens on.
const CHANNEL: &str = "switchboard_cluster";
/// Below PostgreSQL's 8000-byte payload limit, with room for the envelope.
const PAYLOAD_MAX: usize = 7000;

/// Who a message is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum To {
    /// Whichever node leads the ACD now (none: the message is dropped; its sender
    /// repeats what matters when a leader announces itself).
    Leader,
    Node(String),
    /// Every other node.
    All,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum BusMsg {
    /// A caller of the sending node enters a queue.
    AcdEnqueue {
        call: CallId,
        uuid: String,
        queue: String,
        skills: Vec<(String, u8)>,
        priority: i32,
    },
    /// What a call (or an agent's phone) of the sending node did.
    AcdEvent {
        event: Event,
    },
    /// An agent's request made on the sending node, answered with [`BusMsg::AcdReply`].
    AcdRequest {
        id: u64,
        event: Event,
        cause: String,
    },
    AcdReply {
        id: u64,
        result: Result<(), String>,
    },
    /// The leader's word to one call of the receiving node.
    AcdToCall {
        call: CallId,
        msg: AcdMsg,
    },
    /// The sender now leads the ACD.
    LeaderIs,
    /// The sender's registered phones of `user` now (empty: none).
    Bindings {
        user: String,
        bindings: Vec<SharedBinding>,
    },
}

/// A registered phone as other nodes need it to ring it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedBinding {
    pub contact: String,
    /// `udp:127.0.0.1:5062`: where requests to it go (its Contact, its NAT source, or
    /// the first proxy of its Path).
    pub target: String,
    pub expires_ms: i64,
    pub path: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Envelope {
    from: String,
    to: To,
    msg: BusMsg,
}

/// The way onto the bus, cheap to clone; never waits.
#[derive(Clone)]
pub struct BusSender {
    node: std::sync::Arc<str>,
    tx: mpsc::UnboundedSender<(To, BusMsg)>,
}

impl BusSender {
    pub fn send(&self, to: To, msg: BusMsg) {
        let _ = self.tx.send((to, msg));
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// A sender whose messages the test reads instead of PostgreSQL.
    #[cfg(test)]
    pub fn for_test(node: &str) -> (BusSender, mpsc::UnboundedReceiver<(To, BusMsg)>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let sender = BusSender {
            node: node.into(),
            tx,
        };
        (sender, rx)
    }
}

/// Where the listener hands what arrives: the ACD task and the switch.
pub struct Inbox {
    pub acd: mpsc::UnboundedSender<(String, BusMsg)>,
    pub bindings: mpsc::UnboundedSender<(String, String, Vec<SharedBinding>)>,
}

/// Starts the sending task.
pub fn sender(pool: PgPool, node: &str) -> BusSender {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(send_loop(pool, node.to_string(), rx));
    BusSender {
        node: node.into(),
        tx,
    }
}

async fn send_loop(pool: PgPool, node: String, mut rx: mpsc::UnboundedReceiver<(To, BusMsg)>) {
    let mut conn = None;
    let mut queued: Vec<String> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut next = Some(first);
        // Everything waiting, each encoded once; a batch is a JSON array.
        while let Some((to, msg)) = next.take() {
            let env = Envelope {
                from: node.clone(),
                to,
                msg,
            };
            match serde_json::to_string(&env) {
                Ok(json) if json.len() <= PAYLOAD_MAX => queued.push(json),
                Ok(json) => warn!(bytes = json.len(), "a cluster message is too long to send"),
                Err(e) => warn!(error = %e, "could not encode a cluster message"),
            }
            next = rx.try_recv().ok();
        }
        for payload in batches(&queued) {
            // A lost connection is opened again once, then the batch is given up: the
            // bus is for live coordination, and its users recover from a gap.
            for attempt in 0..2 {
                if conn.is_none() {
                    conn = pool.acquire().await.ok().map(|c| c.detach());
                }
                let Some(c) = conn.as_mut() else { break };
                let sent = sqlx::query("SELECT pg_notify($1, $2)")
                    .bind(CHANNEL)
                    .bind(&payload)
                    .execute(&mut *c)
                    .await;
                match sent {
                    Ok(_) => break,
                    Err(e) => {
                        warn!(error = %e, attempt, "could not send cluster messages");
                        conn = None;
                    }
                }
            }
        }
        queued.clear();
    }
}

/// Packs encoded envelopes into JSON arrays of at most PAYLOAD_MAX bytes, in order.
fn batches(items: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::from("[");
    for item in items {
        if cur.len() > 1 && cur.len() + item.len() + 2 > PAYLOAD_MAX {
            cur.push(']');
            out.push(std::mem::replace(&mut cur, String::from("[")));
        }
        if cur.len() > 1 {
            cur.push(',');
        }
        cur.push_str(item);
    }
    if cur.len() > 1 {
        cur.push(']');
        out.push(cur);
    }
    out
}

/// Starts the listening task. Resolves once it listens, so nothing sent after the start
/// is missed.
pub async fn listen(pool: &PgPool, node: &str, inbox: Inbox) -> anyhow::Result<()> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    let node = node.to_string();
    tokio::spawn(async move {
        loop {
            // try_recv: None when the connection was lost (it reconnects on the next call).
            let n = match listener.try_recv().await {
                Ok(Some(n)) => n,
                Ok(None) => {
                    warn!("the cluster bus connection was lost; listening again");
                    continue;
                }
                Err(e) => {
                    warn!(error = %e, "the cluster bus failed; retrying in a second");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    continue;
                }
            };
            debug!(payload = n.payload(), "cluster message");
            let batch = match serde_json::from_str::<Vec<Envelope>>(n.payload()) {
                Ok(b) => b,
                Err(e) => {
                    warn!(error = %e, "an unreadable cluster message was ignored");
                    continue;
                }
            };
            for env in batch {
                deliver(&node, env, &inbox);
            }
        }
    });
    info!(channel = CHANNEL, "listening to the cluster");
    Ok(())
}

fn deliver(node: &str, env: Envelope, inbox: &Inbox) {
    let mine = match &env.to {
        To::Node(n) => n == node,
        To::All => env.from != node,
        // The ACD task knows whether it leads; a leader hears its own too (it sends
        // those in-process instead, so none arrive).
        To::Leader => env.from != node,
    };
    if !mine {
        return;
    }
    match env.msg {
        BusMsg::Bindings { user, bindings } => {
            let _ = inbox.bindings.send((env.from, user, bindings));
        }
        msg => {
            let _ = inbox.acd.send((env.from, msg));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_keep_order_and_stay_under_the_payload_limit() {
        let items: Vec<String> = (0..50)
            .map(|i| format!("{{\"n\":{i},\"pad\":\"{}\"}}", "x".repeat(400)))
            .collect();
        let out = batches(&items);
        assert!(out.len() > 1, "50 × 400 bytes cannot fit one payload");
        let mut seen = Vec::new();
        for b in &out {
            assert!(b.len() <= PAYLOAD_MAX, "a batch of {} bytes", b.len());
            let v: Vec<serde_json::Value> = serde_json::from_str(b).unwrap();
            seen.extend(v.iter().map(|x| x["n"].as_i64().unwrap()));
        }
        assert_eq!(seen, (0..50).collect::<Vec<_>>());
        assert!(batches(&[]).is_empty());
    }

    #[test]
    fn a_message_reaches_only_the_nodes_it_is_for() {
        let (acd, mut acd_rx) = mpsc::unbounded_channel();
        let (bindings, mut b_rx) = mpsc::unbounded_channel();
        let inbox = Inbox { acd, bindings };
        let env = |from: &str, to: To, msg: BusMsg| Envelope {
            from: from.into(),
            to,
            msg,
        };
        deliver(
            "a",
            env("b", To::Node("c".into()), BusMsg::LeaderIs),
            &inbox,
        );
        deliver("a", env("a", To::All, BusMsg::LeaderIs), &inbox);
        assert!(
            acd_rx.try_recv().is_err(),
            "not for a, or a's own broadcast"
        );
        deliver("a", env("b", To::Leader, BusMsg::LeaderIs), &inbox);
        assert_eq!(
            acd_rx.try_recv().unwrap(),
            ("b".to_string(), BusMsg::LeaderIs)
        );
        let msg = BusMsg::Bindings {
            user: "2001".into(),
            bindings: vec![],
        };
        deliver("a", env("b", To::All, msg), &inbox);
        assert_eq!(
            b_rx.try_recv().unwrap(),
            ("b".into(), "2001".into(), vec![])
        );
    }
}
