//! The floor under the capacity harness's rows: a bare UDP echo carrying the packets of
//! N calls at a call's real rate, with nothing else in it, so the server's CPU per call
//! can be read against what the kernel alone charges for the same packets.
//!
//! Run: cargo bench --bench udp_floor -- --calls "100 300 600 1000" [--window-secs 20]
//!
//! Per call the echo owns two sockets (as a bridge owns a caller's and a callee's port),
//! and each receives 50 packets/s of 172 bytes (20 ms PCMU) from its own peer socket and
//! sends each one straight back: 100 packets in and 100 out per call and second, the
//! syscalls a same-codec bridge makes for the same call. The echo runs one thread per
//! core, each waiting on its share of the sockets in one level-triggered epoll (as the
//! relay workers do); the load thread paces the packets in 20 ms rounds and reads the
//! echoes back. The echo threads' CPU (utime+stime from /proc) over the window, divided
//! by N, is the floor's CPU per call in % of one core; loss is what did not come back.
//! Everything is on 127.0.0.1 and every run stops by itself after its window.
//!
//! Under `cargo test` (no `--bench` argument) it runs 20 calls for one second and
//! checks that every packet came back.

use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

const PACKET_LEN: usize = 172;
const TICK: Duration = Duration::from_millis(20);

struct Options {
    calls: Vec<usize>,
    window: Duration,
    bench: bool,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let bench = args.iter().any(|a| a == "--bench");
    let value = |name: &str| -> Option<&str> {
        let i = args.iter().position(|a| a == name)?;
        args.get(i + 1).map(String::as_str)
    };
    let calls = value("--calls")
        .map(|v| {
            v.split_whitespace()
                .map(|n| {
                    n.parse()
                        .unwrap_or_else(|_| panic!("--calls wants numbers, not {v:?}"))
                })
                .collect()
        })
        .unwrap_or_else(|| {
            if bench {
                vec![100, 300, 600, 1000]
            } else {
                vec![20]
            }
        });
    let window = value("--window-secs")
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("--window-secs wants a number, not {v:?}"))
        })
        .unwrap_or(if bench { 20 } else { 1 });
    Options {
        calls,
        window: Duration::from_secs(window),
        bench,
    }
}

/// utime+stime of one of this process's threads, in clock ticks.
fn thread_ticks(tid: libc::pid_t) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // The fields after the command's closing parenthesis: utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let f: Vec<&str> = rest.split_whitespace().collect();
    let at = |i: usize| {
        f.get(i - 3)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    at(14) + at(15)
}

/// One echo thread: its sockets in one level-triggered epoll, each readable socket read
/// once per wake-up and its packet sent back to where it came from.
fn echo(sockets: Vec<UdpSocket>, stop: Arc<AtomicBool>, tid: std::sync::mpsc::Sender<libc::pid_t>) {
    // SAFETY: plain syscalls on descriptors this thread owns for its whole life.
    let ep = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    assert!(ep >= 0, "epoll_create1 failed");
    for (i, s) in sockets.iter().enumerate() {
        let mut ev = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: i as u64,
        };
        let rc = unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, s.as_raw_fd(), &mut ev) };
        assert_eq!(rc, 0, "epoll_ctl failed");
    }
    tid.send(unsafe { libc::gettid() }).unwrap();
    let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
    let mut buf = [0u8; 1500];
    while !stop.load(Relaxed) {
        let n = unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), events.len() as i32, 100) };
        for ev in &events[..n.max(0) as usize] {
            let s = &sockets[ev.u64 as usize];
            if let Ok((len, from)) = s.recv_from(&mut buf) {
                let _ = s.send_to(&buf[..len], from);
            }
        }
    }
    unsafe { libc::close(ep) };
}

struct Step {
    calls: usize,
    cpu_per_call: f64,
    sent: u64,
    received: u64,
    pps: f64,
}

fn run(calls: usize, window: Duration, workers: usize) -> Step {
    let local = |_| UdpSocket::bind("127.0.0.1:0").expect("bind a loopback socket");
    let echo_side: Vec<UdpSocket> = (0..2 * calls).map(local).collect();
    let load_side: Vec<UdpSocket> = (0..2 * calls).map(local).collect();
    let targets: Vec<SocketAddr> = echo_side.iter().map(|s| s.local_addr().unwrap()).collect();
    for s in &load_side {
        s.set_nonblocking(true).unwrap();
    }

    let stop = Arc::new(AtomicBool::new(false));
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let mut shares: Vec<Vec<UdpSocket>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, s) in echo_side.into_iter().enumerate() {
        shares[i % workers].push(s);
    }
    let threads: Vec<_> = shares
        .into_iter()
        .map(|share| {
            let (stop, tid_tx) = (stop.clone(), tid_tx.clone());
            std::thread::spawn(move || echo(share, stop, tid_tx))
        })
        .collect();
    let tids: Vec<libc::pid_t> = (0..workers).map(|_| tid_rx.recv().unwrap()).collect();

    // Warm up for a second, then measure over the window; a round sends one packet on
    // every socket and reads back whatever has come home.
    let packet = [0x80u8; PACKET_LEN];
    let mut buf = [0u8; 1500];
    let (mut sent, mut received) = (0u64, 0u64);
    let started = Instant::now();
    let mut next = started;
    let mut window_start = None;
    let mut ticks0 = 0;
    while started.elapsed() < window + Duration::from_secs(1) {
        if window_start.is_none() && started.elapsed() >= Duration::from_secs(1) {
            window_start = Some((Instant::now(), sent, received));
            ticks0 = tids.iter().map(|&t| thread_ticks(t)).sum();
        }
        for (s, to) in load_side.iter().zip(&targets) {
            if s.send_to(&packet, to).is_ok() {
                sent += 1;
            }
        }
        next += TICK;
        while Instant::now() < next {
            let mut got = false;
            for s in &load_side {
                while s.recv_from(&mut buf).is_ok() {
                    received += 1;
                    got = true;
                }
            }
            if !got {
                std::thread::sleep(
                    Duration::from_millis(1).min(next.saturating_duration_since(Instant::now())),
                );
            }
        }
    }
    let ticks1: u64 = tids.iter().map(|&t| thread_ticks(t)).sum();
    let (t0, sent0, received0) = window_start.expect("the window started");
    let secs = t0.elapsed().as_secs_f64();
    // The last round's echoes come home (up to a second) before counting what was lost.
    let drain_until = Instant::now() + Duration::from_secs(1);
    while received < sent && Instant::now() < drain_until {
        std::thread::sleep(Duration::from_millis(5));
        for s in &load_side {
            while s.recv_from(&mut buf).is_ok() {
                received += 1;
            }
        }
    }
    stop.store(true, Relaxed);
    for t in threads {
        t.join().unwrap();
    }
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Step {
        calls,
        cpu_per_call: (ticks1 - ticks0) as f64 / hz / secs * 100.0 / calls as f64,
        sent,
        received,
        pps: (received.min(sent) - received0.min(sent0)) as f64 / secs,
    }
}

fn main() {
    let opt = options();
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "UDP echo floor: 50 packets/s of {PACKET_LEN} bytes on each of 2 sockets per call, \
         echoed by {workers} thread(s), window {} s",
        opt.window.as_secs()
    );
    println!();
    println!("| path | calls | CPU % of a core per call | packets echoed/s | loss % |");
    println!("|---|---|---|---|---|");
    for &calls in &opt.calls {
        let s = run(calls, opt.window, workers);
        let loss = 100.0 * s.sent.saturating_sub(s.received) as f64 / s.sent.max(1) as f64;
        println!(
            "| bare UDP echo | {} | {:.4} | {:.0} | {:.3} |",
            s.calls, s.cpu_per_call, s.pps, loss
        );
        if !opt.bench {
            assert!(s.sent > 0, "the load thread sent nothing");
            assert_eq!(s.received, s.sent, "every packet comes back from the echo");
        }
    }
}
