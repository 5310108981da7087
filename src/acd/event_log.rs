//! The queue event log (in the manner of Asterisk's `queue_log`): one [`EventRow`] per
//! thing the router did or saw. The call layer turns rows into events of the ordered
//! event log (and queue-log rows); every KPI is computed from there, by `reports`, and
//! nowhere else. Rows carry an [`Instant`]; whoever persists them maps it to wall-clock
//! time with its own anchor.
//!
//! A call "leaves the queue" with exactly one of CONNECT, CALLBACK_CONNECTED, ABANDON,
//! OVERFLOW or TRANSFER. The router puts every completed call through wrap-up (possibly
//! of zero length), so every COMPLETE_* is followed by a WRAPUP_END for the same call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::CallId;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRow {
    pub at: Instant,
    pub queue: Option<Arc<str>>,
    pub call: Option<CallId>,
    pub agent: Option<Arc<str>>,
    pub kind: EventKind,
}

/// What happened. Waits are measured from the call's arrival in the queue; positions
/// count from 1 at the head of the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    Enter {
        priority: i32,
        position: u32,
    },
    Offer,
    RingNoAnswer {
        rang: Duration,
    },
    Declined {
        rang: Duration,
    },
    Connect {
        wait: Duration,
    },
    Abandon {
        wait: Duration,
        position: u32,
    },
    /// The call left the queue for somewhere else before an agent answered.
    Transfer {
        wait: Duration,
        position: u32,
    },
    Overflow {
        wait: Duration,
    },
    CallbackRequested {
        wait: Duration,
        position: u32,
    },
    CallbackConnected {
        wait: Duration,
    },
    CompleteAgent {
        talk: Duration,
    },
    CompleteCaller {
        talk: Duration,
    },
    /// The agent transferred the connected call onwards.
    CompleteTransfer {
        talk: Duration,
    },
    WrapUpStart,
    WrapUpEnd {
        wrap_up: Duration,
    },
    Login,
    Logout,
    Pause {
        reason: String,
    },
    Unpause,
}

impl EventKind {
    /// The row's name in the persisted log.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::Enter { .. } => "ENTER",
            EventKind::Offer => "OFFER",
            EventKind::RingNoAnswer { .. } => "RING_NOANSWER",
            EventKind::Declined { .. } => "DECLINED",
            EventKind::Connect { .. } => "CONNECT",
            EventKind::Abandon { .. } => "ABANDON",
            EventKind::Transfer { .. } => "TRANSFER",
            EventKind::Overflow { .. } => "OVERFLOW",
            EventKind::CallbackRequested { .. } => "CALLBACK_REQUESTED",
            EventKind::CallbackConnected { .. } => "CALLBACK_CONNECTED",
            EventKind::CompleteAgent { .. } => "COMPLETE_AGENT",
            EventKind::CompleteCaller { .. } => "COMPLETE_CALLER",
            EventKind::CompleteTransfer { .. } => "COMPLETE_TRANSFER",
            EventKind::WrapUpStart => "WRAPUP_START",
            EventKind::WrapUpEnd { .. } => "WRAPUP_END",
            EventKind::Login => "LOGIN",
            EventKind::Logout => "LOGOUT",
            EventKind::Pause { .. } => "PAUSE",
            EventKind::Unpause => "UNPAUSE",
        }
    }

    /// Whether this row ends the call's stay in the queue.
    pub fn leaves_queue(&self) -> bool {
        matches!(
            self,
            EventKind::Connect { .. }
                | EventKind::CallbackConnected { .. }
                | EventKind::Abandon { .. }
                | EventKind::Overflow { .. }
                | EventKind::Transfer { .. }
        )
    }
}
