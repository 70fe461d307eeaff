//! Whole-checkpoint predicted encode or decode in a loop (for `perf record` and A/B timing
//! of two builds): `cargo run --release --example pred_loop -- PREV.safetensors
//! CUR.safetensors <enc|dec|sa|sadec> <threads> <runs>`. Every F32 tensor of CUR is predicted
//! from the same-named tensor of PREV, each `exp_avg_sq` with its `exp_avg` as side tensor,
//! as `fastckpt.encode(cur, reference=prev)` does; `sa` encodes CUR standalone, `sadec`
//! decodes that standalone file. Prints the median and best MB/s.

mod common;
use common::{decode_pair, encode_into, pair_inputs, safetensors};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (prev, cur) = (safetensors(&a[1]), safetensors(&a[2]));
    let (mode, threads, runs) = (a[3].as_str(), a[4].parse().unwrap(), a[5].parse().unwrap());
    let inputs = pair_inputs(&prev, &cur, !mode.starts_with("sa"));
    let (opts, file, mut bufs) = common::loop_setup(&inputs, threads);
    let mut out = file.clone();
    let mut ts = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        if mode.ends_with("dec") {
            decode_pair(&file, &mut bufs, &prev, &cur, threads);
        } else {
            encode_into(&inputs, &opts, &mut out);
        }
        ts.push(t.elapsed().as_secs_f64());
    }
    ts.sort_by(f64::total_cmp);
    let mb = inputs.iter().map(|t| t.data.len()).sum::<usize>() as f64 / 1e6;
    println!(
        "{mode} {threads}t: median {:.2} ms {:.0} MB/s, best {:.0} MB/s (ratio {:.4})",
        ts[runs / 2] * 1e3,
        mb / ts[runs / 2],
        mb / ts[0],
        file.len() as f64 / 1e6 / mb
    );
}
