//! The model: `TimeEmbedding -> L x (TimeRNN | TimeLSTM | GRU) -> TimeAffine ->
//! TimeSoftmaxWithLoss`, with inverted dropout and optional weight tying, and the book's
//! stateful `SimpleRnnlm` object around it.

use rand::SeedableRng;

use super::config::{Cell, Config, MAX_LAYERS};
use super::output_grad::{self, StripGrads};
use super::params::Params;
use super::workspace::{LayerWs, Workspace};
use crate::error::{Error, Result};
use rayon::prelude::*;

use crate::gemm::{self, matmul_packed, Accum, MatMut, MatRef, Packed, Par};
use crate::kernels::dropout::{self, DropoutKey};
use crate::layers::{embedding, gru, lstm, rnn, softmax_loss};
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

/// Rows of logits computed and then softmaxed together (16 x V = 640 KB at V = 10,000: L2).
const SOFTMAX_FUSE_ROWS: usize = 16;

/// Largest packed output matrix for which the output layer goes row slice by row slice: each
/// slice re-reads all of it (from L3 while it fits there).
const SOFTMAX_FUSE_MAX_W_BYTES: usize = 8 << 20;

/// Multiply-adds per batch below which a pass runs as one block on the calling thread.
const PARALLEL_MIN_MACS: usize = 1_000_000;

/// Dropout sites: 0 after the embedding, `l + 1` after layer `l` (so `L` is before the output
/// layer).
fn site_after_layer(l: usize) -> u32 {
    l as u32 + 1
}

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

/// A workspace buffer as a raw pointer, so parallel tasks can each take the disjoint block of
/// batch rows they own (the number of layers varies, so the buffers cannot be zipped as
/// `par_chunks`).
#[derive(Clone, Copy)]
struct Buf {
    ptr: *mut f32,
    len: usize,
}

// SAFETY: a `Buf` is only dereferenced through `Buf::get`, whose callers take disjoint ranges
// (their own batch rows) while the owning workspace is exclusively borrowed.
unsafe impl Send for Buf {}
// SAFETY: as above.
unsafe impl Sync for Buf {}

impl Buf {
    const EMPTY: Buf = Buf {
        ptr: std::ptr::NonNull::dangling().as_ptr(),
        len: 0,
    };

    fn of(v: &mut [f32]) -> Self {
        Buf {
            ptr: v.as_mut_ptr(),
            len: v.len(),
        }
    }

    /// `len` floats from `start`.
    ///
    /// # Safety
    /// No other live reference may overlap `start..start + len` while the result lives, and
    /// the buffer must outlive it.
    #[allow(clippy::mut_from_ref)]
    unsafe fn get<'a>(self, start: usize, len: usize) -> &'a mut [f32] {
        assert!(start + len <= self.len, "Buf::get out of range");
        if len == 0 {
            return &mut [];
        }
        // SAFETY: in bounds (asserted); exclusivity per the caller's contract.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.add(start), len) }
    }
}

/// One layer's buffers as raw views (see [`Buf`]).
#[derive(Clone, Copy)]
struct LayerBufs {
    gates: Buf,
    hs: Buf,
    hprev: Buf,
    cs: Buf,
    tc: Buf,
    c0: Buf,
    gh: Buf,
    drop: Buf,
    state_h: Buf,
    state_c: Buf,
}

impl LayerBufs {
    const EMPTY: LayerBufs = LayerBufs {
        gates: Buf::EMPTY,
        hs: Buf::EMPTY,
        hprev: Buf::EMPTY,
        cs: Buf::EMPTY,
        tc: Buf::EMPTY,
        c0: Buf::EMPTY,
        gh: Buf::EMPTY,
        drop: Buf::EMPTY,
        state_h: Buf::EMPTY,
        state_c: Buf::EMPTY,
    };
}

/// Raw views of every layer's buffers, on the stack (no allocation per step).
fn layer_bufs(ws: &mut Workspace) -> [LayerBufs; MAX_LAYERS] {
    let (nl, nh) = (ws.cfg.layers, ws.n * ws.cfg.hidden_size);
    let mut out = [LayerBufs::EMPTY; MAX_LAYERS];
    let (sh, sc) = ws.state.split_at_mut(nl * nh);
    for (l, lw) in ws.layers.iter_mut().enumerate() {
        out[l] = LayerBufs {
            gates: Buf::of(&mut lw.gates),
            hs: Buf::of(&mut lw.hs),
            hprev: Buf::of(&mut lw.hprev),
            cs: Buf::of(&mut lw.cs),
            tc: Buf::of(&mut lw.tc),
            c0: Buf::of(&mut lw.c0),
            gh: Buf::of(&mut lw.gh),
            drop: Buf::of(&mut lw.drop),
            state_h: Buf::of(&mut sh[l * nh..(l + 1) * nh]),
            state_c: if sc.is_empty() {
                Buf::EMPTY
            } else {
                Buf::of(&mut sc[l * nh..(l + 1) * nh])
            },
        };
    }
    out
}

/// The output weights as a `[H,V]` view: `affine.W`, or `embed.W` transposed when tied.
fn output_weights(params: &Params) -> MatRef<'_> {
    let c = params.config();
    match params.affine_w() {
        Some(w) => MatRef::new(w, c.hidden_size, c.vocab_size),
        None => MatRef::new(params.embed_w(), c.vocab_size, c.hidden_size).t(),
    }
}

fn forward_loaded(params: &Params, ws: &mut Workspace) -> f32 {
    let cfg = ws.cfg;
    let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
    let (cell, nl, gh) = (cfg.cell, cfg.layers, cfg.cell.gates() * h);
    let (n, t) = (ws.n, ws.t);
    let rb = rows_per_block(ws);
    let tasks = n.div_ceil(rb);
    for (l, lw) in ws.layers.iter_mut().enumerate() {
        let (p, dl) = (params.layer(l), cfg.layer_input(l));
        let wx = MatRef::new(p.wx, dl, gh);
        gemm::pack_rows(&mut lw.wx_packed, &wx, 0, dl, Par::Tasks(tasks));
        gemm::pack(&mut lw.wh_packed, MatRef::new(p.wh, h, gh));
    }
    gemm::pack_rows(
        &mut ws.w_packed,
        &output_weights(params),
        0,
        h,
        Par::Tasks(tasks),
    );

    let count = softmax_loss::count(&ws.ts);
    let scale = if count == 0 { 0.0 } else { 1.0 / count as f32 };
    let train = ws.train;
    let (p_drop, step, seed) = (
        if ws.dropout_on() { ws.dropout } else { 0.0 },
        ws.dropout_step,
        ws.dropout_seed,
    );
    if p_drop > 0.0 {
        ws.dropout_step += 1;
    }
    let lb = layer_bufs(ws);
    let lb = &lb[..nl];
    let (emb, logits, losses) = (
        Buf::of(&mut ws.emb),
        Buf::of(&mut ws.logits),
        Buf::of(&mut ws.losses),
    );
    let (xs, ts) = (&ws.xs, &ws.ts);
    let layers = &ws.layers;
    let (w_packed, embed_w, affine_b) = (&ws.w_packed, params.embed_w(), params.affine_b());
    (0..tasks).into_par_iter().for_each(|blk| {
        let r0 = blk * rb;
        let m = rb.min(n - r0);
        let (r, p0) = (m * t, r0 * t);
        // SAFETY: task `blk` takes only batch rows r0..r0+m (positions p0..p0+r) of every
        // buffer; the tasks' row ranges are disjoint and `ws` is exclusively borrowed by this
        // function for the whole parallel loop.
        unsafe {
            let emb = emb.get(p0 * d, r * d);
            embedding::forward(emb, &xs[p0..p0 + r], embed_w, d);
            if p_drop > 0.0 {
                dropout::apply(emb, DropoutKey::new(seed, step, 0), (p0 * d) as u64, p_drop);
            }
            let mut x: &[f32] = emb;
            for l in 0..nl {
                let (b, lw, pl) = (&lb[l], &layers[l], params.layer(l));
                let dl = cfg.layer_input(l);
                let hs = b.hs.get(p0 * h, r * h);
                let hprev = b.hprev.get(p0 * h, r * h);
                let state_h = b.state_h.get(r0 * h, m * h);
                match cell {
                    Cell::Rnn => {
                        // hs = x Wx for every step of the block   [r,D_l] x [D_l,H]
                        gemm::gemm_packed(
                            MatMut::new(hs, r, h),
                            MatRef::new(x, r, dl),
                            Packed::new(&lw.wx_packed, dl, h),
                            Accum::Replace,
                        );
                        rnn::forward_rows(hs, hprev, state_h, &lw.wh_packed, pl.b, (m, t, h));
                    }
                    Cell::Lstm => {
                        let gates = b.gates.get(p0 * gh, r * gh);
                        gemm::gemm_packed(
                            MatMut::new(gates, r, gh),
                            MatRef::new(x, r, dl),
                            Packed::new(&lw.wx_packed, dl, gh),
                            Accum::Replace,
                        );
                        let bufs = lstm::LstmForward {
                            gates,
                            hs,
                            hprev,
                            cs: b.cs.get(p0 * h, r * h),
                            tc: b.tc.get(p0 * h, r * h),
                            c0: b.c0.get(r0 * h, m * h),
                            state_h,
                            state_c: b.state_c.get(r0 * h, m * h),
                        };
                        lstm::forward_rows(bufs, &lw.wh_packed, pl.b, (m, t, h));
                    }
                    Cell::Gru => {
                        let gates = b.gates.get(p0 * gh, r * gh);
                        gemm::gemm_packed(
                            MatMut::new(gates, r, gh),
                            MatRef::new(x, r, dl),
                            Packed::new(&lw.wx_packed, dl, gh),
                            Accum::Replace,
                        );
                        let ghb = b.gh.get(p0 * gh, r * gh);
                        let weights = (&lw.wh_packed[..], pl.b, pl.bh);
                        gru::forward_rows(gates, ghb, hs, hprev, state_h, weights, (m, t, h));
                    }
                }
                let hs: &[f32] = b.hs.get(p0 * h, r * h);
                x = if p_drop > 0.0 {
                    let out = b.drop.get(p0 * h, r * h);
                    let key = DropoutKey::new(seed, step, site_after_layer(l));
                    dropout::apply_to(out, hs, key, (p0 * h) as u64, p_drop);
                    out
                } else {
                    hs
                };
            }
            let logits = logits.get(p0 * v, r * v);
            let losses = losses.get(p0, r);
            let ts = &ts[p0..p0 + r];
            // Output affine, logits = x W   [r,H] x [H,V], then the softmax pass (which adds
            // the bias), a few rows at a time: each slice of logits is still in L2 when the
            // softmax reads and rewrites it, so it crosses the memory bus once instead of three
            // times. Worth it while packed W stays cheap to re-read from L3.
            let sub = if h * v * 4 <= SOFTMAX_FUSE_MAX_W_BYTES {
                SOFTMAX_FUSE_ROWS
            } else {
                r
            };
            for s0 in (0..r).step_by(sub.max(1)) {
                let rows = sub.min(r - s0);
                let l = &mut logits[s0 * v..(s0 + rows) * v];
                let (ts, losses) = (&ts[s0..s0 + rows], &mut losses[s0..s0 + rows]);
                gemm::gemm_packed(
                    MatMut::new(l, rows, v),
                    MatRef::new(&x[s0 * h..], rows, h),
                    Packed::new(w_packed, h, v),
                    Accum::Replace,
                );
                if train {
                    softmax_loss::rows_forward_backward(l, affine_b, ts, losses, scale);
                } else {
                    softmax_loss::rows_forward(l, affine_b, ts, losses);
                }
            }
        }
    });
    ws.ready_for_backward = train;
    softmax_loss::mean(&ws.losses, count)
}

/// Backward pass of the last [`forward`]: overwrites every tensor of `grads` with the gradient
/// of the mean loss (the book's layers assign their grads; nothing needs zeroing first).
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
    on_worker(|| backward_checked(params, ws, grads));
    Ok(())
}

fn backward_checked(params: &Params, ws: &mut Workspace, grads: &mut Params) {
    let cfg = ws.cfg;
    let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
    let (cell, nl, gh) = (cfg.cell, cfg.layers, cfg.cell.gates() * h);
    let (n, t) = (ws.n, ws.t);
    let nt = n * t;
    let rb = rows_per_block(ws);
    let tasks = n.div_ceil(rb);

    // W^T in K blocks over V (the output strips on the strip path), so each block's panels
    // stay in cache during dY W^T.
    let wt = output_weights(params).t();
    let strip = ws.out_strip;
    let mut off = 0;
    for (k0, kc) in gemm::balanced_blocks(v, if strip > 0 { strip } else { gemm::KC }) {
        gemm::pack_rows(&mut ws.wt_packed[off..], &wt, k0, kc, Par::Tasks(tasks));
        off += gemm::packed_len(kc, h);
    }
    for (l, lw) in ws.layers.iter_mut().enumerate() {
        let (p, dl) = (params.layer(l), cfg.layer_input(l));
        gemm::pack_rows(
            &mut lw.wxt_packed,
            &MatRef::new(p.wx, dl, gh).t(),
            0,
            gh,
            Par::Tasks(tasks),
        );
        gemm::pack(&mut lw.wht_packed, MatRef::new(p.wh, h, gh).t());
    }
    // The step of the last forward's masks.
    let p_drop = if ws.dropout_on() { ws.dropout } else { 0.0 };
    let (step, seed) = (ws.dropout_step.wrapping_sub(1), ws.dropout_seed);
    let dropped = p_drop > 0.0;
    if strip > 0 {
        // The output layer first, by column strips of dY: dW complete, dX as partials that
        // the row blocks below add up (see model::output_grad).
        let output_in = layer_output(&ws.layers[nl - 1], dropped);
        transposed_with_ones(&mut ws.gemm_scratch, &[(output_in, h)], nt, tasks);
        let top = if cell == Cell::Rnn {
            &mut ws.layers[nl - 1].gates
        } else {
            &mut ws.dh
        };
        let dw = output_dw(cfg.tied, &mut ws.tied_grad, grads);
        let g = StripGrads {
            dy: &ws.logits,
            xt: &ws.gemm_scratch,
            wt_packed: &ws.wt_packed,
            dx: top,
            parts: &mut ws.dx_parts,
            dw,
            dy_packed: &mut ws.dy_packed,
        };
        output_grad::backward(g, (nt, h, v), strip);
    }

    let lb = layer_bufs(ws);
    let lb = &lb[..nl];
    let (dh, demb, scratch) = (
        Buf::of(&mut ws.dh),
        Buf::of(&mut ws.demb),
        Buf::of(&mut ws.scratch),
    );
    let (logits, wt_packed, layers, dx_parts) =
        (&ws.logits, &ws.wt_packed, &ws.layers, &ws.dx_parts);
    // Where the gradient w.r.t. layer l's output h goes: the tanh RNN differentiates in place
    // in its own `gates` buffer (which then holds dL/da for the weight gradient); LSTM and GRU
    // read it from `dh` and write their gate gradients into `gates`.
    let target = |l: usize| if cell == Cell::Rnn { lb[l].gates } else { dh };
    (0..tasks).into_par_iter().for_each(|blk| {
        let r0 = blk * rb;
        let m = rb.min(n - r0);
        let (r, p0) = (m * t, r0 * t);
        // SAFETY: as in forward_loaded: task `blk` touches only its own batch rows of every
        // buffer, the row ranges are disjoint, and `ws` is exclusively borrowed meanwhile.
        unsafe {
            let top = target(nl - 1).get(p0 * h, r * h);
            if strip > 0 {
                output_grad::add_parts(top, dx_parts, (nt, h), p0);
            } else {
                // d(output input) = dY W^T   [r,V] x [V,H], accumulated over the K blocks of V.
                let dy = &logits[p0 * v..(p0 + r) * v];
                let mut off = 0;
                for (kb, (k0, kc)) in gemm::k_blocks(v).enumerate() {
                    let packed = &wt_packed[off..off + gemm::packed_len(kc, h)];
                    gemm::gemm_packed(
                        MatMut::new(&mut *top, r, h),
                        MatRef::rows_strided(&dy[k0..], r, kc, v),
                        Packed::new(packed, kc, h),
                        Accum::add_if(kb > 0),
                    );
                    off += packed.len();
                }
            }
            if p_drop > 0.0 {
                let key = DropoutKey::new(seed, step, site_after_layer(nl - 1));
                dropout::apply(top, key, (p0 * h) as u64, p_drop);
            }
            let scratch = scratch.get(r0 * h, m * h);
            for l in (0..nl).rev() {
                let (b, lw) = (&lb[l], &layers[l]);
                let dl = cfg.layer_input(l);
                let da = b.gates.get(p0 * gh, r * gh);
                match cell {
                    Cell::Rnn => {
                        let hs = b.hs.get(p0 * h, r * h);
                        rnn::backward_rows(da, hs, scratch, &lw.wht_packed, (m, t, h));
                    }
                    Cell::Lstm => {
                        let dh = dh.get(p0 * h, r * h);
                        let (cs, tc) = (b.cs.get(p0 * h, r * h), b.tc.get(p0 * h, r * h));
                        let c0 = b.c0.get(r0 * h, m * h);
                        let saved = (&*cs, &*tc, &*c0);
                        lstm::backward_rows(dh, da, saved, scratch, &lw.wht_packed, (m, t, h));
                    }
                    Cell::Gru => {
                        let dh = dh.get(p0 * h, r * h);
                        let (ghb, hprev) = (b.gh.get(p0 * gh, r * gh), b.hprev.get(p0 * h, r * h));
                        gru::backward_rows(dh, da, ghb, hprev, scratch, &lw.wht_packed, (m, t, h));
                    }
                }
                // The input's gradient, dA Wx^T   [r,GH] x [GH,D_l]: into the layer below's
                // output gradient, or the embedding's.
                let out = if l > 0 {
                    target(l - 1).get(p0 * h, r * h)
                } else {
                    demb.get(p0 * d, r * d)
                };
                gemm::gemm_packed(
                    MatMut::new(&mut *out, r, dl),
                    MatRef::new(da, r, gh),
                    Packed::new(&lw.wxt_packed, gh, dl),
                    Accum::Replace,
                );
                if p_drop > 0.0 {
                    let key = DropoutKey::new(seed, step, l as u32);
                    dropout::apply(out, key, (p0 * dl) as u64, p_drop);
                }
            }
        }
    });

    // Weight gradients, sums over all N*T rows. The biases ride along as a row of ones in A:
    // [dW; db] = [x_out | 1]^T dY, and per layer [dWx; dWh; db] = [x_in | hprev | 1]^T dA
    // (a GRU: [dWx; dbx] = [x_in | 1]^T dAx and [dWh; dbh] = [hprev | 1]^T dAh), each one
    // product writing straight into adjacent tensors of the flat gradient buffer.
    let scratch = &mut ws.gemm_scratch;
    if strip == 0 {
        let output_in = layer_output(&ws.layers[nl - 1], dropped);
        let dw = output_dw(cfg.tied, &mut ws.tied_grad, grads);
        bias_gemm(dw, &[(output_in, h)], &ws.logits, (nt, v), scratch, tasks);
    }
    for l in 0..nl {
        let dl = cfg.layer_input(l);
        let lw = &ws.layers[l];
        let x_in = match l {
            0 => &ws.emb[..],
            _ => layer_output(&ws.layers[l - 1], dropped),
        };
        let rows = grads.layer_rows_mut(l);
        if cell == Cell::Gru {
            let (rx, rh) = rows.split_at_mut((dl + 1) * gh);
            bias_gemm(rx, &[(x_in, dl)], &lw.gates, (nt, gh), scratch, tasks);
            bias_gemm(rh, &[(&lw.hprev, h)], &lw.gh, (nt, gh), scratch, tasks);
        } else {
            bias_gemm(
                rows,
                &[(x_in, dl), (&lw.hprev, h)],
                &lw.gates,
                (nt, gh),
                scratch,
                tasks,
            );
        }
    }
    let (de, db) = grads.embed_and_affine_b_mut();
    if cfg.tied {
        // The output layer's dW [H,V] is embed.W's gradient transposed; its bias row is
        // affine.b's. The embedding's scatter-add then accumulates on top.
        db.copy_from_slice(&ws.tied_grad[h * v..]);
        transpose_into(de, &ws.tied_grad[..h * v], h, v);
    } else {
        de.fill(0.0);
    }
    embedding::backward(de, &ws.xs, &ws.demb, d);
}

/// What a layer passes on (to the layer above, or to the output layer): its `h`, or the
/// dropped-out copy.
fn layer_output(layer: &LayerWs, dropped: bool) -> &[f32] {
    if dropped {
        &layer.drop
    } else {
        &layer.hs
    }
}

/// Where the output layer's `[dW; db]` goes: straight into the gradient (`affine.W`, `affine.b`
/// rows), or, tied, into the scratch that is then transposed onto `embed.W`'s gradient.
fn output_dw<'a>(tied: bool, tied_grad: &'a mut [f32], grads: &'a mut Params) -> &'a mut [f32] {
    if tied {
        tied_grad
    } else {
        grads.affine_rows_mut()
    }
}

/// `C = [X_1 | X_2 | ... | 1]^T B` for activations `X_i [nt, k_i]` and `B [nt, cols]`, into
/// `c [k_1 + k_2 + ... + 1, cols]`: a weight gradient and its bias in one product. A^T is built
/// row-major at the front of `scratch`.
fn bias_gemm(
    c: &mut [f32],
    parts: &[(&[f32], usize)],
    b: &[f32],
    (nt, cols): (usize, usize),
    scratch: &mut [f32],
    tasks: usize,
) {
    let k = transposed_with_ones(scratch, parts, nt, tasks);
    let (a, rest) = scratch.split_at_mut(k * nt);
    matmul_packed(
        MatMut::new(c, k, cols),
        MatRef::new(a, k, nt),
        MatRef::new(b, nt, cols),
        Accum::Replace,
        rest,
    );
}

/// Writes `[X_1 | X_2 | ... | 1]^T` for activations `X_i [nt, k_i]` row-major at the front of
/// `out` (`[k, nt]`) and returns `k = k_1 + k_2 + ... + 1`.
fn transposed_with_ones(
    out: &mut [f32],
    parts: &[(&[f32], usize)],
    nt: usize,
    tasks: usize,
) -> usize {
    let mut row = 0;
    for &(x, w) in parts {
        gemm::copy_rows(
            &mut out[row * nt..],
            &MatRef::new(x, nt, w).t(),
            Par::Tasks(tasks),
        );
        row += w;
    }
    out[row * nt..(row + 1) * nt].fill(1.0);
    row + 1
}

/// `out [C,R] = a^T` for `a [R,C]`, in cache-sized tiles.
fn transpose_into(out: &mut [f32], a: &[f32], rows: usize, cols: usize) {
    const TILE: usize = 32;
    out.par_chunks_mut(TILE * rows)
        .enumerate()
        .for_each(|(bi, chunk)| {
            let c0 = bi * TILE;
            let cn = chunk.len() / rows;
            for r0 in (0..rows).step_by(TILE) {
                for r in r0..(r0 + TILE).min(rows) {
                    for c in 0..cn {
                        chunk[c * rows + r] = a[r * cols + c0 + c];
                    }
                }
            }
        });
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
        Ok(Self {
            grads: Params::try_zeros(cfg)?,
            ws: Workspace::new(cfg, n, t, true)?,
            params,
        })
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
    pub fn backward(&mut self) -> Result<()> {
        backward(&self.params, &mut self.ws, &mut self.grads)
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
