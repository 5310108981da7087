//! The live calls, as the event log tells them: a fold of the events since start-up, so
//! the API's picture of a call is exactly what the event stream says, and a call is
//! either here (live) or in the store (ended), never neither.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::events::{Event, EventLog};

/// A call in progress.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LiveCall {
    pub call_uuid: String,
    pub caller: String,
    pub dialed: String,
    pub did: Option<String>,
    pub arrived_ms: i64,
    /// `ivr`, `queued`, `ringing`, `talking`, `held`.
    pub phase: String,
    pub queue: Option<String>,
    /// The agent talking on it, or being offered it.
    pub agent: Option<String>,
    pub answered_ms: Option<i64>,
    /// The IVR's variables (secure ones only as their mask, `****`).
    pub variables: BTreeMap<String, String>,
    /// `recording`, `paused` or none.
    pub recording: Option<String>,
    /// Supervisors joined, with their mode (`listen`, `whisper`, `barge`).
    pub supervisors: BTreeMap<String, String>,
    /// The last event that changed it.
    pub seq: u64,
}

impl LiveCall {
    fn apply(&mut self, e: &Event) {
        self.seq = e.seq;
        let s = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(str::to_string);
        match e.kind.as_str() {
            "call.queued" => {
                self.phase = "queued".into();
                self.queue = e.queue.clone();
                if let Some(vars) = e.data.get("variables").and_then(|v| v.as_object()) {
                    for (k, v) in vars {
                        if let Some(v) = v.as_str() {
                            self.variables.insert(k.clone(), v.to_string());
                        }
                    }
                }
            }
            "queue.offered" => {
                self.phase = "ringing".into();
                self.agent = e.agent.clone();
            }
            "queue.ring_no_answer" | "queue.declined" => {
                self.phase = "queued".into();
                self.agent = None;
            }
            "call.answered" | "call.resumed" => {
                self.phase = "talking".into();
                if e.agent.is_some() {
                    self.agent = e.agent.clone();
                }
                self.answered_ms.get_or_insert(e.at_ms);
            }
            "call.held" => self.phase = "held".into(),
            "call.transferred" => {
                self.phase = "ringing".into();
                self.agent = s("to");
            }
            "call.recording" => self.recording = s("state").filter(|st| st != "stopped"),
            "call.supervisor" => match (s("supervisor"), s("mode")) {
                (Some(who), Some(mode)) if mode == "left" => {
                    self.supervisors.remove(&who);
                }
                (Some(who), Some(mode)) => {
                    self.supervisors.insert(who, mode);
                }
                // A mode change on the agent's call: whoever is joined.
                (None, Some(mode)) => {
                    for m in self.supervisors.values_mut() {
                        *m = mode.clone();
                    }
                }
                _ => {}
            },
            _ => {}
        }
    }
}

enum Query {
    All(oneshot::Sender<Vec<LiveCall>>),
    One(String, oneshot::Sender<Option<LiveCall>>),
}

#[derive(Clone)]
pub struct LiveCalls {
    tx: mpsc::UnboundedSender<Query>,
}

impl LiveCalls {
    pub fn start(events: &EventLog) -> LiveCalls {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(events.clone(), events.subscribe(), rx));
        LiveCalls { tx }
    }

    pub async fn all(&self) -> Vec<LiveCall> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Query::All(reply));
        rx.await.unwrap_or_default()
    }

    pub async fn get(&self, uuid: &str) -> Option<LiveCall> {
        let (reply, rx) = oneshot::channel();
        let _ = self.tx.send(Query::One(uuid.to_string(), reply));
        rx.await.ok().flatten()
    }
}

fn fold(calls: &mut HashMap<String, LiveCall>, e: &Event) {
    let Some(uuid) = &e.call else { return };
    if e.kind == "call.arrived" {
        let s = |k: &str| e.data.get(k).and_then(|v| v.as_str()).map(str::to_string);
        calls.insert(
            uuid.clone(),
            LiveCall {
                call_uuid: uuid.clone(),
                caller: s("caller").unwrap_or_default(),
                dialed: s("dialed").unwrap_or_default(),
                did: s("did"),
                arrived_ms: e.at_ms,
                phase: if s("route").as_deref() == Some("flow") {
                    "ivr".into()
                } else {
                    "ringing".into()
                },
                queue: None,
                agent: s("target"),
                answered_ms: None,
                variables: BTreeMap::new(),
                recording: None,
                supervisors: BTreeMap::new(),
                seq: e.seq,
            },
        );
    } else if e.kind == "call.ended" {
        calls.remove(uuid);
    } else if let Some(c) = calls.get_mut(uuid) {
        c.apply(e);
    }
}

async fn run(
    log: EventLog,
    mut live: broadcast::Receiver<Arc<Event>>,
    mut queries: mpsc::UnboundedReceiver<Query>,
) {
    let mut calls: HashMap<String, LiveCall> = HashMap::new();
    let mut last = log.last_seq();
    loop {
        tokio::select! {
            ev = live.recv() => match ev {
                Ok(e) => {
                    if e.seq > last {
                        last = e.seq;
                        fold(&mut calls, &e);
                    }
                }
                // Fell behind: read what was missed from the store.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    while let Ok(batch) = log.since(last, 1000).await {
                        let Some(end) = batch.last().map(|e| e.seq) else { break };
                        for e in &batch {
                            fold(&mut calls, e);
                        }
                        last = end;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
            q = queries.recv() => match q {
                Some(Query::All(reply)) => {
                    let mut all: Vec<LiveCall> = calls.values().cloned().collect();
                    all.sort_by_key(|c| (c.arrived_ms, c.call_uuid.clone()));
                    let _ = reply.send(all);
                }
                Some(Query::One(uuid, reply)) => {
                    let _ = reply.send(calls.get(&uuid).cloned());
                }
                None => return,
            },
        }
    }
}
