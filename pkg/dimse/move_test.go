package dimse

import (
	"bytes"
	"context"
	"testing"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// moveHandler reports each of its sub-operations and fails the last one.
type moveHandler struct{ n int }

func (h moveHandler) Move(ctx context.Context, req *MoveRequest, progress func(Progress) error) (Progress, error) {
	if req.Destination != "STORESCP" {
		return Progress{}, &StatusError{Status: StatusMoveDestinationUnknown, Comment: "unknown"}
	}
	p := Progress{Remaining: h.n}
	for i := range h.n {
		p.Remaining--
		if i == h.n-1 {
			p.Failed++
			p.FailedUIDs = append(p.FailedUIDs, "1.2.3.4")
		} else {
			p.Completed++
		}
		if err := progress(p); err != nil {
			return p, err
		}
	}
	return p, nil
}

// TestMoveResponses: Pending responses carry the sub-operation counts
// (PS3.4 C.4.2.1.5); the final one, with a failure, is B000 with the
// Failed SOP Instance UID List; an unknown destination is A801.
func TestMoveResponses(t *testing.T) {
	_, addr := startServer(t, Config{Move: moveHandler{n: 3}}, newMemStore())
	r := dialRaw(t, addr)
	pc := pdu.PresentationContextRQ{ID: 9, AbstractSyntax: StudyRootQueryMove, TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}}
	r.associate(rqFor(pc))
	move := func(id uint16, dest string) {
		r.send(pdata(cmdPDV(pc.ID, &Command{AffectedSOPClassUID: StudyRootQueryMove, CommandField: CMoveRQ, MessageID: id,
			MoveDestination: dest, Has: HasAffectedSOPClassUID | HasMessageID | HasPriority | HasMoveDestination}),
			pdu.PDV{ContextID: pc.ID, Last: true, Data: []byte{8, 0, 0x52, 0, 'C', 'S', 6, 0, 'S', 'T', 'U', 'D', 'Y', ' '}}))
	}
	move(3, "STORESCP")
	for i := 1; i <= 3; i++ {
		rsp, _ := r.message()
		if rsp.Status != StatusPending || int(rsp.Remaining) != 3-i || rsp.Has&HasSubOperations == 0 {
			t.Fatalf("pending %d: %+v", i, rsp)
		}
	}
	rsp, data := r.message()
	want := []byte{8, 0, 0x58, 0, 'U', 'I', 8, 0, '1', '.', '2', '.', '3', '.', '4', 0}
	if rsp.Status != StatusSubOperationsFailed || rsp.Completed != 2 || rsp.Failed != 1 || rsp.Remaining != 0 || !bytes.Equal(data, want) {
		t.Fatalf("final: %+v %x", rsp, data)
	}
	move(4, "NOBODY")
	if rsp, _ := r.message(); rsp.Status != StatusMoveDestinationUnknown || rsp.MessageIDBeingRespondedTo != 4 {
		t.Fatalf("unknown destination: %+v", rsp)
	}
}
