//! A call's routing in words, from the `acd.decision` events the router's explanations
//! were logged as: "2002 chosen: support 5, the highest level among 3 ready agents;
//! 2003 lost: support 3".

use crate::acd::{Decision, Trigger, Verdict};
use crate::events::Event;

fn skills(list: &[(String, u8)]) -> String {
    if list.is_empty() {
        return "no skills".to_string();
    }
    list.iter()
        .map(|(s, l)| format!("{s} {l}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn secs(s: f64) -> String {
    format!("{} s", s.round() as i64)
}

/// What ranks a candidate under the strategy, in words.
fn merit(d: &Decision, c: &crate::acd::Candidate) -> String {
    let required: Vec<(String, u8)> = c
        .skills
        .iter()
        .filter(|(s, _)| d.requirement.iter().any(|(r, _)| r == s))
        .cloned()
        .collect();
    match d.strategy.as_str() {
        "best_skill" => skills(&required),
        "fewest_calls" => format!("{} calls today", c.calls_today),
        _ => format!("idle {}", secs(c.idle_secs)),
    }
}

/// The rule that chose, in words.
fn rule(d: &Decision, ready: usize) -> String {
    let among = if ready == 1 {
        "the only ready agent who could take it".to_string()
    } else {
        format!("among {ready} ready agents")
    };
    match d.strategy.as_str() {
        "best_skill" => format!("the highest level {among}"),
        "fewest_calls" => format!("the fewest calls today {among}"),
        "round_robin" => format!("next in turn {among}"),
        "ring_all" => format!("every eligible agent rang, {among}"),
        _ => format!("the longest idle {among}"),
    }
}

/// One decision in words: a heading line, then one line per agent considered.
pub fn words(d: &Decision) -> Vec<String> {
    let mut out = Vec::new();
    let why = match &d.trigger {
        Trigger::CallWaiting => "the call was waiting".to_string(),
        Trigger::AgentFreed { agent } => format!(
            "{agent} became free and this was its best waiting call (highest priority, then longest wait)"
        ),
    };
    out.push(format!(
        "queue {} ({}), after {} waiting, priority {}: {why}",
        d.queue,
        d.strategy,
        secs(d.waited_secs),
        d.priority
    ));
    if d.relaxed_steps > 0 {
        out.push(format!(
            "requirement relaxed {} step(s) ({}) to: {}",
            d.relaxed_steps,
            d.relaxations.join("; "),
            skills(&d.requirement)
        ));
    } else {
        out.push(format!("requirement: {}", skills(&d.requirement)));
    }
    // Ready agents who could take the call; those who could not are listed as such.
    let ready = d
        .candidates
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Chosen | Verdict::Outranked))
        .count();
    for c in &d.candidates {
        let borrowed = if c.pool != d.queue {
            format!(" (borrowed from {})", c.pool)
        } else {
            String::new()
        };
        out.push(match &c.verdict {
            Verdict::Chosen => format!(
                "{}{borrowed} chosen: {}, {}",
                c.agent,
                merit(d, c),
                rule(d, ready)
            ),
            Verdict::Outranked => format!("{}{borrowed} lost: {}", c.agent, merit(d, c)),
            Verdict::LacksSkill {
                skill,
                needs,
                has: 0,
            } => format!(
                "{}{borrowed} not eligible: no {skill}, needs {skill} {needs}",
                c.agent
            ),
            Verdict::LacksSkill { skill, needs, has } => format!(
                "{}{borrowed} not eligible: {skill} {has}, needs {needs}",
                c.agent
            ),
            Verdict::DeclinedBefore => format!(
                "{}{borrowed} not offered: declined or missed this call before",
                c.agent
            ),
        });
    }
    if d.more > 0 {
        out.push(format!("… and {} more ready agents not listed", d.more));
    }
    out
}

/// Every decision among a call's events, oldest first.
pub fn decisions(events: &[Event]) -> Vec<Decision> {
    events
        .iter()
        .filter(|e| e.kind == "acd.decision")
        .filter_map(|e| serde_json::from_value(e.data.clone()).ok())
        .collect()
}

/// The whole routing story of a call, ready to print.
pub fn explain(call: &str, events: &[Event]) -> String {
    let ds = decisions(events);
    if ds.is_empty() {
        return format!("{call}: no routing decision is logged for this call (it never waited in a queue, or was not offered to an agent)");
    }
    let mut out = String::new();
    for (i, d) in ds.iter().enumerate() {
        if ds.len() > 1 {
            out.push_str(&format!("offer {}:\n", i + 1));
        }
        for line in words(d) {
            out.push_str("  ");
            out.push_str(&line);
            out.push('\n');
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::acd::{
        AgentConfig, CallId, Event, QueueConfig, Relaxation, Router, Strategy, Widen,
    };

    fn router(queue: QueueConfig, agents: &[(&str, &[(&str, u8)])]) -> Router {
        let mut r = Router::new();
        let name = queue.name.clone();
        r.add_queue(queue).unwrap();
        for (ext, skills) in agents {
            r.add_agent(AgentConfig {
                extension: ext.to_string(),
                skills: skills.iter().map(|(s, l)| (s.to_string(), *l)).collect(),
                queues: vec![name.clone()],
            })
            .unwrap();
        }
        r
    }

    fn login(r: &mut Router, ext: &str, at: Instant) {
        r.handle(Event::AgentLogin { agent: ext.into() }, at)
            .unwrap();
    }

    fn arrive(r: &mut Router, queue: &str, at: Instant) {
        r.handle(
            Event::CallArrived {
                call: CallId(1),
                queue: queue.into(),
                skills: vec![],
                priority: 0,
            },
            at,
        )
        .unwrap();
    }

    fn only_decision(r: &mut Router) -> Decision {
        while r.poll().is_some() {}
        let d = r.poll_decision().expect("a decision");
        assert!(r.poll_decision().is_none());
        d
    }

    #[test]
    fn best_skill_names_the_highest_level_and_why_the_others_lost() {
        let mut q = QueueConfig::new("support", Strategy::BestSkill);
        q.skills = vec![("support".into(), 2)];
        let mut r = router(
            q,
            &[
                ("2001", &[("support", 2)]),
                ("2002", &[("support", 5)]),
                ("2003", &[("support", 3)]),
                ("2004", &[("billing", 5)]),
            ],
        );
        let t0 = Instant::now();
        for a in ["2001", "2002", "2003", "2004"] {
            login(&mut r, a, t0);
        }
        arrive(&mut r, "support", t0 + Duration::from_secs(5));
        let d = only_decision(&mut r);
        assert_eq!(d.chosen, vec!["2002"]);
        let w = words(&d);
        assert!(
            w.iter()
                .any(|l| l == "2002 chosen: support 5, the highest level among 3 ready agents"),
            "{w:#?}"
        );
        assert!(w.iter().any(|l| l == "2003 lost: support 3"), "{w:#?}");
        assert!(w.iter().any(|l| l == "2001 lost: support 2"), "{w:#?}");
        assert!(
            w.iter()
                .any(|l| l == "2004 not eligible: no support, needs support 2"),
            "{w:#?}"
        );
        assert!(
            w[0].starts_with("queue support (best_skill), after 0 s waiting"),
            "{w:#?}"
        );
    }

    #[test]
    fn longest_idle_names_the_idle_times() {
        let mut r = router(
            QueueConfig::new("sales", Strategy::LongestIdle),
            &[("2001", &[]), ("2002", &[])],
        );
        let t0 = Instant::now();
        login(&mut r, "2002", t0);
        login(&mut r, "2001", t0 + Duration::from_secs(30));
        arrive(&mut r, "sales", t0 + Duration::from_secs(42));
        let d = only_decision(&mut r);
        let w = words(&d);
        assert!(
            w.iter()
                .any(|l| l == "2002 chosen: idle 42 s, the longest idle among 2 ready agents"),
            "{w:#?}"
        );
        assert!(w.iter().any(|l| l == "2001 lost: idle 12 s"), "{w:#?}");
    }

    #[test]
    fn a_relaxed_requirement_says_how_it_was_relaxed() {
        let mut q = QueueConfig::new("billing", Strategy::BestSkill);
        q.skills = vec![("billing".into(), 8)];
        q.relaxations = vec![Relaxation {
            after: Duration::from_secs(30),
            widen: Widen::LowerLevels(4),
        }];
        let mut r = router(
            q,
            &[("2001", &[("billing", 4)]), ("2003", &[("billing", 2)])],
        );
        let t0 = Instant::now();
        login(&mut r, "2001", t0);
        login(&mut r, "2003", t0);
        arrive(&mut r, "billing", t0);
        while r.poll().is_some() {}
        assert!(r.poll_decision().is_none(), "nobody has billing 8");
        let due = r.poll_timeout().unwrap();
        r.handle_timeout(due);
        let d = only_decision(&mut r);
        let w = words(&d);
        assert!(
            w.iter().any(|l| l
                == "requirement relaxed 1 step(s) (after 30 s: levels lowered by 4) to: billing 4"),
            "{w:#?}"
        );
        assert!(
            w.iter().any(|l| l.starts_with("2001 chosen: billing 4")),
            "{w:#?}"
        );
        assert!(
            w.iter()
                .any(|l| l == "2003 not eligible: billing 2, needs 4"),
            "{w:#?}"
        );
    }
}
