//! Pieces shared by the examples (not an example itself).
// Each example uses only some of these pieces.
#![allow(dead_code)]

use fastckpt_core::{encode, Checkpoint, DType, EncodeOptions, RefIn, TensorIn, Value};
use std::collections::BTreeMap;

/// `data` cut into 4 MiB tensors of `dtype` named `t0`, `t1`, ...: a whole model as the
/// container sees it, for whole-checkpoint timings.
pub fn tensors_of(data: &[u8], dtype: DType) -> Vec<TensorIn<'_>> {
    let w = dtype.size();
    data.chunks(4 << 20)
        .enumerate()
        .map(|(i, c)| TensorIn {
            name: format!("t{i}"),
            dtype,
            shape: vec![(c.len() / w) as u64],
            tag: String::new(),
            data: &c[..c.len() / w * w],
            reference: None,
            lossy: None,
            side: None,
        })
        .collect()
}

/// The F32 tensors of a safetensors file by name.
pub fn safetensors(path: &str) -> BTreeMap<String, Vec<u8>> {
    let buf = std::fs::read(path).expect("readable safetensors file");
    let n = u64::from_le_bytes(buf[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&buf[8..8 + n]).unwrap();
    let data = &buf[8 + n..];
    let mut out = BTreeMap::new();
    for (name, info) in header.as_object().unwrap() {
        if info["dtype"] != "F32" {
            continue;
        }
        let off = &info["data_offsets"];
        let (a, b) = (off[0].as_u64().unwrap(), off[1].as_u64().unwrap());
        out.insert(name.clone(), data[a as usize..b as usize].to_vec());
    }
    out
}

/// What an encode/decode loop over `inputs` on `threads` threads starts from: the options,
/// the encoded file and one output buffer per tensor.
pub fn loop_setup(inputs: &[TensorIn], threads: usize) -> (EncodeOptions, Vec<u8>, Vec<Vec<u8>>) {
    let opts = EncodeOptions {
        threads: Some(threads),
        ..Default::default()
    };
    let file = encode(inputs, &Value::None, &opts).unwrap().to_vec();
    let bufs = inputs.iter().map(|t| vec![0u8; t.data.len()]).collect();
    (opts, file, bufs)
}

/// Every F32 tensor of `cur` as the container's input, in name order: with `predicted`,
/// each predicted from the same-named tensor of `prev` (same length) and each
/// `exp_avg_sq` given its `exp_avg` as side tensor, as `fastckpt.encode(cur,
/// reference=prev)` pairs them; without, standalone.
pub fn pair_inputs<'a>(
    prev: &'a BTreeMap<String, Vec<u8>>,
    cur: &'a BTreeMap<String, Vec<u8>>,
    predicted: bool,
) -> Vec<TensorIn<'a>> {
    let names: Vec<&String> = cur.keys().collect();
    names
        .iter()
        .map(|&name| {
            let data = &cur[name][..];
            let reference = prev
                .get(name)
                .filter(|r| r.len() == data.len() && predicted)
                .map(|r| RefIn {
                    checkpoint: "prev".into(),
                    tensor: name.clone(),
                    data: r,
                    direction: None,
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
        .collect()
}

/// Encodes `inputs` and writes the file into `out` (its exact size), on `opts`' threads.
pub fn encode_into(inputs: &[TensorIn], opts: &EncodeOptions, out: &mut [u8]) {
    let enc = encode(inputs, &Value::None, opts).unwrap();
    fastckpt_core::parallel::install(opts.threads, || enc.write_to(out)).unwrap();
}

/// Decodes every tensor of `file` (written from [`pair_inputs`] of `prev` and `cur`) into
/// `bufs`, each given its same-named tensor of `prev` as reference.
pub fn decode_pair(
    file: &[u8],
    bufs: &mut [Vec<u8>],
    prev: &BTreeMap<String, Vec<u8>>,
    cur: &BTreeMap<String, Vec<u8>>,
    threads: usize,
) {
    let ck = Checkpoint::parse(file).unwrap();
    let jobs = bufs
        .iter_mut()
        .zip(cur.keys())
        .enumerate()
        .map(|(i, (b, name))| (i, b.as_mut_slice(), prev.get(name).map(|r| r[..].into())))
        .collect();
    ck.decode_with(jobs, Some(threads)).unwrap();
}
