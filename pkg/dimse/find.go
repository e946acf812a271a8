package dimse

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// The Query/Retrieve Information Models – FIND served (PS3.4 C.4.1).
const (
	PatientRootQueryFind = "1.2.840.10008.5.1.4.1.2.1.1"
	StudyRootQueryFind   = "1.2.840.10008.5.1.4.1.2.2.1"
)

// C-FIND statuses (PS3.4 C.4.1.1.4).
const (
	StatusPending            Status = 0xFF00
	StatusPendingOptional    Status = 0xFF01 // optional keys not supported
	StatusCancel             Status = 0xFE00
	StatusIdentifierMismatch Status = 0xA900
	StatusUnableToProcess    Status = 0xC000
)

// DefaultMaxFindIdentifier bounds a C-FIND identifier held in memory.
const DefaultMaxFindIdentifier = 1 << 20

// FindHandler answers C-FIND requests (PS3.4 C.4.1). With Config.Find nil,
// the Query/Retrieve FIND SOP classes are not accepted.
type FindHandler interface {
	// Find runs one query: it calls emit with each match's identifier,
	// encoded in req.TransferSyntaxUID, and returns when the query is done.
	// ctx ends on C-CANCEL or when the association ends. A nil error is
	// the final Success; a *StatusError its status; an error after ctx
	// ended is answered Cancel; any other error Unable to process. emit's
	// error (the association is gone) should end the query.
	Find(ctx context.Context, req *FindRequest, emit func(identifier []byte) error) error
}

// FindRequest is one C-FIND-RQ. Everything in it comes from the peer.
type FindRequest struct {
	AssociationID       string
	CallingAE, CalledAE string
	RemoteAddr          string
	SOPClassUID         string // the information model
	TransferSyntaxUID   string
	MessageID           uint16
	Priority            uint16
	Identifier          []byte
}

// runningFind is the query an association is answering.
type runningFind struct {
	msgID  uint16
	cancel context.CancelFunc
	done   chan struct{}
	// final is set before the final response is written: the peer may
	// send its next request as soon as it reads it.
	final atomic.Bool
}

// busy tells whether a query is still being answered.
func (a *assoc) findBusy() bool {
	if a.find == nil {
		return false
	}
	if a.find.final.Load() {
		<-a.find.done // the final response is written, or being written
		a.find = nil
		return false
	}
	select {
	case <-a.find.done:
		a.find = nil
		return false
	default:
		return true
	}
}

// stopFind cancels the query being answered, if any, and waits for it:
// nothing of it is written after this returns.
func (a *assoc) stopFind() {
	if a.find != nil {
		a.find.cancel()
		<-a.find.done
		a.find = nil
	}
}

// beginFind checks a C-FIND-RQ and collects its identifier.
func (a *assoc) beginFind(m *message) {
	cmd := m.cmd
	switch {
	case m.ctx.kind != kindFind:
		m.status, m.comment = StatusSOPClassNotSupported, "context is not for query"
	case cmd.AffectedSOPClassUID != m.ctx.abstract:
		m.status, m.comment = StatusSOPClassNotSupported, "SOP class differs from context abstract syntax"
	case !cmd.HasDataSet():
		m.status, m.comment = StatusIdentifierMismatch, "C-FIND-RQ without an identifier"
	default:
		m.collect, m.limit = true, a.srv.cfg.MaxFindIdentifier
	}
}

// startFind runs the query of a complete C-FIND-RQ on its own goroutine,
// which writes its pending responses and its final one: the association
// goes on reading (a C-CANCEL may come).
func (a *assoc) startFind(m *message) {
	a.stats.finds++
	if !m.collect {
		if m.status == 0 {
			m.status = StatusUnableToProcess
		}
		a.respond(m, CommandField(uint16(CFindRQ)|responseBit), m.status, m.comment)
		return
	}
	req := &FindRequest{
		AssociationID: a.id, CallingAE: a.calling, CalledAE: a.called, RemoteAddr: a.conn.RemoteAddr().String(),
		SOPClassUID: m.cmd.AffectedSOPClassUID, TransferSyntaxUID: m.ctx.ts, MessageID: m.cmd.MessageID,
		Priority: m.cmd.Priority, Identifier: m.data,
	}
	m.data, m.collect = nil, false
	ctx, cancel := context.WithCancel(context.Background())
	f := &runningFind{msgID: m.cmd.MessageID, cancel: cancel, done: make(chan struct{})}
	a.find = f
	send := a.opResponder(m)
	rsp := func(st Status, comment string, data []byte) error { return send(st, comment, nil, data) }
	go func() {
		defer close(f.done)
		defer cancel()
		start := time.Now()
		matches := 0
		err := a.srv.cfg.Find.Find(ctx, req, func(id []byte) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			matches++
			return rsp(StatusPending, "", id)
		})
		st, comment := StatusSuccess, ""
		var se *StatusError
		switch {
		case err == nil:
		case ctx.Err() != nil:
			st = StatusCancel
		case errors.As(err, &se):
			st, comment = se.Status, se.Comment
		default:
			st, comment = StatusUnableToProcess, "query failed"
		}
		a.srv.m.requests.WithLabelValues("C-FIND", statusLabel(st), a.callingLabel()).Inc()
		f.final.Store(true)
		if werr := rsp(st, comment, nil); werr != nil && !errors.Is(werr, ErrAssociationGone) {
			a.log.Warn("C-FIND: final response not sent", "err", werr)
		}
		level := a.log.Info
		if st.Category() == "failure" {
			level = a.log.Warn
		}
		level("C-FIND answered", "model", req.SOPClassUID, "matches", matches, "status", st, "duration", time.Since(start).Round(time.Millisecond), "err", err)
	}()
}

// opResponder writes the responses of the query or retrieval m from the
// goroutine that answers it: its status, an error comment for a failure,
// the sub-operation counts when p is not nil, and a data set when data is
// not nil.
func (a *assoc) opResponder(m *message) func(st Status, comment string, p *Progress, data []byte) error {
	ctxID, peerMax := m.ctx.id, a.peerMax
	class, msgID := m.cmd.AffectedSOPClassUID, m.cmd.MessageID
	field := CommandField(uint16(m.cmd.CommandField) | responseBit)
	return func(st Status, comment string, p *Progress, data []byte) error {
		c := &Command{
			AffectedSOPClassUID: class, CommandField: field, MessageIDBeingRespondedTo: msgID,
			CommandDataSetType: NoDataSet, Status: st,
			Has: HasAffectedSOPClassUID | HasMessageIDBeingRespondedTo | HasStatus,
		}
		if p != nil {
			c.Remaining, c.Completed, c.Failed, c.Warning = clampCount(p.Remaining), clampCount(p.Completed), clampCount(p.Failed), clampCount(p.Warning)
			c.Has |= HasSubOperations
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
}

// writeAsync writes b from another goroutine than the association's, while
// the association is established; a failed write closes the connection
// (perhaps half a PDU went out).
func (a *assoc) writeAsync(b []byte) error {
	rp := &a.reports
	rp.mu.Lock()
	if !rp.open {
		rp.mu.Unlock()
		return ErrAssociationGone
	}
	err := a.writeLocked(b)
	rp.mu.Unlock()
	if err != nil {
		a.conn.Close()
		return fmt.Errorf("%w: %v", ErrAssociationGone, err)
	}
	return nil
}

// cancelFind applies a C-CANCEL-RQ: it stops the query it names.
func (a *assoc) cancelFind(cmd *Command) {
	if a.findBusy() && cmd.MessageIDBeingRespondedTo == a.find.msgID {
		a.log.Info("C-FIND cancelled by the peer", "message_id", cmd.MessageIDBeingRespondedTo)
		a.find.cancel()
	}
}

// findCheck is a request arriving while a query is being answered: only
// C-CANCEL may (no asynchronous operations window is negotiated, PS3.7
// D.3.3.3).
func (a *assoc) findCheck(f CommandField) error {
	if f != CCancelRQ && a.findBusy() {
		return protoErr(pdu.AbortUnexpectedPDUParameter, "%v while C-FIND %d is being answered (no asynchronous operations were negotiated)", f, a.find.msgID)
	}
	return nil
}
