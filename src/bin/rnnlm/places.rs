//! Where a token is, for error messages: its line and which word of the line (`place`,
//! `token_name`).

/// The 1-based line of the token at `position` of a corpus read with `<eos>` after each line,
/// and which of the line's tokens it is (`word 3 ("cat")`, or `the line end`).
pub(crate) fn place(model: &rnnlm::Rnnlm, ids: &[u32], position: usize) -> (usize, String) {
    let eos = model.vocab().id(rnnlm::data::corpus::EOS);
    let before = &ids[..position.min(ids.len())];
    let line = 1 + before.iter().filter(|&&id| Some(id) == eos).count();
    let start = before
        .iter()
        .rposition(|&id| Some(id) == eos)
        .map_or(0, |p| p + 1);
    (
        line,
        token_name(model, ids.get(position).copied(), position - start + 1),
    )
}

/// `word K ("w")` for the `k`-th token of a line, or `the line end` for its `<eos>`.
pub(crate) fn token_name(model: &rnnlm::Rnnlm, id: Option<u32>, k: usize) -> String {
    match id.and_then(|id| model.vocab().word(id)) {
        Some(rnnlm::data::corpus::EOS) => "the line end".into(),
        Some(w) => format!("word {k} ({w:?})"),
        None => format!("word {k}"),
    }
}
