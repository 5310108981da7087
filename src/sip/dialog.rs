//! The dialog layer (RFC 3261 §12): identity, CSeq on both sides, route set, remote target,
//! and building in-dialog requests (BYE, re-INVITE, UPDATE, INFO, OPTIONS, ACK for 2xx).
//!
//! Sans-IO: a [`Dialog`] is plain data owned by the call task of the leg it belongs to.
//!
//! Decision: in-dialog requests go to the first Route if there is a route set, else to the
//! transport address the dialog was set up from (not the Contact's host). That is what
//! Asterisk's `nat=force_rport,comedia` does, and it reaches phones behind NAT and over TCP.

use rsip::headers::UntypedHeader;
use rsip::prelude::HeadersExt;
use rsip::{Header, Method, Request, Response, SipMessage};

use super::message;
use super::transaction::Peer;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DialogId {
    pub call_id: String,
    pub local_tag: String,
    pub remote_tag: String,
}

#[derive(Debug, Clone)]
pub struct Dialog {
    pub id: DialogId,
    /// Our URI (From of our requests) and theirs, as name-addr values without tags.
    pub local_uri: String,
    pub remote_uri: String,
    pub local_cseq: u32,
    pub remote_cseq: Option<u32>,
    /// Route set, in the order our requests must carry it.
    pub route_set: Vec<String>,
    /// Remote target: the peer's Contact URI (Request-URI of our requests).
    pub remote_target: String,
    /// Where requests are sent when the route set is empty.
    pub peer: Peer,
    /// Our Contact.
    pub local_contact: String,
}

/// `<uri>` without parameters outside the brackets (i.e. without the tag).
fn strip_tag(value: &str) -> String {
    match value.find('>') {
        Some(i) => value[..=i].trim().to_string(),
        None => value.split(';').next().unwrap_or(value).trim().to_string(),
    }
}

fn contact_uri(headers: &rsip::Headers) -> Option<String> {
    headers.iter().find_map(|h| match h {
        Header::Contact(c) => {
            let v = c.value();
            Some(match (v.find('<'), v.find('>')) {
                (Some(a), Some(b)) if a < b => v[a + 1..b].to_string(),
                _ => v.split(';').next().unwrap_or(v).trim().to_string(),
            })
        }
        _ => None,
    })
}

fn record_routes(headers: &rsip::Headers) -> Vec<String> {
    headers
        .iter()
        .filter_map(|h| match h {
            Header::RecordRoute(r) => Some(r.value().to_string()),
            _ => None,
        })
        .collect()
}

impl Dialog {
    /// UAS side: the dialog an INVITE creates once we answer it with `local_tag`.
    pub fn from_request(req: &Request, local_tag: &str, peer: Peer, local_contact: String) -> Self {
        let msg = SipMessage::Request(req.clone());
        Dialog {
            id: DialogId {
                call_id: message::call_id(&msg),
                local_tag: local_tag.to_string(),
                remote_tag: message::from_tag(&msg).unwrap_or_default(),
            },
            local_uri: req
                .to_header()
                .map(|h| strip_tag(h.value()))
                .unwrap_or_default(),
            remote_uri: req
                .from_header()
                .map(|h| strip_tag(h.value()))
                .unwrap_or_default(),
            local_cseq: 0,
            remote_cseq: Some(message::cseq(&msg).0),
            route_set: record_routes(&req.headers),
            remote_target: contact_uri(&req.headers).unwrap_or_else(|| req.uri.to_string()),
            peer,
            local_contact,
        }
    }

    /// UAC side: the dialog a 2xx (or 1xx with a tag) to our INVITE creates.
    pub fn from_response(
        invite: &Request,
        resp: &Response,
        peer: Peer,
        local_contact: String,
    ) -> Self {
        let req = SipMessage::Request(invite.clone());
        let resp_msg = SipMessage::Response(resp.clone());
        let mut route_set = record_routes(&resp.headers);
        route_set.reverse();
        Dialog {
            id: DialogId {
                call_id: message::call_id(&req),
                local_tag: message::from_tag(&req).unwrap_or_default(),
                remote_tag: message::to_tag(&resp_msg).unwrap_or_default(),
            },
            local_uri: invite
                .from_header()
                .map(|h| strip_tag(h.value()))
                .unwrap_or_default(),
            remote_uri: invite
                .to_header()
                .map(|h| strip_tag(h.value()))
                .unwrap_or_default(),
            local_cseq: message::cseq(&req).0,
            remote_cseq: None,
            route_set,
            remote_target: contact_uri(&resp.headers).unwrap_or_else(|| invite.uri.to_string()),
            peer,
            local_contact,
        }
    }

    /// Checks an incoming in-dialog request's CSeq (§12.2.2): lower than the last one is
    /// out of order (answer 500). ACK and CANCEL reuse the INVITE's number.
    pub fn accept_remote_cseq(&mut self, req: &Request) -> bool {
        let (seq, method) = message::cseq(&SipMessage::Request(req.clone()));
        if matches!(method, Method::Ack | Method::Cancel) {
            return true;
        }
        match self.remote_cseq {
            Some(last) if seq <= last => false,
            _ => {
                self.remote_cseq = Some(seq);
                true
            }
        }
    }

    /// Updates the remote target from a target-refresh request or response (re-INVITE, UPDATE).
    pub fn refresh_target(&mut self, headers: &rsip::Headers) {
        if let Some(c) = contact_uri(headers) {
            self.remote_target = c;
        }
    }

    /// Where in-dialog requests go (see the module note).
    pub fn destination(&self) -> Peer {
        self.peer
    }

    fn build(&self, method: Method, cseq: u32) -> Request {
        let mut headers = rsip::Headers::default();
        for r in &self.route_set {
            headers.push(Header::Route(rsip::headers::Route::new(r.clone())));
        }
        headers.push(Header::From(rsip::headers::From::new(format!(
            "{};tag={}",
            self.local_uri, self.id.local_tag
        ))));
        let to = if self.id.remote_tag.is_empty() {
            self.remote_uri.clone()
        } else {
            format!("{};tag={}", self.remote_uri, self.id.remote_tag)
        };
        headers.push(Header::To(rsip::headers::To::new(to)));
        headers.push(Header::CallId(rsip::headers::CallId::new(
            self.id.call_id.clone(),
        )));
        headers.push(Header::CSeq(rsip::headers::CSeq::new(format!(
            "{cseq} {method}"
        ))));
        headers.push(Header::MaxForwards(rsip::headers::MaxForwards::new("70")));
        headers.push(Header::Contact(rsip::headers::Contact::new(format!(
            "<{}>",
            self.local_contact
        ))));
        let uri = rsip::Uri::try_from(self.remote_target.as_str())
            .or_else(|_| rsip::Uri::try_from(format!("sip:{}", self.remote_target).as_str()))
            .unwrap_or_default();
        Request {
            method,
            uri,
            version: rsip::Version::V2,
            headers,
            body: Vec::new(),
        }
    }

    /// A new in-dialog request with the next local CSeq (BYE, re-INVITE, UPDATE, INFO…).
    pub fn request(&mut self, method: Method) -> Request {
        self.local_cseq += 1;
        self.build(method, self.local_cseq)
    }

    /// The ACK for a 2xx to our INVITE number `invite_cseq` (§13.2.2.4).
    pub fn ack(&self, invite_cseq: u32) -> Request {
        let mut r = self.build(Method::Ack, invite_cseq);
        r.headers.retain(|h| !matches!(h, Header::Contact(_)));
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Transport;

    fn peer() -> Peer {
        Peer {
            transport: Transport::Udp,
            addr: "127.0.0.1:5070".parse().unwrap(),
        }
    }

    fn req(raw: &str) -> Request {
        match message::parse(raw.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            _ => panic!(),
        }
    }

    const INVITE: &str = "INVITE sip:100@10.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\nRecord-Route: <sip:p1.example.com;lr>, <sip:p2.example.com;lr>\r\nFrom: \"Caller\" <sip:555@carrier>;tag=ctag\r\nTo: <sip:100@10.0.0.1>\r\nCall-ID: d1\r\nCSeq: 10 INVITE\r\nContact: <sip:555@127.0.0.1:5070;transport=udp>\r\nContent-Length: 0\r\n\r\n";

    #[test]
    fn uas_dialog_builds_requests_with_route_set_in_order() {
        let inv = req(INVITE);
        let mut d = Dialog::from_request(
            &inv,
            "mytag",
            peer(),
            "sip:switchboard@127.0.0.1:5060".into(),
        );
        assert_eq!(d.id.remote_tag, "ctag");
        assert_eq!(d.remote_target, "sip:555@127.0.0.1:5070;transport=udp");
        let bye = d.request(Method::Bye);
        let text = bye.to_string();
        assert!(
            text.to_lowercase()
                .starts_with("bye sip:555@127.0.0.1:5070;transport=udp sip/2.0"),
            "{text}"
        );
        let routes: Vec<&str> = text.lines().filter(|l| l.starts_with("Route:")).collect();
        assert_eq!(
            routes,
            vec![
                "Route: <sip:p1.example.com;lr>",
                "Route: <sip:p2.example.com;lr>"
            ]
        );
        assert!(
            text.contains("From: <sip:100@10.0.0.1>;tag=mytag"),
            "{text}"
        );
        assert!(
            text.contains("To: \"Caller\" <sip:555@carrier>;tag=ctag"),
            "{text}"
        );
        assert!(text.contains("CSeq: 1 BYE"));
        assert!(d.request(Method::Info).to_string().contains("CSeq: 2 INFO"));
    }

    #[test]
    fn remote_cseq_must_grow() {
        let inv = req(INVITE);
        let mut d = Dialog::from_request(&inv, "t", peer(), "sip:s@127.0.0.1".into());
        let bye = |n: u32| {
            req(&INVITE
                .replace("INVITE sip", "BYE sip")
                .replace("10 INVITE", &format!("{n} BYE")))
        };
        assert!(
            !d.accept_remote_cseq(&bye(10)),
            "same number as the INVITE is out of order"
        );
        assert!(d.accept_remote_cseq(&bye(11)));
        assert!(!d.accept_remote_cseq(&bye(11)));
    }

    #[test]
    fn uac_dialog_reverses_record_route_and_acks_with_invite_cseq() {
        let ours = req("INVITE sip:2001@127.0.0.1:5080 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2\r\nFrom: <sip:555@127.0.0.1>;tag=out\r\nTo: <sip:2001@127.0.0.1>\r\nCall-ID: d2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n");
        let SipMessage::Response(ok) = message::parse(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK2\r\nRecord-Route: <sip:a;lr>\r\nRecord-Route: <sip:b;lr>\r\nFrom: <sip:555@127.0.0.1>;tag=out\r\nTo: <sip:2001@127.0.0.1>;tag=callee\r\nCall-ID: d2\r\nCSeq: 1 INVITE\r\nContact: <sip:2001@127.0.0.1:5080>\r\nContent-Length: 0\r\n\r\n").unwrap() else { panic!() };
        let mut d = Dialog::from_response(&ours, &ok, peer(), "sip:s@127.0.0.1".into());
        assert_eq!(d.route_set, vec!["<sip:b;lr>", "<sip:a;lr>"]);
        let ack = d.ack(1).to_string();
        assert!(
            ack.contains("CSeq: 1 ACK") && ack.contains("tag=callee"),
            "{ack}"
        );
        assert!(d.request(Method::Bye).to_string().contains("CSeq: 2 BYE"));
    }
}
