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
    /// Train a model (the book's chapter-6 loop) and save the best one.
    Train(Box<TrainArgs>),
    /// Sample text from a model (repeatable for a seed).
    Generate(GenerateArgs),
    /// Log-probability, token count and perplexity of each input line.
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
    /// Output file (written atomically; not created on error).
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
    /// Number of words to sample.
    #[arg(long, default_value_t = 100)]
    words: usize,
    /// Softmax temperature (lower is more conservative).
    #[arg(long, default_value_t = 1.0)]
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

#[derive(Clone, Copy, ValueEnum)]
enum Cell {
    /// tanh RNN (the book's SimpleRnnlm).
    Rnn,
    /// LSTM in the book's ch06 form (gate order f, g, i, o; one bias).
    Lstm,
    /// GRU in PyTorch's form (gate order r, z, n; two biases).
    Gru,
}

impl From<Cell> for rnnlm::model::config::Cell {
    fn from(c: Cell) -> Self {
        match c {
            Cell::Rnn => Self::Rnn,
            Cell::Lstm => Self::Lstm,
            Cell::Gru => Self::Gru,
        }
    }
}

/// The model's structure, shared by `train` and `bench`.
#[derive(clap::Args)]
struct ModelArgs {
    /// Recurrent cell.
    #[arg(long, value_enum, default_value = "rnn")]
    cell: Cell,
    /// Stacked recurrent layers (layer l > 0 reads layer l-1's h).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    layers: u32,
    /// Inverted dropout probability during training, after the embedding, between layers
    /// and before the output layer (0 = off).
    #[arg(long, default_value_t = 0.0)]
    dropout: f32,
    /// Tie the output weights to the embedding (embed.W transposed); needs --wordvec equal
    /// to --hidden.
    #[arg(long)]
    tie: bool,
}

impl ModelArgs {
    fn config(&self, vocab: usize, shape: &Shape) -> Result<rnnlm::Config, Error> {
        rnnlm::Config::new(vocab, shape.wordvec as usize, shape.hidden as usize)?
            .with_cell(self.cell.into())
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
    /// Validation text. Default: DIR/ptb.valid.txt with --data-dir.
    #[arg(long)]
    valid: Option<PathBuf>,
    /// Test text. Default: DIR/ptb.test.txt with --data-dir.
    #[arg(long)]
    test: Option<PathBuf>,
    /// Folder with ptb.{train,valid,test}.txt.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    shape: Shape,
    /// SGD learning rate.
    #[arg(long, default_value_t = 5.0)]
    lr: f32,
    /// Global gradient-norm clip (0 turns clipping off).
    #[arg(long, default_value_t = 0.25)]
    clip: f32,
    /// Epochs.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..))]
    epochs: u32,
    /// Seed of the weight initialisation.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Report training perplexity every this many batches.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..))]
    eval_interval: u32,
    /// Evaluation protocol for validation and test.
    #[arg(long, value_enum, default_value = "book")]
    protocol: Protocol,
    /// Keep at most this many words (the most frequent); the rest map to <unk>.
    #[arg(long)]
    max_vocab: Option<usize>,
    /// Keep only words seen at least this often in the training text.
    #[arg(long, default_value_t = 1)]
    min_count: usize,
    /// Threads (default: RAYON_NUM_THREADS, else one per core).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Where to save the best model (safetensors, with its vocabulary).
    #[arg(long)]
    save: PathBuf,
    /// Write every evaluation point as CSV here.
    #[arg(long)]
    log: Option<PathBuf>,
    /// Draw the train/valid perplexity curves as SVG here.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// Continue the run saved in this resumable checkpoint (written on Ctrl-C); its model,
    /// vocabulary and training settings are used, the data files are given again.
    #[arg(long)]
    resume: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum BenchMode {
    /// Forward + backward + SGD.
    Train,
    /// Forward only.
    Infer,
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
    /// PyTorch word_language_model's evaluate(): N contiguous streams (the tail dropped), each
    /// scoring its own next tokens in chunks of T, exp of the mean per-token loss.
    Torch,
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
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Eval(args) => eval(&args),
        Command::Bench(args) => bench(&args),
        Command::Train(args) => train(&args),
        Command::Generate(args) => generate(&args),
        Command::Score(args) => score(&args),
        Command::Convert(args) => convert(&args),
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
    let model = rnnlm::Rnnlm::load_with(&args.model, args.vocab_text.as_deref())?;
    let (ids, unk) = read_counting_unk(&args.data, model.vocab())?;
    let (n, t) = (args.batch as usize, args.time as usize);
    let protocol = rnnlm::Protocol::from(args.protocol);
    let ppl = rnnlm::evaluate(model.params(), &ids, protocol, n, t).map_err(|e| match e {
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
    let cfg = args.model.config(args.vocab as usize, &args.shape)?;
    let spec = BenchSpec {
        cfg,
        n: args.shape.batch as usize,
        t: args.shape.time as usize,
        mode: match args.mode {
            BenchMode::Train => Mode::Train,
            BenchMode::Infer => Mode::Infer,
        },
        warmup: seconds("--warmup", args.warmup)?,
        windows: args.windows as usize,
        window: seconds("--window", args.window)?,
        dropout: args.model.dropout,
    };
    let pool = thread_pool(args.threads)?;
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
            "vocab": args.vocab, "wordvec": args.shape.wordvec, "hidden": args.shape.hidden,
            "cell": cfg.cell.name(), "layers": cfg.layers, "tied": cfg.tied,
            "dropout": args.model.dropout,
            "batch": args.shape.batch, "time": args.shape.time,
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

/// Set by the Ctrl-C handler; the trainer stops between batches.
static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn train(args: &TrainArgs) -> Result<(), Error> {
    use rnnlm::data::corpus::read_counting_unk;
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
    if let Some(dir) = args.save.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(Error::invalid(
                "--save",
                format!("folder {} does not exist", dir.display()),
            ));
        }
    }
    let (mut trainer, vocab) = match &args.resume {
        Some(path) => {
            let (trainer, vocab) = Trainer::load_resume(path)?;
            let vocab = vocab.ok_or_else(|| Error::Checkpoint {
                path: path.clone(),
                msg: "has no vocabulary".into(),
            })?;
            println!(
                "resuming the run saved in {} (its model, vocabulary and settings)",
                path.display()
            );
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
                dropout: args.model.dropout,
                ..TrainConfig::default()
            };
            let model_cfg = args.model.config(vocab.len(), &args.shape)?;
            (Trainer::new(model_cfg, cfg)?, vocab)
        }
    };
    let (train_ids, train_unk) = read_counting_unk(&train_path, &vocab)?;
    let (valid_ids, valid_unk) = read_counting_unk(&valid_path, &vocab)?;
    let (test_ids, test_unk) = read_counting_unk(&test_path, &vocab)?;
    let cfg = trainer.config().clone();
    let model_cfg = *trainer.model().config();
    let protocol = cfg.protocol.name();
    println!(
        "vocabulary {} words; train {} tokens ({train_unk} mapped to <unk>), valid {} ({valid_unk}), test {} ({test_unk}); {} x {} V={} D={} H={}{} dropout {} N={} T={} lr {} clip {} epochs {}",
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
        cfg.lr,
        cfg.max_grad.map_or("off".into(), |c| c.to_string()),
        cfg.epochs
    );

    let pool = thread_pool(args.threads)?;
    // A failure to install the handler only loses graceful Ctrl-C; training still works.
    let _ = ctrlc::set_handler(|| STOP.store(true, std::sync::atomic::Ordering::Relaxed));

    trainer.stop_on(&STOP);
    let iters = (train_ids.len() - 1) / (cfg.batch_size * cfg.time_size);
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
            println!("{line}");
        }
    };
    let report = pool.install(|| {
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
                let line = format!(
                    "| epoch {} | iter {} / {iters} | time {:.0}[s] | perplexity {ppl:.2} | {tokens_per_sec:.0} tokens/s | ETA {eta:.0}[s]",
                    point.epoch, point.iter, point.elapsed_s
                );
                if !terminal {
                    println!("{line}");
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
    })?;
    bar.finish_and_clear();

    if report.interrupted {
        let mut name = args.save.clone().into_os_string();
        name.push(".resume");
        let resume = PathBuf::from(name);
        trainer.save_resume(&resume, Some(&vocab))?;
        println!(
            "interrupted: run saved to {} (continue with the same command and --resume {})",
            resume.display(),
            resume.display()
        );
        std::process::exit(130);
    }
    println!(
        "saving the model with the best validation perplexity to {}",
        args.save.display()
    );
    checkpoint::save(&args.save, trainer.best_params(), Some(&vocab))?;
    if let Some(path) = &args.log {
        rnnlm::report::write_csv(path, &report.log)?;
    }
    if let Some(path) = &args.plot {
        rnnlm::report::write_svg(path, &report.log, "SimpleRnnlm perplexity")?;
    }
    let valid_ppl = report.best_valid.map(|v| v.perplexity);
    let test_ppl = report.test.map(|v| v.perplexity);
    println!(
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
            "model": args.save,
        });
        println!("{out}");
    }
    if report.interrupted {
        return Err(Error::invalid(
            "training",
            "interrupted by Ctrl-C (model saved)",
        ));
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
    let ids = model.generate(&mut rng, &start, args.words, &sampling)?;
    // As the book prints samples: sentences end at <eos>.
    let text = format!("{} {}", args.start, model.decode(&ids));
    let text = text
        .replace(" <eos> ", "\n")
        .replace("<eos> ", "")
        .replace(" <eos>", "");
    println!("{}", text.trim());
    Ok(())
}

fn score(args: &ScoreArgs) -> Result<(), Error> {
    use std::io::{BufRead, Write};
    let model = rnnlm::Rnnlm::load_with(&args.model, args.vocab_text.as_deref())?;
    let eos = model
        .vocab()
        .id(rnnlm::data::corpus::EOS)
        .ok_or_else(|| Error::Checkpoint {
            path: args.model.clone(),
            msg: "vocabulary has no <eos>, so sentences cannot be delimited".into(),
        })?;
    let (name, reader): (PathBuf, Box<dyn BufRead>) = match &args.input {
        None => ("<stdin>".into(), Box::new(std::io::stdin().lock())),
        Some(p) if p.as_os_str() == "-" => ("<stdin>".into(), Box::new(std::io::stdin().lock())),
        Some(p) => {
            let f = std::fs::File::open(p).map_err(|e| Error::io(p, e))?;
            (p.clone(), Box::new(std::io::BufReader::new(f)))
        }
    };
    let mut out = std::io::stdout().lock();
    if !args.json {
        let _ = writeln!(out, "# log_prob\ttokens\tperplexity   (natural log; each line scored from <eos>, its own <eos> included)");
    }
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|e| Error::Parse {
            path: name.clone(),
            line: Some(i + 1),
            msg: format!("cannot read line ({e})"),
        })?;
        let mut ids = vec![eos];
        ids.extend(model.encode(&line).map_err(|e| Error::Parse {
            path: name.clone(),
            line: Some(i + 1),
            msg: e.to_string(),
        })?);
        ids.push(eos);
        let s = model.score(&ids)?;
        let written = if args.json {
            let o = serde_json::json!({
                "line": i + 1, "log_prob": s.log_prob, "tokens": s.tokens, "perplexity": s.perplexity(),
            });
            writeln!(out, "{o}")
        } else {
            writeln!(
                out,
                "{:.4}\t{}\t{:.4}",
                s.log_prob,
                s.tokens,
                s.perplexity()
            )
        };
        // A closed pipe (e.g. `| head`) ends the output quietly.
        if written.is_err() {
            break;
        }
    }
    Ok(())
}

/// "lstm, 2 layers, V=41, D=16, H=16, tied".
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
    match (args.from, args.to) {
        (Some(Format::Torch), _) => {
            let (params, vocab) = load_torch(input, args.vocab_text.as_deref())?;
            checkpoint::save(output, &params, Some(&vocab))?;
            println!(
                "wrote rnnlm checkpoint {} ({}; {}-word vocabulary)",
                output.display(),
                describe(params.config()),
                vocab.len()
            );
        }
        (None, Some(Format::Torch)) => {
            let ckpt = checkpoint::load(input)?;
            save_torch(output, &ckpt.params, ckpt.vocab.as_ref())?;
            println!(
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

/// The rayon pool a command runs in: `--threads P`, else RAYON_NUM_THREADS, else one thread
/// per core. Commands run their whole loop inside it (`pool.install`), where rayon's calls are
/// cheapest.
fn thread_pool(threads: Option<u32>) -> Result<rayon::ThreadPool, Error> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(p) = threads {
        builder = builder.num_threads(p as usize);
    }
    builder
        .build()
        .map_err(|e| Error::invalid("--threads", e.to_string()))
}
