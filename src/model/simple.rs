//! The model: `TimeEmbedding -> L x (TimeRNN | TimeLSTM | GRU) -> TimeAffine ->
//! TimeSoftmaxWithLoss`, with inverted dropout and optional weight tying, and the book's
//! stateful `SimpleRnnlm` object around it.

use rand::SeedableRng;

use rayon::prelude::*;

use super::config::{Config, Softmax, MAX_LAYERS};
use super::output_grad::{self, StripGrads};
use super::params::Params;
use super::workspace::{Acts, ClassBufs, Workspace};
use crate::cells::{self, Buffers, Dims, GradInputs, LayerRows, StepWeights};
use crate::error::{Error, Result};
use crate::gemm::{self, Accum, MatMut, MatRef, Packed, Par};
use crate::heads::adaptive::{AdaptiveSoftmax, TailBufs};
use crate::heads::class::{ClassSoftmax, Gather, Keep};
use crate::heads::full::FullSoftmax;
use crate::heads::Loss;
use crate::kernels::dropout::{self, DropoutKey};
use crate::layers::{embedding, softmax_loss};
use crate::mem::check_memory;
use crate::par::on_worker;

/// Forward pass over one batch; returns the mean cross-entropy over unmasked positions.
///
/// `xs [N,T]` are input ids, `ts [N,T]` target ids (`-1` masks a position). In a training
/// workspace the gradient of the loss w.r.t. the logits is computed in the same pass, ready
/// for [`backward`], and dropout (if set, see [`Workspace::set_dropout`]) is applied. The
/// carried state advances to the last step's.
///
/// # Errors
/// If a buffer has the wrong length, or an id is outside the vocabulary (nothing is changed).
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::{model::simple::forward, Config, Params, Workspace};
/// let cfg = Config::new(10, 4, 6).unwrap();
/// let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let mut ws = Workspace::new(cfg, 1, 3, false).unwrap();
/// let loss = forward(&params, &mut ws, &[1, 2, 3], &[2, 3, -1]).unwrap(); // last target masked
/// assert!((loss - 10f32.ln()).abs() < 0.05); // near ln V at initialisation
/// let before = ws.clone();
/// assert!(forward(&params, &mut ws, &[1, 2, 10], &[2, 3, 4]).is_err()); // id 10 >= V
/// assert_eq!((ws.state(), ws.hidden()), (before.state(), before.hidden())); // untouched
/// ```
pub fn forward(params: &Params, ws: &mut Workspace, xs: &[u32], ts: &[i32]) -> Result<f32> {
    check_batch(params, ws, xs, ts)?;
    ws.xs.copy_from_slice(xs);
    ws.ts.copy_from_slice(ts);
    Ok(on_worker(|| forward_loaded(params, ws)))
}

/// Multiply-adds per batch below which a pass runs as one block on the calling thread.
const PARALLEL_MIN_MACS: usize = 1_000_000;

/// Batch rows per parallel block: one block per thread once the batch is worth splitting.
/// Every row is computed by the same instruction sequence whatever block it is in, so the
/// split never changes a result.
fn rows_per_block(ws: &Workspace) -> usize {
    let c = ws.cfg;
    let gh = c.cell.gates() * c.hidden_size;
    let per_token: usize = (0..c.layers)
        .map(|l| (c.layer_input(l) + c.hidden_size) * gh)
        .sum::<usize>()
        + c.hidden_size * c.vocab_size;
    let blocks = if ws.n * ws.t * per_token < PARALLEL_MIN_MACS {
        1
    } else {
        rayon::current_num_threads()
    };
    ws.n.div_ceil(blocks).max(1)
}

/// The sizes a [`Block`] is split by.
#[derive(Clone, Copy)]
struct Shape {
    t: usize,
    h: usize,
    d: usize,
    v: usize,
    layers: usize,
    bufs: Buffers,
}

/// One rayon task's batch rows `r0..r0+m` of every buffer: the workspace split with
/// `split_at_mut`, so each task holds plain disjoint slices.
struct Block<'a> {
    r0: usize,
    m: usize,
    xs: &'a [u32],
    ts: &'a [i32],
    /// `[m,T,D]`
    emb: &'a mut [f32],
    /// `[m,T,V]`
    logits: &'a mut [f32],
    /// `[m,T]`
    losses: &'a mut [f32],
    /// `[m,T,H]` (training, cells not differentiated in place)
    dh: &'a mut [f32],
    /// `[m,T,D]` (training)
    demb: &'a mut [f32],
    /// `[m, scratch*H]` (training)
    scratch: &'a mut [f32],
    /// Each layer's dropout output `[m,T,H]` (training with dropout).
    drops: [&'a mut [f32]; MAX_LAYERS],
    layers: [LayerRows<'a>; MAX_LAYERS],
}

/// Splits a slice at `at` unless it is empty (buffers a configuration does not use).
fn split<T>(s: &mut [T], at: usize) -> (&mut [T], &mut [T]) {
    if s.is_empty() {
        (&mut [], &mut [])
    } else {
        s.split_at_mut(at)
    }
}

impl<'a> Block<'a> {
    /// All the rows of the workspace's buffers.
    fn whole(acts: Acts<'a>, n: usize, sh: &Shape) -> Self {
        let nl = sh.layers;
        let mut layers: [LayerRows<'a>; MAX_LAYERS] = std::array::from_fn(|_| LayerRows::default());
        for (rows, la) in layers.iter_mut().zip(acts.layers).take(nl) {
            rows.gates = la.gates;
            rows.hs = la.hs;
            rows.hprev = la.hprev;
            rows.aux = la.aux;
            rows.row_aux = la.row_aux;
        }
        // The carried state is [S,L,N,H]: chunk s*L + l is state vector s of layer l.
        for (k, chunk) in acts.state.chunks_mut(n * sh.h).enumerate() {
            layers[k % nl].state[k / nl] = chunk;
        }
        let mut drops: [&'a mut [f32]; MAX_LAYERS] = std::array::from_fn(|_| Default::default());
        if !acts.drops.is_empty() {
            for (d, chunk) in drops.iter_mut().zip(acts.drops.chunks_mut(n * sh.t * sh.h)) {
                *d = chunk;
            }
        }
        Block {
            r0: 0,
            m: n,
            xs: acts.xs,
            ts: acts.ts,
            emb: acts.emb,
            logits: acts.logits,
            losses: acts.losses,
            dh: acts.dh,
            demb: acts.demb,
            scratch: acts.scratch,
            drops,
            layers,
        }
    }

    /// The first `rows` batch rows, and the rest.
    fn split(self, rows: usize, sh: &Shape) -> (Self, Self) {
        let (t, h) = (sh.t, sh.h);
        let pos = rows * t;
        let (xs0, xs1) = self.xs.split_at(pos);
        let (ts0, ts1) = self.ts.split_at(pos);
        let (e0, e1) = self.emb.split_at_mut(pos * sh.d);
        let (l0, l1) = self.logits.split_at_mut(pos * sh.v);
        let (s0, s1) = self.losses.split_at_mut(pos);
        let (dh0, dh1) = split(self.dh, pos * h);
        let (de0, de1) = split(self.demb, pos * sh.d);
        let (sc0, sc1) = split(self.scratch, rows * sh.bufs.scratch * h);
        let mut drops0: [&'a mut [f32]; MAX_LAYERS] = std::array::from_fn(|_| Default::default());
        let mut drops1 = self.drops;
        for (d0, d1) in drops0.iter_mut().zip(drops1.iter_mut()).take(sh.layers) {
            let (a, b) = split(std::mem::take(d1), pos * h);
            (*d0, *d1) = (a, b);
        }
        let mut layers0: [LayerRows<'a>; MAX_LAYERS] =
            std::array::from_fn(|_| LayerRows::default());
        let mut layers1 = self.layers;
        for (a, b) in layers0.iter_mut().zip(layers1.iter_mut()).take(sh.layers) {
            (*a, *b) = std::mem::take(b).split_rows(rows, t, h, &sh.bufs);
        }
        (
            Block {
                r0: self.r0,
                m: rows,
                xs: xs0,
                ts: ts0,
                emb: e0,
                logits: l0,
                losses: s0,
                dh: dh0,
                demb: de0,
                scratch: sc0,
                drops: drops0,
                layers: layers0,
            },
            Block {
                r0: self.r0 + rows,
                m: self.m - rows,
                xs: xs1,
                ts: ts1,
                emb: e1,
                logits: l1,
                losses: s1,
                dh: dh1,
                demb: de1,
                scratch: sc1,
                drops: drops1,
                layers: layers1,
            },
        )
    }
}

/// Runs `f` on blocks of `rb` batch rows (the last may be shorter), in parallel: the block is
/// halved (on a block boundary) and both halves run under `rayon::join`.
fn for_each_block<F: Fn(Block<'_>) + Sync>(b: Block<'_>, rb: usize, sh: &Shape, f: &F) {
    if b.m <= rb {
        return f(b);
    }
    let at = b.m.div_ceil(rb) / 2 * rb;
    let (x, y) = b.split(at, sh);
    rayon::join(
        || for_each_block(x, rb, sh, f),
        || for_each_block(y, rb, sh, f),
    );
}

/// The (first) softmax's weights as a `[H,V]` view: `affine.W`, or `embed.W` transposed when
/// tied; for a class head `class.W [H,C]`.
fn output_weights(params: &Params) -> MatRef<'_> {
    let c = params.config();
    match (params.class_w(), params.affine_w()) {
        (Some(w), _) => MatRef::new(w, c.hidden_size, c.softmax.outputs(c.vocab_size)),
        (None, Some(w)) => MatRef::new(w, c.hidden_size, c.vocab_size),
        (None, None) => MatRef::new(params.embed_w(), c.vocab_size, c.hidden_size).t(),
    }
}

/// The (first) softmax over the packed weights `w` (and, in training, `wt`); `zeros` stands
/// in for the bias of an adaptive head without one.
fn first_softmax<'a>(
    params: &'a Params,
    w: &'a [f32],
    wt: &'a [f32],
    wt_block: usize,
    zeros: &'a [f32],
) -> FullSoftmax<'a> {
    let c = params.config();
    let (h, outs) = (c.hidden_size, c.softmax.outputs(c.vocab_size));
    let bias = match c.softmax {
        Softmax::Full => params.affine_b(),
        _ if c.softmax.first_bias() => params.class_b(),
        _ => &zeros[..outs],
    };
    FullSoftmax {
        w: Packed::new(w, h, outs),
        wt,
        wt_block,
        bias,
        h,
        v: outs,
    }
}

/// Rows of a factorised head's first softmax per parallel task.
const CLASS_ROWS: usize = 64;

/// A factorised head's first softmax over all `N*T` positions (`x [N*T,H]`, targets `ts1`),
/// in parallel row chunks.
fn first_forward(
    first: &FullSoftmax<'_>,
    x: &[f32],
    ts1: &[i32],
    (logits, losses): (&mut [f32], &mut [f32]),
    loss: Loss,
) {
    let (h, c) = (first.h, first.v);
    logits
        .par_chunks_mut(CLASS_ROWS * c)
        .zip(x.par_chunks(CLASS_ROWS * h))
        .zip(ts1.par_chunks(CLASS_ROWS))
        .zip(losses.par_chunks_mut(CLASS_ROWS))
        .for_each(|(((l, x), t), lo)| first.forward_rows(x, t, l, lo, loss));
}

/// `xg` slot `k` = row `order[k]` of `x [N*T,H]`: the positions gathered for a second stage.
fn gather_rows(xg: &mut [f32], order: &[u32], x: &[f32], h: usize) {
    xg.par_chunks_mut(CLASS_ROWS * h)
        .zip(order.par_chunks(CLASS_ROWS))
        .for_each(|(rows, order)| {
            for (row, &p) in rows.chunks_exact_mut(h).zip(order) {
                let p = p as usize;
                row.copy_from_slice(&x[p * h..(p + 1) * h]);
            }
        });
}

/// Adds each gathered slot's second-stage loss to its position's.
fn add_slot_losses(losses: &mut [f32], slot: &[u32], slot_loss: &[f32]) {
    for (l, &k) in losses.iter_mut().zip(slot) {
        if k != u32::MAX {
            *l += slot_loss[k as usize];
        }
    }
}

/// A factorised head's backward through its first softmax (`top` overwritten), from the
/// gradient the forward left in `logits`.
fn first_backward(first: &FullSoftmax<'_>, logits: &[f32], top: &mut [f32]) {
    let (h, c) = (first.h, first.v);
    top.par_chunks_mut(CLASS_ROWS * h)
        .zip(logits.par_chunks(CLASS_ROWS * c))
        .for_each(|(d, l)| first.backward_rows(l, d));
}

/// `top` row `p` += `dxg` slot `slot[p]` (where gathered).
fn scatter_add_rows(top: &mut [f32], slot: &[u32], dxg: &[f32], h: usize) {
    top.par_chunks_mut(CLASS_ROWS * h)
        .zip(slot.par_chunks(CLASS_ROWS))
        .for_each(|(rows, slots)| {
            for (row, &k) in rows.chunks_exact_mut(h).zip(slots) {
                if k != u32::MAX {
                    let k = k as usize;
                    for (d, &g) in row.iter_mut().zip(&dxg[k * h..(k + 1) * h]) {
                        *d += g;
                    }
                }
            }
        });
}

/// The gather buffers of `cb`.
fn gather_bufs(cb: &mut ClassBufs) -> Gather<'_> {
    Gather {
        ts1: &mut cb.ts1,
        order: &mut cb.order,
        slot: &mut cb.slot,
        offsets: &mut cb.offsets,
        tg: &mut cb.tg,
    }
}

/// An adaptive head's tail buffers in `cb` (a macro: the other fields of `cb` stay free to
/// borrow).
macro_rules! tail_bufs {
    ($cb:expr) => {
        TailBufs {
            zg: &mut $cb.zg,
            gm: &mut $cb.gm,
            gs: &mut $cb.gs,
            gtl: &mut $cb.gtl,
            dz: &mut $cb.dz,
            slabs: &mut $cb.slabs,
            mm: &mut $cb.mm,
        }
    };
}

/// A factorised head as training runs it: a first softmax over all positions, then a
/// second stage (a class's words, an adaptive head's cluster) over the positions gathered by
/// their target's group.
// Built once per pass on the stack (borrowed views, ~1 KB for an adaptive head's cluster
// table): boxing would allocate in a loop that must not.
#[allow(clippy::large_enum_variant)]
enum Factored<'a> {
    Class(ClassSoftmax<'a>),
    Adaptive(AdaptiveSoftmax<'a>),
}

impl<'a> Factored<'a> {
    /// The head of `params` (a factorised one) around its first softmax.
    fn new(params: &'a Params, first: FullSoftmax<'a>) -> Self {
        if params.config().softmax.is_adaptive() {
            Factored::Adaptive(AdaptiveSoftmax::new(params, first))
        } else {
            Factored::Class(ClassSoftmax::new(params, first))
        }
    }

    fn first(&self) -> &FullSoftmax<'a> {
        match self {
            Factored::Class(c) => &c.classes,
            Factored::Adaptive(a) => &a.head,
        }
    }

    /// The forward over all `N*T` positions (`x [N*T,H]` the top layer's output): the first
    /// softmax in parallel row chunks, then the second stage over the gathered positions.
    /// Writes per-position losses.
    fn forward(
        &self,
        x: &[f32],
        ts: &[i32],
        (logits, losses): (&mut [f32], &mut [f32]),
        loss: Loss,
        cb: &mut ClassBufs,
    ) {
        let h = self.first().h;
        let total = match self {
            Factored::Class(c) => c.gather(ts, &mut gather_bufs(cb)),
            Factored::Adaptive(a) => a.gather(ts, &mut gather_bufs(cb)),
        };
        cb.count = total;
        first_forward(self.first(), x, &cb.ts1, (logits, &mut *losses), loss);
        gather_rows(&mut cb.xg[..total * h], &cb.order[..total], x, h);
        let (xg, offsets, tg) = (&cb.xg[..total * h], &cb.offsets, &cb.tg[..total]);
        let msl = (
            &mut cb.m[..total],
            &mut cb.s[..total],
            &mut cb.loss[..total],
        );
        match self {
            Factored::Class(c) => {
                let keep = match loss {
                    Loss::Train { scale } => Some(Keep {
                        buf: &mut cb.kept,
                        offsets: &mut cb.goff,
                        scale,
                    }),
                    Loss::Eval => None,
                };
                c.words_forward(xg, offsets, tg, msl, &mut cb.slabs, keep);
            }
            Factored::Adaptive(a) => a.tails_forward(xg, offsets, tg, msl, &mut tail_bufs!(cb)),
        }
        add_slot_losses(losses, &cb.slot, &cb.loss);
    }

    /// The backward of the loss scaled by `scale` (`1/count`): `top [N*T,H] = dL/dx`
    /// (overwritten), the second stage's gradients added into `grads` (a class head's word
    /// rows, `embed.W`'s when tied; an adaptive head's tails). The first softmax's weight
    /// gradient is the caller's.
    fn backward(
        &self,
        logits: &[f32],
        top: &mut [f32],
        cb: &mut ClassBufs,
        scale: f32,
        grads: &mut Params,
    ) {
        let (h, total) = (self.first().h, cb.count);
        first_backward(self.first(), logits, top);
        let (xg, offsets, tg) = (&cb.xg[..total * h], &cb.offsets, &cb.tg[..total]);
        let ms = (&cb.m[..total], &cb.s[..total]);
        let dxg = &mut cb.dxg[..total * h];
        match self {
            Factored::Class(c) => {
                let words = if grads.config().tied {
                    grads.embed_and_affine_b_mut()
                } else {
                    grads.affine_rows_mut().split_at_mut(c.v * h)
                };
                let kept = Some((&cb.kept[..], &cb.goff[..]));
                c.words_backward(xg, offsets, tg, ms, scale, dxg, words, &mut cb.slabs, kept);
            }
            Factored::Adaptive(a) => {
                let mut b = tail_bufs!(cb);
                a.tails_backward(
                    xg,
                    offsets,
                    tg,
                    ms,
                    scale,
                    dxg,
                    grads.affine_rows_mut(),
                    &mut b,
                );
            }
        }
        scatter_add_rows(top, &cb.slot, &cb.dxg, h);
    }
}

fn forward_loaded(params: &Params, ws: &mut Workspace) -> f32 {
    let cfg = ws.cfg;
    let cell = cfg.cell.imp();
    let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
    let (nl, gh) = (cfg.layers, cfg.cell.gates() * h);
    let (n, t) = (ws.n, ws.t);
    let rb = rows_per_block(ws);
    let par = Par::Tasks(n.div_ceil(rb));
    let count = ws.loss_count();
    let pos0 = ws.position0();
    let loss = match ws.train {
        true => Loss::Train {
            scale: if count == 0 { 0.0 } else { 1.0 / count as f32 },
        },
        false => Loss::Eval,
    };
    let (p_drop, step, seed) = (
        if ws.dropout_on() { ws.dropout } else { 0.0 },
        ws.dropout_step,
        ws.dropout_seed,
    );
    if p_drop > 0.0 {
        ws.dropout_step += 1;
    }
    let sh = Shape {
        t,
        h,
        d,
        // The width of the logits buffer: the (first) softmax's.
        v: cfg.softmax.outputs(v),
        layers: nl,
        bufs: cell.buffers(ws.train),
    };
    let (acts, mut packs) = ws.split_mut();
    for (l, lp) in packs.layers[..nl].iter_mut().enumerate() {
        let (p, dl) = (params.layer(l), cfg.layer_input(l));
        gemm::pack_rows(lp.wx, &MatRef::new(p.wx, dl, gh), 0, dl, par);
        cell.pack_recurrent(p.wh, h, lp.wh, &mut []);
    }
    gemm::pack_rows(packs.w, &output_weights(params), 0, h, par);
    // Zeros for an adaptive head without a bias, out of the workspace while it is borrowed.
    let zeros = std::mem::take(&mut acts.class.zero_b);
    let head = first_softmax(params, packs.w, &[], gemm::KC, &zeros);
    let full = cfg.softmax.is_full();
    let lpacks = &packs.layers[..nl];
    let embed_w = params.embed_w();
    // The projection `x Wx` lands in `hs` for a cell whose pre-activation is `hs`.
    let proj = if cell.in_place() { h } else { gh };
    for_each_block(Block::whole(acts, n, &sh), rb, &sh, &|b: Block<'_>| {
        let Block {
            r0,
            m,
            xs,
            ts,
            emb,
            logits,
            losses,
            mut drops,
            mut layers,
            ..
        } = b;
        // p0: the block's first position in the whole (data-parallel) batch, for the masks.
        let (r, p0) = (m * t, pos0 + r0 * t);
        embedding::forward(emb, xs, embed_w, d);
        if p_drop > 0.0 {
            dropout::apply(emb, DropoutKey::new(seed, step, 0), (p0 * d) as u64, p_drop);
        }
        let dims = Dims { m, t, h };
        let mut x: &[f32] = emb;
        for (l, (rows, drop)) in layers.iter_mut().zip(drops.iter_mut()).take(nl).enumerate() {
            let (lp, pl, dl) = (&lpacks[l], params.layer(l), cfg.layer_input(l));
            let target: &mut [f32] = if cell.in_place() { rows.hs } else { rows.gates };
            // x Wx for every step of the block   [r,D_l] x [D_l,G*H]
            gemm::gemm_packed(
                MatMut::new(target, r, proj),
                MatRef::new(x, r, dl),
                Packed::new(lp.wx, dl, proj),
                Accum::Replace,
            );
            let w = StepWeights {
                packed: lp.wh,
                b: pl.b,
                bh: pl.bh,
            };
            cells::forward_rows(cell, rows, &w, dims);
            x = if p_drop > 0.0 {
                let key = DropoutKey::new(seed, step, site_after_layer(l));
                dropout::apply_to(drop, rows.hs, key, (p0 * h) as u64, p_drop);
                &**drop
            } else {
                &*rows.hs
            };
        }
        if full {
            head.forward_rows(x, ts, logits, losses, loss);
        }
    });
    if !full {
        // The class head runs over the whole batch at once (its products gather positions
        // by class across rows).
        let (acts, packs) = ws.split_mut();
        let x: &[f32] = if p_drop > 0.0 {
            &acts.drops[(nl - 1) * n * t * h..nl * n * t * h]
        } else {
            acts.layers[nl - 1].hs
        };
        let head = Factored::new(
            params,
            first_softmax(params, packs.w, &[], gemm::KC, &zeros),
        );
        let out = (&mut *acts.logits, &mut *acts.losses);
        head.forward(x, acts.ts, out, loss, acts.class);
    }
    ws.class.zero_b = zeros;
    ws.ready_for_backward = ws.train;
    softmax_loss::mean(ws.position_losses(), count)
}

/// Dropout sites: 0 after the embedding, `l + 1` after layer `l` (so `L` is before the output
/// layer).
fn site_after_layer(l: usize) -> u32 {
    l as u32 + 1
}

fn backward_checked(params: &Params, ws: &mut Workspace, grads: &mut Params, zero_all: bool) {
    let cfg = ws.cfg;
    let cell = cfg.cell.imp();
    let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
    let (nl, gh) = (cfg.layers, cfg.cell.gates() * h);
    let (n, t) = (ws.n, ws.t);
    let nt = n * t;
    let rb = rows_per_block(ws);
    let par = Par::Tasks(n.div_ceil(rb));
    // The step of the last forward's masks.
    let p_drop = if ws.dropout_on() { ws.dropout } else { 0.0 };
    let (step, seed) = (ws.dropout_step.wrapping_sub(1), ws.dropout_seed);
    let dropped = p_drop > 0.0;
    let strip = ws.out_strip;
    let sh = Shape {
        t,
        h,
        d,
        // The width of the logits buffer: the (first) softmax's.
        v: cfg.softmax.outputs(v),
        layers: nl,
        bufs: cell.buffers(true),
    };
    // Every gradient below accumulates (`+=`), so each tensor may have several sources
    // (tying: the output layer and the embedding both feed embed.W) with no special case.
    if zero_all {
        zero(grads.as_mut_slice());
    }

    // W^T in K blocks over V (the output strips on the strip path), so each block's panels
    // stay in cache during dY W^T.
    let wt_block = if strip > 0 { strip } else { gemm::KC };
    let count = ws.loss_count();
    let pos0 = ws.position0();
    let zeros = std::mem::take(&mut ws.class.zero_b);
    let (mut acts, mut packs) = ws.split_mut();
    FullSoftmax::pack_wt(packs.wt, &output_weights(params), wt_block, par);
    for (l, lp) in packs.layers[..nl].iter_mut().enumerate() {
        let (p, dl) = (params.layer(l), cfg.layer_input(l));
        gemm::pack_rows(lp.wxt, &MatRef::new(p.wx, dl, gh).t(), 0, gh, par);
        cell.pack_recurrent(p.wh, h, &mut [], lp.wht);
    }
    packs.tied_grad.fill(0.0);
    if strip > 0 {
        // The output layer first, by column strips of dY: dW complete, dX as partials that
        // the row blocks below add up (see model::output_grad).
        let top_layer = &mut acts.layers[nl - 1];
        let output_in: &[f32] = if dropped {
            &acts.drops[(nl - 1) * nt * h..nl * nt * h]
        } else {
            top_layer.hs
        };
        cells::transposed_into(packs.gemm_scratch, &[(output_in, h)], true, nt, par);
        let top: &mut [f32] = if cell.in_place() {
            top_layer.gates
        } else {
            acts.dh
        };
        let dw = if cfg.tied {
            &mut *packs.tied_grad
        } else {
            grads.affine_rows_mut()
        };
        let g = StripGrads {
            dy: acts.logits,
            xt: packs.gemm_scratch,
            wt_packed: packs.wt,
            dx: top,
            parts: packs.dx_parts,
            dw,
            dy_packed: packs.dy_packed,
        };
        output_grad::backward(g, (nt, h, v), strip);
    }
    let full = cfg.softmax.is_full();
    if !full {
        // The class head's dX for the whole batch first (as the strips' path does): its
        // products run over the positions gathered by class.
        let top_layer = &mut acts.layers[nl - 1];
        let top: &mut [f32] = if cell.in_place() {
            top_layer.gates
        } else {
            acts.dh
        };
        let first = first_softmax(params, packs.w, packs.wt, wt_block, &zeros);
        let scale = if count == 0 { 0.0 } else { 1.0 / count as f32 };
        Factored::new(params, first).backward(acts.logits, top, acts.class, scale, grads);
    }
    let head = first_softmax(params, packs.w, packs.wt, wt_block, &zeros);
    let (lpacks, dx_parts) = (&packs.layers[..nl], &*packs.dx_parts);
    for_each_block(Block::whole(acts, n, &sh), rb, &sh, &|b: Block<'_>| {
        let Block {
            r0,
            m,
            logits,
            dh,
            demb,
            scratch,
            mut layers,
            ..
        } = b;
        let (r, p0) = (m * t, r0 * t);
        // The masks' position in the whole (data-parallel) batch.
        let q0 = pos0 + p0;
        let dims = Dims { m, t, h };
        // The gradient w.r.t. the top layer's output: the tanh RNN differentiates in place in
        // its own `gates`; the other cells read it from `dh`.
        let top: &mut [f32] = if cell.in_place() {
            &mut *layers[nl - 1].gates
        } else {
            &mut *dh
        };
        if strip > 0 {
            output_grad::add_parts(top, dx_parts, (nt, h), p0);
        } else if full {
            head.backward_rows(logits, top);
        }
        if dropped {
            let key = DropoutKey::new(seed, step, site_after_layer(nl - 1));
            dropout::apply(top, key, (q0 * h) as u64, p_drop);
        }
        for l in (0..nl).rev() {
            let (below, rest) = layers.split_at_mut(l);
            let rows = &mut rest[0];
            let (lp, pl, dl) = (&lpacks[l], params.layer(l), cfg.layer_input(l));
            let w = StepWeights {
                packed: lp.wht,
                b: pl.b,
                bh: pl.bh,
            };
            cells::backward_rows(cell, rows, dh, scratch, &w, dims);
            // The input's gradient, dA Wx^T   [r,GH] x [GH,D_l]: into the layer below's
            // output gradient, or the embedding's.
            let out: &mut [f32] = match l {
                0 => &mut *demb,
                _ if cell.in_place() => &mut *below[l - 1].gates,
                _ => &mut *dh,
            };
            gemm::gemm_packed(
                MatMut::new(out, r, dl),
                MatRef::new(rows.gates, r, gh),
                Packed::new(lp.wxt, gh, dl),
                Accum::Replace,
            );
            if dropped {
                let key = DropoutKey::new(seed, step, l as u32);
                dropout::apply(out, key, (q0 * dl) as u64, p_drop);
            }
        }
    });

    // Weight gradients, sums over all N*T rows, each one product (see cells::add_outer) that
    // adds straight into adjacent tensors of the flat gradient buffer.
    let (acts, packs) = ws.split_mut();
    let output = |l: usize| -> &[f32] {
        if dropped {
            &acts.drops[l * nt * h..(l + 1) * nt * h]
        } else {
            acts.layers[l].hs
        }
    };
    if strip == 0 {
        let head = first_softmax(params, packs.w, packs.wt, wt_block, &zeros);
        let dw = if !full {
            grads.class_rows_mut()
        } else if cfg.tied {
            &mut *packs.tied_grad
        } else {
            grads.affine_rows_mut()
        };
        let bias = cfg.softmax.first_bias();
        head.weight_grads(
            output(nl - 1),
            acts.logits,
            dw,
            bias,
            packs.gemm_scratch,
            par,
        );
    }
    for l in 0..nl {
        let la = &acts.layers[l];
        let g = GradInputs {
            x: if l == 0 { acts.emb } else { output(l - 1) },
            hprev: la.hprev,
            gates: la.gates,
            aux: la.aux,
            nt,
            dl: cfg.layer_input(l),
            h,
        };
        cell.weight_grads(&g, grads.layer_rows_mut(l), packs.gemm_scratch, par);
    }
    let (de, db) = grads.embed_and_affine_b_mut();
    if cfg.tied && full {
        // The output layer's dW [H,V] is embed.W's gradient transposed; its bias row is
        // affine.b's. The embedding's scatter-add then accumulates on top.
        for (b, &g) in db.iter_mut().zip(&packs.tied_grad[h * v..]) {
            *b += g;
        }
        add_transposed(de, &packs.tied_grad[..h * v], h, v);
    }
    embedding::backward(de, acts.xs, acts.demb, d);
    ws.class.zero_b = zeros;
}

/// Zeroes a buffer, in parallel chunks (measured faster than one thread even at the book's
/// ch05 size, 100k floats).
fn zero(x: &mut [f32]) {
    x.par_chunks_mut(1 << 16).for_each(|c| c.fill(0.0));
}

/// `out [C,R] += a^T` for `a [R,C]`, in cache-sized tiles.
fn add_transposed(out: &mut [f32], a: &[f32], rows: usize, cols: usize) {
    const TILE: usize = 32;
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(bi, chunk)| {
            let c0 = bi * TILE;
            let cn = chunk.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    for c in 0..cn {
                        chunk[c * rows + r] += a[r * cols + c0 + c];
                    }
                }
            }
        });
}

/// Backward pass of the last [`forward`]: sets every tensor of `grads` to the gradient of the
/// mean loss (it zeroes `grads`, then every part of the model adds its share, as llm.c does).
///
/// The per-row part (`dY W^T`, each layer's reverse time loop and its input gradient
/// `dA Wx^T`, top layer first) runs in one parallel region over blocks of batch rows; the
/// weight gradients, which sum over all N*T rows, are then one large GEMM per layer (two for a
/// GRU) and one for the output layer, biases included, with a fixed summation order. With
/// tying, the output layer's gradient is added to `embed.W`'s.
///
/// # Errors
/// If `ws` is not a training workspace, no training forward preceded, or `grads` has another
/// configuration.
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::{model::simple::{backward, forward}, Config, Params, Workspace};
/// let cfg = Config::new(10, 4, 6).unwrap();
/// let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let (xs, ts) = ([1, 2, 3], [2, 3, 4]);
/// let mut ws = Workspace::new(cfg, 1, 3, true).unwrap();
/// let loss = forward(&params, &mut ws, &xs, &ts).unwrap();
/// let mut grads = Params::zeros(cfg);
/// backward(&params, &mut ws, &mut grads).unwrap();
/// // The gradient of affine.b[0] against a finite difference of the loss:
/// let mut moved = params.clone();
/// moved.affine_b_mut()[0] += 1e-2;
/// let mut fresh = Workspace::new(cfg, 1, 3, false).unwrap(); // from the zero state again
/// let moved_loss = forward(&moved, &mut fresh, &xs, &ts).unwrap();
/// assert!(((moved_loss - loss) / 1e-2 - grads.affine_b()[0]).abs() < 1e-3);
/// assert!(backward(&params, &mut ws, &mut grads).is_err()); // one backward per forward
/// ```
pub fn backward(params: &Params, ws: &mut Workspace, grads: &mut Params) -> Result<()> {
    check_backward(params, ws, grads)?;
    on_worker(|| backward_checked(params, ws, grads, true));
    Ok(())
}

/// What [`backward`] and [`SimpleRnnlm::backward`] need: a training workspace holding the
/// forward of these parameters, and gradients of the same configuration. Consumes the
/// forward.
fn check_backward(params: &Params, ws: &mut Workspace, grads: &Params) -> Result<()> {
    if !ws.train || !ws.ready_for_backward {
        return Err(Error::invalid(
            "backward",
            "needs a training workspace and a forward pass first",
        ));
    }
    if grads.config() != params.config() || params.config() != &ws.cfg {
        return Err(Error::invalid(
            "backward",
            "parameters, gradients and workspace have different configurations",
        ));
    }
    ws.ready_for_backward = false;
    Ok(())
}

/// The ranges of the flat gradient buffer that the backward of the batch in `ws` writes
/// (sorted, disjoint, merged): `embed.W`'s rows of the batch's input ids (and, tied to a
/// class head, of its target classes' words), the layers (and `class.*`), and the output
/// matrix and bias: all of them for the full softmax, the rows of the target classes for a
/// class head. `ids` and `rows` are scratch.
fn touched_ranges(
    params: &Params,
    ws: &Workspace,
    ids: &mut Vec<u32>,
    rows: &mut Vec<(usize, usize)>,
    out: &mut Vec<std::ops::Range<usize>>,
) {
    let cfg = params.config();
    let parts = Params::parts(cfg);
    let (d, h) = (cfg.wordvec_size, cfg.hidden_size);
    let class = cfg.softmax.is_class();
    out.clear();
    // Appends `r`, merged into the last range where they touch or overlap.
    fn add(out: &mut Vec<std::ops::Range<usize>>, r: std::ops::Range<usize>) {
        if r.is_empty() {
            return;
        }
        match out.last_mut() {
            Some(last) if last.end >= r.start => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    // The word rows of the classes this batch's targets fall in.
    rows.clear();
    if class {
        let o = &ws.class.offsets;
        for c in 0..o.len() - 1 {
            if o[c + 1] > o[c] {
                let r = params.class_range(c);
                rows.push((r.start, r.end));
            }
        }
    }
    if cfg.tied && !class {
        add(out, parts.embed.clone()); // the output layer's gradient reaches every row
    } else {
        ids.clear();
        ids.extend_from_slice(&ws.xs);
        ids.sort_unstable();
        ids.dedup();
        // Input rows, merged in order with the tied class rows.
        let tied_rows: &[(usize, usize)] = if cfg.tied { rows } else { &[] };
        let (mut i, mut j) = (0, 0);
        while i < ids.len() || j < tied_rows.len() {
            let take_id =
                j == tied_rows.len() || (i < ids.len() && (ids[i] as usize) < tied_rows[j].0);
            let (a, b) = if take_id {
                i += 1;
                (ids[i - 1] as usize, ids[i - 1] as usize + 1)
            } else {
                j += 1;
                tied_rows[j - 1]
            };
            // Overlaps (an input id inside a tied class) merge into the range before.
            add(out, a * d..b * d);
        }
    }
    add(out, parts.middle.clone());
    if cfg.softmax.is_adaptive() {
        // The clusters this batch's targets fall in (the head is in `middle`).
        let o = &ws.class.offsets;
        for i in 0..o.len() - 1 {
            if o[i + 1] > o[i] {
                add(out, params.tail_range(i));
            }
        }
    } else if !class {
        add(out, parts.out_w.clone());
        add(out, parts.out_b.clone());
    } else {
        if !cfg.tied {
            for &(a, b) in rows.iter() {
                add(out, parts.out_w.start + a * h..parts.out_w.start + b * h);
            }
        }
        for &(a, b) in rows.iter() {
            add(out, parts.out_b.start + a..parts.out_b.start + b);
        }
    }
}

/// The parts of the flat gradient a class head's backward zeroes itself (see
/// [`SimpleRnnlm::backward`]): the word rows (`words.W`, or `embed.W` when tied) and biases
/// of the classes `rows` (word ranges, from [`touched_ranges`]); sorted and disjoint.
fn class_owned(params: &Params, rows: &[(usize, usize)], out: &mut Vec<std::ops::Range<usize>>) {
    out.clear();
    let cfg = params.config();
    if !cfg.softmax.is_class() {
        return;
    }
    let parts = Params::parts(cfg);
    let h = cfg.hidden_size;
    let w0 = if cfg.tied {
        parts.embed.start
    } else {
        parts.out_w.start
    };
    out.extend(rows.iter().map(|&(a, b)| w0 + a * h..w0 + b * h));
    out.extend(
        rows.iter()
            .map(|&(a, b)| parts.out_b.start + a..parts.out_b.start + b),
    );
}

/// Calls `f` on each non-empty piece of the ranges `a` outside the ranges `b` (both sorted and
/// disjoint), in order.
fn for_each_difference(
    a: &[std::ops::Range<usize>],
    b: &[std::ops::Range<usize>],
    mut f: impl FnMut(std::ops::Range<usize>),
) {
    let mut j = 0;
    for r in a {
        let mut start = r.start;
        // Skip the ranges of b that end before this one starts.
        while j < b.len() && b[j].end <= start {
            j += 1;
        }
        let mut k = j;
        while k < b.len() && b[k].start < r.end {
            if b[k].start > start {
                f(start..b[k].start);
            }
            start = start.max(b[k].end);
            k += 1;
        }
        if start < r.end {
            f(start..r.end);
        }
    }
}

fn check_batch(params: &Params, ws: &Workspace, xs: &[u32], ts: &[i32]) -> Result<()> {
    if params.config() != &ws.cfg {
        return Err(Error::invalid(
            "forward",
            "parameters and workspace have different configurations",
        ));
    }
    for (what, len) in [("xs", xs.len()), ("ts", ts.len())] {
        if len != ws.n * ws.t {
            return Err(Error::Shape {
                what: what.into(),
                expected: vec![ws.n, ws.t],
                found: vec![len],
            });
        }
    }
    let v = ws.cfg.vocab_size;
    if let Some(&bad) = xs.iter().find(|&&x| x as usize >= v) {
        return Err(Error::invalid(
            "input id",
            format!("{bad} is outside the vocabulary (size {v})"),
        ));
    }
    if let Some(&bad) = ts
        .iter()
        .find(|&&x| x != softmax_loss::IGNORE && (x < 0 || x as usize >= v))
    {
        return Err(Error::invalid(
            "target id",
            format!("{bad} is outside the vocabulary (size {v}) and is not the ignore label -1"),
        ));
    }
    Ok(())
}

/// The book's `SimpleRnnlm` as one stateful object: parameters, their gradients and a
/// training workspace for one batch shape, with `forward` / `backward` / `reset_state` /
/// `set_state` as in the book. The configuration chooses the model: the book's tanh RNN by
/// default, or its ch06 `Rnnlm` / `BetterRnnlm` (LSTM, stacked, tied, with dropout through
/// [`SimpleRnnlm::set_dropout`]), or a PyTorch-form GRU.
///
/// ```
/// use rnnlm::{model::config::Cell, Config, SimpleRnnlm, Sgd};
/// // BetterRnnlm in miniature: 2 LSTM layers, tied output weights, dropout 0.5.
/// let cfg = Config::new(20, 8, 8).unwrap().with_cell(Cell::Lstm).with_layers(2).with_tied(true);
/// let mut better = SimpleRnnlm::new(cfg.validated().unwrap(), 2, 3, 42).unwrap();
/// better.set_dropout(0.5, 42).unwrap();
/// better.forward(&[1, 2, 3, 4, 5, 6], &[2, 3, 4, 5, 6, 7]).unwrap();
/// better.backward().unwrap();
/// assert_eq!(better.state().len(), 2 * 2 * 2 * 8); // h and c, 2 layers, N = 2, H = 8
/// ```
///
/// ```
/// use rnnlm::{Config, SimpleRnnlm, Sgd};
/// let cfg = Config::new(20, 8, 8).unwrap();
/// let mut model = SimpleRnnlm::new(cfg, 2, 3, 42).unwrap();
/// let xs = [1, 2, 3, 4, 5, 6];
/// let ts = [2, 3, 4, 5, 6, 7];
/// let loss = model.forward(&xs, &ts).unwrap();
/// assert!((loss - (20f32).ln()).abs() < 0.1); // near ln V at initialisation
/// model.backward().unwrap();
/// Sgd::new(0.1).update(model.params_mut_and_grads());
/// ```
#[derive(Clone, Debug)]
pub struct SimpleRnnlm {
    params: Params,
    grads: Params,
    ws: Workspace,
    /// Where the last backward may have written `grads` (zero elsewhere).
    live: Vec<std::ops::Range<usize>>,
    /// Scratch of [`touched_ranges`].
    ids: Vec<u32>,
    rows: Vec<(usize, usize)>,
    /// The next step's `live`, and the parts of it the class head zeroes itself.
    next: Vec<std::ops::Range<usize>>,
    own: Vec<std::ops::Range<usize>>,
}

impl SimpleRnnlm {
    /// A model with the book's initialisation drawn from `seed` (ChaCha8), for batches of
    /// `n` rows and `t` steps.
    ///
    /// The memory of the whole model (parameters, gradients, training workspace) is checked
    /// before anything is allocated or drawn (see [`crate::mem::check_memory`]).
    ///
    /// # Errors
    /// If a size is zero, or the model does not fit in the memory available ([`Error::Memory`],
    /// giving both figures).
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let a = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// assert_eq!(a.params(), SimpleRnnlm::new(cfg, 1, 1, 7).unwrap().params()); // the seed decides
    /// assert_ne!(a.params(), SimpleRnnlm::new(cfg, 2, 3, 8).unwrap().params());
    /// assert!(SimpleRnnlm::new(cfg, 0, 3, 7).is_err());
    /// ```
    pub fn new(cfg: Config, n: usize, t: usize, seed: u64) -> Result<Self> {
        let weights = Params::bytes_for(&cfg)?;
        let need = Self::training_bytes(&cfg, n, t)?
            .checked_add(weights)
            .ok_or_else(|| Error::invalid("model size", "the model's size overflows"))?;
        check_memory(&Self::describe(&cfg, n, t, "parameters, gradients"), need)?;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Self::from_params(Params::try_init_book(cfg, &mut rng)?, n, t)
    }

    /// Bytes of the gradients and the training workspace of `n x t` batches.
    fn training_bytes(cfg: &Config, n: usize, t: usize) -> Result<usize> {
        Params::bytes_for(cfg)?
            .checked_add(Workspace::bytes_for(cfg, n, t, true)?)
            .ok_or_else(|| Error::invalid("model size", "the model's size overflows"))
    }

    fn describe(cfg: &Config, n: usize, t: usize, parts: &str) -> String {
        format!(
            "the model's {parts} and training workspace (N={n}, T={t}, {})",
            Params::describe(cfg)
        )
    }

    /// A model around existing parameters (e.g. loaded from a checkpoint).
    ///
    /// # Errors
    /// If `n` or `t` is zero, or the gradients and the training workspace do not fit in the
    /// memory available ([`Error::Memory`]).
    ///
    /// ```
    /// use rand::SeedableRng;
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let params = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    /// let model = SimpleRnnlm::from_params(params.clone(), 2, 3).unwrap();
    /// assert_eq!(model.params(), &params);
    /// assert_eq!(model.params(), SimpleRnnlm::new(cfg, 2, 3, 7).unwrap().params()); // same draw
    /// assert!(SimpleRnnlm::from_params(params, 2, 0).is_err());
    /// ```
    pub fn from_params(params: Params, n: usize, t: usize) -> Result<Self> {
        let cfg = *params.config();
        let need = Self::training_bytes(&cfg, n, t)?;
        check_memory(&Self::describe(&cfg, n, t, "gradients"), need)?;
        let mut grads = Params::try_zeros(cfg)?;
        if cfg.softmax.is_class() {
            grads.set_class_starts(params.class_starts())?;
        }
        let classes = cfg.softmax.outputs(cfg.vocab_size);
        Ok(Self {
            grads,
            ws: Workspace::new(cfg, n, t, true)?,
            params,
            // Capacity for the worst case, so that no step allocates: one range per input
            // row and two per class, the layers and the output layer.
            live: Vec::with_capacity(n * t + 2 * classes + 4),
            ids: Vec::with_capacity(n * t),
            rows: Vec::with_capacity(classes),
            next: Vec::with_capacity(n * t + 2 * classes + 4),
            own: Vec::with_capacity(2 * classes),
        })
    }

    /// Sets a class head's partition of the ids (see [`Params::set_class_starts`]).
    ///
    /// # Errors
    /// As [`Params::set_class_starts`].
    pub fn set_class_starts(&mut self, starts: &[u32]) -> Result<()> {
        self.params.set_class_starts(starts)?;
        self.grads.set_class_starts(starts)
    }

    /// See [`forward`].
    ///
    /// # Errors
    /// If `xs`/`ts` are not `[N,T]` or hold ids outside the vocabulary.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// let loss = model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// assert!((loss - 10f32.ln()).abs() < 0.1);
    /// assert!(model.forward(&[1, 2], &[2, 3]).is_err()); // not [N, T] = [1, 3]
    /// assert!(model.forward(&[1, 2, 3], &[2, 3, 10]).is_err()); // target outside V = 10
    /// ```
    pub fn forward(&mut self, xs: &[u32], ts: &[i32]) -> Result<f32> {
        forward(&self.params, &mut self.ws, xs, ts)
    }

    /// See [`backward`].
    ///
    /// # Errors
    /// If no forward preceded.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// assert!(model.backward().is_err()); // no forward yet
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// assert!(model.grads().as_slice().iter().any(|&g| g != 0.0));
    /// assert!(model.backward().is_err()); // each backward needs its own forward
    /// ```
    ///
    /// The gradient buffer stays zero outside the parts this batch touches
    /// ([`SimpleRnnlm::grad_ranges`]): only the parts the previous backward wrote are
    /// cleared first, so a step at a large vocabulary does not sweep every row of `embed.W`
    /// and the output matrix.
    pub fn backward(&mut self) -> Result<()> {
        let (params, ws, grads) = (&self.params, &mut self.ws, &mut self.grads);
        check_backward(params, ws, grads)?;
        touched_ranges(params, ws, &mut self.ids, &mut self.rows, &mut self.next);
        // The class head zeroes the word rows and biases of this batch's classes itself, just
        // before it adds to them (`ClassSoftmax::words_backward`, while they are in cache),
        // so they are left out here: at V = 100k that saves a pass over ~V x H floats a step.
        class_owned(params, &self.rows, &mut self.own);
        let g = grads.as_mut_slice();
        for_each_difference(&self.live, &self.own, |r| {
            if r.len() >= 1 << 16 {
                zero(&mut g[r]);
            } else {
                g[r].fill(0.0);
            }
        });
        std::mem::swap(&mut self.live, &mut self.next);
        on_worker(|| backward_checked(params, ws, grads, false));
        Ok(())
    }

    /// The parts of the flat gradient buffer the last [`SimpleRnnlm::backward`] wrote
    /// (sorted, disjoint); the gradient is zero elsewhere, so [`crate::Sgd::update_ranges`] and
    /// [`crate::optim::ClipGrads::clip_ranges`] over them give the dense results.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// model.forward(&[1, 2, 1], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// // embed.W rows 1 and 2 (the inputs), then everything from the layers on.
    /// assert_eq!(model.grad_ranges(), [4..12, 40..model.params().as_slice().len()]);
    /// let g = model.grads().as_slice();
    /// assert!(g[..4].iter().chain(&g[12..40]).all(|&x| x == 0.0));
    /// ```
    pub fn grad_ranges(&self) -> &[std::ops::Range<usize>] {
        &self.live
    }

    /// Declares that the gradient may now be nonzero in `parts` (sorted, disjoint, and
    /// covering [`SimpleRnnlm::grad_ranges`]) and zero elsewhere: what a data-parallel sum
    /// leaves, the rows other ranks touched added. They become the grad ranges, and the next
    /// backward clears them.
    pub(crate) fn set_grad_ranges(&mut self, parts: &[std::ops::Range<usize>]) {
        self.live.clear();
        self.live.extend_from_slice(parts);
    }

    /// Parameters (mutable), gradients and [`SimpleRnnlm::grad_ranges`] together, for an
    /// optimizer step over the touched parts only.
    pub fn params_mut_grads_ranges(
        &mut self,
    ) -> (&mut Params, &mut Params, &[std::ops::Range<usize>]) {
        (&mut self.params, &mut self.grads, &self.live)
    }

    /// Turns dropout on (`p > 0`) or off for the training forwards (see
    /// [`Workspace::set_dropout`]).
    ///
    /// # Errors
    /// If `p` is not in `[0, 1)`.
    pub fn set_dropout(&mut self, p: f32, seed: u64) -> Result<()> {
        self.ws.set_dropout(p, seed)
    }

    /// Turns the output layer's backward pass by column strips on or off; see
    /// [`Workspace::set_output_strips`].
    ///
    /// # Errors
    /// If its buffers do not fit in memory.
    pub fn set_output_strips(&mut self, on: bool) -> Result<bool> {
        self.ws.set_output_strips(on)
    }

    /// The step counter of the dropout masks (see [`Workspace::dropout_step`]).
    pub fn dropout_step(&self) -> u64 {
        self.ws.dropout_step()
    }

    /// Sets the step counter of the dropout masks (a resumed run continues its count).
    pub fn set_dropout_step(&mut self, step: u64) {
        self.ws.set_dropout_step(step)
    }

    /// Makes this model's `N` rows one shard of a data-parallel batch (see
    /// [`crate::Shard`]): its loss and gradient become its rows' share of the whole batch's
    /// mean, so the shards' gradients summed (an allreduce) are the whole batch's.
    ///
    /// ```
    /// # use rand::SeedableRng;
    /// use rnnlm::{Config, Params, Shard, SimpleRnnlm};
    /// let cfg = Config::new(20, 6, 8).unwrap();
    /// let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
    /// let xs: Vec<u32> = (0..12).map(|i| i % 20).collect(); // N = 4, T = 3
    /// let ts: Vec<i32> = (0..12).map(|i| (i + 1) % 20).collect();
    /// let mut whole = SimpleRnnlm::from_params(params.clone(), 4, 3).unwrap();
    /// let loss = whole.forward(&xs, &ts).unwrap();
    /// let mut sum = 0.0;
    /// for r in 0..2 {
    ///     // Rows 2r..2r+2 of the 4, each shard dividing by the whole batch's 12 targets.
    ///     let mut shard = SimpleRnnlm::from_params(params.clone(), 2, 3).unwrap();
    ///     shard.set_shard(Some(Shard { row0: 2 * r, targets: 12 })).unwrap();
    ///     sum += shard.forward(&xs[6 * r..6 * r + 6], &ts[6 * r..6 * r + 6]).unwrap();
    /// }
    /// assert!((sum - loss).abs() <= 1e-6 * loss);
    /// ```
    ///
    /// # Errors
    /// If the shard's `targets` is 0 or fewer than its own `N * T` positions.
    pub fn set_shard(&mut self, shard: Option<crate::Shard>) -> Result<()> {
        self.ws.set_shard(shard)
    }

    /// Zeroes the carried hidden state.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// let (xs, ts) = ([1, 2, 3], [2, 3, 4]);
    /// let first = model.forward(&xs, &ts).unwrap();
    /// assert_ne!(model.forward(&xs, &ts).unwrap(), first); // carried state: a different loss
    /// model.reset_state();
    /// assert_eq!(model.state(), [0.0; 6]);
    /// assert_eq!(model.forward(&xs, &ts).unwrap(), first);
    /// ```
    pub fn reset_state(&mut self) {
        self.ws.reset_state();
    }

    /// Sets the carried hidden state `[N,H]`.
    ///
    /// # Errors
    /// If `h` has the wrong length.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// let (xs, ts) = ([1, 2, 3], [2, 3, 4]);
    /// model.forward(&xs, &ts).unwrap();
    /// let saved = model.state().to_vec();
    /// let next = model.forward(&xs, &ts).unwrap();
    /// model.set_state(&saved).unwrap(); // rewind one batch
    /// assert_eq!(model.forward(&xs, &ts).unwrap(), next);
    /// assert!(model.set_state(&[0.0; 3]).is_err()); // not [N, H] = [1, 6]
    /// ```
    pub fn set_state(&mut self, h: &[f32]) -> Result<()> {
        self.ws.set_state(h)
    }

    /// The carried hidden state `[N,H]`.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// assert_eq!(model.state(), [0.0; 2 * 6]); // [N, H], zero at the start
    /// model.forward(&[1, 2, 3, 4, 5, 6], &[2, 3, 4, 5, 6, 7]).unwrap();
    /// assert!(model.state().iter().all(|h| h.abs() < 1.0) && model.state()[0] != 0.0);
    /// ```
    pub fn state(&self) -> &[f32] {
        self.ws.state()
    }

    /// The model's configuration.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// assert_eq!(model.config(), &cfg);
    /// ```
    pub fn config(&self) -> &Config {
        self.params.config()
    }

    /// Parameters.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
    /// assert_eq!(model.params(), &rnnlm::Params::init_book(cfg, &mut rng));
    /// ```
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Gradients of the last backward.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// assert_eq!(model.grads(), &rnnlm::Params::zeros(cfg)); // nothing computed yet
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// // dL/d(affine.b) is a mean of (softmax - one-hot) rows, which sum to zero.
    /// let sum: f32 = model.grads().affine_b().iter().sum();
    /// assert!(sum.abs() < 1e-6);
    /// ```
    pub fn grads(&self) -> &Params {
        &self.grads
    }

    /// Gradients of the last backward, mutable (for clipping).
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// let norm = rnnlm::optim::ClipGrads::new().clip(model.grads_mut().as_mut_slice(), 1e-3);
    /// let clipped: f32 = model.grads().as_slice().iter().map(|g| g * g).sum::<f32>().sqrt();
    /// assert!(norm > 1e-3 && (clipped - 1e-3).abs() < 1e-6);
    /// ```
    pub fn grads_mut(&mut self) -> &mut Params {
        // The caller may write anywhere: the next backward clears everything.
        self.live.clear();
        self.live.push(0..self.grads.as_slice().len());
        &mut self.grads
    }

    /// Parameters (mutable) and gradients together, for an optimizer step.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 1, 3, 7).unwrap();
    /// model.forward(&[1, 2, 3], &[2, 3, 4]).unwrap();
    /// model.backward().unwrap();
    /// let (before, g) = (model.params().clone(), model.grads().clone());
    /// rnnlm::Sgd::new(0.5).update(model.params_mut_and_grads());
    /// let after = model.params().as_slice();
    /// assert!((0..after.len()).all(|i| after[i] == before.as_slice()[i] - 0.5 * g.as_slice()[i]));
    /// ```
    pub fn params_mut_and_grads(&mut self) -> (&mut Params, &Params) {
        (&mut self.params, &self.grads)
    }

    /// The workspace (activations of the last batch).
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let mut model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap();
    /// let loss = model.forward(&[1, 2, 3, 4, 5, 6], &[2, 3, 4, 5, 6, 7]).unwrap();
    /// let ws = model.workspace();
    /// assert!(ws.is_train() && (ws.batch_size(), ws.time_size()) == (2, 3));
    /// let mean = ws.position_losses().iter().map(|&l| l as f64).sum::<f64>() / 6.0;
    /// assert_eq!(loss, mean as f32);
    /// ```
    pub fn workspace(&self) -> &Workspace {
        &self.ws
    }

    /// Consumes the model, returning its parameters.
    ///
    /// ```
    /// # use rnnlm::{Config, SimpleRnnlm};
    /// # let cfg = Config::new(10, 4, 6).unwrap();
    /// let model = SimpleRnnlm::new(cfg, 2, 3, 7).unwrap(); // ... trained ...
    /// let kept = model.params().clone();
    /// let vocab = rnnlm::Vocab::from_words((0..10).map(|i| format!("w{i}")).collect()).unwrap();
    /// let lm = rnnlm::Rnnlm::new(model.into_params(), vocab).unwrap(); // hand over for inference
    /// assert_eq!(lm.params(), &kept);
    /// ```
    pub fn into_params(self) -> Params {
        self.params
    }
}

#[cfg(test)]
mod difference_tests {
    use super::for_each_difference;

    /// `(a, b, a minus b)`.
    type Case = (
        &'static [std::ops::Range<usize>],
        &'static [std::ops::Range<usize>],
        &'static [std::ops::Range<usize>],
    );

    #[test]
    #[allow(clippy::single_range_in_vec_init)]
    fn difference_of_sorted_ranges() {
        let cases: [Case; 5] = [
            (&[0..10], &[], &[0..10]),
            (&[0..10], &[2..4, 6..7], &[0..2, 4..6, 7..10]),
            (&[0..10, 20..30], &[5..25], &[0..5, 25..30]),
            (&[3..5], &[0..3, 5..9], &[3..5]),
            (&[0..4, 6..8], &[0..8], &[]),
        ];
        for (a, b, want) in cases {
            let mut got = Vec::new();
            for_each_difference(a, b, |r| got.push(r));
            assert_eq!(got, want, "{a:?} minus {b:?}");
        }
    }
}
