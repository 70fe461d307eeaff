//! Raw bit fields: values whose bits are close to uniform (the low bits below a leading 1)
//! are packed LSB-first, without entropy coding.

/// Packs values LSB-first into little-endian bytes, eight bytes at a time.
pub struct BitWriter {
    out: Vec<u8>,
    acc: u128,
    fill: u32,
}

impl BitWriter {
    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        BitWriter {
            out: Vec::with_capacity(n),
            acc: 0,
            fill: 0,
        }
    }
    /// Appends the low `n` (<= 64) bits of `v` (higher bits must be zero).
    #[inline]
    pub fn put(&mut self, v: u64, n: u32) {
        self.acc |= (v as u128) << self.fill;
        self.fill += n;
        if self.fill >= 64 {
            self.out.extend_from_slice(&(self.acc as u64).to_le_bytes());
            self.acc >>= 64;
            self.fill -= 64;
        }
    }
    /// The packed bytes (the last one zero-padded).
    pub fn finish(mut self) -> Vec<u8> {
        let tail = self.fill.div_ceil(8) as usize;
        self.out
            .extend_from_slice(&(self.acc as u64).to_le_bytes()[..tail]);
        self.out
    }
}

/// Reads what [`BitWriter`] wrote: one unaligned 8-byte load per value, from a copy padded
/// with zeros. The caller checks the total length first; past it the reader yields zeros
/// (never out of bounds), which the chunk hash would then catch.
pub struct BitReader {
    data: Vec<u8>,
    bit: usize,
}

impl BitReader {
    /// A reader over `data`.
    pub fn new(data: &[u8]) -> Self {
        let mut padded = Vec::with_capacity(data.len() + 16);
        padded.extend_from_slice(data);
        padded.resize(data.len() + 16, 0);
        BitReader {
            data: padded,
            bit: 0,
        }
    }

    /// The next `n` (<= 63) bits.
    #[inline(always)]
    pub fn get(&mut self, n: u32) -> u64 {
        if n > 56 {
            return self.get_wide(n);
        }
        let at = (self.bit >> 3).min(self.data.len() - 8);
        let word = u64::from_le_bytes(self.data[at..at + 8].try_into().unwrap());
        let shift = self.bit & 7;
        self.bit += n as usize;
        (word >> shift) & ((1u64 << n) - 1)
    }

    /// Values of more than 56 bits (only 64-bit words have them), in two reads.
    #[inline(never)]
    fn get_wide(&mut self, n: u32) -> u64 {
        let lo = self.get(32);
        lo | self.get(n - 32) << 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bits_roundtrip(vals in proptest::collection::vec((any::<u64>(), 0u32..64), 0..300)) {
            let mut w = BitWriter::with_capacity(16);
            let vals: Vec<(u64, u32)> = vals.into_iter()
                .map(|(v, n)| (if n == 0 { 0 } else { v & (u64::MAX >> (64 - n)) }, n))
                .collect();
            for &(v, n) in &vals {
                w.put(v, n);
            }
            let bytes = w.finish();
            let mut r = BitReader::new(&bytes);
            for &(v, n) in &vals {
                prop_assert_eq!(r.get(n), v);
            }
        }
    }
}
