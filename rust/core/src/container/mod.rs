//! Whole checkpoints: encode many tensors plus a structure into one checksummed file, and
//! read one back (all tensors, or any one of them) with every chunk verified.

pub mod bytes;
pub mod format;
pub mod refs;
pub mod value;

use std::borrow::Cow;
use std::mem::MaybeUninit;

use rayon::prelude::*;

use crate::codec::{self, PlaneChunk};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fields;
use crate::hash;
use crate::lossy;
use crate::memory;
use crate::parallel;
use crate::pool::Held;
use crate::predict;
use crate::quant::{self, Plan};
use crate::relquant;
use format::{ChunkEntry, Codec, Header, TensorEntry};
use refs::{AdamIn, RefBytes, RefChunk, RefSource};
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
    /// The same tensor in an earlier checkpoint, to predict from (same dtype and length).
    /// For near-lossless coding this must be the *decoded* reference (closed loop).
    pub reference: Option<RefIn<'a>>,
    /// Near-lossless coding for this tensor (ignored for dtypes that cannot be quantized).
    pub lossy: Option<LossySpec>,
    /// Index of a sibling tensor of this checkpoint (same dtype and size, lossless, no side
    /// of its own) whose words give this tensor's contexts when it is predicted, as Adam's
    /// first moment does for its second ([`crate::predict`]); decoding then needs it.
    pub side: Option<usize>,
}

/// Near-lossless coding asked for one tensor ([`crate::quant`]).
#[derive(Debug, Clone, PartialEq)]
pub struct LossySpec {
    /// The tensor's class (e.g. "weights", "exp_avg"), stored for `inspect`.
    pub class: String,
    /// Every element within `error_bound x rms(tensor)` of its value (unless pruned).
    pub error_bound: f64,
    /// Fraction of smallest residuals pruned to the prediction, in [0, 1).
    pub prune: f64,
    /// Decoded values clamped at 0 (for non-negative tensors such as Adam's exp_avg_sq).
    pub nonneg: bool,
    /// `error_bound` is per element and relative: |decoded - x| <= error_bound * |x|, for
    /// non-negative tensors (negative values are stored exactly) ([`crate::relquant`]).
    pub relative: bool,
}

/// A reference tensor offered to the encoder.
#[derive(Debug, Clone)]
pub struct RefIn<'a> {
    /// Identifier of the checkpoint holding it (stored, shown by `inspect`).
    pub checkpoint: String,
    /// Its name in that checkpoint.
    pub tensor: String,
    /// Its raw bytes (same length as the tensor's).
    pub data: &'a [u8],
    /// Set to code the tensor against the Adam-direction prediction made from `data` and
    /// these moments instead of `data` itself (lossless float32 tensors only): recorded
    /// in the file, so a decoder given the same tensors makes the same prediction.
    pub direction: Option<AdamIn<'a>>,
}

impl<'a> RefIn<'a> {
    /// What the tensor is coded against, chunk by chunk.
    fn source(&self) -> RefSource<'a> {
        RefSource::encoding(self.data, self.direction.as_ref())
    }
}

/// Encoder settings.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// Worker threads (`None`: all cores).
    pub threads: Option<usize>,
    /// Raw bytes per chunk (rounded down to whole words, at least one word).
    pub chunk_bytes: usize,
    /// Codes per block of the near-lossless block-sparse packing.
    pub sparse_block: u32,
}

/// Default block of the near-lossless block-sparse packing (chosen by `sparse` bench).
pub const DEFAULT_SPARSE_BLOCK: u32 = 64;

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            threads: None,
            chunk_bytes: DEFAULT_CHUNK_BYTES,
            sparse_block: DEFAULT_SPARSE_BLOCK,
        }
    }
}

/// An encoded checkpoint, kept as its pieces so it can be written without concatenating.
/// Standalone chunks still hold their raw planes in the input tensors (hence the lifetime):
/// those bytes go from the input straight to the output when the file is written.
pub struct Encoded<'a> {
    prefix: Vec<u8>,
    chunks: Vec<ChunkBytes<'a>>,
}

/// One chunk's encoded bytes: finished, or coded planes plus raw planes still in the input.
enum ChunkBytes<'a> {
    /// Finished bytes.
    Done(Held),
    /// A residual chunk, finished, in its two parts.
    Residual(predict::ResidualBytes),
    /// A standalone chunk: its coded planes, and its raw bytes that its raw planes are
    /// written from; behind the standalone kind byte when it belongs to a predicted tensor.
    Planes {
        planes: Box<PlaneChunk>,
        raw: &'a [u8],
        kind_byte: bool,
    },
}

impl ChunkBytes<'_> {
    /// Whether the bytes are all there (written as they are, nothing to materialize).
    fn is_finished(&self) -> bool {
        !matches!(self, ChunkBytes::Planes { .. })
    }

    fn len(&self) -> usize {
        match self {
            ChunkBytes::Done(b) => b.as_slice().len(),
            ChunkBytes::Residual(r) => r.len(),
            ChunkBytes::Planes {
                planes, kind_byte, ..
            } => planes.len() + *kind_byte as usize,
        }
    }

    fn write(&self, out: &mut [MaybeUninit<u8>]) {
        match self {
            ChunkBytes::Done(b) => codec::copy_init(out, b.as_slice()),
            ChunkBytes::Residual(r) => {
                let [head, bits] = r.parts();
                let (a, b) = out.split_at_mut(head.len());
                codec::copy_init(a, head);
                codec::copy_init(b, bits);
            }
            ChunkBytes::Planes {
                planes,
                raw,
                kind_byte: false,
            } => planes.write(raw, out),
            ChunkBytes::Planes {
                planes,
                raw,
                kind_byte: true,
            } => predict::write_standalone(planes, raw, out),
        }
    }
}

/// Chunks written per batch by [`Encoded::write_durable`] (each batch materialized in
/// parallel).
const IO_BATCH: usize = 16;

impl Encoded<'_> {
    /// Total file size in bytes.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.chunks.iter().map(ChunkBytes::len).sum::<usize>()
    }
    /// Whether the file is empty (never: the prefix is always there).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies the file into `out`, which must be exactly [`Encoded::len`] bytes; chunks
    /// are written in parallel on the current Rayon pool.
    pub fn write_to(&self, out: &mut [u8]) {
        self.write_uninit(fields::as_uninit(out));
    }
    /// Like [`Encoded::write_to`] into memory not yet initialized (e.g. a fresh `bytes`
    /// object), with huge pages asked for first so the writes do not fault page by page.
    /// Every byte of `out` is written.
    pub fn write_uninit(&self, out: &mut [MaybeUninit<u8>]) {
        assert_eq!(out.len(), self.len(), "output buffer of the wrong size");
        memory::advise_huge(out);
        let (head, mut rest) = out.split_at_mut(self.prefix.len());
        codec::copy_init(head, &self.prefix);
        let mut pairs = Vec::with_capacity(self.chunks.len());
        for c in &self.chunks {
            let (dst, tail) = rest.split_at_mut(c.len());
            pairs.push((dst, c));
            rest = tail;
        }
        pairs.into_par_iter().for_each(|(dst, c)| c.write(dst));
    }
    /// Writes the file to `file` and makes it durable (fsync). Finished chunks are written
    /// from where they are; only chunks whose raw planes are still in the input are
    /// materialized first. Each batch's writeback to the disk starts as soon as the batch
    /// is written (Linux: `sync_file_range`), while the next batches are materialized and
    /// written, so the final fsync waits for the last batches rather than the whole file.
    /// In a pool of several threads a writer thread writes batch k while the pool
    /// materializes batch k + 1; with one thread (`threads=1`) everything runs on the
    /// calling thread.
    pub fn write_durable(&self, file: &std::fs::File) -> std::io::Result<()> {
        if rayon::current_num_threads() <= 1 {
            let mut out = BatchWriter::new(file, &self.prefix)?;
            let mut bufs = Vec::new();
            for batch in self.chunks.chunks(IO_BATCH) {
                self.materialize(batch, &mut bufs);
                out.batch(batch, &bufs)?;
            }
            return out.finish();
        }
        use std::sync::mpsc::{channel, sync_channel};
        // Batches go to the writer and their buffers come back for the next batch.
        type Batch<'c, 'a> = (&'c [ChunkBytes<'a>], Vec<Vec<u8>>);
        let (full_tx, full_rx) = sync_channel::<Batch>(1);
        let (empty_tx, empty_rx) = channel::<Vec<Vec<u8>>>();
        std::thread::scope(|scope| {
            let writer = scope.spawn(move || -> std::io::Result<()> {
                let mut out = BatchWriter::new(file, &self.prefix)?;
                for (batch, bufs) in full_rx {
                    out.batch(batch, &bufs)?;
                    let _ = empty_tx.send(bufs);
                }
                out.finish()
            });
            for batch in self.chunks.chunks(IO_BATCH) {
                let mut bufs = empty_rx.try_recv().unwrap_or_default();
                self.materialize(batch, &mut bufs);
                if full_tx.send((batch, bufs)).is_err() {
                    break; // the writer failed: its error is returned below
                }
            }
            drop(full_tx);
            writer
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("file writer thread panicked")))
        })
    }

    /// Materializes the chunks of `batch` that are not finished bytes into `bufs` (one
    /// buffer per chunk of the batch, left empty for finished ones), in parallel.
    fn materialize(&self, batch: &[ChunkBytes], bufs: &mut Vec<Vec<u8>>) {
        bufs.resize_with(bufs.len().max(batch.len()), Vec::new);
        bufs.truncate(batch.len());
        bufs.par_iter_mut().zip(batch).for_each(|(b, c)| {
            b.clear();
            if c.is_finished() {
                return;
            }
            b.reserve(c.len());
            c.write(&mut b.spare_capacity_mut()[..c.len()]);
            // SAFETY: `write` initialized all `c.len()` bytes.
            unsafe { b.set_len(c.len()) };
        });
    }

    /// The file as one buffer.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.write_uninit(&mut v.spare_capacity_mut()[..self.len()]);
        // SAFETY: `write_uninit` initialized all `self.len()` bytes.
        unsafe { v.set_len(self.len()) };
        v
    }
}

/// The writing end of [`Encoded::write_durable`]: the prefix, then batch after batch, each
/// batch's writeback started once it is written; `finish` fsyncs.
struct BatchWriter<'f> {
    file: &'f std::fs::File,
    /// Bytes written, and bytes whose writeback has been started.
    written: u64,
    started: u64,
}

impl<'f> BatchWriter<'f> {
    fn new(file: &'f std::fs::File, prefix: &[u8]) -> std::io::Result<Self> {
        let mut w = BatchWriter {
            file,
            written: 0,
            started: 0,
        };
        w.write_all(&mut [std::io::IoSlice::new(prefix)])?;
        Ok(w)
    }

    /// Writes one batch of chunks (finished ones from their bytes, the others from their
    /// materialized buffers in `bufs`) with vectored writes, and starts its writeback.
    fn batch(&mut self, batch: &[ChunkBytes], bufs: &[Vec<u8>]) -> std::io::Result<()> {
        let mut slices: Vec<std::io::IoSlice> = Vec::with_capacity(2 * batch.len());
        for (c, b) in batch.iter().zip(bufs) {
            match c {
                ChunkBytes::Done(bytes) => slices.push(std::io::IoSlice::new(bytes.as_slice())),
                ChunkBytes::Residual(r) => slices.extend(r.parts().map(std::io::IoSlice::new)),
                ChunkBytes::Planes { .. } => slices.push(std::io::IoSlice::new(b)),
            }
        }
        self.write_all(&mut slices)?;
        memory::start_writeback(self.file, self.started, self.written - self.started);
        self.started = self.written;
        Ok(())
    }

    /// Writes every byte of `slices` (retrying short writes).
    fn write_all(&mut self, mut slices: &mut [std::io::IoSlice]) -> std::io::Result<()> {
        use std::io::Write;
        let mut file = self.file;
        std::io::IoSlice::advance_slices(&mut slices, 0);
        while !slices.is_empty() {
            match file.write_vectored(slices) {
                Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.written += n as u64;
                    std::io::IoSlice::advance_slices(&mut slices, n);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Makes the file durable.
    fn finish(self) -> std::io::Result<()> {
        self.file.sync_all()
    }
}

/// Raw bytes per chunk for `dtype` under `chunk_bytes` (whole words, at least one).
pub fn chunk_size(dtype: DType, chunk_bytes: usize) -> usize {
    let word = dtype.word_size();
    (chunk_bytes / word).max(1) * word
}

/// A tensor's content identity as the file format stores it (`raw_hash`): equal for equal
/// bytes of the same dtype encoded with the same `chunk_bytes`.
pub fn content_hash(data: &[u8], dtype: DType, chunk_bytes: usize) -> u128 {
    let chunk = chunk_size(dtype, chunk_bytes);
    let hashes: Vec<u128> = data.par_chunks(chunk).map(hash::h128).collect();
    format::tensor_hash((chunk / dtype.word_size()) as u64, hashes)
}

/// Whether `t` is exactly its (non-empty) reference: then it is stored as [`Codec::Same`].
fn is_same(t: &TensorIn) -> bool {
    !t.data.is_empty()
        && t.reference
            .as_ref()
            .is_some_and(|r| r.direction.is_none() && r.data == t.data)
}

/// Encodes `tensors` and the `structure` that refers to them by index.
pub fn encode<'a>(
    tensors: &[TensorIn<'a>],
    structure: &Value,
    opts: &EncodeOptions,
) -> Result<Encoded<'a>> {
    encode_copied(
        tensors,
        structure,
        opts,
        tensors.iter().map(|_| None).collect(),
    )
}

/// [`encode`] that also copies each tensor's bytes into its buffer in `copies` (same
/// length as the tensor's data, or `None`), chunk by chunk as each is encoded, while it
/// is in cache: a private snapshot of what was saved (a store keeps one as the next
/// save's reference) for half the cost of copying it afterwards.
pub fn encode_copied<'a>(
    tensors: &[TensorIn<'a>],
    structure: &Value,
    opts: &EncodeOptions,
    mut copies: Vec<Option<&mut [u8]>>,
) -> Result<Encoded<'a>> {
    check_inputs(tensors, structure)?;
    check_copies(tensors, &copies)?;
    // Exact copies of their reference: only their hash, no chunks. (The pool is woken
    // only for work it has: each wake-up costs ~0.1 ms on a VM.)
    let same: Vec<Option<u128>> = if tensors.iter().any(|t| t.reference.is_some()) {
        parallel::install(opts.threads, || {
            tensors
                .par_iter()
                .map(|t| is_same(t).then(|| content_hash(t.data, t.dtype, opts.chunk_bytes)))
                .collect()
        })?
    } else {
        vec![None; tensors.len()]
    };
    let plans: Vec<(usize, usize)> = tensors
        .iter()
        .zip(&same)
        .map(|(t, s)| {
            let chunk = chunk_size(t.dtype, opts.chunk_bytes);
            (
                chunk,
                if s.is_some() {
                    0
                } else {
                    t.data.len().div_ceil(chunk)
                },
            )
        })
        .collect();
    let jobs: Vec<(usize, usize)> = plans
        .iter()
        .enumerate()
        .flat_map(|(i, &(_, n))| (0..n).map(move |k| (i, k)))
        .collect();
    let plan_lossy = || {
        tensors
            .iter()
            .zip(&plans)
            .map(|(t, &(chunk, _))| lossy_plan(t, chunk, opts.sparse_block))
            .collect()
    };
    let lossy: Vec<Option<LossyPlan>> = if tensors.iter().any(|t| t.lossy.is_some()) {
        parallel::install(opts.threads, plan_lossy)?
    } else {
        plan_lossy()
    };
    let sides: Vec<Option<&[u8]>> = tensors.iter().map(|t| side_data(t, tensors)).collect();
    // Tensors without chunks (same as their reference) are copied whole; the others by
    // chunk, in their jobs.
    let mut whole = Vec::new();
    let mut job_copies: Vec<Option<&mut [u8]>> = Vec::with_capacity(jobs.len());
    for ((t, &(chunk, n)), copy) in tensors.iter().zip(&plans).zip(copies.iter_mut()) {
        match copy.take() {
            Some(c) if n == 0 => whole.push((c, t.data)),
            Some(c) => job_copies.extend(c.chunks_mut(chunk).map(Some)),
            None => job_copies.extend((0..n).map(|_| None)),
        }
    }
    let coded: Vec<CodedChunk> = parallel::install(opts.threads, || {
        whole
            .into_par_iter()
            .for_each(|(dst, src)| dst.copy_from_slice(src));
        jobs.par_iter()
            .zip(job_copies)
            .enumerate()
            .map(|(j, (&(i, k), copy))| {
                let ahead = job_input(tensors, &plans, &jobs, j + 1);
                let coded = encode_one(
                    &tensors[i],
                    sides[i],
                    plans[i].0,
                    k,
                    lossy[i].as_ref(),
                    ahead,
                );
                if let Some(copy) = copy {
                    copy.copy_from_slice(job_input(tensors, &plans, &jobs, j));
                }
                coded
            })
            .collect()
    })?;
    let coded = hash_missing_references(tensors, &plans, &jobs, coded, opts.threads)?;
    let mut entries = Vec::with_capacity(tensors.len());
    let mut chunks = Vec::with_capacity(coded.len());
    let mut offset = 0u64;
    let mut it = coded.into_iter();
    for (((t, &(chunk, n)), same), lp) in tensors.iter().zip(&plans).zip(same).zip(&lossy) {
        let chunk_words = (chunk / t.dtype.word_size()) as u64;
        let parts: Vec<CodedChunk> = it.by_ref().take(n).collect();
        let entry = match (same, &t.reference) {
            (Some(raw_hash), Some(r)) => same_entry(t, r, chunk_words, raw_hash),
            _ => {
                let side = t.side.map(|s| tensors[s].name.as_str());
                let coded = (parts, lp.as_ref(), side);
                coded_entry(t, chunk_words, coded, &mut offset, &mut chunks)
            }
        };
        entries.push(entry);
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

/// Hashes the reference chunks that a predicted tensor's file entry needs and its encoder
/// did not read whole: those of chunks sent to the standalone codec by their sample, in
/// tensors with residual chunks besides (a tensor with none is stored standalone, without
/// its reference).
fn hash_missing_references<'a>(
    tensors: &[TensorIn<'a>],
    plans: &[(usize, usize)],
    jobs: &[(usize, usize)],
    mut coded: Vec<CodedChunk<'a>>,
    threads: Option<usize>,
) -> Result<Vec<CodedChunk<'a>>> {
    let mut predicted = vec![false; tensors.len()];
    for (&(i, _), c) in jobs.iter().zip(&coded) {
        predicted[i] |= c.predicted;
    }
    let missing =
        |(c, &(i, _)): &(&mut CodedChunk, &(usize, usize))| predicted[i] && c.ref_hash.is_none();
    if !coded.iter_mut().zip(jobs).any(|pair| missing(&pair)) {
        return Ok(coded); // the usual case: no pool wake-up
    }
    parallel::install(threads, || {
        coded
            .par_iter_mut()
            .zip(jobs)
            .filter(missing)
            .for_each(|(c, &(i, k))| {
                let (t, chunk) = (&tensors[i], plans[i].0);
                if let Some(r) = &t.reference {
                    let range = k * chunk..((k + 1) * chunk).min(r.data.len());
                    c.ref_hash = Some(r.source().chunk(range).with(hash::h128));
                }
            })
    })?;
    Ok(coded)
}

fn new_entry(t: &TensorIn, codec: Codec, chunk_words: u64, raw_hash: u128) -> TensorEntry {
    TensorEntry {
        name: t.name.clone(),
        dtype: t.dtype,
        shape: t.shape.clone(),
        tag: t.tag.clone(),
        codec,
        chunk_words,
        raw_hash,
        reference: None,
        params: Value::None,
        chunks: Vec::new(),
    }
}

/// The entry of a tensor identical to its reference.
fn same_entry(t: &TensorIn, r: &RefIn, chunk_words: u64, raw_hash: u128) -> TensorEntry {
    TensorEntry {
        reference: Some(format::Reference {
            checkpoint: r.checkpoint.clone(),
            tensor: r.tensor.clone(),
            raw_hash,
        }),
        ..new_entry(t, Codec::Same, chunk_words, raw_hash)
    }
}

/// The bytes of the side tensor that gives `t` its contexts, when `t` can use one: `t`
/// predicted and lossless, the side lossless (a reader decodes it exactly).
fn side_data<'a>(t: &TensorIn, tensors: &[TensorIn<'a>]) -> Option<&'a [u8]> {
    let s = &tensors[t.side?];
    (t.reference.is_some() && t.lossy.is_none() && s.lossy.is_none()).then_some(s.data)
}

/// The entry of a coded tensor (its chunks, near-lossless plan and side tensor's name);
/// appends its chunks to `chunks` at `offset`.
fn coded_entry<'a>(
    t: &TensorIn,
    chunk_words: u64,
    (mut parts, lossy, side): (Vec<CodedChunk<'a>>, Option<&LossyPlan>, Option<&str>),
    offset: &mut u64,
    chunks: &mut Vec<ChunkBytes<'a>>,
) -> TensorEntry {
    // A tensor none of whose chunks used its reference is stored standalone (its chunks
    // without the kind byte), so it decodes without the reference.
    let predicted = parts.iter().any(|c| c.predicted);
    let params = match lossy {
        Some(lp) => lp.params(&parts),
        None => predicted_params(t, side.filter(|_| parts.iter().any(|c| c.side)), predicted),
    };
    if !predicted {
        for c in parts.iter_mut() {
            if let ChunkBytes::Planes { kind_byte, .. } = &mut c.bytes {
                *kind_byte = false;
            }
        }
    }
    let ref_hashes: Vec<u128> = parts.iter().map(|c| c.ref_hash.unwrap_or(0)).collect();
    let mut list = Vec::with_capacity(parts.len());
    for c in parts {
        let len = c.bytes.len() as u64;
        list.push(ChunkEntry {
            offset: *offset,
            len,
            raw_hash: c.raw_hash,
        });
        *offset += len;
        chunks.push(c.bytes);
    }
    let reference = match (&t.reference, predicted) {
        (Some(r), true) => Some(format::Reference {
            checkpoint: r.checkpoint.clone(),
            tensor: r.tensor.clone(),
            raw_hash: format::tensor_hash(chunk_words, ref_hashes),
        }),
        _ => None,
    };
    let raw_hash = format::tensor_hash(chunk_words, list.iter().map(|c| c.raw_hash));
    let codec = match (lossy, &reference) {
        (Some(_), _) => Codec::Quantized,
        (None, Some(_)) => Codec::Predicted,
        (None, None) => Codec::Planes,
    };
    TensorEntry {
        reference,
        params,
        chunks: list,
        ..new_entry(t, codec, chunk_words, raw_hash)
    }
}

/// A lossless tensor's params: its side tensor's name if a chunk used it, and its
/// Adam-direction reference if a chunk was predicted.
fn predicted_params(t: &TensorIn, side: Option<&str>, predicted: bool) -> Value {
    let mut items = Vec::new();
    if let Some(name) = side {
        items.push((
            Value::Str(format::SIDE_KEY.to_owned()),
            Value::Str(name.to_owned()),
        ));
    }
    let direction = t.reference.as_ref().and_then(|r| r.direction.as_ref());
    if let Some(d) = direction.filter(|_| predicted) {
        let value = d.recorded.to_value();
        items.push((Value::Str(format::DIRECTION_KEY.to_owned()), value));
    }
    if items.is_empty() {
        Value::None
    } else {
        Value::Map(items)
    }
}

/// One encoded chunk and its hashes.
struct CodedChunk<'a> {
    bytes: ChunkBytes<'a>,
    /// Hash of the bytes a reader decodes (the raw bytes, unless near-lossless).
    raw_hash: u128,
    /// Hash of the reference chunk, when the tensor had a reference.
    ref_hash: Option<u128>,
    /// Whether the chunk really used the reference.
    predicted: bool,
    /// Whether the chunk's contexts came from the side tensor.
    side: bool,
    /// Largest decoding error and exactly stored elements (near-lossless only).
    max_error: f64,
    escapes: usize,
}

/// A tensor's near-lossless plan and what the file says about it.
struct LossyPlan {
    plan: Plan,
    spec: LossySpec,
    rms: f64,
}

impl LossyPlan {
    /// The tensor's params: the decoder's plan plus what the encoder did and measured.
    fn params(&self, parts: &[CodedChunk]) -> Value {
        let s = |k: &str| Value::Str(k.to_owned());
        let max_error = parts.iter().map(|c| c.max_error).fold(0.0, f64::max);
        let escapes: usize = parts.iter().map(|c| c.escapes).sum();
        let mut items = vec![
            (s("mode"), s("near_lossless")),
            (s("class"), Value::Str(self.spec.class.clone())),
            (s("error_bound"), Value::Float(self.spec.error_bound)),
            (s("prune"), Value::Float(self.spec.prune)),
            (s("rms"), Value::Float(self.rms)),
            (
                s(if self.plan.relative.is_some() {
                    "max_rel_error"
                } else {
                    "max_abs_error"
                }),
                Value::Float(max_error),
            ),
            (s("escapes"), Value::Int(escapes as i64)),
        ];
        items.extend(self.plan.to_entries());
        Value::Map(items)
    }
}

/// The quantizer plan of a tensor asked to be near-lossless, from one parallel pass over
/// its chunks; `None` (lossless) for dtypes that cannot be quantized, empty tensors and
/// tensors with no finite non-zero value.
fn lossy_plan(t: &TensorIn, chunk: usize, block: u32) -> Option<LossyPlan> {
    let spec = t.lossy.as_ref()?;
    if !quant::quantizable(t.dtype) || t.data.is_empty() {
        return None;
    }
    let reference = t.reference.as_ref().map(|r| r.data);
    let stats = t
        .data
        .par_chunks(chunk)
        .enumerate()
        .map(|(k, raw)| {
            let rc = reference.map(|r| &r[k * chunk..k * chunk + raw.len()]);
            quant::stats(raw, rc, t.dtype)
        })
        .collect::<Vec<_>>()
        .into_iter()
        .fold(quant::Stats::default(), quant::Stats::merge);
    let rms = stats.rms();
    if spec.relative {
        return relative_plan(t, spec, block, rms);
    }
    let bound = spec.error_bound * rms;
    if !(bound > 0.0 && bound.is_finite()) {
        return None;
    }
    let alpha = if reference.is_some() {
        stats.alpha()
    } else {
        0.0
    };
    let prune_threshold = quant::prune_threshold(t.data, reference, t.dtype, alpha, spec.prune);
    Some(LossyPlan {
        plan: Plan {
            step: 2.0 * bound,
            alpha,
            bound,
            prune_threshold,
            nonneg: spec.nonneg,
            block,
            relative: None,
        },
        spec: spec.clone(),
        rms,
    })
}

/// The plan of a tensor under a per-element relative bound ([`crate::relquant`]).
fn relative_plan(t: &TensorIn, spec: &LossySpec, block: u32, rms: f64) -> Option<LossyPlan> {
    let r = spec.error_bound;
    if !(r > 0.0 && r < 1.0) {
        return None;
    }
    let reference = t.reference.as_ref().map(|r| r.data);
    let (offset, base) = relquant::fit(t.data, reference, t.dtype);
    let step = relquant::step_for(r, t.dtype);
    Some(LossyPlan {
        plan: Plan {
            step: step as f64,
            alpha: if reference.is_some() { 1.0 } else { 0.0 },
            bound: r,
            prune_threshold: 0.0,
            nonneg: true,
            block,
            relative: Some(quant::Relative { step, offset, base }),
        },
        spec: spec.clone(),
        rms,
    })
}

/// Checks that `copies` pairs one buffer (or `None`) of the right size with each tensor.
fn check_copies(tensors: &[TensorIn], copies: &[Option<&mut [u8]>]) -> Result<()> {
    if copies.len() != tensors.len() {
        return Err(Error::InvalidArgument(format!(
            "{} tensors but {} copy buffers",
            tensors.len(),
            copies.len()
        )));
    }
    for (t, c) in tensors.iter().zip(copies) {
        if let Some(c) = c.as_ref().filter(|c| c.len() != t.data.len()) {
            return Err(Error::InvalidArgument(format!(
                "{:?}: copy buffer of {} bytes for {} raw bytes",
                t.name,
                c.len(),
                t.data.len()
            )));
        }
    }
    Ok(())
}

/// The input bytes of chunk job `j` (tensor, chunk index) under `plans` (chunk size,
/// chunk count per tensor); empty past the last job.
fn job_input<'a>(
    tensors: &[TensorIn<'a>],
    plans: &[(usize, usize)],
    jobs: &[(usize, usize)],
    j: usize,
) -> &'a [u8] {
    let Some(&(i, k)) = jobs.get(j) else {
        return &[];
    };
    let (data, chunk) = (tensors[i].data, plans[i].0);
    &data[k * chunk..((k + 1) * chunk).min(data.len())]
}

/// Encodes chunk `k` of `t`; `ahead` (the next job's input) is brought into the cache
/// meanwhile, where that helps (a hint only).
fn encode_one<'a>(
    t: &TensorIn<'a>,
    side: Option<&[u8]>,
    chunk: usize,
    k: usize,
    lossy: Option<&LossyPlan>,
    ahead: &[u8],
) -> CodedChunk<'a> {
    let range = k * chunk..((k + 1) * chunk).min(t.data.len());
    let raw = &t.data[range.clone()];
    if let Some(lp) = lossy {
        let rc = match &t.reference {
            Some(r) if lp.plan.alpha != 0.0 => Some(&r.data[range]),
            _ => None,
        };
        let c = lossy::encode_chunk(raw, rc, t.dtype, &lp.plan);
        return CodedChunk {
            bytes: ChunkBytes::Done(Held::Heap(c.bytes)),
            raw_hash: c.decoded_hash,
            ref_hash: rc.map(hash::h128),
            predicted: rc.is_some(),
            side: false,
            max_error: c.max_error,
            escapes: c.escapes,
        };
    }
    match t.reference.as_ref().filter(|_| worth_predicting(t)) {
        None => {
            let (planes, raw_hash) = PlaneChunk::encode_hashed(raw, t.dtype, ahead);
            CodedChunk {
                bytes: ChunkBytes::Planes {
                    planes: Box::new(planes),
                    raw,
                    kind_byte: false,
                },
                raw_hash,
                ref_hash: None,
                predicted: false,
                side: false,
                max_error: 0.0,
                escapes: 0,
            }
        }
        Some(r) => {
            let sc = side.map(|s| &s[range.clone()]);
            let c = r
                .source()
                .chunk(range)
                .with(|rc| predict::encode_chunk_hashed(raw, rc, sc, t.dtype));
            CodedChunk {
                side: c.coded.is_side(),
                predicted: c.coded.is_residual(),
                bytes: match c.coded {
                    predict::Coded::Residual(b) => ChunkBytes::Residual(b),
                    predict::Coded::Standalone(planes) => ChunkBytes::Planes {
                        planes,
                        raw,
                        kind_byte: true,
                    },
                },
                raw_hash: c.raw_hash,
                ref_hash: c.ref_hash,
                max_error: 0.0,
                escapes: 0,
            }
        }
    }
}

/// Tensors of fewer words are coded standalone even with a reference: a residual chunk's
/// up to 16 context tables, and the choice itself, cost more than residuals save on so few
/// words (a model's biases and norms), and decoding them would build those tables too.
pub const MIN_PREDICTED_WORDS: usize = 1024;

/// Whether `t` (which has a reference) is large enough to be predicted from it.
fn worth_predicting(t: &TensorIn) -> bool {
    t.data.len() / t.dtype.word_size() >= MIN_PREDICTED_WORDS
}

/// Checks that tensor `s` can give `t` its contexts (see [`TensorIn::side`]).
fn check_side(t: &TensorIn, s: usize, tensors: &[TensorIn]) -> Result<()> {
    let bad = |m: &str| Error::InvalidArgument(format!("{:?}: side tensor {s} {m}", t.name));
    let side = tensors.get(s).ok_or_else(|| bad("does not exist"))?;
    if side.side.is_some() || std::ptr::eq(side, t) {
        return Err(bad("has a side tensor itself"));
    }
    if (side.dtype, &side.shape) != (t.dtype, &t.shape) {
        return Err(bad("differs in dtype or shape"));
    }
    Ok(())
}

/// Checks that an Adam-direction reference is on a lossless float32 tensor, with
/// moments of the reference's size (checked to be the tensor's) and a valid step.
fn check_direction(t: &TensorIn) -> Result<()> {
    let Some(r) = t.reference.as_ref().filter(|r| r.direction.is_some()) else {
        return Ok(());
    };
    let bad = |m: &str| Error::InvalidArgument(format!("{:?}: adam reference {m}", t.name));
    if t.dtype != DType::F32 || t.lossy.is_some() {
        return Err(bad("needs a lossless float32 tensor"));
    }
    r.source().check().map_err(|e| match e {
        Error::InvalidArgument(m) => bad(&m),
        other => other,
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
        if let Some(r) = &t.reference {
            if r.data.len() != t.data.len() {
                return Err(Error::InvalidArgument(format!(
                    "{:?}: reference of {} bytes for {} bytes",
                    t.name,
                    r.data.len(),
                    t.data.len()
                )));
            }
        }
        if let Some(s) = t.side {
            check_side(t, s, tensors)?;
        }
        check_direction(t)?;
        if let Some(l) = &t.lossy {
            if !(l.error_bound.is_finite() && l.error_bound >= 0.0) {
                return Err(Error::InvalidArgument(format!(
                    "{:?}: error bound {} must be finite and >= 0",
                    t.name, l.error_bound
                )));
            }
            if !(0.0..1.0).contains(&l.prune) {
                return Err(Error::InvalidArgument(format!(
                    "{:?}: prune fraction {} must be in [0, 1)",
                    t.name, l.prune
                )));
            }
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

/// One decode request: tensor index, output buffer, and the reference if any (its raw
/// bytes, with the moments of an Adam-direction reference: [`RefBytes`]).
pub type DecodeJob<'a> = (usize, &'a mut [u8], Option<RefBytes<'a>>);

/// A second buffer that receives a copy of a job's decoded bytes ([`Checkpoint::decode_copied`]).
type CopyBuf<'a> = Option<&'a mut [u8]>;

/// A decode request with its copy buffer and the side tensor's decoded bytes, when the
/// tensor has one.
type SideJob<'a> = (
    usize,
    &'a mut [u8],
    Option<RefBytes<'a>>,
    Option<&'a [u8]>,
    CopyBuf<'a>,
);

/// One chunk to decode: its tensor, its index entry, its output and the chunk of the copy
/// buffer, its reference and side slices and its near-lossless plan.
type ChunkJob<'a, 'b> = (
    &'a TensorEntry,
    &'a ChunkEntry,
    (&'b mut [u8], CopyBuf<'b>),
    (Option<RefChunk<'b>>, Option<&'b [u8]>),
    Option<&'b Plan>,
);

/// Checks that `source` is the reference the tensor was encoded against.
fn check_reference(t: &TensorEntry, r: &format::Reference, source: &RefSource) -> Result<()> {
    if source.tensor_hash(t.chunk_raw_bytes(), t.chunk_words) != r.raw_hash {
        return Err(Error::Reference(format!(
            "tensor {:?}: the reference given is not {:?} of checkpoint {:?} it was encoded against",
            t.name, r.tensor, r.checkpoint
        )));
    }
    Ok(())
}

/// A parsed checkpoint over borrowed file bytes. Parsing checks the header only; tensor
/// data is verified chunk by chunk as it is decoded.
#[derive(Debug)]
pub struct Checkpoint<'a> {
    header: Cow<'a, Header>,
    data: &'a [u8],
    /// Whether a failed decode hashes its references to name a wrong one (see
    /// [`Checkpoint::trust_references`]).
    check_references: bool,
}

impl<'a> Checkpoint<'a> {
    /// Parses and validates the header of `file`.
    pub fn parse(file: &'a [u8]) -> Result<Checkpoint<'a>> {
        let (header, data) = Header::parse(file)?;
        Ok(Checkpoint {
            header: Cow::Owned(header),
            data,
            check_references: true,
        })
    }

    /// A checkpoint over `file` with `header`, which [`Header::parse`] returned for these
    /// bytes before: a reader that keeps the parsed index decodes without parsing it again.
    /// The data section is the last `header.data_len` bytes of `file`. Decoding stays
    /// safe with any header (chunk spans were checked against `data_len` when it was
    /// parsed, and every decoded chunk is verified against its hash), but only the
    /// header of these bytes decodes them.
    pub fn with_header(header: &'a Header, file: &'a [u8]) -> Result<Checkpoint<'a>> {
        let start = usize::try_from(header.data_len)
            .ok()
            .and_then(|n| file.len().checked_sub(n))
            .ok_or_else(|| {
                Error::Truncated(format!(
                    "{} bytes, the data section alone is {}",
                    file.len(),
                    header.data_len
                ))
            })?;
        Ok(Checkpoint {
            header: Cow::Borrowed(header),
            data: &file[start..],
            check_references: true,
        })
    }

    /// Decodes without hashing a predicted tensor's reference even when decoding fails,
    /// for callers whose references are known to be the ones encoded against (a store's
    /// own decodes, whose bytes were verified when they were made). A wrong reference is
    /// still caught, by each chunk's check of the decoded bytes, as corrupt data
    /// (`Checksum`) instead of `Reference`; tensors stored as their reference (codec
    /// "same") are still hashed. Without it, references are hashed only when a decode
    /// fails, to name a wrong one (`Reference`).
    pub fn trust_references(mut self) -> Self {
        self.check_references = false;
        self
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
        self.decode_with(
            jobs.into_iter().map(|(i, o)| (i, o, None)).collect(),
            threads,
        )
    }

    /// Like [`Checkpoint::decode_into`], each job also offering the reference tensor's raw
    /// bytes (required for predicted tensors; checked against the stored reference hash).
    /// A tensor with a side tensor ([`TensorEntry::side`]) needs that tensor among the
    /// jobs: side tensors are decoded first, then the tensors that use them.
    pub fn decode_with(&self, jobs: Vec<DecodeJob<'_>>, threads: Option<usize>) -> Result<()> {
        let copies = jobs.iter().map(|_| None).collect();
        self.decode_copied(jobs, copies, threads)
    }

    /// [`Checkpoint::decode_with`] that also writes each job's decoded bytes into its
    /// buffer in `copies` (same length as its output, or `None`), chunk by chunk right
    /// after the chunk is decoded and verified, while it is still in cache: a second,
    /// independent copy for half the cost of copying the output afterwards (a store keeps
    /// one as the next checkpoint's reference while the caller owns the other).
    pub fn decode_copied(
        &self,
        jobs: Vec<DecodeJob<'_>>,
        copies: Vec<Option<&mut [u8]>>,
        threads: Option<usize>,
    ) -> Result<()> {
        if copies.len() != jobs.len() {
            return Err(Error::InvalidArgument(format!(
                "{} jobs but {} copy buffers",
                jobs.len(),
                copies.len()
            )));
        }
        let mut sides = Vec::with_capacity(jobs.len());
        for (i, _, _) in &jobs {
            sides.push(match self.entry(*i)?.side() {
                Some(name) => Some(self.find(name)?),
                None => None,
            });
        }
        let (mut first, mut then): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for ((job, copy), side) in jobs.into_iter().zip(copies).zip(sides) {
            match side {
                Some(s) => then.push((job, copy, s)),
                None => first.push((job, copy)),
            }
        }
        let pass: Vec<SideJob> = first
            .iter_mut()
            .map(|((i, out, r), copy)| (*i, &mut **out, *r, None, copy.take()))
            .collect();
        self.decode_pass(pass, threads)?;
        let mut pass = Vec::with_capacity(then.len());
        for ((i, out, r), copy, s) in then {
            let side = first
                .iter()
                .find(|j| j.0 .0 == s)
                .map(|j| &*j.0 .1)
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{:?} takes its contexts from {:?}: decode both together",
                        self.header.tensors[i].name, self.header.tensors[s].name
                    ))
                })?;
            pass.push((i, out, r, Some(side), copy));
        }
        self.decode_pass(pass, threads)
    }

    /// Decodes jobs that need nothing decoded before them, all chunks in parallel.
    fn decode_pass(&self, jobs: Vec<SideJob<'_>>, threads: Option<usize>) -> Result<()> {
        if jobs.is_empty() {
            return Ok(());
        }
        let mut work: Vec<ChunkJob> = Vec::new();
        // References of stored-as-reference tensors, hashed first; those of predicted
        // tensors, hashed only if decoding fails (see below).
        let (mut refs, mut unchecked) = (Vec::new(), Vec::new());
        let plans: Vec<Option<Plan>> = jobs
            .iter()
            .map(|(i, _, _, _, _)| self.entry(*i)?.plan())
            .collect::<Result<_>>()?;
        let mut copies: Vec<(&mut [u8], &[u8])> = Vec::new();
        for ((i, out, reference, side, copy), plan) in jobs.into_iter().zip(&plans) {
            let t = self.entry(i)?;
            memory::advise_huge(out);
            let sizes = [Some(out.len()), copy.as_ref().map(|c| c.len())];
            if let Some(len) = sizes
                .into_iter()
                .flatten()
                .find(|&n| n as u64 != t.raw_bytes())
            {
                return Err(Error::InvalidArgument(format!(
                    "{:?}: buffer of {len} bytes for {} raw bytes",
                    t.name,
                    t.raw_bytes()
                )));
            }
            let reference = match (&t.reference, reference) {
                (None, _) => None,
                (Some(r), Some(given)) if given.data.len() == out.len() => {
                    let source = RefSource::decoding(t, r, given)?;
                    if t.codec == Codec::Same {
                        refs.push((t, r, source));
                    } else if self.check_references {
                        unchecked.push((t, r, source));
                    }
                    Some(source)
                }
                (Some(r), _) => {
                    return Err(Error::Reference(format!(
                        "tensor {:?} is predicted from {:?} of checkpoint {:?}: pass that tensor as its reference",
                        t.name, r.tensor, r.checkpoint
                    )))
                }
            };
            if let (Codec::Same, Some(source)) = (t.codec, reference) {
                // (A same tensor has no Adam direction: its reference is its bytes.)
                copies.push((out, source.data()));
                copies.extend(copy.map(|c| (c, source.data())));
                continue;
            }
            let step = t.chunk_raw_bytes();
            let mut copy_chunks = copy.map(|c| c.chunks_mut(step));
            for (k, (c, dst)) in t.chunks.iter().zip(out.chunks_mut(step)).enumerate() {
                let at = k * step..k * step + dst.len();
                let rc = reference.map(|source| source.chunk(at.clone()));
                let sc = side.map(|d| &d[at]);
                let cc = copy_chunks.as_mut().and_then(Iterator::next);
                work.push((t, c, (dst, cc), (rc, sc), plan.as_ref()));
            }
        }
        if !refs.is_empty() || !copies.is_empty() {
            parallel::install(threads, || {
                refs.par_iter()
                    .try_for_each(|(t, r, source)| check_reference(t, r, source))?;
                // A same tensor is its reference, whose hash (= the tensor's) was just
                // checked.
                copies
                    .into_par_iter()
                    .for_each(|(dst, src)| dst.copy_from_slice(src));
                Ok::<_, Error>(())
            })??;
        }
        // Each kind's largest chunks first: pairs then hold chunks of one size (two
        // streams that end together) and the last jobs to finish are small ones. Stable:
        // equal sizes keep file order.
        work.sort_by_key(|job| (kind_rank(job), std::cmp::Reverse(job.2 .0.len())));
        let decoded = parallel::drain(threads, by_twos(work), |group| self.decode_group(group));
        // A predicted chunk decoded against the wrong reference fails its own checks or
        // the check of its decoded bytes, so right references cost no hash pass; on a
        // failure the references are hashed to name a wrong one as such.
        if decoded.is_err() {
            parallel::install(threads, || {
                unchecked
                    .par_iter()
                    .try_for_each(|(t, r, source)| check_reference(t, r, source))
            })??;
        }
        decoded
    }

    /// Decodes a group of [`by_twos`]: two standalone or two predicted chunks together,
    /// else one by one.
    fn decode_group(&self, group: Vec<ChunkJob<'_, '_>>) -> Result<()> {
        let mut jobs = group.into_iter();
        let (a, b) = match (jobs.next(), jobs.next()) {
            (Some(a), Some(b)) => (a, b),
            (a, b) => return self.one_by_one(a.into_iter().chain(b).chain(jobs)),
        };
        if standalone(&a) && standalone(&b) {
            let [ra, rb] = codec::decode_two_hashed(
                (self.coded(a.1), a.0.dtype, &mut *a.2 .0),
                (self.coded(b.1), b.0.dtype, &mut *b.2 .0),
            );
            self.finish_chunk(a, ra.map(Some))?;
            return self.finish_chunk(b, rb.map(Some));
        }
        let (Some(rca), Some(rcb)) = (predicted(&a), predicted(&b)) else {
            return self.one_by_one([a, b].into_iter().chain(jobs));
        };
        let [ra, rb] = rca.with(|rca| {
            rcb.with(|rcb| {
                predict::decode_two_side_hashed(
                    (self.coded(a.1), rca, a.3 .1, a.0.dtype, &mut *a.2 .0),
                    (self.coded(b.1), rcb, b.3 .1, b.0.dtype, &mut *b.2 .0),
                )
            })
        });
        self.finish_chunk(a, ra)?;
        self.finish_chunk(b, rb)
    }

    /// Decodes chunk jobs one after the other.
    fn one_by_one<'t, 'b>(&self, jobs: impl Iterator<Item = ChunkJob<'t, 'b>>) -> Result<()> {
        for mut job in jobs {
            let decoded = self.decode_chunk(&mut job);
            self.finish_chunk(job, decoded)?;
        }
        Ok(())
    }

    fn entry(&self, i: usize) -> Result<&TensorEntry> {
        self.header
            .tensors
            .get(i)
            .ok_or_else(|| Error::InvalidArgument(format!("no tensor index {i}")))
    }

    /// Decodes one tensor into a new buffer.
    pub fn decode_tensor(&self, i: usize, threads: Option<usize>) -> Result<Vec<u8>> {
        let t = self.entry(i)?;
        let mut out = vec![0u8; t.raw_bytes() as usize];
        self.decode_into(vec![(i, &mut out)], threads)?;
        Ok(out)
    }

    /// The coded bytes of chunk `c`.
    fn coded(&self, c: &ChunkEntry) -> &[u8] {
        &self.data[c.offset as usize..(c.offset + c.len) as usize]
    }

    /// Decodes one chunk job into its output; returns the output's hash when the decoder
    /// computed it on the way.
    fn decode_chunk(&self, job: &mut ChunkJob<'_, '_>) -> Result<Option<u128>> {
        let (t, c, (dst, _), (reference, side), plan) = job;
        let comp = self.coded(c);
        match (plan, reference) {
            (Some(plan), rc) => refs::with_chunk(*rc, |rc| {
                lossy::decode_chunk(comp, rc, t.dtype, plan, dst).map(|_| None)
            }),
            (None, Some(rc)) => {
                rc.with(|rc| predict::decode_chunk_side_hashed(comp, rc, *side, t.dtype, dst))
            }
            (None, None) => codec::decode_chunk_hashed(comp, t.dtype, dst).map(Some),
        }
    }

    /// Checks a decoded chunk against its stored hash (naming the chunk in any error) and
    /// fills its copy buffer.
    fn finish_chunk(&self, job: ChunkJob<'_, '_>, decoded: Result<Option<u128>>) -> Result<()> {
        let (t, c, (dst, copy), _, _) = job;
        let at = |what: &str| format!("tensor {:?} chunk at offset {}: {what}", t.name, c.offset);
        let hashed = decoded.map_err(|e| match e {
            Error::Corrupt(m) | Error::Truncated(m) => Error::Corrupt(at(&m)),
            other => other,
        })?;
        if hashed.unwrap_or_else(|| hash::h128(dst)) != c.raw_hash {
            return Err(Error::Checksum(at(
                "decoded bytes differ from the stored hash",
            )));
        }
        if let Some(copy) = copy {
            copy.copy_from_slice(dst);
        }
        Ok(())
    }
}

/// Whether a chunk job decodes with the standalone codec (no reference, not lossy).
fn standalone(job: &ChunkJob<'_, '_>) -> bool {
    job.4.is_none() && job.3 .0.is_none()
}

/// The reference of a chunk job that decodes with the prediction codec (not lossy).
fn predicted<'b>(job: &ChunkJob<'_, 'b>) -> Option<RefChunk<'b>> {
    job.3 .0.filter(|_| job.4.is_none())
}

/// Decode order of a chunk job's kind: lossy (decoded alone), standalone, predicted.
fn kind_rank(job: &ChunkJob<'_, '_>) -> u8 {
    if standalone(job) {
        1
    } else if predicted(job).is_some() {
        2
    } else {
        0
    }
}

/// Groups chunk jobs for decoding: consecutive standalone chunks in twos, which
/// [`codec::decode_two_hashed`] decodes together (faster than one after the other), and
/// consecutive predicted ones in twos ([`predict::decode_two_side_hashed`]); the rest
/// alone.
fn by_twos<'a, 'b>(work: Vec<ChunkJob<'a, 'b>>) -> Vec<Vec<ChunkJob<'a, 'b>>> {
    let pair = |a: &ChunkJob, b: &ChunkJob| {
        (standalone(a) && standalone(b)) || (predicted(a).is_some() && predicted(b).is_some())
    };
    let mut groups: Vec<Vec<ChunkJob>> = Vec::with_capacity(work.len());
    for job in work {
        match groups.last_mut() {
            Some(g) if g.len() == 1 && pair(&g[0], &job) => g.push(job),
            _ => groups.push(vec![job]),
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tensor<'a>(name: &str, data: &'a [u8], reference: Option<&'a [u8]>) -> TensorIn<'a> {
        TensorIn {
            name: name.into(),
            dtype: DType::F32,
            shape: vec![(data.len() / 4) as u64],
            tag: String::new(),
            data,
            reference: reference.map(|d| RefIn {
                checkpoint: "base".into(),
                tensor: "w".into(),
                data: d,
                direction: None,
            }),
            lossy: None,
            side: None,
        }
    }

    fn file(tensors: &[TensorIn]) -> Vec<u8> {
        let structure = Value::List((0..tensors.len() as u64).map(Value::Tensor).collect());
        let opts = EncodeOptions {
            chunk_bytes: 4096,
            ..Default::default()
        };
        encode(tensors, &structure, &opts).unwrap().to_vec()
    }

    #[test]
    fn exact_copy_of_the_reference_is_stored_as_same() {
        let a: Vec<u8> = (0..40_000u32)
            .flat_map(|i| (i as f32).to_le_bytes())
            .collect();
        let mut b = a.clone();
        b[5] ^= 1;
        let f = file(&[tensor("x", &a, Some(&a)), tensor("y", &b, Some(&a))]);
        assert_eq!(u16::from_le_bytes([f[10], f[11]]), format::MINOR);
        let ck = Checkpoint::parse(&f).unwrap();
        let (x, y) = (&ck.tensors()[0], &ck.tensors()[1]);
        assert_eq!((x.codec, x.chunks.len()), (Codec::Same, 0));
        assert_eq!(x.raw_hash, content_hash(&a, DType::F32, 4096));
        assert_eq!(y.codec, Codec::Predicted);
        let mut out = vec![0u8; a.len()];
        ck.decode_with(vec![(0, &mut out, Some(RefBytes::from(&a[..])))], None)
            .unwrap();
        assert_eq!(out, a);
        let err = ck.decode_with(vec![(0, &mut out, Some(RefBytes::from(&b[..])))], None);
        assert!(matches!(err, Err(Error::Reference(_))));
        assert!(matches!(
            ck.decode_into(vec![(0, &mut out)], None),
            Err(Error::Reference(_))
        ));
        let plain = file(&[tensor("x", &a, None)]);
        assert_eq!(u16::from_le_bytes([plain[10], plain[11]]), format::MINOR);
        let same_only = file(&[tensor("x", &a, Some(&a))]);
        assert_eq!(u16::from_le_bytes([same_only[10], same_only[11]]), 1);
    }

    /// A predicted tensor whose chunks are partly residual, partly standalone (written
    /// behind their kind byte only when the file is) decodes exactly with its reference;
    /// one whose chunks are all standalone is stored without kind bytes and decodes
    /// without it. Every writer gives the same bytes.
    #[test]
    fn predicted_tensors_mix_residual_and_standalone_chunks() {
        let mut rng = crate::testing::Lcg(11);
        let n = 3 * 1024; // three 4 KiB chunks
        let reference: Vec<f32> = (0..n).map(|_| rng.centered()).collect();
        let mut close = reference.clone();
        close.iter_mut().for_each(|v| *v *= 1.0 + 1e-6);
        // The middle chunk has nothing to do with its reference.
        close[1024..2048]
            .iter_mut()
            .for_each(|v| *v = rng.centered() * 1e3);
        let far: Vec<f32> = (0..n).map(|_| rng.centered() * 1e3).collect();
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (r, x, y) = (bytes(&reference), bytes(&close), bytes(&far));
        let tensors = [tensor("x", &x, Some(&r)), tensor("y", &y, Some(&r))];
        let f = file(&tensors);
        let ck = Checkpoint::parse(&f).unwrap();
        let (tx, ty) = (&ck.tensors()[0], &ck.tensors()[1]);
        assert_eq!(tx.codec, Codec::Predicted);
        let kinds: Vec<u8> = tx.chunks.iter().map(|c| ck.coded(c)[0]).collect();
        assert_eq!(kinds[1], predict::KIND_STANDALONE);
        assert!(kinds[0] != predict::KIND_STANDALONE && kinds[2] != predict::KIND_STANDALONE);
        assert_eq!(ty.codec, Codec::Planes);
        let mut out = vec![0u8; x.len()];
        ck.decode_with(vec![(0, &mut out, Some(RefBytes::from(&r[..])))], None)
            .unwrap();
        assert_eq!(out, x);
        ck.decode_into(vec![(1, &mut out)], None).unwrap();
        assert_eq!(out, y);
        let opts = EncodeOptions {
            chunk_bytes: 4096,
            ..Default::default()
        };
        let structure = Value::List(vec![Value::Tensor(0), Value::Tensor(1)]);
        let enc = encode(&tensors, &structure, &opts).unwrap();
        let dir = std::env::temp_dir().join(format!("fastckpt-mixed-{}", std::process::id()));
        let written = std::fs::File::create(&dir).and_then(|file| enc.write_durable(&file));
        let on_disk = std::fs::read(&dir);
        let _ = std::fs::remove_file(&dir);
        written.unwrap();
        assert_eq!(on_disk.unwrap(), f);
    }

    /// A tensor below `MIN_PREDICTED_WORDS` is coded standalone even with a close
    /// reference (no reference recorded, decodes without one); one at the size is predicted.
    #[test]
    fn small_tensors_are_not_predicted() {
        let mut rng = crate::testing::Lcg(13);
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        for (n, predicted) in [
            (MIN_PREDICTED_WORDS - 1, false),
            (MIN_PREDICTED_WORDS, true),
        ] {
            let reference: Vec<f32> = (0..n).map(|_| rng.centered()).collect();
            let close: Vec<f32> = reference.iter().map(|v| v * (1.0 + 1e-6)).collect();
            let (r, x) = (bytes(&reference), bytes(&close));
            let f = file(&[tensor("x", &x, Some(&r))]);
            let ck = Checkpoint::parse(&f).unwrap();
            let t = &ck.tensors()[0];
            assert_eq!(t.codec == Codec::Predicted, predicted, "{n} words");
            assert_eq!(t.reference.is_some(), predicted);
            let mut out = vec![0u8; x.len()];
            let reference = predicted.then_some(&r[..]);
            ck.decode_with(vec![(0, &mut out, reference.map(RefBytes::from))], None)
                .unwrap();
            assert_eq!(out, x);
        }
    }

    /// A sampled chunk that goes standalone before its reference is read whole, in a
    /// predicted tensor: the file still records the whole reference's content hash (the
    /// container hashes that reference chunk itself), and a wrong reference is named.
    #[test]
    fn sampled_standalone_chunks_keep_the_reference_hash() {
        let mut rng = crate::testing::Lcg(12);
        let words = predict::SAMPLED_WORDS;
        let n = 3 * words;
        let reference: Vec<f32> = (0..n).map(|_| rng.centered()).collect();
        let mut close = reference.clone();
        close.iter_mut().for_each(|v| *v *= 1.0 + 1e-6);
        close[words..2 * words]
            .iter_mut()
            .for_each(|v| *v = rng.centered() * 1e3);
        let bytes = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let (r, x) = (bytes(&reference), bytes(&close));
        let tensors = [tensor("x", &x, Some(&r))];
        let opts = EncodeOptions {
            chunk_bytes: 4 * words,
            ..Default::default()
        };
        let structure = Value::List(vec![Value::Tensor(0)]);
        let f = encode(&tensors, &structure, &opts).unwrap().to_vec();
        let ck = Checkpoint::parse(&f).unwrap();
        let t = &ck.tensors()[0];
        let kinds: Vec<u8> = t.chunks.iter().map(|c| ck.coded(c)[0]).collect();
        assert_eq!(kinds[1], predict::KIND_STANDALONE);
        assert!(kinds[0] != predict::KIND_STANDALONE && kinds[2] != predict::KIND_STANDALONE);
        let recorded = t.reference.as_ref().expect("a reference").raw_hash;
        assert_eq!(recorded, content_hash(&r, DType::F32, 4 * words));
        let mut out = vec![0u8; x.len()];
        ck.decode_with(vec![(0, &mut out, Some(RefBytes::from(&r[..])))], None)
            .unwrap();
        assert_eq!(out, x);
        // A reference wrong where a residual chunk uses it is named as such (by the hash
        // that covers the standalone chunk's reference too).
        let mut wrong = r.clone();
        wrong[7] ^= 1;
        let err = ck.decode_with(vec![(0, &mut out, Some(RefBytes::from(&wrong[..])))], None);
        assert!(matches!(err, Err(Error::Reference(_))), "{err:?}");
    }

    /// A predicted tensor with a side tensor records its name, decodes together with it
    /// (in either job order) and refuses to decode without it; bad sides are refused.
    #[test]
    fn side_tensor_is_recorded_and_needed() {
        let mut rng = crate::testing::Lcg(3);
        let n = 40_000usize;
        let f = |v: Vec<f32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let v0: Vec<f32> = (0..n).map(|_| 1e-6 * (1.0 + rng.centered())).collect();
        let m: Vec<f32> = (0..n)
            .map(|i| {
                if i % 3 == 0 {
                    0.0
                } else {
                    rng.centered() * 1e-3
                }
            })
            .collect();
        let v1: Vec<f32> = v0
            .iter()
            .zip(&m)
            .map(|(v, g)| v * 0.98 + 0.08 * g * g)
            .collect();
        let (v0, m, v1) = (f(v0), f(m), f(v1));
        let m0: Vec<u8> = m.iter().map(|b| b ^ 1).collect();
        let mut sq = tensor("v", &v1, Some(&v0));
        sq.side = Some(0);
        let tensors = [tensor("m", &m, Some(&m0)), sq];
        let structure = Value::List(vec![Value::Tensor(0), Value::Tensor(1)]);
        let opts = EncodeOptions::default();
        let bytes = encode(&tensors, &structure, &opts).unwrap().to_vec();
        let ck = Checkpoint::parse(&bytes).unwrap();
        assert_eq!(ck.tensors()[1].side(), Some("m"));
        assert_eq!(ck.tensors()[0].side(), None);
        let (mut a, mut b) = (vec![0u8; m.len()], vec![0u8; v1.len()]);
        ck.decode_with(
            vec![
                (1, &mut b, Some(RefBytes::from(&v0[..]))),
                (0, &mut a, Some(RefBytes::from(&m0[..]))),
            ],
            None,
        )
        .unwrap();
        assert_eq!((a.as_slice(), b.as_slice()), (m.as_slice(), v1.as_slice()));
        let alone = ck.decode_with(vec![(1, &mut b, Some(RefBytes::from(&v0[..])))], None);
        assert!(matches!(alone, Err(Error::InvalidArgument(_))));
        // A header naming a missing side, the tensor itself, or extra params is refused.
        for params in [("side", "nope"), ("side", "v"), ("sides", "m")] {
            let (mut header, data) = Header::parse(&bytes).unwrap();
            header.tensors[1].params = Value::Map(vec![(
                Value::Str(params.0.into()),
                Value::Str(params.1.into()),
            )]);
            let mut edited = header.to_prefix_bytes();
            edited.extend_from_slice(data);
            let err = Checkpoint::parse(&edited).unwrap_err();
            assert!(matches!(err, Error::Format(_)), "{params:?}: {err:?}");
        }
        // A side of another shape, a chain of sides and a missing tensor are refused.
        let short = &m[..400];
        let mut bad = tensors.clone();
        bad[0].data = short;
        bad[0].shape = vec![100];
        bad[0].reference = None;
        assert!(encode(&bad, &structure, &opts).is_err());
        let mut chain = tensors.clone();
        chain[0].side = Some(1);
        assert!(encode(&chain, &structure, &opts).is_err());
        let mut missing = tensors.clone();
        missing[1].side = Some(7);
        assert!(encode(&missing, &structure, &opts).is_err());
    }

    /// An Adam-direction reference is recorded in the params and decodes from the
    /// reference and its moments, each chunk against its share of the prediction (the
    /// reference hash is that of the prediction); missing, resized or wrong moments are
    /// errors, as are moments offered for a tensor without a direction. It is refused on a
    /// lossy or non-float32 tensor, with a bad step or moments of another size, and in a
    /// header with malformed params.
    #[test]
    fn adam_direction_is_recorded_and_checked() {
        use crate::predict::direction;
        let mut rng = crate::testing::Lcg(5);
        let n = 40_000usize;
        let f = |v: Vec<f32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let w0 = f((0..n).map(|_| rng.centered() * 0.05).collect());
        let m = f((0..n).map(|_| rng.centered() * 1e-3).collect());
        let v = f((0..n).map(|_| 1e-7 * (1.5 + rng.centered())).collect());
        let mut p = vec![0u8; w0.len()];
        direction::predict(&w0, &m, &v, -1e-4, &mut p).unwrap();
        let w1: Vec<u8> = p
            .iter()
            .enumerate()
            .map(|(i, b)| if i % 4 == 0 { b ^ 3 } else { *b })
            .collect();
        let adam = format::Direction {
            m: "opt/m".into(),
            v: "opt/v".into(),
            step: -1e-4,
        };
        let adam_in = AdamIn {
            recorded: adam.clone(),
            m: &m,
            v: &v,
        };
        let mut t = tensor("w", &w1, Some(&w0));
        t.reference.as_mut().unwrap().direction = Some(adam_in.clone());
        let bytes = file(&[t.clone()]);
        // Coding against the whole prediction made beforehand gives the same chunks.
        let whole = file(&[tensor("w", &w1, Some(&p))]);
        assert_eq!(
            Header::parse(&bytes).unwrap().1,
            Header::parse(&whole).unwrap().1
        );
        let ck = Checkpoint::parse(&bytes).unwrap();
        let entry = &ck.tensors()[0];
        assert_eq!(
            (entry.codec, entry.direction()),
            (Codec::Predicted, Some(adam.clone()))
        );
        assert!(entry.chunks.len() > 10, "{} chunks", entry.chunks.len());
        assert_eq!(
            entry.reference.as_ref().unwrap().raw_hash,
            content_hash(&p, DType::F32, 4096)
        );
        let with = |data: &'static [u8], mv: Option<(&'static [u8], &'static [u8])>| {
            Some(RefBytes { data, moments: mv })
        };
        let leak = |b: &Vec<u8>| -> &'static [u8] { Box::leak(b.clone().into_boxed_slice()) };
        let (w0s, ms, vs, ps) = (leak(&w0), leak(&m), leak(&v), leak(&p));
        let mut out = vec![0u8; w1.len()];
        ck.decode_with(vec![(0, &mut out, with(w0s, Some((ms, vs))))], Some(2))
            .unwrap();
        assert_eq!(out, w1);
        for (given, untrusted) in [
            (with(w0s, None), false),                 // no moments
            (with(w0s, Some((ms, &vs[4..]))), false), // resized
            (with(w0s, Some((vs, ms))), true),        // wrong: swapped
            (with(ps, Some((ms, vs))), true),         // wrong: the prediction as the weight
        ] {
            let err = ck.decode_with(vec![(0, &mut out, given)], None);
            assert!(matches!(err, Err(Error::Reference(_))), "{err:?}");
            if untrusted {
                let ck = Checkpoint::parse(&bytes).unwrap().trust_references();
                let err = ck.decode_with(vec![(0, &mut out, given)], None);
                assert!(err.is_err(), "trusted: {err:?}");
            }
        }
        // Moments for a tensor without a direction are a caller's mistake.
        let plain = file(&[tensor("w", &w1, Some(&w0))]);
        let ck = Checkpoint::parse(&plain).unwrap();
        let err = ck.decode_with(vec![(0, &mut out, with(w0s, Some((ms, vs))))], None);
        assert!(matches!(err, Err(Error::InvalidArgument(_))), "{err:?}");
        // Equal to its prediction: still predicted (a "same" tensor has no params).
        let mut same = tensor("w", &p, Some(&w0));
        same.reference.as_mut().unwrap().direction = Some(adam_in.clone());
        let ck_bytes = file(&[same]);
        assert_eq!(
            Checkpoint::parse(&ck_bytes).unwrap().tensors()[0].codec,
            Codec::Predicted
        );
        // Refused inputs.
        let structure = Value::List(vec![Value::Tensor(0)]);
        let opts = EncodeOptions::default();
        let mut lossy = t.clone();
        lossy.lossy = Some(LossySpec {
            class: "weights".into(),
            error_bound: 0.01,
            prune: 0.0,
            nonneg: false,
            relative: false,
        });
        let mut wide = t.clone();
        wide.dtype = DType::F64;
        wide.shape = vec![n as u64 / 2];
        let mut zero = t.clone();
        let d = zero.reference.as_mut().unwrap().direction.as_mut().unwrap();
        d.recorded.step = 0.0;
        let mut short = t.clone();
        short
            .reference
            .as_mut()
            .unwrap()
            .direction
            .as_mut()
            .unwrap()
            .v = &v[4..];
        for bad in [lossy, wide, zero, short] {
            let err = encode(&[bad], &structure, &opts).err();
            assert!(matches!(err, Some(Error::InvalidArgument(_))), "{err:?}");
        }
        // Malformed params in a header.
        let s = |x: &str| Value::Str(x.into());
        let good = adam.to_value();
        for params in [
            Value::Map(vec![(s("adam"), Value::List(vec![s("m"), s("v")]))]),
            Value::Map(vec![(
                s("adam"),
                Value::List(vec![s("m"), s("v"), Value::Float(f64::NAN)]),
            )]),
            Value::Map(vec![(
                s("adam"),
                Value::List(vec![s("m"), s("v"), Value::Float(1e30)]),
            )]),
            Value::Map(vec![(
                s("adam"),
                Value::List(vec![s("m"), Value::Int(1), Value::Float(1.0)]),
            )]),
            Value::Map(vec![(s("adam"), good.clone()), (s("adam"), good.clone())]),
            Value::Map(vec![(s("adam"), good.clone()), (s("other"), good.clone())]),
            Value::Map(vec![]),
            good.clone(),
        ] {
            let (mut header, data) = Header::parse(&bytes).unwrap();
            header.tensors[0].params = params.clone();
            let mut edited = header.to_prefix_bytes();
            edited.extend_from_slice(data);
            let err = Checkpoint::parse(&edited).unwrap_err();
            assert!(matches!(err, Error::Format(_)), "{params:?}: {err:?}");
        }
    }

    /// With trusted references, the right ones decode; a wrong one is still an error, never
    /// other data: a checksum error for a predicted tensor, a reference error for a
    /// tensor stored as its reference.
    #[test]
    fn trusted_references_are_still_verified_by_the_output() {
        let a: Vec<u8> = (0..40_000u32)
            .flat_map(|i| (i as f32).sqrt().to_le_bytes())
            .collect();
        let b: Vec<u8> = a.iter().map(|v| v ^ 1).collect();
        let mut wrong = a.clone();
        wrong[4001] ^= 0x10;
        let f = file(&[tensor("same", &a, Some(&a)), tensor("pred", &b, Some(&a))]);
        let ck = Checkpoint::parse(&f).unwrap().trust_references();
        let mut out = vec![0u8; a.len()];
        ck.decode_with(vec![(1, &mut out, Some(RefBytes::from(&a[..])))], None)
            .unwrap();
        assert_eq!(out, b);
        ck.decode_with(vec![(0, &mut out, Some(RefBytes::from(&a[..])))], None)
            .unwrap();
        assert_eq!(out, a);
        let pred = ck.decode_with(vec![(1, &mut out, Some(RefBytes::from(&wrong[..])))], None);
        assert!(matches!(pred, Err(Error::Checksum(_))), "{pred:?}");
        let same = ck.decode_with(vec![(0, &mut out, Some(RefBytes::from(&wrong[..])))], None);
        assert!(matches!(same, Err(Error::Reference(_))), "{same:?}");
        let checked = Checkpoint::parse(&f).unwrap();
        let pred = checked.decode_with(vec![(1, &mut out, Some(RefBytes::from(&wrong[..])))], None);
        assert!(matches!(pred, Err(Error::Reference(_))), "{pred:?}");
    }

    /// A checkpoint over a header parsed before decodes what a fresh parse decodes; a
    /// file shorter than the header's data section is named as truncated, and the header
    /// over other bytes (one bit of the data flipped) fails a chunk check.
    #[test]
    fn checkpoint_over_a_parsed_header() {
        let a: Vec<u8> = (0..30_000u32)
            .flat_map(|i| (i as f32).sqrt().to_le_bytes())
            .collect();
        let fa = file(&[tensor("x", &a, None)]);
        let mut fb = fa.clone();
        let mid = fb.len() - 2000;
        fb[mid] ^= 0x40;
        let (header, _) = Header::parse(&fa).unwrap();
        let mut out = vec![0u8; a.len()];
        let ck = Checkpoint::with_header(&header, &fa).unwrap();
        ck.decode_into(vec![(0, &mut out)], Some(2)).unwrap();
        assert_eq!(out, a);
        let short = &fa[fa.len() - header.data_len as usize + 1..];
        let err = Checkpoint::with_header(&header, short).unwrap_err();
        assert!(matches!(err, Error::Truncated(_)), "{err:?}");
        let other = Checkpoint::with_header(&header, &fb).unwrap();
        let err = other.decode_into(vec![(0, &mut out)], None).unwrap_err();
        assert!(
            matches!(err, Error::Checksum(_) | Error::Corrupt(_)),
            "{err:?}"
        );
    }

    /// `decode_copied` fills every copy buffer with its job's bytes, whatever the codec
    /// (standalone, predicted, same as the reference, side contexts) and chunk count, and
    /// refuses copy buffers of another size or count; a failed chunk check is an error.
    #[test]
    fn decode_copied_writes_both_buffers() {
        let mut rng = crate::testing::Lcg(5);
        let f = |v: Vec<f32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let a = f((0..30_001).map(|_| rng.centered()).collect());
        let b: Vec<u8> = f(a
            .chunks_exact(4)
            .map(|w| f32::from_le_bytes(w.try_into().unwrap()) * 1.001)
            .collect());
        let tensors = [
            tensor("plain", &a, None),
            tensor("pred", &b, Some(&a)),
            tensor("same", &a, Some(&a)),
        ];
        let structure = Value::List((0..3).map(Value::Tensor).collect());
        let opts = EncodeOptions {
            chunk_bytes: 4096,
            ..Default::default()
        };
        let bytes = encode(&tensors, &structure, &opts).unwrap().to_vec();
        let ck = Checkpoint::parse(&bytes).unwrap();
        let mut outs = vec![vec![0u8; a.len()]; 3];
        let mut copies = vec![vec![7u8; a.len()]; 3];
        let [o0, o1, o2] = &mut outs[..] else {
            unreachable!()
        };
        let jobs = vec![
            (0, &mut o0[..], None),
            (1, &mut o1[..], Some(RefBytes::from(&a[..]))),
            (2, &mut o2[..], Some(RefBytes::from(&a[..]))),
        ];
        let [c0, _, c2] = &mut copies[..] else {
            unreachable!()
        };
        ck.decode_copied(jobs, vec![Some(&mut c0[..]), None, Some(&mut c2[..])], None)
            .unwrap();
        assert_eq!([&outs[0], &outs[1], &outs[2]], [&a, &b, &a]);
        assert_eq!(copies[0], a);
        assert!(copies[1].iter().all(|&v| v == 7));
        assert_eq!(copies[2], a);
        let (mut out, mut short) = (vec![0u8; a.len()], vec![0u8; a.len() - 4]);
        let err = ck.decode_copied(vec![(0, &mut out, None)], vec![Some(&mut short[..])], None);
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
        let err = ck.decode_copied(vec![(0, &mut out, None)], vec![], None);
        assert!(matches!(err, Err(Error::InvalidArgument(_))));
        // Damage the last chunk (the predicted tensor's): its decode is an error, the
        // other tensors still decode.
        let mut damaged = bytes.clone();
        let last = damaged.len() - 10;
        damaged[last] ^= 0x40;
        let ck = Checkpoint::parse(&damaged).unwrap();
        let mut copy = vec![0u8; a.len()];
        let plain = ck.decode_copied(vec![(0, &mut out, None)], vec![Some(&mut copy[..])], None);
        assert!(plain.is_ok() && copy == a);
        let pred = ck.decode_copied(
            vec![(1, &mut out, Some(RefBytes::from(&a[..])))],
            vec![Some(&mut copy[..])],
            None,
        );
        assert!(pred.is_err());
    }

    /// `encode_copied` copies every tensor given a buffer (chunked, predicted, same as its
    /// reference, empty), writes the same file as `encode`, and refuses bad buffers.
    #[test]
    fn encode_copied_copies_every_input() {
        let a: Vec<u8> = (0..10_001u32)
            .flat_map(|i| (i as f32).sqrt().to_le_bytes())
            .collect();
        let b: Vec<u8> = a.iter().map(|v| v ^ 1).collect();
        let tensors = [
            tensor("plain", &a, None),
            tensor("pred", &b, Some(&a)),
            tensor("same", &a, Some(&a)),
            tensor("empty", &[], None),
        ];
        let structure = Value::List((0..4).map(Value::Tensor).collect());
        let opts = EncodeOptions {
            chunk_bytes: 4096,
            ..Default::default()
        };
        let mut bufs = vec![
            vec![0u8; a.len()],
            vec![0u8; a.len()],
            vec![0u8; a.len()],
            vec![],
        ];
        let copies = bufs.iter_mut().map(|b| Some(&mut b[..])).collect();
        let copied = encode_copied(&tensors, &structure, &opts, copies).unwrap();
        assert_eq!(copied.to_vec(), file(&tensors));
        assert_eq!(bufs, vec![a.clone(), b.clone(), a.clone(), vec![]]);
        let mut short = vec![0u8; a.len() - 4];
        let bad = vec![Some(&mut short[..]), None, None, None];
        assert!(matches!(
            encode_copied(&tensors, &structure, &opts, bad),
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            encode_copied(&tensors, &structure, &opts, vec![None]),
            Err(Error::InvalidArgument(_))
        ));
    }

    /// Writing to a file (durably), to memory and through `to_vec` give the same file, which
    /// decodes exactly; chunks of raw planes go straight from the input to the output.
    #[test]
    fn every_writer_gives_the_same_file() {
        let mut rng = crate::testing::Lcg(7);
        let data: Vec<u8> = (0..300_000u32)
            .flat_map(|i| {
                let noise = rng.centered();
                (noise * (1.0 + (i % 7) as f32)).to_le_bytes()
            })
            .collect();
        let small = &data[..5000];
        // Predicted, its first half close to the reference (residual chunks, written from
        // their bytes), its second half not (standalone chunks behind their kind byte).
        let close: Vec<u8> = data
            .chunks_exact(4)
            .enumerate()
            .flat_map(|(i, w)| {
                let v = f32::from_le_bytes(w.try_into().unwrap());
                let v = if i < 150_000 {
                    v * 1.000_001
                } else {
                    rng.centered()
                };
                v.to_le_bytes()
            })
            .collect();
        let tensors = [
            tensor("big", &data, None),
            tensor("small", small, None),
            tensor("pred", &close, Some(&data)),
        ];
        let structure = Value::List((0..3).map(Value::Tensor).collect());
        let opts = EncodeOptions {
            chunk_bytes: 1 << 20,
            ..Default::default()
        };
        let enc = encode(&tensors, &structure, &opts).unwrap();
        let v = enc.to_vec();
        let mut buf = vec![0xa5u8; enc.len()];
        enc.write_to(&mut buf);
        assert_eq!(buf, v);
        // The durable file writer, over many batches of small chunks too.
        let dir = std::env::temp_dir().join(format!("fastckpt-durable-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for chunk_bytes in [1 << 20, 16 << 10] {
            let enc = encode(
                &tensors,
                &structure,
                &EncodeOptions {
                    chunk_bytes,
                    ..opts
                },
            )
            .unwrap();
            let file = enc.to_vec();
            let ck = Checkpoint::parse(&file).unwrap();
            let kinds: Vec<u8> = ck.tensors()[2]
                .chunks
                .iter()
                .map(|c| ck.coded(c)[0])
                .collect();
            assert!(kinds.contains(&predict::KIND_STANDALONE));
            assert!(kinds.iter().any(|&k| k != predict::KIND_STANDALONE));
            // One thread writes on the caller's thread, two through a writer thread.
            for threads in [1, 2] {
                let path = dir.join(format!("{chunk_bytes}-{threads}.fckpt"));
                let file = std::fs::File::create(&path).unwrap();
                crate::parallel::install(Some(threads), || enc.write_durable(&file))
                    .unwrap()
                    .unwrap();
                assert_eq!(std::fs::read(&path).unwrap(), enc.to_vec());
            }
        }
        std::fs::remove_dir_all(&dir).unwrap();
        // A device that refuses the bytes: an error, neither a panic nor a hang.
        #[cfg(target_os = "linux")]
        if let Ok(full) = std::fs::OpenOptions::new().write(true).open("/dev/full") {
            let small = EncodeOptions {
                chunk_bytes: 16 << 10,
                ..opts
            };
            let enc = encode(&tensors, &structure, &small).unwrap();
            for threads in [1, 2] {
                let r = crate::parallel::install(Some(threads), || enc.write_durable(&full));
                assert!(r.unwrap().is_err());
            }
        }
        let ck = Checkpoint::parse(&v).unwrap();
        let (mut a, mut b) = (vec![0u8; data.len()], vec![0u8; small.len()]);
        ck.decode_into(vec![(0, &mut a), (1, &mut b)], Some(2))
            .unwrap();
        assert_eq!((a.as_slice(), b.as_slice()), (data.as_slice(), small));
        let mut p = vec![0u8; close.len()];
        ck.decode_with(vec![(2, &mut p, Some(RefBytes::from(&data[..])))], Some(2))
            .unwrap();
        assert_eq!(p, close);
    }
}
