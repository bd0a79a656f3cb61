//! In-process wake-ups and event fan-out: long-polling workers wait on their queue, a worker's
//! poll also wakes when one of its runs is cancelled, and SSE followers receive each stored
//! event of the execution they follow.
//!
//! The database stays the source of truth: a follower that misses a message (lagging, or a
//! gap in `seq`) reads the stored events again, and a poller re-tries its claim after every
//! wake-up, so a lost notification costs latency, never correctness.
//!
//! With PostgreSQL, replicas tell each other through `NOTIFY` (see [`bridge`]): every local
//! wake-up is also sent out as a short payload, and one that arrives from another replica is
//! applied locally. Followers on another replica get a nudge rather than the events (a
//! payload is limited to 8 kB) and read what was stored.
//!
//! A replica says hello every [`HELLO_EVERY`] and sends wake-ups only while it has heard
//! from another replica within [`PEER_TTL`]: a lone server spends no database round trip on
//! them (each is a transaction of its own). One that learns of a new replica answers at once
//! with a welcome, and a welcome makes its receivers look again at everything they wait on,
//! since wake-ups sent before it may have been skipped.

use cp_types::ids::{QueueId, WorkerId};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use cp_store::Store;
use cp_types::execution::ExecutionEvent;
use parking_lot::Mutex;
use tokio::sync::{Notify, broadcast, mpsc, watch};
use uuid::Uuid;

/// Events buffered per follower channel before a slow follower lags (and re-reads the database).
const FOLLOWER_BUFFER: usize = 256;

/// How often a replica tells the others it is there.
pub const HELLO_EVERY: Duration = Duration::from_secs(5);

/// How long after the last word from another replica wake-ups are still sent.
pub const PEER_TTL: Duration = Duration::from_secs(15);

/// What followers of an execution receive.
#[derive(Debug)]
pub enum Followed {
    /// An event stored by this replica.
    Event(ExecutionEvent),
    /// Events were stored elsewhere: read them from the database.
    Stored,
}

pub struct Hub {
    /// Tells this replica's notifications from the others'.
    replica: Uuid,
    queues: Mutex<HashMap<Uuid, Arc<Notify>>>,
    workers: Mutex<HashMap<Uuid, Arc<Notify>>>,
    followers: Mutex<HashMap<Uuid, broadcast::Sender<Arc<Followed>>>>,
    /// Payloads for the other replicas, when there can be any (PostgreSQL).
    outbox: Mutex<Option<mpsc::UnboundedSender<String>>>,
    /// When this hub was made: the clock of `peers_until`.
    started: Instant,
    /// Until when (ms after `started`, exclusive) another replica is known to listen.
    peers_until: AtomicU64,
    /// Flips to true when the server stops: long polls answer 204 and streams end, so a
    /// graceful shutdown is not held open by clients that would wait for minutes.
    closing: watch::Sender<bool>,
    /// Worker polls waiting right now.
    parked: AtomicUsize,
}

/// A poll counted as waiting until it is dropped.
pub struct Parked<'a>(&'a AtomicUsize);

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            replica: Uuid::now_v7(),
            outbox: Mutex::default(),
            started: Instant::now(),
            peers_until: AtomicU64::new(0),
            queues: Mutex::default(),
            workers: Mutex::default(),
            followers: Mutex::default(),
            closing: watch::channel(false).0,
            parked: AtomicUsize::new(0),
        }
    }
}

impl Hub {
    /// What pollers of `queue` wait on.
    pub fn queue(&self, queue: QueueId) -> Arc<Notify> {
        self.queues.lock().entry(queue.uuid()).or_default().clone()
    }

    /// A run became claimable on `queue`.
    pub fn wake_queue(&self, queue: QueueId) {
        self.wake_queue_here(queue.uuid());
        self.tell_others('q', queue.uuid());
    }

    /// Any number of runs may have become claimable on `queue` (it was made active again):
    /// every poller looks.
    pub fn wake_whole_queue(&self, queue: QueueId) {
        self.wake_whole_queue_here(queue.uuid());
        self.tell_others('Q', queue.uuid());
    }

    fn wake_whole_queue_here(&self, queue: Uuid) {
        if let Some(n) = self.queues.lock().get(&queue) {
            n.notify_waiters();
        }
    }

    /// One wake-up per claimable run: waking every poller of the queue for each run made all
    /// but one of them run a claim that found nothing. A poller that was woken but claimed
    /// something else (or went away) passes the wake-up on when it drops its `Notified`, and
    /// one that comes to wait finds a wake-up nobody took.
    fn wake_queue_here(&self, queue: Uuid) {
        if let Some(n) = self.queues.lock().get(&queue) {
            n.notify_one();
        }
    }

    fn tell_others(&self, kind: char, id: Uuid) {
        if self.has_peers() {
            self.send(kind, id);
        }
    }

    fn send(&self, kind: char, id: Uuid) {
        if let Some(tx) = self.outbox.lock().as_ref() {
            let _ = tx.send(format!("{} {kind} {id}", self.replica));
        }
    }

    fn elapsed_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// Whether another replica spoke within [`PEER_TTL`].
    fn has_peers(&self) -> bool {
        self.elapsed_ms() < self.peers_until.load(Ordering::Relaxed)
    }

    /// Tells the other replicas this one is there.
    fn hello(&self) {
        self.send('h', self.replica);
    }

    /// Counts a poll as waiting for as long as the returned guard lives.
    pub fn park(&self) -> Parked<'_> {
        self.parked.fetch_add(1, Ordering::Relaxed);
        Parked(&self.parked)
    }

    /// Worker polls waiting right now (on this replica).
    pub fn parked_polls(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    /// What a worker's poll waits on besides its queue.
    pub fn worker(&self, worker: WorkerId) -> Arc<Notify> {
        self.workers.lock().entry(worker.uuid()).or_default().clone()
    }

    /// One of `worker`'s runs was cancelled or taken away.
    pub fn signal_worker(&self, worker: WorkerId) {
        self.signal_worker_here(worker.uuid());
        self.tell_others('w', worker.uuid());
    }

    fn signal_worker_here(&self, worker: Uuid) {
        if let Some(n) = self.workers.lock().get(&worker) {
            // Every parked poll wakes, and a permit stays for a poll that is between its
            // look and its wait, so the signal is not lost in that gap.
            n.notify_waiters();
            n.notify_one();
        }
    }

    pub fn forget_worker(&self, worker: WorkerId) {
        self.workers.lock().remove(&worker.uuid());
    }

    /// A receiver of the events of `execution` stored from now on.
    pub fn follow(&self, execution: Uuid) -> broadcast::Receiver<Arc<Followed>> {
        self.followers
            .lock()
            .entry(execution)
            .or_insert_with(|| broadcast::channel(FOLLOWER_BUFFER).0)
            .subscribe()
    }

    /// Hands freshly stored events to the followers of `execution`, here and elsewhere.
    pub fn publish(&self, execution: Uuid, events: &[ExecutionEvent]) {
        if events.is_empty() {
            return;
        }
        self.tell_others('e', execution);
        let mut followers = self.followers.lock();
        let Some(tx) = followers.get(&execution) else {
            return;
        };
        if tx.receiver_count() == 0 {
            followers.remove(&execution);
            return;
        }
        for e in events {
            let _ = tx.send(Arc::new(Followed::Event(e.clone())));
        }
    }

    fn nudge_followers(&self, execution: Uuid) {
        if let Some(tx) = self.followers.lock().get(&execution) {
            let _ = tx.send(Arc::new(Followed::Stored));
        }
    }

    /// Applies another replica's notification here.
    fn apply_remote(&self, payload: &str) {
        let mut parts = payload.split(' ');
        let (Some(replica), Some(kind), Some(id)) = (parts.next(), parts.next(), parts.next()) else {
            return;
        };
        let (Ok(replica), Ok(id)) = (Uuid::parse_str(replica), Uuid::parse_str(id)) else {
            return;
        };
        if replica == self.replica {
            return;
        }
        let had_peers = self.has_peers();
        self.peers_until
            .store(self.elapsed_ms() + PEER_TTL.as_millis() as u64, Ordering::Relaxed);
        if !had_peers {
            // Wake-ups were skipped while this replica thought it was alone.
            self.send('H', self.replica);
        }
        match kind {
            "q" => self.wake_queue_here(id),
            "Q" => self.wake_whole_queue_here(id),
            "w" => self.signal_worker_here(id),
            "e" => self.nudge_followers(id),
            "H" => self.wake_everyone(),
            _ => {}
        }
    }

    /// After notifications may have been lost: everyone waiting looks again.
    fn wake_everyone(&self) {
        for n in self.queues.lock().values().chain(self.workers.lock().values()) {
            n.notify_waiters();
        }
        for tx in self.followers.lock().values() {
            let _ = tx.send(Arc::new(Followed::Stored));
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
        self.followers.lock().retain(|_, tx| tx.receiver_count() > 0);
        self.queues.lock().retain(|_, n| Arc::strong_count(n) > 1);
        self.workers.lock().retain(|_, n| Arc::strong_count(n) > 1);
    }
}

/// Connects this replica's hub to the others through the database, when the database is
/// PostgreSQL; returns at once on SQLite. The subscription is made before this returns, so
/// nothing sent after the server starts listening is missed.
pub async fn bridge(store: Store, hub: Arc<Hub>) -> cp_store::StoreResult<Option<tokio::task::JoinHandle<()>>> {
    let Some(mut subscription) = store.subscribe().await? else {
        return Ok(None);
    };
    let (tx, mut rx) = mpsc::unbounded_channel::<String>();
    *hub.outbox.lock() = Some(tx);
    let greeter = hub.clone();
    let hello_loop = async move {
        let mut tick = tokio::time::interval(HELLO_EVERY);
        loop {
            tick.tick().await;
            greeter.hello();
        }
    };
    let sender = store.clone();
    let send_loop = async move {
        // Everything queued while the previous batch was sent goes out in one statement.
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 1000
                && let Ok(p) = rx.try_recv()
            {
                if !batch.contains(&p) {
                    batch.push(p);
                }
            }
            if let Err(e) = sender.notify(&batch).await {
                tracing::warn!(error = %e, "could not notify the other replicas");
            }
        }
    };
    let receive_loop = async move {
        loop {
            match subscription.recv().await {
                Ok(Some(payload)) => hub.apply_remote(&payload),
                Ok(None) => hub.wake_everyone(),
                Err(e) => {
                    tracing::warn!(error = %e, "replica notifications interrupted");
                    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    hub.wake_everyone();
                }
            }
        }
    };
    Ok(Some(tokio::spawn(async move {
        tokio::join!(send_loop, receive_loop, hello_loop);
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_outbox() -> (Hub, mpsc::UnboundedReceiver<String>) {
        let hub = Hub::default();
        let (tx, rx) = mpsc::unbounded_channel();
        *hub.outbox.lock() = Some(tx);
        (hub, rx)
    }

    fn sent(rx: &mut mpsc::UnboundedReceiver<String>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok()).collect()
    }

    #[test]
    fn a_lone_replica_sends_nothing_until_another_says_hello() {
        let (hub, mut rx) = with_outbox();
        let queue = QueueId::new_v7();
        hub.wake_queue(queue);
        hub.publish(queue.uuid(), &[]);
        assert!(sent(&mut rx).is_empty());

        let other = Uuid::now_v7();
        hub.apply_remote(&format!("{other} h {other}"));
        // Answered with a welcome: wake-ups before it were skipped.
        assert_eq!(sent(&mut rx), vec![format!("{} H {}", hub.replica, hub.replica)]);
        hub.wake_queue(queue);
        assert_eq!(sent(&mut rx), vec![format!("{} q {queue}", hub.replica)]);
        // Hearing again from a known replica needs no welcome.
        hub.apply_remote(&format!("{other} h {other}"));
        assert!(sent(&mut rx).is_empty());
        // Its own payloads, echoed back by PostgreSQL, are not another replica.
        let (lone, mut lone_rx) = with_outbox();
        lone.apply_remote(&format!("{} h {}", lone.replica, lone.replica));
        lone.wake_queue(queue);
        assert!(sent(&mut lone_rx).is_empty());
    }

    #[tokio::test]
    async fn a_welcome_makes_everyone_waiting_look_again() {
        let (hub, _rx) = with_outbox();
        let waiting = hub.queue(QueueId::new_v7());
        let woken = waiting.notified();
        tokio::pin!(woken);
        woken.as_mut().enable();
        let other = Uuid::now_v7();
        hub.apply_remote(&format!("{other} H {other}"));
        tokio::time::timeout(Duration::from_secs(1), woken)
            .await
            .expect("a welcome wakes the queue's pollers");
    }

    #[tokio::test]
    async fn a_run_wakes_one_poller_and_a_wake_up_not_taken_passes_on() {
        let (hub, _rx) = with_outbox();
        let queue = QueueId::new_v7();
        let waiting = hub.queue(queue);
        let now = Duration::from_millis(50);
        {
            let (first, second) = (waiting.notified(), waiting.notified());
            tokio::pin!(first, second);
            first.as_mut().enable();
            second.as_mut().enable();
            hub.wake_queue(queue);
            assert!(
                tokio::time::timeout(now, &mut first).await.is_ok(),
                "the oldest poller wakes"
            );
            assert!(
                tokio::time::timeout(now, &mut second).await.is_err(),
                "one run, one wake-up"
            );
        }
        {
            // A poller woken while it claimed something else drops its wake-up: the next
            // takes it.
            let mut busy = Box::pin(waiting.notified());
            let idle = waiting.notified();
            tokio::pin!(idle);
            busy.as_mut().enable();
            idle.as_mut().enable();
            hub.wake_queue(queue);
            drop(busy);
            assert!(tokio::time::timeout(now, &mut idle).await.is_ok(), "passed on");
        }
        {
            // A queue made active again wakes every poller.
            let (a, b) = (waiting.notified(), waiting.notified());
            tokio::pin!(a, b);
            a.as_mut().enable();
            b.as_mut().enable();
            hub.wake_whole_queue(queue);
            assert!(tokio::time::timeout(now, &mut a).await.is_ok());
            assert!(tokio::time::timeout(now, &mut b).await.is_ok());
        }
    }
}
