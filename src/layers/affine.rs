//! `TimeAffine`: `y = x W + b` over all N*T rows at once.
//!
//! The products go through [`crate::gemm::matmul`]; the bias is added inside the fused
//! softmax pass (see [`super::softmax_loss`]) while each row is in cache. What is left here is
//! the bias gradient.

use rayon::prelude::*;

/// Columns per parallel task in [`bias_grad`]; a fixed number, so the summation order (and
/// the result) does not depend on the thread count.
const BIAS_COLS: usize = 512;

/// `db[j] = sum_r dy[r, j]`, summed over rows in increasing `r`.
///
/// Shapes: `db [C]`, `dy [R,C]`.
pub fn bias_grad(db: &mut [f32], dy: &[f32]) {
    let cols = db.len();
    if cols == 0 {
        return;
    }
    assert_eq!(dy.len() % cols, 0);
    db.par_chunks_mut(BIAS_COLS)
        .enumerate()
        .for_each(|(blk, db)| {
            db.fill(0.0);
            let cols_here = blk * BIAS_COLS..blk * BIAS_COLS + db.len();
            for row in dy.chunks_exact(cols) {
                for (g, &x) in db.iter_mut().zip(&row[cols_here.clone()]) {
                    *g += x;
                }
            }
        });
}
