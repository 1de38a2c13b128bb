//! Model hyper-parameters.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shape of a `SimpleRnnlm`: vocabulary `V`, word-vector size `D`, hidden size `H`.
///
/// Checkpoints store it, with the cell type, as the `config` metadata entry
/// `{"cell":"rnn","vocab_size":V,"wordvec_size":D,"hidden_size":H}` (see [`crate::checkpoint`]).
///
/// ```
/// use rnnlm::{Config, Params};
/// let cfg = Config::new(10_000, 100, 100).unwrap(); // PTB's 10k words
/// assert_eq!((cfg.vocab_size, cfg.wordvec_size, cfg.hidden_size), (10_000, 100, 100));
/// let weights: usize = Params::shapes(&cfg).iter().map(|s| s.iter().product::<usize>()).sum();
/// assert_eq!(weights, 2 * 10_000 * 100 + 2 * 100 * 100 + 100 + 10_000);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Config {
    /// `V`: number of words.
    pub vocab_size: usize,
    /// `D`: embedding width.
    pub wordvec_size: usize,
    /// `H`: hidden-state width.
    pub hidden_size: usize,
}

impl Config {
    /// A configuration; see [`Config::validate`].
    ///
    /// ```
    /// use rnnlm::Config;
    /// assert!(Config::new(10, 4, 6).is_ok());
    /// assert!(Config::new(10, 0, 6).is_err()); // every size must be at least 1
    /// assert!(Config::new(1 << 25, 4, 6).is_err()); // and at most 2^24
    /// ```
    pub fn new(vocab_size: usize, wordvec_size: usize, hidden_size: usize) -> Result<Self> {
        let c = Self {
            vocab_size,
            wordvec_size,
            hidden_size,
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks that every size is at least 1 and at most 2^24.
    ///
    /// # Errors
    /// If a size is zero or larger than 2^24.
    ///
    /// ```
    /// let mut cfg = rnnlm::Config::new(10, 4, 6).unwrap();
    /// assert!(cfg.validate().is_ok());
    /// cfg.hidden_size = 0; // the fields are public: check after editing them
    /// assert!(cfg.validate().is_err());
    /// ```
    pub fn validate(&self) -> Result<()> {
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("wordvec_size", self.wordvec_size),
            ("hidden_size", self.hidden_size),
        ] {
            if v == 0 {
                return Err(Error::invalid(name, "must be at least 1"));
            }
            if v > (1 << 24) {
                return Err(Error::invalid(name, format!("{v} is larger than 2^24")));
            }
        }
        Ok(())
    }
}
