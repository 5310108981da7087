//! The web console in a real headless Chromium: log in, the wallboard follows a real
//! SIPp caller within a second of the events, keeps following after its connection is
//! cut and restored, passes an axe-core accessibility check, and refuses agents.

mod common;

use std::time::Duration;

use common::api::{Api, ADMIN, AGENT_2001, REPORTING};
use common::browser::{Browser, CutProxy};
use common::{flow_queue_server, now_ms, queue_server, ServerConfig, Sipp};
use serde_json::{json, Value};

const WAITING: &str = "[data-queue=billing] [data-figure=waiting]";
const SERVICE_LEVEL: &str = "[data-queue=billing] [data-figure=service_level]";
const ABANDON_RATE: &str = "[data-queue=billing] [data-figure=abandon_rate]";

/// The time of the newest event of `kind`.
fn last_event_ms(api: &Api, kind: &str) -> i64 {
    api.all_events(REPORTING, 0)
        .iter()
        .rev()
        .find(|e| e["type"] == kind)
        .and_then(|e| e["at_ms"].as_i64())
        .unwrap_or_else(|| panic!("no {kind} event"))
}

fn pause(api: &Api) {
    let r = api.post(
        "/api/v1/agents/2001/state",
        ADMIN,
        json!({ "state": "not_ready", "reason": "break" }),
    );
    assert_eq!(r.status, 200, "{}", r.text);
}

fn no_serious_violations(b: &Browser, page: &str) {
    let v = b.serious_accessibility_violations();
    assert!(v.is_empty(), "{page}: axe-core found {:#}", Value::Array(v));
}

fn screenshot(b: &Browser, name: &str) {
    b.screenshot(
        &std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("docs/screenshots")
            .join(name),
    );
}

#[test]
fn the_wallboard_follows_real_calls_within_a_second_and_after_a_cut_connection() {
    let _turn = common::browser::turn();
    let (_flows, server) = queue_server(
        "billing",
        &["  - { name: billing, strategy: longest_idle, ring_timeout_secs: 5, wrap_up_secs: 0, members: [\"2001\"] }"],
        ServerConfig {
            api: true,
            rtp_timeout_secs: Some(0),
            extra_yaml: vec!["reports: { short_abandon_secs: 1 }".into()],
            ..ServerConfig::default()
        },
    );
    let api = Api::new(&server);
    pause(&api); // so callers wait
    let proxy = CutProxy::start(server.api_port.unwrap());
    let base = format!("http://127.0.0.1:{}", proxy.port);
    let b = Browser::start();

    // Not logged in: the login page, which brings us back.
    b.goto(&format!("{base}/wallboard"));
    b.wait_text("#title", Duration::from_secs(5), |t| t == "Switchboard");
    assert!(b.url().contains("/login?next="), "{}", b.url());
    no_serious_violations(&b, "login");
    b.fill("#token", REPORTING);
    b.click("#submit");
    b.wait_text("#live", Duration::from_secs(10), |t| t == "live");
    assert!(b.url().ends_with("/wallboard"), "{}", b.url());
    b.wait_text(WAITING, Duration::from_secs(5), |t| t == "0");

    // A caller waits: the count changes within a second of the event.
    let caller = Sipp::new("uac_queue_impatient.xml")
        .service("100")
        .spawn(&server);
    b.wait_text(WAITING, Duration::from_secs(10), |t| t == "1");
    let seen = now_ms();
    let entered = last_event_ms(&api, "queue.entered");
    assert!(
        seen - entered < 1_000,
        "shown {} ms after queue.entered",
        seen - entered
    );
    assert_eq!(
        b.text("[data-queue=billing] [data-figure=target]")
            .as_deref(),
        Some("80% in 20s")
    );
    no_serious_violations(&b, "wallboard");

    // It gives up after 3 s: nobody waits, 1 of 1 abandoned, service level 0 %.
    caller
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "impatient caller");
    b.wait_text(ABANDON_RATE, Duration::from_secs(5), |t| t == "100%");
    let seen = now_ms();
    let abandoned = last_event_ms(&api, "queue.abandoned");
    assert!(
        seen - abandoned < 1_000,
        "shown {} ms after queue.abandoned",
        seen - abandoned
    );
    assert_eq!(b.text(WAITING).as_deref(), Some("0"));
    assert_eq!(b.text(SERVICE_LEVEL).as_deref(), Some("0%"));

    // The connection is cut; a caller arrives meanwhile; once it is back the page
    // catches up by itself.
    proxy.cut();
    b.wait_text("#live", Duration::from_secs(10), |t| t == "reconnecting…");
    let caller = Sipp::new("uac_queue_impatient.xml")
        .service("100")
        .spawn(&server);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(b.text(WAITING).as_deref(), Some("0"), "no news while cut");
    proxy.restore();
    b.wait_text("#live", Duration::from_secs(15), |t| t == "live");
    b.wait_text(WAITING, Duration::from_secs(2), |t| t == "1");
    screenshot(&b, "wallboard.png");
    caller
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "second caller");
    b.wait_text(WAITING, Duration::from_secs(5), |t| t == "0");
    let seen = now_ms();
    let abandoned = last_event_ms(&api, "queue.abandoned");
    assert!(
        seen - abandoned < 1_000,
        "after the cut: shown {} ms after the event",
        seen - abandoned
    );

    // The table view says the same.
    b.click("#view");
    b.wait_text(
        "tr[data-queue=billing] td:nth-child(2)",
        Duration::from_secs(2),
        |t| t == "0",
    );
    no_serious_violations(&b, "wallboard table view");
    // Measured, not asserted (BENCHMARKS.md keeps the figure): the first paint.
    let paint = b.execute(
        "return (performance.getEntriesByName('first-contentful-paint')[0] || {}).startTime || null",
    );
    eprintln!("wallboard first contentful paint: {paint} ms");

    // The reports page: the day's figures of the same calls, and their CSV.
    b.goto(&format!("{base}/reports"));
    b.wait_text(
        "#rows tr[data-key=billing] [data-column=offered]",
        Duration::from_secs(5),
        |t| t == "2",
    );
    assert_eq!(
        b.text("#rows tr[data-key=billing] [data-column=abandoned]")
            .as_deref(),
        Some("2")
    );
    let csv = b.execute_async(
        "const done = arguments[arguments.length - 1];\
         fetch(document.getElementById('csv').href).then(r => r.text()).then(done);",
    );
    let csv = csv.as_str().unwrap();
    assert!(
        csv.starts_with("key,interval,offered,answered,abandoned"),
        "{csv}"
    );
    assert!(
        csv.lines().any(|l| l.starts_with("billing,,2,0,2,")),
        "{csv}"
    );
    no_serious_violations(&b, "reports");
}

#[test]
fn an_agent_lands_on_its_desktop_and_is_not_shown_the_wallboard() {
    let _turn = common::browser::turn();
    let (_flows, server) = queue_server(
        "billing",
        &["  - { name: billing, members: [\"2001\"] }"],
        ServerConfig {
            api: true,
            ..ServerConfig::default()
        },
    );
    let base = format!("http://127.0.0.1:{}", server.api_port.unwrap());
    let b = Browser::start();
    b.goto(&format!("{base}/login"));
    b.fill("#extension", "2001");
    b.fill("#password", "secret2001");
    b.click("#submit");
    // An agent lands on its desktop, and is not shown the wallboard.
    b.wait_text("h1", Duration::from_secs(5), |t| t == "Agent 2001");
    b.goto(&format!("{base}/wallboard"));
    b.wait_text("h1", Duration::from_secs(5), |t| t == "Not for this login");
    // The API refuses the agent's token the same way for its reports.
    let api = Api::new(&server);
    assert_eq!(api.get("/api/v1/reports/queues", AGENT_2001).status, 403);
    // A wrong token at the login form gets a plain answer.
    b.goto(&format!("{base}/login"));
    b.fill("#token", "sb_wrong");
    b.click("#submit");
    b.wait_text("#error", Duration::from_secs(5), |t| t == "wrong token");
}

/// The IVR tags the caller before queueing it: what the screen pop must show.
const TAGGING_FLOW: &str = "name: main\nentry: tag\nprompts: en\nnodes:\n  tag:\n    set:\n      vars: { tier: gold, reason: billing }\n      next: wait\n  wait:\n    queue:\n      queue: billing\n      next: bye\n  bye:\n    hangup:\n";

#[test]
fn the_agent_desktop_pops_the_caller_holds_and_closes_the_call_with_a_disposition() {
    let _turn = common::browser::turn();
    let (_flows, server) = flow_queue_server(
        TAGGING_FLOW,
        &["  - { name: billing, strategy: longest_idle, ring_timeout_secs: 15, wrap_up_secs: 60, members: [\"2001\"] }"],
        ServerConfig {
            api: true,
            rtp_timeout_secs: Some(0),
            ..ServerConfig::default()
        },
    );
    let api = Api::new(&server);
    let base = format!("http://127.0.0.1:{}", server.api_port.unwrap());
    let b = Browser::start();
    b.goto(&format!("{base}/agent"));
    b.wait_text("#title", Duration::from_secs(5), |t| t == "Switchboard");
    b.fill("#extension", "2001");
    b.fill("#password", "secret2001");
    b.click("#submit");
    b.wait_text("#live", Duration::from_secs(10), |t| t == "live");
    b.wait_text("#state", Duration::from_secs(5), |t| t == "ready");

    // Not ready (break) from the desktop; a caller gives up meanwhile: its history.
    b.click("#not-ready");
    b.wait_text("#state", Duration::from_secs(5), |t| {
        t == "not ready (break)"
    });
    Sipp::new("uac_queue_impatient.xml")
        .service("100")
        .run(&server)
        .assert_ok(&server, "an earlier call from the same number");

    // Ready, with a phone that answers; the same number calls again.
    let phone = server.agent_phone("2001", 1, 8_000, 40);
    b.click("#ready");
    b.wait_text("#state", Duration::from_secs(5), |t| t == "ready");
    let caller = Sipp::new("uac_queue_patience.xml")
        .service("100")
        .spawn(&server);
    b.wait_text("#caller", Duration::from_secs(10), |t| t == "+15550100");
    b.wait_text("[data-variable=tier]", Duration::from_secs(2), |t| {
        t == "gold"
    });
    b.wait_text("#history", Duration::from_secs(2), |t| {
        t == "Called once in 7 days, last: abandoned."
    });
    b.wait_text("#phase", Duration::from_secs(5), |t| t == "talking");
    screenshot(&b, "agent-desktop.png");
    no_serious_violations(&b, "agent desktop in a call");

    // Hold and resume from the desktop: the caller hears music meanwhile.
    b.click("#hold");
    b.wait_text("#phase", Duration::from_secs(3), |t| t == "held");
    b.click("#hold");
    b.wait_text("#phase", Duration::from_secs(3), |t| t == "talking");
    let events = api.all_events(REPORTING, 0);
    let held = events
        .iter()
        .filter(|e| e["type"] == "call.held" && e["data"]["by"] == "api:2001")
        .count();
    assert_eq!(held, 1, "one hold by the desktop");

    // The agent's phone hangs up: wrap-up, a disposition with a note, then end it.
    b.wait_text("#state", Duration::from_secs(15), |t| t == "wrap up");
    let call = b.text("#caller").unwrap();
    assert_eq!(call, "+15550100", "the pop stays for after-call work");
    b.fill("#notes", "asked about the invoice");
    b.click("#save");
    b.wait_text("#saved", Duration::from_secs(5), |t| t == "Saved: resolved");
    b.click("#end-wrap");
    b.wait_text("#state", Duration::from_secs(5), |t| t == "ready");
    caller
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "the answered caller");
    phone.wait(Duration::from_secs(10));
    let records = api.ok("/api/v1/records?limit=10", REPORTING);
    let answered = records["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["disposition"] == "answered")
        .unwrap()
        .clone();
    assert_eq!(answered["outcome"]["code"], "resolved", "{answered}");
    assert_eq!(answered["outcome"]["note"], "asked about the invoice");
    // Its own figures: one handled call, resolved.
    b.wait_text("[data-figure=handled]", Duration::from_secs(5), |t| {
        t == "1"
    });
    b.wait_text("[data-figure=fcr]", Duration::from_secs(5), |t| t == "100%");
}

const CALLER_HZ: f64 = 440.0;
const AGENT_HZ: f64 = 700.0;
const SUPERVISOR_HZ: f64 = 1000.0;

#[test]
fn a_supervisor_whispers_from_the_console_and_its_phone_rings_and_hears_the_agent() {
    let _turn = common::browser::turn();
    use common::audio::{read_wav, tone_shares};
    use common::phone::{tone_wav, Phone};
    let server = common::Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let work = tempfile::tempdir().unwrap();
    let mut agent = Phone::agent(&server, "2001")
        .auto_answer()
        .source(&tone_wav(work.path(), AGENT_HZ as u32, 8000))
        .start(&server);
    let mut supervisor = Phone::agent(&server, "3001")
        .auto_answer()
        .source(&tone_wav(work.path(), SUPERVISOR_HZ as u32, 8000))
        .start(&server);
    let mut caller = Phone::dialler("caller")
        .source(&tone_wav(work.path(), CALLER_HZ as u32, 8000))
        .start(&server);
    caller.call(&server, "2001");
    caller.wait_established(Duration::from_secs(10));
    agent.wait_established(Duration::from_secs(10));

    let base = format!("http://127.0.0.1:{}", server.api_port.unwrap());
    let b = Browser::start();
    b.goto(&format!("{base}/"));
    b.wait_text("#title", Duration::from_secs(5), |t| t == "Switchboard");
    b.fill("#extension", "3001");
    b.fill("#password", "secret3001");
    b.click("#submit");
    b.wait_text("h1", Duration::from_secs(5), |t| t == "Supervisor 3001");
    b.wait_text("#live", Duration::from_secs(10), |t| t == "live");
    b.wait_text("#calls tr td:nth-child(4)", Duration::from_secs(5), |t| {
        t == "talking"
    });

    b.click("#calls tr [data-mode=whisper]");
    supervisor.wait_established(Duration::from_secs(10));
    let joined = std::time::Instant::now();
    b.wait_text("#calls tr td:nth-child(5)", Duration::from_secs(5), |t| {
        t == "3001: whisper"
    });
    screenshot(&b, "supervisor-console.png");
    no_serious_violations(&b, "supervisor console");
    // On another agent's behalf: not ready, lunch.
    b.execute("document.querySelector('#agents tr[data-agent=\"2002\"] select').value = 'not_ready:lunch';");
    b.click("#agents tr[data-agent=\"2002\"] button");
    b.wait_text(
        "#agents tr[data-agent=\"2002\"] td",
        Duration::from_secs(5),
        |t| t == "not ready (lunch)",
    );
    std::thread::sleep(Duration::from_secs(4));
    let whispered = joined.elapsed();
    supervisor.hangup();
    supervisor.wait_closed(Duration::from_secs(10));
    caller.hangup();
    caller.wait_closed(Duration::from_secs(10));
    agent.wait_closed(Duration::from_secs(10));

    // The supervisor heard the agent (and the caller); the agent heard the supervisor.
    let heard = read_wav(&supervisor.heard());
    let rate = heard.rate as usize;
    let from = rate; // a second after joining
    let to = (whispered.as_secs_f64() - 0.5).max(1.5) as usize * rate;
    let samples =
        &heard.channels[0][from.min(heard.channels[0].len())..to.min(heard.channels[0].len())];
    let mut t = tone_shares(samples, heard.rate, &[CALLER_HZ, AGENT_HZ, SUPERVISOR_HZ]);
    t.what = "what the supervisor heard while whispering".into();
    t.assert_hears(&[CALLER_HZ, AGENT_HZ], &[SUPERVISOR_HZ]);

    // The finished call's recording plays from the console.
    b.wait_text("#recordings tr th", Duration::from_secs(10), |t| {
        !t.is_empty()
    });
    let r = b.execute_async(
        "const done = arguments[arguments.length - 1];\
         const src = document.querySelector('#recordings audio').src;\
         fetch(src).then(r => done(r.status + ' ' + r.headers.get('content-type')));",
    );
    assert_eq!(r, json!("200 audio/wav"));
    caller.quit();
    agent.quit();
    supervisor.quit();
}

/// A menu, a queue, and a node nothing leads to (a warning of `check`).
const MENU_FLOW: &str = "name: main\nentry: menu\nprompts: en\nnodes:\n  menu:\n    menu:\n      prompts: [welcome]\n      options:\n        \"1\": wait\n        \"2\": bye\n      on_fail: bye\n  wait:\n    queue:\n      queue: billing\n      next: bye\n  orphan:\n    hangup:\n  bye:\n    hangup:\n";

#[test]
fn the_flows_view_draws_the_graph_marks_diagnostics_and_simulates() {
    let _turn = common::browser::turn();
    let (_flows, server) = flow_queue_server(
        MENU_FLOW,
        &["  - { name: billing, members: [\"2001\"] }"],
        ServerConfig {
            api: true,
            ..ServerConfig::default()
        },
    );
    let base = format!("http://127.0.0.1:{}", server.api_port.unwrap());
    let b = Browser::start();
    b.goto(&format!("{base}/flows"));
    b.wait_text("#title", Duration::from_secs(5), |t| t == "Switchboard");
    b.fill("#token", common::api::SUPERVISOR);
    b.click("#submit");
    b.wait_text("#live", Duration::from_secs(10), |t| {
        t == "1 flow(s) in force"
    });
    b.wait_text("#check li", Duration::from_secs(2), |t| {
        t.contains("warning:") && t.contains("node \"orphan\" is never reached")
    });
    // Four nodes, and the ways between them: 1 → wait, 2 and on_fail → bye (one line),
    // wait's next → bye.
    assert_eq!(
        b.execute("return document.querySelectorAll('#graph g[data-node]').length"),
        json!(4)
    );
    assert_eq!(
        b.execute("return document.querySelectorAll('#graph line').length"),
        json!(3)
    );
    let labels = b.execute(
        "return [...document.querySelectorAll('#graph text')].map(t => t.textContent).join('|')",
    );
    assert!(
        labels.as_str().unwrap().contains("\"2\" / on_fail"),
        "{labels}"
    );
    let marked =
        b.execute("return document.querySelector('#graph g[data-node=orphan]').dataset.diagnostic");
    assert!(
        marked.as_str().unwrap().contains("never reached"),
        "{marked}"
    );
    assert_eq!(
        b.execute(
            "return document.querySelector('#graph g[data-node=menu]').dataset.diagnostic || null"
        ),
        Value::Null
    );
    b.fill("#keys", "1");
    b.click("#run");
    b.wait_text("#trace", Duration::from_secs(5), |t| {
        t.contains("key 1") && t.contains("main/wait (queue)")
    });
    screenshot(&b, "flows-view.png");
    no_serious_violations(&b, "flows view");
}
