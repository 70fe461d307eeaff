//! Prediction from a reference tensor (the same tensor in the previous checkpoint).
//!
//! Each word x is coded against its reference word r as the zigzagged difference `z` of
//! their order-preserving integer images (floats: sign-magnitude mapped to unsigned order),
//! split into its bit length `n` (an rANS symbol) and the `n - 1` bits below the leading 1
//! (stored raw). `n` is modelled with the reference itself as context: the reference's
//! exponent relative to the chunk's largest, since a step of similar absolute size spans
//! more units in the last place on small values than on large ones.
//!
//! Chunk layout: `u8 kind` — 0: a standalone chunk ([`crate::codec`]) follows (chosen when
//! the estimate says prediction does not pay); 1: residual chunk:
//! `u8 e_max | u64 offset | u16 context bitmap | per used context: u8 mode (1 const + u8 symbol, 2 table)
//! | context rANS stream over the symbols of table contexts | u32 raw-bit byte count | bits`.

use crate::codec;
use crate::container::bytes::{Reader, Writer};
use crate::dtype::DType;
use crate::entropy::bits::{BitReader, BitWriter};
use crate::entropy::context;
use crate::entropy::freq::FreqTable;
use crate::error::{Error, Result};
use crate::scratch::{self, Scratch};

/// Contexts per chunk: reference exponent distance from the chunk maximum, capped.
pub const CONTEXTS: usize = 16;

const KIND_STANDALONE: u8 = 0;
const KIND_RESIDUAL: u8 = 1;

/// Bit width and float-ness of one word of `dtype`.
fn word_kind(dtype: DType) -> (u32, bool) {
    (8 * dtype.word_size() as u32, dtype.is_float())
}

#[inline(always)]
fn mask(bits: u32) -> u64 {
    if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Order-preserving unsigned image of a float word (identity for integers): negative
/// floats have every bit flipped, positive ones only the sign bit. Branch-free.
#[inline(always)]
fn ord(w: u64, bits: u32, float: bool) -> u64 {
    if !float {
        return w;
    }
    let m = mask(bits);
    let sign = (w >> (bits - 1)) & 1;
    w ^ ((0u64.wrapping_sub(sign) & m) | (1u64 << (bits - 1)))
}

#[inline(always)]
fn unord(o: u64, bits: u32, float: bool) -> u64 {
    if !float {
        return o;
    }
    let m = mask(bits);
    let positive = (o >> (bits - 1)) & 1;
    o ^ ((0u64.wrapping_sub(positive ^ 1) & m) | (positive << (bits - 1)))
}

/// Zigzagged residual of `x` against `r` shifted by the chunk's offset `off`.
#[inline(always)]
fn residual(x: u64, r: u64, off: u64, bits: u32, float: bool) -> u64 {
    let m = mask(bits);
    let d = ord(x, bits, float)
        .wrapping_sub(ord(r, bits, float))
        .wrapping_sub(off)
        & m;
    let neg = (d >> (bits - 1)) & 1;
    ((d << 1) & m) ^ (0u64.wrapping_sub(neg) & m)
}

#[inline(always)]
fn unresidual(z: u64, r: u64, off: u64, bits: u32, float: bool) -> u64 {
    let m = mask(bits);
    let d = (z >> 1) ^ (0u64.wrapping_sub(z & 1) & m);
    unord(
        ord(r, bits, float).wrapping_add(off).wrapping_add(d) & m,
        bits,
        float,
    )
}

/// The chunk's typical shift between words and their references in the order-preserving
/// domain: the median over a sample. A multiplicative drift (Adam's second moment decays
/// by beta2^k between checkpoints) is close to a constant shift there, since the image of
/// a float grows like its log; removing it leaves only the fresh part of the change.
fn offset<const W: usize>(raw: &[u8], rf: &[u8], bits: u32, float: bool) -> u64 {
    let n = raw.len() / W;
    let step = (n / 4096).max(1);
    let shift = 64 - bits;
    let d: Vec<i64> = (0..n)
        .step_by(step)
        .map(|i| {
            let (x, r) = (load::<W>(&raw[i * W..]), load::<W>(&rf[i * W..]));
            let v = ord(x, bits, float).wrapping_sub(ord(r, bits, float));
            ((v << shift) as i64) >> shift
        })
        .collect();
    if d.is_empty() {
        return 0;
    }
    // Keep the shift only if it shortens the sample's residuals (it does not for weights,
    // whose steps have either sign).
    let cost = |o: i64| -> u64 {
        d.iter()
            .map(|&v| 64 - (v.wrapping_sub(o).unsigned_abs() << 1).leading_zeros() as u64)
            .sum()
    };
    let mut sorted = d.clone();
    let mid = sorted.len() / 2;
    let m = *sorted.select_nth_unstable(mid).1;
    if cost(m) < cost(0) {
        (m as u64) & mask(bits)
    } else {
        0
    }
}

/// A little-endian word of `W` bytes (a fixed-size copy the compiler turns into one load).
#[inline(always)]
fn load<const W: usize>(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..W].copy_from_slice(&b[..W]);
    u64::from_le_bytes(a)
}

/// Calls `$f::<W>(args)` for the word size `$w` of the data.
macro_rules! by_width {
    ($w:expr, $f:ident ( $($a:expr),* )) => {
        match $w {
            1 => $f::<1>($($a),*),
            2 => $f::<2>($($a),*),
            4 => $f::<4>($($a),*),
            _ => $f::<8>($($a),*),
        }
    };
}

/// Context of each reference word and the chunk's base exponent.
fn contexts(reference: &[u8], width: usize, float: bool) -> (Scratch<u8>, u8) {
    if !float {
        return (scratch::bytes(reference.len() / width), 0);
    }
    by_width!(width, float_contexts(reference))
}

fn float_contexts<const W: usize>(reference: &[u8]) -> (Scratch<u8>, u8) {
    let bits = 8 * W as u32;
    // Top byte after rotating the sign to bit 0: the exponent (or its top bits).
    let top = |w: &[u8]| -> u8 {
        let v = load::<W>(w);
        (((v << 1 | v >> (bits - 1)) & mask(bits)) >> (bits - 8)) as u8
    };
    let mut ctx = scratch::bytes(reference.len() / W);
    for (c, w) in ctx.iter_mut().zip(reference.chunks_exact(W)) {
        *c = top(w);
    }
    let e_max = ctx.iter().copied().max().unwrap_or(0);
    for c in ctx.iter_mut() {
        *c = (e_max - *c).min(CONTEXTS as u8 - 1);
    }
    (ctx, e_max)
}

/// Residuals `z`, their bit lengths and the offset used, for a chunk.
fn residuals(raw: &[u8], reference: &[u8], dtype: DType) -> (Scratch<u64>, Scratch<u8>, u64) {
    let (bits, float) = word_kind(dtype);
    by_width!(dtype.word_size(), residuals_w(raw, reference, bits, float))
}

fn residuals_w<const W: usize>(
    raw: &[u8],
    rf: &[u8],
    bits: u32,
    float: bool,
) -> (Scratch<u64>, Scratch<u8>, u64) {
    debug_assert_eq!(bits, 8 * W as u32);
    let off = offset::<W>(raw, rf, bits, float);
    let n = raw.len() / W;
    let (mut z, mut sym) = (scratch::wide(n), scratch::bytes(n));
    if float {
        residual_words::<W, true>(raw, rf, off, &mut z, &mut sym);
    } else {
        residual_words::<W, false>(raw, rf, off, &mut z, &mut sym);
    }
    (z, sym, off)
}

/// The loop of [`residuals_w`] with the word size and float-ness as constants.
fn residual_words<const W: usize, const F: bool>(
    raw: &[u8],
    rf: &[u8],
    off: u64,
    z: &mut [u64],
    sym: &mut [u8],
) {
    let bits = 8 * W as u32;
    let words = raw.chunks_exact(W).zip(rf.chunks_exact(W));
    for ((zo, so), (x, r)) in z.iter_mut().zip(sym.iter_mut()).zip(words) {
        let v = residual(load::<W>(x), load::<W>(r), off, bits, F);
        *zo = v;
        *so = (64 - v.leading_zeros()) as u8;
    }
}

/// Encodes one chunk of `raw` against the same-sized `reference` chunk, falling back to
/// the standalone codec when the estimate says prediction costs more.
pub fn encode_chunk(raw: &[u8], reference: &[u8], dtype: DType) -> Vec<u8> {
    let width = dtype.word_size();
    let (_, float) = word_kind(dtype);
    let (ctx, e_max) = contexts(reference, width, float);
    let (z, sym, off) = residuals(raw, reference, dtype);
    let mut hists = vec![[0u32; 256]; CONTEXTS];
    for (&s, &c) in sym.iter().zip(ctx.iter()) {
        hists[c as usize][s as usize] += 1;
    }
    let raw_bits: u64 = sym.iter().map(|&n| n.saturating_sub(1) as u64).sum();
    let tables: Vec<Option<FreqTable>> = hists.iter().map(FreqTable::normalize).collect();
    let est = raw_bits as f64 / 8.0
        + tables
            .iter()
            .zip(&hists)
            .map(|(t, h)| t.as_ref().map_or(2.0, |t| t.coded_bytes(h) + 40.0))
            .sum::<f64>();
    // Floats never code below ~0.55 of raw standalone (mantissa noise), so a residual
    // estimate under half the raw size needs no standalone trial encode.
    if !(float && est < 0.5 * raw.len() as f64) {
        let standalone = codec::encode_chunk(raw, dtype);
        if est >= standalone.len() as f64 {
            let mut out = Vec::with_capacity(standalone.len() + 1);
            out.push(KIND_STANDALONE);
            out.extend_from_slice(&standalone);
            return out;
        }
    }
    let mut w = Writer::with_capacity(est as usize + 1024);
    w.u8(KIND_RESIDUAL);
    w.u8(e_max);
    w.u64(off);
    let used: u16 = (0..CONTEXTS)
        .filter(|&c| hists[c].iter().any(|&v| v > 0))
        .fold(0, |m, c| m | 1 << c);
    w.u16(used);
    for c in (0..CONTEXTS).filter(|&c| used >> c & 1 == 1) {
        match &tables[c] {
            Some(t) => {
                w.u8(2);
                t.write(&mut w);
            }
            None => {
                w.u8(1);
                w.u8(hists[c].iter().position(|&v| v > 0).unwrap_or(0) as u8);
            }
        }
    }
    let (mut coded_sym, mut coded_ctx) = (scratch::bytes(0), scratch::bytes(0));
    for (&s, &c) in sym.iter().zip(ctx.iter()) {
        if tables[c as usize].is_some() {
            coded_sym.push(s);
            coded_ctx.push(c);
        }
    }
    context::encode(&coded_sym, &coded_ctx, &tables, &mut w);
    let mut bw = BitWriter::with_capacity(raw_bits as usize / 8 + 16);
    for (&v, &n) in z.iter().zip(sym.iter()) {
        if n >= 2 {
            bw.put(v & mask(n as u32 - 1), n as u32 - 1);
        }
    }
    let bytes = bw.finish();
    w.u32(bytes.len() as u32);
    w.bytes(&bytes);
    w.into_inner()
}

/// Decodes a chunk written by [`encode_chunk`] into `out`, given the same reference chunk.
pub fn decode_chunk(comp: &[u8], reference: &[u8], dtype: DType, out: &mut [u8]) -> Result<()> {
    let mut r = Reader::new(comp);
    match r.u8()? {
        KIND_STANDALONE => return codec::decode_chunk(&comp[1..], dtype, out),
        KIND_RESIDUAL => {}
        k => return Err(Error::Corrupt(format!("unknown predicted chunk kind {k}"))),
    }
    let width = dtype.word_size();
    let (bits, float) = word_kind(dtype);
    let (ctx, e_max) = contexts(reference, width, float);
    if r.u8()? != e_max {
        return Err(Error::Corrupt(
            "reference context differs from the encoder's".into(),
        ));
    }
    let off = r.u64()? & mask(bits);
    let used = r.u16()?;
    let mut tables: Vec<Option<FreqTable>> = vec![None; CONTEXTS];
    let mut consts: Vec<Option<u8>> = vec![None; CONTEXTS];
    for c in (0..CONTEXTS).filter(|&c| used >> c & 1 == 1) {
        match r.u8()? {
            1 => consts[c] = Some(r.u8()?),
            2 => tables[c] = Some(FreqTable::read(&mut r)?),
            m => return Err(Error::Corrupt(format!("unknown context mode {m}"))),
        }
    }
    let lengths = decode_lengths(&mut r, &ctx, &tables, &consts, bits)?;
    let nbytes = r.u32()? as usize;
    let bits_data = r.take(nbytes)?;
    if r.remaining() != 0 {
        return Err(Error::Corrupt(format!(
            "{} stray bytes after chunk",
            r.remaining()
        )));
    }
    let needed: u64 = lengths.iter().map(|&n| n.saturating_sub(1) as u64).sum();
    if needed.div_ceil(8) != nbytes as u64 {
        return Err(Error::Corrupt(
            "raw bits do not match the residual lengths".into(),
        ));
    }
    let mut br = BitReader::new(bits_data);
    by_width!(
        width,
        rebuild(&lengths, &mut br, reference, out, (off, bits, float))
    );
    Ok(())
}

/// Every word's bit length: its context's constant, or the next coded symbol.
fn decode_lengths(
    r: &mut Reader,
    ctx: &[u8],
    tables: &[Option<FreqTable>],
    consts: &[Option<u8>],
    bits: u32,
) -> Result<Scratch<u8>> {
    let mut dec = context::Decoder::new(r, tables)?;
    let mut out = scratch::bytes(ctx.len());
    for (o, &c) in out.iter_mut().zip(ctx.iter()) {
        let n = match consts[c as usize] {
            Some(k) => k,
            None => dec.next(c)?,
        };
        if n as u32 > bits {
            return Err(Error::Corrupt(format!(
                "residual of {n} bits in a {bits}-bit word"
            )));
        }
        *o = n;
    }
    dec.finish()?;
    Ok(out)
}

/// Rebuilds the words from bit lengths, raw bits and the reference. The caller checked
/// that the raw bits are exactly as many as the lengths need.
fn rebuild<const W: usize>(
    lengths: &[u8],
    br: &mut BitReader,
    reference: &[u8],
    out: &mut [u8],
    (off, bits, float): (u64, u32, bool),
) {
    debug_assert_eq!(bits, 8 * W as u32);
    if float {
        rebuild_words::<W, true>(lengths, br, reference, out, off)
    } else {
        rebuild_words::<W, false>(lengths, br, reference, out, off)
    }
}

/// The loop of [`rebuild`] with the word size and float-ness as constants, so masks and
/// shifts fold away.
fn rebuild_words<const W: usize, const F: bool>(
    lengths: &[u8],
    br: &mut BitReader,
    reference: &[u8],
    out: &mut [u8],
    off: u64,
) {
    let bits = 8 * W as u32;
    let words = out.chunks_exact_mut(W).zip(reference.chunks_exact(W));
    for ((o, rw), &n) in words.zip(lengths) {
        let n = n as u32;
        let low = br.get(n.saturating_sub(1));
        let z = if n == 0 { 0 } else { (1u64 << (n - 1)) | low };
        let x = unresidual(z, load::<W>(rw), off, bits, F);
        o.copy_from_slice(&x.to_le_bytes()[..W]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn residual_inverts(x in any::<u64>(), r in any::<u64>(), wi in 0usize..4, float in any::<bool>()) {
            let bits = [8u32, 16, 32, 64][wi];
            let (x, r) = (x & mask(bits), r & mask(bits));
            let off = x.wrapping_mul(r) & mask(bits);
            prop_assert_eq!(unresidual(residual(x, r, off, bits, float), r, off, bits, float), x);
        }

        #[test]
        fn chunk_roundtrip_random_reference(raw in proptest::collection::vec(any::<u8>(), 0..4096),
                                            noise in proptest::collection::vec(any::<u8>(), 0..4096),
                                            d in 0usize..17) {
            let dtype = DType::all()[d];
            let n = raw.len().min(noise.len()) / dtype.size() * dtype.size();
            let (raw, reference) = (&raw[..n], &noise[..n]);
            let comp = encode_chunk(raw, reference, dtype);
            let mut out = vec![0u8; n];
            decode_chunk(&comp, reference, dtype, &mut out).unwrap();
            prop_assert_eq!(out, raw.to_vec());
        }

        #[test]
        fn chunk_roundtrip_close_floats(vals in proptest::collection::vec(-1.0f32..1.0, 1..3000),
                                        step in -1e-4f32..1e-4) {
            let reference: Vec<u8> = vals.iter().flat_map(|v| v.to_le_bytes()).collect();
            let raw: Vec<u8> = vals.iter().map(|v| v + step * v.abs().max(1e-3))
                .flat_map(|v| v.to_le_bytes()).collect();
            let comp = encode_chunk(&raw, &reference, DType::F32);
            let mut out = vec![0u8; raw.len()];
            decode_chunk(&comp, &reference, DType::F32, &mut out).unwrap();
            prop_assert_eq!(out, raw);
        }
    }

    #[test]
    fn close_weights_compress_well() {
        let mut s = 3u64;
        let mut next = || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 40) as f32 / (1u64 << 24) as f32 - 0.5
        };
        let base: Vec<f32> = (0..100_000).map(|_| next() * 0.1).collect();
        let reference: Vec<u8> = base.iter().flat_map(|v| v.to_le_bytes()).collect();
        let raw: Vec<u8> = base
            .iter()
            .map(|v| v + next() * 1e-5)
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let comp = encode_chunk(&raw, &reference, DType::F32);
        let standalone = codec::encode_chunk(&raw, DType::F32);
        assert_eq!(comp[0], KIND_RESIDUAL);
        assert!(
            comp.len() * 10 < standalone.len() * 8,
            "{} vs {}",
            comp.len(),
            standalone.len()
        );
        let mut out = vec![0u8; raw.len()];
        decode_chunk(&comp, &reference, DType::F32, &mut out).unwrap();
        assert_eq!(out, raw);
    }
}
