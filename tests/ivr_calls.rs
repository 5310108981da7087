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
