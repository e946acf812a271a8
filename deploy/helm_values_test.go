package deploy

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

// values is what a case sets, read back as the chart sees it (defaults,
// then the values files, then --set), for the checks to compare against.
type values map[string]any

func (v values) get(keys ...string) any {
	var cur any = map[string]any(v)
	for _, k := range keys {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

func (v values) str(keys ...string) string {
	x := v.get(keys...)
	if x == nil {
		return ""
	}
	return fmt.Sprint(x)
}

func (v values) boolean(keys ...string) bool { b, _ := v.get(keys...).(bool); return b }

func (v values) num(keys ...string) int {
	n, err := strconv.Atoi(v.str(keys...))
	if err != nil {
		return 0
	}
	return n
}

// effectiveValues merges the chart's values.yaml, the case's values files
// and --set (simple key.path=value only) the way helm does for maps.
func effectiveValues(t *testing.T, c chartCase) values {
	t.Helper()
	read := func(p string) map[string]any {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(b, &m); err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		return m
	}
	v := read(filepath.Join(path(chartDir), "values.yaml"))
	for _, f := range c.values {
		if !filepath.IsAbs(f) {
			f = filepath.Join(path(chartDir), f)
		}
		merge(v, read(f))
	}
	for _, s := range c.set {
		k, val, _ := strings.Cut(s, "=")
		keys := strings.Split(k, ".")
		m := v
		for _, key := range keys[:len(keys)-1] {
			next, _ := m[key].(map[string]any)
			if next == nil {
				next = map[string]any{}
				m[key] = next
			}
			m = next
		}
		var x any = val
		switch val {
		case "true":
			x = true
		case "false":
			x = false
		}
		m[keys[len(keys)-1]] = x
	}
	return v
}

func merge(dst, src map[string]any) {
	for k, sv := range src {
		if sm, ok := sv.(map[string]any); ok {
			if dm, ok := dst[k].(map[string]any); ok {
				merge(dm, sm)
				continue
			}
		}
		dst[k] = sv
	}
}

// writeEverythingValues writes a values file that turns on every option
// of the chart, with the TLS certificate in it (the chart makes the
// Secret).
func writeEverythingValues(t *testing.T, secrets string) string {
	t.Helper()
	cert, _ := os.ReadFile(filepath.Join(secrets, "tls", "tls.crt"))
	key, _ := os.ReadFile(filepath.Join(secrets, "tls", "tls.key"))
	v := map[string]any{
		"replicaCount":     3,
		"image":            map[string]any{"repository": "registry.example/dicomgw", "tag": "1.2.3", "pullPolicy": "Always"},
		"imagePullSecrets": []any{map[string]any{"name": "regcred"}},
		"gateway": map[string]any{
			"aeTitles":                []any{"KAAPANA", "DICOMGW"},
			"callingAEs":              []any{"CT1@10.0.0.0/8", "PACS", "MR1@cn=mr1.example"},
			"acceptUnknownSOPClasses": true,
			"stowURL":                 "https://pacs.example/dicom-web",
			"maxAssociationsPerHost":  8,
			"spoolMaxBytes":           "45GiB",
			"maxObjectSize":           "4GiB",
			"shutdownTimeoutSeconds":  60,
			"logLevel":                "debug",
			"extraFlags":              []any{"--batch-max-instances=100", "--keep-delivered=24h"},
			"destinations": []any{
				map[string]any{"name": "kheops-ct", "url": "https://kheops.example/api", "secret": "kheops-ct-album",
					"secretFiles": map[string]any{"token-file": "token"}, "options": map[string]any{"workers": 2, "retry-for": "24h"}},
				map[string]any{"name": "pacs-tls", "url": "dicoms://PACS@pacs.example:2762", "secret": "pacs-dicom-tls",
					"secretFiles": map[string]any{"client-cert": "tls.crt", "client-key": "tls.key", "ca-file": "ca.crt"},
					"options":     map[string]any{"calling-ae": "original"}},
				map[string]any{"name": "research", "url": "file:///var/lib/dicomgw/research"},
			},
			"routes":            []any{`{called_ae="KAAPANA", Modality="CT"} -> kheops-ct`, `{Modality=~"CT|MR"} -> pacs-tls,research`},
			"stamps":            []any{"kheops-ct=ClinicalTrialSponsorName={called_ae}", "research=InstitutionName=Research copy of {calling_ae}"},
			"unrouted":          "default",
			"ledgerRetention":   "2160h",
			"commitment":        "received",
			"commitmentTimeout": "12h",
			"remoteAEs": []any{
				map[string]any{"aeTitle": "CT_SCANNER_1", "host": "10.0.0.21", "port": 104},
				map[string]any{"aeTitle": "MR3T", "host": "mr3t.hospital.example", "port": 2762, "tls": true, "secret": "mr3t-dicom-tls",
					"secretFiles": map[string]any{"ca-file": "ca.crt", "client-cert": "tls.crt", "client-key": "tls.key"}, "timeout": "20s"},
			},
		},
		"stow": map[string]any{
			"auth": map[string]any{"type": "oauth2", "oauth2": map[string]any{
				"tokenURL": "https://keycloak.example/realms/k/protocol/openid-connect/token", "clientID": "dicomgw",
				"clientSecret": "s3cret", "scopes": []any{"openid", "dicomweb"}}},
			"caSecret":         "pacs-ca",
			"clientCertSecret": "pacs-client",
		},
		"tls": map[string]any{"enabled": true, "cert": string(cert), "key": string(key),
			"clientCA": map[string]any{"enabled": true, "existingSecret": "dicomgw-client-ca"}},
		"userIdentity": map[string]any{"usersSecret": "dicomgw-users",
			"jwt": map[string]any{"jwksSecret": "dicomgw-jwks", "issuer": "https://keycloak.example/realms/k", "audience": "dicomgw"}},
		"console": map[string]any{"enabled": true, "port": 8443, "usersSecret": "dicomgw-console-users", "tlsSecret": "dicomgw-console-tls",
			"sessionTimeout": "1h30m", "trustedProxies": []any{"10.0.0.0/8", "fd00::/8"}, "service": map[string]any{"labels": map[string]any{"tier": "ops"}}},
		"spool": map[string]any{"persistence": map[string]any{"size": "200Gi", "storageClassName": "fast-ssd", "annotations": map[string]any{"backup.example/skip": "true"}}},
		"service": map[string]any{"type": "LoadBalancer", "nodePort": 31112, "tlsNodePort": 31762, "externalTrafficPolicy": "Local",
			"loadBalancerIP": "10.1.2.3", "loadBalancerSourceRanges": []any{"10.0.0.0/8"},
			"annotations": map[string]any{"metallb.universe.tf/address-pool": "dicom"}, "labels": map[string]any{"tier": "edge"}},
		"metrics": map[string]any{
			"service":          map[string]any{"annotations": map[string]any{"example/scrape": "no"}},
			"serviceMonitor":   map[string]any{"enabled": true, "interval": "15s", "labels": map[string]any{"release": "kube-prometheus-stack"}},
			"prometheusRule":   map[string]any{"enabled": true, "labels": map[string]any{"release": "kube-prometheus-stack"}},
			"grafanaDashboard": map[string]any{"enabled": true},
		},
		"resources":                     map[string]any{"requests": map[string]any{"cpu": "500m", "memory": "256Mi"}, "limits": map[string]any{"cpu": "2", "memory": "2Gi"}},
		"preStopSleepSeconds":           10,
		"terminationGracePeriodSeconds": 120,
		"drain":                         map[string]any{"ordinals": []any{3, 4}},
		"podAnnotations":                map[string]any{"secret.reloader.stakater.com/reload": "dicomgw-tls"},
		"podLabels":                     map[string]any{"team": "radiology"},
		"env":                           []any{map[string]any{"name": "GOMEMLIMIT", "value": "1800MiB"}},
		"nodeSelector":                  map[string]any{"kubernetes.io/os": "linux"},
		"tolerations":                   []any{map[string]any{"key": "dedicated", "operator": "Equal", "value": "dicom", "effect": "NoSchedule"}},
		"affinity": map[string]any{"podAntiAffinity": map[string]any{"preferredDuringSchedulingIgnoredDuringExecution": []any{
			map[string]any{"weight": 100, "podAffinityTerm": map[string]any{"topologyKey": "kubernetes.io/hostname",
				"labelSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "dicomgw"}}}}}}},
		"topologySpreadConstraints": []any{map[string]any{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone",
			"whenUnsatisfiable": "ScheduleAnyway", "labelSelector": map[string]any{"matchLabels": map[string]any{"app.kubernetes.io/name": "dicomgw"}}}},
		"priorityClassName": "high",
		"serviceAccount":    map[string]any{"annotations": map[string]any{"example/owner": "radiology"}},
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	b, err = yaml.JSONToYAML(b)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "values-everything.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeRoutingValues is a values file with destinations and routes and no
// stowURL: no destination "default", no archive flag, the routes say where
// objects go.
func writeRoutingValues(t *testing.T) string {
	t.Helper()
	v := map[string]any{"gateway": map[string]any{
		"destinations": []any{
			map[string]any{"name": "kheops-ct", "url": "https://kheops.example/api", "secret": "kheops-ct-album", "secretFiles": map[string]any{"token-file": "token"}},
			map[string]any{"name": "pacs", "url": "dicom://PACS@pacs.example:104", "options": map[string]any{"calling-ae": "original", "workers": 2}},
		},
		"routes": []any{`{called_ae="KP-CT"} -> kheops-ct`, `{} -> pacs`},
	}}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "routing.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeCommitmentValues writes a values file of storage commitment values
// at their edges that dicomgw accepts: off, a timeout of hours and minutes,
// an IPv6 host, a port given as a string, tls false, tls true without
// files (the system's roots), a fractional timeout.
func writeCommitmentValues(t *testing.T) string {
	t.Helper()
	v := map[string]any{"gateway": map[string]any{
		"commitment":        "off",
		"commitmentTimeout": "1h30m",
		"remoteAEs": []any{
			map[string]any{"aeTitle": "US-ROOM_2", "host": "fd00::21", "port": "11112", "tls": false, "timeout": "1.5m"},
			map[string]any{"aeTitle": "CR*1", "host": "cr1.hospital.example", "port": 2762, "tls": true},
		},
	}}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "commitment.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// writeConsoleValues writes a values file with the console at the edges
// dicomgw accepts and without HTTPS: the shortest session timeout
// check-config takes (60s), a port given as a string, two replicas and a
// drain pod (which serves a console too).
func writeConsoleValues(t *testing.T) string {
	t.Helper()
	v := map[string]any{
		"replicaCount": 2,
		"drain":        map[string]any{"ordinals": []any{2}},
		"console":      map[string]any{"enabled": true, "port": "9480", "usersSecret": "ops-console-users", "sessionTimeout": "60s"},
	}
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "console.yaml")
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
