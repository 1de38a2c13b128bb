//! Training: the book's `RnnlmTrainer` loop and its chapter-6 schedule.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

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
#[derive(Clone, Debug, PartialEq)]
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
        }
    }
}

impl TrainConfig {
    /// # Errors
    /// If a size is zero or a rate is not a positive finite number.
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
        if self.eval_interval == Some(0) {
            return Err(Error::invalid("eval_interval", "must be at least 1"));
        }
        Ok(())
    }
}

/// What the trainer reports while it runs.
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
}

impl Trainer {
    /// A trainer for a new model with the book's initialisation drawn from `cfg.seed`.
    ///
    /// # Errors
    /// If either configuration is invalid.
    pub fn new(model: Config, cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        let model = SimpleRnnlm::new(model, cfg.batch_size, cfg.time_size, cfg.seed)?;
        Ok(Self::with_model(model, cfg))
    }

    /// A trainer continuing from existing parameters.
    ///
    /// # Errors
    /// If the configuration is invalid.
    pub fn from_params(params: Params, cfg: TrainConfig) -> Result<Self> {
        cfg.validate()?;
        let model = SimpleRnnlm::from_params(params, cfg.batch_size, cfg.time_size)?;
        Ok(Self::with_model(model, cfg))
    }

    fn with_model(model: SimpleRnnlm, cfg: TrainConfig) -> Self {
        Self {
            cfg,
            model,
            best: None,
            clip: ClipGrads::new(),
            stop: None,
        }
    }

    /// Stop (between batches) when `flag` becomes true, e.g. from a Ctrl-C handler.
    pub fn stop_on(&mut self, flag: &'static AtomicBool) {
        self.stop = Some(flag);
    }

    /// The model being trained.
    pub fn model(&self) -> &SimpleRnnlm {
        &self.model
    }

    /// The kept parameters: the best on validation if validation ran, else the current ones.
    pub fn best_params(&self) -> &Params {
        self.best.as_ref().map_or(self.model.params(), |(p, _)| p)
    }

    /// Trains on `train`, validating on `valid` after each epoch and testing the kept model
    /// on `test` at the end; `on_event` sees progress and epoch results.
    ///
    /// # Errors
    /// If a corpus is too short for one batch or holds ids outside the vocabulary.
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
        let mut sgd = Sgd::new(cfg.lr);
        let start = Instant::now();
        let mut eval_seconds = 0.0;
        let (mut steps, mut tokens) = (0usize, 0u64);
        let mut log = Vec::new();
        let mut interrupted = false;
        'epochs: for epoch in 1..=cfg.epochs {
            batches.set_time_idx(0);
            let (mut total_loss, mut count) = (0.0f64, 0usize);
            for iter in 0..iters {
                if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    interrupted = true;
                    break 'epochs;
                }
                batches.next_batch(&mut xs, &mut ts);
                let loss = self.model.forward(&xs, &ts)?;
                self.model.backward()?;
                if let Some(max) = cfg.max_grad {
                    self.clip.clip(self.model.grads_mut().as_mut_slice(), max);
                }
                sgd.update(self.model.params_mut_and_grads());
                total_loss += loss as f64;
                count += 1;
                steps += 1;
                tokens += (n * t) as u64;
                if cfg.eval_interval.is_some_and(|e| iter % e == 0) {
                    let elapsed = start.elapsed().as_secs_f64();
                    log.push(EvalPoint {
                        epoch,
                        iter: iter + 1,
                        step: steps,
                        tokens,
                        elapsed_s: elapsed,
                        lr: sgd.lr,
                        train_ppl: Some((total_loss / count as f64).exp()),
                        valid_ppl: None,
                    });
                    (total_loss, count) = (0.0, 0);
                    on_event(Event::Progress {
                        point: log.last().expect("just pushed"),
                        iters,
                        tokens_per_sec: tokens as f64 / (elapsed - eval_seconds).max(1e-9),
                    });
                }
            }
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
            log.push(EvalPoint {
                epoch,
                iter: iters,
                step: steps,
                tokens,
                elapsed_s: start.elapsed().as_secs_f64(),
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
        let seconds = start.elapsed().as_secs_f64();
        Ok(TrainReport {
            best_valid: self.best.as_ref().map(|(_, b)| *b),
            test,
            steps,
            tokens,
            seconds,
            tokens_per_sec: tokens as f64 / (seconds - eval_seconds).max(1e-9),
            log,
            interrupted,
        })
    }
}
