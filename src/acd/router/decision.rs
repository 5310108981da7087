//! Why a call went to the agent it went to: every offer the router makes is explained by
//! a [`Decision`] naming the agents it considered, what each had, the rule that chose
//! and why the others lost. Built only when an offer is made, from what routing just
//! looked at; it never changes what routing does.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::Router;
use crate::acd::agent::AgentIdx;
use crate::acd::queue::Strategy;
use crate::acd::CallId;

/// At most this many agents are listed in one decision (the chosen ones always are).
const LISTED: usize = 25;

/// What set the routing off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Trigger {
    /// The call arrived, was declined or missed, or its requirement was relaxed.
    CallWaiting,
    /// An agent became available and this was its best waiting call: highest priority,
    /// then longest waiting, over the queues it serves.
    AgentFreed { agent: String },
}

/// Why one considered agent was or was not chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Verdict {
    Chosen,
    /// Eligible, but ranked below the chosen agent by the queue's strategy.
    Outranked,
    /// Lacks a required skill, or has it below the minimum.
    LacksSkill {
        skill: String,
        needs: u8,
        has: u8,
    },
    /// Declined or missed this call before: never offered it again.
    DeclinedBefore,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub agent: String,
    /// The queue whose pool it came from (another queue's, when borrowed).
    pub pool: String,
    pub skills: Vec<(String, u8)>,
    /// Sum of its levels in the required skills (how best_skill ranks).
    pub score: u32,
    /// Seconds since its last call's wrap-up ended (or its log-in).
    pub idle_secs: f64,
    pub calls_today: u32,
    pub verdict: Verdict,
}

/// One routing decision: a call offered to one agent (or several, ringing all).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    #[serde(skip)]
    pub call: Option<CallId>,
    pub queue: String,
    /// longest_idle, fewest_calls, round_robin, best_skill, ring_all.
    pub strategy: String,
    pub trigger: Trigger,
    /// How long the caller had waited.
    pub waited_secs: f64,
    pub priority: i32,
    /// What an agent had to have now, and the queue's requirement before relaxing.
    pub requirement: Vec<(String, u8)>,
    /// Relaxation steps applied so far (0: none), and their words.
    pub relaxed_steps: usize,
    pub relaxations: Vec<String>,
    pub chosen: Vec<String>,
    /// Available agents considered, best first.
    pub candidates: Vec<Candidate>,
    /// Available agents considered but not listed.
    pub more: usize,
}

fn strategy_name(s: Strategy) -> &'static str {
    match s {
        Strategy::LongestIdle => "longest_idle",
        Strategy::FewestCalls => "fewest_calls",
        Strategy::RoundRobin => "round_robin",
        Strategy::BestSkill => "best_skill",
        Strategy::RingAll => "ring_all",
    }
}

impl Router {
    /// Explains an offer of `call` to `chosen`, made now.
    pub(super) fn decision(
        &self,
        call: CallId,
        chosen: &[AgentIdx],
        trigger: Trigger,
        now: Instant,
    ) -> Decision {
        let c = self.call(call);
        let queue = self.queue(c.queue);
        let mut candidates = Vec::new();
        let mut seen: Vec<AgentIdx> = Vec::new();
        let mut more = 0;
        for pool in self.pools(call) {
            let pool_queue = self.queue(pool);
            // The agents just offered the call are no longer available: list them first.
            let available: Vec<AgentIdx> = chosen
                .iter()
                .copied()
                .filter(|a| self.agent_at(*a).queues.contains(&pool))
                .chain(pool_queue.available())
                .collect();
            for a in available {
                if seen.contains(&a) {
                    continue;
                }
                seen.push(a);
                let agent = self.agent_at(a);
                let verdict = if chosen.contains(&a) {
                    Verdict::Chosen
                } else if let Some((skill, needs, has)) = c.requirement.first_unmet(&agent.skills) {
                    Verdict::LacksSkill {
                        skill: self.skills.name(skill).to_string(),
                        needs,
                        has,
                    }
                } else if c.declined.contains(&a) {
                    Verdict::DeclinedBefore
                } else {
                    Verdict::Outranked
                };
                if candidates.len() >= LISTED && verdict != Verdict::Chosen {
                    more += 1;
                    continue;
                }
                candidates.push(Candidate {
                    agent: agent.extension.to_string(),
                    pool: pool_queue.name.to_string(),
                    skills: self.skills.named(&agent.skills),
                    score: queue.requirement.union(&c.requirement).score(&agent.skills),
                    idle_secs: agent
                        .last_idle
                        .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64()),
                    calls_today: agent.calls_today,
                    verdict,
                });
            }
        }
        let relaxations = queue.config.relaxations[..c.stage.min(queue.config.relaxations.len())]
            .iter()
            .map(|r| {
                let what = match &r.widen {
                    crate::acd::queue::Widen::LowerLevels(by) => format!("levels lowered by {by}"),
                    crate::acd::queue::Widen::DropSkill(s) => format!("{s} no longer required"),
                    crate::acd::queue::Widen::BorrowAgentsOf(q) => {
                        format!("agents of {q} may answer")
                    }
                };
                format!("after {} s: {what}", r.after.as_secs())
            })
            .collect();
        Decision {
            call: Some(call),
            queue: queue.name.to_string(),
            strategy: strategy_name(queue.config.strategy).to_string(),
            trigger,
            waited_secs: now.saturating_duration_since(c.arrived).as_secs_f64(),
            priority: c.key.priority.0,
            requirement: self.skills.named(&c.requirement),
            relaxed_steps: c.stage,
            relaxations,
            chosen: chosen
                .iter()
                .map(|a| self.agent_at(*a).extension.to_string())
                .collect(),
            candidates,
            more,
        }
    }
}
