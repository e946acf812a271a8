package harness

import (
	"crypto/tls"
	"crypto/x509"
	"os"
	"testing"
)

// TestPKI: what the PKI issues verifies as it should: the server
// certificate for 127.0.0.1 and localhost, a client certificate for client
// authentication, an expired one and one of another CA not; every file is
// PEM that crypto/tls loads.
func TestPKI(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewPKI(dir, "ca")
	if err != nil {
		t.Fatal(err)
	}
	other, err := NewPKI(dir, "other")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ca.Server("server")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ca.Client("client", "ct1.hospital")
	if err != nil {
		t.Fatal(err)
	}
	exp, err := ca.ExpiredClient("expired", "ct1.hospital")
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Client("foreign", "ct1.hospital")
	if err != nil {
		t.Fatal(err)
	}
	verify := func(c *Cert, usage x509.ExtKeyUsage, name string) error {
		_, err := c.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{usage}, DNSName: name})
		return err
	}
	for _, name := range []string{"localhost", "127.0.0.1", "::1"} {
		if err := verify(srv, x509.ExtKeyUsageServerAuth, name); err != nil {
			t.Errorf("server certificate for %s: %v", name, err)
		}
	}
	if err := verify(cl, x509.ExtKeyUsageClientAuth, ""); err != nil {
		t.Errorf("client certificate: %v", err)
	}
	if cl.Leaf.Subject.CommonName != "ct1.hospital" {
		t.Errorf("client CN %q", cl.Leaf.Subject.CommonName)
	}
	if err := verify(exp, x509.ExtKeyUsageClientAuth, ""); err == nil {
		t.Errorf("the expired certificate verifies")
	}
	if err := verify(foreign, x509.ExtKeyUsageClientAuth, ""); err == nil {
		t.Errorf("a certificate of another CA verifies")
	}
	if srv.Leaf.SerialNumber.Cmp(cl.Leaf.SerialNumber) == 0 {
		t.Errorf("two certificates share serial %s", srv.Leaf.SerialNumber)
	}
	if _, err := tls.LoadX509KeyPair(srv.CertFile, srv.KeyFile); err != nil {
		t.Errorf("LoadX509KeyPair: %v", err)
	}
	b, err := os.ReadFile(ca.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	if !x509.NewCertPool().AppendCertsFromPEM(b) {
		t.Errorf("%s is not PEM", ca.CAFile)
	}
	if fi, err := os.Stat(srv.KeyFile); err != nil {
		t.Error(err)
	} else if fi.Mode().Perm() != 0o600 {
		t.Errorf("key file mode %v, want 0600", fi.Mode().Perm())
	}
}
