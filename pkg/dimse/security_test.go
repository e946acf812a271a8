package dimse

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"io"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// testPKI is a CA with a server certificate for 127.0.0.1 and client
// certificates by common name.
type testPKI struct {
	ca     *x509.Certificate
	caKey  *ecdsa.PrivateKey
	pool   *x509.CertPool
	server tls.Certificate
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(der)
	p := &testPKI{ca: ca, caKey: key, pool: x509.NewCertPool()}
	p.pool.AddCert(ca)
	p.server = p.issue(t, "gateway", []net.IP{net.ParseIP("127.0.0.1")}, x509.ExtKeyUsageServerAuth)
	return p
}

func (p *testPKI) issue(t *testing.T, cn string, ips []net.IP, usage x509.ExtKeyUsage) tls.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IPAddresses: ips,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.ca, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}
}

// startTLS serves cfg on a TLS listener that requires client certificates
// from the test CA.
func startTLS(t *testing.T, pki *testPKI, cfg Config, h StoreHandler) (*Server, string) {
	t.Helper()
	srv, err := NewServer(withAE(cfg), h, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	inner, _ := net.Listen("tcp", "127.0.0.1:0")
	ln := NewTLSListener(inner, &tls.Config{Certificates: []tls.Certificate{pki.server}, ClientCAs: pki.pool,
		ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12})
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		<-done
	})
	return srv, inner.Addr().String()
}

func withAE(c Config) Config {
	if len(c.AETitles) == 0 {
		c.AETitles = []string{"DICOMGW"}
	}
	return c
}

func dialTLS(addr, calling string, pki *testPKI, cert *tls.Certificate, id *pdu.UserIdentityRQ) (*Client, error) {
	tc := &tls.Config{RootCAs: pki.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		tc.Certificates = []tls.Certificate{*cert}
	}
	return Dial(context.Background(), addr, DialConfig{CallingAE: calling, CalledAE: "DICOMGW",
		Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second, TLS: tc, UserIdentity: id})
}

// TestCertificateBoundAE: CT1@cn=ct1.hospital lets CT1 in only with that
// client certificate; the title alone, or another certificate, is refused
// 1/1/3 (the AE title is no proof of identity when a binding exists).
func TestCertificateBoundAE(t *testing.T) {
	pki := newPKI(t)
	bound, err := ParseCallingAE(context.Background(), "CT1@cn=ct1.hospital")
	if err != nil {
		t.Fatal(err)
	}
	srv, addr := startTLS(t, pki, Config{CallingAEs: []CallingAE{bound}}, newMemStore())
	ct1 := pki.issue(t, "ct1.hospital", nil, x509.ExtKeyUsageClientAuth)
	other := pki.issue(t, "mr1.hospital", nil, x509.ExtKeyUsageClientAuth)

	c, err := dialTLS(addr, "CT1", pki, &ct1, nil)
	if err != nil {
		t.Fatalf("CT1 with its certificate: %v", err)
	}
	if st, err := c.Echo(); err != nil || st != StatusSuccess {
		t.Fatalf("echo over TLS: %v %v", st, err)
	}
	c.Release()
	_, err = dialTLS(addr, "CT1", pki, &other, nil)
	var rj *RejectedError
	if !errors.As(err, &rj) || rj.Reason != pdu.RejectCallingAENotRecognized {
		t.Fatalf("CT1 with another certificate: %v", err)
	}
	// No client certificate on a port that requires one: the handshake fails.
	if _, err := dialTLS(addr, "CT1", pki, nil, nil); err == nil {
		t.Fatal("no client certificate, yet associated")
	}
	// Plaintext on the TLS port.
	raw := dialRaw(t, addr)
	raw.send(rqFor(pcEcho))
	raw.expectClosed(5 * time.Second)
	deadline := time.Now().Add(5 * time.Second)
	for testutil.ToFloat64(srv.m.tlsFailures) < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%v TLS failures counted, want 2", testutil.ToFloat64(srv.m.tlsFailures))
		}
		time.Sleep(10 * time.Millisecond)
	}

	// On a plain port the bound entry never matches.
	_, plain := startServer(t, Config{CallingAEs: []CallingAE{bound}}, newMemStore())
	if _, err := Dial(context.Background(), plain, DialConfig{CallingAE: "CT1", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second}); !errors.As(err, &rj) {
		t.Fatalf("CT1 in plaintext: %v", err)
	}
	bare, _ := ParseCallingAE(context.Background(), "CT1")
	if _, err := NewServer(Config{AETitles: []string{"X"}, CallingAEs: []CallingAE{bound, bare}}, newMemStore(), nil, nil); err == nil {
		t.Fatal("CT1 both bound and bare accepted")
	}
}

type fakeAuth struct{}

type authErr string

func (e authErr) Error() string      { return string(e) }
func (e authErr) AuthReason() string { return string(e) }

func (fakeAuth) Authenticate(_ context.Context, id *Identity) ([]byte, error) {
	if !id.TLS {
		return nil, authErr("insecure-transport")
	}
	if id.User.Type != pdu.UserIdentityUsernamePasscode || string(id.User.Primary) != "bob" || string(id.User.Secondary) != "secret" {
		return nil, authErr("bad-credentials")
	}
	return nil, nil
}

// TestUserIdentity: PS3.7 D.3.3.7. A good identity is accepted (with
// sub-item 59 when asked for); a bad or missing one (when required) is
// A-ASSOCIATE-RJ 1/1/1 with no reason on the wire, counted by reason.
func TestUserIdentity(t *testing.T) {
	pki := newPKI(t)
	srv, addr := startTLS(t, pki, Config{Authenticator: fakeAuth{}, RequireUserIdentity: true}, newMemStore())
	cert := pki.issue(t, "ws1", nil, x509.ExtKeyUsageClientAuth)
	good := &pdu.UserIdentityRQ{Type: pdu.UserIdentityUsernamePasscode, PositiveResponseRequested: true, Primary: []byte("bob"), Secondary: []byte("secret")}
	c, err := dialTLS(addr, "WS1", pki, &cert, good)
	if err != nil {
		t.Fatal(err)
	}
	if c.Accepted().UserInfo.UserIdentityAC == nil {
		t.Error("positive response requested but no user identity AC sub-item")
	}
	c.Release()
	want := pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectNoReason}
	bad := *good
	bad.Secondary = []byte("guess")
	for _, id := range []*pdu.UserIdentityRQ{&bad, nil} {
		_, err := dialTLS(addr, "WS1", pki, &cert, id)
		var rj *RejectedError
		if !errors.As(err, &rj) || rj.AssociateRJ != want {
			t.Fatalf("identity %v: %v, want 1/1/1", id, err)
		}
	}
	if got := testutil.ToFloat64(srv.m.authFailures.WithLabelValues("bad-credentials")); got != 1 {
		t.Errorf("bad-credentials failures: %v", got)
	}
	if got := testutil.ToFloat64(srv.m.authFailures.WithLabelValues("missing")); got != 1 {
		t.Errorf("missing failures: %v", got)
	}
	// Over plaintext the same identity is refused by the authenticator.
	_, plain := startServer(t, Config{Authenticator: fakeAuth{}}, newMemStore())
	_, err = Dial(context.Background(), plain, DialConfig{CallingAE: "WS1", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second, UserIdentity: good})
	var rj *RejectedError
	if !errors.As(err, &rj) || rj.AssociateRJ != want {
		t.Fatalf("identity in plaintext: %v", err)
	}
}

// clientHello is the first flight of a TLS client: one record holding a
// ClientHello.
func clientHello(t *testing.T) []byte {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(c, &tls.Config{ServerName: "gateway", MinVersion: tls.VersionTLS12}).Handshake()
	}()
	buf := make([]byte, 16<<10)
	s.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := s.Read(buf)
	s.Close()
	c.Close()
	<-done
	if err != nil || n < 5 || buf[0] != 0x16 {
		t.Fatalf("no ClientHello record: %d bytes, %v", n, err)
	}
	return buf[:n]
}

// TestTLSBareConnect: on a TLS port, a connection that closes, resets or
// stays silent before its first byte (a load balancer's or Kubernetes' TCP
// check) attempted no handshake and is not counted as a failed one; a
// client that sent its ClientHello and then closed is, even though it
// closed at a TLS record boundary (which crypto/tls reports as io.EOF,
// like a bare close).
func TestTLSBareConnect(t *testing.T) {
	pki := newPKI(t)
	srv, addr := startTLS(t, pki, Config{ARTIMTimeout: 300 * time.Millisecond}, newMemStore())
	ended := func(outcome string) float64 { return testutil.ToFloat64(srv.m.ended.WithLabelValues(outcome)) }
	waitEnded := func(outcome string, n float64) {
		t.Helper()
		for deadline := time.Now().Add(5 * time.Second); ended(outcome) < n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%v connections ended %s, want %v", ended(outcome), outcome, n)
			}
		}
	}
	dialTCP := func() *net.TCPConn {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		return c.(*net.TCPConn)
	}

	dialTCP().Close() // FIN
	c := dialTCP()
	c.SetLinger(0) // RST, as HAProxy's and some cloud load balancers' checks do
	c.Close()
	waitEnded("connection-lost", 2)
	silent := dialTCP()
	defer silent.Close()
	waitEnded("artim-expired", 1)
	if n := testutil.ToFloat64(srv.m.tlsFailures); n != 0 {
		t.Errorf("dicomgw_tls_handshake_failures_total = %v after bare connects, want 0", n)
	}

	// A ClientHello, then a clean close at the record boundary.
	hello := clientHello(t)
	c = dialTCP()
	defer c.Close()
	if _, err := c.Write(hello); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil {
		t.Fatalf("the server's answer to a ClientHello: %v", err)
	}
	waitEnded("connection-lost", 3)
	if n := testutil.ToFloat64(srv.m.tlsFailures); n != 1 {
		t.Errorf("dicomgw_tls_handshake_failures_total = %v after a ClientHello and a close, want 1", n)
	}
	// And a real association still works.
	ct1 := pki.issue(t, "ct1.hospital", nil, x509.ExtKeyUsageClientAuth)
	cl, err := dialTLS(addr, "CT1", pki, &ct1, nil)
	if err != nil {
		t.Fatal(err)
	}
	cl.Release()
}
