{{/* Names and labels. */}}
{{- define "labelwise.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* RayService names its clusters <name>-raycluster-<hash>: keep room for the suffix. */}}
{{- define "labelwise.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 40 | trimSuffix "-" -}}
{{- else if contains (include "labelwise.name" .) .Release.Name -}}
{{- .Release.Name | trunc 40 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name (include "labelwise.name" .) | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "labelwise.selectorLabels" -}}
app.kubernetes.io/name: {{ include "labelwise.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "labelwise.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "labelwise.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "labelwise.image" -}}
{{- printf "%s:%s" .Values.image.repository .Values.image.tag -}}
{{- end -}}

{{/* The Secret holding the API key: existingSecret, else the chart's own (from value or generated), else none. */}}
{{- define "labelwise.apiKeySecret" -}}
{{- if .Values.apiKey.existingSecret -}}
{{- .Values.apiKey.existingSecret -}}
{{- else if or .Values.apiKey.value .Values.apiKey.generate -}}
{{- printf "%s-api-key" (include "labelwise.fullname" .) -}}
{{- end -}}
{{- end -}}

{{/* Render-time checks of values that the schema cannot express. */}}
{{- define "labelwise.checks" -}}
{{- if hasKey .Values.serve.args "api_key" }}
{{- fail "serve.args.api_key would put the API key in the RayService in clear: set apiKey.existingSecret or apiKey.value" }}
{{- end }}
{{- if and (eq .Values.modelRepository.source "objectStore") (not .Values.modelRepository.objectStore.url) }}
{{- fail "modelRepository.objectStore.url is required when modelRepository.source is objectStore" }}
{{- end }}
{{- if and (eq .Values.modelRepository.source "none") (not (contains "://" (toString (.Values.serve.args.repository | default "")))) }}
{{- fail "modelRepository.source none mounts no repository: set serve.args.repository to the bucket labelwise reads itself (s3://BUCKET/PREFIX)" }}
{{- end }}
{{- if and .Values.gcsFaultTolerance.enabled (not .Values.gcsFaultTolerance.redisAddress) }}
{{- fail "gcsFaultTolerance.redisAddress is required when gcsFaultTolerance.enabled is true" }}
{{- end }}
{{- if and .Values.metrics.podMonitor.enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.metricsFrom) }}
{{- fail "metrics.podMonitor.enabled scrapes Ray's metrics port (8080), which the NetworkPolicy opens only to networkPolicy.metricsFrom: set it to Prometheus' namespace (e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]) or turn networkPolicy off" }}
{{- end }}
{{- if or (hasKey .Values.podLabels "app.kubernetes.io/name") (hasKey .Values.podLabels "app.kubernetes.io/instance") (hasKey .Values.podLabels "labelwise/ray-node") }}
{{- fail "podLabels may not set app.kubernetes.io/name, app.kubernetes.io/instance or labelwise/ray-node: the chart sets them (selectors of the PDB, NetworkPolicy and monitors), and a second value would be a duplicate key" }}
{{- end }}
{{- if eq .Values.upgradeStrategy.type "NewClusterWithIncrementalUpgrade" }}
{{- fail "upgradeStrategy.type NewClusterWithIncrementalUpgrade: KubeRay (1.5) then ignores the chart's serve Service and makes one per RayCluster behind a Gateway, so helm test, the ServiceMonitor, the NetworkPolicy and the documented Service name would reach nothing; use NewCluster or None" }}
{{- end }}
{{- if and .Values.rayAuth.enabled (not (semverCompare ">=2.52.0" .Values.rayVersion)) }}
{{- fail "rayAuth.enabled needs Ray >= 2.52.0 (token authentication); set rayAuth.enabled=false for an older rayVersion" }}
{{- end }}
{{- end -}}

{{- define "labelwise.pvcName" -}}
{{- default (printf "%s-models" (include "labelwise.fullname" .)) .Values.modelRepository.pvc.existingClaim -}}
{{- end -}}

{{/*
The Serve config (serveConfigV2): files/serve-config.yaml, the same file `labelwise serve` reads, with
values.serve.httpOptions set on it key by key, the app's `repository` arg set to modelRepository.mountPath
(the volume every Ray pod mounts; args win over LABELWISE_REPOSITORY), then values.serve.args set key by
key (`set`, never mergeOverwrite, which skips false and 0; a repository there wins, e.g. s3://...),
values.serve.deployments and .loggingConfig set on the application when not empty, then toYaml. Kept
this plain on purpose: tests/deploy/chart_render.py reproduces it in a few lines of Python so that CI,
which has no helm binary, validates what this renders with Ray's ServeDeploySchema.
*/}}
{{- define "labelwise.serveConfig" -}}
{{- $config := .Files.Get "files/serve-config.yaml" | fromYaml -}}
{{- $http := $config.http_options -}}
{{- range $key, $value := .Values.serve.httpOptions }}
{{- $_ := set $http $key $value -}}
{{- end }}
{{- $app := first $config.applications -}}
{{- $_ := set $app.args "repository" .Values.modelRepository.mountPath -}}
{{- range $key, $value := .Values.serve.args }}
{{- $_ := set $app.args $key $value -}}
{{- end }}
{{- with .Values.serve.deployments }}
{{- $_ := set $app "deployments" . -}}
{{- end }}
{{- with .Values.serve.loggingConfig }}
{{- $_ := set $app "logging_config" . -}}
{{- end }}
{{- toYaml $config -}}
{{- end -}}

{{/* Volumes every Ray pod mounts. */}}
{{- define "labelwise.volumes" -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ .Values.tmpSizeLimit }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ .Values.shmSizeLimit }}
- name: model-repository
{{- if eq .Values.modelRepository.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "labelwise.pvcName" . }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ .Values.modelRepository.objectStore.sizeLimit }}
{{- end }}
{{- end -}}

{{- define "labelwise.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
- name: model-repository
  mountPath: {{ .Values.modelRepository.mountPath }}
  readOnly: true
{{- end -}}

{{- define "labelwise.env" -}}
# Ray and Python write only under /tmp: the root filesystem is read-only.
- name: HOME
  value: /tmp/home
- name: LABELWISE_REPOSITORY
  value: {{ (eq .Values.modelRepository.source "none") | ternary .Values.serve.args.repository .Values.modelRepository.mountPath | quote }}
# Serve's HTTP proxy echoes a caller's X-Request-Id as it came; this middleware leaves it sane first, so the
# id in the response is the one in the log (serving/api/request_id.py).
- name: RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
  value: serving.api.request_id.ray_http_middlewares
{{- if include "labelwise.apiKeySecret" . }}
- name: LABELWISE_API_KEY
  valueFrom:
    secretKeyRef:
      name: {{ include "labelwise.apiKeySecret" . }}
      key: {{ .Values.apiKey.key }}
{{- end }}
{{- with .Values.env }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{- define "labelwise.ports" -}}
- containerPort: 6379
  name: gcs-server
- containerPort: 8265
  name: dashboard
- containerPort: 10001
  name: client
- containerPort: 8000
  name: serve
- containerPort: 8080
  name: metrics
{{- end -}}

{{/* Object-store sync: rclone copies the repository into the pod's emptyDir. */}}
{{- define "labelwise.syncContainer" -}}
{{- $store := .root.Values.modelRepository.objectStore -}}
- name: {{ .name }}
  image: {{ $store.image }}
  imagePullPolicy: IfNotPresent
  {{- if .loop }}
  command: ["/bin/sh", "-c"]
  args:
    - |
      while true; do
        sleep {{ $store.syncIntervalSeconds }}
        rclone sync --checksum --exclude '.tmp-*/**' {{ $store.url | quote }} {{ .root.Values.modelRepository.mountPath }} || echo "rclone sync failed; retrying in {{ $store.syncIntervalSeconds }} s"
      done
  {{- else }}
  args: ["sync", "--checksum", "--exclude", ".tmp-*/**", {{ $store.url | quote }}, {{ .root.Values.modelRepository.mountPath | quote }}]
  {{- end }}
  env:
    - name: HOME
      value: /tmp
  {{- with $store.envFromSecret }}
  envFrom:
    - secretRef:
        name: {{ . }}
  {{- end }}
  securityContext:
    {{- toYaml .root.Values.containerSecurityContext | nindent 4 }}
  resources:
    {{- toYaml $store.resources | nindent 4 }}
  volumeMounts:
    - name: model-repository
      mountPath: {{ .root.Values.modelRepository.mountPath }}
    - name: tmp
      mountPath: /tmp
{{- end -}}
