//! Abuse and overload limits, the pike / ratelimit bar: what a server facing the internet
//! needs before anything else reads a request. Sans-IO: the switch owns [`Limits`] and
//! passes the time in.
//!
//! * **Per-source rate**: every address that is not a configured trunk peer has a token
//!   bucket of requests; a request over it is dropped unread (answering a flood is
//!   working for it).
//! * **Scanners**: an address that is not a trunk peer and collects `scan_strikes`
//!   refusals (401, 403, 404, 407…) without ever authenticating is ignored for
//!   `scan_ban`: sweeps of the sipvicious kind get silence, and a phone that
//!   authenticates clears its strikes.
//! * **Call admission**: new calls from anyone (trunks too) are admitted at most
//!   `call_setups_per_sec` (a bucket one second deep) and while fewer than `max_calls`
//!   are in progress; the others get 503 with `Retry-After`, before the media of the
//!   calls in progress suffers.
//! * **Load**: new calls are refused the same way when the INVITE waited longer than
//!   `max_queue_delay` for the switch (it is falling behind: a count of messages waiting
//!   would also count a flood it drops cheaply), or while the server's CPU over the last
//!   second is above `max_cpu_percent` of its cores; both clear by themselves as the
//!   load falls.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Addresses remembered at most; past this, quiet ones are forgotten first.
const MAX_SOURCES: usize = 50_000;
/// An address with no traffic this long is forgotten (unless banned).
const IDLE: Duration = Duration::from_secs(120);

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LimitsConfig {
    /// Requests per second from one address that is not a trunk peer (0: no limit).
    pub source_rate: u32,
    /// How many such requests may come at once.
    pub source_burst: u32,
    /// Refusals before an address that never authenticates is ignored (0: never).
    pub scan_strikes: u32,
    pub scan_ban: Duration,
    /// New calls admitted per second, whoever sends them (0: no limit).
    pub call_setups_per_sec: u32,
    /// Calls in progress at most (0: no limit).
    pub max_calls: usize,
    /// How long a new call's INVITE may have waited for the switch (zero: no limit).
    pub max_queue_delay: Duration,
    /// The server's CPU over the last second, in percent of all its cores, above which
    /// new calls are refused (0: no limit).
    pub max_cpu_percent: u32,
    /// What a 503 tells the caller to wait.
    pub retry_after: Duration,
}

/// How loaded the server is as a new call arrives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Calls in progress.
    pub calls: usize,
    /// How long the INVITE waited between the socket and the switch.
    pub queued: Duration,
    /// CPU over the last second, percent of all cores.
    pub cpu_percent: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            source_rate: 100,
            source_burst: 200,
            scan_strikes: 30,
            scan_ban: Duration::from_secs(600),
            call_setups_per_sec: 0,
            max_calls: 0,
            max_queue_delay: Duration::from_millis(200),
            max_cpu_percent: 0,
            retry_after: Duration::from_secs(5),
        }
    }
}

/// What to do with a request from an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    Pass,
    /// Over its rate: drop it unread.
    OverRate,
    /// A scanner being ignored.
    Banned,
}

/// Why a new call is refused with 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overload {
    SetupRate,
    MaxCalls,
    QueueDelay,
    Cpu,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn full(size: u32, now: Instant) -> Bucket {
        Bucket {
            tokens: f64::from(size),
            at: now,
        }
    }

    /// Takes one token if there is one, refilling at `rate` per second up to `size`.
    fn take(&mut self, rate: u32, size: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * f64::from(rate)).min(f64::from(size));
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[derive(Debug)]
struct Source {
    bucket: Bucket,
    strikes: u32,
    banned_until: Option<Instant>,
    last: Instant,
}

#[derive(Debug)]
pub struct Limits {
    config: LimitsConfig,
    sources: HashMap<IpAddr, Source>,
    setups: Bucket,
    /// When each ban in force ends, soonest first (the gauge without a walk).
    ban_ends: std::collections::BinaryHeap<std::cmp::Reverse<Instant>>,
}

/// A ban that a strike has just started, for the log and `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ban {
    pub ip: IpAddr,
    pub strikes: u32,
}

impl Limits {
    pub fn new(config: LimitsConfig, now: Instant) -> Limits {
        Limits {
            config,
            sources: HashMap::new(),
            setups: Bucket::full(config.call_setups_per_sec, now),
            ban_ends: std::collections::BinaryHeap::new(),
        }
    }

    pub fn config(&self) -> &LimitsConfig {
        &self.config
    }

    fn source(&mut self, ip: IpAddr, now: Instant) -> &mut Source {
        if self.sources.len() >= MAX_SOURCES && !self.sources.contains_key(&ip) {
            self.forget_quiet(now);
        }
        let burst = self.config.source_burst;
        self.sources.entry(ip).or_insert_with(|| Source {
            bucket: Bucket::full(burst, now),
            strikes: 0,
            banned_until: None,
            last: now,
        })
    }

    /// A request from `ip`, which is not a trunk peer.
    pub fn admit_request(&mut self, ip: IpAddr, now: Instant) -> Admit {
        let (rate, burst) = (self.config.source_rate, self.config.source_burst);
        let s = self.source(ip, now);
        s.last = now;
        if let Some(until) = s.banned_until {
            if until > now {
                return Admit::Banned;
            }
            s.banned_until = None;
            s.strikes = 0;
        }
        if rate == 0 || s.bucket.take(rate, burst.max(1), now) {
            Admit::Pass
        } else {
            Admit::OverRate
        }
    }

    /// A refusal sent to `ip` (not a trunk peer); the ban it starts, if any.
    pub fn strike(&mut self, ip: IpAddr, now: Instant) -> Option<Ban> {
        let (limit, ban) = (self.config.scan_strikes, self.config.scan_ban);
        if limit == 0 {
            return None;
        }
        let s = self.source(ip, now);
        s.last = now;
        s.strikes += 1;
        if s.strikes < limit || s.banned_until.is_some() {
            return None;
        }
        s.banned_until = Some(now + ban);
        let strikes = s.strikes;
        self.ban_ends.push(std::cmp::Reverse(now + ban));
        Some(Ban { ip, strikes })
    }

    /// `ip` authenticated: whatever it collected was a phone finding its password.
    pub fn authenticated(&mut self, ip: IpAddr) {
        if let Some(s) = self.sources.get_mut(&ip) {
            if s.banned_until.is_none() {
                s.strikes = 0;
            }
        }
    }

    /// A new call, with `in_progress` calls up now.
    pub fn admit_call(&mut self, load: Load, now: Instant) -> Result<(), Overload> {
        let c = &self.config;
        if c.max_calls > 0 && load.calls >= c.max_calls {
            return Err(Overload::MaxCalls);
        }
        if !c.max_queue_delay.is_zero() && load.queued > c.max_queue_delay {
            return Err(Overload::QueueDelay);
        }
        if c.max_cpu_percent > 0 && load.cpu_percent > c.max_cpu_percent {
            return Err(Overload::Cpu);
        }
        let rate = self.config.call_setups_per_sec;
        if rate > 0 && !self.setups.take(rate, rate, now) {
            return Err(Overload::SetupRate);
        }
        Ok(())
    }

    /// Addresses being ignored now, for `/metrics`.
    pub fn banned(&mut self, now: Instant) -> usize {
        while self.ban_ends.peek().is_some_and(|end| end.0 <= now) {
            self.ban_ends.pop();
        }
        self.ban_ends.len()
    }

    fn forget_quiet(&mut self, now: Instant) {
        self.sources.retain(|_, s| {
            s.banned_until.is_some_and(|u| u > now) || now.duration_since(s.last) < IDLE
        });
        if self.sources.len() >= MAX_SOURCES {
            // A flood from that many addresses: keep only the bans.
            self.sources
                .retain(|_, s| s.banned_until.is_some_and(|u| u > now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([198, 51, 100, last])
    }

    #[test]
    fn a_source_gets_its_burst_then_its_rate() {
        let t0 = Instant::now();
        let mut l = Limits::new(
            LimitsConfig {
                source_rate: 10,
                source_burst: 5,
                ..LimitsConfig::default()
            },
            t0,
        );
        let passed = (0..20)
            .filter(|_| l.admit_request(ip(1), t0) == Admit::Pass)
            .count();
        assert_eq!(passed, 5, "the burst, at once");
        assert_eq!(
            l.admit_request(ip(2), t0),
            Admit::Pass,
            "others are not held up"
        );
        // 10 per second: one more every 100 ms.
        assert_eq!(l.admit_request(ip(1), t0 + 50 * MS), Admit::OverRate);
        assert_eq!(l.admit_request(ip(1), t0 + 160 * MS), Admit::Pass);
        assert_eq!(l.admit_request(ip(1), t0 + 170 * MS), Admit::OverRate);
        // A second later, the bucket is full again but no fuller.
        let later = t0 + 5_000 * MS;
        let passed = (0..20)
            .filter(|_| l.admit_request(ip(1), later) == Admit::Pass)
            .count();
        assert_eq!(passed, 5);
    }

    #[test]
    fn a_scanner_is_ignored_after_its_strikes_and_a_phone_that_logs_in_is_not() {
        let t0 = Instant::now();
        let mut l = Limits::new(
            LimitsConfig {
                scan_strikes: 3,
                scan_ban: Duration::from_secs(60),
                ..LimitsConfig::default()
            },
            t0,
        );
        // A phone: challenged twice, then right.
        l.strike(ip(7), t0);
        l.strike(ip(7), t0);
        l.authenticated(ip(7));
        assert_eq!(l.strike(ip(7), t0), None);
        assert_eq!(l.admit_request(ip(7), t0), Admit::Pass);
        // A scanner: three refusals and it is ignored, for the ban's length.
        assert_eq!(l.strike(ip(9), t0), None);
        assert_eq!(l.strike(ip(9), t0), None);
        assert_eq!(
            l.strike(ip(9), t0),
            Some(Ban {
                ip: ip(9),
                strikes: 3
            })
        );
        assert_eq!(l.admit_request(ip(9), t0 + MS), Admit::Banned);
        l.authenticated(ip(9));
        assert_eq!(
            l.admit_request(ip(9), t0 + MS),
            Admit::Banned,
            "still banned"
        );
        assert_eq!(l.banned(t0 + MS), 1);
        assert_eq!(
            l.admit_request(ip(9), t0 + Duration::from_secs(61)),
            Admit::Pass
        );
        assert_eq!(l.banned(t0 + Duration::from_secs(61)), 0);
    }

    fn calls(n: usize) -> Load {
        Load {
            calls: n,
            ..Load::default()
        }
    }

    #[test]
    fn a_switch_falling_behind_or_a_busy_cpu_refuses_new_calls_until_the_load_falls() {
        let t0 = Instant::now();
        let mut l = Limits::new(
            LimitsConfig {
                max_queue_delay: 100 * MS,
                max_cpu_percent: 85,
                ..LimitsConfig::default()
            },
            t0,
        );
        let load = |queued_ms: u32, cpu_percent| Load {
            calls: 50,
            queued: queued_ms * MS,
            cpu_percent,
        };
        assert!(l.admit_call(load(100, 85), t0).is_ok(), "at the limits");
        assert_eq!(l.admit_call(load(101, 0), t0), Err(Overload::QueueDelay));
        assert_eq!(l.admit_call(load(0, 86), t0), Err(Overload::Cpu));
        // Nothing is remembered: the next call under the limits is admitted.
        assert!(l.admit_call(load(3, 40), t0).is_ok());
        // Off (zero): no load refuses a call.
        let mut off = Limits::new(
            LimitsConfig {
                max_queue_delay: Duration::ZERO,
                ..LimitsConfig::default()
            },
            t0,
        );
        assert!(off.admit_call(load(10_000, 100), t0).is_ok());
    }

    #[test]
    fn calls_are_admitted_at_the_setup_rate_and_under_the_ceiling() {
        let t0 = Instant::now();
        let mut l = Limits::new(
            LimitsConfig {
                call_setups_per_sec: 4,
                max_calls: 10,
                ..LimitsConfig::default()
            },
            t0,
        );
        let admitted = (0..40)
            .filter(|_| l.admit_call(calls(0), t0).is_ok())
            .count();
        assert_eq!(admitted, 4, "a second's worth at once");
        assert_eq!(
            l.admit_call(calls(0), t0 + 100 * MS),
            Err(Overload::SetupRate)
        );
        assert!(l.admit_call(calls(0), t0 + 260 * MS).is_ok());
        assert_eq!(
            l.admit_call(calls(10), t0 + Duration::from_secs(5)),
            Err(Overload::MaxCalls)
        );
        assert!(l.admit_call(calls(9), t0 + Duration::from_secs(5)).is_ok());

        let mut open = Limits::new(LimitsConfig::default(), t0);
        assert!((0..10_000).all(|_| open.admit_call(calls(5_000), t0).is_ok()));
    }

    #[test]
    fn a_flood_from_many_addresses_stays_bounded_and_keeps_its_bans() {
        let t0 = Instant::now();
        let mut l = Limits::new(
            LimitsConfig {
                scan_strikes: 1,
                ..LimitsConfig::default()
            },
            t0,
        );
        l.strike(ip(1), t0);
        for i in 0..(MAX_SOURCES as u32 + 100) {
            let addr = IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            l.admit_request(addr, t0);
        }
        assert!(l.sources.len() <= MAX_SOURCES);
        assert_eq!(l.admit_request(ip(1), t0), Admit::Banned);
    }
}
