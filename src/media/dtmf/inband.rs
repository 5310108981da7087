//! In-band DTMF detection: finding key tones in 8 kHz audio.
//!
//! Used for trunks that negotiate no `telephone-event`, where the only trace
//! of a key press is the pair of tones in the audio. The detector runs eight
//! Goertzel filters (one per DTMF frequency) over windows of [`WINDOW`]
//! samples that overlap by half, so a window ends every [`HOP`] samples
//! (6.375 ms). A window is a *hit* for a key when all of these hold:
//!
//! * **level**: the strongest row tone and the strongest column tone are each
//!   above about −32 dBm0;
//! * **twist**: the row tone is at most 8 dB louder than the column tone, or
//!   the column at most 4 dB louder than the row (the usual limits; analogue
//!   lines lose more high frequency, so more "normal" twist is allowed);
//! * **relative peak**: each of the two is 8 dB above the other tones of its
//!   group, so a chord or broadband sound does not pass;
//! * **purity**: the two tones carry at least 70 % of the window's energy,
//!   the main defence against speech and music, whose energy is spread out;
//! * **steadiness**: the two halves of the window differ by less than 6 dB,
//!   so a window only partly covered by a tone (its start, its end, a click)
//!   is not a hit.
//!
//! A press needs [`HITS_TO_START`] consecutive hit windows of the same key
//! and ends after [`MISSES_TO_END`] windows without it; the digit is
//! reported then, with the measured duration. In numbers: every tone of
//! 38 ms or more yields four full windows, so tones ≥ 40 ms are always
//! detected (ITU-T Q.24); tones of 23 ms or less span at most two full
//! windows and are rejected, because partly covered windows fail the peak
//! and steadiness tests. A gap of 40 ms always contains four tone-free
//! windows, so it separates two presses of the same key, while a short
//! dropout inside a press does not split it.
//!
//! Why these sizes: a 102-sample window (as in SpanDSP) has 78 Hz
//! resolution at 8 kHz, which separates the closest DTMF tones (697/770 Hz)
//! by ~23 dB; non-overlapping 102-sample blocks would be too coarse in time
//! to accept every 40 ms tone. The overlap costs nothing extra: the filters
//! run over 51-sample halves, and each window's value is the previous half's
//! plus the current half's, phase-rotated (the DFT is linear).
//!
//! Sans-IO and allocation-free: fixed state, samples in any chunk size.

use std::f32::consts::PI;
use std::time::Duration;

use super::{Digit, Key, Queue};

/// Row (low group) frequencies in Hz.
pub const ROW_HZ: [f32; 4] = [697.0, 770.0, 852.0, 941.0];
/// Column (high group) frequencies in Hz.
pub const COL_HZ: [f32; 4] = [1209.0, 1336.0, 1477.0, 1633.0];

/// The sample rate the detector works at.
pub const SAMPLE_RATE: u32 = 8000;
/// Samples per analysis window.
pub const WINDOW: usize = 102;
/// Samples between the ends of consecutive windows (half a window).
pub const HOP: usize = WINDOW / 2;
/// Consecutive hit windows that start a press (≥ 38 ms of steady tone).
pub const HITS_TO_START: u32 = 4;
/// Consecutive non-hit windows that end a press.
pub const MISSES_TO_END: u32 = 4;
/// About how long after a tone ends its digit is reported.
pub const RELEASE_DELAY: Duration = samples((MISSES_TO_END as usize + 1) * HOP);

/// Peak amplitude of a 0 dBm0 sine in 16-bit linear PCM (G.711's digital
/// milliwatt: its overload point is +3.14 dBm0 at full scale).
pub(crate) const DBM0_PEAK: f32 = 22_700.0;
/// Quietest tone (each of the pair) accepted.
const MIN_LEVEL_DBM0: f32 = -32.0;
/// Row louder than column: at most 8 dB (as a power ratio).
const NORMAL_TWIST: f32 = 6.31;
/// Column louder than row: at most 4 dB.
const REVERSE_TWIST: f32 = 2.51;
/// Each tone must be this much (8 dB) above the rest of its group.
const RELATIVE_PEAK: f32 = 6.31;
/// Share of the window's energy the two tones must carry.
const PURITY: f32 = 0.7;
/// Largest energy ratio (6 dB) between the two halves of a hit window.
const STEADINESS: f32 = 4.0;

const fn samples(n: usize) -> Duration {
    Duration::from_micros(n as u64 * 1_000_000 / SAMPLE_RATE as u64)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Idle,
    /// A key seen in `hits` consecutive windows, not yet long enough.
    Rising {
        key: Key,
        hits: u32,
    },
    /// A press in progress, `windows` hit windows long so far (dropouts
    /// included), with `misses` windows without it at the end.
    Down {
        key: Key,
        windows: u32,
        misses: u32,
    },
}

/// Goertzel DTMF detector for one 8 kHz stream.
#[derive(Debug, Clone)]
pub struct InbandDetector {
    /// 2·cos ω per frequency (rows then columns), ω = 2πf/fs.
    coeffs: [f32; 8],
    /// (cos ω, sin ω): turns the filter state into a complex DFT value.
    unit: [(f32, f32); 8],
    /// e^(−jω·HOP): aligns the second half's value with the first's.
    rotation: [(f32, f32); 8],
    s1: [f32; 8],
    s2: [f32; 8],
    /// Energy of the current half so far.
    energy: f32,
    /// Samples into the current half.
    filled: usize,
    /// The previous half's DFT values and energy, once there is one.
    previous: Option<([(f32, f32); 8], f32)>,
    /// Per-tone mean power below which a tone is too quiet.
    min_power: f32,
    state: State,
    ready: Queue<Digit, 4>,
}

impl Default for InbandDetector {
    fn default() -> Self {
        Self::new()
    }
}

impl InbandDetector {
    /// A detector in the idle state.
    pub fn new() -> Self {
        let mut coeffs = [0.0; 8];
        let mut unit = [(0.0, 0.0); 8];
        let mut rotation = [(0.0, 0.0); 8];
        for (i, f) in ROW_HZ.iter().chain(&COL_HZ).enumerate() {
            let omega = 2.0 * PI * f / SAMPLE_RATE as f32;
            coeffs[i] = 2.0 * omega.cos();
            unit[i] = (omega.cos(), omega.sin());
            let turn = omega * HOP as f32;
            rotation[i] = (turn.cos(), -turn.sin());
        }
        let min_amplitude = DBM0_PEAK * 10f32.powf(MIN_LEVEL_DBM0 / 20.0);
        InbandDetector {
            coeffs,
            unit,
            rotation,
            s1: [0.0; 8],
            s2: [0.0; 8],
            energy: 0.0,
            filled: 0,
            previous: None,
            min_power: min_amplitude * min_amplitude / 2.0,
            state: State::Idle,
            ready: Queue::new(),
        }
    }

    /// Feeds 8 kHz samples, in any chunk size; finished presses become
    /// available from [`poll`](Self::poll).
    pub fn process(&mut self, pcm: &[i16]) {
        for &sample in pcm {
            let x = sample as f32;
            for i in 0..8 {
                let s0 = x + self.coeffs[i] * self.s1[i] - self.s2[i];
                self.s2[i] = self.s1[i];
                self.s1[i] = s0;
            }
            self.energy += x * x;
            self.filled += 1;
            if self.filled == HOP {
                self.end_half();
            }
        }
    }

    /// The next finished press.
    pub fn poll(&mut self) -> Option<Digit> {
        self.ready.pop()
    }

    /// Forgets any press in progress (e.g. when the leg's audio source
    /// changes); finished presses stay available.
    pub fn reset(&mut self) {
        *self = InbandDetector {
            ready: self.ready.clone(),
            ..InbandDetector::new()
        };
    }

    fn end_half(&mut self) {
        // The half's DFT value at each frequency, up to a phase common to
        // all halves: s1 − e^(−jω)·s2.
        let mut current = [(0.0f32, 0.0f32); 8];
        for (i, value) in current.iter_mut().enumerate() {
            let (cos, sin) = self.unit[i];
            *value = (self.s1[i] - cos * self.s2[i], sin * self.s2[i]);
        }
        if let Some((previous, previous_energy)) = self.previous {
            let hit = self.classify(&previous, &current, previous_energy, self.energy);
            self.advance(hit);
        }
        self.previous = Some((current, self.energy));
        self.s1 = [0.0; 8];
        self.s2 = [0.0; 8];
        self.energy = 0.0;
        self.filled = 0;
    }

    /// The key the window made of these two halves is a hit for, if any
    /// (see the module docs).
    fn classify(
        &self,
        first: &[(f32, f32); 8],
        second: &[(f32, f32); 8],
        first_energy: f32,
        second_energy: f32,
    ) -> Option<Key> {
        // Mean power of each tone: 2·|X|²/N² is A²/2 for a sine of
        // amplitude A filling the window.
        let scale = 2.0 / (WINDOW * WINDOW) as f32;
        let mut power = [0.0f32; 8];
        for (i, p) in power.iter_mut().enumerate() {
            let (a_re, a_im) = first[i];
            let (b_re, b_im) = second[i];
            let (r_re, r_im) = self.rotation[i];
            let re = a_re + b_re * r_re - b_im * r_im;
            let im = a_im + b_re * r_im + b_im * r_re;
            *p = (re * re + im * im) * scale;
        }
        let (rows, cols) = power.split_at(4);
        let (row, row_power) = strongest(rows)?;
        let (col, col_power) = strongest(cols)?;

        if row_power < self.min_power || col_power < self.min_power {
            return None;
        }
        if col_power > row_power * REVERSE_TWIST || row_power > col_power * NORMAL_TWIST {
            return None;
        }
        let stands_out = |group: &[f32], best: usize, best_power: f32| {
            group
                .iter()
                .enumerate()
                .all(|(i, &p)| i == best || p * RELATIVE_PEAK <= best_power)
        };
        if !stands_out(rows, row, row_power) || !stands_out(cols, col, col_power) {
            return None;
        }
        let mean_power = (first_energy + second_energy) / WINDOW as f32;
        if row_power + col_power < PURITY * mean_power {
            return None;
        }
        if first_energy > second_energy * STEADINESS || second_energy > first_energy * STEADINESS {
            return None;
        }
        Some(Key::at(row, col))
    }

    fn advance(&mut self, hit: Option<Key>) {
        self.state = match (self.state, hit) {
            (State::Idle, None) => State::Idle,
            (State::Idle, Some(key)) => State::Rising { key, hits: 1 },
            (State::Rising { key, hits }, Some(k)) if k == key => {
                if hits + 1 >= HITS_TO_START {
                    State::Down {
                        key,
                        windows: hits + 1,
                        misses: 0,
                    }
                } else {
                    State::Rising {
                        key,
                        hits: hits + 1,
                    }
                }
            }
            (State::Rising { .. }, Some(key)) => State::Rising { key, hits: 1 },
            (State::Rising { .. }, None) => State::Idle,
            (
                State::Down {
                    key,
                    windows,
                    misses,
                },
                Some(k),
            ) if k == key => State::Down {
                key,
                // A dropout shorter than MISSES_TO_END was part of the press.
                windows: windows + misses + 1,
                misses: 0,
            },
            (
                State::Down {
                    key,
                    windows,
                    misses,
                },
                other,
            ) => {
                if misses + 1 < MISSES_TO_END {
                    State::Down {
                        key,
                        windows,
                        misses: misses + 1,
                    }
                } else {
                    // n overlapping windows cover one window plus n−1 hops.
                    let covered = WINDOW + (windows as usize - 1) * HOP;
                    self.ready.push(Digit {
                        key,
                        duration: samples(covered),
                    });
                    match other {
                        Some(key) => State::Rising { key, hits: 1 },
                        None => State::Idle,
                    }
                }
            }
        };
    }
}

/// Index and value of the largest element.
fn strongest(group: &[f32]) -> Option<(usize, f32)> {
    group
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `len` samples of `key`'s two tones, each at `level` dBm0.
    pub(crate) fn dual_tone(key: Key, level: f32, len: usize) -> Vec<i16> {
        twisted_tone(key, level, level, len)
    }

    fn twisted_tone(key: Key, row_level: f32, col_level: f32, len: usize) -> Vec<i16> {
        let (row, col) = key.frequencies();
        let amplitude = |level: f32| DBM0_PEAK * 10f32.powf(level / 20.0);
        let (a_row, a_col) = (amplitude(row_level), amplitude(col_level));
        (0..len)
            .map(|n| {
                let t = n as f32 / SAMPLE_RATE as f32;
                let v =
                    a_row * (2.0 * PI * row * t).sin() + a_col * (2.0 * PI * col * t + 1.0).sin();
                v.round() as i16
            })
            .collect()
    }

    /// White noise with an RMS level of `level` dBm0.
    fn noise(level: f32, len: usize, seed: u64) -> Vec<i16> {
        let rms = DBM0_PEAK / 2f32.sqrt() * 10f32.powf(level / 20.0);
        let mut state = seed | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let uniform = (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0;
                (uniform * rms * 3f32.sqrt()) as i16
            })
            .collect()
    }

    fn mix(a: &mut [i16], b: &[i16]) {
        for (x, y) in a.iter_mut().zip(b) {
            *x = x.saturating_add(*y);
        }
    }

    /// Runs `pcm` through a fresh detector in 20 ms frames, plus trailing
    /// silence so the last press is released.
    fn detect(pcm: &[i16]) -> Vec<Digit> {
        let mut detector = InbandDetector::new();
        let mut digits = Vec::new();
        for frame in pcm.chunks(160).chain([&[0i16; 800][..]]) {
            detector.process(frame);
            digits.extend(std::iter::from_fn(|| detector.poll()));
        }
        digits
    }

    fn keys(digits: &[Digit]) -> String {
        digits.iter().map(|d| d.key.as_char()).collect()
    }

    fn ms(n: usize) -> usize {
        n * 8
    }

    #[test]
    fn all_keys_at_several_levels_in_noise() {
        for level in [-3.0, -10.0, -20.0, -27.0] {
            // 80 ms presses, 80 ms gaps, noise 20 dB below each tone.
            let mut pcm = Vec::new();
            for key in Key::ALL {
                pcm.extend(dual_tone(key, level, ms(80)));
                pcm.extend(std::iter::repeat_n(0, ms(80)));
            }
            let len = pcm.len();
            mix(&mut pcm, &noise(level - 20.0, len, 99));
            let digits = detect(&pcm);
            assert_eq!(keys(&digits), "0123456789*#ABCD", "at {level} dBm0");
            for d in &digits {
                let error = d.duration.as_secs_f32() * 1000.0 - 80.0;
                assert!(
                    error.abs() <= 26.0,
                    "{} at {level} dBm0 lasted {:?}",
                    d.key,
                    d.duration
                );
            }
        }
    }

    /// The level threshold sits where the docs say (−32 dBm0 per tone),
    /// which also checks the power normalisation of the overlapped windows.
    #[test]
    fn level_threshold() {
        let run = |level| {
            let mut pcm = dual_tone(Key::Num2, level, ms(100));
            pcm.extend(std::iter::repeat_n(0, ms(100)));
            keys(&detect(&pcm))
        };
        assert_eq!(run(-30.0), "2");
        assert_eq!(run(-34.0), "");
        assert_eq!(run(3.0), "2");
    }

    #[test]
    fn chunk_size_does_not_matter() {
        let mut pcm = Vec::new();
        for key in [Key::Num1, Key::Num1, Key::Star] {
            pcm.extend(dual_tone(key, -12.0, ms(70)));
            pcm.extend(std::iter::repeat_n(0, ms(60)));
        }
        let whole = detect(&pcm);
        let mut detector = InbandDetector::new();
        let mut pieces = Vec::new();
        for chunk in pcm.chunks(37).chain([&[0i16; 800][..]]) {
            detector.process(chunk);
            pieces.extend(std::iter::from_fn(|| detector.poll()));
        }
        assert_eq!(keys(&whole), "11*");
        assert_eq!(whole, pieces);
    }

    #[test]
    fn twist_limits() {
        let run = |row_level, col_level| {
            let mut pcm = twisted_tone(Key::Num9, row_level, col_level, ms(100));
            pcm.extend(std::iter::repeat_n(0, ms(100)));
            keys(&detect(&pcm))
        };
        assert_eq!(run(-10.0, -10.0), "9");
        assert_eq!(run(-10.0, -7.0), "9"); // column 3 dB louder
        assert_eq!(run(-10.0, -17.0), "9"); // row 7 dB louder
        assert_eq!(run(-10.0, -4.0), ""); // column 6 dB louder
        assert_eq!(run(-10.0, -20.0), ""); // row 10 dB louder
    }

    #[test]
    fn minimum_duration_and_gap() {
        // Try every alignment of the tone against the block grid.
        for offset in (0..WINDOW).step_by(5) {
            let lead = vec![0i16; offset];
            let with = |tone_ms: usize| {
                let mut pcm = lead.clone();
                pcm.extend(dual_tone(Key::Num6, -10.0, ms(tone_ms)));
                keys(&detect(&pcm))
            };
            assert_eq!(with(40), "6", "40 ms at offset {offset}");
            assert_eq!(with(23), "", "23 ms at offset {offset}");
            assert_eq!(with(15), "", "15 ms at offset {offset}");

            // Two presses 40 ms apart are two digits.
            let mut pcm = lead.clone();
            pcm.extend(dual_tone(Key::Num6, -10.0, ms(60)));
            pcm.extend(std::iter::repeat_n(0, ms(40)));
            pcm.extend(dual_tone(Key::Num6, -10.0, ms(60)));
            assert_eq!(keys(&detect(&pcm)), "66", "gap at offset {offset}");
        }
    }

    #[test]
    fn a_short_dropout_does_not_split_a_press() {
        let mut pcm = dual_tone(Key::Num8, -15.0, ms(1000));
        pcm[ms(500)..ms(508)].fill(0);
        let digits = detect(&pcm);
        assert_eq!(keys(&digits), "8");
        assert!(digits[0].duration >= Duration::from_millis(980));
    }

    #[test]
    fn ignores_single_tones_noise_and_voice_like_sound() {
        let two_seconds = ms(2000);
        // A 440 Hz tone, loud.
        let tone =
            crate::media::codec::tests::sine(440.0, DBM0_PEAK as f64 * 0.5, 8000, two_seconds);
        assert_eq!(keys(&detect(&tone)), "");
        // White noise, loud and moderate.
        for level in [-6.0, -20.0] {
            assert_eq!(
                keys(&detect(&noise(level, ms(5000), 7))),
                "",
                "noise at {level}"
            );
        }
        // One DTMF frequency alone, and dial tone (350 + 440 Hz).
        let single = crate::media::codec::tests::sine(697.0, 8000.0, 8000, two_seconds);
        assert_eq!(keys(&detect(&single)), "");
        let mut dial = crate::media::codec::tests::sine(350.0, 6000.0, 8000, two_seconds);
        mix(
            &mut dial,
            &crate::media::codec::tests::sine(440.0, 6000.0, 8000, two_seconds),
        );
        assert_eq!(keys(&detect(&dial)), "");
        // A voice-like buzz: harmonics of a gliding 100–250 Hz pitch with
        // falling strength, plus some noise.
        let mut phase = 0.0f32;
        let mut voice: Vec<i16> = (0..ms(4000))
            .map(|n| {
                let t = n as f32 / 8000.0;
                let pitch = 175.0 + 75.0 * (2.0 * PI * 0.7 * t).sin();
                phase += 2.0 * PI * pitch / 8000.0;
                let v: f32 = (1..=20).map(|h| (h as f32 * phase).sin() / h as f32).sum();
                (v * 4000.0) as i16
            })
            .collect();
        let len = voice.len();
        mix(&mut voice, &noise(-35.0, len, 3));
        assert_eq!(keys(&detect(&voice)), "");
    }

    #[test]
    fn detection_does_not_allocate() {
        let mut pcm = Vec::new();
        for key in Key::ALL {
            pcm.extend(dual_tone(key, -10.0, ms(80)));
            pcm.extend(std::iter::repeat_n(0, ms(80)));
        }
        let mut detector = InbandDetector::new();
        let mut count = 0;
        let allocations = crate::media::codec::tests::allocations_in(|| {
            for frame in pcm.chunks(160) {
                detector.process(frame);
                while detector.poll().is_some() {
                    count += 1;
                }
            }
        });
        assert_eq!(allocations, 0);
        assert_eq!(count, 16);
    }
}
