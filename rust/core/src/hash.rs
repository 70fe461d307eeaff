//! Checksums: xxh3 for chunks, headers and tensor identity, from the well-kept `twox-hash`
//! crate, which picks its AVX2 kernel at run time (about 45 GB/s on a block in cache on the
//! machine measured, against 25 GB/s for the SSE2 build of `xxhash-rust` used before; the
//! values are the same XXH3 hashes).

use twox_hash::{XxHash3_128, XxHash3_64};

/// 64-bit xxh3 of `data`: chunk and header checksums.
pub fn h64(data: &[u8]) -> u64 {
    XxHash3_64::oneshot(data)
}

/// 128-bit xxh3 of `data`: a tensor's content identity (for dedup and references).
pub fn h128(data: &[u8]) -> u128 {
    XxHash3_128::oneshot(data)
}

/// Streaming form of [`h128`]: the same hash of the bytes fed through [`Hasher128::update`],
/// so a decoder can hash each block while it is still in cache.
pub struct Hasher128(XxHash3_128);

impl Default for Hasher128 {
    fn default() -> Self {
        Hasher128(XxHash3_128::new())
    }
}

impl Hasher128 {
    /// Feeds the next bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.write(data)
    }
    /// The hash of everything fed so far.
    pub fn digest(&self) -> u128 {
        self.0.finish_128()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// XXH3 (64, 128 bits) of the first `n` bytes of the test data, as `xxhash-rust`
    /// computed them.
    const KNOWN: [(usize, u64, u128); 10] = [
        (1, 0xc44bdff4074eecdb, 0xa6cd5e9392000f6ac44bdff4074eecdb),
        (3, 0xa1c4a8259b827291, 0x95c705060a313bf8a1c4a8259b827291),
        (16, 0x222e9aead6bddd51, 0x29be75b0bbbb5284aafffcec5df2cb27),
        (17, 0x47aad6b375eb4bba, 0xdb7e8f77961e47fd878751509ecfdb8b),
        (128, 0x421a9c905c6e66ba, 0xba44fd018231af4cbbe087d879edcc78),
        (129, 0x9e2414800f83768a, 0x522c922743fd67f1b8075934107218e5),
        (240, 0xb714c5fd22744964, 0x4f49ccc8526aa7ad407883ea5ef95b9a),
        (241, 0xbc424a2c480dd281, 0x50b62ee1ee6455a7bc424a2c480dd281),
        (1024, 0x1fd15e7d36f5e1bc, 0x53bd178b75ab292e1fd15e7d36f5e1bc),
        (5000, 0x853377ef13cec7bd, 0x971956c2a9ecb28a853377ef13cec7bd),
    ];

    /// The same XXH3 values as the crate used before (`xxhash-rust`), at every input size
    /// class of the algorithm: files written before the switch keep verifying.
    #[test]
    fn values_are_xxh3() {
        assert_eq!(h64(b""), 0x2d06_8005_38d3_94c2);
        assert_eq!(h128(b""), 0x99aa_06d3_0147_98d8_6001_c324_468d_497f);
        let data: Vec<u8> = (0..5000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for (n, x64, x128) in KNOWN {
            assert_eq!(h64(&data[..n]), x64, "64-bit, {n} bytes");
            assert_eq!(h128(&data[..n]), x128, "128-bit, {n} bytes");
        }
    }

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
