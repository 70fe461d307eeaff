//! Criterion benches for dedup: signature of a tensor (cost independent of its size),
//! index insert, query, and a synthetic index of 1M signatures (its memory is printed).

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use fastckpt_core::dedup::{estimate, signature, Entry, Index, LshParams};
use fastckpt_core::DType;

/// A deterministic xorshift stream.
fn stream(seed: u64) -> impl FnMut() -> u64 {
    let mut s = seed | 1;
    move || {
        s ^= s << 13;
        s ^= s >> 7;
        s ^= s << 17;
        s
    }
}

fn floats(n: usize, seed: u64) -> Vec<u8> {
    let mut next = stream(seed);
    (0..n)
        .flat_map(|_| ((next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5).to_le_bytes())
        .collect()
}

/// `n` entries: families of 100 near duplicates (4 bits flipped) over 100 shape classes.
fn entries(n: usize) -> Vec<Entry> {
    let mut next = stream(7);
    let fams = (n / 100).max(1);
    let bases: Vec<u128> = (0..fams)
        .map(|_| (next() as u128) << 64 | next() as u128)
        .collect();
    (0..n)
        .map(|i| {
            let f = i % fams;
            let flip = (0..4).fold(0u128, |m, _| m | 1u128 << (next() % 128));
            Entry {
                checkpoint: format!("c{}", f % 1000),
                tensor: format!("t{i}"),
                dtype: DType::F32,
                numel: 1000 + (f % 100) as u64,
                raw_hash: i as u128,
                signature: bases[f] ^ flip,
            }
        })
        .collect()
}

fn bench_signature(c: &mut Criterion) {
    let mut g = c.benchmark_group("dedup/signature");
    for n in [16_384usize, 1 << 20, 1 << 23] {
        let data = floats(n, n as u64);
        g.bench_with_input(BenchmarkId::from_parameter(n), &data, |b, d| {
            b.iter(|| signature(black_box(d), DType::F32).unwrap())
        });
    }
    g.finish();
    let (a, r) = (floats(1 << 20, 1), floats(1 << 20, 2));
    c.bench_function("dedup/estimate_predicted/1M", |b| {
        b.iter(|| estimate::predicted(black_box(&a), black_box(&r), DType::F32).unwrap())
    });
}

fn bench_index(c: &mut Criterion) {
    let list = entries(10_000);
    c.bench_function("dedup/insert/10k", |b| {
        b.iter(|| {
            let mut ix = Index::new(LshParams::default()).unwrap();
            for e in list.iter().take(1000) {
                ix.insert(e.clone()).unwrap();
            }
            ix
        })
    });
    for n in [10_000usize, 1_000_000] {
        let t = std::time::Instant::now();
        let mut ix = Index::new(LshParams::default()).unwrap();
        ix.extend(entries(n)).unwrap();
        eprintln!(
            "index of {n} signatures: built in {:.2?}, {:.1} MiB in memory, {:.1} MiB serialized",
            t.elapsed(),
            ix.memory_bytes() as f64 / (1 << 20) as f64,
            ix.to_bytes().len() as f64 / (1 << 20) as f64
        );
        let probes = entries(n);
        let mut k = 0usize;
        c.bench_function(&format!("dedup/query/{n}"), |b| {
            b.iter(|| {
                k = (k + 7919) % probes.len();
                let e = &probes[k];
                ix.query(e.dtype, e.numel, black_box(e.signature), 16)
            })
        });
    }
}

criterion_group!(benches, bench_signature, bench_index);
criterion_main!(benches);
