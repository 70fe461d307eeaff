//! Rayon thread pools keyed by thread count, built once and reused across calls.
//!
//! One thread means the calling thread itself: handing the work to a pool thread while
//! the caller sleeps made single-threaded calls up to twice as slow on the 2-vCPU VM
//! measured (the caller's core idles while another is woken; pinning both to one core did
//! not show it). The caller becomes thread 0 of a one-thread pool of its own
//! (`ThreadPoolBuilder::use_current_thread`), so nested parallel iterators stay on it.
//! Larger pools keep their own threads: a caller-inclusive pool of two threads, tried,
//! ran as one (most likely because the caller was already thread 0 of its one-thread
//! pool, and a thread belongs to one rayon pool only). For the same reason "all cores"
//! cannot mean "run in place" on a thread that has become its own one-thread pool: its
//! parallel iterators would stay on it (a default-threads encode after a one-thread call
//! ran on one core); such a thread takes a pool of all cores instead.
//!
//! A pool with as many threads as the process may use CPUs pins its threads one per CPU
//! (Linux; `FASTCKPT_PIN_THREADS=0` turns it off, `=1` pins smaller pools too). On the
//! 2-vCPU VM measured, waking two sleeping workers often put both on one vCPU (an idle
//! vCPU the host has descheduled counts as busy to the guest's scheduler) and they then
//! shared it for the whole call: 1 in 3 two-thread decodes of MiniLM took 15-18 ms
//! instead of 10.7 (CPU time the same), always after the workers had slept. Pinned, every
//! call took ~10.7 ms. Work stealing keeps a pinned worker on a busy CPU from holding the
//! others up.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

use crate::error::{Error, Result};

static POOLS: OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>> = OnceLock::new();

thread_local! {
    /// The calling thread as a one-thread pool (`None` where one cannot be built, e.g. on
    /// another pool's worker, or past [`MAX_CALLERS`]).
    static CALLER: OnceCell<Option<ThreadPool>> = const { OnceCell::new() };
}

/// Runs `f` on a pool of `threads` workers (`None`: all cores, rayon's global pool unless
/// the caller is its own one-thread pool; one: the calling thread, see the module notes).
pub fn install<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R> {
    let n = match threads {
        Some(n) => n,
        // Inside another pool's worker (a nested call): stay in that pool.
        None if rayon::current_thread_index().is_some() && !is_own_pool() => return Ok(f()),
        None => all_cores(),
    };
    if n == 0 {
        return Err(Error::InvalidArgument("threads must be at least 1".into()));
    }
    if n == 1 && CALLER.with(|c| c.get_or_init(caller_pool).is_some()) {
        // Runs inline: the calling thread is this pool's only thread.
        return Ok(CALLER
            .with(|c| c.get().and_then(Option::as_ref).map(|p| p.install(f)))
            .expect("the pool was built above"));
    }
    let pool = {
        let mut pools = POOLS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match pools.get(&n) {
            Some(p) => p.clone(),
            None => {
                let cpus = pinning(n);
                let p = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("fastckpt-{i}"))
                    .start_handler(move |i| {
                        if let Some(&cpu) = cpus.as_ref().and_then(|c| c.get(i)) {
                            pin_to(cpu);
                        }
                    })
                    .build()
                    .map_err(|e| Error::InvalidArgument(format!("thread pool: {e}")))?;
                pools.entry(n).or_insert(Arc::new(p)).clone()
            }
        }
    };
    Ok(pool.install(f))
}

/// Whether the calling thread has become its own one-thread pool (see the module notes).
fn is_own_pool() -> bool {
    CALLER.with(|c| c.get().is_some_and(Option::is_some))
}

/// The thread count of rayon's global pool: `RAYON_NUM_THREADS` when set and positive,
/// else the available parallelism.
fn all_cores() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The CPUs that the `n` threads of a new pool are pinned to, one each (see the module
/// notes): the calling thread's allowed CPUs when there are exactly `n` of them, or at
/// least `n` with `FASTCKPT_PIN_THREADS=1`; `None` (no pinning) otherwise.
fn pinning(n: usize) -> Option<Vec<usize>> {
    let mode = std::env::var("FASTCKPT_PIN_THREADS").unwrap_or_default();
    if mode == "0" {
        return None;
    }
    let cpus = allowed_cpus()?;
    let fits = if mode == "1" {
        n <= cpus.len()
    } else {
        n == cpus.len()
    };
    (fits && n > 1).then(|| cpus[..n].to_vec())
}

/// The CPUs the calling thread may run on (`None` where that cannot be read).
#[cfg(target_os = "linux")]
fn allowed_cpus() -> Option<Vec<usize>> {
    // SAFETY: `set` is a plain bit set that `sched_getaffinity` fills; size and pointer
    // describe it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return None;
        }
        let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect();
        (!cpus.is_empty()).then_some(cpus)
    }
}

#[cfg(not(target_os = "linux"))]
fn allowed_cpus() -> Option<Vec<usize>> {
    None
}

/// Pins the calling thread to `cpu` (best effort: a refusal leaves it unpinned).
#[cfg(target_os = "linux")]
fn pin_to(cpu: usize) {
    // SAFETY: as in `allowed_cpus`; `cpu` < CPU_SETSIZE as it came from there.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

#[cfg(not(target_os = "linux"))]
fn pin_to(_cpu: usize) {}

/// Calling threads that got a pool of their own; later ones share the ordinary pool.
static CALLERS: AtomicUsize = AtomicUsize::new(0);
/// Rayon leaks a caller pool's registry (about 8 KB) when its thread ends: this bounds it
/// for programs that start many short-lived threads.
const MAX_CALLERS: usize = 64;

/// A one-thread pool whose thread is the calling thread (`None` past [`MAX_CALLERS`]).
fn caller_pool() -> Option<ThreadPool> {
    if CALLERS.fetch_add(1, Ordering::Relaxed) >= MAX_CALLERS {
        return None;
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .use_current_thread()
        .build()
        .ok()?;
    pool.current_thread_index().is_some().then_some(pool)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rayon::prelude::*;

    /// One thread: every item runs on the caller, nested calls work.
    /// All cores stay all cores on a thread that ran a one-thread call before.
    #[test]
    fn all_cores_after_a_one_thread_call() {
        std::thread::spawn(|| {
            let before = install(None, rayon::current_num_threads).unwrap();
            install(Some(1), || ()).unwrap();
            let after = install(None, rayon::current_num_threads).unwrap();
            assert_eq!(after, before);
            assert_eq!(after, all_cores());
        })
        .join()
        .unwrap();
    }

    #[test]
    fn one_thread_is_the_caller() {
        let me = std::thread::current().id();
        let ids: Vec<_> = install(Some(1), || {
            (0..1000)
                .into_par_iter()
                .map(|_| std::thread::current().id())
                .collect()
        })
        .unwrap();
        // Unless earlier test threads used up the callers' pools (MAX_CALLERS).
        if CALLER.with(|c| c.get().is_some_and(Option::is_some)) {
            assert!(ids.iter().all(|&id| id == me));
        }
        let nested = install(Some(1), || install(Some(1), || 7).unwrap()).unwrap();
        assert_eq!(nested, 7);
    }

    /// A pool of every allowed CPU has one thread pinned to each; a smaller one is not
    /// pinned (unless the environment says otherwise, when this checks nothing).
    #[cfg(target_os = "linux")]
    #[test]
    fn full_pools_pin_one_thread_per_cpu() {
        let cpus = allowed_cpus().expect("affinity readable");
        if cpus.len() < 2 || std::env::var_os("FASTCKPT_PIN_THREADS").is_some() {
            return;
        }
        let masks = |n| install(Some(n), || rayon::broadcast(|_| allowed_cpus().unwrap()));
        let mut each: Vec<usize> = masks(cpus.len())
            .unwrap()
            .into_iter()
            .map(|m| {
                assert_eq!(m.len(), 1, "one CPU per thread");
                m[0]
            })
            .collect();
        each.sort_unstable();
        assert_eq!(each, cpus);
        if cpus.len() > 2 {
            assert!(masks(2).unwrap().iter().all(|m| m == &cpus));
        }
        assert_eq!(pinning(1), None);
    }

    /// More threads: results in order, same as one thread; zero is refused.
    #[test]
    fn pools_agree_and_zero_is_refused() {
        let sum = |n| {
            install(Some(n), || {
                (0..100_000u64).into_par_iter().map(|x| x * x).sum::<u64>()
            })
            .unwrap()
        };
        assert_eq!(sum(1), sum(2));
        assert_eq!(sum(2), sum(3));
        assert!(install(Some(0), || ()).is_err());
        let other = std::thread::spawn(move || sum(1)).join().unwrap();
        assert_eq!(other, sum(1));
    }
}
