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

{{/* Whether the migration Job reads MIGRATE_DATABASE_URL (straight to PostgreSQL, bypassing
     PgBouncer) instead of DATABASE_URL: "true" or "false". */}}
{{- define "mailroom.migrateDirect" -}}
{{- if .Values.secrets.existingSecret -}}
{{- .Values.migrations.directDatabaseUrl | default false -}}
{{- else -}}
{{- not (empty .Values.secrets.migrateDatabaseUrl) -}}
{{- end -}}
{{- end -}}

{{/* Environment shared by every service container (the migration Job has its own, the
     database's only). */}}
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
- name: MAILROOM_CONCURRENCY_QUEUE
  value: {{ .Values.config.concurrencyQueue | quote }}
- name: MAILROOM_CONCURRENCY_QUEUE_MS
  value: {{ .Values.config.concurrencyQueueMs | quote }}
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
arguments, replicas, values (resources, scheduling, extra env…) and termination grace. One per service (sync as scheduler and
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
    values: {{ toJson $v.monolith }}
    grace: {{ $v.services.sync.worker.terminationGracePeriodSeconds }}
{{- else }}
{{- range $name := list "identity" "access" "mailboxes" "invitations" }}
{{- $svc := index $v.services $name }}
{{- if $svc.enabled }}
  - name: {{ $name }}
    serves: [{{ $name }}]
    args: [serve, {{ $name }}]
    replicas: {{ $svc.replicas }}
    values: {{ toJson (omit $svc "settings") }}
    grace: 5
{{- end }}
{{- end }}
{{- if $v.services.sync.enabled }}
  - name: sync-scheduler
    serves: [sync]
    args: [serve, sync, --role, scheduler]
    replicas: {{ $v.services.sync.scheduler.replicas }}
    values: {{ toJson $v.services.sync.scheduler }}
    grace: 5
  - name: sync-worker
    serves: [sync]
    args: [serve, sync, --role, worker]
    replicas: {{ $v.services.sync.worker.replicas }}
    values: {{ toJson (omit $v.services.sync.worker "autoscaling") }}
    minReplicas: {{ ternary $v.services.sync.worker.autoscaling.minReplicas $v.services.sync.worker.replicas (or $v.keda.enabled $v.services.sync.worker.autoscaling.enabled) }}
    grace: {{ $v.services.sync.worker.terminationGracePeriodSeconds }}
    autoscaled: {{ or $v.keda.enabled $v.services.sync.worker.autoscaling.enabled }}
{{- end }}
{{- end }}
{{- end -}}

{{/* The Prometheus `job` of the sync's metrics: the ServiceMonitor scrapes each service's
     ClusterIP Service, and the Prometheus operator names the job after the Service —
     `<fullname>-sync` (scheduler and workers alike), or in monolith mode `<fullname>-identity`,
     the one Service scraped. */}}
{{- define "mailroom.syncJob" -}}
{{- include "mailroom.serviceName" (dict "root" . "name" (ternary "identity" "sync" .Values.monolith.enabled)) -}}
{{- end -}}

{{/* A PromQL matcher for every job of this release's Services (the five and the console). */}}
{{- define "mailroom.jobsMatcher" -}}
{{- $names := list -}}
{{- range $name := list "identity" "access" "mailboxes" "invitations" "sync" "web" -}}
{{- $names = append $names (include "mailroom.serviceName" (dict "root" $ "name" $name)) -}}
{{- end -}}
{{- printf "job=~%q" (join "|" $names) -}}
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
{{- printf "%s://%s:%v" (include "mailroom.grpcScheme" .root) (include "mailroom.serviceName" .) (index .root.Values.services .name).grpcPort -}}
{{- end -}}

{{/* A service's ClusterIP Service name: `<fullname>-<service>`, within Kubernetes' 63. */}}
{{- define "mailroom.serviceName" -}}
{{- printf "%s-%s" (include "mailroom.fullname" .root) .name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* A service's address for the other services: the headless Service, whose DNS answer lists
     every ready pod, so each caller balances across them. */}}
{{- define "mailroom.peerEndpoint" -}}
{{- printf "%s://%s:%v" (include "mailroom.grpcScheme" .root) (include "mailroom.peersName" .) (index .root.Values.services .name).grpcPort -}}
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

{{/*
A pod's extensible parts, resolved once for every workload (the services, the sync's roles, the
monolith, the console, the migration Job): `.comp` is the component's values (services.<svc>,
services.sync.scheduler|worker, monolith, web, migrations), `.component` its
app.kubernetes.io/component label. The global lists (extraEnv, envFrom, extraVolumes,
extraVolumeMounts) come first, then the component's (the console: its own only); podAnnotations/podLabels merge, the
component's keys winning; resources, nodeSelector, tolerations, affinity, priorityClassName and
topologySpreadConstraints are the component's when set, else the global ones. A spread
constraint without a labelSelector selects the component's own pods. As YAML for fromYaml.
*/}}
{{- define "mailroom.pod" -}}
{{- $v := .root.Values -}}
{{- $c := .comp | default dict -}}
{{- $spread := list -}}
{{- range (($c.topologySpreadConstraints | default $v.topologySpreadConstraints) | default list) -}}
{{- $one := deepCopy . -}}
{{- if not (hasKey $one "labelSelector") -}}
{{- $_ := set $one "labelSelector" (dict "matchLabels" (dict "app.kubernetes.io/instance" $.root.Release.Name "app.kubernetes.io/component" $.component)) -}}
{{- end -}}
{{- $spread = append $spread $one -}}
{{- end -}}
annotations: {{ toJson (omit (mergeOverwrite (dict) ($v.podAnnotations | default dict) ($c.podAnnotations | default dict)) "checksum/secret") }}
{{- /* The chart's own labels (the Services, budgets and policies select on them) are not
       overridable: app.kubernetes.io/*, helm.sh/chart, mailroom.io/*. */}}
{{- $labels := dict -}}
{{- range $key, $value := (mergeOverwrite (dict) ($v.podLabels | default dict) ($c.podLabels | default dict)) -}}
{{- if not (or (hasPrefix "app.kubernetes.io/" $key) (hasPrefix "mailroom.io/" $key) (eq $key "helm.sh/chart")) -}}
{{- $_ := set $labels $key $value -}}
{{- end -}}
{{- end }}
labels: {{ toJson $labels }}
{{- /* The global lists (which may carry credentials) reach the services and the Job, not the
       console (`.ownListsOnly`): it takes only web.extraEnv/envFrom/extraVolumes/extraVolumeMounts. */}}
{{- $g := ternary (dict) $v (.ownListsOnly | default false) }}
env: {{ toJson (concat ($g.extraEnv | default list) ($c.extraEnv | default list)) }}
envFrom: {{ toJson (concat ($g.envFrom | default list) ($c.envFrom | default list)) }}
volumes: {{ toJson (concat ($g.extraVolumes | default list) ($c.extraVolumes | default list)) }}
volumeMounts: {{ toJson (concat ($g.extraVolumeMounts | default list) ($c.extraVolumeMounts | default list)) }}
resources: {{ toJson (($c.resources | default $v.resources) | default dict) }}
nodeSelector: {{ toJson (($c.nodeSelector | default $v.nodeSelector) | default dict) }}
tolerations: {{ toJson (($c.tolerations | default $v.tolerations) | default list) }}
affinity: {{ toJson (($c.affinity | default $v.affinity) | default dict) }}
priorityClassName: {{ ($c.priorityClassName | default $v.priorityClassName) | default "" | quote }}
topologySpreadConstraints: {{ toJson $spread }}
{{- end -}}

{{/* The pod spec's scheduling fields from a resolved "mailroom.pod" (`.pod`), at the pod spec's
     indentation (nindent 6 in a Deployment/Job template). */}}
{{- define "mailroom.podScheduling" -}}
{{- with .root.Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.priorityClassName }}
priorityClassName: {{ . | quote }}
{{- end }}
{{- with .pod.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.affinity }}
affinity:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .pod.topologySpreadConstraints }}
topologySpreadConstraints:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{/* The Secret a TLS dependency's files come from (`.name`: postgres, redis, kafka, grpc,
     otlp); empty when TLS is off for it or trusts the system's roots (no Secret named). For
     gRPC with cert-manager and no secretName: the Certificate's, "<fullname>-grpc-tls". */}}
{{- define "mailroom.tlsSecret" -}}
{{- $t := index .root.Values.tls .name -}}
{{- if $t.enabled -}}
{{- if $t.secretName -}}
{{- $t.secretName -}}
{{- else if and (eq .name "grpc") $t.certManager.enabled -}}
{{- printf "%s-grpc-tls" (include "mailroom.fullname" .root) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Which TLS Secrets a kind of pod mounts: the services all five; the console Redis, gRPC (as
     a client) and OTLP; the migration Job PostgreSQL only; the helm test gRPC. */}}
{{- define "mailroom.tlsUses" -}}
{{- if eq . "service" -}}[postgres, redis, kafka, grpc, otlp]
{{- else if eq . "web" -}}[redis, grpc, otlp]
{{- else if eq . "migrate" -}}[postgres]
{{- else -}}[grpc]
{{- end -}}
{{- end -}}

{{/* The client-only certificate the gRPC callers that serve nothing (the console, helm test)
     present with tls.grpc.clientAuth: tls.grpc.clientSecretName, else the one the chart's
     cert-manager Certificate "<fullname>-grpc-client" issues ("<fullname>-grpc-client-tls");
     empty without clientAuth or when neither is there. */}}
{{- define "mailroom.grpcClientSecret" -}}
{{- $g := .Values.tls.grpc -}}
{{- if and $g.enabled $g.clientAuth -}}
{{- if $g.clientSecretName -}}
{{- $g.clientSecretName -}}
{{- else if and $g.certManager.enabled (not $g.secretName) -}}
{{- printf "%s-grpc-client-tls" (include "mailroom.fullname" .) -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{/* Volumes and mounts (`.for`: service|web|migrate|test) for the TLS Secrets, read-only
     (mode 0440, the pods' fsGroup reads them) at /etc/mailroom/tls/<name>/. The gRPC callers
     that serve nothing (web, test) get only ca.crt of the services' Secret, never its key, and
     with clientAuth their own client certificate at /etc/mailroom/tls/grpc-client/. As JSON
     lists. */}}
{{- define "mailroom.tlsVolumes" -}}
{{- $out := list -}}
{{- $caller := has .for (list "web" "test") -}}
{{- range $name := (include "mailroom.tlsUses" .for | fromYamlArray) -}}
{{- with include "mailroom.tlsSecret" (dict "root" $.root "name" $name) -}}
{{- $secret := dict "secretName" . "defaultMode" 288 -}}
{{- if and $caller (eq $name "grpc") -}}
{{- $_ := set $secret "items" (list (dict "key" "ca.crt" "path" "ca.crt")) -}}
{{- end -}}
{{- $out = append $out (dict "name" (printf "tls-%s" $name) "secret" $secret) -}}
{{- end -}}
{{- end -}}
{{- if $caller -}}
{{- with include "mailroom.grpcClientSecret" .root -}}
{{- $out = append $out (dict "name" "tls-grpc-client" "secret" (dict "secretName" . "defaultMode" 288 "items" (list (dict "key" "tls.crt" "path" "tls.crt") (dict "key" "tls.key" "path" "tls.key")))) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}
{{- define "mailroom.tlsMounts" -}}
{{- $out := list -}}
{{- range $name := (include "mailroom.tlsUses" .for | fromYamlArray) -}}
{{- if include "mailroom.tlsSecret" (dict "root" $.root "name" $name) -}}
{{- $out = append $out (dict "name" (printf "tls-%s" $name) "mountPath" (printf "/etc/mailroom/tls/%s" $name) "readOnly" true) -}}
{{- end -}}
{{- end -}}
{{- if and (has .for (list "web" "test")) (include "mailroom.grpcClientSecret" .root) -}}
{{- $out = append $out (dict "name" "tls-grpc-client" "mountPath" "/etc/mailroom/tls/grpc-client" "readOnly" true) -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* The environment that points the process at the mounted TLS files (names of the issue-25
     contract), and Kafka's security and librdkafka properties (config.kafka). */}}
{{- define "mailroom.tlsEnv" -}}
{{- $root := .root -}}
{{- $tls := $root.Values.tls -}}
{{- $uses := include "mailroom.tlsUses" .for | fromYamlArray -}}
{{- $dir := "/etc/mailroom/tls" -}}
{{- if and (has "postgres" $uses) $tls.postgres.enabled }}
- { name: MAILROOM_DATABASE_TLS__MODE, value: {{ $tls.postgres.mode | quote }} }
{{- if include "mailroom.tlsSecret" (dict "root" $root "name" "postgres") }}
{{- if ne $tls.postgres.mode "verify-full" }}
{{- fail "tls.postgres.mode must be verify-full when tls.postgres.secretName gives a CA: with `require` the CA would check nothing (Mailroom refuses that pairing at start)" }}
{{- end }}
- { name: MAILROOM_DATABASE_TLS__CA_FILE, value: "{{ $dir }}/postgres/ca.crt" }
{{- if $tls.postgres.clientCert }}
- { name: MAILROOM_DATABASE_TLS__CERT_FILE, value: "{{ $dir }}/postgres/tls.crt" }
- { name: MAILROOM_DATABASE_TLS__KEY_FILE, value: "{{ $dir }}/postgres/tls.key" }
{{- end }}
{{- end }}
{{- end }}
{{- if and (has "redis" $uses) $tls.redis.enabled (include "mailroom.tlsSecret" (dict "root" $root "name" "redis")) }}
- { name: MAILROOM_REDIS_TLS__CA_FILE, value: "{{ $dir }}/redis/ca.crt" }
{{- if $tls.redis.clientCert }}
- { name: MAILROOM_REDIS_TLS__CERT_FILE, value: "{{ $dir }}/redis/tls.crt" }
- { name: MAILROOM_REDIS_TLS__KEY_FILE, value: "{{ $dir }}/redis/tls.key" }
{{- end }}
{{- end }}
{{- if has "kafka" $uses }}
{{- $kafka := $root.Values.config.kafka | default dict }}
{{- $props := $kafka.properties | default dict }}
{{- $sasl := $kafka.sasl | default dict }}
{{- $given := list }}
{{- range $key, $_ := $props }}{{ $given = append $given (lower $key) }}{{ end }}
{{- $derived := dict }}
{{- if or $tls.kafka.enabled $sasl.mechanism }}
{{- $protocol := ternary "SSL" "PLAINTEXT" $tls.kafka.enabled }}
{{- if $sasl.mechanism }}{{ $protocol = printf "SASL_%s" $protocol }}{{ end }}
{{- $_ := set $derived "security.protocol" $protocol }}
{{- end }}
{{- if and $tls.kafka.enabled (include "mailroom.tlsSecret" (dict "root" $root "name" "kafka")) }}
{{- $_ := set $derived "ssl.ca.location" (printf "%s/kafka/ca.crt" $dir) }}
{{- if $tls.kafka.clientCert }}
{{- $_ := set $derived "ssl.certificate.location" (printf "%s/kafka/tls.crt" $dir) }}
{{- $_ := set $derived "ssl.key.location" (printf "%s/kafka/tls.key" $dir) }}
{{- end }}
{{- end }}
{{- with $sasl.mechanism }}{{ $_ := set $derived "sasl.mechanism" . }}{{ end }}
{{- with $sasl.username }}{{ $_ := set $derived "sasl.username" . }}{{ end }}
{{- range $key, $value := $derived }}
{{- if not (has $key $given) }}
- { name: MAILROOM_KAFKA_PROPERTY_{{ $key | upper | replace "." "_" }}, value: {{ $value | quote }} }
{{- end }}
{{- end }}
{{- range $key, $value := $props }}
- name: MAILROOM_KAFKA_PROPERTY_{{ $key | upper | replace "." "_" }}
  value: {{ if kindIs "float64" $value }}{{ $value | int64 | toString | quote }}{{ else }}{{ $value | toString | quote }}{{ end }}
{{- end }}
{{- if has $sasl.mechanism (list "PLAIN" "SCRAM-SHA-256" "SCRAM-SHA-512") }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" "MAILROOM_KAFKA_PROPERTY_SASL_PASSWORD" "key" "MAILROOM_KAFKA_PROPERTY_SASL_PASSWORD") | nindent 0 }}
{{- end }}
{{- /* OAUTHBEARER's client secret: from the Secret, like the SASL password (never a property). */}}
{{- if or $root.Values.secrets.kafkaOauthClientSecret (and $root.Values.secrets.existingSecret (eq $sasl.mechanism "OAUTHBEARER")) }}
{{- include "mailroom.secretEnv" (dict "root" $root "env" "MAILROOM_KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET" "key" "MAILROOM_KAFKA_PROPERTY_SASL_OAUTHBEARER_CLIENT_SECRET" "optional" (not $root.Values.secrets.kafkaOauthClientSecret)) | nindent 0 }}
{{- end }}
{{- end }}
{{- if and (has "grpc" $uses) $tls.grpc.enabled }}
{{- /* Servers: their identity (also the client certificate they present to peers) and the
       CA peers chain to; callers only (the console, helm test): the CA, and with clientAuth
       their own client-only certificate (mailroom.grpcClientSecret), never the servers' key. */}}
- { name: MAILROOM_GRPC_TLS__CA_FILE, value: "{{ $dir }}/grpc/ca.crt" }
{{- if eq .for "service" }}
- { name: MAILROOM_GRPC_TLS__CERT_FILE, value: "{{ $dir }}/grpc/tls.crt" }
- { name: MAILROOM_GRPC_TLS__KEY_FILE, value: "{{ $dir }}/grpc/tls.key" }
{{- else if include "mailroom.grpcClientSecret" $root }}
- { name: MAILROOM_GRPC_TLS__CERT_FILE, value: "{{ $dir }}/grpc-client/tls.crt" }
- { name: MAILROOM_GRPC_TLS__KEY_FILE, value: "{{ $dir }}/grpc-client/tls.key" }
{{- end }}
{{- if and (eq .for "service") $tls.grpc.clientAuth }}
- { name: MAILROOM_GRPC_TLS__CLIENT_AUTH, value: "true" }
{{- end }}
{{- end }}
{{- if and (has "otlp" $uses) $tls.otlp.enabled $root.Values.config.otlpEndpoint (include "mailroom.tlsSecret" (dict "root" $root "name" "otlp")) }}
- { name: OTEL_EXPORTER_OTLP_CERTIFICATE, value: "{{ $dir }}/otlp/ca.crt" }
{{- if $tls.otlp.clientCert }}
- { name: OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, value: "{{ $dir }}/otlp/tls.crt" }
- { name: OTEL_EXPORTER_OTLP_CLIENT_KEY, value: "{{ $dir }}/otlp/tls.key" }
{{- end }}
{{- end }}
{{- end -}}

{{/* The scheme peers are called with: https once gRPC TLS is on. */}}
{{- define "mailroom.grpcScheme" -}}
{{- ternary "https" "http" (.Values.tls.grpc.enabled | default false) -}}
{{- end -}}

{{/* The ports in a URL or a comma-separated host:port list (`.url`), `.default` for a host
     without one. As a JSON list of integers. */}}
{{- define "mailroom.urlPorts" -}}
{{- $out := list -}}
{{- $rest := regexReplaceAll "^[A-Za-z][A-Za-z0-9+.-]*://" (.url | default "") "" -}}
{{- $rest = regexReplaceAll "^[^/?#]*@" $rest "" -}}
{{- $hosts := regexReplaceAll "[/?#].*$" $rest "" -}}
{{- range $host := splitList "," $hosts -}}
{{- $host = trim $host -}}
{{- if $host -}}
{{- $port := regexFind ":[0-9]+$" $host | trimPrefix ":" -}}
{{- $out = append $out (int ($port | default $.default)) -}}
{{- end -}}
{{- end -}}
{{- toJson $out -}}
{{- end -}}

{{/* Egress ports the dependencies need (`.deps`: postgres, redis, kafka), from what the
     configuration says where known plus networkPolicy's lists. A JSON list. */}}
{{- define "mailroom.dependencyPorts" -}}
{{- $v := .root.Values -}}
{{- $np := $v.networkPolicy -}}
{{- $deps := $np.dependencies | default dict -}}
{{- $out := list -}}
{{- if has "postgres" .deps -}}
{{- $out = concat $out ($deps.postgresPorts | default list) -}}
{{- if and (not $v.secrets.existingSecret) $v.secrets.databaseUrl -}}
{{- $out = concat $out (include "mailroom.urlPorts" (dict "url" $v.secrets.databaseUrl "default" 5432) | fromJsonArray) -}}
{{- end -}}
{{- if and (not $v.secrets.existingSecret) $v.secrets.migrateDatabaseUrl -}}
{{- $out = concat $out (include "mailroom.urlPorts" (dict "url" $v.secrets.migrateDatabaseUrl "default" 5432) | fromJsonArray) -}}
{{- end -}}
{{- end -}}
{{- if has "redis" .deps -}}
{{- $out = concat $out ($np.redisPorts | default list) -}}
{{- if and (not $v.secrets.existingSecret) $v.secrets.redisUrl -}}
{{- $out = concat $out (include "mailroom.urlPorts" (dict "url" $v.secrets.redisUrl "default" 6379) | fromJsonArray) -}}
{{- end -}}
{{- end -}}
{{- if has "kafka" .deps -}}
{{- $out = concat $out ($deps.kafkaPorts | default list) -}}
{{- $out = concat $out (include "mailroom.urlPorts" (dict "url" $v.config.kafkaBrokers "default" 9092) | fromJsonArray) -}}
{{- end -}}
{{- if has "extra" .deps -}}
{{- $out = concat $out ($deps.ports | default list) -}}
{{- end -}}
{{- $ints := list -}}
{{- range $out }}{{ $ints = append $ints (int .) }}{{ end -}}
{{- toJson (uniq $ints) -}}
{{- end -}}

{{/* A NetworkPolicy `ports` list from a JSON list of integers (`.ports`), at its indentation. */}}
{{- define "mailroom.policyPorts" -}}
{{- range (.ports | fromJsonArray) }}
- { port: {{ . }}, protocol: TCP }
{{- end }}
{{- end -}}

{{/* The mail servers' ports from config.mailServers.allowedPorts ("25,465,587,2525,143,993",
     ranges "a-b") plus networkPolicy.imapPorts, as NetworkPolicy ports (a range as endPort). */}}
{{- define "mailroom.mailServerPorts" -}}
{{- $v := .Values -}}
{{- $seen := list -}}
{{- range $part := splitList "," ($v.config.mailServers.allowedPorts | default "25,465,587,2525,143,993") }}
{{- $part = trim $part }}
{{- if $part }}
{{- $range := splitList "-" $part }}
{{- $first := trim (index $range 0) }}
{{- if not (has $part $seen) }}
{{- $seen = append $seen $part }}
{{- if gt (len $range) 1 }}
- { port: {{ $first }}, endPort: {{ trim (index $range 1) }}, protocol: TCP }
{{- else }}
- { port: {{ $first }}, protocol: TCP }
{{- end }}
{{- end }}
{{- end }}
{{- end }}
{{- range ($v.networkPolicy.imapPorts | default list) }}
{{- if not (has (toString .) $seen) }}
{{- $seen = append $seen (toString .) }}
- { port: {{ . }}, protocol: TCP }
{{- end }}
{{- end }}
{{- end -}}

{{/* The OTLP collector's port (from config.otlpEndpoint: its port, else 443 for https and
     4317 otherwise) plus networkPolicy.otlpPorts. A JSON list. */}}
{{- define "mailroom.otlpPorts" -}}
{{- $endpoint := .Values.config.otlpEndpoint | default "" -}}
{{- $default := ternary 443 4317 (hasPrefix "https://" $endpoint) -}}
{{- $out := concat (include "mailroom.urlPorts" (dict "url" $endpoint "default" $default) | fromJsonArray) (.Values.networkPolicy.otlpPorts | default list) -}}
{{- $ints := list -}}
{{- range $out }}{{ $ints = append $ints (int .) }}{{ end -}}
{{- toJson (uniq $ints) -}}
{{- end -}}

{{/* A PodDisruptionBudget (`.name`, `.component`, `.replicas`: the fewest pods the component
     runs). maxUnavailable (default 1) unless minAvailable is set; a minAvailable that would
     leave no pod to evict (a number at least the replicas, or any percentage with one replica)
     falls back to maxUnavailable 1, so a PDB never blocks a node drain. */}}
{{- define "mailroom.pdb" -}}
{{- $p := .root.Values.podDisruptionBudget -}}
{{- $min := $p.minAvailable | default "" | toString -}}
{{- $blocks := false -}}
{{- if $min -}}
{{- if hasSuffix "%" $min -}}
{{- $blocks = or (le (int .replicas) 1) (eq $min "100%") -}}
{{- else -}}
{{- $blocks = ge (int $min) (int .replicas) -}}
{{- end -}}
{{- end }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ .name }}
  labels:
    {{- include "mailroom.labels" .root | nindent 4 }}
    app.kubernetes.io/component: {{ .component }}
spec:
  {{- if and $min (not $blocks) }}
  minAvailable: {{ if hasSuffix "%" $min }}{{ $min | quote }}{{ else }}{{ int $min }}{{ end }}
  {{- else }}
  maxUnavailable: {{ $p.maxUnavailable | default 1 }}
  {{- end }}
  selector:
    matchLabels:
      app.kubernetes.io/instance: {{ .root.Release.Name }}
      app.kubernetes.io/component: {{ .component }}
{{- end -}}
