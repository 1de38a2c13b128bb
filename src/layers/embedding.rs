//! `TimeEmbedding`: a gather of rows of `W [V,D]`; its backward is a scatter-add.

/// `out[r, :] = w[ids[r], :]` for every position `r`.
///
/// Shapes: `out [R,D]`, `ids [R]`, `w [V,D]`.
///
/// **Panics** if an id is `>= V` or a buffer is too short (the model validates ids first).
pub fn forward(out: &mut [f32], ids: &[u32], w: &[f32], d: usize) {
    assert_eq!(out.len(), ids.len() * d);
    for (row, &id) in out.chunks_exact_mut(d).zip(ids) {
        let id = id as usize;
        row.copy_from_slice(&w[id * d..(id + 1) * d]);
    }
}

/// `dw[ids[r], :] += dout[r, :]`, in increasing `r` (numpy's `np.add.at`): a word that
/// appears several times accumulates every contribution, in a fixed order.
///
/// Shapes: `dw [V,D]`, `ids [R]`, `dout [R,D]`.
pub fn backward(dw: &mut [f32], ids: &[u32], dout: &[f32], d: usize) {
    assert_eq!(dout.len(), ids.len() * d);
    for (row, &id) in dout.chunks_exact(d).zip(ids) {
        let id = id as usize;
        for (g, &x) in dw[id * d..(id + 1) * d].iter_mut().zip(row) {
            *g += x;
        }
    }
}
