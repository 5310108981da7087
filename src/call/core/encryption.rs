//! SRTP on each leg (SDES, RFC 4568), as the caller's and the callee's `media_encryption`
//! decide: the caller's offer is answered with a key of ours, the callee is offered keys
//! of its own, and the relay decrypts one leg and encrypts the other, so an SRTP phone can
//! talk to a plain trunk and recordings and supervisor taps hear plain audio. A key never
//! crosses from one leg to the other.

use super::*;
use crate::config::MediaEncryption;
use crate::media::sdp::LegCrypto;

/// The caller's leg: our answer's keys for its offer, or why the offer is refused (488).
pub(super) fn caller_crypto(
    policy: MediaEncryption,
    offer: &SdpInfo,
) -> Result<Option<LegCrypto>, String> {
    match policy {
        MediaEncryption::Refuse if offer.savp => {
            Err("the caller offers only SRTP, and media_encryption is refuse".into())
        }
        // Keys offered beside plain RTP are ignored: the answer has none.
        MediaEncryption::Refuse => Ok(None),
        MediaEncryption::Require if offer.crypto.is_empty() => {
            Err("the caller offers no SRTP key, and media_encryption is require".into())
        }
        MediaEncryption::Prefer | MediaEncryption::Require => Ok(LegCrypto::answer(offer)),
    }
}

/// The caller's policy: its user's, else its trunk's, else the default.
pub(super) fn caller_policy(cfg: &Config, rec: &CallRecord) -> MediaEncryption {
    if let Some(u) = rec.caller_user.as_deref().and_then(|u| cfg.user(u)) {
        return u.media_encryption;
    }
    rec.trunk
        .as_deref()
        .and_then(|name| cfg.trunks.iter().find(|t| t.name == name))
        .map(|t| t.media_encryption)
        .unwrap_or_default()
}

impl CallCore {
    /// The callee's policy: the agent's or extension's rung, else the trunk the call goes
    /// out through.
    fn callee_policy(&self, b: &Binding) -> MediaEncryption {
        let cfg = &self.config;
        let user = self.ringing_agent.as_deref().or(self.rec.target.as_deref());
        if let Some(u) = user.and_then(|u| cfg.user(u)) {
            return u.media_encryption;
        }
        cfg.trunks
            .iter()
            .find(|t| t.outbound == Some(b.target.addr))
            .map(|t| t.media_encryption)
            .unwrap_or_default()
    }

    /// The keys to offer the phone or trunk at `b` (fresh for each: a phone that did not
    /// answer never holds the key of the one that did). `prefer` offers them only over
    /// TLS, where they do not travel in clear text (RFC 4568 §8.3); `require` always,
    /// as RTP/SAVP.
    pub(super) fn crypto_for_callee(&self, b: &Binding) -> Option<LegCrypto> {
        match self.callee_policy(b) {
            MediaEncryption::Refuse => None,
            MediaEncryption::Prefer => {
                (b.target.transport == Transport::Tls).then(|| LegCrypto::offer(false))
            }
            MediaEncryption::Require => Some(LegCrypto::offer(true)),
        }
    }

    /// The callee's answer (`fork`'s) against the keys it was offered: its leg is
    /// encrypted if it chose one, plain if it chose none and its policy allows.
    pub(super) fn accept_b_crypto(
        &mut self,
        fork: Option<usize>,
        answer: &SdpInfo,
    ) -> Result<(), sdp::SdpError> {
        let offered = fork
            .and_then(|i| self.forks.get(i))
            .and_then(|f| f.crypto.clone());
        let crypto = offered.and_then(|mut c| c.accept_answer(answer).then_some(c));
        let required = fork
            .and_then(|i| self.forks.get(i))
            .is_some_and(|f| f.crypto.as_ref().is_some_and(|c| c.savp));
        if crypto.is_none() && (required || answer.savp) {
            return Err(sdp::SdpError::NotEncrypted);
        }
        self.b_sdp.crypto = crypto.clone();
        // An early answer and the final one name the same keys: the stream's state stays.
        if self.b_srtp_applied.as_ref() == Some(&crypto) {
            return Ok(());
        }
        let session = crypto.as_ref().and_then(LegCrypto::session);
        if let Some(c) = &crypto {
            info!(suite = ?c.suite(), "the callee's media is SRTP");
        }
        self.b_srtp_applied = Some(crypto);
        self.media(MediaCmd::CalleeSrtp(session.map(Box::new)));
        Ok(())
    }

    /// A later SDP from `side` (a re-INVITE or its answer) with a new key for its media.
    pub(super) fn note_rekey(&mut self, side: Side, info: &SdpInfo) {
        let crypto = match side {
            Side::A => self.a_sdp.crypto.as_mut(),
            Side::B => self.b_sdp.crypto.as_mut(),
        };
        let Some(key) = crypto.and_then(|c| c.rekeyed(info)) else {
            return;
        };
        info!(?side, "the leg re-keyed its SRTP");
        if self.media.bridged() {
            self.media(MediaCmd::Rekey {
                side,
                key: Box::new(key),
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(savp: bool, keyed: bool) -> SdpInfo {
        let body = format!(
            "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n\
             m=audio 6000 RTP/{}AVP 0\r\na=rtpmap:0 PCMU/8000\r\n{}",
            if savp { "S" } else { "" },
            if keyed {
                "a=crypto:7 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR\r\n"
            } else {
                ""
            }
        );
        sdp::parse(body.as_bytes()).unwrap().1
    }

    #[test]
    fn the_callers_policy_decides_what_its_offer_gets() {
        use MediaEncryption::*;
        // SRTP only: answered with our key unless refused.
        assert!(caller_crypto(Refuse, &offer(true, true)).is_err());
        for policy in [Prefer, Require] {
            let c = caller_crypto(policy, &offer(true, true)).unwrap().unwrap();
            assert!(c.savp);
            assert_eq!(c.ours[0].tag, 7);
        }
        // Best effort (keys beside plain RTP): plain when refused, else SRTP on RTP/AVP.
        assert!(caller_crypto(Refuse, &offer(false, true))
            .unwrap()
            .is_none());
        let c = caller_crypto(Prefer, &offer(false, true)).unwrap().unwrap();
        assert!(!c.savp);
        // Plain: fine unless encryption is required.
        assert!(caller_crypto(Prefer, &offer(false, false))
            .unwrap()
            .is_none());
        assert!(caller_crypto(Refuse, &offer(false, false))
            .unwrap()
            .is_none());
        let why = caller_crypto(Require, &offer(false, false)).unwrap_err();
        assert!(why.contains("require"), "{why}");
    }
}
