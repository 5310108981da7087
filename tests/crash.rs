//! `kill -9` in the middle of 200 recorded calls. The 100 calls that ended before the
//! kill keep their records and recordings as they were; the 100 cut short get a record
//! at the next start, marked as interrupted, and their recordings (left unfinished) are
//! repaired and readable. Nothing is lost, nothing is counted twice.

mod common;

use std::collections::HashSet;
use std::thread;
use std::time::Duration;

use common::audio::read_wav;
use common::*;

const SHORT: u32 = 100;
const LONG: u32 = 100;
const SHORT_MS: u64 = 1_500;

fn count(server: &Server, sql: &str) -> usize {
    server
        .query(sql)
        .ok()
        .and_then(|rows| rows.first()?.first()?.clone())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[test]
fn kill_9_under_200_recorded_calls_loses_no_record_and_no_recording() {
    require_pcap();
    let mut server = Server::start_with(ServerConfig {
        rtp_port_count: 1_000,
        extra_yaml: vec!["recording:\n  policy: always".into()],
        env: vec![("RUST_LOG".into(), "warn".into())],
        ..ServerConfig::default()
    });
    let callee = server.start_callee_with("2001", "uas_answer.xml", |sipp| {
        sipp.calls(SHORT + LONG)
            .timeout_secs(120)
            .no_message_trace()
    });

    let caller = |calls: u32, ms: u64| {
        Sipp::new("uac_call.xml")
            .service("2001")
            .calls(calls)
            .duration_ms(ms)
            .timeout_secs(120)
            .no_message_trace()
            .args(&["-r", "50", "-l", "200"])
            .spawn(&server)
    };
    let long = caller(LONG, 120_000);
    let short = caller(SHORT, SHORT_MS).wait(Duration::from_secs(60));
    assert_eq!(
        short.stat("FailedCall(C)"),
        Some(0),
        "short calls failed\n{}",
        short.report()
    );
    server.wait_until("all 200 calls answered", Duration::from_secs(30), || {
        count(
            &server,
            "SELECT COUNT(*) FROM events WHERE type = 'call.answered'",
        ) >= (SHORT + LONG) as usize
    });
    server.wait_for_calls(SHORT as usize, Duration::from_secs(20));
    // Let the long calls' recordings hold a good second of audio past every answer.
    thread::sleep(Duration::from_millis(1_500));
    let before = server.calls().expect("records before the kill");
    assert_eq!(
        before.len(),
        SHORT as usize,
        "only the short calls ended before the kill"
    );

    let killed_ms = now_ms();
    server.crash_and_restart();
    drop(long.kill());
    drop(callee.kill());

    // The interrupted calls are recorded before the server says it is ready.
    let after = server.calls().expect("records after the restart");
    let ctx = || format!("\nswitchboard stderr tail:\n{}", server.stderr_tail(40));
    assert_eq!(
        after.len(),
        (SHORT + LONG) as usize,
        "one record per call{}",
        ctx()
    );
    let ids: HashSet<_> = after.iter().filter_map(|r| r.call_uuid.clone()).collect();
    assert_eq!(ids.len(), after.len(), "a call recorded twice{}", ctx());
    let sip_ids: HashSet<_> = after.iter().filter_map(|r| r.a_call_id.clone()).collect();
    assert_eq!(sip_ids.len(), after.len(), "distinct SIP Call-IDs{}", ctx());

    // What was written before the kill is unchanged.
    for old in &before {
        let now = after.iter().find(|r| r.call_uuid == old.call_uuid).unwrap();
        assert_eq!(
            format!("{old:?}"),
            format!("{now:?}"),
            "a finished record changed"
        );
    }
    let data_dir = server.db_path().parent().unwrap().to_path_buf();
    let mut interrupted = 0;
    for rec in &after {
        assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
        let file = rec
            .recording
            .as_ref()
            .unwrap_or_else(|| panic!("an answered call without its recording: {rec:#?}"));
        let wav = read_wav(&data_dir.join(file));
        assert_eq!(wav.channels.len(), 2, "stereo: caller and callee ({file})");
        let secs = wav.duration().as_secs_f64();
        let noted = rec
            .recording_ms
            .unwrap_or_else(|| panic!("no length: {rec:#?}"));
        assert!(
            (secs * 1000.0 - noted as f64).abs() < 250.0,
            "{file} plays {secs:.2} s, its record says {noted} ms"
        );
        if before.iter().any(|b| b.call_uuid == rec.call_uuid) {
            assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
            assert!(secs > 1.0, "{file}: {secs:.2} s of a 1.5 s call");
        } else {
            interrupted += 1;
            assert_eq!(rec.hangup_by.as_deref(), Some("switchboard"), "{rec:#?}");
            assert!(
                rec.reason
                    .as_deref()
                    .is_some_and(|r| r.starts_with("interrupted")),
                "an interrupted call is marked so: {rec:#?}"
            );
            assert_eq!(rec.final_code, Some(200), "{rec:#?}");
            // Ended at the server's last sign of life: its heartbeat, once a second.
            let (answered, ended) = (rec.bridged_ms.unwrap(), rec.ended_ms.unwrap());
            assert!(ended >= answered, "{rec:#?}");
            assert!(
                (killed_ms - 2_000..=killed_ms + 100).contains(&ended),
                "ended {} ms before the kill: {rec:#?}",
                killed_ms - ended
            );
            assert!(
                secs > 1.0,
                "{file}: {secs:.2} s of a call up for more than 1.5 s"
            );
        }
    }
    assert_eq!(interrupted, LONG as usize);
    // Every call is closed in the event log too, once.
    server.wait_until(
        "a call.ended event per call",
        Duration::from_secs(10),
        || {
            count(
                &server,
                "SELECT COUNT(DISTINCT call_uuid) FROM events WHERE type = 'call.ended'",
            ) == (SHORT + LONG) as usize
        },
    );
    assert_eq!(
        count(
            &server,
            "SELECT COUNT(*) FROM events WHERE type = 'call.ended'"
        ),
        (SHORT + LONG) as usize,
        "one call.ended per call"
    );
    // A second start finds nothing left to repair.
    server.restart();
    assert_eq!(server.calls().unwrap().len(), (SHORT + LONG) as usize);
}
