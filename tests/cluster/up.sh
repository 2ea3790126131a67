#!/usr/bin/env bash
# Starts a throwaway Kubernetes control plane on 127.0.0.1:
#   etcd, kube-apiserver (Node,RBAC), kube-controller-manager, kube-scheduler, kwok
# plus two kwok fake Nodes, so pods get scheduled and become Running+Ready.
#
# Usage: tests/cluster/up.sh <workdir>
#   <workdir> must be missing or empty; it receives pki/, logs/, pids/, etcd data,
#   kubeconfig (admin, group system:masters) and env (shell-sourceable ports/paths).
# Env (all optional):
#   LFU_BIN_DIR            use these binaries instead of running build.sh
#   LFU_ETCD_PORT, LFU_ETCD_PEER_PORT, LFU_APISERVER_PORT, LFU_KCM_PORT,
#   LFU_SCHEDULER_PORT     fixed ports; unset ones are picked free at random
#   LFU_UP_TIMEOUT         seconds to wait for each readiness step (default 90)
#   LFU_KEEP_WORKDIR=1     on failure, stop processes but keep <workdir> for debugging
# Stop with tests/cluster/down.sh <workdir>.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
[[ $# -eq 1 ]] || { echo "usage: $0 <workdir>" >&2; exit 2; }
mkdir -p "$1"
wd="$(cd "$1" && pwd)"
if [[ -n "$(ls -A "$wd")" ]]; then
  echo "up.sh: $wd is not empty (stale cluster? run down.sh first)" >&2
  exit 2
fi
# Marker so down.sh only ever deletes directories that up.sh created.
touch "$wd/.lfu-cluster"
mkdir -p "$wd/pki" "$wd/logs" "$wd/pids" "$wd/etcd" "$wd/kwok-home"
chmod 700 "$wd/etcd"   # etcd warns about anything looser
timeout_s="${LFU_UP_TIMEOUT:-90}"

# On any failure: show the tail of every log, stop what was started, clean up.
on_exit() {
  local rc=$?
  [[ $rc -eq 0 ]] && return 0
  echo "up.sh: FAILED (exit $rc); last log lines:" >&2
  for f in "$wd"/logs/*.log; do
    [[ -f "$f" ]] || continue
    echo "----- $f" >&2
    tail -n 25 "$f" >&2 || true
  done
  if [[ "${LFU_KEEP_WORKDIR:-0}" == 1 ]]; then
    LFU_KEEP_WORKDIR=1 "$here/down.sh" "$wd" >&2 || true
  else
    "$here/down.sh" "$wd" >&2 || true
  fi
  exit "$rc"
}
trap on_exit EXIT

bin_dir="${LFU_BIN_DIR:-$("$here/build.sh")}"
for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
  [[ -x "$bin_dir/$b" ]] || { echo "up.sh: missing $bin_dir/$b" >&2; exit 1; }
done
[[ -f "$bin_dir/kwok-stages.yaml" ]] || { echo "up.sh: missing $bin_dir/kwok-stages.yaml" >&2; exit 1; }

# --- ports ------------------------------------------------------------------
source "$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/lib.sh"
# Random ports below the Linux ephemeral range (32768+), skipping any that
# something already listens on, so several clusters can run side by side.
picked=" "
free_port() {
  local p i
  for i in $(seq 1 200); do
    p=$((20000 + RANDOM % 12000))
    [[ "$picked" == *" $p "* ]] && continue
    # (runs in $(...): the caller appends the result to $picked)
    if ! port_in_use "$p"; then
      echo "$p"
      return 0
    fi
  done
  echo "up.sh: no free port found" >&2
  return 1
}
etcd_port="${LFU_ETCD_PORT:-$(free_port)}"; picked+="$etcd_port "
etcd_peer_port="${LFU_ETCD_PEER_PORT:-$(free_port)}"; picked+="$etcd_peer_port "
api_port="${LFU_APISERVER_PORT:-$(free_port)}"; picked+="$api_port "
kcm_port="${LFU_KCM_PORT:-$(free_port)}"; picked+="$kcm_port "
sched_port="${LFU_SCHEDULER_PORT:-$(free_port)}"

# --- certificates (openssl CLI) ----------------------------------------------
# EC P-256 keys: generated instantly and accepted everywhere in Go's TLS stack.
pki="$wd/pki"
# openssl chatter goes to pki/openssl.log and is shown only if a call fails.
ossl() { openssl "$@" >>"$pki/openssl.log" 2>&1 || { cat "$pki/openssl.log" >&2; return 1; }; }
# new_ca <name> <CN>
new_ca() {
  ossl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$pki/$1.key" -out "$pki/$1.crt" -days 3650 -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
new_ca ca lfu-test-ca
# Separate CA for the front proxy (requestheader) like kubeadm: without a
# requestheader CA, the controller-manager and scheduler log an error every few
# seconds because kube-system/extension-apiserver-authentication lacks it.
new_ca front-proxy-ca lfu-test-front-proxy-ca

# issue <name> <subject> <extendedKeyUsage> [subjectAltName] (CA: $issuer, default ca)
issuer=ca
issue() {
  local name="$1" subj="$2" eku="$3" san="${4:-}"
  local ext="$pki/$name.ext"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=$eku"
    [[ -n "$san" ]] && echo "subjectAltName=$san"
  } > "$ext"
  ossl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subj"
  ossl x509 -req -in "$pki/$name.csr" -CA "$pki/$issuer.crt" -CAkey "$pki/$issuer.key" \
    -CAcreateserial -out "$pki/$name.crt" -days 3650 -extfile "$ext"
}
# 10.96.0.1 is the ClusterIP of default/kubernetes for the service range below.
issue apiserver "/CN=kube-apiserver" serverAuth \
  "IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
issue admin "/O=system:masters/CN=lfu-admin" clientAuth
# The operator under test gets its own identity, so the audit log below holds exactly its
# requests (measurements: API calls per minute, writes when nothing changes).
issue operator "/O=system:masters/CN=lfu-operator" clientAuth
# Real component identities: bootstrap RBAC already grants these users what they need.
issue controller-manager "/CN=system:kube-controller-manager" clientAuth
issue scheduler "/CN=system:kube-scheduler" clientAuth
# kwok writes node/pod status and leases for fake kubelets; give it cluster admin.
issue kwok "/O=system:masters/CN=kwok-controller" clientAuth
issuer=front-proxy-ca issue front-proxy-client "/CN=front-proxy-client" clientAuth
# Service-account token signing pair (RSA: what the token controller expects).
ossl genrsa -out "$pki/sa.key" 2048
ossl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub"
chmod 600 "$pki"/*.key

# kubeconfig <file> <cert-name>: self-contained (certs embedded) so tests can copy it.
kubeconfig() {
  cat > "$1" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: lfu-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 < "$pki/ca.crt")
users:
- name: $2
  user:
    client-certificate-data: $(base64 -w0 < "$pki/$2.crt")
    client-key-data: $(base64 -w0 < "$pki/$2.key")
contexts:
- name: lfu-test
  context:
    cluster: lfu-test
    user: $2
current-context: lfu-test
EOF
  chmod 600 "$1"
}
kubeconfig "$wd/kubeconfig" admin
kubeconfig "$wd/operator.kubeconfig" operator
# Audit only the operator's requests, metadata level (verb, resource, user agent, time).
cat > "$pki/audit-policy.yaml" <<EOF
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
  users: ["lfu-operator"]
- level: None
EOF
kubeconfig "$pki/controller-manager.kubeconfig" controller-manager
kubeconfig "$pki/scheduler.kubeconfig" scheduler
kubeconfig "$pki/kwok.kubeconfig" kwok

# --- processes -----------------------------------------------------------------
# start <name> <binary> args...: stdio fully redirected so callers that capture
# up.sh's output (e.g. cargo tests) are not kept waiting on inherited pipes.
start() {
  local name="$1"; shift
  "$@" </dev/null >>"$wd/logs/$name.log" 2>&1 &
  echo $! > "$wd/pids/$name.pid"
  echo "$name" >> "$wd/pids/order"
}
# wait_for <what> <command...>: retry until success or timeout.
wait_for() {
  local what="$1"; shift
  local deadline=$((SECONDS + timeout_s))
  until "$@" >/dev/null 2>&1; do
    if (( SECONDS >= deadline )); then
      echo "up.sh: timed out after ${timeout_s}s waiting for $what" >&2
      return 1
    fi
    # Fail fast if a component already died.
    local n
    while read -r n; do
      kill -0 "$(cat "$wd/pids/$n.pid")" 2>/dev/null || { echo "up.sh: $n exited" >&2; return 1; }
    done < "$wd/pids/order"
    sleep 0.5
  done
}
kc() { "$bin_dir/kubectl" --kubeconfig "$wd/kubeconfig" "$@"; }

# etcd: throwaway data, so fsync is pointless (and the slowest part on small VMs).
start etcd "$bin_dir/etcd" --name=lfu --data-dir="$wd/etcd" \
  --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
  --listen-peer-urls="http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster="lfu=http://127.0.0.1:$etcd_peer_port" --initial-cluster-state=new \
  --unsafe-no-fsync=true --log-level=warn
wait_for "etcd" curl -fsS "http://127.0.0.1:$etcd_port/health"

# kube-apiserver notes:
#  --endpoint-reconciler-type=none: the advertise address is 127.0.0.1 and Endpoints
#    validation rejects loopback IPs, so the default/kubernetes Endpoints reconciler
#    would only log errors. The Service itself is still created.
#  --service-account-*: issuer + signing key let the token controller and TokenRequest
#    mint tokens; the public key verifies them.
start kube-apiserver "$bin_dir/kube-apiserver" \
  --etcd-servers="http://127.0.0.1:$etcd_port" \
  --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" \
  --cert-dir="$pki/apiserver-generated" \
  --tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
  --client-ca-file="$pki/ca.crt" \
  --requestheader-client-ca-file="$pki/front-proxy-ca.crt" \
  --requestheader-allowed-names=front-proxy-client \
  --requestheader-username-headers=X-Remote-User \
  --requestheader-group-headers=X-Remote-Group \
  --requestheader-extra-headers-prefix=X-Remote-Extra- \
  --proxy-client-cert-file="$pki/front-proxy-client.crt" \
  --proxy-client-key-file="$pki/front-proxy-client.key" \
  --authorization-mode=Node,RBAC \
  --service-account-issuer=https://kubernetes.default.svc.cluster.local \
  --service-account-key-file="$pki/sa.pub" \
  --service-account-signing-key-file="$pki/sa.key" \
  --service-cluster-ip-range=10.96.0.0/16 \
  --endpoint-reconciler-type=none \
  --allow-privileged=true \
  --audit-policy-file="$pki/audit-policy.yaml" \
  --audit-log-path="$wd/logs/audit.log" \
  --audit-log-format=json \
  --profiling=false
wait_for "kube-apiserver /readyz" kc get --raw /readyz

# kube-controller-manager: the SA private key feeds the token controller, root CA goes
# into every namespace's kube-root-ca.crt, and each controller runs with its own SA
# (--use-service-account-credentials) as in a real cluster. The node monitor's grace is long:
# kwok's nodes never fail, but after an apiserver restart (the fault table) kwok can renew its
# node Leases late, and the node lifecycle controller then marks every pod NotReady, which kwok
# never sets back (a kubelet would). Real clusters are not tested for node failure here.
start kube-controller-manager "$bin_dir/kube-controller-manager" \
  --kubeconfig="$pki/controller-manager.kubeconfig" \
  --authentication-kubeconfig="$pki/controller-manager.kubeconfig" \
  --authorization-kubeconfig="$pki/controller-manager.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$kcm_port" --cert-dir="$pki/kcm-generated" \
  --service-account-private-key-file="$pki/sa.key" \
  --root-ca-file="$pki/ca.crt" \
  --cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
  --use-service-account-credentials=true \
  --node-monitor-grace-period=300s \
  --leader-elect=false \
  --profiling=false

start kube-scheduler "$bin_dir/kube-scheduler" \
  --kubeconfig="$pki/scheduler.kubeconfig" \
  --authentication-kubeconfig="$pki/scheduler.kubeconfig" \
  --authorization-kubeconfig="$pki/scheduler.kubeconfig" \
  --bind-address=127.0.0.1 --secure-port="$sched_port" --cert-dir="$pki/scheduler-generated" \
  --leader-elect=false \
  --profiling=false

# kwok: the standalone binary ships no stages; build.sh copied kwok's own "fast"
# stages (node-initialize, node-heartbeat-with-lease, pod-ready/complete/delete).
# --node-lease-duration-seconds makes kwok renew a Lease per node, which is what the
# node lifecycle controller watches. HOME is redirected so a ~/.kwok/kwok.yaml on
# the machine can never leak in. No --node-port: no kubelet API server is needed.
HOME="$wd/kwok-home" start kwok "$bin_dir/kwok" \
  --config="$bin_dir/kwok-stages.yaml" \
  --kubeconfig="$pki/kwok.kubeconfig" \
  --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
  --node-lease-duration-seconds=40 \
  --cidr=10.244.0.0/16

wait_for "namespace default" kc get namespace default
wait_for "serviceaccount default/default" kc -n default get serviceaccount default

# Two fake nodes (no taints, generous allocatable) that kwok marks Ready. Their
# own addresses are kept by kwok's node-initialize stage (else all share one IP).
for i in 0 1; do
  kc apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/os: linux
    kubernetes.io/hostname: kwok-node-$i
status:
  allocatable: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 100Gi}
  capacity: {cpu: "32", memory: 256Gi, pods: "110", ephemeral-storage: 100Gi}
  addresses:
  - {type: InternalIP, address: 10.255.0.$((i + 10))}
  - {type: Hostname, address: kwok-node-$i}
EOF
done
wait_for "2 Ready nodes" kc wait --for=condition=Ready node/kwok-node-0 node/kwok-node-1 --timeout=5s
# The lifecycle controller adds node.kubernetes.io/not-ready at creation and removes
# it once Ready; wait for that so the first pods of a test schedule immediately.
nodes_untainted() { [[ -z "$(kc get nodes -o jsonpath='{.items[*].spec.taints}')" ]]; }
wait_for "node taints cleared" nodes_untainted

cat > "$wd/env" <<EOF
# Source this file: ports and paths of the cluster in $wd
export KUBECONFIG=$wd/kubeconfig
export LFU_BIN_DIR=$bin_dir
# Our kubectl (matching the server) first: the machine's kubectl may be another version.
export PATH=$bin_dir:\$PATH
export LFU_APISERVER_URL=https://127.0.0.1:$api_port
export LFU_ETCD_PORT=$etcd_port
export LFU_APISERVER_PORT=$api_port
export LFU_KCM_PORT=$kcm_port
export LFU_SCHEDULER_PORT=$sched_port
# The operator's own identity, and the audit log of its requests.
export LFU_OPERATOR_KUBECONFIG=$wd/operator.kubeconfig
export LFU_AUDIT_LOG=$wd/logs/audit.log
EOF
echo "up.sh: cluster ready: KUBECONFIG=$wd/kubeconfig (apiserver https://127.0.0.1:$api_port)" >&2
