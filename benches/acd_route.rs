//! ACD routing cost with 10,000 agents and 10,000 queued calls.
//! Run: cargo bench --bench acd_route
//!
//! Ten queues (four strategies), each agent a member of two, a language skill at levels
//! 1–10, and a quarter of the calls asking for level 5 or more. Every agent is on a
//! call and 10,000 more callers wait. One iteration is one agent's turn: its call ends
//! (wrap-up starts), it ends wrap-up, the router picks its best waiting call across both
//! its queues and offers it, the agent answers, and a caller like the one it took (same
//! queue, same skills) arrives and is routed — nobody is free, so it waits — keeping
//! every queue as long as it was. Timers are driven as a real loop
//! would, so stale ring and wrap-up timers are popped along the way.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::acd::{
    Action, AgentConfig, CallEnd, CallId, Event, QueueConfig, Router, Strategy,
};

const AGENTS: usize = 10_000;
const WAITING: u64 = 10_000;
const QUEUES: usize = 10;
const STRATEGIES: [Strategy; 4] = [
    Strategy::LongestIdle,
    Strategy::BestSkill,
    Strategy::FewestCalls,
    Strategy::RoundRobin,
];

struct Floor {
    router: Router,
    now: Instant,
    next_call: u64,
    /// The call each agent is on.
    on_call: Vec<CallId>,
    /// Each call's queue and whether it asks for language level 5.
    calls: HashMap<CallId, (usize, bool)>,
}

impl Floor {
    fn new() -> Self {
        let mut router = Router::new();
        for q in 0..QUEUES {
            router
                .add_queue(QueueConfig {
                    skills: vec![("language".into(), 1)],
                    wrap_up: Duration::from_secs(30),
                    ..QueueConfig::new(format!("q{q}"), STRATEGIES[q % STRATEGIES.len()])
                })
                .unwrap();
        }
        for a in 0..AGENTS {
            router
                .add_agent(AgentConfig {
                    extension: format!("{a}"),
                    skills: vec![("language".into(), 1 + (a % 10) as u8)],
                    queues: vec![format!("q{}", a % QUEUES), format!("q{}", (a + 1) % QUEUES)],
                })
                .unwrap();
        }
        let mut floor = Floor {
            router,
            now: Instant::now(),
            next_call: 0,
            on_call: vec![CallId(u64::MAX); AGENTS],
            calls: HashMap::new(),
        };
        for a in 0..AGENTS {
            floor.send(Event::AgentLogin {
                agent: format!("{a}"),
            });
        }
        // Every agent takes a call, then the queue fills up behind them.
        for i in 0..AGENTS + WAITING as usize {
            floor.arrive(i % QUEUES, (i / QUEUES).is_multiple_of(4));
        }
        floor
    }

    fn arrive(&mut self, queue: usize, hard: bool) {
        let call = CallId(self.next_call);
        self.next_call += 1;
        self.calls.insert(call, (queue, hard));
        let skills = if hard {
            vec![("language".to_string(), 5)]
        } else {
            vec![]
        };
        self.send(Event::CallArrived {
            call,
            queue: format!("q{queue}"),
            skills,
            priority: 0,
        });
    }

    /// Applies an event and answers every offer it produced.
    fn send(&mut self, event: Event) {
        self.router.handle(event, self.now).unwrap();
        self.answer_offers();
    }

    fn answer_offers(&mut self) {
        let mut offers = Vec::new();
        while let Some(action) = self.router.poll() {
            if let Action::Offer { call, agent } = action {
                offers.push((call, agent));
            }
        }
        for (call, agent) in offers {
            self.on_call[agent.parse::<usize>().unwrap()] = call;
            self.router
                .handle(
                    Event::OfferAnswered {
                        call,
                        agent: agent.to_string(),
                    },
                    self.now,
                )
                .unwrap();
            while self.router.poll().is_some() {}
        }
    }

    /// One agent finishes its call and wrap-up and takes the next one.
    fn turn(&mut self, agent: usize) {
        self.now += Duration::from_millis(1);
        if self
            .router
            .poll_timeout()
            .is_some_and(|due| due <= self.now)
        {
            self.router.handle_timeout(self.now);
            self.answer_offers();
        }
        let call = self.on_call[agent];
        self.calls.remove(&call);
        self.send(Event::CallEnded {
            call,
            by: CallEnd::Caller,
        });
        self.send(Event::EndWrapUp {
            agent: format!("{agent}"),
        });
        let taken = self.on_call[agent];
        assert_ne!(taken, call, "agent {agent} got no new call");
        let (queue, hard) = self.calls[&taken];
        self.arrive(queue, hard);
    }
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("acd");
    g.throughput(Throughput::Elements(1));
    let mut floor = Floor::new();
    assert_eq!(
        (0..QUEUES)
            .map(|q| floor.router.waiting(&format!("q{q}")).unwrap())
            .sum::<usize>(),
        WAITING as usize
    );
    let mut agent = 0;
    g.bench_function("agent_turn_10k_agents_10k_waiting", |b| {
        b.iter(|| {
            floor.turn(agent);
            agent = (agent + 7919) % AGENTS;
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
