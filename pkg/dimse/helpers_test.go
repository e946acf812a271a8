package dimse

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// memStore is a StoreHandler that keeps objects in memory, with faults to
// inject: it stands in for the spool, whose own tests cover the disk.
type memStore struct {
	mu        sync.Mutex
	objects   map[string][]byte
	reqs      []*StoreRequest
	aborted   int
	committed int
	beginErr  error
	failAfter int // fail Write once this many bytes arrived; 0 = never
	commitErr error
	// nonconforming is what Commit reports of the data set's UIDs.
	nonconforming []uid.Finding
}

func newMemStore() *memStore { return &memStore{objects: map[string][]byte{}} }

func (m *memStore) BeginStore(req *StoreRequest) (StoreWriter, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reqs = append(m.reqs, req)
	if m.beginErr != nil {
		return nil, m.beginErr
	}
	return &memWriter{m: m, req: req}, nil
}

func (m *memStore) count() (stored, aborted int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.objects), m.aborted
}

type memWriter struct {
	m   *memStore
	req *StoreRequest
	buf bytes.Buffer
}

func (w *memWriter) Write(p []byte) (int, error) {
	w.m.mu.Lock()
	fail := w.m.failAfter
	w.m.mu.Unlock()
	if fail > 0 && w.buf.Len()+len(p) > fail {
		return 0, errors.New("injected write error")
	}
	return w.buf.Write(p)
}

func (w *memWriter) Commit() (Committed, error) {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	if w.m.commitErr != nil {
		return Committed{}, w.m.commitErr
	}
	w.m.objects[w.req.SOPInstanceUID] = bytes.Clone(w.buf.Bytes())
	w.m.committed++
	return Committed{Nonconforming: w.m.nonconforming}, nil
}

func (w *memWriter) Abort() {
	w.m.mu.Lock()
	defer w.m.mu.Unlock()
	w.m.aborted++
}

func testLogger(t *testing.T) *slog.Logger {
	if testing.Verbose() {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.DiscardHandler)
}

// startServer runs a Server on a loopback port for the test and, at the
// end, shuts it down and checks that its goroutines are gone.
func startServer(t *testing.T, cfg Config, h StoreHandler) (*Server, string) {
	t.Helper()
	base := runtime.NumGoroutine()
	if len(cfg.AETitles) == 0 {
		cfg.AETitles = []string{"DICOMGW"}
	}
	srv, err := NewServer(cfg, h, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
		waitGoroutines(t, base)
	})
	return srv, ln.Addr().String()
}

// waitGoroutines waits for the goroutine count to come back to base.
func waitGoroutines(t *testing.T, base int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > base {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines, %d at start:\n%s", runtime.NumGoroutine(), base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var (
	ctVerification = ProposedContext{AbstractSyntax: uid.Verification, TransferSyntaxes: []string{uid.ImplicitVRLittleEndian}}
	ctCT           = ProposedContext{AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}}
)

func dial(t *testing.T, addr string, contexts ...ProposedContext) *Client {
	t.Helper()
	if len(contexts) == 0 {
		contexts = []ProposedContext{ctVerification, ctCT}
	}
	c, err := Dial(context.Background(), addr, DialConfig{CallingAE: "TESTSCU", CalledAE: "DICOMGW", Contexts: contexts, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// ctDataSet is a small Explicit VR Little Endian data set with the given
// SOP class and instance UIDs, padding to size bytes with a Pixel Data
// element when size asks for more.
func ctDataSet(sopClass, sopInstance string, size int) []byte {
	var b []byte
	el := func(g, e uint16, vr string, v []byte) {
		if len(v)%2 == 1 {
			v = append(v, 0)
		}
		b = append(b, byte(g), byte(g>>8), byte(e), byte(e>>8), vr[0], vr[1])
		if vr == "OW" || vr == "OB" {
			b = append(b, 0, 0, byte(len(v)), byte(len(v)>>8), byte(len(v)>>16), byte(len(v)>>24))
		} else {
			b = append(b, byte(len(v)), byte(len(v)>>8))
		}
		b = append(b, v...)
	}
	el(0x0008, 0x0016, "UI", []byte(sopClass))
	el(0x0008, 0x0018, "UI", []byte(sopInstance))
	el(0x0020, 0x000D, "UI", []byte("1.2.3.4.5"))
	if n := size - len(b) - 12; n > 0 {
		el(0x7FE0, 0x0010, "OW", make([]byte, n&^1))
	}
	return b
}

// raw is a requestor that speaks PDUs by hand, for what Client never does.
type raw struct {
	t *testing.T
	c net.Conn
	r *pdu.Reader
}

func dialRaw(t *testing.T, addr string) *raw {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &raw{t: t, c: c, r: pdu.NewReader(c, pdu.Limits{}, nil)}
}

func (r *raw) send(p pdu.PDU) {
	r.t.Helper()
	b, err := pdu.Encode(p)
	if err != nil {
		r.t.Fatal(err)
	}
	r.sendBytes(b)
}

func (r *raw) sendBytes(b []byte) {
	r.t.Helper()
	if _, err := r.c.Write(b); err != nil {
		r.t.Fatal(err)
	}
}

func (r *raw) recv() (pdu.PDU, error) {
	r.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	return r.r.ReadPDU()
}

// expectAbort reads the next PDU and checks it is an A-ABORT from source
// with reason, then that the gateway closes the connection once we do not.
func (r *raw) expectAbort(source pdu.AbortSource, reason pdu.AbortReason) {
	r.t.Helper()
	p, err := r.recv()
	if err != nil {
		r.t.Fatalf("waiting for A-ABORT: %v", err)
	}
	ab, ok := p.(*pdu.Abort)
	if !ok {
		r.t.Fatalf("got %v, want A-ABORT", p.Type())
	}
	if ab.Source != source || ab.Reason != reason {
		r.t.Fatalf("A-ABORT source %v reason %v, want %v %v", ab.Source, ab.Reason, source, reason)
	}
}

// expectClosed checks that the gateway closes the connection (reads EOF)
// within d.
func (r *raw) expectClosed(d time.Duration) {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 1024)
	for {
		_, err := r.c.Read(buf)
		if err == io.EOF || errors.Is(err, net.ErrClosed) || isReset(err) {
			return
		}
		if err != nil {
			r.t.Fatalf("connection not closed within %v: %v", d, err)
		}
	}
}

func isReset(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && !op.Timeout()
}

func rqFor(contexts ...pdu.PresentationContextRQ) *pdu.AssociateRQ {
	return &pdu.AssociateRQ{
		ProtocolVersion:      1,
		CalledAE:             pdu.MakeAE("DICOMGW"),
		CallingAE:            pdu.MakeAE("RAWSCU"),
		ApplicationContext:   uid.ApplicationContext,
		PresentationContexts: contexts,
		UserInfo:             pdu.UserInformation{HasMaxLength: true, MaxLength: 16384, ImplementationClassUID: "1.2.3"},
	}
}

var (
	pcEcho = pdu.PresentationContextRQ{ID: 1, AbstractSyntax: uid.Verification, TransferSyntaxes: []string{uid.ImplicitVRLittleEndian}}
	pcCT   = pdu.PresentationContextRQ{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}}
)

// associate sends an A-ASSOCIATE-RQ and expects an A-ASSOCIATE-AC.
func (r *raw) associate(rq *pdu.AssociateRQ) *pdu.AssociateAC {
	r.t.Helper()
	r.send(rq)
	p, err := r.recv()
	if err != nil {
		r.t.Fatal(err)
	}
	ac, ok := p.(*pdu.AssociateAC)
	if !ok {
		r.t.Fatalf("got %#v, want A-ASSOCIATE-AC", p)
	}
	return ac
}

func pdata(pdvs ...pdu.PDV) *pdu.PDataTF { return &pdu.PDataTF{PDVs: pdvs} }

func cmdPDV(ctx uint8, c *Command) pdu.PDV {
	return pdu.PDV{ContextID: ctx, Command: true, Last: true, Data: AppendCommand(nil, c)}
}

func echoRQ(id uint16) *Command {
	return &Command{AffectedSOPClassUID: uid.Verification, CommandField: CEchoRQ, MessageID: id, CommandDataSetType: NoDataSet,
		Has: HasAffectedSOPClassUID | HasMessageID}
}

func storeRQ(id uint16, sopClass, sopInstance string) *Command {
	return &Command{AffectedSOPClassUID: sopClass, CommandField: CStoreRQ, MessageID: id, CommandDataSetType: 0,
		AffectedSOPInstanceUID: sopInstance, Has: HasAffectedSOPClassUID | HasMessageID | HasAffectedSOPInstanceUID | HasPriority}
}

// response reads P-DATA-TF PDUs until a whole command arrives.
func (r *raw) response() *Command {
	r.t.Helper()
	var buf []byte
	for {
		p, err := r.recv()
		if err != nil {
			r.t.Fatalf("waiting for a response: %v", err)
		}
		pd, ok := p.(*pdu.PDataTF)
		if !ok {
			r.t.Fatalf("got %v, want P-DATA-TF", p.Type())
		}
		for _, v := range pd.PDVs {
			buf = append(buf, v.Data...)
			if v.Last {
				c, err := DecodeCommand(buf)
				if err != nil {
					r.t.Fatal(err)
				}
				return c
			}
		}
	}
}

func netListen(t *testing.T) (net.Listener, error) { return net.Listen("tcp", "127.0.0.1:0") }

func dialRawErr(addr string) (net.Conn, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err == nil {
		c.Close()
	}
	return c, err
}
