//! The location service: which contacts each user has registered, until when.
//!
//! Sans-IO: it is handed the already-authenticated user, the REGISTER's contacts and the
//! time, and answers with the bindings to put in the 200 OK. Each binding remembers the
//! transport address the REGISTER came from and where requests to it go (its Contact, or
//! that source when NAT is detected, or the first proxy of its Path), and the Path
//! (RFC 3327) that requests to it are routed through. A phone using outbound (RFC 5626:
//! `+sip.instance` and `reg-id`) has one binding per flow: registering the same instance
//! and reg-id again replaces it even if its Contact changed (a new address after a
//! network change), rather than adding a second, dead one.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::transaction::Peer;

pub const DEFAULT_EXPIRES: u32 = 3600;
pub const MIN_EXPIRES: u32 = 60;
pub const MAX_EXPIRES: u32 = 3600;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The Contact URI as the phone wrote it (becomes the Request-URI of calls to it).
    pub contact: String,
    /// Where the REGISTER came from.
    pub source: Peer,
    /// Where requests to this phone go: the Contact's address (RFC 3261 §10.2.1), or
    /// the REGISTER's source when the phone is behind NAT (decided by the switch).
    pub target: Peer,
    pub expires_at: Instant,
    pub call_id: String,
    pub cseq: u32,
    /// The REGISTER's Path (RFC 3327), in order: the Route set of requests to it.
    pub path: Vec<String>,
    /// RFC 5626 `+sip.instance` and `reg-id`, when the phone uses outbound.
    pub flow: Option<(String, u32)>,
}

/// One Contact of a REGISTER.
#[derive(Debug, Clone)]
pub struct ContactRequest {
    pub uri: String,
    /// Where requests to this contact go; None: the REGISTER's source.
    pub target: Option<Peer>,
    /// Contact's `expires` parameter, else the Expires header, else the default.
    pub expires: Option<u32>,
    /// `+sip.instance` and `reg-id` (RFC 5626), both present.
    pub flow: Option<(String, u32)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegisterError {
    /// 423 Interval Too Brief, with the Min-Expires to advertise.
    TooBrief(u32),
    /// 400: `*` mixed with other contacts or with a non-zero Expires.
    BadWildcard,
    /// 500 with Retry-After: an older CSeq for the same Call-ID arrived out of order.
    OutOfOrder,
}

#[derive(Default)]
pub struct Registrar {
    bindings: HashMap<String, Vec<Binding>>,
}

impl Registrar {
    pub fn new() -> Self {
        Self::default()
    }

    /// Applies one REGISTER (RFC 3261 §10.3 steps 6–8) and returns the user's bindings.
    #[allow(clippy::too_many_arguments)]
    pub fn register(
        &mut self,
        user: &str,
        contacts: &[ContactRequest],
        header_expires: Option<u32>,
        call_id: &str,
        cseq: u32,
        source: Peer,
        path: &[String],
        now: Instant,
    ) -> Result<Vec<(Binding, u32)>, RegisterError> {
        self.purge(now);
        if contacts.iter().any(|c| c.uri == "*") {
            if contacts.len() != 1 || header_expires != Some(0) {
                return Err(RegisterError::BadWildcard);
            }
            self.bindings.remove(user);
            return Ok(Vec::new());
        }
        for c in contacts {
            let e = c.expires.or(header_expires).unwrap_or(DEFAULT_EXPIRES);
            if e != 0 && e < MIN_EXPIRES {
                return Err(RegisterError::TooBrief(MIN_EXPIRES));
            }
        }
        // Refuse an out-of-order REGISTER before touching anything (§10.3 step 7).
        let stale = self.bindings.get(user).is_some_and(|list| {
            list.iter().any(|b| {
                b.call_id == call_id && cseq <= b.cseq && contacts.iter().any(|c| c.binds(b))
            })
        });
        if stale {
            return Err(RegisterError::OutOfOrder);
        }
        let list = self.bindings.entry(user.to_string()).or_default();
        for c in contacts {
            let expires = c
                .expires
                .or(header_expires)
                .unwrap_or(DEFAULT_EXPIRES)
                .min(MAX_EXPIRES);
            let existing = list.iter().position(|b| c.binds(b));
            if let Some(i) = existing {
                if expires == 0 {
                    list.remove(i);
                    continue;
                }
            } else if expires == 0 {
                continue;
            }
            let binding = Binding {
                contact: c.uri.clone(),
                source,
                target: c.target.unwrap_or(source),
                expires_at: now + Duration::from_secs(expires.into()),
                call_id: call_id.to_string(),
                cseq,
                path: path.to_vec(),
                flow: c.flow.clone(),
            };
            match existing {
                Some(i) => list[i] = binding,
                None => list.push(binding),
            }
        }
        let result = self.lookup(user, now);
        if result.is_empty() {
            self.bindings.remove(user);
        }
        Ok(result
            .into_iter()
            .map(|b| {
                let left = b.expires_at.saturating_duration_since(now).as_secs() as u32;
                (b, left)
            })
            .collect())
    }

    /// The live bindings of a user, newest first.
    pub fn lookup(&self, user: &str, now: Instant) -> Vec<Binding> {
        let mut v: Vec<Binding> = self
            .bindings
            .get(user)
            .map(|l| l.iter().filter(|b| b.expires_at > now).cloned().collect())
            .unwrap_or_default();
        v.sort_by_key(|b| std::cmp::Reverse(b.expires_at));
        v
    }

    /// Drops one binding (its phone stopped answering); true if it was there.
    pub fn remove(&mut self, user: &str, binding: &Binding) -> bool {
        let Some(list) = self.bindings.get_mut(user) else {
            return false;
        };
        let before = list.len();
        list.retain(|b| !b.same_binding(binding));
        let removed = list.len() != before;
        if list.is_empty() {
            self.bindings.remove(user);
        }
        removed
    }

    /// Drops expired bindings.
    pub fn purge(&mut self, now: Instant) {
        self.bindings.retain(|_, l| {
            l.retain(|b| b.expires_at > now);
            !l.is_empty()
        });
    }

    pub fn user_count(&self) -> usize {
        self.bindings.len()
    }
}

impl Binding {
    /// The same binding: its Contact and, for outbound, its flow (an outbound phone
    /// registers one Contact for each of its flows).
    pub fn same_binding(&self, other: &Binding) -> bool {
        self.contact == other.contact && self.flow == other.flow
    }
}

impl ContactRequest {
    /// Whether this contact refreshes (or removes) `b`: the same outbound flow
    /// (RFC 5626 §6: instance and reg-id, whatever the URI), else the same URI.
    fn binds(&self, b: &Binding) -> bool {
        match (&self.flow, &b.flow) {
            (Some(mine), Some(theirs)) => mine == theirs,
            _ => same_contact(&b.contact, &self.uri),
        }
    }
}

/// Contacts are the same binding when their URIs match ignoring parameter order and case of
/// the scheme and host (a simplification of RFC 3261 §19.1.4 that phones satisfy in practice).
fn same_contact(a: &str, b: &str) -> bool {
    fn base(s: &str) -> String {
        s.trim_matches(['<', '>'])
            .split(';')
            .next()
            .unwrap_or(s)
            .to_ascii_lowercase()
    }
    base(a) == base(b)
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

    fn c(uri: &str, expires: Option<u32>) -> ContactRequest {
        ContactRequest {
            target: None,
            uri: uri.into(),
            expires,
            flow: None,
        }
    }

    #[test]
    fn an_outbound_flow_is_replaced_by_its_next_registration_and_keeps_its_path() {
        let mut r = Registrar::new();
        let t0 = Instant::now();
        let flow = |uri: &str, reg_id: u32| ContactRequest {
            flow: Some((
                "<urn:uuid:00000000-0000-0000-0000-000000000001>".into(),
                reg_id,
            )),
            ..c(uri, None)
        };
        let path = vec!["<sip:edge.example.com;lr>".to_string()];
        r.register(
            "2001",
            &[flow("sip:2001@192.0.2.1:5070", 1)],
            Some(120),
            "a",
            1,
            peer(),
            &path,
            t0,
        )
        .unwrap();
        // The phone moved: a new address, the same instance and reg-id, a new Call-ID.
        let got = r
            .register(
                "2001",
                &[flow("sip:2001@198.51.100.7:5070", 1)],
                Some(120),
                "b",
                1,
                peer(),
                &path,
                t0,
            )
            .unwrap();
        assert_eq!(got.len(), 1, "one flow, one binding: {got:?}");
        assert_eq!(got[0].0.contact, "sip:2001@198.51.100.7:5070");
        assert_eq!(got[0].0.path, path);
        // A second flow of the same instance (another reg-id) is a binding of its own.
        let got = r
            .register(
                "2001",
                &[flow("sip:2001@198.51.100.7:5070", 2)],
                Some(120),
                "b",
                2,
                peer(),
                &[],
                t0,
            )
            .unwrap();
        assert_eq!(got.len(), 2);
        // The two flows share one Contact; dropping one (its keep-alive went unanswered)
        // keeps the other.
        let first = got
            .iter()
            .find(|(b, _)| b.flow.as_ref().unwrap().1 == 1)
            .unwrap();
        assert!(r.remove("2001", &first.0));
        let left = r.lookup("2001", t0);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].flow.as_ref().unwrap().1, 2);
        // Without outbound, the same URI is the same binding as ever.
        let got = r
            .register(
                "2002",
                &[c("sip:2002@192.0.2.2", None), c("sip:2002@192.0.2.2", None)],
                Some(120),
                "c",
                1,
                peer(),
                &[],
                t0,
            )
            .unwrap();
        assert_eq!(got.len(), 1);
        assert!(got[0].0.path.is_empty() && got[0].0.flow.is_none());
    }

    #[test]
    fn several_contacts_expiry_refresh_and_removal() {
        let mut r = Registrar::new();
        let t0 = Instant::now();
        let got = r
            .register(
                "2001",
                &[c("sip:2001@127.0.0.1:5070", None)],
                Some(120),
                "a",
                1,
                peer(),
                &[],
                t0,
            )
            .unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, 120);
        // A second phone of the same user.
        r.register(
            "2001",
            &[c("sip:2001@127.0.0.1:5072", Some(300))],
            None,
            "b",
            1,
            peer(),
            &[],
            t0,
        )
        .unwrap();
        assert_eq!(r.lookup("2001", t0).len(), 2);
        // The first expires after 120 s unless refreshed.
        assert_eq!(r.lookup("2001", t0 + Duration::from_secs(121)).len(), 1);
        r.register(
            "2001",
            &[c("sip:2001@127.0.0.1:5070", None)],
            Some(120),
            "a",
            2,
            peer(),
            &[],
            t0 + Duration::from_secs(100),
        )
        .unwrap();
        assert_eq!(r.lookup("2001", t0 + Duration::from_secs(121)).len(), 2);
        // Expires: 0 removes one binding; an out-of-order CSeq is refused.
        assert_eq!(
            r.register(
                "2001",
                &[c("sip:2001@127.0.0.1:5070", None)],
                Some(0),
                "a",
                2,
                peer(),
                &[],
                t0
            ),
            Err(RegisterError::OutOfOrder)
        );
        r.register(
            "2001",
            &[c("sip:2001@127.0.0.1:5070", None)],
            Some(0),
            "a",
            3,
            peer(),
            &[],
            t0,
        )
        .unwrap();
        let left = r.lookup("2001", t0);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].contact, "sip:2001@127.0.0.1:5072");
        // `*` with Expires: 0 removes everything.
        r.register("2001", &[c("*", None)], Some(0), "b", 2, peer(), &[], t0)
            .unwrap();
        assert!(r.lookup("2001", t0).is_empty());
        assert_eq!(r.user_count(), 0);
    }

    #[test]
    fn too_brief_and_bad_wildcard() {
        let mut r = Registrar::new();
        let t0 = Instant::now();
        assert_eq!(
            r.register(
                "2001",
                &[c("sip:x@y", Some(10))],
                None,
                "a",
                1,
                peer(),
                &[],
                t0
            ),
            Err(RegisterError::TooBrief(MIN_EXPIRES))
        );
        assert_eq!(
            r.register("2001", &[c("*", None)], Some(60), "a", 1, peer(), &[], t0),
            Err(RegisterError::BadWildcard)
        );
        // Long requests are capped at the maximum.
        let got = r
            .register(
                "2001",
                &[c("sip:x@y", Some(86_400))],
                None,
                "a",
                1,
                peer(),
                &[],
                t0,
            )
            .unwrap();
        assert_eq!(got[0].1, MAX_EXPIRES);
    }
}
