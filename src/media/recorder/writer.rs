//! Recordings written off the packet path.
//!
//! A relay or endpoint task that waited on the disk would miss its 20 ms
//! ticks for every call it carries, and a disk that stalls (a full journal,
//! a busy network share) would then cost audio on calls that are not even
//! recorded. So no media task touches a recording file: each recording is a
//! [`Tape`], a single-producer ring buffer of samples that the packet path
//! fills without locking, allocating or waiting, and one writer thread per
//! server ([`RecordingWriter`]) drains every tape into its file every
//! [`TICK`].
//!
//! A disk that stalls for less than the tape's buffer loses nothing: the
//! rings fill and the writer catches up. A longer stall drops the frames
//! that do not fit, counts them (the finished [`Recording`]'s `lost`) and
//! logs it; the call itself never notices. A file that cannot be created or
//! written fails that tape only: its next write says why, and the rest of
//! the calls are recorded as before.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use tokio::sync::oneshot;

use super::{Recorder, Recording};
use crate::media::mixer::SampleRate;

/// How often the writer drains the tapes: ten frames of buffered audio per
/// write, and a finished tape waits at most this long for its file.
pub const TICK: Duration = Duration::from_millis(50);

/// How much audio a tape holds when the disk falls behind, unless the server
/// is started with another figure. 5 s of 16 kHz stereo is 320 KiB per
/// recorded call.
pub const DEFAULT_BUFFER: Duration = Duration::from_secs(5);

/// The server's recording writer: opens tapes, and owns the thread that
/// writes them. Cloning it is cheap; the thread ends when the last clone and
/// the last tape are gone, after completing every file.
#[derive(Debug, Clone)]
pub struct RecordingWriter {
    ctl: mpsc::Sender<Ctl>,
    buffer: Duration,
    next_id: Arc<AtomicU64>,
    /// Recordings that failed (a file not made, a write refused), for `/metrics`.
    failures: Arc<AtomicU64>,
}

enum Ctl {
    Open(Box<Opening>),
    /// A tape was finished; drain it now rather than at the next tick.
    Wake,
    /// Holds the thread as a write stuck in the kernel would (tests only).
    #[cfg(test)]
    Stall(Duration),
}

struct Opening {
    id: u64,
    path: PathBuf,
    rate: SampleRate,
    channels: u16,
    samples: rtrb::Consumer<i16>,
    state: Arc<TapState>,
}

/// What the writer and the packet path share about one tape.
#[derive(Debug, Default)]
struct TapState {
    /// Set once by the writer when the file cannot be created or written.
    failed: OnceLock<String>,
    /// Samples the packet path had to drop because the ring was full.
    dropped: AtomicU64,
    /// Where the finished file is reported, set by [`Tape::finish`].
    done: Mutex<Option<oneshot::Sender<io::Result<Recording>>>>,
}

impl RecordingWriter {
    /// Starts the writer thread; each tape buffers `buffer` of audio.
    pub fn start(buffer: Duration) -> io::Result<RecordingWriter> {
        let (ctl, rx) = mpsc::channel();
        let failures = Arc::new(AtomicU64::new(0));
        let counted = Arc::clone(&failures);
        std::thread::Builder::new()
            .name("recording-writer".into())
            .spawn(move || write_loop(rx, &counted))?;
        Ok(RecordingWriter {
            ctl,
            buffer,
            next_id: Arc::new(AtomicU64::new(0)),
            failures,
        })
    }

    /// How many recordings have failed since the start (each counts once).
    pub fn failures(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.failures)
    }

    /// A tape for a call recording: stereo, caller left, agent right.
    pub fn call(&self, path: PathBuf, rate: SampleRate) -> Tape {
        self.open(path, rate, 2)
    }

    /// A tape for a voicemail message: mono at the leg's rate.
    pub fn message(&self, path: PathBuf, rate: SampleRate) -> Tape {
        self.open(path, rate, 1)
    }

    /// Never blocks: the file is created by the writer thread (with its
    /// directory), and a failure to create it is the tape's first write's
    /// error.
    fn open(&self, path: PathBuf, rate: SampleRate, channels: u16) -> Tape {
        let capacity = (self.buffer.as_millis() as usize * rate.hz() as usize / 1000)
            .max(rate.frame_len())
            * usize::from(channels);
        let (producer, consumer) = rtrb::RingBuffer::new(capacity);
        let state = Arc::new(TapState::default());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let opening = Opening {
            id,
            path: path.clone(),
            rate,
            channels,
            samples: consumer,
            state: Arc::clone(&state),
        };
        if self.ctl.send(Ctl::Open(Box::new(opening))).is_err() {
            let _ = state.failed.set("the recording writer has stopped".into());
        }
        Tape {
            path,
            rate,
            channels,
            samples: Some(producer),
            state,
            ctl: self.ctl.clone(),
            frames: 0,
            paused: false,
            warned: false,
        }
    }

    /// Holds the writer thread for `d`, as a disk whose writes block would.
    #[cfg(test)]
    pub(crate) fn stall(&self, d: Duration) {
        let _ = self.ctl.send(Ctl::Stall(d));
    }
}

/// One recording as the packet path sees it. See the module docs.
#[derive(Debug)]
pub struct Tape {
    path: PathBuf,
    rate: SampleRate,
    channels: u16,
    /// `None` once finished (dropping the producer is what tells the writer).
    samples: Option<rtrb::Producer<i16>>,
    state: Arc<TapState>,
    ctl: mpsc::Sender<Ctl>,
    frames: u64,
    paused: bool,
    warned: bool,
}

impl Tape {
    /// Appends one frame of a call: `caller` to the left channel, `agent` to
    /// the right. Both must be the same length. While paused, that much
    /// silence instead.
    pub fn write(&mut self, caller: &[i16], agent: &[i16]) -> io::Result<()> {
        if caller.len() != agent.len() || self.channels != 2 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: a call recording takes one frame of each party ({} and {} samples)",
                    self.path.display(),
                    caller.len(),
                    agent.len()
                ),
            ));
        }
        let paused = self.paused;
        let interleaved = caller
            .iter()
            .zip(agent)
            .flat_map(move |(&l, &r)| if paused { [0, 0] } else { [l, r] });
        self.push(caller.len() * 2, interleaved)
    }

    /// Appends one frame of a voicemail message.
    pub fn write_mono(&mut self, pcm: &[i16]) -> io::Result<()> {
        let paused = self.paused;
        let samples = pcm.iter().map(move |&s| if paused { 0 } else { s });
        self.push(pcm.len() * usize::from(self.channels), samples)
    }

    fn push(&mut self, n: usize, samples: impl Iterator<Item = i16>) -> io::Result<()> {
        if let Some(why) = self.state.failed.get() {
            return Err(io::Error::other(why.clone()));
        }
        let Some(ring) = &mut self.samples else {
            return Err(io::Error::other("the recording is finished"));
        };
        match ring.write_chunk_uninit(n) {
            Ok(chunk) => {
                chunk.fill_from_iter(samples);
            }
            Err(_) => {
                // The disk is behind by more than the buffer: this frame is lost,
                // the call is not held up.
                self.state.dropped.fetch_add(n as u64, Ordering::Relaxed);
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(
                        file = %self.path.display(),
                        "the disk is behind the recording by more than its buffer; audio is lost"
                    );
                }
            }
        }
        self.frames += (n / usize::from(self.channels)) as u64;
        Ok(())
    }

    /// Writes silence instead of the audio from now on, keeping the timeline.
    pub fn pause(&mut self) {
        self.paused = true;
    }

    pub fn resume(&mut self) {
        self.paused = false;
    }

    pub fn is_paused(&self) -> bool {
        self.paused
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn rate(&self) -> SampleRate {
        self.rate
    }

    /// Length of the audio handed to the tape, paused stretches included.
    pub fn duration(&self) -> Duration {
        super::frames_to_duration(self.frames, self.rate.hz())
    }

    /// Ends the recording. The returned future resolves once the writer has
    /// written the rest and completed the file; the tape's owner can await it
    /// or drop it (the file is completed either way).
    pub fn finish(mut self) -> impl std::future::Future<Output = io::Result<Recording>> {
        let (tx, rx) = oneshot::channel();
        *self.state.done.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        // The reply is in place before the writer can see the ring abandoned.
        self.samples = None;
        let _ = self.ctl.send(Ctl::Wake);
        async move {
            rx.await
                .unwrap_or_else(|_| Err(io::Error::other("the recording writer has stopped")))
        }
    }
}

impl Drop for Tape {
    /// A tape dropped without [`finish`](Tape::finish) (an error or a panic in
    /// its owner) still leaves a complete file: the writer sees the ring
    /// abandoned and completes it.
    fn drop(&mut self) {
        if self.samples.take().is_some() {
            let _ = self.ctl.send(Ctl::Wake);
        }
    }
}

/// A tape as the writer thread holds it.
struct Open {
    file: Result<Recorder, String>,
    path: PathBuf,
    channels: u16,
    rate: SampleRate,
    samples: rtrb::Consumer<i16>,
    state: Arc<TapState>,
    /// Sample frames taken off the tape, written or not.
    frames_taken: u64,
    /// After a write failed: the length of the audio the file kept.
    kept: Option<Duration>,
}

fn write_loop(rx: mpsc::Receiver<Ctl>, failures: &AtomicU64) {
    let mut tapes: HashMap<u64, Open> = HashMap::new();
    let mut senders_gone = false;
    while !(senders_gone && tapes.is_empty()) {
        let first = if senders_gone {
            std::thread::sleep(TICK);
            None
        } else {
            match rx.recv_timeout(TICK) {
                Ok(msg) => Some(msg),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    senders_gone = true;
                    None
                }
            }
        };
        for msg in first
            .into_iter()
            .chain(std::iter::from_fn(|| rx.try_recv().ok()))
        {
            match msg {
                Ctl::Open(o) => {
                    let file = open(&o.path, o.rate, o.channels);
                    if let Err(why) = &file {
                        tracing::warn!(error = %why, "the call cannot be recorded");
                        let _ = o.state.failed.set(why.clone());
                        failures.fetch_add(1, Ordering::Relaxed);
                    }
                    tapes.insert(
                        o.id,
                        Open {
                            file,
                            path: o.path,
                            channels: o.channels,
                            rate: o.rate,
                            samples: o.samples,
                            state: o.state,
                            frames_taken: 0,
                            kept: None,
                        },
                    );
                }
                Ctl::Wake => {}
                #[cfg(test)]
                Ctl::Stall(d) => std::thread::sleep(d),
            }
        }
        // Replies go out after the whole sweep: once a finish is answered, every tape
        // dropped before it was finished has its file complete too.
        let mut replies = Vec::new();
        tapes.retain(|_, tape| !drain(tape, &mut replies, failures));
        for (reply, result) in replies {
            let _ = reply.send(result);
        }
    }
}

type Reply = (
    oneshot::Sender<io::Result<Recording>>,
    io::Result<Recording>,
);

fn open(path: &Path, rate: SampleRate, channels: u16) -> Result<Recorder, String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    Recorder::create(path.to_owned(), rate, channels).map_err(|e| e.to_string())
}

/// Writes what the tape holds; returns whether the tape is done with (its
/// owner finished or dropped it, and its file is complete).
fn drain(tape: &mut Open, replies: &mut Vec<Reply>, failures: &AtomicU64) -> bool {
    // Read before draining: once abandoned, nothing more can arrive.
    let abandoned = tape.samples.is_abandoned();
    let n = tape.samples.slots();
    if n > 0 {
        let chunk = tape.samples.read_chunk(n).expect("slots() are readable");
        if let Ok(rec) = &mut tape.file {
            let (first, second) = chunk.as_slices();
            let written = rec
                .write_interleaved(first)
                .and_then(|()| rec.write_interleaved(second))
                .and_then(|()| rec.checkpoint());
            if let Err(e) = written {
                let why = e.to_string();
                tracing::warn!(error = %why, file = %tape.path.display(), "recording stopped");
                let _ = tape.state.failed.set(why.clone());
                failures.fetch_add(1, Ordering::Relaxed);
                // A full disk refuses the buffered audio, so the header cannot be
                // brought up to date the usual way: once the file is closed, its sizes
                // are set to the audio that did reach it (in place: no new blocks).
                tape.file = Err(why);
                match super::repair(&tape.path) {
                    Ok(r) => tape.kept = Some(r.duration),
                    Err(e) => tracing::warn!(error = %e, "a failed recording could not be closed"),
                }
            }
        }
        tape.frames_taken += (n / usize::from(tape.channels)) as u64;
        chunk.commit_all();
    }
    if !abandoned {
        return false;
    }
    let dropped = tape.state.dropped.load(Ordering::Relaxed) / u64::from(tape.channels);
    let lost = super::frames_to_duration(dropped, tape.rate.hz());
    let file = std::mem::replace(&mut tape.file, Err(String::new()));
    let result = match (file, tape.kept) {
        (Ok(rec), _) => rec.finish(lost),
        // What the file kept before its write failed is the recording; the rest of
        // the call is lost to it.
        (Err(_), Some(kept)) => Ok(Recording {
            path: tape.path.clone(),
            duration: kept,
            lost: super::frames_to_duration(tape.frames_taken, tape.rate.hz()).saturating_sub(kept)
                + lost,
        }),
        (Err(why), None) => Err(io::Error::other(why)),
    };
    if let Ok(done) = &result {
        if !lost.is_zero() {
            tracing::warn!(
                file = %done.path.display(),
                lost_ms = lost.as_millis() as u64,
                "recording finished with audio lost (a slow disk, or a write that failed)"
            );
        }
    }
    let reply = tape
        .state
        .done
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take();
    if let Some(reply) = reply {
        replies.push((reply, result));
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const NB: SampleRate = SampleRate::Narrowband;

    /// Frame `i` of a party: every sample says which call, party and frame it
    /// is, so a lost, repeated or misplaced frame shows in the file.
    fn frame(call: usize, party: i16, i: usize) -> Vec<i16> {
        vec![((call as i16) << 6) ^ (party << 14) ^ (i as i16 & 0x3f); 160]
    }

    fn samples(path: &Path) -> (hound::WavSpec, Vec<i16>) {
        let mut r = hound::WavReader::open(path).unwrap();
        (r.spec(), r.samples::<i16>().map(Result::unwrap).collect())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_stalled_disk_loses_no_audio_of_300_recordings() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RecordingWriter::start(DEFAULT_BUFFER).unwrap();
        let mut tapes: Vec<Tape> = (0..300)
            .map(|i| writer.call(dir.path().join(format!("rec/{i}.wav")), NB))
            .collect();
        // 4 s of calls at the real pace, the disk stuck for 2 s of it.
        let frames = 200;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        for i in 0..frames {
            tick.tick().await;
            if i == 50 {
                writer.stall(Duration::from_secs(2));
            }
            for (call, tape) in tapes.iter_mut().enumerate() {
                tape.write(&frame(call, 0, i), &frame(call, 1, i)).unwrap();
            }
        }
        let mut done = Vec::new();
        for tape in tapes.drain(..) {
            done.push(tape.finish());
        }
        for (call, finishing) in done.into_iter().enumerate() {
            let rec = finishing.await.unwrap();
            assert_eq!(rec.lost, Duration::ZERO, "call {call} lost audio");
            assert_eq!(rec.duration, Duration::from_secs(4));
            let (spec, got) = samples(&rec.path);
            assert_eq!((spec.channels, spec.sample_rate), (2, 8000));
            let want: Vec<i16> = (0..frames)
                .flat_map(|i| {
                    let (l, r) = (frame(call, 0, i), frame(call, 1, i));
                    l.into_iter().zip(r).flat_map(|(l, r)| [l, r])
                })
                .collect();
            assert!(got == want, "call {call}: the file is not the audio given");
        }
    }

    #[tokio::test]
    async fn a_stall_longer_than_the_buffer_loses_audio_but_never_blocks_the_call() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RecordingWriter::start(Duration::from_millis(200)).unwrap();
        let mut tape = writer.call(dir.path().join("slow.wav"), NB);
        writer.stall(Duration::from_millis(600));
        // Give the writer time to open the file and start its stall.
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..25 {
            // 0.5 s of audio offered at once: the ring holds 0.2 s of it.
            tape.write(&frame(0, 0, i), &frame(0, 1, i)).unwrap();
        }
        let rec = tape.finish().await.unwrap();
        assert_eq!(rec.lost, Duration::from_millis(300));
        assert_eq!(rec.duration, Duration::from_millis(200));
        assert_eq!(samples(&rec.path).1.len(), 10 * 320);
    }

    #[tokio::test]
    async fn pause_records_silence_and_voicemail_is_mono() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RecordingWriter::start(DEFAULT_BUFFER).unwrap();
        let mut tape = writer.call(dir.path().join("pci.wav"), NB);
        tape.write(&frame(1, 0, 1), &frame(1, 1, 1)).unwrap();
        tape.pause();
        assert!(tape.is_paused());
        tape.write(&frame(1, 0, 2), &frame(1, 1, 2)).unwrap();
        tape.resume();
        tape.write(&frame(1, 0, 3), &frame(1, 1, 3)).unwrap();
        assert_eq!(tape.duration(), Duration::from_millis(60));
        let rec = tape.finish().await.unwrap();
        let got = samples(&rec.path).1;
        assert_eq!(got.len(), 3 * 320);
        assert!(
            got[320..640].iter().all(|&s| s == 0),
            "paused audio reached the disk"
        );
        assert_eq!(got[640], frame(1, 0, 3)[0]);
        assert_eq!(got[641], frame(1, 1, 3)[0]);

        let mut msg = writer.message(dir.path().join("vm/inbox/1.wav"), SampleRate::Wideband);
        msg.write_mono(&[7; 320]).unwrap();
        assert!(
            msg.write(&[0; 320], &[0; 320]).is_err(),
            "a message has one channel"
        );
        let rec = msg.finish().await.unwrap();
        let (spec, got) = samples(&rec.path);
        assert_eq!((spec.channels, spec.sample_rate), (1, 16000));
        assert_eq!(got, vec![7; 320]);
    }

    #[tokio::test]
    async fn a_file_that_cannot_be_made_fails_its_tape_only_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("taken.wav"), b"evidence").unwrap();
        let writer = RecordingWriter::start(DEFAULT_BUFFER).unwrap();
        let mut bad = writer.call(dir.path().join("taken.wav"), NB);
        let mut good = writer.call(dir.path().join("fine.wav"), NB);
        // The writer opens files on its own thread; the failure shows on a later write.
        let mut failed = None;
        for i in 0..100 {
            good.write(&frame(0, 0, i), &frame(0, 1, i)).unwrap();
            if let Err(e) = bad.write(&frame(1, 0, i), &frame(1, 1, i)) {
                failed = Some(e.to_string());
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let why = failed.expect("writing to an existing file never failed");
        assert!(why.contains("taken.wav"), "{why}");
        assert!(bad.finish().await.is_err());
        assert!(good.finish().await.unwrap().duration > Duration::ZERO);
        assert_eq!(
            std::fs::read(dir.path().join("taken.wav")).unwrap(),
            b"evidence"
        );
    }

    #[tokio::test]
    async fn a_dropped_tape_still_completes_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let writer = RecordingWriter::start(DEFAULT_BUFFER).unwrap();
        let path = dir.path().join("dropped.wav");
        let mut tape = writer.call(path.clone(), NB);
        for i in 0..15 {
            tape.write(&frame(0, 0, i), &frame(0, 1, i)).unwrap();
        }
        drop(tape);
        // A later tape's finish is a barrier: its answer waits for the sweep that
        // completes the dropped one.
        writer
            .call(dir.path().join("after.wav"), NB)
            .finish()
            .await
            .unwrap();
        assert_eq!(samples(&path).1.len(), 15 * 320);
        assert!(!crate::media::recorder::repair(&path).unwrap().fixed);
    }
}
