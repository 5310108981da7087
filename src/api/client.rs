//! `switchboard agents | calls | queues`: the live state over the API, as a table for
//! people or JSON for scripts. It is an API client like any other, with a token.

use serde_json::Value;

/// GETs `path` from the API at `base` with `token`; the JSON, or the problem's detail.
pub async fn get(base: &str, token: &str, path: &str) -> anyhow::Result<Value> {
    let url = format!("{}{path}", base.trim_end_matches('/'));
    let resp = reqwest::Client::new()
        .get(&url)
        .bearer_auth(token)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("{url}: {e} (is the server running with an api: section?)"))?;
    let status = resp.status();
    let text = resp.text().await?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    if !status.is_success() {
        let detail = body["detail"].as_str().unwrap_or(&text).to_string();
        anyhow::bail!("{url}: {status}: {detail}");
    }
    Ok(body)
}

fn cell(v: &Value) -> String {
    match v {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(cell).collect::<Vec<_>>().join(","),
        other => other.to_string(),
    }
}

fn secs(ms: &Value) -> String {
    ms.as_i64()
        .map(|ms| format!("{}s", ms / 1000))
        .unwrap_or_else(|| "-".into())
}

fn render(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut width: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (i, c) in r.iter().enumerate() {
            width[i] = width[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<w$}", w = width[i]))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.into_iter().map(line));
    out.join("\n")
}

/// The table for `what` (agents, calls, queues) from the API's JSON list.
pub fn table(what: &str, list: &Value) -> String {
    let items = list.as_array().cloned().unwrap_or_default();
    match what {
        "agents" => render(
            &[
                "EXT",
                "NAME",
                "STATE",
                "REASON",
                "CALL",
                "QUEUES",
                "CALLS TODAY",
            ],
            items
                .iter()
                .map(|a| {
                    vec![
                        cell(&a["extension"]),
                        cell(&a["name"]),
                        cell(&a["state"]),
                        cell(&a["reason"]),
                        cell(&a["call_uuid"]),
                        cell(&a["queues"]),
                        cell(&a["calls_today"]),
                    ]
                })
                .collect(),
        ),
        "calls" => render(
            &[
                "CALL",
                "CALLER",
                "DIALED",
                "PHASE",
                "QUEUE",
                "AGENT",
                "RECORDING",
            ],
            items
                .iter()
                .map(|c| {
                    vec![
                        cell(&c["call_uuid"]),
                        cell(&c["caller"]),
                        cell(&c["dialed"]),
                        cell(&c["phase"]),
                        cell(&c["queue"]),
                        cell(&c["agent"]),
                        cell(&c["recording"]),
                    ]
                })
                .collect(),
        ),
        _ => render(
            &[
                "QUEUE",
                "WAITING",
                "LONGEST",
                "READY",
                "BUSY",
                "WRAP-UP",
                "PAUSED",
                "OFFERED",
                "ANSWERED",
                "ABANDONED",
                "SERVICE LEVEL",
            ],
            items
                .iter()
                .map(|q| {
                    let today = &q["today"];
                    vec![
                        cell(&q["name"]),
                        cell(&q["waiting"]),
                        secs(&q["longest_wait_ms"]),
                        cell(&q["agents"]["ready"]),
                        cell(&q["agents"]["busy"]),
                        cell(&q["agents"]["wrap_up"]),
                        cell(&q["agents"]["paused"]),
                        cell(&today["offered"]),
                        cell(&today["answered"]),
                        cell(&today["abandoned"]),
                        today["service_level"]
                            .as_f64()
                            .map(|v| {
                                format!(
                                    "{:.1}% ({} s)",
                                    v * 100.0,
                                    today["service_level_threshold_secs"]
                                )
                            })
                            .unwrap_or_else(|| "-".into()),
                    ]
                })
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_their_columns_and_show_missing_values_as_a_dash() {
        let agents = serde_json::json!([
            {"extension": "2001", "name": "Agent 2001", "state": "ready", "reason": null,
             "call_uuid": null, "queues": ["billing", "support"], "calls_today": 3},
            {"extension": "2002", "name": "Agent 2002", "state": "not_ready", "reason": "lunch",
             "call_uuid": null, "queues": ["support"], "calls_today": 12},
        ]);
        let t = table("agents", &agents);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        assert!(
            lines[1].starts_with("2001  Agent 2001  ready      -"),
            "{t}"
        );
        assert!(lines[2].contains("not_ready  lunch"), "{t}");
        assert!(lines[1].contains("billing,support"), "{t}");
        // Every column starts at the same offset on every line.
        let at = lines[0].find("STATE").unwrap();
        assert_eq!(&lines[2][at..at + 9], "not_ready");
    }
}
