//! Vectorised kernels with scalar references and per-ISA clones.
//!
//! Each kernel has a safe entry that dispatches on [`crate::cpu::isa`] and a `_with` variant
//! that takes the instruction set explicitly (tests run every supported one).

mod expm1;
pub mod recurrent;
mod simd;
pub mod softmax;
pub mod tanh;
