#!/usr/bin/env bash
# Compatibility with the official Python client: installs kubiya-sdk 2.1.6 from PyPI into a venv,
# starts a fresh server and drives `kubiya.control_plane_client.ControlPlaneClient` through its
# health, models, runtimes, skills, agents, context, secrets, integrations, policies, workers, graph and
# task_planning services
# (tests/sdk/compat.py). Exits non-zero if any step fails.
# Usage: scripts/sdk-compat.sh [path to a built kubiya-cp]   (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
bin="${1:-$target/debug/kubiya-cp}"
venv="$target/sdk-venv"
if ! "$venv/bin/python" -c 'import importlib.metadata as m; assert m.version("kubiya-sdk") == "2.1.6"' 2>/dev/null; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q 'kubiya-sdk==2.1.6'
fi

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
key="kby_$(python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
env -u KUBIYA_CP_DATABASE_URL -u DATABASE_URL KUBIYA_CP_LOG=warn \
  "$bin" serve --data-dir "$work" --listen "127.0.0.1:$port" --bootstrap-api-key "$key" --max-org-rate-limit 1000000 >"$work/server.log" 2>&1 &
server=$!
cleanup() {
  status=$?
  kill "$server" 2>/dev/null || true
  wait "$server" 2>/dev/null || true
  if [ "$status" -ne 0 ] && [ -s "$work/server.log" ]; then
    echo "--- server log (warnings and errors) ---" >&2
    tail -n 50 "$work/server.log" >&2
  fi
  rm -rf "$work"
}
trap cleanup EXIT
ready=
for _ in $(seq 1 100); do
  if curl -sf "http://127.0.0.1:$port/api/ready" >/dev/null; then ready=1; break; fi
  sleep 0.1
done
[ -n "$ready" ] || { echo "sdk-compat: the server did not become ready on port $port" >&2; exit 1; }
# The run makes close to the standard 100 requests a minute, and the SDK answers a 429 by
# retrying with backoff: lift the org's limit as fuzz-openapi.sh does (the limiter has its own tests).
curl -sf -X PATCH "http://127.0.0.1:$port/api/v1/organization/settings" -H "Authorization: Bearer $key" \
  -H 'content-type: application/json' -d '{"rate_limit_tier":"enterprise","rate_limit_per_minute":1000000}' >/dev/null

KCP_SDK_BASE_URL="http://127.0.0.1:$port" KCP_SDK_API_KEY="$key" "$venv/bin/python" tests/sdk/compat.py
