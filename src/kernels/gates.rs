//! Fused per-row gate kernels of LSTM and GRU cells, forward and backward, vectorised per ISA.
//!
//! One call handles one batch row of one time step in a single pass over the H columns: the
//! vector iteration at column `j` loads the lanes of every gate block (offsets `j`, `H + j`,
//! `2H + j`, `3H + j`), applies the nonlinearities, and writes every output of those columns.
//! Nothing is allocated and nothing is reduced, so each output element depends only on the
//! same column of the inputs: results are bit-identical for given inputs on a given [`Isa`].
//! H is arbitrary, so the gate blocks are not vector-aligned; the loads are unaligned anyway.
//!
//! The LSTM is the one of *Deep Learning from Scratch 2*, ch06 (`TimeLSTM`, gate order
//! f, g, i, o); the GRU is PyTorch's `nn.GRU` (gate order r, z, n; the reset gate multiplies
//! `h Wh_n + bh_n`). tanh is [`super::tanh`]'s; sigmoid is `1 / (1 + exp(-x))` on
//! [`super::softmax`]'s exp, see [`sigmoid_approx`].
#![warn(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

use super::simd::{dispatch, Scalar, Simd};
use super::softmax::exp_v;
use super::tanh::tanh_v;
use crate::cpu::{isa, Isa};

/// Below this, sigmoid returns exactly 0: σ(-87) = 1.6e-38 is still a normal f32, while the
/// results further down would be subnormal (which can cost microcode assists in the products
/// that use them) for an absolute difference under 2e-38.
const SIGMOID_LO: f32 = -87.0;

/// `σ(x) = 1 / (1 + exp(-x))` for one vector.
///
/// Chosen over `0.5 + 0.5 tanh(x/2)` (max abs error 7.4e-8, slightly better) because that form
/// cancels for negative x: 6% relative error at x = -15 and exactly 0 below x = -20. Here the
/// relative error stays below 1.5e-7 down to x = -87 and the max abs error is 8.9e-8 (measured,
/// see the tests). It cannot leave [0, 1]: `exp` is >= 0 (0 below -87.3, +inf above 88.7, never NaN for
/// a non-NaN input), so `1 + e >= 1` and the quotient is in [0, 1] even for ±inf; NaN stays NaN
/// (`zero_where_lt` is false for NaN).
///
/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn sigmoid_v<S: Simd>(x: S::V) -> S::V {
    // SAFETY: ISA supported per the contract (every call below is a plain vector operation).
    unsafe {
        let one = S::splat(1.0);
        let e = exp_v::<S>(S::sub(S::splat(0.0), x));
        S::zero_where_lt(x, SIGMOID_LO, S::div(one, S::add(one, e)))
    }
}

/// Scalar reference of the sigmoid every path uses: `1 / (1 + exp(-x))`, max abs error 8.9e-8
/// and relative error 1.5e-7 (measured), exactly 0 below -87 and for -inf, 1 for +inf,
/// NaN for NaN; never outside [0, 1].
pub fn sigmoid_approx(x: f32) -> f32 {
    // SAFETY: the scalar implementation needs no CPU feature.
    unsafe { sigmoid_v::<Scalar>(x) }
}

/// `s (1 - s)`, the sigmoid's derivative from its output `s`; `1 - s` is exact for `s >= 0.5`
/// (Sterbenz), so the product stays accurate as `s` saturates to 1.
///
/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn dsigmoid<S: Simd>(s: S::V) -> S::V {
    // SAFETY: ISA supported per the contract.
    unsafe { S::mul(s, S::sub(S::splat(1.0), s)) }
}

/// `1 - t²` from a tanh output `t`, as `(1 - t)(1 + t)`: accurate when `t` is near ±1 even
/// without FMA (the same form as [`super::tanh::tanh_backward`]).
///
/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn dtanh<S: Simd>(t: S::V) -> S::V {
    // SAFETY: ISA supported per the contract.
    unsafe {
        let one = S::splat(1.0);
        S::mul(S::sub(one, t), S::add(one, t))
    }
}

/// One step of an LSTM cell on one batch row (the book's `LSTM.forward`), gates activated in
/// place.
///
/// With `A = a + b` split into blocks `[A_f, A_g, A_i, A_o]`: `f = σ(A_f)`, `g = tanh(A_g)`,
/// `i = σ(A_i)`, `o = σ(A_o)`, `c = f·c_prev + g·i`, `tc = tanh(c)`, `h = o·tc`.
///
/// Shapes: `a` `[4H]`, in: `x·Wx + h·Wh` (no bias), out: the gates `[f, g, i, o]`; `b` `[4H]`,
/// the bias; `c_prev` `[H]`; outputs `c`, `tc`, `h` `[H]`. H is `h.len()`.
///
/// Panics if the lengths disagree with H.
pub fn lstm_forward(
    a: &mut [f32],
    b: &[f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
) {
    lstm_forward_with(isa(), a, b, c_prev, c, tc, h)
}

/// [`lstm_forward`] on the code path of `isa`.
///
/// Panics if the lengths disagree with H or `isa` is unsupported.
pub fn lstm_forward_with(
    isa: Isa,
    a: &mut [f32],
    b: &[f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
) {
    lstm_forward_dispatch(isa, a, b, c_prev, c, tc, h)
}

/// Backward of one LSTM step on one batch row (the book's `LSTM.backward`), in place.
///
/// `ds = dc + dh·o·(1 - tc²)`; `dc ← ds·f`; and over the gate blocks
/// `a ← [ds·c_prev·f(1-f), ds·i·(1-g²), ds·g·i(1-i), dh·tc·o(1-o)]`, the gradient w.r.t. the
/// pre-activation `x·Wx + h·Wh + b`.
///
/// Shapes: `a` `[4H]`, in: the gates `[f, g, i, o]` saved by [`lstm_forward`], out: `dA`;
/// `dh` `[H]`, the total gradient w.r.t. this step's `h`; `dc` `[H]`, in: the gradient w.r.t.
/// this step's `c` from the next step (0 at the last), out: the gradient w.r.t. `c_prev`;
/// `c_prev` `[H]`; `tc` `[H]`, `tanh(c)` saved by the forward. H is `dh.len()`.
///
/// Panics if the lengths disagree with H.
pub fn lstm_backward(a: &mut [f32], dh: &[f32], dc: &mut [f32], c_prev: &[f32], tc: &[f32]) {
    lstm_backward_with(isa(), a, dh, dc, c_prev, tc)
}

/// [`lstm_backward`] on the code path of `isa`.
///
/// Panics if the lengths disagree with H or `isa` is unsupported.
pub fn lstm_backward_with(
    isa: Isa,
    a: &mut [f32],
    dh: &[f32],
    dc: &mut [f32],
    c_prev: &[f32],
    tc: &[f32],
) {
    lstm_backward_dispatch(isa, a, dh, dc, c_prev, tc)
}

/// One step of a GRU cell on one batch row, exactly PyTorch's `nn.GRU`, gates activated in
/// place.
///
/// Over the blocks `[_r, _z, _n]`: `r = σ(gx_r + bx_r + gh_r + bh_r)`,
/// `z = σ(gx_z + bx_z + gh_z + bh_z)`, `n = tanh(gx_n + bx_n + r·(gh_n + bh_n))`,
/// `h = (1 - z)·n + z·h_prev` (evaluated as `n + z·(h_prev - n)`).
///
/// Shapes: `gx` `[3H]`, in: `x·Wx` (no bias), out: `[r, z, n]`; `gh` `[3H]`, in: `h_prev·Wh`
/// (no bias), out: `h_prev·Wh + bh` (the backward needs its n block); `bx`, `bh` `[3H]`;
/// `h_prev` `[H]`; output `h` `[H]`. H is `h.len()`.
///
/// Panics if the lengths disagree with H.
pub fn gru_forward(
    gx: &mut [f32],
    gh: &mut [f32],
    bx: &[f32],
    bh: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
) {
    gru_forward_with(isa(), gx, gh, bx, bh, h_prev, h)
}

/// [`gru_forward`] on the code path of `isa`.
///
/// Panics if the lengths disagree with H or `isa` is unsupported.
pub fn gru_forward_with(
    isa: Isa,
    gx: &mut [f32],
    gh: &mut [f32],
    bx: &[f32],
    bh: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
) {
    gru_forward_dispatch(isa, gx, gh, bx, bh, h_prev, h)
}

/// Backward of one GRU step on one batch row, in place.
///
/// `dn = dh·(1 - z)`, `dz = dh·(h_prev - n)`, `dn_pre = dn·(1 - n²)`,
/// `dr_pre = dn_pre·gh_n·r(1 - r)`, `dz_pre = dz·z(1 - z)`; `gx ← [dr_pre, dz_pre, dn_pre]`,
/// `gh ← [dr_pre, dz_pre, dn_pre·r]`, `dh_prev = dh·z`.
///
/// Shapes: `gx` `[3H]`, in: `[r, z, n]` saved by [`gru_forward`], out: the gradient w.r.t.
/// `x·Wx + bx`; `gh` `[3H]`, in: `h_prev·Wh + bh` saved by the forward, out: the gradient
/// w.r.t. it; `dh` `[H]`, the total gradient w.r.t. `h`; `h_prev` `[H]`; `dh_prev` `[H]`, out:
/// the direct path only (the caller adds `dgh·Whᵀ`). H is `dh.len()`.
///
/// Panics if the lengths disagree with H.
pub fn gru_backward(
    gx: &mut [f32],
    gh: &mut [f32],
    dh: &[f32],
    h_prev: &[f32],
    dh_prev: &mut [f32],
) {
    gru_backward_with(isa(), gx, gh, dh, h_prev, dh_prev)
}

/// [`gru_backward`] on the code path of `isa`.
///
/// Panics if the lengths disagree with H or `isa` is unsupported.
pub fn gru_backward_with(
    isa: Isa,
    gx: &mut [f32],
    gh: &mut [f32],
    dh: &[f32],
    h_prev: &[f32],
    dh_prev: &mut [f32],
) {
    gru_backward_dispatch(isa, gx, gh, dh, h_prev, dh_prev)
}

dispatch!(fn lstm_forward_dispatch = lstm_forward_body(
    a: &mut [f32], b: &[f32], c_prev: &[f32], c: &mut [f32], tc: &mut [f32], h: &mut [f32]));
dispatch!(fn lstm_backward_dispatch = lstm_backward_body(
    a: &mut [f32], dh: &[f32], dc: &mut [f32], c_prev: &[f32], tc: &[f32]));
dispatch!(fn gru_forward_dispatch = gru_forward_body(
    gx: &mut [f32], gh: &mut [f32], bx: &[f32], bh: &[f32], h_prev: &[f32], h: &mut [f32]));
dispatch!(fn gru_backward_dispatch = gru_backward_body(
    gx: &mut [f32], gh: &mut [f32], dh: &[f32], h_prev: &[f32], dh_prev: &mut [f32]));

/// Panics, naming the kernel and the slice, unless every `(name, len, want)` has `len == want`.
/// The unsafe column code relies on this check.
fn check_lens(kernel: &str, cols: usize, slices: &[(&str, usize, usize)]) {
    for &(name, len, want) in slices {
        assert!(
            len == want,
            "{kernel}: {name} has {len} f32, expected {want} (H = {cols})"
        );
    }
}

/// The raw slices of one kernel call; [`Columns::columns`] computes every output of a block
/// of adjacent columns, so [`sweep`] is the only loop.
trait Columns {
    /// H, the number of columns.
    fn width(&self) -> usize;

    /// Computes columns `j..j + w` of every output.
    ///
    /// # Safety
    /// `S`'s ISA must be supported; `1 <= w <= S::LANES` and `j + w <= self.width()`.
    unsafe fn columns<S: Simd>(&self, j: usize, w: usize);
}

/// Runs `k` over all H columns: full vectors, then one tail of `H mod LANES` columns.
///
/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn sweep<S: Simd, K: Columns>(k: &K) {
    let n = k.width();
    let mut j = 0;
    while j + S::LANES <= n {
        // SAFETY: w = LANES and j + LANES <= n; ISA supported per the contract.
        unsafe { k.columns::<S>(j, S::LANES) };
        j += S::LANES;
    }
    if j < n {
        // SAFETY: 1 <= n - j < LANES (the loop stopped) and j + (n - j) = n.
        unsafe { k.columns::<S>(j, n - j) };
    }
}

/// Loads the `w` values at `p`: a full vector when `w == S::LANES` (the branch folds away in
/// the main loop, where `w` is that constant), else a tail padded with zeros, which keep the
/// unused lanes finite.
///
/// # Safety
/// `S`'s ISA must be supported; `1 <= w <= S::LANES` and `p` valid for `w` reads.
#[inline(always)]
unsafe fn ld<S: Simd>(p: *const f32, w: usize) -> S::V {
    // SAFETY: exactly the `w` values at p are read, per the contract.
    unsafe {
        if w == S::LANES {
            S::load(p)
        } else {
            S::load_tail(p, w, 0.0)
        }
    }
}

/// Stores the first `w` lanes of `v` to `p` (see [`ld`]).
///
/// # Safety
/// `S`'s ISA must be supported; `1 <= w <= S::LANES` and `p` valid for `w` writes.
#[inline(always)]
unsafe fn st<S: Simd>(p: *mut f32, w: usize, v: S::V) {
    // SAFETY: exactly the `w` values at p are written, per the contract.
    unsafe {
        if w == S::LANES {
            S::store(p, v)
        } else {
            S::store_tail(p, w, v)
        }
    }
}

/// `p[..w] + q[..w]` as a vector (a pre-activation plus its bias).
///
/// # Safety
/// As [`ld`], for both `p` and `q`.
#[inline(always)]
unsafe fn add2<S: Simd>(p: *const f32, q: *const f32, w: usize) -> S::V {
    // SAFETY: forwarded contract of `ld`.
    unsafe { S::add(ld::<S>(p, w), ld::<S>(q, w)) }
}

/// [`lstm_forward`]'s slices as pointers; valid for the lengths checked in `new`.
struct LstmForward {
    a: *mut f32,
    b: *const f32,
    c_prev: *const f32,
    c: *mut f32,
    tc: *mut f32,
    h: *mut f32,
    cols: usize,
}

impl LstmForward {
    fn new(
        a: &mut [f32],
        b: &[f32],
        c_prev: &[f32],
        c: &mut [f32],
        tc: &mut [f32],
        h: &mut [f32],
    ) -> Self {
        let cols = h.len();
        check_lens(
            "lstm_forward",
            cols,
            &[
                ("a", a.len(), 4 * cols),
                ("b", b.len(), 4 * cols),
                ("c_prev", c_prev.len(), cols),
                ("c", c.len(), cols),
                ("tc", tc.len(), cols),
            ],
        );
        LstmForward {
            a: a.as_mut_ptr(),
            b: b.as_ptr(),
            c_prev: c_prev.as_ptr(),
            c: c.as_mut_ptr(),
            tc: tc.as_mut_ptr(),
            h: h.as_mut_ptr(),
            cols,
        }
    }
}

impl Columns for LstmForward {
    fn width(&self) -> usize {
        self.cols
    }

    #[inline(always)]
    unsafe fn columns<S: Simd>(&self, j: usize, w: usize) {
        let n = self.cols;
        // SAFETY: j + w <= H, so every access (gate block k at k*H + j, k < 4, of the 4H
        // slices a and b; j of the H slices) stays inside the slices `new` checked; the
        // slices come from distinct references, so no write aliases another read.
        unsafe {
            let (af, ag, ai, ao) = (
                self.a.add(j),
                self.a.add(n + j),
                self.a.add(2 * n + j),
                self.a.add(3 * n + j),
            );
            let b = self.b.add(j);
            let f = sigmoid_v::<S>(add2::<S>(af, b, w));
            let g = tanh_v::<S>(add2::<S>(ag, b.add(n), w));
            let i = sigmoid_v::<S>(add2::<S>(ai, b.add(2 * n), w));
            let o = sigmoid_v::<S>(add2::<S>(ao, b.add(3 * n), w));
            st::<S>(af, w, f);
            st::<S>(ag, w, g);
            st::<S>(ai, w, i);
            st::<S>(ao, w, o);
            let c = S::mul_add(f, ld::<S>(self.c_prev.add(j), w), S::mul(g, i));
            let t = tanh_v::<S>(c);
            st::<S>(self.c.add(j), w, c);
            st::<S>(self.tc.add(j), w, t);
            st::<S>(self.h.add(j), w, S::mul(o, t));
        }
    }
}

/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn lstm_forward_body<S: Simd>(
    a: &mut [f32],
    b: &[f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
) {
    let k = LstmForward::new(a, b, c_prev, c, tc, h);
    // SAFETY: ISA supported per the contract; `new` checked the lengths.
    unsafe { sweep::<S, _>(&k) }
}

/// [`lstm_backward`]'s slices as pointers; valid for the lengths checked in `new`.
struct LstmBackward {
    a: *mut f32,
    dh: *const f32,
    dc: *mut f32,
    c_prev: *const f32,
    tc: *const f32,
    cols: usize,
}

impl LstmBackward {
    fn new(a: &mut [f32], dh: &[f32], dc: &mut [f32], c_prev: &[f32], tc: &[f32]) -> Self {
        let cols = dh.len();
        check_lens(
            "lstm_backward",
            cols,
            &[
                ("a", a.len(), 4 * cols),
                ("dc", dc.len(), cols),
                ("c_prev", c_prev.len(), cols),
                ("tc", tc.len(), cols),
            ],
        );
        LstmBackward {
            a: a.as_mut_ptr(),
            dh: dh.as_ptr(),
            dc: dc.as_mut_ptr(),
            c_prev: c_prev.as_ptr(),
            tc: tc.as_ptr(),
            cols,
        }
    }
}

impl Columns for LstmBackward {
    fn width(&self) -> usize {
        self.cols
    }

    #[inline(always)]
    unsafe fn columns<S: Simd>(&self, j: usize, w: usize) {
        let n = self.cols;
        // SAFETY: j + w <= H, so every access (gate block k at k*H + j, k < 4, of the 4H
        // slice a; j of the H slices) stays inside the slices `new` checked; the slices come
        // from distinct references, so no write aliases another read.
        unsafe {
            let (af, ag, ai, ao) = (
                self.a.add(j),
                self.a.add(n + j),
                self.a.add(2 * n + j),
                self.a.add(3 * n + j),
            );
            let (f, g, i, o) = (
                ld::<S>(af, w),
                ld::<S>(ag, w),
                ld::<S>(ai, w),
                ld::<S>(ao, w),
            );
            let dh = ld::<S>(self.dh.add(j), w);
            let t = ld::<S>(self.tc.add(j), w);
            // The gradient reaching c: from the next step, and through h = o·tanh(c).
            let ds = S::mul_add(S::mul(dh, o), dtanh::<S>(t), ld::<S>(self.dc.add(j), w));
            st::<S>(self.dc.add(j), w, S::mul(ds, f));
            let df = S::mul(S::mul(ds, ld::<S>(self.c_prev.add(j), w)), dsigmoid::<S>(f));
            let dg = S::mul(S::mul(ds, i), dtanh::<S>(g));
            let di = S::mul(S::mul(ds, g), dsigmoid::<S>(i));
            let d_o = S::mul(S::mul(dh, t), dsigmoid::<S>(o));
            st::<S>(af, w, df);
            st::<S>(ag, w, dg);
            st::<S>(ai, w, di);
            st::<S>(ao, w, d_o);
        }
    }
}

/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn lstm_backward_body<S: Simd>(
    a: &mut [f32],
    dh: &[f32],
    dc: &mut [f32],
    c_prev: &[f32],
    tc: &[f32],
) {
    let k = LstmBackward::new(a, dh, dc, c_prev, tc);
    // SAFETY: ISA supported per the contract; `new` checked the lengths.
    unsafe { sweep::<S, _>(&k) }
}

/// [`gru_forward`]'s slices as pointers; valid for the lengths checked in `new`.
struct GruForward {
    gx: *mut f32,
    gh: *mut f32,
    bx: *const f32,
    bh: *const f32,
    h_prev: *const f32,
    h: *mut f32,
    cols: usize,
}

impl GruForward {
    fn new(
        gx: &mut [f32],
        gh: &mut [f32],
        bx: &[f32],
        bh: &[f32],
        h_prev: &[f32],
        h: &mut [f32],
    ) -> Self {
        let cols = h.len();
        check_lens(
            "gru_forward",
            cols,
            &[
                ("gx", gx.len(), 3 * cols),
                ("gh", gh.len(), 3 * cols),
                ("bx", bx.len(), 3 * cols),
                ("bh", bh.len(), 3 * cols),
                ("h_prev", h_prev.len(), cols),
            ],
        );
        GruForward {
            gx: gx.as_mut_ptr(),
            gh: gh.as_mut_ptr(),
            bx: bx.as_ptr(),
            bh: bh.as_ptr(),
            h_prev: h_prev.as_ptr(),
            h: h.as_mut_ptr(),
            cols,
        }
    }
}

impl Columns for GruForward {
    fn width(&self) -> usize {
        self.cols
    }

    #[inline(always)]
    unsafe fn columns<S: Simd>(&self, j: usize, w: usize) {
        let n = self.cols;
        // SAFETY: j + w <= H, so every access (gate block k at k*H + j, k < 3, of the 3H
        // slices gx, gh, bx, bh; j of the H slices) stays inside the slices `new` checked;
        // the slices come from distinct references, so no write aliases another read.
        unsafe {
            let (xr, xz, xn) = (self.gx.add(j), self.gx.add(n + j), self.gx.add(2 * n + j));
            let (hr, hz, hn) = (self.gh.add(j), self.gh.add(n + j), self.gh.add(2 * n + j));
            let (bx, bh) = (self.bx.add(j), self.bh.add(j));
            let ghr = add2::<S>(hr, bh, w);
            let ghz = add2::<S>(hz, bh.add(n), w);
            let ghn = add2::<S>(hn, bh.add(2 * n), w);
            let r = sigmoid_v::<S>(S::add(add2::<S>(xr, bx, w), ghr));
            let z = sigmoid_v::<S>(S::add(add2::<S>(xz, bx.add(n), w), ghz));
            let nn = tanh_v::<S>(S::mul_add(r, ghn, add2::<S>(xn, bx.add(2 * n), w)));
            // (1 - z)·n + z·h_prev with one multiply: exact n at z = 0, and `h_prev - n` is
            // the same difference the backward's dz uses.
            let hp = ld::<S>(self.h_prev.add(j), w);
            st::<S>(self.h.add(j), w, S::mul_add(z, S::sub(hp, nn), nn));
            st::<S>(xr, w, r);
            st::<S>(xz, w, z);
            st::<S>(xn, w, nn);
            st::<S>(hr, w, ghr);
            st::<S>(hz, w, ghz);
            st::<S>(hn, w, ghn);
        }
    }
}

/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn gru_forward_body<S: Simd>(
    gx: &mut [f32],
    gh: &mut [f32],
    bx: &[f32],
    bh: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
) {
    let k = GruForward::new(gx, gh, bx, bh, h_prev, h);
    // SAFETY: ISA supported per the contract; `new` checked the lengths.
    unsafe { sweep::<S, _>(&k) }
}

/// [`gru_backward`]'s slices as pointers; valid for the lengths checked in `new`.
struct GruBackward {
    gx: *mut f32,
    gh: *mut f32,
    dh: *const f32,
    h_prev: *const f32,
    dh_prev: *mut f32,
    cols: usize,
}

impl GruBackward {
    fn new(
        gx: &mut [f32],
        gh: &mut [f32],
        dh: &[f32],
        h_prev: &[f32],
        dh_prev: &mut [f32],
    ) -> Self {
        let cols = dh.len();
        check_lens(
            "gru_backward",
            cols,
            &[
                ("gx", gx.len(), 3 * cols),
                ("gh", gh.len(), 3 * cols),
                ("h_prev", h_prev.len(), cols),
                ("dh_prev", dh_prev.len(), cols),
            ],
        );
        GruBackward {
            gx: gx.as_mut_ptr(),
            gh: gh.as_mut_ptr(),
            dh: dh.as_ptr(),
            h_prev: h_prev.as_ptr(),
            dh_prev: dh_prev.as_mut_ptr(),
            cols,
        }
    }
}

impl Columns for GruBackward {
    fn width(&self) -> usize {
        self.cols
    }

    #[inline(always)]
    unsafe fn columns<S: Simd>(&self, j: usize, w: usize) {
        let n = self.cols;
        // SAFETY: j + w <= H, so every access (gate block k at k*H + j, k < 3, of the 3H
        // slices gx, gh; j of the H slices) stays inside the slices `new` checked; the slices
        // come from distinct references, so no write aliases another read.
        unsafe {
            let (xr, xz, xn) = (self.gx.add(j), self.gx.add(n + j), self.gx.add(2 * n + j));
            let (hr, hz, hn) = (self.gh.add(j), self.gh.add(n + j), self.gh.add(2 * n + j));
            let (r, z, nn) = (ld::<S>(xr, w), ld::<S>(xz, w), ld::<S>(xn, w));
            let ghn = ld::<S>(hn, w);
            let dh = ld::<S>(self.dh.add(j), w);
            let hp = ld::<S>(self.h_prev.add(j), w);
            let dn = S::mul(dh, S::sub(S::splat(1.0), z));
            let dz = S::mul(dh, S::sub(hp, nn));
            let dn_pre = S::mul(dn, dtanh::<S>(nn));
            let dr_pre = S::mul(S::mul(dn_pre, ghn), dsigmoid::<S>(r));
            let dz_pre = S::mul(dz, dsigmoid::<S>(z));
            st::<S>(xr, w, dr_pre);
            st::<S>(xz, w, dz_pre);
            st::<S>(xn, w, dn_pre);
            st::<S>(hr, w, dr_pre);
            st::<S>(hz, w, dz_pre);
            // r multiplies h_prev·Wh_n + bh_n in the forward.
            st::<S>(hn, w, S::mul(dn_pre, r));
            st::<S>(self.dh_prev.add(j), w, S::mul(dh, z));
        }
    }
}

/// # Safety
/// `S`'s ISA must be supported by the running CPU.
#[inline(always)]
unsafe fn gru_backward_body<S: Simd>(
    gx: &mut [f32],
    gh: &mut [f32],
    dh: &[f32],
    h_prev: &[f32],
    dh_prev: &mut [f32],
) {
    let k = GruBackward::new(gx, gh, dh, h_prev, dh_prev);
    // SAFETY: ISA supported per the contract; `new` checked the lengths.
    unsafe { sweep::<S, _>(&k) }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::kernels::test_rng::Rng;

    const HS: [usize; 8] = [1, 2, 7, 15, 16, 17, 33, 100];
    /// Required accuracy vs the f64 reference: absolute below 1, relative above.
    const TOL: f64 = 1e-6;
    /// Allowed difference from the portable path (the scalar reference, lane by lane), in
    /// units of `f32::EPSILON * max(1, |x|)`: the paths differ only by FMA rounding.
    const ULPS: f64 = 4.0;
    /// Magnitudes of the saturating rows.
    const LARGE: [f32; 8] = [30.0, -30.0, 1e4, -1e4, 87.5, -87.5, 100.0, -100.0];

    #[derive(Clone, Copy, Debug)]
    enum Rows {
        /// Pre-activations uniform in [-6, 6].
        Typical,
        /// Half of the pre-activations from [`LARGE`], the others uniform in [-6, 6].
        Saturating,
    }

    fn pre_acts(rng: &mut Rng, n: usize, rows: Rows) -> Vec<f32> {
        (0..n)
            .map(|_| {
                let u = rng.uniform(-6.0, 6.0);
                let k = rng.next_u64() as usize % (2 * LARGE.len());
                match rows {
                    Rows::Saturating if k < LARGE.len() => LARGE[k],
                    _ => u,
                }
            })
            .collect()
    }

    fn sigmoid64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    fn f64s(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| v as f64).collect()
    }

    fn sum64(x: &[f32], y: &[f32]) -> Vec<f64> {
        x.iter()
            .zip(y)
            .map(|(&a, &b)| a as f64 + b as f64)
            .collect()
    }

    /// Worst errors seen by [`compare`] over all outputs of one kind of rows, for the summary.
    #[derive(Default, Debug)]
    struct Worst {
        /// `|got - f64| / max(1, |f64|)`.
        vs_f64: f64,
        /// `|got - portable|` in units of `f32::EPSILON * max(1, |x|)`.
        ulps: f64,
    }

    /// Checks one output of a kernel: finite, within [`TOL`] of the f64 reference and within
    /// [`ULPS`] of the portable path, each plus `extra[k]` (an absolute allowance for the f32
    /// rounding of inputs that the formula amplifies; empty for none).
    fn compare(
        ctx: &str,
        got: &[f32],
        want: &[f64],
        portable: &[f32],
        extra: &[f64],
        worst: &mut Worst,
    ) {
        assert_eq!(got.len(), want.len(), "{ctx}: length");
        for k in 0..got.len() {
            let (g, w, p) = (got[k] as f64, want[k], portable[k] as f64);
            let x = extra.get(k).copied().unwrap_or(0.0);
            assert!(g.is_finite(), "{ctx}[{k}] = {g} is not finite");
            let err = (g - w).abs();
            assert!(
                err <= TOL * w.abs().max(1.0) + x,
                "{ctx}[{k}] = {g}, f64 reference {w} (err {err:e}, allowance {x:e})"
            );
            let unit = f32::EPSILON as f64 * g.abs().max(p.abs()).max(1.0);
            let diff = (g - p).abs();
            assert!(
                diff <= ULPS * unit + x,
                "{ctx}[{k}] = {g}, portable {p} ({} ulps, allowance {x:e})",
                diff / unit
            );
            worst.vs_f64 = worst.vs_f64.max(err / w.abs().max(1.0));
            worst.ulps = worst.ulps.max(diff / unit);
        }
    }

    fn assert_in(ctx: &str, xs: &[f32], lo: f32, hi: f32) {
        for (k, &x) in xs.iter().enumerate() {
            assert!(x >= lo && x <= hi, "{ctx}[{k}] = {x} outside [{lo}, {hi}]");
        }
    }

    // ---- f64 references, written from the formulas ----

    /// LSTM forward from the summed pre-activation `A = a + b`: (gates, c, tanh(c), h).
    fn lstm_forward_ref(pre: &[f64], c_prev: &[f64]) -> [Vec<f64>; 4] {
        let n = c_prev.len();
        let (mut gates, mut c, mut tc, mut h) =
            (vec![0.0; 4 * n], vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        for j in 0..n {
            let f = sigmoid64(pre[j]);
            let g = pre[n + j].tanh();
            let i = sigmoid64(pre[2 * n + j]);
            let o = sigmoid64(pre[3 * n + j]);
            (gates[j], gates[n + j], gates[2 * n + j], gates[3 * n + j]) = (f, g, i, o);
            c[j] = f * c_prev[j] + g * i;
            tc[j] = c[j].tanh();
            h[j] = o * tc[j];
        }
        [gates, c, tc, h]
    }

    /// LSTM backward: (dA, dc_prev).
    fn lstm_backward_ref(
        gates: &[f64],
        dh: &[f64],
        dc: &[f64],
        c_prev: &[f64],
        tc: &[f64],
    ) -> [Vec<f64>; 2] {
        let n = dh.len();
        let (mut da, mut dc_prev) = (vec![0.0; 4 * n], vec![0.0; n]);
        for j in 0..n {
            let (f, g, i, o) = (gates[j], gates[n + j], gates[2 * n + j], gates[3 * n + j]);
            let ds = dc[j] + dh[j] * o * (1.0 - tc[j] * tc[j]);
            dc_prev[j] = ds * f;
            da[j] = ds * c_prev[j] * f * (1.0 - f);
            da[n + j] = ds * i * (1.0 - g * g);
            da[2 * n + j] = ds * g * i * (1.0 - i);
            da[3 * n + j] = dh[j] * tc[j] * o * (1.0 - o);
        }
        [da, dc_prev]
    }

    /// GRU forward from `px = x·Wx + bx` and `ph = h_prev·Wh + bh`: (gates, h).
    fn gru_forward_ref(px: &[f64], ph: &[f64], h_prev: &[f64]) -> [Vec<f64>; 2] {
        let n = h_prev.len();
        let (mut gates, mut h) = (vec![0.0; 3 * n], vec![0.0; n]);
        for j in 0..n {
            let r = sigmoid64(px[j] + ph[j]);
            let z = sigmoid64(px[n + j] + ph[n + j]);
            let nn = (px[2 * n + j] + r * ph[2 * n + j]).tanh();
            (gates[j], gates[n + j], gates[2 * n + j]) = (r, z, nn);
            h[j] = (1.0 - z) * nn + z * h_prev[j];
        }
        [gates, h]
    }

    /// GRU backward: (dgx, dgh, dh_prev).
    fn gru_backward_ref(gates: &[f64], ph: &[f64], dh: &[f64], h_prev: &[f64]) -> [Vec<f64>; 3] {
        let n = dh.len();
        let (mut dgx, mut dgh, mut dh_prev) = (vec![0.0; 3 * n], vec![0.0; 3 * n], vec![0.0; n]);
        for j in 0..n {
            let (r, z, nn) = (gates[j], gates[n + j], gates[2 * n + j]);
            let dn = dh[j] * (1.0 - z);
            let dz = dh[j] * (h_prev[j] - nn);
            let dn_pre = dn * (1.0 - nn * nn);
            let dr_pre = dn_pre * ph[2 * n + j] * r * (1.0 - r);
            let dz_pre = dz * z * (1.0 - z);
            (dgx[j], dgx[n + j], dgx[2 * n + j]) = (dr_pre, dz_pre, dn_pre);
            (dgh[j], dgh[n + j], dgh[2 * n + j]) = (dr_pre, dz_pre, dn_pre * r);
            dh_prev[j] = dh[j] * z;
        }
        [dgx, dgh, dh_prev]
    }

    // ---- the kernels on fresh copies of their inputs ----

    /// (gates, c, tc, h).
    fn run_lstm_forward(isa: Isa, a: &[f32], b: &[f32], c_prev: &[f32]) -> [Vec<f32>; 4] {
        let n = c_prev.len();
        let (mut a, mut c, mut tc, mut h) = (a.to_vec(), vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        lstm_forward_with(isa, &mut a, b, c_prev, &mut c, &mut tc, &mut h);
        [a, c, tc, h]
    }

    /// (dA, dc_prev).
    fn run_lstm_backward(
        isa: Isa,
        gates: &[f32],
        dh: &[f32],
        dc: &[f32],
        c_prev: &[f32],
        tc: &[f32],
    ) -> [Vec<f32>; 2] {
        let (mut a, mut dc) = (gates.to_vec(), dc.to_vec());
        lstm_backward_with(isa, &mut a, dh, &mut dc, c_prev, tc);
        [a, dc]
    }

    /// (gates, gh + bh, h).
    fn run_gru_forward(
        isa: Isa,
        gx: &[f32],
        gh: &[f32],
        bx: &[f32],
        bh: &[f32],
        h_prev: &[f32],
    ) -> [Vec<f32>; 3] {
        let (mut gx, mut gh, mut h) = (gx.to_vec(), gh.to_vec(), vec![0.0; h_prev.len()]);
        gru_forward_with(isa, &mut gx, &mut gh, bx, bh, h_prev, &mut h);
        [gx, gh, h]
    }

    /// (dgx, dgh, dh_prev).
    fn run_gru_backward(
        isa: Isa,
        gates: &[f32],
        ghb: &[f32],
        dh: &[f32],
        h_prev: &[f32],
    ) -> [Vec<f32>; 3] {
        let (mut gx, mut gh, mut dh_prev) = (gates.to_vec(), ghb.to_vec(), vec![0.0; dh.len()]);
        gru_backward_with(isa, &mut gx, &mut gh, dh, h_prev, &mut dh_prev);
        [gx, gh, dh_prev]
    }

    /// Every (H, rows) case with its deterministic random generator.
    fn cases() -> impl Iterator<Item = (usize, Rows, Rng)> {
        HS.into_iter().flat_map(|n| {
            [Rows::Typical, Rows::Saturating]
                .into_iter()
                .enumerate()
                .map(move |(k, rows)| (n, rows, Rng(1000 * n as u64 + k as u64)))
        })
    }

    /// LSTM inputs: (a, b, c_prev).
    fn lstm_inputs(rng: &mut Rng, n: usize, rows: Rows) -> [Vec<f32>; 3] {
        let a = pre_acts(rng, 4 * n, rows);
        [a, rng.vec(4 * n, -1.0, 1.0), rng.vec(n, -3.0, 3.0)]
    }

    /// GRU inputs: (gx, gh, bx, bh, h_prev).
    fn gru_inputs(rng: &mut Rng, n: usize, rows: Rows) -> [Vec<f32>; 5] {
        let gx = pre_acts(rng, 3 * n, rows);
        let gh = pre_acts(rng, 3 * n, rows);
        [
            gx,
            gh,
            rng.vec(3 * n, -1.0, 1.0),
            rng.vec(3 * n, -1.0, 1.0),
            rng.vec(n, -1.0, 1.0),
        ]
    }

    #[test]
    fn lstm_forward_matches_f64_on_every_isa() {
        let mut worst: [Worst; 2] = Default::default();
        for (n, rows, mut rng) in cases() {
            let [a, b, cp] = lstm_inputs(&mut rng, n, rows);
            let want = lstm_forward_ref(&sum64(&a, &b), &f64s(&cp));
            let port = run_lstm_forward(Isa::Portable, &a, &b, &cp);
            for isa in Isa::available() {
                let got = run_lstm_forward(isa, &a, &b, &cp);
                for (k, name) in ["gates", "c", "tc", "h"].iter().enumerate() {
                    let ctx = format!("{isa:?} H={n} {rows:?} lstm_forward {name}");
                    compare(
                        &ctx,
                        &got[k],
                        &want[k],
                        &port[k],
                        &[],
                        &mut worst[rows as usize],
                    );
                }
                let ctx = format!("{isa:?} H={n} {rows:?} lstm_forward");
                let g = &got[0];
                assert_in(&format!("{ctx} f"), &g[..n], 0.0, 1.0);
                assert_in(&format!("{ctx} g"), &g[n..2 * n], -1.0, 1.0);
                assert_in(&format!("{ctx} i, o"), &g[2 * n..], 0.0, 1.0);
                assert_in(&format!("{ctx} tc"), &got[2], -1.0, 1.0);
            }
        }
        println!("lstm_forward [Typical, Saturating]: {worst:?}");
    }

    #[test]
    fn lstm_backward_matches_f64_on_every_isa() {
        let mut worst: [Worst; 2] = Default::default();
        for (n, rows, mut rng) in cases() {
            let [a, b, cp] = lstm_inputs(&mut rng, n, rows);
            let [gates, _, tc, _] = run_lstm_forward(Isa::Portable, &a, &b, &cp);
            let (dh, dc) = (rng.vec(n, -2.0, 2.0), rng.vec(n, -2.0, 2.0));
            let want = lstm_backward_ref(
                &f64s(&gates),
                &f64s(&dh),
                &f64s(&dc),
                &f64s(&cp),
                &f64s(&tc),
            );
            let port = run_lstm_backward(Isa::Portable, &gates, &dh, &dc, &cp, &tc);
            for isa in Isa::available() {
                let got = run_lstm_backward(isa, &gates, &dh, &dc, &cp, &tc);
                for (k, name) in ["dA", "dc_prev"].iter().enumerate() {
                    let ctx = format!("{isa:?} H={n} {rows:?} lstm_backward {name}");
                    compare(
                        &ctx,
                        &got[k],
                        &want[k],
                        &port[k],
                        &[],
                        &mut worst[rows as usize],
                    );
                }
            }
        }
        println!("lstm_backward [Typical, Saturating]: {worst:?}");
    }

    #[test]
    fn gru_forward_matches_f64_on_every_isa() {
        let mut worst: [Worst; 2] = Default::default();
        for (n, rows, mut rng) in cases() {
            let [gx, gh, bx, bh, hp] = gru_inputs(&mut rng, n, rows);
            let (px, ph) = (sum64(&gx, &bx), sum64(&gh, &bh));
            let [gates, h] = gru_forward_ref(&px, &ph, &f64s(&hp));
            // The f32 sums (gx + bx) + (gh + bh) round by up to an ulp of |gx|+|bx|+|gh|+|bh|
            // (large when ±1e4 cancel); σ scales that by σ' = s(1-s). n = tanh(px_n + r·ph_n)
            // also amplifies r's error by |ph_n|; h inherits (1-z) of n's and |h_prev-n| of z's.
            let eps = f32::EPSILON as f64;
            let mag = |v: &[f32], b: &[f32], k: usize| (v[k].abs() + b[k].abs()) as f64;
            let mut extra_g = vec![0.0; 3 * n];
            let mut extra_h = vec![0.0; n];
            for j in 0..n {
                for k in [j, n + j] {
                    let s = gates[k];
                    extra_g[k] = s * (1.0 - s) * eps * (mag(&gx, &bx, k) + mag(&gh, &bh, k));
                }
                let (r, z, nn) = (gates[j], gates[n + j], gates[2 * n + j]);
                let k = 2 * n + j;
                let d_arg = (2e-7 + extra_g[j]) * ph[k].abs()
                    + eps * (mag(&gx, &bx, k) + 2.0 * r * mag(&gh, &bh, k));
                extra_g[k] = (1.0 - nn * nn) * d_arg;
                extra_h[j] = (1.0 - z) * extra_g[k] + (hp[j] as f64 - nn).abs() * extra_g[n + j];
            }
            let port = run_gru_forward(Isa::Portable, &gx, &gh, &bx, &bh, &hp);
            for isa in Isa::available() {
                let got = run_gru_forward(isa, &gx, &gh, &bx, &bh, &hp);
                let ctx = format!("{isa:?} H={n} {rows:?} gru_forward");
                compare(
                    &format!("{ctx} gates"),
                    &got[0],
                    &gates,
                    &port[0],
                    &extra_g,
                    &mut worst[rows as usize],
                );
                compare(
                    &format!("{ctx} gh+bh"),
                    &got[1],
                    &ph,
                    &port[1],
                    &[],
                    &mut worst[rows as usize],
                );
                compare(
                    &format!("{ctx} h"),
                    &got[2],
                    &h,
                    &port[2],
                    &extra_h,
                    &mut worst[rows as usize],
                );
                assert_in(&format!("{ctx} r, z"), &got[0][..2 * n], 0.0, 1.0);
                assert_in(&format!("{ctx} n"), &got[0][2 * n..], -1.0, 1.0);
            }
        }
        println!("gru_forward [Typical, Saturating]: {worst:?}");
    }

    #[test]
    fn gru_backward_matches_f64_on_every_isa() {
        let mut worst: [Worst; 2] = Default::default();
        for (n, rows, mut rng) in cases() {
            let [gx, gh, bx, bh, hp] = gru_inputs(&mut rng, n, rows);
            let [gates, ghb, _] = run_gru_forward(Isa::Portable, &gx, &gh, &bx, &bh, &hp);
            let dh = rng.vec(n, -2.0, 2.0);
            let want = gru_backward_ref(&f64s(&gates), &f64s(&ghb), &f64s(&dh), &f64s(&hp));
            let port = run_gru_backward(Isa::Portable, &gates, &ghb, &dh, &hp);
            for isa in Isa::available() {
                let got = run_gru_backward(isa, &gates, &ghb, &dh, &hp);
                for (k, name) in ["dgx", "dgh", "dh_prev"].iter().enumerate() {
                    let ctx = format!("{isa:?} H={n} {rows:?} gru_backward {name}");
                    compare(
                        &ctx,
                        &got[k],
                        &want[k],
                        &port[k],
                        &[],
                        &mut worst[rows as usize],
                    );
                }
            }
        }
        println!("gru_backward [Typical, Saturating]: {worst:?}");
    }

    /// Central difference of `f` at `x[k]` in f64.
    fn central_diff(x: &[f64], k: usize, f: impl Fn(&[f64]) -> f64) -> f64 {
        let eps = 1e-6;
        let (mut p, mut m) = (x.to_vec(), x.to_vec());
        p[k] += eps;
        m[k] -= eps;
        (f(&p) - f(&m)) / (2.0 * eps)
    }

    fn assert_grad(ctx: &str, analytic: f64, numeric: f64) {
        assert!(
            (analytic - numeric).abs() <= 1e-7 * analytic.abs().max(1.0),
            "{ctx}: backward {analytic}, finite difference {numeric}"
        );
    }

    /// The reference backward formulas are the derivative of the reference forward, so the
    /// kernels above are checked against the math, not just against a transcription.
    #[test]
    fn lstm_backward_formulas_are_the_gradient_of_the_forward() {
        let mut rng = Rng(11);
        let n = 5;
        let pre = f64s(&rng.vec(4 * n, -3.0, 3.0));
        let cp = f64s(&rng.vec(n, -2.0, 2.0));
        let (wh, wc) = (f64s(&rng.vec(n, -1.0, 1.0)), f64s(&rng.vec(n, -1.0, 1.0)));
        // L = Σ wh·h + Σ wc·c: dL/dh = wh, and wc is the gradient reaching c from outside.
        let objective = |pre: &[f64], cp: &[f64]| {
            let [_, c, _, h] = lstm_forward_ref(pre, cp);
            (0..n).map(|j| wh[j] * h[j] + wc[j] * c[j]).sum::<f64>()
        };
        let [gates, _, tc, _] = lstm_forward_ref(&pre, &cp);
        let [da, dc_prev] = lstm_backward_ref(&gates, &wh, &wc, &cp, &tc);
        for (k, &d) in da.iter().enumerate() {
            let num = central_diff(&pre, k, |p| objective(p, &cp));
            assert_grad(&format!("dA[{k}]"), d, num);
        }
        for (j, &d) in dc_prev.iter().enumerate() {
            let num = central_diff(&cp, j, |c| objective(&pre, c));
            assert_grad(&format!("dc_prev[{j}]"), d, num);
        }
    }

    #[test]
    fn gru_backward_formulas_are_the_gradient_of_the_forward() {
        let mut rng = Rng(12);
        let n = 5;
        let px = f64s(&rng.vec(3 * n, -3.0, 3.0));
        let ph = f64s(&rng.vec(3 * n, -3.0, 3.0));
        let hp = f64s(&rng.vec(n, -1.0, 1.0));
        let wh = f64s(&rng.vec(n, -1.0, 1.0));
        // L = Σ wh·h, with h_prev·Wh + bh held fixed (its path is the caller's).
        let objective = |px: &[f64], ph: &[f64], hp: &[f64]| {
            let [_, h] = gru_forward_ref(px, ph, hp);
            (0..n).map(|j| wh[j] * h[j]).sum::<f64>()
        };
        let [gates, _] = gru_forward_ref(&px, &ph, &hp);
        let [dgx, dgh, dh_prev] = gru_backward_ref(&gates, &ph, &wh, &hp);
        for k in 0..3 * n {
            assert_grad(
                &format!("dgx[{k}]"),
                dgx[k],
                central_diff(&px, k, |p| objective(p, &ph, &hp)),
            );
            assert_grad(
                &format!("dgh[{k}]"),
                dgh[k],
                central_diff(&ph, k, |p| objective(&px, p, &hp)),
            );
        }
        for (j, &d) in dh_prev.iter().enumerate() {
            let num = central_diff(&hp, j, |h| objective(&px, &ph, h));
            assert_grad(&format!("dh_prev[{j}]"), d, num);
        }
    }

    // ---- sigmoid ----

    /// The vector sigmoid over a slice, for testing every ISA's clone.
    struct SigmoidSlice {
        x: *mut f32,
        cols: usize,
    }

    impl Columns for SigmoidSlice {
        fn width(&self) -> usize {
            self.cols
        }

        #[inline(always)]
        unsafe fn columns<S: Simd>(&self, j: usize, w: usize) {
            // SAFETY: j + w <= cols, the length of the slice `x` points into.
            unsafe { st::<S>(self.x.add(j), w, sigmoid_v::<S>(ld::<S>(self.x.add(j), w))) }
        }
    }

    /// # Safety
    /// `S`'s ISA must be supported by the running CPU.
    #[inline(always)]
    unsafe fn sigmoid_body<S: Simd>(x: &mut [f32]) {
        let k = SigmoidSlice {
            x: x.as_mut_ptr(),
            cols: x.len(),
        };
        // SAFETY: ISA supported per the contract; the pointer and length come from `x`.
        unsafe { sweep::<S, _>(&k) }
    }

    dispatch!(fn sigmoid_dispatch = sigmoid_body(x: &mut [f32]));

    /// Dense sweep of [-30, 30].
    fn sweep_inputs() -> Vec<f32> {
        let n = 6_000_000;
        (0..=n)
            .map(|i| -30.0 + 60.0 * i as f32 / n as f32)
            .collect()
    }

    #[test]
    fn sigmoid_accurate_on_dense_sweep() {
        let xs = sweep_inputs();
        let scalar: Vec<f32> = xs.iter().map(|&x| sigmoid_approx(x)).collect();
        for isa in Isa::available() {
            let mut ys = xs.clone();
            sigmoid_dispatch(isa, &mut ys);
            let (mut abs, mut rel, mut vs_scalar) = (0.0f64, 0.0f64, 0u32);
            for ((&x, &y), &s) in xs.iter().zip(&ys).zip(&scalar) {
                let want = sigmoid64(x as f64);
                abs = abs.max((y as f64 - want).abs());
                rel = rel.max((y as f64 / want - 1.0).abs());
                vs_scalar = vs_scalar.max(y.to_bits().abs_diff(s.to_bits()));
            }
            println!(
                "{isa:?}: sigmoid max abs err {abs:e}, rel err {rel:e}, vs scalar {vs_scalar} ulps"
            );
            // Measured 8.9e-8 abs, 1.5e-7 rel on every path; the FMA paths are <= 4 ulps from
            // the scalar one (the exp polynomial rounds differently with FMA).
            assert!(abs < 2e-7, "{isa:?}: sigmoid max abs err {abs:e}");
            assert!(rel < 2.5e-7, "{isa:?}: sigmoid max rel err {rel:e}");
            assert!(
                vs_scalar <= 4,
                "{isa:?}: sigmoid vs scalar {vs_scalar} ulps"
            );
        }
    }

    #[test]
    fn sigmoid_relative_accuracy_down_to_the_cutoff() {
        // Where σ is tiny the absolute bound says little; check relative error to -87.
        let worst = (0..=1_000_000)
            .map(|i| SIGMOID_LO + (0.0 - SIGMOID_LO) * i as f32 / 1_000_000.0)
            .map(|x| (sigmoid_approx(x) as f64 / sigmoid64(x as f64) - 1.0).abs())
            .fold(0.0, f64::max);
        println!("sigmoid rel err on [-87, 0]: {worst:e}");
        assert!(worst < 2.5e-7, "sigmoid rel err {worst:e}");
    }

    #[test]
    fn sigmoid_special_values() {
        let specials = [
            0.0,
            1e-30,
            1e-7,
            0.5,
            1.0,
            16.0,
            17.0,
            30.0,
            86.9,
            87.0,
            87.5,
            88.0,
            88.8,
            89.0,
            100.0,
            1e4,
            1e30,
            f32::MAX,
            f32::INFINITY,
        ];
        let mut xs: Vec<f32> = specials.iter().flat_map(|&s| [s, -s]).collect();
        xs.extend((0..=20_000).map(|i| -100.0 + 0.01 * i as f32));
        for isa in Isa::available() {
            let mut ys = xs.clone();
            sigmoid_dispatch(isa, &mut ys);
            for (&x, &y) in xs.iter().zip(&ys) {
                assert!((0.0..=1.0).contains(&y), "{isa:?}: σ({x}) = {y}");
                // Never subnormal: exactly 0 below the cutoff, normal above.
                assert!(
                    y == 0.0 || y >= f32::MIN_POSITIVE,
                    "{isa:?}: σ({x}) = {y:e}"
                );
                if x < SIGMOID_LO {
                    assert_eq!(y, 0.0, "{isa:?}: σ({x})");
                }
                if x >= 17.0 {
                    assert_eq!(y, 1.0, "{isa:?}: σ({x})");
                }
            }
            let mut v = [
                0.0f32,
                -0.0,
                f32::NAN,
                -f32::NAN,
                f32::INFINITY,
                f32::NEG_INFINITY,
            ];
            sigmoid_dispatch(isa, &mut v);
            assert_eq!(&v[..2], &[0.5, 0.5], "{isa:?}");
            assert!(
                v[2].is_nan() && v[3].is_nan(),
                "{isa:?}: σ(NaN) = {:?}",
                &v[2..4]
            );
            assert_eq!(&v[4..], &[1.0, 0.0], "{isa:?}");
        }
        assert_eq!(sigmoid_approx(f32::INFINITY), 1.0);
        assert_eq!(sigmoid_approx(f32::NEG_INFINITY), 0.0);
        assert!(sigmoid_approx(f32::NAN).is_nan());
    }

    // ---- bounds and panics ----

    const SENTINEL: f32 = 12345.0;

    /// `v` followed by 16 sentinels.
    fn guarded(v: &[f32]) -> Vec<f32> {
        let mut g = v.to_vec();
        g.extend([SENTINEL; 16]);
        g
    }

    fn assert_guard(ctx: &str, g: &[f32], len: usize) {
        assert!(
            g[len..].iter().all(|&v| v == SENTINEL),
            "{ctx}: wrote past the slice"
        );
    }

    #[test]
    fn tails_do_not_write_past_the_slices() {
        for isa in Isa::available() {
            for n in [1usize, 7, 15, 17, 33] {
                let ctx = format!("{isa:?} H={n}");
                let mut rng = Rng(n as u64);
                let v = |rng: &mut Rng, k: usize| guarded(&rng.vec(k * n, -2.0, 2.0));
                let (mut a, b, cp) = (v(&mut rng, 4), v(&mut rng, 4), v(&mut rng, 1));
                let (mut c, mut tc, mut h) = (v(&mut rng, 1), v(&mut rng, 1), v(&mut rng, 1));
                lstm_forward_with(
                    isa,
                    &mut a[..4 * n],
                    &b[..4 * n],
                    &cp[..n],
                    &mut c[..n],
                    &mut tc[..n],
                    &mut h[..n],
                );
                for (name, g, len) in [("a", &a, 4 * n), ("c", &c, n), ("tc", &tc, n), ("h", &h, n)]
                {
                    assert_guard(&format!("{ctx} lstm_forward {name}"), g, len);
                }
                let mut dc = v(&mut rng, 1);
                lstm_backward_with(
                    isa,
                    &mut a[..4 * n],
                    &h[..n],
                    &mut dc[..n],
                    &cp[..n],
                    &tc[..n],
                );
                assert_guard(&format!("{ctx} lstm_backward a"), &a, 4 * n);
                assert_guard(&format!("{ctx} lstm_backward dc"), &dc, n);

                let (mut gx, mut gh, bx, bh) = (
                    v(&mut rng, 3),
                    v(&mut rng, 3),
                    v(&mut rng, 3),
                    v(&mut rng, 3),
                );
                gru_forward_with(
                    isa,
                    &mut gx[..3 * n],
                    &mut gh[..3 * n],
                    &bx[..3 * n],
                    &bh[..3 * n],
                    &cp[..n],
                    &mut h[..n],
                );
                for (name, g, len) in [("gx", &gx, 3 * n), ("gh", &gh, 3 * n), ("h", &h, n)] {
                    assert_guard(&format!("{ctx} gru_forward {name}"), g, len);
                }
                let mut dh_prev = v(&mut rng, 1);
                gru_backward_with(
                    isa,
                    &mut gx[..3 * n],
                    &mut gh[..3 * n],
                    &h[..n],
                    &cp[..n],
                    &mut dh_prev[..n],
                );
                for (name, g, len) in [
                    ("gx", &gx, 3 * n),
                    ("gh", &gh, 3 * n),
                    ("dh_prev", &dh_prev, n),
                ] {
                    assert_guard(&format!("{ctx} gru_backward {name}"), g, len);
                }
            }
        }
    }

    #[test]
    fn empty_rows_are_fine() {
        lstm_forward(&mut [], &[], &[], &mut [], &mut [], &mut []);
        lstm_backward(&mut [], &[], &mut [], &[], &[]);
        gru_forward(&mut [], &mut [], &[], &[], &[], &mut []);
        gru_backward(&mut [], &mut [], &[], &[], &mut []);
    }

    #[test]
    #[should_panic(expected = "lstm_forward: b has 7 f32, expected 8 (H = 2)")]
    fn lstm_forward_length_mismatch_panics() {
        lstm_forward(
            &mut [0.0; 8],
            &[0.0; 7],
            &[0.0; 2],
            &mut [0.0; 2],
            &mut [0.0; 2],
            &mut [0.0; 2],
        );
    }

    #[test]
    #[should_panic(expected = "lstm_backward: a has 12 f32, expected 8 (H = 2)")]
    fn lstm_backward_length_mismatch_panics() {
        lstm_backward(
            &mut [0.0; 12],
            &[0.0; 2],
            &mut [0.0; 2],
            &[0.0; 2],
            &[0.0; 2],
        );
    }

    #[test]
    #[should_panic(expected = "gru_forward: h_prev has 3 f32, expected 2 (H = 2)")]
    fn gru_forward_length_mismatch_panics() {
        gru_forward(
            &mut [0.0; 6],
            &mut [0.0; 6],
            &[0.0; 6],
            &[0.0; 6],
            &[0.0; 3],
            &mut [0.0; 2],
        );
    }

    #[test]
    #[should_panic(expected = "gru_backward: dh_prev has 1 f32, expected 2 (H = 2)")]
    fn gru_backward_length_mismatch_panics() {
        gru_backward(
            &mut [0.0; 6],
            &mut [0.0; 6],
            &[0.0; 2],
            &[0.0; 2],
            &mut [0.0; 1],
        );
    }
}
