//! The on-disk layout: a fixed prefix, a checksummed header (the index of every tensor and
//! the checkpoint's structure), then the compressed chunks back to back.
//!
//! ```text
//! magic "\x89FCKPT\r\n" | u16 major | u16 minor | u32 flags | u64 header_len
//! header (header_len bytes) | u64 xxh3-64 of prefix + header | data (header.data_len bytes)
//! ```
//! The header is validated completely (counts against remaining bytes, shapes against
//! overflow, chunk counts against shapes, offsets against the data length) before the
//! caller allocates anything for a tensor.

use super::bytes::{Reader, Writer};
use super::value::Value;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::hash;
use crate::quant::{self, Plan};

/// First eight bytes of every fastckpt file (PNG-style: catches text-mode mangling).
pub const MAGIC: &[u8; 8] = b"\x89FCKPT\r\n";
/// Format major version this build writes and reads.
pub const MAJOR: u16 = 1;
/// Format minor version this build writes when a file has coded byte planes, i.e. a
/// tensor of [`Codec::Planes`], [`Codec::Predicted`] or [`Codec::Quantized`] (1.6:
/// predicted tensors may have an Adam-direction reference, params `{"adam": ...}`; 1.5:
/// residual chunks may have a sampled base exponent, kind 5; 1.4: pair
/// coded planes may have wide tables, mode 4; 1.3: planes
/// may be pair coded, mode 3, and residual chunks may be token chunks, kind 3; 1.2:
/// residual chunks may have scaled context tables, chunk kind 2); 1 when it uses only [`Codec::Same`] (1.1); files without any of them are
/// written as 1.0, readable by every 1.x reader.
pub const MINOR: u16 = 6;
/// Bytes before the header.
pub const PREFIX_LEN: usize = 24;
/// Largest chunk a reader accepts, in raw bytes.
pub const MAX_CHUNK_BYTES: u64 = 64 << 20;
/// Most dimensions a tensor may have.
pub const MAX_NDIM: usize = 64;

/// How a tensor's chunks are coded. The discriminant is the on-disk code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Byte planes, each raw, constant or rANS coded ([`crate::codec`]).
    Planes = 1,
    /// Residuals against a reference tensor ([`crate::predict`]).
    Predicted = 2,
    /// Near-lossless: error-bounded codes, block-sparse ([`crate::lossy`]); the tensor's
    /// params hold its [`crate::quant::Plan`], the reference is present iff alpha != 0
    /// (format 1.1).
    Quantized = 3,
    /// Exactly the reference tensor's bytes: no chunks; the reference is verified by its
    /// hash, which equals the tensor's own `raw_hash` (format 1.1).
    Same = 4,
}

impl Codec {
    /// Whether tensors of this codec always need a reference to decode (a quantized
    /// tensor needs one when its plan's alpha is not 0).
    pub fn needs_reference(self) -> bool {
        matches!(self, Codec::Predicted | Codec::Same)
    }

    /// Name shown by `inspect`.
    pub fn name(self) -> &'static str {
        match self {
            Codec::Planes => "planes",
            Codec::Predicted => "predicted",
            Codec::Quantized => "quantized",
            Codec::Same => "same",
        }
    }
}

/// Key of a predicted tensor's params naming its side tensor ([`TensorEntry::side`]).
pub const SIDE_KEY: &str = "side";

/// Key of a predicted tensor's params giving its Adam-direction reference
/// ([`TensorEntry::direction`]).
pub const DIRECTION_KEY: &str = "adam";

/// An Adam-direction reference (format 1.6, [`crate::predict::direction`]): the residual
/// was taken against `w0 + step * m / (sqrt(v) + eps)`, with `w0` the [`Reference`]
/// tensor and `m`, `v` its optimizer moments in the same checkpoint. The reference's
/// `raw_hash` is then the hash of that prediction, so a wrong `w0`, `m`, `v` is caught.
#[derive(Debug, Clone, PartialEq)]
pub struct Direction {
    /// Name of the first moment (`exp_avg`) in the reference checkpoint.
    pub m: String,
    /// Name of the second moment (`exp_avg_sq`) in the reference checkpoint.
    pub v: String,
    /// The fitted step (within [`crate::predict::direction::valid_step`]).
    pub step: f64,
}

impl Direction {
    /// The params value: `[m, v, step]`.
    pub fn to_value(&self) -> Value {
        Value::List(vec![
            Value::Str(self.m.clone()),
            Value::Str(self.v.clone()),
            Value::Float(self.step),
        ])
    }

    /// Reads the params value, checking its shape and step.
    fn from_value(v: &Value) -> Result<Direction> {
        let bad = || Error::Format("an adam reference is [m name, v name, valid step]".into());
        let Value::List(items) = v else {
            return Err(bad());
        };
        match items.as_slice() {
            [Value::Str(m), Value::Str(v), Value::Float(step)]
                if crate::predict::direction::valid_step(*step) =>
            {
                Ok(Direction {
                    m: m.clone(),
                    v: v.clone(),
                    step: *step,
                })
            }
            _ => Err(bad()),
        }
    }
}

/// Where a tensor was predicted from: decoding needs that tensor, checked by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    /// Identifier of the checkpoint that holds the reference tensor.
    pub checkpoint: String,
    /// Name of the reference tensor in that checkpoint.
    pub tensor: String,
    /// xxh3-128 of the reference tensor's raw bytes.
    pub raw_hash: u128,
}

/// One compressed chunk of a tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkEntry {
    /// Offset of the chunk in the data section.
    pub offset: u64,
    /// Compressed length in bytes.
    pub len: u64,
    /// xxh3-128 of the raw bytes: every decoded chunk is verified against it, so damage
    /// anywhere in the coded bytes is caught (the decoders themselves are fuzzed to fail
    /// cleanly on any input; hashing the coded bytes as well would only cost time).
    pub raw_hash: u128,
}

/// Everything the index says about one tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorEntry {
    /// Path-like name, unique in the checkpoint.
    pub name: String,
    /// Element type.
    pub dtype: DType,
    /// Dimensions (empty for a 0-d tensor).
    pub shape: Vec<u64>,
    /// Host hint (e.g. "torch" or "numpy"): the core stores it and ignores it.
    pub tag: String,
    /// Chunk codec.
    pub codec: Codec,
    /// Words per chunk (the last chunk may be shorter).
    pub chunk_words: u64,
    /// The tensor's content identity for dedup and prediction: [`tensor_hash`] of its
    /// chunk hashes (one pass over the data serves both, in parallel).
    pub raw_hash: u128,
    /// Reference tensor, if predicted (reserved).
    pub reference: Option<Reference>,
    /// Codec parameters (reserved for near-lossless modes; `Value::None` when lossless).
    pub params: Value,
    /// The compressed chunks, in order.
    pub chunks: Vec<ChunkEntry>,
}

impl TensorEntry {
    /// Number of elements (checked: the header was validated on parse).
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
    /// Raw size in bytes.
    pub fn raw_bytes(&self) -> u64 {
        self.numel() * self.dtype.size() as u64
    }
    /// Compressed size in bytes.
    pub fn compressed_bytes(&self) -> u64 {
        self.chunks.iter().map(|c| c.len).sum()
    }
    /// The quantizer plan of a [`Codec::Quantized`] tensor (validated on parse).
    pub fn plan(&self) -> Result<Option<Plan>> {
        match self.codec {
            Codec::Quantized => Plan::from_value(&self.params).map(Some),
            _ => Ok(None),
        }
    }
    /// Whether decoding gives back values that differ from what was encoded.
    pub fn is_lossy(&self) -> bool {
        self.codec == Codec::Quantized
    }
    /// The sibling tensor of this checkpoint whose words give a predicted tensor's
    /// contexts (format 1.3: params `{"side": name}`); decoding needs it decoded first.
    pub fn side(&self) -> Option<&str> {
        match self.predicted_param(SIDE_KEY) {
            Some(Value::Str(name)) => Some(name),
            _ => None,
        }
    }
    /// The Adam-direction reference of a predicted tensor (format 1.6: params
    /// `{"adam": [m, v, step]}`), validated on parse.
    pub fn direction(&self) -> Option<Direction> {
        self.predicted_param(DIRECTION_KEY)
            .and_then(|v| Direction::from_value(v).ok())
    }
    /// The value under `key` in a predicted tensor's params map.
    fn predicted_param(&self, key: &str) -> Option<&Value> {
        match (&self.codec, &self.params) {
            (Codec::Predicted, Value::Map(items)) => items
                .iter()
                .find(|(k, _)| matches!(k, Value::Str(s) if s == key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
    /// Raw bytes per full chunk.
    pub fn chunk_raw_bytes(&self) -> usize {
        (self.chunk_words as usize) * self.dtype.word_size()
    }
}

/// The parsed index of a checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct Header {
    /// Every tensor, in storage order.
    pub tensors: Vec<TensorEntry>,
    /// The checkpoint's structure with [`Value::Tensor`] placeholders.
    pub structure: Value,
    /// Length of the data section.
    pub data_len: u64,
}

impl Header {
    /// Serializes the header body (without prefix and checksum).
    pub fn write(&self, w: &mut Writer) {
        w.u64(self.data_len);
        w.varint(self.tensors.len() as u64);
        for t in &self.tensors {
            write_tensor(t, w);
        }
        self.structure.write(w);
    }

    /// Serializes prefix, header and header checksum: everything before the data.
    pub fn to_prefix_bytes(&self) -> Vec<u8> {
        let mut body = Writer::default();
        self.write(&mut body);
        let body = body.into_inner();
        let mut w = Writer::with_capacity(PREFIX_LEN + body.len() + 8);
        w.bytes(MAGIC);
        w.u16(MAJOR);
        let uses = |f: fn(&Codec) -> bool| self.tensors.iter().any(|t| f(&t.codec));
        let minor = if uses(|c| !matches!(c, Codec::Same)) {
            MINOR
        } else if uses(|c| matches!(c, Codec::Same)) {
            1
        } else {
            0
        };
        w.u16(minor);
        w.u32(0);
        w.u64(body.len() as u64);
        w.bytes(&body);
        w.u64(hash::h64(w.as_slice()));
        w.into_inner()
    }

    /// Parses and validates a whole file; returns the header and the data section.
    pub fn parse(file: &[u8]) -> Result<(Header, &[u8])> {
        let mut r = Reader::new(file);
        let magic = r
            .take(8)
            .map_err(|_| Error::NotFastckpt("file too short".into()))?;
        if magic != MAGIC {
            return Err(Error::NotFastckpt("bad magic bytes".into()));
        }
        let (major, minor) = (r.u16()?, r.u16()?);
        if major != MAJOR {
            return Err(Error::Version {
                major,
                minor,
                supported: MAJOR,
            });
        }
        let flags = r.u32()?;
        if flags != 0 {
            return Err(Error::Format(format!("unknown flags {flags:#x}")));
        }
        let header_len = r.u64()?;
        if header_len > r.remaining() as u64 {
            return Err(Error::Truncated(format!(
                "header of {header_len} bytes, only {} left",
                r.remaining()
            )));
        }
        let body = r.take(header_len as usize)?;
        let covered = &file[..r.position()];
        if r.u64()? != hash::h64(covered) {
            return Err(Error::Checksum("header".into()));
        }
        let header = Header::read(&mut Reader::new(body))?;
        let data = &file[r.position()..];
        if (data.len() as u64) < header.data_len {
            return Err(Error::Truncated(format!(
                "data section has {} of {} bytes",
                data.len(),
                header.data_len
            )));
        }
        if data.len() as u64 > header.data_len {
            return Err(Error::Format(format!(
                "{} trailing bytes after the data section",
                data.len() as u64 - header.data_len
            )));
        }
        Ok((header, data))
    }

    fn read(r: &mut Reader) -> Result<Header> {
        let data_len = r.u64()?;
        let n = r.count(8)?;
        let mut tensors = Vec::with_capacity(n);
        let mut offset = 0u64;
        for _ in 0..n {
            let t = read_tensor(r, &mut offset)?;
            tensors.push(t);
        }
        let mut names = std::collections::HashSet::with_capacity(tensors.len());
        if let Some(t) = tensors.iter().find(|t| !names.insert(t.name.as_str())) {
            return Err(Error::Format(format!("duplicate tensor name {:?}", t.name)));
        }
        if offset != data_len {
            return Err(Error::Format(format!(
                "chunks cover {offset} bytes, data section is {data_len}"
            )));
        }
        check_sides(&tensors)?;
        let structure = Value::read(r)?;
        if r.remaining() != 0 {
            return Err(Error::Format("stray bytes at the end of the header".into()));
        }
        let mut bad = None;
        structure.visit_tensors(&mut |i| {
            if i >= n as u64 {
                bad = Some(i);
            }
        });
        if let Some(i) = bad {
            return Err(Error::Format(format!(
                "structure refers to missing tensor {i}"
            )));
        }
        Ok(Header {
            tensors,
            structure,
            data_len,
        })
    }
}

/// Checks a predicted tensor's params: None, or a map of distinct keys [`SIDE_KEY`]
/// (a tensor name) and [`DIRECTION_KEY`] (a valid [`Direction`]).
fn check_predicted_params(params: &Value) -> Result<()> {
    let bad = || Error::Format("a predicted tensor's params hold only its side and adam".into());
    let items = match params {
        Value::None => return Ok(()),
        Value::Map(items) if !items.is_empty() => items,
        _ => return Err(bad()),
    };
    let mut seen = Vec::new();
    for (k, v) in items {
        match (k, v) {
            (Value::Str(k), Value::Str(_)) if k == SIDE_KEY => {}
            (Value::Str(k), v) if k == DIRECTION_KEY => {
                Direction::from_value(v)?;
            }
            _ => return Err(bad()),
        }
        if seen.contains(&k) {
            return Err(bad());
        }
        seen.push(k);
    }
    Ok(())
}

/// Checks every side tensor: another tensor of the file, of the same dtype, shape and
/// chunking, without a side of its own (so one decoding pass before serves them all).
fn check_sides(tensors: &[TensorEntry]) -> Result<()> {
    for t in tensors {
        let Some(name) = t.side() else { continue };
        let bad = |m: &str| Error::Format(format!("tensor {:?}: side tensor {name:?} {m}", t.name));
        let s = tensors
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| bad("is missing"))?;
        if s.name == t.name || s.side().is_some() {
            return Err(bad("has a side tensor itself"));
        }
        if (s.dtype, &s.shape, s.chunk_words) != (t.dtype, &t.shape, t.chunk_words) {
            return Err(bad("differs in dtype, shape or chunking"));
        }
    }
    Ok(())
}

/// A tensor's identity: xxh3-128 over its chunk size and its chunks' raw xxh3-128 hashes.
/// Equal for equal contents encoded with the same chunk size.
pub fn tensor_hash(chunk_words: u64, chunk_hashes: impl IntoIterator<Item = u128>) -> u128 {
    let mut buf = chunk_words.to_le_bytes().to_vec();
    for h in chunk_hashes {
        buf.extend_from_slice(&h.to_le_bytes());
    }
    hash::h128(&buf)
}

fn write_tensor(t: &TensorEntry, w: &mut Writer) {
    w.str(&t.name);
    w.u8(t.dtype as u8);
    w.varint(t.shape.len() as u64);
    t.shape.iter().for_each(|&d| w.varint(d));
    w.str(&t.tag);
    w.u8(t.codec as u8);
    w.varint(t.chunk_words);
    w.bytes(&t.raw_hash.to_le_bytes());
    match &t.reference {
        None => w.u8(0),
        Some(rf) => {
            w.u8(1);
            w.str(&rf.checkpoint);
            w.str(&rf.tensor);
            w.bytes(&rf.raw_hash.to_le_bytes());
        }
    }
    t.params.write(w);
    w.varint(t.chunks.len() as u64);
    for c in &t.chunks {
        w.varint(c.len);
        w.bytes(&c.raw_hash.to_le_bytes());
    }
}

fn read_u128(r: &mut Reader) -> Result<u128> {
    let mut b = [0u8; 16];
    b.copy_from_slice(r.take(16)?);
    Ok(u128::from_le_bytes(b))
}

fn read_tensor(r: &mut Reader, offset: &mut u64) -> Result<TensorEntry> {
    let name = r.str()?.to_owned();
    let ctx = |m: String| Error::Format(format!("tensor {name:?}: {m}"));
    let dtype = DType::from_code(r.u8()?)?;
    let ndim = r.count(1)?;
    if ndim > MAX_NDIM {
        return Err(ctx(format!("{ndim} dimensions")));
    }
    let shape = (0..ndim)
        .map(|_| r.varint())
        .collect::<Result<Vec<u64>>>()?;
    let raw_bytes = shape
        .iter()
        .try_fold(dtype.size() as u64, |a, &d| a.checked_mul(d))
        .filter(|&b| b <= isize::MAX as u64)
        .ok_or_else(|| ctx(format!("shape {shape:?} is too large")))?;
    let tag = r.str()?.to_owned();
    let codec = match r.u8()? {
        1 => Codec::Planes,
        2 => Codec::Predicted,
        3 => Codec::Quantized,
        4 => Codec::Same,
        c => return Err(Error::Unsupported(format!("tensor {name:?}: codec {c}"))),
    };
    let chunk_words = r.varint()?;
    let word = dtype.word_size() as u64;
    if chunk_words == 0 || chunk_words > MAX_CHUNK_BYTES / word {
        return Err(ctx(format!("chunk of {chunk_words} words")));
    }
    let raw_hash = read_u128(r)?;
    let reference = match r.u8()? {
        0 => None,
        1 => Some(Reference {
            checkpoint: r.str()?.to_owned(),
            tensor: r.str()?.to_owned(),
            raw_hash: read_u128(r)?,
        }),
        x => return Err(ctx(format!("reference tag {x}"))),
    };
    let params = Value::read(r)?;
    let needs_reference = match codec {
        Codec::Quantized => {
            if !quant::quantizable(dtype) {
                return Err(ctx(format!("{} cannot be quantized", dtype.name())));
            }
            Plan::from_value(&params)
                .map_err(|e| ctx(e.to_string()))?
                .alpha
                != 0.0
        }
        Codec::Predicted => {
            check_predicted_params(&params).map_err(|e| ctx(e.to_string()))?;
            true
        }
        other => other.needs_reference(),
    };
    if needs_reference != reference.is_some() {
        return Err(ctx(
            "a predicted or same tensor needs a reference, and only it".into(),
        ));
    }
    if codec == Codec::Same && reference.as_ref().map(|r| r.raw_hash) != Some(raw_hash) {
        return Err(ctx(
            "a same tensor's reference hash differs from its own".into()
        ));
    }
    let n_chunks = r.count(17)?;
    let expect = match codec {
        Codec::Same => 0,
        _ => (raw_bytes / word).div_ceil(chunk_words),
    };
    if n_chunks as u64 != expect {
        return Err(ctx(format!("{n_chunks} chunks, shape needs {expect}")));
    }
    let mut chunks = Vec::with_capacity(n_chunks);
    for _ in 0..n_chunks {
        let len = r.varint()?;
        let raw_hash = read_u128(r)?;
        chunks.push(ChunkEntry {
            offset: *offset,
            len,
            raw_hash,
        });
        *offset = offset
            .checked_add(len)
            .ok_or_else(|| ctx("chunk offsets overflow".into()))?;
    }
    Ok(TensorEntry {
        name,
        dtype,
        shape,
        tag,
        codec,
        chunk_words,
        raw_hash,
        reference,
        params,
        chunks,
    })
}
