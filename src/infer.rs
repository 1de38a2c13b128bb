//! Streaming inference: a trained model stepped one token at a time, scoring and sampling.
//!
//! [`Rnnlm`] holds the weights, the vocabulary and packed copies of `Wx`, `Wh` and `affine.W`,
//! made once when the model is built, so a step never repacks. It is immutable afterwards
//! (`Send + Sync`): share it across threads behind an `Arc`, each thread with its own
//! [`State`]. A step computes exactly what [`crate::model::simple::forward`] computes for one
//! time position, with the same kernels in the same order, so hidden states and logits are
//! bit-identical to the training forward's.

use std::fmt;
use std::path::Path;

use rand::{Rng, RngExt};

use crate::cells::{self, Dims, LayerRows, StepWeights};
use crate::checkpoint;
use crate::data::vocab::Vocab;
use crate::error::{Error, Result};
use crate::gemm::{self, Accum, MatMut, MatRef, Packed};
use crate::heads::adaptive::AdaptiveSoftmax;
use crate::heads::class::{ClassSoftmax, WordPacks};
use crate::heads::full::FullSoftmax;
use crate::heads::{AnyHead, Draw, Head, SampleScratch, Scratch};
use crate::layers::embedding;
use crate::mem::{check_memory, try_zeros};
use crate::model::config::Config;
use crate::model::params::Params;

/// Most streams per group of [`Rnnlm::score_batch`]: enough rows for the recurrent products to
/// run at GEMM speed, few enough that a batch of lines splits into groups for every thread.
pub const SCORE_GROUP: usize = 64;

/// Fewest streams a group of [`Rnnlm::score_batch`] is cut to so that every thread gets one:
/// a batch of 64 lines on 2 threads ran as one group, so the output layer (most of the work)
/// ran on one thread.
pub const SCORE_GROUP_MIN: usize = 8;

/// Positions whose output layer [`Rnnlm::score_batch`] computes together (the head reads `W`
/// once per slice of them; the pending states take `SCORE_POSITIONS * H` floats).
pub const SCORE_POSITIONS: usize = 512;

/// The groups of [`Rnnlm::score_batch`] over `order` (sequence indices, longest first), each
/// longest first. At least one group per thread while groups keep [`SCORE_GROUP_MIN`]
/// streams. With many groups a contiguous cut keeps streams of like length together (the
/// recurrent products keep their rows longer) and rayon balances the groups; with few, the
/// sequences are dealt round robin, so each group holds a like share of the tokens.
fn score_groups(order: &[usize], threads: usize) -> Vec<Vec<usize>> {
    let n = order.len();
    let g = n
        .div_ceil(SCORE_GROUP)
        .max(threads.min(n.div_ceil(SCORE_GROUP_MIN)));
    if g == 0 {
        return Vec::new();
    }
    if g >= 4 * threads {
        return order.chunks(n.div_ceil(g)).map(<[usize]>::to_vec).collect();
    }
    (0..g)
        .map(|j| order.iter().skip(j).step_by(g).copied().collect())
        .collect()
}

/// A trained model ready for inference: weights, vocabulary, and packed copies of `Wx`, `Wh`
/// and `affine.W` made once, so steps never repack.
///
/// Immutable after construction, hence `Send + Sync`: share one across threads (for example in
/// an `Arc`), each thread stepping its own [`State`].
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::{Config, Params, Rnnlm, Sampling, Vocab};
///
/// let words = ["<eos>", "the", "cat", "sat", "on", "mat"];
/// let vocab = Vocab::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
/// let cfg = Config::new(vocab.len(), 8, 8).unwrap();
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
/// let model = Rnnlm::new(Params::init_book(cfg, &mut rng), vocab).unwrap();
///
/// // Score a sentence: ln p(words[1..] | words[0]).
/// let ids = model.encode("<eos> the cat sat on the mat").unwrap();
/// let score = model.score(&ids).unwrap();
/// assert_eq!(score.tokens, 6);
/// assert!(score.log_prob < 0.0);
/// // An untrained model is close to uniform: perplexity near V = 6.
/// assert!((score.perplexity() - 6.0).abs() < 1.0);
///
/// // Sample five words after "<eos>", never emitting "<eos>".
/// let eos = model.encode("<eos>").unwrap();
/// let sampling = Sampling { skip: eos.clone(), ..Sampling::default() };
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
/// let sampled = model.generate(&mut rng, &eos, 5, &sampling).unwrap();
/// assert_eq!(sampled.len(), 5);
/// assert!(!sampled.contains(&eos[0]));
/// println!("{}", model.decode(&sampled));
/// ```
#[derive(Clone)]
pub struct Rnnlm {
    params: Params,
    vocab: Vocab,
    /// Per layer: `Wx` packed `[D_l, GH]` and `Wh` packed `[H, GH]`.
    layers: Vec<(Vec<f32>, Vec<f32>)>,
    /// `affine.W [H,V]` packed (a factorised head's first softmax).
    w_packed: Vec<f32>,
    /// Zeros for the bias of an adaptive head without one.
    zero_b: Vec<f32>,
    /// A factorised head's second stage (the classes' or clusters' word vectors) packed once.
    word_packs: WordPacks,
}

impl fmt::Debug for Rnnlm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rnnlm")
            .field("config", self.config())
            .field("vocab_len", &self.vocab.len())
            .finish_non_exhaustive()
    }
}

/// The recurrent state of `batch` independent streams, plus the scratch buffers a step needs,
/// so [`Rnnlm::step`] never allocates. Made by [`Rnnlm::zero_state`]; belongs to the model
/// (configuration) that made it. Two states compare equal when they have the same
/// configuration, batch and hidden state (the scratch buffers are not compared).
///
/// ```
/// # use rand::SeedableRng;
/// # use rnnlm::{Config, Params, Rnnlm, Vocab};
/// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
/// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
/// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
/// # let model = Rnnlm::new(params, vocab).unwrap();
/// let mut state = model.zero_state(2);
/// let mut logits = vec![0.0; 2 * 3];
/// model.step(&mut state, &[0, 1], &mut logits).unwrap();
/// assert_ne!(state, model.zero_state(2)); // both streams moved on
/// let copy = state.clone();
/// model.step(&mut state, &[2, 2], &mut logits).unwrap();
/// assert_ne!(state, copy); // a clone is an independent snapshot
/// ```
#[derive(Clone)]
pub struct State {
    cfg: Config,
    batch: usize,
    /// The carried states `[S, L, batch, H]`: `h` of every layer, then (LSTM) `c`.
    states: Vec<f32>,
    /// Step scratch, one time step of the cell's buffers (see [`crate::cells::Buffers`]),
    /// shared by the layers: the embedded inputs `[batch, D]`, then gates, `h`, `h_{t-1}`,
    /// the cell's own per-position and per-row buffers.
    scratch: Vec<f32>,
    /// The output layer's scratch for [`Rnnlm::step`] (grows once, then is reused).
    head: Scratch,
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.cfg == other.cfg && self.batch == other.batch && self.states == other.states
    }
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("State")
            .field("config", &self.cfg)
            .field("batch", &self.batch)
            .field("hidden", &self.hidden())
            .finish_non_exhaustive()
    }
}

impl State {
    /// Number of streams.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// assert_eq!(model.zero_state(4).batch(), 4);
    /// ```
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The hidden states `[L, batch, H]`, layer by layer (row `i` of a layer is stream `i`'s last `h`).
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let (mut both, mut one) = (model.zero_state(2), model.zero_state(1));
    /// model.step(&mut both, &[1, 2], &mut [0.0; 2 * 3]).unwrap();
    /// model.step(&mut one, &[2], &mut [0.0; 3]).unwrap();
    /// let h = both.hidden(); // [2, H] with H = 5
    /// assert_eq!(&h[5..], one.hidden()); // row 1 is the stream fed token 2
    /// assert!(h.iter().all(|x| x.abs() < 1.0)); // tanh outputs
    /// ```
    pub fn hidden(&self) -> &[f32] {
        &self.states[..self.h_len()]
    }

    /// Floats of `h` of every layer.
    fn h_len(&self) -> usize {
        self.cfg.layers * self.batch * self.cfg.hidden_size
    }

    /// An LSTM's cell states `c` of every layer, `[L, batch, H]` (empty for other cells).
    pub fn cell(&self) -> &[f32] {
        &self.states[self.h_len()..]
    }

    /// Sets every stream back to the zero state.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let mut state = model.zero_state(2);
    /// model.step(&mut state, &[0, 1], &mut [0.0; 2 * 3]).unwrap();
    /// assert!(state.hidden().iter().any(|&x| x != 0.0));
    /// state.reset();
    /// assert_eq!(state, model.zero_state(2));
    /// ```
    pub fn reset(&mut self) {
        self.states.fill(0.0);
    }
}

/// The result of [`Rnnlm::score`].
///
/// `-log_prob` is the sum of the per-position losses the batch forward computes for the same
/// tokens:
///
/// ```
/// # use rand::SeedableRng;
/// # use rnnlm::{Config, Params, Rnnlm, Vocab};
/// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
/// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
/// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
/// # let model = Rnnlm::new(params, vocab).unwrap();
/// let s = model.score(&[0, 1, 2, 1]).unwrap();
/// let mut ws = rnnlm::Workspace::new(*model.config(), 1, 3, false).unwrap();
/// rnnlm::model::simple::forward(model.params(), &mut ws, &[0, 1, 2], &[1, 2, 1]).unwrap();
/// let losses: f64 = ws.position_losses().iter().map(|&l| l as f64).sum();
/// assert_eq!(s.log_prob, -losses);
/// assert_eq!(s.tokens, 3);
/// ```
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score {
    /// `Σ_i ln p(tokens[i+1] | tokens[..=i])`, natural log, summed in f64.
    pub log_prob: f64,
    /// Number of predicted tokens (`tokens.len() - 1`).
    pub tokens: usize,
}

impl Score {
    /// `exp(-log_prob / tokens)`; 1 when no token was predicted.
    ///
    /// ```
    /// use rnnlm::Score;
    /// let s = Score { log_prob: 2.0 * 0.25f64.ln(), tokens: 2 }; // p = 1/4 per token
    /// assert!((s.perplexity() - 4.0).abs() < 1e-12);
    /// assert_eq!(Score { log_prob: 0.0, tokens: 0 }.perplexity(), 1.0);
    /// ```
    pub fn perplexity(&self) -> f64 {
        if self.tokens == 0 {
            1.0
        } else {
            (-self.log_prob / self.tokens as f64).exp()
        }
    }
}

/// How [`Rnnlm::generate`] draws each word.
///
/// ```
/// use rnnlm::Sampling;
/// let greedy = Sampling { top_k: Some(1), ..Sampling::default() };
/// assert_eq!(greedy.temperature, 1.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Sampling {
    /// Divides the logits before the softmax: below 1 sharpens, above 1 flattens. Must be
    /// finite and > 0.
    pub temperature: f32,
    /// Sample only among the `k` most likely ids (after `skip` is removed); `Some(1)` is greedy
    /// decoding. Must be at least 1.
    pub top_k: Option<usize>,
    /// Ids never emitted (masked out of the distribution), e.g. `<unk>` or `<eos>`.
    pub skip: Vec<u32>,
}

impl Default for Sampling {
    /// Temperature 1, no top-k, nothing skipped: the book's `RnnlmGen.generate`.
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            skip: Vec::new(),
        }
    }
}

impl Rnnlm {
    /// A model from trained parameters and the vocabulary of their ids.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// let vocab = Vocab::from_words(vec!["a".into(), "b".into()]).unwrap();
    /// let cfg = Config::new(2, 4, 4).unwrap();
    /// let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// let model = Rnnlm::new(params, vocab).unwrap();
    /// assert_eq!(model.config().vocab_size, 2);
    /// ```
    ///
    /// # Errors
    /// [`Error::Shape`] if the vocabulary does not have `V` words; [`Error::Memory`] if the
    /// packed copies of the weights do not fit in the memory available.
    pub fn new(params: Params, vocab: Vocab) -> Result<Self> {
        let cfg = *params.config();
        cfg.validate()?;
        if vocab.len() != cfg.vocab_size {
            return Err(Error::Shape {
                what: "vocabulary".into(),
                expected: vec![cfg.vocab_size],
                found: vec![vocab.len()],
            });
        }
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let cell = cfg.cell.imp();
        let gh = cell.gates() * h;
        let fwd = cell.packed_lens(h).0;
        // The packed copies are about as large as the weights: check that they fit first.
        // (Validated sizes, each at most 2^24 with at most 64 layers, cannot overflow here.)
        let packed_bytes = 4
            * ((0..cfg.layers)
                .map(|l| gemm::packed_len(cfg.layer_input(l), gh) + fwd)
                .sum::<usize>()
                + gemm::packed_len(h, cfg.softmax.outputs(v)));
        let what = format!(
            "the packed weights of the model ({})",
            Params::describe(&cfg)
        );
        check_memory(&what, packed_bytes)?;
        let pack = |b: MatRef<'_>| -> Result<Vec<f32>> {
            let mut out = try_zeros(gemm::packed_len(b.rows(), b.cols()), &what)?;
            gemm::pack(&mut out, b);
            Ok(out)
        };
        let layers = (0..cfg.layers)
            .map(|l| {
                let (p, dl) = (params.layer(l), cfg.layer_input(l));
                let mut wh = try_zeros(fwd, &what)?;
                cell.pack_recurrent(p.wh, h, &mut wh, &mut []);
                Ok((pack(MatRef::new(p.wx, dl, gh))?, wh))
            })
            .collect::<Result<_>>()?;
        let w_packed = match (params.class_w(), params.affine_w()) {
            // A class head packs its first softmax, over the classes.
            (Some(w), _) => pack(MatRef::new(w, h, cfg.softmax.outputs(v)))?,
            (None, Some(w)) => pack(MatRef::new(w, h, v))?,
            // Tied: the output weights are embed.W [V,H] read transposed.
            (None, None) => pack(MatRef::new(params.embed_w(), v, h).t())?,
        };
        let mut model = Self {
            params,
            vocab,
            layers,
            w_packed,
            zero_b: if cfg.softmax.first_bias() {
                Vec::new()
            } else {
                try_zeros(cfg.softmax.outputs(v), &what)?
            },
            word_packs: WordPacks::default(),
        };
        let segments = match model.head() {
            AnyHead::Full(_) => Vec::new(),
            AnyHead::Class(c) => c.word_segments(),
            AnyHead::Adaptive(a) => a.word_segments(),
        };
        if !segments.is_empty() {
            let len = WordPacks::len_of(&segments);
            let what = format!(
                "the packed word vectors of the model ({})",
                Params::describe(&cfg)
            );
            check_memory(&what, 4 * len)?;
            let packs = WordPacks::build(&segments, try_zeros(len, &what)?);
            drop(segments);
            model.word_packs = packs;
        }
        Ok(model)
    }

    /// Loads a checkpoint written by [`Rnnlm::save`] (or `checkpoint::save` with a vocabulary).
    ///
    /// ```no_run
    /// let model = rnnlm::Rnnlm::load("simple_rnnlm.safetensors".as_ref())?;
    /// # Ok::<(), rnnlm::Error>(())
    /// ```
    ///
    /// # Errors
    /// Any error of [`checkpoint::load`], and [`Error::Checkpoint`] if the file has no
    /// vocabulary.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with(path, None)
    }

    /// Loads a checkpoint, taking the vocabulary from `vocab_text` when given: the words of
    /// that text in order of first appearance, `<eos>` after each line (the book's PTB ids, and
    /// PyTorch word_language_model's `Dictionary`). For weights saved without their words,
    /// such as the book's trained ch06 LSTM: give it the training text.
    ///
    /// # Errors
    /// Any error of [`checkpoint::load`]; [`Error::Checkpoint`] if there is no vocabulary at
    /// all, or the file's own differs from the text's; a size mismatch with `V`.
    pub fn load_with(path: &Path, vocab_text: Option<&Path>) -> Result<Self> {
        let ck = checkpoint::load(path)?;
        let bad = |msg: String| Error::Checkpoint {
            path: path.to_owned(),
            msg,
        };
        let vocab = match (ck.vocab, vocab_text) {
            (Some(v), None) => v,
            (own, Some(text)) => {
                let built = Vocab::from_words(crate::data::corpus::read_dictionary(text)?)?;
                if own.as_ref().is_some_and(|v| v != &built) {
                    return Err(bad(format!(
                        "its vocabulary differs from the one {} gives (words in order of \
                         first appearance); leave out the text to use the file's own",
                        text.display()
                    )));
                }
                if built.len() != ck.params.config().vocab_size {
                    return Err(bad(format!(
                        "has V = {} words, but {} gives {} (words in order of first \
                         appearance, <eos> after each line): is it the training text?",
                        ck.params.config().vocab_size,
                        text.display(),
                        built.len()
                    )));
                }
                built
            }
            (None, None) => {
                return Err(bad(
                    "has no vocabulary (no \"vocab\" metadata entry); inference needs the \
                     words of the ids: give the training text with --vocab-text"
                        .into(),
                ))
            }
        };
        Self::new(ck.params, vocab)
    }

    /// Saves weights and vocabulary as a checkpoint (atomically: see [`checkpoint::save`]).
    ///
    /// # Errors
    /// On I/O failure.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let path = std::env::temp_dir().join(format!("rnnlm-doc-save-{}", std::process::id()));
    /// model.save(&path).unwrap();
    /// let back = Rnnlm::load(&path).unwrap();
    /// assert_eq!((back.params(), back.vocab()), (model.params(), model.vocab()));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn save(&self, path: &Path) -> Result<()> {
        checkpoint::save(path, &self.params, Some(&self.vocab))
    }

    /// The weights.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    ///     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// let model = Rnnlm::new(params.clone(), vocab).unwrap();
    /// assert_eq!(model.params(), &params);
    /// ```
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The vocabulary (words of ids `0..V`).
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// assert_eq!(model.vocab().words(), ["a", "b", "c"]);
    /// assert_eq!(model.vocab().len(), model.config().vocab_size);
    /// ```
    pub fn vocab(&self) -> &Vocab {
        &self.vocab
    }

    /// The model's shape.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// assert_eq!(*model.config(), Config::new(3, 4, 5).unwrap()); // V, D, H
    /// ```
    pub fn config(&self) -> &Config {
        self.params.config()
    }

    /// A zero state for `batch` streams (the book's state after `reset_state`), with the step
    /// scratch allocated.
    ///
    /// **Panics** if the state does not fit in memory (an absurd `batch`); for a `batch` that
    /// comes from user input use [`Rnnlm::try_zero_state`].
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let state = model.zero_state(3);
    /// assert_eq!(state.batch(), 3);
    /// assert_eq!(state.hidden(), [0.0; 3 * 5]); // [batch, H], all zero
    /// ```
    pub fn zero_state(&self, batch: usize) -> State {
        self.try_zero_state(batch)
            .unwrap_or_else(|e| panic!("Rnnlm::zero_state({batch}): {e}"))
    }

    /// [`Rnnlm::zero_state`], with the size computed with checked arithmetic and compared with
    /// the memory available first (see [`crate::mem::check_memory`]), and the buffers allocated
    /// so that a refusal is an error.
    ///
    /// # Errors
    /// [`Error::Invalid`] if the size overflows, [`Error::Memory`] if it does not fit.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// assert_eq!(model.try_zero_state(3).unwrap(), model.zero_state(3));
    /// assert!(model.try_zero_state(usize::MAX / 4).is_err()); // not a panic, not an abort
    /// ```
    pub fn try_zero_state(&self, batch: usize) -> Result<State> {
        let cfg = *self.config();
        let h = cfg.hidden_size;
        let bufs = cfg.cell.imp().buffers(false);
        let overflow = || {
            Error::invalid(
                "batch",
                format!("{batch} streams of H={h}: the state's size overflows"),
            )
        };
        let mul = |a: usize, b: usize| a.checked_mul(b).ok_or_else(overflow);
        let bh = mul(batch, h)?;
        let states = mul(bufs.states * cfg.layers, bh)?;
        // x, then one step of gates, hs, hprev, aux and row_aux.
        let per_row = cfg.wordvec_size + h * (bufs.gates + 2 + bufs.aux + bufs.row_aux);
        let scratch = mul(batch, per_row)?;
        let bytes = states
            .checked_add(scratch)
            .and_then(|x| x.checked_mul(4))
            .ok_or_else(overflow)?;
        let what = format!(
            "the state of {batch} streams (H={h}, {} {} layer{})",
            cfg.layers,
            cfg.cell,
            if cfg.layers == 1 { "" } else { "s" }
        );
        check_memory(&what, bytes)?;
        Ok(State {
            cfg,
            batch,
            states: try_zeros(states, &what)?,
            scratch: try_zeros(scratch, &what)?,
            head: Scratch::default(),
        })
    }

    /// The output layer over the packed weights.
    fn head(&self) -> AnyHead<'_> {
        let cfg = self.config();
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        let p = &self.params;
        if cfg.softmax.is_full() {
            return AnyHead::Full(FullSoftmax {
                w: Packed::new(&self.w_packed, h, v),
                wt: &[],
                wt_block: gemm::KC,
                bias: p.affine_b(),
                h,
                v,
            });
        }
        let c = cfg.softmax.outputs(v);
        let first = FullSoftmax {
            w: Packed::new(&self.w_packed, h, c),
            wt: &[],
            wt_block: gemm::KC,
            bias: if cfg.softmax.first_bias() {
                p.class_b()
            } else {
                &self.zero_b
            },
            h,
            v: c,
        };
        let packs = self.word_packs.as_ref();
        if cfg.softmax.is_adaptive() {
            return AnyHead::Adaptive(AdaptiveSoftmax::new(p, first).with_packs(packs));
        }
        AnyHead::Class(ClassSoftmax {
            packs,
            ..ClassSoftmax::new(p, first)
        })
    }

    /// One time step for `state.batch()` independent streams: `tokens [batch]` in, `logits
    /// [batch, V]` out (output bias included, before the softmax); advances the state.
    /// Allocation-free, on the calling thread.
    ///
    /// Computes, per stream, `h' = tanh(h Wh + x Wx + b)` with `x = embed.W[token]` and
    /// `logits = h' W + affine.b`, with the same kernels and operation order as the training
    /// forward (`x Wx` first, then `+= h Wh`, then bias+tanh; `h' W` then `+ b`), so the
    /// results are bit-identical to [`crate::model::simple::forward`]'s.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let mut state = model.zero_state(2);
    /// let mut logits = vec![0.0; 2 * 3];
    /// model.step(&mut state, &[0, 2], &mut logits).unwrap();
    /// model.step(&mut state, &[1, 1], &mut logits).unwrap();
    /// assert_eq!(state.hidden().len(), 2 * 5);
    /// ```
    ///
    /// # Errors
    /// If `state` belongs to another configuration, `tokens` is not `[batch]`, `logits` is not
    /// `[batch, V]`, or a token is `>= V` (nothing is changed).
    pub fn step(&self, state: &mut State, tokens: &[u32], logits: &mut [f32]) -> Result<()> {
        let cfg = *self.config();
        let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
        if state.cfg != cfg {
            return Err(Error::invalid(
                "state",
                format!(
                    "made for a model of V={}, D={}, H={}, used with V={v}, D={d}, H={h}",
                    state.cfg.vocab_size, state.cfg.wordvec_size, state.cfg.hidden_size
                ),
            ));
        }
        let n = state.batch;
        if tokens.len() != n {
            return Err(Error::Shape {
                what: "tokens".into(),
                expected: vec![n],
                found: vec![tokens.len()],
            });
        }
        if logits.len() != n * v {
            return Err(Error::Shape {
                what: "logits".into(),
                expected: vec![n, v],
                found: vec![logits.len()],
            });
        }
        check_ids("token", tokens, v)?;
        if n == 0 {
            return Ok(());
        }
        self.advance(state, n, tokens);
        let top = (cfg.layers - 1) * n * h;
        // The full softmax needs no scratch; a class head's grows in the state on its first
        // step and is reused after.
        self.head()
            .log_prob_rows(&state.states[top..top + n * h], n, logits, &mut state.head);
        Ok(())
    }

    /// Advances rows `0..m` of `state` by one token each (`tokens [m]`, checked by the
    /// caller), every layer as the training forward computes one time step of it, with the
    /// same kernels in the same order: gates = x Wx, then += h Wh (a GRU: gh = h Wh), then the
    /// fused cell pass. Rows `m..` are untouched. Every kernel computes a row by the same
    /// instruction sequence whatever `m` is, so a row's results do not depend on its company.
    fn advance(&self, state: &mut State, m: usize, tokens: &[u32]) {
        let cfg = *self.config();
        let (d, h, nb) = (
            cfg.wordvec_size,
            cfg.hidden_size,
            state.batch * cfg.hidden_size,
        );
        let cell = cfg.cell.imp();
        let bufs = cell.buffers(false);
        let gw = cell.gates() * h;
        let p = &self.params;
        // One step's buffers for the first m streams, carved from the scratch.
        let b = state.batch;
        let (x, rest) = state.scratch.split_at_mut(b * d);
        let (gates, rest) = rest.split_at_mut(b * h * bufs.gates);
        let (hs, rest) = rest.split_at_mut(b * h);
        let (hprev, rest) = rest.split_at_mut(b * h);
        let (aux, row_aux) = rest.split_at_mut(b * h * bufs.aux);
        let x = &mut x[..m * d];
        embedding::forward(x, tokens, p.embed_w(), d);
        let (hall, call) = state.states.split_at_mut(cfg.layers * nb);
        let proj = if cell.in_place() { h } else { gw };
        let dims = Dims { m, t: 1, h };
        for (l, (wx_packed, wh_packed)) in self.layers.iter().enumerate() {
            let (pl, dl) = (p.layer(l), cfg.layer_input(l));
            let (below, here) = hall.split_at_mut(l * nb);
            let input: &[f32] = if l == 0 {
                x
            } else {
                &below[(l - 1) * nb..(l - 1) * nb + m * h]
            };
            let c = if call.is_empty() {
                &mut [][..]
            } else {
                &mut call[l * nb..l * nb + m * h]
            };
            let mut rows = LayerRows {
                gates: &mut gates[..m * h * bufs.gates],
                hs: &mut hs[..m * h],
                hprev: &mut hprev[..m * h],
                aux: &mut aux[..m * h * bufs.aux],
                row_aux: &mut row_aux[..m * h * bufs.row_aux],
                state: [&mut here[..m * h], c],
            };
            // The same steps as the training forward, with T = 1.
            let target: &mut [f32] = if cell.in_place() {
                &mut *rows.hs
            } else {
                &mut *rows.gates
            };
            gemm::gemm_packed(
                MatMut::new(target, m, proj),
                MatRef::new(input, m, dl),
                Packed::new(wx_packed, dl, proj),
                Accum::Replace,
            );
            let w = StepWeights {
                packed: wh_packed,
                b: pl.b,
                bh: pl.bh,
            };
            cells::forward_rows(cell, &mut rows, &w, dims);
        }
    }

    /// Log-probability (natural log) of `tokens[1..]` given `tokens[0]`, from a zero state:
    /// `Σ_i ln p(tokens[i+1] | tokens[..=i])`. Each term is `-xent_row` of the step's logits,
    /// the same per-position loss the training forward computes.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let s = model.score(&[0, 1, 2, 1]).unwrap();
    /// assert_eq!(s.tokens, 3);
    /// assert!(s.log_prob < 0.0 && s.perplexity() > 1.0);
    /// ```
    ///
    /// # Errors
    /// If `tokens` is empty or holds an id `>= V`; [`Error::NotFinite`] at the first position
    /// whose logits are not finite or whose token has probability 0, rather than a NaN or
    /// infinite score.
    pub fn score(&self, tokens: &[u32]) -> Result<Score> {
        if tokens.is_empty() {
            return Err(Error::invalid(
                "tokens",
                "score needs at least one token (the context the first prediction starts from)",
            ));
        }
        check_ids("token", tokens, self.config().vocab_size)?;
        let mut state = self.try_zero_state(1)?;
        let head = self.head();
        let mut scratch = Scratch::default();
        let (mut log_prob, mut lp) = (0.0f64, [0.0f32]);
        let top = (self.config().layers - 1) * self.config().hidden_size;
        for (p, pair) in tokens.windows(2).enumerate() {
            self.advance(&mut state, 1, &pair[..1]);
            head.log_probs(&state.states[top..], &pair[1..], &mut lp, &mut scratch);
            check_log_prob(lp[0], None, p + 1)?;
            log_prob += lp[0] as f64;
        }
        Ok(Score {
            log_prob,
            tokens: tokens.len() - 1,
        })
    }

    /// [`Rnnlm::score`] of many sequences at once, bit for bit the same results, much faster:
    /// the sequences are sorted by length and run in groups of up to [`SCORE_GROUP`] streams
    /// (at least one group per thread, down to [`SCORE_GROUP_MIN`] streams), so
    /// every step of the recurrence is one product per layer over the group's live streams
    /// (the longest first, so the live ones are always a prefix); the top layer's states are
    /// gathered and the output layer runs as GEMMs over [`SCORE_POSITIONS`] positions at a
    /// time, instead of re-reading `W [H,V]` for every token. Groups run in parallel.
    ///
    /// Each row of every kernel is computed by the same instruction sequence whatever the
    /// number of rows, and each sequence's log-probabilities are summed in the same order as
    /// [`Rnnlm::score`], so the scores are bit-identical to scoring each sequence alone.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let seqs: [&[u32]; 3] = [&[0, 1, 2, 1], &[2], &[1, 0]];
    /// let scores = model.score_batch(&seqs).unwrap();
    /// for (seq, score) in seqs.iter().zip(&scores) {
    ///     assert_eq!(*score, model.score(seq).unwrap()); // the same bits
    /// }
    /// ```
    ///
    /// # Errors
    /// If a sequence is empty or holds an id `>= V` (naming its index); [`Error::NotFinite`] as
    /// [`Rnnlm::score`] gives it for the first such sequence.
    pub fn score_batch(&self, seqs: &[&[u32]]) -> Result<Vec<Score>> {
        use rayon::prelude::*;
        let v = self.config().vocab_size;
        for (k, seq) in seqs.iter().enumerate() {
            if seq.is_empty() {
                return Err(Error::invalid(
                    "tokens",
                    format!("sequence {k} is empty: scoring needs at least one token"),
                ));
            }
            check_ids(&format!("token of sequence {k}"), seq, v)?;
        }
        // Longest first (ties by index, so the order is deterministic).
        let mut order: Vec<usize> = (0..seqs.len()).collect();
        order.sort_by(|&a, &b| seqs[b].len().cmp(&seqs[a].len()).then(a.cmp(&b)));
        let groups = score_groups(&order, rayon::current_num_threads());
        let scored: Result<Vec<Vec<(usize, Score)>>> = crate::par::on_worker(|| {
            groups
                .par_iter()
                .map(|group| self.score_group(seqs, group))
                .collect::<Result<_>>()
        });
        let scored = match scored {
            Ok(scored) => scored,
            // Groups run in parallel and in length order: name the first sequence in input
            // order that fails, as scoring them one by one would (the same bits).
            Err(e @ Error::NotFinite { .. }) => {
                for (k, seq) in seqs.iter().enumerate() {
                    if let Err(Error::NotFinite { position, what, .. }) = self.score(seq) {
                        return Err(Error::NotFinite {
                            sequence: Some(k),
                            position,
                            what,
                        });
                    }
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let mut out = vec![
            Score {
                log_prob: 0.0,
                tokens: 0
            };
            seqs.len()
        ];
        for (k, score) in scored.into_iter().flatten() {
            out[k] = score;
        }
        Ok(out)
    }

    /// Scores one group of sequences (indices into `seqs`, longest first).
    fn score_group(&self, seqs: &[&[u32]], group: &[usize]) -> Result<Vec<(usize, Score)>> {
        let h = self.config().hidden_size;
        let b = group.len();
        let mut state = self.try_zero_state(b)?;
        let mut log_prob = vec![0.0f64; b];
        let mut tokens = vec![0u32; b];
        // Pending positions: top-layer h, the target, the stream and the target's position.
        let mut hbuf = vec![0.0f32; SCORE_POSITIONS * h];
        let mut pending: Vec<(u32, usize, usize)> = Vec::with_capacity(SCORE_POSITIONS);
        let head = self.head();
        let mut scratch = Scratch::default();
        let (mut targets, mut lps) = (vec![0u32; SCORE_POSITIONS], vec![0.0f32; SCORE_POSITIONS]);
        let mut flush = |hbuf: &[f32],
                         pending: &mut Vec<(u32, usize, usize)>,
                         log_prob: &mut [f64]|
         -> Result<()> {
            let rows = pending.len();
            for (t, &(target, ..)) in targets.iter_mut().zip(pending.iter()) {
                *t = target;
            }
            head.log_probs(
                &hbuf[..rows * h],
                &targets[..rows],
                &mut lps[..rows],
                &mut scratch,
            );
            for (&lp, &(_, stream, at)) in lps.iter().zip(pending.iter()) {
                check_log_prob(lp, Some(group[stream]), at)?;
                log_prob[stream] += lp as f64;
            }
            pending.clear();
            Ok(())
        };
        let steps = seqs[group[0]].len() - 1;
        let top = (self.config().layers - 1) * b * h;
        for s in 0..steps {
            // Streams with a prediction at step s: a prefix, since the group is longest first.
            let live = group.iter().take_while(|&&k| seqs[k].len() - 1 > s).count();
            if pending.len() + live > SCORE_POSITIONS {
                flush(&hbuf, &mut pending, &mut log_prob)?;
            }
            for (i, &k) in group[..live].iter().enumerate() {
                tokens[i] = seqs[k][s];
            }
            self.advance(&mut state, live, &tokens[..live]);
            for (i, &k) in group[..live].iter().enumerate() {
                let at = pending.len();
                hbuf[at * h..(at + 1) * h]
                    .copy_from_slice(&state.states[top + i * h..top + (i + 1) * h]);
                pending.push((seqs[k][s + 1], i, s + 1));
            }
        }
        flush(&hbuf, &mut pending, &mut log_prob)?;
        Ok(group
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                (
                    k,
                    Score {
                        log_prob: log_prob[i],
                        tokens: seqs[k].len() - 1,
                    },
                )
            })
            .collect())
    }

    /// The ids of the whitespace-separated words of `words`. A word outside the vocabulary
    /// becomes `<unk>` when the vocabulary has it.
    ///
    /// # Errors
    /// [`Error::Invalid`] naming the first word outside a vocabulary without `<unk>`.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// let words = ["<eos>", "the", "cat", "<unk>"];
    /// let vocab = Vocab::from_words(words.iter().map(|w| w.to_string()).collect()).unwrap();
    /// let params = Params::init_book(Config::new(4, 4, 4).unwrap(),
    ///     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// let model = Rnnlm::new(params, vocab).unwrap();
    /// assert_eq!(model.encode(" the  cat\nthe dog ").unwrap(), [1, 2, 1, 3]); // dog -> <unk>
    /// ```
    pub fn encode(&self, words: &str) -> Result<Vec<u32>> {
        let unk = self.vocab.unk_id();
        words
            .split_whitespace()
            .map(|w| {
                self.vocab.id(w).or(unk).ok_or_else(|| {
                    Error::invalid(
                        "word",
                        format!("{w:?} is not in the model's vocabulary (and it has no <unk>)"),
                    )
                })
            })
            .collect()
    }

    /// The words of `ids` joined by single spaces. An id outside the vocabulary is written
    /// `<invalid:ID>`.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// assert_eq!(model.decode(&[2, 0, 7]), "c a <invalid:7>");
    /// assert_eq!(model.encode(&model.decode(&[1, 2])).unwrap(), [1, 2]);
    /// ```
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut out = String::new();
        for (i, &id) in ids.iter().enumerate() {
            if i > 0 {
                out.push(' ');
            }
            match self.vocab.word(id) {
                Some(w) => out.push_str(w),
                None => out.push_str(&format!("<invalid:{id}>")),
            }
        }
        out
    }

    /// Samples `n` ids following `start` (which is fed through the model first, from a zero
    /// state), each drawn from `softmax(logits / temperature)` restricted to the `top_k` most
    /// likely ids when set, never one of `sampling.skip` (they are masked out). Returns only
    /// the `n` new ids. The book's `RnnlmGen.generate` is temperature 1 with no top-k.
    ///
    /// Each word consumes exactly one `f64` from `rng`, so the output is a function of the RNG
    /// state: the same seed gives the same words. Ties in top-k selection go to the lower id;
    /// `top_k: Some(1)` is greedy argmax decoding.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Sampling, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let sampling = Sampling { temperature: 0.8, top_k: Some(2), skip: vec![2] };
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    /// let ids = model.generate(&mut rng, &[0], 10, &sampling).unwrap();
    /// assert!(ids.len() == 10 && !ids.contains(&2));
    /// ```
    ///
    /// # Errors
    /// [`Error::Invalid`] if `start` is empty or holds an id `>= V`, a `skip` id is `>= V`,
    /// `skip` covers the whole vocabulary, the temperature is not finite and > 0, or `top_k`
    /// is `Some(0)`; [`Error::NotFinite`] (naming the word being drawn) if the model's logits
    /// are not finite, instead of drawing from a meaningless distribution.
    pub fn generate<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        start: &[u32],
        n: usize,
        sampling: &Sampling,
    ) -> Result<Vec<u32>> {
        // Grows as words come: `n` may be far more than fits in memory.
        let mut out = Vec::with_capacity(n.min(1 << 16));
        self.generate_with(rng, start, n, sampling, |id| {
            out.push(id);
            true
        })?;
        Ok(out)
    }

    /// [`Rnnlm::generate`] as a stream: each sampled id goes to `emit` as soon as it is drawn,
    /// and sampling stops after `n` ids or when `emit` returns `false`. Returns how many ids
    /// were emitted. Memory stays constant whatever `n` is, so a caller can print text as it
    /// comes and stop when its reader goes away. The ids are exactly those of `generate` with
    /// the same RNG state.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// # use rnnlm::{Config, Params, Rnnlm, Sampling, Vocab};
    /// # let vocab = Vocab::from_words(vec!["a".into(), "b".into(), "c".into()]).unwrap();
    /// # let params = Params::init_book(Config::new(3, 4, 5).unwrap(),
    /// #     &mut rand_chacha::ChaCha8Rng::seed_from_u64(0));
    /// # let model = Rnnlm::new(params, vocab).unwrap();
    /// let rng = || rand_chacha::ChaCha8Rng::seed_from_u64(3);
    /// let s = Sampling::default();
    /// let mut seen = Vec::new();
    /// let n = model.generate_with(&mut rng(), &[0], usize::MAX, &s, |id| {
    ///     seen.push(id);
    ///     seen.len() < 5 // stop after the fifth
    /// }).unwrap();
    /// assert_eq!(n, 5);
    /// assert_eq!(seen, model.generate(&mut rng(), &[0], 5, &s).unwrap());
    /// ```
    ///
    /// # Errors
    /// As [`Rnnlm::generate`]: the argument errors before any id is emitted,
    /// [`Error::NotFinite`] when it happens.
    pub fn generate_with<R: Rng + ?Sized>(
        &self,
        rng: &mut R,
        start: &[u32],
        n: usize,
        sampling: &Sampling,
        mut emit: impl FnMut(u32) -> bool,
    ) -> Result<usize> {
        let v = self.config().vocab_size;
        let t = sampling.temperature;
        if !(t.is_finite() && t > 0.0) {
            return Err(Error::invalid(
                "temperature",
                format!("{t} (must be finite and > 0)"),
            ));
        }
        if sampling.top_k == Some(0) {
            return Err(Error::invalid("top_k", "must be at least 1"));
        }
        if start.is_empty() {
            return Err(Error::invalid(
                "start",
                "generate needs at least one start token",
            ));
        }
        check_ids("start id", start, v)?;
        check_ids("skip id", &sampling.skip, v)?;
        let mut allowed = vec![true; v];
        for &s in &sampling.skip {
            allowed[s as usize] = false;
        }
        let n_allowed = allowed.iter().filter(|&&a| a).count();
        if n_allowed == 0 {
            return Err(Error::invalid(
                "skip",
                "masks every id of the vocabulary: nothing left to sample",
            ));
        }
        let k = sampling.top_k.map_or(n_allowed, |k| k.min(n_allowed));

        let mut state = self.try_zero_state(1)?;
        let head = self.head();
        let draw = Draw {
            temperature: t as f64,
            top_k: k,
            allowed: &allowed,
        };
        let mut scratch = SampleScratch::default();
        for &id in start {
            self.advance(&mut state, 1, &[id]);
        }
        let top = (self.config().layers - 1) * self.config().hidden_size;
        let mut prev = None;
        for i in 0..n {
            if let Some(id) = prev {
                self.advance(&mut state, 1, &[id]);
            }
            let u = rng.random::<f64>();
            let pick = head
                .sample(&state.states[top..], &draw, &mut scratch, u)
                .ok_or_else(|| Error::NotFinite {
                    sequence: None,
                    position: i,
                    what: crate::heads::LOGITS_NOT_FINITE.into(),
                })?;
            prev = Some(pick);
            if !emit(pick) {
                return Ok(i + 1);
            }
        }
        Ok(n)
    }
}

/// [`Error::NotFinite`] if `lp`, the log-probability of the token at `position` (of
/// `sequence`), is no number to report.
fn check_log_prob(lp: f32, sequence: Option<usize>, position: usize) -> Result<()> {
    match crate::heads::not_a_log_prob(lp) {
        None => Ok(()),
        Some(what) => Err(Error::NotFinite {
            sequence,
            position,
            what: what.into(),
        }),
    }
}

/// Checks that every id is `< v`.
fn check_ids(what: &str, ids: &[u32], v: usize) -> Result<()> {
    match ids.iter().find(|&&id| id as usize >= v) {
        Some(&bad) => Err(Error::invalid(
            what,
            format!("{bad} is outside the vocabulary (size {v})"),
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::{score_groups, SCORE_GROUP, SCORE_GROUP_MIN};

    /// Every sequence lands in exactly one group, each group keeps the longest-first order, and
    /// there are enough groups for the threads (while groups keep SCORE_GROUP_MIN streams).
    #[test]
    fn score_groups_cover_each_sequence_once_in_order() {
        for n in [0, 1, 7, 8, 9, 64, 65, 100, 255, 256, 257, 2048] {
            let order: Vec<usize> = (0..n).rev().collect();
            for threads in 1..=9 {
                let groups = score_groups(&order, threads);
                let mut seen = vec![false; n];
                for g in &groups {
                    assert!(
                        !g.is_empty() && g.len() <= SCORE_GROUP,
                        "n {n}, {threads} threads"
                    );
                    let pos: Vec<usize> = g.iter().map(|&k| n - 1 - k).collect();
                    assert!(pos.windows(2).all(|w| w[0] < w[1]), "order lost: n {n}");
                    for &k in g {
                        assert!(!seen[k], "sequence {k} twice");
                        seen[k] = true;
                    }
                }
                assert!(
                    seen.iter().all(|&s| s),
                    "n {n}, {threads} threads: one missing"
                );
                let want = threads.min(n.div_ceil(SCORE_GROUP_MIN));
                assert!(
                    groups.len() >= want,
                    "n {n}, {threads} threads: {}",
                    groups.len()
                );
            }
        }
    }
}
