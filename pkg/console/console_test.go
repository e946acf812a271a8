package console

// The console through its handler, as a browser sees it: a fake Source in
// memory, a real Prometheus registry, users with bcrypt hashes in a users
// file, and a clock the test moves. Requests go straight to
// Console.Handler() through httptest recorders, each from the address the
// test chooses (the login throttle counts by address).

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"html"
	"io"
	"maps"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
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

const (
	testHost  = "console.test"
	alicePass = "correct horse"
	bobPass   = "battery staple"
)

// t0 is when every test's clock starts.
var t0 = time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type retryCall struct{ ID, Dest string }

type deadAsk struct {
	Dest  string
	Limit int
}

// fakeSource is a Source in memory that records what it is asked. It
// changes nothing: the dead letters stay dead after a Retry or a Purge, so
// that a test sees exactly which calls an action made.
type fakeSource struct {
	mu       sync.Mutex
	found    []ledger.ObjectState // what Trace answers
	dead     []ledger.ObjectState // what DeadLetters answers (filtered by destination)
	traceErr error
	deadErr  error
	retryErr error
	purgeErr error
	paused   map[string]string
	failed   map[string]string // LastFailure's reason by destination, at failedAt
	failedAt time.Time

	traces  []ledger.Query
	asked   []deadAsk
	retries []retryCall
	purges  []string
}

func (s *fakeSource) Trace(q ledger.Query) ([]ledger.ObjectState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.traces = append(s.traces, q)
	if s.traceErr != nil {
		return nil, s.traceErr
	}
	return s.found, nil
}

func (s *fakeSource) DeadLetters(dest string, limit int) ([]ledger.ObjectState, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.asked = append(s.asked, deadAsk{dest, limit})
	if s.deadErr != nil {
		return nil, s.deadErr
	}
	var out []ledger.ObjectState
	for _, o := range s.dead {
		for _, d := range o.Deliveries {
			if d.State == ledger.StateDead && (dest == "" || d.Destination == dest) {
				out = append(out, o)
				break
			}
		}
	}
	return out, nil
}

func (s *fakeSource) Retry(id, dest string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.retries = append(s.retries, retryCall{id, dest})
	return s.retryErr
}

func (s *fakeSource) Purge(id string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.purges = append(s.purges, id)
	return s.purgeErr
}

func (s *fakeSource) Paused(dest string) (bool, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	why, ok := s.paused[dest]
	return ok, why
}

func (s *fakeSource) LastFailure(dest string) (time.Time, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if why, ok := s.failed[dest]; ok {
		return s.failedAt, why
	}
	return time.Time{}, ""
}

func (s *fakeSource) calls() (traces []ledger.Query, retries []retryCall, purges []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.traces), slices.Clone(s.retries), slices.Clone(s.purges)
}

func (s *fakeSource) deadAsked() []deadAsk {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.asked)
}

func last[T any](s []T) T {
	var zero T
	if len(s) == 0 {
		return zero
	}
	return s[len(s)-1]
}

func (s *fakeSource) set(f func(s *fakeSource)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// harness is a console with its fakes.
type harness struct {
	t     *testing.T
	clk   *fakeClock
	src   *fakeSource
	reg   *prometheus.Registry
	users string // the users file
	c     *Console
	h     http.Handler
}

// newHarness makes a console from cfg (its Source, Gatherer and Now are the
// harness's); setup, if set, registers metrics before the console exists
// (and so before its first sample of the counters).
func newHarness(t *testing.T, cfg Config, setup func(reg *prometheus.Registry)) *harness {
	t.Helper()
	h := &harness{t: t, clk: &fakeClock{t: t0}, src: &fakeSource{}, reg: prometheus.NewRegistry()}
	h.users = writeUsers(t, map[string]string{"alice": alicePass, "bob": bobPass})
	users, err := auth.New(auth.Config{UsersFile: h.users})
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(h.reg)
	}
	cfg.Source, cfg.Gatherer, cfg.Now = h.src, h.reg, h.clk.Now
	if h.c, err = New(cfg, users, nil, h.reg); err != nil {
		t.Fatal(err)
	}
	h.h = h.c.Handler()
	return h
}

// writeUsers writes a users file of bcrypt hashes (htpasswd -B's format).
func writeUsers(t *testing.T, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# console users\n")
	for _, name := range slices.Sorted(maps.Keys(users)) {
		hash, err := bcrypt.GenerateFromPassword([]byte(users[name]), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(name + ":" + string(hash) + "\n")
	}
	p := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// browser keeps cookies as a browser would, and sends every request from
// one address.
type browser struct {
	h    *harness
	addr string
	jar  map[string]string
}

func (h *harness) browser(addr string) *browser {
	return &browser{h: h, addr: addr, jar: map[string]string{}}
}

// do sends a request; hdr are header name, value pairs.
func (b *browser) do(method, target string, form url.Values, hdr ...string) (*http.Response, string) {
	b.h.t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req := httptest.NewRequest(method, "http://"+testHost+target, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.RemoteAddr = b.addr + ":49152"
	for _, k := range slices.Sorted(maps.Keys(b.jar)) {
		req.AddCookie(&http.Cookie{Name: k, Value: b.jar[k]})
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	b.h.h.ServeHTTP(rec, req)
	resp := rec.Result()
	for _, ck := range resp.Cookies() {
		if ck.MaxAge < 0 || ck.Value == "" {
			delete(b.jar, ck.Name)
		} else {
			b.jar[ck.Name] = ck.Value
		}
	}
	return resp, rec.Body.String()
}

func (b *browser) get(target string, hdr ...string) (*http.Response, string) {
	b.h.t.Helper()
	return b.do(http.MethodGet, target, nil, hdr...)
}

func (b *browser) post(target string, form url.Values, hdr ...string) (*http.Response, string) {
	b.h.t.Helper()
	return b.do(http.MethodPost, target, form, hdr...)
}

var (
	loginTokenRE = regexp.MustCompile(`name="login_token" value="([^"]*)"`)
	nextRE       = regexp.MustCompile(`name="next" value="([^"]*)"`)
	csrfFieldRE  = regexp.MustCompile(`name="csrf" value="([^"]*)"`)
	mainRE       = regexp.MustCompile(`<main id="main" data-page="([^"]*)">`)
)

// loginForm fetches the login page and returns its token.
func (b *browser) loginForm() string {
	b.h.t.Helper()
	resp, page := b.get("/login")
	m := loginTokenRE.FindStringSubmatch(page)
	if resp.StatusCode != http.StatusOK || m == nil {
		b.h.t.Fatalf("GET /login: %s, no login_token:\n%s", resp.Status, page)
	}
	return m[1]
}

// login fills in and sends the login form.
func (b *browser) login(user, pass, next string) (*http.Response, string) {
	b.h.t.Helper()
	tok := b.loginForm()
	return b.post("/login", url.Values{"login_token": {tok}, "username": {user}, "password": {pass}, "next": {next}})
}

func (b *browser) mustLogin() {
	b.h.t.Helper()
	if resp, body := b.login("alice", alicePass, "/"); resp.StatusCode != http.StatusSeeOther {
		b.h.t.Fatalf("login: %s\n%s", resp.Status, body)
	}
}

// csrf is the session's CSRF token, from a page's logout form.
func (b *browser) csrf() string {
	b.h.t.Helper()
	_, page := b.get("/config")
	m := csrfFieldRE.FindStringSubmatch(page)
	if m == nil {
		b.h.t.Fatalf("no CSRF token on /config:\n%s", page)
	}
	return m[1]
}

func cookieNamed(resp *http.Response, name string) *http.Cookie {
	for _, c := range resp.Cookies() {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// exposition is the registry as /metrics serves it: the value of every
// series, by the series as the text format prints it.
func exposition(t *testing.T, g prometheus.Gatherer) map[string]float64 {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(g, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	out := map[string]float64{}
	sc := bufio.NewScanner(rec.Body)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("exposition line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}

// metricOf is the console's own metric, from the exposition.
func metricOf(t *testing.T, h *harness, key string) float64 {
	t.Helper()
	v, ok := exposition(t, h.reg)[key]
	if !ok {
		t.Fatalf("%s is not in the exposition", key)
	}
	return v
}

// Object IDs as the spool makes them (25 characters).
const (
	obj1 = "18ee5acb82ba85b8-00000001"
	obj2 = "18ee5acb82ba85b8-00000002"
	obj3 = "18ee5acb82ba85b8-00000003"
	obj4 = "18ee5acb82ba85b8-00000004"
)

// object is a ledger object with deliveries: dest=state, or dest=dead with
// the reason in reasons.
func object(id, sop, study, calling string, deliveries ...ledger.DeliveryState) ledger.ObjectState {
	o := ledger.ObjectState{Object: ledger.Object{
		ID: id, SOPInstanceUID: sop, SOPClassUID: "1.2.840.10008.5.1.4.1.1.2", StudyInstanceUID: study,
		SeriesInstanceUID: study + ".99", TransferSyntaxUID: "1.2.840.10008.1.2.1",
		CallingAE: calling, CalledAE: "DICOMGW", Peer: "10.1.2.3", Received: t0.Add(-2 * time.Hour), Size: 4096,
	}}
	for _, d := range deliveries {
		o.Destinations = append(o.Destinations, d.Destination)
	}
	o.Deliveries = deliveries
	return o
}

func dead(dest, reason string) ledger.DeliveryState {
	return ledger.DeliveryState{Destination: dest, State: ledger.StateDead, DeadReason: reason, DeadAt: t0.Add(-time.Hour),
		Retry: ledger.Retry{Attempts: 5, LastError: reason}}
}

func pending(dest string) ledger.DeliveryState {
	return ledger.DeliveryState{Destination: dest, State: ledger.StatePending}
}

func delivered(dest string) ledger.DeliveryState {
	return ledger.DeliveryState{Destination: dest, State: ledger.StateDelivered, DeliveredAt: t0.Add(-90 * time.Minute)}
}

// ---- login ----

func TestLoginPageSetsItsTokenCookie(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	b := h.browser("192.0.2.10")
	resp, page := b.get("/login?next=" + url.QueryEscape("/find?study=1.2.3"))
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /login: %s", resp.Status)
	}
	ck := cookieNamed(resp, loginCookie)
	if ck == nil || ck.Value == "" || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Path != "/" || ck.Secure {
		t.Fatalf("login cookie %+v", ck)
	}
	m := loginTokenRE.FindStringSubmatch(page)
	if m == nil || m[1] != ck.Value {
		t.Fatalf("the form's login_token %v is not the cookie's %q", m, ck.Value)
	}
	if n := nextRE.FindStringSubmatch(page); n == nil || html.UnescapeString(n[1]) != "/find?study=1.2.3" {
		t.Errorf("the form's next: %v", n)
	}
	if cookieNamed(resp, sessionCookie) != nil {
		t.Error("the login page set a session cookie")
	}
	// Each showing of the form has a token of its own.
	resp2, _ := b.get("/login")
	if ck2 := cookieNamed(resp2, loginCookie); ck2 == nil || ck2.Value == ck.Value {
		t.Errorf("the login token was reused: %+v", ck2)
	}
}

func TestLoginSucceeds(t *testing.T) {
	for _, secure := range []bool{false, true} {
		t.Run("secure="+strconv.FormatBool(secure), func(t *testing.T) {
			h := newHarness(t, Config{Secure: secure}, nil)
			b := h.browser("192.0.2.10")
			tok := b.loginForm()
			resp, _ := b.post("/login", url.Values{"login_token": {tok}, "username": {"alice"}, "password": {alicePass}, "next": {"/dead?destination=pacs"}})
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dead?destination=pacs" {
				t.Fatalf("login: %s to %q", resp.Status, resp.Header.Get("Location"))
			}
			ck := cookieNamed(resp, sessionCookie)
			if ck == nil || ck.Value == "" || !ck.HttpOnly || ck.SameSite != http.SameSiteStrictMode || ck.Secure != secure || ck.Path != "/" {
				t.Fatalf("session cookie %+v (Secure should be %v)", ck, secure)
			}
			if ck.MaxAge != 0 || !ck.Expires.IsZero() {
				t.Errorf("the session cookie outlives the browser: %+v", ck)
			}
			if lc := cookieNamed(resp, loginCookie); lc == nil || lc.MaxAge >= 0 || lc.Secure != secure {
				t.Errorf("the login cookie is not cleared: %+v", lc)
			}
			resp, page := b.get("/")
			if resp.StatusCode != http.StatusOK || !strings.Contains(page, `<span class="user">alice</span>`) {
				t.Fatalf("GET / after the login: %s\n%s", resp.Status, page)
			}
			if v := metricOf(t, h, `dicomgw_console_logins_total{outcome="success"}`); v != 1 {
				t.Errorf("logins success = %v", v)
			}
			if v := metricOf(t, h, `dicomgw_console_sessions`); v != 1 {
				t.Errorf("sessions = %v", v)
			}
			// Logged in, the login page sends on.
			if resp, _ := b.get("/login?next=%2Fassociations"); resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/associations" {
				t.Errorf("GET /login with a session: %s to %q", resp.Status, resp.Header.Get("Location"))
			}
		})
	}
}

func TestLoginRefused(t *testing.T) {
	long := strings.Repeat("x", maxCredential+1)
	for _, tc := range []struct {
		name   string
		form   func(tok string) url.Values
		hdr    []string
		code   int
		says   string
		metric string
	}{
		{"wrong password", func(tok string) url.Values {
			return url.Values{"login_token": {tok}, "username": {"alice"}, "password": {bobPass}}
		}, nil, http.StatusUnauthorized, "Unknown user or wrong password.", "failure"},
		{"unknown user", func(tok string) url.Values {
			return url.Values{"login_token": {tok}, "username": {"mallory"}, "password": {alicePass}}
		}, nil, http.StatusUnauthorized, "Unknown user or wrong password.", "failure"},
		{"empty", func(tok string) url.Values {
			return url.Values{"login_token": {tok}}
		}, nil, http.StatusUnauthorized, "Unknown user or wrong password.", "failure"},
		{"password too long", func(tok string) url.Values {
			return url.Values{"login_token": {tok}, "username": {"alice"}, "password": {alicePass + long}}
		}, nil, http.StatusUnauthorized, "Unknown user or wrong password.", "failure"},
		{"token mismatch", func(tok string) url.Values {
			return url.Values{"login_token": {"x" + tok[1:]}, "username": {"alice"}, "password": {alicePass}}
		}, nil, http.StatusForbidden, "This login form is out of date", "refused"},
		{"no token", func(tok string) url.Values {
			return url.Values{"username": {"alice"}, "password": {alicePass}}
		}, nil, http.StatusForbidden, "This login form is out of date", "refused"},
		{"cross-site", func(tok string) url.Values {
			return url.Values{"login_token": {tok}, "username": {"alice"}, "password": {alicePass}}
		}, []string{"Sec-Fetch-Site", "cross-site"}, http.StatusForbidden, "This login form is out of date", "refused"},
		{"another origin", func(tok string) url.Values {
			return url.Values{"login_token": {tok}, "username": {"alice"}, "password": {alicePass}}
		}, []string{"Origin", "https://evil.example"}, http.StatusForbidden, "This login form is out of date", "refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := newHarness(t, Config{}, nil)
			b := h.browser("192.0.2.20")
			tok := b.loginForm()
			resp, page := b.post("/login", tc.form(tok), tc.hdr...)
			if resp.StatusCode != tc.code || !strings.Contains(page, tc.says) {
				t.Fatalf("%s, want %d saying %q\n%s", resp.Status, tc.code, tc.says, page)
			}
			if cookieNamed(resp, sessionCookie) != nil {
				t.Fatal("a refused login set a session cookie")
			}
			// The form comes back with a fresh token that works.
			if ck := cookieNamed(resp, loginCookie); ck == nil || loginTokenRE.FindStringSubmatch(page)[1] != ck.Value {
				t.Errorf("the form shown again has no matching token: %+v", ck)
			}
			if resp, _ := b.get("/"); resp.StatusCode != http.StatusSeeOther {
				t.Errorf("GET / after a refused login: %s", resp.Status)
			}
			if v := metricOf(t, h, `dicomgw_console_logins_total{outcome="`+tc.metric+`"}`); v != 1 {
				t.Errorf("logins %s = %v", tc.metric, v)
			}
			if v := metricOf(t, h, `dicomgw_console_logins_total{outcome="success"}`); v != 0 {
				t.Errorf("logins success = %v", v)
			}
		})
	}
}

// After the login, the browser goes where it was going, and never to
// another site (an open redirect would lend the console's name to a
// phishing page).
func TestLoginNextStaysOnTheConsole(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	for next, want := range map[string]string{
		"":                          "/",
		"/":                         "/",
		"/dead?destination=pacs":    "/dead?destination=pacs",
		"/find?study=1.2.3&sop=4.5": "/find?study=1.2.3&sop=4.5",
		"//evil.example":            "/",
		"//evil.example/dead":       "/",
		"https://evil.example":      "/",
		"https://evil.example/":     "/",
		"/\\evil.example":           "/",
		"/\\/evil.example":          "/",
		"evil.example":              "/",
		"javascript:alert(1)":       "/",
		"/\r\nSet-Cookie: x=y":      "/",
		// Browsers drop tabs and newlines from a URL before reading it:
		// "/\t/evil.example" is "//evil.example" to them.
		"/\t/evil.example": "/",
		"/\x00/evil":       "/",
	} {
		b := h.browser("192.0.2.30")
		resp, _ := b.login("alice", alicePass, next)
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
			t.Errorf("next %q: %s to %q, want %q", next, resp.Status, resp.Header.Get("Location"), want)
		}
		// The same rule when a logged-in browser asks for the login page.
		if resp, _ := b.get("/login?next=" + url.QueryEscape(next)); resp.Header.Get("Location") != want {
			t.Errorf("GET /login?next=%q with a session: to %q, want %q", next, resp.Header.Get("Location"), want)
		}
		// And the form never carries it.
		if _, page := h.browser("192.0.2.31").get("/login?next=" + url.QueryEscape(next)); html.UnescapeString(nextRE.FindStringSubmatch(page)[1]) != want {
			t.Errorf("next %q: the login form carries %q", next, nextRE.FindStringSubmatch(page)[1])
		}
	}
}

func TestLoginThrottleByAddress(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	guesser := h.browser("192.0.2.66")
	for i := range maxFailures {
		if resp, _ := guesser.login("alice", "guess "+strconv.Itoa(i), "/"); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("failure %d: %s", i+1, resp.Status)
		}
		h.clk.Advance(10 * time.Second)
	}
	// The sixth try, with the right password: refused before the password
	// is looked at.
	resp, page := guesser.login("alice", alicePass, "/")
	if resp.StatusCode != http.StatusTooManyRequests || cookieNamed(resp, sessionCookie) != nil {
		t.Fatalf("after %d failures: %s, want 429 and no session", maxFailures, resp.Status)
	}
	if !strings.Contains(page, "Too many failed logins from this address; try again in 4m10s.") {
		t.Errorf("the 429 does not say how long to wait:\n%s", page)
	}
	// Another address is not held up by this one.
	if resp, _ := h.browser("192.0.2.67").login("alice", alicePass, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("another address: %s", resp.Status)
	}
	// Still refused one second before the window (from the first failure)
	// has passed; let in once it has.
	h.clk.Advance(failureWindow - 50*time.Second - time.Second)
	if resp, _ := guesser.login("alice", alicePass, "/"); resp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("1 s before the window ends: %s", resp.Status)
	}
	h.clk.Advance(time.Second)
	if resp, _ := guesser.login("alice", alicePass, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("after the window: %s", resp.Status)
	}
	if v := metricOf(t, h, `dicomgw_console_logins_total{outcome="throttled"}`); v != 2 {
		t.Errorf("throttled = %v, want 2", v)
	}
	if v := metricOf(t, h, `dicomgw_console_logins_total{outcome="failure"}`); v != maxFailures {
		t.Errorf("failures = %v, want %d (throttled tries are not failures)", v, maxFailures)
	}
}

// A success forgets the failures before it.
func TestLoginThrottleForgetsAfterASuccess(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	b := h.browser("192.0.2.68")
	for range maxFailures - 1 {
		b.login("alice", "typo", "/")
	}
	if resp, _ := b.login("alice", alicePass, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the right password after %d failures: %s", maxFailures-1, resp.Status)
	}
	c := h.browser("192.0.2.68")
	for range maxFailures - 1 {
		c.login("bob", "typo", "/")
	}
	if resp, _ := c.login("bob", bobPass, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("failures before the success were still counted: %s", resp.Status)
	}
}

// Users can change (SIGHUP); sessions in force stay.
func TestSetUsers(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	alice := h.browser("192.0.2.40")
	alice.mustLogin()
	onlyBob, err := auth.New(auth.Config{UsersFile: writeUsers(t, map[string]string{"bob": bobPass})})
	if err != nil {
		t.Fatal(err)
	}
	h.c.SetUsers(onlyBob)
	if resp, _ := alice.get("/"); resp.StatusCode != http.StatusOK {
		t.Errorf("a running session ended with the users file: %s", resp.Status)
	}
	if resp, _ := h.browser("192.0.2.41").login("alice", alicePass, "/"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("a removed user logged in: %s", resp.Status)
	}
	if resp, _ := h.browser("192.0.2.42").login("bob", bobPass, "/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("bob: %s", resp.Status)
	}
	h.c.SetUsers(nil)
	if resp, _ := h.browser("192.0.2.43").login("bob", bobPass, "/"); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("no users, yet a login: %s", resp.Status)
	}
}

func TestNewNeedsSourceAndGatherer(t *testing.T) {
	if _, err := New(Config{Gatherer: prometheus.NewRegistry()}, nil, nil, nil); err == nil {
		t.Error("New without a Source")
	}
	if _, err := New(Config{Source: &fakeSource{}}, nil, nil, nil); err == nil {
		t.Error("New without a Gatherer")
	}
}

// ---- pages and sessions ----

var pages = map[string]string{
	"/":             "overview",
	"/find":         "find",
	"/dead":         "dead",
	"/associations": "associations",
	"/config":       "config",
}

func TestEveryPageNeedsALogin(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	for p, name := range pages {
		for _, target := range []string{p, p + "?destination=pacs&x=%2F%2Fevil"} {
			b := h.browser("192.0.2.50")
			resp, _ := b.get(target)
			want := "/login?next=" + url.QueryEscape(target)
			if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
				t.Errorf("GET %s without a session: %s to %q, want %q", target, resp.Status, resp.Header.Get("Location"), want)
				continue
			}
			// The login page carries the way back, and the login goes there.
			_, page := b.get(resp.Header.Get("Location"))
			next := html.UnescapeString(nextRE.FindStringSubmatch(page)[1])
			if next != target {
				t.Errorf("the login form for %s goes to %q", target, next)
			}
			tok := loginTokenRE.FindStringSubmatch(page)[1]
			resp, _ = b.post("/login", url.Values{"login_token": {tok}, "username": {"alice"}, "password": {alicePass}, "next": {next}})
			if resp.Header.Get("Location") != target {
				t.Errorf("after the login: to %q, want %q", resp.Header.Get("Location"), target)
			}
			resp, page = b.get(target)
			m := mainRE.FindStringSubmatch(page)
			if resp.StatusCode != http.StatusOK || m == nil || m[1] != name {
				t.Errorf("GET %s with a session: %s, main %v, want data-page=%q", target, resp.Status, m, name)
			}
			if ct := resp.Header.Get("Content-Type"); ct != "text/html; charset=utf-8" {
				t.Errorf("GET %s: Content-Type %q", target, ct)
			}
		}
	}
}

func TestSecurityHeadersOnEveryAnswer(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	anon := h.browser("192.0.2.51")
	user := h.browser("192.0.2.52")
	user.mustLogin()
	csrf := user.csrf()
	type answer struct {
		what string
		resp *http.Response
	}
	var answers []answer
	add := func(what string) func(*http.Response, string) {
		return func(resp *http.Response, _ string) { answers = append(answers, answer{what, resp}) }
	}
	add("GET /login")(anon.get("/login"))
	add("POST /login refused")(anon.post("/login", url.Values{"username": {"alice"}}))
	add("GET / without a session")(anon.get("/"))
	add("POST /dead/act without a session")(anon.post("/dead/act", url.Values{}))
	add("GET /nowhere")(anon.get("/nowhere"))
	for p := range pages {
		add("GET " + p)(user.get(p))
	}
	add("GET /find refused")(user.get("/find?study=x;y"))
	add("POST /dead/confirm")(user.post("/dead/confirm", url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "sel": {obj1 + "/pacs"}}))
	add("POST /dead/act")(user.post("/dead/act", url.Values{"csrf": {csrf}, "action": {"retry"}}))
	add("POST /dead/act wrong token")(user.post("/dead/act", url.Values{"csrf": {"nope"}}))
	for _, a := range answers {
		hd := a.resp.Header
		csp := hd.Get("Content-Security-Policy")
		if !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") || !strings.Contains(csp, "object-src 'none'") {
			t.Errorf("%s: Content-Security-Policy %q", a.what, csp)
		}
		if hd.Get("X-Frame-Options") != "DENY" || hd.Get("X-Content-Type-Options") != "nosniff" || hd.Get("Referrer-Policy") != "no-referrer" {
			t.Errorf("%s: headers %v", a.what, hd)
		}
		if hd.Get("Cache-Control") != "no-store" {
			t.Errorf("%s: Cache-Control %q", a.what, hd.Get("Cache-Control"))
		}
	}
	// The embedded assets may be cached (privately), and carry the rest.
	for _, p := range []string{"/static/console.css", "/static/console.js"} {
		resp, body := anon.get(p)
		if resp.StatusCode != http.StatusOK || body == "" || resp.Header.Get("Cache-Control") != "private, max-age=300" ||
			resp.Header.Get("X-Frame-Options") != "DENY" || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
			t.Errorf("GET %s: %s %v", p, resp.Status, resp.Header)
		}
	}
}

func TestSessionIdleTimeout(t *testing.T) {
	h := newHarness(t, Config{SessionIdle: 10 * time.Minute, SessionMax: 12 * time.Hour}, nil)
	b := h.browser("192.0.2.60")
	b.mustLogin()
	csrf := b.csrf()
	// Every request keeps it alive...
	for range 6 {
		h.clk.Advance(10*time.Minute - time.Second)
		if resp, _ := b.get("/find"); resp.StatusCode != http.StatusOK {
			t.Fatalf("a session used every 9m59s ended: %s", resp.Status)
		}
	}
	// ...but the overview refreshing itself does not.
	h.clk.Advance(6 * time.Minute)
	if resp, _ := b.get("/", "X-Console-Refresh", "1"); resp.StatusCode != http.StatusOK {
		t.Fatalf("refresh 6 min after the last use: %s", resp.Status)
	}
	h.clk.Advance(4*time.Minute + time.Second)
	if resp, _ := b.get("/", "X-Console-Refresh", "1"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("a session kept alive by the page's own refreshes: %s", resp.Status)
	}
	// Ended for actions too, even with its token.
	if resp, _ := b.post("/dead/act", url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "sel": {obj1 + "/pacs"}, "confirm": {"yes"}}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("an action in an expired session: %s", resp.Status)
	}
	if _, retries, _ := h.src.calls(); len(retries) != 0 {
		t.Fatalf("retried %v", retries)
	}
}

func TestSessionMaxAge(t *testing.T) {
	h := newHarness(t, Config{SessionIdle: 30 * time.Minute, SessionMax: 2 * time.Hour}, nil)
	b := h.browser("192.0.2.61")
	b.mustLogin()
	for i := range 7 { // every 20 min: 2h20m after the login
		h.clk.Advance(20 * time.Minute)
		resp, _ := b.get("/dead")
		within := time.Duration(i+1)*20*time.Minute <= 2*time.Hour
		if within && resp.StatusCode != http.StatusOK {
			t.Fatalf("%v after the login, in use: %s", time.Duration(i+1)*20*time.Minute, resp.Status)
		}
		if !within && resp.StatusCode != http.StatusSeeOther {
			t.Fatalf("%v after the login (SessionMax 2h): %s", time.Duration(i+1)*20*time.Minute, resp.Status)
		}
	}
	// A new login is a new session.
	b.mustLogin()
	if resp, _ := b.get("/dead"); resp.StatusCode != http.StatusOK {
		t.Fatalf("after logging in again: %s", resp.Status)
	}
}

func TestSessionDefaults(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	if h.c.cfg.SessionIdle != 30*time.Minute || h.c.cfg.SessionMax != 12*time.Hour || h.c.cfg.Refresh != 5*time.Second || h.c.cfg.SampleEvery != 15*time.Second {
		t.Errorf("defaults: %+v", h.c.cfg)
	}
	b := h.browser("192.0.2.62")
	b.mustLogin()
	h.clk.Advance(30*time.Minute + time.Second)
	if resp, _ := b.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Errorf("idle 30 min by default: %s", resp.Status)
	}
}

func TestLogout(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	b := h.browser("192.0.2.63")
	b.mustLogin()
	sid := b.jar[sessionCookie]
	csrf := b.csrf()
	// Without its token, logout is refused and the session stays.
	if resp, _ := b.post("/logout", url.Values{}); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("logout without a token: %s", resp.Status)
	}
	if resp, _ := b.get("/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the session ended on a refused logout: %s", resp.Status)
	}
	resp, _ := b.post("/logout", url.Values{"csrf": {csrf}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/login" {
		t.Fatalf("logout: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if ck := cookieNamed(resp, sessionCookie); ck == nil || ck.MaxAge >= 0 {
		t.Errorf("the session cookie is not cleared: %+v", ck)
	}
	// The old ID is worth nothing, even to a browser that kept it.
	b.jar[sessionCookie] = sid
	if resp, _ := b.get("/"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the session survived its logout: %s", resp.Status)
	}
	if resp, _ := b.post("/logout", url.Values{"csrf": {csrf}}); resp.StatusCode != http.StatusForbidden {
		t.Errorf("a second logout: %s", resp.Status)
	}
	if v := metricOf(t, h, "dicomgw_console_sessions"); v != 0 {
		t.Errorf("sessions after the logout: %v", v)
	}
}

// The sessions table is bounded: beyond maxSessions the least recently
// used one ends.
func TestSessionsBounded(t *testing.T) {
	clk := &fakeClock{t: t0}
	s := newSessions(time.Hour, 12*time.Hour, clk.Now)
	var first, second *session
	for i := range maxSessions {
		ss := s.create("u")
		switch i {
		case 0:
			first = ss
		case 1:
			second = ss
		}
		clk.Advance(time.Millisecond)
	}
	if s.get(first.id) == nil { // used now: no longer the least recent
		t.Fatal("a fresh session is missing")
	}
	last := s.create("u")
	if s.count() != maxSessions {
		t.Errorf("%d sessions, want %d", s.count(), maxSessions)
	}
	if s.get(second.id) != nil || s.get(first.id) == nil || s.get(last.id) == nil {
		t.Error("not the least recently used session ended")
	}
	if first.id == second.id || first.csrf == first.id || len(first.id) != 43 {
		t.Errorf("session IDs and tokens: %q %q %q", first.id, second.id, first.csrf)
	}
	// sweep forgets the expired ones.
	clk.Advance(30 * time.Minute)
	s.get(last.id)
	clk.Advance(31 * time.Minute)
	s.sweep()
	if s.count() != 1 {
		t.Errorf("%d sessions after the sweep, want 1", s.count())
	}
}

// ---- actions: CSRF ----

func TestActionsRefusedWithoutSessionTokenOrSameSite(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	h.src.dead = []ledger.ObjectState{object(obj1, "1.2.3.1", "1.2.3", "CT2", dead("pacs", "refused"))}
	user := h.browser("192.0.2.70")
	user.mustLogin()
	csrf := user.csrf()
	other := h.browser("192.0.2.71")
	other.mustLogin()
	otherCSRF := other.csrf()
	anon := h.browser("192.0.2.72")

	base := url.Values{"action": {"retry"}, "scope": {"selected"}, "sel": {obj1 + "/pacs"}, "confirm": {"yes"}}
	with := func(token string) url.Values {
		f := url.Values{}
		for k, v := range base {
			f[k] = v
		}
		if token != "" {
			f.Set("csrf", token)
		}
		return f
	}
	cases := []struct {
		name   string
		b      *browser
		form   url.Values
		hdr    []string
		reason string
	}{
		{"no session", anon, with(csrf), nil, "no_session"},
		{"no token", user, with(""), nil, "csrf"},
		{"wrong token", user, with("x" + csrf[1:]), nil, "csrf"},
		{"another session's token", user, with(otherCSRF), nil, "csrf"},
		{"token as a query parameter only", user, with(""), nil, "csrf"},
		{"another origin", user, with(csrf), []string{"Origin", "https://evil.example"}, "cross_site"},
		{"another port", user, with(csrf), []string{"Origin", "http://" + testHost + ":8080"}, "cross_site"},
		{"cross-site fetch", user, with(csrf), []string{"Sec-Fetch-Site", "cross-site"}, "cross_site"},
		{"same-site fetch", user, with(csrf), []string{"Sec-Fetch-Site", "same-site"}, "cross_site"},
	}
	want := map[string]float64{}
	for _, path := range []string{"/dead/act", "/dead/confirm", "/logout"} {
		for _, tc := range cases {
			target := path
			if tc.name == "token as a query parameter only" {
				target += "?csrf=" + url.QueryEscape(csrf)
			}
			resp, page := tc.b.post(target, tc.form, tc.hdr...)
			if resp.StatusCode != http.StatusForbidden {
				t.Errorf("POST %s, %s: %s, want 403", path, tc.name, resp.Status)
				continue
			}
			if m := mainRE.FindStringSubmatch(page); m == nil || !strings.Contains(page, "<h1>Refused</h1>") {
				t.Errorf("POST %s, %s: not the refusal page:\n%s", path, tc.name, page)
			}
			want[tc.reason]++
		}
	}
	if traces, retries, purges := h.src.calls(); len(traces)+len(retries)+len(purges) != 0 {
		t.Fatalf("refused actions reached the source: %v %v %v", traces, retries, purges)
	}
	if asked := h.src.deadAsked(); len(asked) != 0 {
		t.Fatalf("refused confirmations read the dead letters: %v", asked)
	}
	for reason, n := range want {
		if v := metricOf(t, h, `dicomgw_console_refused_total{reason="`+reason+`"}`); v != n {
			t.Errorf("refused %s = %v, want %v", reason, v, n)
		}
	}
	// The sessions survived it all.
	if resp, _ := user.get("/"); resp.StatusCode != http.StatusOK {
		t.Fatalf("the session ended: %s", resp.Status)
	}
	// Actions are POSTs only.
	for _, p := range []string{"/dead/act?csrf=" + csrf + "&action=retry&scope=selected&sel=" + obj1 + "%2Fpacs&confirm=yes", "/logout"} {
		if resp, _ := user.get(p); resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET %s: %s", p, resp.Status)
		}
	}
	// The right token, from this console (Origin and Sec-Fetch-Site say so,
	// or say nothing): the action runs.
	if resp, _ := user.post("/dead/act", with(csrf), "Origin", "http://"+testHost, "Sec-Fetch-Site", "same-origin"); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the right token: %s", resp.Status)
	}
	if resp, _ := user.post("/dead/act", with(csrf)); resp.StatusCode != http.StatusSeeOther {
		t.Fatalf("the right token, no Origin: %s", resp.Status)
	}
	if _, retries, _ := h.src.calls(); len(retries) != 2 || retries[0] != (retryCall{obj1, "pacs"}) {
		t.Fatalf("retries %v", retries)
	}
}

func TestActionFormIsBounded(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	b := h.browser("192.0.2.73")
	b.mustLogin()
	csrf := b.csrf()
	form := url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "confirm": {"yes"}, "pad": {strings.Repeat("a", maxForm)}}
	if resp, _ := b.post("/dead/act", form); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("a form over %d bytes: %s", maxForm, resp.Status)
	}
	if v := metricOf(t, h, `dicomgw_console_refused_total{reason="bad_form"}`); v != 1 {
		t.Errorf("bad_form = %v", v)
	}
}

// ---- dead letters ----

const (
	reasonRefused = "connection refused by pacs.example"
	reasonA700    = "still failing after 5 attempts over 6s: status A700"
	reasonA700b   = "still failing after 17 attempts over 96s: status A700"
)

func deadLetterFixture(h *harness) {
	h.src.set(func(s *fakeSource) {
		s.dead = []ledger.ObjectState{
			object(obj1, "1.2.3.1", "1.2.3", "CT2", dead("kheops", reasonA700), dead("pacs", reasonRefused)),
			object(obj2, "1.2.3.2", "1.2.3", "CT2", dead("pacs", reasonRefused)),
			object(obj3, "1.2.3.3", "1.2.4", "MR1", delivered("kheops"), dead("pacs", reasonA700b)),
			object(obj4, "1.2.3.4", "1.2.4", "MR1", dead("kheops", reasonA700b), pending("pacs")),
		}
	})
}

// reasonKey names a reason by the first 16 hex digits of its SHA-256, with
// its numbers left out (reasons that differ only in their numbers are one
// kind).
func TestReasonKey(t *testing.T) {
	sum := sha256.Sum256([]byte(reasonRefused))
	if got, want := reasonKey(reasonRefused), hex.EncodeToString(sum[:])[:16]; got != want {
		t.Errorf("reasonKey(%q) = %s, want %s", reasonRefused, got, want)
	}
	if reasonKey(reasonA700) != reasonKey(reasonA700b) {
		t.Error("reasons that differ only in their numbers have two keys")
	}
	if reasonKey(reasonA700) == reasonKey(reasonRefused) || reasonKey("status 0xA700") == reasonKey("status 0xC000") {
		t.Error("different reasons share a key")
	}
	for _, r := range []string{"", reasonRefused, "<script>"} {
		if k := reasonKey(r); !validReasonKey(k) {
			t.Errorf("reasonKey(%q) = %q is not a valid key", r, k)
		}
	}
	for _, bad := range []string{"", "0123456789abcde", "0123456789abcdef0", "0123456789abcdeg", "../../../etc/pa"} {
		if validReasonKey(bad) {
			t.Errorf("validReasonKey(%q)", bad)
		}
	}
}

var reasonRowRE = regexp.MustCompile(`<tr class="reason" data-destination="([^"]*)" data-reason="([^"]*)">\s*<td>[^<]*</td><td class="n">(\d+)</td>`)
var letterRowRE = regexp.MustCompile(`<tr class="letter" data-id="([^"]*)" data-destination="([^"]*)"`)

func letterRows(page string) []string {
	var out []string
	for _, m := range letterRowRE.FindAllStringSubmatch(page, -1) {
		out = append(out, m[1]+"/"+m[2])
	}
	return out
}

func TestDeadLettersListedByReason(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	deadLetterFixture(h)
	b := h.browser("192.0.2.80")
	b.mustLogin()
	resp, page := b.get("/dead")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /dead: %s", resp.Status)
	}
	var groups []string
	for _, m := range reasonRowRE.FindAllStringSubmatch(page, -1) {
		groups = append(groups, m[1]+" "+m[2]+" "+m[3])
	}
	// By destination, then the largest group first.
	want := []string{
		"kheops " + reasonKey(reasonA700) + " 2",
		"pacs " + reasonKey(reasonRefused) + " 2",
		"pacs " + reasonKey(reasonA700) + " 1",
	}
	if !slices.Equal(groups, want) {
		t.Errorf("groups %q, want %q", groups, want)
	}
	letters := letterRows(page)
	wantLetters := []string{obj1 + "/kheops", obj1 + "/pacs", obj2 + "/pacs", obj3 + "/pacs", obj4 + "/kheops"}
	if !slices.Equal(letters, wantLetters) {
		t.Errorf("dead letters %q, want %q", letters, wantLetters)
	}
	if !strings.Contains(page, "(still queued for pacs)") {
		t.Error("a dead letter whose object is still queued elsewhere does not say so")
	}
	if last(h.src.deadAsked()) != (deadAsk{"", maxDead}) {
		t.Errorf("DeadLetters asked %v", h.src.deadAsked())
	}

	// One destination, one reason.
	_, page = b.get("/dead?destination=pacs&reason=" + reasonKey(reasonRefused))
	if got := letterRows(page); !slices.Equal(got, []string{obj1 + "/pacs", obj2 + "/pacs"}) {
		t.Errorf("pacs, refused: %q", got)
	}
	if last(h.src.deadAsked()) != (deadAsk{"pacs", maxDead}) {
		t.Errorf("DeadLetters asked %v", h.src.deadAsked())
	}
	if !strings.Contains(page, `<option value="pacs" selected>pacs</option>`) {
		t.Error("the filter does not show the destination chosen")
	}

	for q, want := range map[string]string{
		"destination=PACS":                       "no such destination",
		"destination=" + url.QueryEscape("../x"): "no such destination",
		"reason=nothex":                          "no such reason",
		"reason=" + strings.Repeat("a", 17):      "no such reason",
	} {
		if resp, page := b.get("/dead?" + q); resp.StatusCode != http.StatusBadRequest || !strings.Contains(page, want) {
			t.Errorf("/dead?%s: %s, want 400 %q", q, resp.Status, want)
		}
	}

	h.src.set(func(s *fakeSource) { s.dead = nil })
	if _, page := b.get("/dead?destination=pacs"); !strings.Contains(page, "No dead letters for pacs.") {
		t.Errorf("no dead letters:\n%s", page)
	}
	h.src.set(func(s *fakeSource) { s.deadErr = errors.New("database is locked") })
	if resp, page := b.get("/dead"); resp.StatusCode != http.StatusInternalServerError || !strings.Contains(page, "The delivery ledger could not be read") {
		t.Errorf("a ledger error: %s", resp.Status)
	}
}

var hiddenSelRE = regexp.MustCompile(`<input type="hidden" name="sel" value="([^"]*)">`)

func TestDeadConfirmAsksAndDoesNothing(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	deadLetterFixture(h)
	b := h.browser("192.0.2.81")
	b.mustLogin()
	csrf := b.csrf()

	// Selected: two dead letters, and one that is not (any more).
	resp, page := b.post("/dead/confirm", url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"},
		"sel": {obj1 + "/pacs", obj2 + "/pacs", obj3 + "/kheops"}})
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Retry 2 dead letter(s)?") || !strings.Contains(page, "1 of the selected are no longer dead letters") {
		t.Fatalf("confirm selected: %s\n%s", resp.Status, page)
	}
	if got := hiddenSelRE.FindAllStringSubmatch(page, -1); len(got) != 2 || got[0][1] != obj1+"/pacs" || got[1][1] != obj2+"/pacs" {
		t.Errorf("the confirmation carries %v", got)
	}
	if !strings.Contains(page, `action="/dead/act"`) || !strings.Contains(page, `name="confirm" value="yes"`) || !strings.Contains(page, `name="csrf" value="`+csrf+`"`) {
		t.Errorf("the confirmation form:\n%s", page)
	}

	// By reason: every pacs dead letter of the A700 kind (one, obj3).
	key := reasonKey(reasonA700)
	_, page = b.post("/dead/confirm", url.Values{"csrf": {csrf}, "action": {"purge"}, "scope": {"reason"}, "destination": {"pacs"}, "reason": {key}})
	if !strings.Contains(page, "Purge 1 dead letter(s)?") || !strings.Contains(page, `name="reason" value="`+key+`"`) || !strings.Contains(page, `name="destination" value="pacs"`) {
		t.Errorf("confirm by reason:\n%s", page)
	}
	if got := letterRows(page); !slices.Equal(got, []string{obj3 + "/pacs"}) {
		t.Errorf("confirm by reason lists %q", got)
	}
	// A purge says what else it gives up, or what blocks it.
	_, page = b.post("/dead/confirm", url.Values{"csrf": {csrf}, "action": {"purge"}, "scope": {"selected"}, "sel": {obj1 + "/pacs", obj4 + "/kheops"}})
	if !strings.Contains(page, "also given up for kheops") || !strings.Contains(page, "still queued for pacs: not purged") || !strings.Contains(page, `class="danger"`) {
		t.Errorf("purge confirmation:\n%s", page)
	}
	// Nothing of the selection is a dead letter.
	_, page = b.post("/dead/confirm", url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "sel": {obj3 + "/kheops"}})
	if !strings.Contains(page, "None of them is a dead letter any more.") || strings.Contains(page, `action="/dead/act"`) {
		t.Errorf("confirming nothing:\n%s", page)
	}

	if _, retries, purges := h.src.calls(); len(retries)+len(purges) != 0 {
		t.Fatalf("a confirmation acted: %v %v", retries, purges)
	}
	// Nonsense: back to the list, saying why.
	resp, _ = b.post("/dead/confirm", url.Values{"csrf": {csrf}, "action": {"delete"}, "scope": {"selected"}, "sel": {obj1 + "/pacs"}})
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dead" {
		t.Errorf("a bad confirmation: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if _, page := b.get("/dead"); !strings.Contains(page, "Nothing done: no such action.") {
		t.Errorf("no reason given:\n%s", page)
	}
}

func TestDeadActRetriesSelected(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	deadLetterFixture(h)
	b := h.browser("192.0.2.82")
	b.mustLogin()
	csrf := b.csrf()
	form := url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "sel": {obj2 + "/pacs", obj1 + "/kheops"}}
	// Not confirmed: nothing.
	resp, _ := b.post("/dead/act", form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dead" {
		t.Fatalf("unconfirmed: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	if _, retries, _ := h.src.calls(); len(retries) != 0 {
		t.Fatalf("unconfirmed, yet retried %v", retries)
	}
	if _, page := b.get("/dead"); !strings.Contains(page, "Nothing done: not confirmed.") {
		t.Errorf("unconfirmed: no flash:\n%s", page)
	}
	for _, no := range []string{"no", "YES", "1"} {
		form.Set("confirm", no)
		b.post("/dead/act", form)
	}
	if _, retries, _ := h.src.calls(); len(retries) != 0 {
		t.Fatalf("confirm=%v retried %v", form["confirm"], retries)
	}

	form.Set("confirm", "yes")
	resp, _ = b.post("/dead/act", form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dead" {
		t.Fatalf("act: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	_, retries, purges := h.src.calls()
	// In the list's order, and only what was selected.
	if want := []retryCall{{obj1, "kheops"}, {obj2, "pacs"}}; !slices.Equal(retries, want) || len(purges) != 0 {
		t.Fatalf("retries %v, want %v; purges %v", retries, want, purges)
	}
	_, page := b.get("/dead")
	if !strings.Contains(page, `<p class="flash" role="status">Re-queued 2 dead letter(s).</p>`) {
		t.Errorf("no flash after the retry:\n%s", page)
	}
	if _, page := b.get("/dead"); strings.Contains(page, `class="flash"`) {
		t.Error("the flash is shown twice")
	}
	if v := metricOf(t, h, `dicomgw_console_actions_total{action="retry",outcome="done"}`); v != 2 {
		t.Errorf("actions retry done = %v", v)
	}
}

func TestDeadActRetriesByReason(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	deadLetterFixture(h)
	b := h.browser("192.0.2.83")
	b.mustLogin()
	csrf := b.csrf()
	form := url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"reason"}, "destination": {"kheops"}, "reason": {reasonKey(reasonA700)}, "confirm": {"yes"}}
	resp, _ := b.post("/dead/act", form)
	if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != "/dead?destination=kheops" {
		t.Fatalf("act: %s to %q", resp.Status, resp.Header.Get("Location"))
	}
	_, retries, _ := h.src.calls()
	if want := []retryCall{{obj1, "kheops"}, {obj4, "kheops"}}; !slices.Equal(retries, want) {
		t.Fatalf("retries %v, want %v", retries, want)
	}
	if _, page := b.get("/dead?destination=kheops"); !strings.Contains(page, "Re-queued 2 dead letter(s).") {
		t.Errorf("no flash:\n%s", page)
	}
	// A reason no dead letter has any more.
	form.Set("reason", reasonKey("something else"))
	b.post("/dead/act", form)
	if _, r, _ := h.src.calls(); len(r) != 2 {
		t.Fatalf("retries %v", r)
	}
	if _, page := b.get("/dead"); !strings.Contains(page, "Nothing done: none of them is a dead letter any more.") {
		t.Errorf("no flash:\n%s", page)
	}
}

func TestDeadActPurgesOncePerObject(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	deadLetterFixture(h)
	b := h.browser("192.0.2.84")
	b.mustLogin()
	csrf := b.csrf()
	b.post("/dead/act", url.Values{"csrf": {csrf}, "action": {"purge"}, "scope": {"selected"}, "confirm": {"yes"},
		"sel": {obj1 + "/pacs", obj1 + "/kheops", obj2 + "/pacs"}})
	_, retries, purges := h.src.calls()
	if !slices.Equal(purges, []string{obj1, obj2}) || len(retries) != 0 {
		t.Fatalf("purges %v, want each object once; retries %v", purges, retries)
	}
	if v := metricOf(t, h, `dicomgw_console_actions_total{action="purge",outcome="done"}`); v != 2 {
		t.Errorf("purge done = %v", v)
	}
	if _, page := b.get("/dead"); !strings.Contains(page, "Purged 2 dead letter(s).") {
		t.Errorf("no flash:\n%s", page)
	}
}

func TestDeadActReportsFailures(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	deadLetterFixture(h)
	b := h.browser("192.0.2.85")
	b.mustLogin()
	csrf := b.csrf()
	h.src.set(func(s *fakeSource) { s.retryErr = errors.New("<b>disk</b> on fire") })
	b.post("/dead/act", url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "confirm": {"yes"}, "sel": {obj1 + "/pacs", obj2 + "/pacs"}})
	_, page := b.get("/dead")
	if !strings.Contains(page, "Re-queued 0 dead letter(s). 2 could not be: &lt;b&gt;disk&lt;/b&gt; on fire.") || strings.Contains(page, "<b>disk") {
		t.Errorf("the failure is not reported (escaped):\n%s", page)
	}
	if v := metricOf(t, h, `dicomgw_console_actions_total{action="retry",outcome="failed"}`); v != 2 {
		t.Errorf("retry failed = %v", v)
	}
	// The ledger cannot be read: nothing is done, and it says so.
	h.src.set(func(s *fakeSource) { s.retryErr, s.deadErr = nil, errors.New("database is locked") })
	b.post("/dead/act", url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "confirm": {"yes"}, "sel": {obj1 + "/pacs"}})
	h.src.set(func(s *fakeSource) { s.deadErr = nil })
	if _, page := b.get("/dead"); !strings.Contains(page, "Nothing done: the delivery ledger could not be read") {
		t.Errorf("a ledger error is not reported:\n%s", page)
	}
	h.src.set(func(s *fakeSource) { s.deadErr = errors.New("database is locked") })
	if resp, _ := b.post("/dead/confirm", url.Values{"csrf": {csrf}, "action": {"retry"}, "scope": {"selected"}, "sel": {obj1 + "/pacs"}}); resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("confirm with a ledger error: %s", resp.Status)
	}
	if _, retries, _ := h.src.calls(); len(retries) != 2 {
		t.Errorf("retries %v", retries)
	}
}

func TestDeadActRefusesNonsense(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	deadLetterFixture(h)
	b := h.browser("192.0.2.86")
	b.mustLogin()
	csrf := b.csrf()
	many := make([]string, maxDead+1)
	for i := range many {
		many[i] = obj1 + "/pacs"
	}
	for _, tc := range []struct {
		form url.Values
		says string
	}{
		{url.Values{"action": {"delete"}, "scope": {"selected"}, "sel": {obj1 + "/pacs"}}, "no such action"},
		{url.Values{"scope": {"selected"}, "sel": {obj1 + "/pacs"}}, "no such action"},
		{url.Values{"action": {"retry"}, "scope": {"everything"}}, "no such scope"},
		{url.Values{"action": {"retry"}, "scope": {"selected"}}, "nothing was selected"},
		{url.Values{"action": {"retry"}, "scope": {"selected"}, "sel": {obj1}}, "a selected dead letter is not one"},
		{url.Values{"action": {"retry"}, "scope": {"selected"}, "sel": {"../../../etc/passwd/pacs"}}, "a selected dead letter is not one"},
		{url.Values{"action": {"retry"}, "scope": {"selected"}, "sel": {obj1 + "/PACS"}}, "a selected dead letter is not one"},
		{url.Values{"action": {"retry"}, "scope": {"selected"}, "sel": many}, "more than 1000 dead letters selected"},
		{url.Values{"action": {"retry"}, "scope": {"reason"}, "destination": {"pacs"}, "reason": {"refused"}}, "no such destination or reason"},
		{url.Values{"action": {"retry"}, "scope": {"reason"}, "destination": {"pacs!"}, "reason": {reasonKey(reasonRefused)}}, "no such destination or reason"},
	} {
		tc.form.Set("csrf", csrf)
		tc.form.Set("confirm", "yes")
		if resp, _ := b.post("/dead/act", tc.form); resp.StatusCode != http.StatusSeeOther {
			t.Errorf("%v: %s", tc.form, resp.Status)
		}
		if _, page := b.get("/dead"); !strings.Contains(page, "Nothing done: "+tc.says+".") {
			t.Errorf("%v: does not say %q", tc.form, tc.says)
		}
	}
	if _, retries, purges := h.src.calls(); len(retries)+len(purges) != 0 {
		t.Fatalf("nonsense acted: %v %v", retries, purges)
	}
}

// ---- find ----

func TestFindRefusesBadCriteria(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	b := h.browser("192.0.2.90")
	b.mustLogin()
	for q, want := range map[string]string{
		"study=1.2.3%27%3BDROP":                     `the Study Instance UID "1.2.3';DROP" is not a UID`,
		"study=1.2%203":                             `the Study Instance UID "1.2 3" is not a UID`,
		"sop=" + strings.Repeat("1", 65):            "is not a UID",
		"calling=" + url.QueryEscape(`CT\2`):        `the calling AE title "CT\\2" is not an AE title (1-16 characters)`,
		"calling=ABCDEFGHIJKLMNOPQ":                 "is not an AE title",
		"calling=CT%01":                             "is not an AE title",
		"from=yesterday":                            `from: "yesterday" is not a time (YYYY-MM-DD HH:MM, UTC)`,
		"to=2026-13-01":                             `to: "2026-13-01" is not a time`,
		"from=2026-12-05T10:00&to=2026-12-05T10:00": "the time range ends before it starts",
		"from=2026-12-05T10:00&to=2026-12-05T09:00": "the time range ends before it starts",
	} {
		resp, page := b.get("/find?" + q)
		if resp.StatusCode != http.StatusBadRequest || !strings.Contains(html.UnescapeString(page), want) {
			t.Errorf("/find?%s: %s, want 400 saying %q", q, resp.Status, want)
		}
		if !strings.Contains(page, `<p class="error" role="alert">`) {
			t.Errorf("/find?%s: no error shown", q)
		}
	}
	// Several at once: all of them said.
	_, page := b.get("/find?study=x%20y&calling=" + url.QueryEscape(`a\b`))
	if p := html.UnescapeString(page); !strings.Contains(p, "is not a UID") || !strings.Contains(p, "is not an AE title") {
		t.Error("not every error is shown")
	}
	// What was typed is shown back escaped.
	_, page = b.get("/find?study=" + url.QueryEscape("<script>alert(1)</script>"))
	if strings.Contains(page, "<script>alert(1)") || !strings.Contains(page, "&lt;script&gt;alert(1)&lt;/script&gt;") {
		t.Error("a bad UID is shown unescaped")
	}
	if traces, _, _ := h.src.calls(); len(traces) != 0 {
		t.Fatalf("a bad search reached the ledger: %+v", traces)
	}
	// No criteria: the form, no search.
	if resp, page := b.get("/find"); resp.StatusCode != http.StatusOK || !strings.Contains(page, `<form class="find"`) {
		t.Errorf("/find: %s", resp.Status)
	}
	if traces, _, _ := h.src.calls(); len(traces) != 0 {
		t.Fatalf("an empty form searched: %+v", traces)
	}
}

func TestFindAsksTheLedger(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	b := h.browser("192.0.2.91")
	b.mustLogin()
	at := func(s string) time.Time {
		t.Helper()
		v, err := time.Parse(time.RFC3339, s)
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	for q, want := range map[string]ledger.Query{
		"study=1.2.3":                   {StudyInstanceUID: "1.2.3"},
		"sop=+1.2.3.4+":                 {SOPInstanceUID: "1.2.3.4"},
		"calling=CT+2":                  {CallingAE: "CT 2"},
		"calling=ABCDEFGHIJKLMNOP":      {CallingAE: "ABCDEFGHIJKLMNOP"},
		"from=2026-12-05T10:00":         {From: at("2026-12-05T10:00:00Z")},
		"to=2026-12-05T10:00:30":        {To: at("2026-12-05T10:00:30Z")},
		"from=2026-12-05+10:15":         {From: at("2026-12-05T10:15:00Z")},
		"from=2026-12-05+10:15:07":      {From: at("2026-12-05T10:15:07Z")},
		"from=2026-12-04&to=2026-12-05": {From: at("2026-12-04T00:00:00Z"), To: at("2026-12-05T00:00:00Z")},
		"study=1.2.3&sop=1.2.3.4&calling=CT2&from=2026-12-05T10:00&to=2026-12-05T11:30": {
			StudyInstanceUID: "1.2.3", SOPInstanceUID: "1.2.3.4", CallingAE: "CT2",
			From: at("2026-12-05T10:00:00Z"), To: at("2026-12-05T11:30:00Z"),
		},
	} {
		h.src.set(func(s *fakeSource) { s.traces = nil })
		if resp, _ := b.get("/find?" + q); resp.StatusCode != http.StatusOK {
			t.Errorf("/find?%s: %s", q, resp.Status)
		}
		want.Limit = maxFound + 1
		traces, _, _ := h.src.calls()
		if len(traces) != 1 || traces[0] != want {
			t.Errorf("/find?%s asked %+v, want %+v", q, traces, want)
			continue
		}
		for _, tm := range []time.Time{traces[0].From, traces[0].To} {
			if !tm.IsZero() && tm.Location() != time.UTC {
				t.Errorf("/find?%s: %v is not UTC", q, tm)
			}
		}
	}
	h.src.set(func(s *fakeSource) { s.traceErr = errors.New("database is locked") })
	if resp, page := b.get("/find?study=1.2.3"); resp.StatusCode != http.StatusInternalServerError || !strings.Contains(page, "The delivery ledger could not be read") {
		t.Errorf("a ledger error: %s", resp.Status)
	}
}

var deliveryRE = regexp.MustCompile(`<t[rd] class="delivery" data-destination="([^"]*)" data-state="([^"]*)"`)

func deliveries(s string) []string {
	var out []string
	for _, m := range deliveryRE.FindAllStringSubmatch(s, -1) {
		out = append(out, m[1]+"="+m[2])
	}
	return out
}

func TestFindShowsDeliveries(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	b := h.browser("192.0.2.92")
	b.mustLogin()
	retrying := pending("research")
	retrying.Retry = ledger.Retry{Attempts: 3, FirstFailure: t0.Add(-time.Hour), NextAttempt: t0.Add(time.Minute), LastError: "503 Service Unavailable"}
	one := object(obj1, "1.2.3.1", "1.2.3", "CT2", dead("kheops", "status A700: out of resources"), delivered("pacs"), retrying)
	one.Deliveries[1].Copy = "stamped ClinicalTrialSponsorName=KP-CT"

	// One object: every delivery in full.
	h.src.set(func(s *fakeSource) { s.found = []ledger.ObjectState{one} })
	_, page := b.get("/find?sop=1.2.3.1")
	if got := deliveries(page); !slices.Equal(got, []string{"kheops=dead", "pacs=delivered", "research=pending"}) {
		t.Errorf("deliveries %q", got)
	}
	for _, want := range []string{
		`<section class="object" data-sop="1.2.3.1" data-id="` + obj1 + `">`,
		"status A700: out of resources",
		"3 failed attempt(s) since 2026-12-05 11:00:00Z: 503 Service Unavailable",
		"next try 2026-12-05 12:01:00Z",
		"(stamped ClinicalTrialSponsorName=KP-CT)",
		"<strong>CT2</strong> (10.1.2.3) to DICOMGW",
		"<code>1.2.3</code><br><code>1.2.3.99</code>",
		"<code>1.2.840.10008.5.1.4.1.1.2</code>, 4.0 KiB, spool ID <code>" + obj1 + "</code>",
		"<tr><th>In the spool</th><td>yes</td></tr>",
		"1 object(s).",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the object's page lacks %q", want)
		}
	}

	// Several: a table, one column per destination, and a summary.
	two := object(obj2, "1.2.3.2", "1.2.3", "CT2", delivered("pacs"))
	two.GoneAt = t0.Add(-time.Minute)
	three := object(obj3, "1.2.3.3", "1.2.3", "CT2", dead("pacs", "refused"), pending("kheops"))
	h.src.set(func(s *fakeSource) { s.found = []ledger.ObjectState{one, two, three} })
	_, page = b.get("/find?study=1.2.3")
	if !strings.Contains(page, "3 object(s).") {
		t.Error("no count")
	}
	summary := regexp.MustCompile(`<tr class="dest-summary" data-destination="([^"]*)"><td>[^<]*</td><td class="n">(\d+)</td><td class="n">(\d+)</td><td class="n">(?:<a href="[^"]*">)?(\d+)`)
	var sums []string
	for _, m := range summary.FindAllStringSubmatch(page, -1) {
		sums = append(sums, strings.Join(m[1:], " "))
	}
	// destination delivered pending dead
	if want := []string{"kheops 0 1 1", "pacs 2 0 1", "research 0 1 0"}; !slices.Equal(sums, want) {
		t.Errorf("summary %q, want %q", sums, want)
	}
	rows := strings.Split(page, `<tr class="object"`)[1:]
	if len(rows) != 3 {
		t.Fatalf("%d object rows", len(rows))
	}
	for i, want := range [][]string{
		{"kheops=dead", "pacs=delivered", "research=pending"},
		{"pacs=delivered"},
		{"kheops=pending", "pacs=dead"},
	} {
		if got := deliveries(rows[i]); !slices.Equal(got, want) {
			t.Errorf("row %d: %q, want %q", i, got, want)
		}
	}
	if n := strings.Count(rows[1], "<td>—</td>"); n != 2 { // no kheops, no research
		t.Errorf("row 1: %d empty cells, want 2", n)
	}
	if !strings.Contains(rows[0], `title="status A700: out of resources"`) {
		t.Error("a dead delivery's reason is not in its cell")
	}

	// More than maxFound: the newest shown, and a hint.
	many := make([]ledger.ObjectState, maxFound+1)
	for i := range many {
		many[i] = object(obj1, "1.2.3."+strconv.Itoa(i), "1.2.3", "CT2", delivered("pacs"))
	}
	h.src.set(func(s *fakeSource) { s.found = many })
	_, page = b.get("/find?study=1.2.3")
	if n := strings.Count(page, `<tr class="object"`); n != maxFound || !strings.Contains(page, "the newest 200 shown: narrow the search for the rest") {
		t.Errorf("%d rows of %d objects found", n, len(many))
	}
	h.src.set(func(s *fakeSource) { s.found = nil })
	if _, page := b.get("/find?study=9.9"); !strings.Contains(page, "Nothing received matches.") {
		t.Error("an empty answer says nothing")
	}
}

// ---- what pages show: only what the sources gave, escaped ----

var urlAttrRE = regexp.MustCompile(`(?:href|action|src)="([^"]*)"`)

// consoleURL: every link and form of the console goes to one of its own
// pages with parameters that are UIDs, destinations or reason keys, never
// free text (a destination's reason could quote anything).
var consoleURL = regexp.MustCompile(`^(?:data:,|/|/static/console\.(?:css|js)|/(?:find|dead|associations|config|login|logout|dead/confirm|dead/act)|/find\?(?:sop|study)=[0-9.]+|/dead\?destination=[a-z0-9_-]+(?:&reason=[0-9a-f]{16})?)$`)

func TestPagesShowWhatTheyAreGivenEscaped(t *testing.T) {
	const (
		evil    = `<script>alert(1)</script>`
		evilEsc = `&lt;script&gt;alert(1)&lt;/script&gt;`
		quote   = `"><img src=x onerror=alert(2)>`
		patient = "DOE^JOHN" // a destination's error page that quotes a header
	)
	h := newHarness(t, Config{}, nil)
	x := object(obj1, "1.2.3.1", "1.2.3", evil, dead("pacs", evil+" "+patient), dead("kheops", quote))
	x.Peer, x.CalledAE = quote, evil
	x.Deliveries[1].Retry.LastError = evil
	y := object(obj2, "1.2.3.2", "1.2.3", "CT2", pending("pacs"))
	y.Deliveries[0].Retry = ledger.Retry{Attempts: 2, LastError: evil + patient}
	y.Deliveries[0].Copy = evil
	y.Unreadable = []string{evil}
	h.src.set(func(s *fakeSource) {
		s.found = []ledger.ObjectState{x, y}
		s.dead = []ledger.ObjectState{x}
		s.paused = map[string]string{"pacs": evil}
		s.failed = map[string]string{"pacs": evil + patient}
		s.failedAt = t0
	})
	h.reg.MustRegister(infoGauge(map[string]string{"pacs": "stow"}))
	b := h.browser("192.0.2.95")
	b.mustLogin()
	csrf := b.csrf()
	shown := map[string]string{}
	_, shown["/find?study=1.2.3"] = b.get("/find?study=1.2.3")
	h.src.set(func(s *fakeSource) { s.found = []ledger.ObjectState{y} })
	_, shown["/find?sop=1.2.3.2"] = b.get("/find?sop=1.2.3.2")
	h.src.set(func(s *fakeSource) { s.found = []ledger.ObjectState{x} })
	_, shown["/find?sop=1.2.3.1"] = b.get("/find?sop=1.2.3.1")
	_, shown["/dead"] = b.get("/dead")
	_, shown["/dead?destination=pacs&reason=..."] = b.get("/dead?destination=pacs&reason=" + reasonKey(evil+" "+patient))
	_, shown["/dead/confirm"] = b.post("/dead/confirm", url.Values{"csrf": {csrf}, "action": {"purge"}, "scope": {"selected"}, "sel": {obj1 + "/pacs", obj1 + "/kheops"}})
	_, shown["/"] = b.get("/")
	for name, page := range shown {
		if strings.Contains(page, "<script>") || strings.Contains(page, "<img") {
			t.Errorf("%s: markup from the sources came through unescaped", name)
		}
		if !strings.Contains(page, evilEsc) {
			t.Errorf("%s: %q is not shown escaped", name, evil)
		}
		for _, m := range urlAttrRE.FindAllStringSubmatch(page, -1) {
			if u := html.UnescapeString(m[1]); !consoleURL.MatchString(u) {
				t.Errorf("%s: a link or form to %q", name, u)
			}
		}
		// The identifiers the page names are the ones the ledger gave.
		for _, m := range regexp.MustCompile(`data-(?:sop|id)="([^"]*)"`).FindAllStringSubmatch(page, -1) {
			if !slices.Contains([]string{"1.2.3.1", "1.2.3.2", obj1, obj2}, m[1]) {
				t.Errorf("%s: an object %q the ledger did not give", name, m[1])
			}
		}
	}
	if !strings.Contains(shown["/find?sop=1.2.3.1"], "<strong>"+evilEsc+"</strong> (&#34;&gt;&lt;img src=x onerror=alert(2)&gt;) to "+evilEsc) {
		t.Errorf("the calling AE, the peer and the called AE are not shown (escaped):\n%s", shown["/find?sop=1.2.3.1"])
	}
	if !strings.Contains(shown["/find?sop=1.2.3.2"], "Rows the ledger could not read: "+evilEsc) {
		t.Error("unreadable rows are not shown (escaped)")
	}
}

// ---- overview ----

func infoGauge(dests map[string]string) prometheus.Collector {
	info := prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "dicomgw_destination_info", Help: "Destinations."}, []string{"destination", "kind"})
	for d, k := range dests {
		info.WithLabelValues(d, k).Set(1)
	}
	return info
}

func gaugeVec(name string, labels ...string) *prometheus.GaugeVec {
	return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: name}, labels)
}

func gauge(name string, v float64) prometheus.Gauge {
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: name})
	g.Set(v)
	return g
}

var (
	metricAttrRE   = regexp.MustCompile(`data-metric="([^"]*)" data-value="([^"]*)"`)
	absentAttrRE   = regexp.MustCompile(`data-absent="([^"]*)"`)
	increaseAttrRE = regexp.MustCompile(`data-increase="([^"]*)" data-value="([^"]*)" data-window="([^"]*)"`)
)

// shownNumbers are a page's numbers by series.
func shownNumbers(t *testing.T, page string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, m := range metricAttrRE.FindAllStringSubmatch(page, -1) {
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			t.Errorf("data-value %q: %v", m[2], err)
		}
		key := html.UnescapeString(m[1])
		if _, dup := out[key]; dup {
			t.Errorf("%s shown twice", key)
		}
		out[key] = v
	}
	return out
}

func TestOverviewIsTheExposition(t *testing.T) {
	inst := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dicomgw_forward_instances_total", Help: "Instances."}, []string{"destination", "outcome"})
	h := newHarness(t, Config{}, func(reg *prometheus.Registry) {
		up := gaugeVec("dicomgw_forward_destination_up", "destination")
		queued := gaugeVec("dicomgw_destination_queued_objects", "destination")
		oldest := gaugeVec("dicomgw_destination_oldest_queued_age_seconds", "destination")
		deadObjs := gaugeVec("dicomgw_destination_dead_objects", "destination")
		objs := gaugeVec("dicomgw_spool_objects", "state")
		assocs := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dicomgw_associations_total", Help: "x"}, []string{"outcome"})
		commit := gaugeVec("dicomgw_commitment_open_requests", "state")
		reg.MustRegister(infoGauge(map[string]string{"pacs": "cstore", "kheops": "stow", "archive": "archive"}),
			up, queued, oldest, deadObjs, objs, assocs, commit, inst,
			gauge("dicomgw_spool_used_bytes", 1<<30),
			gauge("dicomgw_spool_limit_bytes", 4<<30),
			gauge("dicomgw_spool_filesystem_free_bytes", 1.5e12),
			gauge("dicomgw_spool_filesystem_size_bytes", 2e12),
			gauge("dicomgw_spool_refusing", 0),
			gauge("dicomgw_spool_incoming_objects", 1),
			gauge("dicomgw_associations_active", 2),
		)
		up.WithLabelValues("pacs").Set(1)
		up.WithLabelValues("kheops").Set(0)
		queued.WithLabelValues("pacs").Set(12)
		queued.WithLabelValues("kheops").Set(345)
		queued.WithLabelValues("archive").Set(0)
		oldest.WithLabelValues("pacs").Set(90.5)
		oldest.WithLabelValues("kheops").Set(3600)
		deadObjs.WithLabelValues("pacs").Set(2)
		deadObjs.WithLabelValues("kheops").Set(0)
		objs.WithLabelValues("queued").Set(357)
		objs.WithLabelValues("dead").Set(2)
		objs.WithLabelValues("delivered").Set(10)
		assocs.WithLabelValues("released").Add(40)
		assocs.WithLabelValues("rejected").Add(3)
		commit.WithLabelValues("waiting").Set(1)
		inst.WithLabelValues("pacs", "delivered").Add(100) // before the console: its baseline
	})
	h.src.set(func(s *fakeSource) { s.paused = map[string]string{"kheops": "not_dicom_answer: a login page"} })
	// Since the console started (its first sample, at New):
	inst.WithLabelValues("pacs", "delivered").Add(7)
	inst.WithLabelValues("kheops", "retried").Add(3)
	inst.WithLabelValues("kheops", "dead_lettered").Add(1)
	h.clk.Advance(10 * time.Minute)

	b := h.browser("192.0.2.100")
	b.mustLogin()
	resp, page := b.get("/")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /: %s", resp.Status)
	}
	exposed := exposition(t, h.reg)
	shown := shownNumbers(t, page)
	want := []string{
		`dicomgw_forward_destination_up{destination="kheops"}`,
		`dicomgw_forward_destination_up{destination="pacs"}`,
		`dicomgw_destination_queued_objects{destination="archive"}`,
		`dicomgw_destination_queued_objects{destination="kheops"}`,
		`dicomgw_destination_queued_objects{destination="pacs"}`,
		`dicomgw_destination_oldest_queued_age_seconds{destination="kheops"}`,
		`dicomgw_destination_oldest_queued_age_seconds{destination="pacs"}`,
		`dicomgw_destination_dead_objects{destination="kheops"}`,
		`dicomgw_destination_dead_objects{destination="pacs"}`,
		`dicomgw_spool_used_bytes`,
		`dicomgw_spool_limit_bytes`,
		`dicomgw_spool_filesystem_free_bytes`,
		`dicomgw_spool_refusing`,
		`dicomgw_spool_objects{state="queued"}`,
		`dicomgw_spool_objects{state="dead"}`,
		`dicomgw_spool_objects{state="delivered"}`,
		`dicomgw_spool_incoming_objects`,
		`dicomgw_associations_active`,
		`dicomgw_associations_total{outcome="released"}`,
		`dicomgw_commitment_open_requests{state="waiting"}`,
	}
	if got := slices.Sorted(maps.Keys(shown)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
		t.Errorf("the overview shows\n%q\nwant\n%q", got, slices.Sorted(slices.Values(want)))
	}
	for key, v := range shown {
		ev, ok := exposed[key]
		if !ok {
			t.Errorf("%s is on the overview, not in /metrics", key)
		} else if ev != v {
			t.Errorf("%s: overview %v, /metrics %v", key, v, ev)
		}
	}
	// What the registry lacks is said to be absent, never shown as a series.
	var absent []string
	for _, m := range absentAttrRE.FindAllStringSubmatch(page, -1) {
		key := html.UnescapeString(m[1])
		absent = append(absent, key)
		if _, ok := exposed[key]; ok {
			t.Errorf("%s is in /metrics, yet marked absent", key)
		}
	}
	wantAbsent := []string{
		`dicomgw_forward_destination_up{destination="archive"}`,
		`dicomgw_destination_oldest_queued_age_seconds{destination="archive"}`,
		`dicomgw_destination_dead_objects{destination="archive"}`,
	}
	if !slices.Equal(slices.Sorted(slices.Values(absent)), slices.Sorted(slices.Values(wantAbsent))) {
		t.Errorf("absent %q, want %q", absent, wantAbsent)
	}
	if !strings.Contains(page, "<tr><th>Free space kept (--spool-min-free)</th><td>none</td></tr>") {
		t.Error("an absent min-free is not shown as none")
	}

	// Increases since the start (less than an hour ago): the counter less
	// its sample at New, or all of it when it was not there yet.
	inc := map[string]string{}
	for _, m := range increaseAttrRE.FindAllStringSubmatch(page, -1) {
		inc[html.UnescapeString(m[1])] = m[2] + " over " + m[3]
	}
	for key, want := range map[string]string{
		`dicomgw_forward_instances_total{destination="pacs",outcome="delivered"}`:       "7 over 600",
		`dicomgw_forward_instances_total{destination="pacs",outcome="retried"}`:         "0 over 600",
		`dicomgw_forward_instances_total{destination="kheops",outcome="retried"}`:       "3 over 600",
		`dicomgw_forward_instances_total{destination="kheops",outcome="dead_lettered"}`: "1 over 600",
		`dicomgw_forward_instances_total{destination="archive",outcome="delivered"}`:    "0 over 600",
	} {
		if inc[key] != want {
			t.Errorf("%s: %q, want %q", key, inc[key], want)
		}
	}
	if len(inc) != 9 {
		t.Errorf("%d increases, want 3 per destination", len(inc))
	}
	if !strings.Contains(page, "since start (10 min 0 s)") || strings.Contains(page, "last hour</small>") {
		t.Error("the window is not 'since start'")
	}
	// Each destination's state.
	for dest, status := range map[string]string{"pacs": "up", "kheops": "paused", "archive": "up"} {
		if !strings.Contains(page, `<tr class="dest state-`+status+`" data-destination="`+dest+`">`) {
			t.Errorf("%s is not %s", dest, status)
		}
	}
	if !strings.Contains(page, `<span class="why">not_dicom_answer: a login page</span>`) {
		t.Error("why kheops is paused is not shown")
	}
	if !strings.Contains(page, `<body data-refresh="5">`) || !strings.Contains(page, `src="/static/console.js"`) {
		t.Error("the overview does not refresh itself")
	}
}

// "In the last hour" is the increase since the newest sample at least an
// hour old.
func TestOverviewLastHour(t *testing.T) {
	inst := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dicomgw_forward_instances_total", Help: "Instances."}, []string{"destination", "outcome"})
	h := newHarness(t, Config{}, func(reg *prometheus.Registry) {
		reg.MustRegister(infoGauge(map[string]string{"pacs": "stow"}), inst)
		inst.WithLabelValues("pacs", "delivered")
	})
	b := h.browser("192.0.2.101")
	b.mustLogin()
	// Just started: nothing yet, over nothing.
	_, page := b.get("/")
	if !strings.Contains(page, "since start (0 s)") {
		t.Errorf("just started, the window is not 'since start (0 s)':\n%s", page)
	}
	for range 8 { // 2 h, a sample every 15 min, 10 delivered in each
		h.clk.Advance(15 * time.Minute)
		inst.WithLabelValues("pacs", "delivered").Add(10)
		h.c.sample()
	}
	inst.WithLabelValues("pacs", "delivered").Add(5) // 85, against 40 an hour ago
	b.mustLogin()                                    // 2 h idle
	_, page = b.get("/")
	m := increaseAttrRE.FindStringSubmatch(page)
	if m == nil || html.UnescapeString(m[1]) != `dicomgw_forward_instances_total{destination="pacs",outcome="delivered"}` || m[2] != "45" || m[3] != "3600" {
		t.Errorf("delivered in the last hour: %v, want 45 over 3600 s", m)
	}
	if !strings.Contains(page, "last hour</small>") {
		t.Error("not labelled 'last hour'")
	}
}

// A destination whose attempts fail, none delivered, is "failing", with
// its last failure.
func TestOverviewFailing(t *testing.T) {
	inst := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "dicomgw_forward_instances_total", Help: "Instances."}, []string{"destination", "outcome"})
	h := newHarness(t, Config{}, func(reg *prometheus.Registry) {
		reg.MustRegister(infoGauge(map[string]string{"pacs": "stow", "kheops": "stow"}), inst)
	})
	h.src.set(func(s *fakeSource) {
		s.failed = map[string]string{"pacs": "503 Service Unavailable", "kheops": "timeout"}
		s.failedAt = t0.Add(9 * time.Minute)
	})
	h.clk.Advance(10 * time.Minute)
	inst.WithLabelValues("pacs", "retried").Add(4)
	inst.WithLabelValues("kheops", "retried").Add(4)
	inst.WithLabelValues("kheops", "delivered").Add(1)
	b := h.browser("192.0.2.102")
	b.mustLogin()
	_, page := b.get("/")
	if !strings.Contains(page, `<tr class="dest state-failing" data-destination="pacs">`) ||
		!strings.Contains(page, "4 failed attempt(s) in the last 10 min 0 s, none delivered") ||
		!strings.Contains(page, "last failure 2026-12-05 12:09:00Z: 503 Service Unavailable") {
		t.Errorf("pacs is not failing:\n%s", page)
	}
	if !strings.Contains(page, `<tr class="dest state-up" data-destination="kheops">`) || strings.Contains(page, "timeout") {
		t.Error("a destination that delivers is not up")
	}
}

type brokenCollector struct{ d *prometheus.Desc }

func (c brokenCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.d }
func (c brokenCollector) Collect(ch chan<- prometheus.Metric) {
	ch <- prometheus.NewInvalidMetric(c.d, errors.New("the disk sensor is gone"))
}

// A collector that fails costs its numbers, not the page.
func TestOverviewWithABrokenCollector(t *testing.T) {
	h := newHarness(t, Config{}, func(reg *prometheus.Registry) {
		reg.MustRegister(brokenCollector{prometheus.NewDesc("dicomgw_broken", "x", nil, nil)}, gauge("dicomgw_spool_used_bytes", 1024))
	})
	b := h.browser("192.0.2.103")
	b.mustLogin()
	resp, page := b.get("/")
	if resp.StatusCode != http.StatusOK || !strings.Contains(page, "Some numbers could not be read") || !strings.Contains(page, "the disk sensor is gone") {
		t.Errorf("%s:\n%s", resp.Status, page)
	}
	if shownNumbers(t, page)["dicomgw_spool_used_bytes"] != 1024 {
		t.Error("the numbers that could be read are not shown")
	}
}

// ---- numbers ----

func TestSeriesKeyIsTheExposition(t *testing.T) {
	for _, tc := range []struct {
		name   string
		labels []string
		want   string
	}{
		{"m", nil, "m"},
		{"m", []string{"b", "2", "a", "1"}, `m{a="1",b="2"}`},
		{"m", []string{"outcome", `a"b`, "destination", `x\y`}, `m{destination="x\\y",outcome="a\"b"}`},
		{"m", []string{"l", "line\nbreak"}, `m{l="line\nbreak"}`},
		{"m", []string{"l", "<b>&</b>"}, `m{l="<b>&</b>"}`},
	} {
		if got := seriesKey(tc.name, tc.labels...); got != tc.want {
			t.Errorf("seriesKey(%q, %q) = %s, want %s", tc.name, tc.labels, got, tc.want)
		}
	}
	// Against the registry's own exposition, odd values included.
	reg := prometheus.NewRegistry()
	g := gaugeVec("dicomgw_test", "zeta", "alpha")
	reg.MustRegister(g)
	values := [][2]string{{"plain", "x"}, {`back\slash`, `"quoted"`}, {"new\nline", "ünï"}}
	for i, v := range values {
		g.WithLabelValues(v[0], v[1]).Set(float64(i + 1))
	}
	exposed := exposition(t, reg)
	fams, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	s := flatten(fams)
	for i, v := range values {
		key := seriesKey("dicomgw_test", "zeta", v[0], "alpha", v[1])
		if exposed[key] != float64(i+1) || s[key] != float64(i+1) {
			t.Errorf("%s: exposition %v, flatten %v, want %d", key, exposed[key], s[key], i+1)
		}
	}
	if len(exposed) != len(values) || len(s) != len(values) {
		t.Errorf("exposition %v, flatten %v", exposed, s)
	}
}

func TestHistoryBaseline(t *testing.T) {
	clk := &fakeClock{t: t0}
	h := newHistory(clk.Now, time.Hour+15*time.Second)
	if inc := h.increase("c", 5, time.Hour); inc.Value != 5 || inc.Window != 0 {
		t.Errorf("no samples: %+v", inc)
	}
	// Samples at 0, 20, 40 and 70 minutes.
	at := map[time.Duration]float64{0: 0, 20 * time.Minute: 10, 40 * time.Minute: 30, 70 * time.Minute: 60}
	for _, d := range []time.Duration{0, 20 * time.Minute, 40 * time.Minute, 70 * time.Minute} {
		clk.t = t0.Add(d)
		h.add(series{"c": at[d]})
	}
	for _, tc := range []struct {
		now, window time.Duration
		cur         float64
		value       float64
		over        time.Duration
	}{
		// The newest sample at least an hour old: the one at 20 min.
		{80 * time.Minute, time.Hour, 70, 60, time.Hour},
		// Exactly an hour old counts.
		{100 * time.Minute, time.Hour, 70, 40, time.Hour},
		{101 * time.Minute, time.Hour, 70, 40, 61 * time.Minute},
		// None is old enough: the oldest (since the start).
		{50 * time.Minute, time.Hour, 40, 40, 50 * time.Minute},
		// A short window.
		{75 * time.Minute, 5 * time.Minute, 61, 1, 5 * time.Minute},
		{74 * time.Minute, 5 * time.Minute, 61, 31, 34 * time.Minute},
	} {
		clk.t = t0.Add(tc.now)
		if inc := h.increase("c", tc.cur, tc.window); inc.Value != tc.value || inc.Window != tc.over || inc.Key != "c" {
			t.Errorf("at %v over %v: %+v, want %v over %v", tc.now, tc.window, inc, tc.value, tc.over)
		}
	}
	// A counter the baseline lacks started at 0.
	clk.t = t0.Add(80 * time.Minute)
	if inc := h.increase("new", 9, time.Hour); inc.Value != 9 || inc.Window != time.Hour {
		t.Errorf("a counter the baseline lacks: %+v", inc)
	}
	// A counter that went down (cannot happen): its value, never negative.
	if inc := h.increase("c", 3, time.Hour); inc.Value != 3 {
		t.Errorf("a counter that went down: %+v", inc)
	}
}

func TestHistoryKeepsWhatAWindowNeeds(t *testing.T) {
	clk := &fakeClock{t: t0}
	keep := time.Hour + 15*time.Second
	h := newHistory(clk.Now, keep)
	for i := range 600 { // 150 min, every 15 s
		h.add(series{"c": float64(i)})
		clk.Advance(15 * time.Second)
	}
	clk.Advance(-15 * time.Second)
	if n := len(h.samples); n < 241 || n > 243 {
		t.Errorf("%d samples kept for %v at 15 s", n, keep)
	}
	if age := clk.Now().Sub(h.samples[0].at); age < keep {
		t.Errorf("the oldest sample kept is %v old, less than %v", age, keep)
	}
	if inc := h.increase("c", 599, time.Hour); inc.Value != 240 || inc.Window != time.Hour {
		t.Errorf("increase over the hour: %+v", inc)
	}
}

// ---- associations and configuration ----

func TestAssociationsRing(t *testing.T) {
	a := NewAssociations(3)
	if got := a.Recent(); len(got) != 0 {
		t.Errorf("empty: %v", got)
	}
	names := func() string {
		var s []string
		for _, x := range a.Recent() {
			s = append(s, x.CallingAE)
		}
		return strings.Join(s, ",")
	}
	for i, want := range []string{"A0", "A1,A0", "A2,A1,A0", "A3,A2,A1", "A4,A3,A2", "A5,A4,A3", "A6,A5,A4"} {
		a.Record(dimseSummary("A"+strconv.Itoa(i), "DICOMGW"))
		if got := names(); got != want {
			t.Errorf("after %d: %s, want %s", i+1, got, want)
		}
	}
	if n := len(NewAssociations(0).ring); n != DefaultRecentAssociations {
		t.Errorf("NewAssociations(0) keeps %d", n)
	}
	if n := len(NewAssociations(-1).ring); n != DefaultRecentAssociations {
		t.Errorf("NewAssociations(-1) keeps %d", n)
	}
}

func TestAssociationsPage(t *testing.T) {
	assocs := NewAssociations(3)
	var active []dimse.Summary
	h := newHarness(t, Config{Associations: assocs, Active: func() []dimse.Summary { return active }, Refresh: 7 * time.Second}, func(reg *prometheus.Registry) {
		reg.MustRegister(gauge("dicomgw_associations_active", 1))
	})
	for i := range 5 {
		s := dimseSummary("CT"+strconv.Itoa(i), "DICOMGW")
		s.Start = t0.Add(time.Duration(i) * time.Minute)
		s.Duration = 1500 * time.Millisecond
		s.Stores, s.Echoes, s.Bytes = 10*i, 1, 1<<20
		assocs.Record(s)
	}
	x := dimseSummary("<b>X</b>", `"><i>called</i>`)
	x.Outcome = dimse.EndRejected
	x.Detail = "<u>called AE title not recognised</u>"
	assocs.Record(x)
	running := dimseSummary("<em>RUN</em>", "DICOMGW")
	running.Start, running.Stores = t0, 3
	active = append(active, running)
	b := h.browser("192.0.2.110")
	b.mustLogin()
	resp, page := b.get("/associations")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /associations: %s", resp.Status)
	}
	rows := regexp.MustCompile(`<tr class="assoc outcome-[a-z_]+">\s*<td>[^<]*</td>\s*<td>([^<]*)</td>`).FindAllStringSubmatch(page, -1)
	var got []string
	for _, r := range rows {
		got = append(got, r[1])
	}
	if want := []string{"&lt;b&gt;X&lt;/b&gt;", "CT4", "CT3"}; !slices.Equal(got, want) {
		t.Errorf("ended %q, want %q (the 3 most recent, newest first)", got, want)
	}
	for _, raw := range []string{"<b>X</b>", "<i>called", "<u>called", "<em>RUN"} {
		if strings.Contains(page, raw) {
			t.Errorf("%q unescaped", raw)
		}
	}
	for _, want := range []string{
		"&#34;&gt;&lt;i&gt;called&lt;/i&gt;",
		"&lt;u&gt;called AE title not recognised&lt;/u&gt;",
		`<tr class="assoc-active">`,
		"&lt;em&gt;RUN&lt;/em&gt;",
		"The last 3 that ended are kept",
		`data-metric="dicomgw_associations_active" data-value="1"`,
		`<td class="n">40</td>`,
		"1 echo",
		"1.0 MiB",
		"1.5 s",
		`<body data-refresh="7">`,
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the page lacks %q", want)
		}
	}
}

func TestConfigPage(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	b := h.browser("192.0.2.120")
	b.mustLogin()
	if resp, _ := b.get("/config"); resp.StatusCode != http.StatusOK {
		t.Fatalf("no settings yet: %s", resp.Status)
	}
	h.c.SetSettings(Settings{
		Flags: []Setting{{Name: "listen", Value: ":11112"}, {Name: "route", None: true}, {Name: "forward-url", Value: "https://pacs.example/dicom-web?<x>"}},
		Destinations: []DestinationSetting{
			{Name: "pacs", Kind: "stow", Where: "--destination", Spec: "pacs=stow:https://pacs.example/dicom-web", Routed: true},
			{Name: "spare", Kind: "cstore", Where: "flags file line 3", Spec: "spare=cstore:SPARE@10.0.0.2:104"},
		},
		Routes:  []string{`calling="CT2" -> pacs`},
		Loaded:  t0,
		Version: "v1.2.3 (abcdef)",
	})
	_, page := b.get("/config")
	for _, want := range []string{
		"In force since 2026-12-05 12:00:00Z (v1.2.3 (abcdef))",
		`<tr><th><code>--listen</code></th><td><code>:11112</code></td></tr>`,
		`<tr><th><code>--route</code></th><td><span class="note">none</span></td></tr>`,
		"https://pacs.example/dicom-web?&lt;x&gt;",
		`<tr data-destination="spare"><td>spare</td><td>cstore</td><td><code>spare=cstore:SPARE@10.0.0.2:104</code> <span class="note">(no route sends anything here)</span></td><td>flags file line 3</td></tr>`,
		"<li><code>calling=&#34;CT2&#34; -&gt; pacs</code></li>",
		"refused (0124) before it is stored",
	} {
		if !strings.Contains(page, want) {
			t.Errorf("the configuration page lacks %q", want)
		}
	}
	if strings.Count(page, "(no route sends anything here)") != 1 {
		t.Error("a routed destination is said to be unrouted")
	}
}

func dimseSummary(calling, called string) dimse.Summary {
	return dimse.Summary{CallingAE: calling, CalledAE: called, Outcome: dimse.EndReleased}
}

// Run samples until its context ends.
func TestRunEndsWithItsContext(t *testing.T) {
	h := newHarness(t, Config{}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan struct{})
	go func() { h.c.Run(ctx); close(done) }()
	<-done
}
