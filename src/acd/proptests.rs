//! Property tests: random sequences of arrivals, answers, declines, hang-ups, abandons,
//! callbacks, agent state changes and time advances, checked against what the router
//! *said* (its actions and log rows), not against its internal state:
//! - no agent is offered a call while it is ringing, on a call, in wrap-up, paused or
//!   logged out — so never two calls at once;
//! - every call that entered a queue leaves it exactly once;
//! - when a call is offered, no waiting call the same agent could take is ahead of it
//!   (higher priority, or equal priority and earlier arrival).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use proptest::prelude::{
    any, prop, prop_assert, prop_assert_eq, prop_oneof, proptest, Just, ProptestConfig,
};
// The trait's name would clash with the routing strategy's.
use proptest::strategy::Strategy as _;

use super::*;

struct QueueSpec {
    name: &'static str,
    strategy: Strategy,
    needs_y: Option<u8>,
    max_wait: Option<u64>,
    ring_timeout: u64,
    wrap_up: u64,
    auto_pause: bool,
}

const QUEUES: [QueueSpec; 4] = [
    QueueSpec {
        name: "q0",
        strategy: Strategy::LongestIdle,
        needs_y: None,
        max_wait: Some(90),
        ring_timeout: 10,
        wrap_up: 5,
        auto_pause: true,
    },
    QueueSpec {
        name: "q1",
        strategy: Strategy::RingAll,
        needs_y: None,
        max_wait: Some(120),
        ring_timeout: 8,
        wrap_up: 0,
        auto_pause: false,
    },
    // Waits without a maximum, even with nobody logged in.
    QueueSpec {
        name: "q2",
        strategy: Strategy::RoundRobin,
        needs_y: None,
        max_wait: None,
        ring_timeout: 12,
        wrap_up: 3,
        auto_pause: true,
    },
    QueueSpec {
        name: "q3",
        strategy: Strategy::BestSkill,
        needs_y: Some(2),
        max_wait: Some(60),
        ring_timeout: 10,
        wrap_up: 0,
        auto_pause: false,
    },
];

/// Each agent's queues (indexes into QUEUES).
const MEMBERSHIP: [&[usize]; 6] = [&[0, 1], &[0, 2, 3], &[1, 3], &[2], &[0, 1, 2, 3], &[3]];

const AGENTS: usize = MEMBERSHIP.len();

fn agent_name(i: usize) -> String {
    format!("a{i}")
}

#[derive(Debug, Clone)]
enum Op {
    Arrive {
        queue: usize,
        priority: i32,
        /// A per-call "x" requirement.
        needs_x: Option<u8>,
    },
    Abandon(usize),
    Callback(usize),
    TransferOut(usize),
    Answer(usize),
    Decline(usize),
    End {
        agent: usize,
        by_agent: bool,
    },
    Login(usize),
    Logout(usize),
    Pause(usize),
    Ready(usize),
    EndWrapUp(usize),
    Skills {
        agent: usize,
        x: u8,
        y: u8,
    },
    Advance(u64),
    DayStarted,
    Unreachable(usize),
    Reachable(usize),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    let agent = 0..AGENTS;
    prop_oneof![
        4 => (0..QUEUES.len(), -1..3i32, prop::option::weighted(0.3, 1..8u8))
            .prop_map(|(queue, priority, needs_x)| Op::Arrive { queue, priority, needs_x }),
        1 => any::<usize>().prop_map(Op::Abandon),
        1 => any::<usize>().prop_map(Op::Callback),
        1 => any::<usize>().prop_map(Op::TransferOut),
        4 => agent.clone().prop_map(Op::Answer),
        2 => agent.clone().prop_map(Op::Decline),
        3 => (agent.clone(), any::<bool>()).prop_map(|(agent, by_agent)| Op::End { agent, by_agent }),
        2 => agent.clone().prop_map(Op::Login),
        1 => agent.clone().prop_map(Op::Logout),
        1 => agent.clone().prop_map(Op::Pause),
        2 => agent.clone().prop_map(Op::Ready),
        1 => agent.clone().prop_map(Op::EndWrapUp),
        1 => (agent.clone(), 1..11u8, 1..11u8).prop_map(|(agent, x, y)| Op::Skills { agent, x, y }),
        4 => (0..25u64).prop_map(Op::Advance),
        1 => Just(Op::DayStarted),
        1 => agent.clone().prop_map(Op::Unreachable),
        1 => agent.prop_map(Op::Reachable),
    ]
}

/// What an agent is doing, as far as the router's output tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Doing {
    Out,
    Free,
    Ringing(CallId),
    Talking(CallId),
    WrappingUp,
    Paused,
}

#[derive(Debug)]
struct SeenCall {
    queue: usize,
    priority: i32,
    seq: u64,
    needs_x: u8,
    declined: HashSet<usize>,
    ringing: HashSet<usize>,
    in_queue: bool,
}

/// The world as reconstructed from the router's actions.
struct Observer {
    agents: Vec<Doing>,
    skills: Vec<(u8, u8)>,
    calls: HashMap<CallId, SeenCall>,
    next_seq: u64,
}

impl Observer {
    fn agent(name: &str) -> usize {
        name[1..].parse().unwrap()
    }

    fn eligible(&self, agent: usize, call: &SeenCall) -> bool {
        let (x, y) = self.skills[agent];
        let needs_y = QUEUES[call.queue].needs_y.unwrap_or(0);
        MEMBERSHIP[agent].contains(&call.queue)
            && x >= call.needs_x
            && y >= needs_y
            && !call.declined.contains(&agent)
    }

    fn see(&mut self, action: &Action) {
        match action {
            Action::Offer { call, agent } | Action::OfferCallback { call, agent } => {
                let a = Self::agent(agent);
                assert_eq!(
                    self.agents[a],
                    Doing::Free,
                    "{agent} offered call {call} while not free"
                );
                let c = &self.calls[call];
                assert!(c.in_queue, "call {call} offered after leaving the queue");
                assert!(
                    self.eligible(a, c),
                    "{agent} is not eligible for call {call}"
                );
                let rank = |c: &SeenCall| (std::cmp::Reverse(c.priority), c.seq);
                for (id, w) in &self.calls {
                    let waiting = w.in_queue && w.ringing.is_empty();
                    if waiting && id != call && self.eligible(a, w) {
                        assert!(
                            rank(w) > rank(c),
                            "{agent} offered call {call} while call {id} was ahead of it"
                        );
                    }
                }
                self.calls.get_mut(call).unwrap().ringing.insert(a);
                self.agents[a] = Doing::Ringing(*call);
            }
            Action::CancelOffer { call, agent } => {
                let a = Self::agent(agent);
                assert_eq!(self.agents[a], Doing::Ringing(*call));
                self.calls.get_mut(call).unwrap().ringing.remove(&a);
                self.agents[a] = Doing::Free;
            }
            Action::Connect { call, agent } | Action::DialCaller { call, agent } => {
                let a = Self::agent(agent);
                assert_eq!(self.agents[a], Doing::Ringing(*call));
                let c = &self.calls[call];
                assert_eq!(c.ringing, HashSet::from([a]), "others still ring");
                assert!(!c.in_queue, "CONNECT is logged before Connect");
                self.agents[a] = Doing::Talking(*call);
            }
            Action::Overflow { call, .. } => {
                assert!(!self.calls[call].in_queue, "OVERFLOW is logged first");
            }
            Action::Announce { call, .. } => assert!(self.calls[call].in_queue),
            Action::Log(row) => self.see_row(row),
        }
    }

    fn see_row(&mut self, row: &EventRow) {
        let agent = row.agent.as_deref().map(Self::agent);
        match &row.kind {
            EventKind::Enter { priority, .. } => {
                let c = self.calls.get_mut(&row.call.unwrap()).unwrap();
                assert!(!c.in_queue && c.seq == u64::MAX, "entered twice");
                assert_eq!(c.priority, *priority);
                c.in_queue = true;
                c.seq = self.next_seq;
                self.next_seq += 1;
            }
            kind if kind.leaves_queue() => {
                let c = self.calls.get_mut(&row.call.unwrap()).unwrap();
                assert!(c.in_queue, "call {:?} left the queue twice", row.call);
                c.in_queue = false;
            }
            EventKind::RingNoAnswer { .. } => {
                let c = self.calls.get_mut(&row.call.unwrap()).unwrap();
                c.declined.insert(agent.unwrap());
            }
            EventKind::Declined { .. } => {
                let (a, call) = (agent.unwrap(), row.call.unwrap());
                assert_eq!(self.agents[a], Doing::Ringing(call));
                let c = self.calls.get_mut(&call).unwrap();
                c.declined.insert(a);
                c.ringing.remove(&a);
                self.agents[a] = Doing::Free;
            }
            EventKind::CompleteAgent { .. }
            | EventKind::CompleteCaller { .. }
            | EventKind::CompleteTransfer { .. } => {
                assert_eq!(
                    self.agents[agent.unwrap()],
                    Doing::Talking(row.call.unwrap())
                );
            }
            EventKind::WrapUpStart => self.agents[agent.unwrap()] = Doing::WrappingUp,
            EventKind::WrapUpEnd { .. } | EventKind::Login | EventKind::Unpause => {
                self.agents[agent.unwrap()] = Doing::Free
            }
            EventKind::Logout => self.agents[agent.unwrap()] = Doing::Out,
            EventKind::Pause { .. } => self.agents[agent.unwrap()] = Doing::Paused,
            _ => {}
        }
    }
}

struct Run {
    router: Router,
    observer: Observer,
    now: Instant,
    created: Vec<CallId>,
}

impl Run {
    fn new() -> Self {
        let mut router = Router::new();
        for spec in &QUEUES {
            router
                .add_queue(QueueConfig {
                    skills: spec
                        .needs_y
                        .map(|y| ("y".to_string(), y))
                        .into_iter()
                        .collect(),
                    max_wait: spec.max_wait.map(Duration::from_secs),
                    ring_timeout: Duration::from_secs(spec.ring_timeout),
                    wrap_up: Duration::from_secs(spec.wrap_up),
                    auto_pause_on_no_answer: spec.auto_pause,
                    announce_every: Some(Duration::from_secs(20)),
                    when_empty: if spec.max_wait.is_some() {
                        WhenEmpty::Overflow
                    } else {
                        WhenEmpty::Wait
                    },
                    ..QueueConfig::new(spec.name, spec.strategy)
                })
                .unwrap();
        }
        let skills: Vec<(u8, u8)> = (0..AGENTS).map(|i| (1 + i as u8, 9 - i as u8)).collect();
        for (i, member_of) in MEMBERSHIP.iter().enumerate() {
            router
                .add_agent(AgentConfig {
                    extension: agent_name(i),
                    skills: vec![("x".into(), skills[i].0), ("y".into(), skills[i].1)],
                    queues: member_of
                        .iter()
                        .map(|q| QUEUES[*q].name.to_string())
                        .collect(),
                })
                .unwrap();
        }
        Run {
            router,
            observer: Observer {
                agents: vec![Doing::Out; AGENTS],
                skills,
                calls: HashMap::new(),
                next_seq: 0,
            },
            now: Instant::now(),
            created: Vec::new(),
        }
    }

    fn observe(&mut self) {
        while let Some(action) = self.router.poll() {
            self.observer.see(&action);
        }
    }

    fn send(&mut self, event: Event) -> Result<(), AcdError> {
        let result = self.router.handle(event, self.now);
        if result.is_err() {
            assert!(
                self.router.poll().is_none(),
                "a refused event changed something"
            );
        }
        self.observe();
        result
    }

    fn advance(&mut self, by: Duration) {
        let target = self.now + by;
        while let Some(due) = self.router.poll_timeout().filter(|due| *due <= target) {
            self.now = due;
            self.router.handle_timeout(due);
            self.observe();
        }
        self.now = target;
    }

    fn pick(&self, i: usize) -> Option<CallId> {
        (!self.created.is_empty()).then(|| self.created[i % self.created.len()])
    }

    fn apply(&mut self, op: Op) {
        let agent = |i: usize| agent_name(i);
        let doing = |run: &Run, i: usize| run.observer.agents[i];
        // Results are not checked here: most random events are legitimately refused.
        let _ = match op {
            Op::Arrive {
                queue,
                priority,
                needs_x,
            } => {
                let call = CallId(self.created.len() as u64);
                self.created.push(call);
                self.observer.calls.insert(
                    call,
                    SeenCall {
                        queue,
                        priority,
                        seq: u64::MAX,
                        needs_x: needs_x.unwrap_or(0),
                        declined: HashSet::new(),
                        ringing: HashSet::new(),
                        in_queue: false,
                    },
                );
                let result = self.send(Event::CallArrived {
                    call,
                    queue: QUEUES[queue].name.into(),
                    skills: needs_x.map(|x| ("x".to_string(), x)).into_iter().collect(),
                    priority,
                });
                assert!(result.is_ok());
                result
            }
            Op::Abandon(i) => match self.pick(i) {
                Some(call) => self.send(Event::CallAbandoned { call }),
                None => Ok(()),
            },
            Op::Callback(i) => match self.pick(i) {
                Some(call) => self.send(Event::CallbackRequested { call }),
                None => Ok(()),
            },
            Op::TransferOut(i) => match self.pick(i) {
                Some(call) => self.send(Event::TransferredOut { call }),
                None => Ok(()),
            },
            Op::Answer(i) | Op::Decline(i) => {
                let call = match doing(self, i) {
                    Doing::Ringing(call) => call,
                    _ => CallId(u64::MAX),
                };
                let agent = agent(i);
                let result = self.send(if matches!(op, Op::Answer(_)) {
                    Event::OfferAnswered { call, agent }
                } else {
                    Event::OfferDeclined { call, agent }
                });
                assert_eq!(result.is_ok(), call != CallId(u64::MAX), "{result:?}");
                result
            }
            Op::End { agent: i, by_agent } => {
                let call = match doing(self, i) {
                    Doing::Talking(call) => call,
                    _ => CallId(u64::MAX),
                };
                let by = if by_agent {
                    CallEnd::Agent
                } else {
                    CallEnd::Caller
                };
                let result = self.send(Event::CallEnded { call, by });
                assert_eq!(result.is_ok(), call != CallId(u64::MAX), "{result:?}");
                result
            }
            Op::Login(i) => self.send(Event::AgentLogin { agent: agent(i) }),
            Op::Logout(i) => self.send(Event::AgentLogout { agent: agent(i) }),
            Op::Pause(i) => self.send(Event::AgentNotReady {
                agent: agent(i),
                reason: "break".into(),
            }),
            Op::Ready(i) => self.send(Event::AgentReady { agent: agent(i) }),
            Op::EndWrapUp(i) => self.send(Event::EndWrapUp { agent: agent(i) }),
            Op::Skills { agent: i, x, y } => {
                // The observer must know the new skills before the offers they cause.
                self.observer.skills[i] = (x, y);
                self.send(Event::SkillsChanged {
                    agent: agent(i),
                    skills: vec![("x".into(), x), ("y".into(), y)],
                })
            }
            Op::Advance(secs) => {
                self.advance(Duration::from_secs(secs));
                Ok(())
            }
            Op::DayStarted => self.send(Event::DayStarted),
            Op::Unreachable(i) => self.send(Event::PhoneUnreachable { agent: agent(i) }),
            Op::Reachable(i) => self.send(Event::PhoneReachable { agent: agent(i) }),
        };
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn routing_keeps_its_promises(ops in prop::collection::vec(op(), 1..200)) {
        let mut run = Run::new();
        for op in ops {
            run.apply(op);
        }
        // Let every timer run out, then hang up whoever is still waiting (callbacks and
        // callers of the queue without a maximum wait).
        run.advance(Duration::from_secs(600));
        let still_queued: Vec<CallId> = run
            .observer
            .calls
            .iter()
            .filter(|(_, c)| c.in_queue)
            .map(|(id, _)| *id)
            .collect();
        for call in still_queued {
            run.send(Event::CallAbandoned { call }).unwrap();
        }
        for (id, c) in &run.observer.calls {
            prop_assert!(!c.in_queue && c.seq != u64::MAX, "call {} never entered or never left", id);
        }
        for spec in &QUEUES {
            prop_assert_eq!(run.router.waiting(spec.name), Some(0));
        }
    }
}

impl Run {
    fn state(&self, i: usize) -> AgentState {
        self.router.agent(&agent_name(i)).unwrap().state.clone()
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Whatever happened before, every agent state has a way out: a ringing offer and a
    /// wrap-up end by themselves in time; a call ends when a party hangs up; a pause ends
    /// by a request (API or phone code); and from every state but a call in progress a
    /// log-out succeeds at once, after which a log-in makes the agent ready.
    #[test]
    fn no_sequence_of_events_leaves_an_agent_without_a_way_out(
        ops in prop::collection::vec(op(), 1..200),
        which in 0..AGENTS,
    ) {
        let mut run = Run::new();
        for op in ops {
            run.apply(op);
        }
        let name = agent_name(which);
        match run.state(which) {
            AgentState::Reserved { call, until } => {
                run.advance(until.saturating_duration_since(run.now));
                let after = run.state(which);
                prop_assert!(
                    !matches!(after, AgentState::Reserved { call: c, .. } if c == call),
                    "still ringing with {} after its ring timeout: {:?}", call, after
                );
            }
            AgentState::WrapUp { until, .. } => {
                run.advance(until.saturating_duration_since(run.now));
                let after = run.state(which);
                prop_assert!(!matches!(after, AgentState::WrapUp { .. }), "wrap-up never ended: {:?}", after);
            }
            AgentState::NotReady { .. } => {
                run.send(Event::AgentReady { agent: name.clone() }).unwrap();
                let after = run.state(which);
                prop_assert!(!matches!(after, AgentState::NotReady { .. }), "ready refused: {:?}", after);
            }
            AgentState::OnCall { call, .. } => {
                run.send(Event::CallEnded { call, by: CallEnd::Caller }).unwrap();
                let after = run.state(which);
                prop_assert!(!matches!(after, AgentState::OnCall { .. }), "the call's end left it on a call: {:?}", after);
            }
            AgentState::LoggedOut | AgentState::Available { .. } => {}
        }
        // Out and back in, from wherever it is now (ending a call first if it got one).
        if let AgentState::OnCall { call, .. } = run.state(which) {
            run.send(Event::CallEnded { call, by: CallEnd::Agent }).unwrap();
        }
        run.send(Event::AgentLogout { agent: name.clone() }).unwrap();
        prop_assert_eq!(run.state(which), AgentState::LoggedOut);
        run.send(Event::AgentLogin { agent: name.clone() }).unwrap();
        let back = run.state(which);
        prop_assert!(
            matches!(back, AgentState::Available { .. } | AgentState::Reserved { .. }),
            "logged in again but {:?}", back
        );
    }

    /// An unreachable phone never keeps its agent ready or ringing, and its return makes
    /// the agent ready only if unreachability was the reason it was not.
    #[test]
    fn an_unreachable_phone_is_never_offered_calls(
        ops in prop::collection::vec(op(), 1..150),
        which in 0..AGENTS,
    ) {
        let mut run = Run::new();
        for op in ops {
            run.apply(op);
        }
        let name = agent_name(which);
        let before = run.state(which);
        run.send(Event::PhoneUnreachable { agent: name.clone() }).unwrap();
        let after = run.state(which);
        match before {
            AgentState::OnCall { .. } | AgentState::LoggedOut => prop_assert_eq!(&after, &before),
            AgentState::NotReady { .. } => prop_assert_eq!(&after, &before),
            _ => prop_assert_eq!(&after, &AgentState::NotReady { reason: UNREACHABLE.into() }),
        }
        // Time passes and calls come: it is offered none while unreachable.
        for q in 0..QUEUES.len() {
            run.apply(Op::Arrive { queue: q, priority: 0, needs_x: None });
        }
        run.advance(Duration::from_secs(30));
        if after == (AgentState::NotReady { reason: UNREACHABLE.into() }) {
            prop_assert_eq!(run.state(which), after.clone());
            run.send(Event::PhoneReachable { agent: name }).unwrap();
            let back = run.state(which);
            prop_assert!(!matches!(back, AgentState::NotReady { .. }), "still not ready: {:?}", back);
        }
    }
}
