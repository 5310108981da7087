//! What the fuzz targets (`fuzz/`) check, one function per input Switchboard reads from
//! outside: each takes arbitrary bytes, must never panic, and panics on a broken
//! property. The fuzz targets call these; `tests/fuzz_regressions.rs` replays the seed
//! corpora and every input that once crashed through them on each test run.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rsip::SipMessage;

use crate::config::Transport;
use crate::ivr::validate;
use crate::media::dtmf::rfc4733::TelephoneEvent;
use crate::media::dtmf::DtmfDetector;
use crate::media::{rtcp, rtp, sdp};
use crate::sip::transaction::{LocalAddr, Output, Peer, Timers, TransactionLayer, TxEvent};
use crate::sip::{message, transport};

/// One datagram as the SIP transport receives it: the normaliser and parser, everything
/// read off a parsed message, the transaction layer, and the 400 built for one that
/// fails. Whatever parses must serialise to something that parses again (we forward it).
pub fn sip_message(data: &[u8]) {
    let from = Peer {
        transport: Transport::Udp,
        addr: "127.0.0.1:5070".parse().unwrap(),
    };
    let msg = match message::parse(data) {
        Ok(msg) => msg,
        Err(e) => {
            if message::is_request_line(data) {
                if let Some((req, resp)) = message::bad_request_response(data, &e) {
                    let _ = message::response_target(&req, from.addr);
                    let _ = message::to_bytes(&SipMessage::Response(resp));
                }
            }
            return;
        }
    };
    let wire = message::to_bytes(&msg);
    if let Err(e) = message::parse(&wire) {
        panic!(
            "a parsed message serialises to one that does not parse ({e}):\n{}",
            String::from_utf8_lossy(&wire)
        );
    }
    let _ = message::call_id(&msg);
    let _ = message::cseq(&msg);
    let _ = message::branch(&msg);
    let _ = message::from_tag(&msg);
    let _ = message::to_tag(&msg);
    let _ = message::from_uri(&msg);
    let _ = message::to_uri(&msg);
    let _ = message::content_type(&msg);
    if let SipMessage::Request(req) = &msg {
        let mut req = req.clone();
        message::stamp_received(&mut req, from.addr);
        let _ = message::response_target(&req, from.addr);
        let resp = message::response_to(&req, 486, Some("fuzz"));
        let _ = message::to_bytes(&SipMessage::Response(resp));
    }
    let mut layer = TransactionLayer::new(
        Timers::default(),
        vec![LocalAddr {
            transport: Transport::Udp,
            advertise: "127.0.0.1:5060".parse().unwrap(),
        }],
    );
    let now = Instant::now();
    layer.handle_message(msg, from, now);
    let mut events = Vec::new();
    while let Some(out) = layer.poll() {
        if let Output::Event(e) = out {
            events.push(e);
        }
    }
    // What the layer passed up can be answered; then its timers run out.
    for e in events {
        if let TxEvent::Request { tx, req, .. } = e {
            layer.respond(tx, message::response_to(&req, 500, Some("fuzz")), now);
        }
    }
    while let Some(at) = layer.poll_timeout() {
        layer.handle_timeout(at);
        while layer.poll().is_some() {}
    }
}

/// A TCP byte stream cut into SIP messages by Content-Length, arriving in pieces: the
/// first byte says how long each piece is. Every frame cut off goes to the parser.
pub fn sip_stream(data: &[u8]) {
    let Some((&step, stream)) = data.split_first() else {
        return;
    };
    let step = usize::from(step).max(1);
    let mut buf = BytesMut::new();
    for piece in stream.chunks(step) {
        buf.extend_from_slice(piece);
        loop {
            match transport::next_frame(&mut buf) {
                Ok(Some(frame)) => {
                    assert!(!frame.is_empty(), "an empty frame was cut");
                    let _ = message::parse(&frame);
                }
                Ok(None) => break,
                // The edge closes the connection: nothing more is read from it.
                Err(_) => return,
            }
        }
    }
}

/// An SDP body from a peer: parsing, what the relay and the answer are built from, and
/// the body we would send back, which must itself parse.
pub fn sdp(data: &[u8]) {
    let Ok((sd, info)) = sdp::parse(data) else {
        return;
    };
    let _ = sdp::flip_direction(&sd);
    let widened = sdp::offer_all_codecs(&sd);
    let _ = sdp::all_codecs(&info);
    let mut leg = sdp::LegSdp::new();
    let ours = leg.render(&widened, "127.0.0.1".parse().unwrap(), 40_000);
    if let Err(e) = sdp::parse(ours.as_bytes()) {
        panic!("the SDP we render does not parse ({e}):\n{ours}");
    }
    if let Ok((narrowed, _)) = sdp::restrict_answer(&sd, &info) {
        let again = leg.render(&narrowed, "::1".parse().unwrap(), 40_002);
        let _ = sdp::parse(again.as_bytes());
    }
}

/// A media packet: the RTP header parser, RTCP reception, and the RFC 4733 / RFC 2198
/// key detectors fed with whatever payload the header points at.
pub fn rtp(data: &[u8]) {
    let now = Instant::now();
    let mut leg = rtcp::LegRtcp::new();
    let _ = leg.on_packet(data, now);
    let _ = TelephoneEvent::parse(data);
    let mut keys = DtmfDetector::new(8000, false);
    // The input as a run of packets separated by 0xff 0xff, as one stream would bring them.
    for (i, pkt) in data.split(|b| *b == 0xff).enumerate() {
        let Some(p) = rtp::parse(pkt) else { continue };
        assert!(
            p.payload.len() <= pkt.len(),
            "a payload longer than its packet"
        );
        let at = now + Duration::from_millis(20 * i as u64);
        if p.payload_type % 2 == 0 {
            let _ = keys.on_telephone_event(at, p.ssrc, p.timestamp, p.marker, p.payload);
        } else {
            let _ = keys.on_redundant_telephone_event(at, p.ssrc, p.timestamp, p.payload, 101);
        }
        while keys.poll().is_some() {}
    }
    keys.on_timeout(now + Duration::from_secs(10));
    while keys.poll().is_some() {}
}

/// A flow file as ops write it: the YAML loader and every check `switchboard check`
/// makes. A mistake must come back as a diagnostic, never as a panic.
pub fn flow_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("ivr-flows/fuzz.yaml");
    let Ok(flow) = validate::parse_flow(path, text) else {
        return;
    };
    let opts = validate::Options {
        prompt_root: None,
        queues: Some(["sales".to_string(), "support".to_string()].into()),
        skills: Some(["english".to_string()].into()),
    };
    let _ = validate::check(&[(PathBuf::from(path), flow)], &opts);
}

/// The server's configuration file: the YAML loader and its validator.
pub fn config_yaml(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = crate::config::parse(Path::new("config/fuzz.yaml"), text);
}

/// A datagram on the SIP UDP port that looks like STUN (outbound keep-alives): whatever
/// is answered is a Binding success for the same transaction, naming the sender.
pub fn stun(data: &[u8]) {
    use rtc_stun::message::{Getter, Message, BINDING_SUCCESS};
    let from: std::net::SocketAddr = "198.51.100.7:40000".parse().unwrap();
    if !crate::sip::stun::is_stun(data) {
        return;
    }
    let Some(reply) = crate::sip::stun::answer(data, from) else {
        return;
    };
    let mut resp = Message::new();
    resp.raw = reply;
    resp.decode().expect("our answer decodes");
    assert_eq!(resp.typ, BINDING_SUCCESS);
    assert_eq!(resp.transaction_id.0[..], data[8..20]);
    let mut mapped = rtc_stun::xoraddr::XorMappedAddress::default();
    mapped.get_from(&resp).expect("our answer names the sender");
    assert_eq!(std::net::SocketAddr::new(mapped.ip, mapped.port), from);
}
