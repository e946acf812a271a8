package forward

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func writeSecret(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func authOf(t *testing.T, c Credentials) string {
	t.Helper()
	req, _ := http.NewRequest("POST", "http://x/", nil)
	if err := c.Authorize(context.Background(), req); err != nil {
		t.Fatal(err)
	}
	return req.Header.Get("Authorization")
}

// TestTokenFileRotation: a rotated token is used from the next request,
// and its version changes; a JWT's exp feeds the expiry metric.
func TestTokenFileRotation(t *testing.T) {
	dir := t.TempDir()
	p := writeSecret(t, dir, "token", "first\n")
	tf, err := NewTokenFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got := authOf(t, tf); got != "Bearer first" {
		t.Fatalf("%q", got)
	}
	v := tf.Version()
	exp := time.Now().Add(90 * time.Minute).Truncate(time.Second)
	claims, _ := json.Marshal(map[string]any{"exp": exp.Unix(), "sub": "album"})
	jwtTok := "eyJhbGciOiJSUzI1NiJ9." + base64.RawURLEncoding.EncodeToString(claims) + ".sig"
	os.WriteFile(p, []byte(jwtTok), 0o600)
	os.Chtimes(p, time.Now().Add(time.Second), time.Now().Add(time.Second))
	if tf.Version() == v {
		t.Fatal("version unchanged after rotation")
	}
	if got := authOf(t, tf); got != "Bearer "+jwtTok {
		t.Fatalf("%q", got)
	}
	if e, ok := tf.Expiry(); !ok || !e.Equal(exp) {
		t.Fatalf("expiry %v %v, want %v", e, ok, exp)
	}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(NewCredentialsCollector(tf))
	if n, err := testutil.GatherAndCount(reg, "dicomgw_stow_credential_expiry_seconds"); n != 1 || err != nil {
		t.Fatalf("%d %v", n, err)
	}
	os.WriteFile(p, []byte("opaque-token"), 0o600)
	os.Chtimes(p, time.Now().Add(2*time.Second), time.Now().Add(2*time.Second))
	if n, _ := testutil.GatherAndCount(reg, "dicomgw_stow_credential_expiry_seconds"); n != 0 {
		t.Fatal("an expiry for a token that does not say")
	}
	os.WriteFile(p, nil, 0o600)
	os.Chtimes(p, time.Now().Add(3*time.Second), time.Now().Add(3*time.Second))
	req, _ := http.NewRequest("POST", "http://x/", nil)
	if err := tf.Authorize(context.Background(), req); err == nil {
		t.Fatal("an empty token file authorized")
	}
	if _, err := NewTokenFile(filepath.Join(dir, "missing")); err == nil {
		t.Fatal("missing token file accepted")
	}
}

func TestBasicFile(t *testing.T) {
	dir := t.TempDir()
	b, err := NewBasicFile(writeSecret(t, dir, "basic", "orthanc:s3cret\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte("orthanc:s3cret"))
	if got := authOf(t, b); got != want {
		t.Fatalf("%q", got)
	}
	if _, err := NewBasicFile(writeSecret(t, dir, "bad", "no-colon")); err == nil {
		t.Fatal("malformed basic auth file accepted")
	}
}

// tokenServer is an OAuth2 token endpoint (client credentials grant).
type tokenServer struct {
	srv    *httptest.Server
	issued atomic.Int32
	mu     sync.Mutex
	secret string
	ttl    int
}

func newTokenServer(t *testing.T, secret string, ttl int) *tokenServer {
	ts := &tokenServer{secret: secret, ttl: ttl}
	ts.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, sec, ok := r.BasicAuth()
		ts.mu.Lock()
		good := ok && id == "dicomgw" && sec == ts.secret
		ts.mu.Unlock()
		if r.FormValue("grant_type") != "client_credentials" || !good {
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, `{"error":"invalid_client"}`)
			return
		}
		n := ts.issued.Add(1)
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"access_token":"at-%d","token_type":"Bearer","expires_in":%d}`, n, ts.ttl)
	}))
	t.Cleanup(ts.srv.Close)
	return ts
}

// TestOAuth2: a token is fetched on first use and reused; renewed before
// it expires; Refresh forces a new one; a rotated secret is picked up; a
// refused client is an error that never carries the secret.
func TestOAuth2(t *testing.T) {
	dir := t.TempDir()
	ts := newTokenServer(t, "first-secret", 3600)
	secretFile := writeSecret(t, dir, "secret", "first-secret\n")
	o, err := NewOAuth2(OAuth2Config{TokenURL: ts.srv.URL, ClientID: "dicomgw", ClientSecretFile: secretFile})
	if err != nil {
		t.Fatal(err)
	}
	if got := authOf(t, o); got != "Bearer at-1" {
		t.Fatalf("%q", got)
	}
	if got := authOf(t, o); got != "Bearer at-1" || ts.issued.Load() != 1 {
		t.Fatalf("token not reused: %q after %d", got, ts.issued.Load())
	}
	if e, ok := o.Expiry(); !ok || time.Until(e) < 59*time.Minute {
		t.Fatalf("expiry %v %v", e, ok)
	}
	v := o.Version()
	if !o.Refresh(context.Background()) || authOf(t, o) != "Bearer at-2" || o.Version() == v {
		t.Fatal("Refresh did not get a new token")
	}
	// A token about to expire is renewed before it is used.
	short := newTokenServer(t, "s", 5)
	o2, _ := NewOAuth2(OAuth2Config{TokenURL: short.srv.URL, ClientID: "dicomgw", ClientSecretFile: writeSecret(t, dir, "s", "s")})
	authOf(t, o2)
	authOf(t, o2)
	if short.issued.Load() != 2 {
		t.Fatalf("%d tokens for a 5 s token used twice; want a renewal before expiry", short.issued.Load())
	}
	// The secret is rotated at the provider and in the file.
	ts.mu.Lock()
	ts.secret = "second-secret"
	ts.mu.Unlock()
	os.WriteFile(secretFile, []byte("second-secret"), 0o600)
	os.Chtimes(secretFile, time.Now().Add(time.Second), time.Now().Add(time.Second))
	if got := authOf(t, o); got != "Bearer at-3" {
		t.Fatalf("after the secret rotation: %q", got)
	}
	// A refused client.
	os.WriteFile(secretFile, []byte("wrong-secret"), 0o600)
	os.Chtimes(secretFile, time.Now().Add(2*time.Second), time.Now().Add(2*time.Second))
	req, _ := http.NewRequest("POST", "http://x/", nil)
	err = o.Authorize(context.Background(), req)
	if err == nil || strings.Contains(err.Error(), "wrong-secret") || strings.Contains(err.Error(), "second-secret") {
		t.Fatalf("refused client: %v", err)
	}
}

// TestCredentialsOnTheWire: STOW-RS requests carry the credentials;
// a redirect to another origin is not followed, so they never reach it.
func TestCredentialsOnTheWire(t *testing.T) {
	var leaked atomic.Bool
	other := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			leaked.Store(true)
		}
		w.WriteHeader(http.StatusOK)
	}))
	defer other.Close()
	var seen atomic.Value
	main := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Store(r.Header.Get("Authorization"))
		http.Redirect(w, r, other.URL+r.URL.Path, http.StatusTemporaryRedirect)
	}))
	defer main.Close()
	tf, _ := NewTokenFile(writeSecret(t, t.TempDir(), "token", "album-token"))
	s, err := NewSTOW(STOWConfig{BaseURL: main.URL + "/api?album=A1", Credentials: tf, Timeout: 5 * time.Second}, nil)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	o := writeObject(t, dir, obj("0001", "1.2.3", "1.2.3.1.1"))
	res := s.Deliver(context.Background(), []*Object{o})
	if res[0].Outcome != Pause {
		t.Fatalf("cross-origin redirect: %+v, want pause", res[0])
	}
	if seen.Load() != "Bearer album-token" {
		t.Fatalf("the endpoint saw %v", seen.Load())
	}
	if leaked.Load() {
		t.Fatal("credentials followed a redirect to another origin")
	}
	if strings.Contains(s.String(), "album=") {
		t.Fatalf("the destination name %q shows the query string", s.String())
	}
}

// TestPrivateCA: an endpoint with a certificate from a private CA is
// trusted only with that CA configured.
func TestPrivateCA(t *testing.T) {
	ep := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/dicom+json")
		fmt.Fprint(w, `{"00081199":{"vr":"SQ","Value":[{"00081155":{"vr":"UI","Value":["1.2.3.1.1"]}}]}}`)
	}))
	defer ep.Close()
	o := writeObject(t, t.TempDir(), obj("0001", "1.2.3", "1.2.3.1.1"))
	untrusting, _ := NewSTOW(STOWConfig{BaseURL: ep.URL, Timeout: 5 * time.Second, RetryMax: 0}, nil)
	if r := untrusting.Deliver(context.Background(), []*Object{o})[0]; r.Outcome != Retry || !strings.Contains(r.Reason, "certificate") {
		t.Fatalf("unknown CA: %+v", r)
	}
	trusting, _ := NewSTOW(STOWConfig{BaseURL: ep.URL, Timeout: 5 * time.Second, TLS: ep.Client().Transport.(*http.Transport).TLSClientConfig}, nil)
	if r := trusting.Deliver(context.Background(), []*Object{o})[0]; r.Outcome != Delivered {
		t.Fatalf("private CA: %+v", r)
	}
}
