//! Optimizers and gradient clipping.

mod clip;
mod sgd;

pub use clip::ClipGrads;
pub use sgd::Sgd;
