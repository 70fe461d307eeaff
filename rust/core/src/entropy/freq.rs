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

/// Scales of wide tables, for large alphabets (pair symbols) whose rare symbols would take
/// too much probability at `2^12`: still at most [`MAX_FREQ`] per symbol, since decode
/// entries keep 12 bits for it; the rANS states' 15-bit floor allows up to 2^15.
pub const WIDE_SCALES: std::ops::RangeInclusive<u32> = 8..=14;

/// The largest frequency a table may give a symbol: 12 bits of a decode entry.
pub const MAX_FREQ: u32 = 4095;

/// Counts byte values; four sub-histograms hide the store-to-load latency of repeats.
pub fn histogram(data: &[u8]) -> [u32; 256] {
    let mut h = [[0u32; 256]; 4];
    count_into(&mut h, data);
    sum_sub(&h)
}

/// Adds the bytes of `data` to the sub-histograms `h` (four, so that runs of one value
/// do not wait on their own increments).
pub(crate) fn count_into(h: &mut [[u32; 256]; 4], data: &[u8]) {
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
}

/// One histogram from four sub-histograms.
pub(crate) fn sum_sub(h: &[[u32; 256]; 4]) -> [u32; 256] {
    let mut out = [0u32; 256];
    for (s, o) in out.iter_mut().enumerate() {
        *o = h[0][s] + h[1][s] + h[2][s] + h[3][s];
    }
    out
}

/// Planes with at least this many symbols are modelled from a sample (see [`model_counts`]).
pub const MODEL_SAMPLE_MIN: usize = 1 << 16;
/// The sample: every symbol at an index `i` with `i % MODEL_STRIDE < MODEL_RUN` (1 in 8, in
/// runs of 64). Fixed so that every encoder, CPU or GPU, builds the same table.
pub const MODEL_RUN: usize = 64;
/// See [`MODEL_RUN`].
pub const MODEL_STRIDE: usize = 512;

/// Counts to build `plane`'s frequency table from, and the factor that scales them to the
/// whole plane. Small planes are counted exactly. Large ones are counted on the fixed 1-in-8
/// sample (a table's shape needs far fewer symbols than a chunk holds; the full count was
/// about a fifth of a bf16 encode), and every value present but missed by the sample counts one: a
/// vectorized pass finds those, so each symbol present gets a frequency and nothing else
/// takes probability from the rest.
pub fn model_counts(plane: &[u8]) -> ([u32; 256], f64) {
    if plane.len() < MODEL_SAMPLE_MIN {
        return (histogram(plane), 1.0);
    }
    let (mut counts, sampled) = sampled_counts(plane, MODEL_STRIDE, MODEL_RUN);
    let missed: [bool; 256] = std::array::from_fn(|v| counts[v] == 0);
    for (c, found) in counts.iter_mut().zip(present_among(plane, &missed)) {
        *c += found as u32;
    }
    (counts, plane.len() as f64 / sampled as f64)
}

/// Counts of the bytes of `plane` at the indices `i` with `i % stride < run`, and how many
/// those are: a fixed sample that every encoder can reproduce.
pub fn sampled_counts(plane: &[u8], stride: usize, run: usize) -> ([u32; 256], usize) {
    let mut h = [[0u32; 256]; 4];
    let mut sampled = 0usize;
    for part in plane.chunks(stride) {
        let part = &part[..part.len().min(run)];
        count_into(&mut h, part);
        sampled += part.len();
    }
    (sum_sub(&h), sampled)
}

/// Which of the values marked in `cand` occur in `data`. Meant for rare candidates: the
/// AVX2 path tests 32 bytes at once and looks closer only at blocks holding one.
fn present_among(data: &[u8], cand: &[bool; 256]) -> [bool; 256] {
    let mut seen = [false; 256];
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 is present.
        unsafe { simd::present_among(data, cand, &mut seen) };
        return seen;
    }
    mark_present(data, cand, &mut seen);
    seen
}

/// Scalar [`present_among`], adding to `seen`.
fn mark_present(data: &[u8], cand: &[bool; 256], seen: &mut [bool; 256]) {
    for &b in data {
        if cand[b as usize] {
            seen[b as usize] = true;
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod simd {
    //! Set membership of 32 bytes at once: the candidate set as a 256-bit bitmap, byte
    //! `v >> 3` picked by two 16-entry shuffles, bit `v & 7` by a third.
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn present_among(data: &[u8], cand: &[bool; 256], seen: &mut [bool; 256]) {
        let mut bitmap = [0u8; 32];
        for v in 0..256 {
            bitmap[v >> 3] |= (cand[v] as u8) << (v & 7);
        }
        let low = _mm256_broadcastsi128_si256(_mm_loadu_si128(bitmap.as_ptr() as *const __m128i));
        let high =
            _mm256_broadcastsi128_si256(_mm_loadu_si128(bitmap.as_ptr().add(16) as *const __m128i));
        let bits = _mm256_setr_epi8(
            1, 2, 4, 8, 16, 32, 64, -128, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 4, 8, 16, 32, 64, -128, 0,
            0, 0, 0, 0, 0, 0, 0,
        );
        let mut blocks = data.chunks_exact(32);
        for block in &mut blocks {
            let v = _mm256_loadu_si256(block.as_ptr() as *const __m256i);
            let idx = _mm256_and_si256(_mm256_srli_epi16::<3>(v), _mm256_set1_epi8(0x1f));
            let byte = _mm256_blendv_epi8(
                _mm256_shuffle_epi8(low, idx),
                _mm256_shuffle_epi8(high, idx),
                _mm256_cmpgt_epi8(idx, _mm256_set1_epi8(15)),
            );
            let bit = _mm256_shuffle_epi8(bits, _mm256_and_si256(v, _mm256_set1_epi8(7)));
            let hit = _mm256_and_si256(byte, bit);
            if _mm256_testz_si256(hit, hit) == 0 {
                super::mark_present(block, cand, seen);
            }
        }
        super::mark_present(blocks.remainder(), cand, seen);
    }
}

/// Each count scaled to a total of `total` (of `n` counted), rounded to nearest, at least
/// 1 for a present symbol, 0 for an absent one: `(c * total + n / 2) / n` exactly. Only
/// the present symbols are visited (`present`: one bit per symbol), whose quotient is
/// taken in f64 when `n < 2^36`: numerator and divisor are exact (below 2^53) and the
/// division is correctly rounded, so a quotient below an integer (by at least `1/n`, far
/// more than an f64 step at values up to 2^14) stays below it and its floor is the
/// integer quotient.
#[inline]
fn scale_counts(counts: &[u32; 256], present: &[u64; 4], total: u32, n: u64) -> [u32; 256] {
    debug_assert!(n > 0 && total <= 1 << 14);
    let mut f = [0u32; 256];
    let half = (n / 2) as f64;
    let (t, d) = (total as f64, n as f64);
    for s in symbols(present) {
        let c = counts[s];
        let q = if n < 1 << 36 {
            ((c as f64 * t + half) / d) as u32
        } else {
            ((c as u64 * total as u64 + n / 2) / n) as u32
        };
        f[s] = q.max(1);
    }
    f
}

/// One bit per symbol with a nonzero count (or frequency).
pub(crate) fn presence<T: Copy + Default + PartialEq>(counts: &[T; 256]) -> [u64; 4] {
    let mut m = [0u64; 4];
    for (w, group) in m.iter_mut().zip(counts.chunks_exact(64)) {
        *w = group
            .iter()
            .enumerate()
            .fold(0, |acc, (i, &c)| acc | ((c != T::default()) as u64) << i);
    }
    m
}

/// The symbols of a [`presence`] mask, in increasing order.
pub(crate) fn symbols(mask: &[u64; 4]) -> impl Iterator<Item = usize> + '_ {
    mask.iter().enumerate().flat_map(|(w, &bits)| {
        let mut m = bits;
        std::iter::from_fn(move || {
            (m != 0).then(|| {
                let s = 64 * w + m.trailing_zeros() as usize;
                m &= m - 1;
                s
            })
        })
    })
}

/// `log2(f)` of every frequency up to [`MAX_FREQ`] + 1 (the most a table holds), as
/// `f64::log2` computes it: size estimates look them up instead of calling `log2` for
/// each symbol of each table.
fn log2_table() -> &'static [f64; MAX_FREQ as usize + 2] {
    static TABLE: std::sync::OnceLock<[f64; MAX_FREQ as usize + 2]> = std::sync::OnceLock::new();
    TABLE.get_or_init(|| std::array::from_fn(|f| (f as f64).log2()))
}

/// The first symbol of the largest frequency (a max, then a search: no branch per symbol
/// on unpredictable comparisons).
fn argmax(f: &[u32; 256]) -> usize {
    let most = f.iter().copied().max().unwrap_or(0);
    f.iter().position(|&x| x == most).unwrap_or(0)
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

    /// [`FreqTable::normalize`] to a total of `2^bits` (`bits` in [`WIDE_SCALES`]); `None`
    /// also when more symbols are present than the total can hold, or when a symbol would
    /// get more than [`MAX_FREQ`].
    pub fn normalize_scaled(counts: &[u32; 256], bits: u32) -> Option<FreqTable> {
        let total = 1u32 << bits;
        let n: u64 = counts.iter().map(|&c| c as u64).sum();
        let mask = presence(counts);
        let present = mask.iter().map(|m| m.count_ones() as usize).sum::<usize>();
        if present < 2 || present > total as usize || !WIDE_SCALES.contains(&bits) {
            return None;
        }
        let mut f = scale_counts(counts, &mask, total, n);
        let mut sum: u32 = f.iter().sum();
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
        if f.iter().any(|&x| x > MAX_FREQ) {
            return None;
        }
        Some(FreqTable {
            freq: f.map(|x| x as u16),
        })
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
        let log2 = log2_table();
        let mut bits = 0.0f64;
        for (&c, &f) in counts.iter().zip(&self.freq) {
            let l = log2
                .get(f as usize)
                .copied()
                .unwrap_or_else(|| (f as f64).log2());
            let cost = c as f64 * (scale - l);
            // Absent symbols add nothing (their cost may be NaN: 0 times infinity).
            bits += if c > 0 { cost } else { 0.0 };
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

    /// Reads and validates a table of total `2^bits` (`bits` in [`WIDE_SCALES`]).
    pub fn read_scaled(r: &mut Reader, bits: u32) -> Result<FreqTable> {
        if !WIDE_SCALES.contains(&bits) {
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
                if f == 0 || f >= total || f > MAX_FREQ as u64 {
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

    /// `scale_counts` by integer division, one count at a time.
    fn scale_counts_exact(counts: &[u32; 256], total: u32, n: u64) -> [u32; 256] {
        counts.map(|c| match c {
            0 => 0,
            c => (((c as u64 * total as u64 + n / 2) / n) as u32).max(1),
        })
    }

    /// Counts near the f64 path's limits: every count at the u32 maximum (the integer
    /// path), and sums just below and at 2^36.
    #[test]
    fn scaled_counts_at_the_limits() {
        let mut c = [u32::MAX; 256];
        let n = 256 * u32::MAX as u64;
        assert_eq!(
            scale_counts(&c, &presence(&c), 1 << 14, n),
            scale_counts_exact(&c, 1 << 14, n)
        );
        c.fill(0);
        for (i, x) in c.iter_mut().enumerate().take(16) {
            *x = u32::MAX - i as u32;
        }
        let n: u64 = c.iter().map(|&x| x as u64).sum();
        assert!(n < 1 << 36);
        for bits in WIDE_SCALES {
            assert_eq!(
                scale_counts(&c, &presence(&c), 1 << bits, n),
                scale_counts_exact(&c, 1 << bits, n)
            );
        }
    }

    /// Counts whose scaled value is exactly an integer (where a quotient rounded the
    /// wrong way would floor one below), small totals exhaustively, large ones (up to just
    /// under 2^36) at every such count below the total.
    #[test]
    fn scaled_counts_exact_at_integer_quotients() {
        let spread = |c: u64, n: u64| {
            let mut counts = [0u32; 256];
            counts[0] = c as u32;
            let mut rest = n - c;
            for x in counts[1..].iter_mut() {
                *x = rest.min(u32::MAX as u64) as u32;
                rest -= *x as u64;
            }
            counts
        };
        for bits in WIDE_SCALES {
            let t = 1u64 << bits;
            for n in 1..=300u64 {
                for c in 0..=n {
                    let counts = spread(c, n);
                    assert_eq!(
                        scale_counts(&counts, &presence(&counts), t as u32, n),
                        scale_counts_exact(&counts, t as u32, n)
                    );
                }
            }
            for n in [
                1u64 << 20,
                3 << 20 | 1,
                999_983 * 64,
                (1 << 32) - 5,
                (1 << 36) - 3,
            ] {
                for k in 1..t {
                    let num = k * n - n / 2;
                    if num % t != 0 {
                        continue;
                    }
                    let c = (num / t).min(u32::MAX as u64);
                    let counts = spread(c, n);
                    assert_eq!(
                        scale_counts(&counts, &presence(&counts), t as u32, n),
                        scale_counts_exact(&counts, t as u32, n),
                        "n {n} c {c} bits {bits}"
                    );
                }
            }
        }
    }

    proptest! {
        /// Size estimates from the log2 table are bit for bit those of `f64::log2` per
        /// present symbol, also for counts the table gives no frequency (infinite cost).
        #[test]
        fn coded_bytes_match_log2(counts in proptest::collection::vec(
                                      prop_oneof![Just(0u32), 0u32..1000, 0u32..10_000_000], 256),
                                  bits in WIDE_SCALES, extra in 0usize..256) {
            let mut c = [0u32; 256];
            c.copy_from_slice(&counts);
            if let Some(t) = FreqTable::normalize_scaled(&c, bits) {
                let scale = t.scale_bits() as f64;
                let mut plain = 0.0f64;
                for s in 0..256 {
                    if c[s] > 0 {
                        plain += c[s] as f64 * (scale - (t.freq[s] as f64).log2());
                    }
                }
                prop_assert_eq!(t.coded_bytes(&c).to_bits(), (plain / 8.0).to_bits());
                let mut more = c;
                more[extra] += 1;
                if c[extra] == 0 {
                    prop_assert!(t.coded_bytes(&more).is_infinite());
                }
            }
        }

        /// The branch-free scaling gives exactly the integer quotients, on sparse and
        /// dense counts of every size class.
        #[test]
        fn scaled_counts_are_exact(counts in proptest::collection::vec(
                                       prop_oneof![Just(0u32), 0u32..16, 0u32..100_000, any::<u32>()], 256),
                                   bits in WIDE_SCALES) {
            let mut c = [0u32; 256];
            c.copy_from_slice(&counts);
            let n: u64 = c.iter().map(|&x| x as u64).sum();
            prop_assume!(n > 0);
            prop_assert_eq!(scale_counts(&c, &presence(&c), 1 << bits, n), scale_counts_exact(&c, 1 << bits, n));
        }
    }

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

    proptest! {
        /// Sampled counts give a frequency to exactly the symbols present.
        #[test]
        fn model_counts_keep_exactly_the_present_symbols(
            base in proptest::collection::vec(0u8..8, 1..64),
            rare in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..40),
            len in MODEL_SAMPLE_MIN - 100..MODEL_SAMPLE_MIN + 5000,
        ) {
            let mut plane: Vec<u8> = (0..len).map(|i| base[i % base.len()]).collect();
            for (at, v) in rare {
                plane[at % len] = v;
            }
            let (counts, scale) = model_counts(&plane);
            let full = histogram(&plane);
            for v in 0..256 {
                prop_assert_eq!(counts[v] > 0, full[v] > 0, "value {}", v);
            }
            prop_assert!(scale >= 1.0);
        }

        /// The AVX2 membership pass agrees with the scalar one.
        #[test]
        fn present_among_matches_scalar(
            data in proptest::collection::vec(any::<u8>(), 0..3000),
            cand in proptest::collection::vec(any::<bool>(), 256),
        ) {
            let cand: [bool; 256] = std::array::from_fn(|v| cand[v]);
            let mut want = [false; 256];
            mark_present(&data, &cand, &mut want);
            prop_assert_eq!(present_among(&data, &cand), want);
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
