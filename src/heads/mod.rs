//! Output layers ("heads"): from the top layer's `h` to the loss, its gradient, exact
//! log-probabilities for scoring, and samples for generation.
//!
//! [`Head`] is the seam of inference ([`Head::log_probs`], [`Head::log_prob_rows`],
//! [`Head::sample`]); [`AnyHead`] dispatches over the heads. Training calls each head's own
//! passes from `model::simple`. The heads:
//! - [`full::FullSoftmax`]: the softmax over the vocabulary (tied: its weight view is
//!   `embed.W` transposed);
//! - [`class::ClassSoftmax`]: Mikolov's classes; its first softmax is a `FullSoftmax` over the
//!   classes.
//! - [`adaptive::AdaptiveSoftmax`]: Grave et al.'s adaptive softmax (PyTorch's form); its
//!   head is a `FullSoftmax` over the shortlist and the clusters, its clusters are made of the
//!   class head's blocks.

pub(crate) mod adaptive;
pub(crate) mod class;
pub(crate) mod full;

pub use class::class_starts_from_counts;

/// How a forward treats its rows.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Loss {
    /// Loss only.
    Eval,
    /// Loss and, in place of the logits, their gradient scaled by `scale` (`1/count`).
    Train { scale: f32 },
}

/// Sampling settings a head needs (the caller has checked them).
pub(crate) struct Draw<'a> {
    /// Softmax temperature, finite and > 0.
    pub temperature: f64,
    /// Keep the `k` most likely candidates.
    pub top_k: usize,
    /// `allowed[id]`: the id may be drawn.
    pub allowed: &'a [bool],
}

/// An output layer, as inference uses it (training calls each head's own passes).
pub(crate) trait Head: Sync {
    /// `out[i] = ln p(targets[i] | hs[i])` for `hs [rows,H]`, exact and normalised, with the
    /// training forward's kernels. A position whose logits are not finite gets NaN, one whose
    /// target has probability 0 gets -inf: see [`not_a_log_prob`]. `scratch` grows as needed
    /// (reuse it: after the first call nothing is allocated).
    fn log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], scratch: &mut Scratch);

    /// `out [rows, V]`: for the full softmax the logits (`h W + b`), for a factorised head the
    /// log-probabilities of every word, which are logits of the same distribution.
    fn log_prob_rows(&self, hs: &[f32], rows: usize, out: &mut [f32], scratch: &mut Scratch);

    /// Draws the next id after top-layer state `h [H]`, with `u` uniform in `[0, 1)`; `None`
    /// if the logits are not all finite (there is no distribution to draw from).
    fn sample(
        &self,
        h: &[f32],
        draw: &Draw<'_>,
        scratch: &mut SampleScratch,
        u: f64,
    ) -> Option<u32>;
}

/// The output layer of a model: one type for inference over every head.
#[derive(Clone, Copy)]
// Built once per pass on the stack (borrowed views, ~1 KB for an adaptive head's cluster
// table): boxing would allocate in a loop that must not.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AnyHead<'a> {
    Full(full::FullSoftmax<'a>),
    Class(class::ClassSoftmax<'a>),
    Adaptive(adaptive::AdaptiveSoftmax<'a>),
}

impl Head for AnyHead<'_> {
    fn log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], scratch: &mut Scratch) {
        match self {
            AnyHead::Full(f) => f.log_probs(hs, targets, out, scratch),
            AnyHead::Class(c) => c.log_probs(hs, targets, out, scratch),
            AnyHead::Adaptive(a) => a.log_probs(hs, targets, out, scratch),
        }
    }

    fn log_prob_rows(&self, hs: &[f32], rows: usize, out: &mut [f32], scratch: &mut Scratch) {
        match self {
            AnyHead::Full(f) => f.log_prob_rows(hs, rows, out, scratch),
            AnyHead::Class(c) => c.log_prob_rows(hs, rows, out, scratch),
            AnyHead::Adaptive(a) => a.log_prob_rows(hs, rows, out, scratch),
        }
    }

    fn sample(&self, h: &[f32], draw: &Draw<'_>, s: &mut SampleScratch, u: f64) -> Option<u32> {
        match self {
            AnyHead::Full(f) => f.sample(h, draw, s, u),
            AnyHead::Class(c) => c.sample(h, draw, s, u),
            AnyHead::Adaptive(a) => a.sample(h, draw, s, u),
        }
    }
}

/// Reusable buffers of [`Head::log_probs`] and [`Head::log_prob_rows`].
#[derive(Clone, Default)]
pub(crate) struct Scratch {
    /// The (first) softmax's logits.
    pub f: Vec<f32>,
    pub idx: Vec<u32>,
    /// Targets, their classes and slots (a class head's gather).
    pub ts: Vec<i32>,
    pub ts1: Vec<i32>,
    pub slot: Vec<u32>,
    pub rowof: Vec<u32>,
    pub offsets: Vec<u32>,
    pub tg: Vec<u32>,
    pub m: Vec<f32>,
    pub sum: Vec<f64>,
    pub tl: Vec<f32>,
    pub xg: Vec<f32>,
    pub slab: Vec<f32>,
    /// An adaptive head's projected rows, per-range maxima, sums and target logits, and
    /// its products' scratch.
    pub zg: Vec<f32>,
    pub gm: Vec<f32>,
    pub gs: Vec<f64>,
    pub gtl: Vec<f32>,
    pub mm: Vec<f32>,
}

/// What the model's logits say when they are not finite: the one wording that `score`,
/// `eval` and `generate` (and training's validation) all give.
pub(crate) const LOGITS_NOT_FINITE: &str =
    "the model's logits are not finite (inf or NaN): its weights overflow, so it gives no \
     probabilities";

/// Why a log-probability (or the negated loss) of [`Head::log_probs`] or of the training
/// forward is no number to report, or `None` if it is one.
///
/// The softmax kernels subtract the row's maximum logit, so an infinite or NaN logit anywhere
/// in the row makes the result NaN, while finite logits always give a finite log-sum-exp: NaN
/// means non-finite logits. -inf means the target's probability is 0 in f32 (its logit more
/// than ~3.4e38 below the largest). This check costs one comparison per position instead of a
/// pass over the `V` logits.
pub(crate) fn not_a_log_prob(lp: f32) -> Option<&'static str> {
    if lp.is_nan() {
        Some(LOGITS_NOT_FINITE)
    } else if lp == f32::NEG_INFINITY {
        Some("the model gives this word probability 0 (its log-probability is -inf in f32)")
    } else {
        None
    }
}

/// Reusable buffers of [`Head::sample`].
#[derive(Default)]
pub(crate) struct SampleScratch {
    pub logits: Vec<f32>,
    pub cand: Vec<u32>,
    pub weights: Vec<f64>,
    pub head: Scratch,
}

/// Draws an id from the distribution `softmax(logits / temperature)` restricted to the
/// allowed ids and the `top_k` most likely, with `u` uniform in `[0, 1)`; `None` if a logit is
/// not finite. Every head samples through this from its logits (or log-probabilities).
pub(crate) fn sample_logits(
    logits: &[f32],
    draw: &Draw<'_>,
    s: &mut SampleScratch,
    u: f64,
) -> Option<u32> {
    let v = logits.len();
    // A NaN or infinite logit anywhere (even outside the top k or a skipped id) means the
    // model is broken: no draw, rather than one from a meaningless distribution.
    if !logits.iter().all(|l| l.is_finite()) {
        return None;
    }
    s.cand.clear();
    s.cand
        .extend((0..v as u32).filter(|&j| draw.allowed[j as usize]));
    let k = draw.top_k.min(s.cand.len());
    if k < s.cand.len() {
        // Most likely first; ties to the lower id, so the selection is deterministic.
        let by_logit = |a: &u32, b: &u32| {
            logits[*b as usize]
                .total_cmp(&logits[*a as usize])
                .then(a.cmp(b))
        };
        s.cand.select_nth_unstable_by(k - 1, by_logit);
        s.cand.truncate(k);
        s.cand.sort_unstable();
    }
    let max = s
        .cand
        .iter()
        .map(|&j| logits[j as usize])
        .fold(f32::NEG_INFINITY, f32::max);
    let inv_t = 1.0 / draw.temperature;
    s.weights.clear();
    s.weights.extend(
        s.cand
            .iter()
            .map(|&j| ((logits[j as usize] as f64 - max as f64) * inv_t).exp()),
    );
    let total: f64 = s.weights.iter().sum();
    let u = u * total;
    let mut acc = 0.0;
    // Fallback for rounding at the top end: the last candidate with a nonzero weight.
    let mut pick = s.cand[s.weights.iter().rposition(|&w| w > 0.0).unwrap_or(0)];
    for (&j, &w) in s.cand.iter().zip(&s.weights) {
        acc += w;
        if u < acc {
            pick = j;
            break;
        }
    }
    Some(pick)
}

/// `ln Σ exp(row)` in f64 from the row's maximum and sum.
pub(crate) fn log_sum_exp(row: &[f32]) -> f64 {
    let (m, s) = crate::kernels::softmax::max_sumexp_row(row);
    (s as f64).ln() + m as f64
}

/// `row = row - ln Σ exp(row)`.
pub(crate) fn log_softmax(row: &mut [f32]) {
    let lse = log_sum_exp(row);
    for x in row.iter_mut() {
        *x = (*x as f64 - lse) as f32;
    }
}

/// Draws from a factorised head the way it factorises: its first softmax, then (for a group,
/// i.e. a class or a cluster) a word of that group. Exact, and it computes only the first
/// softmax and the groups it needs.
///
/// `first` holds the first softmax's logits: entries `0..shortlist` are words (an adaptive
/// head's shortlist), entry `shortlist + i` is group `i`, whose words are `range(i)`; `lp(i,
/// buf)` leaves group `i`'s log-softmax over its words at the front of `buf`. A group's weight
/// is its probability times the share of it the draw allows (1 unless a word is barred, which
/// costs that group's softmax). One uniform `u` serves both draws: where it falls inside the
/// chosen entry is again uniform.
///
/// Only at temperature 1 with no top-k cut: a temperature or a cut couples every word of
/// every group. Returns `None` then (and when nothing is allowed), and the caller samples
/// from the whole distribution; `Some(None)` when the logits are not finite.
pub(crate) fn sample_factored(
    first: &mut [f32],
    shortlist: usize,
    (groups, range): (usize, impl Fn(usize) -> (usize, usize)),
    mut lp: impl FnMut(usize, &mut Vec<f32>),
    draw: &Draw<'_>,
    (weights, buf): (&mut Vec<f64>, &mut Vec<f32>),
    u: f64,
) -> Option<Option<u32>> {
    let v = draw.allowed.len();
    if draw.temperature != 1.0 || draw.top_k < v {
        return None;
    }
    if !first.iter().all(|x| x.is_finite()) {
        return Some(None);
    }
    log_softmax(first);
    weights.clear();
    for (j, &l) in first.iter().enumerate() {
        let p = (l as f64).exp();
        let w = if j < shortlist {
            if draw.allowed[j] {
                p
            } else {
                0.0
            }
        } else {
            let (a, b) = range(j - shortlist);
            if draw.allowed[a..b].iter().all(|&x| x) {
                p
            } else {
                lp(j - shortlist, buf);
                let words = &buf[..b - a];
                if !words.iter().all(|x| x.is_finite()) {
                    return Some(None);
                }
                let allowed: f64 = words
                    .iter()
                    .zip(&draw.allowed[a..b])
                    .filter(|(_, &ok)| ok)
                    .map(|(&l, _)| (l as f64).exp())
                    .sum();
                p * allowed
            }
        };
        weights.push(w);
    }
    debug_assert_eq!(weights.len(), shortlist + groups);
    let total: f64 = weights.iter().sum();
    if total <= 0.0 {
        return None;
    }
    let (pick, u2) = pick_weighted(weights, u * total);
    if pick < shortlist {
        return Some(Some(pick as u32));
    }
    let i = pick - shortlist;
    let (a, b) = range(i);
    lp(i, buf);
    let words = &buf[..b - a];
    if !words.iter().all(|x| x.is_finite()) {
        return Some(None);
    }
    weights.clear();
    weights.extend(words.iter().zip(&draw.allowed[a..b]).map(|(&l, &ok)| {
        if ok {
            (l as f64).exp()
        } else {
            0.0
        }
    }));
    let total: f64 = weights.iter().sum();
    let (j, _) = pick_weighted(weights, u2 * total);
    Some(Some((a + j) as u32))
}

/// The index `j` with `Σ_{i<j} w_i <= x < Σ_{i<=j} w_i` (the last nonzero weight if rounding
/// runs past the end), and where `x` fell inside it, as a fraction in `[0, 1)`.
fn pick_weighted(w: &[f64], x: f64) -> (usize, f64) {
    let mut acc = 0.0;
    for (j, &wj) in w.iter().enumerate() {
        if wj > 0.0 && x < acc + wj {
            return (j, ((x - acc) / wj).clamp(0.0, 1.0 - f64::EPSILON));
        }
        acc += wj;
    }
    (w.iter().rposition(|&x| x > 0.0).unwrap_or(0), 0.0)
}
