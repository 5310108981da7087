//! Hot reload under load: 200 calls are in an IVR flow while its file is replaced. None is
//! dropped, the calls that arrive after the reload follow the new flow, and a broken
//! replacement is refused while calls keep being answered by the flow in force.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const CALLS: u32 = 200;
const RATE: u32 = 40;
const HOLD_MS: u64 = 6_000;

/// A flow that greets and then waits for a key the caller never presses; `tag` names
/// its waiting node, so each call's trace tells which version answered it.
fn waiting_flow(tag: &str) -> String {
    format!(
        "name: main\nentry: wait_{tag}\nprompts: en\nnodes:\n  wait_{tag}:\n    menu:\n      \
         prompts: [welcome]\n      options:\n        \"1\": bye\n      timeout_secs: 30\n      \
         retries: 0\n      on_fail: bye\n  bye:\n    hangup:\n"
    )
}

/// Replaces a file the way editors do: write aside, then rename over it.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn wait_for_log(server: &Server, needle: &str, count: usize) {
    let end = Instant::now() + Duration::from_secs(15);
    while server.stderr().matches(needle).count() < count {
        assert!(
            Instant::now() < end,
            "the log never said {needle:?} ({count} times)\n{}",
            server.stderr_tail(30)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn flows_reload_under_load_without_dropping_calls() {
    let dir = tempfile::tempdir().unwrap();
    let flow = dir.path().join("main.yaml");
    std::fs::write(&flow, waiting_flow("v1")).unwrap();
    let server = Server::start_with(ServerConfig {
        rtp_port_count: 1_000,
        dids: Vec::new(),
        flow_dids: vec![("100".into(), "main".into())],
        ivr: Some((
            dir.path().to_path_buf(),
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts"),
        )),
        ..ServerConfig::default()
    });

    let callers = Sipp::new("uac_hold_line.xml")
        .service("100")
        .calls(CALLS)
        .duration_ms(HOLD_MS)
        .timeout_secs(90)
        .no_message_trace()
        .args(&["-r", &RATE.to_string(), "-l", &CALLS.to_string()])
        .spawn(&server);

    // Half-way through the arrivals, with ~100 calls in the flow, the file is replaced.
    std::thread::sleep(Duration::from_millis(
        u64::from(CALLS / 2) * 1000 / u64::from(RATE),
    ));
    replace(&flow, &waiting_flow("v2"));
    wait_for_log(&server, "IVR flows reloaded", 1);

    let run = callers.wait(Duration::from_secs(60));
    run.assert_ok(&server, "200 calls held in the IVR across a reload");
    let (_, failed) = run.stat_col(18).expect("SIPp statistics");
    assert_eq!(failed, 0, "calls dropped:\n{}", run.report());

    let rows = server.wait_for_calls(CALLS as usize, Duration::from_secs(20));
    assert_eq!(rows.len(), CALLS as usize, "one record per call");
    let version = |r: &CallRecord| {
        let t = r.ivr_trace.clone().unwrap_or_default();
        match (t.contains("main/wait_v1"), t.contains("main/wait_v2")) {
            (true, false) => 1,
            (false, true) => 2,
            _ => panic!("a call not answered by exactly one version: {r:#?}"),
        }
    };
    let last_v1 = rows
        .iter()
        .filter(|r| version(r) == 1)
        .filter_map(|r| r.arrived_ms)
        .max();
    let first_v2 = rows
        .iter()
        .filter(|r| version(r) == 2)
        .filter_map(|r| r.arrived_ms)
        .min();
    let (last_v1, first_v2) = (
        last_v1.expect("calls before the reload ran v1"),
        first_v2.expect("calls after the reload ran v2"),
    );
    assert!(
        last_v1 <= first_v2,
        "every call that arrived after the reload follows the new flow"
    );
    assert!(
        rows.iter()
            .all(|r| r.hangup_by.as_deref() == Some("caller")),
        "every caller stayed until its own hang-up"
    );

    // A broken replacement is refused with its position; calls go on with v2.
    replace(
        &flow,
        "name: main\nentry: nowhere\nnodes:\n  bye:\n    hangup:\n",
    );
    wait_for_log(&server, "IVR flows not reloaded", 1);
    assert!(
        server.stderr().contains("main.yaml:2:"),
        "the refusal names the file and line:\n{}",
        server.stderr_tail(20)
    );
    let more = Sipp::new("uac_hold_line.xml")
        .service("100")
        .calls(5)
        .duration_ms(1_000)
        .args(&["-r", "5"])
        .run(&server);
    more.assert_ok(&server, "calls after a refused reload");
    let rows = server.wait_for_calls(CALLS as usize + 5, Duration::from_secs(10));
    assert!(rows[CALLS as usize..].iter().all(|r| version(r) == 2));

    // `switchboard reload` asks the running server (by its data directory) to re-read
    // the flows at once.
    replace(&flow, &waiting_flow("v3"));
    let out = std::process::Command::new(switchboard_bin())
        .args(["reload", "--data-dir"])
        .arg(&server.data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for_log(&server, "SIGHUP: reloading the IVR flows", 1);
    wait_for_log(&server, "IVR flows reloaded", 2);
}
