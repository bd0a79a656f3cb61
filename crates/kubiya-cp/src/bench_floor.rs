//! PostgreSQL's own ceiling for the executions scenario: what the database alone does on this
//! machine when 16 clients run, with no server in the way, the 4 single-row writes an execution
//! needs at the least (create with its first 2 events, claim with its event, a batch of 3
//! events, complete with its event), each its own statement and commit. The server's figure is
//! read against it (`scripts/pg-floor.sh` runs the same writes through pgbench).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};
use uuid::Uuid;

const CLIENTS: usize = 16;

const CREATE: &str = "WITH x AS (INSERT INTO executions (id, organization_id, execution_type, entity_id, entity_name, \
    worker_queue_id, prompt, system_prompt, status, execution_metadata, user_metadata, execution_environment, \
    attempt, max_attempts, last_seq, created_by, created_at, updated_at) VALUES ($1, $2, 'agent', $3, 'bench', $4, \
    'hello', 'sys', 'queued', '{}', '{}', '{}', 1, 3, 2, 'bench', now(), now()) \
    RETURNING id, organization_id, created_at), \
  ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
    SELECT x.id, e.ord, x.organization_id, e.t, e.d, x.created_at FROM x, \
    unnest(array['status','message'], array['{\"status\":\"queued\"}','{\"role\":\"user\",\"content\":\"hello\"}']) \
    WITH ORDINALITY e(t, d, ord)) SELECT id FROM x";

const CLAIM: &str = "WITH c AS (UPDATE executions SET status = 'running', worker_id = $2, lease_id = $3, \
    lease_until = 99999999999999, started_at = now(), updated_at = now(), last_seq = last_seq + 1 \
    WHERE id = $1 AND status = 'queued' RETURNING id, last_seq, organization_id) \
  INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
    SELECT c.id, c.last_seq, c.organization_id, 'status', '{\"status\":\"running\"}', now() FROM c";

const EVENTS: &str = "WITH u AS (UPDATE executions SET last_seq = last_seq + 3 WHERE id = $1 AND status = 'running' \
    RETURNING id, last_seq, organization_id) \
  INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
    SELECT u.id, u.last_seq - 3 + e.ord, u.organization_id, e.t, e.d, now() FROM u, \
    unnest(array['run_started','message_chunk','message'], \
      array['{}','{\"content\":\"ok\"}','{\"role\":\"assistant\",\"content\":\"ok\"}']) WITH ORDINALITY e(t, d, ord)";

const COMPLETE: &str = "WITH u AS (UPDATE executions SET status = 'completed', response = 'ok', \
    usage = '{\"total_tokens\":12}', lease_id = NULL, lease_until = NULL, completed_at = now(), updated_at = now(), \
    last_seq = last_seq + 1 WHERE id = $1 AND last_seq = 6 RETURNING id, last_seq, organization_id) \
  INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) \
    SELECT u.id, u.last_seq, u.organization_id, 'status', '{\"status\":\"completed\"}', now() FROM u";

/// Runs the writes for `duration` against the database at `url` (which the executions bench
/// has just used, so it holds a queue and an agent); returns executions/s.
pub async fn run(url: &str, duration: Duration) -> anyhow::Result<f64> {
    let pool = PgPoolOptions::new()
        .max_connections(CLIENTS as u32)
        .connect(url)
        .await
        .context("cannot connect to PostgreSQL for the floor")?;
    let row = sqlx::query(
        "SELECT q.organization_id, q.id, a.id FROM worker_queues q JOIN agents a USING (organization_id) LIMIT 1",
    )
    .fetch_optional(&pool)
    .await?
    .context("no worker queue and agent: the executions bench runs first")?;
    let (org, queue, agent): (String, Uuid, Uuid) = (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + duration;
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let (pool, org, done) = (pool.clone(), org.clone(), done.clone());
            tokio::spawn(async move {
                while Instant::now() < deadline {
                    one_execution(&pool, &org, queue, agent).await?;
                    done.fetch_add(1, Ordering::Relaxed);
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for t in tasks {
        t.await??;
    }
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

async fn one_execution(pool: &PgPool, org: &str, queue: Uuid, agent: Uuid) -> anyhow::Result<()> {
    let id = Uuid::now_v7();
    let mut conn = pool.acquire().await?;
    sqlx::query(CREATE)
        .bind(id)
        .bind(org)
        .bind(agent)
        .bind(queue)
        .fetch_one(&mut *conn)
        .await?;
    sqlx::query(CLAIM)
        .bind(id)
        .bind(agent)
        .bind(Uuid::now_v7())
        .execute(&mut *conn)
        .await?;
    sqlx::query(EVENTS).bind(id).execute(&mut *conn).await?;
    sqlx::query(COMPLETE).bind(id).execute(&mut *conn).await?;
    Ok(())
}
