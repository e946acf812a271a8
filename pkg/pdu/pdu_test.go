package pdu

import (
	"bytes"
	"encoding/hex"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
)

// h decodes hex with spaces and newlines allowed; s adds ASCII.
func h(x string) []byte {
	b, err := hex.DecodeString(strings.Join(strings.Fields(x), ""))
	if err != nil {
		panic(err)
	}
	return b
}

func s(x string) []byte { return []byte(x) }

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

var (
	aeDICOMGW  = h("44 49 43 4F 4D 47 57 20 20 20 20 20 20 20 20 20") // "DICOMGW" + 9 spaces
	aeSTORESCU = h("53 54 4F 52 45 53 43 55 20 20 20 20 20 20 20 20") // "STORESCU" + 8 spaces
	zeros32    = make([]byte, 32)
)

// golden pairs a PDU with its exact wire bytes, built field by field from
// PS3.8 9.3 rather than from the encoder.
var golden = []struct {
	name string
	pdu  PDU
	wire []byte
}{
	{
		name: "A-ASSOCIATE-RQ minimal",
		pdu: &AssociateRQ{
			ProtocolVersion:    1,
			CalledAE:           MakeAE("DICOMGW"),
			CallingAE:          MakeAE("STORESCU"),
			ApplicationContext: "1.2.840.10008.3.1.1.1",
			PresentationContexts: []PresentationContextRQ{
				{ID: 1, AbstractSyntax: "1.2.840.10008.1.1", TransferSyntaxes: []string{"1.2.840.10008.1.2"}},
			},
			UserInfo: UserInformation{HasMaxLength: true, MaxLength: 16384, ImplementationClassUID: "1.2.3", ImplementationVersionName: "GW_1"},
		},
		wire: cat(
			h("01 00 000000AC"), // type, reserved, length 172
			h("0001 0000"),      // protocol version 1, reserved
			aeDICOMGW, aeSTORESCU, zeros32,
			h("10 00 0015"), s("1.2.840.10008.3.1.1.1"),
			h("20 00 002E 01 000000"),
			h("30 00 0011"), s("1.2.840.10008.1.1"),
			h("40 00 0011"), s("1.2.840.10008.1.2"),
			h("50 00 0019"),
			h("51 00 0004 00004000"),
			h("52 00 0005"), s("1.2.3"),
			h("55 00 0004"), s("GW_1"),
		),
	},
	{
		name: "A-ASSOCIATE-RQ every user information sub-item",
		pdu: &AssociateRQ{
			ProtocolVersion:    1,
			CalledAE:           MakeAE("DICOMGW"),
			CallingAE:          MakeAE("STORESCU"),
			ApplicationContext: "1.2.840.10008.3.1.1.1",
			PresentationContexts: []PresentationContextRQ{
				{ID: 3, AbstractSyntax: "1.2.840.10008.5.1.4.1.1.2", TransferSyntaxes: []string{"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}},
			},
			UserInfo: UserInformation{
				HasMaxLength:              true,
				MaxLength:                 0,
				ImplementationClassUID:    "1.2.3",
				ImplementationVersionName: "V",
				AsyncOperations:           &AsyncOperationsWindow{MaxInvoked: 2, MaxPerformed: 1},
				RoleSelections:            []RoleSelection{{SOPClassUID: "1.2.4", SCU: true, SCP: false}},
				SOPClassExtended:          []SOPClassExtended{{SOPClassUID: "1.2.5", Info: []byte{1, 0, 1}}},
				SOPClassCommonExtended:    []SOPClassCommonExtended{{SOPClassUID: "1.2.6", ServiceClassUID: "1.2.7", RelatedGeneralSOPClasses: []string{"1.2.8", "1.2.9"}}},
				UserIdentityRQ:            &UserIdentityRQ{Type: UserIdentityUsernamePasscode, PositiveResponseRequested: true, Primary: s("bob"), Secondary: s("pw")},
			},
		},
		wire: cat(
			h("01 00 0000011C"), // 284 = 68 + 25 + 81 + 110
			h("0001 0000"), aeDICOMGW, aeSTORESCU, zeros32,
			h("10 00 0015"), s("1.2.840.10008.3.1.1.1"),
			h("20 00 004D 03 000000"), // 77 = 4 + 29 + 23 + 21
			h("30 00 0019"), s("1.2.840.10008.5.1.4.1.1.2"),
			h("40 00 0013"), s("1.2.840.10008.1.2.1"),
			h("40 00 0011"), s("1.2.840.10008.1.2"),
			h("50 00 006A"), // 106
			h("51 00 0004 00000000"),
			h("52 00 0005"), s("1.2.3"),
			h("53 00 0004 0002 0001"),
			h("54 00 0009 0005"), s("1.2.4"), h("01 00"),
			h("55 00 0001"), s("V"),
			h("56 00 000A 0005"), s("1.2.5"), h("01 00 01"),
			h("57 00 001E 0005"), s("1.2.6"), h("0005"), s("1.2.7"), h("000E 0005"), s("1.2.8"), h("0005"), s("1.2.9"),
			h("58 00 000B 02 01 0003"), s("bob"), h("0002"), s("pw"),
		),
	},
	{
		name: "A-ASSOCIATE-AC",
		pdu: &AssociateAC{
			ProtocolVersion:    1,
			CalledAE:           MakeAE("DICOMGW"),
			CallingAE:          MakeAE("STORESCU"),
			ApplicationContext: "1.2.840.10008.3.1.1.1",
			PresentationContexts: []PresentationContextAC{
				{ID: 1, Result: ContextAcceptance, TransferSyntax: "1.2.840.10008.1.2"},
				{ID: 3, Result: ContextAbstractSyntaxNotSupported, TransferSyntax: ""},
			},
			UserInfo: UserInformation{
				HasMaxLength: true, MaxLength: 262144, ImplementationClassUID: "1.2.3",
				RoleSelections: []RoleSelection{{SOPClassUID: "1.2.4", SCU: true}},
				UserIdentityAC: &UserIdentityAC{ServerResponse: s("ok")},
			},
		},
		wire: cat(
			h("02 00 000000B0"), // 176 = 68 + 25 + 29 + 12 + 42
			h("0001 0000"), aeDICOMGW, aeSTORESCU, zeros32,
			h("10 00 0015"), s("1.2.840.10008.3.1.1.1"),
			h("21 00 0019 01 00 00 00"),
			h("40 00 0011"), s("1.2.840.10008.1.2"),
			h("21 00 0008 03 00 03 00"),
			h("40 00 0000"),
			h("50 00 0026"), // 38
			h("51 00 0004 00040000"),
			h("52 00 0005"), s("1.2.3"),
			h("54 00 0009 0005"), s("1.2.4"), h("01 00"),
			h("59 00 0004 0002"), s("ok"),
		),
	},
	{
		name: "A-ASSOCIATE-RJ called AE not recognized",
		pdu:  &AssociateRJ{Result: RejectPermanent, Source: RejectSourceUser, Reason: RejectCalledAENotRecognized},
		wire: h("03 00 00000004 00 01 01 07"),
	},
	{
		name: "A-ASSOCIATE-RJ local limit exceeded",
		pdu:  &AssociateRJ{Result: RejectTransient, Source: RejectSourceProviderPresent, Reason: RejectLocalLimitExceeded},
		wire: h("03 00 00000004 00 02 03 02"),
	},
	{
		name: "P-DATA-TF two PDVs",
		pdu: &PDataTF{PDVs: []PDV{
			{ContextID: 1, Command: true, Last: true, Data: h("08 00 00 00")},
			{ContextID: 1, Command: false, Last: false, Data: h("AA BB")},
		}},
		wire: h("04 00 00000012  00000006 01 03 08000000  00000004 01 00 AABB"),
	},
	{
		name: "P-DATA-TF empty fragment",
		pdu:  &PDataTF{PDVs: []PDV{{ContextID: 255, Last: true, Data: []byte{}}}},
		wire: h("04 00 00000006  00000002 FF 02"),
	},
	{name: "A-RELEASE-RQ", pdu: &ReleaseRQ{}, wire: h("05 00 00000004 00000000")},
	{name: "A-RELEASE-RP", pdu: &ReleaseRP{}, wire: h("06 00 00000004 00000000")},
	{name: "A-ABORT provider invalid parameter", pdu: &Abort{Source: AbortSourceProvider, Reason: AbortInvalidPDUParameterValue}, wire: h("07 00 00000004 00 00 02 06")},
	{name: "A-ABORT user", pdu: &Abort{Source: AbortSourceUser}, wire: h("07 00 00000004 00 00 00 00")},
}

// TestGolden pins the exact wire bytes of each PDU (PS3.8 9.3): encode gives
// the bytes, decode gives the PDU back, and so does a Reader.
func TestGolden(t *testing.T) {
	for _, g := range golden {
		t.Run(g.name, func(t *testing.T) {
			got, err := Encode(g.pdu)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, g.wire) {
				t.Fatalf("encode:\n got %x\nwant %x", got, g.wire)
			}
			dec, err := Decode(g.wire)
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dec, g.pdu) {
				t.Fatalf("decode:\n got %#v\nwant %#v", dec, g.pdu)
			}
			r := NewReader(bytes.NewReader(g.wire), Limits{}, nil)
			dec, err = r.ReadPDU()
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(dec, g.pdu) {
				t.Fatalf("reader:\n got %#v\nwant %#v", dec, g.pdu)
			}
			if _, err := r.ReadPDU(); err != io.EOF {
				t.Fatalf("after the only PDU: %v, want io.EOF", err)
			}
		})
	}
}

func TestStrings(t *testing.T) {
	for _, c := range []struct{ got, want string }{
		{TypeAssociateRQ.String(), "A-ASSOCIATE-RQ"},
		{TypePDataTF.String(), "P-DATA-TF"},
		{Type(0x09).String(), "PDU-type(0x09)"},
		{ItemUserIdentityAC.String(), "user-identity-ac"},
		{ItemType(0x99).String(), "item-type(0x99)"},
		{RejectTransient.String(), "rejected-transient"},
		{RejectSourceProviderPresent.String(), "service-provider-presentation"},
		{RejectReasonString(RejectSourceUser, RejectCalledAENotRecognized), "called-AE-title-not-recognized"},
		{RejectReasonString(RejectSourceProviderPresent, RejectLocalLimitExceeded), "local-limit-exceeded"},
		{RejectReasonString(RejectSourceProviderACSE, RejectProtocolVersionNotSupported), "protocol-version-not-supported"},
		{AbortSourceProvider.String(), "service-provider"},
		{AbortUnexpectedPDU.String(), "unexpected-PDU"},
		{ContextTransferSyntaxesNotSupported.String(), "transfer-syntaxes-not-supported"},
		{UserIdentityJWT.String(), "jwt"},
		{MakeAE(" CT1 ").String(), "CT1"},
		{AE([16]byte{'A', 'B', 0, 0}).String(), "AB"},
	} {
		if c.got != c.want {
			t.Errorf("got %q, want %q", c.got, c.want)
		}
	}
}

func rqWith(items ...[]byte) []byte {
	body := cat(append([][]byte{h("0001 0000"), aeDICOMGW, aeSTORESCU, zeros32}, items...)...)
	return cat([]byte{1, 0}, be32(len(body)), body)
}

func be32(n int) []byte { return []byte{byte(n >> 24), byte(n >> 16), byte(n >> 8), byte(n)} }

var (
	appCtx  = cat(h("10 00 0015"), s("1.2.840.10008.3.1.1.1"))
	echoPC  = cat(h("20 00 002E 01 000000"), h("30 00 0011"), s("1.2.840.10008.1.1"), h("40 00 0011"), s("1.2.840.10008.1.2"))
	minUser = h("50 00 0008 51 00 0004 00004000")
)

// TestReaderBounds: each length off the wire is checked against its bound
// before anything is sized by it, and each malformation gets the abort
// reason PS3.8 9.3 and Table 9-26 call for.
func TestReaderBounds(t *testing.T) {
	lim := Limits{MaxPDataLength: 16, MaxAssociateLength: 4096}
	cases := []struct {
		name   string
		wire   []byte
		reason AbortReason // 0xFF: no protocol error expected
		ioErr  error
	}{
		{"unknown PDU type 0x08", h("08 00 00000004 00000000"), AbortUnrecognizedPDU, nil},
		{"unknown PDU type 0x00", h("00 00 FFFFFFFF"), AbortUnrecognizedPDU, nil},
		{"HTTP request", s("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), AbortUnrecognizedPDU, nil},
		{"TLS client hello", h("16 03 01 00 C8 01 00 00 C4"), AbortUnrecognizedPDU, nil},
		{"RQ length 0xFFFFFFFF", h("01 00 FFFFFFFF 0001"), AbortInvalidPDUParameterValue, nil},
		{"RQ above cap", cat(h("01 00"), be32(4097)), AbortInvalidPDUParameterValue, nil},
		{"RQ length 67", cat(h("01 00 00000043"), make([]byte, 67)), AbortInvalidPDUParameterValue, nil},
		{"RQ 68 bytes no items", cat(h("01 00 00000044"), make([]byte, 68)), AbortInvalidPDUParameterValue, nil},
		{"RQ minimal valid", rqWith(appCtx, echoPC, minUser), 0xFF, nil},
		{"RQ no presentation context", rqWith(appCtx, minUser), AbortInvalidPDUParameterValue, nil},
		{"RQ no user information", rqWith(appCtx, echoPC), AbortInvalidPDUParameterValue, nil},
		{"RQ no application context", rqWith(echoPC, minUser), AbortInvalidPDUParameterValue, nil},
		{"RQ unknown item skipped", rqWith(appCtx, h("77 00 0003 010203"), echoPC, minUser), 0xFF, nil},
		{"RQ item overruns PDU", rqWith(appCtx, echoPC, h("50 00 0009 51 00 0004 00004000")), AbortInvalidPDUParameterValue, nil},
		{"RQ truncated item header", rqWith(appCtx, echoPC, minUser, h("10 00")), AbortInvalidPDUParameterValue, nil},
		{"RQ sub-item overruns PC", rqWith(appCtx, cat(h("20 00 0016 01 000000"), h("30 00 0011"), s("1.2.840.10008.1")), minUser), AbortInvalidPDUParameterValue, nil},
		{"RQ PC without TS", rqWith(appCtx, cat(h("20 00 0019 01 000000"), h("30 00 0011"), s("1.2.840.10008.1.1")), minUser), AbortInvalidPDUParameterValue, nil},
		{"RQ PC AC item in RQ", rqWith(appCtx, echoPC, h("21 00 0004 01 00 00 00"), minUser), AbortUnexpectedPDUParameter, nil},
		{"RQ two application contexts", rqWith(appCtx, appCtx, echoPC, minUser), AbortUnexpectedPDUParameter, nil},
		{"RQ max length sub-item of 3 bytes", rqWith(appCtx, echoPC, h("50 00 0007 51 00 0003 000040")), AbortInvalidPDUParameterValue, nil},
		{"RQ role selection UID overruns", rqWith(appCtx, echoPC, h("50 00 0007 54 00 0003 0009 01")), AbortInvalidPDUParameterValue, nil},
		{"RQ user identity trailing bytes", rqWith(appCtx, echoPC, h("50 00 000B 58 00 0007 01 00 0000 0000 FF")), AbortInvalidPDUParameterValue, nil},
		{"RQ unknown sub-item skipped", rqWith(appCtx, echoPC, h("50 00 000E 51 00 0004 00004000 5F 00 0002 0102")), 0xFF, nil},
		{"RQ truncated body", h("01 00 00000100 0001 0000"), 0, io.ErrUnexpectedEOF},
		{"P-DATA at the limit", h("04 00 00000010 0000000C 01 02 00112233445566778899"), 0xFF, nil},
		{"P-DATA above the limit", h("04 00 00000011"), AbortInvalidPDUParameterValue, nil},
		{"P-DATA length 0xFFFFFFFF", h("04 00 FFFFFFFF"), AbortInvalidPDUParameterValue, nil},
		{"P-DATA empty", h("04 00 00000000"), AbortInvalidPDUParameterValue, nil},
		{"PDV length 1", h("04 00 00000005 00000001 01"), AbortInvalidPDUParameterValue, nil},
		{"PDV overruns PDU", h("04 00 00000008 00000005 01 02 AABB"), AbortInvalidPDUParameterValue, nil},
		{"PDV trailing 3 bytes", h("04 00 00000009 00000002 01 02 000000"), AbortInvalidPDUParameterValue, nil},
		{"PDV length 0xFFFFFFFF", h("04 00 00000006 FFFFFFFF 0102"), AbortInvalidPDUParameterValue, nil},
		{"P-DATA truncated", h("04 00 00000008 00000004 0102"), 0, io.ErrUnexpectedEOF},
		{"release RQ length 3", h("05 00 00000003 000000"), AbortInvalidPDUParameterValue, nil},
		{"release RP length 5", h("06 00 00000005 0000000000"), AbortInvalidPDUParameterValue, nil},
		{"abort length 0", h("07 00 00000000"), AbortInvalidPDUParameterValue, nil},
		{"reject length 0xFFFFFFFF", h("03 00 FFFFFFFF"), AbortInvalidPDUParameterValue, nil},
		{"header cut short", h("01 00 0000"), 0, io.ErrUnexpectedEOF},
		{"nothing", nil, 0, io.EOF},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			src := bytes.NewReader(c.wire)
			_, err := NewReader(src, lim, nil).ReadPDU()
			switch {
			case c.ioErr != nil:
				if !errors.Is(err, c.ioErr) {
					t.Fatalf("err = %v, want %v", err, c.ioErr)
				}
				if _, ok := AbortReasonOf(err); ok {
					t.Fatalf("I/O error %v reported as a protocol error", err)
				}
			case c.reason == 0xFF:
				if err != nil {
					t.Fatalf("unexpected error %v", err)
				}
			default:
				reason, ok := AbortReasonOf(err)
				if !ok || reason != c.reason {
					t.Fatalf("err = %v, want a protocol error with reason %v", err, c.reason)
				}
			}
		})
	}
}

// TestUnknownPDUReadsNothing: the body of an unrecognized PDU is not read,
// whatever length it declares.
func TestUnknownPDUReadsNothing(t *testing.T) {
	src := bytes.NewReader(cat(h("0A 00 7FFFFFFF"), make([]byte, 100)))
	_, err := NewReader(src, Limits{}, nil).ReadPDU()
	if r, _ := AbortReasonOf(err); r != AbortUnrecognizedPDU {
		t.Fatalf("err = %v", err)
	}
	if src.Len() != 100 {
		t.Fatalf("%d body bytes were consumed", 100-src.Len())
	}
}

// TestDeclaredLengthDoesNotSizeAllocation: a peer that declares a 1 MiB
// A-ASSOCIATE-RQ and sends 100 bytes costs about 100 bytes, not 1 MiB.
func TestDeclaredLengthDoesNotSizeAllocation(t *testing.T) {
	wire := cat(h("01 00 000FFFFF"), make([]byte, 100))
	allocs := testing.AllocsPerRun(20, func() {
		_, err := NewReader(bytes.NewReader(wire), Limits{MaxAssociateLength: 1 << 20}, nil).ReadPDU()
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatal(err)
		}
	})
	if allocs > 10 {
		t.Fatalf("%.0f allocations", allocs)
	}
	var got int
	r := &countingReader{r: bytes.NewReader(wire)}
	buf, err := readGrowing(r, 1<<20-1)
	if err == nil || buf != nil {
		t.Fatal("readGrowing succeeded on a short stream")
	}
	got = r.maxAsk
	if got > 8192 {
		t.Fatalf("readGrowing asked for %d bytes at once with only 100 available", got)
	}
}

type countingReader struct {
	r      io.Reader
	maxAsk int
}

func (c *countingReader) Read(p []byte) (int, error) {
	c.maxAsk = max(c.maxAsk, len(p))
	return c.r.Read(p)
}

// TestPDataBufferReuse: P-DATA payload lands in a pooled buffer; a Reader
// holds none between PDUs once Release is called.
func TestPDataBufferReuse(t *testing.T) {
	pool := NewPool(64)
	one := h("04 00 00000008 00000004 01 02 AABB")
	wire := bytes.Repeat(one, 100)
	r := NewReader(bytes.NewReader(wire), Limits{MaxPDataLength: 64}, pool)
	want := h("AABB")
	allocs := testing.AllocsPerRun(50, func() {
		p, err := r.ReadPDU()
		if err != nil {
			t.Fatal(err)
		}
		if pd := p.(*PDataTF); len(pd.PDVs) != 1 || !bytes.Equal(pd.PDVs[0].Data, want) {
			t.Fatalf("%+v", pd)
		}
	})
	if allocs > 0 {
		t.Fatalf("%.1f allocations per P-DATA-TF", allocs)
	}
	r.Release()
	if r.buf != nil {
		t.Fatal("buffer still on loan after Release")
	}
}

// TestUIDPadding: trailing NUL or space padding on a UID in an item is not
// part of the UID.
func TestUIDPadding(t *testing.T) {
	pc := cat(h("20 00 0030 01 000000"), h("30 00 0012"), s("1.2.840.10008.1.1\x00"), h("40 00 0012"), s("1.2.840.10008.1.2 "))
	p, err := Decode(rqWith(appCtx, pc, minUser))
	if err != nil {
		t.Fatal(err)
	}
	got := p.(*AssociateRQ).PresentationContexts[0]
	if got.AbstractSyntax != "1.2.840.10008.1.1" || got.TransferSyntaxes[0] != "1.2.840.10008.1.2" {
		t.Fatalf("%+v", got)
	}
}

func TestEncodeTooLong(t *testing.T) {
	_, err := Encode(&AssociateRQ{ApplicationContext: strings.Repeat("1", 70000)})
	if !errors.Is(err, ErrEncode) {
		t.Fatalf("err = %v", err)
	}
	_, err = Encode(&AssociateRQ{UserInfo: UserInformation{UserIdentityRQ: &UserIdentityRQ{Primary: make([]byte, 70000)}}})
	if !errors.Is(err, ErrEncode) {
		t.Fatalf("err = %v", err)
	}
}
