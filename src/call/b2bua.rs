//! One call, owned by one task: the caller's dialog (leg A), the callee forks and then
//! the callee's dialog (leg B), the RTP relay between them, and the call record.
//!
//! Every contact of the target user is rung (each fork is a call of its own, with its own
//! Call-ID); the first 2xx wins and the others are cancelled. Once answered, in-dialog
//! requests from one leg are re-originated on the other (re-INVITE/UPDATE for hold and
//! resume, INFO), with SDP rewritten so media keeps flowing through our ports.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, SipMessage};
use tokio::sync::mpsc;
use tracing::{debug, info, info_span, warn, Instrument};

use super::acd::AcdMsg;
use super::ivr::{IvrSession, IvrStep};
use super::{
    as_msg, host_port, sleep_until_opt, CallEvent, CallKey, CallSetup, Route, Shared, SwitchHandle,
};
use crate::acd::{CallEnd, CallId};
use crate::config::RecordPolicy;
use crate::events::NewEvent;
use crate::ivr::interpreter::QueueResult;
use crate::ivr::interpreter::TransferTarget;
use crate::ivr::FlowSet;
use crate::media::codec::Codec;
use crate::media::endpoint::{self, EndpointEvent, EndpointHandle, LegMedia};
use crate::media::mixer::Mode;
use crate::media::mixer::SampleRate;
use crate::media::ports::MediaPorts;
use crate::media::recorder::Tape;
use crate::media::relay::{spawn_relay_with_events, RelayEvent, RelayHandle, Side, SupervisorLeg};
use crate::media::sdp::{self, LegSdp, SdpInfo};
use crate::media::taps::LegFormat;
use crate::sip::dialog::Dialog;
use crate::sip::message::{self, host_str};
use crate::sip::registrar::Binding;
use crate::sip::transaction::{Peer, TxId};
use crate::store::{now_ms, CallRecord, Disposition, HangupBy};

mod callback;
mod encryption;
mod recording;
mod session;
mod supervise;

pub fn spawn(setup: CallSetup) {
    let span =
        info_span!("call", id = %setup.record.call_uuid, sip_call_id = %setup.record.a_call_id);
    tokio::spawn(run(setup).instrument(span));
}

struct Fork {
    tx: TxId,
    invite: Request,
    peer: Peer,
    final_code: Option<u16>,
    /// The ACD agent this phone belongs to, for queue offers.
    agent: Option<String>,
    /// The SRTP keys offered to it.
    crypto: Option<sdp::LegCrypto>,
}

/// A call in an ACD queue, as this call task sees it.
struct Queued {
    acd: super::acd::AcdHandle,
    from_acd: mpsc::UnboundedReceiver<AcdMsg>,
    /// The agents whose phones ring for this call now (several with ring-all).
    offered: Vec<String>,
    /// An agent answered: the legs are bridged.
    connected: bool,
    /// The caller hung up to be called back; the call keeps its place.
    callback: bool,
}

/// A request from one leg waiting for the other leg's answer.
struct Relayed {
    from: Side,
    server_tx: TxId,
    method: Method,
    req: Request,
    /// CSeq of the request sent on the other leg (its ACK reuses it for an INVITE).
    cseq: u32,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Switchboard answered the caller; the IVR flow runs.
    Ivr,
    /// The callee's phones ring (the caller is waiting, or already answered by the IVR).
    Ringing,
    /// The two legs are bridged.
    Answered,
}

struct Call {
    key: CallKey,
    shared: Arc<Shared>,
    sw: SwitchHandle,
    rec: CallRecord,
    a_tx: TxId,
    a_invite: Request,
    a_peer: Peer,
    a_tag: String,
    a_contact: String,
    a_offer: SdpInfo,
    a_offer_sd: rtc_sdp::SessionDescription,
    a_dialog: Option<Dialog>,
    a_sdp: LegSdp,
    b_sdp: LegSdp,
    a_port: u16,
    b_port: u16,
    /// The bridge. An IVR call has none until the callee answers: until then the
    /// IVR's endpoint owns the caller's ports and `b_ports` waits.
    relay: Option<RelayHandle>,
    b_ports: Option<MediaPorts>,
    /// The IVR answered the caller: A's dialog exists before any fork answers.
    a_answered: bool,
    forks: Vec<Fork>,
    b_dialog: Option<Dialog>,
    b_ack: Option<(Request, Peer)>,
    /// Where the callee's SDP answer says to send its media.
    b_remote: Option<std::net::SocketAddr>,
    /// The codec the caller was answered with when Switchboard answered it itself.
    a_codec: Option<Codec>,
    /// While the callee holds the caller: the endpoint playing music to the caller, and
    /// the callee's ports waiting for the resume.
    held: Option<(EndpointHandle, MediaPorts)>,
    /// The music endpoint of a transfer in progress, handed over at the bridge.
    ivr_endpoint_parked: Option<EndpointHandle>,
    phase: Phase,
    relayed: HashMap<TxId, Relayed>,
    /// When the ringing phones give up (no answer).
    ring_deadline: Option<tokio::time::Instant>,
    /// The agent whose phones `start_fork` is ringing now (queue offers).
    ringing_agent: Option<String>,
    /// The IVR session while the caller is in a flow (and its endpoint until the bridge).
    ivr: Option<Box<IvrSession>>,
    /// While the caller is in an ACD queue (waiting, ringing an agent, or connected).
    queue: Option<Queued>,
    /// ACKs sent for 2xx answers to re-originated re-INVITEs, by transaction, so a
    /// retransmitted 2xx is acknowledged again.
    reinvite_acks: HashMap<TxId, (Request, Peer)>,
    /// What the bridge's relay reports (keys, media timeout).
    relay_events: Option<mpsc::UnboundedReceiver<RelayEvent>>,
    /// What the callee's answer negotiated.
    b_format: Option<LegFormat>,
    /// The recording while no relay carries it (the caller on hold music).
    recorder: Option<Tape>,
    /// The recording policy of the conversation, settled when it is bridged.
    record_policy: Option<RecordPolicy>,
    /// The flow step's `record:`, which outranks the queue's and the DID's.
    flow_record: Option<RecordPolicy>,
    recording_paused: bool,
    /// Stopped by the control plane: the file is finished, the rest is not recorded.
    recording_stopped: bool,
    /// An agent (or the API) sent the caller into a queue after a conversation.
    transferred_to_queue: bool,
    /// The agent's last keys, to spot the recording keys.
    agent_keys: String,
    /// The extension talking on leg B, as the switch knows it (for supervisors).
    talking: Option<String>,
    /// A callback: when to hang up on the caller (after the confirmation), the caller's
    /// ports kept for the call back, and the INVITE that calls it back.
    callback_bye_at: Option<tokio::time::Instant>,
    callback_ports: Option<MediaPorts>,
    callback_dial: Option<Box<Fork>>,
    /// RFC 4028 on the caller's leg: what was agreed, when to act next, and our
    /// refreshing UPDATE in flight.
    session_timer: Option<crate::sip::session_timer::SessionTimer>,
    session_due: Option<(tokio::time::Instant, crate::sip::session_timer::Due)>,
    refresh_tx: Option<TxId>,
    /// The callee leg's SRTP as last handed to its ports (None: never yet).
    b_srtp_applied: Option<Option<sdp::LegCrypto>>,
}

/// How a call ends, for its record.
struct End {
    by: HangupBy,
    disposition: Disposition,
    code: u16,
    reason: Option<String>,
}

/// What `prepare` hands the call task: the call (boxed, so the task's future holds a
/// pointer rather than the call's few kilobytes beside its own states), the switch's
/// events for it, where it goes first and the two legs' ports.
type Prepared = (
    Box<Call>,
    mpsc::UnboundedReceiver<CallEvent>,
    Route,
    MediaPorts,
    MediaPorts,
);

async fn run(s: CallSetup) {
    let (mut call, mut events, route, a_ports, b_ports) = match prepare(s) {
        Ok(prepared) => prepared,
        Err(s) => return finish_early(*s),
    };
    match route {
        Route::Ring(targets) => {
            call.start_bridge(a_ports, b_ports);
            Box::pin(call.ring(&targets)).await;
        }
        Route::Supervise { agent, mode } => {
            drop(b_ports);
            let end = Box::pin(call.supervise(a_ports, &agent, mode, &mut events)).await;
            return Box::pin(call.finish(end)).await;
        }
        Route::Flow { flows, name } => {
            call.b_ports = Some(b_ports);
            if let Err(end) = Box::pin(call.answer_with_ivr(a_ports, flows, &name)).await {
                return Box::pin(call.finish(end)).await;
            }
        }
        Route::Feature(feature) => {
            drop(b_ports);
            let accepted = match feature.verdict {
                Some(rx) => matches!(rx.await, Ok(Ok(()))),
                None => false,
            };
            let prompt = if accepted {
                feature.done
            } else {
                feature.refused
            };
            if !accepted {
                call.rec.reason = Some("the ACD refused the request".into());
            }
            let end = Box::pin(call.confirm_feature(a_ports, &prompt, &mut events)).await;
            return Box::pin(call.finish(end)).await;
        }
    }
    // Each handler's future is boxed for the moment it runs: held inline, the largest
    // of them would be part of every waiting call's task (17 KiB of it, measured).
    let end = loop {
        let input = tokio::select! {
            ev = events.recv() => Input::Sip(ev),
            _ = sleep_until_opt(call.ring_deadline) => Input::RingTimeout,
            ev = next_ivr_input(&mut call.ivr) => Input::Ivr(ev),
            msg = next_acd_msg(&mut call.queue) => Input::Acd(msg),
            ev = next_relay_event(&mut call.relay_events) => Input::Relay(ev),
            _ = sleep_until_opt(call.callback_bye_at) => Input::CallbackBye,
            _ = sleep_until_opt(call.session_due.map(|(at, _)| at)) => Input::SessionTimer,
        };
        let outcome = match input {
            Input::Sip(None) => Some(End {
                by: HangupBy::Switchboard,
                disposition: Disposition::Failed,
                code: 500,
                reason: Some("switch stopped".into()),
            }),
            Input::Sip(Some(ev)) => Box::pin(call.on_event(ev)).await,
            Input::RingTimeout => {
                call.ring_deadline = None;
                if call.phase == Phase::Ringing {
                    Some(Box::pin(call.give_up(480, Disposition::NoAnswer, "no answer")).await)
                } else {
                    None
                }
            }
            Input::Ivr(ev) => Box::pin(call.on_ivr_input(ev)).await,
            Input::Acd(msg) => Box::pin(call.on_acd(msg)).await,
            Input::Relay(ev) => Box::pin(call.on_relay_event(ev)).await,
            Input::CallbackBye => Box::pin(call.leave_for_callback()).await,
            Input::SessionTimer => Box::pin(call.on_session_timer()).await,
        };
        if let Some(end) = outcome {
            break end;
        }
    };
    Box::pin(call.finish(end)).await;
}

/// The call's first steps, none of which waits: the caller's offer read, ports leased,
/// the call made and announced. A call refused here comes back as its setup, with the
/// answer already sent.
fn prepare(mut s: CallSetup) -> Result<Prepared, Box<CallSetup>> {
    let respond_early = |code: u16, why: &str, s: &mut CallSetup, d: Disposition| {
        let tag = message::new_tag();
        let resp = message::response_to(&s.invite, code, Some(&tag));
        s.switch.respond(s.invite_tx, resp);
        s.record.final_code = code;
        s.record.disposition = Some(d);
        s.record.hangup_by = Some(HangupBy::Switchboard);
        s.record.reason = Some(why.to_string());
    };
    // The caller's offer decides what we offer the callee.
    let offer = if s.invite.body.is_empty() {
        Err("the INVITE has no SDP offer (late offer is not supported)".to_string())
    } else {
        sdp::parse(&s.invite.body).map_err(|e| e.to_string())
    };
    // The caller's keys, as its media_encryption allows.
    let offer = offer.and_then(|(sd, info)| {
        let policy = Call::caller_policy(&s.shared, &s.record);
        let crypto = encryption::caller_crypto(policy, &info)?;
        Ok((sd, info, crypto))
    });
    let (a_offer_sd, a_offer, a_crypto) = match offer {
        Ok(o) => o,
        Err(why) => {
            warn!(%why, "refusing the call with 488");
            respond_early(488, &why, &mut s, Disposition::Failed);
            return Err(Box::new(s));
        }
    };
    let ports = (s.shared.ports.allocate(), s.shared.ports.allocate());
    let (mut a_ports, b_ports) = match ports {
        (Ok(a), Ok(b)) => (a, b),
        _ => {
            warn!("RTP port range exhausted");
            respond_early(503, "no RTP ports left", &mut s, Disposition::Failed);
            return Err(Box::new(s));
        }
    };
    let (a_port, b_port) = (a_ports.port(), b_ports.port());
    // The setup is taken apart rather than copied: the call owns the INVITE and the
    // record from here on (a second copy would live as long as the call).
    let CallSetup {
        key,
        shared,
        switch,
        events,
        invite_tx,
        invite,
        from,
        route,
        record,
    } = s;
    let a_contact = shared.contact(from.transport);
    let mut call = Box::new(Call {
        key,
        shared,
        sw: switch,
        rec: record,
        a_tx: invite_tx,
        a_invite: invite,
        a_peer: from,
        a_tag: message::new_tag(),
        a_contact,
        a_offer,
        a_offer_sd,
        a_dialog: None,
        a_sdp: LegSdp::with_crypto(a_crypto),
        b_sdp: LegSdp::new(),
        a_port,
        b_port,
        relay: None,
        b_ports: None,
        a_answered: false,
        forks: Vec::new(),
        b_dialog: None,
        b_ack: None,
        b_remote: None,
        a_codec: None,
        held: None,
        ivr_endpoint_parked: None,
        phase: Phase::Ringing,
        relayed: HashMap::new(),
        reinvite_acks: HashMap::new(),
        ring_deadline: None,
        ringing_agent: None,
        ivr: None,
        queue: None,
        relay_events: None,
        b_format: None,
        recorder: None,
        record_policy: None,
        flow_record: None,
        recording_paused: false,
        recording_stopped: false,
        transferred_to_queue: false,
        agent_keys: String::new(),
        talking: None,
        callback_bye_at: None,
        callback_ports: None,
        callback_dial: None,
        session_timer: None,
        session_due: None,
        refresh_tx: None,
        b_srtp_applied: None,
    });
    if let Some(c) = &call.a_sdp.crypto {
        info!(suite = ?c.suite(), "the caller's media is SRTP");
        a_ports.set_srtp(c.session());
    }
    // What the caller asked for; the switch already refused what we cannot meet.
    call.session_timer =
        crate::sip::session_timer::negotiate(&call.a_invite, call.shared.config.session_min_se)
            .ok()
            .flatten();
    call.publish(NewEvent::new("call.arrived").data(serde_json::json!({
        "caller": call.rec.from_user,
        "dialed": call.rec.dialed,
        "sip_call_id": call.rec.a_call_id,
        "from_uri": call.rec.from_uri,
        "to_uri": call.rec.to_uri,
        "did": call.rec.did,
        "source_kind": call.rec.source_kind,
        "trunk": call.rec.trunk,
        "target": call.rec.target,
        "route": match &route {
            Route::Ring(_) => "ring",
            Route::Flow { .. } => "flow",
            Route::Feature(_) => "feature",
            Route::Supervise { .. } => "supervise",
        },
    })));
    Ok((call, events, route, a_ports, b_ports))
}

/// What woke the call task up. (One lives on the stack per wake-up; boxing the big
/// variant would buy nothing.)
#[allow(clippy::large_enum_variant)]
enum Input {
    Sip(Option<CallEvent>),
    RingTimeout,
    Ivr(crate::ivr::Event),
    Acd(AcdMsg),
    Relay(RelayEvent),
    CallbackBye,
    SessionTimer,
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

async fn next_acd_msg(queue: &mut Option<Queued>) -> AcdMsg {
    match queue {
        Some(q) => match q.from_acd.recv().await {
            Some(msg) => msg,
            // The ACD is gone: the caller must not wait on music for ever.
            None => AcdMsg::Overflow {
                reason: "the ACD is not available".into(),
            },
        },
        None => std::future::pending().await,
    }
}

async fn next_ivr_input(ivr: &mut Option<Box<IvrSession>>) -> crate::ivr::Event {
    match ivr {
        Some(session) if session.is_running() => session.next_input().await,
        _ => std::future::pending().await,
    }
}

/// Record for a call that ended before it had media.
fn finish_early(mut s: CallSetup) {
    s.record.ended_ms = now_ms();
    s.shared.records.submit(s.record);
    s.switch.ended(s.key);
}

impl Call {
    /// A control-plane request: what was done (or why not), and the call's end if it
    /// ended the call.
    async fn on_api(
        &mut self,
        cmd: super::ApiCommand,
        by: &str,
    ) -> (Result<String, String>, Option<End>) {
        use super::{ApiCommand, RecordingAction};
        let talking = self.phase == Phase::Answered && self.b_dialog.is_some();
        match cmd {
            ApiCommand::HangUp => {
                let why = format!("hung up by {by}");
                if self.phase == Phase::Ringing && !self.a_answered {
                    let end = self.give_up(480, Disposition::Abandoned, &why).await;
                    return (Ok("hung up".into()), Some(end));
                }
                self.hangup_both(None).await;
                let end = End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Answered,
                    code: 200,
                    reason: Some(why),
                };
                (Ok("hung up".into()), Some(end))
            }
            ApiCommand::Transfer { extension } => {
                if !talking {
                    return (
                        Err("only a call connected to an agent can be transferred".into()),
                        None,
                    );
                }
                if self.shared.config.user(&extension).is_none() {
                    return (
                        Err(format!("{extension} is not a configured extension")),
                        None,
                    );
                }
                let phones = self.sw.lookup(&extension).await;
                if phones.is_empty() {
                    return (
                        Err(format!("extension {extension} has no registered phone")),
                        None,
                    );
                }
                let end = self.transfer_to(extension.clone(), phones).await;
                (Ok(format!("transferred to {extension}")), end)
            }
            ApiCommand::TransferToQueue { queue } => {
                if !talking {
                    return (
                        Err("only a call connected to an agent can be transferred".into()),
                        None,
                    );
                }
                let Some(acd) = self.shared.acd.clone() else {
                    return (Err("no queues are configured".into()), None);
                };
                if !self.shared.config.queues.iter().any(|q| q.name == queue) {
                    return (Err(format!("queue \"{queue}\" is not configured")), None);
                }
                let end = self.transfer_to_queue(queue.clone(), acd).await;
                (Ok(format!("transferred to queue {queue}")), end)
            }
            // Network hold: the caller hears music from us; the agent's phone is not
            // asked (its audio is simply not passed on meanwhile).
            ApiCommand::Hold(on) if talking => match (on, self.held.is_some()) {
                (true, false) => {
                    if self.park_caller_on_music().await.is_none() {
                        return (Err("the caller could not be put on hold".into()), None);
                    }
                    info!(%by, "the caller is on hold");
                    self.publish(
                        NewEvent::new("call.held")
                            .agent(self.rec.target.as_deref())
                            .data(serde_json::json!({ "by": by })),
                    );
                    (Ok("held".into()), None)
                }
                (false, true) => {
                    let Some((endpoint, b_ports)) = self.held.take() else {
                        return (Err("the call is not on hold".into()), None);
                    };
                    let Some(a_ports) = endpoint.release().await else {
                        return (
                            Err("the caller's media could not be taken back".into()),
                            None,
                        );
                    };
                    self.start_bridge(a_ports, b_ports);
                    info!(%by, "the caller is off hold");
                    self.publish(
                        NewEvent::new("call.resumed")
                            .agent(self.rec.target.as_deref())
                            .data(serde_json::json!({ "by": by })),
                    );
                    (Ok("resumed".into()), None)
                }
                (true, true) => (Ok("held".into()), None),
                (false, false) => (Ok("resumed".into()), None),
            },
            ApiCommand::Hold(_) => (
                Err("only a call connected to an agent can be held".into()),
                None,
            ),
            ApiCommand::SupervisorMode(mode) => match &self.relay {
                Some(relay) if talking => {
                    relay.supervisor_mode(mode);
                    let name = super::supervisor_call::mode_name(mode);
                    self.publish(
                        NewEvent::new("call.supervisor")
                            .agent(self.rec.target.as_deref())
                            .data(serde_json::json!({ "mode": name, "by": by })),
                    );
                    (Ok(name.to_string()), None)
                }
                _ => (Err("the call is not in a conversation".into()), None),
            },
            ApiCommand::Recording(action) => {
                let Some(policy) = self.record_policy.filter(|_| talking) else {
                    return (
                        Err(
                            "the call is not in a conversation, so there is nothing to record"
                                .into(),
                        ),
                        None,
                    );
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
                    _ if self.rec.recording.is_none() || self.recording_stopped => {
                        Err("the call is not being recorded".into())
                    }
                    RecordingAction::Pause | RecordingAction::Resume => {
                        self.set_recording_paused(action == RecordingAction::Pause);
                        Ok(if self.recording_paused {
                            "paused"
                        } else {
                            "recording"
                        }
                        .to_string())
                    }
                    RecordingAction::Stop => {
                        let recorder = match &self.relay {
                            Some(relay) => relay.take_recording().await,
                            None => self.recorder.take(),
                        };
                        self.finish_recording(recorder).await;
                        self.recording_stopped = true;
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
                (answer, None)
            }
        }
    }

    /// Hands an event about this call to the event log.
    fn publish(&self, e: NewEvent) {
        self.shared.events.publish(e.call(&self.rec.call_uuid));
    }

    fn advertise(&self) -> std::net::IpAddr {
        self.shared.config.advertise
    }

    /// Rings every contact and arms the no-answer timer.
    async fn ring(&mut self, targets: &[Binding]) {
        info!(
            target_ext = self.rec.target.as_deref().unwrap_or(""),
            contacts = targets.len(),
            "ringing"
        );
        self.phase = Phase::Ringing;
        // A new ring (a transfer after an earlier one) starts with no old phones.
        self.forks.retain(|f| f.final_code.is_none());
        // Room for exactly these phones: a first push would reserve four forks, most
        // calls ring one.
        self.forks.reserve_exact(targets.len());
        for b in targets {
            self.start_fork(b).await;
        }
        let timeout = Duration::from_secs(self.shared.config.ring_timeout_secs);
        self.ring_deadline = Some(tokio::time::Instant::now() + timeout);
    }

    /// Answers the caller with our own media endpoint (IVR, feature codes): one voice
    /// codec, the first of the caller's offer that we speak (PCMU, PCMA or G.722; the
    /// caller's order decides, not ours), and telephone-event if offered, so a callee
    /// reached later is offered exactly what the caller speaks.
    fn answer_here(
        &mut self,
        a_ports: MediaPorts,
    ) -> Result<
        (
            EndpointHandle,
            mpsc::UnboundedReceiver<EndpointEvent>,
            Codec,
        ),
        End,
    > {
        let codec = self
            .a_offer
            .codecs
            .iter()
            .find_map(|pt| Codec::from_payload_type(*pt));
        let Some(codec) = codec else {
            self.respond_a(488, None);
            return Err(End {
                by: HangupBy::Switchboard,
                disposition: Disposition::Failed,
                code: 488,
                reason: Some("the caller offers no codec the IVR can play".into()),
            });
        };
        let te = self.a_offer.telephone_event;
        let keep = SdpInfo {
            codecs: std::iter::once(codec.payload_type()).chain(te).collect(),
            ..self.a_offer.clone()
        };
        let narrowed = sdp::restrict_answer(&self.a_offer_sd, &keep);
        let (narrowed, info) = narrowed.map_err(|e| End {
            by: HangupBy::Switchboard,
            disposition: Disposition::Failed,
            code: 488,
            reason: Some(e.to_string()),
        })?;
        self.a_offer_sd = narrowed;
        self.a_offer = info;
        let offer = self.a_offer_sd.clone();
        let body = self.render_sdp(Side::A, &offer);
        self.answer_caller(body);
        self.a_answered = true;
        self.phase = Phase::Ivr;

        let (endpoint, media) = self.caller_endpoint(a_ports, codec);
        endpoint.watch_media(self.shared.config.media_timeout);
        self.a_codec = Some(codec);
        Ok((endpoint, media, codec))
    }

    /// Our own media endpoint on the caller's ports, speaking `codec` to where the
    /// caller's SDP says (IVR, music on hold, announcements).
    fn caller_endpoint(
        &self,
        ports: MediaPorts,
        codec: Codec,
    ) -> (EndpointHandle, mpsc::UnboundedReceiver<EndpointEvent>) {
        let (events, media) = mpsc::unbounded_channel();
        let leg = LegMedia {
            remote: self.a_offer.rtp,
            codec,
            telephone_event: self.a_offer.telephone_event,
        };
        (endpoint::spawn(ports, leg, events), media)
    }

    async fn answer_with_ivr(
        &mut self,
        a_ports: MediaPorts,
        flows: Arc<FlowSet>,
        name: &str,
    ) -> Result<(), End> {
        let (endpoint, media, codec) = self.answer_here(a_ports)?;
        self.rec.flow = Some(name.to_string());
        let rate = SampleRate::from_hz(codec.sample_rate()).unwrap_or(SampleRate::Narrowband);
        let session = IvrSession::start(
            flows,
            name,
            endpoint,
            media,
            &self.shared.config.ivr_prompts,
            self.shared.prompts.clone(),
            rate,
            self.shared.http.clone(),
            self.shared.config.clock_offset,
            self.shared.acd.is_some(),
            &self.shared.config.data_dir,
            self.shared.recordings.clone(),
            &self.rec.call_uuid,
        );
        let mut session = match session {
            Ok(s) => s,
            Err(why) => {
                self.hangup_both(Some(Side::A)).await;
                return Err(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Failed,
                    code: 200,
                    reason: Some(why),
                });
            }
        };
        info!(flow = name, "answered by the IVR");
        let steps = session.feed(crate::ivr::Event::Started {
            caller: self.rec.from_user.clone(),
            dialed: self.rec.dialed.clone(),
        });
        self.ivr = Some(Box::new(session));
        match self.on_ivr_steps(steps).await {
            Some(end) => Err(end),
            None => Ok(()),
        }
    }

    /// What the ACD decided for this queued call.
    async fn on_acd(&mut self, msg: AcdMsg) -> Option<End> {
        let connected = self.queue.as_ref().is_some_and(|q| q.connected);
        match msg {
            // A bridged caller is not offered again (a late message from the router).
            AcdMsg::Offer { .. } | AcdMsg::CancelOffer { .. } | AcdMsg::Announce { .. }
                if connected =>
            {
                None
            }
            AcdMsg::Offer { agent } => {
                let phones = self.sw.lookup(&agent).await;
                let q = self.queue.as_mut()?;
                if phones.is_empty() {
                    // Nobody registered for that agent: next agent, please.
                    q.acd.declined(CallId(self.key), &agent);
                    return None;
                }
                q.offered.push(agent.clone());
                self.rec.target = Some(agent.clone());
                // Phones of earlier, finished offers are forgotten; ringing ones stay
                // (ring-all offers several agents at once).
                self.forks.retain(|f| f.final_code.is_none());
                self.phase = Phase::Ringing;
                self.ringing_agent = Some(agent);
                for b in &phones {
                    self.start_fork(b).await;
                }
                self.ringing_agent = None;
                None
            }
            AcdMsg::CancelOffer { agent } => {
                if let Some(q) = &mut self.queue {
                    q.offered.retain(|a| a != &agent);
                }
                self.cancel_agent_forks(Some(&agent));
                if self.queue.as_ref().is_some_and(|q| q.offered.is_empty()) {
                    self.phase = Phase::Ivr;
                }
                None
            }
            AcdMsg::Announce {
                position,
                wait_minutes,
            } => {
                // Only to a caller who is waiting, not while an agent's phone rings.
                let waiting = self.queue.as_ref().is_some_and(|q| q.offered.is_empty());
                if let (true, Some(ivr)) = (waiting, &self.ivr) {
                    info!(position, ?wait_minutes, "position announced");
                    ivr.announce(position, wait_minutes);
                }
                None
            }
            AcdMsg::DialCaller { agent } => self.dial_caller_back(&agent).await,
            AcdMsg::Overflow { reason } => {
                info!(%reason, "left the queue unanswered");
                // Phones still ringing for this call must stop: a late answer must not
                // bridge a caller who has moved on in the flow.
                self.cancel_agent_forks(None);
                self.queue = None;
                self.phase = Phase::Ivr;
                // A caller transferred into the queue has no flow step to fall back on.
                if self.transferred_to_queue || self.ivr.is_none() {
                    self.hangup_both(Some(Side::A)).await;
                    return Some(End {
                        by: HangupBy::Switchboard,
                        disposition: Disposition::Answered,
                        code: 200,
                        reason: Some(format!(
                            "the queue gave up on the transferred caller: {reason}"
                        )),
                    });
                }
                let steps =
                    self.ivr
                        .as_mut()?
                        .feed(crate::ivr::Event::QueueResult(QueueResult::Failed {
                            reason,
                        }));
                self.on_ivr_steps(steps).await
            }
        }
    }

    /// The agent transfers the caller (blind, RFC 3515 REFER): the agent is told it
    /// worked and leaves, the caller hears music while the new target rings, and the call
    /// goes on with the target as callee. Only extensions of this server are targets.
    async fn blind_transfer(&mut self, tx: TxId, req: &Request) -> Option<End> {
        let refer_to = message::other_header(&req.headers, "Refer-To").map(str::to_string);
        let target = refer_to
            .as_deref()
            .and_then(|v| v.split_once("sip:"))
            .and_then(|(_, rest)| rest.split(['@', '>', ';']).next())
            .map(str::to_string)
            .filter(|t| !t.is_empty());
        let Some(target) = target else {
            self.sw.respond(tx, message::response_to(req, 400, None));
            return None;
        };
        let phones = self.sw.lookup(&target).await;
        if phones.is_empty() {
            self.sw.respond(tx, message::response_to(req, 404, None));
            return None;
        }
        self.sw.respond(tx, message::response_to(req, 202, None));
        // Tell the agent the transfer is done (we take it from here), then hang it up.
        if let Some(d) = self.b_dialog.as_mut() {
            let mut notify = d.request(Method::Notify);
            notify
                .headers
                .push(Header::Other("Event".into(), "refer".into()));
            notify.headers.push(Header::Other(
                "Subscription-State".into(),
                "terminated;reason=noresource".into(),
            ));
            message::set_body(
                &mut notify.headers,
                &mut notify.body,
                "message/sipfrag;version=2.0",
                b"SIP/2.0 200 OK".to_vec(),
            );
            let peer = d.destination();
            let _ = self.sw.send(self.key, notify, peer).await;
        }
        self.transfer_to(target, phones).await
    }

    /// Sends the caller on to `target` (whose phones are `phones`): the agent is released,
    /// the caller hears music while the target rings.
    async fn transfer_to(&mut self, target: String, phones: Vec<Binding>) -> Option<End> {
        let from_agent = self.release_agent(&target).await?;
        self.rec.reason = Some(format!("transferred by {from_agent} to {target}"));
        self.rec.target = Some(target);
        self.ring(&phones).await;
        None
    }

    /// Sends the caller from its agent into `queue`: music while it waits, then the agent
    /// the queue picks. Should the queue give up on it, the call ends there.
    async fn transfer_to_queue(
        &mut self,
        queue: String,
        acd: super::acd::AcdHandle,
    ) -> Option<End> {
        let from_agent = self.release_agent(&format!("queue:{queue}")).await?;
        self.rec.reason = Some(format!("transferred by {from_agent} to queue {queue}"));
        self.join_queue(acd, queue, Vec::new(), 0);
        self.transferred_to_queue = true;
        self.phase = Phase::Ivr;
        None
    }

    /// Puts the caller in `queue` (the IVR's data goes along in `call.queued`); the
    /// ACD's answers arrive in `self.queue`.
    fn join_queue(
        &mut self,
        acd: super::acd::AcdHandle,
        queue: String,
        skills: Vec<(String, u8)>,
        priority: i32,
    ) {
        info!(%queue, priority, "queued");
        let variables = self.ivr.as_ref().map(|i| i.call_data()).unwrap_or_default();
        let skill_map: std::collections::BTreeMap<_, _> = skills.iter().cloned().collect();
        self.publish(NewEvent::new("call.queued").queue(Some(&queue)).data(
            serde_json::json!({ "priority": priority, "skills": skill_map, "variables": variables }),
        ));
        let (tx, from_acd) = mpsc::unbounded_channel();
        acd.enqueue(
            CallId(self.key),
            &self.rec.call_uuid,
            &queue,
            skills,
            priority,
            tx,
        );
        self.rec.queue = Some(queue);
        self.queue = Some(Queued {
            acd,
            from_acd,
            offered: Vec::new(),
            connected: false,
            callback: false,
        });
    }

    /// Lets the agent go (its leg hung up, its queue told) and parks the caller on music,
    /// offered from now on exactly the codec it speaks. The agent it was talking to.
    async fn release_agent(&mut self, to: &str) -> Option<String> {
        let from_agent = self.rec.target.clone().unwrap_or_default();
        info!(from = %from_agent, %to, "blind transfer");
        self.publish(
            NewEvent::new("call.transferred")
                .agent(Some(&from_agent))
                .data(serde_json::json!({ "from": from_agent, "to": to })),
        );
        if let Some(q) = self.queue.take() {
            q.acd.ended(CallId(self.key), CallEnd::Transferred);
        }
        if let Some(ext) = self.talking.take() {
            self.sw.on_call(&ext, self.key, false);
        }
        self.hangup_both(Some(Side::B)).await;
        // The caller waits on music while the new target rings.
        let codec = self.park_caller_on_music().await?;
        // The new callee is offered exactly the codec the caller speaks.
        let keep = SdpInfo {
            codecs: std::iter::once(codec.payload_type())
                .chain(self.a_offer.telephone_event)
                .collect(),
            ..self.a_offer.clone()
        };
        if let Ok((narrowed, info)) = sdp::restrict_answer(&self.a_offer_sd, &keep) {
            self.a_offer_sd = narrowed;
            self.a_offer = info;
        }
        self.b_dialog = None;
        self.b_ack = None;
        self.b_remote = None;
        self.a_answered = true;
        Some(from_agent)
    }

    /// Takes the caller's ports back from the bridge and plays music on hold into them;
    /// the callee's ports wait in `held`. Returns the caller's codec.
    async fn park_caller_on_music(&mut self) -> Option<Codec> {
        let relay = self.relay.take()?;
        let (a_ports, b_ports, stats, recorder) = relay.release().await?;
        add_rtp_counts(&mut self.rec, &stats);
        // The recording waits for the bridge to come back.
        self.recorder = recorder;
        let codec = self.a_codec.or_else(|| {
            self.a_offer
                .codecs
                .iter()
                .find_map(|pt| Codec::from_payload_type(*pt))
        })?;
        let (music, _media) = self.caller_endpoint(a_ports, codec);
        let rate = SampleRate::from_hz(codec.sample_rate()).unwrap_or(SampleRate::Narrowband);
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
        self.held = Some((music, b_ports));
        Some(codec)
    }

    /// The callee puts the caller on hold (re-INVITE `sendonly`/`inactive`) or takes it
    /// off: instead of relaying silence, the caller hears music on hold from us. Returns
    /// `Some` when the re-INVITE was answered here.
    async fn agent_hold(&mut self, tx: TxId, req: &Request) -> Option<Option<End>> {
        use crate::media::sdp::Direction;
        let (sd, info) = sdp::parse(&req.body).ok()?;
        let hold = matches!(info.direction, Direction::SendOnly | Direction::Inactive);
        match (hold, self.held.is_some()) {
            (true, false) => {
                self.park_caller_on_music().await?;
                info!("the agent put the caller on hold: music on hold");
                self.publish(NewEvent::new("call.held").agent(self.rec.target.as_deref()));
            }
            (false, true) => {
                let (endpoint, b_ports) = self.held.take()?;
                let a_ports = endpoint.release().await?;
                self.b_remote = info.rtp;
                self.start_bridge(a_ports, b_ports);
                info!("the agent took the caller off hold");
                self.publish(NewEvent::new("call.resumed").agent(self.rec.target.as_deref()));
            }
            _ => return None,
        }
        if let Some(d) = self.b_dialog.as_mut() {
            d.refresh_target(&req.headers);
        }
        // Answer the agent ourselves, with the direction that mirrors its offer.
        let answer = sdp::flip_direction(&sd);
        let body = self.render_sdp(Side::B, &answer);
        let mut ok = message::response_to(req, 200, None);
        message::set_body(
            &mut ok.headers,
            &mut ok.body,
            "application/sdp",
            body.into_bytes(),
        );
        let contact = self
            .b_dialog
            .as_ref()
            .map(|d| d.local_contact.clone())
            .unwrap_or_default();
        ok.headers
            .push(Header::Contact(rsip::headers::Contact::new(format!(
                "<{contact}>"
            ))));
        self.sw.respond(tx, ok);
        Some(None)
    }

    /// Cancels the ringing phones of one offered agent, or of every agent.
    fn cancel_agent_forks(&mut self, agent: Option<&str>) {
        for f in &self.forks {
            let mine = agent.is_none_or(|a| f.agent.as_deref() == Some(a));
            if mine && f.final_code.is_none() {
                self.sw.cancel(f.tx);
            }
        }
    }

    /// The agent hung up a queue call: the caller goes back to the flow (post-call survey)
    /// on a new endpoint made from the bridge's ports.
    async fn back_to_flow_after_agent(&mut self) -> Option<End> {
        if let Some(q) = self.queue.take() {
            q.acd.ended(CallId(self.key), CallEnd::Agent);
        }
        // Nothing of the agent's leg carries over.
        if let Some(ext) = self.talking.take() {
            self.sw.on_call(&ext, self.key, false);
        }
        self.b_dialog = None;
        self.b_ack = None;
        self.b_remote = None;
        self.forks.clear();
        self.relayed.clear();
        self.reinvite_acks.clear();
        self.phase = Phase::Ivr;
        if self.ivr.is_none() {
            // A call that reached the queue by a transfer has no flow to go back to.
            self.hangup_both(Some(Side::A)).await;
            return Some(End {
                by: HangupBy::Callee,
                disposition: Disposition::Answered,
                code: 200,
                reason: self.rec.reason.clone(),
            });
        }
        let resumed = self.resume_flow_media().await;
        let Some(ivr) = self.ivr.as_mut().filter(|_| resumed) else {
            // No way to speak to the caller again: end the call rather than leave it mute.
            self.hangup_both(Some(Side::A)).await;
            return Some(End {
                by: HangupBy::Callee,
                disposition: Disposition::Answered,
                code: 200,
                reason: Some("the agent hung up; the caller's media could not be resumed".into()),
            });
        };
        let steps = ivr.feed(crate::ivr::Event::AgentHungUp);
        self.on_ivr_steps(steps).await
    }

    /// Takes the caller's ports back from the bridge and gives the flow a new endpoint on
    /// them, in the codec the caller was answered with.
    async fn resume_flow_media(&mut self) -> bool {
        // The agent may leave while holding the caller: the ports are with the music.
        let (a_ports, b_ports) = if let Some((music, b_ports)) = self.held.take() {
            match music.release().await {
                Some(a_ports) => (a_ports, b_ports),
                None => return false,
            }
        } else {
            let Some(relay) = self.relay.take() else {
                return false;
            };
            let Some((a_ports, b_ports, stats, recorder)) = relay.release().await else {
                return false;
            };
            add_rtp_counts(&mut self.rec, &stats);
            // The conversation is over: so is its recording.
            self.finish_recording(recorder).await;
            (a_ports, b_ports)
        };
        self.b_ports = Some(b_ports);
        let Some(codec) = self.a_codec else {
            return false;
        };
        let (endpoint, media) = self.caller_endpoint(a_ports, codec);
        endpoint.watch_media(self.shared.config.media_timeout);
        match self.ivr.as_mut() {
            Some(ivr) => {
                ivr.set_endpoint(endpoint, media);
                true
            }
            None => false,
        }
    }

    /// Plays the feature code's confirmation, then hangs up (or stops if the caller does).
    async fn confirm_feature(
        &mut self,
        a_ports: MediaPorts,
        prompt: &str,
        events: &mut mpsc::UnboundedReceiver<CallEvent>,
    ) -> End {
        let (endpoint, media, codec) = match self.answer_here(a_ports) {
            Ok(answered) => answered,
            Err(end) => return end,
        };
        self.play_then_hang_up(endpoint, media, codec, prompt, events)
            .await
    }

    /// Plays one prompt to the caller, then hangs up (or stops if the caller does).
    async fn play_then_hang_up(
        &mut self,
        endpoint: EndpointHandle,
        mut media: mpsc::UnboundedReceiver<EndpointEvent>,
        codec: Codec,
        prompt: &str,
        events: &mut mpsc::UnboundedReceiver<CallEvent>,
    ) -> End {
        let rate = SampleRate::from_hz(codec.sample_rate()).unwrap_or(SampleRate::Narrowband);
        let path = self.shared.config.ivr_prompts.join(prompt);
        let playlist = match self.shared.prompts.get(&path, rate) {
            Ok(audio) => crate::media::prompt::Playlist::new().then(audio),
            Err(e) => {
                warn!(prompt = %path.display(), error = %e, "confirmation not played");
                crate::media::prompt::Playlist::new()
            }
        };
        endpoint.play(1, playlist);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            tokio::select! {
                ev = media.recv() => {
                    if matches!(ev, Some(EndpointEvent::PlayFinished(_)) | None) {
                        break;
                    }
                }
                ev = events.recv() => match ev {
                    Some(CallEvent::Request { tx, req, .. }) if req.method == Method::Bye => {
                        self.sw.respond(tx, message::response_to(&req, 200, None));
                        return End {
                            by: HangupBy::Caller,
                            disposition: Disposition::Answered,
                            code: 200,
                            reason: None,
                        };
                    }
                    Some(CallEvent::Request { tx, req, .. }) => {
                        self.sw.respond(tx, message::response_to(&req, 200, None));
                    }
                    Some(_) => {}
                    None => break,
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        self.hangup_both(Some(Side::A)).await;
        End {
            by: HangupBy::Switchboard,
            disposition: Disposition::Answered,
            code: 200,
            reason: None,
        }
    }

    async fn on_ivr_input(&mut self, event: crate::ivr::Event) -> Option<End> {
        if self.ivr.as_ref().is_some_and(|i| i.media_timed_out()) {
            if let Some(ivr) = &mut self.ivr {
                ivr.feed(event);
            }
            let secs = self.shared.config.media_timeout.map_or(0, |t| t.as_secs());
            warn!(secs, "no RTP from the caller: hanging up");
            self.cancel_forks(None);
            self.hangup_both(None).await;
            return Some(End {
                by: HangupBy::Switchboard,
                disposition: Disposition::Answered,
                code: 200,
                reason: Some(format!(
                    "media timeout: no RTP from the caller for {secs} s"
                )),
            });
        }
        if let crate::ivr::Event::Digit(key) = event {
            if self.callback_offered(key) {
                self.request_callback();
                return None;
            }
        }
        let steps = self.ivr.as_mut()?.feed(event);
        self.on_ivr_steps(steps).await
    }

    async fn on_ivr_steps(&mut self, steps: Vec<IvrStep>) -> Option<End> {
        let nodes = self.ivr.as_mut().map(|i| i.new_nodes()).unwrap_or_default();
        for (flow, node, kind) in nodes {
            self.publish(
                NewEvent::new("ivr.step")
                    .data(serde_json::json!({ "flow": flow, "node": node, "kind": kind })),
            );
        }
        for step in steps {
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
                    let Some(acd) = self.shared.acd.clone() else {
                        continue; // the session only asks when there is an ACD
                    };
                    self.join_queue(acd, queue, skills, priority);
                    if let Some(ivr) = &self.ivr {
                        ivr.hold_music();
                    }
                }
                IvrStep::Hangup => {
                    self.hangup_both(Some(Side::A)).await;
                    return Some(End {
                        by: HangupBy::Switchboard,
                        disposition: Disposition::Answered,
                        code: 200,
                        reason: Some("the flow hung up".into()),
                    });
                }
                IvrStep::Record(mode) => {
                    use crate::ivr::model::RecordMode;
                    self.flow_record = Some(match mode {
                        RecordMode::Always => RecordPolicy::Always,
                        RecordMode::Never => RecordPolicy::Never,
                        RecordMode::OnDemand => RecordPolicy::OnDemand,
                    });
                }
                IvrStep::Transfer(TransferTarget::Extension(ext)) => {
                    self.rec.target = Some(ext.clone());
                    let phones = self.sw.lookup(&ext).await;
                    if phones.is_empty() {
                        self.hangup_both(Some(Side::A)).await;
                        return Some(End {
                            by: HangupBy::Switchboard,
                            disposition: Disposition::Unavailable,
                            code: 200,
                            reason: Some(format!("extension {ext} has no registered phone")),
                        });
                    }
                    // Stop the prompt; the caller waits in silence while the phone rings.
                    if let Some(ivr) = &mut self.ivr {
                        ivr.stop_playback();
                    }
                    self.ring(&phones).await;
                }
                IvrStep::Transfer(TransferTarget::External(number)) => {
                    // Out through the first trunk that takes outgoing calls.
                    let trunk = self.outbound_trunk();
                    let Some((trunk, addr)) = trunk else {
                        self.hangup_both(Some(Side::A)).await;
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
                    if let Some(ivr) = &mut self.ivr {
                        ivr.stop_playback();
                    }
                    let via_trunk = super::trunk_binding(&number, addr);
                    self.ring(&[via_trunk]).await;
                }
            }
        }
        None
    }

    async fn start_fork(&mut self, b: &Binding) {
        let adv = host_str(self.advertise());
        let call_id = format!("{}@switchboard", message::random_token(20));
        let caller = if self.rec.from_user.is_empty() {
            "anonymous"
        } else {
            &self.rec.from_user
        };
        let display = self
            .a_invite
            .headers
            .iter()
            .find_map(|h| match h {
                // Only a name-addr (`"Name" <sip:…>`) has a display name.
                Header::From(f) => f.value().split_once('<').map(|(d, _)| d.trim().to_string()),
                _ => None,
            })
            .filter(|d| !d.is_empty())
            .map(|d| format!("{d} "))
            .unwrap_or_default();
        let target = self.rec.target.clone().unwrap_or_default();
        let uri = rsip::Uri::try_from(b.contact.as_str()).unwrap_or_else(|_| {
            rsip::Uri::try_from(format!("sip:{target}@{}", b.source.addr).as_str())
                .unwrap_or_default()
        });
        let mut headers = rsip::Headers::default();
        headers.push(Header::From(rsip::headers::From::new(format!(
            "{display}<sip:{caller}@{adv}>;tag={}",
            message::new_tag()
        ))));
        headers.push(Header::To(rsip::headers::To::new(format!(
            "<sip:{target}@{adv}>"
        ))));
        headers.push(Header::CallId(rsip::headers::CallId::new(call_id.clone())));
        headers.push(Header::CSeq(rsip::headers::CSeq::new("1 INVITE")));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        // Through the proxy the phone registered by (its Path, RFC 3327).
        for hop in &b.path {
            headers.push(Header::Route(rsip::headers::Route::new(hop.clone())));
        }
        headers.push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{}>",
            self.shared.contact(b.source.transport)
        ))));
        headers.push(Header::Allow(rsip::headers::Allow::new(
            "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE",
        )));
        headers.push(Header::Other(
            "X-Switchboard-Call".into(),
            self.rec.call_uuid.clone(),
        ));
        // Screen pop: what the IVR learned travels to the agent's phone (secure values
        // never reach here: the interpreter leaves them out of its call data).
        if let Some(ivr) = &self.ivr {
            for (name, value) in screen_pop_headers(&ivr.call_data()) {
                headers.push(Header::Other(name, value));
            }
        }
        // A caller Switchboard answered is on our media: the callee may pick any codec
        // we carry (the caller's first), and the bridge transcodes if it differs.
        let offer = if self.a_answered {
            sdp::offer_all_codecs(&self.a_offer_sd)
        } else {
            self.a_offer_sd.clone()
        };
        let crypto = self.crypto_for_callee(b);
        self.b_sdp.crypto = crypto.clone();
        let body = self.b_sdp.render(&offer, self.advertise(), self.b_port);
        let req = message::invite_with_sdp(uri, headers, body);
        self.sw.bind_call_id(self.key, call_id.clone());
        if self.rec.b_call_id.is_none() {
            self.rec.b_call_id = Some(call_id);
        }
        if let Some(tx) = self.sw.send(self.key, req.clone(), b.target).await {
            self.forks.push(Fork {
                tx,
                invite: req,
                peer: b.target,
                final_code: None,
                agent: self.ringing_agent.clone(),
                crypto,
            });
        }
    }

    /// Answers the caller's INVITE with `sdp`: 200, the caller's dialog, the answer time.
    fn answer_caller(&mut self, sdp: String) {
        self.respond_a(200, Some(sdp));
        self.arm_session_timer();
        self.a_dialog = Some(Dialog::from_request(
            &self.a_invite,
            &self.a_tag,
            self.a_peer,
            self.a_contact.clone(),
        ));
        self.rec.answered_ms = Some(now_ms());
    }

    fn respond_a(&self, code: u16, body: Option<String>) {
        let mut resp = message::response_to(&self.a_invite, code, Some(&self.a_tag));
        if (200..300).contains(&code) {
            resp.headers.extend(self.session_headers());
        }
        if code < 300 {
            resp.headers
                .push(Header::Contact(rsip::headers::Contact::new(format!(
                    "<{}>",
                    self.a_contact
                ))));
        }
        if let Some(b) = body {
            message::set_body(
                &mut resp.headers,
                &mut resp.body,
                "application/sdp",
                b.into_bytes(),
            );
        }
        self.sw.respond(self.a_tx, resp);
    }

    fn cancel_forks(&mut self, except: Option<TxId>) {
        for f in &self.forks {
            if f.final_code.is_none() && Some(f.tx) != except {
                self.sw.cancel(f.tx);
            }
        }
    }

    /// Stops ringing and ends the call: the caller gets `code`, or a BYE if the IVR
    /// answered it already (its final response was our 200).
    async fn give_up(&mut self, code: u16, d: Disposition, why: &str) -> End {
        self.cancel_forks(None);
        let code = if self.a_answered {
            self.hangup_both(Some(Side::A)).await;
            200
        } else {
            self.respond_a(code, None);
            code
        };
        End {
            by: HangupBy::Switchboard,
            disposition: d,
            code,
            reason: Some(why.into()),
        }
    }

    async fn on_event(&mut self, ev: CallEvent) -> Option<End> {
        match ev {
            CallEvent::Response { tx, resp } => self.on_response(tx, *resp).await,
            CallEvent::Timeout { tx } if self.refresh_tx == Some(tx) => {
                self.on_refresh_answer(408).await
            }
            CallEvent::Timeout { tx } => {
                if let Some(r) = self.relayed.remove(&tx) {
                    // The other leg never answered the re-originated request.
                    self.sw
                        .respond(r.server_tx, message::response_to(&r.req, 408, None));
                    return None;
                }
                self.on_fork_final(tx, 408).await
            }
            CallEvent::Cancelled { tx } if tx == self.a_tx && !self.a_answered => {
                self.cancel_forks(None);
                // The CANCEL can overtake our 200: the caller got 487, so the callee who
                // already answered must be hung up too.
                if self.phase == Phase::Answered {
                    self.hangup_both(Some(Side::B)).await;
                }
                Some(End {
                    by: HangupBy::Caller,
                    disposition: Disposition::Abandoned,
                    code: 487,
                    reason: Some("caller cancelled".into()),
                })
            }
            CallEvent::Cancelled { .. } => None,
            CallEvent::AckTimeout { tx } if tx == self.a_tx => {
                self.hangup_both(None).await;
                Some(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Failed,
                    code: 200,
                    reason: Some("the caller never acknowledged the answer".into()),
                })
            }
            CallEvent::AckTimeout { .. } | CallEvent::Ack { .. } => None,
            CallEvent::Request { tx, req, .. } => self.on_request(tx, *req).await,
            CallEvent::Supervise { leg, reply } => {
                self.on_supervise(*leg, reply);
                None
            }
            CallEvent::Api { cmd, by, reply } => {
                let (answer, end) = self.on_api(cmd, &by).await;
                let _ = reply.send(answer);
                end
            }
            CallEvent::Shutdown => {
                if self.phase == Phase::Ringing {
                    return Some(
                        self.give_up(503, Disposition::Failed, "server shutting down")
                            .await,
                    );
                }
                self.hangup_both(None).await;
                Some(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Answered,
                    code: 200,
                    reason: Some("server shutting down".into()),
                })
            }
        }
    }

    async fn on_response(&mut self, tx: TxId, resp: Response) -> Option<End> {
        if self.refresh_tx == Some(tx) {
            let code = resp.status_code.code();
            return if code >= 200 {
                self.on_refresh_answer(code).await
            } else {
                None
            };
        }
        if self.callback_dial.as_ref().is_some_and(|d| d.tx == tx) {
            return self.on_callback_response(resp).await;
        }
        if let Some(r) = self.relayed.remove(&tx) {
            return self.on_relayed_response(tx, r, resp).await;
        }
        if let Some((ack, peer)) = self.reinvite_acks.get(&tx) {
            if resp.status_code.code() / 100 == 2 {
                self.sw.send_ack(ack.clone(), *peer);
            }
            return None;
        }
        let code = resp.status_code.code();
        let fork_idx = self.forks.iter().position(|f| f.tx == tx)?;
        match code {
            100 => None,
            101..=199 => {
                if self.phase != Phase::Ringing {
                    return None;
                }
                if self.rec.ringing_ms.is_none() {
                    self.rec.ringing_ms = Some(now_ms());
                }
                if self.a_answered {
                    return None; // the caller is in the call already; nothing to relay
                }
                // Early media (183 with SDP) is relayed; plain ringing becomes 180.
                let early = (!resp.body.is_empty())
                    .then(|| self.answer_sdp_for_a(Some(fork_idx), &resp.body).ok())
                    .flatten();
                match early {
                    Some(body) => self.respond_a(183, Some(body)),
                    None => self.respond_a(180, None),
                }
                None
            }
            200..=299 => self.on_fork_answered(fork_idx, resp).await,
            _ => self.on_fork_final(tx, code).await,
        }
    }

    /// The callee's SDP answer, narrowed to the caller's offer and rendered for leg A.
    fn answer_sdp_for_a(
        &mut self,
        fork: Option<usize>,
        body: &[u8],
    ) -> Result<String, sdp::SdpError> {
        let narrowed = self.accept_b_answer(fork, body)?;
        Ok(self.render_sdp(Side::A, &narrowed))
    }

    /// Checks the callee's SDP answer against what the caller can receive and points the
    /// relay's B side at it; returns the answer narrowed to the caller's codecs.
    fn accept_b_answer(
        &mut self,
        fork: Option<usize>,
        body: &[u8],
    ) -> Result<rtc_sdp::SessionDescription, sdp::SdpError> {
        let (sd, info) = sdp::parse(body)?;
        self.accept_b_crypto(fork, &info)?;
        let offered = if self.a_answered {
            sdp::all_codecs(&self.a_offer)
        } else {
            self.a_offer.clone()
        };
        let (narrowed, kept) = sdp::restrict_answer(&sd, &offered)?;
        self.b_format = kept
            .codecs
            .iter()
            .find_map(|pt| Codec::from_payload_type(*pt))
            .map(|codec| LegFormat {
                codec,
                event_pt: kept.telephone_event,
            });
        self.b_remote = info.rtp;
        if let (Some(relay), Some(rtp)) = (&self.relay, info.rtp) {
            relay.set_remote(Side::B, rtp, None);
        }
        Ok(narrowed)
    }

    async fn on_fork_answered(&mut self, idx: usize, resp: Response) -> Option<End> {
        let fork_tx = self.forks[idx].tx;
        let peer = self.forks[idx].peer;
        let contact = self.shared.contact(peer.transport);
        let dialog = Dialog::from_response(&self.forks[idx].invite, &resp, peer, contact);
        let ack = dialog.ack(1);
        self.sw.send_ack(ack.clone(), peer);
        // A queue call: only an answer from an agent still on offer is taken; any other
        // (a withdrawn offer, the call already bridged or back in the flow) is hung up.
        let stale_offer = self.queue.as_ref().is_none_or(|q| {
            q.connected
                || self.forks[idx]
                    .agent
                    .as_ref()
                    .is_none_or(|a| !q.offered.contains(a))
        });
        if self.forks[idx].agent.is_some() && stale_offer && self.phase != Phase::Answered {
            self.forks[idx].final_code = Some(resp.status_code.code());
            let mut late = dialog;
            let bye = late.request(Method::Bye);
            let _ = self.sw.send(self.key, bye, peer).await;
            return None;
        }
        if self.phase == Phase::Answered {
            let mine = self.b_dialog.as_ref().map(|d| d.id.call_id.clone());
            if mine.as_deref() != Some(dialog.id.call_id.as_str()) {
                // A second fork answered too late: acknowledge it and hang it up.
                let mut late = dialog;
                let bye = late.request(Method::Bye);
                let _ = self.sw.send(self.key, bye, peer).await;
            }
            return None;
        }
        self.forks[idx].final_code = Some(resp.status_code.code());
        let answer = if self.a_answered {
            // The caller is already answered (by the IVR): nothing to send it, only the
            // callee's media to accept.
            self.accept_b_answer(Some(idx), &resp.body).map(|_| None)
        } else {
            self.answer_sdp_for_a(Some(idx), &resp.body).map(Some)
        };
        let body = match answer {
            // A callback's agent waits on the line while the caller is dialled.
            Ok(None) if self.queue.as_ref().is_some_and(|q| q.callback) => {
                self.cancel_forks(Some(fork_tx));
                self.rec.b_call_id = Some(dialog.id.call_id.clone());
                self.b_dialog = Some(dialog);
                self.b_ack = Some((ack, peer));
                self.phase = Phase::Answered;
                let agent = self.forks[idx].agent.clone()?;
                info!(%agent, "the callback's agent answered; dialling the caller");
                let q = self.queue.as_mut()?;
                q.offered.clear();
                q.acd.answered(CallId(self.key), &agent);
                return None;
            }
            Ok(b) => b,
            Err(e) if self.queue.is_some() => {
                // One agent's phone answered with media we cannot use: hang that phone
                // up; the ACD moves on and the caller keeps waiting.
                warn!(error = %e, "an agent's answer cannot be used");
                let mut d = dialog;
                let bye = d.request(Method::Bye);
                let _ = self.sw.send(self.key, bye, peer).await;
                let agent = self.forks[idx].agent.clone();
                if let (Some(q), Some(agent)) = (&mut self.queue, agent) {
                    if q.offered.contains(&agent) {
                        q.offered.retain(|a| a != &agent);
                        q.acd.declined(CallId(self.key), &agent);
                    }
                }
                return None;
            }
            Err(e) if self.a_answered => {
                warn!(error = %e, "the callee's answer cannot be used");
                let mut d = dialog;
                let bye = d.request(Method::Bye);
                let _ = self.sw.send(self.key, bye, peer).await;
                self.cancel_forks(None);
                self.hangup_both(Some(Side::A)).await;
                return Some(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Failed,
                    code: 200,
                    reason: Some(e.to_string()),
                });
            }
            Err(e) => {
                warn!(error = %e, "the callee's answer cannot be used");
                let mut d = dialog;
                let bye = d.request(Method::Bye);
                let _ = self.sw.send(self.key, bye, peer).await;
                self.cancel_forks(None);
                self.respond_a(488, None);
                return Some(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Failed,
                    code: 488,
                    reason: Some(e.to_string()),
                });
            }
        };
        self.cancel_forks(Some(fork_tx));
        self.rec.b_call_id = Some(dialog.id.call_id.clone());
        self.b_dialog = Some(dialog);
        self.b_ack = Some((ack, peer));
        match body {
            Some(body) => {
                self.answer_caller(body);
            }
            None => self.bridge_after_ivr().await,
        }
        self.phase = Phase::Answered;
        self.rec.bridged_ms = Some(now_ms());
        info!("answered");
        let answered_by = self.forks[idx].agent.clone();
        self.publish(
            NewEvent::new("call.answered")
                .queue(self.rec.queue.as_deref())
                .agent(self.rec.target.as_deref())
                .data(serde_json::json!({ "by": self.rec.target })),
        );
        self.on_bridged(answered_by.clone());
        let agent = self.queue.as_mut().and_then(|q| {
            let agent = answered_by?;
            q.connected = true;
            // Other offered agents (ring-all) are cancelled with their phones above.
            q.offered.clear();
            q.acd.answered(CallId(self.key), &agent);
            Some(agent)
        });
        if let (Some(agent), Some(ivr)) = (agent, &mut self.ivr) {
            let steps = ivr.feed(crate::ivr::Event::QueueResult(QueueResult::Connected {
                agent,
            }));
            return self.on_ivr_steps(steps).await;
        }
        None
    }

    /// The callee answered a call the IVR had answered: the IVR's endpoint hands the
    /// caller's ports to a relay that bridges them with the callee's.
    async fn bridge_after_ivr(&mut self) {
        // The caller's ports are with the IVR's endpoint, or with the music it hears
        // while an agent's transfer rings.
        if let Some((music, b_ports)) = self.held.take() {
            self.b_ports = Some(b_ports);
            self.ivr_endpoint_parked = Some(music);
        }
        let endpoint = self
            .ivr
            .as_mut()
            .and_then(|i| i.take_endpoint())
            .or_else(|| self.ivr_endpoint_parked.take());
        let a_ports = match endpoint {
            Some(e) => e.release().await,
            None => None,
        };
        let (Some(a_ports), Some(b_ports)) = (a_ports, self.b_ports.take()) else {
            warn!("the caller's media ports are gone; the bridge carries no audio");
            return;
        };
        self.start_bridge(a_ports, b_ports);
    }

    /// Relays between the caller's and the callee's ports, each side aimed at the address
    /// its SDP named (symmetric RTP corrects it on the first packet).
    fn start_bridge(&mut self, a_ports: MediaPorts, b_ports: MediaPorts) {
        let (relay, events) =
            spawn_relay_with_events(a_ports, b_ports, self.shared.config.media_timeout);
        // Nobody talks before the answer: the media timeout waits for the bridge.
        relay.watch(Side::A, false);
        relay.watch(Side::B, false);
        if let Some(rtp) = self.a_offer.rtp {
            relay.set_remote(Side::A, rtp, None);
        }
        if let Some(rtp) = self.b_remote {
            relay.set_remote(Side::B, rtp, None);
        }
        self.relay = Some(relay);
        self.relay_events = Some(events);
        if self.phase == Phase::Answered {
            self.configure_bridge();
        }
    }

    /// The caller's negotiated format: what Switchboard answered it with, else what the
    /// callee's answer chose (the caller's offer went to the callee unchanged).
    fn a_format(&self) -> Option<LegFormat> {
        let codec = self.a_codec.or(self.b_format.map(|f| f.codec))?;
        Some(LegFormat {
            codec,
            event_pt: self.a_offer.telephone_event,
        })
    }

    /// Tells the relay the legs' formats, hands it the recording, and watches both legs
    /// for the media timeout: the bridge carries a conversation from here on.
    fn configure_bridge(&mut self) {
        let Some(relay) = &self.relay else { return };
        if let (Some(a), Some(b)) = (self.a_format(), self.b_format) {
            relay.set_formats(a, b);
        }
        relay.forward_dtmf(self.shared.config.forward_dtmf);
        relay.watch(Side::A, true);
        relay.watch(Side::B, true);
        // A recording that failed stays parked until the call ends and closes it.
        if let Some(rec) = self.recorder.take_if(|_| !self.recording_stopped) {
            relay.record(rec);
            relay.pause_recording(self.recording_paused);
        }
    }

    async fn on_relay_event(&mut self, ev: RelayEvent) -> Option<End> {
        match ev {
            RelayEvent::Key(Side::B, key) => {
                self.on_agent_key(key.as_char());
                None
            }
            RelayEvent::Key(Side::A, _) => None,
            RelayEvent::SupervisorMode(mode) => {
                info!(?mode, "the supervisor switched mode");
                None
            }
            RelayEvent::RecordingFailed(why) => {
                // The file could not be made or written (a full disk): the call goes on,
                // unrecorded from here, and the record keeps what was written.
                warn!(%why, "the recording stopped");
                self.recording_stopped = true;
                self.publish(
                    NewEvent::new("call.recording")
                        .agent(self.rec.target.as_deref())
                        .data(serde_json::json!({ "state": "failed", "why": why })),
                );
                None
            }
            RelayEvent::MediaTimeout(side) if self.phase == Phase::Answered => {
                let secs = self.shared.config.media_timeout.map_or(0, |t| t.as_secs());
                let who = if side == Side::A { "caller" } else { "callee" };
                warn!(who, secs, "no RTP: hanging up");
                self.hangup_both(None).await;
                Some(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Answered,
                    code: 200,
                    reason: Some(format!("media timeout: no RTP from the {who} for {secs} s")),
                })
            }
            RelayEvent::MediaTimeout(_) => None,
        }
    }

    async fn on_fork_final(&mut self, tx: TxId, code: u16) -> Option<End> {
        let fork = self.forks.iter_mut().find(|f| f.tx == tx)?;
        fork.final_code = Some(code);
        if let Some(q) = &mut self.queue {
            if q.connected {
                return None; // the other phones of the agent who answered
            }
            // An offered agent's phones all failed: the ACD decides what next (the caller
            // keeps its place). A withdrawn offer is no longer in `offered`.
            let agent = self
                .forks
                .iter()
                .find(|f| f.tx == tx)
                .and_then(|f| f.agent.clone());
            if let Some(agent) = agent {
                let all_failed = self
                    .forks
                    .iter()
                    .filter(|f| f.agent.as_deref() == Some(agent.as_str()))
                    .all(|f| f.final_code.is_some());
                if all_failed && q.offered.contains(&agent) {
                    q.offered.retain(|a| a != &agent);
                    q.acd.declined(CallId(self.key), &agent);
                }
            }
            if q.offered.is_empty() {
                self.phase = Phase::Ivr;
            }
            return None;
        }
        if self.phase != Phase::Ringing || self.forks.iter().any(|f| f.final_code.is_none()) {
            return None;
        }
        // Every fork failed: tell the caller the most telling answer (RFC 3261 §16.7:
        // 6xx first, then busy, then the lowest class).
        let codes: Vec<u16> = self.forks.iter().filter_map(|f| f.final_code).collect();
        let best = codes
            .iter()
            .copied()
            .find(|c| *c >= 600)
            .or_else(|| codes.iter().copied().find(|c| *c == 486))
            .or_else(|| codes.iter().copied().min())
            .unwrap_or(480);
        let (code, d) = match best {
            486 | 600 => (486, Disposition::Busy),
            603 | 403 => (603, Disposition::Declined),
            // A redirect (forwarding, DND) is not followed: the extension is unavailable.
            300..=399 | 408 | 480 | 404 => (480, Disposition::Unavailable),
            401 | 407 => (403, Disposition::Failed),
            c => (c, Disposition::Failed),
        };
        let code = if self.a_answered {
            // Transferred from the IVR: the caller was answered; hang it up.
            self.hangup_both(Some(Side::A)).await;
            200
        } else {
            self.respond_a(code, None);
            code
        };
        Some(End {
            by: HangupBy::Callee,
            disposition: d,
            code,
            reason: Some(format!("callee answered {best}")),
        })
    }

    fn side_of(&self, req: &Request) -> Option<Side> {
        let id = message::call_id(&as_msg(req));
        if self.a_dialog.as_ref().is_some_and(|d| d.id.call_id == id) || id == self.rec.a_call_id {
            Some(Side::A)
        } else if self.b_dialog.as_ref().is_some_and(|d| d.id.call_id == id) {
            Some(Side::B)
        } else {
            None
        }
    }

    /// The SDP we send on `side`, carrying `from`'s media anchored at that leg's port.
    fn render_sdp(&mut self, side: Side, from: &rtc_sdp::SessionDescription) -> String {
        let ip = self.advertise();
        match side {
            Side::A => self.a_sdp.render(from, ip, self.a_port),
            Side::B => self.b_sdp.render(from, ip, self.b_port),
        }
    }

    fn dialog_mut(&mut self, side: Side) -> Option<&mut Dialog> {
        match side {
            Side::A => self.a_dialog.as_mut(),
            Side::B => self.b_dialog.as_mut(),
        }
    }

    async fn on_request(&mut self, tx: TxId, req: Request) -> Option<End> {
        let reply =
            |sw: &SwitchHandle, code: u16| sw.respond(tx, message::response_to(&req, code, None));
        let Some(side) = self.side_of(&req) else {
            reply(&self.sw, 481);
            return None;
        };
        let bridged = self.phase == Phase::Answered;
        let Some(dialog) = self.dialog_mut(side) else {
            // Not answered yet: only the caller's early dialog exists.
            reply(&self.sw, if req.method == Method::Bye { 481 } else { 491 });
            return None;
        };
        if !dialog.accept_remote_cseq(&req) {
            reply(&self.sw, 500);
            return None;
        }
        match req.method {
            Method::Bye => {
                reply(&self.sw, 200);
                let agent_left = side == Side::B
                    && self.queue.as_ref().is_some_and(|q| q.connected)
                    && self.ivr.as_ref().is_some_and(|i| i.is_running());
                if agent_left {
                    return self.back_to_flow_after_agent().await;
                }
                let other = other(side);
                self.hangup_both(Some(other)).await;
                // A caller leaving before the bridge: in the flow, or while the
                // transfer rang.
                let (disposition, reason) = match self.phase {
                    Phase::Answered => (Disposition::Answered, None),
                    Phase::Ivr => (Disposition::Answered, Some("caller hung up in the IVR")),
                    Phase::Ringing => {
                        self.cancel_forks(None);
                        (
                            Disposition::Abandoned,
                            Some("caller hung up while the transfer rang"),
                        )
                    }
                };
                // A caller still waiting in a queue abandoned it.
                let (disposition, reason) = match &self.queue {
                    Some(q) if !q.connected => {
                        self.cancel_forks(None);
                        (Disposition::Abandoned, Some("caller hung up in the queue"))
                    }
                    _ => (disposition, reason),
                };
                if let Some(ivr) = &mut self.ivr {
                    if ivr.is_running() {
                        ivr.feed(crate::ivr::Event::CallerHungUp);
                    }
                }
                Some(End {
                    by: if side == Side::A {
                        HangupBy::Caller
                    } else {
                        HangupBy::Callee
                    },
                    disposition,
                    code: 200,
                    reason: reason.map(str::to_string),
                })
            }
            Method::Options => {
                reply(&self.sw, 200);
                None
            }
            Method::Refer if side == Side::B && bridged => self.blind_transfer(tx, &req).await,
            Method::Invite | Method::Update | Method::Info => {
                if req.method != Method::Info {
                    dialog.refresh_target(&req.headers);
                }
                if side == Side::A && req.method != Method::Info {
                    self.on_caller_refresh(&req);
                    // A bodiless UPDATE only refreshes the session: it is answered here.
                    if req.method == Method::Update && req.body.is_empty() {
                        self.sw.respond(tx, self.ok_to_caller_refresh(&req));
                        return None;
                    }
                }
                if side == Side::B && req.method == Method::Invite && !req.body.is_empty() {
                    if let Some(answered) = self.agent_hold(tx, &req).await {
                        return answered;
                    }
                }
                if self.b_dialog.is_none() {
                    // No other leg yet (the IVR has the caller): answer here, keeping
                    // the media as it is. A key sent by INFO is the flow's.
                    if let (Method::Info, Side::A, Some(ivr)) = (&req.method, side, &self.ivr) {
                        if let Some(ct) = message::content_type(&as_msg(&req)) {
                            ivr.sip_info(&ct, &req.body);
                        }
                    }
                    // A caller holding us sends no RTP meanwhile: no media timeout then.
                    if let (Some(ivr), Ok((_, info))) = (&self.ivr, sdp::parse(&req.body)) {
                        use crate::media::sdp::Direction;
                        let talking =
                            matches!(info.direction, Direction::SendRecv | Direction::RecvOnly);
                        ivr.watch_media(
                            talking
                                .then_some(self.shared.config.media_timeout)
                                .flatten(),
                        );
                    }
                    // An INFO whose body we cannot read (no Info-Package, RFC 6086 §1):
                    // 415 and what we accept. An empty INFO is a keep-alive: 200.
                    if req.method == Method::Info && !req.body.is_empty() {
                        let ct = message::content_type(&as_msg(&req)).unwrap_or_default();
                        if !ct.to_ascii_lowercase().starts_with("application/dtmf") {
                            let mut resp = message::response_to(&req, 415, None);
                            resp.headers.push(Header::Other(
                                "Accept".into(),
                                "application/dtmf-relay, application/dtmf".into(),
                            ));
                            self.sw.respond(tx, resp);
                            return None;
                        }
                    }
                    // Only the caller's leg exists here.
                    let mut ok = match req.method {
                        Method::Info => message::response_to(&req, 200, None),
                        _ => self.ok_to_caller_refresh(&req),
                    };
                    if let (Method::Invite, Some(body)) = (&req.method, self.a_sdp.last_body()) {
                        message::set_body(
                            &mut ok.headers,
                            &mut ok.body,
                            "application/sdp",
                            body.as_bytes().to_vec(),
                        );
                    }
                    self.sw.respond(tx, ok);
                    return None;
                }
                if req.method == Method::Info {
                    let ct = message::content_type(&as_msg(&req)).unwrap_or_default();
                    if let Ok(d) = crate::media::dtmf::parse_sip_info(&ct, &req.body) {
                        if side == Side::B {
                            self.on_agent_key(d.key.as_char());
                        }
                        // A key is the call's, not the other party's, unless configured.
                        if !self.shared.config.forward_dtmf {
                            self.sw.respond(tx, message::response_to(&req, 200, None));
                            return None;
                        }
                    }
                }
                self.relay_request(side, tx, req).await;
                None
            }
            _ => {
                reply(&self.sw, 405);
                None
            }
        }
    }

    /// Re-originates an in-dialog request on the other leg, SDP rewritten for it.
    async fn relay_request(&mut self, from: Side, server_tx: TxId, req: Request) {
        let to = other(from);
        let mut body = None;
        if !req.body.is_empty() {
            let is_sdp = message::content_type(&as_msg(&req)).is_some_and(|c| c.contains("sdp"));
            if is_sdp {
                match sdp::parse(&req.body) {
                    Ok((sd, info)) => {
                        if let (Some(relay), Some(rtp)) = (&self.relay, info.rtp) {
                            relay.set_remote(from, rtp, None);
                        }
                        self.note_rekey(from, &info);
                        if let Some(relay) = &self.relay {
                            // On hold, neither side owes us RTP.
                            use crate::media::sdp::Direction;
                            let talking =
                                matches!(info.direction, Direction::SendRecv | Direction::RecvOnly);
                            relay.watch(Side::A, talking);
                            relay.watch(Side::B, talking);
                        }
                        body = Some((
                            "application/sdp".to_string(),
                            self.render_sdp(to, &sd).into_bytes(),
                        ));
                        // A later answer from the callee is narrowed to what the caller
                        // offered last.
                        if from == Side::A {
                            self.a_offer = info;
                        }
                    }
                    Err(e) => {
                        self.sw
                            .respond(server_tx, message::response_to(&req, 488, None));
                        warn!(error = %e, "unusable SDP in an in-dialog request");
                        return;
                    }
                }
            } else {
                let ct = message::content_type(&as_msg(&req))
                    .unwrap_or_else(|| "application/octet-stream".into());
                body = Some((ct, req.body.clone()));
            }
        }
        let Some(dialog) = self.dialog_mut(to) else {
            return;
        };
        let mut out = dialog.request(req.method);
        let cseq = dialog.local_cseq;
        if let Some((ct, b)) = body {
            message::set_body(&mut out.headers, &mut out.body, &ct, b);
        }
        let peer = dialog.destination();
        if let Some(tx) = self.sw.send(self.key, out, peer).await {
            self.relayed.insert(
                tx,
                Relayed {
                    from,
                    server_tx,
                    method: req.method,
                    req,
                    cseq,
                },
            );
        }
    }

    async fn on_relayed_response(&mut self, tx: TxId, r: Relayed, resp: Response) -> Option<End> {
        let code = resp.status_code.code();
        if code < 200 {
            self.relayed.insert(tx, r); // wait for the final answer
            return None;
        }
        let answered_leg = other(r.from);
        let mut out = message::response_to(&r.req, code, None);
        if r.from == Side::A && (200..300).contains(&code) && r.method != Method::Info {
            out.headers.extend(self.session_headers());
        }
        // The agent's re-INVITE or UPDATE, answered by the caller, refreshed the caller's
        // session too (RFC 4028 §10).
        let refreshed = matches!(r.method, Method::Invite | Method::Update);
        if answered_leg == Side::A && (200..300).contains(&code) && refreshed {
            self.arm_session_timer();
        }
        if r.method == Method::Invite && (200..300).contains(&code) {
            if let Some(d) = self.dialog_mut(answered_leg) {
                let ack = d.ack(r.cseq);
                let peer = d.destination();
                self.sw.send_ack(ack.clone(), peer);
                self.reinvite_acks.insert(tx, (ack, peer));
            }
        }
        if (200..300).contains(&code) && !resp.body.is_empty() {
            if let Ok((sd, info)) = sdp::parse(&resp.body) {
                if let (Some(relay), Some(rtp)) = (&self.relay, info.rtp) {
                    relay.set_remote(answered_leg, rtp, None);
                }
                self.note_rekey(answered_leg, &info);
                let body = self.render_sdp(r.from, &sd);
                message::set_body(
                    &mut out.headers,
                    &mut out.body,
                    "application/sdp",
                    body.into_bytes(),
                );
            } else {
                let ct =
                    message::content_type(&SipMessage::Response(resp.clone())).unwrap_or_default();
                message::set_body(&mut out.headers, &mut out.body, &ct, resp.body.clone());
            }
        }
        if (200..300).contains(&code) {
            let contact = match r.from {
                Side::A => self.a_contact.clone(),
                Side::B => self
                    .b_dialog
                    .as_ref()
                    .map(|d| d.local_contact.clone())
                    .unwrap_or_default(),
            };
            out.headers
                .push(Header::Contact(rsip::headers::Contact::new(format!(
                    "<{contact}>"
                ))));
        }
        self.sw.respond(r.server_tx, out);
        None
    }

    /// Sends BYE on the given leg, or on both.
    async fn hangup_both(&mut self, only: Option<Side>) {
        for side in [Side::A, Side::B] {
            if only.is_some_and(|o| o != side) {
                continue;
            }
            if let Some(d) = self.dialog_mut(side) {
                let bye = d.request(Method::Bye);
                let peer = d.destination();
                let _ = self.sw.send(self.key, bye, peer).await;
            }
        }
    }

    async fn finish(mut self, end: End) {
        // The call ended now, before the agent is freed for its next call and before
        // the media and recording are closed (which take a while).
        let ended_ms = now_ms();
        if let Some(q) = self.queue.take() {
            if q.connected {
                let by = match end.by {
                    HangupBy::Callee => CallEnd::Agent,
                    _ => CallEnd::Caller,
                };
                q.acd.ended(CallId(self.key), by);
            } else {
                q.acd.abandoned(CallId(self.key));
            }
        }
        let stats = match self.relay.take() {
            Some(relay) => {
                let stopped = relay.finish().await;
                self.finish_recording(stopped.recorder).await;
                stopped.stats
            }
            None => Default::default(),
        };
        let parked = self.recorder.take();
        self.finish_recording(parked).await;
        let mut rec = self.rec;
        if let Some(ivr) = &self.ivr {
            rec.ivr_trace = Some(ivr.trace_text());
            (rec.csat, rec.resolved) = ivr.survey();
        }
        rec.ended_ms = ended_ms;
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
        self.shared.records.submit(rec);
        // Requests still waiting on the other leg get a final answer, so no transaction
        // is left open. Late 2xx answers from forks are ACKed and hung up by the switch.
        for r in self.relayed.values() {
            let code = if r.method == Method::Invite { 487 } else { 481 };
            self.sw
                .respond(r.server_tx, message::response_to(&r.req, code, None));
        }
        self.sw.ended(self.key);
    }
}

/// `X-Switchboard-<variable>: value` headers for the IVR's variables: names reduced to
/// header token characters, values to one line, and a bound on how much is sent.
fn screen_pop_headers(data: &std::collections::BTreeMap<String, String>) -> Vec<(String, String)> {
    const MAX_HEADERS: usize = 32;
    const MAX_VALUE: usize = 256;
    data.iter()
        .filter_map(|(name, value)| {
            let name: String = name
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            let value: String = value
                .chars()
                .filter(|c| !c.is_control())
                .take(MAX_VALUE)
                .collect();
            (!name.is_empty()).then(|| (format!("X-Switchboard-{name}"), value))
        })
        .take(MAX_HEADERS)
        .collect()
}
/// Adds one bridge's packet counters to the record (a call may be bridged several times:
/// hold, survey, transfer).
fn add_rtp_counts(rec: &mut CallRecord, stats: &crate::media::relay::RelayStats) {
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

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
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

    #[test]
    fn screen_pop_headers_are_safe_tokens_and_single_lines() {
        let data = [
            ("customer_name", "Ada\r\nX-Evil: 1"),
            ("tier", "gold"),
            ("", "nameless"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let headers = screen_pop_headers(&data);
        assert_eq!(
            headers,
            vec![
                (
                    "X-Switchboard-customer-name".to_string(),
                    "AdaX-Evil: 1".to_string()
                ),
                ("X-Switchboard-tier".to_string(), "gold".to_string()),
            ]
        );
    }
}
