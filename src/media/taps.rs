//! The mixing side of a bridge: recording, supervisor taps and transcoding.
//!
//! A plain same-codec bridge forwards packets (see [`relay`](super::relay)).
//! When a call needs more — a recording, a supervisor, or legs that speak
//! different codecs — the relay hands every received RTP packet to a [`Taps`]
//! and ticks it every 20 ms. [`Taps`] is sans-IO: packets in, packets out
//! through a callback, no sockets, clocks or tasks.
//!
//! Per tick each party's [jitter buffer](super::mixer::JitterBuffer) gives one
//! payload, which is decoded, brought to the call's rate and pushed into the
//! [`Mixer`]; the recorder gets the mixer's two recording channels; and every
//! party whose output [`is mixed`](Taps::mixes_output) gets one freshly
//! encoded packet. Only the outputs that need it are mixed: a recorded call
//! with a listening supervisor still forwards the caller's and agent's packets
//! untouched, and only the supervisor's stream is encoded.
//!
//! Nothing is allocated per packet or per tick; every buffer is sized when a
//! party is set up.

use std::time::Instant;

use super::codec::{Codec, Decoder, Downsampler, Encoder, Upsampler};
use super::dtmf::DtmfDetector;
use super::mixer::{JitterBuffer, Mixer, Mode, Party, Playout, SampleRate, SupervisorId};
use super::recorder::Tape;

/// What one leg negotiated: its voice codec and its `telephone-event`
/// payload type, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LegFormat {
    pub codec: Codec,
    pub event_pt: Option<u8>,
}

/// A party of a tapped call. The caller is the relay's side A, the agent
/// side B.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Who {
    Caller,
    Agent,
    Supervisor,
}

/// The one supervisor a call can have at a time.
const SUPERVISOR: SupervisorId = SupervisorId(1);
/// Largest payload we decode: 20 ms of G.711 or G.722 is 160 bytes; room for
/// up to 60 ms packets from a peer that ignores our ptime.
const MAX_PAYLOAD: usize = 480;
/// RTP fixed header.
const HEADER: usize = 12;

/// One party's codec state and buffers.
struct Leg {
    format: LegFormat,
    decoder: Decoder,
    encoder: Encoder,
    jitter: JitterBuffer,
    up: Upsampler,
    down: Downsampler,
    /// A frame at the codec's rate, about to be encoded.
    codec_pcm: Vec<i16>,
    /// Decoded audio not yet mixed (room for a 60 ms packet on top of a frame),
    /// and how much of it is filled.
    fifo: Vec<i16>,
    queued: usize,
    /// The same frame at the call's rate.
    call_pcm: Vec<i16>,
    /// The packet we send this party when its output is mixed.
    packet: Vec<u8>,
    seq: u16,
    timestamp: u32,
    ssrc: u32,
    /// Only on the supervisor's leg (its 4, 5, 6); the relay detects the caller's and
    /// the agent's keys whether or not it mixes.
    keys: Option<DtmfDetector>,
}

impl Leg {
    fn new(format: LegFormat, rate: SampleRate) -> Leg {
        let codec = format.codec;
        Leg {
            format,
            decoder: Decoder::new(codec),
            encoder: Encoder::new(codec),
            jitter: JitterBuffer::new(MAX_PAYLOAD),
            up: Upsampler::new(),
            down: Downsampler::new(),
            codec_pcm: vec![0; codec.samples_per_frame()],
            fifo: vec![0; codec.samples_for_ms(80)],
            queued: 0,
            call_pcm: vec![0; rate.frame_len()],
            packet: vec![0; HEADER + codec.payload_len(codec.samples_per_frame())],
            seq: rand::random(),
            timestamp: rand::random(),
            ssrc: rand::random(),
            keys: None,
        }
    }

    /// Takes in one RTP packet from this party (already checked to be RTP).
    fn receive(&mut self, pkt: &[u8], now: Instant) {
        let Some(crate::media::rtp::Rtp {
            payload_type: pt,
            marker,
            seq,
            timestamp: ts,
            ssrc,
            payload,
        }) = crate::media::rtp::parse(pkt)
        else {
            return;
        };
        if Some(pt) == self.format.event_pt {
            if let Some(keys) = &mut self.keys {
                let _ = keys.on_telephone_event(now, ssrc, ts, marker, payload);
            }
        } else if pt == self.format.codec.payload_type() {
            self.jitter.push(seq, ts, payload);
        }
    }

    /// Decodes this tick's frame into `call_pcm`; false when there is none
    /// (buffering or lost). Packets of any ptime from 10 to 60 ms are decoded into
    /// a FIFO and a tick takes 20 ms of it, so a 30 ms trunk mixes like a 20 ms phone.
    fn decode_frame(&mut self, rate: SampleRate) -> bool {
        let codec = self.format.codec;
        let want = codec.samples_per_frame();
        while self.queued < want {
            let Playout::Packet { payload, .. } = self.jitter.pop() else {
                break;
            };
            match self.decoder.decode(payload, &mut self.fifo[self.queued..]) {
                Ok(n) => self.queued += n,
                // Longer than 60 ms, or corrupt: dropped.
                Err(_) => break,
            }
        }
        if self.queued < want {
            return false;
        }
        let ok = convert(
            &self.fifo[..want],
            codec.sample_rate(),
            &mut self.call_pcm,
            rate.hz(),
            &mut self.up,
            &mut self.down,
        );
        self.fifo.copy_within(want..self.queued, 0);
        self.queued -= want;
        ok
    }

    /// Encodes `pcm` (at the call's rate) into `self.packet`; returns the
    /// packet length.
    fn encode_frame(&mut self, pcm: &[i16], rate: SampleRate) -> Option<usize> {
        let codec = self.format.codec;
        let want = codec.samples_per_frame();
        let (up, down) = (&mut self.up, &mut self.down);
        if !convert(
            pcm,
            rate.hz(),
            &mut self.codec_pcm[..want],
            codec.sample_rate(),
            up,
            down,
        ) {
            return None;
        }
        let len = self
            .encoder
            .encode(&self.codec_pcm[..want], &mut self.packet[HEADER..])
            .ok()?;
        let p = &mut self.packet;
        p[0] = 0x80;
        p[1] = codec.payload_type();
        p[2..4].copy_from_slice(&self.seq.to_be_bytes());
        p[4..8].copy_from_slice(&self.timestamp.to_be_bytes());
        p[8..12].copy_from_slice(&self.ssrc.to_be_bytes());
        self.seq = self.seq.wrapping_add(1);
        self.timestamp = self.timestamp.wrapping_add(codec.timestamp_increment(len));
        Some(HEADER + len)
    }
}

/// Copies a frame between rates (equal, or 8 ↔ 16 kHz).
fn convert(
    from: &[i16],
    from_hz: u32,
    to: &mut [i16],
    to_hz: u32,
    up: &mut Upsampler,
    down: &mut Downsampler,
) -> bool {
    if from_hz == to_hz && from.len() == to.len() {
        to.copy_from_slice(from);
        true
    } else if from_hz * 2 == to_hz {
        up.process(from, to).is_ok_and(|n| n == to.len())
    } else if from_hz == to_hz * 2 {
        down.process(from, to).is_ok_and(|n| n == to.len())
    } else {
        false
    }
}

/// Something a tapped call reports to its owner. (The caller's and agent's
/// keys are the relay's to detect: it sees them whether or not it mixes.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TapEvent {
    /// The supervisor switched mode with a key (4 listen, 5 whisper, 6 barge).
    SupervisorMode(Mode),
}

/// The mixing state of one call. See the module docs.
pub struct Taps {
    rate: SampleRate,
    mixer: Mixer,
    caller: Leg,
    agent: Leg,
    supervisor: Option<Leg>,
    recorder: Option<Tape>,
}

impl Taps {
    /// Taps for a call whose caller and agent legs speak `caller` and `agent`.
    /// The call's rate is the wider of the two.
    pub fn new(caller: LegFormat, agent: LegFormat) -> Taps {
        let wide = caller.codec.sample_rate().max(agent.codec.sample_rate());
        let rate = SampleRate::from_hz(wide).unwrap_or(SampleRate::Narrowband);
        Taps {
            rate,
            mixer: Mixer::new(rate),
            caller: Leg::new(caller, rate),
            agent: Leg::new(agent, rate),
            supervisor: None,
            recorder: None,
        }
    }

    /// The call's PCM rate (what a recording is written at).
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Whether the taps have anything to do; without a recording, a
    /// supervisor or a codec difference the relay can drop them and forward.
    pub fn needed(&self) -> bool {
        self.recorder.is_some() || self.supervisor.is_some() || self.transcoding()
    }

    fn transcoding(&self) -> bool {
        self.caller.format.codec != self.agent.format.codec
    }

    /// Whether `who`'s output is produced here (so the relay must not also
    /// forward the other party's packets to it).
    pub fn mixes_output(&self, who: Who) -> bool {
        let mode = self.mixer.mode(SUPERVISOR);
        match who {
            Who::Caller => self.transcoding() || mode == Some(Mode::Barge),
            Who::Agent => self.transcoding() || matches!(mode, Some(Mode::Barge | Mode::Whisper)),
            Who::Supervisor => self.supervisor.is_some(),
        }
    }

    /// Starts writing `recorder` (opened at [`rate`](Self::rate)); returns a
    /// recording already running, which the caller should finish.
    pub fn record(&mut self, recorder: Tape) -> Option<Tape> {
        self.recorder.replace(recorder)
    }

    /// Pauses (`true`) or resumes the recording, if there is one.
    pub fn pause_recording(&mut self, pause: bool) {
        if let Some(r) = &mut self.recorder {
            if pause {
                r.pause();
            } else {
                r.resume();
            }
        }
    }

    /// Whether a recording runs, and whether it is paused.
    pub fn recording(&self) -> Option<bool> {
        self.recorder.as_ref().map(Tape::is_paused)
    }

    /// Ends the recording, for the caller to finish off the packet path.
    pub fn take_recording(&mut self) -> Option<Tape> {
        self.recorder.take()
    }

    /// Attaches the supervisor, replacing any other.
    pub fn attach_supervisor(&mut self, format: LegFormat, mode: Mode) {
        let _ = self.mixer.detach(SUPERVISOR);
        let _ = self.mixer.attach(SUPERVISOR, mode);
        let mut leg = Leg::new(format, self.rate);
        leg.keys = Some(DtmfDetector::new(8000, false));
        self.supervisor = Some(leg);
    }

    pub fn detach_supervisor(&mut self) {
        let _ = self.mixer.detach(SUPERVISOR);
        self.supervisor = None;
    }

    /// The supervisor's mode, if one is attached.
    pub fn supervisor_mode(&self) -> Option<Mode> {
        self.mixer.mode(SUPERVISOR)
    }

    pub fn set_supervisor_mode(&mut self, mode: Mode) {
        let _ = self.mixer.set_mode(SUPERVISOR, mode);
    }

    /// Takes in one RTP packet received from `who`.
    pub fn receive(&mut self, who: Who, pkt: &[u8], now: Instant) {
        if let Some(leg) = self.leg_mut(who) {
            leg.receive(pkt, now);
        }
    }

    /// The supervisor's mode switch since the last call, if any: its 4, 5
    /// and 6 (RFC 4733) switch the mode here.
    pub fn poll_event(&mut self) -> Option<TapEvent> {
        let leg = self.supervisor.as_mut()?;
        while let Some(d) = leg.keys.as_mut().and_then(DtmfDetector::poll) {
            let mode = match d.digit.key.as_char() {
                '4' => Mode::Listen,
                '5' => Mode::Whisper,
                '6' => Mode::Barge,
                _ => continue,
            };
            self.set_supervisor_mode(mode);
            return Some(TapEvent::SupervisorMode(mode));
        }
        None
    }

    /// Mixes one 20 ms tick: records it, and hands `send` one packet for
    /// every party whose output is mixed. A recording that fails to write
    /// is stopped and returned as the error.
    pub fn tick(&mut self, mut send: impl FnMut(Who, &[u8])) -> Result<(), (Tape, std::io::Error)> {
        let rate = self.rate;
        for (who, leg) in [
            (Party::Caller, Some(&mut self.caller)),
            (Party::Agent, Some(&mut self.agent)),
            (Party::Supervisor(SUPERVISOR), self.supervisor.as_mut()),
        ] {
            if let Some(leg) = leg {
                if leg.decode_frame(rate) {
                    let _ = self.mixer.push(who, &leg.call_pcm);
                }
            }
        }
        self.mixer.tick();

        for who in [Who::Caller, Who::Agent, Who::Supervisor] {
            if !self.mixes_output(who) {
                continue;
            }
            let party = match who {
                Who::Caller => Party::Caller,
                Who::Agent => Party::Agent,
                Who::Supervisor => Party::Supervisor(SUPERVISOR),
            };
            let Some(out) = self.mixer.output(party) else {
                continue;
            };
            let leg = match who {
                Who::Caller => Some(&mut self.caller),
                Who::Agent => Some(&mut self.agent),
                Who::Supervisor => self.supervisor.as_mut(),
            };
            if let Some(leg) = leg {
                if let Some(len) = leg.encode_frame(out, rate) {
                    send(who, &leg.packet[..len]);
                }
            }
        }

        if let Some(rec) = &mut self.recorder {
            let (left, right) = self.mixer.recording();
            if let Err(e) = rec.write(left, right) {
                let rec = self.recorder.take().expect("just written to");
                return Err((rec, e));
            }
        }
        Ok(())
    }

    fn leg_mut(&mut self, who: Who) -> Option<&mut Leg> {
        match who {
            Who::Caller => Some(&mut self.caller),
            Who::Agent => Some(&mut self.agent),
            Who::Supervisor => self.supervisor.as_mut(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::codec::Encoder;
    use crate::media::mixer::signal::{amplitude, sine};

    const PCMU: LegFormat = LegFormat {
        codec: Codec::Pcmu,
        event_pt: Some(101),
    };
    const G722: LegFormat = LegFormat {
        codec: Codec::G722,
        event_pt: Some(101),
    };

    /// A tone source: 20 ms RTP packets of `freq` Hz in `codec`.
    struct Tone {
        freq: f64,
        codec: Codec,
        enc: Encoder,
        n: usize,
        ptime: usize,
    }

    impl Tone {
        fn new(freq: f64, codec: Codec) -> Tone {
            Tone::with_ptime(freq, codec, 20)
        }

        fn with_ptime(freq: f64, codec: Codec, ptime: usize) -> Tone {
            Tone {
                freq,
                codec,
                enc: Encoder::new(codec),
                n: 0,
                ptime,
            }
        }

        fn packet(&mut self) -> Vec<u8> {
            let rate = self.codec.sample_rate();
            let len = self.codec.samples_for_ms(self.ptime);
            let pcm = sine(self.freq, rate, 8000.0, self.n * len, len);
            let mut payload = vec![0u8; 960];
            let bytes = self.enc.encode(&pcm, &mut payload).unwrap();
            let mut p = vec![0x80, self.codec.payload_type()];
            p.extend_from_slice(&(self.n as u16).to_be_bytes());
            p.extend_from_slice(&((self.n * self.ptime * 8) as u32).to_be_bytes());
            p.extend_from_slice(&0x1234u32.to_be_bytes());
            p.extend_from_slice(&payload[..bytes]);
            self.n += 1;
            p
        }
    }

    /// Runs `ticks` ticks with each source sending one packet per tick;
    /// returns the decoded audio each party was sent (at its codec's rate).
    fn run(
        taps: &mut Taps,
        sources: &mut [(Who, Tone)],
        formats: [(Who, Codec); 3],
        ticks: usize,
    ) -> [Vec<i16>; 3] {
        let now = Instant::now();
        let mut heard: [Vec<i16>; 3] = Default::default();
        let mut decoders = formats.map(|(_, c)| Decoder::new(c));
        for _ in 0..ticks {
            for (who, tone) in sources.iter_mut() {
                taps.receive(*who, &tone.packet(), now);
            }
            taps.tick(|who, pkt| {
                let i = who as usize;
                let mut pcm = [0i16; 320];
                let n = decoders[i].decode(&pkt[HEADER..], &mut pcm).unwrap();
                heard[i].extend_from_slice(&pcm[..n]);
            })
            .unwrap();
        }
        heard
    }

    fn level(x: &[i16], freq: f64, rate: u32) -> f64 {
        // Skip the jitter buffer's start-up and the codec's settling.
        amplitude(&x[x.len() / 4..], freq, rate)
    }

    #[test]
    fn a_plain_same_codec_call_needs_no_taps() {
        let taps = Taps::new(PCMU, PCMU);
        assert!(!taps.needed());
        assert!(!taps.mixes_output(Who::Caller));
        assert!(!taps.mixes_output(Who::Agent));
    }

    #[test]
    fn listen_mixes_only_the_supervisor_and_it_hears_both() {
        let mut taps = Taps::new(PCMU, PCMU);
        taps.attach_supervisor(PCMU, Mode::Listen);
        assert!(!taps.mixes_output(Who::Caller));
        assert!(!taps.mixes_output(Who::Agent));
        let mut sources = [
            (Who::Caller, Tone::new(440.0, Codec::Pcmu)),
            (Who::Agent, Tone::new(700.0, Codec::Pcmu)),
            (Who::Supervisor, Tone::new(1000.0, Codec::Pcmu)),
        ];
        let fmts = [
            (Who::Caller, Codec::Pcmu),
            (Who::Agent, Codec::Pcmu),
            (Who::Supervisor, Codec::Pcmu),
        ];
        let heard = run(&mut taps, &mut sources, fmts, 50);
        assert!(heard[0].is_empty() && heard[1].is_empty());
        let sup = &heard[2];
        assert!(
            level(sup, 440.0, 8000) > 2000.0,
            "{}",
            level(sup, 440.0, 8000)
        );
        assert!(level(sup, 700.0, 8000) > 2000.0);
        assert!(level(sup, 1000.0, 8000) < 200.0, "nobody hears themselves");
    }

    #[test]
    fn whisper_reaches_the_agent_only_and_barge_both() {
        let mut taps = Taps::new(PCMU, PCMU);
        taps.attach_supervisor(PCMU, Mode::Whisper);
        assert!(!taps.mixes_output(Who::Caller));
        assert!(taps.mixes_output(Who::Agent));
        let mut sources = [
            (Who::Caller, Tone::new(440.0, Codec::Pcmu)),
            (Who::Agent, Tone::new(700.0, Codec::Pcmu)),
            (Who::Supervisor, Tone::new(1000.0, Codec::Pcmu)),
        ];
        let fmts = [
            (Who::Caller, Codec::Pcmu),
            (Who::Agent, Codec::Pcmu),
            (Who::Supervisor, Codec::Pcmu),
        ];
        let heard = run(&mut taps, &mut sources, fmts, 50);
        assert!(heard[0].is_empty(), "the caller's packets are forwarded");
        assert!(level(&heard[1], 1000.0, 8000) > 2000.0);
        assert!(level(&heard[1], 440.0, 8000) > 2000.0);
        assert!(level(&heard[1], 700.0, 8000) < 200.0);

        taps.set_supervisor_mode(Mode::Barge);
        assert!(taps.mixes_output(Who::Caller));
        let heard = run(&mut taps, &mut sources, fmts, 50);
        assert!(level(&heard[0], 1000.0, 8000) > 2000.0);
        assert!(level(&heard[0], 700.0, 8000) > 2000.0);
        assert!(level(&heard[0], 440.0, 8000) < 200.0);
    }

    #[test]
    fn different_codecs_are_transcoded_both_ways() {
        let mut taps = Taps::new(PCMU, G722);
        assert!(taps.needed());
        assert_eq!(taps.rate(), SampleRate::Wideband);
        let mut sources = [
            (Who::Caller, Tone::new(440.0, Codec::Pcmu)),
            (Who::Agent, Tone::new(700.0, Codec::G722)),
        ];
        let fmts = [
            (Who::Caller, Codec::Pcmu),
            (Who::Agent, Codec::G722),
            (Who::Supervisor, Codec::Pcmu),
        ];
        let heard = run(&mut taps, &mut sources, fmts, 50);
        assert_eq!(heard[0].len(), 50 * 160);
        assert_eq!(heard[1].len(), 50 * 320);
        assert!(level(&heard[0], 700.0, 8000) > 2000.0);
        assert!(level(&heard[1], 440.0, 16000) > 2000.0);
    }

    #[tokio::test]
    async fn the_recording_has_the_caller_left_and_the_agent_right_and_pauses_to_silence() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.wav");
        let mut taps = Taps::new(PCMU, PCMU);
        let writer =
            crate::media::recorder::RecordingWriter::start(std::time::Duration::from_secs(5))
                .unwrap();
        taps.record(writer.call(path.clone(), taps.rate()));
        let mut sources = [
            (Who::Caller, Tone::new(440.0, Codec::Pcmu)),
            (Who::Agent, Tone::new(700.0, Codec::Pcmu)),
        ];
        let fmts = [
            (Who::Caller, Codec::Pcmu),
            (Who::Agent, Codec::Pcmu),
            (Who::Supervisor, Codec::Pcmu),
        ];
        run(&mut taps, &mut sources, fmts, 50);
        taps.pause_recording(true);
        run(&mut taps, &mut sources, fmts, 25);
        let rec = taps.take_recording().unwrap().finish().await.unwrap();
        assert_eq!(rec.duration.as_millis(), 75 * 20);

        let mut wav = hound::WavReader::open(&path).unwrap();
        let samples: Vec<i16> = wav.samples::<i16>().map(Result::unwrap).collect();
        let left: Vec<i16> = samples.iter().step_by(2).copied().collect();
        let right: Vec<i16> = samples.iter().skip(1).step_by(2).copied().collect();
        let (talk, paused) = (50 * 160, 25 * 160);
        assert!(level(&left[..talk], 440.0, 8000) > 2000.0);
        assert!(level(&left[..talk], 700.0, 8000) < 200.0);
        assert!(level(&right[..talk], 700.0, 8000) > 2000.0);
        assert!(left[talk..talk + paused].iter().all(|&s| s == 0));
        assert!(right[talk..].iter().all(|&s| s == 0));
    }

    #[test]
    fn packets_of_10_and_30_ms_are_mixed_like_20_ms_ones() {
        for ptime in [10usize, 30] {
            let mut taps = Taps::new(PCMU, PCMU);
            taps.attach_supervisor(PCMU, Mode::Listen);
            let mut caller = Tone::with_ptime(440.0, Codec::Pcmu, ptime);
            let mut agent = Tone::new(700.0, Codec::Pcmu);
            let mut dec = Decoder::new(Codec::Pcmu);
            let mut heard = Vec::new();
            let now = Instant::now();
            // 3 s, with the caller's packets sent as their own clock says.
            for tick in 0..150usize {
                while caller.n * ptime < (tick + 1) * 20 {
                    taps.receive(Who::Caller, &caller.packet(), now);
                }
                taps.receive(Who::Agent, &agent.packet(), now);
                taps.tick(|who, pkt| {
                    if who == Who::Supervisor {
                        let mut pcm = [0i16; 160];
                        let n = dec.decode(&pkt[HEADER..], &mut pcm).unwrap();
                        heard.extend_from_slice(&pcm[..n]);
                    }
                })
                .unwrap();
            }
            assert_eq!(heard.len(), 150 * 160);
            // Steady after the start: every 20 ms block has the caller's tone in it.
            for block in heard[50 * 160..].chunks(160) {
                assert!(
                    amplitude(block, 440.0, 8000) > 1500.0,
                    "ptime {ptime}: a gap"
                );
            }
        }
    }

    #[test]
    fn supervisor_keys_switch_modes() {
        let mut taps = Taps::new(PCMU, PCMU);
        taps.attach_supervisor(PCMU, Mode::Listen);
        let now = Instant::now();
        // RFC 4733: key 6, end bit set, three copies of the end packet.
        for i in 0..3u16 {
            let mut p = vec![0x80, 101 | if i == 0 { 0x80 } else { 0 }];
            p.extend_from_slice(&(100 + i).to_be_bytes());
            p.extend_from_slice(&8000u32.to_be_bytes());
            p.extend_from_slice(&7u32.to_be_bytes());
            p.extend_from_slice(&[6, 0x80 | 10, 0x03, 0x20]);
            taps.receive(Who::Supervisor, &p, now);
        }
        assert_eq!(
            taps.poll_event(),
            Some(TapEvent::SupervisorMode(Mode::Barge))
        );
        assert_eq!(taps.supervisor_mode(), Some(Mode::Barge));
        assert_eq!(taps.poll_event(), None);
    }
}
