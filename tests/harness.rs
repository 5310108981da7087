//! Checks of the test harness itself, on synthetic input: the tone analysis of
//! `common::audio` (WAVs written here with hound) and the reading of baresip's
//! log in `common::phone`. No server, no external tools.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::audio::{self, tone_shares, tone_shares_in_blocks, write_tones_wav, Tones};
use common::phone;

const FREQS: [f64; 3] = [440.0, 700.0, 1000.0];

fn wav(dir: &Path, name: &str, rate: u32, secs: f64, channels: &[&[(f64, f64)]]) -> PathBuf {
    let path = dir.join(name);
    write_tones_wav(&path, rate, secs, channels);
    path
}

fn tones(path: &Path) -> Tones {
    audio::read_wav(path).tones(&FREQS)
}

/// The message of the panic `f` raises.
fn panic_message(f: impl FnOnce() + std::panic::UnwindSafe) -> String {
    let err = std::panic::catch_unwind(f).expect_err("expected a panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn a_pure_tone_has_all_the_power_at_8_and_16_khz() {
    let dir = tempfile::tempdir().unwrap();
    for rate in [8000, 16000] {
        for hz in FREQS {
            let p = wav(
                dir.path(),
                &format!("t{hz}-{rate}.wav"),
                rate,
                2.0,
                &[&[(hz, 0.5)]],
            );
            let t = tones(&p);
            assert!(t.share(hz) > 0.98, "{hz} Hz at {rate} Hz: {t}");
            for other in FREQS.iter().filter(|&&f| f != hz) {
                assert!(t.share(*other) < 0.001, "{hz} Hz at {rate} Hz: {t}");
            }
            let others: Vec<f64> = FREQS.iter().copied().filter(|&f| f != hz).collect();
            t.assert_dominated_by(hz, &others);
            assert!((t.rms - 0.5 / 2f64.sqrt()).abs() < 0.01, "{t}");
        }
    }
}

#[test]
fn mixtures_split_the_power_by_amplitude_squared() {
    let dir = tempfile::tempdir().unwrap();
    let even = wav(
        dir.path(),
        "even.wav",
        8000,
        2.0,
        &[&[(440.0, 0.3), (700.0, 0.3)]],
    );
    let t = tones(&even);
    assert!((t.share(440.0) - 0.5).abs() < 0.02, "{t}");
    assert!((t.share(700.0) - 0.5).abs() < 0.02, "{t}");
    assert!(t.share(1000.0) < 0.001, "{t}");
    audio::assert_hears(&even, &[440.0, 700.0], &[1000.0]);

    // amplitudes 0.4, 0.2, 0.1: powers 16 : 4 : 1
    let three = wav(
        dir.path(),
        "three.wav",
        8000,
        2.0,
        &[&[(440.0, 0.4), (700.0, 0.2), (1000.0, 0.1)]],
    );
    let t = tones(&three);
    for (hz, want) in [
        (440.0, 16.0 / 21.0),
        (700.0, 4.0 / 21.0),
        (1000.0, 1.0 / 21.0),
    ] {
        assert!((t.share(hz) - want).abs() < 0.02, "{hz} Hz: {t}");
    }
    // the quietest tone is there, but below what counts as heard
    let msg = panic_message(|| {
        audio::assert_hears(&three, &[440.0, 1000.0], &[]);
    });
    assert!(msg.contains("1000 Hz should be heard"), "{msg}");
}

#[test]
fn silence_and_noise_contain_no_tone() {
    let dir = tempfile::tempdir().unwrap();
    let silence = wav(dir.path(), "silence.wav", 8000, 1.0, &[&[]]);
    let t = tones(&silence);
    assert!(t.is_silent(), "{t}");
    assert_eq!(t.shares, vec![0.0; 3]);
    audio::assert_silent(&silence);
    let msg = panic_message(|| {
        audio::assert_hears(&silence, &[440.0], &[]);
    });
    assert!(msg.contains("silent"), "{msg}");

    // white noise (a fixed LCG) at about -15 dBFS
    let mut x: u32 = 12345;
    let noise: Vec<f32> = (0..16000)
        .map(|_| {
            x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            ((x >> 8) as f32 / (1u32 << 24) as f32 - 0.5) * 0.6
        })
        .collect();
    let t = tone_shares(&noise, 8000, &FREQS);
    assert!(!t.is_silent(), "{t}");
    for hz in FREQS {
        assert!(t.share(hz) < 0.01, "noise: {t}");
    }
}

#[test]
fn phase_jumps_from_lost_packets_do_not_hide_a_tone() {
    // 440 Hz in 20 ms packets; every 7th packet is lost (20 ms of silence) and the
    // stream resumes with a random phase, as after a loss and a jitter re-timing.
    let rate = 8000;
    let mut samples = Vec::new();
    let mut phase = 0.0f64;
    let mut x: u32 = 7;
    for packet in 0..250 {
        x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
        if packet % 7 == 6 {
            samples.extend(std::iter::repeat_n(0.0f32, 160));
            phase = f64::from(x >> 8) / f64::from(1u32 << 24) * std::f64::consts::TAU;
            continue;
        }
        for n in 0..160 {
            let t = f64::from(n) / f64::from(rate);
            samples.push((0.5 * (std::f64::consts::TAU * 440.0 * t + phase).sin()) as f32);
        }
        phase += std::f64::consts::TAU * 440.0 * 160.0 / f64::from(rate);
    }
    let blocks = tone_shares(&samples, rate, &FREQS);
    assert!(blocks.share(440.0) > 0.6, "100 ms blocks: {blocks}");
    assert!(blocks.share(700.0) < 0.01, "100 ms blocks: {blocks}");
    // one window over the whole 5 s would have lost most of the tone
    let whole = tone_shares_in_blocks(&samples, rate, &FREQS, samples.len());
    assert!(
        whole.share(440.0) < blocks.share(440.0) / 2.0,
        "one window: {whole}; 100 ms blocks: {blocks}"
    );
}

#[test]
fn stereo_channels_are_analysed_apart_and_together() {
    let dir = tempfile::tempdir().unwrap();
    let p = wav(
        dir.path(),
        "stereo.wav",
        8000,
        1.5,
        &[&[(440.0, 0.5)], &[(700.0, 0.25), (1000.0, 0.25)]],
    );
    let w = audio::read_wav(&p);
    assert_eq!(w.channels.len(), 2);
    assert_eq!(w.duration(), Duration::from_millis(1500));
    assert_eq!(audio::wav_duration(&p), Duration::from_millis(1500));
    audio::assert_channel_dominated_by(&p, 0, 440.0, &[700.0, 1000.0]);
    audio::assert_channel_hears(&p, 1, &[700.0, 1000.0], &[440.0]);
    // mixed: amplitudes 0.25, 0.125, 0.125, so powers 4 : 1 : 1
    let mix = audio::assert_hears(&p, &FREQS, &[]);
    assert!((mix.share(440.0) - 2.0 / 3.0).abs() < 0.02, "{mix}");
    let msg = panic_message(|| {
        audio::assert_channel_hears(&p, 2, &[440.0], &[]);
    });
    assert!(msg.contains("no channel 2"), "{msg}");
}

#[test]
fn a_failure_says_what_was_measured() {
    let dir = tempfile::tempdir().unwrap();
    let p = wav(dir.path(), "t440.wav", 8000, 1.0, &[&[(440.0, 0.5)]]);
    let msg = panic_message(|| {
        audio::assert_hears(&p, &[700.0], &[440.0]);
    });
    assert!(msg.contains("t440.wav"), "{msg}");
    assert!(msg.contains("700 Hz should be heard but has 0.0%"), "{msg}");
    assert!(
        msg.contains("440 Hz should not be heard but has 100.0%"),
        "{msg}"
    );
    assert!(
        msg.contains("measured: 700 Hz 0.0%, 440 Hz 100.0% (RMS 0.35"),
        "{msg}"
    );
    let msg = panic_message(|| {
        audio::assert_silent(&p);
    });
    assert!(msg.contains("should be silent"), "{msg}");
}

#[test]
fn short_and_odd_lengths_are_analysed() {
    // shorter than one block, and a trailing part block
    for secs in [0.05, 0.73] {
        let samples: Vec<f32> = (0..(8000.0 * secs) as usize)
            .map(|n| (0.5 * (std::f64::consts::TAU * 1000.0 * n as f64 / 8000.0).sin()) as f32)
            .collect();
        let t = tone_shares(&samples, 8000, &FREQS);
        assert!(t.share(1000.0) > 0.95, "{secs} s: {t}");
        assert!(t.share(440.0) < 0.01, "{secs} s: {t}");
    }
    assert!(tone_shares(&[], 8000, &FREQS).is_silent());
}

#[test]
fn baresip_status_lines_are_stripped() {
    assert_eq!(
        phone::strip_status("[0:00:05] audio=64000/64000 (bit/s)    audio: send DTMF digit: '5'"),
        "    audio: send DTMF digit: '5'"
    );
    assert_eq!(
        phone::strip_status("[0:00:05] audio=0/0 (bit/s)    [0:00:06] audio=64000/64000 (bit/s)"),
        ""
    );
    assert_eq!(phone::strip_status("[10;1000]x"), "[10;1000]x");
    assert_eq!(phone::strip_status("call: x"), "call: x");
}

#[test]
fn baresip_call_ends_are_counted_once() {
    // hung up here
    let mine = "caller@127.0.0.1: Call established: sip:2001@127.0.0.1:5060\n\
                sip:caller@127.0.0.1:16020: Call with sip:2001@127.0.0.1:5060 terminated (duration: 7 secs)\n";
    assert_eq!(phone::calls_closed(mine), 1);
    // hung up by the peer: both lines, one call
    let peer = "2001@127.0.0.1: Call established: sip:caller@127.0.0.1\n\
                stream: incoming rtp for 'audio' established\n\
                    sip:caller@127.0.0.1: session closed: Connection reset by peer\n\
                sip:2001@127.0.0.1: Call with sip:caller@127.0.0.1 terminated (duration: 7 secs)\n";
    assert_eq!(phone::calls_closed(peer), 1);
    // never established: failed, or rejected here
    let failed = "sip:9999@127.0.0.1:15060: session closed: 404 NotFound\n";
    assert_eq!(phone::calls_closed(failed), 1);
    let rejected = "call: rejecting incoming call from sip:caller@127.0.0.1 (486 Rejected)\n";
    assert_eq!(phone::calls_closed(rejected), 1);
    let all = format!("{failed}{peer}{mine}{rejected}{failed}");
    assert_eq!(phone::calls_closed(&all), 5);
    assert_eq!(phone::calls_closed(""), 0);
}

#[test]
fn baresip_log_is_cleaned_of_status_and_typing() {
    let raw = "baresip is ready.\n/\r/d\r/di\r/dial sip:2@x\ncall: connecting\n\
               \r[0:00:00] audio=0/0 (bit/s)    \r[0:00:01] audio=0/0 (bit/s)    \
               audio: send DTMF digit: '5'\n";
    assert_eq!(
        phone::clean_log(raw),
        "baresip is ready.\n/dial sip:2@x\ncall: connecting\n    audio: send DTMF digit: '5'\n"
    );
}
