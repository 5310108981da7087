//! Cost per 20 ms frame of the media engine's sample work: transcoding
//! between PCMU, PCMA and G.722, and in-band DTMF detection.
//!
//! Run with `cargo bench --bench media_codec`. Each iteration handles one
//! 20 ms frame of a one-second speech-like signal (a gliding harmonic buzz),
//! cycling through the frames so that codec and filter state evolve as in a
//! call. A call leg needs 50 such frames per second and direction.

use std::f64::consts::PI;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use switchboard::media::codec::{Codec, Encoder, Transcoder, MAX_PAYLOAD};
use switchboard::media::dtmf::InbandDetector;

/// One second of a voice-like signal at `rate`.
fn signal(rate: u32) -> Vec<i16> {
    let mut phase = 0.0f64;
    (0..rate)
        .map(|n| {
            let t = n as f64 / rate as f64;
            let pitch = 160.0 + 60.0 * (2.0 * PI * 0.9 * t).sin();
            phase += 2.0 * PI * pitch / rate as f64;
            let v: f64 = (1..=12).map(|h| (h as f64 * phase).sin() / h as f64).sum();
            (v * 5000.0) as i16
        })
        .collect()
}

/// The 20 ms payloads of one second of `signal` in `codec`.
fn frames(codec: Codec) -> Vec<Vec<u8>> {
    let pcm = signal(codec.sample_rate());
    let mut encoder = Encoder::new(codec);
    pcm.chunks(codec.samples_per_frame())
        .map(|chunk| {
            let mut out = vec![0; codec.payload_len(chunk.len())];
            encoder.encode(chunk, &mut out).unwrap();
            out
        })
        .collect()
}

fn transcoding(c: &mut Criterion) {
    let mut group = c.benchmark_group("transcode_20ms");
    group.throughput(Throughput::Elements(1));
    for (from, to) in [
        (Codec::Pcmu, Codec::Pcma),
        (Codec::Pcmu, Codec::G722),
        (Codec::G722, Codec::Pcmu),
    ] {
        let input = frames(from);
        let mut transcoder = Transcoder::new(from, to);
        let mut out = [0u8; MAX_PAYLOAD];
        let mut next = 0;
        let name = format!("{}_to_{}", from.encoding_name(), to.encoding_name());
        group.bench_function(name, |b| {
            b.iter(|| {
                let frame = &input[next];
                next = (next + 1) % input.len();
                let n = transcoder.transcode(black_box(frame), &mut out).unwrap();
                black_box(&out[..n]);
            })
        });
    }
    group.finish();
}

fn inband_dtmf(c: &mut Criterion) {
    let pcm = signal(8000);
    let mut detector = InbandDetector::new();
    let mut frames = pcm.chunks(160).cycle();
    let mut group = c.benchmark_group("dtmf_inband_20ms");
    group.throughput(Throughput::Elements(1));
    group.bench_function("goertzel", |b| {
        b.iter(|| {
            detector.process(black_box(frames.next().unwrap()));
            black_box(detector.poll());
        })
    });
    group.finish();
}

criterion_group!(benches, transcoding, inband_dtmf);
criterion_main!(benches);
