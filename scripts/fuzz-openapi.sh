#!/usr/bin/env bash
# Property-based check of the OpenAPI document against a running server (DESIGN §7): schemathesis
# generates requests from /openapi.json and fails on any 5xx, undocumented status code, wrong
# content type or response outside the documented schema.
# Usage: scripts/fuzz-openapi.sh [path to a built kubiya-cp]   (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
bin="${1:-$target/debug/kubiya-cp}"
venv="$target/schemathesis-venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'schemathesis==4.32.5'
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key="kby_$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
env -u KUBIYA_CP_DATABASE_URL -u DATABASE_URL KUBIYA_CP_LOG=warn \
  "$bin" serve --data-dir "$work" --listen "127.0.0.1:$port" --bootstrap-api-key "$key" --max-org-rate-limit 1000000 >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/api/ready" >/dev/null && break; sleep 0.1; done
# Fuzzing makes thousands of requests: lift the org's rate limit (the limiter has its own tests),
# and keep the fuzzer off the settings (it would put the limit back down) and off key revocation
# (it would revoke its own key, and every later request would be a 401).
curl -sf -X PATCH "http://127.0.0.1:$port/api/v1/organization/settings" -H "Authorization: Bearer $key" \
  -H 'content-type: application/json' -d '{"rate_limit_tier":"enterprise","rate_limit_per_minute":1000000}' >/dev/null

"$venv/bin/schemathesis" run "http://127.0.0.1:$port/openapi.json" \
  -H "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --exclude-path /api/v1/organization/settings --exclude-operation-id revoke_key \
  --max-examples 30 --seed 20261128 --no-color
