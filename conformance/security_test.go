package conformance

// security_test.go: issue 6, DICOM TLS (PS3.15 B.12/B.13), senders bound to
// addresses and client certificates, user identities (PS3.7 D.3.3.7) and
// authorized upstream delivery. Everything runs under TestSecurity, whose
// last step reads every log line and a /metrics scrape of every gateway the
// other steps started and looks for every secret they used.

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// TestSecurity runs the security steps in parallel, then checks that none
// of their secrets reached a gateway's log or metrics.
func TestSecurity(t *testing.T) {
	t.Parallel()
	fx := newSecurityFixture(t)
	steps := []struct {
		name string
		run  func(*testing.T, *securityFixture)
	}{
		{"TLSInterop", testTLSInterop},
		{"TLSPlaintextOff", testTLSPlaintextOff},
		{"TLSCertificateReload", testTLSCertificateReload},
		{"AllowlistBindings", testAllowlistBindings},
		{"AllowlistBareAndBound", testAllowlistBareAndBound},
		{"IdentityPasscode", testIdentityPasscode},
		{"IdentityRequired", testIdentityRequired},
		{"IdentityJWT", testIdentityJWT},
		{"UpstreamOAuth2", testUpstreamOAuth2},
		{"UpstreamTokenFile", testUpstreamTokenFile},
		{"UpstreamPauseResume", testUpstreamPauseResume},
		{"UpstreamBasicAuth", testUpstreamBasicAuth},
		{"UpstreamTLS", testUpstreamTLS},
		{"UpstreamRedirect", testUpstreamRedirect},
		{"KHEOPS", testKHEOPS},
	}
	t.Run("steps", func(t *testing.T) {
		for _, s := range steps {
			t.Run(s.name, func(t *testing.T) {
				t.Parallel()
				s.run(t, fx)
			})
		}
	})
	t.Run("SecretsNeverLogged", fx.checkSecrets)
}

// securityFixture is what the steps share: two certificate authorities and
// the certificates they issued, and the record of every gateway started and
// every secret used.
type securityFixture struct {
	ca, otherCA    *harness.PKI
	server         *harness.Cert // localhost / 127.0.0.1, from ca
	ct1, ct2       *harness.Cert // clients CN=ct1.hospital, CN=ct2.hospital
	sanOnly        *harness.Cert // CN=modality-7, DNS SAN CT1.HOSPITAL
	expired        *harness.Cert // CN=ct1.hospital, expired
	foreign        *harness.Cert // CN=ct1.hospital, from otherCA
	foreignServer  *harness.Cert // localhost, from otherCA
	upstreamClient *harness.Cert // the gateway's client certificate towards a STOW-RS endpoint

	mu       sync.Mutex
	secrets  []secret
	gateways []*securedGateway
}

type secret struct{ what, value string }

// securedGateway is a gateway a step started, with its /metrics as scraped
// just before it was stopped.
type securedGateway struct {
	step   string
	g      *harness.Gateway
	scrape string
}

func newSecurityFixture(t *testing.T) *securityFixture {
	dir := t.TempDir()
	fx := &securityFixture{}
	var err error
	must := func(c *harness.Cert, e error) *harness.Cert {
		t.Helper()
		if e != nil {
			t.Fatal(e)
		}
		fx.secretKey(c)
		return c
	}
	if fx.ca, err = harness.NewPKI(filepath.Join(dir, "ca"), "hospital-ca"); err != nil {
		t.Fatal(err)
	}
	if fx.otherCA, err = harness.NewPKI(filepath.Join(dir, "other"), "other-ca"); err != nil {
		t.Fatal(err)
	}
	fx.server = must(fx.ca.Server("server"))
	fx.ct1 = must(fx.ca.Client("ct1", "ct1.hospital"))
	fx.ct2 = must(fx.ca.Client("ct2", "ct2.hospital"))
	fx.sanOnly = must(fx.ca.Issue("san", harness.CertSpec{CN: "modality-7", DNSNames: []string{"CT1.HOSPITAL"}, Client: true}))
	fx.expired = must(fx.ca.ExpiredClient("expired", "ct1.hospital"))
	fx.foreign = must(fx.otherCA.Client("foreign", "ct1.hospital"))
	fx.foreignServer = must(fx.otherCA.Server("foreign-server"))
	fx.upstreamClient = must(fx.ca.Client("gateway-upstream", "dicomgw.hospital"))
	return fx
}

// secret records a value that must never appear in a gateway's log or
// metrics.
func (fx *securityFixture) secret(what, value string) {
	if len(value) < 6 {
		panic(fmt.Sprintf("secret %q is too short to look for", what))
	}
	fx.mu.Lock()
	defer fx.mu.Unlock()
	fx.secrets = append(fx.secrets, secret{what, value})
}

// secretKey records a private key: its PEM and each line of its base64
// body but the first (which is the same for every P-256 key: the algorithm
// identifiers).
func (fx *securityFixture) secretKey(c *harness.Cert) {
	name := filepath.Base(c.KeyFile)
	fx.secret("private key PEM "+name, string(c.KeyPEM))
	blk, _ := pem.Decode(c.KeyPEM)
	if blk == nil {
		panic("unparsable key PEM " + name)
	}
	lines := strings.Split(strings.TrimSpace(string(c.KeyPEM)), "\n")
	for i, l := range lines[2 : len(lines)-1] {
		if len(l) >= 16 {
			fx.secret(fmt.Sprintf("private key %s, base64 line %d", name, i+2), l)
		}
	}
}

// gateway starts a gateway for a step (startGateway) and keeps it for the
// final secrets check, scraping its /metrics just before it is stopped.
func (fx *securityFixture) gateway(t *testing.T, args ...string) *harness.Gateway {
	t.Helper()
	g := startGateway(t, t.TempDir(), args...)
	sg := &securedGateway{step: t.Name(), g: g}
	fx.mu.Lock()
	fx.gateways = append(fx.gateways, sg)
	fx.mu.Unlock()
	// Cleanups run last first: this one, before startGateway's stop.
	t.Cleanup(func() {
		for _, path := range []string{"/metrics", "/readyz", "/healthz"} {
			code, body := getURL(t, "http://"+g.MetricsAddr+path)
			sg.scrape += fmt.Sprintf("# %s: %d\n%s\n", path, code, body)
		}
	})
	return g
}

// checkSecrets is the last step: no secret in any gateway's log lines or
// scrapes.
func (fx *securityFixture) checkSecrets(t *testing.T) {
	fx.mu.Lock()
	defer fx.mu.Unlock()
	if len(fx.gateways) == 0 {
		t.Skip("no security step ran")
	}
	var logBytes, scrapeBytes int
	for _, sg := range fx.gateways {
		<-sg.g.Exited() // its log is complete
		logs := sg.g.Logs()
		logBytes += len(logs)
		scrapeBytes += len(sg.scrape)
		if !strings.Contains(sg.scrape, "dicomgw_associations_total") {
			t.Errorf("%s: no /metrics scrape was taken", sg.step)
		}
		for _, s := range fx.secrets {
			for i, line := range strings.Split(logs, "\n") {
				if strings.Contains(line, s.value) || strings.Contains(line, jsonEscaped(s.value)) {
					t.Errorf("%s: log line %d holds a secret (%s): %s", sg.step, i+1, s.what, harness.Tail(line, 400))
				}
			}
			if strings.Contains(sg.scrape, s.value) {
				t.Errorf("%s: /metrics holds a secret (%s)", sg.step, s.what)
			}
		}
	}
	t.Logf("%d secrets looked for in the logs (%d bytes) and scrapes (%d bytes) of %d gateways",
		len(fx.secrets), logBytes, scrapeBytes, len(fx.gateways))
}

// jsonEscaped is how a value would look inside a JSON log string.
func jsonEscaped(s string) string {
	r := strings.NewReplacer("\\", `\\`, "\"", `\"`, "\n", `\n`, "\r", `\r`, "\t", `\t`)
	return r.Replace(s)
}

// tlsGatewayArgs are the flags of a DICOM TLS port on a free loopback
// port with the fixture's server certificate, requiring client
// certificates from the fixture's CA when mutual.
func (fx *securityFixture) tlsGatewayArgs(mutual bool) []string {
	a := []string{"--tls-listen", "127.0.0.1:0", "--tls-cert", fx.server.CertFile, "--tls-key", fx.server.KeyFile}
	if mutual {
		a = append(a, "--tls-client-ca", fx.ca.CAFile)
	}
	return a
}

// dcmtkTLS are the dcmtk options to connect with client certificate c
// (nil: anonymous TLS, +tla) trusting the fixture's CA.
func (fx *securityFixture) dcmtkTLS(c *harness.Cert) []string {
	if c == nil {
		return []string{"+tla", "+cf", fx.ca.CAFile}
	}
	return []string{"+tls", c.KeyFile, c.CertFile, "+cf", fx.ca.CAFile}
}

// clientTLS is a Go client configuration trusting the fixture's CA and
// presenting c (nil: no certificate).
func (fx *securityFixture) clientTLS(c *harness.Cert) *tls.Config {
	cfg := &tls.Config{RootCAs: fx.ca.Pool()}
	if c != nil {
		cfg.Certificates = []tls.Certificate{c.TLS}
	}
	return cfg
}

// dialSecure opens an association with our requestor, over TLS when cfg is
// not nil, with a user identity when id is not nil.
func dialSecure(addr, callingAE string, cfg *tls.Config, id *pdu.UserIdentityRQ, ctxs ...dimse.ProposedContext) (*dimse.Client, error) {
	if len(ctxs) == 0 {
		ctxs = []dimse.ProposedContext{verificationContext}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	return dimse.Dial(ctx, addr, dimse.DialConfig{
		CallingAE: callingAE, CalledAE: calledAE, Contexts: ctxs, Timeout: 20 * time.Second,
		TLS: cfg, UserIdentity: id,
	})
}

// echoSecure associates, echoes and releases; it returns the association
// error, if any.
func echoSecure(t *testing.T, addr, callingAE string, cfg *tls.Config, id *pdu.UserIdentityRQ) (*dimse.Client, error) {
	t.Helper()
	c, err := dialSecure(addr, callingAE, cfg, id)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	if st, err := c.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Errorf("C-ECHO as %s: status %v, %v", callingAE, st, err)
	}
	if err := c.Release(); err != nil {
		t.Errorf("release as %s: %v", callingAE, err)
	}
	return c, nil
}

// waitMetric polls the gateway's /metrics until the series (name with
// exactly labels) has value want.
func waitMetric(t *testing.T, g *harness.Gateway, want float64, name string, labels ...string) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	var got float64
	for {
		m, err := g.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if got = m.Get(name, labels...); got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s{%s} = %v after 10s, want %v", name, strings.Join(labels, ","), got, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// metricValue is one series now.
func metricValue(t *testing.T, g *harness.Gateway, name string, labels ...string) float64 {
	t.Helper()
	m, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	return m.Get(name, labels...)
}

// testTLSInterop: dcmtk's echoscu and storescu reach the DICOM TLS port
// with a client certificate of the CA the gateway trusts, over TLS 1.3
// with an AEAD suite, and what they store is spooled. Without a client
// certificate, with one from another CA, with an expired one, and in
// plaintext, the handshake fails (the tool exits non-zero) and each failure
// is counted. A Go client sees TLS 1.3; one limited to TLS 1.1, or to CBC
// suites on TLS 1.2, is refused; on TLS 1.2 an AEAD suite is chosen.
func testTLSInterop(t *testing.T, fx *securityFixture) {
	echoscu, storescu := needTool(t, "echoscu"), needTool(t, "storescu")
	g := fx.gateway(t, fx.tlsGatewayArgs(true)...)
	host, port := "127.0.0.1", g.TLSPort()
	const fails = "dicomgw_tls_handshake_failures_total"

	r := runTool(30*time.Second, echoscu, append(append([]string{"-d"}, fx.dcmtkTLS(fx.ct1)...), "-aet", "TLSSCU", "-aec", calledAE, host, port)...)
	if r.Code != 0 {
		t.Fatalf("echoscu over TLS with a client certificate: %v", r)
	}
	if !regexpFind(`Protocol\s*:\s*TLSv1\.3`, r.Out) {
		t.Errorf("echoscu did not negotiate TLS 1.3:\n%s", grepLines(r.Out, "Protocol", "Ciphersuite"))
	}

	objs := studyObjects(t, t.TempDir(), 3, 4<<10)
	before := queueSnapshot(t, g.SpoolDir)
	args := append(fx.dcmtkTLS(fx.ct1), "-aet", "TLSSCU", "-aec", calledAE, "-xe", host, port)
	for _, o := range objs {
		args = append(args, o.Path)
	}
	if r := runTool(60*time.Second, storescu, args...); r.Code != 0 {
		t.Fatalf("storescu over TLS: %v", r)
	}
	got := newObjects(t, g.SpoolDir, before)
	if len(got) != len(objs) {
		t.Fatalf("%d objects spooled after storescu over TLS, want %d", len(got), len(objs))
	}
	want := map[string]bool{}
	for _, o := range objs {
		want[o.SOPInstanceUID] = true
	}
	for _, p := range got {
		o := readSpooled(t, p)
		if !want[o.Meta.SOPInstanceUID] || o.Meta.CallingAE != "TLSSCU" {
			t.Errorf("spooled %s: instance %s from %q, not one storescu sent as TLSSCU", filepath.Base(p), o.Meta.SOPInstanceUID, o.Meta.CallingAE)
		}
	}
	waitMetric(t, g, 0, fails)

	// Refused handshakes, one at a time, each counted.
	n := 0.0
	for _, tc := range []struct {
		name string
		args []string
	}{
		{"no client certificate (+tla)", fx.dcmtkTLS(nil)},
		{"client certificate of another CA", []string{"+tls", fx.foreign.KeyFile, fx.foreign.CertFile, "+cf", fx.ca.CAFile}},
		{"expired client certificate", fx.dcmtkTLS(fx.expired)},
		{"plaintext on the TLS port", nil},
	} {
		r := runTool(30*time.Second, echoscu, append(tc.args, "-aet", "TLSSCU", "-aec", calledAE, host, port)...)
		if r.Code == 0 {
			t.Errorf("echoscu with %s: exit 0, want a failure", tc.name)
		}
		n++
		waitMetric(t, g, n, fails)
	}
	// TLS on the plaintext port is no association either.
	if r := runTool(30*time.Second, echoscu, append(fx.dcmtkTLS(fx.ct1), "-aec", calledAE, host, g.Port())...); r.Code == 0 {
		t.Errorf("echoscu over TLS to the plaintext port: exit 0")
	}

	// Go clients: the version and suite negotiated, and what is refused.
	tcfg := fx.clientTLS(fx.ct1)
	cs := tlsState(t, g.TLSAddr, tcfg)
	if cs.Version != tls.VersionTLS13 {
		t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(cs.Version))
	}
	c12 := tcfg.Clone()
	c12.MaxVersion = tls.VersionTLS12
	if cs := tlsState(t, g.TLSAddr, c12); cs.Version != tls.VersionTLS12 || !aeadSuite(cs.CipherSuite) {
		t.Errorf("a TLS 1.2 client got %s with %s, want TLS 1.2 with an AEAD suite", tls.VersionName(cs.Version), tls.CipherSuiteName(cs.CipherSuite))
	}
	old := tcfg.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	cbc := tcfg.Clone()
	cbc.MaxVersion = tls.VersionTLS12
	cbc.CipherSuites = []uint16{
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
		tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	}
	for name, cfg := range map[string]*tls.Config{"TLS 1.0-1.1 only": old, "TLS 1.2 with CBC suites only": cbc} {
		conn, err := tls.Dial("tcp", g.TLSAddr, cfg)
		if err == nil {
			st := conn.ConnectionState()
			conn.Close()
			t.Errorf("a client with %s got through: %s, %s", name, tls.VersionName(st.Version), tls.CipherSuiteName(st.CipherSuite))
			continue
		}
		n++
		waitMetric(t, g, n, fails)
	}

	// And a DIMSE association over TLS from our requestor.
	if _, err := echoSecure(t, g.TLSAddr, "TLSSCU", tcfg, nil); err != nil {
		t.Errorf("our requestor over TLS: %v", err)
	}
	if len(g.LogLines("TLS handshake failed")) < int(n) {
		t.Errorf("%d \"TLS handshake failed\" log records, want %v", len(g.LogLines("TLS handshake failed")), n)
	}
}

// tlsState makes a TLS connection (handshake only) and returns its state.
func tlsState(t *testing.T, addr string, cfg *tls.Config) tls.ConnectionState {
	t.Helper()
	d := &tls.Dialer{Config: cfg}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		t.Fatalf("TLS to %s: %v", addr, err)
	}
	defer conn.Close()
	return conn.(*tls.Conn).ConnectionState()
}

// aeadSuite: the TLS 1.2 suites with AEAD ciphers (GCM, ChaCha20-Poly1305).
func aeadSuite(id uint16) bool {
	n := tls.CipherSuiteName(id)
	return strings.Contains(n, "_GCM_") || strings.Contains(n, "CHACHA20_POLY1305")
}

// testTLSPlaintextOff: with --listen "" the gateway listens on its TLS port
// and its metrics port and nothing else: the log says addr "", the process
// holds exactly two listening sockets, and TLS associations work.
func testTLSPlaintextOff(t *testing.T, fx *securityFixture) {
	g := fx.gateway(t, append([]string{"--listen", ""}, fx.tlsGatewayArgs(true)...)...)
	if g.Addr != "" || g.TLSAddr == "" {
		t.Fatalf("listening on %q (plaintext) and %q (TLS); want none and one", g.Addr, g.TLSAddr)
	}
	ports, err := listeningPorts(g.PID())
	if err != nil {
		t.Fatal(err)
	}
	_, mport := splitAddr(g.MetricsAddr)
	want := []string{g.TLSPort(), mport}
	slices.Sort(want)
	if !slices.Equal(ports, want) {
		t.Errorf("the gateway listens on ports %v, want only the TLS and metrics ports %v", ports, want)
	}
	if _, err := echoSecure(t, g.TLSAddr, "TLSONLY", fx.clientTLS(fx.ct2), nil); err != nil {
		t.Errorf("association over TLS: %v", err)
	}
	// The conventional plaintext port is not it either.
	if ports, _ := listeningPorts(g.PID()); slices.Contains(ports, "11112") {
		t.Errorf("listening on 11112")
	}
}

// listeningPorts lists the TCP ports on which process pid holds a
// listening socket (its socket inodes in /proc/<pid>/fd matched against
// /proc/<pid>/net/tcp{,6}, state 0A: LISTEN), sorted.
func listeningPorts(pid int) ([]string, error) {
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return nil, err
	}
	inodes := map[string]bool{}
	for _, fd := range fds {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, fd.Name()))
		if err == nil && strings.HasPrefix(l, "socket:[") {
			inodes[strings.TrimSuffix(strings.TrimPrefix(l, "socket:["), "]")] = true
		}
	}
	var ports []string
	for _, f := range []string{"tcp", "tcp6"} {
		fh, err := os.Open(fmt.Sprintf("/proc/%d/net/%s", pid, f))
		if err != nil {
			return nil, err
		}
		sc := bufio.NewScanner(fh)
		for sc.Scan() {
			fs := strings.Fields(sc.Text())
			if len(fs) < 10 || fs[3] != "0A" || !inodes[fs[9]] {
				continue
			}
			_, hexPort, _ := strings.Cut(fs[1], ":")
			p, err := strconv.ParseUint(hexPort, 16, 16)
			if err != nil {
				fh.Close()
				return nil, fmt.Errorf("%s: %q", f, fs[1])
			}
			ports = append(ports, strconv.FormatUint(p, 10))
		}
		fh.Close()
	}
	slices.Sort(ports)
	return ports, nil
}

// testTLSCertificateReload: the certificate and key files are replaced by
// another certificate (another serial number) and the gateway gets SIGHUP:
// a new connection is served the new certificate while an association
// opened before the reload goes on (C-ECHO on it, then release). A broken
// key file on the next reload is refused and the certificate in force
// stays.
func testTLSCertificateReload(t *testing.T, fx *securityFixture) {
	dir := t.TempDir()
	certFile, keyFile := filepath.Join(dir, "tls.pem"), filepath.Join(dir, "tls-key.pem")
	first, err := fx.ca.Server("reload-1")
	if err != nil {
		t.Fatal(err)
	}
	second, err := fx.ca.Server("reload-2")
	if err != nil {
		t.Fatal(err)
	}
	fx.secretKey(first)
	fx.secretKey(second)
	if err := first.WriteTo(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	g := fx.gateway(t, "--tls-listen", "127.0.0.1:0", "--tls-cert", certFile, "--tls-key", keyFile)
	cfg := fx.clientTLS(nil)
	serial := func() string {
		return tlsState(t, g.TLSAddr, cfg).PeerCertificates[0].SerialNumber.String()
	}
	if s := serial(); s != first.Leaf.SerialNumber.String() {
		t.Fatalf("served serial %s, want the first certificate's %s", s, first.Leaf.SerialNumber)
	}
	held, err := dialSecure(g.TLSAddr, "RELOADSCU", cfg, nil)
	if err != nil {
		t.Fatalf("association before the reload: %v", err)
	}
	defer held.Close()
	if st, err := held.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Fatalf("C-ECHO before the reload: %v %v", st, err)
	}

	reloads := func() int { return len(g.LogLines("config reloaded")) + len(g.LogLines(reloadFailed)) }
	hup := func() {
		t.Helper()
		n := reloads()
		if err := g.Signal(syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for reloads() == n {
			if time.Now().After(deadline) {
				t.Fatalf("no reload logged within 10s of SIGHUP")
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	if err := second.WriteTo(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	hup()
	if len(g.LogLines(reloadFailed)) != 0 {
		t.Fatalf("reload failed: %v", g.LogLines(reloadFailed))
	}
	if s := serial(); s != second.Leaf.SerialNumber.String() {
		t.Errorf("after the reload a new connection is served serial %s, want the second certificate's %s", s, second.Leaf.SerialNumber)
	}
	if st, err := held.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Errorf("C-ECHO on the association opened before the reload: %v %v", st, err)
	}
	if err := held.Release(); err != nil {
		t.Errorf("release of the association opened before the reload: %v", err)
	}

	// A broken key: the reload fails, the second certificate stays.
	if err := os.WriteFile(keyFile, []byte("-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	hup()
	if len(g.LogLines(reloadFailed)) != 1 {
		t.Errorf("a broken key file was not refused on reload")
	}
	if s := serial(); s != second.Leaf.SerialNumber.String() {
		t.Errorf("after a failed reload, serial %s is served, want %s still", s, second.Leaf.SerialNumber)
	}
	waitMetric(t, g, 1, "dicomgw_config_reloads_total", `result="success"`)
	waitMetric(t, g, 1, "dicomgw_config_reloads_total", `result="failure"`)
}

// reloadFailed is the message of a refused SIGHUP reload.
const reloadFailed = "config reload failed; keeping the running settings"

// testAllowlistBindings: calling AEs bound to addresses and to client
// certificates (PS3.8 9.3.4: an AE the gateway will not take is rejected
// 1/1/3, "calling AE title not recognized").
func testAllowlistBindings(t *testing.T, fx *securityFixture) {
	echoscu := needTool(t, "echoscu")
	rejected := func(t *testing.T, err error) {
		t.Helper()
		wantReject(t, err, pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectCallingAENotRecognized)
	}

	t.Run("address", func(t *testing.T) {
		t.Parallel()
		g := fx.gateway(t, "--calling-ae", "CT1@10.0.0.0/8,CT2@127.0.0.1")
		_, err := echoSecure(t, g.Addr, "CT1", nil, nil)
		rejected(t, err) // the right AE from the wrong host
		if _, err := echoSecure(t, g.Addr, "CT2", nil, nil); err != nil {
			t.Errorf("CT2@127.0.0.1 from 127.0.0.1: %v", err)
		}
		_, err = echoSecure(t, g.Addr, "CT9", nil, nil)
		rejected(t, err) // unknown AE
		if r := runTool(30*time.Second, echoscu, "-aet", "CT1", "-aec", calledAE, g.Host(), g.Port()); r.Code == 0 {
			t.Errorf("echoscu as CT1 from 127.0.0.1 with CT1@10.0.0.0/8: exit 0")
		}
		if r := runTool(30*time.Second, echoscu, "-aet", "CT2", "-aec", calledAE, g.Host(), g.Port()); r.Code != 0 {
			t.Errorf("echoscu as CT2 with CT2@127.0.0.1: %v", r)
		}
	})

	t.Run("certificate", func(t *testing.T) {
		t.Parallel()
		g := fx.gateway(t, append([]string{"--calling-ae", "CT1@cn=ct1.hospital,CT2@127.0.0.1"}, fx.tlsGatewayArgs(true)...)...)
		// dcmtk with the certificate of ct1.hospital, then with ct2's.
		if r := runTool(30*time.Second, echoscu, append(fx.dcmtkTLS(fx.ct1), "-aet", "CT1", "-aec", calledAE, "127.0.0.1", g.TLSPort())...); r.Code != 0 {
			t.Errorf("echoscu as CT1 with the certificate of ct1.hospital: %v", r)
		}
		r := runTool(30*time.Second, echoscu, append(fx.dcmtkTLS(fx.ct2), "-aet", "CT1", "-aec", calledAE, "127.0.0.1", g.TLSPort())...)
		if r.Code == 0 || !strings.Contains(strings.ToLower(r.Out), "reject") {
			t.Errorf("echoscu as CT1 with the certificate of ct2.hospital: want a rejection, got %v", r)
		}
		// Exact codes with our requestor.
		if _, err := echoSecure(t, g.TLSAddr, "CT1", fx.clientTLS(fx.ct1), nil); err != nil {
			t.Errorf("CT1 with ct1.hospital's certificate: %v", err)
		}
		if _, err := echoSecure(t, g.TLSAddr, "CT1", fx.clientTLS(fx.sanOnly), nil); err != nil {
			t.Errorf("CT1 with a certificate whose DNS name is CT1.HOSPITAL: %v", err)
		}
		_, err := echoSecure(t, g.TLSAddr, "CT1", fx.clientTLS(fx.ct2), nil)
		rejected(t, err) // another certificate
		_, err = echoSecure(t, g.Addr, "CT1", nil, nil)
		rejected(t, err) // plaintext: no certificate at all
		_, err = echoSecure(t, g.TLSAddr, "CT9", fx.clientTLS(fx.ct1), nil)
		rejected(t, err) // the certificate does not make an unknown AE known
		if _, err := echoSecure(t, g.TLSAddr, "CT2", fx.clientTLS(fx.ct2), nil); err != nil {
			t.Errorf("CT2@127.0.0.1 over TLS: %v", err)
		}
	})

	t.Run("certificate without mutual TLS", func(t *testing.T) {
		t.Parallel()
		// The TLS port asks for no client certificate: nothing can match
		// cn=, even a client that offers the right one.
		g := fx.gateway(t, append([]string{"--calling-ae", "CT1@cn=ct1.hospital"}, fx.tlsGatewayArgs(false)...)...)
		_, err := echoSecure(t, g.TLSAddr, "CT1", fx.clientTLS(fx.ct1), nil)
		rejected(t, err)
	})
}

// testAllowlistBareAndBound: listing an AE title both alone and bound is a
// configuration error that names it (the bare entry would let anyone
// claiming the title in); the gateway does not start.
func testAllowlistBareAndBound(t *testing.T, fx *securityFixture) {
	for _, list := range []string{"CT1,CT1@127.0.0.1", "CT1@cn=ct1.hospital,CT1", "CT2,CT1@10.0.0.0/8,CT1"} {
		g, err := harness.Start(t.TempDir(), "--calling-ae", list, "--spool-min-free", "0", "--archive-dir", t.TempDir())
		if err == nil {
			g.Kill()
			t.Errorf("--calling-ae %s: the gateway started", list)
			continue
		}
		if !strings.Contains(err.Error(), `calling AE \"CT1\" is listed both alone and as`) {
			t.Errorf("--calling-ae %s: the start-up error does not name CT1:\n%v", list, err)
		}
	}
}

// regexpFind reports whether pattern matches s.
func regexpFind(pattern, s string) bool { return regexp.MustCompile(pattern).MatchString(s) }

// grepLines returns the lines of s containing any of words.
func grepLines(s string, words ...string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		for _, w := range words {
			if strings.Contains(l, w) {
				out = append(out, l)
				break
			}
		}
	}
	return strings.Join(out, "\n")
}
