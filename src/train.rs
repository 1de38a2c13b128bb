//! Training: the book's `RnnlmTrainer` loop and its chapter-6 schedule.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use crate::checkpoint;
use crate::data::batcher::BookBatches;
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
    clip: ClipGrads,
    stop: Option<&'static AtomicBool>,
    max_steps: Option<usize>,
    progress: Progress,
    log: Vec<EvalPoint>,
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
#[derive(serde::Serialize, serde::Deserialize)]
struct ResumeMeta {
    config: TrainConfig,
    progress: Progress,
    best: Option<Perplexity>,
    log: Vec<EvalPoint>,
}

impl Trainer {
    /// A trainer for a new model with the book's initialisation drawn from `cfg.seed`.
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
        cfg.validate()?;
        let model = SimpleRnnlm::new(model, cfg.batch_size, cfg.time_size, cfg.seed)?;
        Ok(Self::with_model(model, cfg))
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
            clip: ClipGrads::new(),
            stop: None,
            max_steps: None,
            log: Vec::new(),
        }
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

    /// Saves everything needed to continue this run exactly: the current weights (so the file
    /// is also a loadable model), the vocabulary, the best model, the carried hidden state,
    /// the position in the schedule and the log. Written atomically.
    ///
    /// # Errors
    /// On I/O failure (an existing file is left untouched).
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
        let meta = ResumeMeta {
            config: self.cfg.clone(),
            progress: self.progress.clone(),
            best: self.best.as_ref().map(|(_, b)| *b),
            log: self.log.clone(),
        };
        let state = self.model.state();
        let h = self.model.config().hidden_size;
        let mut extra: Vec<(String, Vec<usize>, &[f32])> =
            vec![("trainer.h".into(), vec![state.len() / h, h], state)];
        if let Some((best, _)) = &self.best {
            for (name, shape, t) in best.tensors() {
                extra.push((format!("trainer.best.{name}"), shape, t));
            }
        }
        let json = serde_json::to_string(&meta).expect("plain data always serialises");
        let bytes =
            checkpoint::to_bytes_with(self.model.params(), vocab, &extra, &[(RESUME_KEY, json)])?;
        checkpoint::write_atomic(path, &bytes)
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
            let mut data = Vec::with_capacity(Params::len_of(&cfg));
            for (name, shape) in Params::layout(&cfg) {
                let key = format!("trainer.best.{name}");
                let (s, t) = ckpt
                    .extra_tensors
                    .get(&key)
                    .ok_or_else(|| bad(format!("missing tensor {key:?}")))?;
                if s != &shape {
                    return Err(bad(format!("{key} has shape {s:?}, expected {shape:?}")));
                }
                data.extend_from_slice(t);
            }
            trainer.best = Some((Params::from_vec(cfg, data), best));
        }
        trainer.progress = meta.progress;
        trainer.log = meta.log;
        Ok((trainer, ckpt.vocab))
    }

    /// Trains on `train`, validating on `valid` after each epoch and testing the kept model
    /// on `test` at the end; `on_event` sees progress and epoch results.
    ///
    /// # Errors
    /// If a corpus is too short for one batch or holds ids outside the vocabulary.
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
        mut on_event: impl FnMut(Event<'_>),
    ) -> Result<TrainReport> {
        let cfg = self.cfg.clone();
        let (n, t) = (cfg.batch_size, cfg.time_size);
        let v = self.model.config().vocab_size;
        for (name, c) in [("train", Some(train)), ("valid", valid), ("test", test)] {
            if let Some(bad) = c.and_then(|c| c.iter().find(|&&x| x as usize >= v)) {
                return Err(Error::invalid(
                    format!("{name} corpus"),
                    format!("id {bad} is outside the vocabulary (size {v})"),
                ));
            }
        }
        let mut batches = BookBatches::new(train, n, t)?;
        let iters = batches.iters_per_epoch();
        let (mut xs, mut ts) = (vec![0u32; n * t], vec![0i32; n * t]);
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
                let stop = self.stop.is_some_and(|s| s.load(Ordering::Relaxed))
                    || self.max_steps.is_some_and(|m| self.progress.steps >= m);
                if stop {
                    interrupted = true;
                    break 'epochs;
                }
                let iter = self.progress.iter;
                batches.next_batch(&mut xs, &mut ts);
                let loss = self.model.forward(&xs, &ts)?;
                self.model.backward()?;
                if let Some(max) = cfg.max_grad {
                    self.clip.clip(self.model.grads_mut().as_mut_slice(), max);
                }
                sgd.update(self.model.params_mut_and_grads());
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
            let result = evaluate(
                self.model.params(),
                valid,
                cfg.protocol,
                cfg.eval_batch,
                cfg.eval_time,
            )?;
            self.model.reset_state();
            eval_seconds += e0.elapsed().as_secs_f64();
            let improved = self
                .best
                .as_ref()
                .is_none_or(|(_, b)| result.perplexity < b.perplexity);
            if improved {
                self.best = Some((self.model.params().clone(), result));
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
                )?;
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
