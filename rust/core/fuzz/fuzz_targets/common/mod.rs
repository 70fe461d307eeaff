//! Shared by the fuzz targets and the seed generator: a counting global allocator, so a
//! target can assert that a decoder never allocates far more than its input (or its
//! declared output) justifies, and the deterministic reference tensors that predicted
//! tensors are encoded against (seeds) and decoded with (targets).

#![allow(dead_code)]

use std::alloc::{GlobalAlloc, Layout, System};

use fastckpt_core::{hash, DType};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

/// The system allocator plus a live-bytes counter and a high-water mark (all threads).
pub struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grow(n: usize) {
    let now = LIVE.fetch_add(n, Relaxed) + n;
    PEAK.fetch_max(now, Relaxed);
}

fn shrink(n: usize) {
    LIVE.fetch_sub(n, Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; only counters are updated.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = System.alloc_zeroed(layout);
        if !p.is_null() {
            grow(layout.size());
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout);
        shrink(layout.size());
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = System.realloc(ptr, layout, new_size);
        if !p.is_null() {
            if new_size >= layout.size() {
                grow(new_size - layout.size());
            } else {
                shrink(layout.size() - new_size);
            }
        }
        p
    }
}

/// Measures the extra heap a closure needs at its peak, above what was live when it began
/// (allocations that outlive it, e.g. a grown thread-local scratch, still count).
pub fn peak_heap<R>(f: impl FnOnce() -> R) -> (R, usize) {
    let base = LIVE.load(Relaxed);
    PEAK.store(base, Relaxed);
    let r = f();
    (r, PEAK.load(Relaxed).saturating_sub(base))
}

/// Deterministic xorshift64* generator with a Box-Muller normal.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    pub fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit(), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// The moments `(m, v)` an Adam-direction reference names, `len` bytes each, made like
/// every reference from their names alone ([`reference_for`], float32).
pub fn moments_for(m: &str, v: &str, len: usize) -> (Vec<u8>, Vec<u8>) {
    (
        reference_for(m, DType::F32, len),
        reference_for(v, DType::F32, len),
    )
}

/// The reference tensor of a predicted tensor: `len` bytes of `dtype` determined by the
/// tensor's name alone (weight-like floats, small integers). The seed generator encodes
/// predicted tensors against it, so `decode_file` can offer the right reference for seeds
/// and their mutants without storing reference files.
pub fn reference_for(name: &str, dtype: DType, len: usize) -> Vec<u8> {
    let mut rng = Rng(hash::h64(name.as_bytes()) | 1);
    let words = len / dtype.word_size();
    let mut out: Vec<u8> = match dtype {
        DType::F32 | DType::C64 => (0..words)
            .flat_map(|_| ((rng.normal() * 0.05) as f32).to_le_bytes())
            .collect(),
        DType::F64 | DType::C128 => (0..words)
            .flat_map(|_| (rng.normal() * 0.05).to_le_bytes())
            .collect(),
        DType::BF16 | DType::F16 => (0..words)
            .flat_map(|_| {
                let b = ((rng.normal() * 0.05) as f32).to_le_bytes();
                if dtype == DType::BF16 {
                    [b[2], b[3]]
                } else {
                    // Half precision: exponent 11..14 (~1e-3..0.5), random mantissa and sign.
                    let m = rng.next();
                    ((m & 0x83ff) as u16 | ((11 + (m >> 16) % 4) as u16) << 10).to_le_bytes()
                }
            })
            .collect(),
        DType::Bool => (0..len).map(|_| (rng.next() >> 63) as u8).collect(),
        _ => {
            let w = dtype.word_size();
            (0..words)
                .flat_map(|_| ((rng.normal() * 40.0) as i64).to_le_bytes()[..w].to_vec())
                .collect()
        }
    };
    out.resize(len, 0);
    out
}

/// Splits a fuzz input into a reference of exactly `n` bytes (zero-padded when the input is
/// shorter, leaving no chunk) and the coded chunk that follows it.
pub fn split_reference(rest: &[u8], n: usize) -> (Vec<u8>, &[u8]) {
    if rest.len() >= n {
        let (r, c) = rest.split_at(n);
        (r.to_vec(), c)
    } else {
        let mut r = rest.to_vec();
        r.resize(n, 0);
        (r, &[][..])
    }
}
