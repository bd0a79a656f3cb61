//! Following an execution's events: the stored ones after a cursor, then live ones as they
//! are stored, with no gap and no duplicate, until the run ends.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cp_types::execution::ExecutionEvent;
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::services::hub::Followed;
use crate::services::keys::StreamSlot;
use crate::state::AppState;

/// How often a stream looks whether its key was revoked or expired.
const KEY_CHECK_EVERY: Duration = Duration::from_secs(2);

/// Events stored per database read while catching up.
const REPLAY_BATCH: i64 = 500;

/// How long a follower waits for a nudge before it reads the database anyway.
const RECHECK_EVERY: Duration = Duration::from_secs(10);

/// Whose events a follower reads: an execution's, or a workflow run's own stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Source {
    Execution,
    WorkflowRun,
}

/// One client following one execution's (or workflow run's) events.
pub struct Follower {
    source: Source,
    state: AppState,
    org: String,
    /// The opening key's place in its count of streams.
    slot: StreamSlot,
    next_key_check: tokio::time::Instant,
    id: Uuid,
    rx: broadcast::Receiver<Arc<Followed>>,
    /// The last `seq` sent.
    last: i64,
    pending: VecDeque<ExecutionEvent>,
    /// The database holds nothing after `last` that the live feed will not bring: the next
    /// event is awaited live, without a read. A gap, a lag or a lost feed clears it.
    in_sync: bool,
    finished: bool,
}

impl Follower {
    /// Follows `id` from after `after` for the key holding `slot`. It subscribes before the
    /// first read of stored events: whatever is stored from here on arrives live, whatever was
    /// stored before is read; overlaps are dropped by `seq`.
    pub fn new(state: AppState, source: Source, org: String, id: Uuid, after: i64, slot: StreamSlot) -> Follower {
        Follower {
            source,
            rx: state.hub.follow(id),
            state,
            org,
            slot,
            next_key_check: tokio::time::Instant::now() + KEY_CHECK_EVERY,
            id,
            last: after,
            pending: VecDeque::new(),
            in_sync: false,
            finished: false,
        }
    }

    /// The next event in `seq` order; `None` once the run ended, the key stopped being
    /// usable, or the server is stopping.
    pub async fn next(&mut self) -> Option<ExecutionEvent> {
        loop {
            if self.finished {
                return None;
            }
            if tokio::time::Instant::now() >= self.next_key_check {
                if !self
                    .state
                    .keys
                    .still_usable(&self.state.store, &self.org, self.slot.key())
                    .await
                {
                    return None;
                }
                self.next_key_check = tokio::time::Instant::now() + KEY_CHECK_EVERY;
            }
            if let Some(e) = self.pending.pop_front() {
                if e.seq != self.last + 1 {
                    // A duplicate (already sent) or ahead of a gap: the database fills the gap.
                    if e.seq > self.last + 1 {
                        self.pending.clear();
                        self.in_sync = false;
                    }
                    continue;
                }
                self.last = e.seq;
                if e.event_type == "done" {
                    self.finished = self.ended_at(e.seq).await;
                }
                return Some(e);
            }
            // Each live event would otherwise cost every follower a read that finds nothing.
            if !self.in_sync {
                let read = match self.source {
                    Source::Execution => {
                        let executions = self.state.store.executions(&self.org);
                        executions.events(self.id, self.last, REPLAY_BATCH).await
                    }
                    Source::WorkflowRun => {
                        let runs = self.state.store.workflow_runs(&self.org);
                        runs.events(self.id, self.last, REPLAY_BATCH).await
                    }
                };
                match read {
                    Ok(batch) if !batch.is_empty() => {
                        self.pending.extend(batch);
                        continue;
                    }
                    Ok(_) => self.in_sync = true,
                    Err(e) => {
                        tracing::warn!(error = %e, execution = %self.id, "stream could not read stored events");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                }
            }
            let received = tokio::select! {
                r = self.rx.recv() => r,
                // The server is stopping: the client resumes elsewhere with Last-Event-ID.
                _ = self.state.hub.closed() => return None,
                // A nudge from another replica can be lost (its notification failed, or it
                // did not know of this replica yet): look at the database now and then.
                _ = tokio::time::sleep(RECHECK_EVERY) => {
                    self.in_sync = false;
                    continue;
                }
                _ = tokio::time::sleep_until(self.next_key_check) => continue,
            };
            match received.as_deref() {
                Ok(Followed::Event(e)) if e.seq == self.last + 1 => self.pending.push_back(e.clone()),
                // Already sent: nothing to do.
                Ok(Followed::Event(e)) if e.seq <= self.last => {}
                // A gap (published out of order), or stored by another replica: re-read the
                // database.
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => self.in_sync = false,
                Err(broadcast::error::RecvError::Closed) => {
                    self.rx = self.state.hub.follow(self.id);
                    self.in_sync = false;
                }
            }
        }
    }

    /// A `done` ends the stream when nothing came after it and the run is still over (a
    /// message may have continued the conversation since).
    async fn ended_at(&self, seq: i64) -> bool {
        let now = match self.source {
            Source::Execution => self
                .state
                .store
                .executions(&self.org)
                .get(self.id)
                .await
                .map(|e| (e.status.is_terminal(), e.event_count)),
            // A retried run goes on after its `done`.
            Source::WorkflowRun => self
                .state
                .store
                .workflow_runs(&self.org)
                .get(self.id)
                .await
                .map(|r| (r.run.status.is_terminal(), r.run.event_count)),
        };
        match now {
            Ok((ended, count)) => ended && count == seq,
            Err(_) => true,
        }
    }
}
