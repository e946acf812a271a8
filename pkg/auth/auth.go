// Package auth checks the user identities DICOM peers negotiate (PS3.7
// D.3.3.7): usernames with passcodes against a file of bcrypt hashes, and
// JSON Web Tokens against an issuer, an audience and a JWKS file, with an
// allow-list of signing algorithms. Both are accepted only over TLS: a
// passcode or a bearer token sent in the clear is as good as published.
package auth

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/crypto/bcrypt"
)

// Error is a refused identity. Reason is a word from a closed set, fit for
// a metric label (missing, bad-credentials, insecure-transport,
// unsupported-type, expired, invalid-token); Err says more, for the log.
// Neither ever holds the secret itself.
type Error struct {
	Reason string
	Err    error
}

func (e *Error) Error() string      { return e.Reason + ": " + e.Err.Error() }
func (e *Error) Unwrap() error      { return e.Err }
func (e *Error) AuthReason() string { return e.Reason }

func refuse(reason, format string, args ...any) error {
	return &Error{Reason: reason, Err: fmt.Errorf(format, args...)}
}

// Config says where the credentials are.
type Config struct {
	// UsersFile holds "username:bcrypt-hash" lines (# comments allowed),
	// as `htpasswd -B` writes them. Empty: no usernames accepted.
	UsersFile string
	// JWT, if set, accepts JSON Web Tokens.
	JWT *JWTConfig
}

// JWTConfig is what a token must satisfy.
type JWTConfig struct {
	Issuer     string
	Audience   string
	JWKSFile   string   // the issuer's public keys, as a JWK Set (RFC 7517)
	Algorithms []string // allowed signing algorithms, e.g. RS256, ES256, EdDSA; "none" never is
	Leeway     time.Duration
}

// Authenticator checks identities. It is immutable: reloading builds a new
// one.
type Authenticator struct {
	users map[string][]byte
	cost  int // the users file's bcrypt cost (the most common one)
	jwt   *JWTConfig
	keys  *jose.JSONWebKeySet
	algs  []jose.SignatureAlgorithm
	now   func() time.Time

	// decoy is compared against when the user is unknown, so that a
	// stranger's answer takes as long as a known user's wrong passcode: a
	// hash of the file's own cost, made at the first unknown user (not at
	// start-up, which every command of the binary would pay for).
	decoyOnce sync.Once
	decoy     []byte
}

// New loads the files cfg names. An error names the file and the line.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{users: map[string][]byte{}, now: time.Now}
	if cfg.UsersFile != "" {
		if err := a.loadUsers(cfg.UsersFile); err != nil {
			return nil, err
		}
	}
	if j := cfg.JWT; j != nil {
		if j.Issuer == "" || j.Audience == "" || j.JWKSFile == "" {
			return nil, errors.New("auth: a JWT issuer, audience and JWKS file are all required")
		}
		b, err := os.ReadFile(j.JWKSFile)
		if err != nil {
			return nil, fmt.Errorf("auth: JWKS: %w", err)
		}
		var set jose.JSONWebKeySet
		if err := json.Unmarshal(b, &set); err != nil {
			return nil, fmt.Errorf("auth: JWKS %s: %w", j.JWKSFile, err)
		}
		if len(set.Keys) == 0 {
			return nil, fmt.Errorf("auth: JWKS %s has no keys", j.JWKSFile)
		}
		for _, k := range set.Keys {
			if !k.IsPublic() {
				return nil, fmt.Errorf("auth: JWKS %s holds a private key (kid %q): give the gateway public keys only", j.JWKSFile, k.KeyID)
			}
		}
		if len(j.Algorithms) == 0 {
			return nil, errors.New("auth: no JWT signing algorithm allowed")
		}
		for _, alg := range j.Algorithms {
			sa := jose.SignatureAlgorithm(alg)
			if !knownAlg(sa) {
				return nil, fmt.Errorf("auth: JWT algorithm %q is not an asymmetric signature algorithm this gateway accepts", alg)
			}
			a.algs = append(a.algs, sa)
		}
		a.jwt, a.keys = j, &set
	}
	return a, nil
}

// knownAlg lists the asymmetric JWS algorithms (RFC 7518): a gateway that
// holds only public keys cannot check HMAC ones, and "none" is no signature.
func knownAlg(a jose.SignatureAlgorithm) bool {
	switch a {
	case jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512,
		jose.ES256, jose.ES384, jose.ES512, jose.EdDSA:
		return true
	}
	return false
}

func (a *Authenticator) loadUsers(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("auth: users file: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	n := 0
	costs := map[int]int{}
	for sc.Scan() {
		n++
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		name, hash, ok := strings.Cut(line, ":")
		if !ok || name == "" {
			return fmt.Errorf("auth: %s:%d: want username:bcrypt-hash", path, n)
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil {
			return fmt.Errorf("auth: %s:%d: the hash of %q is not a bcrypt hash: %v", path, n, name, err)
		}
		costs[cost]++
		if _, dup := a.users[name]; dup {
			return fmt.Errorf("auth: %s:%d: user %q listed twice", path, n, name)
		}
		a.users[name] = []byte(hash)
	}
	// The decoy's cost: the one most hashes have (the higher on a tie), so
	// that an unknown user costs what a typical known one does.
	a.cost = bcrypt.DefaultCost
	best := 0
	for c, k := range costs {
		if k > best || k == best && c > a.cost {
			a.cost, best = c, k
		}
	}
	return sc.Err()
}

// decoyHash is the decoy, made at the first call.
func (a *Authenticator) decoyHash() []byte {
	a.decoyOnce.Do(func() {
		pass := make([]byte, 16)
		rand.Read(pass)
		a.decoy, _ = bcrypt.GenerateFromPassword(pass, a.cost)
	})
	return a.decoy
}

// Passcode checks a username and passcode (user identity type 2).
func (a *Authenticator) Passcode(user, pass []byte, secure bool) error {
	if !secure {
		return refuse("insecure-transport", "a passcode is accepted only over TLS")
	}
	hash, ok := a.users[string(user)]
	if !ok {
		bcrypt.CompareHashAndPassword(a.decoyHash(), pass)
		return refuse("bad-credentials", "user %q: unknown user or wrong passcode", printable(user))
	}
	if err := bcrypt.CompareHashAndPassword(hash, pass); err != nil {
		return refuse("bad-credentials", "user %q: unknown user or wrong passcode", printable(user))
	}
	return nil
}

// Claims is what the gateway takes from a verified token.
type Claims struct {
	Subject string
	Expiry  time.Time
}

// JWT verifies a JSON Web Token (user identity type 5): its signature with
// an allowed algorithm and a key of the JWKS, its issuer and audience, and
// that it is valid now.
func (a *Authenticator) JWT(token []byte, secure bool) (Claims, error) {
	if a.jwt == nil {
		return Claims{}, refuse("unsupported-type", "JSON Web Tokens are not accepted (no JWKS configured)")
	}
	if !secure {
		return Claims{}, refuse("insecure-transport", "a bearer token is accepted only over TLS")
	}
	tok, err := jwt.ParseSigned(string(bytes.TrimSpace(token)), a.algs)
	if err != nil {
		return Claims{}, refuse("invalid-token", "%v", err)
	}
	if len(tok.Headers) != 1 {
		return Claims{}, refuse("invalid-token", "%d signatures", len(tok.Headers))
	}
	keys := a.keys.Keys
	if kid := tok.Headers[0].KeyID; kid != "" {
		keys = a.keys.Key(kid)
		if len(keys) == 0 {
			return Claims{}, refuse("invalid-token", "no key %q in the JWKS", kid)
		}
	}
	var std jwt.Claims
	verified := false
	for _, k := range keys {
		if tok.Claims(k.Key, &std) == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Claims{}, refuse("invalid-token", "signature does not verify with the JWKS")
	}
	err = std.ValidateWithLeeway(jwt.Expected{Issuer: a.jwt.Issuer, AnyAudience: jwt.Audience{a.jwt.Audience}, Time: a.now()}, a.jwt.Leeway)
	switch {
	case errors.Is(err, jwt.ErrExpired):
		return Claims{}, refuse("expired", "token expired at %v", std.Expiry.Time())
	case err != nil:
		return Claims{}, refuse("invalid-token", "%v", err)
	case std.Expiry == nil:
		return Claims{}, refuse("invalid-token", "token has no expiry (exp)")
	}
	return Claims{Subject: std.Subject, Expiry: std.Expiry.Time()}, nil
}

// printable keeps a peer-supplied name fit for a log line.
func printable(b []byte) string {
	if len(b) > 64 {
		b = b[:64]
	}
	return strings.Map(func(r rune) rune {
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, string(b))
}
