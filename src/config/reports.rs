//! The reporting part of the configuration: the thresholds and windows every KPI is
//! computed with (docs/metrics.md), and the time zone reports are read in.

use serde::Deserialize;
use serde_saphyr::Spanned;

use super::Validator;
use crate::reports::{Rules, ServiceLevelFormula, Target};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReports {
    /// IANA name (Europe/Paris); intervals and days are on its clock. Default UTC.
    #[serde(default)]
    time_zone: Option<Spanned<String>>,
    /// The default target, "80/20": 80 % answered within 20 s. A queue may set its own.
    #[serde(default)]
    service_level: Option<Spanned<String>>,
    /// offered (default) | answered | answered_or_abandoned | abandons_met.
    #[serde(default)]
    service_level_formula: Option<Spanned<String>>,
    /// Callers who hang up sooner are short abandons (default 5).
    #[serde(default)]
    short_abandon_secs: Option<u64>,
    /// A repeat contact within this many days means no first-contact resolution (7).
    #[serde(default)]
    fcr_window_days: Option<u32>,
    /// Survey scores at or above this are satisfied (4, on 1–5).
    #[serde(default)]
    csat_satisfied: Option<Spanned<i64>>,
}

/// Colour thresholds of the wallboard: a figure at or past `warn` shows amber, at or past
/// `alarm` red. Service level is amber below the queue's target, red below target −
/// `service_level_margin`.
#[derive(Debug, Clone, PartialEq, Deserialize, serde::Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct WallboardConfig {
    pub waiting_warn: u32,
    pub waiting_alarm: u32,
    pub longest_wait_warn_secs: u32,
    pub longest_wait_alarm_secs: u32,
    pub abandon_rate_warn: f64,
    pub abandon_rate_alarm: f64,
    pub service_level_margin: f64,
}

impl Default for WallboardConfig {
    fn default() -> Self {
        WallboardConfig {
            waiting_warn: 3,
            waiting_alarm: 6,
            longest_wait_warn_secs: 30,
            longest_wait_alarm_secs: 60,
            abandon_rate_warn: 0.05,
            abandon_rate_alarm: 0.10,
            service_level_margin: 0.10,
        }
    }
}

/// How reports are computed unless a request says otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportsConfig {
    pub rules: Rules,
    pub time_zone: String,
}

impl Default for ReportsConfig {
    fn default() -> Self {
        ReportsConfig {
            rules: Rules::default(),
            time_zone: "UTC".to_string(),
        }
    }
}

/// Parses "80/20" (percent / seconds).
pub fn parse_target(s: &str) -> Option<Target> {
    let (pct, secs) = s.split_once('/')?;
    let pct: f64 = pct.trim().trim_end_matches('%').parse().ok()?;
    let secs: u64 = secs.trim().trim_end_matches('s').parse().ok()?;
    (0.0..=100.0).contains(&pct).then_some(Target {
        within_ms: secs as i64 * 1000,
        share: pct / 100.0,
    })
}

impl Validator {
    pub(super) fn target(&mut self, raw: &Spanned<String>) -> Option<Target> {
        let t = parse_target(&raw.value);
        if t.is_none() {
            self.error(
                raw,
                format!(
                    "service_level \"{}\" must be percent/seconds, e.g. \"80/20\" (80 % answered within 20 s)",
                    raw.value
                ),
            );
        }
        t
    }

    pub(super) fn reports(&mut self, raw: &RawReports) -> ReportsConfig {
        let mut rules = Rules::default();
        if let Some(t) = raw.service_level.as_ref().and_then(|s| self.target(s)) {
            rules.target = t;
        }
        if let Some(f) = &raw.service_level_formula {
            match serde_json::from_value::<ServiceLevelFormula>(serde_json::Value::String(
                f.value.clone(),
            )) {
                Ok(v) => rules.formula = v,
                Err(_) => self.error(
                    f,
                    format!(
                        "service_level_formula \"{}\" is unknown; use offered, answered, \
                         answered_or_abandoned or abandons_met",
                        f.value
                    ),
                ),
            }
        }
        if let Some(s) = raw.short_abandon_secs {
            rules.short_abandon_ms = s as i64 * 1000;
        }
        if let Some(d) = raw.fcr_window_days {
            rules.fcr_window_ms = i64::from(d) * 86_400_000;
        }
        if let Some(c) = &raw.csat_satisfied {
            if (1..=5).contains(&c.value) {
                rules.csat_satisfied = c.value;
            } else {
                self.error(
                    c,
                    format!(
                        "csat_satisfied {} must be a survey score from 1 to 5",
                        c.value
                    ),
                );
            }
        }
        let time_zone = match &raw.time_zone {
            Some(tz) => match crate::reports::time_zone(&tz.value) {
                Ok(_) => tz.value.clone(),
                Err(e) => {
                    self.error(tz, e);
                    "UTC".to_string()
                }
            },
            None => "UTC".to_string(),
        };
        ReportsConfig { rules, time_zone }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_as_percent_over_seconds() {
        assert_eq!(
            parse_target("80/20"),
            Some(Target {
                within_ms: 20_000,
                share: 0.8
            })
        );
        assert_eq!(parse_target("90% / 30s").map(|t| t.within_ms), Some(30_000));
        assert_eq!(parse_target("80"), None);
        assert_eq!(parse_target("180/20"), None);
    }
}
