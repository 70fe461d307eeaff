//! Pieces shared by the examples (not an example itself).
// Each example uses only some of these pieces.
#![allow(dead_code)]

use fastckpt_core::{encode, DType, EncodeOptions, TensorIn, Value};
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
