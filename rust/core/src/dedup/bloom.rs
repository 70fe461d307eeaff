//! A Bloom filter over 64-bit keys: the fast negative of each LSH band (as in LSHBloom).
//! Most queried band keys are absent; the filter answers those without touching the band's
//! sorted map.

/// Largest filter, in bits (512 MiB).
pub const MAX_BITS: u64 = 1 << 32;

/// A Bloom filter with `k` probes by double hashing of the (already hashed) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bloom {
    words: Vec<u64>,
    k: u32,
}

fn mix(x: u64) -> u64 {
    let z = (x ^ (x >> 33)).wrapping_mul(0xff51_afd7_ed55_8ccd);
    (z ^ (z >> 33)).wrapping_mul(0xc4ce_b9fe_1a85_ec53) | 1
}

impl Bloom {
    /// A filter sized for `capacity` keys at false-positive rate `fp` (clamped to
    /// [1e-6, 0.5]): `m = -n ln(fp) / ln(2)^2` bits and `k = m/n ln 2` probes.
    pub fn with_capacity(capacity: usize, fp: f64) -> Bloom {
        let fp = fp.clamp(1e-6, 0.5);
        let n = capacity.max(1) as f64;
        let bits = (-n * fp.ln() / (2f64.ln().powi(2))).ceil().max(64.0) as u64;
        let bits = bits.min(MAX_BITS);
        let k = ((bits as f64 / n) * 2f64.ln()).round().clamp(1.0, 16.0) as u32;
        Bloom {
            words: vec![0; bits.div_ceil(64) as usize],
            k,
        }
    }

    fn probes(&self, key: u64) -> impl Iterator<Item = (usize, u64)> {
        let m = self.words.len() as u64 * 64;
        let (h1, h2) = (key, mix(key));
        (0..self.k as u64).map(move |i| {
            let bit = h1.wrapping_add(i.wrapping_mul(h2)) % m;
            ((bit / 64) as usize, 1u64 << (bit % 64))
        })
    }

    /// Adds `key`.
    pub fn insert(&mut self, key: u64) {
        let probes: Vec<_> = self.probes(key).collect();
        for (w, b) in probes {
            self.words[w] |= b;
        }
    }

    /// False means `key` was never inserted; true means it probably was.
    pub fn contains(&self, key: u64) -> bool {
        self.probes(key).all(|(w, b)| self.words[w] & b != 0)
    }

    /// Size of the bit array in bytes.
    pub fn bytes(&self) -> usize {
        self.words.len() * 8
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn false_positive_rate_is_near_target() {
        let mut b = Bloom::with_capacity(10_000, 0.01);
        (0..10_000u64).for_each(|i| b.insert(i.wrapping_mul(0x9e37_79b9_7f4a_7c15)));
        let fp = (1..=100_000u64)
            .filter(|i| b.contains(i.wrapping_mul(0xdead_beef_1234_5677)))
            .count();
        assert!(fp < 2_000, "{fp} false positives in 100000");
    }

    proptest! {
        #[test]
        fn no_false_negatives(keys in proptest::collection::vec(any::<u64>(), 0..500), cap in 1usize..1000) {
            let mut b = Bloom::with_capacity(cap, 0.01);
            keys.iter().for_each(|&k| b.insert(k));
            prop_assert!(keys.iter().all(|&k| b.contains(k)));
        }
    }
}
