//! Group commit for the execution engine's hot writes on PostgreSQL: the writes of one kind
//! that arrive while a batch of that kind is in the database wait, and go together as the
//! next batch, in one statement.
//!
//! On a small machine a statement's fixed costs (the round trip on both ends, the executor's
//! start, the commit and its WAL flush) are most of what a single-row write costs, and a
//! loaded server has many writes of a kind waiting at once. A lone write goes at once, as a
//! batch of one; batches grow only as fast as writes queue up behind the one in flight, so
//! the latency of a quiet server does not change.
//!
//! A batch whose statement fails is run again one write at a time, so each caller gets its
//! own answer (one execute's deleted queue does not fail the others).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;

use crate::db::PgEngine;
use crate::error::{StoreError, StoreResult};

/// Writes per batch at most: bounds the statement's parameter arrays.
const MAX_BATCH: usize = 64;

/// What the statement of a batch answers: one result per request, in order, or the error of
/// the whole batch.
pub(crate) type BatchFuture<'a, A> = Pin<Box<dyn Future<Output = StoreResult<Vec<A>>> + Send + 'a>>;

/// Runs a batch's statement.
pub(crate) type RunBatch<R, A> = for<'a> fn(&'a PgEngine, &'a [R]) -> BatchFuture<'a, A>;

type Waiting<R, A> = (R, oneshot::Sender<StoreResult<A>>);

/// The queue of one kind of write.
pub(crate) struct Batcher<R, A> {
    state: Mutex<Queue<R, A>>,
    run: RunBatch<R, A>,
    /// Where the batcher lives in the engine, for the task that runs its batches.
    locate: fn(&PgEngine) -> &Batcher<R, A>,
}

struct Queue<R, A> {
    waiting: Vec<Waiting<R, A>>,
    /// A task is running this kind's batches; it takes what waits until nothing does. One
    /// batch at a time is what makes the next one grow.
    running: bool,
}

impl<R: Send + Sync + 'static, A: Send + 'static> Batcher<R, A> {
    pub(crate) fn new(run: RunBatch<R, A>, locate: fn(&PgEngine) -> &Batcher<R, A>) -> Self {
        Batcher {
            state: Mutex::new(Queue {
                waiting: Vec::new(),
                running: false,
            }),
            run,
            locate,
        }
    }

    /// Runs `request` in the next batch and answers its part.
    pub(crate) async fn submit(&self, engine: &Arc<PgEngine>, request: R) -> StoreResult<A> {
        let (tx, rx) = oneshot::channel();
        let start = {
            let mut q = self.state.lock();
            q.waiting.push((request, tx));
            !std::mem::replace(&mut q.running, true)
        };
        if start {
            // A task of its own, not the caller's future: a caller that goes away (a client
            // that hung up) must not take the other callers' writes with it.
            let engine = engine.clone();
            let locate = self.locate;
            tokio::spawn(async move { locate(&engine).drain(&engine).await });
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("the batch with this write was lost".into()))?
    }

    /// Runs batches until nothing waits.
    async fn drain(&self, engine: &PgEngine) {
        let mut stop = Stop {
            batcher: self,
            done: false,
        };
        loop {
            let batch = self.next_batch();
            if batch.is_empty() {
                stop.done = true;
                return;
            }
            let (requests, answers): (Vec<R>, Vec<_>) = batch.into_iter().unzip();
            match (self.run)(engine, &requests).await {
                Ok(results) if results.len() == requests.len() => {
                    for (tx, result) in answers.into_iter().zip(results) {
                        let _ = tx.send(Ok(result));
                    }
                }
                Ok(_) => {
                    for tx in answers {
                        let _ = tx.send(Err(StoreError::Unavailable("a batch answered out of step".into())));
                    }
                }
                // An error one request can cause (a constraint, a value the database refuses):
                // each runs on its own, and the one that broke the batch gets the error. One of
                // the connection or the database concerns everyone; running each again would
                // only make the last wait longer.
                Err(e) if requests.len() > 1 && !matches!(e, StoreError::Unavailable(_)) => {
                    for (request, tx) in requests.iter().zip(answers) {
                        let result = (self.run)(engine, std::slice::from_ref(request)).await;
                        let _ = tx.send(result.and_then(|mut r| {
                            r.pop()
                                .ok_or_else(|| StoreError::Unavailable("a batch answered out of step".into()))
                        }));
                    }
                }
                Err(e) => {
                    let message = e.to_string();
                    let mut answers = answers.into_iter();
                    if let Some(tx) = answers.next() {
                        let _ = tx.send(Err(e));
                    }
                    for tx in answers {
                        let _ = tx.send(Err(StoreError::Unavailable(message.clone())));
                    }
                }
            }
        }
    }

    /// What waits, oldest first, up to [`MAX_BATCH`]; the rest stays for the next batch. A request whose caller went away (a client that hung up) is
    /// dropped unwritten, as a statement never sent would be. An empty batch ends the task,
    /// in the same lock as `running`.
    fn next_batch(&self) -> Vec<Waiting<R, A>> {
        let mut q = self.state.lock();
        q.waiting.retain(|(_, tx)| !tx.is_closed());
        let take = q.waiting.len().min(MAX_BATCH);
        let batch: Vec<Waiting<R, A>> = q.waiting.drain(..take).collect();
        if batch.is_empty() {
            q.running = false;
        }
        batch
    }
}

/// Ends a batch task that did not run to its end (a batch panicked, or the runtime is
/// shutting down): what waits is answered with an error (its senders dropped) rather than
/// left waiting for a task that is gone, and the next write starts a new one.
struct Stop<'b, R, A> {
    batcher: &'b Batcher<R, A>,
    done: bool,
}

impl<R, A> Drop for Stop<'_, R, A> {
    fn drop(&mut self) {
        if !self.done {
            let mut q = self.batcher.state.lock();
            q.waiting.clear();
            q.running = false;
        }
    }
}

impl<R, A> std::fmt::Debug for Batcher<R, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batcher").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;
    use std::time::Duration;

    use super::*;

    /// A request `n`; 13 breaks any batch it is in, 99 finds the database down.
    struct Req(u32);

    /// The batches run, as their requests' numbers.
    static RUN: Mutex<Vec<Vec<u32>>> = Mutex::new(Vec::new());

    fn doubled<'a>(_: &'a PgEngine, requests: &'a [Req]) -> BatchFuture<'a, u32> {
        Box::pin(async move {
            RUN.lock().push(requests.iter().map(|r| r.0).collect());
            // In the database for a while: what arrives meanwhile waits for the next batch.
            tokio::time::sleep(Duration::from_millis(50)).await;
            if requests.iter().any(|r| r.0 == 13) {
                return Err(StoreError::Conflict("13".into()));
            }
            if requests.iter().any(|r| r.0 == 99) {
                return Err(StoreError::Unavailable("the database is down".into()));
            }
            Ok(requests.iter().map(|r| r.0 * 2).collect())
        })
    }

    static DOUBLER: LazyLock<Batcher<Req, u32>> = LazyLock::new(|| Batcher::new(doubled, |_| &DOUBLER));

    #[tokio::test]
    async fn what_waits_goes_together_and_a_broken_batch_goes_one_by_one() {
        // The batches here never touch the database.
        let pool = sqlx::postgres::PgPoolOptions::new()
            .connect_lazy("postgres://nobody@127.0.0.1:1/none")
            .unwrap();
        let engine = Arc::new(PgEngine::new(pool));
        let submit = |n: u32| {
            let engine = engine.clone();
            tokio::spawn(async move { DOUBLER.submit(&engine, Req(n)).await })
        };
        let in_flight = || tokio::time::sleep(Duration::from_millis(10));

        let lone = submit(0);
        in_flight().await;
        // Arrive while the lone one is in flight.
        let waiting: Vec<_> = (1..=20).map(submit).collect();
        assert_eq!(lone.await.unwrap().unwrap(), 0);
        for (n, answer) in (1..=20).zip(waiting) {
            match answer.await.unwrap() {
                Ok(doubled) => assert_eq!(doubled, n * 2),
                Err(StoreError::Conflict(m)) => assert_eq!((n, m.as_str()), (13, "13")),
                Err(e) => panic!("{n}: {e}"),
            }
        }
        let run = RUN.lock().clone();
        assert_eq!(run[0], vec![0], "a lone request goes at once");
        // The next batch held everything that waited; it broke on 13, so its requests ran
        // again one by one, each getting its own answer.
        let second: Vec<u32> = (1..=20).collect();
        assert_eq!(run[1], second);
        let singles: Vec<Vec<u32>> = second.iter().map(|&n| vec![n]).collect();
        assert_eq!(run[2..], singles[..]);

        // A database that is down fails the whole batch, without running each again; a caller
        // that went away before its batch is not written.
        RUN.lock().clear();
        let lone = submit(98);
        in_flight().await;
        let gone = submit(97);
        in_flight().await;
        gone.abort();
        let (down, also) = (submit(99), submit(100));
        assert_eq!(lone.await.unwrap().unwrap(), 196);
        assert!(matches!(down.await.unwrap(), Err(StoreError::Unavailable(_))));
        assert!(matches!(also.await.unwrap(), Err(StoreError::Unavailable(_))));
        assert_eq!(*RUN.lock(), [vec![98], vec![99, 100]]);
    }
}
