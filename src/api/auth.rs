//! Who is calling the API: a configured token (kept only as its SHA-256) or a browser
//! session from logging in with a SIP extension and password. Every handler takes a
//! [`Caller`] and asks it for the role it needs; a missing or wrong credential is 401, a
//! right one of the wrong role 403.
//!
//! Logins are the only guessable door, so failures are counted per source address: each
//! failure answers a little later than the one before, and after `lockout_after` of them
//! the address is refused for `lockout_secs`. An unknown extension and a wrong password
//! get the same answer, after the same work.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{header, Method};
use rand::RngCore;
use sha2::{Digest, Sha256};

use super::problem::Problem;
use super::ApiState;
use crate::config::{ApiRole, Config, Role};

pub const SESSION_COOKIE: &str = "sb_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

/// The authenticated caller of one request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The token's name, or the extension that logged in.
    pub name: String,
    pub role: ApiRole,
    /// The extension an agent acts as.
    pub extension: Option<String>,
}

impl Caller {
    /// At least `role`; agents count as agents only (never as reporting's superset).
    pub fn require(&self, role: ApiRole) -> Result<(), Problem> {
        let ok = match role {
            ApiRole::Reporting => true,
            ApiRole::Agent => self.role != ApiRole::Reporting,
            ApiRole::Supervisor => self.role >= ApiRole::Supervisor,
            ApiRole::Admin => self.role == ApiRole::Admin,
        };
        if ok {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this needs the {} role; {} has the {} role",
                role.as_str(),
                self.name,
                self.role.as_str()
            )))
        }
    }

    /// May act for this agent: itself, or a supervisor or admin.
    pub fn may_act_as(&self, extension: &str) -> Result<(), Problem> {
        match self.role {
            ApiRole::Admin | ApiRole::Supervisor => Ok(()),
            ApiRole::Agent if self.extension.as_deref() == Some(extension) => Ok(()),
            ApiRole::Agent => Err(Problem::forbidden(format!(
                "an agent acts only as its own extension ({}), not as {extension}",
                self.extension.as_deref().unwrap_or("?")
            ))),
            ApiRole::Reporting => Err(Problem::forbidden(
                "the reporting role is read-only".to_string(),
            )),
        }
    }

    /// Only agents are limited to their own extension's data.
    pub fn only_agent(&self) -> Option<&str> {
        (self.role == ApiRole::Agent)
            .then_some(self.extension.as_deref())
            .flatten()
    }

    /// For the agent's state history and records: `api:NAME`.
    pub fn cause(&self) -> String {
        format!("api:{}", self.name)
    }
}

struct Session {
    caller: Caller,
    csrf: String,
    expires: Instant,
}

#[derive(Default)]
struct Failures {
    count: u32,
    locked_until: Option<Instant>,
    last: Option<Instant>,
}

/// Addresses remembered at most; past this, ones quiet for a lock-out period are forgotten.
const MAX_FAILING_ADDRESSES: usize = 10_000;

/// Tokens, sessions and login failures. Locks here are held for a map look-up, never
/// across an await.
pub struct Auth {
    tokens: Vec<crate::config::ApiToken>,
    sessions: Mutex<HashMap<String, Session>>,
    failures: Mutex<HashMap<IpAddr, Failures>>,
    session_ttl: Duration,
    lockout_after: u32,
    lockout: Duration,
}

pub fn sha256(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// Equal without telling by its timing where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn random_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// A new random token and the SHA-256 the configuration keeps of it.
pub fn new_token() -> (String, String) {
    let token = format!("sb_{}", random_hex(24));
    let hash = hex::encode(sha256(&token));
    (token, hash)
}

pub enum LoginError {
    /// Wrong extension or password (the same answer for both).
    Refused,
    LockedOut {
        retry_after: u64,
    },
}

impl Auth {
    pub fn new(config: &Config) -> Self {
        let api = config.api.as_ref();
        Auth {
            tokens: api.map(|a| a.tokens.clone()).unwrap_or_default(),
            sessions: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
            session_ttl: Duration::from_secs(api.map_or(8 * 3600, |a| a.session_secs)),
            lockout_after: api.map_or(5, |a| a.lockout_after.max(1)),
            lockout: Duration::from_secs(api.map_or(300, |a| a.lockout_secs)),
        }
    }

    fn by_token(&self, token: &str) -> Option<Caller> {
        let hash = sha256(token);
        // Every token is compared, so the time taken does not say which one matched.
        let mut found = None;
        for t in &self.tokens {
            if same(&t.sha256, &hash) {
                found = Some(Caller {
                    name: t.name.clone(),
                    role: t.role,
                    extension: t.extension.clone(),
                });
            }
        }
        found
    }

    fn by_session(&self, id: &str, now: Instant) -> Option<(Caller, String)> {
        let sessions = self.sessions.lock().expect("sessions lock");
        sessions
            .get(id)
            .filter(|s| s.expires > now)
            .map(|s| (s.caller.clone(), s.csrf.clone()))
    }

    /// How long a failing address must wait before its answer: doubling per failure.
    fn penalty(&self, ip: IpAddr) -> Result<Duration, LoginError> {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("failures lock");
        let entry = f.entry(ip).or_default();
        if let Some(until) = entry.locked_until {
            if until > now {
                return Err(LoginError::LockedOut {
                    retry_after: (until - now).as_secs().max(1),
                });
            }
            *entry = Failures::default();
        }
        Ok(Duration::from_millis(100u64 << entry.count.min(4)).min(Duration::from_secs(2)))
    }

    fn failed(&self, ip: IpAddr) {
        let now = Instant::now();
        let mut f = self.failures.lock().expect("failures lock");
        if f.len() >= MAX_FAILING_ADDRESSES {
            let lockout = self.lockout;
            f.retain(|_, e| {
                e.locked_until.is_some_and(|u| u > now)
                    || e.last.is_some_and(|l| now.duration_since(l) < lockout)
            });
        }
        let entry = f.entry(ip).or_default();
        entry.count += 1;
        entry.last = Some(now);
        if entry.count >= self.lockout_after {
            entry.locked_until = Some(Instant::now() + self.lockout);
            tracing::warn!(%ip, failures = entry.count, secs = self.lockout.as_secs(), "API logins from this address locked out");
        }
    }

    /// Checks an extension's SIP password; on success a new session id and CSRF token.
    pub async fn login(
        &self,
        config: &Config,
        ip: IpAddr,
        extension: &str,
        password: &str,
    ) -> Result<(String, String, Caller), LoginError> {
        let wait = self.penalty(ip)?;
        let user = config.user(extension);
        // The same comparison whether or not the user exists.
        let expected = user.map_or("\u{0}no such user\u{0}", |u| u.password.as_str());
        let good = same(sha256(expected).as_slice(), sha256(password).as_slice()) && user.is_some();
        if !good {
            self.failed(ip);
            tokio::time::sleep(wait).await;
            return Err(LoginError::Refused);
        }
        self.failures.lock().expect("failures lock").remove(&ip);
        let user = user.expect("checked above");
        let caller = Caller {
            name: user.extension.clone(),
            role: match user.role {
                Role::Supervisor => ApiRole::Supervisor,
                Role::Agent => ApiRole::Agent,
            },
            extension: Some(user.extension.clone()),
        };
        let (id, csrf) = self.new_session(&caller);
        Ok((id, csrf, caller))
    }

    /// A browser session for a configured API token (a wall display, a reporting user):
    /// failures count against the address as wrong passwords do.
    pub async fn login_token(
        &self,
        ip: IpAddr,
        token: &str,
    ) -> Result<(String, String, Caller), LoginError> {
        let wait = self.penalty(ip)?;
        let Some(caller) = self.by_token(token) else {
            self.failed(ip);
            tokio::time::sleep(wait).await;
            return Err(LoginError::Refused);
        };
        self.failures.lock().expect("failures lock").remove(&ip);
        let (id, csrf) = self.new_session(&caller);
        Ok((id, csrf, caller))
    }

    fn new_session(&self, caller: &Caller) -> (String, String) {
        let id = random_hex(32);
        let csrf = random_hex(16);
        let mut sessions = self.sessions.lock().expect("sessions lock");
        // Expired sessions go when a new one comes, not on every request.
        let now = Instant::now();
        sessions.retain(|_, s| s.expires > now);
        sessions.insert(
            id.clone(),
            Session {
                caller: caller.clone(),
                csrf: csrf.clone(),
                expires: now + self.session_ttl,
            },
        );
        (id, csrf)
    }

    pub fn logout(&self, id: &str) {
        self.sessions.lock().expect("sessions lock").remove(id);
    }

    pub fn session_secs(&self) -> u64 {
        self.session_ttl.as_secs()
    }
}

pub fn session_cookie(parts: &Parts) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == SESSION_COOKIE)
        .map(|(_, v)| v.to_string())
}

pub fn client_ip(parts: &Parts) -> IpAddr {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
        .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

impl FromRequestParts<Arc<ApiState>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState>,
    ) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim);
        if let Some(token) = bearer {
            return state.auth.by_token(token).ok_or_else(Problem::unauthorized);
        }
        // Browsers cannot send a header on a WebSocket upgrade; they may name the token
        // in the query instead (only for the event stream).
        if parts.uri.path().ends_with("/events") {
            if let Some(token) = parts
                .uri
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("access_token=")))
            {
                return state.auth.by_token(token).ok_or_else(Problem::unauthorized);
            }
        }
        let Some(id) = session_cookie(parts) else {
            return Err(Problem::unauthorized());
        };
        let (caller, csrf) = state
            .auth
            .by_session(&id, Instant::now())
            .ok_or_else(Problem::unauthorized)?;
        // A cookie travels with any page's request; a state change must also carry the
        // token only our own pages were given at login.
        let changes = !matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if changes {
            let sent = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !same(sent.as_bytes(), csrf.as_bytes()) {
                return Err(Problem::forbidden(
                    "a state change with a session cookie must send the X-CSRF-Token given at login",
                ));
            }
        }
        Ok(caller)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(lockout_after: u32) -> Config {
        let (_, hash) = new_token();
        let yaml = format!(
            "sip:\n  listen: [\"udp:127.0.0.1:5060\"]\nrtp:\n  ports: \"20000-20099\"\n\
             users:\n  - {{ extension: \"2001\", password: secret2001 }}\n\
             api:\n  listen: 127.0.0.1:8080\n  lockout_after: {lockout_after}\n  lockout_secs: 60\n\
             \x20 tokens:\n    - {{ name: ops, role: admin, sha256: \"{hash}\" }}\n"
        );
        crate::config::parse(std::path::Path::new("t.yaml"), &yaml).unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn failed_logins_slow_down_then_lock_the_address_out_while_others_still_log_in() {
        let cfg = config(3);
        let auth = Auth::new(&cfg);
        let bad: IpAddr = "192.0.2.7".parse().unwrap();
        let good: IpAddr = "192.0.2.8".parse().unwrap();
        let mut waits = Vec::new();
        for _ in 0..3 {
            let t = tokio::time::Instant::now();
            assert!(matches!(
                auth.login(&cfg, bad, "2001", "wrong").await,
                Err(LoginError::Refused)
            ));
            waits.push(t.elapsed());
        }
        assert!(waits[0] < waits[1] && waits[1] < waits[2], "{waits:?}");
        // Locked out now, even with the right password.
        assert!(matches!(
            auth.login(&cfg, bad, "2001", "secret2001").await,
            Err(LoginError::LockedOut { .. })
        ));
        // An unknown user is refused like a wrong password.
        assert!(matches!(
            auth.login(&cfg, good, "9999", "secret2001").await,
            Err(LoginError::Refused)
        ));
        let (id, csrf, who) = auth
            .login(&cfg, good, "2001", "secret2001")
            .await
            .ok()
            .unwrap();
        assert_eq!(who.role, ApiRole::Agent);
        assert_eq!(who.extension.as_deref(), Some("2001"));
        assert!(auth
            .by_session(&id, Instant::now())
            .is_some_and(|(_, c)| c == csrf));
        auth.logout(&id);
        assert!(auth.by_session(&id, Instant::now()).is_none());
    }

    #[test]
    fn a_token_is_known_by_its_hash_only() {
        let (token, hash) = new_token();
        let mut cfg = config(5);
        cfg.api.as_mut().unwrap().tokens[0].sha256 =
            hex::decode(&hash).unwrap().try_into().unwrap();
        let auth = Auth::new(&cfg);
        assert_eq!(auth.by_token(&token).unwrap().role, ApiRole::Admin);
        assert!(auth.by_token(&hash).is_none());
        assert!(auth.by_token("sb_wrong").is_none());
    }
}
