//! Corpora, vocabularies, the book's batching, the bounded line reader, and the PTB downloader.

pub mod batcher;
pub mod corpus;
pub mod download;
pub mod lines;
pub mod vocab;
pub mod vocab_build;
