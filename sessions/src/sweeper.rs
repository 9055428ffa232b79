//! The sweeper: expires abandoned uploads (releasing their storage, so nothing is left
//! behind), finishes the releases left in the outbox of releases (a crash or an error cut them
//! short), releases blob uploads in progress that no upload owns (a crash between preparing an
//! upload's storage and recording the upload), and re-enqueues the assembly job of uploads
//! stuck in assembling although their job was sent (the queue lost it). Jobs never sent are the
//! outbox relay's (`crate::outbox`).

use lfusys_core::clock::now_ms;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::domain::assembly::send_assembly_job;
use crate::domain::cancel::{expire_upload, finish_release, release_orphan};
use crate::SessionsState;

const BATCH: u32 = 100;
/// Bounds one sweep; the rest waits for the next one.
const MAX_BATCHES: usize = 100;

/// What one sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Uploads moved to expired, their storage released.
    pub expired: usize,
    /// Assembly jobs sent again for uploads stuck in assembling.
    pub requeued: usize,
    /// Releases finished from the outbox of releases.
    pub released: usize,
    /// Blob uploads in progress that no upload owned, released.
    pub orphans: usize,
    /// Store failures (logged); the next sweep retries.
    pub errors: usize,
}

/// One pass of the sweeper.
pub async fn sweep_once(state: &SessionsState) -> SweepReport {
    let mut report = SweepReport::default();
    let now = now_ms();

    for _ in 0..MAX_BATCHES {
        let batch = match state.metadata.list_expired(now, BATCH).await {
            Ok(batch) => batch,
            Err(e) => {
                tracing::error!(error = %e, "sweeper: cannot list expired uploads");
                report.errors += 1;
                break;
            }
        };
        let mut progressed = false;
        for rec in &batch {
            match expire_upload(state, rec, now).await {
                Ok(true) => {
                    report.expired += 1;
                    progressed = true;
                }
                // Someone else moved it on (the last chunk landed, or it was cancelled).
                Ok(false) => progressed = true,
                Err(e) => {
                    tracing::error!(upload_id = %rec.upload_id, error = %e, "sweeper: cannot expire upload");
                    report.errors += 1;
                }
            }
        }
        if batch.len() < BATCH as usize || !progressed {
            break;
        }
    }

    match state.metadata.list_pending_releases(BATCH).await {
        Ok(pending) => {
            for rec in &pending {
                match finish_release(state, rec).await {
                    Ok(()) => {
                        tracing::info!(upload_id = %rec.upload_id, state = %rec.state, "sweeper: released the storage of an upload");
                        report.released += 1;
                    }
                    Err(e) => {
                        tracing::error!(upload_id = %rec.upload_id, error = %e, "sweeper: cannot release the storage of an upload");
                        report.errors += 1;
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "sweeper: cannot list the pending releases");
            report.errors += 1;
        }
    }

    release_orphans(state, now, &mut report).await;

    let stale_ms = i64::try_from(state.config.assembly_stale_after.as_millis()).unwrap_or(i64::MAX);
    match state
        .metadata
        .list_stale_assembling(now.saturating_sub(stale_ms), BATCH)
        .await
    {
        Ok(stuck) => {
            for rec in &stuck {
                match send_assembly_job(state, &rec.upload_id).await {
                    Ok(()) => {
                        tracing::warn!(upload_id = %rec.upload_id, "sweeper: re-enqueued the assembly job of a stuck upload");
                        report.requeued += 1;
                    }
                    Err(e) => {
                        tracing::error!(upload_id = %rec.upload_id, error = %e, "sweeper: cannot re-enqueue assembly job");
                        report.errors += 1;
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "sweeper: cannot list stuck assembling uploads");
            report.errors += 1;
        }
    }
    if report != SweepReport::default() {
        tracing::info!(?report, "sweep done");
    }
    report
}

/// Releases the blob uploads in progress, idle past `orphan_grace`, that no upload owns.
async fn release_orphans(state: &SessionsState, now: i64, report: &mut SweepReport) {
    let grace_ms = i64::try_from(state.config.orphan_grace.as_millis()).unwrap_or(i64::MAX);
    match state
        .blobs
        .idle_blob_uploads(now.saturating_sub(grace_ms), BATCH as usize)
        .await
    {
        Ok(idle) => {
            for upload_id in &idle {
                match release_orphan(state, upload_id).await {
                    Ok(true) => {
                        tracing::warn!(%upload_id, "sweeper: released blob storage that no upload owned");
                        report.orphans += 1;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::error!(%upload_id, error = %e, "sweeper: cannot release blob storage that no upload owns");
                        report.errors += 1;
                    }
                }
            }
        }
        Err(e) => {
            tracing::error!(error = %e, "sweeper: cannot list the idle blob uploads");
            report.errors += 1;
        }
    }
}

/// Sweeps every `sweep_interval` (the first one interval after start) until `stop` turns true or is dropped.
pub(crate) async fn run(state: SessionsState, mut stop: watch::Receiver<bool>) {
    let every = state.config.sweep_interval;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                sweep_once(&state).await;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
}
