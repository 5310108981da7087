//! Reception statistics of one leg's RTP, as RFC 3550 defines them for
//! receiver reports: packets lost (expected from the sequence numbers minus
//! received, §A.3) and interarrival jitter (§A.8), for the call record.
//!
//! Sans-IO and allocation-free: the relay calls [`ReceiveStats::on_packet`]
//! with each packet's header fields and its arrival time.

use std::time::Instant;

/// RTP clock of every codec we carry (G.722 included, RFC 3551).
const CLOCK_HZ: u64 = 8000;
/// A jump this far (either way) is a new stream from the same source, not loss
/// (RFC 3550's MAX_DROPOUT).
const MAX_DROPOUT: u16 = 3000;
/// How far back a packet may be and still count as late (RFC 3550's MAX_MISORDER).
const MAX_MISORDER: u16 = 100;

#[derive(Debug, Default, Clone)]
pub struct ReceiveStats {
    /// The stream being counted now.
    ssrc: Option<u32>,
    base_seq: u32,
    /// Highest sequence number, extended with the wrap count.
    max_seq: u32,
    received: u64,
    /// Loss of streams that ended (an SSRC change), already settled.
    settled_lost: u64,
    first_arrival: Option<Instant>,
    /// Previous transit time in RTP units, and the jitter estimate (×16, as in §A.8).
    transit: Option<i64>,
    jitter16: u64,
    jitter_sum: u64,
    jitter_samples: u64,
    /// Expected and received at the last report block (for its fraction lost).
    expected_prior: u64,
    received_prior: u64,
}

/// What a reception report block (RFC 3550 §6.4.1) says about one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportBlock {
    pub ssrc: u32,
    /// Lost since the previous block, as a fraction ×256.
    pub fraction_lost: u8,
    /// Lost since the start, clamped to the 24-bit field.
    pub total_lost: u32,
    /// Highest sequence number received, with the wrap count in the top 16 bits.
    pub highest_seq: u32,
    /// Interarrival jitter in RTP timestamp units.
    pub jitter: u32,
}

impl ReceiveStats {
    pub fn new() -> Self {
        Self::default()
    }

    /// One packet received (already known to be RTP).
    pub fn on_packet(&mut self, seq: u16, timestamp: u32, ssrc: u32, arrival: Instant) {
        if self.ssrc != Some(ssrc) {
            self.settled_lost += self.stream_lost();
            self.ssrc = Some(ssrc);
            self.base_seq = u32::from(seq);
            self.max_seq = u32::from(seq);
            self.received = 0;
            self.transit = None;
            self.expected_prior = 0;
            self.received_prior = 0;
        }
        self.received += 1;
        let max = self.max_seq as u16;
        let ahead = seq.wrapping_sub(max);
        if ahead < MAX_DROPOUT {
            // In order, perhaps after a gap: count a wrap of the 16-bit number.
            if seq < max {
                self.max_seq = self.max_seq.wrapping_add(0x1_0000);
            }
            self.max_seq = (self.max_seq & !0xffff) | u32::from(seq);
        } else if ahead <= u16::MAX - MAX_MISORDER {
            // A jump too big to be loss and too far back to be a late packet: the
            // sender restarted its numbering. Count afresh from here.
            self.settled_lost += self.stream_lost();
            self.base_seq = u32::from(seq);
            self.max_seq = u32::from(seq);
            self.received = 1;
        }
        // Otherwise a late (reordered) or duplicated packet: received, nothing more.

        let start = *self.first_arrival.get_or_insert(arrival);
        let units = arrival.duration_since(start).as_micros() as u64 * CLOCK_HZ / 1_000_000;
        let transit = units as i64 - i64::from(timestamp);
        if let Some(prev) = self.transit {
            let d = (transit - prev).unsigned_abs();
            // J += (|D| - J) / 16, kept scaled by 16.
            self.jitter16 = self.jitter16 + d - (self.jitter16 + 8) / 16;
            self.jitter_sum += self.jitter16;
            self.jitter_samples += 1;
        }
        self.transit = Some(transit);
    }

    fn stream_lost(&self) -> u64 {
        if self.ssrc.is_none() {
            return 0;
        }
        let expected = u64::from(self.max_seq - self.base_seq) + 1;
        expected.saturating_sub(self.received)
    }

    /// The report block about the stream now, and the start of the next block's
    /// interval (§A.3); None before any packet.
    pub fn report_block(&mut self) -> Option<ReportBlock> {
        let ssrc = self.ssrc?;
        let expected = u64::from(self.max_seq - self.base_seq) + 1;
        let expected_interval = expected.saturating_sub(self.expected_prior);
        let received_interval = self.received.saturating_sub(self.received_prior);
        self.expected_prior = expected;
        self.received_prior = self.received;
        let lost_interval = expected_interval.saturating_sub(received_interval);
        let fraction_lost = (lost_interval << 8)
            .checked_div(expected_interval)
            .map_or(0, |f| f.min(255) as u8);
        Some(ReportBlock {
            ssrc,
            fraction_lost,
            total_lost: self.lost().min(0x7f_ffff) as u32,
            highest_seq: self.max_seq,
            jitter: (self.jitter16 / 16) as u32,
        })
    }

    /// The stream being counted now, its highest sequence number (extended with the
    /// wrap count) and the jitter estimate ×16: where the kernel carries on from when
    /// it forwards the stream.
    pub fn position(&self) -> Option<(u32, u32, u64)> {
        Some((self.ssrc?, self.max_seq, self.jitter16))
    }

    /// Takes in what the kernel counted of the same stream while it forwarded it:
    /// `received` packets more, its highest sequence number, its jitter estimate and
    /// the samples it added to the mean. The kernel's arrival times are on its own
    /// clock, so the next packet here starts a new transit reference.
    pub fn absorb(&mut self, received: u64, max_seq: u32, jitter16: u64, sum: u64, samples: u64) {
        self.received += received;
        self.max_seq = self.max_seq.max(max_seq);
        self.jitter16 = jitter16;
        self.jitter_sum += sum;
        self.jitter_samples += samples;
        self.transit = None;
    }

    /// Packets lost so far: expected by sequence number but never received.
    pub fn lost(&self) -> u64 {
        self.settled_lost + self.stream_lost()
    }

    /// Packets received in the current stream (since the last SSRC change).
    pub fn received(&self) -> u64 {
        self.received
    }

    /// The interarrival jitter estimate now, in milliseconds.
    pub fn jitter_ms(&self) -> f64 {
        self.jitter16 as f64 / 16.0 * 1000.0 / CLOCK_HZ as f64
    }

    /// The mean of the jitter estimate over the call, in milliseconds (what the
    /// call record keeps).
    pub fn mean_jitter_ms(&self) -> f64 {
        if self.jitter_samples == 0 {
            return 0.0;
        }
        self.jitter_sum as f64 / self.jitter_samples as f64 / 16.0 * 1000.0 / CLOCK_HZ as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn feed(stats: &mut ReceiveStats, t0: Instant, packets: &[(u16, u32, u64)]) {
        for &(seq, ts, at_ms) in packets {
            stats.on_packet(seq, ts, 7, t0 + Duration::from_millis(at_ms));
        }
    }

    #[test]
    fn a_steady_stream_has_no_loss_and_no_jitter() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        let packets: Vec<_> = (0..100u16)
            .map(|i| (i, u32::from(i) * 160, u64::from(i) * 20))
            .collect();
        feed(&mut s, t0, &packets);
        assert_eq!(s.lost(), 0);
        assert_eq!(s.received(), 100);
        assert!(s.mean_jitter_ms() < 0.1, "{}", s.mean_jitter_ms());
    }

    #[test]
    fn what_the_kernel_counted_joins_the_figures() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        let packets: Vec<_> = (0..10u16)
            .map(|i| (i, u32::from(i) * 160, u64::from(i) * 20))
            .collect();
        feed(&mut s, t0, &packets);
        let (ssrc, max_seq, _) = s.position().unwrap();
        assert_eq!((ssrc, max_seq), (7, 9));
        // The kernel received 88 of 90 (10..=99), two lost, and measured some jitter.
        s.absorb(88, 99, 32, 64, 2);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.received(), 98);
        assert!(s.mean_jitter_ms() > 0.0);
        // The relay counts on from there (its next packet starts a new transit).
        feed(&mut s, t0 + Duration::from_secs(2), &[(100, 16_000, 0)]);
        assert_eq!(s.lost(), 2);
        assert_eq!(s.received(), 99);
    }

    #[test]
    fn gaps_count_as_lost_across_a_sequence_wrap() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        // 65530..65535 then 0..9, with 65533 and 2 missing.
        let mut packets = Vec::new();
        for (i, seq) in (65530u32..65546).enumerate() {
            let seq = seq as u16;
            if seq == 65533 || seq == 2 {
                continue;
            }
            packets.push((seq, i as u32 * 160, i as u64 * 20));
        }
        feed(&mut s, t0, &packets);
        assert_eq!(s.lost(), 2);
    }

    #[test]
    fn late_packets_make_jitter_and_reordering_is_not_loss() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        // Every other packet arrives 10 ms late; 5 and 6 swap places.
        let mut packets: Vec<_> = (0..200u16)
            .map(|i| {
                let late = if i % 2 == 1 { 10 } else { 0 };
                (i, u32::from(i) * 160, u64::from(i) * 20 + late)
            })
            .collect();
        packets.swap(5, 6);
        feed(&mut s, t0, &packets);
        assert_eq!(s.lost(), 0);
        // |D| is 10 ms on every packet: the estimate converges to 10 ms.
        assert!((s.jitter_ms() - 10.0).abs() < 1.0, "{}", s.jitter_ms());
        assert!(s.mean_jitter_ms() > 5.0);
    }

    #[test]
    fn report_blocks_give_the_fraction_lost_since_the_previous_one() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        assert_eq!(s.report_block(), None);
        // 0..=9 with 3 and 7 missing: 2 of 10 lost.
        let first: Vec<_> = (0..10u16)
            .filter(|i| *i != 3 && *i != 7)
            .map(|i| (i, u32::from(i) * 160, u64::from(i) * 20))
            .collect();
        feed(&mut s, t0, &first);
        let block = s.report_block().unwrap();
        assert_eq!(block.ssrc, 7);
        assert_eq!(block.fraction_lost, (2 * 256 / 10) as u8);
        assert_eq!(block.total_lost, 2);
        assert_eq!(block.highest_seq, 9);
        // 10..=19, all there: nothing lost in this interval; the total stays.
        let second: Vec<_> = (10..20u16)
            .map(|i| (i, u32::from(i) * 160, u64::from(i) * 20))
            .collect();
        feed(&mut s, t0, &second);
        let block = s.report_block().unwrap();
        assert_eq!(
            (block.fraction_lost, block.total_lost, block.highest_seq),
            (0, 2, 19)
        );
    }

    #[test]
    fn a_new_stream_starts_a_new_count_and_keeps_the_old_loss() {
        let t0 = Instant::now();
        let mut s = ReceiveStats::new();
        feed(&mut s, t0, &[(10, 0, 0), (12, 320, 40)]);
        assert_eq!(s.lost(), 1);
        s.on_packet(5000, 99, 8, t0 + Duration::from_millis(60));
        s.on_packet(5001, 259, 8, t0 + Duration::from_millis(80));
        assert_eq!(s.lost(), 1);
    }
}
