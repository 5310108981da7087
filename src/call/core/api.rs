//! Control-plane requests to a live call: hang up, transfer, hold, the supervisor's
//! mode, and the recording.

use super::*;
use crate::call::RecordingAction;

impl CallCore {
    /// A control-plane request: what was done (or why not; `None` when the answer
    /// follows later), and the call's end if it ended the call.
    pub(super) fn on_api(
        &mut self,
        cmd: ApiCommand,
        by: &str,
        token: u64,
    ) -> (Option<Result<String, String>>, Option<End>) {
        let talking = self.talking_to_agent();
        let not_talking = || Err("only a call connected to an agent can be transferred".into());
        match cmd {
            ApiCommand::HangUp => {
                let why = format!("hung up by {by}");
                if matches!(self.phase, Phase::Announcing | Phase::Supervising) {
                    let end = self.supervision_over(Some(why));
                    return (Some(Ok("hung up".into())), Some(end));
                }
                if self.phase == Phase::Ringing && !self.a_answered {
                    let end = self.give_up(480, Disposition::Abandoned, &why);
                    return (Some(Ok("hung up".into())), Some(end));
                }
                self.hangup_both(None);
                let end = End::switchboard(Disposition::Answered, &why);
                (Some(Ok("hung up".into())), Some(end))
            }
            ApiCommand::Transfer { .. } if !talking => (Some(not_talking()), None),
            ApiCommand::Transfer { extension } => {
                if self.config.user(&extension).is_none() {
                    let why = format!("{extension} is not a configured extension");
                    return (Some(Err(why)), None);
                }
                self.push(Command::Lookup {
                    extension: extension.clone(),
                    purpose: Lookup::ApiTransfer { token, extension },
                });
                (None, None)
            }
            ApiCommand::TransferToQueue { .. } if !talking => (Some(not_talking()), None),
            ApiCommand::TransferToQueue { queue } => {
                if !self.has_acd {
                    return (Some(Err("no queues are configured".into())), None);
                }
                if !self.config.queues.iter().any(|q| q.name == queue) {
                    let why = format!("queue \"{queue}\" is not configured");
                    return (Some(Err(why)), None);
                }
                let end = self.transfer_to_queue(queue.clone());
                (Some(Ok(format!("transferred to queue {queue}"))), end)
            }
            // Network hold: the caller hears music from us; the agent's phone is not
            // asked (its audio is simply not passed on meanwhile).
            ApiCommand::Hold(on) if talking => {
                let answer = self.hold_by_api(on, by);
                (Some(answer), None)
            }
            ApiCommand::Hold(_) => (
                Some(Err("only a call connected to an agent can be held".into())),
                None,
            ),
            ApiCommand::SupervisorMode(mode) if talking && self.media.bridged() => {
                self.media(MediaCmd::SupervisorMode(mode));
                let name = crate::call::supervisor_call::mode_name(mode);
                self.publish(
                    NewEvent::new("call.supervisor")
                        .agent(self.rec.target.as_deref())
                        .data(serde_json::json!({ "mode": name, "by": by })),
                );
                (Some(Ok(name.to_string())), None)
            }
            ApiCommand::SupervisorMode(_) => {
                (Some(Err("the call is not in a conversation".into())), None)
            }
            ApiCommand::Recording(action) => (Some(self.recording_by_api(action, by)), None),
        }
    }

    fn hold_by_api(&mut self, on: bool, by: &str) -> Result<String, String> {
        match (on, self.media.held()) {
            (true, false) => {
                if self.park_caller_on_music().is_none() {
                    return Err("the caller could not be put on hold".into());
                }
                info!(%by, "the caller is on hold");
                self.publish(
                    NewEvent::new("call.held")
                        .agent(self.rec.target.as_deref())
                        .data(serde_json::json!({ "by": by })),
                );
                Ok("held".into())
            }
            (false, true) => {
                self.take_caller_off_hold();
                info!(%by, "the caller is off hold");
                self.publish(
                    NewEvent::new("call.resumed")
                        .agent(self.rec.target.as_deref())
                        .data(serde_json::json!({ "by": by })),
                );
                Ok("resumed".into())
            }
            (true, true) => Ok("held".into()),
            (false, false) => Ok("resumed".into()),
        }
    }

    fn recording_by_api(&mut self, action: RecordingAction, by: &str) -> Result<String, String> {
        let policy = self.recording.policy.filter(|_| self.talking_to_agent());
        let Some(policy) = policy else {
            return Err("the call is not in a conversation, so there is nothing to record".into());
        };
        let answer = match action {
            RecordingAction::Start if policy == RecordPolicy::Never => {
                Err("this call's recording policy is never".into())
            }
            RecordingAction::Start if self.rec.recording.is_some() => {
                Err("the call has a recording already (pause and resume it)".into())
            }
            RecordingAction::Start => {
                self.start_recording();
                match self.rec.recording {
                    Some(_) => Ok("recording".to_string()),
                    None => Err("the call cannot be recorded now; the log says why".into()),
                }
            }
            _ if self.rec.recording.is_none() || self.recording.stopped => {
                Err("the call is not being recorded".into())
            }
            RecordingAction::Pause | RecordingAction::Resume => {
                self.set_recording_paused(action == RecordingAction::Pause);
                Ok(if self.recording.paused {
                    "paused"
                } else {
                    "recording"
                }
                .to_string())
            }
            RecordingAction::Stop => {
                self.media(MediaCmd::StopRecording);
                self.recording.stopped = true;
                Ok("stopped".to_string())
            }
        };
        if let Ok(state) = &answer {
            self.publish(
                NewEvent::new("call.recording")
                    .agent(self.rec.target.as_deref())
                    .data(serde_json::json!({ "state": state, "by": by })),
            );
        }
        answer
    }
}
