package dimse

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomgw/dicomgw/pkg/pdu"
)

var errSpoolFull = errors.New("spool full")

// TestAdmission: while Admit refuses (the spool is full), associations get
// A-ASSOCIATE-RJ 2/3/1 (transient, temporary congestion); once it admits
// again, they are accepted.
func TestAdmission(t *testing.T) {
	var full atomic.Bool
	full.Store(true)
	_, addr := startServer(t, Config{Admit: func() error {
		if full.Load() {
			return errSpoolFull
		}
		return nil
	}}, newMemStore())
	_, err := Dial(context.Background(), addr, DialConfig{CallingAE: "X", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
	var rj *RejectedError
	want := pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourceProviderPresent, Reason: pdu.RejectTemporaryCongestion}
	if !errors.As(err, &rj) || rj.AssociateRJ != want {
		t.Fatalf("while full: %v", err)
	}
	full.Store(false)
	dial(t, addr).Release()
}

// TestPerHostLimit: one peer address cannot take more than its share.
func TestPerHostLimit(t *testing.T) {
	_, addr := startServer(t, Config{MaxAssociations: 10, MaxAssociationsPerHost: 2}, newMemStore())
	a, b := dial(t, addr), dial(t, addr)
	_, err := Dial(context.Background(), addr, DialConfig{CallingAE: "X", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
	var rj *RejectedError
	if !errors.As(err, &rj) || rj.Reason != pdu.RejectLocalLimitExceeded || rj.Result != pdu.RejectTransient {
		t.Fatalf("third from one host: %v", err)
	}
	a.Release()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := Dial(context.Background(), addr, DialConfig{CallingAE: "X", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
		if err == nil {
			c.Release()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("host slot not given back: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Release()
}

// TestMaxConnections: beyond the connection cap a new connection is closed
// at once, and counted; the ones already open are unaffected. (From three
// addresses: one host may not hold them all.)
func TestMaxConnections(t *testing.T) {
	srv, addr := startServer(t, Config{MaxConnections: 3, ARTIMTimeout: 5 * time.Second}, newMemStore())
	var idle []net.Conn
	for i := range 3 {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(i+1))}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		idle = append(idle, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.ActiveAssociations() < 3 {
		if time.Now().After(deadline) {
			t.Fatal("connections not tracked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	r := dialRaw(t, addr)
	r.expectClosed(2 * time.Second)
	if srv.ActiveAssociations() != 3 {
		t.Fatalf("%d connections", srv.ActiveAssociations())
	}
	if n := testutil.ToFloat64(srv.m.refused.WithLabelValues("total")); n != 1 {
		t.Errorf("refused{total} = %v, want 1", n)
	}
	for _, c := range idle {
		c.Close()
	}
}

// TestPDUTrickle: a peer that starts a PDU and then trickles it is aborted
// after the PDU timeout, long before the idle timeout.
func TestPDUTrickle(t *testing.T) {
	_, addr := startServer(t, Config{IdleTimeout: time.Minute, PDUTimeout: 300 * time.Millisecond, ARTIMTimeout: time.Second}, newMemStore())
	r := dialRaw(t, addr)
	r.associate(rqFor(pcEcho))
	start := time.Now()
	r.sendBytes([]byte{0x04, 0x00, 0x00, 0x00}) // the start of a P-DATA-TF header, and no more
	r.expectAbort(pdu.AbortSourceUser, 0)
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("aborted after %v", d)
	}
}
