//! Contact-center metrics from the queue event log: the same definitions the ACD's
//! `event_log` module computes live, applied to the rows stored in SQLite.

use std::time::{Duration, Instant};

use crate::acd::event_log::{
    abandon_rate, average_handle_time, average_speed_of_answer, service_level,
};
use crate::acd::{EventKind, EventRow};

use super::QueueEvent;

/// The figures a supervisor's report starts with.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueReport {
    pub threshold: Duration,
    /// Share of calls that left the queue which were answered within `threshold`.
    pub service_level: Option<f64>,
    /// Mean wait of answered calls.
    pub average_speed_of_answer: Option<Duration>,
    pub abandon_rate: Option<f64>,
    /// Talk plus after-call work, per handled call.
    pub average_handle_time: Option<Duration>,
    pub answered: usize,
    pub abandoned: usize,
}

/// Rebuilds the router's rows from stored ones (only the fields the metrics read).
fn rows(events: &[QueueEvent]) -> Vec<EventRow> {
    let epoch = Instant::now();
    let ms = |v: Option<i64>| Duration::from_millis(v.unwrap_or(0).max(0) as u64);
    events
        .iter()
        .filter_map(|e| {
            let kind = match e.event.as_str() {
                "CONNECT" => EventKind::Connect {
                    wait: ms(e.wait_ms),
                },
                "CALLBACK_CONNECTED" => EventKind::CallbackConnected {
                    wait: ms(e.wait_ms),
                },
                "ABANDON" => EventKind::Abandon {
                    wait: ms(e.wait_ms),
                    position: 0,
                },
                "OVERFLOW" => EventKind::Overflow {
                    wait: ms(e.wait_ms),
                },
                "TRANSFER" => EventKind::Transfer {
                    wait: ms(e.wait_ms),
                    position: 0,
                },
                "COMPLETE_AGENT" => EventKind::CompleteAgent {
                    talk: ms(e.talk_ms),
                },
                "COMPLETE_CALLER" => EventKind::CompleteCaller {
                    talk: ms(e.talk_ms),
                },
                "COMPLETE_TRANSFER" => EventKind::CompleteTransfer {
                    talk: ms(e.talk_ms),
                },
                "WRAPUP_END" => EventKind::WrapUpEnd {
                    wrap_up: ms(e.talk_ms),
                },
                _ => return None,
            };
            Some(EventRow {
                at: epoch,
                queue: e.queue.as_deref().map(Into::into),
                call: None,
                agent: e.agent.as_deref().map(Into::into),
                kind,
            })
        })
        .collect()
}

pub fn queue_report(events: &[QueueEvent], threshold: Duration) -> QueueReport {
    let rows = rows(events);
    let count = |name: &str| events.iter().filter(|e| e.event == name).count();
    QueueReport {
        threshold,
        service_level: service_level(&rows, threshold),
        average_speed_of_answer: average_speed_of_answer(&rows),
        abandon_rate: abandon_rate(&rows),
        average_handle_time: average_handle_time(&rows),
        answered: count("CONNECT") + count("CALLBACK_CONNECTED"),
        abandoned: count("ABANDON"),
    }
}

impl std::fmt::Display for QueueReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0));
        let secs = |v: Option<Duration>| {
            v.map_or("-".to_string(), |d| format!("{:.3} s", d.as_secs_f64()))
        };
        writeln!(f, "answered: {}", self.answered)?;
        writeln!(f, "abandoned: {}", self.abandoned)?;
        writeln!(
            f,
            "service level ({} s): {}",
            self.threshold.as_secs(),
            pct(self.service_level)
        )?;
        writeln!(
            f,
            "average speed of answer: {}",
            secs(self.average_speed_of_answer)
        )?;
        writeln!(f, "abandon rate: {}", pct(self.abandon_rate))?;
        write!(f, "average handle time: {}", secs(self.average_handle_time))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(event: &str, wait: Option<i64>, talk: Option<i64>) -> QueueEvent {
        QueueEvent {
            event: event.into(),
            wait_ms: wait,
            talk_ms: talk,
            ..Default::default()
        }
    }

    #[test]
    fn metrics_from_stored_rows_match_a_hand_computation() {
        let events = [
            ev("ENTER", None, None),
            ev("CONNECT", Some(5_000), None),
            ev("CONNECT", Some(25_000), None),
            ev("ABANDON", Some(40_000), None),
            ev("COMPLETE_AGENT", None, Some(60_000)),
            ev("COMPLETE_CALLER", None, Some(120_000)),
            ev("WRAPUP_END", None, Some(10_000)),
            ev("WRAPUP_END", None, Some(20_000)),
        ];
        let r = queue_report(&events, Duration::from_secs(20));
        // 1 of 3 calls that left the queue was answered within 20 s.
        assert_eq!(r.service_level, Some(1.0 / 3.0));
        assert_eq!(r.average_speed_of_answer, Some(Duration::from_secs(15)));
        assert_eq!(r.abandon_rate, Some(1.0 / 3.0));
        // (60 + 120 + 10 + 20) / 2 handled calls.
        assert_eq!(r.average_handle_time, Some(Duration::from_secs(105)));
        assert_eq!((r.answered, r.abandoned), (2, 1));
    }
}
