//! Listening to recordings: which of a few test tones a WAV file contains.
//!
//! Every party of an audio test plays its own sine tone (caller 440 Hz, agent
//! 700 Hz, supervisor 1000 Hz, say), and a recording is judged by each tone's
//! share of the recording's power. A tone's power is measured with a Goertzel
//! filter in blocks of 100 ms and summed over the blocks: one lost packet or a
//! jitter-buffer re-timing shifts the tone's phase, which would cancel it out of
//! a single long window, while a short block only loses the one block it falls in.
//! 100 ms gives 10 Hz resolution, far finer than the spacing of the test tones.
//!
//! Samples are read with `hound` and scaled to -1.0..1.0, whatever their format.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Length of one analysis block.
pub const BLOCK: Duration = Duration::from_millis(100);
/// Below this RMS (about -50 dBFS) a recording counts as silence: G.711 idle
/// patterns and comfort noise stay well under it, a test tone is far above.
pub const SILENCE_RMS: f64 = 0.003;
/// The least share of the power a tone must have to count as heard.
pub const PRESENT_MIN_SHARE: f64 = 0.1;
/// The most share of the power a tone may have to count as not heard.
pub const ABSENT_MAX_SHARE: f64 = 0.02;
/// The least share of the power the dominant tone must have.
pub const DOMINANT_MIN_SHARE: f64 = 0.5;

/// A decoded WAV file: one vector of samples (-1.0..1.0) per channel.
#[derive(Debug, Clone)]
pub struct Wav {
    pub path: PathBuf,
    pub rate: u32,
    pub channels: Vec<Vec<f32>>,
}

/// Reads a WAV file (any integer or float format hound reads). Panics with the
/// path when it cannot.
pub fn read_wav(path: &Path) -> Wav {
    let fail = |e: hound::Error| -> ! { panic!("cannot read WAV file {}: {e}", path.display()) };
    let mut reader = hound::WavReader::open(path).unwrap_or_else(|e| fail(e));
    let spec = reader.spec();
    let n_channels = usize::from(spec.channels.max(1));
    let interleaved: Vec<f32> = match spec.sample_format {
        hound::SampleFormat::Float => reader
            .samples::<f32>()
            .collect::<Result<_, _>>()
            .unwrap_or_else(|e| fail(e)),
        hound::SampleFormat::Int => {
            let scale = (1u64 << (spec.bits_per_sample - 1)) as f32;
            reader
                .samples::<i32>()
                .map(|s| s.map(|s| s as f32 / scale))
                .collect::<Result<_, _>>()
                .unwrap_or_else(|e| fail(e))
        }
    };
    let mut channels = vec![Vec::with_capacity(interleaved.len() / n_channels); n_channels];
    for frame in interleaved.chunks_exact(n_channels) {
        for (channel, &s) in channels.iter_mut().zip(frame) {
            channel.push(s);
        }
    }
    Wav {
        path: path.to_path_buf(),
        rate: spec.sample_rate,
        channels,
    }
}

/// How long a WAV file plays.
pub fn wav_duration(path: &Path) -> Duration {
    read_wav(path).duration()
}

impl Wav {
    pub fn duration(&self) -> Duration {
        let frames = self.channels.first().map_or(0, Vec::len);
        Duration::from_secs_f64(frames as f64 / f64::from(self.rate.max(1)))
    }

    /// The average of all channels (the channel itself for a mono file).
    pub fn mix(&self) -> Vec<f32> {
        let n = self.channels.len().max(1) as f32;
        let frames = self.channels.first().map_or(0, Vec::len);
        (0..frames)
            .map(|i| self.channels.iter().map(|c| c[i]).sum::<f32>() / n)
            .collect()
    }

    /// The tones of one channel (0 is the left one).
    pub fn channel_tones(&self, channel: usize, freqs: &[f64]) -> Tones {
        let samples = self.channels.get(channel).unwrap_or_else(|| {
            panic!(
                "{} has {} channel(s); there is no channel {channel}",
                self.path.display(),
                self.channels.len()
            )
        });
        let mut t = tone_shares(samples, self.rate, freqs);
        t.what = format!("{} channel {channel}", self.path.display());
        t
    }

    /// The tones of all channels mixed together.
    pub fn tones(&self, freqs: &[f64]) -> Tones {
        let mut t = tone_shares(&self.mix(), self.rate, freqs);
        t.what = if self.channels.len() == 1 {
            self.path.display().to_string()
        } else {
            format!("{} (all channels mixed)", self.path.display())
        };
        t
    }
}

/// What share of a signal's power each of some frequencies has.
#[derive(Debug, Clone)]
pub struct Tones {
    /// What was analysed (a file name, a channel), for messages.
    pub what: String,
    pub freqs: Vec<f64>,
    /// `shares[i]` is `freqs[i]`'s share of the total power, 0.0..=1.0 (0 for silence).
    pub shares: Vec<f64>,
    /// RMS of the whole signal, 0.0..=1.0.
    pub rms: f64,
    pub duration: Duration,
}

/// Measures, for each of `freqs` (Hz), its share of the power of `samples`:
/// Goertzel power over [`BLOCK`]-long blocks, summed, divided by the summed
/// power of the blocks. A trailing part block is analysed as its own block if it is
/// at least half a block long (or the whole signal is shorter than a block).
pub fn tone_shares(samples: &[f32], rate: u32, freqs: &[f64]) -> Tones {
    let block = (rate as usize * BLOCK.as_millis() as usize / 1000).max(1);
    tone_shares_in_blocks(samples, rate, freqs, block)
}

/// [`tone_shares`] with a chosen block length in samples (a block as long as the
/// signal is one plain Goertzel window).
pub fn tone_shares_in_blocks(samples: &[f32], rate: u32, freqs: &[f64], block: usize) -> Tones {
    let block = block.max(1);
    let mut tone_power = vec![0.0f64; freqs.len()];
    let mut total_power = 0.0f64;
    let mut energy = 0.0f64;
    for chunk in samples.chunks(block) {
        energy += chunk.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>();
        if chunk.len() < block / 2 && samples.len() >= block {
            continue;
        }
        let n = chunk.len() as f64;
        total_power += chunk.iter().map(|&s| f64::from(s).powi(2)).sum::<f64>() / n;
        for (acc, &hz) in tone_power.iter_mut().zip(freqs) {
            *acc += goertzel_tone_power(chunk, rate, hz);
        }
    }
    let rms = if samples.is_empty() {
        0.0
    } else {
        (energy / samples.len() as f64).sqrt()
    };
    let shares = tone_power
        .iter()
        .map(|&p| {
            if rms < SILENCE_RMS || total_power == 0.0 {
                0.0
            } else {
                (p / total_power).min(1.0)
            }
        })
        .collect();
    Tones {
        what: "signal".into(),
        freqs: freqs.to_vec(),
        shares,
        rms,
        duration: Duration::from_secs_f64(samples.len() as f64 / f64::from(rate.max(1))),
    }
}

/// Mean power of the `hz` component of `block`: a sine of amplitude A gives A²/2,
/// the same scale as the block's mean square.
fn goertzel_tone_power(block: &[f32], rate: u32, hz: f64) -> f64 {
    let w = 2.0 * std::f64::consts::PI * hz / f64::from(rate);
    let coeff = 2.0 * w.cos();
    let (mut s1, mut s2) = (0.0f64, 0.0f64);
    for &x in block {
        let s = f64::from(x) + coeff * s1 - s2;
        s2 = s1;
        s1 = s;
    }
    let magnitude2 = s1 * s1 + s2 * s2 - coeff * s1 * s2;
    let n = block.len() as f64;
    2.0 * magnitude2 / (n * n)
}

impl Tones {
    /// The share of `hz`, which must be one of the analysed frequencies.
    pub fn share(&self, hz: f64) -> f64 {
        let i = self
            .freqs
            .iter()
            .position(|&f| (f - hz).abs() < 1e-6)
            .unwrap_or_else(|| panic!("{hz} Hz was not analysed (only {:?})", self.freqs));
        self.shares[i]
    }

    pub fn is_silent(&self) -> bool {
        self.rms < SILENCE_RMS
    }

    /// Panics (saying what was measured) unless every `present` tone has at least
    /// [`PRESENT_MIN_SHARE`] of the power and every `absent` one at most
    /// [`ABSENT_MAX_SHARE`]. A silent signal hears nothing.
    pub fn assert_hears(&self, present: &[f64], absent: &[f64]) {
        let mut wrong = Vec::new();
        if self.is_silent() && !present.is_empty() {
            wrong.push(format!("it is silent (RMS {:.5})", self.rms));
        }
        for &hz in present {
            let s = self.share(hz);
            if s < PRESENT_MIN_SHARE {
                wrong.push(format!(
                    "{hz} Hz should be heard but has {:.1}% of the power (needs {:.0}%)",
                    s * 100.0,
                    PRESENT_MIN_SHARE * 100.0
                ));
            }
        }
        for &hz in absent {
            let s = self.share(hz);
            if s > ABSENT_MAX_SHARE {
                wrong.push(format!(
                    "{hz} Hz should not be heard but has {:.1}% of the power (at most {:.0}%)",
                    s * 100.0,
                    ABSENT_MAX_SHARE * 100.0
                ));
            }
        }
        assert!(
            wrong.is_empty(),
            "{}:\n  {}\nmeasured: {self}",
            self.what,
            wrong.join("\n  ")
        );
    }

    /// Panics unless `hz` has at least [`DOMINANT_MIN_SHARE`] of the power and each
    /// `absent` tone at most [`ABSENT_MAX_SHARE`].
    pub fn assert_dominated_by(&self, hz: f64, absent: &[f64]) {
        self.assert_hears(&[hz], absent);
        let s = self.share(hz);
        assert!(
            s >= DOMINANT_MIN_SHARE,
            "{}:\n  {hz} Hz should dominate but has only {:.1}% of the power (needs {:.0}%)\n\
             measured: {self}",
            self.what,
            s * 100.0,
            DOMINANT_MIN_SHARE * 100.0
        );
    }

    /// Panics unless the signal is silent.
    pub fn assert_silent(&self) {
        assert!(
            self.is_silent(),
            "{}: should be silent (RMS below {SILENCE_RMS}) but is not\nmeasured: {self}",
            self.what
        );
    }
}

impl fmt::Display for Tones {
    /// `440 Hz 98.1%, 700 Hz 0.2%, 1000 Hz 0.0% (RMS 0.3512 = -9.1 dBFS, 6.90 s)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, (hz, share)) in self.freqs.iter().zip(&self.shares).enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{hz} Hz {:.1}%", share * 100.0)?;
        }
        let dbfs = 20.0 * self.rms.max(1e-10).log10();
        write!(
            f,
            " (RMS {:.4} = {dbfs:.1} dBFS, {:.2} s)",
            self.rms,
            self.duration.as_secs_f64()
        )
    }
}

/// Every channel mixed: panics unless each `present` tone is heard and no `absent`
/// one is (see [`Tones::assert_hears`]); returns what was measured.
pub fn assert_hears(wav: &Path, present: &[f64], absent: &[f64]) -> Tones {
    let t = read_wav(wav).tones(&all_freqs(present, absent));
    t.assert_hears(present, absent);
    t
}

/// [`assert_hears`] for one channel of a multi-channel WAV (0 is the left one).
pub fn assert_channel_hears(wav: &Path, channel: usize, present: &[f64], absent: &[f64]) -> Tones {
    let t = read_wav(wav).channel_tones(channel, &all_freqs(present, absent));
    t.assert_hears(present, absent);
    t
}

/// Every channel mixed: panics unless `hz` dominates and no `absent` tone is heard.
pub fn assert_dominated_by(wav: &Path, hz: f64, absent: &[f64]) -> Tones {
    let t = read_wav(wav).tones(&all_freqs(&[hz], absent));
    t.assert_dominated_by(hz, absent);
    t
}

/// [`assert_dominated_by`] for one channel.
pub fn assert_channel_dominated_by(wav: &Path, channel: usize, hz: f64, absent: &[f64]) -> Tones {
    let t = read_wav(wav).channel_tones(channel, &all_freqs(&[hz], absent));
    t.assert_dominated_by(hz, absent);
    t
}

/// Every channel mixed: panics unless the file is silent.
pub fn assert_silent(wav: &Path) -> Tones {
    let t = read_wav(wav).tones(&[]);
    t.assert_silent();
    t
}

fn all_freqs(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().chain(b).copied().collect()
}

/// Writes a 16-bit WAV of `secs` seconds in which channel `c` is the sum of the
/// sines `channels[c]` (frequency Hz, amplitude 0..1); for tests of this module and
/// as a phone's source when sox is not wanted.
pub fn write_tones_wav(path: &Path, rate: u32, secs: f64, channels: &[&[(f64, f64)]]) {
    let spec = hound::WavSpec {
        channels: channels.len() as u16,
        sample_rate: rate,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec)
        .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    let frames = (secs * f64::from(rate)) as usize;
    for n in 0..frames {
        let t = n as f64 / f64::from(rate);
        for sines in channels {
            let v: f64 = sines
                .iter()
                .map(|&(hz, amp)| amp * (2.0 * std::f64::consts::PI * hz * t).sin())
                .sum();
            w.write_sample((v.clamp(-1.0, 1.0) * 32767.0) as i16)
                .unwrap();
        }
    }
    w.finalize().unwrap();
}
