{{/*
The pod template of a Ray node. Called with (dict "root" $ "group" <head or a worker group> "kind" "head"|"worker").
The Ray container must stay first: KubeRay treats containers[0] as the Ray container and replaces its
command with `ray start`.
*/}}
{{- define "labelwise.podTemplate" -}}
{{- $root := .root -}}
{{- $group := .group -}}
{{- /* The model repository: on every worker; on the head only when replicas may run there. */}}
{{- $models := or (eq .kind "worker") (eq (include "labelwise.headHostsReplicas" $root) "true") -}}
{{- $apiKeyChecksum := include "labelwise.apiKeyChecksum" $root -}}
metadata:
  labels:
    {{- include "labelwise.selectorLabels" $root | nindent 4 }}
    labelwise/ray-node: {{ .kind }}
    {{- with $root.Values.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- if or $apiKeyChecksum $root.Values.podAnnotations }}
  # No hash of the Serve config here on purpose: KubeRay applies serveConfigV2 changes in place,
  # while any change to the pod template rebuilds the whole Ray cluster. The API key's fingerprint is
  # here for that very reason: containers read LABELWISE_API_KEY only when they start, so a new key
  # must bring up a new cluster (see labelwise.apiKeyChecksum).
  annotations:
    {{- with $apiKeyChecksum }}
    labelwise/api-key-checksum: {{ . | quote }}
    {{- end }}
    {{- with $root.Values.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  {{- end }}
spec:
  {{- with $root.Values.serviceAccount.name }}
  # Workload identity (IRSA, GKE/Azure Workload Identity) for the Ray and sync containers alike.
  serviceAccountName: {{ . }}
  {{- end }}
  {{- with $root.Values.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  securityContext:
    {{- toYaml $root.Values.podSecurityContext | nindent 4 }}
  {{- if and $models (eq $root.Values.modelRepository.source "objectStore") }}
  initContainers:
    {{- include "labelwise.syncContainer" (dict "root" $root "name" "model-sync-init" "loop" false) | nindent 4 }}
  {{- end }}
  containers:
    - name: ray-{{ .kind }}
      image: {{ include "labelwise.image" $root }}
      imagePullPolicy: {{ $root.Values.image.pullPolicy }}
      ports:
        {{- include "labelwise.ports" $root | nindent 8 }}
      env:
        {{- include "labelwise.env" $root | nindent 8 }}
      resources:
        {{- toYaml $group.resources | nindent 8 }}
      securityContext:
        {{- toYaml $root.Values.containerSecurityContext | nindent 8 }}
      volumeMounts:
        {{- include "labelwise.volumeMounts" (dict "root" $root "models" $models) | nindent 8 }}
      {{- if eq .kind "head" }}
      {{- with $group.readinessProbe }}
      readinessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- with $group.livenessProbe }}
      livenessProbe:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      {{- else }}
      {{- /* The raylet's health is served by this node's dashboard agent: on the port the group's
      rayStartParams give it, as KubeRay's own probes read it, else Ray's default. */}}
      {{- $agentPort := index (default (dict) $group.rayStartParams) "dashboard-agent-listen-port" | default 52365 }}
      {{- with $root.Values.workerProbes.readiness }}
      {{- if .enabled }}
      # Ready when the raylet is healthy and this pod's Serve proxy is healthy: what KubeRay checks by
      # default, so that a draining proxy (503 on /-/healthz) leaves the Service's endpoints at once.
      # Not the app's /readyz: that is the whole app's state (every scenario loaded), the same on every
      # pod, and one scenario that cannot load would take every worker out of the Service together.
      # `helm test` and the labelwise_* metrics watch /readyz instead.
      readinessProbe:
        exec:
          command:
            - bash
            - -c
            - >-
              wget --tries 1 -T 2 -q -O- http://localhost:{{ $agentPort }}/api/local_raylet_healthz | grep success &&
              wget --tries 1 -T 2 -q -O- http://localhost:8000/-/healthz | grep success
        periodSeconds: {{ .periodSeconds }}
        timeoutSeconds: {{ .timeoutSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      {{- with $root.Values.workerProbes.liveness }}
      {{- if .enabled }}
      # Liveness checks the raylet only: a proxy without replicas on this node, or a model still
      # loading, must not restart the pod. /healthz is checked by `helm test` and the readiness path.
      livenessProbe:
        exec:
          command:
            - bash
            - -c
            - wget -T 2 -q -O- http://localhost:{{ $agentPort }}/api/local_raylet_healthz | grep success
        periodSeconds: {{ .periodSeconds }}
        timeoutSeconds: {{ .timeoutSeconds }}
        failureThreshold: {{ .failureThreshold }}
      {{- end }}
      {{- end }}
      {{- end }}
    {{- if and $models (eq $root.Values.modelRepository.source "objectStore") (gt (int $root.Values.modelRepository.objectStore.syncIntervalSeconds) 0) }}
    {{- include "labelwise.syncContainer" (dict "root" $root "name" "model-sync" "loop" true) | nindent 4 }}
    {{- end }}
  volumes:
    {{- include "labelwise.volumes" (dict "root" $root "models" $models) | nindent 4 }}
  {{- with $group.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $group.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
{{- end -}}
