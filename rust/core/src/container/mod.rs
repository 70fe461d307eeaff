//! Whole checkpoints: encode many tensors plus a structure into one checksummed file, and
//! read one back (all tensors, or any one of them) with every chunk verified.

pub mod bytes;
pub mod format;
pub mod value;

use rayon::prelude::*;

use crate::codec;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::hash;
use crate::parallel;
use format::{ChunkEntry, Codec, Header, TensorEntry};
use value::Value;

/// Default chunk size in raw bytes: big enough that per-chunk tables cost < 0.05%, small
/// enough for parallelism and partial reads.
pub const DEFAULT_CHUNK_BYTES: usize = 1 << 20;

/// A tensor to encode, borrowed from the caller (never modified).
#[derive(Debug, Clone)]
pub struct TensorIn<'a> {
    /// Unique name.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions.
    pub shape: Vec<u64>,
    /// Host hint stored as is (e.g. "torch").
    pub tag: String,
    /// Raw little-endian bytes, C order; length must match shape and dtype.
    pub data: &'a [u8],
}

/// Encoder settings.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Worker threads (`None`: all cores).
    pub threads: Option<usize>,
    /// Raw bytes per chunk (rounded down to whole words, at least one word).
    pub chunk_bytes: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            threads: None,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
        }
    }
}

/// An encoded checkpoint, kept as its pieces so it can be written without concatenating.
#[derive(Debug)]
pub struct Encoded {
    prefix: Vec<u8>,
    chunks: Vec<Vec<u8>>,
}

impl Encoded {
    /// Total file size in bytes.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.chunks.iter().map(Vec::len).sum::<usize>()
    }
    /// Whether the file is empty (never: the prefix is always there).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies the file into `out`, which must be exactly [`Encoded::len`] bytes; chunks
    /// are copied in parallel on the current Rayon pool.
    pub fn write_to(&self, out: &mut [u8]) {
        let (head, mut rest) = out.split_at_mut(self.prefix.len());
        head.copy_from_slice(&self.prefix);
        let mut pairs = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            let (dst, tail) = rest.split_at_mut(c.len());
            pairs.push((dst, c));
            rest = tail;
        }
        pairs
            .into_par_iter()
            .for_each(|(dst, c)| dst.copy_from_slice(c));
    }
    /// Streams the file to a writer.
    pub fn write_io(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(&self.prefix)?;
        self.chunks.iter().try_for_each(|c| w.write_all(c))
    }
    /// The file as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len()];
        self.write_to(&mut v);
        v
    }
}

/// Encodes `tensors` and the `structure` that refers to them by index.
pub fn encode(tensors: &[TensorIn], structure: &Value, opts: &EncodeOptions) -> Result<Encoded> {
    check_inputs(tensors, structure)?;
    let plans: Vec<(usize, usize)> = tensors
        .iter()
        .map(|t| {
            let word = t.dtype.word_size();
            let chunk = (opts.chunk_bytes / word).max(1) * word;
            (chunk, t.data.len().div_ceil(chunk))
        })
        .collect();
    let jobs: Vec<(usize, &[u8])> = tensors
        .iter()
        .zip(&plans)
        .enumerate()
        .flat_map(|(i, (t, &(chunk, _)))| t.data.chunks(chunk).map(move |c| (i, c)))
        .collect();
    let coded: Vec<(Vec<u8>, u128)> = parallel::install(opts.threads, || {
        jobs.par_iter()
            .map(|&(i, raw)| (codec::encode_chunk(raw, tensors[i].dtype), hash::h128(raw)))
            .collect()
    })?;
    let mut entries = Vec::with_capacity(tensors.len());
    let mut chunks = Vec::with_capacity(coded.len());
    let mut offset = 0u64;
    let mut it = coded.into_iter();
    for (t, &(chunk, n)) in tensors.iter().zip(&plans) {
        let mut list = Vec::with_capacity(n);
        for (comp, rh) in it.by_ref().take(n) {
            let len = comp.len() as u64;
            list.push(ChunkEntry {
                offset,
                len,
                raw_hash: rh,
            });
            offset += len;
            chunks.push(comp);
        }
        let chunk_words = (chunk / t.dtype.word_size()) as u64;
        let raw_hash = format::tensor_hash(chunk_words, &list);
        entries.push(TensorEntry {
            name: t.name.clone(),
            dtype: t.dtype,
            shape: t.shape.clone(),
            tag: t.tag.clone(),
            codec: Codec::Planes,
            chunk_words,
            raw_hash,
            reference: None,
            params: Value::None,
            chunks: list,
        });
    }
    let header = Header {
        tensors: entries,
        structure: structure.clone(),
        data_len: offset,
    };
    Ok(Encoded {
        prefix: header.to_prefix_bytes(),
        chunks,
    })
}

fn check_inputs(tensors: &[TensorIn], structure: &Value) -> Result<()> {
    let mut names = std::collections::HashSet::new();
    for t in tensors {
        let want = t
            .shape
            .iter()
            .try_fold(t.dtype.size() as u64, |a, &d| a.checked_mul(d))
            .ok_or_else(|| Error::InvalidArgument(format!("{:?}: shape overflows", t.name)))?;
        if want != t.data.len() as u64 {
            return Err(Error::InvalidArgument(format!(
                "{:?}: {} bytes of data for shape {:?} {}",
                t.name,
                t.data.len(),
                t.shape,
                t.dtype.name()
            )));
        }
        if t.shape.len() > format::MAX_NDIM {
            return Err(Error::InvalidArgument(format!(
                "{:?}: too many dimensions",
                t.name
            )));
        }
        if !names.insert(t.name.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "duplicate tensor name {:?}",
                t.name
            )));
        }
    }
    let mut bad = None;
    structure.visit_tensors(&mut |i| {
        if i >= tensors.len() as u64 {
            bad = Some(i)
        }
    });
    match bad {
        Some(i) => Err(Error::InvalidArgument(format!(
            "structure refers to missing tensor {i}"
        ))),
        None => Ok(()),
    }
}

/// A parsed checkpoint over borrowed file bytes. Parsing checks the header only; tensor
/// data is verified chunk by chunk as it is decoded.
#[derive(Debug)]
pub struct Checkpoint<'a> {
    header: Header,
    data: &'a [u8],
}

impl<'a> Checkpoint<'a> {
    /// Parses and validates the header of `file`.
    pub fn parse(file: &'a [u8]) -> Result<Checkpoint<'a>> {
        let (header, data) = Header::parse(file)?;
        Ok(Checkpoint { header, data })
    }

    /// The index entries of every tensor.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.header.tensors
    }

    /// The checkpoint's structure.
    pub fn structure(&self) -> &Value {
        &self.header.structure
    }

    /// Index of the tensor called `name`.
    pub fn find(&self, name: &str) -> Result<usize> {
        self.header
            .tensors
            .iter()
            .position(|t| t.name == name)
            .ok_or_else(|| Error::NotFound(name.to_owned()))
    }

    /// Decodes tensors into caller buffers: `jobs` pairs a tensor index with a buffer of
    /// exactly its raw size. All chunks of all jobs are decoded in parallel and verified.
    pub fn decode_into(&self, jobs: Vec<(usize, &mut [u8])>, threads: Option<usize>) -> Result<()> {
        let mut work: Vec<(&TensorEntry, &ChunkEntry, &mut [u8])> = Vec::new();
        for (i, out) in jobs {
            let t = self
                .header
                .tensors
                .get(i)
                .ok_or_else(|| Error::InvalidArgument(format!("no tensor index {i}")))?;
            if out.len() as u64 != t.raw_bytes() {
                return Err(Error::InvalidArgument(format!(
                    "{:?}: buffer of {} bytes for {} raw bytes",
                    t.name,
                    out.len(),
                    t.raw_bytes()
                )));
            }
            for (c, dst) in t.chunks.iter().zip(out.chunks_mut(t.chunk_raw_bytes())) {
                work.push((t, c, dst));
            }
        }
        parallel::install(threads, || {
            work.into_par_iter()
                .try_for_each(|(t, c, dst)| self.decode_chunk(t, c, dst))
        })?
    }

    /// Decodes one tensor into a new buffer.
    pub fn decode_tensor(&self, i: usize, threads: Option<usize>) -> Result<Vec<u8>> {
        let t = self
            .header
            .tensors
            .get(i)
            .ok_or_else(|| Error::InvalidArgument(format!("no tensor index {i}")))?;
        let mut out = vec![0u8; t.raw_bytes() as usize];
        self.decode_into(vec![(i, &mut out)], threads)?;
        Ok(out)
    }

    fn decode_chunk(&self, t: &TensorEntry, c: &ChunkEntry, dst: &mut [u8]) -> Result<()> {
        let at = |what: &str| format!("tensor {:?} chunk at offset {}: {what}", t.name, c.offset);
        let comp = &self.data[c.offset as usize..(c.offset + c.len) as usize];
        codec::decode_chunk(comp, t.dtype, dst).map_err(|e| match e {
            Error::Corrupt(m) | Error::Truncated(m) => Error::Corrupt(at(&m)),
            other => other,
        })?;
        if hash::h128(dst) != c.raw_hash {
            return Err(Error::Checksum(at(
                "decoded bytes differ from the stored hash",
            )));
        }
        Ok(())
    }
}
