//! The ACD task: the one owner of the queue router. Calls enqueue through it and report
//! what their phones did; it turns the router's actions into messages to those calls and
//! writes every queue event to the store (the queue log reports are computed from).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::acd::{
    Action, AgentConfig, CallEnd, CallId, Event, EventRow, OverflowTarget, QueueConfig, Relaxation,
    Router, Strategy, WhenEmpty, Widen,
};
use crate::config::{Config, QueueStrategy, RelaxWiden};
use crate::store::{now_ms, QueueEvent, Store};

/// What the ACD tells a queued call.
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// An agent's own request (feature code), answered with the router's verdict.
    AgentRequest {
        event: Event,
        reply: tokio::sync::oneshot::Sender<Result<(), String>>,
    },
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
    /// took it, so the agent can be told.
    pub fn agent_request(
        &self,
        event: Event,
    ) -> tokio::sync::oneshot::Receiver<Result<(), String>> {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let _ = self.tx.send(Cmd::AgentRequest { event, reply });
        rx
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
pub fn start(config: &Config, store: Store) -> anyhow::Result<Option<AcdHandle>> {
    if config.queues.is_empty() {
        return Ok(None);
    }
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
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(router, rx, store, now));
    Ok(Some(AcdHandle { tx }))
}

async fn run(
    mut router: Router,
    mut rx: mpsc::UnboundedReceiver<Cmd>,
    store: Store,
    epoch: Instant,
) {
    // Router times are Instants; the log wants wall-clock milliseconds.
    let epoch_ms = now_ms();
    let mut calls: HashMap<CallId, mpsc::UnboundedSender<AcdMsg>> = HashMap::new();
    // The call's record id, so queue events join the call records.
    let mut uuids: HashMap<CallId, String> = HashMap::new();
    loop {
        drain(&mut router, &mut calls, &uuids, &store, epoch, epoch_ms).await;
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
                    Cmd::AgentRequest { event, reply } => {
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
                            drain(&mut router, &mut calls, &uuids, &store, epoch, epoch_ms).await;
                            calls.remove(&call);
                            uuids.remove(&call);
                        }
                    }
                }
            }
            _ = sleep_until_opt(wake) => router.handle_timeout(Instant::now()),
        }
    }
}

async fn drain(
    router: &mut Router,
    calls: &mut HashMap<CallId, mpsc::UnboundedSender<AcdMsg>>,
    uuids: &HashMap<CallId, String>,
    store: &Store,
    epoch: Instant,
    epoch_ms: i64,
) {
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
                    if let Some(c) = calls.remove(&call) {
                        let _ = c.send(AcdMsg::Overflow {
                            reason: e.to_string(),
                        });
                    }
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
                let sent = calls.remove(&call).map(|c| c.send(msg));
                if sent.is_none() {
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
                let uuid = row.call.and_then(|c| uuids.get(&c)).cloned();
                if let Err(e) = store
                    .write_queue_event(&queue_event(&row, uuid, epoch, epoch_ms))
                    .await
                {
                    warn!(error = %e, "could not write a queue event");
                }
                continue;
            }
        };
        if let Some(to_call) = calls.get(&call) {
            if to_call.send(msg).is_err() {
                calls.remove(&call);
            }
        }
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
    }
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
