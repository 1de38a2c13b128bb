//! Vectorised kernels with scalar references and per-ISA clones.
//!
//! Each kernel has a safe entry that dispatches on [`crate::cpu::isa`] and a `_with` variant
//! that takes the instruction set explicitly (tests run every supported one).

pub mod dropout;
mod expm1;
pub mod gates;
mod simd;
pub mod softmax;
pub mod tanh;
pub(crate) mod zeroed;

/// Deterministic random inputs shared by the kernel tests.
#[cfg(test)]
pub(crate) mod test_rng {
    /// A splitmix64 stream of f32s in `[lo, hi)`.
    pub(crate) struct Rng(pub(crate) u64);

    impl Rng {
        pub(crate) fn next_u64(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        }

        pub(crate) fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
            let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
            lo + (hi - lo) * u
        }

        pub(crate) fn vec(&mut self, n: usize, lo: f32, hi: f32) -> Vec<f32> {
            (0..n).map(|_| self.uniform(lo, hi)).collect()
        }
    }
}
