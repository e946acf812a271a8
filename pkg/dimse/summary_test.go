package dimse

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/uid"
)

// Config.Ended hears of each association that ended, with what it did;
// Active lists those in progress. A connection that closes without a word
// is not an association worth listing.
func TestEndedAndActive(t *testing.T) {
	var mu sync.Mutex
	var ended []Summary
	got := make(chan struct{}, 10)
	srv, addr := startServer(t, Config{Ended: func(s Summary) {
		mu.Lock()
		ended = append(ended, s)
		mu.Unlock()
		got <- struct{}{}
	}}, newMemStore())

	c := dial(t, addr)
	if st, err := c.Echo(); err != nil || st != StatusSuccess {
		t.Fatalf("C-ECHO: %v %v", st, err)
	}
	inst := "1.2.826.0.1.3680043.2.1143.77"
	ds := ctDataSet(ctCT.AbstractSyntax, inst, 2000)
	if rsp, err := c.Store(ctCT.AbstractSyntax, inst, uid.ExplicitVRLittleEndian, bytes.NewReader(ds)); err != nil || rsp.Status != StatusSuccess {
		t.Fatalf("C-STORE: %v %v", rsp, err)
	}
	act := srv.Active()
	if len(act) != 1 || act[0].CallingAE != "TESTSCU" || act[0].CalledAE != "DICOMGW" || act[0].Echoes != 1 || act[0].Stores != 1 || act[0].Outcome != 0 {
		t.Fatalf("in progress: %+v", act)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no Ended after a release")
	}
	mu.Lock()
	s := ended[0]
	mu.Unlock()
	if s.Outcome != EndReleased || s.CallingAE != "TESTSCU" || s.Echoes != 1 || s.Stores != 1 || s.Bytes < int64(len(ds)) ||
		!s.Peer.IsLoopback() || s.Duration <= 0 || s.Start.IsZero() {
		t.Errorf("ended: %+v", s)
	}
	if a := srv.Active(); len(a) != 0 {
		t.Errorf("still in progress after its release: %+v", a)
	}

	// A wrong called AE title: rejected, and told.
	if _, err := Dial(context.Background(), addr, DialConfig{CallingAE: "TESTSCU", CalledAE: "NOTUS", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second}); err == nil {
		t.Fatal("association to a wrong AE title accepted")
	}
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no Ended after a rejection")
	}
	mu.Lock()
	if s := ended[1]; s.Outcome != EndRejected || s.CalledAE != "NOTUS" {
		t.Errorf("rejected: %+v", s)
	}
	mu.Unlock()

	// A TCP check: connect, close, nothing said. Its association is
	// untracked after its teardown (where Ended would be called): once the
	// server holds no connection, it is over.
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	waitTracked := func(want int) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			srv.mu.Lock()
			n := len(srv.assocs)
			srv.mu.Unlock()
			if n == want {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%d connections tracked, want %d", n, want)
			}
			time.Sleep(time.Millisecond)
		}
	}
	waitTracked(1)
	conn.Close()
	waitTracked(0)
	mu.Lock()
	if len(ended) != 2 {
		t.Errorf("a silent connection was told: %+v", ended[2:])
	}
	mu.Unlock()
}
