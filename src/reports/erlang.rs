//! Staffing by Erlang C (the M/M/N queue): how many agents a queue needs for a
//! service-level target, given the calls arriving per interval and the handle time.
//!
//! Evaluated without factorials or powers: Erlang B by its recurrence
//! `B(0) = 1, B(k) = A·B(k−1) / (k + A·B(k−1))`, which stays in [0, 1] for any number
//! of agents, then `C = N·B / (N − A·(1 − B))`. So 1,000 agents cost 1,000 steps and
//! nothing overflows.
//!
//! Erlang C assumes nobody abandons, so it overstates the wait of a queue whose callers
//! do give up, and so overstaffs a little: the usual, safe side for a plan.

use serde::Serialize;

/// What staffing is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Load {
    /// Calls arriving in one interval.
    pub calls: f64,
    pub interval_secs: f64,
    /// Average handle time (talk + hold + after-call work).
    pub aht_secs: f64,
}

impl Load {
    /// Offered traffic in erlangs: arrival rate × handle time.
    pub fn erlangs(&self) -> f64 {
        if self.interval_secs <= 0.0 {
            return 0.0;
        }
        self.calls / self.interval_secs * self.aht_secs
    }
}

/// Probability that a caller waits at all, with `agents` serving `erlangs` of traffic.
/// 1.0 when the agents cannot keep up (agents ≤ traffic): the queue grows without end.
pub fn probability_of_waiting(agents: u32, erlangs: f64) -> f64 {
    if erlangs <= 0.0 {
        return 0.0;
    }
    let n = f64::from(agents);
    if n <= erlangs {
        return 1.0;
    }
    let mut b = 1.0;
    for k in 1..=agents {
        b = erlangs * b / (f64::from(k) + erlangs * b);
    }
    n * b / (n - erlangs * (1.0 - b))
}

/// The expected figures of one staffing level.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Outlook {
    pub agents: u32,
    /// Offered traffic, erlangs.
    pub erlangs: f64,
    pub probability_of_waiting: f64,
    /// Share answered within the target's threshold.
    pub service_level: f64,
    /// Average speed of answer, seconds (infinite when the agents cannot keep up).
    pub asa_secs: f64,
    /// Traffic ÷ agents (capped at 1).
    pub occupancy: f64,
}

/// What `agents` would achieve against `load`, answering within `within_secs`.
pub fn outlook(agents: u32, load: Load, within_secs: f64) -> Outlook {
    let a = load.erlangs();
    let n = f64::from(agents);
    let pw = probability_of_waiting(agents, a);
    let (service_level, asa_secs) = if a <= 0.0 {
        (1.0, 0.0)
    } else if n <= a {
        (0.0, f64::INFINITY)
    } else {
        (
            1.0 - pw * (-(n - a) * within_secs / load.aht_secs).exp(),
            pw * load.aht_secs / (n - a),
        )
    };
    Outlook {
        agents,
        erlangs: a,
        probability_of_waiting: pw,
        service_level,
        asa_secs,
        occupancy: if n > 0.0 { (a / n).min(1.0) } else { 1.0 },
    }
}

/// A staffing answer: the fewest agents that meet the target, and the agents to
/// schedule once shrinkage (breaks, training, absence) is allowed for.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Staffing {
    #[serde(flatten)]
    pub outlook: Outlook,
    /// Agents to schedule: agents ÷ (1 − shrinkage), rounded up.
    pub scheduled: u32,
    pub shrinkage: f64,
}

/// The fewest agents whose service level within `within_secs` reaches `target`
/// (0.0–1.0) and, if given, whose occupancy stays at or under `max_occupancy`.
pub fn agents_needed(
    load: Load,
    within_secs: f64,
    target: f64,
    max_occupancy: Option<f64>,
    shrinkage: f64,
) -> Staffing {
    let a = load.erlangs();
    // Fewer agents than the traffic never keep up; start just above it.
    let mut n = (a.floor() as u32).saturating_add(1).max(1);
    if a <= 0.0 {
        n = 0;
    }
    let outlook = loop {
        let o = outlook(n, load, within_secs);
        let occupancy_ok = max_occupancy.is_none_or(|m| o.occupancy <= m);
        if (o.service_level >= target && occupancy_ok) || n == u32::MAX {
            break o;
        }
        n += 1;
    };
    let shrinkage = shrinkage.clamp(0.0, 0.99);
    Staffing {
        outlook,
        scheduled: (f64::from(outlook.agents) / (1.0 - shrinkage)).ceil() as u32,
        shrinkage,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Equal to four significant digits: within half a unit of the fourth.
    fn sig4(got: f64, want: f64) -> bool {
        ((got - want) / want).abs() < 5e-5
    }

    /// Call Centre Helper's worked example of the Erlang C formula: 100 calls in 30
    /// minutes, 180 s handle time (10 erlangs), target 80 % within 20 s. Its published
    /// figures for 11 agents: 68.21 % wait; the figures for 11–15 agents were checked by
    /// an exact rational evaluation of the factorial formula.
    #[test]
    fn matches_the_published_worked_example_to_four_significant_digits() {
        let load = Load {
            calls: 100.0,
            interval_secs: 1800.0,
            aht_secs: 180.0,
        };
        assert_eq!(load.erlangs(), 10.0);
        let cases = [
            (11, 0.68211820, 0.38961381, 122.781277),
            (12, 0.44938822, 0.64015804, 40.444940),
            (13, 0.28527045, 0.79559479, 17.116227),
            (14, 0.17413193, 0.88835002, 7.835937),
            (15, 0.10204237, 0.94145284, 3.673525),
        ];
        for (n, pw, sl, asa) in cases {
            let o = outlook(n, load, 20.0);
            assert!(
                sig4(o.probability_of_waiting, pw),
                "{n} agents: P(wait) {o:?}"
            );
            assert!(sig4(o.service_level, sl), "{n} agents: service level {o:?}");
            assert!(sig4(o.asa_secs, asa), "{n} agents: ASA {o:?}");
        }
        let s = agents_needed(load, 20.0, 0.8, None, 0.0);
        assert_eq!(
            s.outlook.agents, 14,
            "13 agents give 79.6 %, 14 give 88.8 %"
        );
        assert_eq!(s.scheduled, 14);
        let s = agents_needed(load, 20.0, 0.8, None, 0.3);
        assert_eq!(s.scheduled, 20, "14 / 0.7 = 20");
        // An occupancy cap can ask for more than the service level does.
        let s = agents_needed(load, 20.0, 0.8, Some(0.65), 0.0);
        assert_eq!(s.outlook.agents, 16);
    }

    #[test]
    fn a_small_textbook_case() {
        // 2.5 erlangs on 5 agents: P(wait) = 0.13037 (exact: 625/4794).
        assert!(sig4(probability_of_waiting(5, 2.5), 625.0 / 4794.0));
    }

    #[test]
    fn more_agents_never_lower_the_service_level_nor_raise_the_wait() {
        for erlangs in [0.5, 3.0, 10.0, 47.3, 180.0] {
            let load = Load {
                calls: erlangs * 3600.0 / 240.0,
                interval_secs: 3600.0,
                aht_secs: 240.0,
            };
            let mut last = outlook(1, load, 20.0);
            for n in 2..(erlangs as u32 * 2 + 10) {
                let o = outlook(n, load, 20.0);
                assert!(
                    o.service_level >= last.service_level,
                    "{erlangs} E, {n} agents"
                );
                assert!(o.probability_of_waiting <= last.probability_of_waiting);
                assert!(o.asa_secs <= last.asa_secs);
                assert!((0.0..=1.0).contains(&o.service_level));
                last = o;
            }
        }
    }

    #[test]
    fn a_thousand_agents_stay_finite() {
        let load = Load {
            calls: 14_000.0,
            interval_secs: 3600.0,
            aht_secs: 240.0,
        };
        let erlangs = load.erlangs();
        assert!((erlangs - 933.33).abs() < 0.01);
        let o = outlook(1000, load, 20.0);
        assert!(o.probability_of_waiting.is_finite() && o.probability_of_waiting > 0.0);
        assert!(o.service_level.is_finite() && o.service_level > 0.99);
        assert!(o.asa_secs.is_finite());
        let s = agents_needed(load, 20.0, 0.8, None, 0.0);
        assert!(s.outlook.agents > 933 && s.outlook.agents < 1000);
        assert!(s.outlook.service_level >= 0.8);
        assert!(outlook(s.outlook.agents - 1, load, 20.0).service_level < 0.8);
    }

    #[test]
    fn no_traffic_needs_nobody_and_too_little_staff_never_answers_in_time() {
        let idle = Load {
            calls: 0.0,
            interval_secs: 900.0,
            aht_secs: 300.0,
        };
        assert_eq!(agents_needed(idle, 20.0, 0.8, None, 0.0).outlook.agents, 0);
        let busy = Load {
            calls: 90.0,
            interval_secs: 900.0,
            aht_secs: 300.0,
        };
        let o = outlook(30, busy, 20.0);
        assert_eq!((o.probability_of_waiting, o.service_level), (1.0, 0.0));
        assert!(o.asa_secs.is_infinite());
    }
}
