package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

const chartDir = "deploy/helm/dicomgw"

// chartCase is one way of rendering the chart.
type chartCase struct {
	name    string
	release string
	values  []string // values files (absolute, or relative to the chart)
	set     []string // --set
	kube    string   // --kube-version
}

// TestHelmChart lints and renders the chart with the default values,
// values-tls.yaml, a values file that turns every option on, an older
// Kubernetes and an ephemeral spool, decodes every manifest strictly into
// its Kubernetes API type (an unknown or misspelt field fails), and checks
// that the pieces fit: selectors, ports, probes, mounts, the flags file
// (accepted by `dicomgw check-config`), the drain timing, the monitoring
// objects.
func TestHelmChart(t *testing.T) {
	helm := helmTool(t)
	secrets := writeSecretFiles(t)
	everything := writeEverythingValues(t, secrets)
	cases := []chartCase{
		{name: "default", release: "dicomgw", kube: "1.31.0"},
		{name: "tls", release: "dicomgw", values: []string{"values-tls.yaml"}, kube: "1.31.0"},
		{name: "everything", release: "pacs-gw", values: []string{everything}, kube: "1.31.0"},
		{name: "kube-1.28", release: "dicomgw", kube: "1.28.0"},
		{name: "routing-only", release: "gw", kube: "1.31.0", values: []string{writeRoutingValues(t)}},
		{name: "commitment-edges", release: "gw", kube: "1.31.0", values: []string{writeCommitmentValues(t)}},
		{name: "console-plain", release: "gw", kube: "1.31.0", values: []string{writeConsoleValues(t)}},
		{name: "ephemeral-nodeport", release: "gw", kube: "1.31.0",
			set: []string{"spool.persistence.enabled=false", "service.type=NodePort", "service.nodePort=31112", "stow.auth.type=token", "stow.auth.token=abc"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"lint", "--strict", "--kube-version", c.kube, path(chartDir)}, valueArgs(c)...)
			if out, errOut, err := run(t, repo, helm, args...); err != nil || strings.Contains(out, "[WARNING]") || strings.Contains(out, "[ERROR]") {
				t.Fatalf("helm lint: %v\n%s%s", err, out, errOut)
			}
			m := render(t, helm, c)
			checkChart(t, c, m, secrets)
		})
	}
}

func valueArgs(c chartCase) []string {
	var args []string
	for _, v := range c.values {
		if !filepath.IsAbs(v) {
			v = filepath.Join(path(chartDir), v)
		}
		args = append(args, "-f", v)
	}
	for _, s := range c.set {
		args = append(args, "--set", s)
	}
	return args
}

// render runs helm template and decodes what it prints.
func render(t *testing.T, helm string, c chartCase) *manifests {
	t.Helper()
	args := append([]string{"template", c.release, path(chartDir), "--namespace", "pacs", "--kube-version", c.kube}, valueArgs(c)...)
	return decodeManifests(t, mustRun(t, repo, helm, args...))
}

// manifests are the rendered objects by kind and name.
type manifests struct {
	configMaps      map[string]*corev1.ConfigMap
	secrets         map[string]*corev1.Secret
	services        map[string]*corev1.Service
	serviceAccounts map[string]*corev1.ServiceAccount
	pods            map[string]*corev1.Pod
	statefulSets    map[string]*appsv1.StatefulSet
	pdbs            map[string]*policyv1.PodDisruptionBudget
	custom          map[string]map[string]any // Kind/name: ServiceMonitor, PrometheusRule
	names           []string                  // Kind/name of every object, in order
}

// decodeManifests splits helm template's output into documents and decodes
// each strictly (sigs.k8s.io/yaml: duplicate keys and unknown fields are
// errors) into the API type of its apiVersion and kind; the Prometheus
// Operator's kinds, whose Go types are not a dependency here, into maps.
func decodeManifests(t *testing.T, out string) *manifests {
	t.Helper()
	m := &manifests{
		configMaps: map[string]*corev1.ConfigMap{}, secrets: map[string]*corev1.Secret{},
		services: map[string]*corev1.Service{}, serviceAccounts: map[string]*corev1.ServiceAccount{},
		pods: map[string]*corev1.Pod{}, statefulSets: map[string]*appsv1.StatefulSet{},
		pdbs: map[string]*policyv1.PodDisruptionBudget{}, custom: map[string]map[string]any{},
	}
	for _, doc := range regexp.MustCompile(`(?m)^---\s*$`).Split(out, -1) {
		if strings.TrimSpace(stripComments(doc)) == "" {
			continue
		}
		var tm metav1.TypeMeta
		var meta struct {
			Metadata metav1.ObjectMeta `json:"metadata"`
		}
		if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
			t.Fatalf("manifest is not YAML: %v\n%s", err, doc)
		}
		if err := yaml.Unmarshal([]byte(doc), &meta); err != nil {
			t.Fatalf("manifest metadata: %v\n%s", err, doc)
		}
		name := meta.Metadata.Name
		key := tm.Kind + "/" + name
		if slices.Contains(m.names, key) {
			t.Errorf("%s rendered twice", key)
		}
		m.names = append(m.names, key)
		strict := func(into any) {
			if err := yaml.UnmarshalStrict([]byte(doc), into); err != nil {
				t.Errorf("%s does not decode strictly into %T: %v\n%s", key, into, err, doc)
			}
		}
		switch gvk := tm.APIVersion + " " + tm.Kind; gvk {
		case "v1 ConfigMap":
			o := &corev1.ConfigMap{}
			strict(o)
			m.configMaps[name] = o
		case "v1 Secret":
			o := &corev1.Secret{}
			strict(o)
			m.secrets[name] = o
		case "v1 Service":
			o := &corev1.Service{}
			strict(o)
			m.services[name] = o
		case "v1 ServiceAccount":
			o := &corev1.ServiceAccount{}
			strict(o)
			m.serviceAccounts[name] = o
		case "v1 Pod":
			o := &corev1.Pod{}
			strict(o)
			m.pods[name] = o
		case "apps/v1 StatefulSet":
			o := &appsv1.StatefulSet{}
			strict(o)
			m.statefulSets[name] = o
		case "policy/v1 PodDisruptionBudget":
			o := &policyv1.PodDisruptionBudget{}
			strict(o)
			m.pdbs[name] = o
		case "monitoring.coreos.com/v1 ServiceMonitor", "monitoring.coreos.com/v1 PrometheusRule":
			var o map[string]any
			strict(&o)
			m.custom[key] = o
		default:
			t.Errorf("unexpected object %q (%s): add it to the test", name, gvk)
			continue
		}
		checkMeta(t, key, tm.Kind, meta.Metadata)
	}
	return m
}

func stripComments(doc string) string {
	var b strings.Builder
	for _, l := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.String()
}

// checkMeta: names the API server accepts, valid labels, the chart's
// standard labels, and no namespace of its own (helm install sets it).
func checkMeta(t *testing.T, key, kind string, md metav1.ObjectMeta) {
	t.Helper()
	nameErrs := validation.IsDNS1123Subdomain(md.Name)
	if kind == "Service" {
		nameErrs = validation.IsDNS1035Label(md.Name)
	}
	for _, e := range nameErrs {
		t.Errorf("%s: name: %s", key, e)
	}
	for k, v := range md.Labels {
		for _, e := range append(validation.IsQualifiedName(k), validation.IsValidLabelValue(v)...) {
			t.Errorf("%s: label %s=%s: %s", key, k, v, e)
		}
	}
	for k := range md.Annotations {
		for _, e := range validation.IsQualifiedName(k) {
			t.Errorf("%s: annotation %s: %s", key, k, e)
		}
	}
	for _, l := range []string{"app.kubernetes.io/name", "app.kubernetes.io/instance", "app.kubernetes.io/managed-by", "helm.sh/chart"} {
		if md.Labels[l] == "" {
			t.Errorf("%s: no %s label", key, l)
		}
	}
	if md.Namespace != "" {
		t.Errorf("%s: namespace %q in the manifest", key, md.Namespace)
	}
}

// TestHelmChartRefuses: values that would make a broken deployment fail
// at helm template, with a message that says which value.
func TestHelmChartRefuses(t *testing.T) {
	helm := helmTool(t)
	for _, c := range []struct {
		set       []string
		setString []string // --set-string: a value helm would otherwise read as a bool or number
		want      string
	}{
		{[]string{"terminationGracePeriodSeconds=30"}, nil, "must be longer than preStopSleepSeconds + gateway.shutdownTimeoutSeconds"},
		{[]string{"service.type=ExternalName"}, nil, "is not ClusterIP, NodePort or LoadBalancer"},
		{[]string{"stow.auth.type=kerberos"}, nil, "is not one of none, token, basic, oauth2"},
		{[]string{"stow.auth.type=token"}, nil, "stow.auth.token (or stow.auth.existingSecret) is required"},
		{[]string{"gateway.extraFlags={stow-url=x}"}, nil, "does not start with --"},
		{[]string{"replicaCount=3", "drain.ordinals={2}"}, nil, "replica 2 is still running"},
		{[]string{"tls.disablePlaintext=true"}, nil, "tls.disablePlaintext needs tls.enabled"},
		{[]string{"tls.enabled=true"}, nil, "tls.cert (PEM, or tls.existingSecret) is required"},
		{[]string{"gateway.aeTitles=null"}, nil, "gateway.aeTitles needs at least one AE title"},
		{[]string{"gateway.destinations[0].name=a", "gateway.destinations[0].url=https://h/dw"}, nil, `gateway.routes: with gateway.destinations and no gateway.stowURL there is no destination "default"`},
		{[]string{"gateway.destinations[0].name=A", "gateway.destinations[0].url=https://h/dw", "gateway.unrouted=A"}, nil, `gateway.destinations[0].name "A": want 1 to 32 of a-z`},
		{[]string{"gateway.destinations[0].name=a", "gateway.unrouted=a"}, nil, "gateway.destinations[0].url is required"},
		{[]string{"gateway.destinations[0].name=a", "gateway.destinations[0].url=https://h/dw", "gateway.destinations[0].options.workers=2 batch-linger=1s", "gateway.unrouted=a"}, nil, "must be one word"},
		{[]string{"gateway.destinations[0].name=a", "gateway.destinations[0].url=https://h/dw", "gateway.destinations[0].secretFiles.token-file=token", "gateway.unrouted=a"}, nil, "secretFiles needs secret"},
		{[]string{"gateway.destinations[0].name=a", "gateway.destinations[0].url=https://h/dw", "gateway.destinations[1].name=a", "gateway.destinations[1].url=https://h/x", "gateway.unrouted=a"}, nil, `gateway.destinations: "a" is defined twice`},
		{[]string{"gateway.commitment=always"}, nil, `gateway.commitment "always": want delivered, received or off`},
		{[]string{"console.enabled=true"}, nil, "console.usersSecret is required with console.enabled: the console requires a login"},
		{[]string{"console.enabled=true", "console.usersSecret=u", "console.trustedProxies={ingress-nginx}"}, nil, `console.trustedProxies: "ingress-nginx": want an address or a CIDR`},
		{[]string{"console.enabled=true", "console.tlsSecret=t"}, nil, "console.usersSecret is required with console.enabled"},
		// A port the pod could not listen on: check-config does not look
		// for clashes, the gateway would fail at start.
		{[]string{"console.enabled=true", "console.usersSecret=u", "console.port=9477"}, nil, `console.port "9477": want 1 to 65535, and not 11112, 2762 or 9477`},
		{[]string{"console.enabled=true", "console.usersSecret=u", "console.port=11112"}, nil, `console.port "11112": want 1 to 65535, and not`},
		{[]string{"console.enabled=true", "console.usersSecret=u", "console.port=2762"}, nil, `console.port "2762": want 1 to 65535, and not`},
		{[]string{"console.enabled=true", "console.usersSecret=u", "console.port=0"}, nil, `console.port "0": want 1 to 65535`},
		{[]string{"console.enabled=true", "console.usersSecret=u", "console.port=70000"}, nil, `console.port "70000": want 1 to 65535`},
		{[]string{"console.enabled=true", "console.usersSecret=u"}, []string{"console.port=94x0"}, `console.port "94x0": want 1 to 65535`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT 1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104"}, nil, `gateway.remoteAEs[0].aeTitle "CT 1": want 1 to 16 printable characters`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].port=104"}, nil, "gateway.remoteAEs[0] (CT1): host is required"},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=70000"}, nil, `port "70000": want 1 to 65535`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104", "gateway.remoteAEs[1].aeTitle=CT1", "gateway.remoteAEs[1].host=g", "gateway.remoteAEs[1].port=104"}, nil, `gateway.remoteAEs: "CT1" is listed twice`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104", "gateway.remoteAEs[0].secretFiles.ca-file=ca.crt"}, nil, "secretFiles needs secret"},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104", "gateway.remoteAEs[0].secret=s", "gateway.remoteAEs[0].tls=true", "gateway.remoteAEs[0].secretFiles.token-file=t"}, nil, `secretFiles "token-file": want ca-file, client-cert or client-key`},
		// What dicomgw check-config refuses, refused at helm template
		// instead of in a crash-looping pod. An AE title with "=" cannot
		// be written in AET=HOST:PORT: dicomgw would read "A=B=h:104" as
		// AE A at host "B=h".
		{[]string{"gateway.remoteAEs[0].aeTitle=", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104"}, nil, "gateway.remoteAEs[0].aeTitle is required"},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT=1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104"}, nil, `gateway.remoteAEs[0].aeTitle "CT=1": want 1 to 16 printable characters, no spaces, '=' or backslash`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=0"}, nil, `port "0": want 1 to 65535`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h"}, []string{"gateway.remoteAEs[0].port=104x"}, `port "104x": want 1 to 65535`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h 2", "gateway.remoteAEs[0].port=104"}, nil, `host "h 2": one word`},
		{[]string{"gateway.commitmentTimeout=24 h"}, nil, `gateway.commitmentTimeout "24 h": want a positive Go duration`},
		{[]string{"gateway.commitmentTimeout=1d"}, nil, `gateway.commitmentTimeout "1d": want a positive Go duration`},
		{[]string{"gateway.commitmentTimeout=0s"}, nil, `gateway.commitmentTimeout "0s": want a positive Go duration`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104", "gateway.remoteAEs[0].timeout=20 s"}, nil, `(CT1): timeout "20 s": want a positive Go duration`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104", "gateway.remoteAEs[0].timeout=soon"}, nil, `(CT1): timeout "soon": want a positive Go duration`},
		// A quoted "false" is a string, and a non-empty string is true
		// to a template: it would have become tls=true.
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104"}, []string{"gateway.remoteAEs[0].tls=false"}, `(CT1): tls "false": want true or false, unquoted`},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104", "gateway.remoteAEs[0].secret=s", "gateway.remoteAEs[0].secretFiles.ca-file=ca.crt"}, nil, "(CT1): secretFiles (ca-file, client-cert, client-key) are for DICOM TLS: set tls: true"},
		{[]string{"gateway.remoteAEs[0].aeTitle=CT1", "gateway.remoteAEs[0].host=h", "gateway.remoteAEs[0].port=104", "gateway.remoteAEs[0].tls=true", "gateway.remoteAEs[0].secret=s", "gateway.remoteAEs[0].secretFiles.ca-file=ca crt"}, nil, `(CT1): secretFiles ca-file "ca crt": one word`},
	} {
		args := []string{"template", "dicomgw", path(chartDir), "--kube-version", "1.31.0"}
		for _, s := range c.set {
			args = append(args, "--set", s)
		}
		for _, s := range c.setString {
			args = append(args, "--set-string", s)
		}
		out, errOut, err := run(t, repo, helm, args...)
		if err == nil || !strings.Contains(errOut, c.want) {
			t.Errorf("helm template --set %v --set-string %v: %v, want an error saying %q\n%s", c.set, c.setString, err, c.want, tail(out+errOut, 2000))
		}
	}
}

// TestHelmConsoleSessionTimeout: the chart takes exactly the
// console.sessionTimeout values `dicomgw check-config` takes for
// --console-session-timeout (a Go duration of at least 1m), and refuses
// the others at helm template, naming the value.
func TestHelmConsoleSessionTimeout(t *testing.T) {
	helm := helmTool(t)
	secrets := writeSecretFiles(t)
	dir := t.TempDir()
	for _, c := range []struct {
		timeout string
		ok      bool
	}{
		{"30m", true}, {"1m", true}, {"60s", true}, {"60000ms", true}, {"1m0.5s", true}, {"1.5m", true}, {".1h", true}, {"1h30m", true}, {"12h", true},
		{"59s", false}, {"59.999s", false}, {"59999ms", false}, {"0.5m", false}, {"0", false}, {"0s", false}, {"30", false}, {"1d", false}, {"30 min", false}, {"-30m", false}, {"", false},
	} {
		_, errOut, err := run(t, repo, helm, "template", "dicomgw", path(chartDir), "--kube-version", "1.31.0",
			"--set", "console.enabled=true", "--set", "console.usersSecret=u", "--set-string", "console.sessionTimeout="+c.timeout)
		if want := fmt.Sprintf("console.sessionTimeout %q: want a Go duration of at least 1m", c.timeout); (err == nil) != c.ok || (!c.ok && !strings.Contains(errOut, want)) {
			t.Errorf("helm template with console.sessionTimeout %q: %v, want ok %v (or an error saying %q)\n%s", c.timeout, err, c.ok, want, tail(errOut, 1000))
		}
		_, errOut, err = run(t, dir, binary(t), "check-config", "--spool-dir", filepath.Join(dir, "spool"), "--archive-dir", filepath.Join(dir, "archive"),
			"--console-listen", "127.0.0.1:9480", "--console-users-file", filepath.Join(secrets, "console-users", "users"), "--console-session-timeout="+c.timeout)
		if (err == nil) != c.ok {
			t.Errorf("dicomgw check-config --console-session-timeout=%q: %v, want ok %v: the chart and dicomgw disagree\n%s", c.timeout, err, c.ok, tail(errOut, 1000))
		}
	}
}

// TestHelmChecksumRollsPods: a change of the flags file changes the pod
// template (checksum/config), so helm upgrade rolls the pods; other
// changes do not.
func TestHelmChecksumRollsPods(t *testing.T) {
	helm := helmTool(t)
	checksum := func(set ...string) string {
		m := render(t, helm, chartCase{release: "dicomgw", kube: "1.31.0", set: set})
		for _, s := range m.statefulSets {
			return s.Spec.Template.Annotations["checksum/config"]
		}
		return ""
	}
	base := checksum()
	if checksum("gateway.aeTitles={KAAPANA}") == base || checksum("gateway.logLevel=debug") == base {
		t.Errorf("a flags file change leaves checksum/config as it was: pods would keep the old flags")
	}
	if checksum("resources.limits.memory=2Gi") != base {
		t.Errorf("checksum/config changes without a flags file change")
	}
}

// TestChartFilesAreLinks: the chart's rules and dashboard are the files in
// deploy/prometheus and deploy/grafana (symbolic links), not copies that
// could drift.
func TestChartFilesAreLinks(t *testing.T) {
	for link, target := range map[string]string{
		chartDir + "/files/dicomgw-rules.yml":      "deploy/prometheus/dicomgw-rules.yml",
		chartDir + "/files/dicomgw-dashboard.json": "deploy/grafana/dicomgw-dashboard.json",
	} {
		fi, err := os.Lstat(path(link))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode()&os.ModeSymlink == 0 {
			t.Errorf("%s is not a symbolic link to %s", link, target)
			continue
		}
		got, err := filepath.EvalSymlinks(path(link))
		want, _ := filepath.EvalSymlinks(path(target))
		if err != nil || got != want {
			t.Errorf("%s resolves to %s (%v), want %s", link, got, err, want)
		}
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
