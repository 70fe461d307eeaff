//! Whole-checkpoint predicted encode or decode in a loop (for `perf record` and A/B timing
//! of two builds): `cargo run --release --example pred_loop -- PREV.safetensors
//! CUR.safetensors <enc|dec|sa|sadec> <threads> <runs>`. Every F32 tensor of CUR is predicted
//! from the same-named tensor of PREV, each `exp_avg_sq` with its `exp_avg` as side tensor,
//! as `fastckpt.encode(cur, reference=prev)` does; `sa` encodes CUR standalone, `sadec`
//! decodes that standalone file. Prints the median and best MB/s.

mod common;
use common::safetensors;
use fastckpt_core::{encode, Checkpoint, DType, RefIn, TensorIn, Value};
use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let (prev, cur) = (safetensors(&a[1]), safetensors(&a[2]));
    let (mode, threads, runs) = (a[3].as_str(), a[4].parse().unwrap(), a[5].parse().unwrap());
    let names: Vec<&String> = cur.keys().collect();
    let inputs: Vec<TensorIn> = names
        .iter()
        .map(|&name| {
            let data = &cur[name][..];
            let reference = prev
                .get(name)
                .filter(|r| r.len() == data.len() && !mode.starts_with("sa"))
                .map(|r| RefIn {
                    checkpoint: "prev".into(),
                    tensor: name.clone(),
                    data: r,
                });
            let side = name
                .strip_suffix("_sq")
                .filter(|_| name.ends_with("exp_avg_sq") && reference.is_some())
                .and_then(|s| names.iter().position(|n| n.as_str() == s));
            TensorIn {
                name: name.clone(),
                dtype: DType::F32,
                shape: vec![(data.len() / 4) as u64],
                tag: String::new(),
                data,
                reference,
                lossy: None,
                side,
            }
        })
        .collect();
    let (opts, file, mut bufs) = common::loop_setup(&inputs, threads);
    let mut out = file.clone();
    let mut ts = vec![];
    for _ in 0..runs {
        let t = Instant::now();
        if mode.ends_with("dec") {
            let ck = Checkpoint::parse(&file).unwrap();
            let jobs = bufs
                .iter_mut()
                .enumerate()
                .map(|(i, b)| (i, b.as_mut_slice(), prev.get(names[i]).map(|r| &r[..])))
                .collect();
            ck.decode_with(jobs, Some(threads)).unwrap();
        } else {
            let enc = encode(&inputs, &Value::None, &opts).unwrap();
            fastckpt_core::parallel::install(Some(threads), || enc.write_to(&mut out)).unwrap();
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
