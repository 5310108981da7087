//! Session timers (RFC 4028) on the caller's leg, as its UAS: a caller (a carrier, mostly)
//! that asks for them gets them, so a call whose far end vanished without a BYE is
//! cleared when the refreshes stop.
//!
//! Sans-IO: the INVITE's headers in, the negotiated timer (or the refusal) out; the call
//! asks [`SessionTimer::next`] when to act and what to do then.
//!
//! What Switchboard does (Asterisk's `session-timers=accept`): no timer unless the
//! caller's INVITE has `Session-Expires`. The caller refreshes when it says so, or when
//! it supports timers and leaves the choice to us; we refresh (by UPDATE, which needs no
//! new offer) only when asked to and the caller allows UPDATE. Otherwise the 2xx carries
//! no `Session-Expires`, which RFC 4028 §9 reads as "this UAS does not do timers".

use std::time::{Duration, Instant};

use rsip::{Header, Request};

/// Who sends the refreshes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresher {
    /// The caller (the UAC of the dialog's INVITE).
    Uac,
    /// Switchboard.
    Uas,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionTimer {
    pub interval_secs: u32,
    pub refresher: Refresher,
    /// The caller supports timers: the 2xx says `Require: timer`.
    pub require: bool,
}

/// Why an INVITE is refused before anything else happens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// 422 Session Interval Too Small, with our `Min-SE`.
    TooSmall { min_se: u32 },
    /// 420 Bad Extension: `Require` names extensions we do not do (RFC 3261 §8.2.2.3);
    /// they go in `Unsupported`.
    BadExtension(Vec<String>),
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::TooSmall { min_se } => {
                write!(f, "session interval below our Min-SE of {min_se} s")
            }
            Refusal::BadExtension(list) => write!(f, "requires unsupported {}", list.join(", ")),
        }
    }
}

impl Refusal {
    /// The 422 (with `Min-SE`) or 420 (with `Unsupported`) for `req`.
    pub fn response(&self, req: &Request) -> rsip::Response {
        let (code, header) = match self {
            Refusal::TooSmall { min_se } => {
                (422, Header::Other("Min-SE".into(), min_se.to_string()))
            }
            Refusal::BadExtension(list) => {
                (420, Header::Other("Unsupported".into(), list.join(", ")))
            }
        };
        let tag = crate::sip::message::new_tag();
        let mut resp = crate::sip::message::response_to(req, code, Some(&tag));
        resp.headers.push(header);
        resp
    }
}

/// What the call does at [`SessionTimer::next`]'s instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Send the caller an UPDATE that refreshes the session.
    Refresh,
    /// No refresh came in time: the caller is gone; hang up.
    Expired,
}

/// Extensions a caller may require of us.
const SUPPORTED: &[&str] = &["timer"];

/// The options listed in every header named `name` (comma-separated, any case).
fn options(req: &Request, name: &str) -> Vec<String> {
    req.headers
        .iter()
        .filter_map(|h| {
            let text = h.to_string();
            let (n, v) = text.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
        .flat_map(|v| {
            v.split(',')
                .map(|o| o.trim().to_ascii_lowercase())
                .filter(|o| !o.is_empty())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The value of a single-valued header, as text.
fn value(req: &Request, name: &str) -> Option<String> {
    req.headers.iter().find_map(|h| {
        let text = h.to_string();
        let (n, v) = text.split_once(':')?;
        n.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// What to answer an INVITE (or a refreshing re-INVITE/UPDATE) with, given our `min_se`
/// (RFC 4028 says at least 90 s).
pub fn negotiate(req: &Request, min_se: u32) -> Result<Option<SessionTimer>, Refusal> {
    let required = options(req, "Require");
    let unknown: Vec<String> = required
        .iter()
        .filter(|o| !SUPPORTED.contains(&o.as_str()))
        .cloned()
        .collect();
    if !unknown.is_empty() {
        return Err(Refusal::BadExtension(unknown));
    }
    let Some(se) = value(req, "Session-Expires") else {
        return Ok(None);
    };
    let mut parts = se.split(';');
    let Some(interval_secs) = parts.next().and_then(|s| s.trim().parse::<u32>().ok()) else {
        return Ok(None); // unreadable: as if absent
    };
    if interval_secs < min_se {
        return Err(Refusal::TooSmall { min_se });
    }
    let asked = parts.find_map(|p| {
        let (k, v) = p.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case("refresher")
            .then(|| v.trim().to_ascii_lowercase())
    });
    let supports = required.iter().any(|o| o == "timer")
        || options(req, "Supported").iter().any(|o| o == "timer");
    // A caller without timers cannot refresh, whatever its proxy wrote (§9).
    let refresher = match asked.as_deref() {
        Some("uac") if supports => Refresher::Uac,
        Some("uas") => Refresher::Uas,
        _ if supports => Refresher::Uac,
        _ => Refresher::Uas,
    };
    let can_update = options(req, "Allow").iter().any(|m| m == "update");
    if refresher == Refresher::Uas && !can_update {
        return Ok(None);
    }
    Ok(Some(SessionTimer {
        interval_secs,
        refresher,
        require: supports,
    }))
}

impl SessionTimer {
    /// The headers of our 2xx to the caller.
    pub fn headers(&self) -> Vec<Header> {
        self.headers_as(match self.refresher {
            Refresher::Uac => "uac",
            Refresher::Uas => "uas",
        })
    }

    /// The headers of our refreshing UPDATE: in a request, `uac` is its sender (§7.4),
    /// which is us.
    pub fn refresh_headers(&self) -> Vec<Header> {
        self.headers_as("uac")
    }

    fn headers_as(&self, refresher: &str) -> Vec<Header> {
        let mut h = vec![Header::Other(
            "Session-Expires".into(),
            format!("{};refresher={refresher}", self.interval_secs),
        )];
        if self.require {
            h.push(Header::Other("Require".into(), "timer".into()));
        }
        h
    }

    /// When to act after the session was last refreshed (or answered) at `at`: refresh
    /// at half the interval (§10), or give up a little before it ends (§10: the
    /// smaller of 32 s and a third of the interval).
    pub fn next(&self, at: Instant) -> (Instant, Due) {
        let interval = Duration::from_secs(self.interval_secs.into());
        match self.refresher {
            Refresher::Uas => (at + interval / 2, Due::Refresh),
            Refresher::Uac => {
                let margin = Duration::from_secs(32).min(interval / 3);
                (at + interval - margin, Due::Expired)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sip::message;
    use rsip::SipMessage;

    fn invite(extra: &str) -> Request {
        let raw = format!(
            "INVITE sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1\r\n\
             From: <sip:a@127.0.0.1>;tag=1\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: st\r\n\
             CSeq: 1 INVITE\r\n{extra}Content-Length: 0\r\n\r\n"
        );
        match message::parse(raw.as_bytes()).unwrap() {
            SipMessage::Request(r) => r,
            _ => unreachable!(),
        }
    }

    #[test]
    fn no_session_expires_no_timer() {
        assert_eq!(negotiate(&invite("Supported: timer\r\n"), 90), Ok(None));
    }

    #[test]
    fn the_caller_refreshes_when_it_says_so_or_leaves_it_to_us() {
        let t = negotiate(
            &invite("Supported: timer, replaces\r\nSession-Expires: 1800\r\n"),
            90,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (t.interval_secs, t.refresher, t.require),
            (1800, Refresher::Uac, true)
        );
        let shown: Vec<String> = t.headers().iter().map(|h| h.to_string()).collect();
        assert_eq!(
            shown,
            ["Session-Expires: 1800;refresher=uac", "Require: timer"]
        );
        // Compact form (x) and a refresher parameter with spaces.
        let t = negotiate(&invite("k: timer\r\nx: 600 ; refresher = uac\r\n"), 90).unwrap();
        assert_eq!(t.map(|t| t.refresher), Some(Refresher::Uac));
    }

    #[test]
    fn we_refresh_only_by_update_and_only_when_asked_to() {
        let asked = "Supported: timer\r\nSession-Expires: 300;refresher=uas\r\n";
        let t = negotiate(
            &invite(&format!("{asked}Allow: INVITE, ACK, BYE, UPDATE\r\n")),
            90,
        )
        .unwrap()
        .unwrap();
        assert_eq!(t.refresher, Refresher::Uas);
        // Without UPDATE we would need a new offer to refresh: no timer then.
        assert_eq!(negotiate(&invite(asked), 90), Ok(None));
        // A proxy inserted Session-Expires for a caller without timers (with or without
        // naming it the refresher): we refresh.
        let t = negotiate(
            &invite("Session-Expires: 300;refresher=uac\r\nAllow: INVITE, UPDATE\r\n"),
            90,
        )
        .unwrap()
        .unwrap();
        assert_eq!((t.refresher, t.require), (Refresher::Uas, false));
        let shown: Vec<String> = t.refresh_headers().iter().map(|h| h.to_string()).collect();
        assert_eq!(
            shown,
            ["Session-Expires: 300;refresher=uac"],
            "we send the refresh"
        );
        let t = negotiate(
            &invite("Session-Expires: 300\r\nAllow: INVITE, UPDATE\r\n"),
            90,
        )
        .unwrap()
        .unwrap();
        assert_eq!((t.refresher, t.require), (Refresher::Uas, false));
    }

    #[test]
    fn too_small_is_422_and_unknown_requirements_are_420() {
        assert_eq!(
            negotiate(&invite("Supported: timer\r\nSession-Expires: 60\r\n"), 90),
            Err(Refusal::TooSmall { min_se: 90 })
        );
        assert_eq!(
            negotiate(
                &invite("Require: timer, 100rel, Foo\r\nSession-Expires: 900\r\n"),
                90
            ),
            Err(Refusal::BadExtension(vec!["100rel".into(), "foo".into()]))
        );
        assert!(negotiate(&invite("Require: timer\r\nSession-Expires: 900\r\n"), 90).is_ok());
    }

    #[test]
    fn refresh_at_half_expire_a_little_before_the_end() {
        let at = Instant::now();
        let ours = SessionTimer {
            interval_secs: 1800,
            refresher: Refresher::Uas,
            require: true,
        };
        assert_eq!(ours.next(at), (at + Duration::from_secs(900), Due::Refresh));
        let theirs = SessionTimer {
            refresher: Refresher::Uac,
            ..ours
        };
        assert_eq!(
            theirs.next(at),
            (at + Duration::from_secs(1768), Due::Expired)
        );
        let short = SessionTimer {
            interval_secs: 90,
            ..theirs
        };
        assert_eq!(short.next(at), (at + Duration::from_secs(60), Due::Expired));
    }
}
