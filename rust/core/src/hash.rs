//! Checksums: xxh3 (fast, well-kept `xxhash-rust`) for chunks, headers and tensor identity.

/// 64-bit xxh3 of `data`: chunk and header checksums.
pub fn h64(data: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(data)
}

/// 128-bit xxh3 of `data`: a tensor's content identity (for dedup and references).
pub fn h128(data: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(data)
}
