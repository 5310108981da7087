//! The RFC 3261 §17 transaction layer as a sans-IO state machine (with RFC 6026's
//! Accepted state for INVITE 2xx).
//!
//! Feed it with [`TransactionLayer::handle_message`], [`TransactionLayer::send_request`],
//! [`TransactionLayer::respond`] and [`TransactionLayer::handle_timeout`]; drain
//! [`TransactionLayer::poll`] for bytes to send and events for the transaction user; sleep
//! until [`TransactionLayer::poll_timeout`]. It owns every retransmission and timer
//! (A–K, plus L/M of RFC 6026) and never touches a socket or a clock of its own.
//!
//! Decision: the 2xx to an INVITE is retransmitted here (Timer G's schedule, capped at T2)
//! until its ACK arrives, rather than in each dialog, because this is where the timers and
//! the ACK matching already live; a 2xx that is never ACKed within 64·T1 yields
//! [`TxEvent::AckTimeout`] so the call can hang up (RFC 3261 §13.3.1.4).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use rsip::headers::UntypedHeader;
use rsip::{Header, Method, Request, Response, SipMessage};

use super::message::{self, host_str};
use crate::config::Transport;

/// Where a message came from or goes to. For TCP the transport edge maps the address to
/// the connection it arrived on (connection reuse).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Peer {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Peer {
    fn reliable(&self) -> bool {
        self.transport != Transport::Udp
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub t1: Duration,
    pub t2: Duration,
    pub t4: Duration,
}

impl Timers {
    pub fn with_t1(t1_ms: u64) -> Self {
        Timers {
            t1: Duration::from_millis(t1_ms),
            ..Self::default()
        }
    }
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            t1: Duration::from_millis(500),
            t2: Duration::from_secs(4),
            t4: Duration::from_secs(5),
        }
    }
}

/// Identifies one transaction for the transaction user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TxId(pub u64);

/// Ids for the client transactions a transaction user starts, handed out by the user
/// itself (a call knows its request's id when it decides to send it, without waiting
/// for the layer). They come from a range the layer's own ids never reach.
#[derive(Debug, Clone)]
pub struct TxIds(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl TxIds {
    const FIRST: u64 = 1 << 48;

    pub fn new() -> TxIds {
        TxIds(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(
            Self::FIRST,
        )))
    }

    pub fn next(&self) -> TxId {
        TxId(self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed))
    }
}

impl Default for TxIds {
    fn default() -> Self {
        TxIds::new()
    }
}

#[derive(Debug)]
pub struct Transmit {
    pub to: Peer,
    pub bytes: Vec<u8>,
    /// A copy of something sent before (a timer fired, or the peer retransmitted its
    /// request): not a new answer, so limits that count answers skip it.
    pub retransmission: bool,
}

/// What the transaction user must act on.
#[derive(Debug)]
pub enum TxEvent {
    /// A new request (not a retransmission, not an ACK to a 2xx).
    Request { tx: TxId, req: Request, from: Peer },
    /// The ACK to a 2xx we sent (it is its own transaction-less request).
    Ack { req: Request, from: Peer },
    /// A response to a request we sent (2xx retransmissions too, so the dialog re-ACKs).
    Response { tx: TxId, resp: Response },
    /// Timer B or F: no final response came. Treat as 408.
    Timeout { tx: TxId },
    /// A CANCEL matched this INVITE server transaction: 200 went to the CANCEL and 487 to
    /// the INVITE already; the TU must tear down whatever it started for it.
    Cancelled { tx: TxId, cancel: Request },
    /// Our final response to an INVITE was never acknowledged within 64·T1.
    AckTimeout { tx: TxId, was_2xx: bool },
}

#[derive(Debug)]
pub enum Output {
    Transmit(Transmit),
    Event(TxEvent),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ServerState {
    Trying,
    Proceeding,
    /// INVITE: 2xx sent, waiting for the ACK (RFC 6026).
    Accepted,
    Completed,
    Confirmed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ClientState {
    Calling,
    Proceeding,
    Accepted,
    Completed,
}

struct ServerTx {
    key: String,
    invite: bool,
    state: ServerState,
    req: Request,
    peer: Peer,
    last_response: Option<Vec<u8>>,
    /// Current retransmission interval (Timer G) and when to give up (H / L / J / I).
    retransmit: Option<(Instant, Duration)>,
    end: Option<Instant>,
    acked: bool,
    was_2xx: bool,
    /// The To tag of the responses sent so far: every response to one request carries the
    /// same one (RFC 3261 §8.2.6.2), including a 487 after a CANCEL.
    to_tag: Option<String>,
    /// Call-ID and CSeq number, for matching the ACK to a 2xx.
    call_id: String,
    cseq: u32,
}

struct ClientTx {
    key: String,
    invite: bool,
    state: ClientState,
    req: Request,
    bytes: Vec<u8>,
    peer: Peer,
    retransmit: Option<(Instant, Duration)>,
    end: Option<Instant>,
    ack: Option<Vec<u8>>,
    /// The TU cancelled this INVITE; its 64·T1 limit replaces Timer B.
    cancel_requested: bool,
    /// A CANCEL asked for before any provisional response: sent on the first 1xx
    /// (RFC 3261 §9.1 forbids cancelling a request the peer may not have seen yet).
    cancel_pending: bool,
}

/// Where we are reachable, per transport, for our Via headers.
#[derive(Debug, Clone, Copy)]
pub struct LocalAddr {
    pub transport: Transport,
    pub advertise: SocketAddr,
}

pub struct TransactionLayer {
    timers: Timers,
    locals: Vec<LocalAddr>,
    next_id: u64,
    // Boxed: a map keeps the capacity of its busiest moment, and empty slots then
    // cost a pointer each, not a whole transaction (400 bytes).
    servers: HashMap<TxId, Box<ServerTx>>,
    server_keys: HashMap<String, TxId>,
    clients: HashMap<TxId, Box<ClientTx>>,
    client_keys: HashMap<String, TxId>,
    /// INVITE server transactions in Accepted, by (Call-ID, CSeq) — ACKs to 2xx carry a
    /// new branch, so this is how they are matched.
    accepted: HashMap<(String, u32), TxId>,
    /// Lazy-deletion timer heap: entries whose deadline no longer matches are skipped.
    wakeups: BinaryHeap<Reverse<(Instant, TxId)>>,
    out: VecDeque<Output>,
}

fn server_key(msg: &SipMessage, method: &Method) -> String {
    let branch = message::branch(msg);
    // ACK to a non-2xx and CANCEL share the INVITE's branch; ACK joins the INVITE's
    // transaction, CANCEL is a transaction of its own.
    let class = match method {
        Method::Ack | Method::Invite => "INVITE".to_string(),
        m => m.to_string(),
    };
    if branch.starts_with("z9hG4bK") {
        let sent_by = message::top_via(msg)
            .map(|v| v.uri.to_string())
            .unwrap_or_default();
        format!("{branch}|{sent_by}|{class}")
    } else {
        // RFC 2543 peers: match on the dialog and CSeq instead (§17.2.3).
        format!(
            "legacy|{}|{}|{:?}|{}",
            message::call_id(msg),
            message::cseq(msg).0,
            message::from_tag(msg),
            class
        )
    }
}

fn client_key(branch: &str, method: &Method) -> String {
    let class = if *method == Method::Ack {
        Method::Invite
    } else {
        *method
    };
    format!("{branch}|{class}")
}

impl TransactionLayer {
    pub fn new(timers: Timers, locals: Vec<LocalAddr>) -> Self {
        TransactionLayer {
            timers,
            locals,
            next_id: 1,
            servers: HashMap::new(),
            server_keys: HashMap::new(),
            clients: HashMap::new(),
            client_keys: HashMap::new(),
            accepted: HashMap::new(),
            wakeups: BinaryHeap::new(),
            out: VecDeque::new(),
        }
    }

    pub fn timers(&self) -> Timers {
        self.timers
    }

    /// How many transactions are alive (for metrics and tests).
    pub fn len(&self) -> usize {
        self.servers.len() + self.clients.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn poll(&mut self) -> Option<Output> {
        self.out.pop_front()
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(Reverse((at, id))) = self.wakeups.peek().copied() {
            if self.deadline_of(id) == Some(at) {
                return Some(at);
            }
            self.wakeups.pop();
        }
        None
    }

    fn deadline_of(&self, id: TxId) -> Option<Instant> {
        let (r, e) = if let Some(s) = self.servers.get(&id) {
            (s.retransmit.map(|r| r.0), s.end)
        } else if let Some(c) = self.clients.get(&id) {
            (c.retransmit.map(|r| r.0), c.end)
        } else {
            return None;
        };
        match (r, e) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn schedule(&mut self, id: TxId) {
        if let Some(at) = self.deadline_of(id) {
            self.wakeups.push(Reverse((at, id)));
        }
    }

    fn alloc_id(&mut self) -> TxId {
        let id = TxId(self.next_id);
        self.next_id += 1;
        id
    }

    fn transmit(&mut self, to: Peer, bytes: Vec<u8>) {
        self.out.push_back(Output::Transmit(Transmit {
            to,
            bytes,
            retransmission: false,
        }));
    }

    fn retransmit(&mut self, to: Peer, bytes: Vec<u8>) {
        self.out.push_back(Output::Transmit(Transmit {
            to,
            bytes,
            retransmission: true,
        }));
    }

    fn event(&mut self, e: TxEvent) {
        self.out.push_back(Output::Event(e));
    }

    /// Sends a message outside any transaction (a stateless 400, the ACK to a 2xx).
    pub fn send_stateless(&mut self, mut msg: SipMessage, to: Peer) {
        message::finish(&mut msg);
        self.transmit(to, message::to_bytes(&msg));
    }

    /// Adds our Via (fresh branch, rport) for `transport` on top of `req`'s Vias.
    pub fn add_via(&self, req: &mut Request, transport: Transport) -> String {
        let branch = message::new_branch();
        let local = self
            .locals
            .iter()
            .find(|l| l.transport == transport)
            .or(self.locals.first())
            .map(|l| l.advertise)
            .unwrap_or_else(|| "127.0.0.1:5060".parse().expect("valid literal"));
        let via = format!(
            "SIP/2.0/{} {}:{};branch={branch};rport",
            transport,
            host_str(local.ip()),
            local.port()
        );
        let mut headers = rsip::Headers::default();
        headers.push(Header::Via(rsip::headers::Via::new(via)));
        for h in req.headers.iter() {
            headers.push(h.clone());
        }
        req.headers = headers;
        branch
    }

    /// Our Via-sent-by / Contact address for a transport.
    pub fn local_addr(&self, transport: Transport) -> Option<SocketAddr> {
        self.locals
            .iter()
            .find(|l| l.transport == transport)
            .map(|l| l.advertise)
    }

    // ---- Client side ----

    /// Starts a client transaction: adds our Via, sends, and arms A/B or E/F.
    pub fn send_request(&mut self, req: Request, to: Peer, now: Instant) -> TxId {
        let id = self.alloc_id();
        self.send_request_as(id, req, to, now);
        id
    }

    /// Starts a client transaction under an id the user allocated ([`TxIds`]).
    pub fn send_request_as(&mut self, id: TxId, mut req: Request, to: Peer, now: Instant) {
        let branch = self.add_via(&mut req, to.transport);
        let mut msg = SipMessage::Request(req.clone());
        message::finish(&mut msg);
        let bytes = message::to_bytes(&msg);
        let invite = req.method == Method::Invite;
        let key = client_key(&branch, &req.method);
        let t1 = self.timers.t1;
        let retransmit = (!to.reliable()).then_some((now + t1, t1));
        self.transmit(to, bytes.clone());
        self.client_keys.insert(key.clone(), id);
        self.clients.insert(
            id,
            Box::new(ClientTx {
                key,
                invite,
                state: ClientState::Calling,
                req,
                bytes,
                peer: to,
                retransmit,
                end: Some(now + 64 * t1), // Timer B / F
                ack: None,
                cancel_requested: false,
                cancel_pending: false,
            }),
        );
        self.schedule(id);
    }

    /// The request a client transaction sent (with our Via).
    pub fn client_request(&self, tx: TxId) -> Option<&Request> {
        self.clients.get(&tx).map(|c| &c.req)
    }

    /// Where a client transaction sends.
    pub fn client_peer(&self, tx: TxId) -> Option<Peer> {
        self.clients.get(&tx).map(|c| c.peer)
    }

    /// Cancels a pending INVITE client transaction (RFC 3261 §9.1): the CANCEL goes out now
    /// if a provisional response arrived, else on the first one. Either way the INVITE
    /// transaction is given 64·T1 more for its final response (the 487) and then dropped.
    pub fn cancel(&mut self, invite_tx: TxId, now: Instant) {
        let t1 = self.timers.t1;
        let Some(c) = self.clients.get_mut(&invite_tx) else {
            return;
        };
        if !c.invite || !matches!(c.state, ClientState::Calling | ClientState::Proceeding) {
            return;
        }
        c.end = Some(now + 64 * t1);
        c.cancel_requested = true;
        if c.state == ClientState::Calling {
            c.cancel_pending = true;
        } else {
            self.send_cancel(invite_tx, now);
        }
        self.schedule(invite_tx);
    }

    fn send_cancel(&mut self, invite_tx: TxId, now: Instant) {
        let Some(c) = self.clients.get(&invite_tx) else {
            return;
        };
        let invite = &c.req;
        let mut headers = rsip::Headers::default();
        for h in invite.headers.iter() {
            match h {
                Header::Via(_) if headers.iter().all(|x| !matches!(x, Header::Via(_))) => {
                    headers.push(h.clone())
                }
                Header::From(_) | Header::To(_) | Header::CallId(_) | Header::Route(_) => {
                    headers.push(h.clone())
                }
                Header::CSeq(cs) => {
                    let seq = cs.value().split_whitespace().next().unwrap_or("1");
                    headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
                        "{seq} CANCEL"
                    ))));
                }
                _ => {}
            }
        }
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        let cancel = Request {
            method: Method::Cancel,
            uri: invite.uri.clone(),
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        };
        // The CANCEL reuses the INVITE's branch, so it is sent without adding a new Via.
        let branch = message::branch(&SipMessage::Request(cancel.clone()));
        let peer = c.peer;
        let mut msg = SipMessage::Request(cancel.clone());
        message::finish(&mut msg);
        let bytes = message::to_bytes(&msg);
        let id = self.alloc_id();
        let key = client_key(&branch, &Method::Cancel);
        let t1 = self.timers.t1;
        self.transmit(peer, bytes.clone());
        self.client_keys.insert(key.clone(), id);
        self.clients.insert(
            id,
            Box::new(ClientTx {
                key,
                invite: false,
                state: ClientState::Calling,
                req: cancel,
                bytes,
                peer,
                retransmit: (!peer.reliable()).then_some((now + t1, t1)),
                end: Some(now + 64 * t1),
                ack: None,
                cancel_requested: false,
                cancel_pending: false,
            }),
        );
        self.schedule(id);
    }

    fn on_response(&mut self, resp: Response, now: Instant) {
        let msg = SipMessage::Response(resp);
        let branch = message::branch(&msg);
        let (_, method) = message::cseq(&msg);
        let SipMessage::Response(resp) = msg else {
            unreachable!()
        };
        let Some(&id) = self.client_keys.get(&client_key(&branch, &method)) else {
            tracing::debug!(%branch, "response matches no transaction; dropped");
            return;
        };
        let code = resp.status_code.code();
        let t = self.timers;
        let Some(c) = self.clients.get_mut(&id) else {
            return;
        };
        let reliable = c.peer.reliable();
        let mut deliver = true;
        let mut cancel_now = false;
        if c.invite {
            match (c.state, code) {
                (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                    c.state = ClientState::Proceeding;
                    c.retransmit = None;
                    // Timer B runs only while Calling (RFC 3261 §17.1.1.2); a CANCEL's own
                    // 64·T1 limit stays.
                    if !c.cancel_requested {
                        c.end = None;
                    }
                    cancel_now = std::mem::take(&mut c.cancel_pending);
                }
                (ClientState::Calling | ClientState::Proceeding, 200..=299) => {
                    c.state = ClientState::Accepted;
                    c.retransmit = None;
                    c.end = Some(now + 64 * t.t1); // Timer M
                }
                (ClientState::Calling | ClientState::Proceeding, _) => {
                    let ack = build_ack_for_error(&c.req, &resp);
                    c.ack = Some(ack.clone());
                    c.state = ClientState::Completed;
                    c.retransmit = None;
                    c.end = Some(
                        now + if reliable {
                            Duration::ZERO
                        } else {
                            Duration::from_secs(32)
                        },
                    ); // Timer D
                    let peer = c.peer;
                    self.transmit(peer, ack);
                }
                (ClientState::Accepted, 200..=299) => {} // retransmitted 2xx: TU re-ACKs
                (ClientState::Completed, 300..=699) => {
                    deliver = false;
                    let (peer, ack) = (c.peer, c.ack.clone().unwrap_or_default());
                    self.transmit(peer, ack);
                }
                _ => deliver = false,
            }
        } else {
            match (c.state, code) {
                (ClientState::Calling | ClientState::Proceeding, 100..=199) => {
                    c.state = ClientState::Proceeding;
                    if let Some((_, _)) = c.retransmit {
                        // Timer E continues at T2 in Proceeding.
                        c.retransmit = Some((now + t.t2, t.t2));
                    }
                }
                (ClientState::Calling | ClientState::Proceeding, _) => {
                    c.state = ClientState::Completed;
                    c.retransmit = None;
                    c.end = Some(now + if reliable { Duration::ZERO } else { t.t4 });
                    // Timer K
                }
                _ => deliver = false,
            }
        }
        if cancel_now {
            self.send_cancel(id, now);
        }
        self.schedule(id);
        if deliver {
            self.event(TxEvent::Response { tx: id, resp });
        }
    }

    // ---- Server side ----

    /// Sends a response in a server transaction (1xx, 2xx, 3xx–6xx).
    pub fn respond(&mut self, tx: TxId, resp: Response, now: Instant) {
        let t = self.timers;
        let Some(s) = self.servers.get_mut(&tx) else {
            tracing::debug!(?tx, "respond: transaction already gone");
            return;
        };
        if !matches!(s.state, ServerState::Trying | ServerState::Proceeding) {
            return; // a final response was already sent (e.g. 487 after CANCEL)
        }
        let code = resp.status_code.code();
        let mut msg = SipMessage::Response(resp);
        message::finish(&mut msg);
        if s.to_tag.is_none() {
            s.to_tag = message::to_tag(&msg);
        }
        let bytes = message::to_bytes(&msg);
        let reliable = s.peer.reliable();
        s.last_response = Some(bytes.clone());
        match code {
            100..=199 => s.state = ServerState::Proceeding,
            200..=299 if s.invite => {
                s.state = ServerState::Accepted;
                s.was_2xx = true;
                s.retransmit = Some((now + t.t1, t.t1));
                s.end = Some(now + 64 * t.t1); // Timer L
                let key = (s.call_id.clone(), s.cseq);
                self.accepted.insert(key, tx);
            }
            _ if s.invite => {
                s.state = ServerState::Completed;
                s.retransmit = (!reliable).then_some((now + t.t1, t.t1)); // Timer G
                s.end = Some(now + 64 * t.t1); // Timer H
            }
            _ => {
                s.state = ServerState::Completed;
                s.end = Some(now + if reliable { Duration::ZERO } else { 64 * t.t1 });
                // Timer J
            }
        }
        let peer = s.peer;
        self.transmit(peer, bytes);
        self.schedule(tx);
    }

    /// The request of a server transaction.
    pub fn server_request(&self, tx: TxId) -> Option<&Request> {
        self.servers.get(&tx).map(|s| &s.req)
    }

    /// Is this INVITE server transaction still waiting for a final response?
    pub fn is_pending(&self, tx: TxId) -> bool {
        self.servers
            .get(&tx)
            .is_some_and(|s| matches!(s.state, ServerState::Trying | ServerState::Proceeding))
    }

    fn on_request(&mut self, req: Request, from: Peer, now: Instant) {
        let method = req.method;
        let msg = SipMessage::Request(req);
        let key = server_key(&msg, &method);
        let SipMessage::Request(req) = msg else {
            unreachable!()
        };

        if method == Method::Ack {
            self.on_ack(key, req, from, now);
            return;
        }

        if let Some(&id) = self.server_keys.get(&key) {
            // A retransmission: answer with the last response, never bother the TU.
            if let Some(s) = self.servers.get(&id) {
                if let Some(last) = s.last_response.clone() {
                    let peer = s.peer;
                    self.retransmit(peer, last);
                }
            }
            return;
        }

        if method == Method::Cancel {
            self.on_cancel(req, from, now);
            return;
        }

        let id = self.alloc_id();
        let invite = method == Method::Invite;
        self.server_keys.insert(key.clone(), id);
        let tx = ServerTx::new(key, req.clone(), from, now, self.timers.t1);
        self.servers.insert(id, Box::new(tx));
        self.schedule(id);
        if invite {
            // Always answer 100 at once: the TU may need a round trip (auth, routing)
            // and the caller must stop retransmitting (§17.2.1).
            let trying = message::response_to(&req, 100, None);
            self.respond(id, trying, now);
        }
        self.event(TxEvent::Request { tx: id, req, from });
    }

    fn on_ack(&mut self, key: String, req: Request, from: Peer, now: Instant) {
        // ACK to a non-2xx: same branch as the INVITE.
        if let Some(&id) = self.server_keys.get(&key) {
            if let Some(s) = self.servers.get_mut(&id) {
                if s.state == ServerState::Completed {
                    s.state = ServerState::Confirmed;
                    s.acked = true;
                    s.retransmit = None;
                    let reliable = s.peer.reliable();
                    s.end = Some(
                        now + if reliable {
                            Duration::ZERO
                        } else {
                            self.timers.t4
                        },
                    ); // Timer I
                    self.schedule(id);
                    return;
                }
                if s.state == ServerState::Confirmed {
                    return;
                }
            }
        }
        // ACK to a 2xx: matched by Call-ID and CSeq number.
        let msg = SipMessage::Request(req);
        let dialog_key = (message::call_id(&msg), message::cseq(&msg).0);
        let SipMessage::Request(req) = msg else {
            unreachable!()
        };
        if let Some(&id) = self.accepted.get(&dialog_key) {
            if let Some(s) = self.servers.get_mut(&id) {
                if s.acked {
                    return; // a retransmitted ACK
                }
                s.acked = true;
                s.retransmit = None;
                self.schedule(id);
            }
        }
        self.event(TxEvent::Ack { req, from });
    }

    fn on_cancel(&mut self, cancel: Request, from: Peer, now: Instant) {
        let msg = SipMessage::Request(cancel);
        let invite_key = server_key(&msg, &Method::Invite);
        let SipMessage::Request(cancel) = msg else {
            unreachable!()
        };
        let target = self.server_keys.get(&invite_key).copied();
        // The CANCEL is a non-INVITE transaction of its own; create it to absorb retransmits.
        let cancel_key = server_key(&SipMessage::Request(cancel.clone()), &Method::Cancel);
        let id = self.alloc_id();
        self.server_keys.insert(cancel_key.clone(), id);
        let tx = ServerTx::new(cancel_key, cancel.clone(), from, now, self.timers.t1);
        self.servers.insert(id, Box::new(tx));
        match target {
            Some(inv) if self.is_pending(inv) => {
                let ok = message::response_to(&cancel, 200, None);
                self.respond(id, ok, now);
                let invite_req = self.servers[&inv].req.clone();
                let tag = self.servers[&inv]
                    .to_tag
                    .clone()
                    .unwrap_or_else(message::new_tag);
                let terminated = message::response_to(&invite_req, 487, Some(&tag));
                self.respond(inv, terminated, now);
                self.event(TxEvent::Cancelled { tx: inv, cancel });
            }
            Some(_) => {
                // Too late: the INVITE already has its final response. 200 to the CANCEL
                // anyway (§9.2), it has no effect.
                let ok = message::response_to(&cancel, 200, None);
                self.respond(id, ok, now);
            }
            None => {
                let no = message::response_to(&cancel, 481, None);
                self.respond(id, no, now);
            }
        }
    }

    // ---- Input ----

    pub fn handle_message(&mut self, msg: SipMessage, from: Peer, now: Instant) {
        match msg {
            SipMessage::Request(mut req) => {
                message::stamp_received(&mut req, from.addr);
                // Over UDP, responses follow the Via (received/rport); over TCP they go back
                // on the connection the request came in on.
                let reply_to = match from.transport {
                    Transport::Udp => Peer {
                        transport: Transport::Udp,
                        addr: message::response_target(&req, from.addr),
                    },
                    _ => from,
                };
                self.on_request(req, reply_to, now)
            }
            SipMessage::Response(resp) => self.on_response(resp, now),
        }
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((at, id))) = self.wakeups.peek().copied() {
            if at > now {
                break;
            }
            self.wakeups.pop();
            if self.deadline_of(id) != Some(at) {
                continue; // stale entry
            }
            self.fire(id, now);
        }
    }

    fn fire(&mut self, id: TxId, now: Instant) {
        let t2 = self.timers.t2;
        if let Some(s) = self.servers.get_mut(&id) {
            if s.end.is_some_and(|e| e <= now) {
                // H, I, J, L: the transaction ends.
                let s = self.servers.remove(&id).expect("present");
                self.server_keys.remove(&s.key);
                if s.was_2xx {
                    let key = (s.call_id, s.cseq);
                    // Only if the index still points here (a newer INVITE may reuse it).
                    if self.accepted.get(&key) == Some(&id) {
                        self.accepted.remove(&key);
                    }
                }
                let unacked = s.invite
                    && !s.acked
                    && matches!(s.state, ServerState::Accepted | ServerState::Completed);
                if unacked {
                    self.event(TxEvent::AckTimeout {
                        tx: id,
                        was_2xx: s.was_2xx,
                    });
                }
                return;
            }
            if let Some((at, interval)) = s.retransmit {
                if at <= now {
                    let next = (interval * 2).min(t2);
                    s.retransmit = Some((now + next, next));
                    let (peer, bytes) = (s.peer, s.last_response.clone().unwrap_or_default());
                    self.retransmit(peer, bytes);
                }
            }
            self.schedule(id);
            return;
        }
        if let Some(c) = self.clients.get_mut(&id) {
            if c.end.is_some_and(|e| e <= now) {
                let c = self.clients.remove(&id).expect("present");
                self.client_keys.remove(&c.key);
                if matches!(c.state, ClientState::Calling | ClientState::Proceeding) {
                    self.event(TxEvent::Timeout { tx: id });
                }
                return;
            }
            if let Some((at, interval)) = c.retransmit {
                if at <= now {
                    // Timer A doubles without cap; Timer E caps at T2.
                    let next = if c.invite {
                        interval * 2
                    } else {
                        (interval * 2).min(t2)
                    };
                    c.retransmit = Some((now + next, next));
                    let (peer, bytes) = (c.peer, c.bytes.clone());
                    self.retransmit(peer, bytes);
                }
            }
            self.schedule(id);
        }
    }
}

impl ServerTx {
    fn new(key: String, req: Request, peer: Peer, now: Instant, t1: Duration) -> Self {
        let msg = SipMessage::Request(req);
        let (call_id, cseq) = (message::call_id(&msg), message::cseq(&msg).0);
        let SipMessage::Request(req) = msg else {
            unreachable!()
        };
        let invite = req.method == Method::Invite;
        ServerTx {
            key,
            invite,
            state: if invite {
                ServerState::Proceeding
            } else {
                ServerState::Trying
            },
            req,
            peer,
            last_response: None,
            retransmit: None,
            // A non-INVITE request the TU never answers is forgotten once its client has
            // given up (Timer F, 64·T1); an INVITE waits as long as the call rings.
            end: (!invite).then_some(now + 64 * t1),
            acked: false,
            was_2xx: false,
            to_tag: None,
            call_id,
            cseq,
        }
    }
}

/// ACK for a non-2xx final response (§17.1.1.3): same branch, To from the response.
fn build_ack_for_error(invite: &Request, resp: &Response) -> Vec<u8> {
    let mut headers = rsip::Headers::default();
    let mut via_done = false;
    for h in invite.headers.iter() {
        match h {
            Header::Via(_) if !via_done => {
                via_done = true;
                headers.push(h.clone());
            }
            Header::From(_) | Header::CallId(_) | Header::Route(_) => headers.push(h.clone()),
            Header::CSeq(cs) => {
                let seq = cs.value().split_whitespace().next().unwrap_or("1");
                headers.push(Header::CSeq(rsip::headers::CSeq::new(format!("{seq} ACK"))));
            }
            _ => {}
        }
    }
    if let Some(to) = resp.headers.iter().find(|h| matches!(h, Header::To(_))) {
        headers.push(to.clone());
    }
    headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
    let mut msg = SipMessage::Request(Request {
        method: Method::Ack,
        uri: invite.uri.clone(),
        version: rsip::Version::V2,
        headers,
        body: Vec::new(),
    });
    message::finish(&mut msg);
    message::to_bytes(&msg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(port: u16) -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
        }
    }

    fn layer() -> TransactionLayer {
        TransactionLayer::new(
            Timers::default(),
            vec![LocalAddr {
                transport: Transport::Udp,
                advertise: "127.0.0.1:5060".parse().unwrap(),
            }],
        )
    }

    fn invite(branch: &str) -> SipMessage {
        let raw = format!(
            "INVITE sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch={branch}\r\nFrom: <sip:c@127.0.0.1>;tag=ft\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: call-1\r\nCSeq: 7 INVITE\r\nContact: <sip:c@127.0.0.1:5070>\r\nContent-Length: 0\r\n\r\n"
        );
        message::parse(raw.as_bytes()).unwrap()
    }

    fn drain(l: &mut TransactionLayer) -> (Vec<Transmit>, Vec<TxEvent>) {
        let (mut t, mut e) = (vec![], vec![]);
        while let Some(o) = l.poll() {
            match o {
                Output::Transmit(x) => t.push(x),
                Output::Event(x) => e.push(x),
            }
        }
        (t, e)
    }

    fn status(bytes: &[u8]) -> u16 {
        match message::parse(bytes).unwrap() {
            SipMessage::Response(r) => r.status_code.code(),
            SipMessage::Request(r) => panic!("expected a response, got {}", r.method),
        }
    }

    /// An incoming INVITE answered by the TU with `code`; returns the time it was answered.
    fn answered_invite(l: &mut TransactionLayer, branch: &str, code: u16) -> Instant {
        let now = Instant::now();
        l.handle_message(invite(branch), udp(5070), now);
        let (_, e) = drain(l);
        let TxEvent::Request { tx, req, .. } = &e[0] else {
            panic!("expected the INVITE to reach the TU: {e:?}")
        };
        l.respond(*tx, message::response_to(req, code, Some("tt")), now);
        drain(l);
        now
    }

    /// Runs the layer's timers on a simulated clock until `until`, collecting what it sends.
    fn run_until(
        l: &mut TransactionLayer,
        now: &mut Instant,
        until: Instant,
    ) -> Vec<(Duration, Transmit)> {
        let start = *now;
        let mut sent = vec![];
        while let Some(at) = l.poll_timeout() {
            if at > until {
                break;
            }
            *now = at;
            l.handle_timeout(at);
            let (t, _) = drain(l);
            sent.extend(t.into_iter().map(|t| (at - start, t)));
        }
        *now = until;
        sent
    }

    #[test]
    fn invite_gets_100_and_retransmissions_are_absorbed() {
        let mut l = layer();
        let now = Instant::now();
        l.handle_message(invite("z9hG4bK1"), udp(5070), now);
        let (t, e) = drain(&mut l);
        assert_eq!(t.len(), 1);
        assert_eq!(status(&t[0].bytes), 100);
        assert!(matches!(&e[..], [TxEvent::Request { .. }]));
        // The same INVITE again: the 100 is repeated, the TU hears nothing.
        l.handle_message(invite("z9hG4bK1"), udp(5070), now);
        let (t, e) = drain(&mut l);
        assert_eq!(t.len(), 1);
        assert_eq!(status(&t[0].bytes), 100);
        assert!(e.is_empty());
    }

    #[test]
    fn lost_200_is_retransmitted_on_timer_g_schedule_until_ack() {
        let mut l = layer();
        let mut now = Instant::now();
        let start = now;
        l.handle_message(invite("z9hG4bK2"), udp(5070), now);
        let (_, e) = drain(&mut l);
        let TxEvent::Request { tx, req, .. } = &e[0] else {
            panic!()
        };
        l.respond(*tx, message::response_to(req, 200, Some("tt")), now);
        let (t, _) = drain(&mut l);
        assert_eq!(status(&t[0].bytes), 200);
        // No ACK for 10 s: retransmissions at 0.5, 1.5, 3.5, 7.5 s (interval 0.5,1,2,4 capped at T2=4).
        let sent = run_until(&mut l, &mut now, start + Duration::from_millis(10_000));
        let at: Vec<u128> = sent.iter().map(|(d, _)| d.as_millis()).collect();
        assert_eq!(at, vec![500, 1500, 3500, 7500]);
        assert!(sent.iter().all(|(_, t)| status(&t.bytes) == 200));
        // The ACK (new branch) stops them and reaches the TU once.
        let ack = message::parse(b"ACK sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKack\r\nFrom: <sip:c@127.0.0.1>;tag=ft\r\nTo: <sip:2001@127.0.0.1>;tag=tt\r\nCall-ID: call-1\r\nCSeq: 7 ACK\r\n\r\n").unwrap();
        l.handle_message(ack.clone(), udp(5070), now);
        l.handle_message(ack, udp(5070), now);
        let (_, e) = drain(&mut l);
        assert_eq!(
            e.iter()
                .filter(|e| matches!(e, TxEvent::Ack { .. }))
                .count(),
            1
        );
        let sent = run_until(&mut l, &mut now, start + Duration::from_secs(60));
        assert!(sent.is_empty(), "no retransmission after the ACK");
        assert!(l.is_empty(), "Timer L ended the transaction");
    }

    #[test]
    fn unacked_200_gives_up_after_64_t1() {
        let mut l = layer();
        let start = answered_invite(&mut l, "z9hG4bK3", 200);
        let mut gave_up = None;
        while let Some(now) = l.poll_timeout() {
            l.handle_timeout(now);
            let (_, e) = drain(&mut l);
            if e.iter()
                .any(|e| matches!(e, TxEvent::AckTimeout { was_2xx: true, .. }))
            {
                gave_up = Some(now - start);
            }
        }
        assert_eq!(gave_up, Some(Duration::from_secs(32)));
    }

    #[test]
    fn timer_h_gives_up_on_an_unacknowledged_error_response() {
        let mut l = layer();
        let start = answered_invite(&mut l, "z9hG4bK6", 486);
        let mut retransmissions = 0;
        let mut gave_up = None;
        while let Some(now) = l.poll_timeout() {
            l.handle_timeout(now);
            let (t, e) = drain(&mut l);
            retransmissions += t.len();
            if e.iter()
                .any(|e| matches!(e, TxEvent::AckTimeout { was_2xx: false, .. }))
            {
                gave_up = Some(now - start);
            }
        }
        // Timer G: 0.5, 1.5, 3.5, 7.5, then every T2 (4 s) until Timer H at 64·T1 = 32 s.
        assert_eq!(retransmissions, 10);
        assert_eq!(gave_up, Some(Duration::from_secs(32)));
        assert!(l.is_empty());
    }

    #[test]
    fn error_response_retransmits_until_ack_then_timer_h_or_i() {
        let mut l = layer();
        let start = answered_invite(&mut l, "z9hG4bK4", 486);
        let mut now = start;
        let sent = run_until(&mut l, &mut now, start + Duration::from_millis(1600));
        assert_eq!(sent.len(), 2, "486 repeated at 0.5 s and 1.5 s");
        // ACK with the INVITE's branch confirms; no more 486.
        let ack = message::parse(b"ACK sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK4\r\nFrom: <sip:c@127.0.0.1>;tag=ft\r\nTo: <sip:2001@127.0.0.1>;tag=tt\r\nCall-ID: call-1\r\nCSeq: 7 ACK\r\n\r\n").unwrap();
        l.handle_message(ack, udp(5070), now);
        let (_, e) = drain(&mut l);
        assert!(
            e.is_empty(),
            "an ACK to a non-2xx stays inside the transaction"
        );
        let sent = run_until(&mut l, &mut now, start + Duration::from_secs(40));
        assert!(sent.is_empty());
        assert!(l.is_empty());
    }

    #[test]
    fn cancel_gets_200_and_invite_487() {
        let mut l = layer();
        let now = Instant::now();
        l.handle_message(invite("z9hG4bK5"), udp(5070), now);
        drain(&mut l);
        let cancel = message::parse(b"CANCEL sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK5\r\nFrom: <sip:c@127.0.0.1>;tag=ft\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: call-1\r\nCSeq: 7 CANCEL\r\n\r\n").unwrap();
        l.handle_message(cancel, udp(5070), now);
        let (t, e) = drain(&mut l);
        let codes: Vec<u16> = t.iter().map(|t| status(&t.bytes)).collect();
        assert_eq!(codes, vec![200, 487]);
        assert!(matches!(&e[..], [TxEvent::Cancelled { .. }]));
        // A CANCEL for nothing gets 481.
        let stray = message::parse(b"CANCEL sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKnone\r\nFrom: <sip:c@127.0.0.1>;tag=ft\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: call-9\r\nCSeq: 1 CANCEL\r\n\r\n").unwrap();
        l.handle_message(stray, udp(5070), now);
        let (t, _) = drain(&mut l);
        assert_eq!(status(&t[0].bytes), 481);
    }

    fn outgoing_invite() -> Request {
        let SipMessage::Request(r) = message::parse(b"INVITE sip:2001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:1;branch=z9hG4bKremoved\r\nFrom: <sip:100@127.0.0.1>;tag=ours\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: out-1\r\nCSeq: 1 INVITE\r\n\r\n").unwrap() else { panic!() };
        let mut r = r;
        r.headers.retain(|h| !matches!(h, Header::Via(_)));
        r
    }

    #[test]
    fn client_invite_timer_a_doubles_and_timer_b_times_out() {
        let mut l = layer();
        let mut now = Instant::now();
        let start = now;
        let tx = l.send_request(outgoing_invite(), udp(5080), now);
        drain(&mut l);
        let mut retrans = vec![];
        let mut timeout = None;
        while let Some(at) = l.poll_timeout() {
            now = at;
            l.handle_timeout(now);
            let (t, e) = drain(&mut l);
            retrans.extend(t.iter().map(|_| (now - start).as_millis()));
            if e.iter()
                .any(|e| matches!(e, TxEvent::Timeout { tx: x } if *x == tx))
            {
                timeout = Some((now - start).as_millis());
            }
        }
        assert_eq!(retrans, vec![500, 1500, 3500, 7500, 15500, 31500]);
        assert_eq!(timeout, Some(32_000));
    }

    #[test]
    fn cancel_waits_for_a_provisional_response_and_limits_the_invite() {
        let mut l = layer();
        let start = Instant::now();
        let tx = l.send_request(outgoing_invite(), udp(5080), start);
        let (t, _) = drain(&mut l);
        let SipMessage::Request(sent) = message::parse(&t[0].bytes).unwrap() else {
            panic!()
        };
        // Cancelled before any answer: nothing goes out yet (RFC 3261 §9.1).
        l.cancel(tx, start);
        let (t, _) = drain(&mut l);
        assert!(t.is_empty(), "no CANCEL before a provisional response");
        // The 180 releases it, with the INVITE's branch.
        let ringing = SipMessage::Response(message::response_to(&sent, 180, Some("callee")));
        l.handle_message(ringing, udp(5080), start);
        let (t, e) = drain(&mut l);
        assert!(matches!(&e[..], [TxEvent::Response { .. }]));
        let SipMessage::Request(cancel) = message::parse(&t[0].bytes).unwrap() else {
            panic!("expected the CANCEL")
        };
        assert_eq!(cancel.method, Method::Cancel);
        assert_eq!(
            message::branch(&SipMessage::Request(cancel)),
            message::branch(&SipMessage::Request(sent))
        );
        // No 487 ever comes: the INVITE transaction ends 64·T1 after the cancel, silently
        // (the TU already gave up on it), and nothing is left behind.
        let mut now = start;
        let mut events = vec![];
        while let Some(at) = l.poll_timeout() {
            now = at;
            l.handle_timeout(now);
            events.extend(drain(&mut l).1);
        }
        assert_eq!(now - start, Duration::from_secs(32));
        assert!(l.is_empty());
        assert!(events
            .iter()
            .all(|e| !matches!(e, TxEvent::Response { .. })));
    }

    #[test]
    fn a_487_after_cancel_keeps_the_to_tag_of_the_ringing() {
        let mut l = layer();
        let now = Instant::now();
        l.handle_message(invite("z9hG4bK7"), udp(5070), now);
        let (_, e) = drain(&mut l);
        let TxEvent::Request { tx, req, .. } = &e[0] else {
            panic!()
        };
        l.respond(*tx, message::response_to(req, 180, Some("ring-tag")), now);
        drain(&mut l);
        let cancel = message::parse(b"CANCEL sip:2001@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK7\r\nFrom: <sip:c@127.0.0.1>;tag=ft\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: call-1\r\nCSeq: 7 CANCEL\r\n\r\n").unwrap();
        l.handle_message(cancel, udp(5070), now);
        let (t, _) = drain(&mut l);
        let terminated = message::parse(&t[1].bytes).unwrap();
        assert_eq!(message::to_tag(&terminated).as_deref(), Some("ring-tag"));
    }

    #[test]
    fn an_unanswered_non_invite_is_forgotten_after_64_t1() {
        let mut l = layer();
        let start = Instant::now();
        let info = String::from_utf8(message::to_bytes(&invite("z9hG4bK8")))
            .unwrap()
            .replace("INVITE sip", "INFO sip")
            .replace("7 INVITE", "7 INFO");
        l.handle_message(message::parse(info.as_bytes()).unwrap(), udp(5070), start);
        drain(&mut l);
        assert_eq!(l.len(), 1);
        assert_eq!(l.poll_timeout(), Some(start + Duration::from_secs(32)));
        l.handle_timeout(start + Duration::from_secs(32));
        assert!(l.is_empty());
    }

    #[test]
    fn client_invite_error_is_acked_in_transaction() {
        let mut l = layer();
        let now = Instant::now();
        let tx = l.send_request(outgoing_invite(), udp(5080), now);
        let (t, _) = drain(&mut l);
        let SipMessage::Request(sent) = message::parse(&t[0].bytes).unwrap() else {
            panic!()
        };
        let mut busy = message::response_to(&sent, 486, Some("callee"));
        busy.headers.retain(|h| !matches!(h, Header::Server(_)));
        let busy_msg = SipMessage::Response(busy);
        l.handle_message(busy_msg.clone(), udp(5080), now);
        let (t, e) = drain(&mut l);
        assert!(matches!(&e[..], [TxEvent::Response { tx: x, .. }] if *x == tx));
        let SipMessage::Request(ack) = message::parse(&t[0].bytes).unwrap() else {
            panic!()
        };
        assert_eq!(ack.method, Method::Ack);
        let ack_msg = SipMessage::Request(ack);
        assert_eq!(
            message::branch(&ack_msg),
            message::branch(&SipMessage::Request(sent))
        );
        assert_eq!(message::to_tag(&ack_msg).as_deref(), Some("callee"));
        // A retransmitted 486 is re-ACKed and not delivered again.
        l.handle_message(busy_msg, udp(5080), now);
        let (t, e) = drain(&mut l);
        assert_eq!(t.len(), 1);
        assert!(e.is_empty());
    }

    #[test]
    fn non_invite_timer_e_caps_at_t2_and_f_times_out() {
        let mut l = layer();
        let mut now = Instant::now();
        let start = now;
        let mut req = outgoing_invite();
        req.method = Method::Options;
        req.headers.retain(|h| !matches!(h, Header::CSeq(_)));
        req.headers
            .push(Header::CSeq(rsip::headers::CSeq::new("1 OPTIONS")));
        l.send_request(req, udp(5080), now);
        drain(&mut l);
        let mut at = vec![];
        let mut timed_out = false;
        while let Some(t) = l.poll_timeout() {
            now = t;
            l.handle_timeout(now);
            let (tr, e) = drain(&mut l);
            at.extend(tr.iter().map(|_| (now - start).as_millis()));
            timed_out |= e.iter().any(|e| matches!(e, TxEvent::Timeout { .. }));
        }
        assert_eq!(&at[..6], &[500, 1500, 3500, 7500, 11500, 15500]);
        assert!(timed_out);
        assert_eq!(now - start, Duration::from_secs(32));
    }

    #[test]
    fn reliable_transport_sends_no_retransmissions() {
        let mut l = layer();
        let mut now = Instant::now();
        let start = now;
        let tcp = Peer {
            transport: Transport::Tcp,
            addr: "127.0.0.1:5080".parse().unwrap(),
        };
        l.send_request(outgoing_invite(), tcp, now);
        drain(&mut l);
        let sent = run_until(&mut l, &mut now, start + Duration::from_secs(40));
        assert!(sent.is_empty());
    }
}
