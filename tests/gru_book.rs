//! Reference values for the book's appendix-C GRU (`Cell::GruBook`, `--cell gru-book`).
//!
//! `tests/fixtures/gru_book/expected.json` was written by `make_fixture.py` next to it: a numpy
//! (float64) transcription of the ch06 Rnnlm with this cell, forward and hand-written backward
//! (checked there against finite differences), closed-form weights rounded to f32. Per step,
//! gate order z, r, h along the 3H axis and one bias:
//! `z = σ(x Wxz + h Whz + bz)`, `r = σ(x Wxr + h Whr + br)`,
//! `h̃ = tanh(x Wxh + (r⊙h) Whh + bh)`, `h' = (1−z)⊙h + z⊙h̃`.
//!
//! Each configuration (1 and 2 layers) runs two stateful batches (the first with an ignored
//! target); the state carried into the second matters, and backward is truncated at each
//! batch's start. The fixture stores the weights by checkpoint name, so nothing is re-derived
//! here.

use std::collections::BTreeMap;
use std::path::Path;

use rnnlm::model::config::Cell;
use rnnlm::{Config, Params, SimpleRnnlm};
use serde_json::Value;

fn expected() -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gru_book/expected.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    serde_json::from_str(&text).unwrap()
}

fn usize_of(v: &Value, key: &str) -> usize {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key}: not an integer")) as usize
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|x| x.as_f64().expect("a number"))
        .collect()
}

fn by_name(v: &Value) -> BTreeMap<String, Vec<f64>> {
    v.as_object()
        .expect("an object")
        .iter()
        .map(|(k, x)| (k.clone(), f64s(x)))
        .collect()
}

fn xs_of(v: &Value) -> Vec<u32> {
    f64s(v).into_iter().map(|x| x as u32).collect()
}

fn ts_of(v: &Value) -> Vec<i32> {
    f64s(v).into_iter().map(|x| x as i32).collect()
}

fn assert_loss(what: &str, got: f32, want: f64) {
    let rel = (got as f64 - want).abs() / want.abs();
    assert!(rel < 1e-5, "{what}: got {got}, want {want} (rel {rel:e})");
}

fn assert_state(what: &str, got: &[f32], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "{what}: length ([L,N,H])");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(err < 1e-5, "{what}[{i}]: got {g}, want {w} (err {err:e})");
    }
}

/// Every tensor of `grads` against the fixture: max |diff| relative to the tensor's max |value|.
fn assert_grads(what: &str, grads: &Params, want: &BTreeMap<String, Vec<f64>>) {
    let tensors = grads.tensors();
    let mut got_names: Vec<&str> = tensors.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut want_names: Vec<&str> = want.keys().map(String::as_str).collect();
    got_names.sort_unstable();
    want_names.sort_unstable();
    assert_eq!(got_names, want_names, "{what}: tensor names");

    let mut report = Vec::new();
    let mut ok = true;
    for (name, _, got) in &tensors {
        let w = &want[name];
        assert_eq!(got.len(), w.len(), "{what} {name}: length");
        let maxdiff = got
            .iter()
            .zip(w)
            .map(|(&g, &w)| (g as f64 - w).abs())
            .fold(0.0, f64::max);
        let scale = w.iter().map(|w| w.abs()).fold(0.0, f64::max);
        let rel = maxdiff / scale;
        ok &= rel < 1e-4;
        report.push(format!("{name}: maxdiff {maxdiff:.3e} (rel {rel:.3e})"));
    }
    assert!(ok, "{what}: gradients differ:\n  {}", report.join("\n  "));
}

fn check_config(c: &Value) {
    let (v, d, h) = (usize_of(c, "V"), usize_of(c, "D"), usize_of(c, "H"));
    let (n, t, l) = (usize_of(c, "N"), usize_of(c, "T"), usize_of(c, "L"));
    let what = c["name"].as_str().unwrap().to_string();

    let cfg = Config::new(v, d, h)
        .unwrap()
        .with_cell(Cell::GruBook)
        .with_layers(l)
        .validated()
        .unwrap();
    let mut params = Params::zeros(cfg);

    // The layout has the fixture's names and shapes (serde_json's map is sorted by name).
    let mut shapes: Vec<(String, Vec<usize>)> = c["shapes"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, s)| (k.clone(), f64s(s).into_iter().map(|x| x as usize).collect()))
        .collect();
    let mut layout: Vec<(String, Vec<usize>)> = params
        .tensors()
        .into_iter()
        .map(|(name, shape, _)| (name, shape))
        .collect();
    shapes.sort();
    layout.sort();
    assert_eq!(layout, shapes, "{what}: tensor names and shapes");

    for (name, w) in by_name(&c["weights"]) {
        let dst = params
            .tensor_mut(&name)
            .unwrap_or_else(|| panic!("{what}: no tensor {name}"));
        assert_eq!(dst.len(), w.len(), "{what} {name}: length");
        // The fixture's values are f32-rounded already: the cast is exact.
        let w32: Vec<f32> = w.iter().map(|&x| x as f32).collect();
        dst.copy_from_slice(&w32);
    }
    let mut model = SimpleRnnlm::from_params(params, n, t).unwrap();

    let (xs1, ts1) = (xs_of(&c["xs1"]), ts_of(&c["ts1"]));
    let (xs2, ts2) = (xs_of(&c["xs2"]), ts_of(&c["ts2"]));
    assert_eq!((xs1.len(), xs2.len()), (n * t, n * t), "{what}: batch size");
    assert!(
        ts1.contains(&-1),
        "{what}: the first batch has an ignored target"
    );

    let loss1 = model.forward(&xs1, &ts1).unwrap();
    assert_loss(
        &format!("{what} loss1"),
        loss1,
        c["loss1"].as_f64().unwrap(),
    );
    assert_state(
        &format!("{what} state1"),
        model.state(),
        &f64s(&c["state1"]),
    );
    model.backward().unwrap();
    assert_grads(
        &format!("{what} batch 1"),
        model.grads(),
        &by_name(&c["grads1"]),
    );

    // The second batch starts from the carried state of every layer.
    let loss2 = model.forward(&xs2, &ts2).unwrap();
    assert_loss(
        &format!("{what} loss2"),
        loss2,
        c["loss2"].as_f64().unwrap(),
    );
    assert_state(
        &format!("{what} state2"),
        model.state(),
        &f64s(&c["state2"]),
    );
    model.backward().unwrap();
    assert_grads(
        &format!("{what} batch 2"),
        model.grads(),
        &by_name(&c["grads2"]),
    );
}

#[test]
fn one_layer_matches_the_numpy_reference() {
    let e = expected();
    let c = e["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["L"].as_u64() == Some(1))
        .expect("a 1-layer config");
    check_config(c);
}

#[test]
fn two_layers_match_the_numpy_reference() {
    let e = expected();
    let c = e["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["L"].as_u64() == Some(2))
        .expect("a 2-layer config");
    check_config(c);
}
