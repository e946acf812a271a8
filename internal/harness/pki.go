package harness

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"time"
)

// PKI is a throwaway certificate authority for tests of DICOM TLS and of
// TLS to a STOW-RS endpoint: it issues server and client certificates
// (ECDSA P-256, SHA-256, as the BCP 195 profiles of PS3.15 B.13 allow) and
// writes everything as PEM files into Dir, where dcmtk (+tls, +cf), the
// gateway (--tls-cert, --tls-client-ca, --stow-ca-file...) and Go test
// servers read them.
type PKI struct {
	Dir    string
	CACert *x509.Certificate
	CAFile string // the CA certificate, PEM
	caKey  *ecdsa.PrivateKey
}

// Cert is an issued certificate and its key, on disk and in memory.
type Cert struct {
	Leaf     *x509.Certificate
	CertFile string // PEM certificate
	KeyFile  string // PEM private key (PKCS #8, unencrypted)
	CertPEM  []byte
	KeyPEM   []byte // a secret: tests check that it is never logged
	TLS      tls.Certificate
}

// CertSpec says what a certificate is for.
type CertSpec struct {
	CN       string
	DNSNames []string
	IPs      []net.IP
	Server   bool // extended key usage serverAuth
	Client   bool // extended key usage clientAuth
	// NotBefore and NotAfter default to an hour ago and a day from now.
	NotBefore, NotAfter time.Time
}

// NewPKI creates a CA named name whose files go into dir (created if
// missing).
func NewPKI(dir, name string) (*PKI, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: name, Organization: []string{"dicomgw tests"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(7 * 24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	ca, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	p := &PKI{Dir: dir, CACert: ca, CAFile: filepath.Join(dir, name+"-ca.pem"), caKey: key}
	if err := os.WriteFile(p.CAFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	return p, nil
}

// Pool is a certificate pool holding only this CA.
func (p *PKI) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(p.CACert)
	return pool
}

// Issue signs a certificate for s and writes it as <name>.pem and its key
// as <name>-key.pem into Dir. Each certificate gets a random serial number.
func (p *PKI) Issue(name string, s CertSpec) (*Cert, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	if s.NotBefore.IsZero() {
		s.NotBefore = now.Add(-time.Hour)
	}
	if s.NotAfter.IsZero() {
		s.NotAfter = now.Add(24 * time.Hour)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: s.CN, Organization: []string{"dicomgw tests"}},
		DNSNames:              s.DNSNames,
		IPAddresses:           s.IPs,
		NotBefore:             s.NotBefore,
		NotAfter:              s.NotAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
	}
	if s.Server {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageServerAuth)
	}
	if s.Client {
		tmpl.ExtKeyUsage = append(tmpl.ExtKeyUsage, x509.ExtKeyUsageClientAuth)
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.CACert, &key.PublicKey, p.caKey)
	if err != nil {
		return nil, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pk, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	c := &Cert{
		Leaf:     leaf,
		CertFile: filepath.Join(p.Dir, name+".pem"),
		KeyFile:  filepath.Join(p.Dir, name+"-key.pem"),
		CertPEM:  pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		KeyPEM:   pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}),
	}
	if c.TLS, err = tls.X509KeyPair(c.CertPEM, c.KeyPEM); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.CertFile, c.CertPEM, 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(c.KeyFile, c.KeyPEM, 0o600); err != nil {
		return nil, err
	}
	return c, nil
}

// Server issues a server certificate for this machine's loopback:
// localhost, 127.0.0.1 and ::1.
func (p *PKI) Server(name string) (*Cert, error) {
	return p.Issue(name, CertSpec{
		CN: "localhost", DNSNames: []string{"localhost"},
		IPs:    []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		Server: true,
	})
}

// Client issues a client certificate whose subject common name is cn.
func (p *PKI) Client(name, cn string) (*Cert, error) {
	return p.Issue(name, CertSpec{CN: cn, Client: true})
}

// ExpiredClient issues a client certificate for cn that expired an hour
// ago.
func (p *PKI) ExpiredClient(name, cn string) (*Cert, error) {
	now := time.Now()
	return p.Issue(name, CertSpec{CN: cn, Client: true, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
}

// WriteTo copies the certificate and key to certFile and keyFile (the
// files a gateway was started with, to replace them before a reload).
func (c *Cert) WriteTo(certFile, keyFile string) error {
	if err := os.WriteFile(certFile, c.CertPEM, 0o644); err != nil {
		return err
	}
	return os.WriteFile(keyFile, c.KeyPEM, 0o600)
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		panic(fmt.Sprintf("crypto/rand: %v", err))
	}
	return n.Add(n, big.NewInt(1))
}
