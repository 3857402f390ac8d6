//! The one synchronisation shim: every atomic the lock-free protocols use comes
//! from here.
//!
//! Normally these are the `std` types; under `RUSTFLAGS="--cfg loom"` they are
//! loom's, so the very same protocol code (`ring`, `lease`, `group`) is model
//! checked by the `loom-tests` crate. Protocol modules must never name
//! `std::sync::atomic` directly; `tests/sync_shim.rs` greps the sources and
//! fails if one does.
//!
//! Only the protocols need the shim. Code that merely maps memory (`os`,
//! `region`) is compiled out under loom, because loom atomics cannot live in
//! `mmap`ed bytes.

#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{AtomicU32, AtomicU64, Ordering};

/// A memory fence: loom's under `cfg(loom)`.
///
/// Under `--cfg loom_mutant_fence` (loom only) an `Acquire` fence does
/// nothing. The only one is the ring reader's fence between its copy and its
/// re-check of `seq` (`ring::read_with`); the loom suite must catch its loss
/// (see `loom-tests/README.md`). A plain re-export would do otherwise; this
/// wrapper exists only to host that mutant.
#[cfg(loom)]
#[inline]
#[allow(unexpected_cfgs)] // `loom_mutant_fence` exists only for the loom suite.
pub(crate) fn fence(order: Ordering) {
    if cfg!(loom_mutant_fence) && order == Ordering::Acquire {
        return;
    }
    loom::sync::atomic::fence(order);
}

/// Hint to the CPU that we are spinning (a `pause` on x86).
#[inline]
#[cfg_attr(loom, allow(dead_code))] // only the mapped-memory wait paths use it
pub(crate) fn spin_hint() {
    #[cfg(not(loom))]
    std::hint::spin_loop();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// Give the rest of this time slice to another thread.
#[inline]
#[cfg_attr(loom, allow(dead_code))] // only the mapped-memory wait paths use it
pub(crate) fn yield_now() {
    #[cfg(not(loom))]
    std::thread::yield_now();
    #[cfg(loom)]
    loom::thread::yield_now();
}

/// The ordering a ring writer uses to publish a slot.
///
/// `Release` normally. The `loom_mutant` cfg weakens it to `Relaxed`, which the
/// loom suite must catch (see `loom-tests/README.md`): that is the proof that
/// the models can fail.
#[cfg(not(loom_mutant))]
pub(crate) const PUBLISH: Ordering = Ordering::Release;
#[cfg(loom_mutant)]
pub(crate) const PUBLISH: Ordering = Ordering::Relaxed;

// ---------------------------------------------------------------------------
// The asymmetric barrier (issue 13): a cheap side on the hot path, a heavy
// side on the rare path, together as strong as a SeqCst fence on both.
// ---------------------------------------------------------------------------

/// The hot side of the asymmetric barrier (a writer's publish, a writer's
/// claim): orders this thread's earlier stores before its later loads *as far
/// as a [`heavy_barrier`] in any process is concerned*.
///
/// With `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` available and this
/// process registered for it (`crate::os::barrier_mode`), a compiler fence is
/// enough: the heavy side interrupts every CPU running a thread of a
/// registered process and makes it execute a full barrier. Otherwise (no
/// membarrier, registration refused, or not yet decided) a real SeqCst fence,
/// today's cost. The mode is fixed once per process, before its first write.
///
/// Under loom both sides are a SeqCst fence: loom has no asymmetric fence,
/// and a pair of SeqCst fences gives exactly the guarantee membarrier gives
/// (of the two program points, the later one sees everything before the
/// earlier one); see `loom-tests/tests/parking.rs`.
#[inline]
pub(crate) fn light_barrier() {
    #[cfg(not(loom))]
    {
        if crate::os::membarrier_registered() {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// The rare side of the asymmetric barrier (a reader about to park, a writer
/// taking a partition over): after it, either this thread sees a store that
/// another thread made before its [`light_barrier`], or that thread's loads
/// after its light barrier see this thread's stores made before this call.
///
/// `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)` where available (about
/// 0.1–10 µs), else a SeqCst fence. Under `--cfg loom_mutant_membarrier`
/// (loom only) it does nothing, and the parking and claim models must catch
/// the lost ordering.
#[inline]
pub(crate) fn heavy_barrier() {
    #[cfg(not(loom))]
    crate::os::heavy_barrier();
    #[cfg(loom)]
    if !cfg!(loom_mutant_membarrier) {
        fence(Ordering::SeqCst);
    }
}
