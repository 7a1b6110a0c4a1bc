{{- define "culprit.name" -}}{{ .Release.Name }}-culprit{{- end -}}
{{- define "culprit.labels" -}}
app.kubernetes.io/name: culprit
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}
{{- define "culprit.probes" -}}
ports:
  - name: http
    containerPort: {{ .Values.api.port }}
livenessProbe:
  httpGet: { path: /healthz, port: http }
readinessProbe:
  httpGet: { path: /readyz, port: http }
  periodSeconds: 10
{{- end -}}
{{- define "culprit.env" -}}
env:
  - name: CULPRIT_CONFIG
    value: /etc/culprit/culprit.toml
  - name: CULPRIT_LOG
    value: info
{{- if .Values.pagerduty.enabled }}
  - name: CULPRIT_PAGERDUTY_ROUTING_KEY
    valueFrom:
      secretKeyRef:
        name: {{ required "pagerduty.existingSecret is required when pagerduty.enabled" .Values.pagerduty.existingSecret }}
        key: routing-key
{{- end }}
volumeMounts:
  - name: config
    mountPath: /etc/culprit
{{- end -}}
