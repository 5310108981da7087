//! Recording a call's conversation: the policy that applies, the file, and the agent's
//! keys that start an on-demand recording and pause it (PCI).

use super::*;

impl Call {
    /// The legs are bridged to a person: settle the recording policy (the flow step's, the queue's, else
    /// the DID's, else the server's), start recording if it says always, and let
    /// supervisors find the call by the callee's extension.
    pub(super) fn on_bridged(&mut self, callee: Option<String>) {
        let cfg = &self.shared.config;
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
            .flow_record
            .or(queue_policy)
            .or(did_policy)
            .unwrap_or(cfg.record);
        self.record_policy = Some(policy);
        self.configure_bridge();
        if policy == RecordPolicy::Always {
            self.start_recording();
        }
        if let Some(ext) = callee.or_else(|| self.rec.target.clone()) {
            self.sw.on_call(&ext, self.key, true);
            self.talking = Some(ext);
        }
    }

    /// Opens this call's recording file and gives it to the bridge.
    pub(super) fn start_recording(&mut self) {
        if self.rec.recording.is_some() {
            return;
        }
        let (Some(relay), Some(a), Some(b)) = (&self.relay, self.a_format(), self.b_format) else {
            return;
        };
        let rate = crate::media::taps::Taps::new(a, b).rate();
        let name = format!("recordings/{}.wav", self.rec.call_uuid);
        let path = self.shared.config.data_dir.join(&name);
        // The writer thread creates the file; a failure comes back from the relay as
        // `RecordingFailed`.
        info!(file = %path.display(), "recording");
        relay.record(self.shared.recordings.call(path, rate));
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
        let keys = &self.shared.config.record_keys;
        self.agent_keys.push(key);
        if self.agent_keys.len() > keys.len() {
            self.agent_keys.remove(0);
        }
        if keys.is_empty() || self.agent_keys != *keys {
            return;
        }
        self.agent_keys.clear();
        match self.record_policy {
            Some(RecordPolicy::Never) | None => {}
            Some(_) if self.rec.recording.is_none() => self.start_recording(),
            Some(_) if self.recording_stopped => {}
            Some(_) => {
                self.set_recording_paused(!self.recording_paused);
                info!(
                    paused = self.recording_paused,
                    "the agent toggled the recording"
                );
                let state = if self.recording_paused {
                    "paused"
                } else {
                    "recording"
                };
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
        self.recording_paused = paused;
        if let Some(relay) = &self.relay {
            relay.pause_recording(paused);
        } else if let Some(rec) = &mut self.recorder {
            if paused {
                rec.pause();
            } else {
                rec.resume();
            }
        }
    }

    /// Has the writer complete a recording and notes its length in the record.
    pub(super) async fn finish_recording(&mut self, recorder: Option<Tape>) {
        let Some(recorder) = recorder else { return };
        let path = recorder.path().to_path_buf();
        match recorder.finish().await {
            Ok(done) => {
                self.rec.recording_ms = Some(done.duration.as_millis() as i64);
            }
            Err(e) => {
                warn!(error = %e, "the recording could not be finished");
                // A file never made (a full disk) is not named in the record.
                if !path.exists() {
                    self.rec.recording = None;
                }
            }
        }
    }
}
