package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestFlagFilePrecedence: files fill in what the command line does not
// say; later files win for single values; lists collect.
func TestFlagFilePrecedence(t *testing.T) {
	a := writeFile(t, "a.flags", `
# comment
   # indented comment

--ae-title=FROMFILE
--ae-title=SECOND
--max-associations=10
--idle-timeout 90s
--accept-unknown-sop-classes
--calling-ae=CT1@10.0.0.0/8
`)
	b := writeFile(t, "b.flags", "--max-associations=20\n--ae-title=THIRD\n")
	c, _, err := loadConfig("t", []string{"--flagfile", a, "--flagfile=" + b, "--listen", "127.0.0.1:1"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.aeTitles, ","); got != "FROMFILE,SECOND,THIRD" {
		t.Errorf("ae titles %s", got)
	}
	if c.maxAssociations != 20 || c.idleTimeout.String() != "1m30s" || !c.acceptUnknown || c.listen != "127.0.0.1:1" || len(c.callingAEs) != 1 {
		t.Errorf("%+v", c)
	}
	// The command line wins, for lists too.
	c, _, err = loadConfig("t", []string{"--flagfile", a, "--ae-title", "CLI", "--max-associations=3"}, os.Stderr)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.aeTitles, ",") != "CLI" || c.maxAssociations != 3 {
		t.Errorf("%+v", c)
	}
}

// TestFlagFileErrors: every error names the file and the line.
func TestFlagFileErrors(t *testing.T) {
	for content, want := range map[string]string{
		"--ae-title=A\n--ae-titel=B\n":           "bad.flags:2: unknown flag --ae-titel",
		"\n\n--max-associations=many\n":          `bad.flags:3: invalid value "many" for --max-associations`,
		"ae-title=A\n":                           `bad.flags:1: malformed line "ae-title=A": want --name=value`,
		"--AE-TITLE=A\n":                         `bad.flags:1: malformed line`,
		"--max-associations\n":                   "bad.flags:1: flag --max-associations needs a value",
		"--flagfile=/etc/other\n":                "bad.flags:1: --flagfile cannot be used inside a flags file",
		"--idle-timeout=soon\n":                  `bad.flags:1: invalid value "soon" for --idle-timeout`,
		"--accept-unknown-sop-classes=perhaps\n": `bad.flags:1: invalid value "perhaps"`,
	} {
		p := writeFile(t, "bad.flags", content)
		_, _, err := loadConfig("t", []string{"--flagfile", p}, os.Stderr)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want %q", content, err, want)
		}
	}
	if _, _, err := loadConfig("t", []string{"--flagfile", "/no/such/file"}, os.Stderr); err == nil {
		t.Error("missing flags file accepted")
	}
}

func TestCheckConfig(t *testing.T) {
	good := writeFile(t, "good.flags", "--ae-title=KAAPANA\n--calling-ae=CT1@127.0.0.1\n--stow-url=https://kheops.example/api?album=x\n--uid-policy=strict\n")
	code, out, errs := runCmd(t, "check-config", "--flagfile", good)
	if code != 0 || !strings.Contains(out, "configuration OK") || !strings.Contains(out, "--ae-title=KAAPANA") || !strings.Contains(out, "--calling-ae=CT1@127.0.0.1") ||
		!strings.Contains(out, "--uid-policy=strict") {
		t.Fatalf("%d\n%s\n%s", code, out, errs)
	}
	for content, want := range map[string]string{
		"--ae-title=THIS_IS_FAR_TOO_LONG\n": "must be 1 to 16 characters",
		"--calling-ae=CT1@\n":               "nothing after @",
		"--stow-url=ftp://x/\n":             "not an http(s) URL",
		"--max-pdu-length=100\n":            "below 4096",
		"--log-format=xml\n":                "neither text nor json",
		"--uid-policy=lax\n":                "--uid-policy: UID policy \"lax\": want lenient or strict",
		"--no-such=1\n":                     "unknown flag --no-such",
		"--max-connections=40\n--max-connections-per-host=40\n": "40 connections per host (--max-connections-per-host) would let one host take all 40 connections (--max-connections)",
	} {
		p := writeFile(t, "c.flags", content)
		code, _, errs := runCmd(t, "check-config", "--flagfile", p)
		if code != 1 || !strings.Contains(errs, want) {
			t.Errorf("%q: %d %s", content, code, errs)
		}
	}
	if code, _, _ := runCmd(t, "check-config", "--bogus"); code != 2 {
		t.Errorf("bad command line: %d", code)
	}
}

// The example flags file that `make run` uses must stay valid.
func TestExampleFlagsFile(t *testing.T) {
	code, _, errs := runCmd(t, "check-config", "--flagfile", "../../deploy/dicomgw.flags")
	if code != 0 {
		t.Fatalf("deploy/dicomgw.flags: %s", errs)
	}
}
