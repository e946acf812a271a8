package deploy

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// checkChart checks one rendering against the values it was made from.
func checkChart(t *testing.T, c chartCase, m *manifests, secrets string) {
	v := effectiveValues(t, c)
	if len(m.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want 1: %v", len(m.statefulSets), m.names)
	}
	var sts *appsv1.StatefulSet
	for _, s := range m.statefulSets {
		sts = s
	}
	pod := &sts.Spec.Template
	podLabels := labels.Set(pod.Labels)
	sel, err := metav1.LabelSelectorAsSelector(sts.Spec.Selector)
	if err != nil || !sel.Matches(podLabels) {
		t.Errorf("StatefulSet selector %v does not select its pods %v (%v)", sts.Spec.Selector, pod.Labels, err)
	}
	if got, want := int(*sts.Spec.Replicas), v.num("replicaCount"); got != want {
		t.Errorf("replicas %d, want %d", got, want)
	}
	if p := sts.Spec.PersistentVolumeClaimRetentionPolicy; p == nil || p.WhenScaled != appsv1.RetainPersistentVolumeClaimRetentionPolicyType || p.WhenDeleted != appsv1.RetainPersistentVolumeClaimRetentionPolicyType {
		t.Errorf("PVC retention policy %+v: a scaled-down replica's spool must be kept", p)
	}
	for _, k := range []string{"checksum/config", "checksum/secret"} {
		if !regexp.MustCompile(`^[0-9a-f]{64}$`).MatchString(pod.Annotations[k]) {
			t.Errorf("pod annotation %s = %q, want a sha256", k, pod.Annotations[k])
		}
	}
	if len(pod.Spec.Containers) != 1 {
		t.Fatalf("%d containers", len(pod.Spec.Containers))
	}
	ctr := &pod.Spec.Containers[0]
	checkPodSecurity(t, "StatefulSet", &pod.Spec, ctr)
	if !strings.HasSuffix(ctr.Image, ":"+firstNonEmpty(v.str("image", "tag"), chartAppVersion(t))) {
		t.Errorf("image %q", ctr.Image)
	}
	ports := map[string]int32{}
	for _, p := range ctr.Ports {
		ports[p.Name] = p.ContainerPort
		for _, e := range validation.IsValidPortName(p.Name) {
			t.Errorf("port %q: %s", p.Name, e)
		}
	}
	if ports["metrics"] != 9477 {
		t.Errorf("metrics port %d, want 9477", ports["metrics"])
	}

	// Probes on the metrics port: startup and liveness /healthz, readiness /readyz.
	for _, p := range []struct {
		name  string
		probe *corev1.Probe
		path  string
	}{{"startup", ctr.StartupProbe, "/healthz"}, {"liveness", ctr.LivenessProbe, "/healthz"}, {"readiness", ctr.ReadinessProbe, "/readyz"}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no HTTP %s probe", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path || p.probe.HTTPGet.Port.String() != "metrics" {
			t.Errorf("%s probe %s on %s, want %s on metrics", p.name, p.probe.HTTPGet.Path, p.probe.HTTPGet.Port.String(), p.path)
		}
	}

	// Volumes: the spool per replica, every mount backed by a volume.
	vols := map[string]corev1.Volume{}
	for _, vol := range pod.Spec.Volumes {
		vols[vol.Name] = vol
	}
	claims := map[string]bool{}
	for _, pvc := range sts.Spec.VolumeClaimTemplates {
		claims[pvc.Name] = true
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range ctr.VolumeMounts {
		mounts[vm.Name] = vm
		if _, ok := vols[vm.Name]; !ok && !claims[vm.Name] {
			t.Errorf("mount %s has no volume", vm.Name)
		}
	}
	for name := range vols {
		if _, ok := mounts[name]; !ok {
			t.Errorf("volume %s is not mounted", name)
		}
	}
	if mounts["spool"].MountPath != "/var/lib/dicomgw" {
		t.Errorf("spool mounted at %q", mounts["spool"].MountPath)
	}
	if v.boolean("spool", "persistence", "enabled") {
		if !claims["spool"] || len(sts.Spec.VolumeClaimTemplates) != 1 {
			t.Errorf("volume claim templates %v, want spool", claims)
		} else {
			pvc := sts.Spec.VolumeClaimTemplates[0]
			if got := pvc.Spec.Resources.Requests.Storage().String(); got != v.str("spool", "persistence", "size") {
				t.Errorf("spool size %s, want %s", got, v.str("spool", "persistence", "size"))
			}
			if sc := v.str("spool", "persistence", "storageClassName"); sc != "" && (pvc.Spec.StorageClassName == nil || *pvc.Spec.StorageClassName != sc) {
				t.Errorf("storage class %v, want %s", pvc.Spec.StorageClassName, sc)
			}
		}
	} else if vols["spool"].EmptyDir == nil || claims["spool"] {
		t.Errorf("without persistence the spool should be an emptyDir")
	}

	// The flags file: accepted by dicomgw, and consistent with the pod.
	cm := m.configMaps[sts.Name]
	if cm == nil {
		t.Fatalf("no ConfigMap %s", sts.Name)
	}
	if vols["config"].ConfigMap == nil || vols["config"].ConfigMap.Name != cm.Name || mounts["config"].MountPath != "/etc/dicomgw" {
		t.Errorf("the ConfigMap is not mounted at /etc/dicomgw (the image's --flagfile /etc/dicomgw/dicomgw.flags)")
	}
	flagsText := cm.Data["dicomgw.flags"]
	flags := parseFlags(t, flagsText)
	checkConfig(t, flagsText, secrets)
	checkFlagsAgainstPod(t, v, flags, ports, ctr, vols, m)

	// Draining: the grace period covers the preStop wait and the drain.
	shutdown, err := time.ParseDuration(flags.last("shutdown-timeout"))
	if err != nil {
		t.Fatalf("--shutdown-timeout: %v", err)
	}
	wait := time.Duration(0)
	if ps := ctr.Lifecycle; ps != nil && ps.PreStop != nil {
		switch h := ps.PreStop; {
		case h.Sleep != nil:
			wait = time.Duration(h.Sleep.Seconds) * time.Second
			if c.kube < "1.30" {
				t.Errorf("preStop sleep on Kubernetes %s (needs 1.30)", c.kube)
			}
		case h.Exec != nil:
			cmd := h.Exec.Command
			if len(cmd) != 3 || cmd[0] != "/usr/local/bin/dicomgw-healthcheck" || cmd[1] != "--sleep" {
				t.Errorf("preStop exec %q", cmd)
			} else if wait, err = time.ParseDuration(cmd[2]); err != nil {
				t.Errorf("preStop exec %q: %v", cmd, err)
			}
		default:
			t.Errorf("preStop %+v", h)
		}
	}
	if want := time.Duration(v.num("preStopSleepSeconds")) * time.Second; wait != want {
		t.Errorf("preStop waits %v, want %v", wait, want)
	}
	grace := time.Duration(*pod.Spec.TerminationGracePeriodSeconds) * time.Second
	if grace <= wait+shutdown {
		t.Errorf("terminationGracePeriodSeconds %v <= preStop %v + --shutdown-timeout %v: the drain would be killed", grace, wait, shutdown)
	}

	checkServices(t, v, m, sts, ports)
	checkPDB(t, m, podLabels)
	checkMonitoring(t, v, m)
	checkDrainPods(t, v, m, sts)
	checkChartSecrets(t, v, m)
	if sa := m.serviceAccounts[pod.Spec.ServiceAccountName]; v.boolean("serviceAccount", "create") && (sa == nil || sa.AutomountServiceAccountToken == nil || *sa.AutomountServiceAccountToken) {
		t.Errorf("service account %q missing or mounting its token", pod.Spec.ServiceAccountName)
	}
}

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

func chartAppVersion(t *testing.T) string {
	b, err := os.ReadFile(filepath.Join(path(chartDir), "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var c struct {
		AppVersion string `json:"appVersion"`
	}
	if err := yaml.Unmarshal(b, &c); err != nil {
		t.Fatal(err)
	}
	return c.AppVersion
}

// checkPodSecurity: non-root, read-only root, no privilege escalation, no
// capabilities, no service account token.
func checkPodSecurity(t *testing.T, what string, spec *corev1.PodSpec, ctr *corev1.Container) {
	t.Helper()
	psc := spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot || psc.RunAsUser == nil || *psc.RunAsUser == 0 || psc.FSGroup == nil {
		t.Errorf("%s: pod security context %+v: want runAsNonRoot, a non-zero runAsUser and an fsGroup (spool volume ownership)", what, psc)
	}
	sc := ctr.SecurityContext
	switch {
	case sc == nil:
		t.Errorf("%s: no container security context", what)
	case sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem:
		t.Errorf("%s: root file system not read-only", what)
	case sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation:
		t.Errorf("%s: privilege escalation allowed", what)
	case sc.Capabilities == nil || !slices.Equal(sc.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(sc.Capabilities.Add) > 0:
		t.Errorf("%s: capabilities %+v, want drop ALL", what, sc.Capabilities)
	}
	if spec.AutomountServiceAccountToken == nil || *spec.AutomountServiceAccountToken {
		t.Errorf("%s: the service account token is mounted", what)
	}
}

// flagSet is a flags file read as name -> values, in order.
type flagSet map[string][]string

func (f flagSet) last(name string) string {
	if v := f[name]; len(v) > 0 {
		return v[len(v)-1]
	}
	return ""
}

func (f flagSet) has(name string) bool { _, ok := f[name]; return ok }

func parseFlags(t *testing.T, text string) flagSet {
	t.Helper()
	f := flagSet{}
	for _, l := range strings.Split(text, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if !strings.HasPrefix(l, "--") {
			t.Errorf("flags file line %q", l)
			continue
		}
		name, val, _ := strings.Cut(l[2:], "=")
		f[name] = append(f[name], val)
	}
	return f
}

// secretsMount is where the chart mounts Secrets; data is where the spool
// volume goes.
const (
	secretsMount = "/var/run/secrets/dicomgw"
	dataMount    = "/var/lib/dicomgw"
)

// checkConfig runs `dicomgw check-config` on a rendered flags file, its
// paths moved into a temporary directory that has the files the Secrets
// would provide (writeSecretFiles).
func checkConfig(t *testing.T, flagsText, secrets string) {
	t.Helper()
	dir := t.TempDir()
	text := strings.ReplaceAll(flagsText, secretsMount, secrets)
	text = strings.ReplaceAll(text, dataMount, dir)
	file := filepath.Join(dir, "dicomgw.flags")
	if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, errOut, err := run(t, dir, binary(t), "check-config", "--flagfile", file); err != nil {
		t.Errorf("dicomgw check-config rejects the rendered flags file: %v\n%s%s\n%s", err, out, errOut, flagsText)
	}
}

// checkFlagsAgainstPod: the listening ports are the container's, the spool
// is on the spool volume, every file a flag names is in a mounted volume
// that has that key.
func checkFlagsAgainstPod(t *testing.T, v values, f flagSet, ports map[string]int32, ctr *corev1.Container, vols map[string]corev1.Volume, m *manifests) {
	t.Helper()
	port := func(addr string) int32 {
		i := strings.LastIndexByte(addr, ':')
		n, _ := strconv.Atoi(addr[i+1:])
		return int32(n)
	}
	if v.boolean("tls", "disablePlaintext") {
		if f.last("listen") != "" || ports["dicom"] != 0 {
			t.Errorf("plaintext DICOM with tls.disablePlaintext: --listen=%q, port %d", f.last("listen"), ports["dicom"])
		}
	} else if got := port(f.last("listen")); got != 11112 || ports["dicom"] != got {
		t.Errorf("--listen %q, container port dicom %d", f.last("listen"), ports["dicom"])
	}
	if v.boolean("tls", "enabled") {
		if got := port(f.last("tls-listen")); got != 2762 || ports["dicom-tls"] != got {
			t.Errorf("--tls-listen %q, container port dicom-tls %d", f.last("tls-listen"), ports["dicom-tls"])
		}
	} else if f.has("tls-listen") || ports["dicom-tls"] != 0 {
		t.Errorf("TLS without tls.enabled")
	}
	if got := port(f.last("metrics-listen")); got != ports["metrics"] {
		t.Errorf("--metrics-listen %q, container port %d", f.last("metrics-listen"), ports["metrics"])
	}
	if v.boolean("console", "enabled") {
		if got := port(f.last("console-listen")); got != int32(v.num("console", "port")) || ports["console"] != got || f.last("console-users-file") == "" {
			t.Errorf("--console-listen %q --console-users-file %q, container port console %d, console.port %d",
				f.last("console-listen"), f.last("console-users-file"), ports["console"], v.num("console", "port"))
		}
		tlsSecret := v.str("console", "tlsSecret")
		if (tlsSecret != "") != f.has("console-tls-cert") || (tlsSecret != "") != f.has("console-tls-key") || f.last("console-session-timeout") != v.str("console", "sessionTimeout") {
			t.Errorf("--console-tls-cert %q --console-tls-key %q --console-session-timeout %q with console %v",
				f.last("console-tls-cert"), f.last("console-tls-key"), f.last("console-session-timeout"), v.get("console"))
		}
		// The console's files come, read-only, from the Secrets the values
		// name (their keys are checked with every other file below).
		for flag, secret := range map[string]string{"console-users-file": v.str("console", "usersSecret"), "console-tls-cert": tlsSecret, "console-tls-key": tlsSecret} {
			file := f.last(flag)
			if file == "" {
				continue
			}
			var from []string
			for _, vm := range ctr.VolumeMounts {
				if s := vols[vm.Name].Secret; s != nil && strings.HasPrefix(file, vm.MountPath+"/") {
					from = append(from, fmt.Sprintf("%s (read-only %v)", s.SecretName, vm.ReadOnly))
				}
			}
			if want := []string{secret + " (read-only true)"}; !slices.Equal(from, want) {
				t.Errorf("--%s=%s is mounted from the Secrets %q, want %q", flag, file, from, want)
			}
		}
		var proxies []string
		if l, ok := v.get("console", "trustedProxies").([]any); ok {
			for _, p := range l {
				proxies = append(proxies, fmt.Sprint(p))
			}
		}
		if !slices.Equal(f["console-trusted-proxies"], proxies) {
			t.Errorf("--console-trusted-proxies %q, want %q", f["console-trusted-proxies"], proxies)
		}
	} else if f.has("console-listen") || f.has("console-users-file") || f.has("console-tls-cert") {
		t.Errorf("console flags without console.enabled")
	}
	if f.last("spool-dir") != dataMount+"/spool" {
		t.Errorf("--spool-dir %q", f.last("spool-dir"))
	}
	if stow := v.str("gateway", "stowURL"); stow != "" {
		if f.last("stow-url") != stow || f.has("archive-dir") {
			t.Errorf("--stow-url %q --archive-dir %q, want %q and no archive", f.last("stow-url"), f.last("archive-dir"), stow)
		}
	} else if dests, _ := v.get("gateway", "destinations").([]any); len(dests) == 0 && !strings.HasPrefix(f.last("archive-dir"), dataMount+"/") {
		t.Errorf("--archive-dir %q is not on the spool volume", f.last("archive-dir"))
	}
	var aes []string
	for _, a := range v.get("gateway", "aeTitles").([]any) {
		aes = append(aes, fmt.Sprint(a))
	}
	if !slices.Equal(f["ae-title"], aes) {
		t.Errorf("--ae-title %q, want %q", f["ae-title"], aes)
	}
	checkRoutingFlags(t, v, f)
	checkCommitmentFlags(t, v, f)
	files := map[string]string{} // flag (or destination option) -> file
	for _, name := range []string{"tls-cert", "tls-key", "tls-client-ca", "users-file", "jwt-jwks-file", "console-users-file", "console-tls-cert", "console-tls-key", "stow-token-file", "stow-basic-auth-file", "stow-oauth2-client-secret-file", "stow-ca-file", "stow-client-cert", "stow-client-key"} {
		if file := f.last(name); file != "" {
			files[name] = file
		}
	}
	for _, r := range f["remote-ae"] {
		fields := strings.Fields(r)
		for _, kv := range fields[1:] {
			if k, val, _ := strings.Cut(kv, "="); strings.HasPrefix(val, "/") {
				files["remote-ae "+fields[0]+" "+k] = val
			}
		}
	}
	for _, d := range f["destination"] {
		fields := strings.Fields(d)
		for _, kv := range fields[1:] {
			k, val, _ := strings.Cut(kv, "=")
			if strings.HasPrefix(val, "/") && k != "batch-max-bytes" {
				files["destination "+fields[0]+" "+k] = val
			}
		}
	}
	for _, name := range slices.Sorted(mapsKeys(files)) {
		file := files[name]
		found := false
		for _, vm := range ctr.VolumeMounts {
			rel, ok := strings.CutPrefix(file, vm.MountPath+"/")
			if !ok {
				continue
			}
			found = true
			if s := vols[vm.Name].Secret; s != nil && !secretHasKey(s, rel, m) {
				t.Errorf("--%s=%s: the Secret %s mounted there has no key %q", name, file, s.SecretName, rel)
			}
		}
		if !found {
			t.Errorf("--%s=%s is in no mounted volume", name, file)
		}
	}
}

// checkRoutingFlags: a --destination line per gateway.destinations entry,
// its file options in its Secret's mount, its other options as given; the
// routes, --unrouted and --ledger-retention as given; the archive is the
// destination "default" only without destinations (or with stowURL).
func checkRoutingFlags(t *testing.T, v values, f flagSet) {
	t.Helper()
	dests, _ := v.get("gateway", "destinations").([]any)
	if len(f["destination"]) != len(dests) {
		t.Errorf("--destination %q for %d gateway.destinations", f["destination"], len(dests))
	}
	for i, x := range dests {
		d := x.(map[string]any)
		if i >= len(f["destination"]) {
			break
		}
		fields := strings.Fields(f["destination"][i])
		if want := fmt.Sprintf("%v=%v", d["name"], d["url"]); fields[0] != want {
			t.Errorf("--destination %q, want %q first", f["destination"][i], want)
		}
		want := map[string]string{}
		if files, ok := d["secretFiles"].(map[string]any); ok {
			for k, key := range files {
				want[k] = fmt.Sprintf("%s/destinations/%v/%v", secretsMount, d["name"], key)
			}
		}
		if opts, ok := d["options"].(map[string]any); ok {
			for k, val := range opts {
				want[k] = fmt.Sprint(val)
			}
		}
		got := map[string]string{}
		for _, kv := range fields[1:] {
			k, val, _ := strings.Cut(kv, "=")
			got[k] = val
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("--destination %s options %v, want %v", fields[0], got, want)
		}
	}
	var routes []string
	if rs, ok := v.get("gateway", "routes").([]any); ok {
		for _, r := range rs {
			routes = append(routes, fmt.Sprint(r))
		}
	}
	if !slices.Equal(f["route"], routes) {
		t.Errorf("--route %q, want %q", f["route"], routes)
	}
	var stamps []string
	if ss, ok := v.get("gateway", "stamps").([]any); ok {
		for _, s := range ss {
			stamps = append(stamps, fmt.Sprint(s))
		}
	}
	if !slices.Equal(f["stamp"], stamps) {
		t.Errorf("--stamp %q, want %q", f["stamp"], stamps)
	}
	if f.last("unrouted") != v.str("gateway", "unrouted") || f.last("ledger-retention") != v.str("gateway", "ledgerRetention") {
		t.Errorf("--unrouted %q --ledger-retention %q, want %q and %q", f.last("unrouted"), f.last("ledger-retention"), v.str("gateway", "unrouted"), v.str("gateway", "ledgerRetention"))
	}
	if len(dests) > 0 && v.str("gateway", "stowURL") == "" && f.has("archive-dir") {
		t.Errorf("--archive-dir %q with destinations and no stowURL: an archive nobody routes to", f.last("archive-dir"))
	}
}

// checkCommitmentFlags: --commitment and --commitment-timeout as given, a
// --remote-ae line per gateway.remoteAEs entry with its file options in its
// Secret's mount.
func checkCommitmentFlags(t *testing.T, v values, f flagSet) {
	t.Helper()
	if f.last("commitment") != v.str("gateway", "commitment") || f.last("commitment-timeout") != v.str("gateway", "commitmentTimeout") {
		t.Errorf("--commitment %q --commitment-timeout %q, want %q and %q", f.last("commitment"), f.last("commitment-timeout"),
			v.str("gateway", "commitment"), v.str("gateway", "commitmentTimeout"))
	}
	remotes, _ := v.get("gateway", "remoteAEs").([]any)
	if len(f["remote-ae"]) != len(remotes) {
		t.Fatalf("--remote-ae %q for %d gateway.remoteAEs", f["remote-ae"], len(remotes))
	}
	for i, x := range remotes {
		r := x.(map[string]any)
		fields := strings.Fields(f["remote-ae"][i])
		if want := fmt.Sprintf("%v=%s", r["aeTitle"], net.JoinHostPort(fmt.Sprint(r["host"]), fmt.Sprint(r["port"]))); fields[0] != want {
			t.Errorf("--remote-ae %q, want %q first", f["remote-ae"][i], want)
		}
		want := map[string]string{}
		if files, ok := r["secretFiles"].(map[string]any); ok {
			for k, key := range files {
				want[k] = fmt.Sprintf("%s/remote-ae/%d/%v", secretsMount, i, key)
			}
		}
		if r["tls"] == true {
			want["tls"] = "true"
		}
		if to, ok := r["timeout"]; ok {
			want["timeout"] = fmt.Sprint(to)
		}
		got := map[string]string{}
		for _, kv := range fields[1:] {
			k, val, _ := strings.Cut(kv, "=")
			got[k] = val
		}
		if !reflect.DeepEqual(got, want) {
			t.Errorf("--remote-ae %s options %v, want %v", fields[0], got, want)
		}
	}
}

// secretHasKey says whether a mounted Secret provides the file rel: by its
// items, or, for Secrets the chart makes, by their data. Secrets the user
// brings (existingSecret) are taken to have the documented keys.
func secretHasKey(s *corev1.SecretVolumeSource, rel string, m *manifests) bool {
	if len(s.Items) > 0 {
		return slices.ContainsFunc(s.Items, func(k corev1.KeyToPath) bool { return k.Path == rel })
	}
	if sec := m.secrets[s.SecretName]; sec != nil {
		_, inData := sec.Data[rel]
		_, inString := sec.StringData[rel]
		return inData || inString
	}
	return true
}

// checkServices: the DICOM Service of the type asked for, its ports on the
// container's, selecting the StatefulSet's pods (and not the drain pods);
// the headless Service governing the StatefulSet; the metrics Service.
func checkServices(t *testing.T, v values, m *manifests, sts *appsv1.StatefulSet, ports map[string]int32) {
	t.Helper()
	podLabels := labels.Set(sts.Spec.Template.Labels)
	dicom, headless, metrics := m.services[sts.Name], m.services[sts.Name+"-headless"], m.services[sts.Name+"-metrics"]
	wantServices := 3
	if v.boolean("console", "enabled") {
		wantServices++
		con := m.services[sts.Name+"-console"]
		if con == nil || len(con.Spec.Ports) != 1 || con.Spec.Ports[0].Name != "console" || int(con.Spec.Ports[0].Port) != v.num("console", "port") ||
			con.Spec.Ports[0].TargetPort.String() != "console" || con.Spec.Type != corev1.ServiceTypeClusterIP {
			t.Errorf("console Service %+v, want port %d named console on the container's console port", con, v.num("console", "port"))
		} else if !labels.SelectorFromSet(con.Spec.Selector).Matches(podLabels) || len(con.Spec.Selector) == 0 {
			t.Errorf("console Service selector %v does not select the pods %v", con.Spec.Selector, podLabels)
		} else if con.Spec.SessionAffinity != corev1.ServiceAffinityClientIP {
			// A session lives in the memory of the pod that made it.
			t.Errorf("console Service sessionAffinity %q, want ClientIP", con.Spec.SessionAffinity)
		}
	} else if m.services[sts.Name+"-console"] != nil || ports["console"] != 0 {
		t.Errorf("a console without console.enabled")
	}
	if dicom == nil || headless == nil || metrics == nil || len(m.services) != wantServices {
		t.Fatalf("services %v", m.names)
	}
	if sts.Spec.ServiceName != headless.Name || headless.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("StatefulSet serviceName %q: want the headless Service %s", sts.Spec.ServiceName, headless.Name)
	}
	for _, svc := range m.services {
		if !labels.SelectorFromSet(svc.Spec.Selector).Matches(podLabels) || len(svc.Spec.Selector) == 0 {
			t.Errorf("Service %s selects %v, not the gateway's pods", svc.Name, svc.Spec.Selector)
		}
		for _, p := range m.pods {
			if labels.SelectorFromSet(svc.Spec.Selector).Matches(labels.Set(p.Labels)) {
				t.Errorf("Service %s selects the drain pod %s", svc.Name, p.Name)
			}
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.StrVal == "" || ports[p.TargetPort.StrVal] == 0 {
				t.Errorf("Service %s port %s targets %q, not a container port", svc.Name, p.Name, p.TargetPort.String())
			}
		}
	}
	if string(dicom.Spec.Type) != v.str("service", "type") {
		t.Errorf("DICOM Service type %s, want %s", dicom.Spec.Type, v.str("service", "type"))
	}
	want := map[string]int32{}
	if !v.boolean("tls", "disablePlaintext") {
		want["dicom"] = int32(v.num("service", "port"))
	}
	if v.boolean("tls", "enabled") {
		want["dicom-tls"] = int32(v.num("service", "tlsPort"))
	}
	got := map[string]int32{}
	for _, p := range dicom.Spec.Ports {
		got[p.Name] = p.Port
		if dicom.Spec.Type != corev1.ServiceTypeClusterIP {
			wantNode := v.num("service", "nodePort")
			if p.Name == "dicom-tls" {
				wantNode = v.num("service", "tlsNodePort")
			}
			if int(p.NodePort) != wantNode {
				t.Errorf("DICOM Service port %s nodePort %d, want %d", p.Name, p.NodePort, wantNode)
			}
		}
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("DICOM Service ports %v, want %v", got, want)
	}
	if dicom.Spec.Type != corev1.ServiceTypeClusterIP && string(dicom.Spec.ExternalTrafficPolicy) != v.str("service", "externalTrafficPolicy") {
		t.Errorf("externalTrafficPolicy %q", dicom.Spec.ExternalTrafficPolicy)
	}
	if len(metrics.Spec.Ports) != 1 || metrics.Spec.Ports[0].Name != "metrics" || metrics.Spec.Type != corev1.ServiceTypeClusterIP {
		t.Errorf("metrics Service ports %+v", metrics.Spec.Ports)
	}
}

func checkPDB(t *testing.T, m *manifests, podLabels labels.Set) {
	t.Helper()
	if len(m.pdbs) != 1 {
		t.Errorf("%d PodDisruptionBudgets", len(m.pdbs))
		return
	}
	for _, p := range m.pdbs {
		sel, err := metav1.LabelSelectorAsSelector(p.Spec.Selector)
		if err != nil || !sel.Matches(podLabels) {
			t.Errorf("PodDisruptionBudget selects %v, not the gateway's pods", p.Spec.Selector)
		}
		if p.Spec.MaxUnavailable == nil || p.Spec.MaxUnavailable.IntValue() < 1 {
			t.Errorf("PodDisruptionBudget maxUnavailable %v: a node drain would block forever", p.Spec.MaxUnavailable)
		}
	}
}

// checkMonitoring: the ServiceMonitor scrapes the metrics Service with the
// job label the rules expect; the PrometheusRule holds exactly
// deploy/prometheus/dicomgw-rules.yml; the dashboard ConfigMap exactly
// deploy/grafana/dicomgw-dashboard.json.
func checkMonitoring(t *testing.T, v values, m *manifests) {
	t.Helper()
	var sm, pr map[string]any
	for k, o := range m.custom {
		switch {
		case strings.HasPrefix(k, "ServiceMonitor/"):
			sm = o
		case strings.HasPrefix(k, "PrometheusRule/"):
			pr = o
		}
	}
	if (sm != nil) != v.boolean("metrics", "serviceMonitor", "enabled") || (pr != nil) != v.boolean("metrics", "prometheusRule", "enabled") {
		t.Fatalf("ServiceMonitor %v, PrometheusRule %v: not as the values ask", sm != nil, pr != nil)
	}
	if sm != nil {
		spec := values(sm).get("spec").(map[string]any)
		required(t, "ServiceMonitor", sm, "apiVersion", "kind", "metadata", "spec")
		required(t, "ServiceMonitor spec", spec, "selector", "endpoints")
		var metricsSvc *corev1.Service
		for _, s := range m.services {
			if s.Labels["app.kubernetes.io/component"] == "metrics" {
				metricsSvc = s
			}
		}
		matchLabels := map[string]string{}
		for k, x := range values(spec).get("selector", "matchLabels").(map[string]any) {
			matchLabels[k] = fmt.Sprint(x)
		}
		for _, s := range m.services {
			if sel := labels.SelectorFromSet(matchLabels); sel.Matches(labels.Set(s.Labels)) != (s == metricsSvc) {
				t.Errorf("ServiceMonitor selector %v and Service %s", matchLabels, s.Name)
			}
		}
		eps := spec["endpoints"].([]any)
		if len(eps) != 1 {
			t.Fatalf("endpoints %v", eps)
		}
		ep := eps[0].(map[string]any)
		if ep["port"] != "metrics" || ep["path"] != "/metrics" {
			t.Errorf("ServiceMonitor endpoint %v", ep)
		}
		for _, k := range []string{"interval", "scrapeTimeout"} {
			if _, err := time.ParseDuration(fmt.Sprint(ep[k])); err != nil {
				t.Errorf("ServiceMonitor %s: %v", k, err)
			}
		}
		jobLabel, _ := spec["jobLabel"].(string)
		if job := metricsSvc.Labels[jobLabel]; !regexp.MustCompile(`^dicomgw.*$`).MatchString(job) {
			t.Errorf("ServiceMonitor jobLabel %q gives job=%q; the rules expect job=~\"dicomgw.*\"", jobLabel, job)
		}
		for k, x := range v.get("metrics", "serviceMonitor", "labels").(map[string]any) {
			if values(sm).str("metadata", "labels", k) != fmt.Sprint(x) {
				t.Errorf("ServiceMonitor lacks label %s=%v", k, x)
			}
		}
	}
	if pr != nil {
		required(t, "PrometheusRule", pr, "apiVersion", "kind", "metadata", "spec")
		b, err := os.ReadFile(path("deploy/prometheus/dicomgw-rules.yml"))
		if err != nil {
			t.Fatal(err)
		}
		var rules map[string]any
		if err := yaml.Unmarshal(b, &rules); err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(pr["spec"], rules) {
			t.Errorf("PrometheusRule spec differs from deploy/prometheus/dicomgw-rules.yml")
		}
		groups, _ := values(pr).get("spec", "groups").([]any)
		for _, g := range groups {
			required(t, "PrometheusRule group", g.(map[string]any), "name", "rules")
			for _, r := range g.(map[string]any)["rules"].([]any) {
				required(t, "PrometheusRule rule", r.(map[string]any), "alert", "expr")
			}
		}
		if len(groups) == 0 {
			t.Errorf("PrometheusRule without groups")
		}
	}
	dash := m.configMaps[func() string {
		for n := range m.configMaps {
			if strings.HasSuffix(n, "-dashboard") {
				return n
			}
		}
		return ""
	}()]
	if (dash != nil) != v.boolean("metrics", "grafanaDashboard", "enabled") {
		t.Errorf("dashboard ConfigMap %v, not as the values ask", dash != nil)
	}
	if dash != nil {
		b, err := os.ReadFile(path("deploy/grafana/dicomgw-dashboard.json"))
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimSpace(dash.Data["dicomgw-dashboard.json"]) != strings.TrimSpace(string(b)) {
			t.Errorf("dashboard ConfigMap differs from deploy/grafana/dicomgw-dashboard.json")
		}
		if dash.Labels["grafana_dashboard"] != "1" {
			t.Errorf("dashboard ConfigMap labels %v", dash.Labels)
		}
	}
}

func required(t *testing.T, what string, o map[string]any, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if x, ok := o[k]; !ok || x == nil || x == "" {
			t.Errorf("%s: required field %q missing", what, k)
		}
	}
}

// checkDrainPods: one per drain ordinal, on that replica's PVC, DICOM on
// loopback only, with the same security as the StatefulSet's pods.
func checkDrainPods(t *testing.T, v values, m *manifests, sts *appsv1.StatefulSet) {
	t.Helper()
	ordinals, _ := v.get("drain", "ordinals").([]any)
	if len(m.pods) != len(ordinals) {
		t.Errorf("%d drain pods for ordinals %v", len(m.pods), ordinals)
	}
	for _, o := range ordinals {
		p := m.pods[fmt.Sprintf("%s-drain-%v", sts.Name, o)]
		if p == nil {
			t.Errorf("no drain pod for ordinal %v", o)
			continue
		}
		checkPodSecurity(t, p.Name, &p.Spec, &p.Spec.Containers[0])
		claim := ""
		for _, vol := range p.Spec.Volumes {
			if vol.Name == "spool" && vol.PersistentVolumeClaim != nil {
				claim = vol.PersistentVolumeClaim.ClaimName
			}
		}
		// The StatefulSet names its PVCs <template>-<statefulset>-<ordinal>.
		if want := fmt.Sprintf("spool-%s-%v", sts.Name, o); claim != want {
			t.Errorf("drain pod %s uses PVC %q, want %q", p.Name, claim, want)
		}
		if args := p.Spec.Containers[0].Args; !slices.Contains(args, "--listen=127.0.0.1:11112") || !slices.Contains(args, "--tls-listen=") {
			t.Errorf("drain pod %s args %q: DICOM must be on loopback only", p.Name, args)
		}
		// The flags file's console runs in a drain pod too (its dead
		// letters want an operator): its port is declared, for
		// kubectl port-forward.
		consolePort := int32(0)
		for _, cp := range p.Spec.Containers[0].Ports {
			if cp.Name == "console" {
				consolePort = cp.ContainerPort
			}
		}
		want := int32(0)
		if v.boolean("console", "enabled") {
			want = int32(v.num("console", "port"))
		}
		if consolePort != want {
			t.Errorf("drain pod %s console port %d, want %d (console %v)", p.Name, consolePort, want, v.get("console"))
		}
	}
}

// checkChartSecrets: the Secrets the chart makes hold what the flags name.
func checkChartSecrets(t *testing.T, v values, m *manifests) {
	t.Helper()
	for name, s := range m.secrets {
		if len(s.Data)+len(s.StringData) == 0 {
			t.Errorf("Secret %s is empty", name)
		}
		if s.Type == corev1.SecretTypeTLS {
			for _, k := range []string{"tls.crt", "tls.key"} {
				if len(s.Data[k]) == 0 {
					t.Errorf("TLS Secret %s has no %s", name, k)
				}
			}
		}
	}
	if v.str("stow", "auth", "type") != "none" && v.str("stow", "auth", "existingSecret") == "" && len(m.secrets) == 0 {
		t.Errorf("no STOW-RS credentials Secret")
	}
}
