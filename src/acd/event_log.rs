//! The queue event log (in the manner of Asterisk's `queue_log`) and the contact-center
//! metrics computed from it.
//!
//! The router emits one [`EventRow`] per thing that happened; the store persists them.
//! Every metric here is a pure function of a slice of rows, so a report over any window
//! is "select the rows, call the function". Rows carry an [`Instant`]; whoever persists
//! them maps it to wall-clock time with its own anchor.
//!
//! Definitions (a call "leaves the queue" with exactly one of CONNECT,
//! CALLBACK_CONNECTED, ABANDON, OVERFLOW or TRANSFER):
//! - service level: calls answered (CONNECT or CALLBACK_CONNECTED) within the threshold,
//!   over all calls that left the queue;
//! - ASA: mean wait of the answered calls;
//! - abandon rate: ABANDON over all calls that left the queue;
//! - AHT: (talk time of every COMPLETE_* + wrap-up time of every WRAPUP_END) over the
//!   number of completed calls. The router puts every completed call through wrap-up
//!   (possibly of zero length), so the two sums cover the same calls.

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

    /// The wait of an answered call.
    fn answered_after(&self) -> Option<Duration> {
        match *self {
            EventKind::Connect { wait } | EventKind::CallbackConnected { wait } => Some(wait),
            _ => None,
        }
    }

    /// Whether this row ends the call's stay in the queue.
    pub fn leaves_queue(&self) -> bool {
        self.answered_after().is_some()
            || matches!(
                self,
                EventKind::Abandon { .. } | EventKind::Overflow { .. } | EventKind::Transfer { .. }
            )
    }

    fn talk(&self) -> Option<Duration> {
        match *self {
            EventKind::CompleteAgent { talk }
            | EventKind::CompleteCaller { talk }
            | EventKind::CompleteTransfer { talk } => Some(talk),
            _ => None,
        }
    }
}

fn left_queue(rows: &[EventRow]) -> usize {
    rows.iter().filter(|r| r.kind.leaves_queue()).count()
}

fn ratio(part: usize, whole: usize) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

fn mean(sum: Duration, n: usize) -> Option<Duration> {
    (n > 0).then(|| sum / n as u32)
}

/// Share (0–1) of calls answered within `threshold`; `None` when no call left a queue.
pub fn service_level(rows: &[EventRow], threshold: Duration) -> Option<f64> {
    let in_time = rows
        .iter()
        .filter_map(|r| r.kind.answered_after())
        .filter(|wait| *wait <= threshold)
        .count();
    ratio(in_time, left_queue(rows))
}

/// Average speed of answer; `None` when no call was answered.
pub fn average_speed_of_answer(rows: &[EventRow]) -> Option<Duration> {
    let waits: Vec<Duration> = rows
        .iter()
        .filter_map(|r| r.kind.answered_after())
        .collect();
    mean(waits.iter().sum(), waits.len())
}

/// Share (0–1) of calls that left the queue by hanging up; `None` when none left.
pub fn abandon_rate(rows: &[EventRow]) -> Option<f64> {
    let abandoned = rows
        .iter()
        .filter(|r| matches!(r.kind, EventKind::Abandon { .. }))
        .count();
    ratio(abandoned, left_queue(rows))
}

/// Average handle time (talk + wrap-up); `None` when no call was completed.
pub fn average_handle_time(rows: &[EventRow]) -> Option<Duration> {
    let talks: Vec<Duration> = rows.iter().filter_map(|r| r.kind.talk()).collect();
    let wrap_ups: Duration = rows
        .iter()
        .filter_map(|r| match r.kind {
            EventKind::WrapUpEnd { wrap_up } => Some(wrap_up),
            _ => None,
        })
        .sum();
    mean(talks.iter().sum::<Duration>() + wrap_ups, talks.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(kinds: Vec<EventKind>) -> Vec<EventRow> {
        let at = Instant::now();
        kinds
            .into_iter()
            .map(|kind| EventRow {
                at,
                queue: Some("sales".into()),
                call: None,
                agent: None,
                kind,
            })
            .collect()
    }

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    /// Ten calls: six answered (waits 5, 10, 20, 21, 40 s and a callback after 300 s),
    /// two abandoned, one overflowed, one transferred out; plus rows that are not ends.
    fn day() -> Vec<EventRow> {
        rows(vec![
            EventKind::Enter {
                priority: 0,
                position: 1,
            },
            EventKind::Connect { wait: s(5) },
            EventKind::Connect { wait: s(10) },
            EventKind::Offer,
            EventKind::Connect { wait: s(20) },
            EventKind::Connect { wait: s(21) },
            EventKind::Connect { wait: s(40) },
            EventKind::CallbackConnected { wait: s(300) },
            EventKind::Abandon {
                wait: s(3),
                position: 2,
            },
            EventKind::Abandon {
                wait: s(90),
                position: 1,
            },
            EventKind::Overflow { wait: s(120) },
            EventKind::Transfer {
                wait: s(8),
                position: 4,
            },
            EventKind::Login,
        ])
    }

    #[test]
    fn service_level_counts_answers_within_threshold_over_all_calls_that_left() {
        // 5, 10 and 20 s are within 20 s (inclusive); 10 calls left the queue.
        assert_eq!(service_level(&day(), s(20)), Some(0.3));
        assert_eq!(service_level(&day(), s(300)), Some(0.6));
        assert_eq!(service_level(&rows(vec![EventKind::Login]), s(20)), None);
    }

    #[test]
    fn asa_is_the_mean_wait_of_answered_calls() {
        // (5 + 10 + 20 + 21 + 40 + 300) / 6 = 396 / 6 = 66 s.
        assert_eq!(average_speed_of_answer(&day()), Some(s(66)));
        assert_eq!(average_speed_of_answer(&rows(vec![])), None);
    }

    #[test]
    fn abandon_rate_is_abandons_over_calls_that_left() {
        assert_eq!(abandon_rate(&day()), Some(0.2));
    }

    #[test]
    fn aht_is_talk_plus_wrap_up_per_completed_call() {
        let log = rows(vec![
            EventKind::CompleteAgent { talk: s(200) },
            EventKind::WrapUpStart,
            EventKind::WrapUpEnd { wrap_up: s(30) },
            EventKind::CompleteCaller { talk: s(100) },
            EventKind::WrapUpStart,
            EventKind::WrapUpEnd { wrap_up: s(10) },
            EventKind::CompleteTransfer { talk: s(60) },
            EventKind::WrapUpStart,
            EventKind::WrapUpEnd { wrap_up: s(20) },
        ]);
        // (200 + 100 + 60 + 30 + 10 + 20) / 3 = 420 / 3 = 140 s.
        assert_eq!(average_handle_time(&log), Some(s(140)));
        assert_eq!(average_handle_time(&day()), None);
    }
}
