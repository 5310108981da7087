//! Abuse and overload limits against real SIPp peers on loopback: a flood of ten times
//! the call-setup limit is answered 503 with Retry-After for the excess while the calls
//! already up keep their audio, every admitted call leaves its record, and the server
//! takes calls normally again seconds after the flood.

mod common;

use std::time::{Duration, Instant};

use common::api::{Api, REPORTING};
use common::*;

/// The value of a sample in a Prometheus exposition (`name` with its labels, if any).
fn sample(exposition: &str, name: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| {
            l.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse::<f64>()
                .ok()
        })
        .unwrap_or_else(|| panic!("{name} is not in /metrics:\n{exposition}")) as u64
}

const LIMIT: u32 = 10;
const FLOOD_RATE: u32 = 10 * LIMIT;
const FLOOD_CALLS: u32 = 300;
const STEADY_CALLS: u32 = 4;

#[test]
fn ten_times_the_setup_limit_gets_503_retry_after_and_the_calls_up_keep_their_audio() {
    require_pcap();
    let server = Server::start_with(ServerConfig {
        api: true,
        rtp_port_count: 600,
        extra_yaml: vec![format!(
            "limits:\n  call_setups_per_sec: {LIMIT}\n  retry_after_secs: 2"
        )],
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..ServerConfig::default()
    });
    let callee_port = alloc_ports(1);
    server.register("2001", callee_port);
    let callee = Sipp::new("uas_answer.xml")
        .local_port(callee_port)
        .media_port(alloc_ports(4))
        .calls(10_000)
        .timeout_secs(120)
        .no_message_trace()
        .args(&["-rtp_echo"])
        .spawn(&server);
    assert!(
        wait_udp_bound(callee_port, Duration::from_secs(5)),
        "callee did not start"
    );

    // Calls already up when the flood comes: 12 s each, with RTP both ways for the
    // first 4.7 s (the length of SIPp's pcap), which the flood falls into.
    let steady = Sipp::new("uac_call.xml")
        .service("2001")
        .calls(STEADY_CALLS)
        .duration_ms(12_000)
        .timeout_secs(60)
        .no_message_trace()
        .args(&["-r", "2", "-l", "10"])
        .spawn(&server);
    std::thread::sleep(Duration::from_secs(3));

    // The flood: ten times the limit for three seconds; admitted calls last 1 s.
    let flood = Sipp::new("uac_flood.xml")
        .service("2001")
        .calls(FLOOD_CALLS)
        .duration_ms(1_000)
        .timeout_secs(60)
        .no_message_trace()
        .args(&["-r", &FLOOD_RATE.to_string(), "-l", "400"])
        .run(&server);
    let flood_ended = Instant::now();
    assert_eq!(
        flood.stat("FailedCall(C)"),
        Some(0),
        "a flood call failed (no answer, or a 503 without Retry-After):\n{}\n{}",
        flood.report(),
        server.stderr_tail(30)
    );
    let steady = steady.wait(Duration::from_secs(40));
    assert!(
        steady.success(),
        "the calls up during the flood failed:\n{}",
        steady.report()
    );

    // Back to normal within seconds: a call placed now is answered.
    std::thread::sleep(Duration::from_secs(1));
    let after = Sipp::new("uac_call.xml")
        .service("2001")
        .duration_ms(1_000)
        .timeout_secs(20)
        .run(&server);
    after.assert_ok(&server, "a call after the flood");
    assert!(flood_ended.elapsed() < Duration::from_secs(10));

    let metrics = Api::new(&server).get("/metrics", REPORTING).text;
    let refused = sample(&metrics, "switchboard_calls_refused_setup_rate_total");
    let sent_503 = sample(
        &metrics,
        "switchboard_sip_responses_sent_total{code=\"503\"}",
    );
    assert_eq!(refused, sent_503, "every 503 was an overload refusal");
    // 3 s at 10 calls/s (and a second's burst) is what the limit lets in; the rest,
    // around 260 of 300, is refused.
    let admitted = u64::from(FLOOD_CALLS) - refused;
    assert!(
        (20..=60).contains(&admitted),
        "{admitted} flood calls admitted at a limit of {LIMIT}/s"
    );

    // Every admitted call has its record, answered; the refused ones leave none.
    let expected = admitted as usize + STEADY_CALLS as usize + 1;
    let rows = server.wait_for_calls(expected, Duration::from_secs(20));
    assert_eq!(rows.len(), expected, "call records");
    assert!(
        rows.iter()
            .all(|r| r.disposition.as_deref() == Some("answered")),
        "{rows:#?}"
    );
    // The calls that were up through the flood kept their audio: the caller's RTP
    // arrived and the echo went back, with next to no loss.
    let mut steady_rows: Vec<_> = rows
        .iter()
        .filter(|r| {
            r.ended_ms
                .zip(r.answered_ms)
                .is_some_and(|(e, a)| e - a >= 11_000)
        })
        .collect();
    steady_rows.sort_by_key(|r| r.arrived_ms);
    assert_eq!(steady_rows.len(), STEADY_CALLS as usize, "the 12 s calls");
    for r in steady_rows {
        let (a_in, b_in) = (r.a_rtp_in.unwrap_or(0), r.b_rtp_in.unwrap_or(0));
        // g711a.pcap is 236 packets (4.7 s), played from the answer on, through the flood.
        assert!(
            a_in >= 230 && b_in >= 230,
            "audio stopped during the flood: {r:#?}"
        );
        let lost = r.a_rtp_lost.unwrap_or(0) + r.b_rtp_lost.unwrap_or(0);
        assert!(
            lost * 1000 <= (a_in + b_in) as i64,
            "more than 0.1 % of the audio lost during the flood: {r:#?}"
        );
    }
    drop(callee.kill());
}
