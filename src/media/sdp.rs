//! SDP offer/answer rewriting for a B2BUA that anchors media.
//!
//! Each leg of a call sees only Switchboard: every body we send carries our
//! own `o=` line, our address in `c=` and our relay port in `m=`. The media
//! *content* (codecs, direction) is copied from the other leg's SDP, narrowed
//! to what the relay and the media endpoint can carry: one plain-RTP audio
//! stream with PCMU (PT 0), PCMA (PT 8), G.722 (PT 9) and RFC 4733
//! `telephone-event/8000`, in the sender's order. Each leg's encryption is its
//! own ([`LegCrypto`]): SDES keys (RFC 4568) are never passed from one leg to the
//! other; the relay decrypts and re-encrypts. Everything else is
//! rejected with port 0 rather than removed, because an answer must keep the
//! offer's m-line count and order (RFC 3264 §6).
//!
//! * [`parse`] reads a body and extracts [`SdpInfo`], or explains in plain
//!   English why it cannot be used (the caller answers 488 then).
//! * [`LegSdp::render`] produces the body for one leg and keeps its `o=`
//!   version right (RFC 3264 §8).
//! * [`restrict_answer`] narrows an answer from one leg to the codecs the
//!   other leg offered.
//!
//! Parsing and printing are left entirely to `rtc-sdp`; this module only edits
//! its [`SessionDescription`] tree, so no SDP text is hand-parsed here beyond
//! splitting the payload type off `a=rtpmap`/`a=fmtp` values, which `rtc-sdp`
//! keeps as raw strings.

use std::io::Cursor;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use rand::Rng;
use rtc_sdp::description::common::{Address, Attribute, ConnectionInformation};
use rtc_sdp::description::media::{MediaDescription, RangedPort};
use rtc_sdp::SessionDescription;

use crate::media::srtp::{CryptoAttr, MasterKey, SrtpSession, Suite};

/// PCMU, PCMA and G.722: the voice codecs we carry (by static payload type).
/// G.722 is `G722/8000` in SDP although it carries 16 kHz audio (RFC 3551
/// §4.5.2); the static payload type is what identifies it.
const VOICE: [u8; 3] = [0, 8, 9];

/// Media direction of the audio stream (RFC 3264 §5.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Direction {
    /// `a=sendrecv`, also the default when no direction is given.
    #[default]
    SendRecv,
    /// `a=sendonly`: the usual way to put the other party on hold.
    SendOnly,
    /// `a=recvonly`: the usual answer to `sendonly`.
    RecvOnly,
    /// `a=inactive`: no media either way.
    Inactive,
}

impl Direction {
    /// The attribute name, e.g. `"sendonly"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::SendRecv => "sendrecv",
            Direction::SendOnly => "sendonly",
            Direction::RecvOnly => "recvonly",
            Direction::Inactive => "inactive",
        }
    }

    fn from_attr(key: &str) -> Option<Direction> {
        [
            Self::SendRecv,
            Self::SendOnly,
            Self::RecvOnly,
            Self::Inactive,
        ]
        .into_iter()
        .find(|d| d.as_str() == key)
    }

    fn of(attributes: &[Attribute]) -> Option<Direction> {
        attributes.iter().find_map(|a| Self::from_attr(&a.key))
    }
}

/// What the relay and the call logic need to know about one SDP body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdpInfo {
    /// Where the audio stream wants RTP: `c=` address and `m=` port. `None`
    /// when the stream is disabled (port 0) or on old-style hold (`c=0.0.0.0`).
    pub rtp: Option<SocketAddr>,
    /// The payload types we keep, in the sender's order of preference: PCMU,
    /// PCMA and G.722, plus the telephone-event one if any.
    pub codecs: Vec<u8>,
    /// The `telephone-event/8000` payload type, if offered (also in `codecs`).
    pub telephone_event: Option<u8>,
    /// The audio stream's direction; media-level overrides session-level.
    pub direction: Direction,
    /// The stream is `RTP/SAVP` (or SAVPF): encrypted or nothing.
    pub savp: bool,
    /// Its SDES keys we can use (`a=crypto` with a supported suite), in the sender's order.
    pub crypto: Vec<CryptoAttr>,
}

/// Why a body cannot be used. The messages are meant for logs and for the
/// reason phrase / Warning header of a 488 Not Acceptable Here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SdpError {
    /// Not parseable as SDP at all.
    #[error("malformed SDP: {0}")]
    Malformed(String),
    /// No `m=audio` line.
    #[error("the SDP has no audio stream")]
    NoAudio,
    /// Audio only over a transport we cannot relay (DTLS-SRTP, SRTP without a key we
    /// can use, ...).
    #[error(
        "the audio stream uses {0}, but only RTP/AVP and RTP/SAVP keyed by SDES \
         (a=crypto with AES_CM_128_HMAC_SHA1_80/32, AES_256_CM_HMAC_SHA1_80/32, \
         AEAD_AES_128_GCM or AEAD_AES_256_GCM) are supported"
    )]
    UnsupportedTransport(String),
    /// Audio without PCMU, PCMA or G.722.
    #[error("the audio stream offers none of the supported codecs (PCMU, PCMA, G722)")]
    NoSupportedCodec,
    /// An answer whose voice codecs were all absent from the offer.
    #[error("the answer contains no voice codec that the offer contained")]
    NoCommonCodec,
    /// An answer without SRTP to an offer that required it, or SRTP we did not offer.
    #[error("the answer's media is not encrypted as offered (media_encryption)")]
    NotEncrypted,
    /// A `c=` address that is not an IP literal (e.g. a host name).
    #[error("the connection address {0:?} is not an IP address")]
    BadAddress(String),
}

/// Parses an SDP body and extracts the audio stream's [`SdpInfo`].
pub fn parse(body: &[u8]) -> Result<(SessionDescription, SdpInfo), SdpError> {
    let sd = SessionDescription::unmarshal(&mut Cursor::new(body))
        .map_err(|e| SdpError::Malformed(e.to_string()))?;
    let info = info(&sd)?;
    Ok((sd, info))
}

/// Extracts the [`SdpInfo`] of an already parsed description.
pub fn info(sd: &SessionDescription) -> Result<SdpInfo, SdpError> {
    let m = &sd.media_descriptions[audio_index(sd)?];
    let port = u16::try_from(m.media_name.port.value).unwrap_or(0);
    let (codecs, telephone_event) = supported_formats(m);
    if port != 0 && !codecs.iter().any(|pt| VOICE.contains(pt)) {
        return Err(SdpError::NoSupportedCodec);
    }
    let rtp = match connection_ip(sd, m)? {
        Some(ip) if port != 0 && !ip.is_unspecified() => Some(SocketAddr::new(ip, port)),
        None if port != 0 => {
            return Err(SdpError::Malformed(
                "the audio stream has no c= line".into(),
            ))
        }
        _ => None,
    };
    let direction = Direction::of(&m.attributes)
        .or_else(|| Direction::of(&sd.attributes))
        .unwrap_or_default();
    Ok(SdpInfo {
        rtp,
        codecs,
        telephone_event,
        direction,
        savp: is_savp(m),
        crypto: crypto_attrs(m),
    })
}

/// The answer's view of an offer's direction (RFC 3264 §6.1): an offer to send only is
/// answered receive-only, and so on. Applied to the audio stream of `offer`.
pub fn flip_direction(offer: &SessionDescription) -> SessionDescription {
    let mut sd = offer.clone();
    if let Ok(idx) = audio_index(&sd) {
        for a in &mut sd.media_descriptions[idx].attributes {
            a.key = match a.key.as_str() {
                "sendonly" => "recvonly".into(),
                "recvonly" => "sendonly".into(),
                other => other.to_string(),
            };
        }
    }
    sd
}

/// A copy of an offer with every voice codec we carry added after the ones it lists:
/// what Switchboard offers a callee when it can transcode (the caller's codec stays
/// first, so a phone that has it needs no transcoding).
pub fn offer_all_codecs(offer: &SessionDescription) -> SessionDescription {
    let mut sd = offer.clone();
    let Ok(idx) = audio_index(&sd) else {
        return sd;
    };
    let m = &mut sd.media_descriptions[idx];
    for (pt, name) in [(0u8, "PCMU/8000"), (8, "PCMA/8000"), (9, "G722/8000")] {
        if m.media_name.formats.iter().any(|f| f == &pt.to_string()) {
            continue;
        }
        // Before telephone-event and anything else that is not a voice codec.
        let at = m
            .media_name
            .formats
            .iter()
            .position(|f| f.parse::<u8>().map_or(true, |p| !VOICE.contains(&p)))
            .unwrap_or(m.media_name.formats.len());
        m.media_name.formats.insert(at, pt.to_string());
        m.attributes.push(Attribute {
            key: "rtpmap".into(),
            value: Some(format!("{pt} {name}")),
        });
    }
    sd
}

/// Every voice codec we carry, plus `telephone-event` as `offer` has it: what a
/// callee offered [`offer_all_codecs`] may answer with.
pub fn all_codecs(offer: &SdpInfo) -> SdpInfo {
    let mut keep = offer.clone();
    for pt in VOICE {
        if !keep.codecs.contains(&pt) {
            keep.codecs.push(pt);
        }
    }
    keep
}

/// Narrows an answer received on one leg to the codecs the other leg offered
/// (`offer`), before it is rendered towards that leg: payload types the offer
/// did not contain are removed. This is lenient towards answerers that list
/// extra codecs, and fails only when no offered voice codec is left.
///
/// Returns the narrowed description (to pass to [`LegSdp::render`]) and its
/// info. An answer that declines audio (port 0) passes unchanged.
pub fn restrict_answer(
    answer: &SessionDescription,
    offer: &SdpInfo,
) -> Result<(SessionDescription, SdpInfo), SdpError> {
    let mut sd = answer.clone();
    let idx = audio_index(&sd)?;
    let name = &mut sd.media_descriptions[idx].media_name;
    if name.port.value != 0 {
        name.formats
            .retain(|f| f.parse().is_ok_and(|pt| offer.codecs.contains(&pt)));
        if !name
            .formats
            .iter()
            .any(|f| f.parse().is_ok_and(|pt| VOICE.contains(&pt)))
        {
            return Err(SdpError::NoCommonCodec);
        }
    }
    let info = info(&sd)?;
    Ok((sd, info))
}

/// Our SDP identity on one leg: the `o=` session id and version, and the last
/// body sent, which decides whether the next one needs a new version.
#[derive(Debug, Clone)]
pub struct LegSdp {
    session_id: u64,
    version: u64,
    last_body: Option<String>,
    /// The leg's SRTP keys, if it is encrypted (or offered encryption).
    pub crypto: Option<LegCrypto>,
}

impl Default for LegSdp {
    fn default() -> Self {
        Self::new()
    }
}

impl LegSdp {
    /// A random session id (kept within 32 bits, which some older phones
    /// assume) and version 1.
    pub fn new() -> Self {
        LegSdp {
            session_id: rand::thread_rng().gen_range(1..=u64::from(u32::MAX)),
            version: 1,
            last_body: None,
            crypto: None,
        }
    }

    /// A leg keyed with `crypto` (see [`LegSdp::new`]).
    pub fn with_crypto(crypto: Option<LegCrypto>) -> Self {
        LegSdp {
            crypto,
            ..LegSdp::new()
        }
    }

    /// The `o=` session id.
    pub fn session_id(&self) -> u64 {
        self.session_id
    }

    /// The `o=` version of the last body rendered.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The last body rendered, if any.
    pub fn last_body(&self) -> Option<&str> {
        self.last_body.as_deref()
    }

    /// The body to send on this leg, carrying the media of `from` (the other
    /// leg's SDP, already checked with [`parse`] or [`restrict_answer`]) as
    /// anchored at `our_ip`:`our_port`:
    ///
    /// * `o=` is ours (`switchboard`, our session id and version, `our_ip`);
    /// * `c=`, session and media level, is `our_ip` (`IN IP4`/`IN IP6`),
    ///   except that an old-style hold `c=0.0.0.0` stays unspecified;
    /// * the audio stream gets `our_port`, PCMU/PCMA/G.722/telephone-event only,
    ///   with their `rtpmap`/`fmtp`, plus `ptime`, `maxptime` and direction;
    ///   anything referring to the other leg's transport (`a=rtcp`, ICE,
    ///   `a=crypto`, `a=ssrc`, `a=rtcp-mux`, ...) is dropped;
    /// * every other m-line is rejected with port 0 and no attributes.
    ///
    /// The version is incremented only when the body differs from the last
    /// one sent on this leg (RFC 3264 §8), so a re-INVITE answer with
    /// unchanged media repeats the previous body exactly.
    pub fn render(&mut self, from: &SessionDescription, our_ip: IpAddr, our_port: u16) -> String {
        let mut sd = anchored(from, our_ip, our_port);
        // Found in `from`: the anchored copy has lost the keys that make SAVP relayable.
        if let Ok(i) = audio_index(from) {
            secure(&mut sd.media_descriptions[i], self.crypto.as_ref());
        }
        sd.origin.username = "switchboard".into();
        sd.origin.session_id = self.session_id;
        sd.origin.session_version = self.version;
        sd.origin.network_type = "IN".into();
        sd.origin.address_type = address_type(our_ip).into();
        sd.origin.unicast_address = our_ip.to_string();

        let mut body = sd.marshal();
        if let Some(last) = &self.last_body {
            if *last == body {
                return body;
            }
            self.version += 1;
            sd.origin.session_version = self.version;
            body = sd.marshal();
        }
        self.last_body = Some(body.clone());
        body
    }
}

/// A copy of `from` with its media anchored at `ip`:`port` (see
/// [`LegSdp::render`]); the `o=` line is left for the caller.
fn anchored(from: &SessionDescription, ip: IpAddr, port: u16) -> SessionDescription {
    let audio = audio_index(from).ok();
    // Keep RFC 2543 hold (c=0.0.0.0) visible, or the held party would start
    // sending to us again; its direction attribute alone may say sendrecv.
    let held = audio
        .and_then(|i| {
            connection_ip(from, &from.media_descriptions[i])
                .ok()
                .flatten()
        })
        .is_some_and(|addr| addr.is_unspecified());
    let conn = connection(match (held, ip) {
        (false, ip) => ip,
        (true, IpAddr::V4(_)) => Ipv4Addr::UNSPECIFIED.into(),
        (true, IpAddr::V6(_)) => Ipv6Addr::UNSPECIFIED.into(),
    });

    let mut sd = from.clone();
    sd.connection_information = Some(conn.clone());
    sd.encryption_key = None;
    // Session-level attributes are ICE, fingerprints, groups and the like of
    // the other leg; only a session-wide direction is meaningful to pass on.
    sd.attributes
        .retain(|a| Direction::from_attr(&a.key).is_some());
    for (i, m) in sd.media_descriptions.iter_mut().enumerate() {
        if m.connection_information.is_some() {
            m.connection_information = Some(conn.clone());
        }
        m.encryption_key = None;
        if Some(i) == audio {
            anchor_audio(m, port);
        } else {
            reject(m);
        }
    }
    sd
}

fn anchor_audio(m: &mut MediaDescription, port: u16) {
    let (codecs, _) = supported_formats(m);
    if m.media_name.port.value == 0 || !codecs.iter().any(|pt| VOICE.contains(pt)) {
        return reject(m);
    }
    m.media_name.port = RangedPort {
        value: port as isize, // lossless: isize is at least 32 bits on tokio targets
        range: None,
    };
    m.media_name.formats = codecs.iter().map(u8::to_string).collect();
    m.attributes.retain(|a| match a.key.as_str() {
        "rtpmap" | "fmtp" => a
            .value
            .as_deref()
            .and_then(leading_pt)
            .is_some_and(|pt| codecs.contains(&pt)),
        "ptime" | "maxptime" => true,
        key => Direction::from_attr(key).is_some(),
    });
}

/// The audio m-line's profile and keys as this leg has them: the other leg's
/// (anchored) are never passed on.
fn secure(m: &mut MediaDescription, crypto: Option<&LegCrypto>) {
    if m.media_name.port.value == 0 {
        return;
    }
    let feedback = m
        .media_name
        .protos
        .get(1)
        .is_some_and(|p| p.to_ascii_uppercase().ends_with("PF"));
    let savp = crypto.is_some_and(|c| c.savp);
    let profile = match (savp, feedback) {
        (false, false) => "AVP",
        (false, true) => "AVPF",
        (true, false) => "SAVP",
        (true, true) => "SAVPF",
    };
    m.media_name.protos = vec!["RTP".into(), profile.into()];
    for attr in crypto.map(|c| c.ours.as_slice()).unwrap_or_default() {
        m.attributes.push(Attribute {
            key: "crypto".into(),
            value: Some(attr.value()),
        });
    }
}

/// Disables an m-line: port 0, formats kept (the m= line needs at least one),
/// nothing else.
fn reject(m: &mut MediaDescription) {
    m.media_name.port = RangedPort {
        value: 0,
        range: None,
    };
    m.bandwidth.clear();
    m.attributes.clear();
}

/// The m-line we relay: the first plain-RTP audio stream that is enabled, or
/// failing that the first plain-RTP audio stream (a declined one).
fn audio_index(sd: &SessionDescription) -> Result<usize, SdpError> {
    let media = &sd.media_descriptions;
    let is_audio = |m: &MediaDescription| m.media_name.media == "audio";
    let relayable = |m: &MediaDescription| {
        let protos = &m.media_name.protos;
        let rtp = protos.len() == 2 && protos[0].eq_ignore_ascii_case("RTP");
        let plain = rtp
            && (protos[1].eq_ignore_ascii_case("AVP") || protos[1].eq_ignore_ascii_case("AVPF"));
        // SRTP only with a key we can use; a declined stream needs none.
        let keyed = is_savp(m) && (m.media_name.port.value == 0 || !crypto_attrs(m).is_empty());
        is_audio(m) && (plain || keyed)
    };
    if let Some(i) = media
        .iter()
        .position(|m| relayable(m) && m.media_name.port.value != 0)
        .or_else(|| media.iter().position(relayable))
    {
        return Ok(i);
    }
    match media.iter().find(|m| is_audio(m)) {
        Some(m) => Err(SdpError::UnsupportedTransport(
            m.media_name.protos.join("/"),
        )),
        None => Err(SdpError::NoAudio),
    }
}

/// Whether the m-line's profile is RTP/SAVP or RTP/SAVPF.
fn is_savp(m: &MediaDescription) -> bool {
    let protos = &m.media_name.protos;
    protos.len() == 2
        && protos[0].eq_ignore_ascii_case("RTP")
        && (protos[1].eq_ignore_ascii_case("SAVP") || protos[1].eq_ignore_ascii_case("SAVPF"))
}

/// The usable `a=crypto` lines of `m`; the others are skipped (RFC 4568 §7.1.1).
fn crypto_attrs(m: &MediaDescription) -> Vec<CryptoAttr> {
    m.attributes
        .iter()
        .filter(|a| a.key == "crypto")
        .filter_map(|a| CryptoAttr::parse(a.value.as_deref()?).ok())
        .collect()
}

/// The SDES keying of one leg: what we sent it (one key per suite when we offer,
/// the one chosen when we answer) and the key it sent us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LegCrypto {
    /// Written as `RTP/SAVP`; otherwise `RTP/AVP` with keys (RFC 4568's best effort).
    pub savp: bool,
    pub ours: Vec<CryptoAttr>,
    pub theirs: Option<CryptoAttr>,
}

impl LegCrypto {
    /// What we offer a leg: a fresh key for each suite we like.
    pub fn offer(savp: bool) -> LegCrypto {
        let ours = Suite::OFFERED
            .iter()
            .zip(1..)
            .map(|(&suite, tag)| CryptoAttr {
                tag,
                key: MasterKey::random(suite),
            })
            .collect();
        LegCrypto {
            savp,
            ours,
            theirs: None,
        }
    }

    /// Our answer to a leg's offer: its first usable key, and a fresh one of ours for the
    /// same suite under the same tag (RFC 4568 §7.1.2). `None` if it offered no key.
    pub fn answer(offer: &SdpInfo) -> Option<LegCrypto> {
        let theirs = offer.crypto.first()?.clone();
        Some(LegCrypto {
            savp: offer.savp,
            ours: vec![CryptoAttr {
                tag: theirs.tag,
                key: MasterKey::random(theirs.key.suite),
            }],
            theirs: Some(theirs),
        })
    }

    /// The leg's answer to our offer: the key it sent under one of our tags and suites.
    /// False if it chose none (it answered without encryption).
    pub fn accept_answer(&mut self, answer: &SdpInfo) -> bool {
        let chosen = answer.crypto.iter().find(|a| {
            self.ours
                .iter()
                .any(|o| o.tag == a.tag && o.key.suite == a.key.suite)
        });
        let Some(chosen) = chosen.cloned() else {
            return false;
        };
        self.ours
            .retain(|o| o.tag == chosen.tag && o.key.suite == chosen.key.suite);
        self.theirs = Some(chosen);
        true
    }

    /// A later offer or answer from the leg (a re-INVITE) with a new key for the suite in
    /// use: that key, now the leg's.
    pub fn rekeyed(&mut self, info: &SdpInfo) -> Option<MasterKey> {
        let suite = self.theirs.as_ref()?.key.suite;
        let theirs = self.theirs.as_mut()?;
        let new = info.crypto.iter().find(|a| a.key.suite == suite)?;
        if new.key == theirs.key {
            return None;
        }
        *theirs = new.clone();
        Some(new.key.clone())
    }

    /// The leg's SRTP, once both keys are known.
    pub fn session(&self) -> Option<SrtpSession> {
        let theirs = self.theirs.as_ref()?;
        let ours = self.ours.iter().find(|o| o.key.suite == theirs.key.suite)?;
        Some(SrtpSession::new(&ours.key, &theirs.key))
    }

    pub fn suite(&self) -> Option<Suite> {
        self.theirs.as_ref().map(|t| t.key.suite)
    }
}

/// The payload types of `m` that we relay, in order, and which of them is
/// `telephone-event/8000` (the first one, should there be several).
fn supported_formats(m: &MediaDescription) -> (Vec<u8>, Option<u8>) {
    let mut codecs = Vec::new();
    let mut telephone_event = None;
    for pt in m
        .media_name
        .formats
        .iter()
        .filter_map(|f| f.parse::<u8>().ok())
    {
        let keep = if VOICE.contains(&pt) {
            true
        } else if telephone_event.is_none() && (96..=127).contains(&pt) && is_telephone_event(m, pt)
        {
            telephone_event = Some(pt);
            true
        } else {
            false
        };
        if keep && !codecs.contains(&pt) {
            codecs.push(pt);
        }
    }
    (codecs, telephone_event)
}

/// Whether `a=rtpmap:<pt>` names `telephone-event/8000` (with an optional
/// `/1` channel count).
fn is_telephone_event(m: &MediaDescription, pt: u8) -> bool {
    m.attributes
        .iter()
        .filter(|a| a.key == "rtpmap")
        .filter_map(|a| a.value.as_deref())
        .filter(|v| leading_pt(v) == Some(pt))
        .filter_map(|v| v.split_whitespace().nth(1))
        .any(|enc| {
            let mut parts = enc.split('/');
            parts
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case("telephone-event"))
                && parts.next() == Some("8000")
                && matches!(parts.next(), None | Some("1"))
        })
}

/// The payload type at the start of an `rtpmap`/`fmtp` value, e.g. `101` in
/// `101 0-16`.
fn leading_pt(value: &str) -> Option<u8> {
    value.split_whitespace().next()?.parse().ok()
}

/// The effective `c=` address of `m`: media level, else session level.
fn connection_ip(
    sd: &SessionDescription,
    m: &MediaDescription,
) -> Result<Option<IpAddr>, SdpError> {
    let conn = m
        .connection_information
        .as_ref()
        .or(sd.connection_information.as_ref());
    match conn.and_then(|c| c.address.as_ref()) {
        None => Ok(None),
        Some(a) => a
            .address
            .parse()
            .map(Some)
            .map_err(|_| SdpError::BadAddress(a.address.clone())),
    }
}

fn address_type(ip: IpAddr) -> &'static str {
    match ip {
        IpAddr::V4(_) => "IP4",
        IpAddr::V6(_) => "IP6",
    }
}

fn connection(ip: IpAddr) -> ConnectionInformation {
    ConnectionInformation {
        network_type: "IN".into(),
        address_type: address_type(ip).into(),
        address: Some(Address {
            address: ip.to_string(),
            ttl: None,
            range: None,
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn offering_all_codecs_keeps_the_callers_first_and_adds_ours_before_events() {
        let body = "v=0\r\no=- 1 1 IN IP4 192.0.2.1\r\ns=-\r\nc=IN IP4 192.0.2.1\r\nt=0 0\r\n\
                    m=audio 4000 RTP/AVP 8 101\r\na=rtpmap:8 PCMA/8000\r\n\
                    a=rtpmap:101 telephone-event/8000\r\n";
        let (sd, _) = parse(body.as_bytes()).unwrap();
        let all = offer_all_codecs(&sd);
        let info = info(&all).unwrap();
        assert_eq!(info.codecs, vec![8, 0, 9, 101]);
        assert_eq!(info.telephone_event, Some(101));
        let (sd, offer) = parse(body.as_bytes()).unwrap();
        assert_eq!(all_codecs(&offer).codecs, vec![8, 101, 0, 9]);
        assert_eq!(
            offer_all_codecs(&offer_all_codecs(&sd)).marshal(),
            all.marshal()
        );
    }

    use super::*;

    /// SDP text is written with `\n` here for readability; the wire uses CRLF.
    fn crlf(text: &str) -> String {
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| format!("{l}\r\n"))
            .collect()
    }

    fn parsed(text: &str) -> (SessionDescription, SdpInfo) {
        parse(crlf(text).as_bytes()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// `sipp -sd uac`'s body, with the [fields] filled in.
    const SIPP_OFFER: &str = "v=0
        o=user1 53655765 2353687637 IN IP4 127.0.0.1
        s=-
        c=IN IP4 127.0.0.1
        t=0 0
        m=audio 6000 RTP/AVP 0
        a=rtpmap:0 PCMU/8000";

    /// Linphone-style: many codecs, three telephone-events, ICE, a=rtcp, video.
    const LINPHONE_OFFER: &str = "v=0
        o=alice 3210 1234 IN IP4 192.168.1.10
        s=Talk
        c=IN IP4 192.168.1.10
        t=0 0
        a=ice-pwd:31ec21eb38b2ec6d36e8dc7b
        a=ice-ufrag:7ae1d7ab
        a=rtcp-xr:rcvr-rtt=all:10000 stat-summary=loss,dup,jitt,TTL voip-metrics
        m=audio 7078 RTP/AVP 96 97 9 0 8 101 99 100
        a=rtpmap:96 opus/48000/2
        a=fmtp:96 useinbandfec=1
        a=rtpmap:97 speex/16000
        a=fmtp:97 vbr=on
        a=rtpmap:9 G722/8000
        a=rtpmap:101 telephone-event/48000
        a=rtpmap:99 telephone-event/16000
        a=rtpmap:100 telephone-event/8000
        a=fmtp:100 0-16
        a=rtcp:7079
        a=candidate:1 1 UDP 2130706431 192.168.1.10 7078 typ host
        a=candidate:1 2 UDP 2130706430 192.168.1.10 7079 typ host
        a=candidate:2 1 UDP 1694498815 203.0.113.7 7078 typ srflx raddr 192.168.1.10 rport 7078
        a=rtcp-fb:* trr-int 1000
        a=rtcp-fb:* ccm tmmbr
        m=video 9078 RTP/AVP 96 97
        a=rtpmap:96 VP8/90000
        a=rtpmap:97 H264/90000
        a=fmtp:97 profile-level-id=42801F
        a=rtcp:9079
        a=rtcp-fb:* ccm fir";

    /// baresip-style over IPv6, with best-effort SDES, rtcp-mux and an SSRC.
    const BARESIP_OFFER: &str = "v=0
        o=- 1752415270 1752415270 IN IP6 2001:db8::10
        s=-
        c=IN IP6 2001:db8::10
        t=0 0
        m=audio 10776 RTP/AVP 9 0 8 101
        b=AS:64
        a=rtpmap:9 G722/8000
        a=rtpmap:0 PCMU/8000
        a=rtpmap:8 PCMA/8000
        a=rtpmap:101 telephone-event/8000
        a=fmtp:101 0-16
        a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz
        a=rtcp-mux
        a=ssrc:3581223493 cname:7c3d4ee5
        a=ptime:20
        a=sendrecv";

    #[test]
    fn sipp_offer() {
        let (sd, info) = parsed(SIPP_OFFER);
        assert_eq!(
            info,
            SdpInfo {
                rtp: Some("127.0.0.1:6000".parse().unwrap()),
                codecs: vec![0],
                telephone_event: None,
                direction: Direction::SendRecv,
                savp: false,
                crypto: vec![],
            }
        );
        let mut leg = LegSdp::new();
        let body = leg.render(&sd, ip("10.0.0.1"), 20000);
        let expected = format!(
            "v=0
            o=switchboard {} 1 IN IP4 10.0.0.1
            s=-
            c=IN IP4 10.0.0.1
            t=0 0
            m=audio 20000 RTP/AVP 0
            a=rtpmap:0 PCMU/8000",
            leg.session_id()
        );
        assert_eq!(body, crlf(&expected));
        // What we send parses back to our own address.
        assert_eq!(
            parse(body.as_bytes()).unwrap().1.rtp,
            Some("10.0.0.1:20000".parse().unwrap())
        );
    }

    #[test]
    fn linphone_offer_is_narrowed_and_video_rejected() {
        let (sd, info) = parsed(LINPHONE_OFFER);
        assert_eq!(info.rtp, Some("192.168.1.10:7078".parse().unwrap()));
        assert_eq!(info.codecs, [9, 0, 8, 100]);
        assert_eq!(info.telephone_event, Some(100));

        let mut leg = LegSdp::new();
        let body = leg.render(&sd, ip("10.0.0.1"), 20000);
        let expected = format!(
            "v=0
            o=switchboard {} 1 IN IP4 10.0.0.1
            s=Talk
            c=IN IP4 10.0.0.1
            t=0 0
            m=audio 20000 RTP/AVP 9 0 8 100
            a=rtpmap:9 G722/8000
            a=rtpmap:100 telephone-event/8000
            a=fmtp:100 0-16
            m=video 0 RTP/AVP 96 97",
            leg.session_id()
        );
        assert_eq!(body, crlf(&expected));
    }

    #[test]
    fn baresip_ipv6_offer() {
        let (sd, info) = parsed(BARESIP_OFFER);
        assert_eq!(info.rtp, Some("[2001:db8::10]:10776".parse().unwrap()));
        assert_eq!(info.codecs, [9, 0, 8, 101]);
        assert_eq!(info.telephone_event, Some(101));

        let mut leg = LegSdp::new();
        let body = leg.render(&sd, ip("2001:db8::1"), 30000);
        let expected = format!(
            "v=0
            o=switchboard {} 1 IN IP6 2001:db8::1
            s=-
            c=IN IP6 2001:db8::1
            t=0 0
            m=audio 30000 RTP/AVP 9 0 8 101
            b=AS:64
            a=rtpmap:9 G722/8000
            a=rtpmap:0 PCMU/8000
            a=rtpmap:8 PCMA/8000
            a=rtpmap:101 telephone-event/8000
            a=fmtp:101 0-16
            a=ptime:20
            a=sendrecv",
            leg.session_id()
        );
        assert_eq!(body, crlf(&expected));

        // The other leg may well be IPv4: c= and o= follow our address.
        let body = LegSdp::new().render(&sd, ip("10.0.0.1"), 30000);
        assert!(body.contains("\r\nc=IN IP4 10.0.0.1\r\n"));
        assert!(body.contains(" IN IP4 10.0.0.1\r\ns=-"));
    }

    #[test]
    fn hold_direction_passes_through() {
        let hold = SIPP_OFFER.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\na=sendonly");
        let (sd, info) = parsed(&hold);
        assert_eq!(info.direction, Direction::SendOnly);
        assert!(LegSdp::new()
            .render(&sd, ip("10.0.0.1"), 20000)
            .ends_with("a=sendonly\r\n"));

        // Session level applies unless the media level overrides it.
        let session = SIPP_OFFER.replace("t=0 0", "t=0 0\na=inactive");
        let (sd, info) = parsed(&session);
        assert_eq!(info.direction, Direction::Inactive);
        assert!(LegSdp::new()
            .render(&sd, ip("10.0.0.1"), 20000)
            .contains("t=0 0\r\na=inactive\r\nm="));
        let both = session.replace("a=rtpmap:0 PCMU/8000", "a=rtpmap:0 PCMU/8000\na=recvonly");
        assert_eq!(parsed(&both).1.direction, Direction::RecvOnly);
    }

    #[test]
    fn disabled_and_old_style_hold_streams_have_no_address() {
        let (sd, info) = parsed(&SIPP_OFFER.replace("m=audio 6000", "m=audio 0"));
        assert_eq!(info.rtp, None);
        let body = LegSdp::new().render(&sd, ip("10.0.0.1"), 20000);
        assert!(body.ends_with("t=0 0\r\nm=audio 0 RTP/AVP 0\r\n"), "{body}");

        let (sd, info) = parsed(&SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 0.0.0.0"));
        assert_eq!(info.rtp, None);
        let body = LegSdp::new().render(&sd, ip("10.0.0.1"), 20000);
        assert!(body.contains("\r\nc=IN IP4 0.0.0.0\r\n"), "{body}");
        assert!(body.contains("\r\nm=audio 20000 RTP/AVP 0\r\n"), "{body}");
    }

    #[test]
    fn picks_the_plain_rtp_stream_of_an_srtp_optional_offer() {
        let offer = SIPP_OFFER.replace(
            "m=audio 6000 RTP/AVP 0",
            "m=audio 6002 RTP/SAVP 0\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:abc\nm=audio 6000 RTP/AVP 0",
        );
        let (sd, info) = parsed(&offer);
        assert_eq!(info.rtp, Some("127.0.0.1:6000".parse().unwrap()));
        let body = LegSdp::new().render(&sd, ip("10.0.0.1"), 20000);
        assert!(
            body.ends_with(
                "m=audio 0 RTP/SAVP 0\r\nm=audio 20000 RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\n"
            ),
            "{body}"
        );
    }

    const KEY: &str = "inline:PS1uQCVeeCFCanVmcjkpPywjNWhcYD0mXXtxaVBR";

    #[test]
    fn an_srtp_offer_is_answered_with_our_own_key_and_never_passed_on() {
        let offer = SIPP_OFFER.replace(
            "m=audio 6000 RTP/AVP 0",
            &format!(
                "m=audio 6000 RTP/SAVP 0\na=crypto:1 F8_128_HMAC_SHA1_80 {KEY}\n\
                 a=crypto:2 AES_CM_128_HMAC_SHA1_32 {KEY}\na=crypto:3 AES_CM_128_HMAC_SHA1_80 {KEY}"
            ),
        );
        let (sd, info) = parsed(&offer);
        assert!(info.savp);
        // The unknown suite is skipped; the first usable key is taken, under its tag.
        assert_eq!(info.crypto.len(), 2);
        let crypto = LegCrypto::answer(&info).unwrap();
        assert_eq!(crypto.suite(), Some(Suite::AesCm128Sha1_32));
        let mut a = LegSdp::new();
        a.crypto = Some(crypto.clone());
        let answer = a.render(&sd, ip("10.0.0.1"), 20000);
        assert!(answer.contains("m=audio 20000 RTP/SAVP 0\r\n"), "{answer}");
        let lines: Vec<_> = answer
            .lines()
            .filter(|l| l.starts_with("a=crypto:"))
            .collect();
        assert_eq!(lines, [format!("a=crypto:{}", crypto.ours[0].value())]);
        assert!(lines[0].starts_with("a=crypto:2 AES_CM_128_HMAC_SHA1_32 inline:"));
        assert!(!answer.contains(KEY), "the caller's key goes nowhere");
        // The other leg, unencrypted, gets plain RTP/AVP without keys.
        let plain = LegSdp::new().render(&sd, ip("10.0.0.1"), 20002);
        assert!(plain.contains("m=audio 20002 RTP/AVP 0\r\n"), "{plain}");
        assert!(!plain.contains("crypto"), "{plain}");
        let session = crypto.session().unwrap();
        assert_eq!(session.suite(), Suite::AesCm128Sha1_32);
    }

    #[test]
    fn our_offer_carries_a_key_per_suite_and_the_answer_picks_one() {
        let (sd, _) = parsed(SIPP_OFFER);
        let mut b = LegSdp::new();
        b.crypto = Some(LegCrypto::offer(false));
        let offer = b.render(&sd, ip("10.0.0.1"), 20000);
        // Best effort: plain RTP/AVP with keys.
        assert!(offer.contains("m=audio 20000 RTP/AVP 0\r\n"), "{offer}");
        assert_eq!(offer.matches("a=crypto:").count(), Suite::OFFERED.len());
        let ours = &b.crypto.as_ref().unwrap().ours;
        let chosen = ours
            .iter()
            .find(|o| o.key.suite == Suite::AesCm128Sha1_80)
            .unwrap()
            .clone();
        let answer = SIPP_OFFER.replace(
            "m=audio 6000 RTP/AVP 0",
            &format!(
                "m=audio 6000 RTP/AVP 0\na=crypto:{} AES_CM_128_HMAC_SHA1_80 {KEY}",
                chosen.tag
            ),
        );
        let (_, info) = parsed(&answer);
        let crypto = b.crypto.as_mut().unwrap();
        assert!(crypto.accept_answer(&info));
        assert_eq!(crypto.ours.len(), 1);
        assert_eq!(crypto.suite(), Some(Suite::AesCm128Sha1_80));
        // A re-INVITE with the same key changes nothing; a new key is the leg's from then on.
        assert!(crypto.rekeyed(&info).is_none());
        let other = "inline:YUJDZGVmZ2hpSktMbW9QUXJzVHVWd3l6MTIzNDU2";
        let (_, again) = parsed(&answer.replace(KEY, other));
        assert!(crypto.rekeyed(&again).is_some());
        // An answer without keys (or with a tag we never offered) is unencrypted.
        let (_, none) = parsed(SIPP_OFFER);
        assert!(!LegCrypto::offer(true).accept_answer(&none));
        let (_, wrong_tag) =
            parsed(&answer.replace(&format!("a=crypto:{} ", chosen.tag), "a=crypto:99 "));
        assert!(!LegCrypto::offer(true).accept_answer(&wrong_tag));
    }

    #[test]
    fn unusable_bodies_are_explained() {
        let err = |text: &str| parse(crlf(text).as_bytes()).unwrap_err();
        assert!(matches!(err("hello"), SdpError::Malformed(_)));
        assert_eq!(
            err(&SIPP_OFFER.replace("m=audio 6000 RTP/AVP 0", "m=video 6000 RTP/AVP 96")),
            SdpError::NoAudio
        );
        assert_eq!(
            err(&LINPHONE_OFFER.replace("RTP/AVP 96 97 9 0 8 101 99 100", "RTP/AVP 96 97 100")),
            SdpError::NoSupportedCodec
        );
        let srtp = err(&SIPP_OFFER.replace("RTP/AVP", "RTP/SAVP"));
        assert_eq!(srtp, SdpError::UnsupportedTransport("RTP/SAVP".into()));
        assert_eq!(
            srtp.to_string(),
            "the audio stream uses RTP/SAVP, but only RTP/AVP and RTP/SAVP keyed by SDES \
             (a=crypto with AES_CM_128_HMAC_SHA1_80/32, AES_256_CM_HMAC_SHA1_80/32, \
             AEAD_AES_128_GCM or AEAD_AES_256_GCM) are supported"
        );
        assert_eq!(
            err(&SIPP_OFFER.replace("c=IN IP4 127.0.0.1", "c=IN IP4 pbx.example.com")),
            SdpError::BadAddress("pbx.example.com".into())
        );
    }

    #[test]
    fn version_increments_only_on_change() {
        let (offer, _) = parsed(BARESIP_OFFER);
        let (hold, _) = parsed(&BARESIP_OFFER.replace("a=sendrecv", "a=sendonly"));
        let our = ip("10.0.0.1");
        let mut leg = LegSdp::new();

        let first = leg.render(&offer, our, 20000);
        assert_eq!(leg.version(), 1);
        assert_eq!(
            leg.render(&offer, our, 20000),
            first,
            "unchanged media keeps the version"
        );
        assert_eq!(leg.version(), 1);

        let held = leg.render(&hold, our, 20000);
        assert_eq!(leg.version(), 2);
        assert_eq!(
            held,
            first
                .replace(" 1 IN IP4", " 2 IN IP4")
                .replace("a=sendrecv", "a=sendonly")
        );
        leg.render(&hold, our, 20000);
        assert_eq!(leg.version(), 2);
        leg.render(&offer, our, 20000);
        assert_eq!(leg.version(), 3);
        // A new relay port is a change too.
        leg.render(&offer, our, 20002);
        assert_eq!(leg.version(), 4);
        assert_eq!(
            leg.last_body().map(|b| b.contains("m=audio 20002 ")),
            Some(true)
        );
    }

    #[test]
    fn answers_are_restricted_to_the_offer() {
        let (_, offer) = parsed(BARESIP_OFFER); // 9 0 8 101
        let answer = |m: &str| {
            let text = SIPP_OFFER.replace("a=rtpmap:0 PCMU/8000", "");
            parsed(&text.replace("m=audio 6000 RTP/AVP 0", m)).0
        };

        let (sd, info) = restrict_answer(
            &answer(
                "m=audio 4000 RTP/AVP 8 101\na=rtpmap:101 telephone-event/8000\na=fmtp:101 0-15",
            ),
            &offer,
        )
        .unwrap();
        assert_eq!(
            (info.codecs.as_slice(), info.telephone_event),
            (&[8, 101][..], Some(101))
        );
        assert!(LegSdp::new()
            .render(&sd, ip("10.0.0.1"), 20000)
            .ends_with("m=audio 20000 RTP/AVP 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\n"));

        // Extra, unoffered codecs in an answer are removed...
        let (_, sipp) = parsed(SIPP_OFFER); // 0 only
        let (sd, info) = restrict_answer(&answer("m=audio 4000 RTP/AVP 0 8 18"), &sipp).unwrap();
        assert_eq!(info.codecs, [0]);
        assert!(LegSdp::new()
            .render(&sd, ip("10.0.0.1"), 20000)
            .ends_with("m=audio 20000 RTP/AVP 0\r\n"));
        // ...but an answer with no offered voice codec fails.
        assert_eq!(
            restrict_answer(&answer("m=audio 4000 RTP/AVP 8"), &sipp).unwrap_err(),
            SdpError::NoCommonCodec
        );
        // A declined stream is passed on as declined.
        let (_, info) = restrict_answer(&answer("m=audio 0 RTP/AVP 8"), &sipp).unwrap();
        assert_eq!(info.rtp, None);
    }

    /// G.722 is carried like G.711: a wideband-only offer is usable, the
    /// sender's order is kept, and an answer may pick it.
    #[test]
    fn g722_is_a_supported_codec() {
        let only = SIPP_OFFER.replace("RTP/AVP 0", "RTP/AVP 9 101").replace(
            "a=rtpmap:0 PCMU/8000",
            "a=rtpmap:9 G722/8000\na=rtpmap:101 telephone-event/8000",
        );
        let (sd, info) = parsed(&only);
        assert_eq!(
            (info.codecs.as_slice(), info.telephone_event),
            (&[9, 101][..], Some(101))
        );
        let body = LegSdp::new().render(&sd, ip("10.0.0.1"), 20000);
        assert!(
            body.ends_with(
                "m=audio 20000 RTP/AVP 9 101\r\na=rtpmap:9 G722/8000\r\na=rtpmap:101 telephone-event/8000\r\n"
            ),
            "{body}"
        );

        // Narrowing an offer to one codec of it (as the IVR's answer does) keeps G.722.
        let (linphone_sd, _) = parsed(LINPHONE_OFFER);
        let keep = SdpInfo {
            codecs: vec![9, 100],
            telephone_event: Some(100),
            rtp: None,
            direction: Direction::SendRecv,
            savp: false,
            crypto: vec![],
        };
        let (narrowed, info) = restrict_answer(&linphone_sd, &keep).unwrap();
        assert_eq!(info.codecs, [9, 100]);
        assert!(LegSdp::new()
            .render(&narrowed, ip("10.0.0.1"), 20000)
            .contains("m=audio 20000 RTP/AVP 9 100\r\na=rtpmap:9 G722/8000\r\n"));

        // An answer of G.722 alone to a G.711-only offer has nothing in common.
        let (_, sipp) = parsed(SIPP_OFFER);
        assert_eq!(
            restrict_answer(&sd, &sipp).unwrap_err(),
            SdpError::NoCommonCodec
        );
    }

    #[test]
    fn answer_keeps_the_offers_m_line_count() {
        // A offers audio+video; B gets both m-lines (video disabled) and
        // answers both; A's answer again has both.
        let (a_offer_sd, a_offer) = parsed(LINPHONE_OFFER);
        let offer_to_b = LegSdp::new().render(&a_offer_sd, ip("10.0.0.1"), 20000);
        let (b_offer_sd, _) = parse(offer_to_b.as_bytes()).unwrap();
        assert_eq!(b_offer_sd.media_descriptions.len(), 2);

        let b_answer = "v=0
            o=bob 1 1 IN IP4 192.168.1.20
            s=-
            c=IN IP4 192.168.1.20
            t=0 0
            m=audio 8000 RTP/AVP 0 100
            a=rtpmap:0 PCMU/8000
            a=rtpmap:100 telephone-event/8000
            a=fmtp:100 0-16
            m=video 0 RTP/AVP 96";
        let (b_answer_sd, b_info) = parsed(b_answer);
        assert_eq!(b_info.rtp, Some("192.168.1.20:8000".parse().unwrap()));
        let (restricted, _) = restrict_answer(&b_answer_sd, &a_offer).unwrap();
        let to_a = LegSdp::new().render(&restricted, ip("10.0.0.1"), 20002);
        let (to_a_sd, to_a_info) = parse(to_a.as_bytes()).unwrap();
        assert_eq!(to_a_sd.media_descriptions.len(), 2);
        assert_eq!(to_a_info.codecs, [0, 100]);
        assert_eq!(to_a_info.rtp, Some("10.0.0.1:20002".parse().unwrap()));
    }
}
