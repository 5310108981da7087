//! Two Switchboard nodes behind Kamailio's dispatcher, sharing one PostgreSQL store (the
//! shipped config/kamailio recipe): an agent whose phone registered through one node
//! answers a caller queued on the other, with audio both ways; a queue's order is one
//! order across the nodes; 500 calls through the dispatcher land on both, and when one
//! node is killed in the middle only its calls in progress are lost, the dispatcher sends
//! the next ones to the survivor, and every call still has a record.

mod common;

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

/// Kamailio with the shipped configuration, dispatching to `nodes` (SIP ports on
/// 127.0.0.1); killed on drop.
struct Kamailio {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Kamailio {
    fn start(nodes: &[u16]) -> Kamailio {
        let bin = require_tool("kamailio", "kamailio");
        let dir = tempfile::Builder::new()
            .prefix("kamailio-")
            .tempdir()
            .unwrap();
        let list = dir.path().join("dispatcher.list");
        let lines: String = nodes
            .iter()
            .map(|p| format!("1 sip:{LOCALHOST}:{p} 0 0\n"))
            .collect();
        std::fs::write(&list, lines).unwrap();
        let port = alloc_ports(1);
        let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config/kamailio/kamailio.cfg");
        let run_dir = dir.path().to_str().unwrap();
        // Its own process group: Kamailio forks workers, which outlive a killed main
        // process and would go on pinging ports that later tests take.
        use std::os::unix::process::CommandExt;
        let child = Command::new(bin)
            .process_group(0)
            .arg("-f")
            .arg(&cfg)
            .args(["-DD", "-E", "-m", "256", "-w", run_dir, "-Y", run_dir])
            .arg("-P")
            .arg(dir.path().join("kamailio.pid"))
            .arg("-A")
            .arg(format!("LISTEN=udp:{LOCALHOST}:{port}"))
            .arg("-A")
            .arg(format!("PING_FROM=\"sip:kamailio@{LOCALHOST}:{port}\""))
            .arg("-A")
            .arg(format!("DS_LIST=\"{}\"", list.display()))
            .arg("-A")
            .arg(format!("CTL_SOCKET=\"unix:{run_dir}/kamailio_ctl\""))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start kamailio");
        assert!(
            wait_udp_bound(port, Duration::from_secs(10)),
            "kamailio did not listen on {port}"
        );
        Kamailio {
            child,
            port,
            _dir: dir,
        }
    }

    fn addr(&self) -> String {
        format!("{LOCALHOST}:{}", self.port)
    }
}

impl Drop for Kamailio {
    fn drop(&mut self) {
        // The whole group, workers included.
        let group = -(self.child.id() as i32);
        // SAFETY: kill(2) with a process group id; no memory is involved.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// A node of the cluster: one queue, `support`, served by agent 2001 (the IVR's DID 100
/// queues callers in it); DIDs 2001–2003 ring those extensions.
fn node(name: &str, store: &str) -> (tempfile::TempDir, Server) {
    queue_server(
        "support",
        &["  - { name: support, strategy: longest_idle, ring_timeout_secs: 10, wrap_up_secs: 0, members: [\"2001\"] }"],
        ServerConfig {
            shared_store: Some(store.to_string()),
            rtp_port_count: 600,
            // The queued callers send no RTP while they wait.
            rtp_timeout_secs: Some(0),
            extra_yaml: vec![format!(
                "cluster: {{ node: {name}, dead_after_secs: 3, drain_notice_secs: 2 }}"
            )],
            ..ServerConfig::default()
        },
    )
}

/// Registers `ext` through Kamailio from `port`; returns the node that took it.
fn register_through(kam: &Kamailio, any: &Server, ext: &str, port: u16) -> String {
    Sipp::new("register_ok.xml")
        .service(ext)
        .auth(ext, &any.config.password(ext))
        .local_port(port)
        .run_to(&kam.addr())
        .assert_ok(any, &format!("REGISTER of {ext} through Kamailio"));
    let mut node = None;
    any.wait_until(
        &format!("{ext}'s registration shared"),
        Duration::from_secs(5),
        || {
            node = rows(
                any,
                &format!("SELECT node FROM registrations WHERE username = '{ext}'"),
            )
            .first()
            .map(|r| r[0].clone());
            node.is_some()
        },
    );
    node.unwrap()
}

/// The query's rows, NULLs as empty strings.
fn rows(server: &Server, sql: &str) -> Vec<Vec<String>> {
    server
        .query(sql)
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .map(|r| r.into_iter().map(Option::unwrap_or_default).collect())
        .collect()
}

fn count(server: &Server, sql: &str) -> usize {
    rows(server, sql)[0][0].parse().unwrap()
}

#[test]
fn two_nodes_behind_kamailio_share_agents_queue_order_and_survive_a_node_loss() {
    require_pcap();
    let store = postgres_database();
    let (_fa, a) = node("a", &store);
    let (_fb, b) = node("b", &store);
    let kam = Kamailio::start(&[a.sip_port, b.sip_port]);
    let by_name = |n: &str| if n == "a" { &a } else { &b };

    // -- An agent registered through one node answers a caller queued on the other.
    let agent_port = alloc_ports(1);
    let home = register_through(&kam, &a, "2001", agent_port);
    let other = if home == "a" { "b" } else { "a" };
    let agent = Sipp::new("uas_answer_then_bye.xml")
        .local_port(agent_port)
        .media_port(alloc_ports(4))
        .calls(8)
        .duration_ms(1_500)
        .timeout_secs(90)
        .no_message_trace()
        .args(&["-rtp_echo"])
        .no_remote()
        .spawn(&a);
    // This caller plays audio as soon as it is answered (the IVR, then the agent).
    let first = Sipp::new("uac_call_wait_bye.xml")
        .service("100")
        .timeout_secs(40)
        .run(by_name(other));
    if !first.success() {
        eprintln!(
            "--- node {home} (the agent's) ---\n{}",
            by_name(&home).stderr_tail(60)
        );
    }
    first.assert_ok(
        by_name(other),
        "the caller queued on the node the agent is not on",
    );
    let rec = by_name(other)
        .wait_for_calls(1, Duration::from_secs(10))
        .remove(0);
    assert_eq!(rec.queue.as_deref(), Some("support"), "{rec:#?}");
    assert_eq!(rec.target.as_deref(), Some("2001"), "{rec:#?}");
    // Audio both ways through the other node's bridge: the caller's RTP reached the
    // agent (echoed back) and the agent's reached the caller.
    for (what, n) in [
        ("from the caller", rec.a_rtp_in),
        ("to the caller", rec.a_rtp_out),
        ("from the agent", rec.b_rtp_in),
        ("to the agent", rec.b_rtp_out),
    ] {
        assert!(n.unwrap_or(0) > 20, "RTP {what}: {n:?} packets\n{rec:#?}");
    }

    // -- One queue order across the nodes: six callers, to a and b in turn, 300 ms
    // apart, while the agent is busy with the first: answered in the order they came.
    let blocker = Sipp::new("uac_queue_patience.xml")
        .service("100")
        .timeout_secs(60)
        .spawn(&a);
    std::thread::sleep(Duration::from_millis(800));
    let mut callers = Vec::new();
    for i in 0..6 {
        let to = if i % 2 == 0 { &a } else { &b };
        callers.push((
            to,
            Sipp::new("uac_queue_patience.xml")
                .service("100")
                .timeout_secs(60)
                .spawn(to),
        ));
        std::thread::sleep(Duration::from_millis(300));
    }
    blocker
        .wait(Duration::from_secs(70))
        .assert_ok(&a, "the caller ahead");
    for (to, c) in callers {
        c.wait(Duration::from_secs(70))
            .assert_ok(to, "a queued caller");
    }
    agent
        .wait(Duration::from_secs(30))
        .assert_ok(&a, "the agent answers eight calls");
    let entered: Vec<String> = rows(
        &a,
        "SELECT call_uuid FROM events WHERE type = 'queue.entered' ORDER BY seq",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    let answered: Vec<String> = rows(
        &a,
        "SELECT call_uuid FROM events WHERE type = 'queue.answered' ORDER BY seq",
    )
    .into_iter()
    .map(|r| r[0].clone())
    .collect();
    assert_eq!(entered.len(), 8, "{entered:?}");
    assert_eq!(
        answered, entered,
        "answered in the order the callers entered the queue"
    );
    let queued_on: Vec<String> = entered
        .iter()
        .map(|uuid| {
            rows(
                &a,
                &format!(
                    "SELECT node FROM events WHERE type = 'call.arrived' AND call_uuid = '{uuid}'"
                ),
            )[0][0]
                .clone()
        })
        .collect();
    assert_eq!(
        queued_on[2..],
        ["a", "b", "a", "b", "a", "b"],
        "the six callers entered from a and b in turn: {queued_on:?}"
    );

    // -- 500 calls through the dispatcher to extension 2002, whose phone registered
    // through Kamailio; node b is killed half-way.
    let callee_port = alloc_ports(1);
    register_through(&kam, &a, "2002", callee_port);
    let callee = Sipp::new("uas_answer.xml")
        .local_port(callee_port)
        .media_port(alloc_ports(4))
        .calls(500)
        .timeout_secs(120)
        .no_message_trace()
        .no_remote()
        .spawn(&a);
    let calls = Sipp::new("uac_call.xml")
        .service("2002")
        .calls(500)
        .duration_ms(2_000)
        .timeout_secs(100)
        .no_message_trace()
        .args(&["-r", "25", "-l", "100"])
        .spawn_to(&kam.addr());
    std::thread::sleep(Duration::from_secs(10));
    let mut b = b;
    let killed_at = now_ms();
    b.kill();
    let run = calls.wait(Duration::from_secs(120));
    let _ = callee.kill();
    let failed = run.stat("FailedCall(C)").unwrap_or(u64::MAX) as usize;

    let of_2002 =
        "FROM calls c JOIN events e ON e.call_uuid = c.call_uuid AND e.type = 'call.arrived' \
                   WHERE c.dialed = '2002'";
    // Per SIP call (its Call-ID): a call that reached b just as it died and was then
    // sent to a by Kamailio has b's interrupted record and a's own.
    let records = || count(&a, &format!("SELECT COUNT(DISTINCT c.a_call_id) {of_2002}"));
    let end = std::time::Instant::now() + Duration::from_secs(20);
    while records() != 500 && std::time::Instant::now() < end {
        std::thread::sleep(Duration::from_millis(200));
    }
    // A call b answered in the last milliseconds before the kill, before its first event
    // reached the database, leaves nothing for a to record: at most one or two, at this
    // rate. Every other call has its record.
    let recorded = records();
    assert!(
        (498..=500).contains(&recorded),
        "a record of each of the 500 calls: {recorded} ({} records to 2002 in all; \
         callers: {failed} failed)\n{}",
        count(&a, "SELECT COUNT(*) FROM calls WHERE dialed = '2002'"),
        run.report()
    );
    let by_node = |n: &str, extra: &str| {
        count(
            &a,
            &format!("SELECT COUNT(*) {of_2002} AND e.node = '{n}' {extra}"),
        )
    };
    assert!(
        by_node("a", "") > 100 && by_node("b", "") > 100,
        "both nodes took calls: a {} b {}",
        by_node("a", ""),
        by_node("b", "")
    );
    // b's calls in progress at the kill: recorded by a, as interrupted.
    let interrupted = by_node("b", "AND c.reason LIKE 'interrupted%'");
    assert!(
        interrupted > 0,
        "b had calls in progress when it was killed"
    );
    assert_eq!(
        by_node("a", "AND c.reason LIKE 'interrupted%'"),
        0,
        "a lost no call"
    );
    assert!(
        failed <= interrupted + 2,
        "callers lost {failed} calls, b had {interrupted} in progress"
    );
    eprintln!(
        "500 calls through the dispatcher, {recorded} with a record: a took {}, b {} \
         ({interrupted} in progress when it was killed, recorded by a); callers lost {failed}",
        by_node("a", ""),
        by_node("b", "")
    );
    // After the dispatcher noticed (its keep-alive every second), the calls went to a.
    let late_on_a = by_node("a", &format!("AND c.arrived_ms > {}", killed_at + 3_000));
    assert!(late_on_a > 50, "a took only {late_on_a} calls after b died");
}
