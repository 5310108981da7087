//! What a person or a client asks a report for, as text (CLI flags, query parameters),
//! turned into a [`Request`] against the configured defaults, with errors that say what
//! to write instead.

use serde::{Deserialize, Serialize};

use super::erlang::{self, Load, Staffing};
use super::{By, Interval, Report, Request};
use crate::config::{parse_target, ReportsConfig};

/// Report options; every one has a default.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct Ask {
    /// Start: 2026-12-03, 2026-12-03T09:00 (on `tz`'s clock) or RFC 3339. Default: today's
    /// midnight.
    pub from: Option<String>,
    /// End (exclusive), the same forms. Default: now.
    pub to: Option<String>,
    /// IANA time zone for intervals and civil times. Default: `reports.time_zone`.
    pub tz: Option<String>,
    /// 15m, 1h or 1d rows; none: one row per key.
    pub interval: Option<String>,
    /// Service-level target "80/20" for every queue, instead of the configured ones.
    pub target: Option<String>,
    /// offered, answered, answered_or_abandoned or abandons_met.
    pub formula: Option<String>,
    pub short_abandon_secs: Option<u64>,
    pub fcr_window_days: Option<u32>,
}

impl Ask {
    pub fn request(
        &self,
        by: By,
        defaults: &ReportsConfig,
        now_ms: i64,
    ) -> Result<Request, String> {
        let tz_name = self.tz.as_deref().unwrap_or(&defaults.time_zone);
        let tz = super::time_zone(tz_name)?;
        let from_ms = match &self.from {
            Some(f) => super::parse_time(f, &tz)?,
            None => Interval::Day
                .floor(now_ms, &tz)
                .timestamp()
                .as_millisecond(),
        };
        let to_ms = match &self.to {
            Some(t) => super::parse_time(t, &tz)?,
            None => now_ms,
        };
        if to_ms <= from_ms {
            return Err("the report's end must come after its start".to_string());
        }
        let interval = self.interval.as_deref().map(str::parse).transpose()?;
        let mut rules = defaults.rules.clone();
        if let Some(t) = &self.target {
            rules.target = parse_target(t)
                .ok_or_else(|| format!("target \"{t}\" must be percent/seconds, e.g. 80/20"))?;
            rules.queue_targets.clear();
        }
        if let Some(f) = &self.formula {
            rules.formula = serde_json::from_value(serde_json::Value::String(f.clone())).map_err(|_| {
                format!("formula \"{f}\" is unknown; use offered, answered, answered_or_abandoned or abandons_met")
            })?;
        }
        if let Some(s) = self.short_abandon_secs {
            rules.short_abandon_ms = s as i64 * 1000;
        }
        if let Some(d) = self.fcr_window_days {
            rules.fcr_window_ms = i64::from(d) * 86_400_000;
        }
        Ok(Request {
            from_ms,
            to_ms,
            by,
            interval,
            tz,
            rules,
        })
    }
}

/// Staffing options: measured from the log per interval, or from given figures.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StaffingAsk {
    pub queue: String,
    /// Share of paid time agents are not available (breaks, training), 0–1.
    pub shrinkage: Option<f64>,
    /// Staff so that occupancy stays at or under this (0–1), e.g. 0.85.
    pub max_occupancy: Option<f64>,
    /// Given figures instead of the log's: calls per interval and handle time.
    pub calls: Option<f64>,
    pub aht_secs: Option<f64>,
}

/// One interval's staffing.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct StaffingRow {
    /// The interval's start (none for given figures).
    pub interval: Option<String>,
    pub calls: f64,
    pub aht_secs: f64,
    pub interval_secs: f64,
    pub within_secs: f64,
    pub target: f64,
    #[serde(flatten)]
    pub staffing: Staffing,
}

/// The most traffic staffing is computed for.
const MAX_ERLANGS: f64 = 100_000.0;

fn interval_secs(i: Option<Interval>) -> f64 {
    match i.unwrap_or(Interval::Quarter) {
        Interval::Quarter => 900.0,
        Interval::Hour => 3600.0,
        Interval::Day => 86_400.0,
    }
}

/// Staffing per interval of `report` (a by-queue report with intervals) for `ask.queue`,
/// or for the given figures, against `target` ("80/20"; default the queue's). Intervals
/// without a handled call use the range's AHT.
pub fn staffing(
    ask: &StaffingAsk,
    target: Option<&str>,
    report: Option<&Report>,
    interval: Option<Interval>,
    defaults: &ReportsConfig,
) -> Result<Vec<StaffingRow>, String> {
    let target = match target {
        Some(t) => parse_target(t)
            .ok_or_else(|| format!("target \"{t}\" must be percent/seconds, e.g. 80/20"))?,
        None => defaults.rules.target_of(&ask.queue),
    };
    if let Some(m) = ask.max_occupancy {
        if !(m > 0.0 && m <= 1.0) {
            return Err("max_occupancy must be a share above 0 and at most 1, e.g. 0.85".into());
        }
    }
    let shrinkage = ask.shrinkage.unwrap_or(0.0);
    if !(0.0..1.0).contains(&shrinkage) {
        return Err("shrinkage must be a share from 0 up to (not including) 1, e.g. 0.3".into());
    }
    let secs = interval_secs(interval);
    let within = target.within_ms as f64 / 1000.0;
    let row = |label: Option<String>, calls: f64, aht: f64| StaffingRow {
        interval: label,
        calls,
        aht_secs: aht,
        interval_secs: secs,
        within_secs: within,
        target: target.share,
        staffing: erlang::agents_needed(
            Load {
                calls,
                interval_secs: secs,
                aht_secs: aht,
            },
            within,
            target.share,
            ask.max_occupancy,
            shrinkage,
        ),
    };
    if let Some(aht) = ask.aht_secs {
        if !(aht > 0.0 && aht <= 86_400.0) {
            return Err("aht_secs must be more than 0 and at most a day".into());
        }
    }
    if let (Some(calls), Some(aht)) = (ask.calls, ask.aht_secs) {
        // Beyond this, no contact center: and the evaluation costs one step per agent.
        if !(0.0..=1e7).contains(&calls) || calls * aht / secs > MAX_ERLANGS {
            return Err(format!(
                "calls must be from 0 to 10,000,000, and the traffic at most {MAX_ERLANGS} erlangs"
            ));
        }
        return Ok(vec![row(None, calls, aht)]);
    }
    let Some(report) = report else {
        return Err("give both calls and aht_secs, or a range of the log to measure them".into());
    };
    let rows: Vec<_> = report.rows.iter().filter(|r| r.key == ask.queue).collect();
    let handled: u64 = rows.iter().map(|r| r.figures.handled).sum();
    let fallback = (handled > 0).then(|| {
        rows.iter()
            .map(|r| r.figures.aht_secs.unwrap_or(0.0) * r.figures.handled as f64)
            .sum::<f64>()
            / handled as f64
    });
    let Some(fallback) = fallback else {
        return Err(format!(
            "queue \"{}\" handled no call in this range, so its handle time is unknown; give aht_secs",
            ask.queue
        ));
    };
    let aht = ask.aht_secs;
    Ok(rows
        .iter()
        .map(|r| {
            let aht = aht.or(r.figures.aht_secs).unwrap_or(fallback);
            row(r.interval.clone(), r.figures.offered as f64, aht)
        })
        .collect())
}
