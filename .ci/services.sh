#!/usr/bin/env bash
# Services for tests/tracking in CI: headless Chromium + chromedriver (the MLflow UI check)
# and PostgreSQL with a role and a database for MLflow (the backend check).
#
# Idempotent; runs as root (as .ci/run does) or through sudo. Exports nothing: the tests
# find the database at the URI printed at the end (tests/tracking/conftest.py: CI_PG_URI,
# role cpsweep may CREATEDB, so each test session works in a fresh database of its own),
# or wherever $CPSWEEP_TEST_PG_URI points if a job sets it.
set -euo pipefail

PG_PORT=5432
PG_ROLE=cpsweep
PG_PASSWORD=cpsweep
PG_DB=cpsweep_test

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
as_postgres() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }

echo "== services: apt packages"
export DEBIAN_FRONTEND=noninteractive
need=()
for pkg in chromium chromium-driver postgresql; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
if [ "${#need[@]}" -gt 0 ]; then
    as_root apt-get update -q
    as_root apt-get install -y -q --no-install-recommends "${need[@]}"
fi
chromium --version 2>/dev/null | grep -m1 -i chromium || { echo "chromium did not install" >&2; exit 1; }
chromedriver --version | head -1

echo "== services: PostgreSQL cluster"
# Debian's postgresql package creates <version>/main; a container may lack it or have it down.
ver=$(ls /usr/lib/postgresql | sort -n | tail -1)
if ! pg_lsclusters -h | awk '{print $1"/"$2}' | grep -qx "$ver/main"; then
    as_root pg_createcluster "$ver" main --port "$PG_PORT"
fi
port=$(pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $3}')
if [ "$port" != "$PG_PORT" ]; then
    echo "cluster $ver/main listens on $port, the tests look on $PG_PORT;" \
         "set CPSWEEP_TEST_PG_URI for the test job" >&2
fi
if ! pg_lsclusters -h | awk -v v="$ver" '$1==v && $2=="main" {print $4}' | grep -q online; then
    as_root pg_ctlcluster "$ver" main start
fi
pg_isready -h 127.0.0.1 -p "$port" -t 60

echo "== services: role $PG_ROLE and database $PG_DB"
as_postgres psql -p "$port" -v ON_ERROR_STOP=1 -q <<SQL
DO \$\$ BEGIN
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_ROLE') THEN
    CREATE ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  ELSE
    ALTER ROLE $PG_ROLE LOGIN CREATEDB PASSWORD '$PG_PASSWORD';
  END IF;
END \$\$;
SQL
if ! as_postgres psql -p "$port" -tAc "SELECT 1 FROM pg_database WHERE datname = '$PG_DB'" | grep -q 1; then
    as_postgres createdb -p "$port" -O "$PG_ROLE" "$PG_DB"
fi
# Password login over TCP, as MLflow connects (Debian's pg_hba allows scram on 127.0.0.1).
PGPASSWORD="$PG_PASSWORD" psql -h 127.0.0.1 -p "$port" -U "$PG_ROLE" -d "$PG_DB" -tAc "SELECT 'ok'" | grep -qx ok
echo "== services: ready: postgresql://$PG_ROLE:$PG_PASSWORD@127.0.0.1:$port/$PG_DB"
