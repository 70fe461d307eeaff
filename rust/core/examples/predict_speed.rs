//! Single-thread speed probe for the prediction codec on synthetic close weights:
//! `cargo run --release --example predict_speed`.
use std::time::Instant;

use fastckpt_core::{predict, DType};

fn main() {
    let mut s = 1u64;
    let mut next = || {
        s = s
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    let prev: Vec<f32> = (0..262_144).map(|_| next() * 0.05).collect();
    let cur: Vec<f32> = prev.iter().map(|p| p + next() * 1e-4 * p.abs()).collect();
    let rb: Vec<u8> = prev.iter().flat_map(|v| v.to_le_bytes()).collect();
    let xb: Vec<u8> = cur.iter().flat_map(|v| v.to_le_bytes()).collect();
    let reps = 20;
    let t = Instant::now();
    let mut comp = Vec::new();
    for _ in 0..reps {
        comp = predict::encode_chunk(&xb, &rb, DType::F32);
    }
    let te = t.elapsed().as_secs_f64() / reps as f64;
    let mut out = vec![0u8; xb.len()];
    let t = Instant::now();
    for _ in 0..reps {
        predict::decode_chunk(&comp, &rb, DType::F32, &mut out).unwrap();
    }
    let td = t.elapsed().as_secs_f64() / reps as f64;
    assert_eq!(out, xb);
    let mb = xb.len() as f64 / 1e6;
    println!(
        "ratio {:.4} encode {:.0} MB/s decode {:.0} MB/s",
        comp.len() as f64 / xb.len() as f64,
        mb / te,
        mb / td
    );
}
