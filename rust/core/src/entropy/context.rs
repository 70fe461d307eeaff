//! rANS with several contexts: symbol `i` is coded under `tables[ctx[i]]`. Same stream
//! layout and lane rules as [`super::rans`]. The decoder is incremental ([`Decoder::next`]),
//! so the caller interleaves it with its own work (e.g. symbols of constant contexts).

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
    let mut d = Decoder::new(r, tables)?;
    for (o, &c) in out.iter_mut().zip(ctx) {
        *o = d.next(c)?;
    }
    d.finish()
}

/// Decodes one symbol at a time, each under the context the caller names.
pub struct Decoder<'a> {
    /// Decode tables of the present contexts, back to back.
    dt: Vec<u32>,
    /// Slot of each context's table in `dt`, or `u8::MAX` when it has none.
    slot: [u8; 256],
    x: [u32; LANES],
    words: &'a [u8],
    p: usize,
    k: usize,
}

impl<'a> Decoder<'a> {
    /// Reads the stream header (states, word count) that follows in `r`.
    pub fn new(r: &mut Reader<'a>, tables: &[Option<FreqTable>]) -> Result<Decoder<'a>> {
        if tables.len() > 256 {
            return Err(Error::Corrupt("too many contexts".into()));
        }
        if tables.iter().filter(|t| t.is_some()).count() >= u8::MAX as usize {
            return Err(Error::Corrupt("too many context tables".into()));
        }
        let mut dt = Vec::new();
        let mut slot = [u8::MAX; 256];
        for (c, t) in tables.iter().enumerate() {
            if let Some(t) = t {
                slot[c] = (dt.len() >> SCALE_BITS) as u8;
                dt.extend_from_slice(&dec_entry(t));
            }
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
        Ok(Decoder {
            dt,
            slot,
            x,
            words,
            p: 0,
            k: 0,
        })
    }

    /// The next symbol, coded under context `c`.
    #[inline]
    pub fn next(&mut self, c: u8) -> Result<u8> {
        let t = self.slot[c as usize];
        if t == u8::MAX {
            return Err(Error::Corrupt(format!("no table for context {c}")));
        }
        let l = self.k % LANES;
        self.k += 1;
        let x = self.x[l];
        let e = self.dt[(t as usize) << SCALE_BITS | (x & MASK) as usize];
        let mut v = (e >> 8 & 0xfff) * (x >> SCALE_BITS) + (e >> 20);
        if v < L {
            let b = self
                .words
                .get(2 * self.p..2 * self.p + 2)
                .ok_or_else(|| Error::Corrupt("rANS stream read past its end".into()))?;
            v = (v << 16) | u16::from_le_bytes([b[0], b[1]]) as u32;
            self.p += 1;
        }
        self.x[l] = v;
        Ok(e as u8)
    }

    /// Checks the stream ended exactly: every state back at its start, every word used.
    pub fn finish(self) -> Result<()> {
        if self.x.iter().any(|&s| s != L) || 2 * self.p != self.words.len() {
            return Err(Error::Corrupt("rANS stream did not end cleanly".into()));
        }
        Ok(())
    }
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
