#!/usr/bin/env bash
# The whole test suite: every integration test runs on SQLite and on PostgreSQL.
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p cp-server --test auth`).
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBIYA_CP_TEST_DATABASE_URL="${KUBIYA_CP_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
scripts/ensure-postgres.sh
exec cargo test --workspace --locked "$@"
