//! Queues: their configuration, and the ordered indexes that make each routing decision
//! cost a few tree lookups instead of a scan over every agent and every call.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::agent::{Agent, AgentIdx};
use super::skill::{Levels, SkillId};
use super::CallId;

/// How a queue chooses among the eligible available agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// The agent idle longest since its last call (or login).
    LongestIdle,
    /// The agent with the fewest calls today; ties by longest idle.
    FewestCalls,
    /// The agent this queue offered a call to least recently; ties by longest idle.
    RoundRobin,
    /// The highest sum of levels in the queue's required skills; ties by longest idle.
    BestSkill,
    /// Every eligible available agent rings; the first to answer gets the call.
    RingAll,
}

/// Where a call goes when it leaves a queue unanswered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OverflowTarget {
    Queue(String),
    Voicemail,
    FlowNode(String),
}

/// What a queue does with callers when none of its agents is logged in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenEmpty {
    /// Send arriving and waiting callers to the overflow target at once.
    Overflow,
    /// Keep them waiting (until their maximum wait, if any).
    Wait,
}

/// One widening of a waiting call's requirement, `after` its arrival.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relaxation {
    pub after: Duration,
    pub widen: Widen,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Widen {
    /// Every minimum level (the queue's and the call's) drops by this much, never below 1.
    LowerLevels(u8),
    /// The skill is no longer required.
    DropSkill(String),
    /// Agents of this other queue may take the call too; the queue's own agents are
    /// still tried first. The other queue must be added before this one.
    BorrowAgentsOf(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueConfig {
    pub name: String,
    /// Required of every agent for every call, on top of each call's own skills.
    pub skills: Vec<(String, u8)>,
    pub strategy: Strategy,
    pub ring_timeout: Duration,
    pub wrap_up: Duration,
    /// After this long in the queue a caller goes to `overflow`; `None` waits forever.
    pub max_wait: Option<Duration>,
    pub overflow: OverflowTarget,
    /// In order of `after`; each step adds to the ones before it.
    pub relaxations: Vec<Relaxation>,
    /// An agent whose phone rings out is set NotReady ("no answer") rather than being
    /// offered the next call.
    pub auto_pause_on_no_answer: bool,
    pub when_empty: WhenEmpty,
    /// How often a waiting caller hears its position and estimated wait.
    pub announce_every: Option<Duration>,
    /// Join rule: a caller who would make more than this many waiting overflows at once
    /// (Asterisk's `maxlen`).
    pub max_callers: Option<usize>,
}

impl QueueConfig {
    /// A queue with common defaults: 15 s ring timeout, 10 s wrap-up, no maximum wait,
    /// overflow to voicemail, no relaxation, auto-pause on, overflow when empty, no
    /// announcements.
    pub fn new(name: impl Into<String>, strategy: Strategy) -> Self {
        QueueConfig {
            name: name.into(),
            skills: Vec::new(),
            strategy,
            ring_timeout: Duration::from_secs(15),
            wrap_up: Duration::from_secs(10),
            max_wait: None,
            overflow: OverflowTarget::Voicemail,
            relaxations: Vec::new(),
            auto_pause_on_no_answer: true,
            when_empty: WhenEmpty::Overflow,
            announce_every: None,
            max_callers: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct QueueIdx(pub(crate) u32);

/// A relaxation with its names resolved.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Step {
    LowerLevels(u8),
    DropSkill(SkillId),
    /// Widens who may answer, not what they must know: see `Queue::lenders`.
    BorrowAgents,
}

impl Step {
    pub(crate) fn apply(self, requirement: &mut Levels) {
        match self {
            Step::LowerLevels(by) => requirement.lower(by),
            Step::DropSkill(skill) => requirement.remove(skill),
            Step::BorrowAgents => {}
        }
    }
}

/// Routing order of waiting calls: highest priority first, then earliest arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct CallKey {
    pub(crate) priority: Reverse<i32>,
    pub(crate) seq: u64,
}

/// Routing order of available agents within one queue: the smallest rank is offered
/// first. `primary` carries the strategy; ties fall to the longest idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Rank {
    primary: i64,
    idle: Instant,
    pub(crate) agent: AgentIdx,
}

pub(crate) type BucketIdx = usize;

/// Waiting callers of one queue at the same relaxation stage with the same requirement,
/// in routing order. An agent checks each bucket's requirement once and takes its first
/// caller it has not declined, so callers it cannot take cost nothing to skip: the
/// routing cost grows with the number of distinct requirements, not of callers.
#[derive(Debug)]
pub(crate) struct Bucket {
    pub(crate) stage: usize,
    pub(crate) requirement: Levels,
    pub(crate) calls: BTreeMap<CallKey, CallId>,
}

/// How many recent handle times the estimated wait averages over.
const HANDLE_TIME_WINDOW: usize = 20;

#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) name: Arc<str>,
    pub(crate) config: QueueConfig,
    /// The queue's own requirement, unrelaxed.
    pub(crate) requirement: Levels,
    pub(crate) steps: Vec<Step>,
    /// Waiting (not ringing) callers, grouped by what an agent needs to take them.
    pub(crate) buckets: Vec<Bucket>,
    /// Buckets by requirement, then by stage.
    bucket_ids: HashMap<Levels, Vec<(usize, BucketIdx)>>,
    available: BTreeSet<Rank>,
    ranks: HashMap<AgentIdx, Rank>,
    /// Queues whose agents this queue's calls may borrow, from which stage on.
    pub(crate) lenders: Vec<(QueueIdx, usize)>,
    /// Queues that may borrow this queue's agents, from which of their stages on.
    pub(crate) borrowers: Vec<(QueueIdx, usize)>,
    pub(crate) logged_in: usize,
    pub(crate) staffed: usize,
    /// Round robin: the turn at which each member was last offered a call.
    turns: HashMap<AgentIdx, u64>,
    next_turn: u64,
    handle_times: VecDeque<Duration>,
}

impl Queue {
    pub(crate) fn new(
        config: QueueConfig,
        requirement: Levels,
        steps: Vec<Step>,
        lenders: Vec<(QueueIdx, usize)>,
    ) -> Self {
        Queue {
            name: config.name.as_str().into(),
            config,
            requirement,
            steps,
            buckets: Vec::new(),
            bucket_ids: HashMap::new(),
            available: BTreeSet::new(),
            ranks: HashMap::new(),
            lenders,
            borrowers: Vec::new(),
            logged_in: 0,
            staffed: 0,
            turns: HashMap::new(),
            next_turn: 1,
            handle_times: VecDeque::with_capacity(HANDLE_TIME_WINDOW),
        }
    }

    fn rank(&self, idx: AgentIdx, agent: &Agent, now: Instant) -> Rank {
        let primary = match self.config.strategy {
            Strategy::LongestIdle | Strategy::RingAll => 0,
            Strategy::FewestCalls => i64::from(agent.calls_today),
            Strategy::RoundRobin => self.turns.get(&idx).copied().unwrap_or(0) as i64,
            Strategy::BestSkill => -i64::from(self.requirement.score(&agent.skills)),
        };
        Rank {
            primary,
            // Login sets last_idle, so an available agent always has one.
            idle: agent.last_idle.unwrap_or(now),
            agent: idx,
        }
    }

    pub(crate) fn add_available(&mut self, idx: AgentIdx, agent: &Agent, now: Instant) {
        let rank = self.rank(idx, agent, now);
        self.available.insert(rank);
        self.ranks.insert(idx, rank);
    }

    pub(crate) fn remove_available(&mut self, idx: AgentIdx) {
        if let Some(rank) = self.ranks.remove(&idx) {
            self.available.remove(&rank);
        }
    }

    /// Available members, best first.
    pub(crate) fn available(&self) -> impl Iterator<Item = AgentIdx> + '_ {
        self.available.iter().map(|r| r.agent)
    }

    pub(crate) fn took_turn(&mut self, idx: AgentIdx) {
        if self.config.strategy == Strategy::RoundRobin {
            self.turns.insert(idx, self.next_turn);
            self.next_turn += 1;
        }
    }

    /// The bucket for callers at `stage` with `requirement`, made on first use.
    pub(crate) fn bucket(&mut self, stage: usize, requirement: &Levels) -> BucketIdx {
        if !self.bucket_ids.contains_key(requirement) {
            self.bucket_ids.insert(requirement.clone(), Vec::new());
        }
        let by_stage = self.bucket_ids.get_mut(requirement).expect("just inserted");
        if let Some(&(_, idx)) = by_stage.iter().find(|(s, _)| *s == stage) {
            return idx;
        }
        let idx = self.buckets.len();
        by_stage.push((stage, idx));
        self.buckets.push(Bucket {
            stage,
            requirement: requirement.clone(),
            calls: BTreeMap::new(),
        });
        idx
    }

    pub(crate) fn waiting_len(&self) -> usize {
        self.buckets.iter().map(|b| b.calls.len()).sum()
    }

    /// 1 + the number of waiting callers ahead of `key`. Cost: the number of callers
    /// ahead, except for the common case of a caller at the back.
    pub(crate) fn position(&self, key: CallKey) -> u32 {
        let ahead: usize = self
            .buckets
            .iter()
            .map(|b| match b.calls.last_key_value() {
                Some((last, _)) if *last < key => b.calls.len(),
                _ => b.calls.range(..key).count(),
            })
            .sum();
        ahead as u32 + 1
    }

    pub(crate) fn record_handle_time(&mut self, handle: Duration) {
        if self.handle_times.len() == HANDLE_TIME_WINDOW {
            self.handle_times.pop_front();
        }
        self.handle_times.push_back(handle);
    }

    /// Estimated wait of the caller at `position`: position × recent mean handle time ÷
    /// agents staffing the queue. With n agents each freeing up once per handle time,
    /// the queue moves n places per handle time. `None` without history or staff.
    pub(crate) fn estimated_wait(&self, position: u32) -> Option<Duration> {
        if self.handle_times.is_empty() || self.staffed == 0 {
            return None;
        }
        let mean = self.handle_times.iter().sum::<Duration>() / self.handle_times.len() as u32;
        Some(mean * position / self.staffed as u32)
    }
}
