//! Splits the fused engine's element-wise loops over libtorch's own threads.
//!
//! libtorch runs its intra-op work on an OpenMP pool (`libgomp`, `--threads` wide) whose
//! threads keep spinning for a while after each GEMM; threads of our own would fight them for
//! the cores. So the loops run on that pool too, entered the way compiled `#pragma omp
//! parallel` code enters it (`GOMP_parallel`, looked up at run time like MKL's functions).
//! Where libtorch has no such pool, or inside a parallel region, the loop runs whole on the
//! calling thread. Each thread takes one contiguous range, so a loop whose elements do not
//! depend on each other gives the same numbers however many threads run it.
use super::symbol;
use std::ffi::{c_void, CStr};
use std::marker::PhantomData;
use std::ops::Range;

type Parallel = unsafe extern "C" fn(unsafe extern "C" fn(*mut c_void), *mut c_void, u32, u32);
type Query = unsafe extern "C" fn() -> i32;

struct Omp {
    parallel: Parallel,
    thread_num: Query,
    num_threads: Query,
    in_parallel: Query,
}

fn omp() -> Option<&'static Omp> {
    static OMP: std::sync::OnceLock<Option<Omp>> = std::sync::OnceLock::new();
    OMP.get_or_init(|| {
        let query = |name: &CStr| {
            // SAFETY: OpenMP's `int omp_…(void)` queries.
            symbol(name).map(|p| unsafe { std::mem::transmute::<*mut c_void, Query>(p) })
        };
        Some(Omp {
            // SAFETY: libgomp's `void GOMP_parallel(void (*)(void *), void *, unsigned, unsigned)`.
            parallel: symbol(c"GOMP_parallel")
                .map(|p| unsafe { std::mem::transmute::<*mut c_void, Parallel>(p) })?,
            thread_num: query(c"omp_get_thread_num")?,
            num_threads: query(c"omp_get_num_threads")?,
            in_parallel: query(c"omp_in_parallel")?,
        })
    })
    .as_ref()
}

/// Calls `f` on consecutive ranges that together cover `0..len`, one per thread of libtorch's
/// pool (as many threads as libtorch uses, at most one per `grain` items), each from its
/// thread, and returns when all have returned. `f` must not panic (a panic aborts).
pub fn for_ranges<F: Fn(Range<usize>) + Sync>(len: usize, grain: usize, f: F) {
    let threads = (tch::get_num_threads().max(1) as usize)
        .min(len / grain.max(1))
        .max(1);
    let omp = omp().filter(|omp| {
        // SAFETY: a plain query.
        threads > 1 && unsafe { (omp.in_parallel)() } == 0
    });
    let Some(omp) = omp else {
        return f(0..len);
    };
    struct Job<'a, F> {
        f: &'a F,
        len: usize,
        omp: &'a Omp,
    }
    unsafe extern "C" fn run<F: Fn(Range<usize>) + Sync>(data: *mut c_void) {
        // SAFETY: `data` is the `Job` below, alive until GOMP_parallel returns.
        let job = unsafe { &*(data as *const Job<F>) };
        // SAFETY: plain queries, inside the parallel region.
        let (t, n) = unsafe { ((job.omp.thread_num)(), (job.omp.num_threads)()) };
        let chunk = job.len.div_ceil(n.max(1) as usize);
        let start = (t.max(0) as usize).saturating_mul(chunk).min(job.len);
        let end = (start + chunk).min(job.len);
        if start < end {
            (job.f)(start..end);
        }
    }
    let job = Job { f: &f, len, omp };
    // SAFETY: `run::<F>` reads `job` as the `Job<F>` it is; GOMP_parallel returns after every
    // thread has run it, while `job` and `f` are alive.
    unsafe {
        (omp.parallel)(
            run::<F>,
            &job as *const Job<F> as *mut c_void,
            threads as u32,
            0,
        )
    };
}

/// A mutable slice that the threads of [`for_ranges`] write in disjoint parts.
pub struct Disjoint<'a, T> {
    ptr: *mut T,
    len: usize,
    _slice: PhantomData<&'a mut [T]>,
}

// SAFETY: the threads only reach the elements through `Disjoint::part`, whose contract keeps
// their parts apart.
unsafe impl<T: Send> Sync for Disjoint<'_, T> {}

impl<'a, T> Disjoint<'a, T> {
    pub fn new(slice: &'a mut [T]) -> Self {
        Disjoint {
            ptr: slice.as_mut_ptr(),
            len: slice.len(),
            _slice: PhantomData,
        }
    }

    /// The elements in `range`.
    ///
    /// # Safety
    /// No other live slice from this `Disjoint` may overlap `range`.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn part(&self, range: Range<usize>) -> &'a mut [T] {
        assert!(
            range.start <= range.end && range.end <= self.len,
            "a range within the slice"
        );
        // SAFETY: in bounds (checked above), and unaliased by the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(range.start), range.len()) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn the_ranges_cover_the_items_once_on_several_threads() {
        tch::set_num_threads(2);
        let seen: Vec<AtomicUsize> = (0..1000).map(|_| AtomicUsize::new(0)).collect();
        let threads = std::sync::Mutex::new(std::collections::HashSet::new());
        for_ranges(seen.len(), 100, |r| {
            threads.lock().unwrap().insert(std::thread::current().id());
            for i in r {
                seen[i].fetch_add(1, Ordering::Relaxed);
            }
        });
        assert!(seen.iter().all(|s| s.load(Ordering::Relaxed) == 1));
        let found = omp().is_some();
        assert_eq!(threads.lock().unwrap().len(), if found { 2 } else { 1 });
        // Fewer items than a grain: one range, on the calling thread.
        let calls = AtomicUsize::new(0);
        for_ranges(50, 100, |r| {
            assert_eq!(r, 0..50);
            calls.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(calls.load(Ordering::Relaxed), 1);
    }
}
