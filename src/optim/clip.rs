//! Gradient clipping by one global L2 norm (the book's `clip_grads`).

use rayon::prelude::*;

/// Gradients per parallel partial sum; a fixed size, so the summation order (and the norm)
/// does not depend on the thread count.
const CHUNK: usize = 1 << 15;

/// The book's `clip_grads`: `norm = sqrt(sum of g^2 over every gradient)`,
/// `rate = max_norm / (norm + 1e-6)`, and when `rate < 1` every gradient is scaled by `rate`.
///
/// Holds the per-chunk partial sums, so clipping allocates only when the gradient buffer
/// grows.
///
/// ```
/// let mut clip = rnnlm::optim::ClipGrads::new(); // reusable: keeps its scratch
/// let mut g = [0.3f32, 0.4];
/// assert!((clip.clip(&mut g, 1.0) - 0.5).abs() < 1e-6); // norm 0.5 <= 1: unchanged
/// assert_eq!(g, [0.3, 0.4]);
/// assert!((clip.clip(&mut g, 0.25) - 0.5).abs() < 1e-6); // norm 0.5 > 0.25: halved
/// assert!((g[0] - 0.15).abs() < 1e-6 && (g[1] - 0.2).abs() < 1e-6);
/// ```
#[derive(Clone, Debug, Default)]
pub struct ClipGrads {
    partials: Vec<f64>,
}

impl ClipGrads {
    /// A clipper with no scratch yet.
    ///
    /// ```
    /// let cfg = rnnlm::Config::new(10, 4, 4).unwrap();
    /// let mut model = rnnlm::SimpleRnnlm::new(cfg, 1, 3, 0).unwrap();
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// let mut clip = rnnlm::optim::ClipGrads::new();
    /// let before = clip.clip(model.grads_mut().as_mut_slice(), 1e-3);
    /// let after = clip.clip(model.grads_mut().as_mut_slice(), 1e-3); // norm once clipped
    /// assert!(before > 1e-3 && (after - 1e-3).abs() < 1e-6);
    /// ```
    pub fn new() -> Self {
        Self::default()
    }

    /// The global L2 norm of `grads`, computed as [`ClipGrads::clip`] computes it (so a run
    /// without clipping sees the same number): squares summed in f64 per fixed chunk, then in
    /// chunk order, whatever the thread count. Non-finite when any gradient is.
    ///
    /// ```
    /// let mut clip = rnnlm::optim::ClipGrads::new();
    /// assert_eq!(clip.norm(&[3.0, 4.0]), 5.0);
    /// assert!(clip.norm(&[1.0, f32::NAN]).is_nan());
    /// ```
    pub fn norm(&mut self, grads: &[f32]) -> f64 {
        let chunks = grads.len().div_ceil(CHUNK);
        self.partials.resize(chunks, 0.0);
        crate::par::on_worker(|| {
            self.partials
                .par_iter_mut()
                .zip(grads.par_chunks(CHUNK))
                .for_each(|(p, g)| *p = g.iter().map(|&x| x as f64 * x as f64).sum());
        });
        self.partials.iter().sum::<f64>().sqrt()
    }

    /// Clips `grads` (all gradients in one flat buffer) to global norm `max_norm`; returns the
    /// norm before clipping. Squares are summed in f64, per fixed chunk, then in chunk order.
    ///
    /// ```
    /// let mut g = [3.0f32, 4.0];
    /// let norm = rnnlm::optim::ClipGrads::new().clip(&mut g, 1.0);
    /// assert_eq!(norm, 5.0);
    /// assert!((g[0] - 0.6).abs() < 1e-6 && (g[1] - 0.8).abs() < 1e-6);
    /// ```
    pub fn clip(&mut self, grads: &mut [f32], max_norm: f32) -> f64 {
        let norm = self.norm(grads);
        let rate = max_norm as f64 / (norm + 1e-6);
        if rate < 1.0 {
            let rate = rate as f32;
            crate::par::on_worker(|| {
                grads
                    .par_chunks_mut(CHUNK)
                    .for_each(|g| g.iter_mut().for_each(|x| *x *= rate));
            });
        }
        norm
    }
}

impl ClipGrads {
    /// [`ClipGrads::norm`] of a buffer that is zero outside `ranges` (sorted, disjoint),
    /// reading those only: the same chunks, each summed in element order (a zero adds nothing
    /// to a sum of squares), so the same bits as the dense norm.
    ///
    /// ```
    /// let mut g = vec![0.0f32; 100_000];
    /// g[5] = 3.0;
    /// g[70_000] = 4.0;
    /// let mut clip = rnnlm::optim::ClipGrads::new();
    /// let dense = clip.norm(&g);
    /// assert_eq!(clip.norm_ranges(&g, &[0..10, 69_990..70_010]), dense);
    /// ```
    pub fn norm_ranges(&mut self, grads: &[f32], ranges: &[std::ops::Range<usize>]) -> f64 {
        let chunks = grads.len().div_ceil(CHUNK);
        self.partials.clear();
        self.partials.resize(chunks, 0.0);
        let square_sum = |acc: f64, g: &[f32]| g.iter().fold(acc, |a, &x| a + x as f64 * x as f64);
        let partials = &mut self.partials;
        crate::par::on_worker(|| {
            for r in ranges {
                let (mut at, end) = (r.start, r.end);
                // The first chunk's piece, folded into what earlier ranges left there.
                let first_end = end.min((at / CHUNK + 1) * CHUNK);
                if at < first_end {
                    let k = at / CHUNK;
                    partials[k] = square_sum(partials[k], &grads[at..first_end]);
                    at = first_end;
                }
                // Whole chunks: no other range reaches them.
                let whole_end = end / CHUNK * CHUNK;
                if at < whole_end {
                    let k0 = at / CHUNK;
                    partials[k0..whole_end / CHUNK]
                        .par_iter_mut()
                        .zip(grads[at..whole_end].par_chunks(CHUNK))
                        .for_each(|(p, g)| *p = square_sum(0.0, g));
                    at = whole_end;
                }
                if at < end {
                    let k = at / CHUNK;
                    partials[k] = square_sum(partials[k], &grads[at..end]);
                }
            }
        });
        self.partials.iter().sum::<f64>().sqrt()
    }

    /// [`ClipGrads::clip`] of a buffer that is zero outside `ranges` (see
    /// [`ClipGrads::norm_ranges`]): the same norm and scaled values, bit for bit.
    pub fn clip_ranges(
        &mut self,
        grads: &mut [f32],
        ranges: &[std::ops::Range<usize>],
        max_norm: f32,
    ) -> f64 {
        let norm = self.norm_ranges(grads, ranges);
        let rate = max_norm as f64 / (norm + 1e-6);
        if rate < 1.0 {
            let rate = rate as f32;
            crate::par::on_worker(|| {
                for r in ranges {
                    let g = &mut grads[r.clone()];
                    if g.len() >= 2 * CHUNK {
                        g.par_chunks_mut(CHUNK)
                            .for_each(|g| g.iter_mut().for_each(|x| *x *= rate));
                    } else {
                        g.iter_mut().for_each(|x| *x *= rate);
                    }
                }
            });
        }
        norm
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clips_only_above_the_threshold() {
        let mut g: Vec<f32> = (0..100_000)
            .map(|i| ((i % 7) as f32 - 3.0) * 0.01)
            .collect();
        let want: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        let orig = g.clone();
        let mut c = ClipGrads::new();
        let norm = c.clip(&mut g, 1e6);
        assert!((norm - want).abs() < 1e-9 * want);
        assert_eq!(g, orig, "below the threshold nothing changes");
        let norm = c.clip(&mut g, 0.25);
        let rate = (0.25 / (norm + 1e-6)) as f32;
        for (a, b) in g.iter().zip(&orig) {
            assert_eq!(*a, b * rate);
        }
        let after: f64 = g.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        assert!((after - 0.25).abs() < 1e-5, "norm after clipping {after}");
    }

    #[test]
    fn ranges_give_the_dense_bits() {
        // Values spread so the order of additions shows in the last bits.
        let mut g = vec![0.0f32; 5 * CHUNK + 123];
        let ranges = [
            3..40,
            100..CHUNK + 7,
            CHUNK + 9..3 * CHUNK + 1,
            4 * CHUNK - 2..5 * CHUNK + 100,
        ];
        for r in &ranges {
            for i in r.clone() {
                g[i] = ((i * 7919) % 1013) as f32 * 1e-3 + 1e-7 * i as f32;
            }
        }
        let mut c = ClipGrads::new();
        assert_eq!(c.norm_ranges(&g, &ranges).to_bits(), c.norm(&g).to_bits());
        let (mut a, mut b) = (g.clone(), g.clone());
        let na = c.clip(&mut a, 0.5);
        let nb = c.clip_ranges(&mut b, &ranges, 0.5);
        assert_eq!(na.to_bits(), nb.to_bits());
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
    }

    #[test]
    fn norm_is_identical_across_thread_counts() {
        let g: Vec<f32> = (0..300_001)
            .map(|i| ((i * 7919) % 1000) as f32 * 1e-3)
            .collect();
        let run = |threads| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            pool.install(|| ClipGrads::new().clip(&mut g.clone(), 1.0).to_bits())
        };
        assert_eq!(run(1), run(2));
        assert_eq!(run(1), run(3));
    }
}
