package dimse

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// findHandler emits n identifiers (the request's own, numbered), then
// blocks until cancelled when block is set.
type findHandler struct {
	n     int
	block bool
	reqs  chan *FindRequest
}

func (h *findHandler) Find(ctx context.Context, req *FindRequest, emit func([]byte) error) error {
	h.reqs <- req
	for i := range h.n {
		if err := emit(append(bytes.Clone(req.Identifier), byte(i), 0)); err != nil {
			return err
		}
	}
	if h.block {
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

var pcFind = pdu.PresentationContextRQ{ID: 7, AbstractSyntax: StudyRootQueryFind, TransferSyntaxes: []string{uid.ImplicitVRLittleEndian}}

func findRQ(id uint16) *Command {
	return &Command{AffectedSOPClassUID: StudyRootQueryFind, CommandField: CFindRQ, MessageID: id, CommandDataSetType: 0,
		Has: HasAffectedSOPClassUID | HasMessageID | HasPriority}
}

// TestFindPendingThenSuccess: each match is a Pending response with its
// identifier (PS3.4 C.4.1.1.4), then one Success without a data set; the
// association then serves other requests.
func TestFindPendingThenSuccess(t *testing.T) {
	h := &findHandler{n: 3, reqs: make(chan *FindRequest, 1)}
	_, addr := startServer(t, Config{Find: h}, newMemStore())
	r := dialRaw(t, addr)
	r.associate(rqFor(pcEcho, pcFind))
	ident := []byte{8, 0, 0x52, 0, 6, 0, 0, 0, 'S', 'T', 'U', 'D', 'Y', ' '}
	r.send(pdata(cmdPDV(pcFind.ID, findRQ(5)), pdu.PDV{ContextID: pcFind.ID, Last: true, Data: ident}))
	for i := range 3 {
		rsp, data := r.message()
		if rsp.Status != StatusPending || rsp.MessageIDBeingRespondedTo != 5 || rsp.CommandField != 0x8020 ||
			!bytes.Equal(data, append(bytes.Clone(ident), byte(i), 0)) {
			t.Fatalf("pending %d: %+v %x", i, rsp, data)
		}
	}
	rsp, data := r.message()
	if rsp.Status != StatusSuccess || data != nil || rsp.AffectedSOPClassUID != StudyRootQueryFind {
		t.Fatalf("final: %+v %x", rsp, data)
	}
	req := <-h.reqs
	if !bytes.Equal(req.Identifier, ident) || req.TransferSyntaxUID != uid.ImplicitVRLittleEndian || req.CallingAE != "RAWSCU" {
		t.Fatalf("request: %+v", req)
	}
	r.send(pdata(cmdPDV(1, echoRQ(6))))
	if c := r.response(); c.Status != StatusSuccess {
		t.Fatalf("echo after the find: %+v", c)
	}
}

// TestFindCancel: C-CANCEL-RQ naming the query ends it with Cancel (FE00);
// a request other than C-CANCEL while a query runs aborts the association
// (no asynchronous operations window).
func TestFindCancel(t *testing.T) {
	h := &findHandler{n: 1, block: true, reqs: make(chan *FindRequest, 2)}
	_, addr := startServer(t, Config{Find: h}, newMemStore())
	r := dialRaw(t, addr)
	r.associate(rqFor(pcEcho, pcFind))
	ident := []byte{8, 0, 0x52, 0, 6, 0, 0, 0, 'S', 'T', 'U', 'D', 'Y', ' '}
	r.send(pdata(cmdPDV(pcFind.ID, findRQ(5)), pdu.PDV{ContextID: pcFind.ID, Last: true, Data: ident}))
	if rsp, _ := r.message(); rsp.Status != StatusPending {
		t.Fatalf("first: %+v", rsp)
	}
	r.send(pdata(cmdPDV(pcFind.ID, &Command{CommandField: CCancelRQ, MessageIDBeingRespondedTo: 5, CommandDataSetType: NoDataSet,
		Has: HasMessageIDBeingRespondedTo})))
	if rsp, _ := r.message(); rsp.Status != StatusCancel || rsp.MessageIDBeingRespondedTo != 5 {
		t.Fatalf("after C-CANCEL: %+v", rsp)
	}
	// A second query, and an echo before it is answered.
	r.send(pdata(cmdPDV(pcFind.ID, findRQ(6)), pdu.PDV{ContextID: pcFind.ID, Last: true, Data: ident}))
	if rsp, _ := r.message(); rsp.Status != StatusPending {
		t.Fatalf("second query: %+v", rsp)
	}
	r.send(pdata(cmdPDV(1, echoRQ(7))))
	r.expectAbort(pdu.AbortSourceProvider, pdu.AbortUnexpectedPDUParameter)
}

// TestFindReleaseWhileRunning: a release in the middle of a query stops it
// first: nothing of it comes after the A-RELEASE-RP.
func TestFindReleaseWhileRunning(t *testing.T) {
	h := &findHandler{n: 1, block: true, reqs: make(chan *FindRequest, 1)}
	_, addr := startServer(t, Config{Find: h}, newMemStore())
	r := dialRaw(t, addr)
	r.associate(rqFor(pcFind))
	r.send(pdata(cmdPDV(pcFind.ID, findRQ(5)), pdu.PDV{ContextID: pcFind.ID, Last: true, Data: []byte{8, 0, 0x52, 0, 0, 0, 0, 0}}))
	if rsp, _ := r.message(); rsp.Status != StatusPending {
		t.Fatalf("first: %+v", rsp)
	}
	r.send(&pdu.ReleaseRQ{})
	for {
		p, err := r.recv()
		if err != nil {
			t.Fatalf("waiting for A-RELEASE-RP: %v", err)
		}
		if _, ok := p.(*pdu.ReleaseRP); ok {
			break
		}
		// The query's final response may come before the release answer.
	}
	r.c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	if p, err := r.r.ReadPDU(); err == nil {
		t.Fatalf("after A-RELEASE-RP: %v", p.Type())
	}
}

// TestFindOff: without a handler the FIND SOP classes are not accepted.
func TestFindOff(t *testing.T) {
	_, addr := startServer(t, Config{}, newMemStore())
	r := dialRaw(t, addr)
	ac := r.associate(rqFor(pcEcho, pcFind))
	for _, pc := range ac.PresentationContexts {
		if pc.ID == pcFind.ID && pc.Result != pdu.ContextAbstractSyntaxNotSupported {
			t.Fatalf("FIND context: %v", pc.Result)
		}
	}
}
