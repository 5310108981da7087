//! The transport edge: UDP sockets, TCP and TLS connections, IPv4 and IPv6.
//!
//! This is the only part of the SIP stack that does IO. Receivers hand whole messages (one
//! datagram, or one Content-Length-framed chunk of a stream) to the switch over a channel;
//! the switch sends through a [`Transports`] value that it alone owns, so the TCP connection
//! table has exactly one owner and needs no lock.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;

use super::message::header_end;
use super::tls::TlsIdentity;
use super::transaction::Peer;
use crate::config::{Listener, Transport};

/// Largest header section accepted on a stream before the connection is judged broken.
const MAX_HEAD: usize = 64 * 1024;
/// Largest body accepted on a stream.
const MAX_BODY: usize = 1024 * 1024;
/// How long a started message may take to arrive in full; a peer trickling bytes
/// (slowloris) is cut off. An idle connection with nothing pending is kept: registered
/// phones keep theirs open for hours.
const PARTIAL_MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);
/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);
/// Accepted connections alive at once; beyond this new ones are closed at once, so a
/// flood cannot exhaust file descriptors the UDP side and the RTP ports need.
const MAX_TCP_CONNECTIONS: usize = 4096;

/// What the receivers tell the switch.
#[derive(Debug)]
pub enum Inbound {
    Message {
        peer: Peer,
        bytes: Vec<u8>,
        /// When it came off the socket (admission looks at how long it waited).
        received: std::time::Instant,
    },
    Connected {
        peer: Peer,
        writer: mpsc::Sender<Vec<u8>>,
    },
    Closed {
        peer: Peer,
    },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FramingError {
    #[error("header section larger than {MAX_HEAD} bytes")]
    HeadTooLarge,
    #[error("Content-Length missing or invalid on a stream")]
    BadLength,
    #[error("body larger than {MAX_BODY} bytes")]
    BodyTooLarge,
}

/// Strips the CRLFs ahead of a message on a stream and returns how many keep-alive
/// pings (a double CRLF, RFC 5626 §4.4.1) they complete; each is owed a pong (one CRLF).
/// `crlfs` carries a ping's first half across reads.
pub fn take_keepalives(buf: &mut BytesMut, crlfs: &mut u32) -> u32 {
    let mut pings = 0;
    loop {
        if buf.starts_with(b"\r\n") {
            buf.advance(2);
            *crlfs += 1;
            if *crlfs == 2 {
                pings += 1;
                *crlfs = 0;
            }
        } else if buf.first().is_some_and(|b| *b == b'\n') {
            buf.advance(1);
        } else {
            break;
        }
    }
    if !buf.is_empty() && !buf.starts_with(b"\r") {
        // A message begins: what came before it was no ping.
        *crlfs = 0;
    }
    pings
}

/// Cuts the next complete message off a stream buffer (RFC 3261 §18.3: Content-Length
/// frames messages on streams). Leading CRLFs (keep-alives, RFC 5626) are skipped.
pub fn next_frame(buf: &mut BytesMut) -> Result<Option<Vec<u8>>, FramingError> {
    while buf.first().is_some_and(|b| *b == b'\r' || *b == b'\n') {
        buf.advance(1);
    }
    let Some((head_len, body_start)) = header_end(buf) else {
        if buf.len() > MAX_HEAD {
            return Err(FramingError::HeadTooLarge);
        }
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&buf[..head_len]);
    let mut length = None;
    for line in head.lines().skip(1) {
        if let Some((name, value)) = line.split_once(':') {
            let name = name.trim();
            if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("l") {
                length = Some(
                    value
                        .trim()
                        .parse::<usize>()
                        .map_err(|_| FramingError::BadLength)?,
                );
            }
        }
    }
    let length = length.ok_or(FramingError::BadLength)?;
    if length > MAX_BODY {
        return Err(FramingError::BodyTooLarge);
    }
    if buf.len() < body_start + length {
        return Ok(None);
    }
    Ok(Some(buf.split_to(body_start + length).to_vec()))
}

/// The sending side, owned by the switch.
pub struct Transports {
    udp: Vec<(SocketAddr, Arc<UdpSocket>)>,
    /// TCP and TLS connections, by peer.
    streams: HashMap<Peer, mpsc::Sender<Vec<u8>>>,
    inbound: mpsc::Sender<Inbound>,
}

/// What the listeners bound, for Via and Contact.
pub struct Bound {
    pub transports: Transports,
    pub local: Vec<(Transport, SocketAddr)>,
}

/// Binds every listener and spawns its receive loop.
pub async fn bind(
    listeners: &[Listener],
    tls: Option<Arc<TlsIdentity>>,
    inbound: mpsc::Sender<Inbound>,
) -> std::io::Result<Bound> {
    bind_with(listeners, tls, inbound, PARTIAL_MESSAGE_TIMEOUT).await
}

/// [`bind`] with another limit for unfinished TCP messages (tests use a short one).
pub async fn bind_with(
    listeners: &[Listener],
    tls: Option<Arc<TlsIdentity>>,
    inbound: mpsc::Sender<Inbound>,
    partial_message_timeout: std::time::Duration,
) -> std::io::Result<Bound> {
    let mut udp = Vec::new();
    let mut local = Vec::new();
    for l in listeners {
        match l.transport {
            Transport::Udp => {
                let sock = Arc::new(UdpSocket::bind(l.addr).await?);
                let addr = sock.local_addr()?;
                local.push((Transport::Udp, addr));
                udp.push((addr, sock.clone()));
                tokio::spawn(udp_loop(sock, inbound.clone()));
            }
            Transport::Tcp | Transport::Tls => {
                let tls = match l.transport {
                    Transport::Tls => Some(tls.clone().ok_or_else(|| {
                        std::io::Error::other("a tls: listener needs a certificate")
                    })?),
                    _ => None,
                };
                let listener = TcpListener::bind(l.addr).await?;
                local.push((l.transport, listener.local_addr()?));
                tokio::spawn(tcp_accept_loop(
                    listener,
                    tls,
                    inbound.clone(),
                    partial_message_timeout,
                ));
            }
        }
    }
    Ok(Bound {
        transports: Transports {
            udp,
            streams: HashMap::new(),
            inbound,
        },
        local,
    })
}

async fn udp_loop(sock: Arc<UdpSocket>, inbound: mpsc::Sender<Inbound>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                // Keep-alives: STUN Binding requests are answered (RFC 5626 §4.4.2), CRLF
                // pings carry no message.
                if super::stun::is_stun(&buf[..n]) {
                    if let Some(reply) = super::stun::answer(&buf[..n], from) {
                        let _ = sock.send_to(&reply, from).await;
                    }
                    continue;
                }
                if buf[..n].iter().all(|b| b.is_ascii_whitespace()) {
                    continue;
                }
                let peer = Peer {
                    transport: Transport::Udp,
                    addr: from,
                };
                if inbound
                    .send(Inbound::Message {
                        peer,
                        bytes: buf[..n].to_vec(),
                        received: std::time::Instant::now(),
                    })
                    .await
                    .is_err()
                {
                    return;
                }
            }
            // ICMP port unreachable surfaces here on some systems; it is not fatal.
            Err(e) => tracing::debug!(error = %e, "udp receive error"),
        }
    }
}

/// Accepts TCP connections (handshaking TLS first on a `tls:` listener).
async fn tcp_accept_loop(
    listener: TcpListener,
    tls: Option<Arc<TlsIdentity>>,
    inbound: mpsc::Sender<Inbound>,
    partial_message_timeout: std::time::Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_TCP_CONNECTIONS));
    loop {
        match listener.accept().await {
            Ok((stream, from)) => match slots.clone().try_acquire_owned() {
                Ok(slot) => {
                    let Some(tls) = &tls else {
                        let peer = Peer {
                            transport: Transport::Tcp,
                            addr: from,
                        };
                        spawn_connection(
                            stream,
                            peer,
                            inbound.clone(),
                            Some(slot),
                            partial_message_timeout,
                        );
                        continue;
                    };
                    // The handshake runs on its own task: a slow client holds up no one.
                    let acceptor = tls.acceptor();
                    let inbound = inbound.clone();
                    tokio::spawn(async move {
                        let handshake =
                            tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                        match handshake.await {
                            Ok(Ok(stream)) => {
                                let peer = Peer {
                                    transport: Transport::Tls,
                                    addr: from,
                                };
                                spawn_connection(
                                    stream,
                                    peer,
                                    inbound,
                                    Some(slot),
                                    partial_message_timeout,
                                );
                            }
                            Ok(Err(e)) => tracing::info!(%from, error = %e, "TLS handshake failed"),
                            Err(_) => tracing::info!(%from, "TLS handshake timed out"),
                        }
                    });
                }
                Err(_) => {
                    tracing::warn!(%from, "too many TCP connections; refusing one");
                    drop(stream);
                }
            },
            Err(e) => {
                tracing::warn!(error = %e, "tcp accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// Runs one TCP or TLS connection: a reader that frames messages and a writer fed by a
/// channel. `slot` (accepted connections) is held for the connection's life.
fn spawn_connection<S>(
    stream: S,
    peer: Peer,
    inbound: mpsc::Sender<Inbound>,
    slot: Option<tokio::sync::OwnedSemaphorePermit>,
    partial_message_timeout: std::time::Duration,
) -> mpsc::Sender<Vec<u8>>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let from = peer.addr;
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(256);
    let writer = tx.clone();
    let pong = tx.clone();
    tokio::spawn(async move {
        while let Some(bytes) = rx.recv().await {
            // TLS holds written bytes in its own buffer until flushed.
            if wr.write_all(&bytes).await.is_err() || wr.flush().await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        if inbound
            .send(Inbound::Connected { peer, writer })
            .await
            .is_err()
        {
            return;
        }
        let _slot = slot;
        let mut buf = BytesMut::with_capacity(8192);
        let mut crlfs = 0;
        'conn: loop {
            // Bytes of an unfinished message are waiting: the rest must come soon.
            let read = if buf.iter().any(|b| !b.is_ascii_whitespace()) {
                match tokio::time::timeout(partial_message_timeout, rd.read_buf(&mut buf)).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(%from, "closing TCP connection: message never completed");
                        break;
                    }
                }
            } else {
                rd.read_buf(&mut buf).await
            };
            match read {
                Ok(0) | Err(_) => break,
                Ok(_) => loop {
                    // One pong answers any number of pings read at once, and only while
                    // the writer's queue has room to spare: pings must never crowd out
                    // the messages (a full queue makes a send fail and drops the flow).
                    if take_keepalives(&mut buf, &mut crlfs) > 0 && pong.capacity() > 128 {
                        let _ = pong.try_send(b"\r\n".to_vec());
                    }
                    match next_frame(&mut buf) {
                        Ok(Some(bytes)) => {
                            if inbound
                                .send(Inbound::Message {
                                    peer,
                                    bytes,
                                    received: std::time::Instant::now(),
                                })
                                .await
                                .is_err()
                            {
                                break 'conn;
                            }
                        }
                        Ok(None) => break,
                        Err(e) => {
                            // A stream that lost its framing cannot be resynchronised.
                            tracing::warn!(%from, error = %e, "closing TCP connection");
                            break 'conn;
                        }
                    }
                },
            }
        }
        let _ = inbound.send(Inbound::Closed { peer }).await;
    });
    tx
}

impl Transports {
    /// Sends bytes to a peer: UDP from the socket of the same address family; TCP on the
    /// existing connection to that address, or a new one.
    pub fn send(&mut self, to: Peer, bytes: Vec<u8>) {
        match to.transport {
            Transport::Udp => {
                let sock = self
                    .udp
                    .iter()
                    .find(|(a, _)| a.is_ipv4() == to.addr.is_ipv4())
                    .or(self.udp.first());
                match sock {
                    Some((_, s)) => {
                        if let Err(e) = s.try_send_to(&bytes, to.addr) {
                            tracing::debug!(to = %to.addr, error = %e, "udp send failed");
                        }
                    }
                    None => tracing::warn!(to = %to.addr, "no UDP listener to send from"),
                }
            }
            Transport::Tcp | Transport::Tls => {
                if let Some(w) = self.streams.get(&to) {
                    if w.try_send(bytes.clone()).is_ok() {
                        return;
                    }
                    self.streams.remove(&to);
                }
                if to.transport == Transport::Tls {
                    // Phones on TLS keep the connection they registered on; Switchboard
                    // opens no TLS connections of its own (no trunk dials out over TLS).
                    tracing::warn!(to = %to.addr, "no TLS connection to send on; dropped");
                    return;
                }
                // No connection (or it died): open one, and let it announce itself.
                let inbound = self.inbound.clone();
                tokio::spawn(async move {
                    match TcpStream::connect(to.addr).await {
                        Ok(stream) => {
                            let w = spawn_connection(
                                stream,
                                to,
                                inbound,
                                None,
                                PARTIAL_MESSAGE_TIMEOUT,
                            );
                            let _ = w.send(bytes).await;
                        }
                        Err(e) => tracing::warn!(to = %to.addr, error = %e, "tcp connect failed"),
                    }
                });
            }
        }
    }

    pub fn connected(&mut self, peer: Peer, writer: mpsc::Sender<Vec<u8>>) {
        self.streams.insert(peer, writer);
    }

    pub fn closed(&mut self, peer: Peer) {
        self.streams.remove(&peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_double_crlf_ping_is_counted_once_even_split_across_reads() {
        let mut crlfs = 0;
        let mut buf = BytesMut::from(&b"\r\n\r\n\r\n"[..]);
        assert_eq!(take_keepalives(&mut buf, &mut crlfs), 1);
        buf.extend_from_slice(b"\r\n");
        assert_eq!(take_keepalives(&mut buf, &mut crlfs), 1, "the second half");
        // A lone CRLF before a message is no ping.
        buf.extend_from_slice(b"\r\nOPTIONS sip:a SIP/2.0\r\n");
        assert_eq!(take_keepalives(&mut buf, &mut crlfs), 0);
        assert!(buf.starts_with(b"OPTIONS"));
        assert_eq!(crlfs, 0);
    }

    #[test]
    fn frames_split_on_content_length_and_skip_keepalives() {
        let mut buf = BytesMut::from(
            &b"\r\n\r\nOPTIONS sip:a SIP/2.0\r\nContent-Length: 3\r\n\r\nabcBYE sip:b SIP/2.0\r\nl: 0\r\n\r\nINV"[..],
        );
        let first = next_frame(&mut buf).unwrap().unwrap();
        assert!(first.starts_with(b"OPTIONS") && first.ends_with(b"\r\n\r\nabc"));
        let second = next_frame(&mut buf).unwrap().unwrap();
        assert!(second.starts_with(b"BYE"));
        assert_eq!(next_frame(&mut buf).unwrap(), None);
        assert_eq!(&buf[..], b"INV");
    }

    #[test]
    fn partial_body_waits_and_bad_length_fails() {
        let mut buf =
            BytesMut::from(&b"MESSAGE sip:a SIP/2.0\r\nContent-Length: 10\r\n\r\nabc"[..]);
        assert_eq!(next_frame(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"defghij");
        assert!(next_frame(&mut buf).unwrap().is_some());
        let mut bad = BytesMut::from(&b"MESSAGE sip:a SIP/2.0\r\nContent-Length: ten\r\n\r\n"[..]);
        assert_eq!(next_frame(&mut bad), Err(FramingError::BadLength));
        let mut none = BytesMut::from(&b"MESSAGE sip:a SIP/2.0\r\nTo: x\r\n\r\n"[..]);
        assert_eq!(next_frame(&mut none), Err(FramingError::BadLength));
        let mut huge = BytesMut::from(&vec![b'a'; MAX_HEAD + 1][..]);
        assert_eq!(next_frame(&mut huge), Err(FramingError::HeadTooLarge));
    }

    async fn next(rx: &mut mpsc::Receiver<Inbound>) -> Option<Inbound> {
        let wait = std::time::Duration::from_secs(2);
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }

    #[tokio::test]
    async fn a_trickled_tcp_message_is_cut_off_but_an_idle_connection_stays() {
        let (tx, mut rx) = mpsc::channel(16);
        let listeners = [Listener {
            transport: Transport::Tcp,
            addr: "127.0.0.1:0".parse().unwrap(),
        }];
        let limit = std::time::Duration::from_millis(200);
        let bound = bind_with(&listeners, None, tx, limit).await.unwrap();
        let addr = bound.local[0].1;
        // Idle (only keep-alives): still open well past the limit.
        let mut idle = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(
            next(&mut rx).await,
            Some(Inbound::Connected { .. })
        ));
        idle.write_all(b"\r\n\r\n").await.unwrap();
        tokio::time::sleep(limit * 3).await;
        idle.write_all(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\n")
            .await
            .unwrap();
        assert!(matches!(next(&mut rx).await, Some(Inbound::Message { .. })));
        // A message that never completes: the connection is closed.
        let mut slow = TcpStream::connect(addr).await.unwrap();
        assert!(matches!(
            next(&mut rx).await,
            Some(Inbound::Connected { .. })
        ));
        slow.write_all(b"OPTIONS sip:a SIP/2.0\r\nVia: SIP/2.0/TCP")
            .await
            .unwrap();
        let closed = next(&mut rx).await;
        assert!(matches!(closed, Some(Inbound::Closed { .. })), "{closed:?}");
    }

    #[tokio::test]
    async fn udp_and_tcp_deliver_messages() {
        let (tx, mut rx) = mpsc::channel(16);
        let listeners = [
            Listener {
                transport: Transport::Udp,
                addr: "127.0.0.1:0".parse().unwrap(),
            },
            Listener {
                transport: Transport::Tcp,
                addr: "127.0.0.1:0".parse().unwrap(),
            },
        ];
        let bound = bind(&listeners, None, tx).await.unwrap();
        let udp_addr = bound.local[0].1;
        let tcp_addr = bound.local[1].1;
        let c = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        c.send_to(b"OPTIONS sip:a SIP/2.0\r\n\r\n", udp_addr)
            .await
            .unwrap();
        match rx.recv().await.unwrap() {
            Inbound::Message { peer, bytes, .. } => {
                assert_eq!(peer.transport, Transport::Udp);
                assert!(bytes.starts_with(b"OPTIONS"));
            }
            other => panic!("{other:?}"),
        }
        let mut s = TcpStream::connect(tcp_addr).await.unwrap();
        s.write_all(b"OPTIONS sip:a SIP/2.0\r\nContent-Length: 0\r\n\r\nOPTIONS sip:b SIP/2.0\r\nContent-Length: 0\r\n\r\n").await.unwrap();
        assert!(matches!(
            rx.recv().await.unwrap(),
            Inbound::Connected { .. }
        ));
        for want in [&b"OPTIONS sip:a"[..], &b"OPTIONS sip:b"[..]] {
            match rx.recv().await.unwrap() {
                Inbound::Message { peer, bytes, .. } => {
                    assert_eq!(peer.transport, Transport::Tcp);
                    assert!(bytes.starts_with(want));
                }
                other => panic!("{other:?}"),
            }
        }
    }
}
