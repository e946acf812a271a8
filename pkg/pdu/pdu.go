package pdu

import (
	"bytes"
	"strings"
)

// HeaderLen is the size of the fixed PDU header: type, reserved, length (u32).
const HeaderLen = 6

// PDU is one decoded protocol data unit.
type PDU interface {
	Type() Type
	// appendBody appends the variable part (everything after the 6-byte
	// header). It fails only when a value does not fit its length field.
	appendBody(b []byte) ([]byte, error)
}

// AE is an application entity title as it sits in the fixed fields of an
// A-ASSOCIATE PDU: 16 bytes, padded with spaces (PS3.8 9.3.2, PS3.5 6.2 AE).
type AE [16]byte

// MakeAE pads s with spaces to 16 bytes. Longer titles are cut: callers
// validate titles before they get here.
func MakeAE(s string) AE {
	var a AE
	for i := range a {
		a[i] = ' '
	}
	copy(a[:], s)
	return a
}

// String returns the title without its leading and trailing spaces (they are
// not significant, PS3.5 6.2) and without NUL padding some peers send.
func (a AE) String() string {
	return strings.Trim(string(bytes.TrimRight(a[:], "\x00")), " ")
}

// AssociateRQ is an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2).
type AssociateRQ struct {
	ProtocolVersion      uint16
	CalledAE             AE
	CallingAE            AE
	Reserved             [32]byte // sent back unchanged in the AC; never checked
	ApplicationContext   string
	PresentationContexts []PresentationContextRQ
	UserInfo             UserInformation
}

// AssociateAC is an A-ASSOCIATE-AC PDU (PS3.8 9.3.3). The called and calling
// AE fields and the reserved bytes echo those of the request (PS3.8 9.3.3:
// "shall be sent with a value identical to the value received").
type AssociateAC struct {
	ProtocolVersion      uint16
	CalledAE             AE
	CallingAE            AE
	Reserved             [32]byte
	ApplicationContext   string
	PresentationContexts []PresentationContextAC
	UserInfo             UserInformation
}

// AssociateRJ is an A-ASSOCIATE-RJ PDU (PS3.8 9.3.4).
type AssociateRJ struct {
	Result RejectResult
	Source RejectSource
	Reason RejectReason
}

// PDataTF is a P-DATA-TF PDU (PS3.8 9.3.5). PDVs read by a Reader alias the
// Reader's buffer and are valid only until its next ReadPDU.
type PDataTF struct {
	PDVs []PDV
}

// ReleaseRQ is an A-RELEASE-RQ PDU (PS3.8 9.3.6).
type ReleaseRQ struct{}

// ReleaseRP is an A-RELEASE-RP PDU (PS3.8 9.3.7).
type ReleaseRP struct{}

// Abort is an A-ABORT PDU (PS3.8 9.3.8).
type Abort struct {
	Source AbortSource
	Reason AbortReason
}

// PresentationContextRQ is a presentation context item of a request:
// one abstract syntax, one or more transfer syntaxes (PS3.8 9.3.2.2).
type PresentationContextRQ struct {
	ID               uint8
	AbstractSyntax   string
	TransferSyntaxes []string
}

// PresentationContextAC is a presentation context item of an accept
// (PS3.8 9.3.3.2). TransferSyntax is significant only on acceptance.
type PresentationContextAC struct {
	ID             uint8
	Result         ContextResult
	TransferSyntax string
}

// PDV is a presentation data value item (PS3.8 9.3.5.1, Annex E.2).
type PDV struct {
	ContextID uint8
	Command   bool // message control header bit 0: command (1) or data set (0)
	Last      bool // bit 1: last fragment
	Data      []byte
}

// Message control header bits (PS3.8 E.2). The other bits are ignored on
// receipt and sent as zero.
const (
	pdvCommand = 0x01
	pdvLast    = 0x02
)

// PDVHeaderLen is the item length field (4) plus context ID and message
// control header (2) preceding each fragment.
const PDVHeaderLen = 6

// UserInformation holds the user information sub-items (PS3.8 9.3.2.3,
// PS3.7 Annex D.3.3). Zero values mean "absent", except MaxLength which has
// HasMaxLength because 0 is a meaningful value (no limit, PS3.8 D.1).
type UserInformation struct {
	HasMaxLength              bool
	MaxLength                 uint32
	ImplementationClassUID    string
	ImplementationVersionName string
	AsyncOperations           *AsyncOperationsWindow
	RoleSelections            []RoleSelection
	SOPClassExtended          []SOPClassExtended
	SOPClassCommonExtended    []SOPClassCommonExtended
	UserIdentityRQ            *UserIdentityRQ
	UserIdentityAC            *UserIdentityAC
}

// AsyncOperationsWindow is sub-item 53 (PS3.7 D.3.3.3).
type AsyncOperationsWindow struct {
	MaxInvoked   uint16
	MaxPerformed uint16
}

// RoleSelection is sub-item 54 (PS3.7 D.3.3.4).
type RoleSelection struct {
	SOPClassUID string
	SCU         bool
	SCP         bool
}

// SOPClassExtended is sub-item 56 (PS3.7 D.3.3.5).
type SOPClassExtended struct {
	SOPClassUID string
	Info        []byte
}

// SOPClassCommonExtended is sub-item 57 (PS3.7 D.3.3.6).
type SOPClassCommonExtended struct {
	SOPClassUID              string
	ServiceClassUID          string
	RelatedGeneralSOPClasses []string
}

// UserIdentityRQ is sub-item 58 (PS3.7 D.3.3.7.1).
type UserIdentityRQ struct {
	Type                      UserIdentityType
	PositiveResponseRequested bool
	Primary                   []byte
	Secondary                 []byte
}

// UserIdentityAC is sub-item 59 (PS3.7 D.3.3.7.2).
type UserIdentityAC struct {
	ServerResponse []byte
}

// Type implements PDU.
func (*AssociateRQ) Type() Type { return TypeAssociateRQ }

// Type implements PDU.
func (*AssociateAC) Type() Type { return TypeAssociateAC }

// Type implements PDU.
func (*AssociateRJ) Type() Type { return TypeAssociateRJ }

// Type implements PDU.
func (*PDataTF) Type() Type { return TypePDataTF }

// Type implements PDU.
func (*ReleaseRQ) Type() Type { return TypeReleaseRQ }

// Type implements PDU.
func (*ReleaseRP) Type() Type { return TypeReleaseRP }

// Type implements PDU.
func (*Abort) Type() Type { return TypeAbort }
