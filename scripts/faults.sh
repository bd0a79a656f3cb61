#!/usr/bin/env bash
# The fault suite: executions through real `serve` and `worker` processes while the server is
# killed with SIGKILL and restarted, workers are killed, and PostgreSQL restarts; prints
# accepted / completed / failed / lost per backend and fails unless lost is 0 (the test is
# `faults` in crates/kubiya-cp/tests/it). PostgreSQL is a throwaway cluster of its own on a free
# port, so restarting it disturbs nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-postgres.sh # installs PostgreSQL's binaries where they are missing

bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
dir=$(mktemp -d /tmp/kcp-faults.XXXXXX)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
# initdb refuses to run as root.
as_owner=()
if [ "$(id -u)" = 0 ]; then
  chown postgres "$dir"
  as_owner=(runuser -u postgres --)
fi
pg_ctl() { "${as_owner[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w "$@"; }
cleanup() {
  pg_ctl stop -m immediate >/dev/null 2>&1 || true
  rm -rf "$dir"
}
trap cleanup EXIT

"${as_owner[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
pg_ctl -o "-p $port -k $dir -c listen_addresses=127.0.0.1" start >/dev/null

# The test restarts the cluster as a crash would end it: an immediate stop, then a start.
restart="${as_owner[*]} $bin/pg_ctl -D $dir/data -l $dir/log -w stop -m immediate >/dev/null"
restart+=" && sleep 1 && ${as_owner[*]} $bin/pg_ctl -D $dir/data -l $dir/log -w"
restart+=" -o '-p $port -k $dir -c listen_addresses=127.0.0.1' start >/dev/null"

KUBIYA_CP_TEST_DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres" \
KUBIYA_CP_FAULTS_PG_RESTART="$restart" \
  cargo test -p kubiya-cp --test it --locked -- --ignored --nocapture --test-threads 1 faults::
