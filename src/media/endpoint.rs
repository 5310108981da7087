//! A leg that Switchboard answers itself (the IVR): prompts are played into it and its
//! keys are heard, until the call is bridged and the ports move on to a relay.
//!
//! One task owns the leg's sockets, a [`Player`] and a [`DtmfDetector`]; the call task
//! drives it with [`EndpointHandle`] messages and hears [`EndpointEvent`]s. Every 20 ms the
//! player's frame is encoded into one reused packet buffer and sent; received packets are
//! parsed in place. Nothing is allocated per packet.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tracing::debug;

use super::codec::{Codec, Encoder, MAX_PAYLOAD};
use super::dtmf::DtmfDetector;
use super::mixer::SampleRate;
use super::ports::MediaPorts;
use super::prompt::{Player, PlayerEvent, Playlist};

/// What the leg did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum EndpointEvent {
    /// The caller pressed a key.
    Digit(char),
    /// The playlist started with this id played to its end.
    PlayFinished(u64),
    /// A recording ended (maximum length or silence); the file is complete.
    RecordingDone { seconds: f64 },
}

/// A message being recorded from the leg (voicemail).
struct Recording {
    writer: hound::WavWriter<std::io::BufWriter<std::fs::File>>,
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
        path: std::path::PathBuf,
        max: Duration,
        silence: Duration,
    },
    Release(oneshot::Sender<MediaPorts>),
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

    /// Records what the leg says into a mono WAV at `path` until `max` or `silence`;
    /// `RecordingDone` follows. Dropping the endpoint mid-message completes the file.
    pub fn record(&self, path: std::path::PathBuf, max: Duration, silence: Duration) {
        let _ = self.ctl.send(Control::Record { path, max, silence });
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
    ports: MediaPorts,
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
    // Only in-band detection needs decoded audio; legs that negotiated telephone-event
    // (every phone and trunk in practice) are heard through it.
    let mut dtmf = DtmfDetector::new(8000, false);
    let mut decoder = super::codec::Decoder::new(media.codec);
    let mut pcm = [0i16; super::codec::MAX_SAMPLES];
    let mut recording: Option<Recording> = None;
    let mut playing: Option<u64> = None;
    let mut latched: Option<SocketAddr> = None;
    let mut out = [0u8; HEADER + MAX_PAYLOAD];
    let mut inbuf = [0u8; 2048];
    let mut rtcp_buf = [0u8; 2048];
    let mut tick = tokio::time::interval(FRAME);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
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
                Some(Control::Record { path, max, silence }) => {
                    let rate = media.codec.sample_rate();
                    let spec = hound::WavSpec {
                        channels: 1,
                        sample_rate: rate,
                        bits_per_sample: 16,
                        sample_format: hound::SampleFormat::Int,
                    };
                    let made = path
                        .parent()
                        .map(std::fs::create_dir_all)
                        .unwrap_or(Ok(()))
                        .map_err(hound::Error::IoError)
                        .and_then(|_| hound::WavWriter::create(&path, spec));
                    match made {
                        Ok(writer) => {
                            let per_sec = u64::from(rate);
                            let now = Instant::now();
                            recording = Some(Recording {
                                writer,
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
                        Err(e) => {
                            tracing::warn!(file = %path.display(), error = %e, "cannot record");
                            let _ = events.send(EndpointEvent::RecordingDone { seconds: 0.0 });
                        }
                    }
                }
                Some(Control::Release(reply)) => {
                    let _ = reply.send(ports);
                    return;
                }
                None => return,
            },
            _ = tick.tick() => {
                let dest = latched.or(media.remote);
                if let Some(frame) = player.tick() {
                    if let Some(dest) = dest {
                        out[0] = 0x80;
                        out[1] = media.codec.payload_type() | if frame.marker { 0x80 } else { 0 };
                        out[2..4].copy_from_slice(&seq.to_be_bytes());
                        out[4..8].copy_from_slice(&frame.timestamp.to_be_bytes());
                        out[8..12].copy_from_slice(&ssrc.to_be_bytes());
                        if let Ok(n) = encoder.encode(frame.samples, &mut out[HEADER..]) {
                            let _ = ports.rtp.try_send_to(&out[..HEADER + n], dest);
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
                    recording = None;
                    let _ = events.send(EndpointEvent::RecordingDone { seconds });
                }
                if dtmf.poll_timeout().is_some_and(|t| t <= Instant::now()) {
                    dtmf.on_timeout(Instant::now());
                    forward_digits(&mut dtmf, &events);
                }
            }
            r = ports.rtp.recv_from(&mut inbuf) => {
                let Ok((n, src)) = r else { continue };
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
                if n < HEADER || pkt[0] >> 6 != 2 {
                    continue;
                }
                let pt = pkt[1] & 0x7f;
                let csrc = usize::from(pkt[0] & 0x0f) * 4;
                // Skip a header extension (X bit) and trim padding (P bit).
                let mut start = HEADER + csrc;
                if pkt[0] & 0x10 != 0 {
                    if n < start + 4 {
                        continue;
                    }
                    let words = usize::from(u16::from_be_bytes([pkt[start + 2], pkt[start + 3]]));
                    start += 4 + words * 4;
                }
                let mut end = n;
                if pkt[0] & 0x20 != 0 {
                    end = end.saturating_sub(usize::from(pkt[n - 1]));
                }
                if start >= end {
                    continue;
                }
                let payload = &pkt[start..end];
                if pt == media.codec.payload_type() {
                    if let Some(rec) = &mut recording {
                        let Ok(count) = decoder.decode(payload, &mut pcm) else {
                            continue;
                        };
                        if let Some(seconds) = rec.add(&pcm[..count]) {
                            recording = None;
                            let _ = events.send(EndpointEvent::RecordingDone { seconds });
                        }
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
            _ = ports.rtcp.recv_from(&mut rtcp_buf) => {}
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
        for &s in frame {
            let _ = self.writer.write_sample(s);
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
        let _ = self.writer.flush();
        Some(self.samples as f64 / f64::from(self.rate))
    }
}

fn forward_digits(dtmf: &mut DtmfDetector, events: &mpsc::UnboundedSender<EndpointEvent>) {
    while let Some(d) = dtmf.poll() {
        let _ = events.send(EndpointEvent::Digit(d.digit.key.as_char()));
    }
}
