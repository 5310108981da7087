//! Bounded load test: 1,000 trunk calls at 50 calls/s, each 2 s long with RTP
//! (pcap replay from the caller, echoed back by the callee), against one SIPp
//! callee registered as extension 2001. Every call must succeed and leave one
//! `answered` record. The whole test is bounded to well under 3 minutes.

mod common;

use std::time::{Duration, Instant};

use common::*;

const CALLS: u32 = 1_000;
const RATE: u32 = 50;
const CALL_MS: u64 = 2_000;

#[test]
fn thousand_calls_at_50_cps_with_rtp() {
    require_pcap();
    let t0 = Instant::now();
    let server = Server::start_with(ServerConfig {
        rtp_port_count: 1_000,
        env: vec![(
            "RUST_LOG".into(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        )],
        ..ServerConfig::default()
    });

    // the callee: registered, then answering every call with RTP echo
    let callee = server.start_callee_with("2001", "uas_answer.xml", |sipp| {
        sipp.calls(CALLS).timeout_secs(120).no_message_trace()
    });

    // the caller: 1,000 calls at 50/s, at most 400 at once
    let caller = Sipp::new("uac_call.xml")
        .service("2001")
        .calls(CALLS)
        .duration_ms(CALL_MS)
        .timeout_secs(120)
        .no_message_trace()
        .args(&["-r", &RATE.to_string(), "-rp", "1000", "-l", "400"])
        .run(&server);
    let callee_run = callee.wait(Duration::from_secs(30));

    let ctx = || {
        format!(
            "\n=== caller ===\n{}\n=== callee ===\n{}\n=== switchboard (tail) ===\n{}",
            caller.report(),
            callee_run.report(),
            server.stderr_tail(60)
        )
    };
    // the CSV columns the assertions rely on (1-based)
    let (name16, successful) = caller
        .stat_col(16)
        .unwrap_or_else(|| panic!("no statistics from the caller{}", ctx()));
    let (name18, failed) = caller.stat_col(18).unwrap();
    assert_eq!(
        name16,
        "SuccessfulCall(C)",
        "column 16 of the SIPp stats{}",
        ctx()
    );
    assert_eq!(
        name18,
        "FailedCall(C)",
        "column 18 of the SIPp stats{}",
        ctx()
    );
    assert_eq!(failed, 0, "failed calls on the caller side{}", ctx());
    assert_eq!(
        successful,
        u64::from(CALLS),
        "successful calls on the caller side{}",
        ctx()
    );
    assert!(caller.success(), "caller SIPp exit code{}", ctx());
    assert!(callee_run.success(), "callee SIPp exit code{}", ctx());
    assert_eq!(
        callee_run.stat("FailedCall(C)"),
        Some(0),
        "callee failures{}",
        ctx()
    );

    // every call recorded once, as answered, with media both ways
    let rows = server.wait_for_calls(CALLS as usize, Duration::from_secs(15));
    assert_eq!(rows.len(), CALLS as usize, "call records{}", ctx());
    let answered = rows
        .iter()
        .filter(|r| r.disposition.as_deref() == Some("answered"))
        .count();
    assert_eq!(answered, CALLS as usize, "answered call records{}", ctx());
    let mut ids: Vec<&str> = rows.iter().filter_map(|r| r.a_call_id.as_deref()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(
        ids.len(),
        CALLS as usize,
        "distinct caller Call-IDs in the records"
    );
    let no_media = rows
        .iter()
        .filter(|r| {
            [r.a_rtp_in, r.a_rtp_out, r.b_rtp_in, r.b_rtp_out]
                .iter()
                .any(|v| v.unwrap_or(0) == 0)
        })
        .count();
    assert_eq!(no_media, 0, "calls without RTP in some direction{}", ctx());
    eprintln!(
        "load: {CALLS} calls at {RATE}/s done in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        t0.elapsed() < Duration::from_secs(170),
        "load test took {:?}",
        t0.elapsed()
    );
}
