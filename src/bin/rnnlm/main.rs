//! `rnnlm`: command-line front end.
//!
//! Errors print one line on stderr and exit with status 2 (usage and input errors); Ctrl-C,
//! SIGTERM or SIGHUP during `train` saves a resume point and exits with 128 + the signal's
//! number (130, 143, 129).
//!
//! This file holds the command line (`Cli`, `Command`), `main` and its dispatch, and the
//! helpers several commands share (`note`, `model_eos`, `thread_pool`); each subcommand lives
//! in its own module, with its flags.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use rnnlm::Error;

// First: its `outln!` macro is used by the modules after it.
#[macro_use]
mod stdout;

mod bench;
mod convert;
mod corpus_args;
mod eval;
mod generate;
mod places;
mod prepare;
mod score;
mod shared_args;
mod signals;
mod train;

use bench::{bench, BenchArgs};
use convert::{convert, ConvertArgs};
use eval::{eval, EvalArgs};
use generate::{generate, GenerateArgs};
use prepare::{prepare, zipf_text, PrepareArgs, ZipfTextArgs};
use score::{score, ScoreArgs};
use train::{train, TrainArgs};

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
    /// Training or inference throughput on synthetic data.
    Bench(BenchArgs),
    /// Train a model (the book's chapter-6 loop) and save the best one.
    Train(Box<TrainArgs>),
    /// Sample text from a model (repeatable for a seed).
    Generate(GenerateArgs),
    /// Log-probability, token count and perplexity of each input line.
    ///
    /// Lines are scored in chunks of up to 2048. From a pipe, socket or terminal, the lines
    /// that have arrived are scored, and their answers written, as soon as no next line comes
    /// within 2 ms: a client can send one line and wait for its answer.
    Score(ScoreArgs),
    /// Convert a PyTorch word_language_model checkpoint to ours (--from torch) or back
    /// (--to torch).
    Convert(ConvertArgs),
    /// Read a text corpus once into a compact ids file (OUT.ids) and its vocabulary
    /// (OUT.vocab), for `train --train-ids` and `eval --data-ids`.
    Prepare(PrepareArgs),
    /// Write a synthetic Zipf-distributed text corpus (for measuring `prepare`).
    #[command(hide = true)]
    ZipfText(ZipfTextArgs),
}

fn main() -> ExitCode {
    // Parsed by hand (not `Cli::parse`) to keep the matches: `train --resume` asks which
    // flags the user typed.
    let matches = Cli::command().get_matches();
    let cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let result = match cli.command {
        Command::Eval(args) => eval(&args),
        Command::Bench(args) => bench(&args),
        Command::Train(args) => {
            let given = matches
                .subcommand_matches("train")
                .expect("the train subcommand");
            train(&args, given)
        }
        Command::Generate(args) => generate(&args),
        Command::Score(args) => score(&args),
        Command::Convert(args) => convert(&args),
        Command::Prepare(args) => prepare(&args),
        Command::ZipfText(args) => zipf_text(&args),
    };
    let result = result.and_then(|()| match stdout::failure() {
        Some(e) => Err(Error::io("standard output", e)),
        None => Ok(()),
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Not eprintln!: it panics when stderr is closed too.
            let _ = writeln!(std::io::stderr(), "rnnlm: error: {e}");
            ExitCode::from(2)
        }
    }
}

/// A note on stderr (write errors ignored: a note is not worth failing for).
fn note(kind: &str, msg: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "rnnlm: {kind}: {msg}");
}

/// The `<eos>` id of the vocabulary of the model at `path`, or the one error (naming the model)
/// of every command that reads sentences with it.
fn model_eos(vocab: &rnnlm::Vocab, path: &Path) -> Result<u32, Error> {
    vocab.require_eos(path, "its vocabulary")
}

/// The most threads a pool may have. rayon starts every thread up front, so a typo such as
/// `--threads 100000` would otherwise stall for minutes before failing or running; no machine
/// this runs on gains from more than a few threads per core.
const MAX_THREADS: usize = 256;

/// The rayon pool a command runs in: `--threads P`, else RAYON_NUM_THREADS, else one thread
/// per core. Commands run their whole loop inside it (`pool.install`), where rayon's calls are
/// cheapest.
fn thread_pool(threads: Option<u32>) -> Result<rayon::ThreadPool, Error> {
    let from_env = || {
        std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
    };
    let (what, count) = match threads {
        Some(p) => ("--threads", Some(p as usize)),
        None => ("RAYON_NUM_THREADS", from_env()),
    };
    if let Some(p) = count.filter(|&p| p > MAX_THREADS) {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        return Err(Error::invalid(
            what,
            format!("{p} threads is more than the {MAX_THREADS} allowed (this machine has {cores} cores)"),
        ));
    }
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(p) = threads {
        builder = builder.num_threads(p as usize);
    }
    builder
        .build()
        .map_err(|e| Error::invalid("--threads", e.to_string()))
}
