//! Call recording to stereo WAV files that survive a crash.
//!
//! This module owns the recording file format and its crash safety:
//!
//! * [`Recorder`] writes 16-bit stereo PCM at the call's rate, the caller on
//!   the left channel and our side (agent, barging supervisor: see
//!   [`Mixer::recording`](super::mixer::Mixer::recording)) on the right;
//! * the header's RIFF and `data` sizes are rewritten after every second of
//!   audio, so if the process is killed the file is a valid WAV up to the
//!   last whole second (the kernel keeps what was written; this is not
//!   protection against power loss, which would need an `fsync` per update);
//! * [`repair`] fixes the sizes of a file whose writer died, recovering the
//!   audio written after the last header update as well. Run it at start-up
//!   over recordings that were not finished.
//!
//! Pausing (PCI DSS: card numbers and security codes must never be recorded)
//! writes silence instead of the audio it is given, so the timeline stays
//! true to the call and the audio never reaches the disk.
//!
//! It does blocking file IO, so the call task should hand frames to a
//! writer thread or `spawn_blocking` rather than call it on the async
//! runtime. It never opens sockets, and per frame it allocates nothing: one
//! interleaving buffer is reused and writes go through a buffered writer.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::mixer::SampleRate;

const CHANNELS: u16 = 2;
const BYTES_PER_FRAME: u16 = CHANNELS * 2;
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
    pub duration: Duration,
}

/// Writes one call's recording. See the module docs.
#[derive(Debug)]
pub struct Recorder {
    path: PathBuf,
    rate: SampleRate,
    out: BufWriter<File>,
    frames: u64,
    frames_at_update: u64,
    paused: bool,
    interleaved: Vec<u8>,
}

impl Recorder {
    /// Creates the recording at `path`. Refuses to overwrite an existing
    /// file: a recording is evidence, and a name clash is a bug upstream.
    pub fn create(path: impl Into<PathBuf>, rate: SampleRate) -> io::Result<Self> {
        let path = path.into();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| with_path(&path, e))?;
        let mut out = BufWriter::with_capacity(WRITE_BUFFER, file);
        out.write_all(&header(rate, 0))
            .map_err(|e| with_path(&path, e))?;
        Ok(Recorder {
            path,
            rate,
            out,
            frames: 0,
            frames_at_update: 0,
            paused: false,
            // One 20 ms stereo frame at 16 kHz; larger writes grow it once.
            interleaved: Vec::with_capacity(SampleRate::Wideband.frame_len() * 4),
        })
    }

    /// Appends audio: `caller` to the left channel, `agent` to the right.
    /// Both slices must be the same length (normally one 20 ms frame).
    /// While paused, writes that much silence instead.
    pub fn write(&mut self, caller: &[i16], agent: &[i16]) -> io::Result<()> {
        if caller.len() != agent.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "recording channels differ in length ({} and {} samples): pass one frame \
                     of each",
                    caller.len(),
                    agent.len()
                ),
            ));
        }
        let frames = caller.len() as u64;
        if (self.frames + frames) * u64::from(BYTES_PER_FRAME) > MAX_DATA {
            return Err(io::Error::new(
                io::ErrorKind::FileTooLarge,
                format!(
                    "{}: a WAV file cannot hold more than 4 GiB; start a new recording",
                    self.path.display()
                ),
            ));
        }
        // Zeroed first: while paused that is the silence we write.
        self.interleaved.clear();
        self.interleaved.resize(caller.len() * 4, 0);
        if !self.paused {
            let frames = self.interleaved.chunks_exact_mut(4);
            for ((out, &l), &r) in frames.zip(caller).zip(agent) {
                out[..2].copy_from_slice(&l.to_le_bytes());
                out[2..].copy_from_slice(&r.to_le_bytes());
            }
        }
        self.out.write_all(&self.interleaved)?;
        self.frames += frames;
        if self.frames - self.frames_at_update >= u64::from(self.rate.hz()) {
            self.update_header()?;
        }
        Ok(())
    }

    /// Stops recording audio: from now on [`write`](Self::write) records
    /// silence, keeping the timeline.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    /// Records audio again.
    pub fn resume(&mut self) {
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Length of what has been written, paused stretches included.
    pub fn duration(&self) -> Duration {
        frames_to_duration(self.frames, self.rate.hz())
    }

    /// Completes the file (final sizes, flushed to stable storage) and
    /// returns what goes into the call record.
    pub fn finish(mut self) -> io::Result<Recording> {
        self.update_header()?;
        self.out.get_ref().sync_all()?;
        Ok(Recording {
            path: self.path.clone(),
            duration: self.duration(),
        })
    }

    /// Flushes buffered audio and rewrites the two size fields to match.
    fn update_header(&mut self) -> io::Result<()> {
        self.out.flush()?;
        let data = self.frames * u64::from(BYTES_PER_FRAME);
        write_sizes(self.out.get_mut(), HEADER_LEN, data)?;
        self.out.get_mut().seek(SeekFrom::End(0))?;
        self.frames_at_update = self.frames;
        Ok(())
    }
}

impl Drop for Recorder {
    /// A recorder dropped without [`finish`](Recorder::finish) (an error or
    /// a panic in the call task) still leaves a complete file behind.
    fn drop(&mut self) {
        if self.frames != self.frames_at_update {
            let _ = self.update_header();
        }
    }
}

fn header(rate: SampleRate, data_len: u32) -> [u8; HEADER_LEN as usize] {
    let mut h = [0u8; HEADER_LEN as usize];
    let hz = rate.hz();
    h[0..4].copy_from_slice(b"RIFF");
    h[4..8].copy_from_slice(&(data_len + 36).to_le_bytes());
    h[8..12].copy_from_slice(b"WAVE");
    h[12..16].copy_from_slice(b"fmt ");
    h[16..20].copy_from_slice(&16u32.to_le_bytes());
    h[20..22].copy_from_slice(&1u16.to_le_bytes()); // PCM
    h[22..24].copy_from_slice(&CHANNELS.to_le_bytes());
    h[24..28].copy_from_slice(&hz.to_le_bytes());
    h[28..32].copy_from_slice(&(hz * u32::from(BYTES_PER_FRAME)).to_le_bytes());
    h[32..34].copy_from_slice(&BYTES_PER_FRAME.to_le_bytes());
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

fn frames_to_duration(frames: u64, hz: u32) -> Duration {
    Duration::from_secs_f64(frames as f64 / f64::from(hz))
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
            rec.write(&sine(440.0, hz, AMP, at, n), &sine(700.0, hz, AMP, at, n))
                .unwrap();
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
        let mut rec = Recorder::create(&path, NB).unwrap();
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
    fn a_paused_stretch_is_silence_and_keeps_the_timeline() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pci.wav");
        let mut rec = Recorder::create(&path, SampleRate::Wideband).unwrap();
        let at = talk(&mut rec, 0, 1.0);
        rec.pause();
        assert!(rec.is_paused());
        let at = talk(&mut rec, at, 0.5); // the card number
        rec.resume();
        talk(&mut rec, at, 1.0);
        let done = rec.finish().unwrap();
        assert_eq!(done.path, path);
        assert_eq!(done.duration, Duration::from_millis(2500));

        let (spec, left, right) = read(&path);
        assert_eq!(spec.sample_rate, 16_000);
        assert_eq!(left.len(), 40_000);
        let paused = 16_000..24_000;
        assert!(left[paused.clone()].iter().all(|&s| s == 0));
        assert!(right[paused].iter().all(|&s| s == 0));
        assert!(has(&left[..16_000], 440.0, 16_000));
        assert!(has(&right[24_000..], 700.0, 16_000));
        assert!(!repair(&path).unwrap().fixed);
    }

    #[test]
    fn repair_drops_a_torn_sample_and_finds_audio_past_the_last_update() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("torn.wav");
        let mut rec = Recorder::create(&path, NB).unwrap();
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
        let mut rec = Recorder::create(&path, NB).unwrap();
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
        let err = Recorder::create(&path, NB).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert!(err.to_string().contains("taken.wav"));

        let err = repair(&path).unwrap_err().to_string();
        assert!(
            err.contains("taken.wav") && err.contains("move it aside"),
            "{err}"
        );

        let mut rec = Recorder::create(dir.path().join("ok.wav"), NB).unwrap();
        let err = rec.write(&[0; 160], &[0; 80]).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
}
