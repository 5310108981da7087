//! The IVR phase of a call: drives the flow interpreter with the caller's keys, prompt
//! ends, timers and web-service answers, and carries out the actions that need no other
//! leg (play, stop, timers, HTTP). What does need the call — transfer, queue, hang-up —
//! comes back to the call task as an [`IvrStep`].
//!
//! Owned by the call task, like everything else about the call.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::sleep_until_opt;
use crate::ivr::interpreter::{QueueResult, TransferTarget};
use crate::ivr::model::HttpMethod;
use crate::ivr::{Action, Event, FlowSet, Interpreter, Outcome};
use crate::media::endpoint::{EndpointEvent, EndpointHandle};
use crate::media::mixer::SampleRate;
use crate::media::prompt::{Playlist, PromptCache};
use crate::media::recorder::RecordingWriter;

/// The play id of music on hold: never a flow's, so its (endless) playing never
/// answers a flow's prompt.
const HOLD_MUSIC: u64 = u64::MAX;
/// The play id of the voicemail beep (likewise never a flow's).
const BEEP: u64 = u64::MAX - 1;
/// The play id of a queue position announcement.
const ANNOUNCEMENT: u64 = u64::MAX - 2;
/// The play id of a notice from the call layer (e.g. "we will call you back").
const NOTICE: u64 = u64::MAX - 3;

/// The tone before a voicemail: 1 kHz for 300 ms.
fn beep_tone(rate: SampleRate) -> Arc<[i16]> {
    let hz = rate.hz() as f32;
    (0..(rate.hz() * 3 / 10))
        .map(|i| ((i as f32 * 1000.0 * std::f32::consts::TAU / hz).sin() * 8000.0) as i16)
        .collect()
}

/// What the call task must do for the flow.
#[derive(Debug)]
pub enum IvrStep {
    Transfer(TransferTarget),
    /// The recording policy of the conversation the next step leads to.
    Record(crate::ivr::model::RecordMode),
    /// A voicemail is being recorded into this file (relative to the data directory).
    Voicemail(String),
    /// Put the caller in an ACD queue; answer with `QueueResult` through `feed`.
    Enqueue {
        queue: String,
        skills: Vec<(String, u8)>,
        priority: i32,
    },
    Hangup,
    /// The flow is over (after a transfer or a hang-up): its trace goes into the record.
    Finished(Outcome),
}

pub struct IvrSession {
    interp: Interpreter,
    endpoint: Option<EndpointHandle>,
    media: mpsc::UnboundedReceiver<EndpointEvent>,
    http_results: mpsc::UnboundedSender<Event>,
    http_inbox: mpsc::UnboundedReceiver<Event>,
    prompt_root: PathBuf,
    prompts: Arc<PromptCache>,
    rate: SampleRate,
    http: reqwest::Client,
    /// Added to the real time the flow sees (the `--clock` test option); zero in service.
    clock_offset: jiff::SignedDuration,
    /// Whether an ACD takes `queue` steps.
    queues: bool,
    /// Where voicemail goes (the data directory), who writes it, and this call's id
    /// for file names.
    data_dir: PathBuf,
    recordings: RecordingWriter,
    call_uuid: String,
    /// The message being (or last) recorded, relative to the data directory.
    voicemail: Option<String>,
    /// The caller sent no RTP for the media timeout.
    media_timed_out: bool,
    /// How many trace entries the call has been told about (`new_nodes`).
    reported: usize,
}

impl IvrSession {
    #[allow(clippy::too_many_arguments)]
    pub fn start(
        flows: Arc<FlowSet>,
        flow: &str,
        endpoint: EndpointHandle,
        media: mpsc::UnboundedReceiver<EndpointEvent>,
        prompt_root: &Path,
        prompts: Arc<PromptCache>,
        rate: SampleRate,
        http: reqwest::Client,
        clock_offset: jiff::SignedDuration,
        queues: bool,
        data_dir: &Path,
        recordings: RecordingWriter,
        call_uuid: &str,
    ) -> Result<IvrSession, String> {
        let interp = Interpreter::new(flows, flow).map_err(|e| e.to_string())?;
        let (http_results, http_inbox) = mpsc::unbounded_channel();
        Ok(IvrSession {
            interp,
            endpoint: Some(endpoint),
            media,
            http_results,
            http_inbox,
            prompt_root: prompt_root.to_path_buf(),
            prompts,
            rate,
            http,
            clock_offset,
            queues,
            data_dir: data_dir.to_path_buf(),
            recordings,
            call_uuid: call_uuid.to_string(),
            voicemail: None,
            media_timed_out: false,
            reported: 0,
        })
    }

    /// The time the flow lives in.
    fn now(&self) -> Timestamp {
        Timestamp::now() + self.clock_offset
    }

    /// Whether the flow still wants input.
    pub fn is_running(&self) -> bool {
        !self.interp.is_finished()
    }

    pub fn stop_playback(&self) {
        if let Some(e) = &self.endpoint {
            e.stop();
        }
    }

    /// Music on hold while the caller waits in a queue: `moh/default.wav` under the
    /// prompt root, looping (silence if there is none).
    pub fn hold_music(&self) {
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        let path = self.prompt_root.join("moh/default.wav");
        match self.prompts.get(&path, self.rate) {
            Ok(music) => endpoint.play(HOLD_MUSIC, Playlist::new().then(music).looping(true)),
            Err(e) => warn!(file = %path.display(), error = %e, "no music on hold"),
        }
    }

    /// A SIP INFO the caller's dialog received while the flow has the caller: a key in
    /// it reaches the flow like any other (through the endpoint's detector, which also
    /// drops a copy of a press the phone sends as RFC 4733 events too).
    pub fn sip_info(&self, content_type: &str, body: &[u8]) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.sip_info(content_type, body);
        }
    }

    /// Whether the caller's phone stopped sending RTP for the media timeout.
    pub fn media_timed_out(&self) -> bool {
        self.media_timed_out
    }

    /// Gives the session a new endpoint (the caller is back from an agent).
    pub fn set_endpoint(
        &mut self,
        endpoint: EndpointHandle,
        media: mpsc::UnboundedReceiver<EndpointEvent>,
    ) {
        self.endpoint = Some(endpoint);
        self.media = media;
    }

    /// Hands the media endpoint over (to release its ports for a bridge).
    /// Watches the caller's RTP for the media timeout (`None` while it holds us).
    pub fn watch_media(&self, timeout: Option<Duration>) {
        if let Some(endpoint) = &self.endpoint {
            endpoint.watch_media(timeout);
        }
    }

    pub fn take_endpoint(&mut self) -> Option<EndpointHandle> {
        self.endpoint.take()
    }

    /// The nodes entered since the last call: (flow, node, kind), for the event log.
    pub fn new_nodes(&mut self) -> Vec<(String, String, &'static str)> {
        let entries = &self.interp.trace().entries;
        let fresh = entries[self.reported.min(entries.len())..]
            .iter()
            .filter_map(|e| match &e.step {
                crate::ivr::interpreter::Step::Node { flow, node, kind } => {
                    Some((flow.clone(), node.clone(), *kind))
                }
                _ => None,
            })
            .collect();
        self.reported = entries.len();
        fresh
    }

    pub fn trace_text(&self) -> String {
        self.interp
            .trace()
            .entries
            .iter()
            .map(|e| e.step.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The post-call survey's answers, if it ran.
    pub fn survey(&self) -> (Option<u8>, Option<bool>) {
        match &self.interp.trace().survey {
            Some(a) => (a.csat, a.resolved),
            None => (None, None),
        }
    }

    /// The variables that may travel with the call (secure ones only as their mask).
    pub fn call_data(&self) -> std::collections::BTreeMap<String, String> {
        self.interp.call_data()
    }

    /// Waits for the next input the flow needs. Never returns while nothing can happen.
    pub async fn next_input(&mut self) -> Event {
        let timer = self.interp.timer().map(|at| {
            let wait = at.duration_since(self.now());
            tokio::time::Instant::now() + Duration::try_from(wait).unwrap_or(Duration::ZERO)
        });
        // The timer branch never closes, so the select always has a branch left.
        loop {
            return tokio::select! {
                Some(ev) = self.media.recv() => match ev {
                    EndpointEvent::Digit(d) => Event::Digit(d),
                    // A notice (the callback confirmation) is the call's, not the flow's.
                    EndpointEvent::PlayFinished(NOTICE) => continue,
                    // After a queue announcement, back to the music (not the flow's affair).
                    EndpointEvent::PlayFinished(ANNOUNCEMENT) => {
                        self.hold_music();
                        continue;
                    }
                    EndpointEvent::PlayFinished(id) => Event::PromptFinished { play: id },
                    EndpointEvent::RecordingDone { .. } => Event::RecordingFinished {
                        file: self.voicemail.clone(),
                    },
                    // The caller's phone went quiet for good: to the flow, the caller is
                    // gone; the call sees `media_timed_out` and hangs up.
                    EndpointEvent::MediaTimeout => {
                        self.media_timed_out = true;
                        Event::CallerHungUp
                    }
                },
                Some(ev) = self.http_inbox.recv() => ev,
                _ = sleep_until_opt(timer) => Event::Timer,
            };
        }
    }

    /// Plays the prompt `name` (from the English set) over whatever plays now; returns
    /// its length so the call knows when it has been heard.
    pub fn notice(&self, name: &str) -> Duration {
        let Some(endpoint) = &self.endpoint else {
            return Duration::ZERO;
        };
        let path = self.prompt_root.join("en").join(format!("{name}.wav"));
        match self.prompts.get(&path, self.rate) {
            Ok(audio) => {
                let playlist = Playlist::new().then(audio);
                let length = playlist.duration(self.rate);
                endpoint.play(NOTICE, playlist);
                length
            }
            Err(e) => {
                warn!(prompt = %path.display(), error = %e, "notice missing");
                Duration::ZERO
            }
        }
    }

    /// Tells a queued caller its place ("you are caller number 3") and, when known, the
    /// estimated wait in minutes, then the music resumes.
    pub fn announce(&self, position: u32, wait_minutes: Option<u64>) {
        use crate::ivr::model::SayKind;
        use crate::ivr::say::expand;
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        let lang = self
            .interp
            .variables()
            .get("language")
            .cloned()
            .unwrap_or_else(|| "en".into());
        let mut names = vec!["queue_position".to_string()];
        names.extend(expand(SayKind::Number, &position.to_string()).unwrap_or_default());
        if let Some(m) = wait_minutes.filter(|m| *m > 0) {
            names.push("queue_wait".into());
            names.extend(expand(SayKind::Number, &m.to_string()).unwrap_or_default());
            names.push("minutes".into());
        }
        let mut playlist = Playlist::new();
        for name in names {
            let path = self.prompt_root.join(&lang).join(format!("{name}.wav"));
            match self.prompts.get(&path, self.rate) {
                Ok(audio) => playlist = playlist.then(audio),
                Err(e) => warn!(prompt = %path.display(), error = %e, "announcement part missing"),
            }
        }
        endpoint.play(ANNOUNCEMENT, playlist);
    }

    /// Feeds one event and carries out what the flow asks; returns what the call must do.
    pub fn feed(&mut self, event: Event) -> Vec<IvrStep> {
        self.interp.handle(self.now(), event);
        let mut steps = Vec::new();
        while let Some(action) = self.interp.poll() {
            match action {
                Action::Play {
                    id,
                    files,
                    barge_in,
                } => self.play(id, &files, barge_in),
                Action::StopPlayback => {
                    if let Some(e) = &self.endpoint {
                        e.stop();
                    }
                }
                Action::ArmTimer { .. } => {} // read back through `interp.timer()`
                Action::HttpRequest {
                    id,
                    method,
                    url,
                    headers,
                    body,
                    timeout,
                } => self.request(id, method, url, headers, body, timeout),
                Action::Enqueue {
                    queue,
                    skills,
                    priority,
                    ..
                } if self.queues => steps.push(IvrStep::Enqueue {
                    queue,
                    skills,
                    priority,
                }),
                Action::Enqueue { queue, .. } => {
                    // No ACD is configured: the flow takes its failure path
                    // (voicemail, operator…), as it would with no agents.
                    warn!(%queue, "queue step reached, but no queues are configured");
                    let now = self.now();
                    self.interp.handle(
                        now,
                        Event::QueueResult(QueueResult::Failed {
                            reason: "no queues are configured".into(),
                        }),
                    );
                }
                Action::Record {
                    mailbox,
                    beep,
                    max,
                    silence,
                } => {
                    let name: String = mailbox
                        .chars()
                        .map(|c| {
                            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                                c
                            } else {
                                '_'
                            }
                        })
                        .collect();
                    let relative = format!("voicemail/{name}/{}.wav", self.call_uuid);
                    if let Some(endpoint) = &self.endpoint {
                        if beep {
                            endpoint.play(BEEP, Playlist::new().then(beep_tone(self.rate)));
                        }
                        let tape = self
                            .recordings
                            .message(self.data_dir.join(&relative), self.rate);
                        endpoint.record(tape, max, silence);
                    }
                    info!(file = %relative, "recording a voicemail");
                    self.voicemail = Some(relative.clone());
                    steps.push(IvrStep::Voicemail(relative));
                }
                Action::RecordConversation(mode) => steps.push(IvrStep::Record(mode)),
                // The IVR's part of a call is not recorded (recording starts when the
                // caller is connected to a person), so there is nothing to pause.
                Action::PauseRecording | Action::ResumeRecording => {}
                Action::Transfer { to, .. } => steps.push(IvrStep::Transfer(to)),
                Action::Hangup => steps.push(IvrStep::Hangup),
                Action::Finished { outcome } => steps.push(IvrStep::Finished(outcome)),
            }
        }
        steps
    }

    fn play(&mut self, id: u64, files: &[String], barge_in: bool) {
        let Some(endpoint) = &self.endpoint else {
            return;
        };
        let paths: Vec<PathBuf> = files.iter().map(|f| self.prompt_root.join(f)).collect();
        // A missing or unreadable prompt must not stall the flow: play what loads.
        let mut playlist = Playlist::new().barge_in(barge_in);
        for p in &paths {
            match self.prompts.get(p, self.rate) {
                Ok(audio) => playlist = playlist.then(audio),
                Err(e) => warn!(prompt = %p.display(), error = %e, "prompt not played"),
            }
        }
        debug!(id, ?files, "play");
        endpoint.play(id, playlist);
    }

    fn request(
        &self,
        id: u64,
        method: HttpMethod,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<String>,
        timeout: Duration,
    ) {
        let mut req = match method {
            HttpMethod::Get => self.http.get(&url),
            HttpMethod::Post => self.http.post(&url),
        };
        for (k, v) in headers {
            req = req.header(k, v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let req = req.timeout(timeout);
        let results = self.http_results.clone();
        info!(%url, "IVR web request");
        tokio::spawn(async move {
            let event = match req.send().await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    match resp.text().await {
                        Ok(body) => Event::HttpResult {
                            request: id,
                            status,
                            body,
                        },
                        Err(e) => Event::HttpFailed {
                            request: id,
                            reason: e.to_string(),
                        },
                    }
                }
                Err(e) => Event::HttpFailed {
                    request: id,
                    reason: e.to_string(),
                },
            };
            let _ = results.send(event);
        });
    }
}
