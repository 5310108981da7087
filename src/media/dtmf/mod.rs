//! DTMF: the keys callers press, from whichever path they arrive on.
//!
//! A key press reaches us in one of three ways, depending on the peer:
//!
//! * [`rfc4733`]: `telephone-event` RTP packets (the normal case), optionally
//!   wrapped in RFC 2198 redundancy; also the sender side, for when we press
//!   keys towards a peer;
//! * [`sip_info`]: SIP INFO requests with an `application/dtmf-relay` or
//!   `application/dtmf` body;
//! * [`inband`]: tones in the audio itself (Goertzel detection), for trunks
//!   that offer no `telephone-event`.
//!
//! [`DtmfDetector`] combines them for one leg: it takes whichever sources the
//! leg has and reports each press once, even when two sources see it (a
//! phone that sends RFC 4733 events *and* leaves the tones in the audio).
//!
//! Everything here is sans-IO: callers feed packets, bodies and samples with
//! the current time and drain [`Digit`]s with `poll`; timers are reported by
//! `poll_timeout` and fed back with `on_timeout`. Nothing here may do IO,
//! read the clock, or allocate per packet or per audio frame; the state is
//! fixed-size and built when the leg is set up. Where digits go (IVR,
//! supervisor, the other party) is the call layer's decision, not ours.

pub mod inband;
pub mod rfc4733;
pub mod sip_info;

use std::fmt;
use std::time::{Duration, Instant};

pub use inband::InbandDetector;
pub use rfc4733::{EventPacket, EventTrain, TelephoneEvent, TelephoneEventReceiver};
pub use sip_info::{parse_sip_info, SipInfoError};

/// One of the sixteen DTMF keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Key {
    /// `0`
    Num0,
    /// `1`
    Num1,
    /// `2`
    Num2,
    /// `3`
    Num3,
    /// `4`
    Num4,
    /// `5`
    Num5,
    /// `6`
    Num6,
    /// `7`
    Num7,
    /// `8`
    Num8,
    /// `9`
    Num9,
    /// `*`
    Star,
    /// `#`
    Pound,
    /// `A` (fourth column; rare on phones, used by some signalling)
    A,
    /// `B`
    B,
    /// `C`
    C,
    /// `D`
    D,
}

impl Key {
    /// All keys, in RFC 4733 event-code order (`ALL[code]` has that code).
    pub const ALL: [Key; 16] = [
        Key::Num0,
        Key::Num1,
        Key::Num2,
        Key::Num3,
        Key::Num4,
        Key::Num5,
        Key::Num6,
        Key::Num7,
        Key::Num8,
        Key::Num9,
        Key::Star,
        Key::Pound,
        Key::A,
        Key::B,
        Key::C,
        Key::D,
    ];

    /// The key for an RFC 4733 event code (0–15); other events (flash, fax
    /// and modem tones) are not keys.
    pub const fn from_event(code: u8) -> Option<Key> {
        if code < 16 {
            Some(Key::ALL[code as usize])
        } else {
            None
        }
    }

    /// The RFC 4733 event code.
    pub const fn event(self) -> u8 {
        self as u8
    }

    /// The key printed as `c` (`0`–`9`, `*`, `#`, `A`–`D`, letters in either
    /// case).
    pub const fn from_char(c: char) -> Option<Key> {
        match c {
            '0'..='9' => Some(Key::ALL[c as usize - '0' as usize]),
            '*' => Some(Key::Star),
            '#' => Some(Key::Pound),
            'A'..='D' => Some(Key::ALL[12 + c as usize - 'A' as usize]),
            'a'..='d' => Some(Key::ALL[12 + c as usize - 'a' as usize]),
            _ => None,
        }
    }

    /// The character on the key (upper-case letters).
    pub const fn as_char(self) -> char {
        b"0123456789*#ABCD"[self as usize] as char
    }

    /// The (row, column) tone frequencies in Hz.
    pub const fn frequencies(self) -> (f32, f32) {
        let (row, col) = match self {
            Key::Num1 => (0, 0),
            Key::Num2 => (0, 1),
            Key::Num3 => (0, 2),
            Key::A => (0, 3),
            Key::Num4 => (1, 0),
            Key::Num5 => (1, 1),
            Key::Num6 => (1, 2),
            Key::B => (1, 3),
            Key::Num7 => (2, 0),
            Key::Num8 => (2, 1),
            Key::Num9 => (2, 2),
            Key::C => (2, 3),
            Key::Star => (3, 0),
            Key::Num0 => (3, 1),
            Key::Pound => (3, 2),
            Key::D => (3, 3),
        };
        (inband::ROW_HZ[row], inband::COL_HZ[col])
    }

    /// The key at (row, column) of the keypad.
    const fn at(row: usize, col: usize) -> Key {
        const PAD: [[Key; 4]; 4] = [
            [Key::Num1, Key::Num2, Key::Num3, Key::A],
            [Key::Num4, Key::Num5, Key::Num6, Key::B],
            [Key::Num7, Key::Num8, Key::Num9, Key::C],
            [Key::Star, Key::Num0, Key::Pound, Key::D],
        ];
        PAD[row][col]
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.as_char())
    }
}

/// One key press.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Digit {
    /// The key.
    pub key: Key,
    /// How long it was held, as the source reports it (RFC 4733 duration,
    /// INFO `Duration=`, or measured tone length).
    pub duration: Duration,
}

/// Where a press was seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    /// RFC 4733 `telephone-event` packets.
    TelephoneEvent,
    /// A SIP INFO request.
    SipInfo,
    /// Tones in the audio.
    InBand,
}

/// A press reported by [`DtmfDetector`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DetectedDigit {
    /// The press.
    pub digit: Digit,
    /// The source that reported it first.
    pub source: Source,
}

/// A fixed-capacity FIFO, so that producing digits never allocates. Digits
/// are drained after every input, so a handful of slots is plenty; if a
/// caller never drains, the oldest digit is dropped rather than growing.
#[derive(Debug, Clone)]
struct Queue<T: Copy, const N: usize> {
    items: [Option<T>; N],
    head: usize,
    len: usize,
}

impl<T: Copy, const N: usize> Queue<T, N> {
    const fn new() -> Self {
        Queue {
            items: [None; N],
            head: 0,
            len: 0,
        }
    }

    fn push(&mut self, item: T) {
        if self.len == N {
            self.pop();
        }
        self.items[(self.head + self.len) % N] = Some(item);
        self.len += 1;
    }

    fn pop(&mut self) -> Option<T> {
        if self.len == 0 {
            return None;
        }
        let item = self.items[self.head].take();
        self.head = (self.head + 1) % N;
        self.len -= 1;
        item
    }

    #[cfg(test)]
    fn iter(&self) -> impl Iterator<Item = &T> {
        (0..self.len).filter_map(move |i| self.items[(self.head + i) % N].as_ref())
    }

    /// The newest item that satisfies `pred`.
    fn newest_mut(&mut self, mut pred: impl FnMut(&T) -> bool) -> Option<&mut T> {
        let slot = (0..self.len)
            .rev()
            .map(|i| (self.head + i) % N)
            .find(|&slot| self.items[slot].as_ref().is_some_and(&mut pred))?;
        self.items[slot].as_mut()
    }
}

/// How far apart (beyond overlapping) two sources' sightings of the same key
/// may be and still count as one press. Covers the in-band detector's
/// release delay and SIP INFO arriving by a slower path than RTP.
pub const SAME_PRESS_SLACK: Duration = Duration::from_millis(250);

/// A press already reported, with the sources that have seen it, kept to
/// recognise another source's copy.
#[derive(Debug, Clone, Copy)]
struct Press {
    key: Key,
    /// Bit set of [`Source`]s (by discriminant) that reported this press.
    sources: u8,
    start: Instant,
    end: Instant,
}

impl Source {
    const fn bit(self) -> u8 {
        1 << self as u8
    }
}

/// Sans-IO DTMF detection for one leg: feeds every source the leg has into
/// one stream of presses, each reported once.
///
/// Two sources report the same press at slightly different times (the
/// in-band detector needs a little silence to know a tone ended; an INFO
/// usually arrives at the start of the press, RFC 4733's end at the end). So
/// every report is placed on a time line as the interval the press occupied,
/// and joins an already reported press of the same key whose interval
/// overlaps (± [`SAME_PRESS_SLACK`]) *and which that source has not reported
/// yet*; only reports that join no press are passed on. The second condition
/// keeps quick repeats apart: in "5 5", the second INFO cannot join the
/// first press, which INFO has already reported, so it starts the second
/// press, which RFC 4733's second end then joins.
#[derive(Debug)]
pub struct DtmfDetector {
    telephone_event: TelephoneEventReceiver,
    /// Boxed: most legs (every bridge's key watch) never run it, and inline it was
    /// most of a relay's memory.
    inband: Option<Box<InbandDetector>>,
    recent: Queue<Press, 8>,
    ready: Queue<DetectedDigit, 8>,
}

impl DtmfDetector {
    /// A detector for a leg whose `telephone-event` clock is
    /// `event_clock_rate` (8000 unless SDP says otherwise), with in-band
    /// detection when `inband` (worth its small cost only when the leg
    /// negotiated no `telephone-event`, or the peer is known to mix both).
    pub fn new(event_clock_rate: u32, inband: bool) -> Self {
        DtmfDetector {
            telephone_event: TelephoneEventReceiver::new(event_clock_rate),
            inband: inband.then(|| Box::new(InbandDetector::new())),
            recent: Queue::new(),
            ready: Queue::new(),
        }
    }

    /// Feeds one `telephone-event` RTP packet (its payload and header
    /// fields).
    pub fn on_telephone_event(
        &mut self,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), rfc4733::TelephoneEventError> {
        let result = self
            .telephone_event
            .on_packet(now, ssrc, timestamp, marker, payload);
        self.drain_telephone_events(now);
        result
    }

    /// Feeds one RFC 2198 (`red`) packet; blocks of payload type `event_pt`
    /// are taken as `telephone-event`, others ignored.
    pub fn on_redundant_telephone_event(
        &mut self,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
        event_pt: u8,
    ) -> Result<(), rfc4733::TelephoneEventError> {
        let result = self
            .telephone_event
            .on_red_packet(now, ssrc, timestamp, payload, event_pt);
        self.drain_telephone_events(now);
        result
    }

    /// Feeds the body of a SIP INFO request. An error means the body is not
    /// DTMF we understand; the call layer still answers the INFO (200 for
    /// a known content type, 415 otherwise).
    pub fn on_sip_info(
        &mut self,
        now: Instant,
        content_type: &str,
        body: &[u8],
    ) -> Result<(), SipInfoError> {
        let digit = parse_sip_info(content_type, body)?;
        // INFO is usually sent when the key goes down, sometimes when it
        // comes up: claim both sides of `now`.
        let start = now.checked_sub(digit.duration).unwrap_or(now);
        self.report(digit, Source::SipInfo, start, now + digit.duration);
        Ok(())
    }

    /// Feeds decoded audio received on the leg: 8 kHz linear PCM (a G.722
    /// leg downsamples first). Ignored unless in-band detection is on.
    pub fn on_audio(&mut self, now: Instant, pcm: &[i16]) {
        let Some(inband) = &mut self.inband else {
            return;
        };
        inband.process(pcm);
        while let Some(digit) = self.inband.as_mut().and_then(|d| d.poll()) {
            // The tone ended a little before the detector noticed.
            let end = now.checked_sub(inband::RELEASE_DELAY).unwrap_or(now);
            let start = end.checked_sub(digit.duration).unwrap_or(end);
            self.report(digit, Source::InBand, start, end);
        }
    }

    /// Lets the RFC 4733 receiver close a press whose end packets were all
    /// lost.
    pub fn on_timeout(&mut self, now: Instant) {
        self.telephone_event.on_timeout(now);
        self.drain_telephone_events(now);
    }

    /// When [`on_timeout`](Self::on_timeout) should next be called, if at
    /// all.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.telephone_event.poll_timeout()
    }

    /// The next press, oldest first.
    pub fn poll(&mut self) -> Option<DetectedDigit> {
        self.ready.pop()
    }

    fn drain_telephone_events(&mut self, now: Instant) {
        while let Some(digit) = self.telephone_event.poll() {
            let start = now.checked_sub(digit.duration).unwrap_or(now);
            self.report(digit, Source::TelephoneEvent, start, now);
        }
    }

    fn report(&mut self, digit: Digit, source: Source, start: Instant, end: Instant) {
        // Newest first: a repeat of the key should pair with the latest press.
        let joined = self.recent.newest_mut(|press| {
            press.key == digit.key
                && press.sources & source.bit() == 0
                && start <= press.end + SAME_PRESS_SLACK
                && press.start <= end + SAME_PRESS_SLACK
        });
        if let Some(press) = joined {
            press.sources |= source.bit();
            press.start = press.start.min(start);
            press.end = press.end.max(end);
            return;
        }
        self.recent.push(Press {
            key: digit.key,
            sources: source.bit(),
            start,
            end,
        });
        self.ready.push(DetectedDigit { digit, source });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_map_both_ways() {
        for (code, key) in Key::ALL.iter().enumerate() {
            assert_eq!(Key::from_event(code as u8), Some(*key));
            assert_eq!(key.event() as usize, code);
            assert_eq!(Key::from_char(key.as_char()), Some(*key));
            assert_eq!(
                Key::from_char(key.as_char().to_ascii_lowercase()),
                Some(*key)
            );
            let (row, col) = key.frequencies();
            let r = inband::ROW_HZ.iter().position(|&f| f == row).unwrap();
            let c = inband::COL_HZ.iter().position(|&f| f == col).unwrap();
            assert_eq!(Key::at(r, c), *key);
        }
        assert_eq!(Key::from_event(16), None);
        assert_eq!(Key::from_char('e'), None);
        assert_eq!(Key::Pound.to_string(), "#");
        assert_eq!(Key::Num5.frequencies(), (770.0, 1336.0));
    }

    #[test]
    fn queue_is_fifo_and_bounded() {
        let mut q: Queue<u8, 3> = Queue::new();
        for i in 0..5 {
            q.push(i);
        }
        assert_eq!(q.iter().copied().collect::<Vec<_>>(), [2, 3, 4]);
        assert_eq!(
            (q.pop(), q.pop(), q.pop(), q.pop()),
            (Some(2), Some(3), Some(4), None)
        );
    }

    fn event(key: Key, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event: key.event(),
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    fn drain(detector: &mut DtmfDetector) -> Vec<(Key, Source)> {
        std::iter::from_fn(|| detector.poll())
            .map(|d| (d.digit.key, d.source))
            .collect()
    }

    /// One press seen by RFC 4733, SIP INFO and in-band at once is one
    /// digit; the next press of the same key is another.
    #[test]
    fn one_press_seen_by_every_source_is_reported_once() {
        let t0 = Instant::now();
        let mut detector = DtmfDetector::new(8000, true);
        let mut all = Vec::new();
        for press in 0..2u32 {
            let start = t0 + Duration::from_millis(400 * press as u64);
            let ts = 1000 + press * 4000;
            // INFO at key-down.
            detector
                .on_sip_info(
                    start,
                    "application/dtmf-relay",
                    b"Signal=5\r\nDuration=100\r\n",
                )
                .unwrap();
            // Tones in the audio: 100 ms of 5, then silence, 20 ms frames.
            let tone = inband::tests::dual_tone(Key::Num5, -10.0, 800);
            let mut samples = tone.clone();
            samples.resize(800 + 1600, 0);
            for (i, frame) in samples.chunks(160).enumerate() {
                let now = start + Duration::from_millis(20 * (i as u64 + 1));
                detector.on_audio(now, frame);
                // RFC 4733 updates every 50 ms, then three end packets.
                if i == 0 {
                    detector
                        .on_telephone_event(now, 7, ts, true, &event(Key::Num5, false, 160))
                        .unwrap();
                }
                if i == 2 {
                    detector
                        .on_telephone_event(now, 7, ts, false, &event(Key::Num5, false, 560))
                        .unwrap();
                }
                if (5..8).contains(&i) {
                    detector
                        .on_telephone_event(now, 7, ts, false, &event(Key::Num5, true, 800))
                        .unwrap();
                }
            }
            all.extend(drain(&mut detector));
        }
        assert_eq!(
            all,
            [(Key::Num5, Source::SipInfo), (Key::Num5, Source::SipInfo)]
        );
    }

    #[test]
    fn different_keys_from_different_sources_are_all_reported() {
        let t0 = Instant::now();
        let mut detector = DtmfDetector::new(8000, false);
        detector.on_sip_info(t0, "application/dtmf", b"1").unwrap();
        detector
            .on_telephone_event(t0, 1, 0, true, &event(Key::Num2, true, 800))
            .unwrap();
        // Same key again, from the same source, right after: a second press.
        detector
            .on_sip_info(t0 + Duration::from_millis(150), "application/dtmf", b"1")
            .unwrap();
        assert_eq!(
            drain(&mut detector),
            [
                (Key::Num1, Source::SipInfo),
                (Key::Num2, Source::TelephoneEvent),
                (Key::Num1, Source::SipInfo)
            ]
        );
    }

    #[test]
    fn a_later_press_of_the_same_key_from_another_source_is_kept() {
        let t0 = Instant::now();
        let mut detector = DtmfDetector::new(8000, false);
        detector
            .on_sip_info(t0, "application/dtmf-relay", b"Signal=9\nDuration=100")
            .unwrap();
        let later = t0 + Duration::from_secs(2);
        detector
            .on_telephone_event(later, 1, 0, true, &event(Key::Num9, true, 800))
            .unwrap();
        assert_eq!(
            drain(&mut detector),
            [
                (Key::Num9, Source::SipInfo),
                (Key::Num9, Source::TelephoneEvent)
            ]
        );
    }

    #[test]
    fn timeout_closes_a_press_whose_end_was_lost() {
        let t0 = Instant::now();
        let mut detector = DtmfDetector::new(8000, false);
        assert_eq!(detector.poll_timeout(), None);
        detector
            .on_telephone_event(t0, 1, 0, true, &event(Key::Star, false, 400))
            .unwrap();
        let deadline = detector.poll_timeout().unwrap();
        detector.on_timeout(deadline - Duration::from_millis(1));
        assert_eq!(detector.poll(), None);
        detector.on_timeout(deadline);
        assert_eq!(drain(&mut detector), [(Key::Star, Source::TelephoneEvent)]);
        assert_eq!(detector.poll_timeout(), None);
    }
}
