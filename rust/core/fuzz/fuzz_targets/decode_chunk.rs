//! Fuzz target `decode_chunk`: the chunk codec on its own.
//!
//! Input layout: `[dtype selector] [element count: u16 LE] [coded chunk ...]`.
//! * `DType::all()[selector % 17]` is the dtype; the output buffer holds `count` elements
//!   (at most 65535 x 16 bytes, just under 1 MiB).
//! * `codec::decode_chunk(chunk, dtype, buf)` must not panic. When it succeeds it must have
//!   written every byte: decoding into a buffer pre-filled with another pattern gives the
//!   same bytes; those bytes must also re-encode and decode back to themselves.
//! * Round trip: `encode_chunk` of the chunk bytes themselves (cut to whole elements)
//!   must decode back to exactly those bytes.
//! * Neither direction may allocate much more than the chunk's raw size (decoding: plus a
//!   decode table per byte plane).

#![no_main]

mod common;

use common::{peak_heap, Counting};
use fastckpt_core::codec::{decode_chunk, encode_chunk};
use fastckpt_core::DType;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap the codec may use beyond `factor x` the raw chunk size (small tables, plane lists).
const HEAP_SLACK: usize = 64 << 10;

/// Heap per byte plane of the dtype for its decode table: a wide table (format 1.4, mode 4,
/// up to 2^14 u32 entries) needs 64 KiB whatever the chunk's size, and a chunk has at most
/// one table per byte of its element.
const TABLE_PER_PLANE: usize = 64 << 10;

fuzz_target!(|data: &[u8]| {
    let [sel, c0, c1, chunk @ ..] = data else {
        return;
    };
    let dtype = DType::all()[*sel as usize % DType::all().len()];
    let size = dtype.size();
    let n = u16::from_le_bytes([*c0, *c1]) as usize * size;

    // Arbitrary coded bytes into an n-byte buffer.
    let mut a = vec![0x5au8; n];
    let (res, heap) = peak_heap(|| decode_chunk(chunk, dtype, &mut a));
    // Scratch: one plane buffer of n bytes (kept per thread), a decode table per plane,
    // small tables.
    assert!(
        heap <= n + size * TABLE_PER_PLANE + HEAP_SLACK,
        "decoding {n} bytes allocated {heap}"
    );
    if res.is_ok() {
        let mut b = vec![0xa5u8; n];
        decode_chunk(chunk, dtype, &mut b).expect("decoding is deterministic");
        assert!(a == b, "decode_chunk succeeded without writing every byte");
        roundtrip(&a, dtype);
    }

    // The chunk bytes as raw elements.
    roundtrip(&chunk[..chunk.len() / size * size], dtype);
});

fn roundtrip(raw: &[u8], dtype: DType) {
    let (comp, heap) = peak_heap(|| encode_chunk(raw, dtype));
    assert!(
        heap <= 3 * raw.len() + HEAP_SLACK,
        "encoding {} bytes allocated {heap}",
        raw.len()
    );
    let mut out = vec![0u8; raw.len()];
    decode_chunk(&comp, dtype, &mut out).expect("an encoded chunk must decode");
    assert!(
        out == raw,
        "{dtype:?} chunk of {} bytes did not round-trip",
        raw.len()
    );
}
