//! The model: configuration, parameters, workspace, and the `SimpleRnnlm` that composes the
//! layers.

pub mod config;
mod output_grad;
pub mod params;
pub mod simple;
pub(crate) mod workspace;
