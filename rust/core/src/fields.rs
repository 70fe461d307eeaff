//! Float-aware field splitting: words are cut into byte planes, most significant first.
//!
//! For floats the sign bit is first rotated from the top to the bottom of the word, so
//! plane 0 holds exactly the exponent byte (fp32, bf16) or its top bits (fp16, fp64).
//! Exponents carry most of the redundancy; low mantissa planes are nearly uniform. Each
//! plane is then modelled and coded on its own.

/// Most planes a word can have (fp64/int64 words).
pub const MAX_PLANES: usize = 8;

/// Splits `raw` (whole words of `width` bytes, little-endian) into `width` planes.
///
/// `planes[p][i]` is byte `width-1-p` of word `i` after the float rotation (if `float`).
/// Each plane must be `raw.len() / width` bytes long.
pub fn split(raw: &[u8], width: usize, float: bool, planes: &mut [&mut [u8]]) {
    debug_assert_eq!(planes.len(), width);
    match (width, float) {
        (1, _) => planes[0].copy_from_slice(raw),
        (2, f) => split_n::<2>(raw, f, planes),
        (4, f) => split_n::<4>(raw, f, planes),
        (8, f) => split_n::<8>(raw, f, planes),
        _ => unreachable!("word width {width}"),
    }
}

/// Inverse of [`split`]: interleaves `planes` back into little-endian words in `raw`.
pub fn merge(planes: &[&[u8]], width: usize, float: bool, raw: &mut [u8]) {
    debug_assert_eq!(planes.len(), width);
    match (width, float) {
        (1, _) => raw.copy_from_slice(planes[0]),
        (2, f) => merge_n::<2>(planes, f, raw),
        (4, f) => merge_n::<4>(planes, f, raw),
        (8, f) => merge_n::<8>(planes, f, raw),
        _ => unreachable!("word width {width}"),
    }
}

#[inline(always)]
fn rotl1<const W: usize>(w: u64) -> u64 {
    let bits = 8 * W as u32;
    let mask = if W == 8 { u64::MAX } else { (1u64 << bits) - 1 };
    ((w << 1) | (w >> (bits - 1))) & mask
}

#[inline(always)]
fn rotr1<const W: usize>(w: u64) -> u64 {
    let bits = 8 * W as u32;
    let mask = if W == 8 { u64::MAX } else { (1u64 << bits) - 1 };
    ((w >> 1) | (w << (bits - 1))) & mask
}

fn split_n<const W: usize>(raw: &[u8], float: bool, planes: &mut [&mut [u8]]) {
    if float {
        split_words::<W, true>(raw, planes)
    } else {
        split_words::<W, false>(raw, planes)
    }
}

fn merge_n<const W: usize>(planes: &[&[u8]], float: bool, raw: &mut [u8]) {
    if float {
        merge_words::<W, true>(planes, raw)
    } else {
        merge_words::<W, false>(planes, raw)
    }
}

/// Splits in blocks so the inner loops stay simple enough for the compiler to vectorize.
fn split_words<const W: usize, const F: bool>(raw: &[u8], planes: &mut [&mut [u8]]) {
    let n = raw.len() / W;
    let (p, _) = planes.split_at_mut(W);
    for i in 0..n {
        let mut b = [0u8; 8];
        b[..W].copy_from_slice(&raw[i * W..i * W + W]);
        let mut w = u64::from_le_bytes(b);
        if F {
            w = rotl1::<W>(w);
        }
        for (k, plane) in p.iter_mut().enumerate() {
            plane[i] = (w >> (8 * (W - 1 - k))) as u8;
        }
    }
}

fn merge_words<const W: usize, const F: bool>(planes: &[&[u8]], raw: &mut [u8]) {
    let n = raw.len() / W;
    for i in 0..n {
        let mut w = 0u64;
        for (k, plane) in planes.iter().enumerate().take(W) {
            w |= (plane[i] as u64) << (8 * (W - 1 - k));
        }
        if F {
            w = rotr1::<W>(w);
        }
        raw[i * W..i * W + W].copy_from_slice(&w.to_le_bytes()[..W]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn roundtrip(raw: &[u8], width: usize, float: bool) -> Vec<u8> {
        let n = raw.len() / width;
        let mut bufs = vec![vec![0u8; n]; width];
        {
            let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
            split(raw, width, float, &mut planes);
        }
        let planes: Vec<&[u8]> = bufs.iter().map(|b| b.as_slice()).collect();
        let mut out = vec![0u8; raw.len()];
        merge(&planes, width, float, &mut out);
        out
    }

    #[test]
    fn fp32_exponent_is_plane_zero() {
        let x = 1.5f32; // exponent 127, sign 0
        let mut bufs = vec![vec![0u8; 1]; 4];
        let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        split(&x.to_le_bytes(), 4, true, &mut planes);
        assert_eq!(bufs[0][0], 127);
        let y = -1.5f32;
        let mut planes: Vec<&mut [u8]> = bufs.iter_mut().map(|b| b.as_mut_slice()).collect();
        split(&y.to_le_bytes(), 4, true, &mut planes);
        assert_eq!(bufs[0][0], 127);
        assert_eq!(bufs[3][0] & 1, 1, "sign lands in the lowest bit");
    }

    proptest! {
        #[test]
        fn split_merge_roundtrip(raw in proptest::collection::vec(any::<u8>(), 0..512),
                                 wi in 0usize..4, float in any::<bool>()) {
            let width = [1, 2, 4, 8][wi];
            let raw = &raw[..raw.len() / width * width];
            prop_assert_eq!(roundtrip(raw, width, float), raw.to_vec());
        }
    }
}
