package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	unitFile   = "deploy/systemd/dicomgw.service"
	serverFlag = "deploy/etc/dicomgw.flags"
)

// unit is a systemd unit file: section -> key -> values (in order).
type unit map[string]map[string][]string

func readUnit(t *testing.T, file string) unit {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	u := unit{}
	section := ""
	for _, l := range strings.Split(string(b), "\n") {
		l = strings.TrimSpace(l)
		switch {
		case l == "" || strings.HasPrefix(l, "#") || strings.HasPrefix(l, ";"):
		case strings.HasPrefix(l, "[") && strings.HasSuffix(l, "]"):
			section = l[1 : len(l)-1]
			u[section] = map[string][]string{}
		default:
			k, v, ok := strings.Cut(l, "=")
			if !ok || section == "" {
				t.Fatalf("%s: line %q", file, l)
			}
			u[section][k] = append(u[section][k], v)
		}
	}
	return u
}

func (u unit) get(section, key string) (string, bool) {
	v, ok := u[section][key]
	if !ok {
		return "", false
	}
	return v[len(v)-1], true
}

// TestSystemdUnit: the unit has the sandbox and lifecycle settings it
// promises, gives the drain (--shutdown-timeout of the flags file it
// names) time before SIGKILL, keeps the spool in its state directory, and
// systemd-analyze verify accepts it (its security exposure stays low).
func TestSystemdUnit(t *testing.T) {
	u := readUnit(t, path(unitFile))
	want := map[string]string{
		"ExecStart":             "/usr/local/bin/dicomgw serve --flagfile /etc/dicomgw/dicomgw.flags",
		"ExecStartPre":          "/usr/local/bin/dicomgw check-config --flagfile /etc/dicomgw/dicomgw.flags",
		"ExecReload":            "/bin/kill -HUP $MAINPID",
		"KillSignal":            "SIGTERM",
		"Restart":               "on-failure",
		"DynamicUser":           "yes",
		"StateDirectory":        "dicomgw",
		"ProtectSystem":         "strict",
		"ProtectHome":           "yes",
		"PrivateTmp":            "yes",
		"NoNewPrivileges":       "yes",
		"CapabilityBoundingSet": "",
		"AmbientCapabilities":   "",
	}
	for k, w := range want {
		if got, ok := u.get("Service", k); !ok || got != w {
			t.Errorf("[Service] %s=%q, want %q", k, got, w)
		}
	}
	if got, _ := u.get("Install", "WantedBy"); got != "multi-user.target" {
		t.Errorf("WantedBy=%q", got)
	}

	// The flags file it names, as shipped in deploy/etc: accepted, the
	// spool and archive under the state directory, a drain shorter than
	// TimeoutStopSec.
	flagsText, err := os.ReadFile(path(serverFlag))
	if err != nil {
		t.Fatal(err)
	}
	flags := parseFlags(t, string(flagsText))
	state, _ := u.get("Service", "StateDirectory")
	rw, _ := u.get("Service", "ReadWritePaths")
	for _, f := range []string{"spool-dir", "archive-dir"} {
		if !strings.HasPrefix(flags.last(f), "/var/lib/"+state+"/") {
			t.Errorf("%s: --%s=%s is not in the unit's state directory /var/lib/%s", serverFlag, f, flags.last(f), state)
		}
		if !slices.ContainsFunc(strings.Fields(rw), func(p string) bool {
			return strings.HasPrefix(flags.last(f), strings.TrimPrefix(p, "-")+"/")
		}) {
			t.Errorf("%s: --%s=%s is under none of ReadWritePaths=%s: ProtectSystem=strict would make it read-only", serverFlag, f, flags.last(f), rw)
		}
	}
	drain, err := time.ParseDuration(flags.last("shutdown-timeout"))
	if err != nil {
		t.Fatalf("%s: --shutdown-timeout: %v", serverFlag, err)
	}
	stop, _ := u.get("Service", "TimeoutStopSec")
	secs, err := strconv.Atoi(stop)
	if err != nil || time.Duration(secs)*time.Second <= drain {
		t.Errorf("TimeoutStopSec=%s is not longer than --shutdown-timeout %v: systemd would kill the drain", stop, drain)
	}
	for _, f := range []string{serverFlag, "deploy/dicomgw.flags"} {
		mustRun(t, repo, binary(t), "check-config", "--flagfile", path(f))
	}

	sa := tool(t, "systemd-analyze", "apt-get install systemd")
	if _, errOut, err := run(t, repo, sa, "--version"); err != nil {
		t.Skipf("systemd-analyze cannot run in this container: %v %s", err, errOut)
	}
	// verify wants the executables to exist: a copy pointing at the
	// binary built for this test.
	b, _ := os.ReadFile(path(unitFile))
	dir := t.TempDir()
	copyUnit := filepath.Join(dir, "dicomgw.service")
	os.WriteFile(copyUnit, []byte(strings.ReplaceAll(string(b), "/usr/local/bin/dicomgw", binary(t))), 0o644)
	out, errOut, err := run(t, dir, sa, "verify", copyUnit)
	if err != nil || strings.Contains(out+errOut, "dicomgw.service") {
		t.Errorf("systemd-analyze verify: %v\n%s%s", err, out, errOut)
	}
	out, errOut, err = run(t, dir, sa, "security", "--offline=true", "--no-pager", copyUnit)
	m := regexp.MustCompile(`Overall exposure level for dicomgw\.service: ([0-9.]+)`).FindStringSubmatch(out + errOut)
	switch {
	case m == nil:
		t.Logf("systemd-analyze security --offline is not available here (%v); skipped the exposure check", err)
	default:
		if score, _ := strconv.ParseFloat(m[1], 64); score > 2.0 {
			t.Errorf("systemd-analyze security: exposure %s, want at most 2.0 (OK):\n%s", m[1], out)
		}
	}
}
