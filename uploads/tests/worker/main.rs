//! The upload workers' tests: chunk ingest and assembly over real listeners, with a real
//! sessions service, over embedded stores. One test binary, so the suite links once.

mod assembly;
mod chunk_statuses;
mod common;
mod concurrency;
