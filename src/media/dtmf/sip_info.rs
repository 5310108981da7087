//! Key presses carried in SIP INFO bodies.
//!
//! Two body formats exist in the wild, neither formally specified:
//!
//! * `application/dtmf-relay` (Cisco's, the common one):
//!   `Signal=5\r\nDuration=160\r\n`, the duration in milliseconds;
//! * `application/dtmf`: the key alone, `5`.
//!
//! Phones disagree on details, so parsing is lenient where it is harmless
//! (letter case, spaces, `\n` or `\r\n`, extra lines, keys as characters or
//! as RFC 4733 event codes such as `Signal=10` for `*`) and strict where it
//! matters: a body must name exactly one known key, or it is refused. The
//! SIP layer owns the request and its answer; this module only reads the
//! body, without allocating.

use std::time::Duration;

use super::{Digit, Key};

/// The duration reported for a press whose INFO does not say (or says
/// nonsense): a typical press, and the default of common senders.
pub const DEFAULT_DURATION: Duration = Duration::from_millis(100);

/// Longest `Duration=` believed; anything longer is taken as garbage.
const MAX_DURATION_MS: u64 = 60_000;

/// Why an INFO body gave no key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SipInfoError {
    /// Not a DTMF content type; the SIP layer should answer 415.
    #[error("content type is not application/dtmf-relay or application/dtmf")]
    UnsupportedContentType,
    /// The body is not text.
    #[error("INFO body is not UTF-8 text")]
    NotText,
    /// An `application/dtmf-relay` body without a `Signal=` line.
    #[error("dtmf-relay body has no Signal= line")]
    NoSignal,
    /// The key is not one of 0–9, *, #, A–D (or their event codes 0–15).
    #[error("INFO body names no DTMF key")]
    BadKey,
}

/// Reads the key press from a SIP INFO request's `Content-Type` and body.
pub fn parse_sip_info(content_type: &str, body: &[u8]) -> Result<Digit, SipInfoError> {
    // Parameters (`; charset=...`) do not change the format.
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    let relay = if media_type.eq_ignore_ascii_case("application/dtmf-relay") {
        true
    } else if media_type.eq_ignore_ascii_case("application/dtmf") {
        false
    } else {
        return Err(SipInfoError::UnsupportedContentType);
    };
    let text = std::str::from_utf8(body).map_err(|_| SipInfoError::NotText)?;
    if relay {
        parse_relay(text)
    } else {
        Ok(Digit {
            // A single character only: "12" here is more likely two keys
            // than event code 12.
            key: parse_key(text, false)?,
            duration: DEFAULT_DURATION,
        })
    }
}

fn parse_relay(text: &str) -> Result<Digit, SipInfoError> {
    let mut key = None;
    let mut duration = None;
    for line in text.lines() {
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        // The first of each wins: a second Signal line is not a second press.
        if name.eq_ignore_ascii_case("signal") && key.is_none() {
            key = Some(parse_key(value, true)?);
        } else if name.eq_ignore_ascii_case("duration") && duration.is_none() {
            duration = value
                .trim()
                .parse::<u64>()
                .ok()
                .filter(|ms| (1..=MAX_DURATION_MS).contains(ms))
                .map(Duration::from_millis);
        }
    }
    Ok(Digit {
        key: key.ok_or(SipInfoError::NoSignal)?,
        duration: duration.unwrap_or(DEFAULT_DURATION),
    })
}

/// A key written as its character or, if `codes`, as its RFC 4733 event
/// code.
fn parse_key(value: &str, codes: bool) -> Result<Key, SipInfoError> {
    let value = value.trim();
    let mut chars = value.chars();
    if let (Some(c), None) = (chars.next(), chars.next()) {
        return Key::from_char(c).ok_or(SipInfoError::BadKey);
    }
    if !codes {
        return Err(SipInfoError::BadKey);
    }
    value
        .parse::<u8>()
        .ok()
        .and_then(Key::from_event)
        .ok_or(SipInfoError::BadKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RELAY: &str = "application/dtmf-relay";

    fn relay(body: &str) -> Result<Digit, SipInfoError> {
        parse_sip_info(RELAY, body.as_bytes())
    }

    #[test]
    fn dtmf_relay_all_keys() {
        for key in Key::ALL {
            let body = format!("Signal={}\r\nDuration=160\r\n", key.as_char());
            assert_eq!(
                relay(&body),
                Ok(Digit {
                    key,
                    duration: Duration::from_millis(160)
                })
            );
            // As an event code, as some gateways send * and #.
            let body = format!("Signal={}\r\nDuration=250\r\n", key.event());
            assert_eq!(relay(&body).unwrap().key, key);
        }
    }

    #[test]
    fn dtmf_all_keys() {
        for key in Key::ALL {
            for body in [
                key.as_char().to_string(),
                format!(" {}\r\n", key.as_char().to_ascii_lowercase()),
            ] {
                assert_eq!(
                    parse_sip_info("application/dtmf", body.as_bytes()),
                    Ok(Digit {
                        key,
                        duration: DEFAULT_DURATION
                    })
                );
            }
        }
    }

    #[test]
    fn tolerates_harmless_variations() {
        let five = |ms| {
            Ok(Digit {
                key: Key::Num5,
                duration: Duration::from_millis(ms),
            })
        };
        assert_eq!(relay("Signal=5\nDuration=160"), five(160));
        assert_eq!(relay("signal = 5 \r\nDURATION= 200\r\n\r\n"), five(200));
        assert_eq!(relay("Duration=90\r\nSignal=5\r\n"), five(90));
        assert_eq!(relay("Signal=5\r\nDuration=160\r\nSignal=6\r\n"), five(160));
        assert_eq!(relay("Foo=bar\r\nnonsense\r\nSignal=5"), five(100));
        // A duration that is no duration falls back to the default.
        assert_eq!(relay("Signal=5\r\nDuration=-3"), five(100));
        assert_eq!(relay("Signal=5\r\nDuration=0"), five(100));
        assert_eq!(
            relay("Signal=5\r\nDuration=99999999999999999999"),
            five(100)
        );
        assert_eq!(
            parse_sip_info(
                "Application/DTMF-Relay; charset=utf-8",
                b"Signal=5\r\nDuration=160"
            ),
            five(160)
        );
    }

    #[test]
    fn refuses_junk() {
        assert_eq!(relay(""), Err(SipInfoError::NoSignal));
        assert_eq!(relay("Duration=160"), Err(SipInfoError::NoSignal));
        assert_eq!(relay("Signal=\r\n"), Err(SipInfoError::BadKey));
        assert_eq!(relay("Signal=E"), Err(SipInfoError::BadKey));
        assert_eq!(relay("Signal=16"), Err(SipInfoError::BadKey));
        assert_eq!(relay("Signal=55"), Err(SipInfoError::BadKey));
        assert_eq!(relay("Signal=5 6"), Err(SipInfoError::BadKey));
        assert_eq!(relay("Signal=☎"), Err(SipInfoError::BadKey));
        assert_eq!(
            parse_sip_info("application/dtmf", b""),
            Err(SipInfoError::BadKey)
        );
        assert_eq!(
            parse_sip_info("application/dtmf", b"12"),
            Err(SipInfoError::BadKey)
        );
        assert_eq!(
            parse_sip_info(RELAY, &[0xFF, 0xFE, b'5']),
            Err(SipInfoError::NotText)
        );
        assert_eq!(
            parse_sip_info("application/sdp", b"Signal=5"),
            Err(SipInfoError::UnsupportedContentType)
        );
        assert_eq!(
            parse_sip_info("", b"5"),
            Err(SipInfoError::UnsupportedContentType)
        );
        // Arbitrary bytes never panic.
        let mut seed = 7u32;
        for len in 0..200 {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    seed = seed.wrapping_mul(1_103_515_245).wrapping_add(12345);
                    b"Signal=Duration\r\n0123456789#*ABCDxyz \xC3\xA9\xFF"
                        [(seed >> 16) as usize % 33]
                })
                .collect();
            let _ = parse_sip_info(RELAY, &body);
            let _ = parse_sip_info("application/dtmf", &body);
        }
    }
}
