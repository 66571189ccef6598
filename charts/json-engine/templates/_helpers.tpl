{{/* Chart name, truncated to the 63 characters of a DNS label. */}}
{{- define "json-engine.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Fully qualified app name. */}}
{{- define "json-engine.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "json-engine.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "json-engine.labels" -}}
helm.sh/chart: {{ include "json-engine.chart" . }}
{{ include "json-engine.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: worker
{{- end }}

{{- define "json-engine.selectorLabels" -}}
app.kubernetes.io/name: {{ include "json-engine.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "json-engine.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "json-engine.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "json-engine.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{- define "json-engine.claimName" -}}
{{- .Values.persistence.existingClaim | default (printf "%s-output" (include "json-engine.fullname" .)) }}
{{- end }}

{{/* s3://bucket/prefix of the output in S3 mode. */}}
{{- define "json-engine.s3Url" -}}
{{- if .Values.s3.prefix }}
{{- printf "s3://%s/%s" .Values.s3.bucket .Values.s3.prefix }}
{{- else }}
{{- printf "s3://%s" .Values.s3.bucket }}
{{- end }}
{{- end }}

{{/* Path of the config file inside the container. */}}
{{- define "json-engine.configPath" -}}
/etc/json-engine/config.yaml
{{- end }}

{{/* Partitions per topic: the upper bound of useful workers. */}}
{{- define "json-engine.partitions" -}}
{{- $kafka := .Values.config.kafka | default dict }}
{{- int (default 6 $kafka.partitions) }}
{{- end }}

{{/* The consumer group of the executions topic: <topic_prefix>worker.engine-execution. */}}
{{- define "json-engine.consumerGroup" -}}
{{- $kafka := .Values.config.kafka | default dict }}
{{- $prefix := hasKey $kafka "topic_prefix" | ternary $kafka.topic_prefix "json-engine." }}
{{- printf "%sworker.engine-execution" $prefix }}
{{- end }}

{{/* The fewest workers that run: replicaCount, or autoscaling.minReplicas under KEDA. */}}
{{- define "json-engine.minReplicas" -}}
{{- if .Values.autoscaling.enabled }}
{{- int .Values.autoscaling.minReplicas }}
{{- else }}
{{- int .Values.replicaCount }}
{{- end }}
{{- end }}

{{/* KEDA's maximum, capped at the partition count. */}}
{{- define "json-engine.maxReplicas" -}}
{{- min (int .Values.autoscaling.maxReplicas) (int (include "json-engine.partitions" .)) }}
{{- end }}

{{/*
The worker's configuration file. Values under `config` pass through as they are; the chart
owns output.base_path, metrics.port and (when given as a value) kafka.bootstrap_servers,
so that the mounts, probes and Service agree with what the worker does.
*/}}
{{- define "json-engine.config" -}}
{{- $cfg := deepCopy (.Values.config | default dict) }}
{{- $output := dict "base_path" .Values.persistence.mountPath }}
{{- if .Values.s3.enabled }}
{{- $s3 := dict "addressing_style" .Values.s3.addressingStyle "spool_dir" .Values.s3.spool.mountPath }}
{{- with .Values.s3.endpoint }}{{ $_ := set $s3 "endpoint_url" . }}{{ end }}
{{- with .Values.s3.region }}{{ $_ := set $s3 "region" . }}{{ end }}
{{- $output = dict "base_path" (include "json-engine.s3Url" .) "s3" $s3 }}
{{- end }}
{{- $owned := dict "output" $output "metrics" (dict "port" (int .Values.metrics.port)) }}
{{- if and .Values.kafka.bootstrapServers (not .Values.kafka.existingSecret) }}
{{- $_ := set $owned "kafka" (dict "bootstrap_servers" .Values.kafka.bootstrapServers) }}
{{- end }}
{{- $cfg = mergeOverwrite $cfg $owned }}
{{- toYaml (dict "json_engine" $cfg) }}
{{- end }}

{{/* The longest auto_flush_seconds of any channel (the worker's default is 1 second). */}}
{{- define "json-engine.maxFlushSeconds" -}}
{{- $max := 1.0 }}
{{- range $name, $channel := (.Values.config.channels | default dict) }}
{{- if and (kindIs "map" $channel) (hasKey $channel "auto_flush_seconds") }}
{{- $max = maxf $max (float64 $channel.auto_flush_seconds) }}
{{- end }}
{{- end }}
{{- $max }}
{{- end }}

{{/* Environment shared by the worker and the topic-creating init container. */}}
{{- define "json-engine.env" -}}
- name: JSON_ENGINE_CONFIG
  value: {{ include "json-engine.configPath" . }}
{{- if .Values.kafka.existingSecret }}
- name: KAFKA_BOOTSTRAP_SERVERS
  valueFrom:
    secretKeyRef:
      name: {{ .Values.kafka.existingSecret }}
      key: {{ .Values.kafka.existingSecretKey }}
{{- end }}
{{- with .Values.kafka.securityProtocol }}
- name: JSON_ENGINE__KAFKA__SECURITY_PROTOCOL
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kafka.sasl.mechanism }}
- name: JSON_ENGINE__KAFKA__SASL_MECHANISM
  value: {{ . | quote }}
{{- end }}
{{- with .Values.kafka.sasl.existingSecret }}
- name: JSON_ENGINE__KAFKA__SASL_USERNAME
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.kafka.sasl.usernameKey }}
- name: JSON_ENGINE__KAFKA__SASL_PASSWORD
  valueFrom:
    secretKeyRef:
      name: {{ . }}
      key: {{ $.Values.kafka.sasl.passwordKey }}
{{- end }}
{{- if .Values.kafka.tls.existingSecret }}
{{- with .Values.kafka.tls.caKey }}
- name: JSON_ENGINE__KAFKA__SSL_CA_LOCATION
  value: /etc/json-engine/tls/{{ . }}
{{- end }}
{{- with .Values.kafka.tls.certKey }}
- name: JSON_ENGINE__KAFKA__SSL_CERTIFICATE_LOCATION
  value: /etc/json-engine/tls/{{ . }}
{{- end }}
{{- with .Values.kafka.tls.keyKey }}
- name: JSON_ENGINE__KAFKA__SSL_KEY_LOCATION
  value: /etc/json-engine/tls/{{ . }}
{{- end }}
{{- end }}
{{- if and .Values.s3.enabled .Values.s3.existingSecret }}
- name: AWS_ACCESS_KEY_ID
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.accessKeyIdKey }}
- name: AWS_SECRET_ACCESS_KEY
  valueFrom:
    secretKeyRef:
      name: {{ .Values.s3.existingSecret }}
      key: {{ .Values.s3.secretAccessKeyKey }}
{{- end }}
{{- with .Values.extraEnv }}
{{ toYaml . }}
{{- end }}
{{- end }}

{{/* Mounts shared by the worker and the init container. */}}
{{- define "json-engine.volumeMounts" -}}
- name: config
  mountPath: /etc/json-engine/config.yaml
  subPath: config.yaml
  readOnly: true
{{- if .Values.s3.enabled }}
- name: spool
  mountPath: {{ .Values.s3.spool.mountPath }}
{{- else }}
- name: output
  mountPath: {{ .Values.persistence.mountPath }}
{{- end }}
- name: tmp
  mountPath: /tmp
{{- if .Values.kafka.tls.existingSecret }}
- name: kafka-tls
  mountPath: /etc/json-engine/tls
  readOnly: true
{{- end }}
{{- with .Values.extraVolumeMounts }}
{{ toYaml . }}
{{- end }}
{{- end }}
