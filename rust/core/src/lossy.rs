//! The near-lossless chunk codec: quantize against the prediction ([`crate::quant`]),
//! pack the codes block-sparse ([`crate::sparse`]), and entropy code what is left.
//!
//! Chunk layout:
//! `varint escapes | per escape: varint gap to the previous escape, raw word |`
//! `bitmap plane | token plane | u32 extra-bit bytes | extra bits`.
//! Planes are stored raw, constant or rANS coded ([`crate::codec`]); tokens and extra bits
//! are the codes of the non-zero blocks as [`crate::entropy::ints`] writes them.

use crate::codec;
use crate::container::bytes::{Reader, Writer};
use crate::dtype::DType;
use crate::entropy::bits::{BitReader, BitWriter};
use crate::entropy::ints;
use crate::error::{Error, Result};
use crate::hash;
use crate::quant::{self, Plan};
use crate::scratch;
use crate::sparse;

/// One coded chunk and what its encoder measured.
#[derive(Debug)]
pub struct Chunk {
    /// The coded bytes.
    pub bytes: Vec<u8>,
    /// xxh3-128 of the decoded chunk (what a reader will get and verify).
    pub decoded_hash: u128,
    /// Largest |decoded - original|.
    pub max_error: f64,
    /// Elements stored exactly.
    pub escapes: usize,
}

/// Encodes one chunk of `raw` (whole `dtype` elements) under `plan`, predicting from
/// `reference` (the decoded reference chunk; used only when `plan.alpha != 0`).
pub fn encode_chunk(raw: &[u8], reference: Option<&[u8]>, dtype: DType, plan: &Plan) -> Chunk {
    let width = dtype.size();
    let n = raw.len() / width;
    let mut codes = scratch::codes(n);
    let mut decoded = scratch::bytes(raw.len());
    let q = quant::quantize(raw, reference, dtype, plan, &mut codes, &mut decoded);
    let mut w = Writer::with_capacity(raw.len() / 4 + 64);
    write_escapes(&q.escapes, raw, width, &mut w);
    let (mut bitmap, mut dense) = (Vec::new(), scratch::codes(0));
    sparse::pack(&codes, plan.block as usize, &mut bitmap, &mut dense);
    codec::encode_plane(&bitmap, &mut w);
    let mut tokens = scratch::bytes(dense.len());
    let mut extra = BitWriter::with_capacity(dense.len() / 2 + 16);
    for (t, &z) in tokens.iter_mut().zip(dense.iter()) {
        *t = ints::token(z).0;
        ints::put_extra(z, &mut extra);
    }
    codec::encode_plane(&tokens, &mut w);
    let extra = extra.finish();
    w.u32(extra.len() as u32);
    w.bytes(&extra);
    Chunk {
        bytes: w.into_inner(),
        decoded_hash: hash::h128(&decoded),
        max_error: q.max_error,
        escapes: q.escapes.len(),
    }
}

fn write_escapes(escapes: &[u32], raw: &[u8], width: usize, w: &mut Writer) {
    w.varint(escapes.len() as u64);
    let mut next = 0u32;
    for &e in escapes {
        w.varint((e - next) as u64);
        let at = e as usize * width;
        w.bytes(&raw[at..at + width]);
        next = e + 1;
    }
}

/// Decodes one chunk into `out` (whole `dtype` elements); `comp` must be consumed exactly.
pub fn decode_chunk(
    comp: &[u8],
    reference: Option<&[u8]>,
    dtype: DType,
    plan: &Plan,
    out: &mut [u8],
) -> Result<()> {
    let width = dtype.size();
    let n = out.len() / width;
    let mut r = Reader::new(comp);
    let escapes = read_escapes(&mut r, n, width)?;
    let block = plan.block as usize;
    let mut bitmap_buf = vec![0u8; sparse::bitmap_len(n, block)];
    let bitmap = codec::decode_plane(&mut r, &mut bitmap_buf)?;
    let bitmap: &[u8] = bitmap.unwrap_or(&bitmap_buf);
    let mut dense = scratch::codes(sparse::dense_len(bitmap, n, block)?);
    let mut tok_buf = scratch::bytes(dense.len());
    let tokens = codec::decode_plane(&mut r, &mut tok_buf)?;
    let tokens: &[u8] = tokens.unwrap_or(&tok_buf);
    let extra_len = r.u32()? as usize;
    let extra = r.take(extra_len)?;
    if r.remaining() != 0 {
        return Err(Error::Corrupt(format!(
            "{} stray bytes after chunk",
            r.remaining()
        )));
    }
    let mut bits = BitReader::new(extra);
    for (d, &t) in dense.iter_mut().zip(tokens) {
        *d = ints::value(t, &mut bits)?;
    }
    let mut codes = scratch::codes(n);
    sparse::unpack(bitmap, &dense, block, &mut codes)?;
    quant::dequantize(&codes, reference, dtype, plan, out);
    for (i, word) in escapes {
        out[i * width..(i + 1) * width].copy_from_slice(word);
    }
    Ok(())
}

/// The escapes of a chunk of `n` elements: (index, raw word), indices checked.
fn read_escapes<'a>(r: &mut Reader<'a>, n: usize, width: usize) -> Result<Vec<(usize, &'a [u8])>> {
    let count = r.count(1 + width)?;
    let mut out = Vec::with_capacity(count);
    let mut next = 0u64;
    for _ in 0..count {
        let i = next.saturating_add(r.varint()?);
        if i >= n as u64 {
            return Err(Error::Corrupt("escape index out of range".into()));
        }
        out.push((i as usize, r.take(width)?));
        next = i + 1;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::by_float;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip_matches_encoder(
            vals in proptest::collection::vec(prop_oneof![4 => -1.0f32..1.0, 1 => any::<f32>(),
                1 => Just(f32::NAN), 1 => Just(0.0f32)], 0..3000),
            bound in prop_oneof![Just(1e-2f64), 1e-7f64..10.0],
            block in prop_oneof![Just(1u32), 2u32..100],
            use_ref in any::<bool>(), relative in any::<bool>(), d in 0usize..4) {
            let dtype = [DType::F16, DType::BF16, DType::F32, DType::F64][d];
            let raw: Vec<u8> = vals.iter().flat_map(|&v| {
                let mut b = vec![0u8; dtype.size()];
                by_float!(dtype, store(v as f64, &mut b));
                b
            }).collect();
            fn store<T: quant::Float>(v: f64, b: &mut [u8]) { T::store(v, b) }
            let reference: Vec<u8> = raw.iter().rev().copied().collect();
            let r = bound.min(0.9);
            let rel = relative.then(|| quant::Relative {
                step: crate::relquant::step_for(r, dtype), offset: 3, base: 1 << 12 });
            let plan = Plan { step: 2.0 * bound, alpha: if use_ref { 0.9 } else { 0.0 },
                              bound: if relative { r } else { bound }, prune_threshold: 0.0,
                              nonneg: false, block, relative: rel };
            let rf = use_ref.then_some(&reference[..]);
            let c = encode_chunk(&raw, rf, dtype, &plan);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&c.bytes, rf, dtype, &plan, &mut out).unwrap();
            prop_assert_eq!(hash::h128(&out), c.decoded_hash);
            // Damaged bytes never panic.
            for cut in [0, c.bytes.len() / 2, c.bytes.len().saturating_sub(1)] {
                let _ = decode_chunk(&c.bytes[..cut], rf, dtype, &plan, &mut out);
            }
        }
    }
}
