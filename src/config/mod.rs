//! Configuration: the YAML model, loading it with positions, and checking it.
//!
//! Everything the server needs to start is read here once; the rest of the code takes a
//! validated [`Config`] and never sees YAML. Every value an operator can get wrong keeps
//! its line and column (`Spanned`) so `switchboard check` can point at it.

use std::collections::HashSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;
use serde_saphyr::Spanned;

mod api;
mod reports;
pub use api::{ApiConfig, ApiRole, ApiToken, DispositionCode, Webhook, WEBHOOK_EVENTS};
pub use reports::{parse_target, ReportsConfig, WallboardConfig};

pub use crate::diagnostic::Diagnostic as ConfigError;

/// All the problems of one file; loading reports every one of them, not just the first.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

// ---- The file as written (raw, with positions) ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    sip: RawSip,
    rtp: RawRtp,
    #[serde(default)]
    data_dir: Option<Spanned<String>>,
    #[serde(default)]
    store: Option<Spanned<String>>,
    /// One node of several behind a SIP load balancer, sharing `store`.
    #[serde(default)]
    cluster: Option<Spanned<RawCluster>>,
    #[serde(default)]
    calls: RawCalls,
    #[serde(default)]
    trunks: Vec<RawTrunk>,
    #[serde(default)]
    users: Vec<RawUser>,
    #[serde(default)]
    dids: Vec<RawDid>,
    #[serde(default)]
    ivr: RawIvr,
    #[serde(default)]
    queues: Vec<RawQueue>,
    #[serde(default)]
    recording: RawRecording,
    #[serde(default)]
    api: Option<api::RawApi>,
    /// Outcome codes agents close calls with (default: resolved, follow_up, escalated).
    #[serde(default)]
    dispositions: Option<Vec<api::RawDisposition>>,
    /// Reasons an agent may give for not being ready (default: break, lunch, training,
    /// meeting).
    #[serde(default)]
    pause_reasons: Option<Vec<Spanned<String>>>,
    /// CRM endpoints that get signed POSTs about calls.
    #[serde(default)]
    webhooks: Vec<api::RawWebhook>,
    /// Thresholds and windows of the KPIs, and the reports' time zone.
    #[serde(default)]
    reports: reports::RawReports,
    /// The wallboard's colour thresholds.
    #[serde(default)]
    wallboard: reports::WallboardConfig,
    /// Abuse and overload limits (`sip::limits`).
    #[serde(default)]
    limits: RawLimits,
    /// The certificate for `tls:` listeners.
    #[serde(default)]
    tls: Option<RawTls>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTls {
    /// PEM file: the server's certificate, then its chain.
    certificate: Spanned<String>,
    /// PEM file: its private key (PKCS#8, PKCS#1 or SEC1).
    key: Spanned<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimits {
    /// Requests per second from one address that is not a trunk peer (0: none).
    #[serde(default)]
    source_requests_per_sec: Option<u32>,
    #[serde(default)]
    source_burst: Option<u32>,
    /// Refusals before an address that never authenticates is ignored (0: never).
    #[serde(default)]
    scan_strikes: Option<u32>,
    #[serde(default)]
    scan_ban_secs: Option<u64>,
    /// New calls admitted per second from anyone (0: no limit).
    #[serde(default)]
    call_setups_per_sec: Option<u32>,
    /// Calls in progress at most (0: no limit).
    #[serde(default)]
    max_calls: Option<usize>,
    /// Milliseconds a new call's INVITE may have waited for the switch (0: no limit).
    #[serde(default)]
    max_queue_ms: Option<u64>,
    /// CPU over the last second, percent of all cores, above which new calls are
    /// refused (0: no limit).
    #[serde(default)]
    max_cpu_percent: Option<Spanned<u32>>,
    #[serde(default)]
    retry_after_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRecording {
    /// always | never | on_demand (the default for calls no DID or queue names).
    #[serde(default)]
    policy: Option<Spanned<String>>,
    /// Keys an agent presses during a call: start an on-demand recording, then pause
    /// and resume it (PCI).
    #[serde(default)]
    keys: Option<Spanned<String>>,
    /// Seconds of audio each recording holds in memory while the disk is slow
    /// (default 5); a disk stalled longer loses the audio that does not fit.
    #[serde(default)]
    buffer_secs: Option<Spanned<u64>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSip {
    listen: Vec<Spanned<String>>,
    #[serde(default)]
    advertise: Option<Spanned<String>>,
    #[serde(default)]
    t1_ms: Option<Spanned<u64>>,
    /// OPTIONS keep-alive to agents' registered phones every this many seconds (0 or
    /// absent: off); an unanswered one drops that registration.
    #[serde(default)]
    keepalive_secs: Option<u64>,
    /// The shortest session-timer interval a caller may ask for (RFC 4028 Min-SE; at
    /// least 90, the default).
    #[serde(default)]
    session_min_se: Option<Spanned<u32>>,
    /// auto | force | never: how registered phones are reached (default auto).
    #[serde(default)]
    nat: Option<Spanned<String>>,
    #[serde(default)]
    realm: Option<String>,
    /// Digest algorithms offered, most preferred first: MD5, SHA-256.
    #[serde(default)]
    auth_algorithms: Option<Vec<Spanned<String>>>,
    /// Whether a digest must be signed for the request's own URI (default true; false
    /// only behind a proxy that rewrites request URIs).
    #[serde(default)]
    auth_check_uri: Option<bool>,
    /// Password guessing: lock out after this many failures.
    #[serde(default)]
    auth_lockout: Option<RawLockout>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLockout {
    /// Failures in a row that lock (default 10).
    #[serde(default)]
    after: Option<Spanned<u32>>,
    /// The first lock-out in seconds (default 300); each further one doubles.
    #[serde(default)]
    secs: Option<Spanned<u64>>,
    /// user_and_address (default) | user | address.
    #[serde(default)]
    scope: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRtp {
    ports: Spanned<String>,
    #[serde(default)]
    bind: Option<Spanned<String>>,
    /// An answered leg that sends no RTP this long is hung up; 0 turns it off.
    #[serde(default)]
    timeout_secs: Option<u64>,
    /// Threads that relay media, each owning many calls' sockets (default: one per core).
    #[serde(default)]
    relay_workers: Option<usize>,
    /// off (default) | auto | on: forward plain bridges in the kernel (eBPF).
    #[serde(default)]
    kernel_forwarding: Option<Spanned<String>>,
    /// Interfaces the kernel program watches (default: every interface).
    #[serde(default)]
    kernel_interfaces: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCalls {
    #[serde(default)]
    ring_timeout_secs: Option<u64>,
    #[serde(default)]
    drain_timeout_secs: Option<u64>,
    /// Pass key presses (RFC 4733 events, SIP INFO) from one party to the other.
    #[serde(default)]
    forward_dtmf: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCluster {
    node: Spanned<String>,
    #[serde(default)]
    dead_after_secs: Option<Spanned<u64>>,
    #[serde(default)]
    drain_notice_secs: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTrunk {
    name: Spanned<String>,
    peers: Vec<Spanned<String>>,
    /// Where calls out through this trunk go (host:port).
    #[serde(default)]
    outbound: Option<Spanned<String>>,
    /// refuse | prefer | require: SRTP on this trunk's calls.
    #[serde(default)]
    media_encryption: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    extension: Spanned<String>,
    #[serde(default)]
    name: Option<String>,
    password: Spanned<String>,
    #[serde(default)]
    role: Option<Spanned<String>>,
    /// Skill name → level 1–10 (agents).
    #[serde(default)]
    skills: std::collections::BTreeMap<String, Spanned<u8>>,
    /// auto | force | never: how this user's phones are reached (over `sip.nat`).
    #[serde(default)]
    nat: Option<Spanned<String>>,
    /// refuse | prefer | require: SRTP on this user's calls.
    #[serde(default)]
    media_encryption: Option<Spanned<String>>,
    /// May dial numbers that are neither extensions nor DIDs, out through the trunk
    /// for outgoing calls (off: a stolen password must not mean toll fraud).
    #[serde(default)]
    dial_out: Option<bool>,
}

/// One relaxation step: after this long, lower levels by N, drop a skill, or borrow the
/// agents of another queue (exactly one of the three).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelax {
    after_secs: Spanned<u64>,
    #[serde(default)]
    lower_levels: Option<u8>,
    #[serde(default)]
    drop_skill: Option<String>,
    #[serde(default)]
    borrow_agents_of: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawQueue {
    name: Spanned<String>,
    /// Required of every agent: skill name → minimum level.
    #[serde(default)]
    skills: std::collections::BTreeMap<String, Spanned<u8>>,
    #[serde(default)]
    strategy: Option<Spanned<String>>,
    #[serde(default)]
    ring_timeout_secs: Option<u64>,
    #[serde(default)]
    wrap_up_secs: Option<u64>,
    #[serde(default)]
    max_wait_secs: Option<u64>,
    /// How often a waiting caller hears its position and estimated wait.
    #[serde(default)]
    announce_every_secs: Option<u64>,
    /// With no member logged in: `overflow` at once (default) or `wait`.
    #[serde(default)]
    when_empty: Option<Spanned<String>>,
    /// Where a caller goes at `max_wait_secs` (or when nobody is logged in): another
    /// queue. Without it, the flow's failure path of the `queue` step.
    #[serde(default)]
    overflow_queue: Option<Spanned<String>>,
    /// Requirement relaxation over time, in order of `after_secs`.
    #[serde(default)]
    relax: Vec<RawRelax>,
    /// Extensions that are members (logged in and ready at start-up).
    members: Vec<Spanned<String>>,
    /// Recording policy for calls this queue connects (overrides the DID's).
    #[serde(default)]
    record: Option<Spanned<String>>,
    /// Join rule: at most this many callers wait; the next one overflows at once.
    #[serde(default)]
    max_callers: Option<usize>,
    /// The key a waiting caller presses to hang up and be called back, keeping its place.
    #[serde(default)]
    callback_key: Option<Spanned<String>>,
    /// This queue's service-level target, "80/20" (default: reports.service_level).
    #[serde(default)]
    service_level: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDid {
    number: Spanned<String>,
    #[serde(default)]
    extension: Option<Spanned<String>>,
    #[serde(default)]
    flow: Option<Spanned<String>>,
    /// Recording policy for calls to this number.
    #[serde(default)]
    record: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIvr {
    #[serde(default)]
    flows: Option<String>,
    #[serde(default)]
    prompts: Option<String>,
}

// ---- The validated model the server uses ----

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Connection-oriented: requests to a phone go over the connection it registered on.
    pub fn is_stream(self) -> bool {
        self != Transport::Udp
    }
}

impl fmt::Display for Transport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        })
    }
}

/// One node of a cluster: several Switchboards behind a SIP load balancer, sharing one
/// PostgreSQL store (see docs/scale-out.md).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterConfig {
    /// This node's name, different on every node; its events and calls are tagged with it.
    pub node: String,
    /// A node whose heartbeat is older than this is taken for dead: its calls in progress
    /// are recorded as interrupted by a survivor and the ACD forgets them.
    pub dead_after_secs: u64,
    /// On SIGTERM, how long the node answers the balancer's OPTIONS with 503 (so it is
    /// taken out of the set) before it refuses new calls and drains.
    pub drain_notice_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub transport: Transport,
    pub addr: SocketAddr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Agent,
    Supervisor,
}

#[derive(Debug, Clone)]
pub struct User {
    pub extension: String,
    pub name: String,
    pub password: String,
    pub role: Role,
    pub skills: Vec<(String, u8)>,
    /// Over the server's `sip.nat`.
    pub nat: Option<Nat>,
    pub media_encryption: MediaEncryption,
    /// Dials out through the outgoing trunk (numbers that are no extension or DID).
    pub dial_out: bool,
}

/// Whether a user's or trunk's calls use SRTP (SDES, RFC 4568), as Asterisk's
/// `media_encryption` and FreeSWITCH's `rtp_secure_media` decide it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MediaEncryption {
    /// Plain RTP only: an offer of RTP/SAVP alone is refused (488), keys offered
    /// beside plain RTP are ignored.
    Refuse,
    /// SRTP when the peer offers it; offered to the peer (RTP/AVP with keys, RFC 4568's
    /// best effort) when its signalling is TLS, as keys must not travel in clear text.
    #[default]
    Prefer,
    /// SRTP only (RTP/SAVP offered whatever the signalling); plain offers get 488.
    Require,
}

/// How a registered phone is reached: at its Contact (`never`), at the REGISTER's
/// source (`force`), or at the Contact unless NAT is detected (`auto`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    Auto,
    Force,
    Never,
}

/// How a queue picks among its available agents.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueStrategy {
    LongestIdle,
    FewestCalls,
    RoundRobin,
    BestSkill,
    RingAll,
}

#[derive(Debug, Clone)]
pub struct Queue {
    pub name: String,
    pub skills: Vec<(String, u8)>,
    pub strategy: QueueStrategy,
    pub ring_timeout_secs: u64,
    pub wrap_up_secs: u64,
    pub max_wait_secs: Option<u64>,
    pub announce_every_secs: Option<u64>,
    /// Keep callers waiting when no member is logged in (instead of overflowing).
    pub wait_when_empty: bool,
    /// The queue overflowing callers move to, if any.
    pub overflow_queue: Option<String>,
    pub relax: Vec<Relax>,
    pub members: Vec<String>,
    pub record: Option<RecordPolicy>,
    pub max_callers: Option<usize>,
    pub callback_key: Option<char>,
}

/// Whether a call's conversation is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RecordPolicy {
    /// From the moment the caller is connected to a person.
    Always,
    Never,
    /// When the agent presses the recording keys.
    OnDemand,
}

/// A relaxation step of a queue's requirement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relax {
    pub after_secs: u64,
    pub widen: RelaxWiden,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelaxWiden {
    LowerLevels(u8),
    DropSkill(String),
    BorrowAgentsOf(String),
}

#[derive(Debug, Clone)]
pub struct Trunk {
    pub name: String,
    pub peers: Vec<IpNet>,
    /// The trunk's address for outgoing calls, if it takes any.
    pub outbound: Option<SocketAddr>,
    pub media_encryption: MediaEncryption,
}

#[derive(Debug, Clone)]
pub struct Did {
    pub number: String,
    pub target: DidTarget,
    pub record: Option<RecordPolicy>,
    /// Where the target is written, for errors found later (an unknown flow).
    pub target_at: (u64, u64),
}

/// Where a DID goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DidTarget {
    /// Ring a user's phones.
    Extension(String),
    /// Answer with an IVR flow.
    Flow(String),
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file this came from, for messages.
    pub source: PathBuf,
    pub listeners: Vec<Listener>,
    /// Address written into Via, Contact, Record-Route and SDP.
    pub advertise: IpAddr,
    pub t1_ms: u64,
    /// How often agents' registered phones are pinged with OPTIONS (None: never).
    pub keepalive: Option<std::time::Duration>,
    /// RFC 4028 Min-SE: shorter session intervals get 422.
    pub session_min_se: u32,
    /// How registered phones are reached, unless a user says otherwise.
    pub nat: Nat,
    pub realm: String,
    pub auth_algorithms: Vec<crate::sip::auth::Algorithm>,
    pub auth_check_uri: bool,
    pub auth_lockout: crate::sip::auth_guard::GuardConfig,
    /// Per-source rates, scanner bans and call admission.
    pub limits: crate::sip::limits::LimitsConfig,
    pub rtp_bind: IpAddr,
    pub rtp_ports: (u16, u16),
    pub data_dir: PathBuf,
    /// `store: postgres://…`: records, queue log and events in that PostgreSQL database
    /// (several nodes share one); none: SQLite in `data_dir`.
    pub store_url: Option<String>,
    /// `cluster:`: this server is one node of several sharing `store`.
    pub cluster: Option<ClusterConfig>,
    /// The TLS certificate and key files; `None` with a `tls:` listener: a self-signed
    /// certificate made at the first start under `DATA_DIR/tls/` (for testing).
    pub tls: Option<TlsFiles>,
    pub ring_timeout_secs: u64,
    pub drain_timeout_secs: u64,
    /// Whether a bridged party's keys reach the other party (off: they are the
    /// owner's only — recording keys, supervisor keys).
    pub forward_dtmf: bool,
    pub trunks: Vec<Trunk>,
    pub users: Vec<User>,
    pub dids: Vec<Did>,
    /// IVR flow files (every *.yaml) and the prompt root they name files under.
    pub ivr_flows: PathBuf,
    pub ivr_prompts: PathBuf,
    /// ACD queues.
    pub queues: Vec<Queue>,
    /// For calls no DID or queue gives a recording policy.
    pub record: RecordPolicy,
    /// The agent's in-call keys for recording on demand and pause/resume.
    pub record_keys: String,
    /// How much audio a recording buffers while the disk is slow.
    pub recording_buffer: std::time::Duration,
    /// Hang up an answered leg that sends no RTP this long (None: never).
    pub media_timeout: Option<std::time::Duration>,
    /// Media relay threads (`rtp.relay_workers`; None: one per core).
    pub relay_workers: Option<usize>,
    /// Plain bridges forwarded in the kernel (`rtp.kernel_forwarding`), on these
    /// interfaces (`rtp.kernel_interfaces`; empty: all).
    pub kernel_forwarding: crate::media::kernel::Mode,
    pub kernel_interfaces: Vec<String>,
    /// How far the IVR's clock is set from the real one (`--clock`, for testing business
    /// hours); zero in service.
    pub clock_offset: jiff::SignedDuration,
    /// The control plane (HTTP API and event stream); None: not served.
    pub api: Option<ApiConfig>,
    pub dispositions: Vec<DispositionCode>,
    pub pause_reasons: Vec<String>,
    pub webhooks: Vec<Webhook>,
    /// KPI thresholds and windows (queue targets included) and the reports' time zone.
    pub reports: ReportsConfig,
    pub wallboard: WallboardConfig,
}

/// Command-line overrides, so several servers can run side by side.
#[derive(Debug, Default, Clone)]
pub struct Overrides {
    pub sip_listen: Option<SocketAddr>,
    /// The API's listener, instead of the file's `api.listen`.
    pub api_listen: Option<SocketAddr>,
    pub rtp_ports: Option<(u16, u16)>,
    pub data_dir: Option<PathBuf>,
    /// Run the IVR's clock as if it were this time now.
    pub clock: Option<jiff::Timestamp>,
}

impl Config {
    pub fn user(&self, extension: &str) -> Option<&User> {
        self.users.iter().find(|u| u.extension == extension)
    }

    /// How `extension`'s phones are reached.
    pub fn nat_for(&self, extension: &str) -> Nat {
        self.user(extension).and_then(|u| u.nat).unwrap_or(self.nat)
    }

    /// The trunk whose peer list contains `ip`, if any.
    pub fn trunk_for(&self, ip: IpAddr) -> Option<&Trunk> {
        let ip = canonical_ip(ip);
        self.trunks
            .iter()
            .find(|t| t.peers.iter().any(|net| net.contains(&ip)))
    }

    /// The first trunk that takes outgoing calls: its name and address.
    pub fn outbound_trunk(&self) -> Option<(String, SocketAddr)> {
        self.trunks
            .iter()
            .find_map(|t| t.outbound.map(|addr| (t.name.clone(), addr)))
    }

    pub fn did(&self, number: &str) -> Option<&Did> {
        self.dids.iter().find(|d| d.number == number)
    }

    /// DIDs that name a flow `known` does not contain, as positioned errors.
    pub fn unknown_flows(&self, mut known: impl FnMut(&str) -> bool) -> Vec<ConfigError> {
        self.dids
            .iter()
            .filter_map(|d| match &d.target {
                DidTarget::Flow(f) if !known(f) => Some(ConfigError {
                    file: self.source.clone(),
                    line: d.target_at.0,
                    column: d.target_at.1,
                    message: format!(
                        "DID {} goes to flow \"{f}\", which is not in {}",
                        d.number,
                        self.ivr_flows.display()
                    ),
                }),
                _ => None,
            })
            .collect()
    }

    pub fn apply(&mut self, o: &Overrides) {
        if let Some(addr) = o.sip_listen {
            // TLS moves with them, to the next port (as 5061 follows 5060).
            let tls = self
                .listeners
                .iter()
                .any(|l| l.transport == Transport::Tls)
                .then(|| Listener {
                    transport: Transport::Tls,
                    addr: SocketAddr::new(addr.ip(), addr.port().wrapping_add(1)),
                });
            self.listeners = vec![
                Listener {
                    transport: Transport::Udp,
                    addr,
                },
                Listener {
                    transport: Transport::Tcp,
                    addr,
                },
            ];
            self.listeners.extend(tls);
            if !addr.ip().is_unspecified() {
                self.advertise = addr.ip();
            }
        }
        if let Some(p) = o.rtp_ports {
            self.rtp_ports = p;
        }
        if let (Some(addr), Some(api)) = (o.api_listen, self.api.as_mut()) {
            api.listen = addr;
        }
        if let Some(d) = &o.data_dir {
            self.data_dir = d.clone();
        }
        if let Some(t) = o.clock {
            self.clock_offset = t.duration_since(jiff::Timestamp::now());
        }
    }
}

/// IPv4-mapped IPv6 peers (from dual-stack sockets) match IPv4 allow-lists.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

/// Parses `LOW-HIGH` into an even-aligned range with room for at least one RTP/RTCP pair.
pub fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let (lo, hi) = s.split_once('-').ok_or_else(|| {
        format!("\"{s}\" is not a port range; write it as LOW-HIGH, e.g. 20000-20999")
    })?;
    let lo: u16 = lo
        .trim()
        .parse()
        .map_err(|_| format!("\"{lo}\" is not a port number (1-65535)"))?;
    let hi: u16 = hi
        .trim()
        .parse()
        .map_err(|_| format!("\"{hi}\" is not a port number (1-65535)"))?;
    if lo == 0 || hi <= lo {
        return Err(format!(
            "port range {lo}-{hi} is empty; the low port must be above 0 and below the high port"
        ));
    }
    let first_even = lo + (lo % 2);
    if first_even.checked_add(1).is_none_or(|p| p > hi) {
        return Err(format!(
            "port range {lo}-{hi} has no room for an RTP/RTCP pair (an even port and the next one)"
        ));
    }
    Ok((lo, hi))
}

/// `transport:address:port`, as listeners (and shared registrations) are written.
pub(crate) fn parse_listener(s: &str) -> Result<Listener, String> {
    let (proto, addr) = s.split_once(':').ok_or_else(|| {
        format!("\"{s}\" is not a listener; write transport:address:port, e.g. udp:0.0.0.0:5060")
    })?;
    let transport = match proto.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        other => {
            return Err(format!(
                "transport \"{other}\" is not supported; use udp, tcp or tls"
            ))
        }
    };
    let addr: SocketAddr = addr.parse().map_err(|_| {
        format!("\"{addr}\" is not an address:port (IPv6 goes in brackets: [::1]:5060)")
    })?;
    Ok(Listener { transport, addr })
}

/// Loads, parses and validates a config file, collecting every error.
pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line: 0,
            column: 0,
            message: format!("cannot read the file: {e}"),
        }])
    })?;
    parse(path, &text)
}

/// Parses and validates config text; `path` is used in messages and to resolve `data_dir`.
pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigErrors> {
    let raw: RawConfig = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((0, 0));
        ConfigErrors(vec![ConfigError {
            file: path.to_path_buf(),
            line,
            column,
            message: plain_reason(&e.without_snippet().to_string()),
        }])
    })?;
    Validator::new(path).run(raw)
}

/// The YAML library's message without its own position decorations (we print ours).
fn plain_reason(s: &str) -> String {
    let mut s = s.lines().next().unwrap_or(s).trim();
    if let Some(rest) = s.strip_prefix("error: ") {
        s = rest.split_once(": ").map(|(_, r)| r).unwrap_or(rest);
    }
    if let Some(i) = s.rfind(" at line ") {
        s = &s[..i];
    }
    s.to_string()
}

struct Validator {
    file: PathBuf,
    errors: Vec<ConfigError>,
}

impl Validator {
    fn new(path: &Path) -> Self {
        Validator {
            file: path.to_path_buf(),
            errors: Vec::new(),
        }
    }

    fn limits(&mut self, raw: &RawLimits) -> crate::sip::limits::LimitsConfig {
        let d = crate::sip::limits::LimitsConfig::default();
        let source_rate = raw.source_requests_per_sec.unwrap_or(d.source_rate);
        let retry_after = match &raw.retry_after_secs {
            Some(r) if r.value == 0 || r.value > 3600 => {
                self.error(
                    r,
                    "limits.retry_after_secs must be 1 to 3600 (seconds a refused caller waits)",
                );
                d.retry_after
            }
            Some(r) => std::time::Duration::from_secs(r.value),
            None => d.retry_after,
        };
        let max_cpu_percent = match &raw.max_cpu_percent {
            Some(p) if p.value > 99 => {
                self.error(
                    p,
                    "limits.max_cpu_percent must be 0 (no limit) to 99 (percent of all cores)",
                );
                d.max_cpu_percent
            }
            Some(p) => p.value,
            None => d.max_cpu_percent,
        };
        crate::sip::limits::LimitsConfig {
            source_rate,
            // A burst below the rate would refuse what the rate allows.
            source_burst: raw.source_burst.unwrap_or(d.source_burst).max(source_rate),
            scan_strikes: raw.scan_strikes.unwrap_or(d.scan_strikes),
            scan_ban: raw
                .scan_ban_secs
                .map_or(d.scan_ban, std::time::Duration::from_secs),
            call_setups_per_sec: raw.call_setups_per_sec.unwrap_or(d.call_setups_per_sec),
            max_calls: raw.max_calls.unwrap_or(d.max_calls),
            max_queue_delay: raw
                .max_queue_ms
                .map_or(d.max_queue_delay, std::time::Duration::from_millis),
            max_cpu_percent,
            retry_after,
        }
    }

    fn lockout(&mut self, raw: Option<&RawLockout>) -> crate::sip::auth_guard::GuardConfig {
        use crate::sip::auth_guard::{GuardConfig, LockScope};
        let mut g = GuardConfig::default();
        let Some(raw) = raw else { return g };
        if let Some(after) = &raw.after {
            if after.value == 0 {
                self.error(
                    after,
                    "sip.auth_lockout.after must be at least 1 (failures in a row)",
                );
            } else {
                g.after = after.value;
            }
        }
        if let Some(secs) = &raw.secs {
            if secs.value == 0 {
                self.error(
                    secs,
                    "sip.auth_lockout.secs must be at least 1 (seconds locked out)",
                );
            } else {
                g.lockout = std::time::Duration::from_secs(secs.value);
            }
        }
        if let Some(scope) = &raw.scope {
            match LockScope::parse(&scope.value) {
                Some(s) => g.scope = s,
                None => self.error(
                    scope,
                    format!(
                        "sip.auth_lockout.scope \"{}\" is not one of user_and_address, user, address",
                        scope.value
                    ),
                ),
            }
        }
        g
    }

    fn error<T>(&mut self, at: &Spanned<T>, reason: impl Into<String>) {
        self.errors.push(ConfigError {
            file: self.file.clone(),
            line: at.referenced.line(),
            column: at.referenced.column(),
            message: reason.into(),
        });
    }

    /// Skill levels, each checked to be 1–10.
    fn skills(
        &mut self,
        raw: &std::collections::BTreeMap<String, Spanned<u8>>,
        what: &str,
    ) -> Vec<(String, u8)> {
        let mut out = Vec::new();
        for (name, level) in raw {
            if !(1..=10).contains(&level.value) {
                self.error(
                    level,
                    format!(
                        "skill \"{name}\" has {what} {}; levels go from 1 to 10",
                        level.value
                    ),
                );
            } else {
                out.push((name.clone(), level.value));
            }
        }
        out
    }

    fn run(mut self, raw: RawConfig) -> Result<Config, ConfigErrors> {
        let mut listeners = Vec::new();
        for l in &raw.sip.listen {
            match parse_listener(&l.value) {
                Ok(v) => listeners.push(v),
                Err(e) => self.error(l, e),
            }
        }
        if raw.sip.listen.is_empty() {
            self.errors.push(ConfigError {
                file: self.file.clone(),
                line: 1,
                column: 1,
                message: "sip.listen is empty; Switchboard needs at least one listener".into(),
            });
        }

        let advertise = match &raw.sip.advertise {
            Some(a) => match a.value.parse::<IpAddr>() {
                Ok(ip) if ip.is_unspecified() => {
                    self.error(
                        a,
                        "sip.advertise must be an address phones can reach, not 0.0.0.0 or ::",
                    );
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                }
                Ok(ip) => ip,
                Err(_) => {
                    self.error(a, format!("\"{}\" is not an IP address", a.value));
                    IpAddr::V4(Ipv4Addr::LOCALHOST)
                }
            },
            // Without an explicit address, use the first specific listener address;
            // a wildcard listener falls back to loopback (the server logs a warning).
            None => listeners
                .iter()
                .map(|l| l.addr.ip())
                .find(|ip| !ip.is_unspecified())
                .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        };

        let t1_ms = match &raw.sip.t1_ms {
            Some(t) if t.value == 0 || t.value > 10_000 => {
                self.error(
                    t,
                    "sip.t1_ms must be between 1 and 10000 (RFC 3261 recommends 500)",
                );
                500
            }
            Some(t) => t.value,
            None => 500,
        };

        let mut auth_algorithms = Vec::new();
        for a in raw.sip.auth_algorithms.iter().flatten() {
            match crate::sip::auth::Algorithm::parse(&a.value) {
                Some(alg) => auth_algorithms.push(alg),
                None => self.error(
                    a,
                    format!(
                        "digest algorithm \"{}\" is unknown; use MD5 or SHA-256",
                        a.value
                    ),
                ),
            }
        }
        // MD5 alone by default, as Asterisk does: common softphones (baresip 1.0, SIPp 3.6)
        // give up on a challenge set that offers SHA-256 at all. SHA-256 is opt-in.
        if auth_algorithms.is_empty() {
            auth_algorithms = vec![crate::sip::auth::Algorithm::Md5];
        }
        let auth_lockout = self.lockout(raw.sip.auth_lockout.as_ref());
        let limits = self.limits(&raw.limits);

        let rtp_ports = match parse_port_range(&raw.rtp.ports.value) {
            Ok(r) => r,
            Err(e) => {
                self.error(&raw.rtp.ports, e);
                (20000, 20999)
            }
        };
        let rtp_bind = match &raw.rtp.bind {
            Some(b) => match b.value.parse() {
                Ok(ip) => ip,
                Err(_) => {
                    self.error(b, format!("\"{}\" is not an IP address", b.value));
                    IpAddr::V4(Ipv4Addr::UNSPECIFIED)
                }
            },
            None => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        };

        let mut trunks = Vec::new();
        let mut trunk_names = HashSet::new();
        for t in &raw.trunks {
            if !trunk_names.insert(t.name.value.clone()) {
                self.error(
                    &t.name,
                    format!("trunk \"{}\" is defined twice", t.name.value),
                );
            }
            let mut peers = Vec::new();
            for p in &t.peers {
                // A bare address is a single host.
                let parsed = p
                    .value
                    .parse::<IpNet>()
                    .or_else(|_| p.value.parse::<IpAddr>().map(IpNet::from));
                match parsed {
                    Ok(net) => peers.push(net),
                    Err(_) => self.error(
                        p,
                        format!(
                            "\"{}\" is not an address or CIDR block (e.g. 203.0.113.0/24)",
                            p.value
                        ),
                    ),
                }
            }
            let outbound = t.outbound.as_ref().and_then(|o| match o.value.parse() {
                Ok(addr) => Some(addr),
                Err(_) => {
                    self.error(
                        o,
                        format!(
                            "\"{}\" is not an address:port for outgoing calls (e.g. 203.0.113.5:5060)",
                            o.value
                        ),
                    );
                    None
                }
            });
            let media_encryption = self.media_encryption(&t.media_encryption);
            trunks.push(Trunk {
                name: t.name.value.clone(),
                peers,
                outbound,
                media_encryption,
            });
        }

        let mut users = Vec::new();
        let mut extensions = HashSet::new();
        for u in &raw.users {
            let ext = &u.extension;
            if ext.value.is_empty() || !ext.value.chars().all(|c| c.is_ascii_alphanumeric()) {
                self.error(
                    ext,
                    format!(
                        "extension \"{}\" must be letters and digits only (it is the SIP user name)",
                        ext.value
                    ),
                );
            }
            if !extensions.insert(ext.value.clone()) {
                self.error(ext, format!("extension {} is defined twice", ext.value));
            }
            if u.password.value.len() < 6 {
                self.error(
                    &u.password,
                    format!(
                        "the password of extension {} is shorter than 6 characters",
                        ext.value
                    ),
                );
            }
            let role = match &u.role {
                None => Role::Agent,
                Some(r) => match r.value.as_str() {
                    "agent" => Role::Agent,
                    "supervisor" => Role::Supervisor,
                    other => {
                        self.error(
                            r,
                            format!("role \"{other}\" is unknown; use agent or supervisor"),
                        );
                        Role::Agent
                    }
                },
            };
            let skills = self.skills(&u.skills, "level");
            let nat = u.nat.as_ref().and_then(|n| self.nat(n));
            let media_encryption = self.media_encryption(&u.media_encryption);
            users.push(User {
                nat,
                media_encryption,
                dial_out: u.dial_out.unwrap_or(false),
                extension: ext.value.clone(),
                name: u.name.clone().unwrap_or_else(|| ext.value.clone()),
                password: u.password.value.clone(),
                role,
                skills,
            });
        }

        let mut dids = Vec::new();
        let mut numbers = HashSet::new();
        for d in &raw.dids {
            if !numbers.insert(d.number.value.clone()) {
                self.error(&d.number, format!("DID {} is routed twice", d.number.value));
            }
            let (target, at) = match (&d.extension, &d.flow) {
                (Some(ext), None) => {
                    if !extensions.contains(&ext.value) {
                        let hint = closest(&ext.value, extensions.iter())
                            .map(|s| format!(" (did you mean \"{s}\"?)"))
                            .unwrap_or_default();
                        self.error(
                            ext,
                            format!(
                                "DID {} goes to extension \"{}\", which is not a configured user{hint}",
                                d.number.value, ext.value
                            ),
                        );
                    }
                    (DidTarget::Extension(ext.value.clone()), ext)
                }
                (None, Some(flow)) => (DidTarget::Flow(flow.value.clone()), flow),
                (Some(ext), Some(_)) => {
                    self.error(
                        ext,
                        format!(
                            "DID {} has both an extension and a flow; give one of them",
                            d.number.value
                        ),
                    );
                    continue;
                }
                (None, None) => {
                    self.error(
                        &d.number,
                        format!(
                            "DID {} goes nowhere; give it an extension or a flow",
                            d.number.value
                        ),
                    );
                    continue;
                }
            };
            let record = d.record.as_ref().and_then(|r| self.record_policy(r));
            dids.push(Did {
                number: d.number.value.clone(),
                target,
                record,
                target_at: (at.referenced.line(), at.referenced.column()),
            });
        }

        let mut queues = Vec::new();
        let mut queue_names = HashSet::new();
        for q in &raw.queues {
            if !queue_names.insert(q.name.value.clone()) {
                self.error(
                    &q.name,
                    format!("queue \"{}\" is defined twice", q.name.value),
                );
            }
            let strategy = match q.strategy.as_ref().map(|s| (s, s.value.as_str())) {
                None | Some((_, "best_skill")) => QueueStrategy::BestSkill,
                Some((_, "longest_idle")) => QueueStrategy::LongestIdle,
                Some((_, "fewest_calls")) => QueueStrategy::FewestCalls,
                Some((_, "round_robin")) => QueueStrategy::RoundRobin,
                Some((_, "ring_all")) => QueueStrategy::RingAll,
                Some((at, other)) => {
                    self.error(
                        at,
                        format!(
                            "strategy \"{other}\" is unknown; use best_skill, longest_idle, \
                             fewest_calls, round_robin or ring_all"
                        ),
                    );
                    QueueStrategy::BestSkill
                }
            };
            for m in &q.members {
                if !extensions.contains(&m.value) {
                    self.error(
                        m,
                        format!(
                            "queue \"{}\" lists member \"{}\", which is not a configured user",
                            q.name.value, m.value
                        ),
                    );
                }
            }
            queues.push(Queue {
                name: q.name.value.clone(),
                skills: self.skills(&q.skills, "minimum level"),
                strategy,
                ring_timeout_secs: q.ring_timeout_secs.unwrap_or(15),
                wrap_up_secs: q.wrap_up_secs.unwrap_or(10),
                max_wait_secs: q.max_wait_secs,
                announce_every_secs: q.announce_every_secs,
                overflow_queue: q.overflow_queue.as_ref().map(|o| o.value.clone()),
                wait_when_empty: match q.when_empty.as_ref().map(|w| (w, w.value.as_str())) {
                    None | Some((_, "overflow")) => false,
                    Some((_, "wait")) => true,
                    Some((at, other)) => {
                        self.error(at, format!("when_empty \"{other}\" is unknown; use overflow or wait"));
                        false
                    }
                },
                relax: q
                    .relax
                    .iter()
                    .filter_map(|r| {
                        let widen = match (r.lower_levels, &r.drop_skill, &r.borrow_agents_of) {
                            (Some(n), None, None) => RelaxWiden::LowerLevels(n),
                            (None, Some(s), None) => RelaxWiden::DropSkill(s.clone()),
                            (None, None, Some(q)) => RelaxWiden::BorrowAgentsOf(q.clone()),
                            _ => {
                                self.error(
                                    &r.after_secs,
                                    "a relax step needs exactly one of lower_levels, drop_skill, borrow_agents_of",
                                );
                                return None;
                            }
                        };
                        Some(Relax {
                            after_secs: r.after_secs.value,
                            widen,
                        })
                    })
                    .collect(),
                members: q.members.iter().map(|m| m.value.clone()).collect(),
                record: q.record.as_ref().and_then(|r| self.record_policy(r)),
                max_callers: q.max_callers,
                callback_key: q.callback_key.as_ref().and_then(|k| {
                    let mut chars = k.value.chars();
                    match (chars.next(), chars.next()) {
                        (Some(c), None) if "0123456789*#".contains(c) => Some(c),
                        _ => {
                            self.error(k, format!("callback_key \"{}\" must be one keypad key (0-9, * or #)", k.value));
                            None
                        }
                    }
                }),
            });
        }

        for q in &raw.queues {
            if let Some(o) = &q.overflow_queue {
                if !queue_names.contains(&o.value) || o.value == q.name.value {
                    self.error(
                        o,
                        format!(
                            "queue \"{}\" overflows to \"{}\", which is not another configured queue",
                            q.name.value, o.value
                        ),
                    );
                }
            }
        }

        let session_min_se = match &raw.sip.session_min_se {
            Some(v) if v.value < 90 => {
                self.error(v, "session_min_se must be at least 90 seconds (RFC 4028)");
                90
            }
            Some(v) => v.value,
            None => 90,
        };
        let data_dir = raw
            .data_dir
            .as_ref()
            .map(|d| PathBuf::from(&d.value))
            .unwrap_or_else(|| PathBuf::from("./data"));
        let store_url = raw.store.as_ref().and_then(|u| {
            let url = u.value.trim();
            if url.starts_with("postgres://") || url.starts_with("postgresql://") {
                Some(url.to_string())
            } else {
                self.error(
                    u,
                    "store must be a PostgreSQL URL (postgres://user:password@host:port/database); \
                     leave it out to keep the records in data_dir's SQLite database",
                );
                None
            }
        });
        let cluster = raw.cluster.as_ref().and_then(|c| {
            let node = c.value.node.value.trim();
            let named = !node.is_empty()
                && node.len() <= 64
                && node
                    .chars()
                    .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_');
            if !named {
                self.error(
                    &c.value.node,
                    "cluster.node must be a name of letters, digits, '-' or '_' (at most 64), \
                     different on every node",
                );
                return None;
            }
            if store_url.is_none() {
                self.error(
                    c,
                    "a cluster's nodes share their records and state through PostgreSQL: set \
                     store: postgres://… (the same database on every node)",
                );
                return None;
            }
            let dead_after_secs = match &c.value.dead_after_secs {
                Some(d) if d.value < 2 => {
                    self.error(
                        d,
                        "cluster.dead_after_secs must be at least 2 (nodes beat every second)",
                    );
                    return None;
                }
                Some(d) => d.value,
                None => 5,
            };
            Some(ClusterConfig {
                node: node.to_string(),
                dead_after_secs,
                drain_notice_secs: c.value.drain_notice_secs.unwrap_or(3),
            })
        });

        let record = raw
            .recording
            .policy
            .as_ref()
            .and_then(|r| self.record_policy(r))
            .unwrap_or(RecordPolicy::OnDemand);
        let record_keys = match &raw.recording.keys {
            Some(k)
                if k.value.is_empty() || !k.value.chars().all(|c| "0123456789*#".contains(c)) =>
            {
                self.error(
                    k,
                    format!(
                        "recording.keys \"{}\" must be keypad keys (0-9, * and #), e.g. \"*3\"",
                        k.value
                    ),
                );
                String::new()
            }
            Some(k) => k.value.clone(),
            None => "*3".into(),
        };
        let recording_buffer = match &raw.recording.buffer_secs {
            Some(b) if b.value == 0 || b.value > 60 => {
                self.error(
                    b,
                    format!(
                        "recording.buffer_secs {} must be 1 to 60 (seconds of audio held \
                         per recording while the disk is slow)",
                        b.value
                    ),
                );
                crate::media::recorder::writer::DEFAULT_BUFFER
            }
            Some(b) => std::time::Duration::from_secs(b.value),
            None => crate::media::recorder::writer::DEFAULT_BUFFER,
        };
        let kernel_forwarding = self.kernel_forwarding(&raw.rtp.kernel_forwarding);
        let api = self.api(raw.api.as_ref(), &extensions);
        let dispositions = self.dispositions(raw.dispositions.as_deref());
        let pause_reasons = self.pause_reasons(raw.pause_reasons.as_deref());
        let webhooks = self.webhooks(&raw.webhooks);
        let mut reports = self.reports(&raw.reports);
        for q in &raw.queues {
            if let Some(t) = q.service_level.as_ref().and_then(|s| self.target(s)) {
                reports.rules.queue_targets.insert(q.name.value.clone(), t);
            }
        }
        let nat = raw
            .sip
            .nat
            .as_ref()
            .and_then(|n| self.nat(n))
            .unwrap_or(Nat::Auto);
        if !self.errors.is_empty() {
            return Err(ConfigErrors(self.errors));
        }
        Ok(Config {
            api,
            reports,
            wallboard: raw.wallboard.clone(),
            dispositions,
            pause_reasons,
            webhooks,
            source: self.file,
            listeners,
            advertise,
            t1_ms,
            nat,
            keepalive: raw
                .sip
                .keepalive_secs
                .filter(|s| *s > 0)
                .map(std::time::Duration::from_secs),
            session_min_se,
            realm: raw.sip.realm.unwrap_or_else(|| "switchboard".into()),
            auth_algorithms,
            auth_check_uri: raw.sip.auth_check_uri.unwrap_or(true),
            auth_lockout,
            limits,
            rtp_bind,
            rtp_ports,
            data_dir,
            store_url,
            cluster,
            tls: raw.tls.as_ref().map(|t| TlsFiles {
                certificate: PathBuf::from(&t.certificate.value),
                key: PathBuf::from(&t.key.value),
            }),
            ring_timeout_secs: raw.calls.ring_timeout_secs.unwrap_or(30),
            forward_dtmf: raw.calls.forward_dtmf.unwrap_or(false),
            drain_timeout_secs: raw.calls.drain_timeout_secs.unwrap_or(60),
            trunks,
            users,
            dids,
            ivr_flows: PathBuf::from(raw.ivr.flows.as_deref().unwrap_or("ivr-flows")),
            ivr_prompts: PathBuf::from(raw.ivr.prompts.as_deref().unwrap_or("prompts")),
            clock_offset: jiff::SignedDuration::ZERO,
            queues,
            record,
            record_keys,
            recording_buffer,
            media_timeout: match raw.rtp.timeout_secs {
                Some(0) => None,
                Some(s) => Some(std::time::Duration::from_secs(s)),
                None => Some(std::time::Duration::from_secs(60)),
            },
            relay_workers: raw.rtp.relay_workers.filter(|&n| n > 0),
            kernel_forwarding,
            kernel_interfaces: raw.rtp.kernel_interfaces.clone().unwrap_or_default(),
        })
    }

    fn kernel_forwarding(&mut self, at: &Option<Spanned<String>>) -> crate::media::kernel::Mode {
        use crate::media::kernel::Mode;
        let choices = [("off", Mode::Off), ("auto", Mode::Auto), ("on", Mode::On)];
        at.as_ref()
            .and_then(|at| self.one_of(at, "kernel_forwarding", &choices))
            .unwrap_or_default()
    }

    fn media_encryption(&mut self, at: &Option<Spanned<String>>) -> MediaEncryption {
        let choices = [
            ("refuse", MediaEncryption::Refuse),
            ("prefer", MediaEncryption::Prefer),
            ("require", MediaEncryption::Require),
        ];
        at.as_ref()
            .and_then(|at| self.one_of(at, "media_encryption", &choices))
            .unwrap_or_default()
    }

    fn nat(&mut self, at: &Spanned<String>) -> Option<Nat> {
        let choices = [
            ("auto", Nat::Auto),
            ("force", Nat::Force),
            ("never", Nat::Never),
        ];
        self.one_of(at, "nat", &choices)
    }

    fn record_policy(&mut self, at: &Spanned<String>) -> Option<RecordPolicy> {
        let choices = [
            ("always", RecordPolicy::Always),
            ("never", RecordPolicy::Never),
            ("on_demand", RecordPolicy::OnDemand),
        ];
        self.one_of(at, "recording policy", &choices)
    }

    /// The value `at` names among `choices`; else an error pointing at it that lists them.
    fn one_of<T: Copy>(
        &mut self,
        at: &Spanned<String>,
        what: &str,
        choices: &[(&str, T)],
    ) -> Option<T> {
        if let Some((_, v)) = choices.iter().find(|(name, _)| *name == at.value) {
            return Some(*v);
        }
        let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
        let reason = format!("{what} \"{}\" is not one of {}", at.value, names.join(", "));
        self.error(at, reason);
        None
    }
}

/// The candidate nearest to `word` by edit distance, if it is close enough to be a typo.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a String>) -> Option<&'a String> {
    candidates
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
sip:
  listen: ["udp:127.0.0.1:5060", "tcp:[::1]:5060"]
rtp:
  ports: "20000-20099"
trunks:
  - name: carrier
    peers: ["203.0.113.0/24", "127.0.0.1"]
users:
  - { extension: "2001", password: secret2001 }
  - { extension: "3001", password: secret3001, role: supervisor }
dids:
  - { number: "100", extension: "2001" }
"#;

    #[test]
    fn a_cluster_node_needs_a_name_and_a_postgresql_store() {
        let store = "store: postgres://sb:pw@127.0.0.1:5432/sb\n";
        let node = format!("{GOOD}{store}cluster: {{ node: eu-1 }}\n");
        let c = parse(Path::new("c.yaml"), &node).unwrap().cluster.unwrap();
        assert_eq!(
            (c.node.as_str(), c.dead_after_secs, c.drain_notice_secs),
            ("eu-1", 5, 3)
        );
        let alone = format!("{GOOD}cluster: {{ node: a }}\n");
        let err = format!("{}", parse(Path::new("c.yaml"), &alone).unwrap_err());
        // The line after GOOD's last, then the one after the store's.
        let (first, second) = (GOOD.lines().count() + 1, GOOD.lines().count() + 2);
        assert!(
            err.contains(&format!("c.yaml:{first}:")) && err.contains("store: postgres://"),
            "{err}"
        );
        let spaced = format!("{GOOD}{store}cluster: {{ node: \"node a\" }}\n");
        let err = format!("{}", parse(Path::new("c.yaml"), &spaced).unwrap_err());
        assert!(
            err.contains(&format!("c.yaml:{second}:")) && err.contains("cluster.node must be"),
            "{err}"
        );
        let hasty = format!("{GOOD}{store}cluster: {{ node: a, dead_after_secs: 1 }}\n");
        let err = format!("{}", parse(Path::new("c.yaml"), &hasty).unwrap_err());
        assert!(err.contains("dead_after_secs must be at least 2"), "{err}");
    }

    #[test]
    fn relay_workers_default_to_one_per_core_and_zero_means_the_default() {
        let c = parse(Path::new("c.yaml"), GOOD).unwrap();
        assert_eq!(c.relay_workers, None);
        let three = GOOD.replace(
            "ports: \"20000-20099\"",
            "ports: \"20000-20099\"\n  relay_workers: 3",
        );
        assert_eq!(
            parse(Path::new("c.yaml"), &three).unwrap().relay_workers,
            Some(3)
        );
        let zero = GOOD.replace(
            "ports: \"20000-20099\"",
            "ports: \"20000-20099\"\n  relay_workers: 0",
        );
        assert_eq!(
            parse(Path::new("c.yaml"), &zero).unwrap().relay_workers,
            None
        );
    }

    #[test]
    fn kernel_forwarding_is_off_unless_asked_and_a_wrong_mode_is_pointed_at() {
        use crate::media::kernel::Mode;
        let c = parse(Path::new("c.yaml"), GOOD).unwrap();
        assert_eq!(c.kernel_forwarding, Mode::Off);
        assert!(c.kernel_interfaces.is_empty());
        let on = GOOD.replace(
            "ports: \"20000-20099\"",
            "ports: \"20000-20099\"\n  kernel_forwarding: auto\n  kernel_interfaces: [lo]",
        );
        let c = parse(Path::new("c.yaml"), &on).unwrap();
        assert_eq!(c.kernel_forwarding, Mode::Auto);
        assert_eq!(c.kernel_interfaces, vec!["lo".to_string()]);
        let wrong = GOOD.replace(
            "ports: \"20000-20099\"",
            "ports: \"20000-20099\"\n  kernel_forwarding: yes please",
        );
        let err = format!("{}", parse(Path::new("c.yaml"), &wrong).unwrap_err());
        assert!(
            err.contains("kernel_forwarding \"yes please\" is not one of off, auto, on"),
            "{err}"
        );
        assert!(err.contains("c.yaml:"), "{err}");
    }

    #[test]
    fn good_config_loads() {
        let c = parse(Path::new("c.yaml"), GOOD).unwrap();
        assert_eq!(c.listeners.len(), 2);
        assert_eq!(c.listeners[1].transport, Transport::Tcp);
        assert_eq!(c.advertise, "127.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(c.rtp_ports, (20000, 20099));
        assert_eq!(c.user("3001").unwrap().role, Role::Supervisor);
        assert_eq!(
            c.trunk_for("203.0.113.9".parse().unwrap()).unwrap().name,
            "carrier"
        );
        assert!(c.trunk_for("198.51.100.1".parse().unwrap()).is_none());
        // An IPv4-mapped IPv6 source matches an IPv4 peer list.
        assert!(c.trunk_for("::ffff:127.0.0.1".parse().unwrap()).is_some());
        assert_eq!(
            c.did("100").unwrap().target,
            DidTarget::Extension("2001".into())
        );
        assert_eq!(c.auth_algorithms, vec![crate::sip::auth::Algorithm::Md5]);
    }

    #[test]
    fn trust_settings_load_and_their_mistakes_point_at_their_line() {
        let listen = "  listen: [\"udp:127.0.0.1:5060\", \"tcp:[::1]:5060\"]\n";
        let with = |sip: &str, rest: &str| {
            format!(
                "{}{rest}",
                GOOD.replacen(listen, &format!("{listen}{sip}"), 1)
            )
        };
        let c = parse(Path::new("c.yaml"), GOOD).unwrap();
        assert_eq!(
            c.auth_lockout,
            crate::sip::auth_guard::GuardConfig::default()
        );
        assert_eq!(c.limits, crate::sip::limits::LimitsConfig::default());
        assert!(c.auth_check_uri);
        assert_eq!(c.recording_buffer, std::time::Duration::from_secs(5));

        let good = with(
            "  auth_lockout: { after: 20, secs: 60, scope: user }\n  auth_check_uri: false\n",
            "limits:\n  call_setups_per_sec: 30\n  max_calls: 200\n  source_requests_per_sec: 300\n  \
             source_burst: 10\nrecording:\n  buffer_secs: 9\n",
        );
        let c = parse(Path::new("c.yaml"), &good).unwrap();
        assert_eq!(
            (c.auth_lockout.after, c.auth_lockout.lockout.as_secs()),
            (20, 60)
        );
        assert_eq!(
            c.auth_lockout.scope,
            crate::sip::auth_guard::LockScope::User
        );
        assert!(!c.auth_check_uri);
        assert_eq!(
            (c.limits.call_setups_per_sec, c.limits.max_calls),
            (30, 200)
        );
        assert_eq!(
            c.limits.source_burst, 300,
            "a burst is never below the rate"
        );
        assert_eq!(c.recording_buffer.as_secs(), 9);

        let bad = with(
            "  auth_lockout: { after: 0, scope: everyone }\n",
            "limits:\n  retry_after_secs: 0\nrecording:\n  buffer_secs: 0\n",
        );
        let errs = parse(Path::new("c.yaml"), &bad).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 4, "{shown:#?}");
        let at = |needle: &str| bad.lines().position(|l| l.contains(needle)).unwrap() + 1;
        for (line, says) in [
            (at("auth_lockout"), "after must be at least 1"),
            (
                at("auth_lockout"),
                "\"everyone\" is not one of user_and_address",
            ),
            (at("retry_after_secs"), "retry_after_secs must be 1 to 3600"),
            (at("buffer_secs"), "buffer_secs 0 must be 1 to 60"),
        ] {
            assert!(
                shown
                    .iter()
                    .any(|e| e.starts_with(&format!("c.yaml:{line}:")) && e.contains(says)),
                "no error at line {line} saying {says}: {shown:#?}"
            );
        }
    }

    #[test]
    fn reports_settings_load_and_their_mistakes_point_at_their_line() {
        let good = format!(
            "{GOOD}queues:\n  - {{ name: billing, members: [\"2001\"], service_level: \"90/30\" }}\n\
             reports:\n  time_zone: Europe/Paris\n  service_level: \"85/15\"\n  short_abandon_secs: 3\n  \
             service_level_formula: abandons_met\n"
        );
        let c = parse(Path::new("c.yaml"), &good).unwrap();
        let r = &c.reports;
        assert_eq!(r.time_zone, "Europe/Paris");
        assert_eq!(
            (r.rules.target.within_ms, r.rules.target.share),
            (15_000, 0.85)
        );
        assert_eq!(r.rules.target_of("billing").within_ms, 30_000);
        assert_eq!(r.rules.short_abandon_ms, 3_000);
        assert_eq!(
            r.rules.formula,
            crate::reports::ServiceLevelFormula::AbandonsMet
        );
        let bad = format!(
            "{GOOD}reports:\n  time_zone: Mars/Olympus\n  service_level: \"eighty\"\n  \
             service_level_formula: best\n  csat_satisfied: 9\n"
        );
        let errs = parse(Path::new("c.yaml"), &bad).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 4, "{shown:#?}");
        let line = bad.lines().position(|l| l == "reports:").unwrap() + 1;
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with(&format!("c.yaml:{}:", line + 1))
                    && e.contains("\"Mars/Olympus\" is not a time zone")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with(&format!("c.yaml:{}:", line + 2))
                    && e.contains("e.g. \"80/20\"")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with(&format!("c.yaml:{}:", line + 3))
                    && e.contains("use offered, answered")),
            "{shown:#?}"
        );
        assert!(
            shown
                .iter()
                .any(|e| e.starts_with(&format!("c.yaml:{}:", line + 4))
                    && e.contains("from 1 to 5")),
            "{shown:#?}"
        );
    }

    #[test]
    fn every_error_has_its_position() {
        let bad = "sip:\n  listen: [\"sctp:1.2.3.4:5060\"]\nrtp:\n  ports: \"30000\"\nusers:\n  - { extension: \"2001\", password: pw }\ndids:\n  - { number: \"100\", extension: \"2011\" }\n";
        let errs = parse(Path::new("bad.yaml"), bad).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.to_string()).collect();
        assert_eq!(errs.len(), 4, "{shown:#?}");
        assert!(
            shown[0].starts_with("bad.yaml:2:12: transport \"sctp\""),
            "{}",
            shown[0]
        );
        assert!(
            shown[1].starts_with("bad.yaml:4:10: \"30000\" is not a port range"),
            "{}",
            shown[1]
        );
        assert!(
            shown[2].starts_with("bad.yaml:6:36: the password of extension 2001"),
            "{}",
            shown[2]
        );
        assert!(
            shown[3].starts_with("bad.yaml:8:33: DID 100 goes to extension \"2011\"")
                && shown[3].ends_with("(did you mean \"2001\"?)"),
            "{}",
            shown[3]
        );
    }

    #[test]
    fn syntax_errors_and_unknown_keys_are_positioned() {
        let errs = parse(
            Path::new("x.yaml"),
            "sip:\n  listen: []\n  lisen: 1\nrtp: {ports: \"1-3\"}\n",
        )
        .unwrap_err()
        .0;
        // The YAML library attributes unknown keys to the mapping entry it last read.
        assert!(errs[0].line >= 2, "{}", errs[0]);
        // The field, then the ones it could have meant (every sip: key, in order).
        assert!(
            errs[0]
                .message
                .starts_with("unknown field `lisen`, expected one of listen, advertise, t1_ms"),
            "{}",
            errs[0].message
        );
        assert!(
            errs[0]
                .message
                .ends_with("auth_algorithms, auth_check_uri, auth_lockout"),
            "{}",
            errs[0].message
        );
        let errs = parse(Path::new("x.yaml"), "sip:\n  listen: [\n")
            .unwrap_err()
            .0;
        assert_eq!(errs.len(), 1);
        assert!(errs[0].line >= 2, "{}", errs[0]);
    }

    #[test]
    fn dids_go_to_an_extension_or_a_flow() {
        let text = GOOD.replace(
            "dids:\n  - { number: \"100\", extension: \"2001\" }\n",
            "dids:\n  - { number: \"100\", flow: main }\n  - { number: \"101\", flow: mian }\n  - { number: \"102\" }\n",
        );
        let errs = parse(Path::new("c.yaml"), &text).unwrap_err().0;
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].message.contains("DID 102 goes nowhere"),
            "{}",
            errs[0]
        );
        let fixed = text.replace("  - { number: \"102\" }\n", "");
        let c = parse(Path::new("c.yaml"), &fixed).unwrap();
        assert_eq!(c.did("100").unwrap().target, DidTarget::Flow("main".into()));
        let unknown = c.unknown_flows(|f| f == "main");
        assert_eq!(unknown.len(), 1);
        assert_eq!(
            unknown[0].to_string(),
            "c.yaml:14:28: DID 101 goes to flow \"mian\", which is not in ivr-flows"
        );
    }

    #[test]
    fn queues_with_skills_relaxation_and_members() {
        let text = format!(
            "{GOOD}queues:\n  - name: billing\n    skills: {{ billing: 3 }}\n    strategy: fewest_calls\n    when_empty: wait\n    relax:\n      - {{ after_secs: 30, lower_levels: 2 }}\n      - {{ after_secs: 60, drop_skill: billing }}\n    members: [\"2001\"]\n"
        );
        let c = parse(Path::new("c.yaml"), &text).unwrap();
        let q = &c.queues[0];
        assert_eq!(q.strategy, QueueStrategy::FewestCalls);
        assert!(q.wait_when_empty);
        assert_eq!(
            q.relax,
            vec![
                Relax {
                    after_secs: 30,
                    widen: RelaxWiden::LowerLevels(2)
                },
                Relax {
                    after_secs: 60,
                    widen: RelaxWiden::DropSkill("billing".into())
                },
            ]
        );
        let bad = text
            .replace("members: [\"2001\"]", "members: [\"2099\"]")
            .replace("lower_levels: 2 }", "lower_levels: 2, drop_skill: x }")
            .replace("billing: 3", "billing: 11");
        let errs = parse(Path::new("c.yaml"), &bad).unwrap_err().0;
        let shown: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
        assert_eq!(errs.len(), 3, "{shown:#?}");
        assert!(shown.iter().any(|e| e.contains("levels go from 1 to 10")));
        assert!(shown.iter().any(|e| e.contains("exactly one of")));
        assert!(shown.iter().any(|e| e.contains("member \"2099\"")));
    }

    #[test]
    fn overrides_replace_listeners_and_ports() {
        let mut c = parse(Path::new("c.yaml"), GOOD).unwrap();
        c.apply(&Overrides {
            sip_listen: Some("127.0.0.5:5070".parse().unwrap()),
            rtp_ports: Some((31000, 31099)),
            data_dir: Some("/tmp/x".into()),
            clock: None,
            api_listen: None,
        });
        assert_eq!(c.listeners.len(), 2);
        assert!(c.listeners.iter().all(|l| l.addr.port() == 5070));
        assert_eq!(c.advertise, "127.0.0.5".parse::<IpAddr>().unwrap());
        assert_eq!(c.rtp_ports, (31000, 31099));
    }

    #[test]
    fn port_ranges() {
        assert!(parse_port_range("20000-20999").is_ok());
        assert!(parse_port_range("20001-20002").is_err());
        assert!(parse_port_range("20001-20003").is_ok());
        assert!(parse_port_range("0-10").is_err());
        assert!(parse_port_range("a-b").is_err());
    }
}
