//! Packets per second through a same-codec bridge, against a bare UDP echo
//! measured in the same run.
//!
//! Run: cargo bench --bench media_relay [-- --packets N --rounds N --window N]
//!
//! * **bare echo**: a task on a tokio runtime with a single worker thread that
//!   receives on one socket and sends what it got from another, nothing else;
//! * **bridge**: `spawn_relay` on one relay worker thread (`set_workers(1)`),
//!   with two leases from a `PortPool`, both legs
//!   PCMU with telephone-event (the same-codec case, so no transcoding), the
//!   remote addresses set and both legs watched, as a call sets it up.
//!
//! A load thread sends 172-byte RTP packets (PCMU, 20 ms) into A's side and
//! receives them from B's side on loopback, keeping at most `window` packets
//! in flight so no socket buffer overflows and every packet counts. Each run
//! is bounded by its packet count and by 20 s. The rounds alternate echo and
//! bridge so drift on a shared machine hits both; the medians are printed.
//! Besides the rate, the forwarder's CPU time per packet is read from /proc
//! (schedstat of the tokio worker and of the relay worker; each path keeps
//! only one of them busy), which does not depend on how fast the load thread is.
//!
//! Under `cargo test` (no `--bench` argument) it runs one short round and
//! checks that every packet arrived.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchboard::media::codec::Codec;
use switchboard::media::ports::PortPool;
use switchboard::media::relay::{set_workers, spawn_relay, RelayHandle, Side};
use switchboard::media::taps::LegFormat;
use tokio::runtime::Runtime;

const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
/// 12-byte RTP header + 160 bytes of PCMU (20 ms).
const PACKET_LEN: usize = 172;
const RUN_TIME_LIMIT: Duration = Duration::from_secs(20);
/// A packet not back within this is counted lost (and the window refilled).
const LOSS_TIMEOUT: Duration = Duration::from_millis(200);

struct Options {
    packets: u64,
    rounds: usize,
    window: u64,
    bench: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let value = |name: &str| -> Option<u64> {
        let i = args.iter().position(|a| a == name)?;
        let v = args.get(i + 1)?;
        Some(
            v.parse()
                .unwrap_or_else(|_| panic!("{name} wants a number, not {v:?}")),
        )
    };
    let (packets, rounds) = if bench { (200_000, 5) } else { (2_000, 1) };
    Options {
        packets: value("--packets").unwrap_or(packets),
        rounds: value("--rounds").map_or(rounds, |r| r as usize).max(1),
        window: value("--window").unwrap_or(32).max(1),
        bench,
    }
}

/// What a forwarder runs on and where the load goes in and comes out.
struct Forwarder {
    /// Where the load thread sends.
    input: SocketAddr,
    /// The load thread's sending socket (the source the bridge latches on).
    sender: UdpSocket,
    /// Where the forwarded packets arrive.
    sink: UdpSocket,
    stop: Box<dyn FnOnce(&Runtime)>,
}

fn load_sockets() -> (UdpSocket, UdpSocket) {
    let sender = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    let sink = UdpSocket::bind((LOCALHOST, 0)).unwrap();
    sink.set_read_timeout(Some(LOSS_TIMEOUT)).unwrap();
    (sender, sink)
}

fn start_echo(rt: &Runtime) -> Forwarder {
    let (sender, sink) = load_sockets();
    let dest = sink.local_addr().unwrap();
    let (task, input) = rt.block_on(async {
        let rx = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let tx = tokio::net::UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let input = rx.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut buf = [0u8; 2048];
            loop {
                if let Ok((n, _)) = rx.recv_from(&mut buf).await {
                    let _ = tx.try_send_to(&buf[..n], dest);
                }
            }
        });
        (task, input)
    });
    Forwarder {
        input,
        sender,
        sink,
        stop: Box::new(move |_| task.abort()),
    }
}

fn start_bridge(rt: &Runtime, pool: &Arc<PortPool>) -> Forwarder {
    let (sender, sink) = load_sockets();
    let (relay, input): (RelayHandle, SocketAddr) = rt.block_on(async {
        let a = pool.allocate().expect("RTP ports for leg A");
        let b = pool.allocate().expect("RTP ports for leg B");
        let input = SocketAddr::new(LOCALHOST, a.port());
        let relay = spawn_relay(a, b);
        let pcmu = LegFormat {
            codec: Codec::Pcmu,
            event_pt: Some(101),
        };
        relay.set_formats(pcmu, pcmu);
        relay.set_remote(Side::A, sender.local_addr().unwrap(), None);
        relay.set_remote(Side::B, sink.local_addr().unwrap(), None);
        relay.watch(Side::A, true);
        relay.watch(Side::B, true);
        (relay, input)
    });
    Forwarder {
        input,
        sender,
        sink,
        stop: Box::new(move |rt| {
            let stats = rt.block_on(relay.stop());
            assert_eq!(stats.dropped, 0, "the bridge dropped packets: {stats:?}");
        }),
    }
}

/// CPU time the forwarders have used so far: the runtime's worker thread and the
/// relay worker threads.
fn worker_cpu(rt: &Runtime) -> Duration {
    let tokio = rt.block_on(async {
        tokio::spawn(async { thread_cpu("/proc/thread-self/schedstat") })
            .await
            .expect("read worker CPU")
    });
    let mut relay = Duration::ZERO;
    for task in std::fs::read_dir("/proc/self/task").expect("read /proc/self/task") {
        let dir = task.expect("a task of this process").path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if comm.starts_with("relay-") {
            relay += thread_cpu(dir.join("schedstat").to_str().expect("a /proc path"));
        }
    }
    tokio + relay
}

fn thread_cpu(schedstat: &str) -> Duration {
    // schedstat: nanoseconds on the CPU, wait time, timeslices
    let text =
        std::fs::read_to_string(schedstat).unwrap_or_else(|e| panic!("read {schedstat}: {e}"));
    let ns: u64 = text
        .split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .expect("schedstat's first field");
    Duration::from_nanos(ns)
}

struct Run {
    received: u64,
    lost: u64,
    elapsed: Duration,
    cpu: Duration,
}

impl Run {
    fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64()
    }
    fn cpu_per_packet_us(&self) -> f64 {
        self.cpu.as_secs_f64() * 1e6 / self.received.max(1) as f64
    }
}

/// Sends `n` packets through `path`, at most `window` in flight.
fn drive(path: &Forwarder, n: u64, window: u64, first_seq: &mut u16) -> (u64, u64, Duration) {
    let mut pkt = [0u8; PACKET_LEN];
    pkt[0] = 0x80; // version 2
    pkt[1] = 0; // PCMU
    pkt[8..12].copy_from_slice(&0x5357_4244u32.to_be_bytes());
    let mut buf = [0u8; 2048];
    let (mut sent, mut received, mut lost) = (0u64, 0u64, 0u64);
    let start = Instant::now();
    while received + lost < n && start.elapsed() < RUN_TIME_LIMIT {
        while sent < n && sent.saturating_sub(received + lost) < window {
            let seq = *first_seq;
            *first_seq = seq.wrapping_add(1);
            pkt[2..4].copy_from_slice(&seq.to_be_bytes());
            pkt[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            path.sender.send_to(&pkt, path.input).expect("send");
            sent += 1;
        }
        match path.sink.recv(&mut buf) {
            Ok(len) => {
                assert_eq!(len, PACKET_LEN, "a forwarded packet changed size");
                received += 1;
            }
            // everything still out is given up on
            Err(_) => lost = sent.saturating_sub(received),
        }
    }
    (received, lost, start.elapsed())
}

fn measure(rt: &Runtime, path: &Forwarder, n: u64, window: u64, seq: &mut u16) -> Run {
    // Warm-up: latching, first wake-ups, socket buffers.
    let (_, warm_lost, _) = drive(path, 200, window, seq);
    assert_eq!(warm_lost, 0, "packets lost while warming up");
    let cpu0 = worker_cpu(rt);
    let (received, lost, elapsed) = drive(path, n, window, seq);
    let cpu = worker_cpu(rt) - cpu0;
    Run {
        received,
        lost,
        elapsed,
        cpu,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let opt = options();
    set_workers(1);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    // A range wide enough that pairs held by other processes are simply skipped.
    let pool = PortPool::new(LOCALHOST, 41_000, 41_999);

    println!(
        "media relay: {} packets of {PACKET_LEN} bytes per run, window {}, {} round(s), \
         one tokio worker thread (echo), one relay worker thread (bridge)",
        opt.packets, opt.window, opt.rounds
    );
    let mut runs: [Vec<Run>; 2] = [Vec::new(), Vec::new()];
    let mut seq = 0u16;
    for round in 0..opt.rounds {
        // Alternate which goes first, so drift does not favour one.
        let order = if round % 2 == 0 { [0, 1] } else { [1, 0] };
        for which in order {
            let path = if which == 0 {
                start_echo(&rt)
            } else {
                start_bridge(&rt, &pool)
            };
            let run = measure(&rt, &path, opt.packets, opt.window, &mut seq);
            (path.stop)(&rt);
            runs[which].push(run);
        }
    }

    println!();
    println!("| path | packets/s (median) | runs | forwarder CPU per packet (median) | lost |");
    println!("|---|---|---|---|---|");
    let names = [
        "bare UDP echo (tokio task)",
        "same-codec bridge (spawn_relay)",
    ];
    let mut medians = [(0.0, 0.0); 2];
    for (i, name) in names.iter().enumerate() {
        let rates: Vec<f64> = runs[i].iter().map(Run::rate).collect();
        let cpus: Vec<f64> = runs[i].iter().map(Run::cpu_per_packet_us).collect();
        let lost: u64 = runs[i].iter().map(|r| r.lost).sum();
        medians[i] = (median(rates.clone()), median(cpus));
        let all: Vec<String> = rates.iter().map(|r| format!("{:.0}", r)).collect();
        println!(
            "| {name} | {:.0} | {} | {:.2} µs | {lost} |",
            medians[i].0,
            all.join(", "),
            medians[i].1
        );
    }
    println!();
    println!(
        "bridge / echo: {:.2} of the packet rate, {:.2}× the CPU per packet",
        medians[1].0 / medians[0].0,
        medians[1].1 / medians[0].1
    );

    for (name, rs) in names.iter().zip(&runs) {
        for r in rs {
            assert!(
                r.received > 0,
                "{name}: nothing came through in {:?}",
                r.elapsed
            );
            if !opt.bench {
                assert_eq!(
                    (r.received, r.lost),
                    (opt.packets, 0),
                    "{name}: not every packet came through"
                );
            }
        }
    }
}
