//! In-process wake-ups and event fan-out: long-polling workers wait on their queue, a worker's
//! poll also wakes when one of its runs is cancelled, and SSE followers receive each stored
//! event of the execution they follow.
//!
//! The database stays the source of truth: a follower that misses a message (lagging, or a
//! gap in `seq`) reads the stored events again, and a poller re-tries its claim after every
//! wake-up, so a lost notification costs latency, never correctness.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use cp_types::execution::ExecutionEvent;
use tokio::sync::{Notify, broadcast, watch};
use uuid::Uuid;

/// Events buffered per follower channel before a slow follower lags (and re-reads the database).
const FOLLOWER_BUFFER: usize = 256;

pub struct Hub {
    queues: Mutex<HashMap<Uuid, Arc<Notify>>>,
    workers: Mutex<HashMap<Uuid, Arc<Notify>>>,
    followers: Mutex<HashMap<Uuid, broadcast::Sender<Arc<ExecutionEvent>>>>,
    /// Flips to true when the server stops: long polls answer 204 and streams end, so a
    /// graceful shutdown is not held open by clients that would wait for minutes.
    closing: watch::Sender<bool>,
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            queues: Mutex::default(),
            workers: Mutex::default(),
            followers: Mutex::default(),
            closing: watch::channel(false).0,
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold plain handles; a panic elsewhere cannot leave them half-updated.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Hub {
    /// What pollers of `queue` wait on.
    pub fn queue(&self, queue: Uuid) -> Arc<Notify> {
        lock(&self.queues).entry(queue).or_default().clone()
    }

    /// Something became claimable on `queue`.
    pub fn wake_queue(&self, queue: Uuid) {
        if let Some(n) = lock(&self.queues).get(&queue) {
            n.notify_waiters();
        }
    }

    /// What a worker's poll waits on besides its queue.
    pub fn worker(&self, worker: Uuid) -> Arc<Notify> {
        lock(&self.workers).entry(worker).or_default().clone()
    }

    /// One of `worker`'s runs was cancelled or taken away.
    pub fn signal_worker(&self, worker: Uuid) {
        if let Some(n) = lock(&self.workers).get(&worker) {
            n.notify_waiters();
        }
    }

    pub fn forget_worker(&self, worker: Uuid) {
        lock(&self.workers).remove(&worker);
    }

    /// A receiver of the events of `execution` stored from now on.
    pub fn follow(&self, execution: Uuid) -> broadcast::Receiver<Arc<ExecutionEvent>> {
        lock(&self.followers)
            .entry(execution)
            .or_insert_with(|| broadcast::channel(FOLLOWER_BUFFER).0)
            .subscribe()
    }

    /// Hands freshly stored events to the followers of `execution`, if any.
    pub fn publish(&self, execution: Uuid, events: &[ExecutionEvent]) {
        let mut followers = lock(&self.followers);
        let Some(tx) = followers.get(&execution) else {
            return;
        };
        if tx.receiver_count() == 0 {
            followers.remove(&execution);
            return;
        }
        for e in events {
            let _ = tx.send(Arc::new(e.clone()));
        }
    }

    /// Ends long polls and streams: the server is stopping.
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Resolves once the server is stopping.
    pub async fn closed(&self) {
        let mut rx = self.closing.subscribe();
        let _ = rx.wait_for(|closing| *closing).await;
    }

    /// Drops channels nobody listens to any more.
    pub fn sweep(&self) {
        lock(&self.followers).retain(|_, tx| tx.receiver_count() > 0);
        lock(&self.queues).retain(|_, n| Arc::strong_count(n) > 1);
        lock(&self.workers).retain(|_, n| Arc::strong_count(n) > 1);
    }
}
