//! Recording a call's conversation: the policy that applies, the file, and the agent's
//! keys that start an on-demand recording and pause it (PCI).

use super::*;

/// The conversation's recording, as the call decides it.
#[derive(Debug, Default)]
pub(super) struct Recording {
    /// The policy of the conversation, settled when it is bridged.
    pub(super) policy: Option<RecordPolicy>,
    /// The flow step's `record:`, which outranks the queue's and the DID's.
    pub(super) flow_policy: Option<RecordPolicy>,
    pub(super) paused: bool,
    /// Stopped (by the control plane, or a failed file): the rest is not recorded.
    pub(super) stopped: bool,
    /// The agent's last keys, to spot the recording keys.
    agent_keys: String,
}

impl CallCore {
    /// The legs are bridged to a person: settle the recording policy (the flow step's,
    /// the queue's, else the DID's, else the server's), start recording if it says
    /// always, and let supervisors find the call by the callee's extension.
    pub(super) fn on_bridged(&mut self, callee: Option<String>) {
        let cfg = &self.config;
        let queue_policy = self
            .rec
            .queue
            .as_deref()
            .and_then(|q| cfg.queues.iter().find(|c| c.name == q))
            .and_then(|q| q.record);
        let did_policy = self
            .rec
            .did
            .as_deref()
            .and_then(|d| cfg.did(d))
            .and_then(|d| d.record);
        let policy = self
            .recording
            .flow_policy
            .or(queue_policy)
            .or(did_policy)
            .unwrap_or(cfg.record);
        self.recording.policy = Some(policy);
        self.configure_bridge();
        if policy == RecordPolicy::Always {
            self.start_recording();
        }
        if let Some(extension) = callee.or_else(|| self.rec.target.clone()) {
            self.push(Command::OnCall {
                extension: extension.clone(),
                on: true,
            });
            self.talking = Some(extension);
        }
    }

    /// Opens this call's recording file on the bridge.
    pub(super) fn start_recording(&mut self) {
        if self.rec.recording.is_some() {
            return;
        }
        let (true, Some(a), Some(b)) = (self.media.bridged(), self.a_format(), self.b_format)
        else {
            return;
        };
        let rate = crate::media::taps::Taps::new(a, b).rate();
        let name = format!("recordings/{}.wav", self.rec.call_uuid);
        let path = self.config.data_dir.join(&name);
        // The writer thread creates the file; a failure comes back from the bridge as
        // `RecordingFailed`.
        info!(file = %path.display(), "recording");
        self.media(MediaCmd::Record { path, rate });
        self.rec.recording = Some(name);
        self.publish(
            NewEvent::new("call.recording")
                .agent(self.rec.target.as_deref())
                .data(serde_json::json!({ "state": "recording" })),
        );
    }

    /// Keys from the agent: the recording keys start an on-demand recording, then pause
    /// and resume it (card details are read out while paused).
    pub(super) fn on_agent_key(&mut self, key: char) {
        let keys = &self.config.record_keys;
        let typed = &mut self.recording.agent_keys;
        typed.push(key);
        if typed.len() > keys.len() {
            typed.remove(0);
        }
        if keys.is_empty() || typed != keys {
            return;
        }
        typed.clear();
        match self.recording.policy {
            Some(RecordPolicy::Never) | None => {}
            Some(_) if self.rec.recording.is_none() => self.start_recording(),
            Some(_) if self.recording.stopped => {}
            Some(_) => {
                self.set_recording_paused(!self.recording.paused);
                let paused = self.recording.paused;
                info!(paused, "the agent toggled the recording");
                let state = if paused { "paused" } else { "recording" };
                self.publish(
                    NewEvent::new("call.recording")
                        .agent(self.rec.target.as_deref())
                        .data(serde_json::json!({ "state": state, "by": "phone" })),
                );
            }
        }
    }

    /// Pauses or resumes the recording wherever it is (on the bridge, or parked while
    /// the caller hears hold music).
    pub(super) fn set_recording_paused(&mut self, paused: bool) {
        self.recording.paused = paused;
        self.media(MediaCmd::PauseRecording(paused));
    }

    /// A finished recording's length goes into the record; a file never made (a full
    /// disk) is not named there.
    pub(super) fn on_recording_finished(&mut self, outcome: RecordingOutcome) {
        match outcome {
            RecordingOutcome::Written { ms } => self.rec.recording_ms = Some(ms),
            RecordingOutcome::Failed { made: false } => self.rec.recording = None,
            RecordingOutcome::Failed { made: true } => {}
        }
    }
}
