//! The book's time layers as plain functions over caller-owned buffers (outputs first, then
//! inputs, then dimensions), in the style of llm.c. The model composes them; tests call them
//! one by one for gradient checks.

pub mod embedding;
pub mod gru;
pub mod lstm;
pub mod rnn;
pub mod softmax_loss;

/// `hprev[:, 0] = state`: each row's first step reads the carried state (`hprev [m,T,W]`,
/// `state [m,W]`).
pub(crate) fn load_state(hprev: &mut [f32], state: &[f32], (m, t, w): (usize, usize, usize)) {
    for i in 0..m {
        hprev[i * t * w..i * t * w + w].copy_from_slice(&state[i * w..(i + 1) * w]);
    }
}

/// `state = hs[:, T-1]`: the carried state after the batch (`hs [m,T,W]`, `state [m,W]`).
pub(crate) fn store_state(state: &mut [f32], hs: &[f32], (m, t, w): (usize, usize, usize)) {
    for i in 0..m {
        let last = (i * t + t - 1) * w;
        state[i * w..(i + 1) * w].copy_from_slice(&hs[last..last + w]);
    }
}
