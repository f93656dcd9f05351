{{/* The release's resource names and labels. */}}
{{- define "herald.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "herald.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "herald.labels" -}}
{{ include "herald.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The flag name of a setting as its environment twin: redis-prefix -> HERALD_REDIS_PREFIX. */}}
{{- define "herald.env" -}}
{{- printf "HERALD_%s" (. | replace "-" "_" | upper) -}}
{{- end -}}

{{/* The grace period: given, or preStop + drain timeout + 5s; refused when it cannot hold the drain. */}}
{{- define "herald.grace" -}}
{{- $need := add .Values.drain.preStopSeconds .Values.drain.timeoutSeconds -}}
{{- $grace := .Values.terminationGracePeriodSeconds | default (add $need 5) | int -}}
{{- if le $grace (int $need) -}}
{{- fail (printf "terminationGracePeriodSeconds (%d) must exceed drain.preStopSeconds + drain.timeoutSeconds (%d): the kubelet would kill replicas mid-drain" $grace (int $need)) -}}
{{- end -}}
{{- $grace -}}
{{- end -}}

{{/* Memory request in MiB from the streams a replica may hold. */}}
{{- define "herald.memoryRequestMiB" -}}
{{- $s := .Values.sizing -}}
{{- if le (int $s.maxConnections) 0 -}}
{{- fail "sizing.maxConnections must be positive to size memory (or set resources by hand)" -}}
{{- end -}}
{{- add (div (mul (int64 $s.maxConnections) (int64 $s.bytesPerConnection)) 1048576) $s.baseMemoryMiB -}}
{{- end -}}

{{/* Whether the chart creates the auth Secret, and which keys it holds. */}}
{{- define "herald.authSecretName" -}}
{{- .Values.auth.existingSecret | default (printf "%s-auth" (include "herald.fullname" .)) -}}
{{- end -}}
{{- define "herald.redisSecretName" -}}
{{- .Values.redis.existingSecret | default (printf "%s-redis" (include "herald.fullname" .)) -}}
{{- end -}}
