//! Throughput measurement on synthetic data, shared by `rnnlm bench` and the comparison
//! scripts: warm-up, then the median of several timed windows.

use std::time::{Duration, Instant};

use rand::{RngExt, SeedableRng};

use crate::data::batcher::BookBatches;
use crate::error::{Error, Result};
use crate::mem::check_memory;
use crate::model::config::Config;
use crate::model::params::Params;
use crate::model::simple::{forward, SimpleRnnlm};
use crate::model::workspace::Workspace;
use crate::optim::Sgd;

/// What to time.
///
/// ```
/// use std::time::Duration;
/// use rnnlm::bench::{run, BenchSpec, Mode};
/// let spec = |mode| BenchSpec { cfg: rnnlm::Config::new(10, 4, 4).unwrap(), n: 2, t: 3, mode,
///     warmup: Duration::ZERO, windows: 1, window: Duration::from_millis(1), dropout: 0.0, output_strips: false, zipf: false };
/// let train = run(&spec(Mode::Train)).unwrap();
/// let infer = run(&spec(Mode::Infer)).unwrap();
/// assert!(infer.model_bytes < train.model_bytes); // no gradients, no gradient buffers
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward + backward + SGD update.
    Train,
    /// Forward only (loss, no gradients).
    Infer,
    /// [`crate::Rnnlm::score_batch`] over `N` synthetic sentences of 2 to `2T` tokens per
    /// call (what `rnnlm score` runs for each chunk of lines); tokens = predictions made.
    Score,
}

/// A benchmark request.
///
/// ```
/// use std::time::Duration;
/// use rnnlm::bench::{run, BenchSpec, Mode};
/// let spec = BenchSpec { cfg: rnnlm::Config::new(10, 4, 4).unwrap(), n: 2, t: 3, mode: Mode::Infer,
///     warmup: Duration::from_millis(1), windows: 3, window: Duration::from_millis(2), dropout: 0.0, output_strips: false, zipf: false };
/// assert_eq!(run(&spec).unwrap().window_tokens_per_sec.len(), 3);
/// assert!(run(&BenchSpec { windows: 0, ..spec }).is_err());
/// ```
#[derive(Clone, Copy, Debug)]
pub struct BenchSpec {
    /// Model shape.
    pub cfg: Config,
    /// Batch rows `N`.
    pub n: usize,
    /// Steps per batch `T`.
    pub t: usize,
    /// What to time.
    pub mode: Mode,
    /// Untimed warm-up.
    pub warmup: Duration,
    /// Number of timed windows (the median is reported).
    pub windows: usize,
    /// Length of each window (a window runs whole steps until it is at least this long).
    pub window: Duration,
    /// Dropout probability of the training step (0 = off).
    pub dropout: f32,
    /// Train with the output layer's backward pass by column strips where the shape allows
    /// (see [`crate::Workspace::set_output_strips`]).
    pub output_strips: bool,
    /// Draw the synthetic ids from a Zipf distribution (`p(id) ∝ 1/(id+1)`: ids in frequency
    /// order, as real text numbered by frequency is) instead of uniformly. A class head gets
    /// Mikolov's classes for those frequencies (otherwise its default, equal ranges).
    pub zipf: bool,
}

/// Ids drawn from `p(id) ∝ 1/(id+1)` over `v` ids, by inverse transform sampling: the
/// synthetic Zipf data of `rnnlm bench --ids zipf` and of `rnnlm zipf-text`.
pub(crate) struct Zipf {
    cdf: Vec<f64>,
}

impl Zipf {
    /// The distribution over `v >= 1` ids.
    pub(crate) fn new(v: usize) -> Self {
        let mut cdf = Vec::with_capacity(v);
        let mut acc = 0.0f64;
        for r in 1..=v {
            acc += 1.0 / r as f64;
            cdf.push(acc);
        }
        Self { cdf }
    }

    /// One id.
    pub(crate) fn sample<R: rand::Rng>(&self, rng: &mut R) -> u32 {
        let total = *self.cdf.last().expect("v >= 1");
        let u = rng.random::<f64>() * total;
        self.cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1) as u32
    }
}

/// `n` ids drawn from `p(id) ∝ 1/(id+1)` over `v` ids ([`Zipf`]).
pub fn zipf_ids<R: rand::Rng>(rng: &mut R, v: usize, n: usize, out: &mut Vec<u32>) {
    let zipf = Zipf::new(v);
    out.extend((0..n).map(|_| zipf.sample(rng)));
}

/// Mikolov's classes ([`crate::class_starts_from_counts`]) for the Zipf counts of
/// [`zipf_ids`] over `v` words, exactly `classes` of them: they may come out fewer than asked,
/// so more are asked for until the number is right; `None` if no request gives it.
///
/// ```
/// let starts = rnnlm::bench::zipf_class_starts(10_000, 100).unwrap();
/// assert_eq!((starts.len(), starts[0]), (100, 0));
/// ```
pub fn zipf_class_starts(v: usize, classes: usize) -> Option<Vec<u32>> {
    let counts: Vec<u64> = (1..=v as u64).map(|r| (1u64 << 40) / r).collect();
    (classes..=2 * classes)
        .map(|c| crate::class_starts_from_counts(&counts, c))
        .filter_map(std::result::Result::ok)
        .find(|s| s.len() == classes)
}

/// What a benchmark measured.
///
/// ```
/// use std::time::Duration;
/// use rnnlm::bench::{run, BenchSpec, Mode};
/// let spec = BenchSpec { cfg: rnnlm::Config::new(10, 4, 4).unwrap(), n: 2, t: 3, mode: Mode::Train,
///     warmup: Duration::ZERO, windows: 3, window: Duration::from_millis(2), dropout: 0.0, output_strips: false, zipf: false };
/// let r = run(&spec).unwrap();
/// let mut rates = r.window_tokens_per_sec.clone();
/// rates.sort_by(f64::total_cmp);
/// assert_eq!(r.tokens_per_sec, rates[1]); // the median window
/// assert!(r.steps >= 3 && r.threads == rayon::current_num_threads());
/// ```
#[derive(Clone, Debug)]
pub struct BenchReport {
    /// Median over the windows of tokens (`N*T` per step) per second.
    pub tokens_per_sec: f64,
    /// Tokens per second of every window.
    pub window_tokens_per_sec: Vec<f64>,
    /// Steps timed in all windows.
    pub steps: usize,
    /// Whether the training step ran the output layer's backward pass by column strips.
    pub output_strips: bool,
    /// rayon threads used.
    pub threads: usize,
    /// Bytes of parameters + gradients (train) + workspace.
    pub model_bytes: usize,
}

/// Runs the benchmark on the current rayon pool.
///
/// # Errors
/// If the configuration is invalid, or the run does not fit in the memory available
/// ([`Error::Memory`], checked before anything large is allocated).
///
/// ```
/// use std::time::Duration;
/// use rnnlm::{bench::{run, BenchSpec, Mode}, Config, Workspace};
/// let cfg = Config::new(10, 4, 4).unwrap();
/// let spec = BenchSpec { cfg, n: 2, t: 3, mode: Mode::Train, warmup: Duration::ZERO,
///     windows: 1, window: Duration::from_millis(5), dropout: 0.0, output_strips: false, zipf: false };
/// let r = run(&spec).unwrap();
/// assert!(r.tokens_per_sec > 0.0 && r.steps >= 1);
/// let weights = rnnlm::Params::zeros(cfg).as_slice().len(); // held twice: params and grads
/// assert_eq!(r.model_bytes, 4 * 2 * weights + Workspace::new(cfg, 2, 3, true).unwrap().bytes());
/// ```
pub fn run(spec: &BenchSpec) -> Result<BenchReport> {
    if spec.windows == 0 {
        return Err(Error::invalid("windows", "must be at least 1"));
    }
    let cfg = spec.cfg;
    cfg.validate()?;
    let (n, t) = (spec.n, spec.t);
    let train = spec.mode == Mode::Train;
    // Everything the run allocates, checked against the memory available before any of it
    // is: parameters (twice when training: gradients), the workspace, the dropout masks and
    // a synthetic corpus long enough for 64 distinct batches.
    let overflow = || Error::invalid("benchmark shape", format!("N={n}, T={t}: sizes overflow"));
    let corpus_len = n
        .checked_mul(t)
        .and_then(|nt| nt.checked_mul(64)?.checked_add(1))
        .ok_or_else(overflow)?;
    let masks = if train && spec.dropout > 0.0 {
        (n * t)
            .checked_mul(cfg.hidden_size * cfg.layers)
            .ok_or_else(overflow)?
    } else {
        0
    };
    let need = [
        Params::bytes_for(&cfg)?,
        if train { Params::bytes_for(&cfg)? } else { 0 },
        Workspace::bytes_for(&cfg, n, t, train)?,
        masks.saturating_mul(4),
        corpus_len.saturating_mul(4),
    ]
    .into_iter()
    .try_fold(0usize, usize::checked_add)
    .ok_or_else(overflow)?;
    check_memory(
        &format!(
            "the benchmark (parameters{}, workspace and data; N={n}, T={t}, {})",
            if train { ", gradients" } else { "" },
            Params::describe(&cfg)
        ),
        need,
    )?;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
    let mut params = Params::try_init_book(cfg, &mut rng)?;
    if let (true, crate::Softmax::Class { classes }) = (spec.zipf, cfg.softmax) {
        if let Some(starts) = zipf_class_starts(cfg.vocab_size, classes) {
            params.set_class_starts(&starts)?;
        }
    }
    // Training runs the trainer's step: SimpleRnnlm's backward, then SGD over the parts of
    // the gradient the batch touched.
    let params_len = params.as_slice().len();
    let (mut params, mut model) = if train {
        let mut m = SimpleRnnlm::from_params(params, n, t)?;
        m.set_dropout(spec.dropout, 0)?;
        (None, Some(m))
    } else {
        (Some(params), None)
    };
    let mut ws = if train {
        None
    } else {
        Some(Workspace::new(cfg, n, t, false)?)
    };
    let output_strips = match model.as_mut() {
        Some(m) => m.set_output_strips(spec.output_strips)?,
        None => false,
    };
    let mut corpus: Vec<u32> = Vec::new();
    corpus
        .try_reserve_exact(corpus_len)
        .map_err(|_| Error::Memory {
            what: format!("the benchmark's synthetic corpus ({corpus_len} tokens)"),
            needed: 4 * corpus_len as u64,
            available: None,
        })?;
    if spec.zipf {
        zipf_ids(&mut rng, cfg.vocab_size, corpus_len, &mut corpus);
    } else {
        corpus.extend((0..corpus_len).map(|_| rng.random_range(0..cfg.vocab_size as u32)));
    }
    let mut batches = BookBatches::new(&corpus, n, t)?;
    let (mut xs, mut ts) = (vec![0u32; n * t], vec![0i32; n * t]);
    // A small learning rate keeps the weights (and so the exp/tanh inputs) realistic.
    let sgd = Sgd::new(0.01);

    // Scoring: sentences cut from the corpus, lengths 2..=2T (mean ~T), and the model the
    // way `rnnlm score` holds it.
    let scorer = if spec.mode == Mode::Score {
        let words = (0..cfg.vocab_size).map(|i| format!("w{i}")).collect();
        let params = params.take().expect("scoring holds the parameters");
        let model = crate::Rnnlm::new(params, crate::Vocab::from_words(words)?)?;
        let mut sentences = Vec::with_capacity(n);
        let mut at = 0;
        for _ in 0..n {
            let len = rng.random_range(2..=2 * t).min(corpus.len() - at);
            sentences.push(corpus[at..at + len].to_vec());
            at = (at + len) % (corpus.len() - 2 * t).max(1);
        }
        Some((model, sentences))
    } else {
        None
    };
    let tokens_per_step = match &scorer {
        Some((_, sentences)) => sentences.iter().map(|s| s.len() - 1).sum(),
        None => n * t,
    };
    let mut step = || -> Result<()> {
        if let Some((model, sentences)) = &scorer {
            let refs: Vec<&[u32]> = sentences.iter().map(|s| s.as_slice()).collect();
            std::hint::black_box(model.score_batch(&refs)?);
            return Ok(());
        }
        batches.next_batch(&mut xs, &mut ts);
        match model.as_mut() {
            Some(m) => {
                m.forward(&xs, &ts)?;
                m.backward()?;
                let (p, g, r) = m.params_mut_grads_ranges();
                sgd.update_ranges((p, g), r);
            }
            None => {
                let ws = ws
                    .as_mut()
                    .expect("an evaluation workspace without a model");
                let params = params.as_ref().expect("inference holds the parameters");
                forward(params, ws, &xs, &ts)?;
            }
        }
        Ok(())
    };
    let start = Instant::now();
    while start.elapsed() < spec.warmup {
        step()?;
    }
    let mut rates = Vec::with_capacity(spec.windows);
    let mut steps = 0;
    for _ in 0..spec.windows {
        let w = Instant::now();
        let mut k = 0;
        while k == 0 || w.elapsed() < spec.window {
            step()?;
            k += 1;
        }
        rates.push((k * tokens_per_step) as f64 / w.elapsed().as_secs_f64());
        steps += k;
    }
    let mut sorted = rates.clone();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    };
    let model_bytes = match &model {
        Some(m) => 8 * params_len + m.workspace().bytes(),
        None => 4 * params_len + ws.as_ref().map_or(0, Workspace::bytes),
    };
    Ok(BenchReport {
        tokens_per_sec: median,
        window_tokens_per_sec: rates,
        steps,
        threads: rayon::current_num_threads(),
        model_bytes,
        output_strips,
    })
}

/// A rough time for one training epoch, from the products' FLOPs and this machine's measured
/// product rate: printed before training starts, so that a model far too large for its
/// machine (`--hidden 30000`) says what it will cost before it spends it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct EpochEstimate {
    /// Estimated seconds per epoch (the products only, at the rate of one timed product: a rough figure, within a factor of ~2 either way as measured — 9 min estimated against 6.5 min run for the 2x650 LSTM, 4 min against ~6 min for a 1x30000 tanh RNN).
    pub seconds: f64,
    /// FLOPs of one training batch's products, in GFLOP.
    pub gflop_per_batch: f64,
    /// The product rate measured in the current rayon pool, in GFLOP/s.
    pub gflops: f64,
}

/// [`EpochEstimate`] for `batches` batches of `n x t` tokens of `cfg`: `3 x`
/// [`Params::forward_flops_per_token`] per token, at the rate of a timed product of the
/// batch's shape (capped at 1024 x 1024 x 2048, ~4 GFLOP, so the measurement takes
/// milliseconds whatever the model; products of a wide model run at that rate or better).
///
/// ```
/// let cfg = rnnlm::Config::new(100, 16, 16).unwrap();
/// let e = rnnlm::bench::epoch_estimate(&cfg, 4, 5, 10).unwrap();
/// assert!(e.seconds > 0.0 && e.gflops > 0.0);
/// assert_eq!(e.gflop_per_batch, 3.0 * 20.0 * rnnlm::Params::forward_flops_per_token(&cfg) as f64 / 1e9);
/// ```
///
/// # Errors
/// [`Error::Memory`] if the measurement's buffers do not fit (a few tens of MB).
pub fn epoch_estimate(cfg: &Config, n: usize, t: usize, batches: usize) -> Result<EpochEstimate> {
    use crate::gemm::{matmul_packed, scratch_len, Accum, MatMut, MatRef};
    let (m, k, cols) = (
        (n * t).clamp(1, 1024),
        cfg.hidden_size.clamp(1, 1024),
        (cfg.cell.gates() * cfg.hidden_size).clamp(1, 2048),
    );
    let buf = |len: usize, what: &str| {
        crate::kernels::zeroed::try_zeroed::<f32>(len).ok_or_else(|| Error::Memory {
            what: format!("the epoch estimate's {what}"),
            needed: 4 * len as u64,
            available: None,
        })
    };
    // Any finite values: the rate does not depend on them.
    let (mut a, mut b) = (buf(m * k, "A")?, buf(k * cols, "B")?);
    for (i, x) in a.iter_mut().chain(b.iter_mut()).enumerate() {
        *x = (i % 7) as f32 * 0.1;
    }
    let mut c = buf(m * cols, "C")?;
    let mut scratch = buf(scratch_len(m, k, cols, true), "scratch")?;
    let mut once = || {
        let t0 = Instant::now();
        matmul_packed(
            MatMut::new(&mut c, m, cols),
            MatRef::new(&a, m, k),
            MatRef::new(&b, k, cols),
            Accum::Replace,
            &mut scratch,
        );
        t0.elapsed().as_secs_f64()
    };
    once(); // warm the caches and the pool
    let (mut best, mut spent) = (f64::INFINITY, 0.0);
    // The fastest of a few runs (at least 3, about 30 ms in all): the machine's rate, not a
    // moment when another process had the cores.
    for rep in 0.. {
        let s = once();
        best = best.min(s);
        spent += s;
        if rep >= 2 && spent > 0.03 {
            break;
        }
    }
    let gflops = 2.0 * (m * k * cols) as f64 / best.max(1e-9) / 1e9;
    let gflop_per_batch = 3.0 * (n * t) as f64 * Params::forward_flops_per_token(cfg) as f64 / 1e9;
    Ok(EpochEstimate {
        seconds: gflop_per_batch * batches as f64 / gflops,
        gflop_per_batch,
        gflops,
    })
}

/// Peak resident set size of this process in bytes (Linux `VmHWM`), if the platform tells.
///
/// ```
/// let block = vec![1u8; 32 << 20]; // 32 MiB, written, so resident
/// if let Some(peak) = rnnlm::bench::peak_rss_bytes() {
///     assert!(peak >= block.len());
/// } else {
///     assert!(!cfg!(target_os = "linux")); // Linux always reports it
/// }
/// ```
pub fn peak_rss_bytes() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: usize = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}
