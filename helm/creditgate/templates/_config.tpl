{{/*
creditgate.toml, and the ConfigMap and Secret that carry the settings of a creditgate
container. Each takes a ctx (see _helpers.tpl).
*/}}

{{- define "creditgate.paths.config" -}}/etc/creditgate/config{{- end }}
{{- define "creditgate.paths.tls" -}}/etc/creditgate/tls{{- end }}
{{- define "creditgate.paths.clientCA" -}}/etc/creditgate/client-ca{{- end }}
{{- define "creditgate.paths.probeTLS" -}}/etc/creditgate/probe-tls{{- end }}

{{/*
Helm reads every number of the values as a float, and toToml would write 60000 as 60000.0,
which creditgate refuses for its integer settings: this turns whole floats back into
integers, in place, through maps and lists.
*/}}
{{- define "creditgate.integers" -}}
{{- $map := . -}}
{{- range $key, $value := $map }}
{{- if kindIs "float64" $value }}
{{- if eq $value (float64 (int64 $value)) }}
{{- $_ := set $map $key (int64 $value) }}
{{- end }}
{{- else if kindIs "map" $value }}
{{- include "creditgate.integers" $value }}
{{- else if kindIs "slice" $value }}
{{- $items := list }}
{{- range $item := $value }}
{{- if kindIs "map" $item }}
{{- include "creditgate.integers" $item }}
{{- $items = append $items $item }}
{{- else if and (kindIs "float64" $item) (eq $item (float64 (int64 $item))) }}
{{- $items = append $items (int64 $item) }}
{{- else }}
{{- $items = append $items $item }}
{{- end }}
{{- end }}
{{- $_ := set $map $key $items }}
{{- end }}
{{- end }}
{{- end }}

{{/* The TOML file: the free-form config, plus the keys the chart owns. */}}
{{- define "creditgate.toml" -}}
{{- $v := .values -}}
{{- $host := ternary "127.0.0.1" "0.0.0.0" .sidecar -}}
{{- $config := deepCopy ($v.config | default dict) -}}
{{- $_ := set $config "listen" (printf "%s:%d" $host (int $v.ports.grpc)) -}}
{{- $_ := set $config "admin_listen" (printf "%s:%d" $host (int $v.ports.admin)) -}}
{{- if $v.metrics.enabled -}}
{{- $metricsHost := ternary $v.sidecar.metricsHost "0.0.0.0" .sidecar -}}
{{- $_ := set $config "metrics_listen" (printf "%s:%d" $metricsHost (int $v.ports.metrics)) -}}
{{- else -}}
{{- $_ := set $config "metrics_listen" "off" -}}
{{- end -}}
{{- if $v.extAuthz.enabled -}}
{{- $_ := set $config "ext_authz_listen" (printf "%s:%d" $host (int $v.ports.extAuthz)) -}}
{{- end -}}
{{- $_ := set $config "data_dir" $v.persistence.mountPath -}}
{{- if $v.tls.enabled -}}
{{- $tls := dict "cert" (printf "%s/tls.crt" (include "creditgate.paths.tls" .)) "key" (printf "%s/tls.key" (include "creditgate.paths.tls" .)) -}}
{{- if $v.tls.mutual -}}
{{- $caDir := ternary (include "creditgate.paths.clientCA" .) (include "creditgate.paths.tls" .) (not (empty $v.tls.clientCASecretName)) -}}
{{- $_ := set $tls "client_ca" (printf "%s/ca.crt" $caDir) -}}
{{- end -}}
{{- $_ := set $config "tls" $tls -}}
{{- end -}}
{{- include "creditgate.integers" $config -}}
# creditgate serve --config: rendered by the creditgate chart. The Redis and ledger URLs,
# when given, come from a Secret through CREDITGATE_REDIS and CREDITGATE_LEDGER.
{{ toToml $config }}
{{- end }}

{{/* The ConfigMap holding creditgate.toml. */}}
{{- define "creditgate.configMap" -}}
apiVersion: v1
kind: ConfigMap
metadata:
  name: {{ printf "%s-config" .name | trunc 63 | trimSuffix "-" }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "creditgate.labels" . | nindent 4 }}
data:
  creditgate.toml: |
    {{- regexReplaceAll "(?m)^[ \t]+$" (include "creditgate.toml" . | trim | nindent 4) "" }}
{{- end }}

{{/* The Secret holding the Redis and ledger URLs given inline; empty when none is. */}}
{{- define "creditgate.connectionSecret" -}}
{{- $v := .values -}}
{{- if or $v.redis.url $v.ledger.url -}}
apiVersion: v1
kind: Secret
metadata:
  name: {{ printf "%s-connections" .name | trunc 63 | trimSuffix "-" }}
  namespace: {{ .context.Release.Namespace }}
  labels:
    {{- include "creditgate.labels" . | nindent 4 }}
type: Opaque
stringData:
  {{- if $v.redis.url }}
  redis-url: {{ $v.redis.url | quote }}
  {{- end }}
  {{- if $v.ledger.url }}
  ledger-url: {{ $v.ledger.url | quote }}
  {{- end }}
{{- end -}}
{{- end }}

{{/* An env entry of a URL from a Secret: takes a ctx with "what" (redis or ledger) and "env". */}}
{{- define "creditgate.urlEnv" -}}
{{- $s := index .values .what -}}
{{- if or $s.url $s.existingSecret.name }}
- name: {{ .env }}
  valueFrom:
    secretKeyRef:
      {{- if $s.url }}
      name: {{ printf "%s-connections" .name | trunc 63 | trimSuffix "-" }}
      key: {{ printf "%s-url" .what }}
      {{- else }}
      name: {{ $s.existingSecret.name }}
      key: {{ $s.existingSecret.key }}
      {{- end }}
{{- end }}
{{- end }}
