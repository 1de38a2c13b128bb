//! Perplexity evaluation.

use crate::data::batcher::{eval_batch, eval_iters};
use crate::error::{Error, Result};
use crate::model::params::Params;
use crate::model::simple::forward;
use crate::model::workspace::Workspace;

/// What an evaluation measured.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// `exp(mean_loss)`.
    pub perplexity: f64,
    /// Mean of the per-batch mean cross-entropies (nats).
    pub mean_loss: f64,
    /// Batches evaluated.
    pub batches: usize,
    /// Positions scored (`batches * N * T`).
    pub tokens: usize,
}

/// The book's `eval_perplexity`: batches of `n` rows (10) by `t` steps (35), row `i` of batch
/// `k` starting at `k*T + i*jump` with `jump = (len-1)/N`, the tail that does not fill a batch
/// dropped, the hidden state starting at zero and carried across batches; perplexity is the
/// exponential of the mean of the per-batch mean losses.
///
/// # Errors
/// If the corpus cannot fill one batch or holds an id outside the vocabulary.
pub fn eval_perplexity(params: &Params, corpus: &[u32], n: usize, t: usize) -> Result<Perplexity> {
    let iters = eval_iters(corpus.len(), n, t);
    if iters == 0 {
        return Err(Error::invalid(
            "evaluation corpus",
            format!(
                "{} tokens cannot fill one batch of {n} x {t} (needs at least {})",
                corpus.len(),
                n * t + 1
            ),
        ));
    }
    let mut ws = Workspace::new(*params.config(), n, t, false)?;
    let (mut xs, mut ts) = (vec![0u32; n * t], vec![0i32; n * t]);
    let mut total = 0.0f64;
    for k in 0..iters {
        eval_batch(corpus, n, t, k, &mut xs, &mut ts);
        total += forward(params, &mut ws, &xs, &ts)? as f64;
    }
    let mean_loss = total / iters as f64;
    Ok(Perplexity {
        perplexity: mean_loss.exp(),
        mean_loss,
        batches: iters,
        tokens: iters * n * t,
    })
}
