{{/* The pod template of every culprit workload. Args: root, component, args (container args),
values (the workload's merged values: resources, nodeSelector, tolerations, affinity),
correlator (bool), stateClaim (name of a PersistentVolumeClaim for /var/lib/culprit, or "" for an
emptyDir; a StatefulSet's volumeClaimTemplate named "state" is used when statefulState is true). */}}
{{- define "culprit.podTemplate" -}}
{{- $root := .root -}}
{{- $v := $root.Values -}}
{{- $ctx := dict "root" $root "component" .component -}}
metadata:
  labels:
    {{- include "culprit.componentLabels" $ctx | nindent 4 }}
    {{- with $v.podLabels }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
  annotations:
    checksum/config: {{ include "culprit.config" $root | sha256sum }}
    {{- if $v.metrics.podAnnotations }}
    prometheus.io/scrape: "true"
    prometheus.io/port: {{ $v.api.port | quote }}
    prometheus.io/path: /metrics
    {{- end }}
    {{- with $v.podAnnotations }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
spec:
  serviceAccountName: {{ include "culprit.serviceAccountName" $root }}
  # culprit never calls the Kubernetes API.
  automountServiceAccountToken: false
  {{- with $v.imagePullSecrets }}
  imagePullSecrets:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.priorityClassName }}
  priorityClassName: {{ . }}
  {{- end }}
  # Long enough for kafka.shutdown_timeout_ms (30 s) to finish and commit in-flight work.
  terminationGracePeriodSeconds: 40
  securityContext:
    {{- toYaml $v.podSecurityContext | nindent 4 }}
  {{- with .values.nodeSelector }}
  nodeSelector:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .values.tolerations }}
  tolerations:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with .values.affinity }}
  affinity:
    {{- toYaml . | nindent 4 }}
  {{- end }}
  {{- with $v.topologySpreadConstraints }}
  topologySpreadConstraints:
    {{- range . }}
    {{- $c := deepCopy . }}
    {{- if not $c.labelSelector }}
    {{- $_ := set $c "labelSelector" (dict "matchLabels" (include "culprit.componentSelectorLabels" $ctx | fromYaml)) }}
    {{- end }}
    - {{ toYaml $c | nindent 6 | trim }}
    {{- end }}
  {{- end }}
  containers:
    - name: culprit
      image: {{ include "culprit.imageRef" (dict "root" $root "image" $v.image) | quote }}
      imagePullPolicy: {{ $v.image.pullPolicy }}
      args: {{ toJson .args }}
      workingDir: {{ include "culprit.stateDir" $root }}
      securityContext:
        {{- toYaml $v.securityContext | nindent 8 }}
      ports:
        - name: http
          containerPort: {{ $v.api.port }}
          protocol: TCP
      startupProbe:
        httpGet: { path: /healthz, port: http }
        periodSeconds: {{ $v.probes.startup.periodSeconds }}
        failureThreshold: {{ $v.probes.startup.failureThreshold }}
      livenessProbe:
        httpGet: { path: /healthz, port: http }
        periodSeconds: {{ $v.probes.liveness.periodSeconds }}
        timeoutSeconds: {{ $v.probes.liveness.timeoutSeconds }}
        failureThreshold: {{ $v.probes.liveness.failureThreshold }}
      readinessProbe:
        httpGet: { path: /readyz, port: http }
        periodSeconds: {{ $v.probes.readiness.periodSeconds }}
        # /readyz waits up to api.readiness_timeout_ms for the broker; the probe waits longer.
        timeoutSeconds: {{ add1 (div (add (int $v.api.readinessTimeoutMs) 999) 1000) }}
        failureThreshold: {{ $v.probes.readiness.failureThreshold }}
      env:
        - name: CULPRIT_CONFIG
          value: /etc/culprit/config/culprit.toml
        - name: CULPRIT_LOG
          value: {{ $v.logLevel | quote }}
        # librdkafka's threads allocate with glibc's malloc (culprit's own code uses mimalloc);
        # two arenas instead of 8 per core cut the traces embedder's peak RSS from 249 to
        # 162 MiB in the soak (docs/EVALUATION.md, Soak).
        - name: MALLOC_ARENA_MAX
          value: "2"
        # mimalloc commits its arenas up front where the OS overcommits, and then gives freed
        # pages back by resetting them, which leaves them counted in RSS (and the cgroup) until
        # the kernel needs them; committing on demand decommits them instead: the traces
        # embedder's peak RSS in the soak fell from 308 to 255 MiB with no loss of throughput
        # (docs/EVALUATION.md, Soak).
        - name: MIMALLOC_ARENA_EAGER_COMMIT
          value: "0"
        {{- if $v.api.tokens.existingSecret }}
        - name: CULPRIT__API__TOKENS_FILE
          value: {{ include "culprit.apiTokensDir" $root }}/{{ $v.api.tokens.key }}
        {{- end }}
        {{- if .correlator }}
        {{- $peers := list }}
        {{- range $source, $src := $v.embedders }}
        {{- if $src.enabled }}
        {{- $peer := include "culprit.componentName" (dict "root" $root "component" (printf "embedder-%s" $source)) }}
        {{- $peers = append $peers (printf "http://%s:%v" $peer $v.api.port) }}
        {{- end }}
        {{- end }}
        {{- if $peers }}
        # The baselines live in the embedders: the correlator's dashboard shows and recalculates
        # them through their APIs.
        - name: CULPRIT__API__BASELINE_PEERS
          value: {{ join "," $peers | quote }}
        {{- end }}
        {{- if and $v.api.tokens.existingSecret $v.api.tokens.peerTokenKey }}
        - name: CULPRIT_API_PEER_TOKEN
          valueFrom:
            secretKeyRef:
              name: {{ $v.api.tokens.existingSecret }}
              key: {{ $v.api.tokens.peerTokenKey }}
        {{- end }}
        # The correlator alone pages and keeps the history; it keeps no embeddings.
        - name: CULPRIT__API__HISTORY_PATH
          value: {{ include "culprit.stateDir" $root }}/history.jsonl
        - name: CULPRIT__STORE__BACKEND
          value: none
        {{- if $v.pagerduty.enabled }}
        - name: CULPRIT__PAGERDUTY_ENABLED
          value: "true"
        - name: CULPRIT__PAGERDUTY__ROUTING_KEY_FILE
          value: {{ include "culprit.pagerdutyDir" $root }}/{{ $v.pagerduty.routingKeyKey }}
        {{- end }}
        {{- else if and (eq $v.store.backend "qdrant") $v.store.qdrant.existingSecret }}
        # culprit reads the Qdrant API key from this variable only.
        - name: QDRANT_API_KEY
          valueFrom:
            secretKeyRef:
              name: {{ $v.store.qdrant.existingSecret }}
              key: {{ $v.store.qdrant.apiKeyKey }}
        {{- end }}
        {{- with $v.extraEnv }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
      {{- with $v.envFrom }}
      envFrom:
        {{- toYaml . | nindent 8 }}
      {{- end }}
      resources:
        {{- toYaml .values.resources | nindent 8 }}
      volumeMounts:
        - name: config
          mountPath: /etc/culprit/config
          readOnly: true
        - name: tmp
          mountPath: /tmp
        - name: state
          mountPath: {{ include "culprit.stateDir" $root }}
        {{- if $v.kafka.existingSecret }}
        - name: kafka-secret
          mountPath: {{ include "culprit.kafkaSecretDir" $root }}
          readOnly: true
        {{- end }}
        {{- if or $v.kafka.tls.existingSecret $v.kafka.tls.existingConfigMap }}
        - name: kafka-tls
          mountPath: {{ include "culprit.kafkaTlsDir" $root }}
          readOnly: true
        {{- end }}
        {{- if $v.api.tokens.existingSecret }}
        - name: api-tokens
          mountPath: {{ include "culprit.apiTokensDir" $root }}
          readOnly: true
        {{- end }}
        {{- if and .correlator $v.pagerduty.enabled }}
        - name: pagerduty
          mountPath: {{ include "culprit.pagerdutyDir" $root }}
          readOnly: true
        {{- end }}
        {{- with $v.extraVolumeMounts }}
        {{- toYaml . | nindent 8 }}
        {{- end }}
  volumes:
    - name: config
      configMap:
        name: {{ include "culprit.fullname" $root }}
    - name: tmp
      emptyDir: { sizeLimit: 64Mi }
    {{- if .stateClaim }}
    - name: state
      persistentVolumeClaim:
        claimName: {{ .stateClaim }}
    {{- else if not .statefulState }}
    - name: state
      emptyDir: {}
    {{- end }}
    {{- if $v.kafka.existingSecret }}
    - name: kafka-secret
      secret:
        secretName: {{ $v.kafka.existingSecret }}
        defaultMode: 0440
    {{- end }}
    {{- if $v.kafka.tls.existingSecret }}
    - name: kafka-tls
      secret:
        secretName: {{ $v.kafka.tls.existingSecret }}
        defaultMode: 0440
    {{- else if $v.kafka.tls.existingConfigMap }}
    - name: kafka-tls
      configMap:
        name: {{ $v.kafka.tls.existingConfigMap }}
    {{- end }}
    {{- if $v.api.tokens.existingSecret }}
    - name: api-tokens
      secret:
        secretName: {{ $v.api.tokens.existingSecret }}
        defaultMode: 0440
        items:
          - key: {{ $v.api.tokens.key }}
            path: {{ $v.api.tokens.key }}
    {{- end }}
    {{- if and .correlator $v.pagerduty.enabled }}
    - name: pagerduty
      secret:
        secretName: {{ required "pagerduty.existingSecret is required when pagerduty.enabled" $v.pagerduty.existingSecret }}
        defaultMode: 0440
        items:
          - key: {{ $v.pagerduty.routingKeyKey }}
            path: {{ $v.pagerduty.routingKeyKey }}
    {{- end }}
    {{- with $v.extraVolumes }}
    {{- toYaml . | nindent 4 }}
    {{- end }}
{{- end -}}
