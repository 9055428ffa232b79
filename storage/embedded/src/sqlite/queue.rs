//! A job queue with SQS FIFO semantics in one SQLite table: visibility timeout, redelivery,
//! receipt handles, a 5-minute deduplication window.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, OptionalExtension};
use tokio::sync::Notify;

use super::{immediate, Db, Durability};
use lfusys_core::clock::now_ms;
use storage::{JobQueue, QueueDepth, ReceivedJob, StoreError, StoreResult};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    dedup_id      TEXT NOT NULL,
    body          TEXT NOT NULL,
    visible_at_ms INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt       TEXT UNIQUE,
    sent_at_ms    INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_by_visibility ON messages (visible_at_ms, id);
CREATE TABLE IF NOT EXISTS dedup (
    dedup_id   TEXT PRIMARY KEY,
    sent_at_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS dedup_by_time ON dedup (sent_at_ms);
";

/// As SQS FIFO.
pub const DEDUP_WINDOW: Duration = Duration::from_secs(5 * 60);
/// How often a waiting receive looks for messages sent by other processes.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// [`JobQueue`] on one SQLite file (`queue.db`), shared by the processes that send and receive.
#[derive(Debug, Clone)]
pub struct SqliteJobQueue {
    db: Db,
    /// Shared by every instance on the same file in this process: a send wakes their receivers.
    sent: Arc<Notify>,
    dedup_window: Duration,
}

fn notifier(path: &Path) -> Arc<Notify> {
    static NOTIFIERS: OnceLock<Mutex<HashMap<PathBuf, Arc<Notify>>>> = OnceLock::new();
    let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let map = NOTIFIERS.get_or_init(Mutex::default);
    match map.lock() {
        Ok(mut m) => Arc::clone(m.entry(key).or_default()),
        // Wake-ups are an optimization over polling; without the registry, poll only.
        Err(_) => Arc::new(Notify::new()),
    }
}

fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl SqliteJobQueue {
    pub fn open(path: &Path) -> StoreResult<Self> {
        Self::open_with_dedup_window(path, DEDUP_WINDOW)
    }

    /// As [`open`](Self::open) with another deduplication window (tests).
    pub fn open_with_dedup_window(path: &Path, dedup_window: Duration) -> StoreResult<Self> {
        let db = Db::open(path, &[SCHEMA], Durability::Normal)?;
        Ok(Self {
            db,
            sent: notifier(path),
            dedup_window,
        })
    }

    async fn try_receive(&self, visibility: Duration) -> StoreResult<Option<ReceivedJob>> {
        let visibility = duration_ms(visibility);
        self.db
            .call(move |c| {
                // Idle pollers only read; the write lock is taken when there is work.
                let any: bool = c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM messages WHERE visible_at_ms <= ?1)",
                    [now_ms()],
                    |r| r.get(0),
                )?;
                if !any {
                    return Ok(None);
                }
                immediate(c, |tx| {
                    let now = now_ms();
                    let next: Option<(i64, String, u32)> = tx
                        .query_row(
                            "SELECT id, body, receive_count FROM messages WHERE visible_at_ms <= ?1 \
                             ORDER BY id LIMIT 1",
                            [now],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                        )
                        .optional()?;
                    let Some((id, body, count)) = next else {
                        return Ok(None);
                    };
                    let receipt = uuid::Uuid::new_v4().to_string();
                    tx.execute(
                        "UPDATE messages SET visible_at_ms = ?2, receipt = ?3, receive_count = receive_count + 1 \
                         WHERE id = ?1",
                        params![id, now.saturating_add(visibility), receipt],
                    )?;
                    Ok(Some(ReceivedJob {
                        body,
                        receipt,
                        receive_count: count + 1,
                    }))
                })
            })
            .await
    }
}

#[async_trait]
impl JobQueue for SqliteJobQueue {
    async fn send(&self, dedup_id: &str, body: &str) -> StoreResult<()> {
        let (dedup_id, body) = (dedup_id.to_owned(), body.to_owned());
        let window = duration_ms(self.dedup_window);
        let sent = self
            .db
            .call(move |c| {
                immediate(c, |tx| {
                    let now = now_ms();
                    tx.execute("DELETE FROM dedup WHERE sent_at_ms <= ?1", [now - window])?;
                    let seen: Option<i64> = tx
                        .query_row("SELECT sent_at_ms FROM dedup WHERE dedup_id = ?1", [&dedup_id], |r| {
                            r.get(0)
                        })
                        .optional()?;
                    if seen.is_some() {
                        return Ok(false);
                    }
                    tx.execute(
                        "INSERT INTO dedup (dedup_id, sent_at_ms) VALUES (?1, ?2)",
                        params![dedup_id, now],
                    )?;
                    tx.execute(
                        "INSERT INTO messages (dedup_id, body, visible_at_ms, sent_at_ms) VALUES (?1, ?2, ?3, ?3)",
                        params![dedup_id, body, now],
                    )?;
                    Ok(true)
                })
            })
            .await?;
        if sent {
            // One message, one receiver woken: waking them all sent every idle assembler to
            // the database for it.
            self.sent.notify_one();
        }
        Ok(())
    }

    async fn receive(
        &self,
        wait: Duration,
        visibility: Duration,
    ) -> StoreResult<Option<ReceivedJob>> {
        let start = tokio::time::Instant::now();
        let deadline = start
            .checked_add(wait)
            .unwrap_or_else(|| start + Duration::from_secs(86_400 * 365));
        loop {
            // Registered before looking, so a send between the look and the wait still wakes us.
            let notified = self.sent.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(job) = self.try_receive(visibility).await? {
                return Ok(Some(job));
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let nap = (deadline - now).min(POLL_INTERVAL);
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep(nap) => {}
            }
        }
    }

    async fn extend_visibility(&self, receipt: &str, visibility: Duration) -> StoreResult<()> {
        let receipt = receipt.to_owned();
        let visibility = duration_ms(visibility);
        self.db
            .call(move |c| {
                let n = c.execute(
                    "UPDATE messages SET visible_at_ms = ?2 WHERE receipt = ?1",
                    params![receipt, now_ms().saturating_add(visibility)],
                )?;
                if n == 0 {
                    return Err(StoreError::NotFound("receipt is stale or unknown".into()).into());
                }
                Ok(())
            })
            .await
    }

    async fn delete(&self, receipt: &str) -> StoreResult<()> {
        let receipt = receipt.to_owned();
        self.db
            .call(move |c| {
                if c.execute("DELETE FROM messages WHERE receipt = ?1", [receipt])? == 0 {
                    return Err(StoreError::NotFound("receipt is stale or unknown".into()).into());
                }
                Ok(())
            })
            .await
    }

    async fn depth(&self) -> StoreResult<QueueDepth> {
        self.db
            .call(|c| {
                let (visible, in_flight): (i64, i64) = c.query_row(
                    "SELECT COALESCE(SUM(visible_at_ms <= ?1), 0), COALESCE(SUM(visible_at_ms > ?1), 0) FROM messages",
                    [now_ms()],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )?;
                Ok(QueueDepth {
                    visible: visible as u64,
                    in_flight: in_flight as u64,
                })
            })
            .await
    }

    async fn check(&self) -> StoreResult<()> {
        self.db.check().await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    // The queue's answers to the port are the conformance suite's (tests/conformance.rs); what
    // follows is SQLite's own.
    use super::*;

    const VIS: Duration = Duration::from_secs(30);
    const NO_WAIT: Duration = Duration::ZERO;

    fn open() -> (tempfile::TempDir, SqliteJobQueue) {
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteJobQueue::open(&dir.path().join("queue.db")).unwrap();
        (dir, q)
    }

    /// A receipt is good for one delivery: once its message was redelivered or deleted, the
    /// receipt is refused. (moto takes old receipts, so the suite cannot ask it of every queue.)
    #[tokio::test]
    async fn old_receipts_go_stale() {
        let (_d, q) = open();
        q.send("u1", "assemble u1").await.unwrap();
        let first = q
            .receive(NO_WAIT, Duration::from_millis(200))
            .await
            .unwrap()
            .unwrap();
        // Long poll: comes back once the visibility runs out.
        let again = q
            .receive(Duration::from_secs(10), VIS)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (again.body.as_str(), again.receive_count),
            ("assemble u1", 2)
        );
        assert!(matches!(
            q.delete(&first.receipt).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            q.extend_visibility(&first.receipt, VIS).await,
            Err(StoreError::NotFound(_))
        ));
        q.delete(&again.receipt).await.unwrap();
        assert!(matches!(
            q.delete(&again.receipt).await,
            Err(StoreError::NotFound(_))
        ));
        assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
    }

    /// A resend is dropped also after the first was acknowledged, within the deduplication
    /// window, and taken once the window has passed. (moto forgets acknowledged ids, so the
    /// suite asks every queue only for the in-flight case.)
    #[tokio::test]
    async fn duplicates_are_dropped_after_the_ack_until_the_window_ends() {
        let dir = tempfile::tempdir().unwrap();
        let q = SqliteJobQueue::open_with_dedup_window(
            &dir.path().join("queue.db"),
            Duration::from_millis(300),
        )
        .unwrap();
        q.send("u1", "first").await.unwrap();
        q.send("u1", "second").await.unwrap();
        q.send("u2", "other").await.unwrap();
        assert_eq!(q.depth().await.unwrap().visible, 2);
        // Also after the first was received and acknowledged, within the window.
        let m = q.receive(NO_WAIT, VIS).await.unwrap().unwrap();
        assert_eq!(m.body, "first");
        q.delete(&m.receipt).await.unwrap();
        q.send("u1", "third").await.unwrap();
        assert_eq!(q.depth().await.unwrap().visible, 1);
        // Once the window has passed, the id is new again.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while q.depth().await.unwrap().visible < 2 {
            assert!(
                std::time::Instant::now() < deadline,
                "dedup window never ended"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            q.send("u1", "fourth").await.unwrap();
        }
        assert_eq!(q.depth().await.unwrap().visible, 2);
        // The default window is SQS's.
        assert_eq!(DEDUP_WINDOW, Duration::from_secs(300));
    }

    /// A message written by another process (no in-process wake-up) is found by polling.
    #[tokio::test]
    async fn receives_messages_sent_by_another_process() {
        let (dir, q) = open();
        let path = dir.path().join("queue.db");
        let waiter = tokio::spawn(async move { q.receive(Duration::from_secs(20), VIS).await });
        let raw = rusqlite::Connection::open(&path).unwrap();
        raw.execute(
            "INSERT INTO messages (dedup_id, body, visible_at_ms, sent_at_ms) VALUES ('x', 'from afar', ?1, ?1)",
            [now_ms()],
        )
        .unwrap();
        let got = tokio::time::timeout(Duration::from_secs(10), waiter)
            .await
            .unwrap()
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!((got.body.as_str(), got.receive_count), ("from afar", 1));
    }
}
