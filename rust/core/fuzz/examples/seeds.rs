//! Writes the seed corpora of the fuzz targets: small but valid inputs that reach deep into
//! the decoders, so mutation starts from real files instead of from nothing.
//!
//! ```text
//! cd rust/core/fuzz && cargo run --release --example seeds  # writes ./corpus/<target>/
//! cargo run --example seeds -- /some/dir                    # writes /some/dir/<target>/
//! ```
//! Deterministic (fixed PRNG seeds): running it twice writes the same files. Every seed is
//! checked before it is written (files decode to their tensors, chunks and streams round
//! trip), so a broken encoder cannot silently produce a useless corpus.

use std::fs;
use std::path::{Path, PathBuf};

use fastckpt_core::codec::{decode_chunk, encode_chunk};
use fastckpt_core::container::bytes::{Reader, Writer};
use fastckpt_core::container::format::{Codec, Direction};
use fastckpt_core::entropy::freq::{histogram, FreqTable};
use fastckpt_core::entropy::rans;
use fastckpt_core::{
    encode, predict, AdamIn, Checkpoint, DType, EncodeOptions, LossySpec, RefBytes, RefIn,
    TensorIn, Value,
};

#[path = "../fuzz_targets/common/mod.rs"]
mod common;
use common::{moments_for, reference_for, Rng};

/// `n` uniformly random bytes.
fn random_bytes(rng: &mut Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.next() as u8).collect()
}

/// An owned tensor; [`TensorIn`] borrows from it.
struct T {
    name: String,
    dtype: DType,
    shape: Vec<u64>,
    data: Vec<u8>,
    /// For predicted tensors: the reference (always `reference_for(name, ..)`).
    reference: Option<Vec<u8>>,
}

impl T {
    fn new(name: &str, dtype: DType, shape: &[u64], data: Vec<u8>) -> T {
        let want = shape.iter().product::<u64>() as usize * dtype.size();
        assert_eq!(data.len(), want, "{name}: data does not match shape");
        T {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            data,
            reference: None,
        }
    }

    /// A tensor close to its reference `reference_for(name, ..)` (a fine-tuning step),
    /// encoded against it.
    fn predicted(name: &str, dtype: DType, shape: &[u64], rng: &mut Rng) -> T {
        let len = numel(shape) * dtype.size();
        let reference = reference_for(name, dtype, len);
        let data = perturb(&reference, dtype, rng);
        T {
            reference: Some(reference),
            ..T::new(name, dtype, shape, data)
        }
    }
}

/// `reference` moved a little, word by word: floats by a small relative step, integers
/// by a small difference (wrapping), so residuals against the reference are small.
fn perturb(reference: &[u8], dtype: DType, rng: &mut Rng) -> Vec<u8> {
    let w = dtype.word_size();
    let mut out = Vec::with_capacity(reference.len());
    for word in reference.chunks_exact(w) {
        let step = rng.normal();
        match (dtype.is_float(), w) {
            (true, 4) => {
                let v = f32::from_le_bytes(word.try_into().unwrap());
                out.extend_from_slice(&(v * (1.0 + 1e-3 * step as f32)).to_le_bytes());
            }
            (true, 8) => {
                let v = f64::from_le_bytes(word.try_into().unwrap());
                out.extend_from_slice(&(v * (1.0 + 1e-6 * step)).to_le_bytes());
            }
            _ => {
                // bf16/f16 bits and integers alike: a few units in the last place.
                let mut b = [0u8; 8];
                b[..w].copy_from_slice(word);
                let v = u64::from_le_bytes(b).wrapping_add((step * 2.0) as i64 as u64);
                out.extend_from_slice(&v.to_le_bytes()[..w]);
            }
        }
    }
    out
}

fn numel(shape: &[u64]) -> usize {
    shape.iter().product::<u64>() as usize
}

/// Normally distributed f32 weights with standard deviation `std`.
fn f32_normal(rng: &mut Rng, shape: &[u64], std: f64) -> Vec<u8> {
    (0..numel(shape))
        .flat_map(|_| ((rng.normal() * std) as f32).to_le_bytes())
        .collect()
}

/// bf16 = top half of an f32 (truncation is what matters here, not rounding).
fn bf16_normal(rng: &mut Rng, shape: &[u64], std: f64) -> Vec<u8> {
    f32_normal(rng, shape, std)
        .chunks_exact(4)
        .flat_map(|c| [c[2], c[3]])
        .collect()
}

/// IEEE half precision from f32 (round toward zero; subnormals flushed).
fn f16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = ((b >> 16) & 0x8000) as u16;
    let exp = ((b >> 23) & 0xff) as i32 - 127 + 15;
    if exp <= 0 {
        sign
    } else if exp >= 31 {
        sign | 0x7c00
    } else {
        sign | ((exp as u16) << 10) | ((b >> 13) & 0x3ff) as u16
    }
}

fn f16_normal(rng: &mut Rng, shape: &[u64], std: f64) -> Vec<u8> {
    (0..numel(shape))
        .flat_map(|_| f16_bits((rng.normal() * std) as f32).to_le_bytes())
        .collect()
}

fn f64_normal(rng: &mut Rng, shape: &[u64], std: f64) -> Vec<u8> {
    (0..numel(shape))
        .flat_map(|_| (rng.normal() * std).to_le_bytes())
        .collect()
}

fn i64s(vals: impl IntoIterator<Item = i64>) -> Vec<u8> {
    vals.into_iter().flat_map(i64::to_le_bytes).collect()
}

fn s(x: &str) -> Value {
    Value::Str(x.into())
}

/// A torch-like state dict: `{name: tensor}` for every tensor, in order.
fn state_dict(ts: &[T]) -> Value {
    Value::Map(
        ts.iter()
            .enumerate()
            .map(|(i, t)| (s(&t.name), Value::Tensor(i as u64)))
            .collect(),
    )
}

/// Encodes `ts` with `structure`, checks that the file decodes back, and returns it.
fn file(ts: &[T], structure: &Value, chunk_bytes: usize) -> Vec<u8> {
    encode_seed(ts, structure, chunk_bytes, None)
}

/// Like [`file`], every tensor near-lossless under `lossy` (floats are quantized): the
/// tensors must decode, not to their input.
fn lossy_file(ts: &[T], structure: &Value, chunk_bytes: usize) -> Vec<u8> {
    let lossy = LossySpec {
        class: "weights".into(),
        error_bound: 1e-2,
        prune: 0.2,
        nonneg: false,
        relative: false,
    };
    encode_seed(ts, structure, chunk_bytes, Some(&lossy))
}

fn encode_seed(
    ts: &[T],
    structure: &Value,
    chunk_bytes: usize,
    lossy: Option<&LossySpec>,
) -> Vec<u8> {
    // "layer.weight" (lossless) takes an Adam-direction reference, its moments made from
    // their names as the references are.
    let adam = |t: &T| lossy.is_none() && t.name == "layer.weight" && t.reference.is_some();
    let (m_name, v_name) = ("state/0/exp_avg", "state/0/exp_avg_sq");
    let moments: Vec<Option<(Vec<u8>, Vec<u8>)>> = ts
        .iter()
        .map(|t| adam(t).then(|| moments_for(m_name, v_name, t.data.len())))
        .collect();
    let ins: Vec<TensorIn> = ts
        .iter()
        .zip(&moments)
        .map(|(t, mv)| TensorIn {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            tag: "torch".into(),
            data: &t.data,
            reference: t.reference.as_ref().map(|data| RefIn {
                checkpoint: "seed-previous".into(),
                tensor: t.name.clone(),
                data,
                direction: mv.as_ref().map(|(m, v)| AdamIn {
                    recorded: Direction {
                        m: m_name.into(),
                        v: v_name.into(),
                        step: -1e-3,
                    },
                    m,
                    v,
                }),
            }),
            lossy: lossy.cloned(),
            side: None,
        })
        .collect();
    let opts = EncodeOptions {
        threads: Some(1),
        chunk_bytes,
        sparse_block: 16,
    };
    let bytes = encode(&ins, structure, &opts)
        .expect("seed checkpoint must encode")
        .to_vec();
    let ck = Checkpoint::parse(&bytes).expect("seed checkpoint must parse");
    assert_eq!(ck.tensors().len(), ts.len());
    for (i, t) in ts.iter().enumerate() {
        let mut out = vec![0u8; t.data.len()];
        let rf = ck.tensors()[i]
            .reference
            .as_ref()
            .and(t.reference.as_deref())
            .map(|data| RefBytes {
                data,
                moments: moments[i].as_ref().map(|(m, v)| (&m[..], &v[..])),
            });
        ck.decode_with(vec![(i, &mut out, rf)], Some(1))
            .expect("seed tensor must decode");
        assert!(
            lossy.is_some() || out == t.data,
            "seed tensor {} does not round-trip",
            t.name
        );
    }
    bytes
}

/// The decode_file seeds: (file name, file bytes).
fn checkpoint_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng(0x5eed_f11e);
    let mut out = Vec::new();

    // A tiny MLP in f32: several chunks per weight (chunk_bytes 1 KiB), realistic values.
    let mlp = vec![
        T::new(
            "fc1.weight",
            DType::F32,
            &[32, 24],
            f32_normal(&mut rng, &[32, 24], 0.05),
        ),
        T::new(
            "fc1.bias",
            DType::F32,
            &[32],
            f32_normal(&mut rng, &[32], 0.01),
        ),
        T::new(
            "fc2.weight",
            DType::F32,
            &[10, 32],
            f32_normal(&mut rng, &[10, 32], 0.1),
        ),
        T::new("fc2.bias", DType::F32, &[10], vec![0u8; 40]),
    ];
    out.push(("mlp_f32.fckpt", file(&mlp, &state_dict(&mlp), 1024)));

    // bf16 weights + an i64 step counter + a bool mask + an empty and a 0-d tensor, in a
    // nested training-state structure (dicts, lists, tuples, every scalar kind).
    let train = vec![
        T::new(
            "emb",
            DType::BF16,
            &[40, 16],
            bf16_normal(&mut rng, &[40, 16], 0.02),
        ),
        T::new("step", DType::I64, &[], i64s([12345])),
        T::new("positions", DType::I64, &[64], i64s(0..64)),
        T::new(
            "mask",
            DType::Bool,
            &[7, 9],
            (0..63).map(|i| (i % 3 == 0) as u8).collect(),
        ),
        T::new("empty", DType::F32, &[0, 5], vec![]),
        T::new("scale", DType::F32, &[], 0.125f32.to_le_bytes().to_vec()),
    ];
    let structure = Value::Map(vec![
        (
            s("model"),
            Value::Map(vec![
                (s("emb"), Value::Tensor(0)),
                (s("scale"), Value::Tensor(5)),
            ]),
        ),
        (
            s("optimizer"),
            Value::Map(vec![
                (s("step"), Value::Tensor(1)),
                (
                    s("param_groups"),
                    Value::List(vec![Value::Map(vec![
                        (s("lr"), Value::Float(3e-4)),
                        (
                            s("betas"),
                            Value::Tuple(vec![Value::Float(0.9), Value::Float(0.999)]),
                        ),
                        (s("weight_decay"), Value::Float(0.0)),
                        (s("amsgrad"), Value::Bool(false)),
                        (s("params"), Value::List(vec![Value::Int(0), Value::Int(1)])),
                    ])]),
                ),
            ]),
        ),
        (s("positions"), Value::Tensor(2)),
        (s("mask"), Value::Tensor(3)),
        (s("empty"), Value::Tensor(4)),
        (Value::Int(-7), Value::None),
        (
            s("big"),
            Value::BigInt("-123456789012345678901234567890".into()),
        ),
        (s("nan"), Value::Float(f64::NAN)),
        (s("blob"), Value::Bytes(vec![0, 1, 2, 255])),
        (
            s("dtype"),
            Value::Ext("torch.dtype".into(), Box::new(s("bfloat16"))),
        ),
        (
            Value::Tuple(vec![Value::Int(1), s("k")]),
            Value::List(vec![]),
        ),
    ]);
    out.push(("train_state.fckpt", file(&train, &structure, 256)));

    // Every dtype once, a few hundred bytes each, structure a list of placeholders.
    let mut every = Vec::new();
    for (i, &d) in DType::all().iter().enumerate() {
        let shape = [3u64, 11];
        let data = match d {
            DType::F32 => f32_normal(&mut rng, &shape, 1.0),
            DType::BF16 => bf16_normal(&mut rng, &shape, 1.0),
            DType::F16 => f16_normal(&mut rng, &shape, 1.0),
            DType::F64 => f64_normal(&mut rng, &shape, 1.0),
            DType::C64 => f32_normal(&mut rng, &[3, 22], 1.0),
            DType::C128 => f64_normal(&mut rng, &[3, 22], 1.0),
            DType::Bool => (0..33).map(|i| (i % 2) as u8).collect(),
            _ => (0..33 * d.size())
                .map(|_| (rng.normal() * 3.0) as i8 as u8)
                .collect(),
        };
        every.push(T::new(&format!("t{i}.{}", d.name()), d, &shape, data));
    }
    let list = Value::List((0..every.len() as u64).map(Value::Tensor).collect());
    out.push(("every_dtype.fckpt", file(&every, &list, 128)));

    // Plane modes side by side: constant, uniform (raw planes) and skewed (rANS) data,
    // with tensors long enough for the 32-lane fast path.
    let modes = vec![
        T::new(
            "const",
            DType::F32,
            &[256],
            1.0f32.to_le_bytes().repeat(256),
        ),
        T::new("uniform", DType::U32, &[256], random_bytes(&mut rng, 1024)),
        T::new(
            "skewed",
            DType::U8,
            &[2048],
            (0..2048)
                .map(|_| (rng.next().trailing_zeros() as u8).min(9))
                .collect(),
        ),
        T::new(
            "f64",
            DType::F64,
            &[100],
            f64_normal(&mut rng, &[100], 1e-3),
        ),
    ];
    out.push((
        "plane_modes.fckpt",
        file(&modes, &state_dict(&modes), 1 << 20),
    ));

    // Degenerate files: no tensors; only empty and 0-d tensors; one element per chunk.
    out.push(("no_tensors.fckpt", file(&[], &Value::None, 1 << 20)));
    let tiny = vec![
        T::new("a", DType::I8, &[0], vec![]),
        T::new("b", DType::U16, &[1, 0, 3], vec![]),
        T::new("c", DType::C64, &[], f32_normal(&mut rng, &[2], 1.0)),
        T::new("d", DType::U8, &[5], vec![9, 8, 7, 6, 5]),
    ];
    out.push(("tiny.fckpt", file(&tiny, &state_dict(&tiny), 1)));

    // Predicted tensors (a checkpoint after a small training step), several chunks each,
    // plus one unrelated to its reference, which the encoder stores standalone. Each has
    // at least `MIN_PREDICTED_WORDS` (1024) elements: smaller ones are never predicted.
    let mut pred = vec![
        T::predicted("layer.weight", DType::F32, &[32, 32], &mut rng),
        T::predicted("layer.bias", DType::BF16, &[1024], &mut rng),
        T::predicted("emb", DType::F64, &[128, 8], &mut rng),
        T::predicted("half", DType::F16, &[1024], &mut rng),
        T::predicted("counts", DType::I32, &[1024], &mut rng),
        T::predicted("c", DType::C64, &[1024], &mut rng),
    ];
    let noise = f32_normal(&mut rng, &[1024], 1.0);
    pred.push(T {
        reference: Some(reference_for("noise", DType::F32, 4096)),
        ..T::new("noise", DType::F32, &[1024], noise)
    });
    let bytes = file(&pred, &state_dict(&pred), 2048);
    let ck = Checkpoint::parse(&bytes).unwrap();
    let n_pred = ck
        .tensors()
        .iter()
        .filter(|t| t.codec == Codec::Predicted)
        .count();
    assert!(
        n_pred >= 4,
        "only {n_pred} tensors of the seed are predicted"
    );
    out.push(("predicted.fckpt", bytes));

    // The same tensors near-lossless (codec 3): quantized against the reference or alone.
    let bytes = lossy_file(&pred, &state_dict(&pred), 2048);
    let ck = Checkpoint::parse(&bytes).unwrap();
    let n_q = ck
        .tensors()
        .iter()
        .filter(|t| t.codec == Codec::Quantized)
        .count();
    assert!(
        n_q >= 4,
        "only {n_q} tensors of the lossy seed are quantized"
    );
    out.push(("quantized.fckpt", bytes));
    out
}

/// The decode_chunk seeds: `[dtype index] [count u16 LE] [encode_chunk output]`.
fn chunk_seeds() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0xc4a2_c0de);
    let mut out = Vec::new();
    for (i, &d) in DType::all().iter().enumerate() {
        for (k, count) in [0usize, 1, 40, 700].into_iter().enumerate() {
            let shape = [count as u64];
            let raw = match (d, k % 2) {
                (DType::F32 | DType::C64, _) => {
                    f32_normal(&mut rng, &[count as u64 * d.size() as u64 / 4], 0.1)
                }
                (DType::F64 | DType::C128, _) => {
                    f64_normal(&mut rng, &[count as u64 * d.size() as u64 / 8], 0.1)
                }
                (DType::BF16, _) => bf16_normal(&mut rng, &shape, 0.1),
                (DType::F16, _) => f16_normal(&mut rng, &shape, 0.1),
                (_, 0) => vec![3u8; count * d.size()],
                _ => (0..count * d.size())
                    .map(|_| (rng.next().trailing_zeros() as u8).min(12))
                    .collect(),
            };
            let comp = encode_chunk(&raw, d);
            let mut back = vec![0u8; raw.len()];
            decode_chunk(&comp, d, &mut back).expect("seed chunk must decode");
            assert!(back == raw, "seed chunk does not round-trip");
            let mut seed = vec![i as u8];
            seed.extend_from_slice(&(count as u16).to_le_bytes());
            seed.extend_from_slice(&comp);
            out.push((format!("{}_{count}.chunk", d.name()), seed));
        }
    }
    // Pair-coded exponent planes (mode 3): bf16/fp16 weights with zeros and Inf/NaN among
    // them, so that some bytes are escaped.
    for (d, count) in [(DType::BF16, 40_001usize), (DType::F16, 65_535)] {
        // Magnitudes within a few binades (top byte 0x78..0x7c after the sign rotation),
        // every 499th word a zero, Inf or NaN.
        let raw: Vec<u8> = (0..count)
            .flat_map(|k| {
                let r = rng.next();
                let w = match k % 499 {
                    0 => [0x0000, 0x7f80, 0x7fc1][k % 3],
                    _ => (r & 0x807f) as u16 | (0x78 + (r >> 32) as u16 % 5) << 7,
                };
                w.to_le_bytes()
            })
            .collect();
        let comp = encode_chunk(&raw, d);
        assert_eq!(comp[0], 3, "{} seed must be pair coded", d.name());
        let i = DType::all()
            .iter()
            .position(|&x| x == d)
            .expect("listed dtype");
        let mut seed = vec![i as u8];
        seed.extend_from_slice(&(count as u16).to_le_bytes());
        seed.extend_from_slice(&comp);
        out.push((format!("{}_{count}_pairs.chunk", d.name()), seed));
    }
    out
}

/// The predict_chunk seeds: `[dtype index] [count u16 LE] [reference] [coded chunk]`.
fn predict_seeds() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x9e3d_c7ed);
    let mut out = Vec::new();
    for (i, &d) in DType::all().iter().enumerate() {
        for count in [1usize, 40, 700] {
            let reference = reference_for(&format!("{}_{count}", d.name()), d, count * d.size());
            let raw = perturb(&reference, d, &mut rng);
            let comp = predict::encode_chunk(&raw, &reference, d);
            let mut back = vec![0u8; raw.len()];
            predict::decode_chunk(&comp, &reference, d, &mut back)
                .expect("seed predicted chunk must decode");
            assert!(back == raw, "seed predicted chunk does not round-trip");
            let mut seed = vec![i as u8];
            seed.extend_from_slice(&(count as u16).to_le_bytes());
            seed.extend_from_slice(&reference);
            seed.extend_from_slice(&comp);
            out.push((format!("{}_{count}.pchunk", d.name()), seed));
        }
    }
    // Side-context chunks (kind 4) need 16384 words; the target's side tensor is the
    // reference rotated by one element. The encoder writes them only where the side
    // predicts the residuals better than the reference's exponents: here each word moves
    // by a thousandth of its side word squared (as Adam's second moment moves by the
    // first moment's square).
    for d in [DType::F32, DType::F16, DType::F64] {
        let count = 17_000usize;
        let i = DType::all().iter().position(|&x| x == d).expect("listed");
        let vals: Vec<f64> = (0..count)
            .map(|_| 10f64.powf(-rng.unit()) * (0.5 + rng.unit()))
            .collect();
        let moved: Vec<f64> = (0..count)
            .map(|k| vals[k] + 1e-3 * vals[(k + 1) % count].powi(2))
            .collect();
        let words = |v: &[f64]| -> Vec<u8> {
            match d {
                DType::F32 => v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect(),
                DType::F16 => v
                    .iter()
                    .flat_map(|&x| f16_bits(x as f32).to_le_bytes())
                    .collect(),
                _ => v.iter().flat_map(|&x| x.to_le_bytes()).collect(),
            }
        };
        let (reference, raw) = (words(&vals), words(&moved));
        let mut side = reference.clone();
        side.rotate_left(d.size());
        let comp = predict::encode_chunk_side(&raw, &reference, Some(&side), d);
        let mut back = vec![0u8; raw.len()];
        predict::decode_chunk_side(&comp, &reference, Some(&side), d, &mut back)
            .expect("seed side chunk must decode");
        assert!(
            back == raw && predict::is_side_chunk(&comp),
            "seed side chunk"
        );
        let mut seed = vec![i as u8];
        seed.extend_from_slice(&(count as u16).to_le_bytes());
        seed.extend_from_slice(&reference);
        seed.extend_from_slice(&comp);
        out.push((format!("side_{}.pchunk", d.name()), seed));
    }
    // Chunks with a sampled base exponent (kind 5): the reference's largest exponent lies
    // between the encoder's sample runs (word 100), so the chunk stores it after the base.
    for d in [DType::F32, DType::BF16] {
        let count = 20_000usize;
        let i = DType::all().iter().position(|&x| x == d).expect("listed");
        let mut reference = reference_for(&format!("based_{}", d.name()), d, count * d.size());
        let big = 3.0e4f32.to_le_bytes();
        let at = 100 * d.size();
        // bfloat16: the top two bytes of the float32.
        reference[at..at + d.size()].copy_from_slice(&big[4 - d.size()..]);
        let raw = perturb(&reference, d, &mut rng);
        let comp = predict::encode_chunk(&raw, &reference, d);
        let mut back = vec![0u8; raw.len()];
        predict::decode_chunk(&comp, &reference, d, &mut back)
            .expect("seed sampled-base chunk must decode");
        assert!(back == raw && comp[0] == 5, "seed sampled-base chunk");
        let mut seed = vec![i as u8];
        seed.extend_from_slice(&(count as u16).to_le_bytes());
        seed.extend_from_slice(&reference);
        seed.extend_from_slice(&comp);
        out.push((format!("based_{}.pchunk", d.name()), seed));
    }
    out
}

/// The rans_roundtrip seeds: plain symbol strings, and `[table] [count u16 LE] [stream]`.
fn rans_seeds() -> Vec<(String, Vec<u8>)> {
    let mut rng = Rng(0x7a45_5eed);
    let mut out = Vec::new();
    for n in [2usize, 31, 33, 100, 1000] {
        // Symbol 99 first, then a geometric run from 100 up: always two symbols at least.
        let syms: Vec<u8> = std::iter::once(99)
            .chain((1..n).map(|_| 100 + (rng.next().trailing_zeros() as u8).min(20)))
            .collect();
        out.push((format!("symbols_{n}"), syms.clone()));
        let table = FreqTable::normalize(&histogram(&syms)).expect("two symbols at least");
        let mut w = Writer::default();
        table.write(&mut w);
        w.u16(n as u16);
        let at = w.len();
        rans::encode(&syms, &table, &mut w);
        let seed = w.into_inner();
        let mut back = vec![0u8; n];
        rans::decode(&mut Reader::new(&seed[at..]), &table, &mut back)
            .expect("seed stream must decode");
        assert!(back == syms, "seed stream does not round-trip");
        out.push((format!("stream_{n}"), seed));
    }
    out
}

fn write_all(dir: &Path, seeds: impl IntoIterator<Item = (impl AsRef<str>, Vec<u8>)>) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    let mut n = 0;
    for (name, bytes) in seeds {
        let path = dir.join(name.as_ref());
        fs::write(&path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        n += 1;
    }
    println!("{n} seeds in {}", dir.display());
}

fn main() {
    let root: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus"));
    write_all(&root.join("decode_file"), checkpoint_seeds());
    write_all(&root.join("decode_chunk"), chunk_seeds());
    write_all(&root.join("rans_roundtrip"), rans_seeds());
    write_all(&root.join("predict_chunk"), predict_seeds());
}
