//! The two evaluation protocols: the book's, and every token scored once.

use rand::SeedableRng;
use rnnlm::{eval_full, eval_perplexity, Config, Params};

fn model() -> Params {
    let cfg = Config::new(13, 8, 12).unwrap();
    let mut p = Params::init_book(cfg, &mut rand_chacha::ChaCha8Rng::seed_from_u64(9));
    // Larger weights than the book's init so the hidden state matters for the loss.
    p.as_mut_slice().iter_mut().for_each(|x| *x *= 8.0);
    p
}

fn corpus(len: usize) -> Vec<u32> {
    (0..len).map(|i| ((i * i + 3 * i) % 13) as u32).collect()
}

#[test]
fn full_protocol_scores_every_token_once() {
    let p = model();
    for len in [2, 11, 100, 101] {
        let c = corpus(len);
        for (n, t) in [(1, 1), (1, 7), (3, 4), (10, 35), (200, 3)] {
            let r = eval_full(&p, &c, n, t).unwrap();
            assert_eq!(r.tokens, len - 1, "len {len}, n {n}, t {t}");
            assert!(r.perplexity.is_finite() && r.perplexity > 1.0);
        }
    }
    assert!(
        eval_full(&p, &[3], 1, 5).is_err(),
        "one token: nothing to score"
    );
}

#[test]
fn one_stream_does_not_depend_on_the_chunk_length() {
    // With a single stream the state carries across chunks exactly, so every position gets
    // the same loss however the stream is cut.
    let p = model();
    let c = corpus(97);
    let base = eval_full(&p, &c, 1, 96).unwrap();
    for t in [1, 5, 7, 40] {
        let r = eval_full(&p, &c, 1, t).unwrap();
        let rel = (r.mean_loss - base.mean_loss).abs() / base.mean_loss;
        assert!(
            rel < 1e-12,
            "t = {t}: {} vs {}",
            r.mean_loss,
            base.mean_loss
        );
    }
    // Several streams restart from a zero state at their boundaries: close, not equal.
    let r = eval_full(&p, &c, 4, 5).unwrap();
    assert_ne!(r.mean_loss, base.mean_loss);
    assert!((r.mean_loss - base.mean_loss).abs() / base.mean_loss < 0.2);
}

#[test]
fn book_protocol_drops_the_tail() {
    let p = model();
    let c = corpus(120); // (120-1) / (2*10) = 5 batches: 100 of 119 targets
    let book = eval_perplexity(&p, &c, 2, 10).unwrap();
    assert_eq!((book.batches, book.tokens), (5, 100));
    let full = eval_full(&p, &c, 2, 10).unwrap();
    assert_eq!(full.tokens, 119);
}
