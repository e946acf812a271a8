package pdu

import (
	"encoding/binary"
	"strings"
)

// associateFixedLen is the fixed part of an A-ASSOCIATE-RQ/AC body before the
// variable items: protocol version, reserved, called AE, calling AE, reserved
// (PS3.8 Table 9-11).
const associateFixedLen = 68

// Decode decodes one whole PDU, header included. It is the codec entry point
// for tests and for callers that already hold the bytes; network input goes
// through Reader, which checks lengths before reading. PDVs of a P-DATA-TF
// alias b.
func Decode(b []byte) (PDU, error) {
	if len(b) < HeaderLen {
		return nil, errorf(0, AbortInvalidPDUParameterValue, len(b), "%d bytes is shorter than a PDU header", len(b))
	}
	t := Type(b[0])
	n := binary.BigEndian.Uint32(b[2:])
	if uint64(n) != uint64(len(b)-HeaderLen) {
		return nil, errorf(t, AbortInvalidPDUParameterValue, 2, "PDU length %d, but %d bytes follow the header", n, len(b)-HeaderLen)
	}
	var pd PDataTF
	return decodeBody(t, b[HeaderLen:], &pd)
}

// decodeBody decodes the variable part of a PDU of type t. For P-DATA-TF it
// fills and returns pd, reusing its PDV slice.
func decodeBody(t Type, body []byte, pd *PDataTF) (PDU, error) {
	switch t {
	case TypeAssociateRQ:
		return decodeAssociateRQ(body)
	case TypeAssociateAC:
		return decodeAssociateAC(body)
	case TypeAssociateRJ:
		if err := checkFixed4(t, body); err != nil {
			return nil, err
		}
		return &AssociateRJ{Result: RejectResult(body[1]), Source: RejectSource(body[2]), Reason: RejectReason(body[3])}, nil
	case TypePDataTF:
		if err := decodePData(body, pd); err != nil {
			return nil, err
		}
		return pd, nil
	case TypeReleaseRQ:
		if err := checkFixed4(t, body); err != nil {
			return nil, err
		}
		return &ReleaseRQ{}, nil
	case TypeReleaseRP:
		if err := checkFixed4(t, body); err != nil {
			return nil, err
		}
		return &ReleaseRP{}, nil
	case TypeAbort:
		if err := checkFixed4(t, body); err != nil {
			return nil, err
		}
		return &Abort{Source: AbortSource(body[2]), Reason: AbortReason(body[3])}, nil
	}
	return nil, errorf(t, AbortUnrecognizedPDU, 0, "unrecognized PDU type")
}

// checkFixed4: A-ASSOCIATE-RJ, A-RELEASE-RQ/RP and A-ABORT all have a
// 4-byte body (PS3.8 Tables 9-21, 9-24, 9-25, 9-26).
func checkFixed4(t Type, body []byte) error {
	if len(body) != 4 {
		return errorf(t, AbortInvalidPDUParameterValue, 2, "PDU length %d, must be 4", len(body))
	}
	return nil
}

// decodePData splits a P-DATA-TF body into PDVs (PS3.8 9.3.5). Every PDV
// must fit inside the PDU and hold at least its context ID and message
// control header; a P-DATA-TF holds one or more PDVs.
func decodePData(body []byte, pd *PDataTF) error {
	pd.PDVs = pd.PDVs[:0]
	if len(body) == 0 {
		return errorf(TypePDataTF, AbortInvalidPDUParameterValue, HeaderLen, "P-DATA-TF without presentation data values")
	}
	off := 0
	for off < len(body) {
		if len(body)-off < 4 {
			return errorf(TypePDataTF, AbortInvalidPDUParameterValue, HeaderLen+off, "%d trailing bytes cannot hold a PDV item length", len(body)-off)
		}
		n := binary.BigEndian.Uint32(body[off:])
		if n < 2 {
			return errorf(TypePDataTF, AbortInvalidPDUParameterValue, HeaderLen+off, "PDV item length %d is less than 2", n)
		}
		if uint64(n) > uint64(len(body)-off-4) {
			return errorf(TypePDataTF, AbortInvalidPDUParameterValue, HeaderLen+off, "PDV item length %d overruns the PDU (%d bytes left)", n, len(body)-off-4)
		}
		v := body[off+4 : off+4+int(n)]
		pd.PDVs = append(pd.PDVs, PDV{
			ContextID: v[0],
			Command:   v[1]&pdvCommand != 0,
			Last:      v[1]&pdvLast != 0,
			Data:      v[2:],
		})
		off += 4 + int(n)
	}
	return nil
}

// itemIter walks the items of an A-ASSOCIATE PDU or the sub-items of an
// item: type (1), reserved (1), length (u16), value. base is the offset of
// b[0] within the PDU, for error messages.
type itemIter struct {
	pdu  Type
	b    []byte
	base int
	off  int
}

// next returns the next item; ok is false at the end. An item whose length
// overruns its parent is an error.
func (it *itemIter) next() (t ItemType, value []byte, at int, ok bool, err error) {
	if it.off >= len(it.b) {
		return 0, nil, 0, false, nil
	}
	at = it.base + it.off
	if len(it.b)-it.off < 4 {
		return 0, nil, at, false, errorf(it.pdu, AbortInvalidPDUParameterValue, at, "%d trailing bytes cannot hold an item header", len(it.b)-it.off)
	}
	t = ItemType(it.b[it.off])
	n := int(binary.BigEndian.Uint16(it.b[it.off+2:]))
	if n > len(it.b)-it.off-4 {
		return 0, nil, at, false, errorf(it.pdu, AbortInvalidPDUParameterValue, at, "%v item length %d overruns its parent (%d bytes left)", t, n, len(it.b)-it.off-4)
	}
	value = it.b[it.off+4 : it.off+4+n]
	it.off += 4 + n
	return t, value, at, true, nil
}

// uidString turns a UID field into a string. UIDs in items are not padded
// (PS3.8 Annex F), but some implementations pad with a NUL or a space as
// data elements are; that padding is not part of the UID.
func uidString(b []byte) string {
	return strings.TrimRight(string(b), "\x00 ")
}

type associateCommon struct {
	version         uint16
	called, calling AE
	reserved        [32]byte
	appContext      string
	sawAppContext   bool
	userInfo        UserInformation
	sawUserInfo     bool
}

// decodeAssociate decodes the part common to RQ and AC and calls pc for each
// presentation context item of the kind the PDU may carry.
func decodeAssociate(t Type, body []byte, pcType ItemType, pc func(value []byte, at int) error) (*associateCommon, error) {
	if len(body) < associateFixedLen {
		return nil, errorf(t, AbortInvalidPDUParameterValue, HeaderLen, "body of %d bytes is shorter than the %d fixed bytes", len(body), associateFixedLen)
	}
	c := &associateCommon{version: binary.BigEndian.Uint16(body)}
	copy(c.called[:], body[4:20])
	copy(c.calling[:], body[20:36])
	copy(c.reserved[:], body[36:68])
	it := itemIter{pdu: t, b: body[associateFixedLen:], base: HeaderLen + associateFixedLen}
	for {
		typ, v, at, ok, err := it.next()
		if err != nil {
			return nil, err
		}
		if !ok {
			break
		}
		switch typ {
		case ItemApplicationContext:
			if c.sawAppContext {
				return nil, errorf(t, AbortUnexpectedPDUParameter, at, "second application context item")
			}
			c.sawAppContext = true
			c.appContext = uidString(v)
		case pcType:
			if err := pc(v, at); err != nil {
				return nil, err
			}
		case ItemUserInformation:
			if c.sawUserInfo {
				return nil, errorf(t, AbortUnexpectedPDUParameter, at, "second user information item")
			}
			c.sawUserInfo = true
			if err := decodeUserInfo(t, v, at+4, &c.userInfo); err != nil {
				return nil, err
			}
		case ItemPresentationContextRQ, ItemPresentationContextAC, ItemAbstractSyntax, ItemTransferSyntax,
			ItemMaximumLength, ItemImplementationClassUID, ItemAsyncOperationsWindow, ItemRoleSelection,
			ItemImplementationVersion, ItemSOPClassExtended, ItemSOPClassCommonExtended, ItemUserIdentityRQ, ItemUserIdentityAC:
			return nil, errorf(t, AbortUnexpectedPDUParameter, at, "%v item where it does not belong", typ)
		default:
			// PS3.8 9.3.1: items of unknown type are ignored.
		}
	}
	if !c.sawAppContext {
		return nil, errorf(t, AbortInvalidPDUParameterValue, -1, "no application context item")
	}
	if !c.sawUserInfo {
		return nil, errorf(t, AbortInvalidPDUParameterValue, -1, "no user information item")
	}
	return c, nil
}

func decodeAssociateRQ(body []byte) (*AssociateRQ, error) {
	var pcs []PresentationContextRQ
	c, err := decodeAssociate(TypeAssociateRQ, body, ItemPresentationContextRQ, func(v []byte, at int) error {
		pc, err := decodeContextRQ(v, at)
		if err == nil {
			pcs = append(pcs, pc)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if len(pcs) == 0 {
		return nil, errorf(TypeAssociateRQ, AbortInvalidPDUParameterValue, -1, "no presentation context item")
	}
	return &AssociateRQ{
		ProtocolVersion: c.version, CalledAE: c.called, CallingAE: c.calling, Reserved: c.reserved,
		ApplicationContext: c.appContext, PresentationContexts: pcs, UserInfo: c.userInfo,
	}, nil
}

func decodeAssociateAC(body []byte) (*AssociateAC, error) {
	var pcs []PresentationContextAC
	c, err := decodeAssociate(TypeAssociateAC, body, ItemPresentationContextAC, func(v []byte, at int) error {
		pc, err := decodeContextAC(v, at)
		if err == nil {
			pcs = append(pcs, pc)
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return &AssociateAC{
		ProtocolVersion: c.version, CalledAE: c.called, CallingAE: c.calling, Reserved: c.reserved,
		ApplicationContext: c.appContext, PresentationContexts: pcs, UserInfo: c.userInfo,
	}, nil
}

// decodeContextRQ: ID, 3 reserved bytes, one abstract syntax sub-item and one
// or more transfer syntax sub-items (PS3.8 Table 9-13).
func decodeContextRQ(v []byte, at int) (PresentationContextRQ, error) {
	const t = TypeAssociateRQ
	var pc PresentationContextRQ
	if len(v) < 4 {
		return pc, errorf(t, AbortInvalidPDUParameterValue, at, "presentation context item of %d bytes", len(v))
	}
	pc.ID = v[0]
	sawAbstract := false
	it := itemIter{pdu: t, b: v[4:], base: at + 8}
	for {
		typ, sv, sat, ok, err := it.next()
		if err != nil {
			return pc, err
		}
		if !ok {
			break
		}
		switch typ {
		case ItemAbstractSyntax:
			if sawAbstract {
				return pc, errorf(t, AbortUnexpectedPDUParameter, sat, "presentation context %d has a second abstract syntax", pc.ID)
			}
			sawAbstract = true
			pc.AbstractSyntax = uidString(sv)
		case ItemTransferSyntax:
			pc.TransferSyntaxes = append(pc.TransferSyntaxes, uidString(sv))
		default:
			// Unknown sub-items are ignored (PS3.8 9.3.1).
		}
	}
	if !sawAbstract {
		return pc, errorf(t, AbortInvalidPDUParameterValue, at, "presentation context %d has no abstract syntax", pc.ID)
	}
	if len(pc.TransferSyntaxes) == 0 {
		return pc, errorf(t, AbortInvalidPDUParameterValue, at, "presentation context %d has no transfer syntax", pc.ID)
	}
	return pc, nil
}

// decodeContextAC: ID, reserved, result, reserved, one transfer syntax
// sub-item (PS3.8 Table 9-18). The sub-item is not significant when the
// context is rejected, so its absence is tolerated then.
func decodeContextAC(v []byte, at int) (PresentationContextAC, error) {
	const t = TypeAssociateAC
	var pc PresentationContextAC
	if len(v) < 4 {
		return pc, errorf(t, AbortInvalidPDUParameterValue, at, "presentation context item of %d bytes", len(v))
	}
	pc.ID, pc.Result = v[0], ContextResult(v[2])
	sawTS := false
	it := itemIter{pdu: t, b: v[4:], base: at + 8}
	for {
		typ, sv, sat, ok, err := it.next()
		if err != nil {
			return pc, err
		}
		if !ok {
			break
		}
		if typ == ItemTransferSyntax {
			if sawTS {
				return pc, errorf(t, AbortUnexpectedPDUParameter, sat, "presentation context %d has a second transfer syntax", pc.ID)
			}
			sawTS = true
			pc.TransferSyntax = uidString(sv)
		}
	}
	if !sawTS && pc.Result == ContextAcceptance {
		return pc, errorf(t, AbortInvalidPDUParameterValue, at, "accepted presentation context %d has no transfer syntax", pc.ID)
	}
	return pc, nil
}

// lv16 reads a 16-bit length and that many bytes from b at off.
func lv16(t Type, b []byte, off, base int, what string) ([]byte, int, error) {
	if len(b)-off < 2 {
		return nil, off, errorf(t, AbortInvalidPDUParameterValue, base+off, "%s: no room for its length", what)
	}
	n := int(binary.BigEndian.Uint16(b[off:]))
	if n > len(b)-off-2 {
		return nil, off, errorf(t, AbortInvalidPDUParameterValue, base+off, "%s length %d overruns its item (%d bytes left)", what, n, len(b)-off-2)
	}
	return b[off+2 : off+2+n], off + 2 + n, nil
}

// decodeUserInfo decodes the sub-items of a user information item. base is
// the PDU offset of v[0]. Sub-items may come in any order; unknown ones are
// ignored (PS3.8 9.3.1). Where a sub-item that should appear once appears
// again, the last one wins.
func decodeUserInfo(t Type, v []byte, base int, u *UserInformation) error {
	it := itemIter{pdu: t, b: v, base: base}
	for {
		typ, sv, at, ok, err := it.next()
		if err != nil {
			return err
		}
		if !ok {
			return nil
		}
		vb := at + 4 // PDU offset of sv[0]
		switch typ {
		case ItemMaximumLength:
			if len(sv) != 4 {
				return errorf(t, AbortInvalidPDUParameterValue, at, "maximum length sub-item of %d bytes, must be 4", len(sv))
			}
			u.HasMaxLength, u.MaxLength = true, binary.BigEndian.Uint32(sv)
		case ItemImplementationClassUID:
			u.ImplementationClassUID = uidString(sv)
		case ItemImplementationVersion:
			u.ImplementationVersionName = strings.TrimRight(string(sv), "\x00 ")
		case ItemAsyncOperationsWindow:
			if len(sv) != 4 {
				return errorf(t, AbortInvalidPDUParameterValue, at, "asynchronous operations window sub-item of %d bytes, must be 4", len(sv))
			}
			u.AsyncOperations = &AsyncOperationsWindow{MaxInvoked: binary.BigEndian.Uint16(sv), MaxPerformed: binary.BigEndian.Uint16(sv[2:])}
		case ItemRoleSelection:
			uid, off, err := lv16(t, sv, 0, vb, "role selection SOP class UID")
			if err != nil {
				return err
			}
			if len(sv)-off != 2 {
				return errorf(t, AbortInvalidPDUParameterValue, at, "role selection sub-item has %d bytes after its UID, must be 2", len(sv)-off)
			}
			u.RoleSelections = append(u.RoleSelections, RoleSelection{SOPClassUID: uidString(uid), SCU: sv[off] != 0, SCP: sv[off+1] != 0})
		case ItemSOPClassExtended:
			uid, off, err := lv16(t, sv, 0, vb, "extended negotiation SOP class UID")
			if err != nil {
				return err
			}
			u.SOPClassExtended = append(u.SOPClassExtended, SOPClassExtended{SOPClassUID: uidString(uid), Info: append([]byte(nil), sv[off:]...)})
		case ItemSOPClassCommonExtended:
			e, err := decodeCommonExtended(t, sv, vb)
			if err != nil {
				return err
			}
			u.SOPClassCommonExtended = append(u.SOPClassCommonExtended, e)
		case ItemUserIdentityRQ:
			if len(sv) < 2 {
				return errorf(t, AbortInvalidPDUParameterValue, at, "user identity sub-item of %d bytes", len(sv))
			}
			id := &UserIdentityRQ{Type: UserIdentityType(sv[0]), PositiveResponseRequested: sv[1] != 0}
			primary, off, err := lv16(t, sv, 2, vb, "user identity primary field")
			if err != nil {
				return err
			}
			secondary, off, err := lv16(t, sv, off, vb, "user identity secondary field")
			if err != nil {
				return err
			}
			if off != len(sv) {
				return errorf(t, AbortInvalidPDUParameterValue, at, "user identity sub-item has %d unexpected trailing bytes", len(sv)-off)
			}
			id.Primary, id.Secondary = append([]byte(nil), primary...), append([]byte(nil), secondary...)
			u.UserIdentityRQ = id
		case ItemUserIdentityAC:
			resp, off, err := lv16(t, sv, 0, vb, "user identity server response")
			if err != nil {
				return err
			}
			if off != len(sv) {
				return errorf(t, AbortInvalidPDUParameterValue, at, "user identity AC sub-item has %d unexpected trailing bytes", len(sv)-off)
			}
			u.UserIdentityAC = &UserIdentityAC{ServerResponse: append([]byte(nil), resp...)}
		default:
			// Unknown sub-items are ignored.
		}
	}
}

func decodeCommonExtended(t Type, sv []byte, base int) (SOPClassCommonExtended, error) {
	var e SOPClassCommonExtended
	uid, off, err := lv16(t, sv, 0, base, "common extended SOP class UID")
	if err != nil {
		return e, err
	}
	e.SOPClassUID = uidString(uid)
	svc, off, err := lv16(t, sv, off, base, "common extended service class UID")
	if err != nil {
		return e, err
	}
	e.ServiceClassUID = uidString(svc)
	relBase := base + off + 2
	related, _, err := lv16(t, sv, off, base, "related general SOP class identification")
	if err != nil {
		return e, err
	}
	for r := 0; r < len(related); {
		var u []byte
		if u, r, err = lv16(t, related, r, relBase, "related general SOP class UID"); err != nil {
			return e, err
		}
		e.RelatedGeneralSOPClasses = append(e.RelatedGeneralSOPClasses, uidString(u))
	}
	// Bytes after the related general SOP class list are tolerated: nothing
	// is defined there (PS3.7 D.3.3.6).
	return e, nil
}
