//! The outbox relay (DESIGN §3.3). The store write that moves an upload to assembling also puts
//! it in the store's outbox (`MetadataStore::list_unsent_jobs`), and the commit that made it
//! assembling sends its job at once and marks it sent. A crash between that write and the mark,
//! or a queue that refused the send, leaves the upload in the outbox: the relay sends those
//! jobs, when the service starts and then every `LFUSYS_OUTBOX_INTERVAL_MS`. Sending a job twice
//! is harmless (the queue drops a second send of an upload within its deduplication window,
//! and assembly is idempotent), so several replicas may relay at once.

use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::domain::assembly::send_assembly_job;
use crate::SessionsState;

/// Jobs sent per pass at most; the rest wait for the next pass.
const BATCH: u32 = 100;

/// What one pass of the relay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Jobs sent and marked sent.
    pub sent: usize,
    /// Store or queue failures (logged); the next pass retries.
    pub errors: usize,
}

/// One pass: sends the job of every upload in the outbox (up to a batch).
pub async fn relay_once(state: &SessionsState) -> RelayReport {
    let mut report = RelayReport::default();
    let unsent = match state.metadata.list_unsent_jobs(BATCH).await {
        Ok(unsent) => unsent,
        Err(e) => {
            tracing::error!(error = %e, "outbox: cannot list the unsent assembly jobs");
            report.errors += 1;
            return report;
        }
    };
    for rec in &unsent {
        match send_assembly_job(state, &rec.upload_id).await {
            Ok(()) => {
                report.sent += 1;
                tracing::info!(upload_id = %rec.upload_id, "outbox: sent the assembly job");
            }
            Err(e) => {
                report.errors += 1;
                tracing::error!(upload_id = %rec.upload_id, error = %e, "outbox: cannot send the assembly job");
            }
        }
    }
    if report.sent > 0 {
        metrics::counter!("lfusys_outbox_jobs_relayed_total").increment(report.sent as u64);
    }
    report
}

/// Relays at once, then every `outbox_interval`, until `stop` turns true or is dropped.
pub(crate) async fn run(state: SessionsState, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(state.config.outbox_interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                relay_once(&state).await;
            }
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() {
                    break;
                }
            }
        }
    }
}
