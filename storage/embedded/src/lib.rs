//! The embedded storage adapters, the default backend (`LFUSYS_BACKEND=embedded`): blobs on
//! local disk ([`local::LocalBlobStore`]) and the metadata, auth and queue stores in SQLite
//! ([`sqlite`]), all under one data directory. They implement the ports of the `storage`
//! crate and pass its conformance suite, as the AWS adapters do.

pub mod local;
pub mod sqlite;

pub use local::LocalBlobStore;
pub use sqlite::{SqliteAuthStore, SqliteJobQueue, SqliteMetadataStore};
