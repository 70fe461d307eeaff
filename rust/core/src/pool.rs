//! Reusable page-aligned buffers for decoded tensors, file reads and encoded chunks kept
//! until their file is written ([`Held`]).
//!
//! A fresh buffer is faulted in one 4 KiB page at a time as it is first written; on
//! virtual machines each fault costs microseconds, more than decoding the page. Buffers
//! from [`Buffer::new`] are their own mappings, 2 MiB-aligned and advised to use
//! transparent huge pages when large (one fault per 2 MiB on first use), and a dropped
//! buffer goes back to a pool that serves the next request of about its size without any
//! fault (loading checkpoint after checkpoint reuses the same memory). The pool keeps at
//! most [`limit`] bytes of unused buffers; beyond that they are unmapped.

use std::ptr::NonNull;
use std::sync::Mutex;

/// Requests below this size are not worth a mapping of their own (the C allocator
/// serves them from memory it already holds).
pub const MIN_BYTES: usize = 64 << 10;

/// Default cap on the bytes of unused buffers kept for reuse.
pub const DEFAULT_LIMIT: usize = 1 << 30;

const PAGE: usize = 4096;
const HUGE_PAGE: usize = 2 << 20;

/// Unused mappings, oldest first, and the cap on their total size.
struct Free {
    maps: Vec<Mapping>,
    bytes: usize,
    limit: usize,
}

static FREE: Mutex<Free> = Mutex::new(Free {
    maps: Vec::new(),
    bytes: 0,
    limit: DEFAULT_LIMIT,
});

fn free_list() -> std::sync::MutexGuard<'static, Free> {
    // A panic while holding the lock leaves the list consistent (every edit is one push,
    // remove or sum), so a poisoned lock is still usable.
    FREE.lock().unwrap_or_else(|e| e.into_inner())
}

/// An exclusively owned, page-aligned byte buffer (zeroes when fresh); its memory
/// returns to the pool when it is dropped. A reused buffer holds what its last owner left
/// or zeroes: callers overwrite every byte (decoders do).
pub struct Buffer {
    map: Option<Mapping>,
    len: usize,
}

impl Buffer {
    /// A buffer of `len` bytes, reused from the pool when one of about that size is free,
    /// else freshly mapped; `None` when the system refuses the memory.
    pub fn new(len: usize) -> Option<Buffer> {
        let cap = len.max(1).div_ceil(PAGE) * PAGE;
        let map = take(cap).or_else(|| Mapping::new(cap))?;
        Some(Buffer {
            map: Some(map),
            len,
        })
    }

    /// Start of the buffer (page-aligned; 2 MiB-aligned when 2 MiB or larger).
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.map
            .as_ref()
            .map_or(NonNull::dangling(), |m| m.ptr)
            .as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        let at = self.map.as_ref().map_or(NonNull::dangling(), |m| m.ptr);
        // SAFETY: the mapping is at least `len` bytes and always initialized; `&self`
        // allows no writes meanwhile.
        unsafe { std::slice::from_raw_parts(at.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        let len = self.len;
        // SAFETY: the mapping is at least `len` bytes, readable and writable, and owned
        // by `self` alone (mapped memory is always initialized: zeroes or old contents).
        unsafe { std::slice::from_raw_parts_mut(self.as_mut_ptr(), len) }
    }
}

impl crate::entropy::bits::Room for Buffer {
    /// Grows within the mapping when it has the room (its bytes are all initialized),
    /// else moves to a buffer twice the size.
    fn room(&mut self, n: usize) -> &mut [u8] {
        let cap = self.map.as_ref().map_or(0, |m| m.cap);
        if n > cap {
            let mut bigger = Buffer::new(2 * n).expect("memory for a growing buffer");
            bigger.as_mut_slice()[..self.len].copy_from_slice(self.as_slice());
            *self = bigger;
        } else if n > self.len {
            self.len = n;
        }
        self.as_mut_slice()
    }
}

impl Drop for Buffer {
    fn drop(&mut self) {
        if let Some(map) = self.map.take() {
            give(map);
        }
    }
}

/// Bytes kept for a while (an encoded chunk until its file is written): in a pooled buffer
/// when large, so that encoding checkpoint after checkpoint reuses memory instead of
/// faulting in fresh pages; on the heap otherwise.
pub enum Held {
    /// Small (or pooling off): an ordinary allocation.
    Heap(Vec<u8>),
    /// Large: a pooled buffer.
    Pooled(Buffer),
}

impl Held {
    /// A copy of `bytes`.
    pub fn copy_of(bytes: &[u8]) -> Held {
        Held::filled(bytes.len(), |out| out.copy_from_slice(bytes))
    }

    /// `len` bytes that `fill` writes (every one of them): in place, not a copy of bytes
    /// made elsewhere.
    pub fn filled(len: usize, fill: impl FnOnce(&mut [u8])) -> Held {
        if len >= MIN_BYTES && limit() > 0 {
            if let Some(mut b) = Buffer::new(len) {
                fill(b.as_mut_slice());
                return Held::Pooled(b);
            }
        }
        let mut v = vec![0; len];
        fill(&mut v);
        Held::Heap(v)
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        match self {
            Held::Heap(v) => v,
            Held::Pooled(b) => b.as_slice(),
        }
    }
}

/// Takes the smallest unused mapping of at least `cap` bytes that wastes at most an
/// eighth (plus 64 KiB) of it.
fn take(cap: usize) -> Option<Mapping> {
    let mut free = free_list();
    let most = cap + cap / 8 + (64 << 10);
    let (k, _) = free
        .maps
        .iter()
        .enumerate()
        .filter(|(_, m)| (cap..=most).contains(&m.cap))
        .min_by_key(|(_, m)| m.cap)?;
    let map = free.maps.remove(k);
    free.bytes -= map.cap;
    Some(map)
}

/// Keeps `map` for reuse, unmapping the oldest unused mappings beyond the limit.
fn give(map: Mapping) {
    if limit() == 0 {
        return; // dropped: unmapped
    }
    if map.cap >= HUGE_PAGE {
        // Most of the pooled bytes, few calls (each costs a TLB shootdown); smaller
        // buffers stay as they are, within the limit.
        map.lazy_free();
    }
    let mut evicted = Vec::new();
    {
        let mut free = free_list();
        free.bytes += map.cap;
        free.maps.push(map);
        while free.bytes > free.limit {
            let old = free.maps.remove(0);
            free.bytes -= old.cap;
            evicted.push(old);
        }
    }
    drop(evicted); // unmapped outside the lock
}

/// Sets the cap on unused pooled bytes (0: keep none, and callers may take ordinary
/// allocations instead) and unmaps what exceeds it; returns the previous cap.
pub fn set_limit(bytes: usize) -> usize {
    let mut evicted = Vec::new();
    let old = {
        let mut free = free_list();
        let old = std::mem::replace(&mut free.limit, bytes);
        while free.bytes > free.limit {
            let m = free.maps.remove(0);
            free.bytes -= m.cap;
            evicted.push(m);
        }
        old
    };
    drop(evicted);
    old
}

/// The cap on unused pooled bytes.
pub fn limit() -> usize {
    free_list().limit
}

/// Bytes of unused buffers the pool holds now.
pub fn pooled_bytes() -> usize {
    free_list().bytes
}

/// One private anonymous mapping of `cap` bytes (a multiple of the page size).
struct Mapping {
    ptr: NonNull<u8>,
    cap: usize,
}

// SAFETY: a mapping is plain memory owned by one `Mapping` at a time; a shared
// reference to it allows no access to the memory at all.
unsafe impl Send for Mapping {}
// SAFETY: see above.
unsafe impl Sync for Mapping {}

#[cfg(unix)]
impl Mapping {
    /// Maps `cap` bytes; mappings of 2 MiB or more start on a 2 MiB boundary and are
    /// advised to use transparent huge pages.
    fn new(cap: usize) -> Option<Mapping> {
        let align = if cap >= HUGE_PAGE { HUGE_PAGE } else { PAGE };
        let span = cap.checked_add(align - PAGE)?;
        // SAFETY: a fresh private anonymous mapping; no existing memory is touched.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                span,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let start = (base as usize).next_multiple_of(align);
        let (head, tail) = (start - base as usize, span - (start - base as usize) - cap);
        // SAFETY: the head and tail cut off lie inside the mapping just made and are not
        // part of the returned range; MADV_HUGEPAGE only changes how pages are backed.
        unsafe {
            if head > 0 {
                libc::munmap(base, head);
            }
            if tail > 0 {
                libc::munmap((start + cap) as *mut libc::c_void, tail);
            }
            #[cfg(target_os = "linux")]
            if align == HUGE_PAGE {
                libc::madvise(start as *mut libc::c_void, cap, libc::MADV_HUGEPAGE);
            }
        }
        Some(Mapping {
            ptr: NonNull::new(start as *mut u8)?,
            cap,
        })
    }
}

impl Mapping {
    /// Lets the kernel take the pages back under memory pressure (they then read as
    /// zeroes); until it does, writing them again costs no fault. Unused pooled memory
    /// so never pushes a host into swap.
    fn lazy_free(&self) {
        #[cfg(target_os = "linux")]
        // SAFETY: the range is exactly this mapping; MADV_FREE discards contents only,
        // which a pooled buffer's next owner overwrites anyway.
        unsafe {
            libc::madvise(self.ptr.as_ptr().cast(), self.cap, libc::MADV_FREE);
        }
    }
}

#[cfg(unix)]
impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr..ptr + cap` is exactly the range this mapping owns.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.cap);
        }
    }
}

#[cfg(not(unix))]
impl Mapping {
    fn layout(cap: usize) -> Option<std::alloc::Layout> {
        let align = if cap >= HUGE_PAGE { HUGE_PAGE } else { PAGE };
        std::alloc::Layout::from_size_align(cap, align).ok()
    }
    fn new(cap: usize) -> Option<Mapping> {
        // SAFETY: `cap` is non-zero; zeroed memory matches what a fresh mapping gives.
        let ptr = unsafe { std::alloc::alloc_zeroed(Self::layout(cap)?) };
        Some(Mapping {
            ptr: NonNull::new(ptr)?,
            cap,
        })
    }
}

#[cfg(not(unix))]
impl Drop for Mapping {
    fn drop(&mut self) {
        let layout = Self::layout(self.cap).expect("layout of an allocated mapping");
        // SAFETY: allocated by `Mapping::new` with this very layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tests share the global pool: run the ones that change its limit under this lock.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn buffers_are_aligned_and_writable() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        for len in [0, 1, 4095, 4096, 100_000, 3 << 20, (5 << 20) + 17] {
            let mut b = Buffer::new(len).expect("memory");
            assert_eq!(b.len(), len);
            let align = if len.div_ceil(PAGE) * PAGE >= HUGE_PAGE {
                HUGE_PAGE
            } else {
                PAGE
            };
            assert_eq!(b.as_mut_ptr() as usize % align, 0);
            let s = b.as_mut_slice();
            s.iter_mut().enumerate().for_each(|(i, x)| *x = i as u8);
            assert!(s.iter().enumerate().all(|(i, &x)| x == i as u8));
        }
    }

    #[test]
    fn dropped_buffers_are_reused_up_to_the_limit() {
        let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        let old = set_limit(64 << 20);
        let mut a = Buffer::new(3 << 20).expect("memory");
        a.as_mut_slice()[123] = 42;
        let at = a.as_mut_ptr();
        drop(a);
        assert!(pooled_bytes() >= 3 << 20);
        // About the same size: the same memory (its old contents, or zeroes if the kernel
        // took the pages back meanwhile).
        let mut b = Buffer::new((3 << 20) - 1000).expect("memory");
        assert_eq!(b.as_mut_ptr(), at);
        assert!([0, 42].contains(&b.as_mut_slice()[123]));
        // Far smaller: not that buffer (it would waste most of it).
        let c = Buffer::new(100_000).expect("memory");
        drop((b, c));
        set_limit(0);
        assert_eq!(pooled_bytes(), 0);
        let d = Buffer::new(1 << 20).expect("memory");
        drop(d);
        assert_eq!(pooled_bytes(), 0, "limit 0 keeps nothing");
        set_limit(old);
    }

    #[test]
    fn held_bytes_are_copies() {
        for n in [0, 5, MIN_BYTES - 1, MIN_BYTES, 300_001] {
            let src: Vec<u8> = (0..n).map(|i| (i * 13 + 1) as u8).collect();
            let h = Held::copy_of(&src);
            assert_eq!(h.as_slice(), &src[..]);
        }
    }

    /// A bit writer over a pooled buffer too small for what it packs grows it (within its
    /// mapping, then into a bigger one) and packs the same bytes as over a `Vec`.
    #[test]
    fn bit_writer_grows_a_buffer() {
        use crate::entropy::bits::BitWriter;
        let vals: Vec<(u64, u32)> = (0..50_000u64).map(|i| (i * 7919 % 977, 10)).collect();
        let mut on_vec = BitWriter::with_capacity(0);
        let mut on_buf = BitWriter::reusing(Buffer::new(100).expect("memory"));
        for &(v, n) in &vals {
            on_vec.put(v, n);
            on_buf.put(v, n);
        }
        let (buf, len) = on_buf.into_packed();
        assert_eq!(&buf.as_slice()[..len], &on_vec.finish()[..]);
        assert!(buf.len() >= len);
    }

    #[test]
    fn buffers_move_between_threads() {
        let b = Buffer::new(200_000).expect("memory");
        std::thread::spawn(move || {
            let mut b = b;
            b.as_mut_slice().fill(1);
        })
        .join()
        .expect("thread");
    }
}
