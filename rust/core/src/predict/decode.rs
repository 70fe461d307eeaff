//! Decoding a residual chunk: the bit length or token of every word (context-modelled
//! rANS or its context's constant), then the words from those, raw bits and the reference.

use super::word::{by_width, load, token_bits, unresidual, untoken};
use super::{contexts, CONTEXTS};
use crate::container::bytes::Reader;
use crate::entropy::bits::BitReader;
use crate::entropy::context::DecodeModel;
use crate::entropy::freq::FreqTable;
use crate::error::{Error, Result};
use crate::scratch::{self, Scratch};

/// Slot-map code of constant context `c`: `CONST | c` (table slots are below 16).
const CONST: u8 = 0xe0;
/// Slot-map code of a context that has neither a table nor a constant.
pub(super) const MISSING: u8 = 0xff;

/// The per-context models of a chunk, as read from its header.
pub(super) struct Models {
    /// Each context's frequency table, if it is coded.
    pub tables: Vec<Option<FreqTable>>,
    /// Each context's single symbol, if it is constant.
    pub consts: [Option<u8>; CONTEXTS],
    /// The tables' scale (bits).
    pub scale: u32,
}

/// Every word's symbol (bit length, or token in kind 3). With `consts_coded` (kinds 2 and
/// 3), every word's symbol is in the stream, constant contexts' under single-symbol tables. Otherwise (kind 1) a constant
/// context's words take its constant and the stream holds the others (lanes count coded
/// symbols only): they are decoded in one pass, then spread between the constants.
/// `e_max` is the base exponent stored in the chunk and `most` the reference's largest
/// (the same but in kind 5); a reference whose largest exponent differs is not the
/// encoder's (an error).
pub(super) fn lengths(
    r: &mut Reader,
    reference: &[u8],
    kind: (usize, bool),
    (e_max, most): (u8, u8),
    m: &Models,
    consts_coded: bool,
) -> Result<Scratch<u8>> {
    if consts_coded {
        let (model, lut) = coded_model(m)?;
        let mut slots = scratch::bytes_dirty(reference.len() / kind.0);
        if contexts::map(reference, kind, e_max, &lut, &mut slots) != most {
            return Err(mismatch());
        }
        let mut out = scratch::bytes_dirty(slots.len());
        model.decode(r, &slots, &mut out)?;
        return Ok(out);
    }
    let model = DecodeModel::new(&m.tables)?;
    let lut: [u8; CONTEXTS] = std::array::from_fn(|c| match (m.consts[c], model.slot(c as u8)) {
        (Some(_), _) => CONST | c as u8,
        (None, Some(s)) => s,
        (None, None) => MISSING,
    });
    let mut slots = scratch::bytes_dirty(reference.len() / kind.0);
    if contexts::map(reference, kind, e_max, &lut, &mut slots) != most {
        return Err(mismatch());
    }
    let mut out = scratch::bytes_dirty(slots.len());
    if m.consts.iter().all(Option::is_none) {
        model.decode(r, &slots, &mut out)?;
        return Ok(out);
    }
    let mut coded_slots = scratch::bytes_dirty(slots.len() + 1);
    let j = compact(&slots, &mut coded_slots);
    let mut coded = scratch::bytes_dirty(j + 1);
    model.decode(r, &coded_slots[..j], &mut coded[..j])?;
    let consts: [u8; CONTEXTS] = std::array::from_fn(|c| m.consts[c].unwrap_or(0));
    spread(&slots, &coded, &consts, &mut out);
    Ok(out)
}

/// The decode model of a kind-2 chunk (constant contexts under single-symbol tables) and
/// each context's table slot ([`MISSING`] for contexts without one).
pub(super) fn coded_model(m: &Models) -> Result<(DecodeModel, [u8; CONTEXTS])> {
    let tables: Vec<Option<FreqTable>> = (0..CONTEXTS)
        .map(|c| match m.consts[c] {
            Some(sym) => Some(FreqTable::single(sym, m.scale)),
            None => m.tables[c].clone(),
        })
        .collect();
    let model = DecodeModel::new(&tables)?;
    let lut = std::array::from_fn(|c| model.slot(c as u8).unwrap_or(MISSING));
    Ok((model, lut))
}

/// The raw bits that end a residual chunk (`u32` byte count, bytes); bytes after them
/// are an error.
pub(super) fn raw_bits<'a>(r: &mut Reader<'a>) -> Result<&'a [u8]> {
    let nbytes = r.u32()? as usize;
    let bits = r.take(nbytes)?;
    if r.remaining() != 0 {
        return Err(Error::Corrupt(format!(
            "{} stray bytes after chunk",
            r.remaining()
        )));
    }
    Ok(bits)
}

/// Checks the raw bits the words consumed against the stored bytes.
pub(super) fn check_used(used: usize, nbytes: usize) -> Result<()> {
    if used.div_ceil(8) != nbytes {
        return Err(Error::Corrupt(
            "raw bits do not match the residual lengths".into(),
        ));
    }
    Ok(())
}

/// The error of a reference whose base exponent is not the chunk's.
pub(super) fn mismatch() -> Error {
    Error::Corrupt("reference context differs from the encoder's".into())
}

/// Whether a slot-map code is a constant context's.
#[inline(always)]
fn is_const(s: u8) -> bool {
    s & 0xf0 == CONST
}

/// Whether a block of slot-map codes holds a constant context's (branch-free, so that
/// the check vectorizes).
#[inline(always)]
fn any_const(block: &[u8]) -> bool {
    block.iter().fold(false, |m, &s| m | is_const(s))
}

/// Copies the slots that are not a constant's to the front of `coded` (one spare byte
/// past their count); returns their count. Constant words are rare and come in runs:
/// blocks of 32 without one are copied whole, the others branch-free word by word.
fn compact(slots: &[u8], coded: &mut [u8]) -> usize {
    let mut j = 0;
    for block in slots.chunks(32) {
        if !any_const(block) {
            coded[j..j + block.len()].copy_from_slice(block);
            j += block.len();
            continue;
        }
        for &s in block {
            coded[j] = s;
            j += !is_const(s) as usize;
        }
    }
    j
}

/// Fills `out` from `slots`: a constant context's word gets its constant, every other
/// word the next symbol of `coded` (which holds one per such word, and one spare).
fn spread(slots: &[u8], coded: &[u8], consts: &[u8; CONTEXTS], out: &mut [u8]) {
    let mut j = 0;
    for (o, block) in out.chunks_mut(32).zip(slots.chunks(32)) {
        if !any_const(block) {
            o.copy_from_slice(&coded[j..j + block.len()]);
            j += block.len();
            continue;
        }
        for (o, &s) in o.iter_mut().zip(block) {
            let c = is_const(s);
            *o = if c {
                consts[(s & 0x0f) as usize]
            } else {
                coded[j]
            };
            j += !c as usize;
        }
    }
}

/// Checks that no context can yield a symbol above `limit` (a residual longer than the
/// word: its width for lengths, `word::max_token` for tokens).
pub(super) fn check_symbols(m: &Models, limit: u32) -> Result<()> {
    let longest = m
        .tables
        .iter()
        .flatten()
        .filter_map(|t| t.freq.iter().rposition(|&f| f > 0))
        .chain(m.consts.iter().flatten().map(|&k| k as usize))
        .max()
        .unwrap_or(0);
    if longest as u32 > limit {
        return Err(Error::Corrupt(format!(
            "residual symbol {longest} above the word's {limit}"
        )));
    }
    Ok(())
}

/// Rebuilds the words from bit lengths (`tb` None) or tokens of `tb` top bits, raw bits
/// and the reference; returns the raw bits consumed (the caller checks them against the
/// stored byte count).
pub(super) fn rebuild(
    symbols: &[u8],
    bits: &[u8],
    reference: &[u8],
    out: &mut [u8],
    (width, float, off, tb): (usize, bool, u64, Option<u32>),
) -> usize {
    let mut br = BitReader::new(bits);
    match tb {
        None => by_width!(
            width,
            rebuild_w(symbols, &mut br, reference, out, (off, float))
        ),
        Some(tb) => by_width!(
            width,
            rebuild_tokens(symbols, &mut br, reference, out, (off, tb, float))
        ),
    }
    br.position()
}

/// [`rebuild`] from tokens.
fn rebuild_tokens<const W: usize>(
    tokens: &[u8],
    br: &mut BitReader,
    reference: &[u8],
    out: &mut [u8],
    (off, tb, float): (u64, u32, bool),
) {
    if float {
        rebuild_token_words::<W, true>(tokens, br, reference, out, (off, tb))
    } else {
        rebuild_token_words::<W, false>(tokens, br, reference, out, (off, tb))
    }
}

/// The scalar token loop of [`rebuild`] with the word size and float-ness as constants.
fn rebuild_token_words<const W: usize, const F: bool>(
    tokens: &[u8],
    br: &mut BitReader,
    reference: &[u8],
    out: &mut [u8],
    (off, tb): (u64, u32),
) {
    let bits = 8 * W as u32;
    let words = out.chunks_exact_mut(W).zip(reference.chunks_exact(W));
    for ((o, rw), &t) in words.zip(tokens) {
        let z = untoken(t, tb, br.get(token_bits(t, tb)));
        let x = unresidual(z, load::<W>(rw), off, bits, F);
        o.copy_from_slice(&x.to_le_bytes()[..W]);
    }
}

fn rebuild_w<const W: usize>(
    lengths: &[u8],
    br: &mut BitReader,
    reference: &[u8],
    out: &mut [u8],
    (off, float): (u64, bool),
) {
    let done = if W == 4 {
        simd_rebuild32(lengths, br, reference, out, (off as u32, float))
    } else {
        0
    };
    let (lengths, reference, out) = (
        &lengths[done..],
        &reference[done * W..],
        &mut out[done * W..],
    );
    if float {
        rebuild_words::<W, true>(lengths, br, reference, out, off)
    } else {
        rebuild_words::<W, false>(lengths, br, reference, out, off)
    }
}

/// Rebuilds a prefix of 32-bit words with AVX2 when the CPU has it; returns the words done.
fn simd_rebuild32(
    lengths: &[u8],
    br: &mut BitReader,
    reference: &[u8],
    out: &mut [u8],
    (off, float): (u32, bool),
) -> usize {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        let n = lengths.len().min(reference.len() / 4).min(out.len() / 4);
        // SAFETY: AVX2 is present; the kernel reads and writes whole groups of 8 words
        // below `n` and reads bits only while 40 bytes remain after its position.
        let (done, used) = unsafe {
            super::simd::rebuild32(
                &lengths[..n],
                br.data(),
                br.position(),
                reference,
                out,
                off,
                float,
            )
        };
        br.skip(used);
        return done;
    }
    let _ = (lengths, br, reference, out, off, float);
    0
}

/// The scalar loop of [`rebuild`] with the word size and float-ness as constants, so
/// masks and shifts fold away.
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
        let z = if W == 8 {
            let low = br.get(n.saturating_sub(1));
            if n == 0 {
                0
            } else {
                (1u64 << (n - 1)) | low
            }
        } else {
            // n <= 32: the leading 1 is (1 << n) >> 1 (none for n = 0), branch-free.
            ((1u64 << n) >> 1) | br.get_short(n.saturating_sub(1))
        };
        let x = unresidual(z, load::<W>(rw), off, bits, F);
        o.copy_from_slice(&x.to_le_bytes()[..W]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Block-wise compaction and spreading match the word-by-word definition, with
        /// constant words in runs and alone, over lengths that are no multiple of 32.
        #[test]
        fn compact_and_spread_match_naive(runs in proptest::collection::vec((any::<bool>(), 1usize..80, 0u8..16), 0..40)) {
            let slots: Vec<u8> = runs.iter()
                .flat_map(|&(c, len, v)| std::iter::repeat_n(if c { CONST | v } else { v }, len))
                .collect();
            let mut coded = vec![0u8; slots.len() + 1];
            let j = compact(&slots, &mut coded);
            let want: Vec<u8> = slots.iter().copied().filter(|&s| !is_const(s)).collect();
            prop_assert_eq!(&coded[..j], &want[..]);
            let symbols: Vec<u8> = (0..=j).map(|k| (k * 7) as u8).collect();
            let consts: [u8; CONTEXTS] = std::array::from_fn(|c| 100 + c as u8);
            let mut out = vec![0u8; slots.len()];
            spread(&slots, &symbols, &consts, &mut out);
            let mut k = 0;
            for (o, &s) in out.iter().zip(&slots) {
                if is_const(s) {
                    prop_assert_eq!(*o, consts[(s & 15) as usize]);
                } else {
                    prop_assert_eq!(*o, symbols[k]);
                    k += 1;
                }
            }
        }

        /// The AVX2 prefix and the scalar loop rebuild the same words from the same bits.
        #[test]
        fn simd_rebuild_matches_scalar(words in proptest::collection::vec((any::<u32>(), 0u8..33), 0..700),
                                       off in any::<u32>(), float in any::<bool>()) {
            let lengths: Vec<u8> = words.iter().map(|w| w.1).collect();
            let reference: Vec<u8> = words.iter().flat_map(|w| w.0.to_le_bytes()).collect();
            let bits: Vec<u8> = words.iter().flat_map(|w| w.0.rotate_left(7).to_le_bytes()).collect();
            let n = words.len();
            let (mut a, mut b) = (vec![0u8; 4 * n], vec![0u8; 4 * n]);
            let mut ra = BitReader::new(&bits);
            rebuild_w::<4>(&lengths, &mut ra, &reference, &mut a, (off as u64, float));
            let mut rb = BitReader::new(&bits);
            if float {
                rebuild_words::<4, true>(&lengths, &mut rb, &reference, &mut b, off as u64);
            } else {
                rebuild_words::<4, false>(&lengths, &mut rb, &reference, &mut b, off as u64);
            }
            prop_assert_eq!(a, b);
            prop_assert_eq!(ra.position(), rb.position());
        }
    }
}
