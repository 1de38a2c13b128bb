//! `rnnlm generate`: sampling text from a model.

use std::path::PathBuf;

use rnnlm::Error;

use crate::{note, stdout};

#[derive(clap::Args)]
pub(crate) struct GenerateArgs {
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

pub(crate) fn generate(args: &GenerateArgs) -> Result<(), Error> {
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
