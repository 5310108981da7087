//! Digest answers to Switchboard's REGISTER challenges, for tests that register by hand
//! (realm `switchboard`, MD5, `qop=auth`, a fixed client nonce).

use md5::{Digest, Md5};

pub fn md5_hex(s: &str) -> String {
    hex::encode(Md5::digest(s.as_bytes()))
}

/// The nonce of a 401's challenge.
pub fn nonce(challenge: &str) -> &str {
    challenge
        .split("nonce=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("a nonce in the challenge")
}

/// The `Authorization` value answering `nonce` for a REGISTER to `uri`, at count `nc`.
pub fn register_answer(user: &str, password: &str, uri: &str, nonce: &str, nc: u32) -> String {
    let ha1 = md5_hex(&format!("{user}:switchboard:{password}"));
    let ha2 = md5_hex(&format!("REGISTER:{uri}"));
    let response = md5_hex(&format!("{ha1}:{nonce}:{nc:08x}:c0ffee:auth:{ha2}"));
    format!(
        "Digest username=\"{user}\", realm=\"switchboard\", nonce=\"{nonce}\", uri=\"{uri}\", \
         response=\"{response}\", algorithm=MD5, qop=auth, nc={nc:08x}, cnonce=\"c0ffee\""
    )
}
