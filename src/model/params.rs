//! Parameters (and gradients, which have the same layout) in one flat buffer.

use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

use super::config::Config;

/// The book's parameter names, in storage order.
///
/// ```
/// use rnnlm::{model::params::PARAM_NAMES, Config, Params};
/// let cfg = Config::new(10, 4, 6).unwrap();
/// let shapes: Vec<_> = PARAM_NAMES.iter().zip(Params::shapes(&cfg)).collect();
/// assert_eq!(shapes[2], (&"rnn.Wh", vec![6, 6]));
/// assert_eq!(PARAM_NAMES[5], "affine.b");
/// ```
pub const PARAM_NAMES: [&str; 6] = [
    "embed.W", "rnn.Wx", "rnn.Wh", "rnn.b", "affine.W", "affine.b",
];

/// Weights of a `SimpleRnnlm` in one contiguous f32 buffer, so the optimizer and gradient
/// clipping are single loops. Gradients use the same type.
///
/// Layout (row-major): `embed.W [V,D]`, `rnn.Wx [D,H]`, `rnn.Wh [H,H]`, `rnn.b [H]`,
/// `affine.W [H,V]`, `affine.b [V]`.
///
/// ```
/// use rnnlm::{Config, Params};
/// let cfg = Config::new(10, 4, 6).unwrap();
/// let mut p = Params::zeros(cfg);
/// p.views_mut().b.fill(1.0); // rnn.b, after embed.W, rnn.Wx and rnn.Wh
/// let start = 10 * 4 + 4 * 6 + 6 * 6;
/// assert_eq!(p.as_slice()[start..start + 6], [1.0; 6]);
/// assert_eq!(p.as_slice().iter().sum::<f32>(), 6.0);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Params {
    cfg: Config,
    data: Vec<f32>,
}

/// Borrowed views of every tensor.
///
/// ```
/// use rnnlm::{Config, Params};
/// let p = Params::zeros(Config::new(10, 4, 6).unwrap());
/// let v = p.views();
/// assert_eq!((v.embed_w.len(), v.wx.len(), v.wh.len()), (10 * 4, 4 * 6, 6 * 6));
/// assert_eq!((v.b.len(), v.affine_w.len(), v.affine_b.len()), (6, 6 * 10, 10));
/// ```
#[derive(Debug)]
pub struct ParamRefs<'a> {
    /// `[V,D]`
    pub embed_w: &'a [f32],
    /// `[D,H]`
    pub wx: &'a [f32],
    /// `[H,H]`
    pub wh: &'a [f32],
    /// `[H]`
    pub b: &'a [f32],
    /// `[H,V]`
    pub affine_w: &'a [f32],
    /// `[V]`
    pub affine_b: &'a [f32],
}

/// Mutable views of every tensor (disjoint borrows of the flat buffer).
///
/// ```
/// use rnnlm::{Config, Params};
/// let mut p = Params::zeros(Config::new(10, 4, 6).unwrap());
/// let m = p.views_mut(); // every tensor mutable at once
/// m.wx.fill(1.0);
/// m.affine_b[3] = 2.0;
/// assert_eq!(p.views().wx, [1.0; 4 * 6]);
/// assert_eq!(p.views().affine_b[3], 2.0);
/// ```
#[derive(Debug)]
pub struct ParamMuts<'a> {
    /// `[V,D]`
    pub embed_w: &'a mut [f32],
    /// `[D,H]`
    pub wx: &'a mut [f32],
    /// `[H,H]`
    pub wh: &'a mut [f32],
    /// `[H]`
    pub b: &'a mut [f32],
    /// `[H,V]`
    pub affine_w: &'a mut [f32],
    /// `[V]`
    pub affine_b: &'a mut [f32],
}

impl Params {
    /// Shapes of the tensors of `cfg`, in [`PARAM_NAMES`] order.
    ///
    /// ```
    /// use rnnlm::{Config, Params};
    /// let shapes = Params::shapes(&Config::new(10, 4, 6).unwrap());
    /// assert_eq!(shapes, [vec![10, 4], vec![4, 6], vec![6, 6], vec![6], vec![6, 10], vec![10]]);
    /// ```
    pub fn shapes(cfg: &Config) -> [Vec<usize>; 6] {
        let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
        [
            vec![v, d],
            vec![d, h],
            vec![h, h],
            vec![h],
            vec![h, v],
            vec![v],
        ]
    }

    /// Number of f32 values of each tensor, in [`PARAM_NAMES`] order.
    /// (Computed without building the shape vectors: views are taken on every step, which
    /// must not allocate.)
    fn lens(cfg: &Config) -> [usize; 6] {
        let (v, d, h) = (cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size);
        [v * d, d * h, h * h, h, h * v, v]
    }

    /// All-zero parameters (also the gradient buffer).
    ///
    /// ```
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let p = Params::zeros(cfg);
    /// let total: usize = Params::shapes(&cfg).iter().map(|s| s.iter().product::<usize>()).sum();
    /// assert_eq!(p.as_slice().len(), total);
    /// assert!(p.as_slice().iter().all(|&x| x == 0.0));
    /// ```
    pub fn zeros(cfg: Config) -> Self {
        let total = Self::lens(&cfg).iter().sum();
        Self {
            cfg,
            data: vec![0.0; total],
        }
    }

    /// The book's initialisation, drawn in the book's order from `rng`:
    /// `embed.W = randn(V,D)/100`, `rnn.Wx = randn(D,H)/sqrt(D)`, `rnn.Wh = randn(H,H)/sqrt(H)`,
    /// `affine.W = randn(H,V)/sqrt(H)`, biases zero. Normals are drawn in f64 and rounded to f32
    /// after scaling, as numpy's `(rn(V, D) / 100).astype('f')` does.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// let cfg = rnnlm::Config::new(100, 8, 16).unwrap();
    /// let p = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(7));
    /// assert!(p.views().affine_b.iter().all(|&b| b == 0.0));
    /// assert_eq!(p.as_slice().len(), 100 * 8 + 8 * 16 + 16 * 16 + 16 + 16 * 100 + 100);
    /// ```
    pub fn init_book<R: Rng + ?Sized>(cfg: Config, rng: &mut R) -> Self {
        let mut p = Self::zeros(cfg);
        let d = cfg.wordvec_size as f64;
        let h = cfg.hidden_size as f64;
        let m = p.views_mut();
        let mut fill = |dst: &mut [f32], scale: f64| {
            for x in dst {
                let z: f64 = StandardNormal.sample(rng);
                *x = (z / scale) as f32;
            }
        };
        fill(m.embed_w, 100.0);
        fill(m.wx, d.sqrt());
        fill(m.wh, h.sqrt());
        fill(m.affine_w, h.sqrt());
        p
    }

    /// Builds parameters from tensors given in [`PARAM_NAMES`] order.
    ///
    /// **Panics** if a tensor's length does not match `cfg` (callers validate first).
    ///
    /// ```
    /// use rand::SeedableRng;
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let p = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
    /// assert_eq!(Params::from_tensors(cfg, p.tensors()), p);
    /// ```
    pub fn from_tensors(cfg: Config, tensors: [&[f32]; 6]) -> Self {
        let lens = Self::lens(&cfg);
        let mut data = Vec::with_capacity(lens.iter().sum());
        for (t, len) in tensors.iter().zip(lens) {
            assert_eq!(t.len(), len, "tensor length does not match the config");
            data.extend_from_slice(t);
        }
        Self { cfg, data }
    }

    /// The configuration these parameters belong to.
    ///
    /// ```
    /// let cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// assert_eq!(rnnlm::Params::zeros(cfg).config(), &cfg);
    /// ```
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// The whole flat buffer.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// let cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// let p = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
    /// assert_eq!(p.as_slice(), p.tensors().concat()); // the tensors back to back
    /// ```
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// The whole flat buffer, mutable.
    ///
    /// ```
    /// let mut p = rnnlm::Params::zeros(rnnlm::Config::new(10, 4, 6).unwrap());
    /// p.as_mut_slice().fill(0.5);
    /// assert!(p.views().affine_b.iter().all(|&x| x == 0.5));
    /// ```
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Sets every value to zero.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// let cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// let mut p = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
    /// p.zero();
    /// assert_eq!(p, rnnlm::Params::zeros(cfg));
    /// ```
    pub fn zero(&mut self) {
        self.data.fill(0.0);
    }

    /// Tensors in [`PARAM_NAMES`] order.
    ///
    /// ```
    /// use rnnlm::{Config, Params};
    /// let cfg = Config::new(10, 4, 6).unwrap();
    /// let p = Params::zeros(cfg);
    /// for (t, shape) in p.tensors().iter().zip(Params::shapes(&cfg)) {
    ///     assert_eq!(t.len(), shape.iter().product::<usize>());
    /// }
    /// ```
    pub fn tensors(&self) -> [&[f32]; 6] {
        let v = self.views();
        [v.embed_w, v.wx, v.wh, v.b, v.affine_w, v.affine_b]
    }

    /// Mutable tensors in [`PARAM_NAMES`] order.
    ///
    /// ```
    /// let mut p = rnnlm::Params::zeros(rnnlm::Config::new(10, 4, 6).unwrap());
    /// let [_, _, wh, ..] = p.tensors_mut();
    /// wh[0] = 3.0;
    /// assert_eq!(p.views().wh[0], 3.0);
    /// ```
    pub fn tensors_mut(&mut self) -> [&mut [f32]; 6] {
        let v = self.views_mut();
        [v.embed_w, v.wx, v.wh, v.b, v.affine_w, v.affine_b]
    }

    /// `affine.W [H,V]` and `affine.b [V]` as one `[H+1, V]` matrix (adjacent in the flat
    /// buffer): the bias is the last row. Lets the backward pass compute both gradients with
    /// one product, `[hs | 1]^T dY`.
    ///
    /// ```
    /// let (h, v) = (6, 10);
    /// let mut p = rnnlm::Params::zeros(rnnlm::Config::new(v, 4, h).unwrap());
    /// let rows = p.affine_rows_mut(); // [H + 1, V]
    /// assert_eq!(rows.len(), (h + 1) * v);
    /// rows[h * v..].fill(1.0); // the last row
    /// assert_eq!(p.views().affine_b, [1.0; 10]);
    /// ```
    pub fn affine_rows_mut(&mut self) -> &mut [f32] {
        let l = Self::lens(&self.cfg);
        let start: usize = l[..4].iter().sum();
        &mut self.data[start..]
    }

    /// `rnn.Wx [D,H]`, `rnn.Wh [H,H]` and `rnn.b [H]` as one `[D+H+1, H]` matrix (adjacent in
    /// the flat buffer), for the one product `[emb | hprev | 1]^T dt`.
    ///
    /// ```
    /// let (d, h) = (4, 6);
    /// let mut p = rnnlm::Params::zeros(rnnlm::Config::new(10, d, h).unwrap());
    /// let rows = p.rnn_rows_mut(); // [D + H + 1, H]: Wx, then Wh, then b
    /// assert_eq!(rows.len(), (d + h + 1) * h);
    /// rows[d * h] = 1.0; // Wh[0][0]
    /// rows[(d + h) * h..].fill(2.0); // the last row
    /// assert_eq!((p.views().wh[0], p.views().b), (1.0, &[2.0; 6][..]));
    /// ```
    pub fn rnn_rows_mut(&mut self) -> &mut [f32] {
        let l = Self::lens(&self.cfg);
        &mut self.data[l[0]..l[0] + l[1] + l[2] + l[3]]
    }

    /// Named read-only views.
    ///
    /// ```
    /// use rand::SeedableRng;
    /// let cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// let p = rnnlm::Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(2));
    /// let v = p.views();
    /// assert_eq!(&v.embed_w[2 * 4..3 * 4], &p.as_slice()[8..12]); // word 2's vector, row 2
    /// assert_eq!(v.affine_b, p.tensors()[5]);
    /// ```
    pub fn views(&self) -> ParamRefs<'_> {
        let l = Self::lens(&self.cfg);
        let (embed_w, r) = self.data.split_at(l[0]);
        let (wx, r) = r.split_at(l[1]);
        let (wh, r) = r.split_at(l[2]);
        let (b, r) = r.split_at(l[3]);
        let (affine_w, affine_b) = r.split_at(l[4]);
        ParamRefs {
            embed_w,
            wx,
            wh,
            b,
            affine_w,
            affine_b,
        }
    }

    /// Named mutable views.
    ///
    /// ```
    /// let mut p = rnnlm::Params::zeros(rnnlm::Config::new(10, 4, 6).unwrap());
    /// p.views_mut().embed_w[..4].copy_from_slice(&[1.0, 2.0, 3.0, 4.0]); // word 0's vector
    /// assert_eq!(p.as_slice()[..5], [1.0, 2.0, 3.0, 4.0, 0.0]);
    /// ```
    pub fn views_mut(&mut self) -> ParamMuts<'_> {
        let l = Self::lens(&self.cfg);
        let (embed_w, r) = self.data.split_at_mut(l[0]);
        let (wx, r) = r.split_at_mut(l[1]);
        let (wh, r) = r.split_at_mut(l[2]);
        let (b, r) = r.split_at_mut(l[3]);
        let (affine_w, affine_b) = r.split_at_mut(l[4]);
        ParamMuts {
            embed_w,
            wx,
            wh,
            b,
            affine_w,
            affine_b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn layout_and_init_scales() {
        let cfg = Config::new(400, 50, 60).unwrap();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let p = Params::init_book(cfg, &mut rng);
        let v = p.views();
        assert_eq!(v.embed_w.len(), 400 * 50);
        assert_eq!(v.wx.len(), 50 * 60);
        assert_eq!(v.wh.len(), 60 * 60);
        assert_eq!(v.affine_w.len(), 60 * 400);
        assert!(v.b.iter().chain(v.affine_b).all(|&x| x == 0.0));
        let std = |x: &[f32]| {
            let n = x.len() as f64;
            let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
            (x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n).sqrt()
        };
        // Sample standard deviations within 5% of the book's scales.
        for (x, want) in [
            (v.embed_w, 0.01),
            (v.wx, 1.0 / 50f64.sqrt()),
            (v.wh, 1.0 / 60f64.sqrt()),
            (v.affine_w, 1.0 / 60f64.sqrt()),
        ] {
            let s = std(x);
            assert!((s / want - 1.0).abs() < 0.05, "std {s} vs {want}");
        }
        let mut rng2 = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        assert_eq!(
            p,
            Params::init_book(cfg, &mut rng2),
            "same seed, same weights"
        );
    }
}
