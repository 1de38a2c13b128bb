//! `TimeSoftmaxWithLoss`, fused with the output bias: per row, `logits += b`, then the
//! max-subtracted softmax, the cross-entropy of the target and (when training) the gradient
//! `(softmax - onehot) / count`, written over the logits in place. Targets of
//! [`IGNORE`] mask a position: no loss, zero gradient, not counted in the mean.

use rayon::prelude::*;

use crate::kernels::softmax;

/// The book's ignore label.
pub const IGNORE: i32 = -1;

/// Logits per rayon task: enough to amortise waking a thread (a few microseconds), small
/// enough that a task's rows stay in L2 and two cores balance. Row results do not depend on
/// the split, so neither does the loss.
const LOGITS_PER_TASK: usize = 64 * 1024;

/// Rows per rayon task for vocabulary size `v`.
fn rows_per_task(v: usize) -> usize {
    LOGITS_PER_TASK.div_ceil(v.max(1)).max(1)
}

/// Number of positions that count towards the mean (targets other than [`IGNORE`]).
pub fn count(ts: &[i32]) -> usize {
    ts.iter().filter(|&&t| t != IGNORE).count()
}

/// Forward and backward in one pass. Returns the mean loss over unmasked positions
/// (0 when every position is masked).
///
/// Shapes: `logits [R,V]` (in: `x W`, out: `dL/dlogits`), `bias [V]`, `ts [R]`, `losses [R]`
/// (per-row losses, summed afterwards in row order so the result is thread-count independent).
///
/// **Panics** if a target is `>= V` (the model validates targets first).
pub fn forward_backward(logits: &mut [f32], bias: &[f32], ts: &[i32], losses: &mut [f32]) -> f32 {
    let v = bias.len();
    let n = count(ts);
    let scale = if n == 0 { 0.0 } else { 1.0 / n as f32 };
    let rows = rows_per_task(v);
    logits
        .par_chunks_mut(v * rows)
        .zip(ts.par_chunks(rows))
        .zip(losses.par_chunks_mut(rows))
        .for_each(|((logits, ts), losses)| rows_forward_backward(logits, bias, ts, losses, scale));
    mean(losses, n)
}

/// Forward only (evaluation): adds the bias in place and returns the mean loss.
pub fn forward(logits: &mut [f32], bias: &[f32], ts: &[i32], losses: &mut [f32]) -> f32 {
    let v = bias.len();
    let n = count(ts);
    let rows = rows_per_task(v);
    logits
        .par_chunks_mut(v * rows)
        .zip(ts.par_chunks(rows))
        .zip(losses.par_chunks_mut(rows))
        .for_each(|((logits, ts), losses)| rows_forward(logits, bias, ts, losses));
    mean(losses, n)
}

/// [`forward_backward`] for a block of rows on the calling thread, with the gradient scale
/// `1/count` given (the count is over the whole batch); writes per-row losses only.
pub fn rows_forward_backward(
    logits: &mut [f32],
    bias: &[f32],
    ts: &[i32],
    losses: &mut [f32],
    scale: f32,
) {
    let v = bias.len();
    for ((row, &t), loss) in logits.chunks_exact_mut(v).zip(ts).zip(losses) {
        if t == IGNORE {
            row.fill(0.0);
            *loss = 0.0;
            continue;
        }
        for (x, &b) in row.iter_mut().zip(bias) {
            *x += b;
        }
        *loss = softmax::softmax_xent_grad_row(row, t as usize, scale);
    }
}

/// [`forward`] for a block of rows on the calling thread; writes per-row losses only.
pub fn rows_forward(logits: &mut [f32], bias: &[f32], ts: &[i32], losses: &mut [f32]) {
    let v = bias.len();
    for ((row, &t), loss) in logits.chunks_exact_mut(v).zip(ts).zip(losses) {
        for (x, &b) in row.iter_mut().zip(bias) {
            *x += b;
        }
        *loss = if t == IGNORE {
            0.0
        } else {
            softmax::xent_row(row, t as usize)
        };
    }
}

/// Mean of the per-row losses over `n` counted positions, summed in f64 in row order.
pub fn mean(losses: &[f32], n: usize) -> f32 {
    if n == 0 {
        return 0.0;
    }
    (losses.iter().map(|&l| l as f64).sum::<f64>() / n as f64) as f32
}
