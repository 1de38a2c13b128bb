//! Plain stochastic gradient descent.

use rayon::prelude::*;

use crate::model::params::Params;

/// Parameters per parallel task: large enough to amortise a task, small enough to split even
/// the book's ch05 model (about 100k parameters) across two threads.
const CHUNK: usize = 1 << 15;

/// The book's `SGD`: `param -= lr * grad`, one loop over the flat buffers.
///
/// ```
/// let mut sgd = rnnlm::Sgd::new(5.0);
/// sgd.lr /= 4.0; // the trainer's decay after an epoch without improvement
/// assert_eq!(sgd.lr, 1.25);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
}

impl Sgd {
    /// An optimizer with learning rate `lr`.
    ///
    /// ```
    /// assert_eq!(rnnlm::Sgd::new(0.5), rnnlm::Sgd { lr: 0.5 });
    /// ```
    pub fn new(lr: f32) -> Self {
        Self { lr }
    }

    /// One update step, in parallel over fixed-size chunks (each element's update is
    /// independent, so the result does not depend on the split).
    ///
    /// **Panics** if `params` and `grads` have different configurations.
    ///
    /// ```
    /// let cfg = rnnlm::Config::new(2, 1, 1).unwrap();
    /// let mut p = rnnlm::Params::zeros(cfg);
    /// let mut g = rnnlm::Params::zeros(cfg);
    /// g.as_mut_slice().fill(2.0);
    /// rnnlm::Sgd::new(0.25).update((&mut p, &g));
    /// assert!(p.as_slice().iter().all(|&x| x == -0.5));
    /// ```
    pub fn update(&self, (params, grads): (&mut Params, &Params)) {
        assert_eq!(params.config(), grads.config(), "params and grads differ");
        let lr = self.lr;
        crate::par::on_worker(|| {
            params
                .as_mut_slice()
                .par_chunks_mut(CHUNK)
                .zip(grads.as_slice().par_chunks(CHUNK))
                .for_each(|(p, g)| {
                    for (p, &g) in p.iter_mut().zip(g) {
                        *p -= lr * g;
                    }
                })
        });
    }

    /// [`Sgd::update`] on the `ranges` of the flat buffers only (sorted, disjoint), as after
    /// [`crate::SimpleRnnlm::backward`], whose gradient is zero outside
    /// [`crate::SimpleRnnlm::grad_ranges`]: `p - lr * 0 = p`, so the result is the dense
    /// update's, bit for bit, without sweeping the untouched rows.
    ///
    /// **Panics** if `params` and `grads` have different configurations or a range is out of
    /// bounds.
    ///
    /// ```
    /// let cfg = rnnlm::Config::new(4, 2, 2).unwrap();
    /// let mut p = rnnlm::Params::zeros(cfg);
    /// let mut g = rnnlm::Params::zeros(cfg);
    /// g.as_mut_slice()[2..4].fill(2.0);
    /// rnnlm::Sgd::new(0.25).update_ranges((&mut p, &g), &[2..4]);
    /// assert_eq!(p.as_slice()[..5], [0.0, 0.0, -0.5, -0.5, 0.0]);
    /// ```
    pub fn update_ranges(
        &self,
        (params, grads): (&mut Params, &Params),
        ranges: &[std::ops::Range<usize>],
    ) {
        assert_eq!(params.config(), grads.config(), "params and grads differ");
        let lr = self.lr;
        let (p, g) = (params.as_mut_slice(), grads.as_slice());
        let step = |p: &mut [f32], g: &[f32]| {
            for (p, &g) in p.iter_mut().zip(g) {
                *p -= lr * g;
            }
        };
        crate::par::on_worker(|| {
            for r in ranges {
                let (p, g) = (&mut p[r.clone()], &g[r.clone()]);
                if p.len() >= 2 * CHUNK {
                    p.par_chunks_mut(CHUNK)
                        .zip(g.par_chunks(CHUNK))
                        .for_each(|(p, g)| step(p, g));
                } else {
                    step(p, g);
                }
            }
        });
    }
}
