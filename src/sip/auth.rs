//! Digest authentication (RFC 3261 §22, RFC 8760 for SHA-256) with stateless nonces.
//!
//! A nonce is `issued-at` plus an HMAC of it under a secret drawn at start-up, so the server
//! keeps no per-challenge state and can tell an expired nonce (answer `stale=true`, the phone
//! retries silently) from a forged one. Wrong user, wrong password and wrong realm all give
//! the same [`AuthResult::Rejected`], so the answer never reveals which users exist.

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
}

pub struct Authenticator {
    realm: String,
    /// Offered in this order; a phone that reads only the first challenge uses it.
    algorithms: Vec<Algorithm>,
    secret: [u8; 32],
    nonce_lifetime_secs: u64,
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
        }
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

    fn mac(&self, issued: u64) -> String {
        let mut mac = HmacSha256::new_from_slice(&self.secret).expect("any key length works");
        mac.update(&issued.to_be_bytes());
        hex::encode(&mac.finalize().into_bytes()[..12])
    }

    fn nonce(&self, now_secs: u64) -> String {
        format!("{now_secs:x}.{}", self.mac(now_secs))
    }

    /// Challenge header values (for WWW-Authenticate or Proxy-Authenticate), one per
    /// configured algorithm. RFC 8760 lets a phone pick any; many phones (and SIPp) answer
    /// only the first, so the default order puts MD5 first, like Asterisk's default.
    pub fn challenges(&self, now_secs: u64, stale: bool) -> Vec<String> {
        let nonce = self.nonce(now_secs);
        self.algorithms
            .iter()
            .map(|a| {
                format!(
                    "Digest realm=\"{}\", nonce=\"{nonce}\", algorithm={}, qop=\"auth\"{}",
                    self.realm,
                    a.name(),
                    if stale { ", stale=true" } else { "" }
                )
            })
            .collect()
    }

    /// Checks a credentials header value for `method`, looking passwords up with `password_of`.
    pub fn verify(
        &self,
        header: Option<&str>,
        method: &str,
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
        let Some((issued, mac)) = c
            .nonce
            .split_once('.')
            .and_then(|(t, m)| Some((u64::from_str_radix(t, 16).ok()?, m)))
        else {
            return AuthResult::Rejected;
        };
        if mac != self.mac(issued) || issued > now_secs + 5 {
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
        AuthResult::Ok(c.username)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a phone computes from a challenge.
    fn answer(alg: Algorithm, user: &str, pass: &str, nonce: &str, qop: bool) -> String {
        let ha1 = alg.hash(&format!("{user}:switchboard:{pass}"));
        let ha2 = alg.hash("REGISTER:sip:127.0.0.1");
        let (resp, extra) = if qop {
            (
                alg.hash(&format!("{ha1}:{nonce}:00000001:abc:auth:{ha2}")),
                ", qop=auth, nc=00000001, cnonce=\"abc\"",
            )
        } else {
            (alg.hash(&format!("{ha1}:{nonce}:{ha2}")), "")
        };
        format!(
            "Digest username=\"{user}\", realm=\"switchboard\", nonce=\"{nonce}\", uri=\"sip:127.0.0.1\", response=\"{resp}\", algorithm={}{extra}",
            alg.name()
        )
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
        let a = Authenticator::new("switchboard")
            .with_algorithms(vec![Algorithm::Md5, Algorithm::Sha256]);
        let ch = a.challenges(1000, false);
        assert!(ch[0].contains("algorithm=MD5") && ch[1].contains("algorithm=SHA-256"));
        let sha_only = Authenticator::new("switchboard").with_algorithms(vec![Algorithm::Sha256]);
        let n = nonce_of(&sha_only.challenges(1000, false)[0]);
        let md5 = answer(Algorithm::Md5, "2001", "secret2001", &n, true);
        assert_eq!(
            sha_only.verify(Some(&md5), "REGISTER", pw, 1001),
            AuthResult::Rejected
        );
        let nonce = nonce_of(&ch[0]);
        for alg in [Algorithm::Md5, Algorithm::Sha256] {
            for qop in [true, false] {
                let h = answer(alg, "2001", "secret2001", &nonce, qop);
                assert_eq!(
                    a.verify(Some(&h), "REGISTER", pw, 1010),
                    AuthResult::Ok("2001".into())
                );
            }
        }
    }

    #[test]
    fn wrong_user_and_wrong_password_look_the_same() {
        let a = Authenticator::new("switchboard");
        let nonce = nonce_of(&a.challenges(1000, false)[0]);
        let bad_pass = answer(Algorithm::Md5, "2001", "nope", &nonce, true);
        let bad_user = answer(Algorithm::Md5, "9999", "secret2001", &nonce, true);
        assert_eq!(
            a.verify(Some(&bad_pass), "REGISTER", pw, 1001),
            AuthResult::Rejected
        );
        assert_eq!(
            a.verify(Some(&bad_user), "REGISTER", pw, 1001),
            AuthResult::Rejected
        );
        assert_eq!(a.verify(None, "REGISTER", pw, 1001), AuthResult::Missing);
    }

    #[test]
    fn expired_nonce_is_stale_forged_nonce_is_rejected() {
        let a = Authenticator::new("switchboard").with_nonce_lifetime(300);
        let ch = a.challenges(1000, false);
        let good = answer(
            Algorithm::Sha256,
            "2001",
            "secret2001",
            &nonce_of(&ch[0]),
            true,
        );
        assert_eq!(
            a.verify(Some(&good), "REGISTER", pw, 1400),
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
            a.verify(Some(&forged), "REGISTER", pw, 1001),
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
            a.verify(Some(&theirs), "REGISTER", pw, 1001),
            AuthResult::Rejected
        );
    }
}
