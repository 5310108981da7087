//! The KPIs, each computed next to its definition (docs/metrics.md says the same in
//! words). Every figure is a pure function of facts folded from the event log, so it can
//! be recomputed at any time, with any threshold.
//!
//! Counting rules shared by all figures:
//! - A call is counted in the queue (and interval) it **entered**: a call that overflows
//!   from one queue to another is offered to both.
//! - Only visits that have **left the queue** (answered, abandoned, overflowed,
//!   transferred out) count; a caller still waiting is counted once it leaves.
//! - Per-call results (the agent's disposition, the survey, a repeat contact) belong to
//!   the call's **last handled visit**: the agent and queue that finished it.

use std::collections::{BTreeMap, HashMap};

use serde::Serialize;

use super::facts::{CallFacts, StateSpan, Visit, VisitOutcome};

/// How service level is computed. All of them leave short abandons out.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ServiceLevelFormula {
    /// Answered within the threshold ÷ calls offered (answered, abandoned, overflowed,
    /// transferred out). Every caller not answered in time counts against it.
    #[default]
    Offered,
    /// Answered within the threshold ÷ answered. Ignores abandons entirely.
    Answered,
    /// Answered within the threshold ÷ (answered + abandoned). Overflows and callers who
    /// chose another path are left out.
    AnsweredOrAbandoned,
    /// (Answered within + abandoned within the threshold) ÷ offered: a caller who gave
    /// up before the threshold did not see the target missed.
    AbandonsMet,
}

impl ServiceLevelFormula {
    pub fn as_str(self) -> &'static str {
        match self {
            ServiceLevelFormula::Offered => "offered",
            ServiceLevelFormula::Answered => "answered",
            ServiceLevelFormula::AnsweredOrAbandoned => "answered_or_abandoned",
            ServiceLevelFormula::AbandonsMet => "abandons_met",
        }
    }
}

/// A queue's service-level target, e.g. 80 % within 20 s.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Target {
    pub within_ms: i64,
    /// 0.0–1.0.
    pub share: f64,
}

/// The thresholds and windows every figure depends on.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    pub target: Target,
    /// Queues with their own target.
    pub queue_targets: HashMap<String, Target>,
    pub formula: ServiceLevelFormula,
    /// Callers who hang up within this are short abandons: left out of the abandon rate
    /// and service level (they misdialled or changed their mind).
    pub short_abandon_ms: i64,
    /// A caller who contacts again within this after a handled call did not get
    /// first-contact resolution.
    pub fcr_window_ms: i64,
    /// Survey scores at or above this are satisfied (4 on a 1–5 scale).
    pub csat_satisfied: i64,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            target: Target {
                within_ms: 20_000,
                share: 0.8,
            },
            queue_targets: HashMap::new(),
            formula: ServiceLevelFormula::Offered,
            short_abandon_ms: 5_000,
            fcr_window_ms: 7 * 86_400_000,
            csat_satisfied: 4,
        }
    }
}

impl Rules {
    pub fn target_of(&self, queue: &str) -> Target {
        self.queue_targets
            .get(queue)
            .copied()
            .unwrap_or(self.target)
    }
}

/// Service level under each formula, so a report can show the one a client uses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct ServiceLevels {
    pub offered: Option<f64>,
    pub answered: Option<f64>,
    pub answered_or_abandoned: Option<f64>,
    pub abandons_met: Option<f64>,
}

/// The figures of one slice (a queue, an agent, a DID, a flow, an interval of one).
/// Times are seconds with millisecond precision; shares are 0.0–1.0; `None` where a
/// figure has nothing to be computed from (no answered call, no survey…).
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Figures {
    /// Calls that entered the queue and have left it.
    pub offered: u64,
    pub answered: u64,
    /// Of those, answered within the queue's threshold.
    pub answered_within: u64,
    /// Every caller who hung up while waiting, short abandons included.
    pub abandoned: u64,
    /// Abandoned within the short-abandon threshold.
    pub short_abandoned: u64,
    pub overflowed: u64,
    /// Left the queue for another path before an answer.
    pub transferred_out: u64,
    /// Callers who asked to be called back.
    pub callbacks: u64,
    /// Threshold of the slice's service level (the queue's; for mixed slices, each
    /// call is judged by its own queue's threshold and this is the default's).
    pub service_level_within_secs: f64,
    pub service_level_target: f64,
    /// Under the configured formula.
    pub service_level: Option<f64>,
    pub service_level_formula: String,
    pub service_levels: ServiceLevels,
    /// (abandoned − short abandoned) ÷ (offered − short abandoned).
    pub abandon_rate: Option<f64>,
    /// Average speed of answer: mean wait of answered calls.
    pub asa_secs: Option<f64>,
    /// The longest wait of any call that left the queue.
    pub longest_wait_secs: Option<f64>,
    /// Mean wait of abandoned calls, short abandons left out.
    pub average_abandon_secs: Option<f64>,
    /// Answered calls whose talk and wrap-up are over.
    pub handled: u64,
    /// Average handle time: talk + hold + after-call work, per handled call.
    pub aht_secs: Option<f64>,
    /// Mean talk (connected time less hold), hold and after-call work per handled call.
    pub talk_secs: Option<f64>,
    pub hold_secs: Option<f64>,
    pub acw_secs: Option<f64>,
    /// Blind transfers agents made of handled calls, and per handled call.
    pub transfers: u64,
    pub transfers_per_call: Option<f64>,
    /// Distinct agents who handled calls, and handled calls per agent.
    pub agents: u64,
    pub calls_per_agent: Option<f64>,
    /// Handled calls the agent gave a disposition, and those resolved.
    pub dispositioned: u64,
    pub resolved: u64,
    /// FCR by disposition: resolved ÷ dispositioned.
    pub fcr_by_disposition: Option<f64>,
    /// Handled calls whose caller contacted us again within the FCR window.
    pub repeat_contacts: u64,
    /// FCR by repeat contacts: (handled − repeat contacts) ÷ handled.
    pub fcr_by_repeat: Option<f64>,
    /// Survey answers, and those at or above the satisfied score.
    pub survey_responses: u64,
    pub satisfied: u64,
    /// CSAT: satisfied ÷ survey answers.
    pub csat: Option<f64>,
    pub csat_average: Option<f64>,
    /// Survey answers ÷ handled calls.
    pub survey_response_rate: Option<f64>,
}

/// A visit with the call it belongs to.
#[derive(Clone, Copy)]
pub struct VisitRef<'a> {
    pub call: &'a CallFacts,
    pub visit: &'a Visit,
    /// This is the call's last handled visit: per-call results count here.
    pub last_handled: bool,
}

fn secs(ms: i64) -> f64 {
    ms as f64 / 1000.0
}

fn share(n: u64, d: u64) -> Option<f64> {
    (d > 0).then(|| n as f64 / d as f64)
}

fn mean_secs(sum_ms: i64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum_ms as f64 / n as f64 / 1000.0)
}

/// Callers' arrival times, sorted, for repeat-contact checks.
pub struct Arrivals(HashMap<String, Vec<i64>>);

impl Arrivals {
    pub fn new(arrivals: &[(String, i64)]) -> Self {
        let mut by: HashMap<String, Vec<i64>> = HashMap::new();
        for (caller, at) in arrivals {
            by.entry(caller.clone()).or_default().push(*at);
        }
        for v in by.values_mut() {
            v.sort_unstable();
        }
        Arrivals(by)
    }

    /// Whether `caller` called again after `after_ms`, within `window_ms` of it.
    fn again(&self, caller: &str, after_ms: i64, window_ms: i64) -> bool {
        let Some(times) = self.0.get(caller) else {
            return false;
        };
        let i = times.partition_point(|&t| t <= after_ms);
        times.get(i).is_some_and(|&t| t <= after_ms + window_ms)
    }
}

/// The figures of a set of visits.
pub fn figures(visits: &[VisitRef<'_>], rules: &Rules, arrivals: &Arrivals) -> Figures {
    let mut f = Figures {
        service_level_within_secs: secs(rules.target.within_ms),
        service_level_target: rules.target.share,
        service_level_formula: rules.formula.as_str().to_string(),
        ..Default::default()
    };
    // Sums in milliseconds; divided once at the end so no rounding creeps in.
    let (mut answer_wait, mut abandon_wait, mut longest) = (0i64, 0i64, None::<i64>);
    let (mut talk, mut hold, mut acw) = (0i64, 0i64, 0i64);
    let mut abandoned_within = 0u64;
    let mut csat_sum = 0i64;
    let mut agents: BTreeMap<&str, ()> = BTreeMap::new();
    for r in visits {
        let v = r.visit;
        let Some(outcome) = v.outcome else { continue };
        let within = rules.target_of(&v.queue).within_ms;
        f.offered += 1;
        if v.callback_requested {
            f.callbacks += 1;
        }
        let wait = outcome.wait_ms();
        longest = Some(longest.map_or(wait, |l| l.max(wait)));
        match outcome {
            VisitOutcome::Answered { wait_ms } => {
                f.answered += 1;
                answer_wait += wait_ms;
                if wait_ms <= within {
                    f.answered_within += 1;
                }
            }
            VisitOutcome::Abandoned { wait_ms } => {
                f.abandoned += 1;
                if wait_ms < rules.short_abandon_ms {
                    f.short_abandoned += 1;
                } else {
                    abandon_wait += wait_ms;
                    if wait_ms <= within {
                        abandoned_within += 1;
                    }
                }
            }
            VisitOutcome::Overflowed { .. } => f.overflowed += 1,
            VisitOutcome::TransferredOut { .. } => f.transferred_out += 1,
        }
        if !v.handled() {
            continue;
        }
        f.handled += 1;
        let visit_talk = v.talk_ms().unwrap_or(0);
        talk += visit_talk;
        hold += v.hold_ms;
        acw += v.acw_ms.unwrap_or(0);
        if let Some(a) = v.agent.as_deref() {
            agents.insert(a, ());
            f.transfers += r.call.transfers.iter().filter(|t| *t == a).count() as u64;
        }
        if !r.last_handled {
            continue;
        }
        if let Some((_, resolved)) = &r.call.disposition {
            f.dispositioned += 1;
            f.resolved += u64::from(*resolved);
        }
        if let Some(score) = r.call.csat {
            f.survey_responses += 1;
            csat_sum += score;
            f.satisfied += u64::from(score >= rules.csat_satisfied);
        }
        if let Some(caller) = r.call.caller.as_deref() {
            let after = r.call.ended_ms.or(v.completed_ms).unwrap_or(v.entered_ms);
            if arrivals.again(caller, after, rules.fcr_window_ms) {
                f.repeat_contacts += 1;
            }
        }
    }
    let long_abandons = f.abandoned - f.short_abandoned;
    let counted = f.offered - f.short_abandoned;
    f.service_levels = ServiceLevels {
        offered: share(f.answered_within, counted),
        answered: share(f.answered_within, f.answered),
        answered_or_abandoned: share(f.answered_within, f.answered + long_abandons),
        abandons_met: share(f.answered_within + abandoned_within, counted),
    };
    f.service_level = match rules.formula {
        ServiceLevelFormula::Offered => f.service_levels.offered,
        ServiceLevelFormula::Answered => f.service_levels.answered,
        ServiceLevelFormula::AnsweredOrAbandoned => f.service_levels.answered_or_abandoned,
        ServiceLevelFormula::AbandonsMet => f.service_levels.abandons_met,
    };
    f.abandon_rate = share(long_abandons, counted);
    f.asa_secs = mean_secs(answer_wait, f.answered);
    f.longest_wait_secs = longest.map(secs);
    f.average_abandon_secs = mean_secs(abandon_wait, long_abandons);
    f.aht_secs = mean_secs(talk + hold + acw, f.handled);
    f.talk_secs = mean_secs(talk, f.handled);
    f.hold_secs = mean_secs(hold, f.handled);
    f.acw_secs = mean_secs(acw, f.handled);
    f.transfers_per_call = share(f.transfers, f.handled);
    f.agents = agents.len() as u64;
    f.calls_per_agent = share(f.handled, f.agents);
    f.fcr_by_disposition = share(f.resolved, f.dispositioned);
    let last_handled = visits
        .iter()
        .filter(|r| r.last_handled && r.visit.handled())
        .count() as u64;
    f.fcr_by_repeat = share(last_handled - f.repeat_contacts, last_handled);
    f.csat = share(f.satisfied, f.survey_responses);
    f.csat_average = mean_secs(csat_sum * 1000, f.survey_responses);
    f.survey_response_rate = share(f.survey_responses, last_handled);
    f
}

/// Where an agent's logged-in time went.
#[derive(Debug, Clone, Default, PartialEq, Serialize, utoipa::ToSchema)]
pub struct AgentTime {
    pub logged_in_secs: f64,
    pub ready_secs: f64,
    pub ringing_secs: f64,
    /// Talk and hold (of every call, queued or direct).
    pub on_call_secs: f64,
    pub wrap_up_secs: f64,
    pub not_ready_secs: f64,
    /// Not-ready time by reason code.
    pub not_ready_by_reason: BTreeMap<String, f64>,
    /// Occupancy: (on call + wrap-up) ÷ (logged in − not ready).
    pub occupancy: Option<f64>,
    /// Utilisation: (on call + wrap-up) ÷ logged in.
    pub utilisation: Option<f64>,
}

/// An agent's time within [from, to), from its state spans.
pub fn agent_time(spans: &[&StateSpan], from_ms: i64, to_ms: i64) -> AgentTime {
    let mut by: BTreeMap<&str, i64> = BTreeMap::new();
    let mut reasons: BTreeMap<String, i64> = BTreeMap::new();
    for s in spans {
        let d = (s.to_ms.min(to_ms) - s.from_ms.max(from_ms)).max(0);
        if d == 0 {
            continue;
        }
        *by.entry(s.state.as_str()).or_default() += d;
        if s.state == "not_ready" {
            let reason = s.reason.clone().unwrap_or_else(|| "none".to_string());
            *reasons.entry(reason).or_default() += d;
        }
    }
    let get = |k: &str| by.get(k).copied().unwrap_or(0);
    let logged_in: i64 = by.values().sum();
    let handling = get("on_call") + get("wrap_up");
    let available = logged_in - get("not_ready");
    AgentTime {
        logged_in_secs: secs(logged_in),
        ready_secs: secs(get("ready")),
        ringing_secs: secs(get("ringing")),
        on_call_secs: secs(get("on_call")),
        wrap_up_secs: secs(get("wrap_up")),
        not_ready_secs: secs(get("not_ready")),
        not_ready_by_reason: reasons.into_iter().map(|(k, v)| (k, secs(v))).collect(),
        occupancy: (available > 0).then(|| handling as f64 / available as f64),
        utilisation: (logged_in > 0).then(|| handling as f64 / logged_in as f64),
    }
}
