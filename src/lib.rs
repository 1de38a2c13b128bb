//! # rnnlm
//!
//! Fast f32 CPU recurrent-neural-network language models: the `SimpleRnnlm` of *Deep Learning
//! from Scratch 2*, chapter 5 (`TimeEmbedding -> TimeRNN (tanh) -> TimeAffine ->
//! TimeSoftmaxWithLoss`, trained with SGD and truncated BPTT), with the book's semantics
//! exactly and a fast engine underneath; and the models people use on the same engine: the
//! book's ch06 LSTM, PyTorch's GRU, stacked layers, dropout and weight tying
//! ([`model::config`]), with PyTorch checkpoints in and out ([`convert`]).
//!
//! Tensors are row-major: activations `[N,T,D]` / `[N,T,H]`, logits `[N*T,V]`, weights as the
//! book (`x W`, so `Wx` is `[D,G*H]` for a cell of `G` gates).
//!
//! ```
//! use rnnlm::{Config, SimpleRnnlm, Sgd, BookBatches};
//! let corpus: Vec<u32> = (0..200).map(|i| (i * 7 % 13) as u32).collect();
//! let cfg = Config::new(13, 16, 16).unwrap();
//! let (n, t) = (4, 5);
//! let mut model = SimpleRnnlm::new(cfg, n, t, 1).unwrap();
//! let mut batches = BookBatches::new(&corpus, n, t).unwrap();
//! let (mut xs, mut ts) = (vec![0; n * t], vec![0; n * t]);
//! let sgd = Sgd::new(0.5);
//! let mut first = 0.0;
//! for step in 0..200 {
//!     batches.next_batch(&mut xs, &mut ts);
//!     let loss = model.forward(&xs, &ts).unwrap();
//!     if step == 0 { first = loss; }
//!     model.backward().unwrap();
//!     sgd.update(model.params_mut_and_grads());
//! }
//! let ppl = rnnlm::eval_perplexity(model.params(), &corpus, 2, 5).unwrap();
//! assert!(ppl.mean_loss < first as f64 / 2.0);
//! ```
//!
//! For inference (scoring, streaming steps over many streams, sampling text), wrap trained
//! parameters and their vocabulary in an [`Rnnlm`]; see the [`infer`] module.

#![warn(missing_docs)]
// `unsafe` lives only in `gemm/`, `kernels/` and the memory mappings of `data/ids.rs` and
// `data/prepare.rs`, every block with its invariant.
#![deny(unsafe_op_in_unsafe_fn, clippy::undocumented_unsafe_blocks)]

// The public API: what a user embeds.
pub mod bench;
pub mod checkpoint;
pub mod convert;
pub mod cpu;
pub mod data;
pub mod dist;
pub mod error;
pub mod eval;
pub mod infer;
pub mod model;
pub mod optim;
pub mod outputs;
pub mod report;
pub mod train;

// The engine: internal.
mod cells;
mod gemm;
mod heads;
mod kernels;
mod layers;
mod mem;
mod par;

/// Not API: entry points for the crate's own tests and benches (kernels, GEMM, layers). No
/// stability promise; may change in any release.
#[doc(hidden)]
pub mod internal {
    pub use crate::gemm::{
        gemm_packed_with, matmul, matmul_packed, pack, packed_len, scratch_len_for, sgemm_calls,
        Accum, MatMut, MatRef, Packed,
    };
    pub use crate::kernels::{softmax, tanh};
    pub use crate::layers::{embedding, softmax_loss};
    pub use crate::mem::{available_bytes, format_bytes};
}

pub use checkpoint::Checkpoint;
pub use data::batcher::BookBatches;
pub use data::corpus::Ptb;
pub use data::vocab::Vocab;
pub use data::vocab_build::VocabOptions;
pub use error::{Error, Result};
pub use eval::{eval_full, eval_perplexity, eval_torch, evaluate, Perplexity, Protocol};
pub use heads::class_starts_from_counts;
pub use infer::{Rnnlm, Sampling, Score, State};
pub use mem::{available_bytes, check_memory, format_bytes};
pub use model::config::{Config, Softmax};
pub use model::params::{Init, Params};
pub use model::simple::SimpleRnnlm;
pub use model::workspace::{Shard, Workspace};
pub use optim::Sgd;
