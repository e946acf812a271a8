package dimse

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/dicomgw/dicomgw/pkg/pdu"
)

// Storage Commitment Push Model (PS3.4 J): the SOP class, its well-known
// instance, the one action and the two events.
const (
	StorageCommitmentSOPClass    = "1.2.840.10008.1.20.1"
	StorageCommitmentSOPInstance = "1.2.840.10008.1.20.1.1"
	commitmentAction             = 1 // Request Storage Commitment (PS3.4 J.3.2)
)

// commitmentSyntaxes are the transfer syntaxes accepted for storage
// commitment, in our order of preference among those proposed: its data
// sets are small, and every implementation has these two.
var commitmentSyntaxes = []string{"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"} // Explicit, Implicit VR Little Endian

// DefaultMaxCommitmentRequest bounds an N-ACTION-RQ data set held in
// memory: a Referenced SOP Sequence item is about 130 bytes, so this is
// room for over 100 000 instances.
const DefaultMaxCommitmentRequest = 16 << 20

// CommitmentHandler serves Storage Commitment Push Model N-ACTION requests
// (PS3.4 J.3.2). With Config.Commitment nil, the SOP class is not accepted.
type CommitmentHandler interface {
	// RequestCommitment is called, on the association's goroutine, with
	// each N-ACTION-RQ of Action Type 1 and its whole data set. It must not
	// block: it records the request and returns. A nil error answers
	// N-ACTION-RSP Success; a *StatusError answers its status and comment
	// (any other error: Processing failure). Success promises a report:
	// the handler sends it later, with req.Reporter while the association
	// lasts, or on an association of its own.
	RequestCommitment(req *CommitmentRequest) error
}

// CommitmentRequest is one N-ACTION-RQ for storage commitment. Every string
// in it comes from the peer (AE titles have passed ValidAETitle); DataSet
// is undecoded, in TransferSyntaxUID.
type CommitmentRequest struct {
	AssociationID       string
	CallingAE, CalledAE string
	RemoteAddr          string
	TransferSyntaxUID   string
	MessageID           uint16
	DataSet             []byte
	// Reporter sends the N-EVENT-REPORT on this association, once the
	// N-ACTION-RSP has gone, for as long as the requester keeps it open.
	Reporter *Reporter
}

// ErrAssociationGone is returned by Reporter.Report when the association
// the request came on has ended (or ends before the answer comes): the
// report must go on a new association.
var ErrAssociationGone = errors.New("dimse: the requester's association has ended")

// Reporter sends N-EVENT-REPORT-RQs to the requester on the association
// its request came on (PS3.4 J.3.3: on the same association as the
// N-ACTION, or on another). It may be used from any goroutine.
type Reporter struct {
	a     *assoc
	ctxID uint8
	ts    string
	sent  chan struct{} // closed once the N-ACTION-RSP is written
}

// TransferSyntax is the transfer syntax the report's data set must be
// encoded in on this association.
func (r *Reporter) TransferSyntax() string { return r.ts }

// Report sends an N-EVENT-REPORT-RQ (Affected SOP Class and Instance: the
// storage commitment ones) with eventType and data set data, and waits for
// its response. It fails with an error wrapping ErrAssociationGone when
// the association is no longer open (or ends first), and with ctx's error
// when ctx ends first.
func (r *Reporter) Report(ctx context.Context, eventType uint16, data []byte) (Status, error) {
	a := r.a
	select {
	case <-r.sent:
	case <-a.reports.gone:
		return 0, ErrAssociationGone
	case <-ctx.Done():
		return 0, ctx.Err()
	}
	ch := make(chan *Command, 1)
	rp := &a.reports
	rp.mu.Lock()
	if !rp.open {
		rp.mu.Unlock()
		return 0, ErrAssociationGone
	}
	rp.msgID++
	if rp.msgID == 0 {
		rp.msgID = 1
	}
	id := rp.msgID
	cmd := &Command{
		AffectedSOPClassUID: StorageCommitmentSOPClass, CommandField: NEventRQ, MessageID: id,
		CommandDataSetType: 0x0000, AffectedSOPInstanceUID: StorageCommitmentSOPInstance, EventTypeID: eventType,
		Has: HasAffectedSOPClassUID | HasMessageID | HasAffectedSOPInstanceUID | HasEventTypeID,
	}
	b := fragment(nil, r.ctxID, AppendCommand(nil, cmd), a.peerMax)
	b = fragmentData(b, r.ctxID, data, a.peerMax)
	rp.waiting[id] = ch
	err := a.writeLocked(b)
	if err != nil {
		delete(rp.waiting, id)
	}
	rp.mu.Unlock()
	if err != nil {
		// Perhaps half a PDU went out: nothing more can be framed. The
		// association's reads fail now, and it ends as a lost connection.
		a.conn.Close()
		return 0, fmt.Errorf("%w: sending the report: %v", ErrAssociationGone, err)
	}
	a.log.Info("storage commitment report sent on the requester's association", "message_id", id, "event_type", eventType)
	select {
	case rsp, ok := <-ch:
		if !ok {
			return 0, fmt.Errorf("%w before the report's response", ErrAssociationGone)
		}
		return rsp.Status, nil
	case <-ctx.Done():
		rp.mu.Lock()
		delete(rp.waiting, id)
		rp.mu.Unlock()
		return 0, ctx.Err()
	}
}

// reports is an association's side of its Reporters: whether reports may
// be written, and the reports waiting for their responses. mu also orders
// every write to the connection, the association's own and the reports'.
type reports struct {
	mu      sync.Mutex
	open    bool // Sta6: P-DATA may be sent
	msgID   uint16
	waiting map[uint16]chan *Command
	gone    chan struct{} // closed when the association leaves Sta6 for good
	once    sync.Once
}

// openReports makes reports possible (the association is established).
func (a *assoc) openReports() {
	rp := &a.reports
	rp.mu.Lock()
	rp.open = true
	rp.mu.Unlock()
}

// closeReports ends reports: those waiting learn that the association is
// gone. Called by the association's goroutine when it leaves Sta6.
func (a *assoc) closeReports() {
	rp := &a.reports
	rp.mu.Lock()
	rp.open = false
	for id, ch := range rp.waiting {
		close(ch)
		delete(rp.waiting, id)
	}
	rp.mu.Unlock()
	rp.once.Do(func() { close(rp.gone) })
}

// reportAnswered hands an N-EVENT-REPORT-RSP to the report waiting for it.
func (a *assoc) reportAnswered(cmd *Command) bool {
	rp := &a.reports
	rp.mu.Lock()
	defer rp.mu.Unlock()
	ch := rp.waiting[cmd.MessageIDBeingRespondedTo]
	if ch == nil {
		return false
	}
	delete(rp.waiting, cmd.MessageIDBeingRespondedTo)
	ch <- cmd
	return true
}

// beginAction checks an N-ACTION-RQ: only storage commitment's one action
// on its well-known instance is served. Its data set is collected in
// memory, up to the configured bound.
func (a *assoc) beginAction(m *message) {
	cmd := m.cmd
	switch {
	case m.ctx.kind != kindCommitment:
		m.status, m.comment = StatusNoSuchSOPClass, "context is not for storage commitment"
	case cmd.RequestedSOPClassUID != m.ctx.abstract:
		m.status, m.comment = StatusNoSuchSOPClass, "requested SOP class differs from context abstract syntax"
	case cmd.RequestedSOPInstanceUID != StorageCommitmentSOPInstance:
		// PS3.4 J.3.2: the action is on the well-known instance.
		m.status, m.comment = StatusNoSuchSOPInstance, "requested SOP instance is not 1.2.840.10008.1.20.1.1"
	case cmd.Has&HasActionTypeID == 0 || cmd.ActionTypeID != commitmentAction:
		m.status, m.comment = StatusNoSuchAction, "action type is not 1 (request storage commitment)"
	case !cmd.HasDataSet():
		m.status, m.comment = StatusInvalidArgumentValue, "N-ACTION-RQ without its data set"
	default:
		m.collect, m.limit = true, a.srv.cfg.MaxCommitmentRequest
	}
}

// collectData keeps a fragment of an N-ACTION data set, or drops the data
// set (answering Resource limitation) once it passes the bound.
func (m *message) collectData(p []byte, limit int) {
	if !m.collect {
		return
	}
	if len(m.data)+len(p) > limit {
		m.collect, m.data = false, nil
		m.status, m.comment = StatusResourceLimitation, fmt.Sprintf("request data set longer than %d bytes", limit)
		return
	}
	m.data = append(m.data, p...)
}

// actionComplete hands a complete storage commitment request to the
// handler and answers it. A success's N-ACTION-RSP is written before the
// Reporter may send anything.
func (a *assoc) actionComplete(m *message) {
	a.stats.actions.Add(1)
	if m.collect {
		r := &Reporter{a: a, ctxID: m.ctx.id, ts: m.ctx.ts, sent: make(chan struct{})}
		req := &CommitmentRequest{
			AssociationID: a.id, CallingAE: a.calling, CalledAE: a.called, RemoteAddr: a.conn.RemoteAddr().String(),
			TransferSyntaxUID: m.ctx.ts, MessageID: m.cmd.MessageID, DataSet: m.data, Reporter: r,
		}
		m.data, m.collect = nil, false
		if err := a.srv.cfg.Commitment.RequestCommitment(req); err != nil {
			var se *StatusError
			if errors.As(err, &se) {
				m.status, m.comment = se.Status, se.Comment
			} else {
				m.status, m.comment = StatusProcessingFailure, "storage commitment request failed"
			}
			m.err = err
		} else {
			m.status, m.comment = StatusSuccess, ""
			m.afterSent = func() { close(r.sent) }
		}
	}
	if m.status != StatusSuccess {
		a.log.Warn("storage commitment request refused", "status", m.status, "comment", m.comment, "err", m.err)
	}
	a.respond(m, NActionRSP, m.status, m.comment)
}

// responseComplete takes a response from the peer: an N-EVENT-REPORT-RSP
// to one of our reports, or a C-STORE-RSP to a C-GET's sub-operation.
func (a *assoc) responseComplete(m *message) error {
	f := m.cmd.CommandField
	if f != NEventRSP && !(f == CStoreRSP && a.srv.cfg.Move != nil) {
		return protoErr(pdu.AbortUnexpectedPDUParameter, "%v is not a response to anything we sent", f)
	}
	if m.cmd.Has&HasMessageIDBeingRespondedTo == 0 {
		return protoErr(pdu.AbortInvalidPDUParameterValue, "%v without message ID being responded to (0000,0120)", f)
	}
	if !a.reportAnswered(m.cmd) {
		a.log.Warn("a response to no request of ours waiting; ignored", "command", f, "message_id_responded_to", m.cmd.MessageIDBeingRespondedTo)
	}
	return nil
}
