//! RFC 4733 `telephone-event`: key presses as RTP packets.
//!
//! Receiving ([`TelephoneEventReceiver`]): a sender transmits one press as a
//! train of packets that all carry the press's start time as their RTP
//! timestamp: a first packet (marker set), updates with a growing duration,
//! and the end packet (E bit) repeated three times. Packets can be lost,
//! duplicated and reordered, so a press is identified by its timestamp, not
//! by the marker: it is reported once, when its first end packet arrives;
//! later packets with that timestamp or an older one are ignored, except a start
//! packet (marker set) under another timestamp, which begins a new press. If every
//! end packet is lost, the press is still reported, with the last duration
//! seen, when the next press starts or after [`END_TIMEOUT`] without packets.
//!
//! RFC 2198 redundancy (`red/8000` carrying `telephone-event`) is handled by
//! [`TelephoneEventReceiver::on_red_packet`]: each redundant block is fed
//! through the same logic with its own timestamp, so an end packet recovered
//! from redundancy counts, and the copies de-duplicate like retransmissions.
//! (Our SDP does not offer `red` yet; this is ready for when it does.)
//!
//! Long presses split into segments (RFC 4733 §2.5.1.3, after 65535 ticks,
//! about 8 s at 8 kHz) are joined back into one press.
//!
//! Sending ([`EventTrain`]): the packet train for one press, as payloads with
//! their timestamp, marker and send time; the RTP session sends them.
//!
//! Sans-IO, no allocation: the receiver holds one press in progress and a
//! small fixed queue of finished ones.

use std::time::{Duration, Instant};

use super::{Digit, Key, Queue};

/// How long a press may go without any packet before we consider its end
/// packets lost. Senders update every 50 ms (some every 20 ms), so this
/// survives several lost updates; it is only ever reached when all three end
/// packets are lost.
pub const END_TIMEOUT: Duration = Duration::from_millis(300);

/// Interval between update packets in an [`EventTrain`] (RFC 4733 §2.5.1.2
/// suggests 50 ms for DTMF).
pub const UPDATE_INTERVAL: Duration = Duration::from_millis(50);

/// Spacing of the three end packets of an [`EventTrain`], so that one short
/// burst of loss cannot take all three.
pub const END_SPACING: Duration = Duration::from_millis(20);

/// The 4-byte `telephone-event` payload (RFC 4733 §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TelephoneEvent {
    /// Event code: 0–15 are the DTMF keys ([`Key::from_event`]).
    pub event: u8,
    /// The E bit: this packet marks the end of the event.
    pub end: bool,
    /// Power level in −dBm0 (0–63; larger is quieter). Informational.
    pub volume: u8,
    /// Duration so far, in RTP timestamp units, from the event's timestamp.
    pub duration: u16,
}

/// Why a `telephone-event` (or `red`) payload was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TelephoneEventError {
    /// Fewer than the 4 bytes of an event.
    #[error("telephone-event payload of {0} bytes is shorter than 4")]
    TooShort(usize),
    /// The RFC 2198 headers run past the payload or announce more data than
    /// there is.
    #[error("malformed RFC 2198 redundancy header")]
    BadRedundancy,
}

impl TelephoneEvent {
    /// Parses the first event of a payload. RFC 4733 allows several events
    /// only via redundancy, so bytes past the first four are ignored.
    pub fn parse(payload: &[u8]) -> Result<Self, TelephoneEventError> {
        let [event, flags, hi, lo, ..] = *payload else {
            return Err(TelephoneEventError::TooShort(payload.len()));
        };
        Ok(TelephoneEvent {
            event,
            end: flags & 0x80 != 0,
            // Bit 6 is reserved: ignored on receipt.
            volume: flags & 0x3F,
            duration: u16::from_be_bytes([hi, lo]),
        })
    }

    /// The payload bytes.
    pub fn to_bytes(self) -> [u8; 4] {
        let flags = (if self.end { 0x80 } else { 0 }) | (self.volume & 0x3F);
        let [hi, lo] = self.duration.to_be_bytes();
        [self.event, flags, hi, lo]
    }
}

/// Whether RTP timestamp `a` is later than `b` (serial number arithmetic:
/// timestamps wrap).
fn is_later(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

/// The press being received.
#[derive(Debug, Clone, Copy)]
struct Current {
    /// The timestamp of the current segment.
    timestamp: u32,
    key: Key,
    /// Duration of the segments before this one (long presses).
    earlier_ticks: u32,
    /// Longest duration seen in this segment.
    ticks: u16,
    last_packet: Instant,
}

/// Turns one leg's `telephone-event` packets into [`Digit`]s (see the module
/// docs for the rules).
#[derive(Debug)]
pub struct TelephoneEventReceiver {
    clock_rate: u32,
    ssrc: Option<u32>,
    current: Option<Current>,
    /// The timestamp of the last press reported: packets at or before it are
    /// retransmissions or stragglers.
    last_done: Option<u32>,
    ready: Queue<Digit, 4>,
}

impl TelephoneEventReceiver {
    /// A receiver for `telephone-event/<clock_rate>` (8000 in practice).
    pub fn new(clock_rate: u32) -> Self {
        TelephoneEventReceiver {
            clock_rate: clock_rate.max(1),
            ssrc: None,
            current: None,
            last_done: None,
            ready: Queue::new(),
        }
    }

    /// Feeds one packet's `payload` with its RTP header fields. A new SSRC
    /// (the peer restarted its stream) starts afresh, reporting a press in
    /// progress first.
    pub fn on_packet(
        &mut self,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        marker: bool,
        payload: &[u8],
    ) -> Result<(), TelephoneEventError> {
        let event = TelephoneEvent::parse(payload)?;
        self.check_ssrc(ssrc);
        self.handle(now, timestamp, marker, event);
        Ok(())
    }

    /// Feeds one RFC 2198 packet: its blocks of payload type `event_pt`
    /// (redundant ones first, as they are older, then the primary) go
    /// through [`on_packet`](Self::on_packet)'s logic; other blocks are
    /// skipped. The whole packet is checked before any block is used.
    pub fn on_red_packet(
        &mut self,
        now: Instant,
        ssrc: u32,
        timestamp: u32,
        payload: &[u8],
        event_pt: u8,
    ) -> Result<(), TelephoneEventError> {
        // First pass: validate, so that a truncated packet changes nothing.
        for block in RedBlocks::new(payload)? {
            let block = block?;
            if block.payload_type == event_pt {
                TelephoneEvent::parse(block.data)?;
            }
        }
        self.check_ssrc(ssrc);
        for block in RedBlocks::new(payload)? {
            let block = block?;
            if block.payload_type == event_pt {
                let event = TelephoneEvent::parse(block.data)?;
                let ts = timestamp.wrapping_sub(block.timestamp_offset);
                self.handle(now, ts, false, event);
            }
        }
        Ok(())
    }

    /// Closes a press that has had no packet for [`END_TIMEOUT`].
    pub fn on_timeout(&mut self, now: Instant) {
        if let Some(current) = self.current {
            if now >= current.last_packet + END_TIMEOUT {
                self.finish(current);
            }
        }
    }

    /// When [`on_timeout`](Self::on_timeout) should next be called: only
    /// while a press is in progress.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.current.map(|c| c.last_packet + END_TIMEOUT)
    }

    /// The next finished press.
    pub fn poll(&mut self) -> Option<Digit> {
        self.ready.pop()
    }

    /// Forgets all state (e.g. when the leg's media is replaced), dropping a
    /// press in progress.
    pub fn reset(&mut self) {
        self.ssrc = None;
        self.current = None;
        self.last_done = None;
    }

    fn check_ssrc(&mut self, ssrc: u32) {
        if self.ssrc != Some(ssrc) {
            if let Some(current) = self.current {
                self.finish(current);
            }
            // Timestamps of a new stream are unrelated to the old one's.
            self.last_done = None;
            self.ssrc = Some(ssrc);
        }
    }

    fn handle(&mut self, now: Instant, timestamp: u32, marker: bool, event: TelephoneEvent) {
        // Flash, fax and modem events are not key presses.
        let Some(key) = Key::from_event(event.event) else {
            return;
        };
        if let Some(done) = self.last_done {
            // A start packet (marker) under another timestamp than the last press is a
            // new press even if its timestamp went backwards: some senders (gateways,
            // replayed captures) restart their event clock without a new SSRC.
            let restarted = marker && timestamp != done;
            let ongoing = self.current.is_some_and(|c| c.timestamp == timestamp);
            if !is_later(timestamp, done) && !restarted && !ongoing {
                return; // A retransmitted end, or a straggler of a finished press.
            }
        }
        let current = match self.current {
            Some(mut current) if current.timestamp == timestamp => {
                current.ticks = current.ticks.max(event.duration);
                current.last_packet = now;
                current
            }
            Some(current) if !is_later(timestamp, current.timestamp) => {
                // Older than the press in progress: a press whose every
                // packet but this one was lost, arriving out of order.
                // Reporting it now would put digits out of order.
                return;
            }
            Some(mut current) if !marker && key == current.key && current.ticks == u16::MAX => {
                // The next segment of a long press.
                current.earlier_ticks += u32::from(current.ticks);
                current.timestamp = timestamp;
                current.ticks = event.duration;
                current.last_packet = now;
                current
            }
            previous => {
                if let Some(previous) = previous {
                    // A new press while the previous one never ended: all of
                    // its end packets were lost.
                    self.finish(previous);
                }
                Current {
                    timestamp,
                    key,
                    earlier_ticks: 0,
                    ticks: event.duration,
                    last_packet: now,
                }
            }
        };
        if event.end {
            self.finish(current);
        } else {
            self.current = Some(current);
        }
    }

    fn finish(&mut self, current: Current) {
        let ticks = u64::from(current.earlier_ticks) + u64::from(current.ticks);
        let duration = Duration::from_micros(ticks * 1_000_000 / u64::from(self.clock_rate));
        self.ready.push(Digit {
            key: current.key,
            duration,
        });
        self.last_done = Some(current.timestamp);
        self.current = None;
    }
}

/// One block of an RFC 2198 payload.
#[derive(Debug, Clone, Copy)]
struct RedBlock<'a> {
    payload_type: u8,
    /// How far before the packet's timestamp this block's timestamp is (0
    /// for the primary block).
    timestamp_offset: u32,
    data: &'a [u8],
}

/// Walks the blocks of an RFC 2198 payload without allocating: the headers
/// come first (4 bytes each with the F bit set, then a 1-byte header for the
/// primary), then the blocks' data in the same order.
struct RedBlocks<'a> {
    payload: &'a [u8],
    header: usize,
    data: usize,
    done: bool,
}

impl<'a> RedBlocks<'a> {
    fn new(payload: &'a [u8]) -> Result<Self, TelephoneEventError> {
        // Find where the headers end.
        let mut at = 0;
        loop {
            let &first = payload.get(at).ok_or(TelephoneEventError::BadRedundancy)?;
            if first & 0x80 == 0 {
                at += 1;
                break;
            }
            at += 4;
        }
        Ok(RedBlocks {
            payload,
            header: 0,
            data: at,
            done: false,
        })
    }
}

impl<'a> Iterator for RedBlocks<'a> {
    type Item = Result<RedBlock<'a>, TelephoneEventError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let p = self.payload;
        let first = p[self.header];
        let (payload_type, timestamp_offset, len) = if first & 0x80 != 0 {
            let h = &p[self.header..self.header + 4];
            let offset = (u32::from(h[1]) << 6) | u32::from(h[2] >> 2);
            let len = (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
            self.header += 4;
            (first & 0x7F, offset, len)
        } else {
            // The primary block takes the rest of the payload.
            self.done = true;
            (first & 0x7F, 0, p.len().saturating_sub(self.data))
        };
        let Some(data) = p.get(self.data..self.data + len) else {
            self.done = true;
            return Some(Err(TelephoneEventError::BadRedundancy));
        };
        self.data += len;
        Some(Ok(RedBlock {
            payload_type,
            timestamp_offset,
            data,
        }))
    }
}

/// One packet of an [`EventTrain`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventPacket {
    /// When to send it, counted from the start of the press.
    pub send_at: Duration,
    /// The RTP marker bit (set on the first packet only).
    pub marker: bool,
    /// The RTP timestamp: the same for every packet of the press.
    pub timestamp: u32,
    /// The 4-byte payload.
    pub payload: [u8; 4],
}

/// The RFC 4733 packets for one key press, in sending order: a first packet
/// with the marker set, updates every [`UPDATE_INTERVAL`], and three end
/// packets [`END_SPACING`] apart once the press is over.
///
/// Each update reports the duration up to the next update (capped at the
/// press's length), the way common senders do, so a receiver that loses the
/// end packets still sees nearly the whole press. The RTP session keeps the
/// timestamp fixed for the whole train and sends audio (or nothing) with
/// later timestamps afterwards.
///
/// Presses are capped at 65535 ticks (8.2 s at 8 kHz): an IVR never presses
/// longer, so long-press segmentation is not implemented on the send side.
#[derive(Debug, Clone)]
pub struct EventTrain {
    key: Key,
    volume: u8,
    timestamp: u32,
    clock_rate: u32,
    total_ticks: u16,
    updates: u32,
    next: u32,
}

impl EventTrain {
    /// The train for `key` held for `duration`, at `volume` −dBm0 (10 is the
    /// usual choice), starting at RTP `timestamp` on a `clock_rate` clock.
    pub fn new(key: Key, duration: Duration, volume: u8, timestamp: u32, clock_rate: u32) -> Self {
        let ticks = duration.as_micros() * u128::from(clock_rate) / 1_000_000;
        let total_ticks = ticks.clamp(1, u128::from(u16::MAX)) as u16;
        let total = Duration::from_micros(
            u64::from(total_ticks) * 1_000_000 / u64::from(clock_rate.max(1)),
        );
        // One packet at 0, then one per interval while the key is down.
        let updates = total
            .as_micros()
            .div_ceil(UPDATE_INTERVAL.as_micros())
            .max(1) as u32;
        EventTrain {
            key,
            volume: volume.min(63),
            timestamp,
            clock_rate,
            total_ticks,
            updates,
            next: 0,
        }
    }

    fn ticks(&self, at: Duration) -> u16 {
        let ticks = at.as_micros() * u128::from(self.clock_rate) / 1_000_000;
        ticks.min(u128::from(self.total_ticks)) as u16
    }
}

impl Iterator for EventTrain {
    type Item = EventPacket;

    fn next(&mut self) -> Option<EventPacket> {
        let n = self.next;
        if n >= self.updates + 3 {
            return None;
        }
        self.next += 1;
        let end = n >= self.updates;
        let (send_at, duration) = if end {
            let press = Duration::from_micros(
                u64::from(self.total_ticks) * 1_000_000 / u64::from(self.clock_rate.max(1)),
            );
            (press + END_SPACING * (n - self.updates), self.total_ticks)
        } else {
            let at = UPDATE_INTERVAL * n;
            (at, self.ticks(at + UPDATE_INTERVAL))
        };
        let event = TelephoneEvent {
            event: self.key.event(),
            end,
            volume: self.volume,
            duration,
        };
        Some(EventPacket {
            send_at,
            marker: n == 0,
            timestamp: self.timestamp,
            payload: event.to_bytes(),
        })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = (self.updates + 3 - self.next) as usize;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EventTrain {}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn payload(key: Key, end: bool, duration: u16) -> [u8; 4] {
        TelephoneEvent {
            event: key.event(),
            end,
            volume: 10,
            duration,
        }
        .to_bytes()
    }

    fn drain(rx: &mut TelephoneEventReceiver) -> Vec<Digit> {
        std::iter::from_fn(|| rx.poll()).collect()
    }

    fn digit(key: Key, millis: u64) -> Digit {
        Digit {
            key,
            duration: ms(millis),
        }
    }

    #[test]
    fn parses_the_payload() {
        // Event 5, E bit, reserved bit set (ignored), volume 10, duration 800.
        let event = TelephoneEvent::parse(&[5, 0x80 | 0x40 | 10, 0x03, 0x20]).unwrap();
        assert_eq!(
            event,
            TelephoneEvent {
                event: 5,
                end: true,
                volume: 10,
                duration: 800
            }
        );
        assert_eq!(event.to_bytes(), [5, 0x80 | 10, 0x03, 0x20]);
        assert_eq!(
            TelephoneEvent::parse(&[1, 2, 3]),
            Err(TelephoneEventError::TooShort(3))
        );
        assert!(TelephoneEvent::parse(&[11, 0, 0, 160, 99, 99]).is_ok());
    }

    /// Every key, sent by our own sender and received back: one digit each,
    /// with its duration, despite three end packets per press.
    #[test]
    fn all_keys_through_sender_and_receiver() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        let mut timestamp = 0xFFFF_F000u32; // wraps during the test
        for key in Key::ALL {
            for packet in EventTrain::new(key, ms(120), 10, timestamp, 8000) {
                rx.on_packet(
                    t0 + packet.send_at,
                    42,
                    packet.timestamp,
                    packet.marker,
                    &packet.payload,
                )
                .unwrap();
            }
            assert_eq!(drain(&mut rx), [digit(key, 120)], "{key}");
            timestamp = timestamp.wrapping_add(8000);
        }
    }

    /// A sender whose event clock goes backwards under the same SSRC (a replayed
    /// capture, some gateways): each new start packet is still a new press, while
    /// retransmissions of the last press stay ignored.
    #[test]
    fn a_start_packet_under_an_older_timestamp_is_a_new_press() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        let mut press = |key: Key, ts: u32, at: u64| {
            for packet in EventTrain::new(key, ms(100), 10, ts, 8000) {
                rx.on_packet(
                    t0 + ms(at) + packet.send_at,
                    7,
                    packet.timestamp,
                    packet.marker,
                    &packet.payload,
                )
                .unwrap();
            }
            drain(&mut rx)
        };
        assert_eq!(press(Key::Num5, 43_200, 0), [digit(Key::Num5, 100)]);
        assert_eq!(press(Key::Num1, 13_280, 1_000), [digit(Key::Num1, 100)]);
        // The same press again (every packet a retransmission): nothing new.
        let again: Vec<_> = EventTrain::new(Key::Num1, ms(100), 10, 13_280, 8000)
            .filter(|p| !p.marker)
            .collect();
        for p in again {
            rx.on_packet(t0 + ms(2_000), 7, p.timestamp, p.marker, &p.payload)
                .unwrap();
        }
        assert!(drain(&mut rx).is_empty());
    }

    #[test]
    fn sender_builds_the_standard_train() {
        let train: Vec<_> = EventTrain::new(Key::Pound, ms(120), 10, 1234, 8000).collect();
        // Updates at 0, 50 and 100 ms, then three ends at 120, 140, 160 ms.
        let sends: Vec<_> = train.iter().map(|p| p.send_at).collect();
        assert_eq!(sends, [ms(0), ms(50), ms(100), ms(120), ms(140), ms(160)]);
        let markers: Vec<_> = train.iter().map(|p| p.marker).collect();
        assert_eq!(markers, [true, false, false, false, false, false]);
        assert!(train.iter().all(|p| p.timestamp == 1234));
        let events: Vec<_> = train
            .iter()
            .map(|p| TelephoneEvent::parse(&p.payload).unwrap())
            .collect();
        assert!(events.iter().all(|e| e.event == 11 && e.volume == 10));
        let durations: Vec<_> = events.iter().map(|e| (e.duration, e.end)).collect();
        assert_eq!(
            durations,
            [
                (400, false),
                (800, false),
                (960, false),
                (960, true),
                (960, true),
                (960, true)
            ]
        );
        assert_eq!(EventTrain::new(Key::Num1, ms(120), 10, 0, 8000).len(), 6);
        // Out-of-range inputs are clamped, not trusted.
        let long = EventTrain::new(Key::Num1, Duration::from_secs(60), 99, 0, 8000)
            .last()
            .unwrap();
        assert_eq!(
            TelephoneEvent::parse(&long.payload).unwrap().duration,
            u16::MAX
        );
        assert_eq!(TelephoneEvent::parse(&long.payload).unwrap().volume, 63);
    }

    #[test]
    fn retransmissions_duplicates_and_reordering_give_one_digit() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        let p = |end, d| payload(Key::Num7, end, d);
        let packets = [
            (true, p(false, 160)),
            (false, p(false, 800)),
            (false, p(false, 480)), // reordered older update
            (false, p(true, 1120)),
            (false, p(false, 960)), // straggler after the end
            (false, p(true, 1120)),
            (false, p(true, 1120)),
            (false, p(true, 1120)), // a fourth, duplicated by the network
        ];
        for (i, (marker, payload)) in packets.iter().enumerate() {
            rx.on_packet(t0 + ms(20 * i as u64), 1, 500, *marker, payload)
                .unwrap();
        }
        assert_eq!(drain(&mut rx), [digit(Key::Num7, 140)]);
        assert_eq!(rx.poll_timeout(), None);
    }

    #[test]
    fn lost_end_packets_are_covered_by_the_next_press_or_the_timeout() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        rx.on_packet(t0, 1, 0, true, &payload(Key::Num1, false, 400))
            .unwrap();
        rx.on_packet(t0 + ms(50), 1, 0, false, &payload(Key::Num1, false, 800))
            .unwrap();
        // All ends lost; the next press starts.
        rx.on_packet(t0 + ms(300), 1, 4000, true, &payload(Key::Num2, false, 400))
            .unwrap();
        assert_eq!(drain(&mut rx), [digit(Key::Num1, 100)]);
        // The next press's ends are lost too, and nothing follows.
        rx.on_timeout(t0 + ms(300) + END_TIMEOUT - ms(1));
        assert_eq!(rx.poll(), None);
        assert_eq!(rx.poll_timeout(), Some(t0 + ms(300) + END_TIMEOUT));
        rx.on_timeout(t0 + ms(300) + END_TIMEOUT);
        assert_eq!(drain(&mut rx), [digit(Key::Num2, 50)]);
        // Its ends turn up late: already reported, so ignored.
        rx.on_packet(t0 + ms(900), 1, 4000, false, &payload(Key::Num2, true, 800))
            .unwrap();
        assert_eq!(rx.poll(), None);
    }

    #[test]
    fn a_press_that_is_only_an_end_packet_still_counts() {
        let mut rx = TelephoneEventReceiver::new(8000);
        rx.on_packet(Instant::now(), 1, 77, false, &payload(Key::D, true, 800))
            .unwrap();
        assert_eq!(drain(&mut rx), [digit(Key::D, 100)]);
    }

    #[test]
    fn a_new_ssrc_starts_afresh() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        rx.on_packet(t0, 1, 1000, true, &payload(Key::Num3, true, 800))
            .unwrap();
        // The new stream's timestamps are lower: not stragglers.
        rx.on_packet(t0, 2, 10, true, &payload(Key::Num3, true, 800))
            .unwrap();
        assert_eq!(
            drain(&mut rx),
            [digit(Key::Num3, 100), digit(Key::Num3, 100)]
        );
    }

    #[test]
    fn ignores_non_key_events() {
        let mut rx = TelephoneEventReceiver::new(8000);
        // 16 is hook flash, 32 is the fax answer tone.
        for event in [16u8, 32, 255] {
            rx.on_packet(Instant::now(), 1, 1, true, &[event, 0x8A, 3, 32])
                .unwrap();
        }
        assert_eq!(rx.poll(), None);
    }

    #[test]
    fn joins_the_segments_of_a_long_press() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        rx.on_packet(t0, 1, 0, true, &payload(Key::Num0, false, 60000))
            .unwrap();
        rx.on_packet(
            t0 + ms(50),
            1,
            0,
            false,
            &payload(Key::Num0, false, u16::MAX),
        )
        .unwrap();
        // Next segment: new timestamp, no marker.
        rx.on_packet(
            t0 + ms(100),
            1,
            65535,
            false,
            &payload(Key::Num0, false, 400),
        )
        .unwrap();
        rx.on_packet(
            t0 + ms(150),
            1,
            65535,
            false,
            &payload(Key::Num0, true, 8465),
        )
        .unwrap();
        assert_eq!(drain(&mut rx), [digit(Key::Num0, 9250)]);
    }

    /// Builds an RFC 2198 payload from (pt, offset, data) redundant blocks
    /// and a primary.
    fn red(redundant: &[(u8, u32, &[u8])], primary: (u8, &[u8])) -> Vec<u8> {
        let mut out = Vec::new();
        for &(pt, offset, data) in redundant {
            out.push(0x80 | pt);
            out.push((offset >> 6) as u8);
            out.push(((offset & 0x3F) << 2) as u8 | (data.len() >> 8) as u8);
            out.push(data.len() as u8);
        }
        out.push(primary.0);
        for &(_, _, data) in redundant {
            out.extend_from_slice(data);
        }
        out.extend_from_slice(primary.1);
        out
    }

    #[test]
    fn redundancy_recovers_a_lost_end() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        // Press of 4 at ts 1000; its end packets are all lost, but the next
        // press's first packet (ts 3000) carries the end redundantly.
        let start = red(&[], (101, &payload(Key::Num4, false, 400)));
        rx.on_red_packet(t0, 9, 1000, &start, 101).unwrap();
        let next = red(
            &[
                (101, 2000, &payload(Key::Num4, true, 960)),
                (0, 100, &[0xFF; 160]),
            ],
            (101, &payload(Key::Num8, false, 400)),
        );
        rx.on_red_packet(t0 + ms(400), 9, 3000, &next, 101).unwrap();
        // The 4 ends with its true duration (from redundancy), not 50 ms.
        assert_eq!(drain(&mut rx), [digit(Key::Num4, 120)]);
        // The 8's end, primary and then again as redundancy: one digit.
        let end = red(&[], (101, &payload(Key::Num8, true, 800)));
        rx.on_red_packet(t0 + ms(500), 9, 3000, &end, 101).unwrap();
        let again = red(
            &[(101, 160, &payload(Key::Num8, true, 800))],
            (0, &[0xFF; 160]),
        );
        rx.on_red_packet(t0 + ms(520), 9, 3160, &again, 101)
            .unwrap();
        assert_eq!(drain(&mut rx), [digit(Key::Num8, 100)]);
    }

    #[test]
    fn malformed_redundancy_is_refused_whole() {
        let mut rx = TelephoneEventReceiver::new(8000);
        let good = red(
            &[(101, 160, &payload(Key::Num1, true, 800))],
            (101, &payload(Key::Num2, true, 800)),
        );
        for cut in [0, 2, 4, 5, 8] {
            let result = rx.on_red_packet(Instant::now(), 1, 1000, &good[..cut], 101);
            assert!(result.is_err(), "cut at {cut}");
        }
        assert_eq!(rx.poll(), None);
        rx.on_red_packet(Instant::now(), 1, 1000, &good, 101)
            .unwrap();
        assert_eq!(
            drain(&mut rx),
            [digit(Key::Num1, 100), digit(Key::Num2, 100)]
        );
    }

    #[test]
    fn receiving_does_not_allocate() {
        let t0 = Instant::now();
        let mut rx = TelephoneEventReceiver::new(8000);
        let trains: Vec<Vec<EventPacket>> = Key::ALL
            .iter()
            .enumerate()
            .map(|(i, &k)| EventTrain::new(k, ms(100), 10, i as u32 * 8000, 8000).collect())
            .collect();
        let allocations = crate::media::codec::tests::allocations_in(|| {
            for train in &trains {
                for p in train {
                    rx.on_packet(t0 + p.send_at, 5, p.timestamp, p.marker, &p.payload)
                        .unwrap();
                }
                assert!(rx.poll().is_some());
            }
        });
        assert_eq!(allocations, 0);
    }
}
