//! Call records into SQLite (`synchronous=FULL`, WAL): one transaction per record, as
//! before, against the record writer's batches of up to 64.
//! Run: cargo bench --bench store_write
//!
//! Each iteration writes 64 records of ended calls into a fresh database in a temporary
//! directory (on the file system `TMPDIR` names: the figure is that disk's sync cost).

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use switchboard::store::{CallRecord, Store};

const RECORDS: usize = 64;

fn records(round: usize) -> Vec<CallRecord> {
    (0..RECORDS)
        .map(|i| CallRecord {
            call_uuid: format!("bench-{round}-{i}"),
            a_call_id: format!("{round}-{i}@bench"),
            from_user: "5551234".into(),
            dialed: "100".into(),
            arrived_ms: 1_000,
            answered_ms: Some(3_000),
            ended_ms: 63_000,
            ..Default::default()
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = rt.block_on(Store::open(dir.path())).unwrap();
    let mut round = 0;
    let mut next = || {
        round += 1;
        records(round)
    };
    let mut g = c.benchmark_group("store_write");
    g.throughput(Throughput::Elements(RECORDS as u64));
    g.measurement_time(Duration::from_secs(10));
    g.bench_function("one transaction per record", |b| {
        b.iter_batched(
            &mut next,
            |recs| {
                rt.block_on(async {
                    for r in &recs {
                        store.write_call(r).await.unwrap();
                    }
                })
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("64 records per transaction", |b| {
        b.iter_batched(
            &mut next,
            |recs| {
                let refs: Vec<&CallRecord> = recs.iter().collect();
                rt.block_on(store.write_calls(&refs)).unwrap()
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
