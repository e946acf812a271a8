// Package pdu encodes and decodes the DICOM upper layer protocol data units of
// PS3.8 9.3: the seven PDU types, their items and the user information
// sub-items of PS3.7 Annex D and PS3.8 Annex D.
//
// It is a pure codec: no network, no goroutines, no DICOM data sets. Every
// length read off the wire is checked against a bound before it sizes
// anything (see Reader).
package pdu

import "fmt"

// Type is the PDU-type field, the first byte of every PDU (PS3.8 9.3.1).
type Type uint8

// PDU types, PS3.8 Table 9-11 and following.
const (
	TypeAssociateRQ Type = 0x01
	TypeAssociateAC Type = 0x02
	TypeAssociateRJ Type = 0x03
	TypePDataTF     Type = 0x04
	TypeReleaseRQ   Type = 0x05
	TypeReleaseRP   Type = 0x06
	TypeAbort       Type = 0x07
)

func (t Type) String() string {
	switch t {
	case TypeAssociateRQ:
		return "A-ASSOCIATE-RQ"
	case TypeAssociateAC:
		return "A-ASSOCIATE-AC"
	case TypeAssociateRJ:
		return "A-ASSOCIATE-RJ"
	case TypePDataTF:
		return "P-DATA-TF"
	case TypeReleaseRQ:
		return "A-RELEASE-RQ"
	case TypeReleaseRP:
		return "A-RELEASE-RP"
	case TypeAbort:
		return "A-ABORT"
	}
	return fmt.Sprintf("PDU-type(0x%02X)", uint8(t))
}

// ItemType is the item-type field of the variable items of A-ASSOCIATE PDUs
// (PS3.8 9.3.2) and of the user information sub-items (PS3.8 D.1, PS3.7 D.3.3).
type ItemType uint8

// Item and sub-item types.
const (
	ItemApplicationContext     ItemType = 0x10 // PS3.8 9.3.2.1
	ItemPresentationContextRQ  ItemType = 0x20 // PS3.8 9.3.2.2
	ItemPresentationContextAC  ItemType = 0x21 // PS3.8 9.3.3.2
	ItemAbstractSyntax         ItemType = 0x30 // PS3.8 9.3.2.2.1
	ItemTransferSyntax         ItemType = 0x40 // PS3.8 9.3.2.2.2
	ItemUserInformation        ItemType = 0x50 // PS3.8 9.3.2.3
	ItemMaximumLength          ItemType = 0x51 // PS3.8 D.1
	ItemImplementationClassUID ItemType = 0x52 // PS3.7 D.3.3.2
	ItemAsyncOperationsWindow  ItemType = 0x53 // PS3.7 D.3.3.3
	ItemRoleSelection          ItemType = 0x54 // PS3.7 D.3.3.4
	ItemImplementationVersion  ItemType = 0x55 // PS3.7 D.3.3.2
	ItemSOPClassExtended       ItemType = 0x56 // PS3.7 D.3.3.5
	ItemSOPClassCommonExtended ItemType = 0x57 // PS3.7 D.3.3.6
	ItemUserIdentityRQ         ItemType = 0x58 // PS3.7 D.3.3.7.1
	ItemUserIdentityAC         ItemType = 0x59 // PS3.7 D.3.3.7.2
)

func (t ItemType) String() string {
	switch t {
	case ItemApplicationContext:
		return "application-context"
	case ItemPresentationContextRQ:
		return "presentation-context-rq"
	case ItemPresentationContextAC:
		return "presentation-context-ac"
	case ItemAbstractSyntax:
		return "abstract-syntax"
	case ItemTransferSyntax:
		return "transfer-syntax"
	case ItemUserInformation:
		return "user-information"
	case ItemMaximumLength:
		return "maximum-length"
	case ItemImplementationClassUID:
		return "implementation-class-uid"
	case ItemAsyncOperationsWindow:
		return "asynchronous-operations-window"
	case ItemRoleSelection:
		return "scp-scu-role-selection"
	case ItemImplementationVersion:
		return "implementation-version-name"
	case ItemSOPClassExtended:
		return "sop-class-extended-negotiation"
	case ItemSOPClassCommonExtended:
		return "sop-class-common-extended-negotiation"
	case ItemUserIdentityRQ:
		return "user-identity-rq"
	case ItemUserIdentityAC:
		return "user-identity-ac"
	}
	return fmt.Sprintf("item-type(0x%02X)", uint8(t))
}

// RejectResult is the Result field of an A-ASSOCIATE-RJ (PS3.8 Table 9-21).
type RejectResult uint8

// Reject results.
const (
	RejectPermanent RejectResult = 1
	RejectTransient RejectResult = 2
)

func (r RejectResult) String() string {
	switch r {
	case RejectPermanent:
		return "rejected-permanent"
	case RejectTransient:
		return "rejected-transient"
	}
	return fmt.Sprintf("result(%d)", uint8(r))
}

// RejectSource is the Source field of an A-ASSOCIATE-RJ (PS3.8 Table 9-21).
type RejectSource uint8

// Reject sources.
const (
	RejectSourceUser            RejectSource = 1 // DICOM UL service-user
	RejectSourceProviderACSE    RejectSource = 2 // DICOM UL service-provider (ACSE related function)
	RejectSourceProviderPresent RejectSource = 3 // DICOM UL service-provider (presentation related function)
)

func (s RejectSource) String() string {
	switch s {
	case RejectSourceUser:
		return "service-user"
	case RejectSourceProviderACSE:
		return "service-provider-acse"
	case RejectSourceProviderPresent:
		return "service-provider-presentation"
	}
	return fmt.Sprintf("source(%d)", uint8(s))
}

// RejectReason is the Reason/Diag. field of an A-ASSOCIATE-RJ. Its meaning
// depends on the source (PS3.8 Table 9-21), so String needs both: use
// RejectReasonString.
type RejectReason uint8

// Reject reasons, by source.
const (
	// Source 1, service-user.
	RejectNoReason                     RejectReason = 1
	RejectApplicationContextNotSupport RejectReason = 2
	RejectCallingAENotRecognized       RejectReason = 3
	RejectCalledAENotRecognized        RejectReason = 7
	// Source 2, service-provider (ACSE).
	RejectACSENoReason                RejectReason = 1
	RejectProtocolVersionNotSupported RejectReason = 2
	// Source 3, service-provider (presentation).
	RejectTemporaryCongestion RejectReason = 1
	RejectLocalLimitExceeded  RejectReason = 2
)

// RejectReasonString names a reason in the context of its source.
func RejectReasonString(s RejectSource, r RejectReason) string {
	switch s {
	case RejectSourceUser:
		switch r {
		case 1:
			return "no-reason-given"
		case 2:
			return "application-context-name-not-supported"
		case 3:
			return "calling-AE-title-not-recognized"
		case 7:
			return "called-AE-title-not-recognized"
		}
	case RejectSourceProviderACSE:
		switch r {
		case 1:
			return "no-reason-given"
		case 2:
			return "protocol-version-not-supported"
		}
	case RejectSourceProviderPresent:
		switch r {
		case 1:
			return "temporary-congestion"
		case 2:
			return "local-limit-exceeded"
		}
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// AbortSource is the Source field of an A-ABORT (PS3.8 Table 9-26).
type AbortSource uint8

// Abort sources. The value 1 is reserved.
const (
	AbortSourceUser     AbortSource = 0
	AbortSourceProvider AbortSource = 2
)

func (s AbortSource) String() string {
	switch s {
	case AbortSourceUser:
		return "service-user"
	case 1:
		return "reserved"
	case AbortSourceProvider:
		return "service-provider"
	}
	return fmt.Sprintf("source(%d)", uint8(s))
}

// AbortReason is the Reason/Diag. field of an A-ABORT (PS3.8 Table 9-26). It
// is significant only when the source is the service-provider.
type AbortReason uint8

// Abort reasons.
const (
	AbortNotSpecified             AbortReason = 0
	AbortUnrecognizedPDU          AbortReason = 1
	AbortUnexpectedPDU            AbortReason = 2
	AbortUnrecognizedPDUParameter AbortReason = 4
	AbortUnexpectedPDUParameter   AbortReason = 5
	AbortInvalidPDUParameterValue AbortReason = 6
)

func (r AbortReason) String() string {
	switch r {
	case AbortNotSpecified:
		return "reason-not-specified"
	case AbortUnrecognizedPDU:
		return "unrecognized-PDU"
	case AbortUnexpectedPDU:
		return "unexpected-PDU"
	case AbortUnrecognizedPDUParameter:
		return "unrecognized-PDU-parameter"
	case AbortUnexpectedPDUParameter:
		return "unexpected-PDU-parameter"
	case AbortInvalidPDUParameterValue:
		return "invalid-PDU-parameter-value"
	}
	return fmt.Sprintf("reason(%d)", uint8(r))
}

// ContextResult is the Result/Reason field of a presentation context item in
// an A-ASSOCIATE-AC (PS3.8 Table 9-18).
type ContextResult uint8

// Presentation context results.
const (
	ContextAcceptance                   ContextResult = 0
	ContextUserRejection                ContextResult = 1
	ContextNoReason                     ContextResult = 2
	ContextAbstractSyntaxNotSupported   ContextResult = 3
	ContextTransferSyntaxesNotSupported ContextResult = 4
)

func (r ContextResult) String() string {
	switch r {
	case ContextAcceptance:
		return "acceptance"
	case ContextUserRejection:
		return "user-rejection"
	case ContextNoReason:
		return "no-reason"
	case ContextAbstractSyntaxNotSupported:
		return "abstract-syntax-not-supported"
	case ContextTransferSyntaxesNotSupported:
		return "transfer-syntaxes-not-supported"
	}
	return fmt.Sprintf("result(%d)", uint8(r))
}

// UserIdentityType is the User-Identity-Type field of sub-item 58
// (PS3.7 Table D.3-14).
type UserIdentityType uint8

// User identity types.
const (
	UserIdentityUsername         UserIdentityType = 1
	UserIdentityUsernamePasscode UserIdentityType = 2
	UserIdentityKerberos         UserIdentityType = 3
	UserIdentitySAML             UserIdentityType = 4
	UserIdentityJWT              UserIdentityType = 5
)

func (t UserIdentityType) String() string {
	switch t {
	case UserIdentityUsername:
		return "username"
	case UserIdentityUsernamePasscode:
		return "username-passcode"
	case UserIdentityKerberos:
		return "kerberos"
	case UserIdentitySAML:
		return "saml"
	case UserIdentityJWT:
		return "jwt"
	}
	return fmt.Sprintf("user-identity-type(%d)", uint8(t))
}
