//! `/metrics` scraped by a real Prometheus server during a 50-call run: the live gauges
//! it stored equal what the control plane says at the same moment, and the counters
//! add up to the call records afterwards.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::api::{Api, REPORTING};
use common::{alloc_ports, queue_server, require_tool, ServerConfig, Sipp};
use serde_json::Value;

const CALLERS: u32 = 50;

/// A Prometheus server of our own, scraping the API every second; killed on drop.
struct Prometheus {
    child: Child,
    base: String,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    fn start(api_port: u16, token: &str) -> Prometheus {
        let bin = require_tool("prometheus", "prometheus");
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global: {{ scrape_interval: 1s, evaluation_interval: 1s }}\n\
                 scrape_configs:\n\
                 \x20 - job_name: switchboard\n\
                 \x20   scrape_interval: 1s\n\
                 \x20   scrape_timeout: 900ms\n\
                 \x20   metrics_path: /metrics\n\
                 \x20   authorization: {{ credentials: {token} }}\n\
                 \x20   static_configs: [{{ targets: [\"127.0.0.1:{api_port}\"] }}]\n"
            ),
        )
        .unwrap();
        let port = alloc_ports(1);
        let child = Command::new(bin)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus {
            child,
            base: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        // Up, and scraping us successfully (the token was accepted).
        p.wait_until(
            "the first successful scrape",
            Duration::from_secs(30),
            |p| p.scalar("up{job=\"switchboard\"}") == Some(1.0),
        );
        p
    }

    /// Instant query; the result vector.
    fn query(&self, q: &str) -> Vec<Value> {
        self.check(q)
            .ok()
            .and_then(|v| v["data"]["result"].as_array().cloned())
            .unwrap_or_default()
    }

    /// Prometheus's answer to an instant query, or its error if it refuses it.
    fn check(&self, q: &str) -> Result<Value, String> {
        let url = format!("{}/api/v1/query", self.base);
        let resp = ureq::get(&url)
            .config()
            .http_status_as_error(false)
            .build()
            .query("query", q)
            .call()
            .map_err(|e| e.to_string())?;
        let v: Value = resp.into_body().read_json().map_err(|e| e.to_string())?;
        match v["status"].as_str() {
            Some("success") => Ok(v),
            _ => Err(v.to_string()),
        }
    }

    /// The value of a query that yields one series.
    fn scalar(&self, q: &str) -> Option<f64> {
        let r = self.query(q);
        (r.len() == 1).then(|| r[0]["value"][1].as_str()?.parse().ok())?
    }

    /// The value of each series of `q` by the value of `label`.
    fn by(&self, q: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
        self.query(q)
            .iter()
            .map(|s| {
                (
                    s["metric"][label].as_str().unwrap_or_default().to_string(),
                    s["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    fn wait_until(&self, what: &str, timeout: Duration, done: impl Fn(&Prometheus) -> bool) {
        let end = Instant::now() + timeout;
        while !done(self) {
            assert!(Instant::now() < end, "Prometheus: never saw {what}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the control plane says is live: (waiting in billing, agents by state, calls).
fn api_state(api: &Api) -> (f64, std::collections::BTreeMap<String, f64>, f64) {
    let queues = api.ok("/api/v1/queues", REPORTING);
    let billing = queues
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "billing")
        .unwrap()["waiting"]
        .as_f64()
        .unwrap();
    let mut states = std::collections::BTreeMap::new();
    for a in api.ok("/api/v1/agents", REPORTING).as_array().unwrap() {
        // The API shows a held call as on_hold; the ACD (and the gauge) as on_call.
        let s = match a["state"].as_str().unwrap() {
            "on_hold" => "on_call",
            s => s,
        };
        *states.entry(s.to_string()).or_insert(0.0) += 1.0;
    }
    let calls = api.ok("/api/v1/calls", REPORTING).as_array().unwrap().len() as f64;
    (billing, states, calls)
}

#[test]
fn prometheus_scrapes_live_gauges_equal_to_the_api_during_a_fifty_call_run() {
    let (_flows, server) = queue_server(
        "billing",
        &["  - { name: billing, strategy: longest_idle, ring_timeout_secs: 5, wrap_up_secs: 0, members: [\"2001\", \"2002\", \"2003\"] }"],
        ServerConfig {
            rtp_port_count: 400,
            rtp_timeout_secs: Some(0),
            env: vec![("RUST_LOG".into(), "warn".into())],
            api: true,
            ..ServerConfig::default()
        },
    );
    let api = Api::new(&server);
    let prom = Prometheus::start(server.api_port.unwrap(), REPORTING);

    // Each agent answers one call and talks 12 s (its BYE comes well before its caller
    // would give up); the 50 callers arrive within a second and give up after 20 s of
    // waiting. From the third answer on, nothing changes for about 10 s: 3 agents on
    // calls, 47 callers waiting, 50 calls in progress.
    let agents: Vec<_> = ["2001", "2002", "2003"]
        .iter()
        .map(|ext| server.agent_phone(ext, 1, 12_000, 60))
        .collect();
    let work = tempfile::tempdir().unwrap();
    let callers = Sipp::queue_caller_giving_up_after(work.path(), 20_000)
        .service("100")
        .calls(CALLERS)
        .timeout_secs(60)
        .no_message_trace()
        .args(&["-r", "100", "-l", &CALLERS.to_string()])
        .spawn(&server);

    let steady = api.wait_for("/api/v1/queues", REPORTING, Duration::from_secs(10), |q| {
        q.as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "billing" && q["waiting"] == 47)
    });
    assert!(!steady.is_null());
    let before = api_state(&api);
    assert_eq!(before.0, 47.0, "{before:?}");
    assert_eq!(before.1.get("on_call"), Some(&3.0), "{before:?}");
    assert_eq!(before.2, 50.0, "{before:?}");
    // A scrape that started after the state settled.
    let settled = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    prom.wait_until(
        "a scrape after the state settled",
        Duration::from_secs(10),
        |p| {
            p.scalar("timestamp(switchboard_calls_in_progress)")
                .is_some_and(|t| t > settled + 0.1)
        },
    );
    let waiting = prom.scalar("switchboard_queue_callers{queue=\"billing\"}");
    let calls = prom.scalar("switchboard_calls_in_progress");
    let agents_by_state = prom.by("switchboard_agents", "state");
    let longest = prom.scalar("switchboard_queue_longest_wait_seconds{queue=\"billing\"}");
    let members = prom.by("switchboard_queue_agents{queue=\"billing\"}", "state");
    let after = api_state(&api);
    assert_eq!(before, after, "the state moved while Prometheus was read");

    assert_eq!(waiting, Some(before.0), "waiting in billing");
    assert_eq!(calls, Some(before.2), "calls in progress");
    for (state, n) in &agents_by_state {
        assert_eq!(
            before.1.get(state).copied().unwrap_or(0.0),
            *n,
            "agents {state}: Prometheus {agents_by_state:?}, API {:?}",
            before.1
        );
    }
    assert_eq!(agents_by_state.values().sum::<f64>(), 3.0);
    assert_eq!(members.get("on_call"), Some(&3.0), "{members:?}");
    assert!(longest.is_some_and(|l| l > 0.5 && l < 20.0), "{longest:?}");

    // Afterwards: every call ended, and the counters say how, as the records do.
    callers
        .wait(Duration::from_secs(60))
        .assert_ok(&server, "50 callers");
    for a in agents {
        a.kill();
    }
    let records = server.wait_for_calls(CALLERS as usize, Duration::from_secs(20));
    let mut by_disposition = std::collections::BTreeMap::new();
    for r in &records {
        *by_disposition
            .entry(r.disposition.clone().unwrap_or_default())
            .or_insert(0.0) += 1.0;
    }
    prom.wait_until("every call counted", Duration::from_secs(10), |p| {
        p.scalar("sum(switchboard_calls_ended_total)") == Some(f64::from(CALLERS))
    });
    assert_eq!(
        prom.by("switchboard_calls_ended_total", "disposition"),
        by_disposition
    );
    // 47 abandoned waits and 3 answered ones, each in the wait histogram.
    let waits = prom.by("switchboard_queue_wait_seconds_count", "outcome");
    assert_eq!(
        waits.get("answered").copied().unwrap_or(0.0)
            + waits.get("abandoned").copied().unwrap_or(0.0),
        50.0,
        "{waits:?}"
    );
    assert!(
        waits.get("abandoned").copied().unwrap_or(0.0) >= 47.0,
        "{waits:?}"
    );
    // Every INVITE was answered with a 200 by the IVR: SIP responses were counted.
    let ok = prom
        .scalar("switchboard_sip_responses_sent_total{code=\"200\"}")
        .unwrap_or(0.0);
    assert!(ok >= f64::from(CALLERS), "200s sent: {ok}");

    // The shipped Grafana dashboard asks only for what we export, in valid PromQL.
    let exposition = api.get("/metrics", REPORTING).text;
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/docs/grafana-dashboard.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let name = regex::Regex::new(r"switchboard_[a-z_]+").unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            prom.check(expr)
                .unwrap_or_else(|e| panic!("panel {}: {expr}: {e}", panel["title"]));
            for m in name.find_iter(expr) {
                let base = ["_bucket", "_count", "_sum", "_total"]
                    .iter()
                    .fold(m.as_str(), |n, s| n.strip_suffix(s).unwrap_or(n));
                assert!(
                    exposition.contains(&format!("# TYPE {base} ")),
                    "panel {} uses {}, which /metrics does not export",
                    panel["title"],
                    m.as_str()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 10, "{checked} dashboard queries");
}
