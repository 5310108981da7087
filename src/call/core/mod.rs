//! One call's logic as a sans-IO state machine: [`Input`]s and the time go in,
//! [`Command`]s come out. It never touches a socket, a timer, a file or another task;
//! the call task (`call::task`) carries out its commands and feeds it what happens, so
//! whole calls can be driven in unit tests in simulated time.
//!
//! The core is the caller's dialog (leg A), the callee forks and then the callee's
//! dialog (leg B), and the call record. Every contact of the target is rung (each fork
//! is a call of its own, with its own Call-ID); the first 2xx wins and the others are
//! cancelled. Once answered, in-dialog requests from one leg are re-originated on the
//! other (re-INVITE/UPDATE for hold and resume, INFO), with SDP rewritten so media keeps
//! flowing through our ports.
//!
//! Its parts, one file each: [`forking`] (ringing phones, the first answer),
//! [`dialog_bridge`] (in-dialog requests between the legs), [`media_plan`] (where the
//! caller's media is: our endpoint, the bridge, music on hold), [`ivr_leg`] (the flow),
//! [`queue_session`] (the ACD), [`recording_policy`], [`callback`], [`supervision`],
//! [`session_timer`] (RFC 4028), [`encryption`] (SRTP per leg), [`api`] (control-plane
//! requests) and [`record_builder`] (the call's record).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, SipMessage};
use tracing::{debug, info, warn};

use crate::config::{Config, RecordPolicy, Transport};
use crate::events::NewEvent;
use crate::ivr::FlowSet;
use crate::media::codec::Codec;
use crate::media::mixer::Mode;
use crate::media::relay::{RelayEvent, RelayStats, Side};
use crate::media::sdp::{self, LegSdp, SdpInfo};
use crate::media::taps::LegFormat;
use crate::sip::dialog::Dialog;
use crate::sip::message::{self, host_str};
use crate::sip::registrar::Binding;
use crate::sip::transaction::{Peer, TxId, TxIds};
use crate::store::{CallRecord, Disposition, HangupBy};

use super::acd::AcdMsg;
use super::{as_msg, host_port, ApiCommand};

pub mod api;
pub mod callback;
pub mod dialog_bridge;
pub mod encryption;
pub mod forking;
pub mod ivr_leg;
pub mod media_plan;
pub mod queue_session;
pub mod record_builder;
pub mod recording_policy;
pub mod session_timer;
pub mod supervision;
#[cfg(test)]
mod tests;

pub use ivr_leg::{IvrCmd, IvrReport, IvrSummary};
pub use media_plan::{BridgeSpec, CallerLeg, Conversation, MediaCmd, RecordingOutcome};
pub use queue_session::AcdCmd;
pub use record_builder::End;

/// The time an input happens at: the monotonic clock for timers, the wall clock (ms
/// since the epoch) for the record.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    pub wall_ms: i64,
}

/// What happened to the call.
#[derive(Debug)]
pub enum Input {
    /// A request inside one of the call's dialogs (BYE, re-INVITE, INFO…).
    Request {
        tx: TxId,
        req: Box<Request>,
    },
    Response {
        tx: TxId,
        resp: Box<Response>,
    },
    Timeout {
        tx: TxId,
    },
    /// The caller cancelled; 487 already went out.
    Cancelled {
        tx: TxId,
    },
    AckTimeout {
        tx: TxId,
    },
    /// The server is shutting down and the drain time is over: hang up now.
    Shutdown,
    /// The switch is gone.
    SwitchGone,
    /// A control-plane request; the answer goes out as [`Command::ApiReply`] with `token`.
    Api {
        cmd: ApiCommand,
        by: String,
        token: u64,
    },
    /// The registered phones [`Command::Lookup`] asked for.
    Phones {
        purpose: Lookup,
        phones: Vec<Binding>,
    },
    /// The ACD's decision for this queued call.
    Acd(AcdMsg),
    /// What the bridge reports (keys, media timeout, a failed recording).
    Relay(RelayEvent),
    /// The flow's input: a key, a prompt's end, a timer, a web answer.
    IvrEvent {
        event: crate::ivr::Event,
        /// The caller's phone went quiet for the media timeout.
        media_timed_out: bool,
    },
    /// What the flow asked for after an [`IvrCmd::Feed`].
    IvrSteps(IvrReport),
    /// The flow could not start.
    IvrFailed(String),
    /// How long the notice [`IvrCmd::Notice`] plays.
    NoticeLength(Duration),
    /// A bridge was taken apart: its packet counters.
    MediaStats(RelayStats),
    /// The caller's media could not be moved where the call asked.
    MediaLost(String),
    /// A recording the call stopped (or the call's end) is complete.
    RecordingFinished(RecordingOutcome),
    /// The announcement [`MediaCmd::Play`] played to its end.
    AnnouncementDone,
    /// A supervisor's media joined the agent's bridge.
    SupervisorJoined,
    /// The agent a supervisor asked for is on no call.
    SupervisorNoCall,
    /// The call the supervisor listened to ended.
    SupervisedCallEnded,
    /// [`MediaCmd::Finish`] is done: the last bridge's counters and the flow's summary.
    Finished {
        stats: RelayStats,
        ivr: Option<IvrSummary>,
    },
}

/// Why the call asked for an extension's phones.
#[derive(Debug, Clone)]
pub enum Lookup {
    /// The ACD offers the call to this agent.
    Offer { agent: String },
    /// The control plane transfers the call.
    ApiTransfer { token: u64, extension: String },
    /// The agent's REFER.
    Refer {
        tx: TxId,
        req: Box<Request>,
        target: String,
    },
    /// The flow's transfer step.
    FlowTransfer { extension: String },
}

/// What the call task must do. (Commands wait in a short queue; boxing the messages
/// would buy nothing.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Command {
    /// Start a client transaction under `tx`.
    Send {
        tx: TxId,
        req: Request,
        to: Peer,
    },
    Respond {
        tx: TxId,
        resp: Response,
    },
    /// A request outside any transaction (the ACK to a 2xx).
    Ack {
        req: Request,
        to: Peer,
    },
    Cancel {
        tx: TxId,
    },
    /// Route this Call-ID's requests to the call.
    BindCallId(String),
    /// An extension is (or no longer is) talking on this call, for supervisors.
    OnCall {
        extension: String,
        on: bool,
    },
    /// Find an extension's registered phones; they come back as [`Input::Phones`].
    Lookup {
        extension: String,
        purpose: Lookup,
    },
    Media(MediaCmd),
    Ivr(IvrCmd),
    Acd(AcdCmd),
    Publish(NewEvent),
    ApiReply {
        token: u64,
        answer: Result<String, String>,
    },
    /// The finished record, for the store.
    Submit(Box<CallRecord>),
    /// Nothing more will come: the call is over.
    Ended,
}

/// Where an admitted call goes first.
pub enum Start {
    /// Ring every registered phone of the target extension.
    Ring(Vec<Binding>),
    /// Answer it with an IVR flow.
    Flow { flows: Arc<FlowSet>, name: String },
    /// Answer, play one prompt (a feature code's verdict), hang up.
    Announce {
        prompt: String,
        /// Why the request was refused, for the record.
        refused: Option<String>,
    },
    /// A supervisor joins the call `agent` is talking on.
    Supervise { agent: String, mode: Mode },
}

/// Our SIP Contact per transport.
#[derive(Debug, Clone, Default)]
pub struct Contacts {
    pub udp: String,
    pub tcp: String,
    pub tls: String,
}

impl Contacts {
    pub fn get(&self, transport: Transport) -> String {
        match transport {
            Transport::Udp => self.udp.clone(),
            Transport::Tcp => self.tcp.clone(),
            Transport::Tls => self.tls.clone(),
        }
    }
}

/// What the core needs to begin: the caller's INVITE and its server transaction, the
/// record the switch started, the two legs' port numbers and the configuration.
pub struct Setup {
    pub config: Arc<Config>,
    pub contacts: Contacts,
    /// Whether an ACD takes queue steps.
    pub acd: bool,
    pub ids: TxIds,
    pub invite_tx: TxId,
    pub invite: Request,
    pub from: Peer,
    pub record: CallRecord,
    pub offer: Offer,
    pub a_port: u16,
    pub b_port: u16,
    /// Where the call goes first (`ring`, `flow`, `feature`, `supervise`), for
    /// `call.arrived`.
    pub route: &'static str,
}

/// The caller's SDP offer, read and checked against its encryption policy.
pub struct Offer {
    pub sd: rtc_sdp::SessionDescription,
    pub info: SdpInfo,
    pub crypto: Option<sdp::LegCrypto>,
}

impl Offer {
    /// Reads the INVITE's offer; the reason it is refused (488) otherwise.
    pub fn read(config: &Config, invite: &Request, rec: &CallRecord) -> Result<Offer, String> {
        if invite.body.is_empty() {
            return Err("the INVITE has no SDP offer (late offer is not supported)".into());
        }
        let (sd, info) = sdp::parse(&invite.body).map_err(|e| e.to_string())?;
        let policy = encryption::caller_policy(config, rec);
        let crypto = encryption::caller_crypto(policy, &info)?;
        Ok(Offer { sd, info, crypto })
    }
}

pub(crate) struct Fork {
    pub(crate) tx: TxId,
    pub(crate) invite: Request,
    pub(crate) peer: Peer,
    pub(crate) final_code: Option<u16>,
    /// The ACD agent this phone belongs to, for queue offers.
    pub(crate) agent: Option<String>,
    /// The SRTP keys offered to it.
    pub(crate) crypto: Option<sdp::LegCrypto>,
}

/// A request from one leg waiting for the other leg's answer.
pub(crate) struct Relayed {
    from: Side,
    server_tx: TxId,
    method: Method,
    req: Request,
    /// CSeq of the request sent on the other leg (its ACK reuses it for an INVITE).
    cseq: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Switchboard answered the caller; the IVR flow runs (or the caller waits in a queue).
    Ivr,
    /// The callee's phones ring (the caller is waiting, or already answered by the IVR).
    Ringing,
    /// The two legs are bridged.
    Answered,
    /// Switchboard answered to play one prompt, then hangs up.
    Announcing,
    /// A supervisor's call, joined to an agent's bridge.
    Supervising,
}

pub struct CallCore {
    config: Arc<Config>,
    contacts: Contacts,
    has_acd: bool,
    ids: TxIds,
    now: Now,
    out: VecDeque<Command>,
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
    /// The IVR answered the caller: A's dialog exists before any fork answers.
    a_answered: bool,
    forks: Vec<Fork>,
    b_dialog: Option<Dialog>,
    /// Where the callee's SDP answer says to send its media.
    b_remote: Option<std::net::SocketAddr>,
    /// The codec the caller was answered with when Switchboard answered it itself.
    a_codec: Option<Codec>,
    /// Where the caller's media is.
    media: media_plan::MediaPlan,
    phase: Phase,
    relayed: HashMap<TxId, Relayed>,
    /// When the ringing phones give up (no answer).
    ring_deadline: Option<Instant>,
    /// The agent whose phones `start_fork` is ringing now (queue offers).
    ringing_agent: Option<String>,
    /// The flow, while the caller has one.
    ivr: Option<ivr_leg::IvrLeg>,
    /// While the caller is in an ACD queue (waiting, ringing an agent, or connected).
    queue: Option<queue_session::Queued>,
    /// ACKs sent for 2xx answers to re-originated re-INVITEs, by transaction, so a
    /// retransmitted 2xx is acknowledged again.
    reinvite_acks: HashMap<TxId, (Request, Peer)>,
    /// What the callee's answer negotiated.
    b_format: Option<LegFormat>,
    recording: recording_policy::Recording,
    /// An agent (or the API) sent the caller into a queue after a conversation.
    transferred_to_queue: bool,
    /// The extension talking on leg B, as the switch knows it (for supervisors).
    talking: Option<String>,
    callback: callback::Callback,
    timer: session_timer::Timer,
    /// The callee leg's SRTP as last handed to its ports (None: never yet).
    b_srtp_applied: Option<Option<sdp::LegCrypto>>,
    /// A prompt-then-hang-up call's or a supervisor's call's state.
    supervision: supervision::Supervision,
    /// The call is ending: the media is being finished for the record.
    ending: Option<End>,
    done: bool,
}

impl CallCore {
    /// The call, answered nothing yet: `call.arrived` is published.
    pub fn new(now: Now, s: Setup) -> CallCore {
        let a_contact = s.contacts.get(s.from.transport);
        let session = crate::sip::session_timer::negotiate(&s.invite, s.config.session_min_se)
            .ok()
            .flatten();
        let mut core = CallCore {
            config: s.config,
            contacts: s.contacts,
            has_acd: s.acd,
            ids: s.ids,
            now,
            out: VecDeque::new(),
            rec: s.record,
            a_tx: s.invite_tx,
            a_invite: s.invite,
            a_peer: s.from,
            a_tag: message::new_tag(),
            a_contact,
            a_offer: s.offer.info,
            a_offer_sd: s.offer.sd,
            a_dialog: None,
            a_sdp: LegSdp::with_crypto(s.offer.crypto),
            b_sdp: LegSdp::new(),
            a_port: s.a_port,
            b_port: s.b_port,
            a_answered: false,
            forks: Vec::new(),
            b_dialog: None,
            b_remote: None,
            a_codec: None,
            media: Default::default(),
            phase: Phase::Ringing,
            relayed: HashMap::new(),
            ring_deadline: None,
            ringing_agent: None,
            ivr: None,
            queue: None,
            reinvite_acks: HashMap::new(),
            b_format: None,
            recording: Default::default(),
            transferred_to_queue: false,
            talking: None,
            callback: Default::default(),
            timer: session_timer::Timer::new(session),
            b_srtp_applied: None,
            supervision: Default::default(),
            ending: None,
            done: false,
        };
        core.publish(NewEvent::new("call.arrived").data(serde_json::json!({
            "caller": core.rec.from_user,
            "dialed": core.rec.dialed,
            "sip_call_id": core.rec.a_call_id,
            "from_uri": core.rec.from_uri,
            "to_uri": core.rec.to_uri,
            "did": core.rec.did,
            "source_kind": core.rec.source_kind,
            "trunk": core.rec.trunk,
            "target": core.rec.target,
            "route": s.route,
        })));
        core
    }

    /// Where the call goes first.
    pub fn start(&mut self, now: Now, start: Start) {
        self.now = now;
        let end = match start {
            Start::Ring(targets) => {
                self.start_bridge(false);
                self.ring(&targets);
                None
            }
            Start::Flow { flows, name } => self.answer_with_ivr(flows, &name),
            Start::Announce { prompt, refused } => {
                if let Some(why) = refused {
                    self.rec.reason = Some(why);
                }
                self.announce_then_hang_up(&prompt)
            }
            Start::Supervise { agent, mode } => self.join_as_supervisor(agent, mode),
        };
        self.settle(end);
    }

    /// Feeds one input.
    pub fn handle(&mut self, now: Now, input: Input) {
        self.now = now;
        if self.done {
            return;
        }
        if self.ending.is_some() {
            // Only what the end waits for counts now.
            match input {
                Input::MediaStats(stats) => record_builder::add_rtp_counts(&mut self.rec, &stats),
                Input::RecordingFinished(outcome) => self.on_recording_finished(outcome),
                Input::Finished { stats, ivr } => self.write_record(stats, ivr),
                // Nothing answers these any more: no transaction is left open.
                Input::Request { tx, req } => {
                    let code = if req.method == Method::Bye { 200 } else { 481 };
                    self.respond(tx, message::response_to(&req, code, None));
                }
                Input::Api { token, .. }
                | Input::Phones {
                    purpose: Lookup::ApiTransfer { token, .. },
                    ..
                } => self.reply_api(token, Err("the call has ended".into())),
                Input::Phones {
                    purpose: Lookup::Refer { tx, req, .. },
                    ..
                } => self.respond(tx, message::response_to(&req, 481, None)),
                _ => {}
            }
            return;
        }
        let end = match input {
            Input::SwitchGone => Some(End::failed(500, "switch stopped")),
            Input::Request { tx, req } => self.on_request(tx, *req),
            Input::Response { tx, resp } => self.on_response(tx, *resp),
            Input::Timeout { tx } => self.on_timeout(tx),
            Input::Cancelled { tx } => self.on_cancelled(tx),
            Input::AckTimeout { tx } if tx == self.a_tx => {
                self.hangup_both(None);
                Some(End::switchboard(
                    Disposition::Failed,
                    "the caller never acknowledged the answer",
                ))
            }
            Input::AckTimeout { .. } => None,
            Input::Shutdown => self.on_shutdown(),
            Input::Api { cmd, by, token } => {
                let (answer, end) = self.on_api(cmd, &by, token);
                if let Some(answer) = answer {
                    self.reply_api(token, answer);
                }
                end
            }
            Input::Phones { purpose, phones } => self.on_phones(purpose, phones),
            Input::Acd(msg) => self.on_acd(msg),
            Input::Relay(ev) => self.on_relay_event(ev),
            Input::IvrEvent {
                event,
                media_timed_out,
            } => self.on_ivr_input(event, media_timed_out),
            Input::IvrSteps(report) => self.on_ivr_report(report),
            Input::IvrFailed(why) => {
                self.hangup_both(Some(Side::A));
                Some(End {
                    by: HangupBy::Switchboard,
                    disposition: Disposition::Failed,
                    code: 200,
                    reason: Some(why),
                })
            }
            Input::NoticeLength(heard) => {
                self.callback.notice_heard(self.now.at + heard);
                None
            }
            Input::MediaStats(stats) => {
                record_builder::add_rtp_counts(&mut self.rec, &stats);
                None
            }
            Input::MediaLost(why) => self.on_media_lost(why),
            Input::RecordingFinished(outcome) => {
                self.on_recording_finished(outcome);
                None
            }
            Input::AnnouncementDone => self.announcement_done(),
            Input::SupervisorJoined => {
                self.supervisor_joined();
                None
            }
            Input::SupervisorNoCall => self.supervisor_no_call(),
            Input::SupervisedCallEnded => self.supervised_call_ended(),
            // Only the end asks for these.
            Input::Finished { .. } => None,
        };
        self.settle(end);
    }

    /// The earliest time [`Self::handle_timeout`] must run.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.ending.is_some() || self.done {
            return None;
        }
        [
            self.ring_deadline,
            self.callback.bye_at(),
            self.timer.due_at(),
            self.supervision.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs the timers due at `now`.
    pub fn handle_timeout(&mut self, now: Now) {
        self.now = now;
        if self.ending.is_some() || self.done {
            return;
        }
        let mut end = None;
        if self.ring_deadline.is_some_and(|at| at <= now.at) {
            self.ring_deadline = None;
            if self.phase == Phase::Ringing {
                end = Some(self.give_up(480, Disposition::NoAnswer, "no answer"));
            }
        }
        if end.is_none() && self.callback.bye_at().is_some_and(|at| at <= now.at) {
            end = self.leave_for_callback();
        }
        if end.is_none() && self.timer.due_at().is_some_and(|at| at <= now.at) {
            end = self.on_session_timer();
        }
        if end.is_none() && self.supervision.deadline().is_some_and(|at| at <= now.at) {
            end = self.announcement_done();
        }
        self.settle(end);
    }

    /// The next command for the call task.
    pub fn poll_command(&mut self) -> Option<Command> {
        let next = self.out.pop_front();
        if next.is_none() && self.out.capacity() > 0 {
            // Emptied: a waiting call keeps no room for the last burst of commands.
            self.out = VecDeque::new();
        }
        next
    }

    /// Whether the call is over (its record submitted).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Whether a supervisor may join this call's bridge now.
    pub fn takes_supervisor(&self) -> bool {
        self.phase == Phase::Answered && self.b_format.is_some() && self.media.bridged()
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn record(&self) -> &CallRecord {
        &self.rec
    }

    /// An input's end, if it ended the call: the end begins.
    fn settle(&mut self, end: Option<End>) {
        if let Some(end) = end {
            self.begin_end(end);
        }
    }

    // --- Commands ---

    fn push(&mut self, c: Command) {
        self.out.push_back(c);
    }

    /// Starts a client transaction; its id at once.
    fn send(&mut self, req: Request, to: Peer) -> TxId {
        let tx = self.ids.next();
        self.push(Command::Send { tx, req, to });
        tx
    }

    fn respond(&mut self, tx: TxId, resp: Response) {
        self.push(Command::Respond { tx, resp });
    }

    fn ack(&mut self, req: Request, to: Peer) {
        self.push(Command::Ack { req, to });
    }

    fn cancel(&mut self, tx: TxId) {
        self.push(Command::Cancel { tx });
    }

    fn media(&mut self, m: MediaCmd) {
        self.push(Command::Media(m));
    }

    fn ivr_cmd(&mut self, c: IvrCmd) {
        self.push(Command::Ivr(c));
    }

    fn acd(&mut self, c: AcdCmd) {
        self.push(Command::Acd(c));
    }

    fn reply_api(&mut self, token: u64, answer: Result<String, String>) {
        self.push(Command::ApiReply { token, answer });
    }

    /// Hands an event about this call to the event log.
    fn publish(&mut self, e: NewEvent) {
        let e = e.call(&self.rec.call_uuid);
        self.push(Command::Publish(e));
    }

    fn advertise(&self) -> std::net::IpAddr {
        self.config.advertise
    }

    fn on_timeout(&mut self, tx: TxId) -> Option<End> {
        if self.timer.is_refresh(tx) {
            return self.on_refresh_answer(408);
        }
        if self.callback.is_dial(tx) {
            return self.callback_failed(408);
        }
        if let Some(r) = self.relayed.remove(&tx) {
            // The other leg never answered the re-originated request.
            self.respond(r.server_tx, message::response_to(&r.req, 408, None));
            return None;
        }
        self.on_fork_final(tx, 408)
    }

    fn on_cancelled(&mut self, tx: TxId) -> Option<End> {
        if tx != self.a_tx || self.a_answered {
            return None;
        }
        self.cancel_forks(None);
        // The CANCEL can overtake our 200: the caller got 487, so the callee who
        // already answered must be hung up too.
        if self.phase == Phase::Answered {
            self.hangup_both(Some(Side::B));
        }
        Some(End {
            by: HangupBy::Caller,
            disposition: Disposition::Abandoned,
            code: 487,
            reason: Some("caller cancelled".into()),
        })
    }

    fn on_shutdown(&mut self) -> Option<End> {
        match self.phase {
            Phase::Ringing => Some(self.give_up(503, Disposition::Failed, "server shutting down")),
            Phase::Supervising | Phase::Announcing => Some(self.supervision_over(None)),
            _ => {
                self.hangup_both(None);
                Some(End::switchboard(
                    Disposition::Answered,
                    "server shutting down",
                ))
            }
        }
    }

    /// The caller's media could not go where the call sent it: the call cannot go on
    /// with a mute caller.
    fn on_media_lost(&mut self, why: String) -> Option<End> {
        warn!(%why, "the caller's media is lost; hanging up");
        self.cancel_forks(None);
        if self.a_dialog.is_none() && !self.a_answered {
            self.respond_a(500, None);
            return Some(End::failed(500, &why));
        }
        self.hangup_both(None);
        Some(End::switchboard(Disposition::Answered, &why))
    }

    /// The answer to an extension lookup.
    fn on_phones(&mut self, purpose: Lookup, phones: Vec<Binding>) -> Option<End> {
        match purpose {
            Lookup::Offer { agent } => self.offer_to(agent, phones),
            Lookup::ApiTransfer { token, extension } => {
                // The call may have moved on while the switch answered.
                if !self.talking_to_agent() {
                    self.reply_api(
                        token,
                        Err("only a call connected to an agent can be transferred".into()),
                    );
                    return None;
                }
                if phones.is_empty() {
                    self.reply_api(
                        token,
                        Err(format!("extension {extension} has no registered phone")),
                    );
                    return None;
                }
                self.reply_api(token, Ok(format!("transferred to {extension}")));
                self.transfer_to(extension, phones)
            }
            Lookup::Refer { tx, req, target } => self.refer_to(tx, &req, target, phones),
            Lookup::FlowTransfer { extension } => self.flow_transfer_to(extension, phones),
        }
    }
}

fn other(side: Side) -> Side {
    match side {
        Side::A => Side::B,
        Side::B => Side::A,
    }
}
