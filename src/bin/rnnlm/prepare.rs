//! `rnnlm prepare`: a text corpus to a compact ids file (and its vocabulary), read
//! memory-mapped by `train --train-ids` and `eval --data-ids`; and `rnnlm zipf-text`, the
//! synthetic corpora it is measured on.

use std::path::{Path, PathBuf};
use std::time::Instant;

use rnnlm::data::ids::{read_vocab, write_vocab};
use rnnlm::data::prepare::{prepare as prepare_text, write_zipf_text, VocabSource};
use rnnlm::outputs::{check_distinct, check_output};
use rnnlm::Error;

use crate::thread_pool;

#[derive(clap::Args)]
pub(crate) struct PrepareArgs {
    /// Text corpus: one sentence per line, whitespace-separated words (<eos> is added after
    /// each line, as every command reads text).
    #[arg(long)]
    text: PathBuf,
    /// Output prefix: writes OUT.ids (the ids) and, unless --vocab is given, OUT.vocab (the
    /// vocabulary built from the text, one word per line in id order, most frequent first).
    #[arg(long, value_name = "OUT")]
    out: PathBuf,
    /// Encode with this vocabulary (an OUT.vocab of an earlier prepare, e.g. the training
    /// text's for valid and test) instead of building one; words outside it map to its <unk>.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["max_vocab", "min_count"])]
    vocab: Option<PathBuf>,
    /// Keep at most this many words (the most frequent, <eos> and <unk> included); the rest
    /// map to <unk>.
    #[arg(long)]
    max_vocab: Option<usize>,
    /// Keep only words seen at least this often.
    #[arg(long)]
    min_count: Option<usize>,
    /// Threads, 1 to 256 (default: RAYON_NUM_THREADS, else one per core); the text is cut
    /// into this many ranges at line ends. The output does not depend on it.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    threads: Option<u32>,
    /// Print the result as one JSON object on the last line.
    #[arg(long)]
    json: bool,
}

/// `PREFIX.EXT`: the extension appended to the whole prefix (`data/train` -> `data/train.ids`,
/// `a.b` -> `a.b.ids`).
pub(crate) fn with_ext(prefix: &Path, ext: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_owned();
    s.push(".");
    s.push(ext);
    PathBuf::from(s)
}

pub(crate) fn prepare(args: &PrepareArgs) -> Result<(), Error> {
    let start = Instant::now();
    let pool = thread_pool(args.threads)?;
    let ids_out = with_ext(&args.out, "ids");
    let vocab_out = with_ext(&args.out, "vocab");
    let mut outputs: Vec<(&str, &Path)> = vec![("--out (its .ids)", &ids_out)];
    if args.vocab.is_none() {
        outputs.push(("--out (its .vocab)", &vocab_out));
    }
    for (flag, path) in &outputs {
        check_output(path, flag)?;
    }
    let mut inputs: Vec<(&str, &Path)> = vec![("--text", &args.text)];
    inputs.extend(args.vocab.as_deref().map(|v| ("--vocab", v)));
    check_distinct(&inputs, &outputs)?;
    let given = args.vocab.as_deref().map(read_vocab).transpose()?;
    let source = match &given {
        Some(v) => VocabSource::Fixed(v),
        None => VocabSource::Build {
            max_vocab: args.max_vocab,
            min_count: args.min_count.unwrap_or(1),
        },
    };
    let threads = pool.current_num_threads();
    let done = pool.install(|| prepare_text(&args.text, &ids_out, source, threads))?;
    if given.is_none() {
        write_vocab(&vocab_out, &done.vocab)?;
    }
    let seconds = start.elapsed().as_secs_f64();
    outln!(
        "{}: {} tokens ({} distinct; {} mapped to <unk>), vocabulary {} words -> {}{} | {seconds:.2} s | {threads} threads",
        args.text.display(),
        done.tokens,
        done.distinct,
        done.unk_mapped,
        done.vocab.len(),
        ids_out.display(),
        if given.is_none() { format!(", {}", vocab_out.display()) } else { String::new() },
    );
    if args.json {
        let out = serde_json::json!({
            "text": args.text,
            "ids": ids_out,
            "vocab": if given.is_none() { Some(&vocab_out) } else { args.vocab.as_ref() },
            "tokens": done.tokens,
            "distinct": done.distinct,
            "unk_mapped": done.unk_mapped,
            "vocab_size": done.vocab.len(),
            "seconds": seconds,
            "threads": threads,
        });
        outln!("{out}");
    }
    Ok(())
}

#[derive(clap::Args)]
pub(crate) struct ZipfTextArgs {
    /// Words to write (lines of 10 to 30 words; <eos> not counted).
    #[arg(long)]
    tokens: u64,
    /// Distinct words: w0 .. w{V-1}, word k drawn with p(k) ∝ 1/(k+1).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=u32::MAX as u64))]
    vocab_size: u64,
    /// Seed: the same seed gives the same text, byte for byte.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// The text file to write.
    #[arg(long)]
    out: PathBuf,
}

pub(crate) fn zipf_text(args: &ZipfTextArgs) -> Result<(), Error> {
    check_output(&args.out, "--out")?;
    write_zipf_text(&args.out, args.tokens, args.vocab_size as usize, args.seed)?;
    outln!(
        "{}: {} words over {} distinct (Zipf, seed {})",
        args.out.display(),
        args.tokens,
        args.vocab_size,
        args.seed
    );
    Ok(())
}
