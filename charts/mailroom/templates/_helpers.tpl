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
- name: MAILROOM_SHUTDOWN_DRAIN_MS
  value: {{ .Values.config.shutdownDrainMs | quote }}
- name: MAILROOM_DB_MAX_CONNECTIONS
  value: {{ .Values.config.dbMaxConnections | quote }}
- name: MAILROOM_PUBLIC_URL
  value: {{ .Values.config.publicUrl | quote }}
{{- with .Values.config.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
{{- end }}
{{- end -}}

{{/* Which services call which (the NetworkPolicies' ingress and egress between services). */}}
{{- define "mailroom.callees" -}}
identity: []
access: [identity]
mailboxes: [identity, access]
invitations: [identity, access]
sync: [identity, access, mailboxes]
web: [identity, access, mailboxes, invitations, sync]
{{- end -}}

{{/*
The Deployments of this release, as YAML for fromYaml: each with the services it serves, its
arguments, replicas, resources and termination grace. One per service (sync as scheduler and
workers), or one process serving the five when monolith.enabled (the console has its own
Deployment, web.yaml, either way).
*/}}
{{- define "mailroom.components" -}}
{{- $v := .Values -}}
components:
{{- if $v.monolith.enabled }}
  - name: all
    serves: [identity, access, mailboxes, invitations, sync]
    args: [serve, "identity,access,mailboxes,invitations,sync"]
    replicas: {{ $v.monolith.replicas }}
    resources: {{ toJson $v.monolith.resources }}
    grace: {{ $v.services.sync.worker.terminationGracePeriodSeconds }}
{{- else }}
{{- range $name := list "identity" "access" "mailboxes" "invitations" }}
{{- $svc := index $v.services $name }}
{{- if $svc.enabled }}
  - name: {{ $name }}
    serves: [{{ $name }}]
    args: [serve, {{ $name }}]
    replicas: {{ $svc.replicas }}
    resources: {{ toJson $svc.resources }}
    grace: 5
{{- end }}
{{- end }}
{{- if $v.services.sync.enabled }}
  - name: sync-scheduler
    serves: [sync]
    args: [serve, sync, --role, scheduler]
    replicas: {{ $v.services.sync.scheduler.replicas }}
    resources: {{ toJson $v.services.sync.scheduler.resources }}
    grace: 5
  - name: sync-worker
    serves: [sync]
    args: [serve, sync, --role, worker]
    replicas: {{ $v.services.sync.worker.replicas }}
    resources: {{ toJson $v.services.sync.worker.resources }}
    grace: {{ $v.services.sync.worker.terminationGracePeriodSeconds }}
    autoscaled: {{ or $v.keda.enabled $v.services.sync.worker.autoscaling.enabled }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The services a release serves (monolith: all five). */}}
{{- define "mailroom.served" -}}
{{- $out := list -}}
{{- range $name := list "identity" "access" "mailboxes" "invitations" "sync" -}}
{{- if or $.Values.monolith.enabled (index $.Values.services $name).enabled -}}
{{- $out = append $out $name -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* A service's address for people and tools (its ClusterIP Service). */}}
{{- define "mailroom.endpoint" -}}
{{- printf "http://%s:%v" (include "mailroom.serviceName" .) (index .root.Values.services .name).grpcPort -}}
{{- end -}}

{{/* A service's ClusterIP Service name: `<fullname>-<service>`, within Kubernetes' 63. */}}
{{- define "mailroom.serviceName" -}}
{{- printf "%s-%s" (include "mailroom.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A service's address for the other services: the headless Service, whose DNS answer lists
     every ready pod, so each caller balances across them. */}}
{{- define "mailroom.peerEndpoint" -}}
{{- printf "http://%s:%v" (include "mailroom.peersName" .) (index .root.Values.services .name).grpcPort -}}
{{- end -}}

{{/* The headless Service's name: `<fullname>-<service>` cut to leave room for `-peers`
     within Kubernetes' 63 characters (cutting the whole would drop the suffix and collide
     with the ClusterIP Service's name). */}}
{{- define "mailroom.peersName" -}}
{{- printf "%s-%s" (include "mailroom.fullname" .root) .name | trunc 57 | trimSuffix "-" | printf "%s-peers" -}}
{{- end -}}

{{- define "mailroom.secretEnv" -}}
- name: {{ .env }}
  valueFrom: { secretKeyRef: { name: {{ include "mailroom.secretName" .root }}, key: {{ .key }}{{ if .optional }}, optional: true{{ end }} } }
{{- end -}}

{{/* The environment one service needs beyond the shared one: its ports, peers, secrets. */}}
{{- define "mailroom.serviceEnv" -}}
{{- $root := .root -}}
{{- $name := .name -}}
{{- $svc := index $root.Values.services $name -}}
{{- $smtp := $root.Values.config.smtp -}}
- name: MAILROOM_{{ upper $name }}__PORT
  value: {{ $svc.grpcPort | quote }}
{{- /* Any other setting of the README's configuration table, as MAILROOM_<SERVICE>__<KEY>. */}}
{{- range $key, $value := ($svc.settings | default dict) }}
- name: MAILROOM_{{ upper $name }}__{{ upper $key }}
  value: {{ if kindIs "float64" $value }}{{ $value | int64 | toString | quote }}{{ else }}{{ $value | toString | quote }}{{ end }}
{{- end }}
- name: MAILROOM_{{ upper $name }}__METRICS_PORT
  value: {{ $svc.metricsPort | quote }}
{{- if ne $name "identity" }}
- name: MAILROOM_{{ upper $name }}__IDENTITY_ENDPOINT
  value: {{ include "mailroom.peerEndpoint" (dict "root" $root "name" "identity") | quote }}
{{- end }}
{{- if has $name (list "mailboxes" "invitations" "sync") }}
- name: MAILROOM_{{ upper $name }}__ACCESS_ENDPOINT
  value: {{ include "mailroom.peerEndpoint" (dict "root" $root "name" "access") | quote }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" (printf "MAILROOM_%s__SERVICE_CLIENT_SECRET" (upper $name)) "key" (printf "MAILROOM_%s__SERVICE_CLIENT_SECRET" (upper $name))) | nindent 0 }}
{{- end }}
{{- if eq $name "identity" }}
{{- range $client := list "mailboxes" "invitations" "sync" }}
{{- if or $root.Values.monolith.enabled (index $root.Values.services $client).enabled }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" (printf "MAILROOM_IDENTITY__SERVICE_CLIENTS__%s" (upper $client)) "key" (printf "MAILROOM_%s__SERVICE_CLIENT_SECRET" (upper $client))) | nindent 0 }}
{{- end }}
{{- end }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" "MAILROOM_IDENTITY__SERVICE_CLIENTS__OPERATOR" "key" "MAILROOM_IDENTITY__SERVICE_CLIENTS__OPERATOR" "optional" true) | nindent 0 }}
{{- with $root.Values.config.passwordResetUrl }}
- name: MAILROOM_IDENTITY__PASSWORD_RESET_URL
  value: {{ . | quote }}
{{- end }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" "MAILROOM_IDENTITY__SIGNING_KEYS" "key" "MAILROOM_IDENTITY__SIGNING_KEYS") | nindent 0 }}
{{- end }}
{{- if has $name (list "identity" "invitations") }}
{{- /* The console forwards each browser's address: its pods are trusted proxies too. */}}
{{- $proxies := compact (list ($root.Values.config.trustedProxies | default "") (ternary ($root.Values.web.podCidrs | default "") "" $root.Values.web.enabled)) }}
- name: MAILROOM_{{ upper $name }}__TRUSTED_PROXIES
  value: {{ join ", " $proxies | quote }}
- name: MAILROOM_{{ upper $name }}__SMTP__HOST
  value: {{ $smtp.host | quote }}
- name: MAILROOM_{{ upper $name }}__SMTP__PORT
  value: {{ $smtp.port | quote }}
- name: MAILROOM_{{ upper $name }}__SMTP__SECURITY
  value: {{ $smtp.security | quote }}
- name: MAILROOM_{{ upper $name }}__SMTP__FROM
  value: {{ $smtp.from | quote }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" (printf "MAILROOM_%s__SMTP__USERNAME" (upper $name)) "key" "MAILROOM_SMTP_USERNAME" "optional" true) | nindent 0 }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" (printf "MAILROOM_%s__SMTP__PASSWORD" (upper $name)) "key" "MAILROOM_SMTP_PASSWORD" "optional" true) | nindent 0 }}
{{- end }}
{{- if has $name (list "mailboxes" "sync") }}
{{- $servers := $root.Values.config.mailServers }}
- name: MAILROOM_{{ upper $name }}__MAIL_SERVERS__ALLOWED_NETWORKS
  value: {{ $servers.allowedNetworks | default "" | quote }}
- name: MAILROOM_{{ upper $name }}__MAIL_SERVERS__ALLOWED_HOSTS
  value: {{ $servers.allowedHosts | default "" | quote }}
- name: MAILROOM_{{ upper $name }}__MAIL_SERVERS__ALLOWED_PORTS
  value: {{ $servers.allowedPorts | default "25,465,587,2525,143,993" | quote }}
{{- end }}
{{- if eq $name "mailboxes" }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" "MAILROOM_MAILBOXES__SEALING_KEYS" "key" "MAILROOM_MAILBOXES__SEALING_KEYS") | nindent 0 }}
{{- end }}
{{- if eq $name "invitations" }}
{{- with $svc.acceptUrl }}
- name: MAILROOM_INVITATIONS__ACCEPT_URL
  value: {{ . | quote }}
{{- end }}
{{- with $svc.joinUrl }}
- name: MAILROOM_INVITATIONS__JOIN_URL
  value: {{ . | quote }}
{{- end }}
- name: MAILROOM_INVITATIONS__INVITATION_TTL_SECS
  value: {{ $svc.invitationTtlSecs | quote }}
{{- end }}
{{- if eq $name "sync" }}
- name: MAILROOM_SYNC__MAILBOXES_ENDPOINT
  value: {{ include "mailroom.peerEndpoint" (dict "root" $root "name" "mailboxes") | quote }}
- name: MAILROOM_SYNC__WORKER_CONCURRENCY
  value: {{ $svc.worker.concurrency | quote }}
- name: MAILROOM_SYNC__IDLE_MAX_CONNECTIONS
  value: {{ $svc.worker.idleMaxConnections | quote }}
{{- end }}
{{- end -}}

{{/* Kafka brokers as KEDA (in its own namespace) must name them: `kafka:9092` becomes
`kafka.<release namespace>.svc:9092`; names with a dot are left as they are. */}}
{{- define "mailroom.kedaBrokers" -}}
{{- $out := list -}}
{{- range $broker := splitList "," .Values.config.kafkaBrokers -}}
{{- $broker = trim $broker -}}
{{- $host := index (splitList ":" $broker) 0 -}}
{{- if contains "." $host -}}
{{- $out = append $out $broker -}}
{{- else -}}
{{- $out = append $out (printf "%s.%s.svc%s" $host $.Release.Namespace (trimPrefix $host $broker)) -}}
{{- end -}}
{{- end -}}
{{- join "," $out -}}
{{- end -}}
