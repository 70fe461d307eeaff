//! Estimates on a sample of the chunk (runs of `RUN` words every `STRIDE` words) that
//! settle the choice between residual and standalone coding without coding both ways
//! when the choice is clear.

use super::{encode, side};
use crate::codec::MIN_SAVING;
use crate::dtype::DType;
use crate::entropy::freq::{histogram, FreqTable};
use crate::entropy::LANES;
use crate::fields;
use crate::scratch;

const RUN: usize = 64;
/// One word in 32 is sampled: on the real trajectories of `benches/` one in 16 costs 3-4%
/// more predicted encode time for ratios within 0.0002 of these.
const STRIDE: usize = 2048;

/// Chunks of fewer words are not sampled (both codings are cheap there); a sample has at
/// least 8 runs.
pub(super) const MIN_WORDS: usize = 1 << 14;

/// Relative gap between the sampled residual and standalone estimates above which the
/// chunk is coded standalone without a residual analysis. On real checkpoints (MiniLM
/// fine-tune, 1 MiB chunks, one word in 16 sampled) the sampled residual estimate was
/// within 1% of the exact one and the standalone estimate within 0.5% of the real size.
pub(super) const MARGIN_SAMPLED: f64 = 0.02;

/// Relative gap between the exact residual estimate and the sampled standalone estimate
/// above which the choice needs no standalone trial encode.
pub(super) const MARGIN_EXACT: f64 = 0.008;

/// Fixed bytes of a standalone rANS plane besides the payload and the table's
/// frequencies (as in `codec`): mode, presence bitmap and lane states.
const PLANE_OVERHEAD: f64 = (1 + 32 + 8 * LANES) as f64;

/// Runs of `RUN` words every `STRIDE` words of a chunk, its reference and its side
/// chunk: the sample that the estimates (and the chunk's offset) are taken on.
pub(super) struct Sample {
    pub xs: scratch::Scratch<u8>,
    pub rs: scratch::Scratch<u8>,
    ss: Option<scratch::Scratch<u8>>,
    /// The chunk's words over the sample's.
    scale: f64,
    /// The chunk's words.
    n: usize,
}

impl Sample {
    /// The sample of a chunk of `raw.len() / width` >= [`MIN_WORDS`] words.
    pub(super) fn take(raw: &[u8], reference: &[u8], side: Option<&[u8]>, width: usize) -> Self {
        let n = raw.len() / width;
        let runs = n / STRIDE;
        let gather = |src: &[u8]| {
            let mut out = scratch::bytes(0);
            for k in 0..runs {
                out.extend_from_slice(&src[k * STRIDE * width..(k * STRIDE + RUN) * width]);
            }
            out
        };
        Sample {
            xs: gather(raw),
            rs: gather(reference),
            ss: side.map(gather),
            scale: n as f64 / (runs * RUN).max(1) as f64,
            n,
        }
    }

    /// The side chunk's sample, if a side chunk was given.
    pub(super) fn side(&self) -> Option<&[u8]> {
        self.ss.as_ref().map(|s| &s[..])
    }
}

/// Estimated (residual, standalone) coded sizes in bytes of the whole chunk sampled in
/// `sample`, and with the side chunk's `(base, shift)` the residual's under side contexts.
pub(super) fn estimates(
    sample: &Sample,
    dtype: DType,
    params: (u8, u64, u32),
    side: Option<(i16, u8)>,
) -> (f64, f64, Option<f64>) {
    let width = dtype.word_size();
    let (xs, rs) = (&sample.xs[..], &sample.rs[..]);
    let kind = (width, dtype.is_float());
    let a = encode::analyze(xs, rs, kind, params, (false, false), None);
    let with_side = side.zip(sample.ss.as_ref()).map(|(at, ss)| {
        let sh = side::log_shift(dtype).expect("side contexts on a float dtype");
        let side = encode::Side { words: ss, sh, at };
        encode::analyze(xs, rs, kind, params, (false, false), Some(side))
            .estimate(sample.scale)
            .0
    });
    (
        a.estimate(sample.scale).0,
        standalone(xs, dtype, sample.scale, sample.n),
        with_side,
    )
}

/// The standalone codec's size for `n` words whose sample is `xs` (`scale` = `n` over
/// the sample's words): each byte plane coded or raw, as `codec` chooses.
fn standalone(xs: &[u8], dtype: DType, scale: f64, n: usize) -> f64 {
    let width = dtype.word_size();
    let m = xs.len() / width;
    let mut buf = scratch::bytes_dirty(xs.len());
    let mut planes: Vec<&mut [u8]> = buf.chunks_exact_mut(m.max(1)).take(width).collect();
    if m == 0 {
        return 0.0;
    }
    fields::split(xs, width, dtype.is_float(), &mut planes);
    planes
        .iter()
        .map(|p| {
            let counts = histogram(p);
            match FreqTable::normalize(&counts) {
                None => 2.0,
                Some(t) => {
                    let present = counts.iter().filter(|&&c| c > 0).count();
                    let coded =
                        t.coded_bytes(&counts) * scale + PLANE_OVERHEAD + 2.0 * present as f64;
                    if coded < n as f64 * (1.0 - MIN_SAVING) {
                        coded
                    } else {
                        n as f64 + 1.0
                    }
                }
            }
        })
        .sum()
}
