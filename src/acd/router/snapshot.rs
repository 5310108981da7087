//! A copy of what the router holds now, for people's screens (the control plane's agent
//! and queue lists). Taking one changes nothing and costs one pass over agents and calls.

use std::time::{Duration, Instant};

use super::{Phase, Router};
use crate::acd::{AgentState, CallId};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentSnapshot {
    pub extension: String,
    pub state: AgentState,
    pub skills: Vec<(String, u8)>,
    pub queues: Vec<String>,
    pub calls_today: u32,
}

/// A caller in a queue: waiting, or being offered to an agent now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitingCaller {
    pub call: CallId,
    pub waited: Duration,
    pub priority: i32,
    /// What an agent must have to take it now (the queue's and the call's own, as
    /// relaxed so far).
    pub skills: Vec<(String, u8)>,
    /// The agents whose phones ring for it now.
    pub offered_to: Vec<String>,
    /// Off the line, waiting to be called back.
    pub callback: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSnapshot {
    pub name: String,
    /// In routing order: the first is served next.
    pub callers: Vec<WaitingCaller>,
    pub members: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub agents: Vec<AgentSnapshot>,
    pub queues: Vec<QueueSnapshot>,
}

impl Router {
    pub fn snapshot(&self, now: Instant) -> Snapshot {
        let agents = self
            .agents
            .iter()
            .map(|a| AgentSnapshot {
                extension: a.extension.to_string(),
                state: a.state.clone(),
                skills: self.skills.named(&a.skills),
                queues: a
                    .queues
                    .iter()
                    .map(|q| self.queue(*q).name.to_string())
                    .collect(),
                calls_today: a.calls_today,
            })
            .collect();
        let mut queues: Vec<QueueSnapshot> = self
            .queues
            .iter()
            .enumerate()
            .map(|(i, q)| QueueSnapshot {
                name: q.name.to_string(),
                callers: Vec::new(),
                members: self
                    .agents
                    .iter()
                    .filter(|a| a.queues.iter().any(|aq| aq.0 as usize == i))
                    .map(|a| a.extension.to_string())
                    .collect(),
            })
            .collect();
        let mut calls: Vec<_> = self.calls.iter().collect();
        calls.sort_by_key(|(_, c)| (c.queue, c.key));
        for (id, c) in calls {
            let offered_to = match &c.phase {
                Phase::Waiting => Vec::new(),
                Phase::Ringing(agents) => agents
                    .iter()
                    .map(|a| self.agent_at(*a).extension.to_string())
                    .collect(),
            };
            queues[c.queue.0 as usize].callers.push(WaitingCaller {
                call: *id,
                waited: now.saturating_duration_since(c.arrived),
                priority: c.key.priority.0,
                skills: self.skills.named(&c.requirement),
                offered_to,
                callback: c.callback,
            });
        }
        Snapshot { agents, queues }
    }
}
