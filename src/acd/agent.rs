//! Agents: who they are, what they can do, and the one state they are in.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::queue::QueueIdx;
use super::skill::Levels;
use super::CallId;

/// An agent as configured: its extension, skills (levels 1–10) and the queues it serves.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub extension: String,
    pub skills: Vec<(String, u8)>,
    pub queues: Vec<String>,
}

/// Where an agent is. Only the router changes it, in one place, so the queue indexes,
/// counters, timers and log rows always agree with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentState {
    LoggedOut,
    Available {
        since: Instant,
    },
    /// Ringing with an offer (a call or a callback) until `until`.
    Reserved {
        call: CallId,
        until: Instant,
    },
    OnCall {
        call: CallId,
        since: Instant,
    },
    WrapUp {
        since: Instant,
        until: Instant,
    },
    NotReady {
        reason: String,
    },
}

impl AgentState {
    pub fn is_logged_in(&self) -> bool {
        !matches!(self, AgentState::LoggedOut)
    }

    /// Logged in and not paused: counts towards the agents staffing a queue.
    pub fn is_staffed(&self) -> bool {
        self.is_logged_in() && !matches!(self, AgentState::NotReady { .. })
    }
}

/// A read-only view of an agent, for supervisors' screens and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentView<'a> {
    pub state: &'a AgentState,
    pub calls_today: u32,
    /// When the agent last became idle: at login or when its last call's wrap-up ended.
    pub last_idle: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct AgentIdx(pub(crate) u32);

/// The call an agent finished last, kept until its wrap-up ends so the handle time
/// (talk + wrap-up) can be booked to the right queue.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FinishedCall {
    pub(crate) queue: QueueIdx,
    pub(crate) call: CallId,
    pub(crate) talk: Duration,
}

#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) extension: Arc<str>,
    pub(crate) skills: Levels,
    pub(crate) queues: Vec<QueueIdx>,
    pub(crate) state: AgentState,
    pub(crate) calls_today: u32,
    pub(crate) last_idle: Option<Instant>,
    pub(crate) last_call: Option<FinishedCall>,
}

impl Agent {
    pub(crate) fn new(extension: Arc<str>, skills: Levels, queues: Vec<QueueIdx>) -> Self {
        Agent {
            extension,
            skills,
            queues,
            state: AgentState::LoggedOut,
            calls_today: 0,
            last_idle: None,
            last_call: None,
        }
    }

    pub(crate) fn view(&self) -> AgentView<'_> {
        AgentView {
            state: &self.state,
            calls_today: self.calls_today,
            last_idle: self.last_idle,
        }
    }
}
