//! `rnnlm eval`: the perplexity of a text under a checkpoint.

use std::path::PathBuf;

use rnnlm::Error;

use crate::corpus_args::Source;
use crate::model_eos;
use crate::places::place;
use crate::shared_args::Protocol;

#[derive(clap::Args)]
pub(crate) struct EvalArgs {
    /// Checkpoint (.safetensors) with a `vocab` metadata entry.
    #[arg(long)]
    model: PathBuf,
    /// Text to score: one sentence per line, whitespace-separated words.
    #[arg(long, required_unless_present = "data_ids")]
    data: Option<PathBuf>,
    /// Or ids to score: an ids file of `rnnlm prepare` (made with this model's vocabulary),
    /// read memory-mapped.
    #[arg(long, value_name = "IDS", conflicts_with = "data")]
    data_ids: Option<PathBuf>,
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

pub(crate) fn eval(args: &EvalArgs) -> Result<(), Error> {
    let model = rnnlm::Rnnlm::load_with(&args.model, args.vocab_text.as_deref())?;
    model_eos(model.vocab(), &args.model)?;
    let source = Source::pick(&args.data_ids, || {
        args.data
            .clone()
            .ok_or_else(|| Error::invalid("--data", "is required (or give --data-ids)"))
    })?;
    let data = source.path().to_owned();
    let corpus = source.load(
        model.vocab(),
        &format!("the vocabulary of {}", args.model.display()),
    )?;
    let ids = corpus.tokens();
    let (n, t) = (args.batch as usize, args.time as usize);
    let protocol = rnnlm::Protocol::from(args.protocol);
    let ppl = rnnlm::evaluate(model.params(), ids, protocol, n, t).map_err(|e| match e {
        Error::Invalid { msg, .. } => Error::Parse {
            path: data.clone(),
            line: None,
            msg,
        },
        Error::NotFinite { position, what, .. } => {
            let (line, word) = place(&model, &ids, position);
            Error::Parse {
                path: data.clone(),
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
            path: data.clone(),
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
            "unk_mapped": corpus.unk(),
            "model": args.model,
            "data": data,
        });
        outln!("{out}");
    } else {
        outln!(
            "perplexity {:.4} (protocol {protocol}: batch {n}, time {t}; {} of {} tokens scored; {} words mapped to <unk>)",
            ppl.perplexity,
            ppl.tokens,
            ids.len(),
            corpus.unk_note()
        );
    }
    Ok(())
}
