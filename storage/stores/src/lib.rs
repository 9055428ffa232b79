//! Which storage backend a service uses (`LFUSYS_BACKEND` and its settings), and opening its
//! stores: the one place that knows every adapter, so services depend on the ports alone.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use lfusys_core::env::{ConfigError, Env};

use storage::{AuthStore, BlobStore, JobQueue, MetadataStore, StoreResult};
use storage_aws::{self as aws, AwsResources};
use storage_embedded::{LocalBlobStore, SqliteAuthStore, SqliteJobQueue, SqliteMetadataStore};

pub const DEFAULT_DATA_DIR: &str = "./lfusys-data";
pub const DEFAULT_S3_BUCKET: &str = "lfusys";
pub const DEFAULT_TABLE_PREFIX: &str = "lfusys-";
pub const DEFAULT_QUEUE_NAME: &str = "lfusys-assembly.fifo";
/// Receives of an assembly job before it is dead-lettered (`LFUSYS_ASSEMBLY_MAX_ATTEMPTS`).
pub const DEFAULT_MAX_RECEIVES: u32 = 5;

/// `LFUSYS_ASSEMBLY_MAX_ATTEMPTS`: receives of an assembly job before it is dead-lettered, on
/// either backend (the SQS redrive policy on AWS, the assemblers' own count when embedded).
/// Read here only, so both uses follow one rule.
pub fn assembly_max_attempts(env: &Env<'_>) -> Result<u32, ConfigError> {
    env.positive("LFUSYS_ASSEMBLY_MAX_ATTEMPTS", DEFAULT_MAX_RECEIVES)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StorageConfig {
    /// Local disk and SQLite under one data directory:
    /// `blobs/` (uploads in progress and files), `sessions.db`, `auth.db`, `queue.db`.
    Embedded { data_dir: PathBuf },
    /// S3, DynamoDB and SQS through the AWS SDK's standard configuration. `data_dir` only
    /// holds local state (the signing keys, unless their files are configured).
    Aws {
        data_dir: PathBuf,
        resources: AwsResources,
        /// Smallest chunk but the last (5 MiB on S3; lower only for S3-compatible test servers).
        min_chunk_size: u64,
    },
}

// The openers are async because the production backends (AWS SDK clients) load their
// configuration asynchronously.
#[allow(clippy::unused_async)]
impl StorageConfig {
    /// `LFUSYS_BACKEND` (`embedded`, the default, or `aws`) and the backend's settings:
    ///
    /// | variable | default | meaning |
    /// |---|---|---|
    /// | `LFUSYS_DATA_DIR` | `./lfusys-data` | embedded data; local state (keys) on AWS |
    /// | `LFUSYS_S3_BUCKET` | `lfusys` | AWS: the bucket of uploads and files |
    /// | `LFUSYS_TABLE_PREFIX` | `lfusys-` | AWS: prefix of the DynamoDB table names |
    /// | `LFUSYS_QUEUE_NAME` | `lfusys-assembly.fifo` | AWS: the SQS FIFO assembly queue |
    /// | `LFUSYS_ASSEMBLY_MAX_ATTEMPTS` | `5` | AWS: receives before a job is dead-lettered (used when creating the queue) |
    /// | `LFUSYS_MIN_CHUNK_SIZE` | `5MiB` | AWS: smallest chunk but the last (S3's part minimum) |
    ///
    /// AWS endpoints, region and credentials come from the SDK's standard variables
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, …).
    pub fn from_environment() -> Result<Self, ConfigError> {
        Self::from_env(&Env::process())
    }

    /// Like [`StorageConfig::from_environment`] with the variables coming from `env`.
    pub fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let data_dir = env
            .get("LFUSYS_DATA_DIR")
            .map_or_else(|| PathBuf::from(DEFAULT_DATA_DIR), PathBuf::from);
        let backend = env
            .get("LFUSYS_BACKEND")
            .unwrap_or_else(|| "embedded".to_owned());
        match backend.to_ascii_lowercase().as_str() {
            "embedded" => Ok(Self::Embedded { data_dir }),
            "aws" => Ok(Self::Aws {
                data_dir,
                resources: AwsResources {
                    bucket: env
                        .get("LFUSYS_S3_BUCKET")
                        .unwrap_or_else(|| DEFAULT_S3_BUCKET.into()),
                    table_prefix: env
                        .get("LFUSYS_TABLE_PREFIX")
                        .unwrap_or_else(|| DEFAULT_TABLE_PREFIX.into()),
                    queue_name: env
                        .get("LFUSYS_QUEUE_NAME")
                        .unwrap_or_else(|| DEFAULT_QUEUE_NAME.into()),
                    max_receives: assembly_max_attempts(env)?,
                },
                min_chunk_size: env
                    .positive_size("LFUSYS_MIN_CHUNK_SIZE", aws::s3::MIN_PART_SIZE)?,
            }),
            _ => Err(ConfigError::new(
                "LFUSYS_BACKEND",
                backend,
                "expected embedded or aws",
            )),
        }
    }

    /// Where local state lives: all data when embedded, the signing keys on AWS.
    pub fn data_dir(&self) -> &Path {
        match self {
            Self::Embedded { data_dir } | Self::Aws { data_dir, .. } => data_dir,
        }
    }

    /// The default folder of the signing keys: `{data_dir}/keys`.
    pub fn keys_dir(&self) -> PathBuf {
        self.data_dir().join("keys")
    }

    /// A short name of the backend (`embedded` or `aws`).
    pub fn backend_name(&self) -> &'static str {
        match self {
            Self::Embedded { .. } => "embedded",
            Self::Aws { .. } => "aws",
        }
    }

    /// Creates the backend's resources when missing (AWS: bucket, tables, queues; embedded:
    /// nothing, the stores create their files).
    pub async fn create_resources(&self) -> StoreResult<()> {
        match self {
            Self::Embedded { .. } => Ok(()),
            Self::Aws { resources, .. } => {
                aws::create_resources(&aws::shared_sdk_config().await, resources).await
            }
        }
    }

    pub fn embedded(data_dir: impl Into<PathBuf>) -> Self {
        Self::Embedded {
            data_dir: data_dir.into(),
        }
    }

    /// The smallest chunk (but the last) the blob store accepts.
    pub fn min_chunk_size(&self) -> u64 {
        match self {
            Self::Embedded { .. } => 1,
            Self::Aws { min_chunk_size, .. } => *min_chunk_size,
        }
    }

    pub async fn blob_store(&self) -> StoreResult<Arc<dyn BlobStore>> {
        match self {
            Self::Embedded { data_dir } => {
                Ok(Arc::new(LocalBlobStore::open(&data_dir.join("blobs"))?))
            }
            Self::Aws { resources, .. } => Ok(Arc::new(aws::S3BlobStore::new(
                &aws::shared_sdk_config().await,
                &resources.bucket,
            ))),
        }
    }

    pub async fn metadata_store(&self) -> StoreResult<Arc<dyn MetadataStore>> {
        match self {
            Self::Embedded { data_dir } => Ok(Arc::new(SqliteMetadataStore::open(
                &data_dir.join("sessions.db"),
            )?)),
            Self::Aws { resources, .. } => Ok(Arc::new(aws::DynamoMetadataStore::new(
                &aws::shared_sdk_config().await,
                &resources.table_prefix,
            ))),
        }
    }

    pub async fn auth_store(&self) -> StoreResult<Arc<dyn AuthStore>> {
        match self {
            Self::Embedded { data_dir } => {
                Ok(Arc::new(SqliteAuthStore::open(&data_dir.join("auth.db"))?))
            }
            Self::Aws { resources, .. } => Ok(Arc::new(aws::DynamoAuthStore::new(
                &aws::shared_sdk_config().await,
                &resources.table_prefix,
            ))),
        }
    }

    pub async fn job_queue(&self) -> StoreResult<Arc<dyn JobQueue>> {
        match self {
            Self::Embedded { data_dir } => {
                Ok(Arc::new(SqliteJobQueue::open(&data_dir.join("queue.db"))?))
            }
            Self::Aws { resources, .. } => Ok(Arc::new(aws::SqsJobQueue::new(
                &aws::shared_sdk_config().await,
                &resources.queue_name,
            ))),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<StorageConfig, ConfigError> {
        StorageConfig::from_env(&Env::from_pairs(vars))
    }

    #[test]
    fn embedded_by_default() {
        let c = config(&[]).unwrap();
        assert_eq!(c, StorageConfig::embedded(DEFAULT_DATA_DIR));
        assert_eq!(c.min_chunk_size(), 1);
        assert_eq!(c.keys_dir(), PathBuf::from("./lfusys-data/keys"));
    }

    #[test]
    fn aws_settings() {
        let c = config(&[("LFUSYS_BACKEND", "aws")]).unwrap();
        let StorageConfig::Aws {
            data_dir,
            resources,
            min_chunk_size,
        } = &c
        else {
            panic!("{c:?}");
        };
        assert_eq!(data_dir, &PathBuf::from(DEFAULT_DATA_DIR));
        assert_eq!(resources.bucket, DEFAULT_S3_BUCKET);
        assert_eq!(resources.table_prefix, DEFAULT_TABLE_PREFIX);
        assert_eq!(resources.queue_name, DEFAULT_QUEUE_NAME);
        assert_eq!(resources.max_receives, 5);
        assert_eq!(*min_chunk_size, 5 * 1024 * 1024);
        assert_eq!(c.backend_name(), "aws");

        let c = config(&[
            ("LFUSYS_BACKEND", "AWS"),
            ("LFUSYS_DATA_DIR", "/srv/lfusys"),
            ("LFUSYS_S3_BUCKET", "b"),
            ("LFUSYS_TABLE_PREFIX", "p-"),
            ("LFUSYS_QUEUE_NAME", "q"),
            ("LFUSYS_MIN_CHUNK_SIZE", "1KiB"),
            ("LFUSYS_ASSEMBLY_MAX_ATTEMPTS", "3"),
        ])
        .unwrap();
        assert_eq!(c.min_chunk_size(), 1024);
        assert_eq!(c.keys_dir(), PathBuf::from("/srv/lfusys/keys"));
        let StorageConfig::Aws { resources, .. } = c else {
            panic!()
        };
        assert_eq!(
            (resources.bucket.as_str(), resources.table_prefix.as_str()),
            ("b", "p-")
        );
        assert_eq!(
            (resources.queue_name.as_str(), resources.max_receives),
            ("q", 3)
        );
    }

    #[test]
    fn invalid_values_name_the_variable() {
        for (var, value) in [
            ("LFUSYS_BACKEND", "gcs"),
            ("LFUSYS_MIN_CHUNK_SIZE", "0"),
            ("LFUSYS_MIN_CHUNK_SIZE", "big"),
            ("LFUSYS_ASSEMBLY_MAX_ATTEMPTS", "0"),
        ] {
            let vars: Vec<(&str, &str)> = if var == "LFUSYS_BACKEND" {
                vec![(var, value)]
            } else {
                vec![("LFUSYS_BACKEND", "aws"), (var, value)]
            };
            let err = config(&vars).unwrap_err();
            assert_eq!(err.var, var);
            assert!(err.to_string().contains(var), "{err}");
        }
    }
}
