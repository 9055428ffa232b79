{{/*
The chart's name: "lfusys-operator" unless nameOverride is set.
*/}}
{{- define "lfusys-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The prefix of every object's name, at most 63 characters (a DNS label): fullnameOverride, or the
release name when it already contains the chart name, or "{release}-{name}".
*/}}
{{- define "lfusys-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
"{name}-{version}" for the helm.sh/chart label.
*/}}
{{- define "lfusys-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The labels that select the operator's Pods (stable across upgrades: never add to them).
*/}}
{{- define "lfusys-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "lfusys-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/*
The labels of every object of the chart.
*/}}
{{- define "lfusys-operator.labels" -}}
helm.sh/chart: {{ include "lfusys-operator.chart" . }}
{{ include "lfusys-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: lfusys
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/*
The operator's ServiceAccount name.
*/}}
{{- define "lfusys-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "lfusys-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
The leader-election Lease name.
*/}}
{{- define "lfusys-operator.leaseName" -}}
{{- default (include "lfusys-operator.fullname" .) .Values.leaseName }}
{{- end }}

{{/*
The image reference of the operator.
*/}}
{{- define "lfusys-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
The permissions the operator needs on LfusysClusters and on the objects it owns, shared by the
ClusterRole (every namespace) and the Role (watchNamespace). See docs/kubernetes.md, "RBAC".
*/}}
{{- define "lfusys-operator.rules" -}}
# The resource it reconciles: read and watch; never written but for its status.
- apiGroups: ["lfusys.io"]
  resources: ["lfusysclusters"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["lfusys.io"]
  resources: ["lfusysclusters/status"]
  verbs: ["get", "patch", "update"]
# Children carry owner references with blockOwnerDeletion=true; where the
# OwnerReferencesPermissionEnforcement admission plugin runs (e.g. OpenShift), setting that
# needs update on the owner's finalizers subresource. No finalizer is ever added.
- apiGroups: ["lfusys.io"]
  resources: ["lfusysclusters/finalizers"]
  verbs: ["update"]
# The children it owns (server-side apply = patch; create for the first apply; delete when a
# child is no longer wanted, e.g. the Ingress after ingress.enabled=false). Secrets: it reads the
# referenced credentials and signing-key Secrets and creates and keeps the generated key pair.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: [""]
  resources: ["services", "configmaps", "serviceaccounts", "secrets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["get", "list", "watch", "create", "patch", "update", "delete"]
# Events for notable actions (scaling, degraded dependencies), in both APIs.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- end }}
