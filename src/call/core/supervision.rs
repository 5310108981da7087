//! Calls Switchboard answers itself without a flow: a supervisor's own call
//! (`*1`/`*2`/`*3` + extension), whose media joins the agent's bridge, and a prompt
//! played before hanging up (a feature code's verdict, "that agent is on no call").
//! Keys 4, 5 and 6 of a joined supervisor (RTP events go to the bridge; SIP INFO comes
//! here) switch among listen, whisper and barge.

use super::*;

/// How long a prompt before hanging up may play.
const ANNOUNCEMENT_LIMIT: Duration = Duration::from_secs(10);

#[derive(Debug, Default)]
pub(super) struct Supervision {
    /// The agent a supervisor's call joins.
    agent: Option<String>,
    /// The supervisor's media is on the agent's bridge.
    joined: bool,
    /// When an announcement is cut short.
    deadline: Option<Instant>,
}

impl Supervision {
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.deadline
    }
}

impl CallCore {
    /// Answers, plays `prompt`, then hangs up (or stops when the caller does).
    pub(super) fn announce_then_hang_up(&mut self, prompt: &str) -> Option<End> {
        if let Err(end) = self.answer_here() {
            return Some(end);
        }
        self.announce(prompt);
        None
    }

    fn announce(&mut self, prompt: &str) {
        self.phase = Phase::Announcing;
        self.media(MediaCmd::Play {
            prompt: prompt.to_string(),
        });
        self.supervision.deadline = Some(self.now.at + ANNOUNCEMENT_LIMIT);
    }

    /// The announcement played (or ran out of time): hang up.
    pub(super) fn announcement_done(&mut self) -> Option<End> {
        if self.phase != Phase::Announcing {
            return None;
        }
        Some(self.supervision_over(None))
    }

    /// A supervisor's own call: answered here, its media handed to the agent's bridge.
    pub(super) fn join_as_supervisor(&mut self, agent: String, mode: Mode) -> Option<End> {
        let codec = match self.answer_here() {
            Ok(codec) => codec,
            Err(end) => return Some(end),
        };
        self.phase = Phase::Supervising;
        let leg = self.caller_leg(codec);
        self.media(MediaCmd::JoinAgent {
            agent: agent.clone(),
            mode,
            leg,
        });
        self.rec.reason = Some(format!(
            "{} {agent}",
            match mode {
                Mode::Listen => "listened to",
                Mode::Whisper => "whispered to",
                Mode::Barge => "barged in on",
            }
        ));
        self.supervision.agent = Some(agent);
        None
    }

    pub(super) fn supervisor_joined(&mut self) {
        self.supervision.joined = true;
    }

    /// The agent is on no call: say so, then hang up.
    pub(super) fn supervisor_no_call(&mut self) -> Option<End> {
        let agent = self.supervision.agent.clone().unwrap_or_default();
        info!(%agent, "the agent is on no call");
        self.rec.reason = Some(format!("{agent} is not on a call"));
        self.announce("en/supervisor_no_call.wav");
        None
    }

    /// The agent's call ended (or another supervisor took over).
    pub(super) fn supervised_call_ended(&mut self) -> Option<End> {
        if !self.supervision.joined {
            return None;
        }
        self.supervision.joined = false;
        let agent = self.supervision.agent.clone().unwrap_or_default();
        Some(self.supervision_over(Some(format!("{agent}'s call ended"))))
    }

    /// A request on a supervisor's or an announcement's call: BYE ends it, a mode key
    /// switches the supervisor's mode, anything else is simply answered.
    pub(super) fn on_request_while_supervising(&mut self, tx: TxId, req: Request) -> Option<End> {
        if matches!(req.method, Method::Invite | Method::Update) {
            // A session refresh (RFC 4028) or a re-INVITE: answered on its terms, with
            // the SDP we answered with, so the session timer does not run out.
            self.on_caller_refresh(&req);
            let ok = self.ok_to_caller_refresh(&req);
            self.respond(tx, ok);
            return None;
        }
        self.respond(tx, message::response_to(&req, 200, None));
        if req.method == Method::Bye {
            if std::mem::take(&mut self.supervision.joined) {
                self.media(MediaCmd::Unsupervise);
            }
            return Some(End {
                by: HangupBy::Caller,
                disposition: Disposition::Answered,
                code: 200,
                reason: None,
            });
        }
        if self.supervision.joined {
            if let Some(mode) = crate::call::supervisor_call::mode_key(&req) {
                self.media(MediaCmd::SupervisedMode(mode));
            }
        }
        None
    }

    /// Switchboard ends a supervisor's or an announcement's call.
    pub(super) fn supervision_over(&mut self, reason: Option<String>) -> End {
        if std::mem::take(&mut self.supervision.joined) {
            self.media(MediaCmd::Unsupervise);
        }
        self.supervision.deadline = None;
        self.hangup_both(Some(Side::A));
        End {
            by: HangupBy::Switchboard,
            disposition: Disposition::Answered,
            code: 200,
            reason,
        }
    }
}
