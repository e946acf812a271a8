package dimse

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/uid"
)

// endedRecorder is a Config.Ended that keeps what it is told. Ended runs on
// the association's goroutine before the server stops tracking it, so once
// Shutdown has returned every association's Ended has run: the tests read
// the summaries after it, without waiting on time.
type endedRecorder struct {
	ch  chan Summary
	srv atomic.Pointer[Server]
	// activeAtEnd counts the associations Server.Active still listed while
	// one was being told as ended (it should not list that one).
	activeAtEnd atomic.Int64
}

func newEndedRecorder() *endedRecorder { return &endedRecorder{ch: make(chan Summary, 16)} }

func (r *endedRecorder) ended(s Summary) {
	if srv := r.srv.Load(); srv != nil {
		r.activeAtEnd.Add(int64(len(srv.Active())))
	}
	select {
	case r.ch <- s:
	default:
		panic("Ended called more than 16 times")
	}
}

// startEnded starts a server whose Ended hook is r's.
func startEnded(t *testing.T, r *endedRecorder, cfg Config) (*Server, string) {
	t.Helper()
	cfg.Ended = r.ended
	srv, addr := startServer(t, cfg, newMemStore())
	r.srv.Store(srv)
	return srv, addr
}

// shutdown stops srv, letting every association end by itself, and
// returns what Ended was told, in order.
func (r *endedRecorder) shutdown(t *testing.T, srv *Server) []Summary {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown had to abort associations: %v", err)
	}
	var out []Summary
	for {
		select {
		case s := <-r.ch:
			out = append(out, s)
		default:
			return out
		}
	}
}

func TestEndedReleased(t *testing.T) {
	rec := newEndedRecorder()
	srv, addr := startEnded(t, rec, Config{})
	before := time.Now()
	c := dial(t, addr)
	if st, err := c.Echo(); err != nil || st != StatusSuccess {
		t.Fatalf("C-ECHO: %v %v", st, err)
	}
	inst := "1.2.826.0.1.3680043.2.1143.4242"
	ds := ctDataSet(ctCT.AbstractSyntax, inst, 4000)
	if rsp, err := c.Store(ctCT.AbstractSyntax, inst, uid.ExplicitVRLittleEndian, bytes.NewReader(ds)); err != nil || rsp.Status != StatusSuccess {
		t.Fatalf("C-STORE: %v %v", rsp, err)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	got := rec.shutdown(t, srv)
	if len(got) != 1 {
		t.Fatalf("Ended told %d times, want once: %+v", len(got), got)
	}
	s := got[0]
	if s.Outcome != EndReleased || s.CallingAE != "TESTSCU" || s.CalledAE != "DICOMGW" {
		t.Errorf("outcome %v, %q to %q; want released, TESTSCU to DICOMGW", s.Outcome, s.CallingAE, s.CalledAE)
	}
	if s.Echoes != 1 || s.Stores != 1 || s.StoreFailures != 0 || s.Finds != 0 || s.Moves != 0 || s.CommitmentRequests != 0 {
		t.Errorf("counts: %+v", s)
	}
	if s.Bytes < int64(len(ds)) {
		t.Errorf("bytes %d, the data set alone is %d", s.Bytes, len(ds))
	}
	if !s.Peer.IsValid() || !s.Peer.IsLoopback() || s.TLS {
		t.Errorf("peer %v (TLS %v), want loopback without TLS", s.Peer, s.TLS)
	}
	if s.Duration <= 0 || s.Start.Before(before.Add(-time.Second)) || s.Start.After(time.Now()) || s.Detail != "" {
		t.Errorf("start %v, duration %v, detail %q", s.Start, s.Duration, s.Detail)
	}
	if n := rec.activeAtEnd.Load(); n != 0 {
		t.Errorf("Active listed %d association(s) while the only one was told as ended", n)
	}
}

// A connection that says nothing (a load balancer's TCP check, a port
// scanner) is no association: Ended is not told of it, whether the peer
// closes it or the ARTIM timer does.
func TestEndedNotToldOfSilentConnections(t *testing.T) {
	rec := newEndedRecorder()
	srv, addr := startEnded(t, rec, Config{ARTIMTimeout: 200 * time.Millisecond})
	closed, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	// A real association after them: the server accepts in order, so by
	// the time this one is served, both silent ones are its too.
	c := dial(t, addr, ctVerification)
	if st, err := c.Echo(); err != nil || st != StatusSuccess {
		t.Fatalf("C-ECHO: %v %v", st, err)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	closed.Close()
	// The idle one: the gateway closes it when its ARTIM timer expires.
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := idle.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) && !isReset(err) {
		t.Fatalf("the idle connection: read %d, %v; want it closed by the gateway", n, err)
	}
	got := rec.shutdown(t, srv)
	if len(got) != 1 || got[0].CallingAE != "TESTSCU" || got[0].Outcome != EndReleased || got[0].Echoes != 1 {
		t.Fatalf("Ended told %+v, want the one association only", got)
	}
}

// A rejected association is told, with the AE titles it asked for.
func TestEndedRejected(t *testing.T) {
	rec := newEndedRecorder()
	srv, addr := startEnded(t, rec, Config{})
	_, err := Dial(context.Background(), addr, DialConfig{CallingAE: "MODALITY", CalledAE: "NOTUS", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
	if err == nil {
		t.Fatal("an association to a wrong called AE title was accepted")
	}
	got := rec.shutdown(t, srv)
	if len(got) != 1 {
		t.Fatalf("Ended told %d times, want once: %+v", len(got), got)
	}
	s := got[0]
	if s.Outcome != EndRejected || s.CallingAE != "MODALITY" || s.CalledAE != "NOTUS" || !s.Peer.IsLoopback() || s.Echoes != 0 || s.Stores != 0 {
		t.Errorf("rejected: %+v", s)
	}
	if s.Detail == "" {
		t.Error("a rejection does not say why")
	}
}

// An association the peer aborts, or that shutdown ends, is told with that
// outcome and what it did before.
func TestEndedAbortedAndShutdown(t *testing.T) {
	t.Run("peer abort", func(t *testing.T) {
		rec := newEndedRecorder()
		srv, addr := startEnded(t, rec, Config{})
		c := dial(t, addr)
		if _, err := c.Echo(); err != nil {
			t.Fatal(err)
		}
		if err := c.Abort(); err != nil {
			t.Fatal(err)
		}
		got := rec.shutdown(t, srv)
		if len(got) != 1 || got[0].Outcome != EndPeerAborted || got[0].Echoes != 1 || got[0].CallingAE != "TESTSCU" {
			t.Fatalf("Ended told %+v, want one peer-aborted association", got)
		}
	})
	t.Run("shutdown", func(t *testing.T) {
		rec := newEndedRecorder()
		srv, addr := startEnded(t, rec, Config{})
		c := dial(t, addr)
		if _, err := c.Echo(); err != nil {
			t.Fatal(err)
		}
		// A shutdown that does not wait: the association is aborted.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		if err := srv.Shutdown(ctx); !errors.Is(err, context.Canceled) {
			t.Fatalf("Shutdown: %v, want it to abort the association", err)
		}
		var got []Summary
		for len(rec.ch) > 0 {
			got = append(got, <-rec.ch)
		}
		if len(got) != 1 || got[0].Outcome != EndShutdown || got[0].Echoes != 1 {
			t.Fatalf("Ended told %+v, want one association ended by the shutdown", got)
		}
	})
}
