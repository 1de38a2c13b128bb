//! TEMPORARY scalar stand-in (replaced by the vectorised kernel).
use crate::cpu::Isa;
pub fn bias_tanh(x: &mut [f32], bias: &[f32]) {
    bias_tanh_with(crate::cpu::isa(), x, bias)
}
pub fn bias_tanh_with(_isa: Isa, x: &mut [f32], bias: &[f32]) {
    assert_eq!(x.len(), bias.len());
    for (v, b) in x.iter_mut().zip(bias) {
        *v = (*v + b).tanh();
    }
}
pub fn tanh_backward(d: &mut [f32], h: &[f32]) {
    tanh_backward_with(crate::cpu::isa(), d, h)
}
pub fn tanh_backward_with(_isa: Isa, d: &mut [f32], h: &[f32]) {
    assert_eq!(d.len(), h.len());
    for (g, y) in d.iter_mut().zip(h) {
        *g *= 1.0 - y * y;
    }
}
