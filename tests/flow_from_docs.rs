//! The support-hotline flow in tests/fixtures/flows-from-docs/hotline.yaml was written
//! from docs/ivr.md alone. These tests verify it the way the docs tell an operator to:
//! `switchboard check` and `switchboard simulate`, running the real binary.
//! Standalone: std only, no shared test helpers.

use std::path::PathBuf;
use std::process::{Command, Output};

/// A Monday, noon in New York: open.
const OPEN_AT: &str = "2026-12-21T12:00:00-05:00";
/// Christmas Day 2026 (a Friday), noon in New York: a holiday, closed.
const CLOSED_AT: &str = "2026-12-25T12:00:00-05:00";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn flows_dir() -> PathBuf {
    root().join("tests/fixtures/flows-from-docs")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run switchboard")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// `switchboard simulate hotline.yaml --keys KEYS --at AT`; asserts it succeeds and
/// returns its standard output.
fn simulate(keys: &str, at: &str) -> String {
    let flow = flows_dir().join("hotline.yaml");
    let out = run(&[
        "simulate",
        flow.to_str().unwrap(),
        "--keys",
        keys,
        "--at",
        at,
    ]);
    let stdout = text(&out.stdout);
    assert!(
        out.status.success(),
        "simulate --keys {keys:?} --at {at} failed ({:?})\nstdout:\n{stdout}\nstderr:\n{}",
        out.status,
        text(&out.stderr)
    );
    stdout
}

/// The trace lines that contain `needle`.
fn lines_with<'a>(trace: &'a str, needle: &str) -> Vec<&'a str> {
    trace.lines().filter(|l| l.contains(needle)).collect()
}

/// Asserts the call ends in exactly one transfer, to `extension`, via node `node`.
fn assert_transfer(trace: &str, node: &str, extension: &str) {
    let transfers = lines_with(trace, "transfer to ");
    assert_eq!(transfers.len(), 1, "expected one transfer:\n{trace}");
    assert!(
        transfers[0].ends_with(&format!("transfer to extension {extension}")),
        "expected a transfer to {extension}, got {:?}\n{trace}",
        transfers[0]
    );
    assert_eq!(
        lines_with(trace, &format!("hotline/{node} (transfer)")).len(),
        1,
        "expected node {node}:\n{trace}"
    );
    assert!(trace.contains("finished: Transferred"), "{trace}");
    assert!(
        trace.contains("open at Mon 2026-12-21 12:00 America/New_York"),
        "{trace}"
    );
    assert!(!trace.contains("closed_message"), "{trace}");
}

#[test]
fn check_reports_no_errors() {
    // The demo config routes DID 100 to flow "main", which is not in the fixture
    // directory, so the check uses a config made for it (see the file's comment).
    let config = root().join("tests/fixtures/flows-from-docs.switchboard.yaml");
    let prompts = root().join("prompts");
    let flows = flows_dir();
    let out = run(&[
        "check",
        "--config",
        config.to_str().unwrap(),
        "--flows",
        flows.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "check failed ({:?})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stderr.trim().is_empty(), "errors:\n{stderr}");
    assert!(stdout.contains("flows-from-docs: ok (1 flow)"), "{stdout}");
}

#[test]
fn check_with_the_demo_config_finds_nothing_wrong_in_the_hotline_flow() {
    // With the default config the only error is the demo config's DID 100 -> "main";
    // nothing may be reported against hotline.yaml itself.
    let prompts = root().join("prompts");
    let flows = flows_dir();
    let out = run(&[
        "check",
        "--flows",
        flows.to_str().unwrap(),
        "--prompts",
        prompts.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        lines_with(&stderr, "hotline.yaml").is_empty(),
        "errors in the flow:\n{stderr}"
    );
    assert!(
        lines_with(&stdout, "hotline.yaml").is_empty(),
        "warnings in the flow:\n{stdout}"
    );
    assert!(stdout.contains("flows-from-docs: ok (1 flow)"), "{stdout}");
}

#[test]
fn key_0_reaches_the_operator() {
    let trace = simulate("0", OPEN_AT);
    assert!(trace.contains("hotline/main_menu (menu)"), "{trace}");
    assert!(trace.contains("key 0"), "{trace}");
    assert_transfer(&trace, "operator", "2001");
}

#[test]
fn account_starting_with_9_goes_to_the_operator() {
    let trace = simulate("1,912345#", OPEN_AT);
    assert!(trace.contains("hotline/ask_account (collect)"), "{trace}");
    assert!(trace.contains("account = \"912345\""), "{trace}");
    assert!(trace.contains("hotline/tag_account (set)"), "{trace}");
    assert!(trace.contains("hotline/route_account (branch)"), "{trace}");
    assert_transfer(&trace, "operator", "2001");
}

#[test]
fn other_accounts_go_to_support() {
    let trace = simulate("1,123456#", OPEN_AT);
    assert!(trace.contains("account = \"123456\""), "{trace}");
    assert!(trace.contains("hotline/route_account (branch)"), "{trace}");
    assert_transfer(&trace, "support", "2002");
}

#[test]
fn christmas_plays_closed_and_hangs_up() {
    let trace = simulate("", CLOSED_AT);
    assert!(
        trace.contains("closed at Fri 2026-12-25 12:00 America/New_York"),
        "{trace}"
    );
    assert!(trace.contains("hotline/closed_message (play)"), "{trace}");
    assert!(trace.contains("play en/closed.wav"), "{trace}");
    assert!(trace.contains("hotline/bye (hangup)"), "{trace}");
    assert!(trace.contains("finished: Completed"), "{trace}");
    assert!(!trace.contains("main_menu"), "{trace}");
    assert!(lines_with(&trace, "transfer to ").is_empty(), "{trace}");
}
