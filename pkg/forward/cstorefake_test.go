package forward

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// Fakes for the C-STORE destination's tests: a real acceptor (pkg/dimse's
// Server) whose handler answers chosen statuses and records what it
// committed and what it discarded, and a raw acceptor speaking PDUs by
// hand for answers the Server never gives (a response to the wrong
// message, an abort in the middle of a batch).

// scpObject is what the fake SCP committed.
type scpObject struct {
	data                []byte
	ts, calling, called string
	assoc               string
	sopClass            string
}

// scpHandler is a dimse.StoreHandler with faults to inject.
type scpHandler struct {
	mu        sync.Mutex
	answer    map[string]error // by SOP Instance UID: Commit fails with this (a *dimse.StatusError chooses the status)
	committed map[string]scpObject
	aborted   []string // SOP Instance UIDs whose writer was aborted
	begun     []*dimse.StoreRequest

	// holdWrite, when set, makes the first Write of the first object
	// close writing and wait for holdWrite to be closed.
	holdWrite, writing chan struct{}
	// holdCommit likewise for Commit, announcing on committing.
	holdCommit, committing chan struct{}
	onceWrite, onceCommit  sync.Once
}

func newSCPHandler() *scpHandler {
	return &scpHandler{answer: map[string]error{}, committed: map[string]scpObject{}}
}

func (h *scpHandler) BeginStore(req *dimse.StoreRequest) (dimse.StoreWriter, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.begun = append(h.begun, req)
	return &scpWriter{h: h, req: req}, nil
}

func (h *scpHandler) snapshot() (committed map[string]scpObject, aborted []string, begun int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	committed = map[string]scpObject{}
	for k, v := range h.committed {
		committed[k] = v
	}
	return committed, append([]string(nil), h.aborted...), len(h.begun)
}

type scpWriter struct {
	h   *scpHandler
	req *dimse.StoreRequest
	buf bytes.Buffer
}

func (w *scpWriter) Write(p []byte) (int, error) {
	if w.h.holdWrite != nil {
		w.h.onceWrite.Do(func() {
			close(w.h.writing)
			<-w.h.holdWrite
		})
	}
	return w.buf.Write(p)
}

func (w *scpWriter) Commit() (dimse.Committed, error) {
	if w.h.holdCommit != nil {
		w.h.onceCommit.Do(func() {
			close(w.h.committing)
			<-w.h.holdCommit
		})
	}
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	if err := w.h.answer[w.req.SOPInstanceUID]; err != nil {
		return dimse.Committed{}, err
	}
	w.h.committed[w.req.SOPInstanceUID] = scpObject{
		data: bytes.Clone(w.buf.Bytes()), ts: w.req.TransferSyntaxUID, calling: w.req.CallingAE, called: w.req.CalledAE,
		assoc: w.req.AssociationID, sopClass: w.req.SOPClassUID,
	}
	return dimse.Committed{}, nil
}

func (w *scpWriter) Abort() {
	w.h.mu.Lock()
	defer w.h.mu.Unlock()
	w.h.aborted = append(w.h.aborted, w.req.SOPInstanceUID)
}

// startSCP runs a dimse.Server answering to "PACS" on a loopback port
// (through wrap, e.g. TLS, when given) and shuts it down at the end.
func startSCP(t *testing.T, cfg dimse.Config, h dimse.StoreHandler, wrap func(net.Listener) net.Listener) string {
	t.Helper()
	if len(cfg.AETitles) == 0 {
		cfg.AETitles = []string{"PACS"}
	}
	srv, err := dimse.NewServer(cfg, h, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	if wrap != nil {
		ln = wrap(ln)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		if err := <-done; !errors.Is(err, dimse.ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return addr
}

// rawAction is how the raw acceptor answers one C-STORE-RQ.
type rawAction struct {
	rsp   *dimse.Command // the response to send
	abort bool           // send A-ABORT instead
	hang  bool           // answer nothing, read on
}

// rawSCP is an acceptor speaking PDUs by hand: it accepts every proposed
// context in its first transfer syntax and answers each C-STORE-RQ (the
// n-th of its association, from 1) as answer says.
type rawSCP struct {
	addr   string
	mu     sync.Mutex
	events []string
}

func (s *rawSCP) event(e string) {
	s.mu.Lock()
	s.events = append(s.events, e)
	s.mu.Unlock()
}

func (s *rawSCP) log() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]string(nil), s.events...)
}

func startRawSCP(t *testing.T, answer func(n int, rq *dimse.Command) rawAction) *rawSCP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &rawSCP{addr: ln.Addr().String()}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer conn.Close()
				s.serve(conn, answer)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return s
}

func (s *rawSCP) serve(conn net.Conn, answer func(int, *dimse.Command) rawAction) {
	conn.SetDeadline(time.Now().Add(30 * time.Second))
	r := pdu.NewReader(conn, pdu.Limits{}, nil)
	send := func(p pdu.PDU) {
		b, _ := pdu.Encode(p)
		conn.Write(b)
	}
	p, err := r.ReadPDU()
	rq, ok := p.(*pdu.AssociateRQ)
	if err != nil || !ok {
		return
	}
	s.event("associate " + rq.CallingAE.String())
	ac := &pdu.AssociateAC{
		ProtocolVersion: 1, CalledAE: rq.CalledAE, CallingAE: rq.CallingAE, ApplicationContext: rq.ApplicationContext,
		UserInfo: pdu.UserInformation{HasMaxLength: true, MaxLength: 16384, ImplementationClassUID: "1.2.3"},
	}
	for _, pc := range rq.PresentationContexts {
		ac.PresentationContexts = append(ac.PresentationContexts, pdu.PresentationContextAC{ID: pc.ID, Result: pdu.ContextAcceptance, TransferSyntax: pc.TransferSyntaxes[0]})
	}
	send(ac)
	var cmdBuf []byte
	var cmd *dimse.Command
	n := 0
	for {
		p, err := r.ReadPDU()
		if err != nil {
			s.event("closed")
			return
		}
		switch p := p.(type) {
		case *pdu.Abort:
			s.event("aborted")
			return
		case *pdu.ReleaseRQ:
			send(&pdu.ReleaseRP{})
			s.event("released")
			return
		case *pdu.PDataTF:
			for _, v := range p.PDVs {
				if v.Command {
					cmdBuf = append(cmdBuf, v.Data...)
					if v.Last {
						cmd, _ = dimse.DecodeCommand(cmdBuf)
						cmdBuf = nil
					}
					continue
				}
				if !v.Last || cmd == nil {
					continue
				}
				n++
				s.event("store " + cmd.AffectedSOPInstanceUID)
				act := answer(n, cmd)
				if act.hang {
					cmd = nil
					continue
				}
				if act.abort {
					send(&pdu.Abort{Source: pdu.AbortSourceProvider})
					s.event("abort sent")
					return
				}
				send(&pdu.PDataTF{PDVs: []pdu.PDV{{ContextID: v.ContextID, Command: true, Last: true, Data: dimse.AppendCommand(nil, act.rsp)}}})
				cmd = nil
			}
		}
	}
}

// okResponse is the C-STORE-RSP a well-behaved SCP gives rq.
func okResponse(rq *dimse.Command) *dimse.Command {
	return &dimse.Command{
		CommandField: dimse.CStoreRSP, MessageIDBeingRespondedTo: rq.MessageID,
		AffectedSOPClassUID: rq.AffectedSOPClassUID, AffectedSOPInstanceUID: rq.AffectedSOPInstanceUID,
		CommandDataSetType: dimse.NoDataSet, Status: dimse.StatusSuccess,
		Has: dimse.HasMessageIDBeingRespondedTo | dimse.HasAffectedSOPClassUID | dimse.HasAffectedSOPInstanceUID | dimse.HasStatus,
	}
}

// memObject is a queued object whose data set is data.
func memObject(id, class, inst, ts, calling string, data []byte) *Object {
	return &Object{
		ID: id, Open: func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil },
		DataSize: int64(len(data)), SOPClassUID: class, SOPInstanceUID: inst, TransferSyntaxUID: ts,
		StudyInstanceUID: "1.2.826.0.1.99.1", SeriesInstanceUID: "1.2.826.0.1.99.2", CallingAE: calling,
		Received: time.Now(),
	}
}

// ctObject is a CT object in Explicit VR Little Endian with pixels bytes
// of Pixel Data, received from MODALITY.
func ctObject(id, inst string, pixels int) *Object {
	return memObject(id, ctClass, inst, explicitLE, "MODALITY", dataSetBytes(spec{SOP: inst, Study: "1.2.826.0.1.99.1", Series: "1.2.826.0.1.99.2", Pixels: pixels, Fill: byte(len(inst))}))
}

// patternReader is n bytes of a pattern, generated as read (never held).
type patternReader struct{ off, n int64 }

func (r *patternReader) Read(p []byte) (int, error) {
	if r.off >= r.n {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), r.n-r.off)]
	for i := range p {
		p[i] = byte((r.off + int64(i)) * 7)
	}
	r.off += int64(len(p))
	return len(p), nil
}
