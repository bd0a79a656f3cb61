#!/usr/bin/env bash
# Makes sure the PostgreSQL the tests use answers on 127.0.0.1:5432, starting (or, on a machine
# without it, installing) the local cluster, then removes test schemas left by interrupted runs.
set -euo pipefail

url="${KUBIYA_CP_TEST_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}"

answers() { psql "$url" -qAtc 'SELECT 1' >/dev/null 2>&1; }

if ! command -v psql >/dev/null 2>&1 || ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
  if ! answers 2>/dev/null; then
    echo "PostgreSQL is not installed; installing it from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq && apt-get install -y -qq postgresql >/dev/null
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    # Trust local TCP connections, as the tests connect without a password.
    hba="/etc/postgresql/$version/main/pg_hba.conf"
    sed -i -E 's/^(host\s+all\s+all\s+(127\.0\.0\.1\/32|::1\/128)\s+)\S+/\1trust/' "$hba"
  fi
fi

if ! answers; then
  for version in $(ls /etc/postgresql 2>/dev/null); do
    pg_ctlcluster --skip-systemctl-redirect "$version" main start >/dev/null 2>&1 || true
  done
  for _ in $(seq 1 60); do answers && break; sleep 0.5; done
fi

if ! answers; then
  echo "PostgreSQL does not answer at $url; set KUBIYA_CP_TEST_DATABASE_URL to a reachable server" >&2
  exit 1
fi
if ! psql "$url" -qAtc 'SELECT 1 FROM pg_database WHERE datname = current_database()' >/dev/null 2>&1; then
  echo "cannot use the database of $url" >&2
  exit 1
fi

# Schemas of test runs that were killed before they could drop their own.
psql "$url" -qAt >/dev/null <<'SQL'
DO $$
DECLARE s text;
BEGIN
  FOR s IN SELECT nspname FROM pg_namespace WHERE nspname LIKE 'kcp\_t\_%' LOOP
    EXECUTE format('DROP SCHEMA %I CASCADE', s);
  END LOOP;
END $$;
SQL
