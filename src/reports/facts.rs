//! The facts every figure is computed from, folded out of the ordered event log: each
//! call with its visits to queues, and each agent's states as intervals of time.
//!
//! The fold reads events in sequence order and keeps nothing else: the same events
//! always give the same facts, so a figure recomputed later (after a restart, or with
//! another threshold) is the same figure.

use std::collections::{BTreeMap, HashMap};

use crate::events::Event;

/// One call, from its arrival to its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallFacts {
    pub uuid: String,
    pub arrived_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    /// The caller's number (user part of From).
    pub caller: Option<String>,
    pub did: Option<String>,
    /// The first IVR flow the call ran.
    pub flow: Option<String>,
    pub visits: Vec<Visit>,
    /// Blind transfers an agent made of this call, by the transferring agent.
    pub transfers: Vec<String>,
    /// The agent's last disposition: its code and whether it counts as resolved.
    pub disposition: Option<(String, bool)>,
    /// Post-call survey satisfaction (1–5).
    pub csat: Option<i64>,
    /// Hold periods: (start, end); an open one has no end yet.
    holds: Vec<(i64, Option<i64>)>,
}

/// One stay of a call in one queue. A call that overflows or is transferred to another
/// queue has a visit to each.
#[derive(Debug, Clone, PartialEq)]
pub struct Visit {
    pub queue: String,
    pub entered_ms: i64,
    pub outcome: Option<VisitOutcome>,
    /// The agent who answered, when it was answered.
    pub agent: Option<String>,
    pub answered_ms: Option<i64>,
    /// From answer to the call's completion with the agent (hold included).
    pub connected_ms: Option<i64>,
    pub completed_ms: Option<i64>,
    /// Of that, time the caller spent on hold.
    pub hold_ms: i64,
    /// Wrap-up actually used (also when ended early); `None` until it ends.
    pub acw_ms: Option<i64>,
    pub callback_requested: bool,
}

/// How a visit left the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VisitOutcome {
    /// An agent answered after `wait_ms` (for a callback: the wait until the agent took
    /// the callback).
    Answered { wait_ms: i64 },
    /// The caller hung up while waiting.
    Abandoned { wait_ms: i64 },
    /// The queue's maximum wait, or no agent logged in, sent it elsewhere.
    Overflowed { wait_ms: i64 },
    /// It left for somewhere else (the caller chose another path) before an answer.
    TransferredOut { wait_ms: i64 },
}

impl VisitOutcome {
    pub fn wait_ms(self) -> i64 {
        match self {
            VisitOutcome::Answered { wait_ms }
            | VisitOutcome::Abandoned { wait_ms }
            | VisitOutcome::Overflowed { wait_ms }
            | VisitOutcome::TransferredOut { wait_ms } => wait_ms,
        }
    }
}

impl Visit {
    /// Talk time: connected time less hold.
    pub fn talk_ms(&self) -> Option<i64> {
        self.connected_ms.map(|c| (c - self.hold_ms).max(0))
    }

    /// Handled: answered, finished with the agent and its wrap-up over.
    pub fn handled(&self) -> bool {
        matches!(self.outcome, Some(VisitOutcome::Answered { .. }))
            && self.connected_ms.is_some()
            && self.acw_ms.is_some()
    }
}

/// An agent's state over a span of time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateSpan {
    pub agent: String,
    /// `ready`, `ringing`, `on_call`, `wrap_up`, `not_ready` (never `logged_out`: that
    /// is time outside the figures).
    pub state: String,
    /// The not-ready reason.
    pub reason: Option<String>,
    pub from_ms: i64,
    pub to_ms: i64,
}

/// Everything folded out of a run of events.
#[derive(Debug, Default)]
pub struct Facts {
    /// In order of arrival in the log.
    pub calls: Vec<CallFacts>,
    pub spans: Vec<StateSpan>,
    /// Every arrival: (caller, arrived_ms), for repeat-contact checks.
    pub arrivals: Vec<(String, i64)>,
}

/// Folds events (in sequence order) into facts. `until_ms` closes agent states still
/// open at the end (the end of the range asked for, or now).
pub fn fold(events: &[Event], until_ms: i64) -> Facts {
    let mut f = Fold::default();
    for e in events {
        f.event(e);
    }
    f.finish(until_ms)
}

#[derive(Default)]
struct Fold {
    calls: Vec<CallFacts>,
    by_uuid: HashMap<String, usize>,
    /// Each agent's open state: (state, reason, since).
    open: BTreeMap<String, (String, Option<String>, i64)>,
    spans: Vec<StateSpan>,
    arrivals: Vec<(String, i64)>,
    last_ms: i64,
}

fn str_of(v: &serde_json::Value, key: &str) -> Option<String> {
    v.get(key).and_then(|v| v.as_str()).map(str::to_string)
}

fn ms_of(v: &serde_json::Value, key: &str) -> i64 {
    v.get(key).and_then(|v| v.as_i64()).unwrap_or(0)
}

impl Fold {
    fn call(&mut self, uuid: &str) -> &mut CallFacts {
        let idx = match self.by_uuid.get(uuid) {
            Some(&i) => i,
            None => {
                self.calls.push(CallFacts {
                    uuid: uuid.to_string(),
                    ..Default::default()
                });
                self.by_uuid.insert(uuid.to_string(), self.calls.len() - 1);
                self.calls.len() - 1
            }
        };
        &mut self.calls[idx]
    }

    fn close_agent(&mut self, agent: &str, at: i64) {
        if let Some((state, reason, since)) = self.open.remove(agent) {
            if state != "logged_out" && at > since {
                self.spans.push(StateSpan {
                    agent: agent.to_string(),
                    state,
                    reason,
                    from_ms: since,
                    to_ms: at,
                });
            }
        }
    }

    fn event(&mut self, e: &Event) {
        let at = e.at_ms;
        // A server start means every agent state open before it ended when the server
        // last stopped; the last event before it is the best we know of that moment.
        if e.kind == "server.started" || e.kind == "server.stopped" {
            let last = if e.kind == "server.stopped" {
                at
            } else {
                self.last_ms
            };
            for agent in self.open.keys().cloned().collect::<Vec<_>>() {
                self.close_agent(&agent, last);
            }
            self.last_ms = at;
            return;
        }
        self.last_ms = at;
        if e.kind == "agent.state" {
            if let Some(agent) = &e.agent {
                self.close_agent(agent, at);
                let state = str_of(&e.data, "state").unwrap_or_default();
                let reason = str_of(&e.data, "reason");
                self.open.insert(agent.clone(), (state, reason, at));
            }
            return;
        }
        let Some(uuid) = e.call.as_deref() else {
            return;
        };
        match e.kind.as_str() {
            "call.arrived" => {
                let caller = str_of(&e.data, "caller");
                if let Some(c) = &caller {
                    self.arrivals.push((c.clone(), at));
                }
                let call = self.call(uuid);
                call.arrived_ms = Some(at);
                call.caller = caller;
                call.did = str_of(&e.data, "did");
            }
            "ivr.step" => {
                let call = self.call(uuid);
                if call.flow.is_none() {
                    call.flow = str_of(&e.data, "flow");
                }
            }
            "queue.entered" => {
                let queue = e.queue.clone().unwrap_or_default();
                self.call(uuid).visits.push(Visit {
                    queue,
                    entered_ms: at,
                    outcome: None,
                    agent: None,
                    answered_ms: None,
                    connected_ms: None,
                    completed_ms: None,
                    hold_ms: 0,
                    acw_ms: None,
                    callback_requested: false,
                });
            }
            "queue.answered" | "queue.callback_answered" => {
                let wait_ms = ms_of(&e.data, "wait_ms");
                let agent = e.agent.clone();
                if let Some(v) = self.call(uuid).visits.last_mut() {
                    v.outcome = Some(VisitOutcome::Answered { wait_ms });
                    v.agent = agent;
                    v.answered_ms = Some(at);
                }
            }
            "queue.abandoned" | "queue.overflowed" | "queue.transferred_out" => {
                let wait_ms = ms_of(&e.data, "wait_ms");
                let outcome = match e.kind.as_str() {
                    "queue.abandoned" => VisitOutcome::Abandoned { wait_ms },
                    "queue.overflowed" => VisitOutcome::Overflowed { wait_ms },
                    _ => VisitOutcome::TransferredOut { wait_ms },
                };
                if let Some(v) = self.call(uuid).visits.last_mut() {
                    v.outcome = Some(outcome);
                }
            }
            "queue.callback_requested" => {
                if let Some(v) = self.call(uuid).visits.last_mut() {
                    v.callback_requested = true;
                }
            }
            "queue.completed" => {
                let talk = ms_of(&e.data, "talk_ms");
                let call = self.call(uuid);
                let holds = std::mem::take(&mut call.holds);
                if let Some(v) = call.visits.last_mut() {
                    v.connected_ms = Some(talk);
                    v.completed_ms = Some(at);
                    // Hold inside this answered stretch belongs to this visit.
                    let start = v.answered_ms.unwrap_or(at - talk);
                    v.hold_ms = holds
                        .iter()
                        .map(|&(from, to)| {
                            let (from, to) = (from.max(start), to.unwrap_or(at).min(at));
                            (to - from).max(0)
                        })
                        .sum();
                }
            }
            "agent.wrap_up_ended" => {
                let acw = ms_of(&e.data, "talk_ms");
                let agent = e.agent.clone();
                let call = self.call(uuid);
                if let Some(v) = call
                    .visits
                    .iter_mut()
                    .rev()
                    .find(|v| v.agent == agent && v.acw_ms.is_none())
                {
                    v.acw_ms = Some(acw);
                }
            }
            "call.held" => self.call(uuid).holds.push((at, None)),
            "call.resumed" => {
                if let Some(h) = self
                    .call(uuid)
                    .holds
                    .iter_mut()
                    .rev()
                    .find(|h| h.1.is_none())
                {
                    h.1 = Some(at);
                }
            }
            "call.transferred" => {
                let from = str_of(&e.data, "from")
                    .or_else(|| e.agent.clone())
                    .unwrap_or_default();
                self.call(uuid).transfers.push(from);
            }
            "call.disposition" => {
                let code = str_of(&e.data, "code").unwrap_or_default();
                let resolved = e.data.get("resolved").and_then(|v| v.as_bool());
                self.call(uuid).disposition = Some((code, resolved.unwrap_or(false)));
            }
            "call.survey" => {
                self.call(uuid).csat = e.data.get("csat").and_then(|v| v.as_i64());
            }
            // A call a crash cut short ended before its event was logged, at the time
            // the event carries.
            "call.ended" => {
                let ended = e.data.get("ended_ms").and_then(|v| v.as_i64());
                self.call(uuid).ended_ms = Some(ended.unwrap_or(at));
            }
            _ => {}
        }
    }

    fn finish(mut self, until_ms: i64) -> Facts {
        for agent in self.open.keys().cloned().collect::<Vec<_>>() {
            let until = until_ms.max(self.open[&agent].2);
            self.close_agent(&agent, until);
        }
        Facts {
            calls: self.calls,
            spans: self.spans,
            arrivals: self.arrivals,
        }
    }
}
