# Shell helpers shared by the tier scripts (sourced, never run).

# True when something listens on 127.0.0.1:$1.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# The first free port at or above $1.
free_port() {
  local p=$1
  while port_in_use "$p"; do p=$((p + 1)); done
  echo "$p"
}

# Bring up the control plane and the databases under $1 (a fresh work dir) for a tier that
# needs both, export their env files, and tear everything down on exit, keeping the exit code.
with_cluster_and_databases() {
  LFU_WORK="$1"
  # PostgreSQL runs as the postgres user, which must reach its data dir under here.
  chmod 755 "$LFU_WORK"
  trap 'rc=$?; tests/cluster/down.sh "$LFU_WORK/cluster" >/dev/null 2>&1 || true; tests/db/down.sh "$LFU_WORK/db" >/dev/null 2>&1 || true; rm -rf "$LFU_WORK"; exit $rc' EXIT INT TERM
  tests/cluster/up.sh "$LFU_WORK/cluster"
  tests/db/up.sh "$LFU_WORK/db"
  export LFU_TEST_CLUSTER_ENV="$LFU_WORK/cluster/env" LFU_TEST_DB_ENV="$LFU_WORK/db/env"
}
