//! Telling whoever waits: every change that can wake a long poll, an event stream or the
//! webhook sender goes through [`notify`], after it is stored.

use cp_store::executions::Changed;
use cp_types::execution::{ExecutionEvent, ExecutionStatus};
use cp_types::ids::{QueueId, WorkerId};
use uuid::Uuid;

use crate::state::AppState;

/// A stored change someone may be waiting for.
pub enum Notice<'a> {
    /// A new execution and its first events: its queue has a claimable run.
    Created {
        execution: Uuid,
        queue: QueueId,
        events: &'a [ExecutionEvent],
    },
    /// A worker's events of a run.
    Events {
        execution: Uuid,
        events: &'a [ExecutionEvent],
    },
    /// A status change.
    Changed(&'a Changed),
    /// A worker was told to drain or to stop draining.
    Drain { worker: WorkerId },
    /// A worker left: its polls end, and it is forgotten.
    Left { worker: WorkerId },
    /// A queue was updated (made active again, say): every poller looks again.
    Queue { queue: QueueId },
    /// Webhook deliveries are due.
    Deliveries,
}

/// Wakes whoever waits for `notice`: followers of the execution, pollers of its queue, the
/// worker concerned, the webhook sender.
pub fn notify(state: &AppState, notice: Notice<'_>) {
    match notice {
        Notice::Created {
            execution,
            queue,
            events,
        } => {
            state.hub.publish(execution, events);
            state.hub.wake_queue(queue);
        }
        Notice::Events { execution, events } => state.hub.publish(execution, events),
        Notice::Changed(changed) => {
            let e = &changed.record.execution;
            state.hub.publish(e.id, &changed.events);
            if changed.wakes_workflow() {
                state.workflow_scheduler.wake.notify_one();
            }
            if changed.deliveries {
                state.webhooks.wake.notify_one();
            }
            if e.status == ExecutionStatus::Queued
                && let Some(q) = e.worker_queue_id
            {
                state.hub.wake_queue(QueueId(q));
            }
            if let Some(w) = changed.released_worker {
                state.hub.signal_worker(w);
            }
            if e.status == ExecutionStatus::Cancelling
                && let Some(w) = e.worker_id
            {
                state.hub.signal_worker(WorkerId(w));
            }
        }
        Notice::Drain { worker } => state.hub.signal_worker(worker),
        Notice::Left { worker } => {
            state.hub.signal_worker(worker);
            state.hub.forget_worker(worker);
        }
        Notice::Queue { queue } => state.hub.wake_whole_queue(queue),
        Notice::Deliveries => state.webhooks.wake.notify_one(),
    }
}
