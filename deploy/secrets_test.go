package deploy

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/crypto/bcrypt"
)

// writeSecretFiles writes, under a temporary directory laid out like the
// chart's Secret mounts (/var/run/secrets/dicomgw/<volume>/<key>), every
// file a rendered flags file may name: a self-signed certificate and key
// (server, client and CA at once), a users file, a JWKS, STOW-RS
// credentials. Returns the directory.
func writeSecretFiles(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "dicomgw.test"},
		DNSNames:              []string{"dicomgw.test", "localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	if err != nil {
		t.Fatal(err)
	}
	files := map[string][]byte{
		"tls/tls.crt":                   certPEM,
		"tls/tls.key":                   keyPEM,
		"tls-client-ca/ca.crt":          certPEM,
		"stow/token":                    []byte(testJWT(time.Now().Add(30 * 24 * time.Hour))),
		"stow/basic":                    []byte("gateway:secret\n"),
		"stow/client-secret":            []byte("s3cret\n"),
		"stow-ca/ca.crt":                certPEM,
		"stow-client/tls.crt":           certPEM,
		"stow-client/tls.key":           keyPEM,
		"users/users":                   []byte("# username:bcrypt-hash\nct1:" + string(hash) + "\n"),
		"console-users/users":           []byte("# htpasswd -nbB\nalice:" + string(hash) + "\n"),
		"console-tls/tls.crt":           certPEM,
		"console-tls/tls.key":           keyPEM,
		"jwks/jwks.json":                jwks,
		"destinations/kheops-ct/token":  []byte(testJWT(time.Now().Add(30 * 24 * time.Hour))),
		"destinations/pacs-tls/tls.crt": certPEM,
		"destinations/pacs-tls/tls.key": keyPEM,
		"destinations/pacs-tls/ca.crt":  certPEM,
		"remote-ae/1/ca.crt":            certPEM,
		"remote-ae/1/tls.crt":           certPEM,
		"remote-ae/1/tls.key":           keyPEM,
		"unused-but-harmless.note":      []byte("test fixture\n"),
	}
	for name, b := range files {
		p := filepath.Join(dir, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// testJWT is an unsigned-looking bearer token that is a JWT with an exp
// claim: what the gateway reads (not verifies) for
// dicomgw_stow_credential_expiry_seconds.
func testJWT(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	claims, _ := json.Marshal(map[string]any{"exp": exp.Unix(), "sub": "album"})
	return enc([]byte(`{"alg":"RS256","typ":"JWT"}`)) + "." + enc(claims) + "." + enc([]byte("signature"))
}
