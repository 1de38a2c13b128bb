//! `rnnlm bench`: training or inference throughput on synthetic data.

use clap::ValueEnum;
use rnnlm::bench::{BenchSpec, Mode};
use rnnlm::Error;

use crate::shared_args::{ModelArgs, Shape};
use crate::thread_pool;

#[derive(Clone, Copy, ValueEnum)]
enum BenchMode {
    /// Forward + backward + SGD.
    Train,
    /// Forward only.
    Infer,
    /// Batched scoring (`rnnlm score`): --batch sentences of 2 to 2x--time tokens per call.
    Score,
}

#[derive(clap::Args)]
pub(crate) struct BenchArgs {
    /// Vocabulary size V.
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..))]
    vocab: u32,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shape: Shape,
    /// Threads, 1 to 256 (default: RAYON_NUM_THREADS, else one per core).
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
    /// Train with the output layer's backward pass by column strips of dY where the shape
    /// allows (small hidden layers; see the README): reads dY from memory once instead of
    /// twice. Off by default, as it measured no faster on the CPUs at hand.
    #[arg(long)]
    output_strips: bool,
    /// Synthetic ids: zipf (p(id) ∝ 1/(id+1), ids in frequency order like real text; a
    /// class head gets Mikolov's classes for it) or uniform.
    #[arg(long, value_enum, default_value = "uniform")]
    ids: Ids,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Ids {
    Uniform,
    Zipf,
}

fn seconds(what: &str, s: f64) -> Result<std::time::Duration, Error> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| Error::invalid(what, format!("{s} is not a number of seconds")))
}

pub(crate) fn bench(args: &BenchArgs) -> Result<(), Error> {
    let cfg = args.model.config(args.vocab as usize, &args.shape)?;
    let spec = BenchSpec {
        cfg,
        n: args.shape.batch as usize,
        t: args.shape.time as usize,
        mode: match args.mode {
            BenchMode::Train => Mode::Train,
            BenchMode::Infer => Mode::Infer,
            BenchMode::Score => Mode::Score,
        },
        warmup: seconds("--warmup", args.warmup)?,
        windows: args.windows as usize,
        window: seconds("--window", args.window)?,
        dropout: args.model.dropout,
        output_strips: args.output_strips,
        zipf: args.ids == Ids::Zipf,
    };
    let pool = thread_pool(args.threads)?;
    // The whole run inside one pool: rayon calls from a worker thread are cheapest.
    let report = pool.install(|| rnnlm::bench::run(&spec))?;
    let mode = match args.mode {
        BenchMode::Train => "train",
        BenchMode::Infer => "infer",
        BenchMode::Score => "score",
    };
    let rss = rnnlm::bench::peak_rss_bytes();
    if args.json {
        let out = serde_json::json!({
            "tokens_per_sec": report.tokens_per_sec,
            "window_tokens_per_sec": report.window_tokens_per_sec,
            "mode": mode,
            "vocab": args.vocab, "wordvec": args.shape.wordvec, "hidden": args.shape.hidden,
            "cell": cfg.cell.name(), "layers": cfg.layers, "tied": cfg.tied,
            // The whole head (kind, classes or cutoffs and projections), as checkpoints
            // record it, and the first softmax's width.
            "softmax": cfg.softmax.name(), "head": cfg.softmax,
            "first_softmax": cfg.softmax.outputs(cfg.vocab_size),
            "ids": if args.ids == Ids::Zipf { "zipf" } else { "uniform" },
            "dropout": args.model.dropout,
            "output_strips": report.output_strips,
            "batch": args.shape.batch, "time": args.shape.time,
            "threads": report.threads,
            "steps": report.steps,
            "isa": rnnlm::cpu::isa().name(),
            "model_bytes": report.model_bytes,
            "peak_rss_bytes": rss,
        });
        outln!("{out}");
    } else {
        outln!(
            "{mode}: {:.0} tokens/s (median of {} windows; V={}{} D={} H={} N={} T={}; {} threads, {}; params+grads+workspace {:.1} MiB, peak RSS {})",
            report.tokens_per_sec,
            report.window_tokens_per_sec.len(),
            args.vocab,
            crate::shared_args::head_note(&cfg),
            args.shape.wordvec,
            args.shape.hidden,
            args.shape.batch,
            args.shape.time,
            report.threads,
            rnnlm::cpu::isa().name(),
            report.model_bytes as f64 / (1 << 20) as f64,
            rss.map_or("unknown".to_owned(), |b| format!("{:.1} MiB", b as f64 / (1 << 20) as f64)),
        );
    }
    Ok(())
}
