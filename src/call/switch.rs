//! The switch: the one task that owns the transaction layer, the registrar, the TCP
//! connection table and the table of live calls.
//!
//! It answers what needs no call (REGISTER, OPTIONS, 400s, 403s, 404s), decides admission
//! for new INVITEs (a configured user must authenticate; otherwise the source must be a
//! trunk peer), and hands everything else to the call task that owns the dialog. It never
//! waits on a call: calls talk to it through an unbounded command channel.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::prelude::HeadersExt;
use rsip::{Header, Method, Request, SipMessage};
use tokio::sync::{mpsc, watch};
use tracing::{debug, info, warn};

use super::task;
use super::uuid_like;
use super::{as_msg, sleep_until_opt, CallEvent, CallKey, CallSetup, FeatureCall, Route};
use super::{Shared, SwitchCmd, SwitchHandle};
use crate::cluster::SharedBinding;
use crate::config::{Config, DidTarget, Transport};
use crate::ivr::reload::FlowsHandle;
use crate::media::ports::PortPool;
use crate::media::prompt::PromptCache;
use crate::sip::auth::{self, AuthResult, Authenticator};
use crate::sip::auth_guard::AuthGuard;
use crate::sip::limits::{Admit, Limits, Overload};
use crate::sip::message;
use crate::sip::registrar::{Binding, ContactRequest, RegisterError, Registrar};
use crate::sip::transaction::{LocalAddr, Output, Peer, Timers, TransactionLayer, TxEvent, TxId};
use crate::sip::transport::{self, Inbound, Transports};
use crate::store::{now_ms, CallRecord, Disposition, Store};

/// Decodes the prompt directory ahead of calls, at start and after every flow reload
/// (which is when prompts change), so no call decodes a prompt on its media path.
fn preload_prompts(shared: &Arc<Shared>) {
    use crate::media::mixer::SampleRate;
    let warm = |shared: &Arc<Shared>| {
        let (prompts, root) = (shared.prompts.clone(), shared.config.ivr_prompts.clone());
        tokio::task::spawn_blocking(move || {
            let held = prompts.warm(&root, &[SampleRate::Narrowband, SampleRate::Wideband]);
            info!(dir = %root.display(), prompts = held, "prompts decoded");
        })
    };
    let first = warm(shared);
    let Some(mut changes) = shared.flows.as_ref().map(|f| f.subscribe()) else {
        return;
    };
    let shared = Arc::downgrade(shared);
    tokio::spawn(async move {
        let _ = first.await;
        while changes.changed().await.is_ok() {
            let Some(shared) = shared.upgrade() else {
                return;
            };
            let _ = warm(&shared).await;
        }
    });
}

struct LiveCall {
    /// The call's record id.
    uuid: String,
    events: mpsc::UnboundedSender<CallEvent>,
    call_ids: Vec<String>,
    txs: Vec<TxId>,
}

pub struct Switch {
    shared: Arc<Shared>,
    layer: TransactionLayer,
    transports: Transports,
    registrar: Registrar,
    auth: Authenticator,
    /// Password-guessing lock-outs (see `sip::auth_guard`).
    guard: AuthGuard,
    /// Per-source rates, scanner bans and call admission (see `sip::limits`).
    limits: Limits,
    calls: HashMap<CallKey, LiveCall>,
    /// Extension → the call it is talking on (for supervisors).
    on_call: HashMap<String, CallKey>,
    by_call_id: HashMap<String, CallKey>,
    tx_owner: HashMap<TxId, CallKey>,
    next_call: CallKey,
    cmd_tx: mpsc::UnboundedSender<SwitchCmd>,
    /// The ids calls give their client transactions.
    tx_ids: crate::sip::transaction::TxIds,
    draining: bool,
    /// Agents with at least one live registration, to tell the ACD when the last one
    /// goes (unregistered or expired) and when one comes back.
    reachable: std::collections::HashSet<String>,
    /// OPTIONS keep-alives in flight: transaction → (user, contact).
    pings: HashMap<TxId, (String, Binding)>,
    last_ping: Instant,
    /// How long the message being handled waited for the switch (admission: the
    /// switch falling behind).
    queued: Duration,
    /// In a cluster: where this node's registrations are published, and what it hears of
    /// the other nodes' (user → node → phones).
    sharing: Option<crate::cluster::Registrations>,
    shared_in: Option<mpsc::UnboundedReceiver<(String, String, Vec<SharedBinding>)>>,
    remote: HashMap<String, HashMap<String, Vec<SharedBinding>>>,
    /// Draining behind a balancer: OPTIONS get 503, so it takes this node out of its set.
    refuse_options: bool,
}

/// A cluster node's share of registrations (see `cluster`).
pub struct Sharing {
    pub registrations: crate::cluster::Registrations,
    pub inbox: mpsc::UnboundedReceiver<(String, String, Vec<SharedBinding>)>,
    /// The other nodes' registrations when this one starts: (node, user, phones).
    pub known: Vec<(String, String, Vec<SharedBinding>)>,
}

fn unix_secs() -> u64 {
    (now_ms() / 1000) as u64
}

/// Binds the listeners; returns the switch ready to run, and the inbound receiver.
pub async fn start(
    config: Config,
    store: Store,
    flows: Option<FlowsHandle>,
    acd: Option<super::acd::AcdHandle>,
    events: crate::events::EventLog,
    tls: Option<Arc<crate::sip::tls::TlsIdentity>>,
    sharing: Option<Sharing>,
) -> anyhow::Result<(
    Switch,
    mpsc::Receiver<Inbound>,
    mpsc::UnboundedReceiver<SwitchCmd>,
)> {
    let (in_tx, in_rx) = mpsc::channel(4096);
    let bound = transport::bind(&config.listeners, tls, in_tx).await?;
    let advertise = config.advertise;
    let locals: Vec<LocalAddr> = bound
        .local
        .iter()
        .map(|(t, a)| LocalAddr {
            transport: *t,
            advertise: SocketAddr::new(advertise, a.port()),
        })
        .collect();
    let ports = PortPool::new(config.rtp_bind, config.rtp_ports.0, config.rtp_ports.1);
    let layer = TransactionLayer::new(Timers::with_t1(config.t1_ms), locals);
    let auth = Authenticator::new(config.realm.clone())
        .with_algorithms(config.auth_algorithms.clone())
        .with_uri_check(config.auth_check_uri);
    let guard = AuthGuard::new(config.auth_lockout);
    let limits = Limits::new(config.limits, Instant::now());
    let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
    let recordings = crate::media::recorder::RecordingWriter::start(config.recording_buffer)?;
    let records = {
        let events = events.clone();
        crate::store::record_writer::RecordWriter::start(
            store.clone(),
            Box::new(move |rec| super::publish_end(&events, rec)),
            Some(config.data_dir.join(crate::store::record_writer::JOURNAL)),
        )
    };
    let shared = Arc::new(Shared {
        recordings,
        records,
        config: Arc::new(config),
        ports,
        store,
        flows,
        prompts: Arc::new(PromptCache::new()),
        http: reqwest::Client::new(),
        acd,
        events,
        local: bound.local.clone(),
        sip_stats: Default::default(),
    });
    preload_prompts(&shared);
    {
        let stats = Arc::clone(&shared.sip_stats);
        crate::sip::cpu::spawn(move |p| stats.limits.cpu_percent.store(p.into(), Relaxed));
    }
    let (sharing, shared_in, known) = match sharing {
        Some(s) => (Some(s.registrations), Some(s.inbox), s.known),
        None => (None, None, Vec::new()),
    };
    let mut remote: HashMap<String, HashMap<String, Vec<SharedBinding>>> = HashMap::new();
    for (node, user, phones) in known {
        remote.entry(user).or_default().insert(node, phones);
    }
    Ok((
        Switch {
            sharing,
            shared_in,
            remote,
            refuse_options: false,
            shared,
            layer,
            transports: bound.transports,
            registrar: Registrar::new(),
            auth,
            guard,
            limits,
            calls: HashMap::new(),
            on_call: HashMap::new(),
            reachable: Default::default(),
            pings: HashMap::new(),
            last_ping: Instant::now(),
            by_call_id: HashMap::new(),
            tx_owner: HashMap::new(),
            next_call: 1,
            cmd_tx,
            tx_ids: Default::default(),
            draining: false,
            queued: Duration::ZERO,
        },
        in_rx,
        cmd_rx,
    ))
}

impl Switch {
    pub fn local_addrs(&self) -> Vec<(Transport, SocketAddr)> {
        self.shared.local.clone()
    }

    /// Runs until `stop` turns true and every call has ended (or the drain limit passed).
    pub async fn run(
        mut self,
        mut inbound: mpsc::Receiver<Inbound>,
        mut commands: mpsc::UnboundedReceiver<SwitchCmd>,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut drain_deadline: Option<tokio::time::Instant> = None;
        // Registrations expire silently: look for agents whose last one did.
        let mut sweep = tokio::time::interval(Duration::from_secs(5));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown_sent = false;
        let mut shared_in = self.shared_in.take();
        loop {
            self.flush();
            if self.draining && self.calls.is_empty() {
                info!("drained: no calls left");
                break;
            }
            let wake = self
                .layer
                .poll_timeout()
                .map(tokio::time::Instant::from_std);
            tokio::select! {
                Some(msg) = inbound.recv() => self.on_inbound(msg),
                Some(cmd) = commands.recv() => self.on_command(cmd),
                Some((node, user, phones)) = recv_opt(&mut shared_in) => {
                    let of_user = self.remote.entry(user).or_default();
                    if phones.is_empty() {
                        of_user.remove(&node);
                    } else {
                        of_user.insert(node, phones);
                    }
                }
                _ = sleep_until_opt(wake) => self.layer.handle_timeout(Instant::now()),
                _ = sweep.tick() => self.sweep_registrations(),
                changed = stop.changed(), if !self.draining => {
                    if changed.is_err() || *stop.borrow() {
                        let limit = Duration::from_secs(self.shared.config.drain_timeout_secs);
                        info!(calls = self.calls.len(), ?limit, "draining: refusing new calls");
                        self.draining = true;
                        drain_deadline = Some(tokio::time::Instant::now() + limit);
                    }
                }
                _ = sleep_until_opt(drain_deadline), if !shutdown_sent => {
                    warn!(calls = self.calls.len(), "drain time is over: hanging up the remaining calls");
                    for c in self.calls.values() {
                        let _ = c.events.send(CallEvent::Shutdown);
                    }
                    shutdown_sent = true;
                    drain_deadline = Some(tokio::time::Instant::now() + Duration::from_secs(5));
                }
                _ = sleep_until_opt(drain_deadline), if shutdown_sent => {
                    warn!(calls = self.calls.len(), "calls did not end in time; exiting");
                    break;
                }
            }
        }
        self.flush();
        // Every record of the calls that ended is written before the store closes (a
        // store still failing by then leaves them to the next start's repair).
        if !self.shared.records.flush(Duration::from_secs(10)).await {
            warn!("call records still unwritten at exit; the next start marks them interrupted");
        }
    }

    /// Tells the ACD an agent's phone became reachable or unreachable (its first
    /// registration, its last one gone), so no agent is offered calls it cannot ring.
    fn phone_reachability(&mut self, user: &str, registered: bool) {
        let is_agent = self
            .shared
            .config
            .queues
            .iter()
            .any(|q| q.members.iter().any(|m| m == user));
        let Some(acd) = self.shared.acd.as_ref().filter(|_| is_agent) else {
            return;
        };
        let changed = if registered {
            self.reachable.insert(user.to_string())
        } else {
            self.reachable.remove(user)
        };
        if changed {
            let agent = user.to_string();
            let event = if registered {
                crate::acd::Event::PhoneReachable { agent }
            } else {
                info!(agent = %user, "the agent's phone is no longer registered");
                crate::acd::Event::PhoneUnreachable { agent }
            };
            // The verdict is not needed: both requests always succeed for an agent.
            drop(acd.agent_request(event, "registrar"));
        }
    }

    /// The user's phones: those registered here, then those registered on other nodes
    /// of the cluster (a phone registered on both is rung once, as registered here).
    fn bindings_of(&self, user: &str, now: Instant) -> Vec<Binding> {
        let mut list = self.registrar.lookup(user, now);
        let Some(nodes) = self.remote.get(user) else {
            return list;
        };
        let now_ms = now_ms();
        for b in nodes.values().flatten() {
            if b.expires_ms <= now_ms || list.iter().any(|l| l.contact == b.contact) {
                continue;
            }
            let Some(target) = shared_target(&b.target) else {
                continue;
            };
            list.push(Binding {
                contact: b.contact.clone(),
                source: target,
                target,
                expires_at: now + Duration::from_millis((b.expires_ms - now_ms) as u64),
                call_id: String::new(),
                cseq: 0,
                path: b.path.clone(),
                flow: None,
            });
        }
        list
    }

    /// Tells the other nodes this user's phones registered here now.
    fn share(&self, user: &str) {
        let Some(sharing) = &self.sharing else {
            return;
        };
        let now = Instant::now();
        let now_ms = now_ms();
        let phones = self
            .registrar
            .lookup(user, now)
            .into_iter()
            // A phone reached over its own connection (a TCP or TLS flow) can only be
            // reached through this node.
            .filter(|b| b.target.transport == Transport::Udp || !b.path.is_empty())
            .map(|b| SharedBinding {
                contact: b.contact,
                target: format!("{}:{}", b.target.transport, b.target.addr),
                expires_ms: now_ms + b.expires_at.saturating_duration_since(now).as_millis() as i64,
                path: b.path,
            })
            .collect();
        sharing.publish(user, phones);
    }

    fn sweep_registrations(&mut self) {
        let now = Instant::now();
        self.registrar.purge(now);
        let gone: Vec<String> = self
            .reachable
            .iter()
            .filter(|u| self.registrar.lookup(u, now).is_empty())
            .cloned()
            .collect();
        for user in gone {
            self.phone_reachability(&user, false);
        }
        self.keep_alive(now);
    }

    /// Pings every registered phone of an agent with OPTIONS (RFC 3261 §11), as
    /// Asterisk's `qualify` does; the answers and timeouts come back as transaction
    /// events. A phone still being pinged is not pinged again.
    fn keep_alive(&mut self, now: Instant) {
        let Some(every) = self.shared.config.keepalive else {
            return;
        };
        if now.duration_since(self.last_ping) < every {
            return;
        }
        self.last_ping = now;
        let adv = message::host_str(self.shared.config.advertise);
        let users: Vec<String> = self.reachable.iter().cloned().collect();
        for user in users {
            for b in self.registrar.lookup(&user, now) {
                if self
                    .pings
                    .values()
                    .any(|(u, pinged)| *u == user && pinged.same_binding(&b))
                {
                    continue;
                }
                let Ok(uri) = rsip::Uri::try_from(b.contact.as_str()) else {
                    continue;
                };
                let mut headers = rsip::Headers::default();
                headers.push(Header::From(rsip::headers::From::new(format!(
                    "<sip:keepalive@{adv}>;tag={}",
                    message::new_tag()
                ))));
                headers.push(Header::To(rsip::headers::To::new(format!(
                    "<{}>",
                    b.contact
                ))));
                headers.push(Header::CallId(rsip::headers::CallId::new(format!(
                    "{}@switchboard",
                    message::random_token(20)
                ))));
                headers.push(Header::CSeq(rsip::headers::CSeq::new("1 OPTIONS")));
                headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
                for hop in &b.path {
                    headers.push(Header::Route(rsip::headers::Route::new(hop.clone())));
                }
                headers.push(Header::ContentLength(rsip::headers::ContentLength::new(
                    "0",
                )));
                let req = rsip::Request {
                    method: rsip::Method::Options,
                    uri,
                    version: rsip::Version::V2,
                    headers,
                    body: Vec::new(),
                };
                let tx = self.layer.send_request(req, b.target, now);
                self.pings.insert(tx, (user.clone(), b));
            }
        }
    }

    /// What every call shares (the API places supervisor calls with it).
    pub fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    pub fn handle(&self) -> SwitchHandle {
        SwitchHandle {
            tx: self.cmd_tx.clone(),
            ids: self.tx_ids.clone(),
        }
    }

    /// Sends what the transaction layer produced and routes its events.
    fn flush(&mut self) {
        while let Some(out) = self.layer.poll() {
            match out {
                Output::Transmit(t) => {
                    let code = self.shared.sip_stats.transmitted(&t.bytes);
                    if !t.retransmission && matches!(code, Some(401 | 403 | 404 | 407 | 484)) {
                        self.strike(t.to.addr.ip());
                    }
                    self.transports.send(t.to, t.bytes)
                }
                Output::Event(e) => self.on_tx_event(e),
            }
        }
    }

    fn on_inbound(&mut self, msg: Inbound) {
        match msg {
            Inbound::Connected { peer, writer } => self.transports.connected(peer, writer),
            Inbound::Closed { peer } => self.transports.closed(peer),
            Inbound::Message { peer, bytes, .. } if !self.within_limits(peer, &bytes) => {}
            Inbound::Message {
                peer,
                bytes,
                received,
            } => {
                self.queued = received.elapsed();
                match message::parse(&bytes) {
                    Ok(msg) => self.layer.handle_message(msg, peer, Instant::now()),
                    Err(e) => self.reject_malformed(peer, &bytes, e),
                }
            }
        }
    }

    /// Whether a datagram or stream message from `peer` is read at all: a request from an
    /// address that is not a trunk peer must be within its rate and not from a scanner.
    fn within_limits(&mut self, peer: Peer, bytes: &[u8]) -> bool {
        let ip = peer.addr.ip();
        if !message::is_request_line(bytes) || self.shared.config.trunk_for(ip).is_some() {
            return true;
        }
        let counts = &self.shared.sip_stats.limits;
        match self.limits.admit_request(ip, Instant::now()) {
            Admit::Pass => true,
            Admit::OverRate => {
                crate::sip::stats::bump(&counts.dropped_rate);
                debug!(%ip, "request over the address's rate: dropped");
                false
            }
            Admit::Banned => {
                crate::sip::stats::bump(&counts.dropped_banned);
                false
            }
        }
    }

    /// A refusal went to `ip`: a step towards ignoring it, unless it is a trunk peer.
    fn strike(&mut self, ip: std::net::IpAddr) {
        if self.shared.config.trunk_for(ip).is_some() {
            return;
        }
        let now = Instant::now();
        let counts = &self.shared.sip_stats.limits;
        if let Some(ban) = self.limits.strike(ip, now) {
            crate::sip::stats::bump(&counts.bans);
            warn!(
                %ip,
                refusals = ban.strikes,
                secs = self.limits.config().scan_ban.as_secs(),
                "ignoring an address that keeps being refused (a scanner?)"
            );
        }
        counts.banned_now.store(
            self.limits.banned(now) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// A 400 where a response is possible (a request line and a usable Via), else a log line.
    fn reject_malformed(&mut self, peer: Peer, bytes: &[u8], e: message::ParseError) {
        warn!(from = %peer.addr, error = %e, "malformed SIP message");
        if !message::is_request_line(bytes) {
            return;
        }
        let Some((req, resp)) = message::bad_request_response(bytes, &e) else {
            return;
        };
        let to = message::response_target(&req, peer.addr);
        self.layer.send_stateless(
            SipMessage::Response(resp),
            Peer {
                transport: peer.transport,
                addr: if peer.transport.is_stream() {
                    peer.addr
                } else {
                    to
                },
            },
        );
    }

    fn on_command(&mut self, cmd: SwitchCmd) {
        let now = Instant::now();
        match cmd {
            SwitchCmd::RefuseOptions => self.refuse_options = true,
            SwitchCmd::Send { call, tx, req, to } => {
                self.layer.send_request_as(tx, req, to, now);
                self.own_tx(call, tx);
            }
            SwitchCmd::Respond { tx, resp } => self.layer.respond(tx, resp, now),
            SwitchCmd::SendAck { mut req, to } => {
                self.layer.add_via(&mut req, to.transport);
                self.layer.send_stateless(SipMessage::Request(req), to);
            }
            // The CANCEL's own 200 concerns nobody; the INVITE's 487 reaches the call.
            SwitchCmd::Cancel { tx } => self.layer.cancel(tx, now),
            SwitchCmd::BindCallId { call, call_id } => {
                if let Some(c) = self.calls.get_mut(&call) {
                    c.call_ids.push(call_id.clone());
                    self.by_call_id.insert(call_id, call);
                }
            }
            SwitchCmd::OnCall {
                extension,
                call,
                on,
            } => {
                if on {
                    self.on_call.insert(extension, call);
                } else if self.on_call.get(&extension) == Some(&call) {
                    self.on_call.remove(&extension);
                }
            }
            SwitchCmd::Supervise {
                extension,
                leg,
                reply,
            } => {
                let live = self
                    .on_call
                    .get(&extension)
                    .and_then(|key| self.calls.get(key));
                match live {
                    Some(c) => {
                        // The call answers (or its dropped reply says it is gone).
                        let leg = Box::new(leg);
                        if let Err(mpsc::error::SendError(CallEvent::Supervise { leg, reply })) =
                            c.events.send(CallEvent::Supervise { leg, reply })
                        {
                            let _ = reply.send(Err(*leg));
                        }
                    }
                    None => {
                        let _ = reply.send(Err(leg));
                    }
                }
            }
            SwitchCmd::Open { call_uuid, reply } => {
                let _ = reply.send(self.new_call(call_uuid, Vec::new(), Vec::new()));
            }
            SwitchCmd::Lookup { extension, reply } => {
                let _ = reply.send(self.bindings_of(&extension, now));
            }
            SwitchCmd::Api {
                call_uuid,
                cmd,
                by,
                reply,
            } => {
                let Some(call) = self.calls.values().find(|c| c.uuid == call_uuid) else {
                    let _ = reply.send(None);
                    return;
                };
                // The call answers; the switch does not wait for it.
                let (tx, rx) = tokio::sync::oneshot::channel();
                if call
                    .events
                    .send(CallEvent::Api { cmd, by, reply: tx })
                    .is_err()
                {
                    let _ = reply.send(None);
                    return;
                }
                tokio::spawn(async move {
                    let _ = reply.send(rx.await.ok());
                });
            }
            SwitchCmd::Ended { call } => {
                self.on_call.retain(|_, c| *c != call);
                if let Some(c) = self.calls.remove(&call) {
                    for id in c.call_ids {
                        self.by_call_id.remove(&id);
                    }
                    for tx in c.txs {
                        self.tx_owner.remove(&tx);
                    }
                }
            }
        }
    }

    fn own_tx(&mut self, call: CallKey, tx: TxId) {
        if let Some(c) = self.calls.get_mut(&call) {
            c.txs.push(tx);
            self.tx_owner.insert(tx, call);
        }
    }

    fn send_to_call(&mut self, call: CallKey, ev: CallEvent) -> bool {
        match self.calls.get(&call) {
            Some(c) => c.events.send(ev).is_ok(),
            None => false,
        }
    }

    fn on_tx_event(&mut self, e: TxEvent) {
        match e {
            TxEvent::Request { tx, req, from } => self.on_request(tx, req, from),
            TxEvent::Ack { req, .. } => {
                let id = message::call_id(&as_msg(&req));
                if let Some(&call) = self.by_call_id.get(&id) {
                    self.send_to_call(call, CallEvent::Ack { req: Box::new(req) });
                }
            }
            TxEvent::Response { tx, resp } => {
                // Any final answer to a keep-alive, even 405, says the phone is there.
                if resp.status_code.code() >= 200 && self.pings.remove(&tx).is_some() {
                    return;
                }
                if self.pings.contains_key(&tx) {
                    return;
                }
                let owner = self.tx_owner.get(&tx).copied();
                if let Some(call) = owner {
                    if self.send_to_call(
                        call,
                        CallEvent::Response {
                            tx,
                            resp: Box::new(resp.clone()),
                        },
                    ) {
                        return;
                    }
                }
                self.hang_up_orphan_answer(tx, resp);
            }
            TxEvent::Timeout { tx } => {
                if let Some((user, binding)) = self.pings.remove(&tx) {
                    info!(%user, contact = %binding.contact, "the phone did not answer the keep-alive; dropping its registration");
                    self.registrar.remove(&user, &binding);
                    self.share(&user);
                    let left = !self.registrar.lookup(&user, Instant::now()).is_empty();
                    self.phone_reachability(&user, left);
                    return;
                }
                if let Some(&call) = self.tx_owner.get(&tx) {
                    self.send_to_call(call, CallEvent::Timeout { tx });
                }
            }
            TxEvent::Cancelled { tx, .. } => {
                if let Some(&call) = self.tx_owner.get(&tx) {
                    self.send_to_call(call, CallEvent::Cancelled { tx });
                }
            }
            TxEvent::AckTimeout { tx, .. } => {
                if let Some(&call) = self.tx_owner.get(&tx) {
                    self.send_to_call(call, CallEvent::AckTimeout { tx });
                }
            }
        }
    }

    /// A 2xx to an INVITE whose call has already ended (it crossed our CANCEL, or came
    /// after the ring timeout): the phone is now in a call nobody owns, so acknowledge it
    /// (or it retransmits for 32 s) and hang it up at once.
    fn hang_up_orphan_answer(&mut self, tx: TxId, resp: rsip::Response) {
        if resp.status_code.code() / 100 != 2 {
            return;
        }
        let Some(invite) = self.layer.client_request(tx).cloned() else {
            return;
        };
        if invite.method != Method::Invite {
            return;
        }
        let Some(peer) = self.layer.client_peer(tx) else {
            return;
        };
        let contact = self.shared.contact(peer.transport);
        let mut dialog = crate::sip::dialog::Dialog::from_response(&invite, &resp, peer, contact);
        let now = Instant::now();
        let mut ack = dialog.ack(message::cseq(&as_msg(&invite)).0);
        self.layer.add_via(&mut ack, peer.transport);
        self.layer.send_stateless(SipMessage::Request(ack), peer);
        let bye = dialog.request(Method::Bye);
        self.layer.send_request(bye, peer, now);
        info!(call_id = %dialog.id.call_id, "answer after the call ended: acknowledged and hung up");
    }

    fn respond(&mut self, tx: TxId, req: &Request, code: u16) {
        let tag = message::new_tag();
        let resp = message::response_to(req, code, Some(&tag));
        self.layer.respond(tx, resp, Instant::now());
    }

    fn on_request(&mut self, tx: TxId, req: Request, from: Peer) {
        let msg = as_msg(&req);
        let call_id = message::call_id(&msg);
        if message::to_tag(&msg).is_some() {
            // In-dialog: the call that owns this Call-ID handles it.
            if let Some(&call) = self.by_call_id.get(&call_id) {
                self.tx_owner.insert(tx, call);
                if let Some(c) = self.calls.get_mut(&call) {
                    c.txs.push(tx);
                }
                if self.send_to_call(
                    call,
                    CallEvent::Request {
                        tx,
                        req: Box::new(req.clone()),
                        from,
                    },
                ) {
                    return;
                }
            }
            if req.method == Method::Options {
                self.respond_options(tx, &req);
            } else {
                self.respond(tx, &req, 481);
            }
            return;
        }
        match req.method {
            Method::Invite => self.on_invite(tx, req, from),
            Method::Register => self.on_register(tx, req, from),
            Method::Options => self.respond_options(tx, &req),
            Method::Bye => self.respond(tx, &req, 481),
            _ => {
                let mut resp = message::response_to(&req, 405, Some(&message::new_tag()));
                resp.headers.push(allow());
                self.layer.respond(tx, resp, Instant::now());
            }
        }
    }

    /// Whether credentials come from a user or an address locked out for guessing (then
    /// refused unchecked, with the answer a wrong password gets).
    fn locked_out(&mut self, creds: Option<&str>, ip: std::net::IpAddr, now: Instant) -> bool {
        let Some(user) = creds.and_then(auth::claimed_user) else {
            return false;
        };
        if self.guard.locked(&user, ip, now).is_none() {
            return false;
        }
        crate::sip::stats::bump(&self.shared.sip_stats.auth.refused_locked);
        debug!(%user, %ip, "refused unchecked: locked out");
        true
    }

    /// Counts what an authentication came to, starting lock-outs as failures add up.
    fn count_auth(
        &mut self,
        result: &AuthResult,
        creds: Option<&str>,
        ip: std::net::IpAddr,
        now: Instant,
    ) {
        use crate::sip::stats::bump;
        let counts = &self.shared.sip_stats.auth;
        let user = creds.and_then(auth::claimed_user);
        match (result, user) {
            (AuthResult::Ok(u), _) => {
                self.guard.succeeded(u, ip, now);
                self.limits.authenticated(ip);
            }
            (AuthResult::Replayed, user) => {
                bump(&counts.replays);
                info!(user = user.as_deref().unwrap_or(""), %ip, "replayed credentials: challenged again");
            }
            (AuthResult::Rejected, Some(user)) => {
                bump(&counts.failures);
                for lock in self.guard.failed(&user, ip, now) {
                    bump(&counts.lockouts);
                    warn!(
                        who = %lock.who,
                        failures = lock.failures,
                        secs = lock.duration.as_secs(),
                        "locked out for password guessing"
                    );
                }
            }
            (AuthResult::Rejected, None) => bump(&counts.failures),
            (AuthResult::Missing | AuthResult::Stale, _) => {}
        }
        counts.locked_now.store(
            self.guard.locked_keys(now) as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    fn respond_options(&mut self, tx: TxId, req: &Request) {
        // A draining node is still up but wants no new calls: a balancer's keep-alive
        // takes this as "out of the set" (RFC 3261 §11: OPTIONS answers as an INVITE would).
        let code = if self.refuse_options || self.draining {
            503
        } else {
            200
        };
        let mut resp = message::response_to(req, code, Some(&message::new_tag()));
        resp.headers.push(allow());
        resp.headers.push(Header::Accept(rsip::headers::Accept::new(
            "application/sdp",
        )));
        self.layer.respond(tx, resp, Instant::now());
    }

    fn on_register(&mut self, tx: TxId, req: Request, from: Peer) {
        let now = Instant::now();
        let creds = req.headers.iter().find_map(|h| match h {
            Header::Authorization(a) => Some(a.value().to_string()),
            _ => None,
        });
        if self.locked_out(creds.as_deref(), from.addr.ip(), now) {
            return self.respond(tx, &req, 403);
        }
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        let result = self.auth.verify(
            creds.as_deref(),
            "REGISTER",
            &req.uri.to_string(),
            |u| cfg.user(u).map(|u| u.password.clone()),
            unix_secs(),
        );
        self.count_auth(&result, creds.as_deref(), from.addr.ip(), now);
        let aor = message::to_uri(&as_msg(&req))
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        let user = match result {
            AuthResult::Ok(u) if u == aor => u,
            AuthResult::Ok(u) => {
                warn!(user = %u, %aor, "authenticated user tried to register another AOR");
                return self.respond(tx, &req, 403);
            }
            AuthResult::Missing | AuthResult::Stale | AuthResult::Replayed => {
                let stale = result == AuthResult::Stale;
                let mut resp = message::response_to(&req, 401, Some(&message::new_tag()));
                for c in self.auth.challenges(unix_secs(), stale) {
                    resp.headers.push(Header::WwwAuthenticate(
                        rsip::headers::WwwAuthenticate::new(c),
                    ));
                }
                self.layer.respond(tx, resp, now);
                return;
            }
            AuthResult::Rejected => {
                info!(from = %from.addr, "REGISTER refused: wrong credentials");
                return self.respond(tx, &req, 403);
            }
        };
        let header_expires = req
            .expires_header()
            .and_then(|e| e.value().trim().parse::<u32>().ok());
        let contacts: Vec<ContactRequest> = req
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Contact(c) => Some(c.value().to_string()),
                _ => None,
            })
            .map(|v| parse_contact(&v))
            .collect();
        // Where calls to each contact will go (the Contact, unless NAT says otherwise).
        let via_sent_by = req
            .via_header()
            .ok()
            .and_then(|v| v.value().split_whitespace().nth(1).map(str::to_string))
            .and_then(|s| sent_by_addr(s.split(';').next().unwrap_or("")));
        let nat = self.shared.config.nat_for(&user);
        // A proxy in front (RFC 3327): requests to these contacts are routed through the
        // Path it added and sent to its first hop, which deals with the phone's NAT.
        let path: Vec<String> = req
            .headers
            .iter()
            .filter_map(|h| match h {
                Header::Other(n, v) if n.eq_ignore_ascii_case("path") => Some(v.clone()),
                _ => None,
            })
            .collect();
        let supported = |tag: &str| {
            req.headers.iter().any(|h| match h {
                Header::Supported(v) => v
                    .value()
                    .split(',')
                    .any(|t| t.trim().eq_ignore_ascii_case(tag)),
                Header::Other(n, v) if n.eq_ignore_ascii_case("supported") => {
                    v.split(',').any(|t| t.trim().eq_ignore_ascii_case(tag))
                }
                _ => false,
            })
        };
        // Over UDP the proxy is reached at its Path address (an IP literal); over a
        // stream, on the connection its REGISTER came by (we open no TLS connections,
        // and a proxy's listening port is not its connection's).
        let first_hop = path
            .first()
            .map(|hop| match uri_addr(hop.trim_start_matches('<')) {
                Some(addr) if from.transport == Transport::Udp => Peer {
                    transport: Transport::Udp,
                    addr,
                },
                _ => from,
            });
        // Outbound (RFC 5626 §6) only for a phone that says it supports it and, behind
        // a proxy, when the first hop says it does too (`ob`); otherwise its reg-id is
        // ignored and the contact is an ordinary binding.
        let outbound = supported("outbound")
            && path.first().is_none_or(|hop| {
                hop.split(['>', ';'])
                    .skip(1)
                    .any(|p| p.trim().eq_ignore_ascii_case("ob"))
            });
        let mut contacts = contacts;
        for c in &mut contacts {
            if !outbound {
                c.flow = None;
            }
            if c.uri != "*" {
                c.target = Some(match first_hop {
                    Some(hop) => hop,
                    // An outbound flow is reached over the flow itself.
                    None if c.flow.is_some() => from,
                    None => contact_target(nat, &c.uri, via_sent_by, from),
                });
            }
        }
        let msg = as_msg(&req);
        let result = self.registrar.register(
            &user,
            &contacts,
            header_expires,
            &message::call_id(&msg),
            message::cseq(&msg).0,
            from,
            &path,
            now,
        );
        match result {
            Ok(bindings) => {
                let mut resp = message::response_to(&req, 200, Some(&message::new_tag()));
                // The Path stored is echoed to a phone that supports it (RFC 3327 §5.3).
                if supported("path") {
                    for hop in &path {
                        resp.headers.push(Header::Other("Path".into(), hop.clone()));
                    }
                }
                // The flow was taken as one (RFC 5626 §6).
                if contacts.iter().any(|c| c.flow.is_some()) {
                    resp.headers
                        .push(Header::Require(rsip::headers::Require::new("outbound")));
                }
                for (b, left) in &bindings {
                    resp.headers
                        .push(Header::Contact(rsip::headers::Contact::new(format!(
                            "<{}>;expires={left}",
                            b.contact
                        ))));
                }
                info!(%user, contacts = bindings.len(), from = %from.addr, "registered");
                self.layer.respond(tx, resp, now);
                self.share(&user);
                self.phone_reachability(&user, !bindings.is_empty());
            }
            Err(RegisterError::TooBrief(min)) => {
                let mut resp = message::response_to(&req, 423, Some(&message::new_tag()));
                resp.headers
                    .push(Header::MinExpires(rsip::headers::MinExpires::new(
                        min.to_string(),
                    )));
                self.layer.respond(tx, resp, now);
            }
            Err(RegisterError::BadWildcard) => self.respond(tx, &req, 400),
            Err(RegisterError::OutOfOrder) => self.respond(tx, &req, 500),
        }
    }

    /// Admission and routing of a new call (see product rules: users authenticate, trunks
    /// are recognised by source address, everyone else is refused).
    fn on_invite(&mut self, tx: TxId, req: Request, from: Peer) {
        let msg = as_msg(&req);
        let from_uri = message::from_uri(&msg);
        let from_user = from_uri
            .as_ref()
            .and_then(|u| u.user().map(str::to_string))
            .unwrap_or_default();
        let dialed = req.uri.user().unwrap_or_default().to_string();
        let mut record = CallRecord {
            call_uuid: uuid_like(),
            a_call_id: message::call_id(&msg),
            from_uri: from_uri.map(|u| u.to_string()).unwrap_or_default(),
            from_user: from_user.clone(),
            to_uri: message::to_uri(&msg)
                .map(|u| u.to_string())
                .unwrap_or_default(),
            dialed: dialed.clone(),
            source_kind: "unknown",
            arrived_ms: now_ms(),
            ..Default::default()
        };
        if self.by_call_id.contains_key(&record.a_call_id) {
            // The same call reaching us twice (a forking proxy upstream): RFC 3261 §8.2.2.2.
            self.respond(tx, &req, 482);
            return;
        }
        if self.draining {
            record.reason = Some("server is shutting down".into());
            return self.refuse(tx, &req, 503, Disposition::Refused, record);
        }
        let load = crate::sip::limits::Load {
            calls: self.calls.len(),
            queued: self.queued,
            cpu_percent: self.shared.sip_stats.limits.cpu_percent.load(Relaxed) as u32,
        };
        if let Err(why) = self.limits.admit_call(load, Instant::now()) {
            return self.overloaded(tx, &req, why);
        }
        // The configuration outlives this request; the switch's own state changes below.
        let shared = Arc::clone(&self.shared);
        let cfg = &shared.config;
        // A stranger (not a user, not a trunk peer) is answered exactly as a user with a
        // wrong password is, challenge first (Asterisk's alwaysauthreject): whether an
        // extension exists never shows in the answer.
        let is_user = cfg.user(&from_user).is_some();
        let trunk = cfg.trunk_for(from.addr.ip()).filter(|_| !is_user);
        // Where a user dialling out goes: the trunk for outgoing calls.
        let mut dial_out = None;
        let target = if let Some(trunk) = trunk {
            record.source_kind = "trunk";
            record.trunk = Some(trunk.name.clone());
            record.did = Some(dialed.clone());
            cfg.did(&dialed).map(|d| d.target.clone())
        } else {
            record.source_kind = if is_user { "user" } else { "unknown" };
            let creds = req.headers.iter().find_map(|h| match h {
                Header::ProxyAuthorization(a) => Some(a.value().to_string()),
                Header::Authorization(a) => Some(a.value().to_string()),
                _ => None,
            });
            if self.locked_out(creds.as_deref(), from.addr.ip(), Instant::now()) {
                record.reason = Some("locked out for password guessing".into());
                return self.refuse(tx, &req, 403, Disposition::Refused, record);
            }
            let result = self.auth.verify(
                creds.as_deref(),
                "INVITE",
                &req.uri.to_string(),
                |u| cfg.user(u).map(|u| u.password.clone()),
                unix_secs(),
            );
            self.count_auth(&result, creds.as_deref(), from.addr.ip(), Instant::now());
            match result {
                AuthResult::Ok(u) if u == from_user => {
                    if let Some((mode, agent)) = supervisor_code(&dialed) {
                        record.caller_user = Some(u.clone());
                        record.target = Some(dialed.clone());
                        if cfg.user(&u).map(|u| u.role) != Some(crate::config::Role::Supervisor) {
                            record.reason = Some("only supervisors may listen in on calls".into());
                            return self.refuse(tx, &req, 403, Disposition::Refused, record);
                        }
                        let route = Route::Supervise {
                            agent: agent.to_string(),
                            mode,
                        };
                        return self.admit(tx, req, from, route, record);
                    }
                    if let Some(feature) = self.agent_feature(&u, &dialed) {
                        record.caller_user = Some(u);
                        record.target = Some(dialed.clone());
                        return self.admit(tx, req, from, Route::Feature(feature), record);
                    }
                    // A user dials extensions directly, or any DID, or (allowed to dial
                    // out) any other number through the trunk for outgoing calls.
                    let dials_out = cfg.user(&u).is_some_and(|u| u.dial_out);
                    record.caller_user = Some(u);
                    if cfg.user(&dialed).is_some() {
                        Some(DidTarget::Extension(dialed.clone()))
                    } else if let Some(did) = cfg.did(&dialed) {
                        Some(did.target.clone())
                    } else if dials_out && is_phone_number(&dialed) {
                        dial_out = cfg.outbound_trunk();
                        dial_out
                            .as_ref()
                            .map(|_| DidTarget::Extension(dialed.clone()))
                    } else {
                        None
                    }
                }
                AuthResult::Missing | AuthResult::Stale | AuthResult::Replayed => {
                    // A challenge is not a call yet: no record.
                    let mut resp = message::response_to(&req, 407, Some(&message::new_tag()));
                    for c in self
                        .auth
                        .challenges(unix_secs(), result == AuthResult::Stale)
                    {
                        resp.headers.push(Header::ProxyAuthenticate(
                            rsip::headers::ProxyAuthenticate::new(c),
                        ));
                    }
                    self.layer.respond(tx, resp, Instant::now());
                    return;
                }
                _ => {
                    record.reason = Some("wrong credentials".into());
                    return self.refuse(tx, &req, 403, Disposition::Refused, record);
                }
            }
        };
        let Some(target) = target else {
            record.reason = Some(format!("no route for {dialed}"));
            return self.refuse(tx, &req, 404, Disposition::Refused, record);
        };
        // Extensions the caller requires, and its session interval (RFC 4028).
        let min_se = self.shared.config.session_min_se;
        if let Err(why) = crate::sip::session_timer::negotiate(&req, min_se) {
            record.reason = Some(why.to_string());
            let resp = why.response(&req);
            return self.refuse_with(tx, resp, Disposition::Refused, record);
        }
        let route = match (target, dial_out) {
            (DidTarget::Extension(number), Some((name, addr))) => {
                record.target = Some(number.clone());
                record.trunk = Some(name);
                Route::Ring(vec![super::trunk_binding(&number, addr)])
            }
            (DidTarget::Extension(ext), None) => {
                record.target = Some(ext.clone());
                let bindings = self.bindings_of(&ext, Instant::now());
                if bindings.is_empty() {
                    record.reason = Some(format!("extension {ext} has no registered phone"));
                    return self.refuse(tx, &req, 480, Disposition::Unavailable, record);
                }
                Route::Ring(bindings)
            }
            (DidTarget::Flow(name), _) => {
                let flows = self.shared.flows.as_ref().map(|f| f.current());
                match flows.filter(|f| f.get(&name).is_some()) {
                    Some(flows) => Route::Flow { flows, name },
                    None => {
                        record.reason = Some(format!("flow \"{name}\" is not loaded"));
                        return self.refuse(tx, &req, 503, Disposition::Failed, record);
                    }
                }
            }
        };

        self.admit(tx, req, from, route, record);
    }

    /// A new call's key and the channel the switch routes its events to.
    fn new_call(
        &mut self,
        uuid: String,
        call_ids: Vec<String>,
        txs: Vec<TxId>,
    ) -> (CallKey, mpsc::UnboundedReceiver<CallEvent>) {
        let key = self.next_call;
        self.next_call += 1;
        let (events, rx) = mpsc::unbounded_channel();
        let call = LiveCall {
            uuid,
            events,
            call_ids,
            txs,
        };
        self.calls.insert(key, call);
        (key, rx)
    }

    /// Hands an admitted call to a new call task.
    fn admit(&mut self, tx: TxId, req: Request, from: Peer, route: Route, record: CallRecord) {
        let (key, ev_rx) = self.new_call(
            record.call_uuid.clone(),
            vec![record.a_call_id.clone()],
            vec![tx],
        );
        self.by_call_id.insert(record.a_call_id.clone(), key);
        self.tx_owner.insert(tx, key);
        debug!(call = key, "call admitted");
        task::spawn(CallSetup {
            key,
            shared: self.shared.clone(),
            switch: self.handle(),
            events: ev_rx,
            invite_tx: tx,
            invite: req,
            from,
            route,
            record,
        });
    }

    /// An agent's feature code (`*50` log in, `*51` log out, `*52` not ready, `*53` ready,
    /// `*54` end wrap-up now): carried out at once; the prompt that confirms it is
    /// the call plays the prompt that says how it went. None when `dialed` is not a
    /// feature code.
    fn agent_feature(&self, agent: &str, dialed: &str) -> Option<FeatureCall> {
        use crate::acd::Event;
        let agent = agent.to_string();
        let (event, prompt) = match dialed {
            "*50" => (Event::AgentLogin { agent }, "agent_logged_in"),
            "*51" => (Event::AgentLogout { agent }, "agent_logged_out"),
            "*52" => (
                Event::AgentNotReady {
                    agent,
                    reason: "break".into(),
                },
                "agent_not_ready",
            ),
            "*53" => (Event::AgentReady { agent }, "agent_ready"),
            "*54" => (Event::EndWrapUp { agent }, "agent_wrapup_ended"),
            _ => return None,
        };
        let verdict = self
            .shared
            .acd
            .as_ref()
            .map(|acd| acd.agent_request(event, "phone"));
        Some(FeatureCall {
            done: format!("en/{prompt}.wav"),
            refused: "en/agent_refused.wav".into(),
            verdict,
        })
    }

    /// Refuses a call that never reaches a call task, and still leaves its record.
    /// A new call refused before it costs anything: 503 with Retry-After, counted, no
    /// record (a flood would otherwise be a flood of records).
    fn overloaded(&mut self, tx: TxId, req: &Request, why: Overload) {
        let counts = &self.shared.sip_stats.limits;
        let counter = match why {
            Overload::SetupRate => &counts.overload_setup_rate,
            Overload::MaxCalls => &counts.overload_max_calls,
            Overload::QueueDelay => &counts.overload_queue_delay,
            Overload::Cpu => &counts.overload_cpu,
        };
        crate::sip::stats::bump(counter);
        debug!(?why, "new call refused: overloaded");
        let mut resp = message::response_to(req, 503, Some(&message::new_tag()));
        let wait = self.limits.config().retry_after.as_secs();
        resp.headers
            .push(Header::Other("Retry-After".into(), wait.to_string()));
        self.layer.respond(tx, resp, Instant::now());
    }

    fn refuse(&mut self, tx: TxId, req: &Request, code: u16, d: Disposition, record: CallRecord) {
        let resp = message::response_to(req, code, Some(&message::new_tag()));
        self.refuse_with(tx, resp, d, record);
    }

    /// [`Self::refuse`] with a response of its own (extra headers).
    fn refuse_with(
        &mut self,
        tx: TxId,
        resp: rsip::Response,
        d: Disposition,
        mut record: CallRecord,
    ) {
        let code = resp.status_code.code();
        self.layer.respond(tx, resp, Instant::now());
        record.ended_ms = now_ms();
        record.final_code = code;
        record.disposition = Some(d);
        record.hangup_by = Some(crate::store::HangupBy::Switchboard);
        info!(call_id = %record.a_call_id, code, reason = record.reason.as_deref().unwrap_or(""), "call refused");
        self.shared.records.submit_quiet(record);
    }
}

/// `*1<ext>` listen, `*2<ext>` whisper, `*3<ext>` barge.
/// Digits, with `+`, `*` and `#`: what a user may dial out (not a SIP user name).
fn is_phone_number(dialed: &str) -> bool {
    let digits = dialed.strip_prefix('+').unwrap_or(dialed);
    !digits.is_empty()
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || c == '*' || c == '#')
}

fn supervisor_code(dialed: &str) -> Option<(crate::media::mixer::Mode, &str)> {
    use crate::media::mixer::Mode;
    let rest = dialed.strip_prefix('*')?;
    let mode = match rest.chars().next()? {
        '1' => Mode::Listen,
        '2' => Mode::Whisper,
        '3' => Mode::Barge,
        _ => return None,
    };
    let ext = &rest[1..];
    (!ext.is_empty() && ext.chars().all(|c| c.is_ascii_alphanumeric())).then_some((mode, ext))
}

fn allow() -> Header {
    Header::Allow(rsip::headers::Allow::new(
        "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE, REGISTER",
    ))
}

/// `<sip:...>;expires=N` → the URI and its expires parameter.
fn parse_contact(v: &str) -> ContactRequest {
    let v = v.trim();
    if v == "*" {
        return ContactRequest {
            target: None,
            uri: "*".into(),
            expires: None,
            flow: None,
        };
    }
    let (uri, params) = match (v.find('<'), v.find('>')) {
        (Some(a), Some(b)) if a < b => (v[a + 1..b].to_string(), &v[b + 1..]),
        _ => {
            let mut parts = v.splitn(2, ';');
            (
                parts.next().unwrap_or("").to_string(),
                parts.next().unwrap_or(""),
            )
        }
    };
    let param = |name: &str| {
        params.split(';').find_map(|p| {
            let (k, val) = p.split_once('=')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| val.trim().to_string())
        })
    };
    let expires = param("expires").and_then(|e| e.parse().ok());
    // Both or neither: a reg-id without an instance is ignored (RFC 5626 §6).
    let flow = param("+sip.instance")
        .zip(param("reg-id").and_then(|r| r.parse().ok()))
        .map(|(instance, reg_id)| (instance.trim_matches('"').to_string(), reg_id));
    ContactRequest {
        uri,
        expires,
        target: None,
        flow,
    }
}

/// The address of a SIP URI whose host is an IP literal (`sip:2001@10.0.0.5:5062;…`).
fn uri_addr(uri: &str) -> Option<SocketAddr> {
    let rest = uri.strip_prefix("sip:")?;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = rest.split([';', '?', '>']).next()?;
    sent_by_addr(hostport)
}

/// `host[:port]` as an address (5060 when no port); None for a host name.
fn sent_by_addr(hostport: &str) -> Option<SocketAddr> {
    if let Ok(a) = hostport.parse::<SocketAddr>() {
        return Some(a);
    }
    let host = hostport.trim_start_matches('[').trim_end_matches(']');
    host.parse::<std::net::IpAddr>()
        .ok()
        .map(|ip| SocketAddr::new(ip, 5060))
}

/// Whether an address is one only its own network can reach (RFC 1918, RFC 6598,
/// RFC 4193, link-local).
fn private(ip: std::net::IpAddr) -> bool {
    match crate::config::canonical_ip(ip) {
        std::net::IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_link_local()
                || (v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64)
        }
        std::net::IpAddr::V6(v6) => {
            (v6.segments()[0] & 0xfe00) == 0xfc00 || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Where requests to a registered contact go. RFC 3261 sends them to the Contact; the
/// REGISTER's source is used instead when NAT is configured (`force`) or, with `auto`,
/// detected as Kamailio's nat_uac_test does: the Via's sent-by is not where the request
/// came from, or the Contact is a private address seen from a public one. TCP phones are
/// reached over their own connection (RFC 5923 reuse), and a contact named by host name
/// is reached at the source too.
pub(crate) fn contact_target(
    nat: crate::config::Nat,
    contact: &str,
    via_sent_by: Option<SocketAddr>,
    source: Peer,
) -> Peer {
    use crate::config::Nat;
    if nat == Nat::Force || source.transport != Transport::Udp {
        return source;
    }
    let Some(addr) = uri_addr(contact) else {
        return source;
    };
    let canon = |a: SocketAddr| SocketAddr::new(crate::config::canonical_ip(a.ip()), a.port());
    let behind_nat = via_sent_by.is_some_and(|v| canon(v) != canon(source.addr))
        || (private(addr.ip()) && !private(source.addr.ip()) && !source.addr.ip().is_loopback());
    if nat == Nat::Auto && behind_nat {
        return source;
    }
    Peer {
        transport: Transport::Udp,
        addr,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(a: &str) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: a.parse().unwrap(),
        }
    }

    #[test]
    fn requests_go_to_the_contact_unless_nat_is_detected_or_forced() {
        use crate::config::Nat;
        let contact = "sip:2001@127.0.0.1:5999;transport=udp";
        let from = udp("127.0.0.1:5070");
        let sent_by = Some("127.0.0.1:5070".parse().unwrap());
        // Another port than the REGISTER's (an IP-PBX, a test rig): the Contact.
        assert_eq!(
            contact_target(Nat::Auto, contact, sent_by, from),
            udp("127.0.0.1:5999")
        );
        assert_eq!(
            contact_target(Nat::Never, contact, sent_by, from),
            udp("127.0.0.1:5999")
        );
        assert_eq!(contact_target(Nat::Force, contact, sent_by, from), from);
        // Via says one address, the packet came from another: NAT, so the source.
        let natted = udp("203.0.113.7:40000");
        let lan = Some("192.168.1.20:5060".parse().unwrap());
        let lan_contact = "sip:2001@192.168.1.20:5060";
        assert_eq!(contact_target(Nat::Auto, lan_contact, lan, natted), natted);
        // A private Contact from a public source, whatever the Via says.
        assert_eq!(
            contact_target(Nat::Auto, lan_contact, Some(natted.addr), natted),
            natted
        );
        // Never means never.
        assert_eq!(
            contact_target(Nat::Never, lan_contact, lan, natted),
            udp("192.168.1.20:5060")
        );
        // Host names and TCP phones are reached where they registered from.
        assert_eq!(
            contact_target(Nat::Auto, "sip:2001@phone.example:5060", sent_by, from),
            from
        );
        let tcp = Peer {
            transport: Transport::Tcp,
            addr: from.addr,
        };
        assert_eq!(contact_target(Nat::Auto, contact, sent_by, tcp), tcp);
        // IPv6 contacts, default port.
        assert_eq!(
            contact_target(
                Nat::Auto,
                "sip:2001@[::1];transport=udp",
                Some("[::1]:5080".parse().unwrap()),
                udp("[::1]:5080")
            ),
            udp("[::1]:5060")
        );
    }

    #[test]
    fn contacts_with_expires() {
        let c = parse_contact(
            "\"Phone\" <sip:2001@127.0.0.1:5070;transport=udp>;expires=120;+sip.instance=\"x\"",
        );
        assert_eq!(c.uri, "sip:2001@127.0.0.1:5070;transport=udp");
        assert_eq!(c.expires, Some(120));
        let c = parse_contact("sip:2001@127.0.0.1:5070");
        assert_eq!(
            (c.uri.as_str(), c.expires),
            ("sip:2001@127.0.0.1:5070", None)
        );
        assert_eq!(parse_contact("*").uri, "*");
    }

    #[test]
    fn supervisor_codes_name_a_mode_and_an_extension() {
        use crate::media::mixer::Mode;
        assert_eq!(supervisor_code("*12001"), Some((Mode::Listen, "2001")));
        assert_eq!(supervisor_code("*22001"), Some((Mode::Whisper, "2001")));
        assert_eq!(supervisor_code("*32001"), Some((Mode::Barge, "2001")));
        assert_eq!(supervisor_code("*1"), None);
        assert_eq!(supervisor_code("*52"), None);
        assert_eq!(supervisor_code("2001"), None);
    }

    #[test]
    fn call_ids_are_uuid_shaped_and_unique() {
        let a = uuid_like();
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
        assert_ne!(a, uuid_like());
    }
}

/// Reads a shared binding's `transport:address:port` target (a listener's syntax).
fn shared_target(s: &str) -> Option<Peer> {
    let l = crate::config::parse_listener(s).ok()?;
    Some(Peer {
        transport: l.transport,
        addr: l.addr,
    })
}

/// The next message of an optional channel; never, without one.
async fn recv_opt<T>(rx: &mut Option<mpsc::UnboundedReceiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}
