//! Conformance cases of [`JobQueue`]: FIFO delivery, visibility, redelivery, deduplication and
//! long polls, with SQS FIFO semantics.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::{JobQueue, QueueDepth};

/// Opens job queues of one backend for the cases.
pub trait QueueHarness: Sync {
    type Store: JobQueue;
    /// Where a queue keeps its messages (a directory, a queue name); the case drops it at its
    /// end.
    type Place: Send + Sync;
    /// A fresh, empty queue that nothing else uses.
    fn place(&self) -> impl Future<Output = Self::Place> + Send;
    /// A queue on `place`. Every call is another connection (or client), as another process
    /// would open.
    fn open(&self, place: &Self::Place) -> impl Future<Output = Self::Store> + Send;
    /// The cases' unit of time: the shortest visibility timeout and long-poll wait the backend
    /// honours (SQS counts whole seconds).
    fn tick(&self) -> Duration;
}

const VIS: Duration = Duration::from_secs(30);
const NO_WAIT: Duration = Duration::ZERO;

/// A queue on fresh data, and that data.
async fn fresh<H: QueueHarness>(h: &H) -> (H::Place, H::Store) {
    let place = h.place().await;
    let store = h.open(&place).await;
    (place, store)
}

pub async fn fifo_delivery_and_ack(h: &impl QueueHarness) {
    let (_place, q) = fresh(h).await;
    for i in 0..3 {
        q.send(&format!("d{i}"), &format!("job {i}")).await.unwrap();
    }
    assert_eq!(
        q.depth().await.unwrap(),
        QueueDepth {
            visible: 3,
            in_flight: 0
        }
    );
    let a = q.receive(NO_WAIT, VIS).await.unwrap().unwrap();
    let b = q.receive(NO_WAIT, VIS).await.unwrap().unwrap();
    assert_eq!((a.body.as_str(), a.receive_count), ("job 0", 1));
    assert_eq!(b.body, "job 1");
    assert_ne!(a.receipt, b.receipt);
    assert_eq!(
        q.depth().await.unwrap(),
        QueueDepth {
            visible: 1,
            in_flight: 2
        }
    );
    q.delete(&a.receipt).await.unwrap();
    q.extend_visibility(&b.receipt, VIS).await.unwrap();
    assert_eq!(
        q.receive(NO_WAIT, VIS).await.unwrap().unwrap().body,
        "job 2"
    );
    assert_eq!(q.receive(NO_WAIT, VIS).await.unwrap(), None);
    assert_eq!(
        q.depth().await.unwrap(),
        QueueDepth {
            visible: 0,
            in_flight: 2
        }
    );
    q.check().await.unwrap();
}

pub async fn unacked_messages_are_redelivered_with_their_count(h: &impl QueueHarness) {
    let (_place, q) = fresh(h).await;
    q.send("u1", "assemble u1").await.unwrap();
    let first = q.receive(NO_WAIT, h.tick()).await.unwrap().unwrap();
    assert_eq!(
        q.receive(NO_WAIT, VIS).await.unwrap(),
        None,
        "invisible while in flight"
    );
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
    assert_ne!(first.receipt, again.receipt);
    q.delete(&again.receipt).await.unwrap();
    assert_eq!(q.depth().await.unwrap(), QueueDepth::default());
}

pub async fn extended_visibility_holds_the_message(h: &impl QueueHarness) {
    let (_place, q) = fresh(h).await;
    q.send("u1", "b").await.unwrap();
    let m = q.receive(NO_WAIT, h.tick()).await.unwrap().unwrap();
    q.extend_visibility(&m.receipt, VIS).await.unwrap();
    // Well past the original visibility: still hidden.
    assert_eq!(q.receive(3 * h.tick(), VIS).await.unwrap(), None);
    q.delete(&m.receipt).await.unwrap();
}

/// A second send with the same dedup id is dropped, also while the first is in flight. (SQS
/// also drops a resend after the first was acknowledged, within 5 minutes; moto forgets
/// acknowledged ids, so that is the SQLite queue's own test.)
pub async fn duplicates_within_the_window_are_dropped(h: &impl QueueHarness) {
    let (_place, q) = fresh(h).await;
    q.send("u1", "first").await.unwrap();
    q.send("u1", "second").await.unwrap();
    q.send("u2", "other").await.unwrap();
    assert_eq!(q.depth().await.unwrap().visible, 2);
    // While the first is in flight too.
    let m = q.receive(NO_WAIT, VIS).await.unwrap().unwrap();
    assert_eq!(m.body, "first");
    q.send("u1", "third").await.unwrap();
    assert_eq!(
        q.depth().await.unwrap(),
        QueueDepth {
            visible: 1,
            in_flight: 1
        }
    );
    q.delete(&m.receipt).await.unwrap();
}

pub async fn long_poll_wakes_on_send_and_times_out(h: &impl QueueHarness) {
    let (place, q) = fresh(h).await;
    let started = Instant::now();
    assert_eq!(q.receive(h.tick(), VIS).await.unwrap(), None);
    assert!(started.elapsed() >= h.tick());
    // A second instance on the same queue, as the sessions service and a worker.
    let other = h.open(&place).await;
    let waiter = tokio::spawn(async move { other.receive(Duration::from_secs(20), VIS).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    q.send("u9", "wake up").await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.body, "wake up");
    q.delete(&got.receipt).await.unwrap();
}
