package dimse

import (
	"context"
	"encoding/binary"
	"errors"
	"strings"
	"time"
)

// The Query/Retrieve Information Models – MOVE served (PS3.4 C.4.2).
const (
	PatientRootQueryMove = "1.2.840.10008.5.1.4.1.2.1.2"
	StudyRootQueryMove   = "1.2.840.10008.5.1.4.1.2.2.2"
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

// MoveRequest is one C-MOVE-RQ. Everything in it comes from the peer.
type MoveRequest struct {
	FindRequest
	Destination string // Move Destination (0000,0600), a valid AE title
}

// MoveHandler answers C-MOVE requests (PS3.4 C.4.2). With Config.Move nil,
// the MOVE SOP classes are not accepted.
type MoveHandler interface {
	// Move retrieves what the identifier selects and sends it with
	// C-STORE to req.Destination, calling progress after each
	// sub-operation. ctx ends on C-CANCEL or when the association ends.
	// It returns the final counts; a *StatusError refuses the whole move
	// (e.g. StatusMoveDestinationUnknown).
	Move(ctx context.Context, req *MoveRequest, progress func(Progress) error) (Progress, error)
}

// beginMove checks a C-MOVE-RQ and collects its identifier.
func (a *assoc) beginMove(m *message) {
	cmd := m.cmd
	switch {
	case m.ctx.kind != kindMove:
		m.status, m.comment = StatusSOPClassNotSupported, "context is not for retrieval"
	case cmd.AffectedSOPClassUID != m.ctx.abstract:
		m.status, m.comment = StatusSOPClassNotSupported, "SOP class differs from context abstract syntax"
	case !cmd.HasDataSet():
		m.status, m.comment = StatusIdentifierMismatch, "C-MOVE-RQ without an identifier"
	case cmd.Has&HasMoveDestination == 0 || ValidAETitle(cmd.MoveDestination) != nil:
		m.status, m.comment = StatusMoveDestinationUnknown, "no valid move destination"
	default:
		m.collect, m.limit = true, a.srv.cfg.MaxFindIdentifier
	}
}

// startMove runs a complete C-MOVE-RQ on its own goroutine, which writes
// its pending responses (with the sub-operation counts) and its final one.
func (a *assoc) startMove(m *message) {
	a.stats.moves++
	field := CommandField(uint16(CMoveRQ) | responseBit)
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
	m.data, m.collect = nil, false
	ctx, cancel := context.WithCancel(context.Background())
	op := &runningFind{msgID: m.cmd.MessageID, cancel: cancel, done: make(chan struct{})}
	a.find = op
	ctxID, peerMax, explicit := m.ctx.id, a.peerMax, m.ctx.ts != "1.2.840.10008.1.2"
	rsp := func(st Status, comment string, p Progress, data []byte) error {
		c := &Command{
			AffectedSOPClassUID: req.SOPClassUID, CommandField: field, MessageIDBeingRespondedTo: req.MessageID,
			CommandDataSetType: NoDataSet, Status: st,
			Remaining: clampCount(p.Remaining), Completed: clampCount(p.Completed), Failed: clampCount(p.Failed), Warning: clampCount(p.Warning),
			Has: HasAffectedSOPClassUID | HasMessageIDBeingRespondedTo | HasStatus | HasSubOperations,
		}
		if data != nil {
			c.CommandDataSetType = 0x0000
		}
		if comment != "" && st.Category() == "failure" {
			c.ErrorComment, c.Has = errorComment(comment), c.Has|HasErrorComment
		}
		b := fragment(nil, ctxID, AppendCommand(nil, c), peerMax)
		if data != nil {
			b = fragmentData(b, ctxID, data, peerMax)
		}
		return a.writeAsync(b)
	}
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
		a.srv.m.requests.WithLabelValues("C-MOVE", statusLabel(st), a.callingLabel()).Inc()
		if werr := rsp(st, comment, p, data); werr != nil && !errors.Is(werr, ErrAssociationGone) {
			a.log.Warn("C-MOVE: final response not sent", "err", werr)
		}
		level := a.log.Info
		if st.Category() == "failure" {
			level = a.log.Warn
		}
		level("C-MOVE answered", "model", req.SOPClassUID, "destination", req.Destination, "completed", p.Completed,
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
