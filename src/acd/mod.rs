//! The ACD: skill-based queues that connect every caller to the best available agent.
//!
//! [`Router`] owns the agents (skills, queue memberships, state), the queues (waiting
//! callers in routing order, available agents in each queue's strategy order) and every
//! ACD timer: ring timeouts, wrap-up, maximum wait, requirement relaxation and position
//! announcements. It is a sans-IO state machine: feed it [`Event`]s with
//! [`Router::handle`] and expired timers with [`Router::handle_timeout`], drain
//! [`Router::poll`] for [`Action`]s, and sleep until [`Router::poll_timeout`]. It never
//! touches a socket, a task, a clock or a sleep, so a test of a five-minute queue is a
//! loop over a fake clock.
//!
//! It must never learn about SIP, media or the IVR: the call layer turns its actions
//! into ringing phones, bridges and prompts, and reports back what the people did.
//!
//! Every call that enters a queue leaves it exactly once: connected, abandoned,
//! overflowed, transferred out, or called back — and the event log says which.

mod agent;
pub mod event_log;
mod queue;
mod router;
mod skill;

#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use agent::{AgentConfig, AgentState, AgentView};
pub use event_log::{EventKind, EventRow};
pub use queue::{OverflowTarget, QueueConfig, Relaxation, Strategy, WhenEmpty, Widen};
pub use router::{
    Action, AgentSnapshot, CallEnd, Candidate, Decision, Event, QueueSnapshot, Router, Snapshot,
    Trigger, Verdict, WaitingCaller, UNREACHABLE,
};
pub use skill::LEVELS;

/// Identifies a call to the router; the call layer chooses it.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct CallId(pub u64);

impl std::fmt::Display for CallId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AcdError {
    #[error("queue \"{0}\" is not configured")]
    UnknownQueue(String),
    #[error("queue \"{0}\" is configured twice")]
    DuplicateQueue(String),
    #[error("agent \"{0}\" is not configured")]
    UnknownAgent(String),
    #[error("agent \"{0}\" is configured twice")]
    DuplicateAgent(String),
    #[error("skill \"{skill}\" has level {level}; levels are between 1 and 10")]
    LevelOutOfRange { skill: String, level: u8 },
    #[error(
        "queue \"{queue}\": relaxation steps must be listed in order of `after` \
         (a step after {after:?} comes after a later one)"
    )]
    RelaxationOutOfOrder {
        queue: String,
        after: std::time::Duration,
    },
    #[error(
        "queue \"{queue}\" borrows the agents of \"{lender}\", which is not configured \
         yet; add \"{lender}\" first"
    )]
    UnknownLender { queue: String, lender: String },
    #[error("call {0} is already in a queue or connected; end it before queueing it again")]
    CallAlreadyQueued(CallId),
    #[error("call {0} is not waiting in any queue")]
    NotQueued(CallId),
    #[error(
        "call {0} is not connected to an agent (a caller who hangs up while waiting is \
         CallAbandoned)"
    )]
    NotConnected(CallId),
    #[error(
        "agent \"{agent}\" has no offer for call {call}: it was cancelled or answered \
         elsewhere; hang up the agent's leg"
    )]
    NoOffer { call: CallId, agent: String },
    #[error("agent \"{0}\" is logged out; log in first")]
    NotLoggedIn(String),
    #[error("agent \"{0}\" is ringing or on a call; try again when the call has ended")]
    AgentBusy(String),
}
