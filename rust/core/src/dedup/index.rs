//! A banded LSH index over tensor signatures, with one Bloom filter per band for fast
//! negatives (LSHBloom) and a compact sorted map per band from band key to tensor ids.
//!
//! A signature of `bands x rows` bits is cut into `bands` groups of `rows` bits; two
//! tensors of the same class (dtype and length, [`class_key`]) are candidates when at least
//! one band agrees exactly. With per-bit agreement `p = 1 - angle/pi`, the probability of
//! becoming a candidate is the S-curve `1 - (1 - p^rows)^bands` ([`LshParams::collision`]).
//! Candidates are ranked by Hamming distance of the whole signature.
//!
//! On disk only the entries are stored (with a checksum); band maps, filters and the exact
//! hash map are derived from them on load, so a file can never hold an index that disagrees
//! with its entries.

use std::collections::HashMap;

use super::bloom::Bloom;
use super::signature::{class_key, Signature, SIG_BITS};
use crate::container::bytes::{Reader, Writer};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::hash;

/// First bytes of a serialized index.
pub const INDEX_MAGIC: &[u8; 8] = b"FCKLSH\x00\x01";
/// Target false-positive rate of the band filters.
pub const BLOOM_FP: f64 = 0.01;

/// The banding of a signature: `bands` groups of `rows` bits (`bands * rows <= 128`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LshParams {
    /// Number of bands (each a Bloom filter and a map).
    pub bands: u32,
    /// Bits per band.
    pub rows: u32,
}

impl Default for LshParams {
    /// 12 bands of 10 bits: candidates above cosine ~0.9 are found with probability > 0.94,
    /// above 0.99 with > 0.9999; a random pair of one class collides with probability ~1.2%.
    fn default() -> Self {
        LshParams {
            bands: 12,
            rows: 10,
        }
    }
}

impl LshParams {
    /// Checks `1 <= rows <= 64`, `bands >= 1` and `bands * rows <= 128`.
    pub fn check(self) -> Result<LshParams> {
        let ok = (1..=64).contains(&self.rows)
            && self.bands >= 1
            && self.bands * self.rows <= SIG_BITS as u32;
        if ok {
            Ok(self)
        } else {
            Err(Error::InvalidArgument(format!(
                "LSH banding {} x {} does not fit {SIG_BITS} bits",
                self.bands, self.rows
            )))
        }
    }

    /// Probability that two tensors whose sampled vectors have cosine similarity `cos`
    /// share at least one band: `1 - (1 - p^rows)^bands` with `p = 1 - acos(cos)/pi`.
    pub fn collision(self, cos: f64) -> f64 {
        let p = 1.0 - cos.clamp(-1.0, 1.0).acos() / std::f64::consts::PI;
        1.0 - (1.0 - p.powi(self.rows as i32)).powi(self.bands as i32)
    }

    fn band_bits(self, sig: Signature, band: u32) -> u64 {
        let mask = if self.rows == 64 {
            u64::MAX
        } else {
            (1u64 << self.rows) - 1
        };
        (sig >> (band * self.rows)) as u64 & mask
    }
}

/// One indexed tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The checkpoint (Store key) holding the tensor.
    pub checkpoint: String,
    /// The tensor's name in that checkpoint.
    pub tensor: String,
    /// Element type.
    pub dtype: DType,
    /// Element count.
    pub numel: u64,
    /// Content identity (the file format's `raw_hash`): exact duplicates share it.
    pub raw_hash: u128,
    /// SimHash of the tensor ([`super::signature::signature`]).
    pub signature: Signature,
}

/// An entry as kept in memory: checkpoint names are interned.
#[derive(Debug, Clone)]
struct Stored {
    checkpoint: u32,
    tensor: Box<str>,
    dtype: DType,
    numel: u64,
    raw_hash: u128,
    signature: Signature,
}

/// One band: a Bloom filter of its band hashes and the sorted `key << 32 | id` slots.
#[derive(Debug, Clone)]
struct Band {
    bloom: Bloom,
    capacity: usize,
    slots: Vec<u64>,
}

impl Band {
    fn new(capacity: usize) -> Band {
        Band {
            bloom: Bloom::with_capacity(capacity, BLOOM_FP),
            capacity,
            slots: Vec::new(),
        }
    }

    fn ids(&self, h: u64) -> impl Iterator<Item = u32> + '_ {
        let key = h >> 32 << 32;
        let lo = self.slots.partition_point(|&s| s < key);
        let hi = self.slots.partition_point(|&s| s <= key | 0xffff_ffff);
        self.slots[lo..hi].iter().map(|&s| s as u32)
    }
}

/// A candidate reference returned by [`Index::query`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// Entry id (see [`Index::entry`]).
    pub id: u32,
    /// Hamming distance between the signatures.
    pub distance: u32,
    /// Number of bands shared with the query.
    pub bands: u32,
}

/// The LSH index of a Store: entries, band filters and maps, exact-hash map.
#[derive(Debug, Clone)]
pub struct Index {
    params: LshParams,
    checkpoints: Vec<String>,
    by_name: HashMap<String, u32>,
    entries: Vec<Stored>,
    bands: Vec<Band>,
    exact: HashMap<u128, Vec<u32>>,
}

fn band_hash(class: u64, band: u32, bits: u64) -> u64 {
    let mut b = [0u8; 20];
    b[..8].copy_from_slice(&class.to_le_bytes());
    b[8..12].copy_from_slice(&band.to_le_bytes());
    b[12..].copy_from_slice(&bits.to_le_bytes());
    hash::h64(&b)
}

impl Index {
    /// An empty index with the given banding.
    pub fn new(params: LshParams) -> Result<Index> {
        let params = params.check()?;
        Ok(Index {
            params,
            checkpoints: Vec::new(),
            by_name: HashMap::new(),
            entries: Vec::new(),
            bands: (0..params.bands).map(|_| Band::new(1024)).collect(),
            exact: HashMap::new(),
        })
    }

    /// The banding.
    pub fn params(&self) -> LshParams {
        self.params
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the index is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Entry `id`, if any.
    pub fn entry(&self, id: u32) -> Option<Entry> {
        self.entries.get(id as usize).map(|s| Entry {
            checkpoint: self.checkpoints[s.checkpoint as usize].clone(),
            tensor: s.tensor.to_string(),
            dtype: s.dtype,
            numel: s.numel,
            raw_hash: s.raw_hash,
            signature: s.signature,
        })
    }

    fn band_hashes(&self, dtype: DType, numel: u64, sig: Signature) -> Vec<u64> {
        let class = class_key(dtype, numel);
        (0..self.params.bands)
            .map(|b| band_hash(class, b, self.params.band_bits(sig, b)))
            .collect()
    }

    fn intern(&mut self, checkpoint: &str) -> u32 {
        if let Some(&i) = self.by_name.get(checkpoint) {
            return i;
        }
        let i = self.checkpoints.len() as u32;
        self.checkpoints.push(checkpoint.to_owned());
        self.by_name.insert(checkpoint.to_owned(), i);
        i
    }

    fn push(&mut self, e: Entry) -> Result<u32> {
        if self.entries.len() >= u32::MAX as usize {
            return Err(Error::InvalidArgument("index is full".into()));
        }
        let id = self.entries.len() as u32;
        let checkpoint = self.intern(&e.checkpoint);
        self.exact.entry(e.raw_hash).or_default().push(id);
        self.entries.push(Stored {
            checkpoint,
            tensor: e.tensor.into_boxed_str(),
            dtype: e.dtype,
            numel: e.numel,
            raw_hash: e.raw_hash,
            signature: e.signature,
        });
        Ok(id)
    }

    /// Adds one entry; returns its id.
    pub fn insert(&mut self, e: Entry) -> Result<u32> {
        let hashes = self.band_hashes(e.dtype, e.numel, e.signature);
        let id = self.push(e)?;
        let grow = self.entries.len() > self.bands[0].capacity;
        for (band, h) in self.bands.iter_mut().zip(hashes) {
            let slot = h >> 32 << 32 | id as u64;
            let at = band.slots.partition_point(|&s| s < slot);
            band.slots.insert(at, slot);
            band.bloom.insert(h);
        }
        if grow {
            self.rebuild_blooms();
        }
        Ok(id)
    }

    /// Adds many entries at once (one sort per band instead of one insertion per entry).
    pub fn extend(&mut self, entries: impl IntoIterator<Item = Entry>) -> Result<()> {
        for e in entries {
            let hashes = self.band_hashes(e.dtype, e.numel, e.signature);
            let id = self.push(e)?;
            for (band, h) in self.bands.iter_mut().zip(hashes) {
                band.slots.push(h >> 32 << 32 | id as u64);
            }
        }
        self.bands.iter_mut().for_each(|b| b.slots.sort_unstable());
        self.rebuild_blooms();
        Ok(())
    }

    fn rebuild_blooms(&mut self) {
        let capacity = (2 * self.entries.len()).max(1024);
        let hashes: Vec<Vec<u64>> = (0..self.entries.len())
            .map(|i| {
                let s = &self.entries[i];
                self.band_hashes(s.dtype, s.numel, s.signature)
            })
            .collect();
        for (b, band) in self.bands.iter_mut().enumerate() {
            band.capacity = capacity;
            band.bloom = Bloom::with_capacity(capacity, BLOOM_FP);
            hashes.iter().for_each(|h| band.bloom.insert(h[b]));
        }
    }

    /// Removes every entry of `checkpoint`; returns how many. Ids of the other entries
    /// change (the structures are rebuilt).
    pub fn remove_checkpoint(&mut self, checkpoint: &str) -> Result<usize> {
        if !self.by_name.contains_key(checkpoint) {
            return Ok(0);
        }
        let all: Vec<Entry> = (0..self.entries.len() as u32)
            .filter_map(|i| self.entry(i))
            .collect();
        let before = all.len();
        let keep: Vec<Entry> = all
            .into_iter()
            .filter(|e| e.checkpoint != checkpoint)
            .collect();
        let removed = before - keep.len();
        let mut fresh = Index::new(self.params)?;
        fresh.extend(keep)?;
        *self = fresh;
        Ok(removed)
    }

    /// Ids of the entries with exactly this content (same dtype, length and hash).
    pub fn exact(&self, dtype: DType, numel: u64, raw_hash: u128) -> Vec<u32> {
        self.exact.get(&raw_hash).map_or_else(Vec::new, |ids| {
            ids.iter()
                .copied()
                .filter(|&i| {
                    let s = &self.entries[i as usize];
                    s.dtype == dtype && s.numel == numel
                })
                .collect()
        })
    }

    /// Up to `limit` entries of the same class sharing at least one band with `sig`,
    /// nearest (Hamming) first. Bands whose filter says "absent" cost no map lookup.
    pub fn query(&self, dtype: DType, numel: u64, sig: Signature, limit: usize) -> Vec<Candidate> {
        let mut ids: Vec<u32> = Vec::new();
        for (band, h) in self.bands.iter().zip(self.band_hashes(dtype, numel, sig)) {
            if band.bloom.contains(h) {
                ids.extend(band.ids(h));
            }
        }
        ids.sort_unstable();
        let mut out: Vec<Candidate> = Vec::new();
        for id in ids {
            match out.last_mut() {
                Some(c) if c.id == id => c.bands += 1,
                _ => {
                    let s = &self.entries[id as usize];
                    if s.dtype == dtype && s.numel == numel {
                        out.push(Candidate {
                            id,
                            distance: (s.signature ^ sig).count_ones(),
                            bands: 1,
                        });
                    }
                }
            }
        }
        out.sort_unstable_by_key(|c| (c.distance, c.id));
        out.truncate(limit);
        out
    }

    /// Approximate heap bytes held (entries, names, band slots and filters, exact map).
    pub fn memory_bytes(&self) -> usize {
        let entries = self.entries.capacity() * std::mem::size_of::<Stored>()
            + self.entries.iter().map(|s| s.tensor.len()).sum::<usize>();
        let names = self
            .checkpoints
            .iter()
            .map(|c| 2 * c.len() + 64)
            .sum::<usize>();
        let bands: usize = self
            .bands
            .iter()
            .map(|b| b.slots.capacity() * 8 + b.bloom.bytes())
            .sum();
        let exact = self.exact.capacity() * (16 + 24 + 8) + self.entries.len() * 4;
        entries + names + bands + exact
    }

    /// Serializes the index: magic, banding, checkpoint names, entries, xxh3-64 checksum.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::default();
        w.bytes(INDEX_MAGIC);
        w.u8(self.params.bands as u8);
        w.u8(self.params.rows as u8);
        w.varint(self.checkpoints.len() as u64);
        self.checkpoints.iter().for_each(|c| w.str(c));
        w.varint(self.entries.len() as u64);
        for s in &self.entries {
            w.varint(s.checkpoint as u64);
            w.str(&s.tensor);
            w.u8(s.dtype as u8);
            w.varint(s.numel);
            w.bytes(&s.raw_hash.to_le_bytes());
            w.bytes(&s.signature.to_le_bytes());
        }
        let sum = hash::h64(w.as_slice());
        w.u64(sum);
        w.into_inner()
    }

    /// Parses bytes written by [`Index::to_bytes`]: any damage is an error, never a panic.
    pub fn from_bytes(buf: &[u8]) -> Result<Index> {
        if buf.len() < INDEX_MAGIC.len() + 8 || &buf[..8] != INDEX_MAGIC {
            return Err(Error::Format("not a fastckpt LSH index".into()));
        }
        let (body, sum) = buf.split_at(buf.len() - 8);
        if hash::h64(body) != u64::from_le_bytes(sum.try_into().unwrap_or_default()) {
            return Err(Error::Checksum("LSH index".into()));
        }
        let mut r = Reader::new(&body[8..]);
        let params = LshParams {
            bands: r.u8()? as u32,
            rows: r.u8()? as u32,
        }
        .check()
        .map_err(|e| Error::Format(e.to_string()))?;
        let n_ckpt = r.count(1)?;
        let names = (0..n_ckpt)
            .map(|_| r.str().map(str::to_owned))
            .collect::<Result<Vec<_>>>()?;
        let n = r.count(36)?;
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            entries.push(read_entry(&mut r, &names)?);
        }
        if r.remaining() != 0 {
            return Err(Error::Format(
                "stray bytes at the end of the LSH index".into(),
            ));
        }
        let mut index = Index::new(params)?;
        index.extend(entries)?;
        Ok(index)
    }
}

fn read_u128(r: &mut Reader) -> Result<u128> {
    let mut b = [0u8; 16];
    b.copy_from_slice(r.take(16)?);
    Ok(u128::from_le_bytes(b))
}

fn read_entry(r: &mut Reader, names: &[String]) -> Result<Entry> {
    let c = r.varint()?;
    let checkpoint = names
        .get(c as usize)
        .ok_or_else(|| Error::Format(format!("LSH entry names checkpoint {c}")))?
        .clone();
    Ok(Entry {
        checkpoint,
        tensor: r.str()?.to_owned(),
        dtype: DType::from_code(r.u8()?).map_err(|e| Error::Format(e.to_string()))?,
        numel: r.varint()?,
        raw_hash: read_u128(r)?,
        signature: read_u128(r)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry(c: &str, t: usize, sig: u128, numel: u64) -> Entry {
        Entry {
            checkpoint: c.into(),
            tensor: format!("t{t}"),
            dtype: DType::F32,
            numel,
            raw_hash: sig.wrapping_mul(3),
            signature: sig,
        }
    }

    #[test]
    fn finds_near_signatures_of_the_same_class_only() {
        let mut ix = Index::new(LshParams::default()).unwrap();
        let base = 0x0123_4567_89ab_cdef_fedc_ba98_7654_3210u128;
        ix.insert(entry("a", 0, base, 100)).unwrap();
        ix.insert(entry("b", 0, base ^ 0b101, 100)).unwrap();
        ix.insert(entry("c", 0, base, 101)).unwrap();
        ix.insert(entry("d", 0, !base, 100)).unwrap();
        let got = ix.query(DType::F32, 100, base ^ 1, 10);
        let ids: Vec<u32> = got.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![0, 1]);
        assert_eq!((got[0].distance, got[1].distance), (1, 1));
        assert_eq!(ix.exact(DType::F32, 100, base.wrapping_mul(3)), vec![0]);
        assert_eq!(ix.remove_checkpoint("a").unwrap(), 1);
        assert_eq!(ix.query(DType::F32, 100, base, 10)[0].distance, 2);
    }

    #[test]
    fn s_curve_is_steep() {
        let p = LshParams::default();
        assert!(p.collision(0.99) > 0.9999 && p.collision(0.9) > 0.9);
        assert!(p.collision(0.0) < 0.02);
        assert!(LshParams {
            bands: 13,
            rows: 10
        }
        .check()
        .is_err());
    }

    #[test]
    fn corrupt_bytes_are_errors() {
        let mut ix = Index::new(LshParams::default()).unwrap();
        ix.insert(entry("a", 0, 7, 100)).unwrap();
        let b = ix.to_bytes();
        assert!(Index::from_bytes(&b[..b.len() - 1]).is_err());
        assert!(Index::from_bytes(b"garbage").is_err());
        assert!(Index::from_bytes(&[]).is_err());
    }

    fn entries() -> impl Strategy<Value = Vec<(u8, u128, u64)>> {
        proptest::collection::vec((0u8..4, any::<u128>(), 1u64..5), 0..60)
    }

    proptest! {
        #[test]
        fn round_trip_keeps_entries_and_answers(es in entries(), one_by_one in any::<bool>()) {
            let mut ix = Index::new(LshParams { bands: 8, rows: 4 }).unwrap();
            let list: Vec<Entry> = es.iter().enumerate()
                .map(|(i, &(c, s, n))| entry(&format!("ck{c}"), i, s, n)).collect();
            if one_by_one {
                for e in list.clone() { ix.insert(e).unwrap(); }
            } else {
                ix.extend(list.clone()).unwrap();
            }
            let back = Index::from_bytes(&ix.to_bytes()).unwrap();
            prop_assert_eq!(back.len(), list.len());
            for (i, e) in list.iter().enumerate() {
                prop_assert_eq!(back.entry(i as u32), Some(e.clone()));
                let q = back.query(e.dtype, e.numel, e.signature, usize::MAX);
                prop_assert!(q.iter().any(|c| c.id == i as u32 && c.distance == 0));
                prop_assert_eq!(q, ix.query(e.dtype, e.numel, e.signature, usize::MAX));
            }
        }

        #[test]
        fn damaged_bytes_are_errors_not_panics(es in entries(), at in any::<usize>(), bit in 0u8..8, cut in any::<usize>()) {
            let mut ix = Index::new(LshParams::default()).unwrap();
            ix.extend(es.iter().enumerate().map(|(i, &(c, s, n))| entry(&format!("ck{c}"), i, s, n))).unwrap();
            let mut b = ix.to_bytes();
            let at = at % b.len();
            b[at] ^= 1 << bit;
            prop_assert!(Index::from_bytes(&b).is_err());
            let good = ix.to_bytes();
            prop_assert!(Index::from_bytes(&good[..cut % good.len()]).is_err());
        }
    }
}
