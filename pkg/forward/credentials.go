package forward

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
)

// Credentials authorize STOW-RS requests. Implementations re-read or renew
// what they hold by themselves; the secret never leaves them except in the
// Authorization header.
type Credentials interface {
	// Authorize sets the Authorization header of req.
	Authorize(ctx context.Context, req *http.Request) error
	// Refresh is called after a 401: it gets a fresh credential if there is
	// one, and reports whether it changed.
	Refresh(ctx context.Context) bool
	// Version changes whenever the credential does, so that a destination
	// paused for its credentials resumes as soon as they are replaced.
	Version() uint64
	// Expiry is when the current credential expires, when that is known.
	Expiry() (time.Time, bool)
	// Kind names the credential for logs ("bearer-token-file", ...), never
	// the secret.
	Kind() string
}

// authTransport puts the credentials on every request, retries and
// same-origin redirects included.
type authTransport struct {
	base  http.RoundTripper
	creds Credentials
}

func (t *authTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	r := req.Clone(req.Context())
	if err := t.creds.Authorize(req.Context(), r); err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, fmt.Errorf("credentials (%s): %w", t.creds.Kind(), err)
	}
	return t.base.RoundTrip(r)
}

// watchedFile holds the trimmed content of a small file and re-reads it
// when it changes (size or modification time), so that a rotated token is
// used from the next request on without a restart.
type watchedFile struct {
	path string

	mu      sync.Mutex
	content []byte
	mod     time.Time
	size    int64
	version uint64
}

func (w *watchedFile) get(force bool) ([]byte, bool, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fi, err := os.Stat(w.path)
	if err != nil {
		return nil, false, err
	}
	if !force && w.content != nil && fi.ModTime().Equal(w.mod) && fi.Size() == w.size {
		return w.content, false, nil
	}
	b, err := os.ReadFile(w.path)
	if err != nil {
		return nil, false, err
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, false, fmt.Errorf("%s is empty", w.path)
	}
	changed := !bytes.Equal(b, w.content)
	if changed {
		w.version++
	}
	w.content, w.mod, w.size = b, fi.ModTime(), fi.Size()
	return b, changed, nil
}

func (w *watchedFile) ver() uint64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.version
}

// TokenFile is a bearer token in a file (a KHEOPS album token, a
// long-lived API token), re-read when the file changes.
type TokenFile struct{ f watchedFile }

// NewTokenFile reads the token now, to fail at start-up if it cannot.
func NewTokenFile(path string) (*TokenFile, error) {
	t := &TokenFile{f: watchedFile{path: path}}
	if _, _, err := t.f.get(true); err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	return t, nil
}

// Authorize implements Credentials.
func (t *TokenFile) Authorize(_ context.Context, req *http.Request) error {
	tok, _, err := t.f.get(false)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+string(tok))
	return nil
}

// Refresh implements Credentials: it re-reads the file.
func (t *TokenFile) Refresh(context.Context) bool {
	_, changed, err := t.f.get(true)
	return err == nil && changed
}

// Version implements Credentials; it looks at the file, so that a token
// replaced while the destination is paused is noticed.
func (t *TokenFile) Version() uint64 {
	t.f.get(false)
	return t.f.ver()
}

// Expiry implements Credentials: the "exp" of a token that is a JWT (read,
// not verified: the endpoint verifies it; this is for the expiry metric).
func (t *TokenFile) Expiry() (time.Time, bool) {
	tok, _, err := t.f.get(false)
	if err != nil {
		return time.Time{}, false
	}
	return jwtExpiry(string(tok))
}

// Kind implements Credentials.
func (t *TokenFile) Kind() string { return "bearer-token-file" }

func jwtExpiry(tok string) (time.Time, bool) {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return time.Time{}, false
	}
	b, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}, false
	}
	var c struct {
		Exp json.Number `json:"exp"`
	}
	if json.Unmarshal(b, &c) != nil {
		return time.Time{}, false
	}
	exp, err := c.Exp.Int64()
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(exp, 0), true
}

// BasicFile is HTTP Basic authentication (RFC 7617) from a file holding
// "user:password", re-read when the file changes.
type BasicFile struct{ f watchedFile }

// NewBasicFile reads the file now, to fail at start-up if it cannot.
func NewBasicFile(path string) (*BasicFile, error) {
	b := &BasicFile{f: watchedFile{path: path}}
	content, _, err := b.f.get(true)
	if err != nil {
		return nil, fmt.Errorf("basic auth file: %w", err)
	}
	if !bytes.Contains(content, []byte(":")) {
		return nil, fmt.Errorf("basic auth file %s: want user:password", path)
	}
	return b, nil
}

// Authorize implements Credentials.
func (b *BasicFile) Authorize(_ context.Context, req *http.Request) error {
	content, _, err := b.f.get(false)
	if err != nil {
		return err
	}
	user, pass, ok := bytes.Cut(content, []byte(":"))
	if !ok {
		return errors.New("basic auth file: want user:password")
	}
	req.SetBasicAuth(string(user), string(pass))
	return nil
}

// Refresh implements Credentials.
func (b *BasicFile) Refresh(context.Context) bool {
	_, changed, err := b.f.get(true)
	return err == nil && changed
}

// Version implements Credentials; it looks at the file.
func (b *BasicFile) Version() uint64 {
	b.f.get(false)
	return b.f.ver()
}

// Expiry implements Credentials: a password does not say.
func (b *BasicFile) Expiry() (time.Time, bool) { return time.Time{}, false }

// Kind implements Credentials.
func (b *BasicFile) Kind() string { return "basic-auth-file" }

// OAuth2 gets access tokens with the OAuth 2.0 client credentials grant
// (RFC 6749 4.4, e.g. from Keycloak) and renews them before they expire.
type OAuth2 struct {
	cfg    clientcredentials.Config
	secret watchedFile
	client *http.Client

	mu      sync.Mutex
	src     oauth2.TokenSource
	last    *oauth2.Token
	version uint64
}

// OAuth2Config configures OAuth2. The client secret is in a file, re-read
// when it changes.
type OAuth2Config struct {
	TokenURL         string
	ClientID         string
	ClientSecretFile string
	Scopes           []string
	// HTTPClient talks to the token endpoint (its TLS settings); nil: a
	// client with a 30 s timeout.
	HTTPClient *http.Client
}

// NewOAuth2 prepares the grant; the first token is fetched on first use.
func NewOAuth2(c OAuth2Config) (*OAuth2, error) {
	if c.TokenURL == "" || c.ClientID == "" || c.ClientSecretFile == "" {
		return nil, errors.New("oauth2: a token URL, a client ID and a client secret file are all required")
	}
	o := &OAuth2{secret: watchedFile{path: c.ClientSecretFile}, client: c.HTTPClient}
	if o.client == nil {
		o.client = &http.Client{Timeout: 30 * time.Second}
	}
	if _, _, err := o.secret.get(true); err != nil {
		return nil, fmt.Errorf("oauth2 client secret: %w", err)
	}
	o.cfg = clientcredentials.Config{ClientID: c.ClientID, TokenURL: c.TokenURL, Scopes: c.Scopes, AuthStyle: oauth2.AuthStyleInHeader}
	return o, nil
}

// source returns the token source, renewing it when the secret changed or
// when asked to (force): a fresh source fetches a new token.
func (o *OAuth2) source(force bool) (oauth2.TokenSource, error) {
	secret, changed, err := o.secret.get(false)
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.src == nil || changed || force {
		cfg := o.cfg
		cfg.ClientSecret = string(secret)
		ctx := context.WithValue(context.Background(), oauth2.HTTPClient, o.client)
		// ReuseTokenSource renews the token shortly before it expires.
		o.src = oauth2.ReuseTokenSource(nil, cfg.TokenSource(ctx))
	}
	return o.src, nil
}

func (o *OAuth2) token(force bool) (*oauth2.Token, error) {
	src, err := o.source(force)
	if err != nil {
		return nil, err
	}
	tok, err := src.Token()
	if err != nil {
		return nil, err
	}
	o.mu.Lock()
	if o.last == nil || o.last.AccessToken != tok.AccessToken {
		o.version++
	}
	o.last = tok
	o.mu.Unlock()
	return tok, nil
}

// Authorize implements Credentials.
func (o *OAuth2) Authorize(_ context.Context, req *http.Request) error {
	tok, err := o.token(false)
	if err != nil {
		return fmt.Errorf("oauth2 token: %w", err)
	}
	tok.SetAuthHeader(req)
	return nil
}

// Refresh implements Credentials: a new token, even if the cached one
// has not expired (the endpoint has just refused it).
func (o *OAuth2) Refresh(context.Context) bool {
	o.mu.Lock()
	before := o.version
	o.mu.Unlock()
	if _, err := o.token(true); err != nil {
		return false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.version != before
}

// Version implements Credentials.
func (o *OAuth2) Version() uint64 {
	o.secret.get(false) // a rotated secret counts as a change once used
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.version + o.secret.ver()
}

// Expiry implements Credentials.
func (o *OAuth2) Expiry() (time.Time, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.last == nil || o.last.Expiry.IsZero() {
		return time.Time{}, false
	}
	return o.last.Expiry, true
}

// Kind implements Credentials.
func (o *OAuth2) Kind() string { return "oauth2-client-credentials" }
