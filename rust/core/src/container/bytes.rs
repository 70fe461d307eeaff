//! Little-endian byte writer and a bounds-checked reader: every read that would run past
//! the end is a [`Error::Truncated`], never a panic, and no length is trusted before it
//! is checked against the bytes that remain.

use crate::error::{Error, Result};

/// Appends little-endian values to a growable buffer.
#[derive(Default, Debug)]
pub struct Writer {
    buf: Vec<u8>,
}

/// The bytes of `words` in memory: their little-endian bytes on this target.
#[cfg(target_endian = "little")]
fn u16_bytes(words: &[u16]) -> &[u8] {
    // SAFETY: a u16 has no padding and its bytes in memory are its little-endian bytes
    // on this target; the view covers exactly the slice.
    unsafe { std::slice::from_raw_parts(words.as_ptr().cast::<u8>(), 2 * words.len()) }
}

/// Writes `words` little-endian into `out` (exactly two bytes per word).
pub fn u16s_into(words: &[u16], out: &mut [u8]) {
    #[cfg(target_endian = "little")]
    out.copy_from_slice(u16_bytes(words));
    #[cfg(not(target_endian = "little"))]
    for (d, w) in out.chunks_exact_mut(2).zip(words) {
        d.copy_from_slice(&w.to_le_bytes());
    }
}

impl Writer {
    /// A writer appending to `buf` after clearing it (reuses its memory).
    pub fn reusing(mut buf: Vec<u8>) -> Writer {
        buf.clear();
        Writer { buf }
    }
    /// A writer with `n` bytes reserved.
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(n),
        }
    }
    /// Bytes written so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    /// The written bytes.
    pub fn into_inner(self) -> Vec<u8> {
        self.buf
    }
    /// The written bytes, borrowed.
    pub fn as_slice(&self) -> &[u8] {
        &self.buf
    }
    /// One byte.
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    /// A little-endian u16.
    pub fn u16(&mut self, v: u16) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A little-endian u32.
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A little-endian u64.
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    /// A slice of u16 words, little-endian.
    pub fn u16s(&mut self, words: &[u16]) {
        #[cfg(target_endian = "little")]
        self.buf.extend_from_slice(u16_bytes(words));
        #[cfg(not(target_endian = "little"))]
        u16s_into(words, self.extend_zeroed(2 * words.len()));
    }
    /// `n` more bytes, zeroed, for the caller to fill in place.
    pub fn extend_zeroed(&mut self, n: usize) -> &mut [u8] {
        let start = self.buf.len();
        self.buf.resize(start + n, 0);
        &mut self.buf[start..]
    }
    /// Raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }
    /// An unsigned LEB128 varint.
    pub fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push(v as u8 | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }
    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self, s: &str) {
        self.varint(s.len() as u64);
        self.bytes(s.as_bytes());
    }
}

/// Reads little-endian values from a byte slice, checking every bound.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader { buf, pos: 0 }
    }
    /// Bytes not yet read.
    pub fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }
    /// Current offset from the start.
    pub fn position(&self) -> usize {
        self.pos
    }
    /// The next `n` bytes.
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(Error::Truncated(format!(
                "need {n} bytes at offset {}, only {} left",
                self.pos,
                self.remaining()
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }
    /// One byte.
    pub fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    /// A little-endian u16.
    pub fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.array()?))
    }
    /// A little-endian u32.
    pub fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array()?))
    }
    /// A little-endian u64.
    pub fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array()?))
    }
    /// An unsigned LEB128 varint of at most 10 bytes.
    pub fn varint(&mut self) -> Result<u64> {
        let mut v = 0u64;
        for i in 0..10 {
            let b = self.u8()?;
            if i == 9 && b > 1 {
                return Err(Error::Format("varint overflows 64 bits".into()));
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Format("varint longer than 10 bytes".into()))
    }
    /// A varint used as a count of items that each take at least `min_item_bytes` bytes:
    /// it must fit in what remains, so a hostile count cannot trigger a huge allocation.
    pub fn count(&mut self, min_item_bytes: usize) -> Result<usize> {
        let n = self.varint()?;
        let limit = self.remaining() / min_item_bytes.max(1);
        if n > limit as u64 {
            return Err(Error::Format(format!(
                "count {n} exceeds what the remaining {} bytes can hold",
                self.remaining()
            )));
        }
        Ok(n as usize)
    }
    /// A length-prefixed UTF-8 string.
    pub fn str(&mut self) -> Result<&'a str> {
        let n = self.count(1)?;
        std::str::from_utf8(self.take(n)?).map_err(|_| Error::Format("string is not UTF-8".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varint_roundtrip(v in any::<u64>()) {
            let mut w = Writer::default();
            w.varint(v);
            let b = w.into_inner();
            let mut r = Reader::new(&b);
            prop_assert_eq!(r.varint().unwrap(), v);
            prop_assert_eq!(r.remaining(), 0);
        }
    }

    #[test]
    fn truncated_reads_error() {
        let mut r = Reader::new(&[1, 2, 3]);
        assert!(matches!(r.u32(), Err(Error::Truncated(_))));
        assert!(Reader::new(&[0x80, 0x80]).varint().is_err());
        assert!(Reader::new(&[100]).count(1).is_err());
    }
}
