#!/usr/bin/env bash
# The whole test suite: every integration test runs on SQLite and on PostgreSQL, then the fault
# suite kills servers, workers and PostgreSQL under load (scripts/faults.sh), the OpenAPI
# document is fuzzed against a running server (scripts/fuzz-openapi.sh) and the official
# Python client is driven against one (scripts/sdk-compat.sh), and the dashboard is driven in
# Chromium (scripts/ui-test.sh).
# Extra arguments go to `cargo test` (e.g. `scripts/test.sh -p cp-server --test it auth::`); with
# arguments the fault, fuzzing and client steps are skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
export KUBIYA_CP_TEST_DATABASE_URL="${KUBIYA_CP_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"
scripts/ensure-postgres.sh
cargo test --workspace --locked "$@"
if [ "$#" -eq 0 ]; then
  scripts/faults.sh
  scripts/fuzz-openapi.sh
  scripts/sdk-compat.sh
  scripts/ui-test.sh
fi
