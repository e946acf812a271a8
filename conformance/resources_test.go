package conformance

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// TestResourceConnectAbortCycles: 10,000 connections that end badly,
// from 8 senders at once, in a fixed mix: a third connect and close at
// once (Sta2, transport closed: AA-5), a third send an A-ASSOCIATE-RQ,
// read the A-ASSOCIATE-AC and send an A-ABORT (Sta6 Evt16: AA-3), a third
// send an A-ASSOCIATE-RQ and close without reading the answer (usually a
// reset: AA-4 or AA-5). Afterwards the gateway must be back where it
// started: goroutines within 5 of the baseline (the runtime and the
// metrics server have a few that come and go), descriptors too, RSS
// within 20 MB (the Go heap is returned to the system lazily; a leak of a
// goroutine with its 8 KiB stack and buffers per connection would be 80
// MB and more), and the counters must add up connection by connection.
func TestResourceConnectAbortCycles(t *testing.T) {
	t.Parallel()
	const cycles, senders = 10000, 8
	g := startGateway(t, t.TempDir(), "--archive-dir", t.TempDir(), "--artim-timeout", "3s")
	base := baseline(t, g)
	m0, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	rq := goodRQ("CYCLER")
	abort, err := pdu.Encode(&pdu.Abort{Source: pdu.AbortSourceUser})
	if err != nil {
		t.Fatal(err)
	}

	var kinds [3]atomic.Int64
	var failures atomic.Int64
	var peak atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		// RSS while the cycles run.
		defer close(sampled)
		for {
			if r, err := g.RSS(); err == nil && r > peak.Load() {
				peak.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	var wg sync.WaitGroup
	for s := 0; s < senders; s++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 64<<10)
			for i := s; i < cycles; i += senders {
				kind := i % 3
				if err := cycle(g.Addr, kind, rq, abort, buf); err != nil {
					if failures.Add(1) <= 5 {
						t.Errorf("cycle %d (kind %d): %v", i, kind, err)
					}
					continue
				}
				kinds[kind].Add(1)
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	t.Logf("%d connect/abort cycles in %v (%.0f per second, %d senders): %d closed at once, %d aborted after the AC, %d closed after the RQ",
		cycles, elapsed.Round(time.Millisecond), float64(cycles)/elapsed.Seconds(), senders, kinds[0].Load(), kinds[1].Load(), kinds[2].Load())
	if failures.Load() > 0 {
		t.Fatalf("%d cycles failed", failures.Load())
	}

	// Every connection is one association ended (dicomgw_associations_total
	// counts connections served to their end, by outcome): the closed ones
	// as connection-lost, the aborted ones as peer-aborted, each abort also
	// in dicomgw_associations_aborted_total{source="peer"}.
	var m1 harness.Metrics
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if m1, err = g.Scrape(); err != nil {
			t.Fatal(err)
		}
		if m1.Sum("dicomgw_associations_total")-m0.Sum("dicomgw_associations_total") >= cycles || time.Now().After(deadline) {
			break
		}
	}
	delta := func(name string, labels ...string) int64 {
		return int64(m1.Get(name, labels...) - m0.Get(name, labels...))
	}
	t.Logf("outcomes: %s", outcomeDeltas(m0, m1))
	if d := int64(m1.Sum("dicomgw_associations_total") - m0.Sum("dicomgw_associations_total")); d != cycles {
		t.Errorf("dicomgw_associations_total grew by %d for %d connections", d, cycles)
	}
	if d := delta("dicomgw_associations_total", `outcome="peer-aborted"`); d != kinds[1].Load() {
		t.Errorf("peer-aborted grew by %d, %d A-ABORTs were sent", d, kinds[1].Load())
	}
	if d := delta("dicomgw_associations_total", `outcome="connection-lost"`); d != kinds[0].Load()+kinds[2].Load() {
		t.Errorf("connection-lost grew by %d, %d connections were closed without release or abort", d, kinds[0].Load()+kinds[2].Load())
	}
	if d := int64(m1.Sum("dicomgw_associations_aborted_total", `source="peer"`) - m0.Sum("dicomgw_associations_aborted_total", `source="peer"`)); d != kinds[1].Load() {
		t.Errorf(`dicomgw_associations_aborted_total{source="peer"} grew by %d, %d A-ABORTs were sent`, d, kinds[1].Load())
	}
	if d := int64(m1.Sum("dicomgw_associations_rejected_total") - m0.Sum("dicomgw_associations_rejected_total")); d != 0 {
		t.Errorf("%d associations rejected", d)
	}
	if a := m1.Get("dicomgw_associations_active"); a != 0 {
		t.Errorf("dicomgw_associations_active = %v", a)
	}
	if p := g.LogLines("association panicked"); len(p) > 0 {
		t.Errorf("associations panicked:\n%s", harness.Tail(strings.Join(p, "\n"), 4000))
	}
	after := waitBackToBaseline(t, g, base, 5, 20<<20, 15*time.Second)
	t.Logf("baseline %v; peak VmRSS during the cycles %.1f MB; after %v", base, float64(peak.Load())/(1<<20), after)
	echoWorks(t, g, "AFTERCYCLES")
	noPartials(t, g.SpoolDir)
}

// cycle is one connection of TestResourceConnectAbortCycles.
func cycle(addr string, kind int, rq, abort, buf []byte) error {
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	switch kind {
	case 0:
		return nil
	case 2:
		_, err := c.Write(rq)
		return err
	}
	if _, err := c.Write(rq); err != nil {
		return err
	}
	p, err := pdu.NewReader(c, pdu.Limits{}, nil).ReadPDU()
	if err != nil {
		return fmt.Errorf("waiting for the A-ASSOCIATE-AC: %w", err)
	}
	if _, ok := p.(*pdu.AssociateAC); !ok {
		return fmt.Errorf("got %s, want A-ASSOCIATE-AC", describePDU(p))
	}
	if _, err := c.Write(abort); err != nil {
		return err
	}
	// A-ABORT: the gateway closes (AA-3); wait for it, so that the
	// connection is over on both sides before the next.
	for {
		if _, err := c.Read(buf); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return fmt.Errorf("after A-ABORT: %w", err)
		}
	}
}

// openIdle opens n TCP connections to addr that never send anything.
func openIdle(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := 0; i < n; i++ {
		c, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i+1, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// closedBy waits, for each connection at once, until the gateway closes it
// or timeout passes; it returns those it closed, those still open, and
// when the last was closed.
func closedBy(conns []net.Conn, timeout time.Duration) (closed, open []net.Conn, last time.Time) {
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, c := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := waitClosed(c, timeout)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				open = append(open, c)
				return
			}
			closed = append(closed, c)
			if at.After(last) {
				last = at
			}
		}()
	}
	wg.Wait()
	return closed, open, last
}

// TestResourceIdleConnections: connections that never send an
// A-ASSOCIATE-RQ (Sta2) cost the gateway little while they are open, do
// not stop it serving, and are all closed by it when ARTIM expires (PS3.8
// 9.1.5, Table 9-10 Sta2 Evt18 AA-2); beyond --max-connections (reached
// from several hosts, each within --max-connections-per-host) new
// connections are closed at once and counted.
func TestResourceIdleConnections(t *testing.T) {
	t.Parallel()
	const artim = 3 * time.Second

	t.Run("1000 under the limit", func(t *testing.T) {
		t.Parallel()
		const idle = 1000
		g := startGateway(t, t.TempDir(), "--archive-dir", t.TempDir(), "--artim-timeout", artim.String(), "--max-connections", "1100", "--max-connections-per-host", "1099")
		base := baseline(t, g)
		start := time.Now()
		conns := openIdle(t, g.Addr, idle)
		opened := time.Since(start)
		// The gateway has taken them all (one goroutine each).
		var held procSample
		for deadline := time.Now().Add(artim / 2); ; time.Sleep(20 * time.Millisecond) {
			held = sampleProc(t, g)
			if held.Goroutines >= base.Goroutines+idle || time.Now().After(deadline) {
				break
			}
		}
		if held.Goroutines < base.Goroutines+idle {
			t.Errorf("%d goroutines with %d connections open; baseline %d", held.Goroutines, idle, base.Goroutines)
		}
		// A real association meanwhile: an echo and a store.
		objs := studyObjects(t, t.TempDir(), 3, 4096)
		storeAll(t, g.Addr, "BUSYSCU", objs)
		echoWorks(t, g, "BUSYSCU")
		if elapsed := time.Since(start); elapsed > artim-500*time.Millisecond {
			t.Fatalf("opening %d connections and storing took %v, too close to ARTIM (%v) to say the connections were still open", idle, elapsed, artim)
		}
		held = sampleProc(t, g)
		perConn := float64(held.RSS-base.RSS) / idle
		t.Logf("%d idle connections opened in %v; gateway with them: %v (baseline %v): %.1f KB of RSS per connection",
			idle, opened.Round(time.Millisecond), held, base, perConn/1024)
		// Bounded: a goroutine (a few KiB of stack), a socket, no buffers
		// (P-DATA buffers come from a pool only when data moves).
		if held.RSS-base.RSS > 40<<20 {
			t.Errorf("RSS grew by %.1f MB with %d idle connections (over 40 KB each)", float64(held.RSS-base.RSS)/(1<<20), idle)
		}
		closed, _, last := closedBy(conns, artim+10*time.Second)
		if n := len(closed); n != idle {
			t.Errorf("the gateway closed %d of %d idle connections within ARTIM (%v) + 10 s", n, idle, artim)
		}
		t.Logf("the gateway closed %d idle connections, the last %v after the first was opened (ARTIM %v)", len(closed), last.Sub(start).Round(time.Millisecond), artim)
		m, err := g.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if r := m.Sum("dicomgw_connections_refused_total"); r != 0 {
			t.Errorf("dicomgw_connections_refused_total = %v under the limit", r)
		}
		after := waitBackToBaseline(t, g, base, 5, 20<<20, 10*time.Second)
		t.Logf("after ARTIM: %v", after)
	})

	t.Run("400 from five hosts at the default limits", func(t *testing.T) {
		t.Parallel()
		const hosts, perHost = 5, (4*dimse.DefaultMaxAssociations + 64) / 4 // --max-connections-per-host default
		const idle = hosts * perHost
		const limit = 4*dimse.DefaultMaxAssociations + 64 // --max-connections default
		g := startGateway(t, t.TempDir(), "--archive-dir", t.TempDir(), "--artim-timeout", artim.String())
		base := baseline(t, g)
		start := time.Now()
		// Each host stays within its own limit; the first four fill the
		// total, so the fifth's connections are refused for the total.
		var conns []net.Conn
		for h := 1; h <= hosts; h++ {
			conns = append(conns, openIdleFrom(t, fmt.Sprintf("127.0.0.%d", h), g.Addr, perHost)...)
		}
		// Beyond the limit a connection is accepted and closed at once:
		// well before ARTIM.
		refusedConns, open, _ := closedBy(conns, artim/3)
		if n := len(refusedConns); n != idle-limit {
			t.Errorf("%d of %d connections closed at once, want %d (the default --max-connections is %d)", n, idle, idle-limit, limit)
		}
		var refused, perHostRefused float64
		for deadline := time.Now().Add(2 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			m, err := g.Scrape()
			if err != nil {
				t.Fatal(err)
			}
			refused, perHostRefused = m.Get("dicomgw_connections_refused_total", `reason="total"`), m.Get("dicomgw_connections_refused_total", `reason="per_host"`)
			if refused >= idle-limit || time.Now().After(deadline) {
				break
			}
		}
		if refused != idle-limit || perHostRefused != 0 {
			t.Errorf("dicomgw_connections_refused_total{reason=total} = %v, want %d; {reason=per_host} = %v, want 0", refused, idle-limit, perHostRefused)
		}
		// At the limit, a real association from yet another host is
		// refused the same way.
		if time.Since(start) < artim-500*time.Millisecond {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			c, err := dimse.Dial(ctx, g.Addr, dimse.DialConfig{CallingAE: "LATECOMER", CalledAE: calledAE, Contexts: []dimse.ProposedContext{verificationContext},
				Timeout: 10 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.6")}})
			cancel()
			if err == nil {
				c.Close()
				t.Errorf("an association got through with %d connections open (limit %d)", limit, limit)
			}
		}
		t.Logf("%d idle connections from %d hosts: %d closed at once, dicomgw_connections_refused_total{reason=total} %v", idle, hosts, len(refusedConns), refused)
		closed, stillOpen, last := closedBy(open, artim+10*time.Second)
		if len(stillOpen) != 0 {
			t.Errorf("%d of the %d connections under the limit not closed by ARTIM (%v) + 10 s", len(stillOpen), len(open), artim)
		}
		t.Logf("the other %d closed by ARTIM, the last %v after the first was opened", len(closed), last.Sub(start).Round(time.Millisecond))
		after := waitBackToBaseline(t, g, base, 5, 20<<20, 10*time.Second)
		echoWorks(t, g, "AFTERLIMIT")
		t.Logf("after ARTIM: %v (baseline %v)", after, base)
	})
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestResourceConcurrentLargeTransfers: a dozen associations each
// storing a 200 MB object at the same time must not make the gateway hold
// them in memory: its peak RSS (VmHWM) stays under 150 MB, which is what
// streaming with 256 KiB P-DATA buffers allows and what holding even one
// object whole would exceed.
func TestResourceConcurrentLargeTransfers(t *testing.T) {
	t.Parallel()
	const transfers = 12
	const pixels = 200 << 20
	archive := t.TempDir()
	g := startGateway(t, t.TempDir(), "--archive-dir", archive)
	base := baseline(t, g)

	var peakSeen atomic.Int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			if r, err := g.RSS(); err == nil && r > peakSeen.Load() {
				peakSeen.Store(r)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	start := time.Now()
	insts := make([]string, transfers)
	errs := make([]error, transfers)
	var wg sync.WaitGroup
	for i := range transfers {
		insts[i] = harness.NewUID()
		c := dial(t, g.Addr, fmt.Sprintf("BIG%02d", i), storeContext(sopSecondaryCapture, tsExplicitLE))
		wg.Add(1)
		go func() {
			defer wg.Done()
			head := bigDataSet(insts[i], pixels)
			rsp, err := c.Store(sopSecondaryCapture, insts[i], tsExplicitLE, io.MultiReader(bytes.NewReader(head), io.LimitReader(zeros{}, pixels)))
			switch {
			case err != nil:
				errs[i] = err
			case rsp.Status != dimse.StatusSuccess:
				errs[i] = fmt.Errorf("status %v (%q)", rsp.Status, rsp.ErrorComment)
			default:
				errs[i] = c.Release()
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(stop)
	<-sampled
	for i, err := range errs {
		if err != nil {
			t.Errorf("transfer %d: %v", i, err)
		}
	}
	hwm, err := g.PeakRSS()
	if err != nil {
		t.Fatal(err)
	}
	total := float64(transfers) * pixels / (1 << 20)
	t.Logf("%d concurrent C-STOREs of %d MB each in %v (%.0f MB/s); gateway VmRSS baseline %.1f MB, highest sampled %.1f MB, VmHWM %.1f MB",
		transfers, pixels>>20, elapsed.Round(time.Millisecond), total/elapsed.Seconds(),
		float64(base.RSS)/(1<<20), float64(peakSeen.Load())/(1<<20), float64(hwm)/(1<<20))
	if hwm > 150<<20 {
		t.Errorf("peak RSS (VmHWM) %.1f MB, want under 150 MB", float64(hwm)/(1<<20))
	}
	// The objects are whole: each committed and filed, at its full size.
	waitDrained(t, g, 60*time.Second)
	var sizes []int64
	filepath.WalkDir(archive, func(p string, d os.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".dcm") {
			if fi, err := d.Info(); err == nil {
				sizes = append(sizes, fi.Size())
			}
		}
		return nil
	})
	if len(sizes) != transfers {
		t.Errorf("%d objects in the archive, want %d", len(sizes), transfers)
	}
	for _, s := range sizes {
		if s < pixels {
			t.Errorf("archived object of %d bytes, want over %d", s, pixels)
		}
	}
	noPartials(t, g.SpoolDir)
	after := waitBackToBaseline(t, g, base, 5, 64<<20, 10*time.Second)
	t.Logf("after: %v (baseline %v)", after, base)
}

// openIdleFrom is openIdle from a given local address.
func openIdleFrom(t *testing.T, local, addr string, n int) []net.Conn {
	t.Helper()
	d := net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}}
	conns := make([]net.Conn, 0, n)
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for i := 0; i < n; i++ {
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatalf("idle connection %d from %s: %v", i+1, local, err)
		}
		conns = append(conns, c)
	}
	return conns
}

// echoFrom sends a C-ECHO from a given local address.
func echoFrom(t *testing.T, local, addr, callingAE string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := dimse.Dial(ctx, addr, dimse.DialConfig{CallingAE: callingAE, CalledAE: calledAE, Contexts: []dimse.ProposedContext{verificationContext},
		Timeout: 20 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(local)}})
	if err != nil {
		t.Fatalf("C-ECHO association from %s: %v", local, err)
	}
	defer c.Close()
	if st, err := c.Echo(); err != nil || st != dimse.StatusSuccess {
		t.Fatalf("C-ECHO from %s: %v %v", local, st, err)
	}
	c.Release()
}

// TestOneHostCannotLockOutOthers: one address holding idle connections up
// to its --max-connections-per-host has its next ones closed at once
// (counted as per_host), and a C-ECHO from another address gets through:
// with small limits, and with the defaults against 3,000 connections.
func TestOneHostCannotLockOutOthers(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name          string
		args          []string
		idle, perHost int
	}{
		{"small limits", []string{"--max-connections", "40", "--max-connections-per-host", "10"}, 60, 10},
		// A --max-connections below the default per-host limit scales it
		// down to half: one host still cannot take them all.
		{"small total, default per host", []string{"--max-connections", "40"}, 60, 20},
		{"defaults, 3000 connections", nil, 3000, (4*dimse.DefaultMaxAssociations + 64) / 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			g := startGateway(t, t.TempDir(), append([]string{"--archive-dir", t.TempDir(), "--artim-timeout", "20s"}, c.args...)...)
			conns := openIdleFrom(t, "127.0.0.1", g.Addr, c.idle)
			refusedConns, _, _ := closedBy(conns, 2*time.Second)
			if n := len(refusedConns); n != c.idle-c.perHost {
				t.Errorf("%d of %d connections from one address closed at once, want %d", n, c.idle, c.idle-c.perHost)
			}
			echoFrom(t, "127.0.0.2", g.Addr, "OTHERHOST")
			m, err := g.Scrape()
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Get("dicomgw_connections_refused_total", `reason="per_host"`); got != float64(c.idle-c.perHost) {
				t.Errorf("refused{per_host} = %v, want %d", got, c.idle-c.perHost)
			}
			if n := len(g.LogLines("too many connections from one host: closing its new ones at once (logged once a minute)")); n != 1 {
				t.Errorf("%d log lines for one host's flood, want 1 (once a minute)", n)
			}
		})
	}
}

// TestBareConnectLoggedAtDebug: a TCP connect-and-close or -reset (a load
// balancer's or Kubernetes' TCP check), on the plaintext port or the TLS
// port, is no warning and no failed TLS handshake: at --log-level info
// nothing is logged for it, at debug one line each. A client that sent a
// ClientHello and then closed did fail a handshake: counted and warned
// about, though crypto/tls reports its close at a record boundary as the
// same io.EOF as a bare close.
func TestBareConnectLoggedAtDebug(t *testing.T) {
	t.Parallel()
	pki, err := harness.NewPKI(filepath.Join(t.TempDir(), "ca"), "probe-ca")
	if err != nil {
		t.Fatal(err)
	}
	server, err := pki.Server("server")
	if err != nil {
		t.Fatal(err)
	}
	hello := tlsClientHello(t)
	for _, level := range []string{"info", "debug"} {
		t.Run(level, func(t *testing.T) {
			g := startGateway(t, t.TempDir(), "--archive-dir", t.TempDir(), "--log-level", level,
				"--tls-listen", "127.0.0.1:0", "--tls-cert", server.CertFile, "--tls-key", server.KeyFile)
			const bare = 4
			for _, addr := range []string{g.Addr, g.TLSAddr} {
				for _, reset := range []bool{false, true} {
					c, err := net.Dial("tcp", addr)
					if err != nil {
						t.Fatal(err)
					}
					if reset {
						c.(*net.TCPConn).SetLinger(0) // RST, as HAProxy's checks do
					}
					c.Close()
				}
			}
			lost := func() float64 {
				m, err := g.Scrape()
				if err != nil {
					t.Fatal(err)
				}
				return m.Get("dicomgw_associations_total", `outcome="connection-lost"`)
			}
			waitFor(t, 10*time.Second, "the bare connects ended", func() bool { return lost() >= bare })
			if n := tlsFailures(t, g); n != 0 {
				t.Errorf("dicomgw_tls_handshake_failures_total = %v after bare connects, want 0: they attempted no handshake", n)
			}

			// A ClientHello, then a clean close (FIN after the record).
			c, err := net.Dial("tcp", g.TLSAddr)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(hello); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if _, err := io.Copy(io.Discard, c); err != nil {
				t.Fatalf("the gateway's answer to a ClientHello: %v", err)
			}
			waitFor(t, 10*time.Second, "the ClientHello's connection ended", func() bool { return lost() >= bare+1 })
			if n := tlsFailures(t, g); n != 1 {
				t.Errorf("dicomgw_tls_handshake_failures_total = %v after a ClientHello and a close, want 1", n)
			}
			echoWorks(t, g, "AFTERPROBE")

			var warns []string
			debug := 0
			for _, l := range strings.Split(g.Logs(), "\n") {
				var rec map[string]any
				if json.Unmarshal([]byte(l), &rec) != nil {
					continue
				}
				switch {
				case rec["level"] == "WARN":
					warns = append(warns, l)
				case rec["level"] == "DEBUG" && rec["msg"] == "association ended" && strings.HasPrefix(fmt.Sprint(rec["detail"]), "closed before"):
					debug++
				}
			}
			if len(warns) != 1 || !strings.Contains(warns[0], `"msg":"TLS handshake failed"`) || !strings.Contains(warns[0], `"peer":"`+c.LocalAddr().String()+`"`) {
				t.Errorf("WARN lines: %q, want one, for the handshake of the ClientHello from %s", warns, c.LocalAddr())
			}
			if want := map[string]int{"info": 0, "debug": bare}[level]; debug != want {
				t.Errorf("%d DEBUG lines for %d bare connects at --log-level %s, want %d", debug, bare, level, want)
			}
		})
	}
}

func tlsFailures(t *testing.T, g *harness.Gateway) float64 {
	t.Helper()
	m, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	return m.Get("dicomgw_tls_handshake_failures_total")
}

// tlsClientHello is the first flight of a TLS client: a record holding
// its ClientHello.
func tlsClientHello(t *testing.T) []byte {
	t.Helper()
	c, s := net.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		tls.Client(c, &tls.Config{ServerName: "localhost", MinVersion: tls.VersionTLS12}).Handshake()
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
