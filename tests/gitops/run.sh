#!/usr/bin/env bash
# The GitOps integration without a cluster (tests/gitops/apply-examples.sh is the apiserver half):
#  1. the Argo CD health check and resource actions (gitops/argocd/) against the sample objects in
#     tests/gitops/samples, with a real Lua 5.1 interpreter (Debian's lua5.1, installed when
#     missing) in the sandbox Argo CD gives argocd-cm scripts: expected status, message, enabled
#     actions and the one field each action changes;
#  2. gitops/argocd/argocd-cm.yaml is what gitops/argocd/render-argocd-cm.sh makes of the .lua files;
#  3. the same scripts on gopher-lua v1.1.2, the interpreter Argo CD v3.5.7 embeds
#     (tests/gitops/argocdlua): every output must equal PUC Lua's;
#  4. Flux: kstatus (fluxcd/cli-utils v1.2.3) and the healthCheckExprs of
#     gitops/flux/kustomization.yaml through fluxcd/pkg/runtime v0.110.3's CEL evaluator, the
#     versions kustomize-controller v1.9.6 uses, against the same samples (tests/gitops/fluxhealth).
# 3 and 4 need Go (the same toolchain as tests/cluster); the modules are pinned by go.sum and
# downloaded once through the Go module proxy (cold: about 2 min to build, then instant).
# Non-zero exit on any failure.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$root"
start_ns=$(date +%s%N)

# shellcheck source=tests/gitops/lib/ensure-lua.sh
. tests/gitops/lib/ensure-lua.sh
lua5.1 -v 2>&1 | head -1

failed=0
# Each test file exits non-zero on any mismatch and prints FAIL lines on stderr.
lua5.1 tests/gitops/test_health.lua "$root" || failed=1
lua5.1 tests/gitops/test_actions.lua "$root" || failed=1

# argocd-cm.yaml must be the rendering of the .lua files (they are what the tests above ran).
if diff -u gitops/argocd/argocd-cm.yaml <(gitops/argocd/render-argocd-cm.sh) >&2; then
  echo "argocd-cm.yaml: in sync with health.lua and actions/"
else
  echo "FAIL argocd-cm.yaml is stale: run gitops/argocd/render-argocd-cm.sh > gitops/argocd/argocd-cm.yaml" >&2
  failed=1
fi

command -v go >/dev/null 2>&1 || { echo "FAIL run.sh: go is needed for the gopher-lua and Flux checks (same toolchain as tests/cluster)" >&2; exit 1; }
export GOTOOLCHAIN=local GOFLAGS="-mod=readonly -buildvcs=false"

# gopher-lua (Argo CD's interpreter) must say exactly what PUC Lua says, for every script and sample.
lua_out="$(mktemp)"; go_out="$(mktemp)"
trap 'rm -f "$lua_out" "$go_out"' EXIT
lua5.1 tests/gitops/dump.lua "$root" > "$lua_out" || failed=1
if (cd tests/gitops/argocdlua && go run . "$root") > "$go_out"; then
  if cmp -s "$lua_out" "$go_out"; then
    echo "gopher-lua v1.1.2: $(wc -l < "$go_out") script outputs, identical to Lua 5.1"
  else
    diff "$lua_out" "$go_out" | cut -c1-240 | head -20 >&2
    echo "FAIL gopher-lua and Lua 5.1 disagree (above)" >&2
    failed=1
  fi
else
  echo "FAIL tests/gitops/argocdlua" >&2
  failed=1
fi

(cd tests/gitops/fluxhealth && go run . "$root") || failed=1

elapsed="$(( ($(date +%s%N) - start_ns) / 1000000 )) ms"
if [[ $failed -ne 0 ]]; then
  echo "tests/gitops/run.sh: FAILED (${elapsed})" >&2
  exit 1
fi
echo "tests/gitops/run.sh: all passed (${elapsed})"
