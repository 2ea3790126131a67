#!/usr/bin/env bash
# Chart tier: the Helm chart in charts/langfuse-upgrade-operator, end to end.
#
#   1. tools from pinned Go modules (helm, prometheus-operator's CRDs, our PromQL checker)
#   2. static: CRD copy in sync, `helm lint --strict`, the schema rejects bad values,
#      `helm template` of every case in tests/chart/values/, alert rules and dashboard checked
#      with Prometheus' own parser and engine (tests/chart/promql-check)
#   3. on the local control plane (tests/cluster): every rendered case validated by the API
#      server (`kubectl apply --dry-run=server`, stronger than kubeconform: real schemas,
#      admission, CRD schemas of ServiceMonitor/PrometheusRule), then `helm install` in
#      cluster and namespaced mode; the ServiceAccounts' permissions checked with the API
#      server's own authorization (`kubectl auth can-i`): every call the operator makes is
#      allowed, a list of things it must not do is denied, and `can-i --list` equals the
#      expected rules exactly; the operator binary, run with the namespaced release's
#      ServiceAccount token, takes an upgrade to preflight with no request denied
#   4. helm upgrade and uninstall
#
# Usage: tests/chart/run.sh        (exit status non-zero on any failure)
# Env:   LFU_CACHE_DIR       tools cache (default ~/.cache/langfuse-upgrade-operator)
#        LFU_OPERATOR_BIN    operator binary for step 3 (default: cargo build, debug)
#        LFU_KEEP_WORKDIR=1  keep the work directory (renders, logs) for debugging
set -euo pipefail

HELM_VERSION=v3.22.0                  # helm.sh/helm/v3; its go.mod needs Go >= 1.26.0
PROM_OPERATOR_VERSION=v0.85.0         # github.com/prometheus-operator/prometheus-operator (CRDs)

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
here="$root/tests/chart"
chart="$root/charts/langfuse-upgrade-operator"
cache="${LFU_CACHE_DIR:-$HOME/.cache/langfuse-upgrade-operator}"
tools="$cache/tools"
mkdir -p "$tools"

# Never download a Go toolchain; build static binaries; verify modules against sum.golang.org.
export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS="-mod=readonly -buildvcs=false"

t0=$SECONDS
failures=0
log() { printf '[chart %4ds] %s\n' "$((SECONDS - t0))" "$*"; }
bad() { echo "FAIL: $*" >&2; failures=$((failures + 1)); }
die() { echo "FAIL: $*" >&2; exit 1; }

work="$(mktemp -d /tmp/lfu-chart.XXXXXX)"
cluster="$work/cluster"
op_pid=""
cleanup() {
  local rc=$?
  [[ -n "$op_pid" ]] && kill "$op_pid" 2>/dev/null && wait "$op_pid" 2>/dev/null
  "$root/tests/cluster/down.sh" "$cluster" >/dev/null 2>&1 || true
  if [[ "${LFU_KEEP_WORKDIR:-0}" == 1 ]]; then
    echo "work directory kept: $work" >&2
  else
    rm -rf "$work"
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------------------------------
# 1. tools
# ------------------------------------------------------------------------------------------
# Serialize concurrent runs while installing into the shared cache.
exec 9>"$tools/.lock"
flock 9

helm="$tools/helm-$HELM_VERSION/helm"
if [[ ! -x "$helm" ]]; then
  log "installing helm $HELM_VERSION (go install, one build)"
  gomod="$(cd "$work" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | jq -r .GoMod)"
  # Helm's Makefile stamps the Kubernetes version of its client-go as the default for
  # `helm template`/`lint` capabilities; do the same.
  cg="$(awk '$1 == "k8s.io/client-go" { print $2 }' "$gomod")"   # v0.MINOR.PATCH
  minor="${cg#v0.}"; minor="${minor%%.*}"
  ld="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
  for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
    ld+=" -X $pkg.k8sVersionMajor=1 -X $pkg.k8sVersionMinor=$minor"
  done
  (cd "$work" && GOBIN="$tools/helm-$HELM_VERSION.tmp" go install -trimpath -ldflags="$ld" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION")
  rm -rf "$tools/helm-$HELM_VERSION"
  mv "$tools/helm-$HELM_VERSION.tmp" "$tools/helm-$HELM_VERSION"
fi
"$helm" version --template '{{.Version}}' | grep -qx "$HELM_VERSION" || die "$helm is not $HELM_VERSION"

# The checker is rebuilt when its sources, pins or the Go version change.
stamp="$(cat "$here/promql-check/go.mod" "$here/promql-check/go.sum" "$here/promql-check/main.go" <(go env GOVERSION) | sha256sum | cut -c1-16)"
promql_check="$tools/promql-check-$stamp/promql-check"
if [[ ! -x "$promql_check" ]]; then
  log "building tests/chart/promql-check (github.com/prometheus/prometheus, pinned in its go.mod)"
  (cd "$here/promql-check" && go build -trimpath -o "$promql_check.tmp" .)
  mv "$promql_check.tmp" "$promql_check"
fi

# prometheus-operator's CRDs, from its Go module (the proxy verifies the checksum).
pomod="$(cd "$work" && go mod download -json "github.com/prometheus-operator/prometheus-operator@$PROM_OPERATOR_VERSION" | jq -r .Dir)"
pocrds=("$pomod/example/prometheus-operator-crd/monitoring.coreos.com_servicemonitors.yaml"
        "$pomod/example/prometheus-operator-crd/monitoring.coreos.com_prometheusrules.yaml")
for f in "${pocrds[@]}"; do [[ -f "$f" ]] || die "missing $f"; done
flock -u 9
log "tools: helm $HELM_VERSION, prometheus-operator CRDs $PROM_OPERATOR_VERSION, promql-check ready"

# ------------------------------------------------------------------------------------------
# 2. static checks
# ------------------------------------------------------------------------------------------
cmp -s "$root/crds/langfuseupgrades.yaml" "$chart/crds/langfuseupgrades.yaml" \
  || bad "charts/langfuse-upgrade-operator/crds/langfuseupgrades.yaml differs from crds/langfuseupgrades.yaml (copy it)"

KUBE_VERSION=1.34.10   # the local control plane's version (tests/cluster/go/kubernetes/go.mod)
RELEASE_NS=lfu-system
cases=(default)
for f in "$here"/values/*.yaml; do cases+=("$(basename "$f" .yaml)"); done
values_args() { [[ "$1" == default ]] || echo "-f $here/values/$1.yaml"; }

mkdir -p "$work/render"
for c in "${cases[@]}"; do
  # shellcheck disable=SC2046
  "$helm" lint --strict --quiet "$chart" --kube-version "$KUBE_VERSION" $(values_args "$c") >"$work/render/$c.lint" 2>&1 \
    || { cat "$work/render/$c.lint" >&2; bad "helm lint --strict ($c)"; }
  # shellcheck disable=SC2046
  "$helm" template lfu "$chart" -n "$RELEASE_NS" --kube-version "$KUBE_VERSION" --include-crds $(values_args "$c") \
    >"$work/render/$c.yaml" 2>"$work/render/$c.err" \
    || { cat "$work/render/$c.err" >&2; bad "helm template ($c)"; }
done
log "helm lint --strict and helm template: ${#cases[@]} cases (${cases[*]})"

# The schema and the templates refuse what cannot work.
reject() { # reject <expected message> <helm args...>
  local want="$1"; shift
  if out="$("$helm" template lfu "$chart" -n "$RELEASE_NS" "$@" 2>&1)"; then
    bad "helm template $* was accepted"
  elif [[ "$out" != *"$want"* ]]; then
    bad "helm template $*: expected \"$want\", got: $out"
  fi
}
reject "additional properties 'replicas' not allowed" --set replicas=2
reject "value must be one of 'cluster', 'namespaced'" --set rbac.scope=all
reject "value must be ''" --set watchNamespace=team-a
reject "maximum: got 2, want 1" --set leaderElection.enabled=false
reject "value must be one of 'json', 'plain'" --set logFormat=text
reject "minimum: got 0, want 1" --set replicaCount=0
reject "got string, want integer" --set-string httpPort=8080
reject "serviceAccount.name is required" --set serviceAccount.create=false
reject "metrics.serviceMonitor.enabled needs metrics.service.enabled" \
  --set metrics.serviceMonitor.enabled=true --set metrics.service.enabled=false
log "schema and template checks reject 9 bad value sets"

# Alert rules and dashboard, with Prometheus' own rule loader, parser and engine.
"$helm" template lfu "$chart" -n "$RELEASE_NS" -f "$here/values/cluster-full.yaml" \
  --show-only templates/prometheusrule.yaml >"$work/rule.yaml"
promql_args=(-dashboard "$chart/files/dashboard.json" -fixtures "$here/fixtures" -src "$root/src"
  -job lfu-langfuse-upgrade-operator-metrics -lease-namespace "$RELEASE_NS" -lease lfu-langfuse-upgrade-operator)
"$promql_check" -rules "$work/rule.yaml" "${promql_args[@]}" >"$work/promql.log" 2>&1 \
  || { cat "$work/promql.log" >&2; bad "promql-check"; }
sed 's/^/  /' "$work/promql.log"
# The checker must catch a wrong phase and a wrong metric name (it is not vacuous).
sed 's/phase="Failed"/phase="Failure"/; s/lfu_upgrade_condition{/lfu_upgrade_conditions{/' "$work/rule.yaml" >"$work/rule-bad.yaml"
if "$promql_check" -rules "$work/rule-bad.yaml" "${promql_args[@]}" >"$work/promql-bad.log" 2>&1; then
  bad "promql-check accepted a rule with phase=\"Failure\" and an unknown metric"
fi
# The dashboard ConfigMap carries the dashboard file unchanged, and it is valid JSON.
jq -e '.uid and (.panels | length > 0)' "$chart/files/dashboard.json" >/dev/null || bad "dashboard.json"

# ------------------------------------------------------------------------------------------
# 3. the local control plane
# ------------------------------------------------------------------------------------------
log "starting the local control plane"
"$root/tests/cluster/up.sh" "$cluster" 2>"$work/cluster-up.log" || { cat "$work/cluster-up.log" >&2; die "tests/cluster/up.sh"; }
# shellcheck disable=SC1091
. "$cluster/env"
[[ "$(kubectl version -o json | jq -r .serverVersion.gitVersion)" == "v$KUBE_VERSION" ]] || bad "server is not v$KUBE_VERSION"

kubectl apply --server-side -f "${pocrds[0]}" -f "${pocrds[1]}" >/dev/null
kubectl wait --for=condition=Established --timeout=60s \
  crd/servicemonitors.monitoring.coreos.com crd/prometheusrules.monitoring.coreos.com >/dev/null
for ns in "$RELEASE_NS" lfu-ns-system team-a team-b team-c; do kubectl create namespace "$ns" >/dev/null; done

# Every rendered case, validated by the API server (schemas, defaulting, admission) without
# being stored. The CRD goes first so its own validation runs too.
for c in "${cases[@]}"; do
  if kubectl apply --dry-run=server --server-side --field-manager=helm -f "$work/render/$c.yaml" -o json \
      >"$work/render/$c.json" 2>"$work/render/$c.dryrun.err"; then
    n="$(jq '[.items[]?] | length' "$work/render/$c.json" 2>/dev/null || echo 0)"
    [[ "$n" -gt 0 ]] || n="$(jq -s 'length' "$work/render/$c.json")"
    log "dry-run=server accepts case $c ($n objects)"
  else
    cat "$work/render/$c.dryrun.err" >&2
    bad "kubectl apply --dry-run=server rejected case $c"
  fi
done

# What the default render must contain (read from the API server's view of it).
objs="$work/render/default.json"
jqobj() { jq -s '[.[] | if .kind == "List" then .items[] else . end]' "$objs"; }
jqobj >"$work/render/default.objs.json"
check_jq() { # check_jq <description> <jq filter over the object list that must be true>
  jq -e "$2" "$work/render/default.objs.json" >/dev/null || bad "default render: $1"
}
dep='(.[] | select(.kind == "Deployment"))'
ctr="($dep | .spec.template.spec.containers[0])"
check_jq "non-root pod, seccomp RuntimeDefault" "$dep | .spec.template.spec.securityContext | .runAsNonRoot and .seccompProfile.type == \"RuntimeDefault\""
check_jq "container hardening" "$ctr.securityContext | .readOnlyRootFilesystem and (.allowPrivilegeEscalation | not) and .capabilities.drop == [\"ALL\"] and .runAsNonRoot and .seccompProfile.type == \"RuntimeDefault\""
check_jq "requests and limits" "$ctr.resources | .requests.cpu and .requests.memory and .limits.cpu and .limits.memory"
check_jq "probes" "$ctr | .livenessProbe.httpGet.path == \"/healthz\" and .readinessProbe.httpGet.path == \"/healthz\""
check_jq "downward API env" "[$ctr.env[] | select(.valueFrom.fieldRef) | .name] | sort == [\"POD_NAME\", \"POD_NAMESPACE\"]"
check_jq "2 replicas, leader election" "$dep | .spec.replicas == 2 and (.spec.template.spec.containers[0].args | index(\"--lease-name=lfu-langfuse-upgrade-operator\"))"
check_jq "image defaults to appVersion" "$ctr.image == \"ghcr.io/lfu-operator/langfuse-upgrade-operator:$(awk '/^appVersion:/ { gsub(/\"/, "", $2); print $2 }' "$chart/Chart.yaml")\""
check_jq "cluster mode: ClusterRole + ClusterRoleBinding, no --namespace" "any(.[]; .kind == \"ClusterRoleBinding\") and ([$ctr.args[] | select(startswith(\"--namespace\"))] | length == 0)"
check_jq "PDB" "any(.[]; .kind == \"PodDisruptionBudget\" and .spec.minAvailable == 1)"
check_jq "metrics Service" "any(.[]; .kind == \"Service\" and .spec.ports[0].name == \"http-metrics\")"
check_jq "dashboard ConfigMap with the grafana_dashboard label" "any(.[]; .kind == \"ConfigMap\" and .metadata.labels.grafana_dashboard == \"1\")"
check_jq "optional objects off by default" "all(.[]; .kind != \"ServiceMonitor\" and .kind != \"PrometheusRule\" and .kind != \"NetworkPolicy\")"
jq -s '[.[] | if .kind == "List" then .items[] else . end | select(.kind == "Deployment") | .spec.template.spec
    | (.containers[0].args | index("--catalog-config-map=lfu-catalog")) != null
      and (.containers[0].args | index("--catalog-key=langfuse.yaml")) != null and (.volumes // []) == []] | all' \
  "$work/render/custom.json" | grep -qx true || bad "custom render: the catalog ConfigMap is not followed with --catalog-config-map"
jq -s '[.[] | if .kind == "List" then .items[] else . end | select(.kind == "Role" and (.metadata.name | endswith("-catalog")))
    | .rules[0] | .resourceNames == ["lfu-catalog"] and .verbs == ["get", "list", "watch"]] | length == 1 and all' \
  "$work/render/custom.json" | grep -qx true || bad "custom render: no Role to follow exactly the catalog ConfigMap"
cm_dash="$(jq -r '.[] | select(.kind == "ConfigMap") | .data["langfuse-upgrade-operator.json"]' "$work/render/default.objs.json")"
[[ "$(jq -S . <<<"$cm_dash")" == "$(jq -S . "$chart/files/dashboard.json")" ]] || bad "the dashboard ConfigMap differs from files/dashboard.json"
log "default render: hardening, probes, env, RBAC mode, PDB, Service, dashboard checked"

# --- helm install, both modes --------------------------------------------------------------
log "helm install: cluster mode (release lfu in $RELEASE_NS, everything on)"
"$helm" install lfu "$chart" -n "$RELEASE_NS" -f "$here/values/cluster-full.yaml" --wait --timeout 3m >"$work/install-cluster.log" 2>&1 \
  || { cat "$work/install-cluster.log" >&2; die "helm install (cluster mode)"; }
log "helm install: namespaced mode (release lfu-ns in lfu-ns-system, watching team-b)"
"$helm" install lfu-ns "$chart" -n lfu-ns-system -f "$here/values/namespaced.yaml" --wait --timeout 3m >"$work/install-ns.log" 2>&1 \
  || { cat "$work/install-ns.log" >&2; die "helm install (namespaced mode)"; }
for r in "$RELEASE_NS/lfu" "lfu-ns-system/lfu-ns"; do
  ns="${r%/*}"; rel="${r#*/}"; d="$rel-langfuse-upgrade-operator"
  kubectl -n "$ns" rollout status "deployment/$d" --timeout=60s >/dev/null || bad "$d did not roll out"
  [[ "$(kubectl -n "$ns" get deployment "$d" -o jsonpath='{.status.readyReplicas}')" == 2 ]] || bad "$d: 2 ready replicas expected"
  kubectl -n "$ns" wait --for=jsonpath='{.status.disruptionsAllowed}'=1 "pdb/$d" --timeout=30s >/dev/null \
    || bad "$d: the PDB should allow 1 disruption"
  n=0
  for _ in $(seq 1 60); do
    n="$(kubectl -n "$ns" get endpointslices -l "kubernetes.io/service-name=$d-metrics" -o json \
      | jq '[.items[].endpoints[]? | select(.conditions.ready)] | length')"
    [[ "$n" == 2 ]] && break
    sleep 0.5
  done
  [[ "$n" == 2 ]] || bad "$d-metrics: 2 ready endpoints expected, got $n"
  kubectl -n "$ns" get servicemonitor "$d" >/dev/null || bad "$d: no ServiceMonitor"
  kubectl -n "$ns" get prometheusrule "$d" >/dev/null || bad "$d: no PrometheusRule"
  kubectl -n "$ns" get networkpolicy "$d" >/dev/null || bad "$d: no NetworkPolicy"
done
kubectl -n lfu-ns-system get deployment lfu-ns-langfuse-upgrade-operator -o json \
  | jq -e '.spec.template.spec.containers[0].args | index("--namespace=team-b")' >/dev/null || bad "namespaced mode: no --namespace=team-b"
kubectl get crd langfuseupgrades.upgrades.lfu-operator.dev >/dev/null || bad "the CRD was not installed"
log "both releases Available (2/2 ready), PDB, metrics endpoints, ServiceMonitor, PrometheusRule, NetworkPolicy present"

# --- RBAC, with the API server's own authorization ----------------------------------------
SA_C="system:serviceaccount:$RELEASE_NS:lfu-langfuse-upgrade-operator"
SA_N="system:serviceaccount:lfu-ns-system:lfu-ns-langfuse-upgrade-operator"
LEASE_C=lfu-langfuse-upgrade-operator
LEASE_N=lfu-ns-langfuse-upgrade-operator
checks=0
can() { # can <yes|no> <as> <namespace|-A|-> <verb> <resource> [subresource]
  local want="$1" as="$2" ns="$3" verb="$4" res="$5" sub="${6:-}" args got
  args=(auth can-i "$verb" "$res" --as="$as")
  case "$ns" in -A) args+=(--all-namespaces) ;; -) ;; *) args+=(-n "$ns") ;; esac
  [[ -n "$sub" ]] && args+=(--subresource="$sub")
  got="$(kubectl "${args[@]}" 2>/dev/null || true)"
  checks=$((checks + 1))
  [[ "$got" == "$want" ]] || bad "can-i ${args[*]:2}: $got, want $want"
}
# Every call the operator makes (the chart README's permissions table says where each comes from).
allowed=(
  "get list watch patch|langfuseupgrades.upgrades.lfu-operator.dev|"
  "patch|langfuseupgrades.upgrades.lfu-operator.dev|status"
  "update|langfuseupgrades.upgrades.lfu-operator.dev|finalizers"
  "get list watch create patch delete|deployments.apps|"
  "get list watch patch|services|"
  "list watch|pods|"
  "get|secrets|"
  "get|configmaps|"
  "list watch|endpointslices.discovery.k8s.io|"
  "list watch|horizontalpodautoscalers.autoscaling|"
  "create patch|events.events.k8s.io|"
)
# Never: writes it does not make, reads it does not need, anything cluster-wide.
denied_ns=(
  "delete services" "create services" "update services" "delete pods" "create pods" "patch pods"
  "create pods/exec" "get pods/log" "get pods" "list secrets" "watch secrets"
  "create secrets" "delete secrets" "update secrets" "list configmaps" "patch configmaps"
  "update deployments.apps" "deletecollection deployments.apps" "patch deployments.apps/scale"
  "create langfuseupgrades.upgrades.lfu-operator.dev" "delete langfuseupgrades.upgrades.lfu-operator.dev"
  "update langfuseupgrades.upgrades.lfu-operator.dev" "update langfuseupgrades.upgrades.lfu-operator.dev/status"
  "create events" "delete events.events.k8s.io" "create serviceaccounts/token" "create rolebindings.rbac.authorization.k8s.io"
  "create roles.rbac.authorization.k8s.io" "patch horizontalpodautoscalers.autoscaling" "create statefulsets.apps"
  "list leases.coordination.k8s.io" "delete leases.coordination.k8s.io"
)
denied_cluster=(
  "delete namespaces" "list namespaces" "get nodes" "update clusterroles.rbac.authorization.k8s.io"
  "create clusterrolebindings.rbac.authorization.k8s.io" "escalate clusterroles.rbac.authorization.k8s.io"
  "bind clusterroles.rbac.authorization.k8s.io" "impersonate users" "impersonate serviceaccounts"
  "create customresourcedefinitions.apiextensions.k8s.io" "patch customresourcedefinitions.apiextensions.k8s.io"
  "create mutatingwebhookconfigurations.admissionregistration.k8s.io" "create certificatesigningrequests.certificates.k8s.io"
)
check_allowed() { # check_allowed <yes|no> <as> <namespace|-A>
  local line verbs res sub v
  for line in "${allowed[@]}"; do
    IFS='|' read -r verbs res sub <<<"$line"
    for v in $verbs; do can "$1" "$2" "$3" "$v" "$res" "$sub"; done
  done
}
check_denied() { # check_denied <as> <namespace>
  local item verb res sub
  for item in "${denied_ns[@]}"; do
    verb="${item%% *}"; res="${item#* }"; sub=""
    [[ "$res" == */* ]] && { sub="${res#*/}"; res="${res%%/*}"; }
    can no "$1" "$2" "$verb" "$res" "$sub"
  done
  for item in "${denied_cluster[@]}"; do can no "$1" - "${item%% *}" "${item#* }"; done
}
check_lease() { # check_lease <as> <release ns> <lease name>
  can yes "$1" "$2" create leases.coordination.k8s.io
  can yes "$1" "$2" get "leases.coordination.k8s.io/$3"
  can yes "$1" "$2" patch "leases.coordination.k8s.io/$3"
  can no "$1" "$2" update "leases.coordination.k8s.io/$3"
  can no "$1" "$2" get leases.coordination.k8s.io/some-other-lease
  can no "$1" "$2" patch leases.coordination.k8s.io/some-other-lease
  can no "$1" "$2" list leases.coordination.k8s.io
  can no "$1" "$2" delete "leases.coordination.k8s.io/$3"
  can no "$1" team-c create leases.coordination.k8s.io
}
# Cluster mode: in any namespace, and across all of them (Api::all lists and watches).
check_allowed yes "$SA_C" team-a
check_allowed yes "$SA_C" team-c
for v in list watch; do
  for r in langfuseupgrades.upgrades.lfu-operator.dev deployments.apps services endpointslices.discovery.k8s.io; do
    can yes "$SA_C" -A "$v" "$r"
  done
done
check_denied "$SA_C" team-a
# rbac.handoff (on here): the keep annotation on what the chart's pods use, patch only.
for r in secrets serviceaccounts statefulsets.apps; do can yes "$SA_C" team-a patch "$r"; done
can no "$SA_C" team-a get serviceaccounts
can no "$SA_C" team-a get statefulsets.apps
check_lease "$SA_C" "$RELEASE_NS" "$LEASE_C"
# Namespaced mode: in team-b only.
check_allowed yes "$SA_N" team-b
check_allowed no "$SA_N" team-a
check_allowed no "$SA_N" "$RELEASE_NS"
can no "$SA_N" -A list langfuseupgrades.upgrades.lfu-operator.dev
can no "$SA_N" -A watch deployments.apps
can no "$SA_N" team-a get secrets
check_denied "$SA_N" team-b
# rbac.handoff off in the namespaced values: nothing patched but what the upgrade needs.
for r in secrets serviceaccounts statefulsets.apps; do can no "$SA_N" team-b patch "$r"; done
check_lease "$SA_N" lfu-ns-system "$LEASE_N"

# Nothing more: the complete rule list the API server computes for each identity.
rules_of() { # rules_of <as> <namespace>: "resource [names] verbs" lines, verbs sorted
  kubectl auth can-i --list --as="$1" -n "$2" | tail -n +2 | awk '$1 !~ /^\[/' \
    | grep -Ev '^selfsubject(accessreviews|rulesreviews|reviews)\.' \
    | sed -E 's/^([^ ]+) +\[[^]]*\] +(\[[^]]*\]) +\[([^]]*)\]$/\1 \2 \3/' \
    | while read -r res names verbs; do echo "$res $names $(tr ' ' '\n' <<<"$verbs" | LC_ALL=C sort | xargs)"; done \
    | LC_ALL=C sort
}
expected_rules() { # expected_rules <operator rules: yes|no> <lease name or empty> <handoff rules: yes|no>
  {
    if [[ "$1" == yes ]]; then
      echo "configmaps [] get"
      echo "deployments.apps [] create delete get list patch watch"
      echo "endpointslices.discovery.k8s.io [] list watch"
      echo "events.events.k8s.io [] create patch"
      echo "horizontalpodautoscalers.autoscaling [] list watch"
      echo "langfuseupgrades.upgrades.lfu-operator.dev/finalizers [] update"
      echo "langfuseupgrades.upgrades.lfu-operator.dev/status [] patch"
      echo "langfuseupgrades.upgrades.lfu-operator.dev [] get list patch watch"
      echo "pods [] list watch"
      if [[ "${3:-no}" == yes ]]; then
        echo "secrets [] get patch"
        echo "serviceaccounts [] patch"
        echo "statefulsets.apps [] patch"
      else
        echo "secrets [] get"
      fi
      echo "services [] get list patch watch"
    fi
    if [[ -n "$2" ]]; then
      echo "leases.coordination.k8s.io [] create"
      echo "leases.coordination.k8s.io [$2] get patch"
    fi
  } | LC_ALL=C sort
}
compare_rules() { # compare_rules <as> <namespace> <operator rules: yes|no> <lease or empty> <handoff: yes|no>
  if ! diff <(expected_rules "$3" "$4" "${5:-no}") <(rules_of "$1" "$2") >"$work/rules.diff"; then
    bad "auth can-i --list for $1 in $2 differs from the expected rules (< expected, > actual):"
    cat "$work/rules.diff" >&2
  fi
  checks=$((checks + 1))
}
compare_rules "$SA_C" "$RELEASE_NS" yes "$LEASE_C" yes
compare_rules "$SA_C" team-a yes "" yes
compare_rules "$SA_N" team-b yes ""
compare_rules "$SA_N" lfu-ns-system no "$LEASE_N"
compare_rules "$SA_N" team-a no ""
log "RBAC: $checks authorization checks (allowed, denied, exact rule lists) in both modes"

# --- the operator itself, as the namespaced release's ServiceAccount ----------------------
op_bin="${LFU_OPERATOR_BIN:-}"
if [[ -z "$op_bin" ]]; then
  log "building the operator (cargo build, debug; incremental)"
  (cd "$root" && cargo build --locked --quiet --bin langfuse-upgrade-operator) || die "cargo build"
  # Wherever Cargo puts it (CARGO_TARGET_DIR or a config may move it away from ./target).
  target_dir="$(cd "$root" && cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
  op_bin="$target_dir/debug/langfuse-upgrade-operator"
fi
token="$(kubectl -n lfu-ns-system create token lfu-ns-langfuse-upgrade-operator --duration=1h)"
ca="$(kubectl config view --raw -o jsonpath='{.clusters[0].cluster.certificate-authority-data}')"
cat >"$work/sa.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lfu-test
  cluster: {server: "$LFU_APISERVER_URL", certificate-authority-data: "$ca"}
users:
- name: lfu-ns-operator
  user: {token: "$token"}
contexts:
- name: lfu-test
  context: {cluster: lfu-test, user: lfu-ns-operator}
current-context: lfu-test
EOF
chmod 600 "$work/sa.kubeconfig"
kubectl apply -f "$here/fixtures/upgrade.yaml" >/dev/null
port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
# kube=debug logs every request with its method, URL and status code.
KUBECONFIG="$work/sa.kubeconfig" POD_NAMESPACE=lfu-ns-system POD_NAME=chart-test-0 RUST_LOG=info,kube=debug \
  "$op_bin" run --namespace team-b --lease-name "$LEASE_N" --http-addr "127.0.0.1:$port" --log-format plain \
  >"$work/operator.log" 2>&1 &
op_pid=$!
phase=""
for _ in $(seq 1 120); do
  phase="$(kubectl -n team-b get langfuseupgrade to-v3 -o jsonpath='{.status.phase}' 2>/dev/null || true)"
  [[ "$phase" == Blocked ]] && break
  kill -0 "$op_pid" 2>/dev/null || break
  sleep 0.5
done
[[ "$phase" == Blocked ]] || bad "the operator did not take the upgrade to Blocked (phase: '$phase')"
curl -fsS "127.0.0.1:$port/readyz" >/dev/null || bad "the operator is not ready (leading)"
[[ "$(kubectl -n lfu-ns-system get lease "$LEASE_N" -o jsonpath='{.spec.holderIdentity}')" == chart-test-0 ]] \
  || bad "the operator does not hold the Lease $LEASE_N"
kubectl -n team-b get langfuseupgrade to-v3 -o jsonpath='{.metadata.finalizers}' | grep -q . || bad "no finalizer added"
# Events go out on a task of their own, a moment after the status: a few seconds' grace.
published=""
for _ in $(seq 1 20); do
  kubectl -n team-b get events.events.k8s.io -o json \
    | jq -e '[.items[] | select(.reportingController == "langfuse-upgrade-operator")] | length > 0' >/dev/null \
    && { published=yes; break; }
  sleep 0.25
done
[[ -n $published ]] || bad "the operator published no Event"
curl -fsS "127.0.0.1:$port/metrics" >"$work/metrics.txt" || bad "GET /metrics"
grep -q '^lfu_upgrade_phase{namespace="team-b",name="to-v3",phase="Blocked"} 1' "$work/metrics.txt" \
  || bad "/metrics has no lfu_upgrade_phase ... Blocked 1"
kill -TERM "$op_pid"
wait "$op_pid" || bad "the operator did not exit cleanly on SIGTERM"
op_pid=""
plain="$(sed 's/\x1b\[[0-9;]*m//g' "$work/operator.log")"
if grep -qE 'http.status_code=403|is forbidden' <<<"$plain"; then
  grep -E 'http.status_code=403|is forbidden' <<<"$plain" | head -5 >&2
  bad "a request of the operator was denied"
fi
# The API calls it made, as (method, resource path) with names and namespaces folded.
grep -oE 'http.method=[A-Z]+ http.url=[^ ]+' <<<"$plain" \
  | sed -E 's#https?://[^/]+##; s#\?(.*&)?watch=true.*# (watch)#; s#\?.*##; s#/namespaces/[^/]+/#/namespaces/*/#' \
  | sort -u >"$work/operator-calls.txt"
# The run must have exercised the reads and writes that matter here.
for call in 'GET /api/v1/namespaces/\*/configmaps/' 'GET /api/v1/namespaces/\*/secrets/' 'GET /api/v1/namespaces/\*/pods$' \
    'GET /apis/apps/v1/namespaces/\*/deployments \(watch\)' 'GET /apis/autoscaling/v2/namespaces/\*/horizontalpodautoscalers' \
    'GET /apis/discovery.k8s.io/v1/namespaces/\*/endpointslices \(watch\)' 'POST /apis/coordination.k8s.io/v1/namespaces/\*/leases$' \
    'PATCH /apis/coordination.k8s.io/' 'POST /apis/events.k8s.io/' 'PATCH /apis/upgrades.lfu-operator.dev/v1alpha1/namespaces/\*/langfuseupgrades/to-v3$' \
    'PATCH /apis/upgrades.lfu-operator.dev/v1alpha1/namespaces/\*/langfuseupgrades/to-v3/status'; do
  grep -qE "^http.method=${call%% *} http.url=${call#* }" "$work/operator-calls.txt" || bad "the operator run made no ${call//\\/} call"
done
log "operator (SA of the namespaced release) reached Blocked with $(wc -l <"$work/operator-calls.txt") distinct API calls, none denied:"
sed 's/^/  /' "$work/operator-calls.txt"
[[ "$(kubectl -n lfu-ns-system get lease "$LEASE_N" -o jsonpath='{.spec.holderIdentity}')" == "" ]] \
  || bad "the Lease was not released on SIGTERM"

# ------------------------------------------------------------------------------------------
# 4. upgrade and uninstall
# ------------------------------------------------------------------------------------------
"$helm" upgrade lfu "$chart" -n "$RELEASE_NS" --reuse-values --set replicaCount=3 --wait --timeout 3m >/dev/null \
  || bad "helm upgrade"
[[ "$(kubectl -n "$RELEASE_NS" get deployment lfu-langfuse-upgrade-operator -o jsonpath='{.status.readyReplicas}')" == 3 ]] \
  || bad "after helm upgrade: 3 ready replicas expected"
"$helm" uninstall lfu -n "$RELEASE_NS" --wait >/dev/null || bad "helm uninstall lfu"
"$helm" uninstall lfu-ns -n lfu-ns-system --wait >/dev/null || bad "helm uninstall lfu-ns"
left="$(kubectl get clusterroles,clusterrolebindings -l app.kubernetes.io/part-of=langfuse-upgrade-operator -o name)"
left+="$(kubectl get all,roles,rolebindings,configmaps,serviceaccounts,pdb,networkpolicies,servicemonitors,prometheusrules \
  -A -l app.kubernetes.io/part-of=langfuse-upgrade-operator -o name)"
[[ -z "$left" ]] || bad "left after uninstall: $left"
kubectl get crd langfuseupgrades.upgrades.lfu-operator.dev >/dev/null || bad "uninstall removed the CRD (Helm keeps crds/)"
log "helm upgrade (3 replicas) and uninstall (nothing left but the CRD)"

if ((failures > 0)); then
  echo "chart tier: $failures failure(s) in $((SECONDS - t0))s" >&2
  exit 1
fi
echo "chart tier: passed in $((SECONDS - t0))s"
