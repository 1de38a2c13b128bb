//! Mikolov's class-based softmax: `p(w|h) = p(c(w)|h) · p(w|c(w),h)`.
//!
//! The first softmax runs over the `C` classes ([`FullSoftmax`] with `class.W [H,C]`,
//! `class.b [C]`), the second over the words of the target's class only: the rows
//! `starts[c]..starts[c+1]` of the word matrix `[V,H]` (`words.W`, or `embed.W` when tied) and
//! of `words.b [V]`. Both are exact, normalised softmaxes, so `Σ_w p(w|h) = 1`.
//!
//! Training gathers the positions of one batch by their target's class (a counting sort, in
//! position order within a class), so each class's word logits are one product over all of
//! its rows. A class's words are taken in column blocks of at most [`COLS`] and its rows in
//! chunks of at most [`ROWS`]; the softmax over the blocks is an online log-sum-exp, so the
//! buffers do not depend on the class sizes. The training forward keeps only the per-row
//! maximum and sum; the backward recomputes the logits block by block for `dX` and `dW`.
//! Classes run in parallel in [`GROUPS`] groups that balance the work; neither the grouping
//! nor the thread count changes any result, as every class is computed by the same
//! instruction sequence wherever it runs.

use rayon::prelude::*;

use super::full::FullSoftmax;
use super::{sample_factored, sample_logits, Draw, Head, SampleScratch, Scratch};
use crate::cpu;
use crate::error::{Error, Result};
use crate::gemm::{self, Accum, MatMut, MatRef, Packed};
use crate::kernels::softmax;
use crate::layers::softmax_loss::IGNORE;
use crate::model::params::Params;

/// Most rows of one class computed together.
pub(crate) const ROWS: usize = 64;

/// Widest column block of one class's word logits.
pub(crate) const COLS: usize = 1024;

/// Groups of classes run in parallel, each with its own scratch slab (a constant: results do
/// not depend on it, memory does).
pub(crate) const GROUPS: usize = 4;

/// The class head over borrowed weights.
#[derive(Clone, Copy)]
pub(crate) struct ClassSoftmax<'a> {
    /// The softmax over the classes.
    pub classes: FullSoftmax<'a>,
    /// The word matrix `[V,H]` (row `w` is word `w`'s output vector).
    pub words: &'a [f32],
    /// The word biases `[V]`.
    pub word_b: &'a [f32],
    /// The first id of each class.
    pub starts: &'a [u32],
    /// Every class's word blocks packed once ([`WordPacks`], for inference), or empty: each
    /// call packs them.
    pub packs: WordPacksRef<'a>,
    pub h: usize,
    pub v: usize,
}

impl<'a> ClassSoftmax<'a> {
    /// The class head over `params` (a class head's), around its first softmax `classes`;
    /// its word blocks are packed per call.
    pub(crate) fn new(params: &'a Params, classes: FullSoftmax<'a>) -> Self {
        let c = params.config();
        ClassSoftmax {
            classes,
            words: params.affine_w().unwrap_or(params.embed_w()),
            word_b: params.affine_b(),
            starts: params.class_starts(),
            packs: WordPacksRef::default(),
            h: c.hidden_size,
            v: c.vocab_size,
        }
    }

    /// The segments of [`WordPacks::build`]: one group per class, of one segment.
    pub(crate) fn word_segments(&self) -> Vec<Vec<Segment<'a>>> {
        (0..self.classes())
            .map(|c| {
                let (ws, we) = self.class_range(c);
                vec![(&self.words[ws * self.h..we * self.h], we - ws, self.h)]
            })
            .collect()
    }
}

/// Rows `W [m, K]` of a second stage's word vectors, with `m` and `K`.
pub(crate) type Segment<'a> = (&'a [f32], usize, usize);

/// `W [m, K]`'s column blocks (of at most [`COLS`] words, in the order the softmax visits
/// them), each packed as the `W^T` panels of the logits' product: what [`ClassRows`] would pack
/// per call. Made once at load time for inference, whose weights do not change, so scoring no
/// longer transposes each class's or cluster's rows per batch of positions.
pub(crate) fn packed_blocks_len(m: usize, k: usize) -> usize {
    gemm::balanced_blocks(m, COLS)
        .map(|(_, w)| gemm::packed_len(k, w))
        .sum()
}

/// Packs block `j0..j0+w` of `W [m, K]` into `out` as `W^T [K, w]` panels.
fn pack_block<'s>(out: &'s mut [f32], w: &[f32], k: usize, (j0, bw): (usize, usize)) -> Packed<'s> {
    let _ = gemm::pack(out, MatRef::strided(&w[j0 * k..], k, bw, 1, k));
    Packed::new(&out[..gemm::packed_len(k, bw)], k, bw)
}

/// Every group's word blocks packed once, group after group (a class, or an adaptive cluster
/// whose segments are its ranges): `at[g]..at[g + 1]` is group `g`'s part of `wt`.
#[derive(Clone, Default)]
pub(crate) struct WordPacks {
    pub wt: Vec<f32>,
    pub at: Vec<usize>,
}

/// A borrowed [`WordPacks`] (empty: none).
#[derive(Clone, Copy, Default)]
pub(crate) struct WordPacksRef<'a> {
    pub wt: &'a [f32],
    pub at: &'a [usize],
}

impl<'a> WordPacksRef<'a> {
    /// Group `g`'s packed blocks, or empty.
    pub(crate) fn group(self, g: usize) -> &'a [f32] {
        if self.at.is_empty() {
            return &[];
        }
        &self.wt[self.at[g]..self.at[g + 1]]
    }
}

impl WordPacks {
    /// Floats of [`WordPacks::build`] for `groups`.
    pub(crate) fn len_of(groups: &[Vec<Segment<'_>>]) -> usize {
        groups
            .iter()
            .flatten()
            .map(|&(_, m, k)| packed_blocks_len(m, k))
            .sum()
    }

    /// Packs `groups` into `wt` (of [`WordPacks::len_of`] floats, allocated by the caller so
    /// that it can check the memory first).
    pub(crate) fn build(groups: &[Vec<Segment<'_>>], mut wt: Vec<f32>) -> Self {
        let mut at = Vec::with_capacity(groups.len() + 1);
        let mut end = 0;
        at.push(0);
        for group in groups {
            for &(w, m, k) in group {
                for (j0, bw) in gemm::balanced_blocks(m, COLS) {
                    let _ = pack_block(&mut wt[end..], w, k, (j0, bw));
                    end += gemm::packed_len(k, bw);
                }
            }
            at.push(end);
        }
        debug_assert_eq!(end, wt.len());
        WordPacks { wt, at }
    }

    pub(crate) fn as_ref(&self) -> WordPacksRef<'_> {
        WordPacksRef {
            wt: &self.wt,
            at: &self.at,
        }
    }
}

/// Floats of one group's scratch slab for hidden size `h`: a chunk of logits, `W^T` and `W`
/// of one column block packed, a chunk of rows packed, and a chunk of the gradient transposed.
pub(crate) fn slab_len(h: usize) -> usize {
    ROWS * COLS
        + gemm::packed_len(h, COLS)
        + gemm::packed_len(COLS, h)
        + gemm::packed_len(ROWS, h)
        + COLS * ROWS
}

/// The slab's parts.
pub(crate) struct Slab<'s> {
    logits: &'s mut [f32],
    wt: &'s mut [f32],
    w: &'s mut [f32],
    x: &'s mut [f32],
    gt: &'s mut [f32],
}

impl<'s> Slab<'s> {
    pub(crate) fn carve(s: &'s mut [f32], h: usize) -> Self {
        let (logits, s) = s.split_at_mut(ROWS * COLS);
        let (wt, s) = s.split_at_mut(gemm::packed_len(h, COLS));
        let (w, s) = s.split_at_mut(gemm::packed_len(COLS, h));
        let (x, gt) = s.split_at_mut(gemm::packed_len(ROWS, h));
        Slab {
            logits,
            wt,
            w,
            x,
            gt,
        }
    }
}

/// Merges the `(m, s)` of one block into a row's running maximum `m` and sum `s` (of
/// `exp(logit - m)`). The first block sets them exactly, so a class of one block gives the
/// same loss as [`softmax::xent_row`] over its logits.
pub(crate) fn merge(m: &mut f32, s: &mut f64, first: bool, bm: f32, bs: f64) {
    if first {
        (*m, *s) = (bm, bs);
    } else if bm > *m {
        *s = *s * ((*m - bm) as f64).exp() + bs;
        *m = bm;
    } else {
        *s += bs * ((bm - *m) as f64).exp();
    }
}

/// `-ln p` of a target whose logit is `tl` in a row of maximum `m` and sum `s`: the formula of
/// [`softmax::xent_row`].
pub(crate) fn xent(m: f32, s: f64, tl: f32) -> f32 {
    (s.ln() - (tl as f64 - m as f64)) as f32
}

/// One softmax's operands over a range of `m` words: their vectors `[m, K]` (and biases),
/// and the inputs `[n, K]` and targets of the rows gathered for it. A class head's second
/// softmax (`K = H`) and an adaptive head's clusters (`K` the projection's width, no bias, a
/// cluster taken in several ranges) are both made of these.
pub(crate) struct ClassRows<'a> {
    /// `[m, K]`
    pub w: &'a [f32],
    /// `[m]`, or empty for no bias
    pub b: &'a [f32],
    /// `[n, K]`
    pub x: &'a [f32],
    /// `[n]`: row `i`'s target is word `t[i] - t0` of the range (outside it: no target here)
    pub t: &'a [u32],
    pub t0: u32,
    /// `m`
    pub words: usize,
    /// `W`'s column blocks packed once ([`packed_blocks_len`]`(m, K)` floats), or empty:
    /// packed into the slab per block.
    pub wt: &'a [f32],
}

impl ClassRows<'_> {
    fn words(&self) -> usize {
        self.words
    }

    /// Row `i`'s target within the range (`>= m`, or wrapped, when it lies outside).
    fn target(&self, i: usize) -> usize {
        self.t[i].wrapping_sub(self.t0) as usize
    }

    fn rows(&self) -> usize {
        self.t.len()
    }

    /// Block `j0..j0+w` of `W` as the B of `dX = G W` for `n` rows: `None` (read in place by
    /// [`gemm::gemm_strided_with`], the same bits) where the GEMM module's rule for `n` rows
    /// says so (`gemm::reads_b_in_place`), else packed into `slab_w`. The portable kernel
    /// reads B packed only.
    fn block_w<'s>(
        &self,
        slab_w: &'s mut [f32],
        k: usize,
        n: usize,
        (j0, w): (usize, usize),
    ) -> Option<Packed<'s>> {
        if gemm::reads_b_in_place(n) && cpu::isa() != cpu::Isa::Portable {
            return None;
        }
        let _ = gemm::pack(slab_w, MatRef::new(&self.w[j0 * k..(j0 + w) * k], w, k));
        Some(Packed::new(&slab_w[..gemm::packed_len(w, k)], w, k))
    }

    /// Block `j0..j0+w`'s `W^T` panels: from [`ClassRows::wt`] at `*at` (then advanced past
    /// them), or packed into `slab_wt`.
    fn block_wt<'s>(
        &'s self,
        slab_wt: &'s mut [f32],
        k: usize,
        at: &mut usize,
        (j0, w): (usize, usize),
    ) -> Packed<'s> {
        if self.wt.is_empty() {
            return pack_block(slab_wt, self.w, k, (j0, w));
        }
        let len = gemm::packed_len(k, w);
        *at += len;
        Packed::new(&self.wt[*at - len..*at], k, w)
    }

    /// Logits of rows `r0..r0+rows` over the block `j0..j0+w`, bias added, into the slab.
    fn block_logits(
        &self,
        logits: &mut [f32],
        wt: Packed<'_>,
        h: usize,
        (r0, rows): (usize, usize),
        (j0, w): (usize, usize),
    ) {
        let l = &mut logits[..rows * w];
        gemm::gemm_packed(
            MatMut::new(l, rows, w),
            MatRef::new(&self.x[r0 * h..(r0 + rows) * h], rows, h),
            wt,
            Accum::Replace,
        );
        if !self.b.is_empty() {
            for row in l.chunks_exact_mut(w) {
                for (x, &b) in row.iter_mut().zip(&self.b[j0..j0 + w]) {
                    *x += b;
                }
            }
        }
    }

    /// Per row: the maximum `m`, the sum `s` of `exp(logit - m)` and the target's logit `tl`.
    pub(crate) fn lse(
        &self,
        slab: &mut Slab<'_>,
        h: usize,
        m: &mut [f32],
        s: &mut [f64],
        tl: &mut [f32],
    ) {
        self.lse_keeping(slab, h, (m, s, tl), None);
    }

    /// [`ClassRows::lse`]; with `keep = Some((buf, scale))`, a class of one column block whose
    /// `[n, words]` logits fit in `buf` also leaves there the gradient of its loss scaled by
    /// `scale` (what [`ClassRows::backward`] would recompute, bit for bit), and returns true.
    fn lse_keeping(
        &self,
        slab: &mut Slab<'_>,
        h: usize,
        (m, s, tl): (&mut [f32], &mut [f64], &mut [f32]),
        keep: Option<(&mut [f32], f32)>,
    ) -> bool {
        let n = self.rows();
        let words = self.words();
        let mut keep = keep.filter(|(buf, _)| words <= COLS && buf.len() >= n * words);
        let mut at = 0;
        for (bi, (j0, w)) in gemm::balanced_blocks(words, COLS).enumerate() {
            let Slab { logits, wt, .. } = slab;
            let wt = self.block_wt(wt, h, &mut at, (j0, w));
            for r0 in (0..n).step_by(ROWS) {
                let rows = ROWS.min(n - r0);
                self.block_logits(logits, wt, h, (r0, rows), (j0, w));
                for (r, row) in logits[..rows * w].chunks_exact_mut(w).enumerate() {
                    let (bm, bs) = softmax::max_sumexp_row(row);
                    let i = r0 + r;
                    merge(&mut m[i], &mut s[i], bi == 0, bm, bs as f64);
                    let t = self.target(i);
                    if (j0..j0 + w).contains(&t) {
                        tl[i] = row[t - j0];
                    }
                    if let Some((buf, scale)) = keep.as_mut() {
                        // One block: m and s are final, so this is the backward's gradient.
                        self.gradient_row(row, m[i], s[i], *scale, t);
                        buf[i * w..(i + 1) * w].copy_from_slice(row);
                    }
                }
            }
        }
        keep.is_some()
    }

    /// `row` (the logits of one block starting at word 0) becomes the gradient of the loss
    /// scaled by `scale`: `scale * (softmax - onehot(t))`.
    fn gradient_row(&self, row: &mut [f32], m: f32, s: f64, scale: f32, t: usize) {
        softmax::scaled_exp_row(row, m, (scale as f64 / s) as f32);
        if t < row.len() {
            row[t] -= scale;
        }
    }

    /// The backward pass from a gradient `g [n, words]` that [`ClassRows::lse_keeping`] kept:
    /// as [`ClassRows::backward`] without recomputing the logits.
    fn backward_kept(
        &self,
        slab: &mut Slab<'_>,
        h: usize,
        g: &[f32],
        (dx, dw, db): (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        let (n, w) = (self.rows(), self.words());
        let Slab {
            w: wp, x: xp, gt, ..
        } = slab;
        let wp = self.block_w(wp, h, n, (0, w));
        for r0 in (0..n).step_by(ROWS) {
            let rows = ROWS.min(n - r0);
            let gc = &g[r0 * w..(r0 + rows) * w];
            self.apply_gradient(gc, (xp, gt), wp, h, (r0, rows), (0, w), true, (dx, dw, db));
        }
    }

    /// `dx` rows `r0..` (=|+=) `G W_block`, `dw` block rows += `G^T X`, `db` += column sums
    /// of `G`, for the gradient `g [rows, w]` of block `j0..j0+w`.
    #[allow(clippy::too_many_arguments)]
    fn apply_gradient(
        &self,
        g: &[f32],
        (xp, gt): (&mut [f32], &mut [f32]),
        wp: Option<Packed<'_>>,
        h: usize,
        (r0, rows): (usize, usize),
        (j0, w): (usize, usize),
        first_block: bool,
        (dx, dw, db): (&mut [f32], &mut [f32], &mut [f32]),
    ) {
        // dX rows (+)= G W_block   [rows, w] x [w, H]
        let (dxr, gv) = (
            MatMut::new(&mut dx[r0 * h..(r0 + rows) * h], rows, h),
            MatRef::new(g, rows, w),
        );
        let accum = Accum::add_if(!first_block);
        match wp {
            Some(wp) => gemm::gemm_packed(dxr, gv, wp, accum),
            None => {
                let wv = MatRef::new(&self.w[j0 * h..(j0 + w) * h], w, h);
                gemm::gemm_strided_with(cpu::isa(), dxr, gv, wv, accum);
            }
        }
        // dW_block += G^T X   [w, rows] x [rows, H]
        gemm::transpose(gt, g, rows, w);
        let _ = gemm::pack(xp, MatRef::new(&self.x[r0 * h..(r0 + rows) * h], rows, h));
        gemm::gemm_packed(
            MatMut::new(&mut dw[j0 * h..(j0 + w) * h], w, h),
            MatRef::new(&gt[..w * rows], w, rows),
            Packed::new(&xp[..gemm::packed_len(rows, h)], rows, h),
            Accum::Add,
        );
        if !db.is_empty() {
            for row in g.chunks_exact(w) {
                for (d, &v) in db[j0..j0 + w].iter_mut().zip(row) {
                    *d += v;
                }
            }
        }
    }

    /// The backward pass of [`ClassRows::lse`]'s loss scaled by `scale`: `dx [n,H]`
    /// overwritten, `dw [m,H]` and `db [m]` (empty: no bias) added to.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward(
        &self,
        slab: &mut Slab<'_>,
        h: usize,
        (m, s): (&[f32], &[f64]),
        scale: f32,
        dx: &mut [f32],
        dw: &mut [f32],
        db: &mut [f32],
    ) {
        let n = self.rows();
        let mut at = 0;
        for (bi, (j0, w)) in gemm::balanced_blocks(self.words(), COLS).enumerate() {
            let Slab {
                logits,
                wt,
                w: wp,
                x: xp,
                gt,
            } = slab;
            let wt = self.block_wt(wt, h, &mut at, (j0, w));
            let wp = self.block_w(wp, h, n, (j0, w));
            for r0 in (0..n).step_by(ROWS) {
                let rows = ROWS.min(n - r0);
                self.block_logits(logits, wt, h, (r0, rows), (j0, w));
                let g = &mut logits[..rows * w];
                for (r, row) in g.chunks_exact_mut(w).enumerate() {
                    let i = r0 + r;
                    let t = self.target(i).wrapping_sub(j0);
                    self.gradient_row(row, m[i], s[i], scale, t);
                }
                let (dxr, dwr, dbr) = (&mut *dx, &mut *dw, &mut *db);
                self.apply_gradient(
                    g,
                    (&mut **xp, &mut **gt),
                    wp,
                    h,
                    (r0, rows),
                    (j0, w),
                    bi == 0,
                    (dxr, dwr, dbr),
                );
            }
        }
    }
}

/// The buffers of the class head's second softmax over one batch, in gathered order (by
/// class, then position).
pub(crate) struct Gather<'a> {
    /// Class targets per position ([`IGNORE`] where masked).
    pub ts1: &'a mut [i32],
    /// Gathered slot `k` holds position `order[k]`.
    pub order: &'a mut [u32],
    /// The slot of each position (`u32::MAX` where masked).
    pub slot: &'a mut [u32],
    /// Slots of class `c`: `offsets[c]..offsets[c+1]` (`[C+1]`).
    pub offsets: &'a mut [u32],
    /// Targets within their class, by slot.
    pub tg: &'a mut [u32],
}

/// Sorts the positions of `ts` by the second-stage group `key` gives their target (a
/// counting sort: position order within a group) and fills `g`; returns the number of
/// positions with a second stage. `key(w)` is `(the first softmax's target, Some((group,
/// index within it)))`, or `None` in place of the pair for a word that the first softmax
/// alone predicts (an adaptive head's shortlist); masked positions get [`IGNORE`].
pub(crate) fn gather_by(
    ts: &[i32],
    groups: usize,
    g: &mut Gather<'_>,
    key: impl Fn(usize) -> (u32, Option<(usize, u32)>),
) -> usize {
    g.offsets.fill(0);
    for (p, (t1, &t)) in g.ts1.iter_mut().zip(ts).enumerate() {
        g.slot[p] = u32::MAX;
        *t1 = if t == IGNORE {
            IGNORE
        } else {
            let (first, second) = key(t as usize);
            if let Some((k, _)) = second {
                g.offsets[k + 1] += 1;
                // Marks the position for the second pass below.
                g.slot[p] = k as u32;
            }
            first as i32
        };
    }
    for k in 0..groups {
        g.offsets[k + 1] += g.offsets[k];
    }
    let total = g.offsets[groups] as usize;
    // Next free slot per group: offsets[k] advances as slots fill, then is restored.
    for (p, &t) in ts.iter().enumerate() {
        if g.slot[p] == u32::MAX {
            continue;
        }
        let Some((k, within)) = key(t as usize).1 else {
            unreachable!("marked above")
        };
        let at = g.offsets[k] as usize;
        g.offsets[k] += 1;
        g.order[at] = p as u32;
        g.slot[p] = at as u32;
        g.tg[at] = within;
    }
    // Shift back: offsets[k] now holds the end of group k, i.e. the start of k + 1.
    for k in (1..=groups).rev() {
        g.offsets[k] = g.offsets[k - 1];
    }
    g.offsets[0] = 0;
    total
}

impl ClassSoftmax<'_> {
    /// The class of word `w`.
    pub(crate) fn class_of(&self, w: usize) -> usize {
        self.starts.partition_point(|&s| s as usize <= w) - 1
    }

    /// Class `c`'s second-softmax operands for its gathered rows `x` and targets `t`.
    fn class_rows<'b>(&'b self, c: usize, x: &'b [f32], t: &'b [u32]) -> ClassRows<'b> {
        let (ws, we) = self.class_range(c);
        ClassRows {
            w: &self.words[ws * self.h..we * self.h],
            b: &self.word_b[ws..we],
            x,
            t,
            t0: 0,
            words: we - ws,
            wt: self.packs.group(c),
        }
    }

    fn class_range(&self, c: usize) -> (usize, usize) {
        let end = self.starts.get(c + 1).map_or(self.v, |&e| e as usize);
        (self.starts[c] as usize, end)
    }

    fn classes(&self) -> usize {
        self.starts.len()
    }

    /// Sorts the positions of `ts` by their target's class (see [`gather_by`]); returns the
    /// number of unmasked positions. Training and inference gather with this one sort, so
    /// their slots agree.
    pub(crate) fn gather(&self, ts: &[i32], g: &mut Gather<'_>) -> usize {
        gather_by(ts, self.classes(), g, |w| {
            let k = self.class_of(w);
            (k as u32, Some((k, (w - self.starts[k] as usize) as u32)))
        })
    }

    /// Class boundaries `b[0..=GROUPS]` of the parallel groups, balancing rows x words.
    fn groups(&self, offsets: &[u32]) -> [usize; GROUPS + 1] {
        let c = self.classes();
        let work = |k: usize| {
            let (s, e) = self.class_range(k);
            (offsets[k + 1] - offsets[k]) as u64 * (e - s) as u64
        };
        let total: u64 = (0..c).map(work).sum();
        let mut b = [c; GROUPS + 1];
        b[0] = 0;
        let (mut k, mut acc) = (0, 0u64);
        for (g, bound) in b.iter_mut().enumerate().take(GROUPS).skip(1) {
            while k < c && acc * (GROUPS as u64) < total * g as u64 {
                acc += work(k);
                k += 1;
            }
            *bound = k;
        }
        b
    }

    /// The first word of each class bound (`V` for the end).
    fn word_bounds(&self, b: &[usize; GROUPS + 1]) -> [usize; GROUPS + 1] {
        b.map(|c| self.starts.get(c).map_or(self.v, |&s| s as usize))
    }

    /// The second softmax's forward over the gathered rows `xg [slots, H]` (slot order): per
    /// slot the maximum `m`, the sum `s` and the loss `-ln p(w | c(w), h)`.
    pub(crate) fn words_forward(
        &self,
        xg: &[f32],
        offsets: &[u32],
        tg: &[u32],
        (m, s, loss): (&mut [f32], &mut [f64], &mut [f32]),
        slabs: &mut [f32],
        keep: Option<Keep<'_>>,
    ) {
        let h = self.h;
        let cb = self.groups(offsets);
        let sb = cb.map(|c| offsets[c] as usize);
        let ones: [usize; GROUPS + 1] = std::array::from_fn(|g| g);
        let mut ms = split_groups(m, &sb, 1).into_iter();
        let mut ss = split_groups(s, &sb, 1).into_iter();
        let mut ls = split_groups(loss, &sb, 1).into_iter();
        let mut slab = split_groups(slabs, &ones, slab_len(h)).into_iter();
        // Each group keeps gradients in its own quarter of the buffer, from its start.
        let (mut bufs, mut offs, scale) = match keep {
            Some(Keep {
                buf,
                offsets: o,
                scale,
            }) => {
                o.fill(u32::MAX);
                let part = buf.len() / GROUPS;
                let eq: [usize; GROUPS + 1] = std::array::from_fn(|g| g * part);
                (
                    Some(split_groups(buf, &eq, 1).into_iter()),
                    Some(split_groups(o, &cb, 1).into_iter()),
                    scale,
                )
            }
            None => (None, None, 0.0),
        };
        let parts: [_; GROUPS] = std::array::from_fn(|g| {
            (
                g,
                ms.next().unwrap(),
                ss.next().unwrap(),
                ls.next().unwrap(),
                slab.next().unwrap(),
                bufs.as_mut().map(|b| b.next().unwrap()),
                offs.as_mut().map(|o| o.next().unwrap()),
            )
        });
        parts
            .into_par_iter()
            .for_each(|(g, m, s, loss, slab, mut buf, mut goff)| {
                let mut slab = Slab::carve(slab, h);
                let base = buf.as_ref().map_or(0, |b| g * b.len());
                let mut used = 0;
                for c in cb[g]..cb[g + 1] {
                    let (k0, k1) = (offsets[c] as usize, offsets[c + 1] as usize);
                    if k0 == k1 {
                        continue;
                    }
                    let (ws, we) = self.class_range(c);
                    let rows = self.class_rows(c, &xg[k0 * h..k1 * h], &tg[k0..k1]);
                    let (l0, l1) = (k0 - sb[g], k1 - sb[g]);
                    // The target logits go to `loss` first, then become the losses.
                    let keep = buf.as_deref_mut().map(|b| (&mut b[used..], scale));
                    let kept = rows.lse_keeping(
                        &mut slab,
                        h,
                        (&mut m[l0..l1], &mut s[l0..l1], &mut loss[l0..l1]),
                        keep,
                    );
                    if kept {
                        if let Some(o) = goff.as_deref_mut() {
                            o[c - cb[g]] = (base + used) as u32;
                        }
                        used += (k1 - k0) * (we - ws);
                    }
                    for i in l0..l1 {
                        loss[i] = xent(m[i], s[i], loss[i]);
                    }
                }
            });
    }

    /// The second softmax's backward (recomputing the logits) scaled by `scale`: `dxg [slots,
    /// H]` overwritten, and the word rows of `dw [V,H]` and `db [V]` of every class with rows
    /// set (zeroed, then added to: see `SimpleRnnlm::backward`); other rows are untouched.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn words_backward(
        &self,
        xg: &[f32],
        offsets: &[u32],
        tg: &[u32],
        (m, s): (&[f32], &[f64]),
        scale: f32,
        dxg: &mut [f32],
        (dw, db): (&mut [f32], &mut [f32]),
        slabs: &mut [f32],
        kept: Option<(&[f32], &[u32])>,
    ) {
        let h = self.h;
        let cb = self.groups(offsets);
        let sb = cb.map(|c| offsets[c] as usize);
        let wb = self.word_bounds(&cb);
        let ones: [usize; GROUPS + 1] = std::array::from_fn(|g| g);
        let mut dxs = split_groups(dxg, &sb, h).into_iter();
        let mut dws = split_groups(&mut dw[..self.v * h], &wb, h).into_iter();
        let mut dbs = split_groups(&mut db[..self.v], &wb, 1).into_iter();
        let mut slab = split_groups(slabs, &ones, slab_len(h)).into_iter();
        let parts: [_; GROUPS] = std::array::from_fn(|g| {
            (
                g,
                dxs.next().unwrap(),
                dws.next().unwrap(),
                dbs.next().unwrap(),
                slab.next().unwrap(),
            )
        });
        parts.into_par_iter().for_each(|(g, dx, dw, db, slab)| {
            let mut slab = Slab::carve(slab, h);
            for c in cb[g]..cb[g + 1] {
                let (k0, k1) = (offsets[c] as usize, offsets[c + 1] as usize);
                if k0 == k1 {
                    continue;
                }
                let (ws, we) = self.class_range(c);
                let rows = self.class_rows(c, &xg[k0 * h..k1 * h], &tg[k0..k1]);
                let (l0, l1) = (k0 - sb[g], k1 - sb[g]);
                let (v0, v1) = (ws - wb[g], we - wb[g]);
                // The caller left these rows as they were (SimpleRnnlm::backward): zero them
                // here, where they are about to be read and written anyway. Nothing earlier
                // in the backward adds to them (the head runs first, the tied embedding
                // after).
                dw[v0 * h..v1 * h].fill(0.0);
                db[v0..v1].fill(0.0);
                if let Some((buf, offs)) = kept.filter(|(_, o)| o[c] != u32::MAX) {
                    let at = offs[c] as usize;
                    let g = &buf[at..at + (k1 - k0) * (we - ws)];
                    rows.backward_kept(
                        &mut slab,
                        h,
                        g,
                        (
                            &mut dx[l0 * h..l1 * h],
                            &mut dw[v0 * h..v1 * h],
                            &mut db[v0..v1],
                        ),
                    );
                    continue;
                }
                rows.backward(
                    &mut slab,
                    h,
                    (&m[k0..k1], &s[k0..k1]),
                    scale,
                    &mut dx[l0 * h..l1 * h],
                    &mut dw[v0 * h..v1 * h],
                    &mut db[v0..v1],
                );
            }
        });
    }
}

/// Where a training forward keeps the second softmax's gradients for the backward: `buf`,
/// and per class the offset of its `[rows, words]` gradient there (`u32::MAX`: not kept, the
/// backward recomputes it), scaled by `scale`.
pub(crate) struct Keep<'a> {
    pub buf: &'a mut [f32],
    pub offsets: &'a mut [u32],
    pub scale: f32,
}

/// Splits `buf` into [`GROUPS`] consecutive parts of `(b[g+1] - b[g]) * unit` elements.
fn split_groups<'a, T>(
    buf: &'a mut [T],
    b: &[usize; GROUPS + 1],
    unit: usize,
) -> [&'a mut [T]; GROUPS] {
    let mut rest = buf;
    std::array::from_fn(|g| {
        let (x, r) = std::mem::take(&mut rest).split_at_mut((b[g + 1] - b[g]) * unit);
        rest = r;
        x
    })
}

/// Mikolov's classes from unigram counts (his rnnlm toolkit's default, `-class C`): with the
/// words in frequency order (`counts` non-increasing), word `i` is put in the current class,
/// and the class is closed after it once the running share of `Σ sqrt(count)` passes
/// `(k + 1) / C` for class `k`. Returns the first id of each class; there may be fewer than
/// `C` classes when a few words hold most of the mass (the toolkit's classes would then be
/// empty at the end).
///
/// # Errors
/// If `counts` is empty, `classes` is 0, or the counts are not in non-increasing order
/// (naming the first id out of order: the classes would not be frequency classes).
///
/// ```
/// // Ten words with Zipf counts into 3 classes: the frequent words get small classes.
/// let counts: Vec<u64> = (1..=10).map(|r| 1000 / r).collect();
/// let starts = rnnlm::class_starts_from_counts(&counts, 3).unwrap();
/// assert_eq!(starts, [0, 2, 6]); // classes of 2, 4 and 4 words
/// assert!(rnnlm::class_starts_from_counts(&[1, 5], 2).is_err()); // not in frequency order
/// ```
pub fn class_starts_from_counts(counts: &[u64], classes: usize) -> Result<Vec<u32>> {
    if counts.is_empty() || classes == 0 {
        return Err(Error::invalid(
            "classes",
            format!(
                "{classes} classes over {} words: need at least one of each",
                counts.len()
            ),
        ));
    }
    if let Some(i) = counts.windows(2).position(|w| w[1] > w[0]) {
        return Err(Error::invalid(
            "class counts",
            format!(
                "id {} has count {}, more than id {}'s {}: frequency classes need the ids in \
                 frequency order (most frequent first)",
                i + 1,
                counts[i + 1],
                i,
                counts[i]
            ),
        ));
    }
    let total: f64 = counts.iter().map(|&c| c as f64).sum();
    let total = if total > 0.0 { total } else { 1.0 };
    let dd: f64 = counts.iter().map(|&c| (c as f64 / total).sqrt()).sum();
    let dd = if dd > 0.0 { dd } else { 1.0 };
    let mut starts = vec![0u32];
    let (mut df, mut a) = (0.0f64, 0usize);
    for (i, &c) in counts.iter().enumerate() {
        df += (c as f64 / total).sqrt() / dd;
        if df > 1.0 {
            df = 1.0;
        }
        if df > (a + 1) as f64 / classes as f64 && a < classes - 1 {
            a += 1;
            if i + 1 < counts.len() {
                starts.push(i as u32 + 1);
            }
        }
    }
    Ok(starts)
}

impl ClassSoftmax<'_> {
    /// Sizes `s` for [`ClassSoftmax::log_probs`] over `rows` positions (allocating only when
    /// it grows).
    fn reserve(&self, s: &mut Scratch, rows: usize) {
        let (h, c) = (self.h, self.classes());
        let f = self.classes.scratch_len(rows).max(rows * c);
        s.f.resize(f.max(s.f.len()), 0.0);
        for v in [&mut s.idx, &mut s.rowof, &mut s.slot, &mut s.tg] {
            v.resize(rows.max(v.len()), 0);
        }
        for v in [&mut s.ts, &mut s.ts1] {
            v.resize(rows.max(v.len()), 0);
        }
        s.offsets.resize((c + 1).max(s.offsets.len()), 0);
        s.m.resize(rows.max(s.m.len()), 0.0);
        s.tl.resize(rows.max(s.tl.len()), 0.0);
        s.sum.resize(rows.max(s.sum.len()), 0.0);
        s.xg.resize((rows * h).max(s.xg.len()), 0.0);
        s.slab.resize(slab_len(h).max(s.slab.len()), 0.0);
    }

    /// `out[i] = ln p(targets[i] | hs[i])` for `hs [rows, H]`, with the kernels and blocks of
    /// the training forward (so the same bits); the rows are gathered by class in `s`, which
    /// [`ClassSoftmax::reserve`] has sized.
    fn class_log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], s: &mut Scratch) {
        let (h, rows, c) = (self.h, targets.len(), self.classes());
        let Scratch {
            f,
            idx,
            ts,
            ts1,
            slot,
            rowof,
            offsets,
            tg,
            m,
            sum,
            tl,
            xg,
            slab,
            ..
        } = s;
        // The rows gathered by class, as training gathers them.
        for (t, &w) in ts[..rows].iter_mut().zip(targets) {
            *t = w as i32;
        }
        let mut g = Gather {
            ts1: &mut ts1[..rows],
            order: &mut rowof[..rows],
            slot: &mut slot[..rows],
            offsets: &mut offsets[..=c],
            tg: &mut tg[..rows],
        };
        self.gather(&ts[..rows], &mut g);
        // The first softmax, over the classes.
        for (k, &t1) in idx[..rows].iter_mut().zip(&ts1[..rows]) {
            *k = t1 as u32;
        }
        self.classes.log_probs_into(hs, &idx[..rows], out, f);
        // The second, over the words of each row's class.
        for (at, &i) in rowof[..rows].iter().enumerate() {
            let i = i as usize;
            xg[at * h..(at + 1) * h].copy_from_slice(&hs[i * h..(i + 1) * h]);
        }
        let mut slab = Slab::carve(slab, h);
        for k in 0..c {
            let (k0, k1) = (offsets[k] as usize, offsets[k + 1] as usize);
            if k0 == k1 {
                continue;
            }
            let cr = self.class_rows(k, &xg[k0 * h..k1 * h], &tg[k0..k1]);
            cr.lse(
                &mut slab,
                h,
                &mut m[k0..k1],
                &mut sum[k0..k1],
                &mut tl[k0..k1],
            );
        }
        for at in 0..rows {
            out[rowof[at] as usize] -= xent(m[at], sum[at], tl[at]);
        }
    }

    /// `out [rows, V]`: every word's log-probability for `hs [rows, H]` (the whole
    /// distribution, for sampling and [`crate::Rnnlm::step`]), with the blocks of
    /// [`ClassSoftmax::log_probs`]. `s` is sized by [`ClassSoftmax::reserve`].
    fn class_log_prob_rows(&self, hs: &[f32], rows: usize, out: &mut [f32], s: &mut Scratch) {
        let (h, v, c) = (self.h, self.v, self.classes());
        let f = &mut s.f[..rows * c];
        self.classes.logits(hs, rows, f);
        for row in f.chunks_exact_mut(c) {
            let (m, sum) = softmax::max_sumexp_row(row);
            let lse = (sum as f64).ln() + m as f64;
            for x in row.iter_mut() {
                *x = (*x as f64 - lse) as f32;
            }
        }
        let slab = Slab::carve(&mut s.slab, h);
        for k in 0..c {
            let (ws, we) = self.class_range(k);
            let w = &self.words[ws * h..we * h];
            let b = &self.word_b[ws..we];
            for r in 0..rows {
                s.m[r] = f32::NEG_INFINITY;
                s.sum[r] = 0.0;
            }
            for (bi, (j0, bw)) in gemm::balanced_blocks(we - ws, COLS).enumerate() {
                let _ = gemm::pack(slab.wt, MatRef::strided(&w[j0 * h..], h, bw, 1, h));
                let wt = Packed::new(&slab.wt[..gemm::packed_len(h, bw)], h, bw);
                gemm::gemm_packed(
                    MatMut::with_row_stride(&mut out[ws + j0..], rows, bw, v),
                    MatRef::new(&hs[..rows * h], rows, h),
                    wt,
                    Accum::Replace,
                );
                for r in 0..rows {
                    let seg = &mut out[r * v + ws + j0..r * v + ws + j0 + bw];
                    for (x, &bb) in seg.iter_mut().zip(&b[j0..j0 + bw]) {
                        *x += bb;
                    }
                    let (bm, bs) = softmax::max_sumexp_row(seg);
                    merge(&mut s.m[r], &mut s.sum[r], bi == 0, bm, bs as f64);
                }
            }
            for r in 0..rows {
                let lse = s.sum[r].ln() + s.m[r] as f64;
                let lp1 = f[r * c + k] as f64;
                for x in &mut out[r * v + ws..r * v + we] {
                    *x = (*x as f64 - lse + lp1) as f32;
                }
            }
        }
    }
}

impl ClassSoftmax<'_> {
    /// Class `k`'s log-softmax over its words for state `h [H]`, at the front of `buf`.
    fn class_word_log_probs(&self, h: &[f32], k: usize, buf: &mut Vec<f32>, mm: &mut [f32]) {
        let (a, b) = self.class_range(k);
        buf.resize(b - a, 0.0);
        let seg = &mut buf[..b - a];
        gemm::matmul_packed(
            MatMut::new(seg, 1, b - a),
            MatRef::new(h, 1, self.h),
            MatRef::new(&self.words[a * self.h..b * self.h], b - a, self.h).t(),
            Accum::Replace,
            mm,
        );
        for (x, &bias) in seg.iter_mut().zip(&self.word_b[a..b]) {
            *x += bias;
        }
        super::log_softmax(seg);
    }
}

impl Head for ClassSoftmax<'_> {
    fn log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], s: &mut Scratch) {
        self.reserve(s, targets.len());
        self.class_log_probs(hs, targets, out, s);
    }

    fn log_prob_rows(&self, hs: &[f32], rows: usize, out: &mut [f32], s: &mut Scratch) {
        self.reserve(s, rows);
        self.class_log_prob_rows(hs, rows, out, s);
    }

    fn sample(&self, h: &[f32], draw: &Draw<'_>, s: &mut SampleScratch, u: f64) -> Option<u32> {
        // The class, then a word of it (at temperature 1 with no cut; else from the whole
        // distribution below).
        let c = self.classes();
        let most = (0..c)
            .map(|k| {
                let (a, b) = self.class_range(k);
                gemm::scratch_len(1, self.h, b - a, true)
            })
            .max()
            .unwrap_or(0);
        let SampleScratch {
            logits,
            weights,
            head: sc,
            ..
        } = s;
        if sc.f.len() < c {
            sc.f.resize(c, 0.0);
        }
        if sc.mm.len() < most {
            sc.mm.resize(most, 0.0);
        }
        let f = &mut sc.f[..c];
        self.classes.logits(h, 1, f);
        let mm = &mut sc.mm;
        let lp = |k: usize, buf: &mut Vec<f32>| self.class_word_log_probs(h, k, buf, mm);
        let range = |k: usize| self.class_range(k);
        if let Some(pick) = sample_factored(f, 0, (c, range), lp, draw, (weights, logits), u) {
            return pick;
        }
        let mut lp = std::mem::take(&mut s.logits);
        lp.resize(self.v, 0.0);
        self.log_prob_rows(h, 1, &mut lp, &mut s.head);
        let pick = sample_logits(&lp, draw, s, u);
        s.logits = lp;
        pick
    }
}
