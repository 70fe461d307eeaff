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
            let mut jobs = Vec::new();
            let mut expands = Vec::new();
            let mut sources: [Vec<Option<&[u8]>>; K] = std::array::from_fn(|_| Vec::new());
            let mut slots: [Vec<&mut [u8]>; K] = std::array::from_fn(|_| Vec::new());
            for (k, planes) in opened.into_iter().enumerate() {
                let (n, width) = (words[k], chunks[k].1.word_size());
                let (mine, rest) = scratch.split_at_mut(n * width);
                scratch = rest;
                slots[k] = plane_slices(mine, n, width);
                for (p, plane) in planes.into_iter().enumerate() {
                    let (source, stream) = match plane {
                        Plane::Raw(bytes) => (Some(bytes), None),
                        Plane::Const(v) => {
                            slots[k][p].fill(v);
                            (None, None)
                        }
                        Plane::Rans(stream) => (None, Some((stream, Target::Plane(p)))),
                        Plane::Pairs {
                            lo,
                            escapes,
                            stream,
                        } => {
                            let (syms, rest) = symbols.split_at_mut(pairs::symbol_count(n));
                            symbols = rest;
                            expands.push((k, p, lo, escapes, syms));
                            (None, Some((stream, Target::Symbols(expands.len() - 1))))
                        }
                    };
                    sources[k].push(source);
                    jobs.extend(stream.map(|(s, t)| (k, s, t)));
                }
            }
            run_streams(jobs, &mut slots, &mut expands, &mut results);
            for (k, p, lo, escapes, syms) in expands {
                if results[k].is_ok() {
                    results[k] = pairs::expand(syms, lo, escapes, slots[k][p]);
                }
            }
            for (k, (_, dtype, out)) in chunks.iter_mut().enumerate() {
                if results[k].is_ok() {
                    let planes: Vec<&[u8]> = sources[k]
                        .iter()
                        .zip(slots[k].iter())
                        .map(|(src, buf)| src.unwrap_or(buf))
                        .collect();
                    merge(k, &planes, dtype.word_size(), dtype.is_float(), out);
                }
            }
            results
        })
    })
}

/// Where a stream's symbols go: a plane's buffer, or the symbols of pair-coded plane `i`.
enum Target {
    Plane(usize),
    Symbols(usize),
}

/// A pair-coded plane still to expand: chunk, plane, window start, escapes, symbols.
type Expand<'a, 's> = (usize, usize, u8, &'a [u8], &'s mut [u8]);

/// Decodes the streams of `jobs` (chunk, stream, target), two at a time; a stream's error
/// becomes its chunk's result.
fn run_streams<const K: usize>(
    jobs: Vec<(usize, Stream<'_>, Target)>,
    slots: &mut [Vec<&mut [u8]>; K],
    expands: &mut [Expand<'_, '_>],
    results: &mut [Result<()>; K],
) {
    let mut jobs = jobs.into_iter();
    while let Some((ka, sa, ta)) = jobs.next() {
        let Some((kb, sb, tb)) = jobs.next() else {
            let r = sa.decode(target(slots, expands, ka, &ta));
            keep_first_error(&mut results[ka], r);
            break;
        };
        let (oa, ob) = two_targets(slots, expands, (ka, &ta), (kb, &tb));
        let (ra, rb) = rans::decode_two(sa, oa, sb, ob);
        keep_first_error(&mut results[ka], ra);
        keep_first_error(&mut results[kb], rb);
    }
}

fn keep_first_error(slot: &mut Result<()>, r: Result<()>) {
    if slot.is_ok() {
        *slot = r;
    }
}

fn target<'t, const K: usize>(
    slots: &'t mut [Vec<&mut [u8]>; K],
    expands: &'t mut [Expand<'_, '_>],
    k: usize,
    t: &Target,
) -> &'t mut [u8] {
    match *t {
        Target::Plane(p) => slots[k][p],
        Target::Symbols(i) => expands[i].4,
    }
}

/// The two (distinct) buffers of two stream jobs.
fn two_targets<'t, const K: usize>(
    slots: &'t mut [Vec<&mut [u8]>; K],
    expands: &'t mut [Expand<'_, '_>],
    (ka, ta): (usize, &Target),
    (kb, tb): (usize, &Target),
) -> (&'t mut [u8], &'t mut [u8]) {
    match (ta, tb) {
        (Target::Plane(pa), Target::Plane(pb)) => {
            if ka == kb {
                let (lo, hi) = slots[ka].split_at_mut(*pb.max(pa));
                let (x, y) = (&mut *lo[*pa.min(pb)], &mut *hi[0]);
                if pa < pb {
                    (x, y)
                } else {
                    (y, x)
                }
            } else {
                // Streams are queued chunk by chunk: the first job's chunk comes first.
                let (lo, hi) = slots.split_at_mut(kb);
                (&mut *lo[ka][*pa], &mut *hi[0][*pb])
            }
        }
        (Target::Plane(p), Target::Symbols(i)) => (&mut *slots[ka][*p], &mut *expands[*i].4),
        (Target::Symbols(i), Target::Plane(p)) => (&mut *expands[*i].4, &mut *slots[kb][*p]),
        (Target::Symbols(i), Target::Symbols(j)) => {
            let (lo, hi) = expands.split_at_mut(*i.max(j));
            let (x, y) = (&mut *lo[*i.min(j)].4, &mut *hi[0].4);
            if i < j {
                (x, y)
            } else {
                (y, x)
            }
        }
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
