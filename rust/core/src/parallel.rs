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
//!
//! [`drain`] runs a list of independent items (a decode's chunks) on the caller and
//! `threads - 1` helpers taking items from a shared counter: the caller works from the
//! first microsecond instead of sleeping while pool workers wake, and is not itself woken
//! at the end. MiniLM bf16 decode, two threads: the workers' wake-up at the start and the
//! caller's at the end cost 0.1-0.25 ms of a 7 ms call through `install`.

use std::cell::OnceCell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use rayon::ThreadPool;

use crate::error::{Error, Result};

static POOLS: PoolMap = OnceLock::new();

thread_local! {
    /// The calling thread as a one-thread pool (`None` where one cannot be built, e.g. on
    /// another pool's worker, or past [`MAX_CALLERS`]).
    static CALLER: OnceCell<Option<ThreadPool>> = const { OnceCell::new() };
}

/// Runs `f` on a pool of `threads` workers (`None`: all cores, rayon's global pool unless
/// the caller is its own one-thread pool; one: the calling thread, see the module notes).
pub fn install<R: Send>(threads: Option<usize>, f: impl FnOnce() -> R + Send) -> Result<R> {
    let Some(n) = thread_count(threads)? else {
        return Ok(f());
    };
    if n == 1 && CALLER.with(|c| c.get_or_init(caller_pool).is_some()) {
        // Runs inline: the calling thread is this pool's only thread.
        return Ok(CALLER
            .with(|c| c.get().and_then(Option::as_ref).map(|p| p.install(f)))
            .expect("the pool was built above"));
    }
    let pool = cached_pool(&POOLS, n, "fastckpt", || pinning(n))?;
    Ok(pool.install(f))
}

/// Runs `f` on every item, in order of `items` as threads come free, on `threads`
/// threads of which the calling thread is one (`None`: all cores): the caller starts on
/// the first item at once and the `threads - 1` helpers join as they wake, so no call
/// waits for a sleeping worker before it starts or for the caller to be woken at its end
/// (about 0.1 ms each on the 2-vCPU VM measured). Items go out one at a time from the
/// front: put the largest first so that the last ones to finish are small. The first
/// error stops the others from taking further items and is returned.
pub fn drain<T: Send>(
    threads: Option<usize>,
    items: Vec<T>,
    f: impl Fn(T) -> Result<()> + Sync,
) -> Result<()> {
    let Some(n) = thread_count(threads)? else {
        use rayon::prelude::*;
        return items.into_par_iter().try_for_each(&f);
    };
    if n == 1 || items.len() < 2 {
        return install(Some(1), || items.into_iter().try_for_each(&f))?;
    }
    let slots: Vec<Mutex<Option<T>>> = items.into_iter().map(|t| Mutex::new(Some(t))).collect();
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let failed: Mutex<Option<Error>> = Mutex::new(None);
    let work = || {
        while !stop.load(Ordering::Relaxed) {
            let Some(slot) = slots.get(next.fetch_add(1, Ordering::Relaxed)) else {
                break;
            };
            let item = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Err(e) = item.map_or(Ok(()), &f) {
                stop.store(true, Ordering::Relaxed);
                failed
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .get_or_insert(e);
            }
        }
    };
    let helpers = helper_pool(n - 1)?;
    helpers.in_place_scope(|s| {
        for _ in 1..n {
            s.spawn(|_| work());
        }
        install(Some(1), work)
    })?;
    failed
        .into_inner()
        .unwrap_or_else(|e| e.into_inner())
        .map_or(Ok(()), Err)
}

/// The threads a call asks for: `threads`, or all cores for `None`; `None` back for a
/// `None` inside another pool's worker (a nested call), which stays in that pool. Zero
/// threads is refused.
fn thread_count(threads: Option<usize>) -> Result<Option<usize>> {
    let n = match threads {
        Some(n) => n,
        None if rayon::current_thread_index().is_some() && !is_own_pool() => return Ok(None),
        None => all_cores(),
    };
    if n == 0 {
        return Err(Error::InvalidArgument("threads must be at least 1".into()));
    }
    Ok(Some(n))
}

/// The helper threads of [`drain`] by count (unpinned: they join a caller that runs
/// wherever the scheduler put it).
static HELPERS: PoolMap = OnceLock::new();

/// The pool of `n` helper threads that [`drain`] shares its items with.
fn helper_pool(n: usize) -> Result<Arc<ThreadPool>> {
    cached_pool(&HELPERS, n, "fastckpt-helper", || None)
}

/// Thread pools by thread count, each built on first use and kept.
type PoolMap = OnceLock<Mutex<HashMap<usize, Arc<ThreadPool>>>>;

/// The pool of `n` threads in `pools`, built on first use with threads called
/// `{name}-{i}`, thread `i` pinned to CPU `cpus()[i]` where `cpus` (asked only when the
/// pool is built) gives a list.
fn cached_pool(
    pools: &PoolMap,
    n: usize,
    name: &'static str,
    cpus: impl FnOnce() -> Option<Vec<usize>>,
) -> Result<Arc<ThreadPool>> {
    let mut pools = pools
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(p) = pools.get(&n) {
        return Ok(p.clone());
    }
    let cpus = cpus();
    let p = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .thread_name(move |i| format!("{name}-{i}"))
        .start_handler(move |i| {
            if let Some(&cpu) = cpus.as_ref().and_then(|c| c.get(i)) {
                pin_to(cpu);
            }
        })
        .build()
        .map_err(|e| Error::InvalidArgument(format!("thread pool: {e}")))?;
    Ok(pools.entry(n).or_insert(Arc::new(p)).clone())
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

    /// Every item is handed out exactly once, whatever the thread count, also from
    /// inside another pool; zero threads is refused.
    #[test]
    fn drain_takes_every_item_once() {
        for threads in [Some(1), Some(2), Some(3), None] {
            let seen: Vec<AtomicUsize> = (0..500).map(|_| AtomicUsize::new(0)).collect();
            drain(threads, (0..500).collect(), |i: usize| {
                seen[i].fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .unwrap();
            assert!(
                seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
                "{threads:?}"
            );
        }
        let nested = install(Some(2), || {
            let count = AtomicUsize::new(0);
            drain(None, vec![(); 64], |()| {
                count.fetch_add(1, Ordering::Relaxed);
                Ok(())
            })
            .map(|()| count.into_inner())
        });
        assert_eq!(nested.unwrap().unwrap(), 64);
        assert!(drain(Some(0), vec![1], |_| Ok(())).is_err());
    }

    /// An item's error is returned and stops the others from taking more items.
    #[test]
    fn drain_stops_at_an_error() {
        for threads in [1, 2] {
            let taken = AtomicUsize::new(0);
            let r = drain(Some(threads), (0..10_000).collect(), |i: usize| {
                taken.fetch_add(1, Ordering::Relaxed);
                match i {
                    3 => Err(Error::Corrupt("item 3".into())),
                    _ => Ok(()),
                }
            });
            assert!(matches!(r, Err(Error::Corrupt(m)) if m == "item 3"));
            assert!(taken.into_inner() < 10_000, "{threads} threads went on");
        }
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
