//! Building a vocabulary from a plain-text training corpus: counts, a minimum count, a size
//! limit, and `<unk>` for what is left out.

use std::collections::HashMap;
use std::path::Path;

use super::corpus::{for_each_token, EOS};
use super::vocab::{Vocab, UNK};
use crate::error::{Error, Result};

/// Options for building a vocabulary from training text with [`Vocab::build`].
///
/// The default (`max_vocab: None, min_count: 1`) keeps every word, which for PTB gives the
/// book's 10,000-word vocabulary with ids in order of first appearance.
///
/// ```
/// use rnnlm::{Vocab, VocabOptions};
/// assert_eq!(VocabOptions::default(), VocabOptions { max_vocab: None, min_count: 1, frequency_order: false });
/// let path = std::env::temp_dir().join(format!("rnnlm-doc-opts-{}.txt", std::process::id()));
/// std::fs::write(&path, "a b a\nc a b\nd\n").unwrap();
/// let all = Vocab::build(&path, &VocabOptions::default()).unwrap();
/// assert_eq!(all.words(), ["a", "b", "<eos>", "c", "d"]); // every word, no <unk> needed
/// let top = VocabOptions { max_vocab: Some(3), ..VocabOptions::default() };
/// // Room for the most frequent word only, next to <eos> and <unk>.
/// assert_eq!(Vocab::build(&path, &top).unwrap().words(), ["a", "<eos>", "<unk>"]);
/// # std::fs::remove_file(&path).unwrap();
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VocabOptions {
    /// The largest vocabulary size, `<eos>` and `<unk>` included; `None` for no limit. At least 2.
    pub max_vocab: Option<usize>,
    /// Words seen fewer times than this are dropped (mapped to `<unk>`); 0 and 1 keep everything.
    pub min_count: usize,
    /// Number the words by frequency, most frequent first (ties by first appearance), instead
    /// of by first appearance: what class-based and adaptive softmaxes need. `<unk>` counts
    /// the occurrences of every dropped word too.
    pub frequency_order: bool,
}

impl Default for VocabOptions {
    fn default() -> Self {
        Self {
            max_vocab: None,
            min_count: 1,
            frequency_order: false,
        }
    }
}

impl Vocab {
    /// Builds a vocabulary from the training text at `path`, keeping its frequent words.
    ///
    /// The text is tokenised as [`for_each_token`] does (whitespace-separated words, `<eos>` at
    /// the end of every line). Words seen at least `min_count` times are candidates; if
    /// `max_vocab` is set, only the most frequent candidates are kept so that the vocabulary,
    /// `<eos>` and `<unk>` included, has at most `max_vocab` words (among equal counts, the word
    /// that appears first wins). `<eos>` is always kept. `<unk>` is in the vocabulary whenever a
    /// word was dropped or the text itself contains `<unk>` (PTB does), so
    /// [`read_counting_unk`](super::corpus::read_counting_unk) can map dropped words to it.
    ///
    /// Ids follow the order of first appearance in the text among the kept words; `<unk>` sits
    /// where it first appears, or last if the text never contains it. With the default options
    /// the ids are exactly those of [`read_building_vocab`](super::corpus::read_building_vocab),
    /// the book's numbering. With `frequency_order` the kept words are numbered by count
    /// instead (see [`VocabOptions::frequency_order`]).
    ///
    /// ```
    /// use rnnlm::{Vocab, VocabOptions};
    /// let path = std::env::temp_dir().join(format!("rnnlm-doc-vocab-f-{}.txt", std::process::id()));
    /// std::fs::write(&path, "a b a\nc a b\nd\n").unwrap();
    /// let opts = VocabOptions { frequency_order: true, ..VocabOptions::default() };
    /// // a: 3, <eos>: 3 (a first), b: 2, then c and d once each, in order of appearance.
    /// assert_eq!(Vocab::build(&path, &opts).unwrap().words(), ["a", "<eos>", "b", "c", "d"]);
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be read, [`Error::Parse`] if a line is not UTF-8,
    /// [`Error::Invalid`] if `max_vocab < 2` (no room for `<eos>` and `<unk>`) or if the text
    /// holds no words (empty or blank lines only; the message names the file).
    ///
    /// ```
    /// use rnnlm::{Vocab, VocabOptions};
    /// let path = std::env::temp_dir().join(format!("rnnlm-doc-vocab-{}.txt", std::process::id()));
    /// std::fs::write(&path, "a b a\nc a b\nd\n").unwrap();
    /// let v = Vocab::build(&path, &VocabOptions { min_count: 2, ..VocabOptions::default() }).unwrap();
    /// // a, b and <eos> occur twice or more; c and d are dropped, so <unk> joins.
    /// assert_eq!(v.words(), ["a", "b", "<eos>", "<unk>"]);
    /// let (ids, unk) = rnnlm::data::corpus::read_counting_unk(&path, &v).unwrap();
    /// assert_eq!((ids.len(), unk), (10, 2));
    /// # std::fs::remove_file(&path).unwrap();
    /// ```
    pub fn build(path: &Path, opts: &VocabOptions) -> Result<Vocab> {
        check_max_vocab(opts)?;
        // Count, remembering the order of first appearance.
        let mut stats: HashMap<String, usize> = HashMap::new();
        let mut order: Vec<String> = Vec::new();
        let mut counts: Vec<u64> = Vec::new();
        for_each_token(path, |w, _| {
            if let Some(&i) = stats.get(w) {
                counts[i] += 1;
            } else {
                stats.insert(w.to_owned(), order.len());
                order.push(w.to_owned());
                counts.push(1);
            }
            Ok(())
        })?;
        let order: Vec<&str> = order.iter().map(String::as_str).collect();
        Vocab::from_words(choose_words(path, &order, &counts, opts)?)
    }
}

/// [`Error::Invalid`] if `opts.max_vocab` leaves no room for `<eos>` and `<unk>`.
pub(crate) fn check_max_vocab(opts: &VocabOptions) -> Result<()> {
    match opts.max_vocab {
        Some(m) if m < 2 => Err(Error::invalid(
            "max_vocab",
            format!("{m} is too small: the vocabulary needs room for {EOS} and {UNK}"),
        )),
        _ => Ok(()),
    }
}

/// The words a vocabulary built from a text keeps, in id order, given the text's distinct
/// tokens in order of first appearance (`order`, `<eos>` among them) and their counts: the
/// rule of [`Vocab::build`], which `rnnlm prepare` shares (see
/// [`prepare`](super::prepare)). `path` names the text in errors.
pub(crate) fn choose_words(
    path: &Path,
    order: &[&str],
    counts: &[u64],
    opts: &VocabOptions,
) -> Result<Vec<String>> {
    check_max_vocab(opts)?;
    if order.iter().all(|&w| w == EOS) {
        return Err(Error::invalid(
            "training corpus",
            format!("{} contains no words", path.display()),
        ));
    }

    // `<eos>` always; `<unk>` always when the text has it.
    let unk_in_text = order.contains(&UNK);
    let forced = 1 + usize::from(unk_in_text);
    let min_count = opts.min_count as u64;
    // Indices into `order`, so also ranks of first appearance.
    let mut candidates: Vec<usize> = (0..order.len())
        .filter(|&i| order[i] != EOS && order[i] != UNK && counts[i] >= min_count)
        .collect();
    let mut dropped = candidates.len() + forced < order.len();

    if let Some(m) = opts.max_vocab {
        if candidates.len() + forced > m {
            dropped = true;
        }
        // Room left for ordinary words once `<eos>` and `<unk>` (if it will be needed) are in.
        let reserved = forced + usize::from(dropped && !unk_in_text);
        let room = m - reserved; // m >= 2 >= reserved
        if candidates.len() > room {
            dropped = true;
            // Most frequent first; ties by first appearance (a stable sort keeps that order).
            candidates.sort_by(|&a, &b| counts[b].cmp(&counts[a]));
            candidates.truncate(room);
            candidates.sort_unstable();
        }
    }

    // Kept words in order of first appearance; `<unk>` where it appears, else last.
    let mut kept = vec![false; order.len()];
    for &i in &candidates {
        kept[i] = true;
    }
    let mut words: Vec<usize> = (0..order.len())
        .filter(|&i| kept[i] || order[i] == EOS || order[i] == UNK)
        .collect();
    // `order.len()` stands for an `<unk>` the text never has.
    let added_unk = dropped && !unk_in_text;
    if added_unk {
        words.push(order.len());
    }
    if opts.frequency_order {
        // <unk> stands for itself and for every dropped word.
        let unk: u64 = (0..order.len())
            .filter(|&i| !(kept[i] || order[i] == EOS) || order[i] == UNK)
            .map(|i| counts[i])
            .sum();
        let count = |i: usize| {
            if i == order.len() || order[i] == UNK {
                unk
            } else {
                counts[i]
            }
        };
        // A stable sort: equal counts keep the order of first appearance (<unk>, when
        // the text never has it, last among its equals).
        words.sort_by_key(|&i| std::cmp::Reverse(count(i)));
    }
    Ok(words
        .into_iter()
        .map(|i| order.get(i).copied().unwrap_or(UNK).to_owned())
        .collect())
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::data::corpus::Ptb;
    use crate::data::corpus::{read_building_vocab, read_counting_unk};

    /// A temporary text file, removed on drop.
    struct TempText(PathBuf);

    impl TempText {
        fn new(tag: &str, text: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "rnnlm-vocab-build-{tag}-{}.txt",
                std::process::id()
            ));
            std::fs::write(&p, text).unwrap();
            Self(p)
        }
    }

    impl Drop for TempText {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn words(v: &Vocab) -> Vec<&str> {
        v.words().iter().map(String::as_str).collect()
    }

    fn opts(max_vocab: Option<usize>, min_count: usize) -> VocabOptions {
        VocabOptions {
            max_vocab,
            min_count,
            ..VocabOptions::default()
        }
    }

    #[test]
    fn default_options_keep_everything_in_first_appearance_order() {
        let f = TempText::new("all", "b a b\nc a\n\nb\n");
        let v = Vocab::build(&f.0, &VocabOptions::default()).unwrap();
        assert_eq!(words(&v), ["b", "a", "<eos>", "c"]);
        assert_eq!(v.unk_id(), None, "nothing dropped, no <unk> in text");
        assert_eq!(VocabOptions::default(), opts(None, 1));
        // min_count 0 behaves as 1.
        assert_eq!(Vocab::build(&f.0, &opts(None, 0)).unwrap(), v);
    }

    #[test]
    fn min_count_drops_rare_words_and_adds_unk() {
        // counts: b 3, a 2, <eos> 4, c 1, d 1
        let f = TempText::new("min", "b a b\nc a\nd\nb\n");
        let v = Vocab::build(&f.0, &opts(None, 2)).unwrap();
        assert_eq!(words(&v), ["b", "a", "<eos>", "<unk>"]);
        // <eos> is kept even when rarer than min_count.
        let v = Vocab::build(&f.0, &opts(None, 5)).unwrap();
        assert_eq!(words(&v), ["<eos>", "<unk>"]);

        let (ids, unk) =
            read_counting_unk(&f.0, &Vocab::build(&f.0, &opts(None, 2)).unwrap()).unwrap();
        assert_eq!(unk, 2, "c and d");
        assert_eq!(ids, [0, 1, 0, 2, 3, 1, 2, 3, 2, 0, 2]);
    }

    #[test]
    fn max_vocab_keeps_the_most_frequent_with_ties_by_first_appearance() {
        // counts: x 1, y 2, z 2, w 2, <eos> 3, v 3
        let f = TempText::new("max", "x y z w\nv y v\nz w v\n");
        // 5 = <eos> + <unk> + 3 words: v (3), then y, z (2, first to appear among y, z, w).
        let v = Vocab::build(&f.0, &opts(Some(5), 1)).unwrap();
        assert_eq!(words(&v), ["y", "z", "<eos>", "v", "<unk>"]);
        // Smallest: <eos> and <unk> only.
        let v = Vocab::build(&f.0, &opts(Some(2), 1)).unwrap();
        assert_eq!(words(&v), ["<eos>", "<unk>"]);
        // A limit that fits everything adds no <unk>.
        let all = Vocab::build(&f.0, &VocabOptions::default()).unwrap();
        assert_eq!(all.len(), 6);
        assert_eq!(Vocab::build(&f.0, &opts(Some(6), 1)).unwrap(), all);
        assert_eq!(Vocab::build(&f.0, &opts(Some(100), 1)).unwrap(), all);
        // One less: <unk> takes a slot, so two words go (x, then w: last of the tied ones).
        let v = Vocab::build(&f.0, &opts(Some(5), 1)).unwrap();
        assert_eq!(v.len(), 5);
        // min_count and max_vocab together: min_count 2 drops x; 4 keeps v and y.
        let v = Vocab::build(&f.0, &opts(Some(4), 2)).unwrap();
        assert_eq!(words(&v), ["y", "<eos>", "v", "<unk>"]);

        let (ids, unk) =
            read_counting_unk(&f.0, &Vocab::build(&f.0, &opts(Some(5), 1)).unwrap()).unwrap();
        assert_eq!(unk, 3, "x and twice w");
        assert_eq!(ids.len(), 13);
        assert_eq!(&ids[..5], [4, 0, 1, 4, 2]);
    }

    #[test]
    fn unk_in_the_text_keeps_its_place_and_is_not_duplicated() {
        // counts: a 1, <unk> 3, b 2, <eos> 3
        let f = TempText::new("unk", "a <unk> b\n<unk> b\n<unk>\n");
        let v = Vocab::build(&f.0, &VocabOptions::default()).unwrap();
        assert_eq!(words(&v), ["a", "<unk>", "b", "<eos>"]);
        let v = Vocab::build(&f.0, &opts(None, 2)).unwrap();
        assert_eq!(words(&v), ["<unk>", "b", "<eos>"]);
        // <unk> from the text counts in max_vocab: 3 = <eos>, <unk>, b.
        let v = Vocab::build(&f.0, &opts(Some(3), 1)).unwrap();
        assert_eq!(words(&v), ["<unk>", "b", "<eos>"]);
        let v = Vocab::build(&f.0, &opts(Some(2), 1)).unwrap();
        assert_eq!(words(&v), ["<unk>", "<eos>"]);
        let (_, unk) = read_counting_unk(&f.0, &v).unwrap();
        assert_eq!(
            unk, 3,
            "a and twice b; the text's own <unk> are not counted"
        );
    }

    #[test]
    fn ptb_like_text_without_limits_matches_read_building_vocab() {
        let text = " aer banknote berlitz calloway \n pierre <unk> N years old will join the \
                    board as a nonexecutive director nov. N \n mr. <unk> is chairman of <unk> \
                    n.v. the dutch publishing group \n rudolph <unk> N years old and former \
                    chairman of consolidated gold fields plc was named a director of this \
                    british industrial conglomerate \n";
        let f = TempText::new("ptb-like", text);
        let built = Vocab::build(&f.0, &VocabOptions::default()).unwrap();
        let mut book = Vocab::new();
        let book_ids = read_building_vocab(&f.0, &mut book).unwrap();
        assert_eq!(built, book);
        let (ids, unk) = read_counting_unk(&f.0, &built).unwrap();
        assert_eq!((&ids, unk), (&book_ids, 0));

        // With min_count 2 the rare words go to the text's own <unk>, at its own id.
        let small = Vocab::build(&f.0, &opts(None, 2)).unwrap();
        assert_eq!(
            words(&small),
            ["<eos>", "<unk>", "N", "years", "old", "the", "a", "director", "chairman", "of"]
        );
        let (ids, unk) = read_counting_unk(&f.0, &small).unwrap();
        let total_rare = book_ids
            .iter()
            .filter(|&&id| small.id(book.word(id).unwrap()).is_none())
            .count();
        assert_eq!(unk, total_rare);
        assert!(unk > 20);
        assert_eq!(ids.len(), book_ids.len());
    }

    #[test]
    fn errors_are_clear() {
        let f = TempText::new("err", "a b\n");
        let e = Vocab::build(&f.0, &opts(Some(1), 1)).unwrap_err();
        assert!(matches!(e, Error::Invalid { .. }), "{e}");
        assert!(e.to_string().contains("max_vocab"), "{e}");

        for (tag, text) in [("empty", ""), ("blank", "\n  \n\t\n")] {
            let f = TempText::new(tag, text);
            let e = Vocab::build(&f.0, &VocabOptions::default()).unwrap_err();
            assert!(matches!(e, Error::Invalid { .. }), "{e}");
            assert!(e.to_string().contains(&f.0.display().to_string()), "{e}");
        }

        let missing = std::env::temp_dir().join("rnnlm-vocab-build-no-such-file.txt");
        let e = Vocab::build(&missing, &VocabOptions::default()).unwrap_err();
        assert!(matches!(e, Error::Io { .. }), "{e}");

        let p =
            std::env::temp_dir().join(format!("rnnlm-vocab-build-utf8-{}.txt", std::process::id()));
        std::fs::write(&p, b"ok\nbad \xff word\n").unwrap();
        let e = Vocab::build(&p, &VocabOptions::default()).unwrap_err();
        let _ = std::fs::remove_file(&p);
        assert!(matches!(e, Error::Parse { line: Some(2), .. }), "{e}");
    }

    #[test]
    fn ptb_train_without_limits_gives_the_books_vocabulary() {
        let dir = match std::env::var_os("RNNLM_PTB_DIR") {
            Some(d) if !d.is_empty() => PathBuf::from(d),
            _ => {
                eprintln!(
                    "SKIPPED: RNNLM_PTB_DIR is not set (point it at ptb.{{train,valid,test}}.txt)"
                );
                return;
            }
        };
        let built = Vocab::build(&dir.join("ptb.train.txt"), &VocabOptions::default()).unwrap();
        let ptb = Ptb::load(&dir).unwrap();
        assert_eq!(built.len(), 10_000);
        assert_eq!(built, ptb.vocab);
        // PTB already holds <unk>: a 10,000 limit changes nothing, a smaller one keeps <unk>'s id.
        let same = Vocab::build(&dir.join("ptb.train.txt"), &opts(Some(10_000), 1)).unwrap();
        assert_eq!(same, ptb.vocab);
        let small = Vocab::build(&dir.join("ptb.train.txt"), &opts(Some(1000), 1)).unwrap();
        assert_eq!(small.len(), 1000);
        let (ids, unk) = read_counting_unk(&dir.join("ptb.valid.txt"), &small).unwrap();
        assert_eq!(ids.len(), 73_760);
        assert!(unk > 0);
    }
}
