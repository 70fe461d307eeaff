//! Single-thread speed of the prediction codec next to the standalone codec, per 1 MiB
//! chunk, min of several runs:
//!
//! * `cargo run --release --example predict_speed` — synthetic close fp32 weights;
//! * `cargo run --release --example predict_speed -- PREV.safetensors CUR.safetensors` —
//!   every F32 tensor of CUR against the same-named tensor of PREV (e.g. two checkpoints
//!   of a trajectory exported by `benches/traj_to_safetensors.py`), per tensor class;
//!   each `exp_avg_sq` takes CUR's `exp_avg` beside it as side tensor, as `encode` does.
mod common;
use common::safetensors;
use std::collections::BTreeMap;
use std::time::Instant;

use fastckpt_core::container::{chunk_size, DEFAULT_CHUNK_BYTES};
use fastckpt_core::{codec, predict, DType};

const RUNS: usize = 7;

/// Chunks of one class: (reference, current) raw bytes and the side tensor's chunk, if
/// any, one entry per chunk.
type Pairs = Vec<(Vec<u8>, Vec<u8>, Option<Vec<u8>>)>;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let classes = match args.as_slice() {
        [prev, cur] => real_pairs(prev, cur),
        [] => synthetic_pairs(),
        _ => panic!("usage: predict_speed [PREV.safetensors CUR.safetensors]"),
    };
    if let Ok(mode) = std::env::var("PREDICT_PROFILE") {
        let all: Pairs = classes.into_values().flatten().collect();
        return profile(&mode, &all);
    }
    println!(
        "{:<11} {:>7} | {:>7} {:>8} {:>8} | {:>7} {:>8} {:>8} | {:>5} {:>5}",
        "class",
        "MB",
        "ratio",
        "enc MB/s",
        "dec MB/s",
        "pred",
        "enc MB/s",
        "dec MB/s",
        "enc%",
        "dec%"
    );
    for (class, pairs) in &classes {
        report(class, pairs);
    }
    let all: Pairs = classes.into_values().flatten().collect();
    report("all", &all);
}

/// Times both codecs over `pairs` and prints one row: standalone, then predicted, then
/// predicted speed as a percentage of standalone. The four timings alternate within each
/// run (the machine's load then affects them alike) and each keeps its best run.
fn report(class: &str, pairs: &Pairs) {
    let dtype = DType::F32;
    let raw: usize = pairs.iter().map(|p| p.1.len()).sum();
    let sa: Vec<Vec<u8>> = pairs
        .iter()
        .map(|p| codec::encode_chunk(&p.1, dtype))
        .collect();
    let pr: Vec<Vec<u8>> = pairs
        .iter()
        .map(|p| predict::encode_chunk_side(&p.1, &p.0, p.2.as_deref(), dtype))
        .collect();
    let mut out = vec![0u8; chunk_size(dtype, DEFAULT_CHUNK_BYTES)];
    for (c, p) in pr.iter().zip(pairs) {
        predict::decode_chunk_side(c, &p.0, p.2.as_deref(), dtype, &mut out[..p.1.len()]).unwrap();
        assert!(out[..p.1.len()] == p.1[..], "round trip");
    }
    let mut best = [f64::MAX; 4];
    for _ in 0..RUNS {
        let t = [
            time(|| {
                pairs
                    .iter()
                    .for_each(|p| drop(codec::encode_chunk(&p.1, dtype)))
            }),
            time(|| {
                pairs.iter().for_each(|p| {
                    drop(predict::encode_chunk_side(
                        &p.1,
                        &p.0,
                        p.2.as_deref(),
                        dtype,
                    ))
                })
            }),
            time(|| {
                for (c, p) in sa.iter().zip(pairs) {
                    codec::decode_chunk(c, dtype, &mut out[..p.1.len()]).unwrap();
                }
            }),
            time(|| {
                for (c, p) in pr.iter().zip(pairs) {
                    let side = p.2.as_deref();
                    predict::decode_chunk_side(c, &p.0, side, dtype, &mut out[..p.1.len()])
                        .unwrap();
                }
            }),
        ];
        for (b, t) in best.iter_mut().zip(t) {
            *b = b.min(t);
        }
    }
    let [te_s, te_p, td_s, td_p] = best;
    let size = |v: &[Vec<u8>]| v.iter().map(Vec::len).sum::<usize>() as f64 / raw as f64;
    let mb = raw as f64 / 1e6;
    println!(
        "{class:<11} {mb:>7.1} | {:>7.4} {:>8.0} {:>8.0} | {:>7.4} {:>8.0} {:>8.0} | {:>5.0} {:>5.0}",
        size(&sa),
        mb / te_s,
        mb / td_s,
        size(&pr),
        mb / te_p,
        mb / td_p,
        100.0 * te_s / te_p,
        100.0 * td_s / td_p
    );
}

/// Only the predicted encode (`enc`) or decode (`dec`) of `pairs`, 20 times, for
/// `perf record` (set `PREDICT_PROFILE`).
fn profile(mode: &str, pairs: &Pairs) {
    let dtype = DType::F32;
    let pr: Vec<Vec<u8>> = pairs
        .iter()
        .map(|p| predict::encode_chunk_side(&p.1, &p.0, p.2.as_deref(), dtype))
        .collect();
    let mut out = vec![0u8; chunk_size(dtype, DEFAULT_CHUNK_BYTES)];
    let t = Instant::now();
    for _ in 0..20 {
        if mode == "enc" {
            for p in pairs {
                drop(predict::encode_chunk_side(
                    &p.1,
                    &p.0,
                    p.2.as_deref(),
                    dtype,
                ));
            }
        } else {
            for (c, p) in pr.iter().zip(pairs) {
                let side = p.2.as_deref();
                predict::decode_chunk_side(c, &p.0, side, dtype, &mut out[..p.1.len()]).unwrap();
            }
        }
    }
    let raw: usize = pairs.iter().map(|p| p.1.len()).sum();
    println!(
        "{mode}: {:.0} MB/s",
        20.0 * raw as f64 / 1e6 / t.elapsed().as_secs_f64()
    );
}

fn time(mut f: impl FnMut()) -> f64 {
    let t = Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

/// Four chunks of synthetic close weights (a relative step of ~1e-4).
fn synthetic_pairs() -> BTreeMap<String, Pairs> {
    let mut s = 1u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let prev: Vec<f32> = (0..4 * 262_144).map(|_| next() * 0.05).collect();
    let cur: Vec<f32> = prev.iter().map(|p| p + next() * 1e-4 * p.abs()).collect();
    let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|v| v.to_le_bytes()).collect() };
    let (rb, xb) = (bytes(&prev), bytes(&cur));
    let pairs = rb
        .chunks(DEFAULT_CHUNK_BYTES)
        .zip(xb.chunks(DEFAULT_CHUNK_BYTES))
        .map(|(r, x)| (r.to_vec(), x.to_vec(), None))
        .collect();
    BTreeMap::from([("synthetic".to_string(), pairs)])
}

/// Same-named F32 tensors of two safetensors files, cut into chunks, by tensor class.
fn real_pairs(prev: &str, cur: &str) -> BTreeMap<String, Pairs> {
    let (prev, cur) = (safetensors(prev), safetensors(cur));
    let mut classes: BTreeMap<String, Pairs> = BTreeMap::new();
    let chunk = chunk_size(DType::F32, DEFAULT_CHUNK_BYTES);
    for (name, x) in &cur {
        let Some(r) = prev.get(name).filter(|r| r.len() == x.len()) else {
            continue;
        };
        let class = if name.ends_with("exp_avg_sq") {
            "exp_avg_sq"
        } else if name.ends_with("exp_avg") {
            "exp_avg"
        } else {
            "weights"
        };
        let side = name
            .strip_suffix("_sq")
            .filter(|_| class == "exp_avg_sq")
            .and_then(|m| cur.get(m))
            .filter(|m| m.len() == x.len());
        let pairs = classes.entry(class.to_string()).or_default();
        for (k, (rc, xc)) in r.chunks(chunk).zip(x.chunks(chunk)).enumerate() {
            let sc = side.map(|m| m[k * chunk..k * chunk + xc.len()].to_vec());
            pairs.push((rc.to_vec(), xc.to_vec(), sc));
        }
    }
    classes
}
