#!/usr/bin/env bash
# Smoke test of the local control plane: up -> Deployment+Service become
# Available/ready endpoints -> RBAC and service-account tokens work -> CEL CRD
# validation rejects a bad object -> server-side apply reports a field-manager
# conflict -> down. Exits non-zero on the first failure.
# Usage: tests/cluster/smoke.sh [workdir]   (default: a fresh mktemp dir)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
wd="${1:-$(mktemp -d "${TMPDIR:-/tmp}/lfu-smoke.XXXXXX")}"
t0=$SECONDS

step() { echo "smoke: [$((SECONDS - t0))s] $*"; }
fail() { echo "smoke: FAIL: $*" >&2; exit 1; }

# Always tear down, whatever happens below (up.sh cleans up after its own failures).
cleanup() {
  local rc=$?
  if [[ -f "$wd/.lfu-cluster" ]]; then
    if [[ $rc -ne 0 ]]; then
      echo "smoke: failure; last log lines:" >&2
      for f in "$wd"/logs/*.log; do echo "----- $f" >&2; tail -n 15 "$f" >&2 || true; done
    fi
    "$here/down.sh" "$wd" || true
  fi
  [[ $rc -eq 0 ]] && echo "smoke: PASS ($((SECONDS - t0))s)" || echo "smoke: FAIL (exit $rc)" >&2
}
trap cleanup EXIT

step "starting control plane in $wd"
"$here/up.sh" "$wd"
# shellcheck disable=SC1091
source "$wd/env"
kc() { "$LFU_BIN_DIR/kubectl" "$@"; }
step "up; $(kc version -o json | grep -m1 gitVersion | tr -d ' ,') ; nodes: $(kc get nodes --no-headers | awk '{print $1"="$2}' | tr '\n' ' ')"

# --- Deployment + Service -> Available and 2 ready endpoints -------------------
kc apply -f - <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: smoke-app, namespace: default}
spec:
  replicas: 2
  selector: {matchLabels: {app: smoke-app}}
  template:
    metadata: {labels: {app: smoke-app}}
    spec:
      containers:
      - name: app
        image: example/app:1
        ports: [{containerPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: smoke-app, namespace: default}
spec:
  selector: {app: smoke-app}
  ports: [{port: 80, targetPort: 8080}]
EOF
kc -n default wait --for=condition=Available deployment/smoke-app --timeout=90s
step "deployment Available: $(kc -n default get pods -l app=smoke-app -o jsonpath='{range .items[*]}{.metadata.name}@{.spec.nodeName}={.status.phase} {end}')"

ready_endpoints() {
  kc -n default get endpointslices -l kubernetes.io/service-name=smoke-app \
    -o jsonpath='{range .items[*].endpoints[?(@.conditions.ready==true)]}{.addresses[0]}{"\n"}{end}' | grep -c . || true
}
deadline=$((SECONDS + 60))
until [[ "$(ready_endpoints)" == 2 ]]; do
  (( SECONDS < deadline )) || fail "EndpointSlice never listed 2 ready endpoints (got $(ready_endpoints))"
  sleep 0.5
done
step "EndpointSlice lists 2 ready endpoints: $(kc -n default get endpointslices -l kubernetes.io/service-name=smoke-app -o jsonpath='{.items[*].endpoints[*].addresses[0]}')"

# --- RBAC + service-account tokens --------------------------------------------
[[ "$(kc auth can-i list pods --all-namespaces)" == yes ]] || fail "admin cannot list pods"
if kc auth can-i list pods -n default --as=system:serviceaccount:default:default >/dev/null; then
  fail "RBAC not enforced: default SA may list pods"
fi
kc create token default -n default --duration=10m >/dev/null || fail "TokenRequest failed"
kc -n default get configmap kube-root-ca.crt >/dev/null || fail "kube-root-ca.crt not published"
step "RBAC enforced (default SA denied, admin allowed); TokenRequest ok"

# --- CRD with a CEL validation rule ------------------------------------------
kc apply -f - <<'EOF'
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.smoke.lfu.test}
spec:
  group: smoke.lfu.test
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              minReplicas: {type: integer}
              maxReplicas: {type: integer}
            x-kubernetes-validations:
            - rule: self.minReplicas <= self.maxReplicas
              message: minReplicas must not exceed maxReplicas
EOF
kc wait --for=condition=Established crd/widgets.smoke.lfu.test --timeout=30s
widget() {
  kc apply -f - <<EOF
apiVersion: smoke.lfu.test/v1
kind: Widget
metadata: {name: $1, namespace: default}
spec: {minReplicas: $2, maxReplicas: $3}
EOF
}
# Discovery of a new CRD can lag Established by a moment: retry the valid one.
deadline=$((SECONDS + 30))
until widget good 1 3 >/dev/null 2>&1; do
  (( SECONDS < deadline )) || { widget good 1 3; fail "valid Widget rejected"; }
  sleep 0.5
done
if out="$(widget bad 5 1 2>&1)"; then
  fail "Widget violating the CEL rule was accepted"
fi
grep -q "minReplicas must not exceed maxReplicas" <<<"$out" || fail "unexpected rejection: $out"
step "CEL rule rejected bad Widget: $(head -c 200 <<<"$out")"

# --- server-side apply: two field managers conflict ---------------------------
cm() {
  kc apply --server-side --field-manager="$1" "${@:3}" -f - <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: smoke-ssa, namespace: default}
data: {owner: $2}
EOF
}
cm alice alice >/dev/null
if out="$(cm bob bob 2>&1)"; then
  fail "second field manager changed an owned field without a conflict"
fi
grep -qi "conflict" <<<"$out" || fail "expected an SSA conflict, got: $out"
step "SSA conflict reported: $(grep -i -m1 conflict <<<"$out" | head -c 200)"
cm bob bob --force-conflicts >/dev/null
managers="$(kc -n default get configmap smoke-ssa --show-managed-fields -o jsonpath='{.metadata.managedFields[*].manager}')"
[[ "$(kc -n default get configmap smoke-ssa -o jsonpath='{.data.owner}')" == bob ]] || fail "--force-conflicts did not take ownership"
step "--force-conflicts moved ownership to bob (managers: $managers)"

# --- scale to zero: kwok's pod-delete stage must let pods actually go away -----
kc -n default scale deployment/smoke-app --replicas=0
kc -n default wait --for=delete pod -l app=smoke-app --timeout=60s
[[ -z "$(kc -n default get pods -l app=smoke-app -o name)" ]] || fail "pods left after scaling to 0"
step "scaled to 0: all pods deleted"

step "all checks passed; tearing down"
