{{/* Chart name, at most 63 characters. */}}
{{- define "lfu.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Full name, the prefix of every resource. 52 characters at most, so that suffixed names
("-metrics", "-leader-election", ...) stay within 63.
*/}}
{{- define "lfu.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "lfu.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every resource. */}}
{{- define "lfu.labels" -}}
helm.sh/chart: {{ include "lfu.chart" . }}
{{ include "lfu.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: langfuse-upgrade-operator
{{- end }}

{{/* Selector labels of the operator pods (immutable once installed). */}}
{{- define "lfu.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lfu.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "lfu.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lfu.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The namespace the operator watches in namespaced mode. */}}
{{- define "lfu.watchNamespace" -}}
{{- default .Release.Namespace .Values.watchNamespace }}
{{- end }}

{{- define "lfu.leaseName" -}}
{{- default (include "lfu.fullname" .) .Values.leaderElection.leaseName }}
{{- end }}

{{- define "lfu.metricsServiceName" -}}
{{- printf "%s-metrics" (include "lfu.fullname" .) }}
{{- end }}

{{- define "lfu.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Label matchers of this operator's series in the alert rules. */}}
{{- define "lfu.ruleSelector" -}}
{{- default (printf "job=%q" (include "lfu.metricsServiceName" .)) .Values.prometheusRule.selector }}
{{- end }}

{{/*
Cross-field checks the schema cannot express clearly; each fails the render with a message.
*/}}
{{- define "lfu.validate" -}}
{{- if and (eq .Values.rbac.scope "cluster") .Values.watchNamespace }}
{{- fail "watchNamespace is only used with rbac.scope=namespaced; leave it empty in cluster mode (the operator watches every namespace)" }}
{{- end }}
{{- if and (not .Values.leaderElection.enabled) (gt (int .Values.replicaCount) 1) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true (only one replica may act)" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not .Values.metrics.service.enabled) }}
{{- fail "metrics.serviceMonitor.enabled needs metrics.service.enabled" }}
{{- end }}
{{- end }}

{{/*
The operator's RBAC rules, the same for the ClusterRole (cluster mode) and the Role
(namespaced mode). Least privilege: exactly the calls the operator's code makes; tests/chart/run.sh
checks each one with the API server's own authorization, and a list of things it must not do.
*/}}
{{- define "lfu.operatorRules" -}}
# LangfuseUpgrades: watched (list+watch), read fresh (get, for read-your-writes) when the cached
# copy is not the version the operator last wrote or before a write that cannot be taken back,
# finalizer added and removed with a merge patch.
- apiGroups: ["upgrades.lfu-operator.dev"]
  resources: ["langfuseupgrades"]
  verbs: ["get", "list", "watch", "patch"]
# Status is written with server-side apply.
- apiGroups: ["upgrades.lfu-operator.dev"]
  resources: ["langfuseupgrades/status"]
  verbs: ["patch"]
# The v3 Deployments carry owner references with blockOwnerDeletion to the upgrade; the
# OwnerReferencesPermissionEnforcement admission plugin requires this.
- apiGroups: ["upgrades.lfu-operator.dev"]
  resources: ["langfuseupgrades/finalizers"]
  verbs: ["update"]
# v3 web/worker: server-side apply (create when missing, so `create` too), v2 replicas, the
# owner-reference release, and delete on abort or spec.strategy.deleteSource.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# The v2 Service: watched, and only spec.selector written (server-side apply; no `create`, so
# the operator can never create a Service by mistake).
- apiGroups: [""]
  resources: ["services"]
  verbs: ["get", "list", "watch", "patch"]
# v3 web pods (the operator's upgrade label), metadata only, watched into a cache.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list", "watch"]
# The Secret keys the spec references and v2's DATABASE_URL (Secret or ConfigMap): read one
# by name, never list.
- apiGroups: [""]
  resources: ["secrets", "configmaps"]
  verbs: ["get"]
# Which pods the v2 Service routes to.
- apiGroups: ["discovery.k8s.io"]
  resources: ["endpointslices"]
  verbs: ["list", "watch"]
# An HPA scaling v2 would fight the retirement (watched: a cache, and a wake-up when one appears).
- apiGroups: ["autoscaling"]
  resources: ["horizontalpodautoscalers"]
  verbs: ["list", "watch"]
# Events on the LangfuseUpgrade (new ones created, repeats patched as a series).
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.rbac.handoff }}
# spec.handoff: `helm.sh/resource-policy: keep` on the Secrets, ServiceAccount and bundled
# database the chart's pods still use, by a merge patch of the annotation alone (no read, no
# list, no create: an object that is not there is not made).
- apiGroups: [""]
  resources: ["secrets", "serviceaccounts"]
  verbs: ["patch"]
- apiGroups: ["apps"]
  resources: ["statefulsets"]
  verbs: ["patch"]
{{- end }}
{{- end }}

{{- define "lfu.alertLabels" -}}
severity: {{ .alert.severity }}
{{- with .root.Values.prometheusRule.additionalLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}
{{- define "lfu.runbookUrl" -}}
{{- with .root.Values.prometheusRule.runbookUrlBase }}
{{- printf "runbook_url: %s" (printf "%s#%s" . ($.name | lower) | quote) }}
{{- end }}
{{- end }}
