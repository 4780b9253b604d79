//! OpenAI wire types: request bodies as clients send them, response bodies and stream chunks as
//! OpenAI writes them, and the validation that turns a request into an engine request.

pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod models;
pub mod shared;
