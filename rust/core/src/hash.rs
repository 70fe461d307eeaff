//! Checksums: xxh3 (fast, well-kept `xxhash-rust`) for chunks, headers and tensor identity.

/// 64-bit xxh3 of `data`: chunk and header checksums.
pub fn h64(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// 128-bit xxh3 of `data`: a tensor's content identity (for dedup and references).
pub fn h128(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}

/// Streaming form of [`h128`]: the same hash of the bytes fed through [`Hasher128::update`],
/// so a decoder can hash each block while it is still in cache.
pub struct Hasher128(xxhash_rust::xxh3::Xxh3);

impl Default for Hasher128 {
    fn default() -> Self {
        Hasher128(xxhash_rust::xxh3::Xxh3::new())
    }
}

impl Hasher128 {
    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data)
    }
    /// The hash of everything fed so far.
    pub fn digest(&self) -> u128 {
        self.0.digest128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streaming_matches_one_shot() {
        let data: Vec<u8> = (0..100_000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for cut in [0, 1, 240, 4096, 16_384, 99_999] {
            let mut h = Hasher128::default();
            for part in data[..cut].chunks(cut.clamp(1, 5000)) {
                h.update(part);
            }
            assert_eq!(h.digest(), h128(&data[..cut]));
        }
        let mut h = Hasher128::default();
        data.chunks(16_384).for_each(|c| h.update(c));
        assert_eq!(h.digest(), h128(&data));
    }
}
