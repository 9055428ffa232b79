//! The gateway's tests: its HTTP API over a real listener, in front of a real sessions service,
//! over embedded stores. One test binary, so the suite links once.

mod auth;
mod common;
mod hostile;
mod uploads_files;
mod web_ops;
