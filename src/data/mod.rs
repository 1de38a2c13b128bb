//! Corpora, vocabularies, the book's batching, the bounded line reader, the PTB downloader,
//! and big corpora: `rnnlm prepare` ([`prepare`]) and its memory-mapped ids files ([`ids`]).

pub mod batcher;
pub mod corpus;
pub mod download;
pub mod ids;
pub mod lines;
pub mod prepare;
pub mod vocab;
pub mod vocab_build;
