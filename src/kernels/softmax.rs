//! TEMPORARY scalar stand-in (replaced by the vectorised kernel).
pub fn softmax_xent_grad_row(row: &mut [f32], target: usize, scale: f32) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut s = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    let loss = s.ln() - row[target].ln();
    let k = scale / s;
    for v in row.iter_mut() {
        *v *= k;
    }
    row[target] -= scale;
    loss
}
pub fn xent_row(row: &[f32], target: usize) -> f32 {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let s: f32 = row.iter().map(|v| (v - m).exp()).sum();
    s.ln() - (row[target] - m)
}
pub fn softmax_row(row: &mut [f32]) {
    let m = row.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
    let mut s = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - m).exp();
        s += *v;
    }
    for v in row.iter_mut() {
        *v /= s;
    }
}
