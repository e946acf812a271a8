package conformance

// security_upstream_test.go: delivery to a STOW-RS endpoint that wants
// credentials and speaks TLS with a private CA: bearer token files
// (rotated while running), HTTP Basic, OAuth2 client credentials (renewed
// before expiry and after a 401), pause on refused credentials and resume
// as soon as they change, server and client certificates, redirects to
// another origin, and a KHEOPS-shaped endpoint (album token, ?album=).
// The endpoints are Go test servers around stowFake.

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/ledger"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// upstream is a STOW-RS endpoint over TLS: decide looks at each request
// first (credentials, redirects...) and either answers it or lets the
// stowFake store it. Every request is recorded.
type upstream struct {
	t      *testing.T
	fake   *stowFake
	srv    *httptest.Server
	prefix string // the service root's path: /dicom-web, or /api for KHEOPS

	mu     sync.Mutex
	decide func(r *http.Request) (status int, location string) // status 0: store it
	reqs   []upstreamRequest
}

type upstreamRequest struct {
	at                  time.Time
	method, path, query string
	auth                string // the Authorization header
	clientCN            string // the TLS client certificate's subject CN, if any
	status              int
}

// upstreamOptions says how the endpoint's TLS is set up.
type upstreamOptions struct {
	cert          *harness.Cert // nil: the fixture's server certificate
	requireClient bool          // require a client certificate of the fixture's CA
	prefix        string        // "": /dicom-web
}

func newUpstream(t *testing.T, fx *securityFixture, o upstreamOptions, decide func(r *http.Request) (int, string)) *upstream {
	t.Helper()
	if o.cert == nil {
		o.cert = fx.server
	}
	if o.prefix == "" {
		o.prefix = "/dicom-web"
	}
	if decide == nil {
		decide = func(*http.Request) (int, string) { return 0, "" }
	}
	u := &upstream{t: t, prefix: o.prefix, decide: decide}
	u.fake = &stowFake{t: t, stored: map[string][]byte{}, answer: func(int, []string) (int, string, map[string]uint16) {
		return http.StatusOK, "", nil
	}}
	u.srv = httptest.NewUnstartedServer(u)
	u.srv.TLS = &tls.Config{Certificates: []tls.Certificate{o.cert.TLS}, MinVersion: tls.VersionTLS12}
	if o.requireClient {
		u.srv.TLS.ClientAuth, u.srv.TLS.ClientCAs = tls.RequireAndVerifyClientCert, fx.ca.Pool()
	}
	// Refused handshakes are the point of some tests: keep them out of
	// the test output.
	u.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	u.srv.StartTLS()
	t.Cleanup(u.srv.Close)
	return u
}

// URL is the service root the gateway is given.
func (u *upstream) URL() string { return u.srv.URL + u.prefix }

func (u *upstream) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := upstreamRequest{at: time.Now(), method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, auth: r.Header.Get("Authorization")}
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		rec.clientCN = r.TLS.PeerCertificates[0].Subject.CommonName
	}
	u.mu.Lock()
	decide := u.decide
	u.mu.Unlock()
	status, location := decide(r)
	if status == 0 {
		// The stowFake serves /dicom-web/studies...: map the root onto it.
		r2 := r.Clone(r.Context())
		r2.URL.Path = "/dicom-web" + strings.TrimPrefix(r.URL.Path, u.prefix)
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		u.fake.ServeHTTP(sw, r2)
		rec.status = sw.status
	} else {
		io.Copy(io.Discard, r.Body)
		if location != "" {
			w.Header().Set("Location", location)
		}
		if status == http.StatusUnauthorized {
			w.Header().Set("WWW-Authenticate", `Bearer realm="dicomweb", error="invalid_token"`)
		}
		w.WriteHeader(status)
		rec.status = status
	}
	u.mu.Lock()
	u.reqs = append(u.reqs, rec)
	u.mu.Unlock()
}

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (s *statusWriter) WriteHeader(code int) {
	s.status = code
	s.ResponseWriter.WriteHeader(code)
}

func (u *upstream) requests() []upstreamRequest {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]upstreamRequest(nil), u.reqs...)
}

// checkStored fails unless the endpoint stored each of objs with its data
// set byte for byte.
func (u *upstream) checkStored(t *testing.T, objs []testObject) {
	t.Helper()
	_, stored := u.fake.snapshot()
	for _, o := range objs {
		if ds, ok := stored[o.SOPInstanceUID]; !ok {
			t.Errorf("%s was not stored by the endpoint", o.SOPInstanceUID)
		} else if string(ds) != string(o.DataSet) {
			t.Errorf("%s: the endpoint's data set differs: %s", o.SOPInstanceUID, firstDiff(ds, o.DataSet))
		}
	}
}

// bearer returns the token of a "Bearer" Authorization header.
func bearer(r *http.Request) string {
	tok, _ := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return tok
}

// writeSecretFile writes a credentials file (0600).
func writeSecretFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

// upstreamArgs are the flags that point a gateway at u, trusting the
// fixture's CA, with quick retries.
func upstreamArgs(fx *securityFixture, u *upstream, extra ...string) []string {
	return append(append([]string{"--stow-url", u.URL(), "--stow-ca-file", fx.ca.CAFile}, fastRetry...), extra...)
}

// waitFor polls cond until it holds or timeout passes.
func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// oauthServer is an OAuth 2.0 token endpoint (RFC 6749 4.4, client
// credentials grant) over TLS that issues random access tokens valid for
// expiresIn, and can revoke every token issued so far.
type oauthServer struct {
	fx                       *securityFixture
	srv                      *httptest.Server
	clientID, secret, scopes string
	expiresIn                int

	mu      sync.Mutex
	issued  map[string]time.Time // token -> expiry
	revoked map[string]bool
	grants  int
	refused int
}

func newOAuthServer(t *testing.T, fx *securityFixture, clientID, secret, scopes string, expiresIn int) *oauthServer {
	o := &oauthServer{fx: fx, clientID: clientID, secret: secret, scopes: scopes, expiresIn: expiresIn,
		issued: map[string]time.Time{}, revoked: map[string]bool{}}
	o.srv = httptest.NewUnstartedServer(o)
	o.srv.TLS = &tls.Config{Certificates: []tls.Certificate{fx.server.TLS}}
	o.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	o.srv.StartTLS()
	t.Cleanup(o.srv.Close)
	return o
}

func (o *oauthServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	id, secret, ok := r.BasicAuth()
	err := r.ParseForm()
	o.mu.Lock()
	defer o.mu.Unlock()
	if r.Method != http.MethodPost || r.URL.Path != "/token" || err != nil || !ok || id != o.clientID || secret != o.secret ||
		r.PostForm.Get("grant_type") != "client_credentials" || r.PostForm.Get("scope") != o.scopes {
		o.refused++
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, `{"error":"invalid_client"}`)
		return
	}
	o.grants++
	tok := randomSecret(fmt.Sprintf("access-%d-", o.grants))
	o.fx.secret("OAuth2 access token", tok)
	o.issued[tok] = time.Now().Add(time.Duration(o.expiresIn) * time.Second)
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(map[string]any{"access_token": tok, "token_type": "Bearer", "expires_in": o.expiresIn})
}

// valid says whether tok was issued, is not revoked and has not expired.
func (o *oauthServer) valid(tok string) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	exp, ok := o.issued[tok]
	return ok && !o.revoked[tok] && time.Now().Before(exp)
}

func (o *oauthServer) revokeAll() {
	o.mu.Lock()
	defer o.mu.Unlock()
	for tok := range o.issued {
		o.revoked[tok] = true
	}
}

func (o *oauthServer) counts() (grants, refused int) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.grants, o.refused
}

// testUpstreamOAuth2: the client credentials grant against a token
// endpoint behind the private CA. Every STOW-RS request carries a valid
// access token; a token that is about to expire (expires_in 12 s: the
// OAuth2 client renews 10 s early) is renewed before the next request
// without any 401; a token the endpoint revokes gets a 401, after which the
// gateway fetches a new token and retries at once, successfully, without
// pausing. The expiry is exported in dicomgw_stow_credential_expiry_seconds.
func testUpstreamOAuth2(t *testing.T, fx *securityFixture) {
	dir := t.TempDir()
	secret := randomSecret("client-secret-")
	fx.secret("OAuth2 client secret", secret)
	secretFile := filepath.Join(dir, "client-secret")
	writeSecretFile(t, secretFile, secret)
	o := newOAuthServer(t, fx, "dicomgw-gw1", secret, "dicomweb.write studies", 12)
	up := newUpstream(t, fx, upstreamOptions{}, func(r *http.Request) (int, string) {
		if !o.valid(bearer(r)) {
			return http.StatusUnauthorized, ""
		}
		return 0, ""
	})
	g := fx.gateway(t, upstreamArgs(fx, up, "--stow-oauth2-token-url", o.srv.URL+"/token", "--stow-oauth2-client-id", "dicomgw-gw1",
		"--stow-oauth2-client-secret-file", secretFile, "--stow-oauth2-scopes", "dicomweb.write,studies")...)

	batch := func(n int) []testObject {
		t.Helper()
		objs := studyObjects(t, t.TempDir(), n, 4<<10)
		storeAll(t, g.Addr, "OAUTHSCU", objs)
		if c := waitDrained(t, g, 30*time.Second); c.Dead != 0 {
			t.Fatalf("dead letters: %v", c)
		}
		up.checkStored(t, objs)
		return objs
	}
	batch(3)
	if grants, refused := o.counts(); grants != 1 || refused != 0 {
		t.Errorf("after the first batch: %d tokens granted, %d grant requests refused; want 1, 0", grants, refused)
	}
	exp := metricValue(t, g, "dicomgw_stow_credential_expiry_seconds", `kind="oauth2-client-credentials"`, `destination="default"`)
	if exp <= 0 || exp > 12 {
		t.Errorf("dicomgw_stow_credential_expiry_seconds{kind=oauth2-client-credentials} = %v, want within (0, 12]", exp)
	}

	// Renewed before expiry: 2 s after it was issued, 10 s before it
	// expires, the token is due for renewal.
	time.Sleep(2500 * time.Millisecond)
	batch(2)
	reqs := up.requests()
	if grants, _ := o.counts(); grants != 2 {
		t.Errorf("a token within 10 s of expiry was not renewed: %d tokens granted, want 2", grants)
	}
	for _, r := range reqs {
		if r.status == http.StatusUnauthorized {
			t.Errorf("a request got 401 before any token was revoked (token sent expired or wrong)")
		}
	}
	if len(reqs) < 2 || reqs[0].auth == reqs[len(reqs)-1].auth {
		t.Errorf("the second batch was sent with the first token")
	}

	// Revoked: 401, a new token, the same request again at once.
	o.revokeAll()
	n0 := len(up.requests())
	batch(2)
	reqs = up.requests()[n0:]
	if len(reqs) < 2 || reqs[0].status != http.StatusUnauthorized || reqs[1].status != http.StatusOK {
		t.Fatalf("after revocation: requests %v, want one 401 then 200s", statuses(reqs))
	}
	for _, r := range reqs[2:] {
		if r.status != http.StatusOK {
			t.Errorf("after revocation: requests %v, want one 401 then 200s", statuses(reqs))
		}
	}
	if gap := reqs[1].at.Sub(reqs[0].at); gap > time.Second {
		t.Errorf("the retry after a 401 came %v later, want at once", gap)
	}
	if reqs[0].auth == reqs[1].auth {
		t.Errorf("the retry after a 401 carried the same token")
	}
	if grants, _ := o.counts(); grants != 3 {
		t.Errorf("%d tokens granted after the 401, want 3", grants)
	}
	if l := g.LogLines("destination paused: objects are kept until it accepts them again"); len(l) != 0 {
		t.Errorf("the destination was paused although the refreshed token worked: %v", l)
	}
	for _, r := range up.requests() {
		if !strings.HasPrefix(r.auth, "Bearer access-") {
			t.Errorf("a request to %s went without the access token: Authorization %q", r.path, r.auth)
		}
	}
}

func statuses(reqs []upstreamRequest) []int {
	out := make([]int, len(reqs))
	for i, r := range reqs {
		out[i] = r.status
	}
	return out
}

// fakeJWT is an unsigned token shaped like a JWT with the given expiry
// (the gateway reads exp for its metric; the endpoint is what verifies).
func fakeJWT(exp time.Time) string {
	b64 := base64.RawURLEncoding.EncodeToString
	return b64([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." +
		b64(fmt.Appendf(nil, `{"sub":"album-token","exp":%d}`, exp.Unix())) + "." + b64([]byte(randomSecret("sig-")))
}

// testUpstreamTokenFile: a bearer token file rewritten while the gateway
// runs: the next request carries the new token (no 401 needed to notice).
// The new token is a JWT: its exp shows in the expiry metric.
func testUpstreamTokenFile(t *testing.T, fx *securityFixture) {
	first, second := randomSecret("token-one-"), fakeJWT(time.Now().Add(time.Hour))
	fx.secret("bearer token (first)", first)
	fx.secret("bearer token (second, JWT)", second)
	tokenFile := filepath.Join(t.TempDir(), "token")
	writeSecretFile(t, tokenFile, first)
	up := newUpstream(t, fx, upstreamOptions{}, func(r *http.Request) (int, string) {
		if tok := bearer(r); tok != first && tok != second {
			return http.StatusUnauthorized, ""
		}
		return 0, ""
	})
	g := fx.gateway(t, upstreamArgs(fx, up, "--stow-token-file", tokenFile)...)
	objs := studyObjects(t, t.TempDir(), 2, 4<<10)
	storeAll(t, g.Addr, "TOKSCU", objs[:1])
	waitDrained(t, g, 30*time.Second)
	if m, _ := g.Scrape(); m != nil && m.Sum("dicomgw_stow_credential_expiry_seconds") != 0 {
		t.Errorf("an opaque token has an expiry metric")
	}
	writeSecretFile(t, tokenFile, second)
	storeAll(t, g.Addr, "TOKSCU", objs[1:])
	waitDrained(t, g, 30*time.Second)
	up.checkStored(t, objs)
	reqs := up.requests()
	if len(reqs) != 2 || reqs[0].auth != "Bearer "+first || reqs[1].auth != "Bearer "+second || reqs[1].status != http.StatusOK {
		t.Errorf("requests: %d, statuses %v; want the first with the first token, the second with the rotated one", len(reqs), statuses(reqs))
	}
	exp := metricValue(t, g, "dicomgw_stow_credential_expiry_seconds", `kind="bearer-token-file"`, `destination="default"`)
	if exp < 3500 || exp > 3600 {
		t.Errorf("dicomgw_stow_credential_expiry_seconds{kind=bearer-token-file} = %v, want about 3600 (the JWT's exp)", exp)
	}
}

// testUpstreamPauseResume: credentials refused even when re-read (401 twice)
// or refused outright (403, once: no retry) pause the destination: the
// objects stay queued (nothing dead-lettered), the endpoint is left alone,
// dicomgw_forward_destination_up is 0. Rewriting the token file resumes
// delivery within seconds (the pause itself is 30 s), and up is 1 again.
func testUpstreamPauseResume(t *testing.T, fx *securityFixture) {
	for _, tc := range []struct {
		name     string
		refusal  int
		requests int // until paused
	}{
		{"401 twice", http.StatusUnauthorized, 2},
		{"403", http.StatusForbidden, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			good, stale := randomSecret("token-good-"), randomSecret("token-stale-")
			fx.secret("bearer token (good)", good)
			fx.secret("bearer token (refused)", stale)
			tokenFile := filepath.Join(t.TempDir(), "token")
			writeSecretFile(t, tokenFile, stale)
			up := newUpstream(t, fx, upstreamOptions{}, func(r *http.Request) (int, string) {
				if bearer(r) != good {
					return tc.refusal, ""
				}
				return 0, ""
			})
			// One batch of exactly the five objects, so that the requests
			// can be counted.
			g := fx.gateway(t, upstreamArgs(fx, up, "--stow-token-file", tokenFile, "--batch-max-instances", "5", "--batch-linger", "20s")...)
			objs := studyObjects(t, t.TempDir(), 5, 4<<10)
			storeAll(t, g.Addr, "PAUSESCU", objs)
			rec, err := g.WaitLog("destination paused: objects are kept until it accepts them again", 30*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r, _ := rec["reason"].(string); !strings.Contains(r, fmt.Sprint(tc.refusal)) {
				t.Errorf("pause reason %q does not give the status %d", r, tc.refusal)
			}
			waitMetric(t, g, 0, "dicomgw_forward_destination_up", `destination="default"`)
			time.Sleep(1500 * time.Millisecond) // paused: nothing more is sent
			reqs := up.requests()
			if len(reqs) != tc.requests {
				t.Errorf("%d requests before and during the pause (%v), want %d", len(reqs), statuses(reqs), tc.requests)
			}
			if tc.requests == 2 && len(reqs) == 2 && reqs[1].at.Sub(reqs[0].at) > time.Second {
				t.Errorf("the retry with re-read credentials came %v after the 401", reqs[1].at.Sub(reqs[0].at))
			}
			if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) || c.Dead != 0 {
				t.Errorf("while paused: %v; want all %d queued", c, len(objs))
			}

			rotated := time.Now()
			writeSecretFile(t, tokenFile, good)
			waitDrained(t, g, 20*time.Second)
			took := time.Since(rotated)
			t.Logf("delivered %v after the token file was rewritten", took.Round(time.Millisecond))
			if took > 10*time.Second {
				t.Errorf("delivery resumed %v after the token file was rewritten, want < 10s", took)
			}
			up.checkStored(t, objs)
			waitMetric(t, g, 1, "dicomgw_forward_destination_up", `destination="default"`)
			if _, err := g.WaitLog("destination accepts objects again", 5*time.Second, nil); err != nil {
				t.Error(err)
			}
			if c := countSpool(t, g.SpoolDir); c.Dead != 0 {
				t.Errorf("dead letters: %v", c)
			}
		})
	}
}

// testUpstreamBasicAuth: user:password from --stow-basic-auth-file on every
// request.
func testUpstreamBasicAuth(t *testing.T, fx *securityFixture) {
	pass := randomSecret("basic-pw-")
	fx.secret("basic auth password", pass)
	fx.secret("basic auth header", base64.StdEncoding.EncodeToString([]byte("dicomgw:"+pass)))
	file := filepath.Join(t.TempDir(), "basic")
	writeSecretFile(t, file, "dicomgw:"+pass)
	up := newUpstream(t, fx, upstreamOptions{}, func(r *http.Request) (int, string) {
		if u, p, ok := r.BasicAuth(); !ok || u != "dicomgw" || p != pass {
			return http.StatusUnauthorized, ""
		}
		return 0, ""
	})
	g := fx.gateway(t, upstreamArgs(fx, up, "--stow-basic-auth-file", file)...)
	objs := studyObjects(t, t.TempDir(), 3, 4<<10)
	storeAll(t, g.Addr, "BASICSCU", objs)
	waitDrained(t, g, 30*time.Second)
	up.checkStored(t, objs)
	for _, r := range up.requests() {
		if r.status != http.StatusOK {
			t.Errorf("request answered %d", r.status)
		}
	}
}

// retryRecords reads, from the delivery ledger, the failed attempts of the
// queued objects at the destination "default" (the --stow-url of these
// tests), as spool.Retry records.
func retryRecords(t testing.TB, spoolDir string) []spool.Retry {
	t.Helper()
	r, err := ledger.OpenReader(filepath.Join(spoolDir, "ledger.db"))
	if err != nil {
		return nil // not created yet
	}
	defer r.Close()
	ids, err := r.Pending("default", 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []spool.Retry
	for _, id := range ids {
		ds, ok, err := r.Delivery(id, "default")
		if err != nil || !ok || ds.Retry.Attempts == 0 {
			continue
		}
		out = append(out, spool.Retry{Attempts: ds.Retry.Attempts, FirstFailure: ds.Retry.FirstFailure, NextAttempt: ds.Retry.NextAttempt,
			LastError: ds.Retry.LastError, Unconfirmed: ds.Retry.Unconfirmed, DelaySeconds: ds.Retry.Delay.Seconds()})
	}
	return out
}

// waitRetried waits until every one of n queued objects has a retry record
// and returns them.
func waitRetried(t *testing.T, g *harness.Gateway, n int) []spool.Retry {
	t.Helper()
	var recs []spool.Retry
	waitFor(t, 30*time.Second, "retry records", func() bool {
		recs = retryRecords(t, g.SpoolDir)
		return len(recs) == n
	})
	return recs
}

// testUpstreamTLS: TLS to the endpoint. A private CA given with
// --stow-ca-file is trusted; an endpoint whose certificate another CA
// signed is not (objects stay queued with a retry record naming the
// certificate problem, the endpoint never sees a request); a client
// certificate is presented when configured and the endpoint requires one;
// --stow-insecure-skip-verify is logged loudly.
func testUpstreamTLS(t *testing.T, fx *securityFixture) {
	t.Run("private CA", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t, fx, upstreamOptions{}, nil)
		g := fx.gateway(t, upstreamArgs(fx, up)...)
		objs := studyObjects(t, t.TempDir(), 2, 4<<10)
		storeAll(t, g.Addr, "CASCU", objs)
		waitDrained(t, g, 30*time.Second)
		up.checkStored(t, objs)
	})
	t.Run("unknown CA", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t, fx, upstreamOptions{cert: fx.foreignServer}, nil)
		g := fx.gateway(t, upstreamArgs(fx, up)...)
		objs := studyObjects(t, t.TempDir(), 2, 4<<10)
		storeAll(t, g.Addr, "CASCU", objs)
		for _, r := range waitRetried(t, g, len(objs)) {
			if !strings.Contains(r.LastError, "certificate") {
				t.Errorf("retry record's last error %q does not name the certificate problem", r.LastError)
			}
		}
		if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) || c.Dead != 0 {
			t.Errorf("%v; want every object queued", c)
		}
		if n := len(up.requests()); n != 0 {
			t.Errorf("the endpoint with an untrusted certificate got %d requests", n)
		}
	})
	t.Run("client certificate", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t, fx, upstreamOptions{requireClient: true}, nil)
		g := fx.gateway(t, upstreamArgs(fx, up, "--stow-client-cert", fx.upstreamClient.CertFile, "--stow-client-key", fx.upstreamClient.KeyFile)...)
		objs := studyObjects(t, t.TempDir(), 2, 4<<10)
		storeAll(t, g.Addr, "MTLSSCU", objs)
		waitDrained(t, g, 30*time.Second)
		up.checkStored(t, objs)
		for _, r := range up.requests() {
			if r.clientCN != "dicomgw.hospital" {
				t.Errorf("a request came with client certificate CN %q, want dicomgw.hospital", r.clientCN)
			}
		}
	})
	t.Run("client certificate missing", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t, fx, upstreamOptions{requireClient: true}, nil)
		g := fx.gateway(t, upstreamArgs(fx, up)...)
		objs := studyObjects(t, t.TempDir(), 1, 4<<10)
		storeAll(t, g.Addr, "MTLSSCU", objs)
		// In TLS 1.3 the client's handshake is over before the server
		// refuses its (missing) certificate: what the client then sees is
		// up to net/http ("use of closed network connection"); the point is
		// that nothing is delivered and nothing is lost.
		for _, r := range waitRetried(t, g, len(objs)) {
			t.Logf("retry record without a client certificate: %s", r.LastError)
		}
		if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) || c.Dead != 0 {
			t.Errorf("%v; want every object queued", c)
		}
		if n := len(up.requests()); n != 0 {
			t.Errorf("the endpoint got %d requests without a client certificate", n)
		}
	})
	t.Run("insecure skip verify", func(t *testing.T) {
		t.Parallel()
		up := newUpstream(t, fx, upstreamOptions{cert: fx.foreignServer}, nil)
		g := fx.gateway(t, append([]string{"--stow-url", up.URL(), "--stow-insecure-skip-verify"}, fastRetry...)...)
		var warned bool
		for _, l := range strings.Split(g.Logs(), "\n") {
			if strings.Contains(l, `"level":"WARN"`) && strings.Contains(l, "TLS VERIFICATION OF A STOW-RS ENDPOINT IS DISABLED") {
				warned = true
			}
		}
		if !warned {
			t.Errorf("no loud warning at start-up with --stow-insecure-skip-verify")
		}
		objs := studyObjects(t, t.TempDir(), 1, 4<<10)
		storeAll(t, g.Addr, "INSECSCU", objs)
		waitDrained(t, g, 30*time.Second)
		up.checkStored(t, objs)
	})
}

// testUpstreamRedirect: an endpoint that redirects to another origin (307
// keeps the method and body, 302 would not) is not followed: the other
// origin never sees a request, let alone an Authorization header; the
// destination pauses with the objects kept.
func testUpstreamRedirect(t *testing.T, fx *securityFixture) {
	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusFound} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			tok := randomSecret("token-redirect-")
			fx.secret("bearer token (redirect)", tok)
			tokenFile := filepath.Join(t.TempDir(), "token")
			writeSecretFile(t, tokenFile, tok)
			other := newUpstream(t, fx, upstreamOptions{}, nil)
			up := newUpstream(t, fx, upstreamOptions{}, func(r *http.Request) (int, string) {
				return code, other.srv.URL + r.URL.RequestURI()
			})
			g := fx.gateway(t, upstreamArgs(fx, up, "--stow-token-file", tokenFile)...)
			objs := studyObjects(t, t.TempDir(), 2, 4<<10)
			storeAll(t, g.Addr, "REDIRSCU", objs)
			rec, err := g.WaitLog("destination paused: objects are kept until it accepts them again", 30*time.Second, nil)
			if err != nil {
				t.Fatal(err)
			}
			if r, _ := rec["reason"].(string); !strings.Contains(r, "redirect") {
				t.Errorf("pause reason %q does not say redirect", r)
			}
			if n := len(other.requests()); n != 0 {
				t.Errorf("the other origin got %d requests (Authorization %q)", n, other.requests()[0].auth)
			}
			if reqs := up.requests(); len(reqs) == 0 || reqs[0].auth != "Bearer "+tok {
				t.Errorf("the endpoint itself did not get the token")
			}
			if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) || c.Dead != 0 {
				t.Errorf("%v; want every object kept in the queue", c)
			}
		})
	}
}

// testKHEOPS: a KHEOPS-shaped endpoint: --stow-url https://host/api?album=ID
// and an album token in --stow-token-file. Each request is POST
// /api/studies/{study}?album=ALBUM1 with Authorization: Bearer <token>, and
// every object arrives intact. Neither the album query nor the token is in
// the gateway's log, also when the endpoint cannot be reached and the
// failure is logged and recorded for the retry.
func testKHEOPS(t *testing.T, fx *securityFixture) {
	t.Run("delivery", func(t *testing.T) {
		t.Parallel()
		testKHEOPSDelivery(t, fx)
	})
	t.Run("endpoint unreachable", func(t *testing.T) {
		t.Parallel()
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		tok := randomSecret("kheops-album-token-")
		fx.secret("KHEOPS album token", tok)
		tokenFile := filepath.Join(t.TempDir(), "album-token")
		writeSecretFile(t, tokenFile, tok)
		g := fx.gateway(t, append([]string{"--stow-url", fmt.Sprintf("https://127.0.0.1:%d/api?album=ALBUM2", port),
			"--stow-ca-file", fx.ca.CAFile, "--stow-token-file", tokenFile}, fastRetry...)...)
		storeAll(t, g.Addr, "KHEOPSSCU", studyObjects(t, t.TempDir(), 1, 4<<10))
		for _, r := range waitRetried(t, g, 1) {
			if strings.Contains(r.LastError, "album=") {
				t.Errorf("the retry record holds the base URL's query: %s", r.LastError)
			}
		}
		if _, err := g.WaitLog("delivery failed; will retry", 10*time.Second, nil); err != nil {
			t.Fatal(err)
		}
		if l := grepLines(g.Logs(), "album="); l != "" {
			t.Errorf("URLs are logged with their query (?album=...):\n%s", l)
		}
	})
}

func testKHEOPSDelivery(t *testing.T, fx *securityFixture) {
	const album = "ALBUM1"
	tok := randomSecret("kheops-album-token-")
	fx.secret("KHEOPS album token", tok)
	tokenFile := filepath.Join(t.TempDir(), "album-token")
	writeSecretFile(t, tokenFile, tok)
	var mu sync.Mutex
	studies := map[string]bool{}
	up := newUpstream(t, fx, upstreamOptions{prefix: "/api"}, func(r *http.Request) (int, string) {
		if r.Header.Get("Authorization") != "Bearer "+tok {
			return http.StatusUnauthorized, ""
		}
		if r.URL.RawQuery != "album="+album || r.Method != http.MethodPost {
			return http.StatusNotFound, ""
		}
		study, ok := strings.CutPrefix(r.URL.Path, "/api/studies/")
		mu.Lock()
		known := studies[study]
		mu.Unlock()
		if !ok || !known {
			return http.StatusNotFound, ""
		}
		return 0, ""
	})
	g := fx.gateway(t, append([]string{"--stow-url", up.URL() + "?album=" + album, "--stow-ca-file", fx.ca.CAFile,
		"--stow-token-file", tokenFile}, fastRetry...)...)
	var all []testObject
	for range 3 {
		objs := studyObjects(t, t.TempDir(), 4, 8<<10)
		mu.Lock()
		studies[objs[0].StudyInstanceUID] = true
		mu.Unlock()
		all = append(all, objs...)
	}
	for i := 0; i < len(all); i += 4 {
		storeAll(t, g.Addr, "KHEOPSSCU", all[i:i+4])
	}
	if c := waitDrained(t, g, 30*time.Second); c.Dead != 0 {
		t.Errorf("dead letters: %v", c)
	}
	up.checkStored(t, all)
	for _, r := range up.requests() {
		if r.status != http.StatusOK {
			t.Errorf("%s %s?%s answered %d", r.method, r.path, r.query, r.status)
		}
	}
	if n := len(deliveredRecords(g)); n != len(all) {
		t.Errorf("%d instances logged as delivered, want %d", n, len(all))
	}
	if strings.Contains(g.Logs(), "album=") {
		t.Errorf("the album query reached the log:\n%s", grepLines(g.Logs(), "album="))
	}
	want := `"destinations":"default=stow:` + up.URL() + `"`
	if l := g.LogLines("dicomgw listening"); len(l) != 1 || !strings.Contains(l[0], want) {
		t.Errorf("start-up record does not name the destination as %s: %v", want, l)
	}
}
