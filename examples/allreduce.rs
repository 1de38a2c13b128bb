//! Times the sum of data-parallel training (`dist::mpi::Mpi::sum_f32`: MPI's allreduce, with
//! the copy into its send buffer) at message sizes from 4 KB to 256 MB: the `allreduce(bytes,
//! R)` term of the cost model in docs/SCALING.md.
//!
//! ```text
//! cargo build --release --features mpi --example allreduce
//! mpirun --allow-run-as-root -np 2 --mca btl tcp,self target/release/examples/allreduce
//! ```
//!
//! Rank 0 prints one line per size: the median time of the repetitions and the bus bandwidth
//! `2 (R-1)/R * bytes / time` (what a ring allreduce moves per rank).

use std::time::Instant;

use rnnlm::dist::mpi::Mpi;
use rnnlm::dist::Collective;

fn main() {
    let mpi = Mpi::init().expect("MPI initialises");
    let (rank, ranks) = (mpi.rank(), mpi.ranks());
    for shift in (10..=26).step_by(2) {
        let floats = 1usize << shift;
        // Zeros stay zeros, so every repetition sums the same numbers.
        let mut buf = vec![0.0f32; floats];
        let reps = ((1usize << 30) / (4 * floats)).clamp(5, 200);
        mpi.sum_f32(&mut buf).expect("sum");
        let mut times: Vec<f64> = (0..reps)
            .map(|_| {
                let t = Instant::now();
                mpi.sum_f32(&mut buf).expect("sum");
                t.elapsed().as_secs_f64()
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[reps / 2];
        let bytes = 4 * floats;
        if rank == 0 {
            let bus = 2.0 * (ranks as f64 - 1.0) / ranks as f64 * bytes as f64 / median;
            println!(
                "ranks {ranks} bytes {bytes} median_us {:.1} bus_gb_s {:.2} reps {reps}",
                median * 1e6,
                bus / 1e9
            );
        }
    }
}
