//! The ACD task of a cluster node. One node at a time leads: it alone runs the router,
//! for the callers and agents of every node, so a queue has one order and an agent is
//! offered whichever node's caller waits longest. Every node (the leader too) keeps its
//! own calls' channels; what they tell the ACD goes to the leader (in-process on the
//! leader itself, over the bus from the others) and the leader's word to a call goes to
//! the call's node.
//!
//! When leadership moves (the leader died or is draining), the new leader starts from
//! the configuration, and every node sends it again the callers it still has waiting.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::{mpsc, oneshot, watch};
use tracing::{info, warn};

use super::{build_router, drain, AcdMsg, AcdView, Cmd, Log, Ports};
use crate::acd::{CallEnd, CallId, Event, Router};
use crate::cluster::{BusMsg, BusSender, To};
use crate::config::Config;
use crate::events::EventLog;

/// What the ACD task of a node needs from the cluster.
pub struct Parts {
    pub bus: BusSender,
    pub inbox: mpsc::UnboundedReceiver<(String, BusMsg)>,
    pub leading: watch::Receiver<bool>,
    /// Nodes found dead by this (leading) node, with their last beat.
    pub lost: mpsc::UnboundedReceiver<(String, i64)>,
    /// Records a dead node's calls in progress (after the ACD has forgotten them).
    pub on_lost: Box<dyn Fn(String, i64) + Send>,
}

/// Router ids of other nodes' calls start here; a node's own calls keep theirs.
const REMOTE_BASE: u64 = 1 << 62;

/// A call of this node that is in the ACD.
struct Local {
    to_call: mpsc::UnboundedSender<AcdMsg>,
    /// Its entry, sent again to a new leader until an agent has answered.
    enqueue: BusMsg,
    answered: bool,
}

struct NodePorts {
    bus: BusSender,
    local: HashMap<CallId, Local>,
    /// On the leader: the router's id of each other node's call → (node, its id there).
    remote: HashMap<CallId, (String, CallId)>,
}

impl Ports for NodePorts {
    fn send(&mut self, call: CallId, msg: AcdMsg) {
        if let Some((node, id)) = self.remote.get(&call) {
            let to_call = BusMsg::AcdToCall { call: *id, msg };
            self.bus.send(To::Node(node.clone()), to_call);
        } else {
            self.deliver(call, msg);
        }
    }

    fn send_last(&mut self, call: CallId, msg: AcdMsg) -> bool {
        if let Some((node, id)) = self.remote.remove(&call) {
            self.bus
                .send(To::Node(node), BusMsg::AcdToCall { call: id, msg });
            return true;
        }
        let known = self.local.contains_key(&call);
        self.deliver(call, msg);
        known
    }
}

impl NodePorts {
    /// The leader's word to a call of this node.
    fn deliver(&mut self, call: CallId, msg: AcdMsg) {
        let last = matches!(msg, AcdMsg::Overflow { .. });
        let Some(local) = self.local.get(&call) else {
            return;
        };
        if local.to_call.send(msg).is_err() || last {
            self.local.remove(&call);
        }
    }
}

/// The router, on the leading node.
struct Leader {
    router: Router,
    log: Log,
    uuids: HashMap<CallId, String>,
    /// (node, its call id) → the router's id, for other nodes' calls.
    ids: HashMap<(String, CallId), CallId>,
    next_remote: u64,
}

struct Node {
    name: String,
    config: Config,
    events: EventLog,
    ports: NodePorts,
    leader: Option<Leader>,
    pending: HashMap<u64, oneshot::Sender<Result<(), String>>>,
    next_request: u64,
}

pub(super) async fn run(
    config: Config,
    events: EventLog,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    parts: Parts,
) {
    let Parts {
        bus,
        mut inbox,
        mut leading,
        mut lost,
        on_lost,
    } = parts;
    let mut node = Node::new(config, events, bus);
    loop {
        node.drain();
        let wake = node
            .leader
            .as_mut()
            .and_then(|l| l.router.poll_timeout())
            .map(tokio::time::Instant::from_std);
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => node.local(cmd),
                None => return,
            },
            Some((from, msg)) = inbox.recv() => node.from_bus(from, msg),
            changed = leading.changed() => {
                if changed.is_err() {
                    return;
                }
                let lead = *leading.borrow();
                node.set_leading(lead);
            }
            Some((dead, beat)) = lost.recv() => {
                node.forget_node(&dead);
                on_lost(dead, beat);
            }
            _ = super::sleep_until_opt(wake) => {
                if let Some(l) = node.leader.as_mut() {
                    l.router.handle_timeout(Instant::now());
                }
            }
        }
    }
}

impl Node {
    /// A node that does not lead (yet).
    fn new(config: Config, events: EventLog, bus: BusSender) -> Node {
        Node {
            name: bus.node().to_string(),
            config,
            events,
            ports: NodePorts {
                bus,
                local: HashMap::new(),
                remote: HashMap::new(),
            },
            leader: None,
            pending: HashMap::new(),
            next_request: 1,
        }
    }

    fn drain(&mut self) {
        if let Some(l) = self.leader.as_mut() {
            drain(&mut l.router, &mut self.ports, &l.uuids, &mut l.log);
            l.log.cause.clear();
        }
    }

    /// A command from this node's calls, switch or API.
    fn local(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Enqueue {
                call,
                uuid,
                queue,
                skills,
                priority,
                to_call,
            } => {
                let enqueue = BusMsg::AcdEnqueue {
                    call,
                    uuid,
                    queue,
                    skills,
                    priority,
                };
                self.ports.local.insert(
                    call,
                    Local {
                        to_call,
                        enqueue: enqueue.clone(),
                        answered: false,
                    },
                );
                self.to_leader(enqueue);
            }
            Cmd::Event(event) => {
                if let Some(call) = call_of(&event) {
                    if matches!(event, Event::OfferAnswered { .. }) {
                        if let Some(l) = self.ports.local.get_mut(&call) {
                            l.answered = true;
                        }
                    }
                    if ends_call(&event) {
                        self.ports.local.remove(&call);
                    }
                }
                self.to_leader(BusMsg::AcdEvent { event });
            }
            Cmd::AgentRequest {
                event,
                cause,
                reply,
            } => {
                let id = self.next_request;
                self.next_request += 1;
                self.pending.insert(id, reply);
                self.to_leader(BusMsg::AcdRequest { id, event, cause });
            }
            // Only the leader has queues and agents to show; the others show none, so
            // that sums over the nodes' metrics count each once.
            Cmd::Snapshot { reply } => {
                let view = match &self.leader {
                    Some(l) => AcdView {
                        snapshot: l.router.snapshot(Instant::now()),
                        uuids: l.uuids.clone(),
                    },
                    None => AcdView::default(),
                };
                let _ = reply.send(view);
            }
        }
    }

    fn to_leader(&mut self, msg: BusMsg) {
        if self.leader.is_some() {
            let me = self.name.clone();
            self.lead(me, msg);
        } else {
            self.ports.bus.send(To::Leader, msg);
        }
    }

    fn from_bus(&mut self, from: String, msg: BusMsg) {
        match msg {
            BusMsg::AcdEnqueue { .. } | BusMsg::AcdEvent { .. } | BusMsg::AcdRequest { .. } => {
                // Not leading: dropped, and sent again by its node to the next leader.
                if self.leader.is_some() {
                    self.lead(from, msg);
                }
            }
            BusMsg::AcdToCall { call, msg } => self.ports.deliver(call, msg),
            BusMsg::AcdReply { id, result } => {
                if let Some(reply) = self.pending.remove(&id) {
                    let _ = reply.send(result);
                }
            }
            BusMsg::LeaderIs => {
                if self.leader.is_some() {
                    warn!(other = %from, "another node says it leads the ACD");
                    return;
                }
                info!(leader = %from, "the ACD is led by another node");
                self.fail_pending();
                for local in self.ports.local.values().filter(|l| !l.answered) {
                    self.ports.bus.send(To::Leader, local.enqueue.clone());
                }
            }
            BusMsg::Bindings { .. } => {}
        }
    }

    fn set_leading(&mut self, lead: bool) {
        if lead == self.leader.is_some() {
            return;
        }
        if !lead {
            warn!("no longer leading the ACD");
            self.leader = None;
            self.ports.remote.clear();
            return;
        }
        let (router, agents) = match build_router(&self.config) {
            Ok(r) => r,
            Err(e) => {
                warn!(error = %e, "cannot lead the ACD");
                return;
            }
        };
        info!("leading the ACD");
        let mut leader = Leader {
            router,
            log: Log::new(self.events.clone()),
            uuids: HashMap::new(),
            ids: HashMap::new(),
            next_remote: REMOTE_BASE,
        };
        drain(
            &mut leader.router,
            &mut self.ports,
            &leader.uuids,
            &mut leader.log,
        );
        for a in &agents {
            leader.log.agent_changed(&leader.router, a);
        }
        self.leader = Some(leader);
        self.fail_pending();
        // This node's own waiting callers, then everyone else's (they answer LeaderIs).
        let waiting: Vec<BusMsg> = self
            .ports
            .local
            .values()
            .filter(|l| !l.answered)
            .map(|l| l.enqueue.clone())
            .collect();
        let me = self.name.clone();
        for msg in waiting {
            self.lead(me.clone(), msg);
        }
        self.ports.bus.send(To::All, BusMsg::LeaderIs);
    }

    /// Requests sent to a leader that is gone get no answer: say so.
    fn fail_pending(&mut self) {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(
                "the ACD moved to another node while this request was on its way; try again"
                    .to_string(),
            ));
        }
    }

    /// The router's id of a node's call, if the router knows it.
    fn router_id(&self, from: &str, call: CallId) -> Option<CallId> {
        if from == self.name {
            return Some(call);
        }
        self.leader
            .as_ref()?
            .ids
            .get(&(from.to_string(), call))
            .copied()
    }

    /// On the leader: what a node (this one or another) sent the ACD.
    fn lead(&mut self, from: String, msg: BusMsg) {
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        let now = Instant::now();
        match msg {
            BusMsg::AcdEnqueue {
                call,
                uuid,
                queue,
                skills,
                priority,
            } => {
                // A node sends its waiting callers again to each new leader; once is enough.
                let known = if from == self.name {
                    l.uuids.contains_key(&call)
                } else {
                    l.ids.contains_key(&(from.clone(), call))
                };
                if known {
                    return;
                }
                let id = if from == self.name {
                    call
                } else {
                    let id = CallId(l.next_remote);
                    l.next_remote += 1;
                    l.ids.insert((from.clone(), call), id);
                    self.ports.remote.insert(id, (from.clone(), call));
                    id
                };
                l.uuids.insert(id, uuid);
                let arrived = Event::CallArrived {
                    call: id,
                    queue,
                    skills,
                    priority,
                };
                if let Err(e) = l.router.handle(arrived, now) {
                    warn!(error = %e, node = %from, "ACD refused a call");
                    l.uuids.remove(&id);
                    l.ids.remove(&(from, call));
                    let reason = e.to_string();
                    self.ports.send_last(id, AcdMsg::Overflow { reason });
                }
            }
            BusMsg::AcdEvent { mut event } => {
                if let Some(call) = call_of(&event) {
                    let Some(id) = self.router_id(&from, call) else {
                        warn!(node = %from, %call, "an event about a call the ACD does not know");
                        return;
                    };
                    set_call(&mut event, id);
                }
                let done = ends_call(&event).then(|| call_of(&event)).flatten();
                let Some(l) = self.leader.as_mut() else {
                    return;
                };
                if let Err(e) = l.router.handle(event, now) {
                    warn!(error = %e, "ACD refused an event");
                }
                if let Some(id) = done {
                    self.drain();
                    self.forget(id);
                }
            }
            BusMsg::AcdRequest { id, event, cause } => {
                l.log.cause = cause;
                let result = l.router.handle(event, now).map_err(|e| e.to_string());
                if let Err(e) = &result {
                    info!(error = %e, "agent request refused");
                }
                if from == self.name {
                    if let Some(reply) = self.pending.remove(&id) {
                        let _ = reply.send(result);
                    }
                } else {
                    self.ports
                        .bus
                        .send(To::Node(from), BusMsg::AcdReply { id, result });
                }
            }
            _ => {}
        }
    }

    /// The call has left the ACD for good.
    fn forget(&mut self, id: CallId) {
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        if let Some(key) = self.ports.remote.remove(&id) {
            l.ids.remove(&key);
        }
        if let Some(uuid) = l.uuids.remove(&id) {
            l.log.remember_ended(id, uuid);
        }
    }

    /// A dead node's callers leave the queues (abandoned) and its connected calls end
    /// (the agents go on to wrap-up). All its calls are cut off from the node first, and
    /// the waiting ones leave before any agent is freed: an agent freed by the first
    /// must not be offered a caller of the dead node.
    fn forget_node(&mut self, dead: &str) {
        let Some(l) = self.leader.as_mut() else {
            return;
        };
        let mut calls: Vec<(CallId, CallId)> = l
            .ids
            .iter()
            .filter(|((n, _), _)| n == dead)
            .map(|((_, c), id)| (*id, *c))
            .collect();
        calls.sort();
        for (id, call) in &calls {
            l.ids.remove(&(dead.to_string(), *call));
            self.ports.remote.remove(id);
        }
        info!(node = %dead, calls = calls.len(), "the ACD forgets a dead node's calls");
        let now = Instant::now();
        let mut connected = Vec::new();
        for (id, _) in &calls {
            if l.router
                .handle(Event::CallAbandoned { call: *id }, now)
                .is_err()
            {
                connected.push(*id);
            }
        }
        for id in connected {
            let ended = Event::CallEnded {
                call: id,
                by: CallEnd::Caller,
            };
            if let Err(e) = l.router.handle(ended, now) {
                warn!(error = %e, %id, "could not end a dead node's call");
            }
        }
        self.drain();
        for (id, _) in calls {
            self.forget(id);
        }
    }
}

/// The call an event is about, if any.
fn call_of(e: &Event) -> Option<CallId> {
    match e {
        Event::CallArrived { call, .. }
        | Event::CallAbandoned { call }
        | Event::CallbackRequested { call }
        | Event::TransferredOut { call }
        | Event::OfferAnswered { call, .. }
        | Event::OfferDeclined { call, .. }
        | Event::CallEnded { call, .. } => Some(*call),
        _ => None,
    }
}

fn set_call(e: &mut Event, id: CallId) {
    match e {
        Event::CallArrived { call, .. }
        | Event::CallAbandoned { call }
        | Event::CallbackRequested { call }
        | Event::TransferredOut { call }
        | Event::OfferAnswered { call, .. }
        | Event::OfferDeclined { call, .. }
        | Event::CallEnded { call, .. } => *call = id,
        _ => {}
    }
}

/// Whether the call leaves the ACD for good with this event.
fn ends_call(e: &Event) -> bool {
    matches!(e, Event::CallEnded { .. } | Event::CallAbandoned { .. })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acd::CallEnd;

    const CONFIG: &str = r#"
sip:
  listen: ["udp:127.0.0.1:5060"]
rtp:
  ports: "20000-20099"
users:
  - { extension: "2001", password: secret2001 }
queues:
  - { name: support, ring_timeout_secs: 10, wrap_up_secs: 0, members: ["2001"] }
"#;

    /// A node named `name` whose bus messages the test reads; leading if `lead`.
    async fn node(
        name: &str,
        lead: bool,
    ) -> (
        Node,
        mpsc::UnboundedReceiver<(To, BusMsg)>,
        tempfile::TempDir,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = crate::store::Store::open(dir.path()).await.unwrap();
        let events = EventLog::start(store).await.unwrap();
        let config = crate::config::parse(std::path::Path::new("c.yaml"), CONFIG).unwrap();
        let (bus, rx) = BusSender::for_test(name);
        let mut node = Node::new(config, events, bus);
        node.set_leading(lead);
        (node, rx, dir)
    }

    fn enqueue(call: u64, to_call: mpsc::UnboundedSender<AcdMsg>) -> Cmd {
        Cmd::Enqueue {
            call: CallId(call),
            uuid: format!("uuid-{call}"),
            queue: "support".into(),
            skills: Vec::new(),
            priority: 0,
            to_call,
        }
    }

    fn remote_enqueue(call: u64) -> BusMsg {
        BusMsg::AcdEnqueue {
            call: CallId(call),
            uuid: format!("remote-{call}"),
            queue: "support".into(),
            skills: Vec::new(),
            priority: 0,
        }
    }

    /// What the node sent on the bus since the last call, leader announcements left out.
    fn sent(rx: &mut mpsc::UnboundedReceiver<(To, BusMsg)>) -> Vec<(To, BusMsg)> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter(|(_, m)| *m != BusMsg::LeaderIs)
            .collect()
    }

    fn offer() -> AcdMsg {
        AcdMsg::Offer {
            agent: "2001".into(),
        }
    }

    #[tokio::test]
    async fn a_follower_sends_its_caller_to_the_leader_and_hands_the_offer_to_the_call() {
        let (mut b, mut bus, _d) = node("b", false).await;
        let (to_call, mut call) = mpsc::unbounded_channel();
        b.local(enqueue(7, to_call));
        assert_eq!(
            sent(&mut bus),
            [(To::Leader, remote_enqueue_as(7, "uuid-7"))]
        );
        b.from_bus(
            "a".into(),
            BusMsg::AcdToCall {
                call: CallId(7),
                msg: offer(),
            },
        );
        assert_eq!(call.try_recv().unwrap(), offer());
        // The agent answers: the leader hears it, about the call by b's id.
        b.local(Cmd::Event(Event::OfferAnswered {
            call: CallId(7),
            agent: "2001".into(),
        }));
        let answered = BusMsg::AcdEvent {
            event: Event::OfferAnswered {
                call: CallId(7),
                agent: "2001".into(),
            },
        };
        assert_eq!(sent(&mut bus), [(To::Leader, answered)]);
    }

    fn remote_enqueue_as(call: u64, uuid: &str) -> BusMsg {
        match remote_enqueue(call) {
            BusMsg::AcdEnqueue {
                call,
                queue,
                skills,
                priority,
                ..
            } => BusMsg::AcdEnqueue {
                call,
                uuid: uuid.into(),
                queue,
                skills,
                priority,
            },
            _ => unreachable!(),
        }
    }

    #[tokio::test]
    async fn the_leader_serves_every_nodes_callers_in_one_order() {
        let (mut a, mut bus, _d) = node("a", true).await;
        // b's caller first: the agent is ready, so it is offered at once, over the bus.
        a.from_bus("b".into(), remote_enqueue(7));
        a.drain();
        assert_eq!(
            sent(&mut bus),
            [(
                To::Node("b".into()),
                BusMsg::AcdToCall {
                    call: CallId(7),
                    msg: offer()
                }
            )]
        );
        // Then one of a's own, then another of b's, while the agent talks to the first.
        let (to_call, mut own) = mpsc::unbounded_channel();
        a.local(enqueue(1, to_call));
        a.from_bus("b".into(), remote_enqueue(8));
        let answered = Event::OfferAnswered {
            call: CallId(7),
            agent: "2001".into(),
        };
        a.from_bus("b".into(), BusMsg::AcdEvent { event: answered });
        a.drain();
        assert!(own.try_recv().is_err(), "the agent is busy");
        assert!(sent(&mut bus).is_empty());
        // The first call ends: a's caller, who came before b's second, is next.
        let ended = Event::CallEnded {
            call: CallId(7),
            by: CallEnd::Caller,
        };
        a.from_bus("b".into(), BusMsg::AcdEvent { event: ended });
        a.drain();
        assert_eq!(own.try_recv().unwrap(), offer());
        assert!(sent(&mut bus).is_empty(), "b's second caller still waits");
        a.local(Cmd::Event(Event::OfferAnswered {
            call: CallId(1),
            agent: "2001".into(),
        }));
        a.local(Cmd::Event(Event::CallEnded {
            call: CallId(1),
            by: CallEnd::Agent,
        }));
        a.drain();
        assert_eq!(
            sent(&mut bus),
            [(
                To::Node("b".into()),
                BusMsg::AcdToCall {
                    call: CallId(8),
                    msg: offer()
                }
            )]
        );
    }

    #[tokio::test]
    async fn a_dead_nodes_calls_leave_the_queue_and_free_their_agent() {
        let (mut a, mut bus, _d) = node("a", true).await;
        a.from_bus("b".into(), remote_enqueue(7));
        a.from_bus("b".into(), remote_enqueue(8));
        let answered = Event::OfferAnswered {
            call: CallId(7),
            agent: "2001".into(),
        };
        a.from_bus("b".into(), BusMsg::AcdEvent { event: answered });
        a.drain();
        sent(&mut bus);
        let (to_call, mut own) = mpsc::unbounded_channel();
        a.local(enqueue(1, to_call));
        a.forget_node("b");
        a.drain();
        // b's waiting caller is gone and its agent is free again: a's caller gets it.
        assert_eq!(own.try_recv().unwrap(), offer());
        assert!(sent(&mut bus).is_empty(), "nothing goes to a dead node");
        let snapshot = a.leader.as_mut().unwrap().router.snapshot(Instant::now());
        let in_queue: Vec<CallId> = snapshot
            .queues
            .iter()
            .flat_map(|q| q.callers.iter().map(|c| c.call))
            .collect();
        assert_eq!(
            in_queue,
            [CallId(1)],
            "only a's caller, being offered: {snapshot:#?}"
        );
        // A late word from b about its calls is refused, not applied to another call.
        let late = Event::CallEnded {
            call: CallId(8),
            by: CallEnd::Caller,
        };
        a.from_bus("b".into(), BusMsg::AcdEvent { event: late });
        assert_eq!(own.try_recv().ok(), None);
    }

    #[tokio::test]
    async fn a_new_leader_hears_again_of_the_callers_still_waiting_not_of_those_answered() {
        let (mut b, mut bus, _d) = node("b", false).await;
        let (w, _waiting) = mpsc::unbounded_channel();
        let (t, _talking) = mpsc::unbounded_channel();
        b.local(enqueue(1, w));
        b.local(enqueue(2, t));
        b.local(Cmd::Event(Event::OfferAnswered {
            call: CallId(2),
            agent: "2001".into(),
        }));
        sent(&mut bus);
        b.from_bus("c".into(), BusMsg::LeaderIs);
        assert_eq!(
            sent(&mut bus),
            [(To::Leader, remote_enqueue_as(1, "uuid-1"))]
        );
        // An agent's request in flight to the old leader is answered: try again.
        let (reply, mut answer) = oneshot::channel();
        b.local(Cmd::AgentRequest {
            event: Event::AgentReady {
                agent: "2001".into(),
            },
            cause: "phone".into(),
            reply,
        });
        b.from_bus("d".into(), BusMsg::LeaderIs);
        assert!(answer.try_recv().unwrap().is_err());
    }
}
