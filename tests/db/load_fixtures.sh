#!/usr/bin/env bash
# TEST INFRASTRUCTURE ONLY: load tests/db/fixtures into the instance started by
# tests/db/up.sh <workdir>: postgres_v2.sql via psql, clickhouse_v3.sql via plain ClickHouse
# HTTP (one statement per POST, as a real server requires).
#   tests/db/load_fixtures.sh <workdir> [postgres|clickhouse|all]
set -euo pipefail

die() { echo "load_fixtures.sh: $*" >&2; exit 1; }
[[ $# -ge 1 ]] || die "usage: $0 <workdir> [postgres|clickhouse|all]"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
WHAT=${2:-all}
[[ -f $1/env ]] || die "$1/env not found (run tests/db/up.sh first)"
# shellcheck disable=SC1091
. "$1/env"

load_postgres() {
  local re='^postgres://([^:]+):([^@]+)@([^:/]+):([0-9]+)/(.+)$'
  [[ $LFU_TEST_DATABASE_URL =~ $re ]] || die "cannot parse LFU_TEST_DATABASE_URL"
  # Password via environment, not argv.
  PGPASSWORD=${BASH_REMATCH[2]} /usr/lib/postgresql/15/bin/psql -X -q -v ON_ERROR_STOP=1 \
    -h "${BASH_REMATCH[3]}" -p "${BASH_REMATCH[4]}" -U "${BASH_REMATCH[1]}" -d "${BASH_REMATCH[5]}" \
    -f "$HERE/fixtures/postgres_v2.sql"
}

ch_post() {  # POST one statement; credentials via a curl config on a pipe (not argv)
  curl -sS --fail-with-body --max-time 60 \
    -K <(printf 'user = "%s:%s"\n' "$LFU_TEST_CLICKHOUSE_USER" "$LFU_TEST_CLICKHOUSE_PASSWORD") \
    --data-binary @- "$LFU_TEST_CLICKHOUSE_URL/"
}

load_clickhouse() {
  local stmt="" line n=0
  while IFS= read -r line || [[ -n $line ]]; do
    [[ $line =~ ^[[:space:]]*(--.*)?$ ]] && continue   # blank or comment-only line
    stmt+="$line"$'\n'
    if [[ $line =~ \;[[:space:]]*$ ]]; then
      printf '%s' "$stmt" | ch_post >/dev/null || die "ClickHouse statement failed: ${stmt:0:120}"
      stmt="" n=$((n + 1))
    fi
  done <"$HERE/fixtures/clickhouse_v3.sql"
  [[ -z ${stmt//[[:space:]]/} ]] || die "clickhouse_v3.sql: trailing statement without ';'"
  echo "load_fixtures.sh: clickhouse: $n statements" >&2
}

case $WHAT in
  postgres) load_postgres ;;
  clickhouse) load_clickhouse ;;
  all) load_postgres; load_clickhouse ;;
  *) die "unknown target $WHAT" ;;
esac
