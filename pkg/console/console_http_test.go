package console

import (
	"bufio"
	"errors"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"golang.org/x/crypto/bcrypt"

	"github.com/dicomgw/dicomgw/pkg/auth"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/ledger"
)

// memSource is a Source in memory: dead letters that Retry and Purge take
// away, and the queries Trace was asked.
type memSource struct {
	mu      sync.Mutex
	objs    []ledger.ObjectState
	traced  []ledger.Query
	retried []string // id/dest
	purged  []string
	fail    error // Retry and Purge fail with it when set
}

func (s *memSource) Trace(q ledger.Query) ([]ledger.ObjectState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.traced = append(s.traced, q)
	return s.objs, nil
}

func (s *memSource) DeadLetters(dest string, limit int) ([]ledger.ObjectState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []ledger.ObjectState
	for _, o := range s.objs {
		for _, d := range o.Deliveries {
			if d.State == ledger.StateDead && (dest == "" || d.Destination == dest) {
				out = append(out, o)
				break
			}
		}
	}
	return out, nil
}

func (s *memSource) Retry(id, dest string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	for i := range s.objs {
		for j := range s.objs[i].Deliveries {
			if d := &s.objs[i].Deliveries[j]; s.objs[i].ID == id && d.Destination == dest && d.State == ledger.StateDead {
				d.State = ledger.StatePending
				s.retried = append(s.retried, id+"/"+dest)
				return nil
			}
		}
	}
	return ledger.ErrNotDead
}

func (s *memSource) Purge(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fail != nil {
		return s.fail
	}
	for i, o := range s.objs {
		if o.ID == id {
			s.objs = append(s.objs[:i], s.objs[i+1:]...)
			s.purged = append(s.purged, id)
			return nil
		}
	}
	return ledger.ErrNotFound
}

func (s *memSource) Paused(dest string) (bool, string) {
	if dest == "kheops" {
		return true, "not_dicom_answer: a login page"
	}
	return false, ""
}

func (s *memSource) LastFailure(string) (time.Time, string) { return time.Time{}, "" }

const (
	idA = "18ee5acb82ba85b8-00026f16"
	idB = "18ee5acb829d3e58-00012fd6"
)

func deadObj(id, sop, calling string, reasons map[string]string) ledger.ObjectState {
	o := ledger.ObjectState{Object: ledger.Object{ID: id, SOPInstanceUID: sop, StudyInstanceUID: "1.2.3", CallingAE: calling, CalledAE: "DICOMGW",
		Received: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC)}}
	for dest, reason := range reasons {
		o.Deliveries = append(o.Deliveries, ledger.DeliveryState{Destination: dest, State: ledger.StateDead, DeadReason: reason, DeadAt: o.Received.Add(time.Minute)})
	}
	return o
}

// fixture is a console behind an httptest server, with a clock the test
// moves.
type fixture struct {
	t      *testing.T
	c      *Console
	src    *memSource
	reg    *prometheus.Registry
	srv    *httptest.Server
	now    time.Time
	mu     sync.Mutex
	client *http.Client
}

func (f *fixture) clock() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *fixture) advance(d time.Duration) {
	f.mu.Lock()
	f.now = f.now.Add(d)
	f.mu.Unlock()
}

func newFixture(t *testing.T, cfg Config) *fixture {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte("right"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	users := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(users, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	a, err := auth.New(auth.Config{UsersFile: users})
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, now: time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)}
	f.src = &memSource{}
	f.reg = prometheus.NewRegistry()
	cfg.Source, cfg.Gatherer, cfg.Now = f.src, f.reg, f.clock
	if f.c, err = New(cfg, a, nil, f.reg); err != nil {
		t.Fatal(err)
	}
	f.srv = httptest.NewServer(f.c.Handler())
	t.Cleanup(f.srv.Close)
	f.client = f.newClient()
	return f
}

func (f *fixture) newClient() *http.Client {
	return &http.Client{Jar: newJar(f.t), CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
}

func (f *fixture) get(c *http.Client, path string) (*http.Response, string) {
	f.t.Helper()
	resp, err := c.Get(f.srv.URL + path)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

func (f *fixture) post(c *http.Client, path string, form url.Values, hdr ...string) (*http.Response, string) {
	f.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, f.srv.URL+path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

var (
	tokenRE = regexp.MustCompile(`name="login_token" value="([^"]+)"`)
	csrfRE  = regexp.MustCompile(`name="csrf" value="([^"]+)"`)
)

func (f *fixture) login(c *http.Client, user, pass, next string) *http.Response {
	f.t.Helper()
	_, page := f.get(c, "/login")
	m := tokenRE.FindStringSubmatch(page)
	if m == nil {
		f.t.Fatalf("no login token:\n%s", page)
	}
	resp, _ := f.post(c, "/login", url.Values{"login_token": {m[1]}, "username": {user}, "password": {pass}, "next": {next}})
	return resp
}

func (f *fixture) csrf(c *http.Client) string {
	f.t.Helper()
	_, page := f.get(c, "/dead")
	m := csrfRE.FindStringSubmatch(page)
	if m == nil {
		f.t.Fatalf("no CSRF token on the dead letters page:\n%s", page)
	}
	return m[1]
}

func TestLoginCookiesAndNext(t *testing.T) {
	for _, secure := range []bool{false, true} {
		f := newFixture(t, Config{Secure: secure})
		if resp := f.login(f.client, "alice", "wrong", "/"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("wrong password: %s", resp.Status)
		}
		if resp := f.login(f.client, "mallory", "right", "/"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("unknown user: %s", resp.Status)
		}
		resp := f.login(f.client, "alice", "right", "/find?study=1.2.3")
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/find?study=1.2.3" {
			t.Fatalf("login: %s to %q", resp.Status, resp.Header.Get("Location"))
		}
		var ck *http.Cookie
		for _, c := range resp.Cookies() {
			if c.Name == sessionCookie {
				ck = c
			}
		}
		if ck == nil || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure != secure {
			t.Errorf("session cookie %+v (Secure should be %v)", ck, secure)
		}
	}
	// A token that does not match its cookie: refused, whatever the password.
	f := newFixture(t, Config{})
	f.get(f.client, "/login")
	resp, _ := f.post(f.client, "/login", url.Values{"login_token": {"forged"}, "username": {"alice"}, "password": {"right"}})
	if resp.StatusCode != http.StatusForbidden {
		t.Errorf("login with a forged token: %s", resp.Status)
	}
	for next, want := range map[string]string{"//evil.example/x": "/", "https://evil.example": "/", "/\\evil.example": "/", "": "/", "/dead?destination=pacs": "/dead?destination=pacs"} {
		if got := safeNext(next); got != want {
			t.Errorf("safeNext(%q) = %q, want %q", next, got, want)
		}
	}
}

func TestLoginThrottle(t *testing.T) {
	f := newFixture(t, Config{})
	for i := range maxFailures {
		if resp := f.login(f.client, "alice", "guess"+strconv.Itoa(i), "/"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %s", i, resp.Status)
		}
	}
	if resp := f.login(f.client, "alice", "right", "/"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the right password after %d failures: %s, want 429", maxFailures, resp.Status)
	}
	f.advance(failureWindow)
	if resp := f.login(f.client, "alice", "right", "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the window: %s", resp.Status)
	}
}

func TestSessionsExpire(t *testing.T) {
	f := newFixture(t, Config{SessionIdle: 10 * time.Minute, SessionMax: time.Hour})
	f.login(f.client, "alice", "right", "/")
	for range 7 { // used every 9 minutes: 63 minutes after the login
		f.advance(9 * time.Minute)
		resp, _ := f.get(f.client, "/")
		if f.clock().Sub(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)) <= time.Hour {
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("a session in use, %v after its login: %s", f.clock().Sub(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)), resp.Status)
			}
		} else if resp.StatusCode != http.StatusSeeOther || !strings.HasPrefix(resp.Header.Get("Location"), "/login?next=") {
			t.Fatalf("a session past SessionMax: %s %q", resp.Status, resp.Header.Get("Location"))
		}
	}
	f.login(f.client, "alice", "right", "/")
	f.advance(11 * time.Minute)
	if resp, _ := f.get(f.client, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a session idle past SessionIdle: %s", resp.Status)
	}
	// Logout ends it at once.
	f.login(f.client, "alice", "right", "/")
	csrf := f.csrf(f.client)
	if resp, _ := f.post(f.client, "/logout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("logout: %s", resp.Status)
	}
	if resp, _ := f.get(f.client, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after logout: %s", resp.Status)
	}
}

func TestPagesNeedALoginAndSendSecurityHeaders(t *testing.T) {
	f := newFixture(t, Config{})
	for _, p := range []string{"/", "/find", "/dead", "/associations", "/config"} {
		resp, _ := f.get(f.client, p)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login?next="+url.QueryEscape(p) {
			t.Errorf("GET %s without a session: %s %q", p, resp.Status, resp.Header.Get("Location"))
		}
	}
	f.login(f.client, "alice", "right", "/")
	for _, p := range []string{"/", "/find", "/dead", "/associations", "/config", "/login"} {
		resp, page := f.get(f.client, p)
		if p == "/login" { // logged in: on to the console
			if resp.StatusCode != http.StatusSeeOther {
				t.Errorf("GET /login with a session: %s", resp.Status)
			}
			continue
		}
		if resp.StatusCode != http.StatusOK || !strings.Contains(page, `id="main"`) {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
		h := resp.Header
		if !strings.Contains(h.Get("Content-Security-Policy"), "default-src 'self'") || h.Get("X-Frame-Options") != "DENY" || h.Get("Cache-Control") != "no-store" {
			t.Errorf("GET %s: headers %v", p, h)
		}
	}
}

func TestActionsNeedSessionTokenAndSameSite(t *testing.T) {
	f := newFixture(t, Config{})
	f.src.objs = []ledger.ObjectState{deadObj(idA, "1.2.3.1", "CT2", map[string]string{"pacs": "refused"})}
	form := url.Values{"action": {"retry"}, "scope": {"selected"}, "sel": {idA + "/pacs"}, "confirm": {"yes"}}
	if resp, _ := f.post(f.client, "/dead/act", form); resp.StatusCode != http.StatusForbidden {
		t.Errorf("without a session: %s", resp.Status)
	}
	f.login(f.client, "alice", "right", "/")
	csrf := f.csrf(f.client)
	if resp, _ := f.post(f.client, "/dead/act", form); resp.StatusCode != http.StatusForbidden {
		t.Errorf("without the CSRF token: %s", resp.Status)
	}
	form.Set("csrf", "x"+csrf[1:])
	if resp, _ := f.post(f.client, "/dead/act", form); resp.StatusCode != http.StatusForbidden {
		t.Errorf("with a wrong CSRF token: %s", resp.Status)
	}
	form.Set("csrf", csrf)
	if resp, _ := f.post(f.client, "/dead/act", form, "Origin", "https://evil.example"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("from another origin: %s", resp.Status)
	}
	if resp, _ := f.post(f.client, "/dead/act", form, "Sec-Fetch-Site", "cross-site"); resp.StatusCode != http.StatusForbidden {
		t.Errorf("cross-site: %s", resp.Status)
	}
	// Another user's token is not this session's.
	other := f.newClient()
	f.login(other, "alice", "right", "/")
	if resp, _ := f.post(other, "/dead/act", form); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another session's token: %s", resp.Status)
	}
	if len(f.src.retried) != 0 {
		t.Fatalf("refused actions retried %v", f.src.retried)
	}
	if resp, _ := f.post(f.client, "/dead/act", form, "Origin", f.srv.URL); resp.StatusCode != http.StatusSeeOther || len(f.src.retried) != 1 {
		t.Fatalf("the right token: %s, retried %v", resp.Status, f.src.retried)
	}
}

func TestDeadLettersConfirmAndAct(t *testing.T) {
	f := newFixture(t, Config{})
	f.src.objs = []ledger.ObjectState{
		deadObj(idA, "1.2.3.1", "CT2", map[string]string{"pacs": "still failing after 5 attempts over 6s: refused", "kheops": "0xA700"}),
		deadObj(idB, "1.2.3.2", "CT2", map[string]string{"pacs": "still failing after 7 attempts over 9s: refused"}),
	}
	f.login(f.client, "alice", "right", "/")
	_, page := f.get(f.client, "/dead")
	key := reasonKey("still failing after 5 attempts over 6s: refused")
	if key != reasonKey("still failing after 7 attempts over 9s: refused") || !strings.Contains(page, `data-reason="`+key+`"`) {
		t.Fatalf("reasons that differ in their numbers are not one group:\n%s", page)
	}
	csrf := f.csrf(f.client)
	form := url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"reason"}, "destination": {"pacs"}, "reason": {key}}
	resp, page := f.post(f.client, "/dead/confirm", form)
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Retry 2 dead letter(s)?") || len(f.src.retried) != 0 {
		t.Fatalf("confirmation: %s, retried %v\n%s", resp.Status, f.src.retried, page)
	}
	if resp, _ := f.post(f.client, "/dead/act", form); resp.StatusCode != http.StatusSeeOther || len(f.src.retried) != 0 {
		t.Fatalf("act without confirm=yes: %s, retried %v", resp.Status, f.src.retried)
	}
	form.Set("confirm", "yes")
	f.post(f.client, "/dead/act", form)
	if len(f.src.retried) != 2 {
		t.Fatalf("retried %v, want both of pacs", f.src.retried)
	}
	if _, page := f.get(f.client, "/dead"); !strings.Contains(page, "Re-queued 2 dead letter(s).") {
		t.Errorf("no flash after the retry:\n%s", page)
	}
	// Purge: one object dead for two destinations, both selected: one purge.
	f.src.objs = []ledger.ObjectState{deadObj(idA, "1.2.3.1", "CT2", map[string]string{"pacs": "refused", "kheops": "0xA700"})}
	f.post(f.client, "/dead/act", url.Values{"csrf": {csrf}, "action": {"purge"}, "scope": {"selected"}, "sel": {idA + "/pacs", idA + "/kheops"}, "confirm": {"yes"}})
	if len(f.src.purged) != 1 {
		t.Fatalf("purged %v, want the object once", f.src.purged)
	}
	// A failure is reported.
	f.src.objs = []ledger.ObjectState{deadObj(idB, "1.2.3.2", "CT2", map[string]string{"pacs": "refused"})}
	f.src.fail = errors.New("disk on fire")
	f.post(f.client, "/dead/act", url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "sel": {idB + "/pacs"}, "confirm": {"yes"}})
	if _, page := f.get(f.client, "/dead"); !strings.Contains(page, "1 could not be: disk on fire") {
		t.Errorf("the failure is not reported:\n%s", page)
	}
	// Nonsense is refused before anything is asked of the source.
	for _, bad := range []url.Values{
		{"action": {"delete"}, "scope": {"selected"}, "sel": {idB + "/pacs"}},
		{"action": {"retry"}, "scope": {"selected"}, "sel": {"../../etc/passwd/pacs"}},
		{"action": {"retry"}, "scope": {"reason"}, "destination": {"PACS!"}, "reason": {key}},
		{"action": {"retry"}, "scope": {"selected"}},
	} {
		bad.Set("csrf", csrf)
		bad.Set("confirm", "yes")
		if resp, _ := f.post(f.client, "/dead/act", bad); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("%v: %s", bad, resp.Status)
		}
		if _, page := f.get(f.client, "/dead"); !strings.Contains(page, "Nothing done") {
			t.Errorf("%v: no 'Nothing done'", bad)
		}
	}
}

func TestFindChecksItsInput(t *testing.T) {
	f := newFixture(t, Config{})
	f.login(f.client, "alice", "right", "/")
	for q, want := range map[string]string{
		"study=" + url.QueryEscape("1.2.3';DROP"):   "is not a UID",
		"sop=" + strings.Repeat("1", 65):            "is not a UID",
		"calling=" + url.QueryEscape(`CT\2`):        "is not an AE title",
		"from=yesterday":                            "is not a time",
		"from=2026-12-05T10:00&to=2026-12-05T09:00": "ends before it starts",
	} {
		resp, page := f.get(f.client, "/find?"+q)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(html.UnescapeString(page), want) {
			t.Errorf("find %s: %s, want 400 saying %q", q, resp.Status, want)
		}
	}
	if len(f.src.traced) != 0 {
		t.Fatalf("a bad search reached the ledger: %+v", f.src.traced)
	}
	f.get(f.client, "/find?study=1.2.3&calling=CT2&from=2026-12-05T10:00&to=2026-12-05T11:30")
	want := ledger.Query{StudyInstanceUID: "1.2.3", CallingAE: "CT2", From: time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC),
		To: time.Date(2026, 12, 5, 11, 30, 0, 0, time.UTC), Limit: maxFound + 1}
	if len(f.src.traced) != 1 || f.src.traced[0] != want {
		t.Fatalf("queries %+v, want %+v", f.src.traced, want)
	}
}

// What a peer or a destination says is shown escaped, never as markup.
func TestPeerWordsAreEscaped(t *testing.T) {
	f := newFixture(t, Config{})
	f.src.objs = []ledger.ObjectState{deadObj(idA, "1.2.3.1", "<b>CT</b>", map[string]string{"pacs": `<script>alert(1)</script>`})}
	f.c.cfg.Associations.Record(dimse.Summary{CallingAE: `<img src=x onerror=alert(1)>`, CalledAE: "DICOMGW", Outcome: dimse.EndRejected})
	f.login(f.client, "alice", "right", "/")
	for _, p := range []string{"/dead", "/find?sop=1.2.3.1", "/associations"} {
		_, page := f.get(f.client, p)
		for _, raw := range []string{"<script>alert", "<b>CT</b>", "<img src=x"} {
			if strings.Contains(page, raw) {
				t.Errorf("%s holds %q unescaped", p, raw)
			}
		}
	}
	_, page := f.get(f.client, "/associations")
	if !strings.Contains(page, "&lt;img src=x onerror=alert(1)&gt;") {
		t.Errorf("the association's calling AE is not shown escaped:\n%s", page)
	}
}

// Every number of the overview is the series /metrics serves.
func TestOverviewIsTheRegistry(t *testing.T) {
	f := newFixture(t, Config{})
	for _, d := range []string{"pacs", "kheops"} {
		info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dicomgw_destination_info", ConstLabels: prometheus.Labels{"destination": d, "kind": "stow"}})
		info.Set(1)
		f.reg.MustRegister(info)
	}
	up := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dicomgw_forward_destination_up"}, []string{"destination"})
	queued := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dicomgw_destination_queued_objects"}, []string{"destination"})
	inst := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dicomgw_forward_instances_total"}, []string{"destination", "outcome"})
	used := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dicomgw_spool_used_bytes"})
	active := prometheus.NewGauge(prometheus.GaugeOpts{Name: "dicomgw_associations_active"})
	f.reg.MustRegister(up, queued, inst, used, active)
	up.WithLabelValues("pacs").Set(1)
	up.WithLabelValues("kheops").Set(0)
	queued.WithLabelValues("pacs").Set(12)
	queued.WithLabelValues("kheops").Set(345)
	// The console's first sample (at New) had no such counter: all of it
	// counts, over the time since the start.
	inst.WithLabelValues("pacs", "delivered").Add(7)
	f.c.sample()
	inst.WithLabelValues("pacs", "delivered").Add(40)
	inst.WithLabelValues("kheops", "paused").Add(3)
	used.Set(1 << 30)
	active.Set(2)

	f.login(f.client, "alice", "right", "/")
	_, page := f.get(f.client, "/")
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(f.reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	exposed := map[string]float64{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, _ := strconv.ParseFloat(line[i+1:], 64)
		exposed[line[:i]] = v
	}
	shown := regexp.MustCompile(`data-metric="([^"]+)" data-value="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(shown) != 6 { // up and queued of two destinations, the spool in use, associations active
		t.Fatalf("%d numbers on the overview:\n%s", len(shown), page)
	}
	for _, m := range shown {
		key := html.UnescapeString(m[1])
		v, ok := exposed[key]
		if !ok {
			t.Errorf("%s is on the overview, not in /metrics", key)
			continue
		}
		if got, _ := strconv.ParseFloat(m[2], 64); got != v {
			t.Errorf("%s: overview %v, /metrics %v", key, got, v)
		}
	}
	inc := regexp.MustCompile(`data-increase="([^"]+)" data-value="([^"]+)"`).FindAllStringSubmatch(page, -1)
	got := map[string]string{}
	for _, m := range inc {
		got[html.UnescapeString(m[1])] = m[2]
	}
	if got[`dicomgw_forward_instances_total{destination="pacs",outcome="delivered"}`] != "47" {
		t.Errorf("delivered since the first sample: %v", got)
	}
	if !strings.Contains(page, "not_dicom_answer: a login page") || !strings.Contains(page, `class="badge paused"`) {
		t.Errorf("the paused destination's reason is not shown")
	}
}

func TestHistoryIncrease(t *testing.T) {
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	h := newHistory(func() time.Time { return now }, time.Hour+15*time.Second)
	for i := range 300 { // 75 min of samples, every 15 s, a counter +1 each
		h.add(series{"c": float64(i)})
		now = now.Add(15 * time.Second)
	}
	now = now.Add(-15 * time.Second) // at the last sample
	inc := h.increase("c", 299, time.Hour)
	if inc.Value != 240 || inc.Window != time.Hour {
		t.Errorf("increase over the last hour: %+v, want 240 over 1h", inc)
	}
	if inc := h.increase("new", 5, time.Hour); inc.Value != 5 {
		t.Errorf("a counter the baseline lacks: %+v, want its value", inc)
	}
	if len(h.samples) > 242 {
		t.Errorf("%d samples kept for an hour of 15 s samples", len(h.samples))
	}
	if got := seriesKey("m", "outcome", "a\"b", "destination", "x\\y"); got != `m{destination="x\\y",outcome="a\"b"}` {
		t.Errorf("seriesKey: %s", got)
	}
}

func TestAssociationsKeepTheLastN(t *testing.T) {
	a := NewAssociations(3)
	for i := range 5 {
		a.Record(dimse.Summary{CallingAE: "AE" + strconv.Itoa(i)})
	}
	var got []string
	for _, s := range a.Recent() {
		got = append(got, s.CallingAE)
	}
	if strings.Join(got, ",") != "AE4,AE3,AE2" {
		t.Errorf("recent %v, want the 3 newest, newest first", got)
	}
}

func newJar(t *testing.T) http.CookieJar {
	j, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return j
}

// Behind a trusted proxy, the client is the address it forwarded for and
// the scheme is the one it says; from anyone else the headers are ignored.
func TestTrustedProxies(t *testing.T) {
	c := &Console{cfg: Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("::1/128")}}}
	for _, tc := range []struct {
		remote, xff, proto string
		client             string
		https              bool
	}{
		{"192.0.2.7:5555", "203.0.113.9", "https", "192.0.2.7", false},                         // not a proxy: its headers are the client's words
		{"10.1.2.3:5555", "", "", "10.1.2.3", false},                                           // a proxy that forwards nothing
		{"10.1.2.3:5555", "203.0.113.9", "https", "203.0.113.9", true},                         // one proxy
		{"10.1.2.3:5555", "198.51.100.1, 203.0.113.9, 10.9.9.9", "http", "203.0.113.9", false}, // the client wrote 198.51.100.1 itself: not believed
		{"[::1]:5555", "garbage, 203.0.113.9", "HTTPS", "203.0.113.9", true},
		{"10.1.2.3:5555", "203.0.113.9, nonsense", "", "10.1.2.3", false}, // garbage last: the proxy's own address
	} {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		if tc.xff != "" {
			r.Header.Set("X-Forwarded-For", tc.xff)
		}
		r.Header.Set("X-Forwarded-Proto", tc.proto)
		if got := c.clientAddr(r); got != tc.client {
			t.Errorf("%s via %s: client %s, want %s", tc.xff, tc.remote, got, tc.client)
		}
		if got := c.viaHTTPS(r); got != tc.https {
			t.Errorf("%s via %s (%s): HTTPS %v, want %v", tc.xff, tc.remote, tc.proto, got, tc.https)
		}
	}
	// The throttle counts the forwarded client: one client's failures do
	// not lock out another behind the same proxy.
	f := newFixture(t, Config{TrustedProxies: []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}})
	loginAs := func(client, pass string) int {
		_, page := f.get(f.client, "/login")
		m := tokenRE.FindStringSubmatch(page)
		resp, _ := f.post(f.client, "/login", url.Values{"login_token": {m[1]}, "username": {"alice"}, "password": {pass}}, "X-Forwarded-For", client)
		return resp.StatusCode
	}
	for range maxFailures {
		loginAs("203.0.113.66", "guess")
	}
	if code := loginAs("203.0.113.66", "right"); code != http.StatusTooManyRequests {
		t.Errorf("the guessing client: %d, want 429", code)
	}
	if code := loginAs("203.0.113.10", "right"); code != http.StatusSeeOther {
		t.Errorf("another client behind the same proxy: %d, want 303", code)
	}
}
