//! Decoding chunks: read each plane's header, decode its rANS stream (two chunks' streams
//! at a time where there are two: see [`rans::decode_two`]), expand pair symbols, and
//! merge the planes back into words, hashing them on the way out.

use super::*;
use crate::entropy::rans::Stream;

/// A plane of a chunk with its header read: what decoding it still takes.
pub(crate) enum Plane<'a> {
    /// Stored raw: these bytes of the input, used in place.
    Raw(&'a [u8]),
    /// One byte value throughout.
    Const(u8),
    /// One rANS symbol per byte.
    Rans(Stream<'a>),
    /// Pair symbols ([`pairs`]): window start, escaped bytes and the symbols' stream.
    Pairs {
        lo: u8,
        escapes: &'a [u8],
        stream: Stream<'a>,
    },
}

impl<'a> Plane<'a> {
    /// Reads the header (and the stream's header) of the next plane, of `n` bytes, at `r`.
    pub(crate) fn open(r: &mut Reader<'a>, n: usize) -> Result<Plane<'a>> {
        match r.u8()? {
            MODE_RAW => Ok(Plane::Raw(r.take(n)?)),
            MODE_CONST => Ok(Plane::Const(r.u8()?)),
            MODE_RANS => {
                let table = FreqTable::read(r)?;
                Ok(Plane::Rans(Stream::open(r, &table)?))
            }
            mode @ (MODE_PAIRS | MODE_PAIRS_WIDE) => {
                let lo = r.u8()?;
                if lo > pairs::MAX_LO {
                    return Err(Error::Corrupt(format!("pair window at {lo}")));
                }
                let bits = match mode {
                    MODE_PAIRS => crate::entropy::SCALE_BITS,
                    _ => r.u8()? as u32,
                };
                let escaped = r.u32()? as usize;
                if escaped > n {
                    return Err(Error::Corrupt(format!(
                        "{escaped} escaped bytes in a plane of {n}"
                    )));
                }
                let escapes = r.take(escaped)?;
                let table = FreqTable::read_scaled(r, bits)?;
                let stream = Stream::open(r, &table)?;
                Ok(Plane::Pairs {
                    lo,
                    escapes,
                    stream,
                })
            }
            m => Err(Error::Corrupt(format!("unknown plane mode {m}"))),
        }
    }

    /// Pair symbols this plane decodes into a buffer of its own before expanding them.
    fn symbols(&self, n: usize) -> usize {
        match self {
            Plane::Pairs { .. } => pairs::symbol_count(n),
            _ => 0,
        }
    }
}

/// Decodes the next plane at `r` into `buf`, or returns the raw bytes in place (no copy).
pub(crate) fn decode_plane<'a>(r: &mut Reader<'a>, buf: &mut [u8]) -> Result<Option<&'a [u8]>> {
    match Plane::open(r, buf.len())? {
        Plane::Raw(bytes) => Ok(Some(bytes)),
        Plane::Const(v) => {
            buf.fill(v);
            Ok(None)
        }
        Plane::Rans(stream) => stream.decode(buf).map(|_| None),
        Plane::Pairs {
            lo,
            escapes,
            stream,
        } => pairs::with_symbols(pairs::symbol_count(buf.len()), |symbols| {
            stream.decode(symbols)?;
            pairs::expand(symbols, lo, escapes, buf)
        })
        .map(|_| None),
    }
}

/// Decompresses one chunk into `out` (whole `dtype` elements). `comp` must be consumed
/// exactly; anything inconsistent is an error.
pub fn decode_chunk(comp: &[u8], dtype: DType, out: &mut [u8]) -> Result<()> {
    let [r] = decode_group([(comp, dtype, out)], |_, planes, width, float, out| {
        fields::merge(planes, width, float, out)
    });
    r
}

/// Like [`decode_chunk`], also returning [`crate::hash::h128`] of the decoded bytes: each
/// block is hashed right after it is merged, while still in cache, instead of reading the
/// whole chunk back.
pub fn decode_chunk_hashed(comp: &[u8], dtype: DType, out: &mut [u8]) -> Result<u128> {
    let [r] = decode_hashed([(comp, dtype, out)]);
    r
}

/// [`decode_chunk_hashed`] of two chunks at once: their rANS streams are decoded two at
/// a time, which is faster than one after the other. Each result is the one that chunk
/// gives alone.
pub fn decode_two_hashed(a: ChunkOut<'_>, b: ChunkOut<'_>) -> [Result<u128>; 2] {
    decode_hashed([a, b])
}

/// A chunk to decode: its coded bytes, its dtype and its output.
pub type ChunkOut<'a> = (&'a [u8], DType, &'a mut [u8]);

/// [`decode_group`] merging block by block into a small buffer that is hashed and then
/// streamed to the output (see `HASH_BLOCK_WORDS`).
fn decode_hashed<const K: usize>(chunks: [ChunkOut<'_>; K]) -> [Result<u128>; K] {
    let mut hashes = [0u128; K];
    let results = decode_group(chunks, |k, planes, width, float, out| {
        let mut h = Hasher128::default();
        let mut tmp = [0u8; HASH_BLOCK_WORDS * 8];
        for (b, block) in out.chunks_mut(HASH_BLOCK_WORDS * width).enumerate() {
            let at = b * HASH_BLOCK_WORDS;
            let part: Vec<&[u8]> = planes
                .iter()
                .map(|p| &p[at..at + block.len() / width])
                .collect();
            let t = &mut tmp[..block.len()];
            fields::merge(&part, width, float, t);
            h.update(t);
            crate::memory::stream_copy(block, t);
        }
        hashes[k] = h.digest();
    });
    let mut k = 0;
    results.map(|r| {
        k += 1;
        r.map(|_| hashes[k - 1])
    })
}

/// Decodes `K` chunks together and hands each one's planes (`width` of them, `float`
/// words) to `merge(k, planes, width, float, out)`. Each chunk's result is its own: a
/// chunk whose header is wrong is not decoded, one whose stream is wrong not merged.
fn decode_group<const K: usize>(
    mut chunks: [ChunkOut<'_>; K],
    mut merge: impl FnMut(usize, &[&[u8]], usize, bool, &mut [u8]),
) -> [Result<()>; K] {
    let mut results: [Result<()>; K] = std::array::from_fn(|_| Ok(()));
    let mut opened: [Vec<Plane>; K] = std::array::from_fn(|_| Vec::new());
    for (k, (comp, dtype, out)) in chunks.iter().enumerate() {
        match open_chunk(comp, *dtype, out.len()) {
            Ok(planes) => opened[k] = planes,
            Err(e) => results[k] = Err(e),
        }
    }
    let words: [usize; K] = std::array::from_fn(|k| chunks[k].2.len() / chunks[k].1.word_size());
    let scratch: usize = chunks.iter().map(|c| c.2.len()).sum();
    let symbols: usize = (0..K)
        .map(|k| opened[k].iter().map(|p| p.symbols(words[k])).sum::<usize>())
        .sum();
    with_scratch(scratch, |scratch| {
        pairs::with_symbols(symbols, |symbols| {
            let (mut scratch, mut symbols) = (scratch, symbols);
            // Every buffer a stream decodes into, by index: each chunk's plane buffers
            // (from `first[k]`), then, as they come, the symbols of pair-coded planes.
            let mut bufs: Vec<&mut [u8]> = Vec::new();
            let mut first = [0usize; K];
            let mut jobs = Vec::new();
            let mut expands = Vec::new();
            let mut sources: [Vec<Option<&[u8]>>; K] = std::array::from_fn(|_| Vec::new());
            for (k, planes) in opened.into_iter().enumerate() {
                let (n, width) = (words[k], chunks[k].1.word_size());
                let (mine, rest) = scratch.split_at_mut(n * width);
                scratch = rest;
                first[k] = bufs.len();
                bufs.extend(plane_slices(mine, n, width));
                for (p, plane) in planes.into_iter().enumerate() {
                    let slot = first[k] + p;
                    let (source, stream) = match plane {
                        Plane::Raw(bytes) => (Some(bytes), None),
                        Plane::Const(v) => {
                            bufs[slot].fill(v);
                            (None, None)
                        }
                        Plane::Rans(stream) => (None, Some((stream, slot))),
                        Plane::Pairs {
                            lo,
                            escapes,
                            stream,
                        } => {
                            let (syms, rest) = symbols.split_at_mut(pairs::symbol_count(n));
                            symbols = rest;
                            bufs.push(syms);
                            expands.push((k, slot, lo, escapes, bufs.len() - 1));
                            (None, Some((stream, bufs.len() - 1)))
                        }
                    };
                    sources[k].push(source);
                    jobs.extend(stream.map(|(s, b)| (k, s, b)));
                }
            }
            run_streams(jobs, &mut bufs, &mut results);
            for (k, slot, lo, escapes, syms) in expands {
                if results[k].is_ok() {
                    let (plane, syms) = two_mut(&mut bufs, slot, syms);
                    results[k] = pairs::expand(syms, lo, escapes, plane);
                }
            }
            for (k, (_, dtype, out)) in chunks.iter_mut().enumerate() {
                if results[k].is_ok() {
                    let planes: Vec<&[u8]> = sources[k]
                        .iter()
                        .zip(&bufs[first[k]..])
                        .map(|(src, buf)| src.unwrap_or(buf))
                        .collect();
                    merge(k, &planes, dtype.word_size(), dtype.is_float(), out);
                }
            }
            results
        })
    })
}

/// Decodes the streams of `jobs` (chunk, stream, index of its buffer in `bufs`), two at a
/// time; a stream's error becomes its chunk's result (the first one it gets).
fn run_streams<const K: usize>(
    jobs: Vec<(usize, Stream<'_>, usize)>,
    bufs: &mut [&mut [u8]],
    results: &mut [Result<()>; K],
) {
    let mut keep = |k: usize, r: Result<()>| {
        if results[k].is_ok() {
            results[k] = r;
        }
    };
    let mut jobs = jobs.into_iter();
    while let Some((ka, sa, ba)) = jobs.next() {
        let Some((kb, sb, bb)) = jobs.next() else {
            keep(ka, sa.decode(bufs[ba]));
            break;
        };
        let (oa, ob) = two_mut(bufs, ba, bb);
        let (ra, rb) = rans::decode_two(sa, oa, sb, ob);
        keep(ka, ra);
        keep(kb, rb);
    }
}

/// Buffers `i` and `j` (distinct) of `bufs`, both writable.
fn two_mut<'t>(bufs: &'t mut [&mut [u8]], i: usize, j: usize) -> (&'t mut [u8], &'t mut [u8]) {
    if i < j {
        let (lo, hi) = bufs.split_at_mut(j);
        (&mut *lo[i], &mut *hi[0])
    } else {
        let (lo, hi) = bufs.split_at_mut(i);
        (&mut *hi[0], &mut *lo[j])
    }
}

/// The planes of a chunk of `len` bytes of `dtype`, headers read; the chunk must end
/// with its last plane.
fn open_chunk(comp: &[u8], dtype: DType, len: usize) -> Result<Vec<Plane<'_>>> {
    let width = dtype.word_size();
    let n = len / width;
    let mut r = Reader::new(comp);
    let planes = (0..width)
        .map(|_| Plane::open(&mut r, n))
        .collect::<Result<Vec<_>>>()?;
    if r.remaining() != 0 {
        return Err(Error::Corrupt(format!(
            "{} stray bytes after chunk",
            r.remaining()
        )));
    }
    Ok(planes)
}
