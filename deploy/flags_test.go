package deploy

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestFlagsFilesConsoleExample: both flags files (make run's and the
// server's) carry every console flag commented out, none of them on (make
// run must work without a users file), and, uncommented with the files
// they name in place, `dicomgw check-config` accepts them: the example is
// one an operator can turn on by removing the #s.
func TestFlagsFilesConsoleExample(t *testing.T) {
	secrets := writeSecretFiles(t)
	want := []string{"console-listen", "console-session-timeout", "console-tls-cert", "console-tls-key", "console-trusted-proxies", "console-users-file"}
	for _, file := range []string{"deploy/dicomgw.flags", serverFlag} {
		t.Run(file, func(t *testing.T) {
			b, err := os.ReadFile(path(file))
			if err != nil {
				t.Fatal(err)
			}
			text := string(b)
			for name := range parseFlags(t, text) {
				if strings.HasPrefix(name, "console-") {
					t.Errorf("%s: --%s is on: the console must stay off by default", file, name)
				}
			}
			var names, lines []string
			for _, l := range strings.Split(text, "\n") {
				flag, ok := strings.CutPrefix(l, "# --console-")
				if !ok {
					continue
				}
				name, val, _ := strings.Cut("console-"+flag, "=")
				names = append(names, name)
				if file == serverFlag && name != "console-listen" && name != "console-session-timeout" && name != "console-trusted-proxies" && !strings.HasPrefix(val, "/etc/dicomgw/") {
					t.Errorf("%s: --%s=%s is not in /etc/dicomgw (the unit's ConfigurationDirectory)", file, name, val)
				}
				switch name {
				case "console-users-file":
					val = filepath.Join(secrets, "console-users", "users")
				case "console-tls-cert":
					val = filepath.Join(secrets, "console-tls", "tls.crt")
				case "console-tls-key":
					val = filepath.Join(secrets, "console-tls", "tls.key")
				}
				lines = append(lines, "--"+name+"="+val)
			}
			slices.Sort(names)
			if !slices.Equal(names, want) {
				t.Errorf("%s: commented console flags %q, want each of %q once", file, names, want)
			}
			dir := t.TempDir() // make run's relative paths land here
			on := filepath.Join(dir, "console.flags")
			if err := os.WriteFile(on, []byte(text+"\n"+strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, errOut, err := run(t, dir, binary(t), "check-config", "--flagfile", on); err != nil {
				t.Errorf("dicomgw check-config refuses %s with its console lines uncommented: %v\n%s%s\n%s", file, err, out, errOut, strings.Join(lines, "\n"))
			}
		})
	}
}
