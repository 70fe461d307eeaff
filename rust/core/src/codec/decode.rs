//! Decoding chunks: read each plane's header, decode its rANS stream (two chunks' streams
//! at a time where there are two: see [`rans::decode_two`]), then merge the planes back
//! into words block by block, expanding pair symbols on the way (for 2- and 4-byte words
//! straight into the merged words where plane 0 is the only pair-coded one: MiniLM bf16
//! decode after a cache-clearing write, one thread, 13.2-13.5 -> 12.5-13.0 ms, fp32 ~2%
//! faster) and hashing each block while it is in cache.

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

    /// Whether this plane decodes into a plane buffer (of one byte per word).
    fn buffered(&self) -> bool {
        matches!(self, Plane::Const(_) | Plane::Rans(_))
    }

    /// Pair symbols this plane decodes into a buffer of its own (expanded as merged).
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
    let [r] = decode_group([(comp, dtype, out)], false);
    r.map(|_| ())
}

/// Like [`decode_chunk`], also returning [`crate::hash::h128`] of the decoded bytes: each
/// block is hashed right after it is merged, while still in cache, instead of reading the
/// whole chunk back.
pub fn decode_chunk_hashed(comp: &[u8], dtype: DType, out: &mut [u8]) -> Result<u128> {
    let [r] = decode_group([(comp, dtype, out)], true);
    r.map(|h| h.expect("hash asked for"))
}

/// [`decode_chunk_hashed`] of two chunks at once: their rANS streams are decoded two at
/// a time, which is faster than one after the other. Each result is the one that chunk
/// gives alone.
pub fn decode_two_hashed(a: ChunkOut<'_>, b: ChunkOut<'_>) -> [Result<u128>; 2] {
    decode_group([a, b], true).map(|r| r.map(|h| h.expect("hash asked for")))
}

/// A chunk to decode: its coded bytes, its dtype and its output.
pub type ChunkOut<'a> = (&'a [u8], DType, &'a mut [u8]);

/// A decoded plane as the merge reads it.
#[derive(Clone, Copy)]
enum Source<'a> {
    /// Its bytes: raw in the input, or a decoded plane buffer.
    Bytes(&'a [u8]),
    /// Pair symbols, expanded block by block as the merge goes (into L1, instead of a
    /// plane buffer written whole and read back).
    Pairs {
        symbols: &'a [u8],
        lo: u8,
        escapes: &'a [u8],
    },
}

/// Merges a chunk's planes into `out` block by block ([`HASH_BLOCK_WORDS`] words). With
/// `hash`, each block is merged into a small buffer, hashed there and streamed to `out`,
/// and the hash is returned.
fn merge_blocks(
    sources: &[Source],
    width: usize,
    float: bool,
    out: &mut [u8],
    hash: bool,
) -> Result<Option<u128>> {
    let mut hasher = hash.then(Hasher128::default);
    let mut tmp = [0u8; HASH_BLOCK_WORDS * MAX_PLANES];
    let mut merge = Merge {
        sources,
        float,
        next: [0; MAX_PLANES],
        expanded: [0; HASH_BLOCK_WORDS * MAX_PLANES],
    };
    for (b, block) in out.chunks_mut(HASH_BLOCK_WORDS * width).enumerate() {
        let at = b * HASH_BLOCK_WORDS;
        match hasher.as_mut() {
            None => merge.block(at, block)?,
            Some(h) => {
                let t = &mut tmp[..block.len()];
                merge.block(at, t)?;
                h.update(t);
                crate::memory::stream_copy(block, t);
            }
        }
    }
    merge.finish()?;
    Ok(hasher.map(|h| h.digest()))
}

/// A chunk's merge in progress: its planes, each pair-coded plane's cursor in its escaped
/// bytes, and room to expand a block of each in L1.
struct Merge<'s, 'a> {
    sources: &'s [Source<'a>],
    float: bool,
    next: [usize; MAX_PLANES],
    expanded: [u8; HASH_BLOCK_WORDS * MAX_PLANES],
}

impl Merge<'_, '_> {
    /// Merges the block starting at word `at` (even) into `out` (whole words). Where plane
    /// 0 is the only pair-coded one, its symbols expand straight into the merged words.
    fn block(&mut self, at: usize, out: &mut [u8]) -> Result<()> {
        let width = self.sources.len();
        let Some(&Source::Pairs {
            symbols,
            lo,
            escapes,
        }) = self.sources.first()
        else {
            return self.expanded(at, out);
        };
        let words = out.len() / width;
        let mut rest: [&[u8]; MAX_PLANES] = [&[]; MAX_PLANES];
        for (r, source) in rest.iter_mut().zip(&self.sources[1..]) {
            match source {
                Source::Bytes(bytes) => *r = &bytes[at..at + words],
                Source::Pairs { .. } => return self.expanded(at, out),
            }
        }
        let syms = &symbols[at / 2..(at + words).div_ceil(2)];
        let (rest, next) = (&rest[..width - 1], &mut self.next[0]);
        let done = pairs::expand_merge(syms, lo, escapes, next, rest, self.float, out)?;
        self.expanded(at + done, &mut out[done * width..])
    }

    /// [`Merge::block`] through expanded planes: each pair-coded plane is expanded into
    /// its slot of `expanded`, then the planes are merged.
    fn expanded(&mut self, at: usize, out: &mut [u8]) -> Result<()> {
        let width = self.sources.len();
        let words = out.len() / width;
        let mut parts: [&[u8]; MAX_PLANES] = [&[]; MAX_PLANES];
        let slots = self.expanded.chunks_mut(HASH_BLOCK_WORDS);
        for (p, (source, slot)) in self.sources.iter().zip(slots).enumerate() {
            parts[p] = match *source {
                Source::Bytes(bytes) => &bytes[at..at + words],
                Source::Pairs {
                    symbols,
                    lo,
                    escapes,
                } => {
                    let syms = &symbols[at / 2..(at + words).div_ceil(2)];
                    let plane = &mut slot[..words];
                    pairs::expand_part(syms, lo, escapes, &mut self.next[p], plane)?;
                    plane
                }
            };
        }
        fields::merge(&parts[..width], width, self.float, out);
        Ok(())
    }

    /// Checks, once every block is merged, that every escaped byte was taken.
    fn finish(&self) -> Result<()> {
        for (source, &next) in self.sources.iter().zip(&self.next) {
            if let Source::Pairs { escapes, .. } = source {
                if next != escapes.len() {
                    return Err(Error::Corrupt("stray escaped bytes".into()));
                }
            }
        }
        Ok(())
    }
}

/// Decodes `K` chunks together and merges each one's planes into its output, hashing it
/// on the way when `hash` is set. Each chunk's result is its own: a chunk whose header is
/// wrong is not decoded, one whose stream is wrong not merged (one whose escaped bytes
/// are wrong fails part way through its merge).
fn decode_group<const K: usize>(
    mut chunks: [ChunkOut<'_>; K],
    hash: bool,
) -> [Result<Option<u128>>; K] {
    let mut results: [Result<Option<u128>>; K] = std::array::from_fn(|_| Ok(None));
    let mut opened: [Vec<Plane>; K] = std::array::from_fn(|_| Vec::new());
    for (k, (comp, dtype, out)) in chunks.iter().enumerate() {
        match open_chunk(comp, *dtype, out.len()) {
            Ok(planes) => opened[k] = planes,
            Err(e) => results[k] = Err(e),
        }
    }
    let words: [usize; K] = std::array::from_fn(|k| chunks[k].2.len() / chunks[k].1.word_size());
    let scratch: usize = (0..K)
        .map(|k| opened[k].iter().filter(|p| p.buffered()).count() * words[k])
        .sum();
    let symbols: usize = (0..K)
        .map(|k| opened[k].iter().map(|p| p.symbols(words[k])).sum::<usize>())
        .sum();
    with_scratch(scratch, |scratch| {
        pairs::with_symbols(symbols, |symbols| {
            let (mut scratch, mut symbols) = (scratch, symbols);
            // Every buffer a stream decodes into, by index; each chunk's planes say
            // where theirs is (`Bytes`: raw, `Buffer`: decoded bytes, `Symbols`: pairs).
            let mut bufs: Vec<&mut [u8]> = Vec::new();
            let mut jobs = Vec::new();
            let mut layouts: [Vec<Layout>; K] = std::array::from_fn(|_| Vec::new());
            for (k, planes) in opened.into_iter().enumerate() {
                let n = words[k];
                for plane in planes {
                    let buffered = plane.buffered();
                    let (layout, stream) = match plane {
                        Plane::Raw(bytes) => (Layout::Bytes(bytes), None),
                        Plane::Const(v) => {
                            let at = carve(&mut scratch, n, &mut bufs);
                            bufs[at].fill(v);
                            (Layout::Buffer(at), None)
                        }
                        Plane::Rans(stream) => {
                            let at = carve(&mut scratch, n, &mut bufs);
                            (Layout::Buffer(at), Some((stream, at)))
                        }
                        Plane::Pairs {
                            lo,
                            escapes,
                            stream,
                        } => {
                            let at = carve(&mut symbols, pairs::symbol_count(n), &mut bufs);
                            (Layout::Symbols(at, lo, escapes), Some((stream, at)))
                        }
                    };
                    debug_assert_eq!(buffered, matches!(layout, Layout::Buffer(_)));
                    layouts[k].push(layout);
                    jobs.extend(stream.map(|(s, b)| (k, s, b)));
                }
            }
            run_streams(jobs, &mut bufs, &mut results);
            let bufs: Vec<&[u8]> = bufs.into_iter().map(|b| &*b).collect();
            for (k, (_, dtype, out)) in chunks.iter_mut().enumerate() {
                if results[k].is_ok() {
                    let sources: Vec<Source> = layouts[k].iter().map(|l| l.source(&bufs)).collect();
                    results[k] =
                        merge_blocks(&sources, dtype.word_size(), dtype.is_float(), out, hash);
                }
            }
            results
        })
    })
}

/// Takes the first `len` bytes of `pool` as the next buffer of `bufs`; returns its index.
fn carve<'s>(pool: &mut &'s mut [u8], len: usize, bufs: &mut Vec<&'s mut [u8]>) -> usize {
    let (mine, rest) = std::mem::take(pool).split_at_mut(len);
    *pool = rest;
    bufs.push(mine);
    bufs.len() - 1
}

/// Where a chunk's plane is once its stream is decoded.
enum Layout<'a> {
    /// Raw bytes of the input.
    Bytes(&'a [u8]),
    /// Decoded bytes in buffer `i`.
    Buffer(usize),
    /// Pair symbols in buffer `i`, with the window start and the escaped bytes.
    Symbols(usize, u8, &'a [u8]),
}

impl<'a> Layout<'a> {
    /// The plane as the merge reads it, over the decoded buffers `bufs`.
    fn source<'s>(&self, bufs: &[&'s [u8]]) -> Source<'s>
    where
        'a: 's,
    {
        match *self {
            Layout::Bytes(bytes) => Source::Bytes(bytes),
            Layout::Buffer(i) => Source::Bytes(bufs[i]),
            Layout::Symbols(i, lo, escapes) => Source::Pairs {
                symbols: bufs[i],
                lo,
                escapes,
            },
        }
    }
}

/// Decodes the streams of `jobs` (chunk, stream, index of its buffer in `bufs`), two at a
/// time; a stream's error becomes its chunk's result (the first one it gets).
fn run_streams<T, const K: usize>(
    jobs: Vec<(usize, Stream<'_>, usize)>,
    bufs: &mut [&mut [u8]],
    results: &mut [Result<T>; K],
) {
    let mut keep = |k: usize, r: Result<()>| {
        if let (Ok(_), Err(e)) = (&results[k], r) {
            results[k] = Err(e);
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
