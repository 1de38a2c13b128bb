//! The book's time layers as plain functions over caller-owned buffers (outputs first, then
//! inputs, then dimensions), in the style of llm.c. The model composes them; tests call them
//! one by one for gradient checks.

pub mod embedding;
pub mod gru;
pub mod lstm;
pub mod rnn;
pub mod softmax_loss;
