{{/* Names ------------------------------------------------------------------------------ */}}

{{- define "retcon.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "retcon.fullname" -}}
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

{{- define "retcon.operatorName" -}}
{{- printf "%s-operator" (include "retcon.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "retcon.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "retcon.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "retcon.webhookServiceName" -}}
{{- printf "%s-webhook" (include "retcon.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "retcon.webhookSecretName" -}}
{{- printf "%s-webhook-tls" (include "retcon.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "retcon.leaseName" -}}
{{- include "retcon.operatorName" . }}
{{- end }}

{{/* Labels ----------------------------------------------------------------------------- */}}

{{- define "retcon.selectorLabels" -}}
app.kubernetes.io/name: {{ include "retcon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "retcon.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "retcon.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: retcon
{{- end }}

{{/* Images ----------------------------------------------------------------------------- */}}

{{- define "retcon.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}

{{- define "retcon.runnerImage" -}}
{{- printf "%s:%s" .Values.stepRunner.image.repository (default .Chart.AppVersion .Values.stepRunner.image.tag) }}
{{- end }}

{{/* Watched namespaces ------------------------------------------------------------------

"retcon.exactNamespaces" is "true" when the operator watches a list of plain namespace
names: then its namespaced rights are granted by RoleBindings in just those namespaces and
the webhooks only see them. Glob patterns cannot be expressed in either, so they keep the
cluster-wide binding and webhooks (the operator still watches only what matches). */}}

{{- define "retcon.exactNamespaces" -}}
{{- $exact := gt (len .Values.namespaces) 0 }}
{{- range .Values.namespaces }}
{{- if regexMatch "[*?\\[\\]!]" . }}{{ $exact = false }}{{ end }}
{{- end }}
{{- if $exact }}true{{ end }}
{{- end }}

{{- define "retcon.webhookNamespaceSelector" -}}
{{- if include "retcon.exactNamespaces" . }}
namespaceSelector:
  matchExpressions:
    - key: kubernetes.io/metadata.name
      operator: In
      values:
        {{- range .Values.namespaces }}
        - {{ . | quote }}
        {{- end }}
{{- else }}
namespaceSelector: {}
{{- end }}
{{- end }}
