//! A phone registered through an edge proxy (RFC 3327 Path) with outbound (RFC 5626):
//! the registrar echoes the Path and takes the flow, a re-registration of the same flow
//! from a new address replaces the binding instead of adding a dead one, and a call to
//! the extension goes to the proxy with the Path as its Route, addressed to the
//! registered Contact, never to the phone's private address.

mod common;

use std::net::Ipv4Addr;
use std::time::Duration;

use common::digest;
use common::*;

const WAIT: Duration = Duration::from_secs(3);
const INSTANCE: &str = "\"<urn:uuid:6a8d3c1e-3f2b-4c55-9a7e-0c1d2e3f4a5b>\"";

/// The edge proxy: forwards the phone's REGISTERs (its own Via on top, the Path it
/// adds) and receives what Switchboard routes through it.
struct Edge {
    udp: RawUdp,
    server_uri: String,
    call_id: String,
    cseq: u32,
    user: &'static str,
    /// Whether the proxy says it supports outbound (`ob` on its Path URI).
    ob: bool,
}

impl Edge {
    fn path(&self) -> String {
        let ob = if self.ob { ";ob" } else { "" };
        format!("<sip:{};lr{ob}>", self.udp.sock.local_addr().unwrap())
    }

    /// A REGISTER of the user from the phone at `phone` (private), through the proxy.
    fn register(&mut self, phone: &str, authorization: Option<&str>) -> String {
        self.cseq += 1;
        let local = self.udp.sock.local_addr().unwrap();
        let auth = authorization
            .map(|a| format!("Authorization: {a}\r\n"))
            .unwrap_or_default();
        let msg = format!(
            "REGISTER {uri} SIP/2.0\r\n\
             Via: SIP/2.0/UDP {local};branch=z9hG4bK{proxy_branch}\r\n\
             Via: SIP/2.0/UDP {phone};branch=z9hG4bK{branch};rport\r\n\
             Max-Forwards: 69\r\n\
             From: <sip:{user}@{host}>;tag=p{cseq}\r\n\
             To: <sip:{user}@{host}>\r\n\
             Call-ID: {call_id}\r\n\
             CSeq: {cseq} REGISTER\r\n\
             Supported: path, outbound\r\n\
             Path: {path}\r\n\
             Contact: <sip:{user}@{phone};ob>;+sip.instance={INSTANCE};reg-id=1\r\n\
             Expires: 120\r\n\
             {auth}Content-Length: 0\r\n\r\n",
            uri = self.server_uri,
            host = self.server_uri.trim_start_matches("sip:"),
            proxy_branch = unique("e"),
            branch = unique("b"),
            cseq = self.cseq,
            call_id = self.call_id,
            path = self.path(),
            user = self.user,
        );
        self.udp.send(msg.as_bytes());
        self.udp
            .recv_final(WAIT, &mut Vec::new())
            .expect("no final response to REGISTER")
    }

    /// Registers through the challenge; the 200 OK.
    fn login(&mut self, phone: &str) -> String {
        let challenge = self.register(phone, None);
        assert_eq!(status_code(&challenge), Some(401), "{challenge}");
        let header = digest::register_answer(
            self.user,
            &format!("secret{}", self.user),
            &self.server_uri,
            digest::nonce(&challenge),
            1,
        );
        let ok = self.register(phone, Some(&header));
        assert_eq!(status_code(&ok), Some(200), "{ok}");
        ok
    }
}

fn headers<'a>(msg: &'a str, name: &str) -> Vec<&'a str> {
    msg.lines()
        .take_while(|l| !l.trim().is_empty())
        .filter_map(|l| l.split_once(':'))
        .filter(|(h, _)| h.trim().eq_ignore_ascii_case(name))
        .map(|(_, v)| v.trim())
        .collect()
}

#[test]
fn a_phone_registered_through_an_edge_proxy_is_called_through_its_path() {
    let server = Server::start();
    let mut edge = Edge {
        udp: RawUdp::on(&server, Ipv4Addr::new(127, 0, 0, 2)),
        server_uri: format!("sip:{}", server.addr()),
        call_id: unique("path"),
        cseq: 0,
        user: "2001",
        ob: true,
    };
    let ok = edge.login("10.1.2.3:5062");
    assert_eq!(
        headers(&ok, "Path"),
        vec![edge.path()],
        "the Path echoed\n{ok}"
    );
    assert!(
        headers(&ok, "Require")
            .iter()
            .any(|v| v.contains("outbound")),
        "the flow is taken as one: Require: outbound\n{ok}"
    );
    // The phone moved to another private address: the same flow, one binding.
    let ok = edge.login("10.9.9.9:5062");
    let contacts = headers(&ok, "Contact");
    assert_eq!(contacts.len(), 1, "one binding per flow\n{ok}");
    assert!(contacts[0].contains("10.9.9.9:5062"), "{ok}");

    // A trunk call to the extension reaches the proxy, routed by the Path.
    let caller = Sipp::new("uac_expect_486.xml")
        .service("2001")
        .spawn(&server);
    let invite = loop {
        let msg = edge.udp.recv(Duration::from_secs(10)).unwrap_or_else(|| {
            panic!(
                "no INVITE reached the edge proxy\nswitchboard stderr tail:\n{}",
                server.stderr_tail(30)
            )
        });
        if msg.starts_with("INVITE ") {
            break msg;
        }
    };
    let request_line = invite.lines().next().unwrap();
    assert!(
        request_line.starts_with("INVITE sip:2001@10.9.9.9:5062;ob SIP/2.0"),
        "addressed to the registered Contact: {request_line}"
    );
    assert_eq!(headers(&invite, "Route"), vec![edge.path()], "{invite}");

    // The phone is busy; the proxy relays its 486.
    let mut busy = String::from("SIP/2.0 486 Busy Here\r\n");
    for name in ["Via", "From", "Call-ID", "CSeq"] {
        for v in headers(&invite, name) {
            busy.push_str(&format!("{name}: {v}\r\n"));
        }
    }
    let to = headers(&invite, "To")[0];
    busy.push_str(&format!(
        "To: {to};tag=busyphone\r\nContent-Length: 0\r\n\r\n"
    ));
    edge.udp.send(busy.as_bytes());
    let ack = edge.udp.recv(WAIT).expect("the 486 is acknowledged");
    assert!(ack.starts_with("ACK "), "{ack}");
    let run = caller.wait(Duration::from_secs(15));
    assert_eq!(run.stat("SuccessfulCall(C)"), Some(1), "{}", run.report());
    let rec = server.single_call();
    assert_eq!(rec.disposition.as_deref(), Some("busy"), "{rec:#?}");

    // Behind a proxy that does not say `ob`, outbound is not used (RFC 5626 §6): no
    // Require, and the reg-id is ignored, so a second address is a second binding.
    let mut plain = Edge {
        udp: RawUdp::on(&server, Ipv4Addr::new(127, 0, 0, 4)),
        server_uri: format!("sip:{}", server.addr()),
        call_id: unique("path"),
        cseq: 0,
        user: "2002",
        ob: false,
    };
    let ok = plain.login("10.1.2.3:5062");
    assert!(
        !headers(&ok, "Require")
            .iter()
            .any(|v| v.contains("outbound")),
        "{ok}"
    );
    let ok = plain.login("10.9.9.9:5062");
    assert_eq!(headers(&ok, "Contact").len(), 2, "two bindings\n{ok}");
}

#[test]
fn a_double_crlf_ping_on_a_tcp_flow_gets_a_crlf_pong() {
    use std::io::{Read, Write};
    let server = Server::start();
    let mut tcp = std::net::TcpStream::connect(server.socket_addr()).expect("connect over TCP");
    tcp.set_read_timeout(Some(WAIT)).unwrap();
    for _ in 0..2 {
        tcp.write_all(b"\r\n\r\n").unwrap();
        let mut pong = [0u8; 2];
        tcp.read_exact(&mut pong)
            .expect("a pong to the keep-alive (RFC 5626 4.4.1)");
        assert_eq!(&pong, b"\r\n");
    }
    // A lone CRLF is no ping: nothing comes back.
    tcp.write_all(b"\r\n").unwrap();
    tcp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    let mut more = [0u8; 1];
    assert!(tcp.read(&mut more).is_err(), "no pong to half a ping");
}

#[test]
fn a_stun_keepalive_on_the_sip_port_learns_the_address_it_is_seen_from() {
    use rtc_stun::message::{Getter, Message, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
    use rtc_stun::xoraddr::XorMappedAddress;
    let server = Server::start();
    let udp = RawUdp::on(&server, Ipv4Addr::new(127, 0, 0, 3));
    let mut req = Message::new();
    req.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
        .unwrap();
    udp.sock.send_to(&req.raw, server.socket_addr()).unwrap();
    udp.sock.set_read_timeout(Some(WAIT)).unwrap();
    let mut buf = [0u8; 1500];
    let (n, _) = udp
        .sock
        .recv_from(&mut buf)
        .expect("a Binding response (RFC 5626 4.4.2)");
    let mut resp = Message::new();
    resp.raw = buf[..n].to_vec();
    resp.decode().expect("a STUN message");
    assert_eq!(resp.typ, BINDING_SUCCESS);
    assert_eq!(resp.transaction_id, req.transaction_id);
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&resp).unwrap();
    assert_eq!(
        std::net::SocketAddr::new(mapped.ip, mapped.port),
        udp.sock.local_addr().unwrap()
    );
    // The SIP side still serves: an OPTIONS from the same socket is answered.
    let options = format!(
        "OPTIONS sip:{addr} SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.3:{port};branch=z9hG4bK{b};rport\r\n\
         Max-Forwards: 70\r\n\
         From: <sip:probe@127.0.0.3>;tag=s1\r\n\
         To: <sip:{addr}>\r\n\
         Call-ID: {cid}\r\n\
         CSeq: 1 OPTIONS\r\n\
         Content-Length: 0\r\n\r\n",
        addr = server.addr(),
        port = udp.port,
        b = unique("s"),
        cid = unique("stun"),
    );
    udp.send(options.as_bytes());
    let reply = udp.recv(WAIT).expect("OPTIONS answered");
    assert!(status_code(&reply).is_some(), "{reply}");
}
