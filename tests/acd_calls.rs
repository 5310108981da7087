//! The ACD with real phones: callers come in through the IVR, wait in skill-based
//! queues, and reach the agent the strategy picks; the queue log and the metrics
//! computed from it agree with what happened.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;

#[test]
fn each_caller_reaches_the_agent_best_skill_routing_picks() {
    require_pcap();
    // The shipped demo: billing = 2001 (level 5), 2003 (3); support = 2002 (5),
    // 2003 (3), 2001 (2). Strategy best skill.
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    let agents: Vec<_> = ["2001", "2002", "2003"]
        .iter()
        .map(|ext| server.start_callee(ext, "uas_answer_then_bye.xml", &["-d", "4000"]))
        .collect();
    // Billing and support callers at once: the best agent of each queue.
    let billing = Sipp::new("uac_ivr_key1.xml")
        .service("100")
        .duration_ms(9_000)
        .spawn(&server);
    let support = Sipp::new("uac_ivr_key2.xml")
        .service("100")
        .duration_ms(9_000)
        .spawn(&server);
    std::thread::sleep(Duration::from_millis(2_000));
    // A second billing caller while 2001 talks: the next best billing agent, 2003.
    let billing2 = Sipp::new("uac_ivr_key1.xml")
        .service("100")
        .duration_ms(7_000)
        .run(&server);
    billing2.assert_ok(&server, "second billing caller");
    billing
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "billing caller");
    support
        .wait(Duration::from_secs(20))
        .assert_ok(&server, "support caller");
    for a in agents {
        a.wait(Duration::from_secs(20))
            .assert_ok(&server, "agent answers and hangs up");
    }

    let mut rows = server.wait_for_calls(3, Duration::from_secs(10));
    rows.sort_by_key(|r| r.arrived_ms);
    let routed: Vec<(Option<&str>, Option<&str>)> = rows
        .iter()
        .map(|r| (r.queue.as_deref(), r.target.as_deref()))
        .collect();
    let first_two: BTreeMap<_, _> = routed[..2].iter().copied().collect();
    assert_eq!(
        first_two.get(&Some("billing")),
        Some(&Some("2001")),
        "{rows:#?}"
    );
    assert_eq!(
        first_two.get(&Some("support")),
        Some(&Some("2002")),
        "{rows:#?}"
    );
    assert_eq!(routed[2], (Some("billing"), Some("2003")), "{rows:#?}");

    // The queue log's CONNECT rows name the same agents.
    let connects = server
        .query("SELECT queue, agent FROM queue_log WHERE event = 'CONNECT' ORDER BY id")
        .unwrap();
    let connects: Vec<(String, String)> = connects
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap()))
        .collect();
    assert_eq!(connects.len(), 3, "{connects:?}");
    for pair in [
        ("billing", "2001"),
        ("support", "2002"),
        ("billing", "2003"),
    ] {
        assert!(
            connects
                .iter()
                .any(|(q, a)| (q.as_str(), a.as_str()) == pair),
            "{pair:?} not in {connects:?}"
        );
    }
}

const CALLERS: u32 = 200;

#[test]
fn two_hundred_callers_against_three_agents_none_lost_none_double_booked() {
    let (_flows, server) = queue_server(
        "billing",
        &[
        "  - { name: billing, strategy: longest_idle, ring_timeout_secs: 5, wrap_up_secs: 0, members: [\"2001\", \"2002\", \"2003\"] }",
        ],
        ServerConfig {
        rtp_port_count: 1_000,
        // The test callers send no RTP while they wait: no media timeout here.
        rtp_timeout_secs: Some(0),
        env: vec![("RUST_LOG".into(), "warn".into())],
        api: true,
            ..ServerConfig::default()
        },
    );
    // Three agents, each answering one call after another: 0.5 s of talk, then BYE.
    let agents: Vec<_> = ["2001", "2002", "2003"]
        .iter()
        .map(|ext| server.agent_phone(ext, CALLERS, 500, 170))
        .collect();
    // 200 callers within about 3 s: most wait as long as it takes (up to 100 s), the
    // last 20 arrive behind a long queue and give up after 3 s.
    let patient = Sipp::new("uac_queue_patience.xml")
        .service("100")
        .calls(CALLERS - 20)
        .timeout_secs(160)
        .no_message_trace()
        .args(&["-r", "100", "-l", &CALLERS.to_string()])
        .spawn(&server);
    std::thread::sleep(Duration::from_millis(2_000));
    let impatient = Sipp::new("uac_queue_impatient.xml")
        .service("100")
        .calls(20)
        .timeout_secs(60)
        .no_message_trace()
        .args(&["-r", "20"])
        .run(&server);
    impatient.assert_ok(&server, "20 impatient callers");
    patient
        .wait(Duration::from_secs(150))
        .assert_ok(&server, "180 patient callers");
    for a in agents {
        a.kill();
    }

    let rows = server.wait_for_calls(CALLERS as usize, Duration::from_secs(20));
    assert_eq!(
        rows.len(),
        CALLERS as usize,
        "one record per caller, none lost"
    );
    let connected: Vec<&CallRecord> = rows.iter().filter(|r| r.bridged_ms.is_some()).collect();
    let abandoned = rows
        .iter()
        .filter(|r| r.disposition.as_deref() == Some("abandoned"))
        .count();
    assert_eq!(
        connected.len() + abandoned,
        CALLERS as usize,
        "every call ends connected or abandoned"
    );
    assert_eq!(
        (connected.len(), abandoned),
        (CALLERS as usize - 20, 20),
        "the patient callers were all served; the impatient ones all gave up"
    );

    // The event log of the whole run has no gap, and tells of every call's end.
    let api = common::api::Api::new(&server);
    let events = api.all_events(common::api::REPORTING, 0);
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["seq"].as_u64(), Some(i as u64 + 1), "gap before {e}");
    }

    // No agent was ever on two calls at once: in the log, each agent's calls are
    // answered and completed in turn. (Not from the records' bridged..ended: a caller
    // goes back to the flow when the agent hangs up, so a record may end after its
    // agent is already on the next call.)
    let mut on: BTreeMap<&str, Option<&str>> = BTreeMap::new();
    let mut answered_calls = 0;
    for e in &events {
        let (Some(agent), Some(call)) = (e["agent"].as_str(), e["call"].as_str()) else {
            continue;
        };
        match e["type"].as_str() {
            Some("queue.answered") => {
                answered_calls += 1;
                let before = on.insert(agent, Some(call)).flatten();
                assert_eq!(
                    before, None,
                    "agent {agent} answered {call} while on a call: {e}"
                );
            }
            Some("queue.completed") => {
                let before = on.insert(agent, None).flatten();
                assert_eq!(
                    before,
                    Some(call),
                    "agent {agent} completed a call it was not on: {e}"
                );
            }
            _ => {}
        }
    }
    assert_eq!(
        answered_calls,
        connected.len(),
        "one queue.answered per connected call"
    );
    let ended = events.iter().filter(|e| e["type"] == "call.ended").count();
    assert_eq!(ended, CALLERS as usize, "one call.ended per caller");
    let queue_rows = server.query("SELECT COUNT(*) FROM queue_log").unwrap();
    let queue_events = events
        .iter()
        .filter(|e| e["data"]["event"].is_string())
        .count();
    assert_eq!(
        queue_rows[0][0].as_deref(),
        Some(queue_events.to_string().as_str())
    );

    // Service level and ASA from the event log, by hand…
    let log = server
        .query("SELECT event, wait_ms FROM queue_log WHERE event IN ('CONNECT', 'ABANDON')")
        .unwrap();
    let waits = |event: &str| -> Vec<i64> {
        log.iter()
            .filter(|r| r[0].as_deref() == Some(event))
            .map(|r| r[1].as_deref().unwrap().parse().unwrap())
            .collect()
    };
    let (answered, gave_up) = (waits("CONNECT"), waits("ABANDON"));
    assert_eq!(answered.len(), connected.len());
    assert_eq!(gave_up.len(), abandoned);
    let within = answered.iter().filter(|w| **w <= 10_000).count();
    let service_level = 100.0 * within as f64 / (answered.len() + gave_up.len()) as f64;
    let asa = answered.iter().sum::<i64>() as f64 / answered.len() as f64 / 1000.0;
    // …equal what `switchboard report` computes from the same log (that formula, every
    // abandon counted).
    let report = std::process::Command::new(switchboard_bin())
        .args([
            "report",
            "--by",
            "total",
            "--format",
            "json",
            "--threshold-secs",
            "10",
        ])
        .args([
            "--short-abandon-secs",
            "0",
            "--formula",
            "answered_or_abandoned",
        ])
        .args(["--from", "2000-01-01"])
        .args(server.store_source_args())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&report.stdout);
    assert!(
        report.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&report.stderr)
    );
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let total = &json["total"];
    assert_eq!(total["answered"], answered.len(), "{text}");
    assert_eq!(total["abandoned"], abandoned, "{text}");
    let got = total["service_level"].as_f64().unwrap() * 100.0;
    assert!(
        (got - service_level).abs() < 1e-9,
        "expected {service_level}%:\n{text}"
    );
    let got = total["asa_secs"].as_f64().unwrap();
    assert!((got - asa).abs() < 1e-9, "expected {asa} s:\n{text}");
}

/// An agent dials a feature code from its phone.
fn feature(server: &Server, agent: &str, code: &str) {
    Sipp::new("uac_user_feature.xml")
        .service(code)
        .args(&["-key", "agent", agent])
        .auth(agent, &format!("secret{agent}"))
        .run(server)
        .assert_ok(server, &format!("{agent} dials {code}"));
}

/// Polls `done` for up to five seconds; rows written by another task land a moment
/// after the SIP exchange that caused them.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let end = std::time::Instant::now() + Duration::from_secs(5);
    while !done() {
        assert!(
            std::time::Instant::now() < end,
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn agents_pause_and_resume_themselves_with_feature_codes() {
    require_pcap();
    let server = Server::start_with(ServerConfig {
        shipped_demo: true,
        ..ServerConfig::default()
    });
    // 2001, the best billing agent, takes a break (*52): a billing caller gets 2003.
    feature(&server, "2001", "*52");
    let agents: Vec<_> = ["2001", "2003"]
        .iter()
        .map(|ext| server.start_callee(ext, "uas_answer_then_bye.xml", &["-d", "1000"]))
        .collect();
    Sipp::new("uac_ivr_key1.xml")
        .service("100")
        .duration_ms(5_000)
        .run(&server)
        .assert_ok(&server, "billing caller while 2001 is on a break");
    let log = |event: &str| {
        server
            .query(&format!(
                "SELECT agent, detail FROM queue_log WHERE event = '{event}' ORDER BY id"
            ))
            .unwrap()
    };
    assert_eq!(
        log("PAUSE"),
        vec![vec![Some("2001".into()), Some("break".into())]]
    );
    let connects = log("CONNECT");
    assert_eq!(connects.len(), 1);
    assert_eq!(connects[0][0].as_deref(), Some("2003"), "2001 is paused");

    // Back from the break (*53): unpaused in the log, and the feature calls are recorded
    // as the agent's own calls.
    feature(&server, "2001", "*53");
    wait_until("the UNPAUSE row", || log("UNPAUSE").len() == 1);
    drop(agents);
    // The feature call's record lands just after its BYE: wait for all three.
    let rows = server.wait_for_calls(3, Duration::from_secs(5));
    let features: Vec<_> = rows
        .iter()
        .filter(|r| r.target.as_deref().is_some_and(|t| t.starts_with('*')))
        .map(|r| (r.caller_user.clone(), r.target.clone(), r.hangup_by.clone()))
        .collect();
    assert_eq!(
        features,
        vec![
            (
                Some("2001".into()),
                Some("*52".into()),
                Some("switchboard".into())
            ),
            (
                Some("2001".into()),
                Some("*53".into()),
                Some("switchboard".into())
            ),
        ]
    );
    assert!(
        rows.iter()
            .filter(|r| r.target.as_deref().is_some_and(|t| t.starts_with('*')))
            .all(|r| r.reason.is_none()),
        "both were accepted: {rows:#?}"
    );

    // A supervisor is no queue member: its *50 is refused, and it hears so.
    feature(&server, "3001", "*50");
    let rows = server.wait_for_calls(4, Duration::from_secs(5));
    let last = rows.last().unwrap();
    assert_eq!(last.caller_user.as_deref(), Some("3001"));
    assert_eq!(
        last.reason.as_deref(),
        Some("the ACD refused the request"),
        "{last:#?}"
    );
}

#[test]
fn a_waiting_caller_hears_its_position_every_few_seconds() {
    // The only member is logged in but has no phone registered: the caller waits.
    let (_flows, server) = queue_server(
        "billing",
        &["  - { name: billing, announce_every_secs: 2, members: [\"2001\"] }"],
        ServerConfig::default(),
    );
    let caller = Sipp::new("uac_call.xml")
        .service("100")
        .duration_ms(5_500)
        .run(&server);
    caller.assert_ok(&server, "a caller waiting 5.5 s");
    let log = server.stderr();
    let announced = log.matches("position announced").count();
    assert!(
        announced >= 2,
        "announcements every 2 s:\n{}",
        server.stderr_tail(30)
    );
    assert!(log.contains("position=1"), "{}", server.stderr_tail(30));
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("abandoned"), "{rec:#?}");
}

#[test]
fn ring_all_rings_every_agent_and_cancels_the_others_when_one_answers() {
    require_pcap();
    let (_flows, server) = queue_server(
        "sales",
        &[
        "  - { name: sales, strategy: ring_all, ring_timeout_secs: 20, members: [\"2001\", \"2002\"] }",
        ],
        ServerConfig::default(),
    );
    // 2001 lets it ring (and must be cancelled); 2002 answers after a moment.
    let ringer = server.start_callee("2001", "uas_ring_forever.xml", &[]);
    let answerer = server.start_callee("2002", "uas_answer_then_bye.xml", &["-d", "1500"]);
    let caller = Sipp::new("uac_call_wait_bye.xml")
        .service("100")
        .timeout_secs(30)
        .run(&server);
    caller.assert_ok(&server, "ring-all queue call");
    answerer
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "2002 answers and hangs up");
    ringer
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "2001 rang and was cancelled when 2002 answered");
    let rec = server.single_call();
    assert_eq!(rec.target.as_deref(), Some("2002"), "{rec:#?}");
    let offers = server
        .query("SELECT agent FROM queue_log WHERE event = 'OFFER' ORDER BY agent")
        .unwrap();
    assert_eq!(
        offers,
        vec![vec![Some("2001".into())], vec![Some("2002".into())]]
    );
}

#[test]
fn a_caller_past_the_maximum_wait_overflows_into_the_next_queue() {
    require_pcap();
    let (_flows, server) = queue_server(
        "billing",
        &[
            "  - { name: support, members: [\"2002\"] }",
            // 2001 has no phone registered: nobody in billing answers.
            "  - { name: billing, max_wait_secs: 2, overflow_queue: support, members: [\"2001\"] }",
        ],
        ServerConfig::default(),
    );
    let agent = server.start_callee("2002", "uas_answer_then_bye.xml", &["-d", "1000"]);
    let caller = Sipp::new("uac_call_wait_bye.xml")
        .service("100")
        .timeout_secs(30)
        .run(&server);
    caller.assert_ok(&server, "billing → overflow → support");
    agent
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "2002 in support answers");
    let rec = server.single_call();
    assert_eq!(rec.target.as_deref(), Some("2002"), "{rec:#?}");
    let log = server
        .query("SELECT event, queue FROM queue_log WHERE call_uuid IS NOT NULL ORDER BY id")
        .unwrap();
    let events: Vec<(String, String)> = log
        .into_iter()
        .map(|r| (r[0].clone().unwrap(), r[1].clone().unwrap_or_default()))
        .collect();
    let pos = |e: &str, q: &str| events.iter().position(|(x, y)| x == e && y == q);
    let (overflow, enter, connect) = (
        pos("OVERFLOW", "billing").expect("OVERFLOW in billing"),
        pos("ENTER", "support").expect("ENTER in support"),
        pos("CONNECT", "support").expect("CONNECT in support"),
    );
    assert!(overflow < enter && enter < connect, "{events:?}");
}

#[test]
fn a_caller_who_asks_for_a_callback_is_called_back_when_an_agent_is_free() {
    require_pcap();
    // The caller's own phone, reached back through the trunk: answers, talks 2 s, hangs up.
    let carrier_port = alloc_ports(1);
    let (_flows, server) = queue_server(
        "billing",
        &[
            "  - { name: billing, strategy: longest_idle, ring_timeout_secs: 10, wrap_up_secs: 0, when_empty: wait, callback_key: \"5\", members: [\"2001\"] }",
        ],
        ServerConfig {
            trunk_outbound: Some(format!("127.0.0.1:{carrier_port}")),
            ..ServerConfig::default()
        },
    );
    let password = server.config.password("2001");
    let feature = |code: &str| {
        Sipp::new("uac_user_feature.xml")
            .service(code)
            .args(&["-key", "agent", "2001"])
            .auth("2001", &password)
            .run(&server)
            .assert_ok(&server, &format!("2001 dials {code}"));
    };
    // The only agent is on a break: the caller waits, presses 5 and is let go.
    feature("*52");
    let agent = server.start_callee("2001", "uas_answer.xml", &[]);
    Sipp::new("uac_queue_callback.xml")
        .service("100")
        .timeout_secs(30)
        .run(&server)
        .assert_ok(&server, "the caller asks for a callback and is hung up on");
    let log = |event: &str| {
        server
            .query(&format!(
                "SELECT agent FROM queue_log WHERE event = '{event}' ORDER BY id"
            ))
            .unwrap()
    };
    assert_eq!(log("CALLBACK_REQUESTED").len(), 1);
    assert!(log("CONNECT").is_empty() && log("CALLBACK_CONNECTED").is_empty());

    // The agent comes back: its phone rings first, then the caller's number is dialled.
    let phone = Sipp::new("uas_answer_then_bye.xml")
        .local_port(carrier_port)
        .media_port(alloc_ports(4))
        .args(&["-rtp_echo", "-d", "2000"])
        .no_remote()
        .spawn(&server);
    assert!(wait_udp_bound(carrier_port, Duration::from_secs(5)));
    feature("*53");
    let phone = phone.wait(Duration::from_secs(20));
    phone.assert_ok(&server, "the caller's phone answers the callback");
    let invite = &phone.received("INVITE ")[0];
    assert!(
        invite.starts_with("INVITE sip:+15550100@127.0.0.1:"),
        "the caller's own number is dialled: {invite}"
    );
    agent.wait(Duration::from_secs(20)).assert_ok(
        &server,
        "2001 takes the callback and is hung up on at the end",
    );

    let rows = server.wait_for_calls(3, Duration::from_secs(10));
    let call = rows
        .iter()
        .find(|r| r.queue.as_deref() == Some("billing"))
        .expect("the queued call's record");
    assert_eq!(call.disposition.as_deref(), Some("answered"), "{call:#?}");
    assert_eq!(call.target.as_deref(), Some("2001"));
    assert!(
        call.reason
            .as_deref()
            .is_some_and(|r| r.contains("called back")),
        "{call:#?}"
    );
    assert!(call.bridged_ms.is_some());
    assert_eq!(
        log("CALLBACK_CONNECTED"),
        vec![vec![Some("2001".to_string())]]
    );
}
