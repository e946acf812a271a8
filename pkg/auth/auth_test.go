package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/crypto/bcrypt"
)

func write(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func reason(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Reason
	}
	return ""
}

func TestPasscode(t *testing.T) {
	hash, _ := bcrypt.GenerateFromPassword([]byte("s3cret"), bcrypt.MinCost)
	a, err := New(Config{UsersFile: write(t, "users", "# users\n\nbob:"+string(hash)+"\n")})
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Passcode([]byte("bob"), []byte("s3cret"), true); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		user, pass string
		secure     bool
		want       string
	}{
		{"bob", "Guess-42", true, "bad-credentials"},
		{"alice", "s3cret", true, "bad-credentials"},
		{"bob", "s3cret", false, "insecure-transport"},
	} {
		err := a.Passcode([]byte(c.user), []byte(c.pass), c.secure)
		if reason(err) != c.want {
			t.Errorf("%+v: %v", c, err)
		}
		if err != nil && strings.Contains(err.Error(), c.pass) {
			t.Errorf("the passcode appears in the error: %v", err)
		}
	}
	for content, want := range map[string]string{
		"bob\n":              "users:1: want username:bcrypt-hash",
		"bob:plaintext\n":    `users:1: the hash of "bob" is not a bcrypt hash`,
		"\n:" + string(hash): "users:2: want username:bcrypt-hash",
		"bob:" + string(hash) + "\nbob:" + string(hash) + "\n": `users:2: user "bob" listed twice`,
	} {
		if _, err := New(Config{UsersFile: write(t, "users", content)}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want %q", content, err, want)
		}
	}
}

type issuer struct {
	t    *testing.T
	ec   *ecdsa.PrivateKey
	rsa  *rsa.PrivateKey
	jwks string
}

func newIssuer(t *testing.T) *issuer {
	ec, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	set := jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &ec.PublicKey, KeyID: "ec1", Algorithm: "ES256", Use: "sig"},
		{Key: &rk.PublicKey, KeyID: "rsa1", Algorithm: "RS256", Use: "sig"},
	}}
	b, _ := json.Marshal(set)
	return &issuer{t: t, ec: ec, rsa: rk, jwks: write(t, "jwks.json", string(b))}
}

func (i *issuer) token(alg jose.SignatureAlgorithm, kid string, c jwt.Claims) string {
	var key any = i.ec
	if alg == jose.RS256 {
		key = i.rsa
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: key}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", kid))
	if err != nil {
		i.t.Fatal(err)
	}
	tok, err := jwt.Signed(s).Claims(c).Serialize()
	if err != nil {
		i.t.Fatal(err)
	}
	return tok
}

func TestJWT(t *testing.T) {
	iss := newIssuer(t)
	a, err := New(Config{JWT: &JWTConfig{Issuer: "https://idp.example", Audience: "dicomgw", JWKSFile: iss.jwks, Algorithms: []string{"ES256", "RS256"}, Leeway: time.Second}})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	good := jwt.Claims{Issuer: "https://idp.example", Audience: jwt.Audience{"dicomgw"}, Subject: "ct1", Expiry: jwt.NewNumericDate(now.Add(time.Hour)), IssuedAt: jwt.NewNumericDate(now)}
	for _, tok := range []string{iss.token(jose.ES256, "ec1", good), iss.token(jose.RS256, "rsa1", good)} {
		c, err := a.JWT([]byte(tok), true)
		if err != nil || c.Subject != "ct1" {
			t.Fatalf("good token: %+v %v", c, err)
		}
	}
	expired := good
	expired.Expiry = jwt.NewNumericDate(now.Add(-time.Hour))
	wrongAud := good
	wrongAud.Audience = jwt.Audience{"someone-else"}
	wrongIss := good
	wrongIss.Issuer = "https://evil.example"
	noExp := good
	noExp.Expiry = nil
	// alg=none: a header and claims with an empty signature.
	b64 := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(good)
	none := b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(claims) + "."
	hs256 := b64([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." + b64(claims) + "." + b64([]byte("not-a-mac"))
	forged := iss.token(jose.ES256, "ec1", good)
	forged = forged[:strings.LastIndex(forged, ".")+1] + b64(make([]byte, 64))
	for name, c := range map[string]struct {
		tok    string
		secure bool
		want   string
	}{
		"expired":            {iss.token(jose.ES256, "ec1", expired), true, "expired"},
		"wrong audience":     {iss.token(jose.ES256, "ec1", wrongAud), true, "invalid-token"},
		"wrong issuer":       {iss.token(jose.ES256, "ec1", wrongIss), true, "invalid-token"},
		"no expiry":          {iss.token(jose.ES256, "ec1", noExp), true, "invalid-token"},
		"unknown kid":        {iss.token(jose.ES256, "nope", good), true, "invalid-token"},
		"alg none":           {none, true, "invalid-token"},
		"HS256":              {hs256, true, "invalid-token"},
		"forged signature":   {forged, true, "invalid-token"},
		"garbage":            {"not.a.jwt", true, "invalid-token"},
		"over plaintext":     {iss.token(jose.ES256, "ec1", good), false, "insecure-transport"},
		"kid of another key": {iss.token(jose.ES256, "rsa1", good), true, "invalid-token"},
	} {
		_, err := a.JWT([]byte(c.tok), c.secure)
		if reason(err) != c.want {
			t.Errorf("%s: %v, want %s", name, err, c.want)
		}
	}
	// Only RS256 allowed: an ES256 token is refused.
	b, _ := New(Config{JWT: &JWTConfig{Issuer: "https://idp.example", Audience: "dicomgw", JWKSFile: iss.jwks, Algorithms: []string{"RS256"}}})
	if _, err := b.JWT([]byte(iss.token(jose.ES256, "ec1", good)), true); reason(err) != "invalid-token" {
		t.Errorf("ES256 with only RS256 allowed: %v", err)
	}
	for _, algs := range [][]string{{"none"}, {"HS256"}, {}} {
		if _, err := New(Config{JWT: &JWTConfig{Issuer: "i", Audience: "a", JWKSFile: iss.jwks, Algorithms: algs}}); err == nil {
			t.Errorf("algorithms %v accepted", algs)
		}
	}
	// A JWKS with a private key is refused: the gateway needs none.
	priv, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: iss.ec, KeyID: "p"}}})
	if _, err := New(Config{JWT: &JWTConfig{Issuer: "i", Audience: "a", JWKSFile: write(t, "p.json", string(priv)), Algorithms: []string{"ES256"}}}); err == nil {
		t.Error("private JWKS accepted")
	}
	if _, err := (&Authenticator{}).JWT([]byte("x"), true); reason(err) != "unsupported-type" {
		t.Errorf("JWT without configuration: %v", err)
	}
}

// TestDecoyHasTheFilesCost: an unknown user is checked against a decoy of
// the users file's own bcrypt cost (so that it takes as long as a known
// user's wrong passcode), made at the first unknown user, not before.
func TestDecoyHasTheFilesCost(t *testing.T) {
	// The most common cost, the higher on a tie.
	for _, costs := range [][]int{{5, 5, 12}, {4}, {6, 7, 7}, {5, 6}} {
		var lines []string
		for i, c := range costs {
			h, err := bcrypt.GenerateFromPassword([]byte("pass"), c)
			if err != nil {
				t.Fatal(err)
			}
			lines = append(lines, fmt.Sprintf("user%d:%s", i, h))
		}
		p := filepath.Join(t.TempDir(), "users")
		if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		a, err := New(Config{UsersFile: p})
		if err != nil {
			t.Fatal(err)
		}
		if a.decoy != nil {
			t.Fatal("a decoy was made before any unknown user")
		}
		if err := a.Passcode([]byte("stranger"), []byte("guess"), true); err == nil {
			t.Fatal("an unknown user was accepted")
		}
		got, err := bcrypt.Cost(a.decoy)
		want := costs[len(costs)/2] // the most common cost in each case
		if err != nil || got != want {
			t.Errorf("costs %v: the decoy's cost is %d (%v), want %d", costs, got, err, want)
		}
	}
}
