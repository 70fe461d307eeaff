//! Fuzz target `lossy_chunk`: the near-lossless chunk codec (`fastckpt_core::lossy`):
//! escapes, block-sparse bitmap, integer tokens and the quantizer behind them.
//!
//! Input layout: `[dtype selector] [block] [flags] [count: u16 LE] [reference] [coded chunk ...]`.
//! * The dtype is one of f16, bf16, f32, f64 (`selector % 4`); the chunk holds `count`
//!   elements; the block size is `block + 1`; flag bit 0 uses the reference (alpha 0.75),
//!   bit 1 clamps at zero, bits 2..7 pick the bound `2^-(bits)`.
//! * `lossy::decode_chunk` must not panic; when it succeeds it writes every byte (same
//!   result into a buffer pre-filled with another pattern).
//! * Round trip: `lossy::encode_chunk` of the coded bytes themselves (cut to whole
//!   elements) decodes to the bytes whose hash the encoder reported, and every element
//!   is within the bound or stored exactly.
//! * Allocation stays linear in the chunk size.

#![no_main]

mod common;

use common::{peak_heap, split_reference, Counting};
use fastckpt_core::quant::{Plan, Relative};
use fastckpt_core::{hash, lossy, relquant, DType};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Fixed heap besides the per-element buffers: tables, histograms, writer slack.
const HEAP_SLACK: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [sel, block, flags, c0, c1, rest @ ..] = data else {
        return;
    };
    let dtype = [DType::F16, DType::BF16, DType::F32, DType::F64][*sel as usize % 4];
    let size = dtype.size();
    let n = u16::from_le_bytes([*c0, *c1]) as usize * size;
    let bound = (-((flags >> 2) as f64)).exp2();
    let plan = Plan {
        step: 2.0 * bound,
        alpha: if flags & 1 != 0 { 0.75 } else { 0.0 },
        bound,
        prune_threshold: 0.0,
        nonneg: flags & 2 != 0,
        block: *block as u32 + 1,
        // Flag bit 1 (clamping) doubles as "relative": bound 2^-k as a relative bound.
        relative: (flags & 2 != 0 && bound < 1.0).then(|| Relative {
            step: relquant::step_for(bound, dtype),
            offset: (*c0 as i64) - 128,
            base: (*c1 as i64) << 8,
        }),
    };
    let (reference, chunk) = split_reference(rest, n);
    let rf = (plan.alpha != 0.0).then_some(&reference[..]);

    let mut a = vec![0x5au8; n];
    let (res, heap) = peak_heap(|| lossy::decode_chunk(chunk, rf, dtype, &plan, &mut a));
    assert!(
        heap <= 8 * n + HEAP_SLACK,
        "decoding {n} bytes allocated {heap}"
    );
    if res.is_ok() {
        let mut b = vec![0xa5u8; n];
        lossy::decode_chunk(chunk, rf, dtype, &plan, &mut b).expect("deterministic");
        assert!(
            a == b,
            "lossy::decode_chunk succeeded without writing every byte"
        );
    }

    let m = chunk.len().min(n) / size * size;
    let raw = &chunk[..m];
    let rf = rf.map(|r| &r[..m]);
    let (coded, heap) = peak_heap(|| lossy::encode_chunk(raw, rf, dtype, &plan));
    assert!(
        heap <= 8 * m + HEAP_SLACK,
        "encoding {m} bytes allocated {heap}"
    );
    let mut out = vec![0u8; m];
    lossy::decode_chunk(&coded.bytes, rf, dtype, &plan, &mut out).expect("must decode");
    assert_eq!(
        hash::h128(&out),
        coded.decoded_hash,
        "decoded bytes differ from the encoder's"
    );
    assert!(
        coded.max_error <= bound,
        "max error {} above bound {bound}",
        coded.max_error
    );
});
