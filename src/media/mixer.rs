//! The per-call mixer: who hears whom.
//!
//! One [`Mixer`] per call, attached only when the call needs one (a
//! supervisor joins, or the call is recorded); a plain two-party call with no
//! taps never decodes and is relayed packet by packet instead. This module
//! owns:
//!
//! * [`SampleRate`] and the 20 ms frame that every PCM path in `media`
//!   (prompts, mixer, recorder) works in;
//! * [`Mixer`]: a sans-IO frame processor. Each tick the call feeds at most
//!   one decoded frame per party, calls [`Mixer::tick`], and reads back one
//!   frame per party of what that party should hear, plus the two recording
//!   channels;
//! * [`JitterBuffer`]: a small adaptive buffer that puts one leg's RTP
//!   payloads back in sequence order before they are decoded and mixed.
//!
//! # Who hears whom
//!
//! | speaker \ listener       | caller | agent | supervisor |
//! |--------------------------|--------|-------|------------|
//! | caller                   | –      | yes   | yes        |
//! | agent                    | yes    | –     | yes        |
//! | supervisor in `Listen`   | no     | no    | no         |
//! | supervisor in `Whisper`  | no     | yes   | yes        |
//! | supervisor in `Barge`    | yes    | yes   | yes        |
//!
//! Nobody hears their own voice. A supervisor hears what the agent hears plus
//! the agent, so two supervisors on one call hear each other once either of
//! them stops merely listening, the way a third person in the agent's room
//! would.
//!
//! # What is recorded
//!
//! The recording is the caller's leg in both directions: the left channel is
//! what the caller said, the right channel is what the caller heard from us
//! (the agent and any barging supervisor). That is Asterisk's MixMonitor rule
//! ("record what the parties hear") applied to the customer: a barging
//! supervisor talks to the customer, so it belongs in the record of the
//! conversation, while a whisper is internal coaching that the customer never
//! heard, so it is left out.
//!
//! # What it must never do
//!
//! No sockets, clocks, tasks or files: the call task owns those and drives the
//! mixer with frames. Nothing is allocated per tick: every buffer is sized
//! when a party is attached and reused afterwards, and mixing is done in
//! `i32` and saturated once per sample.

use std::fmt;

/// Length of every PCM frame handled in `media`: 20 ms, the usual RTP ptime.
pub const FRAME_MS: u32 = 20;

/// The PCM rate of a call's audio paths.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SampleRate {
    /// 8 kHz: G.711 (PCMU, PCMA).
    Narrowband,
    /// 16 kHz: G.722 and L16/16000.
    Wideband,
}

impl SampleRate {
    /// Samples per second.
    pub const fn hz(self) -> u32 {
        match self {
            SampleRate::Narrowband => 8_000,
            SampleRate::Wideband => 16_000,
        }
    }

    /// Samples in one 20 ms frame: 160 or 320.
    pub const fn frame_len(self) -> usize {
        (self.hz() / 1000 * FRAME_MS) as usize
    }

    /// The rate for `hz`, if it is one the media paths run at.
    pub const fn from_hz(hz: u32) -> Option<Self> {
        match hz {
            8_000 => Some(SampleRate::Narrowband),
            16_000 => Some(SampleRate::Wideband),
            _ => None,
        }
    }
}

impl fmt::Display for SampleRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} Hz", self.hz())
    }
}

/// How an attached supervisor takes part in the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// Hears caller and agent; heard by nobody.
    Listen,
    /// Hears caller and agent; heard by the agent only (coaching).
    Whisper,
    /// Hears caller and agent; heard by both.
    Barge,
}

impl Mode {
    fn heard_by_caller(self) -> bool {
        matches!(self, Mode::Barge)
    }

    fn heard_by_agent(self) -> bool {
        matches!(self, Mode::Whisper | Mode::Barge)
    }
}

/// Identifies one supervisor attached to a call (the call layer picks it,
/// e.g. from the supervisor's leg).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SupervisorId(pub u32);

/// A party whose audio goes into, and comes out of, the mixer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Party {
    Caller,
    Agent,
    Supervisor(SupervisorId),
}

/// What the mixer refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MixerError {
    #[error(
        "a frame of {got} samples does not fit this call: at {rate} a 20 ms frame has {want} \
         (repacketise other ptimes before mixing)"
    )]
    FrameLength {
        got: usize,
        want: usize,
        rate: SampleRate,
    },
    #[error("supervisor {} is not attached to this call; attach it first", .0 .0)]
    UnknownSupervisor(SupervisorId),
    #[error("supervisor {} is already attached to this call; use set_mode to switch", .0 .0)]
    AlreadyAttached(SupervisorId),
}

/// What happened to a party's input on the last tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InputState {
    /// A frame was pushed for this tick.
    Live,
    /// No frame came, so the previous one was played again (once only: a
    /// repeated frame hides a single lost packet, a longer run would buzz).
    Repeated,
    /// No frame for two ticks or more: silence.
    Silent,
}

/// One party's input: this tick's frame, after concealment.
#[derive(Debug)]
struct Input {
    frame: Vec<i16>,
    pushed: bool,
    state: InputState,
}

impl Input {
    fn new(len: usize) -> Self {
        Input {
            frame: vec![0; len],
            pushed: false,
            state: InputState::Silent,
        }
    }

    fn push(&mut self, samples: &[i16]) {
        self.frame.copy_from_slice(samples);
        self.pushed = true;
    }

    /// Settles this tick's frame: the pushed one, one repeat, or silence.
    fn settle(&mut self) {
        self.state = if self.pushed {
            InputState::Live
        } else {
            match self.state {
                // `frame` still holds the last live frame: play it again.
                InputState::Live => InputState::Repeated,
                InputState::Repeated => {
                    self.frame.fill(0);
                    InputState::Silent
                }
                InputState::Silent => InputState::Silent,
            }
        };
        self.pushed = false;
    }
}

#[derive(Debug)]
struct Supervisor {
    id: SupervisorId,
    mode: Mode,
    input: Input,
    output: Vec<i16>,
}

/// The per-call mixer. See the module docs for who hears whom.
///
/// Per tick: [`push`](Mixer::push) at most one frame per party (parties that
/// sent nothing are concealed), then [`tick`](Mixer::tick), then read
/// [`output`](Mixer::output) for each party and [`recording`](Mixer::recording)
/// for the recorder.
#[derive(Debug)]
pub struct Mixer {
    rate: SampleRate,
    caller: Input,
    agent: Input,
    supervisors: Vec<Supervisor>,
    caller_out: Vec<i16>,
    agent_out: Vec<i16>,
    /// Scratch sums, reused every tick: supervisors heard by the caller (and
    /// so by the agent too), then supervisors heard by the agent only.
    barge_bus: Vec<i32>,
    whisper_bus: Vec<i32>,
}

impl Mixer {
    /// A mixer for a call at `rate`, with caller and agent and no
    /// supervisors. Every output is silence until the first tick.
    pub fn new(rate: SampleRate) -> Self {
        let len = rate.frame_len();
        Mixer {
            rate,
            caller: Input::new(len),
            agent: Input::new(len),
            // Room for a couple of supervisors without reallocating on
            // attach; more than two on one call is rare.
            supervisors: Vec::with_capacity(2),
            caller_out: vec![0; len],
            agent_out: vec![0; len],
            barge_bus: vec![0; len],
            whisper_bus: vec![0; len],
        }
    }

    /// The call's rate.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Attaches a supervisor in `mode`. Allocates its buffers (this is
    /// set-up, not the per-tick path).
    pub fn attach(&mut self, id: SupervisorId, mode: Mode) -> Result<(), MixerError> {
        if self.supervisors.iter().any(|s| s.id == id) {
            return Err(MixerError::AlreadyAttached(id));
        }
        let len = self.rate.frame_len();
        self.supervisors.push(Supervisor {
            id,
            mode,
            input: Input::new(len),
            output: vec![0; len],
        });
        Ok(())
    }

    /// Switches an attached supervisor's mode; it takes effect on the next
    /// tick.
    pub fn set_mode(&mut self, id: SupervisorId, mode: Mode) -> Result<(), MixerError> {
        self.supervisor_mut(id)?.mode = mode;
        Ok(())
    }

    /// An attached supervisor's mode.
    pub fn mode(&self, id: SupervisorId) -> Option<Mode> {
        self.supervisors.iter().find(|s| s.id == id).map(|s| s.mode)
    }

    /// Detaches a supervisor; the others keep their modes.
    pub fn detach(&mut self, id: SupervisorId) -> Result<(), MixerError> {
        let at = self
            .supervisors
            .iter()
            .position(|s| s.id == id)
            .ok_or(MixerError::UnknownSupervisor(id))?;
        self.supervisors.swap_remove(at);
        Ok(())
    }

    /// Number of attached supervisors.
    pub fn supervisors(&self) -> usize {
        self.supervisors.len()
    }

    /// Feeds `party`'s decoded frame for the coming tick. A second push for
    /// the same party before the tick replaces the first.
    pub fn push(&mut self, party: Party, samples: &[i16]) -> Result<(), MixerError> {
        let want = self.rate.frame_len();
        if samples.len() != want {
            return Err(MixerError::FrameLength {
                got: samples.len(),
                want,
                rate: self.rate,
            });
        }
        self.input_mut(party)?.push(samples);
        Ok(())
    }

    /// Mixes one 20 ms tick from whatever was pushed since the last one.
    pub fn tick(&mut self) {
        self.caller.settle();
        self.agent.settle();
        self.barge_bus.fill(0);
        self.whisper_bus.fill(0);
        for s in &mut self.supervisors {
            s.input.settle();
            let bus = if s.mode.heard_by_caller() {
                &mut self.barge_bus
            } else if s.mode.heard_by_agent() {
                &mut self.whisper_bus
            } else {
                continue;
            };
            for (acc, &x) in bus.iter_mut().zip(&s.input.frame) {
                *acc += i32::from(x);
            }
        }

        let caller = &self.caller.frame;
        let agent = &self.agent.frame;
        for i in 0..caller.len() {
            let (c, a) = (i32::from(caller[i]), i32::from(agent[i]));
            let (barge, whisper) = (self.barge_bus[i], self.whisper_bus[i]);
            self.caller_out[i] = saturate(a + barge);
            self.agent_out[i] = saturate(c + barge + whisper);
            // From here on the whisper bus holds everything a supervisor
            // could hear; each one takes its own voice back out below.
            self.whisper_bus[i] = c + a + barge + whisper;
        }
        let everyone = &self.whisper_bus;
        for s in &mut self.supervisors {
            let speaks = s.mode.heard_by_agent();
            for ((out, &all), &own) in s.output.iter_mut().zip(everyone).zip(&s.input.frame) {
                let own = if speaks { i32::from(own) } else { 0 };
                *out = saturate(all - own);
            }
        }
    }

    /// What `party` should hear this tick; `None` for a supervisor that is
    /// not attached.
    pub fn output(&self, party: Party) -> Option<&[i16]> {
        match party {
            Party::Caller => Some(&self.caller_out),
            Party::Agent => Some(&self.agent_out),
            Party::Supervisor(id) => self
                .supervisors
                .iter()
                .find(|s| s.id == id)
                .map(|s| &s.output[..]),
        }
    }

    /// The recorder's two channels for this tick: (left, right) = (what the
    /// caller said, what the caller heard). See the module docs for why
    /// whispers are not in it.
    pub fn recording(&self) -> (&[i16], &[i16]) {
        (&self.caller.frame, &self.caller_out)
    }

    /// How `party`'s input was filled on the last tick.
    pub fn input_state(&self, party: Party) -> Option<InputState> {
        match party {
            Party::Caller => Some(self.caller.state),
            Party::Agent => Some(self.agent.state),
            Party::Supervisor(id) => self
                .supervisors
                .iter()
                .find(|s| s.id == id)
                .map(|s| s.input.state),
        }
    }

    fn supervisor_mut(&mut self, id: SupervisorId) -> Result<&mut Supervisor, MixerError> {
        self.supervisors
            .iter_mut()
            .find(|s| s.id == id)
            .ok_or(MixerError::UnknownSupervisor(id))
    }

    fn input_mut(&mut self, party: Party) -> Result<&mut Input, MixerError> {
        match party {
            Party::Caller => Ok(&mut self.caller),
            Party::Agent => Ok(&mut self.agent),
            Party::Supervisor(id) => Ok(&mut self.supervisor_mut(id)?.input),
        }
    }
}

fn saturate(x: i32) -> i16 {
    x.clamp(i32::from(i16::MIN), i32::from(i16::MAX)) as i16
}

/// Packets the jitter buffer can hold: 16 × 20 ms. Five are the most it aims
/// to keep; the rest is room for packets that arrive early out of order.
const JITTER_SLOTS: usize = 16;
/// Depth bounds in frames: 20 ms to 100 ms.
const MIN_DEPTH: u16 = 1;
const MAX_DEPTH: u16 = 5;
/// A new stream starts at 40 ms: enough for ordinary LAN/WAN jitter, little
/// enough that a conversation does not feel delayed.
const START_DEPTH: u16 = 2;
/// Ticks without a late packet or an underrun before the depth shrinks by
/// one frame (5 s).
const CALM_TICKS: u32 = 250;
/// Once calm for a second, one surplus frame is skipped every half second
/// until the buffer holds no more than its depth: quick enough to shed a
/// burst's worth of delay, slow enough that the skips are not heard as a
/// stutter.
const TRIM_AFTER: u32 = 50;
const TRIM_EVERY: u32 = 25;
/// How far behind the expected sequence number a packet may be and still
/// count as late rather than as a new stream (RFC 3550's MAX_MISORDER).
const MAX_MISORDER: i16 = 100;

/// What [`JitterBuffer::push`] did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrival {
    /// Stored for playout.
    Stored,
    /// Already held (a retransmission or a duplicating network): dropped.
    Duplicate,
    /// Its turn has passed (it was played out as lost): dropped, and the
    /// buffer deepens so the next one like it is in time.
    Late,
    /// Too far from the expected sequence number to be reordering (a new
    /// stream after a re-INVITE, or a long outage): the buffer restarted from
    /// this packet.
    Restarted,
    /// Larger than the buffer's slots: dropped.
    TooLarge,
}

/// What to play on this tick, from [`JitterBuffer::pop`].
#[derive(Debug, PartialEq, Eq)]
pub enum Playout<'a> {
    /// The next packet in sequence: decode it and push it into the mixer.
    Packet {
        seq: u16,
        timestamp: u32,
        payload: &'a [u8],
    },
    /// The packet due now is missing: push nothing, so the mixer conceals
    /// it (one repeat, then silence). Decoders with their own concealment
    /// (G.722 PLC) can use this to run it.
    Lost,
    /// Still filling to the target depth (at the start, or after the sender
    /// paused): play silence.
    Buffering,
}

/// Counters for the call record and for tuning.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JitterStats {
    pub stored: u64,
    pub duplicates: u64,
    pub late: u64,
    pub lost: u64,
    pub underruns: u64,
    /// Frames skipped to bring the delay back down after jitter calmed.
    pub trimmed: u64,
    pub restarts: u64,
}

#[derive(Debug)]
struct Slot {
    /// Holds packet `seq`, not yet played.
    filled: bool,
    /// Packet `seq` has been played (so a copy of it is a duplicate).
    played: bool,
    seq: u16,
    timestamp: u32,
    len: usize,
    data: Box<[u8]>,
}

/// A small adaptive jitter buffer for one leg of a mixing path.
///
/// It holds RTP payloads, not decoded audio, because stateful decoders
/// (G.722's ADPCM) must see packets in order. It is driven by the call's
/// tick: [`push`](Self::push) every packet as it arrives and
/// [`pop`](Self::pop) once per 20 ms tick. Packets are ordered by RTP
/// sequence number and assumed to carry 20 ms each.
///
/// The target depth starts at 40 ms and adapts between 20 and 100 ms: a
/// late packet or an underrun deepens it by one frame at once, and every five
/// calm seconds make it one frame shallower; surplus frames are then skipped,
/// one per half second, to bring the delay down to the depth. When the buffer runs dry (the sender paused, or jitter
/// outran the depth) it waits to refill instead of moving on, because RTP
/// sequence numbers do not advance while a sender is silent.
#[derive(Debug)]
pub struct JitterBuffer {
    slots: Box<[Slot]>,
    max_payload: usize,
    /// Sequence number due at the next pop; `None` before the first packet.
    next: Option<u16>,
    /// Highest sequence number stored so far (in RFC 3550 wrap-around order).
    highest: u16,
    playing: bool,
    /// Whether anything has been played since the stream (re)started:
    /// until then an earlier packet may still become the first one due.
    played_any: bool,
    depth: u16,
    calm_ticks: u32,
    stats: JitterStats,
}

impl JitterBuffer {
    /// A buffer whose slots each hold up to `max_payload` bytes (160 for
    /// 20 ms of G.711 and of G.722, 640 for L16/16000). All memory is
    /// allocated here.
    pub fn new(max_payload: usize) -> Self {
        let slots = (0..JITTER_SLOTS)
            .map(|_| Slot {
                filled: false,
                played: false,
                seq: 0,
                timestamp: 0,
                len: 0,
                data: vec![0; max_payload].into_boxed_slice(),
            })
            .collect();
        JitterBuffer {
            slots,
            max_payload,
            next: None,
            highest: 0,
            playing: false,
            played_any: false,
            depth: START_DEPTH,
            calm_ticks: 0,
            stats: JitterStats::default(),
        }
    }

    /// The current target depth.
    pub fn target_ms(&self) -> u32 {
        u32::from(self.depth) * FRAME_MS
    }

    /// Counters since creation.
    pub fn stats(&self) -> JitterStats {
        self.stats
    }

    /// Takes in one received RTP packet.
    pub fn push(&mut self, seq: u16, timestamp: u32, payload: &[u8]) -> Arrival {
        if payload.len() > self.max_payload {
            return Arrival::TooLarge;
        }
        let Some(next) = self.next else {
            self.next = Some(seq);
            self.highest = seq;
            self.store(seq, timestamp, payload);
            return Arrival::Stored;
        };
        let ahead = seq.wrapping_sub(next) as i16;
        let mut arrival = Arrival::Stored;
        let slot = &self.slots[usize::from(seq) % JITTER_SLOTS];
        let known = slot.seq == seq && (slot.filled || slot.played);
        if (-MAX_MISORDER..0).contains(&ahead) {
            if known {
                self.stats.duplicates += 1;
                return Arrival::Duplicate;
            }
            let span = self.highest.wrapping_sub(seq);
            if self.played_any || usize::from(span) >= JITTER_SLOTS {
                self.stats.late += 1;
                self.deepen();
                return Arrival::Late;
            }
            // Nothing played yet: a packet overtaken in flight simply
            // becomes the first one due.
            self.next = Some(seq);
        } else if !(0..JITTER_SLOTS as i16).contains(&ahead) {
            self.restart(seq);
            arrival = Arrival::Restarted;
        } else if known && slot.filled {
            self.stats.duplicates += 1;
            return Arrival::Duplicate;
        }
        if (seq.wrapping_sub(self.highest) as i16) > 0 {
            self.highest = seq;
        }
        self.store(seq, timestamp, payload);
        arrival
    }

    /// What to play on this tick. Call exactly once per 20 ms.
    pub fn pop(&mut self) -> Playout<'_> {
        let Some(next) = self.next else {
            return Playout::Buffering;
        };
        // Frames from the one due now up to the newest held, gaps included.
        let held = i32::from(self.highest.wrapping_sub(next) as i16) + 1;
        if !self.playing {
            if held < i32::from(self.depth) {
                return Playout::Buffering;
            }
            self.playing = true;
        }
        if held <= 0 {
            // Dry: nothing at or after `next`. Wait for it rather than
            // skipping ahead, and hold more from now on.
            self.stats.underruns += 1;
            self.playing = false;
            self.deepen();
            return Playout::Lost;
        }
        self.calm_ticks = self.calm_ticks.wrapping_add(1);
        if self.calm_ticks.is_multiple_of(CALM_TICKS) && self.depth > MIN_DEPTH {
            self.depth -= 1;
        }
        let mut next = next;
        if self.calm_ticks >= TRIM_AFTER
            && self.calm_ticks.is_multiple_of(TRIM_EVERY)
            && held > i32::from(self.depth)
        {
            self.slots[usize::from(next) % JITTER_SLOTS].filled = false;
            next = next.wrapping_add(1);
            self.stats.trimmed += 1;
        }
        self.next = Some(next.wrapping_add(1));
        let slot = &mut self.slots[usize::from(next) % JITTER_SLOTS];
        if slot.filled && slot.seq == next {
            slot.filled = false;
            slot.played = true;
            self.played_any = true;
            Playout::Packet {
                seq: next,
                timestamp: slot.timestamp,
                payload: &slot.data[..slot.len],
            }
        } else {
            self.stats.lost += 1;
            Playout::Lost
        }
    }

    fn store(&mut self, seq: u16, timestamp: u32, payload: &[u8]) {
        let slot = &mut self.slots[usize::from(seq) % JITTER_SLOTS];
        slot.filled = true;
        slot.played = false;
        slot.seq = seq;
        slot.timestamp = timestamp;
        slot.len = payload.len();
        slot.data[..payload.len()].copy_from_slice(payload);
        self.stats.stored += 1;
    }

    fn deepen(&mut self) {
        self.depth = (self.depth + 1).min(MAX_DEPTH);
        self.calm_ticks = 0;
    }

    fn restart(&mut self, seq: u16) {
        for slot in self.slots.iter_mut() {
            slot.filled = false;
            slot.played = false;
        }
        self.next = Some(seq);
        self.highest = seq;
        self.playing = false;
        self.played_any = false;
        self.stats.restarts += 1;
    }
}

/// Signal helpers shared by the media tests.
#[cfg(test)]
pub(crate) mod signal {
    use std::f64::consts::PI;

    /// `len` samples of a sine at `freq` Hz, amplitude `amp`, starting at
    /// sample index `start` (so consecutive frames join without a click).
    pub fn sine(freq: f64, rate: u32, amp: f64, start: usize, len: usize) -> Vec<i16> {
        (start..start + len)
            .map(|n| (amp * (2.0 * PI * freq * n as f64 / f64::from(rate)).sin()).round() as i16)
            .collect()
    }

    /// Amplitude of the `freq` component of `x` (Goertzel), in sample units:
    /// a full sine of amplitude A at `freq` reads close to A.
    pub fn amplitude(x: &[i16], freq: f64, rate: u32) -> f64 {
        let w = 2.0 * PI * freq / f64::from(rate);
        let coeff = 2.0 * w.cos();
        let (mut s1, mut s2) = (0.0f64, 0.0f64);
        for &v in x {
            let s0 = f64::from(v) + coeff * s1 - s2;
            s2 = s1;
            s1 = s0;
        }
        let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
        2.0 * power.max(0.0).sqrt() / x.len() as f64
    }

    /// Frequency of a steady tone, from the spacing of its rising zero
    /// crossings (interpolated between samples), skipping `skip` samples
    /// at each end to stay clear of fades and filter edges.
    pub fn zero_crossing_freq(x: &[i16], rate: u32, skip: usize) -> f64 {
        let x = &x[skip..x.len() - skip];
        let mut first = None;
        let mut last = 0.0;
        let mut count = 0;
        for i in 1..x.len() {
            let (a, b) = (f64::from(x[i - 1]), f64::from(x[i]));
            if a < 0.0 && b >= 0.0 {
                let at = (i - 1) as f64 + a / (a - b);
                if first.is_none() {
                    first = Some(at);
                } else {
                    count += 1;
                }
                last = at;
            }
        }
        let first = first.expect("the signal has no zero crossing");
        f64::from(rate) * f64::from(count) / (last - first)
    }
}

#[cfg(test)]
mod tests {
    use super::signal::{amplitude, sine};
    use super::*;

    const RATE: SampleRate = SampleRate::Narrowband;
    const AMP: f64 = 6_000.0;
    const SUP: SupervisorId = SupervisorId(7);
    const TICKS: usize = 50;

    /// Output of each party over one second of ticks: caller 440 Hz, agent
    /// 700 Hz and the supervisor 1 kHz, all talking at once.
    struct Heard {
        caller: Vec<i16>,
        agent: Vec<i16>,
        supervisor: Vec<i16>,
        rec_left: Vec<i16>,
        rec_right: Vec<i16>,
    }

    fn talk(mode: Mode) -> Heard {
        let mut mixer = Mixer::new(RATE);
        mixer.attach(SUP, mode).unwrap();
        run(&mut mixer)
    }

    fn run(mixer: &mut Mixer) -> Heard {
        let n = RATE.frame_len();
        let mut heard = Heard {
            caller: vec![],
            agent: vec![],
            supervisor: vec![],
            rec_left: vec![],
            rec_right: vec![],
        };
        for t in 0..TICKS {
            let hz = RATE.hz();
            mixer
                .push(Party::Caller, &sine(440.0, hz, AMP, t * n, n))
                .unwrap();
            mixer
                .push(Party::Agent, &sine(700.0, hz, AMP, t * n, n))
                .unwrap();
            mixer
                .push(Party::Supervisor(SUP), &sine(1000.0, hz, AMP, t * n, n))
                .unwrap();
            mixer.tick();
            heard
                .caller
                .extend_from_slice(mixer.output(Party::Caller).unwrap());
            heard
                .agent
                .extend_from_slice(mixer.output(Party::Agent).unwrap());
            heard
                .supervisor
                .extend_from_slice(mixer.output(Party::Supervisor(SUP)).unwrap());
            let (l, r) = mixer.recording();
            heard.rec_left.extend_from_slice(l);
            heard.rec_right.extend_from_slice(r);
        }
        heard
    }

    /// Present means at least 90% of the spoken amplitude; absent means
    /// under 1% (leakage between these tones over 1 s is far below that).
    fn has(x: &[i16], freq: f64) -> bool {
        let a = amplitude(x, freq, RATE.hz());
        assert!(
            !(0.01 * AMP..=0.9 * AMP).contains(&a),
            "{freq} Hz at ambiguous amplitude {a}"
        );
        a > 0.9 * AMP
    }

    #[test]
    fn listen_supervisor_hears_both_and_is_heard_by_none() {
        let h = talk(Mode::Listen);
        assert!(has(&h.supervisor, 440.0) && has(&h.supervisor, 700.0));
        assert!(
            !has(&h.supervisor, 1000.0),
            "a supervisor never hears itself"
        );
        assert!(!has(&h.caller, 1000.0) && !has(&h.agent, 1000.0));
        assert!(has(&h.caller, 700.0) && !has(&h.caller, 440.0));
        assert!(has(&h.agent, 440.0) && !has(&h.agent, 700.0));
    }

    #[test]
    fn whisper_reaches_the_agent_only() {
        let h = talk(Mode::Whisper);
        assert!(has(&h.agent, 1000.0) && has(&h.agent, 440.0));
        assert!(!has(&h.caller, 1000.0));
        assert!(has(&h.supervisor, 440.0) && has(&h.supervisor, 700.0));
        assert!(!has(&h.supervisor, 1000.0));
        assert!(
            !has(&h.rec_right, 1000.0),
            "whispers stay out of the recording"
        );
    }

    #[test]
    fn barge_reaches_both_parties_and_the_recording() {
        let h = talk(Mode::Barge);
        assert!(has(&h.caller, 1000.0) && has(&h.caller, 700.0));
        assert!(has(&h.agent, 1000.0) && has(&h.agent, 440.0));
        assert!(!has(&h.supervisor, 1000.0));
        assert!(has(&h.rec_right, 1000.0) && has(&h.rec_right, 700.0));
        assert!(has(&h.rec_left, 440.0) && !has(&h.rec_left, 1000.0));
    }

    #[test]
    fn switching_modes_takes_effect_on_the_next_tick() {
        let mut mixer = Mixer::new(RATE);
        mixer.attach(SUP, Mode::Listen).unwrap();
        assert!(!has(&run(&mut mixer).agent, 1000.0));
        mixer.set_mode(SUP, Mode::Whisper).unwrap();
        let h = run(&mut mixer);
        assert!(has(&h.agent, 1000.0) && !has(&h.caller, 1000.0));
        mixer.set_mode(SUP, Mode::Barge).unwrap();
        assert!(has(&run(&mut mixer).caller, 1000.0));
        mixer.set_mode(SUP, Mode::Listen).unwrap();
        let h = run(&mut mixer);
        assert!(!has(&h.caller, 1000.0) && !has(&h.agent, 1000.0));
        mixer.detach(SUP).unwrap();
        assert_eq!(mixer.output(Party::Supervisor(SUP)), None);
        assert_eq!(
            mixer.set_mode(SUP, Mode::Barge),
            Err(MixerError::UnknownSupervisor(SUP))
        );
    }

    #[test]
    fn two_supervisors_hear_each_other_only_when_speaking_into_the_call() {
        let (a, b) = (SupervisorId(1), SupervisorId(2));
        let mut mixer = Mixer::new(RATE);
        mixer.attach(a, Mode::Barge).unwrap();
        mixer.attach(b, Mode::Listen).unwrap();
        assert_eq!(
            mixer.attach(a, Mode::Listen),
            Err(MixerError::AlreadyAttached(a))
        );
        let n = RATE.frame_len();
        let mut heard_by_b = vec![];
        let mut heard_by_a = vec![];
        for t in 0..TICKS {
            mixer
                .push(
                    Party::Supervisor(a),
                    &sine(1000.0, RATE.hz(), AMP, t * n, n),
                )
                .unwrap();
            mixer
                .push(
                    Party::Supervisor(b),
                    &sine(1300.0, RATE.hz(), AMP, t * n, n),
                )
                .unwrap();
            mixer.tick();
            heard_by_b.extend_from_slice(mixer.output(Party::Supervisor(b)).unwrap());
            heard_by_a.extend_from_slice(mixer.output(Party::Supervisor(a)).unwrap());
        }
        assert!(has(&heard_by_b, 1000.0) && !has(&heard_by_b, 1300.0));
        assert!(!has(&heard_by_a, 1000.0) && !has(&heard_by_a, 1300.0));
    }

    #[test]
    fn addition_saturates_instead_of_wrapping() {
        let mut mixer = Mixer::new(RATE);
        mixer.attach(SUP, Mode::Barge).unwrap();
        let loud = vec![30_000i16; RATE.frame_len()];
        let quiet_neg = vec![-30_000i16; RATE.frame_len()];
        mixer.push(Party::Agent, &loud).unwrap();
        mixer.push(Party::Supervisor(SUP), &loud).unwrap();
        mixer.push(Party::Caller, &quiet_neg).unwrap();
        mixer.tick();
        assert!(mixer
            .output(Party::Caller)
            .unwrap()
            .iter()
            .all(|&x| x == i16::MAX));
        // The agent hears -30000 + 30000: exact, no clipping on the way.
        assert!(mixer.output(Party::Agent).unwrap().iter().all(|&x| x == 0));
    }

    #[test]
    fn a_missing_frame_is_repeated_once_then_silence() {
        let mut mixer = Mixer::new(RATE);
        let frame = sine(700.0, RATE.hz(), AMP, 0, RATE.frame_len());
        mixer.push(Party::Agent, &frame).unwrap();
        mixer.tick();
        assert_eq!(mixer.output(Party::Caller).unwrap(), &frame[..]);
        mixer.tick();
        assert_eq!(mixer.input_state(Party::Agent), Some(InputState::Repeated));
        assert_eq!(mixer.output(Party::Caller).unwrap(), &frame[..]);
        mixer.tick();
        assert_eq!(mixer.input_state(Party::Agent), Some(InputState::Silent));
        assert!(mixer.output(Party::Caller).unwrap().iter().all(|&x| x == 0));
        mixer.push(Party::Agent, &frame).unwrap();
        mixer.tick();
        assert_eq!(mixer.input_state(Party::Agent), Some(InputState::Live));
    }

    #[test]
    fn wrong_frame_length_is_refused_with_the_expected_size() {
        let mut mixer = Mixer::new(SampleRate::Wideband);
        let err = mixer.push(Party::Caller, &[0; 160]).unwrap_err();
        assert_eq!(
            err,
            MixerError::FrameLength {
                got: 160,
                want: 320,
                rate: SampleRate::Wideband
            }
        );
        assert!(err.to_string().contains("320"));
    }

    // --- jitter buffer ---

    fn pkt(seq: u16) -> [u8; 4] {
        seq.to_be_bytes().repeat(2).try_into().unwrap()
    }

    /// Drains one pop into a compact form: Some(seq) played, None lost, and
    /// u32::MAX for buffering.
    fn pop(jb: &mut JitterBuffer) -> Option<u32> {
        match jb.pop() {
            Playout::Packet { seq, payload, .. } => {
                assert_eq!(payload, &pkt(seq)[..], "payload belongs to its packet");
                Some(u32::from(seq))
            }
            Playout::Lost => None,
            Playout::Buffering => Some(u32::MAX),
        }
    }

    #[test]
    fn jitter_buffer_plays_in_order_after_reaching_its_depth() {
        let mut jb = JitterBuffer::new(160);
        assert_eq!(jb.target_ms(), 40);
        jb.push(100, 0, &pkt(100));
        assert_eq!(pop(&mut jb), Some(u32::MAX), "one frame is below 40 ms");
        jb.push(101, 160, &pkt(101));
        assert_eq!(pop(&mut jb), Some(100));
        for seq in 102..110u16 {
            jb.push(seq, 0, &pkt(seq));
            assert_eq!(pop(&mut jb), Some(u32::from(seq) - 1));
        }
    }

    #[test]
    fn jitter_buffer_reorders() {
        let mut jb = JitterBuffer::new(160);
        let mut played = vec![];
        // Pairs swapped in flight: 1 0 3 2 5 4 ...
        for pair in 0..10u16 {
            for seq in [pair * 2 + 1, pair * 2] {
                jb.push(seq, 0, &pkt(seq));
            }
            played.extend([pop(&mut jb), pop(&mut jb)]);
        }
        let expected: Vec<_> = (0..20).map(Some).collect();
        assert_eq!(played, expected);
        assert_eq!(jb.stats().late, 0);
    }

    #[test]
    fn jitter_buffer_reports_loss_and_drops_duplicates() {
        let mut jb = JitterBuffer::new(160);
        let mut played = vec![];
        for seq in 0..8u16 {
            if seq == 3 {
                continue; // lost in the network
            }
            assert_eq!(jb.push(seq, 0, &pkt(seq)), Arrival::Stored);
            if seq == 5 {
                assert_eq!(jb.push(seq, 0, &pkt(seq)), Arrival::Duplicate);
            }
            played.push(pop(&mut jb));
        }
        played.extend([pop(&mut jb), pop(&mut jb)]);
        assert_eq!(played.first(), Some(&Some(u32::MAX)));
        assert_eq!(
            &played[1..],
            &[
                Some(0),
                Some(1),
                Some(2),
                None,
                Some(4),
                Some(5),
                Some(6),
                Some(7)
            ]
        );
        let s = jb.stats();
        assert_eq!((s.lost, s.duplicates, s.late), (1, 1, 0));
    }

    #[test]
    fn a_late_packet_is_dropped_and_deepens_the_buffer() {
        let mut jb = JitterBuffer::new(160);
        jb.push(0, 0, &pkt(0));
        jb.push(1, 0, &pkt(1));
        jb.push(3, 0, &pkt(3));
        assert_eq!(pop(&mut jb), Some(0));
        assert_eq!(pop(&mut jb), Some(1));
        assert_eq!(pop(&mut jb), None, "2 has not come");
        assert_eq!(jb.push(2, 0, &pkt(2)), Arrival::Late);
        assert_eq!(jb.target_ms(), 60);
        assert_eq!(pop(&mut jb), Some(3));
    }

    #[test]
    fn depth_stays_between_20_and_100_ms() {
        let mut jb = JitterBuffer::new(160);
        // Each round one packet is held up in the network until after its
        // turn: the depth climbs, but not past 100 ms.
        let mut seq = 0u16;
        for _ in 0..20 {
            for s in seq + 1..seq + 6 {
                jb.push(s, 0, &pkt(s));
            }
            for _ in 0..6 {
                jb.pop();
            }
            assert_eq!(jb.push(seq, 0, &pkt(seq)), Arrival::Late);
            seq += 6;
        }
        assert_eq!(jb.target_ms(), 100);
        assert_eq!(jb.stats().late, 20);
        // A steady stream for a minute: back down to 20 ms.
        let mut jb = JitterBuffer::new(160);
        for seq in 0..3000u16 {
            jb.push(seq, 0, &pkt(seq));
            jb.pop();
        }
        assert_eq!(jb.target_ms(), 20);
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn extra_delay_is_trimmed_once_jitter_calms() {
        let mut jb = JitterBuffer::new(160);
        // A burst of 5 at once, then a steady flow: 4 frames are held.
        for seq in 0..5u16 {
            jb.push(seq, 0, &pkt(seq));
        }
        let mut seq = 5u16;
        let mut last = 0;
        for _ in 0..600 {
            jb.push(seq, 0, &pkt(seq));
            if let Some(s) = pop(&mut jb) {
                last = s;
            }
            seq += 1;
        }
        assert!(jb.stats().trimmed >= 2, "{:?}", jb.stats());
        let lag = u32::from(seq) - 1 - last;
        assert!(lag <= 1, "still {lag} frames behind");
        assert_eq!(jb.stats().lost, 0);
    }

    #[test]
    fn a_sender_pause_rebuffers_without_losing_sequence() {
        let mut jb = JitterBuffer::new(160);
        for seq in 0..10u16 {
            jb.push(seq, 0, &pkt(seq));
            jb.pop();
        }
        // The sender goes quiet for a second (sequence numbers pause too).
        for _ in 0..50 {
            jb.pop();
        }
        let mut played = vec![];
        for seq in 10..20u16 {
            assert_eq!(
                jb.push(seq, 0, &pkt(seq)),
                Arrival::Stored,
                "{seq} not late"
            );
            played.push(pop(&mut jb));
        }
        let played: Vec<_> = played
            .into_iter()
            .flatten()
            .filter(|&s| s != u32::MAX)
            .collect();
        assert_eq!(played, (10..played.len() as u32 + 10).collect::<Vec<_>>());
    }

    #[test]
    fn sequence_wrap_and_stream_restart() {
        let mut jb = JitterBuffer::new(160);
        let seqs = [65533u16, 65534, 65535, 0, 1, 2];
        let mut played = vec![];
        for seq in seqs {
            jb.push(seq, 0, &pkt(seq));
            played.push(pop(&mut jb));
        }
        assert_eq!(
            &played[1..],
            &[Some(65533), Some(65534), Some(65535), Some(0), Some(1)]
        );
        assert_eq!(jb.push(40_000, 0, &pkt(40_000)), Arrival::Restarted);
        jb.push(40_001, 0, &pkt(40_001));
        assert_eq!(pop(&mut jb), Some(40_000));
        assert_eq!(jb.push(9, 0, &[0; 161]), Arrival::TooLarge);
    }
}
