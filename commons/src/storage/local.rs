//! Local-disk blob store (embedded default). Implemented in a follow-up step.
