#!/usr/bin/env bash
# Browser tests of the dashboard (tests/ui): Playwright (playwright-core, from npm at the
# version in tests/ui/package-lock.json) drives Debian's Chromium against a real server, worker
# and fake model, checks accessibility with axe-core, and saves a screenshot of every page in
# <target>/ui-screenshots/. Installs Chromium (as root, from Debian) and the npm packages when
# they are missing.
# Usage: scripts/ui-test.sh [path to a built kubiya-cp]   (default: the debug build)
set -euo pipefail
cd "$(dirname "$0")/.."
target="${CARGO_TARGET_DIR:-target}"
bin="$(realpath "${1:-$target/debug/kubiya-cp}")"
chromium="${CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "ui-test: $chromium is missing; install Debian's chromium package (as root: apt-get install chromium)" >&2
    exit 1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
if [ ! -d tests/ui/node_modules/playwright-core ] || [ ! -d tests/ui/node_modules/axe-core ]; then
  (cd tests/ui && npm ci --no-audit --no-fund --silent)
fi
shots="$(realpath -m "$target/ui-screenshots")"
rm -rf "$shots"
KCP_BIN="$bin" CHROMIUM="$chromium" SCREENSHOTS="$shots" \
  node --test --test-concurrency=1 --test-reporter=spec tests/ui/
echo "ui-test: screenshots in $shots"
