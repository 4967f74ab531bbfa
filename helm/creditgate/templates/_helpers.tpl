{{/*
Names, labels and the context ("ctx") the shared templates take.

A ctx is a dict:
  context  the root context ($): .Release, .Chart, .Subcharts
  values   values in this chart's layout (.Values here, .Values.creditgate in a parent chart)
  name     base name of the ConfigMap and Secret the container uses
  sidecar  true when creditgate shares a pod with a workload: its gRPC ports then listen on
           127.0.0.1, and its probes run in the container
  replicas optional: replicas of the pod, when not values.replicas
*/}}

{{- define "creditgate.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "creditgate.fullname" -}}
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

{{/* Selector labels of the chart's own workload (standalone or sidecar example). */}}
{{- define "creditgate.selectorLabels" -}}
app.kubernetes.io/name: {{ include "creditgate.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Labels of every object; takes a ctx. */}}
{{- define "creditgate.labels" -}}
{{- $c := .context -}}
helm.sh/chart: {{ printf "%s-%s" $c.Chart.Name $c.Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ ternary (include "creditgate.name" $c) "creditgate" (eq $c.Chart.Name "creditgate") }}
app.kubernetes.io/instance: {{ $c.Release.Name }}
app.kubernetes.io/managed-by: {{ $c.Release.Service }}
app.kubernetes.io/component: {{ ternary "sidecar" "server" .sidecar }}
app.kubernetes.io/version: {{ include "creditgate.imageTag" . | quote }}
{{- end }}

{{/* Image tag: image.tag, else the appVersion of the creditgate chart; takes a ctx. */}}
{{- define "creditgate.imageTag" -}}
{{- $c := .context -}}
{{- $tag := .values.image.tag | default "" | toString -}}
{{- if not $tag -}}
{{- if eq $c.Chart.Name "creditgate" -}}
{{- $tag = $c.Chart.AppVersion -}}
{{- else if and $c.Subcharts (hasKey $c.Subcharts "creditgate") -}}
{{- $tag = (index $c.Subcharts "creditgate").Chart.AppVersion -}}
{{- end -}}
{{- end -}}
{{- required "creditgate: set image.tag" $tag -}}
{{- end }}

{{/* Whether a Redis URL is given (inline or from a Secret); takes values. */}}
{{- define "creditgate.hasRedis" -}}
{{- if or .redis.url .redis.existingSecret.name }}true{{ end -}}
{{- end }}

{{/* Whether a PostgreSQL ledger URL is given; takes values. */}}
{{- define "creditgate.hasLedger" -}}
{{- if or .ledger.url .ledger.existingSecret.name }}true{{ end -}}
{{- end }}

{{/*
Checks of the values that the schema cannot express; takes a ctx and renders nothing.
*/}}
{{- define "creditgate.validate" -}}
{{- $v := .values -}}
{{- $shared := and (include "creditgate.hasRedis" $v) (include "creditgate.hasLedger" $v) -}}
{{- $replicas := int (hasKey . "replicas" | ternary .replicas $v.replicas) -}}
{{- if and (gt $replicas 1) (not $shared) -}}
{{- fail (printf "creditgate: replicas is %d, but more than one replica needs both redis (redis.url or redis.existingSecret.name) and a PostgreSQL ledger (ledger.url or ledger.existingSecret.name); without them balances and the SQLite ledger belong to one pod, so set replicas: 1" $replicas) -}}
{{- end -}}
{{- range $what := list "redis" "ledger" -}}
{{- $s := index $v $what -}}
{{- if and $s.url $s.existingSecret.name -}}
{{- fail (printf "creditgate: give %s.url or %s.existingSecret.name, not both" $what $what) -}}
{{- end -}}
{{- end -}}
{{- if $v.tls.enabled -}}
{{- if not $v.tls.secretName -}}
{{- fail "creditgate: tls.enabled needs tls.secretName (a kubernetes.io/tls Secret with tls.crt, tls.key and ca.crt)" -}}
{{- end -}}
{{- else if $v.tls.mutual -}}
{{- fail "creditgate: tls.mutual needs tls.enabled" -}}
{{- end -}}
{{- if and $v.metrics.serviceMonitor.enabled (not $v.metrics.enabled) -}}
{{- fail "creditgate: metrics.serviceMonitor.enabled needs metrics.enabled" -}}
{{- end -}}
{{- range $key := list "listen" "admin_listen" "metrics_listen" "ext_authz_listen" "tls" "data_dir" "redis" "ledger" -}}
{{- if hasKey ($v.config | default dict) $key -}}
{{- fail (printf "creditgate: config.%s is set by the chart from its values (ports, extAuthz, metrics, tls, persistence, redis, ledger): remove it from config" $key) -}}
{{- end -}}
{{- end -}}
{{- end }}
