//! The end of a call: the ACD told first (so the agent is freed at the call's real
//! end), the media finished, then the record written from everything the call learned.

use super::*;
use crate::acd::CallEnd;

/// How a call ends, for its record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct End {
    pub by: HangupBy,
    pub disposition: Disposition,
    pub code: u16,
    pub reason: Option<String>,
}

impl End {
    /// Switchboard ended a call that had been answered (code 200).
    pub fn switchboard(disposition: Disposition, why: &str) -> End {
        End {
            by: HangupBy::Switchboard,
            disposition,
            code: 200,
            reason: Some(why.to_string()),
        }
    }

    /// Switchboard gave up on the call.
    pub fn failed(code: u16, why: &str) -> End {
        End {
            by: HangupBy::Switchboard,
            disposition: Disposition::Failed,
            code,
            reason: Some(why.to_string()),
        }
    }
}

impl CallCore {
    /// The call ended now, before the agent is freed for its next call and before the
    /// media and recording are closed (which take a while).
    pub(super) fn begin_end(&mut self, end: End) {
        if self.ending.is_some() {
            return;
        }
        self.rec.ended_ms = self.now.wall_ms;
        if let Some(q) = self.queue.take() {
            if q.connected {
                let by = match end.by {
                    HangupBy::Callee => CallEnd::Agent,
                    _ => CallEnd::Caller,
                };
                self.acd(AcdCmd::Ended(by));
            } else {
                self.acd(AcdCmd::Abandoned);
            }
        }
        if let Some(extension) = self.talking.take() {
            self.push(Command::OnCall {
                extension,
                on: false,
            });
        }
        self.ending = Some(end);
        self.media(MediaCmd::Finish);
    }

    /// The media is finished: the record goes to the store, and requests still waiting
    /// on the other leg get a final answer, so no transaction is left open. (Late 2xx
    /// answers from forks are ACKed and hung up by the switch.)
    pub(super) fn write_record(&mut self, stats: RelayStats, ivr: Option<IvrSummary>) {
        let Some(end) = self.ending.take() else {
            return;
        };
        let mut rec = std::mem::take(&mut self.rec);
        if let Some(ivr) = ivr {
            rec.ivr_trace = Some(ivr.trace);
            (rec.csat, rec.resolved) = (ivr.csat, ivr.resolved);
        }
        rec.hangup_by = Some(end.by);
        rec.disposition = Some(end.disposition);
        rec.final_code = end.code;
        // Why the call ended, else what happened along the way (e.g. a transfer).
        rec.reason = end.reason.or(rec.reason);
        add_rtp_counts(&mut rec, &stats);
        info!(
            disposition = end.disposition.as_str(),
            code = end.code,
            by = end.by.as_str(),
            a_in = stats.a_in,
            b_in = stats.b_in,
            "call ended"
        );
        // `call.ended` follows once the record is written: whoever sees the end can
        // read the record.
        self.push(Command::Submit(Box::new(rec.clone())));
        self.rec = rec;
        let relayed: Vec<Relayed> = self.relayed.drain().map(|(_, r)| r).collect();
        for r in relayed {
            let code = if r.method == Method::Invite { 487 } else { 481 };
            self.respond(r.server_tx, message::response_to(&r.req, code, None));
        }
        self.done = true;
        self.push(Command::Ended);
    }
}

/// Adds one bridge's packet counters to the record (a call may be bridged several times:
/// hold, survey, transfer).
pub(super) fn add_rtp_counts(rec: &mut CallRecord, stats: &RelayStats) {
    rec.a_rtp_in += stats.a_in;
    rec.a_rtp_out += stats.a_out;
    rec.b_rtp_in += stats.b_in;
    rec.b_rtp_out += stats.b_out;
    rec.a_rtp_lost += stats.a_lost;
    rec.b_rtp_lost += stats.b_lost;
    // One figure per leg for the call: the worst of its bridges (hold splits a call
    // into several).
    rec.a_jitter_ms = rec.a_jitter_ms.max(stats.a_jitter_us as f64 / 1000.0);
    rec.b_jitter_ms = rec.b_jitter_ms.max(stats.b_jitter_us as f64 / 1000.0);
    rec.kernel_rtp += stats.kernel;
}
