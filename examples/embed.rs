//! Embedding a trained model: load a checkpoint, score sentences, generate text.
//!
//! ```text
//! cargo run --release --example simple_rnnlm -- --save simple_rnnlm.safetensors
//! cargo run --release --example embed [-- simple_rnnlm.safetensors]
//! ```
//!
//! The checkpoint must carry its vocabulary (`--save` of the `simple_rnnlm` example does).

use std::path::PathBuf;
use std::process::ExitCode;

use rand::SeedableRng;
use rnnlm::{Rnnlm, Sampling};

fn main() -> ExitCode {
    let path = PathBuf::from(
        std::env::args_os()
            .nth(1)
            .unwrap_or_else(|| "simple_rnnlm.safetensors".into()),
    );
    if !path.exists() {
        eprintln!(
            "error: {} not found; train and save a model first:\n  \
             cargo run --release --example simple_rnnlm -- --save {}",
            path.display(),
            path.display()
        );
        return ExitCode::FAILURE;
    }
    match run(&path) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(path: &std::path::Path) -> rnnlm::Result<()> {
    let model = Rnnlm::load(path)?;
    let cfg = model.config();
    println!(
        "{}: V={}, D={}, H={}",
        path.display(),
        cfg.vocab_size,
        cfg.wordvec_size,
        cfg.hidden_size
    );

    // Sentences from the start of PTB train (the ch05 model's vocabulary); words outside the
    // vocabulary become <unk> (PTB's vocabulary has it).
    let sentences = [
        "<eos> the company said it expects to report a loss <eos>",
        "<eos> mr. <unk> is chairman of the board <eos>",
        "<eos> pierre <unk> N years old will join the board as a nonexecutive director nov. N <eos>",
    ];
    for s in sentences {
        match model.encode(s) {
            Ok(ids) => {
                let score = model.score(&ids)?;
                println!(
                    "log-prob {:9.3}  tokens {:3}  perplexity {:9.2}  | {}",
                    score.log_prob,
                    score.tokens,
                    score.perplexity(),
                    model.decode(&ids)
                );
            }
            Err(e) => println!("skipped {s:?}: {e}"),
        }
    }

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2024);
    let start = model.encode("<eos>")?;
    let skip = model.encode("<unk>").unwrap_or_default();
    let sampling = Sampling {
        skip,
        ..Sampling::default()
    };
    let words = model.generate(&mut rng, &start, 20, &sampling)?;
    println!("generated: {}", model.decode(&words));
    Ok(())
}
