package conformance

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/uid"
)

// adversarialARTIM is the ARTIM timer of the gateway under attack: short,
// so that the connections it must close after an A-ABORT or
// A-ASSOCIATE-RJ (Sta13) or that never send an A-ASSOCIATE-RQ (Sta2) go
// within the test.
const adversarialARTIM = 2 * time.Second

// Malformed UIDs (PS3.5 9.1: at most 64 characters, digits and dots).
var (
	longDigits      = strings.Repeat("1", 50)
	longAppContext  = uid.ApplicationContext + "." + longDigits // 72 characters, all digits and dots
	badAppContext   = "1.2.840.10008.3.1.1.X"
	longAbstract    = sopCTImage + "." + longDigits // 76
	badAbstract     = sopCTImage + "a"
	longTransfer    = tsExplicitLE + "." + longDigits // 70
	badTransfer     = tsExplicitLE + "x"
	unknownPDUTypes = []byte{0x00, 0x08, 0x09, 0x16, 0x47, 0x80, 0xFF}
)

// adversarialCase is one thing a peer may send. run sends it and checks
// the reaction the standard asks for on the wire; the table driver then
// checks the spool, that a new association still works, and at the end
// that the gateway closed every connection it should have and went back
// to its baseline.
type adversarialCase struct {
	name   string
	ref    string // where the standard says so
	want   string // the expected reaction, for the log
	stores int    // objects the case legitimately stores
	run    func(t *testing.T, w *wireConn)
}

// abortCase: the bytes get an A-ABORT with this source and reason.
func abortCase(name, ref string, associateFirst bool, source pdu.AbortSource, reason pdu.AbortReason, data func() []byte) adversarialCase {
	return adversarialCase{
		name: name, ref: ref, want: fmt.Sprintf("A-ABORT source %d reason %d", source, reason),
		run: func(t *testing.T, w *wireConn) {
			if associateFirst {
				w.associate("ADVERSARY")
			}
			w.write(data())
			w.expectAbort(source, reason)
		},
	}
}

// sta2Abort: before (or instead of) a valid A-ASSOCIATE-RQ anything
// unrecognized, invalid or unexpected is Evt19 (or Evt3/4/10/12/13) in Sta2:
// AA-1, an A-ABORT from the service user, reason 0 (PS3.8 Table 9-10,
// 9.3.8).
func sta2Abort(name, ref string, data func() []byte) adversarialCase {
	return abortCase(name, "PS3.8 9.2 Table 9-10 Sta2 AA-1; "+ref, false, pdu.AbortSourceUser, pdu.AbortNotSpecified, data)
}

// sta6Abort: in Sta6 an invalid PDU (Evt19) or an unexpected one is AA-8,
// an A-ABORT from the service provider with the reason of PS3.8 Table
// 9-26.
func sta6Abort(name, ref string, reason pdu.AbortReason, data func() []byte) adversarialCase {
	return abortCase(name, "PS3.8 9.2 Table 9-10 Sta6 AA-8, Table 9-26; "+ref, true, pdu.AbortSourceProvider, reason, data)
}

// rejectCase: the request is answered with A-ASSOCIATE-RJ (AE-8).
func rejectCase(name, ref string, result pdu.RejectResult, source pdu.RejectSource, reason pdu.RejectReason, rq []byte) adversarialCase {
	return adversarialCase{
		name: name, ref: "PS3.8 9.3.4 Table 9-21; " + ref, want: fmt.Sprintf("A-ASSOCIATE-RJ %d/%d/%d", result, source, reason),
		run: func(t *testing.T, w *wireConn) {
			w.write(rq)
			w.expectReject(result, source, reason)
		},
	}
}

// contextCase: the association is accepted, the presentation context with
// ID 3 gets result want (PS3.8 9.3.3.2, Table 9-18), and context 1
// (Verification) works on the same association.
func contextCase(name, ref string, want pdu.ContextResult, wantTS string, pc3 []byte) adversarialCase {
	return adversarialCase{
		name: name, ref: "PS3.8 9.3.3.2 Table 9-18; " + ref, want: fmt.Sprintf("A-ASSOCIATE-AC, context 3 result %d", want),
		run: func(t *testing.T, w *wireConn) {
			w.write(associateRQ(1, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext),
				pcItem(pcVerification, uid.Verification, tsImplicitLE), pc3, userInfoItem(16384)))
			pcs := w.expectAccept()
			if got := pcs[3]; got.Result != want || (want == pdu.ContextAcceptance && got.TransferSyntax != wantTS) {
				t.Fatalf("context 3: result %d transfer syntax %q, want %d %q", got.Result, got.TransferSyntax, want, wantTS)
			}
			if pcs[pcVerification].Result != pdu.ContextAcceptance {
				t.Fatalf("verification context: result %d", pcs[pcVerification].Result)
			}
			w.write(pdata(cmdPDV(pcVerification, echoCommand(1))))
			if rsp := w.response(); rsp.CommandField != dimse.CEchoRSP || rsp.Status != dimse.StatusSuccess {
				t.Fatalf("C-ECHO on the same association: %v status %v", rsp.CommandField, rsp.Status)
			}
			w.release()
		},
	}
}

func adversarialCases(t *testing.T) []adversarialCase {
	ctDS := func(inst string) []byte { return smallDataSet(sopCTImage, inst) }
	validBody := goodRQ("ADVERSARY")[pdu.HeaderLen:]
	hello := clientHello(t)
	b := func(x []byte) func() []byte { return func() []byte { return x } }

	var cases []adversarialCase

	// --- Sta2: garbage instead of an A-ASSOCIATE-RQ.
	for _, typ := range unknownPDUTypes {
		cases = append(cases, sta2Abort(fmt.Sprintf("unknown PDU type 0x%02X", typ), "9.3.1: unrecognized PDU type is Evt19",
			b(wirePDU(typ, []byte{0, 0, 0, 0}))))
	}
	cases = append(cases,
		sta2Abort("unknown PDU type claiming 1 MiB", "9.3.1", b(pduHeader(0x0A, 1<<20, []byte("abc")))),
		sta2Abort("HTTP request", "9.3.1", b([]byte("GET / HTTP/1.1\r\nHost: dicomgw\r\n\r\n"))),
		sta2Abort("TLS ClientHello", "9.3.1; PS3.15 B.1: TLS goes on its own port", b(hello)),
		sta2Abort("A-ASSOCIATE-RQ claiming 0xFFFFFFFF bytes", "9.3.2: lengths are bounded before anything is sized",
			b(pduHeader(byte(pdu.TypeAssociateRQ), 0xFFFFFFFF, validBody[:16]))),
		sta2Abort("P-DATA-TF claiming 0xFFFFFFFF bytes", "9.3.5; Evt10 in Sta2",
			b(pduHeader(byte(pdu.TypePDataTF), 0xFFFFFFFF, []byte{0, 0, 0, 2, 1, 3}))),
		sta2Abort("A-ASSOCIATE-RQ of 16 bytes", "9.3.2 Table 9-11: 68 fixed bytes before the items",
			b(wirePDU(byte(pdu.TypeAssociateRQ), validBody[:16]))),
		sta2Abort("A-ASSOCIATE-RQ of 67 bytes", "9.3.2 Table 9-11", b(wirePDU(byte(pdu.TypeAssociateRQ), validBody[:67]))),
		sta2Abort("A-ASSOCIATE-RQ of the fixed fields only", "9.3.2: application context, presentation context and user information items are required",
			b(wirePDU(byte(pdu.TypeAssociateRQ), validBody[:68]))),
		sta2Abort("application context item overruns the PDU", "9.3.2.1",
			b(associateRQ(1, calledAE, "ADVERSARY", wireItemLen(0x10, 200, []byte(uid.ApplicationContext))))),
		sta2Abort("presentation context item overruns the PDU", "9.3.2.2",
			b(associateRQ(1, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext),
				wireItemLen(0x20, 500, pcItem(1, uid.Verification, tsImplicitLE)[4:])))),
		sta2Abort("abstract syntax sub-item overruns its presentation context item", "9.3.2.2.1",
			b(associateRQ(1, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext),
				wireItem(0x20, append([]byte{1, 0, 0, 0}, wireItemLen(0x30, 120, []byte(uid.Verification))...)),
				userInfoItem(16384), wireItem(0x77, make([]byte, 200))))),
		sta2Abort("transfer syntax sub-item overruns its presentation context item", "9.3.2.2.2",
			b(associateRQ(1, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext),
				wireItem(0x20, append(append([]byte{1, 0, 0, 0}, wireItem(0x30, []byte(uid.Verification))...), wireItemLen(0x40, 90, []byte(tsImplicitLE))...)),
				userInfoItem(16384), wireItem(0x77, make([]byte, 200))))),
		sta2Abort("maximum length sub-item overruns its user information item", "9.3.2.3, D.1",
			b(associateRQ(1, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext),
				pcItem(1, uid.Verification, tsImplicitLE), wireItem(0x50, wireItemLen(0x51, 40, []byte{0, 0, 0x40, 0})),
				wireItem(0x77, make([]byte, 200))))),
		sta2Abort("presentation context ID 0", "9.3.2.2: IDs are odd integers 1-255",
			b(associateRQ(1, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext),
				pcItem(0, uid.Verification, tsImplicitLE), userInfoItem(16384)))),
		sta2Abort("even presentation context ID", "9.3.2.2",
			b(associateRQ(1, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext),
				pcItem(1, uid.Verification, tsImplicitLE), pcItem(2, sopCTImage, tsExplicitLE), userInfoItem(16384)))),
		sta2Abort("duplicate presentation context ID", "9.3.2.2: unique within the request",
			b(associateRQ(1, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext),
				pcItem(3, uid.Verification, tsImplicitLE), pcItem(3, sopCTImage, tsExplicitLE), userInfoItem(16384)))),
		sta2Abort("A-RELEASE-RQ before any association", "Evt12 in Sta2", b(wirePDU(byte(pdu.TypeReleaseRQ), make([]byte, 4)))),
		sta2Abort("A-ASSOCIATE-AC from the requestor", "Evt3 in Sta2", func() []byte {
			ac, err := pdu.Encode(&pdu.AssociateAC{ProtocolVersion: 1, CalledAE: pdu.MakeAE(calledAE), CallingAE: pdu.MakeAE("ADVERSARY"),
				ApplicationContext: uid.ApplicationContext, UserInfo: pdu.UserInformation{HasMaxLength: true, MaxLength: 16384}})
			if err != nil {
				t.Fatal(err)
			}
			return ac
		}),
		adversarialCase{
			name: "A-ASSOCIATE-RQ cut short", ref: "PS3.8 9.1.5, Table 9-10 Sta2 Evt18 AA-2: ARTIM bounds the wait",
			want: "no answer; closed when ARTIM expires",
			run: func(t *testing.T, w *wireConn) {
				rq := goodRQ("ADVERSARY")
				w.write(rq[:len(rq)/2])
				w.expectSilence(adversarialARTIM / 4)
			},
		},
	)

	// --- A-ASSOCIATE-RQ that decodes but is refused (AE-6, then AE-8).
	cases = append(cases,
		rejectCase("protocol version 2", "9.3.2: bit 0 of the protocol version must be set", pdu.RejectPermanent, pdu.RejectSourceProviderACSE, pdu.RejectProtocolVersionNotSupported,
			associateRQ(2, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext), pcItem(1, uid.Verification, tsImplicitLE), userInfoItem(16384))),
		rejectCase("protocol version 0", "9.3.2", pdu.RejectPermanent, pdu.RejectSourceProviderACSE, pdu.RejectProtocolVersionNotSupported,
			associateRQ(0, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext), pcItem(1, uid.Verification, tsImplicitLE), userInfoItem(16384))),
		rejectCase("other application context", "9.3.2.1, PS3.7 A.2.1", pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectApplicationContextNotSupport,
			associateRQ(1, calledAE, "ADVERSARY", appContextItem("1.2.3.4.5"), pcItem(1, uid.Verification, tsImplicitLE), userInfoItem(16384))),
		rejectCase("non-numeric application context", "9.3.2.1, PS3.5 9.1", pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectApplicationContextNotSupport,
			associateRQ(1, calledAE, "ADVERSARY", appContextItem(badAppContext), pcItem(1, uid.Verification, tsImplicitLE), userInfoItem(16384))),
		rejectCase("over-long application context", "9.3.2.1, PS3.5 9.1: 64 characters at most", pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectApplicationContextNotSupport,
			associateRQ(1, calledAE, "ADVERSARY", appContextItem(longAppContext), pcItem(1, uid.Verification, tsImplicitLE), userInfoItem(16384))),
		rejectCase("called AE not ours", "9.3.2", pdu.RejectPermanent, pdu.RejectSourceUser, pdu.RejectCalledAENotRecognized,
			associateRQ(1, "NOTTHEGATEWAY", "ADVERSARY", appContextItem(uid.ApplicationContext), pcItem(1, uid.Verification, tsImplicitLE), userInfoItem(16384))),
	)

	// --- Accepted associations with malformed presentation contexts.
	cases = append(cases,
		adversarialCase{
			name: "protocol version 3", ref: "PS3.8 9.3.2: only bit 0 is tested",
			want: "A-ASSOCIATE-AC",
			run: func(t *testing.T, w *wireConn) {
				w.write(associateRQ(3, calledAE, "ADVERSARY", appContextItem(uid.ApplicationContext), pcItem(1, uid.Verification, tsImplicitLE), userInfoItem(16384)))
				w.expectAccept()
				w.release()
			},
		},
		contextCase("over-long abstract syntax UID", "PS3.5 9.1", pdu.ContextAbstractSyntaxNotSupported, "", pcItem(3, longAbstract, tsExplicitLE)),
		contextCase("non-numeric abstract syntax UID", "PS3.5 9.1", pdu.ContextAbstractSyntaxNotSupported, "", pcItem(3, badAbstract, tsExplicitLE)),
		contextCase("over-long transfer syntax UID", "PS3.5 9.1", pdu.ContextTransferSyntaxesNotSupported, "", pcItem(3, sopCTImage, longTransfer)),
		contextCase("non-numeric transfer syntax UID", "PS3.5 9.1", pdu.ContextTransferSyntaxesNotSupported, "", pcItem(3, sopCTImage, badTransfer)),
		contextCase("malformed transfer syntax before a good one", "9.3.2.2.2: the acceptor picks one it supports", pdu.ContextAcceptance, tsExplicitLE,
			pcItem(3, sopCTImage, badTransfer, longTransfer, tsExplicitLE)),
		contextCase("query/retrieve SOP class", "PS3.4: not a storage SOP class", pdu.ContextAbstractSyntaxNotSupported, "", pcItem(3, studyRootFind, tsImplicitLE)),
	)

	// --- Sta6: the association is up; then something it must abort.
	cases = append(cases,
		sta6Abort("unknown PDU type after the AC", "9.3.1", pdu.AbortUnrecognizedPDU, b(wirePDU(0x09, []byte{0, 0, 0, 0}))),
		sta6Abort("second A-ASSOCIATE-RQ", "Evt6 in Sta6", pdu.AbortUnexpectedPDU, b(goodRQ("ADVERSARY"))),
		sta6Abort("A-RELEASE-RP unasked", "Evt13 in Sta6", pdu.AbortUnexpectedPDU, b(wirePDU(byte(pdu.TypeReleaseRP), make([]byte, 4)))),
		sta6Abort("PDV longer than its PDU", "9.3.5.1", pdu.AbortInvalidPDUParameterValue,
			b(pduHeader(byte(pdu.TypePDataTF), 8, []byte{0, 0, 0, 0x10, pcVerification, 3, 0, 0}))),
		sta6Abort("PDV length field cut off", "9.3.5.1", pdu.AbortInvalidPDUParameterValue,
			b(pduHeader(byte(pdu.TypePDataTF), 3, []byte{0, 0, 0}))),
		sta6Abort("empty P-DATA-TF", "9.3.5: one or more PDV items", pdu.AbortInvalidPDUParameterValue, b(wirePDU(byte(pdu.TypePDataTF), nil))),
		sta6Abort("PDV of length 0", "9.3.5.1: context ID and header are part of the item", pdu.AbortInvalidPDUParameterValue,
			b(pduHeader(byte(pdu.TypePDataTF), 4, []byte{0, 0, 0, 0}))),
		sta6Abort("P-DATA-TF above our maximum length", "D.1: we advertised 262144", pdu.AbortInvalidPDUParameterValue,
			b(pduHeader(byte(pdu.TypePDataTF), dimse.DefaultMaxPDULength+1, make([]byte, 16)))),
		sta6Abort("P-DATA-TF claiming 0xFFFFFFFF bytes after the AC", "D.1", pdu.AbortInvalidPDUParameterValue,
			b(pduHeader(byte(pdu.TypePDataTF), 0xFFFFFFFF, make([]byte, 16)))),
		sta6Abort("data set before its command", "PS3.7 6.3.1, PS3.8 E.2", pdu.AbortUnexpectedPDUParameter,
			b(pdata(pdv(pcStoreCT, false, true, ctDS(harness.NewUID()))))),
		sta6Abort("context ID changes mid-message", "PS3.8 E.2: all fragments of a message on one context", pdu.AbortUnexpectedPDUParameter, func() []byte {
			inst := harness.NewUID()
			ds := ctDS(inst)
			return pdata(cmdPDV(pcStoreCT, storeCommand(1, sopCTImage, inst)), pdv(pcVerification, false, false, ds[:20]))
		}),
		sta6Abort("command fragment while a data set is due", "PS3.7 6.3.1", pdu.AbortUnexpectedPDUParameter, func() []byte {
			inst := harness.NewUID()
			return pdata(cmdPDV(pcStoreCT, storeCommand(1, sopCTImage, inst)), pdv(pcStoreCT, false, false, ctDS(inst)[:20]), cmdPDV(pcStoreCT, echoCommand(2)))
		}),
		sta6Abort("PDV on a rejected context", "9.3.5.1: only accepted contexts carry data", pdu.AbortInvalidPDUParameterValue,
			b(pdata(cmdPDV(pcQuery, echoCommand(1))))),
		sta6Abort("PDV on a context never proposed", "9.3.5.1", pdu.AbortInvalidPDUParameterValue,
			b(pdata(cmdPDV(7, echoCommand(1))))),
		sta6Abort("command element length 0x7FFFFFFF", "PS3.7 6.3.1, E.1", pdu.AbortInvalidPDUParameterValue,
			b(pdata(pdv(pcVerification, true, true, hexBytes("00000001 FFFFFF7F 3000"))))),
		sta6Abort("command element of undefined length", "PS3.7 6.3.1: no undefined lengths in a command set", pdu.AbortInvalidPDUParameterValue,
			b(pdata(pdv(pcVerification, true, true, hexBytes("00000000 04000000 10000000 00000200 FFFFFFFF 3100"))))),
		sta6Abort("command group length 0xFFFFFFFF", "PS3.7 E.1", pdu.AbortInvalidPDUParameterValue,
			b(pdata(pdv(pcVerification, true, true, hexBytes("00000000 04000000 FFFFFFFF 00000001 02000000 3000"))))),
		sta6Abort("command set longer than 64 KiB", "bounded before it is held", pdu.AbortInvalidPDUParameterValue, func() []byte {
			var b []byte
			frag := make([]byte, 16000)
			for i := 0; i < 6; i++ {
				b = append(b, pdata(pdv(pcVerification, true, false, frag))...)
			}
			return b
		}),
		sta6Abort("command field 0x0FF0: neither request nor response", "PS3.7 E.1", pdu.AbortUnexpectedPDUParameter,
			b(pdata(cmdPDV(pcVerification, &dimse.Command{AffectedSOPClassUID: uid.Verification, CommandField: 0x0FF0, MessageID: 1,
				CommandDataSetType: dimse.NoDataSet, Has: dimse.HasAffectedSOPClassUID | dimse.HasMessageID})))),
		sta6Abort("C-STORE-RSP where a request belongs", "PS3.7 9.3.1.2: an SCP receives requests", pdu.AbortUnexpectedPDUParameter,
			b(pdata(cmdPDV(pcStoreCT, &dimse.Command{AffectedSOPClassUID: sopCTImage, CommandField: dimse.CStoreRSP, MessageIDBeingRespondedTo: 1,
				CommandDataSetType: dimse.NoDataSet, Status: dimse.StatusSuccess, Has: dimse.HasAffectedSOPClassUID | dimse.HasMessageIDBeingRespondedTo | dimse.HasStatus})))),
		sta6Abort("C-ECHO-RQ announcing a data set", "PS3.7 9.3.5: C-ECHO has none", pdu.AbortUnexpectedPDUParameter,
			b(pdata(cmdPDV(pcVerification, &dimse.Command{AffectedSOPClassUID: uid.Verification, CommandField: dimse.CEchoRQ, MessageID: 1,
				CommandDataSetType: 0, Has: dimse.HasAffectedSOPClassUID | dimse.HasMessageID})))),
		adversarialCase{
			name: "PDV overruns its PDU in the middle of a C-STORE", ref: "PS3.8 9.3.5.1, Table 9-10 Sta6 AA-8: the partial object is discarded",
			want: "A-ABORT source 2 reason 6, nothing left in incoming/",
			run: func(t *testing.T, w *wireConn) {
				w.associate("ADVERSARY")
				inst := harness.NewUID()
				ds := harness.Elements(smallDataSet(sopCTImage, inst))
				ds.Header(0x7FE0, 0x0010, "OW", 1<<20)
				w.write(pdata(cmdPDV(pcStoreCT, storeCommand(1, sopCTImage, inst)), pdv(pcStoreCT, false, false, ds)))
				w.write(pdata(pdv(pcStoreCT, false, false, make([]byte, 8000))))
				waitPartialAny(t, w, 3*time.Second)
				w.write(pduHeader(byte(pdu.TypePDataTF), 12, []byte{0, 0, 0x10, 0, pcStoreCT, 0, 1, 2, 3, 4, 5, 6}))
				w.expectAbort(pdu.AbortSourceProvider, pdu.AbortInvalidPDUParameterValue)
			},
		},
	)

	// --- DIMSE: requests we do not serve, pipelining, release.
	cases = append(cases,
		adversarialCase{
			name: "C-FIND-RQ", ref: "PS3.7 C.5.19: unrecognized operation", want: "C-FIND-RSP 0211, association goes on",
			run: func(t *testing.T, w *wireConn) {
				w.associate("ADVERSARY")
				find := &dimse.Command{AffectedSOPClassUID: sopCTImage, CommandField: dimse.CFindRQ, MessageID: 9, Has: dimse.HasAffectedSOPClassUID | dimse.HasMessageID}
				w.write(pdata(cmdPDV(pcStoreCT, find), pdv(pcStoreCT, false, true, hexBytes("08005200 4353 0200 5354"))))
				rsp := w.response()
				if rsp.CommandField != 0x8020 || rsp.Status != dimse.StatusUnrecognizedOperation || rsp.MessageIDBeingRespondedTo != 9 {
					t.Fatalf("C-FIND-RQ: response %v status %v to %d, want 0x8020 0x0211 to 9", rsp.CommandField, rsp.Status, rsp.MessageIDBeingRespondedTo)
				}
				w.write(pdata(cmdPDV(pcVerification, echoCommand(10))))
				if rsp := w.response(); rsp.Status != dimse.StatusSuccess || rsp.MessageIDBeingRespondedTo != 10 {
					t.Fatalf("C-ECHO after C-FIND: %v", rsp.Status)
				}
				w.release()
			},
		},
		adversarialCase{
			name: "N-CREATE-RQ", ref: "PS3.7 C.5.19", want: "N-CREATE-RSP 0211",
			run: func(t *testing.T, w *wireConn) {
				w.associate("ADVERSARY")
				nc := &dimse.Command{AffectedSOPClassUID: sopCTImage, CommandField: dimse.NCreateRQ, MessageID: 4, CommandDataSetType: dimse.NoDataSet,
					Has: dimse.HasAffectedSOPClassUID | dimse.HasMessageID}
				w.write(pdata(cmdPDV(pcStoreCT, nc)))
				rsp := w.response()
				if rsp.CommandField != 0x8140 || rsp.Status != dimse.StatusUnrecognizedOperation || rsp.MessageIDBeingRespondedTo != 4 {
					t.Fatalf("N-CREATE-RQ: response %v status %v to %d, want 0x8140 0x0211 to 4", rsp.CommandField, rsp.Status, rsp.MessageIDBeingRespondedTo)
				}
				w.release()
			},
		},
		adversarialCase{
			name: "second C-STORE-RQ before the first response", ref: "PS3.7 D.3.3.3: without an asynchronous window the SCP still answers in order",
			want: "both answered 0000, in order", stores: 2,
			run: func(t *testing.T, w *wireConn) {
				w.associate("ADVERSARY")
				i1, i2 := harness.NewUID(), harness.NewUID()
				w.write(append(pdata(cmdPDV(pcStoreCT, storeCommand(1, sopCTImage, i1)), pdv(pcStoreCT, false, true, ctDS(i1))),
					pdata(cmdPDV(pcStoreCT, storeCommand(2, sopCTImage, i2)), pdv(pcStoreCT, false, true, ctDS(i2)))...))
				for _, want := range []struct {
					id   uint16
					inst string
				}{{1, i1}, {2, i2}} {
					rsp := w.response()
					if rsp.CommandField != dimse.CStoreRSP || rsp.Status != dimse.StatusSuccess || rsp.MessageIDBeingRespondedTo != want.id || rsp.AffectedSOPInstanceUID != want.inst {
						t.Fatalf("response %v status %v to %d for %s; want C-STORE-RSP 0000 to %d for %s",
							rsp.CommandField, rsp.Status, rsp.MessageIDBeingRespondedTo, rsp.AffectedSOPInstanceUID, want.id, want.inst)
					}
				}
				w.release()
			},
		},
		adversarialCase{
			name: "P-DATA-TF after A-RELEASE-RP", ref: "PS3.8 Table 9-10 Sta13 Evt10 AA-6: ignored",
			want: "no answer; closed when ARTIM expires",
			run: func(t *testing.T, w *wireConn) {
				w.associate("ADVERSARY")
				w.send(&pdu.ReleaseRQ{})
				if p, err := w.read(5 * time.Second); err != nil || p.Type() != pdu.TypeReleaseRP {
					t.Fatalf("want A-RELEASE-RP, got %v %v", describePDU(p), err)
				}
				inst := harness.NewUID()
				w.write(pdata(cmdPDV(pcVerification, echoCommand(2))))
				w.write(pdata(cmdPDV(pcStoreCT, storeCommand(3, sopCTImage, inst)), pdv(pcStoreCT, false, true, ctDS(inst))))
				w.expectSilence(adversarialARTIM / 4)
			},
		},
	)
	return cases
}

// waitPartialAny waits until the gateway has a partial object in incoming/.
func waitPartialAny(t *testing.T, w *wireConn, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if p, _ := harness.PartialFiles(w.spoolDir); len(p) > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("no partial object in %s/incoming within %v", w.spoolDir, timeout)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// hexBytes decodes hex digits, ignoring spaces.
func hexBytes(s string) []byte {
	s = strings.ReplaceAll(s, " ", "")
	out := make([]byte, len(s)/2)
	for i := range out {
		fmt.Sscanf(s[2*i:2*i+2], "%02x", &out[i])
	}
	return out
}

// TestAdversarialPDUs drives the real binary with malformed and
// out-of-order PDUs over raw TCP, one connection per case. Each case
// checks the reaction PS3.8 asks for on the wire (the exact
// A-ASSOCIATE-RJ, A-ABORT or DIMSE status), then that nothing reached the
// spool (incoming/ and queue/ empty but for stores that legitimately
// completed) and that a new association still works. At the end every
// connection the gateway was left holding (Sta13 after an A-ABORT or
// A-ASSOCIATE-RJ or A-RELEASE-RP, Sta2 with a request cut short) must have
// been closed by the gateway when ARTIM expired, the association counters
// must add up, and goroutines, descriptors and RSS must be back to the
// baseline taken before the first case.
func TestAdversarialPDUs(t *testing.T) {
	t.Parallel()
	spoolDir, archive := t.TempDir(), t.TempDir()
	g := startGateway(t, spoolDir, "--artim-timeout", adversarialARTIM.String(), "--archive-dir", archive,
		// Unknown but well-formed SOP classes would be accepted: the
		// malformed UIDs below must still be refused for what they are.
		"--accept-unknown-sop-classes")
	base := baseline(t, g)
	m0, err := g.Scrape()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("baseline: %v (process_resident_memory_bytes %.1f MB)", base, float64(base.PromRSS)/(1<<20))

	type held struct {
		name string
		conn net.Conn
		at   time.Time
	}
	var lingering []held
	conns, stored := 0, 0
	cases := adversarialCases(t)
	parent := t
	for _, tc := range cases {
		ok := t.Run(tc.name, func(t *testing.T) {
			w := dialWire(t, parent, g.Addr)
			w.spoolDir = spoolDir
			conns++
			tc.run(t, w)
			t.Logf("%s: %s", tc.ref, tc.want)
			lingering = append(lingering, held{tc.name, w.c, time.Now()})
			stored += tc.stores
			// Nothing half-received is left behind, and only what was
			// legitimately stored was committed.
			waitNoPartials(t, spoolDir, 2*time.Second)
			if n := storedSomewhere(t, spoolDir, archive); n != stored {
				t.Errorf("%d objects committed after this case, want %d", n, stored)
			}
			echoWorks(t, g, "AFTERADVERSARY")
			conns++
		})
		if !ok {
			select {
			case <-g.Exited():
				t.Fatalf("the gateway died (%v)", g.Err())
			default:
			}
		}
	}

	// ARTIM: every connection still open on our side is closed by the
	// gateway (Sta13 or Sta2 + Evt18), within ARTIM and some slack.
	var wg sync.WaitGroup
	var mu sync.Mutex
	var slowest time.Duration
	fastest := time.Hour
	for _, h := range lingering {
		wg.Add(1)
		go func() {
			defer wg.Done()
			at, err := waitClosed(h.conn, adversarialARTIM+5*time.Second)
			if err != nil && !strings.Contains(err.Error(), "use of closed network connection") {
				t.Errorf("%s: the gateway did not close the connection within ARTIM (%v) + 5 s: %v", h.name, adversarialARTIM, err)
				return
			}
			if err == nil {
				mu.Lock()
				slowest = max(slowest, at.Sub(h.at))
				fastest = min(fastest, at.Sub(h.at))
				mu.Unlock()
			}
			h.conn.Close()
		}()
	}
	wg.Wait()
	t.Logf("%d cases; the gateway closed the connections it held %v to %v after the last exchange (ARTIM %v)",
		len(cases), fastest.Round(time.Millisecond), slowest.Round(time.Millisecond), adversarialARTIM)

	// The counters add up: every connection is one association ended,
	// by some outcome, none active.
	var m1 harness.Metrics
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		m1, err = g.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if int(m1.Sum("dicomgw_associations_total")-m0.Sum("dicomgw_associations_total")) >= conns || time.Now().After(deadline) {
			break
		}
	}
	if ended := int(m1.Sum("dicomgw_associations_total") - m0.Sum("dicomgw_associations_total")); ended != conns {
		t.Errorf("dicomgw_associations_total grew by %d, %d connections were made", ended, conns)
	}
	if a := m1.Get("dicomgw_associations_active"); a != 0 {
		t.Errorf("dicomgw_associations_active = %v after every connection closed", a)
	}
	t.Logf("outcomes: %s", outcomeDeltas(m0, m1))
	if p := g.LogLines("association panicked"); len(p) > 0 {
		t.Errorf("associations panicked:\n%s", strings.Join(p, "\n"))
	}
	noPartials(t, spoolDir)
	if c := countSpool(t, spoolDir); c.Dead != 0 {
		t.Errorf("dead letters: %v", c)
	}
	after := waitBackToBaseline(t, g, base, 3, 16<<20, 10*time.Second)
	t.Logf("after: %v (baseline %v)", after, base)
}

// outcomeDeltas lists how the associations_total outcomes grew.
func outcomeDeltas(m0, m1 harness.Metrics) string {
	var parts []string
	for _, o := range []string{"released", "rejected", "peer-aborted", "protocol-error", "idle-timeout", "shutdown", "artim-expired", "connection-lost"} {
		l := fmt.Sprintf(`outcome="%s"`, o)
		if d := m1.Get("dicomgw_associations_total", l) - m0.Get("dicomgw_associations_total", l); d != 0 {
			parts = append(parts, fmt.Sprintf("%s %d", o, int(d)))
		}
	}
	return strings.Join(parts, ", ")
}
