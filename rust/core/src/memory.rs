//! Memory hints for large buffers.
//!
//! Writing a fresh multi-megabyte buffer (a decoded tensor, an encoded file) faults in one
//! 4 KiB page at a time; on a busy or virtualized host that costs more than the coding
//! itself. Asking the kernel for transparent huge pages on the buffer's 2 MiB-aligned
//! interior turns 512 faults into one. Hints never change a buffer's contents.

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
}
