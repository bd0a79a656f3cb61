#!/usr/bin/env bash
# What PostgreSQL alone can do on this machine for an execution's life, with no server in the
# way: pgbench runs the 4 single-row writes an execution needs at the least (create with its
# first 2 events, claim with its event, a batch of 3 events, complete with its event), each its
# own statement and commit, from 16 clients. The figure is the ceiling for any server that
# writes each step of each execution as it happens; compare it with `kubiya-cp bench --only
# executions` on the same database.
#
# Usage: scripts/pg-floor.sh [postgres URL] [seconds]
# Needs a schema with the bench's catalog: run the PostgreSQL executions bench first with
# `options=-c search_path=benchexec` in its URL, as the README's bench section says.
set -euo pipefail
url="${1:-postgres://postgres@127.0.0.1:5432/test}"
seconds="${2:-15}"
schema="${PG_FLOOR_SCHEMA:-benchexec}"
export PGOPTIONS="-c search_path=$schema"

read -r queue agent < <(psql "$url" -Atc \
  "SELECT q.id, a.id FROM worker_queues q, agents a LIMIT 1" | tr '|' ' ')
if [ -z "${queue:-}" ]; then
  echo "no worker queue and agent in schema $schema: run the executions bench on it first" >&2
  exit 1
fi

script="$(mktemp)"
trap 'rm -f "$script"' EXIT
cat >"$script" <<SQL
WITH x AS (INSERT INTO executions (id, organization_id, execution_type, entity_id, entity_name, worker_queue_id, prompt, system_prompt, status, execution_metadata, user_metadata, execution_environment, attempt, max_attempts, last_seq, created_by, created_at, updated_at) VALUES (gen_random_uuid(), 'default', 'agent', '$agent', 'bench', '$queue', 'hello', 'sys', 'queued', '{}', '{}', '{}', 1, 3, 2, 'bench', now(), now()) RETURNING id, organization_id, created_at), ev AS (INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) SELECT x.id, e.ord, x.organization_id, e.t, e.d, x.created_at FROM x, unnest(array['status','message'], array['{"status":"queued"}','{"role":"user","content":"hello"}']) WITH ORDINALITY e(t, d, ord)) SELECT id FROM x \gset
WITH c AS (UPDATE executions SET status = 'running', worker_id = '$agent', lease_id = gen_random_uuid(), lease_until = 99999999999999, started_at = now(), updated_at = now(), last_seq = last_seq + 1 WHERE id = :id AND status = 'queued' RETURNING id, last_seq, organization_id) INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) SELECT c.id, c.last_seq, c.organization_id, 'status', '{"status":"running"}', now() FROM c;
WITH u AS (UPDATE executions SET last_seq = last_seq + 3 WHERE id = :id AND status = 'running' RETURNING id, last_seq, organization_id) INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) SELECT u.id, u.last_seq - 3 + e.ord, u.organization_id, e.t, e.d, now() FROM u, unnest(array['run_started','message_chunk','message'], array['{}','{"content":"ok"}','{"role":"assistant","content":"ok"}']) WITH ORDINALITY e(t, d, ord);
WITH u AS (UPDATE executions SET status = 'completed', response = 'ok', usage = '{"total_tokens":12}', lease_id = NULL, lease_until = NULL, completed_at = now(), updated_at = now(), last_seq = last_seq + 1 WHERE id = :id AND last_seq = 6 RETURNING id, last_seq, organization_id) INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) SELECT u.id, u.last_seq, u.organization_id, 'status', '{"status":"completed"}', now() FROM u;
SQL
# pgbench's own CPU is printed too: what is left of the machine is PostgreSQL's.
/usr/bin/time -f "pgbench itself: %U s user, %S s system in %e s" \
  pgbench "$url" -n -M prepared -c 16 -j 2 -T "$seconds" -f "$script" 2>&1 |
  grep -E "tps|pgbench itself|failed"
