package dimse

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// panicWatch fails the fuzz run when an association panics (serve
// recovers, logs and goes on: the gateway survives, but it is a bug).
type panicWatch struct{ hit atomic.Bool }

func (p *panicWatch) Enabled(context.Context, slog.Level) bool { return true }
func (p *panicWatch) Handle(_ context.Context, r slog.Record) error {
	if r.Message == "association panicked" {
		p.hit.Store(true)
	}
	return nil
}
func (p *panicWatch) WithAttrs([]slog.Attr) slog.Handler { return p }
func (p *panicWatch) WithGroup(string) slog.Handler      { return p }

func sessionSeed() []byte {
	var b []byte
	add := func(p pdu.PDU) { b = append(b, mustEncode(p)...) }
	add(rqFor(pcEcho, pcCT))
	add(pdata(cmdPDV(1, echoRQ(1))))
	ds := ctDataSet(ctClass, "1.2.3", 300)
	add(pdata(cmdPDV(3, storeRQ(2, ctClass, "1.2.3")), pdu.PDV{ContextID: 3, Data: ds[:100]}))
	add(pdata(pdu.PDV{ContextID: 3, Last: true, Data: ds[100:]}))
	add(&pdu.ReleaseRQ{})
	return b
}

// FuzzAssociation feeds arbitrary byte streams (seeded with a whole
// session: associate, echo, store, release) to one association of a real
// Server over a pipe. Whatever arrives, the association must end, never
// panic, and every object begun must be committed or aborted, never both
// or neither.
func FuzzAssociation(f *testing.F) {
	f.Add(sessionSeed())
	s := sessionSeed()
	f.Add(s[:len(s)-10])
	f.Add(append(mustEncode(rqFor(pcEcho)), mustEncode(pdata(cmdPDV(1, storeRQ(1, uid.Verification, "1.2"))))...))
	// A storage commitment request, then an N-EVENT-REPORT-RSP no report
	// of ours waits for.
	var sc []byte
	sc = append(sc, mustEncode(rqFor(pcEcho, pcCommit))...)
	sc = append(sc, mustEncode(pdata(cmdPDV(pcCommit.ID, actionRQ(1)), pdu.PDV{ContextID: pcCommit.ID, Last: true, Data: []byte{8, 0, 0x95, 0x11, 2, 0, 0, 0, '1', 0}}))...)
	sc = append(sc, mustEncode(pdata(cmdPDV(pcCommit.ID, &Command{CommandField: NEventRSP, MessageIDBeingRespondedTo: 7, CommandDataSetType: NoDataSet,
		Has: HasMessageIDBeingRespondedTo})))...)
	f.Add(append(sc, mustEncode(&pdu.ReleaseRQ{})...))
	f.Fuzz(func(t *testing.T, data []byte) { fuzzOneAssociation(t, data) })
}

func fuzzOneAssociation(t *testing.T, data []byte) {
	{
		store := newMemStore()
		watch := &panicWatch{}
		srv, err := NewServer(Config{
			AETitles: []string{"DICOMGW"}, MaxPDULength: 16384,
			ARTIMTimeout: 20 * time.Millisecond, IdleTimeout: 100 * time.Millisecond,
			PDUTimeout: 100 * time.Millisecond, WriteTimeout: 100 * time.Millisecond,
			Commitment: acceptCommitments{}, MaxCommitmentRequest: 4096,
		}, store, slog.New(watch), nil)
		if err != nil {
			t.Fatal(err)
		}
		// Real loopback sockets, not net.Pipe: the pipe's deadline timers
		// fire on their own goroutines after the run, and the fuzzer, seeing
		// coverage move between runs, would chase it instead of fuzzing.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		served := make(chan error, 1)
		go func() { served <- srv.Serve(ln) }()
		client, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		drained := make(chan struct{})
		go func() {
			io.Copy(io.Discard, client)
			close(drained)
		}()
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(data)
		client.Close()
		// Every goroutine of this run ends before the next run starts:
		// leftovers would touch the coverage counters of the next one and
		// make the fuzzer chase coverage that is not there.
		defer func() { <-drained }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-served; err != ErrServerClosed {
			t.Fatalf("Serve: %v", err)
		}
		if watch.hit.Load() {
			t.Fatal("an association panicked")
		}
		store.mu.Lock()
		defer store.mu.Unlock()
		begun := 0
		if store.beginErr == nil {
			begun = len(store.reqs)
		}
		if store.committed+store.aborted != begun {
			t.Fatalf("%d objects begun, %d committed, %d aborted", begun, store.committed, store.aborted)
		}
		_ = bytes.MinRead
	}
}

// acceptCommitments accepts every storage commitment request and reports
// nothing.
type acceptCommitments struct{}

func (acceptCommitments) RequestCommitment(*CommitmentRequest) error { return nil }
