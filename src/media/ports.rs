//! The RTP/RTCP port pool.
//!
//! [`PortPool`] owns a configured UDP port range and hands out *pairs* of
//! bound sockets: an even RTP port `p` and the RTCP port `p + 1` (RFC 3550
//! §11). A pair is leased as a [`MediaPorts`] value and goes back to the pool
//! when that value is dropped, so a port can never leak past the call that
//! used it.
//!
//! Allocation is synchronous: sockets are bound with `std::net` (binding a UDP
//! socket never blocks) and converted to tokio sockets. [`PortPool::allocate`]
//! must therefore be called from within a tokio runtime, because registering a
//! socket with the reactor needs one.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::net::UdpSocket;

use crate::media::srtp::{Inbound, MasterKey, SrtpSession};

/// A range of UDP ports from which RTP/RTCP pairs are leased.
///
/// The free list is a FIFO behind a plain `std::sync::Mutex`. The lock is held
/// only for a pop or a push (never across a bind or an `.await`), happens once
/// per call set-up/tear-down rather than per packet, and so is uncontended in
/// practice; a lock-free structure would buy nothing but complexity. FIFO
/// order (rather than a stack) delays the reuse of a just-released pair as
/// long as possible, so stray packets still in flight to a finished call are
/// unlikely to reach the next call that gets the same ports.
#[derive(Debug)]
pub struct PortPool {
    bind_ip: IpAddr,
    free: Mutex<VecDeque<u16>>,
}

impl PortPool {
    /// A pool of the pairs `(p, p + 1)` with `p` even and `low <= p < p + 1 <= high`.
    ///
    /// Port 0 is never handed out (binding it would pick an ephemeral port).
    /// An empty range is allowed; every allocation from it then fails.
    pub fn new(bind_ip: IpAddr, low: u16, high: u16) -> Arc<PortPool> {
        // u32 arithmetic: rounding 65535 up to even must not overflow.
        let first = (u32::from(low.max(2)) + 1) & !1;
        let free = (first..u32::from(high))
            .step_by(2)
            .map(|p| p as u16)
            .collect();
        Arc::new(PortPool {
            bind_ip,
            free: Mutex::new(free),
        })
    }

    /// The address the sockets are bound to.
    pub fn bind_ip(&self) -> IpAddr {
        self.bind_ip
    }

    /// How many pairs are currently free (in the pool, whether or not another
    /// process happens to occupy them).
    pub fn available(&self) -> usize {
        self.lock().len()
    }

    /// Leases a free RTP/RTCP pair, bound on [`bind_ip`](Self::bind_ip).
    ///
    /// Pairs that fail to bind (another process holds one of the two ports)
    /// are skipped and put at the back of the list, to be retried later. Fails
    /// with `AddrNotAvailable` once every free pair has been tried.
    ///
    /// Must be called within a tokio runtime.
    pub fn allocate(self: &Arc<Self>) -> io::Result<MediaPorts> {
        // Each free pair is tried at most once per call, so a range that is
        // fully occupied by other processes ends in an error, not a spin.
        let attempts = self.available();
        for _ in 0..attempts {
            let Some(port) = self.lock().pop_front() else {
                break;
            };
            match self.bind_pair(port) {
                Ok((rtp, rtcp)) => {
                    return Ok(MediaPorts {
                        rtp,
                        rtcp,
                        lease: Lease {
                            port,
                            pool: Arc::clone(self),
                        },
                        srtp: None,
                    })
                }
                Err(e) => {
                    tracing::debug!(port, error = %e, "RTP port pair busy, skipping");
                    self.lock().push_back(port);
                }
            }
        }
        Err(io::Error::new(
            io::ErrorKind::AddrNotAvailable,
            "RTP port range exhausted: no free port pair could be bound",
        ))
    }

    fn bind_pair(&self, port: u16) -> io::Result<(UdpSocket, UdpSocket)> {
        let bind = |p: u16| -> io::Result<UdpSocket> {
            let sock = std::net::UdpSocket::bind(SocketAddr::new(self.bind_ip, p))?;
            sock.set_nonblocking(true)?;
            UdpSocket::from_std(sock)
        };
        // If the RTCP bind fails, the RTP socket is dropped (closed) here.
        Ok((bind(port)?, bind(port + 1)?))
    }

    fn release(&self, port: u16) {
        self.lock().push_back(port);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<u16>> {
        // The critical sections cannot panic half-way through, so a poisoned
        // lock still guards a consistent list.
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A leased RTP/RTCP socket pair. Dropping it closes both sockets and returns
/// the pair to its pool.
///
/// The sockets are tokio's while a task awaits them (the IVR's endpoint); a relay worker
/// polls plain ones itself ([`RawPorts`], see [`MediaPorts::into_raw`]).
#[derive(Debug)]
pub struct MediaPorts<S = UdpSocket> {
    /// The RTP socket, bound to the even port [`port`](Self::port).
    pub rtp: S,
    /// The RTCP socket, bound to `port() + 1`.
    pub rtcp: S,
    /// Declared after the sockets, so they are closed before the pair goes back.
    lease: Lease,
    /// The leg's SRTP, when it is encrypted: it travels with the sockets from the IVR's
    /// endpoint to the bridge and back, so rollover counters and replay windows carry on.
    srtp: Option<Box<SrtpSession>>,
}

/// A pair leased without tokio: non-blocking sockets a relay worker polls itself.
pub type RawPorts = MediaPorts<std::net::UdpSocket>;

/// The pair's place in its pool, given back when dropped.
#[derive(Debug)]
struct Lease {
    port: u16,
    pool: Arc<PortPool>,
}

impl Drop for Lease {
    fn drop(&mut self) {
        // The pair goes to the *back* of the FIFO, so it is not re-bound before the
        // sockets (dropped first, see `MediaPorts`) are closed; even if it were, the
        // bind would fail and the pair would simply be skipped.
        self.pool.release(self.port);
    }
}

/// Sending without waiting: a full socket buffer is an error (the packet is dropped).
pub trait Datagram {
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
}

impl Datagram for UdpSocket {
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        UdpSocket::try_send_to(self, buf, to)
    }
}

impl Datagram for std::net::UdpSocket {
    /// The socket is non-blocking (every pair is bound so).
    fn try_send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.send_to(buf, to)
    }
}

/// Why a packet from the leg was not taken (it is dropped and counted).
pub type Refused = crate::media::srtp::Refused;

impl MediaPorts {
    /// The same pair as plain non-blocking sockets, no longer registered with tokio.
    pub fn into_raw(self) -> io::Result<RawPorts> {
        self.map_sockets(UdpSocket::into_std)
    }
}

impl RawPorts {
    /// Back to tokio sockets. Must be called within a tokio runtime.
    pub fn into_tokio(self) -> io::Result<MediaPorts> {
        self.map_sockets(UdpSocket::from_std)
    }
}

impl<S: Datagram> MediaPorts<S> {
    /// Encrypts this leg from now on (or no longer, with `None`).
    pub fn set_srtp(&mut self, srtp: Option<SrtpSession>) {
        self.srtp = srtp.map(Box::new);
    }

    /// The leg's new key for what it sends (a re-INVITE re-keyed it).
    pub fn rekey_inbound(&mut self, key: &MasterKey) {
        if let Some(s) = &mut self.srtp {
            s.inbound = Inbound::new(key);
        }
    }

    /// Whether the leg's media is SRTP.
    pub fn is_encrypted(&self) -> bool {
        self.srtp.is_some()
    }

    /// An RTP packet received on the leg, as RTP: verified and decrypted in place when the
    /// leg is encrypted. Returns its plain length.
    pub fn open_rtp(&mut self, pkt: &mut [u8]) -> Result<usize, Refused> {
        match &mut self.srtp {
            Some(s) => s.inbound.unprotect_rtp(pkt),
            None => Ok(pkt.len()),
        }
    }

    /// An RTCP packet received on the leg, as RTCP (see [`MediaPorts::open_rtp`]).
    pub fn open_rtcp(&mut self, pkt: &mut [u8]) -> Result<usize, Refused> {
        match &mut self.srtp {
            Some(s) => s.inbound.unprotect_rtcp(pkt),
            None => Ok(pkt.len()),
        }
    }

    /// Sends the RTP packet `buf[..len]` without waiting (a full socket buffer drops it),
    /// protected in place first when the leg is encrypted: `buf` needs
    /// [`Suite::MAX_OVERHEAD`](crate::media::srtp::Suite::MAX_OVERHEAD) octets of room.
    pub fn send_rtp(&mut self, buf: &mut [u8], len: usize, dest: SocketAddr) -> io::Result<usize> {
        let len = match &mut self.srtp {
            Some(s) => s.outbound.protect_rtp(buf, len).ok_or_else(no_room)?,
            None => len,
        };
        self.rtp.try_send_to(&buf[..len], dest)
    }

    /// Sends an RTCP packet, as SRTCP when the leg is encrypted (see [`MediaPorts::send_rtp`]).
    pub fn send_rtcp(&mut self, buf: &mut [u8], len: usize, dest: SocketAddr) -> io::Result<usize> {
        let len = match &mut self.srtp {
            Some(s) => s.outbound.protect_rtcp(buf, len).ok_or_else(no_room)?,
            None => len,
        };
        self.rtcp.try_send_to(&buf[..len], dest)
    }
}

impl<S> MediaPorts<S> {
    /// The same lease with its sockets converted (the pair goes back if one fails).
    fn map_sockets<T>(self, f: impl Fn(S) -> io::Result<T>) -> io::Result<MediaPorts<T>> {
        let MediaPorts {
            rtp,
            rtcp,
            lease,
            srtp,
        } = self;
        Ok(MediaPorts {
            rtp: f(rtp)?,
            rtcp: f(rtcp)?,
            lease,
            srtp,
        })
    }

    /// The RTP port (what goes on the `m=` line); RTCP is this plus one.
    pub fn port(&self) -> u16 {
        self.lease.port
    }

    /// The IP address the sockets are bound to.
    pub fn ip(&self) -> IpAddr {
        self.lease.pool.bind_ip
    }
}

fn no_room() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "no room to protect the packet")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

    /// Finds `pairs` consecutive free port pairs on 127.0.0.1 and returns the
    /// first port. Random bases keep parallel tests out of each other's way.
    pub(crate) fn free_range(pairs: u16) -> u16 {
        for _ in 0..100 {
            let base = rand::random::<u16>() % 20_000 / 2 * 2 + 30_000;
            let held: io::Result<Vec<_>> = (base..base + 2 * pairs)
                .map(|p| std::net::UdpSocket::bind((LOCALHOST, p)))
                .collect();
            if held.is_ok() {
                return base;
            }
        }
        panic!("no free UDP port range found on 127.0.0.1");
    }

    #[tokio::test]
    async fn allocates_every_pair_then_reports_exhaustion() {
        let low = free_range(3);
        let pool = PortPool::new(LOCALHOST, low, low + 5);
        assert_eq!(pool.available(), 3);

        let leases: Vec<_> = (0..3).map(|_| pool.allocate().unwrap()).collect();
        let mut ports: Vec<_> = leases.iter().map(MediaPorts::port).collect();
        ports.sort();
        assert_eq!(ports, [low, low + 2, low + 4]);
        for lease in &leases {
            assert_eq!(lease.rtp.local_addr().unwrap().port(), lease.port());
            assert_eq!(lease.rtcp.local_addr().unwrap().port(), lease.port() + 1);
        }

        assert_eq!(pool.available(), 0);
        let err = pool.allocate().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AddrNotAvailable);
    }

    #[tokio::test]
    async fn odd_bounds_only_yield_complete_pairs() {
        // 1001..=1006 holds the even ports 1002 and 1004 with their +1;
        // 1006 has no 1007 within the range.
        let pool = PortPool::new(LOCALHOST, 1001, 1006);
        assert_eq!(pool.available(), 2);
        assert_eq!(PortPool::new(LOCALHOST, 0, 3).available(), 1); // never port 0
        assert_eq!(PortPool::new(LOCALHOST, 10, 10).available(), 0);
    }

    #[tokio::test]
    async fn dropping_a_lease_returns_the_pair() {
        let low = free_range(1);
        let pool = PortPool::new(LOCALHOST, low, low + 1);
        let lease = pool.allocate().unwrap();
        assert!(pool.allocate().is_err());
        drop(lease);
        assert_eq!(pool.available(), 1);
        let again = pool.allocate().unwrap();
        assert_eq!(again.port(), low);
    }

    #[tokio::test]
    async fn busy_pair_is_skipped_and_kept() {
        let low = free_range(2);
        let pool = PortPool::new(LOCALHOST, low, low + 3);
        // Another "process" holds the RTCP port of the first pair.
        let squatter = std::net::UdpSocket::bind((LOCALHOST, low + 1)).unwrap();

        let lease = pool.allocate().unwrap();
        assert_eq!(lease.port(), low + 2);
        // The busy pair stays in the pool for later...
        assert_eq!(pool.available(), 1);
        assert!(pool.allocate().is_err());
        // ...and is usable once the squatter leaves.
        drop(squatter);
        assert_eq!(pool.allocate().unwrap().port(), low);
    }
}
