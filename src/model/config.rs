//! Model hyper-parameters.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The shape of a `SimpleRnnlm`: vocabulary `V`, word-vector size `D`, hidden size `H`.
///
/// Serialised into checkpoints as the `config` metadata entry:
/// `{"cell":"rnn","vocab_size":V,"wordvec_size":D,"hidden_size":H}`.
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
    pub fn new(vocab_size: usize, wordvec_size: usize, hidden_size: usize) -> Result<Self> {
        let c = Self {
            vocab_size,
            wordvec_size,
            hidden_size,
        };
        c.validate()?;
        Ok(c)
    }

    /// # Errors
    /// If a size is zero, or the parameter count overflows.
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
