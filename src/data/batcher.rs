//! The book's batching: `N` rows reading the corpus from evenly spaced offsets.

use super::ids::Tokens;
use crate::error::{Error, Result};

/// Training batches as in the book's `RnnlmTrainer.get_batch` / ch05 loop.
///
/// Inputs are `xs = corpus[..len-1]`, targets `ts = corpus[1..]`, `jump = len(xs) / N`; row
/// `i` at step `s` of a batch reads position `(i*jump + time_idx) % len(xs)`, and `time_idx`
/// advances by one per step, `T` per batch, across epochs.
#[derive(Clone, Debug)]
///
/// ```
/// let corpus: Vec<u32> = (0..=20).collect(); // xs = 0..20, ts = 1..=20
/// let mut b = rnnlm::BookBatches::new(&corpus, 2, 3).unwrap(); // jump = 20 / 2 = 10
/// let (mut xs, mut ts) = ([0; 6], [0; 6]);
/// b.next_batch(&mut xs, &mut ts);
/// assert_eq!(xs, [0, 1, 2, 10, 11, 12]);
/// assert_eq!(ts, [1, 2, 3, 11, 12, 13]);
/// assert_eq!(b.time_idx(), 3);
/// ```
pub struct BookBatches<'a> {
    corpus: Tokens<'a>,
    n: usize,
    t: usize,
    jump: usize,
    time_idx: usize,
}

impl<'a> BookBatches<'a> {
    /// Batches of `n` rows, `t` steps over `corpus` (a slice, a `Vec`, or the [`Tokens`] of a
    /// memory-mapped ids file, read in place).
    ///
    /// # Errors
    /// If the corpus has fewer than `n*t + 1` tokens (not one full batch per epoch).
    ///
    /// ```
    /// use rnnlm::BookBatches;
    /// let corpus: Vec<u32> = (0..7).collect();
    /// assert!(BookBatches::new(&corpus, 2, 3).is_ok()); // 2 * 3 + 1 tokens: one batch
    /// assert!(BookBatches::new(&corpus[..6], 2, 3).is_err());
    /// assert!(BookBatches::new(&corpus, 0, 3).is_err());
    /// ```
    pub fn new(corpus: impl Into<Tokens<'a>>, n: usize, t: usize) -> Result<Self> {
        let corpus = corpus.into();
        let data = corpus.len().saturating_sub(1);
        // Saturating: an N*T that overflows is a batch no corpus fills, not a panic.
        let nt = n.saturating_mul(t);
        if n == 0 || t == 0 || data < nt {
            return Err(Error::invalid(
                "corpus",
                format!(
                    "{} tokens cannot fill one batch of {n} x {t} (needs at least {})",
                    corpus.len(),
                    nt.saturating_add(1)
                ),
            ));
        }
        Ok(Self {
            corpus,
            n,
            t,
            jump: data / n,
            time_idx: 0,
        })
    }

    /// Batches per epoch: `len(xs) / (N*T)`, as the book's `max_iters`.
    ///
    /// ```
    /// let corpus: Vec<u32> = (0..=20).collect(); // 20 inputs
    /// let b = rnnlm::BookBatches::new(&corpus, 2, 3).unwrap();
    /// assert_eq!(b.iters_per_epoch(), 20 / (2 * 3));
    /// ```
    pub fn iters_per_epoch(&self) -> usize {
        (self.corpus.len() - 1) / (self.n * self.t)
    }

    /// The running step counter.
    ///
    /// ```
    /// let corpus: Vec<u32> = (0..=20).collect();
    /// let mut b = rnnlm::BookBatches::new(&corpus, 2, 3).unwrap();
    /// assert_eq!(b.time_idx(), 0);
    /// b.next_batch(&mut [0; 6], &mut [0; 6]);
    /// b.next_batch(&mut [0; 6], &mut [0; 6]);
    /// assert_eq!(b.time_idx(), 2 * 3); // T per batch
    /// ```
    pub fn time_idx(&self) -> usize {
        self.time_idx
    }

    /// Sets the running step counter (to resume).
    ///
    /// ```
    /// let corpus: Vec<u32> = (0..=20).collect();
    /// let mut a = rnnlm::BookBatches::new(&corpus, 2, 3).unwrap();
    /// let mut b = a.clone();
    /// let (mut xa, mut xb, mut ts) = ([0; 6], [0; 6], [0; 6]);
    /// a.next_batch(&mut xa, &mut ts);
    /// a.next_batch(&mut xa, &mut ts); // a's second batch
    /// b.set_time_idx(3); // skip b's first batch
    /// b.next_batch(&mut xb, &mut ts);
    /// assert_eq!(xa, xb);
    /// ```
    pub fn set_time_idx(&mut self, time_idx: usize) {
        self.time_idx = time_idx;
    }

    /// Fills the next batch `xs [N,T]`, `ts [N,T]` and advances `time_idx` by `T`.
    ///
    /// **Panics** if the buffers are not `N*T` long.
    ///
    /// ```
    /// let corpus: Vec<u32> = (0..=20).collect(); // xs = 0..20, jump = 10
    /// let mut b = rnnlm::BookBatches::new(&corpus, 2, 3).unwrap();
    /// let (mut xs, mut ts) = ([0; 6], [0; 6]);
    /// for _ in 0..4 {
    ///     b.next_batch(&mut xs, &mut ts);
    /// }
    /// // Batch 4 reads steps 9..12: row 1 (offset 10) wraps around the 20 inputs.
    /// assert_eq!(xs, [9, 10, 11, 19, 0, 1]);
    /// assert_eq!(ts, [10, 11, 12, 20, 1, 2]);
    /// ```
    pub fn next_batch(&mut self, xs: &mut [u32], ts: &mut [i32]) {
        self.next_rows(0..self.n, xs, ts);
    }

    /// Fills rows `rows` of the next batch (`xs`, `ts` of `rows.len() * T`: row `i` of the
    /// `N` at `xs[(i - rows.start) * T..]`) and advances `time_idx` by `T`: one shard of a
    /// data-parallel step, whose rows keep their offsets in the whole batch, so the shards
    /// of all ranks together are [`BookBatches::next_batch`]. A shard reads only its rows'
    /// parts of the corpus.
    ///
    /// **Panics** if `rows` is not within `0..N` or the buffers are not `rows.len() * T`
    /// long.
    ///
    /// ```
    /// let corpus: Vec<u32> = (0..=20).collect(); // xs = 0..20, jump = 10
    /// let mut whole = rnnlm::BookBatches::new(&corpus, 2, 3).unwrap();
    /// let mut shard = whole.clone();
    /// let (mut xs, mut ts) = ([0; 6], [0; 6]);
    /// whole.next_batch(&mut xs, &mut ts);
    /// let (mut x1, mut t1) = ([0; 3], [0; 3]);
    /// shard.next_rows(1..2, &mut x1, &mut t1); // row 1 alone
    /// assert_eq!((&xs[3..], &ts[3..]), (&x1[..], &t1[..]));
    /// assert_eq!(whole.time_idx(), shard.time_idx());
    /// ```
    pub fn next_rows(&mut self, rows: std::ops::Range<usize>, xs: &mut [u32], ts: &mut [i32]) {
        let t = self.t;
        assert!(
            rows.start <= rows.end && rows.end <= self.n,
            "next_rows: rows {rows:?} outside 0..{}",
            self.n
        );
        let m = rows.len();
        assert_eq!(xs.len(), m * t);
        assert_eq!(ts.len(), m * t);
        let data = self.corpus.len() - 1;
        for s in 0..t {
            for (r, i) in rows.clone().enumerate() {
                let pos = (i * self.jump + self.time_idx) % data;
                xs[r * t + s] = self.corpus[pos];
                ts[r * t + s] = self.corpus[pos + 1] as i32;
            }
            self.time_idx += 1;
        }
        // The rows moved over their ids: a mapped corpus gives the pages behind back.
        self.corpus.consumed(4 * m * t);
    }
}

/// Number of batches the book's `eval_perplexity` runs: `(len - 1) / (N*T)`; the tail that
/// does not fill a batch is dropped.
///
/// ```
/// use rnnlm::data::batcher::eval_iters;
/// assert_eq!(eval_iters(400, 10, 35), 1); // 399 targets: one batch of 350, 49 dropped
/// assert_eq!(eval_iters(351, 10, 35), 1);
/// assert_eq!(eval_iters(350, 10, 35), 0);
/// ```
pub fn eval_iters(corpus_len: usize, n: usize, t: usize) -> usize {
    corpus_len.saturating_sub(1) / n.saturating_mul(t).max(1)
}

/// Batch `iter` of the book's `eval_perplexity`: `jump = (len-1)/N`, row `i` starts at
/// `iter*T + i*jump`; inputs `corpus[(off+s) % len]`, targets `corpus[(off+s+1) % len]`.
///
/// **Panics** if the buffers are not `N*T` long or the corpus has fewer than 2 tokens.
///
/// ```
/// use rnnlm::data::batcher::eval_batch;
/// let corpus: Vec<u32> = (0..23).collect(); // jump = 22 / 2 = 11
/// let (mut xs, mut ts) = ([0; 10], [0; 10]);
/// eval_batch(&corpus, 2, 5, 1, &mut xs, &mut ts); // batch 1: rows start at 5 and 16
/// assert_eq!(xs, [5, 6, 7, 8, 9, 16, 17, 18, 19, 20]);
/// assert_eq!(ts, [6, 7, 8, 9, 10, 17, 18, 19, 20, 21]);
/// ```
pub fn eval_batch(corpus: &[u32], n: usize, t: usize, iter: usize, xs: &mut [u32], ts: &mut [i32]) {
    assert!(corpus.len() >= 2);
    assert_eq!(xs.len(), n * t);
    assert_eq!(ts.len(), n * t);
    let len = corpus.len();
    let jump = (len - 1) / n;
    for i in 0..n {
        let off = iter * t + i * jump;
        for s in 0..t {
            xs[i * t + s] = corpus[(off + s) % len];
            ts[i * t + s] = corpus[(off + s + 1) % len] as i32;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_offsets_and_wraparound() {
        // corpus 0..=20: xs = 0..20 (len 20), N=2 -> jump 10; T=3.
        let corpus: Vec<u32> = (0..=20).collect();
        let mut b = BookBatches::new(&corpus, 2, 3).unwrap();
        assert_eq!(b.iters_per_epoch(), 3);
        let (mut xs, mut ts) = (vec![0; 6], vec![0; 6]);
        b.next_batch(&mut xs, &mut ts);
        assert_eq!(xs, [0, 1, 2, 10, 11, 12]);
        assert_eq!(ts, [1, 2, 3, 11, 12, 13]);
        for _ in 0..2 {
            b.next_batch(&mut xs, &mut ts);
        }
        // time_idx = 6..9: row 1 reads 16,17,18; row 0 reads 6,7,8.
        assert_eq!(xs, [6, 7, 8, 16, 17, 18]);
        b.next_batch(&mut xs, &mut ts);
        // time_idx = 9..12: row 1 wraps: (10+10)%20 = 0, 1.
        assert_eq!(xs, [9, 10, 11, 19, 0, 1]);
        assert_eq!(ts, [10, 11, 12, 20, 1, 2]);
        assert_eq!(b.time_idx(), 12);
    }

    #[test]
    fn eval_batches_follow_the_book() {
        let corpus: Vec<u32> = (0..23).collect(); // len 23, jump = 22/2 = 11
        assert_eq!(eval_iters(corpus.len(), 2, 5), 2);
        let (mut xs, mut ts) = (vec![0; 10], vec![0; 10]);
        eval_batch(&corpus, 2, 5, 1, &mut xs, &mut ts);
        assert_eq!(xs, [5, 6, 7, 8, 9, 16, 17, 18, 19, 20]);
        assert_eq!(ts, [6, 7, 8, 9, 10, 17, 18, 19, 20, 21]);
    }

    #[test]
    fn too_small_corpus_is_an_error() {
        assert!(BookBatches::new(&[1, 2, 3], 2, 2).is_err());
        assert!(BookBatches::new(&[1, 2, 3, 4, 5], 2, 2).is_ok());
    }
}
