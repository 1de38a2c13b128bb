//! The recurrent cells, one file each, behind one trait.
//!
//! A cell file holds everything that is particular to the cell:
//! - its tensors ([`CellImpl::tensors`]: names, shapes, init) and its PyTorch form
//!   ([`CellImpl::torch`]: gate order, biases);
//! - its per-step buffers ([`CellImpl::buffers`]);
//! - its forward step and backward step over a block of batch rows, and its weight gradients.
//!
//! Everything else derives from it: [`crate::Params`]' layout and checkpoint names, the
//! workspace plan, the inference state, and `convert`. The time loop is generic
//! ([`forward_rows`], [`backward_rows`]); inference runs the same loop with `T = 1`.
//!
//! A new cell costs one file here and one line in the `cells!` list of
//! [`crate::model::config`].
//!
//! Every buffer of a block is row-major `[m,T,·]` over the block's `m` batch rows: row `i`,
//! step `s` of a width-`w` buffer starts at `(i*T + s)*w`.

pub(crate) mod gru;
pub(crate) mod gru_book;
pub(crate) mod lstm;
pub(crate) mod rnn;

use crate::gemm::{self, Accum, MatMut, MatRef, Par};

/// What a tensor's rows are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Rows {
    /// `D_l` rows: the layer's input width (a weight applied to `x`).
    Input,
    /// `H` rows (a weight applied to `h`).
    Hidden,
    /// A vector `[G*H]` (a bias).
    Vector,
}

/// The part a tensor plays (what the generic code looks it up by).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// `x Wx`: the input projection, `[D_l, G*H]`.
    Wx,
    /// The recurrent weight, `[H, G*H]`.
    Wh,
    /// The bias added with the input projection, `[G*H]`.
    B,
    /// A second bias on the recurrent product (PyTorch's GRU), `[G*H]`.
    Bh,
}

/// One tensor of a layer, in storage order. Every tensor has `G*H` columns.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TensorSpec {
    /// The name after `{cell}.{layer}.` in checkpoints (`Wx`, `Wh`, `b`, `bx`, `bh`).
    pub name: &'static str,
    pub role: Role,
    pub rows: Rows,
}

impl TensorSpec {
    /// Number of rows for a layer of input width `dl` and hidden size `h` (1 for a vector).
    pub(crate) fn row_count(&self, dl: usize, h: usize) -> usize {
        match self.rows {
            Rows::Input => dl,
            Rows::Hidden => h,
            Rows::Vector => 1,
        }
    }

    /// The checkpoint shape.
    pub(crate) fn shape(&self, dl: usize, gh: usize, h: usize) -> Vec<usize> {
        match self.rows {
            Rows::Vector => vec![gh],
            _ => vec![self.row_count(dl, h), gh],
        }
    }
}

/// The input weights `Wx [D_l, GH]`.
pub(crate) const WX: TensorSpec = TensorSpec {
    name: "Wx",
    role: Role::Wx,
    rows: Rows::Input,
};
/// The recurrent weights `Wh [H, GH]`.
pub(crate) const WH: TensorSpec = TensorSpec {
    name: "Wh",
    role: Role::Wh,
    rows: Rows::Hidden,
};
/// The one bias `b [GH]` of a cell that has one.
pub(crate) const B: TensorSpec = TensorSpec {
    name: "b",
    role: Role::B,
    rows: Rows::Vector,
};

/// The book's layout of a layer with one bias: `Wx`, `Wh`, `b` (the tanh RNN, the LSTM), so
/// that `[dWx; dWh; db]` is one product.
pub(crate) const WX_WH_B: &[TensorSpec] = &[WX, WH, B];

/// How PyTorch's `nn.RNN` / `nn.LSTM` / `nn.GRU` stores the same cell.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TorchForm {
    /// `block[g]`: the PyTorch gate block that holds our gate block `g`.
    pub block: &'static [usize],
    /// PyTorch's two biases are summed into our one `b` (rnn, lstm); otherwise they are our
    /// `b` (`bx`) and `bh` (gru).
    pub summed_bias: bool,
}

/// Per-layer buffers of a cell, in units of `H` floats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Buffers {
    /// Per position: the gates (`x Wx`, then the activated gates, then their gradient).
    pub gates: usize,
    /// Per position: the cell's own buffers (an LSTM's `c` and `tanh c`, ...).
    pub aux: usize,
    /// Per batch row: the cell's own buffers (an LSTM's `c` at the batch start).
    pub row_aux: usize,
    /// Carried state vectors per batch row (`h`, and an LSTM's `c`); at most [`MAX_STATES`].
    pub states: usize,
    /// Per batch row: backward scratch.
    pub scratch: usize,
}

/// Most carried state vectors a cell may have.
pub(crate) const MAX_STATES: usize = 2;

/// Most weight-gradient products a cell may run.
pub(crate) const MAX_GRAD_PRODUCTS: usize = 3;

/// One block's view of a layer's buffers (`m` batch rows, `T` steps).
#[derive(Default)]
pub(crate) struct LayerRows<'a> {
    /// `[m,T,gates*H]`
    pub gates: &'a mut [f32],
    /// `[m,T,H]`: `h_t`.
    pub hs: &'a mut [f32],
    /// `[m,T,H]`: `h_{t-1}`.
    pub hprev: &'a mut [f32],
    /// `[m,T,aux*H]`
    pub aux: &'a mut [f32],
    /// `[m,row_aux*H]`
    pub row_aux: &'a mut [f32],
    /// `[m,H]` each: the carried states (`state[0]` is `h`).
    pub state: [&'a mut [f32]; MAX_STATES],
}

impl<'a> LayerRows<'a> {
    /// Splits off the first `rows` batch rows (`t` steps, hidden size `h`, cell buffers `b`).
    pub(crate) fn split_rows(self, rows: usize, t: usize, h: usize, b: &Buffers) -> (Self, Self) {
        let pos = rows * t * h;
        let (g0, g1) = self.gates.split_at_mut(pos * b.gates);
        let (h0, h1) = self.hs.split_at_mut(pos);
        let (p0, p1) = self.hprev.split_at_mut(pos);
        let (a0, a1) = self.aux.split_at_mut(pos * b.aux);
        let (r0, r1) = self.row_aux.split_at_mut(rows * h * b.row_aux);
        let [s0, s1] = self.state;
        let (s00, s01) = s0.split_at_mut((rows * h).min(s0.len()));
        let (s10, s11) = s1.split_at_mut((rows * h).min(s1.len()));
        (
            LayerRows {
                gates: g0,
                hs: h0,
                hprev: p0,
                aux: a0,
                row_aux: r0,
                state: [s00, s10],
            },
            LayerRows {
                gates: g1,
                hs: h1,
                hprev: p1,
                aux: a1,
                row_aux: r1,
                state: [s01, s11],
            },
        )
    }
}

/// A layer's weights as the step reads them.
#[derive(Clone, Copy)]
pub(crate) struct StepWeights<'a> {
    /// The recurrent weights packed by [`CellImpl::pack_recurrent`] (forward) or its
    /// transpose (backward).
    pub packed: &'a [f32],
    /// The bias with the role [`Role::B`].
    pub b: &'a [f32],
    /// The bias with the role [`Role::Bh`] (empty if the cell has none).
    pub bh: &'a [f32],
}

/// Block shape: `m` batch rows, `t` steps, hidden size `h`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dims {
    pub m: usize,
    pub t: usize,
    pub h: usize,
}

/// What a cell's weight gradients read: whole-batch buffers (`nt = N*T` positions).
pub(crate) struct GradInputs<'a> {
    /// The layer's input `[nt, dl]`.
    pub x: &'a [f32],
    /// `[nt, H]`
    pub hprev: &'a [f32],
    /// `[nt, gates*H]`: the gradient left by the backward steps.
    pub gates: &'a [f32],
    /// `[nt, aux*H]`
    pub aux: &'a [f32],
    pub nt: usize,
    pub dl: usize,
    pub h: usize,
}

/// A recurrent cell. Implementations are zero-sized; [`crate::model::config::Cell::imp`] hands
/// out the one of each.
pub(crate) trait CellImpl: Sync {
    /// Number of gate blocks `G` along the `G*H` axis.
    fn gates(&self) -> usize;

    /// The layer's tensors in storage order. The tensors that one weight-gradient product
    /// writes must be adjacent.
    fn tensors(&self) -> &'static [TensorSpec];

    /// PyTorch's form of the cell, if PyTorch has it.
    fn torch(&self) -> Option<TorchForm>;

    /// The per-layer buffers for training (`train`) or evaluation.
    fn buffers(&self, train: bool) -> Buffers;

    /// Whether `x Wx` lands in `hs` (the tanh RNN: its pre-activation is `hs` itself) rather
    /// than in `gates`; and whether the gradient reaching `h` from above lands in `gates`
    /// (differentiated in place) rather than in the model's `dh`.
    fn in_place(&self) -> bool {
        false
    }

    /// Floats of the packed recurrent weights: (forward, backward).
    fn packed_lens(&self, h: usize) -> (usize, usize) {
        let gh = self.gates() * h;
        (gemm::packed_len(h, gh), gemm::packed_len(gh, h))
    }

    /// Packs `Wh [H, G*H]` for the forward steps (`fwd` non-empty), and for the backward
    /// steps (`bwd` non-empty).
    fn pack_recurrent(&self, wh: &[f32], h: usize, fwd: &mut [f32], bwd: &mut [f32]) {
        let gh = self.gates() * h;
        if !fwd.is_empty() {
            gemm::pack(fwd, MatRef::new(wh, h, gh));
        }
        if !bwd.is_empty() {
            gemm::pack(bwd, MatRef::new(wh, h, gh).t());
        }
    }

    /// Called before the first forward step (e.g. to keep the carried `c`).
    fn begin_forward(&self, _rows: &mut LayerRows<'_>, _d: Dims) {}

    /// Step `s` of the forward: on entry `gates` (or `hs`) holds `x Wx` at step `s` and
    /// `hprev` holds `h_{s-1}`; on exit `hs` holds `h_s`.
    fn forward_step(&self, rows: &mut LayerRows<'_>, w: &StepWeights<'_>, s: usize, d: Dims);

    /// Called after the last forward step (e.g. to carry `c`).
    fn end_forward(&self, _rows: &mut LayerRows<'_>, _d: Dims) {}

    /// Step `s` of the backward (steps run from `T-1` down): `dh [m,T,H]` holds the gradient
    /// reaching `h` from above (empty when [`CellImpl::in_place`]: then it is in `gates`), and
    /// receives the recurrent part for step `s-1`; on exit `gates` at step `s` holds the
    /// gradient of the pre-activations that `x Wx` feeds. `scratch` is `[m, scratch*H]`,
    /// zeroed before the first step.
    fn backward_step(
        &self,
        rows: &mut LayerRows<'_>,
        dh: &mut [f32],
        scratch: &mut [f32],
        w: &StepWeights<'_>,
        s: usize,
        d: Dims,
    );

    /// Shapes `(k, cols)` of the weight-gradient products (for scratch sizing), `(0, 0)` for
    /// none.
    fn grad_products(&self, dl: usize, h: usize) -> [(usize, usize); MAX_GRAD_PRODUCTS];

    /// Adds the layer's weight gradients into `grads` (the layer's tensors in storage order).
    fn weight_grads(&self, g: &GradInputs<'_>, grads: &mut [f32], scratch: &mut [f32], par: Par);
}

/// The forward time loop over one block: `h_{-1}` from `state[0]`, the cell's steps, `h_{T-1}`
/// back into `state[0]`.
pub(crate) fn forward_rows(
    cell: &dyn CellImpl,
    rows: &mut LayerRows<'_>,
    w: &StepWeights<'_>,
    d: Dims,
) {
    let Dims { m, t, h } = d;
    let ld = t * h;
    for i in 0..m {
        rows.hprev[i * ld..i * ld + h].copy_from_slice(&rows.state[0][i * h..(i + 1) * h]);
    }
    cell.begin_forward(rows, d);
    for s in 0..t {
        cell.forward_step(rows, w, s, d);
        if s + 1 < t {
            for i in 0..m {
                let r = i * ld + s * h;
                let (hs, hp) = (&rows.hs[r..r + h], &mut rows.hprev[r + h..r + 2 * h]);
                hp.copy_from_slice(hs);
            }
        }
    }
    for i in 0..m {
        let last = i * ld + (t - 1) * h;
        rows.state[0][i * h..(i + 1) * h].copy_from_slice(&rows.hs[last..last + h]);
    }
    cell.end_forward(rows, d);
}

/// The backward time loop over one block (truncated BPTT: nothing flows into `h_{-1}`).
pub(crate) fn backward_rows(
    cell: &dyn CellImpl,
    rows: &mut LayerRows<'_>,
    dh: &mut [f32],
    scratch: &mut [f32],
    w: &StepWeights<'_>,
    d: Dims,
) {
    scratch.fill(0.0);
    for s in (0..d.t).rev() {
        cell.backward_step(rows, dh, scratch, w, s, d);
    }
}

/// Rows `[m, w]` of a `[m,T,w]` buffer at step `s`, as a matrix view.
pub(crate) fn at_step(buf: &[f32], s: usize, w: usize, d: Dims) -> MatRef<'_> {
    MatRef::rows_strided(&buf[s * w..], d.m, w, d.t * w)
}

/// Rows `[m, w]` of a `[m,T,w]` buffer at step `s`, as a mutable matrix view.
pub(crate) fn at_step_mut(buf: &mut [f32], s: usize, w: usize, d: Dims) -> MatMut<'_> {
    MatMut::with_row_stride(&mut buf[s * w..], d.m, w, d.t * w)
}

/// Columns `c0..c0+cols` of rows `[m, w]` of a `[m,T,w]` buffer at step `s`.
pub(crate) fn cols_at_step(
    buf: &[f32],
    s: usize,
    (c0, cols): (usize, usize),
    w: usize,
    d: Dims,
) -> MatRef<'_> {
    MatRef::rows_strided(&buf[s * w + c0..], d.m, cols, d.t * w)
}

/// Mutable columns `c0..c0+cols` of rows `[m, w]` of a `[m,T,w]` buffer at step `s`.
pub(crate) fn cols_at_step_mut(
    buf: &mut [f32],
    s: usize,
    (c0, cols): (usize, usize),
    w: usize,
    d: Dims,
) -> MatMut<'_> {
    MatMut::with_row_stride(&mut buf[s * w + c0..], d.m, cols, d.t * w)
}

/// `C += [X_1 | X_2 | ... (| 1)]^T B` for activations `X_i [nt, k_i]` and `B [nt, cols]`: a
/// weight gradient (and its bias, with `ones`) in one product. `A^T` is built row-major at
/// the front of `scratch`; the rest is the product's packing scratch.
pub(crate) fn add_outer(
    c: MatMut<'_>,
    parts: &[(&[f32], usize)],
    ones: bool,
    b: MatRef<'_>,
    scratch: &mut [f32],
    par: Par,
) {
    let nt = b.rows();
    let k = transposed_into(scratch, parts, ones, nt, par);
    let (a, rest) = scratch.split_at_mut(k * nt);
    gemm::matmul_packed(c, MatRef::new(a, k, nt), b, Accum::Add, rest);
}

/// Floats of scratch [`add_outer`] needs for a `[k, cols]` gradient over `nt` positions.
pub(crate) fn add_outer_scratch(k: usize, cols: usize, nt: usize) -> Option<usize> {
    k.checked_mul(nt)?
        .checked_add(gemm::scratch_len(k, nt, cols, true))
}

/// Writes `[X_1 | X_2 | ... (| 1)]^T` for activations `X_i [nt, k_i]` row-major at the front
/// of `out` (`[k, nt]`) and returns `k`.
pub(crate) fn transposed_into(
    out: &mut [f32],
    parts: &[(&[f32], usize)],
    ones: bool,
    nt: usize,
    par: Par,
) -> usize {
    let mut row = 0;
    for &(x, w) in parts {
        gemm::copy_rows(&mut out[row * nt..], &MatRef::new(x, nt, w).t(), par);
        row += w;
    }
    if ones {
        out[row * nt..(row + 1) * nt].fill(1.0);
        row += 1;
    }
    row
}
