{{/*
The creditgate container and its volumes; each takes a ctx (see _helpers.tpl). The chart's
Deployment uses them, and so do the public sidecar templates in _sidecar.tpl.
*/}}

{{/* The probe's command: `creditgate health` against the gate port from inside the container. */}}
{{- define "creditgate.healthCommand" -}}
{{- $v := .values -}}
- creditgate
- health
{{- if $v.tls.enabled }}
- --server
- {{ printf "https://%s:%d" $v.tls.probe.host (int $v.ports.grpc) }}
- --ca-cert
- {{ printf "%s/ca.crt" (include "creditgate.paths.tls" .) }}
{{- if $v.tls.mutual }}
{{- $dir := ternary (include "creditgate.paths.probeTLS" .) (include "creditgate.paths.tls" .) (not (empty $v.tls.probe.clientCertSecretName)) }}
- --client-cert
- {{ printf "%s/tls.crt" $dir }}
- --client-key
- {{ printf "%s/tls.key" $dir }}
{{- end }}
{{- else }}
- --server
- {{ printf "http://127.0.0.1:%d" (int $v.ports.grpc) }}
{{- end }}
{{- end }}

{{/*
Probe handlers. Readiness asks gRPC health for the whole server (""), SERVING only while the
store and the ledger answer: Kubernetes' own gRPC probe on the gate port, or, when it cannot
(TLS, or a sidecar listening on 127.0.0.1 that the kubelet cannot reach), `creditgate health`
run in the container. Startup and liveness only ask whether the process accepts connections
(a TCP connect, or the same exec probe for a sidecar), so that Redis or the ledger being down
takes replicas out of the Service without restarting them.
*/}}
{{- define "creditgate.readinessHandler" -}}
{{- if or .sidecar .values.tls.enabled }}
exec:
  command:
    {{- include "creditgate.healthCommand" . | trim | nindent 4 }}
{{- else }}
grpc:
  port: {{ int .values.ports.grpc }}
  service: ""
{{- end }}
{{- end }}

{{- define "creditgate.probeTimings" -}}
periodSeconds: {{ int .periodSeconds }}
timeoutSeconds: {{ int .timeoutSeconds }}
failureThreshold: {{ int .failureThreshold }}
{{- end }}

{{- define "creditgate.container" -}}
{{- $v := .values -}}
{{- include "creditgate.validate" . -}}
- name: creditgate
  image: {{ printf "%s:%s" $v.image.repository (include "creditgate.imageTag" .) | quote }}
  imagePullPolicy: {{ $v.image.pullPolicy }}
  {{- if and .sidecar $v.sidecar.native }}
  restartPolicy: Always
  {{- end }}
  command: ["creditgate"]
  args:
    - serve
    - --config
    - {{ printf "%s/creditgate.toml" (include "creditgate.paths.config" .) }}
  env:
    - name: CREDITGATE_LOG_FORMAT
      value: {{ $v.logFormat | quote }}
    - name: RUST_LOG
      value: {{ $v.logLevel | quote }}
    {{- with include "creditgate.urlEnv" (dict "values" $v "name" .name "what" "redis" "env" "CREDITGATE_REDIS") }}
    {{- . | trim | nindent 4 }}
    {{- end }}
    {{- with include "creditgate.urlEnv" (dict "values" $v "name" .name "what" "ledger" "env" "CREDITGATE_LEDGER") }}
    {{- . | trim | nindent 4 }}
    {{- end }}
    {{- with $v.env }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  ports:
    {{- if .sidecar }}
    {{- if $v.metrics.enabled }}
    - name: cg-metrics
      containerPort: {{ int $v.ports.metrics }}
      protocol: TCP
    {{- end }}
    {{- else }}
    - name: grpc
      containerPort: {{ int $v.ports.grpc }}
      protocol: TCP
    - name: grpc-admin
      containerPort: {{ int $v.ports.admin }}
      protocol: TCP
    {{- if $v.extAuthz.enabled }}
    - name: grpc-ext-authz
      containerPort: {{ int $v.ports.extAuthz }}
      protocol: TCP
    {{- end }}
    {{- if $v.metrics.enabled }}
    - name: http-metrics
      containerPort: {{ int $v.ports.metrics }}
      protocol: TCP
    {{- end }}
    {{- end }}
  {{- if $v.probes.startup.enabled }}
  startupProbe:
    {{- if .sidecar }}
    {{- include "creditgate.readinessHandler" . | trim | nindent 4 }}
    {{- else }}
    tcpSocket:
      port: {{ int $v.ports.grpc }}
    {{- end }}
    {{- include "creditgate.probeTimings" $v.probes.startup | nindent 4 }}
  {{- end }}
  {{- if $v.probes.readiness.enabled }}
  readinessProbe:
    {{- include "creditgate.readinessHandler" . | trim | nindent 4 }}
    {{- include "creditgate.probeTimings" $v.probes.readiness | nindent 4 }}
  {{- end }}
  {{- if and $v.probes.liveness.enabled (not .sidecar) }}
  livenessProbe:
    tcpSocket:
      port: {{ int $v.ports.grpc }}
    {{- include "creditgate.probeTimings" $v.probes.liveness | nindent 4 }}
  {{- end }}
  {{- with $v.resources }}
  resources:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.securityContext }}
  securityContext:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  volumeMounts:
    - name: creditgate-config
      mountPath: {{ include "creditgate.paths.config" . }}
      readOnly: true
    - name: creditgate-data
      mountPath: {{ $v.persistence.mountPath }}
    - name: creditgate-tmp
      mountPath: /tmp
    {{- if $v.tls.enabled }}
    - name: creditgate-tls
      mountPath: {{ include "creditgate.paths.tls" . }}
      readOnly: true
    {{- if and $v.tls.mutual $v.tls.clientCASecretName }}
    - name: creditgate-client-ca
      mountPath: {{ include "creditgate.paths.clientCA" . }}
      readOnly: true
    {{- end }}
    {{- if and $v.tls.mutual $v.tls.probe.clientCertSecretName }}
    - name: creditgate-probe-tls
      mountPath: {{ include "creditgate.paths.probeTLS" . }}
      readOnly: true
    {{- end }}
    {{- end }}
{{- end }}

{{- define "creditgate.volumes" -}}
{{- $v := .values -}}
- name: creditgate-config
  configMap:
    name: {{ printf "%s-config" .name | trunc 63 | trimSuffix "-" }}
- name: creditgate-data
  {{- if $v.persistence.existingClaim }}
  persistentVolumeClaim:
    claimName: {{ $v.persistence.existingClaim }}
  {{- else if $v.persistence.sizeLimit }}
  emptyDir:
    sizeLimit: {{ $v.persistence.sizeLimit }}
  {{- else }}
  emptyDir: {}
  {{- end }}
- name: creditgate-tmp
  emptyDir:
    sizeLimit: 64Mi
{{- if $v.tls.enabled }}
- name: creditgate-tls
  secret:
    secretName: {{ $v.tls.secretName }}
    defaultMode: 0440
{{- if and $v.tls.mutual $v.tls.clientCASecretName }}
- name: creditgate-client-ca
  secret:
    secretName: {{ $v.tls.clientCASecretName }}
    defaultMode: 0440
    items:
      - key: ca.crt
        path: ca.crt
{{- end }}
{{- if and $v.tls.mutual $v.tls.probe.clientCertSecretName }}
- name: creditgate-probe-tls
  secret:
    secretName: {{ $v.tls.probe.clientCertSecretName }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- end }}
