//! `rnnlm`: command-line front end.
//!
//! Errors print one line on stderr and exit with status 2 (usage and input errors); Ctrl-C,
//! SIGTERM or SIGHUP during `train` saves a resume point and exits with 128 + the signal's
//! number (130, 143, 129).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
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
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// PyTorch word_language_model RNNModel state_dict, saved with safetensors.torch.save_file.
    Torch,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("direction").required(true).args(["from", "to"])))]
struct ConvertArgs {
    /// Read IN in this format and write our checkpoint (with its vocabulary) to OUT.
    #[arg(long, value_enum)]
    from: Option<Format>,
    /// Read our checkpoint IN and write it in this format to OUT.
    #[arg(long, value_enum)]
    to: Option<Format>,
    /// Input file.
    #[arg(value_name = "IN")]
    input: PathBuf,
    /// Output file (written atomically; not created on error). Checked before any work: its
    /// folder must be writable and it must not be a folder, device or FIFO, nor IN; a symlink
    /// is written through (the file it points to is replaced).
    #[arg(value_name = "OUT")]
    output: PathBuf,
    /// With --from torch, for a file without `vocab` metadata: the training text whose
    /// word_language_model Dictionary (words in order of first appearance, <eos> after each
    /// line) numbers the ids.
    #[arg(long, value_name = "TRAIN", conflicts_with = "to")]
    vocab_text: Option<PathBuf>,
}

#[derive(clap::Args)]
struct GenerateArgs {
    /// Checkpoint with a vocabulary.
    #[arg(long)]
    model: PathBuf,
    /// Words to start from (fed through the model first).
    #[arg(long, default_value = "<eos>")]
    start: String,
    /// Number of words to sample; they are printed as they come, so a huge number just runs
    /// until the reader stops (`| head`) or Ctrl-C.
    #[arg(long, default_value_t = 100)]
    words: usize,
    /// Softmax temperature (lower is more conservative).
    // allow_negative_numbers: `--temperature -1` reaches the range check and its message, instead
    // of clap's "unexpected argument '-1'".
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    temperature: f32,
    /// Sample only among the k most likely words.
    #[arg(long)]
    top_k: Option<usize>,
    /// Seed of the sampler.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// For a checkpoint saved without its words (such as the book's trained weights): the
    /// training text, whose words in order of first appearance (<eos> after each line) are
    /// the ids.
    #[arg(long, value_name = "TRAIN")]
    vocab_text: Option<PathBuf>,
    /// Words never to emit, comma-separated (the book skips N,<unk>,$).
    #[arg(long, value_delimiter = ',')]
    skip: Vec<String>,
}

#[derive(clap::Args)]
struct ScoreArgs {
    /// Checkpoint with a vocabulary.
    #[arg(long)]
    model: PathBuf,
    /// Text to score, one sentence per line (`-` or nothing: standard input).
    input: Option<PathBuf>,
    /// One JSON object per line instead of tab-separated columns.
    #[arg(long)]
    json: bool,
    /// For a checkpoint saved without its words (such as the book's trained weights): the
    /// training text, whose words in order of first appearance (<eos> after each line) are
    /// the ids.
    #[arg(long, value_name = "TRAIN")]
    vocab_text: Option<PathBuf>,
}

/// `--cell`: the library's cells, by their names (one list: `Cell::ALL`).
fn cell_parser() -> impl clap::builder::TypedValueParser<Value = rnnlm::model::config::Cell> {
    use clap::builder::TypedValueParser as _;
    use rnnlm::model::config::Cell;
    clap::builder::PossibleValuesParser::new(Cell::ALL.iter().map(|c| c.name()))
        .map(|s| s.parse::<Cell>().expect("a listed cell name"))
}

/// The model's structure, shared by `train` and `bench`.
#[derive(clap::Args)]
struct ModelArgs {
    /// Recurrent cell: rnn (the book's tanh RNN), lstm (the book's ch06 LSTM), gru (PyTorch's
    /// GRU), gru-book (the book's appendix C GRU).
    #[arg(long, default_value = "rnn", value_parser = cell_parser())]
    cell: rnnlm::model::config::Cell,
    /// Stacked recurrent layers (layer l > 0 reads layer l-1's h).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    layers: u32,
    /// Inverted dropout probability during training, after the embedding, between layers
    /// and before the output layer (0 = off).
    // allow_negative_numbers: `--dropout -1` reaches the range check and its message, instead
    // of clap's "unexpected argument '-1'".
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    dropout: f32,
    /// Tie the output weights to the embedding (embed.W transposed); needs --wordvec equal
    /// to --hidden.
    #[arg(long)]
    tie: bool,
}

impl ModelArgs {
    fn config(&self, vocab: usize, shape: &Shape) -> Result<rnnlm::Config, Error> {
        rnnlm::Config::new(vocab, shape.wordvec as usize, shape.hidden as usize)?
            .with_cell(self.cell)
            .with_layers(self.layers as usize)
            .with_tied(self.tie)
            .validated()
    }
}

#[derive(clap::Args)]
struct TrainArgs {
    /// Training text (one sentence per line). Default: DIR/ptb.train.txt with --data-dir.
    #[arg(long)]
    train: Option<PathBuf>,
    /// Validation text. Default: DIR/ptb.valid.txt with --data-dir. It must fill one
    /// evaluation batch (checked before training); it may be the same file as --test (or, for
    /// a smoke test, --train), never an output.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Test text. Default: DIR/ptb.test.txt with --data-dir. It must fill one evaluation batch
    /// (checked before training).
    #[arg(long)]
    test: Option<PathBuf>,
    /// Folder with ptb.{train,valid,test}.txt.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shape: Shape,
    /// SGD learning rate. With --resume, a value other than the saved run's replaces it from
    /// there on (a note says so), e.g. to go on more gently after an interruption.
    // allow_negative_numbers: `--lr -1` reaches the range check and its message, instead
    // of clap's "unexpected argument '-1'".
    #[arg(long, default_value_t = 5.0, allow_negative_numbers = true)]
    lr: f32,
    /// Global gradient-norm clip: a positive number, or 0 for no clipping. With --resume, a
    /// value other than the saved run's replaces it from there on (a note says so).
    // allow_negative_numbers: `--clip -1` reaches the range check and its message, instead
    // of clap's "unexpected argument '-1'".
    #[arg(long, default_value_t = 0.25, allow_negative_numbers = true)]
    clip: f32,
    /// Epochs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
    /// Seed of the weight initialisation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How the weights are drawn from --seed.
    #[arg(long, value_enum, default_value = "book")]
    init: Init,
    /// Report training perplexity every this many batches.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    eval_interval: u32,
    /// Evaluation protocol for validation and test.
    #[arg(long, value_enum, default_value = "book")]
    protocol: Protocol,
    /// Rows per evaluation batch (validation and test).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    eval_batch: u32,
    /// Time steps per evaluation batch (validation and test).
    #[arg(long, default_value_t = 35, value_parser = clap::value_parser!(u32).range(1..))]
    eval_time: u32,
    /// Keep at most this many words (the most frequent); the rest map to <unk>.
    #[arg(long)]
    max_vocab: Option<usize>,
    /// Keep only words seen at least this often in the training text.
    #[arg(long, default_value_t = 1)]
    min_count: usize,
    /// Threads, 1 to 256 (default: RAYON_NUM_THREADS, else one per core). Results do not
    /// depend on it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Where to save the best model (safetensors, with its vocabulary). Ctrl-C or a diverged
    /// run also writes SAVE.resume. Like --log and --plot, checked before training: the
    /// folder must be writable, the file must not be a folder, device or FIFO, nor any other
    /// input or output of the run; a symlink is written through (the file it points to is
    /// replaced).
    #[arg(long)]
    save: PathBuf,
    /// Write every evaluation point as CSV here (checked as --save is; a symlink is written
    /// through).
    #[arg(long)]
    log: Option<PathBuf>,
    /// Draw the train/valid perplexity curves as SVG here (checked as --save is; a symlink is
    /// written through).
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Continue the run saved in this resumable checkpoint (SAVE.resume, written on Ctrl-C or
    /// divergence); its model, vocabulary and settings are used, the data files are given
    /// again and must be those it trained on. Training flags given with it must match the
    /// saved run (else an error lists them), except --lr and --clip, which replace the saved
    /// values; --threads may change. The file may be this run's own SAVE.resume: a later
    /// Ctrl-C replaces it with the newer point.
    #[arg(long)]
    resume: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchMode {
    /// Forward + backward + SGD.
    Train,
    /// Forward only.
    Infer,
    /// Batched scoring (`rnnlm score`): --batch sentences of 2 to 2x--time tokens per call.
    Score,
}

/// Model and batch sizes shared by `train` and `bench`.
#[derive(clap::Args)]
struct Shape {
    /// Word-vector size D.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    wordvec: u32,
    /// Hidden size H.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..))]
    hidden: u32,
    /// Batch rows N.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    batch: u32,
    /// Time steps per batch T (the truncated-BPTT length).
    #[arg(long, default_value_t = 35, value_parser = clap::value_parser!(u32).range(1..))]
    time: u32,
}

#[derive(clap::Args)]
struct BenchArgs {
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
    /// PyTorch word_language_model's evaluate(): N contiguous streams (the tail dropped), each
    /// scoring its own next tokens in chunks of T, exp of the mean per-token loss.
    Torch,
}

#[derive(Clone, Copy, ValueEnum)]
enum Init {
    /// The book's: embed.W ~ N(0,1)/100, Wx ~ N(0,1)/sqrt(D), Wh and affine.W ~ N(0,1)/sqrt(H),
    /// biases zero.
    Book,
    /// PyTorch word_language_model's: embed.W and affine.W ~ U(-0.1, 0.1), affine.b = 0, the
    /// recurrent layers' weights and biases ~ U(-1/sqrt(H), 1/sqrt(H)).
    Torch,
}

impl From<Init> for rnnlm::Init {
    fn from(i: Init) -> Self {
        match i {
            Init::Book => rnnlm::Init::Book,
            Init::Torch => rnnlm::Init::Torch,
        }
    }
}

impl From<Protocol> for rnnlm::Protocol {
    fn from(p: Protocol) -> Self {
        match p {
            Protocol::Book => rnnlm::Protocol::Book,
            Protocol::Full => rnnlm::Protocol::Full,
            Protocol::Torch => rnnlm::Protocol::Torch,
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
    /// For a checkpoint saved without its words (such as the book's trained weights): the
    /// training text, whose words in order of first appearance (<eos> after each line) are
    /// the ids.
    #[arg(long, value_name = "TRAIN")]
    vocab_text: Option<PathBuf>,
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

/// Standard output for everything the binary prints. Rust ignores SIGPIPE, so writing to a
/// closed pipe (`rnnlm generate | head`) is an error, on which `println!` panics. Here a
/// closed pipe only ends the output: `train` goes on and saves its files, `generate` and
/// `score` stop quietly, all with status 0. Any other write error (a full disk) also ends the
/// output, and is reported once the command has done its work.
mod stdout {
    use std::io::{self, ErrorKind, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Mutex;

    static CLOSED: AtomicBool = AtomicBool::new(false);
    static FAILED: Mutex<Option<io::Error>> = Mutex::new(None);

    /// Writes `args` (standard output flushes at each newline); returns whether standard
    /// output is still open.
    pub fn write(args: std::fmt::Arguments) -> bool {
        if CLOSED.load(Ordering::Relaxed) {
            return false;
        }
        let mut out = io::stdout().lock();
        match out.write_fmt(args) {
            Ok(()) => true,
            Err(e) => {
                close(e);
                false
            }
        }
    }

    /// Flushes what is buffered; returns whether standard output is still open.
    pub fn flush() -> bool {
        if CLOSED.load(Ordering::Relaxed) {
            return false;
        }
        match io::stdout().lock().flush() {
            Ok(()) => true,
            Err(e) => {
                close(e);
                false
            }
        }
    }

    fn close(e: io::Error) {
        CLOSED.store(true, Ordering::Relaxed);
        if e.kind() != ErrorKind::BrokenPipe {
            let mut failed = FAILED.lock().unwrap_or_else(|p| p.into_inner());
            failed.get_or_insert(e);
        }
    }

    /// A write error other than a closed pipe, if one happened.
    pub fn failure() -> Option<io::Error> {
        FAILED.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
}

/// `println!` through [`stdout`]; evaluates to whether standard output is still open.
macro_rules! outln {
    ($($arg:tt)*) => {
        stdout::write(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// A note on stderr (write errors ignored: a note is not worth failing for).
fn note(kind: &str, msg: std::fmt::Arguments) {
    let _ = writeln!(std::io::stderr(), "rnnlm: {kind}: {msg}");
}

fn eval(args: &EvalArgs) -> Result<(), Error> {
    let model = rnnlm::Rnnlm::load_with(&args.model, args.vocab_text.as_deref())?;
    model_eos(model.vocab(), &args.model)?;
    let (ids, unk) = read_counting_unk(&args.data, model.vocab())?;
    let (n, t) = (args.batch as usize, args.time as usize);
    let protocol = rnnlm::Protocol::from(args.protocol);
    let ppl = rnnlm::evaluate(model.params(), &ids, protocol, n, t).map_err(|e| match e {
        Error::Invalid { msg, .. } => Error::Parse {
            path: args.data.clone(),
            line: None,
            msg,
        },
        Error::NotFinite { position, what, .. } => {
            let (line, word) = place(&model, &ids, position);
            Error::Parse {
                path: args.data.clone(),
                line: Some(line),
                msg: format!("{word}: {what}"),
            }
        }
        other => other,
    })?;
    // Every loss was finite, but their mean is too large for its exponential: no measurement
    // either, and scripts must not take an infinite perplexity for a result.
    if !ppl.perplexity.is_finite() {
        return Err(Error::Parse {
            path: args.data.clone(),
            line: None,
            msg: format!(
                "the perplexity overflows (mean loss {} nats per token): the model gives the \
                 words probabilities near 0 — a diverged model?",
                ppl.mean_loss
            ),
        });
    }
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
        outln!("{out}");
    } else {
        outln!(
            "perplexity {:.4} (protocol {protocol}: batch {n}, time {t}; {} of {} tokens scored; {unk} words mapped to <unk>)",
            ppl.perplexity,
            ppl.tokens,
            ids.len()
        );
    }
    Ok(())
}

/// The 1-based line of the token at `position` of a corpus read with `<eos>` after each line,
/// and which of the line's tokens it is (`word 3 ("cat")`, or `the line end`).
fn place(model: &rnnlm::Rnnlm, ids: &[u32], position: usize) -> (usize, String) {
    let eos = model.vocab().id(rnnlm::data::corpus::EOS);
    let before = &ids[..position.min(ids.len())];
    let line = 1 + before.iter().filter(|&&id| Some(id) == eos).count();
    let start = before
        .iter()
        .rposition(|&id| Some(id) == eos)
        .map_or(0, |p| p + 1);
    (
        line,
        token_name(model, ids.get(position).copied(), position - start + 1),
    )
}

/// `word K ("w")` for the `k`-th token of a line, or `the line end` for its `<eos>`.
fn token_name(model: &rnnlm::Rnnlm, id: Option<u32>, k: usize) -> String {
    match id.and_then(|id| model.vocab().word(id)) {
        Some(rnnlm::data::corpus::EOS) => "the line end".into(),
        Some(w) => format!("word {k} ({w:?})"),
        None => format!("word {k}"),
    }
}

fn seconds(what: &str, s: f64) -> Result<std::time::Duration, Error> {
    std::time::Duration::try_from_secs_f64(s)
        .map_err(|_| Error::invalid(what, format!("{s} is not a number of seconds")))
}

fn bench(args: &BenchArgs) -> Result<(), Error> {
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
            "{mode}: {:.0} tokens/s (median of {} windows; V={} D={} H={} N={} T={}; {} threads, {}; params+grads+workspace {:.1} MiB, peak RSS {})",
            report.tokens_per_sec,
            report.window_tokens_per_sec.len(),
            args.vocab,
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

/// The signals that stop `train` between batches with a resume point.
///
/// SIGINT is Ctrl-C; SIGTERM is what `timeout`, `kill`, container runtimes and batch
/// schedulers (a Slurm preemption) send; SIGHUP is a closed terminal. A SIGHUP that was
/// ignored when the process started (`nohup rnnlm train ...`) stays ignored: the user asked for
/// the run to outlive the terminal.
mod signals {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Installs the handlers; returns the flag they set and the number of the last signal
    /// that came (0 before any). A failure to install one only loses the graceful stop on it.
    pub fn install() -> (&'static AtomicBool, Arc<AtomicUsize>) {
        let stop = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        for sig in handled() {
            let _ = signal_hook::flag::register(sig, Arc::clone(&stop));
            let _ = signal_hook::flag::register_usize(sig, Arc::clone(&which), sig as usize);
        }
        // The trainer polls a `&'static` flag; the handlers keep their own `Arc`s for the
        // life of the process anyway.
        (&**Box::leak(Box::new(stop)), which)
    }

    /// The exit status after stopping on the signal: `128 + its number`, as a shell reports
    /// a process the signal killed (130 for SIGINT, 143 for SIGTERM, 129 for SIGHUP), so
    /// scripts and schedulers see the same code as before the handler existed.
    pub fn status(which: &AtomicUsize) -> i32 {
        match which.load(Ordering::Relaxed) {
            0 => 130,
            sig => 128 + sig as i32,
        }
    }

    /// The name of the signal that came, for the message that says why training stopped.
    pub fn name(which: &AtomicUsize) -> &'static str {
        match which.load(Ordering::Relaxed) as i32 {
            signal_hook::consts::SIGINT => "SIGINT (Ctrl-C)",
            signal_hook::consts::SIGTERM => "SIGTERM",
            #[cfg(unix)]
            signal_hook::consts::SIGHUP => "SIGHUP",
            _ => "a signal",
        }
    }

    #[cfg(unix)]
    fn handled() -> Vec<i32> {
        use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
        let mut sigs = vec![SIGINT, SIGTERM];
        if !ignored_at_start(SIGHUP) {
            sigs.push(SIGHUP);
        }
        sigs
    }

    #[cfg(not(unix))]
    fn handled() -> Vec<i32> {
        vec![signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM]
    }

    /// Whether `sig` is ignored (`SIG_IGN`) in this process, as `nohup` leaves SIGHUP. Read
    /// from `/proc/self/status` (its `SigIgn` mask: bit `sig - 1`), which needs no unsafe
    /// `sigaction` query; elsewhere the signal counts as not ignored.
    #[cfg(unix)]
    fn ignored_at_start(sig: i32) -> bool {
        let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
            return false;
        };
        status
            .lines()
            .find_map(|l| l.strip_prefix("SigIgn:"))
            .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
            .is_some_and(|mask| (1..=64).contains(&sig) && mask >> (sig - 1) & 1 == 1)
    }
}

/// `seconds` for a person: `0.4 s`, `42 s`, `3 min 20 s`, `5 h 7 min`, `3.2 days`.
fn duration(seconds: f64) -> String {
    let s = seconds.max(0.0);
    if s < 10.0 {
        format!("{s:.1} s")
    } else if s < 60.0 {
        format!("{s:.0} s")
    } else if s < 3600.0 {
        format!("{} min {} s", (s / 60.0) as u64, (s % 60.0) as u64)
    } else if s < 86400.0 {
        format!(
            "{} h {} min",
            (s / 3600.0) as u64,
            (s % 3600.0 / 60.0) as u64
        )
    } else {
        format!("{:.1} days", s / 86400.0)
    }
}

/// `path` with `suffix` appended to its file name (`m.safetensors` -> `m.safetensors.resume`).
fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// Puts a file name on a library error about a corpus ("valid corpus: 40 tokens cannot ...").
fn in_file(e: Error, path: &Path) -> Error {
    match e {
        Error::Invalid { msg, .. } => Error::Parse {
            path: path.to_owned(),
            line: None,
            msg,
        },
        other => other,
    }
}

fn train(args: &TrainArgs, given: &ArgMatches) -> Result<(), Error> {
    use rnnlm::data::corpus::read_counting_unk;
    use rnnlm::outputs::{check_distinct, check_output};
    use rnnlm::train::{Event, TrainConfig, Trainer};
    use rnnlm::VocabOptions;
    use std::io::IsTerminal;

    let file = |given: &Option<PathBuf>, name: &str, flag: &str| -> Result<PathBuf, Error> {
        match (given, &args.data_dir) {
            (Some(p), _) => Ok(p.clone()),
            (None, Some(dir)) => Ok(dir.join(name)),
            (None, None) => Err(Error::invalid(flag, "is required (or give --data-dir)")),
        }
    };
    let (train_path, valid_path, test_path) = (
        file(&args.train, "ptb.train.txt", "--train")?,
        file(&args.valid, "ptb.valid.txt", "--valid")?,
        file(&args.test, "ptb.test.txt", "--test")?,
    );

    // Everything a run could fail on at its end is checked before its first batch: the
    // settings, every output path, and that no file serves two roles.
    if !(args.clip.is_finite() && args.clip >= 0.0) {
        return Err(Error::invalid(
            "--clip",
            format!(
                "{} is not a gradient-norm limit: give a positive number, or 0 for no clipping",
                args.clip
            ),
        ));
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        return Err(Error::invalid(
            "--lr",
            format!("{} is not a positive number", args.lr),
        ));
    }
    let pool = thread_pool(args.threads)?;
    let resume_out = with_suffix(&args.save, ".resume");
    let resume_flag = "--save (its .resume file)";
    let mut outputs: Vec<(&str, &Path)> = vec![("--save", &args.save)];
    outputs.extend(args.log.as_deref().map(|p| ("--log", p)));
    outputs.extend(args.plot.as_deref().map(|p| ("--plot", p)));
    for (flag, path) in &outputs {
        check_output(path, flag)?;
    }
    check_output(&resume_out, resume_flag)?;
    let mut inputs: Vec<(&str, &Path)> = vec![
        ("--train", &train_path),
        ("--valid", &valid_path),
        ("--test", &test_path),
    ];
    let mut with_resume = inputs.clone();
    with_resume.extend(args.resume.as_deref().map(|p| ("--resume", p)));
    check_distinct(&with_resume, &outputs)?;
    // SAVE.resume may be the --resume file: a new interruption replaces the older point.
    outputs.push((resume_flag, &resume_out));
    inputs.truncate(3);
    check_distinct(&inputs, &outputs)?;
    // Held to the end of the run: a second trainer with the same --save is refused here.
    let lock = rnnlm::outputs::OutputLock::acquire(&args.save, "--save")?;

    let (mut trainer, vocab) = match &args.resume {
        Some(path) => {
            let (mut trainer, vocab) = Trainer::load_resume(path)?;
            let vocab = vocab.ok_or_else(|| Error::Checkpoint {
                path: path.clone(),
                msg: "has no vocabulary".into(),
            })?;
            model_eos(&vocab, path)?;
            resume_settings(args, given, &mut trainer, &vocab, &train_path)?;
            if trainer.data_fingerprint().is_none() {
                note(
                    "warning",
                    format_args!(
                        "{} was saved without a fingerprint of its training data (an older version): make sure --train is the data it started on",
                        path.display()
                    ),
                );
            }
            (trainer, vocab)
        }
        None => {
            let opts = VocabOptions {
                max_vocab: args.max_vocab,
                min_count: args.min_count,
            };
            let vocab = rnnlm::Vocab::build(&train_path, &opts)?;
            let cfg = TrainConfig {
                batch_size: args.shape.batch as usize,
                time_size: args.shape.time as usize,
                lr: args.lr,
                max_grad: (args.clip > 0.0).then_some(args.clip),
                epochs: args.epochs as usize,
                eval_interval: Some(args.eval_interval as usize),
                seed: args.seed,
                protocol: args.protocol.into(),
                eval_batch: args.eval_batch as usize,
                eval_time: args.eval_time as usize,
                dropout: args.model.dropout,
                init: args.init.into(),
                ..TrainConfig::default()
            };
            let model_cfg = args.model.config(vocab.len(), &args.shape)?;
            (Trainer::new(model_cfg, cfg)?, vocab)
        }
    };
    let cfg = trainer.config().clone();
    let (train_ids, train_unk) = read_counting_unk(&train_path, &vocab)?;
    rnnlm::BookBatches::new(&train_ids, cfg.batch_size, cfg.time_size)
        .map_err(|e| in_file(e, &train_path))?;
    trainer
        .check_data(&train_ids)
        .map_err(|e| in_file(e, &train_path))?;
    let (valid_ids, valid_unk) = read_counting_unk(&valid_path, &vocab)?;
    cfg.check_eval_corpus(valid_ids.len())
        .map_err(|e| in_file(e, &valid_path))?;
    let (test_ids, test_unk) = read_counting_unk(&test_path, &vocab)?;
    cfg.check_eval_corpus(test_ids.len())
        .map_err(|e| in_file(e, &test_path))?;
    let model_cfg = *trainer.model().config();
    let protocol = cfg.protocol.name();
    let lr = trainer.current_lr();
    if let Some(path) = &args.resume {
        outln!(
            "resuming the run saved in {} (its model, vocabulary and settings)",
            path.display()
        );
    }
    outln!(
        "vocabulary {} words; train {} tokens ({train_unk} mapped to <unk>), valid {} ({valid_unk}), test {} ({test_unk}); {} x {} V={} D={} H={}{} dropout {} N={} T={} lr {}{} clip {} epochs {}",
        vocab.len(),
        train_ids.len(),
        valid_ids.len(),
        test_ids.len(),
        model_cfg.layers,
        model_cfg.cell,
        model_cfg.vocab_size,
        model_cfg.wordvec_size,
        model_cfg.hidden_size,
        if model_cfg.tied { " tied" } else { "" },
        cfg.dropout,
        cfg.batch_size,
        cfg.time_size,
        lr,
        if lr == cfg.lr { String::new() } else { format!(" (from {}, decayed)", cfg.lr) },
        cfg.max_grad.map_or("off".into(), |c| c.to_string()),
        cfg.epochs
    );

    let (stop, signal) = signals::install();
    trainer.stop_on(stop);
    let iters = (train_ids.len() - 1) / (cfg.batch_size * cfg.time_size);
    // What the run will cost, before it is spent: a model far too big for the machine shows it
    // here, not hours later at the first progress line.
    if let Ok(e) = pool
        .install(|| rnnlm::bench::epoch_estimate(&model_cfg, cfg.batch_size, cfg.time_size, iters))
    {
        outln!(
            "estimated roughly {} per epoch, {} for {} epoch{} ({:.2} GFLOP of products a batch, at the {:.0} GFLOP/s this machine's products reach on {} thread{})",
            duration(e.seconds),
            duration(e.seconds * cfg.epochs as f64),
            cfg.epochs,
            if cfg.epochs == 1 { "" } else { "s" },
            e.gflop_per_batch,
            e.gflops,
            pool.current_num_threads(),
            if pool.current_num_threads() == 1 { "" } else { "s" }
        );
    }
    let terminal = std::io::stderr().is_terminal();
    let bar = indicatif::ProgressBar::new((iters * cfg.epochs) as u64);
    if terminal {
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{bar:30} {pos}/{len} batches | {elapsed_precise} | ETA {eta_precise} | {msg}",
            )
            .expect("valid template"),
        );
    } else {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    let say = |line: String| {
        if terminal {
            bar.println(line);
        } else {
            outln!("{line}");
        }
    };
    let fitted = pool.install(|| {
        trainer.fit(&train_ids, Some(&valid_ids), Some(&test_ids), |event| match event {
            Event::Progress {
                point,
                iters,
                tokens_per_sec,
            } => {
                let ppl = point.train_ppl.unwrap_or(f64::NAN);
                let done = point.step as f64 / (iters * cfg.epochs) as f64;
                let eta = point.elapsed_s * (1.0 - done) / done.max(1e-9);
                bar.set_position(point.step as u64);
                bar.set_message(format!("perplexity {ppl:.2} | {tokens_per_sec:.0} tokens/s"));
                if !terminal {
                    outln!(
                        "| epoch {} | iter {} / {iters} | time {:.0}[s] | perplexity {ppl:.2} | {tokens_per_sec:.0} tokens/s | ETA {eta:.0}[s]",
                        point.epoch, point.iter, point.elapsed_s
                    );
                }
            }
            Event::Epoch {
                epoch,
                valid,
                improved,
                lr,
            } => {
                if let Some(v) = valid {
                    say(format!(
                        "| epoch {epoch} | valid perplexity {:.2} ({protocol} protocol) | {} | lr {lr}",
                        v.perplexity,
                        if improved { "best so far, kept" } else { "no improvement, lr /= 4" }
                    ));
                }
            }
        })
    });
    bar.finish_and_clear();
    let report = match fitted {
        Ok(report) => report,
        Err(Error::Diverged {
            epoch, step, what, ..
        }) => {
            let hint = save_diverged(&trainer, &vocab, &args.save, &resume_out, || {
                write_curves(args, trainer.log())
            });
            return Err(Error::Diverged {
                epoch,
                step,
                what,
                hint,
            });
        }
        Err(e) => return Err(e),
    };

    // Where an output goes when its own folder refuses it at the end of the run: the folders
    // of the log and the plot, then the temporary folder.
    let elsewhere: Vec<PathBuf> = [args.log.as_deref(), args.plot.as_deref()]
        .into_iter()
        .flatten()
        .map(rnnlm::outputs::folder_of)
        .chain([std::env::temp_dir()])
        .collect();
    if report.interrupted {
        let (at, failed) = keep(&resume_out, &elsewhere, "the resume point", |p| {
            trainer.save_resume(p, Some(&vocab))
        })?;
        if let Some(e) = failed {
            note("warning", format_args!("{e}"));
        }
        outln!(
            "interrupted by {}: run saved to {} (continue with the same command and --resume {})",
            signals::name(&signal),
            at.display(),
            at.display()
        );
        stdout::flush();
        drop(lock);
        std::process::exit(signals::status(&signal));
    }
    // The log and the plot first, each on its own, then the model: a failure of one loses
    // none of the others.
    let mut failures = write_curves(args, &report.log);
    outln!(
        "saving the model with the best validation perplexity to {}",
        args.save.display()
    );
    let model_at = match keep(&args.save, &elsewhere, "the model", |p| {
        checkpoint::save(p, trainer.best_params(), Some(&vocab))
    }) {
        Ok((at, failed)) => {
            failures.extend(failed);
            Some(at)
        }
        Err(e) => {
            failures.push(e);
            None
        }
    };
    // The run is done and its model saved: the resume point it came from is spent (one the
    // user keeps under another name is theirs).
    let spent = args.resume.as_deref().is_some_and(
        |r| matches!((r.canonicalize(), resume_out.canonicalize()), (Ok(a), Ok(b)) if a == b),
    );
    if failures.is_empty() && spent {
        match std::fs::remove_file(&resume_out) {
            Ok(()) => {
                outln!("removed the finished run's {}", resume_out.display());
            }
            Err(e) => note(
                "warning",
                format_args!("could not remove the spent {}: {e}", resume_out.display()),
            ),
        };
    }
    let valid_ppl = report.best_valid.map(|v| v.perplexity);
    let test_ppl = report.test.map(|v| v.perplexity);
    outln!(
        "valid perplexity {} | test perplexity {} ({protocol} protocol) | {:.0} tokens/s | {:.1} s | {} threads",
        valid_ppl.map_or("-".into(), |p| format!("{p:.2}")),
        test_ppl.map_or("-".into(), |p| format!("{p:.2}")),
        report.tokens_per_sec,
        report.seconds,
        pool.current_num_threads()
    );
    if args.json {
        let out = serde_json::json!({
            "valid_perplexity": valid_ppl,
            "test_perplexity": test_ppl,
            "protocol": protocol,
            "tokens_per_sec": report.tokens_per_sec,
            "seconds": report.seconds,
            "steps": report.steps,
            "tokens": report.tokens,
            "threads": pool.current_num_threads(),
            "vocab_size": vocab.len(),
            "unk_mapped": {"train": train_unk, "valid": valid_unk, "test": test_unk},
            "model": model_at,
        });
        outln!("{out}");
    }
    match failures.len() {
        0 => Ok(()),
        1 => Err(failures.remove(0)),
        _ => Err(Error::invalid(
            "outputs",
            failures
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )),
    }
}

/// Writes an output with `write` at `path`, or, if that fails at the end of a run (a full
/// disk, a folder removed or made read-only since the checks at the start), at the same file
/// name in each folder of `elsewhere` in turn (with `.PID` appended if that name is taken), so
/// the work of a long run is not lost. Returns where it went, with the error that sent it
/// elsewhere ([`Error::NotSaved`], saying where); an error saying it is lost if no folder
/// took it.
fn keep(
    path: &Path,
    elsewhere: &[PathBuf],
    what: &str,
    write: impl Fn(&Path) -> Result<(), Error>,
) -> Result<(PathBuf, Option<Error>), Error> {
    let first = match write(path) {
        Ok(()) => return Ok((path.to_owned(), None)),
        Err(e) => e,
    };
    let name = path.file_name().unwrap_or(path.as_os_str());
    let mut seen = vec![rnnlm::outputs::folder_of(path)];
    let mut tried = Vec::new();
    for dir in elsewhere {
        if seen.contains(dir) {
            continue;
        }
        seen.push(dir.clone());
        let mut at = dir.join(name);
        if at.exists() {
            at = with_suffix(&at, &format!(".{}", std::process::id()));
        }
        match write(&at) {
            Ok(()) => {
                return Ok((
                    at.clone(),
                    Some(Error::NotSaved {
                        source: Box::new(first),
                        kept: format!("{what} was saved to {} instead", at.display()),
                    }),
                ))
            }
            Err(e) => tried.push(e.to_string()),
        }
    }
    let also = tried
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .join("; ");
    Err(Error::NotSaved {
        source: Box::new(first),
        kept: if also.is_empty() {
            format!("{what} is lost")
        } else {
            format!("{what} is lost (also refused: {also})")
        },
    })
}

/// After a diverged run: saves what can be kept, and returns the error's hint saying what was.
///
/// No update is made with a non-finite number, so the weights are normally finite: `save` gets
/// the best model so far (else the current weights, those from before the failing step),
/// `resume` the run's position, and `curves` writes the log that shows what happened. Weights
/// that are no longer finite (an update that overflowed a weight while its own numbers stayed
/// finite) cannot be saved, as loading would refuse them: then no resume point is written,
/// `save` gets the best model if validation kept one, and the hint says so.
fn save_diverged(
    trainer: &rnnlm::train::Trainer,
    vocab: &rnnlm::Vocab,
    save: &Path,
    resume: &Path,
    curves: impl FnOnce() -> Vec<Error>,
) -> String {
    let finite = trainer
        .model()
        .params()
        .as_slice()
        .iter()
        .all(|x| x.is_finite());
    let in_validation = trainer
        .log()
        .last()
        .and_then(|p| p.valid_ppl)
        .is_some_and(|v| !v.is_finite());
    let kept = if trainer.best_valid().is_some() {
        Some("the best model so far")
    } else if !finite {
        None
    } else if in_validation {
        Some("the current weights (no validation was finite)")
    } else {
        Some("the weights from before that step")
    };
    let (mut saved, mut failed) = (Vec::new(), Vec::new());
    let mut record = |what: String, r: Result<(), Error>| match r {
        Ok(()) => saved.push(what),
        Err(e) => failed.push(e.to_string()),
    };
    if let Some(kept) = kept {
        record(
            format!("{kept} to {}", save.display()),
            checkpoint::save(save, trainer.best_params(), Some(vocab)),
        );
    }
    if finite {
        record(
            format!("a resume point to {}", resume.display()),
            trainer.save_resume(resume, Some(vocab)),
        );
    }
    failed.extend(curves().iter().map(Error::to_string));
    let mut hint = match (finite, kept) {
        (true, _) => String::new(),
        (false, Some(_)) => {
            "the weights are no longer finite, so no resume point was written; ".into()
        }
        (false, None) => "the weights are no longer finite and no validation kept a model, so \
                          neither a model nor a resume point was written; "
            .into(),
    };
    if !saved.is_empty() {
        hint += &format!("saved {}; ", saved.join(" and "));
    }
    if !failed.is_empty() {
        hint += &format!("could not save: {}; ", failed.join("; "));
    }
    hint + "try a lower --lr or a --clip"
}

/// Writes `--log` and `--plot`, when given, each whatever becomes of the other; returns the
/// errors.
fn write_curves(args: &TrainArgs, log: &[rnnlm::report::EvalPoint]) -> Vec<Error> {
    let mut failed = Vec::new();
    if let Some(path) = &args.log {
        failed.extend(rnnlm::report::write_csv(path, log).err());
    }
    if let Some(path) = &args.plot {
        failed.extend(rnnlm::report::write_svg(path, log, "SimpleRnnlm perplexity").err());
    }
    failed
}

/// With `--resume`: the training flags the user typed must match the saved run, which keeps
/// its settings (silently ignoring them would run something else than asked). `--lr` and
/// `--clip` are the exception: changing them is how a run that diverged is continued, so a
/// new value replaces the saved one, with a note.
fn resume_settings(
    args: &TrainArgs,
    given: &ArgMatches,
    trainer: &mut rnnlm::train::Trainer,
    vocab: &rnnlm::Vocab,
    train_path: &Path,
) -> Result<(), Error> {
    let typed = |id: &str| given.value_source(id) == Some(ValueSource::CommandLine);
    let cfg = trainer.config().clone();
    let model = *trainer.model().config();
    let mut differ = Vec::new();
    let mut check = |id: &str, mine: String, saved: String| {
        if typed(id) && mine != saved {
            let flag = id.replace('_', "-");
            differ.push(format!(
                "--{flag} {mine} differs from the saved run's {saved}"
            ));
        }
    };
    let cell = args.model.cell;
    let protocol: rnnlm::Protocol = args.protocol.into();
    check("cell", cell.name().into(), model.cell.name().into());
    check(
        "layers",
        args.model.layers.to_string(),
        model.layers.to_string(),
    );
    check(
        "wordvec",
        args.shape.wordvec.to_string(),
        model.wordvec_size.to_string(),
    );
    check(
        "hidden",
        args.shape.hidden.to_string(),
        model.hidden_size.to_string(),
    );
    check("tie", args.model.tie.to_string(), model.tied.to_string());
    check(
        "dropout",
        args.model.dropout.to_string(),
        cfg.dropout.to_string(),
    );
    check(
        "batch",
        args.shape.batch.to_string(),
        cfg.batch_size.to_string(),
    );
    check(
        "time",
        args.shape.time.to_string(),
        cfg.time_size.to_string(),
    );
    check("epochs", args.epochs.to_string(), cfg.epochs.to_string());
    check("seed", args.seed.to_string(), cfg.seed.to_string());
    check(
        "init",
        format!("{:?}", rnnlm::Init::from(args.init)).to_lowercase(),
        format!("{:?}", cfg.init).to_lowercase(),
    );
    check(
        "eval_interval",
        args.eval_interval.to_string(),
        cfg.eval_interval.map_or("none".into(), |e| e.to_string()),
    );
    check(
        "protocol",
        protocol.name().into(),
        cfg.protocol.name().into(),
    );
    check(
        "eval_batch",
        args.eval_batch.to_string(),
        cfg.eval_batch.to_string(),
    );
    check(
        "eval_time",
        args.eval_time.to_string(),
        cfg.eval_time.to_string(),
    );
    // The vocabulary options are not saved, their result is: rebuild and compare.
    if typed("max_vocab") || typed("min_count") {
        let opts = rnnlm::VocabOptions {
            max_vocab: args.max_vocab,
            min_count: args.min_count,
        };
        let built = rnnlm::Vocab::build(train_path, &opts)?;
        if &built != vocab {
            differ.push(format!(
                "--max-vocab/--min-count give a {}-word vocabulary from {}, not the saved run's {}-word one",
                built.len(),
                train_path.display(),
                vocab.len()
            ));
        }
    }
    if !differ.is_empty() {
        return Err(Error::invalid(
            "--resume",
            format!(
                "{}; a resumed run keeps its settings (leave these flags out, or start a new run)",
                differ.join(", ")
            ),
        ));
    }
    if typed("lr") && args.lr != cfg.lr {
        let now = trainer.current_lr();
        trainer.set_lr(args.lr)?;
        let decayed = if now == cfg.lr {
            String::new()
        } else {
            format!(", decayed to {now}")
        };
        note(
            "note",
            format_args!(
                "--lr {} replaces the saved run's learning rate ({}{decayed}) from here on",
                args.lr, cfg.lr
            ),
        );
    }
    let clip = (args.clip > 0.0).then_some(args.clip);
    if typed("clip") && clip != cfg.max_grad {
        trainer.set_max_grad(clip)?;
        let show = |c: Option<f32>| c.map_or("off".to_string(), |c| c.to_string());
        note(
            "note",
            format_args!(
                "--clip {} replaces the saved run's clip ({}) from here on",
                show(clip),
                show(cfg.max_grad)
            ),
        );
    }
    Ok(())
}

fn generate(args: &GenerateArgs) -> Result<(), Error> {
    use rand::SeedableRng;
    let model = rnnlm::Rnnlm::load_with(&args.model, args.vocab_text.as_deref())?;
    let start = model.encode(&args.start)?;
    let skip = args
        .skip
        .iter()
        .map(|w| {
            model.vocab().id(w).ok_or_else(|| {
                Error::invalid("--skip", format!("{w:?} is not in the model's vocabulary"))
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let sampling = rnnlm::Sampling {
        temperature: args.temperature,
        top_k: args.top_k,
        skip,
    };
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(args.seed);
    // As the book prints samples: a sentence per line, each ending at <eos> (which is not
    // printed). Words go out as they are sampled; standard output flushes at each newline.
    let mut line_open = false;
    let mut put = |word: &str| -> bool {
        if word == rnnlm::data::corpus::EOS {
            let open = !line_open || stdout::write(format_args!("\n"));
            line_open = false;
            return open;
        }
        let sep = if line_open { " " } else { "" };
        line_open = true;
        stdout::write(format_args!("{sep}{word}"))
    };
    // The start words as the model reads them: a word outside the vocabulary is <unk>.
    for w in args.start.split_whitespace() {
        if model.vocab().id(w).is_none() {
            note(
                "note",
                format_args!("{w:?} is not in the model's vocabulary: the model reads <unk>"),
            );
        }
    }
    let word = |id: u32| model.vocab().word(id).unwrap_or("<invalid>");
    if start.iter().all(|&id| put(word(id))) {
        model
            .generate_with(&mut rng, &start, args.words, &sampling, |id| put(word(id)))
            .map_err(|e| match e {
                Error::NotFinite { position, what, .. } => Error::Checkpoint {
                    path: args.model.clone(),
                    msg: format!("word {} of the output: {what}", position + 1),
                },
                e => e,
            })?;
        if line_open {
            stdout::write(format_args!("\n"));
        }
    }
    stdout::flush();
    Ok(())
}

/// The `<eos>` id of the vocabulary of the model at `path`, or the one error (naming the model)
/// of every command that reads sentences with it.
fn model_eos(vocab: &rnnlm::Vocab, path: &Path) -> Result<u32, Error> {
    vocab.require_eos(path, "its vocabulary")
}

fn score(args: &ScoreArgs) -> Result<(), Error> {
    let model = Arc::new(rnnlm::Rnnlm::load_with(
        &args.model,
        args.vocab_text.as_deref(),
    )?);
    let eos = model_eos(model.vocab(), &args.model)?;
    let (name, input) = match &args.input {
        Some(p) if p.as_os_str() != "-" => (
            p.clone(),
            ScoreInput::File(rnnlm::data::lines::open_text(p)?),
        ),
        _ => ("<stdin>".into(), ScoreInput::Stdin),
    };
    let input_name = name.clone();
    // A regular file is read as it is scored: its next line is always there. Anything else
    // (a pipe, a socket, a terminal) may stall with lines that are waiting for their answers,
    // so a thread reads it ahead and what has arrived is scored when the input pauses.
    let mut source = if input.is_regular_file() {
        ScoreSource::File(ScoreLines::new(input, name, Arc::clone(&model), eos))
    } else {
        ScoreSource::Stream {
            rx: ScoreLines::read_ahead(input, name.clone(), Arc::clone(&model), eos)?,
            name,
        }
    };
    if !args.json {
        outln!("# log_prob\ttokens\tperplexity   (natural log; each line scored from <eos>, its own <eos> included)");
    }
    // Lines are scored in chunks through `score_batch` (sentences batched through the
    // recurrence, the output layer as GEMMs), which gives the same bits as scoring each line
    // alone; the output keeps the input's order.
    let mut batch: Vec<(usize, Vec<u32>)> = Vec::with_capacity(SCORE_CHUNK_LINES);
    loop {
        batch.clear();
        // A bad line (too long, not UTF-8, an unknown word) ends the run with its error,
        // after the lines before it are printed.
        let read = source.fill(&mut batch);
        let seqs: Vec<&[u32]> = batch.iter().map(|(_, ids)| ids.as_slice()).collect();
        // A line whose logits are not finite ends the run with its error (naming the line and
        // the word), after the lines before it are printed, as a bad line does.
        let (scores, failed) = match model.score_batch(&seqs) {
            Ok(scores) => (scores, None),
            Err(Error::NotFinite {
                sequence: Some(k),
                position,
                what,
            }) => {
                // Sequence k is input line batch[k].0: <eos>, its words, <eos>.
                let e = Error::Parse {
                    path: input_name.clone(),
                    line: Some(batch[k].0),
                    msg: format!(
                        "{}: {what}",
                        token_name(&model, seqs[k].get(position).copied(), position)
                    ),
                };
                (model.score_batch(&seqs[..k])?, Some(e))
            }
            Err(e) => return Err(e),
        };
        for ((number, _), s) in batch.iter().zip(scores) {
            // Each log-probability is finite, but a line's mean can still be too large for its
            // exponential: an error, not an infinite perplexity (`null` in JSON).
            if !s.perplexity().is_finite() {
                stdout::flush();
                return Err(Error::Parse {
                    path: input_name.clone(),
                    line: Some(*number),
                    msg: format!(
                        "the perplexity overflows (log-probability {} over {} tokens): the \
                         model gives the words probabilities near 0 — a diverged model?",
                        s.log_prob, s.tokens
                    ),
                });
            }
            let open = if args.json {
                let o = serde_json::json!({
                    "line": number, "log_prob": s.log_prob, "tokens": s.tokens, "perplexity": s.perplexity(),
                });
                outln!("{o}")
            } else {
                outln!("{:.4}\t{}\t{:.4}", s.log_prob, s.tokens, s.perplexity())
            };
            // A closed pipe (e.g. `| head`) ends the output quietly.
            if !open {
                return Ok(());
            }
        }
        // The chunk's answers go out now: a client may be waiting for them to send more.
        if !stdout::flush() {
            return Ok(());
        }
        if let Some(e) = failed {
            return Err(e);
        }
        if !read? {
            return Ok(());
        }
    }
}

/// Lines `rnnlm score` reads and scores together (a few MB of ids at most; from a stream,
/// up to as many more are read ahead while a chunk is scored).
const SCORE_CHUNK_LINES: usize = 2048;

/// How long `rnnlm score` on a pipe, socket or terminal waits for a next line before it scores
/// the lines that have arrived: 2 ms. A producer that writes quickly (`cat file |`) has its next
/// line ready within microseconds (and the reader runs up to a chunk ahead while one is
/// scored), so its chunks stay full; a client that sends a line and waits for its answer gets
/// it at most this much later, about what scoring one sentence with a PTB-sized model takes.
/// A wait cut short by a busy machine only makes one chunk smaller: the lines that arrive
/// while it is scored fill the next.
const SCORE_WAIT: std::time::Duration = std::time::Duration::from_millis(2);

/// What `rnnlm score` reads: standard input or an opened file.
enum ScoreInput {
    Stdin,
    File(std::fs::File),
}

impl ScoreInput {
    /// Whether the input is a regular file (`rnnlm score FILE`, `rnnlm score < FILE`), whose
    /// reads never wait for a writer. Unknown counts as no: reading ahead is always correct.
    fn is_regular_file(&self) -> bool {
        let meta = match self {
            ScoreInput::File(f) => f.metadata(),
            ScoreInput::Stdin => stdin_metadata(),
        };
        meta.is_ok_and(|m| m.is_file())
    }

    /// The reader, made on the thread that reads (standard input's lock stays on its thread).
    fn reader(self) -> Box<dyn std::io::BufRead> {
        match self {
            ScoreInput::Stdin => Box::new(std::io::stdin().lock()),
            ScoreInput::File(f) => Box::new(std::io::BufReader::new(f)),
        }
    }
}

/// The file type and so on of standard input (of a duplicate of its descriptor).
#[cfg(unix)]
fn stdin_metadata() -> std::io::Result<std::fs::Metadata> {
    use std::os::fd::AsFd;
    std::fs::File::from(std::io::stdin().as_fd().try_clone_to_owned()?).metadata()
}

#[cfg(not(unix))]
fn stdin_metadata() -> std::io::Result<std::fs::Metadata> {
    Err(std::io::ErrorKind::Unsupported.into())
}

/// A line as `rnnlm score` scores it: its number and its ids from <eos> to <eos>; `None` at the
/// end of the input.
type ScoreLine = Result<Option<(usize, Vec<u32>)>, Error>;

/// The lines of the input, encoded with the model's vocabulary.
struct ScoreLines {
    // Through the library's bounded line reader: a line over MAX_LINE_BYTES (a file without
    // newlines, /dev/zero) is an error naming the input and the line, not a buffer that grows
    // until memory runs out.
    lines: rnnlm::data::lines::Lines<Box<dyn std::io::BufRead>>,
    model: Arc<rnnlm::Rnnlm>,
    eos: u32,
}

impl ScoreLines {
    fn new(input: ScoreInput, name: PathBuf, model: Arc<rnnlm::Rnnlm>, eos: u32) -> Self {
        Self {
            lines: rnnlm::data::lines::Lines::new(input.reader(), name),
            model,
            eos,
        }
    }

    /// The next line; a bad one (too long, not UTF-8, an unknown word) is an error naming it.
    fn next(&mut self) -> ScoreLine {
        let Some((number, line)) = self.lines.next_line()? else {
            return Ok(None);
        };
        let mut ids = vec![self.eos];
        ids.extend(self.model.encode(line).map_err(|e| Error::Parse {
            path: self.lines.path().to_owned(),
            line: Some(number),
            msg: e.to_string(),
        })?);
        ids.push(self.eos);
        Ok(Some((number, ids)))
    }

    /// Reads `input` on a thread of its own, up to a chunk of lines ahead of the receiver.
    /// Its last message is the end of the input or an error. The thread is not joined: it may
    /// be waiting for input that never comes when `score` is done (standard output closed),
    /// and it ends with the process.
    fn read_ahead(
        input: ScoreInput,
        name: PathBuf,
        model: Arc<rnnlm::Rnnlm>,
        eos: u32,
    ) -> Result<std::sync::mpsc::Receiver<ScoreLine>, Error> {
        let (tx, rx) = std::sync::mpsc::sync_channel(SCORE_CHUNK_LINES);
        let thread = std::thread::Builder::new().name("score-input".into());
        let what = name.clone();
        thread
            .spawn(move || {
                let mut lines = ScoreLines::new(input, name, model, eos);
                loop {
                    let line = lines.next();
                    let last = !matches!(line, Ok(Some(_)));
                    // A send fails once the receiver is gone: nobody wants more lines.
                    if tx.send(line).is_err() || last {
                        return;
                    }
                }
            })
            .map_err(|e| {
                let e = std::io::Error::new(e.kind(), format!("cannot start its reader: {e}"));
                Error::io(what, e)
            })?;
        Ok(rx)
    }
}

/// Where `rnnlm score` takes its lines from.
enum ScoreSource {
    /// A regular file, read as it is scored.
    File(ScoreLines),
    /// Anything else, read ahead by a thread (see [`ScoreLines::read_ahead`]); `name` names
    /// the input in errors.
    Stream {
        rx: std::sync::mpsc::Receiver<ScoreLine>,
        name: PathBuf,
    },
}

impl ScoreSource {
    /// Appends the next chunk's lines to `batch`: up to SCORE_CHUNK_LINES, fewer at the end of
    /// the input or, from a stream, when no line has come for SCORE_WAIT. Returns whether the
    /// input goes on; an error comes after the lines before it.
    fn fill(&mut self, batch: &mut Vec<(usize, Vec<u32>)>) -> Result<bool, Error> {
        use std::sync::mpsc::RecvTimeoutError;
        while batch.len() < SCORE_CHUNK_LINES {
            let line = match self {
                ScoreSource::File(lines) => lines.next(),
                ScoreSource::Stream { rx, name } => {
                    // The first line of a chunk is waited for as long as it takes.
                    let next = if batch.is_empty() {
                        rx.recv().map_err(|_| RecvTimeoutError::Disconnected)
                    } else {
                        rx.recv_timeout(SCORE_WAIT)
                    };
                    match next {
                        Ok(line) => line,
                        // The input has paused: answer what has arrived.
                        Err(RecvTimeoutError::Timeout) => return Ok(true),
                        // The reader's last message is the end or an error: it died.
                        Err(RecvTimeoutError::Disconnected) => {
                            let e = std::io::Error::other("the thread reading it stopped early");
                            return Err(Error::io(name.clone(), e));
                        }
                    }
                }
            };
            match line? {
                Some(row) => batch.push(row),
                None => return Ok(false),
            }
        }
        Ok(true)
    }
}

fn describe(cfg: &rnnlm::Config) -> String {
    format!(
        "{}, {} layer{}, V={}, D={}, H={}, {}",
        cfg.cell,
        cfg.layers,
        if cfg.layers == 1 { "" } else { "s" },
        cfg.vocab_size,
        cfg.wordvec_size,
        cfg.hidden_size,
        if cfg.tied { "tied" } else { "untied" }
    )
}

fn convert(args: &ConvertArgs) -> Result<(), Error> {
    use rnnlm::convert::{load_torch, save_torch};
    let (input, output) = (&args.input, &args.output);
    // Before reading anything: OUT can be written and overwrites no input.
    rnnlm::outputs::check_output(output, "OUT")?;
    let mut inputs: Vec<(&str, &Path)> = vec![("IN", input)];
    inputs.extend(args.vocab_text.as_deref().map(|p| ("--vocab-text", p)));
    rnnlm::outputs::check_distinct(&inputs, &[("OUT", output)])?;
    match (args.from, args.to) {
        (Some(Format::Torch), _) => {
            let (params, vocab) = load_torch(input, args.vocab_text.as_deref())?;
            checkpoint::save(output, &params, Some(&vocab))?;
            outln!(
                "wrote rnnlm checkpoint {} ({}; {}-word vocabulary)",
                output.display(),
                describe(params.config()),
                vocab.len()
            );
        }
        (None, Some(Format::Torch)) => {
            let ckpt = checkpoint::load(input)?;
            if let Some(v) = &ckpt.vocab {
                model_eos(v, input)?;
            }
            save_torch(output, &ckpt.params, ckpt.vocab.as_ref())?;
            outln!(
                "wrote PyTorch word_language_model state_dict {} ({}; {})",
                output.display(),
                describe(ckpt.params.config()),
                match &ckpt.vocab {
                    Some(v) => format!("{}-word vocabulary as 'vocab' metadata", v.len()),
                    None => "no vocabulary: the input has none".into(),
                }
            );
        }
        // clap's "direction" group requires exactly one of --from / --to.
        (None, None) => unreachable!("clap requires --from or --to"),
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// `score --help` states the chunk size and the wait that the code uses.
    #[test]
    fn score_help_states_the_chunk_and_the_wait() {
        let cli = Cli::command();
        let help = cli
            .find_subcommand("score")
            .and_then(|c| c.get_long_about())
            .expect("score has a long help")
            .to_string();
        assert!(
            help.contains(&format!("chunks of up to {SCORE_CHUNK_LINES}")),
            "{help}"
        );
        assert!(
            help.contains(&format!("within {} ms", SCORE_WAIT.as_millis())),
            "{help}"
        );
    }

    /// A run whose weights are no longer finite cannot write a resume point (loading would
    /// refuse it): the hint says so, rather than reporting a failed save, and nothing is
    /// written but the curves.
    #[test]
    fn a_run_with_non_finite_weights_says_why_no_resume_point_was_written() {
        use rnnlm::train::{TrainConfig, Trainer};
        let cfg = rnnlm::Config::new(5, 4, 4).unwrap();
        let mut params = rnnlm::Params::zeros(cfg);
        params.tensor_mut("rnn.0.Wh").unwrap()[3] = f32::NAN;
        let train = TrainConfig {
            batch_size: 2,
            time_size: 3,
            epochs: 1,
            eval_interval: None,
            ..TrainConfig::default()
        };
        let mut trainer = Trainer::from_params(params, train).unwrap();
        let corpus: Vec<u32> = (0..100).map(|i| i % 5).collect();
        let err = trainer.fit(&corpus, None, None, |_| {}).unwrap_err();
        assert!(matches!(err, Error::Diverged { .. }), "{err}");

        let dir = std::env::temp_dir().join(format!("rnnlm-cli-diverged-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (save, resume) = (dir.join("m.safetensors"), dir.join("m.safetensors.resume"));
        let words = (0..5).map(|i| format!("w{i}")).collect();
        let vocab = rnnlm::Vocab::from_words(words).unwrap();
        let mut curves = false;
        let hint = save_diverged(&trainer, &vocab, &save, &resume, || {
            curves = true;
            Vec::new()
        });
        assert_eq!(
            hint,
            "the weights are no longer finite and no validation kept a model, so neither a \
             model nor a resume point was written; try a lower --lr or a --clip"
        );
        assert!(curves, "the log is still written");
        assert!(std::fs::read_dir(&dir).unwrap().next().is_none());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
