//! Password-guessing defence for SIP digest: failures are counted per user at an address
//! and per address, and a key that fails too often is locked out for a while, each
//! further lock-out of it twice as long (up to a day), as fail2ban does for Asterisk.
//!
//! While locked, requests with credentials from that key are refused with the same 403 a
//! wrong password gets, without checking them: a guesser learns nothing from the answer,
//! and its guesses stop being tried. Sans-IO: the switch owns the guard and passes the
//! time in.
//!
//! Which keys lock ([`LockScope`]):
//! * `user_and_address` (default): the user at that address, and the address whatever
//!   users it tries. Someone guessing 2001's password from one address cannot lock 2001
//!   out of the phone on their desk.
//! * `user`: the user everywhere (a guesser can then lock a user out; some sites want
//!   that, trading availability for safety).
//! * `address`: the address only.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// The longest a lock-out grows to.
const MAX_LOCKOUT: Duration = Duration::from_secs(24 * 3600);
/// Keys remembered at most; past this, ones neither locked nor failing lately go first.
const MAX_KEYS: usize = 50_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockScope {
    UserAndAddress,
    User,
    Address,
}

impl LockScope {
    pub fn parse(s: &str) -> Option<LockScope> {
        match s {
            "user_and_address" => Some(LockScope::UserAndAddress),
            "user" => Some(LockScope::User),
            "address" => Some(LockScope::Address),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// Failures in a row (no success between) that lock a key.
    pub after: u32,
    /// The first lock-out; each further one of the same key doubles.
    pub lockout: Duration,
    pub scope: LockScope,
}

impl Default for GuardConfig {
    fn default() -> Self {
        GuardConfig {
            after: 10,
            lockout: Duration::from_secs(300),
            scope: LockScope::UserAndAddress,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    User(String),
    Address(IpAddr),
    UserAt(String, IpAddr),
}

#[derive(Debug, Default)]
struct Entry {
    failures: u32,
    lockouts: u32,
    locked_until: Option<Instant>,
    last: Option<Instant>,
}

/// A lock-out that a failure has just started, for the log and `/metrics`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lockout {
    /// `2001`, `2001 at 192.0.2.7` or `192.0.2.7`.
    pub who: String,
    pub failures: u32,
    pub duration: Duration,
}

#[derive(Debug)]
pub struct AuthGuard {
    config: GuardConfig,
    entries: HashMap<Key, Entry>,
    /// When each lock-out in force ends, soonest first: the count for `/metrics` without
    /// a walk over every key.
    ends: std::collections::BinaryHeap<std::cmp::Reverse<Instant>>,
}

impl AuthGuard {
    pub fn new(config: GuardConfig) -> Self {
        AuthGuard {
            config,
            entries: HashMap::new(),
            ends: std::collections::BinaryHeap::new(),
        }
    }

    fn keys(&self, user: &str, ip: IpAddr) -> Vec<Key> {
        match self.config.scope {
            LockScope::UserAndAddress => {
                vec![Key::UserAt(user.to_owned(), ip), Key::Address(ip)]
            }
            LockScope::User => vec![Key::User(user.to_owned())],
            LockScope::Address => vec![Key::Address(ip)],
        }
    }

    /// How long `user` at `ip` stays locked out, if it is.
    pub fn locked(&self, user: &str, ip: IpAddr, now: Instant) -> Option<Duration> {
        self.keys(user, ip)
            .iter()
            .filter_map(|k| self.entries.get(k)?.locked_until)
            .filter(|&until| until > now)
            .map(|until| until - now)
            .max()
    }

    /// Counts a wrong answer; returns the lock-outs it starts.
    pub fn failed(&mut self, user: &str, ip: IpAddr, now: Instant) -> Vec<Lockout> {
        if self.entries.len() >= MAX_KEYS {
            self.forget_quiet(now);
        }
        let (after, first) = (self.config.after.max(1), self.config.lockout);
        let mut started = Vec::new();
        for key in self.keys(user, ip) {
            let e = self.entries.entry(key.clone()).or_default();
            if e.locked_until.is_some_and(|u| u <= now) {
                // A lock-out served: count afresh, but remember it for the next one.
                e.locked_until = None;
                e.failures = 0;
            }
            e.failures += 1;
            e.last = Some(now);
            if e.failures >= after && e.locked_until.is_none() {
                let duration = first
                    .saturating_mul(1u32 << e.lockouts.min(16))
                    .min(MAX_LOCKOUT);
                e.lockouts += 1;
                e.locked_until = Some(now + duration);
                self.ends.push(std::cmp::Reverse(now + duration));
                started.push(Lockout {
                    who: match &key {
                        Key::User(u) => u.clone(),
                        Key::Address(ip) => ip.to_string(),
                        Key::UserAt(u, ip) => format!("{u} at {ip}"),
                    },
                    failures: e.failures,
                    duration,
                });
            }
        }
        started
    }

    /// A right answer: the user's count starts again (the address's too, unless it is
    /// locked: one right password does not unlock an address that guessed at others).
    pub fn succeeded(&mut self, user: &str, ip: IpAddr, now: Instant) {
        for key in self.keys(user, ip) {
            if let Some(e) = self.entries.get_mut(&key) {
                if e.locked_until.is_none_or(|u| u <= now) {
                    e.failures = 0;
                    e.locked_until = None;
                }
            }
        }
    }

    /// Keys locked now, for `/metrics`.
    pub fn locked_keys(&mut self, now: Instant) -> usize {
        while self.ends.peek().is_some_and(|end| end.0 <= now) {
            self.ends.pop();
        }
        self.ends.len()
    }

    fn forget_quiet(&mut self, now: Instant) {
        let keep = MAX_LOCKOUT.min(self.config.lockout * 4);
        self.entries.retain(|_, e| {
            e.locked_until.is_some_and(|u| u > now)
                || e.last.is_some_and(|l| now.duration_since(l) < keep)
        });
        if self.entries.len() >= MAX_KEYS {
            // Still full of recent failures: a flood. Drop the unlocked ones.
            self.entries
                .retain(|_, e| e.locked_until.is_some_and(|u| u > now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECS: Duration = Duration::from_secs(1);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([192, 0, 2, last])
    }

    fn guard(scope: LockScope) -> AuthGuard {
        AuthGuard::new(GuardConfig {
            after: 3,
            lockout: 60 * SECS,
            scope,
        })
    }

    #[test]
    fn a_guesser_is_locked_out_at_its_address_while_the_user_elsewhere_is_not() {
        let mut g = guard(LockScope::UserAndAddress);
        let t0 = Instant::now();
        assert!(g.failed("2001", ip(9), t0).is_empty());
        assert!(g.failed("2001", ip(9), t0 + SECS).is_empty());
        let started = g.failed("2001", ip(9), t0 + 2 * SECS);
        let who: Vec<&str> = started.iter().map(|l| l.who.as_str()).collect();
        assert_eq!(who, ["2001 at 192.0.2.9", "192.0.2.9"]);
        assert_eq!(started[0].duration, 60 * SECS);
        assert_eq!(g.locked("2001", ip(9), t0 + 3 * SECS), Some(59 * SECS));
        // The same address trying another user is locked too; the user at its desk is not.
        assert!(g.locked("2002", ip(9), t0 + 3 * SECS).is_some());
        assert_eq!(g.locked("2001", ip(7), t0 + 3 * SECS), None);
        assert_eq!(g.locked_keys(t0 + 3 * SECS), 2);
        // Served: free again, and the next lock-out is twice as long.
        let later = t0 + 63 * SECS;
        assert_eq!(g.locked("2001", ip(9), later), None);
        for i in 0..3 {
            g.failed("2001", ip(9), later + i * SECS);
        }
        assert_eq!(g.locked("2001", ip(9), later + 3 * SECS), Some(119 * SECS));
    }

    #[test]
    fn a_right_password_resets_the_count_but_does_not_unlock() {
        let mut g = guard(LockScope::User);
        let t0 = Instant::now();
        g.failed("2001", ip(1), t0);
        g.failed("2001", ip(2), t0);
        g.succeeded("2001", ip(1), t0);
        g.failed("2001", ip(3), t0);
        g.failed("2001", ip(4), t0);
        assert_eq!(
            g.locked("2001", ip(1), t0),
            None,
            "two failures since the success"
        );
        let started = g.failed("2001", ip(5), t0);
        assert_eq!(started.len(), 1);
        // Locked everywhere in this scope, and a right answer changes nothing now.
        g.succeeded("2001", ip(1), t0 + SECS);
        assert!(g.locked("2001", ip(1), t0 + SECS).is_some());
        assert_eq!(g.locked("2002", ip(1), t0 + SECS), None);
    }

    #[test]
    fn lockouts_stop_growing_at_a_day_and_a_flood_of_keys_stays_bounded() {
        let mut g = AuthGuard::new(GuardConfig {
            after: 1,
            lockout: 3600 * SECS,
            scope: LockScope::Address,
        });
        let mut t = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..8 {
            last = g.failed("x", ip(1), t)[0].duration;
            t += last + SECS;
        }
        assert_eq!(last, MAX_LOCKOUT);

        let mut g = guard(LockScope::UserAndAddress);
        let t0 = Instant::now();
        for i in 0..(MAX_KEYS as u32 + 10) {
            g.failed(&i.to_string(), ip(3), t0);
        }
        assert!(g.entries.len() <= MAX_KEYS);
        assert!(
            g.locked("anyone", ip(3), t0).is_some(),
            "the address stays locked"
        );
        assert_eq!(LockScope::parse("user"), Some(LockScope::User));
        assert_eq!(LockScope::parse("everyone"), None);
    }
}
