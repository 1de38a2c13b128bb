//! The adaptive softmax of Grave et al. 2017 ("Efficient softmax approximation for GPUs"), as
//! PyTorch's `nn.AdaptiveLogSoftmaxWithLoss` defines it.
//!
//! The ids are split by the cutoffs `c_0 < ... < c_{k-1}`: the shortlist `0..c_0` and the
//! clusters `c_i..c_{i+1}` (the last up to `V`). The head is a softmax over the shortlist plus
//! one logit per cluster ([`FullSoftmax`] with `head.W [H, c_0 + k]`, and a bias or zeros);
//! cluster `i` projects `h` to `z = h P_i` (`P_i [H, p_i]`) and takes a softmax over its words
//! `z W_i^T` (`W_i [n_i, p_i]`, no bias). So `p(w|h) = head(w)` for a shortlist word and
//! `head(c_0 + i) · softmax_i(w)` for a word of cluster `i`: exact and normalised.
//!
//! Training and scoring gather the positions by their target's cluster with the class head's
//! counting sort ([`super::class::gather_by`]); each cluster's projection is one product over
//! its rows, and its softmax the class head's [`ClassRows`] over [`GROUPS`] fixed ranges of its
//! words, run in parallel and merged in range order. The ranges do not depend on the thread
//! count, so neither do the results. The training forward keeps the projections and the
//! per-row maximum and sum; the backward recomputes the logits range by range.

use rayon::prelude::*;

use super::class::{
    gather_by, merge, packed_blocks_len, slab_len, xent, ClassRows, Gather, Segment, Slab,
    WordPacksRef, COLS, GROUPS,
};
use super::full::FullSoftmax;
use super::{log_softmax, sample_factored, sample_logits, Draw, Head, SampleScratch, Scratch};
use crate::gemm::{self, Accum, MatMut, MatRef};
use crate::model::config::MAX_CLUSTERS;
use crate::model::params::Params;

/// One cluster over borrowed weights.
#[derive(Clone, Copy, Default)]
pub(crate) struct Cluster<'a> {
    /// Its ids: `start..end`.
    pub start: usize,
    pub end: usize,
    /// `P [H, p]`
    pub proj: &'a [f32],
    /// `W [end - start, p]`
    pub w: &'a [f32],
    pub p: usize,
    /// Its ranges' word blocks packed once ([`super::class::WordPacks`], for inference), or
    /// empty.
    pub wt: &'a [f32],
}

impl Cluster<'_> {
    fn words(&self) -> usize {
        self.end - self.start
    }

    /// The softmax operands of its words `r0..r1` for the projected rows `z [n, p]` with
    /// targets `t` (within the cluster).
    fn range_rows<'b>(
        &'b self,
        (r0, r1): (usize, usize),
        z: &'b [f32],
        t: &'b [u32],
    ) -> ClassRows<'b> {
        let wt = if self.wt.is_empty() {
            &[][..]
        } else {
            // The ranges' blocks lie in range order.
            let before: usize = self
                .ranges()
                .take_while(|&(a, _)| a < r0)
                .map(|(a, b)| packed_blocks_len(b - a, self.p))
                .sum();
            &self.wt[before..before + packed_blocks_len(r1 - r0, self.p)]
        };
        ClassRows {
            w: &self.w[r0 * self.p..r1 * self.p],
            b: &[],
            x: z,
            t,
            t0: r0 as u32,
            words: r1 - r0,
            wt,
        }
    }

    /// The fixed ranges `(r0, r1)` of its words that run in parallel: one per [`COLS`]
    /// words, at most [`GROUPS`].
    fn ranges(&self) -> impl Iterator<Item = (usize, usize)> {
        let n = self.words();
        let parts = n.div_ceil(COLS).clamp(1, GROUPS);
        gemm::balanced_blocks(n, n.div_ceil(parts)).map(|(a, w)| (a, a + w))
    }
}

/// The adaptive head over borrowed weights.
#[derive(Clone, Copy)]
pub(crate) struct AdaptiveSoftmax<'a> {
    /// The head softmax over the shortlist and the clusters.
    pub head: FullSoftmax<'a>,
    pub clusters: [Cluster<'a>; MAX_CLUSTERS],
    pub k: usize,
    pub h: usize,
    pub v: usize,
}

/// Reusable buffers of an adaptive head's tails over `nt` gathered rows.
pub(crate) struct TailBufs<'a> {
    /// `[nt, pmax]`: each cluster's projected rows (`[n_i, p_i]` from its first slot's row).
    pub zg: &'a mut [f32],
    /// `[GROUPS, nt]`: per range, each row's maximum, sum and target logit.
    pub gm: &'a mut [f32],
    pub gs: &'a mut [f64],
    pub gtl: &'a mut [f32],
    /// `[GROUPS, nt, pmax]` (training): per range, the gradient w.r.t. the projected rows.
    pub dz: &'a mut [f32],
    /// [`GROUPS`] slabs of [`slab_len`]`(H)`.
    pub slabs: &'a mut [f32],
    /// Scratch of the projections' products ([`AdaptiveSoftmax::mm_len`]).
    pub mm: &'a mut [f32],
}

impl<'a> AdaptiveSoftmax<'a> {
    /// The head over `params` (an adaptive head's), with its first softmax `head`.
    pub(crate) fn new(params: &'a Params, head: FullSoftmax<'a>) -> Self {
        let c = params.config();
        let mut clusters = [Cluster::default(); MAX_CLUSTERS];
        let crate::Softmax::Adaptive { cutoffs, .. } = c.softmax else {
            unreachable!("an adaptive head's parameters")
        };
        let cut = cutoffs.as_slice();
        for (i, cl) in clusters.iter_mut().enumerate().take(cut.len()) {
            let (proj, w, p) = params.tail(i);
            *cl = Cluster {
                start: cut[i] as usize,
                end: cut.get(i + 1).map_or(c.vocab_size, |&e| e as usize),
                proj,
                w,
                p,
                wt: &[],
            };
        }
        AdaptiveSoftmax {
            head,
            clusters,
            k: cut.len(),
            h: c.hidden_size,
            v: c.vocab_size,
        }
    }

    fn clusters(&self) -> &[Cluster<'a>] {
        &self.clusters[..self.k]
    }

    /// The head with its clusters' word blocks packed once (`packs` made by
    /// [`super::class::WordPacks::build`] from [`AdaptiveSoftmax::word_segments`]).
    pub(crate) fn with_packs(mut self, packs: WordPacksRef<'a>) -> Self {
        for (i, c) in self.clusters.iter_mut().enumerate().take(self.k) {
            c.wt = packs.group(i);
        }
        self
    }

    /// The segments of [`super::class::WordPacks::build`]: one group per cluster, one segment per range.
    pub(crate) fn word_segments(&self) -> Vec<Vec<Segment<'a>>> {
        self.clusters()
            .iter()
            .map(|c| {
                c.ranges()
                    .map(|(r0, r1)| (&c.w[r0 * c.p..r1 * c.p], r1 - r0, c.p))
                    .collect()
            })
            .collect()
    }

    /// The shortlist's size `c_0`.
    pub(crate) fn shortlist(&self) -> usize {
        self.clusters[0].start
    }

    /// The widest projection.
    pub(crate) fn pmax(&self) -> usize {
        self.clusters().iter().map(|c| c.p).max().unwrap_or(1)
    }

    /// Floats of [`TailBufs::mm`] for `nt` rows: the largest product scratch of a cluster.
    pub(crate) fn mm_len(h: usize, pmax: usize, nt: usize) -> usize {
        gemm::scratch_len(nt, h, pmax, true)
            .max(gemm::scratch_len(h, nt, pmax, false))
            .max(gemm::scratch_len(nt, pmax, h, true))
    }

    /// The head's target for word `w` and, for a cluster's word, `(cluster, index in it)`.
    fn key(&self, w: usize) -> (u32, Option<(usize, u32)>) {
        let s = self.shortlist();
        if w < s {
            return (w as u32, None);
        }
        let i = self.clusters().partition_point(|c| c.start <= w) - 1;
        (
            (s + i) as u32,
            Some((i, (w - self.clusters[i].start) as u32)),
        )
    }

    /// Gathers the positions of `ts` by their target's cluster (see [`gather_by`]): `ts1`
    /// gets the head's targets; returns the number of positions in a cluster.
    pub(crate) fn gather(&self, ts: &[i32], g: &mut Gather<'_>) -> usize {
        gather_by(ts, self.k, g, |w| self.key(w))
    }

    /// The tails' forward over the gathered rows `xg [slots, H]` (slot order, `offsets`
    /// `[k+1]` per cluster, `tg` the targets within their cluster): per slot the maximum
    /// `m`, the sum `s` and the loss `-ln p(w | cluster, h)`. Leaves the projected rows in
    /// `b.zg` for the backward.
    pub(crate) fn tails_forward(
        &self,
        xg: &[f32],
        offsets: &[u32],
        tg: &[u32],
        (m, s, loss): (&mut [f32], &mut [f64], &mut [f32]),
        b: &mut TailBufs<'_>,
    ) {
        let (h, pmax) = (self.h, self.pmax());
        let nt = b.gm.len() / GROUPS;
        for (i, c) in self.clusters().iter().enumerate() {
            let (k0, k1) = (offsets[i] as usize, offsets[i + 1] as usize);
            let (n, p) = (k1 - k0, c.p);
            if n == 0 {
                continue;
            }
            let z = &mut b.zg[k0 * pmax..k0 * pmax + n * p];
            // z = X P   [n,H] x [H,p]
            gemm::matmul_packed(
                MatMut::new(z, n, p),
                MatRef::new(&xg[k0 * h..k1 * h], n, h),
                MatRef::new(c.proj, h, p),
                Accum::Replace,
                b.mm,
            );
            let z = &*z;
            let t = &tg[k0..k1];
            b.gm.par_chunks_mut(nt)
                .zip(b.gs.par_chunks_mut(nt))
                .zip(b.gtl.par_chunks_mut(nt))
                .zip(b.slabs.par_chunks_mut(slab_len(h)))
                .zip(c.ranges().collect_array())
                .for_each(|((((gm, gs), gtl), slab), r)| {
                    let Some((r0, r1)) = r else { return };
                    let rows = c.range_rows((r0, r1), z, t);
                    let mut slab = Slab::carve(slab, h);
                    rows.lse(&mut slab, p, &mut gm[..n], &mut gs[..n], &mut gtl[..n]);
                });
            // Merge the ranges in order; the target's logit comes from its range.
            for j in 0..n {
                let mut tl = f32::NAN;
                for (g, (r0, r1)) in c.ranges().enumerate() {
                    merge(
                        &mut m[k0 + j],
                        &mut s[k0 + j],
                        g == 0,
                        b.gm[g * nt + j],
                        b.gs[g * nt + j],
                    );
                    if (r0..r1).contains(&(t[j] as usize)) {
                        tl = b.gtl[g * nt + j];
                    }
                }
                loss[k0 + j] = xent(m[k0 + j], s[k0 + j], tl);
            }
        }
    }

    /// The tails' backward of the loss scaled by `scale` (after [`Self::tails_forward`] over
    /// the same rows): `dxg [slots, H]` overwritten, and each cluster with rows adds its
    /// projection's and word vectors' gradients into `dtails` (the tails' part of the
    /// gradient buffer, in storage order).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn tails_backward(
        &self,
        xg: &[f32],
        offsets: &[u32],
        tg: &[u32],
        (m, s): (&[f32], &[f64]),
        scale: f32,
        dxg: &mut [f32],
        dtails: &mut [f32],
        b: &mut TailBufs<'_>,
    ) {
        let (h, pmax) = (self.h, self.pmax());
        let nt = b.gm.len() / GROUPS;
        let mut rest = dtails;
        for (i, c) in self.clusters().iter().enumerate() {
            let (dproj, r) = std::mem::take(&mut rest).split_at_mut(h * c.p);
            let (dw, r) = r.split_at_mut(c.words() * c.p);
            rest = r;
            let (k0, k1) = (offsets[i] as usize, offsets[i + 1] as usize);
            let (n, p) = (k1 - k0, c.p);
            if n == 0 {
                continue;
            }
            let z = &b.zg[k0 * pmax..k0 * pmax + n * p];
            let t = &tg[k0..k1];
            let ranges = c.ranges().collect_array();
            // Each range's word rows of dW, disjoint.
            let mut dws: [&mut [f32]; GROUPS] = Default::default();
            let mut dw_rest = dw;
            for (g, r) in ranges.iter().enumerate() {
                if let Some((r0, r1)) = r {
                    let (a, z) = std::mem::take(&mut dw_rest).split_at_mut((r1 - r0) * p);
                    dws[g] = a;
                    dw_rest = z;
                }
            }
            b.dz.par_chunks_mut(nt * pmax)
                .zip(b.slabs.par_chunks_mut(slab_len(h)))
                .zip(dws.into_par_iter())
                .zip(ranges)
                .for_each(|(((dz, slab), dw), r)| {
                    let Some((r0, r1)) = r else { return };
                    let rows = c.range_rows((r0, r1), z, t);
                    let mut slab = Slab::carve(slab, h);
                    rows.backward(
                        &mut slab,
                        p,
                        (&m[k0..k1], &s[k0..k1]),
                        scale,
                        &mut dz[..n * p],
                        dw,
                        &mut [],
                    );
                });
            // dZ: the ranges' partial products summed in range order.
            let (dz0, others) = b.dz.split_at_mut(nt * pmax);
            let dz0 = &mut dz0[..n * p];
            for (g, r) in ranges.iter().enumerate().skip(1) {
                if r.is_some() {
                    let part = &others[(g - 1) * nt * pmax..][..n * p];
                    for (a, &x) in dz0.iter_mut().zip(part) {
                        *a += x;
                    }
                }
            }
            let x = &xg[k0 * h..k1 * h];
            // dP += X^T dZ   [H,n] x [n,p]
            gemm::matmul_packed(
                MatMut::new(dproj, h, p),
                MatRef::new(x, n, h).t(),
                MatRef::new(dz0, n, p),
                Accum::Add,
                b.mm,
            );
            // dX = dZ P^T   [n,p] x [p,H]
            gemm::matmul_packed(
                MatMut::new(&mut dxg[k0 * h..k1 * h], n, h),
                MatRef::new(dz0, n, p),
                MatRef::new(c.proj, h, p).t(),
                Accum::Replace,
                b.mm,
            );
        }
    }
}

/// The ranges of a cluster as an array of [`GROUPS`] (empty ones `None`), to zip with the
/// groups' buffers.
trait CollectArray {
    fn collect_array(self) -> [Option<(usize, usize)>; GROUPS];
}

impl<I: Iterator<Item = (usize, usize)>> CollectArray for I {
    fn collect_array(self) -> [Option<(usize, usize)>; GROUPS] {
        let mut out = [None; GROUPS];
        for (o, r) in out.iter_mut().zip(self) {
            *o = Some(r);
        }
        out
    }
}

impl AdaptiveSoftmax<'_> {
    /// Sizes `s` for [`Head::log_probs`] over `rows` positions (allocating only when it
    /// grows).
    fn reserve(&self, s: &mut Scratch, rows: usize) {
        let (h, k, pmax) = (self.h, self.k, self.pmax());
        let outs = self.head.v;
        let f = self.head.scratch_len(rows).max(outs);
        grow(&mut s.f, f);
        for v in [&mut s.idx, &mut s.rowof, &mut s.slot, &mut s.tg] {
            grow(v, rows);
        }
        for v in [&mut s.ts, &mut s.ts1] {
            grow(v, rows);
        }
        grow(&mut s.offsets, k + 1);
        grow(&mut s.m, rows);
        grow(&mut s.tl, rows);
        grow(&mut s.sum, rows);
        grow(&mut s.xg, rows * h);
        grow(&mut s.slab, GROUPS * slab_len(h));
        grow(&mut s.zg, rows * pmax);
        grow(&mut s.gm, GROUPS * rows);
        grow(&mut s.gs, GROUPS * rows);
        grow(&mut s.gtl, GROUPS * rows);
        grow(&mut s.mm, Self::mm_len(h, pmax, rows.max(1)));
    }

    /// [`Self::reserve`] for one row, and the products of a whole cluster's logits for it
    /// ([`Self::adaptive_log_prob_rows`], sampling).
    fn reserve_rows(&self, s: &mut Scratch) {
        self.reserve(s, 1);
        let most = self
            .clusters()
            .iter()
            .map(|c| gemm::scratch_len(1, c.p, c.words(), true).max(c.words() + c.p))
            .max()
            .unwrap_or(0);
        grow(&mut s.mm, most);
    }

    /// `out[i] = ln p(targets[i] | hs[i])` with the training forward's kernels and ranges
    /// (so its bits), `s` sized by [`Self::reserve`].
    fn adaptive_log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], s: &mut Scratch) {
        let (h, rows, k) = (self.h, targets.len(), self.k);
        for (t, &w) in s.ts[..rows].iter_mut().zip(targets) {
            *t = w as i32;
        }
        let mut g = Gather {
            ts1: &mut s.ts1[..rows],
            order: &mut s.rowof[..rows],
            slot: &mut s.slot[..rows],
            offsets: &mut s.offsets[..=k],
            tg: &mut s.tg[..rows],
        };
        let total = self.gather(&s.ts[..rows], &mut g);
        for (i, &t1) in s.idx[..rows].iter_mut().zip(&s.ts1[..rows]) {
            *i = t1 as u32;
        }
        self.head.log_probs_into(hs, &s.idx[..rows], out, &mut s.f);
        for (at, &i) in s.rowof[..total].iter().enumerate() {
            let i = i as usize;
            s.xg[at * h..(at + 1) * h].copy_from_slice(&hs[i * h..(i + 1) * h]);
        }
        // The tails' losses land in `tl`.
        let mut b = TailBufs {
            zg: &mut s.zg,
            gm: &mut s.gm[..GROUPS * rows],
            gs: &mut s.gs[..GROUPS * rows],
            gtl: &mut s.gtl[..GROUPS * rows],
            dz: &mut [],
            slabs: &mut s.slab,
            mm: &mut s.mm,
        };
        self.tails_forward(
            &s.xg[..total * h],
            &s.offsets[..=k],
            &s.tg[..total],
            (&mut s.m[..total], &mut s.sum[..total], &mut s.tl[..total]),
            &mut b,
        );
        for at in 0..total {
            out[s.rowof[at] as usize] -= s.tl[at];
        }
    }

    /// `out [rows, V]`: every word's log-probability for `hs [rows, H]` (the whole
    /// distribution), `s` sized by [`Self::reserve`].
    fn adaptive_log_prob_rows(&self, hs: &[f32], rows: usize, out: &mut [f32], s: &mut Scratch) {
        let (h, v, sl) = (self.h, self.v, self.shortlist());
        let outs = self.head.v;
        for r in 0..rows {
            let f = &mut s.f[..outs];
            self.head.logits(&hs[r * h..(r + 1) * h], 1, f);
            log_softmax(f);
            out[r * v..r * v + sl].copy_from_slice(&f[..sl]);
            for (i, c) in self.clusters().iter().enumerate() {
                let p = c.p;
                let z = &mut s.zg[..p];
                gemm::matmul_packed(
                    MatMut::new(z, 1, p),
                    MatRef::new(&hs[r * h..(r + 1) * h], 1, h),
                    MatRef::new(c.proj, h, p),
                    Accum::Replace,
                    &mut s.mm,
                );
                let seg = &mut out[r * v + c.start..r * v + c.end];
                gemm::matmul_packed(
                    MatMut::new(seg, 1, c.words()),
                    MatRef::new(z, 1, p),
                    MatRef::new(c.w, c.words(), p).t(),
                    Accum::Replace,
                    &mut s.mm,
                );
                let lse = super::log_sum_exp(seg);
                let lp1 = f[sl + i] as f64;
                for x in seg.iter_mut() {
                    *x = (*x as f64 - lse + lp1) as f32;
                }
            }
        }
    }
}

fn grow<T: Default + Clone>(v: &mut Vec<T>, n: usize) {
    if v.len() < n {
        v.resize(n, T::default());
    }
}

impl Head for AdaptiveSoftmax<'_> {
    fn log_probs(&self, hs: &[f32], targets: &[u32], out: &mut [f32], s: &mut Scratch) {
        self.reserve(s, targets.len());
        self.adaptive_log_probs(hs, targets, out, s);
    }

    fn log_prob_rows(&self, hs: &[f32], rows: usize, out: &mut [f32], s: &mut Scratch) {
        self.reserve_rows(s);
        self.adaptive_log_prob_rows(hs, rows, out, s);
    }

    fn sample(&self, h: &[f32], draw: &Draw<'_>, s: &mut SampleScratch, u: f64) -> Option<u32> {
        self.reserve_rows(&mut s.head);
        if let Some(pick) = self.sample_two_stage(h, draw, s, u) {
            return pick;
        }
        let mut lp = std::mem::take(&mut s.logits);
        lp.resize(self.v, 0.0);
        self.adaptive_log_prob_rows(h, 1, &mut lp, &mut s.head);
        let pick = sample_logits(&lp, draw, s, u);
        s.logits = lp;
        pick
    }
}

impl AdaptiveSoftmax<'_> {
    /// The head-then-cluster draw ([`sample_factored`]); `None` where it does not apply.
    fn sample_two_stage(
        &self,
        h: &[f32],
        draw: &Draw<'_>,
        s: &mut SampleScratch,
        u: f64,
    ) -> Option<Option<u32>> {
        let outs = self.head.v;
        let SampleScratch {
            logits,
            weights,
            head: sc,
            ..
        } = s;
        let f = &mut sc.f[..outs];
        self.head.logits(h, 1, f);
        let groups = |i: usize| (self.clusters[i].start, self.clusters[i].end);
        let mm = &mut sc.mm;
        let lp = |i: usize, buf: &mut Vec<f32>| self.cluster_log_probs(h, i, buf, mm);
        sample_factored(
            f,
            self.shortlist(),
            (self.k, groups),
            lp,
            draw,
            (weights, logits),
            u,
        )
    }

    /// Cluster `i`'s log-softmax over its words for state `h [H]`, at the front of `buf`.
    fn cluster_log_probs(&self, h: &[f32], i: usize, buf: &mut Vec<f32>, mm: &mut [f32]) {
        let c = &self.clusters[i];
        let (n, p) = (c.words(), c.p);
        buf.resize(n + p, 0.0);
        let (seg, z) = buf.split_at_mut(n);
        gemm::matmul_packed(
            MatMut::new(z, 1, p),
            MatRef::new(h, 1, self.h),
            MatRef::new(c.proj, self.h, p),
            Accum::Replace,
            mm,
        );
        gemm::matmul_packed(
            MatMut::new(seg, 1, n),
            MatRef::new(z, 1, p),
            MatRef::new(c.w, n, p).t(),
            Accum::Replace,
            mm,
        );
        log_softmax(seg);
    }
}
