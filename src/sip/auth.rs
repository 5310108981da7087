//! Digest authentication (RFC 3261 §22, RFC 8760 for SHA-256) with stateless nonces.
//!
//! A nonce is `issued-at`, a random salt and an HMAC of both under a secret drawn at start-up, so the server
//! keeps no per-challenge state and can tell an expired nonce (answer `stale=true`, the phone
//! retries silently) from a forged one. Wrong user, wrong password and wrong realm all give
//! the same [`AuthResult::Rejected`], so the answer never reveals which users exist.
//!
//! Replays are refused (RFC 7616 §3.4, RFC 3261 §22.4): the one piece of state kept is,
//! for each nonce that has proved a user, the highest nonce count used with it. A right
//! answer whose `nc` is not above that, or whose `uri` is not the request's, is
//! [`AuthResult::Replayed`] and is challenged again: a genuine phone answers the fresh
//! nonce, a replayed header has no password behind it to do so. Without `qop` (RFC 2069
//! style) a nonce proves one request only. Only right answers are remembered, so nobody
//! without a password can grow the table.

use hmac::{Hmac, Mac};
use md5::Md5;
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    Md5,
    Sha256,
}

impl Algorithm {
    pub fn parse(s: &str) -> Option<Algorithm> {
        match s.to_ascii_uppercase().as_str() {
            "MD5" => Some(Algorithm::Md5),
            "SHA-256" => Some(Algorithm::Sha256),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "MD5",
            Algorithm::Sha256 => "SHA-256",
        }
    }

    fn hash(self, input: &str) -> String {
        match self {
            Algorithm::Md5 => hex::encode(Md5::digest(input.as_bytes())),
            Algorithm::Sha256 => hex::encode(Sha256::digest(input.as_bytes())),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthResult {
    /// The credentials are right; the user name they proved.
    Ok(String),
    /// Right credentials on an expired nonce: challenge again with `stale=true`.
    Stale,
    /// No credentials for our realm: challenge.
    Missing,
    /// Wrong user, password, realm or a forged nonce: refuse (the same for all).
    Rejected,
    /// A right answer seen before (the same or a lower nonce count), or computed for
    /// another request URI: challenge again, never accept.
    Replayed,
}

/// Nonces remembered with their nonce count at most; past this, expired ones are
/// forgotten first and, should every one still be live, all of them (phones then answer a
/// fresh challenge: safe, and only reachable with that many users' right passwords).
const MAX_USED_NONCES: usize = 100_000;

pub struct Authenticator {
    realm: String,
    /// Offered in this order; a phone that reads only the first challenge uses it.
    algorithms: Vec<Algorithm>,
    secret: [u8; 32],
    nonce_lifetime_secs: u64,
    /// Whether the digest's `uri` must be the request's (off only behind a proxy that
    /// rewrites request URIs after the phone signed them).
    check_uri: bool,
    /// Nonce → (issued at, highest nonce count used); 0 for an answer without `qop`.
    used: std::collections::HashMap<String, (u64, u32)>,
}

/// The parameters of a `Digest` credentials header.
#[derive(Debug, Default)]
struct Credentials {
    username: String,
    realm: String,
    nonce: String,
    uri: String,
    response: String,
    algorithm: Option<String>,
    qop: Option<String>,
    nc: Option<String>,
    cnonce: Option<String>,
}

fn parse_credentials(value: &str) -> Option<Credentials> {
    let rest = value.trim();
    let rest = rest
        .get(..6)
        .filter(|s| s.eq_ignore_ascii_case("digest"))
        .map(|_| &rest[6..])?;
    let mut c = Credentials::default();
    for part in super::message::split_list(rest) {
        let (k, v) = part.split_once('=')?;
        let v = v.trim().trim_matches('"').to_string();
        match k.trim().to_ascii_lowercase().as_str() {
            "username" => c.username = v,
            "realm" => c.realm = v,
            "nonce" => c.nonce = v,
            "uri" => c.uri = v,
            "response" => c.response = v.to_ascii_lowercase(),
            "algorithm" => c.algorithm = Some(v),
            "qop" => c.qop = Some(v),
            "nc" => c.nc = Some(v),
            "cnonce" => c.cnonce = Some(v),
            _ => {}
        }
    }
    Some(c)
}

impl Authenticator {
    pub fn new(realm: impl Into<String>) -> Self {
        let mut secret = [0u8; 32];
        rand::Rng::fill(&mut rand::thread_rng(), &mut secret);
        Authenticator {
            realm: realm.into(),
            algorithms: vec![Algorithm::Md5, Algorithm::Sha256],
            secret,
            nonce_lifetime_secs: 300,
            check_uri: true,
            used: std::collections::HashMap::new(),
        }
    }

    /// Whether a digest must be for the request URI it arrives with (default yes).
    pub fn with_uri_check(mut self, check: bool) -> Self {
        self.check_uri = check;
        self
    }

    pub fn with_nonce_lifetime(mut self, secs: u64) -> Self {
        self.nonce_lifetime_secs = secs;
        self
    }

    /// Sets which algorithms are offered, most preferred first.
    pub fn with_algorithms(mut self, algorithms: Vec<Algorithm>) -> Self {
        if !algorithms.is_empty() {
            self.algorithms = algorithms;
        }
        self
    }

    pub fn realm(&self) -> &str {
        &self.realm
    }

    fn mac(&self, issued: u64, salt: u64) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("any key length works");
        mac.update(&issued.to_be_bytes());
        mac.update(&salt.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    /// `issued.salt.mac`: the salt makes every challenge's nonce its own, so two phones
    /// (or two registrations) challenged in the same second never share a nonce count.
    fn nonce(&self, now_secs: u64) -> String {
        let salt: u64 = rand::random();
        format!("{now_secs:x}.{salt:016x}.{}", self.mac(now_secs, salt))
    }

    /// Challenge header values (for WWW-Authenticate or Proxy-Authenticate), one per
    /// configured algorithm. RFC 8760 lets a phone pick any; many phones (and SIPp) answer
    /// only the first, so the default order puts MD5 first, like Asterisk's default.
    /// Each challenge has a nonce of its own: a phone may answer any one of them.
    pub fn challenges(&self, now_secs: u64, stale: bool) -> Vec<String> {
        self.algorithms
            .iter()
            .map(|a| {
                let nonce = self.nonce(now_secs);
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
                    self.realm,
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Checks a credentials header value for `method` on `request_uri` (the request line's
    /// URI), looking passwords up with `password_of`.
    pub fn verify(
        &mut self,
        header: Option<&str>,
        method: &str,
        request_uri: &str,
        password_of: impl Fn(&str) -> Option<String>,
        now_secs: u64,
    ) -> AuthResult {
        let Some(c) = header.and_then(parse_credentials) else {
            return AuthResult::Missing;
        };
        if c.realm != self.realm {
            return AuthResult::Missing;
        }
        let algorithm = match c
            .algorithm
            .as_deref()
            .map(str::to_ascii_uppercase)
            .as_deref()
        {
            None | Some("MD5") => Algorithm::Md5,
            Some("SHA-256") => Algorithm::Sha256,
            _ => return AuthResult::Rejected,
        };
        if !self.algorithms.contains(&algorithm) {
            return AuthResult::Rejected;
        }
        let mut parts = c.nonce.splitn(3, '.');
        let parsed = (|| {
            let issued = u64::from_str_radix(parts.next()?, 16).ok()?;
            let salt = u64::from_str_radix(parts.next()?, 16).ok()?;
            Some((issued, salt, parts.next()?))
        })();
        let Some((issued, salt, mac)) = parsed else {
            return AuthResult::Rejected;
        };
        if mac != self.mac(issued, salt) || issued > now_secs + 5 {
            return AuthResult::Rejected;
        }
        // An unknown user is checked against a throwaway password so the work done and
        // the answer given are the same as for a known user with a wrong password.
        let password = password_of(&c.username);
        let known = password.is_some();
        let password = password.unwrap_or_else(|| super::message::random_token(24));
        let ha1 = algorithm.hash(&format!("{}:{}:{}", c.username, self.realm, password));
        let ha2 = algorithm.hash(&format!("{method}:{}", c.uri));
        let expected = match c.qop.as_deref() {
            Some(q) if q.eq_ignore_ascii_case("auth") => algorithm.hash(&format!(
                "{ha1}:{}:{}:{}:auth:{ha2}",
                c.nonce,
                c.nc.as_deref().unwrap_or(""),
                c.cnonce.as_deref().unwrap_or("")
            )),
            Some(_) => return AuthResult::Rejected,
            None => algorithm.hash(&format!("{ha1}:{}:{ha2}", c.nonce)),
        };
        if !known || !constant_time_eq(expected.as_bytes(), c.response.as_bytes()) {
            return AuthResult::Rejected;
        }
        if now_secs.saturating_sub(issued) > self.nonce_lifetime_secs {
            return AuthResult::Stale;
        }
        if self.check_uri && !same_uri(&c.uri, request_uri) {
            tracing::info!(signed = %c.uri, request = %request_uri, "digest signed for another URI");
            return AuthResult::Replayed;
        }
        let count = match c.qop {
            Some(_) => match c.nc.as_deref().map(|n| u32::from_str_radix(n, 16)) {
                Some(Ok(n)) if n > 0 => n,
                _ => return AuthResult::Rejected,
            },
            None => 0,
        };
        if let Some(&(_, last)) = self.used.get(&c.nonce) {
            if count <= last {
                return AuthResult::Replayed;
            }
        }
        self.remember(c.nonce, issued, count, now_secs);
        AuthResult::Ok(c.username)
    }

    fn remember(&mut self, nonce: String, issued: u64, count: u32, now_secs: u64) {
        if self.used.len() >= MAX_USED_NONCES && !self.used.contains_key(&nonce) {
            let lifetime = self.nonce_lifetime_secs;
            self.used
                .retain(|_, (at, _)| now_secs.saturating_sub(*at) <= lifetime);
            if self.used.len() >= MAX_USED_NONCES {
                self.used.clear();
            }
        }
        self.used.insert(nonce, (issued, count));
    }
}

/// The user a credentials header claims to be (checked or not), for counting failures.
pub fn claimed_user(header: &str) -> Option<String> {
    parse_credentials(header)
        .map(|c| c.username)
        .filter(|u| !u.is_empty())
}

/// Whether the digest's `uri` names the request's URI: the same scheme, host and port
/// (a phone may write the default port or leave it out, and parameters in another
/// order), and the same user where the signed URI names one. Some clients (SIPp among
/// them) sign `sip:host:port` without the request's user; that still ties the answer to
/// this server, and the nonce count ties it to one request.
fn same_uri(signed: &str, request: &str) -> bool {
    fn key(s: &str) -> Option<(String, Option<String>, String, u16)> {
        let uri = rsip::Uri::try_from(s.trim()).ok()?;
        let scheme = uri
            .scheme
            .as_ref()
            .map_or("sip".to_string(), |s| s.to_string().to_ascii_lowercase());
        let user = uri.auth.as_ref().map(|a| a.user.clone());
        let host = uri.host_with_port.host.to_string().to_ascii_lowercase();
        let default = if scheme == "sips" { 5061 } else { 5060 };
        let port = uri.host_with_port.port.map_or(default, |p| *p.value());
        Some((scheme, user, host, port))
    }
    if signed.trim() == request.trim() {
        return true;
    }
    match (key(signed), key(request)) {
        (Some((scheme, user, host, port)), Some((r_scheme, r_user, r_host, r_port))) => {
            (scheme, host, port) == (r_scheme, r_host, r_port) && (user.is_none() || user == r_user)
        }
        // A signed "URI" that is none (SIPp writes IPv6 hosts without brackets) cannot be
        // compared; the digest still covers it and the nonce count still ties the answer
        // to one request.
        (None, Some(_)) => true,
        _ => false,
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "sip:127.0.0.1";

    /// What a phone computes from a challenge.
    fn answer(alg: Algorithm, user: &str, pass: &str, nonce: &str, qop: bool) -> String {
        answer_for(alg, user, pass, nonce, qop.then_some(1), URI)
    }

    /// An answer with nonce count `nc` (`None`: no qop) for a request to `uri`.
    fn answer_for(
        alg: Algorithm,
        user: &str,
        pass: &str,
        nonce: &str,
        nc: Option<u32>,
        uri: &str,
    ) -> String {
        let ha1 = alg.hash(&format!("{user}:switchboard:{pass}"));
        let ha2 = alg.hash(&format!("REGISTER:{uri}"));
        let (resp, extra) = match nc {
            Some(nc) => (
                alg.hash(&format!("{ha1}:{nonce}:{nc:08x}:abc:auth:{ha2}")),
                format!(", qop=auth, nc={nc:08x}, cnonce=\"abc\""),
            ),
            None => (alg.hash(&format!("{ha1}:{nonce}:{ha2}")), String::new()),
        };
        format!(
            "Digest username=\"{user}\", realm=\"switchboard\", nonce=\"{nonce}\", uri=\"{uri}\", response=\"{resp}\", algorithm={}{extra}",
            alg.name()
        )
    }

    #[test]
    fn a_replayed_answer_is_challenged_again_and_a_counted_reuse_is_not() {
        let mut a = Authenticator::new("switchboard");
        let nonce = nonce_of(&a.challenges(1000, false)[0]);
        let first = answer_for(Algorithm::Md5, "2001", "secret2001", &nonce, Some(1), URI);
        assert_eq!(
            a.verify(Some(&first), "REGISTER", URI, pw, 1001),
            AuthResult::Ok("2001".into())
        );
        // The same header again: a replay, whoever sends it.
        assert_eq!(
            a.verify(Some(&first), "REGISTER", URI, pw, 1002),
            AuthResult::Replayed
        );
        // The phone reusing its nonce with the next count is fine; going back is not.
        let third = answer_for(Algorithm::Md5, "2001", "secret2001", &nonce, Some(3), URI);
        assert_eq!(
            a.verify(Some(&third), "REGISTER", URI, pw, 1003),
            AuthResult::Ok("2001".into())
        );
        let second = answer_for(Algorithm::Md5, "2001", "secret2001", &nonce, Some(2), URI);
        assert_eq!(
            a.verify(Some(&second), "REGISTER", URI, pw, 1004),
            AuthResult::Replayed
        );
        // A count of zero or not in hex is no count at all.
        let zero = answer_for(Algorithm::Md5, "2001", "secret2001", &nonce, Some(0), URI);
        assert_eq!(
            a.verify(Some(&zero), "REGISTER", URI, pw, 1005),
            AuthResult::Rejected
        );

        // Without qop a nonce proves one request.
        let nonce = nonce_of(&a.challenges(1010, false)[0]);
        let plain = answer_for(Algorithm::Md5, "2001", "secret2001", &nonce, None, URI);
        assert_eq!(
            a.verify(Some(&plain), "REGISTER", URI, pw, 1011),
            AuthResult::Ok("2001".into())
        );
        assert_eq!(
            a.verify(Some(&plain), "REGISTER", URI, pw, 1012),
            AuthResult::Replayed
        );
    }

    #[test]
    fn an_answer_signed_for_another_uri_is_refused_unless_the_check_is_off() {
        let mut a = Authenticator::new("switchboard");
        let nonce = nonce_of(&a.challenges(1000, false)[0]);
        let signed = answer_for(
            Algorithm::Md5,
            "2001",
            "secret2001",
            &nonce,
            Some(1),
            "sip:10.9.9.9",
        );
        assert_eq!(
            a.verify(Some(&signed), "REGISTER", URI, pw, 1001),
            AuthResult::Replayed
        );
        // The same URI written another way (the default port) is the same URI.
        let nonce = nonce_of(&a.challenges(1002, false)[0]);
        let ported = answer_for(
            Algorithm::Md5,
            "2001",
            "secret2001",
            &nonce,
            Some(1),
            "sip:127.0.0.1:5060",
        );
        assert_eq!(
            a.verify(Some(&ported), "REGISTER", URI, pw, 1003),
            AuthResult::Ok("2001".into())
        );
        assert!(same_uri(
            "sip:100@Example.com;transport=udp",
            "sip:100@example.com:5060"
        ));
        assert!(!same_uri("sip:100@example.com", "sip:101@example.com"));
        assert!(
            same_uri("sip:example.com", "sip:*52@example.com:5060"),
            "SIPp's way"
        );
        assert!(!same_uri("sip:other.example.com", "sip:*52@example.com"));
        assert!(
            same_uri("sip:::1:5060", "sip:0-0-0-0-0-0-0-1.ip6.invalid:5060"),
            "not a URI: not comparable"
        );
        assert!(!same_uri("sips:example.com", "sip:example.com:5061"));

        let mut lax = Authenticator::new("switchboard").with_uri_check(false);
        let nonce = nonce_of(&lax.challenges(1000, false)[0]);
        let signed = answer_for(
            Algorithm::Md5,
            "2001",
            "secret2001",
            &nonce,
            Some(1),
            "sip:10.9.9.9",
        );
        assert_eq!(
            lax.verify(Some(&signed), "REGISTER", URI, pw, 1001),
            AuthResult::Ok("2001".into())
        );
        assert_eq!(claimed_user(&signed).as_deref(), Some("2001"));
    }

    fn nonce_of(challenge: &str) -> String {
        challenge
            .split("nonce=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap()
            .to_string()
    }

    fn pw(u: &str) -> Option<String> {
        (u == "2001").then(|| "secret2001".to_string())
    }

    #[test]
    fn md5_and_sha256_with_and_without_qop() {
        let mut a = Authenticator::new("switchboard")
            .with_algorithms(vec![Algorithm::Md5, Algorithm::Sha256]);
        let ch = a.challenges(1000, false);
        assert!(ch[0].contains("algorithm=MD5") && ch[1].contains("algorithm=SHA-256"));
        let mut sha_only =
            Authenticator::new("switchboard").with_algorithms(vec![Algorithm::Sha256]);
        let n = nonce_of(&sha_only.challenges(1000, false)[0]);
        let md5 = answer(Algorithm::Md5, "2001", "secret2001", &n, true);
        assert_eq!(
            sha_only.verify(Some(&md5), "REGISTER", URI, pw, 1001),
            AuthResult::Rejected
        );
        for (i, alg) in [Algorithm::Md5, Algorithm::Sha256].into_iter().enumerate() {
            for qop in [true, false] {
                // A nonce of its own each time: one answer per nonce and count.
                let nonce = nonce_of(&a.challenges(1000 + 2 * i as u64 + u64::from(qop), false)[0]);
                let h = answer(alg, "2001", "secret2001", &nonce, qop);
                assert_eq!(
                    a.verify(Some(&h), "REGISTER", URI, pw, 1010),
                    AuthResult::Ok("2001".into())
                );
            }
        }
    }

    #[test]
    fn wrong_user_and_wrong_password_look_the_same() {
        let mut a = Authenticator::new("switchboard");
        let nonce = nonce_of(&a.challenges(1000, false)[0]);
        let bad_pass = answer(Algorithm::Md5, "2001", "nope", &nonce, true);
        let bad_user = answer(Algorithm::Md5, "9999", "secret2001", &nonce, true);
        assert_eq!(
            a.verify(Some(&bad_pass), "REGISTER", URI, pw, 1001),
            AuthResult::Rejected
        );
        assert_eq!(
            a.verify(Some(&bad_user), "REGISTER", URI, pw, 1001),
            AuthResult::Rejected
        );
        assert_eq!(
            a.verify(None, "REGISTER", URI, pw, 1001),
            AuthResult::Missing
        );
    }

    #[test]
    fn expired_nonce_is_stale_forged_nonce_is_rejected() {
        let mut a = Authenticator::new("switchboard").with_nonce_lifetime(300);
        let ch = a.challenges(1000, false);
        let good = answer(
            Algorithm::Sha256,
            "2001",
            "secret2001",
            &nonce_of(&ch[0]),
            true,
        );
        assert_eq!(
            a.verify(Some(&good), "REGISTER", URI, pw, 1400),
            AuthResult::Stale
        );
        assert!(a.challenges(1400, true)[0].ends_with("stale=true"));
        let forged = answer(
            Algorithm::Sha256,
            "2001",
            "secret2001",
            "3e8.000000000000000000000000",
            true,
        );
        assert_eq!(
            a.verify(Some(&forged), "REGISTER", URI, pw, 1001),
            AuthResult::Rejected
        );
        // Another server's nonce (different secret) is forged too.
        let other = Authenticator::new("switchboard");
        let theirs = answer(
            Algorithm::Md5,
            "2001",
            "secret2001",
            &nonce_of(&other.challenges(1000, false)[1]),
            true,
        );
        assert_eq!(
            a.verify(Some(&theirs), "REGISTER", URI, pw, 1001),
            AuthResult::Rejected
        );
    }
}
