package dimse

import (
	"context"
	"encoding/binary"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// The Query/Retrieve Information Models – MOVE and GET served (PS3.4
// C.4.2, C.4.3).
const (
	PatientRootQueryMove = "1.2.840.10008.5.1.4.1.2.1.2"
	StudyRootQueryMove   = "1.2.840.10008.5.1.4.1.2.2.2"
	PatientRootQueryGet  = "1.2.840.10008.5.1.4.1.2.1.3"
	StudyRootQueryGet    = "1.2.840.10008.5.1.4.1.2.2.3"
)

// C-MOVE statuses (PS3.4 C.4.2.1.5).
const (
	StatusMoveDestinationUnknown Status = 0xA801
	StatusSubOperationsFailed    Status = 0xB000 // complete, one or more failures
	StatusUnableToSubOperate     Status = 0xA702 // out of resources: unable to perform sub-operations
)

// Progress counts a retrieval's sub-operations (C-STOREs).
type Progress struct {
	Remaining, Completed, Failed, Warning int
	// FailedUIDs are the SOP Instance UIDs that could not be sent, for
	// the final response's Failed SOP Instance UID List (0008,0058).
	FailedUIDs []string
}

// MoveRequest is one C-MOVE-RQ or C-GET-RQ. Everything in it comes from
// the peer.
type MoveRequest struct {
	FindRequest
	Destination string // C-MOVE: Move Destination (0000,0600), a valid AE title
	// Sender, for a C-GET, sends the sub-operations' C-STOREs back on the
	// requester's association; nil for a C-MOVE.
	Sender Storer
}

// Storer sends C-STOREs: a Client, or a C-GET's requester.
type Storer interface {
	// AcceptedTransferSyntax is the transfer syntax a context for sopClass
	// was accepted with, if one was.
	AcceptedTransferSyntax(sopClass string) (string, bool)
	// Store sends one object's data set, in transferSyntax, and returns
	// the C-STORE-RSP.
	Store(sopClass, sopInstance, transferSyntax string, data io.Reader) (*Command, error)
}

// MoveHandler answers C-MOVE and C-GET requests (PS3.4 C.4.2, C.4.3).
// With Config.Move nil, the MOVE and GET SOP classes are not accepted.
type MoveHandler interface {
	// Move retrieves what the identifier selects and sends it with
	// C-STORE to req.Destination, calling progress after each
	// sub-operation. ctx ends on C-CANCEL or when the association ends.
	// It returns the final counts; a *StatusError refuses the whole move
	// (e.g. StatusMoveDestinationUnknown).
	Move(ctx context.Context, req *MoveRequest, progress func(Progress) error) (Progress, error)
}

// beginMove checks a C-MOVE-RQ or C-GET-RQ and collects its identifier.
func (a *assoc) beginMove(m *message) {
	const notFor, noIdentifier = "context is not for this retrieval", "retrieval without an identifier"
	if m.cmd.CommandField == CGetRQ {
		a.beginOp(m, kindGet, notFor, noIdentifier)
		return
	}
	a.beginOp(m, kindMove, notFor, noIdentifier)
	if m.collect && (m.cmd.Has&HasMoveDestination == 0 || ValidAETitle(m.cmd.MoveDestination) != nil) {
		m.collect = false
		m.status, m.comment = StatusMoveDestinationUnknown, "no valid move destination"
	}
}

// startMove runs a complete C-MOVE-RQ or C-GET-RQ: pending responses carry
// the sub-operation counts.
func (a *assoc) startMove(m *message) {
	a.stats.moves.Add(1)
	if a.opRefused(m) {
		return
	}
	label := "C-MOVE"
	req := &MoveRequest{Destination: m.cmd.MoveDestination, FindRequest: a.opRequest(m)}
	if m.cmd.CommandField == CGetRQ {
		label, req.Sender = "C-GET", assocStorer{a}
	}
	explicit := m.ctx.ts != "1.2.840.10008.1.2"
	a.startOp(m, label, "retrieval", func(ctx context.Context, send responder) opResult {
		p, err := a.srv.cfg.Move.Move(ctx, req, func(p Progress) error { return send(StatusPending, "", &p, nil) })
		r := opResult{status: StatusSuccess, p: &p, err: err,
			attrs: []any{"destination", req.Destination, "completed", p.Completed, "failed", p.Failed, "warning", p.Warning}}
		switch {
		case p.Failed > 0 && p.Completed == 0 && p.Warning == 0:
			r.status = StatusUnableToSubOperate
		case p.Failed > 0 || p.Warning > 0:
			r.status = StatusSubOperationsFailed
		}
		if len(p.FailedUIDs) > 0 {
			r.data = failedUIDList(p.FailedUIDs, explicit)
		}
		return r
	})
}

func clampCount(n int) uint16 { return uint16(min(max(n, 0), 0xFFFF)) }

// failedUIDList encodes (0008,0058) Failed SOP Instance UID List.
func failedUIDList(uids []string, explicit bool) []byte {
	v := []byte(strings.Join(uids, `\`))
	if len(v)%2 == 1 {
		v = append(v, 0)
	}
	b := []byte{0x08, 0x00, 0x58, 0x00}
	if explicit {
		if len(v) > 0xFFFF {
			// UI is a short VR: too many failures to list in one
			// element; the counts still say how many.
			v = v[:0]
		}
		b = append(b, 'U', 'I')
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	} else {
		b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	}
	return append(b, v...)
}

// assocStorer sends a C-GET's C-STOREs back on the requester's association,
// on the storage contexts whose SCP role it took (role selection).
type assocStorer struct{ a *assoc }

func (s assocStorer) context(sopClass string) *presContext {
	for _, pc := range s.a.ctxs {
		if pc.abstract == sopClass && pc.peerSCP && pc.result == pdu.ContextAcceptance {
			return pc
		}
	}
	return nil
}

func (s assocStorer) AcceptedTransferSyntax(sopClass string) (string, bool) {
	if pc := s.context(sopClass); pc != nil {
		return pc.ts, true
	}
	return "", false
}

// Store writes the C-STORE-RQ and its data set, streamed, under the
// association's write lock, then waits for the C-STORE-RSP that its
// goroutine routes back (or for the association to end).
func (s assocStorer) Store(sopClass, sopInstance, transferSyntax string, data io.Reader) (*Command, error) {
	a := s.a
	pc := s.context(sopClass)
	if pc == nil || pc.ts != transferSyntax {
		return nil, fmt.Errorf("dimse: no context with the SCP role for %s in %s", sopClass, transferSyntax)
	}
	rp := &a.reports
	ch := make(chan *Command, 1)
	rp.mu.Lock()
	if !rp.open {
		rp.mu.Unlock()
		return nil, ErrAssociationGone
	}
	rp.msgID++
	if rp.msgID == 0 {
		rp.msgID = 1
	}
	id := rp.msgID
	rp.waiting[id] = ch
	cmd := &Command{AffectedSOPClassUID: sopClass, CommandField: CStoreRQ, MessageID: id, CommandDataSetType: 0x0000,
		AffectedSOPInstanceUID: sopInstance, Has: HasAffectedSOPClassUID | HasMessageID | HasPriority | HasAffectedSOPInstanceUID}
	err := a.writeLocked(fragment(nil, pc.id, AppendCommand(nil, cmd), a.peerMax))
	if err == nil {
		err = s.streamLocked(pc.id, data)
	}
	if err != nil {
		delete(rp.waiting, id)
	}
	rp.mu.Unlock()
	if err != nil {
		a.conn.Close()
		return nil, fmt.Errorf("%w: %v", ErrAssociationGone, err)
	}
	t := time.NewTimer(a.srv.cfg.IdleTimeout)
	defer t.Stop()
	select {
	case rsp, ok := <-ch:
		if !ok {
			return nil, ErrAssociationGone
		}
		return rsp, nil
	case <-t.C:
		rp.mu.Lock()
		delete(rp.waiting, id)
		rp.mu.Unlock()
		return nil, fmt.Errorf("dimse: no C-STORE-RSP within %v", a.srv.cfg.IdleTimeout)
	}
}

// streamLocked writes data as data set PDVs, one chunk ahead to know the
// last; a.reports.mu is held.
func (s assocStorer) streamLocked(ctxID uint8, data io.Reader) error {
	chunk := dataChunk(s.a.peerMax)
	hdr := pdu.HeaderLen + pdu.PDVHeaderLen
	cur, next := make([]byte, hdr+chunk), make([]byte, hdr+chunk)
	n, err := io.ReadFull(data, cur[hdr:])
	for {
		if err != nil && err != io.ErrUnexpectedEOF && err != io.EOF {
			return err
		}
		last := err != nil
		var m int
		var nerr error
		if !last {
			if m, nerr = io.ReadFull(data, next[hdr:]); nerr == io.EOF {
				last = true
			}
		}
		putDataPDU(cur, ctxID, last, n)
		if werr := s.a.writeLocked(cur[:hdr+n]); werr != nil {
			return werr
		}
		if last {
			return nil
		}
		cur, next = next, cur
		n, err = m, nerr
	}
}
