//! [`super::Collective`] over MPI (the `mpi` feature: rsmpi over the system's MPI library).

use std::cell::RefCell;

use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use crate::error::{Error, Result};

/// The world communicator of this MPI job (`mpirun -np R ...`; a process started alone is a
/// job of one rank).
pub struct Mpi {
    // Dropped last: finalises MPI.
    world: SimpleCommunicator,
    /// rsmpi's reductions take separate send and receive buffers: the send side is copied
    /// here, kept between calls.
    send32: RefCell<Vec<f32>>,
    send64: RefCell<Vec<f64>>,
    _universe: Universe,
}

impl std::fmt::Debug for Mpi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mpi")
            .field("rank", &self.world.rank())
            .field("size", &self.world.size())
            .finish()
    }
}

impl Mpi {
    /// Initialises MPI (once per process).
    ///
    /// # Errors
    /// If MPI was initialised before, or the MPI library cannot serialise calls from several
    /// threads.
    pub fn init() -> Result<Self> {
        // Serialized: the trainer calls MPI from a rayon worker, not the thread that
        // initialised it (one thread at a time: `Mpi` is not `Sync`).
        let (universe, level) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::invalid("MPI", "MPI is already initialised in this process"))?;
        if level < Threading::Serialized {
            return Err(Error::invalid(
                "MPI",
                format!("the MPI library provides threading level {level:?}, not Serialized"),
            ));
        }
        Ok(Self {
            world: universe.world(),
            send32: RefCell::new(Vec::new()),
            send64: RefCell::new(Vec::new()),
            _universe: universe,
        })
    }

    /// `buf` replaced by its sum over the ranks, through the kept send buffer `send`.
    fn sum<T: Equivalence + Copy>(&self, send: &RefCell<Vec<T>>, buf: &mut [T]) {
        let mut send = send.borrow_mut();
        send.clear();
        send.extend_from_slice(buf);
        self.world
            .all_reduce_into(&send[..], buf, SystemOperation::sum());
    }
}

// SAFETY: MPI was initialised at MPI_THREAD_SERIALIZED (checked in `Mpi::init`), so any
// thread may make MPI calls as long as no two make them at once. Moving `Mpi` to another
// thread keeps that: it is not `Sync` (its `RefCell`s), so only its one owner calls into it.
unsafe impl Send for Mpi {}

impl super::Collective for Mpi {
    fn rank(&self) -> usize {
        self.world.rank() as usize
    }

    fn ranks(&self) -> usize {
        self.world.size() as usize
    }

    fn sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.sum(&self.send32, buf);
        Ok(())
    }

    fn sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum(&self.send64, buf);
        Ok(())
    }
}

/// Ends the whole MPI job with `code` (every rank), as a rank that cannot go on must: a rank
/// that just exits, or finalises MPI, can leave the others waiting in a collective. Without
/// an initialised MPI, exits this process.
pub fn abort_job(code: i32) -> ! {
    if mpi::environment::is_initialized() && !mpi::environment::is_finalized() {
        SimpleCommunicator::world().abort(code)
    }
    std::process::exit(code)
}
