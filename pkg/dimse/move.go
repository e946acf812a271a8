package dimse

import (
	"context"
	"encoding/binary"
	"errors"
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
	cmd := m.cmd
	want := kindMove
	if cmd.CommandField == CGetRQ {
		want = kindGet
	}
	switch {
	case m.ctx.kind != want:
		m.status, m.comment = StatusSOPClassNotSupported, "context is not for this retrieval"
	case cmd.AffectedSOPClassUID != m.ctx.abstract:
		m.status, m.comment = StatusSOPClassNotSupported, "SOP class differs from context abstract syntax"
	case !cmd.HasDataSet():
		m.status, m.comment = StatusIdentifierMismatch, "retrieval without an identifier"
	case want == kindMove && (cmd.Has&HasMoveDestination == 0 || ValidAETitle(cmd.MoveDestination) != nil):
		m.status, m.comment = StatusMoveDestinationUnknown, "no valid move destination"
	default:
		m.collect, m.limit = true, a.srv.cfg.MaxFindIdentifier
	}
}

// startMove runs a complete C-MOVE-RQ on its own goroutine, which writes
// its pending responses (with the sub-operation counts) and its final one.
func (a *assoc) startMove(m *message) {
	a.stats.moves++
	field := CommandField(uint16(m.cmd.CommandField) | responseBit)
	label := "C-MOVE"
	if m.cmd.CommandField == CGetRQ {
		label = "C-GET"
	}
	if !m.collect {
		if m.status == 0 {
			m.status = StatusUnableToProcess
		}
		a.respond(m, field, m.status, m.comment)
		return
	}
	req := &MoveRequest{Destination: m.cmd.MoveDestination, FindRequest: FindRequest{
		AssociationID: a.id, CallingAE: a.calling, CalledAE: a.called, RemoteAddr: a.conn.RemoteAddr().String(),
		SOPClassUID: m.cmd.AffectedSOPClassUID, TransferSyntaxUID: m.ctx.ts, MessageID: m.cmd.MessageID,
		Priority: m.cmd.Priority, Identifier: m.data,
	}}
	if m.cmd.CommandField == CGetRQ {
		req.Sender = assocStorer{a}
	}
	m.data, m.collect = nil, false
	ctx, cancel := context.WithCancel(context.Background())
	op := &runningFind{msgID: m.cmd.MessageID, cancel: cancel, done: make(chan struct{})}
	a.find = op
	explicit := m.ctx.ts != "1.2.840.10008.1.2"
	send := a.opResponder(m)
	rsp := func(st Status, comment string, p Progress, data []byte) error { return send(st, comment, &p, data) }
	go func() {
		defer close(op.done)
		defer cancel()
		start := time.Now()
		p, err := a.srv.cfg.Move.Move(ctx, req, func(p Progress) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return rsp(StatusPending, "", p, nil)
		})
		st, comment := StatusSuccess, ""
		var se *StatusError
		switch {
		case err == nil && p.Failed > 0 && p.Completed == 0 && p.Warning == 0:
			st = StatusUnableToSubOperate
		case err == nil && (p.Failed > 0 || p.Warning > 0):
			st = StatusSubOperationsFailed
		case err == nil:
		case ctx.Err() != nil:
			st = StatusCancel
		case errors.As(err, &se):
			st, comment = se.Status, se.Comment
		default:
			st, comment = StatusUnableToProcess, "retrieval failed"
		}
		var data []byte
		if len(p.FailedUIDs) > 0 {
			data = failedUIDList(p.FailedUIDs, explicit)
		}
		if st != StatusCancel {
			p.Remaining = 0 // only a cancelled move's final response says what was left
		}
		a.srv.m.requests.WithLabelValues(label, statusLabel(st), a.callingLabel()).Inc()
		op.final.Store(true)
		if werr := rsp(st, comment, p, data); werr != nil && !errors.Is(werr, ErrAssociationGone) {
			a.log.Warn(label+": final response not sent", "err", werr)
		}
		level := a.log.Info
		if st.Category() == "failure" {
			level = a.log.Warn
		}
		level(label+" answered", "model", req.SOPClassUID, "destination", req.Destination, "completed", p.Completed,
			"failed", p.Failed, "warning", p.Warning, "status", st, "duration", time.Since(start).Round(time.Millisecond), "err", err)
	}()
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
