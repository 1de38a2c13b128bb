//! Small rayon helpers.

/// Runs `f` on a rayon worker thread: the calling thread if it is one, else one hand-off to
/// the current pool. Every parallel loop started from outside a pool pays a cross-thread
/// hand-off and wake-up; this makes it one per pass instead of one per loop (at the book's
/// ch05 size that halves the step time). Callers already inside `pool.install` pay nothing.
pub(crate) fn on_worker<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if rayon::current_thread_index().is_some() {
        f()
    } else {
        rayon::join(f, || ()).0
    }
}
