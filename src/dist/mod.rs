//! Data-parallel training across processes: what the trainer needs from a communicator
//! ([`Collective`]), and which rows of the book's batch each rank runs ([`rows_of`]).
//!
//! Each rank runs its own rows of every batch ([`crate::BookBatches::next_rows`], the offsets
//! of the whole `N`) as one shard ([`crate::Shard`]), so the ranks' gradients summed are the
//! whole batch's; every rank then clips by the same global norm and applies the same step,
//! so the weights stay equal everywhere. With the `mpi` feature, [`mpi::Mpi`] is the
//! communicator of `mpirun` (MPI's allreduce); tests use an in-process one.

use std::ops::Range;

use crate::error::Result;

#[cfg(feature = "mpi")]
pub mod mpi;

/// The collective operations of data-parallel training. Every rank calls them in the same
/// order with buffers of the same length; each returns once every rank has contributed.
pub trait Collective: Send {
    /// This process's rank, `0..ranks()`.
    fn rank(&self) -> usize;

    /// The number of ranks.
    fn ranks(&self) -> usize;

    /// Replaces `buf` on every rank by the element-wise sum of all ranks' `buf`.
    ///
    /// # Errors
    /// If the communication fails.
    fn sum_f32(&self, buf: &mut [f32]) -> Result<()>;

    /// [`Collective::sum_f32`] for `f64`.
    ///
    /// # Errors
    /// If the communication fails.
    fn sum_f64(&self, buf: &mut [f64]) -> Result<()>;
}

/// Rank `rank`'s rows of a batch of `n` rows split among `ranks`: contiguous, in rank order,
/// the first `n % ranks` ranks one row more.
///
/// ```
/// use rnnlm::dist::rows_of;
/// assert_eq!((0..3).map(|r| rows_of(r, 3, 8)).collect::<Vec<_>>(), [0..3, 3..6, 6..8]);
/// assert_eq!(rows_of(0, 1, 20), 0..20);
/// ```
///
/// **Panics** if `rank >= ranks`.
pub fn rows_of(rank: usize, ranks: usize, n: usize) -> Range<usize> {
    assert!(rank < ranks, "rows_of: rank {rank} of {ranks}");
    let (base, extra) = (n / ranks, n % ranks);
    let start = rank * base + rank.min(extra);
    start..start + base + usize::from(rank < extra)
}
