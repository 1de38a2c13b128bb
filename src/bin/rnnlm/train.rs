//! `rnnlm train`: its flags, the training run, resuming one (`resume_settings`), and saving
//! what a run leaves (`keep`, `save_diverged`, `write_curves`).

use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgMatches, ValueEnum};
use rnnlm::{checkpoint, Error};

use crate::shared_args::{ModelArgs, Protocol, Shape};
use crate::{model_eos, note, signals, stdout, thread_pool};

#[derive(clap::Args)]
pub(crate) struct TrainArgs {
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
    /// Training ids instead of --train: an ids file of `rnnlm prepare`, read memory-mapped
    /// (its vocabulary is --vocab, else the .vocab file beside it).
    #[arg(long, value_name = "IDS", conflicts_with_all = ["train", "max_vocab", "min_count"])]
    train_ids: Option<PathBuf>,
    /// Validation ids instead of --valid (an ids file of `rnnlm prepare` with the run's
    /// vocabulary).
    #[arg(long, value_name = "IDS", conflicts_with = "valid")]
    valid_ids: Option<PathBuf>,
    /// Test ids instead of --test (an ids file of `rnnlm prepare` with the run's vocabulary).
    #[arg(long, value_name = "IDS", conflicts_with = "test")]
    test_ids: Option<PathBuf>,
    /// The vocabulary of --train-ids (an OUT.vocab of `rnnlm prepare`; default: the file
    /// beside it, X.vocab for X.ids).
    #[arg(long, value_name = "FILE", requires = "train_ids")]
    vocab: Option<PathBuf>,
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

pub(crate) fn train(args: &TrainArgs, given: &ArgMatches) -> Result<(), Error> {
    use crate::corpus_args::{vocab_of, Source};
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
    let (train_src, valid_src, test_src) = (
        Source::pick(&args.train_ids, || {
            file(&args.train, "ptb.train.txt", "--train")
        })?,
        Source::pick(&args.valid_ids, || {
            file(&args.valid, "ptb.valid.txt", "--valid")
        })?,
        Source::pick(&args.test_ids, || {
            file(&args.test, "ptb.test.txt", "--test")
        })?,
    );
    let (train_path, valid_path, test_path) = (
        train_src.path().to_owned(),
        valid_src.path().to_owned(),
        test_src.path().to_owned(),
    );
    // The vocabulary file of --train-ids (an input too).
    let vocab_file = args
        .train_ids
        .as_deref()
        .map(|ids| vocab_of(ids, args.vocab.as_deref()));

    args.model.check()?;
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
    // Under `mpirun -np R` (R > 1, the `mpi` feature): this rank's communicator. Rank 0 alone
    // prints and writes the outputs; every rank trains its rows of each batch.
    let comm = communicator()?;
    let (rank, ranks) = comm.as_ref().map_or((0, 1), |c| (c.rank(), c.ranks()));
    let lead = rank == 0;
    if !lead {
        stdout::silence();
    }
    let resume_out = with_suffix(&args.save, ".resume");
    let resume_flag = "--save (its .resume file)";
    let mut outputs: Vec<(&str, &Path)> = vec![("--save", &args.save)];
    outputs.extend(args.log.as_deref().map(|p| ("--log", p)));
    outputs.extend(args.plot.as_deref().map(|p| ("--plot", p)));
    for (flag, path) in outputs.iter().filter(|_| lead) {
        check_output(path, flag)?;
    }
    if lead {
        check_output(&resume_out, resume_flag)?;
    }
    let mut inputs: Vec<(&str, &Path)> = vec![
        ("--train", &train_path),
        ("--valid", &valid_path),
        ("--test", &test_path),
    ];
    inputs.extend(vocab_file.as_deref().map(|p| ("--vocab", p)));
    let mut with_resume = inputs.clone();
    with_resume.extend(args.resume.as_deref().map(|p| ("--resume", p)));
    check_distinct(&with_resume, &outputs)?;
    // SAVE.resume may be the --resume file: a new interruption replaces the older point.
    outputs.push((resume_flag, &resume_out));
    check_distinct(&inputs, &outputs)?;
    // Held to the end of the run: a second trainer with the same --save is refused here.
    // (Rank 0's alone: the other ranks write nothing.)
    let lock = match lead {
        true => Some(rnnlm::outputs::OutputLock::acquire(&args.save, "--save")?),
        false => None,
    };

    // The training ids, when a class head already read them for its counts.
    let mut read = None;
    // The vocabulary as ids files' mismatches name it.
    let vocab_what = match (&args.resume, &vocab_file) {
        (Some(r), _) => format!("the vocabulary of {}", r.display()),
        (None, Some(v)) => format!("the vocabulary {}", v.display()),
        (None, None) => format!("the vocabulary built from {}", train_path.display()),
    };
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
                frequency_order: args.model.frequency_order(),
            };
            let vocab = match &vocab_file {
                Some(v) => rnnlm::data::ids::read_vocab(v)?,
                None => rnnlm::Vocab::build(&train_path, &opts)?,
            };
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
            let mut model_cfg = args.model.config(vocab.len(), &args.shape)?;
            let trainer = if let rnnlm::Softmax::Class { classes } = model_cfg.softmax {
                // Mikolov's classes from the training text's counts (the ids are kept for
                // the run below).
                let corpus = train_src.load(&vocab, &vocab_what)?;
                let mut counts = vec![0u64; vocab.len()];
                corpus.tokens().for_each_chunk(|_, chunk| {
                    for &w in chunk {
                        counts[w as usize] += 1;
                    }
                    Ok(())
                })?;
                let starts = rnnlm::class_starts_from_counts(&counts, classes)
                    .map_err(|e| in_file(e, &train_path))?;
                if starts.len() < classes {
                    note(
                        "note",
                        format_args!(
                            "{} classes, not {classes}: the most frequent words fill classes of their own",
                            starts.len()
                        ),
                    );
                }
                model_cfg.softmax = rnnlm::Softmax::Class {
                    classes: starts.len(),
                };
                let mut trainer = Trainer::new(model_cfg, cfg)?;
                trainer.set_class_starts(&starts)?;
                read = Some(corpus);
                trainer
            } else {
                Trainer::new(model_cfg, cfg)?
            };
            (trainer, vocab)
        }
    };
    if let Some(comm) = comm {
        trainer.set_data_parallel(comm)?;
    }
    let cfg = trainer.config().clone();
    let train_corpus = match read.take() {
        Some(read) => read,
        None => train_src.load(&vocab, &vocab_what)?,
    };
    let train_ids = train_corpus.tokens();
    rnnlm::BookBatches::new(train_ids, cfg.batch_size, cfg.time_size)
        .map_err(|e| in_file(e, &train_path))?;
    trainer
        .check_data(train_ids)
        .map_err(|e| in_file(e, &train_path))?;
    let valid_corpus = valid_src.load(&vocab, &vocab_what)?;
    let valid_ids = valid_corpus.tokens();
    cfg.check_eval_corpus(valid_ids.len())
        .map_err(|e| in_file(e, &valid_path))?;
    let test_corpus = test_src.load(&vocab, &vocab_what)?;
    let test_ids = test_corpus.tokens();
    cfg.check_eval_corpus(test_ids.len())
        .map_err(|e| in_file(e, &test_path))?;
    let (train_unk, valid_unk, test_unk) = (
        train_corpus.unk_note(),
        valid_corpus.unk_note(),
        test_corpus.unk_note(),
    );
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
        "vocabulary {} words; train {} tokens ({train_unk} mapped to <unk>), valid {} ({valid_unk}), test {} ({test_unk}); {} x {} V={} D={} H={}{}{} dropout {} N={} T={} lr {}{} clip {} epochs {}",
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
        crate::shared_args::head_note(&model_cfg),
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
        trainer.fit_tokens(train_ids, Some(valid_ids), Some(test_ids), |event| match event {
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
    if ranks > 1 {
        if let Err(e) = &fitted {
            // The other ranks may be waiting in a collective: end the whole job, naming why.
            let _ = std::io::Write::write_fmt(
                &mut std::io::stderr(),
                format_args!("rnnlm: error: rank {rank} of {ranks}: {e}\n"),
            );
            abort_job(2);
        }
        if !lead {
            // Every rank holds the same weights; rank 0 writes them.
            return fitted.map(|_| ());
        }
    }
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
        // MPI is finalised (the communicator dropped) before exiting, or mpirun would take
        // the exit for a crash.
        drop(trainer);
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
            "unk_mapped": {"train": train_corpus.unk(), "valid": valid_corpus.unk(), "test": test_corpus.unk()},
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

/// This process's communicator when `mpirun` started it as one of several ranks (the `mpi`
/// feature), else `None`.
#[cfg(feature = "mpi")]
fn communicator() -> Result<Option<Box<dyn rnnlm::dist::Collective>>, Error> {
    use rnnlm::dist::Collective;
    let mpi = rnnlm::dist::mpi::Mpi::init()?;
    Ok((mpi.ranks() > 1).then(|| Box::new(mpi) as Box<dyn Collective>))
}

#[cfg(not(feature = "mpi"))]
fn communicator() -> Result<Option<Box<dyn rnnlm::dist::Collective>>, Error> {
    Ok(None)
}

#[cfg(feature = "mpi")]
fn abort_job(code: i32) -> ! {
    rnnlm::dist::mpi::abort_job(code)
}

#[cfg(not(feature = "mpi"))]
fn abort_job(code: i32) -> ! {
    std::process::exit(code)
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

/// The name `--softmax` gives its value (the library's [`rnnlm::Softmax::name`]).
fn model_softmax_name(k: crate::shared_args::SoftmaxKind) -> &'static str {
    match k {
        crate::shared_args::SoftmaxKind::Full => "full",
        crate::shared_args::SoftmaxKind::Class => "class",
        crate::shared_args::SoftmaxKind::Adaptive => "adaptive",
    }
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
    let mut projections_differ = None;
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
        "softmax",
        model_softmax_name(args.model.softmax).into(),
        model.softmax.name().into(),
    );
    // --classes C gives at most C classes (fewer when a few words fill classes alone), so
    // only a request below the saved count is another model.
    if let (Some(c), rnnlm::Softmax::Class { classes }) = (args.model.classes, model.softmax) {
        if (c as usize) < classes {
            check("classes", c.to_string(), classes.to_string());
        }
    }
    if let rnnlm::Softmax::Adaptive {
        cutoffs, head_bias, ..
    } = model.softmax
    {
        let list = |c: &[usize]| {
            c.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(",")
        };
        let saved: Vec<usize> = cutoffs.as_slice().iter().map(|&c| c as usize).collect();
        check(
            "cutoffs",
            list(args.model.cutoffs.as_deref().unwrap_or(&[])),
            list(&saved),
        );
        check(
            "head_bias",
            args.model.head_bias.to_string(),
            head_bias.to_string(),
        );
        // --div-value only shapes the projections: compare what it gives.
        if let Some(div) = args.model.div_value {
            let mine = rnnlm::Softmax::adaptive(&saved, div, head_bias, model.hidden_size)?;
            if mine != model.softmax {
                projections_differ = Some(format!(
                    "--div-value {div} gives other projections than the saved run's"
                ));
            }
        }
    }
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
    differ.extend(projections_differ);
    // The vocabulary options are not saved, their result is: rebuild and compare.
    if typed("max_vocab") || typed("min_count") {
        let opts = rnnlm::VocabOptions {
            max_vocab: args.max_vocab,
            min_count: args.min_count,
            frequency_order: !model.softmax.is_full(),
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

#[cfg(test)]
mod tests {
    use super::*;

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
