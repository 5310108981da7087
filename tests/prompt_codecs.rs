//! Prompts over every codec, end to end: a 1 kHz tone of one second in each prompt
//! format (WAV, MP3, FLAC, OGG Vorbis, all at 44.1 kHz) is played by a flow to a SIPp
//! caller that offers exactly one of PCMU, PCMA and G.722. What the server sends is
//! captured on loopback, decoded with the library's codecs and judged: the right
//! payload type and RTP clock (160 ticks per 20 ms, G.722 included), the tone's pitch
//! within 1 % (wrong rates show up as wrong pitch), its length within 20 ms of the
//! file's (wrong rates or lost or repeated frames show up as wrong length), and the
//! packets paced in real time. The twelve calls run at once against one server.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::rtp::Rtp;
use common::*;
use switchboard::media::codec::{Codec, Decoder, MAX_SAMPLES};

/// The fixtures' tone.
const TONE_HZ: f64 = 1000.0;
const TONE_SECS: f64 = 1.0;

/// Prompt formats, each played by its own flow on its own DID.
const FORMATS: [(&str, &str); 4] = [
    ("wav", "201"),
    ("mp3", "202"),
    ("flac", "203"),
    ("ogg", "204"),
];
const CODECS: [(Codec, &str); 3] = [
    (Codec::Pcmu, "PCMU"),
    (Codec::Pcma, "PCMA"),
    (Codec::G722, "G722"),
];

fn repo(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(path)
}

/// `en/tone.{wav,mp3,flac,ogg}` under a new prompt root: the committed fixtures
/// (SoX cannot write MP3 here), and a WAV made the same way (44.1 kHz, half scale).
fn prompt_root(dir: &Path) -> PathBuf {
    let root = dir.join("prompts");
    let en = root.join("en");
    std::fs::create_dir_all(&en).unwrap();
    for ext in ["mp3", "flac", "ogg"] {
        let fixture = repo(&format!("tests/fixtures/audio/tone-1khz-44k1.{ext}"));
        std::fs::copy(&fixture, en.join(format!("tone.{ext}")))
            .unwrap_or_else(|e| panic!("{}: {e}", fixture.display()));
    }
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut wav = hound::WavWriter::create(en.join("tone.wav"), spec).unwrap();
    for n in 0..(44_100.0 * TONE_SECS) as u32 {
        let t = f64::from(n) / 44_100.0;
        let v = 0.5 * (std::f64::consts::TAU * TONE_HZ * t).sin();
        wav.write_sample((v * 32767.0).round() as i16).unwrap();
    }
    wav.finalize().unwrap();
    root
}

/// One flow per format: play the tone, then hang up.
fn flows(dir: &Path) -> PathBuf {
    let flows = dir.join("flows");
    std::fs::create_dir_all(&flows).unwrap();
    for (ext, _) in FORMATS {
        let flow = format!(
            "name: play_{ext}\nentry: tone\nprompts: en\nnodes:\n  tone:\n    play:\n      \
             prompts: [tone.{ext}]\n      next: bye\n  bye:\n    hangup: {{}}\n"
        );
        std::fs::write(flows.join(format!("play_{ext}.yaml")), flow).unwrap();
    }
    flows
}

/// The audio of one call, as the caller received it.
struct Heard {
    /// Decoded samples at the codec's rate, in sequence order.
    pcm: Vec<i16>,
    /// Arrival time of the first and the last packet (seconds).
    first_at: f64,
    last_at: f64,
    packets: usize,
}

/// Reads the RTP stream sent to `port`: one SSRC, the codec's payload type, no gaps,
/// timestamps advancing 160 per packet; decodes it.
fn heard(packets: &[CapturedPacket], port: u16, codec: Codec) -> Result<Heard, String> {
    let mut stream: Vec<(f64, Rtp)> = packets
        .iter()
        .filter(|p| p.dst_port == port)
        .filter_map(|p| Rtp::parse(&p.payload).map(|rtp| (p.at, rtp)))
        .collect();
    let Some((_, first)) = stream.first().cloned() else {
        return Err("no RTP arrived".into());
    };
    if let Some((_, odd)) = stream
        .iter()
        .find(|(_, r)| r.payload_type != codec.payload_type() || r.ssrc != first.ssrc)
    {
        return Err(format!(
            "payload type {} / SSRC {:#x} among packets of type {} / SSRC {:#x}",
            odd.payload_type,
            odd.ssrc,
            codec.payload_type(),
            first.ssrc
        ));
    }
    stream.sort_by_key(|(_, r)| r.seq.wrapping_sub(first.seq));
    let (first_at, last_at) = stream
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), (at, _)| {
            (lo.min(*at), hi.max(*at))
        });
    let mut decoder = Decoder::new(codec);
    let mut frame = [0i16; MAX_SAMPLES];
    let mut pcm = Vec::new();
    for (i, (_, rtp)) in stream.iter().enumerate() {
        let seq = rtp.seq.wrapping_sub(first.seq);
        if usize::from(seq) != i {
            return Err(format!(
                "packet {i} has sequence offset {seq}: lost or repeated"
            ));
        }
        let ticks = rtp.timestamp.wrapping_sub(first.timestamp);
        if ticks != 160 * i as u32 {
            return Err(format!(
                "packet {i} is {ticks} RTP ticks after the first, not {} (8 kHz clock, 20 ms)",
                160 * i
            ));
        }
        let n = decoder
            .decode(&rtp.payload, &mut frame)
            .map_err(|e| format!("packet {i}: {e}"))?;
        if n != codec.samples_per_frame() {
            return Err(format!("packet {i} holds {n} samples, not 20 ms"));
        }
        pcm.extend_from_slice(&frame[..n]);
    }
    Ok(Heard {
        pcm,
        first_at,
        last_at,
        packets: stream.len(),
    })
}

/// Goertzel power of `hz` in `x` at `rate`, normalised so that a sine of amplitude
/// `a` filling the block gives `a²/2`.
fn tone_power(x: &[f64], hz: f64, rate: f64) -> f64 {
    let coeff = 2.0 * (std::f64::consts::TAU * hz / rate).cos();
    let (mut s1, mut s2) = (0.0, 0.0);
    for &v in x {
        let s0 = v + coeff * s1 - s2;
        s2 = s1;
        s1 = s0;
    }
    let power = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    2.0 * power / (x.len() as f64).powi(2)
}

/// The dominant frequency of `x`: a 10 Hz grid over the whole band on 100 ms blocks
/// (power summed over blocks), refined to 0.1 Hz on the whole signal.
fn dominant_hz(x: &[f64], rate: f64) -> f64 {
    let block = (rate / 10.0) as usize;
    let blocks_power =
        |hz: f64| -> f64 { x.chunks_exact(block).map(|b| tone_power(b, hz, rate)).sum() };
    let loudest = |candidates: Vec<f64>, power: &dyn Fn(f64) -> f64| {
        candidates
            .into_iter()
            .map(|hz| (hz, power(hz)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .unwrap()
            .0
    };
    let coarse = loudest(
        (5..(rate / 20.0) as usize)
            .map(|k| k as f64 * 10.0)
            .collect(),
        &blocks_power,
    );
    loudest(
        (-150..=150).map(|k| coarse + f64::from(k) / 10.0).collect(),
        &|hz| tone_power(x, hz, rate),
    )
}

/// Everything wrong with what one call heard (empty when all is right).
fn judge(heard: &Heard, codec: Codec) -> Vec<String> {
    let rate = f64::from(codec.sample_rate());
    let x: Vec<f64> = heard.pcm.iter().map(|&s| f64::from(s) / 32768.0).collect();
    let mut wrong = Vec::new();
    // The tone is where the signal is loud: the file's half-scale sine, against codec
    // noise and decoder start-up (and an MP3's priming silence) far below.
    let loud = |v: &f64| v.abs() > 0.1;
    let (Some(start), Some(end)) = (x.iter().position(loud), x.iter().rposition(loud)) else {
        return vec!["no audio in the stream".into()];
    };
    let tone = &x[start..=end];
    let secs = tone.len() as f64 / rate;
    if (secs - TONE_SECS).abs() > 0.02 {
        wrong.push(format!(
            "the tone lasts {secs:.3} s, the file {TONE_SECS} s"
        ));
    }
    let hz = dominant_hz(tone, rate);
    if (hz - TONE_HZ).abs() > TONE_HZ * 0.01 {
        wrong.push(format!(
            "the tone is at {hz:.1} Hz, the file's at {TONE_HZ} Hz"
        ));
    }
    let block = (rate / 10.0) as usize;
    let (tone_sum, all_sum): (f64, f64) = tone
        .chunks_exact(block)
        .map(|b| {
            let mean_square = b.iter().map(|v| v * v).sum::<f64>() / b.len() as f64;
            (tone_power(b, hz, rate), mean_square)
        })
        .fold((0.0, 0.0), |(t, a), (bt, ba)| (t + bt, a + ba));
    let share = tone_sum / all_sum;
    if share < 0.9 {
        wrong.push(format!(
            "the tone is only {:.0} % of the power",
            share * 100.0
        ));
    }
    // Sent in real time: 20 ms apart (one packet's worth of tolerance each way for
    // scheduling, plus 15 %).
    let nominal = (heard.packets - 1) as f64 * 0.020;
    let span = heard.last_at - heard.first_at;
    if !(nominal * 0.85 - 0.02..=nominal * 1.15 + 0.02).contains(&span) {
        wrong.push(format!(
            "{} packets took {span:.3} s to arrive, not about {nominal:.3} s",
            heard.packets
        ));
    }
    wrong
}

#[test]
fn prompts_in_every_format_play_at_pitch_and_speed_over_every_codec() {
    require_pcap();
    let work = tempfile::tempdir().unwrap();
    let server = Server::start_with(ServerConfig {
        dids: Vec::new(),
        flow_dids: FORMATS
            .iter()
            .map(|(ext, did)| (did.to_string(), format!("play_{ext}")))
            .collect(),
        ivr: Some((flows(work.path()), prompt_root(work.path()))),
        ..ServerConfig::default()
    });
    let (lo, hi) = server.rtp_ports;
    let capture =
        Capture::start_payloads(work.path(), &format!("udp and src portrange {lo}-{hi}"), 90);

    // Every (format, codec) pair at once, each caller on its own media port.
    let calls: Vec<_> = FORMATS
        .iter()
        .flat_map(|f| CODECS.iter().map(move |c| (*f, *c)))
        .map(|((ext, did), (codec, name))| {
            let media_port = alloc_ports(4);
            let pt = codec.payload_type().to_string();
            let caller = Sipp::new("uac_codec_wait_bye.xml")
                .service(did)
                .media_port(media_port)
                .args(&["-key", "pt", &pt, "-key", "codec", name])
                .timeout_secs(30)
                .spawn(&server);
            (ext, codec, name, media_port, caller)
        })
        .collect();
    let calls: Vec<_> = calls
        .into_iter()
        .map(|(ext, codec, name, port, caller)| {
            let run = caller.wait(Duration::from_secs(45));
            run.assert_ok(&server, &format!("{ext} prompt over {name}"));
            // We answered with the one codec offered.
            let ok = &run.received("SIP/2.0 200")[0];
            let m_line = format!(
                "m=audio {} RTP/AVP {}",
                sdp_audio(ok).unwrap().1,
                codec.payload_type()
            );
            assert!(ok.contains(&m_line), "{ext} over {name}: answer\n{ok}");
            (ext, codec, name, port)
        })
        .collect();
    let records = server.wait_for_calls(calls.len(), Duration::from_secs(10));
    let packets = capture.finish_packets();
    assert_eq!(records.len(), calls.len(), "{records:#?}");
    for r in &records {
        assert_eq!(
            r.hangup_by.as_deref(),
            Some("switchboard"),
            "the flow hung up: {r:#?}"
        );
    }

    let mut failures = Vec::new();
    for (ext, codec, name, port) in calls {
        match heard(&packets, port, codec) {
            Ok(h) => failures.extend(
                judge(&h, codec)
                    .into_iter()
                    .map(|why| format!("{ext} over {name}: {why}")),
            ),
            Err(why) => failures.push(format!("{ext} over {name}: {why}")),
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
