//! The ACD task: the one owner of the queue router. Calls enqueue through it and report
//! what their phones did; it turns the router's actions into messages to those calls and
//! hands every queue event to the event log (which writes the queue log the reports are
//! computed from, off this task's loop), with an `agent.state` event whenever an
//! agent's state changes.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use super::sleep_until_opt;
use crate::acd::{
    Action, AgentConfig, CallEnd, CallId, Event, EventRow, OverflowTarget, QueueConfig, Relaxation,
    Router, Strategy, WhenEmpty, Widen,
};
use crate::acd::{AgentState, Snapshot};
use crate::config::{Config, QueueStrategy, RelaxWiden};
use crate::events::{EventLog, NewEvent};
use crate::store::{now_ms, QueueEvent};

mod cluster;
pub use cluster::Parts as ClusterParts;

/// What the ACD tells a queued call (from another node too: serialisable).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum AcdMsg {
    /// Ring this agent's phones.
    Offer { agent: String },
    /// Stop ringing this agent.
    CancelOffer { agent: String },
    /// The call leaves the queue unanswered (maximum wait, nobody logged in…).
    Overflow { reason: String },
    /// Tell the caller its position (1 = next) and the estimated wait, if known.
    Announce {
        position: u32,
        wait_minutes: Option<u64>,
    },
    /// A callback's agent answered: dial the caller and bridge it to the agent.
    DialCaller { agent: String },
}

#[derive(Debug)]
enum Cmd {
    Enqueue {
        call: CallId,
        uuid: String,
        queue: String,
        skills: Vec<(String, u8)>,
        priority: i32,
        to_call: mpsc::UnboundedSender<AcdMsg>,
    },
    Event(Event),
    /// An agent's own request (feature code, API), answered with the router's verdict;
    /// `cause` says who asked, for the agent's state history.
    AgentRequest {
        event: Event,
        cause: String,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
    /// What the router holds now.
    Snapshot {
        reply: tokio::sync::oneshot::Sender<AcdView>,
    },
}

/// The router's state as people see it, with each queued call's record id.
#[derive(Debug, Clone, Default)]
pub struct AcdView {
    pub snapshot: Snapshot,
    pub uuids: HashMap<CallId, String>,
}

/// A call's (or the switch's) way to talk to the ACD task.
#[derive(Clone)]
pub struct AcdHandle {
    tx: mpsc::UnboundedSender<Cmd>,
}

impl AcdHandle {
    #[allow(clippy::too_many_arguments)]
    pub fn enqueue(
        &self,
        call: CallId,
        uuid: &str,
        queue: &str,
        skills: Vec<(String, u8)>,
        priority: i32,
        to_call: mpsc::UnboundedSender<AcdMsg>,
    ) {
        let _ = self.tx.send(Cmd::Enqueue {
            call,
            uuid: uuid.to_string(),
            queue: queue.to_string(),
            skills,
            priority,
            to_call,
        });
    }

    pub fn answered(&self, call: CallId, agent: &str) {
        self.event(Event::OfferAnswered {
            call,
            agent: agent.to_string(),
        });
    }

    pub fn declined(&self, call: CallId, agent: &str) {
        self.event(Event::OfferDeclined {
            call,
            agent: agent.to_string(),
        });
    }

    pub fn abandoned(&self, call: CallId) {
        self.event(Event::CallAbandoned { call });
    }

    pub fn ended(&self, call: CallId, by: CallEnd) {
        self.event(Event::CallEnded { call, by });
    }

    pub fn event(&self, e: Event) {
        let _ = self.tx.send(Cmd::Event(e));
    }

    /// Sends an agent's request (log in, pause…); the receiver gets whether the router
    /// took it, so the agent can be told. `cause` says who asked (`phone`, `api:NAME`).
    pub fn agent_request(
        &self,
        event: Event,
        cause: &str,
    ) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Cmd::AgentRequest {
            event,
            cause: cause.to_string(),
            reply,
        });
        rx
    }

    /// What the router holds now; None if the ACD task is gone.
    pub async fn snapshot(&self) -> Option<AcdView> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        self.tx.send(Cmd::Snapshot { reply }).ok()?;
        rx.await.ok()
    }
}

fn strategy(s: QueueStrategy) -> Strategy {
    match s {
        QueueStrategy::LongestIdle => Strategy::LongestIdle,
        QueueStrategy::FewestCalls => Strategy::FewestCalls,
        QueueStrategy::RoundRobin => Strategy::RoundRobin,
        QueueStrategy::BestSkill => Strategy::BestSkill,
        QueueStrategy::RingAll => Strategy::RingAll,
    }
}

/// Builds the router from the configuration (members logged in and ready, as static
/// members are in Asterisk) and starts the task. None when no queue is configured.
pub fn start(
    config: &Config,
    events: EventLog,
    cluster: Option<cluster::Parts>,
) -> anyhow::Result<Option<AcdHandle>> {
    if config.queues.is_empty() {
        return Ok(None);
    }
    // A mistake in the queues stops the start on every node, leader or not.
    build_router(config)?;
    let (tx, rx) = mpsc::unbounded_channel();
    match cluster {
        Some(parts) => {
            tokio::spawn(cluster::run(config.clone(), events, rx, parts));
        }
        None => {
            let (router, agents) = build_router(config)?;
            tokio::spawn(run(router, rx, Log::new(events), agents));
        }
    }
    Ok(Some(AcdHandle { tx }))
}

/// The router the configuration describes, its members logged in and ready; and those
/// members, whose first state is to be published.
fn build_router(config: &Config) -> anyhow::Result<(Router, Vec<String>)> {
    let mut router = Router::new();
    for q in &config.queues {
        let mut qc = QueueConfig::new(q.name.clone(), strategy(q.strategy));
        qc.skills = q.skills.clone();
        qc.ring_timeout = Duration::from_secs(q.ring_timeout_secs);
        qc.wrap_up = Duration::from_secs(q.wrap_up_secs);
        qc.max_wait = q.max_wait_secs.map(Duration::from_secs);
        qc.announce_every = q.announce_every_secs.map(Duration::from_secs);
        qc.max_callers = q.max_callers;
        if q.wait_when_empty {
            qc.when_empty = WhenEmpty::Wait;
        }
        if let Some(next) = &q.overflow_queue {
            qc.overflow = OverflowTarget::Queue(next.clone());
        }
        qc.relaxations = q
            .relax
            .iter()
            .map(|r| Relaxation {
                after: Duration::from_secs(r.after_secs),
                widen: match &r.widen {
                    RelaxWiden::LowerLevels(n) => Widen::LowerLevels(*n),
                    RelaxWiden::DropSkill(s) => Widen::DropSkill(s.clone()),
                    RelaxWiden::BorrowAgentsOf(q) => Widen::BorrowAgentsOf(q.clone()),
                },
            })
            .collect();
        router.add_queue(qc)?;
    }
    let now = Instant::now();
    let mut agents = Vec::new();
    for u in &config.users {
        let queues: Vec<String> = config
            .queues
            .iter()
            .filter(|q| q.members.contains(&u.extension))
            .map(|q| q.name.clone())
            .collect();
        if queues.is_empty() {
            continue;
        }
        agents.push(u.extension.clone());
        router.add_agent(AgentConfig {
            extension: u.extension.clone(),
            skills: u.skills.clone(),
            queues,
        })?;
        router.handle(
            Event::AgentLogin {
                agent: u.extension.clone(),
            },
            now,
        )?;
    }
    Ok((router, agents))
}

/// Turns the router's log rows into events, and notices agents' state changes.
struct Log {
    events: EventLog,
    // Router times are Instants; the log wants wall-clock milliseconds.
    epoch: Instant,
    epoch_ms: i64,
    /// The last state published per agent.
    published: HashMap<String, AgentState>,
    /// Who asked for what the router does now (`phone`, `api:NAME`); empty when the
    /// router acts by itself.
    cause: String,
    /// Per agent, the cause of the change not yet published.
    causes: HashMap<String, String>,
    /// Record ids of calls that have left the ACD, newest last: their agents' wrap-up
    /// ends later and must still name the call (after-call work is the call's).
    ended: VecDeque<(CallId, String)>,
}

impl Log {
    fn new(events: EventLog) -> Log {
        Log {
            events,
            epoch: Instant::now(),
            epoch_ms: now_ms(),
            published: HashMap::new(),
            cause: "start-up".into(),
            causes: HashMap::new(),
            ended: VecDeque::new(),
        }
    }
}

/// Calls remembered after they end, for wrap-ups still running; far more than agents.
const ENDED_MEMORY: usize = 4096;

async fn run(
    mut router: Router,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    mut log: Log,
    agents: Vec<String>,
) {
    let mut calls: HashMap<CallId, mpsc::UnboundedSender<AcdMsg>> = HashMap::new();
    // The call's record id, so queue events join the call records.
    let mut uuids: HashMap<CallId, String> = HashMap::new();
    // Start-up's log-ins first, then every agent's first state.
    drain(&mut router, &mut calls, &uuids, &mut log);
    for a in &agents {
        log.agent_changed(&router, a);
    }
    loop {
        drain(&mut router, &mut calls, &uuids, &mut log);
        log.cause.clear();
        let wake = router.poll_timeout().map(tokio::time::Instant::from_std);
        tokio::select! {
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                let now = Instant::now();
                match cmd {
                    Cmd::Enqueue { call, uuid, queue, skills, priority, to_call } => {
                        let arrived = Event::CallArrived { call, queue, skills, priority };
                        match router.handle(arrived, now) {
                            Ok(()) => {
                                calls.insert(call, to_call);
                                uuids.insert(call, uuid);
                            }
                            // The caller must hear back, or it would wait for ever.
                            Err(e) => {
                                warn!(error = %e, "ACD refused a call");
                                let _ = to_call.send(AcdMsg::Overflow { reason: e.to_string() });
                            }
                        }
                    }
                    Cmd::Snapshot { reply } => {
                        let view = AcdView { snapshot: router.snapshot(now), uuids: uuids.clone() };
                        let _ = reply.send(view);
                    }
                    Cmd::AgentRequest { event, cause, reply } => {
                        log.cause = cause;
                        let result = router.handle(event, now).map_err(|e| e.to_string());
                        if let Err(e) = &result {
                            info!(error = %e, "agent request refused");
                        }
                        let _ = reply.send(result);
                    }
                    Cmd::Event(e) => {
                        // A call that has left the queue for good needs no channel.
                        let done = match &e {
                            Event::CallEnded { call, .. } | Event::CallAbandoned { call } => Some(*call),
                            _ => None,
                        };
                        if let Err(e) = router.handle(e, now) {
                            warn!(error = %e, "ACD refused an event");
                        }
                        if let Some(call) = done {
                            drain(&mut router, &mut calls, &uuids, &mut log);
                            calls.remove(&call);
                            if let Some(uuid) = uuids.remove(&call) {
                                log.remember_ended(call, uuid);
                            }
                        }
                    }
                }
            }
            _ = sleep_until_opt(wake) => router.handle_timeout(Instant::now()),
        }
    }
}

/// Where the router's words to calls go: each call's channel on one server; in a
/// cluster, the call's node.
trait Ports {
    /// Sends to the call, if the ACD still knows it.
    fn send(&mut self, call: CallId, msg: AcdMsg);
    /// Sends the call's last word and forgets it; false if it was not known.
    fn send_last(&mut self, call: CallId, msg: AcdMsg) -> bool;
}

impl Ports for HashMap<CallId, mpsc::UnboundedSender<AcdMsg>> {
    fn send(&mut self, call: CallId, msg: AcdMsg) {
        if let Some(to_call) = self.get(&call) {
            if to_call.send(msg).is_err() {
                self.remove(&call);
            }
        }
    }

    fn send_last(&mut self, call: CallId, msg: AcdMsg) -> bool {
        self.remove(&call).map(|c| c.send(msg)).is_some()
    }
}

fn drain(
    router: &mut Router,
    calls: &mut impl Ports,
    uuids: &HashMap<CallId, String>,
    log: &mut Log,
) {
    let mut touched: Vec<Arc<str>> = Vec::new();
    while let Some(action) = router.poll() {
        let (call, msg) = match action {
            Action::Offer { call, agent } | Action::OfferCallback { call, agent } => (
                call,
                AcdMsg::Offer {
                    agent: agent.to_string(),
                },
            ),
            Action::CancelOffer { call, agent } => (
                call,
                AcdMsg::CancelOffer {
                    agent: agent.to_string(),
                },
            ),
            Action::Connect { call, agent } => {
                info!(%call, %agent, "ACD connected");
                continue;
            }
            Action::Overflow {
                call,
                target: OverflowTarget::Queue(queue),
            } => {
                // Into the next queue, keeping the caller's channel (and its music).
                info!(%call, %queue, "overflow to another queue");
                let arrived = Event::CallArrived {
                    call,
                    queue,
                    skills: Vec::new(),
                    priority: 0,
                };
                if let Err(e) = router.handle(arrived, Instant::now()) {
                    calls.send_last(
                        call,
                        AcdMsg::Overflow {
                            reason: e.to_string(),
                        },
                    );
                }
                continue;
            }
            Action::Overflow { call, target } => {
                let reason = match target {
                    OverflowTarget::Queue(q) => format!("overflow to queue {q}"),
                    OverflowTarget::Voicemail => "overflow to voicemail".to_string(),
                    OverflowTarget::FlowNode(n) => format!("overflow to flow node {n}"),
                };
                let msg = AcdMsg::Overflow { reason };
                if !calls.send_last(call, msg) {
                    warn!(%call, "overflow for a call the ACD has no channel to");
                }
                continue;
            }
            // Position announcements need the prompt set's numbers; not spoken yet.
            Action::Announce {
                call,
                position,
                estimated_wait,
            } => (
                call,
                AcdMsg::Announce {
                    position,
                    // Whole minutes, rounded up: "about 2 minutes" for 61 s.
                    wait_minutes: estimated_wait.map(|w| w.as_secs().div_ceil(60)),
                },
            ),
            Action::DialCaller { call, agent } => (
                call,
                AcdMsg::DialCaller {
                    agent: agent.to_string(),
                },
            ),
            Action::Log(row) => {
                let uuid = row
                    .call
                    .and_then(|c| uuids.get(&c).cloned().or_else(|| log.ended_uuid(c)));
                if let Some(agent) = &row.agent {
                    if !touched.contains(agent) {
                        touched.push(agent.clone());
                    }
                }
                log.row(&row, uuid);
                continue;
            }
        };
        calls.send(call, msg);
    }
    // After the rows: the offer is in the log before the explanation of it.
    while let Some(why) = router.poll_decision() {
        let uuid = why.call.and_then(|c| uuids.get(&c).cloned());
        let mut e = NewEvent::new("acd.decision")
            .queue(Some(&why.queue))
            .agent(why.chosen.first().map(String::as_str))
            .data(serde_json::to_value(&why).unwrap_or_default());
        e.call = uuid;
        log.events.publish(e);
    }
    for agent in touched {
        log.agent_changed(router, &agent);
    }
}

impl Log {
    fn remember_ended(&mut self, call: CallId, uuid: String) {
        if self.ended.len() == ENDED_MEMORY {
            self.ended.pop_front();
        }
        self.ended.push_back((call, uuid));
    }

    fn ended_uuid(&self, call: CallId) -> Option<String> {
        self.ended
            .iter()
            .rev()
            .find(|(c, _)| *c == call)
            .map(|(_, u)| u.clone())
    }

    fn at_ms(&self, at: Instant) -> i64 {
        self.epoch_ms + at.saturating_duration_since(self.epoch).as_millis() as i64
    }

    fn row(&mut self, row: &EventRow, call_uuid: Option<String>) {
        let q = queue_event(row, call_uuid, self.epoch, self.epoch_ms);
        let data = serde_json::json!({
            "event": q.event,
            "wait_ms": q.wait_ms,
            "talk_ms": q.talk_ms,
            "detail": q.detail,
        });
        let mut e = NewEvent::new(event_type(&row.kind))
            .queue(q.queue.as_deref())
            .agent(q.agent.as_deref())
            .data(data);
        e.call = q.call_uuid.clone();
        e.at_ms = Some(q.at_ms);
        e.queue_row = Some(q);
        self.events.publish(e);
        // A row about an agent is the cause of its next state: the request's asker for
        // what the request itself did, else what the router did (an offer, a timeout…).
        if let Some(agent) = &row.agent {
            use crate::acd::EventKind as K;
            let asked = matches!(
                row.kind,
                K::Login | K::Logout | K::Pause { .. } | K::Unpause | K::WrapUpEnd { .. }
            );
            let cause = if asked && !self.cause.is_empty() {
                self.cause.clone()
            } else {
                row.kind.name().to_ascii_lowercase()
            };
            self.causes.insert(agent.to_string(), cause);
        }
    }

    /// Publishes `agent.state` if the agent's state is not the one last published.
    fn agent_changed(&mut self, router: &Router, agent: &str) {
        let Some(view) = router.agent(agent) else {
            return;
        };
        if self.published.get(agent) == Some(view.state) {
            return;
        }
        // A state's own timers (ring until, wrap-up until) change with it.
        let state = view.state.clone();
        let cause = self
            .causes
            .remove(agent)
            .unwrap_or_else(|| "timeout".to_string());
        let mut data = agent_state_json(&state, self);
        data["cause"] = serde_json::Value::String(cause);
        self.events
            .publish(NewEvent::new("agent.state").agent(Some(agent)).data(data));
        self.published.insert(agent.to_string(), state);
    }
}

/// The state's name and its details, as the event stream and the API show it.
fn agent_state_json(state: &AgentState, log: &Log) -> serde_json::Value {
    let (name, reason, call, until) = agent_state_parts(state);
    serde_json::json!({
        "state": name,
        "reason": reason,
        "call_key": call.map(|c| c.0),
        "until_ms": until.map(|u| log.at_ms(u)),
    })
}

/// An agent state's name (`logged_out`, `ready`, `ringing`, `on_call`, `wrap_up`,
/// `not_ready`), its reason, its call, and when it ends by itself.
pub fn agent_state_parts(
    state: &AgentState,
) -> (&'static str, Option<&str>, Option<CallId>, Option<Instant>) {
    match state {
        AgentState::LoggedOut => ("logged_out", None, None, None),
        AgentState::Available { .. } => ("ready", None, None, None),
        AgentState::Reserved { call, until } => ("ringing", None, Some(*call), Some(*until)),
        AgentState::OnCall { call, .. } => ("on_call", None, Some(*call), None),
        AgentState::WrapUp { until, .. } => ("wrap_up", None, None, Some(*until)),
        AgentState::NotReady { reason } => ("not_ready", Some(reason.as_str()), None, None),
    }
}

/// The event stream's name for a queue-log row.
fn event_type(kind: &crate::acd::EventKind) -> &'static str {
    use crate::acd::EventKind as K;
    match kind {
        K::Enter { .. } => "queue.entered",
        K::Offer => "queue.offered",
        K::RingNoAnswer { .. } => "queue.ring_no_answer",
        K::Declined { .. } => "queue.declined",
        K::Connect { .. } => "queue.answered",
        K::Abandon { .. } => "queue.abandoned",
        K::Transfer { .. } => "queue.transferred_out",
        K::Overflow { .. } => "queue.overflowed",
        K::CallbackRequested { .. } => "queue.callback_requested",
        K::CallbackConnected { .. } => "queue.callback_answered",
        K::CompleteAgent { .. } | K::CompleteCaller { .. } | K::CompleteTransfer { .. } => {
            "queue.completed"
        }
        K::WrapUpStart => "agent.wrap_up_started",
        K::WrapUpEnd { .. } => "agent.wrap_up_ended",
        K::Login => "agent.logged_in",
        K::Logout => "agent.logged_out",
        K::Pause { .. } => "agent.paused",
        K::Unpause => "agent.unpaused",
    }
}

fn queue_event(
    row: &EventRow,
    call_uuid: Option<String>,
    epoch: Instant,
    epoch_ms: i64,
) -> QueueEvent {
    use crate::acd::EventKind as K;
    let at_ms = epoch_ms + row.at.saturating_duration_since(epoch).as_millis() as i64;
    let ms = |d: &Duration| Some(d.as_millis() as i64);
    let (wait_ms, talk_ms, detail) = match &row.kind {
        K::Connect { wait } | K::Overflow { wait } | K::CallbackConnected { wait } => {
            (ms(wait), None, None)
        }
        K::Abandon { wait, position }
        | K::Transfer { wait, position }
        | K::CallbackRequested { wait, position } => {
            (ms(wait), None, Some(format!("position {position}")))
        }
        K::CompleteAgent { talk } | K::CompleteCaller { talk } | K::CompleteTransfer { talk } => {
            (None, ms(talk), None)
        }
        K::RingNoAnswer { rang } | K::Declined { rang } => {
            (None, None, Some(format!("rang {} ms", rang.as_millis())))
        }
        K::WrapUpEnd { wrap_up } => (None, ms(wrap_up), None),
        K::Enter { priority, position } => (
            None,
            None,
            Some(format!("priority {priority}, position {position}")),
        ),
        K::Pause { reason } => (None, None, Some(reason.clone())),
        K::Offer | K::WrapUpStart | K::Login | K::Logout | K::Unpause => (None, None, None),
    };
    QueueEvent {
        at_ms,
        queue: row.queue.as_deref().map(str::to_string),
        call_uuid,
        agent: row.agent.as_deref().map(str::to_string),
        event: row.kind.name().to_string(),
        wait_ms,
        talk_ms,
        detail,
        seq: None,
    }
}
