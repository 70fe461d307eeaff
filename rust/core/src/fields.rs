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
        (2, f) => split_2(raw, f, planes),
        (4, f) => split_4(raw, f, planes),
        (8, f) => split_8(raw, f, planes),
        _ => unreachable!("word width {width}"),
    }
}

/// Inverse of [`split`]: interleaves `planes` back into little-endian words in `raw`.
pub fn merge(planes: &[&[u8]], width: usize, float: bool, raw: &mut [u8]) {
    debug_assert_eq!(planes.len(), width);
    match (width, float) {
        (1, _) => raw.copy_from_slice(planes[0]),
        (2, f) => merge_2(planes, f, raw),
        (4, f) => merge_4(planes, f, raw),
        (8, f) => merge_8(planes, f, raw),
        _ => unreachable!("word width {width}"),
    }
}

/// Generates split/merge for one word width. Plain indexed loops over pre-sliced planes
/// let the compiler drop bounds checks and vectorize (these run at memory speed).
macro_rules! width_impl {
    ($split:ident, $merge:ident, $t:ty, $w:literal) => {
        fn $split(raw: &[u8], float: bool, planes: &mut [&mut [u8]]) {
            let n = raw.len() / $w;
            let outs: [&mut [u8]; $w] = planes_array(planes, n);
            for (i, c) in raw.chunks_exact($w).enumerate() {
                let mut w = <$t>::from_le_bytes(c.try_into().unwrap());
                if float {
                    w = w.rotate_left(1);
                }
                let b = w.to_be_bytes();
                for k in 0..$w {
                    outs[k][i] = b[k];
                }
            }
        }

        fn $merge(planes: &[&[u8]], float: bool, raw: &mut [u8]) {
            let n = raw.len() / $w;
            let ins: [&[u8]; $w] = std::array::from_fn(|k| &planes[k][..n]);
            for (i, c) in raw.chunks_exact_mut($w).enumerate() {
                let mut b = [0u8; $w];
                for k in 0..$w {
                    b[k] = ins[k][i];
                }
                let mut w = <$t>::from_be_bytes(b);
                if float {
                    w = w.rotate_right(1);
                }
                c.copy_from_slice(&w.to_le_bytes());
            }
        }
    };
}

width_impl!(split_2, merge_2, u16, 2);
width_impl!(split_4, merge_4, u32, 4);
width_impl!(split_8, merge_8, u64, 8);

/// The first `W` planes, each cut to exactly `n` bytes.
fn planes_array<'a, const W: usize>(planes: &'a mut [&mut [u8]], n: usize) -> [&'a mut [u8]; W] {
    let mut it = planes.iter_mut().map(|p| &mut p[..n]);
    std::array::from_fn(|_| it.next().expect("one plane per word byte"))
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
