//! Chunk ratio and the mode of each chunk's top plane, for the whole model as fp32 and as
//! bf16, in 1 MiB chunks of the concatenated tensors:
//! `cargo run --release --example plane_modes -- <model.safetensors>` (mode 2 = rANS,
//! 3 = pairs).
use fastckpt_core::{codec, DType};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let buf = std::fs::read(&a[1]).unwrap();
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
    let all = &buf[8 + n..];
    let bf: Vec<u8> = all.chunks_exact(4).flat_map(|c| [c[2], c[3]]).collect();
    for (dt, data) in [(DType::F32, all), (DType::BF16, &bf[..])] {
        let mut modes = std::collections::BTreeMap::new();
        let mut total = 0;
        for c in data.chunks(1 << 20) {
            let e = codec::encode_chunk(c, dt);
            total += e.len();
            *modes.entry(e[0]).or_insert(0) += 1;
        }
        println!(
            "{dt:?} plane0 modes {modes:?} ratio {:.5}",
            total as f64 / data.len() as f64
        );
    }
}
