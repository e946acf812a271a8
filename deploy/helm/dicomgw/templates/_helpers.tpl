{{/* The chart name, for labels. */}}
{{- define "dicomgw.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The full name of the release's objects (at most 52 characters: the
StatefulSet's pods add a suffix and controller-revision-hash must fit 63). */}}
{{- define "dicomgw.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 52 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 52 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "dicomgw.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "dicomgw.selectorLabels" -}}
app.kubernetes.io/name: {{ include "dicomgw.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "dicomgw.labels" -}}
helm.sh/chart: {{ include "dicomgw.chart" . }}
{{ include "dicomgw.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: dicomgw
{{- end }}

{{- define "dicomgw.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "dicomgw.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Secret with the STOW-RS credentials (made by the chart or not). */}}
{{- define "dicomgw.stowSecretName" -}}
{{- default (printf "%s-stow" (include "dicomgw.fullname" .)) .Values.stow.auth.existingSecret }}
{{- end }}

{{/* The Secret with the DICOM TLS certificate and key. */}}
{{- define "dicomgw.tlsSecretName" -}}
{{- default (printf "%s-tls" (include "dicomgw.fullname" .)) .Values.tls.existingSecret }}
{{- end }}

{{/* Whether the chart makes the STOW-RS credentials Secret. */}}
{{- define "dicomgw.createStowSecret" -}}
{{- if and (ne .Values.stow.auth.type "none") (not .Values.stow.auth.existingSecret) }}true{{ end }}
{{- end }}

{{/* Whether the chart makes the TLS Secret. */}}
{{- define "dicomgw.createTLSSecret" -}}
{{- if and .Values.tls.enabled (not .Values.tls.existingSecret) }}true{{ end }}
{{- end }}

{{/* Where secrets are mounted in the container. */}}
{{- define "dicomgw.secretsDir" -}}/var/run/secrets/dicomgw{{- end }}

{{/* terminationGracePeriodSeconds: longer than the preStop wait plus the
drain (--shutdown-timeout), so the drain completes before SIGKILL. */}}
{{- define "dicomgw.terminationGracePeriodSeconds" -}}
{{- $drain := add (int .Values.preStopSleepSeconds) (int .Values.gateway.shutdownTimeoutSeconds) }}
{{- if .Values.terminationGracePeriodSeconds }}
{{- if le (int .Values.terminationGracePeriodSeconds) (int $drain) }}
{{- fail (printf "terminationGracePeriodSeconds (%v) must be longer than preStopSleepSeconds + gateway.shutdownTimeoutSeconds (%v)" .Values.terminationGracePeriodSeconds $drain) }}
{{- end }}
{{- int .Values.terminationGracePeriodSeconds }}
{{- else }}
{{- add $drain 15 }}
{{- end }}
{{- end }}

{{/* The container's mounts besides the spool: the flags file and the
Secrets it names. Shared by the StatefulSet and the drain pods. */}}
{{- define "dicomgw.volumeMounts" -}}
{{- $secrets := include "dicomgw.secretsDir" . -}}
- name: config
  mountPath: /etc/dicomgw
  readOnly: true
{{- if .Values.tls.enabled }}
- name: tls
  mountPath: {{ $secrets }}/tls
  readOnly: true
{{- if .Values.tls.clientCA.enabled }}
- name: tls-client-ca
  mountPath: {{ $secrets }}/tls-client-ca
  readOnly: true
{{- end }}
{{- end }}
{{- if ne .Values.stow.auth.type "none" }}
- name: stow
  mountPath: {{ $secrets }}/stow
  readOnly: true
{{- end }}
{{- if .Values.stow.caSecret }}
- name: stow-ca
  mountPath: {{ $secrets }}/stow-ca
  readOnly: true
{{- end }}
{{- if .Values.stow.clientCertSecret }}
- name: stow-client
  mountPath: {{ $secrets }}/stow-client
  readOnly: true
{{- end }}
{{- if .Values.userIdentity.usersSecret }}
- name: users
  mountPath: {{ $secrets }}/users
  readOnly: true
{{- end }}
{{- range $i, $d := .Values.gateway.destinations }}
{{- if $d.secret }}
- name: destination-{{ $i }}
  mountPath: {{ $secrets }}/destinations/{{ $d.name }}
  readOnly: true
{{- end }}
{{- end }}
{{- range $i, $r := .Values.gateway.remoteAEs }}
{{- if $r.secret }}
- name: remote-ae-{{ $i }}
  mountPath: {{ $secrets }}/remote-ae/{{ $i }}
  readOnly: true
{{- end }}
{{- end }}
{{- if .Values.userIdentity.jwt.jwksSecret }}
- name: jwks
  mountPath: {{ $secrets }}/jwks
  readOnly: true
{{- end }}
{{- if .Values.console.enabled }}
- name: console-users
  mountPath: {{ $secrets }}/console-users
  readOnly: true
{{- if .Values.console.tlsSecret }}
- name: console-tls
  mountPath: {{ $secrets }}/console-tls
  readOnly: true
{{- end }}
{{- end }}
{{- end }}

{{/* The pod's volumes besides the spool. */}}
{{- define "dicomgw.volumes" -}}
- name: config
  configMap:
    name: {{ include "dicomgw.fullname" . }}
{{- if .Values.tls.enabled }}
- name: tls
  secret:
    secretName: {{ include "dicomgw.tlsSecretName" . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- if .Values.tls.clientCA.enabled }}
- name: tls-client-ca
  secret:
    secretName: {{ required "tls.clientCA.existingSecret is required with tls.clientCA.enabled" .Values.tls.clientCA.existingSecret }}
    defaultMode: 0440
    items:
      - key: {{ .Values.tls.clientCA.key }}
        path: {{ .Values.tls.clientCA.key }}
{{- end }}
{{- end }}
{{- if ne .Values.stow.auth.type "none" }}
- name: stow
  secret:
    secretName: {{ include "dicomgw.stowSecretName" . }}
    defaultMode: 0440
{{- end }}
{{- with .Values.stow.caSecret }}
- name: stow-ca
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- with .Values.stow.clientCertSecret }}
- name: stow-client
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- with .Values.userIdentity.usersSecret }}
- name: users
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- range $i, $d := .Values.gateway.destinations }}
{{- with $d.secret }}
- name: destination-{{ $i }}
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- range $i, $r := .Values.gateway.remoteAEs }}
{{- with $r.secret }}
- name: remote-ae-{{ $i }}
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- end }}
{{- with .Values.userIdentity.jwt.jwksSecret }}
- name: jwks
  secret:
    secretName: {{ . }}
    defaultMode: 0440
{{- end }}
{{- if .Values.console.enabled }}
- name: console-users
  secret:
    secretName: {{ required "console.usersSecret is required with console.enabled: the console requires a login (a Secret with \"users\", htpasswd -nbB lines)" .Values.console.usersSecret }}
    defaultMode: 0440
    items:
      - key: users
        path: users
{{- with .Values.console.tlsSecret }}
- name: console-tls
  secret:
    secretName: {{ . }}
    defaultMode: 0440
    items:
      - key: tls.crt
        path: tls.crt
      - key: tls.key
        path: tls.key
{{- end }}
{{- end }}
{{- end }}

{{/* The routing flags: --destination lines (options that name files point
into the destination's mounted Secret), --route, --unrouted,
--ledger-retention. A value with a space cannot be a flags file option. */}}
{{- define "dicomgw.routingFlags" -}}
{{- $secrets := include "dicomgw.secretsDir" . -}}
{{- $names := dict }}
{{- range $i, $d := .Values.gateway.destinations }}
{{- $name := required (printf "gateway.destinations[%d].name is required" $i) $d.name }}
{{- if not (regexMatch "^[a-z0-9][a-z0-9_-]{0,31}$" $name) }}
{{- fail (printf "gateway.destinations[%d].name %q: want 1 to 32 of a-z, 0-9, _ and -, beginning with a letter or digit" $i $name) }}
{{- end }}
{{- if hasKey $names $name }}
{{- fail (printf "gateway.destinations: %q is defined twice" $name) }}
{{- end }}
{{- $_ := set $names $name true }}
{{- $url := toString (required (printf "gateway.destinations[%d].url is required" $i) $d.url) }}
{{- $words := list $url }}
{{- if and $d.secretFiles (not $d.secret) }}
{{- fail (printf "gateway.destinations[%d] (%s): secretFiles needs secret, the Secret that holds them" $i $name) }}
{{- end }}
{{- range $k, $v := $d.secretFiles }}
{{- $words = append $words (printf "%s/destinations/%s/%v" $secrets $name $v) }}
{{- end }}
{{- range $k, $v := $d.options }}
{{- $words = append $words (printf "%v" $v) }}
{{- end }}
{{- range $words }}
{{- if or (eq . "") (regexMatch "\\s" .) }}
{{- fail (printf "gateway.destinations[%d] (%s): %q: a url or option value must be one word (no spaces or line breaks)" $i $name .) }}
{{- end }}
{{- end }}
{{- $line := printf "%s=%s" $name $url }}
{{- range $k, $v := $d.secretFiles }}
{{- $line = printf "%s %s=%s/destinations/%s/%v" $line $k $secrets $name $v }}
{{- end }}
{{- range $k, $v := $d.options }}
{{- $line = printf "%s %s=%v" $line $k $v }}
{{- end }}
{{ printf "--destination=%s" $line }}
{{- end }}
{{- if and .Values.gateway.destinations (not .Values.gateway.stowURL) (not .Values.gateway.routes) (eq (toString .Values.gateway.unrouted) "refuse") }}
{{- fail "gateway.routes: with gateway.destinations and no gateway.stowURL there is no destination \"default\": say where objects go (e.g. '{} -> NAME'), or set gateway.unrouted to a destination" }}
{{- end }}
{{- range .Values.gateway.routes }}
{{- if contains "\n" . }}
{{- fail (printf "gateway.routes: %q contains a line break" .) }}
{{- end }}
{{ printf "--route=%s" . }}
{{- end }}
{{- range .Values.gateway.stamps }}
{{- if contains "\n" . }}
{{- fail (printf "gateway.stamps: %q contains a line break" .) }}
{{- end }}
{{ printf "--stamp=%s" . }}
{{- end }}
{{ printf "--unrouted=%s" (toString .Values.gateway.unrouted) }}
{{ printf "--ledger-retention=%s" (toString .Values.gateway.ledgerRetention) }}
{{- end }}

{{/* "true" when the string given is a positive Go duration (time.ParseDuration:
24h, 1h30m, 1.5h, 300ms), "" otherwise: what dicomgw check-config accepts for
--commitment-timeout and a --remote-ae timeout. */}}
{{- define "dicomgw.positiveDuration" -}}
{{- if and (regexMatch "^([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)(([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))*$" .) (regexMatch "[1-9]" .) -}}
true
{{- end -}}
{{- end }}

{{/* The storage commitment flags: --commitment, --commitment-timeout and a
--remote-ae line per gateway.remoteAEs entry (options that name files point
into its mounted Secret). */}}
{{- define "dicomgw.commitmentFlags" -}}
{{- $secrets := include "dicomgw.secretsDir" . -}}
{{- $mode := toString .Values.gateway.commitment }}
{{- if not (has $mode (list "delivered" "received" "off")) }}
{{- fail (printf "gateway.commitment %q: want delivered, received or off" $mode) }}
{{- end }}
{{ printf "--commitment=%s" $mode }}
{{- $timeout := toString .Values.gateway.commitmentTimeout }}
{{- if not (include "dicomgw.positiveDuration" $timeout) }}
{{- fail (printf "gateway.commitmentTimeout %q: want a positive Go duration such as 24h or 90m" $timeout) }}
{{- end }}
{{ printf "--commitment-timeout=%s" $timeout }}
{{- $seen := dict }}
{{- range $i, $r := .Values.gateway.remoteAEs }}
{{- $ae := toString (required (printf "gateway.remoteAEs[%d].aeTitle is required" $i) $r.aeTitle) }}
{{- if not (regexMatch "^[!-<>-\\[\\]-~]{1,16}$" $ae) }}
{{- fail (printf "gateway.remoteAEs[%d].aeTitle %q: want 1 to 16 printable characters, no spaces, '=' or backslash" $i $ae) }}
{{- end }}
{{- if hasKey $seen $ae }}
{{- fail (printf "gateway.remoteAEs: %q is listed twice" $ae) }}
{{- end }}
{{- $_ := set $seen $ae true }}
{{- $host := toString (required (printf "gateway.remoteAEs[%d] (%s): host is required" $i $ae) $r.host) }}
{{- if or (eq $host "") (regexMatch "[\\s\\[\\]]" $host) }}
{{- fail (printf "gateway.remoteAEs[%d] (%s): host %q: one word, no brackets" $i $ae $host) }}
{{- end }}
{{- $portText := toString (required (printf "gateway.remoteAEs[%d] (%s): port is required" $i $ae) $r.port) }}
{{- $port := int $portText }}
{{- if or (not (regexMatch "^[0-9]{1,5}$" $portText)) (lt $port 1) (gt $port 65535) }}
{{- fail (printf "gateway.remoteAEs[%d] (%s): port %q: want 1 to 65535" $i $ae $portText) }}
{{- end }}
{{- $addr := printf "%s:%d" $host $port }}
{{- if contains ":" $host }}
{{- $addr = printf "[%s]:%d" $host $port }}
{{- end }}
{{- $line := printf "%s=%s" $ae $addr }}
{{- if and (hasKey $r "tls") (not (kindIs "bool" $r.tls)) }}
{{- fail (printf "gateway.remoteAEs[%d] (%s): tls %q: want true or false, unquoted" $i $ae (toString $r.tls)) }}
{{- end }}
{{- if $r.tls }}
{{- $line = printf "%s tls=true" $line }}
{{- end }}
{{- if and $r.secretFiles (not $r.secret) }}
{{- fail (printf "gateway.remoteAEs[%d] (%s): secretFiles needs secret, the Secret that holds them" $i $ae) }}
{{- end }}
{{- if and $r.secretFiles (not $r.tls) }}
{{- fail (printf "gateway.remoteAEs[%d] (%s): secretFiles (ca-file, client-cert, client-key) are for DICOM TLS: set tls: true" $i $ae) }}
{{- end }}
{{- range $k, $v := $r.secretFiles }}
{{- if not (has $k (list "ca-file" "client-cert" "client-key")) }}
{{- fail (printf "gateway.remoteAEs[%d] (%s): secretFiles %q: want ca-file, client-cert or client-key" $i $ae $k) }}
{{- end }}
{{- if regexMatch "\\s" (toString $v) }}
{{- fail (printf "gateway.remoteAEs[%d] (%s): secretFiles %s %q: one word" $i $ae $k $v) }}
{{- end }}
{{- $line = printf "%s %s=%s/remote-ae/%d/%v" $line $k $secrets $i $v }}
{{- end }}
{{- with $r.timeout }}
{{- if not (include "dicomgw.positiveDuration" (toString .)) }}
{{- fail (printf "gateway.remoteAEs[%d] (%s): timeout %q: want a positive Go duration such as 20s" $i $ae (toString .)) }}
{{- end }}
{{- $line = printf "%s timeout=%v" $line . }}
{{- end }}
{{ printf "--remote-ae=%s" $line }}
{{- end }}
{{- end }}

{{/* The console flags, with console.enabled: --console-listen on
console.port, the users file and (with console.tlsSecret) the certificate
from their mounted Secrets, --console-session-timeout. Refused here rather
than in a crash-looping pod: a timeout dicomgw check-config refuses (not a
Go duration, or under 1m) and a port the pod cannot listen on (outside 1 to
65535, or one the gateway already listens on: check-config does not look
for that). */}}
{{- define "dicomgw.consoleFlags" -}}
{{- $secrets := include "dicomgw.secretsDir" . -}}
{{- with .Values.console }}
{{- if .enabled }}
{{- $portText := toString .port }}
{{- $port := int $portText }}
{{- if or (not (regexMatch "^[0-9]{1,5}$" $portText)) (lt $port 1) (gt $port 65535) (has $port (list 11112 2762 9477)) }}
{{- fail (printf "console.port %q: want 1 to 65535, and not 11112, 2762 or 9477 (DICOM, DICOM TLS and metrics listen there)" $portText) }}
{{- end }}
{{- $timeout := toString .sessionTimeout }}
{{- $seconds := 0.0 }}
{{- if include "dicomgw.positiveDuration" $timeout }}
{{- $unit := dict "h" 3600 "m" 60 "s" 1 "ms" 0.001 "us" 0.000001 "µs" 0.000001 "μs" 0.000001 "ns" 0.000000001 }}
{{- range regexFindAll "([0-9]+(\\.[0-9]*)?|\\.[0-9]+)(ns|us|µs|μs|ms|s|m|h)" $timeout -1 }}
{{- $n := regexFind "^[0-9.]+" . }}
{{- $seconds = addf $seconds (mulf (float64 $n) (get $unit (trimPrefix $n .))) }}
{{- end }}
{{- end }}
{{- /* time.ParseDuration overflows past 2^63 ns (about 292 years). */}}
{{- if or (lt $seconds 60.0) (gt $seconds 9.2e9) }}
{{- fail (printf "console.sessionTimeout %q: want a Go duration of at least 1m, e.g. 30m" $timeout) }}
{{- end }}
{{ printf "--console-listen=:%d" $port }}
{{ printf "--console-users-file=%s/console-users/users" $secrets }}
{{- if .tlsSecret }}
{{ printf "--console-tls-cert=%s/console-tls/tls.crt" $secrets }}
{{ printf "--console-tls-key=%s/console-tls/tls.key" $secrets }}
{{- end }}
{{ printf "--console-session-timeout=%s" $timeout }}
{{- range .trustedProxies }}
{{- if not (regexMatch "^[0-9A-Fa-f.:]+(/[0-9]{1,3})?$" (toString .)) }}
{{- fail (printf "console.trustedProxies: %q: want an address or a CIDR" (toString .)) }}
{{- end }}
{{ printf "--console-trusted-proxies=%s" (toString .) }}
{{- end }}
{{- end }}
{{- end }}
{{- end }}
