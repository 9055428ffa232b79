//! Chunk planning: how a file of a given size is cut into chunks.

use serde::{Deserialize, Serialize};

/// No upload is cut into more chunks than this (the S3 multipart part limit).
pub const MAX_CHUNKS: u64 = 10_000;

/// The largest accepted upload unless configured (`LFUSYS_MAX_UPLOAD_SIZE`): 5 TiB.
pub const DEFAULT_MAX_UPLOAD_SIZE: u64 = 5 << 40;

/// The planning rules of a deployment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlanPolicy {
    /// The chunk size the server prefers.
    pub preferred_chunk_size: u64,
    /// The blob store's smallest allowed chunk (except the last one): 5 MiB on S3.
    pub min_chunk_size: u64,
    /// The largest accepted upload.
    pub max_upload_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the size must be a positive number of bytes")]
    EmptyOrNegative,
    #[error("the file is {size} bytes; the largest accepted upload is {max} bytes")]
    TooLarge { size: u64, max: u64 },
}

/// How one upload is cut: every chunk is `chunk_size` bytes but the last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UploadPlan {
    pub size: u64,
    pub chunk_size: u64,
    pub total_chunks: u32,
}

impl PlanPolicy {
    /// Chooses the chunk size for a file: the preferred size, raised so that no upload needs
    /// more than [`MAX_CHUNKS`] chunks, never below the store's minimum; a file smaller than
    /// the preferred size is one chunk of its own size.
    pub fn plan(&self, size: u64) -> Result<UploadPlan, PlanError> {
        if size == 0 {
            return Err(PlanError::EmptyOrNegative);
        }
        if size > self.max_upload_size {
            return Err(PlanError::TooLarge {
                size,
                max: self.max_upload_size,
            });
        }
        let preferred = self.chunk_size();
        if size <= preferred {
            return Ok(UploadPlan {
                size,
                chunk_size: size,
                total_chunks: 1,
            });
        }
        let needed = size.div_ceil(MAX_CHUNKS);
        // Round raised sizes up to a whole MiB so chunk boundaries stay aligned.
        let chunk_size = if needed > preferred {
            needed.div_ceil(MIB) * MIB
        } else {
            preferred
        };
        Ok(UploadPlan::new(size, chunk_size))
    }
}

const MIB: u64 = 1024 * 1024;

impl PlanPolicy {
    /// The chunk size the policy cuts files into: the preferred one, never below the store's
    /// minimum (nor zero).
    fn chunk_size(&self) -> u64 {
        self.preferred_chunk_size.max(self.min_chunk_size).max(1)
    }

    /// The plan of an upload whose length is not known yet (tus `creation-defer-length`): the
    /// preferred chunk size, and the most such an upload may hold — [`MAX_CHUNKS`] chunks of
    /// it, or the largest accepted upload if that is less. The chunk size cannot grow once
    /// bytes arrive, so a deferred upload is bounded by it.
    pub fn deferred_plan(&self) -> UploadPlan {
        let chunk_size = self.chunk_size();
        let bound = chunk_size
            .saturating_mul(MAX_CHUNKS)
            .min(self.max_upload_size)
            .max(1);
        UploadPlan::new(bound, chunk_size)
    }
}

impl UploadPlan {
    /// This plan (of a deferred upload, its bound) cut to the declared `size`: the same chunk
    /// size, fewer chunks.
    pub fn declared(&self, size: u64) -> Result<Self, PlanError> {
        if size == 0 {
            return Err(PlanError::EmptyOrNegative);
        }
        if size > self.size {
            return Err(PlanError::TooLarge {
                size,
                max: self.size,
            });
        }
        Ok(Self::new(size, self.chunk_size))
    }
}

impl UploadPlan {
    /// A plan for `size` bytes in chunks of `chunk_size` (both non-zero).
    pub fn new(size: u64, chunk_size: u64) -> Self {
        let chunk_size = chunk_size.max(1);
        Self {
            size,
            chunk_size,
            total_chunks: u32::try_from(size.div_ceil(chunk_size)).unwrap_or(u32::MAX),
        }
    }

    /// Byte offset of chunk `index`.
    pub fn offset(&self, index: u32) -> u64 {
        u64::from(index) * self.chunk_size
    }

    /// Exact length of chunk `index`, or `None` when the index is out of range.
    pub fn chunk_len(&self, index: u32) -> Option<u64> {
        if index >= self.total_chunks {
            return None;
        }
        let start = self.offset(index);
        Some(self.chunk_size.min(self.size - start))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1024 * MIB;

    fn policy() -> PlanPolicy {
        PlanPolicy {
            preferred_chunk_size: 16 * MIB,
            min_chunk_size: 5 * MIB,
            max_upload_size: 5 * 1024 * GIB,
        }
    }

    #[test]
    fn small_file_is_one_chunk_of_its_size() {
        let p = policy().plan(1234).unwrap();
        assert_eq!(
            p,
            UploadPlan {
                size: 1234,
                chunk_size: 1234,
                total_chunks: 1
            }
        );
        assert_eq!(p.chunk_len(0), Some(1234));
        assert_eq!(p.chunk_len(1), None);
    }

    #[test]
    fn exact_multiple_and_remainder() {
        let p = policy().plan(32 * MIB).unwrap();
        assert_eq!((p.chunk_size, p.total_chunks), (16 * MIB, 2));
        assert_eq!(p.chunk_len(1), Some(16 * MIB));
        let p = policy().plan(32 * MIB + 1).unwrap();
        assert_eq!(p.total_chunks, 3);
        assert_eq!(p.chunk_len(2), Some(1));
        assert_eq!(p.offset(2), 32 * MIB);
    }

    #[test]
    fn huge_files_never_exceed_ten_thousand_chunks() {
        for size in [160 * GIB, 160 * GIB + 1, 1024 * GIB, 5 * 1024 * GIB] {
            let p = policy().plan(size).unwrap();
            assert!(u64::from(p.total_chunks) <= MAX_CHUNKS, "{size}: {p:?}");
            assert!(p.chunk_size >= 16 * MIB);
            let covered: u64 = (0..p.total_chunks).map(|i| p.chunk_len(i).unwrap()).sum();
            assert_eq!(covered, size);
        }
    }

    #[test]
    fn preferred_below_store_minimum_is_raised() {
        let policy = PlanPolicy {
            preferred_chunk_size: MIB,
            ..policy()
        };
        assert_eq!(policy.plan(100 * MIB).unwrap().chunk_size, 5 * MIB);
    }

    #[test]
    fn rejects_empty_and_too_large() {
        assert_eq!(policy().plan(0), Err(PlanError::EmptyOrNegative));
        assert!(matches!(
            policy().plan(6 * 1024 * GIB),
            Err(PlanError::TooLarge { .. })
        ));
    }

    #[test]
    fn a_deferred_plan_is_bounded_and_cut_to_the_declared_size() {
        let p = policy();
        let bound = p.deferred_plan();
        let chunk = p.preferred_chunk_size.max(p.min_chunk_size);
        assert_eq!(bound.chunk_size, chunk);
        assert_eq!(bound.size, (chunk * MAX_CHUNKS).min(p.max_upload_size));
        let cut = bound.declared(chunk * 3 + 1).unwrap();
        assert_eq!((cut.chunk_size, cut.total_chunks), (chunk, 4));
        assert_eq!(cut.chunk_len(3), Some(1));
        assert_eq!(bound.declared(0), Err(PlanError::EmptyOrNegative));
        assert_eq!(
            bound.declared(bound.size + 1),
            Err(PlanError::TooLarge {
                size: bound.size + 1,
                max: bound.size
            })
        );
        // A deployment that takes less than MAX_CHUNKS chunks' worth.
        let small = PlanPolicy {
            max_upload_size: chunk * 5 / 2,
            ..p
        };
        assert_eq!(small.deferred_plan().size, chunk * 5 / 2);
        assert_eq!(small.deferred_plan().total_chunks, 3);
    }
}
