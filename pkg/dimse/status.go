package dimse

import (
	"errors"
	"fmt"
	"log/slog"
)

// Status is a DIMSE status code, (0000,0900) (PS3.7 Annex C, PS3.4 B.2.3).
type Status uint16

// Statuses the gateway sends or reads.
const (
	StatusSuccess              Status = 0x0000
	StatusSOPClassNotSupported Status = 0x0122 // PS3.7 C.5.11 refused: SOP class not supported
	StatusNotAuthorized        Status = 0x0124 // PS3.7 C.5.13 refused: not authorized
	StatusDuplicateInvocation  Status = 0x0210
	// The N-services' failures (PS3.7 10.1.1.1.8, 10.1.4.1.10).
	StatusProcessingFailure        Status = 0x0110
	StatusNoSuchSOPInstance        Status = 0x0112
	StatusNoSuchEventType          Status = 0x0113
	StatusInvalidArgumentValue     Status = 0x0115
	StatusInvalidObjectInstance    Status = 0x0117
	StatusNoSuchSOPClass           Status = 0x0118
	StatusNoSuchAction             Status = 0x0123
	StatusMistypedArgument         Status = 0x0212
	StatusResourceLimitation       Status = 0x0213
	StatusUnrecognizedOperation    Status = 0x0211 // PS3.7 C.5.19
	StatusOutOfResources           Status = 0xA700 // PS3.4 B.2.3 refused: out of resources
	StatusDataSetDoesNotMatchClass Status = 0xA900 // PS3.4 B.2.3 error: data set does not match SOP class
	StatusCannotUnderstand         Status = 0xC000 // PS3.4 B.2.3 error: cannot understand
	StatusCoercionOfDataElements   Status = 0xB000 // PS3.4 B.2.3 warning
	StatusDataSetMismatchWarning   Status = 0xB007
	StatusElementsDiscarded        Status = 0xB006
)

// Category is what a status means to the sender (PS3.7 C.1).
func (s Status) Category() string {
	switch {
	case s == StatusSuccess:
		return "success"
	case s == 0x0001 || s&0xF000 == 0xB000 || s == 0x0107 || s == 0x0116:
		return "warning"
	case s == 0xFE00:
		return "cancel"
	case s == 0xFF00 || s == 0xFF01:
		return "pending"
	}
	return "failure"
}

func (s Status) String() string {
	name := ""
	switch {
	case s == StatusSuccess:
		name = "Success"
	case s == StatusSOPClassNotSupported:
		name = "Refused: SOP class not supported"
	case s == StatusNotAuthorized:
		name = "Refused: not authorized"
	case s == StatusDuplicateInvocation:
		name = "Duplicate invocation"
	case s == StatusProcessingFailure:
		name = "Processing failure"
	case s == StatusNoSuchSOPInstance:
		name = "No such SOP instance"
	case s == StatusNoSuchEventType:
		name = "No such event type"
	case s == StatusInvalidArgumentValue:
		name = "Invalid argument value"
	case s == StatusInvalidObjectInstance:
		name = "Invalid object instance"
	case s == StatusNoSuchSOPClass:
		name = "No such SOP class"
	case s == StatusNoSuchAction:
		name = "No such action"
	case s == StatusMistypedArgument:
		name = "Mistyped argument"
	case s == StatusResourceLimitation:
		name = "Resource limitation"
	case s == StatusUnrecognizedOperation:
		name = "Unrecognized operation"
	case s&0xFF00 == 0xA700:
		name = "Refused: out of resources"
	case s&0xFF00 == 0xA900:
		name = "Error: data set does not match SOP class"
	case s&0xF000 == 0xC000:
		name = "Error: cannot understand"
	case s == StatusCoercionOfDataElements:
		name = "Warning: coercion of data elements"
	case s == StatusElementsDiscarded:
		name = "Warning: elements discarded"
	case s == StatusDataSetMismatchWarning:
		name = "Warning: data set does not match SOP class"
	default:
		name = s.Category()
	}
	return fmt.Sprintf("0x%04X (%s)", uint16(s), name)
}

// StatusError is how a StoreHandler reports a failure with a specific status;
// Comment goes into Error Comment (0000,0902), which peers show to their users.
// Any other error from a handler is answered with StatusOutOfResources.
type StatusError struct {
	Status  Status
	Comment string
	Err     error
}

func (e *StatusError) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("%v: %s: %v", e.Status, e.Comment, e.Err)
	}
	return fmt.Sprintf("%v: %s", e.Status, e.Comment)
}

func (e *StatusError) Unwrap() error { return e.Err }

// statusOf turns a handler error into the status and comment to send.
func statusOf(err error) (Status, string) {
	var se *StatusError
	if errors.As(err, &se) {
		return se.Status, se.Comment
	}
	return StatusOutOfResources, "storage failed"
}

// errorComment fits a comment into LO (PS3.5 6.2: at most 64 characters, no
// backslash or control characters).
func errorComment(s string) string {
	b := make([]byte, 0, min(len(s), 64))
	for i := 0; i < len(s) && len(b) < 64; i++ {
		c := s[i]
		if c < 0x20 || c == '\\' || c >= 0x7F {
			c = '?'
		}
		b = append(b, c)
	}
	return string(b)
}

// LogValue makes logs show a status as "0xA700 (Refused: out of resources)"
// in JSON as well as in text.
func (s Status) LogValue() slog.Value { return slog.StringValue(s.String()) }
