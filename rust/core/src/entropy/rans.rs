//! A 32-lane interleaved rANS coder with 32-bit states and 16-bit renormalization.
//!
//! Symbol `i` of a stream is coded by lane `i % 32`; each lane has its own word stream so
//! that a decoder (a CPU core or one GPU thread per lane) never waits on another lane.
//! Stream layout: 32 x u32 word counts, 32 x u32 initial decoder states, then each lane's
//! u16 words in order (all little-endian). States live in `[L, 2^31)` with `L = 2^15`, which
//! keeps the encoder's reciprocal division exact and needs at most one word per symbol.

use super::freq::{FreqTable, TOTAL};
use super::{LANES, SCALE_BITS};
use crate::container::bytes::{Reader, Writer};
use crate::error::{Error, Result};

/// Lower bound of the normalized state interval.
const L: u32 = 1 << 15;
const MASK: u32 = TOTAL - 1;

/// Per-symbol encoder constants: division by `freq` as a multiply and shift (Alverson's
/// method, as in ryg_rans), exact for states below 2^31.
#[derive(Clone, Copy, Default)]
struct EncSym {
    x_max: u32,
    rcp_freq: u32,
    bias: u32,
    cmpl_freq: u32,
    rcp_shift: u32,
}

impl EncSym {
    fn new(start: u32, freq: u32) -> EncSym {
        let x_max = ((L >> SCALE_BITS) << 16) * freq;
        let cmpl_freq = TOTAL - freq;
        if freq < 2 {
            EncSym {
                x_max,
                rcp_freq: u32::MAX,
                bias: start + TOTAL - 1,
                cmpl_freq,
                rcp_shift: 0,
            }
        } else {
            let mut shift = 0;
            while freq > (1u32 << shift) {
                shift += 1;
            }
            let rcp_freq = (((1u64 << (shift + 31)) + freq as u64 - 1) / freq as u64) as u32;
            EncSym {
                x_max,
                rcp_freq,
                bias: start,
                cmpl_freq,
                rcp_shift: shift - 1,
            }
        }
    }
}

/// Codes `symbols` under `table` and appends the stream to `w`.
pub fn encode(symbols: &[u8], table: &FreqTable, w: &mut Writer) {
    let cum = table.cumulative();
    let mut syms = [EncSym::default(); 256];
    for s in 0..256 {
        if table.freq[s] > 0 {
            syms[s] = EncSym::new(cum[s], table.freq[s] as u32);
        }
    }
    let n = symbols.len();
    // Each lane writes its words backwards into its own region, so they come out in order.
    let cap = n.div_ceil(LANES) + 2;
    let mut words = vec![0u16; cap * LANES];
    let mut pos = [0usize; LANES];
    for (l, p) in pos.iter_mut().enumerate() {
        *p = (l + 1) * cap;
    }
    let mut x = [L; LANES];
    let full = n / LANES * LANES;
    for i in (full..n).rev() {
        put(
            &mut x[i - full],
            &syms[symbols[i] as usize],
            &mut words,
            &mut pos[i - full],
        );
    }
    for block in symbols[..full].chunks_exact(LANES).rev() {
        for l in (0..LANES).rev() {
            put(&mut x[l], &syms[block[l] as usize], &mut words, &mut pos[l]);
        }
    }
    for (l, p) in pos.iter().enumerate() {
        w.u32(((l + 1) * cap - p) as u32);
    }
    for s in x {
        w.u32(s);
    }
    for (l, &p) in pos.iter().enumerate() {
        w.u16s(&words[p..(l + 1) * cap]);
    }
}

#[inline(always)]
fn put(x: &mut u32, s: &EncSym, words: &mut [u16], pos: &mut usize) {
    let mut v = *x;
    if v >= s.x_max {
        *pos -= 1;
        words[*pos] = v as u16;
        v >>= 16;
    }
    let q = (((v as u64 * s.rcp_freq as u64) >> 32) as u32) >> s.rcp_shift;
    *x = v + s.bias + q * s.cmpl_freq;
}

/// Decode-table entry: symbol (8 bits) | freq (12 bits) | slot - cum (12 bits).
fn decode_table(table: &FreqTable) -> Vec<u32> {
    let mut t = vec![0u32; TOTAL as usize];
    let mut start = 0u32;
    for s in 0..256u32 {
        let f = table.freq[s as usize] as u32;
        for slot in start..start + f {
            t[slot as usize] = s | (f << 8) | ((slot - start) << 20);
        }
        start += f;
    }
    t
}

/// One lane's view of its word stream inside the coded bytes.
struct Lanes<'a> {
    data: &'a [u8],
    pos: [usize; LANES],
    end: [usize; LANES],
}

impl Lanes<'_> {
    /// Fewest whole words left in any lane.
    fn min_left(&self) -> usize {
        (0..LANES)
            .map(|l| (self.end[l] - self.pos[l]) / 2)
            .min()
            .unwrap_or(0)
    }
}

/// Decodes exactly `out.len()` symbols from the stream at `r` under `table`.
/// Every inconsistency (over-read, leftover words, wrong final state) is an error.
pub fn decode(r: &mut Reader, table: &FreqTable, out: &mut [u8]) -> Result<()> {
    let mut counts = [0usize; LANES];
    for c in counts.iter_mut() {
        *c = r.u32()? as usize;
    }
    let mut x = [0u32; LANES];
    for s in x.iter_mut() {
        *s = r.u32()?;
        if !(L..1 << 31).contains(s) {
            return Err(Error::Corrupt(format!("rANS state {s:#x} out of range")));
        }
    }
    let total_words = counts.iter().try_fold(0usize, |a, &c| a.checked_add(c));
    let total_bytes = total_words
        .and_then(|w| w.checked_mul(2))
        .ok_or_else(|| Error::Corrupt("lane lengths overflow".into()))?;
    let data = r.take(total_bytes)?;
    let mut lanes = Lanes {
        data,
        pos: [0; LANES],
        end: [0; LANES],
    };
    let mut at = 0;
    for l in 0..LANES {
        lanes.pos[l] = at;
        at += counts[l] * 2;
        lanes.end[l] = at;
    }
    let dt = decode_table(table);
    let n = out.len();
    let full = n / LANES * LANES;
    let mut b = 0;
    while b < full {
        let safe = lanes.min_left().min((full - b) / LANES);
        if safe == 0 {
            block::<true>(&mut x, &dt, &mut lanes, &mut out[b..b + LANES])?;
            b += LANES;
            continue;
        }
        for blk in out[b..b + safe * LANES].chunks_exact_mut(LANES) {
            block::<false>(&mut x, &dt, &mut lanes, blk)?;
        }
        b += safe * LANES;
    }
    for i in full..n {
        out[i] = step::<true>(&mut x[i - full], &dt, &mut lanes, i - full)?;
    }
    for l in 0..LANES {
        if x[l] != L || lanes.pos[l] != lanes.end[l] {
            return Err(Error::Corrupt(format!("rANS lane {l} did not end cleanly")));
        }
    }
    Ok(())
}

#[inline(always)]
fn block<const CHECKED: bool>(
    x: &mut [u32; LANES],
    dt: &[u32],
    lanes: &mut Lanes,
    out: &mut [u8],
) -> Result<()> {
    for l in 0..LANES {
        out[l] = step::<CHECKED>(&mut x[l], dt, lanes, l)?;
    }
    Ok(())
}

#[inline(always)]
fn step<const CHECKED: bool>(x: &mut u32, dt: &[u32], lanes: &mut Lanes, l: usize) -> Result<u8> {
    let e = dt[(*x & MASK) as usize];
    let mut v = (e >> 8 & 0xfff) * (*x >> SCALE_BITS) + (e >> 20);
    if v < L {
        let p = lanes.pos[l];
        if CHECKED && p + 2 > lanes.end[l] {
            return Err(Error::Corrupt(format!("rANS lane {l} read past its end")));
        }
        // In the unchecked path `min_left` guaranteed a word per lane per block.
        let w = u16::from_le_bytes([lanes.data[p], lanes.data[p + 1]]);
        v = (v << 16) | w as u32;
        lanes.pos[l] = p + 2;
    }
    *x = v;
    Ok(e as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entropy::freq::histogram;
    use proptest::prelude::*;

    fn roundtrip(data: &[u8]) {
        let Some(t) = FreqTable::normalize(&histogram(data)) else {
            return;
        };
        let mut w = Writer::default();
        encode(data, &t, &mut w);
        let buf = w.into_inner();
        let mut out = vec![0u8; data.len()];
        let mut r = Reader::new(&buf);
        decode(&mut r, &t, &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(r.remaining(), 0);
    }

    proptest! {
        #[test]
        fn roundtrip_any(data in proptest::collection::vec(any::<u8>(), 0..3000)) {
            roundtrip(&data);
        }

        #[test]
        fn roundtrip_skewed(data in proptest::collection::vec(
            prop_oneof![8 => Just(0u8), 1 => any::<u8>()], 0..5000)) {
            roundtrip(&data);
        }

        #[test]
        fn corrupt_streams_never_panic(data in proptest::collection::vec(0u8..4, 1..2000),
                                       flip in any::<usize>()) {
            let t = FreqTable::normalize(&histogram(&data));
            prop_assume!(t.is_some());
            let t = t.unwrap();
            let mut w = Writer::default();
            encode(&data, &t, &mut w);
            let mut buf = w.into_inner();
            let bit = flip % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            let mut out = vec![0u8; data.len()];
            let _ = decode(&mut Reader::new(&buf), &t, &mut out);
        }
    }

    #[test]
    fn skewed_large_is_near_entropy() {
        // Geometric-ish distribution over 40 symbols, like a float exponent plane.
        let mut data = Vec::new();
        let mut state = 12345u64;
        for _ in 0..200_000 {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let z = (state >> 33).trailing_zeros().min(39) as u8;
            data.push(100 + z);
        }
        let h = histogram(&data);
        let n = data.len() as f64;
        let entropy: f64 = h
            .iter()
            .filter(|&&c| c > 0)
            .map(|&c| -(c as f64) * (c as f64 / n).log2())
            .sum();
        let t = FreqTable::normalize(&h).unwrap();
        let mut w = Writer::default();
        encode(&data, &t, &mut w);
        let coded = w.into_inner().len() as f64 * 8.0;
        assert!(
            coded < entropy * 1.01 + 4096.0,
            "coded {coded} bits vs entropy {entropy}"
        );
        roundtrip(&data);
    }
}
