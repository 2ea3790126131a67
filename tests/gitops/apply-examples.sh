#!/usr/bin/env bash
# Every example and GitOps manifest, applied for real (not dry-run) to a real apiserver:
#   - starts the local control plane (tests/cluster/up.sh; stopped by a trap),
#   - installs the LangfuseUpgrade CRD (crds/), the Argo CD Application CRD (Go module
#     github.com/argoproj/argo-cd/v3 @ v3.5.7, manifests/crds/application-crd.yaml) and the Flux
#     Kustomization CRD (Go module github.com/fluxcd/kustomize-controller @ v1.9.6,
#     config/crd/bases/), both fetched with `go mod download` (checksums verified by sum.golang.org),
#     and Debian's lua5.1 when missing (for the samples),
#   - applies each examples/*.yaml on a clean slate, checks the apiserver stored it (`kubectl diff`
#     finds nothing left to change) and deletes it again,
#   - applies gitops/argocd/ignore-differences.yaml and gitops/flux/kustomization.yaml, and
#     installs gitops/argocd/argocd-cm.yaml the way its header says (merge patch into an existing
#     argocd-cm), checking the Lua comes back byte for byte,
#   - creates every tests/gitops/samples object and writes its status through the status
#     subresource, so the samples the Lua tests use are valid LangfuseUpgrades,
#   - replays the ownership story of gitops/README.md on a Service and Deployment: what a
#     client-side and a server-side re-apply of Git do after the operator's writes, and that the
#     documented restore command restores exactly the v3 selector,
#   - and checks that invalid objects are rejected (so "accepted" above means something).
# Non-zero exit on any failure. Usage: tests/gitops/apply-examples.sh
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
start_ns=$(date +%s%N)
ms() { echo "$(( ($(date +%s%N) - start_ns) / 1000000 )) ms"; }

ARGOCD_MODULE=github.com/argoproj/argo-cd/v3
ARGOCD_VERSION=v3.5.7
FLUX_KUSTOMIZE_MODULE=github.com/fluxcd/kustomize-controller
FLUX_KUSTOMIZE_VERSION=v1.9.6

command -v go >/dev/null || { echo "apply-examples.sh: go is needed (to fetch the Argo CD and Flux CRDs)" >&2; exit 1; }
# shellcheck source=tests/gitops/lib/ensure-lua.sh
. tests/gitops/lib/ensure-lua.sh
export GOTOOLCHAIN=local GOFLAGS="-mod=mod -buildvcs=false"

work="$(mktemp -d "${TMPDIR:-/tmp}/lfu-gitops.XXXXXX")"
cluster="$work/cluster"
cleanup() { tests/cluster/down.sh "$cluster" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

# module_dir <module> <version>: the extracted module in the module cache (downloaded once,
# checksum verified against go.sum's database, sum.golang.org).
module_dir() {
  local out
  out="$(cd "$work" && go mod download -json "$1@$2")" || { echo "$out" >&2; return 1; }
  if grep -q '"Error"' <<<"$out"; then echo "$out" >&2; return 1; fi
  sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' <<<"$out"
}
argocd_dir="$(module_dir "$ARGOCD_MODULE" "$ARGOCD_VERSION")"
flux_dir="$(module_dir "$FLUX_KUSTOMIZE_MODULE" "$FLUX_KUSTOMIZE_VERSION")"
argocd_crd="$argocd_dir/manifests/crds/application-crd.yaml"
flux_crd="$flux_dir/config/crd/bases/kustomize.toolkit.fluxcd.io_kustomizations.yaml"
for f in "$argocd_crd" "$flux_crd"; do
  [[ -f "$f" ]] || { echo "apply-examples.sh: missing $f" >&2; exit 1; }
done
echo "CRDs: Argo CD $ARGOCD_VERSION Application, Flux kustomize-controller $FLUX_KUSTOMIZE_VERSION Kustomization ($(ms))"

tests/cluster/up.sh "$cluster" >"$work/up.log" 2>&1 || { cat "$work/up.log" >&2; exit 1; }
# shellcheck disable=SC1091
. "$cluster/env"
echo "control plane up ($(ms)): $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1)"

failures=0
pass() { echo "  ok    $*"; }
fail() { echo "  FAIL  $*" >&2; failures=$((failures + 1)); }

# The Application CRD is larger than the 256 KiB last-applied annotation allows: server-side apply.
kubectl apply --server-side -f crds/langfuseupgrades.yaml -f "$argocd_crd" -f "$flux_crd" >/dev/null
kubectl wait --for condition=Established --timeout=60s \
  crd/langfuseupgrades.upgrades.lfu-operator.dev crd/applications.argoproj.io \
  crd/kustomizations.kustomize.toolkit.fluxcd.io >/dev/null
for ns in langfuse argocd flux-system; do kubectl create namespace "$ns" >/dev/null; done

# apply_check <file>: apply (create), the apiserver must hold exactly that (kubectl diff exit 0).
apply_check() {
  local file="$1" out
  if ! out="$(kubectl apply -f "$file" 2>&1)"; then
    fail "$file: rejected: $out"
    return 1
  fi
  if ! out="$(kubectl diff -f "$file" 2>&1)"; then
    fail "$file: stored object differs from the file: $out"
    return 1
  fi
  pass "$file: $(kubectl get -f "$file" --no-headers -o custom-columns=K:.kind,N:.metadata.name | awk '{printf "%s%s/%s", sep, $1, $2; sep=", "}')"
}

echo "examples/:"
for file in examples/*.yaml; do
  if apply_check "$file"; then
    kubectl delete -f "$file" --wait=true >/dev/null
  fi
done
# The examples must cover what the issue asks for.
for name in minimal manual-promotion final-version argocd-application flux-kustomization; do
  [[ -f "examples/$name.yaml" ]] || fail "examples/$name.yaml is missing"
done
grep -q 'promotion: Manual' examples/manual-promotion.yaml || fail "manual-promotion.yaml: no promotion: Manual"
grep -q 'finalVersion: "3.40.0"' examples/final-version.yaml || fail "final-version.yaml: no finalVersion 3.40.0"

echo "gitops/:"
for file in gitops/argocd/ignore-differences.yaml gitops/flux/kustomization.yaml; do
  if apply_check "$file"; then
    kubectl delete -f "$file" --wait=true >/dev/null
  fi
done
# argocd-cm: merged into an existing ConfigMap as its header says; other keys survive, and the
# scripts come back byte for byte.
kubectl -n argocd create configmap argocd-cm --from-literal=url=https://argocd.example.com >/dev/null
if kubectl -n argocd patch configmap argocd-cm --type merge --patch-file gitops/argocd/argocd-cm.yaml >/dev/null; then
  key='resource\.customizations\.health\.upgrades\.lfu-operator\.dev_LangfuseUpgrade'
  if [[ "$(kubectl -n argocd get configmap argocd-cm -o jsonpath="{.data.$key}")" == "$(cat gitops/argocd/health.lua)" ]] &&
    [[ "$(kubectl -n argocd get configmap argocd-cm -o jsonpath='{.data.url}')" == https://argocd.example.com ]] &&
    kubectl -n argocd get configmap argocd-cm -o jsonpath='{.data}' | grep -q 'resource.customizations.actions.upgrades.lfu-operator.dev_LangfuseUpgrade'; then
    pass "gitops/argocd/argocd-cm.yaml: merged into argocd-cm, health.lua intact, other keys kept"
  else
    fail "gitops/argocd/argocd-cm.yaml: argocd-cm content after the merge patch is not as expected"
  fi
else
  fail "gitops/argocd/argocd-cm.yaml: merge patch rejected"
fi

echo "tests/gitops/samples (object + status subresource):"
n=0
for sample in tests/gitops/samples/*.json; do
  name="s-$(basename "$sample" .json)"
  if ! out="$(lua5.1 tests/gitops/sample-manifest.lua "$root" "$sample" "$name" object | kubectl -n langfuse create -f - 2>&1)"; then
    fail "$sample: object rejected: $out"
    continue
  fi
  status="$(lua5.1 tests/gitops/sample-manifest.lua "$root" "$sample" "$name" status)"
  if [[ -n "$status" ]]; then
    if ! out="$(kubectl -n langfuse patch lfu "$name" --subresource=status --type=merge -p "$status" 2>&1)"; then
      fail "$sample: status rejected: $out"
      continue
    fi
    want="$(lua5.1 -e "TESTS_DIR='tests/gitops'; local o = dofile('tests/gitops/lib/json.lua').read_file('$sample'); io.write(o.status.phase or '')")"
    got="$(kubectl -n langfuse get lfu "$name" -o jsonpath='{.status.phase}')"
    [[ "$got" == "$want" ]] || { fail "$sample: stored phase '$got', want '$want'"; continue; }
  fi
  n=$((n + 1))
done
pass "$n samples stored as LangfuseUpgrades with their status"

echo "ownership of the Service selector and v2's replicas (the claims of gitops/README.md):"
# The v2 Service and Deployment as Git / the v2-era chart has them, and the operator's writes
# (server-side apply, field manager langfuse-upgrade-operator, forced), as in src/resources.
svc_git='{"apiVersion":"v1","kind":"Service","metadata":{"name":"prod-langfuse","namespace":"langfuse"},"spec":{"ports":[{"name":"http","port":3000,"targetPort":"http"}],"selector":{"app.kubernetes.io/name":"langfuse","app.kubernetes.io/instance":"prod"}}}'
svc_git_nosel='{"apiVersion":"v1","kind":"Service","metadata":{"name":"prod-langfuse","namespace":"langfuse"},"spec":{"ports":[{"name":"http","port":3000,"targetPort":"http"}]}}'
svc_op='{"apiVersion":"v1","kind":"Service","metadata":{"name":"prod-langfuse","namespace":"langfuse"},"spec":{"selector":{"app":"web","app.kubernetes.io/component":"web","upgrades.lfu-operator.dev/upgrade":"to-v3"}}}'
v2='{"app.kubernetes.io/instance":"prod","app.kubernetes.io/name":"langfuse"}'
v3='{"app":"web","app.kubernetes.io/component":"web","upgrades.lfu-operator.dev/upgrade":"to-v3"}'
union='{"app":"web","app.kubernetes.io/component":"web","app.kubernetes.io/instance":"prod","app.kubernetes.io/name":"langfuse","upgrades.lfu-operator.dev/upgrade":"to-v3"}'
sel() { kubectl -n langfuse get service prod-langfuse -o jsonpath='{.spec.selector}'; }
expect_sel() { # expect_sel <what> <json>
  local got; got="$(sel)"
  if [[ "$got" == "$2" ]]; then pass "$1: $got"; else fail "$1: selector $got, want $2"; fi
}
# (stderr: kubectl's own client-side-apply migration warning, irrelevant to the operator, which is not kubectl)
operator_switch() { kubectl apply --server-side --force-conflicts --field-manager=langfuse-upgrade-operator -f - <<<"$svc_op" >/dev/null 2>&1; }
# 1. Client-side apply (Argo CD's default sync, plain kubectl apply) of the unchanged Git Service
#    after the switch: a three-way strategic merge keeps the operator's keys and adds v2's back,
#    a selector that matches neither v2 nor v3 pods.
kubectl apply -f - <<<"$svc_git" >/dev/null
operator_switch
expect_sel "operator switched the selector" "$v3"
kubectl apply -f - <<<"$svc_git" >/dev/null
expect_sel "client-side re-apply of Git merges both selectors (no pod matches)" "$union"
# 2. The restore command of gitops/README.md replaces the whole map; a plain strategic merge
#    patch of the selector does not.
kubectl -n langfuse patch service prod-langfuse -p "{\"spec\":{\"selector\":$v3}}" >/dev/null
expect_sel "strategic merge patch of the selector keeps the stale keys" "$union"
kubectl -n langfuse patch service prod-langfuse --type json -p "[{\"op\":\"replace\",\"path\":\"/spec/selector\",\"value\":$v3}]" >/dev/null
expect_sel "restore with a JSON patch (gitops/README.md)" "$v3"
kubectl delete service -n langfuse prod-langfuse >/dev/null
# 3. Server-side apply of the Git Service (Argo CD ServerSideApply=true, Flux kustomize-controller,
#    forced): the v2 selector comes back whole; an apply without spec.selector (the field not in
#    Git) leaves the operator's selector alone.
kubectl apply --server-side --field-manager=gitops -f - <<<"$svc_git" >/dev/null
operator_switch
kubectl apply --server-side --force-conflicts --field-manager=gitops -f - <<<"$svc_git" >/dev/null
expect_sel "server-side re-apply of Git restores the v2 selector" "$v2"
operator_switch
kubectl apply --server-side --force-conflicts --field-manager=gitops -f - <<<"$svc_git_nosel" >/dev/null
expect_sel "server-side apply without spec.selector, after the switch, keeps it" "$v3"
kubectl delete service -n langfuse prod-langfuse >/dev/null
# ... but dropping spec.selector from Git while Git still owns it (before the switch) deletes it.
kubectl apply --server-side --field-manager=gitops -f - <<<"$svc_git" >/dev/null
kubectl apply --server-side --field-manager=gitops -f - <<<"$svc_git_nosel" >/dev/null
expect_sel "server-side apply without spec.selector, before the switch, removes it" ""
kubectl delete service -n langfuse prod-langfuse >/dev/null
# 4. v2's replicas: the same for spec.replicas.
dep_git='{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"prod-langfuse","namespace":"langfuse"},"spec":{"replicas":2,"selector":{"matchLabels":{"app.kubernetes.io/name":"langfuse","app.kubernetes.io/instance":"prod"}},"template":{"metadata":{"labels":{"app.kubernetes.io/name":"langfuse","app.kubernetes.io/instance":"prod"}},"spec":{"containers":[{"name":"langfuse","image":"langfuse/langfuse:2"}]}}}}'
dep_git_norep="${dep_git/\"replicas\":2,/}"
replicas() { kubectl -n langfuse get deployment prod-langfuse -o jsonpath='{.spec.replicas}'; }
expect_rep() { local got; got="$(replicas)"; if [[ "$got" == "$2" ]]; then pass "$1: $got"; else fail "$1: replicas $got, want $2"; fi; }
retire() { kubectl apply --server-side --force-conflicts --field-manager=langfuse-upgrade-operator -f - >/dev/null <<<'{"apiVersion":"apps/v1","kind":"Deployment","metadata":{"name":"prod-langfuse","namespace":"langfuse"},"spec":{"replicas":0}}'; }
kubectl apply --server-side --field-manager=gitops -f - <<<"$dep_git" >/dev/null
retire
expect_rep "operator retired v2" 0
kubectl apply --server-side --force-conflicts --field-manager=gitops -f - <<<"$dep_git" >/dev/null
expect_rep "server-side re-apply of Git scales v2 back up" 2
retire
kubectl apply --server-side --force-conflicts --field-manager=gitops -f - <<<"$dep_git_norep" >/dev/null
expect_rep "server-side apply without spec.replicas, after retirement, keeps 0" 0
kubectl delete deployment -n langfuse prod-langfuse >/dev/null

echo "rejected as they should be:"
# reject <what> <expected error, grep -E> < manifest: must fail, for that reason.
reject() {
  local what="$1" want="$2" out
  if out="$(kubectl apply -f - 2>&1)"; then
    fail "$what: accepted, should have been rejected"
  elif grep -qE -- "$want" <<<"$out"; then
    pass "$what: $(grep -oE -- "$want.*" <<<"$out" | head -1 | cut -c1-100)"
  else
    fail "$what: rejected, but not for the expected reason ($want): $out"
  fi
}
sed 's/^    extraEnv:$/    extraEnv:\n      - name: LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS\n        value: "true"/' examples/final-version.yaml |
  reject "extraEnv sets LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS (CEL rule)" "LANGFUSE_ENABLE_BACKGROUND_MIGRATIONS is managed by the operator"
sed 's/finalVersion: "3.40.0"/finalVersion: "latest"/' examples/final-version.yaml |
  reject "finalVersion latest (pattern)" 'spec.target.finalVersion: Invalid value: "latest"'
sed 's/promotion: Manual/promotion: Sometimes/' examples/manual-promotion.yaml |
  reject "promotion Sometimes (enum)" 'spec.strategy.promotion: Unsupported value: "Sometimes"'
sed '/sourceRef:/,/name: flux-system/d' examples/flux-kustomization.yaml |
  reject "Flux Kustomization without sourceRef" 'spec.sourceRef: Required value'
sed 's/jsonPointers:/jsonPointer:/' examples/argocd-application.yaml |
  reject "Argo CD Application with a typo in ignoreDifferences" 'unknown field "spec.ignoreDifferences\[0\].jsonPointer"'

echo
if [[ $failures -ne 0 ]]; then
  echo "tests/gitops/apply-examples.sh: $failures FAILED ($(ms))" >&2
  exit 1
fi
echo "tests/gitops/apply-examples.sh: all accepted by kube-apiserver $(kubectl version -o json | sed -n 's/.*"gitVersion": "\(v[^"]*\)".*/\1/p' | tail -1) ($(ms))"
