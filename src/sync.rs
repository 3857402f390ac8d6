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
