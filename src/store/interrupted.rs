//! Records for calls a crash cut short.
//!
//! A call's record is written when it ends, so a `kill -9` (or a power cut) leaves the
//! calls in progress with events in the log but no record. At the next start each of
//! them gets one, built from its events alone and marked as interrupted, so the call
//! counts, shows in reports and in the API, and its recording (repaired beside it) is
//! found from its record. The end time is the last moment the old server was known to
//! be alive: its last event.

use super::{CallRecord, Disposition, HangupBy};
use crate::events::Event;

/// The reason every interrupted call's record carries.
pub const REASON: &str = "interrupted: the server stopped during the call";

/// The record of call `uuid` from its events (oldest first), ended at `ended_ms`.
pub fn record(uuid: &str, events: &[Event], ended_ms: i64) -> CallRecord {
    let mut rec = CallRecord {
        call_uuid: uuid.to_string(),
        source_kind: "unknown",
        hangup_by: Some(HangupBy::Switchboard),
        reason: Some(REASON.to_string()),
        ..Default::default()
    };
    let text = |e: &Event, key: &str| e.data.get(key).and_then(|v| v.as_str()).map(str::to_string);
    for e in events {
        if rec.queue.is_none() {
            rec.queue = e.queue.clone();
        }
        match e.kind.as_str() {
            "call.arrived" => {
                rec.arrived_ms = e.at_ms;
                rec.from_user = text(e, "caller").unwrap_or_default();
                rec.dialed = text(e, "dialed").unwrap_or_default();
                rec.did = text(e, "did");
                rec.trunk = text(e, "trunk");
                rec.target = text(e, "target");
                rec.a_call_id = text(e, "sip_call_id").unwrap_or_default();
                rec.from_uri = text(e, "from_uri").unwrap_or_default();
                rec.to_uri = text(e, "to_uri").unwrap_or_default();
                rec.source_kind = match text(e, "source_kind").as_deref() {
                    Some("trunk") => "trunk",
                    Some("user") => "user",
                    _ => "unknown",
                };
            }
            // The flow answered the caller.
            "ivr.step" => {
                rec.answered_ms.get_or_insert(e.at_ms);
                if rec.flow.is_none() {
                    rec.flow = text(e, "flow");
                }
            }
            "call.answered" => {
                rec.answered_ms.get_or_insert(e.at_ms);
                rec.bridged_ms = Some(e.at_ms);
                if e.agent.is_some() {
                    rec.target = e.agent.clone();
                }
            }
            "call.recording" if text(e, "state").as_deref() == Some("recording") => {
                rec.recording = Some(format!("recordings/{uuid}.wav"));
            }
            _ => {}
        }
    }
    rec.ended_ms = ended_ms.max(rec.arrived_ms);
    (rec.disposition, rec.final_code) = if rec.answered_ms.is_some() {
        (Some(Disposition::Answered), 200)
    } else {
        (Some(Disposition::Failed), 500)
    };
    rec
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: u64, at_ms: i64, kind: &str, agent: Option<&str>, data: serde_json::Value) -> Event {
        Event {
            seq,
            at_ms,
            kind: kind.into(),
            call: Some("c1".into()),
            queue: (kind == "call.queued" || kind == "call.answered").then(|| "sales".into()),
            agent: agent.map(str::to_string),
            data,
        }
    }

    #[test]
    fn a_call_cut_during_its_conversation_is_answered_interrupted_and_keeps_its_recording() {
        let events = [
            ev(
                1,
                1_000,
                "call.arrived",
                None,
                json!({ "caller": "+15550100", "dialed": "100", "did": "100",
                        "source_kind": "trunk", "trunk": "carrier", "sip_call_id": "abc@h",
                        "from_uri": "sip:+15550100@h", "to_uri": "sip:100@sb" }),
            ),
            ev(
                2,
                1_050,
                "ivr.step",
                None,
                json!({ "flow": "main", "node": "start" }),
            ),
            ev(3, 2_000, "call.queued", None, json!({})),
            ev(
                4,
                9_000,
                "call.answered",
                Some("2001"),
                json!({ "by": "2001" }),
            ),
            ev(
                5,
                9_001,
                "call.recording",
                Some("2001"),
                json!({ "state": "recording" }),
            ),
        ];
        let rec = record("c1", &events, 30_000);
        assert_eq!(rec.arrived_ms, 1_000);
        assert_eq!(rec.answered_ms, Some(1_050), "the flow answered first");
        assert_eq!(rec.bridged_ms, Some(9_000));
        assert_eq!(rec.ended_ms, 30_000);
        assert_eq!(rec.target.as_deref(), Some("2001"));
        assert_eq!(rec.queue.as_deref(), Some("sales"));
        assert_eq!(rec.flow.as_deref(), Some("main"));
        assert_eq!(rec.source_kind, "trunk");
        assert_eq!(rec.trunk.as_deref(), Some("carrier"));
        assert_eq!(rec.a_call_id, "abc@h");
        assert_eq!(rec.disposition, Some(Disposition::Answered));
        assert_eq!(rec.final_code, 200);
        assert_eq!(rec.hangup_by, Some(HangupBy::Switchboard));
        assert_eq!(rec.reason.as_deref(), Some(REASON));
        assert_eq!(rec.recording.as_deref(), Some("recordings/c1.wav"));
    }

    #[test]
    fn a_call_cut_while_ringing_failed_and_never_ends_before_it_began() {
        let events = [ev(
            1,
            5_000,
            "call.arrived",
            None,
            json!({ "caller": "2002", "dialed": "2001", "source_kind": "user", "target": "2001" }),
        )];
        let rec = record("c1", &events, 4_000);
        assert_eq!(rec.disposition, Some(Disposition::Failed));
        assert_eq!(rec.final_code, 500);
        assert_eq!(rec.answered_ms, None);
        assert_eq!(rec.recording, None);
        assert_eq!(rec.ended_ms, 5_000);
        assert_eq!(rec.source_kind, "user");
        assert_eq!(rec.target.as_deref(), Some("2001"));
    }
}
