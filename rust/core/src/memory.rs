//! Memory hints and streaming stores for large buffers.
//!
//! Writing a fresh multi-megabyte buffer (a decoded tensor, an encoded file) faults in one
//! 4 KiB page at a time; on a busy or virtualized host that costs more than the coding
//! itself. Asking the kernel for transparent huge pages on the buffer's 2 MiB-aligned
//! interior turns 512 faults into one. Hints never change a buffer's contents. Output that
//! is not read back soon is written with non-temporal stores ([`stream_copy`]).

/// Buffers smaller than this are left alone: they hold no whole huge page worth the call.
pub const MIN_HUGE_BYTES: usize = 4 << 20;

const HUGE_PAGE: usize = 2 << 20;

/// Asks for transparent huge pages on the 2 MiB-aligned interior of `buf` before it is
/// first written. A no-op on small buffers, on other systems, or when the kernel says no.
pub fn advise_huge<T>(buf: &mut [T]) {
    let len = std::mem::size_of_val(buf);
    if len < MIN_HUGE_BYTES {
        return;
    }
    #[cfg(target_os = "linux")]
    {
        let start = buf.as_mut_ptr() as usize;
        let lo = start.next_multiple_of(HUGE_PAGE);
        let hi = (start + len) / HUGE_PAGE * HUGE_PAGE;
        if hi > lo {
            // SAFETY: [lo, hi) lies inside `buf`, which we borrow mutably; MADV_HUGEPAGE
            // only changes how the kernel backs those pages, never their contents.
            unsafe {
                libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE);
            }
        }
    }
}

/// Asks for the cache lines of `bytes` to be loaded into L1, without waiting for them: a
/// hint (no result depends on it; prefetches never fault), so that reads of scattered
/// runs overlap instead of waiting for memory one after another.
pub fn prefetch(bytes: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    for at in (0..bytes.len()).step_by(64) {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of x86-64; a prefetch reads nothing and never faults.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(bytes.as_ptr().add(at) as *const i8) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = bytes;
}

/// Starts the writeback to disk of `len` bytes of `file` from `offset`, without waiting
/// for it (Linux `sync_file_range`): a later fsync then finds less left to write. A hint
/// only; a no-op elsewhere or when the call fails.
pub fn start_writeback(file: &std::fs::File, offset: u64, len: u64) {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: a plain syscall on an open descriptor; it reads no memory of ours.
        unsafe {
            libc::sync_file_range(
                file.as_raw_fd(),
                offset as libc::off64_t,
                len as libc::off64_t,
                libc::SYNC_FILE_RANGE_WRITE,
            );
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = (file, offset, len);
}

/// Copies `src` into `dst` (same length) with non-temporal stores where `dst` is aligned
/// (whole 64-byte lines on AVX-512 CPUs, 16 bytes at a time otherwise): output that is
/// not read back soon skips the cache and its read-for-ownership.
pub fn stream_copy(dst: &mut [u8], src: &[u8]) {
    #[cfg(target_arch = "x86_64")]
    {
        if crate::entropy::avx512() {
            // SAFETY: AVX-512 F is present.
            return stream_with(dst, src, 64, |d, s| unsafe { stream64(d, s) });
        }
        // SAFETY: SSE2 is part of x86-64.
        stream_with(dst, src, 16, |d, s| unsafe { stream16(d, s) })
    }
    #[cfg(not(target_arch = "x86_64"))]
    dst.copy_from_slice(src);
}

/// Copies the unaligned head and tail of `dst` plainly and its `line`-aligned body, a
/// multiple of `line` bytes long, with `body`.
#[cfg(target_arch = "x86_64")]
fn stream_with(dst: &mut [u8], src: &[u8], line: usize, body: impl Fn(&mut [u8], &[u8])) {
    assert_eq!(dst.len(), src.len());
    let head = dst.as_ptr().align_offset(line).min(dst.len());
    dst[..head].copy_from_slice(&src[..head]);
    let end = head + (dst.len() - head) / line * line;
    body(&mut dst[head..end], &src[head..end]);
    dst[end..].copy_from_slice(&src[end..]);
}

/// Non-temporal copy of 16-byte units (`dst` 16-byte aligned, lengths equal multiples of
/// 16).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
unsafe fn stream16(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m128i, _mm_loadu_si128, _mm_sfence, _mm_stream_si128};
    for k in (0..dst.len().min(src.len()) / 16 * 16).step_by(16) {
        let v = _mm_loadu_si128(src.as_ptr().add(k) as *const __m128i);
        _mm_stream_si128(dst.as_mut_ptr().add(k) as *mut __m128i, v);
    }
    _mm_sfence();
}

/// Non-temporal copy of whole 64-byte lines (`dst` 64-byte aligned, lengths equal
/// multiples of 64): one store per line, no partial write-combining buffers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn stream64(dst: &mut [u8], src: &[u8]) {
    use std::arch::x86_64::{__m512i, _mm512_loadu_si512, _mm512_stream_si512, _mm_sfence};
    for k in (0..dst.len().min(src.len()) / 64 * 64).step_by(64) {
        let v = _mm512_loadu_si512(src.as_ptr().add(k) as *const __m512i);
        _mm512_stream_si512(dst.as_mut_ptr().add(k) as *mut __m512i, v);
    }
    _mm_sfence();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_keeps_contents() {
        let mut v: Vec<u8> = (0..(9usize << 20)).map(|i| (i * 7 + 3) as u8).collect();
        let before = v.clone();
        advise_huge(&mut v);
        assert_eq!(v, before);
        advise_huge(&mut v[1..4096]);
        assert_eq!(v, before);
    }

    /// Every copier (the one `stream_copy` picks and each the CPU has) copies exactly,
    /// touching nothing around the destination, at every alignment.
    #[test]
    fn stream_copy_copies_at_any_alignment() {
        type Copier = Box<dyn Fn(&mut [u8], &[u8])>;
        let mut copiers: Vec<Copier> = vec![Box::new(stream_copy)];
        #[cfg(target_arch = "x86_64")]
        {
            // SAFETY: SSE2 is part of x86-64.
            copiers.push(Box::new(|d, s| {
                stream_with(d, s, 16, |d, s| unsafe { stream16(d, s) })
            }));
            if crate::entropy::avx512() {
                // SAFETY: AVX-512 F is present.
                copiers.push(Box::new(|d, s| {
                    stream_with(d, s, 64, |d, s| unsafe { stream64(d, s) })
                }));
            }
        }
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 31 + 7) as u8).collect();
        for copy in &copiers {
            for start in 0..65 {
                for len in [0, 1, 15, 16, 17, 63, 64, 65, 100, 4096, 4900] {
                    let mut dst = vec![0u8; 5000 + 80];
                    copy(&mut dst[start..start + len], &src[..len]);
                    assert_eq!(&dst[start..start + len], &src[..len]);
                    assert!(dst[..start].iter().all(|&b| b == 0));
                    assert!(dst[start + len..].iter().all(|&b| b == 0));
                }
            }
        }
    }
}
