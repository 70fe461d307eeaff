//! rANS with several contexts: symbol `i` is coded under `tables[ctx[i]]`. Same stream
//! layout and lane rules as [`super::rans`] (the contexts are known to the decoder before
//! it decodes, e.g. they come from a reference tensor), scalar code.

use super::freq::{FreqTable, TOTAL};
use super::rans::{dec_entry, EncSym, L};
use super::{LANES, SCALE_BITS};
use crate::container::bytes::{Reader, Writer};
use crate::error::{Error, Result};

const MASK: u32 = TOTAL - 1;

/// Codes `symbols[i]` under `tables[ctx[i]]` (every used context must have a table).
pub fn encode(symbols: &[u8], ctx: &[u8], tables: &[Option<FreqTable>], w: &mut Writer) {
    let enc: Vec<Option<Box<[EncSym; 256]>>> = tables
        .iter()
        .map(|t| t.as_ref().map(|t| Box::new(EncSym::table(t))))
        .collect();
    let n = symbols.len();
    let mut words = crate::scratch::words(n + 8);
    let mut pos = words.len();
    let mut x = [L; LANES];
    for i in (0..n).rev() {
        let e = &enc[ctx[i] as usize]
            .as_ref()
            .expect("table for every used context")[symbols[i] as usize];
        e.put(&mut x[i % LANES], &mut words, &mut pos);
    }
    for s in x {
        w.u32(s);
    }
    w.u32((words.len() - pos) as u32);
    w.u16s(&words[pos..]);
}

/// Decodes `out.len()` symbols coded by [`encode`] with the same `ctx` and tables.
pub fn decode(
    r: &mut Reader,
    ctx: &[u8],
    tables: &[Option<FreqTable>],
    out: &mut [u8],
) -> Result<()> {
    if tables.len() > 16 {
        return Err(Error::Corrupt("too many contexts".into()));
    }
    // The present contexts' tables back to back (entry `slot[ctx] << 12 | x & 4095`);
    // contexts are validated before the loop, so every used context has a slot.
    let mut dt = Vec::new();
    let mut slot = [0usize; 16];
    for (c, t) in tables.iter().enumerate() {
        if let Some(t) = t {
            slot[c] = dt.len() >> SCALE_BITS;
            dt.extend_from_slice(&dec_entry(t));
        }
    }
    if let Some(&c) = ctx
        .iter()
        .find(|&&c| tables.get(c as usize).is_none_or(|t| t.is_none()))
    {
        return Err(Error::Corrupt(format!("no table for context {c}")));
    }
    let mut x = [0u32; LANES];
    for s in x.iter_mut() {
        *s = r.u32()?;
        if !(L..1 << 31).contains(s) {
            return Err(Error::Corrupt(format!("rANS state {s:#x} out of range")));
        }
    }
    let count = r.u32()? as usize;
    let words = r.take(count * 2)?;
    let mut p = 0;
    for (i, (o, &c)) in out.iter_mut().zip(ctx).enumerate() {
        let l = i % LANES;
        let e = dt[slot[c as usize & 15] << SCALE_BITS | (x[l] & MASK) as usize];
        let mut v = (e >> 8 & 0xfff) * (x[l] >> SCALE_BITS) + (e >> 20);
        if v < L {
            let b = words
                .get(2 * p..2 * p + 2)
                .ok_or_else(|| Error::Corrupt("rANS stream read past its end".into()))?;
            v = (v << 16) | u16::from_le_bytes([b[0], b[1]]) as u32;
            p += 1;
        }
        x[l] = v;
        *o = e as u8;
    }
    if x.iter().any(|&s| s != L) || p != count {
        return Err(Error::Corrupt("rANS stream did not end cleanly".into()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::freq::histogram;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn context_roundtrip(pairs in proptest::collection::vec((0u8..3, 0u8..6), 0..3000)) {
            let ctx: Vec<u8> = pairs.iter().map(|p| p.0).collect();
            let sym: Vec<u8> = pairs.iter().map(|p| p.0 * 7 + p.1).collect();
            let mut tables = vec![None, None, None];
            for c in 0..3u8 {
                let s: Vec<u8> = sym.iter().zip(&ctx).filter(|(_, &k)| k == c).map(|(&s, _)| s).collect();
                let mut h = histogram(&s);
                if h.iter().filter(|&&v| v > 0).count() < 2 {
                    h[255] += 1; // keep every used context codable in this test
                    h[254] += 1;
                }
                tables[c as usize] = FreqTable::normalize(&h);
            }
            let mut w = Writer::default();
            encode(&sym, &ctx, &tables, &mut w);
            let buf = w.into_inner();
            let mut out = vec![0u8; sym.len()];
            decode(&mut Reader::new(&buf), &ctx, &tables, &mut out).unwrap();
            prop_assert_eq!(out, sym);
        }
    }
}
