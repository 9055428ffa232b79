//! The S3 reference of `lfusys bench --s3-bucket`: the same file uploaded straight to the
//! same S3 server with an `aws-sdk-s3` multipart client, with the part size and the number of
//! parts in flight of the LFUSYS upload and the same checksums: each part with its
//! CRC-64/NVME, the whole object with the full-object CRC-64/NVME combined from them (S3
//! verifies both, as it does for LFUSYS). Endpoint, region and credentials are the SDK's
//! standard configuration, as for the server.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumType, CompletedMultipartUpload, CompletedPart};
use futures::{StreamExt, TryStreamExt};
use lfusys_core::digest::{crc64_base64, crc64nvme, crc64nvme_of_pieces};

/// Uploads `source` to `bucket` as one multipart upload (parts of `part_size`, `parallel` in
/// flight), deletes the object again, and returns the seconds from create to complete.
pub async fn direct_multipart_upload(
    source: &Path,
    bucket: &str,
    part_size: u64,
    parallel: usize,
) -> anyhow::Result<f64> {
    let sdk = storage_aws::load_sdk_config().await;
    let client = storage_aws::s3::client(&sdk);
    let size = std::fs::metadata(source)?.len();
    if part_size == 0 || size == 0 {
        bail!("nothing to upload");
    }
    let parts = size.div_ceil(part_size);
    let key = format!("bench/direct-{:016x}", rand::random::<u64>());
    let file = Arc::new(std::fs::File::open(source)?);

    let started = Instant::now();
    let created = client
        .create_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .checksum_type(ChecksumType::FullObject)
        .send()
        .await
        .context("S3 CreateMultipartUpload")?;
    let upload_id = created.upload_id().unwrap_or_default().to_owned();
    let completed: Vec<(CompletedPart, u64, u64)> = futures::stream::iter(0..parts)
        .map(|i| {
            let (client, file, key, upload_id) = (
                client.clone(),
                Arc::clone(&file),
                key.clone(),
                upload_id.clone(),
            );
            async move {
                let offset = i * part_size;
                let len = part_size.min(size - offset) as usize;
                // Read and checksum like the LFUSYS client does for each chunk.
                let (data, crc) = tokio::task::spawn_blocking(move || {
                    use std::os::unix::fs::FileExt;
                    let mut buf = vec![0u8; len];
                    file.read_exact_at(&mut buf, offset)?;
                    let crc = crc64nvme(&buf);
                    Ok::<_, std::io::Error>((buf, crc))
                })
                .await??;
                let out = client
                    .upload_part()
                    .bucket(bucket)
                    .key(&key)
                    .upload_id(&upload_id)
                    .part_number(i as i32 + 1)
                    .content_length(len as i64)
                    .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
                    .checksum_crc64_nvme(crc64_base64(crc))
                    .body(ByteStream::from(data))
                    .send()
                    .await
                    .with_context(|| format!("S3 UploadPart {}", i + 1))?;
                Ok::<_, anyhow::Error>((
                    CompletedPart::builder()
                        .part_number(i as i32 + 1)
                        .e_tag(out.e_tag().unwrap_or_default())
                        .checksum_crc64_nvme(crc64_base64(crc))
                        .build(),
                    crc,
                    len as u64,
                ))
            }
        })
        .buffer_unordered(parallel.max(1))
        .try_collect()
        .await?;
    let mut completed = completed;
    completed.sort_by_key(|(part, _, _)| part.part_number());
    let whole = crc64nvme_of_pieces(completed.iter().map(|&(_, crc, len)| (crc, len)));
    let completed: Vec<CompletedPart> = completed.into_iter().map(|(part, _, _)| part).collect();
    client
        .complete_multipart_upload()
        .bucket(bucket)
        .key(&key)
        .upload_id(&upload_id)
        .checksum_crc64_nvme(crc64_base64(whole))
        .checksum_type(ChecksumType::FullObject)
        .multipart_upload(
            CompletedMultipartUpload::builder()
                .set_parts(Some(completed))
                .build(),
        )
        .send()
        .await
        .context("S3 CompleteMultipartUpload")?;
    let seconds = started.elapsed().as_secs_f64();
    client
        .delete_object()
        .bucket(bucket)
        .key(&key)
        .send()
        .await
        .context("S3 DeleteObject")?;
    Ok(seconds)
}
