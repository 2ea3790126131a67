# TEST INFRASTRUCTURE ONLY (sourced by tests/db/up.sh, never run): the two S3 servers up.sh can
# start on 127.0.0.1:$S3_PORT, chosen by $S3_SERVER. Both get the same two identities (full and
# read-only) and must pass the same checks in up.sh. Uses up.sh's variables: S3_SERVER, S3_BIN,
# S3_PORT, S3_REGION, S3_BUCKET, the S3_*ACCESS_KEY_ID / S3_*SECRET_ACCESS_KEY pairs, WORKDIR,
# LOGS, PIDS, ports_taken, deadline, START_TIMEOUT; and its helpers die, s3, s3_admin.
# Sets S3_DIR (the server's own dir under the work dir) and S3_PID.

s3_launch() {
  S3_DIR=$WORKDIR/$S3_SERVER
  mkdir -p "$S3_DIR"
  case $S3_SERVER in
    seaweedfs) seaweedfs_config; SW_LAUNCHES=1; launch_weed ;;
    versitygw) launch_versitygw ;;
  esac
}

# Until a signed ListBuckets succeeds; then checks the pid is the server (down.sh stops it by it).
s3_wait() {
  until [[ $(s3_admin GET /) == "200 -" ]]; do
    if ! kill -0 "$S3_PID" 2>/dev/null; then
      [[ $S3_SERVER == seaweedfs ]] || die "$S3_SERVER exited during startup (see $LOGS/$S3_SERVER.log)"
      relaunch_weed
    fi
    (( SECONDS < deadline )) || die "$S3_SERVER S3 did not answer within ${START_TIMEOUT}s"
    sleep 0.2
  done
  local name=weed
  [[ $S3_SERVER == versitygw ]] && name=versitygw
  tr '\0' ' ' <"/proc/$S3_PID/cmdline" | grep -q "$name" || die "pid $S3_PID is not $name"
}

# The read-only identity may read and list the bucket: SeaweedFS says so in its identity file,
# VersityGW in a bucket policy (its accounts of role "user" own nothing).
s3_grant_read_only() {
  [[ $S3_SERVER == versitygw ]] || return 0
  local policy
  policy=$(printf '{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"AWS":["%s"]},"Action":["s3:GetObject","s3:ListBucket","s3:GetBucketLocation"],"Resource":["arn:aws:s3:::%s","arn:aws:s3:::%s/*"]}]}' \
    "$S3_RO_ACCESS_KEY_ID" "$S3_BUCKET" "$S3_BUCKET")
  [[ $(s3_admin PUT "/$S3_BUCKET?policy=" "$policy") == "204 -" ]] ||
    die "could not give the read-only identity its bucket policy"
}

# ---- SeaweedFS -------------------------------------------------------------------------------
# `weed server` = master + volume + filer + S3 gateway in one process. Its internal HTTP and gRPC
# ports (it would default gRPC to HTTP+10000, past 65535 here) are the next free ones above the
# S3 port; they are recorded for down.sh, which removes the unix sockets weed keeps in /tmp.
# A port free when picked can still be taken before weed binds it (by another run, or by an
# outgoing connection if the ports were set inside the kernel's ephemeral range, 32768+):
# relaunch_weed tries again on fresh ports then.
pick_port() {  # pick_port VAR: the next free port above the S3 port, not given out yet
  local p=$((S3_PORT + 1))
  while [[ $ports_taken == *" $p "* ]] || port_in_use "$p"; do p=$((p + 1)); done
  (( p < 65536 )) || die "no free port above LFU_TEST_S3_PORT=$S3_PORT for SeaweedFS"
  ports_taken+="$p "
  printf -v "$1" '%s' "$p"
}

# Static S3 identities (0600; the keys live only here and in the env file).
seaweedfs_config() {
  mkdir -p "$S3_DIR/data"
  (
    umask 077
    cat >"$S3_DIR/s3.json" <<JSON
{
  "identities": [
    {
      "name": "lfu-admin",
      "credentials": [{ "accessKey": "$S3_ACCESS_KEY_ID", "secretKey": "$S3_SECRET_ACCESS_KEY" }],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    },
    {
      "name": "lfu-readonly",
      "credentials": [{ "accessKey": "$S3_RO_ACCESS_KEY_ID", "secretKey": "$S3_RO_SECRET_ACCESS_KEY" }],
      "actions": ["Read", "List"]
    }
  ]
}
JSON
  )
}

# cwd = its own dir: weed reads master.toml/security.toml etc. from ".", and must find none.
# Telemetry off (no traffic off this machine); the Iceberg and Lance side ports off; no bucket
# auto-creation (else a PUT into a missing bucket creates it instead of NoSuchBucket); small
# volumes (not preallocated), 64 of them (each bucket takes 7); no pre-stop delay.
launch_weed() {
  local v
  for v in SW_MASTER_PORT SW_MASTER_GRPC SW_VOLUME_PORT SW_VOLUME_GRPC SW_FILER_PORT SW_FILER_GRPC SW_S3_GRPC; do
    pick_port "$v"
  done
  echo "$SW_MASTER_PORT $SW_MASTER_GRPC $SW_VOLUME_PORT $SW_VOLUME_GRPC $SW_FILER_PORT $SW_FILER_GRPC" \
    "$S3_PORT $SW_S3_GRPC" >"$S3_DIR/ports"
  (
    cd "$S3_DIR"
    exec setsid "$S3_BIN" -logtostderr=true server \
      -ip=127.0.0.1 -ip.bind=127.0.0.1 -dir="$S3_DIR/data" \
      -master.port="$SW_MASTER_PORT" -master.port.grpc="$SW_MASTER_GRPC" \
      -master.telemetry=false -master.volumeSizeLimitMB=64 -master.defaultReplication=000 \
      -volume.port="$SW_VOLUME_PORT" -volume.port.grpc="$SW_VOLUME_GRPC" \
      -volume.max=64 -volume.preStopSeconds=0 \
      -filer.port="$SW_FILER_PORT" -filer.port.grpc="$SW_FILER_GRPC" \
      -s3 -s3.port="$S3_PORT" -s3.port.grpc="$SW_S3_GRPC" -s3.port.iceberg=0 -s3.port.lance=0 \
      -s3.autoCreateBucket=false -s3.config="$S3_DIR/s3.json"
  ) </dev/null >>"$LOGS/seaweedfs.log" 2>&1 &
  S3_PID=$!
  echo "$S3_PID" >"$PIDS/seaweedfs.pid"
}

# One of its ports was taken between the pick and the bind: again on ports not tried yet.
relaunch_weed() {
  grep -q 'address already in use' "$LOGS/seaweedfs.log" && (( SW_LAUNCHES < 3 )) ||
    die "weed server exited during startup (see $LOGS/seaweedfs.log)"
  echo "up.sh: a SeaweedFS port was taken before weed bound it; launching again" >&2
  : >"$LOGS/seaweedfs.log"
  local port
  for port in $(<"$S3_DIR/ports"); do rm -f /tmp/seaweedfs-*-"$port".sock; done
  SW_LAUNCHES=$((SW_LAUNCHES + 1))
  launch_weed
}

# ---- VersityGW -------------------------------------------------------------------------------
# `versitygw posix`: objects as files under data/, their metadata in a sidecar dir (no xattrs
# needed of the filesystem). The full identity is the gateway's root account (its keys through
# the environment, not argv); the read-only one an account of role "user" in the internal IAM
# file (0600), given read and list on the bucket by a policy once it exists. Buckets are never
# created by a PUT into them.
launch_versitygw() {
  mkdir -p "$S3_DIR/data" "$S3_DIR/sidecar" "$S3_DIR/iam"
  (
    umask 077
    printf '{"accessAccounts":{"%s":{"access":"%s","secret":"%s","role":"user","userID":0,"groupID":0,"projectID":0}}}\n' \
      "$S3_RO_ACCESS_KEY_ID" "$S3_RO_ACCESS_KEY_ID" "$S3_RO_SECRET_ACCESS_KEY" >"$S3_DIR/iam/users.json"
  )
  (
    cd "$S3_DIR"
    ROOT_ACCESS_KEY_ID=$S3_ACCESS_KEY_ID ROOT_SECRET_ACCESS_KEY=$S3_SECRET_ACCESS_KEY \
      exec setsid "$S3_BIN" --port "127.0.0.1:$S3_PORT" --region "$S3_REGION" --quiet \
      --iam-dir "$S3_DIR/iam" posix --sidecar "$S3_DIR/sidecar" "$S3_DIR/data"
  ) </dev/null >>"$LOGS/versitygw.log" 2>&1 &
  S3_PID=$!
  echo "$S3_PID" >"$PIDS/versitygw.pid"
}
