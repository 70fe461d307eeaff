//! Test-only helpers shared by the modules' unit tests.

/// A 64-bit linear congruential generator (Knuth's MMIX constants): cheap, deterministic
/// test data, the same for a given seed on every platform.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next state (callers take the bits they need, usually the high ones).
    pub fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }

    /// Uniform in [-0.5, 0.5), from the top 24 bits of the next state.
    pub fn centered(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    }
}
