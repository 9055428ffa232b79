//! SQLite metadata, auth and queue stores (embedded default). Implemented in a follow-up step.
