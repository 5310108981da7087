//! Counts of the SIP responses we send, by status code, and of digest authentication's
//! refusals, for `/metrics`. Lock-free: the switch counts as it goes, a scrape reads
//! whenever it likes.

use std::sync::atomic::{AtomicU64, Ordering};

/// Status codes 100–699.
const CODES: usize = 600;

#[derive(Debug)]
pub struct SipStats {
    sent: Vec<AtomicU64>,
    pub auth: AuthCounts,
    pub limits: LimitCounts,
}

/// What the abuse and overload limits turned away, since the server started
/// (`banned_now` is a gauge).
#[derive(Debug, Default)]
pub struct LimitCounts {
    /// Requests dropped unread: over their address's rate.
    pub dropped_rate: AtomicU64,
    /// Requests dropped unread: from an address ignored as a scanner.
    pub dropped_banned: AtomicU64,
    /// Addresses banned as scanners.
    pub bans: AtomicU64,
    /// New calls refused with 503: over the call-setup rate.
    pub overload_setup_rate: AtomicU64,
    /// New calls refused with 503: at the most calls in progress.
    pub overload_max_calls: AtomicU64,
    /// New calls refused with 503: the INVITE waited too long for the switch.
    pub overload_queue_delay: AtomicU64,
    /// New calls refused with 503: the CPU was above `limits.max_cpu_percent`.
    pub overload_cpu: AtomicU64,
    pub banned_now: AtomicU64,
    /// The server's CPU over the last second, percent of all cores (a gauge).
    pub cpu_percent: AtomicU64,
}

/// What digest authentication refused, since the server started (`locked_now` is a gauge).
#[derive(Debug, Default)]
pub struct AuthCounts {
    /// Wrong user, password or realm, or a forged nonce.
    pub failures: AtomicU64,
    /// Right answers replayed (a nonce count used before, another request's URI).
    pub replays: AtomicU64,
    /// Lock-outs started (a user at an address, an address, or a user).
    pub lockouts: AtomicU64,
    /// Requests refused unchecked because their user or address was locked out.
    pub refused_locked: AtomicU64,
    /// Keys locked out now.
    pub locked_now: AtomicU64,
}

/// Adds one to a counter here.
pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

impl Default for SipStats {
    fn default() -> Self {
        SipStats {
            sent: (0..CODES).map(|_| AtomicU64::new(0)).collect(),
            auth: AuthCounts::default(),
            limits: LimitCounts::default(),
        }
    }
}

impl SipStats {
    /// Counts `bytes` if it is a response (its status line starts `SIP/2.0 NNN`), and
    /// says its code.
    pub fn transmitted(&self, bytes: &[u8]) -> Option<u16> {
        let code = status_code(bytes)?;
        if let Some(c) = self.sent.get(usize::from(code) - 100) {
            c.fetch_add(1, Ordering::Relaxed);
        }
        Some(code)
    }

    /// Every code sent at least once, with its count, in code order.
    pub fn responses_sent(&self) -> Vec<(u16, u64)> {
        self.sent
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let n = c.load(Ordering::Relaxed);
                (n > 0).then_some((i as u16 + 100, n))
            })
            .collect()
    }
}

fn status_code(bytes: &[u8]) -> Option<u16> {
    let rest = bytes.strip_prefix(b"SIP/2.0 ")?;
    let digits = rest.get(..3)?;
    if !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let code = digits
        .iter()
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    (100..700).contains(&code).then_some(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_counted_by_code_and_requests_not_at_all() {
        let s = SipStats::default();
        s.transmitted(b"SIP/2.0 200 OK\r\n\r\n");
        s.transmitted(b"SIP/2.0 200 OK\r\n\r\n");
        s.transmitted(b"SIP/2.0 486 Busy Here\r\n\r\n");
        s.transmitted(b"INVITE sip:100@x SIP/2.0\r\n\r\n");
        s.transmitted(b"SIP/2.0 999 Nonsense\r\n");
        s.transmitted(b"SIP/2.0 4");
        assert_eq!(s.responses_sent(), vec![(200, 2), (486, 1)]);
    }
}
