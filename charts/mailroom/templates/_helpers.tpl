{{- define "mailroom.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "mailroom.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "mailroom.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{- define "mailroom.secretName" -}}
{{- .Values.secrets.existingSecret | default (printf "%s-secrets" (include "mailroom.fullname" .)) -}}
{{- end -}}

{{/* Environment shared by every service container and the migration Job. */}}
{{- define "mailroom.env" -}}
- name: DATABASE_URL
  valueFrom: { secretKeyRef: { name: {{ include "mailroom.secretName" . }}, key: DATABASE_URL } }
- name: REDIS_URL
  valueFrom: { secretKeyRef: { name: {{ include "mailroom.secretName" . }}, key: REDIS_URL } }
- name: KAFKA_BROKERS
  value: {{ .Values.config.kafkaBrokers | quote }}
- name: MAILROOM_KAFKA_PARTITIONS
  value: {{ .Values.config.kafkaPartitions | quote }}
- name: MAILROOM_KAFKA_REPLICATION
  value: {{ .Values.config.kafkaReplication | quote }}
- name: MAILROOM_LOG_LEVEL
  value: {{ .Values.config.logLevel | quote }}
- name: MAILROOM_REQUEST_TIMEOUT_MS
  value: {{ .Values.config.requestTimeoutMs | quote }}
- name: MAILROOM_CONCURRENCY_LIMIT
  value: {{ .Values.config.concurrencyLimit | quote }}
- name: MAILROOM_DB_MAX_CONNECTIONS
  value: {{ .Values.config.dbMaxConnections | quote }}
{{- with .Values.config.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}
