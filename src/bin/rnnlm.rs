//! `rnnlm`: command-line front end.
//!
//! Errors print one line on stderr and exit with status 2 (usage and input errors).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rnnlm::data::corpus::read_counting_unk;
use rnnlm::{checkpoint, eval_perplexity, Error};

#[derive(Parser)]
#[command(
    name = "rnnlm",
    version,
    about = "Fast CPU recurrent-neural-network language models"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Perplexity of a text under a checkpoint.
    Eval(EvalArgs),
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    /// The book's eval_perplexity: N rows from offsets k*T + i*jump, the partial last batch
    /// dropped, state carried, exp of the mean per-batch loss.
    Book,
}

#[derive(clap::Args)]
struct EvalArgs {
    /// Checkpoint (.safetensors) with a `vocab` metadata entry.
    #[arg(long)]
    model: PathBuf,
    /// Text to score: one sentence per line, whitespace-separated words.
    #[arg(long)]
    data: PathBuf,
    /// Evaluation protocol.
    #[arg(long, value_enum, default_value = "book")]
    protocol: Protocol,
    /// Rows per batch.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Time steps per batch.
    #[arg(long, default_value_t = 35, value_parser = clap::value_parser!(u32).range(1..))]
    time: u32,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("rnnlm: error: {e}");
            ExitCode::from(2)
        }
    }
}

fn eval(args: &EvalArgs) -> Result<(), Error> {
    let ckpt = checkpoint::load(&args.model)?;
    let vocab = ckpt.vocab.ok_or_else(|| Error::Checkpoint {
        path: args.model.clone(),
        msg: "has no 'vocab' metadata entry, so words cannot be mapped to ids".into(),
    })?;
    let (ids, unk) = read_counting_unk(&args.data, &vocab)?;
    let (n, t) = (args.batch as usize, args.time as usize);
    let ppl = eval_perplexity(&ckpt.params, &ids, n, t).map_err(|e| match e {
        Error::Invalid { msg, .. } => Error::Parse {
            path: args.data.clone(),
            line: None,
            msg,
        },
        other => other,
    })?;
    let protocol = match args.protocol {
        Protocol::Book => "book",
    };
    if args.json {
        let out = serde_json::json!({
            "perplexity": ppl.perplexity,
            "mean_loss": ppl.mean_loss,
            "protocol": protocol,
            "batch": n,
            "time": t,
            "batches": ppl.batches,
            "tokens_scored": ppl.tokens,
            "tokens": ids.len(),
            "unk_mapped": unk,
            "model": args.model,
            "data": args.data,
        });
        println!("{out}");
    } else {
        println!(
            "perplexity {:.4} (protocol {protocol}: batch {n}, time {t}; {} of {} tokens scored; {unk} words mapped to <unk>)",
            ppl.perplexity,
            ppl.tokens,
            ids.len()
        );
    }
    Ok(())
}
