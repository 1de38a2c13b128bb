//! Plain stochastic gradient descent.

use crate::model::params::Params;

/// The book's `SGD`: `param -= lr * grad`, one loop over the flat buffers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sgd {
    /// Learning rate.
    pub lr: f32,
}

impl Sgd {
    /// An optimizer with learning rate `lr`.
    pub fn new(lr: f32) -> Self {
        Self { lr }
    }

    /// One update step.
    ///
    /// **Panics** if `params` and `grads` have different configurations.
    pub fn update(&self, (params, grads): (&mut Params, &Params)) {
        assert_eq!(params.config(), grads.config(), "params and grads differ");
        let lr = self.lr;
        for (p, &g) in params.as_mut_slice().iter_mut().zip(grads.as_slice()) {
            *p -= lr * g;
        }
    }
}
