//! STUN keep-alives on the SIP UDP port (RFC 5626 §4.4.2 and §8): a phone using outbound
//! keeps its NAT binding open with STUN Binding requests to the address it registered
//! with, and learns from the answer (its address as we see it) whether the NAT moved it.
//! Decoding and encoding are rtc-stun's, the webrtc-rs family's sans-IO STUN.

use std::net::SocketAddr;

use rtc_stun::message::{Message, BINDING_REQUEST, BINDING_SUCCESS};
use rtc_stun::xoraddr::XorMappedAddress;

/// Whether a datagram is STUN rather than SIP (RFC 5389's magic cookie; a SIP message
/// starts with text).
pub fn is_stun(datagram: &[u8]) -> bool {
    rtc_stun::message::is_stun_message(datagram)
}

/// The Binding success response to a Binding request from `from`, or None for anything
/// else (responses, indications, garbage are dropped).
pub fn answer(datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
    let mut req = Message::new();
    req.raw = datagram.to_vec();
    req.decode().ok()?;
    if req.typ != BINDING_REQUEST {
        return None;
    }
    let mut resp = Message::new();
    resp.build(&[
        Box::new(req.transaction_id),
        Box::new(BINDING_SUCCESS),
        Box::new(XorMappedAddress {
            ip: from.ip(),
            port: from.port(),
        }),
    ])
    .ok()?;
    Some(resp.raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc_stun::message::{Getter, TransactionId};

    fn request() -> Message {
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
            .unwrap();
        m
    }

    #[test]
    fn a_binding_request_is_answered_with_the_address_it_came_from() {
        for from in ["203.0.113.9:40123", "[2001:db8::7]:5062"] {
            let from: SocketAddr = from.parse().unwrap();
            let req = request();
            assert!(is_stun(&req.raw));
            let raw = answer(&req.raw, from).expect("answered");
            let mut resp = Message::new();
            resp.raw = raw;
            resp.decode().unwrap();
            assert_eq!(resp.typ, BINDING_SUCCESS);
            assert_eq!(resp.transaction_id, req.transaction_id);
            let mut mapped = XorMappedAddress::default();
            mapped.get_from(&resp).unwrap();
            assert_eq!(SocketAddr::new(mapped.ip, mapped.port), from);
        }
    }

    #[test]
    fn sip_text_and_other_stun_messages_get_no_answer() {
        let from: SocketAddr = "127.0.0.1:5070".parse().unwrap();
        assert!(!is_stun(b"OPTIONS sip:a SIP/2.0\r\n\r\n"));
        let mut success = Message::new();
        success
            .build(&[Box::new(TransactionId::new()), Box::new(BINDING_SUCCESS)])
            .unwrap();
        assert_eq!(answer(&success.raw, from), None);
        let mut torn = request().raw;
        torn.truncate(19);
        assert_eq!(answer(&torn, from), None);
    }
}
