package dimse

import (
	"errors"
	"fmt"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// message is the DIMSE message being received: its command fragments, then
// (if it has one) its data set, all on one presentation context (PS3.7
// 6.3.1, PS3.8 E.2).
type message struct {
	ctx     *presContext
	cmdBuf  []byte
	cmd     *Command
	started time.Time
	bytes   int64

	// Data set stage. w is nil when the data set is being dropped; the
	// answer is then status/comment.
	w       StoreWriter
	req     *StoreRequest
	status  Status
	comment string
	err     error

	// nonconforming are the UIDs of the message that break PS3.5 9.1 but
	// pass the UID policy, counted once the object is stored.
	nonconforming []uid.Finding

	// N-ACTION: the data set is collected in memory (collect), and
	// afterSent runs once the response is written.
	collect   bool
	limit     int // bound on data
	data      []byte
	afterSent func()
	// A response from the peer (to one of our reports): nothing to answer.
	isResponse bool
}

// protocolError is a DIMSE-level violation found in a P-DATA-TF: the
// association is aborted (Evt19 from the DT-2 indication) with reason.
type protocolError struct {
	reason pdu.AbortReason
	msg    string
}

func (e *protocolError) Error() string { return e.msg }

func protoErr(reason pdu.AbortReason, format string, args ...any) *protocolError {
	return &protocolError{reason: reason, msg: fmt.Sprintf(format, args...)}
}

// pDataIndication is DT-2: hand each PDV to the message being assembled.
// A violation raises Evt19; a completed message may raise Evt9 to send its
// response.
func (a *assoc) pDataIndication(p *pdu.PDataTF) {
	for _, v := range p.PDVs {
		if err := a.pdv(v); err != nil {
			var pe *protocolError
			if errors.As(err, &pe) {
				a.raise(Evt19, evInfo{err: pe, reason: pe.reason})
			} else {
				a.raise(Evt19, evInfo{err: err, reason: pdu.AbortNotSpecified})
			}
			return
		}
	}
}

func (a *assoc) pdv(v pdu.PDV) error {
	pc := a.ctxs[v.ContextID]
	switch {
	case pc == nil:
		return protoErr(pdu.AbortInvalidPDUParameterValue, "PDV on presentation context %d, which was not proposed", v.ContextID)
	case pc.result != pdu.ContextAcceptance:
		return protoErr(pdu.AbortInvalidPDUParameterValue, "PDV on presentation context %d, which was rejected (%v)", v.ContextID, pc.result)
	}
	m := a.msg
	if m != nil && m.ctx != pc {
		// PS3.8 E.2 / PS3.7 6.3.1: all fragments of a message travel on one
		// presentation context.
		return protoErr(pdu.AbortUnexpectedPDUParameter, "PDV on presentation context %d in the middle of a message on context %d", v.ContextID, m.ctx.id)
	}
	if v.Command {
		if m != nil && m.cmd != nil {
			return protoErr(pdu.AbortUnexpectedPDUParameter, "command fragment while the data set of %v is expected", m.cmd.CommandField)
		}
		if m == nil {
			m = &message{ctx: pc, started: time.Now()}
			a.msg = m
		}
		if len(m.cmdBuf)+len(v.Data) > MaxCommandLength {
			return protoErr(pdu.AbortInvalidPDUParameterValue, "command set longer than %d bytes", MaxCommandLength)
		}
		m.cmdBuf = append(m.cmdBuf, v.Data...)
		if v.Last {
			return a.commandComplete(m)
		}
		return nil
	}
	if m == nil || m.cmd == nil {
		return protoErr(pdu.AbortUnexpectedPDUParameter, "data set fragment before its command")
	}
	m.bytes += int64(len(v.Data))
	a.stats.bytes.Add(int64(len(v.Data)))
	a.srv.m.bytes.Add(float64(len(v.Data)))
	if m.w != nil {
		if _, err := m.w.Write(v.Data); err != nil {
			m.w.Abort()
			m.w = nil
			m.fail(err)
		}
	} else if m.collect {
		m.collectData(v.Data, m.limit)
	}
	if v.Last {
		a.dataSetComplete(m)
	}
	return nil
}

func (m *message) fail(err error) {
	m.status, m.comment = statusOf(err)
	m.err = err
}

// commandComplete decodes the command and starts serving it.
func (a *assoc) commandComplete(m *message) error {
	cmd, err := DecodeCommand(m.cmdBuf)
	if err != nil {
		return protoErr(pdu.AbortInvalidPDUParameterValue, "%v", err)
	}
	m.cmd, m.cmdBuf = cmd, nil
	f := cmd.CommandField
	if f&responseBit != 0 && (a.srv.cfg.Commitment != nil || a.srv.cfg.Move != nil) {
		// A response to a request of ours: the only requests we send on an
		// association we accepted are storage commitment reports and a
		// C-GET's C-STOREs.
		m.isResponse = true
		if err := a.responseComplete(m); err != nil {
			return err
		}
		if !cmd.HasDataSet() {
			a.msg = nil
		}
		return nil
	}
	if !f.IsRequest() && f != CCancelRQ {
		return protoErr(pdu.AbortUnexpectedPDUParameter, "%v is not a request an SCP can receive", f)
	}
	if err := a.opCheck(f); err != nil {
		return err
	}
	if f != CCancelRQ && cmd.Has&HasMessageID == 0 {
		return protoErr(pdu.AbortInvalidPDUParameterValue, "%v without a message ID (0000,0110)", f)
	}
	switch f {
	case CEchoRQ:
		// PS3.7 9.3.5: C-ECHO has no data set.
		if cmd.HasDataSet() {
			return protoErr(pdu.AbortUnexpectedPDUParameter, "C-ECHO-RQ announces a data set")
		}
		a.msg = nil
		a.stats.echoes.Add(1)
		a.respond(m, CEchoRSP, StatusSuccess, "")
		return nil
	case CStoreRQ:
		a.beginStore(m)
	case NActionRQ:
		a.beginAction(m)
	case CFindRQ:
		if a.srv.cfg.Find == nil {
			m.status, m.comment = StatusUnrecognizedOperation, fmt.Sprintf("%v is not supported", f)
			break
		}
		a.beginFind(m)
	case CMoveRQ, CGetRQ:
		if a.srv.cfg.Move == nil {
			m.status, m.comment = StatusUnrecognizedOperation, fmt.Sprintf("%v is not supported", f)
			break
		}
		a.beginMove(m)
	case CCancelRQ:
		a.cancelOp(cmd)
		// Nothing of ours can be cancelled: C-STORE has no pending state.
		// C-CANCEL has no response (PS3.7 9.3.2.3).
		if cmd.HasDataSet() {
			return protoErr(pdu.AbortUnexpectedPDUParameter, "C-CANCEL-RQ announces a data set")
		}
		a.msg = nil
		return nil
	default:
		// PS3.7 C.5.19: a request for a service we do not provide.
		m.status, m.comment = StatusUnrecognizedOperation, fmt.Sprintf("%v is not supported", f)
	}
	if !cmd.HasDataSet() {
		a.dataSetComplete(m)
	}
	return nil
}

// beginStore checks a C-STORE-RQ and, when it is acceptable, asks the
// handler for a writer. A refused store still has its data set read (and
// dropped) before the answer: the peer sends it regardless.
func (a *assoc) beginStore(m *message) {
	cmd := m.cmd
	a.stats.stores.Add(1)
	switch {
	case !cmd.HasDataSet():
		m.status, m.comment = StatusCannotUnderstand, "C-STORE-RQ without a data set"
		return
	case m.ctx.kind != kindStorage:
		m.status, m.comment = StatusSOPClassNotSupported, "context is not for storage"
		return
	case cmd.AffectedSOPClassUID != m.ctx.abstract:
		// PS3.7 9.1.1.1.1 and PS3.8 7.1.1.13: the affected SOP class is the
		// abstract syntax of the context the message travels on.
		m.status, m.comment = StatusSOPClassNotSupported, "SOP class differs from context abstract syntax"
		return
	}
	// PS3.4 B.2.3: C000 for a UID the policy refuses. The affected SOP
	// class passed negotiation (uid.Valid), so only a leading zero can
	// make it non-conforming.
	for _, u := range []struct {
		attr uid.Attribute
		name string
		v    string
	}{
		{uid.SOPClassUID, "affected SOP class UID", cmd.AffectedSOPClassUID},
		{uid.SOPInstanceUID, "affected SOP instance UID", cmd.AffectedSOPInstanceUID},
	} {
		p := uid.Check(u.v)
		if !a.srv.cfg.UIDPolicy.Accepts(p) {
			m.status, m.comment = StatusCannotUnderstand, u.name+" "+p.String()
			m.err = fmt.Errorf("%s %.64q %v (UID policy %v)", u.name, u.v, p, a.srv.cfg.UIDPolicy)
			return
		}
		if p != uid.NoProblem {
			m.nonconforming = append(m.nonconforming, uid.Finding{Attribute: u.attr, Problem: p})
		}
	}
	m.req = &StoreRequest{
		AssociationID:           a.id,
		CallingAE:               a.calling,
		CalledAE:                a.called,
		RemoteAddr:              a.conn.RemoteAddr().String(),
		SOPClassUID:             cmd.AffectedSOPClassUID,
		SOPInstanceUID:          cmd.AffectedSOPInstanceUID,
		TransferSyntaxUID:       m.ctx.ts,
		MessageID:               cmd.MessageID,
		Priority:                cmd.Priority,
		MoveOriginatorAE:        cmd.MoveOriginatorAE,
		MoveOriginatorMessageID: cmd.MoveOriginatorMessageID,
	}
	if cmd.MoveOriginatorAE != "" && ValidAETitle(cmd.MoveOriginatorAE) != nil {
		m.req.MoveOriginatorAE = ""
	}
	w, err := a.srv.handler.BeginStore(m.req)
	if err != nil {
		m.fail(err)
		return
	}
	m.w = w
}

// dataSetComplete finishes a message once its last fragment is in: a store
// is committed (made durable) before it is answered.
func (a *assoc) dataSetComplete(m *message) {
	a.msg = nil
	if m.isResponse {
		return // its data set (an event reply) is not used
	}
	switch m.cmd.CommandField {
	case NActionRQ:
		a.actionComplete(m)
		return
	case CFindRQ:
		if a.srv.cfg.Find != nil {
			a.startFind(m)
			return
		}
	case CMoveRQ, CGetRQ:
		if a.srv.cfg.Move != nil {
			a.startMove(m)
			return
		}
	}
	rsp := CommandField(uint16(m.cmd.CommandField) | responseBit)
	if m.cmd.CommandField != CStoreRQ {
		a.respond(m, rsp, m.status, m.comment)
		return
	}
	if m.w != nil {
		if c, err := m.w.Commit(); err != nil {
			m.fail(err)
		} else {
			m.status, m.comment = StatusSuccess, ""
			m.nonconforming = append(m.nonconforming, c.Nonconforming...)
		}
		m.w = nil
	}
	if m.status != StatusSuccess {
		a.stats.failed.Add(1)
		a.log.Warn("C-STORE failed", "sop_class", m.cmd.AffectedSOPClassUID, "sop_instance", m.cmd.AffectedSOPInstanceUID,
			"status", m.status, "comment", m.comment, "err", m.err, "bytes", m.bytes)
	} else {
		a.srv.m.storeDur.WithLabelValues(a.callingLabel()).Observe(time.Since(m.started).Seconds())
		a.countNonconforming(m)
		a.log.Debug("C-STORE stored", "sop_class", m.cmd.AffectedSOPClassUID, "sop_instance", m.cmd.AffectedSOPInstanceUID,
			"bytes", m.bytes, "duration", time.Since(m.started))
	}
	a.respond(m, rsp, m.status, m.comment)
}

// dropMessage abandons a message cut short: whatever the handler holds of
// it is discarded.
func (a *assoc) dropMessage(why string) {
	m := a.msg
	a.msg = nil
	if m == nil {
		return
	}
	if m.w != nil {
		m.w.Abort()
		m.w = nil
	}
	if m.cmd != nil && m.cmd.CommandField == CStoreRQ {
		a.stats.failed.Add(1)
		a.log.Warn("C-STORE abandoned", "why", why, "sop_instance", m.cmd.AffectedSOPInstanceUID, "bytes", m.bytes)
	}
}

// respond sends the response command for m, fragmented to the peer's
// maximum length, all of it in one write (Evt9 -> DT-1).
func (a *assoc) respond(m *message, field CommandField, st Status, comment string) {
	rsp := &Command{
		CommandField:              field,
		MessageIDBeingRespondedTo: m.cmd.MessageID,
		CommandDataSetType:        NoDataSet,
		Status:                    st,
		Has:                       HasMessageIDBeingRespondedTo | HasStatus,
	}
	if m.cmd.Has&HasAffectedSOPClassUID != 0 {
		rsp.AffectedSOPClassUID, rsp.Has = m.cmd.AffectedSOPClassUID, rsp.Has|HasAffectedSOPClassUID
	}
	if field == CStoreRSP && m.cmd.Has&HasAffectedSOPInstanceUID != 0 {
		rsp.AffectedSOPInstanceUID, rsp.Has = m.cmd.AffectedSOPInstanceUID, rsp.Has|HasAffectedSOPInstanceUID
	}
	if field == NActionRSP {
		// PS3.7 10.1.4.1: the response names, as affected, the SOP class
		// and instance the request named as requested.
		if m.cmd.Has&HasRequestedSOPClassUID != 0 {
			rsp.AffectedSOPClassUID, rsp.Has = m.cmd.RequestedSOPClassUID, rsp.Has|HasAffectedSOPClassUID
		}
		if m.cmd.Has&HasRequestedSOPInstanceUID != 0 {
			rsp.AffectedSOPInstanceUID, rsp.Has = m.cmd.RequestedSOPInstanceUID, rsp.Has|HasAffectedSOPInstanceUID
		}
		if st == StatusSuccess && m.cmd.Has&HasActionTypeID != 0 {
			rsp.ActionTypeID, rsp.Has = m.cmd.ActionTypeID, rsp.Has|HasActionTypeID
		}
	}
	if comment != "" && st != StatusSuccess {
		rsp.ErrorComment, rsp.Has = errorComment(comment), rsp.Has|HasErrorComment
	}
	a.srv.m.requests.WithLabelValues(commandLabel(m.cmd.CommandField), statusLabel(st), a.callingLabel()).Inc()
	cmd := AppendCommand(nil, rsp)
	// A fresh buffer: one PDU can complete several messages, each response
	// waiting in the pending queue until DT-1 sends it.
	a.raise(Evt9, evInfo{raw: fragment(nil, m.ctx.id, cmd, a.peerMax), after: m.afterSent})
}

// fragment appends cmd as command PDVs in P-DATA-TF PDUs (PS3.8 D.1),
// one PDV per PDU, each PDU no longer than max (0 = no limit).
func fragment(b []byte, ctxID uint8, cmd []byte, max uint32) []byte {
	return appendPDVs(b, ctxID, true, cmd, max)
}

// fragmentData appends a data set as data set PDVs, the same way.
func fragmentData(b []byte, ctxID uint8, data []byte, max uint32) []byte {
	return appendPDVs(b, ctxID, false, data, max)
}

// appendPDVs cuts v into PDVs of dataChunk(max) bytes at most (even but
// the last), one per P-DATA-TF PDU; an empty v is one empty last PDV.
func appendPDVs(b []byte, ctxID uint8, command bool, v []byte, max uint32) []byte {
	chunk := dataChunk(max)
	for first := true; first || len(v) > 0; first = false {
		n := min(chunk, len(v))
		b = pdu.AppendPDataHeader(b, uint32(pdu.PDVHeaderLen+n))
		b = pdu.AppendPDV(b, ctxID, command, n == len(v), v[:n])
		v = v[n:]
	}
	return b
}

// countNonconforming counts the non-conforming UIDs of a stored object and
// logs the first object that has any, once per association: a sender that
// uses hexadecimal UIDs uses them for every object. The line names the
// attributes and what is wrong with them; of the values, only the SOP
// instance UID's, which passed the policy (so it is 1 to 64 bytes of
// [0-9A-Za-z._-]), and the association end line says how many objects had
// such UIDs.
func (a *assoc) countNonconforming(m *message) {
	if len(m.nonconforming) == 0 {
		return
	}
	for _, f := range m.nonconforming {
		a.srv.m.nonconforming.WithLabelValues(f.Attribute.Label()).Inc()
	}
	if a.stats.nonconforming.Add(1) > 1 {
		return
	}
	attrs := []any{"policy", a.srv.cfg.UIDPolicy.String(), "sop_instance", m.cmd.AffectedSOPInstanceUID}
	for _, f := range m.nonconforming {
		attrs = append(attrs, f.Attribute.Label(), f.Problem.String())
	}
	a.log.Warn("accepted UIDs that break PS3.5 9.1; later objects of this association are counted, not logged", attrs...)
}
