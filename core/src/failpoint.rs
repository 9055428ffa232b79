//! Failpoints: named places between two durable steps where a test makes the process die, to
//! prove that what follows a crash there is safe. `LFUSYS_FAILPOINTS` lists the armed names,
//! separated by commas; a process that reaches an armed one aborts at once, as a SIGKILL would
//! leave it (no destructor runs, nothing is flushed). Unset, as in production, a failpoint costs
//! a look at an empty list read once.
//!
//! The names are the constants below, one per place, so that a test and the code agree.

use std::sync::OnceLock;

use crate::env::Env;

/// Sessions: the chunk commit that completed the set is stored (the upload is assembling, its
/// job in the outbox) and the job is not yet sent.
pub const AFTER_COMPLETING_COMMIT: &str = "sessions.after-completing-commit";
/// Sessions: the assembly job is sent and the upload is not yet marked as sent in the outbox.
pub const AFTER_JOB_SENT: &str = "sessions.after-job-sent";

/// Sessions: an upload is cancelled, expired or failed, or its File deleted (it is in the
/// outbox of releases), and its storage is not released yet.
pub const BEFORE_STORAGE_RELEASE: &str = "sessions.before-storage-release";
/// Upload workers: an assembler committed the blob and has not yet asked to publish the File.
pub const AFTER_BLOB_COMMIT: &str = "uploads.after-blob-commit";

/// Every failpoint, for the tests that go through them all.
pub const ALL: &[&str] = &[
    AFTER_COMPLETING_COMMIT,
    AFTER_JOB_SENT,
    BEFORE_STORAGE_RELEASE,
    AFTER_BLOB_COMMIT,
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
