//! The task that runs one call: it owns everything of the call that does IO (the
//! switch's handle, the media ports and tasks, the IVR session, the ACD's channel) and
//! a [`CallCore`] that decides. One event loop: whatever happens becomes an [`Input`],
//! and the core's [`Command`]s are carried out in order; what carrying one out learns
//! (a lookup's phones, a flow's steps, a bridge's counters) is fed back before the next
//! outside event.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tracing::{info_span, warn, Instrument};

use super::acd::AcdMsg;
use super::core::{
    AcdCmd, BridgeSpec, CallCore, CallerLeg, Command, Contacts, Conversation, Input, IvrCmd,
    IvrReport, IvrSummary, MediaCmd, Now, Offer, RecordingOutcome, Setup, Start,
};
use super::ivr::IvrSession;
use super::{sleep_until_opt, CallEvent, CallKey, CallSetup, Route, Shared, SwitchHandle};
use crate::acd::CallId;
use crate::config::Transport;
use crate::media::endpoint::{self, EndpointEvent, EndpointHandle, LegMedia};
use crate::media::mixer::SampleRate;
use crate::media::ports::MediaPorts;
use crate::media::recorder::Tape;
use crate::media::relay::{spawn_relay_with_events, RelayEvent, RelayHandle, Side, SupervisorLeg};
use crate::media::taps::LegFormat;
use crate::sip::message;
use crate::store::{now_ms, Disposition, HangupBy};

pub fn spawn(setup: CallSetup) {
    let span =
        info_span!("call", id = %setup.record.call_uuid, sip_call_id = %setup.record.a_call_id);
    tokio::spawn(run(setup).instrument(span));
}

fn now() -> Now {
    Now {
        at: std::time::Instant::now(),
        wall_ms: now_ms(),
    }
}

/// Where the caller's ports are.
enum Caller {
    /// Not in use (before the first bridge, or kept for a callback).
    Ports(MediaPorts),
    /// Our own endpoint, before the flow takes it or while it plays an announcement.
    Endpoint {
        endpoint: EndpointHandle,
        events: Option<mpsc::UnboundedReceiver<EndpointEvent>>,
        codec: crate::media::codec::Codec,
    },
    /// With the flow's session.
    Ivr,
    /// Music on hold.
    Music(EndpointHandle),
    /// On the bridge.
    Relay,
    Gone,
}

/// The call's media: the caller's and the callee's ports wherever they are, the bridge,
/// and a recording parked while the caller hears music.
struct Media {
    caller: Caller,
    callee_ports: Option<MediaPorts>,
    relay: Option<RelayHandle>,
    relay_events: Option<mpsc::UnboundedReceiver<RelayEvent>>,
    parked_tape: Option<Tape>,
    /// A supervisor's call: the agent's bridge it joined, and the signal that it left.
    supervised: Option<RelayHandle>,
    detached: Option<oneshot::Receiver<()>>,
}

struct Task {
    key: CallKey,
    shared: Arc<Shared>,
    sw: SwitchHandle,
    core: CallCore,
    media: Media,
    ivr: Option<Box<IvrSession>>,
    from_acd: Option<mpsc::UnboundedReceiver<AcdMsg>>,
    /// Control-plane requests waiting for the core's answer.
    replies: HashMap<u64, oneshot::Sender<Result<String, String>>>,
    next_token: u64,
    /// What carrying out commands learned, for the core before the next outside event.
    follow_ups: VecDeque<Input>,
}

async fn run(s: CallSetup) {
    let CallSetup {
        key,
        shared,
        switch,
        mut events,
        invite_tx,
        invite,
        from,
        route,
        mut record,
    } = s;
    let refuse = |code: u16, why: &str, record: &mut crate::store::CallRecord| {
        let tag = message::new_tag();
        switch.respond(invite_tx, message::response_to(&invite, code, Some(&tag)));
        record.final_code = code;
        record.disposition = Some(Disposition::Failed);
        record.hangup_by = Some(HangupBy::Switchboard);
        record.reason = Some(why.to_string());
        record.ended_ms = now_ms();
    };
    // The caller's offer decides what we offer the callee.
    let offer = match Offer::read(&shared.config, &invite, &record) {
        Ok(offer) => offer,
        Err(why) => {
            warn!(%why, "refusing the call with 488");
            refuse(488, &why, &mut record);
            shared.records.submit(record);
            return switch.ended(key);
        }
    };
    let (mut a_ports, b_ports) = match (shared.ports.allocate(), shared.ports.allocate()) {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            warn!("RTP port range exhausted");
            refuse(503, "no RTP ports left", &mut record);
            shared.records.submit(record);
            return switch.ended(key);
        }
    };
    if let Some(c) = &offer.crypto {
        tracing::info!(suite = ?c.suite(), "the caller's media is SRTP");
        a_ports.set_srtp(c.session());
    }
    let contacts = Contacts {
        udp: shared.contact(Transport::Udp),
        tcp: shared.contact(Transport::Tcp),
        tls: shared.contact(Transport::Tls),
    };
    let route_name = match &route {
        Route::Ring(_) => "ring",
        Route::Flow { .. } => "flow",
        Route::Feature(_) => "feature",
        Route::Supervise { .. } => "supervise",
    };
    let core = CallCore::new(
        now(),
        Setup {
            config: shared.config.clone(),
            contacts,
            acd: shared.acd.is_some(),
            ids: switch.ids(),
            invite_tx,
            invite,
            from,
            record,
            offer,
            a_port: a_ports.port(),
            b_port: b_ports.port(),
            route: route_name,
        },
    );
    let mut task = Box::new(Task {
        key,
        shared,
        sw: switch,
        core,
        media: Media {
            caller: Caller::Ports(a_ports),
            callee_ports: Some(b_ports),
            relay: None,
            relay_events: None,
            parked_tape: None,
            supervised: None,
            detached: None,
        },
        ivr: None,
        from_acd: None,
        replies: HashMap::new(),
        next_token: 0,
        follow_ups: VecDeque::new(),
    });
    // `call.arrived` goes out before anything is waited for.
    Box::pin(task.pump()).await;
    let start = match route {
        Route::Ring(targets) => Start::Ring(targets),
        Route::Flow { flows, name } => Start::Flow { flows, name },
        Route::Feature(feature) => {
            task.media.callee_ports = None;
            let accepted = match feature.verdict {
                Some(rx) => matches!(rx.await, Ok(Ok(()))),
                None => false,
            };
            Start::Announce {
                prompt: if accepted {
                    feature.done
                } else {
                    feature.refused
                },
                refused: (!accepted).then(|| "the ACD refused the request".to_string()),
            }
        }
        Route::Supervise { agent, mode } => {
            task.media.callee_ports = None;
            Start::Supervise { agent, mode }
        }
    };
    task.core.start(now(), start);
    Box::pin(task.pump()).await;
    let mut events_open = true;
    while !task.core.is_done() {
        let deadline = task.core.poll_timeout().map(tokio::time::Instant::from_std);
        let input = tokio::select! {
            ev = events.recv(), if events_open => match ev {
                Some(ev) => task.input_of(ev),
                None => {
                    events_open = false;
                    Some(Input::SwitchGone)
                }
            },
            _ = sleep_until_opt(deadline) => {
                task.core.handle_timeout(now());
                None
            }
            ev = next_ivr_input(&mut task.ivr) => Some(ev),
            msg = next_acd_msg(&mut task.from_acd) => Some(Input::Acd(msg)),
            ev = next_relay_event(&mut task.media.relay_events) => Some(Input::Relay(ev)),
            ev = next_endpoint_event(&mut task.media.caller) => ev,
            _ = detached(&mut task.media.detached) => {
                // The bridge let this supervisor go (its call ended, or another
                // supervisor took over): it is no longer ours to unsupervise.
                task.media.supervised = None;
                Some(Input::SupervisedCallEnded)
            }
        };
        if let Some(input) = input {
            task.core.handle(now(), input);
        }
        Box::pin(task.pump()).await;
    }
    task.sw.ended(task.key);
}

async fn next_relay_event(events: &mut Option<mpsc::UnboundedReceiver<RelayEvent>>) -> RelayEvent {
    match events {
        Some(rx) => match rx.recv().await {
            Some(ev) => ev,
            None => {
                // That relay is gone (released or stopped); wait for the next one.
                *events = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

async fn next_acd_msg(from_acd: &mut Option<mpsc::UnboundedReceiver<AcdMsg>>) -> AcdMsg {
    let Some(rx) = from_acd else {
        return std::future::pending().await;
    };
    let msg = rx.recv().await;
    if matches!(msg, None | Some(AcdMsg::Overflow { .. })) {
        // The caller leaves the queue: nothing more comes from it.
        *from_acd = None;
    }
    // The ACD is gone: the caller must not wait on music for ever.
    msg.unwrap_or(AcdMsg::Overflow {
        reason: "the ACD is not available".into(),
    })
}

async fn next_ivr_input(ivr: &mut Option<Box<IvrSession>>) -> Input {
    match ivr {
        Some(session) if session.is_running() => {
            let event = session.next_input().await;
            Input::IvrEvent {
                event,
                media_timed_out: session.media_timed_out(),
            }
        }
        _ => std::future::pending().await,
    }
}

/// An announcement's end on our own endpoint.
async fn next_endpoint_event(caller: &mut Caller) -> Option<Input> {
    let Caller::Endpoint {
        events: events @ Some(_),
        ..
    } = caller
    else {
        return std::future::pending().await;
    };
    match events.as_mut()?.recv().await {
        Some(EndpointEvent::PlayFinished(_)) => Some(Input::AnnouncementDone),
        Some(_) => None,
        None => {
            *events = None;
            Some(Input::AnnouncementDone)
        }
    }
}

async fn detached(rx: &mut Option<oneshot::Receiver<()>>) {
    match rx {
        Some(r) => {
            let _ = r.await;
            *rx = None;
        }
        None => std::future::pending().await,
    }
}

impl Task {
    /// An event from the switch, as the core's input (a supervisor's leg is media, and
    /// is joined here).
    fn input_of(&mut self, ev: CallEvent) -> Option<Input> {
        Some(match ev {
            CallEvent::Request { tx, req, .. } => Input::Request { tx, req },
            CallEvent::Ack { .. } => return None,
            CallEvent::Response { tx, resp } => Input::Response { tx, resp },
            CallEvent::Timeout { tx } => Input::Timeout { tx },
            CallEvent::Cancelled { tx } => Input::Cancelled { tx },
            CallEvent::AckTimeout { tx } => Input::AckTimeout { tx },
            CallEvent::Shutdown => Input::Shutdown,
            CallEvent::Api { cmd, by, reply } => {
                self.next_token += 1;
                self.replies.insert(self.next_token, reply);
                Input::Api {
                    cmd,
                    by,
                    token: self.next_token,
                }
            }
            CallEvent::Supervise { leg, reply } => {
                match &self.media.relay {
                    Some(relay) if self.core.takes_supervisor() => {
                        tracing::info!(mode = ?leg.mode, "a supervisor joins");
                        relay.supervise(*leg);
                        let _ = reply.send(Ok(relay.clone()));
                    }
                    _ => {
                        let _ = reply.send(Err(*leg));
                    }
                }
                return None;
            }
        })
    }

    /// Carries out the core's commands, and feeds back what they learned, until both
    /// run dry.
    async fn pump(&mut self) {
        loop {
            if let Some(cmd) = self.core.poll_command() {
                Box::pin(self.run(cmd)).await;
            } else if let Some(input) = self.follow_ups.pop_front() {
                self.core.handle(now(), input);
            } else {
                return;
            }
        }
    }

    async fn run(&mut self, cmd: Command) {
        let key = self.key;
        match cmd {
            Command::Send { tx, req, to } => self.sw.send_as(key, tx, req, to),
            Command::Respond { tx, resp } => self.sw.respond(tx, resp),
            Command::Ack { req, to } => self.sw.send_ack(req, to),
            Command::Cancel { tx } => self.sw.cancel(tx),
            Command::BindCallId(call_id) => self.sw.bind_call_id(key, call_id),
            Command::OnCall { extension, on } => self.sw.on_call(&extension, key, on),
            Command::Lookup { extension, purpose } => {
                let phones = self.sw.lookup(&extension).await;
                self.follow_ups.push_back(Input::Phones { purpose, phones });
            }
            Command::Publish(e) => self.shared.events.publish(e),
            Command::ApiReply { token, answer } => {
                if let Some(reply) = self.replies.remove(&token) {
                    let _ = reply.send(answer);
                }
            }
            Command::Submit(rec) => self.shared.records.submit(*rec),
            Command::Ended => {}
            Command::Acd(cmd) => self.acd(cmd),
            Command::Ivr(cmd) => self.ivr(cmd),
            Command::Media(cmd) => self.media(cmd).await,
        }
    }

    fn acd(&mut self, cmd: AcdCmd) {
        let Some(acd) = self.shared.acd.clone() else {
            return;
        };
        let call = CallId(self.key);
        match cmd {
            AcdCmd::Enqueue {
                queue,
                skills,
                priority,
            } => {
                let (tx, rx) = mpsc::unbounded_channel();
                let uuid = &self.core.record().call_uuid;
                acd.enqueue(call, uuid, &queue, skills, priority, tx);
                self.from_acd = Some(rx);
            }
            AcdCmd::Declined { agent } => acd.declined(call, &agent),
            AcdCmd::Answered { agent } => acd.answered(call, &agent),
            AcdCmd::CallbackRequested => acd.event(crate::acd::Event::CallbackRequested { call }),
            AcdCmd::Ended(by) => {
                acd.ended(call, by);
                self.from_acd = None;
            }
            AcdCmd::Abandoned => {
                acd.abandoned(call);
                self.from_acd = None;
            }
        }
    }

    fn ivr(&mut self, cmd: IvrCmd) {
        if let IvrCmd::Start { flows, name, codec } = cmd {
            return self.start_flow(flows, &name, codec);
        }
        let Some(session) = self.ivr.as_mut() else {
            return;
        };
        match cmd {
            IvrCmd::Start { .. } => {}
            IvrCmd::Feed(event) => {
                let steps = session.feed(event);
                let report = IvrReport {
                    steps,
                    nodes: session.new_nodes(),
                    call_data: session.call_data(),
                    running: session.is_running(),
                };
                self.follow_ups.push_back(Input::IvrSteps(report));
            }
            IvrCmd::HoldMusic => session.hold_music(),
            IvrCmd::Announce {
                position,
                wait_minutes,
            } => session.announce(position, wait_minutes),
            IvrCmd::StopPlayback => session.stop_playback(),
            IvrCmd::SipInfo { content_type, body } => session.sip_info(&content_type, &body),
            IvrCmd::WatchMedia(timeout) => session.watch_media(timeout),
            IvrCmd::Notice(name) => {
                let heard = session.notice(name);
                self.follow_ups.push_back(Input::NoticeLength(heard));
            }
        }
    }

    fn start_flow(
        &mut self,
        flows: Arc<crate::ivr::FlowSet>,
        name: &str,
        codec: crate::media::codec::Codec,
    ) {
        let Caller::Endpoint {
            endpoint,
            events: Some(events),
            ..
        } = std::mem::replace(&mut self.media.caller, Caller::Ivr)
        else {
            self.media.caller = Caller::Gone;
            let why = "the caller's media endpoint is gone".to_string();
            return self.follow_ups.push_back(Input::IvrFailed(why));
        };
        let rate = SampleRate::from_hz(codec.sample_rate()).unwrap_or(SampleRate::Narrowband);
        let cfg = &self.shared.config;
        let session = IvrSession::start(
            flows,
            name,
            endpoint,
            events,
            &cfg.ivr_prompts,
            self.shared.prompts.clone(),
            rate,
            self.shared.http.clone(),
            cfg.clock_offset,
            self.shared.acd.is_some(),
            &cfg.data_dir,
            self.shared.recordings.clone(),
            &self.core.record().call_uuid,
        );
        match session {
            Ok(s) => self.ivr = Some(Box::new(s)),
            Err(why) => {
                self.media.caller = Caller::Gone;
                self.follow_ups.push_back(Input::IvrFailed(why));
            }
        }
    }

    /// Our own endpoint on the caller's ports.
    fn caller_endpoint(
        ports: MediaPorts,
        leg: CallerLeg,
    ) -> (EndpointHandle, mpsc::UnboundedReceiver<EndpointEvent>) {
        let (events, media) = mpsc::unbounded_channel();
        let leg = LegMedia {
            remote: leg.remote,
            codec: leg.codec,
            telephone_event: leg.telephone_event,
        };
        (endpoint::spawn(ports, leg, events), media)
    }

    /// The caller's ports, from wherever they are.
    async fn take_caller_ports(&mut self) -> Option<MediaPorts> {
        match std::mem::replace(&mut self.media.caller, Caller::Gone) {
            Caller::Ports(p) => Some(p),
            Caller::Endpoint { endpoint, .. } | Caller::Music(endpoint) => endpoint.release().await,
            Caller::Ivr => {
                let endpoint = self.ivr.as_mut().and_then(|s| s.take_endpoint())?;
                endpoint.release().await
            }
            Caller::Relay | Caller::Gone => None,
        }
    }

    fn lost(&mut self, why: &str) {
        self.follow_ups.push_back(Input::MediaLost(why.to_string()));
    }

    async fn finish_recording(&mut self, tape: Option<Tape>) {
        let Some(tape) = tape else { return };
        let path = tape.path().to_path_buf();
        let outcome = match tape.finish().await {
            Ok(done) => RecordingOutcome::Written {
                ms: done.duration.as_millis() as i64,
            },
            Err(e) => {
                warn!(error = %e, "the recording could not be finished");
                RecordingOutcome::Failed {
                    made: path.exists(),
                }
            }
        };
        self.follow_ups.push_back(Input::RecordingFinished(outcome));
    }

    async fn media(&mut self, cmd: MediaCmd) {
        match cmd {
            MediaCmd::AnswerHere { leg, watch } => {
                let Caller::Ports(ports) = std::mem::replace(&mut self.media.caller, Caller::Gone)
                else {
                    return self.lost("the caller's ports are in use");
                };
                let (endpoint, events) = Self::caller_endpoint(ports, leg);
                endpoint.watch_media(watch);
                self.media.caller = Caller::Endpoint {
                    endpoint,
                    events: Some(events),
                    codec: leg.codec,
                };
            }
            MediaCmd::Bridge(spec) => self.bridge(spec).await,
            MediaCmd::SetRemote { side, addr } => {
                if let Some(relay) = &self.media.relay {
                    relay.set_remote(side, addr, None);
                }
            }
            MediaCmd::Watch { side, on } => {
                if let Some(relay) = &self.media.relay {
                    relay.watch(side, on);
                }
            }
            MediaCmd::Converse(c) => self.converse(c),
            MediaCmd::Record { path, rate } => {
                if let Some(relay) = &self.media.relay {
                    relay.record(self.shared.recordings.call(path, rate));
                }
            }
            MediaCmd::PauseRecording(paused) => {
                if let Some(relay) = &self.media.relay {
                    relay.pause_recording(paused);
                } else if let Some(tape) = &mut self.media.parked_tape {
                    if paused {
                        tape.pause();
                    } else {
                        tape.resume();
                    }
                }
            }
            MediaCmd::StopRecording => {
                let tape = match &self.media.relay {
                    Some(relay) => relay.take_recording().await,
                    None => self.media.parked_tape.take(),
                };
                self.finish_recording(tape).await;
            }
            MediaCmd::Park { leg } => self.park(leg).await,
            MediaCmd::ToIvr { leg, watch } => self.give_to_flow(leg, watch).await,
            MediaCmd::KeepForCallback => {
                let endpoint = self.ivr.as_mut().and_then(|s| s.take_endpoint());
                let ports = match endpoint {
                    Some(e) => e.release().await,
                    None => None,
                };
                match ports {
                    Some(p) => self.media.caller = Caller::Ports(p),
                    None => self.lost("the caller's ports could not be kept for the callback"),
                }
            }
            MediaCmd::CalleeSrtp(session) => {
                let session = session.map(|s| *s);
                if let Some(relay) = &self.media.relay {
                    relay.set_srtp(Side::B, session);
                } else if let Some(ports) = &mut self.media.callee_ports {
                    ports.set_srtp(session);
                }
            }
            MediaCmd::Rekey { side, key } => {
                if let Some(relay) = &self.media.relay {
                    relay.rekey(side, *key);
                }
            }
            MediaCmd::CallerPlain => {
                if let Caller::Ports(p) = &mut self.media.caller {
                    p.set_srtp(None);
                }
            }
            MediaCmd::SupervisorMode(mode) => {
                if let Some(relay) = &self.media.relay {
                    relay.supervisor_mode(mode);
                }
            }
            MediaCmd::Play { prompt } => self.play(&prompt),
            MediaCmd::JoinAgent { agent, mode, leg } => self.join_agent(&agent, mode, leg).await,
            MediaCmd::SupervisedMode(mode) => {
                if let Some(relay) = &self.media.supervised {
                    relay.supervisor_mode(mode);
                }
            }
            MediaCmd::Unsupervise => {
                if let Some(relay) = self.media.supervised.take() {
                    relay.unsupervise();
                }
                self.media.detached = None;
            }
            MediaCmd::Finish => self.finish().await,
        }
    }

    /// Relays between the caller's and the callee's ports, each side aimed at the
    /// address its SDP named.
    async fn bridge(&mut self, spec: BridgeSpec) {
        let a_ports = self.take_caller_ports().await;
        let (Some(a_ports), Some(b_ports)) = (a_ports, self.media.callee_ports.take()) else {
            return self.lost("the caller's media ports are gone");
        };
        let (relay, events) =
            spawn_relay_with_events(a_ports, b_ports, self.shared.config.media_timeout);
        // Nobody talks before the answer: the media timeout waits for the conversation.
        relay.watch(Side::A, false);
        relay.watch(Side::B, false);
        if let Some(rtp) = spec.a_remote {
            relay.set_remote(Side::A, rtp, None);
        }
        if let Some(rtp) = spec.b_remote {
            relay.set_remote(Side::B, rtp, None);
        }
        self.media.relay = Some(relay);
        self.media.relay_events = Some(events);
        self.media.caller = Caller::Relay;
        if let Some(c) = spec.conversation {
            self.converse(c);
        }
    }

    /// Tells the bridge the legs' formats, hands it the parked recording, and watches
    /// both legs for the media timeout.
    fn converse(&mut self, c: Conversation) {
        let Some(relay) = &self.media.relay else {
            return;
        };
        if let Some((a, b)) = c.formats {
            relay.set_formats(a, b);
        }
        relay.forward_dtmf(c.forward_dtmf);
        relay.watch(Side::A, true);
        relay.watch(Side::B, true);
        // A recording that failed stays parked until the call ends and closes it.
        if c.take_parked_recording {
            if let Some(tape) = self.media.parked_tape.take() {
                relay.record(tape);
                relay.pause_recording(c.recording_paused);
            }
        }
    }

    /// Takes the caller's ports back from the bridge and plays music on hold into them;
    /// the callee's ports and the recording wait.
    async fn park(&mut self, leg: CallerLeg) {
        let released = match self.media.relay.take() {
            Some(relay) => relay.release().await,
            None => None,
        };
        let Some((a_ports, b_ports, stats, tape)) = released else {
            return self.lost("the bridge could not give the caller's ports back");
        };
        self.follow_ups.push_back(Input::MediaStats(stats));
        self.media.parked_tape = tape;
        self.media.callee_ports = Some(b_ports);
        let (music, _events) = Self::caller_endpoint(a_ports, leg);
        let rate = SampleRate::from_hz(leg.codec.sample_rate()).unwrap_or(SampleRate::Narrowband);
        let file = self.shared.config.ivr_prompts.join("moh/default.wav");
        match self.shared.prompts.get(&file, rate) {
            Ok(audio) => music.play(
                0,
                crate::media::prompt::Playlist::new()
                    .then(audio)
                    .looping(true),
            ),
            Err(e) => warn!(file = %file.display(), error = %e, "no music on hold"),
        }
        self.media.caller = Caller::Music(music);
    }

    /// Gives the flow a new endpoint on the caller's ports, taken from the bridge (its
    /// conversation's recording is over) or from the music.
    async fn give_to_flow(&mut self, leg: CallerLeg, watch: Option<Duration>) {
        let a_ports = match std::mem::replace(&mut self.media.caller, Caller::Gone) {
            Caller::Music(music) => music.release().await,
            Caller::Relay => {
                let released = match self.media.relay.take() {
                    Some(relay) => relay.release().await,
                    None => None,
                };
                match released {
                    Some((a_ports, b_ports, stats, tape)) => {
                        self.follow_ups.push_back(Input::MediaStats(stats));
                        self.finish_recording(tape).await;
                        self.media.callee_ports = Some(b_ports);
                        Some(a_ports)
                    }
                    None => None,
                }
            }
            _ => None,
        };
        let (Some(a_ports), Some(session)) = (a_ports, self.ivr.as_mut()) else {
            return self.lost("the caller's media could not be given back to the flow");
        };
        let (endpoint, events) = Self::caller_endpoint(a_ports, leg);
        endpoint.watch_media(watch);
        session.set_endpoint(endpoint, events);
        self.media.caller = Caller::Ivr;
    }

    /// Plays a prompt on our endpoint (its end comes back as `AnnouncementDone`).
    fn play(&mut self, prompt: &str) {
        let Caller::Endpoint {
            endpoint, codec, ..
        } = &self.media.caller
        else {
            self.follow_ups.push_back(Input::AnnouncementDone);
            return;
        };
        let rate = SampleRate::from_hz(codec.sample_rate()).unwrap_or(SampleRate::Narrowband);
        let path = self.shared.config.ivr_prompts.join(prompt);
        let playlist = match self.shared.prompts.get(&path, rate) {
            Ok(audio) => crate::media::prompt::Playlist::new().then(audio),
            Err(e) => {
                warn!(prompt = %path.display(), error = %e, "announcement not played");
                crate::media::prompt::Playlist::new()
            }
        };
        endpoint.play(1, playlist);
    }

    /// A supervisor's call: the caller's ports join `agent`'s bridge as a supervisor's
    /// leg; if the agent is on no call, they come back for an announcement.
    async fn join_agent(&mut self, agent: &str, mode: crate::media::mixer::Mode, leg: CallerLeg) {
        let Some(ports) = self.take_caller_ports().await else {
            return self.lost("the supervisor's media ports are gone");
        };
        let (attached, detached) = oneshot::channel();
        let supervisor = SupervisorLeg {
            ports,
            remote: leg.remote,
            format: LegFormat {
                codec: leg.codec,
                event_pt: leg.telephone_event,
            },
            mode,
            attached,
        };
        match self.sw.supervise(agent, supervisor).await {
            Ok(relay) => {
                self.media.supervised = Some(relay);
                self.media.detached = Some(detached);
                self.follow_ups.push_back(Input::SupervisorJoined);
            }
            Err(Some(back)) => {
                let (endpoint, events) = Self::caller_endpoint(back.ports, leg);
                self.media.caller = Caller::Endpoint {
                    endpoint,
                    events: Some(events),
                    codec: leg.codec,
                };
                self.follow_ups.push_back(Input::SupervisorNoCall);
            }
            Err(None) => self.lost("the switch is gone"),
        }
    }

    /// Stops the bridge and closes the recordings; the record follows.
    async fn finish(&mut self) {
        let stats = match self.media.relay.take() {
            Some(relay) => {
                let stopped = relay.finish().await;
                self.finish_recording(stopped.recorder).await;
                stopped.stats
            }
            None => Default::default(),
        };
        let parked = self.media.parked_tape.take();
        self.finish_recording(parked).await;
        if let Some(relay) = self.media.supervised.take() {
            relay.unsupervise();
        }
        self.media.caller = Caller::Gone;
        self.media.callee_ports = None;
        let ivr = self.ivr.as_ref().map(|s| {
            let (csat, resolved) = s.survey();
            IvrSummary {
                trace: s.trace_text(),
                csat,
                resolved,
            }
        });
        self.follow_ups.push_back(Input::Finished { stats, ivr });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every call's event channel allocates a block of 32 events when it is made: an
    /// event's size is paid 32 times per call, so the big ones stay boxed.
    #[test]
    fn call_events_stay_small() {
        let size = std::mem::size_of::<CallEvent>();
        assert!(
            size <= 80,
            "CallEvent is {size} bytes: box the variant that grew"
        );
    }

    /// The core's commands wait in a queue that keeps room for its longest burst until
    /// it empties: a command's size is paid per slot, so the big payloads (an SRTP
    /// session's cipher state is 4.9 KB) stay boxed.
    #[test]
    fn commands_and_inputs_stay_small() {
        let (command, input) = (std::mem::size_of::<Command>(), std::mem::size_of::<Input>());
        assert!(
            command <= 400,
            "Command is {command} bytes: box the variant that grew"
        );
        assert!(
            input <= 160,
            "Input is {input} bytes: box the variant that grew"
        );
    }
}
