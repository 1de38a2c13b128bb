//! TEMPORARY scalar stand-in (replaced by the register-blocked kernel).
pub const PANEL: usize = 16;
pub fn packed_len(k: usize, n: usize) -> usize {
    k * n.div_ceil(PANEL) * PANEL
}
pub fn pack_b(k: usize, n: usize, b: &[f32], rs: usize, cs: usize, out: &mut [f32]) {
    let np = n.div_ceil(PANEL);
    for p in 0..np {
        for r in 0..k {
            for j in 0..PANEL {
                let col = p * PANEL + j;
                out[(p * k + r) * PANEL + j] = if col < n { b[r * rs + col * cs] } else { 0.0 };
            }
        }
    }
}
#[allow(clippy::too_many_arguments)]
pub fn gemm_packed(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    lda: usize,
    packed: &[f32],
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
) {
    for i in 0..m {
        for j in 0..n {
            let (p, jj) = (j / PANEL, j % PANEL);
            let mut acc = 0.0f32;
            for r in 0..k {
                acc = a[i * lda + r].mul_add(packed[(p * k + r) * PANEL + jj], acc);
            }
            let cij = &mut c[i * ldc + j];
            *cij = if accumulate { *cij + acc } else { acc };
        }
    }
}
