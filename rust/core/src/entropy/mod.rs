//! Entropy coding: byte histograms, normalized frequency tables and a 32-lane rANS coder.
//!
//! The pieces compose: [`freq::histogram`] counts a plane, [`freq::FreqTable::normalize`]
//! turns counts into a table summing to `1 << SCALE_BITS`, [`rans::encode`] codes the
//! plane under that table and [`rans::decode`] inverts it.

pub mod bits;
pub mod context;
pub mod freq;
pub mod ints;
pub mod pairs;
pub mod rans;

/// Probability precision: tables sum to `1 << SCALE_BITS`. 12 bits keeps the decode table
/// (4096 x 4 bytes) in L1 while losing well under 0.01 bit per symbol on real planes.
pub const SCALE_BITS: u32 = 12;

/// Interleaved coder lanes per stream: symbol `i` belongs to lane `i % LANES`. Independent
/// lanes give the CPU instruction-level parallelism and a GPU one lane per thread.
pub const LANES: usize = 32;

/// Whether the CPU has AVX2, BMI1/2 and POPCNT (kernels built for all four: the word
/// counts and variable shifts of the rANS loops then take one instruction each).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx2_bmi2_popcnt() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx2") && has!("bmi1") && has!("bmi2") && has!("popcnt")
}

/// Whether the CPU has AVX-512F (the kernels that use it need nothing more).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
}

/// Whether the CPU has the AVX-512 parts of the rANS encoder: F, VL, BW and VBMI2 (word
/// compress-stores).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_vbmi2() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512f") && has!("avx512vl") && has!("avx512bw") && has!("avx512vbmi2")
}

/// Whether the CPU has AVX-512 F and BW (512-bit byte and word shuffles).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_bw() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512f") && has!("avx512bw")
}

/// Whether the CPU has AVX-512 F, BW, CD and VL (the predicted coder's analysis pass).
#[cfg(target_arch = "x86_64")]
pub(crate) fn avx512_cd() -> bool {
    use std::arch::is_x86_feature_detected as has;
    has!("avx512f") && has!("avx512bw") && has!("avx512cd") && has!("avx512vl")
}
