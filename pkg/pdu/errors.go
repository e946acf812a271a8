package pdu

import (
	"errors"
	"fmt"
)

// Error reports a PDU from the peer that is unrecognized, malformed or too
// long. Its consequence is always the same: the association is aborted
// (PS3.8 9.2.3, Evt19) with Reason as the A-ABORT reason, source
// service-provider. I/O errors from the underlying reader are not wrapped in
// Error: they mean the transport failed (Evt17), not that the peer spoke badly.
type Error struct {
	PDU    Type        // the PDU being decoded
	Reason AbortReason // what to put in the A-ABORT
	Offset int         // byte offset in the PDU (header included) where decoding stopped; -1 if not known
	Msg    string
}

func (e *Error) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("pdu: %v at offset %d: %s", e.PDU, e.Offset, e.Msg)
	}
	return fmt.Sprintf("pdu: %v: %s", e.PDU, e.Msg)
}

func errorf(t Type, reason AbortReason, off int, format string, args ...any) *Error {
	return &Error{PDU: t, Reason: reason, Offset: off, Msg: fmt.Sprintf(format, args...)}
}

// AbortReasonOf returns the abort reason for err when it is (or wraps) a
// protocol *Error.
func AbortReasonOf(err error) (AbortReason, bool) {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Reason, true
	}
	return 0, false
}

// ErrEncode is wrapped by errors from Encode: a local value does not fit its
// length field. It is our bug or our configuration, never the peer's.
var ErrEncode = errors.New("pdu: cannot encode")
