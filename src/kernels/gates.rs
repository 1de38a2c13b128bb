//! TEMPORARY scalar stand-in (replaced by the vectorised module from branch `gates`).
#![allow(missing_docs)]
fn sig(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}
pub fn lstm_forward(
    a: &mut [f32],
    b: &[f32],
    c_prev: &[f32],
    c: &mut [f32],
    tc: &mut [f32],
    h: &mut [f32],
) {
    let hh = c.len();
    for j in 0..hh {
        let f = sig(a[j] + b[j]);
        let g = (a[hh + j] + b[hh + j]).tanh();
        let i = sig(a[2 * hh + j] + b[2 * hh + j]);
        let o = sig(a[3 * hh + j] + b[3 * hh + j]);
        a[j] = f;
        a[hh + j] = g;
        a[2 * hh + j] = i;
        a[3 * hh + j] = o;
        c[j] = f * c_prev[j] + g * i;
        tc[j] = c[j].tanh();
        h[j] = o * tc[j];
    }
}
pub fn lstm_backward(a: &mut [f32], dh: &[f32], dc: &mut [f32], c_prev: &[f32], tc: &[f32]) {
    let hh = dh.len();
    for j in 0..hh {
        let (f, g, i, o) = (a[j], a[hh + j], a[2 * hh + j], a[3 * hh + j]);
        let ds = dc[j] + dh[j] * o * (1.0 - tc[j] * tc[j]);
        dc[j] = ds * f;
        a[j] = ds * c_prev[j] * f * (1.0 - f);
        a[hh + j] = ds * i * (1.0 - g * g);
        a[2 * hh + j] = ds * g * i * (1.0 - i);
        a[3 * hh + j] = dh[j] * tc[j] * o * (1.0 - o);
    }
}
pub fn gru_forward(
    gx: &mut [f32],
    gh: &mut [f32],
    bx: &[f32],
    bh: &[f32],
    h_prev: &[f32],
    h: &mut [f32],
) {
    let hh = h.len();
    for j in 0..hh {
        for k in [j, hh + j, 2 * hh + j] {
            gh[k] += bh[k];
        }
        let r = sig(gx[j] + bx[j] + gh[j]);
        let z = sig(gx[hh + j] + bx[hh + j] + gh[hh + j]);
        let n = (gx[2 * hh + j] + bx[2 * hh + j] + r * gh[2 * hh + j]).tanh();
        gx[j] = r;
        gx[hh + j] = z;
        gx[2 * hh + j] = n;
        h[j] = (1.0 - z) * n + z * h_prev[j];
    }
}
pub fn gru_backward(
    gx: &mut [f32],
    gh: &mut [f32],
    dh: &[f32],
    h_prev: &[f32],
    dh_prev: &mut [f32],
) {
    let hh = dh.len();
    for j in 0..hh {
        let (r, z, n) = (gx[j], gx[hh + j], gx[2 * hh + j]);
        let dn = dh[j] * (1.0 - z);
        let dz = dh[j] * (h_prev[j] - n);
        let dnp = dn * (1.0 - n * n);
        let drp = dnp * gh[2 * hh + j] * r * (1.0 - r);
        let dzp = dz * z * (1.0 - z);
        gx[j] = drp;
        gx[hh + j] = dzp;
        gx[2 * hh + j] = dnp;
        gh[j] = drp;
        gh[hh + j] = dzp;
        gh[2 * hh + j] = dnp * r;
        dh_prev[j] = dh[j] * z;
    }
}
