package conformance

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
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

// consoleClient is a browser without a browser: a cookie jar, and no
// following of redirects (the test looks at each).
func consoleClient(t testing.TB, roots *x509.CertPool) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{
		Jar:           jar,
		Timeout:       30 * time.Second,
		Transport:     &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

var (
	loginTokenRE = regexp.MustCompile(`name="login_token" value="([^"]+)"`)
	csrfRE       = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
	selRE        = regexp.MustCompile(`name="sel" value="([^"]+)"`)
)

func getPage(t testing.TB, c *http.Client, u string) (int, string) {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func postForm(t testing.TB, c *http.Client, u string, form url.Values) (*http.Response, string) {
	t.Helper()
	resp, err := c.PostForm(u, form)
	if err != nil {
		t.Fatalf("POST %s: %v", u, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// consoleLogin logs in with the login form and returns the answer to its
// POST (303 when it worked).
func consoleLogin(t testing.TB, c *http.Client, base, user, password string) *http.Response {
	t.Helper()
	_, page := getPage(t, c, base+"/login")
	m := loginTokenRE.FindStringSubmatch(page)
	if m == nil {
		t.Fatalf("no login token in the login page:\n%s", page)
	}
	resp, _ := postForm(t, c, base+"/login", url.Values{"login_token": {m[1]}, "username": {user}, "password": {password}, "next": {"/"}})
	return resp
}

// TestConsoleHTTPSReloadPurge serves the console over HTTPS with a
// certificate of the hospital's CA: the session cookie is Secure; a user
// added to the users file can log in after a SIGHUP (and one whose line
// was removed cannot), and after a change on disk without one; a dead letter purged from the console leaves the
// spool, the ledger says when, and the log says who.
func TestConsoleHTTPSReloadPurge(t *testing.T) {
	storescu := needTool(t, "storescu")
	pki, err := harness.NewPKI(filepath.Join(t.TempDir(), "ca"), "hospital-ca")
	if err != nil {
		t.Fatal(err)
	}
	cert, err := pki.Server("console")
	if err != nil {
		t.Fatal(err)
	}
	users := htpasswdUsers(t, "alice", "alice-passphrase-1")
	down, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	spoolDir := t.TempDir()
	g := startGateway(t, spoolDir,
		"--destination", fmt.Sprintf("pacs=dicom://PACS@127.0.0.1:%d retry-for=1s retry-min=200ms retry-max=400ms", down),
		"--route", "{} -> pacs",
		"--console-listen", "127.0.0.1:0", "--console-users-file", users,
		"--console-tls-cert", cert.CertFile, "--console-tls-key", cert.KeyFile)
	rec, err := g.WaitLog("console listening", 5*time.Second, nil)
	if err != nil {
		t.Fatal(err)
	}
	if rec["https"] != true {
		t.Fatalf("console listening: %v, want https", rec)
	}
	base := "https://" + rec["addr"].(string)
	c := consoleClient(t, pki.Pool())

	// Plain HTTP on the HTTPS port gets nowhere.
	if resp, err := http.Get("http://" + rec["addr"].(string) + "/login"); err == nil {
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("plain HTTP to the console: %s", resp.Status)
		}
	}
	resp := consoleLogin(t, c, base, "alice", "alice-passphrase-1")
	if resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("alice's login: %s", resp.Status)
	}
	secure := false
	for _, ck := range resp.Cookies() {
		if ck.Name == "dicomgw_session" {
			secure = ck.Secure && ck.HttpOnly && ck.SameSite == http.SameSiteStrictMode
		}
	}
	if !secure {
		t.Errorf("the session cookie is not Secure, HttpOnly and SameSite=Strict: %v", resp.Header["Set-Cookie"])
	}

	// Bob, added to the file, logs in after a SIGHUP; alice, removed, no
	// longer can (her session, made before, stays).
	bob := consoleClient(t, pki.Pool())
	if resp := consoleLogin(t, bob, base, "bob", "bob-passphrase-2"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("bob before the reload: %s, want 401", resp.Status)
	}
	out, err := exec.Command("htpasswd", "-nbB", "-C", "6", "bob", "bob-passphrase-2").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(users, out, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := g.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if _, err := g.WaitLog("config reloaded", 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if resp := consoleLogin(t, bob, base, "bob", "bob-passphrase-2"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("bob after the reload: %s, want 303", resp.Status)
	}
	if resp := consoleLogin(t, consoleClient(t, pki.Pool()), base, "alice", "alice-passphrase-1"); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("alice, removed from the file, after the reload: %s, want 401", resp.Status)
	}
	// Without a signal (a container gets none): the file changes on disk,
	// and within a few seconds carol can log in.
	carol, err := exec.Command("htpasswd", "-nbB", "-C", "6", "carol", "carol-passphrase-3").Output()
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(users, append(out, carol...), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := g.WaitLog("the console's users file or certificate changed: taken", 20*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	if resp := consoleLogin(t, consoleClient(t, pki.Pool()), base, "carol", "carol-passphrase-3"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("carol, added to the file without a SIGHUP: %s, want 303", resp.Status)
	}

	// A dead letter, purged by bob.
	cf := corpusFile(t, "ct-explicit-le.dcm")
	if r := storescuSend(t, storescu, t.TempDir(), cf, "CT2", g.Addr); r.Code != 0 {
		t.Fatal(r)
	}
	waitMetric(t, g, 1, "dicomgw_destination_dead_objects", `destination="pacs"`)
	_, page := getPage(t, bob, base+"/dead")
	csrf, sel := csrfRE.FindStringSubmatch(page), selRE.FindStringSubmatch(page)
	if csrf == nil || sel == nil {
		t.Fatalf("no dead letter to select:\n%s", page)
	}
	form := url.Values{"csrf": {csrf[1]}, "scope": {"selected"}, "sel": {sel[1]}, "action": {"purge"}}
	resp, page = postForm(t, bob, base+"/dead/confirm", form)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Purge 1 dead letter") {
		t.Fatalf("confirmation: %s\n%s", resp.Status, page)
	}
	if n := len(stateObjects(t, spoolDir, "dead")); n != 1 {
		t.Fatalf("%d dead letters in the spool after the confirmation page, want 1 (it must not act)", n)
	}
	form.Set("confirm", "yes")
	if resp, _ = postForm(t, bob, base+"/dead/act", form); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("purge: %s", resp.Status)
	}
	if n := len(stateObjects(t, spoolDir, "dead")); n != 0 {
		t.Fatalf("%d dead letters in the spool after the purge, want 0", n)
	}
	_, page = getPage(t, bob, base+"/dead")
	if !strings.Contains(page, "Purged 1 dead letter") || strings.Contains(page, `name="sel"`) {
		t.Fatalf("after the purge:\n%s", page)
	}
	// The ledger knows it left the spool (once its writer has committed).
	deadline := time.Now().Add(10 * time.Second)
	for {
		var traced []map[string]any // one JSON object per line
		for _, line := range strings.Split(strings.TrimSpace(dicomgwCmd(t, "spool", "trace", "--spool-dir", spoolDir, "--sop", cf.SOPInstanceUID, "--json")), "\n") {
			var o map[string]any
			if err := json.Unmarshal([]byte(line), &o); err != nil {
				t.Fatalf("spool trace: %v: %q", err, line)
			}
			traced = append(traced, o)
		}
		if len(traced) == 1 && traced[0]["left_spool"] != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("spool trace after the purge: %v", traced)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if _, err := g.WaitLog("console: dead letters purged", 5*time.Second, func(r map[string]any) bool { return r["user"] == "bob" && r["done"] == 1.0 }); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, g, 1, "dicomgw_console_actions_total", `action="purge"`, `outcome="done"`)

	// An association in progress is listed as such, with what it did so
	// far; once released, among those that ended.
	cl := dial(t, g.Addr, "HOLDER", dimse.ProposedContext{AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{tsImplicitLE}})
	if _, err := cl.Echo(); err != nil {
		t.Fatal(err)
	}
	_, page = getPage(t, bob, base+"/associations")
	active := regexp.MustCompile(`(?s)<tr class="assoc-active">.*?</tr>`).FindAllString(page, -1)
	if len(active) != 1 || !strings.Contains(active[0], "HOLDER") || !strings.Contains(active[0], "1 echo") {
		t.Fatalf("associations in progress: %q", active)
	}
	if err := cl.Release(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(5 * time.Second)
	for {
		_, page = getPage(t, bob, base+"/associations")
		if !strings.Contains(page, "assoc-active") && regexp.MustCompile(`(?s)<tr class="assoc outcome-released">\s*<td>[^<]*</td>\s*<td>HOLDER</td>`).MatchString(page) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the released association is not among those that ended:\n%s", page)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitMetric(t, g, 2, "dicomgw_console_logins_total", `outcome="failure"`)
}
