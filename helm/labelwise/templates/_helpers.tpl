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

{{/*
The key in the chart's own Secret: apiKey.value; else (generate) the key that Secret already holds in the
cluster (helm's `lookup`), else a new random one. Made once per render and kept in .Values.apiKey._rendered
(a key the values schema refuses from users), so that secret-api-key.yaml and the pod templates' checksum,
rendered from different files, see the same key. `lookup` needs the cluster: under `helm template`,
`--dry-run` and GitOps tools that render with `helm template` (Argo CD) it returns
nothing and every render makes a new key (see values.yaml, apiKey).
*/}}
{{- define "labelwise.apiKeyValue" -}}
{{- if .Values.apiKey.value -}}
{{- .Values.apiKey.value -}}
{{- else -}}
{{- if not (hasKey .Values.apiKey "_rendered") -}}
{{- $key := "" -}}
{{- $existing := lookup "v1" "Secret" .Release.Namespace (include "labelwise.apiKeySecret" .) -}}
{{- if and $existing $existing.data (hasKey $existing.data .Values.apiKey.key) -}}
{{- $key = index $existing.data .Values.apiKey.key | b64dec -}}
{{- else -}}
{{- $key = randAlphaNum 40 -}}
{{- end -}}
{{- $_ := set .Values.apiKey "_rendered" $key -}}
{{- end -}}
{{- .Values.apiKey._rendered -}}
{{- end -}}
{{- end -}}

{{/*
A fingerprint of the API key, put on every Ray pod template (annotation labelwise/api-key-checksum). Each
Ray container reads LABELWISE_API_KEY once, when it starts: a new key in the Secret alone would reach only
the pods started after it (old and new keys side by side: random 401s). With the fingerprint in
rayClusterConfig, a new key changes the RayService's cluster spec and KubeRay (upgradeStrategy NewCluster)
brings up a new Ray cluster with it and switches traffic once it serves. The chart's own Secret: sha256 of
the key stretched by sprig's derivePassword (scrypt, N=32768 r=8 p=2, salted with the release's fullname),
not of the key itself: pod annotations are read by many more than the Secret (anyone who may list pods,
most monitoring), and a sha256 of a short key set in apiKey.value could be searched offline at billions of
guesses a second; each scrypt guess costs ~32 MB and tens of milliseconds. An existingSecret, which the
chart cannot read: sha256 of its name and key name, so bump apiKey.revision when you rotate the key inside
it. apiKey.revision is part of the fingerprint in both cases. Empty when /v1 has no key.
*/}}
{{- define "labelwise.apiKeyChecksum" -}}
{{- $revision := toString (.Values.apiKey.revision | default 0) -}}
{{- if .Values.apiKey.existingSecret -}}
{{- printf "existingSecret:%s/%s\nrevision:%s" .Values.apiKey.existingSecret .Values.apiKey.key $revision | sha256sum -}}
{{- else if include "labelwise.apiKeySecret" . -}}
{{- $stretched := derivePassword 1 "maximum" (include "labelwise.apiKeyValue" .) "labelwise/api-key-checksum" (include "labelwise.fullname" .) -}}
{{- printf "key:%s\nrevision:%s" $stretched $revision | sha256sum -}}
{{- end -}}
{{- end -}}

{{/*
"true" when Ray may place a classifier replica on the head, the only Ray process that reads the model
repository: the head offers CPUs (rayStartParams num-cpus unset or above 0), or replicas ask for none
(serve.args.num_cpus 0, or a serve.deployments entry with ray_actor_options.num_cpus 0). Else (the default:
num-cpus "0") the head gets no model repository: no volume, no rclone init container or sidecar.
*/}}
{{- define "labelwise.headHostsReplicas" -}}
{{- $params := .Values.head.rayStartParams | default (dict) -}}
{{- if or (not (hasKey $params "num-cpus")) (gt (float64 (index $params "num-cpus")) 0.0) -}}
true
{{- else if and (hasKey .Values.serve.args "num_cpus") (eq (float64 .Values.serve.args.num_cpus) 0.0) -}}
true
{{- else -}}
{{- /* once, however many deployments ask for no CPU ("truetrue" read as false) */ -}}
{{- $zero := false -}}
{{- range .Values.serve.deployments }}
{{- with .ray_actor_options }}
{{- if and (hasKey . "num_cpus") (eq (float64 .num_cpus) 0.0) }}{{ $zero = true }}{{ end }}
{{- end }}
{{- end }}
{{- if $zero }}true{{ end }}
{{- end -}}
{{- end -}}

{{/* Render-time checks of values that the schema cannot express. */}}
{{- define "labelwise.checks" -}}
{{- $fullname := include "labelwise.fullname" . }}
{{- if not (regexMatch "^[a-z]([-a-z0-9]*[a-z0-9])?$" $fullname) }}
{{- fail (printf "fullname %s: KubeRay refuses a RayService whose name is not a DNS-1035 label (lowercase letters, digits and '-', starting with a letter), and the chart's Services take the same name; it comes from fullnameOverride, else the release name (with nameOverride): set fullnameOverride to such a name, e.g. labelwise" $fullname) }}
{{- end }}
{{- if hasKey .Values.serve.args "api_key" }}
{{- fail "serve.args.api_key would put the API key in the RayService in clear: set apiKey.existingSecret or apiKey.value" }}
{{- end }}
{{- if and (eq .Values.modelRepository.source "objectStore") (not .Values.modelRepository.objectStore.url) }}
{{- fail "modelRepository.objectStore.url is required when modelRepository.source is objectStore" }}
{{- end }}
{{- with .Values.modelRepository.objectStore }}
{{- if and (eq $.Values.modelRepository.source "objectStore") (not .envFromSecret) (regexMatch "^[^:/]+:" .url) }}
{{- fail (printf "modelRepository.objectStore.url %s: rclone reads the remote it names from RCLONE_CONFIG_<REMOTE>_* variables, which only the Secret in modelRepository.objectStore.envFromSecret gives the sync containers (empty here): set envFromSecret, or, without credentials (workload identity, a public bucket), give the remote inline, e.g. :s3,provider=AWS,env_auth=true:BUCKET/PREFIX" .url) }}
{{- end }}
{{- end }}
{{- if and (eq .Values.modelRepository.source "none") (not (contains "://" (toString (.Values.serve.args.repository | default "")))) }}
{{- fail "modelRepository.source none mounts no repository: set serve.args.repository to the bucket labelwise reads itself (s3://BUCKET/PREFIX)" }}
{{- end }}
{{- if and .Values.gcsFaultTolerance.enabled (not .Values.gcsFaultTolerance.redisAddress) }}
{{- fail "gcsFaultTolerance.redisAddress is required when gcsFaultTolerance.enabled is true" }}
{{- end }}
{{- if and .Values.gcsFaultTolerance.enabled .Values.gcsFaultTolerance.externalStorageNamespace (ne .Values.upgradeStrategy.type "None") }}
{{- fail "gcsFaultTolerance.externalStorageNamespace with upgradeStrategy.type NewCluster: every Ray cluster of the release would share that Redis key prefix, and the new cluster of an upgrade would load the old one's Serve actors and nodes from it and never get ready; leave it empty (KubeRay then uses each RayCluster's UID) or use upgradeStrategy.type None" }}
{{- end }}
{{- if and .Values.metrics.podMonitor.enabled .Values.networkPolicy.enabled (not .Values.networkPolicy.metricsFrom) }}
{{- fail "metrics.podMonitor.enabled scrapes Ray's metrics port (8080), which the NetworkPolicy opens only to networkPolicy.metricsFrom: set it to Prometheus' namespace (e.g. [{namespaceSelector: {matchLabels: {kubernetes.io/metadata.name: monitoring}}}]) or turn networkPolicy off" }}
{{- end }}
{{- if or (hasKey .Values.podLabels "app.kubernetes.io/name") (hasKey .Values.podLabels "app.kubernetes.io/instance") (hasKey .Values.podLabels "labelwise/ray-node") }}
{{- fail "podLabels may not set app.kubernetes.io/name, app.kubernetes.io/instance or labelwise/ray-node: the chart sets them (selectors of the PDB, NetworkPolicy and monitors), and a second value would be a duplicate key" }}
{{- end }}
{{- if hasKey .Values.podAnnotations "labelwise/api-key-checksum" }}
{{- fail "podAnnotations may not set labelwise/api-key-checksum: the chart sets it (the API key's fingerprint, which rolls the Ray cluster when the key changes); bump apiKey.revision to force a roll" }}
{{- end }}
{{- $groupNames := dict }}
{{- range .Values.workerGroups }}
{{- if hasKey $groupNames .name }}
{{- fail (printf "workerGroups: the name %s is given to two groups: KubeRay tells a group's pods by that name (label ray.io/group), so the two would count and scale each other's workers (or, with its webhook, the RayCluster is refused after install); give each group its own name" .name) }}
{{- end }}
{{- $_ := set $groupNames .name true }}
{{- if gt (int .minReplicas) (int .maxReplicas) }}
{{- fail (printf "workerGroups %s: minReplicas (%d) is above maxReplicas (%d): KubeRay would run maxReplicas workers while the PodDisruptionBudget and Serve's autoscaling count on minReplicas (node drains would wait forever); lower minReplicas or raise maxReplicas" .name (int .minReplicas) (int .maxReplicas)) }}
{{- end }}
{{- end }}
{{- range $deployment := .Values.serve.deployments }}
{{- with $deployment.autoscaling_config }}
{{- if and (hasKey . "min_replicas") (hasKey . "max_replicas") (gt (int .min_replicas) (int .max_replicas)) }}
{{- fail (printf "serve.deployments %s: autoscaling_config min_replicas (%d) is above max_replicas (%d): Serve would refuse the config when KubeRay deploys it, after install, and the RayService would never get ready; lower min_replicas or raise max_replicas" $deployment.name (int .min_replicas) (int .max_replicas)) }}
{{- end }}
{{- end }}
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

{{/*
Volumes of a Ray pod. Called with (dict "root" $ "models" <bool>): the model repository only in pods where
replicas may run (every worker; the head when labelwise.headHostsReplicas says so).
*/}}
{{- define "labelwise.volumes" -}}
{{- $root := .root -}}
- name: tmp
  emptyDir:
    sizeLimit: {{ $root.Values.tmpSizeLimit }}
- name: dshm
  emptyDir:
    medium: Memory
    sizeLimit: {{ $root.Values.shmSizeLimit }}
{{- if .models }}
- name: model-repository
{{- if eq $root.Values.modelRepository.source "pvc" }}
  persistentVolumeClaim:
    claimName: {{ include "labelwise.pvcName" $root }}
    readOnly: true
{{- else }}
  emptyDir:
    sizeLimit: {{ $root.Values.modelRepository.objectStore.sizeLimit }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "labelwise.volumeMounts" -}}
- name: tmp
  mountPath: /tmp
- name: dshm
  mountPath: /dev/shm
{{- if .models }}
- name: model-repository
  mountPath: {{ .root.Values.modelRepository.mountPath }}
  {{- /* source none: the object-store repository's own cache of the versions it loads, which it writes */}}
  readOnly: {{ ne .root.Values.modelRepository.source "none" }}
{{- end }}
{{- end -}}

{{- define "labelwise.env" -}}
# Ray and Python write only under /tmp: the root filesystem is read-only.
- name: HOME
  value: /tmp/home
- name: LABELWISE_REPOSITORY
  value: {{ (eq .Values.modelRepository.source "none") | ternary .Values.serve.args.repository .Values.modelRepository.mountPath | quote }}
{{- if eq .Values.modelRepository.source "none" }}
# The object-store repository caches the versions a replica loads here, on the volume sized by
# objectStore.sizeLimit, not under $HOME in the /tmp volume that Ray's logs and spill files share.
- name: LABELWISE_REPOSITORY_CACHE
  value: {{ .Values.modelRepository.mountPath | quote }}
{{- end }}
# Serve's HTTP proxy echoes a caller's X-Request-Id as it came; this middleware leaves it sane first, so the
# id in the response is the one in the log (serving/api/request_id.py).
- name: RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH
  value: serving.api.request_id.ray_http_middlewares
# One thread per tokenizer call: each replica batches its own rows, and the tokenizers' thread pool (as
# wide as the pod's CPUs) would compete with ONNX Runtime's threads for the cores Ray gave the replica.
- name: TOKENIZERS_PARALLELISM
  value: "false"
# Serve's replicas hand their metrics to Ray's every 1 s instead of 0.1 s (Ray exports them every 10 s):
# CPU on each replica's event loop that requests get back (serving.local_ray sets the same locally).
- name: RAY_SERVE_METRICS_EXPORT_INTERVAL_MS
  value: "1000"
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
  # The shell is PID 1 of its container: without a handler it ignores SIGTERM and every pod deletion
  # waits out terminationGracePeriodSeconds. sleep and rclone run in the background and the shell waits
  # for them, so that the trap runs as soon as the signal arrives (a foreground child defers it).
  command: ["/bin/sh", "-c"]
  args:
    - |
      child=
      trap 'kill "$child" 2>/dev/null; exit 0' TERM INT
      while true; do
        sleep {{ $store.syncIntervalSeconds }} & child=$!
        wait "$child"
        # Files first, then what names them: rclone copies in no set order, and a replica that saw an
        # alias, manifest.json or base.json before the graph it lists would refuse that version.
        rclone copy --checksum --exclude '.tmp-*/**' --exclude manifest.json --exclude base.json --exclude '_aliases/**' {{ $store.url | quote }} {{ .root.Values.modelRepository.mountPath }} & child=$!
        if wait "$child"; then
          rclone sync --checksum --exclude '.tmp-*/**' {{ $store.url | quote }} {{ .root.Values.modelRepository.mountPath }} & child=$!
          wait "$child" || echo "rclone sync failed; retrying in {{ $store.syncIntervalSeconds }} s"
        else
          echo "rclone copy failed; retrying in {{ $store.syncIntervalSeconds }} s"
        fi
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
