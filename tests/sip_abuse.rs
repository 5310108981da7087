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
    common::api::sample(exposition, name) as u64
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
    let callee = server.start_callee_with("2001", "uas_answer.xml", |sipp| {
        sipp.calls(10_000).timeout_secs(120).no_message_trace()
    });

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
            lost * 1000 <= a_in + b_in,
            "more than 0.1 % of the audio lost during the flood: {r:#?}"
        );
    }
    drop(callee.kill());
}

/// Runs a sipvicious tool (bounded in time) against the server; what it printed.
fn sipvicious(tool: &str, args: &[&str]) -> String {
    require_tool(tool, "sipvicious");
    let out = std::process::Command::new("timeout")
        .arg("90")
        .arg(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn a_sipvicious_sweep_learns_no_extension_and_trips_the_limits() {
    // 127.0.0.1, where the tools run, is no trunk peer: a stranger on the internet.
    let server = Server::start_with(ServerConfig {
        api: true,
        trunks: vec![("carrier".into(), vec!["127.0.0.2/32".into()])],
        extra_sip: vec!["auth_lockout: { after: 5, secs: 120 }".into()],
        // Enough refusals for the sweeps to run their course; the guessing trips it.
        extra_yaml: vec!["limits:\n  scan_strikes: 150\n  scan_ban_secs: 120".into()],
        ..ServerConfig::default()
    });
    let target = format!("udp://{}", server.addr());
    // Extensions 2001-2003 and 3001 exist; 2000, 2004-2010 and 3000, 3002 do not. Forced
    // past svwar's own warning that every extension asks for authentication, it must
    // still find the ones that exist no different from the ones that do not.
    let exists = ["2001", "2002", "2003", "3001"];
    let missing = ["2000", "2004", "2009", "3000", "3002"];
    // INVITE last: svwar never ACKs the 407s, whose retransmissions (RFC 3261 Timer G)
    // would reach the next sweep from the same port and read as its answers.
    for method in ["OPTIONS", "REGISTER", "INVITE"] {
        let out = sipvicious(
            "svwar",
            &[
                "-e2000-2010,3000-3002",
                "-m",
                method,
                "--force",
                "--maximumtime=5",
                &target,
            ],
        );
        let found = |ext: &str| {
            out.lines()
                .any(|l| l.split('|').nth(1).is_some_and(|cell| cell.trim() == ext))
        };
        for e in exists {
            for m in missing {
                assert_eq!(
                    found(e),
                    found(m),
                    "svwar -m {method} tells {e} (an extension) from {m} (none):\n{out}"
                );
            }
        }
    }

    // Password guessing, the right password 30th of 100: locked out long before, then
    // ignored altogether.
    let dir = tempfile::tempdir().unwrap();
    let dictionary = dir.path().join("passwords.txt");
    let mut words: Vec<String> = (0..29).map(|i| format!("guess{i}")).collect();
    words.push("secret2001".into());
    words.extend((30..100).map(|i| format!("guess{i}")));
    std::fs::write(&dictionary, words.join("\n") + "\n").unwrap();
    let out = sipvicious(
        "svcrack",
        &[
            "-u2001",
            "-d",
            dictionary.to_str().unwrap(),
            "--maximumtime=5",
            &target,
        ],
    );
    assert!(
        !out.contains("secret2001"),
        "svcrack found the password:\n{out}"
    );

    let metrics = Api::new(&server).get("/metrics", REPORTING).text;
    assert!(
        sample(&metrics, "switchboard_sip_auth_lockouts_total") >= 1,
        "no lock-out:\n{metrics}"
    );
    assert!(
        sample(&metrics, "switchboard_sip_scanner_bans_total") >= 1,
        "the scanner was never banned:\n{metrics}"
    );
    assert!(sample(&metrics, "switchboard_sip_requests_dropped_banned_total") > 0);
    // The user at its desk (another address) still registers.
    let desk = Sipp::new("register_ok.xml")
        .service("2001")
        .auth("2001", "secret2001")
        .args(&["-i", "127.0.0.3"])
        .run(&server);
    desk.assert_ok(&server, "2001 registering from 127.0.0.3 after the sweep");
}
