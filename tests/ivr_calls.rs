//! IVR calls end to end: SIPp dials a DID answered by a flow, hears its prompts, presses
//! keys with RFC 4733 telephone-events, and is transferred where the flow says.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// The test configuration with DID 100 answered by the demo flow `main`.
fn ivr_config() -> ServerConfig {
    ServerConfig {
        dids: vec![("2001".into(), "2001".into())],
        flow_dids: vec![("100".into(), "main".into())],
        ivr: Some((repo("ivr-flows"), repo("prompts"))),
        ..ServerConfig::default()
    }
}

#[test]
fn pressing_0_in_the_demo_flow_reaches_the_operator_with_media_through_the_bridge() {
    require_pcap();
    require_tool("tshark", "tshark");
    let server = Server::start_with(ivr_config());
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    let media_port = alloc_ports(4);
    let work = tempfile::tempdir().unwrap();
    let capture = Capture::start(work.path(), &format!("udp dst port {media_port}"), 40);
    let caller = Sipp::new("uac_ivr_operator.xml")
        .service("100")
        .media_port(media_port)
        .duration_ms(3_000)
        .timeout_secs(45)
        .run(&server);
    let heard = capture.finish();
    caller.assert_ok(&server, "IVR call, key 0, transfer to the operator");
    let callee_run = callee.wait(Duration::from_secs(10));
    callee_run.assert_ok(&server, "operator 2001 answers and gets the caller's BYE");
    // What the IVR knows pops up on the agent's phone.
    let invite = &callee_run.received("INVITE ")[0];
    assert_eq!(
        header(invite, "X-Switchboard-caller"),
        Some("+15550100"),
        "screen-pop headers:\n{invite}"
    );

    // The IVR answered at once with our own media, then spoke: prompts went out as RTP.
    let ok = caller.received("SIP/2.0 200");
    assert!(
        ok.iter().any(|m| m.contains("m=audio")),
        "the IVR's 200 carries SDP\n{}",
        caller.report()
    );

    let rec = server.single_call();
    assert_eq!(rec.flow.as_deref(), Some("main"), "{rec:#?}");
    assert_eq!(rec.target.as_deref(), Some("2001"), "{rec:#?}");
    assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
    assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
    let (answered, bridged) = (
        rec.answered_ms.unwrap(),
        rec.bridged_ms.expect("bridged_ms"),
    );
    assert!(
        bridged > answered,
        "the agent answered after the IVR: {rec:#?}"
    );
    let trace = rec.ivr_trace.clone().unwrap_or_default();
    assert!(trace.contains("main/welcome"), "{trace}");
    assert!(trace.contains("main/main_menu"), "{trace}");
    assert!(
        trace.contains("main/operator"),
        "key 0 led to the operator:\n{trace}"
    );
    // After the bridge, the caller's audio reached the operator and came back.
    assert!(
        rec.a_rtp_in.unwrap_or(0) > 10 && rec.b_rtp_in.unwrap_or(0) > 10,
        "{rec:#?}"
    );
    // Before it, the IVR spoke: the caller's media port got more packets from our RTP
    // range than the bridge relayed (the welcome prompt alone is ~75 packets of 20 ms).
    let (lo, hi) = server.rtp_ports;
    let from_us: u32 = heard
        .iter()
        .filter(|((src, _), _)| (lo..=hi).contains(src))
        .map(|(_, n)| n)
        .sum();
    let relayed = rec.a_rtp_out.unwrap_or(0) as u32;
    assert!(
        from_us >= relayed + 40,
        "only {from_us} packets reached the caller from our ports, {relayed} of them relayed: \
         the IVR's prompts did not play ({heard:?})"
    );
}

/// A flow directory of the test's own, with the demo prompts.
fn flows_dir(flows: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in flows {
        std::fs::write(dir.path().join(format!("{name}.yaml")), text).unwrap();
    }
    dir
}

fn config_with_flows(dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        dids: vec![("2001".into(), "2001".into())],
        flow_dids: vec![("100".into(), "main".into())],
        ivr: Some((dir.to_path_buf(), repo("prompts"))),
        ..ServerConfig::default()
    }
}

const OFFICE_HOURS: &str = r#"
name: main
entry: hours
prompts: en
nodes:
  hours:
    schedule:
      timezone: UTC
      hours:
        mon: ["09:00-17:00"]
        tue: ["09:00-17:00"]
        wed: ["09:00-17:00"]
        thu: ["09:00-17:00"]
        fri: ["09:00-17:00"]
      open: operator
      closed: closed
  operator:
    transfer:
      extension: "2001"
  closed:
    play:
      prompts: [closed]
      next: goodbye
  goodbye:
    hangup:
"#;

#[test]
fn outside_business_hours_the_closed_path_is_taken() {
    require_pcap();
    let dir = flows_dir(&[("main", OFFICE_HOURS)]);
    let server = Server::start_with(ServerConfig {
        // A Sunday, 03:00 UTC: closed.
        extra_args: vec!["--clock".into(), "2026-12-27T03:00:00+00:00".into()],
        ..config_with_flows(dir.path())
    });
    // The flow says "we are closed" and hangs up: the caller receives our BYE.
    let caller = Sipp::new("uac_call_wait_bye.xml")
        .service("100")
        .timeout_secs(30)
        .run(&server);
    caller.assert_ok(&server, "closed: prompt, then the IVR hangs up");
    let rec = server.single_call();
    let trace = rec.ivr_trace.clone().unwrap_or_default();
    assert!(trace.contains("main/closed"), "{trace}");
    assert!(!trace.contains("main/operator"), "{trace}");
    assert_eq!(rec.hangup_by.as_deref(), Some("switchboard"), "{rec:#?}");
    assert_eq!(rec.target, None, "nobody was rung: {rec:#?}");
}

#[test]
fn during_business_hours_the_open_path_is_taken() {
    require_pcap();
    let dir = flows_dir(&[("main", OFFICE_HOURS)]);
    let server = Server::start_with(ServerConfig {
        // A Wednesday, 10:00 UTC: open.
        extra_args: vec!["--clock".into(), "2026-12-23T10:00:00+00:00".into()],
        ..config_with_flows(dir.path())
    });
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    let caller = Sipp::new("uac_call.xml")
        .service("100")
        .duration_ms(1_000)
        .run(&server);
    caller.assert_ok(&server, "open: straight to the operator");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "operator answers");
    let rec = server.single_call();
    assert!(rec.ivr_trace.unwrap_or_default().contains("main/operator"));
    assert_eq!(rec.target.as_deref(), Some("2001"));
}

/// A one-request-at-a-time HTTP server on loopback answering every request with `body`;
/// returns its address and the request lines it saw.
fn crm_server(body: &'static str) -> (String, std::sync::Arc<std::sync::Mutex<Vec<String>>>) {
    use std::io::{BufRead, BufReader, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = seen.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            let _ = reader.read_line(&mut line);
            log.lock().unwrap().push(line.trim().to_string());
            // Skip the headers.
            let mut h = String::new();
            while reader.read_line(&mut h).is_ok_and(|n| n > 2) {
                h.clear();
            }
            let mut s = stream;
            let _ = write!(
                s,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (addr, seen)
}

fn lookup_flow(crm: &str) -> String {
    format!(
        r#"
name: main
entry: lookup
prompts: en
nodes:
  lookup:
    http:
      method: GET
      url: "http://{crm}/accounts/${{caller}}"
      timeout_secs: 2
      save:
        tier: /tier
      next: route
      on_error: fallback
  route:
    branch:
      cases:
        - when: {{ eq: {{ var: tier, value: gold }} }}
          then: vip
      else: fallback
  vip:
    transfer:
      extension: "2001"
  fallback:
    play:
      prompts: [thanks]
      next: bye
  bye:
    hangup:
"#
    )
}

#[test]
fn an_http_lookup_routes_the_call_and_falls_back_when_the_service_is_down() {
    require_pcap();
    let (crm, seen) = crm_server(r#"{"tier":"gold","name":"Ada"}"#);
    let dir = flows_dir(&[("main", &lookup_flow(&crm))]);
    let server = Server::start_with(config_with_flows(dir.path()));

    // The service answers "gold": the caller is put through to 2001.
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    let caller = Sipp::new("uac_call.xml")
        .service("100")
        .duration_ms(1_000)
        .run(&server);
    caller.assert_ok(&server, "CRM says gold: transferred");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "2001 answers");
    assert_eq!(
        seen.lock().unwrap().as_slice(),
        ["GET /accounts/%2B15550100 HTTP/1.1"],
        "the request carried the caller's number"
    );

    // The service is down (nothing listens on its port any more): the fallback plays
    // and the IVR hangs up.
    let down = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = down.local_addr().unwrap().to_string();
    drop(down);
    std::fs::write(dir.path().join("main.yaml"), lookup_flow(&dead)).unwrap();
    let reloaded = std::time::Instant::now() + Duration::from_secs(10);
    while !server.stderr().contains("IVR flows reloaded") {
        assert!(
            std::time::Instant::now() < reloaded,
            "no reload\n{}",
            server.stderr_tail(20)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let caller = Sipp::new("uac_call_wait_bye.xml")
        .service("100")
        .timeout_secs(30)
        .run(&server);
    caller.assert_ok(&server, "CRM down: fallback, then hang-up");
    // The first call's record and this one's (written just after the BYE).
    let rows = server.wait_for_calls(2, Duration::from_secs(5));
    let last = rows.last().unwrap();
    let trace = last.ivr_trace.clone().unwrap_or_default();
    assert!(trace.contains("main/fallback"), "{trace}");
    assert_eq!(last.target, None, "{last:#?}");
}

#[test]
fn the_billing_key_queues_the_caller_for_an_agent_then_the_survey_follows() {
    require_pcap();
    let server = Server::start_with(ServerConfig {
        // The shipped demo: flow main on DID 100, queues billing and support.
        shipped_demo: true,
        ..ServerConfig::default()
    });
    // Agent 2003 is registered; 2001 (the better billing agent) is not, so the ACD's
    // offer to 2001 finds no phone and moves on: the call still reaches an agent.
    let agent = server.start_callee("2003", "uas_answer_then_bye.xml", &["-d", "2000"]);
    let caller = Sipp::new("uac_ivr_queue_survey.xml")
        .service("100")
        .timeout_secs(60)
        .run(&server);
    caller.assert_ok(&server, "key 1 → billing queue → agent → survey → goodbye");
    agent
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "agent 2003 answers, talks, hangs up");

    let rec = server.single_call();
    assert_eq!(rec.flow.as_deref(), Some("main"), "{rec:#?}");
    assert_eq!(rec.target.as_deref(), Some("2003"), "{rec:#?}");
    assert_eq!(
        rec.hangup_by.as_deref(),
        Some("switchboard"),
        "the IVR said goodbye: {rec:#?}"
    );
    let trace = rec.ivr_trace.clone().unwrap_or_default();
    for step in [
        "main/main_menu",
        "main/billing",
        "main/survey",
        "csat = \"5\"",
        "resolved = \"yes\"",
    ] {
        assert!(trace.contains(step), "trace lacks {step:?}:\n{trace}");
    }

    assert_eq!(rec.queue.as_deref(), Some("billing"), "{rec:#?}");
    assert_eq!(
        (rec.csat, rec.resolved),
        (Some(5), Some(1)),
        "survey answers: {rec:#?}"
    );

    // The queue log tells the same story, joined to the call record by its id.
    let uuid = rec.call_uuid.clone().unwrap();
    let rows = server
        .query(&format!(
            "SELECT event, queue, agent FROM queue_log WHERE call_uuid = '{uuid}' ORDER BY id"
        ))
        .unwrap();
    let events: Vec<String> = rows
        .iter()
        .map(|r| r[0].clone().unwrap_or_default())
        .collect();
    for e in ["ENTER", "OFFER", "CONNECT", "COMPLETE_AGENT"] {
        assert!(
            events.iter().any(|x| x == e),
            "queue log lacks {e}: {events:?}"
        );
    }
    assert!(
        rows.iter().all(|r| r[1].as_deref() == Some("billing")),
        "{rows:?}"
    );
}

#[test]
fn a_voicemail_is_recorded_into_the_data_directory_and_linked_from_the_record() {
    require_pcap();
    let flow = r#"
name: main
entry: message
prompts: en
nodes:
  message:
    voicemail:
      mailbox: sales
      greeting: [leave_message]
      max_secs: 3
      silence_secs: 2
      next: bye
  bye:
    hangup:
"#;
    let dir = flows_dir(&[("main", flow)]);
    let server = Server::start_with(config_with_flows(dir.path()));
    // The caller talks (the g711a speech capture) from the start and waits for our BYE.
    let caller = Sipp::new("uac_call_wait_bye.xml")
        .service("100")
        .timeout_secs(40)
        .run(&server);
    caller.assert_ok(&server, "greeting, beep, message, goodbye");
    let rec = server.single_call();
    let file = rec.voicemail.clone().expect("the record links the message");
    assert!(file.starts_with("voicemail/sales/"), "{file}");
    let path = server.data_dir.join(&file);
    let reader =
        hound::WavReader::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!((spec.channels, spec.sample_rate), (1, 8000));
    let samples: Vec<i16> = reader.into_samples::<i16>().map(|s| s.unwrap()).collect();
    let seconds = samples.len() as f64 / 8000.0;
    // Stopped by the 3 s maximum (the caller kept talking), give or take a packet.
    assert!((2.9..=3.1).contains(&seconds), "{seconds} s");
    let loud = samples.iter().filter(|s| s.unsigned_abs() > 1000).count();
    assert!(
        loud > 800,
        "the message holds the caller's speech ({loud} loud samples)"
    );
    let trace = rec.ivr_trace.unwrap_or_default();
    assert!(trace.contains("main/bye"), "{trace}");
}

#[test]
fn a_transfer_to_an_outside_number_goes_out_through_the_trunk() {
    require_pcap();
    let flow =
        "name: main\nentry: out\nnodes:\n  out:\n    transfer:\n      number: \"+15550199\"\n";
    let dir = flows_dir(&[("main", flow)]);
    // The carrier's side: a SIPp UAS answering at the trunk's outbound address.
    let carrier_port = alloc_ports(1);
    let server = Server::start_with(ServerConfig {
        trunk_outbound: Some(format!("127.0.0.1:{carrier_port}")),
        ..config_with_flows(dir.path())
    });
    let carrier = Sipp::new("uas_answer.xml")
        .local_port(carrier_port)
        .media_port(alloc_ports(4))
        .args(&["-rtp_echo"])
        .no_remote()
        .spawn(&server);
    assert!(wait_udp_bound(carrier_port, Duration::from_secs(5)));
    let caller = Sipp::new("uac_call.xml")
        .service("100")
        .duration_ms(1_500)
        .run(&server);
    caller.assert_ok(&server, "IVR transfer out through the trunk");
    let carrier_run = carrier.wait(Duration::from_secs(10));
    carrier_run.assert_ok(&server, "the carrier answers the outgoing call");
    let invite = &carrier_run.received("INVITE ")[0];
    assert!(
        invite.starts_with("INVITE sip:+15550199@127.0.0.1:"),
        "{invite}"
    );
    let rec = server.single_call();
    assert_eq!(rec.target.as_deref(), Some("+15550199"), "{rec:#?}");
    rec.assert_media_both_ways(10);
}

#[test]
fn a_caller_whose_phone_goes_silent_in_the_ivr_is_hung_up_at_the_media_timeout() {
    require_pcap();
    // The caller waits in a queue nobody answers, on music, and sends no RTP at all.
    let flow = "name: main\nentry: wait\nnodes:\n  wait:\n    queue:\n      queue: sales\n      next: bye\n  bye:\n    hangup:\n";
    let dir = flows_dir(&[("main", flow)]);
    let server = Server::start_with(ServerConfig {
        rtp_timeout_secs: Some(2),
        extra_yaml: vec![
            "queues:".into(),
            "  - { name: sales, when_empty: wait, members: [\"2001\"] }".into(),
        ],
        ..config_with_flows(dir.path())
    });
    Sipp::new("uac_queue_patience.xml")
        .service("100")
        .timeout_secs(30)
        .run(&server)
        .assert_ok(&server, "the silent caller is hung up on");
    let rec = server.single_call();
    assert_eq!(rec.hangup_by.as_deref(), Some("switchboard"), "{rec:#?}");
    assert_eq!(
        rec.reason.as_deref(),
        Some("media timeout: no RTP from the caller for 2 s"),
        "{rec:#?}"
    );
    let talk = rec.ended_ms.unwrap() - rec.answered_ms.unwrap();
    assert!(talk >= 2_000, "hung up after {talk} ms, before the timeout");
}

#[test]
fn a_flow_step_can_record_a_conversation_the_server_would_not() {
    require_pcap();
    // The server records on demand only; the flow's transfer says always.
    let flow = "name: main\nentry: op\nnodes:\n  op:\n    transfer: { extension: \"2001\", record: always }\n";
    let dir = flows_dir(&[("main", flow)]);
    let server = Server::start_with(config_with_flows(dir.path()));
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    Sipp::new("uac_call.xml")
        .service("100")
        .duration_ms(2_000)
        .run(&server)
        .assert_ok(&server, "caller transferred to 2001 and talks 2 s");
    callee
        .wait(Duration::from_secs(10))
        .assert_ok(&server, "2001 answers");
    let rec = server.single_call();
    let name = rec
        .recording
        .clone()
        .unwrap_or_else(|| panic!("not recorded: {rec:#?}"));
    let wav = hound::WavReader::open(server.data_dir.join(&name)).unwrap();
    assert_eq!(wav.spec().channels, 2);
    let ms = rec.recording_ms.unwrap();
    assert!((1_500..=3_000).contains(&ms), "{ms} ms recorded: {rec:#?}");
}
