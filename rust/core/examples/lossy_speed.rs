//! Times the near-lossless chunk codec on Gaussian fp32 data, standalone (dense codes) and
//! against a close reference (sparse codes): `cargo run --release --example lossy_speed`.

use std::time::Instant;

use fastckpt_core::quant::Plan;
use fastckpt_core::{lossy, DType};

fn main() {
    let n = 1 << 18;
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut gauss = || {
        let mut acc = 0.0f32;
        for _ in 0..4 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        acc
    };
    let x: Vec<f32> = (0..n).map(|_| gauss() * 0.05).collect();
    let r: Vec<f32> = x.iter().map(|v| v + gauss() * 1e-4).collect();
    let raw: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let rf: Vec<u8> = r.iter().flat_map(|v| v.to_le_bytes()).collect();
    let rounds = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    for (label, reference, alpha) in [("dense", None, 0.0), ("sparse", Some(&rf[..]), 1.0)] {
        let plan = Plan {
            step: 1e-3,
            alpha,
            bound: 5e-4,
            prune_threshold: 0.0,
            nonneg: false,
            block: 64,
            relative: None,
        };
        let t = Instant::now();
        let mut len = 0;
        for _ in 0..rounds {
            len = lossy::encode_chunk(&raw, reference, DType::F32, &plan)
                .bytes
                .len();
        }
        let enc = t.elapsed().as_secs_f64() / rounds as f64;
        let coded = lossy::encode_chunk(&raw, reference, DType::F32, &plan).bytes;
        let mut out = vec![0u8; raw.len()];
        let t = Instant::now();
        for _ in 0..rounds {
            lossy::decode_chunk(&coded, reference, DType::F32, &plan, &mut out).unwrap();
        }
        let dec = t.elapsed().as_secs_f64() / rounds as f64;
        let mb = raw.len() as f64 / 1e6;
        println!(
            "{label}: ratio {:.4} encode {:.0} MB/s decode {:.0} MB/s",
            len as f64 / raw.len() as f64,
            mb / enc,
            mb / dec
        );
    }
}
