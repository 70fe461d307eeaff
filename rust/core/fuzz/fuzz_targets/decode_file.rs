//! Fuzz target `decode_file`: the input is a whole fastckpt file.
//!
//! Checks, for every input:
//! * `Checkpoint::parse` and decoding never panic (errors are fine). Plain tensors decode
//!   with `decode_tensor(i, Some(1))`; predicted tensors with `decode_with`, offered the
//!   deterministic reference `common::reference_for(name, ..)` that the seed generator
//!   encoded them against (for mutants it is usually the wrong one: a clean error);
//! * parsing never allocates more than `PARSE_HEAP_PER_BYTE` bytes per input byte, and
//!   decoding a tensor never allocates much more than the raw size its header declares;
//! * whatever decodes is right: decoding every tensor at once on two threads gives the
//!   same bytes as one by one on one thread (also over a header parsed beforehand,
//!   `Checkpoint::with_header`, as the Python reader decodes), and decoded tensors
//!   re-encode into a file
//!   that parses and decodes to exactly the same tensors and structure.
//!
//! A 64-bit checksum guards the header, which random mutation almost never gets right, so
//! when parsing fails on it the target also runs on a copy with the checksum recomputed:
//! mutations of the header body then reach the validation behind the checksum (a hostile
//! writer can compute xxh3 as easily).

#![no_main]

mod common;

use common::{moments_for, peak_heap, reference_for, Counting};
use fastckpt_core::container::bytes::Writer;
use fastckpt_core::container::format::PREFIX_LEN;
use fastckpt_core::{
    encode, hash, Checkpoint, EncodeOptions, Error, Header, RefBytes, RefIn, TensorEntry, TensorIn,
    Value,
};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: Counting = Counting;

/// Tensors that declare more raw bytes than this are not decoded (the header alone can
/// declare gigabytes of constant data legitimately; a caller sees `raw_bytes()` first).
const MAX_DECODE_BYTES: u64 = 8 << 20;
/// Re-encode round trip only for checkpoints up to this many raw bytes (speed).
const MAX_ROUNDTRIP_BYTES: u64 = 1 << 20;
/// Heap that parsing may use per input byte. Parsing pre-allocates vectors from counts
/// checked against the remaining bytes, so memory stays linear in the input size; the
/// factor covers `size_of::<TensorEntry>() / 8` (a tensor entry takes >= 8 header bytes).
const PARSE_HEAP_PER_BYTE: usize = 64;
const HEAP_SLACK: usize = 256 << 10;
/// The predicted-chunk decoder's flat table of 16 contexts x 4096 slots of u32.
const CONTEXT_TABLE: usize = 16 * 4096 * 4;

fuzz_target!(|data: &[u8]| {
    if let Err(Error::Checksum(_)) = check_file(data) {
        if let Some(fixed) = fix_header_checksum(data) {
            let _ = check_file(&fixed);
        }
    }
});

/// A reference offered to the decoder: the reference tensor's bytes and, for a tensor
/// with an Adam-direction reference, the moments it names.
type Offered = (Vec<u8>, Option<(Vec<u8>, Vec<u8>)>);

/// The reference offered for tensor `t` (predicted tensors only), with its moments.
fn offered(t: &TensorEntry) -> Option<Offered> {
    let raw = t.raw_bytes() as usize;
    let moments = t.direction().map(|d| moments_for(&d.m, &d.v, raw));
    reference(t).map(|r| (r, moments))
}

/// The core's view of an offered reference.
fn ref_bytes(o: &Offered) -> RefBytes<'_> {
    RefBytes {
        data: &o.0,
        moments: o.1.as_ref().map(|(m, v)| (&m[..], &v[..])),
    }
}

/// The reference offered for tensor `t` (predicted tensors only).
fn reference(t: &TensorEntry) -> Option<Vec<u8>> {
    t.reference
        .as_ref()
        .map(|_| reference_for(&t.name, t.dtype, t.raw_bytes() as usize))
}

/// Parses and decodes `file`, asserting the properties above; returns the parse result.
fn check_file(file: &[u8]) -> Result<(), Error> {
    let (parsed, heap) = peak_heap(|| Checkpoint::parse(file));
    assert!(
        heap <= PARSE_HEAP_PER_BYTE * file.len() + HEAP_SLACK,
        "parsing {} bytes allocated {heap} bytes",
        file.len()
    );
    let ck = parsed?;

    let mut decoded: Vec<Option<Vec<u8>>> = Vec::with_capacity(ck.tensors().len());
    for (i, t) in ck.tensors().iter().enumerate() {
        assert_eq!(
            ck.find(&t.name).map(|j| ck.tensors()[j].name == t.name),
            Ok(true)
        );
        let raw = t.raw_bytes();
        if raw > MAX_DECODE_BYTES {
            decoded.push(None);
            continue;
        }
        let rf = offered(t);
        let (out, heap) = peak_heap(|| match &rf {
            None => ck.decode_tensor(i, Some(1)),
            Some(rf) => {
                let mut out = vec![0u8; raw as usize];
                ck.decode_with(vec![(i, &mut out, Some(ref_bytes(rf)))], Some(1))
                    .map(|()| out)
            }
        });
        // Output + per-thread plane scratch (<= one chunk) + per-chunk bookkeeping; a
        // predicted chunk also builds per-word contexts, lengths and a context table.
        let bound = match rf {
            None => 2 * raw as usize + 48 * t.chunks.len() + HEAP_SLACK,
            Some(_) => 6 * raw as usize + 96 * t.chunks.len() + CONTEXT_TABLE + HEAP_SLACK,
        };
        assert!(
            heap <= bound,
            "decoding tensor {i} ({raw} raw bytes, {} chunks) allocated {heap} bytes",
            t.chunks.len()
        );
        match out {
            Ok(out) => {
                assert_eq!(out.len() as u64, raw);
                decoded.push(Some(out));
            }
            Err(e) => {
                assert!(
                    !matches!(e, Error::InvalidArgument(_) | Error::NotFound(_)),
                    "decoding tensor {i} blamed the caller: {e}"
                );
                decoded.push(None);
            }
        }
    }
    if decoded.iter().all(Option::is_none) {
        return Ok(());
    }
    check_parallel_decode(&ck, &decoded);
    let (header, _) = Header::parse(file).expect("the file parsed above");
    let over_header = Checkpoint::with_header(&header, file).expect("the data section fits");
    check_parallel_decode(&over_header, &decoded);
    if decoded.iter().all(Option::is_some) {
        let total: u64 = ck.tensors().iter().map(|t| t.raw_bytes()).sum();
        if total <= MAX_ROUNDTRIP_BYTES {
            check_reencode(&ck, &decoded);
        }
    }
    Ok(())
}

/// All decodable tensors in one `decode_with` call on two threads: same bytes.
fn check_parallel_decode(ck: &Checkpoint, decoded: &[Option<Vec<u8>>]) {
    let refs: Vec<Option<Offered>> = ck.tensors().iter().map(offered).collect();
    let mut bufs: Vec<(usize, Vec<u8>)> = decoded
        .iter()
        .enumerate()
        .filter_map(|(i, d)| d.as_ref().map(|d| (i, vec![0xa5u8; d.len()])))
        .collect();
    let jobs = bufs
        .iter_mut()
        .map(|(i, b)| (*i, b.as_mut_slice(), refs[*i].as_ref().map(ref_bytes)))
        .collect();
    ck.decode_with(jobs, Some(2))
        .expect("tensors that decode one by one must decode together");
    for (i, b) in &bufs {
        assert!(
            decoded[*i].as_deref() == Some(b.as_slice()),
            "tensor {i} decodes differently in parallel"
        );
    }
}

/// Decoded tensors and structure, encoded again (predicted ones against the same
/// reference), must read back identically.
fn check_reencode(ck: &Checkpoint, decoded: &[Option<Vec<u8>>]) {
    let refs: Vec<Option<Vec<u8>>> = ck.tensors().iter().map(reference).collect();
    let tensors: Vec<TensorIn> = ck
        .tensors()
        .iter()
        .zip(decoded)
        .zip(&refs)
        .map(|((t, d), rf)| TensorIn {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            tag: t.tag.clone(),
            data: d.as_deref().unwrap(),
            reference: t
                .reference
                .as_ref()
                .zip(rf.as_deref())
                .map(|(r, data)| RefIn {
                    checkpoint: r.checkpoint.clone(),
                    tensor: r.tensor.clone(),
                    data,
                    direction: None,
                }),
            lossy: None,
            side: None,
        })
        .collect();
    let opts = EncodeOptions {
        threads: Some(1),
        chunk_bytes: 4096,
        ..EncodeOptions::default()
    };
    // Whatever the reader accepts (unique names included), the writer must accept.
    let file = match encode(&tensors, ck.structure(), &opts) {
        Ok(enc) => enc.to_vec(),
        Err(e) => panic!("a decoded checkpoint does not re-encode: {e}"),
    };
    let back = Checkpoint::parse(&file).expect("re-encoded file must parse");
    assert_eq!(value_bytes(back.structure()), value_bytes(ck.structure()));
    assert_eq!(back.tensors().len(), tensors.len());
    for (i, (t, b)) in tensors.iter().zip(back.tensors()).enumerate() {
        assert_eq!(
            (&b.name, b.dtype, &b.shape, &b.tag),
            (&t.name, t.dtype, &t.shape, &t.tag)
        );
        let mut out = vec![0u8; t.data.len()];
        let rf = b
            .reference
            .as_ref()
            .map(|_| t.reference.as_ref().unwrap().data);
        back.decode_with(vec![(i, &mut out, rf.map(RefBytes::from))], Some(1))
            .expect("re-encoded tensor must decode");
        assert!(
            out == t.data,
            "tensor {i} changed in a re-encode round trip"
        );
    }
}

/// Bit-exact form of a value (`Value`'s `PartialEq` has NaN != NaN).
fn value_bytes(v: &Value) -> Vec<u8> {
    let mut w = Writer::default();
    v.write(&mut w);
    w.into_inner()
}

/// The file with its header checksum recomputed, if the prefix and header fit.
fn fix_header_checksum(file: &[u8]) -> Option<Vec<u8>> {
    let header_len = u64::from_le_bytes(file.get(16..PREFIX_LEN)?.try_into().ok()?);
    let end = PREFIX_LEN.checked_add(usize::try_from(header_len).ok()?)?;
    if end.checked_add(8)? > file.len() {
        return None;
    }
    let mut fixed = file.to_vec();
    let sum = hash::h64(&fixed[..end]);
    fixed[end..end + 8].copy_from_slice(&sum.to_le_bytes());
    Some(fixed)
}
