//! Test harness for the integration tests: runs the real `switchboard` binary on
//! loopback with a generated configuration, drives it with SIPp (and other real
//! peers), and reads the call records it writes.
//!
//! Everything runs on 127.0.0.1. Ports come from [`alloc_ports`], which hands out
//! blocks that are free right now and never hands out the same block twice in one
//! test process, so tests can run in parallel threads.
//!
//! External tools are required, never optional: a missing `sipp`, `sqlite3`, … makes
//! the test fail with the Debian package to install (see [`require_tool`]).
//!
//! Submodules: [`phone`], baresip as a scripted softphone; [`audio`], which tones
//! a recording contains; [`rtp`], RTP packets and capture files for SIPp to replay.
//!
//! Every test binary includes this whole module and uses only part of it, hence
//! the `allow(dead_code)`, which covers the submodules too.

#![allow(dead_code)]

pub mod api;
pub mod audio;
pub mod browser;
pub mod digest;
pub mod nat;
pub mod phone;
pub mod rtp;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Directory of the SIPp scenarios.
pub const SCENARIOS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/scenarios");
/// The PCMA speech capture shipped by Debian's sip-tester package.
pub const G711A_PCAP: &str = "/usr/share/sip-tester/g711a.pcap";
/// Loopback address everything binds to.
pub const LOCALHOST: &str = "127.0.0.1";

/// How long the server may take to print `switchboard ready`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Grace period between SIGTERM and SIGKILL when a server is dropped.
const STOP_GRACE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------
// Tools
// ---------------------------------------------------------------------------

/// Returns the full path of `tool`, or panics telling which Debian package
/// provides it. Tests never skip because a tool is missing: they fail.
pub fn require_tool(tool: &str, debian_package: &str) -> PathBuf {
    if let Some(path) = find_in_path(tool) {
        return path;
    }
    panic!(
        "required tool `{tool}` was not found in PATH; install the Debian package \
         `{debian_package}` (apt-get install -y {debian_package}), or run \
         scripts/setup-and-test.sh which installs every test dependency"
    );
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(tool))
        .find(|p| p.is_file())
}

/// The pcap every caller scenario plays; it comes with sip-tester.
pub fn require_pcap() -> &'static str {
    require_tool("sipp", "sip-tester");
    assert!(
        Path::new(G711A_PCAP).is_file(),
        "{G711A_PCAP} is missing; install the Debian package `sip-tester` \
         (apt-get install -y sip-tester)"
    );
    G711A_PCAP
}

pub fn scenario(name: &str) -> String {
    let p = format!("{SCENARIOS}/{name}");
    assert!(Path::new(&p).is_file(), "scenario {p} does not exist");
    p
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

// ---------------------------------------------------------------------------
// Ports
// ---------------------------------------------------------------------------

/// Ports below Linux's ephemeral range (32768+), so nothing picks ours at random.
const PORT_FLOOR: u32 = 10_000;
const PORT_CEIL: u32 = 32_000;
/// Each test process works in its own window of the range (chosen from its pid),
/// so two test binaries started side by side rarely even probe the same ports.
const WINDOW: u32 = 5_500;

static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

fn window_base() -> u32 {
    static BASE: OnceLock<u32> = OnceLock::new();
    *BASE.get_or_init(|| {
        let windows = (PORT_CEIL - PORT_FLOOR) / WINDOW;
        PORT_FLOOR + (std::process::id() % windows) * WINDOW
    })
}

/// A block of `n` consecutive ports that are free for both UDP and TCP on
/// 127.0.0.1 right now. Blocks never overlap within this process.
pub fn alloc_ports(n: u16) -> u16 {
    let n = u32::from(n);
    assert!(n > 0 && n < WINDOW / 2, "port block of {n} is too large");
    let base = window_base();
    for _ in 0..(WINDOW * 2) {
        let off = NEXT_PORT.fetch_add(n, Ordering::SeqCst) % WINDOW;
        if off + n > WINDOW {
            // would cross the end of the window; skip to its start
            let _ = NEXT_PORT.fetch_add(WINDOW - off, Ordering::SeqCst);
            continue;
        }
        let first = base + off;
        if (first..first + n).all(|p| port_free(p as u16)) {
            return first as u16;
        }
    }
    panic!("no free block of {n} ports in {base}..{}", base + WINDOW);
}

/// Both UDP and TCP can bind 127.0.0.1:port.
pub fn port_free(port: u16) -> bool {
    UdpSocket::bind((LOCALHOST, port)).is_ok() && TcpListener::bind((LOCALHOST, port)).is_ok()
}

/// Waits until something has bound UDP 127.0.0.1:port (a peer we started is up).
pub fn wait_udp_bound(port: u16, timeout: Duration) -> bool {
    wait_udp_bound_on(LOCALHOST, port, timeout)
}

/// Waits until something has bound UDP ip:port.
pub fn wait_udp_bound_on(ip: &str, port: u16, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if UdpSocket::bind((ip, port)).is_err() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

// ---------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct User {
    pub extension: String,
    pub name: String,
    pub password: String,
    pub role: String,
}

/// The demo configuration with the knobs the tests turn. Listener ports, the RTP
/// range and the data directory are filled in by [`Server::start_with`].
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub ring_timeout_secs: u64,
    pub drain_timeout_secs: u64,
    pub t1_ms: Option<u64>,
    /// (name, peers) of each trunk.
    pub trunks: Vec<(String, Vec<String>)>,
    pub users: Vec<User>,
    /// (number, extension)
    pub dids: Vec<(String, String)>,
    /// (number, flow name): DIDs answered by an IVR flow.
    pub flow_dids: Vec<(String, String)>,
    /// The `ivr:` section: flow directory and prompt root.
    pub ivr: Option<(PathBuf, PathBuf)>,
    /// More command-line arguments for `serve` (e.g. `--clock`).
    pub extra_args: Vec<String>,
    /// `outbound:` of the first trunk (where calls out go).
    pub trunk_outbound: Option<String>,
    /// More top-level YAML lines (e.g. a `queues:` section).
    pub extra_yaml: Vec<String>,
    /// Keep the SQLite store even when the suite runs on PostgreSQL (a test of
    /// SQLite itself).
    pub sqlite_only: bool,
    /// How many RTP ports the server gets.
    pub rtp_port_count: u16,
    /// `rtp.timeout_secs` (None: the server's default).
    pub rtp_timeout_secs: Option<u64>,
    /// More lines for the `rtp:` section (e.g. `kernel_forwarding: on`).
    pub extra_rtp: Vec<String>,
    /// Pass listeners, RTP ports and data dir as command-line flags instead of
    /// writing them into the file (the file then holds unusable values).
    pub use_cli_overrides: bool,
    /// Extra environment for the server process (e.g. RUST_LOG).
    pub env: Vec<(String, String)>,
    /// Extra lines for the `sip:` section (settings beyond the basics).
    pub extra_sip: Vec<String>,
    /// Listen, advertise and relay RTP on ::1 instead of 127.0.0.1 (trunk peer ::1/128).
    pub ipv6: bool,
    /// Listen on every IPv4 address and advertise this one (a test network's address
    /// of this host, e.g. the "public" side of a [`nat::Nat`]).
    pub public_ip: Option<String>,
    /// Also listen for SIP over TLS, on the SIP port + 1 (self-signed certificate).
    pub tls: bool,
    /// More settings of one user, as YAML flow-map entries
    /// (`("2001", "media_encryption: require, dial_out: true")`).
    pub user_settings: Vec<(String, String)>,
    /// Run on the shipped `config/switchboard.yaml` itself, with only the listener, RTP
    /// range and data directory overridden on the command line (the other fields here
    /// must then match the demo's, which they do by default).
    pub shipped_demo: bool,
    /// Serve the control-plane API on a port of its own, with the test tokens
    /// ([`api`]). The shipped demo always has one.
    pub api: bool,
    /// The data directory (recordings, the store), if not a fresh one in the server's
    /// temporary directory: e.g. a small file system of the test's own.
    pub data_dir: Option<PathBuf>,
    /// A PostgreSQL store shared with other servers (a cluster's nodes), whatever store
    /// the suite runs on.
    pub shared_store: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        let user = |ext: &str, name: &str, role: &str| User {
            extension: ext.into(),
            name: name.into(),
            password: format!("secret{ext}"),
            role: role.into(),
        };
        ServerConfig {
            ring_timeout_secs: 30,
            drain_timeout_secs: 5,
            t1_ms: Some(500),
            trunks: vec![("loopback".into(), vec!["127.0.0.0/8".into()])],
            users: vec![
                user("2001", "Agent 2001", "agent"),
                user("2002", "Agent 2002", "agent"),
                user("2003", "Agent 2003", "agent"),
                user("3001", "Supervisor 3001", "supervisor"),
            ],
            dids: [
                ("100", "2001"),
                ("2001", "2001"),
                ("2002", "2002"),
                ("2003", "2003"),
            ]
            .iter()
            .map(|(n, e)| (n.to_string(), e.to_string()))
            .collect(),
            rtp_port_count: 200,
            rtp_timeout_secs: None,
            extra_rtp: Vec::new(),
            use_cli_overrides: false,
            env: Vec::new(),
            extra_sip: Vec::new(),
            ipv6: false,
            public_ip: None,
            tls: false,
            user_settings: Vec::new(),
            shipped_demo: false,
            api: false,
            data_dir: None,
            shared_store: None,
            flow_dids: Vec::new(),
            ivr: None,
            extra_args: Vec::new(),
            trunk_outbound: None,
            extra_yaml: Vec::new(),
            sqlite_only: false,
        }
    }
}

impl ServerConfig {
    /// The YAML text. `listen`, `rtp` and `data_dir` are the values written into
    /// the file (which may be decoys when CLI overrides are used).
    pub fn to_yaml(&self, sip_port: u16, rtp: (u16, u16), data_dir: &Path) -> String {
        self.to_yaml_with_api(sip_port, rtp, data_dir, None)
    }

    pub fn to_yaml_with_api(
        &self,
        sip_port: u16,
        rtp: (u16, u16),
        data_dir: &Path,
        api_port: Option<u16>,
    ) -> String {
        let mut y = String::new();
        if let Some(port) = api_port {
            y.push_str(&api::api_yaml(port));
        }
        let (host, ip) = match (&self.public_ip, self.ipv6) {
            (Some(public), _) => ("0.0.0.0", public.as_str()),
            (None, true) => ("[::1]", "\"::1\""),
            (None, false) => ("127.0.0.1", "127.0.0.1"),
        };
        writeln!(y, "sip:").unwrap();
        writeln!(
            y,
            "  listen: [\"udp:{host}:{sip_port}\", \"tcp:{host}:{sip_port}\"{}]",
            if self.tls {
                format!(", \"tls:{host}:{}\"", sip_port + 1)
            } else {
                String::new()
            }
        )
        .unwrap();
        writeln!(y, "  advertise: {ip}").unwrap();
        if let Some(t1) = self.t1_ms {
            writeln!(y, "  t1_ms: {t1}").unwrap();
        }
        for line in &self.extra_sip {
            writeln!(y, "  {line}").unwrap();
        }
        writeln!(y, "rtp:\n  ports: \"{}-{}\"", rtp.0, rtp.1).unwrap();
        if let Some(secs) = self.rtp_timeout_secs {
            writeln!(y, "  timeout_secs: {secs}").unwrap();
        }
        for line in &self.extra_rtp {
            writeln!(y, "  {line}").unwrap();
        }
        if self.ipv6 {
            writeln!(y, "  bind: {ip}").unwrap();
        }
        writeln!(y, "data_dir: \"{}\"", data_dir.display()).unwrap();
        writeln!(
            y,
            "calls:\n  ring_timeout_secs: {}\n  drain_timeout_secs: {}",
            self.ring_timeout_secs, self.drain_timeout_secs
        )
        .unwrap();
        writeln!(y, "trunks:").unwrap();
        for (name, peers) in &self.trunks {
            let peers: Vec<String> = peers.iter().map(|p| format!("\"{p}\"")).collect();
            writeln!(y, "  - name: {name}\n    peers: [{}]", peers.join(", ")).unwrap();
            if let Some(out) = self
                .trunk_outbound
                .as_ref()
                .filter(|_| name == &self.trunks[0].0)
            {
                writeln!(y, "    outbound: \"{out}\"").unwrap();
            }
        }
        if self.trunks.is_empty() {
            y.truncate(y.len() - "trunks:\n".len());
            writeln!(y, "trunks: []").unwrap();
        }
        writeln!(y, "users:").unwrap();
        for u in &self.users {
            let more: String = self
                .user_settings
                .iter()
                .filter(|(ext, _)| ext == &u.extension)
                .map(|(_, s)| format!(", {s}"))
                .collect();
            writeln!(
                y,
                "  - {{ extension: \"{}\", name: \"{}\", password: {}, role: {}{more} }}",
                u.extension, u.name, u.password, u.role
            )
            .unwrap();
        }
        writeln!(y, "dids:").unwrap();
        for (number, ext) in &self.dids {
            writeln!(y, "  - {{ number: \"{number}\", extension: \"{ext}\" }}").unwrap();
        }
        for (number, flow) in &self.flow_dids {
            writeln!(y, "  - {{ number: \"{number}\", flow: \"{flow}\" }}").unwrap();
        }
        for line in &self.extra_yaml {
            writeln!(y, "{line}").unwrap();
        }
        if let Some((flows, prompts)) = &self.ivr {
            writeln!(
                y,
                "ivr:\n  flows: \"{}\"\n  prompts: \"{}\"",
                flows.display(),
                prompts.display()
            )
            .unwrap();
        }
        y
    }

    pub fn password(&self, ext: &str) -> String {
        self.users
            .iter()
            .find(|u| u.extension == ext)
            .map(|u| u.password.clone())
            .unwrap_or_else(|| panic!("no user {ext} in the test config"))
    }
}

// ---------------------------------------------------------------------------
// Server
// ---------------------------------------------------------------------------

/// A server whose DID 100 flow puts callers straight into `queue` (then hangs up), with
/// the given `queues:` entries (and `config`'s other YAML after them); the flow
/// directory lives as long as the first value.
pub fn queue_server(
    queue: &str,
    queues: &[&str],
    config: ServerConfig,
) -> (tempfile::TempDir, Server) {
    let flow = format!(
        "name: main\nentry: wait\nprompts: en\nnodes:\n  wait:\n    queue:\n      queue: {queue}\n      next: bye\n  bye:\n    hangup:\n"
    );
    flow_queue_server(&flow, queues, config)
}

/// As [`queue_server`], with DID 100 answered by the flow `main` given as YAML.
pub fn flow_queue_server(
    flow: &str,
    queues: &[&str],
    config: ServerConfig,
) -> (tempfile::TempDir, Server) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("main.yaml"), flow).unwrap();
    let mut extra_yaml = vec!["queues:".to_string()];
    extra_yaml.extend(queues.iter().map(|q| q.to_string()));
    extra_yaml.extend(config.extra_yaml.iter().cloned());
    // DID 100 is the flow; the others still ring their extensions.
    let dids = config
        .dids
        .iter()
        .filter(|(n, _)| n != "100")
        .cloned()
        .collect();
    let server = Server::start_with(ServerConfig {
        dids,
        flow_dids: vec![("100".into(), "main".into())],
        ivr: Some((
            dir.path().to_path_buf(),
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("prompts"),
        )),
        extra_yaml,
        ..config
    });
    (dir, server)
}

/// A running `switchboard serve`. Dropping it sends SIGTERM, then SIGKILL after a
/// grace period.
pub struct Server {
    child: Option<Child>,
    pub config: ServerConfig,
    pub sip_port: u16,
    pub rtp_ports: (u16, u16),
    pub dir: tempfile::TempDir,
    pub config_path: PathBuf,
    pub data_dir: PathBuf,
    /// The control-plane API's port, when it serves one.
    pub api_port: Option<u16>,
    /// Its PostgreSQL database, when the suite runs on PostgreSQL.
    pub store_url: Option<String>,
    stderr: Arc<Mutex<String>>,
    launch: Launch,
}

/// How the server process was started, to start it again.
struct Launch {
    args: Vec<std::ffi::OsString>,
    envs: Vec<(std::ffi::OsString, std::ffi::OsString)>,
    cwd: Option<PathBuf>,
    yaml: String,
}

/// The test PostgreSQL server (the store's own test helper).
#[path = "../../src/store/pg_test.rs"]
#[allow(dead_code)]
pub mod pg_test;

/// `SWITCHBOARD_TEST_STORE=postgres` runs every server of the suite on PostgreSQL (a
/// database each, on a server the tests start); unset or `sqlite`, on the data
/// directory's SQLite file.
pub fn store_is_postgres() -> bool {
    match std::env::var("SWITCHBOARD_TEST_STORE").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("SWITCHBOARD_TEST_STORE={other}: use sqlite or postgres"),
    }
}

/// A new database on the test PostgreSQL server: its URL. (On a thread of its own, so
/// that an async test may call it too.)
pub fn postgres_database() -> String {
    std::thread::spawn(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(pg_test::database())
    })
    .join()
    .expect("a test PostgreSQL database")
}

pub fn switchboard_bin() -> &'static str {
    env!("CARGO_BIN_EXE_switchboard")
}

impl Server {
    /// Polls `ok` until it holds; fails saying `what` did not happen in `timeout`, with
    /// the tail of the server's stderr.
    pub fn wait_until(&self, what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
        let end = Instant::now() + timeout;
        while !ok() {
            assert!(
                Instant::now() < end,
                "{what} within {timeout:?}\nswitchboard stderr tail:\n{}",
                self.stderr_tail(40)
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The demo configuration on fresh ports.
    pub fn start() -> Server {
        Server::start_with(ServerConfig::default())
    }

    pub fn start_with(config: ServerConfig) -> Server {
        let dir = tempfile::Builder::new()
            .prefix("switchboard-test-")
            .tempdir()
            .expect("tempdir");
        // The next port is TLS's (the shipped demo has a TLS listener).
        let sip_port = alloc_ports(2);
        let rtp_low = alloc_ports(config.rtp_port_count);
        let rtp_ports = (rtp_low, rtp_low + config.rtp_port_count - 1);
        let data_dir = config
            .data_dir
            .clone()
            .unwrap_or_else(|| dir.path().join("data"));
        std::fs::create_dir_all(&data_dir).unwrap();
        let config_path = if config.shipped_demo {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("config/switchboard.yaml")
        } else {
            dir.path().join("switchboard.yaml")
        };

        let api_port = (config.api || config.shipped_demo).then(|| alloc_ports(1));
        let mut cmd = Command::new(switchboard_bin());
        cmd.arg("serve").arg("--config").arg(&config_path);
        if config.shipped_demo {
            cmd.arg("--api-listen")
                .arg(format!("{LOCALHOST}:{}", api_port.unwrap()));
        }
        // The shipped demo's file is the repository's: it keeps its SQLite store.
        let store_url = config.shared_store.clone().or_else(|| {
            (store_is_postgres() && !config.shipped_demo && !config.sqlite_only)
                .then(postgres_database)
        });
        let mut yaml = if config.use_cli_overrides || config.shipped_demo {
            // The file points elsewhere; the flags must win.
            let decoy_data = dir.path().join("decoy-data");
            cmd.arg("--sip-listen")
                .arg(format!("{LOCALHOST}:{sip_port}"))
                .arg("--rtp-ports")
                .arg(format!("{}-{}", rtp_ports.0, rtp_ports.1))
                .arg("--data-dir")
                .arg(&data_dir);
            let decoy_port = alloc_ports(2);
            let decoy_rtp = alloc_ports(10);
            config.to_yaml_with_api(
                decoy_port,
                (decoy_rtp, decoy_rtp + 9),
                &decoy_data,
                api_port.filter(|_| !config.shipped_demo),
            )
        } else {
            config.to_yaml_with_api(sip_port, rtp_ports, &data_dir, api_port)
        };
        if let Some(url) = &store_url {
            writeln!(yaml, "store: {url}").unwrap();
        }
        if !config.shipped_demo {
            std::fs::write(&config_path, &yaml).unwrap();
        }

        cmd.args(&config.extra_args);
        // IVR web requests in tests go to loopback servers, never through a proxy.
        cmd.env("NO_PROXY", "127.0.0.1,localhost,::1");
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "info");
        }
        cmd.env("NO_COLOR", "1");
        for (k, v) in &config.env {
            cmd.env(k, v);
        }
        // The shipped demo names its flows and prompts relative to the repository.
        let cwd = if config.shipped_demo {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        } else {
            dir.path().to_path_buf()
        };
        cmd.current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut server = Server {
            child: None,
            config,
            sip_port,
            rtp_ports,
            dir,
            config_path,
            data_dir,
            api_port,
            store_url,
            stderr: Arc::new(Mutex::new(String::new())),
            launch: Launch {
                args: cmd.get_args().map(|a| a.to_os_string()).collect(),
                envs: cmd
                    .get_envs()
                    .filter_map(|(k, v)| Some((k.to_os_string(), v?.to_os_string())))
                    .collect(),
                cwd: cmd.get_current_dir().map(Path::to_path_buf),
                yaml,
            },
        };
        server.launch();
        server
    }

    /// Stops the server (SIGTERM, as an operator would) and starts it again on the same
    /// configuration and data directory.
    pub fn restart(&mut self) {
        let _ = self.terminate(Duration::from_secs(20));
        self.launch();
    }

    /// `kill -9`: no drain, no flush, nothing finished; then starts it again on the same
    /// data directory and waits for its ready line.
    /// Kills the server (SIGKILL), as a machine that dies would.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn crash_and_restart(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.launch();
    }

    /// Spawns the server as recorded in `launch` and waits for its ready line.
    fn launch(&mut self) {
        let mut cmd = Command::new(switchboard_bin());
        cmd.args(&self.launch.args)
            .envs(self.launch.envs.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(cwd) = &self.launch.cwd {
            cmd.current_dir(cwd);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", switchboard_bin()));

        // Collect stderr in the background; tell us when the ready line shows up.
        let stderr = Arc::new(Mutex::new(String::new()));
        let (ready_tx, ready_rx) = mpsc::channel::<()>();
        {
            let pipe = child.stderr.take().unwrap();
            let buf = stderr.clone();
            thread::spawn(move || {
                let mut reader = BufReader::new(pipe);
                let mut line = Vec::new();
                let mut signalled = false;
                loop {
                    line.clear();
                    match reader.read_until(b'\n', &mut line) {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {
                            let text = String::from_utf8_lossy(&line);
                            if !signalled && text.contains("switchboard ready") {
                                signalled = true;
                                let _ = ready_tx.send(());
                            }
                            let mut b = buf.lock().unwrap();
                            // keep memory bounded under load: drop the oldest half
                            if b.len() > 8 << 20 {
                                let cut = b.len() / 2;
                                let cut = (cut..b.len()).find(|&i| b.is_char_boundary(i)).unwrap();
                                b.replace_range(..cut, "[… earlier log dropped …]\n");
                            }
                            b.push_str(&text);
                        }
                    }
                }
            });
        }

        self.child = Some(child);
        self.stderr = stderr;
        let yaml = self.launch.yaml.clone();
        let server = self;

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            match ready_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(()) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // stderr closed without the ready line
                    thread::sleep(Duration::from_millis(200));
                    let status = server.child.as_mut().unwrap().try_wait().ok().flatten();
                    panic!(
                        "switchboard exited before printing `switchboard ready` (status {status:?})\n\
                         config:\n{yaml}\nstderr:\n{}",
                        server.stderr()
                    );
                }
            }
            if let Ok(Some(status)) = server.child.as_mut().unwrap().try_wait() {
                thread::sleep(Duration::from_millis(200));
                panic!(
                    "switchboard exited ({status}) before printing `switchboard ready`\n\
                     config:\n{yaml}\nstderr:\n{}",
                    server.stderr()
                );
            }
            if Instant::now() > deadline {
                panic!(
                    "switchboard did not print `switchboard ready` within {READY_TIMEOUT:?}\n\
                     config:\n{yaml}\nstderr:\n{}",
                    server.stderr()
                );
            }
        }
    }

    /// `127.0.0.1:PORT` (or `[::1]:PORT`) of the SIP listeners (UDP and TCP).
    pub fn addr(&self) -> String {
        if self.config.ipv6 {
            format!("[::1]:{}", self.sip_port)
        } else {
            format!("{LOCALHOST}:{}", self.sip_port)
        }
    }

    /// The loopback address peers of this server use.
    pub fn local_ip(&self) -> &'static str {
        if self.config.ipv6 {
            "::1"
        } else {
            LOCALHOST
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        self.addr().parse().unwrap()
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Everything the server logged so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The last `n` lines of the log, for assertion messages.
    pub fn stderr_tail(&self, n: usize) -> String {
        let all = self.stderr();
        let lines: Vec<&str> = all.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server's SIP-over-TLS port (with `ServerConfig::tls`).
    pub fn tls_port(&self) -> u16 {
        self.sip_port + 1
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir.join("switchboard.db")
    }

    /// Runs `sql` on the server's store (its SQLite file, or its PostgreSQL database).
    pub fn query(&self, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
        match &self.store_url {
            Some(url) => psql_query(url, sql),
            None => sqlite_query(&self.db_path(), sql),
        }
    }

    /// How a `switchboard report`/`explain`/`staffing` command finds this server's
    /// records: its data directory, or its configuration (which names its PostgreSQL).
    pub fn store_source_args(&self) -> [std::ffi::OsString; 2] {
        match &self.store_url {
            Some(_) => ["--config".into(), self.config_path.clone().into()],
            None => ["--data-dir".into(), self.data_dir.clone().into()],
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Sends SIGTERM and waits up to `timeout` for the process to exit.
    pub fn terminate(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let child = self.child.as_mut()?;
        if let Ok(Some(st)) = child.try_wait() {
            return Some(st);
        }
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status();
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// SIGTERM, and the exit status (panics if it does not exit in time).
    pub fn stop(mut self) -> ExitStatus {
        let timeout = Duration::from_secs(self.config.drain_timeout_secs + 10);
        match self.terminate(timeout) {
            Some(st) => st,
            None => panic!(
                "switchboard did not exit within {timeout:?} of SIGTERM\nstderr tail:\n{}",
                self.stderr_tail(60)
            ),
        }
    }

    /// All rows of the `calls` table, oldest first.
    pub fn calls(&self) -> Result<Vec<CallRecord>, String> {
        query_calls(|sql| self.query(sql))
    }

    /// Waits until the calls table holds at least `n` rows whose `ended_ms` is
    /// set (records are written no later than the end of the call; we allow a
    /// short grace period for the write to land), and returns all rows.
    pub fn wait_for_calls(&self, n: usize, timeout: Duration) -> Vec<CallRecord> {
        let end = Instant::now() + timeout;
        loop {
            let last = match self.calls() {
                Ok(rows) if rows.iter().filter(|r| r.ended_ms.is_some()).count() >= n => {
                    return rows
                }
                other => other,
            };
            if Instant::now() > end {
                panic!(
                    "expected at least {n} finished call record(s) in {} within {timeout:?}; \
                     last query: {last:#?}\nswitchboard stderr tail:\n{}",
                    self.db_path().display(),
                    self.stderr_tail(80)
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Exactly one call record is expected; returns it.
    pub fn single_call(&self) -> CallRecord {
        let rows = self.wait_for_calls(1, Duration::from_secs(5));
        // give a duplicate row a moment to show up, so we catch it
        thread::sleep(Duration::from_millis(300));
        let rows = self.calls().unwrap_or(rows);
        assert_eq!(
            rows.len(),
            1,
            "expected exactly one call record, got {}: {rows:#?}",
            rows.len()
        );
        rows.into_iter().next().unwrap()
    }

    /// Registers `ext` from 127.0.0.1:`port` with register_ok.xml (a one-shot
    /// SIPp client), asserting the 200.
    pub fn register(&self, ext: &str, port: u16) -> SippRun {
        let run = Sipp::new("register_ok.xml")
            .local_ip(self.local_ip())
            .service(ext)
            .auth(ext, &self.config.password(ext))
            .local_port(port)
            .run(self);
        run.assert_ok(self, &format!("REGISTER of {ext} from port {port}"));
        run
    }

    /// A registered agent phone (SIPp) that answers `calls` calls one after another,
    /// hangs each up after `talk_ms`, and echoes RTP; it gives up after `timeout_secs`.
    pub fn agent_phone(&self, ext: &str, calls: u32, talk_ms: u64, timeout_secs: u64) -> SippProc {
        let port = alloc_ports(1);
        self.register(ext, port);
        Sipp::new("uas_answer_then_bye.xml")
            .local_port(port)
            .media_port(alloc_ports(4))
            .calls(calls)
            .duration_ms(talk_ms)
            .timeout_secs(timeout_secs)
            .no_message_trace()
            .args(&["-rtp_echo"])
            .no_remote()
            .spawn(self)
    }

    /// Registers `ext` from a fresh port and starts a SIPp callee there running
    /// `scenario` (with `-rtp_echo` on its own media port).
    pub fn start_callee(&self, ext: &str, scenario: &str, extra: &[&str]) -> Callee {
        self.start_callee_with(ext, scenario, |sipp| sipp.args(extra))
    }

    /// [`Server::start_callee`] with the SIPp command line tuned by `tune` (call count,
    /// timeout…).
    pub fn start_callee_with(
        &self,
        ext: &str,
        scenario: &str,
        tune: impl FnOnce(Sipp) -> Sipp,
    ) -> Callee {
        let port = alloc_ports(1);
        self.register(ext, port);
        let media_port = alloc_ports(4);
        let sipp = Sipp::new(scenario)
            .local_ip(self.local_ip())
            .local_port(port)
            .media_port(media_port)
            .args(&["-rtp_echo"]);
        let proc = tune(sipp).spawn(self);
        assert!(
            wait_udp_bound_on(self.local_ip(), port, Duration::from_secs(5)),
            "SIPp callee ({scenario}) did not bind port {port}"
        );
        Callee {
            ext: ext.into(),
            port,
            media_port,
            proc,
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if self.terminate(STOP_GRACE).is_none() {
            if let Some(child) = self.child.as_mut() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
        if std::env::var_os("SWITCHBOARD_TEST_KEEP").is_some() {
            if let Ok(placeholder) = tempfile::tempdir() {
                let dir = std::mem::replace(&mut self.dir, placeholder);
                eprintln!("keeping switchboard test dir {}", dir.keep().display());
            }
        }
    }
}

/// A SIPp callee registered as an extension.
pub struct Callee {
    pub ext: String,
    pub port: u16,
    pub media_port: u16,
    pub proc: SippProc,
}

impl Callee {
    pub fn wait(self, timeout: Duration) -> SippRun {
        self.proc.wait(timeout)
    }

    pub fn kill(self) -> SippRun {
        self.proc.kill()
    }
}

// ---------------------------------------------------------------------------
// SIPp
// ---------------------------------------------------------------------------

/// A SIPp command line being built. Every run is bounded: `-m` (default 1),
/// SIPp's own `-timeout … -timeout_error`, and a wall-clock kill in [`SippProc::wait`].
#[derive(Clone)]
pub struct Sipp {
    scenario: String,
    args: Vec<String>,
    calls: u32,
    local_port: Option<u16>,
    media_port: Option<u16>,
    sipp_timeout_secs: u64,
    trace_msg: bool,
    transport_tcp: bool,
    remote: bool,
    local_ip: String,
}

impl Sipp {
    pub fn new(scenario_file: &str) -> Sipp {
        Sipp::from_file(Path::new(&scenario(scenario_file)))
    }

    /// A queued caller (uac_queue_impatient.xml) who gives up after `ms` unless its call
    /// ends first; the scenario variant is written into `dir`.
    pub fn queue_caller_giving_up_after(dir: &Path, ms: u64) -> Sipp {
        let text = std::fs::read_to_string(scenario("uac_queue_impatient.xml")).unwrap();
        let path = dir.join(format!("uac_queue_give_up_{ms}.xml"));
        let text = text.replace("timeout=\"3000\"", &format!("timeout=\"{ms}\""));
        std::fs::write(&path, text).unwrap();
        Sipp::from_file(&path)
    }

    /// A scenario the test wrote itself (one that names files it generated, say).
    pub fn from_file(path: &Path) -> Sipp {
        require_tool("sipp", "sip-tester");
        assert!(path.is_file(), "scenario {} does not exist", path.display());
        Sipp {
            scenario: path.display().to_string(),
            args: Vec::new(),
            calls: 1,
            local_port: None,
            media_port: None,
            sipp_timeout_secs: 60,
            trace_msg: true,
            transport_tcp: false,
            remote: true,
            local_ip: LOCALHOST.to_string(),
        }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Sipp {
        self.args.push(a.into());
        self
    }
    pub fn args(mut self, a: &[&str]) -> Sipp {
        self.args.extend(a.iter().map(|s| s.to_string()));
        self
    }
    /// `-s`: the Request-URI user (DID) or the extension to register.
    pub fn service(self, s: &str) -> Sipp {
        self.arg("-s").arg(s)
    }
    /// `-au`/`-ap`: digest credentials.
    pub fn auth(self, user: &str, password: &str) -> Sipp {
        self.arg("-au").arg(user).arg("-ap").arg(password)
    }
    /// `-d`: call length for `<pause/>`.
    pub fn duration_ms(self, ms: u64) -> Sipp {
        self.arg("-d").arg(ms.to_string())
    }
    /// `-m`: total calls before SIPp exits.
    pub fn calls(mut self, n: u32) -> Sipp {
        self.calls = n;
        self
    }
    pub fn local_port(mut self, p: u16) -> Sipp {
        self.local_port = Some(p);
        self
    }
    pub fn media_port(mut self, p: u16) -> Sipp {
        self.media_port = Some(p);
        self
    }
    /// SIPp's global `-timeout` in seconds (the run fails when it is reached).
    pub fn timeout_secs(mut self, s: u64) -> Sipp {
        self.sipp_timeout_secs = s;
        self
    }
    /// Turn off `-trace_msg` (for load runs).
    pub fn no_message_trace(mut self) -> Sipp {
        self.trace_msg = false;
        self
    }
    /// `-t t1`: one TCP connection.
    pub fn tcp(mut self) -> Sipp {
        self.transport_tcp = true;
        self
    }
    /// `-i`/`-mi`: the local address for signalling and media (e.g. `::1`).
    pub fn local_ip(mut self, ip: &str) -> Sipp {
        self.local_ip = ip.to_string();
        self
    }
    /// Do not pass the server address (a pure UAS does not need one).
    pub fn no_remote(mut self) -> Sipp {
        self.remote = false;
        self
    }

    /// Starts SIPp in the background against `server`.
    pub fn spawn(self, server: &Server) -> SippProc {
        self.spawn_to(&server.addr())
    }

    /// Starts SIPp in the background against `remote` (`ip:port`).
    pub fn spawn_to(self, remote: &str) -> SippProc {
        let dir = tempfile::Builder::new()
            .prefix("sipp-")
            .tempdir()
            .expect("tempdir");
        let d = dir.path();
        let name = Path::new(&self.scenario)
            .file_stem()
            .unwrap()
            .to_string_lossy()
            .to_string();
        let local_port = self.local_port.unwrap_or_else(|| alloc_ports(1));
        let media_port = self.media_port.unwrap_or_else(|| alloc_ports(4));
        let control_port = alloc_ports(1);
        let mut cmd = Command::new("sipp");
        cmd.arg("-sf")
            .arg(&self.scenario)
            .args(["-i", &self.local_ip, "-mi", &self.local_ip])
            .arg("-p")
            .arg(local_port.to_string())
            .arg("-mp")
            .arg(media_port.to_string())
            .arg("-cp")
            .arg(control_port.to_string())
            .arg("-m")
            .arg(self.calls.to_string())
            .arg("-timeout")
            .arg(format!("{}s", self.sipp_timeout_secs))
            .arg("-timeout_error")
            .arg("-nostdin")
            .arg("-aa")
            .arg("-trace_err")
            .arg("-error_file")
            .arg(d.join("errors.log"))
            .arg("-trace_stat")
            .arg("-stf")
            .arg(d.join("stats.csv"))
            .args(["-fd", "1"])
            .arg("-trace_screen")
            .arg("-screen_file")
            .arg(d.join("screen.log"));
        if self.trace_msg {
            cmd.arg("-trace_msg")
                .arg("-message_file")
                .arg(d.join("messages.log"));
        }
        if self.transport_tcp {
            cmd.args(["-t", "t1"]);
        }
        cmd.args(&self.args);
        if self.remote {
            cmd.arg(remote);
        }
        let cmdline = format!("{cmd:?}");
        cmd.current_dir(d)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(d.join("stdout.log")).unwrap())
            .stderr(std::fs::File::create(d.join("stderr.log")).unwrap());
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start sipp: {e}"));
        SippProc {
            child: Some(child),
            dir: Some(dir),
            name,
            cmdline,
            local_port,
            media_port,
            wall_limit: Duration::from_secs(self.sipp_timeout_secs + 15),
        }
    }

    /// Runs SIPp to completion against `server`.
    pub fn run(self, server: &Server) -> SippRun {
        let limit = Duration::from_secs(self.sipp_timeout_secs + 15);
        self.spawn(server).wait(limit)
    }

    pub fn run_to(self, remote: &str) -> SippRun {
        let limit = Duration::from_secs(self.sipp_timeout_secs + 15);
        self.spawn_to(remote).wait(limit)
    }
}

/// A SIPp process running in the background; killed (SIGKILL) on drop.
pub struct SippProc {
    child: Option<Child>,
    dir: Option<tempfile::TempDir>,
    pub name: String,
    pub cmdline: String,
    pub local_port: u16,
    pub media_port: u16,
    wall_limit: Duration,
}

impl SippProc {
    /// Waits for SIPp to exit (at most `timeout`, and never longer than its own
    /// `-timeout` plus a margin); kills it when the time is up.
    pub fn wait(mut self, timeout: Duration) -> SippRun {
        let timeout = timeout.min(self.wall_limit);
        let mut child = self.child.take().unwrap();
        let end = Instant::now() + timeout;
        let mut killed = false;
        let status = loop {
            if let Ok(Some(st)) = child.try_wait() {
                break Some(st);
            }
            if Instant::now() > end {
                let _ = child.kill();
                let _ = child.wait();
                killed = true;
                break None;
            }
            thread::sleep(Duration::from_millis(50));
        };
        let dir = self.dir.take().unwrap();
        let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
        let run = SippRun {
            name: self.name.clone(),
            cmdline: self.cmdline.clone(),
            exit_code: status.and_then(|s| s.code()),
            killed_after: if killed { Some(timeout) } else { None },
            stdout: read("stdout.log"),
            stderr: read("stderr.log"),
            errors: read("errors.log"),
            messages: read("messages.log"),
            stats_csv: read("stats.csv"),
            screen: read("screen.log"),
        };
        if std::env::var_os("SWITCHBOARD_TEST_KEEP").is_some() {
            eprintln!(
                "keeping SIPp logs of {} in {}",
                run.name,
                dir.keep().display()
            );
        }
        run
    }

    /// Kills SIPp now and returns what it logged.
    pub fn kill(mut self) -> SippRun {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
        }
        self.wait(Duration::from_secs(5))
    }
}

impl Drop for SippProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The outcome of one SIPp run with everything it logged.
#[derive(Debug)]
pub struct SippRun {
    pub name: String,
    pub cmdline: String,
    /// 0: all calls succeeded; 1: some failed; 99: no call processed; 255/-1/-2: fatal.
    pub exit_code: Option<i32>,
    pub killed_after: Option<Duration>,
    pub stdout: String,
    pub stderr: String,
    pub errors: String,
    pub messages: String,
    pub stats_csv: String,
    pub screen: String,
}

impl SippRun {
    pub fn success(&self) -> bool {
        self.exit_code == Some(0)
    }

    /// A readable account of the run for assertion messages.
    pub fn report(&self) -> String {
        let tail = |s: &str, n: usize| {
            let lines: Vec<&str> = s.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        };
        format!(
            "SIPp {} exit={:?}{}\ncommand: {}\n--- errors ---\n{}\n--- stderr ---\n{}\n\
             --- stats (last line) ---\n{}\n--- messages (tail) ---\n{}",
            self.name,
            self.exit_code,
            self.killed_after
                .map(|t| format!(" (killed after {t:?})"))
                .unwrap_or_default(),
            self.cmdline,
            tail(&self.errors, 40),
            tail(&self.stderr, 20),
            tail(&self.stats_csv, 1),
            tail(&self.messages, 120),
        )
    }

    /// Panics with the SIPp logs and the server's log tail unless SIPp exited 0.
    pub fn assert_ok(&self, server: &Server, what: &str) {
        if !self.success() {
            panic!(
                "{what}: SIPp scenario failed\n{}\n--- switchboard stderr (tail) ---\n{}",
                self.report(),
                server.stderr_tail(80)
            );
        }
    }

    /// Messages as logged by `-trace_msg`, split into (direction line, message).
    pub fn sip_messages(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut chunks = self
            .messages
            .split("----------------------------------------------- ");
        chunks.next();
        for chunk in chunks {
            let mut lines = chunk.lines();
            lines.next(); // timestamp
            let dir = lines.next().unwrap_or("").to_string();
            let body: Vec<&str> = lines.collect();
            out.push((dir, body.join("\n").trim().to_string()));
        }
        out
    }

    /// Received messages whose first line starts with `start_line_prefix`,
    /// e.g. "SIP/2.0 200" or "INVITE ".
    pub fn received(&self, start_line_prefix: &str) -> Vec<String> {
        self.sip_messages()
            .into_iter()
            .filter(|(dir, m)| dir.contains("received") && m.starts_with(start_line_prefix))
            .map(|(_, m)| m)
            .collect()
    }

    pub fn sent(&self, start_line_prefix: &str) -> Vec<String> {
        self.sip_messages()
            .into_iter()
            .filter(|(dir, m)| dir.contains("sent") && m.starts_with(start_line_prefix))
            .map(|(_, m)| m)
            .collect()
    }

    /// The value of the last line of the statistics CSV in the named column.
    pub fn stat(&self, column: &str) -> Option<u64> {
        let mut lines = self.stats_csv.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        let idx = header.iter().position(|h| h.trim() == column)?;
        last.get(idx)?.trim().parse().ok()
    }

    /// The value in 1-based `column` of the last statistics line.
    pub fn stat_col(&self, column: usize) -> Option<(String, u64)> {
        let mut lines = self.stats_csv.lines().filter(|l| !l.trim().is_empty());
        let header: Vec<&str> = lines.next()?.split(';').collect();
        let last: Vec<&str> = lines.next_back()?.split(';').collect();
        Some((
            header.get(column - 1)?.trim().to_string(),
            last.get(column - 1)?.trim().parse().ok()?,
        ))
    }
}

/// The value of header `name` (case-insensitive, compact forms accepted) in a
/// SIP message.
pub fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    let compact = match name.to_ascii_lowercase().as_str() {
        "call-id" => Some("i"),
        "from" => Some("f"),
        "to" => Some("t"),
        "via" => Some("v"),
        "contact" => Some("m"),
        "content-length" => Some("l"),
        "content-type" => Some("c"),
        _ => None,
    };
    for line in msg.lines() {
        if line.trim().is_empty() {
            break;
        }
        if let Some((h, v)) = line.split_once(':') {
            let h = h.trim();
            if h.eq_ignore_ascii_case(name) || compact.is_some_and(|c| h.eq_ignore_ascii_case(c)) {
                return Some(v.trim());
            }
        }
    }
    None
}

/// The (address, port) of the first audio stream in the SDP body of `msg`.
pub fn sdp_audio(msg: &str) -> Option<(String, u16)> {
    let body = msg.split_once("\n\n").map(|(_, b)| b)?;
    let mut conn = None;
    let mut port = None;
    for line in body.lines() {
        let line = line.trim();
        if let Some(c) = line
            .strip_prefix("c=IN IP4 ")
            .or(line.strip_prefix("c=IN IP6 "))
        {
            if conn.is_none() || port.is_none() {
                conn = Some(c.trim().to_string());
            }
        } else if let Some(m) = line.strip_prefix("m=audio ") {
            port = m.split_whitespace().next()?.parse().ok();
        }
    }
    Some((conn?, port?))
}

// ---------------------------------------------------------------------------
// Call records
// ---------------------------------------------------------------------------

/// One row of the `calls` table.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CallRecord {
    pub id: Option<i64>,
    pub call_uuid: Option<String>,
    pub a_call_id: Option<String>,
    pub b_call_id: Option<String>,
    pub from_uri: Option<String>,
    pub from_user: Option<String>,
    pub to_uri: Option<String>,
    pub dialed: Option<String>,
    pub source_kind: Option<String>,
    pub trunk: Option<String>,
    pub did: Option<String>,
    pub caller_user: Option<String>,
    pub target: Option<String>,
    pub arrived_ms: Option<i64>,
    pub ringing_ms: Option<i64>,
    pub answered_ms: Option<i64>,
    pub ended_ms: Option<i64>,
    pub hangup_by: Option<String>,
    pub disposition: Option<String>,
    pub final_code: Option<i64>,
    pub reason: Option<String>,
    pub a_rtp_in: Option<i64>,
    pub a_rtp_out: Option<i64>,
    pub b_rtp_in: Option<i64>,
    pub b_rtp_out: Option<i64>,
    pub bridged_ms: Option<i64>,
    pub flow: Option<String>,
    pub ivr_trace: Option<String>,
    pub queue: Option<String>,
    pub csat: Option<i64>,
    pub resolved: Option<i64>,
    pub voicemail: Option<String>,
    pub recording: Option<String>,
    pub recording_ms: Option<i64>,
    pub a_rtp_lost: Option<i64>,
    pub b_rtp_lost: Option<i64>,
    /// Mean interarrival jitter per leg, in milliseconds.
    pub a_jitter_ms: Option<f64>,
    pub b_jitter_ms: Option<f64>,
    /// "kernel" or "relay", and the RTP packets the kernel forwarded.
    pub media_path: Option<String>,
    pub kernel_rtp: Option<i64>,
}

pub const CALL_COLUMNS: &[&str] = &[
    "id",
    "call_uuid",
    "a_call_id",
    "b_call_id",
    "from_uri",
    "from_user",
    "to_uri",
    "dialed",
    "source_kind",
    "trunk",
    "did",
    "caller_user",
    "target",
    "arrived_ms",
    "ringing_ms",
    "answered_ms",
    "ended_ms",
    "hangup_by",
    "disposition",
    "final_code",
    "reason",
    "a_rtp_in",
    "a_rtp_out",
    "b_rtp_in",
    "b_rtp_out",
    "bridged_ms",
    "flow",
    "ivr_trace",
    "queue",
    "csat",
    "resolved",
    "voicemail",
    "recording",
    "recording_ms",
    "a_rtp_lost",
    "b_rtp_lost",
    "a_jitter_ms",
    "b_jitter_ms",
    "media_path",
    "kernel_rtp",
];

const FIELD_SEP: char = '\u{1f}';
const ROW_SEP: char = '\u{1e}';
const NULL_MARK: &str = "\u{1}NULL\u{1}";

/// Runs `sql` with the sqlite3 CLI; rows of fields (None for NULL).
pub fn sqlite_query(db: &Path, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    require_tool("sqlite3", "sqlite3");
    if !db.exists() {
        return Err(format!("{} does not exist (yet)", db.display()));
    }
    let out = Command::new("sqlite3")
        .arg("-batch")
        .arg("-readonly")
        .arg("-noheader")
        .args(["-cmd", ".timeout 3000"])
        .arg("-separator")
        .arg(FIELD_SEP.to_string())
        .arg("-newline")
        .arg(ROW_SEP.to_string())
        .arg("-nullvalue")
        .arg(NULL_MARK)
        .arg(db)
        .arg(sql)
        .output()
        .map_err(|e| format!("cannot run sqlite3: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "sqlite3 {} {sql:?} failed: {}",
            db.display(),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(split_rows(&String::from_utf8_lossy(&out.stdout)))
}

/// Runs `sql` with psql on a PostgreSQL database; rows of fields (None for NULL).
pub fn psql_query(url: &str, sql: &str) -> Result<Vec<Vec<Option<String>>>, String> {
    require_tool("psql", "postgresql-client");
    let out = Command::new("psql")
        .args(["-X", "-A", "-t", "-q", "-v", "ON_ERROR_STOP=1"])
        .arg("-F")
        .arg(FIELD_SEP.to_string())
        .arg("-R")
        .arg(ROW_SEP.to_string())
        .arg("-P")
        .arg(format!("null={NULL_MARK}"))
        .arg(url)
        .arg("-c")
        .arg(sql)
        .output()
        .map_err(|e| format!("cannot run psql: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "psql {url} {sql:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(split_rows(text.trim_end_matches('\n')))
}

fn split_rows(text: &str) -> Vec<Vec<Option<String>>> {
    text.split(ROW_SEP)
        .filter(|r| !r.is_empty() && *r != "\n")
        .map(|r| {
            r.split(FIELD_SEP)
                .map(|f| {
                    if f == NULL_MARK {
                        None
                    } else {
                        Some(f.to_string())
                    }
                })
                .collect()
        })
        .collect()
}

pub fn query_calls(
    query: impl Fn(&str) -> Result<Vec<Vec<Option<String>>>, String>,
) -> Result<Vec<CallRecord>, String> {
    let sql = format!("SELECT {} FROM calls ORDER BY id;", CALL_COLUMNS.join(", "));
    let rows = query(&sql)?;
    rows.into_iter()
        .map(|row| {
            if row.len() != CALL_COLUMNS.len() {
                return Err(format!("unexpected row shape: {row:?}"));
            }
            let m: BTreeMap<&str, Option<String>> = CALL_COLUMNS.iter().copied().zip(row).collect();
            let s = |k: &str| m[k].clone();
            let i = |k: &str| -> Result<Option<i64>, String> {
                match &m[k] {
                    None => Ok(None),
                    Some(v) => v
                        .parse()
                        .map(Some)
                        .map_err(|_| format!("column {k} is not an integer: {v:?}")),
                }
            };
            Ok(CallRecord {
                id: i("id")?,
                call_uuid: s("call_uuid"),
                a_call_id: s("a_call_id"),
                b_call_id: s("b_call_id"),
                from_uri: s("from_uri"),
                from_user: s("from_user"),
                to_uri: s("to_uri"),
                dialed: s("dialed"),
                source_kind: s("source_kind"),
                trunk: s("trunk"),
                did: s("did"),
                caller_user: s("caller_user"),
                target: s("target"),
                arrived_ms: i("arrived_ms")?,
                ringing_ms: i("ringing_ms")?,
                answered_ms: i("answered_ms")?,
                ended_ms: i("ended_ms")?,
                hangup_by: s("hangup_by"),
                disposition: s("disposition"),
                final_code: i("final_code")?,
                reason: s("reason"),
                a_rtp_in: i("a_rtp_in")?,
                a_rtp_out: i("a_rtp_out")?,
                b_rtp_in: i("b_rtp_in")?,
                b_rtp_out: i("b_rtp_out")?,
                bridged_ms: i("bridged_ms")?,
                flow: s("flow"),
                ivr_trace: s("ivr_trace"),
                queue: s("queue"),
                csat: i("csat")?,
                resolved: i("resolved")?,
                voicemail: s("voicemail"),
                recording: s("recording"),
                recording_ms: i("recording_ms")?,
                a_rtp_lost: i("a_rtp_lost")?,
                b_rtp_lost: i("b_rtp_lost")?,
                a_jitter_ms: s("a_jitter_ms").and_then(|v| v.parse().ok()),
                b_jitter_ms: s("b_jitter_ms").and_then(|v| v.parse().ok()),
                media_path: s("media_path"),
                kernel_rtp: i("kernel_rtp")?,
            })
        })
        .collect()
}

impl CallRecord {
    /// Checks shared by every record: identity fields present, times ordered.
    pub fn assert_well_formed(&self, started_ms: i64) {
        let r = self;
        assert!(
            r.call_uuid.as_deref().is_some_and(|u| !u.is_empty()),
            "call_uuid missing: {r:#?}"
        );
        assert!(
            r.a_call_id.as_deref().is_some_and(|u| !u.is_empty()),
            "a_call_id missing: {r:#?}"
        );
        let arrived = r
            .arrived_ms
            .unwrap_or_else(|| panic!("arrived_ms missing: {r:#?}"));
        let ended = r
            .ended_ms
            .unwrap_or_else(|| panic!("ended_ms missing: {r:#?}"));
        let now = now_ms();
        assert!(
            arrived >= started_ms - 1_000 && arrived <= now,
            "arrived_ms {arrived} is not epoch milliseconds within this test \
             ({started_ms}..{now}): {r:#?}"
        );
        assert!(
            arrived <= ended && ended <= now + 1_000,
            "ended_ms out of order: {r:#?}"
        );
        if let Some(ringing) = r.ringing_ms {
            assert!(
                arrived <= ringing && ringing <= ended,
                "ringing_ms out of order: {r:#?}"
            );
        }
        if let Some(answered) = r.answered_ms {
            assert!(
                arrived <= answered && answered <= ended,
                "answered_ms out of order: {r:#?}"
            );
            if let Some(ringing) = r.ringing_ms {
                assert!(ringing <= answered, "ringing after answer: {r:#?}");
            }
        }
        for (k, v) in [
            ("a_rtp_in", r.a_rtp_in),
            ("a_rtp_out", r.a_rtp_out),
            ("b_rtp_in", r.b_rtp_in),
            ("b_rtp_out", r.b_rtp_out),
        ] {
            assert!(v.unwrap_or(0) >= 0, "{k} negative: {r:#?}");
        }
    }

    /// No media counted (unanswered calls).
    pub fn assert_no_media(&self) {
        let r = self;
        for (k, v) in [
            ("a_rtp_in", r.a_rtp_in),
            ("a_rtp_out", r.a_rtp_out),
            ("b_rtp_in", r.b_rtp_in),
            ("b_rtp_out", r.b_rtp_out),
        ] {
            assert_eq!(
                v.unwrap_or(0),
                0,
                "{k} should be 0 for a call without media: {r:#?}"
            );
        }
    }

    /// Media relayed in both directions on both legs.
    pub fn assert_media_both_ways(&self, at_least: i64) {
        let r = self;
        for (k, v) in [
            ("a_rtp_in", r.a_rtp_in),
            ("a_rtp_out", r.a_rtp_out),
            ("b_rtp_in", r.b_rtp_in),
            ("b_rtp_out", r.b_rtp_out),
        ] {
            let v = v.unwrap_or_else(|| panic!("{k} is NULL: {r:#?}"));
            assert!(
                v >= at_least,
                "{k} = {v}, expected at least {at_least}: {r:#?}"
            );
        }
    }
}

/// The Call-ID of the first INVITE this run sent (caller side) or received
/// (callee side).
pub fn invite_call_id(run: &SippRun, sent: bool) -> String {
    let invites = if sent {
        run.sent("INVITE ")
    } else {
        run.received("INVITE ")
    };
    let inv = invites.first().unwrap_or_else(|| {
        panic!(
            "no INVITE {} by {}\n{}",
            if sent { "sent" } else { "received" },
            run.name,
            run.report()
        )
    });
    header(inv, "Call-ID")
        .expect("INVITE without Call-ID")
        .to_string()
}

// ---------------------------------------------------------------------------
// Raw SIP over UDP/TCP
// ---------------------------------------------------------------------------

/// A UDP socket on 127.0.0.1 talking to the server.
pub struct RawUdp {
    pub sock: UdpSocket,
    pub port: u16,
    server: SocketAddr,
}

impl RawUdp {
    pub fn new(server: &Server) -> RawUdp {
        RawUdp::on(server, std::net::Ipv4Addr::LOCALHOST)
    }

    /// From another loopback address (127.0.0.0/8 is all ours), as a second machine.
    pub fn on(server: &Server, ip: std::net::Ipv4Addr) -> RawUdp {
        let sock = UdpSocket::bind((ip, 0)).expect("bind udp");
        let port = sock.local_addr().unwrap().port();
        RawUdp {
            sock,
            port,
            server: server.socket_addr(),
        }
    }

    pub fn send(&self, bytes: &[u8]) {
        self.sock.send_to(bytes, self.server).expect("send_to");
    }

    /// The next datagram from the server within `wait`, as text.
    pub fn recv(&self, wait: Duration) -> Option<String> {
        let end = Instant::now() + wait;
        let mut buf = vec![0u8; 65_536];
        loop {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.sock.set_read_timeout(Some(left)).unwrap();
            match self.sock.recv_from(&mut buf) {
                Ok((n, from)) if from == self.server => {
                    return Some(String::from_utf8_lossy(&buf[..n]).into_owned())
                }
                Ok(_) => continue,
                Err(_) => return None,
            }
        }
    }

    /// Next message from the server that is a final response (>= 200), skipping
    /// provisional responses and requests (which are recorded in `others`).
    pub fn recv_final(&self, wait: Duration, others: &mut Vec<String>) -> Option<String> {
        let end = Instant::now() + wait;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let msg = self.recv(left)?;
            match status_code(&msg) {
                Some(c) if c >= 200 => return Some(msg),
                _ => others.push(msg),
            }
        }
    }

    /// Drains everything that arrives within `wait`.
    pub fn drain(&self, wait: Duration) -> Vec<String> {
        let mut v = Vec::new();
        while let Some(m) = self.recv(wait) {
            v.push(m);
        }
        v
    }
}

/// A TCP connection to the server.
pub struct RawTcp {
    pub stream: TcpStream,
    pub port: u16,
    pending: Vec<u8>,
}

impl RawTcp {
    pub fn connect(server: &Server) -> RawTcp {
        let stream = TcpStream::connect_timeout(&server.socket_addr(), Duration::from_secs(3))
            .expect("connect to switchboard over TCP");
        let port = stream.local_addr().unwrap().port();
        RawTcp {
            stream,
            port,
            pending: Vec::new(),
        }
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("tcp write");
    }

    /// One complete SIP message (headers + Content-Length body) within `wait`,
    /// or None (also on EOF: see `closed`).
    pub fn recv(&mut self, wait: Duration) -> Option<String> {
        let end = Instant::now() + wait;
        loop {
            if let Some(msg) = take_stream_message(&mut self.pending) {
                return Some(msg);
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return None;
            }
            self.stream.set_read_timeout(Some(left)).unwrap();
            let mut buf = [0u8; 16_384];
            match self.stream.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(_) => return None,
            }
        }
    }

    /// True when the server has closed the connection (read returns EOF/reset)
    /// within `wait`.
    pub fn closed(&mut self, wait: Duration) -> bool {
        self.stream.set_read_timeout(Some(wait)).unwrap();
        let mut buf = [0u8; 4096];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return true,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) => {
                    return matches!(
                        e.kind(),
                        std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
                    )
                }
            }
        }
    }
}

/// Splits one framed message off a TCP byte stream (skipping CRLF keep-alives).
fn take_stream_message(buf: &mut Vec<u8>) -> Option<String> {
    while buf.starts_with(b"\r\n") {
        buf.drain(..2);
    }
    let text = String::from_utf8_lossy(buf).into_owned();
    let head_end = text.find("\r\n\r\n")?;
    let head = &text[..head_end];
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (h, v) = l.split_once(':')?;
            let h = h.trim();
            (h.eq_ignore_ascii_case("content-length") || h.eq_ignore_ascii_case("l"))
                .then(|| v.trim().parse().ok())
                .flatten()
        })
        .unwrap_or(0);
    let total = head_end + 4 + len;
    if buf.len() < total {
        return None;
    }
    let msg: Vec<u8> = buf.drain(..total).collect();
    Some(String::from_utf8_lossy(&msg).into_owned())
}

/// Status code of a response, None for a request.
pub fn status_code(msg: &str) -> Option<u16> {
    let first = msg.lines().next()?;
    let rest = first.strip_prefix("SIP/2.0 ")?;
    rest.get(..3)?.parse().ok()
}

/// Status line of a response ("SIP/2.0 403 Forbidden").
pub fn status_line(msg: &str) -> &str {
    msg.lines().next().unwrap_or("").trim_end()
}

/// A unique token for Call-IDs, tags and branches.
pub fn unique(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "{tag}{}x{}x{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst),
        now_ms() % 1_000_000
    )
}

/// Builds a SIP message from lines, CRLF-terminated, with Content-Length.
pub fn sip_message(start: &str, headers: &[String], body: &str) -> String {
    let mut m = String::new();
    m.push_str(start);
    m.push_str("\r\n");
    for h in headers {
        m.push_str(h);
        m.push_str("\r\n");
    }
    m.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    m.push_str(body);
    m
}

// ---------------------------------------------------------------------------
// Packet capture
// ---------------------------------------------------------------------------

/// tshark on the loopback interface, printing "srcport dstport" per UDP packet (and,
/// started with [`Capture::start_payloads`], its arrival time and payload too).
pub struct Capture {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

/// One UDP packet seen by a [`Capture`] started with [`Capture::start_payloads`].
#[derive(Debug, Clone)]
pub struct CapturedPacket {
    pub src_port: u16,
    pub dst_port: u16,
    /// Arrival time, seconds since the epoch.
    pub at: f64,
    pub payload: Vec<u8>,
}

impl Capture {
    pub fn start(dir: &Path, filter: &str, max_secs: u32) -> Capture {
        Capture::spawn(dir, filter, max_secs, &["udp.srcport", "udp.dstport"])
    }

    /// Like [`start`](Self::start), keeping every packet's time and payload for
    /// [`finish_packets`](Self::finish_packets).
    pub fn start_payloads(dir: &Path, filter: &str, max_secs: u32) -> Capture {
        Capture::spawn(
            dir,
            filter,
            max_secs,
            &[
                "udp.srcport",
                "udp.dstport",
                "frame.time_epoch",
                "udp.payload",
            ],
        )
    }

    /// Like [`start_payloads`](Self::start_payloads) for TCP segments (empty payloads
    /// are the bare ACKs).
    pub fn start_tcp_payloads(dir: &Path, filter: &str, max_secs: u32) -> Capture {
        Capture::spawn(
            dir,
            filter,
            max_secs,
            &[
                "tcp.srcport",
                "tcp.dstport",
                "frame.time_epoch",
                "tcp.payload",
            ],
        )
    }

    fn spawn(dir: &Path, filter: &str, max_secs: u32, fields: &[&str]) -> Capture {
        require_tool("tshark", "tshark");
        let out = dir.join("capture.txt");
        let err = dir.join("capture.err");
        let mut cmd = Command::new("tshark");
        cmd.args(["-i", "lo", "-n", "-l", "-f", filter])
            .args(["-a", &format!("duration:{max_secs}")])
            .args(["-T", "fields"]);
        for f in fields {
            cmd.args(["-e", f]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start tshark");
        let cap = Capture {
            child: Some(child),
            out,
            err,
        };
        let end = Instant::now() + Duration::from_secs(15);
        loop {
            let e = std::fs::read_to_string(&cap.err).unwrap_or_default();
            if e.contains("Capturing on") {
                break;
            }
            if Instant::now() > end {
                panic!(
                    "tshark did not start capturing on lo (needs root or the wireshark \
                     group's capture rights):\n{e}"
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
        // dumpcap reports "Capturing on" just before the first read; give it a moment
        thread::sleep(Duration::from_millis(300));
        cap
    }

    /// Stops the capture and returns (src, dst) port pairs with packet counts.
    pub fn finish(mut self) -> BTreeMap<(u16, u16), u32> {
        self.stop();
        let mut pairs = BTreeMap::new();
        for line in std::fs::read_to_string(&self.out)
            .unwrap_or_default()
            .lines()
        {
            let mut f = line.split_whitespace();
            if let (Some(Ok(s)), Some(Ok(d))) = (f.next().map(str::parse), f.next().map(str::parse))
            {
                *pairs.entry((s, d)).or_insert(0) += 1;
            }
        }
        pairs
    }

    /// Stops a capture started with [`start_payloads`](Self::start_payloads) and returns
    /// its packets in arrival order.
    pub fn finish_packets(mut self) -> Vec<CapturedPacket> {
        self.stop();
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        text.lines()
            .filter_map(|line| {
                let mut f = line.split('\t');
                let src_port = f.next()?.trim().parse().ok()?;
                let dst_port = f.next()?.trim().parse().ok()?;
                let at = f.next()?.trim().parse().ok()?;
                // Bytes print as hex, with or without ':' between them.
                let hex: String = f.next()?.chars().filter(char::is_ascii_hexdigit).collect();
                let payload = (0..hex.len() / 2)
                    .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
                    .collect::<Result<_, _>>()
                    .ok()?;
                Some(CapturedPacket {
                    src_port,
                    dst_port,
                    at,
                    payload,
                })
            })
            .collect()
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            thread::sleep(Duration::from_millis(500));
            let _ = Command::new("kill")
                .arg("-INT")
                .arg(child.id().to_string())
                .status();
            let end = Instant::now() + Duration::from_secs(5);
            while Instant::now() < end {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}
