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
#
# Env: BENCH_RUNS (20), BENCH_REST_SECONDS (300), BENCH_IDLE_SECONDS (30), BENCH_PAUSED (200),
#      BENCH_ARGO_SCOPE (namespaced | cluster; namespaced = --namespaced on one bench namespace,
#      a fresh Rollout per run; cluster = cluster-wide controller, a fresh namespace per run),
#      BENCH_KEEP_WORKDIR=1 keeps the temp dir (cluster logs).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
repo="$(cd "$here/../.." && pwd -P)"
runs="${BENCH_RUNS:-20}"
rest="${BENCH_REST_SECONDS:-300}"
idle="${BENCH_IDLE_SECONDS:-30}"
paused="${BENCH_PAUSED:-200}"
scope="${BENCH_ARGO_SCOPE:-namespaced}"
ns=argo-bench
out="$repo/target/bench-peers"
mkdir -p "$out/bin"
log() { echo "bench-peers: $*" >&2; }

# --- binaries ------------------------------------------------------------------------------
argo_bin="$("$here/build-argo.sh")"
log "building the driver"
(cd "$here/driver" && GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
  nice -n 10 go build -trimpath -o "$out/bin/driver" .)
driver="$out/bin/driver"
argo_mod="$(cd "$here/go/argo-rollouts" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly go list -m -f '{{.Dir}}' github.com/argoproj/argo-rollouts)"
argo_version="$(awk '$1 == "github.com/argoproj/argo-rollouts" && $2 ~ /^v/ { print $2; exit }' "$here/go/argo-rollouts/go.mod")"

# --- control plane (always torn down) --------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/lfu-bench-peers.XXXXXX")"
argo_pid=""
teardown() {
  local rc=$?
  if [[ -n "$argo_pid" ]] && kill -0 "$argo_pid" 2>/dev/null; then
    kill -TERM "$argo_pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$argo_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$argo_pid" 2>/dev/null || true
  fi
  [[ -f "$work/argo.log" ]] && cp -f "$work/argo.log" "$out/argo-controller.log"
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

kubectl create namespace "$ns" >/dev/null
for f in "$argo_mod"/manifests/crds/*-crd.yaml; do
  kubectl apply --server-side -f "$f" >/dev/null
done
kubectl wait --for=condition=Established --timeout=60s \
  crd/rollouts.argoproj.io crd/analysisruns.argoproj.io crd/analysistemplates.argoproj.io \
  crd/clusteranalysistemplates.argoproj.io crd/experiments.argoproj.io >/dev/null

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
log "$runs blue-green switches"
"$driver" switch -kubeconfig "$KUBECONFIG" "${switch_args[@]}" -runs "$runs" \
  -audit "$LFU_AUDIT_LOG" -audit-user lfu-operator -out "$out/argo-runs.tsv"

# --- at rest with paused Rollouts ----------------------------------------------------------
log "$paused paused Rollouts"
"$driver" paused -kubeconfig "$KUBECONFIG" -namespace "$ns" -count "$paused"
sleep 30   # let the creation burst settle before the rest window
rss_paused="$(rss_mib)"
log "RSS with $paused paused Rollouts: $rss_paused MiB; resting ${rest}s"
from="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
cpu1="$(cpu_s)"
sleep "$rest"
cpu2="$(cpu_s)"
to="$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)"
sleep 1   # the audit log backend writes the last entries
"$driver" audit-writes -audit "$LFU_AUDIT_LOG" -user lfu-operator -from "$from" -to "$to" >"$out/argo-rest-requests.txt"
get() { awk -v k="$1" '$1 == k { print $2 }' "$out/argo-rest-requests.txt"; }
cpu_rest="$(awk -v a="$cpu1" -v b="$cpu2" 'BEGIN { printf "%.2f", b - a }')"
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
"$driver" report -raw "$out/argo-runs.tsv" -title "Argo Rollouts $argo_version" \
  -rss-idle-mib "$rss_idle" -rss-paused-mib "$rss_paused" -paused "$paused" \
  -cpu-s "$cpu_rest" -rest-s "$rest" -writes "$(get writes)" -lease-writes "$(get lease_writes)" \
  -requests "$(get requests)" -notes "$notes" >"$out/argo.md"
cat "$out/argo.md"
