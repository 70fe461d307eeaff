//! Raw bit fields: values whose bits are close to uniform (the low bits below a leading 1)
//! are packed LSB-first, without entropy coding.

/// Storage a [`BitWriter`] packs into: bytes that can be made at least `n` long (growing
/// keeps the bytes already there). A `Vec<u8>`, a buffer that holds one (e.g. a reused
/// scratch buffer), or a pooled buffer kept until its file is written.
pub trait Room {
    /// The bytes, at least `n` of them.
    fn room(&mut self, n: usize) -> &mut [u8];
}

impl<T: AsMut<Vec<u8>>> Room for T {
    #[inline(always)]
    fn room(&mut self, n: usize) -> &mut [u8] {
        let out = self.as_mut();
        if out.len() < n {
            out.resize(2 * n, 0);
        }
        out
    }
}

/// Packs values LSB-first into little-endian bytes. Branch-light: every value stores the
/// whole 8-byte accumulator at the write position, which then moves by the whole bytes
/// filled (the accumulator keeps fewer than 8 bits between values). The bytes go to any
/// [`Room`].
pub struct BitWriter<B: Room = Vec<u8>> {
    out: B,
    pos: usize,
    acc: u64,
    fill: u32,
}

impl BitWriter<Vec<u8>> {
    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Self {
        BitWriter::reusing(vec![0; n + 8])
    }
}

impl<B: Room> BitWriter<B> {
    /// An empty writer over `buf`, whose current bytes (any values) are its first room.
    pub fn reusing(buf: B) -> Self {
        BitWriter {
            out: buf,
            pos: 0,
            acc: 0,
            fill: 0,
        }
    }

    /// Makes sure that `n` more bytes can be stored at the write position; returns the
    /// start of the buffer.
    #[inline(always)]
    fn room(&mut self, n: usize) -> *mut u8 {
        self.room_at(self.pos, n)
    }

    /// Appends the low `n` (<= 64) bits of `v` (higher bits must be zero).
    #[inline]
    pub fn put(&mut self, v: u64, n: u32) {
        if n > 56 {
            self.put_run(&[v & 0xffff_ffff, v >> 32], &[32, n - 32]);
        } else {
            self.put_run(&[v], &[n]);
        }
    }

    /// Appends the low `n` (<= 56) bits of `v` (higher bits must be zero).
    #[inline(always)]
    pub fn put_short(&mut self, v: u64, n: u32) {
        self.put_run(&[v], &[n]);
    }

    /// Appends `vals[i]` (its low `ns[i]` <= 56 bits, higher bits zero) for each `i`, with
    /// the writer's state in registers for the whole run.
    #[inline(always)]
    pub fn put_run(&mut self, vals: &[u64], ns: &[u32]) {
        let count = vals.len().min(ns.len());
        let out = self.room(7 * count + 8);
        let (mut acc, mut fill, mut pos) = (self.acc, self.fill, self.pos);
        for (&v, &n) in vals.iter().zip(ns) {
            assert!(n <= 56, "{n} bits in one short put");
            debug_assert!(v >> n == 0);
            acc |= v << fill;
            fill += n;
            // SAFETY: `room` made 7 bytes per value (each moves `pos` by at most 7) plus
            // the 8 of this store available from the starting position.
            unsafe { std::ptr::write_unaligned(out.add(pos) as *mut u64, acc.to_le()) };
            let bytes = fill >> 3;
            pos += bytes as usize;
            acc >>= 8 * bytes; // bytes <= 7: fill + n <= 63
            fill &= 7;
        }
        (self.acc, self.fill, self.pos) = (acc, fill, pos);
    }

    /// The write position, the held bits and their count (fewer than 8), for a caller
    /// that packs whole words itself ([`BitWriter::resume`] takes them back).
    pub(crate) fn suspend(&self) -> (usize, u64, u32) {
        (self.pos, self.acc, self.fill)
    }

    /// Makes sure that `n` bytes can be stored from byte `pos` on; returns the start of
    /// the buffer (valid until the next call that may grow it).
    #[inline(always)]
    pub(crate) fn room_at(&mut self, pos: usize, n: usize) -> *mut u8 {
        self.out.room(pos + n).as_mut_ptr()
    }

    /// Takes back the state of a caller that packed from [`BitWriter::suspend`] on: the
    /// write position and fewer than 64 held bits (the whole accumulator is stored at
    /// `pos`, then the position moves past its full bytes).
    pub(crate) fn resume(&mut self, pos: usize, acc: u64, fill: u32) {
        debug_assert!(fill < 64 && (fill == 0 || acc >> fill == 0));
        let out = self.room_at(pos, 8);
        // SAFETY: `room_at` made 8 bytes at `pos` available.
        unsafe { std::ptr::write_unaligned(out.add(pos) as *mut u64, acc.to_le()) };
        let bytes = fill >> 3;
        self.pos = pos + bytes as usize;
        self.acc = if bytes == 0 { acc } else { acc >> (8 * bytes) };
        self.fill = fill & 7;
    }

    /// Bits written so far.
    pub fn bits(&self) -> u64 {
        8 * self.pos as u64 + self.fill as u64
    }

    /// The packed bytes so far (the last one zero-padded), borrowed: the buffer keeps its
    /// length (a pooled buffer then needs no refill for its next chunk-sized use).
    pub fn packed(&mut self) -> &[u8] {
        let end = self.pos + self.fill.div_ceil(8) as usize;
        let pos = self.pos;
        let out = self.out.room(pos + 8);
        out[pos..pos + 8].copy_from_slice(&self.acc.to_le_bytes());
        &out[..end]
    }

    /// The buffer, whole, and how many of its first bytes are the packed bits (the last
    /// one zero-padded): for buffers kept as they are, with no copy.
    pub fn into_packed(mut self) -> (B, usize) {
        let end = self.packed().len();
        (self.out, end)
    }
}

/// A [`BitWriter`]'s state taken out into registers for a hot loop that appends values
/// of up to 64 bits (e.g. two short ones merged), which [`BitWriter::put_run`] cannot
/// take: the accumulator holds up to 63 bits and is stored whole (8 bytes) at every
/// value, moving on by 8 bytes when full, branch-free. [`WideBits::finish`] hands the
/// state back; the writer must not be used in between.
pub(crate) struct WideBits {
    /// Start of the writer's buffer, with room for the values announced.
    out: *mut u8,
    /// Byte position of the word being filled, its bits, and how many (below 64).
    pos: usize,
    acc: u64,
    fill: u32,
}

impl WideBits {
    /// Takes over `bw`'s state, making room for `values` more values (each moves the
    /// position by at most 8 bytes; the last store and [`BitWriter::resume`]'s need 8).
    pub(crate) fn take<B: Room>(bw: &mut BitWriter<B>, values: usize) -> WideBits {
        let (pos, acc, fill) = bw.suspend();
        WideBits {
            out: bw.room_at(pos, 8 * values + 8),
            pos,
            acc,
            fill,
        }
    }

    /// Appends the low `n` (<= 64) bits of `v` (higher bits zero).
    ///
    /// # Safety
    /// At most the `values` given to [`WideBits::take`] are appended, and the writer is
    /// not used (its buffer not moved) before [`WideBits::finish`].
    #[inline(always)]
    pub(crate) unsafe fn put(&mut self, v: u64, n: u32) {
        debug_assert!(n <= 64 && (n == 64 || v >> n == 0));
        self.acc |= v << self.fill;
        std::ptr::write_unaligned(self.out.add(self.pos) as *mut u64, self.acc.to_le());
        let total = self.fill + n;
        let full = total >> 6;
        self.pos += 8 * full as usize;
        // The bits of `v` that did not fit (none when `fill` is 0).
        self.acc = if full == 1 {
            (v >> 1) >> (63 - self.fill)
        } else {
            self.acc
        };
        self.fill = total & 63;
    }

    /// Hands the state back to `bw` (the writer it was taken from).
    pub(crate) fn finish<B: Room>(self, bw: &mut BitWriter<B>) {
        bw.resume(self.pos, self.acc, self.fill);
    }
}

impl<B: Room + AsMut<Vec<u8>>> BitWriter<B> {
    /// The buffer, cut to the packed bytes (the last one zero-padded).
    pub fn finish(self) -> B {
        let (mut out, end) = self.into_packed();
        out.as_mut().truncate(end);
        out
    }
}

/// Reads what [`BitWriter`] wrote: one unaligned 8-byte load per value, in place, with a
/// zero-padded copy of the last bytes for loads that would cross the end. Past the end the
/// reader yields zeros (never out of bounds); callers check the total they consumed.
pub struct BitReader<'a> {
    data: &'a [u8],
    /// `data[tail_at..]` followed by zeros.
    tail: [u8; 24],
    tail_at: usize,
    bit: usize,
}

impl<'a> BitReader<'a> {
    /// A reader over `data`.
    pub fn new(data: &'a [u8]) -> Self {
        let tail_at = data.len().saturating_sub(8);
        let mut tail = [0u8; 24];
        tail[..data.len() - tail_at].copy_from_slice(&data[tail_at..]);
        BitReader {
            data,
            tail,
            tail_at,
            bit: 0,
        }
    }

    /// The bytes read from.
    pub fn data(&self) -> &'a [u8] {
        self.data
    }

    /// Bits read so far.
    pub fn position(&self) -> usize {
        self.bit
    }

    /// Moves past `n` bits read by other means (e.g. straight from [`BitReader::data`]).
    pub fn skip(&mut self, n: usize) {
        self.bit += n;
    }

    /// The 8 bytes from byte `at` as a little-endian word (zeros past the end).
    #[inline(always)]
    fn word_at(&self, at: usize) -> u64 {
        let b = match self.data.get(at..at + 8) {
            Some(b) => b,
            None => {
                let k = at.saturating_sub(self.tail_at).min(16);
                &self.tail[k..k + 8]
            }
        };
        u64::from_le_bytes(b.try_into().unwrap())
    }

    /// The next `n` (<= 63) bits.
    #[inline(always)]
    pub fn get(&mut self, n: u32) -> u64 {
        if n > 56 {
            return self.get_wide(n);
        }
        self.get_short(n)
    }

    /// The next `n` (<= 56) bits, without the wide-value branch.
    #[inline(always)]
    pub fn get_short(&mut self, n: u32) -> u64 {
        debug_assert!(n <= 56);
        let word = self.word_at(self.bit >> 3);
        let shift = self.bit & 7;
        self.bit += n as usize;
        (word >> shift) & ((1u64 << n) - 1)
    }

    /// Values of more than 56 bits (only 64-bit words have them), in two reads.
    #[inline(never)]
    fn get_wide(&mut self, n: u32) -> u64 {
        let lo = self.get_short(32);
        lo | self.get_short(n - 32) << 32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn bits_roundtrip(vals in proptest::collection::vec((any::<u64>(), 0u32..64), 0..300)) {
            let mut w = BitWriter::with_capacity(16);
            let vals: Vec<(u64, u32)> = vals.into_iter()
                .map(|(v, n)| (if n == 0 { 0 } else { v & (u64::MAX >> (64 - n)) }, n))
                .collect();
            for &(v, n) in &vals {
                w.put(v, n);
            }
            let bytes = w.finish();
            // Merged in pairs (up to 64 bits each) through `WideBits`, taken and handed
            // back at every pair: the same bytes.
            let mut wide = BitWriter::with_capacity(0);
            for pair in vals.chunks(2) {
                let (v, n) = pair.iter().rev().fold((0u64, 0u32), |(a, m), &(v, n)| {
                    ((a.checked_shl(n).unwrap_or(0)) | v, m + n)
                });
                let mut wb = WideBits::take(&mut wide, 2);
                // SAFETY: at most the two values announced; `wide` is untouched until
                // `finish`.
                unsafe {
                    if n <= 64 {
                        wb.put(v, n);
                    } else {
                        wb.put(pair[0].0, pair[0].1);
                        wb.put(pair[1].0, pair[1].1);
                    }
                }
                wb.finish(&mut wide);
            }
            prop_assert_eq!(wide.packed(), &bytes[..]);
            prop_assert_eq!(&wide.finish()[..], &bytes[..]);
            let mut r = BitReader::new(&bytes);
            for &(v, n) in &vals {
                prop_assert_eq!(r.get(n), v);
            }
            // Past the end: zeros, never a panic.
            prop_assert_eq!(r.get(63), 0);
            r.skip(1000);
            prop_assert_eq!(r.get(40), 0);
        }
    }
}
