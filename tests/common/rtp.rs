//! RTP packets the tests send and read, and capture files for SIPp's
//! `play_pcap_audio` to replay.

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The fields of an RTP packet (RFC 3550 §5.1) that the tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rtp {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    pub payload: Vec<u8>,
}

impl Rtp {
    /// The wire form: version 2, no padding, extension or CSRCs.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut p = Vec::with_capacity(12 + self.payload.len());
        p.push(0x80);
        p.push(self.payload_type & 0x7f | if self.marker { 0x80 } else { 0 });
        p.extend_from_slice(&self.seq.to_be_bytes());
        p.extend_from_slice(&self.timestamp.to_be_bytes());
        p.extend_from_slice(&self.ssrc.to_be_bytes());
        p.extend_from_slice(&self.payload);
        p
    }

    /// Reads a version 2 packet (CSRCs, a header extension and padding skipped).
    pub fn parse(p: &[u8]) -> Option<Rtp> {
        if p.len() < 12 || p[0] >> 6 != 2 {
            return None;
        }
        let mut start = 12 + 4 * usize::from(p[0] & 0x0f);
        if p[0] & 0x10 != 0 {
            let words = u16::from_be_bytes([*p.get(start + 2)?, *p.get(start + 3)?]);
            start += 4 + 4 * usize::from(words);
        }
        let mut end = p.len();
        if p[0] & 0x20 != 0 {
            end = end.checked_sub(usize::from(*p.last()?))?;
        }
        Some(Rtp {
            payload_type: p[1] & 0x7f,
            marker: p[1] & 0x80 != 0,
            seq: u16::from_be_bytes([p[2], p[3]]),
            timestamp: u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
            ssrc: u32::from_be_bytes([p[8], p[9], p[10], p[11]]),
            payload: p.get(start..end)?.to_vec(),
        })
    }
}

/// Writes a classic pcap file (microsecond timestamps, Ethernet link type) holding
/// one IPv4/UDP datagram from 127.0.0.1:`src_port` to 127.0.0.1:`dst_port` per
/// `(offset from the first, UDP payload)`. SIPp's `play_pcap_audio` replays such a
/// file with its timing, sending each payload as it is from the caller's media port
/// to the server's media address (only the addresses and ports are replaced).
pub fn write_udp_pcap(path: &Path, src_port: u16, dst_port: u16, packets: &[(Duration, Vec<u8>)]) {
    let mut out = Vec::new();
    // Global header: magic, version 2.4, UTC offset, accuracy, snap length, link type 1.
    out.extend_from_slice(&0xa1b2_c3d4u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&4u16.to_le_bytes());
    out.extend_from_slice(&0i32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&65_535u32.to_le_bytes());
    out.extend_from_slice(&1u32.to_le_bytes());
    let base = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
    for (id, (offset, payload)) in packets.iter().enumerate() {
        let udp_len = 8 + payload.len();
        let ip_len = 20 + udp_len;
        let mut frame = Vec::with_capacity(14 + ip_len);
        // Ethernet: destination and source MAC (zero, as on loopback), IPv4.
        frame.extend_from_slice(&[0; 12]);
        frame.extend_from_slice(&0x0800u16.to_be_bytes());
        // IPv4: version 4 with a 5-word header, no options, don't fragment, TTL 64, UDP.
        let mut ip = [0u8; 20];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&(ip_len as u16).to_be_bytes());
        ip[4..6].copy_from_slice(&(id as u16).to_be_bytes());
        ip[6] = 0x40;
        ip[8] = 64;
        ip[9] = 17;
        ip[12..16].copy_from_slice(&[127, 0, 0, 1]);
        ip[16..20].copy_from_slice(&[127, 0, 0, 1]);
        let sum: u32 = ip
            .chunks(2)
            .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
            .sum();
        let folded = (sum & 0xffff) + (sum >> 16);
        let checksum = !((folded & 0xffff) + (folded >> 16)) as u16;
        ip[10..12].copy_from_slice(&checksum.to_be_bytes());
        frame.extend_from_slice(&ip);
        // UDP, without a checksum (optional over IPv4; SIPp computes its own).
        frame.extend_from_slice(&src_port.to_be_bytes());
        frame.extend_from_slice(&dst_port.to_be_bytes());
        frame.extend_from_slice(&(udp_len as u16).to_be_bytes());
        frame.extend_from_slice(&0u16.to_be_bytes());
        frame.extend_from_slice(payload);
        // Record header: seconds, microseconds, captured and original length.
        let at = base + *offset;
        out.extend_from_slice(&(at.as_secs() as u32).to_le_bytes());
        out.extend_from_slice(&at.subsec_micros().to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        out.extend_from_slice(&frame);
    }
    std::fs::write(path, out).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}
