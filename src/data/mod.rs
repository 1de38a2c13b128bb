//! Corpora, vocabularies, the book's batching, and the PTB downloader.

pub mod batcher;
pub mod corpus;
pub mod download;
pub mod vocab;
pub mod vocab_build;
