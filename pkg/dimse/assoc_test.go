package dimse

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

const ctClass = "1.2.840.10008.5.1.4.1.1.2"

func TestEchoAndStore(t *testing.T) {
	store := newMemStore()
	_, addr := startServer(t, Config{}, store)
	c := dial(t, addr)
	if st, err := c.Echo(); err != nil || st != StatusSuccess {
		t.Fatalf("echo: %v %v", st, err)
	}
	// Objects larger than the PDU size travel in several fragments; each
	// arrives whole and byte for byte.
	for i, size := range []int{100, 16 << 10, 1 << 20, 3<<20 + 5} {
		inst := fmt.Sprintf("1.2.3.%d", i)
		ds := ctDataSet(ctClass, inst, size)
		rsp, err := c.Store(ctClass, inst, uid.ExplicitVRLittleEndian, bytes.NewReader(ds))
		if err != nil {
			t.Fatal(err)
		}
		if rsp.Status != StatusSuccess || rsp.CommandField != CStoreRSP || rsp.AffectedSOPInstanceUID != inst ||
			rsp.AffectedSOPClassUID != ctClass || rsp.MessageIDBeingRespondedTo != uint16(i+2) {
			t.Fatalf("response %+v", rsp)
		}
		if got := store.objects[inst]; !bytes.Equal(got, ds) {
			t.Fatalf("object %d: stored %d bytes, sent %d", i, len(got), len(ds))
		}
	}
	req := store.reqs[0]
	if req.CallingAE != "TESTSCU" || req.CalledAE != "DICOMGW" || req.TransferSyntaxUID != uid.ExplicitVRLittleEndian || req.AssociationID == "" {
		t.Fatalf("request %+v", req)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestNegotiation: PS3.8 9.3.3.2 results for each context; the first
// proposed transfer syntax we know is taken; role selection answered for
// accepted SOP classes only; our maximum length and implementation UID sent.
func TestNegotiation(t *testing.T) {
	_, addr := startServer(t, Config{MaxPDULength: 65536}, newMemStore())
	r := dialRaw(t, addr)
	rq := rqFor(
		pdu.PresentationContextRQ{ID: 1, AbstractSyntax: uid.Verification, TransferSyntaxes: []string{"1.2.3.4.5", uid.ImplicitVRLittleEndian}},
		pdu.PresentationContextRQ{ID: 3, AbstractSyntax: ctClass, TransferSyntaxes: []string{"1.2.840.10008.1.2.4.201", uid.ExplicitVRLittleEndian}},
		pdu.PresentationContextRQ{ID: 5, AbstractSyntax: "1.2.840.10008.5.1.4.1.2.2.1", TransferSyntaxes: []string{uid.ImplicitVRLittleEndian}}, // Study Root Q/R FIND
		pdu.PresentationContextRQ{ID: 7, AbstractSyntax: ctClass, TransferSyntaxes: []string{"1.2.840.113619.5.2"}},                             // private GE TS
		pdu.PresentationContextRQ{ID: 9, AbstractSyntax: "1.2.826.0.1.3680043.9.999.1", TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}}, // private SOP class
		pdu.PresentationContextRQ{ID: 11, AbstractSyntax: ctClass, TransferSyntaxes: []string{"1.2.840.10008.1.2.6.1"}},                         // RFC 2557: not for the network
	)
	rq.UserInfo.RoleSelections = []pdu.RoleSelection{{SOPClassUID: ctClass, SCU: true, SCP: true}, {SOPClassUID: "1.2.840.10008.5.1.4.1.2.2.1", SCU: true}}
	ac := r.associate(rq)
	want := []pdu.PresentationContextAC{
		{ID: 1, Result: pdu.ContextAcceptance, TransferSyntax: uid.ImplicitVRLittleEndian},
		{ID: 3, Result: pdu.ContextAcceptance, TransferSyntax: "1.2.840.10008.1.2.4.201"},
		{ID: 5, Result: pdu.ContextAbstractSyntaxNotSupported},
		{ID: 7, Result: pdu.ContextTransferSyntaxesNotSupported},
		{ID: 9, Result: pdu.ContextAbstractSyntaxNotSupported},
		{ID: 11, Result: pdu.ContextTransferSyntaxesNotSupported},
	}
	if fmt.Sprint(ac.PresentationContexts) != fmt.Sprint(want) {
		t.Fatalf("contexts:\n got %+v\nwant %+v", ac.PresentationContexts, want)
	}
	u := ac.UserInfo
	if !u.HasMaxLength || u.MaxLength != 65536 || u.ImplementationClassUID != ImplementationClassUID || u.ImplementationVersionName == "" {
		t.Fatalf("user info %+v", u)
	}
	if len(u.RoleSelections) != 1 || u.RoleSelections[0] != (pdu.RoleSelection{SOPClassUID: ctClass, SCU: true, SCP: false}) {
		t.Fatalf("role selections %+v", u.RoleSelections)
	}
	if ac.CalledAE != rq.CalledAE || ac.CallingAE != rq.CallingAE {
		t.Fatal("AE fields not echoed")
	}
}

func TestAcceptUnknownSOPClasses(t *testing.T) {
	_, addr := startServer(t, Config{AcceptUnknownSOPClasses: true}, newMemStore())
	r := dialRaw(t, addr)
	ac := r.associate(rqFor(
		pdu.PresentationContextRQ{ID: 1, AbstractSyntax: "1.2.826.0.1.3680043.9.999.1", TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}},
		pdu.PresentationContextRQ{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.2.2.1", TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}},
		pdu.PresentationContextRQ{ID: 5, AbstractSyntax: "not.a.uid", TransferSyntaxes: []string{uid.ExplicitVRLittleEndian}},
	))
	got := []pdu.ContextResult{ac.PresentationContexts[0].Result, ac.PresentationContexts[1].Result, ac.PresentationContexts[2].Result}
	// A DICOM class outside the storage branch (Q/R FIND) stays refused:
	// "unknown" means private or newer storage, not "anything".
	if got[0] != pdu.ContextAcceptance || got[1] != pdu.ContextAbstractSyntaxNotSupported || got[2] != pdu.ContextAbstractSyntaxNotSupported {
		t.Fatalf("results %v", got)
	}
}

// TestRejections: PS3.8 9.3.4 reject codes.
func TestRejections(t *testing.T) {
	_, addr := startServer(t, Config{AETitles: []string{"DICOMGW", "OTHER"}}, newMemStore())
	cases := []struct {
		name string
		edit func(*pdu.AssociateRQ)
		want pdu.AssociateRJ
	}{
		{"called AE not recognized", func(rq *pdu.AssociateRQ) { rq.CalledAE = pdu.MakeAE("WRONG") },
			pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectCalledAENotRecognized}},
		{"application context", func(rq *pdu.AssociateRQ) { rq.ApplicationContext = "1.2.3" },
			pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceUser, Reason: pdu.RejectApplicationContextNotSupport}},
		{"protocol version", func(rq *pdu.AssociateRQ) { rq.ProtocolVersion = 2 },
			pdu.AssociateRJ{Result: pdu.RejectPermanent, Source: pdu.RejectSourceProviderACSE, Reason: pdu.RejectProtocolVersionNotSupported}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			rq := rqFor(pcEcho)
			c.edit(rq)
			r.send(rq)
			p, err := r.recv()
			if err != nil {
				t.Fatal(err)
			}
			if rj, ok := p.(*pdu.AssociateRJ); !ok || *rj != c.want {
				t.Fatalf("got %#v, want %+v", p, c.want)
			}
			// Sta13: the acceptor waits for us to close (ARTIM bounds it).
			r.c.Close()
		})
	}
	// The second configured title is answered; padding does not matter.
	r := dialRaw(t, addr)
	rq := rqFor(pcEcho)
	rq.CalledAE = pdu.MakeAE(" OTHER")
	r.associate(rq)
}

// TestMaxAssociations: above the limit, A-ASSOCIATE-RJ 2/3/2 rather than a
// refused connection; a freed slot is usable again.
func TestMaxAssociations(t *testing.T) {
	_, addr := startServer(t, Config{MaxAssociations: 2}, newMemStore())
	a, b := dial(t, addr), dial(t, addr)
	_, err := Dial(context.Background(), addr, DialConfig{CallingAE: "X", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
	var rj *RejectedError
	if !errors.As(err, &rj) || rj.AssociateRJ != (pdu.AssociateRJ{Result: pdu.RejectTransient, Source: pdu.RejectSourceProviderPresent, Reason: pdu.RejectLocalLimitExceeded}) {
		t.Fatalf("third association: %v", err)
	}
	if err := a.Release(); err != nil {
		t.Fatal(err)
	}
	// The slot is released when the released association's goroutine ends.
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := Dial(context.Background(), addr, DialConfig{CallingAE: "X", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification}, Timeout: 5 * time.Second})
		if err == nil {
			c.Release()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no slot after release: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	b.Release()
}

// TestStoreStatuses: failures get their status, the data set is still
// consumed, and the association carries on.
func TestStoreStatuses(t *testing.T) {
	store := newMemStore()
	_, addr := startServer(t, Config{}, store)
	c := dial(t, addr)
	send := func(inst string, ds []byte) Status {
		t.Helper()
		rsp, err := c.Store(ctClass, inst, uid.ExplicitVRLittleEndian, bytes.NewReader(ds))
		if err != nil {
			t.Fatal(err)
		}
		return rsp.Status
	}
	ds := ctDataSet(ctClass, "1.2.3", 200<<10)

	store.commitErr = &StatusError{Status: StatusDataSetDoesNotMatchClass, Comment: "SOP Instance UID mismatch"}
	if st := send("1.2.3", ds); st != StatusDataSetDoesNotMatchClass {
		t.Fatalf("commit error: %v", st)
	}
	store.commitErr = errors.New("disk on fire")
	if st := send("1.2.3", ds); st != StatusOutOfResources {
		t.Fatalf("plain commit error: %v", st)
	}
	store.commitErr = nil

	store.failAfter = 50 << 10
	if st := send("1.2.3", ds); st != StatusOutOfResources {
		t.Fatalf("write error: %v", st)
	}
	store.failAfter = 0
	if _, aborted := store.count(); aborted != 1 {
		t.Fatalf("%d aborts after a write error, want 1", aborted)
	}

	store.beginErr = &StatusError{Status: StatusOutOfResources, Comment: "spool full"}
	if st := send("1.2.3", ds); st != StatusOutOfResources {
		t.Fatalf("begin error: %v", st)
	}
	store.beginErr = nil

	if st := send("1/3", ds); st != StatusCannotUnderstand {
		t.Fatalf("malformed instance UID: %v", st)
	}
	if st := send("1.2.3", ds); st != StatusSuccess {
		t.Fatalf("after the failures: %v", st)
	}
	if n, _ := store.count(); n != 1 {
		t.Fatalf("%d objects stored", n)
	}
	if err := c.Release(); err != nil {
		t.Fatal(err)
	}
}

// TestStoreOnWrongContext: the affected SOP class must be the context's
// abstract syntax (PS3.7 9.1.1.1), and C-STORE on the verification context
// is refused.
func TestStoreOnWrongContext(t *testing.T) {
	store := newMemStore()
	_, addr := startServer(t, Config{}, store)
	r := dialRaw(t, addr)
	r.associate(rqFor(pcEcho, pcCT))
	ds := ctDataSet("1.2.840.10008.5.1.4.1.1.4", "1.2.3", 100)
	r.send(pdata(cmdPDV(3, storeRQ(1, "1.2.840.10008.5.1.4.1.1.4", "1.2.3")), pdu.PDV{ContextID: 3, Last: true, Data: ds}))
	if rsp := r.response(); rsp.Status != StatusSOPClassNotSupported || rsp.MessageIDBeingRespondedTo != 1 {
		t.Fatalf("%+v", rsp)
	}
	r.send(pdata(cmdPDV(1, storeRQ(2, uid.Verification, "1.2.3")), pdu.PDV{ContextID: 1, Last: true, Data: ds}))
	if rsp := r.response(); rsp.Status != StatusSOPClassNotSupported {
		t.Fatalf("%+v", rsp)
	}
	if n, _ := store.count(); n != 0 {
		t.Fatal("stored")
	}
}

// TestUnsupportedCommand: a request for a service we do not provide gets
// 0211 (PS3.7 C.5.19), after its data set is consumed.
func TestUnsupportedCommand(t *testing.T) {
	_, addr := startServer(t, Config{}, newMemStore())
	r := dialRaw(t, addr)
	r.associate(rqFor(pcEcho, pcCT))
	find := &Command{AffectedSOPClassUID: ctClass, CommandField: CFindRQ, MessageID: 9, CommandDataSetType: 0, Has: HasAffectedSOPClassUID | HasMessageID}
	r.send(pdata(cmdPDV(3, find), pdu.PDV{ContextID: 3, Last: true, Data: []byte{8, 0, 0x52, 0, 'C', 'S', 2, 0, 'S', 'T'}}))
	rsp := r.response()
	if rsp.Status != StatusUnrecognizedOperation || rsp.CommandField != 0x8020 || rsp.MessageIDBeingRespondedTo != 9 {
		t.Fatalf("%+v", rsp)
	}
	r.send(pdata(cmdPDV(1, echoRQ(10))))
	if rsp := r.response(); rsp.Status != StatusSuccess {
		t.Fatalf("echo after: %+v", rsp)
	}
}

// TestSmallPeerMaxLength: our responses respect the peer's maximum length
// (PS3.8 D.1) by fragmenting, and still go out in one write.
func TestSmallPeerMaxLength(t *testing.T) {
	_, addr := startServer(t, Config{}, newMemStore())
	r := dialRaw(t, addr)
	rq := rqFor(pcEcho)
	rq.UserInfo.MaxLength = 16 // 10 bytes of command per PDV
	r.associate(rq)
	r.send(pdata(cmdPDV(1, echoRQ(1))))
	var n int
	var buf []byte
	for {
		p, err := r.recv()
		if err != nil {
			t.Fatal(err)
		}
		pd := p.(*pdu.PDataTF)
		enc, _ := pdu.Encode(pd)
		if len(enc)-pdu.HeaderLen > 16 {
			t.Fatalf("PDU of %d bytes", len(enc)-pdu.HeaderLen)
		}
		n++
		buf = append(buf, pd.PDVs[0].Data...)
		if pd.PDVs[0].Last {
			break
		}
	}
	c, err := DecodeCommand(buf)
	if err != nil || c.Status != StatusSuccess || n < 5 {
		t.Fatalf("%d PDUs, %+v, %v", n, c, err)
	}
}

// TestProtocolViolations: each violation aborts that association only
// (A-ABORT, source service-provider, with the PS3.8 Table 9-26 reason),
// nothing is stored, and the server goes on serving.
func TestProtocolViolations(t *testing.T) {
	store := newMemStore()
	srv, addr := startServer(t, Config{}, store)
	ds := ctDataSet(ctClass, "1.2.3", 1000)
	cases := []struct {
		name   string
		setup  []pdu.PresentationContextRQ
		send   func(r *raw)
		reason pdu.AbortReason
	}{
		{"PDV on a context not proposed", nil, func(r *raw) { r.send(pdata(cmdPDV(5, echoRQ(1)))) }, pdu.AbortInvalidPDUParameterValue},
		{"PDV on a rejected context", []pdu.PresentationContextRQ{pcEcho, {ID: 3, AbstractSyntax: "1.2.3.4", TransferSyntaxes: []string{uid.ImplicitVRLittleEndian}}},
			func(r *raw) { r.send(pdata(cmdPDV(3, echoRQ(1)))) }, pdu.AbortInvalidPDUParameterValue},
		{"data before command", nil, func(r *raw) { r.send(pdata(pdu.PDV{ContextID: 3, Last: true, Data: ds})) }, pdu.AbortUnexpectedPDUParameter},
		{"context changes mid-message", nil, func(r *raw) {
			r.send(pdata(cmdPDV(3, storeRQ(1, ctClass, "1.2.3")), pdu.PDV{ContextID: 1, Data: ds[:10]}))
		}, pdu.AbortUnexpectedPDUParameter},
		{"command while data set expected", nil, func(r *raw) {
			r.send(pdata(cmdPDV(3, storeRQ(1, ctClass, "1.2.3")), pdu.PDV{ContextID: 3, Data: ds[:10]}, cmdPDV(3, echoRQ(2))))
		}, pdu.AbortUnexpectedPDUParameter},
		{"malformed command set", nil, func(r *raw) {
			r.send(pdata(pdu.PDV{ContextID: 1, Command: true, Last: true, Data: hx("0000 0001 FFFFFF7F 3000")}))
		}, pdu.AbortInvalidPDUParameterValue},
		{"response where a request belongs", nil, func(r *raw) {
			r.send(pdata(cmdPDV(1, &Command{CommandField: CEchoRSP, MessageIDBeingRespondedTo: 1, CommandDataSetType: NoDataSet, Has: HasMessageIDBeingRespondedTo})))
		}, pdu.AbortUnexpectedPDUParameter},
		{"request without message ID", nil, func(r *raw) {
			r.send(pdata(cmdPDV(1, &Command{AffectedSOPClassUID: uid.Verification, CommandField: CEchoRQ, CommandDataSetType: NoDataSet, Has: HasAffectedSOPClassUID})))
		}, pdu.AbortInvalidPDUParameterValue},
		{"second A-ASSOCIATE-RQ", nil, func(r *raw) { r.send(rqFor(pcEcho)) }, pdu.AbortUnexpectedPDU},
		{"A-RELEASE-RP unasked", nil, func(r *raw) { r.send(&pdu.ReleaseRP{}) }, pdu.AbortUnexpectedPDU},
		{"unknown PDU type", nil, func(r *raw) { r.sendBytes(hx("09 00 00000004 00000000")) }, pdu.AbortUnrecognizedPDU},
		{"P-DATA above our maximum length", nil, func(r *raw) { r.sendBytes(hx("04 00 7FFFFFFF 00")) }, pdu.AbortInvalidPDUParameterValue},
		{"PDV overruns its PDU", nil, func(r *raw) { r.sendBytes(hx("04 00 00000008 00000010 01 03 0000")) }, pdu.AbortInvalidPDUParameterValue},
		{"empty P-DATA", nil, func(r *raw) { r.sendBytes(hx("04 00 00000000")) }, pdu.AbortInvalidPDUParameterValue},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := dialRaw(t, addr)
			pcs := c.setup
			if pcs == nil {
				pcs = []pdu.PresentationContextRQ{pcEcho, pcCT}
			}
			r.associate(rqFor(pcs...))
			c.send(r)
			r.expectAbort(pdu.AbortSourceProvider, c.reason)
			// Sta13: the gateway waits for us to close (AR-5), so that its
			// A-ABORT is not lost to a reset.
			r.c.Close()
			waitIdle(t, srv)
		})
	}
	if n, aborted := store.count(); n != 0 || aborted != 2 {
		t.Fatalf("%d stored, %d aborted; want 0 and 2 (the two cut-short stores)", n, aborted)
	}
	c := dial(t, addr)
	if st, err := c.Echo(); err != nil || st != StatusSuccess {
		t.Fatalf("echo after the violations: %v %v", st, err)
	}
}

// TestSta2: before the A-ASSOCIATE-RQ, anything else is answered per
// Table 9-10 (AA-1: A-ABORT, service-user source) and the connection closed.
func TestSta2(t *testing.T) {
	_, addr := startServer(t, Config{ARTIMTimeout: 300 * time.Millisecond}, newMemStore())
	for name, b := range map[string][]byte{
		"P-DATA first":       hx("04 00 00000006 00000002 01 03"),
		"HTTP":               []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
		"TLS client hello":   hx("16 03 01 00 C8 01 00 00 C4 03 03"),
		"huge RQ":            hx("01 00 FFFFFFFF 0001"),
		"short RQ":           hx("01 00 00000010 0001 0000 0000 0000 0000 0000 0000 0000"),
		"even context ID":    mustEncode(rqFor(pdu.PresentationContextRQ{ID: 2, AbstractSyntax: uid.Verification, TransferSyntaxes: []string{uid.ImplicitVRLittleEndian}})),
		"duplicate context":  mustEncode(rqFor(pcEcho, pcEcho)),
		"A-RELEASE-RQ first": hx("05 00 00000004 00000000"),
	} {
		t.Run(name, func(t *testing.T) {
			r := dialRaw(t, addr)
			r.sendBytes(b)
			r.expectAbort(pdu.AbortSourceUser, 0)
			r.expectClosed(5 * time.Second)
		})
	}
}

func mustEncode(p pdu.PDU) []byte {
	b, err := pdu.Encode(p)
	if err != nil {
		panic(err)
	}
	return b
}

// TestARTIM: a connection that never sends an A-ASSOCIATE-RQ is closed when
// ARTIM expires (PS3.8 9.1.5, Sta2 + Evt18 -> AA-2); so is one that does not
// close after our A-ASSOCIATE-RJ (Sta13 + Evt18).
func TestARTIM(t *testing.T) {
	srv, addr := startServer(t, Config{ARTIMTimeout: 200 * time.Millisecond}, newMemStore())
	r := dialRaw(t, addr)
	r.expectClosed(5 * time.Second)

	r = dialRaw(t, addr)
	rq := rqFor(pcEcho)
	rq.CalledAE = pdu.MakeAE("NOPE")
	r.send(rq)
	if p, err := r.recv(); err != nil || p.Type() != pdu.TypeAssociateRJ {
		t.Fatalf("%v %v", p, err)
	}
	r.expectClosed(5 * time.Second)
	waitIdle(t, srv)
}

func waitIdle(t *testing.T, srv *Server) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for srv.ActiveAssociations() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d associations still open", srv.ActiveAssociations())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestReleaseThenData: after A-RELEASE-RP (Sta13) further PDUs are ignored
// (AA-6) and the connection ends when the peer closes (AR-5).
func TestReleaseThenData(t *testing.T) {
	store := newMemStore()
	srv, addr := startServer(t, Config{}, store)
	r := dialRaw(t, addr)
	r.associate(rqFor(pcEcho, pcCT))
	r.send(&pdu.ReleaseRQ{})
	if p, err := r.recv(); err != nil || p.Type() != pdu.TypeReleaseRP {
		t.Fatalf("%v %v", p, err)
	}
	r.send(pdata(cmdPDV(1, echoRQ(1))))
	r.c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if p, err := r.r.ReadPDU(); err == nil {
		t.Fatalf("got %v after release", p.Type())
	}
	r.c.Close()
	waitIdle(t, srv)
}

// TestReleaseMidMessage: a release in the middle of a store drops the
// partial object.
func TestReleaseMidMessage(t *testing.T) {
	store := newMemStore()
	srv, addr := startServer(t, Config{}, store)
	r := dialRaw(t, addr)
	r.associate(rqFor(pcEcho, pcCT))
	r.send(pdata(cmdPDV(3, storeRQ(1, ctClass, "1.2.3")), pdu.PDV{ContextID: 3, Data: make([]byte, 100)}))
	r.send(&pdu.ReleaseRQ{})
	if p, err := r.recv(); err != nil || p.Type() != pdu.TypeReleaseRP {
		t.Fatalf("%v %v", p, err)
	}
	r.c.Close()
	waitIdle(t, srv)
	if n, aborted := store.count(); n != 0 || aborted != 1 {
		t.Fatalf("stored %d, aborted %d", n, aborted)
	}
}

// TestPeerAbortAndDisconnectMidObject: the partial object is discarded.
func TestPeerAbortAndDisconnectMidObject(t *testing.T) {
	store := newMemStore()
	srv, addr := startServer(t, Config{}, store)
	for _, abort := range []bool{true, false} {
		r := dialRaw(t, addr)
		r.associate(rqFor(pcEcho, pcCT))
		r.send(pdata(cmdPDV(3, storeRQ(1, ctClass, "1.2.3")), pdu.PDV{ContextID: 3, Data: make([]byte, 100)}))
		if abort {
			r.send(&pdu.Abort{Source: pdu.AbortSourceUser})
		}
		r.c.Close()
	}
	waitIdle(t, srv)
	if n, aborted := store.count(); n != 0 || aborted != 2 {
		t.Fatalf("stored %d, aborted %d", n, aborted)
	}
}

// TestIdleTimeout: nothing for IdleTimeout in Sta6 -> A-ABORT (AA-1).
func TestIdleTimeout(t *testing.T) {
	_, addr := startServer(t, Config{IdleTimeout: 200 * time.Millisecond, ARTIMTimeout: time.Second}, newMemStore())
	r := dialRaw(t, addr)
	r.associate(rqFor(pcEcho))
	r.expectAbort(pdu.AbortSourceUser, 0)
	r.expectClosed(5 * time.Second)
}

// TestShutdown: Shutdown waits for running associations, then aborts those
// still open when its context ends; partial objects are discarded.
func TestShutdown(t *testing.T) {
	store := newMemStore()
	srv, err := NewServer(Config{AETitles: []string{"DICOMGW"}}, store, testLogger(t), nil)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := netListen(t)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	r := dialRaw(t, ln.Addr().String())
	r.associate(rqFor(pcEcho, pcCT))
	r.send(pdata(cmdPDV(3, storeRQ(1, ctClass, "1.2.3")), pdu.PDV{ContextID: 3, Data: make([]byte, 100)}))
	time.Sleep(50 * time.Millisecond)

	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	r.expectAbort(pdu.AbortSourceUser, 0)
	if n, aborted := store.count(); n != 0 || aborted != 1 {
		t.Fatalf("stored %d, aborted %d", n, aborted)
	}
	if _, err := dialRawErr(ln.Addr().String()); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

// TestMaxConnectionsPerHost: idle connections from one address beyond its
// limit are closed at once and counted as per_host; another address still
// gets in while that one holds all it may.
func TestMaxConnectionsPerHost(t *testing.T) {
	srv, addr := startServer(t, Config{MaxConnections: 20, MaxConnectionsPerHost: 5}, newMemStore())
	var conns []net.Conn
	t.Cleanup(func() {
		for _, c := range conns {
			c.Close()
		}
	})
	for range 8 {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
	}
	closed := 0
	for _, c := range conns {
		c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		if _, err := c.Read(make([]byte, 1)); err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			closed++
		}
	}
	if closed != 3 {
		t.Errorf("%d of 8 connections from one address closed at once, want 3 (limit 5)", closed)
	}
	if got := testutil.ToFloat64(srv.m.refused.WithLabelValues("per_host")); got != 3 {
		t.Errorf("refused{per_host} = %v, want 3", got)
	}
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}, Timeout: 5 * time.Second}
	raw, err := d.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	raw.Close()
	c, err := Dial(context.Background(), addr, DialConfig{CallingAE: "OTHER", CalledAE: "DICOMGW", Contexts: []ProposedContext{ctVerification},
		Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}})
	if err != nil {
		t.Fatalf("another address while the first holds its limit: %v", err)
	}
	if st, err := c.Echo(); err != nil || st != StatusSuccess {
		t.Errorf("echo: %v %v", st, err)
	}
	c.Release()
	// Set, one host may never take every connection; a default keeps at
	// least half for the others.
	for _, c := range []struct {
		conns, perHost int
		ok             bool
	}{{10, 11, false}, {10, 10, false}, {10, 9, true}, {1, 1, true}} {
		_, err := withDefaultsErr(Config{MaxConnections: c.conns, MaxConnectionsPerHost: c.perHost})
		if (err == nil) != c.ok {
			t.Errorf("max connections %d, per host %d: %v, want ok %v", c.conns, c.perHost, err, c.ok)
		}
		if err != nil && (!strings.Contains(err.Error(), "--max-connections-per-host") || !strings.Contains(err.Error(), "(--max-connections)")) {
			t.Errorf("the error does not name both flags: %v", err)
		}
	}
	for _, c := range []struct{ conns, assocs, want int }{
		{0, 0, 80}, {0, 2, 18}, {1000, 64, 250}, // a quarter, at least associations + 16
		{100, 64, 50}, {40, 64, 20}, {3, 64, 1}, {1, 64, 1}, // at most half
	} {
		got, err := withDefaultsErr(Config{MaxConnections: c.conns, MaxAssociations: c.assocs})
		if err != nil || got.MaxConnectionsPerHost != c.want {
			t.Errorf("max connections %d, associations %d: per host %d (%v), want %d", c.conns, c.assocs, got.MaxConnectionsPerHost, err, c.want)
		}
	}
}

func withDefaultsErr(c Config) (Config, error) { return c.withDefaults() }

type strAddr string

func (a strAddr) Network() string { return "tcp" }
func (a strAddr) String() string  { return string(a) }

type addrConn struct {
	net.Conn
	remote net.Addr
}

func (c addrConn) RemoteAddr() net.Addr { return c.remote }

// TestPeerAddrOf: the per-host limits count an IPv4-mapped IPv6 peer as
// its IPv4 address (one host, one count).
func TestPeerAddrOf(t *testing.T) {
	for _, c := range []struct {
		addr net.Addr
		want string
	}{
		{&net.TCPAddr{IP: net.ParseIP("::ffff:10.1.2.3"), Port: 104}, "10.1.2.3"},
		{strAddr("[::ffff:10.1.2.3]:104"), "10.1.2.3"},
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 104}, "10.1.2.3"},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 104}, "2001:db8::1"},
		{strAddr("pipe"), "invalid IP"},
	} {
		if got := peerAddrOf(addrConn{remote: c.addr}); got.String() != c.want {
			t.Errorf("%v: %v, want %s", c.addr, got, c.want)
		}
	}
}
