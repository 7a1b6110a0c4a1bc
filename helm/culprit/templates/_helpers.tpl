{{/* Names. Kubernetes allows 63 characters in a name label; a StatefulSet's pods carry the
label controller-revision-hash = <name>-<10 characters>, so workload names stop at 52. */}}
{{- define "culprit.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "culprit.fullname" -}}
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

{{/* <fullname>-<component>, at most 52 characters. Args: root, component. */}}
{{- define "culprit.componentName" -}}
{{- $room := sub 51 (len .component) | int -}}
{{- printf "%s-%s" (include "culprit.fullname" .root | trunc $room | trimSuffix "-") .component -}}
{{- end -}}

{{- define "culprit.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "culprit.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{/* Labels. Args for the component variants: root, component. */}}
{{- define "culprit.selectorLabels" -}}
app.kubernetes.io/name: {{ include "culprit.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "culprit.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "culprit.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: culprit
{{- end -}}

{{- define "culprit.componentSelectorLabels" -}}
{{ include "culprit.selectorLabels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "culprit.componentLabels" -}}
{{ include "culprit.labels" .root }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* repository@digest, or repository:tag. Arg: an image values map; root for the default tag. */}}
{{- define "culprit.imageRef" -}}
{{- if .image.digest -}}
{{- printf "%s@%s" .image.repository .image.digest -}}
{{- else -}}
{{- printf "%s:%s" .image.repository (default .root.Chart.AppVersion .image.tag | toString) -}}
{{- end -}}
{{- end -}}

{{/* The checkov checks a workload skips, each with the reason, as checkov.io/skipN annotations.
Only checks that the rendered values really fail are listed. Args: root, image, resources,
qdrantKey (bool: QDRANT_API_KEY comes from a Secret), digestReason (optional), noUserEnv (bool:
the pod does not take envFrom/extraEnv; otherwise Secrets they bring in are found from the values). */}}
{{- define "culprit.checkovSkips" -}}
{{- $skips := list -}}
{{- if not .image.digest -}}
{{- $skips = append $skips (printf "CKV_K8S_43=%s" (default "No public culprit image is published, so there is no digest to default to; set image.digest to pin the image you push" .digestReason)) -}}
{{- end -}}
{{- if ne .image.pullPolicy "Always" -}}
{{- $skips = append $skips "CKV_K8S_15=IfNotPresent by default: a pinned image need not be pulled on every restart, which would turn a registry outage into a restart outage; set image.pullPolicy Always on shared clusters" -}}
{{- end -}}
{{- if not (and .resources.limits .resources.limits.cpu) -}}
{{- $skips = append $skips "CKV_K8S_11=No CPU limit by default: a throttled consumer falls behind and is kicked from its group; requests reserve the CPU, set resources.limits.cpu to cap it" -}}
{{- end -}}
{{- $why := list -}}
{{- if .qdrantKey -}}{{- $why = append $why "culprit reads the Qdrant API key only from QDRANT_API_KEY" -}}{{- end -}}
{{- if and (not .noUserEnv) (include "culprit.userSecretEnv" .root) -}}{{- $why = append $why "envFrom/extraEnv bring a Secret into the environment because the values ask for it" -}}{{- end -}}
{{- if $why -}}
{{- $skips = append $skips (printf "CKV_K8S_35=%s; the chart's own secrets are files" (join "; " $why)) -}}
{{- end -}}
{{- range $i, $s := $skips }}
checkov.io/skip{{ add1 $i }}: {{ $s | quote }}
{{- end -}}
{{- end -}}

{{/* Whether envFrom or extraEnv bring a Secret into the environment. */}}
{{- define "culprit.userSecretEnv" -}}
{{- $found := false -}}
{{- range .Values.envFrom -}}{{- if .secretRef -}}{{- $found = true -}}{{- end -}}{{- end -}}
{{- range .Values.extraEnv -}}{{- if and .valueFrom .valueFrom.secretKeyRef -}}{{- $found = true -}}{{- end -}}{{- end -}}
{{- if $found -}}true{{- end -}}
{{- end -}}

{{/* Secret librdkafka properties that must not be written into the ConfigMap. */}}
{{- define "culprit.checkNoSecretsInExtra" -}}
{{- $secret := list "sasl.password" "sasl.oauthbearer.client.secret" "ssl.key.password" "ssl.keystore.password" "ssl.key.pem" "sasl.oauthbearer.config" "sasl.kerberos.keytab" -}}
{{- $extra := merge (dict) (.Values.kafka.extra | default dict) (((.Values.config | default dict).kafka | default dict).extra | default dict) -}}
{{- range $k, $_ := $extra -}}
{{- if has $k $secret -}}
{{- fail (printf "kafka.extra.%s would be written into a ConfigMap in plain text: put it in the Secret named by kafka.existingSecret and map it in kafka.secretProperties" $k) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Where Secret-backed files are mounted. */}}
{{- define "culprit.kafkaSecretDir" -}}/etc/culprit/secrets/kafka{{- end -}}
{{- define "culprit.kafkaTlsDir" -}}/etc/culprit/kafka-tls{{- end -}}
{{- define "culprit.pagerdutyDir" -}}/etc/culprit/secrets/pagerduty{{- end -}}
{{- define "culprit.apiTokensDir" -}}/etc/culprit/secrets/api{{- end -}}
{{- define "culprit.stateDir" -}}/var/lib/culprit{{- end -}}

{{/* culprit.toml: the chart's settings, then .Values.config merged over them, rendered by toToml
so that no value can break the TOML. Numbers from values are floats to Helm; culprit reads a
whole float where it wants an integer. api.listen is set explicitly to all interfaces: probes,
Services and Prometheus reach the pod's IP, whatever culprit's own default is. */}}
{{- define "culprit.config" -}}
{{- include "culprit.checkNoSecretsInExtra" . -}}
{{- $extra := deepCopy (.Values.kafka.extra | default dict) -}}
{{- $tls := .Values.kafka.tls -}}
{{- if or $tls.existingSecret $tls.existingConfigMap -}}
{{- if $tls.caKey -}}{{- $_ := set $extra "ssl.ca.location" (printf "%s/%s" (include "culprit.kafkaTlsDir" .) $tls.caKey) -}}{{- end -}}
{{- if $tls.certKey -}}{{- $_ := set $extra "ssl.certificate.location" (printf "%s/%s" (include "culprit.kafkaTlsDir" .) $tls.certKey) -}}{{- end -}}
{{- if $tls.keyKey -}}{{- $_ := set $extra "ssl.key.location" (printf "%s/%s" (include "culprit.kafkaTlsDir" .) $tls.keyKey) -}}{{- end -}}
{{- end -}}
{{- $files := dict -}}
{{- if .Values.kafka.existingSecret -}}
{{- range $property, $key := .Values.kafka.secretProperties -}}
{{- $_ := set $files $property (printf "%s/%s" (include "culprit.kafkaSecretDir" $) $key) -}}
{{- end -}}
{{- end -}}
{{- $kafka := dict "brokers" .Values.kafka.brokers "embedder_group_prefix" .Values.kafka.embedderGroupPrefix "correlator_group" .Values.kafka.correlatorGroup "extra" $extra "extra_files" $files "state_dir" (printf "%s/snapshots" (include "culprit.stateDir" .)) -}}
{{- with .Values.kafka.topics -}}{{- $_ := set $kafka "topics" . -}}{{- end -}}
{{- $store := dict "backend" .Values.store.backend "path" (printf "%s/store/culprit-store.bin" (include "culprit.stateDir" .)) "qdrant_url" .Values.store.qdrant.url "qdrant_collection" .Values.store.qdrant.collection "retention_hours" (int .Values.store.retentionHours) -}}
{{- $c := dict
  "warmup_secs" (int .Values.warmupSecs)
  "pagerduty_enabled" false
  "kafka" $kafka
  "api" (dict "listen" (printf "0.0.0.0:%d" (int .Values.api.port)) "readiness_timeout_ms" (int .Values.api.readinessTimeoutMs))
  "pagerduty" (dict "min_severity" .Values.pagerduty.minSeverity)
  "store" $store
  "output" (dict "dir" (printf "%s/out" (include "culprit.stateDir" .)))
-}}
{{- toToml (mergeOverwrite $c (deepCopy (.Values.config | default dict))) -}}
{{- end -}}
