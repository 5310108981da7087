//! Relay workers: a few threads, each owning the sockets and state of many calls'
//! relays, instead of one tokio task per call.
//!
//! A worker waits in one `epoll_wait` for every socket it owns, level-triggered: a
//! socket is read once per wake-up and reported again while it holds more, so no read
//! is spent finding it empty (tokio's edge-triggered readiness must read until
//! `EAGAIN`, a third syscall per packet beside the receive and the send). A busy worker
//! finds many sockets ready per wait, and no other thread is woken for a packet. Calls
//! talk to their relay through the worker's inbox and an eventfd that wakes it. Each
//! relay's timers (the 20 ms mixing tick while a tap needs one, the one-second checks)
//! are deadlines in one heap per worker, which bound the wait.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{Control, Kind, Relay, Side, BUF_LEN};
use crate::media::kernel::Table;
use crate::media::srtp::Suite;

/// The mixing tick of a relay whose taps decode and mix.
const TICK: Duration = Duration::from_millis(20);
/// The media-timeout check, reception figures and (every fifth) RTCP reports.
const CHECK: Duration = Duration::from_secs(1);
/// Events taken from the kernel per wait.
const MAX_EVENTS: usize = 256;
/// Poll keys: `slot * KEYS_PER_SLOT + socket`; sockets 0–3 are A RTP, A RTCP, B RTP,
/// B RTCP, 4 the supervisor's RTP.
const KEYS_PER_SLOT: u64 = 8;
const SUPERVISOR: u64 = 4;
/// The key of the worker's eventfd.
const WAKE_KEY: u64 = u64::MAX;

pub(super) enum Msg {
    Add(u64, Box<Relay>),
    Control(u64, Control),
    /// Every handle of the relay is gone.
    Closed(u64),
}

/// What a [`RelayHandle`](super::RelayHandle) holds: the relay's id and its worker. The
/// last clone of a handle dropped ends the relay.
#[derive(Debug)]
pub(super) struct Link {
    id: u64,
    worker: &'static WorkerTx,
}

impl Link {
    /// Err once the worker is gone (it never is, short of a bug that killed its thread).
    pub(super) fn send(&self, c: Control) -> Result<(), ()> {
        self.worker.send(Msg::Control(self.id, c))
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        let _ = self.worker.send(Msg::Closed(self.id));
    }
}

#[derive(Debug)]
pub(super) struct WorkerTx {
    inbox: Sender<Msg>,
    wake: OwnedFd,
}

impl WorkerTx {
    fn send(&self, msg: Msg) -> Result<(), ()> {
        self.inbox.send(msg).map_err(|_| ())?;
        let one: u64 = 1;
        // A full counter (never, at 2^64 - 2) or a closed fd only means no wake-up.
        unsafe { libc::write(self.wake.as_raw_fd(), (&one as *const u64).cast(), 8) };
        Ok(())
    }
}

struct Pool {
    workers: Vec<WorkerTx>,
    next: AtomicUsize,
}

static POOL: OnceLock<Pool> = OnceLock::new();
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// How many relay workers run: one per core, as set before the first relay starts
/// (`rtp.relay_workers`), else one per core the process may use.
static WORKERS: AtomicUsize = AtomicUsize::new(0);

/// Sets the number of relay workers; only before the first call's relay starts.
pub fn set_workers(n: usize) {
    WORKERS.store(n.clamp(1, 64), Ordering::Relaxed);
}

fn pool() -> &'static Pool {
    POOL.get_or_init(|| {
        let n = match WORKERS.load(Ordering::Relaxed) {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let workers = (0..n)
            .map(|i| Worker::start(i).expect("cannot start a relay worker (epoll/eventfd)"))
            .collect();
        Pool {
            workers,
            next: AtomicUsize::new(0),
        }
    })
}

/// Hands `relay` to a worker (in turn) and returns the link that controls it.
pub(super) fn start(relay: Box<Relay>) -> Link {
    let pool = pool();
    let worker = &pool.workers[pool.next.fetch_add(1, Ordering::Relaxed) % pool.workers.len()];
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let _ = worker.send(Msg::Add(id, relay));
    Link { id, worker }
}

/// A link to no relay: every request to it fails as to a relay that has ended.
pub(super) fn dead_link() -> Link {
    let pool = pool();
    Link {
        id: 0,
        worker: &pool.workers[0],
    }
}

struct Entry {
    id: u64,
    relay: Box<Relay>,
    /// The tick generation: a tick in the heap with another is stale.
    tick_gen: u32,
    ticking: bool,
    next_tick: Instant,
    sup_fd: Option<RawFd>,
}

#[derive(PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    /// The one-second checks.
    Check,
    /// A mixing tick of this generation.
    Tick(u32),
}

struct Worker {
    epoll: OwnedFd,
    wake: OwnedFd,
    inbox: Receiver<Msg>,
    slots: Vec<Option<Entry>>,
    free: Vec<usize>,
    by_id: HashMap<u64, usize>,
    timers: BinaryHeap<Reverse<(Instant, usize, u64, Timer)>>,
    /// This worker's handle to the kernel's forwarded streams (None: not loaded).
    kernel: Option<Table>,
}

impl Worker {
    fn start(i: usize) -> io::Result<WorkerTx> {
        let epoll = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        let epoll = unsafe { OwnedFd::from_raw_fd(epoll) };
        let wake = cvt(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        ctl(
            epoll.as_raw_fd(),
            libc::EPOLL_CTL_ADD,
            wake.as_raw_fd(),
            WAKE_KEY,
        )?;
        let (tx, rx) = mpsc::channel();
        let worker = Worker {
            epoll,
            wake: wake.try_clone()?,
            inbox: rx,
            slots: Vec::new(),
            free: Vec::new(),
            by_id: HashMap::new(),
            timers: BinaryHeap::new(),
            kernel: Table::open(),
        };
        std::thread::Builder::new()
            .name(format!("relay-{i}"))
            .spawn(move || worker.run())?;
        Ok(WorkerTx { inbox: tx, wake })
    }

    fn run(mut self) {
        let mut events: Vec<libc::epoll_event> =
            vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS];
        // One receive buffer for every socket of the worker; room is left past the packet
        // for an SRTP tag on the way out.
        let mut buf = vec![0u8; BUF_LEN];
        loop {
            let timeout = self.wait_ms();
            let n = unsafe {
                libc::epoll_wait(
                    self.epoll.as_raw_fd(),
                    events.as_mut_ptr(),
                    MAX_EVENTS as i32,
                    timeout,
                )
            };
            let n = if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    tracing::error!(error = %e, "relay worker: epoll_wait failed");
                    std::thread::sleep(Duration::from_millis(10));
                }
                0
            } else {
                n as usize
            };
            // Control first, so an address change sent before a packet arrived applies
            // to that packet.
            let mut woken = false;
            for ev in &events[..n] {
                woken |= ev.u64 == WAKE_KEY;
            }
            if woken {
                let mut count = 0u64;
                unsafe { libc::read(self.wake.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
            }
            if !self.take_inbox() {
                return;
            }
            for ev in &events[..n] {
                let key = ev.u64;
                if key == WAKE_KEY {
                    continue;
                }
                self.receive(key, &mut buf);
            }
            self.run_timers();
        }
    }

    /// Milliseconds to the next timer (rounded up; -1: none).
    fn wait_ms(&self) -> i32 {
        match self.timers.peek() {
            None => -1,
            Some(Reverse((at, ..))) => {
                let left = at.saturating_duration_since(Instant::now());
                left.as_micros().div_ceil(1000).min(i32::MAX as u128) as i32
            }
        }
    }

    /// Applies every message waiting; false once no handle can ever send again.
    fn take_inbox(&mut self) -> bool {
        loop {
            match self.inbox.try_recv() {
                Ok(Msg::Add(id, relay)) => self.add(id, relay),
                Ok(Msg::Control(id, c)) => {
                    let Some(&slot) = self.by_id.get(&id) else {
                        // The relay has ended; a reply channel in `c` is dropped, which
                        // tells the asker so.
                        continue;
                    };
                    // Whatever the message changes, the relay sees every packet again
                    // first; a plain bridge goes back to the kernel at the next check.
                    let kernel = self.kernel.as_mut();
                    let relay = &mut self.slots[slot]
                        .as_mut()
                        .expect("a known relay has a slot")
                        .relay;
                    relay.take_back_from_kernel(kernel);
                    let flow = relay.control(c);
                    match flow {
                        std::ops::ControlFlow::Continue(()) => self.after_change(slot),
                        std::ops::ControlFlow::Break(ending) => self.remove(slot, Some(ending)),
                    }
                }
                Ok(Msg::Closed(id)) => {
                    if let Some(&slot) = self.by_id.get(&id) {
                        self.remove(slot, None);
                    }
                }
                Err(mpsc::TryRecvError::Empty) => return true,
                Err(mpsc::TryRecvError::Disconnected) => return false,
            }
        }
    }

    fn add(&mut self, id: u64, relay: Box<Relay>) {
        let slot = self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        });
        let fds = leg_fds(&relay);
        for (i, fd) in fds.iter().enumerate() {
            if let Err(e) = ctl(
                self.epoll.as_raw_fd(),
                libc::EPOLL_CTL_ADD,
                *fd,
                key(slot, i as u64),
            ) {
                tracing::error!(error = %e, "relay worker: cannot watch a media socket");
            }
        }
        let now = Instant::now();
        self.slots[slot] = Some(Entry {
            id,
            relay,
            tick_gen: 0,
            ticking: false,
            next_tick: now,
            sup_fd: None,
        });
        self.by_id.insert(id, slot);
        self.timers
            .push(Reverse((now + CHECK, slot, id, Timer::Check)));
        self.after_change(slot);
    }

    /// Starts or stops the mixing tick and follows the supervisor's socket after
    /// anything that may have changed them.
    fn after_change(&mut self, slot: usize) {
        let epoll = self.epoll.as_raw_fd();
        let e = self.slots[slot].as_mut().expect("a known relay has a slot");
        let tapping = e.relay.taps.is_some();
        if tapping != e.ticking {
            e.ticking = tapping;
            e.tick_gen = e.tick_gen.wrapping_add(1);
            if tapping {
                e.next_tick = Instant::now() + TICK;
                let t = Reverse((e.next_tick, slot, e.id, Timer::Tick(e.tick_gen)));
                self.timers.push(t);
            }
        }
        let sup = e.relay.supervisor.as_ref().map(|s| s.ports.rtp.as_raw_fd());
        if sup != e.sup_fd {
            if let Some(old) = e.sup_fd {
                // The old socket may be closed already, which took it out of the set.
                let _ = ctl(epoll, libc::EPOLL_CTL_DEL, old, 0);
            }
            if let Some(new) = sup {
                if let Err(err) = ctl(epoll, libc::EPOLL_CTL_ADD, new, key(slot, SUPERVISOR)) {
                    tracing::error!(error = %err, "relay worker: cannot watch the supervisor's socket");
                }
            }
            e.sup_fd = sup;
        }
    }

    fn remove(&mut self, slot: usize, ending: Option<super::Ending>) {
        let Some(mut e) = self.slots[slot].take() else {
            return;
        };
        self.by_id.remove(&e.id);
        self.free.push(slot);
        e.relay.take_back_from_kernel(self.kernel.as_mut());
        // Out of the set before the sockets are closed or handed back: a socket given
        // back and still watched here would be reported ready for ever.
        let epoll = self.epoll.as_raw_fd();
        for fd in leg_fds(&e.relay).into_iter().chain(e.sup_fd) {
            let _ = ctl(epoll, libc::EPOLL_CTL_DEL, fd, 0);
        }
        e.relay.end(ending);
    }

    /// One datagram from a ready socket.
    fn receive(&mut self, key: u64, buf: &mut [u8]) {
        let slot = (key / KEYS_PER_SLOT) as usize;
        let socket = key % KEYS_PER_SLOT;
        let Some(Some(e)) = self.slots.get_mut(slot) else {
            return;
        };
        let relay = &mut e.relay;
        let kernel = self.kernel.as_mut();
        if socket == SUPERVISOR {
            let Some(sup) = relay.supervisor.as_ref() else {
                return;
            };
            if let Ok((len, src)) = sup.ports.rtp.recv_from(buf) {
                relay.on_supervisor_rtp(&buf[..len.min(BUF_LEN)], src);
            }
            return;
        }
        let side = if socket < 2 { Side::A } else { Side::B };
        let kind = if socket.is_multiple_of(2) {
            Kind::Rtp
        } else {
            Kind::Rtcp
        };
        let ports = &relay.legs[side.idx()].ports;
        let sock = if kind == Kind::Rtp {
            &ports.rtp
        } else {
            &ports.rtcp
        };
        match sock.recv_from(buf) {
            Ok((len, src)) if len + Suite::MAX_OVERHEAD < BUF_LEN => {
                relay.forward(kernel, side, kind, buf, len, src);
            }
            Ok(_) => relay.counters.drop_one(),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            // Transient (e.g. an ICMP error surfacing); keep relaying.
            Err(e) => tracing::trace!(error = %e, "RTP receive error"),
        }
        // A key or a format may have started the taps (a transcoding bridge, say).
        if relay.taps.is_some() != e.ticking {
            self.after_change(slot);
        }
    }

    fn run_timers(&mut self) {
        let now = Instant::now();
        while let Some(Reverse((at, slot, id, _))) = self.timers.peek() {
            if *at > now {
                return;
            }
            let (slot, id) = (*slot, *id);
            let Some(Reverse((_, _, _, timer))) = self.timers.pop() else {
                return;
            };
            let Some(Some(e)) = self.slots.get_mut(slot) else {
                continue;
            };
            if e.id != id {
                continue;
            }
            match timer {
                Timer::Check => {
                    e.relay.every_second(self.kernel.as_mut());
                    let next = Reverse((now + CHECK, slot, id, Timer::Check));
                    self.timers.push(next);
                }
                Timer::Tick(gen) if gen == e.tick_gen && e.ticking => {
                    e.relay.tick();
                    // Late ticks are made up at once: a busy moment must not shorten a
                    // recording, whose timeline is the call's.
                    e.next_tick += TICK;
                    self.timers
                        .push(Reverse((e.next_tick, slot, id, Timer::Tick(gen))));
                    if e.relay.taps.is_none() {
                        self.after_change(slot);
                    }
                }
                Timer::Tick(_) => {}
            }
        }
    }
}

fn key(slot: usize, socket: u64) -> u64 {
    slot as u64 * KEYS_PER_SLOT + socket
}

fn leg_fds(relay: &Relay) -> [RawFd; 4] {
    let [a, b] = &relay.legs;
    [
        a.ports.rtp.as_raw_fd(),
        a.ports.rtcp.as_raw_fd(),
        b.ports.rtp.as_raw_fd(),
        b.ports.rtcp.as_raw_fd(),
    ]
}

fn ctl(epoll: RawFd, op: libc::c_int, fd: RawFd, key: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: key,
    };
    cvt(unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) }).map(|_| ())
}

fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}
