//! The book's chapter 5 run (`ch05/train_custom_loop.py`): a SimpleRnnlm on the first 1000
//! tokens of PTB train (V = 418), N=10, T=5, D=H=100, SGD lr 0.1, 100 epochs.
//!
//! ```text
//! cargo run --release --example simple_rnnlm [-- --data-dir DIR --epochs 100 --seed 1 --csv FILE --save MODEL]
//! ```
//!
//! PTB is read from `--data-dir`, else `$RNNLM_PTB_DIR`, else a cache folder (downloaded on
//! first use from the URL the book uses, SHA-256 verified). The perplexity curve is written as
//! CSV (default `simple_rnnlm.csv`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use rnnlm::data::download::ptb_dir;
use rnnlm::{BookBatches, Config, Ptb, Sgd, SimpleRnnlm, Vocab};

#[derive(Parser)]
#[command(about = "The book's ch05 SimpleRnnlm run on the first 1000 tokens of PTB")]
struct Args {
    /// Folder with ptb.{train,valid,test}.txt (default: $RNNLM_PTB_DIR, else a download cache).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Training epochs.
    #[arg(long, default_value_t = 100)]
    epochs: usize,
    /// Seed of the weight initialisation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where to write the perplexity curve.
    #[arg(long, default_value = "simple_rnnlm.csv")]
    csv: PathBuf,
    /// Also save the trained model (safetensors, with its 418-word vocabulary) here.
    #[arg(long)]
    save: Option<PathBuf>,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> rnnlm::Result<()> {
    let (batch_size, time_size, wordvec_size, hidden_size, lr) = (10, 5, 100, 100, 0.1);
    let corpus_size = 1000;

    let dir = ptb_dir(args.data_dir.as_deref())?;
    let ptb = Ptb::load(&dir)?;
    let corpus = &ptb.train[..corpus_size];
    // As the book: vocab_size = max(corpus) + 1 (ids are by first appearance, so 418).
    let vocab_size = *corpus.iter().max().expect("non-empty") as usize + 1;
    println!(
        "corpus size: {corpus_size}, vocabulary size: {vocab_size}, threads: {}",
        rayon::current_num_threads()
    );

    let cfg = Config::new(vocab_size, wordvec_size, hidden_size)?;
    let mut model = SimpleRnnlm::new(cfg, batch_size, time_size, args.seed)?;
    let sgd = Sgd::new(lr);
    let mut batches = BookBatches::new(corpus, batch_size, time_size)?;
    let iters = batches.iters_per_epoch();
    let (mut xs, mut ts) = (
        vec![0; batch_size * time_size],
        vec![0; batch_size * time_size],
    );

    let mut curve = String::from("epoch,perplexity\n");
    let start = Instant::now();
    for epoch in 1..=args.epochs {
        let mut total_loss = 0.0f64;
        for _ in 0..iters {
            batches.next_batch(&mut xs, &mut ts);
            total_loss += model.forward(&xs, &ts)? as f64;
            model.backward()?;
            sgd.update(model.params_mut_and_grads());
        }
        let ppl = (total_loss / iters as f64).exp();
        println!("| epoch {epoch} | perplexity {ppl:.2}");
        curve.push_str(&format!("{epoch},{ppl:.4}\n"));
    }
    let secs = start.elapsed().as_secs_f64();
    let tokens = args.epochs * iters * batch_size * time_size;
    println!(
        "trained {tokens} tokens in {secs:.3} s: {:.0} tokens/s ({} threads)",
        tokens as f64 / secs,
        rayon::current_num_threads()
    );
    rnnlm::outputs::write_atomic(&args.csv, curve.as_bytes())?;
    println!("perplexity curve written to {}", args.csv.display());
    if let Some(path) = &args.save {
        // Ids are by first appearance, so the words of the first 1000 tokens are ids 0..V.
        let vocab = Vocab::from_words(ptb.vocab.words()[..vocab_size].to_vec())?;
        rnnlm::checkpoint::save(path, model.params(), Some(&vocab))?;
        println!("model saved to {}", path.display());
    }
    Ok(())
}
