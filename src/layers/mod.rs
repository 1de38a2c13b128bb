//! The book's non-recurrent time layers as plain functions over caller-owned buffers (outputs
//! first, then inputs, then dimensions), in the style of llm.c. The recurrent layers are the
//! cells (`src/cells/`); the output layer is a head (`src/heads/`).

pub mod embedding;
pub mod softmax_loss;
