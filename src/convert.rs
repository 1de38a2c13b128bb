//! Conversion between PyTorch's `examples/word_language_model` checkpoints (`RNNModel`'s
//! `state_dict()`) and this crate's tensor layout.
//!
//! PyTorch names and shapes (`G` = 1 for `RNN_TANH`, 3 for `GRU`, 4 for `LSTM`; `D_0 = ninp`,
//! `D_l = nhid` for `l > 0`):
//!
//! | PyTorch | shape | ours | shape |
//! | --- | --- | --- | --- |
//! | `encoder.weight` | `[V, D]` | `embed.W` | `[V, D]` |
//! | `rnn.weight_ih_l{l}` | `[G*H, D_l]` | `{cell}.{l}.Wx` | `[D_l, G*H]` (transposed) |
//! | `rnn.weight_hh_l{l}` | `[G*H, H]` | `{cell}.{l}.Wh` | `[H, G*H]` (transposed) |
//! | `rnn.bias_ih_l{l}` + `rnn.bias_hh_l{l}` | `[G*H]` each | `{cell}.{l}.b` (rnn, lstm) | `[G*H]` (their sum) |
//! | `rnn.bias_ih_l{l}`, `rnn.bias_hh_l{l}` | `[3H]` each | `gru.{l}.bx`, `gru.{l}.bh` | `[3H]` each |
//! | `decoder.weight` | `[V, H]` | `affine.W` (untied only) | `[H, V]` (transposed) |
//! | `decoder.bias` | `[V]` | `affine.b` | `[V]` |
//! | `P.head.weight` | `[c_0+k, H]` | `head.W` (adaptive) | `[H, c_0+k]` (transposed) |
//! | `P.head.bias` (only with `head_bias`) | `[c_0+k]` | `head.b` | `[c_0+k]` |
//! | `P.tail.{i}.0.weight` | `[p_i, H]` | `tail.{i}.proj` | `[H, p_i]` (transposed) |
//! | `P.tail.{i}.1.weight` | `[n_i, p_i]` | `tail.{i}.W` | `[n_i, p_i]` (as is) |
//!
//! `{cell}` is `rnn`, `lstm` or `gru`. Our weights multiply from the right (`x·Wx`), hence the
//! transposes. Along the `4H` axis an LSTM's gates are ordered `f, g, i, o` here (as in *Deep
//! Learning from Scratch 2*) and `i, f, g, o` in PyTorch; a GRU's `r, z, n` order is the same in
//! both, and a GRU keeps both biases because `n` multiplies `r` into the hidden-side term only.
//! Tied weights (`decoder.weight` is `encoder.weight`, which needs `D == H`) have no
//! `affine.W`: the output weights are `embed.W` transposed.
//!
//! The last four rows are a decoder that is PyTorch's `nn.AdaptiveLogSoftmaxWithLoss` (our
//! [`Softmax::Adaptive`]), in place of `decoder.weight` and `decoder.bias`, under whatever
//! prefix `P` the model keeps it (`decoder.`, `crit.`, ...; one prefix only). Its `k` clusters
//! are `tail.0 .. tail.{k-1}`; the shortlist size `c_0` is the head's rows less `k`, cluster `i`
//! holds `n_i` words (`c_{i+1} = c_i + n_i`, and `c_0 + Σ n_i` must be `V`) and projects to
//! `p_i`, both read from the shapes (PyTorch's `p_i = H // div_value^(i+1)`, but any widths
//! convert). [`to_torch`] writes the head under `decoder.`. PyTorch has no class head: a
//! [`Softmax::Class`] model does not convert.
//!
//! [`from_torch`] and [`to_torch`] are the pure mapping; [`load_torch`] and [`save_torch`] read
//! and write `safetensors` files (`safetensors.torch.save_file(model.state_dict(), ...)`), with
//! the vocabulary from a `vocab` metadata entry or rebuilt from the training text
//! ([`read_dictionary`]). The command line is `rnnlm convert --from torch` / `--to torch`.
//!
//! ```
//! use rnnlm::convert::{from_torch, to_torch, Tensors};
//! use rnnlm::model::config::Cell;
//! let (v, d, h) = (5, 3, 2);
//! let t = |shape: Vec<usize>| {
//!     let n = shape.iter().product();
//!     (shape, (0..n).map(|i| i as f32 / 10.0).collect::<Vec<f32>>())
//! };
//! let mut torch = Tensors::new();
//! torch.insert("encoder.weight".into(), t(vec![v, d]));
//! torch.insert("rnn.weight_ih_l0".into(), t(vec![h, d]));
//! torch.insert("rnn.weight_hh_l0".into(), t(vec![h, h]));
//! torch.insert("rnn.bias_ih_l0".into(), t(vec![h]));
//! torch.insert("rnn.bias_hh_l0".into(), t(vec![h]));
//! torch.insert("decoder.weight".into(), t(vec![v, h]));
//! torch.insert("decoder.bias".into(), t(vec![v]));
//! let (model, ours) = from_torch(&torch).unwrap();
//! assert_eq!((model.cell, model.layers, model.tied), (Cell::Rnn, 1, false));
//! assert_eq!(ours["rnn.0.Wx"].0, [d, h]);
//! assert_eq!(ours["rnn.0.b"].1, [0.0, 0.2]); // bias_ih + bias_hh
//! let back = to_torch(&model, &ours).unwrap();
//! assert_eq!(back["rnn.weight_ih_l0"], torch["rnn.weight_ih_l0"]);
//! assert_eq!(back["rnn.bias_hh_l0"].1, [0.0, 0.0]); // the whole bias goes to bias_ih
//! ```

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;

use safetensors::{Dtype, SafeTensors};

use crate::cells::{Role, TorchForm};
use crate::checkpoint;
use crate::data::corpus::read_dictionary;
use crate::data::vocab::Vocab;
use crate::error::{Error, Result};
use crate::model::config::{Cell, Config, Sizes, Softmax};
use crate::model::params::Params;

/// Named f32 tensors: name -> (shape, row-major data).
pub type Tensors = BTreeMap<String, (Vec<usize>, Vec<f32>)>;

/// How PyTorch stores `cell`: its gate order and biases (see [`crate::model::config::Cell`]).
///
/// # Errors
/// [`Error::Invalid`] for a cell PyTorch does not have (the book's appendix GRU).
fn torch_form(cell: Cell) -> Result<TorchForm> {
    cell.imp().torch().ok_or_else(|| {
        let names: Vec<&str> = Cell::ALL
            .iter()
            .filter(|c| c.imp().torch().is_some())
            .map(|c| c.name())
            .collect();
        invalid(
            "cell",
            format!(
                "PyTorch has no {cell} cell (cells with a PyTorch form: {})",
                names.join(", ")
            ),
        )
    })
}

/// Our tensor name of role `role` in layer `l` of `cell`.
fn our_name(cell: Cell, l: usize, role: Role) -> Option<String> {
    let t = cell.imp().tensors().iter().find(|t| t.role == role)?;
    Some(format!("{}.{l}.{}", cell.name(), t.name))
}

/// The architecture of a word_language_model `RNNModel`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TorchModel {
    /// The recurrent cell (one with a PyTorch form: rnn, lstm or gru).
    pub cell: Cell,
    /// `V`: the vocabulary size (`ntoken`).
    pub vocab_size: usize,
    /// `D`: the embedding width (`ninp`).
    pub wordvec_size: usize,
    /// `H`: the hidden width (`nhid`).
    pub hidden_size: usize,
    /// Number of stacked recurrent layers (`nlayers`).
    pub layers: usize,
    /// Whether the decoder shares the encoder's weights (`tie_weights`).
    pub tied: bool,
    /// The decoder: [`Softmax::Full`] for word_language_model's `nn.Linear`,
    /// [`Softmax::Adaptive`] for an `nn.AdaptiveLogSoftmaxWithLoss` (never tied). PyTorch has
    /// no [`Softmax::Class`].
    pub softmax: Softmax,
}

fn shape_str(shape: &[usize]) -> String {
    format!("{shape:?}")
}

fn invalid(what: &str, msg: impl Into<String>) -> Error {
    Error::invalid(what, msg)
}

/// Returns the tensor `name`, checking its data length and (when given) its shape.
fn get<'a>(t: &'a Tensors, name: &str, expected: &[usize]) -> Result<&'a (Vec<usize>, Vec<f32>)> {
    let entry = t.get(name).ok_or_else(|| Error::TensorMissing {
        path: None,
        name: name.to_string(),
        expected: shape_str(expected),
    })?;
    if entry.0 != expected {
        return Err(Error::TensorShape {
            path: None,
            name: name.to_string(),
            expected: shape_str(expected),
            found: entry.0.clone(),
        });
    }
    check_len(name, entry)?;
    Ok(entry)
}

fn check_len(name: &str, (shape, data): &(Vec<usize>, Vec<f32>)) -> Result<()> {
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .unwrap_or(usize::MAX);
    if n != data.len() {
        return Err(Error::TensorData {
            path: None,
            name: name.to_string(),
            shape: shape.clone(),
            expected: n,
            found: data.len(),
        });
    }
    Ok(())
}

/// Fails on the first tensor (in name order) that is not `known`.
fn no_unexpected(t: &Tensors, known: impl Fn(&str) -> bool, what: &str) -> Result<()> {
    match t.iter().find(|(name, _)| !known(name)) {
        Some((name, (shape, _))) => Err(Error::TensorUnexpected {
            path: None,
            name: name.clone(),
            what: what.to_string(),
            found: shape.clone(),
        }),
        None => Ok(()),
    }
}

/// PyTorch `[G*H, Din]` (gate blocks in PyTorch order) -> ours `[Din, G*H]` (our order).
fn torch_to_ours_weight(src: &[f32], din: usize, h: usize, form: TorchForm) -> Vec<f32> {
    let blocks = form.block;
    let gh = blocks.len() * h;
    let mut out = vec![0.0f32; din * gh];
    for (j, &tj) in blocks.iter().enumerate() {
        for k in 0..h {
            let row = &src[(tj * h + k) * din..(tj * h + k + 1) * din];
            for (d, &x) in row.iter().enumerate() {
                out[d * gh + j * h + k] = x;
            }
        }
    }
    out
}

/// Ours `[Din, G*H]` -> PyTorch `[G*H, Din]`; the inverse of [`torch_to_ours_weight`].
fn ours_to_torch_weight(src: &[f32], din: usize, h: usize, form: TorchForm) -> Vec<f32> {
    let blocks = form.block;
    let gh = blocks.len() * h;
    let mut out = vec![0.0f32; din * gh];
    for (j, &tj) in blocks.iter().enumerate() {
        for k in 0..h {
            for d in 0..din {
                out[(tj * h + k) * din + d] = src[d * gh + j * h + k];
            }
        }
    }
    out
}

/// Reorders a `[G*H]` vector's gate blocks: `to_ours` maps PyTorch order to ours, else back.
fn reorder_bias(src: &[f32], h: usize, form: TorchForm, to_ours: bool) -> Vec<f32> {
    let mut out = vec![0.0f32; src.len()];
    for (j, &tj) in form.block.iter().enumerate() {
        let (o, s) = if to_ours { (j, tj) } else { (tj, j) };
        out[o * h..(o + 1) * h].copy_from_slice(&src[s * h..(s + 1) * h]);
    }
    out
}

/// `[rows, cols]` -> `[cols, rows]`.
fn transpose(src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut out = vec![0.0f32; src.len()];
    for r in 0..rows {
        for c in 0..cols {
            out[c * rows + r] = src[r * cols + c];
        }
    }
    out
}

/// The prefixes of a layer's recurrent tensors, `rnn.{weight,bias}_{ih,hh}_l{k}`, in the order
/// [`from_torch`] reads them.
const TORCH_LAYER: [&str; 4] = [
    "rnn.weight_ih_l",
    "rnn.weight_hh_l",
    "rnn.bias_ih_l",
    "rnn.bias_hh_l",
];

/// The tensors of a word_language_model `RNNModel` outside its layers (`decoder.weight` is
/// absent when tied).
const TORCH_OUTER: [&str; 3] = ["encoder.weight", "decoder.weight", "decoder.bias"];

/// `k` as an index in canonical decimal (`0`, `1`, `12`, not `01`, `00` or empty).
fn canonical_index(k: &str) -> Option<usize> {
    let canonical = k == "0" || (!k.starts_with('0') && !k.is_empty());
    if canonical && k.bytes().all(|b| b.is_ascii_digit()) {
        k.parse().ok()
    } else {
        None
    }
}

/// The layer `k` of a recurrent tensor `rnn.{weight,bias}_{ih,hh}_l{k}`, else `None`.
/// Canonical decimal only: `l01` or `l00` is no layer, it stays an unexpected name.
fn torch_layer(name: &str) -> Option<usize> {
    canonical_index(TORCH_LAYER.iter().find_map(|p| name.strip_prefix(p))?)
}

/// The number of recurrent layers in `t`: how many of layers 0, 1, 2, ... in a row have a
/// tensor `rnn.{weight,bias}_{ih,hh}_l{k}`. A layer with one tensor counts (its others are
/// then missing); past a layer with none, a tensor such as a stray `_l4294967296` is
/// unexpected rather than the cause of a missing layer 1.
fn torch_layers(t: &Tensors) -> usize {
    let layers: BTreeSet<usize> = t.keys().filter_map(|name| torch_layer(name)).collect();
    (0..).take_while(|l| layers.contains(l)).count()
}

/// The prefix [`to_torch`] writes an adaptive head under (word_language_model's decoder).
const TORCH_HEAD_PREFIX: &str = "decoder.";

/// A tensor of an `nn.AdaptiveLogSoftmaxWithLoss`, without its prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HeadPart {
    /// `head.weight`
    Weight,
    /// `head.bias`
    Bias,
    /// `tail.{i}.0.weight` (`false`, the projection) or `tail.{i}.1.weight` (`true`, the
    /// cluster's words).
    Tail(usize, bool),
}

impl HeadPart {
    /// Its name under `prefix`.
    fn name(self, prefix: &str) -> String {
        match self {
            HeadPart::Weight => format!("{prefix}head.weight"),
            HeadPart::Bias => format!("{prefix}head.bias"),
            HeadPart::Tail(i, words) => format!("{prefix}tail.{i}.{}.weight", u8::from(words)),
        }
    }

    /// `name` as a prefix and an adaptive head's tensor, if it is one: the prefix is empty or
    /// ends with `.`, a tail's index is canonical decimal.
    fn parse(name: &str) -> Option<(&str, HeadPart)> {
        let prefix = |p: &str| p.is_empty() || p.ends_with('.');
        for (suffix, part) in [
            ("head.weight", HeadPart::Weight),
            ("head.bias", HeadPart::Bias),
        ] {
            if let Some(p) = name.strip_suffix(suffix).filter(|p| prefix(p)) {
                return Some((p, part));
            }
        }
        let (rest, words) = match name.strip_suffix(".0.weight") {
            Some(r) => (r, false),
            None => (name.strip_suffix(".1.weight")?, true),
        };
        let at = rest.rfind("tail.")?;
        let p = &rest[..at];
        let i = canonical_index(&rest[at + "tail.".len()..])?;
        prefix(p).then_some((p, HeadPart::Tail(i, words)))
    }
}

/// Where `t` keeps an adaptive head: its prefix and its number of clusters `k` (tails 0, 1,
/// ... in a row with a tensor; one past a gap is unexpected), or `None` for a full softmax.
///
/// The head is under the one prefix with a `head.weight`. Without any, a file with no
/// `decoder.weight` nor `decoder.bias` but other parts of a head (a bias, tails) is an adaptive
/// model whose `head.weight` is missing.
///
/// # Errors
/// [`Error::Invalid`] naming the tensors when two prefixes hold a head.
fn torch_head(t: &Tensors) -> Result<Option<(String, usize)>> {
    // Per prefix: its tensors (name and part).
    let mut prefixes: BTreeMap<&str, Vec<(&str, HeadPart)>> = BTreeMap::new();
    for name in t.keys() {
        if let Some((p, part)) = HeadPart::parse(name) {
            prefixes.entry(p).or_default().push((name, part));
        }
    }
    let with_weight: Vec<&str> = prefixes
        .iter()
        .filter(|(_, parts)| parts.iter().any(|(_, p)| *p == HeadPart::Weight))
        .map(|(p, _)| *p)
        .collect();
    let candidates: Vec<&str> = if !with_weight.is_empty() {
        with_weight
    } else if t.contains_key("decoder.weight") || t.contains_key("decoder.bias") {
        Vec::new()
    } else {
        prefixes.keys().copied().collect()
    };
    match candidates[..] {
        [] => Ok(None),
        [p] => {
            let tails: BTreeSet<usize> = prefixes[p]
                .iter()
                .filter_map(|(_, part)| match part {
                    HeadPart::Tail(i, _) => Some(*i),
                    _ => None,
                })
                .collect();
            let k = (0..).take_while(|i| tails.contains(i)).count();
            Ok(Some((p.to_string(), k)))
        }
        _ => {
            let held: Vec<String> = candidates
                .iter()
                .map(|p| {
                    let (name, _) = prefixes[p][0];
                    format!("{p:?} ({name:?} {})", shape_str(&t[name].0))
                })
                .collect();
            Err(invalid(
                "adaptive head",
                format!(
                    "{} prefixes hold an AdaptiveLogSoftmaxWithLoss: {}; a word_language_model \
                     RNNModel has one decoder",
                    held.len(),
                    held.join(", ")
                ),
            ))
        }
    }
}

/// The tensors a `layers`-layer model with this decoder needs (an adaptive head under
/// `prefix` with `k` clusters, else `decoder.bias`; `decoder.weight` and `head.bias` are
/// optional), in the order [`from_torch`] reads them.
fn torch_required<'a>(
    layers: usize,
    head: Option<&'a (String, usize)>,
) -> impl Iterator<Item = String> + 'a {
    let layer_names = (0..layers).flat_map(|l| TORCH_LAYER.iter().map(move |p| format!("{p}{l}")));
    let (full, adaptive) = match head {
        None => (Some("decoder.bias".to_string()), None),
        Some((p, k)) => {
            let tails = (0..*k).flat_map(|i| [false, true].map(|w| HeadPart::Tail(i, w)));
            let parts = std::iter::once(HeadPart::Weight).chain(tails);
            (None, Some(parts.map(move |part| part.name(p))))
        }
    };
    std::iter::once("encoder.weight".to_string())
        .chain(layer_names)
        .chain(full)
        .chain(adaptive.into_iter().flatten())
}

/// The first tensor that `t` lacks of those [`torch_required`] lists. It stops at the first
/// gap: at most one look-up more than `t` has tensors.
fn torch_first_missing(
    t: &Tensors,
    layers: usize,
    head: Option<&(String, usize)>,
) -> Option<String> {
    torch_required(layers, head).find(|name| !t.contains_key(name))
}

fn describe(m: &TorchModel, side: &str) -> String {
    format!(
        "{side} of a {}-layer {}{} model{}",
        m.layers,
        m.cell.name(),
        if m.tied { " tied" } else { "" },
        match m.softmax {
            Softmax::Adaptive { cutoffs, .. } =>
                format!(" with a {}-cluster adaptive softmax", cutoffs.len()),
            _ => String::new(),
        }
    )
}

/// Cluster `i`'s words `n_i` and projection width `p_i`, for each cluster of an adaptive
/// head over `v` words (none for another head).
fn clusters(softmax: &Softmax, v: usize) -> Vec<(usize, usize)> {
    let Softmax::Adaptive {
        cutoffs,
        projections,
        ..
    } = softmax
    else {
        return Vec::new();
    };
    let c = cutoffs.as_slice();
    let ends = c.iter().skip(1).map(|&x| x as usize).chain([v]);
    c.iter()
        .zip(ends)
        .zip(projections.as_slice())
        .map(|((&s, e), &p)| (e - s as usize, p as usize))
        .collect()
}

/// The refusal of a head PyTorch has no form for (the class head).
fn no_torch_head(softmax: &Softmax) -> Result<()> {
    if softmax.is_class() {
        return Err(Error::invalid(
            "convert --to torch",
            format!(
                "the model's output layer is a {} softmax, which PyTorch's word_language_model \
                 (a full softmax) has no form for",
                softmax.name()
            ),
        ));
    }
    Ok(())
}

impl TorchModel {
    /// Our configuration of this model.
    fn config(&self) -> Config {
        Config {
            vocab_size: self.vocab_size,
            wordvec_size: self.wordvec_size,
            hidden_size: self.hidden_size,
            cell: self.cell,
            layers: self.layers,
            tied: self.tied,
            softmax: self.softmax,
        }
    }
}

fn check_model(m: &TorchModel) -> Result<()> {
    let (v, d, h) = (m.vocab_size, m.wordvec_size, m.hidden_size);
    if v == 0 || d == 0 || h == 0 || m.layers == 0 {
        return Err(invalid(
            "model",
            format!(
                "vocab_size, wordvec_size, hidden_size and layers must be positive; \
                 found {v}, {d}, {h}, {}",
                m.layers
            ),
        ));
    }
    if m.tied && d != h {
        return Err(invalid(
            "tied weights",
            format!("need wordvec_size == hidden_size; found {d} and {h}"),
        ));
    }
    no_torch_head(&m.softmax)?;
    if m.softmax.is_adaptive() {
        // The cutoffs against V, one projection per cluster, never tied.
        m.config().validate()?;
    }
    Ok(())
}

/// Reads word_language_model `RNNModel` tensors (its `state_dict()`, e.g. loaded from a
/// `safetensors.torch.save_file` file) and converts them to our layout (see the
/// [module docs](self)).
///
/// The cell comes from `rnn.weight_hh_l0`'s rows: `4H` means LSTM, `3H` GRU and `H` a tanh RNN,
/// where `H` is its column count; the layer count from the `_l{k}` suffixes (layers 0, 1, ...
/// in a row that have a tensor; one past a layer with none is unexpected). The model is
/// tied when `decoder.weight` is absent or bitwise equal to `encoder.weight` (then `D` must
/// equal `H`). LSTM and RNN biases are summed (`bias_ih + bias_hh`, in f32); a GRU keeps both.
///
/// The decoder is an `nn.AdaptiveLogSoftmaxWithLoss` ([`TorchModel::softmax`] adaptive, never
/// tied) when one prefix `P` holds a `P.head.weight`, or, with no `decoder.weight` or
/// `decoder.bias`, other tensors of such a head (whose `P.head.weight` is then missing). Its
/// clusters are the tails `0, 1, ...` in a row; the cutoffs, projection widths and head bias
/// come from the shapes (see the [module docs](self)).
///
/// # Errors
/// An [`Error`] naming the tensor, with the expected and the found shape, when a tensor
/// is missing, has no place in such a model (e.g. a bidirectional `_reverse` weight, a
/// misnamed `_l00`, a `tail.5` past the last cluster or a tail under another prefix: reported
/// before any missing tensor, which the message then names), has the wrong shape or a data
/// length that does not match its shape; [`Error::TensorSum`] naming both biases when their
/// f32 sum overflows; when `decoder.weight` is absent although `D != H`; and
/// [`Error::Invalid`] naming the tensors when two prefixes hold an adaptive head or its
/// shortlist and clusters do not cover `V` (`encoder.weight`'s rows).
///
/// ```
/// use rnnlm::{convert::{from_torch, Tensors}, Error};
/// let mut t = Tensors::new();
/// t.insert("encoder.weight".into(), (vec![3, 2], vec![0.0; 6]));
/// t.insert("rnn.weight_hh_l0".into(), (vec![5, 2], vec![0.0; 10])); // 5 rows: no cell has that
/// let err = from_torch(&t).unwrap_err();
/// assert!(matches!(err, Error::TensorShape { path: None, .. }));
/// assert!(err.to_string().starts_with("tensor \"rnn.weight_hh_l0\": expected shape [2, 2]"));
/// ```
pub fn from_torch(t: &Tensors) -> Result<(TorchModel, Tensors)> {
    let enc = t
        .get("encoder.weight")
        .ok_or_else(|| Error::TensorMissing {
            path: None,
            name: "encoder.weight".into(),
            expected: "[V, D]".into(),
        })?;
    let (v, d) = match enc.0[..] {
        [v, d] if v > 0 && d > 0 => (v, d),
        _ => {
            return Err(Error::TensorShape {
                path: None,
                name: "encoder.weight".into(),
                expected: "[V, D] with V, D > 0".into(),
                found: enc.0.clone(),
            })
        }
    };
    let whh = t
        .get("rnn.weight_hh_l0")
        .ok_or_else(|| Error::TensorMissing {
            path: None,
            name: "rnn.weight_hh_l0".into(),
            expected: "[G*H, H] (G = 1 rnn, 3 gru, 4 lstm)".into(),
        })?;
    // The cell with a PyTorch form whose G*H rows match weight_hh's.
    let found = match whh.0[..] {
        [r, h] if h > 0 => Cell::ALL
            .iter()
            .copied()
            .find(|c| c.imp().torch().is_some() && c.gates() * h == r)
            .map(|c| (c, h)),
        _ => None,
    };
    let Some((cell, h)) = found else {
        let h = whh.0.get(1).copied().unwrap_or(0).max(1);
        return Err(Error::TensorShape {
            path: None,
            name: "rnn.weight_hh_l0".into(),
            expected: format!(
                "{} (rnn), {} (gru) or {} (lstm)",
                shape_str(&[h, h]),
                shape_str(&[3 * h, h]),
                shape_str(&[4 * h, h])
            ),
            found: whh.0.clone(),
        });
    };
    let form = torch_form(cell)?;
    let head = torch_head(t)?;
    let decoder = t.get("decoder.weight");
    let has_decoder_weight = decoder.is_some();
    if head.is_none() && !has_decoder_weight && d != h {
        return Err(invalid(
            "tied weights",
            format!(
                "decoder.weight is absent, so the decoder would share encoder.weight, which \
                 needs ninp == nhid; found ninp {d} and nhid {h}"
            ),
        ));
    }
    // Tied when decoder.weight is absent or bitwise equal to encoder.weight (its shape is
    // checked below); an adaptive head is never tied.
    let tied = head.is_none()
        && decoder.is_none_or(|dec| {
            d == h
                && dec.1.len() == enc.1.len()
                && dec
                    .1
                    .iter()
                    .zip(&enc.1)
                    .all(|(a, b)| a.to_bits() == b.to_bits())
        });
    let mut m = TorchModel {
        cell,
        vocab_size: v,
        wordvec_size: d,
        hidden_size: h,
        layers: torch_layers(t),
        tied,
        softmax: Softmax::Full,
    };
    // A tensor with no place in such a model comes first: a misnamed tensor (`_l00` for
    // `_l0`) is reported by its name, with the one it may stand for, not as the other missing.
    let mut what = format!(
        "{} (word_language_model RNNModel)",
        describe(&m, "the tensors")
    );
    if let Some((p, k)) = &head {
        what = format!(
            "{what} with an AdaptiveLogSoftmaxWithLoss of {k} cluster{} under {p:?}",
            if *k == 1 { "" } else { "s" }
        );
    }
    if let Some(missing) = torch_first_missing(t, m.layers, head.as_ref()) {
        what = format!("{what}, where {missing:?} is missing");
    }
    // The outer tensors: the encoder's, then the decoder's (an adaptive head's parts under
    // its prefix, tails 0..k only).
    let outer = |n: &str| match (&head, HeadPart::parse(n)) {
        (None, _) => TORCH_OUTER.contains(&n),
        (Some(_), _) if n == "encoder.weight" => true,
        (Some((prefix, k)), Some((p, part))) => {
            p == prefix && !matches!(part, HeadPart::Tail(i, _) if i >= *k)
        }
        (Some(_), None) => false,
    };
    no_unexpected(
        t,
        |n| outer(n) || torch_layer(n).is_some_and(|k| k < m.layers),
        &what,
    )?;

    let take = |name: String, shape: &[usize]| get(t, &name, shape).map(|e| &e.1);
    let g = cell.gates();
    let mut ours = Tensors::new();
    let embed = take("encoder.weight".into(), &[v, d])?;
    ours.insert("embed.W".into(), (vec![v, d], embed.clone()));
    for l in 0..m.layers {
        let din = if l == 0 { d } else { h };
        let wih = take(format!("rnn.weight_ih_l{l}"), &[g * h, din])?;
        let whh = take(format!("rnn.weight_hh_l{l}"), &[g * h, h])?;
        let (bih_name, bhh_name) = (format!("rnn.bias_ih_l{l}"), format!("rnn.bias_hh_l{l}"));
        let bih = take(bih_name.clone(), &[g * h])?;
        let bhh = take(bhh_name.clone(), &[g * h])?;
        let name = |role| our_name(cell, l, role).expect("the cell has this tensor");
        ours.insert(
            name(Role::Wx),
            (vec![din, g * h], torch_to_ours_weight(wih, din, h, form)),
        );
        ours.insert(
            name(Role::Wh),
            (vec![h, g * h], torch_to_ours_weight(whh, h, h, form)),
        );
        if form.summed_bias {
            let sum: Vec<f32> = bih.iter().zip(bhh).map(|(a, b)| a + b).collect();
            // Finite addends whose f32 sum is not (non-finite ones are the caller's to refuse,
            // as load_torch does).
            let overflow = sum
                .iter()
                .zip(bih.iter().zip(bhh))
                .position(|(s, (a, b))| !s.is_finite() && a.is_finite() && b.is_finite());
            if let Some(index) = overflow {
                return Err(Error::TensorSum {
                    path: None,
                    a: bih_name,
                    b: bhh_name,
                    index,
                    x: bih[index],
                    y: bhh[index],
                });
            }
            ours.insert(
                name(Role::B),
                (vec![g * h], reorder_bias(&sum, h, form, true)),
            );
        } else {
            ours.insert(
                name(Role::B),
                (vec![g * h], reorder_bias(bih, h, form, true)),
            );
            ours.insert(
                name(Role::Bh),
                (vec![g * h], reorder_bias(bhh, h, form, true)),
            );
        }
    }
    if let Some((prefix, k)) = &head {
        m.softmax = adaptive_from_torch(t, prefix, *k, &m, &mut ours)?;
        return Ok((m, ours));
    }
    if has_decoder_weight {
        let dec = take("decoder.weight".into(), &[v, h])?;
        if !tied {
            ours.insert("affine.W".into(), (vec![h, v], transpose(dec, v, h)));
        }
    }
    let bias = take("decoder.bias".into(), &[v])?;
    ours.insert("affine.b".into(), (vec![v], bias.clone()));
    Ok((m, ours))
}

/// A tensor `name` of `t` that is there, whose data fits its shape, and whose shape `ok`
/// accepts; else the error naming it with `expected`.
fn get_if<'a>(
    t: &'a Tensors,
    name: &str,
    expected: impl Fn() -> String,
    ok: impl Fn(&[usize]) -> bool,
) -> Result<&'a (Vec<usize>, Vec<f32>)> {
    let entry = t.get(name).ok_or_else(|| Error::TensorMissing {
        path: None,
        name: name.to_string(),
        expected: expected(),
    })?;
    if !ok(&entry.0) {
        return Err(Error::TensorShape {
            path: None,
            name: name.to_string(),
            expected: expected(),
            found: entry.0.clone(),
        });
    }
    check_len(name, entry)?;
    Ok(entry)
}

/// Reads the `nn.AdaptiveLogSoftmaxWithLoss` under `prefix` with `k` clusters into `ours`
/// (`head.W`, `head.b` when it has a bias, `tail.{i}.proj`, `tail.{i}.W`) and derives the head
/// from the shapes: `c_0` is `head.weight`'s rows less `k`, `c_{i+1} = c_i + n_i` with `n_i`
/// the rows of `tail.{i}.1.weight`, `p_i` the rows of `tail.{i}.0.weight`.
///
/// # Errors
/// A tensor missing or of the wrong shape (naming it); [`Error::Invalid`] naming the tensors
/// and their shapes when the shortlist and the clusters do not cover `V` (`encoder.weight`'s
/// rows), or there are more clusters than [`crate::model::config::MAX_CLUSTERS`].
fn adaptive_from_torch(
    t: &Tensors,
    prefix: &str,
    k: usize,
    m: &TorchModel,
    ours: &mut Tensors,
) -> Result<Softmax> {
    let (v, h) = (m.vocab_size, m.hidden_size);
    let name = |part: HeadPart| part.name(prefix);
    if k == 0 {
        return Err(Error::TensorMissing {
            path: None,
            name: name(HeadPart::Tail(0, false)),
            expected: format!("[p_0, {h}] (an AdaptiveLogSoftmaxWithLoss has a tail cluster)"),
        });
    }
    let head_name = name(HeadPart::Weight);
    let (head_shape, hw) = get_if(
        t,
        &head_name,
        || format!("[c_0 + {k}, {h}] (the shortlist's c_0 >= 1 words, then {k} cluster logits)"),
        |s| matches!(s, &[r, c] if r > k && c == h),
    )?;
    let outs = head_shape[0];
    let c0 = outs - k;
    ours.insert("head.W".into(), (vec![h, outs], transpose(hw, outs, h)));
    let head_bias = t.contains_key(&name(HeadPart::Bias));
    if head_bias {
        let b = get(t, &name(HeadPart::Bias), &[outs])?;
        ours.insert("head.b".into(), (vec![outs], b.1.clone()));
    }
    let (mut cutoffs, mut projections, mut words) = (Vec::new(), Vec::new(), Vec::new());
    let mut c = c0;
    for i in 0..k {
        let (ps, proj) = get_if(
            t,
            &name(HeadPart::Tail(i, false)),
            || format!("[p_{i}, {h}] with p_{i} >= 1 (cluster {i}'s projection)"),
            |s| matches!(s, &[p, c] if p > 0 && c == h),
        )?;
        let p = ps[0];
        let words_name = name(HeadPart::Tail(i, true));
        let (ws, w) = get_if(
            t,
            &words_name,
            || match v.checked_sub(c) {
                // The last cluster holds the words the others leave.
                Some(n) if i + 1 == k && n > 0 => format!("[{n}, {p}] (cluster {i}'s words)"),
                _ => format!("[n_{i}, {p}] with n_{i} >= 1 (cluster {i}'s words)"),
            },
            |s| matches!(s, &[n, q] if n > 0 && q == p),
        )?;
        ours.insert(
            format!("tail.{i}.proj"),
            (vec![h, p], transpose(proj, p, h)),
        );
        ours.insert(format!("tail.{i}.W"), (ws.clone(), w.clone()));
        let as_u32 = |x: usize| u32::try_from(x).ok().filter(|&x| x <= 1 << 24);
        match (as_u32(c), as_u32(p)) {
            (Some(c), Some(p)) => {
                cutoffs.push(c);
                projections.push(p);
            }
            _ => {
                return Err(invalid(
                    "adaptive head",
                    format!("cluster {i} starts at word {c} and projects to {p}: larger than 2^24"),
                ))
            }
        }
        words.push(format!("{words_name} {}", shape_str(ws)));
        c = c.saturating_add(ws[0]);
    }
    if c != v {
        return Err(invalid(
            "adaptive head",
            format!(
                "{head_name} {} (a shortlist of {c0} words and {k} cluster logits) and the \
                 clusters {} cover {c} words, but encoder.weight {} has V = {v}",
                shape_str(head_shape),
                words.join(", "),
                shape_str(&t["encoder.weight"].0),
            ),
        ));
    }
    let sizes = |x: &[u32]| Sizes::try_from(x).map_err(|e| invalid("adaptive head", e));
    Ok(Softmax::Adaptive {
        cutoffs: sizes(&cutoffs)?,
        projections: sizes(&projections)?,
        head_bias,
    })
}

/// The inverse of [`from_torch`]: converts our tensors for model `m` to word_language_model
/// `RNNModel` names and layout.
///
/// When tied, `decoder.weight` is a copy of `encoder.weight`. For RNN and LSTM cells, whose
/// single bias is the sum of PyTorch's two, `bias_ih` gets the whole bias and `bias_hh` is
/// zero (the sum, which is all the model uses, is preserved exactly). An adaptive head becomes
/// an `nn.AdaptiveLogSoftmaxWithLoss` under `decoder.` (`decoder.head.weight`,
/// `decoder.head.bias` with a head bias, `decoder.tail.{i}.0.weight`,
/// `decoder.tail.{i}.1.weight`), with no `decoder.weight` or `decoder.bias`.
///
/// # Errors
/// An [`Error`] when `m` cannot exist (a zero size, no layer, tied with `D != H`, a class
/// head, which PyTorch has no form for, or an adaptive head whose cutoffs do not fit `V`) or
/// a tensor of `ours` is missing, unexpected, of the wrong shape or of the wrong data length.
///
/// ```
/// use rnnlm::convert::{from_torch, to_torch, Tensors, TorchModel};
/// use rnnlm::model::config::Cell;
/// use rnnlm::Softmax;
/// let m = TorchModel { cell: Cell::Gru, vocab_size: 4, wordvec_size: 2, hidden_size: 2,
///                      layers: 1, tied: true, softmax: Softmax::Full };
/// let err = to_torch(&m, &Tensors::new()).unwrap_err();
/// assert_eq!(err.to_string(), "tensor \"embed.W\": missing (expected shape [4, 2])");
///
/// // An adaptive head: shortlist 0..2, one cluster 2..4 projected to 1.
/// let adaptive = TorchModel { tied: false, softmax: Softmax::adaptive(&[2], 2.0, false, 2)?, ..m };
/// let t = |shape: &[usize]| (shape.to_vec(), vec![0.5; shape.iter().product()]);
/// let mut ours = Tensors::new();
/// for (name, shape) in [("embed.W", &[4, 2][..]), ("gru.0.Wx", &[2, 6]), ("gru.0.Wh", &[2, 6]),
///     ("gru.0.bx", &[6]), ("gru.0.bh", &[6]), ("head.W", &[2, 3]), ("tail.0.proj", &[2, 1]),
///     ("tail.0.W", &[2, 1])] {
///     ours.insert(name.into(), t(shape));
/// }
/// let torch = to_torch(&adaptive, &ours)?;
/// assert_eq!(torch["decoder.head.weight"].0, [3, 2]); // transposed
/// assert_eq!(torch["decoder.tail.0.0.weight"].0, [1, 2]); // transposed
/// assert_eq!(torch["decoder.tail.0.1.weight"].0, [2, 1]); // as is
/// assert!(!torch.contains_key("decoder.weight"));
/// assert_eq!(from_torch(&torch)?, (adaptive, ours));
/// # Ok::<(), rnnlm::Error>(())
/// ```
pub fn to_torch(m: &TorchModel, ours: &Tensors) -> Result<Tensors> {
    check_model(m)?;
    let (v, d, h, cell) = (m.vocab_size, m.wordvec_size, m.hidden_size, m.cell);
    let form = torch_form(cell)?;
    let g = cell.gates();
    let mut known = BTreeSet::new();
    let mut take = |name: String, shape: &[usize]| {
        let r = get(ours, &name, shape).map(|e| &e.1);
        known.insert(name);
        r
    };
    let mut t = Tensors::new();
    let embed = take("embed.W".into(), &[v, d])?;
    t.insert("encoder.weight".into(), (vec![v, d], embed.clone()));
    for l in 0..m.layers {
        let din = if l == 0 { d } else { h };
        let name = |role| our_name(cell, l, role).expect("the cell has this tensor");
        let wx = take(name(Role::Wx), &[din, g * h])?;
        let wh = take(name(Role::Wh), &[h, g * h])?;
        t.insert(
            format!("rnn.weight_ih_l{l}"),
            (vec![g * h, din], ours_to_torch_weight(wx, din, h, form)),
        );
        t.insert(
            format!("rnn.weight_hh_l{l}"),
            (vec![g * h, h], ours_to_torch_weight(wh, h, h, form)),
        );
        let (bih, bhh) = if form.summed_bias {
            let b = take(name(Role::B), &[g * h])?;
            (reorder_bias(b, h, form, false), vec![0.0; g * h])
        } else {
            let bx = take(name(Role::B), &[g * h])?;
            let bh = take(name(Role::Bh), &[g * h])?;
            (
                reorder_bias(bx, h, form, false),
                reorder_bias(bh, h, form, false),
            )
        };
        t.insert(format!("rnn.bias_ih_l{l}"), (vec![g * h], bih));
        t.insert(format!("rnn.bias_hh_l{l}"), (vec![g * h], bhh));
    }
    if let Softmax::Adaptive { head_bias, .. } = m.softmax {
        // An nn.AdaptiveLogSoftmaxWithLoss under decoder.
        let name = |part: HeadPart| part.name(TORCH_HEAD_PREFIX);
        let outs = m.softmax.outputs(v);
        let hw = take("head.W".into(), &[h, outs])?;
        t.insert(
            name(HeadPart::Weight),
            (vec![outs, h], transpose(hw, h, outs)),
        );
        if head_bias {
            let b = take("head.b".into(), &[outs])?;
            t.insert(name(HeadPart::Bias), (vec![outs], b.clone()));
        }
        for (i, (n, p)) in clusters(&m.softmax, v).into_iter().enumerate() {
            let proj = take(format!("tail.{i}.proj"), &[h, p])?;
            t.insert(
                name(HeadPart::Tail(i, false)),
                (vec![p, h], transpose(proj, h, p)),
            );
            let w = take(format!("tail.{i}.W"), &[n, p])?;
            t.insert(name(HeadPart::Tail(i, true)), (vec![n, p], w.clone()));
        }
    } else {
        let dec = if m.tied {
            embed.clone()
        } else {
            transpose(take("affine.W".into(), &[h, v])?, h, v)
        };
        t.insert("decoder.weight".into(), (vec![v, h], dec));
        let bias = take("affine.b".into(), &[v])?;
        t.insert("decoder.bias".into(), (vec![v], bias.clone()));
    }
    no_unexpected(ours, |n| known.contains(n), &describe(m, "our tensors"))?;
    Ok(t)
}

// ---- files ----

fn bad(path: &Path, msg: impl Into<String>) -> Error {
    Error::Checkpoint {
        path: path.to_owned(),
        msg: msg.into(),
    }
}

/// Where [`load_torch`] found the vocabulary.
fn vocab_from(
    path: &Path,
    meta: Option<&String>,
    vocab_text: Option<&Path>,
    v: usize,
) -> Result<Vocab> {
    let (words, source) = match (meta, vocab_text) {
        (Some(text), given) => {
            let words: Vec<String> = serde_json::from_str(text).map_err(|e| {
                bad(
                    path,
                    format!("metadata 'vocab' is not a JSON array of strings ({e})"),
                )
            })?;
            if let Some(t) = given {
                // Both: they must agree, or the ids would silently mean other words.
                if read_dictionary(t)? != words {
                    return Err(bad(
                        path,
                        format!(
                            "its 'vocab' metadata ({} words) differs from the dictionary of {} \
                             (word_language_model's, in order of first appearance); drop \
                             --vocab-text to use the metadata",
                            words.len(),
                            t.display()
                        ),
                    ));
                }
            }
            (words, "its 'vocab' metadata".to_string())
        }
        (None, Some(t)) => (
            read_dictionary(t)?,
            format!("the dictionary of {}", t.display()),
        ),
        (None, None) => {
            return Err(bad(
                path,
                "has no 'vocab' metadata, so the words of the ids are unknown; pass \
                 --vocab-text TRAIN (the training text word_language_model built its \
                 dictionary from)",
            ))
        }
    };
    if words.len() != v {
        return Err(bad(
            path,
            format!(
                "{source} has {} words but the model has V = {v} (encoder.weight rows)",
                words.len()
            ),
        ));
    }
    let vocab = Vocab::from_words(words).map_err(|e| bad(path, format!("{source}: {e}")))?;
    vocab.require_eos(path, &source)?;
    Ok(vocab)
}

/// Reads a word_language_model `RNNModel` `state_dict()` saved with
/// `safetensors.torch.save_file` and converts it (see the [module docs](self)).
///
/// The vocabulary is the file's `vocab` metadata entry (a JSON array of the words in id order)
/// when it has one, else word_language_model's `Dictionary` ([`read_dictionary`]) of the text at
/// `vocab_text` (the training text the model was trained on). When both are present they must
/// agree. Its length must be `V`, and it must have `<eos>` (word_language_model's `Dictionary`
/// always does: it ends every line), which ends every sentence rnnlm reads or scores.
///
/// # Errors
/// [`Error::Io`] if a file cannot be read; [`Error::Checkpoint`] naming the file if it is not a
/// regular file, is not safetensors (checked header first, as [`checkpoint::load`] does), fails
/// its checksum, holds a tensor that is not F32 or a NaN or infinite value, looks like an
/// rnnlm checkpoint, describes an invalid model, or the vocabulary is absent, malformed or of
/// the wrong length, or when [`from_torch`] finds the model invalid (e.g. an adaptive head that
/// does not cover `V`); every tensor error of [`from_torch`] (a missing or unexpected tensor, a
/// wrong shape, an overflowing bias sum) naming the file; [`Error::NoEos`] naming the file and
/// the vocabulary's source if the vocabulary has no `<eos>`.
///
/// ```
/// use rnnlm::convert::load_torch;
/// let dir = std::path::Path::new("tests/fixtures/torch");
/// let (params, vocab) = load_torch(&dir.join("gru2.safetensors"), None).unwrap(); // metadata
/// let cfg = params.config();
/// assert_eq!((cfg.cell.name(), cfg.layers, cfg.tied, vocab.len()), ("gru", 2, false, 41));
/// // No vocab metadata: the vocabulary comes from the training text.
/// let (tied, _) = load_torch(&dir.join("gru1_tied.safetensors"), Some(&dir.join("corpus.txt")))
///     .unwrap();
/// assert!(tied.config().tied);
/// let err = load_torch(&dir.join("gru1_tied.safetensors"), None).unwrap_err();
/// assert!(err.to_string().contains("--vocab-text TRAIN"));
/// // A decoder that is an AdaptiveLogSoftmaxWithLoss, here under `out.adaptive.`.
/// let adaptive = std::path::Path::new("tests/fixtures/torch_adaptive/rnn1_adaptive_div4.safetensors");
/// let (params, _) = load_torch(adaptive, None).unwrap();
/// let rnnlm::Softmax::Adaptive { cutoffs, projections, head_bias } = params.config().softmax
/// else { unreachable!() };
/// assert_eq!((cutoffs.as_slice(), projections.as_slice(), head_bias), (&[10][..], &[4][..], false));
/// ```
pub fn load_torch(path: &Path, vocab_text: Option<&Path>) -> Result<(Params, Vocab)> {
    // The checkpoint reader: header first, sizes checked before the data is read, checksum
    // verified when the file has one (files save_torch wrote).
    let bytes = checkpoint::read_file(path)?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file ({e})")))?;
    let (_, header) = SafeTensors::read_metadata(&bytes)
        .map_err(|e| bad(path, format!("not a valid safetensors file ({e})")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let mut t = Tensors::new();
    for (name, view) in st.tensors() {
        if view.dtype() != Dtype::F32 {
            return Err(bad(
                path,
                format!(
                    "tensor {name:?} is {:?}, expected F32 (save the state_dict in float32)",
                    view.dtype()
                ),
            ));
        }
        let data = view
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect::<Vec<f32>>();
        checkpoint::check_finite(&name, &data).map_err(|m| bad(path, m))?;
        t.insert(name, (view.shape().to_vec(), data));
    }
    let (m, ours) = from_torch(&t).map_err(|e| {
        let hint = if t.contains_key("embed.W") && !t.contains_key("encoder.weight") {
            " (this looks like an rnnlm checkpoint, not a PyTorch word_language_model \
             state_dict: convert it with --to torch)"
        } else {
            ""
        };
        if !hint.is_empty() || matches!(e, Error::Invalid { .. }) {
            // An invalid model (e.g. a head that does not cover V) names the file too.
            bad(path, format!("{e}{hint}"))
        } else {
            e.in_file(path)
        }
    })?;
    let cfg = m
        .config()
        .validated()
        .map_err(|e| bad(path, e.to_string()))?;
    let mut data = Vec::with_capacity(Params::len_of(&cfg));
    for (name, shape) in Params::layout(&cfg) {
        match ours.get(&name) {
            Some((s, d)) if *s == shape => data.extend_from_slice(d),
            // from_torch and Params::layout describe the same tensors.
            other => {
                return Err(bad(
                    path,
                    format!(
                        "internal: converted tensor {name:?} is {:?}, layout expects {shape:?}",
                        other.map(|(s, _)| s)
                    ),
                ))
            }
        }
    }
    let vocab = vocab_from(path, meta.get("vocab"), vocab_text, cfg.vocab_size)?;
    Ok((Params::from_vec(cfg, data), vocab))
}

/// Writes `params` as a word_language_model `RNNModel` `state_dict()` in safetensors
/// (`safetensors.torch.load_file` reads it; `model.load_state_dict` takes it), with the
/// vocabulary, when given, as the `vocab` metadata entry (a JSON array of the words in id
/// order). RNN and LSTM biases go whole to `bias_ih` (`bias_hh` is zero); a tied model gets
/// `decoder.weight` as a copy of `encoder.weight`; an adaptive head is written as an
/// `nn.AdaptiveLogSoftmaxWithLoss` under `decoder.` ([`to_torch`]). The header is canonical and carries the
/// `checksum` entry of [`checkpoint::to_bytes_with`] (PyTorch ignores it; [`load_torch`]
/// verifies it). The write is atomic ([`write_atomic`](crate::outputs::write_atomic)): a failure never leaves a
/// partial file.
///
/// # Errors
/// [`Error::Invalid`] for a cell or head PyTorch has no form for (the book's GRU, a class
/// head); if the vocabulary's length is not `V` or it has no `<eos>` ([`Error::NoEos`] naming
/// `path`: [`load_torch`] would refuse the file), a weight is NaN or infinite (naming the
/// tensor and the flat index, as [`checkpoint::to_bytes_with`]), or on I/O failure.
///
/// ```
/// use rand::SeedableRng;
/// use rnnlm::{convert, model::config::Cell, Config, Params, Vocab};
/// let cfg = Config::new(3, 4, 4).unwrap().with_cell(Cell::Lstm).with_layers(2);
/// let params = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(1));
/// let vocab = Vocab::from_words(vec!["<eos>".into(), "a".into(), "b".into()]).unwrap();
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-torch-{}.safetensors", std::process::id()));
/// convert::save_torch(&path, &params, Some(&vocab)).unwrap();
/// let (back, words) = convert::load_torch(&path, None).unwrap();
/// assert_eq!((back, words), (params, vocab)); // bit for bit
/// # std::fs::remove_file(&path).unwrap();
/// ```
pub fn save_torch(path: &Path, params: &Params, vocab: Option<&Vocab>) -> Result<()> {
    let cfg = *params.config();
    let cell = cfg.cell;
    torch_form(cell)?;
    no_torch_head(&cfg.softmax)?;
    let m = TorchModel {
        cell,
        vocab_size: cfg.vocab_size,
        wordvec_size: cfg.wordvec_size,
        hidden_size: cfg.hidden_size,
        layers: cfg.layers,
        tied: cfg.tied,
        softmax: cfg.softmax,
    };
    let ours: Tensors = params
        .tensors()
        .into_iter()
        .map(|(name, shape, data)| (name, (shape, data.to_vec())))
        .collect();
    let t = to_torch(&m, &ours)?;
    let mut meta = HashMap::new();
    if let Some(v) = vocab {
        if v.len() != cfg.vocab_size {
            return Err(Error::Shape {
                what: "vocabulary".into(),
                expected: vec![cfg.vocab_size],
                found: vec![v.len()],
            });
        }
        v.require_eos(path, "the vocabulary to write")?;
        meta.insert(
            "vocab".to_owned(),
            serde_json::to_string(v.words()).expect("strings always serialise"),
        );
    }
    let named: Vec<(String, Vec<usize>, &[f32])> = t
        .iter()
        .map(|(name, (shape, data))| (name.clone(), shape.clone(), &data[..]))
        .collect();
    checkpoint::encode(&named, meta)?.write_atomic(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tensor whose element `i` is `base + i`.
    fn seq(shape: &[usize], base: f32) -> (Vec<usize>, Vec<f32>) {
        let n = shape.iter().product();
        (shape.to_vec(), (0..n).map(|i| base + i as f32).collect())
    }

    /// A word_language_model state dict with distinct values everywhere.
    fn torch_model(cell: Cell, v: usize, d: usize, h: usize, layers: usize, tied: bool) -> Tensors {
        let g = cell.gates();
        let mut t = Tensors::new();
        t.insert("encoder.weight".into(), seq(&[v, d], 0.0));
        for l in 0..layers {
            let din = if l == 0 { d } else { h };
            let base = 1000.0 * (l + 1) as f32;
            t.insert(format!("rnn.weight_ih_l{l}"), seq(&[g * h, din], base));
            t.insert(
                format!("rnn.weight_hh_l{l}"),
                seq(&[g * h, h], base + 300.0),
            );
            t.insert(format!("rnn.bias_ih_l{l}"), seq(&[g * h], base + 600.0));
            t.insert(format!("rnn.bias_hh_l{l}"), seq(&[g * h], base + 0.5));
        }
        if tied {
            let e = t["encoder.weight"].clone();
            t.insert("decoder.weight".into(), e);
        } else {
            t.insert("decoder.weight".into(), seq(&[v, h], 500.0));
        }
        t.insert("decoder.bias".into(), seq(&[v], 900.0));
        t
    }

    fn at(t: &Tensors, name: &str, idx: &[usize]) -> f32 {
        let (shape, data) = &t[name];
        assert_eq!(shape.len(), idx.len(), "{name}");
        let mut flat = 0;
        for (&i, &n) in idx.iter().zip(shape) {
            assert!(i < n);
            flat = flat * n + i;
        }
        data[flat]
    }

    #[test]
    fn lstm_gates_are_reordered_and_transposed() {
        // H = 2, D = 3: PyTorch weight_ih is [8, 3] with rows i0 i1 f0 f1 g0 g1 o0 o1.
        let t = torch_model(Cell::Lstm, 5, 3, 2, 1, false);
        let (m, ours) = from_torch(&t).unwrap();
        assert_eq!(
            m,
            TorchModel {
                cell: Cell::Lstm,
                vocab_size: 5,
                wordvec_size: 3,
                hidden_size: 2,
                layers: 1,
                tied: false,
                softmax: Softmax::Full,
            }
        );
        assert_eq!(ours["lstm.0.Wx"].0, [3, 8]);
        assert_eq!(ours["lstm.0.Wh"].0, [2, 8]);
        let wih = |r: usize, c: usize| at(&t, "rnn.weight_ih_l0", &[r, c]);
        let whh = |r: usize, c: usize| at(&t, "rnn.weight_hh_l0", &[r, c]);
        // Our columns: f0 f1 g0 g1 i0 i1 o0 o1.
        // f unit 0 <- PyTorch row 2; f unit 1 <- row 3.
        assert_eq!(at(&ours, "lstm.0.Wx", &[0, 0]), wih(2, 0));
        assert_eq!(at(&ours, "lstm.0.Wx", &[2, 1]), wih(3, 2));
        // g <- rows 4, 5.
        assert_eq!(at(&ours, "lstm.0.Wx", &[1, 2]), wih(4, 1));
        assert_eq!(at(&ours, "lstm.0.Wx", &[1, 3]), wih(5, 1));
        // i <- rows 0, 1.
        assert_eq!(at(&ours, "lstm.0.Wx", &[0, 4]), wih(0, 0));
        assert_eq!(at(&ours, "lstm.0.Wx", &[2, 5]), wih(1, 2));
        // o <- rows 6, 7.
        assert_eq!(at(&ours, "lstm.0.Wx", &[1, 6]), wih(6, 1));
        assert_eq!(at(&ours, "lstm.0.Wx", &[0, 7]), wih(7, 0));
        // Every element, for Wh.
        let to_torch_row = [2, 3, 4, 5, 0, 1, 6, 7];
        for r in 0..2 {
            for (c, &tr) in to_torch_row.iter().enumerate() {
                assert_eq!(at(&ours, "lstm.0.Wh", &[r, c]), whh(tr, r));
            }
        }
        // Bias: the sum, reordered the same way.
        let bsum = |i: usize| at(&t, "rnn.bias_ih_l0", &[i]) + at(&t, "rnn.bias_hh_l0", &[i]);
        for (c, &tr) in to_torch_row.iter().enumerate() {
            assert_eq!(at(&ours, "lstm.0.b", &[c]), bsum(tr));
        }
        assert_eq!(at(&ours, "lstm.0.b", &[0]), 1602.0 + 1002.5); // f0 <- index 2
                                                                  // Output layer: transposed decoder.
        assert_eq!(ours["affine.W"].0, [2, 5]);
        for r in 0..5 {
            for c in 0..2 {
                assert_eq!(
                    at(&ours, "affine.W", &[c, r]),
                    at(&t, "decoder.weight", &[r, c])
                );
            }
        }
        assert_eq!(ours["affine.b"], t["decoder.bias"]);
        assert_eq!(ours["embed.W"], t["encoder.weight"]);
        let names: Vec<&str> = ours.keys().map(String::as_str).collect();
        assert_eq!(
            names,
            [
                "affine.W",
                "affine.b",
                "embed.W",
                "lstm.0.Wh",
                "lstm.0.Wx",
                "lstm.0.b"
            ]
        );
    }

    #[test]
    fn gru_keeps_order_and_both_biases() {
        let t = torch_model(Cell::Gru, 4, 3, 2, 2, false);
        let (m, ours) = from_torch(&t).unwrap();
        assert_eq!((m.cell, m.layers, m.tied), (Cell::Gru, 2, false));
        assert_eq!(ours["gru.0.Wx"].0, [3, 6]);
        assert_eq!(ours["gru.1.Wx"].0, [2, 6]);
        assert_eq!(ours["gru.1.Wh"].0, [2, 6]);
        for l in 0..2 {
            let din = if l == 0 { 3 } else { 2 };
            for r in 0..6 {
                for c in 0..din {
                    let w = at(&t, &format!("rnn.weight_ih_l{l}"), &[r, c]);
                    assert_eq!(at(&ours, &format!("gru.{l}.Wx"), &[c, r]), w);
                }
            }
            assert_eq!(
                ours[&format!("gru.{l}.bx")],
                t[&format!("rnn.bias_ih_l{l}")]
            );
            assert_eq!(
                ours[&format!("gru.{l}.bh")],
                t[&format!("rnn.bias_hh_l{l}")]
            );
        }
        assert!(!ours.contains_key("gru.0.b"));
    }

    #[test]
    fn rnn_layers_and_bias_sum() {
        let t = torch_model(Cell::Rnn, 6, 4, 3, 3, false);
        let (m, ours) = from_torch(&t).unwrap();
        assert_eq!((m.cell, m.layers, m.hidden_size), (Cell::Rnn, 3, 3));
        for l in 0..3 {
            let b = &ours[&format!("rnn.{l}.b")];
            let base = 1000.0 * (l + 1) as f32;
            assert_eq!(
                b.1,
                [2.0 * base + 600.5, 2.0 * base + 602.5, 2.0 * base + 604.5]
            );
            assert_eq!(ours[&format!("rnn.{l}.Wh")].0, [3, 3]);
        }
        assert_eq!(ours["rnn.0.Wx"].0, [4, 3]);
        assert_eq!(ours["rnn.2.Wx"].0, [3, 3]);
    }

    #[test]
    fn tied_when_decoder_absent_or_bitwise_equal() {
        let t = torch_model(Cell::Lstm, 5, 2, 2, 1, true);
        let (m, ours) = from_torch(&t).unwrap();
        assert!(m.tied);
        assert!(!ours.contains_key("affine.W"));
        let mut absent = t.clone();
        absent.remove("decoder.weight");
        assert_eq!(from_torch(&absent).unwrap(), (m.clone(), ours.clone()));
        // One bit different: untied.
        let mut t2 = t.clone();
        t2.get_mut("decoder.weight").unwrap().1[3] = f32::from_bits(3.0f32.to_bits() + 1);
        let (m2, ours2) = from_torch(&t2).unwrap();
        assert!(!m2.tied);
        assert_eq!(ours2["affine.W"].0, [2, 5]);
        // -0.0 vs 0.0 are equal numbers but not equal bits: untied.
        let mut t3 = t.clone();
        t3.get_mut("decoder.weight").unwrap().1[0] = -0.0;
        assert!(!from_torch(&t3).unwrap().0.tied);
        // Tied models convert back with decoder.weight a copy of encoder.weight.
        let back = to_torch(&m, &ours).unwrap();
        assert_eq!(back["decoder.weight"], t["encoder.weight"]);
    }

    /// to_torch(from_torch(x)) == x except that bias_ih + bias_hh lands in bias_ih.
    #[test]
    fn round_trips() {
        for cell in [Cell::Rnn, Cell::Lstm, Cell::Gru] {
            for (d, h, layers, tied) in [(3, 2, 1, false), (2, 2, 2, true), (4, 5, 3, false)] {
                let t = torch_model(cell, 7, d, h, layers, tied);
                let (m, ours) = from_torch(&t).unwrap();
                assert_eq!((m.cell, m.layers, m.tied), (cell, layers, tied));
                let back = to_torch(&m, &ours).unwrap();
                assert_eq!(
                    back.keys().collect::<Vec<_>>(),
                    t.keys().collect::<Vec<_>>()
                );
                for (name, (shape, data)) in &t {
                    let (bshape, bdata) = &back[name];
                    assert_eq!(bshape, shape, "{name}");
                    if cell != Cell::Gru && name.starts_with("rnn.bias_") {
                        continue;
                    }
                    assert_eq!(bdata, data, "{cell:?} {name}");
                }
                if cell != Cell::Gru {
                    for l in 0..layers {
                        let sum = |x: &Tensors| -> Vec<f32> {
                            let (a, b) = (
                                &x[&format!("rnn.bias_ih_l{l}")].1,
                                &x[&format!("rnn.bias_hh_l{l}")].1,
                            );
                            a.iter().zip(b).map(|(a, b)| a + b).collect()
                        };
                        assert_eq!(sum(&back), sum(&t));
                        assert!(back[&format!("rnn.bias_hh_l{l}")]
                            .1
                            .iter()
                            .all(|&x| x == 0.0));
                    }
                }
                // And ours -> torch -> ours is exact.
                assert_eq!(from_torch(&back).unwrap(), (m, ours));
            }
        }
    }

    #[test]
    fn torch_errors_name_the_tensor() {
        let good = torch_model(Cell::Lstm, 5, 3, 2, 2, false);
        let err = |f: &dyn Fn(&mut Tensors)| {
            let mut t = good.clone();
            f(&mut t);
            from_torch(&t).unwrap_err()
        };
        let e = err(&|t| {
            t.remove("rnn.bias_hh_l1");
        });
        assert!(
            matches!(&e, Error::TensorMissing { path: None, name, expected }
                if name == "rnn.bias_hh_l1" && expected == "[8]"),
            "{e:?}"
        );
        assert_eq!(
            e.to_string(),
            "tensor \"rnn.bias_hh_l1\": missing (expected shape [8])"
        );
        // A missing middle layer is reported, not silently dropped.
        let e = err(&|t| {
            t.remove("rnn.weight_ih_l1");
        });
        assert!(
            matches!(e, Error::TensorMissing { path: None, ref name, .. } if name == "rnn.weight_ih_l1")
        );
        let e = err(&|t| {
            t.insert("rnn.weight_ih_l1".into(), seq(&[8, 3], 0.0));
        });
        assert_eq!(
            e.to_string(),
            "tensor \"rnn.weight_ih_l1\": expected shape [8, 2], found [8, 3]"
        );
        let e = err(&|t| {
            t.insert("decoder.bias".into(), seq(&[4], 0.0));
        });
        assert_eq!(
            e.to_string(),
            "tensor \"decoder.bias\": expected shape [5], found [4]"
        );
        let e = err(&|t| {
            t.insert("decoder.weight".into(), seq(&[5, 3], 0.0));
        });
        assert!(
            matches!(e, Error::TensorShape { path: None, ref name, .. } if name == "decoder.weight")
        );
        let e = err(&|t| {
            t.insert("rnn.weight_ih_l0_reverse".into(), seq(&[8, 3], 0.0));
        });
        assert!(
            matches!(e, Error::TensorUnexpected { path: None, ref name, ref found, .. }
                if name == "rnn.weight_ih_l0_reverse" && found == &[8, 3]),
            "{e}"
        );
        assert!(e.to_string().contains("2-layer lstm"), "{e}");
        let e = err(&|t| {
            t.insert("rnn.weight_hr_l0".into(), seq(&[2, 2], 0.0));
        });
        assert!(
            matches!(e, Error::TensorUnexpected { path: None, .. }),
            "{e}"
        );
        // A misnamed tensor is named, with the one it may stand for.
        let e = err(&|t| {
            let w = t.remove("rnn.weight_hh_l1").unwrap();
            t.insert("rnn.weight_hh_l01".into(), w);
        });
        assert!(
            matches!(e, Error::TensorUnexpected { path: None, ref name, .. } if name == "rnn.weight_hh_l01"),
            "{e}"
        );
        assert!(
            e.to_string()
                .contains("where \"rnn.weight_hh_l1\" is missing"),
            "{e}"
        );
        // Summed biases that overflow f32 name both PyTorch tensors.
        let e = err(&|t| {
            t.get_mut("rnn.bias_ih_l1").unwrap().1[7] = f32::MAX;
            t.get_mut("rnn.bias_hh_l1").unwrap().1[7] = f32::MAX;
        });
        assert_eq!(
            e.to_string(),
            "tensors \"rnn.bias_ih_l1\" + \"rnn.bias_hh_l1\": their sum (the converted model's \
             one bias) overflows f32 at index 7: 3.4028235e38 + 3.4028235e38"
        );
        // An extra layer's lone tensor makes the others of that layer missing.
        let e = err(&|t| {
            t.insert("rnn.bias_ih_l2".into(), seq(&[8], 0.0));
        });
        assert!(
            matches!(e, Error::TensorMissing { path: None, ref name, .. } if name == "rnn.weight_ih_l2")
        );
        let e = err(&|t| {
            t.insert("rnn.weight_hh_l0".into(), seq(&[6, 3], 0.0));
        });
        assert_eq!(
            e.to_string(),
            "tensor \"rnn.weight_hh_l0\": expected shape [3, 3] (rnn), [9, 3] (gru) or [12, 3] \
             (lstm), found [6, 3]"
        );
        let e = err(&|t| {
            t.remove("rnn.weight_hh_l0");
        });
        assert!(
            matches!(e, Error::TensorMissing { path: None, ref name, .. } if name == "rnn.weight_hh_l0")
        );
        let e = err(&|t| {
            t.insert("encoder.weight".into(), seq(&[15], 0.0));
        });
        assert!(
            matches!(e, Error::TensorShape { path: None, ref name, .. } if name == "encoder.weight")
        );
        let e = err(&|t| {
            t.get_mut("rnn.weight_hh_l1").unwrap().1.pop();
        });
        assert_eq!(
            e.to_string(),
            "tensor \"rnn.weight_hh_l1\": shape [8, 2] needs 16 values, found 15"
        );
        // Untied in effect (no decoder.weight) but D != H.
        let e = err(&|t| {
            t.remove("decoder.weight");
        });
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("ninp 3 and nhid 2"), "{e}");
    }

    #[test]
    fn adaptive_head_names_parse_under_any_prefix() {
        use HeadPart::{Bias, Tail, Weight};
        for (name, want) in [
            ("decoder.head.weight", Some(("decoder.", Weight))),
            ("head.bias", Some(("", Bias))),
            (
                "out.adaptive.tail.0.0.weight",
                Some(("out.adaptive.", Tail(0, false))),
            ),
            ("crit.tail.12.1.weight", Some(("crit.", Tail(12, true)))),
            // A prefix that itself holds `tail.`.
            ("tail.3.tail.1.0.weight", Some(("tail.3.", Tail(1, false)))),
            // Not an adaptive head's: no dot before the part, a non-canonical index, others.
            ("decoder.subhead.weight", None),
            ("crit.tail.01.0.weight", None),
            ("crit.tail.1.2.weight", None),
            ("crit.tail..0.weight", None),
            ("decoder.weight", None),
            ("decoder.bias", None),
            ("rnn.weight_hh_l0", None),
        ] {
            assert_eq!(HeadPart::parse(name), want, "{name}");
            if let Some((p, part)) = want {
                assert_eq!(part.name(p), name);
            }
        }
    }

    #[test]
    fn ours_errors_name_the_tensor() {
        let t = torch_model(Cell::Gru, 5, 3, 2, 2, false);
        let (m, good) = from_torch(&t).unwrap();
        let err = |m: &TorchModel, f: &dyn Fn(&mut Tensors)| {
            let mut o = good.clone();
            f(&mut o);
            to_torch(m, &o).unwrap_err()
        };
        let e = err(&m, &|o| {
            o.remove("gru.1.bh");
        });
        assert_eq!(
            e.to_string(),
            "tensor \"gru.1.bh\": missing (expected shape [6])"
        );
        let e = err(&m, &|o| {
            o.insert("gru.0.b".into(), seq(&[6], 0.0));
        });
        assert!(
            matches!(e, Error::TensorUnexpected { path: None, ref name, .. } if name == "gru.0.b")
        );
        let e = err(&m, &|o| {
            o.insert("gru.0.Wx".into(), seq(&[6, 3], 0.0));
        });
        assert_eq!(
            e.to_string(),
            "tensor \"gru.0.Wx\": expected shape [3, 6], found [6, 3]"
        );
        // The model says lstm: every lstm name is missing.
        let lstm = TorchModel {
            cell: Cell::Lstm,
            ..m.clone()
        };
        let e = err(&lstm, &|_| {});
        assert!(
            matches!(e, Error::TensorMissing { path: None, ref name, .. } if name == "lstm.0.Wx")
        );
        // Tied: affine.W has no place.
        let tied = TorchModel {
            tied: true,
            wordvec_size: 2,
            ..m.clone()
        };
        let mut o = good.clone();
        o.insert("embed.W".into(), seq(&[5, 2], 0.0));
        o.insert("gru.0.Wx".into(), seq(&[2, 6], 0.0));
        assert!(matches!(
            to_torch(&tied, &o).unwrap_err(),
            Error::TensorUnexpected { path: None, ref name, .. } if name == "affine.W"
        ));
        o.remove("affine.W");
        assert!(to_torch(&tied, &o).is_ok());
        // Impossible models.
        let e = to_torch(
            &TorchModel {
                tied: true,
                ..m.clone()
            },
            &good,
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "invalid tied weights: need wordvec_size == hidden_size; found 3 and 2"
        );
        let e = to_torch(
            &TorchModel {
                layers: 0,
                ..m.clone()
            },
            &good,
        )
        .unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }));
    }

    // ---- the PyTorch fixtures (tests/fixtures/torch, made by make_fixtures.py) ----

    fn fixture_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch")
    }

    /// Reads a safetensors file into [`Tensors`] and its metadata.
    fn read_safetensors(path: &std::path::Path) -> (Tensors, BTreeMap<String, String>) {
        let bytes = std::fs::read(path).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).unwrap();
        let meta = header
            .metadata()
            .clone()
            .unwrap_or_default()
            .into_iter()
            .collect();
        let mut t = Tensors::new();
        for (name, view) in st.tensors() {
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            let data = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            t.insert(name, (view.shape().to_vec(), data));
        }
        (t, meta)
    }

    fn sigmoid(x: f32) -> f32 {
        1.0 / (1.0 + (-x).exp())
    }

    /// `x [n] · W [n, m]`.
    fn vecmat(x: &[f32], w: &(Vec<usize>, Vec<f32>)) -> Vec<f32> {
        let (n, m) = (w.0[0], w.0[1]);
        assert_eq!(x.len(), n);
        let mut out = vec![0.0f32; m];
        for (i, &xi) in x.iter().enumerate() {
            for (o, &wij) in out.iter_mut().zip(&w.1[i * m..(i + 1) * m]) {
                *o += xi * wij;
            }
        }
        out
    }

    /// Plain forward of OUR formulation over `ids` from a zero state; returns
    /// log p(ids[k+1] | ids[..=k]) for every k.
    fn our_logprobs(m: &TorchModel, p: &Tensors, ids: &[usize]) -> Vec<f64> {
        let (v, d, h) = (m.vocab_size, m.wordvec_size, m.hidden_size);
        let name = |l: usize, s: &str| format!("{}.{l}.{s}", m.cell.name());
        let mut hs = vec![vec![0.0f32; h]; m.layers];
        let mut cs = vec![vec![0.0f32; h]; m.layers];
        let mut out = Vec::new();
        for k in 0..ids.len() - 1 {
            let mut x = p["embed.W"].1[ids[k] * d..(ids[k] + 1) * d].to_vec();
            for l in 0..m.layers {
                let ax = vecmat(&x, &p[&name(l, "Wx")]);
                let ah = vecmat(&hs[l], &p[&name(l, "Wh")]);
                let hp = &hs[l];
                let new_h: Vec<f32> = match m.cell {
                    Cell::Rnn => {
                        let b = &p[&name(l, "b")].1;
                        (0..h).map(|j| (ax[j] + ah[j] + b[j]).tanh()).collect()
                    }
                    Cell::Lstm => {
                        let b = &p[&name(l, "b")].1;
                        let a: Vec<f32> = (0..4 * h).map(|j| ax[j] + ah[j] + b[j]).collect();
                        let c = &mut cs[l];
                        (0..h)
                            .map(|j| {
                                let (f, g) = (sigmoid(a[j]), a[h + j].tanh());
                                let (i, o) = (sigmoid(a[2 * h + j]), sigmoid(a[3 * h + j]));
                                c[j] = f * c[j] + g * i;
                                o * c[j].tanh()
                            })
                            .collect()
                    }
                    Cell::Gru => {
                        let (bx, bh) = (&p[&name(l, "bx")].1, &p[&name(l, "bh")].1);
                        (0..h)
                            .map(|j| {
                                let r = sigmoid(ax[j] + bx[j] + ah[j] + bh[j]);
                                let z = sigmoid(ax[h + j] + bx[h + j] + ah[h + j] + bh[h + j]);
                                let n = (ax[2 * h + j]
                                    + bx[2 * h + j]
                                    + r * (ah[2 * h + j] + bh[2 * h + j]))
                                    .tanh();
                                (1.0 - z) * n + z * hp[j]
                            })
                            .collect()
                    }
                    Cell::GruBook => unreachable!("PyTorch has no such cell"),
                };
                hs[l] = new_h.clone();
                x = new_h;
            }
            let w_out = match p.get("affine.W") {
                Some(w) => w.clone(),
                None => (vec![h, v], transpose(&p["embed.W"].1, v, d)),
            };
            let logits: Vec<f64> = vecmat(&x, &w_out)
                .iter()
                .zip(&p["affine.b"].1)
                .map(|(a, b)| (a + b) as f64)
                .collect();
            let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let lse = max + logits.iter().map(|z| (z - max).exp()).sum::<f64>().ln();
            out.push(logits[ids[k + 1]] - lse);
        }
        out
    }

    #[test]
    fn torch_fixtures_convert_and_match_pytorch() {
        let dir = fixture_dir();
        let expected: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("expected.json")).unwrap())
                .unwrap();
        let corpus = std::fs::read_to_string(dir.join("corpus.txt")).unwrap();
        let words = read_dictionary(&dir.join("corpus.txt")).unwrap();
        let index: BTreeMap<&str, usize> = words
            .iter()
            .enumerate()
            .map(|(i, w)| (w.as_str(), i))
            .collect();
        let ids: Vec<usize> = corpus
            .lines()
            .flat_map(|l| l.split_whitespace().chain(["<eos>"]))
            .map(|w| index[w])
            .collect();
        let models = expected["models"].as_object().unwrap();
        assert_eq!(models.len(), 5);
        for (file, e) in models {
            let (t, meta) = read_safetensors(&dir.join(file));
            let (m, ours) = from_torch(&t).unwrap_or_else(|e| panic!("{file}: {e}"));
            let cell = match e["cell"].as_str().unwrap() {
                "LSTM" => Cell::Lstm,
                "GRU" => Cell::Gru,
                "RNN_TANH" => Cell::Rnn,
                other => panic!("{other}"),
            };
            let n = |k: &str| e[k].as_u64().unwrap() as usize;
            let want = TorchModel {
                cell,
                vocab_size: n("V"),
                wordvec_size: n("ninp"),
                hidden_size: n("nhid"),
                layers: n("layers"),
                tied: e["tied"].as_bool().unwrap(),
                softmax: Softmax::Full,
            };
            assert_eq!(m, want, "{file}");
            assert_eq!(m.vocab_size, words.len(), "{file}");
            if let Some(v) = meta.get("vocab") {
                let v: Vec<String> = serde_json::from_str(v).unwrap();
                assert_eq!(v, words, "{file}");
            }
            let (g, h, d) = (cell.gates(), m.hidden_size, m.wordvec_size);
            assert_eq!(ours["embed.W"].0, [m.vocab_size, d], "{file}");
            assert_eq!(ours[&format!("{}.0.Wx", cell.name())].0, [d, g * h]);
            assert_eq!(
                ours[&format!("{}.{}.Wh", cell.name(), m.layers - 1)].0,
                [h, g * h]
            );
            assert_eq!(ours.contains_key("affine.W"), !m.tied, "{file}");
            // Our formulation over the converted weights reproduces PyTorch's numbers.
            let want_lp: Vec<f64> = e["logprobs_first_40"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect();
            assert_eq!(want_lp.len(), 40);
            let got = our_logprobs(&m, &ours, &ids[..41]);
            for (k, (a, b)) in got.iter().zip(&want_lp).enumerate() {
                assert!(
                    (a - b).abs() < 1e-5,
                    "{file} position {k}: ours {a}, torch {b}"
                );
            }
            // And back: to_torch gives the same weights as the file.
            let back = to_torch(&m, &ours).unwrap();
            for (name, (shape, data)) in &t {
                assert_eq!(&back[name].0, shape);
                if !name.starts_with("rnn.bias_") || cell == Cell::Gru {
                    assert_eq!(&back[name].1, data, "{file} {name}");
                }
            }
        }
    }
}
