//! The caller in an IVR flow. The call task's `IvrSession` plays prompts, runs web
//! requests and keeps the flow's timers; what the flow asks of the call (a queue, a
//! transfer, a hang-up, the recording policy) comes here as steps.

use std::collections::BTreeMap;

use super::*;
use crate::ivr::interpreter::{QueueResult, TransferTarget};
use crate::ivr::model::RecordMode;

pub use crate::call::ivr::IvrStep;

/// What the call task's flow session must do.
#[derive(Debug)]
pub enum IvrCmd {
    /// Start the flow on the endpoint [`MediaCmd::AnswerHere`] made.
    Start {
        flows: Arc<FlowSet>,
        name: String,
        codec: Codec,
    },
    /// Feed the flow an event; its steps come back as [`Input::IvrSteps`].
    Feed(crate::ivr::Event),
    /// Music on hold while the caller waits in a queue.
    HoldMusic,
    /// The caller's place in the queue.
    Announce {
        position: u32,
        wait_minutes: Option<u64>,
    },
    StopPlayback,
    /// A SIP INFO with a key in it.
    SipInfo {
        content_type: String,
        body: Vec<u8>,
    },
    /// Watch the caller's RTP for the media timeout (`None` while it holds us).
    WatchMedia(Option<Duration>),
    /// Play a notice from the English set; its length comes back as
    /// [`Input::NoticeLength`].
    Notice(&'static str),
}

/// What a fed event made the flow do.
#[derive(Debug, Default)]
pub struct IvrReport {
    pub steps: Vec<IvrStep>,
    /// Nodes entered since the last report: (flow, node, kind), for the event log.
    pub nodes: Vec<(String, String, &'static str)>,
    /// The variables that may travel with the call (screen pop, `call.queued`).
    pub call_data: BTreeMap<String, String>,
    /// Whether the flow still wants input.
    pub running: bool,
}

/// The flow's trace and survey, for the record.
#[derive(Debug, Default, Clone)]
pub struct IvrSummary {
    pub trace: String,
    pub csat: Option<u8>,
    pub resolved: Option<bool>,
}

/// The core's view of the flow.
#[derive(Debug, Default)]
pub(super) struct IvrLeg {
    pub(super) running: bool,
    pub(super) call_data: BTreeMap<String, String>,
}

impl CallCore {
    /// Answers the caller and starts the flow `name`.
    pub(super) fn answer_with_ivr(&mut self, flows: Arc<FlowSet>, name: &str) -> Option<End> {
        let codec = match self.answer_here() {
            Ok(codec) => codec,
            Err(end) => return Some(end),
        };
        self.rec.flow = Some(name.to_string());
        info!(flow = name, "answered by the IVR");
        self.ivr_cmd(IvrCmd::Start {
            flows,
            name: name.to_string(),
            codec,
        });
        self.ivr = Some(IvrLeg {
            running: true,
            call_data: BTreeMap::new(),
        });
        let (caller, dialed) = (self.rec.from_user.clone(), self.rec.dialed.clone());
        self.feed_ivr(crate::ivr::Event::Started { caller, dialed });
        None
    }

    /// Feeds the flow; its steps come back as a report.
    pub(super) fn feed_ivr(&mut self, event: crate::ivr::Event) {
        if self.ivr.is_some() {
            self.ivr_cmd(IvrCmd::Feed(event));
        }
    }

    pub(super) fn on_ivr_input(
        &mut self,
        event: crate::ivr::Event,
        media_timed_out: bool,
    ) -> Option<End> {
        if media_timed_out {
            // The flow hears the caller is gone, for its trace.
            self.feed_ivr(event);
            let secs = self.config.media_timeout.map_or(0, |t| t.as_secs());
            warn!(secs, "no RTP from the caller: hanging up");
            self.cancel_forks(None);
            self.hangup_both(None);
            return Some(End::switchboard(
                Disposition::Answered,
                &format!("media timeout: no RTP from the caller for {secs} s"),
            ));
        }
        if let crate::ivr::Event::Digit(key) = event {
            if self.callback_offered(key) {
                self.request_callback();
                return None;
            }
        }
        self.feed_ivr(event);
        None
    }

    pub(super) fn on_ivr_report(&mut self, report: IvrReport) -> Option<End> {
        let ivr = self.ivr.as_mut()?;
        ivr.running = report.running;
        ivr.call_data = report.call_data;
        for (flow, node, kind) in report.nodes {
            self.publish(
                NewEvent::new("ivr.step")
                    .data(serde_json::json!({ "flow": flow, "node": node, "kind": kind })),
            );
        }
        for step in report.steps {
            match step {
                IvrStep::Finished(outcome) => {
                    debug!(?outcome, "flow finished");
                }
                IvrStep::Voicemail(file) => self.rec.voicemail = Some(file),
                IvrStep::Enqueue {
                    queue,
                    skills,
                    priority,
                } => {
                    if !self.has_acd {
                        continue; // the session only asks when there is an ACD
                    }
                    self.join_queue(queue, skills, priority);
                    self.ivr_cmd(IvrCmd::HoldMusic);
                }
                IvrStep::Hangup => {
                    self.hangup_both(Some(Side::A));
                    return Some(End::switchboard(Disposition::Answered, "the flow hung up"));
                }
                IvrStep::Record(mode) => {
                    self.recording.flow_policy = Some(match mode {
                        RecordMode::Always => RecordPolicy::Always,
                        RecordMode::Never => RecordPolicy::Never,
                        RecordMode::OnDemand => RecordPolicy::OnDemand,
                    });
                }
                IvrStep::Transfer(TransferTarget::Extension(ext)) => {
                    self.rec.target = Some(ext.clone());
                    self.push(Command::Lookup {
                        extension: ext.clone(),
                        purpose: Lookup::FlowTransfer { extension: ext },
                    });
                }
                IvrStep::Transfer(TransferTarget::External(number)) => {
                    // Out through the first trunk that takes outgoing calls.
                    let Some((trunk, addr)) = self.config.outbound_trunk() else {
                        self.hangup_both(Some(Side::A));
                        return Some(End {
                            by: HangupBy::Switchboard,
                            disposition: Disposition::Failed,
                            code: 200,
                            reason: Some(format!(
                                "transfer to {number}: no trunk is configured for outgoing calls"
                            )),
                        });
                    };
                    info!(%number, %trunk, "transfer out through a trunk");
                    self.rec.target = Some(number.clone());
                    self.ivr_cmd(IvrCmd::StopPlayback);
                    let via_trunk = crate::call::trunk_binding(&number, addr);
                    self.ring(&[via_trunk]);
                }
            }
        }
        None
    }

    /// The flow's transfer to an extension, once its phones are known.
    pub(super) fn flow_transfer_to(
        &mut self,
        extension: String,
        phones: Vec<Binding>,
    ) -> Option<End> {
        if phones.is_empty() {
            self.hangup_both(Some(Side::A));
            return Some(End {
                by: HangupBy::Switchboard,
                disposition: Disposition::Unavailable,
                code: 200,
                reason: Some(format!("extension {extension} has no registered phone")),
            });
        }
        // Stop the prompt; the caller waits in silence while the phone rings.
        self.ivr_cmd(IvrCmd::StopPlayback);
        self.ring(&phones);
        None
    }

    /// The queue's answer to the flow when the caller leaves it unanswered.
    pub(super) fn queue_failed_to_flow(&mut self, reason: String) {
        self.feed_ivr(crate::ivr::Event::QueueResult(QueueResult::Failed {
            reason,
        }));
    }
}
