//! Reports over real calls: SIPp callers abandon before and after the short-abandon
//! threshold, are answered by a SIPp agent, get dispositions and call again (a repeat
//! contact); the agent takes a break. Every figure the API and the CLI report equals a
//! computation by hand from the event log of the run, and a restart in the middle of
//! the day changes no figure of the part before it.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::api::{Api, ADMIN, REPORTING};
use common::{now_ms, queue_server, switchboard_bin, Server, ServerConfig, Sipp};
use serde_json::{json, Value};

fn stamp(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).unwrap().to_string()
}

fn set_state(api: &Api, state: &str, reason: Option<&str>) {
    let r = api.post(
        "/api/v1/agents/2001/state",
        ADMIN,
        json!({ "state": state, "reason": reason }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

fn answered_call(server: &Server, api: &Api, before: usize, code: &str) -> String {
    let agent = server.agent_phone("2001", 1, 1_500, 30);
    Sipp::new("uac_queue_patience.xml")
        .service("100")
        .run(server)
        .assert_ok(server, "a caller the agent answers");
    agent.wait(Duration::from_secs(10));
    let records = server.wait_for_calls(before + 1, Duration::from_secs(10));
    let uuid = records
        .iter()
        .filter(|r| r.disposition.as_deref() == Some("answered"))
        .max_by_key(|r| r.id)
        .and_then(|r| r.call_uuid.clone())
        .unwrap();
    let r = api.post(
        &format!("/api/v1/calls/{uuid}/disposition"),
        ADMIN,
        json!({ "code": code }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    uuid
}

fn report(api: &Api, slice: &str, from: i64, to: i64, interval: &str) -> Value {
    api.ok(
        &format!(
            "/api/v1/reports/{slice}?from={}&to={}{interval}",
            stamp(from),
            stamp(to)
        ),
        REPORTING,
    )
}

fn close(got: &Value, want: f64, what: &str) {
    let got = got.as_f64().unwrap_or_else(|| panic!("{what}: no figure"));
    assert!(
        (got - want).abs() < 1e-9,
        "{what}: report {got}, by hand {want}"
    );
}

#[test]
fn figures_over_real_calls_equal_the_hand_computation_and_survive_a_restart() {
    let (flows, mut server) = queue_server(
        "billing",
        &["  - { name: billing, strategy: longest_idle, ring_timeout_secs: 5, wrap_up_secs: 1, members: [\"2001\"] }"],
        ServerConfig {
            api: true,
            rtp_timeout_secs: Some(0),
            extra_yaml: vec!["reports: { short_abandon_secs: 2, fcr_window_days: 7, service_level: \"80/20\" }".into()],
            ..ServerConfig::default()
        },
    );
    let api = Api::new(&server);
    let from = now_ms() - 1_000;

    // Nobody ready: one caller gives up after 1 s (a short abandon), one after 3 s.
    set_state(&api, "not_ready", Some("break"));
    Sipp::queue_caller_giving_up_after(flows.path(), 1_000)
        .service("100")
        .run(&server)
        .assert_ok(&server, "short abandon");
    Sipp::queue_caller_giving_up_after(flows.path(), 3_000)
        .service("100")
        .run(&server)
        .assert_ok(&server, "abandon");
    set_state(&api, "ready", None);
    // Answered, resolved; the same caller number calls again later (a repeat contact).
    let first = answered_call(&server, &api, 2, "resolved");

    // The figures up to now, before and after a restart.
    std::thread::sleep(Duration::from_millis(1_500)); // the wrap-up ends
    let mid = now_ms();
    let before_q = report(&api, "queues", from, mid, "&interval=15m");
    let before_a = report(&api, "agents", from, mid, "&interval=15m");
    server.restart();
    let api = Api::new(&server);
    assert_eq!(report(&api, "queues", from, mid, "&interval=15m"), before_q);
    assert_eq!(report(&api, "agents", from, mid, "&interval=15m"), before_a);

    let _second = answered_call(&server, &api, 3, "follow_up");
    std::thread::sleep(Duration::from_millis(1_500));
    let to = now_ms();

    // By hand, from the event log of the run.
    let events = api.all_events(REPORTING, 0);
    let of = |kind: &str| -> Vec<&Value> { events.iter().filter(|e| e["type"] == kind).collect() };
    let wait = |e: &&Value| e["data"]["wait_ms"].as_i64().unwrap();
    let answered: Vec<i64> = of("queue.answered").iter().map(wait).collect();
    let abandoned: Vec<i64> = of("queue.abandoned").iter().map(wait).collect();
    assert_eq!(
        (answered.len(), abandoned.len()),
        (2, 2),
        "the run went as planned"
    );
    let short = abandoned.iter().filter(|w| **w < 2_000).count();
    assert_eq!(short, 1, "one abandon under 2 s: {abandoned:?}");
    let offered = of("queue.entered").len();
    assert_eq!(offered, 4);
    let within = answered.iter().filter(|w| **w <= 20_000).count();
    let talk: i64 = of("queue.completed")
        .iter()
        .map(|e| e["data"]["talk_ms"].as_i64().unwrap())
        .sum();
    let acw: i64 = of("agent.wrap_up_ended")
        .iter()
        .map(|e| e["data"]["talk_ms"].as_i64().unwrap())
        .sum();
    // The agent's time: each agent.state lasts until the next (or a server stop/start).
    let mut spans: BTreeMap<String, i64> = BTreeMap::new();
    let mut open: Option<(String, i64)> = None;
    for e in &events {
        let at = e["at_ms"].as_i64().unwrap();
        let kind = e["type"].as_str().unwrap();
        let is_agent = kind == "agent.state" && e["agent"] == "2001";
        if is_agent || kind == "server.stopped" {
            if let Some((state, since)) = open.take() {
                let (a, b) = (since.max(from), at.min(to));
                if b > a && state != "logged_out" {
                    *spans.entry(state).or_default() += b - a;
                }
            }
        }
        if is_agent {
            let reason = e["data"]["reason"]
                .as_str()
                .map(|r| format!(":{r}"))
                .unwrap_or_default();
            open = Some((
                format!("{}{reason}", e["data"]["state"].as_str().unwrap()),
                at,
            ));
        }
    }
    if let Some((state, since)) = open {
        *spans.entry(state).or_default() += to - since.max(from);
    }
    let secs = |k: &str| spans.get(k).copied().unwrap_or(0) as f64 / 1000.0;
    let logged_in: f64 = spans.values().sum::<i64>() as f64 / 1000.0;
    let handling = secs("on_call") + secs("wrap_up");
    let not_ready = secs("not_ready:break");
    assert!(
        not_ready > 3.0,
        "the break lasted over the two abandons: {spans:?}"
    );

    let q = report(&api, "queues", from, to, "");
    let b = q["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "billing")
        .unwrap();
    assert_eq!(b["offered"], 4);
    assert_eq!(b["answered"], 2);
    assert_eq!(b["abandoned"], 2);
    assert_eq!(b["short_abandoned"], 1);
    close(
        &b["service_level"],
        within as f64 / (offered - short) as f64,
        "service level",
    );
    close(&b["abandon_rate"], 1.0 / 3.0, "abandon rate");
    close(
        &b["asa_secs"],
        answered.iter().sum::<i64>() as f64 / 2.0 / 1000.0,
        "ASA",
    );
    let longest = answered.iter().chain(&abandoned).max().unwrap();
    close(
        &b["longest_wait_secs"],
        *longest as f64 / 1000.0,
        "longest wait",
    );
    let long_abandon: Vec<&i64> = abandoned.iter().filter(|w| **w >= 2_000).collect();
    close(
        &b["average_abandon_secs"],
        *long_abandon[0] as f64 / 1000.0,
        "average abandon",
    );
    assert_eq!(b["handled"], 2);
    close(&b["aht_secs"], (talk + acw) as f64 / 2.0 / 1000.0, "AHT");
    close(&b["acw_secs"], acw as f64 / 2.0 / 1000.0, "ACW");
    // One resolved, one follow-up; the first caller called again (same number).
    close(&b["fcr_by_disposition"], 0.5, "FCR by disposition");
    assert_eq!(b["repeat_contacts"], 1);
    close(&b["fcr_by_repeat"], 0.5, "FCR by repeat contacts");

    let a = report(&api, "agents", from, to, "");
    let row = a["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["key"] == "2001")
        .unwrap();
    assert_eq!(row["handled"], 2);
    close(
        &row["time"]["not_ready_by_reason"]["break"],
        not_ready,
        "break time",
    );
    close(&row["time"]["logged_in_secs"], logged_in, "logged-in time");
    close(
        &row["time"]["occupancy"],
        handling / (logged_in - not_ready),
        "occupancy",
    );

    // The CLI gives the same figures, and explains the routing.
    let cli = std::process::Command::new(switchboard_bin())
        .args([
            "report",
            "--format",
            "json",
            "--from",
            &stamp(from),
            "--to",
            &stamp(to),
        ])
        .args(["--short-abandon-secs", "2"])
        .args(server.store_source_args())
        .output()
        .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    let cli: Value = serde_json::from_slice(&cli.stdout).unwrap();
    assert_eq!(cli["rows"], q["rows"], "CLI and API agree");
    let explain = std::process::Command::new(switchboard_bin())
        .args(["explain", &first])
        .args(server.store_source_args())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&explain.stdout);
    assert!(explain.status.success(), "{text}");
    assert!(text.contains("2001 chosen: idle"), "{text}");
    assert!(
        text.contains("the only ready agent who could take it"),
        "{text}"
    );
    let r = api.ok(&format!("/api/v1/calls/{first}/explain"), REPORTING);
    assert_eq!(r["decisions"][0]["chosen"][0], "2001", "{r}");

    // Staffing: the worked example (10 erlangs, 80/20) needs 14 agents; from the log,
    // the interval's measured calls and handle time.
    let staffing = |args: &[&str]| -> Value {
        let out = std::process::Command::new(switchboard_bin())
            .args(["staffing", "--queue", "billing", "--format", "json"])
            .args(server.store_source_args())
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let given = staffing(&[
        "--calls",
        "200",
        "--aht-secs",
        "180",
        "--interval",
        "1h",
        "--target",
        "80/20",
    ]);
    assert_eq!(given[0]["agents"], 14, "{given}");
    close(&given[0]["erlangs"], 10.0, "erlangs");
    let measured = staffing(&[
        "--from",
        &stamp(from),
        "--to",
        &stamp(to),
        "--interval",
        "1d",
        "--short-abandon-secs",
        "2",
    ]);
    let rows = measured.as_array().unwrap();
    // One row per day the run touched (two only if it crossed midnight).
    let calls: f64 = rows.iter().map(|r| r["calls"].as_f64().unwrap()).sum();
    close(&json!(calls), 4.0, "measured calls");
    if rows.len() == 1 {
        close(
            &rows[0]["aht_secs"],
            b["aht_secs"].as_f64().unwrap(),
            "measured AHT",
        );
    }
    assert!(rows[0]["agents"].as_u64().unwrap() >= 1);
    let plan = api.ok(
        "/api/v1/staffing?queue=billing&calls=200&aht_secs=180&interval=1h",
        REPORTING,
    );
    assert_eq!(plan["rows"][0]["agents"], 14, "{plan}");
}
