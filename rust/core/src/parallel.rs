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
        None if is_own_pool() => all_cores(),
        None => return Ok(f()),
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
                let p = rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .thread_name(|i| format!("fastckpt-{i}"))
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
