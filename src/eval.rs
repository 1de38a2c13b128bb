//! Perplexity evaluation.

use crate::data::batcher::{eval_batch, eval_iters};
use crate::data::ids::Tokens;
use crate::error::{Error, Result};
use crate::model::params::Params;
use crate::model::simple::forward;
use crate::model::workspace::Workspace;

/// How a corpus is cut into batches for evaluation.
///
/// ```
/// use rnnlm::Protocol;
/// assert_eq!(rnnlm::train::TrainConfig::default().protocol, Protocol::Book);
/// // Serialised (e.g. in resumable checkpoints) by name.
/// assert_eq!(serde_json::to_string(&Protocol::Full).unwrap(), r#""full""#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// The book's `eval_perplexity` (see [`eval_perplexity`]): the tail that does not fill a
    /// batch is dropped, and perplexity is the exponential of the mean per-batch loss.
    Book,
    /// Every token after the first is scored exactly once, the final partial chunk included
    /// (as PyTorch's word_language_model example intends); see [`eval_full`].
    Full,
    /// PyTorch word_language_model's own `evaluate()` (`batchify` + `get_batch`): `N` streams
    /// cut contiguously, the tail that does not fill them dropped, each stream's last token
    /// never a target; see [`eval_torch`].
    Torch,
}

impl Protocol {
    /// `"book"`, `"full"` or `"torch"`.
    ///
    /// ```
    /// use rnnlm::Protocol;
    /// let names = [Protocol::Book.name(), Protocol::Full.name(), Protocol::Torch.name()];
    /// assert_eq!(names, ["book", "full", "torch"]);
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Book => "book",
            Protocol::Full => "full",
            Protocol::Torch => "torch",
        }
    }
}

/// Evaluates with any protocol (`n` rows or streams, `t` steps per chunk).
///
/// # Errors
/// As [`eval_perplexity`] / [`eval_full`] / [`eval_torch`]; each of them gives
/// [`Error::NotFinite`], naming the corpus position of the target, where the model's logits are
/// not finite or give the target probability 0, rather than a NaN or infinite perplexity.
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::{evaluate, Protocol};
/// let params = rnnlm::Params::init_book(
///     rnnlm::Config::new(10, 4, 4).unwrap(),
///     &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
/// );
/// let corpus: Vec<u32> = (0..400).map(|i| i % 10).collect();
/// let book = evaluate(&params, &corpus, Protocol::Book, 10, 35).unwrap();
/// let full = evaluate(&params, &corpus, Protocol::Full, 10, 35).unwrap();
/// let torch = evaluate(&params, &corpus, Protocol::Torch, 10, 35).unwrap();
/// assert_eq!((book.tokens, full.tokens), (350, 399)); // full scores every token once
/// assert_eq!(torch.tokens, 390); // 10 streams of 40 tokens, 39 targets each
/// ```
pub fn evaluate<'a>(
    params: &Params,
    corpus: impl Into<Tokens<'a>>,
    protocol: Protocol,
    n: usize,
    t: usize,
) -> Result<Perplexity> {
    let corpus = corpus.into();
    match protocol {
        Protocol::Book => eval_perplexity(params, corpus, n, t),
        Protocol::Full => eval_full(params, corpus, n, t),
        Protocol::Torch => eval_torch(params, corpus, n, t),
    }
}

/// What an evaluation measured.
///
/// ```
/// use rand::SeedableRng;
/// let cfg = rnnlm::Config::new(10, 4, 4).unwrap();
/// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let corpus: Vec<u32> = (0..200).map(|i| i % 10).collect();
/// let r = rnnlm::eval_perplexity(&params, &corpus, 2, 5).unwrap();
/// assert_eq!(r.perplexity, r.mean_loss.exp());
/// assert_eq!((r.batches, r.tokens), (19, 19 * 2 * 5)); // 199 / 10 batches of 2 x 5
/// ```
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Perplexity {
    /// `exp(mean_loss)`.
    pub perplexity: f64,
    /// Mean of the per-batch mean cross-entropies (nats).
    pub mean_loss: f64,
    /// Batches evaluated.
    pub batches: usize,
    /// Positions scored (`batches * N * T` for the book protocol; every target for the others).
    pub tokens: usize,
}

impl Perplexity {
    /// What a model without a finite perplexity is logged with (NaN everywhere).
    pub(crate) fn not_finite() -> Self {
        Perplexity {
            perplexity: f64::NAN,
            mean_loss: f64::NAN,
            batches: 0,
            tokens: 0,
        }
    }
}

/// The book's `eval_perplexity`: batches of `n` rows (10) by `t` steps (35), row `i` of batch
/// `k` starting at `k*T + i*jump` with `jump = (len-1)/N`, the tail that does not fill a batch
/// dropped, the hidden state starting at zero and carried across batches; perplexity is the
/// exponential of the mean of the per-batch mean losses.
///
/// # Errors
/// If the corpus cannot fill one batch or holds an id outside the vocabulary, or the
/// workspace does not fit in memory ([`Error::Memory`], see [`Workspace::new`]).
///
/// ```
/// use rand::SeedableRng;
/// let cfg = rnnlm::Config::new(10, 4, 4).unwrap();
/// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let corpus: Vec<u32> = (0..400).map(|i| i % 10).collect();
/// let r = rnnlm::eval_perplexity(&params, &corpus, 10, 35).unwrap();
/// assert_eq!((r.batches, r.tokens), (1, 350)); // (400-1) / 350 = 1 batch, the tail dropped
/// assert!((r.perplexity - 10.0).abs() < 0.1); // an untrained model is near-uniform
/// ```
pub fn eval_perplexity<'a>(
    params: &Params,
    corpus: impl Into<Tokens<'a>>,
    n: usize,
    t: usize,
) -> Result<Perplexity> {
    let corpus = corpus.into();
    let iters = eval_iters(corpus.len(), n, t);
    if iters == 0 {
        return Err(Error::invalid(
            "evaluation corpus",
            format!(
                "{} tokens cannot fill one batch of {n} x {t} (needs at least {})",
                corpus.len(),
                n.saturating_mul(t).saturating_add(1)
            ),
        ));
    }
    let mut ws = Workspace::new(*params.config(), n, t, false)?;
    let (mut xs, mut ts) = (vec![0u32; n * t], vec![0i32; n * t]);
    let mut total = 0.0f64;
    let (len, jump) = (corpus.len(), (corpus.len() - 1) / n);
    for k in 0..iters {
        eval_batch(&corpus, n, t, k, &mut xs, &mut ts);
        corpus.consumed(4 * n * t);
        total += forward(params, &mut ws, &xs, &ts)? as f64;
        // Row i, step s of batch k predicts corpus[(k*T + i*jump + s + 1) % len].
        check_losses(ws.position_losses(), t, |i, s| {
            (k * t + i * jump + s + 1) % len
        })?;
    }
    let mean_loss = total / iters as f64;
    Ok(Perplexity {
        perplexity: mean_loss.exp(),
        mean_loss,
        batches: iters,
        tokens: iters * n * t,
    })
}

/// Perplexity with every token scored once: the corpus is cut into `n` contiguous streams
/// (stream `i` predicts positions `i*L+1 ..= (i+1)*L` with `L = ceil((len-1)/n)`, so together
/// they predict every token but the first), each read in chunks of `t` steps with the hidden
/// state carried; positions past a stream's end are masked (ignore label). Perplexity is
/// `exp(total loss / (len-1))`, a per-token mean.
///
/// `n` is cut to the number of targets and `t` to the stream length `L`: more rows or longer
/// chunks would only hold masked positions (and could need more memory than the machine has,
/// e.g. `t = 10^8` on a short text), and the result is the same. `batches` counts the chunks
/// actually run.
///
/// # Errors
/// If the corpus has fewer than 2 tokens or holds an id outside the vocabulary, or the
/// workspace does not fit in memory ([`Error::Memory`], see [`Workspace::new`]).
///
/// ```
/// use rand::SeedableRng;
/// let cfg = rnnlm::Config::new(10, 4, 4).unwrap();
/// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let corpus: Vec<u32> = (0..100).map(|i| i * 3 % 10).collect();
/// let r = rnnlm::eval_full(&params, &corpus, 3, 7).unwrap(); // 3 streams of 33 targets
/// assert_eq!((r.batches, r.tokens), (5, 99)); // ceil(33 / 7) batches; every target once
/// // One stream from a zero state is exactly what scoring the whole corpus computes.
/// let vocab = rnnlm::Vocab::from_words((0..10).map(|i| i.to_string()).collect()).unwrap();
/// let score = rnnlm::Rnnlm::new(params.clone(), vocab).unwrap().score(&corpus).unwrap();
/// let one = rnnlm::eval_full(&params, &corpus, 1, 7).unwrap();
/// assert!((one.mean_loss * 99.0 + score.log_prob).abs() < 1e-9);
/// ```
pub fn eval_full<'a>(
    params: &Params,
    corpus: impl Into<Tokens<'a>>,
    n: usize,
    t: usize,
) -> Result<Perplexity> {
    let corpus = corpus.into();
    let targets = corpus.len().saturating_sub(1);
    if targets == 0 || n == 0 || t == 0 {
        return Err(Error::invalid(
            "evaluation corpus",
            format!(
                "{} tokens: nothing to score (needs at least 2)",
                corpus.len()
            ),
        ));
    }
    let n = n.min(targets);
    let seg = targets.div_ceil(n);
    // Steps past a stream's end are masked: a chunk longer than the stream only adds
    // workspace (N*T*V logits), so T is cut to the stream length. The losses are the same.
    let t = t.min(seg);
    let (total, batches) = stream_losses(params, corpus, n, t, |i| {
        i * seg..((i + 1) * seg).min(targets)
    })?;
    let mean_loss = total / targets as f64;
    Ok(Perplexity {
        perplexity: mean_loss.exp(),
        mean_loss,
        batches,
        tokens: targets,
    })
}

/// PyTorch word_language_model's `evaluate()` (its `main.py`, with `batchify` and
/// `get_batch`): `nbatch = len / bsz` (the tail that does not fill the streams is dropped);
/// stream `i` is `corpus[i*nbatch .. (i+1)*nbatch]`, read from a zero state in chunks of `bptt`
/// steps with the state carried, and scores its own `nbatch - 1` next tokens (its last token is
/// never a target, and no stream predicts the next stream's first token). Perplexity is
/// `exp(total loss / (bsz * (nbatch - 1)))`, a per-token mean; the short last chunk is padded
/// with ignore labels, so this is exactly word_language_model's
/// `Σ len(data) * mean_loss(chunk) / (len(data_source) - 1)`.
///
/// `bptt` is cut to the `nbatch - 1` targets of a stream (longer chunks hold only masked
/// positions; the result is the same).
///
/// # Errors
/// If `bsz` or `bptt` is 0, the corpus has fewer than `2 * bsz` tokens (a stream needs one
/// target), it holds an id outside the vocabulary, or the workspace does not fit in memory
/// ([`Error::Memory`]).
///
/// ```
/// use rand::SeedableRng;
/// let cfg = rnnlm::Config::new(10, 4, 4).unwrap();
/// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let corpus: Vec<u32> = (0..103).map(|i| i * 3 % 10).collect();
/// let r = rnnlm::eval::eval_torch(&params, &corpus, 4, 7).unwrap(); // 4 streams of 25 tokens
/// assert_eq!((r.batches, r.tokens), (4, 4 * 24)); // ceil(24 / 7) chunks; 3 tokens dropped
/// // One stream is the whole corpus but its last token: the same as scoring it from a zero state.
/// let one = rnnlm::eval::eval_torch(&params, &corpus, 1, 7).unwrap();
/// let full = rnnlm::eval_full(&params, &corpus, 1, 7).unwrap();
/// assert!((one.mean_loss - full.mean_loss).abs() < 1e-12);
/// assert!(rnnlm::eval::eval_torch(&params, &corpus[..7], 4, 7).is_err()); // 1 token a stream
/// ```
pub fn eval_torch<'a>(
    params: &Params,
    corpus: impl Into<Tokens<'a>>,
    bsz: usize,
    bptt: usize,
) -> Result<Perplexity> {
    let corpus = corpus.into();
    if bsz == 0 || bptt == 0 {
        return Err(Error::invalid(
            "evaluation batch",
            format!("batch {bsz} and bptt {bptt} must both be at least 1"),
        ));
    }
    let nbatch = corpus.len() / bsz;
    if nbatch < 2 {
        return Err(Error::invalid(
            "evaluation corpus",
            format!(
                "{} tokens cannot give each of {bsz} streams a target (needs at least {})",
                corpus.len(),
                2 * bsz
            ),
        ));
    }
    let targets = nbatch - 1;
    // As in eval_full: steps past the stream's targets are masked, so a longer chunk changes
    // nothing but the memory it needs.
    let bptt = bptt.min(targets);
    let (total, batches) = stream_losses(params, corpus, bsz, bptt, |i| {
        i * nbatch..i * nbatch + targets
    })?;
    let scored = bsz * targets;
    let mean_loss = total / scored as f64;
    Ok(Perplexity {
        perplexity: mean_loss.exp(),
        mean_loss,
        batches,
        tokens: scored,
    })
}

/// The summed loss of `n` streams read side by side in chunks of `t` steps, state carried:
/// stream `i` feeds `corpus[p]` and is scored on `corpus[p + 1]` for every position `p` in
/// `range(i)`, from a zero state; steps past a stream's end are masked. Returns the summed
/// per-token losses and the number of chunks. The one loop of the `full` and `torch`
/// protocols, which differ only in how they cut the streams.
fn stream_losses(
    params: &Params,
    corpus: Tokens<'_>,
    n: usize,
    t: usize,
    range: impl Fn(usize) -> std::ops::Range<usize>,
) -> Result<(f64, usize)> {
    let longest = (0..n).map(|i| range(i).len()).max().unwrap_or(0);
    let batches = longest.div_ceil(t);
    let mut ws = Workspace::new(*params.config(), n, t, false)?;
    let (mut xs, mut ts) = (vec![0u32; n * t], vec![0i32; n * t]);
    let mut total = 0.0f64;
    for k in 0..batches {
        for i in 0..n {
            let r = range(i);
            for s in 0..t {
                let p = r.start + k * t + s;
                let (x, y) = if p < r.end {
                    (corpus[p], corpus[p + 1] as i32)
                } else {
                    (0, crate::layers::softmax_loss::IGNORE)
                };
                xs[i * t + s] = x;
                ts[i * t + s] = y;
            }
        }
        corpus.consumed(4 * n * t);
        forward(params, &mut ws, &xs, &ts)?;
        check_losses(ws.position_losses(), t, |i, s| {
            range(i).start + k * t + s + 1
        })?;
        total += ws.position_losses().iter().map(|&l| l as f64).sum::<f64>();
    }
    Ok((total, batches))
}

/// [`Error::NotFinite`] naming the corpus position of the first target whose loss is not a
/// number to report (`target_at(row, step)` gives it), rather than a NaN or infinite
/// perplexity. One comparison per position.
fn check_losses(losses: &[f32], t: usize, target_at: impl Fn(usize, usize) -> usize) -> Result<()> {
    for (j, &loss) in losses.iter().enumerate() {
        if let Some(what) = crate::heads::not_a_log_prob(-loss) {
            return Err(Error::NotFinite {
                sequence: None,
                position: target_at(j / t, j % t),
                what: what.into(),
            });
        }
    }
    Ok(())
}
