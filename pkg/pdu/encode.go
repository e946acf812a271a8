package pdu

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Append appends the wire encoding of p (header included) to b. All integers
// are big-endian (PS3.8 9.3.1).
func Append(b []byte, p PDU) ([]byte, error) {
	start := len(b)
	b = append(b, byte(p.Type()), 0, 0, 0, 0, 0)
	b, err := p.appendBody(b)
	if err != nil {
		return b[:start], err
	}
	n := len(b) - start - HeaderLen
	if uint64(n) > math.MaxUint32 {
		return b[:start], fmt.Errorf("%w: %v body of %d bytes", ErrEncode, p.Type(), n)
	}
	binary.BigEndian.PutUint32(b[start+2:], uint32(n))
	return b, nil
}

// Encode returns the wire encoding of p.
func Encode(p PDU) ([]byte, error) { return Append(nil, p) }

func (p *AssociateRQ) appendBody(b []byte) ([]byte, error) {
	b = appendAssociateFixed(b, p.ProtocolVersion, p.CalledAE, p.CallingAE, p.Reserved)
	var err error
	if b, err = appendStringItem(b, ItemApplicationContext, p.ApplicationContext); err != nil {
		return b, err
	}
	for _, pc := range p.PresentationContexts {
		if b, err = appendItem(b, ItemPresentationContextRQ, func(b []byte) ([]byte, error) {
			b = append(b, pc.ID, 0, 0, 0)
			b, err := appendStringItem(b, ItemAbstractSyntax, pc.AbstractSyntax)
			if err != nil {
				return b, err
			}
			for _, ts := range pc.TransferSyntaxes {
				if b, err = appendStringItem(b, ItemTransferSyntax, ts); err != nil {
					return b, err
				}
			}
			return b, nil
		}); err != nil {
			return b, err
		}
	}
	return appendUserInfo(b, &p.UserInfo)
}

func (p *AssociateAC) appendBody(b []byte) ([]byte, error) {
	b = appendAssociateFixed(b, p.ProtocolVersion, p.CalledAE, p.CallingAE, p.Reserved)
	var err error
	if b, err = appendStringItem(b, ItemApplicationContext, p.ApplicationContext); err != nil {
		return b, err
	}
	for _, pc := range p.PresentationContexts {
		if b, err = appendItem(b, ItemPresentationContextAC, func(b []byte) ([]byte, error) {
			b = append(b, pc.ID, 0, byte(pc.Result), 0)
			// PS3.8 9.3.3.2: the transfer syntax sub-item is always present;
			// its value is not significant unless the context is accepted.
			return appendStringItem(b, ItemTransferSyntax, pc.TransferSyntax)
		}); err != nil {
			return b, err
		}
	}
	return appendUserInfo(b, &p.UserInfo)
}

func appendAssociateFixed(b []byte, version uint16, called, calling AE, reserved [32]byte) []byte {
	b = binary.BigEndian.AppendUint16(b, version)
	b = append(b, 0, 0)
	b = append(b, called[:]...)
	b = append(b, calling[:]...)
	return append(b, reserved[:]...)
}

func (p *AssociateRJ) appendBody(b []byte) ([]byte, error) {
	return append(b, 0, byte(p.Result), byte(p.Source), byte(p.Reason)), nil
}

func (p *ReleaseRQ) appendBody(b []byte) ([]byte, error) { return append(b, 0, 0, 0, 0), nil }

func (p *ReleaseRP) appendBody(b []byte) ([]byte, error) { return append(b, 0, 0, 0, 0), nil }

func (p *Abort) appendBody(b []byte) ([]byte, error) {
	return append(b, 0, 0, byte(p.Source), byte(p.Reason)), nil
}

func (p *PDataTF) appendBody(b []byte) ([]byte, error) {
	for _, v := range p.PDVs {
		b = AppendPDV(b, v.ContextID, v.Command, v.Last, v.Data)
	}
	return b, nil
}

// AppendPDV appends one presentation data value item (PS3.8 9.3.5.1).
func AppendPDV(b []byte, contextID uint8, command, last bool, data []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(2+len(data)))
	var mch byte
	if command {
		mch |= pdvCommand
	}
	if last {
		mch |= pdvLast
	}
	b = append(b, contextID, mch)
	return append(b, data...)
}

// AppendPDataHeader appends the header of a P-DATA-TF PDU whose PDV items
// total bodyLen bytes, for callers that write the PDVs themselves.
func AppendPDataHeader(b []byte, bodyLen uint32) []byte {
	b = append(b, byte(TypePDataTF), 0)
	return binary.BigEndian.AppendUint32(b, bodyLen)
}

// appendItem appends an item header with a 16-bit length (PS3.8 9.3.2) and a
// body written by fn, then fills in the length.
func appendItem(b []byte, t ItemType, fn func([]byte) ([]byte, error)) ([]byte, error) {
	start := len(b)
	b = append(b, byte(t), 0, 0, 0)
	b, err := fn(b)
	if err != nil {
		return b[:start], err
	}
	n := len(b) - start - 4
	if n > math.MaxUint16 {
		return b[:start], fmt.Errorf("%w: %v item of %d bytes", ErrEncode, t, n)
	}
	binary.BigEndian.PutUint16(b[start+2:], uint16(n))
	return b, nil
}

func appendStringItem(b []byte, t ItemType, s string) ([]byte, error) {
	return appendItem(b, t, func(b []byte) ([]byte, error) { return append(b, s...), nil })
}

// appendLV16 appends a 16-bit length followed by the value, the shape of the
// fields inside sub-items 54, 56, 57, 58 and 59.
func appendLV16(b []byte, v []byte) ([]byte, error) {
	if len(v) > math.MaxUint16 {
		return b, fmt.Errorf("%w: field of %d bytes", ErrEncode, len(v))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...), nil
}

func appendUserInfo(b []byte, u *UserInformation) ([]byte, error) {
	return appendItem(b, ItemUserInformation, func(b []byte) ([]byte, error) {
		var err error
		if u.HasMaxLength {
			b, _ = appendItem(b, ItemMaximumLength, func(b []byte) ([]byte, error) {
				return binary.BigEndian.AppendUint32(b, u.MaxLength), nil
			})
		}
		if u.ImplementationClassUID != "" {
			if b, err = appendStringItem(b, ItemImplementationClassUID, u.ImplementationClassUID); err != nil {
				return b, err
			}
		}
		if w := u.AsyncOperations; w != nil {
			b, _ = appendItem(b, ItemAsyncOperationsWindow, func(b []byte) ([]byte, error) {
				b = binary.BigEndian.AppendUint16(b, w.MaxInvoked)
				return binary.BigEndian.AppendUint16(b, w.MaxPerformed), nil
			})
		}
		for _, r := range u.RoleSelections {
			if b, err = appendItem(b, ItemRoleSelection, func(b []byte) ([]byte, error) {
				b, err := appendLV16(b, []byte(r.SOPClassUID))
				return append(b, boolByte(r.SCU), boolByte(r.SCP)), err
			}); err != nil {
				return b, err
			}
		}
		if u.ImplementationVersionName != "" {
			if b, err = appendStringItem(b, ItemImplementationVersion, u.ImplementationVersionName); err != nil {
				return b, err
			}
		}
		for _, e := range u.SOPClassExtended {
			if b, err = appendItem(b, ItemSOPClassExtended, func(b []byte) ([]byte, error) {
				b, err := appendLV16(b, []byte(e.SOPClassUID))
				return append(b, e.Info...), err
			}); err != nil {
				return b, err
			}
		}
		for _, e := range u.SOPClassCommonExtended {
			if b, err = appendItem(b, ItemSOPClassCommonExtended, func(b []byte) ([]byte, error) {
				return appendCommonExtended(b, e)
			}); err != nil {
				return b, err
			}
		}
		if id := u.UserIdentityRQ; id != nil {
			if b, err = appendItem(b, ItemUserIdentityRQ, func(b []byte) ([]byte, error) {
				b = append(b, byte(id.Type), boolByte(id.PositiveResponseRequested))
				b, err := appendLV16(b, id.Primary)
				if err != nil {
					return b, err
				}
				return appendLV16(b, id.Secondary)
			}); err != nil {
				return b, err
			}
		}
		if id := u.UserIdentityAC; id != nil {
			if b, err = appendItem(b, ItemUserIdentityAC, func(b []byte) ([]byte, error) {
				return appendLV16(b, id.ServerResponse)
			}); err != nil {
				return b, err
			}
		}
		return b, nil
	})
}

func appendCommonExtended(b []byte, e SOPClassCommonExtended) ([]byte, error) {
	b, err := appendLV16(b, []byte(e.SOPClassUID))
	if err != nil {
		return b, err
	}
	if b, err = appendLV16(b, []byte(e.ServiceClassUID)); err != nil {
		return b, err
	}
	// PS3.7 D.3.3.6: the related general SOP class identification is itself a
	// 16-bit length followed by a list of (16-bit length, UID).
	lenAt := len(b)
	b = append(b, 0, 0)
	for _, uid := range e.RelatedGeneralSOPClasses {
		if b, err = appendLV16(b, []byte(uid)); err != nil {
			return b, err
		}
	}
	n := len(b) - lenAt - 2
	if n > math.MaxUint16 {
		return b, fmt.Errorf("%w: related general SOP classes of %d bytes", ErrEncode, n)
	}
	binary.BigEndian.PutUint16(b[lenAt:], uint16(n))
	return b, nil
}

func boolByte(v bool) byte {
	if v {
		return 1
	}
	return 0
}
