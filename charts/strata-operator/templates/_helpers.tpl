{{/* The chart's name, overridable. */}}
{{- define "strata-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The release's object name: <release>-strata-operator, or the release name if it holds the chart's. */}}
{{- define "strata-operator.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Labels on every object. */}}
{{- define "strata-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "strata-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: strata
{{- end -}}

{{/* Labels selecting the operator's pods. */}}
{{- define "strata-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "strata-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end -}}

{{/* Names of the webhook's Service, Secret and MutatingWebhookConfiguration, and of the Lease. */}}
{{- define "strata-operator.webhookService" -}}
{{- printf "%s-webhook" (include "strata-operator.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- define "strata-operator.webhookSecret" -}}
{{- printf "%s-webhook-tls" (include "strata-operator.fullname" .) -}}
{{- end -}}
{{- define "strata-operator.webhookConfiguration" -}}
{{- include "strata-operator.fullname" . -}}
{{- end -}}
{{- define "strata-operator.lease" -}}
{{- include "strata-operator.fullname" . -}}
{{- end -}}

{{/* The one namespace watched, or "" for all; more than one is refused. */}}
{{- define "strata-operator.watchNamespace" -}}
{{- if gt (len .Values.watchNamespaces) 1 -}}
{{- fail "watchNamespaces: the operator watches one namespace or all of them (empty list); give at most one" -}}
{{- end -}}
{{- if .Values.watchNamespaces -}}{{- first .Values.watchNamespaces -}}{{- end -}}
{{- end -}}

{{/* The image reference. */}}
{{- define "strata-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/*
The operator's command-line flags: the ONE place they are listed (the Deployment uses it; so can
an e2e test that runs the binary outside a cluster).
*/}}
{{- define "strata-operator.args" -}}
- operator
- --log.level={{ .Values.logLevel }}
- --log.format={{ .Values.logFormat }}
- --http-address=0.0.0.0:{{ .Values.httpPort }}
{{- with (include "strata-operator.watchNamespace" .) }}
- --namespace={{ . }}
{{- end }}
- --leader-election={{ .Values.leaderElection.enabled }}
{{- if .Values.leaderElection.enabled }}
- --leader-election.lease-name={{ include "strata-operator.lease" . }}
- --leader-election.lease-duration={{ .Values.leaderElection.leaseDuration }}
- --leader-election.renew-before={{ .Values.leaderElection.renewBefore }}
{{- end }}
{{- if .Values.webhook.enabled }}
- --webhook.enabled
- --webhook.address=0.0.0.0:{{ .Values.webhook.port }}
- --webhook.service={{ include "strata-operator.webhookService" . }}
- --webhook.secret={{ include "strata-operator.webhookSecret" . }}
- --webhook.configuration={{ include "strata-operator.webhookConfiguration" . }}
{{- if eq .Values.webhook.tlsMode "operator" }}
- --webhook.tls-mode=operator
{{- else if eq .Values.webhook.tlsMode "certManager" }}
- --webhook.tls-mode=files
- --webhook.cert-file=/etc/strata/webhook-tls/tls.crt
- --webhook.key-file=/etc/strata/webhook-tls/tls.key
{{- else }}
{{- fail (printf "webhook.tlsMode: %q is neither operator nor certManager" .Values.webhook.tlsMode) }}
{{- end }}
{{- end }}
{{- end -}}
