//! The sampling check shared by the factorised heads' tests.

use rand::SeedableRng;
use rnnlm::{Rnnlm, Sampling};

/// The first word after `5`, drawn 40,000 times, against the step's probabilities: at
/// temperature 1 (the factorised heads draw their first softmax, then a word of the chosen
/// group), with the words `barred` skipped (a group's weight is then its allowed share), and
/// with a temperature (the whole distribution).
pub fn check_sampling(m: &Rnnlm, barred: &[u32]) {
    let v = m.config().vocab_size;
    let mut st = m.zero_state(1);
    let mut row = vec![0.0f32; v];
    m.step(&mut st, &[5], &mut row).unwrap();
    let spread =
        row.iter().cloned().fold(f32::MIN, f32::max) - row.iter().cloned().fold(f32::MAX, f32::min);
    assert!(
        spread > 3.0,
        "a near-uniform distribution (spread {spread}) tests little"
    );
    for (skip, temperature) in [
        (vec![], 1.0f32),
        (barred.to_vec(), 1.0),
        (vec![barred[1]], 0.7),
    ] {
        let mut want: Vec<f64> = row
            .iter()
            .enumerate()
            .map(|(w, &l)| {
                if skip.contains(&(w as u32)) {
                    0.0
                } else {
                    (l as f64 / temperature as f64).exp()
                }
            })
            .collect();
        let z: f64 = want.iter().sum();
        want.iter_mut().for_each(|x| *x /= z);
        let sampling = Sampling {
            temperature,
            top_k: None,
            skip: skip.clone(),
        };
        let draws = 40_000;
        let mut seen = vec![0usize; v];
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        for _ in 0..draws {
            let w = m.generate(&mut rng, &[5], 1, &sampling).unwrap()[0];
            seen[w as usize] += 1;
        }
        for &s in &skip {
            assert_eq!(seen[s as usize], 0, "skipped word {s} was drawn");
        }
        // Total variation distance: ~0.5 * sqrt(V / draws) ≈ 0.02 by chance alone.
        let tv: f64 = seen
            .iter()
            .zip(&want)
            .map(|(&c, &p)| (c as f64 / draws as f64 - p).abs())
            .sum::<f64>()
            / 2.0;
        assert!(
            tv < 0.03,
            "skip {skip:?} T={temperature}: total variation {tv}"
        );
    }
}
