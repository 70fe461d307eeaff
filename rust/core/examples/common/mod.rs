//! Pieces shared by the examples (not an example itself).

use fastckpt_core::{DType, TensorIn};

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
