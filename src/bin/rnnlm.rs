//! `rnnlm`: command-line front end.
//!
//! Errors print one line on stderr and exit with status 2 (usage and input errors).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use rnnlm::bench::{BenchSpec, Mode};
use rnnlm::data::corpus::read_counting_unk;
use rnnlm::{checkpoint, Error};

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
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchMode {
    /// Forward + backward + SGD.
    Train,
    /// Forward only.
    Infer,
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Vocabulary size V.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    vocab: u32,
    /// Word-vector size D.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    wordvec: u32,
    /// Hidden size H.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    hidden: u32,
    /// Batch rows N.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Time steps T.
    #[arg(long, default_value_t = 35, value_parser = clap::value_parser!(u32).range(1..))]
    time: u32,
    /// Threads (default: RAYON_NUM_THREADS, else one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// What to time.
    #[arg(long, value_enum, default_value = "train")]
    mode: BenchMode,
    /// Untimed warm-up, seconds.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Timed windows; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..))]
    windows: u32,
    /// Seconds per window.
    #[arg(long, default_value_t = 1.0)]
    window: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, ValueEnum)]
enum Protocol {
    /// The book's eval_perplexity: N rows from offsets k*T + i*jump, the partial last batch
    /// dropped, state carried, exp of the mean per-batch loss.
    Book,
    /// Every token scored once (N contiguous streams, the final partial chunk included),
    /// exp of the mean per-token loss.
    Full,
}

impl From<Protocol> for rnnlm::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Book => rnnlm::Protocol::Book,
            Protocol::Full => rnnlm::Protocol::Full,
        }
    }
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
        Command::Bench(args) => bench(&args),
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
    let protocol = rnnlm::Protocol::from(args.protocol);
    let ppl = rnnlm::evaluate(&ckpt.params, &ids, protocol, n, t).map_err(|e| match e {
        Error::Invalid { msg, .. } => Error::Parse {
            path: args.data.clone(),
            line: None,
            msg,
        },
        other => other,
    })?;
    let protocol = protocol.name();
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

fn seconds(what: &str, s: f64) -> Result<std::time::Duration, Error> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| Error::invalid(what, format!("{s} is not a number of seconds")))
}

fn bench(args: &BenchArgs) -> Result<(), Error> {
    let cfg = rnnlm::Config::new(
        args.vocab as usize,
        args.wordvec as usize,
        args.hidden as usize,
    )?;
    let spec = BenchSpec {
        cfg,
        n: args.batch as usize,
        t: args.time as usize,
        mode: match args.mode {
            BenchMode::Train => Mode::Train,
            BenchMode::Infer => Mode::Infer,
        },
        warmup: seconds("--warmup", args.warmup)?,
        windows: args.windows as usize,
        window: seconds("--window", args.window)?,
    };
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(p) = args.threads {
        builder = builder.num_threads(p as usize);
    }
    let pool = builder
        .build()
        .map_err(|e| Error::invalid("--threads", e.to_string()))?;
    // The whole run inside one pool: rayon calls from a worker thread are cheapest.
    let report = pool.install(|| rnnlm::bench::run(&spec))?;
    let mode = match args.mode {
        BenchMode::Train => "train",
        BenchMode::Infer => "infer",
    };
    let rss = rnnlm::bench::peak_rss_bytes();
    if args.json {
        let out = serde_json::json!({
            "tokens_per_sec": report.tokens_per_sec,
            "window_tokens_per_sec": report.window_tokens_per_sec,
            "mode": mode,
            "vocab": args.vocab, "wordvec": args.wordvec, "hidden": args.hidden,
            "batch": args.batch, "time": args.time,
            "threads": report.threads,
            "steps": report.steps,
            "isa": rnnlm::cpu::isa().name(),
            "model_bytes": report.model_bytes,
            "peak_rss_bytes": rss,
        });
        println!("{out}");
    } else {
        println!(
            "{mode}: {:.0} tokens/s (median of {} windows; V={} D={} H={} N={} T={}; {} threads, {}; params+grads+workspace {:.1} MiB, peak RSS {})",
            report.tokens_per_sec,
            report.window_tokens_per_sec.len(),
            args.vocab,
            args.wordvec,
            args.hidden,
            args.batch,
            args.time,
            report.threads,
            rnnlm::cpu::isa().name(),
            report.model_bytes as f64 / (1 << 20) as f64,
            rss.map_or("unknown".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64)),
        );
    }
    Ok(())
}
