//! SRTP and SRTCP (RFC 3711, with AES-256 from RFC 6188 and AES-GCM from RFC 7714),
//! transformed in place in the media path's own buffers, keyed by SDES (RFC 4568) `a=crypto`
//! lines.
//!
//! Why our own transform over RustCrypto's primitives (`aes`, `ctr`, `hmac`/`sha1`,
//! `aes-gcm`) rather than `rtc-srtp`: that crate returns a fresh buffer for every packet,
//! parses headers into vectors and looks streams up in a map, and the media path must
//! allocate nothing per packet. What is done here is the packet layout, the key derivation
//! and the rollover/replay bookkeeping; the unit tests check every suite byte for byte
//! against `rtc-srtp` and the RFC 3711 test vectors.

use std::fmt;

use aes::cipher::{BlockEncrypt, InnerIvInit, KeyInit, StreamCipher};
use aes::{Aes128, Aes256};
use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, Aes256Gcm};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha1::Sha1;

/// A crypto suite of RFC 4568 (and RFC 6188, RFC 7714), by its SDP name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    AesCm128Sha1_80,
    AesCm128Sha1_32,
    Aes256CmSha1_80,
    Aes256CmSha1_32,
    AeadAes128Gcm,
    AeadAes256Gcm,
}

impl Suite {
    /// What Switchboard offers, strongest first (one `a=crypto` line each).
    pub const OFFERED: [Suite; 4] = [
        Suite::AeadAes256Gcm,
        Suite::AeadAes128Gcm,
        Suite::Aes256CmSha1_80,
        Suite::AesCm128Sha1_80,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Suite::AesCm128Sha1_80 => "AES_CM_128_HMAC_SHA1_80",
            Suite::AesCm128Sha1_32 => "AES_CM_128_HMAC_SHA1_32",
            Suite::Aes256CmSha1_80 => "AES_256_CM_HMAC_SHA1_80",
            Suite::Aes256CmSha1_32 => "AES_256_CM_HMAC_SHA1_32",
            Suite::AeadAes128Gcm => "AEAD_AES_128_GCM",
            Suite::AeadAes256Gcm => "AEAD_AES_256_GCM",
        }
    }

    pub fn from_name(name: &str) -> Option<Suite> {
        [
            Suite::AesCm128Sha1_80,
            Suite::AesCm128Sha1_32,
            Suite::Aes256CmSha1_80,
            Suite::Aes256CmSha1_32,
            Suite::AeadAes128Gcm,
            Suite::AeadAes256Gcm,
        ]
        .into_iter()
        .find(|s| s.name() == name)
    }

    fn key_len(self) -> usize {
        match self {
            Suite::AesCm128Sha1_80 | Suite::AesCm128Sha1_32 | Suite::AeadAes128Gcm => 16,
            _ => 32,
        }
    }

    fn salt_len(self) -> usize {
        if self.is_gcm() {
            12
        } else {
            14
        }
    }

    fn is_gcm(self) -> bool {
        matches!(self, Suite::AeadAes128Gcm | Suite::AeadAes256Gcm)
    }

    /// The authentication tag after an SRTP packet (the GCM tag is part of the ciphertext).
    fn rtp_tag_len(self) -> usize {
        match self {
            Suite::AesCm128Sha1_32 | Suite::Aes256CmSha1_32 => 4,
            Suite::AesCm128Sha1_80 | Suite::Aes256CmSha1_80 => 10,
            Suite::AeadAes128Gcm | Suite::AeadAes256Gcm => 16,
        }
    }

    /// SRTCP keeps the 80-bit tag even in the `_32` suites (RFC 4568 §6.2).
    fn rtcp_tag_len(self) -> usize {
        if self.is_gcm() {
            16
        } else {
            10
        }
    }

    /// The most an SRTP or SRTCP packet grows by when protected (tag and SRTCP index).
    pub const MAX_OVERHEAD: usize = 16 + 4;
}

impl fmt::Display for Suite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A master key and salt for one direction of one leg, with the suite they are for.
#[derive(Clone, PartialEq, Eq)]
pub struct MasterKey {
    pub suite: Suite,
    key: [u8; 32],
    salt: [u8; 14],
    /// The MKI the sender puts in each packet, if its key has one (length in octets).
    mki: Option<(u64, usize)>,
}

impl fmt::Debug for MasterKey {
    // Keys never reach a log.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MasterKey({})", self.suite)
    }
}

/// One SDES `a=crypto` attribute (RFC 4568 §9.1): tag, suite and the sender's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptoAttr {
    pub tag: u32,
    pub key: MasterKey,
}

/// Why an `a=crypto` line is unusable; such a line is skipped, as RFC 4568 §7.1 asks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoAttrError {
    #[error("malformed a=crypto: {0}")]
    Malformed(&'static str),
    #[error("crypto suite {0} is not supported")]
    UnknownSuite(String),
    #[error("session parameter {0} is not supported")]
    SessionParam(String),
}

impl MasterKey {
    /// A fresh random key for `suite`.
    pub fn random(suite: Suite) -> MasterKey {
        let mut key = [0u8; 32];
        let mut salt = [0u8; 14];
        let mut rng = rand::rngs::OsRng;
        rng.fill_bytes(&mut key[..suite.key_len()]);
        rng.fill_bytes(&mut salt[..suite.salt_len()]);
        MasterKey {
            suite,
            key,
            salt,
            mki: None,
        }
    }

    /// From raw key and salt octets (tests and vectors).
    pub fn from_parts(suite: Suite, key: &[u8], salt: &[u8]) -> Option<MasterKey> {
        if key.len() != suite.key_len() || salt.len() != suite.salt_len() {
            return None;
        }
        let mut k = [0u8; 32];
        let mut s = [0u8; 14];
        k[..key.len()].copy_from_slice(key);
        s[..salt.len()].copy_from_slice(salt);
        Some(MasterKey {
            suite,
            key: k,
            salt: s,
            mki: None,
        })
    }

    fn key(&self) -> &[u8] {
        &self.key[..self.suite.key_len()]
    }

    fn salt(&self) -> &[u8] {
        &self.salt[..self.suite.salt_len()]
    }

    /// `inline:` key parameter: base64 of key and salt (no lifetime, no MKI).
    pub fn inline(&self) -> String {
        let mut raw = Vec::with_capacity(46);
        raw.extend_from_slice(self.key());
        raw.extend_from_slice(self.salt());
        format!(
            "inline:{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl CryptoAttr {
    /// The attribute's value, `<tag> <suite> inline:<key>`.
    pub fn value(&self) -> String {
        format!("{} {} {}", self.tag, self.key.suite, self.key.inline())
    }

    /// Parses the value of an `a=crypto` attribute,
    /// `<tag> <suite> inline:<key||salt>[|<lifetime>][|<MKI>:<length>][;...] [params]`.
    /// Only the first key of a list is used; session parameters are refused (a key
    /// derivation rate, unencrypted or unauthenticated SRTP are not what a caller
    /// asking for encryption should silently get).
    pub fn parse(value: &str) -> Result<CryptoAttr, CryptoAttrError> {
        use CryptoAttrError::*;
        let mut parts = value.split_ascii_whitespace();
        let tag = parts
            .next()
            .and_then(|t| t.parse::<u32>().ok())
            .filter(|t| (1..=999_999_999).contains(t))
            .ok_or(Malformed("the tag is not a number from 1 to 999999999"))?;
        let suite_name = parts.next().ok_or(Malformed("no crypto suite"))?;
        let suite =
            Suite::from_name(suite_name).ok_or_else(|| UnknownSuite(suite_name.to_string()))?;
        let key_params = parts.next().ok_or(Malformed("no key parameters"))?;
        if let Some(param) = parts.next() {
            return Err(SessionParam(param.to_string()));
        }
        let first = key_params.split(';').next().unwrap_or_default();
        let inline = first
            .strip_prefix("inline:")
            .ok_or(Malformed("the key method is not inline"))?;
        let mut fields = inline.split('|');
        let b64 = fields.next().unwrap_or_default();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(b64))
            .map_err(|_| Malformed("the key is not base64"))?;
        let (kl, sl) = (suite.key_len(), suite.salt_len());
        if raw.len() != kl + sl {
            return Err(Malformed(
                "the key and salt have the wrong length for the suite",
            ));
        }
        let mut key = MasterKey::from_parts(suite, &raw[..kl], &raw[kl..]).ok_or(Malformed(
            "the key and salt have the wrong length for the suite",
        ))?;
        for field in fields {
            if let Some((mki, len)) = field.split_once(':') {
                let mki: u64 = mki
                    .parse()
                    .map_err(|_| Malformed("the MKI is not a number"))?;
                let len: usize = len
                    .parse()
                    .ok()
                    .filter(|l| (1..=8).contains(l))
                    .ok_or(Malformed("the MKI length is not 1 to 8"))?;
                key.mki = Some((mki, len));
            }
            // Otherwise a lifetime (2^31 or a number): a call never comes near it.
        }
        Ok(CryptoAttr { tag, key })
    }
}

const LABEL_RTP_ENCRYPTION: u8 = 0;
const LABEL_RTP_AUTH: u8 = 1;
const LABEL_RTP_SALT: u8 = 2;
const LABEL_RTCP_ENCRYPTION: u8 = 3;

/// A keyed AES for counter mode.
// The session lives boxed on the leg's ports; its keys stay inline so a packet follows
// no further pointer.
#[allow(clippy::large_enum_variant)]
#[derive(Clone)]
enum Aes {
    A128(Aes128),
    A256(Aes256),
}

impl Aes {
    fn new(key: &[u8]) -> Aes {
        match key.len() {
            16 => Aes::A128(Aes128::new(key.into())),
            _ => Aes::A256(Aes256::new(key.into())),
        }
    }

    /// XORs `data` with the AES-CM keystream starting at `iv` (RFC 3711 §4.1.1).
    fn apply_ctr(&self, iv: &[u8; 16], data: &mut [u8]) {
        match self {
            Aes::A128(c) => ctr::Ctr128BE::<Aes128>::from_core(ctr::CtrCore::inner_iv_init(
                c.clone(),
                iv.into(),
            ))
            .apply_keystream(data),
            Aes::A256(c) => ctr::Ctr128BE::<Aes256>::from_core(ctr::CtrCore::inner_iv_init(
                c.clone(),
                iv.into(),
            ))
            .apply_keystream(data),
        }
    }

    fn encrypt_block(&self, block: &mut [u8; 16]) {
        match self {
            Aes::A128(c) => c.encrypt_block(block.into()),
            Aes::A256(c) => c.encrypt_block(block.into()),
        }
    }
}

/// The AES-CM PRF of RFC 3711 §4.3.3 with a key derivation rate of 0.
fn derive(master: &MasterKey, label: u8, out: &mut [u8]) {
    let prf = Aes::new(master.key());
    let mut x = [0u8; 16];
    x[..master.salt().len()].copy_from_slice(master.salt());
    x[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut block = x;
        block[14..].copy_from_slice(&(i as u16).to_be_bytes());
        prf.encrypt_block(&mut block);
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
}

enum Gcm {
    G128(Box<Aes128Gcm>),
    G256(Box<Aes256Gcm>),
}

impl Gcm {
    fn new(key: &[u8]) -> Gcm {
        match key.len() {
            16 => Gcm::G128(Box::new(Aes128Gcm::new(key.into()))),
            _ => Gcm::G256(Box::new(Aes256Gcm::new(key.into()))),
        }
    }

    fn seal(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8]) -> Option<[u8; 16]> {
        let tag = match self {
            Gcm::G128(c) => c.encrypt_in_place_detached(iv.into(), aad, data),
            Gcm::G256(c) => c.encrypt_in_place_detached(iv.into(), aad, data),
        };
        tag.ok().map(Into::into)
    }

    fn open(&self, iv: &[u8; 12], aad: &[u8], data: &mut [u8], tag: &[u8]) -> bool {
        let tag = aes_gcm::Tag::from_slice(tag);
        match self {
            Gcm::G128(c) => c.decrypt_in_place_detached(iv.into(), aad, data, tag),
            Gcm::G256(c) => c.decrypt_in_place_detached(iv.into(), aad, data, tag),
        }
        .is_ok()
    }
}

/// Session keys of one packet kind (RTP or RTCP) in one direction.
#[allow(clippy::large_enum_variant)] // as `Aes`
enum Keys {
    Cm {
        aes: Aes,
        mac: Hmac<Sha1>,
        salt: [u8; 14],
    },
    Gcm {
        aead: Gcm,
        salt: [u8; 12],
    },
}

impl Keys {
    fn derive(master: &MasterKey, rtcp: bool) -> Keys {
        // The RTCP labels (3, 4, 5) follow the RTP ones (0, 1, 2) in the same order.
        let base = if rtcp {
            LABEL_RTCP_ENCRYPTION
        } else {
            LABEL_RTP_ENCRYPTION
        };
        let suite = master.suite;
        let mut key = [0u8; 32];
        let key = &mut key[..suite.key_len()];
        derive(master, base, key);
        if suite.is_gcm() {
            let mut salt = [0u8; 12];
            derive(
                master,
                base + (LABEL_RTP_SALT - LABEL_RTP_ENCRYPTION),
                &mut salt,
            );
            Keys::Gcm {
                aead: Gcm::new(key),
                salt,
            }
        } else {
            let mut auth = [0u8; 20];
            derive(
                master,
                base + (LABEL_RTP_AUTH - LABEL_RTP_ENCRYPTION),
                &mut auth,
            );
            let mut salt = [0u8; 14];
            derive(
                master,
                base + (LABEL_RTP_SALT - LABEL_RTP_ENCRYPTION),
                &mut salt,
            );
            Keys::Cm {
                aes: Aes::new(key),
                mac: <Hmac<Sha1> as Mac>::new_from_slice(&auth).expect("HMAC takes any key"),
                salt,
            }
        }
    }

    /// AES-CM IV: salt·2^16 ⊕ SSRC·2^64 ⊕ index·2^16 (RFC 3711 §4.1.1).
    fn cm_iv(salt: &[u8; 14], ssrc: u32, index: u64) -> [u8; 16] {
        let mut iv = [0u8; 16];
        iv[..14].copy_from_slice(salt);
        for (b, s) in iv[4..8].iter_mut().zip(ssrc.to_be_bytes()) {
            *b ^= s;
        }
        for (b, s) in iv[8..14].iter_mut().zip(&index.to_be_bytes()[2..]) {
            *b ^= s;
        }
        iv
    }

    /// HMAC-SHA1 over the authenticated portion and, for RTP, the ROC (RFC 3711 §4.2).
    fn tag(mac: &Hmac<Sha1>, portion: &[u8], roc: Option<u32>) -> [u8; 20] {
        let mut m = mac.clone();
        m.update(portion);
        if let Some(roc) = roc {
            m.update(&roc.to_be_bytes());
        }
        m.finalize().into_bytes().into()
    }
}

/// Constant-time comparison of authentication tags.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The RTP header's length (CSRCs and extension included), if the packet holds one.
fn rtp_header_len(pkt: &[u8]) -> Option<usize> {
    if pkt.len() < 12 || pkt[0] >> 6 != 2 {
        return None;
    }
    let mut len = 12 + 4 * usize::from(pkt[0] & 0x0f);
    if pkt[0] & 0x10 != 0 {
        let words = pkt.get(len + 2..len + 4)?;
        len += 4 + 4 * usize::from(u16::from_be_bytes([words[0], words[1]]));
    }
    (len <= pkt.len()).then_some(len)
}

fn ssrc_at(pkt: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([pkt[at], pkt[at + 1], pkt[at + 2], pkt[at + 3]])
}

/// How many SSRCs a direction remembers (a re-INVITE or a new source changes it; a few
/// cover going back and forth without a map).
const STREAMS: usize = 4;

/// Rollover counter of a stream we send.
#[derive(Clone, Copy, Default)]
struct Sent {
    ssrc: u32,
    roc: u32,
    last_seq: u16,
    used: u64,
}

/// Rollover counter and replay window of a stream we receive (RFC 3711 §3.3.1, App. A).
#[derive(Clone, Copy, Default)]
struct Received {
    ssrc: u32,
    roc: u32,
    s_l: u16,
    /// Bit n: index (highest − n) was received.
    window: u64,
    used: u64,
}

const REPLAY_WINDOW: u64 = 64;

/// Why a packet was dropped on its way in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Too short, not RTP/RTCP.
    Malformed,
    /// The authentication tag does not match: another key, or tampering.
    Auth,
    /// Already received (or older than the replay window).
    Replay,
}

/// Protection for packets we send on one leg.
pub struct Outbound {
    suite: Suite,
    rtp: Keys,
    rtcp: Keys,
    streams: [Sent; STREAMS],
    clock: u64,
    rtcp_index: u32,
}

/// Verification and decryption of packets a leg sends us.
pub struct Inbound {
    suite: Suite,
    rtp: Keys,
    rtcp: Keys,
    mki_len: usize,
    mki: [u8; 8],
    streams: [Received; STREAMS],
    clock: u64,
    /// The highest SRTCP index seen and the window below it.
    rtcp_top: u32,
    rtcp_window: u64,
}

/// The SRTP of one leg: our key for what we send, the peer's for what it sends.
pub struct SrtpSession {
    pub outbound: Outbound,
    pub inbound: Inbound,
}

impl fmt::Debug for SrtpSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SrtpSession({})", self.outbound.suite)
    }
}

impl SrtpSession {
    pub fn new(ours: &MasterKey, theirs: &MasterKey) -> SrtpSession {
        SrtpSession {
            outbound: Outbound::new(ours),
            inbound: Inbound::new(theirs),
        }
    }

    pub fn suite(&self) -> Suite {
        self.outbound.suite
    }
}

impl Outbound {
    pub fn new(key: &MasterKey) -> Outbound {
        Outbound {
            suite: key.suite,
            rtp: Keys::derive(key, false),
            rtcp: Keys::derive(key, true),
            streams: [Sent::default(); STREAMS],
            clock: 0,
            rtcp_index: 0,
        }
    }

    /// The rollover counter for `seq` of `ssrc`, advanced when the sequence wraps.
    fn roc(&mut self, ssrc: u32, seq: u16) -> u32 {
        self.clock += 1;
        let clock = self.clock;
        let slot = match self
            .streams
            .iter()
            .position(|s| s.used != 0 && s.ssrc == ssrc)
        {
            Some(i) => i,
            None => {
                let i = lru(self.streams.iter().map(|s| s.used));
                self.streams[i] = Sent {
                    ssrc,
                    roc: 0,
                    last_seq: seq,
                    used: clock,
                };
                i
            }
        };
        let s = &mut self.streams[slot];
        s.used = clock;
        if seq < s.last_seq && s.last_seq - seq > 0x8000 {
            s.roc = s.roc.wrapping_add(1);
            s.last_seq = seq;
        } else if seq > s.last_seq && seq - s.last_seq < 0x8000 {
            s.last_seq = seq;
        } else if seq > s.last_seq {
            if s.roc == 0 {
                // Far ahead with nothing before it: a jump, not a late packet.
                s.last_seq = seq;
            } else {
                // A late packet from before the last wrap.
                return s.roc - 1;
            }
        }
        s.roc
    }

    /// Protects the RTP packet in `buf[..len]`, in place; returns the new length. `buf`
    /// needs [`Suite::MAX_OVERHEAD`] octets of room past `len`.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        let suite = self.suite;
        let header = rtp_header_len(&buf[..len])?;
        let out = len + suite.rtp_tag_len();
        if buf.len() < out {
            return None;
        }
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = ssrc_at(buf, 8);
        let roc = self.roc(ssrc, seq);
        let index = (u64::from(roc) << 16) | u64::from(seq);
        match &self.rtp {
            Keys::Cm { aes, mac, salt } => {
                aes.apply_ctr(&Keys::cm_iv(salt, ssrc, index), &mut buf[header..len]);
                let tag = Keys::tag(mac, &buf[..len], Some(roc));
                buf[len..out].copy_from_slice(&tag[..suite.rtp_tag_len()]);
            }
            Keys::Gcm { aead, salt } => {
                let iv = gcm_rtp_iv(salt, ssrc, roc, seq);
                let (aad, data) = buf[..len].split_at_mut(header);
                let tag = aead.seal(&iv, aad, data)?;
                buf[len..out].copy_from_slice(&tag);
            }
        }
        Some(out)
    }

    /// Protects the RTCP compound packet in `buf[..len]` as SRTCP, in place.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Option<usize> {
        let suite = self.suite;
        if len < 8 || buf[0] >> 6 != 2 {
            return None;
        }
        let out = len + 4 + suite.rtcp_tag_len();
        if buf.len() < out {
            return None;
        }
        self.rtcp_index = (self.rtcp_index + 1) & 0x7fff_ffff;
        let index = self.rtcp_index;
        let ssrc = ssrc_at(buf, 4);
        let e_index = (index | 0x8000_0000).to_be_bytes();
        match &self.rtcp {
            Keys::Cm { aes, mac, salt } => {
                aes.apply_ctr(&Keys::cm_iv(salt, ssrc, u64::from(index)), &mut buf[8..len]);
                buf[len..len + 4].copy_from_slice(&e_index);
                let tag = Keys::tag(mac, &buf[..len + 4], None);
                buf[len + 4..out].copy_from_slice(&tag[..10]);
            }
            Keys::Gcm { aead, salt } => {
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_index);
                let tag = aead.seal(&iv, &aad, &mut buf[8..len])?;
                buf[len..len + 16].copy_from_slice(&tag);
                buf[len + 16..out].copy_from_slice(&e_index);
            }
        }
        Some(out)
    }
}

/// The least recently used slot (an unused one first).
fn lru(used: impl Iterator<Item = u64>) -> usize {
    used.enumerate()
        .min_by_key(|&(_, u)| u)
        .map_or(0, |(i, _)| i)
}

/// GCM IV for SRTP: (00 00 ‖ SSRC ‖ ROC ‖ SEQ) ⊕ salt (RFC 7714 §8.1).
fn gcm_rtp_iv(salt: &[u8; 12], ssrc: u32, roc: u32, seq: u16) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[6..10].copy_from_slice(&roc.to_be_bytes());
    iv[10..].copy_from_slice(&seq.to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

/// GCM IV for SRTCP: (00 00 ‖ SSRC ‖ 00 00 ‖ 0 ‖ index) ⊕ salt (RFC 7714 §9.1).
fn gcm_rtcp_iv(salt: &[u8; 12], ssrc: u32, index: u32) -> [u8; 12] {
    let mut iv = [0u8; 12];
    iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
    iv[8..].copy_from_slice(&(index & 0x7fff_ffff).to_be_bytes());
    for (b, s) in iv.iter_mut().zip(salt) {
        *b ^= s;
    }
    iv
}

impl Inbound {
    pub fn new(key: &MasterKey) -> Inbound {
        let (mki_len, mki) = match key.mki {
            Some((value, len)) => {
                let mut b = [0u8; 8];
                b[..len].copy_from_slice(&value.to_be_bytes()[8 - len..]);
                (len, b)
            }
            None => (0, [0u8; 8]),
        };
        Inbound {
            suite: key.suite,
            rtp: Keys::derive(key, false),
            rtcp: Keys::derive(key, true),
            mki_len,
            mki,
            streams: [Received::default(); STREAMS],
            clock: 0,
            rtcp_top: 0,
            rtcp_window: 0,
        }
    }

    /// Verifies and decrypts the SRTP packet in `buf`, in place; returns the RTP
    /// packet's length.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, Refused> {
        let suite = self.suite;
        let tag_len = suite.rtp_tag_len();
        let trailer = tag_len + self.mki_len;
        if buf.len() < 12 + trailer {
            return Err(Refused::Malformed);
        }
        let len = buf.len() - trailer;
        let header = rtp_header_len(&buf[..len]).ok_or(Refused::Malformed)?;
        let seq = u16::from_be_bytes([buf[2], buf[3]]);
        let ssrc = ssrc_at(buf, 8);
        let (slot, roc, index) = self.estimate(ssrc, seq)?;
        match &self.rtp {
            Keys::Cm { aes, mac, salt } => {
                if buf[len..len + self.mki_len] != self.mki[..self.mki_len] {
                    return Err(Refused::Auth);
                }
                let tag = Keys::tag(mac, &buf[..len], Some(roc));
                if !tags_equal(&tag[..tag_len], &buf[len + self.mki_len..]) {
                    return Err(Refused::Auth);
                }
                aes.apply_ctr(&Keys::cm_iv(salt, ssrc, index), &mut buf[header..len]);
            }
            Keys::Gcm { aead, salt } => {
                // The GCM tag ends the ciphertext; an MKI follows it.
                let end = buf.len() - self.mki_len;
                if buf[end..] != self.mki[..self.mki_len] {
                    return Err(Refused::Auth);
                }
                let iv = gcm_rtp_iv(salt, ssrc, roc, seq);
                let (aad, rest) = buf[..end].split_at_mut(header);
                let (data, tag) = rest.split_at_mut(rest.len() - 16);
                if !aead.open(&iv, aad, data, tag) {
                    return Err(Refused::Auth);
                }
            }
        }
        self.accept(slot, ssrc, roc, seq, index);
        Ok(len)
    }

    /// The packet index of `seq` (RFC 3711 Appendix A) and the replay check; the stream's
    /// state only moves once the packet is authenticated ([`Inbound::accept`]).
    fn estimate(&mut self, ssrc: u32, seq: u16) -> Result<(usize, u32, u64), Refused> {
        self.clock += 1;
        let slot = match self
            .streams
            .iter()
            .position(|s| s.used != 0 && s.ssrc == ssrc)
        {
            Some(i) => i,
            None => {
                // A new stream starts at its first packet (ROC 0); it is only kept once
                // that packet authenticates.
                let i = lru(self.streams.iter().map(|s| s.used));
                return Ok((i | NEW_STREAM, 0, u64::from(seq)));
            }
        };
        let s = self.streams[slot];
        let v = if s.s_l < 0x8000 {
            if seq > s.s_l && seq - s.s_l > 0x8000 && s.roc > 0 {
                s.roc - 1
            } else {
                s.roc
            }
        } else if s.s_l - 0x8000 > seq {
            s.roc.wrapping_add(1)
        } else {
            s.roc
        };
        let index = (u64::from(v) << 16) | u64::from(seq);
        let top = (u64::from(s.roc) << 16) | u64::from(s.s_l);
        if index <= top {
            let behind = top - index;
            if behind >= REPLAY_WINDOW || s.window & (1 << behind) != 0 {
                return Err(Refused::Replay);
            }
        }
        Ok((slot, v, index))
    }

    fn accept(&mut self, slot: usize, ssrc: u32, roc: u32, seq: u16, index: u64) {
        let clock = self.clock;
        let s = &mut self.streams[slot & !NEW_STREAM];
        if slot & NEW_STREAM != 0 {
            *s = Received {
                ssrc,
                roc,
                s_l: seq,
                window: 1,
                used: clock,
            };
            return;
        }
        s.used = clock;
        let top = (u64::from(s.roc) << 16) | u64::from(s.s_l);
        if index > top {
            let ahead = index - top;
            s.window = if ahead >= REPLAY_WINDOW {
                0
            } else {
                s.window << ahead
            };
            s.window |= 1;
            s.roc = roc;
            s.s_l = seq;
        } else {
            s.window |= 1 << (top - index);
        }
    }

    /// Verifies and decrypts the SRTCP packet in `buf`, in place; returns the RTCP
    /// compound packet's length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, Refused> {
        let suite = self.suite;
        let tag_len = suite.rtcp_tag_len();
        let min = 8 + 4 + tag_len + self.mki_len;
        if buf.len() < min || buf[0] >> 6 != 2 {
            return Err(Refused::Malformed);
        }
        let ssrc = ssrc_at(buf, 4);
        let (len, index) = match &self.rtcp {
            Keys::Cm { aes, mac, salt } => {
                let auth_end = buf.len() - tag_len - self.mki_len;
                if buf[auth_end..auth_end + self.mki_len] != self.mki[..self.mki_len] {
                    return Err(Refused::Auth);
                }
                let tag = Keys::tag(mac, &buf[..auth_end], None);
                if !tags_equal(&tag[..tag_len], &buf[auth_end + self.mki_len..]) {
                    return Err(Refused::Auth);
                }
                let e_index = ssrc_at(buf, auth_end - 4);
                let (index, encrypted) = (e_index & 0x7fff_ffff, e_index >> 31 == 1);
                let len = auth_end - 4;
                if encrypted {
                    aes.apply_ctr(&Keys::cm_iv(salt, ssrc, u64::from(index)), &mut buf[8..len]);
                }
                (len, index)
            }
            Keys::Gcm { aead, salt } => {
                let end = buf.len() - self.mki_len;
                if buf[end..] != self.mki[..self.mki_len] {
                    return Err(Refused::Auth);
                }
                let e_index = ssrc_at(buf, end - 4);
                let (index, encrypted) = (e_index & 0x7fff_ffff, e_index >> 31 == 1);
                if !encrypted {
                    // RFC 7714 §9.2 allows unencrypted SRTCP; nobody sends it to us.
                    return Err(Refused::Malformed);
                }
                let iv = gcm_rtcp_iv(salt, ssrc, index);
                let mut aad = [0u8; 12];
                aad[..8].copy_from_slice(&buf[..8]);
                aad[8..].copy_from_slice(&e_index.to_be_bytes());
                let body_end = end - 4;
                let (data, tag) = buf[8..body_end].split_at_mut(body_end - 8 - 16);
                if !aead.open(&iv, &aad, data, tag) {
                    return Err(Refused::Auth);
                }
                (body_end - 16, index)
            }
        };
        // Replay check after authentication: the index cannot be trusted before.
        if index <= self.rtcp_top && self.rtcp_top != 0 {
            let behind = u64::from(self.rtcp_top - index);
            if behind >= REPLAY_WINDOW || self.rtcp_window & (1 << behind) != 0 {
                return Err(Refused::Replay);
            }
            self.rtcp_window |= 1 << behind;
        } else {
            let ahead = u64::from(index - self.rtcp_top);
            self.rtcp_window = if ahead >= REPLAY_WINDOW {
                0
            } else {
                self.rtcp_window << ahead
            } | 1;
            self.rtcp_top = index;
        }
        Ok(len)
    }
}

/// Marks a slot chosen for a stream not seen before.
const NEW_STREAM: usize = 1 << 16;

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Suite; 6] = [
        Suite::AesCm128Sha1_80,
        Suite::AesCm128Sha1_32,
        Suite::Aes256CmSha1_80,
        Suite::Aes256CmSha1_32,
        Suite::AeadAes128Gcm,
        Suite::AeadAes256Gcm,
    ];

    fn reference(key: &MasterKey) -> rtc_srtp::context::Context {
        use rtc_srtp::protection_profile::ProtectionProfile as P;
        let profile = match key.suite {
            Suite::AesCm128Sha1_80 => P::Aes128CmHmacSha1_80,
            Suite::AesCm128Sha1_32 => P::Aes128CmHmacSha1_32,
            Suite::Aes256CmSha1_80 => P::Aes256CmHmacSha1_80,
            Suite::Aes256CmSha1_32 => P::Aes256CmHmacSha1_32,
            Suite::AeadAes128Gcm => P::AeadAes128Gcm,
            Suite::AeadAes256Gcm => P::AeadAes256Gcm,
        };
        let provider = rtc_crypto::default_provider().unwrap();
        rtc_srtp::context::Context::new(
            key.key(),
            key.salt(),
            profile,
            None,
            None,
            provider.crypto(),
        )
        .unwrap()
    }

    /// An RTP packet: `seq`, an SSRC, optionally a header extension, a voice payload.
    fn rtp(seq: u16, ext: bool) -> Vec<u8> {
        let mut p = vec![0x80, 0, 0, 0, 0, 0, 0x12, 0x34, 0xCA, 0xFE, 0xBA, 0xBE];
        p[2..4].copy_from_slice(&seq.to_be_bytes());
        p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
        if ext {
            p[0] |= 0x10;
            p.extend_from_slice(&[0xBE, 0xDE, 0, 1, 0x10, 0xAA, 0, 0]);
        }
        p.extend((0..160u32).map(|i| (i * 7 + u32::from(seq)) as u8));
        p
    }

    fn protect(out: &mut Outbound, plain: &[u8], rtcp: bool) -> Vec<u8> {
        let mut buf = [0u8; 1500];
        buf[..plain.len()].copy_from_slice(plain);
        let n = if rtcp {
            out.protect_rtcp(&mut buf, plain.len())
        } else {
            out.protect_rtp(&mut buf, plain.len())
        }
        .unwrap();
        buf[..n].to_vec()
    }

    const SEQS: [u16; 7] = [5000, 5001, 65534, 65535, 0, 1, 2];

    #[test]
    fn what_we_protect_is_what_the_reference_protects_and_reads_back() {
        for suite in ALL {
            let key = MasterKey::random(suite);
            let mut ours = Outbound::new(&key);
            let mut theirs = reference(&key);
            let mut back = reference(&key);
            for (i, seq) in SEQS.into_iter().enumerate() {
                let plain = rtp(seq, i % 2 == 1);
                let sealed = protect(&mut ours, &plain, false);
                let expected = theirs.encrypt_rtp(&plain).unwrap();
                assert_eq!(sealed, expected.to_vec(), "{suite} seq {seq}");
                assert_eq!(sealed.len(), plain.len() + suite.rtp_tag_len());
                assert_eq!(
                    back.decrypt_rtp(&sealed).unwrap().to_vec(),
                    plain,
                    "{suite}"
                );
            }
        }
    }

    #[test]
    fn we_read_what_the_reference_protects_across_a_sequence_wrap() {
        for suite in ALL {
            let key = MasterKey::random(suite);
            let mut theirs = reference(&key);
            let mut ours = Inbound::new(&key);
            for (i, seq) in SEQS.into_iter().enumerate() {
                let plain = rtp(seq, i % 2 == 0);
                let mut sealed = theirs.encrypt_rtp(&plain).unwrap().to_vec();
                let n = ours.unprotect_rtp(&mut sealed).unwrap();
                assert_eq!(&sealed[..n], &plain[..], "{suite} seq {seq}");
            }
        }
    }

    #[test]
    fn srtcp_both_ways_with_the_reference() {
        // A receiver report with one block: header, sender SSRC, 24 octets.
        let mut rr = vec![0x81, 201, 0, 7, 0xCA, 0xFE, 0xBA, 0xBE];
        rr.extend((0..24u8).map(|i| i.wrapping_mul(37)));
        for suite in ALL {
            let key = MasterKey::random(suite);
            let mut ours_out = Outbound::new(&key);
            let mut ref_in = reference(&key);
            let mut ref_out = reference(&key);
            let mut ours_in = Inbound::new(&key);
            for _ in 0..3 {
                let sealed = protect(&mut ours_out, &rr, true);
                assert_ne!(
                    &sealed[8..rr.len()],
                    &rr[8..],
                    "{suite}: the report is encrypted"
                );
                assert_eq!(
                    ref_in.decrypt_rtcp(&sealed).unwrap().to_vec(),
                    rr,
                    "{suite}"
                );
                let mut theirs = ref_out.encrypt_rtcp(&rr).unwrap().to_vec();
                let n = ours_in.unprotect_rtcp(&mut theirs).unwrap();
                assert_eq!(&theirs[..n], &rr[..], "{suite}");
            }
        }
    }

    #[test]
    fn replayed_tampered_and_wrongly_keyed_packets_are_refused() {
        for suite in ALL {
            let key = MasterKey::random(suite);
            let mut out = Outbound::new(&key);
            let mut inb = Inbound::new(&key);
            let first = protect(&mut out, &rtp(10, false), false);
            assert!(inb.unprotect_rtp(&mut first.clone()).is_ok());
            assert_eq!(
                inb.unprotect_rtp(&mut first.clone()),
                Err(Refused::Replay),
                "{suite}"
            );
            let mut tampered = protect(&mut out, &rtp(11, false), false);
            tampered[20] ^= 1;
            assert_eq!(
                inb.unprotect_rtp(&mut tampered),
                Err(Refused::Auth),
                "{suite}"
            );
            // The tampered packet moved nothing: the genuine one still goes through.
            let mut later = protect(&mut out, &rtp(12, false), false);
            assert!(inb.unprotect_rtp(&mut later).is_ok());
            let mut other = Inbound::new(&MasterKey::random(suite));
            let mut p = protect(&mut out, &rtp(13, false), false);
            assert_eq!(other.unprotect_rtp(&mut p), Err(Refused::Auth), "{suite}");
            // Out of order within the window is fine, once.
            let a = protect(&mut out, &rtp(15, false), false);
            let b = protect(&mut out, &rtp(14, false), false);
            assert!(inb.unprotect_rtp(&mut a.clone()).is_ok());
            assert!(inb.unprotect_rtp(&mut b.clone()).is_ok());
            assert_eq!(inb.unprotect_rtp(&mut b.clone()), Err(Refused::Replay));
            assert_eq!(inb.unprotect_rtp(&mut [0u8; 5]), Err(Refused::Malformed));
        }
    }

    #[test]
    fn key_derivation_matches_rfc_3711_appendix_b3() {
        let h = |s: &str| hex::decode(s).unwrap();
        let master = MasterKey::from_parts(
            Suite::AesCm128Sha1_80,
            &h("E1F97A0D3E018BE0D64FA32C06DE4139"),
            &h("0EC675AD498AFEEBB6960B3AABE6"),
        )
        .unwrap();
        let mut key = [0u8; 16];
        derive(&master, LABEL_RTP_ENCRYPTION, &mut key);
        assert_eq!(key.to_vec(), h("C61E7A93744F39EE10734AFE3FF7A087"));
        let mut salt = [0u8; 14];
        derive(&master, LABEL_RTP_SALT, &mut salt);
        assert_eq!(salt.to_vec(), h("30CBBC08863D8C85D49DB34A9AE1"));
        let mut auth = [0u8; 20];
        derive(&master, LABEL_RTP_AUTH, &mut auth);
        assert_eq!(auth.to_vec(), h("CEBE321F6FF7716B6FD4AB49AF256A156D38BAA4"));
    }

    #[test]
    fn crypto_attributes_parse_and_print() {
        // RFC 4568 §4's example.
        let a = CryptoAttr::parse(
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR|2^20|1:4",
        )
        .unwrap();
        assert_eq!(a.tag, 1);
        assert_eq!(a.key.suite, Suite::AesCm128Sha1_80);
        assert_eq!(a.key.mki, Some((1, 4)));
        let printed = CryptoAttr {
            tag: 3,
            key: MasterKey::random(Suite::AeadAes256Gcm),
        };
        let back = CryptoAttr::parse(&printed.value()).unwrap();
        assert_eq!(back, printed);
        for bad in [
            "x AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 F8_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR",
            "1 AES_CM_128_HMAC_SHA1_80 inline:c2hvcnQ=",
            "1 AES_CM_128_HMAC_SHA1_80 inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR KDR=1",
            "1 AES_CM_128_HMAC_SHA1_80",
        ] {
            assert!(CryptoAttr::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn packets_with_an_mki_are_read() {
        let key = MasterKey::random(Suite::AesCm128Sha1_80);
        let mut theirs = key.clone();
        theirs.mki = Some((7, 2));
        let mut out = Outbound::new(&key);
        let mut inb = Inbound::new(&theirs);
        let plain = rtp(100, false);
        let sealed = protect(&mut out, &plain, false);
        // Insert the MKI (00 07) before the tag, as its sender would.
        let at = sealed.len() - 10;
        let mut with_mki = [&sealed[..at], &[0, 7], &sealed[at..]].concat();
        let n = inb.unprotect_rtp(&mut with_mki).unwrap();
        assert_eq!(&with_mki[..n], &plain[..]);
    }
}
