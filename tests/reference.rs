//! Reference values: small closed-form weights, expected numbers from the book's formulas.
//!
//! The expected values below were printed (float64) by this numpy transcription of the book's
//! `SimpleRnnlm` forward/backward (TimeEmbedding, TimeRNN with carried state, TimeAffine,
//! TimeSoftmaxWithLoss with the ignore label -1, np.add.at for the embedding gradient):
//!
// import numpy as np
// np.set_printoptions(precision=9, floatmode='maxprec')
// V, D, H, N, T = 5, 3, 4, 2, 3
// E  = 0.5 * np.cos(np.arange(V*D)).reshape(V, D)
// Wx = 0.5 * np.sin(np.arange(D*H)).reshape(D, H)
// Wh = 0.4 * np.cos(0.7 * np.arange(H*H)).reshape(H, H)
// b  = 0.1 * np.arange(H) - 0.15
// W  = 0.8 * np.sin(1.3 * np.arange(H*V)).reshape(H, V)
// c  = 0.05 * np.arange(V)
// def step(h, xs, ts):
//     x = E[xs]                                   # [N,T,D]
//     hs = np.zeros((N, T, H)); hp = np.zeros((N, T, H))
//     for t in range(T):
//         hp[:, t] = h
//         h = np.tanh(h @ Wh + x[:, t] @ Wx + b); hs[:, t] = h
//     y = hs.reshape(N*T, H) @ W + c
//     y = y - y.max(axis=1, keepdims=True)
//     p = np.exp(y); p /= p.sum(axis=1, keepdims=True)
//     t_ = ts.reshape(N*T); mask = t_ != -1
//     ls = np.log(p[np.arange(N*T), t_]) * mask
//     loss = -ls.sum() / mask.sum()
//     dy = p.copy(); dy[np.arange(N*T), t_] -= 1; dy /= mask.sum(); dy *= mask[:, None]
//     dW = hs.reshape(N*T, H).T @ dy; dc = dy.sum(0)
//     dhs = (dy @ W.T).reshape(N, T, H)
//     dWx = np.zeros_like(Wx); dWh = np.zeros_like(Wh); db = np.zeros_like(b); dE = np.zeros_like(E)
//     dh = 0
//     for t in reversed(range(T)):
//         dt = (dhs[:, t] + dh) * (1 - hs[:, t]**2)
//         db += dt.sum(0); dWh += hp[:, t].T @ dt; dWx += x[:, t].T @ dt
//         dh = dt @ Wh.T
//         np.add.at(dE, xs[:, t], dt @ Wx.T)
//     return h, loss, dict(E=dE, Wx=dWx, Wh=dWh, b=db, W=dW, c=dc)
// h0 = np.zeros((N, H))
// xs1 = np.array([[0, 1, 2], [3, 4, 0]]); ts1 = np.array([[1, 2, 3], [4, 0, -1]])
// xs2 = np.array([[2, 2, 1], [0, 3, 4]]); ts2 = np.array([[2, 1, 0], [3, 4, 1]])
// h1, l1, g1 = step(h0, xs1, ts1)
// h2, l2, g2 = step(h1, xs2, ts2)
// def fmt(a): return ", ".join("%.9e" % v for v in np.ravel(a))
// print("loss1", "%.9e" % l1); print("loss2", "%.9e" % l2)
// print("state1 [", fmt(h1), "]"); print("state2 [", fmt(h2), "]")
// for k in ["E", "Wx", "Wh", "b", "W", "c"]: print("g2", k, "[", fmt(g2[k]), "]")

use rnnlm::{Config, Params, SimpleRnnlm};

const V: usize = 5;
const D: usize = 3;
const H: usize = 4;

fn closed_form(len: usize, f: impl Fn(f64) -> f64) -> Vec<f32> {
    (0..len).map(|i| f(i as f64) as f32).collect()
}

fn model() -> SimpleRnnlm {
    let cfg = Config::new(V, D, H).unwrap();
    let e = closed_form(V * D, |i| 0.5 * i.cos());
    let wx = closed_form(D * H, |i| 0.5 * i.sin());
    let wh = closed_form(H * H, |i| 0.4 * (0.7 * i).cos());
    let b = closed_form(H, |i| 0.1 * i - 0.15);
    let w = closed_form(H * V, |i| 0.8 * (1.3 * i).sin());
    let c = closed_form(V, |i| 0.05 * i);
    let params = Params::from_vec(cfg, [e, wx, wh, b, w, c].concat());
    SimpleRnnlm::from_params(params, 2, 3).unwrap()
}

fn assert_close(what: &str, got: &[f32], want: &[f64], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= tol * (1.0 + w.abs()),
            "{what}[{i}]: got {g}, want {w} (err {err:e})"
        );
    }
}

#[test]
fn two_stateful_batches_match_the_book_formulas() {
    let mut m = model();
    let loss1 = m
        .forward(&[0, 1, 2, 3, 4, 0], &[1, 2, 3, 4, 0, -1])
        .unwrap();
    assert_close("loss1", &[loss1], &[1.597488850e+00], 2e-6);
    assert_close(
        "state1",
        m.state(),
        &[
            -3.348425136e-01,
            -6.968518982e-02,
            2.119135820e-01,
            3.267674267e-01,
            -4.213321630e-01,
            -1.138493693e-01,
            2.296628823e-01,
            3.670399129e-01,
        ],
        2e-6,
    );

    // The second batch starts from the carried state.
    let loss2 = m.forward(&[2, 2, 1, 0, 3, 4], &[2, 1, 0, 3, 4, 1]).unwrap();
    assert_close("loss2", &[loss2], &[1.703712348e+00], 2e-6);
    assert_close(
        "state2",
        m.state(),
        &[
            -8.324733841e-02,
            -2.021520215e-01,
            -2.388848526e-01,
            -4.620794441e-02,
            -3.144823791e-01,
            -1.173397769e-01,
            1.325355712e-01,
            2.876548765e-01,
        ],
        2e-6,
    );

    m.backward().unwrap();
    let g = m.grads();
    let gl = g.layer(0);
    assert_close(
        "dembed.W",
        g.embed_w(),
        &[
            1.064396530e-01,
            -6.470017594e-02,
            -2.185793847e-02,
            -7.143956157e-02,
            1.686852055e-02,
            4.938755987e-02,
            -1.718368282e-01,
            2.031369196e-01,
            -9.372147513e-02,
            4.980230507e-02,
            -1.906251271e-02,
            -2.488212541e-02,
            -1.282929690e-01,
            9.596174763e-02,
            2.843400640e-03,
        ],
        5e-6,
    );
    assert_close(
        "drnn.Wx",
        gl.wx,
        &[
            -1.342857176e-01,
            -9.854133959e-02,
            -6.391583119e-02,
            -3.026302383e-03,
            -1.328282328e-01,
            -1.168718951e-01,
            -8.737940599e-02,
            -4.075346188e-02,
            -9.249083347e-03,
            -2.775096928e-02,
            -3.050675789e-02,
            -4.101207647e-02,
        ],
        5e-6,
    );
    assert_close(
        "drnn.Wh",
        gl.wh,
        &[
            9.658112689e-02,
            -4.585219496e-02,
            1.577465245e-01,
            -7.171369766e-02,
            4.916922376e-02,
            1.312189033e-02,
            7.487283345e-02,
            4.283977276e-03,
            -1.629357036e-02,
            6.626295263e-02,
            -3.787739321e-02,
            7.673940705e-02,
            -7.248004037e-02,
            5.821589790e-02,
            -1.218010734e-01,
            8.088423979e-02,
        ],
        5e-6,
    );
    assert_close(
        "drnn.b",
        gl.b,
        &[
            -3.503476029e-01,
            1.008206314e-02,
            -4.993390789e-01,
            1.056489065e-01,
        ],
        5e-6,
    );
    assert_close(
        "daffine.W",
        g.affine_w().unwrap(),
        &[
            -4.906683613e-02,
            7.142612623e-02,
            2.097939469e-02,
            1.449107561e-02,
            -5.782976040e-02,
            2.844836389e-03,
            2.323303021e-02,
            1.603250347e-04,
            -1.263686836e-02,
            -1.360132327e-02,
            5.382734733e-02,
            -3.660015985e-02,
            -2.174174367e-02,
            -3.452297794e-02,
            3.903753413e-02,
            5.528940226e-02,
            -6.611819078e-02,
            -2.298425811e-02,
            -2.235600537e-02,
            5.616905201e-02,
        ],
        5e-6,
    );
    assert_close(
        "daffine.b",
        g.affine_b(),
        &[
            2.740364527e-02,
            -1.748649292e-01,
            -5.567382011e-03,
            5.441456472e-02,
            9.861410124e-02,
        ],
        5e-6,
    );
}

#[test]
fn reset_state_starts_over() {
    let mut m = model();
    let a = m
        .forward(&[0, 1, 2, 3, 4, 0], &[1, 2, 3, 4, 0, -1])
        .unwrap();
    m.forward(&[2, 2, 1, 0, 3, 4], &[2, 1, 0, 3, 4, 1]).unwrap();
    m.reset_state();
    assert!(m.state().iter().all(|&x| x == 0.0));
    let b = m
        .forward(&[0, 1, 2, 3, 4, 0], &[1, 2, 3, 4, 0, -1])
        .unwrap();
    assert_eq!(a, b, "same input from a zero state gives the same loss");

    // set_state with the book's state after batch 1 reproduces batch 2's loss.
    m.set_state(
        &[
            -3.348425136e-01,
            -6.968518982e-02,
            2.119135820e-01,
            3.267674267e-01,
            -4.213321630e-01,
            -1.138493693e-01,
            2.296628823e-01,
            3.670399129e-01,
        ]
        .map(|x: f64| x as f32),
    )
    .unwrap();
    let l2 = m.forward(&[2, 2, 1, 0, 3, 4], &[2, 1, 0, 3, 4, 1]).unwrap();
    assert_close("loss2 after set_state", &[l2], &[1.703712348e+00], 2e-6);
    assert!(
        m.set_state(&[0.0; 3]).is_err(),
        "wrong state shape is an error"
    );
}
