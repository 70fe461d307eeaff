//! Quick single-thread speed probe (min of N runs, robust on a busy machine):
//! `cargo run --release --example speed -- <file.safetensors>`.

mod common;
use std::time::Instant;

use fastckpt_core::container::bytes::{Reader, Writer};
use fastckpt_core::entropy::freq::{histogram, FreqTable};
use fastckpt_core::entropy::rans;
use fastckpt_core::{codec, DType};

fn min_time(runs: usize, mut f: impl FnMut()) -> f64 {
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min)
}

fn main() {
    let path = std::env::args()
        .nth(1)
        .expect("path to a .safetensors file");
    let buf = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
    let fp32: Vec<u8> = buf[8 + n..].iter().copied().take(16 << 20).collect();
    let bf16: Vec<u8> = fp32.chunks_exact(4).flat_map(|c| [c[2], c[3]]).collect();
    hash_speed(&fp32);
    let all = &buf[8 + n..];
    let all_bf16: Vec<u8> = all.chunks_exact(4).flat_map(|c| [c[2], c[3]]).collect();
    whole(all, DType::F32);
    whole(&all_bf16, DType::BF16);
    for (label, dtype, raw) in [("fp32", DType::F32, &fp32), ("bf16", DType::BF16, &bf16)] {
        let w = dtype.size();
        let plane: Vec<u8> = raw
            .chunks_exact(w)
            .map(|x| (u16::from_le_bytes([x[w - 2], x[w - 1]]).rotate_left(1) >> 8) as u8)
            .collect();
        let table = FreqTable::normalize(&histogram(&plane)).unwrap();
        let mut wr = Writer::default();
        rans::encode(&plane, &table, &mut wr);
        let coded = wr.into_inner();
        let te = min_time(10, || {
            let mut wr = Writer::with_capacity(coded.len());
            rans::encode(&plane, &table, &mut wr);
        });
        let mut out = vec![0u8; plane.len()];
        let td = min_time(10, || {
            rans::decode(&mut Reader::new(&coded), &table, &mut out).unwrap()
        });
        let m = plane.len() as f64 / 1e6;
        println!(
            "{label} rans: {:.2} bits/sym, encode {:.0} Msym/s, decode {:.0} Msym/s",
            coded.len() as f64 * 8.0 / plane.len() as f64,
            m / te,
            m / td
        );
        let chunks: Vec<Vec<u8>> = raw
            .chunks(1 << 20)
            .map(|c| codec::encode_chunk(c, dtype))
            .collect();
        let te = min_time(5, || {
            for c in raw.chunks(1 << 20) {
                codec::encode_chunk(c, dtype);
            }
        });
        let mut out = vec![0u8; raw.len()];
        let td = min_time(5, || {
            for (c, o) in chunks.iter().zip(out.chunks_mut(1 << 20)) {
                codec::decode_chunk(c, dtype, o).unwrap();
            }
        });
        let mb = raw.len() as f64 / 1e6;
        let n = raw.len() / w;
        let mut bufs = vec![vec![0u8; n]; w];
        let ts = min_time(5, || {
            let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            fastckpt_core::fields::split(raw, w, true, &mut planes);
        });
        let mut back = vec![0u8; raw.len()];
        let tm = min_time(5, || {
            let planes: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
            fastckpt_core::fields::merge(&planes, w, true, &mut back);
        });
        let th = min_time(5, || {
            std::hint::black_box(fastckpt_core::entropy::freq::histogram(&bufs[0]));
        });
        let mut one = vec![0u8; n];
        let tx = min_time(5, || {
            fastckpt_core::fields::extract(raw, w, true, 0, &mut one);
        });
        println!(
            "{label} extract(plane0) {:.0} MB/s",
            raw.len() as f64 / 1e6 / tx
        );
        let tc = min_time(5, || {
            for plane in bufs[0].chunks(n.div_ceil(raw.len().div_ceil(1 << 20))) {
                std::hint::black_box(fastckpt_core::entropy::freq::model_counts(plane));
            }
        });
        println!(
            "{label} fields: split {:.0} MB/s, merge {:.0} MB/s, histogram(plane0) {:.0} MB/s, \
             model_counts(plane0, per chunk) {:.0} MB/s",
            mb / ts,
            mb / tm,
            mb / th,
            mb / tc
        );
        let comp: usize = chunks.iter().map(Vec::len).sum();
        println!(
            "{label} chunks: ratio {:.4}, encode {:.0} MB/s, decode {:.0} MB/s",
            comp as f64 / raw.len() as f64,
            mb / te,
            mb / td
        );
    }
}

#[allow(dead_code)]
fn hash_speed(raw: &[u8]) {
    let t64 = min_time(5, || {
        std::hint::black_box(fastckpt_core::hash::h64(raw));
    });
    let t128 = min_time(5, || {
        std::hint::black_box(fastckpt_core::hash::h128(raw));
    });
    let mb = raw.len() as f64 / 1e6;
    println!(
        "xxh3-64 {:.0} MB/s, xxh3-128 {:.0} MB/s",
        mb / t64,
        mb / t128
    );
}

/// Whole-checkpoint encode/decode through the container, one and two threads.
fn whole(data: &[u8], dtype: DType) {
    use fastckpt_core::{encode, EncodeOptions, Value};
    let inputs = common::tensors_of(data, dtype);
    let label = dtype.name();
    for threads in [1, 2] {
        whole_threads(&inputs, threads, label);
    }
    // The same encode plus the copy into one fresh buffer, as `bytes` needs it.
    let opts = EncodeOptions {
        threads: Some(1),
        ..Default::default()
    };
    let tv = min_time(5, || {
        encode(&inputs, &Value::None, &opts).unwrap().to_vec();
    });
    println!(
        "whole {label} (1 thread): encode + copy to a fresh buffer {:.0} MB/s",
        data.len() as f64 / 1e6 / tv
    );
}

/// Encode (file written into a reused buffer) and decode (into reused buffers) with
/// `threads` workers: no fresh pages.
fn whole_threads(inputs: &[fastckpt_core::TensorIn], threads: usize, label: &str) {
    use fastckpt_core::{encode, Checkpoint, EncodeOptions, Value};
    let opts = EncodeOptions {
        threads: Some(threads),
        ..Default::default()
    };
    let file = encode(inputs, &Value::None, &opts).unwrap().to_vec();
    let mut out = file.clone();
    let te = min_time(5, || {
        let enc = encode(inputs, &Value::None, &opts).unwrap();
        fastckpt_core::parallel::install(Some(threads), || enc.write_to(&mut out)).unwrap();
    });
    let mut bufs: Vec<Vec<u8>> = inputs.iter().map(|t| vec![0u8; t.data.len()]).collect();
    let td = min_time(5, || {
        let ck = Checkpoint::parse(&file).unwrap();
        let jobs = bufs
            .iter_mut()
            .enumerate()
            .map(|(i, b)| (i, b.as_mut_slice()))
            .collect();
        ck.decode_into(jobs, Some(threads)).unwrap();
    });
    let mb: f64 = inputs.iter().map(|t| t.data.len()).sum::<usize>() as f64 / 1e6;
    println!(
        "whole {label} ({threads} threads): encode {:.0} MB/s, decode {:.0} MB/s",
        mb / te,
        mb / td
    );
}
