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

// runningOp is the query or retrieval an association is answering.
type runningOp struct {
	msgID  uint16
	cancel context.CancelFunc
	done   chan struct{}
	// final is set before the final response is written: the peer may
	// send its next request as soon as it reads it.
	final atomic.Bool
}

// busy tells whether a query is still being answered.
func (a *assoc) opBusy() bool {
	if a.op == nil {
		return false
	}
	if a.op.final.Load() {
		<-a.op.done // the final response is written, or being written
		a.op = nil
		return false
	}
	select {
	case <-a.op.done:
		a.op = nil
		return false
	default:
		return true
	}
}

// stopOp cancels the query being answered, if any, and waits for it:
// nothing of it is written after this returns.
func (a *assoc) stopOp() {
	if a.op != nil {
		a.op.cancel()
		<-a.op.done
		a.op = nil
	}
}

// beginOp checks what every query and retrieval request needs (a context
// of kind want, its SOP class, an identifier) and collects the identifier;
// notFor and noIdentifier are the refusals' error comments.
func (a *assoc) beginOp(m *message, want contextKind, notFor, noIdentifier string) {
	cmd := m.cmd
	switch {
	case m.ctx.kind != want:
		m.status, m.comment = StatusSOPClassNotSupported, notFor
	case cmd.AffectedSOPClassUID != m.ctx.abstract:
		m.status, m.comment = StatusSOPClassNotSupported, "SOP class differs from context abstract syntax"
	case !cmd.HasDataSet():
		m.status, m.comment = StatusIdentifierMismatch, noIdentifier
	default:
		m.collect, m.limit = true, a.srv.cfg.MaxFindIdentifier
	}
}

// beginFind checks a C-FIND-RQ and collects its identifier.
func (a *assoc) beginFind(m *message) {
	a.beginOp(m, kindFind, "context is not for query", "C-FIND-RQ without an identifier")
}

// opRequest is what a query or retrieval handler is told of m; the
// identifier moves into it.
func (a *assoc) opRequest(m *message) FindRequest {
	r := FindRequest{
		AssociationID: a.id, CallingAE: a.calling, CalledAE: a.called, RemoteAddr: a.conn.RemoteAddr().String(),
		SOPClassUID: m.cmd.AffectedSOPClassUID, TransferSyntaxUID: m.ctx.ts, MessageID: m.cmd.MessageID,
		Priority: m.cmd.Priority, Identifier: m.data,
	}
	m.data, m.collect = nil, false
	return r
}

// opResult is how a query or retrieval ended: its final status (0: from
// err), the counts and data set of the final response, and what the log
// line adds.
type opResult struct {
	status Status
	p      *Progress
	data   []byte
	err    error
	attrs  []any
}

// startOp answers a complete query or retrieval request (label names it in
// metrics and logs, what in an error comment) on its own goroutine, which writes the pending responses (run sends them with
// send) and the final one: the association goes on reading (a C-CANCEL may
// come).
func (a *assoc) startOp(m *message, label, what string, run func(ctx context.Context, send responder) opResult) {
	ctx, cancel := context.WithCancel(context.Background())
	op := &runningOp{msgID: m.cmd.MessageID, cancel: cancel, done: make(chan struct{})}
	a.op = op
	send := a.opResponder(m)
	class := m.cmd.AffectedSOPClassUID
	go func() {
		defer close(op.done)
		defer cancel()
		start := time.Now()
		r := run(ctx, func(st Status, comment string, p *Progress, data []byte) error {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return send(st, comment, p, data)
		})
		st, comment := r.status, ""
		var se *StatusError
		switch {
		case r.err == nil:
		case ctx.Err() != nil:
			st = StatusCancel
		case errors.As(r.err, &se):
			st, comment = se.Status, se.Comment
		default:
			st, comment = StatusUnableToProcess, what+" failed"
		}
		if r.p != nil && st != StatusCancel {
			r.p.Remaining = 0 // only a cancelled retrieval's final response says what was left
		}
		a.srv.m.requests.WithLabelValues(label, statusLabel(st), a.callingLabel()).Inc()
		op.final.Store(true)
		if werr := send(st, comment, r.p, r.data); werr != nil && !errors.Is(werr, ErrAssociationGone) {
			a.log.Warn(label+": final response not sent", "err", werr)
		}
		level := a.log.Info
		if st.Category() == "failure" {
			level = a.log.Warn
		}
		level(label+" answered", append([]any{"model", class, "status", st, "duration", time.Since(start).Round(time.Millisecond), "err", r.err}, r.attrs...)...)
	}()
}

// opRefused answers at once a query or retrieval request its checks
// refused (its identifier was not collected).
func (a *assoc) opRefused(m *message) bool {
	if m.collect {
		return false
	}
	if m.status == 0 {
		m.status = StatusUnableToProcess
	}
	a.respond(m, CommandField(uint16(m.cmd.CommandField)|responseBit), m.status, m.comment)
	return true
}

// responder writes one response of a query or retrieval.
type responder func(st Status, comment string, p *Progress, data []byte) error

// startFind runs the query of a complete C-FIND-RQ.
func (a *assoc) startFind(m *message) {
	a.stats.finds.Add(1)
	if a.opRefused(m) {
		return
	}
	req := a.opRequest(m)
	a.startOp(m, "C-FIND", "query", func(ctx context.Context, send responder) opResult {
		matches := 0
		err := a.srv.cfg.Find.Find(ctx, &req, func(id []byte) error {
			matches++
			return send(StatusPending, "", nil, id)
		})
		return opResult{status: StatusSuccess, err: err, attrs: []any{"matches", matches}}
	})
}

// opResponder writes the responses of the query or retrieval m from the
// goroutine that answers it: its status, an error comment for a failure,
// the sub-operation counts when p is not nil, and a data set when data is
// not nil.
func (a *assoc) opResponder(m *message) responder {
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

// cancelOp applies a C-CANCEL-RQ: it stops the query it names.
func (a *assoc) cancelOp(cmd *Command) {
	if a.opBusy() && cmd.MessageIDBeingRespondedTo == a.op.msgID {
		a.log.Info("C-FIND cancelled by the peer", "message_id", cmd.MessageIDBeingRespondedTo)
		a.op.cancel()
	}
}

// opCheck is a request arriving while a query is being answered: only
// C-CANCEL may (no asynchronous operations window is negotiated, PS3.7
// D.3.3.3).
func (a *assoc) opCheck(f CommandField) error {
	if f != CCancelRQ && a.opBusy() {
		return protoErr(pdu.AbortUnexpectedPDUParameter, "%v while C-FIND %d is being answered (no asynchronous operations were negotiated)", f, a.op.msgID)
	}
	return nil
}
