//! A report as people read it (an aligned table) and as tools read it (CSV, JSON).

use super::{Report, Row};

fn pct(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{:.1}%", v * 100.0))
}

fn secs(v: Option<f64>) -> String {
    v.map_or("-".into(), |v| format!("{v:.1}"))
}

fn raw(v: Option<f64>) -> String {
    v.map_or(String::new(), |v| format!("{v}"))
}

type Column = (&'static str, fn(&Row) -> String, fn(&Row) -> String);

/// Every column: its header, its text for people and its value for CSV.
fn columns(agents: bool) -> Vec<Column> {
    let mut c: Vec<Column> = vec![
        ("key", |r| r.key.clone(), |r| r.key.clone()),
        (
            "interval",
            |r| r.interval.clone().unwrap_or_default(),
            |r| r.interval.clone().unwrap_or_default(),
        ),
        (
            "offered",
            |r| r.figures.offered.to_string(),
            |r| r.figures.offered.to_string(),
        ),
        (
            "answered",
            |r| r.figures.answered.to_string(),
            |r| r.figures.answered.to_string(),
        ),
        (
            "abandoned",
            |r| r.figures.abandoned.to_string(),
            |r| r.figures.abandoned.to_string(),
        ),
        (
            "short_abandoned",
            |r| r.figures.short_abandoned.to_string(),
            |r| r.figures.short_abandoned.to_string(),
        ),
        (
            "overflowed",
            |r| r.figures.overflowed.to_string(),
            |r| r.figures.overflowed.to_string(),
        ),
        (
            "callbacks",
            |r| r.figures.callbacks.to_string(),
            |r| r.figures.callbacks.to_string(),
        ),
        (
            "service_level",
            |r| pct(r.figures.service_level),
            |r| raw(r.figures.service_level),
        ),
        (
            "abandon_rate",
            |r| pct(r.figures.abandon_rate),
            |r| raw(r.figures.abandon_rate),
        ),
        (
            "asa_s",
            |r| secs(r.figures.asa_secs),
            |r| raw(r.figures.asa_secs),
        ),
        (
            "longest_wait_s",
            |r| secs(r.figures.longest_wait_secs),
            |r| raw(r.figures.longest_wait_secs),
        ),
        (
            "avg_abandon_s",
            |r| secs(r.figures.average_abandon_secs),
            |r| raw(r.figures.average_abandon_secs),
        ),
        (
            "handled",
            |r| r.figures.handled.to_string(),
            |r| r.figures.handled.to_string(),
        ),
        (
            "aht_s",
            |r| secs(r.figures.aht_secs),
            |r| raw(r.figures.aht_secs),
        ),
        (
            "talk_s",
            |r| secs(r.figures.talk_secs),
            |r| raw(r.figures.talk_secs),
        ),
        (
            "hold_s",
            |r| secs(r.figures.hold_secs),
            |r| raw(r.figures.hold_secs),
        ),
        (
            "acw_s",
            |r| secs(r.figures.acw_secs),
            |r| raw(r.figures.acw_secs),
        ),
        (
            "transfers_per_call",
            |r| {
                r.figures
                    .transfers_per_call
                    .map_or("-".into(), |v| format!("{v:.2}"))
            },
            |r| raw(r.figures.transfers_per_call),
        ),
        (
            "fcr_disposition",
            |r| pct(r.figures.fcr_by_disposition),
            |r| raw(r.figures.fcr_by_disposition),
        ),
        (
            "fcr_repeat",
            |r| pct(r.figures.fcr_by_repeat),
            |r| raw(r.figures.fcr_by_repeat),
        ),
        ("csat", |r| pct(r.figures.csat), |r| raw(r.figures.csat)),
        (
            "csat_avg",
            |r| {
                r.figures
                    .csat_average
                    .map_or("-".into(), |v| format!("{v:.2}"))
            },
            |r| raw(r.figures.csat_average),
        ),
        (
            "survey_rate",
            |r| pct(r.figures.survey_response_rate),
            |r| raw(r.figures.survey_response_rate),
        ),
    ];
    if agents {
        c.extend::<Vec<Column>>(vec![
            (
                "logged_in_s",
                |r| secs(r.time.as_ref().map(|t| t.logged_in_secs)),
                |r| raw(r.time.as_ref().map(|t| t.logged_in_secs)),
            ),
            (
                "not_ready_s",
                |r| secs(r.time.as_ref().map(|t| t.not_ready_secs)),
                |r| raw(r.time.as_ref().map(|t| t.not_ready_secs)),
            ),
            (
                "occupancy",
                |r| pct(r.time.as_ref().and_then(|t| t.occupancy)),
                |r| raw(r.time.as_ref().and_then(|t| t.occupancy)),
            ),
            (
                "utilisation",
                |r| pct(r.time.as_ref().and_then(|t| t.utilisation)),
                |r| raw(r.time.as_ref().and_then(|t| t.utilisation)),
            ),
            ("not_ready_by_reason", |r| reasons(r), |r| reasons(r)),
        ]);
    }
    c
}

fn reasons(r: &Row) -> String {
    r.time
        .as_ref()
        .map(|t| {
            t.not_ready_by_reason
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(";")
        })
        .unwrap_or_default()
}

/// An aligned table with the total row last.
pub fn text(report: &Report) -> String {
    let cols = columns(report.by == "agent");
    let has_interval = report.rows.iter().any(|r| r.interval.is_some());
    let cols: Vec<&Column> = cols
        .iter()
        .filter(|c| has_interval || c.0 != "interval")
        .collect();
    let rows: Vec<&Row> = report.rows.iter().chain([&report.total]).collect();
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| cols.iter().map(|c| (c.1)(r)).collect())
        .collect();
    let widths: Vec<usize> = cols
        .iter()
        .enumerate()
        .map(|(i, c)| {
            cells
                .iter()
                .map(|r| r[i].len())
                .max()
                .unwrap_or(0)
                .max(c.0.len())
        })
        .collect();
    let mut out = format!(
        "{} to {} ({}), by {}\n",
        report.from, report.to, report.time_zone, report.by
    );
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    out.push_str(&line(cols.iter().map(|c| c.0.to_string()).collect()));
    out.push('\n');
    for r in cells {
        out.push_str(&line(r));
        out.push('\n');
    }
    out
}

/// CSV with one header line; the total row is the last, keyed `total`.
pub fn csv(report: &Report) -> String {
    let cols = columns(report.by == "agent");
    let quote = |s: String| {
        if s.contains([',', '"', '\n']) {
            format!("\"{}\"", s.replace('"', "\"\""))
        } else {
            s
        }
    };
    let mut out = cols.iter().map(|c| c.0).collect::<Vec<_>>().join(",");
    out.push('\n');
    for r in report.rows.iter().chain([&report.total]) {
        out.push_str(
            &cols
                .iter()
                .map(|c| quote((c.2)(r)))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
    }
    out
}
