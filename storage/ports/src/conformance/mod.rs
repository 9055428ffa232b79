//! The conformance suite of the storage ports (cargo feature `conformance`): for each port one
//! set of cases, generic over the port's trait, that every implementation passes and answers
//! alike. They assert what the ports' documentation promises; what only one backend does (SQLite
//! receipts going stale, S3 part listing and trailing checksums, the SQS dead-letter queue, …)
//! is tested beside that adapter.
//!
//! A backend's test file implements the port's harness — it makes fresh, empty data for a
//! store and opens stores on it — and expands the cases with the port's macro:
//!
//! ```text
//! struct Sqlite;
//!
//! impl storage::conformance::MetadataHarness for Sqlite {
//!     type Store = SqliteMetadataStore;
//!     type Place = tempfile::TempDir;
//!     async fn place(&self) -> tempfile::TempDir {
//!         tempfile::tempdir().unwrap()
//!     }
//!     async fn open(&self, dir: &tempfile::TempDir) -> SqliteMetadataStore {
//!         SqliteMetadataStore::open(&dir.path().join("sessions.db")).unwrap()
//!     }
//! }
//!
//! storage::metadata_conformance!(Sqlite);
//! ```
//!
//! The macro defines a module named after the port (`metadata`, `auth`, `queue`, `blobs`) with
//! one `#[tokio::test]` per case, named as the case, that evaluates the harness expression
//! (inside that module, which sees the items of the one around it). The crate of the test needs
//! `tokio` (features `macros`, `rt-multi-thread`).
//!
//! Every `pub async fn` of a port's module is a case, and its macro lists them all (a unit test
//! of this crate checks that).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod auth;
pub mod blobs;
pub mod fixtures;
pub mod metadata;
pub mod queue;
pub mod scenarios;

pub use auth::AuthHarness;
pub use blobs::BlobHarness;
pub use metadata::MetadataHarness;
pub use queue::QueueHarness;

/// Expands the cases of one port: `[tests HARNESS]` into its test module, `[names]` into the
/// list of their names. Each case is `name` or `name(ARGUMENTS OF #[tokio::test])`.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_expand {
    ([tests $harness:expr] $port:ident; $($case:ident $(($($test_args:tt)*))?),* $(,)?) => {
        mod $port {
            #[allow(unused_imports)]
            use super::*;
            $(
                #[::tokio::test$(($($test_args)*))?]
                async fn $case() {
                    $crate::conformance::$port::$case(&$harness).await;
                }
            )*
        }
    };
    ([names] $port:ident; $($case:ident $(($($test_args:tt)*))?),* $(,)?) => {
        &[$(stringify!($case)),*]
    };
}

/// The cases of [`metadata`].
#[doc(hidden)]
#[macro_export]
macro_rules! __metadata_cases {
    ($($mode:tt)*) => {
        $crate::__conformance_expand! { [$($mode)*] metadata;
            uploads_round_trip_and_list,
            claims_lease_renew_and_expire,
            last_commit_completes_and_retries_stay_idempotent,
            completion_is_exactly_once_across_connections(flavor = "multi_thread", worker_threads = 4),
            the_outbox_holds_assembling_uploads_until_their_job_is_sent,
            the_outbox_of_releases_holds_what_is_to_be_released,
            transitions_are_conditional,
            expired_uploads_are_listed,
            publish_is_atomic_and_idempotent,
            files_paginate_newest_first,
            delete_chunks_drops_claims,
            chunks_are_read_one_by_one_with_their_sha256_chain,
            a_commit_racing_a_stored_chunk_of_another_crc_conflicts,
            declared_checksums_apply_once_while_uploading,
            a_deferred_length_is_declared_once_and_may_complete_the_set,
            the_concatenation_of_an_upload_round_trips,
            a_partial_upload_is_not_completed_by_its_chunks,
        }
    };
}

/// The cases of [`auth`].
#[doc(hidden)]
#[macro_export]
macro_rules! __auth_cases {
    ($($mode:tt)*) => {
        $crate::__conformance_expand! { [$($mode)*] auth;
            users_are_unique_by_email,
            refresh_tokens_rotate_and_reuse_revokes_the_family,
            expired_and_revoked_tokens_are_invalid,
        }
    };
}

/// The cases of [`queue`].
#[doc(hidden)]
#[macro_export]
macro_rules! __queue_cases {
    ($($mode:tt)*) => {
        $crate::__conformance_expand! { [$($mode)*] queue;
            fifo_delivery_and_ack,
            unacked_messages_are_redelivered_with_their_count,
            extended_visibility_holds_the_message,
            duplicates_within_the_window_are_dropped,
            long_poll_wakes_on_send_and_times_out,
        }
    };
}

/// The cases of [`blobs`].
#[doc(hidden)]
#[macro_export]
macro_rules! __blob_cases {
    ($($mode:tt)*) => {
        $crate::__conformance_expand! { [$($mode)*] blobs;
            chunks_in_any_order_assemble_to_the_file,
            rewriting_a_chunk_replaces_its_bytes,
            wrong_lengths_and_body_errors_are_refused,
            ranges_reads_and_deletes,
            abort_releases_storage,
            an_abort_without_the_handle_releases_what_was_begun,
            chunks_at_each_others_place_do_not_commit,
            a_wrong_whole_crc_commits_nothing,
            staged_pieces_wait_apart_until_their_chunk_is_whole,
        }
    };
}

/// One `#[tokio::test]` per case of [`metadata`], in a module `metadata`, on the
/// [`MetadataHarness`] the expression makes.
#[macro_export]
macro_rules! metadata_conformance {
    ($harness:expr $(,)?) => {
        $crate::__metadata_cases!(tests $harness);
    };
}

/// One `#[tokio::test]` per case of [`auth`], in a module `auth`, on the [`AuthHarness`] the
/// expression makes.
#[macro_export]
macro_rules! auth_conformance {
    ($harness:expr $(,)?) => {
        $crate::__auth_cases!(tests $harness);
    };
}

/// One `#[tokio::test]` per case of [`queue`], in a module `queue`, on the [`QueueHarness`] the
/// expression makes.
#[macro_export]
macro_rules! queue_conformance {
    ($harness:expr $(,)?) => {
        $crate::__queue_cases!(tests $harness);
    };
}

/// One `#[tokio::test]` per case of [`blobs`], in a module `blobs`, on the [`BlobHarness`] the
/// expression makes.
#[macro_export]
macro_rules! blob_conformance {
    ($harness:expr $(,)?) => {
        $crate::__blob_cases!(tests $harness);
    };
}

#[cfg(test)]
mod tests {
    /// The cases a port's module defines: its `pub async fn`s.
    fn defined(source: &str) -> Vec<String> {
        let mut names: Vec<String> = source
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix("pub async fn "))
            .map(|rest| rest.split(['(', '<']).next().unwrap_or_default().to_owned())
            .collect();
        names.sort();
        names
    }

    fn listed(names: &[&str]) -> Vec<String> {
        let mut names: Vec<String> = names.iter().map(|&n| n.to_owned()).collect();
        names.sort();
        names
    }

    #[test]
    fn every_case_is_expanded_by_its_macro() {
        let ports: [(&str, &[&str]); 4] = [
            (include_str!("metadata.rs"), crate::__metadata_cases!(names)),
            (include_str!("auth.rs"), crate::__auth_cases!(names)),
            (include_str!("queue.rs"), crate::__queue_cases!(names)),
            (include_str!("blobs.rs"), crate::__blob_cases!(names)),
        ];
        for (source, names) in ports {
            assert!(!names.is_empty());
            assert_eq!(defined(source), listed(names));
        }
    }
}
