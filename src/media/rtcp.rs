//! RTCP on a bridge: each leg gets reports from us, about us.
//!
//! A B2BUA that passed one phone's RTCP to the other would tell each phone
//! about SSRCs it never receives (we re-stamp every stream), so the relay
//! terminates RTCP per leg instead: it reads the leg's sender reports (for the
//! round-trip fields of ours) and every few seconds sends the leg a compound
//! packet of its own — a sender report about the stream we send it (or a
//! receiver report if we have sent nothing yet) with one reception report block
//! about the stream it sends us, and an SDES CNAME, as RFC 3550 §6.1 asks.
//!
//! Sans-IO: packets and clocks in, bytes out. Packets are built with
//! `rtc-rtcp`; this runs every five seconds per leg, not per RTP packet.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use rtc_rtcp::packet::Packet;
use rtc_rtcp::receiver_report::ReceiverReport;
use rtc_rtcp::reception_report::ReceptionReport;
use rtc_rtcp::sender_report::SenderReport;
use rtc_rtcp::source_description::{
    SdesType, SourceDescription, SourceDescriptionChunk, SourceDescriptionItem,
};

use super::rtp_stats::ReportBlock;

/// Seconds from the NTP epoch (1900) to the Unix epoch (1970).
const NTP_UNIX_OFFSET: u64 = 2_208_988_800;

/// `t` as a 64-bit NTP timestamp (32.32 fixed point seconds since 1900).
pub fn ntp_time(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_UNIX_OFFSET;
    let frac = (u64::from(d.subsec_nanos()) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// What we have sent a leg, for the sender info of our report to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    pub packets: u32,
    pub octets: u32,
    /// The RTP timestamp that corresponds to now on the stream we send.
    pub rtp_time: u32,
}

/// One leg's RTCP state: the last sender report it sent us.
#[derive(Debug, Default, Clone)]
pub struct LegRtcp {
    /// Middle 32 bits of its last SR's NTP time, and when the SR arrived.
    last_sr: Option<(u32, Instant)>,
    /// RTCP packets received from the leg (counted for tests and logs).
    received: u64,
}

impl LegRtcp {
    pub fn new() -> Self {
        Self::default()
    }

    /// An RTCP packet from the leg. Returns false if it does not parse.
    pub fn on_packet(&mut self, pkt: &[u8], now: Instant) -> bool {
        let mut buf = pkt;
        let Ok(packets) = rtc_rtcp::packet::unmarshal(&mut buf) else {
            return false;
        };
        self.received += 1;
        for p in &packets {
            if let Some(sr) = p.as_any().downcast_ref::<SenderReport>() {
                self.last_sr = Some(((sr.ntp_time >> 16) as u32, now));
            }
        }
        true
    }

    pub fn received(&self) -> u64 {
        self.received
    }

    /// Our compound report to this leg: SR (if we have sent it media) or RR, with
    /// SSRC `ours` (the SSRC of the stream it receives from us), a block about
    /// `reception` (its stream to us) if there is one, and SDES CNAME.
    pub fn report(
        &self,
        ours: u32,
        sent: Option<Sent>,
        reception: Option<ReportBlock>,
        now: Instant,
        wall: SystemTime,
    ) -> Option<Vec<u8>> {
        let reports: Vec<ReceptionReport> = reception
            .map(|b| {
                let (lsr, dlsr) = match self.last_sr {
                    // Delay since that SR in 1/65536 s.
                    Some((lsr, at)) => {
                        let d = now.saturating_duration_since(at);
                        (lsr, ((d.as_micros() << 16) / 1_000_000) as u32)
                    }
                    None => (0, 0),
                };
                ReceptionReport {
                    ssrc: b.ssrc,
                    fraction_lost: b.fraction_lost,
                    total_lost: b.total_lost,
                    last_sequence_number: b.highest_seq,
                    jitter: b.jitter,
                    last_sender_report: lsr,
                    delay: dlsr,
                }
            })
            .into_iter()
            .collect();
        let first: Box<dyn Packet> = match sent {
            Some(s) => Box::new(SenderReport {
                ssrc: ours,
                ntp_time: ntp_time(wall),
                rtp_time: s.rtp_time,
                packet_count: s.packets,
                octet_count: s.octets,
                reports,
                profile_extensions: Bytes::new(),
            }),
            None => Box::new(ReceiverReport {
                ssrc: ours,
                reports,
                profile_extensions: Bytes::new(),
            }),
        };
        let sdes: Box<dyn Packet> = Box::new(SourceDescription {
            chunks: vec![SourceDescriptionChunk {
                source: ours,
                items: vec![SourceDescriptionItem {
                    sdes_type: SdesType::SdesCname,
                    text: Bytes::from_static(b"switchboard"),
                }],
            }],
        });
        rtc_rtcp::packet::marshal(&[first, sdes])
            .ok()
            .map(|b| b.to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(bytes: &[u8]) -> Vec<Box<dyn Packet>> {
        let mut buf = bytes;
        rtc_rtcp::packet::unmarshal(&mut buf).unwrap()
    }

    #[test]
    fn a_sender_report_carries_what_we_sent_and_a_block_about_what_we_received() {
        let t0 = Instant::now();
        let mut leg = LegRtcp::new();
        // The phone's own SR arrives; our report 1.5 s later echoes its NTP middle bits.
        let theirs = SenderReport {
            ssrc: 0xAAAA,
            ntp_time: 0x1234_5678_9ABC_DEF0,
            ..Default::default()
        };
        let bytes = rtc_rtcp::packet::marshal(&[Box::new(theirs) as Box<dyn Packet>]).unwrap();
        assert!(leg.on_packet(&bytes, t0));
        let block = ReportBlock {
            ssrc: 0xAAAA,
            fraction_lost: 25,
            total_lost: 3,
            highest_seq: 0x1_0005,
            jitter: 40,
        };
        let sent = Sent {
            packets: 250,
            octets: 40_000,
            rtp_time: 123_456,
        };
        let out = leg
            .report(
                0xBBBB,
                Some(sent),
                Some(block),
                t0 + Duration::from_millis(1500),
                SystemTime::now(),
            )
            .unwrap();
        let packets = parse(&out);
        assert_eq!(packets.len(), 2, "SR then SDES");
        let sr = packets[0].as_any().downcast_ref::<SenderReport>().unwrap();
        assert_eq!(
            (sr.ssrc, sr.packet_count, sr.octet_count, sr.rtp_time),
            (0xBBBB, 250, 40_000, 123_456)
        );
        let r = &sr.reports[0];
        assert_eq!(
            (
                r.ssrc,
                r.fraction_lost,
                r.total_lost,
                r.last_sequence_number,
                r.jitter
            ),
            (0xAAAA, 25, 3, 0x1_0005, 40)
        );
        assert_eq!(r.last_sender_report, 0x5678_9ABC);
        assert_eq!(r.delay, 3 * 65536 / 2, "1.5 s in 1/65536 s");
        let sdes = packets[1]
            .as_any()
            .downcast_ref::<SourceDescription>()
            .unwrap();
        assert_eq!(&sdes.chunks[0].items[0].text[..], b"switchboard");
    }

    #[test]
    fn before_we_send_anything_it_is_a_receiver_report() {
        let leg = LegRtcp::new();
        let out = leg
            .report(9, None, None, Instant::now(), SystemTime::now())
            .unwrap();
        let packets = parse(&out);
        let rr = packets[0]
            .as_any()
            .downcast_ref::<ReceiverReport>()
            .unwrap();
        assert_eq!(rr.ssrc, 9);
        assert!(rr.reports.is_empty());
    }

    #[test]
    fn ntp_time_counts_from_1900() {
        let t = UNIX_EPOCH + Duration::from_millis(1500);
        assert_eq!(ntp_time(t), ((NTP_UNIX_OFFSET + 1) << 32) | (1 << 31));
    }

    #[test]
    fn garbage_is_not_rtcp() {
        let mut leg = LegRtcp::new();
        assert!(!leg.on_packet(&[0x80, 0x00, 0x00], Instant::now()));
        assert_eq!(leg.received(), 0);
    }
}
