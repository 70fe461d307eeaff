//! Fuzz target `predict_chunk`: the predicted-chunk codec (`fastckpt_core::predict`) with
//! the context-modelled rANS coder behind it.
//!
//! Input layout: `[dtype selector] [element count: u16 LE] [reference] [coded chunk ...]`.
//! * `DType::all()[selector % 17]` is the dtype; the chunk holds `count` elements (at most
//!   65535 x 16 bytes) and the reference is the next `count x size` input bytes (padded
//!   with zeros when the input is shorter; the coded chunk is what follows it).
//! * The side tensor (contexts of kind-4 chunks) is the reference rotated by one element.
//! * `predict::decode_chunk_side(chunk, reference, side, dtype, buf)` must not panic. When it
//!   succeeds it must have written every byte (same result into a buffer pre-filled with
//!   another pattern), and those bytes must round-trip against the same reference.
//! * `predict::decode_chunk_side_hashed` succeeds or fails alike, writes the same bytes, and
//!   any hash it returns is `h128` of them.
//! * Round trip: `predict::encode_chunk_side` of the coded bytes themselves (cut to whole
//!   elements, at most the reference's length) against the reference's prefix decodes
//!   back to exactly those bytes.
//! * `predict::decode_two_side_hashed` of the chunk paired with that round trip's (valid)
//!   chunk gives each what it gives alone: the chunk's result, bytes and hash, and the
//!   valid chunk's bytes.
//! * Allocation stays linear in the chunk size.

#![no_main]

mod common;

use common::{peak_heap, split_reference, Counting};
use fastckpt_core::hash::h128;
use fastckpt_core::predict::{
    decode_chunk_side, decode_chunk_side_hashed, decode_two_side_hashed, encode_chunk_side,
};
use fastckpt_core::DType;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Fixed heap besides the per-word buffers: 16 context tables of 4096 u32 slots, 16
/// histograms and encoder tables, writer slack.
const HEAP_SLACK: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let [sel, c0, c1, rest @ ..] = data else {
        return;
    };
    let dtype = DType::all()[*sel as usize % DType::all().len()];
    let size = dtype.size();
    let n = u16::from_le_bytes([*c0, *c1]) as usize * size;
    let (reference, chunk) = split_reference(rest, n);
    let mut side = reference.clone();
    side.rotate_left(size.min(n));

    let mut a = vec![0x5au8; n];
    let decode = |out: &mut [u8]| decode_chunk_side(chunk, &reference, Some(&side), dtype, out);
    let (res, heap) = peak_heap(|| decode(&mut a));
    assert!(
        heap <= 8 * n + HEAP_SLACK,
        "decoding {n} bytes allocated {heap}"
    );
    let mut c = vec![0x3cu8; n];
    let hashed = decode_chunk_side_hashed(chunk, &reference, Some(&side), dtype, &mut c);
    assert_eq!(
        hashed.is_ok(),
        res.is_ok(),
        "hashed and plain decoders disagree"
    );
    if let Ok(h) = hashed {
        assert!(a == c, "the hashed decoder wrote other bytes");
        assert!(
            h.is_none_or(|h| h == h128(&c)),
            "wrong hash of the decoded bytes"
        );
    }
    if res.is_ok() {
        let mut b = vec![0xa5u8; n];
        decode(&mut b).expect("decoding is deterministic");
        assert!(
            a == b,
            "predict::decode_chunk succeeded without writing every byte"
        );
        roundtrip(&a, &reference, &side, dtype);
    }

    let m = chunk.len().min(n) / size * size;
    let valid = roundtrip(&chunk[..m], &reference[..m], &side[..m], dtype);

    let (mut pa, mut pb) = (vec![0x77u8; n], vec![0x11u8; m]);
    let [ra, rb] = decode_two_side_hashed(
        (chunk, &reference, Some(&side), dtype, &mut pa),
        (&valid, &reference[..m], Some(&side[..m]), dtype, &mut pb),
    );
    assert_eq!(
        ra.is_ok(),
        res.is_ok(),
        "a paired chunk decodes unlike alone"
    );
    if let (Ok(h), Ok(alone)) = (&ra, &hashed) {
        assert!(
            pa == a && h == alone,
            "a paired chunk gives other bytes or hash"
        );
    }
    rb.expect("a valid chunk paired with another must decode");
    assert!(
        pb == chunk[..m],
        "a valid paired chunk decoded into other bytes"
    );
});

/// Encodes `raw` against `reference` and `side`, checks the round trip and the heap it
/// took, and returns the chunk.
fn roundtrip(raw: &[u8], reference: &[u8], side: &[u8], dtype: DType) -> Vec<u8> {
    let (comp, heap) = peak_heap(|| encode_chunk_side(raw, reference, Some(side), dtype));
    // Per word: a u64 residual, its length and context, and the reference's top byte.
    let words = raw.len() / dtype.word_size();
    assert!(
        heap <= 3 * raw.len() + 12 * words + HEAP_SLACK,
        "encoding {} bytes allocated {heap}",
        raw.len()
    );
    let mut out = vec![0u8; raw.len()];
    decode_chunk_side(&comp, reference, Some(side), dtype, &mut out)
        .expect("an encoded chunk must decode");
    assert!(
        out == raw,
        "{dtype:?} predicted chunk of {} bytes did not round-trip",
        raw.len()
    );
    comp
}
