//! Scenario tests of the router on a fake clock: `t0 + n seconds`.

use std::time::{Duration, Instant};

use super::event_log::EventKind;
use super::*;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// (extension, skills, queues).
type AgentSpec<'a> = (&'a str, &'a [(&'a str, u8)], &'a [&'a str]);

/// A router on a fake clock that collects what it asks for.
struct Sim {
    router: Router,
    t0: Instant,
    now: Instant,
    log: Vec<EventRow>,
}

impl Sim {
    fn new(queues: Vec<QueueConfig>, agents: &[AgentSpec]) -> Self {
        let mut router = Router::new();
        for queue in queues {
            router.add_queue(queue).unwrap();
        }
        for (extension, skills, member_of) in agents {
            router
                .add_agent(AgentConfig {
                    extension: extension.to_string(),
                    skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
                    queues: member_of.iter().map(|q| q.to_string()).collect(),
                })
                .unwrap();
        }
        let t0 = Instant::now();
        Sim {
            router,
            t0,
            now: t0,
            log: Vec::new(),
        }
    }

    /// Drains the router; keeps log rows aside and returns the other actions.
    fn drain(&mut self) -> Vec<Action> {
        let mut actions = Vec::new();
        while let Some(action) = self.router.poll() {
            match action {
                Action::Log(row) => self.log.push(row),
                other => actions.push(other),
            }
        }
        actions
    }

    /// Moves the clock to `t0 + at`, firing every timer due on the way at its own time.
    fn at(&mut self, at: u64) -> Vec<Action> {
        let target = self.t0 + secs(at);
        while let Some(due) = self.router.poll_timeout().filter(|due| *due <= target) {
            self.now = due;
            self.router.handle_timeout(due);
        }
        self.now = target;
        self.drain()
    }

    fn try_event(&mut self, event: Event) -> Result<Vec<Action>, AcdError> {
        self.router.handle(event, self.now)?;
        Ok(self.drain())
    }

    fn event(&mut self, event: Event) -> Vec<Action> {
        self.try_event(event).unwrap()
    }

    fn arrive(&mut self, call: u64, queue: &str) -> Vec<Action> {
        self.arrive_with(call, queue, &[], 0)
    }

    fn arrive_with(
        &mut self,
        call: u64,
        queue: &str,
        skills: &[(&str, u8)],
        priority: i32,
    ) -> Vec<Action> {
        self.event(Event::CallArrived {
            call: CallId(call),
            queue: queue.to_string(),
            skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
            priority,
        })
    }

    fn login(&mut self, agent: &str) -> Vec<Action> {
        self.event(Event::AgentLogin {
            agent: agent.to_string(),
        })
    }

    fn answer(&mut self, call: u64, agent: &str) -> Vec<Action> {
        self.event(Event::OfferAnswered {
            call: CallId(call),
            agent: agent.to_string(),
        })
    }

    fn decline(&mut self, call: u64, agent: &str) -> Vec<Action> {
        self.event(Event::OfferDeclined {
            call: CallId(call),
            agent: agent.to_string(),
        })
    }

    fn end(&mut self, call: u64) -> Vec<Action> {
        self.event(Event::CallEnded {
            call: CallId(call),
            by: CallEnd::Caller,
        })
    }

    fn pause(&mut self, agent: &str) -> Vec<Action> {
        self.event(Event::AgentNotReady {
            agent: agent.to_string(),
            reason: "lunch".to_string(),
        })
    }

    fn ready(&mut self, agent: &str) -> Vec<Action> {
        self.event(Event::AgentReady {
            agent: agent.to_string(),
        })
    }

    /// Answers and immediately ends a call (a queue with no wrap-up frees the agent).
    fn handle_call(&mut self, call: u64, agent: &str) -> Vec<Action> {
        self.answer(call, agent);
        self.end(call)
    }

    fn state(&self, agent: &str) -> AgentState {
        self.router.agent(agent).unwrap().state.clone()
    }

    fn kinds(&self) -> Vec<&'static str> {
        self.log.iter().map(|r| r.kind.name()).collect()
    }
}

fn offer(call: u64, agent: &str) -> Action {
    Action::Offer {
        call: CallId(call),
        agent: agent.into(),
    }
}

fn cancel(call: u64, agent: &str) -> Action {
    Action::CancelOffer {
        call: CallId(call),
        agent: agent.into(),
    }
}

fn connect(call: u64, agent: &str) -> Action {
    Action::Connect {
        call: CallId(call),
        agent: agent.into(),
    }
}

fn overflow(call: u64, target: OverflowTarget) -> Action {
    Action::Overflow {
        call: CallId(call),
        target,
    }
}

fn queue(name: &str, strategy: Strategy) -> QueueConfig {
    QueueConfig {
        wrap_up: Duration::ZERO,
        ..QueueConfig::new(name, strategy)
    }
}

const NONE: &[(&str, u8)] = &[];

#[test]
fn longest_idle_offers_the_agent_idle_longest() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::LongestIdle)],
        &[
            ("a1", NONE, &["sales"]),
            ("a2", NONE, &["sales"]),
            ("a3", NONE, &["sales"]),
        ],
    );
    sim.login("a1");
    sim.at(1);
    sim.login("a2");
    sim.at(2);
    sim.login("a3");
    sim.at(10);
    assert_eq!(sim.arrive(1, "sales"), vec![offer(1, "a1")]);
    sim.answer(1, "a1");
    assert_eq!(sim.arrive(2, "sales"), vec![offer(2, "a2")]);
    sim.answer(2, "a2");
    sim.at(20);
    sim.end(2);
    sim.at(30);
    sim.end(1);
    // Idle since: a3 2 s (login), a2 20 s, a1 30 s.
    assert_eq!(sim.arrive(3, "sales"), vec![offer(3, "a3")]);
    assert_eq!(sim.arrive(4, "sales"), vec![offer(4, "a2")]);
    assert_eq!(sim.arrive(5, "sales"), vec![offer(5, "a1")]);
}

#[test]
fn fewest_calls_prefers_the_agent_with_fewer_calls_today_over_the_longest_idle() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::FewestCalls)],
        &[("a1", NONE, &["sales"]), ("a2", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.arrive(1, "sales");
    sim.handle_call(1, "a1");
    sim.arrive(2, "sales");
    sim.handle_call(2, "a1");
    sim.at(100);
    sim.login("a2");
    assert_eq!(sim.router.agent("a1").unwrap().calls_today, 2);
    assert_eq!(sim.arrive(3, "sales"), vec![offer(3, "a2")]);
    // A new day levels the field: a1 has been idle longest.
    sim.handle_call(3, "a2");
    sim.event(Event::DayStarted);
    assert_eq!(sim.arrive(4, "sales"), vec![offer(4, "a1")]);
}

#[test]
fn round_robin_takes_turns_whoever_was_idle_longest() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::RoundRobin)],
        &[
            ("a1", NONE, &["sales"]),
            ("a2", NONE, &["sales"]),
            ("a3", NONE, &["sales"]),
        ],
    );
    for agent in ["a1", "a2", "a3"] {
        sim.login(agent);
    }
    for (call, agent) in [(1, "a1"), (2, "a2"), (3, "a3")] {
        assert_eq!(sim.arrive(call, "sales"), vec![offer(call, agent)]);
        sim.answer(call, agent);
    }
    // Ending in reverse order makes a3 the longest idle; the turn is still a1's.
    for (t, call) in [(20, 3), (21, 2), (22, 1)] {
        sim.at(t);
        sim.end(call);
    }
    assert_eq!(sim.arrive(4, "sales"), vec![offer(4, "a1")]);
    assert_eq!(sim.arrive(5, "sales"), vec![offer(5, "a2")]);
}

#[test]
fn best_skill_offers_the_highest_level_first_and_ties_to_the_longest_idle() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            skills: vec![("billing".into(), 1)],
            ..queue("billing", Strategy::BestSkill)
        }],
        &[
            ("a1", &[("billing", 3)], &["billing"]),
            ("a2", &[("billing", 8)], &["billing"]),
            ("a3", &[("billing", 8)], &["billing"]),
            ("a4", &[("sales", 10)], &["billing"]),
        ],
    );
    for (t, agent) in [(0, "a1"), (1, "a3"), (2, "a2"), (3, "a4")] {
        sim.at(t);
        sim.login(agent);
    }
    assert_eq!(sim.arrive(1, "billing"), vec![offer(1, "a3")]);
    assert_eq!(sim.arrive(2, "billing"), vec![offer(2, "a2")]);
    assert_eq!(sim.arrive(3, "billing"), vec![offer(3, "a1")]);
    // a4 lacks the queue's skill.
    assert_eq!(sim.arrive(4, "billing"), vec![]);
}

#[test]
fn ring_all_rings_every_eligible_agent_and_cancels_the_rest_on_answer() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            skills: vec![("support".into(), 2)],
            ..queue("support", Strategy::RingAll)
        }],
        &[
            ("a1", &[("support", 2)], &["support"]),
            ("a2", &[("support", 5)], &["support"]),
            ("a3", &[("support", 1)], &["support"]),
        ],
    );
    for agent in ["a1", "a2", "a3"] {
        sim.login(agent);
    }
    assert_eq!(
        sim.arrive(1, "support"),
        vec![offer(1, "a1"), offer(1, "a2")]
    );
    assert_eq!(sim.answer(1, "a2"), vec![cancel(1, "a1"), connect(1, "a2")]);
    // a1 is free again and alone eligible.
    assert_eq!(sim.arrive(2, "support"), vec![offer(2, "a1")]);
    let err = sim
        .try_event(Event::OfferAnswered {
            call: CallId(1),
            agent: "a1".into(),
        })
        .unwrap_err();
    assert!(err.to_string().contains("hang up the agent's leg"), "{err}");
}

#[test]
fn per_call_skills_add_to_the_queue_requirement() {
    let mut sim = Sim::new(
        vec![queue("support", Strategy::LongestIdle)],
        &[
            ("a1", &[("english", 9)], &["support"]),
            ("a2", &[("english", 5), ("spanish", 6)], &["support"]),
        ],
    );
    sim.login("a1");
    sim.at(5);
    sim.login("a2");
    assert_eq!(
        sim.arrive_with(1, "support", &[("spanish", 5)], 0),
        vec![offer(1, "a2")]
    );
}

#[test]
fn relaxation_lowers_the_minimum_level_after_waiting() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            skills: vec![("billing".into(), 8)],
            relaxations: vec![Relaxation {
                after: secs(30),
                widen: Widen::LowerLevels(4),
            }],
            ..queue("billing", Strategy::LongestIdle)
        }],
        &[("a1", &[("billing", 4)], &["billing"])],
    );
    sim.login("a1");
    assert_eq!(sim.arrive(1, "billing"), vec![]);
    assert_eq!(sim.at(29), vec![]);
    assert_eq!(sim.at(30), vec![offer(1, "a1")]);
}

#[test]
fn relaxation_drops_a_skill_the_caller_asked_for() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            relaxations: vec![
                Relaxation {
                    after: secs(20),
                    widen: Widen::LowerLevels(1),
                },
                Relaxation {
                    after: secs(40),
                    widen: Widen::DropSkill("spanish".into()),
                },
            ],
            ..queue("support", Strategy::LongestIdle)
        }],
        &[("a1", &[("english", 5)], &["support"])],
    );
    sim.login("a1");
    assert_eq!(
        sim.arrive_with(1, "support", &[("spanish", 5), ("english", 6)], 0),
        vec![]
    );
    // At 20 s english 6 → 5 is met, spanish 4 still is not; at 40 s spanish goes.
    assert_eq!(sim.at(39), vec![]);
    assert_eq!(sim.at(40), vec![offer(1, "a1")]);
}

#[test]
fn relaxation_borrows_another_queues_agents() {
    let mut sim = Sim::new(
        vec![
            queue("billing", Strategy::LongestIdle),
            QueueConfig {
                relaxations: vec![Relaxation {
                    after: secs(60),
                    widen: Widen::BorrowAgentsOf("billing".into()),
                }],
                ..queue("sales", Strategy::LongestIdle)
            },
        ],
        &[("b1", NONE, &["billing"]), ("s1", NONE, &["sales"])],
    );
    sim.login("b1");
    sim.login("s1");
    sim.pause("s1");
    assert_eq!(sim.arrive(1, "sales"), vec![]);
    assert_eq!(sim.at(60), vec![offer(1, "b1")]);
    sim.handle_call(1, "b1");

    // A borrower's call is found when the lender's agent comes free, too.
    sim.pause("b1");
    sim.arrive(2, "sales");
    sim.at(200);
    assert_eq!(sim.ready("b1"), vec![offer(2, "b1")]);

    // The queue's own agents still come first.
    sim.handle_call(2, "b1");
    sim.pause("b1");
    sim.arrive(3, "sales");
    sim.at(300);
    sim.ready("s1");
    assert_eq!(sim.drain(), vec![]);
    assert_eq!(
        sim.state("s1"),
        AgentState::Reserved {
            call: CallId(3),
            until: sim.now + secs(15)
        }
    );
}

#[test]
fn ring_timeout_pauses_the_agent_and_the_call_keeps_its_place() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::LongestIdle)],
        &[("a1", NONE, &["sales"]), ("a2", NONE, &["sales"])],
    );
    sim.login("a1");
    assert_eq!(sim.arrive(1, "sales"), vec![offer(1, "a1")]);
    sim.arrive(2, "sales");
    sim.login("a2");
    sim.pause("a2");
    assert_eq!(sim.at(15), vec![cancel(1, "a1")]);
    assert_eq!(
        sim.state("a1"),
        AgentState::NotReady {
            reason: "no answer".into()
        }
    );
    assert!(sim
        .log
        .iter()
        .any(|r| r.kind == EventKind::RingNoAnswer { rang: secs(15) }));
    // Call 1 is still ahead of call 2.
    assert_eq!(sim.ready("a2"), vec![offer(1, "a2")]);
}

#[test]
fn ring_timeout_without_auto_pause_keeps_the_agent_available_for_other_calls() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            auto_pause_on_no_answer: false,
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.arrive(1, "sales");
    sim.arrive(2, "sales");
    // a1 missed call 1, so it gets call 2; call 1 waits for someone else.
    assert_eq!(sim.at(15), vec![cancel(1, "a1"), offer(2, "a1")]);
    assert_eq!(sim.router.waiting("sales"), Some(1));
}

#[test]
fn a_declined_call_goes_to_the_next_agent_and_keeps_its_place() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::LongestIdle)],
        &[("a1", NONE, &["sales"]), ("a2", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.arrive(1, "sales");
    sim.arrive(2, "sales");
    sim.at(4);
    // The decliner stays available and takes the next call instead.
    assert_eq!(sim.decline(1, "a1"), vec![offer(2, "a1")]);
    assert_eq!(
        sim.log.last().unwrap().kind,
        EventKind::Offer,
        "DECLINED is logged before the next offer"
    );
    sim.arrive(3, "sales");
    // Call 1 is still ahead of call 3.
    assert_eq!(sim.login("a2"), vec![offer(1, "a2")]);
    assert!(sim
        .log
        .iter()
        .any(|r| r.kind == EventKind::Declined { rang: secs(4) }));
}

#[test]
fn wrap_up_ends_by_timer_or_early_and_then_the_agent_takes_the_next_call() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            wrap_up: secs(10),
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.arrive(1, "sales");
    sim.answer(1, "a1");
    sim.at(100);
    sim.arrive(2, "sales");
    assert_eq!(sim.end(1), vec![]);
    assert_eq!(
        sim.state("a1"),
        AgentState::WrapUp {
            since: sim.t0 + secs(100),
            until: sim.t0 + secs(110)
        }
    );
    assert_eq!(sim.at(109), vec![]);
    assert_eq!(sim.at(110), vec![offer(2, "a1")]);

    sim.answer(2, "a1");
    sim.at(200);
    sim.end(2);
    sim.arrive(3, "sales");
    sim.at(203);
    assert_eq!(
        sim.event(Event::EndWrapUp { agent: "a1".into() }),
        vec![offer(3, "a1")]
    );
    let wrap_ups: Vec<_> = sim
        .log
        .iter()
        .filter_map(|r| match r.kind {
            EventKind::WrapUpEnd { wrap_up } => Some(wrap_up),
            _ => None,
        })
        .collect();
    // The wrap-up actually used, the one ended early included.
    assert_eq!(wrap_ups, vec![secs(10), secs(3)]);
}

#[test]
fn a_caller_overflows_after_the_maximum_wait() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            max_wait: Some(secs(60)),
            overflow: OverflowTarget::Queue("backup".into()),
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.pause("a1");
    sim.arrive(1, "sales");
    assert_eq!(sim.at(59), vec![]);
    assert_eq!(
        sim.at(60),
        vec![overflow(1, OverflowTarget::Queue("backup".into()))]
    );
    assert_eq!(
        sim.log.last().unwrap().kind,
        EventKind::Overflow { wait: secs(60) }
    );
    assert_eq!(sim.router.waiting("sales"), Some(0));
}

#[test]
fn a_caller_whose_phone_is_ringing_at_the_maximum_wait_overflows_only_if_unanswered() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            max_wait: Some(secs(20)),
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.pause("a1");
    sim.arrive(1, "sales");
    sim.at(10);
    assert_eq!(sim.ready("a1"), vec![offer(1, "a1")]);
    assert_eq!(sim.at(24), vec![]);
    assert_eq!(
        sim.at(25),
        vec![cancel(1, "a1"), overflow(1, OverflowTarget::Voicemail)]
    );
}

#[test]
fn with_nobody_logged_in_callers_overflow_at_once() {
    let mut sim = Sim::new(
        vec![
            queue("sales", Strategy::LongestIdle),
            QueueConfig {
                when_empty: WhenEmpty::Wait,
                ..queue("patient", Strategy::LongestIdle)
            },
        ],
        &[("a1", NONE, &["sales", "patient"])],
    );
    assert_eq!(
        sim.arrive(1, "sales"),
        vec![overflow(1, OverflowTarget::Voicemail)]
    );
    assert_eq!(sim.kinds(), vec!["ENTER", "OVERFLOW"]);
    assert_eq!(sim.arrive(2, "patient"), vec![]);

    // The last agent logging out sends waiting callers on too.
    sim.login("a1");
    sim.pause("a1");
    sim.arrive(3, "sales");
    assert_eq!(
        sim.event(Event::AgentLogout { agent: "a1".into() }),
        vec![overflow(3, OverflowTarget::Voicemail)]
    );
    assert_eq!(sim.router.waiting("patient"), Some(1));
}

#[test]
fn a_full_queue_sends_the_next_caller_on_at_once() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            max_callers: Some(2),
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.pause("a1");
    assert_eq!(sim.arrive(1, "sales"), vec![]);
    assert_eq!(sim.arrive(2, "sales"), vec![]);
    assert_eq!(
        sim.arrive(3, "sales"),
        vec![overflow(3, OverflowTarget::Voicemail)]
    );
    assert_eq!(sim.router.waiting("sales"), Some(2));
    // Room again once a caller leaves.
    sim.event(Event::CallAbandoned { call: CallId(1) });
    assert_eq!(sim.arrive(4, "sales"), vec![]);
    assert_eq!(sim.router.waiting("sales"), Some(2));
}

#[test]
fn a_callback_keeps_its_place_rings_the_agent_first_then_dials_the_caller() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            max_wait: Some(secs(60)),
            announce_every: Some(secs(20)),
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.arrive(9, "sales");
    sim.answer(9, "a1");
    sim.arrive(1, "sales");
    sim.arrive(2, "sales");
    sim.at(5);
    sim.event(Event::CallbackRequested { call: CallId(1) });
    // Only call 2 is on the line: it alone hears announcements and overflows.
    let at_20 = sim.at(20);
    assert_eq!(at_20.len(), 1);
    assert!(matches!(
        at_20[0],
        Action::Announce {
            call: CallId(2),
            position: 2,
            ..
        }
    ));
    sim.at(59);
    assert_eq!(sim.at(60), vec![overflow(2, OverflowTarget::Voicemail)]);
    sim.at(100);
    assert_eq!(
        sim.end(9),
        vec![Action::OfferCallback {
            call: CallId(1),
            agent: "a1".into()
        }]
    );
    assert_eq!(
        sim.answer(1, "a1"),
        vec![Action::DialCaller {
            call: CallId(1),
            agent: "a1".into()
        }]
    );
    assert!(sim
        .log
        .iter()
        .any(|r| r.kind == EventKind::CallbackConnected { wait: secs(100) }));
}

#[test]
fn a_callback_requested_while_ringing_is_offered_again_as_a_callback() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::LongestIdle)],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.arrive(1, "sales");
    assert_eq!(
        sim.event(Event::CallbackRequested { call: CallId(1) }),
        vec![
            cancel(1, "a1"),
            Action::OfferCallback {
                call: CallId(1),
                agent: "a1".into()
            }
        ]
    );
}

#[test]
fn higher_priority_goes_first_then_longest_waiting() {
    let mut sim = Sim::new(
        vec![
            queue("sales", Strategy::LongestIdle),
            queue("vip", Strategy::LongestIdle),
        ],
        &[("a1", NONE, &["sales", "vip"])],
    );
    sim.login("a1");
    sim.pause("a1");
    sim.arrive_with(1, "sales", &[], 0);
    sim.arrive_with(2, "vip", &[], 5);
    sim.arrive_with(3, "sales", &[], 5);
    sim.arrive_with(4, "sales", &[], -1);
    let mut order = Vec::new();
    let mut next = sim.ready("a1");
    while let [Action::Offer { call, .. }] = next[..] {
        order.push(call.0);
        next = sim.handle_call(call.0, "a1");
    }
    assert_eq!(order, vec![2, 3, 1, 4]);
}

#[test]
fn announcements_give_position_and_estimated_wait_from_recent_handle_times() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            wrap_up: secs(10),
            announce_every: Some(secs(30)),
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"]), ("a2", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.login("a2");
    sim.arrive(1, "sales");
    sim.answer(1, "a1");
    sim.arrive(2, "sales");
    sim.answer(2, "a2");
    // No history yet: position only.
    sim.arrive(3, "sales");
    assert_eq!(
        sim.at(30),
        vec![Action::Announce {
            call: CallId(3),
            position: 1,
            estimated_wait: None
        }]
    );
    // a1 handles call 1 in 50 s + 10 s wrap-up, then takes call 3 at 60 s.
    sim.at(50);
    sim.end(1);
    sim.at(59);
    sim.arrive(4, "sales");
    sim.arrive(5, "sales");
    assert_eq!(sim.at(60), vec![offer(3, "a1")]);
    sim.answer(3, "a1");
    // Call 4 at 89 s: position 1 × 60 s ÷ 2 agents = 30 s; call 5 is second.
    assert_eq!(
        sim.at(89),
        vec![
            Action::Announce {
                call: CallId(4),
                position: 1,
                estimated_wait: Some(secs(30))
            },
            Action::Announce {
                call: CallId(5),
                position: 2,
                estimated_wait: Some(secs(60))
            }
        ]
    );
}

#[test]
fn abandoning_while_ringing_cancels_the_offer_and_logs_wait_and_position() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::LongestIdle)],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.arrive(1, "sales");
    sim.arrive(2, "sales");
    sim.at(7);
    assert_eq!(
        sim.event(Event::CallAbandoned { call: CallId(1) }),
        vec![cancel(1, "a1"), offer(2, "a1")]
    );
    assert!(sim.log.iter().any(|r| r.kind
        == EventKind::Abandon {
            wait: secs(7),
            position: 1
        }));
    assert_eq!(
        sim.try_event(Event::CallAbandoned { call: CallId(1) }),
        Err(AcdError::NotQueued(CallId(1)))
    );
}

#[test]
fn a_transferred_out_call_leaves_the_queue() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::LongestIdle)],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.pause("a1");
    sim.arrive(1, "sales");
    sim.arrive(2, "sales");
    sim.event(Event::TransferredOut { call: CallId(2) });
    assert_eq!(sim.router.waiting("sales"), Some(1));
    assert_eq!(sim.kinds().last(), Some(&"TRANSFER"));
    assert_eq!(sim.ready("a1"), vec![offer(1, "a1")]);
}

#[test]
fn a_skill_change_makes_an_agent_eligible_at_once() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            skills: vec![("billing".into(), 5)],
            ..queue("billing", Strategy::LongestIdle)
        }],
        &[("a1", &[("billing", 4)], &["billing"])],
    );
    sim.login("a1");
    sim.arrive(1, "billing");
    assert_eq!(
        sim.event(Event::SkillsChanged {
            agent: "a1".into(),
            skills: vec![("billing".into(), 5)]
        }),
        vec![offer(1, "a1")]
    );
}

#[test]
fn agent_state_changes_are_logged() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            wrap_up: secs(5),
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.pause("a1");
    sim.ready("a1");
    sim.arrive(1, "sales");
    sim.answer(1, "a1");
    sim.end(1);
    sim.pause("a1");
    sim.event(Event::AgentLogout { agent: "a1".into() });
    assert_eq!(
        sim.kinds(),
        vec![
            "LOGIN",
            "PAUSE",
            "UNPAUSE",
            "ENTER",
            "OFFER",
            "CONNECT",
            "COMPLETE_CALLER",
            "WRAPUP_START",
            "WRAPUP_END",
            "PAUSE",
            "LOGOUT"
        ]
    );
}

#[test]
fn refused_events_say_what_is_wrong() {
    let mut sim = Sim::new(
        vec![queue("sales", Strategy::LongestIdle)],
        &[("a1", NONE, &["sales"])],
    );
    let err = |sim: &mut Sim, e| sim.try_event(e).unwrap_err().to_string();
    assert_eq!(
        err(
            &mut sim,
            Event::CallArrived {
                call: CallId(1),
                queue: "salse".into(),
                skills: vec![],
                priority: 0
            }
        ),
        "queue \"salse\" is not configured"
    );
    assert!(err(&mut sim, Event::AgentReady { agent: "a1".into() }).contains("log in first"));
    sim.login("a1");
    sim.arrive(1, "sales");
    sim.answer(1, "a1");
    assert!(err(&mut sim, Event::AgentLogout { agent: "a1".into() }).contains("try again"));
    assert!(err(
        &mut sim,
        Event::CallArrived {
            call: CallId(1),
            queue: "sales".into(),
            skills: vec![],
            priority: 0
        }
    )
    .contains("already"));
    let mut router = Router::new();
    let borrowing = QueueConfig {
        relaxations: vec![Relaxation {
            after: secs(1),
            widen: Widen::BorrowAgentsOf("later".into()),
        }],
        ..queue("first", Strategy::LongestIdle)
    };
    assert!(router
        .add_queue(borrowing)
        .unwrap_err()
        .to_string()
        .contains("add \"later\" first"));
}

#[test]
fn poll_timeout_skips_timers_that_no_longer_matter() {
    let mut sim = Sim::new(
        vec![QueueConfig {
            max_wait: Some(secs(60)),
            ..queue("sales", Strategy::LongestIdle)
        }],
        &[("a1", NONE, &["sales"])],
    );
    sim.login("a1");
    sim.pause("a1");
    sim.arrive(1, "sales");
    assert_eq!(sim.router.poll_timeout(), Some(sim.t0 + secs(60)));
    sim.event(Event::CallAbandoned { call: CallId(1) });
    assert_eq!(sim.router.poll_timeout(), None);
}

#[test]
fn an_agent_moved_to_another_queue_takes_its_callers_and_leaves_the_old_one() {
    let mut sim = Sim::new(
        vec![
            QueueConfig::new("sales", Strategy::LongestIdle),
            QueueConfig {
                when_empty: WhenEmpty::Wait,
                ..QueueConfig::new("support", Strategy::LongestIdle)
            },
        ],
        &[("a1", &[], &["sales"])],
    );
    sim.login("a1");
    // A support caller waits: nobody serves support yet.
    assert!(sim.arrive(1, "support").is_empty());
    let moved = sim.event(Event::QueuesChanged {
        agent: "a1".into(),
        queues: vec!["support".into()],
    });
    assert_eq!(moved, vec![offer(1, "a1")]);
    sim.answer(1, "a1");
    sim.end(1);
    // No longer in sales: a sales caller overflows (nobody logged in there).
    let sales = sim.arrive(2, "sales");
    assert!(
        sales.iter().any(|a| matches!(
            a,
            Action::Overflow {
                call: CallId(2),
                ..
            }
        )),
        "{sales:?}"
    );
    // And an unknown queue is refused without a change.
    assert!(sim
        .try_event(Event::QueuesChanged {
            agent: "a1".into(),
            queues: vec!["nowhere".into()],
        })
        .is_err());
    assert_eq!(
        sim.router.snapshot(sim.now).agents[0].queues,
        vec!["support"]
    );
}
