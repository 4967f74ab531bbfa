{{/*
Public templates: creditgate as a sidecar container in another chart's pod.

Each takes a dict:
  context  the root context of the including chart ($)
  values   values in this chart's layout; with creditgate as a dependency of the including
           chart, .Values.creditgate (defaults included)
  name     optional: base name of the ConfigMap and Secret; default "<release>-creditgate"
  replicas optional: the replicas of the including workload, checked like the chart's own
           (more than one needs redis and a PostgreSQL ledger)

In a pod spec:
  containers:                       # or initContainers with sidecar.native: true
    {{- include "creditgate.sidecar.container" (dict "context" $ "values" .Values.creditgate) | nindent 4 }}
  volumes:
    {{- include "creditgate.sidecar.volumes" (dict "context" $ "values" .Values.creditgate) | nindent 4 }}
and once, as a template file of its own:
  {{ include "creditgate.sidecar.manifests" (dict "context" $ "values" .Values.creditgate) }}

The gRPC ports listen on 127.0.0.1 (the workload reaches creditgate at
http://127.0.0.1:50051, or https:// with tls), /metrics on sidecar.metricsHost.
*/}}

{{- define "creditgate.sidecar.container" -}}
{{- $name := .name | default (printf "%s-creditgate" .context.Release.Name) | trunc 50 | trimSuffix "-" -}}
{{- $ctx := dict "context" .context "values" .values "name" $name "sidecar" true -}}
{{- if hasKey . "replicas" }}{{ $_ := set $ctx "replicas" .replicas }}{{ end -}}
{{- include "creditgate.container" $ctx -}}
{{- end }}

{{- define "creditgate.sidecar.volumes" -}}
{{- $name := .name | default (printf "%s-creditgate" .context.Release.Name) | trunc 50 | trimSuffix "-" -}}
{{- include "creditgate.volumes" (dict "context" .context "values" .values "name" $name "sidecar" true) -}}
{{- end }}

{{/* The ConfigMap (and the Secret of inline URLs) the sidecar container reads. */}}
{{- define "creditgate.sidecar.manifests" -}}
{{- $name := .name | default (printf "%s-creditgate" .context.Release.Name) | trunc 50 | trimSuffix "-" -}}
{{- $ctx := dict "context" .context "values" .values "name" $name "sidecar" true -}}
{{- if hasKey . "replicas" }}{{ $_ := set $ctx "replicas" .replicas }}{{ end -}}
{{- include "creditgate.validate" $ctx -}}
{{- include "creditgate.configMap" $ctx }}
{{- with include "creditgate.connectionSecret" $ctx }}
---
{{ . }}
{{- end }}
{{- end }}
