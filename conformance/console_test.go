package conformance

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// chromiumPath is the browser the console tests drive: the system's
// (Debian package chromium), never one downloaded by Playwright.
const chromiumPath = "/usr/bin/chromium"

// consoleArtifacts is where the console tests keep their screenshots for
// review (test-artifacts/ is ignored by git).
func consoleArtifacts(t testing.TB) string {
	dir := filepath.Join(harness.RepoRoot(), "test-artifacts", "console")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// htpasswdUsers writes a users file for the console with htpasswd -nbB, as
// an administrator would.
func htpasswdUsers(t testing.TB, user, password string) string {
	t.Helper()
	htpasswd, err := exec.LookPath("htpasswd")
	if err != nil {
		t.Fatal("htpasswd is not installed: install the Debian package apache2-utils (scripts/install-test-deps.sh does it)")
	}
	out, err := exec.Command(htpasswd, "-nbB", "-C", "6", user, password).Output()
	if err != nil {
		t.Fatalf("htpasswd: %v", err)
	}
	path := filepath.Join(t.TempDir(), "console-users")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// patientData is what the console must never show of the files sent: every
// person name (and each of its components of four characters or more) and
// every patient ID, as dcmdump reads them.
func patientData(t testing.TB, files ...string) []string {
	t.Helper()
	dcmdump := needTool(t, "dcmdump")
	seen := map[string]bool{}
	var out []string
	add := func(s string) {
		s = strings.TrimSpace(s)
		if len(s) >= 4 && !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	value := regexp.MustCompile(`^\s*\(([0-9a-f]{4}),([0-9a-f]{4})\) (PN|LO|SH) \[(.*)\]`)
	for _, f := range files {
		b, err := exec.Command(dcmdump, "-q", "+U8", f).Output()
		if err != nil {
			t.Fatalf("dcmdump %s: %v", f, err)
		}
		sc := bufio.NewScanner(bytes.NewReader(b))
		for sc.Scan() {
			m := value.FindStringSubmatch(sc.Text())
			if m == nil {
				continue
			}
			tag := m[1] + "," + m[2]
			switch {
			case m[3] == "PN":
				add(m[4])
				for _, part := range strings.FieldsFunc(m[4], func(r rune) bool { return r == '^' || r == '=' || r == ' ' }) {
					add(part)
				}
			case tag == "0010,0020", tag == "0010,1000": // Patient ID, Other Patient IDs
				for _, id := range strings.Split(m[4], `\`) {
					add(id)
				}
			}
		}
	}
	return out
}

// TestConsoleBrowser drives the operator console in headless Chromium
// against a live gateway: storescu sends real objects as CT2, the gateway
// forwards them to a real Orthanc (STOW-RS) and to a PACS that is down
// (dead letters after 2 s of retries); once the PACS (dcmtk's storescp) is
// back, console-check.js logs in, compares the overview with /metrics,
// finds the study, retries the dead letters from the page, checks the
// refusals of actions without a session or token, and looks for patient
// names and IDs on every page and URL. Screenshots: test-artifacts/console.
func TestConsoleBrowser(t *testing.T) {
	storescu := needTool(t, "storescu")
	node, dir := nodeScript(t)
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "playwright-core")); err != nil {
		t.Fatalf("playwright-core is not installed in %s: run scripts/install-test-deps.sh (npm ci there)", dir)
	}
	if _, err := os.Stat(chromiumPath); err != nil {
		t.Fatalf("%s is missing: install the Debian package chromium (scripts/install-test-deps.sh does it)", chromiumPath)
	}
	const user, password, callingAE = "operator", "correct horse battery staple", "CT2"
	users := htpasswdUsers(t, user, password)

	o := startOrthanc(t, nil)
	pacsPort, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	g := startGateway(t, t.TempDir(),
		"--destination", "orthanc="+o.BaseURL(),
		"--destination", fmt.Sprintf("pacs=dicom://PACS@127.0.0.1:%d retry-for=2s retry-min=200ms retry-max=500ms", pacsPort),
		"--route", "{} -> orthanc,pacs",
		"--console-listen", "127.0.0.1:0", "--console-users-file", users)
	rec, err := g.WaitLog("console listening", 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	consoleURL := "http://" + rec["addr"].(string)

	// One study of three instances (the corpus's CT, MR and CR are three
	// studies; the Find step asks for the CT's) and two more objects.
	var files []string
	var sent []harness.CorpusFile
	profiles := t.TempDir()
	for _, name := range []string{"ct-explicit-le.dcm", "mr-implicit-le.dcm", "cr-explicit-le-noext", "edge-charset-iso-ir-192-utf8.dcm"} {
		cf := corpusFile(t, name)
		if !storescuCanSend(cf) {
			continue
		}
		if r := storescuSend(t, storescu, profiles, cf, callingAE, g.Addr); r.Code != 0 {
			t.Fatalf("%s: %v", cf.Name, r)
		}
		files = append(files, cf.Path)
		sent = append(sent, cf)
	}
	if _, err := o.WaitInstances(len(sent), 30*time.Second); err != nil {
		t.Fatalf("Orthanc: %v", err)
	}
	// Every object dead for the PACS.
	deadline := time.Now().Add(30 * time.Second)
	for {
		m, err := g.Scrape()
		if err == nil && m.Get("dicomgw_destination_dead_objects", `destination="pacs"`) == float64(len(sent)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the PACS's deliveries did not all become dead letters: %v", m.Get("dicomgw_destination_dead_objects", `destination="pacs"`))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// The PACS is back, on the port the destination names.
	pacsDir := t.TempDir()
	scp := exec.Command("storescp", "-aet", "PACS", "-od", pacsDir, fmt.Sprint(pacsPort))
	p, err := harness.StartProcess(scp, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Kill(); <-p.Exited() })
	if err := harness.WaitListening(fmt.Sprintf("127.0.0.1:%d", pacsPort), 10*time.Second, p.Exited()); err != nil {
		t.Fatalf("storescp: %v", err)
	}

	var sops []string
	study := corpusFile(t, "ct-explicit-le.dcm").StudyInstanceUID
	for _, cf := range sent {
		if cf.StudyInstanceUID == study {
			sops = append(sops, cf.SOPInstanceUID)
		}
	}
	forbidden := patientData(t, files...)
	if len(forbidden) < 4 {
		t.Fatalf("the files sent have too little patient data to look for: %q", forbidden)
	}
	artifacts := consoleArtifacts(t)
	task := map[string]any{
		"url": consoleURL, "metricsURL": "http://" + g.MetricsAddr + "/metrics", "chromium": chromiumPath,
		"user": user, "password": password, "study": study, "sops": sops, "retryOne": sops[0],
		"up": "orthanc", "down": "pacs", "callingAE": callingAE, "forbidden": forbidden, "artifacts": artifacts,
	}
	// The study's instances are what Find and the single retry look at;
	// "retry all of one reason" then takes the rest (every object sent).
	task["total"] = len(sent)
	in, _ := json.Marshal(task)
	cmd := exec.Command(node, "console-check.js")
	cmd.Dir = dir
	cmd.Stdin = bytes.NewReader(in)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	checks := 0
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		var r struct {
			Check string
			OK    bool
		}
		if json.Unmarshal([]byte(line), &r) != nil {
			continue
		}
		checks++
		if r.OK {
			t.Logf("ok: %s", r.Check)
		} else {
			t.Errorf("console: %s", line)
		}
	}
	if err != nil || checks < 15 {
		t.Fatalf("console-check.js: %v (%d checks)\nstdout:\n%s\nstderr:\n%s", err, checks, out, harness.Tail(stderr.String(), 4000))
	}
	t.Logf("screenshots in %s", artifacts)

	// The PACS has every object now: the one retried alone and the rest.
	deadline = time.Now().Add(30 * time.Second)
	for {
		entries, _ := os.ReadDir(pacsDir)
		if len(entries) == len(sent) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("storescp holds %d objects, want %d", len(entries), len(sent))
		}
		time.Sleep(200 * time.Millisecond)
	}
	// Each action is in the log with the user who did it.
	acts := g.LogRecords("console: dead letters re-queued")
	if len(acts) != 2 {
		t.Fatalf("%d re-queue records in the log, want 2", len(acts))
	}
	total := 0.0
	for _, a := range acts {
		if a["user"] != user {
			t.Errorf("re-queue logged for user %v, want %s", a["user"], user)
		}
		total += a["done"].(float64)
	}
	if total != float64(len(sent)) {
		t.Errorf("%v dead letters re-queued in all, want %d", total, len(sent))
	}
	// And nothing of a patient in the log either.
	for _, f := range forbidden {
		if strings.Contains(g.Logs(), f) {
			t.Errorf("the gateway's log holds patient data %q", f)
		}
	}
}
