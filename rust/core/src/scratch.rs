//! Per-thread pools of reusable buffers for the coders' temporaries.
//!
//! Chunk coders need several chunk-sized temporaries. Fresh allocations of that size are
//! fresh pages: page faults, kernel zeroing and, with several threads, contention on the
//! process's memory map. Reusing buffers per worker thread avoids all three.

use std::cell::RefCell;

/// A buffer borrowed from the calling thread's pool; it goes back when dropped, at the
/// longest length its allocation is known to have initialized (so that a chunk-sized
/// buffer lent for a short use needs no refill when a chunk-sized use comes next).
///
/// Lent buffers must never get uninitialized values written into their spare capacity
/// (safe code cannot make them visible, but the pool does when it restores the length).
pub struct Scratch<T: Copy + Default + 'static> {
    buf: Vec<T>,
    pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<T>>>>,
    /// Address of the lent allocation and how many elements of it are initialized.
    held: (usize, usize),
}

impl<T: Copy + Default + 'static> std::ops::Deref for Scratch<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.buf
    }
}

impl<T: Copy + Default + 'static> std::ops::DerefMut for Scratch<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.buf
    }
}

impl<T: Copy + Default + 'static> AsMut<Vec<T>> for Scratch<T> {
    fn as_mut(&mut self) -> &mut Vec<T> {
        &mut self.buf
    }
}

impl<T: Copy + Default + 'static> Drop for Scratch<T> {
    fn drop(&mut self) {
        let mut buf = std::mem::take(&mut self.buf);
        let (at, init) = self.held;
        if buf.as_ptr() as usize == at && buf.len() < init && buf.capacity() >= init {
            // SAFETY: the same allocation held `init` initialized elements when it was
            // lent; shortening a `Vec` of `Copy` elements leaves them in place, and lent
            // buffers only ever get initialized values written (see the type's docs).
            unsafe { buf.set_len(init) };
        }
        self.pool.with(|p| p.borrow_mut().push(buf));
    }
}

/// The pooled buffer that fits `len` best: the shortest already holding `len` elements
/// (nothing to fill), else the longest (least to fill), so that small requests do not
/// take (and shorten) the chunk-sized buffers that large ones then refill.
fn pop_fitting<T: Copy + Default + 'static>(
    pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<T>>>>,
    len: usize,
) -> Vec<T> {
    pool.with(|p| {
        let mut p = p.borrow_mut();
        let fits = (0..p.len())
            .filter(|&i| p[i].len() >= len)
            .min_by_key(|&i| p[i].len());
        let best = fits.or_else(|| (0..p.len()).max_by_key(|&i| p[i].len()));
        best.map(|i| p.swap_remove(i)).unwrap_or_default()
    })
}

fn take<T: Copy + Default + 'static>(
    pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<T>>>>,
    len: usize,
) -> Scratch<T> {
    let mut buf = pop_fitting(pool, len);
    let held = (buf.as_ptr() as usize, buf.len());
    buf.clear();
    buf.resize(len, T::default());
    lend(buf, pool, held)
}

/// Wraps `buf` (popped with `held`: its address and length then) as a loan.
fn lend<T: Copy + Default + 'static>(
    buf: Vec<T>,
    pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<T>>>>,
    (at, init): (usize, usize),
) -> Scratch<T> {
    // A reallocation (growth) leaves only the new length initialized.
    let init = if buf.as_ptr() as usize == at {
        init.max(buf.len())
    } else {
        buf.len()
    };
    Scratch {
        held: (buf.as_ptr() as usize, init),
        buf,
        pool,
    }
}

/// Like [`take`], but the contents are left as they were (stale bytes of an earlier use,
/// zeros where the buffer grows): for buffers that are wholly overwritten.
fn take_dirty<T: Copy + Default + 'static>(
    pool: &'static std::thread::LocalKey<RefCell<Vec<Vec<T>>>>,
    len: usize,
) -> Scratch<T> {
    let mut buf = pop_fitting(pool, len);
    let held = (buf.as_ptr() as usize, buf.len());
    buf.truncate(len);
    buf.resize(len, T::default());
    lend(buf, pool, held)
}

thread_local! {
    static BYTES: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    static WORDS: RefCell<Vec<Vec<u16>>> = const { RefCell::new(Vec::new()) };
    static CODES: RefCell<Vec<Vec<u32>>> = const { RefCell::new(Vec::new()) };
    static WIDE: RefCell<Vec<Vec<u64>>> = const { RefCell::new(Vec::new()) };
}

/// `len` zeroed bytes from this thread's pool.
pub fn bytes(len: usize) -> Scratch<u8> {
    take(&BYTES, len)
}

/// `len` bytes of unspecified value from this thread's pool (for buffers the caller
/// overwrites entirely).
pub fn bytes_dirty(len: usize) -> Scratch<u8> {
    take_dirty(&BYTES, len)
}

/// `len` u16s of unspecified value from this thread's pool (for buffers the caller
/// overwrites entirely).
pub fn words_dirty(len: usize) -> Scratch<u16> {
    take_dirty(&WORDS, len)
}

/// `len` zeroed u16s from this thread's pool.
pub fn words(len: usize) -> Scratch<u16> {
    take(&WORDS, len)
}

/// `len` zeroed u64s from this thread's pool.
pub fn wide(len: usize) -> Scratch<u64> {
    take(&WIDE, len)
}

/// `len` zeroed u32s from this thread's pool.
pub fn codes(len: usize) -> Scratch<u32> {
    take(&CODES, len)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk-sized buffer lent for a short use comes back whole: the next chunk-sized
    /// dirty loan gets the same memory with its old contents (no refill), and a short
    /// request does not take it while a shorter buffer fits.
    #[test]
    fn lent_buffers_keep_their_length() {
        std::thread::spawn(|| {
            let mut big = bytes_dirty(1 << 16);
            big.fill(7);
            let at = big.as_ptr();
            let tiny = bytes(10);
            drop((big, tiny));
            let mut short = bytes_dirty(100);
            assert_eq!(short.as_ptr(), at);
            short.truncate(10);
            drop(short);
            let small = bytes(5);
            let again = bytes_dirty(1 << 16);
            assert_eq!(again.as_ptr(), at);
            assert!(again.iter().all(|&b| b == 7));
            assert_ne!(small.as_ptr(), at);
            assert!(small.iter().all(|&b| b == 0));
        })
        .join()
        .unwrap();
    }
}
