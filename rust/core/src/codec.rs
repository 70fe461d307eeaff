//! The chunk codec: one chunk of a tensor's words is split into byte planes
//! ([`crate::fields`]) and each plane is stored the cheapest of three ways.
//!
//! Chunk layout, plane after plane (plane 0 = exponent byte first):
//! `u8 mode` then, for mode 0 (raw) the plane's bytes, for mode 1 (constant) the one byte
//! value, for mode 2 (rANS) a [`FreqTable`] and a [`rans`] stream.

use std::cell::RefCell;

use crate::container::bytes::{Reader, Writer};
use crate::dtype::DType;
use crate::entropy::freq::{histogram, FreqTable};
use crate::entropy::{rans, LANES};
use crate::error::{Error, Result};
use crate::fields;

/// A plane is entropy coded only when that saves at least this fraction of its bytes:
/// near-uniform mantissa planes stay raw, which keeps decode fast at no real cost.
pub const MIN_SAVING: f64 = 0.01;

const MODE_RAW: u8 = 0;
const MODE_CONST: u8 = 1;
const MODE_RANS: u8 = 2;

/// Fixed bytes of a rANS plane besides the payload: mode, bitmap, lane counts and states.
const RANS_OVERHEAD: usize = 1 + 32 + 8 * LANES;

thread_local! {
    /// Per-thread plane scratch, reused across chunks to avoid page-faulting fresh memory.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

fn with_scratch<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|s| {
        let mut s = s.borrow_mut();
        if s.len() < len {
            s.resize(len, 0);
        }
        f(&mut s[..len])
    })
}

/// Cuts `scratch` into `width` planes of `n` bytes each.
fn plane_slices(scratch: &mut [u8], n: usize, width: usize) -> Vec<&mut [u8]> {
    let mut planes = Vec::with_capacity(width);
    let mut rest = scratch;
    for _ in 0..width {
        let (plane, tail) = rest.split_at_mut(n);
        planes.push(plane);
        rest = tail;
    }
    planes
}

/// Compresses one chunk of whole `dtype` elements.
pub fn encode_chunk(raw: &[u8], dtype: DType) -> Vec<u8> {
    let width = dtype.word_size();
    let n = raw.len() / width;
    with_scratch(raw.len(), |scratch| {
        let mut planes = plane_slices(scratch, n, width);
        fields::split(raw, width, dtype.is_float(), &mut planes);
        let mut w = Writer::with_capacity(raw.len() + width * RANS_OVERHEAD);
        for plane in planes.iter() {
            encode_plane(plane, &mut w);
        }
        w.into_inner()
    })
}

/// Stores one plane of bytes raw, as a constant, or rANS coded, whichever is smallest.
pub(crate) fn encode_plane(plane: &[u8], w: &mut Writer) {
    let counts = histogram(plane);
    let Some(table) = FreqTable::normalize(&counts) else {
        w.u8(MODE_CONST);
        w.u8(plane.first().copied().unwrap_or(0));
        return;
    };
    let present = counts.iter().filter(|&&c| c > 0).count();
    let est = table.coded_bytes(&counts) + (RANS_OVERHEAD + present * 2) as f64;
    if est < plane.len() as f64 * (1.0 - MIN_SAVING) {
        w.u8(MODE_RANS);
        table.write(w);
        rans::encode(plane, &table, w);
    } else {
        w.u8(MODE_RAW);
        w.bytes(plane);
    }
}

/// Decompresses one chunk into `out` (whole `dtype` elements). `comp` must be consumed
/// exactly; anything inconsistent is an error.
pub fn decode_chunk(comp: &[u8], dtype: DType, out: &mut [u8]) -> Result<()> {
    let width = dtype.word_size();
    let n = out.len() / width;
    let mut r = Reader::new(comp);
    with_scratch(out.len(), |scratch| {
        let mut bufs = plane_slices(scratch, n, width);
        let mut sources: Vec<Option<&[u8]>> = Vec::with_capacity(width);
        for buf in bufs.iter_mut() {
            sources.push(decode_plane(&mut r, buf)?);
        }
        if r.remaining() != 0 {
            return Err(Error::Corrupt(format!(
                "{} stray bytes after chunk",
                r.remaining()
            )));
        }
        let planes: Vec<&[u8]> = sources
            .iter()
            .zip(bufs.iter())
            .map(|(src, buf)| src.unwrap_or(buf))
            .collect();
        fields::merge(&planes, width, dtype.is_float(), out);
        Ok(())
    })
}

/// Decodes one plane into `buf`, or returns the raw bytes in place (no copy).
pub(crate) fn decode_plane<'a>(r: &mut Reader<'a>, buf: &mut [u8]) -> Result<Option<&'a [u8]>> {
    match r.u8()? {
        MODE_RAW => Ok(Some(r.take(buf.len())?)),
        MODE_CONST => {
            buf.fill(r.u8()?);
            Ok(None)
        }
        MODE_RANS => {
            let table = FreqTable::read(r)?;
            rans::decode(r, &table, buf)?;
            Ok(None)
        }
        m => Err(Error::Corrupt(format!("unknown plane mode {m}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn chunk_roundtrip(raw in proptest::collection::vec(any::<u8>(), 0..4096),
                           d in 0usize..17) {
            let dtype = DType::all()[d];
            let raw = &raw[..raw.len() / dtype.size() * dtype.size()];
            let comp = encode_chunk(raw, dtype);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&comp, dtype, &mut out).unwrap();
            prop_assert_eq!(out, raw.to_vec());
        }

        #[test]
        fn floats_roundtrip(vals in proptest::collection::vec(
            prop_oneof![any::<f32>(), Just(f32::NAN), Just(-0.0f32), Just(f32::INFINITY),
                        Just(f32::MIN_POSITIVE / 3.0), -1e-3f32..1e-3f32], 0..3000)) {
            let raw: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            let comp = encode_chunk(&raw, DType::F32);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&comp, DType::F32, &mut out).unwrap();
            prop_assert_eq!(out, raw);
        }
    }
}
