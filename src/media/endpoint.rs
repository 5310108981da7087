//! A leg that Switchboard answers itself (the IVR): prompts are played into it and its
//! keys are heard, until the call is bridged and the ports move on to a relay.
//!
//! One task owns the leg's sockets, a [`Player`] and a [`DtmfDetector`]; the call task
//! drives it with [`EndpointHandle`] messages and hears [`EndpointEvent`]s. Every 20 ms the
//! player's frame is encoded into one reused packet buffer and sent; received packets are
//! parsed in place. Nothing is allocated per packet.
//!
//! Keys reach the detector from all three places a caller's phone may put them: RFC 4733
//! packets, SIP INFO bodies (handed over by the call task, which owns the dialog), and,
//! on a leg that negotiated no `telephone-event`, tones in the audio itself. A G.722 leg
//! runs at 16 kHz: prompts are encoded from 16 kHz frames (the RTP clock still advances
//! 160 per 20 ms, RFC 3551), and its audio is halved to 8 kHz for in-band detection.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::codec::{Codec, Decoder, Downsampler, Encoder, MAX_PAYLOAD, MAX_SAMPLES};
use super::dtmf::{inband, DtmfDetector};
use super::mixer::SampleRate;
use super::ports::MediaPorts;
use super::prompt::{Player, PlayerEvent, Playlist};
use super::recorder::Tape;
use super::rtcp::{LegRtcp, Sent};
use super::rtp_stats::ReceiveStats;
use super::srtp::Suite;

/// What the leg did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EndpointEvent {
    /// The caller pressed a key.
    Digit(char),
    /// The playlist started with this id played to its end.
    PlayFinished(u64),
    /// A recording ended (maximum length or silence); the file is complete.
    RecordingDone { seconds: f64 },
    /// No RTP from the leg for the time given to [`EndpointHandle::watch_media`].
    MediaTimeout,
}

/// A message being recorded from the leg (voicemail).
struct Recording {
    tape: Tape,
    /// Wall-clock limits too, so a caller who stops sending RTP still ends the message.
    started: Instant,
    last_sound: Instant,
    max: Duration,
    silence: Duration,
    samples: u64,
    max_samples: u64,
    silent_samples: u64,
    silence_samples: u64,
    rate: u32,
}

/// Below this mean absolute level a frame counts as silence (about −40 dBFS).
const SILENCE_LEVEL: i32 = 330;

enum Control {
    Play {
        id: u64,
        playlist: Playlist,
    },
    Stop,
    Record {
        tape: Tape,
        max: Duration,
        silence: Duration,
    },
    Release(oneshot::Sender<MediaPorts>),
    SipInfo {
        content_type: String,
        body: Vec<u8>,
    },
    Watch(Option<Duration>),
}

/// Controls a running endpoint.
pub struct EndpointHandle {
    ctl: mpsc::UnboundedSender<Control>,
}

impl EndpointHandle {
    /// Plays `playlist`, replacing whatever plays; `PlayFinished(id)` follows if it ends.
    pub fn play(&self, id: u64, playlist: Playlist) {
        let _ = self.ctl.send(Control::Play { id, playlist });
    }

    pub fn stop(&self) {
        let _ = self.ctl.send(Control::Stop);
    }

    /// Records what the leg says onto `tape` (a mono message at the leg's rate) until
    /// `max` or `silence`; `RecordingDone` follows once the file is complete.
    /// Dropping the endpoint mid-message completes the file too.
    pub fn record(&self, tape: Tape, max: Duration, silence: Duration) {
        let _ = self.ctl.send(Control::Record { tape, max, silence });
    }

    /// A SIP INFO request the leg's dialog received: a key press in an
    /// `application/dtmf-relay` or `application/dtmf` body is reported as a `Digit`
    /// (once, should the phone also send it as RFC 4733 events); other bodies are ignored.
    pub fn sip_info(&self, content_type: &str, body: &[u8]) {
        let _ = self.ctl.send(Control::SipInfo {
            content_type: content_type.to_string(),
            body: body.to_vec(),
        });
    }

    /// Reports [`EndpointEvent::MediaTimeout`] (once) when the leg sends no RTP for
    /// `timeout`, counted from now; `None` stops watching (the leg is on hold).
    pub fn watch_media(&self, timeout: Option<Duration>) {
        let _ = self.ctl.send(Control::Watch(timeout));
    }

    /// Ends the endpoint and hands its ports back (to bridge the leg through a relay).
    pub async fn release(self) -> Option<MediaPorts> {
        let (tx, rx) = oneshot::channel();
        self.ctl.send(Control::Release(tx)).ok()?;
        rx.await.ok()
    }
}

/// How the leg was negotiated.
#[derive(Debug, Clone, Copy)]
pub struct LegMedia {
    /// Where the leg's SDP says to send RTP (symmetric RTP may correct it).
    pub remote: Option<SocketAddr>,
    pub codec: Codec,
    /// The `telephone-event` payload type, if negotiated.
    pub telephone_event: Option<u8>,
}

const FRAME: Duration = Duration::from_millis(20);
/// How often the caller gets our RTCP report (RFC 3550's 5 s minimum).
const RTCP_INTERVAL: Duration = Duration::from_secs(5);
const HEADER: usize = 12;

pub fn spawn(
    ports: MediaPorts,
    media: LegMedia,
    events: mpsc::UnboundedSender<EndpointEvent>,
) -> EndpointHandle {
    let (ctl, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(ports, media, rx, events));
    EndpointHandle { ctl }
}

fn sample_rate(codec: Codec) -> SampleRate {
    SampleRate::from_hz(codec.sample_rate()).unwrap_or(SampleRate::Narrowband)
}

async fn run(
    mut ports: MediaPorts,
    media: LegMedia,
    mut ctl: mpsc::UnboundedReceiver<Control>,
    events: mpsc::UnboundedSender<EndpointEvent>,
) {
    let ssrc: u32 = rand::random();
    let mut seq: u16 = rand::random();
    let mut player = Player::new(
        sample_rate(media.codec),
        media.codec.clock_rate(),
        rand::random(),
    );
    let mut encoder = Encoder::new(media.codec);
    // Keys come as telephone-events on legs that negotiated them (every phone and most
    // trunks); only the others need their audio decoded and searched for tones.
    let tones = media.telephone_event.is_none();
    let mut dtmf = DtmfDetector::new(8000, tones);
    let mut decoder = Decoder::new(media.codec);
    let mut pcm = [0i16; MAX_SAMPLES];
    // The tone detector works at 8 kHz; a wideband leg's audio is halved first.
    let mut narrow = (media.codec.sample_rate() != inband::SAMPLE_RATE).then(Downsampler::new);
    let mut pcm8 = [0i16; MAX_SAMPLES / 2];
    let mut recording: Option<Recording> = None;
    let mut playing: Option<u64> = None;
    let mut latched: Option<SocketAddr> = None;
    // Room past the payload for an SRTP tag.
    let mut out = [0u8; HEADER + MAX_PAYLOAD + Suite::MAX_OVERHEAD];
    let mut inbuf = [0u8; 2048];
    let mut rtcp_buf = [0u8; 2048];
    let mut rtcp_out = [0u8; 2048];
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    // The media timeout: how long the leg may stay silent, and when it last sent RTP.
    let mut watch: Option<Duration> = None;
    let mut last_rtp = Instant::now();
    // RTCP, as a relay does it (see `media::rtcp`): what we sent, what we received,
    // the caller's last SR, and our report every five seconds.
    let mut sent = (0u32, 0u32, 0u32); // packets, payload octets, last RTP timestamp
    let mut reception = ReceiveStats::new();
    let mut rtcp = LegRtcp::new();
    let mut report =
        tokio::time::interval_at(tokio::time::Instant::now() + RTCP_INTERVAL, RTCP_INTERVAL);
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            msg = ctl.recv() => match msg {
                Some(Control::Play { id, playlist }) => {
                    player.play(playlist);
                    // A stop caused by the new playlist is not a finish of the old one.
                    while player.poll_event().is_some() {}
                    playing = Some(id);
                    if !player.is_playing() {
                        // An empty playlist finishes at once.
                        playing = None;
                        let _ = events.send(EndpointEvent::PlayFinished(id));
                    }
                }
                Some(Control::Stop) => {
                    player.stop();
                    while player.poll_event().is_some() {}
                    playing = None;
                }
                Some(Control::Record { tape, max, silence }) => {
                    let rate = media.codec.sample_rate();
                    let per_sec = u64::from(rate);
                    let now = Instant::now();
                    recording = Some(Recording {
                        tape,
                        started: now,
                        last_sound: now,
                        max,
                        silence,
                        samples: 0,
                        max_samples: max.as_millis() as u64 * per_sec / 1000,
                        silent_samples: 0,
                        silence_samples: silence.as_millis() as u64 * per_sec / 1000,
                        rate,
                    });
                }
                Some(Control::Release(reply)) => {
                    let _ = reply.send(ports);
                    return;
                }
                Some(Control::Watch(timeout)) => {
                    watch = timeout;
                    last_rtp = Instant::now();
                }
                Some(Control::SipInfo { content_type, body }) => {
                    if let Err(e) = dtmf.on_sip_info(Instant::now(), &content_type, &body) {
                        debug!(%content_type, error = %e, "INFO carries no key");
                    }
                    forward_digits(&mut dtmf, &events);
                }
                None => return,
            },
            _ = tick.tick() => {
                if watch.is_some_and(|limit| last_rtp.elapsed() >= limit) {
                    watch = None;
                    let _ = events.send(EndpointEvent::MediaTimeout);
                }
                let dest = latched.or(media.remote);
                if let Some(frame) = player.tick() {
                    if let Some(dest) = dest {
                        out[0] = 0x80;
                        out[1] = media.codec.payload_type() | if frame.marker { 0x80 } else { 0 };
                        out[2..4].copy_from_slice(&seq.to_be_bytes());
                        out[4..8].copy_from_slice(&frame.timestamp.to_be_bytes());
                        out[8..12].copy_from_slice(&ssrc.to_be_bytes());
                        let room = HEADER + MAX_PAYLOAD;
                        if let Ok(n) = encoder.encode(frame.samples, &mut out[HEADER..room]) {
                            if ports.send_rtp(&mut out, HEADER + n, dest).is_ok() {
                                sent.0 = sent.0.wrapping_add(1);
                                sent.1 = sent.1.wrapping_add(n as u32);
                                sent.2 = frame.timestamp;
                            }
                            seq = seq.wrapping_add(1);
                        }
                    }
                }
                if let Some(PlayerEvent::Finished) = player.poll_event() {
                    if let Some(id) = playing.take() {
                        let _ = events.send(EndpointEvent::PlayFinished(id));
                    }
                }
                if let Some(seconds) = recording.as_ref().and_then(Recording::timed_out) {
                    if let Some(rec) = recording.take() {
                        rec.done(seconds, &events);
                    }
                }
                if dtmf.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                    dtmf.on_timeout(Instant::now());
                    forward_digits(&mut dtmf, &events);
                }
            }
            r = ports.rtp.recv_from(&mut inbuf) => {
                let Ok((n, src)) = r else { continue };
                // An encrypted leg's packet must authenticate before anything else.
                let Ok(n) = ports.open_rtp(&mut inbuf[..n]) else { continue };
                // Symmetric RTP: answer where the caller really sends from.
                if latched.is_none() || Some(src) == media.remote {
                    if latched != Some(src) {
                        debug!(%src, "IVR leg latched");
                    }
                    latched = Some(src);
                } else if latched != Some(src) {
                    continue;
                }
                let pkt = &inbuf[..n];
                last_rtp = Instant::now();
                let Some(rtp) = crate::media::rtp::parse(pkt) else {
                    continue;
                };
                reception.on_packet(rtp.seq, rtp.timestamp, rtp.ssrc, last_rtp);
                let pt = rtp.payload_type;
                if rtp.payload.is_empty() {
                    continue;
                }
                let payload = rtp.payload;
                if pt == media.codec.payload_type() {
                    if recording.is_none() && !tones {
                        continue;
                    }
                    let Ok(count) = decoder.decode(payload, &mut pcm) else {
                        continue;
                    };
                    if let Some(rec) = &mut recording {
                        if let Some(seconds) = rec.add(&pcm[..count]) {
                            if let Some(rec) = recording.take() {
                                rec.done(seconds, &events);
                            }
                        }
                    }
                    if tones {
                        let audio = match &mut narrow {
                            Some(down) => match down.process(&pcm[..count], &mut pcm8) {
                                Ok(n) => &pcm8[..n],
                                Err(_) => continue,
                            },
                            None => &pcm[..count],
                        };
                        dtmf.on_audio(Instant::now(), audio);
                        forward_digits(&mut dtmf, &events);
                    }
                    continue;
                }
                if Some(pt) != media.telephone_event {
                    continue;
                }
                let marker = pkt[1] & 0x80 != 0;
                let ts = u32::from_be_bytes([pkt[4], pkt[5], pkt[6], pkt[7]]);
                let pssrc = u32::from_be_bytes([pkt[8], pkt[9], pkt[10], pkt[11]]);
                let _ = dtmf.on_telephone_event(Instant::now(), pssrc, ts, marker, payload);
                forward_digits(&mut dtmf, &events);
            }
            // RTCP is read and dropped so the socket buffer never fills.
            r = ports.rtcp.recv_from(&mut rtcp_buf) => {
                if let Ok((n, _)) = r {
                    if let Ok(n) = ports.open_rtcp(&mut rtcp_buf[..n]) {
                        rtcp.on_packet(&rtcp_buf[..n], Instant::now());
                    }
                }
            }
            _ = report.tick() => {
                // To the RTCP port beside the caller's RTP (RFC 3550 §11).
                let Some(dest) = latched.or(media.remote) else { continue };
                let dest = SocketAddr::new(dest.ip(), dest.port().wrapping_add(1));
                let (packets, octets, ts) = sent;
                let ours = (packets > 0).then_some(Sent { packets, octets, rtp_time: ts });
                let block = reception.report_block();
                let now = Instant::now();
                if let Some(bytes) = rtcp.report(ssrc, ours, block, now, std::time::SystemTime::now()) {
                    if let Some(room) = rtcp_out.get_mut(..bytes.len()) {
                        room.copy_from_slice(&bytes);
                        let _ = ports.send_rtcp(&mut rtcp_out, bytes.len(), dest);
                    }
                }
            }
        }
    }
}

impl Recording {
    /// The message is over by the clock (no packets at all, or too long): its length.
    fn timed_out(&self) -> Option<f64> {
        let quiet = self.silence > Duration::ZERO && self.last_sound.elapsed() >= self.silence;
        let long = self.started.elapsed() >= self.max + FRAME * 5;
        (quiet || long).then(|| self.samples as f64 / f64::from(self.rate))
    }

    /// Appends a frame; returns the message length once it is over (max or silence).
    fn add(&mut self, frame: &[i16]) -> Option<f64> {
        if let Err(e) = self.tape.write_mono(frame) {
            tracing::warn!(file = %self.tape.path().display(), error = %e, "cannot record");
            return Some(0.0);
        }
        self.samples += frame.len() as u64;
        let level =
            frame.iter().map(|s| i32::from(*s).abs()).sum::<i32>() / frame.len().max(1) as i32;
        if level < SILENCE_LEVEL {
            self.silent_samples += frame.len() as u64;
        } else {
            self.silent_samples = 0;
            self.last_sound = Instant::now();
        }
        let done = self.samples >= self.max_samples
            || (self.silence_samples > 0 && self.silent_samples >= self.silence_samples);
        if !done {
            return None;
        }
        Some(self.samples as f64 / f64::from(self.rate))
    }

    /// Completes the file off the media task, then reports the message.
    fn done(self, seconds: f64, events: &mpsc::UnboundedSender<EndpointEvent>) {
        let events = events.clone();
        let finishing = self.tape.finish();
        tokio::spawn(async move {
            let seconds = match finishing.await {
                Ok(_) => seconds,
                Err(e) => {
                    tracing::warn!(error = %e, "the message could not be recorded");
                    0.0
                }
            };
            let _ = events.send(EndpointEvent::RecordingDone { seconds });
        });
    }
}

fn forward_digits(dtmf: &mut DtmfDetector, events: &mpsc::UnboundedSender<EndpointEvent>) {
    while let Some(d) = dtmf.poll() {
        let _ = events.send(EndpointEvent::Digit(d.digit.key.as_char()));
    }
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::sync::Arc;

    use tokio::net::UdpSocket;

    use super::*;
    use crate::media::dtmf::inband::tests::dual_tone;
    use crate::media::dtmf::{Key, TelephoneEvent};
    use crate::media::ports::{tests::free_range, PortPool};

    const LOCALHOST: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);
    const ALL_KEYS: &str = "0123456789*#ABCD";

    struct Leg {
        handle: EndpointHandle,
        events: mpsc::UnboundedReceiver<EndpointEvent>,
        /// The phone's side of the leg.
        peer: UdpSocket,
        /// The endpoint's RTP address.
        ours: SocketAddr,
    }

    #[tokio::test]
    async fn the_caller_gets_our_rtcp_report_beside_its_rtp_port() {
        let low = free_range(2);
        let ports = PortPool::new(LOCALHOST, low, low + 1).allocate().unwrap();
        let ours = SocketAddr::new(LOCALHOST, ports.port());
        // The phone: RTP on an even port, RTCP on the next.
        let phone_port = free_range(1);
        let peer = UdpSocket::bind((LOCALHOST, phone_port)).await.unwrap();
        let peer_rtcp = UdpSocket::bind((LOCALHOST, phone_port + 1)).await.unwrap();
        let (tx, _events) = mpsc::unbounded_channel();
        let media = LegMedia {
            remote: Some(peer.local_addr().unwrap()),
            codec: Codec::Pcmu,
            telephone_event: Some(101),
        };
        let handle = spawn(ports, media, tx);
        handle.play(1, Playlist::new().then(Arc::from(vec![0i16; 8000])));
        for seq in 0..5u16 {
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x12, 0x34];
            p[2..4].copy_from_slice(&seq.to_be_bytes());
            p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
            p.extend_from_slice(&[0xff; 160]);
            peer.send_to(&p, ours).await.unwrap();
        }
        let mut buf = [0u8; 1500];
        let (n, from) = tokio::time::timeout(Duration::from_secs(8), peer_rtcp.recv_from(&mut buf))
            .await
            .expect("no RTCP report")
            .unwrap();
        assert_eq!(from.port(), ours.port() + 1);
        let mut bytes = &buf[..n];
        let packets = rtc_rtcp::packet::unmarshal(&mut bytes).unwrap();
        let sr = packets[0]
            .as_any()
            .downcast_ref::<rtc_rtcp::sender_report::SenderReport>()
            .expect("an SR: we have been playing to it");
        // The one-second prompt: 50 packets of 160 bytes.
        assert_eq!((sr.packet_count, sr.octet_count), (50, 8000), "{sr:?}");
        assert_eq!(sr.reports[0].ssrc, 0x1234);
        assert_eq!(sr.reports[0].last_sequence_number, 4);
    }

    #[tokio::test]
    async fn a_silent_leg_is_reported_once_at_the_media_timeout_and_a_talking_one_is_not() {
        let mut leg = leg(Codec::Pcmu, Some(101)).await;
        leg.handle.watch_media(Some(Duration::from_millis(300)));
        // Talking: a packet every 20 ms for 0.6 s keeps the watch quiet.
        for i in 0..30u16 {
            let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
            p[2..4].copy_from_slice(&i.to_be_bytes());
            p.extend_from_slice(&[0xff; 160]);
            leg.peer.send_to(&p, leg.ours).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        while let Ok(ev) = leg.events.try_recv() {
            assert_ne!(ev, EndpointEvent::MediaTimeout, "reported while talking");
        }
        // Silence: reported once, shortly after the limit.
        let ev = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match leg.events.recv().await {
                    Some(EndpointEvent::MediaTimeout) => return,
                    Some(_) => continue,
                    None => panic!("endpoint gone"),
                }
            }
        })
        .await;
        assert!(ev.is_ok(), "no media timeout");
        tokio::time::sleep(Duration::from_millis(500)).await;
        while let Ok(ev) = leg.events.try_recv() {
            assert_ne!(ev, EndpointEvent::MediaTimeout, "reported twice");
        }
    }

    async fn leg(codec: Codec, telephone_event: Option<u8>) -> Leg {
        let low = free_range(1);
        let ports = PortPool::new(LOCALHOST, low, low + 1).allocate().unwrap();
        let ours = SocketAddr::new(LOCALHOST, ports.port());
        let peer = UdpSocket::bind((LOCALHOST, 0)).await.unwrap();
        let (tx, events) = mpsc::unbounded_channel();
        let media = LegMedia {
            remote: Some(peer.local_addr().unwrap()),
            codec,
            telephone_event,
        };
        Leg {
            handle: spawn(ports, media, tx),
            events,
            peer,
            ours,
        }
    }

    fn rtp(pt: u8, marker: bool, seq: u16, ts: u32, payload: &[u8]) -> Vec<u8> {
        let mut p = vec![0x80, pt | if marker { 0x80 } else { 0 }];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&ts.to_be_bytes());
        p.extend_from_slice(&0x1234_5678u32.to_be_bytes());
        p.extend_from_slice(payload);
        p
    }

    /// The keys reported within `wait` of the last one (or of the start).
    async fn digits(events: &mut mpsc::UnboundedReceiver<EndpointEvent>, wait: Duration) -> String {
        let mut keys = String::new();
        while let Ok(Some(ev)) = tokio::time::timeout(wait, events.recv()).await {
            if let EndpointEvent::Digit(d) = ev {
                keys.push(d);
            }
        }
        keys
    }

    /// Each key as 100 ms of its tones (-10 dBm0 each) and 100 ms of silence, at `hz`.
    fn keypad_audio(keys: &str, hz: u32) -> Vec<i16> {
        let len = hz as usize / 10;
        let mut audio = Vec::new();
        for c in keys.chars() {
            let key = Key::from_char(c).unwrap();
            if hz == 8000 {
                audio.extend(dual_tone(key, -10.0, len));
            } else {
                let (row, col) = key.frequencies();
                let amplitude = inband::DBM0_PEAK * 10f32.powf(-10.0 / 20.0);
                audio.extend((0..len).map(|n| {
                    let t = n as f32 / hz as f32;
                    let v = (std::f32::consts::TAU * row * t).sin()
                        + (std::f32::consts::TAU * col * t).sin();
                    (amplitude * v) as i16
                }));
            }
            audio.extend(std::iter::repeat_n(0, len));
        }
        audio
    }

    /// Sends `audio` as 20 ms packets of `codec`, as a phone would.
    async fn send_audio(leg: &Leg, codec: Codec, audio: &[i16]) {
        let mut encoder = Encoder::new(codec);
        let mut payload = [0u8; MAX_PAYLOAD];
        for (i, frame) in audio.chunks(codec.samples_per_frame()).enumerate() {
            let n = encoder.encode(frame, &mut payload).unwrap();
            let packet = rtp(
                codec.payload_type(),
                i == 0,
                i as u16,
                i as u32 * 160,
                &payload[..n],
            );
            leg.peer.send_to(&packet, leg.ours).await.unwrap();
            // Loopback keeps up easily, but not with an unbounded burst.
            if i % 10 == 9 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }

    #[tokio::test]
    async fn every_key_is_heard_in_band_on_a_leg_without_telephone_event() {
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722] {
            let mut leg = leg(codec, None).await;
            send_audio(&leg, codec, &keypad_audio(ALL_KEYS, codec.sample_rate())).await;
            assert_eq!(
                digits(&mut leg.events, Duration::from_millis(500)).await,
                ALL_KEYS,
                "{codec:?}"
            );
        }
    }

    #[tokio::test]
    async fn tones_are_not_searched_for_when_telephone_event_was_negotiated() {
        let mut leg = leg(Codec::Pcmu, Some(101)).await;
        send_audio(&leg, Codec::Pcmu, &keypad_audio("123", 8000)).await;
        assert_eq!(
            digits(&mut leg.events, Duration::from_millis(300)).await,
            ""
        );
    }

    #[tokio::test]
    async fn every_key_is_heard_as_telephone_events() {
        let mut leg = leg(Codec::G722, Some(101)).await;
        let mut seq = 0u16;
        for (i, c) in ALL_KEYS.chars().enumerate() {
            let ts = 1000 + i as u32 * 1600;
            let key = Key::from_char(c).unwrap();
            // Start, one update, three ends, as phones send them.
            for (n, (end, duration)) in [
                (false, 400),
                (false, 800),
                (true, 800),
                (true, 800),
                (true, 800),
            ]
            .into_iter()
            .enumerate()
            {
                let event = TelephoneEvent {
                    event: key.event(),
                    end,
                    volume: 10,
                    duration,
                };
                let packet = rtp(101, n == 0, seq, ts, &event.to_bytes());
                seq = seq.wrapping_add(1);
                leg.peer.send_to(&packet, leg.ours).await.unwrap();
            }
        }
        assert_eq!(
            digits(&mut leg.events, Duration::from_millis(500)).await,
            ALL_KEYS
        );
    }

    #[tokio::test]
    async fn every_key_is_heard_from_sip_info_bodies() {
        let mut leg = leg(Codec::Pcmu, Some(101)).await;
        for (i, c) in ALL_KEYS.chars().enumerate() {
            if i % 2 == 0 {
                let body = format!("Signal={c}\r\nDuration=160\r\n");
                leg.handle
                    .sip_info("application/dtmf-relay", body.as_bytes());
            } else {
                leg.handle
                    .sip_info("application/dtmf", c.to_string().as_bytes());
            }
        }
        // Not a key: ignored, and the endpoint carries on.
        leg.handle.sip_info("application/dtmf-relay", b"Signal=E");
        leg.handle
            .sip_info("application/media_control+xml", b"<x/>");
        leg.handle.sip_info("application/dtmf", b"5");
        assert_eq!(
            digits(&mut leg.events, Duration::from_millis(300)).await,
            format!("{ALL_KEYS}5")
        );
    }

    /// The packets the endpoint sends for `playlist`: (payload type, seq, timestamp,
    /// payload), in sending order.
    async fn played(leg: &mut Leg, playlist: Playlist) -> Vec<(u8, u16, u32, Vec<u8>)> {
        leg.handle.play(7, playlist);
        let mut packets = Vec::new();
        let mut buf = [0u8; 2048];
        let mut finished = false;
        loop {
            // Once the play is over, only what is already on its way is left to read.
            let quiet = Duration::from_millis(if finished { 100 } else { 2000 });
            tokio::select! {
                r = tokio::time::timeout(quiet, leg.peer.recv_from(&mut buf)) => {
                    let Ok(r) = r else {
                        assert!(finished, "the endpoint went quiet before the play finished");
                        return packets;
                    };
                    let (n, _) = r.unwrap();
                    let p = &buf[..n];
                    packets.push((
                        p[1] & 0x7f,
                        u16::from_be_bytes([p[2], p[3]]),
                        u32::from_be_bytes([p[4], p[5], p[6], p[7]]),
                        p[HEADER..].to_vec(),
                    ));
                }
                ev = leg.events.recv(), if !finished => {
                    finished = ev == Some(EndpointEvent::PlayFinished(7));
                }
            }
        }
    }

    /// The strongest frequency of `pcm` at `hz`, to 1 Hz, from zero crossings.
    fn pitch(pcm: &[i16], hz: u32) -> f64 {
        let crossings: Vec<usize> = pcm
            .windows(2)
            .enumerate()
            .filter(|(_, w)| w[0] < 0 && w[1] >= 0)
            .map(|(i, _)| i)
            .collect();
        let (first, last) = (crossings[0], *crossings.last().unwrap());
        (crossings.len() - 1) as f64 * f64::from(hz) / (last - first) as f64
    }

    #[tokio::test]
    async fn prompts_are_encoded_at_the_codecs_rate() {
        for codec in [Codec::Pcmu, Codec::Pcma, Codec::G722] {
            let hz = codec.sample_rate();
            // 200 ms of 1 kHz at the leg's rate, as the prompt cache decodes it.
            let tone: Arc<[i16]> = (0..hz / 5)
                .map(|n| {
                    ((n as f32 * 1000.0 * std::f32::consts::TAU / hz as f32).sin() * 8000.0) as i16
                })
                .collect();
            let mut leg = leg(codec, Some(101)).await;
            // The endpoint answers where the phone sends from (symmetric RTP).
            leg.peer
                .send_to(&rtp(101, false, 0, 0, &[]), leg.ours)
                .await
                .unwrap();
            let packets = played(&mut leg, Playlist::new().then(tone)).await;
            assert_eq!(packets.len(), 10, "{codec:?}: 200 ms in 20 ms packets");
            let mut decoder = Decoder::new(codec);
            let mut pcm = Vec::new();
            for (i, (pt, seq, ts, payload)) in packets.iter().enumerate() {
                assert_eq!(*pt, codec.payload_type());
                // 160 bytes of payload for 20 ms whatever the codec; the clock runs at
                // 8 kHz even for G.722's 16 kHz audio.
                assert_eq!(payload.len(), 160, "{codec:?}");
                assert_eq!(*seq, packets[0].1.wrapping_add(i as u16));
                assert_eq!(*ts, packets[0].2.wrapping_add(160 * i as u32), "{codec:?}");
                let mut frame = [0i16; MAX_SAMPLES];
                let n = decoder.decode(payload, &mut frame).unwrap();
                assert_eq!(n, codec.samples_per_frame());
                pcm.extend_from_slice(&frame[..n]);
            }
            // Past the codec's start-up (G.722's filters delay and ramp the first ms).
            let f = pitch(&pcm[pcm.len() / 4..], hz);
            assert!((f - 1000.0).abs() < 10.0, "{codec:?}: {f} Hz");
        }
    }
}
