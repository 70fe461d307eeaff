//! Symbol statistics: histograms, normalized tables, their compact serialization and the
//! estimated coded size used to choose between coding a plane and storing it raw.

use super::SCALE_BITS;
use crate::container::bytes::{Reader, Writer};
use crate::error::{Error, Result};

/// Total of a normalized table.
pub const TOTAL: u32 = 1 << SCALE_BITS;

/// Scales a table may have (in bits): decode-table entries hold frequencies and offsets
/// in 12 bits, and 2^8 leaves room for every byte value. Smaller scales make smaller
/// decode tables (the context coder keeps many of them at once).
pub const SCALES: std::ops::RangeInclusive<u32> = 8..=SCALE_BITS;

/// Counts byte values; four sub-histograms hide the store-to-load latency of repeats.
pub fn histogram(data: &[u8]) -> [u32; 256] {
    let mut h = [[0u32; 256]; 4];
    let mut it = data.chunks_exact(4);
    for c in &mut it {
        h[0][c[0] as usize] += 1;
        h[1][c[1] as usize] += 1;
        h[2][c[2] as usize] += 1;
        h[3][c[3] as usize] += 1;
    }
    for &b in it.remainder() {
        h[0][b as usize] += 1;
    }
    let mut out = [0u32; 256];
    for (s, o) in out.iter_mut().enumerate() {
        *o = h[0][s] + h[1][s] + h[2][s] + h[3][s];
    }
    out
}

/// Index of the largest entry (lowest index on ties).
fn argmax(f: &[u32; 256]) -> usize {
    let mut best = 0;
    for s in 1..256 {
        if f[s] > f[best] {
            best = s;
        }
    }
    best
}

/// A frequency table over bytes that sums to [`TOTAL`], with at least two symbols present
/// (a single-symbol plane is stored as a constant instead).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FreqTable {
    /// Frequency of each byte value; zero for absent symbols.
    pub freq: [u16; 256],
}

impl FreqTable {
    /// Scales `counts` to sum to [`TOTAL`], keeping every present symbol at least 1.
    /// Pure integer arithmetic, so every encoder (CPU or GPU) can reproduce it exactly.
    /// Returns `None` when fewer than two symbols are present.
    pub fn normalize(counts: &[u32; 256]) -> Option<FreqTable> {
        Self::normalize_scaled(counts, SCALE_BITS)
    }

    /// [`FreqTable::normalize`] to a total of `2^bits` (`bits` in [`SCALES`]); `None` also
    /// when more symbols are present than the total can hold.
    pub fn normalize_scaled(counts: &[u32; 256], bits: u32) -> Option<FreqTable> {
        let total = 1u32 << bits;
        let n: u64 = counts.iter().map(|&c| c as u64).sum();
        let present = counts.iter().filter(|&&c| c > 0).count();
        if present < 2 || present > total as usize || !SCALES.contains(&bits) {
            return None;
        }
        let mut f = [0u32; 256];
        let mut sum = 0u32;
        for s in 0..256 {
            if counts[s] > 0 {
                let scaled = ((counts[s] as u64 * total as u64 + n / 2) / n) as u32;
                f[s] = scaled.max(1);
                sum += f[s];
            }
        }
        // Fix the rounding drift on the largest entries, a slice at a time: their relative
        // change costs the fewest bits.
        while sum > total {
            let big = argmax(&f);
            let take = (sum - total).min((f[big] / 16).max(1));
            f[big] -= take;
            sum -= take;
        }
        if sum < total {
            let big = argmax(&f);
            f[big] += total - sum;
        }
        let mut freq = [0u16; 256];
        for s in 0..256 {
            freq[s] = f[s] as u16;
        }
        Some(FreqTable { freq })
    }

    /// A table of total `2^bits` (`bits` below 12, so that the total fits a decode entry's
    /// 12-bit frequency field) holding only `sym`: its coding steps leave a rANS state as
    /// it is, so a context with one symbol costs no bits yet keeps its place in the lanes.
    pub fn single(sym: u8, bits: u32) -> FreqTable {
        debug_assert!(bits < SCALE_BITS);
        let mut freq = [0u16; 256];
        freq[sym as usize] = 1 << bits;
        FreqTable { freq }
    }

    /// The sum of the frequencies: `2^bits` of the table's scale.
    pub fn total(&self) -> u32 {
        self.freq.iter().map(|&f| f as u32).sum()
    }

    /// The table's scale: its total is `2^scale_bits()`.
    pub fn scale_bits(&self) -> u32 {
        self.total().trailing_zeros()
    }

    /// Estimated size in bytes of `counts` coded under this table (payload only).
    pub fn coded_bytes(&self, counts: &[u32; 256]) -> f64 {
        let scale = self.scale_bits() as f64;
        let mut bits = 0.0f64;
        for s in 0..256 {
            if counts[s] > 0 {
                bits += counts[s] as f64 * (scale - (self.freq[s] as f64).log2());
            }
        }
        bits / 8.0
    }

    /// Cumulative frequencies (`cum[s]` = sum of `freq[..s]`).
    pub fn cumulative(&self) -> [u32; 257] {
        let mut cum = [0u32; 257];
        for s in 0..256 {
            cum[s + 1] = cum[s] + self.freq[s] as u32;
        }
        cum
    }

    /// Serializes as a 32-byte presence bitmap followed by each present frequency as a
    /// LEB128 varint (most are below 128, so about one byte per symbol).
    pub fn write(&self, w: &mut Writer) {
        let mut bitmap = [0u8; 32];
        for s in 0..256 {
            if self.freq[s] > 0 {
                bitmap[s / 8] |= 1 << (s % 8);
            }
        }
        w.bytes(&bitmap);
        for s in 0..256 {
            if self.freq[s] > 0 {
                w.varint(self.freq[s] as u64);
            }
        }
    }

    /// Reads and validates a table written by [`FreqTable::write`].
    pub fn read(r: &mut Reader) -> Result<FreqTable> {
        Self::read_scaled(r, SCALE_BITS)
    }

    /// Reads and validates a table of total `2^bits` (`bits` in [`SCALES`]).
    pub fn read_scaled(r: &mut Reader, bits: u32) -> Result<FreqTable> {
        if !SCALES.contains(&bits) {
            return Err(Error::Corrupt(format!("table scale {bits} out of range")));
        }
        let total = 1u64 << bits;
        let bitmap = r.take(32)?;
        let mut freq = [0u16; 256];
        let mut sum = 0u64;
        let mut present = 0;
        for s in 0..256 {
            if bitmap[s / 8] & (1 << (s % 8)) != 0 {
                let f = r.varint()?;
                if f == 0 || f >= total {
                    return Err(Error::Corrupt(format!("frequency {f} out of range")));
                }
                freq[s] = f as u16;
                sum += f;
                present += 1;
            }
        }
        if sum != total || present < 2 {
            return Err(Error::Corrupt(format!(
                "frequency table sums to {sum} over {present} symbols (want {total}, >= 2)"
            )));
        }
        Ok(FreqTable { freq })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn normalize_sums_to_total(counts in proptest::collection::vec(0u32..1_000_000, 256),
                                   bits in 8u32..=12) {
            let mut c = [0u32; 256];
            c.copy_from_slice(&counts);
            if let Some(t) = FreqTable::normalize_scaled(&c, bits) {
                let sum: u32 = t.freq.iter().map(|&f| f as u32).sum();
                prop_assert_eq!(sum, 1 << bits);
                prop_assert_eq!(t.scale_bits(), bits);
                for s in 0..256 {
                    prop_assert_eq!(c[s] > 0, t.freq[s] > 0);
                }
                let mut w = Writer::default();
                t.write(&mut w);
                let buf = w.into_inner();
                prop_assert_eq!(&FreqTable::read_scaled(&mut Reader::new(&buf), bits).unwrap(), &t);
                // Read at another scale, the table is refused.
                let other = if bits == 12 { 11 } else { 12 };
                prop_assert!(FreqTable::read_scaled(&mut Reader::new(&buf), other).is_err());
            } else {
                prop_assert!(c.iter().filter(|&&x| x > 0).count() < 2);
            }
        }
    }

    #[test]
    fn many_rare_symbols_keep_floor() {
        let mut c = [1u32; 256];
        c[0] = 1_000_000_000;
        let t = FreqTable::normalize(&c).unwrap();
        assert!(t.freq.iter().all(|&f| f >= 1));
        assert_eq!(t.freq.iter().map(|&f| f as u32).sum::<u32>(), TOTAL);
    }
}
