//! References as the container's coders see them: a reference tensor's bytes, or an
//! Adam-direction prediction made from it and its moments chunk by chunk.
//!
//! A tensor coded against `w0 + step * m / (sqrt(v) + eps)` ([`direction`]) gets that
//! prediction one chunk at a time, in the worker that codes the chunk, into a scratch
//! buffer of that thread: no tensor-sized prediction is written to memory and read back,
//! and the work is spread over the workers with the chunks.

use super::format::{self, TensorEntry};
use crate::error::{Error, Result};
use crate::hash;
use crate::predict::direction;
use crate::scratch;
use rayon::prelude::*;

/// An Adam-direction reference offered to the encoder: the tensor is coded against the
/// prediction made from the reference's bytes and these moments instead of the bytes.
#[derive(Debug, Clone)]
pub struct AdamIn<'a> {
    /// What the file records: the moments' names in the reference checkpoint and the step.
    pub recorded: format::Direction,
    /// The first moment's raw bytes (same length as the tensor's).
    pub m: &'a [u8],
    /// The second moment's raw bytes (same length as the tensor's).
    pub v: &'a [u8],
}

/// The reference a decoder is given for one tensor: the named tensor's raw bytes and, for
/// a tensor with an Adam-direction reference ([`TensorEntry::direction`]), the raw bytes
/// of the two moments the file names.
#[derive(Debug, Clone, Copy)]
pub struct RefBytes<'a> {
    /// The reference tensor's raw bytes.
    pub data: &'a [u8],
    /// `(m, v)`: required with an Adam-direction reference, refused without one.
    pub moments: Option<(&'a [u8], &'a [u8])>,
}

impl<'a> From<&'a [u8]> for RefBytes<'a> {
    fn from(data: &'a [u8]) -> Self {
        RefBytes {
            data,
            moments: None,
        }
    }
}

/// The whole reference of a tensor: its bytes, with the inputs of its Adam-direction
/// prediction when it has one.
#[derive(Debug, Clone, Copy)]
pub struct RefSource<'a> {
    data: &'a [u8],
    adam: Option<direction::Inputs<'a>>,
}

impl<'a> RefSource<'a> {
    /// The reference of an encoder's tensor.
    pub fn encoding(data: &'a [u8], adam: Option<&AdamIn<'a>>) -> Self {
        let adam = adam.map(|d| direction::Inputs {
            w0: data,
            m: d.m,
            v: d.v,
            step: d.recorded.step,
        });
        RefSource { data, adam }
    }

    /// The reference a decoder was given for tensor `t` (whose raw size `given.data` has),
    /// checked against what the file says the tensor was predicted from.
    pub fn decoding(t: &TensorEntry, r: &format::Reference, given: RefBytes<'a>) -> Result<Self> {
        let adam = match (t.direction(), given.moments) {
            (None, None) => None,
            (None, Some(_)) => {
                return Err(Error::InvalidArgument(format!(
                    "tensor {:?} has no Adam-direction reference: pass no moments",
                    t.name
                )))
            }
            (Some(d), None) => {
                return Err(Error::Reference(format!(
                    "tensor {:?} is predicted along its Adam direction from {:?} and the \
                     moments {:?} / {:?} of checkpoint {:?}: pass the moments too",
                    t.name, r.tensor, d.m, d.v, r.checkpoint
                )))
            }
            (Some(d), Some((m, v))) => {
                if m.len() != given.data.len() || v.len() != given.data.len() {
                    return Err(Error::Reference(format!(
                        "tensor {:?} is predicted along its Adam direction, but its \
                         optimizer state {:?} / {:?} of checkpoint {:?} differs in size",
                        t.name, d.m, d.v, r.checkpoint
                    )));
                }
                let inputs = direction::Inputs {
                    w0: given.data,
                    m,
                    v,
                    step: d.step,
                };
                inputs.check()?;
                Some(inputs)
            }
        };
        Ok(RefSource {
            data: given.data,
            adam,
        })
    }

    /// Checks the inputs of an Adam-direction prediction, if any
    /// ([`direction::Inputs::check`]: moments of the reference's size, a valid step).
    pub fn check(&self) -> Result<()> {
        self.adam.as_ref().map_or(Ok(()), direction::Inputs::check)
    }

    /// The reference's bytes (not the prediction made from them).
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bytes `at` of the reference (or of its prediction).
    pub fn chunk(&self, at: std::ops::Range<usize>) -> RefChunk<'a> {
        match self.adam {
            None => RefChunk::Raw(&self.data[at]),
            Some(inputs) => RefChunk::Adam(inputs, (at.start, at.end)),
        }
    }

    /// The file's hash of the reference (of its prediction) in chunks of `chunk` bytes,
    /// hashed in parallel in the current rayon pool.
    pub fn tensor_hash(&self, chunk: usize, chunk_words: u64) -> u128 {
        let n = self.data.len().div_ceil(chunk.max(1));
        let hashes: Vec<u128> = (0..n)
            .into_par_iter()
            .map(|k| {
                let at = k * chunk..((k + 1) * chunk).min(self.data.len());
                self.chunk(at).with(hash::h128)
            })
            .collect();
        format::tensor_hash(chunk_words, hashes)
    }
}

/// One chunk of a reference: a slice of the reference tensor, or the words of an
/// Adam-direction prediction, made when the chunk is coded.
#[derive(Debug, Clone, Copy)]
pub enum RefChunk<'a> {
    /// The reference's own bytes.
    Raw(&'a [u8]),
    /// The prediction of the words at bytes `(start, end)` of these inputs.
    Adam(direction::Inputs<'a>, (usize, usize)),
}

impl RefChunk<'_> {
    /// Calls `f` with the chunk's bytes: the reference's own, or the prediction written
    /// into a scratch buffer of the calling thread.
    pub fn with<R>(&self, f: impl FnOnce(&[u8]) -> R) -> R {
        match *self {
            RefChunk::Raw(bytes) => f(bytes),
            RefChunk::Adam(inputs, (start, end)) => {
                let mut p = scratch::bytes_dirty(end - start);
                inputs.predict_chunk(start..end, &mut p);
                f(&p)
            }
        }
    }
}

/// Calls `f` with the bytes of `chunk`, or with None without a reference.
pub fn with_chunk<R>(chunk: Option<RefChunk>, f: impl FnOnce(Option<&[u8]>) -> R) -> R {
    match chunk {
        None => f(None),
        Some(c) => c.with(|bytes| f(Some(bytes))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Chunk by chunk, at any chunk size (odd ones too), an Adam source gives the words of
    /// the whole prediction and its hash; a plain source gives its own bytes.
    #[test]
    fn chunks_are_slices_of_the_whole_prediction() {
        let mut rng = crate::testing::Lcg(11);
        let n = 5_003usize;
        let f = |v: Vec<f32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let w0 = f((0..n).map(|_| rng.centered()).collect());
        let m = f((0..n).map(|_| rng.centered() * 1e-3).collect());
        let v = f((0..n).map(|_| 1e-7 * (1.5 + rng.centered())).collect());
        let mut whole = vec![0u8; w0.len()];
        direction::predict(&w0, &m, &v, 2e-4, &mut whole).unwrap();
        let recorded = format::Direction {
            m: "m".into(),
            v: "v".into(),
            step: 2e-4,
        };
        let adam = AdamIn {
            recorded,
            m: &m,
            v: &v,
        };
        for chunk in [4, 4 * 7, 4096, 4 * n] {
            for (source, expect) in [
                (RefSource::encoding(&w0, Some(&adam)), &whole),
                (RefSource::encoding(&w0, None), &w0),
            ] {
                let mut got = Vec::new();
                for start in (0..w0.len()).step_by(chunk) {
                    let at = start..(start + chunk).min(w0.len());
                    source.chunk(at).with(|b| got.extend_from_slice(b));
                }
                assert_eq!(&got, expect, "chunk {chunk}");
                let words = (chunk / 4) as u64;
                assert_eq!(
                    source.tensor_hash(chunk, words),
                    super::super::content_hash(expect, crate::dtype::DType::F32, chunk)
                );
            }
        }
    }
}
