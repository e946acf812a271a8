package dimse

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// blockingStore is a StoreHandler whose Commit waits until released, and
// says when it is waiting: a peer that takes its time to answer.
type blockingStore struct {
	*memStore
	entered chan struct{}
	release chan struct{}
}

func (b *blockingStore) BeginStore(req *StoreRequest) (StoreWriter, error) {
	w, err := b.memStore.BeginStore(req)
	if err != nil {
		return nil, err
	}
	return &blockingWriter{StoreWriter: w, b: b}, nil
}

type blockingWriter struct {
	StoreWriter
	b *blockingStore
}

func (w *blockingWriter) Commit() (Committed, error) {
	close(w.b.entered)
	<-w.b.release
	return w.StoreWriter.Commit()
}

// TestRequestorInterruptWhileWaiting: Interrupt, from another goroutine,
// ends a Store that waits for a slow peer's response at once, with an
// error wrapping ErrInterrupted, although the exchange timeout is a minute
// away; the association is then aborted.
func TestRequestorInterruptWhileWaiting(t *testing.T) {
	h := &blockingStore{memStore: newMemStore(), entered: make(chan struct{}), release: make(chan struct{})}
	_, addr := startServer(t, Config{}, h)
	c, err := Dial(context.Background(), addr, DialConfig{CallingAE: "TESTSCU", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctCT}, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer close(h.release)
	go func() {
		<-h.entered
		c.Interrupt()
	}()
	_, err = c.Store(ctCT.AbstractSyntax, "1.2.3.4", uid.ExplicitVRLittleEndian, bytes.NewReader(ctDataSet(ctCT.AbstractSyntax, "1.2.3.4", 1000)))
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Store after Interrupt: %v, want an error wrapping ErrInterrupted", err)
	}
	c.Abort()
	if _, err := c.Echo(); err == nil {
		t.Error("Echo on an aborted association succeeded")
	}
}

// TestRequestorInterruptWhileSending: a peer that stops reading leaves
// Store blocked in a write; Interrupt ends it too. The write was cut, so
// Abort only closes the connection (an A-ABORT after half a PDU would be
// read as part of it).
func TestRequestorInterruptWhileSending(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stalled, finished := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		r := pdu.NewReader(conn, pdu.Limits{}, nil)
		p, err := r.ReadPDU()
		if err != nil {
			t.Error(err)
			return
		}
		rq := p.(*pdu.AssociateRQ)
		ac := acceptAll(rq, 16384)
		b, _ := pdu.Encode(ac)
		conn.Write(b)
		// Read a megabyte of the data set, then stop reading.
		if _, err := io.CopyN(io.Discard, conn, 1<<20); err != nil {
			t.Error(err)
		}
		close(stalled)
		<-finished
	}()
	c, err := Dial(context.Background(), ln.Addr().String(), DialConfig{CallingAE: "TESTSCU", CalledAE: "ANY", Contexts: []ProposedContext{ctCT}, Timeout: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		<-stalled
		c.Interrupt()
	}()
	_, err = c.Store(ctCT.AbstractSyntax, "1.2.3.4", uid.ExplicitVRLittleEndian, io.LimitReader(zeros{}, 1<<30))
	if !errors.Is(err, ErrInterrupted) {
		t.Fatalf("Store after Interrupt: %v, want an error wrapping ErrInterrupted", err)
	}
	c.Abort()
	close(finished)
	wg.Wait()
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// acceptAll answers rq accepting each context in its first transfer
// syntax, advertising maxLen.
func acceptAll(rq *pdu.AssociateRQ, maxLen uint32) *pdu.AssociateAC {
	ac := &pdu.AssociateAC{
		ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE, ApplicationContext: uid.ApplicationContext,
		UserInfo: pdu.UserInformation{HasMaxLength: true, MaxLength: maxLen, ImplementationClassUID: "1.2.3"},
	}
	for _, pc := range rq.PresentationContexts {
		ac.PresentationContexts = append(ac.PresentationContexts, pdu.PresentationContextAC{ID: pc.ID, Result: pdu.ContextAcceptance, TransferSyntax: pc.TransferSyntaxes[0]})
	}
	return ac
}

// TestDialInterruptedByContext: an acceptor that takes the connection and
// the A-ASSOCIATE-RQ and never answers holds Dial only until its context
// ends, not for the exchange timeout.
func TestDialInterruptedByContext(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() {
		defer close(done)
		conn, err := ln.Accept()
		if err != nil {
			return
		}
		defer conn.Close()
		if _, err := pdu.NewReader(conn, pdu.Limits{}, nil).ReadPDU(); err != nil {
			t.Error(err)
		}
		cancel() // the A-ASSOCIATE-RQ is in; it is never answered
		conn.SetReadDeadline(time.Now().Add(time.Minute))
		io.Copy(io.Discard, conn)
	}()
	_, err = Dial(ctx, ln.Addr().String(), DialConfig{CallingAE: "TESTSCU", CalledAE: "ANY", Contexts: []ProposedContext{ctCT}, Timeout: time.Hour})
	if !errors.Is(err, ErrInterrupted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("Dial: %v, want an error wrapping ErrInterrupted and context.Canceled", err)
	}
	<-done
}

// TestDialRefusesTinyMaxLength: an acceptor whose maximum length cannot
// carry a byte of a PDV (PS3.8 D.1) is refused at Dial; sending with it
// would fragment commands into nothing.
func TestDialRefusesTinyMaxLength(t *testing.T) {
	for _, maxLen := range []uint32{1, 6} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan pdu.PDU, 1)
		go func() {
			defer close(done)
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			r := pdu.NewReader(conn, pdu.Limits{}, nil)
			p, err := r.ReadPDU()
			if err != nil {
				return
			}
			b, _ := pdu.Encode(acceptAll(p.(*pdu.AssociateRQ), maxLen))
			conn.Write(b)
			conn.SetReadDeadline(time.Now().Add(time.Minute))
			if p, err := r.ReadPDU(); err == nil {
				done <- p
			}
		}()
		c, err := Dial(context.Background(), ln.Addr().String(), DialConfig{CallingAE: "TESTSCU", CalledAE: "ANY", Contexts: []ProposedContext{ctVerification}, Timeout: 10 * time.Second})
		if err == nil {
			c.Close()
			t.Fatalf("max length %d: Dial succeeded", maxLen)
		}
		if p := <-done; p == nil || p.Type() != pdu.TypeAbort {
			t.Errorf("max length %d: the acceptor got %v after its AC, want A-ABORT", maxLen, p)
		}
		ln.Close()
	}
}

// failingReader hands over n bytes, then fails.
type failingReader struct {
	n   int
	err error
}

func (r *failingReader) Read(p []byte) (int, error) {
	if r.n == 0 {
		return 0, r.err
	}
	k := min(len(p), r.n)
	clear(p[:k])
	r.n -= k
	return k, nil
}

// TestRequestorStoreReaderFails: when the data set's reader fails, Store
// returns its error and aborts the association before the last fragment:
// the acceptor discards the partial object (its writer is aborted, never
// committed), whether the failure comes in the first chunk or after
// several PDUs have gone out.
func TestRequestorStoreReaderFails(t *testing.T) {
	for _, n := range []int{100, 3 << 20} {
		h := newMemStore()
		_, addr := startServer(t, Config{}, h)
		c := dial(t, addr, ctCT)
		boom := errors.New("disk on fire")
		_, err := c.Store(ctCT.AbstractSyntax, "1.2.3.4", uid.ExplicitVRLittleEndian, &failingReader{n: n, err: boom})
		if !errors.Is(err, boom) {
			t.Fatalf("after %d bytes: Store: %v, want the reader's error", n, err)
		}
		deadline := time.Now().Add(10 * time.Second)
		for {
			h.mu.Lock()
			aborted, committed, begun := h.aborted, h.committed, len(h.reqs)
			h.mu.Unlock()
			if committed != 0 {
				t.Fatalf("after %d bytes: the acceptor committed the object", n)
			}
			if aborted == begun && begun == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %d bytes: %d stores begun, %d aborted", n, begun, aborted)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// TestRequestorMessageID: MessageID is the ID of the last request, which
// the acceptor's response echoes.
func TestRequestorMessageID(t *testing.T) {
	_, addr := startServer(t, Config{}, newMemStore())
	c := dial(t, addr, ctCT)
	for i := range 3 {
		inst := "1.2.3." + string(rune('1'+i))
		rsp, err := c.Store(ctCT.AbstractSyntax, inst, uid.ExplicitVRLittleEndian, bytes.NewReader(ctDataSet(ctCT.AbstractSyntax, inst, 200)))
		if err != nil {
			t.Fatal(err)
		}
		if rsp.MessageIDBeingRespondedTo != c.MessageID() || c.MessageID() != uint16(i+1) {
			t.Errorf("store %d: response to %d, MessageID() %d", i+1, rsp.MessageIDBeingRespondedTo, c.MessageID())
		}
	}
}

// TestRequestorFragmentLengths: the data set goes out in PDUs no longer
// than the peer's maximum length and never longer than maxDataChunk
// whatever it advertises (a 4 GiB maximum must not size our buffers), and
// every fragment but the last has an even length, even when the peer's
// maximum is odd (dcmtk's storescp aborts the association on an odd
// fragment). The data set arrives whole.
func TestRequestorFragmentLengths(t *testing.T) {
	data := make([]byte, 3<<20+1)
	for i := range data {
		data[i] = byte(i * 7)
	}
	for _, maxLen := range []uint32{4097, 16384, 0xFFFFFFFF, 0} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		type frag struct {
			pduLen, n int
			command   bool
		}
		got := make(chan []frag, 1)
		var recv bytes.Buffer
		go func() {
			var frags []frag
			defer func() { got <- frags }()
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(time.Minute))
			r := pdu.NewReader(conn, pdu.Limits{MaxPDataLength: 8 << 20}, nil)
			p, err := r.ReadPDU()
			if err != nil {
				return
			}
			b, _ := pdu.Encode(acceptAll(p.(*pdu.AssociateRQ), maxLen))
			conn.Write(b)
			var cmd []byte
			for {
				p, err := r.ReadPDU()
				if err != nil {
					return
				}
				pd, ok := p.(*pdu.PDataTF)
				if !ok {
					return
				}
				size := pdu.HeaderLen
				for _, v := range pd.PDVs {
					size += pdu.PDVHeaderLen + len(v.Data)
				}
				for _, v := range pd.PDVs {
					frags = append(frags, frag{pduLen: size - pdu.HeaderLen, n: len(v.Data), command: v.Command})
					if v.Command {
						cmd = append(cmd, v.Data...)
						continue
					}
					recv.Write(v.Data)
					if v.Last {
						rq, _ := DecodeCommand(cmd)
						rsp := &Command{CommandField: CStoreRSP, MessageIDBeingRespondedTo: rq.MessageID, CommandDataSetType: NoDataSet,
							Has: HasMessageIDBeingRespondedTo | HasStatus}
						b, _ := pdu.Encode(&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: v.ContextID, Command: true, Last: true, Data: AppendCommand(nil, rsp)}}})
						conn.Write(b)
						return
					}
				}
			}
		}()
		c, err := Dial(context.Background(), ln.Addr().String(), DialConfig{CallingAE: "TESTSCU", CalledAE: "ANY", Contexts: []ProposedContext{ctCT}, Timeout: 30 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		rsp, err := c.Store(ctCT.AbstractSyntax, "1.2.3.4", uid.ExplicitVRLittleEndian, bytes.NewReader(data))
		if err != nil || rsp.Status != StatusSuccess {
			t.Fatalf("max length %d: Store: %v %v", maxLen, rsp, err)
		}
		c.Close()
		frags := <-got
		ln.Close()
		if !bytes.Equal(recv.Bytes(), data) {
			t.Errorf("max length %d: the data set arrived altered (%d bytes of %d)", maxLen, recv.Len(), len(data))
		}
		var dataFrags []frag
		for _, f := range frags {
			if maxLen != 0 && uint32(f.pduLen) > maxLen {
				t.Errorf("max length %d: a PDU of %d bytes", maxLen, f.pduLen)
			}
			if !f.command {
				dataFrags = append(dataFrags, f)
			}
		}
		for i, f := range dataFrags {
			if f.n > maxDataChunk {
				t.Errorf("max length %d: a fragment of %d bytes, more than %d", maxLen, f.n, maxDataChunk)
			}
			if f.n%2 == 1 && i != len(dataFrags)-1 {
				t.Errorf("max length %d: fragment %d of %d has odd length %d", maxLen, i+1, len(dataFrags), f.n)
			}
		}
	}
}
