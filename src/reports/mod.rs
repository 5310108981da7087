//! Contact-center reports: every KPI of docs/metrics.md, per queue, agent, DID, IVR flow
//! and interval, for any time range in any time zone, computed from the ordered event
//! log and nothing else (no counter kept on the side can drift from it).
//!
//! `facts` folds events into calls, queue visits and agent state spans; `figures`
//! computes the KPIs of a slice; this module picks the events of a range, slices, and
//! names intervals in the asked time zone. `erlang` does staffing; `explain` words the
//! router's decisions. Nothing here does IO except [`load`].

pub mod ask;
pub mod erlang;
pub mod explain;
pub mod facts;
pub mod figures;
pub mod table;

use std::collections::{BTreeMap, HashMap};

use jiff::tz::TimeZone;
use jiff::{Timestamp, ToSpan, Zoned};
use serde::Serialize;

pub use crate::acd::Decision;
use crate::events::Event;
use crate::store::Store;
pub use facts::{fold, CallFacts, Facts, StateSpan, Visit, VisitOutcome};
pub use figures::{AgentTime, Arrivals, Figures, Rules, ServiceLevelFormula, Target, VisitRef};

/// What a report is sliced by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum By {
    Queue,
    Agent,
    Did,
    Flow,
    /// Everything in one row (per interval, if asked).
    Total,
}

impl std::str::FromStr for By {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "queue" => Ok(By::Queue),
            "agent" => Ok(By::Agent),
            "did" => Ok(By::Did),
            "flow" => Ok(By::Flow),
            "total" => Ok(By::Total),
            _ => Err(format!(
                "\"{s}\" is not a slice; use queue, agent, did, flow or total"
            )),
        }
    }
}

/// Interval rows: 15 minutes, an hour or a day, on the asked time zone's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, utoipa::ToSchema)]
pub enum Interval {
    #[serde(rename = "15m")]
    Quarter,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl std::str::FromStr for Interval {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "15m" => Ok(Interval::Quarter),
            "1h" | "60m" => Ok(Interval::Hour),
            "1d" | "24h" => Ok(Interval::Day),
            _ => Err(format!("\"{s}\" is not an interval; use 15m, 1h or 1d")),
        }
    }
}

impl Interval {
    /// The start of the interval holding `ms`, on `tz`'s clock.
    pub fn floor(self, ms: i64, tz: &TimeZone) -> Zoned {
        let z = Timestamp::from_millisecond(ms)
            .unwrap_or(Timestamp::UNIX_EPOCH)
            .to_zoned(tz.clone());
        let floored = match self {
            Interval::Day => return z.start_of_day().unwrap_or(z),
            Interval::Hour => z.with().minute(0),
            Interval::Quarter => z.with().minute(z.minute() - z.minute() % 15),
        };
        floored.second(0).subsec_nanosecond(0).build().unwrap_or(z)
    }

    /// The start of the interval after the one starting at `start`.
    fn next(self, start: &Zoned) -> Zoned {
        let step = match self {
            Interval::Quarter => 15.minutes(),
            Interval::Hour => 1.hour(),
            Interval::Day => 1.day(),
        };
        start.checked_add(step).unwrap_or_else(|_| start.clone())
    }
}

/// What to report on.
#[derive(Debug, Clone)]
pub struct Request {
    /// Unix epoch milliseconds, [from, to).
    pub from_ms: i64,
    pub to_ms: i64,
    pub by: By,
    pub interval: Option<Interval>,
    pub tz: TimeZone,
    pub rules: Rules,
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Row {
    /// The queue, agent extension, DID or flow; `total` for the total row.
    pub key: String,
    /// The interval's start in the report's time zone (RFC 3339), when sliced by one.
    pub interval: Option<String>,
    #[serde(flatten)]
    pub figures: Figures,
    /// For agent rows: where the agent's logged-in time went.
    pub time: Option<AgentTime>,
}

/// A report as the CLI and the API give it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Report {
    pub from: String,
    pub to: String,
    pub time_zone: String,
    pub by: String,
    pub rows: Vec<Row>,
    /// The same figures over the whole range and every key.
    pub total: Row,
}

/// Events a report over [from, to) must read: calls are counted by when they entered a
/// queue, so their arrival can be a little earlier and their end later; repeat
/// contacts are looked for up to the FCR window after the range.
pub async fn load(store: &Store, req: &Request) -> anyhow::Result<Vec<Event>> {
    const SLACK_MS: i64 = 86_400_000;
    let from = req.from_ms.saturating_sub(SLACK_MS);
    let to = req
        .to_ms
        .saturating_add(req.rules.fcr_window_ms.max(SLACK_MS));
    let mut events = store.agent_states_before(from).await?;
    events.extend(store.events_between(from, to).await?);
    events.sort_by_key(|e| e.seq);
    Ok(events)
}

/// Computes a report from the events [`load`] read (or any run of the log).
pub fn compute(events: &[Event], req: &Request) -> Report {
    let facts = fold(events, req.to_ms);
    let arrivals = Arrivals::new(&facts.arrivals);
    let visits = visits_in(&facts, req.from_ms, req.to_ms);
    let tz_name = req.tz.iana_name().unwrap_or("UTC").to_string();
    let stamp = |ms: i64| {
        Timestamp::from_millisecond(ms)
            .map(|t| {
                t.to_zoned(req.tz.clone())
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            })
            .unwrap_or_default()
    };
    let key_of = |r: &VisitRef<'_>| -> Option<String> {
        match req.by {
            By::Queue => Some(r.visit.queue.clone()),
            By::Agent => r.visit.agent.clone(),
            By::Did => r.call.did.clone(),
            By::Flow => r.call.flow.clone(),
            By::Total => Some("total".to_string()),
        }
    };
    // (key, interval start) → visits.
    let mut groups: BTreeMap<(String, i64), Vec<VisitRef<'_>>> = BTreeMap::new();
    for r in &visits {
        let Some(key) = key_of(r) else { continue };
        let start = req.interval.map_or(req.from_ms, |i| {
            i.floor(r.visit.entered_ms, &req.tz)
                .timestamp()
                .as_millisecond()
        });
        groups.entry((key, start)).or_default().push(*r);
    }
    // Agents are reported for their logged-in time too, calls or not.
    let spans_by: HashMap<&str, Vec<&StateSpan>> =
        facts.spans.iter().fold(HashMap::new(), |mut m, s| {
            m.entry(s.agent.as_str()).or_default().push(s);
            m
        });
    if req.by == By::Agent {
        for (agent, spans) in &spans_by {
            for (start, end) in intervals(req, spans) {
                if spans.iter().any(|s| s.from_ms < end && s.to_ms > start) {
                    groups.entry((agent.to_string(), start)).or_default();
                }
            }
        }
    }
    let rows = groups
        .iter()
        .map(|((key, start), vs)| {
            let end = req
                .interval
                .map_or(req.to_ms, |i| {
                    let z = Timestamp::from_millisecond(*start)
                        .unwrap_or(Timestamp::UNIX_EPOCH)
                        .to_zoned(req.tz.clone());
                    i.next(&z).timestamp().as_millisecond()
                })
                .min(req.to_ms);
            let time = (req.by == By::Agent).then(|| {
                let spans = spans_by.get(key.as_str()).cloned().unwrap_or_default();
                figures::agent_time(&spans, (*start).max(req.from_ms), end)
            });
            let mut figures = figures::figures(vs, &req.rules, &arrivals);
            if req.by == By::Queue {
                // A queue's row states the queue's own target.
                let t = req.rules.target_of(key);
                figures.service_level_within_secs = t.within_ms as f64 / 1000.0;
                figures.service_level_target = t.share;
            }
            Row {
                key: key.clone(),
                interval: req.interval.map(|_| stamp(*start)),
                figures,
                time,
            }
        })
        .collect();
    let all: Vec<&StateSpan> = facts.spans.iter().collect();
    let total = Row {
        key: "total".to_string(),
        interval: None,
        figures: figures::figures(&visits, &req.rules, &arrivals),
        time: (req.by == By::Agent).then(|| figures::agent_time(&all, req.from_ms, req.to_ms)),
    };
    Report {
        from: stamp(req.from_ms),
        to: stamp(req.to_ms),
        time_zone: tz_name,
        by: format!("{:?}", req.by).to_lowercase(),
        rows,
        total,
    }
}

/// The visits that entered a queue in [from, to) and left it, each marked if it is its call's last
/// handled one.
fn visits_in(facts: &Facts, from_ms: i64, to_ms: i64) -> Vec<VisitRef<'_>> {
    let mut out = Vec::new();
    for call in &facts.calls {
        let last = call.visits.iter().rposition(|v| v.handled());
        for (i, visit) in call.visits.iter().enumerate() {
            // A caller still waiting is counted once it leaves the queue.
            let left = visit.outcome.is_some();
            if left && visit.entered_ms >= from_ms && visit.entered_ms < to_ms {
                out.push(VisitRef {
                    call,
                    visit,
                    last_handled: Some(i) == last,
                });
            }
        }
    }
    out
}

/// The [start, end) intervals of the request an agent's spans touch (one, the whole
/// range, without an interval).
fn intervals(req: &Request, spans: &[&StateSpan]) -> Vec<(i64, i64)> {
    let Some(interval) = req.interval else {
        return vec![(req.from_ms, req.to_ms)];
    };
    let first = spans.iter().map(|s| s.from_ms).min().unwrap_or(req.from_ms);
    let last = spans.iter().map(|s| s.to_ms).max().unwrap_or(req.to_ms);
    let (from, to) = (first.max(req.from_ms), last.min(req.to_ms));
    let mut out = Vec::new();
    let mut z = interval.floor(from, &req.tz);
    while z.timestamp().as_millisecond() < to {
        let next = interval.next(&z);
        let (s, e) = (
            z.timestamp().as_millisecond(),
            next.timestamp().as_millisecond(),
        );
        if e <= s {
            break;
        }
        out.push((s, e));
        z = next;
    }
    out
}

/// Parses a report time: an RFC 3339 timestamp, or a civil date/time (`2026-12-03`,
/// `2026-12-03T09:00`) on `tz`'s clock.
pub fn parse_time(s: &str, tz: &TimeZone) -> Result<i64, String> {
    if let Ok(t) = s.parse::<Timestamp>() {
        return Ok(t.as_millisecond());
    }
    if let Ok(dt) = s.parse::<jiff::civil::DateTime>() {
        return dt
            .to_zoned(tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| e.to_string());
    }
    if let Ok(d) = s.parse::<jiff::civil::Date>() {
        return d
            .to_zoned(tz.clone())
            .map(|z| z.timestamp().as_millisecond())
            .map_err(|e| e.to_string());
    }
    Err(format!(
        "\"{s}\" is not a time; use 2026-12-03, 2026-12-03T09:00 or an RFC 3339 timestamp"
    ))
}

/// A time zone by IANA name (`Europe/Paris`), or `UTC`.
pub fn time_zone(name: &str) -> Result<TimeZone, String> {
    TimeZone::get(name)
        .map_err(|_| format!("\"{name}\" is not a time zone name (e.g. Europe/Paris, UTC)"))
}

#[cfg(test)]
mod tests;
