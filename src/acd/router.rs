//! The routing state machine: events in, actions out, timers on a lazy-deletion heap.
//!
//! Invariant after every event: no waiting call has an eligible available agent. So an
//! event can only create matches around what it changed — the agents it freed and the
//! calls it put (back) in a queue — and routing looks only there ([`Router::settle`]):
//! a freed agent takes its best eligible call (highest priority, then longest waiting,
//! across all its queues); a requeued call takes its queue's best eligible agent. Freed
//! agents go first because the calls they skip cannot be served by anyone else either;
//! requeued calls then go in priority order, so a later call never jumps an earlier one
//! that the same agent could take.
//!
//! Decisions worth knowing:
//! - An agent who declines a call, or lets it ring out, is not offered that call again
//!   while it waits; the call keeps its place for everyone else.
//! - A caller whose maximum wait passes while an agent's phone rings is not snatched
//!   away: if the ring ends unanswered, the call overflows then.
//! - A callback caller is off the line: it keeps its place and relaxes as usual, but has
//!   no maximum wait and hears no announcements.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::agent::{Agent, AgentConfig, AgentIdx, AgentState, AgentView, FinishedCall};
use super::event_log::{EventKind, EventRow};
use super::queue::{
    BucketIdx, CallKey, OverflowTarget, Queue, QueueConfig, QueueIdx, Step, Strategy, WhenEmpty,
    Widen,
};
use super::skill::{Levels, SkillBook};
use super::{AcdError, CallId};

mod decision;
mod snapshot;
pub use decision::{Candidate, Decision, Trigger, Verdict};
pub use snapshot::{AgentSnapshot, QueueSnapshot, Snapshot, WaitingCaller};

/// Who ended a connected call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum CallEnd {
    Agent,
    Caller,
    /// The agent transferred the call onwards.
    Transferred,
}

/// What the call layer reports (between nodes too: serialisable).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Event {
    /// A caller enters `queue`. `skills` are this call's own requirements (from the IVR),
    /// added to the queue's; a higher `priority` is served first.
    CallArrived {
        call: CallId,
        queue: String,
        skills: Vec<(String, u8)>,
        priority: i32,
    },
    /// The caller hung up before an agent answered (or cancelled a callback).
    CallAbandoned {
        call: CallId,
    },
    /// The caller asked to be called back and leaves the line; the call keeps its place.
    CallbackRequested {
        call: CallId,
    },
    /// The call leaves the queue for somewhere else before an agent answered.
    TransferredOut {
        call: CallId,
    },
    OfferAnswered {
        call: CallId,
        agent: String,
    },
    OfferDeclined {
        call: CallId,
        agent: String,
    },
    CallEnded {
        call: CallId,
        by: CallEnd,
    },
    AgentLogin {
        agent: String,
    },
    AgentLogout {
        agent: String,
    },
    /// Pause: from available, from wrap-up (ending it) or while ringing (withdrawing the
    /// offer).
    AgentNotReady {
        agent: String,
        reason: String,
    },
    /// Unpause, or end wrap-up.
    AgentReady {
        agent: String,
    },
    /// End wrap-up now. A no-op if it already ended (the timer may have won the race).
    EndWrapUp {
        agent: String,
    },
    /// Replaces the agent's skills.
    SkillsChanged {
        agent: String,
        skills: Vec<(String, u8)>,
    },
    /// Replaces the queues the agent serves (logs it into those, out of the others),
    /// keeping its state. Callers left in a queue nobody is logged in to any more
    /// overflow as on a log-out.
    QueuesChanged {
        agent: String,
        queues: Vec<String>,
    },
    /// Midnight: every agent's calls-today count starts again from zero.
    DayStarted,
    /// The agent's phone can no longer be reached (unregistered, registration expired,
    /// keep-alives unanswered): it is made not ready ([`UNREACHABLE`]), withdrawing a
    /// ringing offer. A call in progress is left alone; it ends by itself.
    PhoneUnreachable {
        agent: String,
    },
    /// The phone is back: an agent made not ready by [`Event::PhoneUnreachable`] is ready
    /// again; any other state is left as it is.
    PhoneReachable {
        agent: String,
    },
}

/// The not-ready reason of an agent whose phone cannot be reached.
pub const UNREACHABLE: &str = "unreachable";

/// What the call layer must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ring `agent` with the waiting caller; report OfferAnswered or OfferDeclined.
    Offer { call: CallId, agent: Arc<str> },
    /// Ring `agent` for a callback; when it answers, the router asks for DialCaller.
    OfferCallback { call: CallId, agent: Arc<str> },
    /// Stop ringing `agent` for this call.
    CancelOffer { call: CallId, agent: Arc<str> },
    /// Bridge the waiting caller to the agent who answered.
    Connect { call: CallId, agent: Arc<str> },
    /// Dial the callback caller and bridge it to the agent, who is already on the line.
    DialCaller { call: CallId, agent: Arc<str> },
    /// Take the caller out of the queue to `target` (to another queue: send CallArrived).
    Overflow {
        call: CallId,
        target: OverflowTarget,
    },
    /// Tell the waiting caller its position (1 = next) and, when known, its estimated wait.
    Announce {
        call: CallId,
        position: u32,
        estimated_wait: Option<Duration>,
    },
    /// Persist this row in the queue event log.
    Log(EventRow),
}

#[derive(Debug)]
enum Phase {
    Waiting,
    /// Offered to these agents (one, or several for RingAll).
    Ringing(Vec<AgentIdx>),
}

#[derive(Debug)]
struct QueuedCall {
    queue: QueueIdx,
    key: CallKey,
    arrived: Instant,
    /// The queue's and the call's own requirement, relaxed up to `stage`.
    requirement: Levels,
    stage: usize,
    /// Where the call waits in its queue (while not ringing).
    bucket: BucketIdx,
    /// Agents who declined or missed this call; never offered it again.
    declined: Vec<AgentIdx>,
    callback: bool,
    phase: Phase,
}

/// Each timer names what it is for; a popped timer whose subject has moved on is stale
/// and skipped (lazy deletion), so nothing ever has to be removed from the heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    RingTimeout {
        agent: AgentIdx,
        call: CallId,
    },
    WrapUpEnd {
        agent: AgentIdx,
    },
    // `seq` tells this stay in a queue from a later one of the same call.
    MaxWait {
        call: CallId,
        seq: u64,
    },
    Relax {
        call: CallId,
        seq: u64,
        stage: usize,
    },
    Announce {
        call: CallId,
        seq: u64,
    },
}

#[derive(Debug, Default)]
pub struct Router {
    skills: SkillBook,
    queues: Vec<Queue>,
    queue_ids: HashMap<Arc<str>, QueueIdx>,
    agents: Vec<Agent>,
    agent_ids: HashMap<Arc<str>, AgentIdx>,
    calls: HashMap<CallId, QueuedCall>,
    connected: HashMap<CallId, (AgentIdx, QueueIdx)>,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    next_seq: u64,
    /// Agents made available by the current event, to route in `settle`.
    freed: Vec<AgentIdx>,
    /// Calls put (back) in a queue by the current event, to route in `settle`.
    requeued: Vec<CallId>,
    out: VecDeque<Action>,
    /// Why each offer went where it went, for whoever polls them.
    decisions: VecDeque<Decision>,
}

impl Router {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a queue. A queue that borrows another's agents must come after it.
    pub fn add_queue(&mut self, config: QueueConfig) -> Result<(), AcdError> {
        if self.queue_ids.contains_key(config.name.as_str()) {
            return Err(AcdError::DuplicateQueue(config.name));
        }
        let requirement = self.skills.levels(&config.skills)?;
        let idx = QueueIdx(self.queues.len() as u32);
        let mut steps = Vec::with_capacity(config.relaxations.len());
        let mut lenders = Vec::new();
        let mut previous = Duration::ZERO;
        for relaxation in &config.relaxations {
            if relaxation.after < previous {
                return Err(AcdError::RelaxationOutOfOrder {
                    queue: config.name.clone(),
                    after: relaxation.after,
                });
            }
            previous = relaxation.after;
            steps.push(match &relaxation.widen {
                Widen::LowerLevels(by) => Step::LowerLevels(*by),
                Widen::DropSkill(skill) => Step::DropSkill(self.skills.id(skill)),
                Widen::BorrowAgentsOf(lender) => {
                    let lender_idx = *self.queue_ids.get(lender.as_str()).ok_or_else(|| {
                        AcdError::UnknownLender {
                            queue: config.name.clone(),
                            lender: lender.clone(),
                        }
                    })?;
                    // The step is in force from the stage after it.
                    lenders.push((lender_idx, steps.len() + 1));
                    Step::BorrowAgents
                }
            });
        }
        for &(lender, from_stage) in &lenders {
            self.queues[lender.0 as usize]
                .borrowers
                .push((idx, from_stage));
        }
        let queue = Queue::new(config, requirement, steps, lenders);
        self.queue_ids.insert(queue.name.clone(), idx);
        self.queues.push(queue);
        Ok(())
    }

    /// Adds an agent, logged out.
    pub fn add_agent(&mut self, config: AgentConfig) -> Result<(), AcdError> {
        if self.agent_ids.contains_key(config.extension.as_str()) {
            return Err(AcdError::DuplicateAgent(config.extension));
        }
        let queues = config
            .queues
            .iter()
            .map(|name| self.queue_idx(name))
            .collect::<Result<Vec<_>, _>>()?;
        let skills = self.skills.levels(&config.skills)?;
        let extension: Arc<str> = config.extension.into();
        let idx = AgentIdx(self.agents.len() as u32);
        self.agent_ids.insert(extension.clone(), idx);
        self.agents.push(Agent::new(extension, skills, queues));
        Ok(())
    }

    pub fn agent(&self, extension: &str) -> Option<AgentView<'_>> {
        let idx = self.agent_ids.get(extension)?;
        Some(self.agents[idx.0 as usize].view())
    }

    /// How many callers wait in `queue` (not counting those being offered to an agent).
    pub fn waiting(&self, queue: &str) -> Option<usize> {
        let idx = self.queue_ids.get(queue)?;
        Some(self.queues[idx.0 as usize].waiting_len())
    }

    pub fn poll(&mut self) -> Option<Action> {
        self.out.pop_front()
    }

    /// When [`Router::handle_timeout`] must next be called.
    /// The next explained routing decision, in the order the offers were made.
    pub fn poll_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    pub fn poll_timeout(&mut self) -> Option<Instant> {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if self.is_live(at, timer) {
                return Some(at);
            }
            self.timers.pop();
        }
        None
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(&Reverse((at, timer))) = self.timers.peek() {
            if at > now {
                break;
            }
            self.timers.pop();
            if self.is_live(at, timer) {
                self.fire(at, timer, now);
                self.settle(now);
            }
        }
    }

    /// Applies one event. An error means the event was refused and changed nothing; its
    /// message says why and what to do.
    pub fn handle(&mut self, event: Event, now: Instant) -> Result<(), AcdError> {
        let result = match event {
            Event::CallArrived {
                call,
                queue,
                skills,
                priority,
            } => self.arrive(call, &queue, &skills, priority, now),
            Event::CallAbandoned { call } => self.leave(call, now, |wait, position| {
                EventKind::Abandon { wait, position }
            }),
            Event::TransferredOut { call } => self.leave(call, now, |wait, position| {
                EventKind::Transfer { wait, position }
            }),
            Event::CallbackRequested { call } => self.callback_requested(call, now),
            Event::OfferAnswered { call, agent } => self.answered(call, &agent, now),
            Event::OfferDeclined { call, agent } => self.declined(call, &agent, now),
            Event::CallEnded { call, by } => self.call_ended(call, by, now),
            Event::AgentLogin { agent } => self.login(&agent, now),
            Event::AgentLogout { agent } => self.logout(&agent, now),
            Event::AgentNotReady { agent, reason } => self.not_ready(&agent, reason, now),
            Event::AgentReady { agent } => self.ready(&agent, now),
            Event::EndWrapUp { agent } => self.end_wrap_up(&agent, now),
            Event::SkillsChanged { agent, skills } => self.skills_changed(&agent, &skills, now),
            Event::QueuesChanged { agent, queues } => self.queues_changed(&agent, &queues, now),
            Event::DayStarted => {
                self.day_started(now);
                Ok(())
            }
            Event::PhoneUnreachable { agent } => self.phone_unreachable(&agent, now),
            Event::PhoneReachable { agent } => self.phone_reachable(&agent, now),
        };
        self.settle(now);
        result
    }

    // ---- lookups -------------------------------------------------------------------

    fn queue_idx(&self, name: &str) -> Result<QueueIdx, AcdError> {
        self.queue_ids
            .get(name)
            .copied()
            .ok_or_else(|| AcdError::UnknownQueue(name.to_string()))
    }

    fn agent_idx(&self, extension: &str) -> Result<AgentIdx, AcdError> {
        self.agent_ids
            .get(extension)
            .copied()
            .ok_or_else(|| AcdError::UnknownAgent(extension.to_string()))
    }

    fn queue(&self, idx: QueueIdx) -> &Queue {
        &self.queues[idx.0 as usize]
    }

    fn agent_at(&self, idx: AgentIdx) -> &Agent {
        &self.agents[idx.0 as usize]
    }

    fn call(&self, id: CallId) -> &QueuedCall {
        &self.calls[&id]
    }

    fn call_mut(&mut self, id: CallId) -> &mut QueuedCall {
        self.calls.get_mut(&id).expect("call is queued")
    }

    fn log(
        &mut self,
        at: Instant,
        queue: Option<QueueIdx>,
        call: Option<CallId>,
        agent: Option<AgentIdx>,
        kind: EventKind,
    ) {
        let row = EventRow {
            at,
            queue: queue.map(|q| self.queue(q).name.clone()),
            call,
            agent: agent.map(|a| self.agent_at(a).extension.clone()),
            kind,
        };
        self.out.push_back(Action::Log(row));
    }

    fn schedule(&mut self, at: Instant, timer: Timer) {
        self.timers.push(Reverse((at, timer)));
    }

    // ---- calls ---------------------------------------------------------------------

    fn arrive(
        &mut self,
        call: CallId,
        queue: &str,
        skills: &[(String, u8)],
        priority: i32,
        now: Instant,
    ) -> Result<(), AcdError> {
        let q = self.queue_idx(queue)?;
        if self.calls.contains_key(&call) || self.connected.contains_key(&call) {
            return Err(AcdError::CallAlreadyQueued(call));
        }
        let own = self.skills.levels(skills)?;
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = CallKey {
            priority: Reverse(priority),
            seq,
        };
        let queue = self.queue(q);
        let position = queue.position(key);
        self.log(
            now,
            Some(q),
            Some(call),
            None,
            EventKind::Enter { priority, position },
        );
        let queue = self.queue(q);
        let full = queue
            .config
            .max_callers
            .is_some_and(|max| queue.waiting_len() >= max);
        if full || (queue.logged_in == 0 && queue.config.when_empty == WhenEmpty::Overflow) {
            self.overflow(call, q, now, now);
            return Ok(());
        }
        let config = &queue.config;
        let max_wait = config.max_wait.map(|d| now + d);
        let first_relaxation = config.relaxations.first().map(|r| now + r.after);
        let first_announcement = config.announce_every.map(|d| now + d);
        let requirement = queue.requirement.union(&own);
        let queue = &mut self.queues[q.0 as usize];
        let bucket = queue.bucket(0, &requirement);
        queue.buckets[bucket].calls.insert(key, call);
        self.calls.insert(
            call,
            QueuedCall {
                queue: q,
                key,
                arrived: now,
                requirement,
                stage: 0,
                bucket,
                declined: Vec::new(),
                callback: false,
                phase: Phase::Waiting,
            },
        );
        if let Some(at) = max_wait {
            self.schedule(at, Timer::MaxWait { call, seq });
        }
        if let Some(at) = first_relaxation {
            self.schedule(
                at,
                Timer::Relax {
                    call,
                    seq,
                    stage: 0,
                },
            );
        }
        if let Some(at) = first_announcement {
            self.schedule(at, Timer::Announce { call, seq });
        }
        self.requeued.push(call);
        Ok(())
    }

    /// The caller leaves before being answered: abandon or transfer out.
    fn leave(
        &mut self,
        call: CallId,
        now: Instant,
        kind: impl FnOnce(Duration, u32) -> EventKind,
    ) -> Result<(), AcdError> {
        let c = self.calls.get(&call).ok_or(AcdError::NotQueued(call))?;
        let (q, wait) = (c.queue, now - c.arrived);
        let position = self.queue(q).position(c.key);
        self.stop_ringing(call, now);
        self.remove_call(call);
        self.log(now, Some(q), Some(call), None, kind(wait, position));
        Ok(())
    }

    fn callback_requested(&mut self, call: CallId, now: Instant) -> Result<(), AcdError> {
        let c = self.calls.get(&call).ok_or(AcdError::NotQueued(call))?;
        if c.callback {
            return Ok(());
        }
        let (q, wait) = (c.queue, now - c.arrived);
        let position = self.queue(q).position(c.key);
        // A phone ringing for this caller would connect the agent to nobody: offer it
        // again as a callback.
        self.stop_ringing(call, now);
        self.call_mut(call).callback = true;
        self.requeued.push(call);
        self.log(
            now,
            Some(q),
            Some(call),
            None,
            EventKind::CallbackRequested { wait, position },
        );
        Ok(())
    }

    /// Withdraws every offer of `call` (not the agents' fault: they stay available) and
    /// puts it back in its place.
    fn stop_ringing(&mut self, call: CallId, now: Instant) {
        let c = self.call_mut(call);
        let Phase::Ringing(agents) = std::mem::replace(&mut c.phase, Phase::Waiting) else {
            return;
        };
        let (q, bucket, key) = (c.queue, c.bucket, c.key);
        self.queues[q.0 as usize].buckets[bucket]
            .calls
            .insert(key, call);
        for agent in agents {
            self.cancel_offer(call, agent);
            self.set_state(agent, AgentState::Available { since: now }, now);
        }
    }

    fn cancel_offer(&mut self, call: CallId, agent: AgentIdx) {
        let agent = self.agent_at(agent).extension.clone();
        self.out.push_back(Action::CancelOffer { call, agent });
    }

    /// Takes a waiting call out of its queue for good.
    fn remove_call(&mut self, call: CallId) -> QueuedCall {
        let c = self.calls.remove(&call).expect("call is queued");
        debug_assert!(matches!(c.phase, Phase::Waiting));
        self.queues[c.queue.0 as usize].buckets[c.bucket]
            .calls
            .remove(&c.key);
        c
    }

    fn overflow(&mut self, call: CallId, q: QueueIdx, arrived: Instant, now: Instant) {
        self.log(
            now,
            Some(q),
            Some(call),
            None,
            EventKind::Overflow {
                wait: now - arrived,
            },
        );
        let target = self.queue(q).config.overflow.clone();
        self.out.push_back(Action::Overflow { call, target });
    }

    /// One agent's offer of `call` is over without an answer; `declined` keeps the call
    /// from being offered to that agent again. When no phone rings any more the call
    /// takes its place again — or overflows if its maximum wait passed meanwhile.
    fn offer_ended(&mut self, call: CallId, agent: AgentIdx, declined: bool, now: Instant) {
        let c = self.call_mut(call);
        if declined {
            c.declined.push(agent);
        }
        let Phase::Ringing(agents) = &mut c.phase else {
            unreachable!("an agent's offer ended for a call that was not ringing")
        };
        agents.retain(|a| *a != agent);
        if !agents.is_empty() {
            return;
        }
        c.phase = Phase::Waiting;
        let (q, bucket, key, arrived, callback) = (c.queue, c.bucket, c.key, c.arrived, c.callback);
        let overdue = self
            .queue(q)
            .config
            .max_wait
            .is_some_and(|max| now >= arrived + max);
        if overdue && !callback {
            self.calls.remove(&call);
            self.overflow(call, q, arrived, now);
        } else {
            self.queues[q.0 as usize].buckets[bucket]
                .calls
                .insert(key, call);
            self.requeued.push(call);
        }
    }

    /// The agent's current offer, checked against the call the event names.
    fn reserved_for(&self, call: CallId, extension: &str) -> Result<(AgentIdx, Instant), AcdError> {
        let a = self.agent_idx(extension)?;
        match self.agent_at(a).state {
            AgentState::Reserved { call: c, until } if c == call => Ok((a, until)),
            _ => Err(AcdError::NoOffer {
                call,
                agent: extension.to_string(),
            }),
        }
    }

    fn answered(&mut self, call: CallId, extension: &str, now: Instant) -> Result<(), AcdError> {
        let (a, _) = self.reserved_for(call, extension)?;
        let c = self.call_mut(call);
        let Phase::Ringing(agents) = std::mem::replace(&mut c.phase, Phase::Waiting) else {
            unreachable!("a reserved agent's call is ringing")
        };
        let c = self.calls.remove(&call).expect("call is queued");
        for other in agents.into_iter().filter(|o| *o != a) {
            self.cancel_offer(call, other);
            self.set_state(other, AgentState::Available { since: now }, now);
        }
        self.set_state(a, AgentState::OnCall { call, since: now }, now);
        self.connected.insert(call, (a, c.queue));
        let agent = self.agent_at(a).extension.clone();
        let wait = now - c.arrived;
        let (kind, action) = if c.callback {
            let kind = EventKind::CallbackConnected { wait };
            (kind, Action::DialCaller { call, agent })
        } else {
            (EventKind::Connect { wait }, Action::Connect { call, agent })
        };
        self.log(now, Some(c.queue), Some(call), Some(a), kind);
        self.out.push_back(action);
        Ok(())
    }

    fn declined(&mut self, call: CallId, extension: &str, now: Instant) -> Result<(), AcdError> {
        let (a, until) = self.reserved_for(call, extension)?;
        let q = self.call(call).queue;
        let rang = now + self.queue(q).config.ring_timeout - until;
        let kind = EventKind::Declined { rang };
        self.log(now, Some(q), Some(call), Some(a), kind);
        self.set_state(a, AgentState::Available { since: now }, now);
        self.offer_ended(call, a, true, now);
        Ok(())
    }

    fn ring_timeout(&mut self, agent: AgentIdx, call: CallId, now: Instant) {
        let q = self.call(call).queue;
        let config = &self.queue(q).config;
        let (rang, pause) = (config.ring_timeout, config.auto_pause_on_no_answer);
        let kind = EventKind::RingNoAnswer { rang };
        self.log(now, Some(q), Some(call), Some(agent), kind);
        self.cancel_offer(call, agent);
        let next = if pause {
            AgentState::NotReady {
                reason: "no answer".to_string(),
            }
        } else {
            AgentState::Available { since: now }
        };
        self.set_state(agent, next, now);
        self.offer_ended(call, agent, true, now);
    }

    fn call_ended(&mut self, call: CallId, by: CallEnd, now: Instant) -> Result<(), AcdError> {
        let (a, q) = self
            .connected
            .remove(&call)
            .ok_or(AcdError::NotConnected(call))?;
        let AgentState::OnCall { since, .. } = self.agent_at(a).state else {
            unreachable!("a connected call's agent is on that call")
        };
        let talk = now - since;
        let kind = match by {
            CallEnd::Agent => EventKind::CompleteAgent { talk },
            CallEnd::Caller => EventKind::CompleteCaller { talk },
            CallEnd::Transferred => EventKind::CompleteTransfer { talk },
        };
        self.log(now, Some(q), Some(call), Some(a), kind);
        self.agents[a.0 as usize].last_call = Some(FinishedCall {
            queue: q,
            call,
            talk,
        });
        let until = now + self.queue(q).config.wrap_up;
        self.set_state(a, AgentState::WrapUp { since: now, until }, now);
        // Every completed call goes through wrap-up, even an empty one, so the log
        // always pairs COMPLETE_* with WRAPUP_START/END.
        if until == now {
            self.set_state(a, AgentState::Available { since: now }, now);
        }
        Ok(())
    }

    // ---- agents --------------------------------------------------------------------

    fn login(&mut self, extension: &str, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        if self.agent_at(a).state == AgentState::LoggedOut {
            self.set_state(a, AgentState::Available { since: now }, now);
        }
        Ok(())
    }

    fn logout(&mut self, extension: &str, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        match self.agent_at(a).state {
            AgentState::LoggedOut => return Ok(()),
            AgentState::OnCall { .. } => return Err(AcdError::AgentBusy(extension.to_string())),
            AgentState::Reserved { call, .. } => {
                self.cancel_offer(call, a);
                self.set_state(a, AgentState::LoggedOut, now);
                self.offer_ended(call, a, false, now);
            }
            _ => self.set_state(a, AgentState::LoggedOut, now),
        }
        for q in self.agent_at(a).queues.clone() {
            self.overflow_if_empty(q, now);
        }
        Ok(())
    }

    /// With nobody logged in, callers on the line would wait for no one.
    fn overflow_if_empty(&mut self, q: QueueIdx, now: Instant) {
        let queue = self.queue(q);
        if queue.logged_in > 0 || queue.config.when_empty != WhenEmpty::Overflow {
            return;
        }
        let on_the_line: Vec<CallId> = queue
            .buckets
            .iter()
            .flat_map(|b| b.calls.values())
            .copied()
            .filter(|c| !self.call(*c).callback)
            .collect();
        for call in on_the_line {
            let c = self.remove_call(call);
            self.overflow(call, q, c.arrived, now);
        }
    }

    fn not_ready(&mut self, extension: &str, reason: String, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        let paused = AgentState::NotReady { reason };
        match self.agent_at(a).state {
            AgentState::LoggedOut => Err(AcdError::NotLoggedIn(extension.to_string())),
            AgentState::OnCall { .. } => Err(AcdError::AgentBusy(extension.to_string())),
            AgentState::Reserved { call, .. } => {
                self.cancel_offer(call, a);
                self.set_state(a, paused, now);
                self.offer_ended(call, a, false, now);
                Ok(())
            }
            _ => {
                self.set_state(a, paused, now);
                Ok(())
            }
        }
    }

    fn ready(&mut self, extension: &str, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        match self.agent_at(a).state {
            AgentState::LoggedOut => Err(AcdError::NotLoggedIn(extension.to_string())),
            AgentState::Reserved { .. } | AgentState::OnCall { .. } => {
                Err(AcdError::AgentBusy(extension.to_string()))
            }
            AgentState::Available { .. } => Ok(()),
            AgentState::NotReady { .. } | AgentState::WrapUp { .. } => {
                self.set_state(a, AgentState::Available { since: now }, now);
                Ok(())
            }
        }
    }

    fn queues_changed(
        &mut self,
        extension: &str,
        queues: &[String],
        now: Instant,
    ) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        let mut new = Vec::with_capacity(queues.len());
        for name in queues {
            let q = self.queue_idx(name)?;
            if !new.contains(&q) {
                new.push(q);
            }
        }
        let state = self.agent_at(a).state.clone();
        let logged_in = usize::from(state.is_logged_in());
        let staffed = usize::from(state.is_staffed());
        let available = matches!(state, AgentState::Available { .. });
        let old = self.agent_at(a).queues.clone();
        let left: Vec<QueueIdx> = old.iter().copied().filter(|q| !new.contains(q)).collect();
        for &q in &left {
            let queue = &mut self.queues[q.0 as usize];
            queue.logged_in -= logged_in;
            queue.staffed -= staffed;
            if available {
                queue.remove_available(a);
            }
        }
        self.agents[a.0 as usize].queues = new.clone();
        for &q in new.iter().filter(|q| !old.contains(q)) {
            let agent = &self.agents[a.0 as usize];
            let queue = &mut self.queues[q.0 as usize];
            queue.logged_in += logged_in;
            queue.staffed += staffed;
            if available {
                queue.add_available(a, agent, now);
            }
        }
        if available {
            // It may take the callers of the queues it joined.
            self.freed.push(a);
        }
        for q in left {
            self.overflow_if_empty(q, now);
        }
        Ok(())
    }

    fn phone_unreachable(&mut self, extension: &str, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        match self.agent_at(a).state {
            AgentState::Available { .. }
            | AgentState::Reserved { .. }
            | AgentState::WrapUp { .. } => self.not_ready(extension, UNREACHABLE.to_string(), now),
            _ => Ok(()),
        }
    }

    fn phone_reachable(&mut self, extension: &str, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        match &self.agent_at(a).state {
            AgentState::NotReady { reason } if reason == UNREACHABLE => self.ready(extension, now),
            _ => Ok(()),
        }
    }

    fn end_wrap_up(&mut self, extension: &str, now: Instant) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        if matches!(self.agent_at(a).state, AgentState::WrapUp { .. }) {
            self.set_state(a, AgentState::Available { since: now }, now);
        }
        Ok(())
    }

    fn skills_changed(
        &mut self,
        extension: &str,
        skills: &[(String, u8)],
        now: Instant,
    ) -> Result<(), AcdError> {
        let a = self.agent_idx(extension)?;
        self.agents[a.0 as usize].skills = self.skills.levels(skills)?;
        if matches!(self.agent_at(a).state, AgentState::Available { .. }) {
            // New skills may change its rank (BestSkill) and the calls it can take.
            self.reindex(a, now);
            self.freed.push(a);
        }
        Ok(())
    }

    fn day_started(&mut self, now: Instant) {
        for i in 0..self.agents.len() {
            self.agents[i].calls_today = 0;
            if matches!(self.agents[i].state, AgentState::Available { .. }) {
                self.reindex(AgentIdx(i as u32), now);
            }
        }
    }

    /// Recomputes an available agent's rank in each of its queues.
    fn reindex(&mut self, a: AgentIdx, now: Instant) {
        let agent = &self.agents[a.0 as usize];
        for &q in &agent.queues {
            let queue = &mut self.queues[q.0 as usize];
            queue.remove_available(a);
            queue.add_available(a, agent, now);
        }
    }

    /// The one place an agent's state changes. Keeps the available-agent indexes, the
    /// queues' staffing counters, the agent's timers and the log in step with it.
    fn set_state(&mut self, a: AgentIdx, new: AgentState, now: Instant) {
        let agent = &mut self.agents[a.0 as usize];
        let old = std::mem::replace(&mut agent.state, new);
        let new = &agent.state;
        let logged_in =
            usize::from(new.is_logged_in()) as isize - usize::from(old.is_logged_in()) as isize;
        let staffed =
            usize::from(new.is_staffed()) as isize - usize::from(old.is_staffed()) as isize;
        let was_available = matches!(old, AgentState::Available { .. });
        for &q in &agent.queues {
            let queue = &mut self.queues[q.0 as usize];
            queue.logged_in = queue
                .logged_in
                .checked_add_signed(logged_in)
                .expect("count");
            queue.staffed = queue.staffed.checked_add_signed(staffed).expect("count");
            if was_available {
                queue.remove_available(a);
            }
        }

        if old == AgentState::LoggedOut {
            self.agents[a.0 as usize].last_idle = Some(now);
            self.log(now, None, None, Some(a), EventKind::Login);
        }
        if let AgentState::WrapUp { since, .. } = old {
            let agent = &mut self.agents[a.0 as usize];
            agent.last_idle = Some(now);
            let finished = agent.last_call.take().expect("wrap-up follows a call");
            let wrap_up = now - since;
            self.queues[finished.queue.0 as usize].record_handle_time(finished.talk + wrap_up);
            let kind = EventKind::WrapUpEnd { wrap_up };
            self.log(
                now,
                Some(finished.queue),
                Some(finished.call),
                Some(a),
                kind,
            );
        }

        match self.agent_at(a).state.clone() {
            AgentState::LoggedOut => self.log(now, None, None, Some(a), EventKind::Logout),
            AgentState::NotReady { reason } => {
                self.log(now, None, None, Some(a), EventKind::Pause { reason })
            }
            AgentState::Available { .. } => {
                if matches!(old, AgentState::NotReady { .. }) {
                    self.log(now, None, None, Some(a), EventKind::Unpause);
                }
                let agent = &self.agents[a.0 as usize];
                for &q in &agent.queues {
                    self.queues[q.0 as usize].add_available(a, agent, now);
                }
                self.freed.push(a);
            }
            AgentState::Reserved { call, until } => {
                self.schedule(until, Timer::RingTimeout { agent: a, call });
            }
            AgentState::OnCall { .. } => self.agents[a.0 as usize].calls_today += 1,
            AgentState::WrapUp { until, .. } => {
                let finished = self.agent_at(a).last_call.expect("wrap-up follows a call");
                let kind = EventKind::WrapUpStart;
                self.log(
                    now,
                    Some(finished.queue),
                    Some(finished.call),
                    Some(a),
                    kind,
                );
                self.schedule(until, Timer::WrapUpEnd { agent: a });
            }
        }
    }

    // ---- timers --------------------------------------------------------------------

    fn is_live(&self, at: Instant, timer: Timer) -> bool {
        let stay = |call: CallId, seq: u64| self.calls.get(&call).filter(|c| c.key.seq == seq);
        match timer {
            Timer::RingTimeout { agent, call } => {
                self.agent_at(agent).state == AgentState::Reserved { call, until: at }
            }
            Timer::WrapUpEnd { agent } => matches!(
                self.agent_at(agent).state,
                AgentState::WrapUp { until, .. } if until == at
            ),
            Timer::MaxWait { call, seq } | Timer::Announce { call, seq } => {
                stay(call, seq).is_some_and(|c| !c.callback)
            }
            Timer::Relax { call, seq, stage } => stay(call, seq).is_some_and(|c| c.stage == stage),
        }
    }

    fn fire(&mut self, at: Instant, timer: Timer, now: Instant) {
        match timer {
            Timer::RingTimeout { agent, call } => self.ring_timeout(agent, call, now),
            Timer::WrapUpEnd { agent } => {
                self.set_state(agent, AgentState::Available { since: now }, now)
            }
            Timer::MaxWait { call, .. } => {
                // A ringing call overflows when its ring ends unanswered (offer_ended).
                if matches!(self.call(call).phase, Phase::Waiting) {
                    let c = self.remove_call(call);
                    self.overflow(call, c.queue, c.arrived, now);
                }
            }
            Timer::Relax { call, seq, stage } => self.relax(call, seq, stage),
            Timer::Announce { call, seq } => self.announce(at, call, seq),
        }
    }

    fn relax(&mut self, call: CallId, seq: u64, stage: usize) {
        let c = &self.calls[&call];
        let queue = &mut self.queues[c.queue.0 as usize];
        let mut requirement = c.requirement.clone();
        queue.steps[stage].apply(&mut requirement);
        let bucket = queue.bucket(stage + 1, &requirement);
        if matches!(c.phase, Phase::Waiting) {
            queue.buckets[c.bucket].calls.remove(&c.key);
            queue.buckets[bucket].calls.insert(c.key, call);
            self.requeued.push(call);
        }
        let next = queue
            .config
            .relaxations
            .get(stage + 1)
            .map(|r| c.arrived + r.after);
        let c = self.call_mut(call);
        c.requirement = requirement;
        c.stage = stage + 1;
        c.bucket = bucket;
        if let Some(at) = next {
            let stage = stage + 1;
            self.schedule(at, Timer::Relax { call, seq, stage });
        }
    }

    fn announce(&mut self, at: Instant, call: CallId, seq: u64) {
        let c = self.call(call);
        let queue = self.queue(c.queue);
        let every = queue
            .config
            .announce_every
            .expect("announcements are configured");
        // A caller whose agent's phone is ringing is about to be answered: skip this one.
        if matches!(c.phase, Phase::Waiting) {
            let position = queue.position(c.key);
            let estimated_wait = queue.estimated_wait(position);
            self.out.push_back(Action::Announce {
                call,
                position,
                estimated_wait,
            });
        }
        self.schedule(at + every, Timer::Announce { call, seq });
    }

    // ---- routing -------------------------------------------------------------------

    /// Restores the invariant (see the module docs) around what the event changed.
    fn settle(&mut self, now: Instant) {
        // Routing an agent only ever offers to that agent, so each is still available.
        for a in std::mem::take(&mut self.freed) {
            debug_assert!(matches!(
                self.agent_at(a).state,
                AgentState::Available { .. }
            ));
            self.route_agent(a, now);
        }
        let mut calls = std::mem::take(&mut self.requeued);
        // A requeued call may have left since (the last agent logged out, say), or been
        // taken by a freed agent just now.
        calls.retain(|c| {
            self.calls
                .get(c)
                .is_some_and(|c| matches!(c.phase, Phase::Waiting))
        });
        calls.sort_by_key(|c| self.call(*c).key);
        for call in calls {
            self.route_call(call, now);
        }
    }

    /// Offers the agent's best eligible waiting call, if any: highest priority, then
    /// longest waiting, over its own queues and the queues allowed to borrow it.
    fn route_agent(&mut self, a: AgentIdx, now: Instant) {
        let mut best = None;
        for &q in &self.agent_at(a).queues {
            self.best_call_in(q, 0, a, &mut best);
            for &(borrower, from_stage) in &self.queue(q).borrowers {
                self.best_call_in(borrower, from_stage, a, &mut best);
            }
        }
        if let Some((_, call)) = best {
            let agent = self.agent_at(a).extension.to_string();
            let why = self.decision(call, &[a], Trigger::AgentFreed { agent }, now);
            self.decisions.push_back(why);
            self.offer(call, vec![a], now);
        }
    }

    /// Improves `best` with the first call in queue `q`, at relaxation stage `from_stage`
    /// or later, that agent `a` may take.
    fn best_call_in(
        &self,
        q: QueueIdx,
        from_stage: usize,
        a: AgentIdx,
        best: &mut Option<(CallKey, CallId)>,
    ) {
        let queue = self.queue(q);
        let skills = &self.agent_at(a).skills;
        let open = queue
            .buckets
            .iter()
            .filter(|b| b.stage >= from_stage && b.requirement.met_by(skills));
        for bucket in open {
            // Only calls this agent declined are skipped, so this stops almost at once.
            for (&key, &call) in &bucket.calls {
                if best.is_some_and(|(best_key, _)| best_key <= key) {
                    break;
                }
                if !self.call(call).declined.contains(&a) {
                    *best = Some((key, call));
                    break;
                }
            }
        }
    }

    /// The queues whose available agents may take the call, in the order they are
    /// tried: its own, then those it may borrow from at its relaxation stage.
    fn pools(&self, call: CallId) -> impl Iterator<Item = QueueIdx> + '_ {
        let c = self.call(call);
        std::iter::once(c.queue).chain(
            self.queue(c.queue)
                .lenders
                .iter()
                .filter(|(_, from_stage)| *from_stage <= c.stage)
                .map(|(lender, _)| *lender),
        )
    }

    /// Offers the call to its queue's best eligible agent (or, for RingAll, every one):
    /// the queue's own agents first, then those of queues it may borrow from by now.
    fn route_call(&mut self, call: CallId, now: Instant) {
        let c = self.call(call);
        let queue = self.queue(c.queue);
        let ring_all = queue.config.strategy == Strategy::RingAll;
        let mut chosen: Vec<AgentIdx> = Vec::new();
        'pools: for pool in self.pools(call) {
            for a in self.queue(pool).available() {
                let eligible = c.requirement.met_by(&self.agent_at(a).skills)
                    && !c.declined.contains(&a)
                    && !chosen.contains(&a);
                if eligible {
                    chosen.push(a);
                    if !ring_all {
                        break 'pools;
                    }
                }
            }
        }
        if !chosen.is_empty() {
            let why = self.decision(call, &chosen, Trigger::CallWaiting, now);
            self.decisions.push_back(why);
            self.offer(call, chosen, now);
        }
    }

    fn offer(&mut self, call: CallId, agents: Vec<AgentIdx>, now: Instant) {
        let c = self.call_mut(call);
        let (q, bucket, key, callback) = (c.queue, c.bucket, c.key, c.callback);
        c.phase = Phase::Ringing(agents.clone());
        let queue = &mut self.queues[q.0 as usize];
        queue.buckets[bucket].calls.remove(&key);
        let until = now + queue.config.ring_timeout;
        for a in agents {
            self.queues[q.0 as usize].took_turn(a);
            self.set_state(a, AgentState::Reserved { call, until }, now);
            self.log(now, Some(q), Some(call), Some(a), EventKind::Offer);
            let agent = self.agent_at(a).extension.clone();
            self.out.push_back(if callback {
                Action::OfferCallback { call, agent }
            } else {
                Action::Offer { call, agent }
            });
        }
    }
}
