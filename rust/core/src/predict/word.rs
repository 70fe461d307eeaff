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

/// The token of residual `z` with `tb` top bits (kind 3): `z` itself below
/// `2^(tb + 2)`; otherwise, with `n` its bit length, `(n - tb - 1) << (tb + 1)`, then the
/// `tb` bits below the leading 1, then the lowest bit (the difference's sign). Returns
/// (token, raw bits, their count): the `n - tb - 2` bits above the lowest one.
#[inline(always)]
pub(super) fn token(z: u64, tb: u32) -> (u8, u64, u32) {
    let n = 64 - z.leading_zeros();
    if n < tb + 2 {
        return (z as u8, 0, 0);
    }
    let k = n - tb - 2;
    let hi = (z >> (k + 1)) & ((1 << tb) - 1);
    let t = ((n - tb - 1) as u64) << (tb + 1) | hi << 1 | (z & 1);
    (t as u8, (z >> 1) & ((1u64 << k) - 1), k)
}

/// The raw-bit count of token `t` with `tb` top bits (see [`token`]).
#[inline(always)]
pub(super) fn token_bits(t: u8, tb: u32) -> u32 {
    ((t as u32) >> (tb + 1)).saturating_sub(1)
}

/// Inverse of [`token`]: the residual of token `t` and its `token_bits(t, tb)` raw bits.
#[inline(always)]
pub(super) fn untoken(t: u8, tb: u32, raw: u64) -> u64 {
    let t = t as u64;
    let q = t >> (tb + 1);
    let k = q.saturating_sub(1);
    let m = (t >> 1 & ((1 << tb) - 1)) | q.min(1) << tb;
    m << (k + 1) | raw << 1 | (t & 1)
}

/// The largest token of a `bits`-bit word with `tb` top bits.
pub(super) fn max_token(bits: u32, tb: u32) -> u32 {
    ((bits - tb - 1) << (tb + 1)) | ((1 << (tb + 1)) - 1)
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

        /// Tokens invert with their raw bits, stay below the width's bound and equal small
        /// residuals.
        #[test]
        fn token_inverts(z in any::<u64>(), shift in 0u32..64, wi in 0usize..4, tb in 0u32..3) {
            let bits = [8u32, 16, 32, 64][wi];
            prop_assume!(bits < 64 || tb < 2);
            let z = (z >> shift) & mask(bits);
            let (t, raw, k) = token(z, tb);
            prop_assert_eq!(token_bits(t, tb), k);
            prop_assert!(raw < 1u64 << k);
            prop_assert!(t as u32 <= max_token(bits, tb));
            prop_assert_eq!(untoken(t, tb, raw), z);
            if z < 1 << (tb + 2) {
                prop_assert_eq!(t as u64, z);
            }
        }
    }
}
