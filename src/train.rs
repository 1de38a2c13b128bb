//! Training: the book's `RnnlmTrainer` loop and its chapter-6 schedule.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::checkpoint;
use crate::data::batcher::BookBatches;
use crate::data::ids::Tokens;
use crate::dist::Collective;
use crate::error::{Error, Result};
use crate::eval::{evaluate, Perplexity, Protocol};
use crate::model::config::Config;
use crate::model::params::Params;
use crate::model::simple::SimpleRnnlm;
use crate::optim::{ClipGrads, Sgd};
use crate::report::EvalPoint;

/// Hyper-parameters of a training run. The defaults are the book's chapter-6 recipe for a
/// tanh RNN as this crate runs it on PTB: N=20, T=35, SGD lr 5 (the book's lr 20 diverges for
/// a tanh RNN), global-norm clipping at 0.25, 4 epochs, progress every 20 batches, and
/// `lr /= 4` after an epoch whose validation perplexity did not improve.
///
/// ```
/// use rnnlm::train::TrainConfig;
/// let book = TrainConfig::default();
/// assert_eq!((book.batch_size, book.time_size, book.lr, book.max_grad), (20, 35, 5.0, Some(0.25)));
/// let small = TrainConfig { batch_size: 4, time_size: 5, epochs: 1, ..book };
/// assert!(small.validate().is_ok());
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainConfig {
    /// Batch rows `N`.
    pub batch_size: usize,
    /// Steps per batch `T` (truncated-BPTT length).
    pub time_size: usize,
    /// SGD learning rate.
    pub lr: f32,
    /// Global gradient-norm limit (`None`: no clipping).
    pub max_grad: Option<f32>,
    /// Epochs.
    pub epochs: usize,
    /// Report training perplexity every this many batches (`None`: never).
    pub eval_interval: Option<usize>,
    /// Seed of the weight initialisation.
    pub seed: u64,
    /// Divide the learning rate by this after an epoch without validation improvement.
    pub lr_decay: f32,
    /// Evaluation protocol and batch shape for validation and test.
    pub protocol: Protocol,
    /// Evaluation batch rows (the book: 10).
    pub eval_batch: usize,
    /// Evaluation steps per batch (the book: 35).
    pub eval_time: usize,
    /// Inverted dropout probability during training (0 = off), after the embedding, between
    /// layers and before the output layer. Its masks are keyed by `seed` and the step.
    #[serde(default)]
    pub dropout: f32,
    /// How [`Trainer::new`] draws the weights from `seed` (older resume files: the book's).
    #[serde(default)]
    pub init: crate::model::params::Init,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            batch_size: 20,
            time_size: 35,
            lr: 5.0,
            max_grad: Some(0.25),
            epochs: 4,
            eval_interval: Some(20),
            seed: 1,
            lr_decay: 4.0,
            protocol: Protocol::Book,
            eval_batch: 10,
            eval_time: 35,
            dropout: 0.0,
            init: crate::model::params::Init::Book,
        }
    }
}

impl TrainConfig {
    /// Checks the sizes and rates before a run starts.
    ///
    /// # Errors
    /// If a size is zero or a rate is not a positive finite number.
    ///
    /// ```
    /// use rnnlm::train::TrainConfig;
    /// let ok = TrainConfig::default();
    /// assert!(ok.validate().is_ok());
    /// assert!(TrainConfig { lr: f32::NAN, ..ok.clone() }.validate().is_err());
    /// assert!(TrainConfig { max_grad: Some(0.0), ..ok.clone() }.validate().is_err());
    /// assert!(TrainConfig { lr_decay: 0.5, ..ok.clone() }.validate().is_err()); // would raise lr
    /// assert!(TrainConfig { eval_interval: Some(0), ..ok }.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        if self.batch_size == 0
            || self.time_size == 0
            || self.eval_batch == 0
            || self.eval_time == 0
        {
            return Err(Error::invalid(
                "batch shape",
                "batch and time sizes must be at least 1",
            ));
        }
        if !(self.lr.is_finite() && self.lr > 0.0) {
            return Err(Error::invalid(
                "lr",
                format!("{} is not a positive number", self.lr),
            ));
        }
        if let Some(c) = self.max_grad {
            if !(c.is_finite() && c > 0.0) {
                return Err(Error::invalid(
                    "clip",
                    format!("{c} is not a positive number"),
                ));
            }
        }
        if !(self.lr_decay.is_finite() && self.lr_decay >= 1.0) {
            return Err(Error::invalid("lr_decay", "must be at least 1"));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::invalid(
                "dropout",
                format!("{} (must be at least 0 and below 1)", self.dropout),
            ));
        }
        if self.eval_interval == Some(0) {
            return Err(Error::invalid("eval_interval", "must be at least 1"));
        }
        Ok(())
    }

    /// Checks that a validation or test corpus of `tokens` ids fills one evaluation batch of
    /// this run's protocol and shape, so a short file is refused before training rather than
    /// after the last epoch.
    ///
    /// # Errors
    /// [`Error::Invalid`] ("evaluation corpus") saying what the protocol needs.
    ///
    /// ```
    /// use rnnlm::train::TrainConfig;
    /// let book = TrainConfig::default(); // book protocol, batch 10 x time 35
    /// assert!(book.check_eval_corpus(351).is_ok());
    /// let err = book.check_eval_corpus(350).unwrap_err().to_string();
    /// assert!(err.contains("book protocol") && err.contains("needs at least 351"), "{err}");
    /// ```
    pub fn check_eval_corpus(&self, tokens: usize) -> Result<()> {
        let (n, t) = (self.eval_batch, self.eval_time);
        // The smallest corpus each protocol accepts (see eval_perplexity, eval_full and
        // eval_torch; a unit test keeps the two in step).
        let needs = match self.protocol {
            Protocol::Book => n * t + 1,
            Protocol::Full => 2,
            Protocol::Torch => 2 * n,
        };
        if tokens >= needs {
            return Ok(());
        }
        Err(Error::invalid(
            "evaluation corpus",
            format!(
                "{tokens} tokens cannot fill one evaluation batch of the {} protocol (batch {n}, time {t}; needs at least {needs} tokens)",
                self.protocol.name()
            ),
        ))
    }
}

/// Length and 64-bit FNV-1a hash of a run's training ids, saved with a resumable run so that
/// resuming on other data (whose batches the saved position does not fit) is refused.
///
/// ```
/// use rnnlm::train::DataFingerprint;
/// let a = DataFingerprint::of(&[1, 2, 3]);
/// assert_eq!(a.tokens, 3);
/// assert_eq!(a, DataFingerprint::of(&[1, 2, 3]));
/// assert_ne!(a, DataFingerprint::of(&[1, 3, 2]));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DataFingerprint {
    /// Number of ids.
    pub tokens: usize,
    /// FNV-1a (64-bit) over the ids' little-endian bytes.
    pub fnv1a: u64,
}

impl DataFingerprint {
    /// The fingerprint of `ids` (a slice, or a mapped file's [`Tokens`], read in chunks).
    pub fn of<'a>(ids: impl Into<Tokens<'a>>) -> Self {
        let ids = ids.into();
        // FNV-1a: simple, fast, stable across versions; not cryptographic, and need not be
        // (it guards against mistakes, not attacks).
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        let _ = ids.for_each_chunk(|_, chunk| {
            for id in chunk {
                for b in id.to_le_bytes() {
                    h = (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3);
                }
            }
            Ok(())
        });
        Self {
            tokens: ids.len(),
            fnv1a: h,
        }
    }
}

/// What the trainer reports while it runs.
///
/// ```
/// use rnnlm::train::{Event, TrainConfig, Trainer};
/// let corpus: Vec<u32> = (0..1000).map(|i| (i * 7 % 11) as u32).collect();
/// let cfg = TrainConfig { batch_size: 4, time_size: 5, lr: 0.5, epochs: 2, eval_interval: Some(10),
///                         eval_batch: 2, eval_time: 5, ..TrainConfig::default() };
/// let mut trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg).unwrap();
/// let (mut progress, mut epochs) = (0, Vec::new());
/// trainer.fit(&corpus, Some(&corpus[..200]), None, |event| match event {
///     Event::Progress { iters, .. } => { assert_eq!(iters, 999 / 20); progress += 1; }
///     Event::Epoch { epoch, valid, .. } => { assert!(valid.is_some()); epochs.push(epoch); }
/// }).unwrap();
/// // Batches 0, 10, 20, 30 and 40 of each 49-batch epoch report progress.
/// assert_eq!((progress, epochs), (2 * 5, vec![1, 2]));
/// ```
#[derive(Debug)]
pub enum Event<'a> {
    /// Training perplexity over the batches since the last report.
    Progress {
        /// The point (also appended to the run's log).
        point: &'a EvalPoint,
        /// Batches per epoch.
        iters: usize,
        /// Training tokens per second so far.
        tokens_per_sec: f64,
    },
    /// End of an epoch, after validation.
    Epoch {
        /// 1-based epoch number.
        epoch: usize,
        /// Validation result, if a validation corpus was given.
        valid: Option<Perplexity>,
        /// Whether validation improved on the best so far (the model is kept).
        improved: bool,
        /// Learning rate for the next epoch.
        lr: f32,
    },
}

/// The outcome of [`Trainer::fit`].
///
/// ```
/// use rnnlm::train::{TrainConfig, Trainer};
/// let corpus: Vec<u32> = (0..1000).map(|i| (i * 7 % 11) as u32).collect();
/// let cfg = TrainConfig { batch_size: 4, time_size: 5, lr: 0.5, epochs: 2, eval_interval: None,
///                         eval_batch: 2, eval_time: 5, ..TrainConfig::default() };
/// let mut trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg).unwrap();
/// let r = trainer.fit(&corpus, Some(&corpus[..200]), Some(&corpus[..200]), |_| {}).unwrap();
/// assert_eq!((r.steps, r.tokens), (2 * 49, 2 * 49 * 4 * 5)); // 49 batches of 4 x 5 per epoch
/// assert_eq!(r.log.len(), 2); // one validation point per epoch (no progress points)
/// assert!(!r.interrupted && r.test.is_some() && r.tokens_per_sec > 0.0);
/// ```
#[derive(Clone, Debug)]
pub struct TrainReport {
    /// Best validation result (of the kept model).
    pub best_valid: Option<Perplexity>,
    /// Test result of the kept model.
    pub test: Option<Perplexity>,
    /// Optimizer steps taken.
    pub steps: usize,
    /// Training tokens processed.
    pub tokens: u64,
    /// Wall time of the whole run, evaluations included.
    pub seconds: f64,
    /// Training tokens per second of training time (evaluations excluded).
    pub tokens_per_sec: f64,
    /// Every evaluation point (training progress and per-epoch validation).
    pub log: Vec<EvalPoint>,
    /// Whether the run stopped early on request.
    pub interrupted: bool,
}

/// The book's `RnnlmTrainer` with its chapter-6 loop: epochs over the book's batches (the
/// batch offset restarts at each epoch, as `fit(max_epoch=1)` does), optional global-norm
/// clipping, progress every `eval_interval` batches, validation after each epoch with the
/// carried state reset around it, `lr /= lr_decay` when validation does not improve, the
/// best model kept, and a test evaluation of the kept model at the end.
///
/// ```
/// use rnnlm::train::{TrainConfig, Trainer};
/// let corpus: Vec<u32> = (0..3000).map(|i| (i * 7 % 23) as u32).collect();
/// let cfg = TrainConfig { batch_size: 4, time_size: 5, lr: 0.5, epochs: 2, eval_interval: None,
///                         eval_batch: 2, eval_time: 5, ..TrainConfig::default() };
/// let mut trainer = Trainer::new(rnnlm::Config::new(23, 16, 16).unwrap(), cfg).unwrap();
/// let report = trainer.fit(&corpus, Some(&corpus[..500]), None, |_| {}).unwrap();
/// assert!(report.best_valid.unwrap().perplexity < 23.0);
/// ```
#[derive(Debug)]
pub struct Trainer {
    cfg: TrainConfig,
    model: SimpleRnnlm,
    best: Option<(Params, Perplexity)>,
    /// The buffer the first kept model is copied into: allocated through the memory check
    /// before the first step of a run that validates, so a model that barely fits fails then
    /// rather than at its first validation.
    spare: Option<Params>,
    clip: ClipGrads,
    stop: Option<&'static AtomicBool>,
    max_steps: Option<usize>,
    progress: Progress,
    log: Vec<EvalPoint>,
    /// The training data this run has seen (from its first `fit` or its resume file).
    data: Option<DataFingerprint>,
    /// Data-parallel training: the communicator and this rank's rows of each batch.
    dp: Option<DataParallel>,
}

/// This rank's part of a data-parallel run ([`Trainer::set_data_parallel`]).
struct DataParallel {
    comm: Box<dyn Collective>,
    rows: std::ops::Range<usize>,
    /// The whole batch's carried state, gathered from every rank when a run is interrupted
    /// (what [`Trainer::save_resume`] writes), else empty.
    whole_state: Vec<f32>,
    /// A step's exchange: which units of [`DP_UNIT`] floats any rank touched, those parts of
    /// the gradient ranges, and the parts packed for the sum (kept between steps).
    mask: Vec<f32>,
    union: Vec<std::ops::Range<usize>>,
    packed: Vec<f32>,
}

/// Floats per unit of the touched-parts mask of a data-parallel step: the mask is 1/256 of
/// the gradient, and a touched row (H floats) sends at most a unit more than itself.
const DP_UNIT: usize = 256;

impl DataParallel {
    /// Sums across the ranks the parts of `grads` that any rank touched (`ranges`: this
    /// rank's), leaving in `self.union` those parts as ranges: the other parts are zero on
    /// every rank. At V = 100k a batch touches a few thousand of the embedding's rows, so
    /// this sends a few MB where the whole gradient is ~100 MB.
    fn sum_touched(&mut self, grads: &mut [f32], ranges: &[std::ops::Range<usize>]) -> Result<()> {
        let units = grads.len().div_ceil(DP_UNIT);
        self.mask.clear();
        self.mask.resize(units, 0.0);
        for r in ranges.iter().filter(|r| !r.is_empty()) {
            self.mask[r.start / DP_UNIT..r.end.div_ceil(DP_UNIT)].fill(1.0);
        }
        self.comm.sum_f32(&mut self.mask)?;
        self.union.clear();
        let mut u = 0;
        while u < units {
            if self.mask[u] == 0.0 {
                u += 1;
                continue;
            }
            let start = u;
            while u < units && self.mask[u] != 0.0 {
                u += 1;
            }
            self.union
                .push(start * DP_UNIT..(u * DP_UNIT).min(grads.len()));
        }
        self.packed.clear();
        for r in &self.union {
            self.packed.extend_from_slice(&grads[r.clone()]);
        }
        self.comm.sum_f32(&mut self.packed)?;
        let mut at = 0;
        for r in &self.union {
            grads[r.clone()].copy_from_slice(&self.packed[at..at + r.len()]);
            at += r.len();
        }
        Ok(())
    }
}

impl std::fmt::Debug for DataParallel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataParallel")
            .field("rank", &self.comm.rank())
            .field("ranks", &self.comm.ranks())
            .field("rows", &self.rows)
            .finish()
    }
}

/// Where a run stands between two batches: with the weights, the best model and the carried
/// hidden state, everything needed to continue it exactly (plain SGD has no other state, and
/// the book's batches are a function of the batch index).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Progress {
    /// 1-based epoch of the next batch.
    epoch: usize,
    /// Index of the next batch within the epoch.
    iter: usize,
    steps: usize,
    tokens: u64,
    lr: f32,
    /// Loss sum and count since the last progress report.
    total_loss: f64,
    count: usize,
    /// Wall and evaluation seconds of earlier sessions.
    elapsed_s: f64,
    eval_s: f64,
}

impl Progress {
    fn start(lr: f32) -> Self {
        Self {
            epoch: 1,
            iter: 0,
            steps: 0,
            tokens: 0,
            lr,
            total_loss: 0.0,
            count: 0,
            elapsed_s: 0.0,
            eval_s: 0.0,
        }
    }
}

/// Metadata key of the trainer's state in a resumable checkpoint.
const RESUME_KEY: &str = "trainer";

/// The JSON stored under [`RESUME_KEY`].
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct ResumeMeta {
    config: TrainConfig,
    progress: Progress,
    best: Option<Perplexity>,
    log: Vec<EvalPoint>,
    /// Absent in files written before fingerprints existed.
    #[serde(default)]
    data: Option<DataFingerprint>,
}

impl ResumeMeta {
    /// Refuses a position no run reaches: hand-edited or corrupted state would otherwise run
    /// silently wrong (a negative rate climbs the loss, a NaN one poisons the weights).
    fn check(&self) -> std::result::Result<(), String> {
        let p = &self.progress;
        if !(p.lr.is_finite() && p.lr > 0.0) {
            return Err(format!(
                "trainer state has learning rate {} (must be a positive number)",
                p.lr
            ));
        }
        if p.epoch == 0 || p.epoch > self.config.epochs + 1 {
            return Err(format!(
                "trainer state is at epoch {} of a {}-epoch run",
                p.epoch, self.config.epochs
            ));
        }
        if !(p.total_loss.is_finite() && p.elapsed_s.is_finite() && p.eval_s.is_finite()) {
            return Err("trainer state holds a non-finite loss sum or time".into());
        }
        Ok(())
    }
}

impl Trainer {
    /// A trainer for a new model, its weights drawn from `cfg.seed` as `cfg.init` says.
    ///
    /// # Errors
    /// If either configuration is invalid.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let model = rnnlm::Config::new(11, 8, 8).unwrap();
    /// let trainer = Trainer::new(model, TrainConfig::default()).unwrap();
    /// let same = rnnlm::SimpleRnnlm::new(model, 20, 35, 1).unwrap(); // the default N, T, seed
    /// assert_eq!(trainer.model().params(), same.params());
    /// assert!(Trainer::new(model, TrainConfig { lr: -1.0, ..TrainConfig::default() }).is_err());
    /// ```
    pub fn new(model: Config, cfg: TrainConfig) -> Result<Self> {
        use crate::model::params::Init;
        cfg.validate()?;
        match cfg.init {
            Init::Book => {
                let model = SimpleRnnlm::new(model, cfg.batch_size, cfg.time_size, cfg.seed)?;
                Ok(Self::with_model(model, cfg))
            }
            init => {
                let mut rng =
                    <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(cfg.seed);
                Self::from_params(Params::try_init(model, init, &mut rng)?, cfg)
            }
        }
    }

    /// A trainer continuing from existing parameters.
    ///
    /// # Errors
    /// If the configuration is invalid.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let cfg = rnnlm::Config::new(11, 8, 8).unwrap();
    /// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(9));
    /// let trainer = Trainer::from_params(params.clone(), TrainConfig::default()).unwrap();
    /// assert_eq!(trainer.model().params(), &params);
    /// assert_eq!(trainer.best_params(), &params); // nothing validated yet
    /// ```
    pub fn from_params(params: Params, cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        let model = SimpleRnnlm::from_params(params, cfg.batch_size, cfg.time_size)?;
        Ok(Self::with_model(model, cfg))
    }

    fn with_model(mut model: SimpleRnnlm, cfg: TrainConfig) -> Self {
        model
            .set_dropout(cfg.dropout, cfg.seed)
            .expect("validated with the training configuration");
        Self {
            progress: Progress::start(cfg.lr),
            cfg,
            model,
            best: None,
            spare: None,
            clip: ClipGrads::new(),
            stop: None,
            max_steps: None,
            log: Vec::new(),
            data: None,
            dp: None,
        }
    }

    /// Trains data-parallel over `comm`'s ranks: every rank runs this with the same
    /// configuration, weights and data (and the same resume file, if any), and each runs its
    /// rows of every batch ([`crate::dist::rows_of`] of the `N`, at their offsets in the
    /// whole batch, as [`crate::Shard`]s). The losses, and the parts of the gradient any rank
    /// touched, are summed across the ranks (allreduces), and every rank clips by the same
    /// global norm and takes the same step, so the weights stay identical on every rank and
    /// equal the single-process run up to the order of the sums. Each rank validates on the
    /// whole validation text. An interrupted run gathers every rank's carried state, so any
    /// rank's [`Trainer::save_resume`] writes the resume file one process would have written:
    /// it continues on any number of ranks.
    ///
    /// # Errors
    /// If there are more ranks than the batch has rows.
    pub fn set_data_parallel(&mut self, comm: Box<dyn Collective>) -> Result<()> {
        let (n, t, ranks) = (self.cfg.batch_size, self.cfg.time_size, comm.ranks());
        if ranks > n {
            return Err(Error::invalid(
                "data-parallel training",
                format!(
                    "{ranks} ranks but the batch has only {n} rows (--batch): each rank needs one"
                ),
            ));
        }
        let rows = crate::dist::rows_of(comm.rank(), ranks, n);
        let h = self.model.config().hidden_size;
        // The carried state [blocks, N, H] (a resumed run's), cut to this rank's rows.
        let whole = self.model.state();
        let local: Vec<f32> = whole
            .chunks_exact(n * h)
            .flat_map(|b| &b[rows.start * h..rows.end * h])
            .copied()
            .collect();
        let mut model = SimpleRnnlm::from_params(self.model.params().clone(), rows.len(), t)?;
        model.set_dropout(self.cfg.dropout, self.cfg.seed)?;
        model.set_dropout_step(self.model.dropout_step());
        model.set_state(&local)?;
        model.set_shard(Some(crate::Shard {
            row0: rows.start,
            targets: n * t,
        }))?;
        self.model = model;
        self.dp = Some(DataParallel {
            comm,
            rows,
            whole_state: Vec::new(),
            mask: Vec::new(),
            union: Vec::new(),
            packed: Vec::new(),
        });
        Ok(())
    }

    /// Gathers the whole batch's carried state from every rank (a collective: every rank
    /// calls it at the same batch).
    fn gather_state(&mut self) -> Result<()> {
        let Some(dp) = self.dp.as_mut() else {
            return Ok(());
        };
        let (n, h, m) = (
            self.cfg.batch_size,
            self.model.config().hidden_size,
            dp.rows.len(),
        );
        let local = self.model.state();
        let blocks = local.len() / (m * h);
        let mut whole = vec![0.0f32; blocks * n * h];
        for (b, part) in local.chunks_exact(m * h).enumerate() {
            let at = b * n * h + dp.rows.start * h;
            whole[at..at + m * h].copy_from_slice(part);
        }
        // Each element is one rank's (the others add zeros), so the sum is a gather.
        dp.comm.sum_f32(&mut whole)?;
        dp.whole_state = whole;
        Ok(())
    }

    /// Sets the model's class partition (a class head; see [`Params::set_class_starts`])
    /// before training starts.
    ///
    /// # Errors
    /// As [`Params::set_class_starts`], or if training has already begun.
    pub fn set_class_starts(&mut self, starts: &[u32]) -> Result<()> {
        if self.progress.steps > 0 {
            return Err(Error::invalid(
                "class starts",
                "cannot change once training has begun",
            ));
        }
        self.model.set_class_starts(starts)?;
        if let Some((best, _)) = &mut self.best {
            best.set_class_starts(starts)?;
        }
        Ok(())
    }

    /// Stop (between batches) when `flag` becomes true, e.g. from a Ctrl-C handler.
    ///
    /// ```
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// static STOP: AtomicBool = AtomicBool::new(false);
    /// let corpus: Vec<u32> = (0..1000).map(|i| (i * 7 % 11) as u32).collect();
    /// let cfg = TrainConfig { batch_size: 4, time_size: 5, ..TrainConfig::default() };
    /// let mut trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg).unwrap();
    /// trainer.stop_on(&STOP);
    /// STOP.store(true, Ordering::Relaxed); // as a Ctrl-C handler would
    /// let report = trainer.fit(&corpus, None, None, |_| {}).unwrap();
    /// assert!(report.interrupted && report.steps == 0);
    /// ```
    pub fn stop_on(&mut self, flag: &'static AtomicBool) {
        self.stop = Some(flag);
    }

    /// Stop (between batches) once `steps` optimizer steps have been taken in total.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let corpus: Vec<u32> = (0..1000).map(|i| (i * 7 % 11) as u32).collect();
    /// let cfg = TrainConfig { batch_size: 4, time_size: 5, ..TrainConfig::default() };
    /// let mut trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg).unwrap();
    /// trainer.stop_after_steps(7);
    /// let report = trainer.fit(&corpus, None, None, |_| {}).unwrap();
    /// assert!(report.interrupted);
    /// assert_eq!((report.steps, report.tokens), (7, 7 * 4 * 5));
    /// ```
    pub fn stop_after_steps(&mut self, steps: usize) {
        self.max_steps = Some(steps);
    }

    /// The model being trained.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let cfg = TrainConfig { batch_size: 4, time_size: 5, ..TrainConfig::default() };
    /// let trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg).unwrap();
    /// assert_eq!(trainer.model().config().vocab_size, 11);
    /// let ws = trainer.model().workspace(); // sized for the training batches
    /// assert_eq!((ws.batch_size(), ws.time_size()), (4, 5));
    /// ```
    pub fn model(&self) -> &SimpleRnnlm {
        &self.model
    }

    /// The training configuration.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let cfg = TrainConfig { epochs: 1, ..TrainConfig::default() };
    /// let trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg.clone()).unwrap();
    /// assert_eq!(trainer.config(), &cfg);
    /// ```
    pub fn config(&self) -> &TrainConfig {
        &self.cfg
    }

    /// The kept parameters: the best on validation if validation ran, else the current ones.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let corpus: Vec<u32> = (0..1000).map(|i| (i * 7 % 11) as u32).collect();
    /// let valid = &corpus[..200];
    /// let cfg = TrainConfig { batch_size: 4, time_size: 5, lr: 0.5, epochs: 2, eval_interval: None,
    ///                         eval_batch: 2, eval_time: 5, ..TrainConfig::default() };
    /// let mut trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg.clone()).unwrap();
    /// let report = trainer.fit(&corpus, Some(valid), None, |_| {}).unwrap();
    /// // The kept parameters are the ones that scored the best validation result.
    /// let again = rnnlm::evaluate(trainer.best_params(), valid, cfg.protocol, 2, 5).unwrap();
    /// assert_eq!(report.best_valid, Some(again));
    /// ```
    pub fn best_params(&self) -> &Params {
        self.best.as_ref().map_or(self.model.params(), |(p, _)| p)
    }

    /// The best validation result so far (that of [`Trainer::best_params`]), if validation
    /// ran.
    pub fn best_valid(&self) -> Option<Perplexity> {
        self.best.as_ref().map(|(_, b)| *b)
    }

    /// Saves everything needed to continue this run exactly: the current weights (so the file
    /// is also a loadable model), the vocabulary, the best model, the carried hidden state,
    /// the position in the schedule and the log. Written atomically.
    ///
    /// # Errors
    /// On I/O failure (an existing file is left untouched), or if the weights, the best model
    /// or the hidden state hold a NaN or an infinity (a run whose weights overflowed: such a
    /// file would not load, so nothing is written).
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let corpus: Vec<u32> = (0..2000).map(|i| (i * 7 % 11) as u32).collect();
    /// let cfg = TrainConfig { batch_size: 4, time_size: 5, lr: 0.5, epochs: 2,
    ///                         eval_interval: None, ..TrainConfig::default() };
    /// let model = rnnlm::Config::new(11, 8, 8).unwrap();
    /// let path = std::env::temp_dir().join(format!("rnnlm-doc-{}.resume", std::process::id()));
    ///
    /// let mut whole = Trainer::new(model, cfg.clone()).unwrap();
    /// whole.fit(&corpus, None, None, |_| {}).unwrap();
    ///
    /// let mut first = Trainer::new(model, cfg).unwrap();
    /// first.stop_after_steps(30);
    /// assert!(first.fit(&corpus, None, None, |_| {}).unwrap().interrupted);
    /// first.save_resume(&path, None).unwrap();
    /// let (mut rest, _) = Trainer::load_resume(&path).unwrap();
    /// rest.fit(&corpus, None, None, |_| {}).unwrap();
    /// assert_eq!(rest.model().params(), whole.model().params());
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn save_resume(&self, path: &std::path::Path, vocab: Option<&crate::Vocab>) -> Result<()> {
        let state = match &self.dp {
            None => self.model.state(),
            Some(dp) if !dp.whole_state.is_empty() => &dp.whole_state,
            Some(dp) => {
                return Err(Error::invalid(
                    "resume file",
                    format!(
                        "a data-parallel run ({} ranks) writes one when it is interrupted (only then are the ranks' carried states gathered)",
                        dp.comm.ranks()
                    ),
                ))
            }
        };
        let meta = ResumeMeta {
            config: self.cfg.clone(),
            progress: self.progress.clone(),
            best: self.best.as_ref().map(|(_, b)| *b),
            log: self.log.clone(),
            data: self.data,
        };
        let h = self.model.config().hidden_size;
        let mut extra: Vec<(String, Vec<usize>, &[f32])> =
            vec![("trainer.h".into(), vec![state.len() / h, h], state)];
        if let Some((best, _)) = &self.best {
            for (name, shape, t) in best.tensors() {
                extra.push((format!("trainer.best.{name}"), shape, t));
            }
        }
        let json = serde_json::to_string(&meta).expect("plain data always serialises");
        checkpoint::save_with(
            path,
            self.model.params(),
            vocab,
            &extra,
            &[(RESUME_KEY, json)],
        )
    }

    /// Loads a file written by [`Trainer::save_resume`]; [`Trainer::fit`] then continues the
    /// run where it stopped, with the same results as an uninterrupted run. Returns the
    /// vocabulary stored with it.
    ///
    /// # Errors
    /// If the file cannot be read or is not a resumable checkpoint.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let corpus: Vec<u32> = (0..1000).map(|i| (i * 7 % 11) as u32).collect();
    /// let vocab = rnnlm::Vocab::from_words((0..11).map(|i| format!("w{i}")).collect()).unwrap();
    /// let cfg = TrainConfig { batch_size: 4, time_size: 5, ..TrainConfig::default() };
    /// let mut trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg).unwrap();
    /// trainer.stop_after_steps(5);
    /// trainer.fit(&corpus, None, None, |_| {}).unwrap();
    /// let path = std::env::temp_dir().join(format!("rnnlm-doc-load-resume-{}", std::process::id()));
    /// trainer.save_resume(&path, Some(&vocab)).unwrap();
    /// let (back, words) = Trainer::load_resume(&path).unwrap();
    /// assert_eq!(back.config(), trainer.config());
    /// assert_eq!(back.model().params(), trainer.model().params());
    /// assert_eq!((back.model().state(), words), (trainer.model().state(), Some(vocab)));
    /// // A plain model checkpoint has no trainer state to resume.
    /// rnnlm::checkpoint::save(&path, trainer.model().params(), None).unwrap();
    /// assert!(Trainer::load_resume(&path).is_err());
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn load_resume(path: &std::path::Path) -> Result<(Self, Option<crate::Vocab>)> {
        let ckpt = checkpoint::load(path)?;
        let bad = |msg: String| Error::Checkpoint {
            path: path.to_owned(),
            msg,
        };
        let text = ckpt.metadata.get(RESUME_KEY).ok_or_else(|| {
            bad("has no trainer state: it is a model, not a resumable checkpoint".into())
        })?;
        let meta: ResumeMeta = serde_json::from_str(text)
            .map_err(|e| bad(format!("trainer state is not valid ({e})")))?;
        meta.config.validate()?;
        meta.check().map_err(bad)?;
        let cfg = *ckpt.params.config();
        let mut trainer = Self::from_params(ckpt.params, meta.config)?;
        let (shape, h) = ckpt
            .extra_tensors
            .get("trainer.h")
            .ok_or_else(|| bad("missing tensor \"trainer.h\"".into()))?;
        let rows = trainer.model.state().len() / cfg.hidden_size;
        if shape != &[rows, cfg.hidden_size] {
            return Err(bad(format!(
                "trainer.h has shape {shape:?}, expected {:?}",
                [rows, cfg.hidden_size]
            )));
        }
        trainer.model.set_state(h)?;
        // Dropout masks are keyed by the training step: continue the count.
        trainer.model.set_dropout_step(meta.progress.steps as u64);
        if let Some(best) = meta.best {
            let mut kept = Params::try_zeros(cfg)?;
            let mut at = 0;
            for (name, shape) in Params::layout(&cfg) {
                let key = format!("trainer.best.{name}");
                let (s, t) = ckpt
                    .extra_tensors
                    .get(&key)
                    .ok_or_else(|| bad(format!("missing tensor {key:?}")))?;
                if s != &shape {
                    return Err(bad(format!("{key} has shape {s:?}, expected {shape:?}")));
                }
                kept.as_mut_slice()[at..at + t.len()].copy_from_slice(t);
                at += t.len();
            }
            // The best weights share the model's class partition (saved once, with the model).
            if cfg.softmax.is_class() {
                kept.set_class_starts(trainer.model.params().class_starts())?;
            }
            trainer.best = Some((kept, best));
        }
        trainer.progress = meta.progress;
        trainer.log = meta.log;
        trainer.data = meta.data;
        Ok((trainer, ckpt.vocab))
    }

    /// The learning rate of the next step (the configured one after any decays).
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let mut t = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), TrainConfig::default()).unwrap();
    /// assert_eq!(t.current_lr(), 5.0);
    /// t.set_lr(0.5).unwrap();
    /// assert_eq!((t.current_lr(), t.config().lr), (0.5, 0.5));
    /// assert!(t.set_lr(-1.0).is_err() && t.set_lr(f32::NAN).is_err());
    /// ```
    pub fn current_lr(&self) -> f32 {
        self.progress.lr
    }

    /// Sets the learning rate from the next step on, and as the run's configured rate (saved
    /// with it), e.g. to continue a resumed run more gently.
    ///
    /// # Errors
    /// If `lr` is not a positive finite number.
    pub fn set_lr(&mut self, lr: f32) -> Result<()> {
        TrainConfig {
            lr,
            ..self.cfg.clone()
        }
        .validate()?;
        self.cfg.lr = lr;
        self.progress.lr = lr;
        Ok(())
    }

    /// Sets the gradient-norm clip (`None`: off) from the next step on.
    ///
    /// # Errors
    /// If the limit is not a positive finite number.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let mut t = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), TrainConfig::default()).unwrap();
    /// t.set_max_grad(Some(1.0)).unwrap();
    /// assert_eq!(t.config().max_grad, Some(1.0));
    /// assert!(t.set_max_grad(Some(f32::NAN)).is_err());
    /// ```
    pub fn set_max_grad(&mut self, max_grad: Option<f32>) -> Result<()> {
        TrainConfig {
            max_grad,
            ..self.cfg.clone()
        }
        .validate()?;
        self.cfg.max_grad = max_grad;
        Ok(())
    }

    /// The fingerprint of the training data this run has seen: set by the first
    /// [`Trainer::fit`], restored by [`Trainer::load_resume`] (`None` for a new run, or a
    /// resume file written before fingerprints were saved).
    pub fn data_fingerprint(&self) -> Option<DataFingerprint> {
        self.data
    }

    /// Checks that `train` is the data this run trained on so far (always true for a new
    /// run); [`Trainer::fit`] checks it too.
    ///
    /// # Errors
    /// [`Error::Invalid`] ("training data") saying what differs.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let corpus: Vec<u32> = (0..1000).map(|i| (i * 7 % 11) as u32).collect();
    /// let cfg = TrainConfig { batch_size: 4, time_size: 5, ..TrainConfig::default() };
    /// let mut trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg).unwrap();
    /// trainer.stop_after_steps(3);
    /// trainer.fit(&corpus, None, None, |_| {}).unwrap();
    /// assert!(trainer.check_data(&corpus).is_ok());
    /// let err = trainer.check_data(&corpus[..500]).unwrap_err().to_string();
    /// assert!(err.contains("500 tokens") && err.contains("1000"), "{err}");
    /// ```
    pub fn check_data<'a>(&self, train: impl Into<Tokens<'a>>) -> Result<()> {
        let Some(saved) = self.data else {
            return Ok(());
        };
        let now = DataFingerprint::of(train);
        if now == saved {
            return Ok(());
        }
        let msg = if now.tokens != saved.tokens {
            format!(
                "{} tokens, but the run trained on {} tokens; resume with the data it started on",
                now.tokens, saved.tokens
            )
        } else {
            format!(
                "{} tokens like the run's, but not the same ones (FNV-1a {:016x}, the run's {:016x}); resume with the data it started on",
                now.tokens, now.fnv1a, saved.fnv1a
            )
        };
        Err(Error::invalid("training data", msg))
    }

    /// Every evaluation point so far (training progress and per-epoch validation), also when
    /// [`Trainer::fit`] stopped with an error.
    pub fn log(&self) -> &[EvalPoint] {
        &self.log
    }

    /// Trains on `train`, validating on `valid` after each epoch and testing the kept model
    /// on `test` at the end; `on_event` sees progress and epoch results.
    ///
    /// Before the first step it checks every corpus (ids inside the vocabulary, train fills a
    /// batch, valid and test fill an evaluation batch) and that `train` is the data a resumed
    /// run started on. Each step's loss and global gradient norm (computed also when clipping
    /// is off) are checked before the update: when one is NaN or infinite (for the loss: when
    /// its perplexity is, i.e. above ~709.8 nats per word), the run stops with
    /// [`Error::Diverged`], the weights those from before that step (no update is made with
    /// a non-finite number) and the run positioned at that batch, so
    /// [`Trainer::save_resume`] saves exactly where it stopped. (Weights that already give an
    /// overflowing loss stay lost: a run is rescued by restarting with a lower rate.) A
    /// non-finite validation perplexity is never the best and stops the run the same way.
    /// With `valid`, the copy of the kept model is also allocated before the first step,
    /// through the memory check ([`Params::try_zeros`]).
    ///
    /// # Errors
    /// If a corpus is too short or holds ids outside the vocabulary, `train` is not the data
    /// the run started on, the kept model's copy does not fit in memory ([`Error::Memory`]),
    /// or the run diverges.
    ///
    /// ```
    /// use rnnlm::train::{TrainConfig, Trainer};
    /// let corpus: Vec<u32> = (0..1000).map(|i| (i * 7 % 11) as u32).collect();
    /// let cfg = TrainConfig { batch_size: 4, time_size: 5, lr: 0.5, epochs: 2, eval_interval: None,
    ///                         eval_batch: 2, eval_time: 5, ..TrainConfig::default() };
    /// let mut trainer = Trainer::new(rnnlm::Config::new(11, 8, 8).unwrap(), cfg).unwrap();
    /// assert!(trainer.fit(&[0, 1, 11], None, None, |_| {}).is_err()); // id 11 is outside V = 11
    /// assert!(trainer.fit(&corpus[..20], None, None, |_| {}).is_err()); // needs 4 * 5 + 1 tokens
    /// let report = trainer.fit(&corpus, None, Some(&corpus[..200]), |_| {}).unwrap();
    /// // The sequence is a cycle of 11 ids, each determining the next: easy to learn.
    /// assert!(report.test.unwrap().perplexity < 1.5);
    /// ```
    pub fn fit(
        &mut self,
        train: &[u32],
        valid: Option<&[u32]>,
        test: Option<&[u32]>,
        on_event: impl FnMut(Event<'_>),
    ) -> Result<TrainReport> {
        self.fit_tokens(
            train.into(),
            valid.map(Tokens::from),
            test.map(Tokens::from),
            on_event,
        )
    }

    /// [`Trainer::fit`] over [`Tokens`]: the same run, also over memory-mapped ids files
    /// ([`IdsFile::tokens`](crate::data::ids::IdsFile::tokens)), read in place.
    ///
    /// # Errors
    /// As [`Trainer::fit`].
    pub fn fit_tokens(
        &mut self,
        train: Tokens<'_>,
        valid: Option<Tokens<'_>>,
        test: Option<Tokens<'_>>,
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<TrainReport> {
        let cfg = self.cfg.clone();
        let (n, t) = (cfg.batch_size, cfg.time_size);
        let v = self.model.config().vocab_size;
        for (name, c) in [("train", Some(train)), ("valid", valid), ("test", test)] {
            let Some(c) = c else { continue };
            c.for_each_chunk(|_, chunk| match chunk.iter().find(|&&x| x as usize >= v) {
                Some(bad) => Err(Error::invalid(
                    format!("{name} corpus"),
                    format!("id {bad} is outside the vocabulary (size {v})"),
                )),
                None => Ok(()),
            })?;
        }
        for (name, c) in [("valid", valid), ("test", test)] {
            if let Some(c) = c {
                cfg.check_eval_corpus(c.len()).map_err(|e| match e {
                    Error::Invalid { msg, .. } => Error::invalid(format!("{name} corpus"), msg),
                    other => other,
                })?;
            }
        }
        let mut batches = BookBatches::new(train, n, t)?;
        let iters = batches.iters_per_epoch();
        self.check_data(train)?;
        if self.progress.iter > iters {
            return Err(Error::invalid(
                "training data",
                format!(
                    "the run stands at batch {} of epoch {}, past this data's {iters} batches per epoch; resume with the data it started on",
                    self.progress.iter, self.progress.epoch
                ),
            ));
        }
        self.data = Some(DataFingerprint::of(train));
        if valid.is_some() && self.best.is_none() && self.spare.is_none() {
            self.spare = Some(Params::try_zeros(*self.model.config())?);
        }
        // This rank's rows of each batch (all N on one process).
        let rows = self.dp.as_ref().map_or(0..n, |dp| dp.rows.clone());
        let (mut xs, mut ts) = (vec![0u32; rows.len() * t], vec![0i32; rows.len() * t]);
        // The carried state before the current batch: a batch that diverges puts it back, so
        // the run stands exactly before that batch (one copy of N x H per layer and step).
        let mut carried = self.model.state().to_vec();
        let mut sgd = Sgd::new(self.progress.lr);
        let start = Instant::now();
        let base = (self.progress.elapsed_s, self.progress.eval_s);
        let mut eval_seconds = base.1;
        let elapsed = |start: &Instant| base.0 + start.elapsed().as_secs_f64();
        let mut interrupted = false;
        'epochs: while self.progress.epoch <= cfg.epochs {
            let epoch = self.progress.epoch;
            // The book's fit(max_epoch=1) restarts the batch offsets every epoch.
            batches.set_time_idx(self.progress.iter * t);
            while self.progress.iter < iters {
                let mut stop = self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
                    || self.max_steps.is_some_and(|m| self.progress.steps >= m);
                if let Some(dp) = &self.dp {
                    // A signal reaches the ranks at different batches: they stop together,
                    // at the first batch any of them was asked to, or the others would wait
                    // in the next sum forever.
                    let mut any = [f64::from(u8::from(stop))];
                    dp.comm.sum_f64(&mut any)?;
                    stop = any[0] > 0.0;
                }
                if stop {
                    interrupted = true;
                    self.gather_state()?;
                    break 'epochs;
                }
                let iter = self.progress.iter;
                carried.copy_from_slice(self.model.state());
                batches.next_rows(rows.clone(), &mut xs, &mut ts);
                let mut loss = self.model.forward(&xs, &ts)?;
                if let Some(dp) = &self.dp {
                    // The ranks' shares of the whole batch's mean: every rank sees the sum,
                    // so every rank takes the same decisions below.
                    let mut sum = [loss as f64];
                    dp.comm.sum_f64(&mut sum)?;
                    loss = sum[0] as f32;
                }
                // Beyond ~709.8 nats per token even the perplexity overflows f64: nothing a
                // learning model produces (uniform over V words is ln V), so the run is lost.
                let mut what = match loss {
                    l if !l.is_finite() => Some(format!("the loss is {l}")),
                    l if !(l as f64).exp().is_finite() => Some(format!(
                        "the loss is {l:.1} nats per word (its perplexity overflows)"
                    )),
                    _ => None,
                };
                if what.is_none() {
                    self.model.backward()?;
                    // Only the parts the batch touched (the rest of the gradient is zero):
                    // the dense norm and update, bit for bit, without sweeping every row.
                    // Data-parallel: the parts any rank touched, summed across the ranks,
                    // become the grad ranges (the next backward clears them).
                    if let Some(dp) = self.dp.as_mut() {
                        let (_, grads, ranges) = self.model.params_mut_grads_ranges();
                        dp.sum_touched(grads.as_mut_slice(), ranges)?;
                        self.model.set_grad_ranges(&dp.union);
                    }
                    let (_, grads, ranges) = self.model.params_mut_grads_ranges();
                    let grads = grads.as_mut_slice();
                    // The same deterministic norm with clipping on or off.
                    let norm = match cfg.max_grad {
                        Some(max) => self.clip.clip_ranges(grads, ranges, max),
                        None => self.clip.norm_ranges(grads, ranges),
                    };
                    let step_norm = cfg.max_grad.map_or(norm, |m| norm.min(m as f64));
                    if !norm.is_finite() {
                        what = Some(format!("the gradient norm is {norm}"));
                    } else if sgd.lr as f64 * step_norm > f32::MAX as f64 {
                        // Finite gradients whose update alone would overflow f32.
                        what = Some(format!(
                            "the update overflows (gradient norm {norm:.3e} at lr {})",
                            sgd.lr
                        ));
                    }
                }
                if let Some(what) = what {
                    // Nothing was updated: undo the batch's effect on the carried state and
                    // the dropout step, so a resume point saved now continues from here.
                    self.model.set_state(&carried)?;
                    self.model.set_dropout_step(self.progress.steps as u64);
                    self.progress.elapsed_s = elapsed(&start);
                    self.progress.eval_s = eval_seconds;
                    return Err(Error::Diverged {
                        epoch,
                        step: self.progress.steps + 1,
                        what,
                        hint: "the weights are those from before that step; try a lower learning rate or gradient clipping".into(),
                    });
                }
                let (params, grads, ranges) = self.model.params_mut_grads_ranges();
                sgd.update_ranges((params, grads), ranges);
                let p = &mut self.progress;
                p.total_loss += loss as f64;
                p.count += 1;
                p.steps += 1;
                p.tokens += (n * t) as u64;
                p.iter += 1;
                if cfg.eval_interval.is_some_and(|e| iter.is_multiple_of(e)) {
                    let now = elapsed(&start);
                    self.log.push(EvalPoint {
                        epoch,
                        iter: iter + 1,
                        step: p.steps,
                        tokens: p.tokens,
                        elapsed_s: now,
                        lr: sgd.lr,
                        train_ppl: Some((p.total_loss / p.count as f64).exp()),
                        valid_ppl: None,
                    });
                    (p.total_loss, p.count) = (0.0, 0);
                    on_event(Event::Progress {
                        point: self.log.last().expect("just pushed"),
                        iters,
                        tokens_per_sec: p.tokens as f64 / (now - eval_seconds).max(1e-9),
                    });
                }
            }
            // End of the epoch: the next one starts from its first batch with fresh sums.
            let p = &mut self.progress;
            (p.epoch, p.iter, p.total_loss, p.count) = (epoch + 1, 0, 0.0, 0);
            let Some(valid) = valid else { continue };
            let e0 = Instant::now();
            self.model.reset_state();
            let evaluated = evaluate(
                self.model.params(),
                valid,
                cfg.protocol,
                cfg.eval_batch,
                cfg.eval_time,
            );
            // A model without a finite perplexity diverged: logged as NaN, and stopped below.
            let (result, why) = match evaluated {
                Ok(r) => (r, None),
                Err(e @ Error::NotFinite { .. }) => (Perplexity::not_finite(), Some(e)),
                Err(e) => return Err(e),
            };
            self.model.reset_state();
            eval_seconds += e0.elapsed().as_secs_f64();
            // A non-finite perplexity is never the best (NaN would otherwise beat "no best").
            let finite = result.perplexity.is_finite();
            let improved = finite
                && self
                    .best
                    .as_ref()
                    .is_none_or(|(_, b)| result.perplexity < b.perplexity);
            if improved {
                let mut kept = match (self.best.take(), self.spare.take()) {
                    (Some((p, _)), _) | (None, Some(p)) => p,
                    (None, None) => Params::try_zeros(*self.model.config())?,
                };
                kept.copy_from(self.model.params());
                self.best = Some((kept, result));
            } else {
                sgd.lr /= cfg.lr_decay;
            }
            self.progress.lr = sgd.lr;
            self.log.push(EvalPoint {
                epoch,
                iter: iters,
                step: self.progress.steps,
                tokens: self.progress.tokens,
                elapsed_s: elapsed(&start),
                lr: sgd.lr,
                train_ppl: None,
                valid_ppl: Some(result.perplexity),
            });
            on_event(Event::Epoch {
                epoch,
                valid: Some(result),
                improved,
                lr: sgd.lr,
            });
            if !finite {
                // Stopped as after an epoch without improvement (lr decayed), so a resume
                // continues with the next epoch.
                self.progress.elapsed_s = elapsed(&start);
                self.progress.eval_s = eval_seconds;
                return Err(Error::Diverged {
                    epoch,
                    step: self.progress.steps,
                    what: match why {
                        Some(e) => format!("validation text, {e}"),
                        None => format!("the validation perplexity is {}", result.perplexity),
                    },
                    hint: "the best model so far is kept; try a lower learning rate or gradient clipping".into(),
                });
            }
        }
        self.progress.elapsed_s = elapsed(&start);
        self.progress.eval_s = eval_seconds;
        let test = match test {
            Some(c) if !interrupted => {
                let e0 = Instant::now();
                let r = evaluate(
                    self.best_params(),
                    c,
                    cfg.protocol,
                    cfg.eval_batch,
                    cfg.eval_time,
                )
                .map_err(|e| match e {
                    // Reported as a divergence, so that the caller saves what it can.
                    e @ Error::NotFinite { .. } => Error::Diverged {
                        epoch: cfg.epochs,
                        step: self.progress.steps,
                        what: format!("test text, {e}"),
                        hint: "the best model is kept".into(),
                    },
                    e => e,
                })?;
                eval_seconds += e0.elapsed().as_secs_f64();
                Some(r)
            }
            _ => None,
        };
        let seconds = elapsed(&start);
        Ok(TrainReport {
            best_valid: self.best.as_ref().map(|(_, b)| *b),
            test,
            steps: self.progress.steps,
            tokens: self.progress.tokens,
            seconds,
            tokens_per_sec: self.progress.tokens as f64 / (seconds - eval_seconds).max(1e-9),
            log: self.log.clone(),
            interrupted,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `check_eval_corpus` mirrors what each evaluation protocol accepts.
    #[test]
    fn eval_corpus_check_agrees_with_the_evaluators() {
        use rand::SeedableRng;
        let params = Params::init_book(
            Config::new(7, 4, 4).unwrap(),
            &mut rand_chacha::ChaCha8Rng::seed_from_u64(1),
        );
        let corpus: Vec<u32> = (0..200).map(|i| i % 7).collect();
        for protocol in [Protocol::Book, Protocol::Full, Protocol::Torch] {
            for (n, t) in [(1, 1), (3, 5), (10, 4)] {
                let cfg = TrainConfig {
                    protocol,
                    eval_batch: n,
                    eval_time: t,
                    ..TrainConfig::default()
                };
                for len in 0..60 {
                    let runs = evaluate(&params, &corpus[..len], protocol, n, t).is_ok();
                    let check = cfg.check_eval_corpus(len).is_ok();
                    assert_eq!(runs, check, "{protocol:?} n={n} t={t} len={len}");
                }
            }
        }
    }

    fn meta() -> ResumeMeta {
        let cfg = TrainConfig::default();
        ResumeMeta {
            progress: Progress::start(cfg.lr),
            config: cfg,
            best: None,
            log: Vec::new(),
            data: Some(DataFingerprint::of(&[1, 2, 3])),
        }
    }

    #[test]
    fn resume_state_without_a_fingerprint_still_loads() {
        let mut json: serde_json::Value = serde_json::to_value(meta()).unwrap();
        json.as_object_mut().unwrap().remove("data").unwrap();
        let old: ResumeMeta = serde_json::from_value(json).unwrap();
        assert_eq!(old.data, None);
        assert!(old.check().is_ok());
    }

    #[test]
    fn impossible_resume_state_is_refused() {
        for lr in [-1.0, 0.0, f32::NAN, f32::INFINITY] {
            let mut m = meta();
            m.progress.lr = lr;
            let err = m.check().unwrap_err();
            assert!(err.contains("learning rate"), "{err}");
        }
        let mut m = meta();
        m.progress.epoch = 0;
        assert!(m.check().is_err());
        m.progress.epoch = m.config.epochs + 2;
        assert!(m.check().is_err());
        let mut m = meta();
        m.progress.total_loss = f64::NAN;
        assert!(m.check().is_err());
        // A NaN rate cannot even be written as JSON: it reads back as null and is refused.
        let mut m = meta();
        m.progress.lr = f32::NAN;
        let text = serde_json::to_string(&m).unwrap();
        assert!(serde_json::from_str::<ResumeMeta>(&text).is_err(), "{text}");
    }
}
