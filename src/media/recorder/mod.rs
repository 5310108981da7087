//! Call recordings and voicemail messages as WAV files that survive a crash.
//!
//! Two halves:
//!
//! * [`Tape`] is a recording as the packet path sees it: the relay and the
//!   endpoint push 20 ms frames into its ring buffer, which never blocks and
//!   allocates nothing; pausing (PCI DSS: card numbers must never be
//!   recorded) pushes silence instead, so the timeline stays true to the call
//!   and the audio never leaves the packet path. See [`writer`].
//! * [`Recorder`] is the file, written only by the writer thread: 16-bit PCM
//!   at the call's rate, stereo for calls (the caller on the left channel,
//!   our side, agent or barging supervisor, on the right: see
//!   [`Mixer::recording`](super::mixer::Mixer::recording)), mono for
//!   voicemail. The header's RIFF and `data` sizes are rewritten after every
//!   second of audio, so if the process is killed the file is a valid WAV up
//!   to the last whole second (the kernel keeps what was written; this is not
//!   protection against power loss, which would need an `fsync` per update).
//!
//! [`repair`] fixes the sizes of a file whose writer died, recovering the
//! audio written after the last header update as well. The server runs it at
//! start-up over recordings that were not finished.

pub mod writer;

pub use writer::{RecordingWriter, Tape};

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::mixer::SampleRate;

/// Canonical PCM WAV header: RIFF(12) + fmt chunk(8 + 16) + data chunk head(8).
const HEADER_LEN: u64 = 44;
/// Largest `data` chunk a RIFF size field can describe.
const MAX_DATA: u64 = u32::MAX as u64 - (HEADER_LEN - 8);
/// 64 KiB: about 1 s at 16 kHz stereo, so a header update is roughly one
/// write of buffered audio plus two small in-place writes.
const WRITE_BUFFER: usize = 64 * 1024;

/// A finished recording, for the call record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    pub path: PathBuf,
    /// Length of the audio in the file.
    pub duration: Duration,
    /// Audio that never reached the file because the disk fell behind by more
    /// than the tape's buffer (zero unless a disk stalled for that long).
    pub lost: Duration,
}

/// Writes one recording file. See the module docs. Blocking file IO: only
/// the writer thread calls it.
#[derive(Debug)]
pub(crate) struct Recorder {
    path: PathBuf,
    rate: SampleRate,
    channels: u16,
    out: BufWriter<File>,
    samples: u64,
    frames_at_update: u64,
    bytes: Vec<u8>,
}

impl Recorder {
    /// Creates the recording at `path`. Refuses to overwrite an existing
    /// file: a recording is evidence, and a name clash is a bug upstream.
    pub(crate) fn create(path: PathBuf, rate: SampleRate, channels: u16) -> io::Result<Self> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| with_path(&path, e))?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        // The header goes to the file at once: a disk with no room for it fails the
        // recording here, and leaves no empty file behind.
        if let Err(e) = out
            .write_all(&header(rate, channels, 0))
            .and_then(|()| out.flush())
        {
            drop(out.into_parts());
            let _ = std::fs::remove_file(&path);
            return Err(with_path(&path, e));
        }
        Ok(Recorder {
            path,
            rate,
            channels,
            out,
            samples: 0,
            frames_at_update: 0,
            bytes: Vec::with_capacity(WRITE_BUFFER),
        })
    }

    /// Appends interleaved samples (caller, agent, caller, … for stereo). A
    /// frame may be split across two calls; [`checkpoint`](Self::checkpoint)
    /// is called once whole frames are in.
    pub(crate) fn write_interleaved(&mut self, samples: &[i16]) -> io::Result<()> {
        if (self.samples + samples.len() as u64) * 2 > MAX_DATA {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "{}: a WAV file cannot hold more than 4 GiB; start a new recording",
                    self.path.display()
                ),
            ));
        }
        for chunk in samples.chunks(WRITE_BUFFER / 2) {
            self.bytes.clear();
            self.bytes
                .extend(chunk.iter().flat_map(|s| s.to_le_bytes()));
            self.out.write_all(&self.bytes)?;
        }
        self.samples += samples.len() as u64;
        Ok(())
    }

    /// Rewrites the header's sizes if a second of audio came in since the
    /// last time.
    pub(crate) fn checkpoint(&mut self) -> io::Result<()> {
        if self.frames() - self.frames_at_update >= u64::from(self.rate.hz()) {
            self.update_header()?;
        }
        Ok(())
    }

    /// Length of what has been written, paused stretches included.
    pub(crate) fn duration(&self) -> Duration {
        frames_to_duration(self.frames(), self.rate.hz())
    }

    fn frames(&self) -> u64 {
        self.samples / u64::from(self.channels)
    }

    /// Completes the file (final sizes, flushed to stable storage) and
    /// returns what goes into the call record.
    pub(crate) fn finish(mut self, lost: Duration) -> io::Result<Recording> {
        self.update_header()?;
        self.out.get_ref().sync_all()?;
        Ok(Recording {
            path: self.path.clone(),
            duration: self.duration(),
            lost,
        })
    }

    /// Flushes buffered audio and rewrites the two size fields to match.
    fn update_header(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let data = self.frames() * u64::from(self.channels) * 2;
        write_sizes(self.out.get_mut(), HEADER_LEN, data)?;
        self.out.get_mut().seek(SeekFrom::End(0))?;
        self.frames_at_update = self.frames();
        Ok(())
    }
}

impl Drop for Recorder {
    /// A recorder dropped without [`finish`](Recorder::finish) (an error or
    /// a panic in the call task) still leaves a complete file behind.
    fn drop(&mut self) {
        if self.frames() != self.frames_at_update {
            let _ = self.update_header();
        }
    }
}

fn header(rate: SampleRate, channels: u16, data_len: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let hz = rate.hz();
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(data_len + 36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    let block = channels * 2;
    h[22..24].copy_from_slice(&channels.to_le_bytes());
    h[24..28].copy_from_slice(&hz.to_le_bytes());
    h[28..32].copy_from_slice(&(hz * u32::from(block)).to_le_bytes());
    h[32..34].copy_from_slice(&block.to_le_bytes());
    h[34..36].copy_from_slice(&16u16.to_le_bytes());
    h[36..40].copy_from_slice(b"data");
    h[40..44].copy_from_slice(&data_len.to_le_bytes());
    h
}

/// Writes the RIFF size and the `data` chunk size for `data_len` bytes of
/// audio starting at `data_start`.
fn write_sizes(file: &mut File, data_start: u64, data_len: u64) -> io::Result<()> {
    let riff = u32::try_from(data_start - 8 + data_len).unwrap_or(u32::MAX);
    let data = u32::try_from(data_len).unwrap_or(u32::MAX);
    file.seek(SeekFrom::Start(4))?;
    file.write_all(&riff.to_le_bytes())?;
    file.seek(SeekFrom::Start(data_start - 4))?;
    file.write_all(&data.to_le_bytes())
}

/// Exact for every whole number of samples (a float would round 0.2 s down).
pub(crate) fn frames_to_duration(frames: u64, hz: u32) -> Duration {
    let hz = u64::from(hz.max(1));
    Duration::from_secs(frames / hz) + Duration::from_nanos(frames % hz * 1_000_000_000 / hz)
}

fn with_path(path: &Path, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn not_repairable(path: &Path, why: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "{}: {why}; it cannot be repaired as a recording, move it aside",
            path.display()
        ),
    )
}

/// What [`repair`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Repaired {
    /// Whether the header had to be fixed (its writer died).
    pub fixed: bool,
    /// Length of the audio in the file now.
    pub duration: Duration,
}

/// Makes a WAV file whose writer died readable again: sets the RIFF and
/// `data` sizes to the audio actually in the file, dropping a trailing
/// partial sample frame. A complete file is left untouched.
///
/// Works on any PCM WAV whose `data` chunk is the last one, which is how
/// every writer that streams audio lays files out.
pub fn repair(path: &Path) -> io::Result<Repaired> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|e| with_path(path, e))?;
    let len = file.metadata()?.len();
    let mut riff = [0u8; 12];
    file.read_exact(&mut riff)
        .map_err(|_| not_repairable(path, "shorter than a WAV header"))?;
    if &riff[0..4] != b"RIFF" || &riff[8..12] != b"WAVE" {
        return Err(not_repairable(path, "not a WAV file (no RIFF/WAVE header)"));
    }
    let riff_size = u64::from(u32::from_le_bytes(riff[4..8].try_into().unwrap()));

    // Walk the chunks up to `data`, picking up the frame size from `fmt `.
    let mut pos = 12u64;
    let mut format: Option<(u32, u16)> = None; // (byte rate, block align)
    let (data_start, declared) = loop {
        let mut head = [0u8; 8];
        file.seek(SeekFrom::Start(pos))?;
        file.read_exact(&mut head)
            .map_err(|_| not_repairable(path, "no data chunk"))?;
        let size = u64::from(u32::from_le_bytes(head[4..8].try_into().unwrap()));
        match &head[0..4] {
            b"data" => break (pos + 8, size),
            b"fmt " => {
                let mut fmt = [0u8; 16];
                file.read_exact(&mut fmt)
                    .map_err(|_| not_repairable(path, "truncated fmt chunk"))?;
                let byte_rate = u32::from_le_bytes(fmt[8..12].try_into().unwrap());
                let align = u16::from_le_bytes(fmt[12..14].try_into().unwrap());
                format = Some((byte_rate, align));
            }
            _ => {}
        }
        // Chunks are padded to an even length.
        pos += 8 + size + (size & 1);
    };
    let (byte_rate, align) = match format {
        Some((rate, align)) if rate > 0 && align > 0 => (rate, u64::from(align)),
        _ => return Err(not_repairable(path, "no usable fmt chunk before the data")),
    };

    let available = len.saturating_sub(data_start).min(MAX_DATA);
    let intact = declared <= available && riff_size + 8 == len;
    let data_len = if intact {
        declared
    } else {
        let whole = available - available % align;
        if data_start + whole < len {
            file.set_len(data_start + whole)?;
        }
        write_sizes(&mut file, data_start, whole)?;
        file.sync_all()?;
        whole
    };
    Ok(Repaired {
        fixed: !intact,
        duration: Duration::from_secs_f64(data_len as f64 / f64::from(byte_rate)),
    })
}

#[cfg(test)]
mod tests {
    use super::super::mixer::signal::{amplitude, sine};
    use super::*;

    const NB: SampleRate = SampleRate::Narrowband;
    const AMP: f64 = 8_000.0;

    /// Records `secs` of 440 Hz (caller) and 700 Hz (agent) in 20 ms frames.
    fn talk(rec: &mut Recorder, start: usize, secs: f64) -> usize {
        let n = rec.rate.frame_len();
        let hz = rec.rate.hz();
        let frames = (secs * 50.0).round() as usize;
        for i in 0..frames {
            let at = start + i * n;
            let (l, r) = (sine(440.0, hz, AMP, at, n), sine(700.0, hz, AMP, at, n));
            let both: Vec<i16> = l.into_iter().zip(r).flat_map(|(l, r)| [l, r]).collect();
            rec.write_interleaved(&both).unwrap();
            rec.checkpoint().unwrap();
        }
        start + frames * n
    }

    fn read(path: &Path) -> (hound::WavSpec, Vec<i16>, Vec<i16>) {
        let mut reader = hound::WavReader::open(path).unwrap();
        let spec = reader.spec();
        let samples: Vec<i16> = reader.samples::<i16>().map(Result::unwrap).collect();
        let left = samples.iter().step_by(2).copied().collect();
        let right = samples.iter().skip(1).step_by(2).copied().collect();
        (spec, left, right)
    }

    fn has(x: &[i16], freq: f64, hz: u32) -> bool {
        amplitude(x, freq, hz) > 0.9 * AMP
    }

    fn lacks(x: &[i16], freq: f64, hz: u32) -> bool {
        amplitude(x, freq, hz) < 0.01 * AMP
    }

    #[test]
    fn a_killed_writer_leaves_a_readable_file_that_repair_completes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("call.wav");
        let mut rec = Recorder::create(path.clone(), NB, 2).unwrap();
        talk(&mut rec, 0, 3.3);
        // No destructor, no flush: what a kill -9 leaves.
        std::mem::forget(rec);

        let (spec, left, _) = read(&path);
        assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
        assert_eq!(left.len(), 3 * 8000, "valid up to the last whole second");

        // Whether the last 0.3 s reached the disk depends on the write
        // buffer; either way repair keeps everything that did.
        let repaired = repair(&path).unwrap();
        let secs = repaired.duration.as_secs_f64();
        assert!((3.0..=3.3).contains(&secs), "{secs} s");
        let (spec, left, right) = read(&path);
        assert_eq!(
            (spec.channels, spec.sample_rate, spec.bits_per_sample),
            (2, 8000, 16)
        );
        assert!(left.len() >= 3 * 8000 && left.len() <= 33 * 800);
        assert!(has(&left, 440.0, 8000) && lacks(&left, 700.0, 8000));
        assert!(has(&right, 700.0, 8000) && lacks(&right, 440.0, 8000));

        assert_eq!(
            repair(&path).unwrap(),
            Repaired {
                fixed: false,
                ..repaired
            }
        );
    }

    #[test]
    fn a_finished_file_has_exact_sizes_and_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("done.wav");
        let mut rec = Recorder::create(path.clone(), SampleRate::Wideband, 2).unwrap();
        talk(&mut rec, 0, 2.5);
        let done = rec.finish(Duration::ZERO).unwrap();
        assert_eq!(done.path, path);
        assert_eq!(done.duration, Duration::from_millis(2500));
        let (spec, left, right) = read(&path);
        assert_eq!(spec.sample_rate, 16_000);
        assert_eq!(left.len(), 40_000);
        assert!(has(&left, 440.0, 16_000) && has(&right, 700.0, 16_000));
        assert!(!repair(&path).unwrap().fixed);
    }

    #[test]
    fn repair_drops_a_torn_sample_and_finds_audio_past_the_last_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn.wav");
        let mut rec = Recorder::create(path.clone(), NB, 2).unwrap();
        talk(&mut rec, 0, 0.5);
        rec.out.flush().unwrap(); // on disk, but the header still says 0
        std::mem::forget(rec);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[1, 2, 3]).unwrap(); // a write torn mid-frame
        drop(f);

        let repaired = repair(&path).unwrap();
        assert_eq!(repaired.duration, Duration::from_millis(500));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 44 + 4000 * 4);
        assert_eq!(read(&path).1.len(), 4000);
    }

    #[test]
    fn a_dropped_recorder_completes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dropped.wav");
        let mut rec = Recorder::create(path.clone(), NB, 2).unwrap();
        talk(&mut rec, 0, 0.3);
        drop(rec);
        assert_eq!(read(&path).1.len(), 2400);
        assert!(!repair(&path).unwrap().fixed);
    }

    #[test]
    fn refusals_say_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("taken.wav");
        std::fs::write(&path, b"not a wav").unwrap();
        let err = Recorder::create(path.clone(), NB, 2).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("taken.wav"));

        let err = repair(&path).unwrap_err().to_string();
        assert!(
            err.contains("taken.wav") && err.contains("move it aside"),
            "{err}"
        );
    }
}
