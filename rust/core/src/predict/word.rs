//! Word arithmetic of the residual: order-preserving integer images, zigzagged
//! differences against the reference and the chunk's offset.

/// `bits` ones (all 64 for `bits == 64`).
#[inline(always)]
pub(super) fn mask(bits: u32) -> u64 {
    if bits == 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// Order-preserving unsigned image of a float word (identity for integers): negative
/// floats have every bit flipped, positive ones only the sign bit. Branch-free.
#[inline(always)]
pub(super) fn ord(w: u64, bits: u32, float: bool) -> u64 {
    if !float {
        return w;
    }
    let m = mask(bits);
    let sign = (w >> (bits - 1)) & 1;
    w ^ ((0u64.wrapping_sub(sign) & m) | (1u64 << (bits - 1)))
}

/// Inverse of [`ord`].
#[inline(always)]
pub(super) fn unord(o: u64, bits: u32, float: bool) -> u64 {
    if !float {
        return o;
    }
    let m = mask(bits);
    let positive = (o >> (bits - 1)) & 1;
    o ^ ((0u64.wrapping_sub(positive ^ 1) & m) | (positive << (bits - 1)))
}

/// Zigzagged residual of `x` against `r` shifted by the chunk's offset `off`.
#[inline(always)]
pub(super) fn residual(x: u64, r: u64, off: u64, bits: u32, float: bool) -> u64 {
    let m = mask(bits);
    let d = ord(x, bits, float)
        .wrapping_sub(ord(r, bits, float))
        .wrapping_sub(off)
        & m;
    let neg = (d >> (bits - 1)) & 1;
    ((d << 1) & m) ^ (0u64.wrapping_sub(neg) & m)
}

/// Inverse of [`residual`]: the word whose residual against `r` is `z`.
#[inline(always)]
pub(super) fn unresidual(z: u64, r: u64, off: u64, bits: u32, float: bool) -> u64 {
    let m = mask(bits);
    let d = (z >> 1) ^ (0u64.wrapping_sub(z & 1) & m);
    unord(
        ord(r, bits, float).wrapping_add(off).wrapping_add(d) & m,
        bits,
        float,
    )
}

/// A little-endian word of `W` bytes (a fixed-size copy the compiler turns into one load).
#[inline(always)]
pub(super) fn load<const W: usize>(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..W].copy_from_slice(&b[..W]);
    u64::from_le_bytes(a)
}

/// Calls `$f::<W>(args)` for the word size `$w` of the data.
macro_rules! by_width {
    ($w:expr, $f:ident ( $($a:expr),* )) => {
        match $w {
            1 => $f::<1>($($a),*),
            2 => $f::<2>($($a),*),
            4 => $f::<4>($($a),*),
            _ => $f::<8>($($a),*),
        }
    };
}
pub(super) use by_width;

/// The chunk's typical shift between words and their references in the order-preserving
/// domain: the median over a sample. A multiplicative drift (Adam's second moment decays
/// by beta2^k between checkpoints) is close to a constant shift there, since the image of
/// a float grows like its log; removing it leaves only the fresh part of the change.
pub(super) fn offset<const W: usize>(raw: &[u8], rf: &[u8], bits: u32, float: bool) -> u64 {
    let n = raw.len() / W;
    let step = (n / 4096).max(1);
    let shift = 64 - bits;
    let d: Vec<i64> = (0..n)
        .step_by(step)
        .map(|i| {
            let (x, r) = (load::<W>(&raw[i * W..]), load::<W>(&rf[i * W..]));
            let v = ord(x, bits, float).wrapping_sub(ord(r, bits, float));
            ((v << shift) as i64) >> shift
        })
        .collect();
    if d.is_empty() {
        return 0;
    }
    // Keep the shift only if it shortens the sample's residuals (it does not for weights,
    // whose steps have either sign).
    let cost = |o: i64| -> u64 {
        d.iter()
            .map(|&v| 64 - (v.wrapping_sub(o).unsigned_abs() << 1).leading_zeros() as u64)
            .sum()
    };
    let mut sorted = d.clone();
    let mid = sorted.len() / 2;
    let m = *sorted.select_nth_unstable(mid).1;
    if cost(m) < cost(0) {
        (m as u64) & mask(bits)
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn residual_inverts(x in any::<u64>(), r in any::<u64>(), wi in 0usize..4, float in any::<bool>()) {
            let bits = [8u32, 16, 32, 64][wi];
            let (x, r) = (x & mask(bits), r & mask(bits));
            let off = x.wrapping_mul(r) & mask(bits);
            prop_assert_eq!(unresidual(residual(x, r, off, bits, float), r, off, bits, float), x);
        }
    }
}
