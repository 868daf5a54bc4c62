{{/*
Names and labels shared by every template.
*/}}

{{/* The chart name, shortened to the 63 characters a label value allows. */}}
{{- define "switchyard.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The release's base name. Names built on it add a suffix (`-edge`, `-operator`, ...), so it
is cut at 46 characters: the longest suffix (`-operator-metrics`, 17 characters) still
leaves a Service name within the 63 a DNS label allows, and the Redis StatefulSet's name
within the 52 its controller-revision-hash label allows.
*/}}
{{- define "switchyard.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 46 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 46 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* `helm.sh/chart`: chart name and version. */}}
{{- define "switchyard.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels on every object. */}}
{{- define "switchyard.labels" -}}
helm.sh/chart: {{ include "switchyard.chart" . }}
{{ include "switchyard.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | trunc 63 | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: switchyard
{{- with .Values.commonLabels }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Labels that identify the release's pods (never change them: selectors are immutable). */}}
{{- define "switchyard.selectorLabels" -}}
app.kubernetes.io/name: {{ include "switchyard.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* Per-component labels: call with (dict "ctx" $ "component" "edge"). */}}
{{- define "switchyard.componentLabels" -}}
{{ include "switchyard.labels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "switchyard.componentSelectorLabels" -}}
{{ include "switchyard.selectorLabels" .ctx }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{/* Object names. */}}
{{- define "switchyard.operator.fullname" -}}
{{ include "switchyard.fullname" . }}-operator
{{- end }}

{{- define "switchyard.edge.fullname" -}}
{{ include "switchyard.fullname" . }}-edge
{{- end }}

{{- define "switchyard.redis.fullname" -}}
{{ include "switchyard.fullname" . }}-redis
{{- end }}

{{- define "switchyard.sip.fullname" -}}
{{ include "switchyard.fullname" . }}-sip
{{- end }}

{{- define "switchyard.operator.serviceAccountName" -}}
{{- if .Values.operator.serviceAccount.create }}
{{- default (include "switchyard.operator.fullname" .) .Values.operator.serviceAccount.name }}
{{- else }}
{{- required "operator.serviceAccount.name is required when operator.serviceAccount.create=false" .Values.operator.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "switchyard.edge.serviceAccountName" -}}
{{- if .Values.edge.serviceAccount.create }}
{{- default (include "switchyard.edge.fullname" .) .Values.edge.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.edge.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The image both binaries run from: repository[:tag][@digest]. */}}
{{- define "switchyard.image" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion }}
{{- if .Values.image.digest }}
{{- printf "%s:%s@%s" .Values.image.repository $tag .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository $tag }}
{{- end }}
{{- end }}

{{/* The lease the operator replicas elect a leader with. */}}
{{- define "switchyard.operator.leaseName" -}}
{{- default (include "switchyard.operator.fullname" .) .Values.operator.leaderElection.leaseName }}
{{- end }}

{{/*
Redis: the URL both binaries get. The bundled Redis is reached through its Service; an
external one through redis.url. Exactly one of the two must be chosen.
*/}}
{{- define "switchyard.redis.url" -}}
{{- if and .Values.redis.url .Values.redis.bundled.enabled }}
{{- fail "redis: set either redis.url (external Redis) or redis.bundled.enabled=true (single-node Redis for trying Switchyard out), not both" }}
{{- else if .Values.redis.url }}
{{- .Values.redis.url }}
{{- else if .Values.redis.bundled.enabled }}
{{- printf "redis://%s.%s.svc.%s:%d" (include "switchyard.redis.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.redis.bundled.port) }}
{{- else }}
{{- fail "redis: set redis.url to your Redis (redis://host:6379/0), or redis.bundled.enabled=true for a single-node Redis to try Switchyard out" }}
{{- end }}
{{- end }}

{{/* Environment shared by the operator and the edge: the Redis URL and its password. */}}
{{- define "switchyard.redis.env" -}}
- name: SWITCHYARD_REDIS_URL
  value: {{ include "switchyard.redis.url" . | quote }}
{{- with .Values.redis.auth.existingSecret }}
- name: SWITCHYARD_REDIS_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.redis.auth.existingSecretPasswordKey }}
{{- end }}
{{- with .Values.redis.auth.existingSecretSentinelPasswordKey }}
{{- if not $.Values.redis.auth.existingSecret }}
{{- fail "redis.auth.existingSecretSentinelPasswordKey names a key of redis.auth.existingSecret: set that Secret too" }}
{{- end }}
{{- if not (or (hasPrefix "redis+sentinel://" $.Values.redis.url) (hasPrefix "rediss+sentinel://" $.Values.redis.url)) }}
{{- fail "redis.auth.existingSecretSentinelPasswordKey is for Sentinel: redis.url must be redis+sentinel:// or rediss+sentinel://" }}
{{- end }}
- name: SWITCHYARD_REDIS_SENTINEL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ $.Values.redis.auth.existingSecret }}
      key: {{ . }}
{{- end }}
{{- end }}

{{/* The address the edge advertises in Record-Route and Contact. */}}
{{- define "switchyard.edge.advertise" -}}
{{- if .Values.edge.advertise }}
{{- .Values.edge.advertise }}
{{- else if .Values.edge.service.splitProtocols }}
{{- printf "%s-udp.%s.svc.%s:%d" (include "switchyard.sip.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.edge.service.port) }}
{{- else }}
{{- printf "%s.%s.svc.%s:%d" (include "switchyard.sip.fullname" .) .Release.Namespace .Values.clusterDomain (int .Values.edge.service.port) }}
{{- end }}
{{- end }}

{{/* Pod and container security contexts (restricted Pod Security Standard). */}}
{{- define "switchyard.podSecurityContext" -}}
{{ toYaml .Values.podSecurityContext }}
{{- end }}

{{- define "switchyard.containerSecurityContext" -}}
{{ toYaml .Values.containerSecurityContext }}
{{- end }}

{{/*
A component's affinity: the user's, or a soft anti-affinity that spreads its pods over
nodes. Call with (dict "ctx" $ "component" "edge" "affinity" .Values.edge.affinity).
*/}}
{{- define "switchyard.affinity" -}}
{{- if .affinity }}
{{- toYaml .affinity }}
{{- else }}
podAntiAffinity:
  preferredDuringSchedulingIgnoredDuringExecution:
    - weight: 100
      podAffinityTerm:
        topologyKey: kubernetes.io/hostname
        labelSelector:
          matchLabels:
            {{- include "switchyard.componentSelectorLabels" (dict "ctx" .ctx "component" .component) | nindent 12 }}
{{- end }}
{{- end }}
