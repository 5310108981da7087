//! Faults of the disk and the store, on real calls.
//!
//! * The data directory is a small file system of its own, filled up while three
//!   recorded calls talk: the calls go on, the recordings that cannot be written stop
//!   (and say so on `/metrics`), what they kept is a readable WAV whose length is in the
//!   record, the recording and record written before are byte for byte unchanged, and
//!   once space is back every record is written and the next call is recorded whole.
//! * The database is locked by another process for longer than the store waits: the
//!   calls that end meanwhile keep their records queued (`/metrics` shows them waiting),
//!   and every one is written once the lock goes.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::api::{sample, Api, REPORTING};
use common::audio::read_wav;
use common::*;

/// A tmpfs of `size` mounted on a directory of its own; unmounted on drop.
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(size: &str) -> SmallDisk {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-small-disk-")
            .tempdir()
            .unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount (Debian package mount)");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs for the full-disk test needs root: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills the file system up to `leave` bytes, with one file; returns its path.
    fn fill(&self, leave: u64) -> PathBuf {
        let path = self.path().join("filler");
        let mut f = std::fs::File::create(&path).unwrap();
        let block = vec![0x55u8; 64 * 1024];
        loop {
            match f.write(&block) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
                Err(e) => panic!("filling the disk: {e}"),
            }
        }
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(leave)).unwrap();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn metrics(server: &Server) -> String {
    Api::new(server).get("/metrics", REPORTING).text
}

fn wait_for_no_record_pending(server: &Server) {
    server.wait_until("no record left waiting", Duration::from_secs(10), || {
        sample(&metrics(server), "switchboard_store_records_pending") == 0.0
    });
}

/// The faults here are the data directory's (its disk full, its SQLite file locked): the
/// store stays SQLite when the suite runs on PostgreSQL.
fn recorded_server(data_dir: Option<PathBuf>) -> Server {
    Server::start_with(ServerConfig {
        api: true,
        data_dir,
        sqlite_only: true,
        extra_yaml: vec!["recording:\n  policy: always".into()],
        ..ServerConfig::default()
    })
}

fn caller(calls: u32, ms: u64) -> Sipp {
    Sipp::new("uac_call.xml")
        .service("2001")
        .calls(calls)
        .duration_ms(ms)
        .timeout_secs(60)
        .args(&["-l", "10"])
}

#[test]
fn a_full_disk_stops_recordings_not_calls_and_corrupts_nothing_written_before() {
    require_pcap();
    let disk = SmallDisk::mount("8m");
    let data = disk.path().join("data");
    let server = recorded_server(Some(data.clone()));
    let callee = server.start_callee_with("2001", "uas_answer.xml", |sipp| {
        sipp.calls(5).timeout_secs(120)
    });

    // One call recorded while there is room: the evidence that must stay intact.
    let first = caller(1, 2_000).run(&server);
    assert_eq!(
        first.stat("SuccessfulCall(C)"),
        Some(1),
        "{}",
        first.report()
    );
    let before = server.wait_for_calls(1, Duration::from_secs(10)).remove(0);
    let first_file = data.join(before.recording.as_deref().expect("recorded"));
    let first_bytes = std::fs::read(&first_file).unwrap();
    assert!(read_wav(&first_file).duration() > Duration::from_millis(1_500));

    // Three calls talk while the disk fills: about 100 KB is left, 2 s of their
    // recordings at most.
    let filler = disk.fill(100 * 1024);
    let full = caller(3, 6_000).run(&server);
    assert_eq!(
        full.stat("SuccessfulCall(C)"),
        Some(3),
        "the calls go on while the disk is full\n{}\nswitchboard stderr tail:\n{}",
        full.report(),
        server.stderr_tail(40)
    );
    let shown = metrics(&server);
    assert!(
        sample(&shown, "switchboard_recordings_failed_total") >= 1.0,
        "/metrics counts the recordings the full disk stopped:\n{shown}"
    );
    assert!(
        server.stderr().contains("recording stopped"),
        "the fault is logged\n{}",
        server.stderr_tail(40)
    );

    // Space comes back: every record is written, nothing waits any more.
    std::fs::remove_file(&filler).unwrap();
    let records = server.wait_for_calls(4, Duration::from_secs(30));
    wait_for_no_record_pending(&server);
    assert_eq!(
        std::fs::read(&first_file).unwrap(),
        first_bytes,
        "the recording finished before the disk filled is unchanged"
    );
    let first_now = records
        .iter()
        .find(|r| r.call_uuid == before.call_uuid)
        .unwrap();
    assert_eq!(format!("{first_now:?}"), format!("{before:?}"));
    let mut shortened = 0;
    for rec in &records {
        assert_eq!(rec.disposition.as_deref(), Some("answered"), "{rec:#?}");
        assert_eq!(rec.hangup_by.as_deref(), Some("caller"), "{rec:#?}");
        let Some(name) = rec.recording.as_deref() else {
            // The disk had no room even for the file: the record names none.
            assert_eq!(rec.recording_ms, None, "{rec:#?}");
            shortened += 1;
            continue;
        };
        let file = data.join(name);
        let wav = read_wav(&file);
        assert_eq!(wav.channels.len(), 2, "{}", file.display());
        let secs = wav.duration().as_secs_f64();
        let noted = rec.recording_ms.unwrap_or_else(|| {
            panic!(
                "the kept length is in the record: {rec:#?}\nswitchboard stderr tail:\n{}",
                server.stderr_tail(30)
            )
        });
        assert!(
            (secs * 1000.0 - noted as f64).abs() < 100.0,
            "{} plays {secs:.2} s, its record says {noted} ms",
            file.display()
        );
        if secs < 4.0 {
            shortened += 1;
        }
    }
    assert!(shortened >= 1, "the full disk cut a recording short");

    // And the next call is recorded whole.
    let after = caller(1, 2_000).run(&server);
    assert_eq!(
        after.stat("SuccessfulCall(C)"),
        Some(1),
        "{}",
        after.report()
    );
    let records = server.wait_for_calls(5, Duration::from_secs(10));
    let last = records.iter().max_by_key(|r| r.id).unwrap();
    let wav = read_wav(&data.join(last.recording.as_deref().unwrap()));
    assert!(
        wav.duration() > Duration::from_millis(1_500),
        "recorded whole after the fault: {:?}",
        wav.duration()
    );
    drop(callee.kill());
    drop(server);
}

/// Holds the database's write lock from another process until dropped.
struct Locker {
    child: std::process::Child,
}

impl Locker {
    fn lock(db: &Path, secs: u64) -> Locker {
        let mut child = Command::new(require_tool("sqlite3", "sqlite3"))
            .arg(db)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let script = format!("BEGIN EXCLUSIVE;\n.print locked\n.system sleep {secs}\nCOMMIT;\n");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(script.as_bytes())
            .unwrap();
        let mut said = [0u8; 6];
        child
            .stdout
            .as_mut()
            .unwrap()
            .read_exact(&mut said)
            .unwrap();
        assert_eq!(&said, b"locked");
        Locker { child }
    }

    fn wait(mut self) {
        self.child.wait().unwrap();
    }
}

#[test]
fn calls_that_end_while_the_database_is_locked_keep_their_records() {
    require_pcap();
    let server = recorded_server(None);
    let callee = server.start_callee_with("2001", "uas_answer.xml", |sipp| {
        sipp.calls(3).timeout_secs(120)
    });
    // Longer than the store's 5 s busy wait, and than the calls.
    let locker = Locker::lock(&server.db_path(), 12);
    let run = caller(3, 2_000).run(&server);
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(3), "{}", run.report());
    let shown = metrics(&server);
    assert_eq!(
        sample(&shown, "switchboard_store_records_pending"),
        3.0,
        "the three records wait for the store:\n{shown}"
    );
    server.wait_until("a failed write counted", Duration::from_secs(10), || {
        sample(
            &metrics(&server),
            "switchboard_store_record_write_failures_total",
        ) >= 1.0
    });
    locker.wait();
    let records = server.wait_for_calls(3, Duration::from_secs(20));
    assert!(records
        .iter()
        .all(|r| r.disposition.as_deref() == Some("answered") && r.recording_ms.is_some()));
    wait_for_no_record_pending(&server);
    assert!(
        server
            .stderr()
            .contains("could not write a call record; keeping it and retrying"),
        "the outage is logged\n{}",
        server.stderr_tail(20)
    );
    drop(callee.kill());
}

#[test]
fn a_crash_while_the_database_is_locked_loses_no_record() {
    require_pcap();
    let mut server = recorded_server(None);
    let callee = server.start_callee_with("2001", "uas_answer.xml", |sipp| {
        sipp.calls(2).timeout_secs(120)
    });
    let locker = Locker::lock(&server.db_path(), 12);
    let run = caller(2, 1_000).run(&server);
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(2), "{}", run.report());
    // The records wait for the store, and on disk.
    let journal = server.data_dir().join("records-journal.jsonl");
    server.wait_until(
        "the waiting records journaled",
        Duration::from_secs(10),
        || std::fs::read_to_string(&journal).is_ok_and(|t| t.lines().count() == 2),
    );
    // The machine dies before the database is free again.
    server.kill();
    locker.wait();
    server.crash_and_restart();
    let records = server.wait_for_calls(2, Duration::from_secs(10));
    assert!(
        records
            .iter()
            .all(|r| r.disposition.as_deref() == Some("answered") && r.reason.is_none()),
        "the calls' own records, not interrupted ones: {records:#?}"
    );
    assert!(!journal.exists(), "the journal is emptied into the store");
    drop(callee.kill());
}
