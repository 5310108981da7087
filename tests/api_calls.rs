//! The control plane with real calls: SIPp callers and agents on loopback, a real HTTP
//! client (and WebSocket and SSE clients) against the API, checked against the store.

mod common;

use std::time::{Duration, Instant};

use common::api::{self, Api};
use common::*;
use serde_json::{json, Value};

/// DID 100 → a flow that queues the caller in `billing`, then hangs up; DIDs 2001–2003
/// ring their extensions.
fn billing_server(members: &str, wrap_up_secs: u64) -> (tempfile::TempDir, Server) {
    let queue = format!(
        "  - {{ name: billing, strategy: longest_idle, ring_timeout_secs: 5, wrap_up_secs: {wrap_up_secs}, members: [{members}] }}"
    );
    queue_server(
        "billing",
        &[&queue],
        ServerConfig {
            rtp_timeout_secs: Some(0),
            api: true,
            ..ServerConfig::default()
        },
    )
}

/// A registered agent phone that answers each call and hangs up after `talk_ms`.
fn agent_phone(server: &Server, ext: &str, calls: u32, talk_ms: u64) -> SippProc {
    server.agent_phone(ext, calls, talk_ms, 60)
}

fn state_of(api: &Api, ext: &str) -> Value {
    api.ok(&format!("/api/v1/agents/{ext}"), api::SUPERVISOR)
}

#[test]
fn an_agent_made_not_ready_by_api_gets_no_offers_and_its_disposition_reaches_the_record() {
    let (_flows, server) = billing_server("\"2001\", \"2002\"", 60);
    let api = Api::new(&server);
    let since = api.ok("/api/v1/events/log?limit=1", api::REPORTING)["last_seq"]
        .as_u64()
        .unwrap();

    // The agent takes itself off the queue: lunch.
    let r = api.post(
        "/api/v1/agents/2001/state",
        api::AGENT_2001,
        json!({"state": "not_ready", "reason": "lunch"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["state"].as_str(), r.body["reason"].as_str()),
        (Some("not_ready"), Some("lunch"))
    );
    // An unknown reason is refused with the list, another agent's state is not its own.
    let r = api.post(
        "/api/v1/agents/2001/state",
        api::AGENT_2001,
        json!({"state": "not_ready", "reason": "nap"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    assert!(
        r.content_type.starts_with("application/problem+json"),
        "{}",
        r.content_type
    );
    assert!(
        r.body["detail"].as_str().unwrap().contains("lunch"),
        "{}",
        r.text
    );
    let r = api.post(
        "/api/v1/agents/2002/state",
        api::AGENT_2001,
        json!({"state": "logged_out"}),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api.post(
        "/api/v1/agents/2001/state",
        api::REPORTING,
        json!({"state": "ready"}),
    );
    assert_eq!(r.status, 403, "{}", r.text);

    // Two callers, one after the other: both go to 2002 although 2001 idled longer.
    let a2001 = agent_phone(&server, "2001", 1, 1000);
    let a2002 = agent_phone(&server, "2002", 2, 1500);
    for i in 0..2 {
        Sipp::new("uac_queue_patience.xml")
            .service("100")
            .timeout_secs(40)
            .run(&server)
            .assert_ok(&server, &format!("caller {i}"));
        if i == 0 {
            // 2002 is in wrap-up now; end it from the API so it takes the next caller.
            let r = api.post(
                "/api/v1/agents/2002/end-wrap-up",
                api::AGENT_2002,
                json!({}),
            );
            assert_eq!(r.status, 200, "{}", r.text);
            assert_eq!(r.body["state"], "ready", "{}", r.text);
        }
    }
    a2002
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "agent 2002 took both calls");
    let missed = a2001.kill();
    assert_eq!(
        missed.stat("SuccessfulCall(C)"),
        Some(0),
        "2001 was offered a call while not ready"
    );
    let rows = server.wait_for_calls(2, Duration::from_secs(10));
    assert!(
        rows.iter().all(|r| r.target.as_deref() == Some("2002")),
        "{rows:#?}"
    );

    // In wrap-up, the agent closes the last call with a disposition and a note.
    assert_eq!(state_of(&api, "2002")["state"], "wrap_up");
    let page = api.ok("/api/v1/records?agent=2002&limit=1", api::SUPERVISOR);
    let uuid = page["records"][0]["call_uuid"]
        .as_str()
        .unwrap()
        .to_string();
    let r = api.post(
        &format!("/api/v1/calls/{uuid}/disposition"),
        api::AGENT_2002,
        json!({"code": "follow_up", "note": "send the invoice copy"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    // Another agent can neither see nor close that call; an unknown code is refused.
    let r = api.get(&format!("/api/v1/calls/{uuid}"), api::AGENT_2001);
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api.post(
        &format!("/api/v1/calls/{uuid}/disposition"),
        api::AGENT_2001,
        json!({"code": "resolved"}),
    );
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api.post(
        &format!("/api/v1/calls/{uuid}/disposition"),
        api::AGENT_2002,
        json!({"code": "sorted"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    let call = api.ok(&format!("/api/v1/calls/{uuid}"), api::AGENT_2002);
    let outcome = &call["record"]["outcome"];
    assert_eq!(
        (
            outcome["code"].as_str(),
            outcome["resolved"].as_bool(),
            outcome["note"].as_str(),
            outcome["agent"].as_str()
        ),
        (
            Some("follow_up"),
            Some(false),
            Some("send the invoice copy"),
            Some("2002")
        ),
        "{call:#}"
    );
    // The store has it too, beside the untouched record.
    let stored = server
        .query(&format!(
            "SELECT code, note, agent FROM outcomes WHERE call_uuid = '{uuid}'"
        ))
        .unwrap();
    assert_eq!(
        stored,
        vec![vec![
            Some("follow_up".into()),
            Some("send the invoice copy".into()),
            Some("2002".into())
        ]]
    );
    // Filtered by outcome, and the agent's own record list shows only its calls.
    let page = api.ok("/api/v1/records?outcome=follow_up", api::REPORTING);
    assert_eq!(page["records"].as_array().unwrap().len(), 1, "{page:#}");
    let mine = api.ok("/api/v1/records", api::AGENT_2001);
    assert_eq!(mine["records"].as_array().unwrap().len(), 0, "{mine:#}");
    let r = api.get("/api/v1/records?agent=2002", api::AGENT_2001);
    assert_eq!(r.status, 403, "{}", r.text);
    // The caller's history for the next screen pop.
    let h = api.ok("/api/v1/callers/+15550100/history", api::AGENT_2002);
    assert_eq!(h["contacts"], 2, "{h:#}");
    assert_eq!(h["recent"][0]["outcome"]["code"], "follow_up", "{h:#}");

    // The event log tells the same story, with each state change's cause.
    let events = api.all_events(api::REPORTING, since);
    let states: Vec<(String, String, String)> = events
        .iter()
        // Start-up's own log-ins may be numbered after `since` was read.
        .filter(|e| e["type"] == "agent.state" && e["data"]["cause"] != "start-up")
        .map(|e| {
            (
                e["agent"].as_str().unwrap().to_string(),
                e["data"]["state"].as_str().unwrap().to_string(),
                e["data"]["cause"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        states[0],
        ("2001".into(), "not_ready".into(), "api:agent-2001".into()),
        "{states:#?}"
    );
    assert!(
        states.iter().all(|s| s.0 != "2001" || s.1 == "not_ready"),
        "{states:#?}"
    );
    assert!(
        states.contains(&("2002".into(), "ready".into(), "api:agent-2002".into())),
        "wrap-up ended by API: {states:#?}"
    );
    for kind in [
        "call.arrived",
        "call.queued",
        "queue.entered",
        "queue.offered",
        "queue.answered",
        "call.answered",
        "call.ended",
        "call.disposition",
    ] {
        assert!(
            events.iter().any(|e| e["type"] == kind),
            "no {kind} in {events:#?}"
        );
    }
    let disposition = events
        .iter()
        .find(|e| e["type"] == "call.disposition")
        .unwrap();
    assert_eq!(
        (disposition["call"].as_str(), disposition["agent"].as_str()),
        (Some(uuid.as_str()), Some("2002"))
    );
    // An agent token follows only its own events.
    let own = api.all_events(api::AGENT_2001, since);
    assert!(
        !own.is_empty() && own.iter().all(|e| e["agent"] == "2001"),
        "{own:#?}"
    );
}

/// Reads an SSE stream until `stop` says so; returns the events' JSON.
fn read_sse(api: &Api, query: &str, mut stop: impl FnMut(&[Value]) -> bool) -> Vec<Value> {
    use std::io::BufRead;
    let url = format!("{}/api/v1/events/stream?{query}", api.base);
    let resp = ureq::get(&url)
        .header("Authorization", format!("Bearer {}", api::REPORTING))
        .config()
        .timeout_global(Some(Duration::from_secs(3)))
        .build()
        .call()
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp
        .headers()
        .get("content-type")
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let reader = std::io::BufReader::new(resp.into_body().into_reader());
    let mut out = Vec::new();
    // A quiet stream ends the read at the timeout; the caller comes back with since.
    for line in reader.lines() {
        let Ok(line) = line else { break };
        if let Some(data) = line.strip_prefix("data:") {
            out.push(serde_json::from_str::<Value>(data.trim()).unwrap());
            if stop(&out) {
                break;
            }
        }
    }
    out
}

#[test]
fn a_stream_client_that_drops_and_reconnects_with_since_gets_exactly_the_log_in_order() {
    let (_flows, server) = billing_server("\"2001\", \"2002\"", 0);
    let api = Api::new(&server);
    let start = api.ok("/api/v1/events/log?limit=1", api::REPORTING)["last_seq"]
        .as_u64()
        .unwrap();

    // A WebSocket client follows the whole run from the start.
    let ws_url = format!(
        "ws://127.0.0.1:{}/api/v1/events?since={start}",
        server.api_port.unwrap()
    );
    let mut req =
        tungstenite::client::IntoClientRequest::into_client_request(ws_url.as_str()).unwrap();
    req.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", api::REPORTING).parse().unwrap(),
    );
    let stream = std::net::TcpStream::connect(("127.0.0.1", server.api_port.unwrap())).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (mut ws, _) = tungstenite::client(req, stream).unwrap();

    let agents = [
        agent_phone(&server, "2001", 10, 300),
        agent_phone(&server, "2002", 10, 300),
    ];
    let callers = Sipp::new("uac_queue_patience.xml")
        .service("100")
        .calls(20)
        .timeout_secs(60)
        .no_message_trace()
        .args(&["-r", "10", "-l", "20"])
        .spawn(&server);

    // An SSE client that hangs up after every 7 events and comes back with since.
    let mut seen: Vec<Value> = Vec::new();
    let mut since = start;
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut reconnects = 0;
    let mut callers = Some(callers);
    loop {
        let target = if callers.is_none() {
            Some(
                api.ok("/api/v1/events/log?limit=1", api::REPORTING)["last_seq"]
                    .as_u64()
                    .unwrap(),
            )
        } else {
            None
        };
        if target.is_some_and(|t| since >= t) {
            break;
        }
        let chunk = read_sse(&api, &format!("since={since}"), |got| {
            got.len() >= 7
                || target.is_some_and(|t| got.last().unwrap()["seq"].as_u64().unwrap() >= t)
        });
        since = chunk
            .last()
            .map(|e| e["seq"].as_u64().unwrap())
            .unwrap_or(since);
        seen.extend(chunk);
        reconnects += 1;
        if callers.as_ref().is_some()
            && seen.iter().filter(|e| e["type"] == "call.ended").count() >= 20
        {
            callers
                .take()
                .unwrap()
                .wait(Duration::from_secs(30))
                .assert_ok(&server, "20 callers");
            server.wait_for_calls(20, Duration::from_secs(10));
        }
        assert!(
            Instant::now() < deadline,
            "the stream never caught up: {} events",
            seen.len()
        );
    }
    for a in agents {
        a.wait(Duration::from_secs(30)).assert_ok(&server, "agents");
    }
    let stored = api.all_events(api::REPORTING, start);
    assert!(
        reconnects > 5,
        "the client reconnected only {reconnects} times"
    );
    assert_eq!(
        seen, stored,
        "what the reconnecting client saw differs from the log"
    );
    // No gaps: every number from start+1 on.
    for (i, e) in stored.iter().enumerate() {
        assert_eq!(
            e["seq"].as_u64().unwrap(),
            start + 1 + i as u64,
            "gap at {e}"
        );
    }
    // The queue log rows carry the same numbers as their events.
    let qlog = server
        .query(&format!(
            "SELECT seq, event FROM queue_log WHERE seq > {start} ORDER BY id"
        ))
        .unwrap();
    let queue_events: Vec<u64> = stored
        .iter()
        .filter(|e| e["data"]["event"].is_string())
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let qlog_seqs: Vec<u64> = qlog
        .iter()
        .map(|r| r[0].as_deref().unwrap().parse().unwrap())
        .collect();
    assert_eq!(qlog_seqs, queue_events);

    // The WebSocket client got the same events, in the same order.
    let mut over_ws = Vec::new();
    while over_ws.len() < stored.len() {
        if let tungstenite::Message::Text(t) = ws.read().unwrap() {
            over_ws.push(serde_json::from_str::<Value>(&t).unwrap());
        }
    }
    assert_eq!(over_ws, stored);
}

#[test]
fn logins_give_a_csrf_protected_session_and_brute_force_is_slowed_then_locked_out() {
    let (_flows, server) = billing_server("\"2001\"", 0);
    let api = Api::new(&server);
    let login = |ext: &str, pw: &str| {
        api.call(
            "POST",
            "/api/v1/login",
            None,
            &[],
            Some(&json!({"extension": ext, "password": pw})),
        )
    };
    let ok = login("2001", "secret2001");
    assert_eq!(ok.status, 200, "{}", ok.text);
    let cookie = ok.set_cookie.clone().expect("a session cookie");
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    let csrf = ok.body["csrf_token"].as_str().unwrap().to_string();
    let me = api.call("GET", "/api/v1/me", None, &[("Cookie", &session)], None);
    assert_eq!(
        (me.status, me.body["role"].as_str()),
        (200, Some("agent")),
        "{}",
        me.text
    );
    // A state change with the cookie alone is refused; with the CSRF token it goes through.
    let body = json!({"state": "not_ready", "reason": "break"});
    let r = api.call(
        "POST",
        "/api/v1/agents/2001/state",
        None,
        &[("Cookie", &session)],
        Some(&body),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api.call(
        "POST",
        "/api/v1/agents/2001/state",
        None,
        &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
        Some(&body),
    );
    assert_eq!(
        (r.status, r.body["state"].as_str()),
        (200, Some("not_ready")),
        "{}",
        r.text
    );

    // Wrong passwords and unknown users get the same answer, each a little later.
    let mut waits = Vec::new();
    for (ext, pw) in [
        ("2001", "nope"),
        ("9999", "secret2001"),
        ("2001", "nope2"),
        ("2001", "nope3"),
    ] {
        let t = Instant::now();
        let r = login(ext, pw);
        waits.push(t.elapsed());
        assert_eq!(r.status, 401, "{}", r.text);
        assert_eq!(r.body["detail"], "wrong extension or password");
    }
    assert!(waits[3] > waits[0] * 3, "no slow-down: {waits:?}");
    // Locked out now (lockout_after: 4), even with the right password.
    let r = login("2001", "secret2001");
    assert_eq!(r.status, 429, "{}", r.text);
    // Logging out ends the session.
    let r = api.call(
        "POST",
        "/api/v1/logout",
        None,
        &[("Cookie", &session), ("X-CSRF-Token", &csrf)],
        None,
    );
    assert_eq!(r.status, 204, "{}", r.text);
    let me = api.call("GET", "/api/v1/me", None, &[("Cookie", &session)], None);
    assert_eq!(me.status, 401);
}

/// Path parameters filled with values that exist in the test server.
fn concrete(path: &str) -> String {
    path.replace("{extension}", "2001")
        .replace("{name}", "billing")
        .replace("{call_uuid}", "no-such-call")
        .replace("{number}", "+15550100")
}

#[test]
fn every_endpoint_in_the_openapi_document_refuses_missing_and_wrong_tokens_and_wrong_roles() {
    let (_flows, server) = billing_server("\"2001\", \"2002\"", 0);
    let api = Api::new(&server);
    let doc = api.call("GET", "/api/v1/openapi.json", None, &[], None);
    assert_eq!(doc.status, 200);
    assert!(
        doc.body["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc.body["openapi"]
    );
    let paths = doc.body["paths"].as_object().unwrap();
    assert!(paths.len() >= 20, "{:?}", paths.keys());
    let mut checked = 0;
    for (path, ops) in paths {
        for (method, op) in ops.as_object().unwrap() {
            let method = method.to_uppercase();
            let url = concrete(path);
            let public = op["security"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
            });
            if public {
                continue; // login
            }
            let body = json!({});
            let none = api.call(&method, &url, None, &[], Some(&body));
            assert_eq!(
                none.status, 401,
                "{method} {url} without a token: {}",
                none.text
            );
            assert!(
                none.content_type.starts_with("application/problem+json"),
                "{method} {url}"
            );
            let wrong = api.call(&method, &url, Some("sb_not_a_token"), &[], Some(&body));
            assert_eq!(
                wrong.status, 401,
                "{method} {url} with a wrong token: {}",
                wrong.text
            );
            // Reporting is read-only: every change is forbidden to it.
            if method != "GET" && path != "/api/v1/logout" {
                let r = api.call(&method, &url, Some(api::REPORTING), &[], Some(&body));
                assert!(
                    r.status == 403 || r.status == 422 || r.status == 400,
                    "{method} {url} as reporting: {} {}",
                    r.status,
                    r.text
                );
            }
            // No endpoint answers a valid token with a server error.
            for token in [api::ADMIN, api::SUPERVISOR, api::REPORTING, api::AGENT_2001] {
                if url.ends_with("/events") || url.ends_with("/events/stream") {
                    continue; // streams do not end
                }
                let r = api.call(&method, &url, Some(token), &[], Some(&body));
                assert!(
                    r.status < 500,
                    "{method} {url} as {token}: {} {}",
                    r.status,
                    r.text
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} operations checked");
    // Role checks with a valid body: skills are the supervisor's, agents act only as themselves.
    let skills = json!({"skills": {"billing": 7}});
    let r = api.call(
        "PUT",
        "/api/v1/agents/2001/skills",
        Some(api::AGENT_2001),
        &[],
        Some(&skills),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api.call(
        "PUT",
        "/api/v1/agents/2001/skills",
        Some(api::SUPERVISOR),
        &[],
        Some(&skills),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["skills"]["billing"], 7, "{}", r.text);
    let r = api.post(
        "/api/v1/agents/2002/state",
        api::AGENT_2001,
        json!({"state": "ready"}),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = api.get("/api/v1/agents/2002", api::AGENT_2001);
    assert_eq!(r.status, 403, "{}", r.text);
    let listed = api.ok("/api/v1/agents", api::AGENT_2001);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed:#}");
    let r = api.get("/api/v1/queue-log", api::AGENT_2001);
    assert_eq!(r.status, 403, "{}", r.text);
    // An agent logs itself out of its queues and back in; not another agent.
    let put =
        |path: &str, token: &str, body: Value| api.call("PUT", path, Some(token), &[], Some(&body));
    let r = put(
        "/api/v1/agents/2001/queues",
        api::AGENT_2001,
        json!({"queues": []}),
    );
    assert_eq!(
        (r.status, r.body["queues"].as_array().map(Vec::len)),
        (200, Some(0)),
        "{}",
        r.text
    );
    let queues = api.ok("/api/v1/queues", api::REPORTING);
    assert_eq!(queues[0]["agents"]["ready"], 1, "{queues:#}");
    let r = put(
        "/api/v1/agents/2001/queues",
        api::AGENT_2001,
        json!({"queues": ["billing"]}),
    );
    assert_eq!(
        (r.status, r.body["queues"][0].as_str()),
        (200, Some("billing")),
        "{}",
        r.text
    );
    let r = put(
        "/api/v1/agents/2002/queues",
        api::AGENT_2001,
        json!({"queues": []}),
    );
    assert_eq!(r.status, 403, "{}", r.text);
    let r = put(
        "/api/v1/agents/2001/queues",
        api::SUPERVISOR,
        json!({"queues": ["nowhere"]}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    // Queues with their figures, for the wallboard.
    let queues = api.ok("/api/v1/queues", api::REPORTING);
    assert_eq!(queues[0]["name"], "billing");
    assert_eq!(queues[0]["agents"]["ready"], 2, "{queues:#}");
}

#[test]
fn an_agent_whose_phone_unregisters_is_made_not_ready_and_ready_again_when_it_registers() {
    let (_flows, server) = billing_server("\"2001\", \"2002\"", 0);
    let api = Api::new(&server);
    let port = alloc_ports(1);
    server.register("2001", port);
    assert_eq!(state_of(&api, "2001")["state"], "ready");
    Sipp::new("unregister.xml")
        .service("2001")
        .auth("2001", "secret2001")
        .local_port(port)
        .run(&server)
        .assert_ok(&server, "REGISTER Expires: 0");
    let s = api.wait_for(
        "/api/v1/agents/2001",
        api::SUPERVISOR,
        Duration::from_secs(5),
        |v| v["state"] == "not_ready",
    );
    assert_eq!(s["reason"], "unreachable", "{s:#}");
    // The phone is back: so is the agent.
    server.register("2001", port);
    api.wait_for(
        "/api/v1/agents/2001",
        api::SUPERVISOR,
        Duration::from_secs(5),
        |v| v["state"] == "ready",
    );
    let events = api.all_events(api::REPORTING, 0);
    let causes: Vec<&str> = events
        .iter()
        .filter(|e| e["type"] == "agent.state" && e["agent"] == "2001")
        .filter_map(|e| e["data"]["cause"].as_str())
        .collect();
    assert!(causes.ends_with(&["registrar", "registrar"]), "{causes:?}");
}

#[test]
fn the_cli_prints_agents_queues_and_calls_over_the_api_as_tables_or_json() {
    let (_flows, server) = billing_server("\"2001\", \"2002\"", 0);
    let api = Api::new(&server);
    let r = api.post(
        "/api/v1/agents/2002/state",
        api::ADMIN,
        json!({"state": "not_ready", "reason": "training"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let cli = |args: &[&str], token: Option<&str>| {
        let mut cmd = std::process::Command::new(switchboard_bin());
        cmd.args(args)
            .arg("--api")
            .arg(&api.base)
            .env_remove("SWITCHBOARD_TOKEN");
        if let Some(t) = token {
            cmd.env("SWITCHBOARD_TOKEN", t);
        }
        let out = cmd.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, table, err) = cli(&["agents"], Some(api::REPORTING));
    assert!(ok, "{err}");
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("EXT") && lines[0].contains("STATE"),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("2001") && l.contains(" ready")),
        "{table}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("2002") && l.contains("not_ready") && l.contains("training")),
        "{table}"
    );
    let (ok, json_out, err) = cli(&["agents", "--json"], Some(api::REPORTING));
    assert!(ok, "{err}");
    let parsed: Value = serde_json::from_str(&json_out).unwrap();
    assert_eq!(parsed, api.ok("/api/v1/agents", api::REPORTING));
    let (ok, queues, err) = cli(&["queues"], Some(api::REPORTING));
    assert!(
        ok && queues.lines().nth(1).unwrap().starts_with("billing"),
        "{queues}{err}"
    );
    let (ok, calls, err) = cli(&["calls"], Some(api::REPORTING));
    assert!(
        ok && calls.lines().count() == 1,
        "no calls, only the header: {calls}{err}"
    );
    // A wrong token fails with the API's reason.
    let (ok, _, err) = cli(&["agents"], Some("sb_wrong"));
    assert!(!ok && err.contains("401"), "{err}");
}

#[test]
fn an_agent_whose_caller_is_on_hold_shows_on_hold_and_the_live_call_says_held() {
    let (_flows, server) = billing_server("\"2001\"", 0);
    let api = Api::new(&server);
    // Answers, holds the caller after 1 s for 2 s, resumes, hangs up.
    let port = alloc_ports(1);
    server.register("2001", port);
    let agent = Sipp::new("uas_answer_hold_resume.xml")
        .local_port(port)
        .media_port(alloc_ports(4))
        .timeout_secs(30)
        .args(&["-rtp_echo"])
        .no_remote()
        .spawn(&server);
    let caller = Sipp::new("uac_queue_patience.xml")
        .service("100")
        .timeout_secs(30)
        .spawn(&server);
    let held = api.wait_for(
        "/api/v1/agents/2001",
        api::SUPERVISOR,
        Duration::from_secs(10),
        |v| v["state"] == "on_hold",
    );
    let uuid = held["call_uuid"].as_str().unwrap().to_string();
    let call = api.ok(&format!("/api/v1/calls/{uuid}"), api::SUPERVISOR);
    assert_eq!(call["live"]["phase"], "held", "{call:#}");
    api.wait_for(
        "/api/v1/agents/2001",
        api::SUPERVISOR,
        Duration::from_secs(10),
        |v| v["state"] == "on_call",
    );
    caller
        .wait(Duration::from_secs(30))
        .assert_ok(&server, "caller");
    agent
        .wait(Duration::from_secs(30))
        .assert_ok(&server, "agent");
    let events = api.all_events(api::REPORTING, 0);
    let kinds: Vec<&str> = events
        .iter()
        .filter(|e| e["call"] == uuid.as_str())
        .filter_map(|e| e["type"].as_str())
        .filter(|k| k.starts_with("call."))
        .collect();
    let pos = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k} in {kinds:?}"))
    };
    assert!(
        pos("call.answered") < pos("call.held")
            && pos("call.held") < pos("call.resumed")
            && pos("call.resumed") < pos("call.ended"),
        "{kinds:?}"
    );
}

#[test]
fn an_agent_transfers_its_caller_into_a_queue_by_api_and_the_queue_connects_another_agent() {
    let (_flows, server) = billing_server("\"2002\"", 0);
    let api = Api::new(&server);
    // A trunk call to DID 2001 rings agent 2001 directly; 2002 serves the billing queue.
    let first = server.start_callee("2001", "uas_answer.xml", &[]);
    let second = agent_phone(&server, "2002", 1, 2000);
    let caller = Sipp::new("uac_call_wait_bye.xml")
        .service("2001")
        .timeout_secs(40)
        .spawn(&server);
    let live = api.wait_for(
        "/api/v1/calls",
        api::AGENT_2001,
        Duration::from_secs(10),
        |v| {
            v.as_array()
                .is_some_and(|a| a.len() == 1 && a[0]["phase"] == "talking")
        },
    );
    let uuid = live[0]["call_uuid"].as_str().unwrap().to_string();
    let path = format!("/api/v1/calls/{uuid}/transfer");
    let r = api.post(&path, api::AGENT_2001, json!({"queue": "nowhere"}));
    assert_eq!(r.status, 409, "{}", r.text);
    let r = api.post(
        &path,
        api::AGENT_2001,
        json!({"queue": "billing", "extension": "2002"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    // Another agent cannot move 2001's call.
    let r = api.post(&path, api::AGENT_2002, json!({"queue": "billing"}));
    assert_eq!(r.status, 404, "{}", r.text);
    let r = api.post(&path, api::AGENT_2001, json!({"queue": "billing"}));
    assert_eq!(
        (r.status, r.body["result"].as_str()),
        (200, Some("transferred to queue billing")),
        "{}",
        r.text
    );
    first
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "2001 is released by a BYE");
    second
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "2002 answers from the queue and hangs up");
    caller
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "the caller talks to 2002, then gets the BYE");
    let rec = server.wait_for_calls(1, Duration::from_secs(10)).remove(0);
    assert_eq!(
        (rec.target.as_deref(), rec.queue.as_deref()),
        (Some("2002"), Some("billing")),
        "{rec:#?}"
    );
    assert_eq!(
        rec.reason.as_deref(),
        Some("transferred by 2001 to queue billing"),
        "{rec:#?}"
    );
    let kinds: Vec<String> = api
        .all_events(api::REPORTING, 0)
        .iter()
        .filter(|e| e["call"] == uuid.as_str())
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect();
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k}: {kinds:?}"))
    };
    assert!(
        at("call.transferred") < at("queue.entered") && at("queue.entered") < at("queue.answered"),
        "{kinds:?}"
    );
}

#[test]
fn an_agent_whose_phone_stops_answering_keep_alives_is_made_not_ready_while_a_live_phone_stays_ready(
) {
    let (_flows, server) = queue_server(
        "billing",
        &["  - { name: billing, members: [\"2001\", \"2002\"] }"],
        ServerConfig {
            // Fast timers: an unanswered OPTIONS times out after 64·T1 = 3.2 s.
            t1_ms: Some(50),
            extra_sip: vec!["keepalive_secs: 1".into()],
            api: true,
            ..ServerConfig::default()
        },
    );
    let api = Api::new(&server);
    // 2001 registers from a port where nothing answers afterwards (SIPp has exited);
    // 2002 is a real softphone, which answers OPTIONS.
    server.register("2001", alloc_ports(1));
    let phone = common::phone::Phone::agent(&server, "2002").start(&server);
    let gone = api.wait_for(
        "/api/v1/agents/2001",
        api::SUPERVISOR,
        Duration::from_secs(20),
        |v| v["state"] == "not_ready",
    );
    assert_eq!(gone["reason"], "unreachable", "{gone:#}");
    // The server's log is read by another thread: its line may follow the API's answer.
    server.wait_until(
        "the unanswered keep-alive logged",
        Duration::from_secs(5),
        || server.stderr().contains("did not answer the keep-alive"),
    );
    // The live phone has been pinged as long, and is still ready.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state_of(&api, "2002")["state"], "ready");
    drop(phone);
}
