//! Handing a plain bridge's two streams to the kernel, and taking them back before
//! anything needs the packets again (see [`crate::media::kernel`]).
//!
//! A relay hands over at its one-second check, once the call is a same-codec bridge
//! with no tap, no SRTP and both peers latched, and each direction has carried a
//! packet here (so the re-stamping offsets are known). The kernel then re-stamps with
//! the same offsets, so the stream a phone hears is the same whichever path carries
//! it. The relay takes both directions back before it applies any control message
//! (a recording or supervisor starting, new SDP, the end), and when a packet the
//! kernel would not take reaches it (a new source or SSRC); it may hand them over
//! again at a later check.

use std::net::{SocketAddr, SocketAddrV4};
use std::sync::atomic::Ordering::Relaxed;

use super::{Kind, Relay, Side};
use crate::media::kernel::{self, Handover, Progress, StreamKey, Table};

/// A relay's streams in the kernel, by sending side (None: that direction stays with
/// the relay), and how far the kernel had got at the last look.
pub(super) struct Offload {
    keys: [Option<StreamKey>; 2],
    seen: [Progress; 2],
}

impl Relay {
    /// Once a second: takes in what the kernel did, or hands the streams over if the
    /// call has become a plain bridge.
    pub(super) fn kernel_check(&mut self, table: Option<&mut Table>) {
        let Some(table) = table else {
            return;
        };
        if self.offload.is_some() {
            self.absorb_kernel(table, false);
            return;
        }
        if self.kernel_refused {
            return;
        }
        let Some(plan) = self.handovers() else {
            return;
        };
        let mut keys = [None, None];
        for (i, (ours, h)) in plan
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((i, p.as_ref()?)))
        {
            match table.hand_over(*ours, h) {
                Ok(key) => keys[i] = Some(key),
                Err(e) => {
                    // A full table (more calls than it holds) or a kernel that changed
                    // its mind: this call stays with the relay.
                    tracing::warn!(error = %e, "cannot hand a bridge to the kernel");
                    for key in keys.iter().flatten() {
                        table.take_back(key);
                    }
                    self.kernel_refused = true;
                    return;
                }
            }
        }
        self.offload = Some(Box::new(Offload {
            keys,
            seen: [Progress::default(); 2],
        }));
    }

    /// Takes both streams back from the kernel (if it has them), counting what it did.
    pub(super) fn take_back_from_kernel(&mut self, table: Option<&mut Table>) {
        if let Some(table) = table {
            self.absorb_kernel(table, true);
        }
    }

    /// Whether the kernel, forwarding this relay's streams, would have left `pkt` from
    /// `src` to the relay for a reason that means the call changed: a new source or a
    /// new SSRC. (Key events and packets queued before the hand-over are expected.)
    pub(super) fn kernel_left(&self, from: Side, pkt: &[u8], src: SocketAddr) -> bool {
        let Some(off) = self.offload.as_deref() else {
            return false;
        };
        if pkt.len() < 12 {
            return false;
        }
        // A new source on either leg: the kernel sends to, or takes from, the old one.
        if self.legs[from.idx()].latched_rtp != Some(src) {
            return true;
        }
        if off.keys[from.idx()].is_none() {
            return false;
        }
        let ssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
        let expected = self.rewriters[from.other().idx()].mapping().map(|m| m.0);
        if expected != Some(ssrc) {
            return true;
        }
        // The kernel also leaves a restart of the numbering (a jump of 3,000 or more) to
        // the relay. What the relay last absorbed is at most a second behind the kernel.
        let Some((_, max_seq, _)) = self.reception[from.idx()].position() else {
            return false;
        };
        let seq = u16::from_be_bytes([pkt[2], pkt[3]]);
        let ahead = seq.wrapping_sub(max_seq as u16);
        (3000..=u16::MAX - 100).contains(&ahead)
    }

    /// Each direction's hand-over, if the call is a plain bridge the kernel can carry
    /// (None: none). A direction from a peer elsewhere to a peer on this host stays
    /// with the relay: a packet from our own address coming in on another interface
    /// than loopback is a martian to IP, and the kernel could not deliver it.
    fn handovers(&self) -> Option<[Option<(SocketAddrV4, Handover)>; 2]> {
        if self.taps.is_some() || self.supervisor.is_some() {
            return None;
        }
        let (a, b) = self.formats?;
        if a.codec != b.codec || self.legs.iter().any(|l| l.ports.is_encrypted()) {
            return None;
        }
        let plan = |from: Side| -> Option<(SocketAddrV4, Handover)> {
            let to = from.other();
            let (src, dst) = (&self.legs[from.idx()], &self.legs[to.idx()]);
            let ours = kernel::key_of(src.ports.ip(), src.ports.port())?;
            let peer = kernel::v4(src.latched_rtp?)?;
            let out_to = kernel::v4(dst.destination(Kind::Rtp)?)?;
            let (in_ssrc, seq_offset, ts_offset, last_seq, last_ts) =
                self.rewriters[to.idx()].mapping()?;
            let (ssrc, max_seq, jitter16) = self.reception[from.idx()].position()?;
            if ssrc != in_ssrc {
                return None;
            }
            // Last, as they ask the kernel (a route, the host's addresses).
            let out_ip = kernel::source_for(dst.ports.ip(), out_to)?;
            let out_from = SocketAddrV4::new(out_ip, dst.ports.port());
            let out_ifindex = kernel::egress_ifindex(out_ip, *out_to.ip())?;
            if out_ifindex == 0 && !kernel::is_local(*peer.ip()) {
                return None;
            }
            let event_pt = if from == Side::A {
                a.event_pt
            } else {
                b.event_pt
            };
            let h = Handover {
                peer,
                out_from,
                out_to,
                event_pt,
                in_ssrc,
                out_ssrc: self.rewriters[to.idx()].ssrc(),
                seq_offset,
                ts_offset,
                last_seq,
                last_ts,
                max_seq,
                jitter16,
                out_ifindex,
            };
            Some((ours, h))
        };
        let plans = [plan(Side::A), plan(Side::B)];
        plans.iter().any(Option::is_some).then_some(plans)
    }

    /// Takes in what the kernel did since the last look: the packet counters, the
    /// reception statistics, the newest sequence number and timestamp sent, the time of
    /// the last packet (for the media timeout). With `take_back`, the streams leave the
    /// kernel first-thing after the look.
    fn absorb_kernel(&mut self, table: &mut Table, take_back: bool) {
        let Some(off) = self.offload.as_deref_mut() else {
            return;
        };
        for from in [Side::A, Side::B] {
            let (i, to) = (from.idx(), from.other().idx());
            let Some(key) = &off.keys[i] else {
                continue;
            };
            let progress = if take_back {
                table.take_back(key)
            } else {
                table.progress(key)
            };
            let Some(p) = progress else {
                continue;
            };
            let seen = off.seen[i];
            off.seen[i] = p;
            let packets = p.packets.saturating_sub(seen.packets);
            if packets == 0 {
                continue;
            }
            self.counters.input[i].fetch_add(packets, Relaxed);
            self.counters.output[to].fetch_add(packets, Relaxed);
            if self.counters.kernel.fetch_add(packets, Relaxed) == 0 {
                // The call's first packets in the kernel: it counts as carried there, as
                // its record's media path will say.
                kernel::count_call();
            }
            self.octets[to] += p.octets.saturating_sub(seen.octets);
            self.reception[i].absorb(
                packets,
                p.max_seq,
                p.jitter16,
                p.jitter_sum.saturating_sub(seen.jitter_sum),
                p.jitter_samples.saturating_sub(seen.jitter_samples),
            );
            if let Some(at) = p.last_arrival {
                self.last_rtp[i] = self.last_rtp[i].max(at);
                self.rewriters[to].absorb(p.last_seq, p.last_ts, at);
            }
        }
        if take_back {
            self.offload = None;
        }
    }
}
