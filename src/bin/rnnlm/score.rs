//! `rnnlm score`: the log-probability of each input line, and how the lines are read
//! (`ScoreInput`, `ScoreLines`, `ScoreSource`: in chunks, a stream read ahead by a thread).

use std::path::PathBuf;
use std::sync::Arc;

use rnnlm::Error;

use crate::places::token_name;
use crate::{model_eos, stdout};

#[derive(clap::Args)]
pub(crate) struct ScoreArgs {
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

pub(crate) fn score(args: &ScoreArgs) -> Result<(), Error> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cli;
    use clap::CommandFactory;

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
}
