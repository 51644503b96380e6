#!/usr/bin/env bash
# A local PostgreSQL server for the search's multi-machine test (tests/test_search.py): installs
# Debian's postgresql if it is missing, starts its cluster, makes the role and database bitmcu
# (password bitmcu) and prints the URL to give as BITMCU_TEST_POSTGRES.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
as_postgres() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi
}
if ! command -v pg_lsclusters >/dev/null; then
  echo "postgres: installing Debian's postgresql" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq postgresql >/dev/null
fi
read -r ver name _ < <(pg_lsclusters -h | head -1)
if [ -z "${ver:-}" ]; then
  ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
  name=main
  $SUDO pg_createcluster "$ver" "$name" >/dev/null
fi
$SUDO pg_ctlcluster "$ver" "$name" start >/dev/null 2>&1 || true  # stdout is the URL only
for _ in $(seq 30); do
  as_postgres psql -qtAc "select 1" >/dev/null 2>&1 && break
  sleep 1
done
as_postgres psql -qtAc "select 1 from pg_roles where rolname='bitmcu'" | grep -q 1 ||
  as_postgres psql -qc "create role bitmcu login password 'bitmcu' createdb" >/dev/null
as_postgres psql -qtAc "select 1 from pg_database where datname='bitmcu'" | grep -q 1 ||
  as_postgres createdb -O bitmcu bitmcu
echo "postgresql://bitmcu:bitmcu@localhost/bitmcu"
