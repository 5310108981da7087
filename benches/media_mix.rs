//! Cost of the per-call media work that runs on every 20 ms tick, and of
//! loading prompts.
//! Run: cargo bench --bench media_mix
//!
//! * `mixer_tick/<mode>`: one tick of a call at 8 kHz with caller, agent and
//!   one supervisor in that mode: three frames pushed, mixed, four outputs
//!   read (three parties plus the recording pair);
//! * `jitter/push_pop`: one packet through a leg's jitter buffer;
//! * `recorder/write_20ms`: one stereo 20 ms frame written to a recording,
//!   header updates every second included;
//! * `player/tick`: one frame out of a looping prompt;
//! * `prompt_decode/<file>`: decode and resample a prompt to 8 kHz; the
//!   throughput is in seconds of audio per second ("elem/s");
//! * `taps_tick/<case>`: the whole per-tick work of a tapped bridge, as the
//!   relay runs it: one RTP packet in per party, jitter buffers, decoding, the
//!   mix, and every mixed output encoded into a packet (`record` also writes
//!   the recording; `transcode_pcmu_g722` is a bridge between a PCMU and a
//!   G.722 leg with no tap).
//!
//! Before measuring, the bench checks with a counting allocator that the
//! per-tick paths allocate nothing once set up.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::media::codec::{Codec, Encoder};
use switchboard::media::mixer::{JitterBuffer, Mixer, Mode, Party, SampleRate, SupervisorId};
use switchboard::media::prompt::{decode_file, Player, Playlist};
use switchboard::media::recorder::{RecordingWriter, Tape};
use switchboard::media::taps::{LegFormat, Taps, Who};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// Only the thread being measured counts: the recording writer thread allocates as
    /// it opens files, and that is not the packet path.
    static MEASURED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn count() {
    if MEASURED.with(|m| m.get()) {
        ALLOCATIONS.fetch_add(1, Relaxed);
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn assert_no_alloc(what: &str, mut f: impl FnMut()) {
    f(); // warm-up: lazily sized buffers settle here
    let before = ALLOCATIONS.load(Relaxed);
    MEASURED.with(|m| m.set(true));
    for _ in 0..500 {
        f();
    }
    MEASURED.with(|m| m.set(false));
    let n = ALLOCATIONS.load(Relaxed) - before;
    assert_eq!(n, 0, "{what} allocated {n} times in 500 ticks");
}

const RATE: SampleRate = SampleRate::Narrowband;
const SUP: SupervisorId = SupervisorId(1);

fn tone(freq: f64, len: usize, rate: u32) -> Vec<i16> {
    (0..len)
        .map(|n| {
            (8000.0 * (2.0 * std::f64::consts::PI * freq * n as f64 / f64::from(rate)).sin()) as i16
        })
        .collect()
}

fn mixer_tick(mixer: &mut Mixer, frames: &[Vec<i16>; 3]) -> i32 {
    mixer.push(Party::Caller, &frames[0]).unwrap();
    mixer.push(Party::Agent, &frames[1]).unwrap();
    mixer.push(Party::Supervisor(SUP), &frames[2]).unwrap();
    mixer.tick();
    let mut sum = 0i32;
    for party in [Party::Caller, Party::Agent, Party::Supervisor(SUP)] {
        sum += i32::from(mixer.output(party).unwrap()[7]);
    }
    let (left, right) = mixer.recording();
    sum + i32::from(left[3]) + i32::from(right[5])
}

fn bench_mixer(c: &mut Criterion) {
    let n = RATE.frame_len();
    let frames = [
        tone(440.0, n, RATE.hz()),
        tone(700.0, n, RATE.hz()),
        tone(1000.0, n, RATE.hz()),
    ];
    let mut group = c.benchmark_group("mixer_tick");
    for (name, mode) in [
        ("listen", Mode::Listen),
        ("whisper", Mode::Whisper),
        ("barge", Mode::Barge),
    ] {
        let mut mixer = Mixer::new(RATE);
        mixer.attach(SUP, mode).unwrap();
        assert_no_alloc("mixer tick", || {
            black_box(mixer_tick(&mut mixer, &frames));
        });
        group.bench_function(name, |b| {
            b.iter(|| mixer_tick(&mut mixer, black_box(&frames)))
        });
    }
    group.finish();
}

fn bench_jitter(c: &mut Criterion) {
    let mut jb = JitterBuffer::new(160);
    let payload = [0x55u8; 160];
    let mut seq = 0u16;
    let mut step = || {
        jb.push(seq, u32::from(seq) * 160, &payload);
        seq = seq.wrapping_add(1);
        matches!(jb.pop(), switchboard::media::mixer::Playout::Packet { .. })
    };
    assert_no_alloc("jitter buffer", || {
        black_box(step());
    });
    c.bench_function("jitter/push_pop", |b| b.iter(&mut step));
}

/// A tape holds 5 s of audio, and criterion writes far faster than real time, so
/// every `TAPE_FRAMES` frames a fresh tape takes over (outside the timed part):
/// what is measured is the packet path's push into a ring with room, as in service.
const TAPE_FRAMES: u64 = 200;

fn bench_recorder(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let writer = RecordingWriter::start(Duration::from_secs(5)).unwrap();
    let mut files = 0;
    let mut next_tape = || {
        files += 1;
        writer.call(dir.path().join(format!("bench-{files}.wav")), RATE)
    };
    let caller = tone(440.0, RATE.frame_len(), RATE.hz());
    let agent = tone(700.0, RATE.frame_len(), RATE.hz());
    let mut tape = next_tape();
    assert_no_alloc("tape write", || tape.write(&caller, &agent).unwrap());
    c.bench_function("recorder/tape_write_20ms", |b| {
        b.iter_custom(|iters| {
            let mut spent = Duration::ZERO;
            for i in 0..iters {
                if i % TAPE_FRAMES == 0 {
                    retire(std::mem::replace(&mut tape, next_tape()));
                }
                let start = std::time::Instant::now();
                tape.write(black_box(&caller), black_box(&agent)).unwrap();
                spent += start.elapsed();
            }
            spent
        })
    });
    retire(tape);
}

/// Ends a bench tape and deletes its file (the writer may still be completing it;
/// the name goes at once, the space once it is closed).
fn retire(tape: Tape) {
    let path = tape.path().to_owned();
    drop(tape);
    let _ = std::fs::remove_file(path);
}

fn bench_player(c: &mut Criterion) {
    let music: Arc<[i16]> = tone(440.0, 8000 * 3 + 77, RATE.hz()).into();
    let mut player = Player::new(RATE, 8000, 0);
    player.play(Playlist::new().then(music).looping(true));
    assert_no_alloc("player tick", || {
        black_box(player.tick().map(|f| f.samples[0]));
    });
    c.bench_function("player/tick", |b| {
        b.iter(|| player.tick().map(|f| f.samples[0]))
    });
}

fn write_wav(path: &Path, secs: u32) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: 44_100,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut w = hound::WavWriter::create(path, spec).unwrap();
    for s in tone(1000.0, 44_100 * secs as usize, 44_100) {
        w.write_sample(s).unwrap();
    }
    w.finalize().unwrap();
}

fn bench_decode(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("prompt-10s.wav");
    write_wav(&wav, 10);
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/audio");
    let files: [(PathBuf, u64); 4] = [
        (wav, 10),
        (fixtures.join("tone-1khz-44k1.flac"), 1),
        (fixtures.join("tone-1khz-44k1.ogg"), 1),
        (fixtures.join("tone-1khz-44k1.mp3"), 1),
    ];
    let mut group = c.benchmark_group("prompt_decode");
    for (path, secs) in &files {
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        group.throughput(Throughput::Elements(*secs));
        group.bench_function(name, |b| b.iter(|| decode_file(path, RATE).unwrap()));
    }
    group.finish();
}

/// One party's RTP stream for the taps bench: a prebuilt 20 ms packet whose
/// sequence number and timestamp advance in place.
struct Stream {
    who: Who,
    packet: Vec<u8>,
    n: u16,
}

impl Stream {
    fn new(who: Who, codec: Codec, freq: f64) -> Stream {
        let pcm = tone(freq, codec.samples_per_frame(), codec.sample_rate());
        let mut payload = vec![0u8; 320];
        let len = Encoder::new(codec).encode(&pcm, &mut payload).unwrap();
        let mut packet = vec![0x80, codec.payload_type(), 0, 0, 0, 0, 0, 0, 0, 0, 0, 7];
        packet.extend_from_slice(&payload[..len]);
        Stream { who, packet, n: 0 }
    }

    fn next(&mut self) -> &[u8] {
        self.n = self.n.wrapping_add(1);
        self.packet[2..4].copy_from_slice(&self.n.to_be_bytes());
        let ts = u32::from(self.n) * 160;
        self.packet[4..8].copy_from_slice(&ts.to_be_bytes());
        &self.packet
    }
}

fn taps_tick(taps: &mut Taps, streams: &mut [Stream], now: std::time::Instant) -> usize {
    for s in streams.iter_mut() {
        let who = s.who;
        taps.receive(who, s.next(), now);
    }
    let mut sent = 0;
    taps.tick(|_, pkt| sent += pkt.len()).unwrap();
    sent
}

fn bench_taps(c: &mut Criterion) {
    let pcmu = LegFormat {
        codec: Codec::Pcmu,
        event_pt: Some(101),
    };
    let g722 = LegFormat {
        codec: Codec::G722,
        event_pt: Some(101),
    };
    let dir = tempfile::tempdir().unwrap();
    let writer = RecordingWriter::start(Duration::from_secs(5)).unwrap();
    let mut group = c.benchmark_group("taps_tick");
    let cases: [(&str, LegFormat, Option<Mode>, bool); 5] = [
        ("listen", pcmu, Some(Mode::Listen), false),
        ("whisper", pcmu, Some(Mode::Whisper), false),
        ("barge", pcmu, Some(Mode::Barge), false),
        ("record", pcmu, None, true),
        ("transcode_pcmu_g722", g722, None, false),
    ];
    for (name, agent, mode, record) in cases {
        let mut taps = Taps::new(pcmu, agent);
        let mut streams = vec![
            Stream::new(Who::Caller, Codec::Pcmu, 440.0),
            Stream::new(Who::Agent, agent.codec, 700.0),
        ];
        if let Some(mode) = mode {
            taps.attach_supervisor(pcmu, mode);
            streams.push(Stream::new(Who::Supervisor, Codec::Pcmu, 1000.0));
        }
        if record {
            let path = dir.path().join(format!("{name}.wav"));
            taps.record(writer.call(path, taps.rate()));
        }
        let now = std::time::Instant::now();
        assert_no_alloc("taps tick", || {
            black_box(taps_tick(&mut taps, &mut streams, now));
        });
        // Criterion runs far faster than real time: a recorded case gets a fresh tape
        // every `TAPE_FRAMES` ticks (untimed), so the ring always has room.
        let mut files = 0u32;
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut spent = Duration::ZERO;
                for i in 0..iters {
                    if record && i % TAPE_FRAMES == 0 {
                        files += 1;
                        let path = dir.path().join(format!("{name}-{files}.wav"));
                        if let Some(old) = taps.record(writer.call(path, taps.rate())) {
                            retire(old);
                        }
                    }
                    let start = std::time::Instant::now();
                    black_box(taps_tick(&mut taps, &mut streams, now));
                    spent += start.elapsed();
                }
                spent
            })
        });
    }
    group.finish();
}

/// One 20 ms PCMU packet re-keyed as the relay does between two SRTP legs: verified and
/// decrypted with one leg's key, encrypted with the other's, in the same buffer.
fn bench_srtp(c: &mut Criterion) {
    use switchboard::media::srtp::{Inbound, MasterKey, Outbound, Suite};
    let mut group = c.benchmark_group("srtp_rekey_20ms");
    for suite in [
        Suite::AesCm128Sha1_80,
        Suite::AeadAes128Gcm,
        Suite::AeadAes256Gcm,
    ] {
        let (in_key, out_key) = (MasterKey::random(suite), MasterKey::random(suite));
        let mut sender = Outbound::new(&in_key);
        let mut receiver = Inbound::new(&in_key);
        let mut onward = Outbound::new(&out_key);
        let mut seq: u16 = 0;
        let mut buf = [0u8; 2048];
        let mut step = move || {
            // The phone's packet, as it arrives.
            seq = seq.wrapping_add(1);
            buf[..12].copy_from_slice(&[0x80, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4]);
            buf[2..4].copy_from_slice(&seq.to_be_bytes());
            buf[12..172].fill(0x55);
            let n = sender.protect_rtp(&mut buf, 172).unwrap();
            // What the relay does with it.
            let plain = receiver.unprotect_rtp(&mut buf[..n]).unwrap();
            onward.protect_rtp(&mut buf, plain).unwrap()
        };
        assert_no_alloc("srtp re-key", || {
            step();
        });
        group.bench_function(suite.name(), |b| b.iter(&mut step));
    }
    group.finish();
}

criterion_group!(
    benches,
    bench_srtp,
    bench_taps,
    bench_mixer,
    bench_jitter,
    bench_recorder,
    bench_player,
    bench_decode
);
criterion_main!(benches);
