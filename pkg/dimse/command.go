package dimse

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
)

// CommandField is the value of (0000,0100) (PS3.7 E.1).
type CommandField uint16

// Command fields. Bit 15 set marks a response.
const (
	CStoreRQ    CommandField = 0x0001
	CStoreRSP   CommandField = 0x8001
	CGetRQ      CommandField = 0x0010
	CFindRQ     CommandField = 0x0020
	CMoveRQ     CommandField = 0x0021
	CEchoRQ     CommandField = 0x0030
	CEchoRSP    CommandField = 0x8030
	NEventRQ    CommandField = 0x0100
	NEventRSP   CommandField = 0x8100
	NGetRQ      CommandField = 0x0110
	NSetRQ      CommandField = 0x0120
	NActionRQ   CommandField = 0x0130
	NActionRSP  CommandField = 0x8130
	NCreateRQ   CommandField = 0x0140
	NDeleteRQ   CommandField = 0x0150
	CCancelRQ   CommandField = 0x0FFF
	responseBit              = 0x8000
)

// IsRequest reports whether f is one of the request command fields of
// PS3.7 (E.1-1, E.2-1), which have a matching response.
func (f CommandField) IsRequest() bool {
	switch f {
	case CStoreRQ, CGetRQ, CFindRQ, CMoveRQ, CEchoRQ, NEventRQ, NGetRQ, NSetRQ, NActionRQ, NCreateRQ, NDeleteRQ:
		return true
	}
	return false
}

func (f CommandField) String() string {
	switch f {
	case CStoreRQ:
		return "C-STORE-RQ"
	case CStoreRSP:
		return "C-STORE-RSP"
	case CGetRQ:
		return "C-GET-RQ"
	case CFindRQ:
		return "C-FIND-RQ"
	case CMoveRQ:
		return "C-MOVE-RQ"
	case CEchoRQ:
		return "C-ECHO-RQ"
	case CEchoRSP:
		return "C-ECHO-RSP"
	case NEventRQ:
		return "N-EVENT-REPORT-RQ"
	case NEventRSP:
		return "N-EVENT-REPORT-RSP"
	case NGetRQ:
		return "N-GET-RQ"
	case NSetRQ:
		return "N-SET-RQ"
	case NActionRQ:
		return "N-ACTION-RQ"
	case NActionRSP:
		return "N-ACTION-RSP"
	case NCreateRQ:
		return "N-CREATE-RQ"
	case NDeleteRQ:
		return "N-DELETE-RQ"
	case CCancelRQ:
		return "C-CANCEL-RQ"
	}
	return fmt.Sprintf("command(0x%04X)", uint16(f))
}

// NoDataSet is the (0000,0800) Command Data Set Type value meaning that no
// data set follows the command (PS3.7 E.1); any other value means one does.
const NoDataSet = 0x0101

// Command is a DIMSE command set, the group 0000 elements of PS3.7 E.1 that
// C-ECHO, C-STORE, N-ACTION and N-EVENT-REPORT use. Command sets are always encoded in Implicit VR
// Little Endian (PS3.7 6.3.1).
type Command struct {
	AffectedSOPClassUID       string       // (0000,0002) UI
	CommandField              CommandField // (0000,0100) US
	MessageID                 uint16       // (0000,0110) US
	MessageIDBeingRespondedTo uint16       // (0000,0120) US
	MoveOriginatorAE          string       // (0000,1030) AE
	MoveOriginatorMessageID   uint16       // (0000,1031) US
	Priority                  uint16       // (0000,0700) US
	CommandDataSetType        uint16       // (0000,0800) US
	Status                    Status       // (0000,0900) US
	ErrorComment              string       // (0000,0902) LO
	AffectedSOPInstanceUID    string       // (0000,1000) UI
	MoveDestination           string       // (0000,0600) AE
	Remaining, Completed      uint16       // (0000,1020), (0000,1021) US: sub-operations
	Failed, Warning           uint16       // (0000,1022), (0000,1023) US
	RequestedSOPClassUID      string       // (0000,0003) UI
	RequestedSOPInstanceUID   string       // (0000,1001) UI
	EventTypeID               uint16       // (0000,1002) US
	ActionTypeID              uint16       // (0000,1008) US

	// Which of the optional fields were present when decoded, and which to
	// write when encoded.
	Has Presence
}

// Presence flags the elements present in a Command.
type Presence uint32

// Presence bits.
const (
	HasAffectedSOPClassUID Presence = 1 << iota
	HasMessageID
	HasMessageIDBeingRespondedTo
	HasPriority
	HasStatus
	HasErrorComment
	HasAffectedSOPInstanceUID
	HasMoveOriginatorAE
	HasMoveOriginatorMessageID
	HasCommandDataSetType
	HasCommandField
	HasRequestedSOPClassUID
	HasRequestedSOPInstanceUID
	HasEventTypeID
	HasActionTypeID
	HasMoveDestination
	HasSubOperations // all four counts
)

// HasDataSet reports whether a data set follows this command.
func (c *Command) HasDataSet() bool { return c.CommandDataSetType != NoDataSet }

// Tags of group 0000 (element numbers).
const (
	tagGroupLength         = 0x0000
	tagAffectedSOPClass    = 0x0002
	tagRequestedSOPClass   = 0x0003
	tagCommandField        = 0x0100
	tagMessageID           = 0x0110
	tagRespondedTo         = 0x0120
	tagMoveDestination     = 0x0600
	tagPriority            = 0x0700
	tagDataSetType         = 0x0800
	tagStatus              = 0x0900
	tagErrorComment        = 0x0902
	tagAffectedSOPInst     = 0x1000
	tagRequestedSOPInst    = 0x1001
	tagEventTypeID         = 0x1002
	tagActionTypeID        = 0x1008
	tagRemaining           = 0x1020
	tagCompleted           = 0x1021
	tagFailed              = 0x1022
	tagWarning             = 0x1023
	tagMoveOriginatorAE    = 0x1030
	tagMoveOriginatorMsgID = 0x1031
)

// MaxCommandLength bounds a command set. Real ones are a few hundred bytes;
// this leaves room for long error comments and unknown elements.
const MaxCommandLength = 64 << 10

// ErrCommand is wrapped by every command set decoding error.
var ErrCommand = errors.New("dimse: malformed command set")

// AppendCommand appends c in Implicit VR Little Endian, elements in
// ascending order and preceded by the group length (PS3.7 6.3.1, E.1).
func AppendCommand(b []byte, c *Command) []byte {
	start := len(b)
	b = appendElement(b, tagGroupLength, []byte{0, 0, 0, 0})
	lenAt := start + 8
	if c.Has&HasAffectedSOPClassUID != 0 {
		b = appendElement(b, tagAffectedSOPClass, padEven([]byte(c.AffectedSOPClassUID), 0))
	}
	if c.Has&HasRequestedSOPClassUID != 0 {
		b = appendElement(b, tagRequestedSOPClass, padEven([]byte(c.RequestedSOPClassUID), 0))
	}
	b = appendUS(b, tagCommandField, uint16(c.CommandField))
	if c.Has&HasMessageID != 0 {
		b = appendUS(b, tagMessageID, c.MessageID)
	}
	if c.Has&HasMessageIDBeingRespondedTo != 0 {
		b = appendUS(b, tagRespondedTo, c.MessageIDBeingRespondedTo)
	}
	if c.Has&HasMoveDestination != 0 {
		b = appendElement(b, tagMoveDestination, padEven([]byte(c.MoveDestination), ' '))
	}
	if c.Has&HasPriority != 0 {
		b = appendUS(b, tagPriority, c.Priority)
	}
	b = appendUS(b, tagDataSetType, c.CommandDataSetType)
	if c.Has&HasStatus != 0 {
		b = appendUS(b, tagStatus, uint16(c.Status))
	}
	if c.Has&HasErrorComment != 0 {
		b = appendElement(b, tagErrorComment, padEven([]byte(c.ErrorComment), ' '))
	}
	if c.Has&HasAffectedSOPInstanceUID != 0 {
		b = appendElement(b, tagAffectedSOPInst, padEven([]byte(c.AffectedSOPInstanceUID), 0))
	}
	if c.Has&HasRequestedSOPInstanceUID != 0 {
		b = appendElement(b, tagRequestedSOPInst, padEven([]byte(c.RequestedSOPInstanceUID), 0))
	}
	if c.Has&HasEventTypeID != 0 {
		b = appendUS(b, tagEventTypeID, c.EventTypeID)
	}
	if c.Has&HasActionTypeID != 0 {
		b = appendUS(b, tagActionTypeID, c.ActionTypeID)
	}
	if c.Has&HasSubOperations != 0 {
		b = appendUS(b, tagRemaining, c.Remaining)
		b = appendUS(b, tagCompleted, c.Completed)
		b = appendUS(b, tagFailed, c.Failed)
		b = appendUS(b, tagWarning, c.Warning)
	}
	if c.Has&HasMoveOriginatorAE != 0 {
		b = appendElement(b, tagMoveOriginatorAE, padEven([]byte(c.MoveOriginatorAE), ' '))
	}
	if c.Has&HasMoveOriginatorMessageID != 0 {
		b = appendUS(b, tagMoveOriginatorMsgID, c.MoveOriginatorMessageID)
	}
	binary.LittleEndian.PutUint32(b[lenAt:], uint32(len(b)-start-12))
	return b
}

func appendElement(b []byte, elem uint16, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, 0x0000)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}

func appendUS(b []byte, elem uint16, v uint16) []byte {
	b = binary.LittleEndian.AppendUint16(b, 0x0000)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = binary.LittleEndian.AppendUint32(b, 2)
	return binary.LittleEndian.AppendUint16(b, v)
}

// padEven pads v to even length (PS3.5 7.1.1): UI with NUL, text with space.
func padEven(v []byte, pad byte) []byte {
	if len(v)%2 == 1 {
		return append(v, pad)
	}
	return v
}

// DecodeCommand decodes an Implicit VR Little Endian command set. Every
// element must be of group 0000 and fit in b; unknown elements of group 0000
// are skipped. It checks structure only: which elements a given command
// needs is the caller's business.
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) > MaxCommandLength {
		return nil, fmt.Errorf("%w: %d bytes, the limit is %d", ErrCommand, len(b), MaxCommandLength)
	}
	c := &Command{}
	for off := 0; off < len(b); {
		if len(b)-off < 8 {
			return nil, fmt.Errorf("%w: %d trailing bytes at offset %d cannot hold an element header", ErrCommand, len(b)-off, off)
		}
		group := binary.LittleEndian.Uint16(b[off:])
		elem := binary.LittleEndian.Uint16(b[off+2:])
		n := binary.LittleEndian.Uint32(b[off+4:])
		if group != 0x0000 {
			return nil, fmt.Errorf("%w: element (%04X,%04X) at offset %d is not of group 0000", ErrCommand, group, elem, off)
		}
		if uint64(n) > uint64(len(b)-off-8) {
			return nil, fmt.Errorf("%w: element (0000,%04X) at offset %d: length %d overruns the command set (%d bytes left)", ErrCommand, elem, off, n, len(b)-off-8)
		}
		v := b[off+8 : off+8+int(n)]
		off += 8 + int(n)
		us := func(p Presence) (uint16, error) {
			if len(v) != 2 {
				return 0, fmt.Errorf("%w: element (0000,%04X) is US but %d bytes long", ErrCommand, elem, len(v))
			}
			c.Has |= p
			return binary.LittleEndian.Uint16(v), nil
		}
		var err error
		var x uint16
		switch elem {
		case tagAffectedSOPClass:
			c.AffectedSOPClassUID, c.Has = trimUID(v), c.Has|HasAffectedSOPClassUID
		case tagRequestedSOPClass:
			c.RequestedSOPClassUID, c.Has = trimUID(v), c.Has|HasRequestedSOPClassUID
		case tagRequestedSOPInst:
			c.RequestedSOPInstanceUID, c.Has = trimUID(v), c.Has|HasRequestedSOPInstanceUID
		case tagEventTypeID:
			c.EventTypeID, err = us(HasEventTypeID)
		case tagActionTypeID:
			c.ActionTypeID, err = us(HasActionTypeID)
		case tagCommandField:
			x, err = us(HasCommandField)
			c.CommandField = CommandField(x)
		case tagMessageID:
			c.MessageID, err = us(HasMessageID)
		case tagRespondedTo:
			c.MessageIDBeingRespondedTo, err = us(HasMessageIDBeingRespondedTo)
		case tagMoveDestination:
			c.MoveDestination, c.Has = strings.Trim(string(v), " \x00"), c.Has|HasMoveDestination
		case tagRemaining:
			c.Remaining, err = us(HasSubOperations)
		case tagCompleted:
			c.Completed, err = us(HasSubOperations)
		case tagFailed:
			c.Failed, err = us(HasSubOperations)
		case tagWarning:
			c.Warning, err = us(HasSubOperations)
		case tagPriority:
			c.Priority, err = us(HasPriority)
		case tagDataSetType:
			c.CommandDataSetType, err = us(HasCommandDataSetType)
		case tagStatus:
			x, err = us(HasStatus)
			c.Status = Status(x)
		case tagErrorComment:
			c.ErrorComment, c.Has = strings.TrimRight(string(v), " \x00"), c.Has|HasErrorComment
		case tagAffectedSOPInst:
			c.AffectedSOPInstanceUID, c.Has = trimUID(v), c.Has|HasAffectedSOPInstanceUID
		case tagMoveOriginatorAE:
			c.MoveOriginatorAE, c.Has = strings.Trim(string(v), " \x00"), c.Has|HasMoveOriginatorAE
		case tagMoveOriginatorMsgID:
			c.MoveOriginatorMessageID, err = us(HasMoveOriginatorMessageID)
		default:
			// Group length and elements we do not use (PS3.7 E.1 has
			// more, some retired) are skipped.
		}
		if err != nil {
			return nil, err
		}
	}
	if c.Has&HasCommandField == 0 {
		return nil, fmt.Errorf("%w: no command field (0000,0100)", ErrCommand)
	}
	if c.Has&HasCommandDataSetType == 0 {
		return nil, fmt.Errorf("%w: no command data set type (0000,0800)", ErrCommand)
	}
	return c, nil
}

// trimUID strips the NUL (or, from some peers, space) padding of a UI value.
func trimUID(v []byte) string { return strings.Trim(string(v), " \x00") }
