#!/usr/bin/env bash
# The executions bench alone, and while the retention sweep (`kubiya-cp sweep`) deletes 1M
# events of 10,000 runs that ended 100 days ago; alternating, three rounds each.
# Usage: scripts/bench-retention.sh RELEASE-BINARY [postgres://…?options=-c%20search_path%3D<empty schema>]
set -euo pipefail
bin=${1:?usage: $0 RELEASE-BINARY [POSTGRES-URL]}
pg=${2:-}
dir=$(mktemp -d /tmp/kcp-retention.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key="kby_bench-retention-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
db=(--data-dir "$dir")
[ -n "$pg" ] && db+=(--database-url "$pg")
export KUBIYA_CP_LOG=warn
server=
cleanup() {
  [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT

# 10,000 completed runs of the default organization, 100 days old, 100 events each.
seed() {
  if [ -n "$pg" ]; then
    psql -qX "$pg" <<'SQL'
WITH x AS (
  INSERT INTO executions (id, organization_id, execution_type, entity_id, prompt, status, last_seq,
                          created_at, started_at, completed_at, updated_at)
  SELECT (lpad(to_hex((extract(epoch FROM t) * 1000)::bigint + g), 12, '0') || '7'
          || substr(md5(random()::text), 1, 3) || '8' || substr(md5(random()::text), 1, 15))::uuid,
         'default', 'agent', gen_random_uuid(), 'retention seed', 'completed', 100, t, t, t, t
  FROM generate_series(1, 10000) g, (SELECT now() - interval '100 days' AS t) n
  RETURNING id, created_at)
INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at)
SELECT x.id, s, 'default', 'message_chunk', '{"content":"an old chunk of an old answer"}', x.created_at
FROM x, generate_series(1, 100) s;
SQL
  else
    python3 - "$dir/control-plane.db" <<'PY'
import datetime, os, sqlite3, sys, time
db = sqlite3.connect(sys.argv[1], timeout=60)
ms = int((time.time() - 100 * 86400) * 1000)
at = datetime.datetime.fromtimestamp(ms / 1000, datetime.timezone.utc).isoformat()
def v7(ms):
    b = bytearray(ms.to_bytes(6, "big") + os.urandom(10))
    b[6] = 0x70 | (b[6] & 0x0F)
    b[8] = 0x80 | (b[8] & 0x3F)
    return bytes(b)
runs = [v7(ms + i) for i in range(10000)]
db.executemany(
    "INSERT INTO executions (id, organization_id, execution_type, entity_id, prompt, status, last_seq, "
    "created_at, started_at, completed_at, updated_at) VALUES (?, 'default', 'agent', ?, 'retention seed', "
    "'completed', 100, ?, ?, ?, ?)",
    ((r, os.urandom(16), at, at, at, at) for r in runs))
db.executemany(
    "INSERT INTO execution_events (execution_id, seq, organization_id, event_type, data, created_at) "
    "VALUES (?, ?, 'default', 'message_chunk', '{\"content\":\"an old chunk of an old answer\"}', ?)",
    ((r, s, at) for r in runs for s in range(1, 101)))
db.commit()
PY
  fi
}

"$bin" migrate "${db[@]}" 2>/dev/null
KUBIYA_CP_BOOTSTRAP_API_KEY="$key" "$bin" serve "${db[@]}" --max-org-rate-limit 1000000 \
  --listen "127.0.0.1:$port" >/dev/null 2>&1 &
server=$!
until curl -sf "http://127.0.0.1:$port/api/ready" >/dev/null; do sleep 0.1; done

bench() {
  "$bin" bench --url "http://127.0.0.1:$port" --api-key "$key" --only executions --duration 10 2>/dev/null |
    grep -E "end to end|p50" | tr '\n' ' '
  echo
}
for round in 1 2 3; do
  seed
  echo "round $round, alone:     $(bench)"
  (sleep 1; start=$(date +%s.%N); "$bin" sweep "${db[@]}" 2>/dev/null | tr '\n' ' '
   echo "in $(echo "$(date +%s.%N) - $start" | bc) s") >"$dir/sweep.out" &
  sweeper=$!
  echo "round $round, sweeping:  $(bench)"
  wait "$sweeper"
  echo "  sweep: $(cat "$dir/sweep.out")"
done
