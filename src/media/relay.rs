//! The per-call RTP/RTCP relay.
//!
//! [`spawn_relay`] bridges the two legs of a call, A and B, each with its own
//! leased [`MediaPorts`]. RTP received on A's RTP socket is sent from B's RTP
//! socket to B's remote address and vice versa. RTCP is terminated per leg:
//! each leg gets our own reports about the streams it exchanges with us (see
//! [`rtcp`](super::rtcp)).
//!
//! * **Symmetric RTP / latching** (for phones behind NAT): the first valid
//!   packet received on a leg's socket fixes that leg's remote address to the
//!   packet's source, overriding the address from its SDP. Packets from any
//!   other source are then dropped, as Asterisk's `strictrtp` does. A new SDP
//!   address for the leg (via [`RelayHandle::set_remote`]) releases the latch.
//! * **One stream per receiver**: each direction is re-stamped by a
//!   [`StreamRewriter`] with our own SSRC, sequence numbers and timestamps, so
//!   a phone keeps seeing one continuous stream when the other leg changes
//!   (re-INVITE, transfer, music on hold).
//!
//! A relay is owned by one [relay worker](worker) thread, which owns many calls'
//! relays and their sockets, so there is no locking on the packet path and no task
//! per call. Per packet nothing is allocated: the worker has one receive buffer,
//! the RTP header is rewritten in place and the packet is sent without waiting (a
//! full socket buffer drops the packet, which is the right thing for real-time
//! media).

use std::io;
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

mod offload;
mod worker;
pub use worker::set_workers;

use super::dtmf::{DtmfDetector, Key};
use super::mixer::Mode;
use super::ports::{Datagram, MediaPorts, RawPorts};
use super::recorder::Tape;
use super::rtcp::{LegRtcp, Sent};
use super::rtp_stats::ReceiveStats;
use super::srtp::{MasterKey, SrtpSession};
use super::taps::{LegFormat, TapEvent, Taps, Who};

/// One leg of a bridged call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// The first leg (by convention the caller).
    A,
    /// The second leg (by convention the callee).
    B,
}

impl Side {
    fn idx(self) -> usize {
        self as usize
    }

    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

/// RTP packet counters of one relay (RTCP is relayed but not counted, except
/// in `dropped`, so that "no RTP from a leg" reads plainly as one-way audio).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayStats {
    /// RTP packets accepted from leg A.
    pub a_in: u64,
    /// RTP packets sent to leg A.
    pub a_out: u64,
    /// RTP packets accepted from leg B.
    pub b_in: u64,
    /// RTP packets sent to leg B.
    pub b_out: u64,
    /// RTP and RTCP packets dropped: malformed, from a foreign source after
    /// latching, with no known destination yet, or refused by the socket.
    pub dropped: u64,
    /// RTP packets leg A (B) sent that never arrived (RFC 3550 §A.3).
    pub a_lost: u64,
    pub b_lost: u64,
    /// Mean interarrival jitter of what leg A (B) sent, in microseconds (§A.8).
    pub a_jitter_us: u64,
    pub b_jitter_us: u64,
    /// RTP packets (both ways, counted above too) that the kernel forwarded.
    pub kernel: u64,
}

#[derive(Debug, Default)]
struct Counters {
    input: [AtomicU64; 2],
    output: [AtomicU64; 2],
    dropped: AtomicU64,
    lost: [AtomicU64; 2],
    jitter_us: [AtomicU64; 2],
    kernel: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> RelayStats {
        RelayStats {
            a_in: self.input[0].load(Relaxed),
            a_out: self.output[0].load(Relaxed),
            b_in: self.input[1].load(Relaxed),
            b_out: self.output[1].load(Relaxed),
            dropped: self.dropped.load(Relaxed),
            a_lost: self.lost[0].load(Relaxed),
            b_lost: self.lost[1].load(Relaxed),
            a_jitter_us: self.jitter_us[0].load(Relaxed),
            b_jitter_us: self.jitter_us[1].load(Relaxed),
            kernel: self.kernel.load(Relaxed),
        }
    }

    fn drop_one(&self) {
        self.dropped.fetch_add(1, Relaxed);
    }
}

/// What a relay reports to the call that owns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RelayEvent {
    /// A key pressed on a leg while its audio is being decoded (a recorded or
    /// supervised call), from RFC 4733 events.
    Key(Side, Key),
    /// The supervisor switched mode with its keypad.
    SupervisorMode(Mode),
    /// No RTP from this leg for the media timeout.
    MediaTimeout(Side),
    /// Writing the recording failed; it was stopped (the file is valid up to
    /// the failure).
    RecordingFailed(String),
}

/// A supervisor joining a call's media: its own leg's ports, where its phone
/// listens, what it speaks, and how it takes part.
#[derive(Debug)]
pub struct SupervisorLeg {
    pub ports: MediaPorts,
    pub remote: Option<SocketAddr>,
    pub format: LegFormat,
    pub mode: Mode,
    /// Dropped by the relay when the supervisor is let go (the call ended or
    /// another supervisor took over): the supervisor's call hangs up then.
    pub attached: oneshot::Sender<()>,
}

/// What a relay hands back when it stops: its counters and any recording
/// still open, for the caller to finish.
pub struct Stopped {
    pub stats: RelayStats,
    pub recorder: Option<Tape>,
}

enum Control {
    SetRemote {
        side: Side,
        rtp: SocketAddr,
        rtcp: SocketAddr,
    },
    Formats(LegFormat, LegFormat),
    /// The leg's SRTP from now on (keys negotiated after the relay started).
    Srtp(Side, Option<Box<SrtpSession>>),
    /// The leg sent a new key (a re-INVITE).
    Rekey(Side, Box<MasterKey>),
    ForwardDtmf(bool),
    Record(Tape),
    PauseRecording(bool),
    /// Hand the recording back (it ends; the call goes on unrecorded).
    TakeRecording(oneshot::Sender<Option<Tape>>),
    Supervise(RawSupervisorLeg),
    Unsupervise,
    SupervisorMode(Mode),
    /// Watch a leg for the media timeout (false while it is on hold).
    Watch(Side, bool),
    Stop(oneshot::Sender<Option<Tape>>),
    /// End relaying and hand both legs' ports back (a caller returning to the IVR).
    Release(oneshot::Sender<(RawPorts, RawPorts, Option<Tape>)>),
}

/// A [`SupervisorLeg`] with its sockets taken from tokio for the worker.
struct RawSupervisorLeg {
    ports: RawPorts,
    remote: Option<SocketAddr>,
    format: LegFormat,
    mode: Mode,
    attached: oneshot::Sender<()>,
}

/// How the relay task was asked to end.
enum Ending {
    Stopped(oneshot::Sender<Option<Tape>>),
    Released(oneshot::Sender<(RawPorts, RawPorts, Option<Tape>)>),
}

/// Controls a running relay. Clones control the same relay; the relay ends
/// when [`stop`](Self::stop) is called or the last clone is dropped, and its
/// ports then go back to their pools.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    ctl: Arc<worker::Link>,
    counters: Arc<Counters>,
}

impl RelayHandle {
    /// Sets where a leg's media goes, as learned from that leg's SDP. `rtcp`
    /// defaults to the RTP port + 1. A changed address releases the leg's
    /// latch, so a re-INVITE that moves the phone's media takes effect; an
    /// unchanged one (a re-INVITE for hold, say) keeps it.
    pub fn set_remote(&self, side: Side, rtp: SocketAddr, rtcp: Option<SocketAddr>) {
        let rtcp = rtcp.unwrap_or_else(|| SocketAddr::new(rtp.ip(), rtp.port().wrapping_add(1)));
        // A send error means the relay has already stopped: nothing to update.
        let _ = self.ctl.send(Control::SetRemote { side, rtp, rtcp });
    }

    /// The counters so far.
    pub fn stats(&self) -> RelayStats {
        self.counters.snapshot()
    }

    /// Tells the relay what each leg negotiated. Until it knows, it can only
    /// forward; legs with different codecs are transcoded from then on.
    pub fn set_formats(&self, a: LegFormat, b: LegFormat) {
        let _ = self.ctl.send(Control::Formats(a, b));
    }

    /// Whether one leg's RFC 4733 key events are passed to the other (default: yes,
    /// until the call says otherwise; keys are detected and reported either way).
    /// Encrypts (or no longer) `side`'s media with the keys its SDP negotiated.
    pub fn set_srtp(&self, side: Side, srtp: Option<SrtpSession>) {
        let _ = self.ctl.send(Control::Srtp(side, srtp.map(Box::new)));
    }

    /// `side` sent a new key for what it sends us.
    pub fn rekey(&self, side: Side, key: MasterKey) {
        let _ = self.ctl.send(Control::Rekey(side, Box::new(key)));
    }

    pub fn forward_dtmf(&self, forward: bool) {
        let _ = self.ctl.send(Control::ForwardDtmf(forward));
    }

    /// Starts recording the bridge into `recorder` (created at the rate of
    /// [`Taps::new`] for these formats): A on the left, what A hears on the right.
    pub fn record(&self, recorder: Tape) {
        let _ = self.ctl.send(Control::Record(recorder));
    }

    /// Pauses (PCI: card details) or resumes the recording.
    pub fn pause_recording(&self, pause: bool) {
        let _ = self.ctl.send(Control::PauseRecording(pause));
    }

    /// Ends the recording while the call goes on; the recorder comes back to be
    /// finished.
    pub async fn take_recording(&self) -> Option<Tape> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::TakeRecording(tx)).ok()?;
        rx.await.ok().flatten()
    }

    /// Attaches a supervisor (replacing any other).
    pub fn supervise(&self, leg: SupervisorLeg) {
        let ports = match leg.ports.into_raw() {
            Ok(p) => p,
            Err(e) => {
                // Dropping `attached` hangs the supervisor up.
                tracing::error!(error = %e, "cannot hand the supervisor's socket to the relay");
                return;
            }
        };
        let _ = self.ctl.send(Control::Supervise(RawSupervisorLeg {
            ports,
            remote: leg.remote,
            format: leg.format,
            mode: leg.mode,
            attached: leg.attached,
        }));
    }

    /// Lets the supervisor go (it hung up); its ports go back to the pool.
    pub fn unsupervise(&self) {
        let _ = self.ctl.send(Control::Unsupervise);
    }

    /// Switches the supervisor's mode (a key sent by SIP INFO).
    pub fn supervisor_mode(&self, mode: Mode) {
        let _ = self.ctl.send(Control::SupervisorMode(mode));
    }

    /// Whether `side` must keep sending RTP (false while it is on hold).
    pub fn watch(&self, side: Side, on: bool) {
        let _ = self.ctl.send(Control::Watch(side, on));
    }

    /// Stops relaying and hands back both legs' ports (still bound) with the counters
    /// and any open recording, e.g. to put the caller back into the IVR when the agent
    /// hangs up.
    pub async fn release(self) -> Option<(MediaPorts, MediaPorts, RelayStats, Option<Tape>)> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Release(tx)).ok()?;
        let (a, b, rec) = rx.await.ok()?;
        let (a, b) = match (a.into_tokio(), b.into_tokio()) {
            (Ok(a), Ok(b)) => (a, b),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!(error = %e, "cannot take a call's media sockets back from the relay");
                return None;
            }
        };
        Some((a, b, self.stats(), rec))
    }

    /// Stops the relay and returns the final counters and the open recording.
    /// When this returns the sockets are closed and the ports are back in
    /// their pools.
    pub async fn finish(self) -> Stopped {
        let (tx, rx) = oneshot::channel();
        let mut recorder = None;
        if self.ctl.send(Control::Stop(tx)).is_ok() {
            // Err only if the task went away meanwhile, which is just as good.
            recorder = rx.await.ok().flatten();
        }
        Stopped {
            stats: self.stats(),
            recorder,
        }
    }

    /// Stops the relay and returns the final counters.
    pub async fn stop(self) -> RelayStats {
        self.finish().await.stats
    }
}

/// Starts relaying between legs A and B on a new tokio task (so this must be
/// called within a runtime). Until a leg's remote address is known, from its
/// SDP or by latching, packets towards it are dropped.
pub fn spawn_relay(a: MediaPorts, b: MediaPorts) -> RelayHandle {
    spawn_relay_with_events(a, b, None).0
}

/// [`spawn_relay`] with a channel for what the relay notices, and the media
/// timeout: a watched leg that sends no RTP for `media_timeout` is reported
/// (once) as [`RelayEvent::MediaTimeout`].
pub fn spawn_relay_with_events(
    a: MediaPorts,
    b: MediaPorts,
    media_timeout: Option<Duration>,
) -> (RelayHandle, mpsc::UnboundedReceiver<RelayEvent>) {
    let (events, events_rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let (a, b) = match (a.into_raw(), b.into_raw()) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => {
            // Seen as a relay that has ended: the call gets no media and says so.
            tracing::error!(error = %e, "cannot hand a call's media sockets to a relay worker");
            let ctl = Arc::new(worker::dead_link());
            return (RelayHandle { ctl, counters }, events_rx);
        }
    };
    let now = Instant::now();
    let relay = Relay {
        legs: [Leg::new(a), Leg::new(b)],
        rewriters: [StreamRewriter::random(), StreamRewriter::random()],
        counters: Arc::clone(&counters),
        formats: None,
        keys: [None, None],
        forward_dtmf: true,
        reception: [ReceiveStats::new(), ReceiveStats::new()],
        rtcp: [LegRtcp::new(), LegRtcp::new()],
        octets: [0, 0],
        checks: 0,
        taps: None,
        failed_recording: None,
        supervisor: None,
        events,
        media_timeout,
        last_rtp: [now, now],
        watched: [true, true],
        offload: None,
        kernel_refused: false,
    };
    let ctl = Arc::new(worker::start(Box::new(relay)));
    (RelayHandle { ctl, counters }, events_rx)
}

/// How often each leg gets our RTCP report (RFC 3550's 5 s minimum interval).
const RTCP_EVERY_SECS: u32 = 5;

/// Large enough for any RTP packet on an Ethernet path; anything that fills
/// the buffer entirely may have been truncated and is dropped.
const BUF_LEN: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Rtp = 0,
    Rtcp = 1,
}

/// Where one leg's media comes from and goes to.
struct Leg {
    ports: RawPorts,
    sdp_rtp: Option<SocketAddr>,
    sdp_rtcp: Option<SocketAddr>,
    latched_rtp: Option<SocketAddr>,
    latched_rtcp: Option<SocketAddr>,
}

impl Leg {
    fn new(ports: RawPorts) -> Leg {
        Leg {
            ports,
            sdp_rtp: None,
            sdp_rtcp: None,
            latched_rtp: None,
            latched_rtcp: None,
        }
    }

    fn destination(&self, kind: Kind) -> Option<SocketAddr> {
        match kind {
            Kind::Rtp => self.latched_rtp.or(self.sdp_rtp),
            Kind::Rtcp => self.latched_rtcp.or(self.sdp_rtcp),
        }
    }

    /// Admits a packet from `src`, latching onto it if nothing is latched yet. The address
    /// the leg's SDP names always wins back the latch: a stray early sender (a losing fork,
    /// a port scan) cannot keep the real endpoint out.
    fn admit(&mut self, kind: Kind, src: SocketAddr) -> bool {
        let (latch, signalled) = match kind {
            Kind::Rtp => (&mut self.latched_rtp, self.sdp_rtp),
            Kind::Rtcp => (&mut self.latched_rtcp, self.sdp_rtcp),
        };
        match *latch {
            Some(addr) if addr == src => true,
            Some(_) if signalled == Some(src) => {
                tracing::debug!(port = self.ports.port(), ?kind, %src, "re-latched to the signalled source");
                *latch = Some(src);
                true
            }
            Some(_) => false,
            None => {
                tracing::debug!(port = self.ports.port(), ?kind, %src, "latched media source");
                *latch = Some(src);
                true
            }
        }
    }
}

/// The supervisor's leg while attached.
struct Supervisor {
    ports: RawPorts,
    remote: Option<SocketAddr>,
    format: LegFormat,
    _attached: oneshot::Sender<()>,
}

struct Relay {
    legs: [Leg; 2],
    /// Indexed by the *receiving* side: `rewriters[B]` stamps the stream B hears.
    rewriters: [StreamRewriter; 2],
    counters: Arc<Counters>,
    formats: Option<(LegFormat, LegFormat)>,
    /// Key detection on each leg's RFC 4733 events, once its format is known and the
    /// leg has sent a key.
    keys: [Option<Box<DtmfDetector>>; 2],
    /// Whether key events go on to the other leg.
    forward_dtmf: bool,
    /// Loss and jitter of what each leg sends us.
    reception: [ReceiveStats; 2],
    /// Each leg's RTCP as we terminate it, and the payload octets we sent it.
    rtcp: [LegRtcp; 2],
    octets: [u64; 2],
    /// One-second checks so far (every fifth sends RTCP reports).
    checks: u32,
    /// Decoding and mixing, only while a recording, a supervisor or a codec
    /// difference needs it.
    taps: Option<Box<Taps>>,
    /// A recording whose file failed (a full disk): kept to be handed back like a
    /// running one, so the call learns how much of it the file holds.
    failed_recording: Option<Tape>,
    supervisor: Option<Supervisor>,
    events: mpsc::UnboundedSender<RelayEvent>,
    media_timeout: Option<Duration>,
    last_rtp: [Instant; 2],
    watched: [bool; 2],
    /// The streams forwarded in the kernel (a plain bridge), and whether the kernel
    /// refused this call.
    offload: Option<Box<offload::Offload>>,
    kernel_refused: bool,
}

impl Relay {
    /// The one-second checks: media timeout, reception figures, and every fifth time
    /// our RTCP reports.
    fn every_second(&mut self, kernel: Option<&mut crate::media::kernel::Table>) {
        self.kernel_check(kernel);
        self.check_media_timeout();
        self.publish_reception();
        self.checks = self.checks.wrapping_add(1);
        if self.checks.is_multiple_of(RTCP_EVERY_SECS) {
            self.send_reports();
        }
    }

    /// The relay is over: the recording and, when asked, the ports go back.
    fn end(mut self: Box<Self>, how: Option<Ending>) {
        self.publish_reception();
        let recorder = self
            .taps
            .as_mut()
            .and_then(|t| t.take_recording())
            .or_else(|| self.failed_recording.take());
        match how {
            Some(Ending::Released(back)) => {
                let [a, b] = self.legs;
                let _ = back.send((a.ports, b.ports, recorder));
            }
            Some(Ending::Stopped(done)) => {
                // Close the sockets (returning the ports) before confirming the stop.
                drop(self);
                let _ = done.send(recorder);
            }
            None => {
                // Nobody is left to take the result; dropping the tape still has
                // the writer complete the file.
                drop(recorder);
            }
        }
    }

    fn supervisor_format(&self) -> Option<LegFormat> {
        self.supervisor.as_ref().map(|s| s.format)
    }

    /// Creates or drops the taps as the call's needs change.
    fn taps_mut(&mut self) -> Option<&mut Taps> {
        if self.taps.is_none() {
            let (a, b) = self.formats?;
            self.taps = Some(Box::new(Taps::new(a, b)));
        }
        self.taps.as_deref_mut()
    }

    fn drop_idle_taps(&mut self) {
        if self.taps.as_ref().is_some_and(|t| !t.needed()) {
            self.taps = None;
        }
    }

    /// One 20 ms mixing tick: mixed packets out, recording written, keys reported.
    fn tick(&mut self) {
        let Some(taps) = self.taps.as_deref_mut() else {
            return;
        };
        let now = Instant::now();
        let (legs, rewriters, sup) = (&mut self.legs, &mut self.rewriters, &self.supervisor);
        let (counters, octets) = (&self.counters, &mut self.octets);
        let mut out = [0u8; BUF_LEN];
        let result = taps.tick(|who, pkt| {
            let sent = match who {
                Who::Caller | Who::Agent => {
                    let side = if who == Who::Caller { Side::A } else { Side::B };
                    let leg = &mut legs[side.idx()];
                    let Some(dest) = leg.destination(Kind::Rtp) else {
                        return;
                    };
                    let len = pkt.len();
                    out[..len].copy_from_slice(pkt);
                    rewriters[side.idx()].rewrite(&mut out[..len], now);
                    let sent = leg.ports.send_rtp(&mut out, len, dest).is_ok();
                    if sent {
                        counters.output[side.idx()].fetch_add(1, Relaxed);
                        octets[side.idx()] += (len - RTP_HEADER_LEN) as u64;
                    }
                    sent
                }
                Who::Supervisor => match sup.as_ref().and_then(|s| Some((s, s.remote?))) {
                    Some((s, dest)) => s.ports.rtp.try_send_to(pkt, dest).is_ok(),
                    None => return,
                },
            };
            if !sent {
                counters.drop_one();
            }
        });
        if let Err((rec, e)) = result {
            tracing::warn!(error = %e, path = %rec.path().display(), "recording stopped");
            let _ = self.events.send(RelayEvent::RecordingFailed(e.to_string()));
            self.failed_recording = Some(rec);
        }
        while let Some(ev) = taps.poll_event() {
            let TapEvent::SupervisorMode(mode) = ev;
            let ev = RelayEvent::SupervisorMode(mode);
            let _ = self.events.send(ev);
        }
        self.drop_idle_taps();
    }

    fn count_reception(&mut self, from: Side, pkt: &[u8], now: Instant) {
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
        self.reception[from.idx()].on_packet(seq, ts, ssrc, now);
    }

    /// Copies loss and jitter into the counters the handle reads: once a second and at
    /// the end, not per packet.
    fn publish_reception(&self) {
        for (i, stats) in self.reception.iter().enumerate() {
            self.counters.lost[i].store(stats.lost(), Relaxed);
            let jitter = (stats.mean_jitter_ms() * 1000.0) as u64;
            self.counters.jitter_us[i].store(jitter, Relaxed);
        }
    }

    /// Reports the keys a leg sends as RFC 4733 events; true if `pkt` is one.
    fn detect_keys(&mut self, from: Side, pkt: &[u8]) -> bool {
        let Some((a, b)) = self.formats else {
            return false;
        };
        let event_pt = if from == Side::A {
            a.event_pt
        } else {
            b.event_pt
        };
        if pkt.len() < RTP_HEADER_LEN || event_pt != Some(pkt[1] & 0x7f) {
            return false;
        }
        // A malformed event packet is still an event packet: kept from the other party.
        let Some(rtp) = crate::media::rtp::parse(pkt) else {
            return true;
        };
        // Made at the leg's first key, once: most calls send none, and a detector is
        // most of a relay's size.
        let detector =
            self.keys[from.idx()].get_or_insert_with(|| Box::new(DtmfDetector::new(8000, false)));
        let now = Instant::now();
        let _ = detector.on_telephone_event(now, rtp.ssrc, rtp.timestamp, rtp.marker, rtp.payload);
        while let Some(d) = detector.poll() {
            let _ = self.events.send(RelayEvent::Key(from, d.digit.key));
        }
        true
    }

    /// RTP from the supervisor's phone: latched like any leg, then into the taps.
    fn on_supervisor_rtp(&mut self, pkt: &[u8], src: SocketAddr) {
        if !is_rtp(pkt) {
            return;
        }
        if let Some(s) = &mut self.supervisor {
            s.remote.get_or_insert(src);
        }
        if let Some(taps) = self.taps.as_deref_mut() {
            taps.receive(Who::Supervisor, pkt, Instant::now());
        }
    }

    /// Our RTCP report to each leg whose RTCP address is known.
    fn send_reports(&mut self) {
        let now = Instant::now();
        let wall = std::time::SystemTime::now();
        for side in [Side::A, Side::B] {
            let i = side.idx();
            let Some(dest) = self.legs[i].destination(Kind::Rtcp) else {
                continue;
            };
            let rewriter = &self.rewriters[i];
            let packets = self.counters.output[i].load(Relaxed);
            let sent = rewriter
                .rtp_time_at(now)
                .filter(|_| packets > 0)
                .map(|rtp_time| Sent {
                    packets: packets as u32,
                    octets: self.octets[i] as u32,
                    rtp_time,
                });
            let block = self.reception[i].report_block();
            if let Some(bytes) = self.rtcp[i].report(rewriter.ssrc(), sent, block, now, wall) {
                // Reports go out every few seconds: a copy into a stack buffer for SRTCP.
                let mut buf = [0u8; BUF_LEN];
                let Some(room) = buf.get_mut(..bytes.len()) else {
                    continue;
                };
                room.copy_from_slice(&bytes);
                if self.legs[i]
                    .ports
                    .send_rtcp(&mut buf, bytes.len(), dest)
                    .is_err()
                {
                    self.counters.drop_one();
                }
            }
        }
    }

    fn check_media_timeout(&mut self) {
        let Some(limit) = self.media_timeout else {
            return;
        };
        let now = Instant::now();
        for side in [Side::A, Side::B] {
            let i = side.idx();
            if self.watched[i] && now.duration_since(self.last_rtp[i]) >= limit {
                // Reported once; the call decides what to do.
                self.watched[i] = false;
                let _ = self.events.send(RelayEvent::MediaTimeout(side));
            }
        }
    }

    /// Applies a control message; `Break` ends the relay, carrying the stop or release
    /// acknowledgement. (Every handle dropped is the worker's to see.)
    fn control(&mut self, msg: Control) -> ControlFlow<Ending> {
        match msg {
            Control::SetRemote { side, rtp, rtcp } => {
                let leg = &mut self.legs[side.idx()];
                if leg.sdp_rtp != Some(rtp) || leg.sdp_rtcp != Some(rtcp) {
                    leg.sdp_rtp = Some(rtp);
                    leg.sdp_rtcp = Some(rtcp);
                    leg.latched_rtp = None;
                    leg.latched_rtcp = None;
                }
                ControlFlow::Continue(())
            }
            Control::Srtp(side, srtp) => {
                self.legs[side.idx()].ports.set_srtp(srtp.map(|s| *s));
                ControlFlow::Continue(())
            }
            Control::Rekey(side, key) => {
                self.legs[side.idx()].ports.rekey_inbound(&key);
                ControlFlow::Continue(())
            }
            Control::Formats(a, b) => {
                self.formats = Some((a, b));
                // New formats, new event clocks: detectors start afresh at the next key.
                self.keys = [None, None];
                // New codecs (a re-INVITE): start the taps afresh if they run.
                if let Some(old) = self.taps.take() {
                    let mut old = old;
                    let rec = old.take_recording();
                    let mode = old.supervisor_mode();
                    let mut taps = Taps::new(a, b);
                    if let Some(rec) = rec {
                        taps.record(rec);
                    }
                    if let (Some(mode), Some(sup)) = (mode, self.supervisor_format()) {
                        taps.attach_supervisor(sup, mode);
                    }
                    self.taps = Some(Box::new(taps));
                } else if a.codec != b.codec {
                    self.taps_mut();
                }
                self.drop_idle_taps();
                ControlFlow::Continue(())
            }
            Control::Record(rec) => {
                match self.taps_mut() {
                    Some(taps) => {
                        // A tape replaced or refused is completed by the writer.
                        drop(taps.record(rec));
                    }
                    None => {
                        tracing::warn!("recording asked for before the legs' codecs are known");
                        drop(rec);
                    }
                }
                ControlFlow::Continue(())
            }
            Control::PauseRecording(pause) => {
                if let Some(t) = self.taps.as_deref_mut() {
                    t.pause_recording(pause);
                }
                ControlFlow::Continue(())
            }
            Control::TakeRecording(reply) => {
                let rec = self
                    .taps
                    .as_deref_mut()
                    .and_then(|t| t.take_recording())
                    .or_else(|| self.failed_recording.take());
                self.drop_idle_taps();
                let _ = reply.send(rec);
                ControlFlow::Continue(())
            }
            Control::Supervise(leg) => {
                let format = leg.format;
                self.supervisor = Some(Supervisor {
                    ports: leg.ports,
                    remote: leg.remote,
                    format,
                    _attached: leg.attached,
                });
                match self.taps_mut() {
                    Some(taps) => taps.attach_supervisor(format, leg.mode),
                    None => self.supervisor = None,
                }
                ControlFlow::Continue(())
            }
            Control::ForwardDtmf(forward) => {
                self.forward_dtmf = forward;
                ControlFlow::Continue(())
            }
            Control::Unsupervise => {
                self.supervisor = None;
                if let Some(t) = self.taps.as_deref_mut() {
                    t.detach_supervisor();
                }
                self.drop_idle_taps();
                ControlFlow::Continue(())
            }
            Control::SupervisorMode(mode) => {
                if let Some(t) = self.taps.as_deref_mut() {
                    t.set_supervisor_mode(mode);
                }
                ControlFlow::Continue(())
            }
            Control::Watch(side, on) => {
                self.watched[side.idx()] = on;
                self.last_rtp[side.idx()] = Instant::now();
                ControlFlow::Continue(())
            }
            Control::Stop(done) => ControlFlow::Break(Ending::Stopped(done)),
            Control::Release(back) => ControlFlow::Break(Ending::Released(back)),
        }
    }

    fn forward(
        &mut self,
        kernel: Option<&mut crate::media::kernel::Table>,
        from: Side,
        kind: Kind,
        buf: &mut [u8],
        len: usize,
        src: SocketAddr,
    ) {
        let valid = match kind {
            Kind::Rtp => is_rtp(&buf[..len]),
            Kind::Rtcp => is_rtcp(&buf[..len]),
        };
        if !valid {
            return self.counters.drop_one();
        }
        // An encrypted leg's packet is authenticated before it may latch.
        let ports = &mut self.legs[from.idx()].ports;
        let opened = match kind {
            Kind::Rtp => ports.open_rtp(&mut buf[..len]),
            Kind::Rtcp => ports.open_rtcp(&mut buf[..len]),
        };
        let Ok(len) = opened else {
            return self.counters.drop_one();
        };
        let kernel_left = kind == Kind::Rtp && self.kernel_left(from, &buf[..len], src);
        if !self.legs[from.idx()].admit(kind, src) {
            return self.counters.drop_one();
        }
        if kernel_left {
            // A new source or SSRC: the relay re-stamps it, from where the kernel got to.
            self.take_back_from_kernel(kernel);
        }
        let pkt = &mut buf[..len];
        let to = from.other();
        let now = Instant::now();
        if kind == Kind::Rtcp {
            // Terminated here: the other leg gets our reports, not these (module docs).
            self.rtcp[from.idx()].on_packet(pkt, now);
            return;
        }
        self.counters.input[from.idx()].fetch_add(1, Relaxed);
        self.last_rtp[from.idx()] = now;
        self.count_reception(from, pkt, now);
        if self.detect_keys(from, pkt) && !self.forward_dtmf {
            // The keys are the call's (recording keys...), not the other party's.
            return;
        }
        if let Some(taps) = self.taps.as_deref_mut() {
            let who = if from == Side::A {
                Who::Caller
            } else {
                Who::Agent
            };
            taps.receive(who, pkt, now);
            let to_who = if to == Side::A {
                Who::Caller
            } else {
                Who::Agent
            };
            if taps.mixes_output(to_who) {
                // That party hears the mix, encoded on the tick.
                return;
            }
        }

        let leg = &mut self.legs[to.idx()];
        let Some(dest) = leg.destination(Kind::Rtp) else {
            return self.counters.drop_one();
        };
        self.rewriters[to.idx()].rewrite(pkt, now);
        match leg.ports.send_rtp(buf, len, dest) {
            Ok(_) => {
                self.counters.output[to.idx()].fetch_add(1, Relaxed);
                self.octets[to.idx()] += len.saturating_sub(RTP_HEADER_LEN) as u64;
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    tracing::trace!(error = %e, %dest, "RTP send error");
                }
                self.counters.drop_one();
            }
        }
    }
}

const RTP_HEADER_LEN: usize = 12;

/// Whether `pkt` looks like an RTP packet: version 2 and a complete fixed
/// header plus CSRC list. Payload types 64..=95 are refused: they collide with
/// RTCP packet types (RFC 5761 §4), i.e. this is RTCP sent to the RTP port.
pub fn is_rtp(pkt: &[u8]) -> bool {
    if pkt.len() < RTP_HEADER_LEN || pkt[0] >> 6 != 2 {
        return false;
    }
    let csrc_count = usize::from(pkt[0] & 0x0f);
    let payload_type = pkt[1] & 0x7f;
    pkt.len() >= RTP_HEADER_LEN + 4 * csrc_count && !(64..=95).contains(&payload_type)
}

/// RTCP is relayed untouched; this only keeps junk from latching a leg.
fn is_rtcp(pkt: &[u8]) -> bool {
    pkt.len() >= 8 && pkt[0] >> 6 == 2
}

/// Samples per 20 ms at 8 kHz: the timestamp step used when splicing streams.
const SPLICE_MIN_STEP: u32 = 160;
/// Splice gaps are capped so the jump stays well inside the "newer" half of
/// the 32-bit timestamp space.
const SPLICE_MAX_STEP: u32 = 1 << 30;

/// Re-stamps one direction of RTP so its receiver sees a single continuous
/// stream under our own SSRC, whatever sources feed it.
///
/// Within one input SSRC, `out = in + offset` (wrapping) for both sequence
/// number and timestamp, which preserves the sender's gaps, reordering and
/// RFC 4733 event timestamps. When a new input SSRC appears, the offsets are
/// recomputed so the stream continues at `last seq + 1` and `last timestamp +
/// elapsed wall-clock time` (at least one 20 ms frame) in 8 kHz samples, the
/// clock rate of every codec we negotiate; and the marker bit is set to tell
/// the receiver's jitter buffer to resynchronise.
#[derive(Debug, Clone)]
pub struct StreamRewriter {
    out_ssrc: u32,
    in_ssrc: Option<u32>,
    seq_offset: u16,
    ts_offset: u32,
    /// Highest sequence number and timestamp sent, in serial-number order.
    last_seq: u16,
    last_ts: u32,
    last_sent: Option<Instant>,
}

impl StreamRewriter {
    /// A rewriter whose first packet goes out with `ssrc`, sequence number
    /// `first_seq` and timestamp `first_ts`.
    pub fn new(ssrc: u32, first_seq: u16, first_ts: u32) -> Self {
        StreamRewriter {
            out_ssrc: ssrc,
            in_ssrc: None,
            seq_offset: 0,
            ts_offset: 0,
            last_seq: first_seq.wrapping_sub(1),
            last_ts: first_ts.wrapping_sub(SPLICE_MIN_STEP),
            last_sent: None,
        }
    }

    /// A rewriter with random SSRC and initial sequence number and timestamp,
    /// as RFC 3550 §5.1 asks.
    pub fn random() -> Self {
        Self::new(rand::random(), rand::random(), rand::random())
    }

    /// The SSRC the receiver sees.
    pub fn ssrc(&self) -> u32 {
        self.out_ssrc
    }

    /// The input SSRC being re-stamped and its offsets, newest sequence number and
    /// timestamp sent: what the kernel needs to re-stamp the same way.
    fn mapping(&self) -> Option<(u32, u16, u32, u16, u32)> {
        let ssrc = self.in_ssrc?;
        Some((
            ssrc,
            self.seq_offset,
            self.ts_offset,
            self.last_seq,
            self.last_ts,
        ))
    }

    /// Takes in the newest sequence number and timestamp the kernel sent for this
    /// stream, so a later splice continues after them.
    fn absorb(&mut self, last_seq: u16, last_ts: u32, at: Instant) {
        if last_seq.wrapping_sub(self.last_seq) as i16 > 0 {
            self.last_seq = last_seq;
        }
        if last_ts.wrapping_sub(self.last_ts) as i32 > 0 {
            self.last_ts = last_ts;
        }
        if self.last_sent.is_none_or(|t| at > t) {
            self.last_sent = Some(at);
        }
    }

    /// The RTP timestamp of the outgoing stream that corresponds to `now` (for a
    /// sender report): the last one sent, advanced by the time since, at 8 kHz.
    pub fn rtp_time_at(&self, now: Instant) -> Option<u32> {
        let at = self.last_sent?;
        let elapsed = now.saturating_duration_since(at).as_micros() * 8 / 1000;
        Some(self.last_ts.wrapping_add(elapsed as u32))
    }

    /// Rewrites the RTP header of `pkt` in place; `now` is the packet's
    /// arrival time. Returns false, leaving `pkt` untouched, if it is not RTP.
    pub fn rewrite(&mut self, pkt: &mut [u8], now: Instant) -> bool {
        if !is_rtp(pkt) {
            return false;
        }
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);

        if self.in_ssrc != Some(ssrc) {
            let elapsed = self
                .last_sent
                .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
            let samples = (elapsed.as_micros() * 8 / 1000).min(u128::from(SPLICE_MAX_STEP)) as u32;
            self.seq_offset = self.last_seq.wrapping_add(1).wrapping_sub(seq);
            self.ts_offset = self
                .last_ts
                .wrapping_add(samples.max(SPLICE_MIN_STEP))
                .wrapping_sub(ts);
            self.in_ssrc = Some(ssrc);
            pkt[1] |= 0x80; // marker
        }

        let out_seq = seq.wrapping_add(self.seq_offset);
        let out_ts = ts.wrapping_add(self.ts_offset);
        pkt[2..4].copy_from_slice(&out_seq.to_be_bytes());
        pkt[4..8].copy_from_slice(&out_ts.to_be_bytes());
        pkt[8..12].copy_from_slice(&self.out_ssrc.to_be_bytes());

        // Track the newest values only, so a late (reordered) packet cannot
        // make a later splice reuse sequence numbers already sent.
        if out_seq.wrapping_sub(self.last_seq) as i16 > 0 {
            self.last_seq = out_seq;
        }
        if out_ts.wrapping_sub(self.last_ts) as i32 > 0 {
            self.last_ts = out_ts;
        }
        self.last_sent = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ports::{tests::free_range, PortPool};
    use std::net::{IpAddr, Ipv4Addr};
    use tokio::net::UdpSocket;
    use tokio::time::timeout;

    fn rtp(seq: u16, ts: u32, ssrc: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, 0]; // V=2, PT 0 (PCMU)
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// (marker, seq, ts, ssrc)
    fn header(p: &[u8]) -> (bool, u16, u32, u32) {
        (
            p[1] & 0x80 != 0,
            u16::from_be_bytes([p[2], p[3]]),
            u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
        )
    }

    fn stamp(
        rw: &mut StreamRewriter,
        seq: u16,
        ts: u32,
        ssrc: u32,
        now: Instant,
    ) -> (bool, u16, u32, u32) {
        let mut p = rtp(seq, ts, ssrc, b"voice");
        assert!(rw.rewrite(&mut p, now));
        assert_eq!(&p[12..], b"voice");
        header(&p)
    }

    #[test]
    fn continuous_across_ssrc_change() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(0xCAFE, 1000, 50_000);
        assert_eq!(
            stamp(&mut rw, 7, 700, 0x1111, t0),
            (true, 1000, 50_000, 0xCAFE)
        );
        assert_eq!(
            stamp(&mut rw, 8, 860, 0x1111, t0),
            (false, 1001, 50_160, 0xCAFE)
        );
        // Gaps and reordering within one source are preserved.
        assert_eq!(
            stamp(&mut rw, 10, 1180, 0x1111, t0),
            (false, 1003, 50_480, 0xCAFE)
        );
        assert_eq!(
            stamp(&mut rw, 9, 1020, 0x1111, t0),
            (false, 1002, 50_320, 0xCAFE)
        );

        // The other leg is replaced: a new SSRC continues right after 1003,
        // one frame on when (almost) no time has passed...
        assert_eq!(
            stamp(&mut rw, 40_000, 9, 0x2222, t0),
            (true, 1004, 50_640, 0xCAFE)
        );
        assert_eq!(
            stamp(&mut rw, 40_001, 169, 0x2222, t0),
            (false, 1005, 50_800, 0xCAFE)
        );
        // ...and by the wall-clock gap (2 s = 16000 samples) after a pause.
        let later = t0 + Duration::from_secs(2);
        assert_eq!(
            stamp(&mut rw, 5, 5, 0x3333, later),
            (true, 1006, 66_800, 0xCAFE)
        );
    }

    #[test]
    fn a_splice_after_the_kernel_carried_the_stream_continues_after_the_kernel() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(0xCAFE, 1000, 50_000);
        stamp(&mut rw, 7, 700, 0x1111, t0);
        let (ssrc, seq_offset, ts_offset, last_seq, last_ts) = rw.mapping().unwrap();
        assert_eq!((ssrc, last_seq, last_ts), (0x1111, 1000, 50_000));
        // The kernel re-stamped 50 more packets with the same offsets...
        let (seq, ts) = (57u16, 700 + 50 * 160u32);
        let later = t0 + Duration::from_secs(1);
        rw.absorb(
            seq.wrapping_add(seq_offset),
            ts.wrapping_add(ts_offset),
            later,
        );
        // ...so the same source goes on where the kernel left off...
        assert_eq!(
            stamp(&mut rw, 58, ts + 160, 0x1111, later),
            (false, 1051, 58_160, 0xCAFE)
        );
        // ...and a new one is spliced after the kernel's last packet, not the relay's.
        assert_eq!(
            stamp(&mut rw, 3, 3, 0x2222, later),
            (true, 1052, 58_320, 0xCAFE)
        );
        // An older figure from the kernel moves nothing back.
        rw.absorb(1010, 51_000, t0);
        assert_eq!(rw.mapping().unwrap().3, 1052);
    }

    #[test]
    fn wraps_sequence_and_timestamp() {
        let t0 = Instant::now();
        let mut rw = StreamRewriter::new(1, u16::MAX, u32::MAX - 79);
        assert_eq!(
            stamp(&mut rw, 0, 0, 9, t0),
            (true, u16::MAX, u32::MAX - 79, 1)
        );
        assert_eq!(stamp(&mut rw, 1, 160, 9, t0), (false, 0, 80, 1));
        // A splice right after the wrap still continues forward.
        assert_eq!(stamp(&mut rw, 500, 1, 10, t0), (true, 1, 240, 1));
        // Input wrapping on its own is carried through too.
        let mut rw = StreamRewriter::new(1, 100, 1000);
        stamp(&mut rw, u16::MAX, u32::MAX, 9, t0);
        assert_eq!(stamp(&mut rw, 0, 159, 9, t0), (false, 101, 1160, 1));
    }

    #[test]
    fn rejects_what_is_not_rtp() {
        let mut rw = StreamRewriter::random();
        let now = Instant::now();
        let mut short = rtp(1, 1, 1, b"")[..11].to_vec();
        assert!(!rw.rewrite(&mut short, now));
        let mut v1 = rtp(1, 1, 1, b"x");
        v1[0] = 0x40;
        assert!(!rw.rewrite(&mut v1, now));
        // Claims 2 CSRCs but carries only one.
        let mut csrc = rtp(1, 1, 1, &[0; 4]);
        csrc[0] |= 2;
        assert!(!rw.rewrite(&mut csrc, now));
        csrc.extend_from_slice(&[0; 4]);
        assert!(rw.rewrite(&mut csrc, now));
        // An RTCP sender report arriving on the RTP port.
        let mut sr = vec![0x80, 200, 0, 6];
        sr.resize(28, 0);
        let before = sr.clone();
        assert!(!rw.rewrite(&mut sr, now));
        assert_eq!(sr, before);
    }

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    async fn recv(sock: &UdpSocket) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        let (n, _) = timeout(Duration::from_secs(2), sock.recv_from(&mut buf))
            .await
            .expect("packet not relayed")
            .unwrap();
        buf[..n].to_vec()
    }

    async fn phone() -> UdpSocket {
        UdpSocket::bind((LOCALHOST, 0)).await.unwrap()
    }

    /// A PCMU bridge with telephone-event 101 on both legs, keys not forwarded: (relay,
    /// its events, phone A, phone B, where A sends to).
    async fn keyed_relay() -> (
        RelayHandle,
        tokio::sync::mpsc::UnboundedReceiver<RelayEvent>,
        UdpSocket,
        UdpSocket,
        SocketAddr,
    ) {
        use crate::media::codec::Codec;
        let low = free_range(2);
        let pool = PortPool::new(LOCALHOST, low, low + 3);
        let (a, b) = (pool.allocate().unwrap(), pool.allocate().unwrap());
        let to_a = SocketAddr::new(LOCALHOST, a.port());
        let (relay, events) = spawn_relay_with_events(a, b, None);
        let (phone_a, phone_b) = (phone().await, phone().await);
        relay.set_remote(Side::A, phone_a.local_addr().unwrap(), None);
        relay.set_remote(Side::B, phone_b.local_addr().unwrap(), None);
        let pcmu = LegFormat {
            codec: Codec::Pcmu,
            event_pt: Some(101),
        };
        relay.set_formats(pcmu, pcmu);
        relay.forward_dtmf(false);
        (relay, events, phone_a, phone_b, to_a)
    }

    /// The next relay event is key `key` from leg A.
    async fn expect_key(events: &mut tokio::sync::mpsc::UnboundedReceiver<RelayEvent>, key: char) {
        let ev = timeout(Duration::from_secs(2), events.recv())
            .await
            .unwrap();
        let want = crate::media::dtmf::Key::from_char(key).unwrap();
        assert_eq!(ev, Some(RelayEvent::Key(Side::A, want)));
    }

    #[tokio::test]
    async fn keys_are_reported_to_the_call_and_kept_from_the_other_party_unless_asked() {
        let (relay, mut events, phone_a, phone_b, to_a) = keyed_relay().await;

        // Key 5 from A: three end packets (RFC 4733), then a voice packet.
        for seq in 0..3u16 {
            let mut p = rtp(seq, 800, 0xAAAA, &[5, 0x8a, 0x03, 0x20]);
            p[1] = 101;
            phone_a.send_to(&p, to_a).await.unwrap();
        }
        phone_a
            .send_to(&rtp(3, 960, 0xAAAA, b"voice"), to_a)
            .await
            .unwrap();
        let got = recv(&phone_b).await;
        assert_eq!(
            &got[12..],
            b"voice",
            "the key never reached B; the voice did"
        );
        expect_key(&mut events, '5').await;

        // Asked to forward: the next key goes through.
        relay.forward_dtmf(true);
        let mut p = rtp(4, 1120, 0xAAAA, &[6, 0x8a, 0x03, 0x20]);
        p[1] = 101;
        phone_a.send_to(&p, to_a).await.unwrap();
        let got = recv(&phone_b).await;
        assert_eq!(got[1] & 0x7f, 101);
        relay.stop().await;
    }

    #[tokio::test]
    async fn a_key_in_a_packet_with_a_header_extension_and_padding_is_read_right() {
        let (relay, mut events, phone_a, phone_b, to_a) = keyed_relay().await;
        // Key 7's end packets, each with a two-word header extension and 4 octets of
        // padding: read from 12 + 4·CC, the extension's bytes would be taken for the
        // event (key 0xBE…), and the padding for its duration.
        let event = [7, 0x8a, 0x03, 0x20];
        for _ in 0..3 {
            let p = crate::media::rtp::tests::packet(101, &event, 0, Some(2), 4);
            phone_a.send_to(&p, to_a).await.unwrap();
        }
        expect_key(&mut events, '7').await;
        phone_a
            .send_to(&rtp(9, 960, 0xAAAA, b"voice"), to_a)
            .await
            .unwrap();
        assert_eq!(
            &recv(&phone_b).await[12..],
            b"voice",
            "the key was kept from B"
        );
        relay.stop().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_recorded_bridge_relays_every_packet_while_the_disk_is_stalled() {
        use crate::media::codec::{Codec, Encoder};
        use crate::media::mixer::signal::{amplitude, sine};
        use crate::media::recorder::RecordingWriter;
        let (relay, _events, phone_a, phone_b, to_a) = keyed_relay().await;
        let to_b = SocketAddr::new(LOCALHOST, to_a.port() + 2);
        let dir = tempfile::tempdir().unwrap();
        let writer = RecordingWriter::start(Duration::from_secs(5)).unwrap();
        relay.record(writer.call(
            dir.path().join("call.wav"),
            crate::media::mixer::SampleRate::Narrowband,
        ));
        // The disk stops answering for 2 s of the 3 s call.
        writer.stall(Duration::from_secs(2));

        let tone = |hz: f64, i: usize| {
            let mut out = [0u8; 160];
            let n = Encoder::new(Codec::Pcmu)
                .encode(&sine(hz, 8000, 8000.0, i * 160, 160), &mut out)
                .unwrap();
            out[..n].to_vec()
        };
        // Each phone talks and listens on one socket, counting what it hears.
        let (phone_a, phone_b) = (std::sync::Arc::new(phone_a), std::sync::Arc::new(phone_b));
        let count = |sock: std::sync::Arc<UdpSocket>| {
            tokio::spawn(async move {
                let mut buf = [0u8; 1500];
                let mut n = 0;
                while timeout(Duration::from_millis(500), sock.recv_from(&mut buf))
                    .await
                    .is_ok()
                {
                    n += 1;
                }
                n
            })
        };
        let (heard_a, heard_b) = (count(phone_a.clone()), count(phone_b.clone()));
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..150usize {
            tick.tick().await;
            let ts = (i * 160) as u32;
            let (to_a_pkt, to_b_pkt) = (
                rtp(i as u16, ts, 0xAAAA, &tone(440.0, i)),
                rtp(i as u16, ts, 0xBBBB, &tone(700.0, i)),
            );
            phone_a.send_to(&to_a_pkt, to_a).await.unwrap();
            phone_b.send_to(&to_b_pkt, to_b).await.unwrap();
        }
        assert_eq!(heard_b.await.unwrap(), 150, "B missed packets from A");
        assert_eq!(heard_a.await.unwrap(), 150, "A missed packets from B");
        let tape = relay
            .take_recording()
            .await
            .expect("the bridge was recording");
        let stats = relay.stop().await;
        assert_eq!((stats.a_in, stats.b_in), (150, 150));
        assert_eq!((stats.a_out, stats.b_out, stats.dropped), (150, 150, 0));

        let rec = tape.finish().await.unwrap();
        assert_eq!(rec.lost, Duration::ZERO);
        // The call's 3 s, and the half second the phones listened on after it.
        let secs = rec.duration.as_secs_f64();
        assert!((3.0..=4.5).contains(&secs), "{secs} s recorded");
        let mut wav = hound::WavReader::open(&rec.path).unwrap();
        let all: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
        let left: Vec<i16> = all.iter().step_by(2).copied().collect();
        let right: Vec<i16> = all.iter().skip(1).step_by(2).copied().collect();
        // A stretch recorded while the disk was stalled holds both parties.
        let stalled = 8000..16000;
        assert!(amplitude(&left[stalled.clone()], 440.0, 8000) > 4000.0);
        assert!(amplitude(&right[stalled], 700.0, 8000) > 4000.0);
    }

    #[tokio::test]
    async fn each_leg_gets_our_own_rtcp_report_about_the_streams_it_exchanges_with_us() {
        let low = free_range(2);
        let pool = PortPool::new(LOCALHOST, low, low + 3);
        let (a, b) = (pool.allocate().unwrap(), pool.allocate().unwrap());
        let to_a = SocketAddr::new(LOCALHOST, a.port());
        let to_b = SocketAddr::new(LOCALHOST, b.port());
        let relay = spawn_relay(a, b);
        let (phone_a, phone_a_rtcp, phone_b) = (phone().await, phone().await, phone().await);
        relay.set_remote(
            Side::A,
            phone_a.local_addr().unwrap(),
            Some(phone_a_rtcp.local_addr().unwrap()),
        );
        relay.set_remote(Side::B, phone_b.local_addr().unwrap(), None);

        // A sends 0..=9 without 4; B sends three packets, which A receives from us.
        for seq in (0..10u16).filter(|s| *s != 4) {
            phone_a
                .send_to(&rtp(seq, u32::from(seq) * 160, 0xAAAA, b"a"), to_a)
                .await
                .unwrap();
        }
        let mut ssrc_a_hears = 0;
        for seq in 0..3u16 {
            phone_b
                .send_to(&rtp(seq, u32::from(seq) * 160, 0xBBBB, b"bbbb"), to_b)
                .await
                .unwrap();
            ssrc_a_hears = header(&recv(&phone_a).await).3;
        }

        // Within the 5 s report interval (plus slack), A gets an SR and an SDES.
        let mut buf = [0u8; 1500];
        let (n, from) = timeout(Duration::from_secs(7), phone_a_rtcp.recv_from(&mut buf))
            .await
            .expect("no RTCP report reached A")
            .unwrap();
        assert_eq!(from.port(), to_a.port() + 1, "sent from A's RTCP port");
        let mut bytes = &buf[..n];
        let packets = rtc_rtcp::packet::unmarshal(&mut bytes).unwrap();
        let sr = packets[0]
            .as_any()
            .downcast_ref::<rtc_rtcp::sender_report::SenderReport>()
            .expect("a sender report first");
        assert_eq!(sr.ssrc, ssrc_a_hears, "about the stream A receives from us");
        assert_eq!((sr.packet_count, sr.octet_count), (3, 12));
        let block = &sr.reports[0];
        assert_eq!(block.ssrc, 0xAAAA, "about the stream A sends us");
        assert_eq!((block.total_lost, block.last_sequence_number), (1, 9));
        assert_eq!(block.fraction_lost, (256 / 10) as u8);
        assert!(packets[1]
            .as_any()
            .is::<rtc_rtcp::source_description::SourceDescription>());
        relay.stop().await;
    }

    #[tokio::test]
    async fn relays_between_two_phones() {
        let low = free_range(2);
        let pool = PortPool::new(LOCALHOST, low, low + 3);
        let (a, b) = (pool.allocate().unwrap(), pool.allocate().unwrap());
        let to_a = SocketAddr::new(LOCALHOST, a.port());
        let to_b = SocketAddr::new(LOCALHOST, b.port());
        let relay = spawn_relay(a, b);

        let (phone_a, phone_b, phone_b_rtcp) = (phone().await, phone().await, phone().await);
        // A's SDP address is wrong (as behind NAT): an unused port.
        let nowhere = phone().await.local_addr().unwrap();
        relay.set_remote(Side::A, nowhere, None);
        relay.set_remote(
            Side::B,
            phone_b.local_addr().unwrap(),
            Some(phone_b_rtcp.local_addr().unwrap()),
        );

        // A speaks first; B hears it under our SSRC.
        phone_a
            .send_to(&rtp(10, 1000, 0xAAAA, b"hello"), to_a)
            .await
            .unwrap();
        let got = recv(&phone_b).await;
        let (marker, _, _, ssrc_b) = header(&got);
        assert!(marker);
        assert_ne!(ssrc_b, 0xAAAA);
        assert_eq!(&got[12..], b"hello");

        // B answers; it reaches A at the latched source, not the SDP address.
        phone_b
            .send_to(&rtp(500, 9000, 0xBBBB, b"hi"), to_b)
            .await
            .unwrap();
        let got = recv(&phone_a).await;
        let ssrc_a = header(&got).3;
        assert!(ssrc_a != 0xBBBB && ssrc_a != ssrc_b);
        assert_eq!(&got[12..], b"hi");

        // Consecutive packets keep the numbering consecutive.
        phone_a
            .send_to(&rtp(11, 1160, 0xAAAA, b"again"), to_a)
            .await
            .unwrap();
        let first = header(&recv(&phone_b).await);
        phone_a
            .send_to(&rtp(12, 1320, 0xAAAA, b"more"), to_a)
            .await
            .unwrap();
        let next = header(&recv(&phone_b).await);
        assert!(!next.0);
        assert_eq!(
            (next.1, next.2),
            (first.1.wrapping_add(1), first.2.wrapping_add(160))
        );

        // RTCP from A stops here: B hears nothing of it (its reports come from us).
        let mut sr = vec![0x80, 200, 0, 6, 0, 0, 0xAA, 0xAA];
        sr.resize(28, 7);
        phone_a
            .send_to(&sr, SocketAddr::new(LOCALHOST, to_a.port() + 1))
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let nothing = timeout(Duration::from_millis(200), phone_b_rtcp.recv_from(&mut buf)).await;
        assert!(nothing.is_err(), "A's RTCP was passed on to B");

        // A stranger on A's port is ignored once A has latched.
        let stranger = phone().await;
        stranger
            .send_to(&rtp(1, 1, 0xEEEE, b"spoof"), to_a)
            .await
            .unwrap();
        // Garbage is dropped too.
        phone_a.send_to(b"not rtp", to_a).await.unwrap();
        // Flush: the next genuine packet proves the two above were processed.
        phone_a
            .send_to(&rtp(13, 1480, 0xAAAA, b"last"), to_a)
            .await
            .unwrap();
        assert_eq!(&recv(&phone_b).await[12..], b"last");

        let stats = relay.stop().await;
        assert_eq!(
            (
                stats.a_in,
                stats.a_out,
                stats.b_in,
                stats.b_out,
                stats.dropped
            ),
            (4, 1, 1, 4, 2)
        );
        assert_eq!(pool.available(), 2, "stop() returns the ports");
    }

    #[tokio::test]
    async fn the_signalled_source_wins_the_latch_back_from_a_stray_sender() {
        let low = free_range(2);
        let pool = PortPool::new(LOCALHOST, low, low + 3);
        let (a, b) = (pool.allocate().unwrap(), pool.allocate().unwrap());
        let (to_a, to_b) = (
            SocketAddr::new(LOCALHOST, a.port()),
            SocketAddr::new(LOCALHOST, b.port()),
        );
        let relay = spawn_relay(a, b);
        let (phone_a, phone_b, stray) = (phone().await, phone().await, phone().await);
        relay.set_remote(Side::A, phone_a.local_addr().unwrap(), None);
        relay.set_remote(Side::B, phone_b.local_addr().unwrap(), None);

        // A losing fork's early media reaches B's port first and latches it.
        stray
            .send_to(&rtp(1, 100, 0x5555, b"early"), to_b)
            .await
            .unwrap();
        assert_eq!(&recv(&phone_a).await[12..], b"early");
        // The answering phone, at the address its SDP named, takes the latch back...
        phone_b
            .send_to(&rtp(7, 700, 0xBBBB, b"real"), to_b)
            .await
            .unwrap();
        assert_eq!(&recv(&phone_a).await[12..], b"real");
        // ...so the caller's audio goes to it, and the stray is ignored from now on.
        phone_a
            .send_to(&rtp(2, 200, 0xAAAA, b"to b"), to_a)
            .await
            .unwrap();
        assert_eq!(&recv(&phone_b).await[12..], b"to b");
        stray
            .send_to(&rtp(2, 260, 0x5555, b"late"), to_b)
            .await
            .unwrap();
        phone_b
            .send_to(&rtp(8, 860, 0xBBBB, b"after"), to_b)
            .await
            .unwrap();
        assert_eq!(&recv(&phone_a).await[12..], b"after");
        assert_eq!(relay.stop().await.dropped, 1);
    }

    #[tokio::test]
    async fn drops_until_a_destination_is_known_and_ends_on_handle_drop() {
        let low = free_range(2);
        let pool = PortPool::new(LOCALHOST, low, low + 3);
        let (a, b) = (pool.allocate().unwrap(), pool.allocate().unwrap());
        let to_a = SocketAddr::new(LOCALHOST, a.port());
        let relay = spawn_relay(a, b);
        let phone_a = phone().await;

        // Nothing is known about B yet: A's packet is counted in and dropped.
        phone_a.send_to(&rtp(1, 1, 1, b"x"), to_a).await.unwrap();
        let deadline = Instant::now() + Duration::from_secs(2);
        while relay.stats().dropped == 0 {
            assert!(Instant::now() < deadline, "packet never seen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            relay.stats(),
            RelayStats {
                a_in: 1,
                dropped: 1,
                ..Default::default()
            }
        );

        // A clone keeps it alive; dropping the last handle ends the task.
        let clone = relay.clone();
        drop(relay);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(pool.available(), 0);
        drop(clone);
        while pool.available() != 2 {
            assert!(Instant::now() < deadline, "ports not returned");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}
