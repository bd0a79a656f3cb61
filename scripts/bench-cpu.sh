#!/usr/bin/env bash
# Where the machine's CPU goes during the executions bench: PostgreSQL's processes, the server
# and the bench's own client, per execution. Read with scripts/pg-floor.sh (PostgreSQL alone,
# no server) to see what share of the machine each part takes at the measured rate.
#
# Usage: scripts/bench-cpu.sh [server database URL]
# Without a URL the server runs on SQLite. For PostgreSQL give a URL with a fresh schema, as the
# README's bench section says; this script empties the schema named in `search_path` first.
# Needs a release build (`cargo build --release -p kubiya-cp`).
set -euo pipefail
cd "$(dirname "$0")/.."
bin="${CARGO_TARGET_DIR:-target}/release/kubiya-cp"
url="${1:-}"
data="$(mktemp -d)"
out="$(mktemp)"
trap 'rm -rf "$data" "$out"' EXIT

args=(bench --only executions --duration 10 --data-dir "$data")
if [ -n "$url" ]; then
  schema="$(sed -n 's/.*search_path%3D\([A-Za-z0-9_]*\).*/\1/p' <<<"$url")"
  if [ -n "$schema" ]; then
    psql "${url%%\?*}" -qc "SET client_min_messages = warning; DROP SCHEMA IF EXISTS $schema CASCADE; CREATE SCHEMA $schema;"
  fi
  args+=(--server-database-url "$url")
fi

# CPU ticks (user + system) of the processes whose command line matches $1.
ticks() {
  local t=0 p s
  for p in $(pgrep -f "$1" || true); do
    s="$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)"
    t=$((t + s))
  done
  echo "$t"
}

"$bin" "${args[@]}" >"$out" 2>&1 &
bench=$!
# The throughput phase starts after the 500 latency rounds; sample 4 s well inside it.
sleep 6
pg0=$(ticks "postgres: "); sv0=$(ticks "kubiya-cp serve"); cl0=$(ticks "kubiya-cp bench"); t0=$(date +%s.%N)
sleep 4
pg1=$(ticks "postgres: "); sv1=$(ticks "kubiya-cp serve"); cl1=$(ticks "kubiya-cp bench"); t1=$(date +%s.%N)
wait "$bench"
grep -E "execute →|end to end|RSS" "$out"
rate="$(grep -oP 'end to end.*\): \K[0-9]+(?=/s)' "$out")"
hz="$(getconf CLK_TCK)"
python3 - "$t0" "$t1" "$hz" "$rate" "$pg0" "$pg1" "$sv0" "$sv1" "$cl0" "$cl1" <<'PY'
import sys
t0, t1, hz, rate = (float(x) for x in sys.argv[1:5])
pg0, pg1, sv0, sv1, cl0, cl1 = (int(x) for x in sys.argv[5:])
wall = t1 - t0
parts = {"postgres": (pg1 - pg0), "server": (sv1 - sv0), "bench client": (cl1 - cl0)}
print(f"cores busy over {wall:.1f} s, and CPU per execution at {rate:.0f}/s:")
for name, t in parts.items():
    cores = t / hz / wall
    print(f"  {name:13} {cores:.2f} cores  {cores / rate * 1000:.3f} ms")
total = sum(parts.values()) / hz / wall
print(f"  {'all':13} {total:.2f} cores  {total / rate * 1000:.3f} ms")
PY
