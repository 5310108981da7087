//! Prompts: audio files turned into 20 ms frames for a call leg.
//!
//! This module owns:
//!
//! * decoding prompt files (WAV, MP3, FLAC, OGG Vorbis, via `symphonia`) to
//!   mono `i16` at a call's rate (resampled with `rubato`): [`decode_file`];
//! * the process-wide [`PromptCache`] of decoded prompts, keyed by file and
//!   rate and refreshed when the file changes on disk;
//! * the per-leg [`Player`], a sans-IO frame source: one [`Player::tick`] per
//!   20 ms gives the frame to encode and send, with its RTP timestamp and
//!   marker bit, through a [`Playlist`] that may loop (music on hold) and may
//!   be cut short by a key press (barge-in).
//!
//! Which files say a number, digits or a date is the prompt set's business
//! (`ivr::say`); this module plays whatever files it is given.
//!
//! It must never touch sockets or clocks: the call task decides when a tick
//! happens and where frames go. Decoding reads files and is CPU-heavy (tens
//! of milliseconds for a long prompt), so loading belongs off the async
//! runtime (`spawn_blocking`) or ahead of time; playing a loaded prompt
//! allocates nothing per frame.
//!

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};
use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::codecs::CodecParameters;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

use super::mixer::{SampleRate, FRAME_MS};

/// Why a prompt could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("{}: cannot read the prompt: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{}: cannot decode the prompt ({reason}); prompts must be WAV, MP3, FLAC or OGG Vorbis",
        path.display()
    )]
    Decode { path: PathBuf, reason: String },
    #[error("{}: resampling from {from} Hz failed: {reason}", path.display())]
    Resample {
        path: PathBuf,
        from: u32,
        reason: String,
    },
}

fn decode_err(path: &Path, e: impl ToString) -> PromptError {
    PromptError::Decode {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// Decodes the audio file at `path` to mono `i16` at `rate`.
///
/// Multichannel audio is averaged to mono; the first audio track is used.
/// Blocking and CPU-bound: run it off the async runtime. Most callers want
/// [`PromptCache::get`] instead.
pub fn decode_file(path: &Path, rate: SampleRate) -> Result<Vec<i16>, PromptError> {
    let io_err = |source| PromptError::Io {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(io_err)?;
    let mut hint = Hint::new();
    if let Some(ext) = path.extension().and_then(|e| e.to_str()) {
        hint.with_extension(ext);
    }
    let stream = MediaSourceStream::new(Box::new(file), Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            stream,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|e| decode_err(path, e))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| decode_err(path, "no audio track"))?;
    let track_id = track.id;
    let Some(CodecParameters::Audio(params)) = &track.codec_params else {
        return Err(decode_err(path, "no audio codec parameters"));
    };
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| decode_err(path, e))?;
    let mut source_rate = params.sample_rate;

    let mut mono: Vec<f32> = Vec::new();
    let mut interleaved: Vec<f32> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // Some readers report a truncated last page or frame this way;
            // everything before it is still good audio.
            Err(SymphoniaError::IoError(e)) if e.kind() == io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(decode_err(path, e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            // A corrupt frame costs a few milliseconds of audio; players
            // skip it rather than refuse the whole file.
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(decode_err(path, e)),
        };
        let channels = decoded.spec().channels().count().max(1);
        source_rate = Some(decoded.spec().rate());
        decoded.copy_to_vec_interleaved(&mut interleaved);
        if channels == 1 {
            mono.extend_from_slice(&interleaved);
        } else {
            let scale = 1.0 / channels as f32;
            mono.extend(
                interleaved
                    .chunks_exact(channels)
                    .map(|frame| frame.iter().sum::<f32>() * scale),
            );
        }
    }
    let source_rate = source_rate.ok_or_else(|| decode_err(path, "unknown sample rate"))?;
    let resampled =
        resample(mono, source_rate, rate.hz()).map_err(|reason| PromptError::Resample {
            path: path.to_owned(),
            from: source_rate,
            reason,
        })?;
    Ok(resampled
        .into_iter()
        .map(|x| (x * 32768.0).round().clamp(-32768.0, 32767.0) as i16)
        .collect())
}

/// Resamples a whole mono clip. The FFT resampler suits prompts: the ratio
/// is fixed, the quality matches the best sinc settings, and it is several
/// times faster.
fn resample(mono: Vec<f32>, from: u32, to: u32) -> Result<Vec<f32>, String> {
    if from == to || mono.is_empty() {
        return Ok(mono);
    }
    let mut resampler = Fft::<f32>::new(from as usize, to as usize, 1024, 1, FixedSync::Both)
        .map_err(|e| e.to_string())?;
    let input = InterleavedSlice::new(&mono[..], 1, mono.len()).map_err(|e| e.to_string())?;
    let output = resampler
        .process_all(&input, mono.len(), None)
        .map_err(|e| e.to_string())?;
    Ok(output.take_data())
}

/// What identifies one version of a file: a rewrite changes one or both.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Result<Self, PromptError> {
        let meta = std::fs::metadata(path).map_err(|source| PromptError::Io {
            path: path.to_owned(),
            source,
        })?;
        Ok(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        })
    }
}

#[derive(Debug)]
struct Cached {
    stamp: FileStamp,
    pcm: Arc<[i16]>,
}

/// Decoded prompts shared by every call, keyed by (file, rate).
///
/// Each lookup checks the file's modification time and size, so an edited
/// prompt is picked up by the next call that plays it without a restart.
/// The lock is held only for the map lookup, never while decoding; two calls
/// that miss on the same file at once both decode it and the later one's
/// result is kept, which costs CPU once and never blocks a call behind
/// another's decode.
#[derive(Debug, Default)]
pub struct PromptCache {
    entries: Mutex<HashMap<(PathBuf, SampleRate), Cached>>,
}

impl PromptCache {
    pub fn new() -> Self {
        Self::default()
    }

    /// The prompt at `path` decoded at `rate`, from memory when the file is
    /// unchanged since it was decoded. Blocking (a `stat`, and a decode on a
    /// miss).
    ///
    /// Call tasks ask for prompts as their flows reach them, on the async
    /// runtime; a decode there would hold a worker thread for as long as it
    /// takes, and every other call's media on that worker would miss its
    /// 20 ms ticks (prompts playing slower than real time, and gaps). So on a
    /// multi-threaded runtime a miss first hands the worker's other tasks to a
    /// new thread (`block_in_place`); the caller still waits for its prompt.
    pub fn get(&self, path: &Path, rate: SampleRate) -> Result<Arc<[i16]>, PromptError> {
        let stamp = FileStamp::of(path)?;
        let key = (path.to_owned(), rate);
        if let Some(hit) = self.lock().get(&key) {
            if hit.stamp == stamp {
                return Ok(Arc::clone(&hit.pcm));
            }
        }
        // Stamped before decoding: if the file changes while we read it, the
        // next lookup sees a newer stamp and decodes again.
        let pcm: Arc<[i16]> = off_the_runtime(|| decode_file(path, rate))?.into();
        self.lock().insert(
            key,
            Cached {
                stamp,
                pcm: Arc::clone(&pcm),
            },
        );
        Ok(pcm)
    }

    /// Decodes every prompt file under `root` (any depth) at each of `rates`, so that
    /// calls find their prompts decoded instead of decoding them on the media path.
    /// Blocking: run it on a blocking thread at start-up and after a flow reload
    /// (files unchanged since are only `stat`ed). Returns how many prompts are held;
    /// a file that does not decode is logged and left for the flow check to report.
    pub fn warm(&self, root: &Path, rates: &[SampleRate]) -> usize {
        let mut dirs = vec![root.to_path_buf()];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                    continue;
                }
                let audio = path
                    .extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| ["wav", "mp3", "flac", "ogg"].contains(&e));
                if !audio {
                    continue;
                }
                for &rate in rates {
                    if let Err(e) = self.get(&path, rate) {
                        tracing::warn!(error = %e, "prompt not preloaded");
                    }
                }
            }
        }
        self.len()
    }

    /// Number of decoded prompts held.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every prompt (calls already playing keep theirs).
    pub fn clear(&self) {
        self.lock().clear();
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, SampleRate), Cached>> {
        // A panic elsewhere while holding the lock cannot leave the map
        // half-updated (insert and clear are single calls), so keep going.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Runs the blocking `work` so that it holds up no other task: on a worker of a
/// multi-threaded tokio runtime the worker's duties move to another thread
/// first; elsewhere (no runtime, a blocking-pool thread, a current-thread
/// runtime, which cannot hand over) it simply runs.
fn off_the_runtime<T>(work: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(work)
        }
        _ => work(),
    }
}

/// Prompts to play one after another, without gaps between them.
#[derive(Debug, Clone, Default)]
pub struct Playlist {
    items: Vec<Arc<[i16]>>,
    looping: bool,
    barge_in: bool,
}

impl Playlist {
    /// An empty playlist that plays once and ignores key presses.
    pub fn new() -> Self {
        Self::default()
    }

    /// Loads `files` through `cache` at `rate`, in order.
    pub fn from_files<P: AsRef<Path>>(
        cache: &PromptCache,
        files: &[P],
        rate: SampleRate,
    ) -> Result<Self, PromptError> {
        let items = files
            .iter()
            .map(|f| cache.get(f.as_ref(), rate))
            .collect::<Result<_, _>>()?;
        Ok(Playlist {
            items,
            ..Self::default()
        })
    }

    /// Appends a prompt.
    pub fn then(mut self, prompt: Arc<[i16]>) -> Self {
        self.items.push(prompt);
        self
    }

    /// Starts over after the last prompt until stopped (music on hold).
    pub fn looping(mut self, looping: bool) -> Self {
        self.looping = looping;
        self
    }

    /// Lets a key press cut the playlist short (see [`Player::on_digit`]).
    pub fn barge_in(mut self, barge_in: bool) -> Self {
        self.barge_in = barge_in;
        self
    }

    /// Length of one pass at `rate`.
    pub fn duration(&self, rate: SampleRate) -> Duration {
        let samples: usize = self.items.iter().map(|p| p.len()).sum();
        Duration::from_secs_f64(samples as f64 / f64::from(rate.hz()))
    }

    fn total_len(&self) -> usize {
        self.items.iter().map(|p| p.len()).sum()
    }
}

/// One frame to encode and send.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    /// 20 ms of audio at the player's rate.
    pub samples: &'a [i16],
    /// RTP timestamp of the first sample.
    pub timestamp: u32,
    /// RTP marker bit: set on the first packet after silence (RFC 3551 §4.1).
    pub marker: bool,
}

/// How a playlist ended, from [`Player::poll_event`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlayerEvent {
    /// The last prompt played to the end.
    Finished,
    /// Cut short by [`Player::stop`], a barge-in digit, or a new playlist.
    Stopped,
}

#[derive(Debug)]
struct Current {
    playlist: Playlist,
    item: usize,
    pos: usize,
}

/// Plays playlists into one leg as 20 ms frames. Sans-IO: the call task
/// calls [`tick`](Self::tick) every 20 ms and sends what it returns.
///
/// The RTP timestamp advances on every tick, playing or not, so that after a
/// pause the receiver sees the gap in the timestamps as well as the marker.
#[derive(Debug)]
pub struct Player {
    rate: SampleRate,
    ts_step: u32,
    next_timestamp: u32,
    current: Option<Current>,
    /// Whether the previous tick sent a frame (so this one continues a
    /// talkspurt rather than starting one).
    sending: bool,
    frame: Vec<i16>,
    event: Option<PlayerEvent>,
}

impl Player {
    /// A player for a leg whose PCM runs at `rate` and whose RTP clock runs
    /// at `clock_rate` Hz; the first tick carries `first_timestamp` (pick it
    /// at random, RFC 3550 §5.1).
    ///
    /// The two rates differ for G.722: 16 kHz audio, but an 8 kHz RTP clock
    /// for historical reasons (RFC 3551 §4.5.2), so its timestamps advance by
    /// 160 per 20 ms frame of 320 samples.
    pub fn new(rate: SampleRate, clock_rate: u32, first_timestamp: u32) -> Self {
        Player {
            rate,
            ts_step: clock_rate * FRAME_MS / 1000,
            next_timestamp: first_timestamp,
            current: None,
            sending: false,
            frame: vec![0; rate.frame_len()],
            event: None,
        }
    }

    /// Starts `playlist` at the next tick, replacing (and stopping)
    /// whatever was playing. An empty playlist finishes at once.
    pub fn play(&mut self, playlist: Playlist) {
        self.stop();
        if playlist.total_len() == 0 {
            self.event = Some(PlayerEvent::Finished);
            return;
        }
        self.current = Some(Current {
            playlist,
            item: 0,
            pos: 0,
        });
    }

    /// Stops playing; returns whether anything was playing.
    pub fn stop(&mut self) -> bool {
        let was_playing = self.current.take().is_some();
        if was_playing {
            self.event = Some(PlayerEvent::Stopped);
        }
        was_playing
    }

    /// A key was pressed: stops the playlist if it allows barge-in. Returns
    /// whether it stopped. (The digit itself goes to whoever collects digits;
    /// the player only needs to know one came.)
    pub fn on_digit(&mut self) -> bool {
        match &self.current {
            Some(c) if c.playlist.barge_in => self.stop(),
            _ => false,
        }
    }

    pub fn is_playing(&self) -> bool {
        self.current.is_some()
    }

    /// The PCM rate of the frames.
    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// How the last playlist ended, once.
    pub fn poll_event(&mut self) -> Option<PlayerEvent> {
        self.event.take()
    }

    /// Advances one 20 ms tick: the frame to send, or `None` when idle.
    pub fn tick(&mut self) -> Option<Frame<'_>> {
        let timestamp = self.next_timestamp;
        self.next_timestamp = timestamp.wrapping_add(self.ts_step);
        let Some(current) = &mut self.current else {
            self.sending = false;
            return None;
        };

        let mut filled = 0;
        let mut finished = false;
        while filled < self.frame.len() {
            let Some(item) = current.playlist.items.get(current.item) else {
                if current.playlist.looping {
                    // Not empty: `play` refuses playlists without audio, so
                    // wrapping around always makes progress.
                    current.item = 0;
                    current.pos = 0;
                    continue;
                }
                self.frame[filled..].fill(0);
                finished = true;
                break;
            };
            let take = (item.len() - current.pos).min(self.frame.len() - filled);
            self.frame[filled..filled + take]
                .copy_from_slice(&item[current.pos..current.pos + take]);
            filled += take;
            current.pos += take;
            if current.pos == item.len() {
                current.item += 1;
                current.pos = 0;
            }
        }
        // A prompt ending exactly on a frame boundary is finished now too,
        // rather than after one more frame of silence.
        if !current.playlist.looping && current.item == current.playlist.items.len() {
            finished = true;
        }
        if finished {
            self.current = None;
            self.event = Some(PlayerEvent::Finished);
        }

        let marker = !self.sending;
        self.sending = true;
        Some(Frame {
            samples: &self.frame,
            timestamp,
            marker,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::mixer::signal::{amplitude, sine, zero_crossing_freq};
    use super::*;

    const NB: SampleRate = SampleRate::Narrowband;

    fn fixture(ext: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/audio")
            .join(format!("tone-1khz-44k1.{ext}"))
    }

    fn write_wav(path: &Path, rate: u32, channels: u16, samples: &[i16]) {
        let spec = hound::WavSpec {
            channels,
            sample_rate: rate,
            bits_per_sample: 16,
            sample_format: hound::SampleFormat::Int,
        };
        let mut w = hound::WavWriter::create(path, spec).unwrap();
        for &s in samples {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
    }

    fn tone_wav(dir: &Path, secs: f64) -> PathBuf {
        let path = dir.join("tone.wav");
        let len = (44_100.0 * secs) as usize;
        write_wav(&path, 44_100, 1, &sine(1000.0, 44_100, 16_000.0, 0, len));
        path
    }

    /// Decodes `path` to 8 kHz and checks pitch (±1%) and length (±20 ms)
    /// of the 1 s, 1 kHz tone in it.
    fn check_tone(path: &Path) {
        let pcm = decode_file(path, NB).unwrap();
        let secs = pcm.len() as f64 / 8000.0;
        assert!((secs - 1.0).abs() <= 0.020, "{}: {secs} s", path.display());
        let freq = zero_crossing_freq(&pcm, 8000, 400);
        assert!(
            (freq - 1000.0).abs() <= 10.0,
            "{}: {freq} Hz",
            path.display()
        );
        // Goertzel agrees: the energy is at 1 kHz, not beside it.
        let middle = &pcm[400..pcm.len() - 400];
        let at = amplitude(middle, 1000.0, 8000);
        assert!(at > 1000.0, "{}: weak tone {at}", path.display());
        assert!(amplitude(middle, 1100.0, 8000) < at / 10.0);
    }

    #[test]
    fn a_wav_tone_keeps_its_pitch_and_length_at_8khz() {
        let dir = tempfile::tempdir().unwrap();
        check_tone(&tone_wav(dir.path(), 1.0));
    }

    #[test]
    fn flac_ogg_and_mp3_tones_keep_their_pitch_and_length_at_8khz() {
        for ext in ["flac", "ogg", "mp3"] {
            check_tone(&fixture(ext));
        }
    }

    #[test]
    fn stereo_is_averaged_and_16khz_is_supported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stereo.wav");
        let left = sine(1000.0, 44_100, 10_000.0, 0, 44_100);
        let interleaved: Vec<i16> = left.iter().flat_map(|&s| [s, 0]).collect();
        write_wav(&path, 44_100, 2, &interleaved);
        let pcm = decode_file(&path, SampleRate::Wideband).unwrap();
        assert!((pcm.len() as i64 - 16_000).abs() <= 320);
        let a = amplitude(&pcm[800..pcm.len() - 800], 1000.0, 16_000);
        assert!(
            (a - 5_000.0).abs() < 250.0,
            "half of the left channel, got {a}"
        );
    }

    /// A cache miss on the runtime decodes with the worker handed over: a task on
    /// the runtime's only worker keeps its pace meanwhile, as calls' media must.
    #[test]
    fn a_decode_on_the_runtime_holds_up_no_other_task() {
        use std::sync::atomic::{AtomicBool, Ordering};
        use std::time::Instant;

        let dir = tempfile::tempdir().unwrap();
        // Long enough that decoding and resampling it takes a while.
        let path = tone_wav(dir.path(), 30.0);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let (decode, longest_gap) = runtime.block_on(async move {
            let done = Arc::new(AtomicBool::new(false));
            let ticking = Arc::clone(&done);
            let ticker = tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(5));
                let mut last = Instant::now();
                let mut longest = Duration::ZERO;
                while !ticking.load(Ordering::Relaxed) {
                    tick.tick().await;
                    longest = longest.max(last.elapsed());
                    last = Instant::now();
                }
                longest
            });
            // Let the ticker settle into its pace.
            tokio::time::sleep(Duration::from_millis(30)).await;
            let loader = tokio::spawn(async move {
                let started = Instant::now();
                PromptCache::new().get(&path, NB).unwrap();
                let took = started.elapsed();
                done.store(true, Ordering::Relaxed);
                took
            });
            (loader.await.unwrap(), ticker.await.unwrap())
        });
        assert!(
            decode > Duration::from_millis(100),
            "the decode ({decode:?}) is too quick to show anything"
        );
        assert!(
            longest_gap < Duration::from_millis(50),
            "a 5 ms ticker stalled {longest_gap:?} during a {decode:?} decode"
        );
    }

    #[test]
    fn an_undecodable_file_says_which_and_what_is_supported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notes.wav");
        std::fs::write(&path, b"this is not audio at all").unwrap();
        let msg = decode_file(&path, NB).unwrap_err().to_string();
        assert!(
            msg.contains("notes.wav") && msg.contains("WAV, MP3, FLAC or OGG"),
            "{msg}"
        );
        let missing = decode_file(&dir.path().join("gone.wav"), NB).unwrap_err();
        assert!(matches!(missing, PromptError::Io { .. }));
    }

    #[test]
    fn the_cache_shares_one_copy_until_the_file_changes() {
        let dir = tempfile::tempdir().unwrap();
        let path = tone_wav(dir.path(), 1.0);
        let cache = PromptCache::new();
        let a = cache.get(&path, NB).unwrap();
        let b = cache.get(&path, NB).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let wide = cache.get(&path, SampleRate::Wideband).unwrap();
        assert_eq!(wide.len(), 2 * a.len());
        assert_eq!(cache.len(), 2);

        tone_wav(dir.path(), 0.5);
        let c = cache.get(&path, NB).unwrap();
        assert!(!Arc::ptr_eq(&a, &c));
        assert!((c.len() as i64 - 4000).abs() <= 160);
        assert!(Arc::ptr_eq(&c, &cache.get(&path, NB).unwrap()));
        assert_eq!(cache.len(), 2, "replaced, not added");
    }

    fn ramp(len: usize, base: i16) -> Arc<[i16]> {
        (0..len).map(|i| base + (i % 100) as i16).collect()
    }

    /// Ticks until the player goes idle, collecting frames.
    fn drain(player: &mut Player) -> Vec<(Vec<i16>, u32, bool)> {
        let mut frames = vec![];
        while let Some(f) = player.tick() {
            frames.push((f.samples.to_vec(), f.timestamp, f.marker));
            assert!(frames.len() < 10_000, "never finished");
        }
        frames
    }

    #[test]
    fn warming_decodes_every_prompt_under_the_root_at_each_rate() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("en/digits")).unwrap();
        write_wav(&root.join("en/welcome.wav"), 8000, 1, &[1; 800]);
        write_wav(&root.join("en/digits/1.wav"), 16_000, 1, &[2; 1600]);
        std::fs::write(root.join("en/readme.txt"), "not audio").unwrap();
        std::fs::write(root.join("en/broken.wav"), "not audio either").unwrap();
        let cache = PromptCache::new();
        let held = cache.warm(root, &[NB, SampleRate::Wideband]);
        assert_eq!(
            held, 4,
            "two prompts at two rates; the broken one is skipped"
        );
        // Held: a second warm-up decodes nothing new, and a lookup is a hit.
        assert_eq!(cache.warm(root, &[NB, SampleRate::Wideband]), 4);
        assert_eq!(
            cache.get(&root.join("en/digits/1.wav"), NB).unwrap().len(),
            800
        );
    }

    #[test]
    fn frames_carry_rtp_timestamps_and_one_marker() {
        let mut player = Player::new(NB, 8000, 4_294_967_000);
        player.play(Playlist::new().then(ramp(8000, 0)));
        let frames = drain(&mut player);
        assert_eq!(frames.len(), 50);
        for (i, (samples, ts, marker)) in frames.iter().enumerate() {
            assert_eq!(samples.len(), 160);
            assert_eq!(*ts, 4_294_967_000u32.wrapping_add(160 * i as u32));
            assert_eq!(*marker, i == 0);
        }
        assert_eq!(player.poll_event(), Some(PlayerEvent::Finished));
        assert_eq!(player.poll_event(), None);

        // Idle ticks still move the clock; the next prompt starts a new
        // talkspurt.
        player.tick();
        player.play(Playlist::new().then(ramp(100, 0)));
        let again = drain(&mut player);
        assert_eq!(again.len(), 1);
        let expected_ts = 4_294_967_000u32.wrapping_add(160 * 52);
        assert_eq!((again[0].1, again[0].2), (expected_ts, true));
        assert!(
            again[0].0[100..].iter().all(|&s| s == 0),
            "padded with silence"
        );
    }

    #[test]
    fn g722_frames_have_320_samples_but_advance_the_clock_by_160() {
        let mut player = Player::new(SampleRate::Wideband, 8000, 0);
        player.play(Playlist::new().then(ramp(640, 0)));
        let frames = drain(&mut player);
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0].0.len(), 320);
        assert_eq!(frames[1].1, 160);
    }

    #[test]
    fn a_playlist_plays_its_prompts_back_to_back() {
        let (a, b, c) = (ramp(250, 1000), ramp(90, 2000), ramp(333, 3000));
        let mut player = Player::new(NB, 8000, 0);
        player.play(
            Playlist::new()
                .then(a.clone())
                .then(b.clone())
                .then(c.clone()),
        );
        let played: Vec<i16> = drain(&mut player).into_iter().flat_map(|f| f.0).collect();
        let expected: Vec<i16> = a.iter().chain(&*b).chain(&*c).copied().collect();
        assert_eq!(played.len(), 5 * 160);
        assert_eq!(&played[..expected.len()], &expected[..]);
        assert!(played[expected.len()..].iter().all(|&s| s == 0));
    }

    #[test]
    fn music_on_hold_loops_until_stopped() {
        let tune = ramp(100, 500);
        let mut player = Player::new(NB, 8000, 0);
        player.play(Playlist::new().then(tune.clone()).looping(true));
        let mut played = vec![];
        for _ in 0..20 {
            played.extend_from_slice(player.tick().unwrap().samples);
        }
        assert!(played.iter().enumerate().all(|(i, &s)| s == tune[i % 100]));
        assert_eq!(player.poll_event(), None);
        assert!(player.stop());
        assert_eq!(player.poll_event(), Some(PlayerEvent::Stopped));
        assert!(player.tick().is_none());
    }

    #[test]
    fn a_digit_stops_only_a_playlist_that_allows_barge_in() {
        let mut player = Player::new(NB, 8000, 0);
        player.play(Playlist::new().then(ramp(8000, 0)));
        player.tick();
        assert!(!player.on_digit());
        assert!(player.is_playing());

        player.play(Playlist::new().then(ramp(8000, 0)).barge_in(true));
        assert_eq!(player.poll_event(), Some(PlayerEvent::Stopped), "replaced");
        player.tick();
        assert!(player.on_digit());
        assert!(!player.is_playing());
        assert_eq!(player.poll_event(), Some(PlayerEvent::Stopped));
        assert!(player.tick().is_none());

        player.play(Playlist::new());
        assert_eq!(player.poll_event(), Some(PlayerEvent::Finished));
    }
}
