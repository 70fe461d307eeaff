//! Whole-model encode or decode in a loop into reused buffers (for `perf record` and A/B
//! timing of two builds): `cargo run --release --example whole_loop -- <file.safetensors>
//! <f32|bf16|bf16r> <enc|dec> <threads> <runs>`; prints the median and best MB/s (`bf16`
//! truncates the fp32 words, `bf16r` rounds them to nearest even as torch does).

mod common;
use fastckpt_core::{encode, Checkpoint, DType, Value};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let buf = std::fs::read(&a[1]).unwrap();
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
    let all = &buf[8 + n..];
    let (dtype, data): (DType, Vec<u8>) = if a[2] == "bf16" {
        (
            DType::BF16,
            all.chunks_exact(4).flat_map(|c| [c[2], c[3]]).collect(),
        )
    } else if a[2] == "bf16r" {
        (
            DType::BF16,
            all.chunks_exact(4)
                .flat_map(|c| {
                    let w = u32::from_le_bytes(c.try_into().unwrap());
                    let r = ((w + 0x7fff + ((w >> 16) & 1)) >> 16) as u16;
                    r.to_le_bytes()
                })
                .collect(),
        )
    } else {
        (DType::F32, all.to_vec())
    };
    let threads: usize = a[4].parse().unwrap();
    let runs: usize = a[5].parse().unwrap();
    let inputs = common::tensors_of(&data, dtype);
    let (opts, file, mut bufs) = common::loop_setup(&inputs, threads);
    let mut out = file.clone();
    let mut ts = vec![];
    let mut wt = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        if a[3] == "enc" {
            let enc = encode(&inputs, &Value::None, &opts).unwrap();
            let t1 = Instant::now();
            fastckpt_core::parallel::install(Some(threads), || enc.write_to(&mut out)).unwrap();
            wt.push(t1.elapsed().as_secs_f64());
        } else {
            let ck = Checkpoint::parse(&file).unwrap();
            let jobs = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| (i, b.as_mut_slice()))
                .collect();
            ck.decode_into(jobs, Some(threads)).unwrap();
        }
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    wt.sort_by(f64::total_cmp);
    if !wt.is_empty() {
        println!("write phase median {:.2} ms", wt[runs / 2] * 1e3);
    }
    println!("total median {:.2} ms", ts[runs / 2] * 1e3);
    let mb = data.len() as f64 / 1e6;
    println!(
        "{} {} {}t: median {:.0} MB/s, best {:.0} MB/s",
        a[2],
        a[3],
        threads,
        mb / ts[runs / 2],
        mb / ts[0]
    );
}
