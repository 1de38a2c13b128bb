//! Runtime CPU-feature detection.
//!
//! Kernels are compiled once per instruction set (`#[target_feature]` clones of one generic body)
//! and picked here at run time, so the crate needs no `-C target-cpu=native` and still runs on any
//! x86-64 or non-x86 machine through the portable fallback.

use std::sync::OnceLock;

/// The instruction-set level a kernel is dispatched to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// AVX-512F (512-bit vectors, 16 f32 lanes) with FMA.
    Avx512,
    /// AVX2 with FMA (256-bit vectors, 8 f32 lanes).
    Avx2Fma,
    /// Plain Rust that the compiler may auto-vectorise for the baseline target.
    Portable,
}

impl Isa {
    /// Short lowercase name (`avx512`, `avx2`, `portable`), as accepted by `RNNLM_ISA`.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Avx512 => "avx512",
            Isa::Avx2Fma => "avx2",
            Isa::Portable => "portable",
        }
    }

    /// Whether this CPU can run kernels compiled for `self`.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2Fma => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every level this CPU supports, best first (tests run each kernel on all of them).
    pub fn available() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2Fma, Isa::Portable]
            .into_iter()
            .filter(|i| i.is_supported())
            .collect()
    }
}

/// The level kernels use: the best the CPU supports, unless the environment variable
/// `RNNLM_ISA` (`avx512`, `avx2` or `portable`) asks for a lower supported one.
/// Detected once per process.
pub fn isa() -> Isa {
    static ISA: OnceLock<Isa> = OnceLock::new();
    *ISA.get_or_init(|| {
        let best = Isa::available()[0];
        match std::env::var("RNNLM_ISA").ok().as_deref() {
            Some("avx512") if Isa::Avx512.is_supported() => Isa::Avx512,
            Some("avx2") if Isa::Avx2Fma.is_supported() => Isa::Avx2Fma,
            Some("portable") => Isa::Portable,
            _ => best,
        }
    })
}

/// The CPU's vendor, for the few blocking choices that were measured to go opposite ways on
/// AMD and Intel cores (the in-place B reads of `gemm::matmul_packed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Vendor {
    /// `AuthenticAMD`.
    Amd,
    /// `GenuineIntel`.
    Intel,
    /// Anything else, or not x86.
    Other,
}

/// This CPU's vendor, from CPUID leaf 0. Detected once per process.
pub fn vendor() -> Vendor {
    static VENDOR: OnceLock<Vendor> = OnceLock::new();
    *VENDOR.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            // Leaf 0 exists on every x86-64 CPU.
            let r = std::arch::x86_64::__cpuid(0);
            let mut id = [0u8; 12];
            id[..4].copy_from_slice(&r.ebx.to_le_bytes());
            id[4..8].copy_from_slice(&r.edx.to_le_bytes());
            id[8..].copy_from_slice(&r.ecx.to_le_bytes());
            match &id {
                b"AuthenticAMD" => Vendor::Amd,
                b"GenuineIntel" => Vendor::Intel,
                _ => Vendor::Other,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Vendor::Other
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_matches_proc_cpuinfo() {
        // Linux names the vendor in /proc/cpuinfo; elsewhere there is nothing to compare with.
        let Ok(info) = std::fs::read_to_string("/proc/cpuinfo") else {
            return;
        };
        let Some(line) = info.lines().find(|l| l.starts_with("vendor_id")) else {
            return;
        };
        let want = if line.contains("AuthenticAMD") {
            Vendor::Amd
        } else if line.contains("GenuineIntel") {
            Vendor::Intel
        } else {
            Vendor::Other
        };
        assert_eq!(vendor(), want);
    }
}
