//! The one RTP header parser (RFC 3550 §5.1): every place that reads a payload goes
//! through it, so CSRCs, a header extension (X bit) and padding (P bit) are handled the
//! same everywhere. Borrows the packet; allocates nothing.

/// The fixed header's length.
pub const HEADER_LEN: usize = 12;

/// The fields of one RTP packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rtp<'a> {
    pub payload_type: u8,
    pub marker: bool,
    pub seq: u16,
    pub timestamp: u32,
    pub ssrc: u32,
    /// After CSRCs and any header extension, before any padding.
    pub payload: &'a [u8],
}

/// Parses a version-2 RTP packet; `None` if it is not one or is cut short.
pub fn parse(pkt: &[u8]) -> Option<Rtp<'_>> {
    if pkt.len() < HEADER_LEN || pkt[0] >> 6 != 2 {
        return None;
    }
    let mut start = HEADER_LEN + 4 * usize::from(pkt[0] & 0x0f);
    if pkt[0] & 0x10 != 0 {
        // Profile-specific 16 bits, then the extension's length in 32-bit words.
        let words = pkt.get(start + 2..start + 4)?;
        start += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    let mut end = pkt.len();
    if pkt[0] & 0x20 != 0 {
        // The last octet counts the padding, itself included.
        let pad = usize::from(*pkt.last()?);
        if pad == 0 {
            return None;
        }
        end = end.checked_sub(pad)?;
    }
    let payload = pkt.get(start..end)?;
    Some(Rtp {
        payload_type: pkt[1] & 0x7f,
        marker: pkt[1] & 0x80 != 0,
        seq: u16::from_be_bytes([pkt[2], pkt[3]]),
        timestamp: u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]),
        ssrc: u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]),
        payload,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An RTP packet with `csrcs` CSRCs, an extension of `ext_words` words if given, and
    /// `pad` octets of padding.
    pub(crate) fn packet(
        pt: u8,
        payload: &[u8],
        csrcs: u8,
        ext_words: Option<u16>,
        pad: u8,
    ) -> Vec<u8> {
        let mut first = 0x80 | csrcs;
        if ext_words.is_some() {
            first |= 0x10;
        }
        if pad > 0 {
            first |= 0x20;
        }
        let mut p = vec![
            first,
            pt | 0x80,
            0,
            7,
            0,
            0,
            3,
            0x20,
            0xAA,
            0xBB,
            0xCC,
            0xDD,
        ];
        for i in 0..csrcs {
            p.extend_from_slice(&[0, 0, 0, i]);
        }
        if let Some(words) = ext_words {
            p.extend_from_slice(&[0xBE, 0xDE]);
            p.extend_from_slice(&words.to_be_bytes());
            p.extend(std::iter::repeat_n(0x11, usize::from(words) * 4));
        }
        p.extend_from_slice(payload);
        if pad > 0 {
            p.extend(std::iter::repeat_n(0, usize::from(pad) - 1));
            p.push(pad);
        }
        p
    }

    #[test]
    fn csrcs_extension_and_padding_are_skipped_to_the_payload() {
        let event = [5, 0x8a, 0x03, 0x20];
        for (csrcs, ext, pad) in [
            (0, None, 0),
            (2, None, 0),
            (0, Some(2), 0),
            (0, None, 4),
            (3, Some(1), 8),
        ] {
            let p = packet(101, &event, csrcs, ext, pad);
            let r = parse(&p).unwrap_or_else(|| panic!("{csrcs} {ext:?} {pad}"));
            assert_eq!(
                r.payload, &event,
                "csrcs {csrcs}, extension {ext:?}, padding {pad}"
            );
            assert_eq!(
                (r.payload_type, r.marker, r.seq, r.timestamp, r.ssrc),
                (101, true, 7, 800, 0xAABBCCDD)
            );
        }
    }

    #[test]
    fn short_or_lying_packets_are_refused_not_read_past() {
        assert_eq!(parse(&[0x80, 0, 0]), None);
        assert_eq!(parse(&packet(0, b"x", 0, None, 0)[..11]), None);
        // Version 1.
        let mut p = packet(0, b"voice", 0, None, 0);
        p[0] = 0x40;
        assert_eq!(parse(&p), None);
        // An extension longer than the packet, padding longer than the packet.
        let mut p = packet(0, b"voice", 0, Some(1), 0);
        p[15] = 200;
        assert_eq!(parse(&p), None);
        let mut p = packet(0, b"voice", 0, None, 2);
        *p.last_mut().unwrap() = 250;
        assert_eq!(parse(&p), None);
        // Fifteen CSRCs announced, none there.
        let mut p = packet(0, b"", 0, None, 0);
        p[0] |= 0x0f;
        assert_eq!(parse(&p), None);
    }
}
