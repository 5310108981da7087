//! Calls: the switch that owns the SIP transaction layer and dispatches to calls, and the
//! per-call B2BUA task that owns one call from arrival to its record.
//!
//! Follow one call: `sip::transport` → [`switch`] (admission, registrar, dispatch by
//! transaction and Call-ID) → [`task`] (the call's task: its media, flow session and
//! ACD channel) running a [`core`] (the call's logic, sans-IO: two dialogs, the media
//! plan, the record) → `store`.

pub mod acd;
pub mod core;
pub mod ivr;
pub mod supervisor_call;
pub mod switch;
pub mod task;

use std::net::SocketAddr;
use std::sync::Arc;

use rsip::{Request, Response, SipMessage};
use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, Transport};
use crate::events::NewEvent;
use crate::ivr::reload::FlowsHandle;
use crate::ivr::FlowSet;
use crate::media::mixer::Mode;
use crate::media::ports::PortPool;
use crate::media::prompt::PromptCache;
use crate::media::relay::{RelayHandle, SupervisorLeg};
use crate::sip::message::host_str;
use crate::sip::registrar::Binding;
use crate::sip::transaction::{Peer, TxId, TxIds};
use crate::store::{CallRecord, Disposition, HangupBy, Store};

/// What every call needs from the server, shared read-only.
pub struct Shared {
    pub config: Arc<Config>,
    pub ports: Arc<PortPool>,
    pub store: Store,
    /// Writes call records off the call path and announces their end (`call.ended`).
    pub records: crate::store::record_writer::RecordWriter,
    /// The IVR flows in force (hot-reloaded), if the server has any.
    pub flows: Option<FlowsHandle>,
    /// Decoded prompts, shared by every call.
    pub prompts: Arc<PromptCache>,
    /// Writes every call recording and voicemail message off the media tasks.
    pub recordings: crate::media::recorder::RecordingWriter,
    /// For the IVR's web requests.
    pub http: reqwest::Client,
    /// The ACD, when queues are configured.
    pub acd: Option<acd::AcdHandle>,
    /// The ordered event log every call reports to.
    pub events: crate::events::EventLog,
    /// Our address per transport, for Contact headers.
    pub local: Vec<(Transport, SocketAddr)>,
    /// SIP responses sent, by code (for `/metrics`).
    pub sip_stats: Arc<crate::sip::stats::SipStats>,
}

impl Shared {
    pub fn contact(&self, transport: Transport) -> String {
        let addr = self
            .local
            .iter()
            .find(|(t, _)| *t == transport)
            .or(self.local.first())
            .map(|(_, a)| *a)
            .unwrap_or_else(|| "127.0.0.1:5060".parse().expect("literal"));
        let tp = match transport {
            Transport::Udp => "",
            Transport::Tcp => ";transport=tcp",
            Transport::Tls => ";transport=tls",
        };
        format!(
            "sip:switchboard@{}:{}{tp}",
            host_str(self.config.advertise),
            addr.port()
        )
    }
}

/// What the switch hands a new call's task.
pub struct CallSetup {
    pub key: CallKey,
    pub shared: Arc<Shared>,
    pub switch: SwitchHandle,
    pub events: mpsc::UnboundedReceiver<CallEvent>,
    pub invite_tx: TxId,
    pub invite: Request,
    pub from: Peer,
    pub route: Route,
    pub record: CallRecord,
}

/// Where an admitted call goes first.
pub enum Route {
    /// Ring every registered phone of the target extension.
    Ring(Vec<Binding>),
    /// Answer it with an IVR flow (the set in force when the call arrived).
    Flow { flows: Arc<FlowSet>, name: String },
    /// An agent's feature code, sent to the ACD: answer, say how it went, hang up.
    Feature(FeatureCall),
    /// A supervisor joins the call `agent` is talking on (`*1`/`*2`/`*3` + extension).
    Supervise { agent: String, mode: Mode },
}

/// A feature code on its way through the ACD, and the prompts for either verdict.
pub struct FeatureCall {
    pub done: String,
    pub refused: String,
    /// The router's verdict (None without an ACD: refused).
    pub verdict: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
}

/// `host:port` of an address for a SIP URI (IPv6 in its internal host form).
pub fn host_port(addr: std::net::SocketAddr) -> String {
    format!(
        "{}:{}",
        crate::sip::message::host_str(addr.ip()),
        addr.port()
    )
}

/// `number` at a trunk's address for outgoing calls, as a phone to ring.
pub fn trunk_binding(number: &str, addr: std::net::SocketAddr) -> crate::sip::registrar::Binding {
    let peer = crate::sip::transaction::Peer {
        transport: crate::config::Transport::Udp,
        addr,
    };
    crate::sip::registrar::Binding {
        contact: format!("sip:{number}@{}", host_port(addr)),
        source: peer,
        target: peer,
        expires_at: std::time::Instant::now(),
        call_id: String::new(),
        cseq: 0,
        path: Vec::new(),
        flow: None,
    }
}

/// A random id for a call (UUID v4 layout, without pulling in a crate for it).
pub fn uuid_like() -> String {
    let mut b = [0u8; 16];
    rand::Rng::fill(&mut rand::thread_rng(), &mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// Sleeps until `at`, or forever when there is no deadline: the timer arm of the
/// call, switch, IVR and ACD tasks' `select!`, whose next deadline may be none.
pub(crate) async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Identifies a call inside this process.
pub type CallKey = u64;

/// What the switch tells a call. Messages and supervisor legs are boxed: every call's
/// channel allocates its first block of 32 events when it is made, so the size of an
/// event is paid 32 times per call (8 KiB of each call while they were inline).
#[derive(Debug)]
pub enum CallEvent {
    /// A request inside one of the call's dialogs (BYE, re-INVITE, INFO…).
    Request {
        tx: TxId,
        req: Box<Request>,
        from: Peer,
    },
    /// The ACK to a 2xx the call sent.
    Ack {
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
    /// A control-plane request (`by` names who asked, for the record); the reply says
    /// what was done, or why not.
    Api {
        cmd: ApiCommand,
        by: String,
        reply: oneshot::Sender<Result<String, String>>,
    },
    /// A supervisor asks to join this call's media (the call's agent is the one asked for).
    Supervise {
        leg: Box<SupervisorLeg>,
        reply: oneshot::Sender<Result<RelayHandle, SupervisorLeg>>,
    },
}

/// What the control plane may ask of a live call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiCommand {
    HangUp,
    /// Start, pause, resume or stop the conversation's recording.
    Recording(RecordingAction),
    /// Blind transfer of the caller to another extension (the agent leaves).
    Transfer {
        extension: String,
    },
    /// Blind transfer of the caller into a queue (the agent leaves).
    TransferToQueue {
        queue: String,
    },
    /// The joined supervisor's new mode.
    SupervisorMode(crate::media::mixer::Mode),
    /// Put the caller on hold (music) or take it off, as the agent's phone would.
    Hold(bool),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordingAction {
    Start,
    Pause,
    Resume,
    Stop,
}

/// What a call asks of the switch.
#[derive(Debug)]
pub enum SwitchCmd {
    /// Draining behind a balancer: answer OPTIONS with 503 from now on.
    RefuseOptions,
    /// Starts a client transaction under the id the call gave it.
    Send {
        call: CallKey,
        tx: TxId,
        req: Request,
        to: Peer,
    },
    Respond {
        tx: TxId,
        resp: Response,
    },
    /// A request outside any transaction (the ACK to a 2xx): gets a Via and is sent.
    SendAck {
        req: Request,
        to: Peer,
    },
    Cancel {
        tx: TxId,
    },
    BindCallId {
        call: CallKey,
        call_id: String,
    },
    Ended {
        call: CallKey,
    },
    /// An extension is (`on`) or is no longer talking on this call: whom a
    /// supervisor's `*1<ext>` joins.
    OnCall {
        extension: String,
        call: CallKey,
        on: bool,
    },
    /// A supervisor's leg for the call `extension` is talking on; handed back in the
    /// `Err` when there is none.
    Supervise {
        extension: String,
        leg: SupervisorLeg,
        reply: oneshot::Sender<Result<RelayHandle, SupervisorLeg>>,
    },
    /// A control-plane request for the call with this record id (`None`: no such live
    /// call).
    Api {
        call_uuid: String,
        cmd: ApiCommand,
        by: String,
        reply: oneshot::Sender<Option<Result<String, String>>>,
    },
    /// A call Switchboard places itself (a supervisor's phone rung from the API): its
    /// key and the events the switch routes to it.
    Open {
        call_uuid: String,
        reply: oneshot::Sender<(CallKey, mpsc::UnboundedReceiver<CallEvent>)>,
    },
    /// The registered phones of an extension (an IVR transfer).
    Lookup {
        extension: String,
        reply: oneshot::Sender<Vec<Binding>>,
    },
}

/// A call's way to talk to the switch.
#[derive(Clone)]
pub struct SwitchHandle {
    pub(crate) tx: mpsc::UnboundedSender<SwitchCmd>,
    /// Where calls take their client transactions' ids from.
    pub(crate) ids: TxIds,
}

impl SwitchHandle {
    /// Starts a client transaction: its id at once (a switch that is gone never answers
    /// it, and the call learns of that from its closed event channel).
    pub fn send(&self, call: CallKey, req: Request, to: Peer) -> TxId {
        let tx = self.ids.next();
        self.send_as(call, tx, req, to);
        tx
    }

    /// Starts a client transaction under an id the caller took from [`Self::ids`].
    pub fn send_as(&self, call: CallKey, tx: TxId, req: Request, to: Peer) {
        let _ = self.tx.send(SwitchCmd::Send { call, tx, req, to });
    }

    /// The id source for this switch's client transactions.
    pub fn ids(&self) -> TxIds {
        self.ids.clone()
    }

    pub fn respond(&self, tx: TxId, resp: Response) {
        let _ = self.tx.send(SwitchCmd::Respond { tx, resp });
    }

    pub fn send_ack(&self, req: Request, to: Peer) {
        let _ = self.tx.send(SwitchCmd::SendAck { req, to });
    }

    pub fn cancel(&self, tx: TxId) {
        let _ = self.tx.send(SwitchCmd::Cancel { tx });
    }

    pub fn bind_call_id(&self, call: CallKey, call_id: String) {
        let _ = self.tx.send(SwitchCmd::BindCallId { call, call_id });
    }

    /// The registered phones of `extension` now (empty if none, or the switch is gone).
    pub async fn lookup(&self, extension: &str) -> Vec<Binding> {
        let (reply, rx) = oneshot::channel();
        let cmd = SwitchCmd::Lookup {
            extension: extension.to_string(),
            reply,
        };
        if self.tx.send(cmd).is_err() {
            return Vec::new();
        }
        rx.await.unwrap_or_default()
    }

    pub fn on_call(&self, extension: &str, call: CallKey, on: bool) {
        let _ = self.tx.send(SwitchCmd::OnCall {
            extension: extension.to_string(),
            call,
            on,
        });
    }

    /// Joins `leg` to the media of the call `extension` is talking on: the call's relay,
    /// or the leg back when the extension is on no call.
    pub async fn supervise(
        &self,
        extension: &str,
        leg: SupervisorLeg,
    ) -> Result<RelayHandle, Option<SupervisorLeg>> {
        let (reply, rx) = oneshot::channel();
        let cmd = SwitchCmd::Supervise {
            extension: extension.to_string(),
            leg,
            reply,
        };
        if let Err(mpsc::error::SendError(cmd)) = self.tx.send(cmd) {
            let SwitchCmd::Supervise { leg, .. } = cmd else {
                unreachable!()
            };
            return Err(Some(leg));
        }
        match rx.await {
            Ok(Ok(relay)) => Ok(relay),
            Ok(Err(leg)) => Err(Some(leg)),
            Err(_) => Err(None),
        }
    }

    /// Hands a control-plane request to the live call with this record id: None if
    /// there is no such call, else what it did or why not.
    pub async fn call_command(
        &self,
        call_uuid: &str,
        cmd: ApiCommand,
        by: &str,
    ) -> Option<Result<String, String>> {
        let (reply, rx) = oneshot::channel();
        let cmd = SwitchCmd::Api {
            call_uuid: call_uuid.to_string(),
            cmd,
            by: by.to_string(),
            reply,
        };
        self.tx.send(cmd).ok()?;
        rx.await.ok().flatten()
    }

    /// Registers a call Switchboard places itself; None if the switch is gone.
    pub async fn open(
        &self,
        call_uuid: &str,
    ) -> Option<(CallKey, mpsc::UnboundedReceiver<CallEvent>)> {
        let (reply, rx) = oneshot::channel();
        let cmd = SwitchCmd::Open {
            call_uuid: call_uuid.to_string(),
            reply,
        };
        self.tx.send(cmd).ok()?;
        rx.await.ok()
    }

    pub fn ended(&self, call: CallKey) {
        let _ = self.tx.send(SwitchCmd::Ended { call });
    }

    /// Out of the balancer's set: OPTIONS are answered 503 from now on.
    pub fn refuse_options(&self) {
        let _ = self.tx.send(SwitchCmd::RefuseOptions);
    }
}

/// Plain helper shared by the switch and calls: the request as a message, for accessors.
pub(crate) fn as_msg(req: &Request) -> SipMessage {
    SipMessage::Request(req.clone())
}

/// `call.ended` (and the survey's answers, when the caller gave some).
pub fn publish_end(events: &crate::events::EventLog, rec: &CallRecord) {
    if rec.csat.is_some() || rec.resolved.is_some() {
        events.publish(
            NewEvent::new("call.survey")
                .call(&rec.call_uuid)
                .queue(rec.queue.as_deref())
                .agent(rec.target.as_deref())
                .data(serde_json::json!({ "csat": rec.csat, "resolved": rec.resolved })),
        );
    }
    events.publish(end_event(rec));
}

/// `call.ended` for a call a crash cut short: its record was built at the next start, and
/// it ended (as far as anyone knows) at `ended_ms`, before the event was logged.
pub fn publish_interrupted_end(events: &crate::events::EventLog, rec: &CallRecord) {
    let mut e = end_event(rec);
    if let Some(data) = e.data.as_object_mut() {
        data.insert("interrupted".into(), true.into());
        data.insert("ended_ms".into(), rec.ended_ms.into());
    }
    events.publish(e);
}

fn end_event(rec: &CallRecord) -> NewEvent {
    NewEvent::new("call.ended")
        .call(&rec.call_uuid)
        .queue(rec.queue.as_deref())
        .agent(rec.target.as_deref())
        .data(serde_json::json!({
            "disposition": rec.disposition.map(Disposition::as_str),
            "hangup_by": rec.hangup_by.map(HangupBy::as_str),
            "reason": rec.reason,
            "final_code": rec.final_code,
            "caller": rec.from_user,
            "recording": rec.recording,
            "voicemail": rec.voicemail,
            "rtp_lost": { "caller": rec.a_rtp_lost, "agent": rec.b_rtp_lost },
        }))
}
