//! Failpoints: named places between two durable steps where a test makes the process die, to
//! prove that what follows a crash there is safe. `LFUSYS_FAILPOINTS` lists the armed names,
//! separated by commas; a process that reaches an armed one aborts at once, as a SIGKILL would
//! leave it (no destructor runs, nothing is flushed). Unset, as in production, a failpoint costs
//! a look at an empty list read once.
//!
//! The names are the constants below, one per place, so that a test and the code agree.

use std::sync::OnceLock;

use crate::env::Env;

/// Sessions: a new upload's blob storage is prepared (an S3 multipart upload, a part file) and
/// the upload is not recorded yet.
pub const AFTER_STORAGE_PREPARED: &str = "sessions.after-storage-prepared";
/// Upload workers: a chunk's bytes are stored and the chunk is not yet recorded.
pub const AFTER_CHUNK_STORED: &str = "uploads.after-chunk-stored";
/// Sessions: the chunk commit that completed the set is stored (the upload is assembling, its
/// job in the outbox) and the job is not yet sent.
pub const AFTER_COMPLETING_COMMIT: &str = "sessions.after-completing-commit";
/// Sessions: the assembly job is sent and the upload is not yet marked as sent in the outbox.
pub const AFTER_JOB_SENT: &str = "sessions.after-job-sent";
/// Upload workers: an assembler committed the blob and has not yet asked to publish the File.
pub const AFTER_BLOB_COMMIT: &str = "uploads.after-blob-commit";
/// Upload workers: the File is published and the assembly job not yet acknowledged.
pub const AFTER_FILE_PUBLISHED: &str = "uploads.after-file-published";
/// Sessions: an upload is cancelled, expired or failed, or its File deleted (it is in the
/// outbox of releases), and its storage is not released yet.
pub const BEFORE_STORAGE_RELEASE: &str = "sessions.before-storage-release";
/// Sessions: an upload's storage is released and the upload is still in the outbox of
/// releases.
pub const AFTER_STORAGE_RELEASE: &str = "sessions.after-storage-release";

/// Upload workers: not a crash but a fault — chunks 0 and 1 of an upload (of more than two
/// chunks) are each stored at the other's place, as a store or assembly bug would misplace
/// them, for the tests that show that the whole-file check catches it before publishing.
pub const SWAP_FIRST_CHUNKS: &str = "uploads.swap-first-chunks";

/// Every crash failpoint, in the order an upload reaches them, for the tests that go through
/// them all.
pub const ALL: &[&str] = &[
    AFTER_STORAGE_PREPARED,
    AFTER_CHUNK_STORED,
    AFTER_COMPLETING_COMMIT,
    AFTER_JOB_SENT,
    AFTER_BLOB_COMMIT,
    AFTER_FILE_PUBLISHED,
    BEFORE_STORAGE_RELEASE,
    AFTER_STORAGE_RELEASE,
];

static ARMED: OnceLock<Vec<String>> = OnceLock::new();

/// The armed names of `env`'s `LFUSYS_FAILPOINTS`.
pub fn armed_in(env: &Env<'_>) -> Vec<String> {
    env.get("LFUSYS_FAILPOINTS")
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|n| !n.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The failpoints armed in this process (a service warns at start when there are any).
pub fn armed() -> &'static [String] {
    ARMED.get_or_init(|| armed_in(&Env::process()))
}

/// Whether `name` is armed (for the fault failpoints, which change behaviour instead of
/// aborting).
pub fn is_armed(name: &str) -> bool {
    armed().iter().any(|n| n == name)
}

/// Aborts the process if `name` is armed.
pub fn hit(name: &str) {
    if armed().iter().any(|n| n == name) {
        eprintln!("failpoint {name}: aborting the process");
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_read_from_a_comma_separated_list() {
        let env = Env::from_pairs(&[("LFUSYS_FAILPOINTS", " a, b ,,c ")]);
        assert_eq!(armed_in(&env), ["a", "b", "c"]);
        assert!(armed_in(&Env::from_pairs(&[])).is_empty());
    }

    #[test]
    fn an_unarmed_failpoint_returns() {
        // The test process has no LFUSYS_FAILPOINTS: every failpoint passes.
        for name in ALL {
            hit(name);
        }
    }
}
