package conformance

// security_identity_test.go: user identity negotiation (PS3.7 D.3.3.7,
// sub-items 58 and 59) with dcmtk's storescu and our requestor: usernames
// with passcodes against a bcrypt users file, JSON Web Tokens against a
// JWKS, both over TLS only. A refusal is A-ASSOCIATE-RJ 1/1/1 (permanent,
// service-user, no reason given); the reason is in the log and in
// dicomgw_user_identity_failures_total{reason}.

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/crypto/bcrypt"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

const identityFailures = "dicomgw_user_identity_failures_total"

// sectionOf is the part of s between the lines holding begin and end.
func sectionOf(s, begin, end string) string {
	_, after, ok := strings.Cut(s, begin)
	if !ok {
		return ""
	}
	sec, _, _ := strings.Cut(after, end)
	return sec
}

// randomSecret is a fresh random string, easy to look for in logs.
func randomSecret(prefix string) string {
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return prefix + hex.EncodeToString(b)
}

// writeUsersFile writes username:bcrypt-hash lines and records the
// passcodes and hashes as secrets.
func writeUsersFile(t *testing.T, fx *securityFixture, users map[string]string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("# dicomgw users: username:bcrypt-hash\n")
	for u, p := range users {
		h, err := bcrypt.GenerateFromPassword([]byte(p), bcrypt.DefaultCost)
		if err != nil {
			t.Fatal(err)
		}
		fx.secret("passcode of "+u, p)
		fx.secret("bcrypt hash of "+u, string(h))
		b.WriteString(u + ":" + string(h) + "\n")
	}
	path := filepath.Join(t.TempDir(), "users")
	if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// passcode is a type 2 user identity (PS3.7 Table D.3-14).
func passcode(user, pass string, rsp bool) *pdu.UserIdentityRQ {
	return &pdu.UserIdentityRQ{Type: pdu.UserIdentityUsernamePasscode, Primary: []byte(user), Secondary: []byte(pass), PositiveResponseRequested: rsp}
}

// identityCheck checks refusals of user identities by one gateway, one
// at a time.
type identityCheck struct {
	t *testing.T
	g *harness.Gateway
}

// refused checks that an association attempt was refused 1/1/1 (err is
// our requestor's; nil for a dcmtk tool's attempt) for reason.
func (c identityCheck) refused(err error, reason string, before float64) {
	c.t.Helper()
	if err != nil {
		wantReject(c.t, err, pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectNoReason)
	}
	c.counted(reason, before)
}

// counted waits for the reason's counter to reach before+1 and checks the
// newest "user identity refused" log record names it.
func (c identityCheck) counted(reason string, before float64) {
	c.t.Helper()
	waitMetric(c.t, c.g, before+1, identityFailures, `reason="`+reason+`"`)
	if _, err := c.g.WaitLog("user identity refused", 5*time.Second, func(map[string]any) bool {
		recs := c.g.LogRecords("user identity refused")
		e, _ := recs[len(recs)-1]["err"].(string)
		return strings.HasPrefix(e, reason+":")
	}); err != nil {
		c.t.Errorf("the last \"user identity refused\" record does not give the reason %q: %v", reason, err)
	}
}

// count is the failure counter of reason now.
func (c identityCheck) count(reason string) float64 {
	return metricValue(c.t, c.g, identityFailures, `reason="`+reason+`"`)
}

// storescuOne sends one fresh object with storescu (extra options before
// the peer) and returns the result and how many objects were spooled.
func storescuOne(t *testing.T, g *harness.Gateway, addr, ae string, extra ...string) (harness.Result, int) {
	t.Helper()
	storescu := needTool(t, "storescu")
	o := studyObjects(t, t.TempDir(), 1, 2<<10)[0]
	before := queueSnapshot(t, g.SpoolDir)
	host, port := splitAddr(addr)
	r := runTool(60*time.Second, storescu, append(append([]string{"-aet", ae, "-aec", calledAE, "-xe"}, extra...), host, port, o.Path)...)
	return r, len(newObjects(t, g.SpoolDir, before))
}

// testIdentityPasscode: username and passcode (type 2) with storescu
// -usr/-pwd over TLS stores; a wrong passcode, an unknown user, and a
// passcode over plaintext are refused 1/1/1 with reasons bad-credentials
// and insecure-transport; -rsp (positive response requested) is answered
// with sub-item 59, and only then.
func testIdentityPasscode(t *testing.T, fx *securityFixture) {
	right, wrong := randomSecret("pw-right-"), randomSecret("pw-wrong-")
	fx.secret("wrong passcode", wrong)
	users := writeUsersFile(t, fx, map[string]string{"bob": right, "alice": randomSecret("pw-alice-")})
	g := fx.gateway(t, append([]string{"--users-file", users}, fx.tlsGatewayArgs(true)...)...)
	ic := identityCheck{t, g}
	tlsOpts := fx.dcmtkTLS(fx.ct1)
	cfg := fx.clientTLS(fx.ct1)

	if r, n := storescuOne(t, g, g.TLSAddr, "IDSCU", append([]string{"-usr", "bob", "-pwd", right}, tlsOpts...)...); r.Code != 0 || n != 1 {
		t.Errorf("storescu -usr bob -pwd RIGHT over TLS: %d objects spooled; %v", n, r)
	}

	bad := ic.count("bad-credentials")
	r, n := storescuOne(t, g, g.TLSAddr, "IDSCU", append([]string{"-usr", "bob", "-pwd", wrong}, tlsOpts...)...)
	if r.Code == 0 || n != 0 || !strings.Contains(r.Out, "Rejected") {
		t.Errorf("storescu with a wrong passcode: want an association rejected and nothing spooled, got %d objects; %v", n, r)
	}
	ic.refused(nil, "bad-credentials", bad)
	_, err := dialSecure(g.TLSAddr, "IDSCU", cfg, passcode("bob", wrong, false))
	ic.refused(err, "bad-credentials", bad+1)
	_, err = dialSecure(g.TLSAddr, "IDSCU", cfg, passcode("mallory", right, false))
	ic.refused(err, "bad-credentials", bad+2)

	insecure := ic.count("insecure-transport")
	r, n = storescuOne(t, g, g.Addr, "IDSCU", "-usr", "bob", "-pwd", right)
	if r.Code == 0 || n != 0 || !strings.Contains(r.Out, "Rejected") {
		t.Errorf("storescu with a passcode over plaintext: want the association rejected, got %d objects; %v", n, r)
	}
	ic.refused(nil, "insecure-transport", insecure)
	_, err = dialSecure(g.Addr, "IDSCU", nil, passcode("bob", right, false))
	ic.refused(err, "insecure-transport", insecure+1)

	// Positive response requested: storescu is content (it checks that the
	// acceptor answered), and our requestor sees sub-item 59, empty (PS3.7
	// D.3.3.7.2: no server response for a passcode).
	for _, rsp := range []bool{true, false} {
		opts := []string{"-d", "-usr", "bob", "-pwd", right}
		if rsp {
			opts = append(opts, "-rsp")
		}
		r, n = storescuOne(t, g, g.TLSAddr, "IDSCU", append(opts, tlsOpts...)...)
		if r.Code != 0 || n != 1 {
			t.Errorf("storescu -usr bob -pwd RIGHT (-rsp %v): %d objects; %v", rsp, n, r)
		}
		// dcmtk's dump of the A-ASSOCIATE-AC says "none" when there is
		// no sub-item 59, and nothing after the colon for an empty one.
		line := grepLines(sectionOf(r.Out, "BEGIN A-ASSOCIATE-AC", "END A-ASSOCIATE-AC"), "User Identity Negotiation Response:")
		if got := !strings.HasSuffix(strings.TrimSpace(line), "none"); line == "" || got != rsp {
			t.Errorf("storescu -rsp %v: the A-ASSOCIATE-AC as dcmtk dumps it: %q", rsp, line)
		}
	}
	c, err := echoSecure(t, g.TLSAddr, "IDSCU", cfg, passcode("bob", right, true))
	if err != nil {
		t.Fatalf("passcode with positive response requested: %v", err)
	}
	if ac := c.Accepted().UserInfo.UserIdentityAC; ac == nil {
		t.Errorf("positive response requested: no user identity AC (sub-item 59) in the A-ASSOCIATE-AC")
	} else if len(ac.ServerResponse) != 0 {
		t.Errorf("sub-item 59 carries a %d-byte server response, want none for a passcode", len(ac.ServerResponse))
	}
	c, err = echoSecure(t, g.TLSAddr, "IDSCU", cfg, passcode("bob", right, false))
	if err != nil {
		t.Fatalf("passcode without positive response requested: %v", err)
	}
	if c.Accepted().UserInfo.UserIdentityAC != nil {
		t.Errorf("no positive response requested, yet sub-item 59 was sent")
	}
	// Identities are optional here: none at all is fine.
	if _, err := echoSecure(t, g.TLSAddr, "IDSCU", cfg, nil); err != nil {
		t.Errorf("no user identity, none required: %v", err)
	}
	if v := ic.count("bad-credentials"); v != bad+3 {
		t.Errorf("bad-credentials counted %v times, want %v", v, bad+3)
	}
}

// testIdentityRequired: with --require-user-identity an association
// without an identity is refused 1/1/1 (reason missing), and so is a bare
// username (type 1 proves nothing: unsupported-type); a good passcode
// over TLS gets in.
func testIdentityRequired(t *testing.T, fx *securityFixture) {
	pass := randomSecret("pw-req-")
	users := writeUsersFile(t, fx, map[string]string{"bob": pass})
	g := fx.gateway(t, append([]string{"--users-file", users, "--require-user-identity"}, fx.tlsGatewayArgs(true)...)...)
	ic := identityCheck{t, g}
	cfg := fx.clientTLS(fx.ct2)

	r, n := storescuOne(t, g, g.TLSAddr, "REQSCU", fx.dcmtkTLS(fx.ct2)...)
	if r.Code == 0 || n != 0 || !strings.Contains(r.Out, "Rejected") {
		t.Errorf("storescu without a user identity: want a rejection, got %d objects; %v", n, r)
	}
	ic.refused(nil, "missing", 0)
	_, err := dialSecure(g.TLSAddr, "REQSCU", cfg, nil)
	ic.refused(err, "missing", 1)
	_, err = dialSecure(g.TLSAddr, "REQSCU", cfg, &pdu.UserIdentityRQ{Type: pdu.UserIdentityUsername, Primary: []byte("bob")})
	ic.refused(err, "unsupported-type", 0)
	if r, n := storescuOne(t, g, g.TLSAddr, "REQSCU", append([]string{"-usr", "bob", "-pwd", pass}, fx.dcmtkTLS(fx.ct2)...)...); r.Code != 0 || n != 1 {
		t.Errorf("storescu with a good passcode: %d objects; %v", n, r)
	}
}

// jwtIssuer signs test tokens.
type jwtIssuer struct {
	iss, aud string
	ec       *ecdsa.PrivateKey
	rsa      *rsa.PrivateKey
	stranger *ecdsa.PrivateKey // not in the JWKS
}

func (j *jwtIssuer) sign(t *testing.T, key any, alg jose.SignatureAlgorithm, kid string, c jwt.Claims) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: alg, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, (&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := jwt.Signed(sig).Claims(c).Serialize()
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func (j *jwtIssuer) claims(aud string, exp time.Duration) jwt.Claims {
	now := time.Now()
	return jwt.Claims{
		Issuer: j.iss, Subject: "ct1.hospital", Audience: jwt.Audience{aud},
		IssuedAt: jwt.NewNumericDate(now.Add(-2 * time.Hour)), NotBefore: jwt.NewNumericDate(now.Add(-2 * time.Hour)),
		Expiry: jwt.NewNumericDate(now.Add(exp)), ID: randomSecret("jti-"),
	}
}

// testIdentityJWT: JSON Web Tokens (type 5) sent with storescu --jwt over
// TLS: good ones signed ES256 and RS256 with keys of the JWKS associate and
// store; an expired one, one for another audience, an unsigned one
// (alg "none", made by hand), one signed by a key not in the JWKS, and a
// good one over plaintext are refused, each for its reason.
func testIdentityJWT(t *testing.T, fx *securityFixture) {
	dir := t.TempDir()
	j := &jwtIssuer{iss: "https://idp.hospital/realms/pacs", aud: "dicomgw"}
	var err error
	if j.ec, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if j.stranger, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		t.Fatal(err)
	}
	if j.rsa, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{
		{Key: &j.ec.PublicKey, KeyID: "ec-1", Algorithm: string(jose.ES256), Use: "sig"},
		{Key: &j.rsa.PublicKey, KeyID: "rsa-1", Algorithm: string(jose.RS256), Use: "sig"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	jwksFile := filepath.Join(dir, "jwks.json")
	if err := os.WriteFile(jwksFile, jwks, 0o644); err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	payload, _ := json.Marshal(j.claims(j.aud, time.Hour))
	tokens := map[string]string{
		"good ES256":      j.sign(t, j.ec, jose.ES256, "ec-1", j.claims(j.aud, time.Hour)),
		"good RS256":      j.sign(t, j.rsa, jose.RS256, "rsa-1", j.claims(j.aud, time.Hour)),
		"expired":         j.sign(t, j.ec, jose.ES256, "ec-1", j.claims(j.aud, -time.Hour)),
		"wrong audience":  j.sign(t, j.ec, jose.ES256, "ec-1", j.claims("another-service", time.Hour)),
		"alg none":        b64([]byte(`{"alg":"none","typ":"JWT"}`)) + "." + b64(payload) + ".",
		"unknown key":     j.sign(t, j.stranger, jose.ES256, "ec-1", j.claims(j.aud, time.Hour)),
		"good, plaintext": j.sign(t, j.ec, jose.ES256, "ec-1", j.claims(j.aud, time.Hour)),
	}
	files := map[string]string{}
	for name, tok := range tokens {
		fx.secret("JWT "+name, tok)
		if parts := strings.Split(tok, "."); len(parts[2]) > 0 {
			fx.secret("JWT signature "+name, parts[2])
		}
		files[name] = filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".jwt")
		if err := os.WriteFile(files[name], []byte(tok), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	g := fx.gateway(t, append([]string{"--jwt-jwks-file", jwksFile, "--jwt-issuer", j.iss, "--jwt-audience", j.aud,
		"--require-user-identity"}, fx.tlsGatewayArgs(true)...)...)
	ic := identityCheck{t, g}
	tlsOpts := fx.dcmtkTLS(fx.ct1)

	for _, name := range []string{"good ES256", "good RS256"} {
		if r, n := storescuOne(t, g, g.TLSAddr, "JWTSCU", append([]string{"--jwt", files[name]}, tlsOpts...)...); r.Code != 0 || n != 1 {
			t.Errorf("storescu --jwt (%s) over TLS: %d objects; %v", name, n, r)
		}
	}
	for _, tc := range []struct{ name, reason string }{
		{"expired", "expired"},
		{"wrong audience", "invalid-token"},
		{"alg none", "invalid-token"},
		{"unknown key", "invalid-token"},
		{"good, plaintext", "insecure-transport"},
	} {
		before := ic.count(tc.reason)
		addr, opts := g.TLSAddr, tlsOpts
		if tc.name == "good, plaintext" {
			addr, opts = g.Addr, nil
		}
		r, n := storescuOne(t, g, addr, "JWTSCU", append([]string{"--jwt", files[tc.name]}, opts...)...)
		if r.Code == 0 || n != 0 || !strings.Contains(r.Out, "Rejected") {
			t.Errorf("storescu --jwt (%s): want the association rejected, got %d objects; %v", tc.name, n, r)
		}
		ic.counted(tc.reason, before)
	}
	// The exact rejection, and the positive response, with our requestor.
	cfg := fx.clientTLS(fx.ct1)
	jwtID := func(name string, rsp bool) *pdu.UserIdentityRQ {
		return &pdu.UserIdentityRQ{Type: pdu.UserIdentityJWT, Primary: []byte(tokens[name]), PositiveResponseRequested: rsp}
	}
	before := ic.count("expired")
	_, err = dialSecure(g.TLSAddr, "JWTSCU", cfg, jwtID("expired", false))
	ic.refused(err, "expired", before)
	c, err := echoSecure(t, g.TLSAddr, "JWTSCU", cfg, jwtID("good ES256", true))
	if err != nil {
		t.Fatalf("good token, positive response requested: %v", err)
	}
	if c.Accepted().UserInfo.UserIdentityAC == nil {
		t.Errorf("good token, positive response requested: no sub-item 59")
	}
}
