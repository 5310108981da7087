//! Retention: `switchboard prune` exports the records of calls before a date to a file,
//! then deletes them (with their events and queue log) from the store, whichever
//! database it is.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn prune_exports_then_deletes_the_records_before_the_cutoff() {
    require_pcap();
    let mut server = Server::start();
    let callee = server.start_callee("2001", "uas_answer.xml", &[]);
    Sipp::new("uac_call.xml")
        .service("2001")
        .duration_ms(500)
        .run(&server)
        .assert_ok(&server, "a call to 2001");
    callee.wait(Duration::from_secs(10));
    let rec = server.single_call();
    server.terminate(Duration::from_secs(20));

    let export = server.dir.path().join("old-calls.jsonl");
    let prune = |before: &str, export: Option<&std::path::Path>| {
        let mut cmd = std::process::Command::new(switchboard_bin());
        cmd.arg("prune")
            .arg("--before")
            .arg(before)
            .args(server.store_source_args());
        if let Some(f) = export {
            cmd.arg("--export").arg(f);
        }
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        text
    };
    // A cutoff before the call keeps it.
    let kept = prune("2020-01-01", None);
    assert!(kept.contains("deleted 0 call records"), "{kept}");
    assert_eq!(server.calls().unwrap().len(), 1);

    // A cutoff after it: written to the export file, then gone from the store.
    let after = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24)).to_string();
    let text = prune(&after, Some(&export));
    assert!(
        text.contains("deleted 1 call records") && text.contains("1 records exported"),
        "{text}"
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&export)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["call_uuid"].as_str(), rec.call_uuid.as_deref());
    assert!(server.calls().unwrap().is_empty());
    let events = server.query("SELECT COUNT(*) FROM events").unwrap();
    assert_eq!(
        events[0][0].as_deref(),
        Some("0"),
        "the event log before the cutoff is gone"
    );

    let bad = std::process::Command::new(switchboard_bin())
        .args(["prune", "--before", "last tuesday"])
        .args(server.store_source_args())
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("give a date"),
        "{bad:?}"
    );
}
