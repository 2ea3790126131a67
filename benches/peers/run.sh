#!/usr/bin/env bash
# BENCHMARK (measured, not asserted): Argo Rollouts' blue-green switch and its controller's
# resting cost, on the project's own local control plane (tests/cluster/up.sh, kwok nodes).
#
#   1. builds rollouts-controller (benches/peers/build-argo.sh, cached) and the Go driver;
#   2. starts a throwaway control plane, installs Argo's CRDs from the pinned module and runs
#      the controller as a plain process under the cluster's separate, audited identity
#      (LFU_OPERATOR_KUBECONFIG = user lfu-operator; the audit policy logs only that user);
#   3. RSS 30 s after start with no Rollouts;
#   4. BENCH_RUNS blue-green switches of a 2-replica Rollout (driver switch): per run
#      (a) new ReplicaSet has all replicas available -> active Service selector switched,
#      (b) switched -> EndpointSlices list only the new pods,
#      from the arrival times of client-go watches on ReplicaSets, the Service and its
#      EndpointSlices (checked against the audit log's stageTimestamp of the Service write);
#   5. BENCH_PAUSED (200) paused Rollouts, then RSS, CPU seconds (/proc/<pid>/stat) and API
#      writes/min by the controller's identity (audit log) over BENCH_REST_SECONDS at rest;
#   6. writes target/bench-peers/argo.md (+ argo-runs.tsv, argo-rest-requests.txt,
#      argo-controller.log) and prints the table. The control plane is always torn down.
# Ours on the same control plane, in the same run (BENCH_OURS=1, the default), with the test
# databases started too (tests/db/up.sh):
#   - each Argo switch is followed by one of ours: the e2e happy path (a v2 behind its Service,
#     the operator's release build), timed from the e2e observer's watch arrival times: v3 web
#     and worker Available -> selector switched -> EndpointSlices only v3;
#   - after Argo's rest window Argo is stopped and our operator (release build, same identity,
#     leader election on) gets the same idle / BENCH_PAUSED paused upgrades / rest measures;
#   - then half of its paused upgrades are made Blocked on databases that refuse (each with a
#     v2 Deployment, Service and Secrets) and the rest window is measured again;
#   - target/bench-peers/ours.md, ours-blocked.md and peers.md (both side by side, with ours /
#     theirs).
#   - BENCH_BEFORE_REV=<git rev>: an earlier build of ours too, in the same runs (each run its
#     switch beside ours, their order alternated), for "before/after from one run": built once
#     from a git worktree into target/bench-peers/before-<rev> (BENCH_BEFORE_TARGET_DIR to reuse
#     a build; BENCH_BEFORE_BIN=<binary> uses one made beforehand), the switch figures of both
#     in target/bench-peers/before-after.md;
#   - ours is the image's static musl release build; BENCH_OURS_TARGET=gnu the host's glibc
#     build, whose allocator keeps the high-water mark of a burst (about 18 MiB more at rest
#     after 100 upgrades turned Blocked at once).
#
# Env: BENCH_RUNS (20), BENCH_REST_SECONDS (300), BENCH_IDLE_SECONDS (30), BENCH_PAUSED (200),
#      BENCH_ARGO_SCOPE (namespaced | cluster; namespaced = --namespaced on one bench namespace,
#      a fresh Rollout per run; cluster = cluster-wide controller, a fresh namespace per run),
#      BENCH_KEEP_WORKDIR=1 keeps the temp dir (cluster logs), BENCH_OURS (1; 0: Argo only),
#      BENCH_OURS_HEAPTRACK=1: the resting operator (idle, paused, blocked) is the `profiling`
#      build (release with symbols) run under heaptrack, and target/bench-peers/ours-heap.txt
#      says where its heap went; its RSS and CPU figures then include heaptrack's and are not
#      comparable.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd "$here/../.." && pwd -P)"
runs="${BENCH_RUNS:-20}"
rest="${BENCH_REST_SECONDS:-300}"
idle="${BENCH_IDLE_SECONDS:-30}"
paused="${BENCH_PAUSED:-200}"
scope="${BENCH_ARGO_SCOPE:-namespaced}"
ours="${BENCH_OURS:-1}"
ns=argo-bench
out="$repo/target/bench-peers"
mkdir -p "$out/bin"
log() { echo "bench-peers: $*" >&2; }
die() { log "$*"; exit 1; }

# --- binaries ------------------------------------------------------------------------------
argo_bin="$("$here/build-argo.sh")"
log "building the driver"
(cd "$here/driver" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
  nice -n 10 go build -trimpath -o "$out/bin/driver" .)
driver="$out/bin/driver"
if [[ "$ours" == 1 ]]; then
  # The image's build (static musl) by default: its allocator gives freed memory back, so its
  # RSS is the one users see. BENCH_OURS_TARGET=gnu measures the host (glibc) build instead.
  source "$repo/tests/lib.sh"
  case "${BENCH_OURS_TARGET:-musl}" in
    musl) triple="$(ensure_musl_target)" ;;
    gnu) triple="" ;;
    *) die "BENCH_OURS_TARGET must be musl or gnu" ;;
  esac
  target_args=()
  [[ -z $triple ]] || target_args=(--target "$triple")
  log "building the operator (release${triple:+, $triple}) and the e2e test binary"
  (cd "$repo" && nice -n 10 cargo build --release --locked "${target_args[@]}" --bin langfuse-upgrade-operator >&2 \
    && nice -n 10 cargo test --locked --test e2e --no-run >&2)
  ours_bin="$repo/target/${triple:+$triple/}release/langfuse-upgrade-operator"
  rest_bin="$ours_bin"
  before_bin=""
  if [[ -n ${BENCH_BEFORE_BIN:-} ]]; then
    # A build made beforehand (the same target as ours), labelled by BENCH_BEFORE_REV.
    [[ -x $BENCH_BEFORE_BIN ]] || die "BENCH_BEFORE_BIN: not an executable: $BENCH_BEFORE_BIN"
    before_bin="$BENCH_BEFORE_BIN"
    before_rev="${BENCH_BEFORE_REV:-before}"
  elif [[ -n ${BENCH_BEFORE_REV:-} ]]; then
    before_rev="$(git -C "$repo" rev-parse --short "$BENCH_BEFORE_REV")" || die "BENCH_BEFORE_REV: no such commit"
    before_src="$out/before-src-$before_rev"
    before_target="${BENCH_BEFORE_TARGET_DIR:-$out/before-$before_rev}"
    [[ -d $before_src ]] || git -C "$repo" worktree add --detach "$before_src" "$before_rev" >&2
    log "building the operator at $before_rev (release${triple:+, $triple}) for before/after"
    (cd "$before_src" && CARGO_TARGET_DIR="$before_target" nice -n 10 cargo build --release --locked \
      "${target_args[@]}" --bin langfuse-upgrade-operator >&2)
    before_bin="$before_target/${triple:+$triple/}release/langfuse-upgrade-operator"
  fi
  if [[ ${BENCH_OURS_HEAPTRACK:-0} == 1 ]]; then
    command -v heaptrack >/dev/null || die "BENCH_OURS_HEAPTRACK=1 needs heaptrack (apt-get install heaptrack)"
    (cd "$repo" && nice -n 10 cargo build --profile profiling --locked --bin langfuse-upgrade-operator >&2)
    rest_bin="$repo/target/profiling/langfuse-upgrade-operator"
  fi
fi
argo_mod="$(cd "$here/go/argo-rollouts" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' github.com/argoproj/argo-rollouts)"
argo_version="$(awk '$1 == "github.com/argoproj/argo-rollouts" && $2 ~ /^v/ { print $2; exit }' "$here/go/argo-rollouts/go.mod")"

# --- control plane (always torn down) --------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/lfu-bench-peers.XXXXXX")"
argo_pid=""
ours_pid=""
teardown() {
  local rc=$?
  if [[ -n "$argo_pid" ]] && kill -0 "$argo_pid" 2>/dev/null; then
    kill -TERM "$argo_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$argo_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$argo_pid" 2>/dev/null || true
  fi
  [[ -f "$work/argo.log" ]] && cp -f "$work/argo.log" "$out/argo-controller.log"
  if [[ -n "$ours_pid" ]] && kill -0 "$ours_pid" 2>/dev/null; then
    kill -TERM "$ours_pid" 2>/dev/null || true
    sleep 1
    kill -KILL "$ours_pid" 2>/dev/null || true
  fi
  [[ -f "$work/ours.log" ]] && cp -f "$work/ours.log" "$out/ours-controller.log"
  [[ -d "$work/db" ]] && "$repo/tests/db/down.sh" "$work/db" >/dev/null 2>&1 || true
  if [[ "${BENCH_KEEP_WORKDIR:-0}" == 1 ]]; then
    LFU_KEEP_WORKDIR=1 "$repo/tests/cluster/down.sh" "$work/cluster" >/dev/null 2>&1 || true
    log "kept $work"
  else
    "$repo/tests/cluster/down.sh" "$work/cluster" >/dev/null 2>&1 || true
    rm -rf -- "$work"
  fi
  exit "$rc"
}
trap teardown EXIT
trap 'exit 130' INT TERM

load_before="$(cut -d' ' -f1-3 /proc/loadavg)"
"$repo/tests/cluster/up.sh" "$work/cluster"
# shellcheck disable=SC1091
. "$work/cluster/env"   # KUBECONFIG (admin, for the driver), LFU_OPERATOR_KUBECONFIG, LFU_AUDIT_LOG

if [[ "$ours" == 1 ]]; then
  source "$repo/tests/lib.sh"
  mkdir -p "$work/db" && chmod 755 "$work"
  (cd "$repo" && pick_db_ports && tests/db/up.sh "$work/db" >&2)
  export LFU_TEST_CLUSTER_ENV="$work/cluster/env" LFU_TEST_DB_ENV="$work/db/env"
  export LFU_OPERATOR_BIN="$ours_bin"
fi
kubectl create namespace "$ns" >/dev/null
for f in "$argo_mod"/manifests/crds/*-crd.yaml; do
  kubectl apply --server-side -f "$f" >/dev/null
done
# Polled: `kubectl wait` fails at once on a CRD created a moment ago that has no conditions yet.
established() { # established <crd>...
  local crd
  for crd in "$@"; do
    for _ in $(seq 1 120); do
      [[ "$(kubectl get crd "$crd" -o jsonpath='{.status.conditions[?(@.type=="Established")].status}')" == True ]] && continue 2
      sleep 0.5
    done
    log "CRD $crd not Established after 60 s"; exit 1
  done
}
established rollouts.argoproj.io analysisruns.argoproj.io analysistemplates.argoproj.io \
  clusteranalysistemplates.argoproj.io experiments.argoproj.io

# --- the controller ------------------------------------------------------------------------
source "$repo/tests/lib.sh"
metrics_port="$(free_port $((33000 + RANDOM % 2000)))"
healthz_port="$(free_port $((metrics_port + 1)))"
scope_args=()
switch_args=(-namespace "$ns")
if [[ "$scope" == namespaced ]]; then
  scope_args=(--namespaced --namespace "$ns")
else
  switch_args=(-namespace "argo-run" -namespace-per-run)
fi
# POD_NAMESPACE: where Argo keeps its leader-election Lease (in-cluster it is the pod's own).
# Leader election stays on, as in Argo's own install manifests.
POD_NAMESPACE="$ns" "$argo_bin" --kubeconfig "$LFU_OPERATOR_KUBECONFIG" "${scope_args[@]}" \
  --metricsPort "$metrics_port" --healthzPort "$healthz_port" --loglevel info \
  </dev/null >"$work/argo.log" 2>&1 &
argo_pid=$!
started=$SECONDS
log "rollouts-controller $argo_version pid $argo_pid ($scope), waiting for its leader Lease"
until kubectl -n "$ns" get lease argo-rollouts-controller-lock >/dev/null 2>&1; do
  kill -0 "$argo_pid" 2>/dev/null || { tail -n 30 "$work/argo.log" >&2; log "controller exited"; exit 1; }
  (( SECONDS - started < 90 )) || { tail -n 30 "$work/argo.log" >&2; log "no leader Lease after 90 s"; exit 1; }
  sleep 0.5
done

rss_mib() { awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$argo_pid/status"; }
# utime + stime (fields 14, 15 of /proc/<pid>/stat; the comm field has no spaces here), seconds.
cpu_s() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$argo_pid/stat"; }

sleep $(( idle - (SECONDS - started) > 0 ? idle - (SECONDS - started) : 0 ))
rss_idle="$(rss_mib)"
log "RSS ${idle}s after start, no Rollouts: $rss_idle MiB"

# --- the switches --------------------------------------------------------------------------
# One of ours: the e2e happy path, its observer's timeline (µs since it started watching) turned
# into the same columns as the driver's: (a) the later of v3 web and worker Available -> the
# selector switched, (b) switched -> the EndpointSlices list only v3 web.
ours_switch() { # ours_switch <run>
  local t
  local failed=""
  t="$(cd "$repo" && cargo test --locked --test e2e -- --include-ignored --exact --nocapture \
    happy_path_completes_and_every_invariant_holds_throughout 2>&1)" || failed=1
  # An earlier build (BENCH_BEFORE_*) may fail this tree's later assertions (the invariants it
  # predates): its switch still counts when the run completed and printed its timeline first.
  if [[ -n $failed ]] && ! grep -q '^completed in' <<<"$t"; then
    printf '%s\t0\t\t\t\t\t\t%s\n' "$1" "the e2e happy path failed"; return 0
  fi
  local note=""
  [[ -z $failed ]] || note="completed; later assertions of this tree failed"
  awk -v run="$1" -v note="$note" -F'": ' '
    /"prod-langfuse-web available [0-9]+"/ { gsub(/[^0-9]/, "", $2); web = $2 }
    /"prod-langfuse-worker available [0-9]+"/ { gsub(/[^0-9]/, "", $2); worker = $2 }
    /"selector switched"/ { gsub(/[^0-9]/, "", $2); sw = $2 }
    /"endpoints only v3"/ { gsub(/[^0-9]/, "", $2); only = $2 }
    END {
      avail = (web + 0 > worker + 0) ? web : worker
      if (sw == "" || only == "" || avail == "") { printf "%s\t0\t\t\t\t\t\tno timeline\n", run; exit }
      printf "%s\t1\t\t\t%.3f\t%.3f\t\t%s\n", run, (sw - avail) / 1000, (only - sw) / 1000, note
    }' <<<"$t"
}

# before_after: the switch figures of the earlier build and ours from the same runs (p50, p90,
# max, nearest rank; and every value sorted), as markdown.
before_after() {
  stats() { # stats <tsv> <column>
    awk -F'\t' -v c="$2" 'NR > 1 && $2 == 1 && $c != "" { print $c }' "$1" | sort -g | awk '
      { v[NR] = $1 } END {
        if (NR == 0) { print "-\t-\t-\t"; exit }
        p50 = v[int((NR * 50 + 99) / 100)]; p90 = v[int((NR * 90 + 99) / 100)]
        all = ""; for (i = 1; i <= NR; i++) all = all (i > 1 ? " " : "") sprintf("%.1f", v[i])
        printf "%.1f\t%.1f\t%.1f\t%s\n", p50, p90, v[NR], all }'
  }
  echo "## Before ($before_rev) and after ($(git -C "$repo" rev-parse --short HEAD)), the same $runs runs ($(date -u +%Y-%m-%d))"
  echo
  echo "| | before p50 / p90 / max | after p50 / p90 / max | after / before p50 |"
  echo "|---|---|---|---|"
  for col in 5:"v3 Available -> selector switched" 6:"switched -> EndpointSlices only v3"; do
    IFS=$'\t' read -r b50 b90 bmax _ < <(stats "$out/before-runs.tsv" "${col%%:*}")
    IFS=$'\t' read -r a50 a90 amax _ < <(stats "$out/ours-runs.tsv" "${col%%:*}")
    ratio="$(awk -v a="$a50" -v b="$b50" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "-" }')"
    echo "| ${col#*:} | $b50 / $b90 / $bmax ms | $a50 / $a90 / $amax ms | $ratio |"
  done
  echo
  echo "Sorted (ms), selector switch: before $(stats "$out/before-runs.tsv" 5 | cut -f4); after $(stats "$out/ours-runs.tsv" 5 | cut -f4)."
}

if [[ "$ours" == 1 ]]; then
  log "$runs blue-green switches of Argo, each followed by one upgrade of ours${before_bin:+ and one of $before_rev}"
  header="run	ok	patch_to_rs_created_ms	patch_to_rs_available_ms	a_available_to_switched_ms	b_switched_to_endpoints_ms	svc_watch_lag_ms	note"
  echo "$header" >"$out/argo-runs.tsv"
  echo "$header" >"$out/ours-runs.tsv"
  [[ -z ${before_bin:-} ]] || echo "$header" >"$out/before-runs.tsv"
  for i in $(seq 1 "$runs"); do
    run_args=("${switch_args[@]}")
    [[ "$scope" == namespaced ]] || run_args=(-namespace "argo-run-$i" -namespace-per-run)
    "$driver" switch -kubeconfig "$KUBECONFIG" "${run_args[@]}" -runs 1 \
      -audit "$LFU_AUDIT_LOG" -audit-user lfu-operator -out "$work/argo-run.tsv"
    tail -n +2 "$work/argo-run.tsv" | awk -v run="$i" 'BEGIN { FS = OFS = "\t" } { $1 = run; print }' >>"$out/argo-runs.tsv"
    ours_one() { ours_switch "$i" | tee -a "$out/ours-runs.tsv" | awk -F'\t' '{ printf "bench-peers: ours %s/'"$runs"': available->switched %s ms, switched->endpoints only v3 %s ms %s\n", $1, $5, $6, $8 }' >&2; }
    before_one() { LFU_OPERATOR_BIN="$before_bin" ours_switch "$i" | tee -a "$out/before-runs.tsv" | awk -F'\t' '{ printf "bench-peers: before %s/'"$runs"': available->switched %s ms, switched->endpoints only v3 %s ms %s\n", $1, $5, $6, $8 }' >&2; }
    if [[ -z $before_bin ]]; then
      ours_one
    elif (( i % 2 )); then
      ours_one; before_one
    else
      before_one; ours_one
    fi
  done
  [[ -z $before_bin ]] || before_after >"$out/before-after.md"
else
  log "$runs blue-green switches"
  "$driver" switch -kubeconfig "$KUBECONFIG" "${switch_args[@]}" -runs "$runs" \
    -audit "$LFU_AUDIT_LOG" -audit-user lfu-operator -out "$out/argo-runs.tsv"
fi

# --- at rest with paused Rollouts ----------------------------------------------------------
log "$paused paused Rollouts"
"$driver" paused -kubeconfig "$KUBECONFIG" -namespace "$ns" -count "$paused"
sleep 30   # let the creation burst settle before the rest window
rss_paused="$(rss_mib)"
log "RSS with $paused paused Rollouts: $rss_paused MiB; resting ${rest}s"
# rest_window <name>: the controller ($argo_pid) over $rest s at rest: its CPU seconds in
# $rest_cpu, its API requests by verb/resource/code in $out/<name>-rest-requests.txt.
rest_window() {
  local from to cpu1 cpu2
  from="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
  cpu1="$(cpu_s)"
  sleep "$rest"
  cpu2="$(cpu_s)"
  to="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
  sleep 1   # the audit log backend writes the last entries
  "$driver" audit-writes -audit "$LFU_AUDIT_LOG" -user lfu-operator -from "$from" -to "$to" >"$out/$1-rest-requests.txt"
  rest_cpu="$(awk -v a="$cpu1" -v b="$cpu2" 'BEGIN { printf "%.2f", b - a }')"
}
# req <name> <key>: one figure of that window (requests, writes, lease_writes).
req() { awk -v k="$2" '$1 == k { print $2 }' "$out/$1-rest-requests.txt"; }
rest_window argo
cpu_rest="$rest_cpu"
kill -0 "$argo_pid" || { log "controller died during the run"; exit 1; }
load_after="$(cut -d' ' -f1-3 /proc/loadavg)"

notes="Argo Rollouts $argo_version (rollouts-controller built from the Go module, CGO_ENABLED=0), scope: $scope"
notes+=" (namespace $ns), leader election on (Argo's default: Lease renewed every 2 s), user lfu-operator."
notes+=" Control plane: tests/cluster/up.sh (v1.34.10, kwok nodes). Rollout: 2 replicas, blueGreen,"
notes+=" activeService only, autoPromotionEnabled, scaleDownDelaySeconds 3; paused set: 1 replica each,"
notes+=" spec.paused, each with its Service. Rest window ${rest} s after a 30 s settle."
notes+=" Load average before/after: $load_before / $load_after on $(nproc) cores."
notes+=" Raw runs: target/bench-peers/argo-runs.tsv; rest requests by verb/resource/code:"
notes+=" target/bench-peers/argo-rest-requests.txt."
# report <name> <title> <rss idle> <rss paused> <cpu s> <notes>: $out/<name>.md (printed) and
# $out/<name>-cost.tsv (for `driver compare`), from <name>-runs.tsv and <name>'s rest window.
report() {
  local name="$1" title="$2" idle_mib="$3" paused_mib="$4" cpu="$5" text="$6"
  "$driver" report -raw "$out/$name-runs.tsv" -title "$title" \
    -rss-idle-mib "$idle_mib" -rss-paused-mib "$paused_mib" -paused "$paused" \
    -cpu-s "$cpu" -rest-s "$rest" -writes "$(req "$name" writes)" -lease-writes "$(req "$name" lease_writes)" \
    -requests "$(req "$name" requests)" -notes "$text" >"$out/$name.md"
  cat "$out/$name.md"
  printf 'rss_idle %s\nrss_paused %s\ncpu_s %s\nrest_s %s\nwrites %s\nrequests %s\n' \
    "$idle_mib" "$paused_mib" "$cpu" "$rest" "$(req "$name" writes)" "$(req "$name" requests)" >"$out/$name-cost.tsv"
}
report argo "Argo Rollouts $argo_version" "$rss_idle" "$rss_paused" "$cpu_rest" "$notes"

# --- ours at rest ----------------------------------------------------------------------------
[[ "$ours" == 1 ]] || exit 0
log "stopping Argo; our operator at rest"
kill -TERM "$argo_pid" 2>/dev/null || true
for _ in $(seq 1 50); do kill -0 "$argo_pid" 2>/dev/null || break; sleep 0.2; done
kill -KILL "$argo_pid" 2>/dev/null || true
argo_pid=""
ours_ns=lfu-bench
kubectl create namespace "$ours_ns" >/dev/null
kubectl apply --server-side -f "$repo/crds/langfuseupgrades.yaml" >/dev/null
established langfuseupgrades.upgrades.lfu-operator.dev
ours_port="$(free_port $((36000 + RANDOM % 2000)))"
# As in the chart's default install: cluster-wide, leader election on (Lease in its namespace).
heap_prefix=()
[[ ${BENCH_OURS_HEAPTRACK:-0} == 1 ]] && heap_prefix=(heaptrack -o "$work/ours.heaptrack")
KUBECONFIG="$LFU_OPERATOR_KUBECONFIG" RUST_LOG=info,kube=warn "${heap_prefix[@]}" "$rest_bin" run \
  --lease-namespace "$ours_ns" --identity bench --http-addr "127.0.0.1:$ours_port" \
  </dev/null >"$work/ours.log" 2>&1 &
ours_pid=$!
if [[ ${#heap_prefix[@]} -gt 0 ]]; then
  # heaptrack's script runs the operator as its child (its subshells name the binary in their
  # command lines too): measure and stop the process that runs the binary itself.
  wrapper=$ours_pid ours_pid=""
  for _ in $(seq 1 100); do
    for p in $(pgrep -f "$rest_bin" || true); do
      [[ $(readlink "/proc/$p/exe" 2>/dev/null) == "$rest_bin" ]] && ours_pid=$p
    done
    [[ -n $ours_pid ]] && break
    sleep 0.1
  done
  [[ -n $ours_pid ]] || die "heaptrack did not start the operator"
fi
started=$SECONDS
until curl -fsS "http://127.0.0.1:$ours_port/readyz" >/dev/null 2>&1; do
  kill -0 "$ours_pid" 2>/dev/null || { tail -n 30 "$work/ours.log" >&2; log "our operator exited"; exit 1; }
  (( SECONDS - started < 90 )) || { tail -n 30 "$work/ours.log" >&2; log "not ready after 90 s"; exit 1; }
  sleep 0.5
done
argo_pid="$ours_pid"   # rss_mib and cpu_s read $argo_pid
sleep $(( idle - (SECONDS - started) > 0 ? idle - (SECONDS - started) : 0 ))
ours_rss_idle="$(rss_mib)"
log "ours: RSS ${idle}s after start, no upgrades: $ours_rss_idle MiB"
# Paused upgrades, each naming its own (missing) v2: planned once, then nothing moves.
for i in $(seq 1 "$paused"); do
  cat <<YAML
---
apiVersion: upgrades.lfu-operator.dev/v1alpha1
kind: LangfuseUpgrade
metadata: { name: paused-$i, namespace: $ours_ns }
spec:
  paused: true
  source: { deployment: langfuse-$i, service: langfuse-$i }
  target: { version: "3.29.0" }
  clickhouse:
    url: http://clickhouse:8123
    migrationUrl: clickhouse://clickhouse:9000
    userSecretRef: { name: ch, key: user }
    passwordSecretRef: { name: ch, key: password }
  redis: { connectionStringSecretRef: { name: redis, key: url } }
  s3:
    bucket: events
    region: eu-west-1
    accessKeyIdSecretRef: { name: s3, key: id }
    secretAccessKeySecretRef: { name: s3, key: secret }
  backup: { acknowledged: true, reference: bench }
YAML
done | kubectl apply --server-side -f - >/dev/null
sleep 30
ours_rss_paused="$(rss_mib)"
phases="$(kubectl -n "$ours_ns" get langfuseupgrades -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | sort | uniq -c | tr -s ' ' | paste -sd, -)"
log "ours: RSS with $paused paused upgrades ($phases): $ours_rss_paused MiB; resting ${rest}s"
rest_window ours
ours_cpu="$rest_cpu"
kill -0 "$ours_pid" || { log "our operator died during the run"; exit 1; }

# --- ours with half of the set Blocked on databases that refuse --------------------------------
# As a new user would meet it (issue 13): each of these names a v2 that exists (its Deployment,
# Service and Secrets), whose Postgres, ClickHouse, Redis and S3 refuse connections (each at its
# own loopback address, so each has its own clients); preflight blocks and re-checks once a
# minute. The other half stays paused.
blocked=$(( paused / 2 ))
for i in $(seq 1 "$blocked"); do
  host="127.0.$(( i / 250 )).$(( i % 250 + 2 ))"
  cat <<YAML
---
apiVersion: v1
kind: Secret
metadata: { name: langfuse-$i, namespace: $ours_ns }
stringData:
  database-url: postgresql://lf:bench@$host:1/langfuse
  ch-user: lf
  ch-password: bench
  redis-url: redis://default:bench@$host:1/0
  s3-id: bench
  s3-secret: bench
---
apiVersion: apps/v1
kind: Deployment
metadata: { name: langfuse-$i, namespace: $ours_ns }
spec:
  replicas: 1
  selector: { matchLabels: { app: langfuse-$i } }
  template:
    metadata: { labels: { app: langfuse-$i } }
    spec:
      containers:
        - name: langfuse
          image: langfuse/langfuse:2.95.9
          ports: [{ name: http, containerPort: 3000 }]
          env:
            - name: DATABASE_URL
              valueFrom: { secretKeyRef: { name: langfuse-$i, key: database-url } }
---
apiVersion: v1
kind: Service
metadata: { name: langfuse-$i, namespace: $ours_ns }
spec:
  selector: { app: langfuse-$i }
  ports: [{ name: http, port: 3000, targetPort: http }]
---
apiVersion: upgrades.lfu-operator.dev/v1alpha1
kind: LangfuseUpgrade
metadata: { name: paused-$i, namespace: $ours_ns }
spec:
  paused: false
  source: { deployment: langfuse-$i, service: langfuse-$i }
  target: { version: "3.29.0" }
  clickhouse:
    url: http://$host:1
    migrationUrl: clickhouse://$host:1
    userSecretRef: { name: langfuse-$i, key: ch-user }
    passwordSecretRef: { name: langfuse-$i, key: ch-password }
  redis: { connectionStringSecretRef: { name: langfuse-$i, key: redis-url } }
  s3:
    bucket: events
    region: eu-west-1
    endpoint: http://$host:1
    forcePathStyle: true
    accessKeyIdSecretRef: { name: langfuse-$i, key: s3-id }
    secretAccessKeySecretRef: { name: langfuse-$i, key: s3-secret }
  backup: { acknowledged: true, reference: bench }
YAML
done | kubectl apply --server-side -f - >/dev/null
sleep 60   # the first preflights, then one minute's re-check
ours_rss_blocked="$(rss_mib)"
blocked_phases="$(kubectl -n "$ours_ns" get langfuseupgrades -o jsonpath='{range .items[*]}{.status.phase}{"\n"}{end}' | sort | uniq -c | tr -s ' ' | paste -sd, -)"
blocked_reasons="$(kubectl -n "$ours_ns" get langfuseupgrades -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="PreflightPassed")].reason}{"\n"}{end}' | grep . | sort | uniq -c | tr -s ' ' | paste -sd, -)"
log "ours: RSS with $blocked blocked + $(( paused - blocked )) paused upgrades ($blocked_phases; $blocked_reasons): $ours_rss_blocked MiB; resting ${rest}s"
rest_window ours-blocked
ours_blocked_cpu="$rest_cpu"
kill -0 "$ours_pid" || { log "our operator died during the run"; exit 1; }
{
  echo "## langfuse-upgrade-operator at rest with $blocked Blocked and $(( paused - blocked )) paused upgrades"
  echo
  echo "| | value |"
  echo "|---|---|"
  echo "| phases | $blocked_phases ($blocked_reasons) |"
  echo "| RSS | $ours_rss_blocked MiB |"
  echo "| CPU over ${rest} s | $ours_blocked_cpu s |"
  echo "| API requests per minute, all verbs | $(awk -v r="$(req ours-blocked requests)" -v s="$rest" 'BEGIN { printf "%.1f", r * 60 / s }') |"
  echo "| API writes per minute | $(awk -v r="$(req ours-blocked writes)" -v s="$rest" 'BEGIN { printf "%.1f", r * 60 / s }') |"
  echo
  echo "Requests by verb, resource and code: target/bench-peers/ours-blocked-rest-requests.txt."
} >"$out/ours-blocked.md"
cat "$out/ours-blocked.md"
if [[ ${BENCH_OURS_HEAPTRACK:-0} == 1 ]]; then
  # Stop it cleanly so heaptrack writes its data, then say where the heap went.
  kill -TERM "$ours_pid"
  # heaptrack interprets and compresses its data after the operator exits.
  for _ in $(seq 1 600); do kill -0 "$wrapper" 2>/dev/null || break; sleep 0.2; done
  data="$(find "$work" -maxdepth 1 -name 'ours.heaptrack.*' | head -n 1)"
  [[ -n $data ]] || die "no heaptrack data in $work"
  heaptrack_print -f "$data" --print-peaks yes --print-allocators yes --print-temporary no \
    --print-leaks no --peak-limit 25 >"$out/ours-heap.txt" 2>&1 || die "heaptrack_print failed"
  log "where the resting operator's heap went: $out/ours-heap.txt"
fi
ours_version="$("$ours_bin" --version 2>/dev/null || echo langfuse-upgrade-operator)"
onotes="$ours_version (release build, ${triple:-host glibc}), cluster-wide, leader election on, user lfu-operator, on the same"
onotes+=" control plane as Argo above, its switches alternated with Argo's. Switch: the e2e happy path"
onotes+=" (v2 with 2 replicas behind its Service, v3 web 2 + worker 1 on kwok, the test databases),"
onotes+=" timed from the e2e observer's watch arrival times (ms). Paused set: $paused upgrades"
onotes+=" ($phases). Raw runs: target/bench-peers/ours-runs.tsv; rest requests:"
onotes+=" target/bench-peers/ours-rest-requests.txt."
report ours "langfuse-upgrade-operator" "$ours_rss_idle" "$ours_rss_paused" "$ours_cpu" "$onotes"
{
  echo "## Argo Rollouts $argo_version and langfuse-upgrade-operator on one control plane ($(date -u +%Y-%m-%d))"
  echo
  "$driver" compare -theirs "Argo Rollouts $argo_version" -paused "$paused" \
    -theirs-raw "$out/argo-runs.tsv" -theirs-cost "$out/argo-cost.tsv" \
    -ours-raw "$out/ours-runs.tsv" -ours-cost "$out/ours-cost.tsv"
  echo
  echo "$runs alternated runs each, release builds, load average before/after: $load_before / $(cut -d' ' -f1-3 /proc/loadavg)."
  echo "Details: target/bench-peers/argo.md, target/bench-peers/ours.md; ours with half the set Blocked:"
  echo "target/bench-peers/ours-blocked.md."
} >"$out/peers.md"
cat "$out/peers.md"
[[ ! -f $out/before-after.md || -z ${before_bin:-} ]] || cat "$out/before-after.md"
