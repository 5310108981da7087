//! Kernel forwarding: plain bridges relayed by a tc program instead of the relay
//! workers, as rtpengine's kernel module does, here with eBPF.
//!
//! [`start`] loads [`forward.bpf.c`](../../src/media/kernel/forward.bpf.c) (built by
//! build.rs) and attaches it to the ingress of the interfaces the media arrives on.
//! The program keeps a table of forwarded streams; each relay worker owns a handle
//! to it ([`Table`]) and a relay puts in one entry per direction once its call is a
//! same-codec bridge with nothing tapping it, and takes them out before anything
//! needs the packets again (a recording, a supervisor, an SDP change, the end). The
//! program leaves to the relay whatever it is not sure of (RTCP, key events, a new
//! source or SSRC, IPv6), so the relay stays the one place that decides.
//!
//! Where the kernel refuses (no CAP_BPF, no BTF, no clang at build time) `auto`
//! falls back to the relay, and says why once at start; `on` refuses to start.
//! The program is attached through links the process holds: when Switchboard stops
//! (or crashes) the kernel detaches it, and no stale stream is forwarded.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use std::os::fd::{AsFd, AsRawFd};

use aya::maps::{HashMap as BpfHashMap, IterableMap, Map, MapData};
use aya::programs::{SchedClassifier, TcAttachType};
use aya::Ebpf;

/// The program as build.rs left it: empty when clang was missing.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/forward.bpf.o"));

/// Whether the server forwards plain bridges in the kernel (`rtp.kernel_forwarding`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Every packet through the relay workers.
    #[default]
    Off,
    /// In the kernel where it can be; otherwise the relay, with a warning at start.
    Auto,
    /// In the kernel; the server does not start without it.
    On,
}

/// The loaded program: kept for the life of the process (its links detach with it).
struct Loaded {
    _ebpf: Ebpf,
    map_id: u32,
}

static LOADED: OnceLock<Loaded> = OnceLock::new();

/// Streams forwarded in the kernel now, and calls that used it and packets it carried,
/// for /metrics.
static ACTIVE_STREAMS: AtomicU64 = AtomicU64::new(0);
static CALLS: AtomicU64 = AtomicU64::new(0);
static PACKETS: AtomicU64 = AtomicU64::new(0);

/// Kernel forwarding figures for /metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Figures {
    /// Whether the program is attached.
    pub available: bool,
    pub active_streams: u64,
    pub calls: u64,
    pub packets: u64,
}

pub fn figures() -> Figures {
    Figures {
        available: LOADED.get().is_some(),
        active_streams: ACTIVE_STREAMS.load(Relaxed),
        calls: CALLS.load(Relaxed),
        packets: PACKETS.load(Relaxed),
    }
}

/// Loads and attaches the program as `mode` says, to `interfaces` (empty: every
/// interface the host has). Err only when `mode` is `On` and it cannot be done.
pub fn start(mode: Mode, interfaces: &[String], port_pairs: u32) -> anyhow::Result<()> {
    if mode == Mode::Off || LOADED.get().is_some() {
        return Ok(());
    }
    match load(interfaces, port_pairs) {
        Ok((loaded, names)) => {
            tracing::info!(interfaces = %names.join(","), "plain bridges are forwarded in the kernel");
            let _ = LOADED.set(loaded);
            // Loading read the kernel's BTF (megabytes, now freed): give it back now, not
            // at the first periodic trim.
            unsafe { libc::malloc_trim(0) };
            Ok(())
        }
        Err(e) if mode == Mode::Auto => {
            tracing::warn!(error = %format!("{e:#}"), "kernel forwarding unavailable: the relay carries every call");
            Ok(())
        }
        Err(e) => Err(e.context("rtp.kernel_forwarding is on")),
    }
}

/// Loads the program with room in its table for a stream on every RTP port pair (each
/// leg of a bridge is one pair and sends one stream).
fn load(interfaces: &[String], port_pairs: u32) -> anyhow::Result<(Loaded, Vec<String>)> {
    use anyhow::Context;
    if OBJECT.is_empty() {
        anyhow::bail!(
            "this build has no kernel program (build it with clang and libbpf-dev installed)"
        );
    }
    // From 6.6 tc programs attach as links (tcx), which the kernel detaches when the
    // process ends, however it ends. Older kernels attach through netlink filters that
    // would outlive a crash and go on forwarding dead calls' streams: not used.
    let version = aya::util::KernelVersion::current().context("reading the kernel's version")?;
    if version < aya::util::KernelVersion::new(6, 6, 0) {
        anyhow::bail!(
            "kernel forwarding needs Linux 6.6 or later (tcx links); this is {version:?}"
        );
    }
    let mut ebpf = aya::EbpfLoader::new()
        .set_max_entries("streams", port_pairs.max(2))
        .load(OBJECT)
        .context("loading the program into the kernel")?;
    let map_id = {
        let map = ebpf
            .map("streams")
            .context("the program has no streams table")?;
        let Map::HashMap(data) = map else {
            anyhow::bail!("the streams table is not a hash map");
        };
        data.info().context("reading the streams table")?.id()
    };
    let names = if interfaces.is_empty() {
        all_interfaces()?
    } else {
        interfaces.to_vec()
    };
    let prog: &mut SchedClassifier = ebpf
        .program_mut("forward_rtp")
        .context("the program has no forward_rtp")?
        .try_into()?;
    prog.load()
        .context("the kernel's verifier refused the program")?;
    for name in &names {
        prog.attach(name, TcAttachType::Ingress)
            .with_context(|| format!("attaching to {name}'s ingress"))?;
    }
    Ok((
        Loaded {
            _ebpf: ebpf,
            map_id,
        },
        names,
    ))
}

/// Every Ethernet or loopback interface (the program reads an Ethernet header; tun,
/// WireGuard and the like have none).
fn all_interfaces() -> anyhow::Result<Vec<String>> {
    const ARPHRD_ETHER: &str = "1";
    const ARPHRD_LOOPBACK: &str = "772";
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/sys/class/net")? {
        let entry = entry?;
        let kind = std::fs::read_to_string(entry.path().join("type")).unwrap_or_default();
        if matches!(kind.trim(), ARPHRD_ETHER | ARPHRD_LOOPBACK) {
            names.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    names.sort();
    Ok(names)
}

/// The table's key: our socket's address (layout shared with forward.bpf.c).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StreamKey {
    addr: u32,
    port: u16,
    pad: u16,
}

// SAFETY: plain integers, no padding the compiler adds (checked by a test).
unsafe impl aya::Pod for StreamKey {}

impl StreamKey {
    pub fn new(ours: SocketAddrV4) -> StreamKey {
        StreamKey {
            addr: u32::from_ne_bytes(ours.ip().octets()),
            port: ours.port().to_be(),
            pad: 0,
        }
    }
}

/// One direction's entry (layout shared with forward.bpf.c).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stream {
    peer_addr: u32,
    out_saddr: u32,
    out_daddr: u32,
    peer_port: u16,
    out_sport: u16,
    out_dport: u16,
    event_pt: u8,
    pad0: u8,
    in_ssrc: u32,
    out_ssrc: u32,
    ts_offset: u32,
    seq_offset: u16,
    pad1: u16,
    out_ifindex: u32,
    packets: u64,
    octets: u64,
    last_ns: u64,
    max_seq: u32,
    last_ts: u32,
    last_seq: u16,
    pad2: u16,
    transit: u32,
    jitter16: u64,
    jitter_sum: u64,
    jitter_samples: u64,
}

// SAFETY: plain integers with explicit padding fields (checked by a test).
unsafe impl aya::Pod for Stream {}

/// What the relay knows of one direction when it hands it over.
#[derive(Debug, Clone, Copy)]
pub struct Handover {
    /// The sending leg's latched peer: the only source the kernel takes.
    pub peer: SocketAddrV4,
    /// Our socket on the other leg, and that leg's peer.
    pub out_from: SocketAddrV4,
    pub out_to: SocketAddrV4,
    pub event_pt: Option<u8>,
    pub in_ssrc: u32,
    pub out_ssrc: u32,
    pub seq_offset: u16,
    pub ts_offset: u32,
    /// The newest sequence number and timestamp sent so far.
    pub last_seq: u16,
    pub last_ts: u32,
    /// Reception statistics so far: extended highest sequence number, jitter ×16.
    pub max_seq: u32,
    pub jitter16: u64,
    /// 0 when the other peer is on this host, else the interface it is reached by.
    pub out_ifindex: u32,
}

/// What the kernel did with one direction since it was handed over.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub packets: u64,
    pub octets: u64,
    /// When the newest packet arrived (None: none yet).
    pub last_arrival: Option<Instant>,
    pub max_seq: u32,
    pub last_seq: u16,
    pub last_ts: u32,
    pub jitter16: u64,
    pub jitter_sum: u64,
    pub jitter_samples: u64,
}

impl Stream {
    fn from_handover(h: &Handover) -> Stream {
        let ip = |a: &SocketAddrV4| u32::from_ne_bytes(a.ip().octets());
        Stream {
            peer_addr: ip(&h.peer),
            out_saddr: ip(&h.out_from),
            out_daddr: ip(&h.out_to),
            peer_port: h.peer.port().to_be(),
            out_sport: h.out_from.port().to_be(),
            out_dport: h.out_to.port().to_be(),
            event_pt: h.event_pt.unwrap_or(0xff),
            in_ssrc: h.in_ssrc.to_be(),
            out_ssrc: h.out_ssrc.to_be(),
            ts_offset: h.ts_offset,
            seq_offset: h.seq_offset,
            out_ifindex: h.out_ifindex,
            max_seq: h.max_seq,
            last_seq: h.last_seq,
            last_ts: h.last_ts,
            jitter16: h.jitter16,
            ..Stream::default()
        }
    }

    fn progress(&self, now: Instant, mono_now_ns: u64) -> Progress {
        let last_arrival = (self.packets > 0).then(|| {
            now.checked_sub(Duration::from_nanos(
                mono_now_ns.saturating_sub(self.last_ns),
            ))
            .unwrap_or(now)
        });
        Progress {
            packets: self.packets,
            octets: self.octets,
            last_arrival,
            max_seq: self.max_seq,
            last_seq: self.last_seq,
            last_ts: self.last_ts,
            jitter16: self.jitter16,
            jitter_sum: self.jitter_sum,
            jitter_samples: self.jitter_samples,
        }
    }
}

/// A relay worker's handle to the table of forwarded streams.
pub struct Table {
    map: BpfHashMap<MapData, StreamKey, Stream>,
}

impl Table {
    /// A new handle, if the program is loaded.
    pub fn open() -> Option<Table> {
        let loaded = LOADED.get()?;
        let opened = MapData::from_id(loaded.map_id)
            .map_err(anyhow::Error::from)
            .and_then(|data| Ok(BpfHashMap::try_from(Map::HashMap(data))?));
        match opened {
            Ok(map) => Some(Table { map }),
            Err(e) => {
                tracing::error!(error = %e, "a relay worker cannot open the kernel's stream table");
                None
            }
        }
    }

    /// Hands one direction to the kernel.
    pub fn hand_over(&mut self, ours: SocketAddrV4, h: &Handover) -> std::io::Result<StreamKey> {
        let key = StreamKey::new(ours);
        self.map
            .insert(key, Stream::from_handover(h), 0)
            .map_err(std::io::Error::other)?;
        ACTIVE_STREAMS.fetch_add(1, Relaxed);
        Ok(key)
    }

    /// How far the kernel has got with a direction.
    pub fn progress(&self, key: &StreamKey) -> Option<Progress> {
        let s = self.map.get(key, 0).ok()?;
        Some(s.progress(Instant::now(), monotonic_ns()))
    }

    /// Takes a direction back; what the kernel did until then. The entry is read and
    /// removed in one step, so no packet the kernel forwards goes uncounted.
    pub fn take_back(&mut self, key: &StreamKey) -> Option<Progress> {
        let fd = self.map.map().fd().as_fd().as_raw_fd();
        let mut value = Stream::default();
        let attr = MapElemAttr {
            map_fd: fd as u32,
            pad: 0,
            key: key as *const StreamKey as u64,
            value: &mut value as *mut Stream as u64,
            flags: 0,
        };
        // SAFETY: BPF_MAP_LOOKUP_AND_DELETE_ELEM reads the key and writes one value of
        // the map's value size (our Stream's, checked when the map was opened).
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_AND_DELETE_ELEM,
                &attr as *const MapElemAttr,
                std::mem::size_of::<MapElemAttr>(),
            )
        };
        if rc != 0 {
            return None;
        }
        ACTIVE_STREAMS.fetch_sub(1, Relaxed);
        PACKETS.fetch_add(value.packets, Relaxed);
        Some(value.progress(Instant::now(), monotonic_ns()))
    }
}

/// The part of the bpf(2) attribute union that map element commands read.
#[repr(C)]
struct MapElemAttr {
    map_fd: u32,
    pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

/// bpf(2) command: read an element and delete it at once (hash maps, Linux 5.14+).
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;

/// Counts a call whose media the kernel carried (once per call).
pub fn count_call() {
    CALLS.fetch_add(1, Relaxed);
}

/// CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns` (and of `Instant` on Linux).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// An IPv4 socket address, if `addr` is one with a specified address (the kernel path
/// carries IPv4 only).
pub fn v4(addr: SocketAddr) -> Option<SocketAddrV4> {
    let v4 = match addr {
        SocketAddr::V4(a) => a,
        SocketAddr::V6(a) => SocketAddrV4::new(a.ip().to_ipv4_mapped()?, a.port()),
    };
    (!v4.ip().is_unspecified()).then_some(v4)
}

/// The table key of our socket bound to `ip`:`port`: its address, or 0.0.0.0 (any)
/// for a socket bound to every address.
pub fn key_of(ip: IpAddr, port: u16) -> Option<SocketAddrV4> {
    match ip {
        IpAddr::V4(v4) => Some(SocketAddrV4::new(v4, port)),
        IpAddr::V6(v6) if v6.is_unspecified() => {
            Some(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port))
        }
        IpAddr::V6(v6) => Some(SocketAddrV4::new(v6.to_ipv4_mapped()?, port)),
    }
}

/// The address our socket bound to `ip` sends from to `dest`: `ip` itself, or for a
/// socket bound to every address the one the routing table picks, as the relay's
/// own sends would get (asked of a throw-away connected socket).
pub fn source_for(ip: IpAddr, dest: SocketAddrV4) -> Option<Ipv4Addr> {
    if let Some(a) = key_of(ip, 0).filter(|a| !a.ip().is_unspecified()) {
        return Some(*a.ip());
    }
    let probe = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).ok()?;
    probe.connect(dest).ok()?;
    match probe.local_addr().ok()? {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(_) => None,
    }
}

/// How the kernel reaches `dest` from our address `src`: 0 when `dest` is an address of
/// this host (delivered through loopback), else the index of the interface that holds
/// `src` (the one the relay's own packets leave by). None if neither is found.
pub fn egress_ifindex(src: Ipv4Addr, dest: Ipv4Addr) -> Option<u32> {
    let mut via = None;
    let local = for_each_address(|ip, ifindex| {
        if ip == src && via.is_none() {
            via = Some(ifindex);
        }
        ip == dest
    });
    if local || dest.is_loopback() {
        return Some(0);
    }
    via.filter(|&i| i != 0)
}

/// Whether `ip` is one of this host's addresses (its packets to us come in on loopback).
pub fn is_local(ip: Ipv4Addr) -> bool {
    ip.is_loopback() || for_each_address(|a, _| a == ip)
}

/// Calls `f` with each IPv4 address of this host and its interface's index; true if `f`
/// was true for any.
fn for_each_address(mut f: impl FnMut(Ipv4Addr, u32) -> bool) -> bool {
    let mut any = false;
    let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills a list that freeifaddrs frees; each entry is read while
    // the list lives.
    unsafe {
        if libc::getifaddrs(&mut list) != 0 {
            return false;
        }
        let mut at = list;
        while !at.is_null() {
            let ifa = &*at;
            at = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || i32::from((*ifa.ifa_addr).sa_family) != libc::AF_INET {
                continue;
            }
            let sin = &*(ifa.ifa_addr as *const libc::sockaddr_in);
            let ip = Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
            any |= f(ip, libc::if_nametoindex(ifa.ifa_name));
        }
        libc::freeifaddrs(list);
    }
    any
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_match_the_program() {
        // forward.bpf.c: 8-byte key; the entry's fields in order with explicit padding.
        assert_eq!(std::mem::size_of::<StreamKey>(), 8);
        assert_eq!(std::mem::size_of::<Stream>(), 104);
        assert_eq!(std::mem::offset_of!(Stream, in_ssrc), 20);
        assert_eq!(std::mem::offset_of!(Stream, packets), 40);
        assert_eq!(std::mem::offset_of!(Stream, max_seq), 64);
        assert_eq!(std::mem::offset_of!(Stream, transit), 76);
        assert_eq!(std::mem::offset_of!(Stream, jitter16), 80);
        assert_eq!(std::mem::size_of::<MapElemAttr>(), 32);
    }

    #[test]
    fn a_peer_on_this_host_is_delivered_through_loopback() {
        let lo = Ipv4Addr::LOCALHOST;
        assert_eq!(egress_ifindex(lo, lo), Some(0));
        assert_eq!(egress_ifindex(lo, Ipv4Addr::new(127, 0, 0, 2)), Some(0));
        // A remote peer from an address this host does not have: no interface.
        let (src, dest) = (Ipv4Addr::new(192, 0, 2, 1), Ipv4Addr::new(198, 51, 100, 7));
        assert_eq!(egress_ifindex(src, dest), None);
    }

    #[test]
    fn the_program_was_built() {
        assert!(
            !OBJECT.is_empty(),
            "the kernel forwarding program was not built: install clang and libbpf-dev"
        );
    }
}
