package dimse

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// commitHandler records storage commitment requests; answer, if set,
// decides the N-ACTION-RSP; each request goes to reqs.
type commitHandler struct {
	mu     sync.Mutex
	answer error
	reqs   chan *CommitmentRequest
}

func newCommitHandler() *commitHandler { return &commitHandler{reqs: make(chan *CommitmentRequest, 8)} }

func (h *commitHandler) RequestCommitment(req *CommitmentRequest) error {
	h.mu.Lock()
	err := h.answer
	h.mu.Unlock()
	if err == nil {
		h.reqs <- req
	}
	return err
}

func (h *commitHandler) next(t *testing.T) *CommitmentRequest {
	t.Helper()
	select {
	case r := <-h.reqs:
		return r
	case <-time.After(5 * time.Second):
		t.Fatal("no storage commitment request reached the handler")
		return nil
	}
}

var pcCommit = pdu.PresentationContextRQ{ID: 5, AbstractSyntax: StorageCommitmentSOPClass,
	TransferSyntaxes: []string{uid.ImplicitVRLittleEndian, uid.ExplicitVRLittleEndian}}

func actionRQ(id uint16) *Command {
	return &Command{RequestedSOPClassUID: StorageCommitmentSOPClass, CommandField: NActionRQ, MessageID: id, CommandDataSetType: 0,
		RequestedSOPInstanceUID: StorageCommitmentSOPInstance, ActionTypeID: 1,
		Has: HasRequestedSOPClassUID | HasMessageID | HasRequestedSOPInstanceUID | HasActionTypeID}
}

// message reads P-DATA-TF PDUs until a whole command and, if it announces
// one, its whole data set have arrived.
func (r *raw) message() (*Command, []byte) {
	r.t.Helper()
	var cbuf, data []byte
	var cmd *Command
	for {
		p, err := r.recv()
		if err != nil {
			r.t.Fatalf("waiting for a message: %v", err)
		}
		pd, ok := p.(*pdu.PDataTF)
		if !ok {
			r.t.Fatalf("got %v, want P-DATA-TF", p.Type())
		}
		for _, v := range pd.PDVs {
			if v.Command {
				cbuf = append(cbuf, v.Data...)
				if v.Last {
					if cmd, err = DecodeCommand(cbuf); err != nil {
						r.t.Fatal(err)
					}
					if !cmd.HasDataSet() {
						return cmd, nil
					}
				}
				continue
			}
			data = append(data, v.Data...)
			if v.Last {
				return cmd, data
			}
		}
	}
}

func (r *raw) commitAssociation(t *testing.T) {
	t.Helper()
	ac := r.associate(rqFor(pcEcho, pcCommit))
	for _, pc := range ac.PresentationContexts {
		if pc.ID == pcCommit.ID && (pc.Result != pdu.ContextAcceptance || pc.TransferSyntax != uid.ExplicitVRLittleEndian) {
			t.Fatalf("storage commitment context: %v %s, want accepted with Explicit VR Little Endian", pc.Result, pc.TransferSyntax)
		}
	}
}

// TestCommitmentSameAssociation: PS3.4 J.3.2/J.3.3 on one association.
// The N-ACTION-RSP names the affected class and instance and the action
// type (PS3.7 10.1.4.1); the report goes on the same association only
// after it, even when the handler sends it at once; its response reaches
// the Reporter.
func TestCommitmentSameAssociation(t *testing.T) {
	h := newCommitHandler()
	_, addr := startServer(t, Config{Commitment: h}, newMemStore())
	r := dialRaw(t, addr)
	r.commitAssociation(t)
	payload := bytes.Repeat([]byte{0x08, 0x00}, 40000) // several PDVs at 16 KiB
	r.send(pdata(cmdPDV(pcCommit.ID, actionRQ(9))))
	for off := 0; off < len(payload); off += 8000 {
		r.send(pdata(pdu.PDV{ContextID: pcCommit.ID, Last: off+8000 >= len(payload), Data: payload[off:min(off+8000, len(payload))]}))
	}
	req := h.next(t)
	if !bytes.Equal(req.DataSet, payload) || req.CallingAE != "RAWSCU" || req.CalledAE != "DICOMGW" ||
		req.TransferSyntaxUID != uid.ExplicitVRLittleEndian || req.MessageID != 9 {
		t.Fatalf("request: %d bytes, calling %q called %q ts %s id %d", len(req.DataSet), req.CallingAE, req.CalledAE, req.TransferSyntaxUID, req.MessageID)
	}
	type answer struct {
		st  Status
		err error
	}
	got := make(chan answer, 1)
	report := []byte{0x08, 0x00, 0x95, 0x11, 0x02, 0x00, 0x00, 0x00, '1', 0}
	go func() {
		st, err := req.Reporter.Report(context.Background(), 1, report)
		got <- answer{st, err}
	}()
	rsp, _ := r.message()
	if rsp.CommandField != NActionRSP || rsp.Status != StatusSuccess || rsp.MessageIDBeingRespondedTo != 9 ||
		rsp.AffectedSOPClassUID != StorageCommitmentSOPClass || rsp.AffectedSOPInstanceUID != StorageCommitmentSOPInstance ||
		rsp.Has&HasActionTypeID == 0 || rsp.ActionTypeID != 1 {
		t.Fatalf("first message: %+v, want the N-ACTION-RSP", rsp)
	}
	ev, data := r.message()
	if ev.CommandField != NEventRQ || ev.EventTypeID != 1 || ev.AffectedSOPClassUID != StorageCommitmentSOPClass ||
		ev.AffectedSOPInstanceUID != StorageCommitmentSOPInstance || !bytes.Equal(data, report) {
		t.Fatalf("second message: %+v data %x, want the N-EVENT-REPORT-RQ", ev, data)
	}
	r.send(pdata(cmdPDV(pcCommit.ID, &Command{CommandField: NEventRSP, MessageIDBeingRespondedTo: ev.MessageID,
		CommandDataSetType: NoDataSet, Status: StatusSuccess, AffectedSOPClassUID: StorageCommitmentSOPClass,
		Has: HasMessageIDBeingRespondedTo | HasStatus | HasAffectedSOPClassUID})))
	select {
	case a := <-got:
		if a.err != nil || a.st != StatusSuccess {
			t.Fatalf("Report: %v %v", a.st, a.err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Report did not return after the response")
	}
	// The association still serves other requests.
	r.send(pdata(cmdPDV(1, echoRQ(10))))
	if c := r.response(); c.CommandField != CEchoRSP || c.Status != StatusSuccess {
		t.Fatalf("echo after the report: %+v", c)
	}
	r.send(&pdu.ReleaseRQ{})
	if _, err := r.recv(); err != nil {
		t.Fatal(err)
	}
	// Released: a later report must go elsewhere.
	if _, err := req.Reporter.Report(context.Background(), 1, report); !errors.Is(err, ErrAssociationGone) {
		t.Fatalf("Report after release: %v, want ErrAssociationGone", err)
	}
}

// TestCommitmentReportAssociationEnds: a report waiting for its response
// learns that the association ended.
func TestCommitmentReportAssociationEnds(t *testing.T) {
	h := newCommitHandler()
	_, addr := startServer(t, Config{Commitment: h}, newMemStore())
	r := dialRaw(t, addr)
	r.commitAssociation(t)
	r.send(pdata(cmdPDV(pcCommit.ID, actionRQ(1)), pdu.PDV{ContextID: pcCommit.ID, Last: true, Data: []byte{1, 2}}))
	req := h.next(t)
	errc := make(chan error, 1)
	go func() {
		_, err := req.Reporter.Report(context.Background(), 2, []byte{1, 2})
		errc <- err
	}()
	r.message() // N-ACTION-RSP
	r.message() // N-EVENT-REPORT-RQ, never answered
	r.send(&pdu.Abort{Source: pdu.AbortSourceUser})
	select {
	case err := <-errc:
		if !errors.Is(err, ErrAssociationGone) {
			t.Fatalf("Report: %v, want ErrAssociationGone", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Report still waiting after the association ended")
	}
}

// TestCommitmentRefusals: each malformed N-ACTION gets its PS3.7
// 10.1.4.1.10 status, the handler's refusal its status and comment, and the
// association goes on.
func TestCommitmentRefusals(t *testing.T) {
	h := newCommitHandler()
	_, addr := startServer(t, Config{Commitment: h, MaxCommitmentRequest: 100}, newMemStore())
	r := dialRaw(t, addr)
	r.commitAssociation(t)
	data := pdu.PDV{ContextID: pcCommit.ID, Last: true, Data: []byte{1, 2}}
	cases := []struct {
		name    string
		edit    func(c *Command)
		data    []pdu.PDV
		refuse  error
		want    Status
		comment string
	}{
		{"action type 2", func(c *Command) { c.ActionTypeID = 2 }, []pdu.PDV{data}, nil, StatusNoSuchAction, ""},
		{"no action type", func(c *Command) { c.Has &^= HasActionTypeID }, []pdu.PDV{data}, nil, StatusNoSuchAction, ""},
		{"other instance", func(c *Command) { c.RequestedSOPInstanceUID = "1.2.3" }, []pdu.PDV{data}, nil, StatusNoSuchSOPInstance, ""},
		{"other class", func(c *Command) { c.RequestedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2" }, []pdu.PDV{data}, nil, StatusNoSuchSOPClass, ""},
		{"no data set", func(c *Command) { c.CommandDataSetType = NoDataSet }, nil, nil, StatusInvalidArgumentValue, ""},
		{"too long", nil, []pdu.PDV{{ContextID: pcCommit.ID, Data: make([]byte, 80)}, {ContextID: pcCommit.ID, Last: true, Data: make([]byte, 80)}},
			nil, StatusResourceLimitation, ""},
		{"handler refuses", nil, []pdu.PDV{data}, &StatusError{Status: StatusNotAuthorized, Comment: "no --remote-ae for RAWSCU"},
			StatusNotAuthorized, "no --remote-ae for RAWSCU"},
		{"handler fails", nil, []pdu.PDV{data}, errors.New("disk on fire"), StatusProcessingFailure, ""},
	}
	for i, c := range cases {
		h.mu.Lock()
		h.answer = c.refuse
		h.mu.Unlock()
		cmd := actionRQ(uint16(100 + i))
		if c.edit != nil {
			c.edit(cmd)
		}
		r.send(pdata(append([]pdu.PDV{cmdPDV(pcCommit.ID, cmd)}, c.data...)...))
		rsp, _ := r.message()
		if rsp.CommandField != NActionRSP || rsp.Status != c.want || rsp.MessageIDBeingRespondedTo != cmd.MessageID {
			t.Errorf("%s: %v %v to %d, want N-ACTION-RSP %v", c.name, rsp.CommandField, rsp.Status, rsp.MessageIDBeingRespondedTo, c.want)
		}
		if c.comment != "" && rsp.ErrorComment != c.comment {
			t.Errorf("%s: comment %q, want %q", c.name, rsp.ErrorComment, c.comment)
		}
		if rsp.Has&HasActionTypeID != 0 {
			t.Errorf("%s: a failure carries an action type", c.name)
		}
	}
	select {
	case req := <-h.reqs:
		t.Fatalf("a refused request reached the handler: %+v", req)
	default:
	}
	r.send(pdata(cmdPDV(1, echoRQ(1))))
	if c := r.response(); c.Status != StatusSuccess {
		t.Fatalf("echo after the refusals: %+v", c)
	}
}

// TestCommitmentOff: without a handler the SOP class is not accepted, and
// a stray N-EVENT-REPORT-RSP is a protocol error as before.
func TestCommitmentOff(t *testing.T) {
	_, addr := startServer(t, Config{}, newMemStore())
	r := dialRaw(t, addr)
	ac := r.associate(rqFor(pcEcho, pcCommit))
	for _, pc := range ac.PresentationContexts {
		if pc.ID == pcCommit.ID && pc.Result != pdu.ContextAbstractSyntaxNotSupported {
			t.Fatalf("storage commitment context: %v, want abstract syntax not supported", pc.Result)
		}
	}
	r.send(pdata(cmdPDV(1, &Command{CommandField: NEventRSP, MessageIDBeingRespondedTo: 1, CommandDataSetType: NoDataSet,
		Has: HasMessageIDBeingRespondedTo})))
	r.expectAbort(pdu.AbortSourceProvider, pdu.AbortUnexpectedPDUParameter)
}

// TestCommitmentOnlyLittleEndian: only Implicit or Explicit VR Little
// Endian carry storage commitment.
func TestCommitmentOnlyLittleEndian(t *testing.T) {
	_, addr := startServer(t, Config{Commitment: newCommitHandler()}, newMemStore())
	r := dialRaw(t, addr)
	pc := pcCommit
	pc.TransferSyntaxes = []string{"1.2.840.10008.1.2.2", "1.2.840.10008.1.2.4.50"}
	ac := r.associate(rqFor(pcEcho, pc))
	for _, p := range ac.PresentationContexts {
		if p.ID == pc.ID && p.Result != pdu.ContextTransferSyntaxesNotSupported {
			t.Fatalf("storage commitment context: %v, want transfer syntaxes not supported", p.Result)
		}
	}
}

// TestClientEventReport: the requestor proposes the SCP role and sends a
// report the acceptor answers with an event reply (here dicomgw's own
// acceptor cannot take a report, so a hand-written one answers); the
// association is then released in step.
func TestClientEventReport(t *testing.T) {
	ln, err := netListen(t)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type seen struct {
		rq   *pdu.AssociateRQ
		cmd  *Command
		data []byte
	}
	got := make(chan seen, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := &raw{t: t, c: c, r: pdu.NewReader(c, pdu.Limits{}, nil)}
		p, err := r.recv()
		if err != nil {
			return
		}
		rq := p.(*pdu.AssociateRQ)
		ac := acceptAll(rq, 16384)
		ac.UserInfo.RoleSelections = []pdu.RoleSelection{{SOPClassUID: StorageCommitmentSOPClass, SCU: false, SCP: true}}
		b, _ := pdu.Encode(ac)
		c.Write(b)
		cmd, data := r.message()
		got <- seen{rq, cmd, data}
		// The response carries an event reply, which the requestor must
		// read past.
		rsp := &Command{CommandField: NEventRSP, MessageIDBeingRespondedTo: cmd.MessageID, CommandDataSetType: 0,
			Status: StatusSuccess, Has: HasMessageIDBeingRespondedTo | HasStatus}
		b, _ = pdu.Encode(pdata(cmdPDV(1, rsp), pdu.PDV{ContextID: 1, Data: []byte{1, 2}}))
		c.Write(b)
		b, _ = pdu.Encode(pdata(pdu.PDV{ContextID: 1, Last: true, Data: []byte{3, 4}}))
		c.Write(b)
		r.recv() // A-RELEASE-RQ
		b, _ = pdu.Encode(&pdu.ReleaseRP{})
		c.Write(b)
	}()
	c, err := Dial(context.Background(), ln.Addr().String(), DialConfig{CallingAE: "DICOMGW", CalledAE: "MODALITY",
		Contexts:       []ProposedContext{{AbstractSyntax: StorageCommitmentSOPClass, TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}}},
		RoleSelections: []pdu.RoleSelection{{SOPClassUID: StorageCommitmentSOPClass, SCU: false, SCP: true}},
		Timeout:        5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	data := bytes.Repeat([]byte("ab"), 20000) // more than one PDU
	rsp, err := c.EventReport(StorageCommitmentSOPClass, StorageCommitmentSOPInstance, 2, data)
	if err != nil || rsp.Status != StatusSuccess {
		t.Fatalf("EventReport: %+v %v", rsp, err)
	}
	s := <-got
	if rs := s.rq.UserInfo.RoleSelections; len(rs) != 1 || rs[0].SOPClassUID != StorageCommitmentSOPClass || rs[0].SCU || !rs[0].SCP {
		t.Errorf("role selections proposed: %+v, want SCP only for storage commitment", rs)
	}
	if s.cmd.CommandField != NEventRQ || s.cmd.EventTypeID != 2 || s.cmd.AffectedSOPInstanceUID != StorageCommitmentSOPInstance || !bytes.Equal(s.data, data) {
		t.Errorf("report received: %+v, %d bytes", s.cmd, len(s.data))
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
}
