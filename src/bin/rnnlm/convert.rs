//! `rnnlm convert`: PyTorch word_language_model checkpoints to ours and back.

use std::path::{Path, PathBuf};

use clap::ValueEnum;
use rnnlm::{checkpoint, Error};

use crate::model_eos;

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// PyTorch word_language_model RNNModel state_dict, saved with safetensors.torch.save_file;
    /// its decoder an nn.Linear or an nn.AdaptiveLogSoftmaxWithLoss (under any prefix).
    /// --to torch writes an adaptive head under decoder. (a class head does not convert).
    Torch,
}

#[derive(clap::Args)]
#[command(group(clap::ArgGroup::new("direction").required(true).args(["from", "to"])))]
pub(crate) struct ConvertArgs {
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

fn describe(cfg: &rnnlm::Config) -> String {
    let head = crate::shared_args::head_note(cfg);
    format!(
        "{}, {} layer{}, V={}, D={}, H={}, {}{}",
        cfg.cell,
        cfg.layers,
        if cfg.layers == 1 { "" } else { "s" },
        cfg.vocab_size,
        cfg.wordvec_size,
        cfg.hidden_size,
        if cfg.tied { "tied" } else { "untied" },
        if head.is_empty() {
            head
        } else {
            format!(",{head}")
        }
    )
}

pub(crate) fn convert(args: &ConvertArgs) -> Result<(), Error> {
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
