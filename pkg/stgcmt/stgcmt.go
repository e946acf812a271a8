// Package stgcmt is the data set codec of the Storage Commitment Push Model
// SOP Class (PS3.4 Annex J): it decodes the N-ACTION-RQ's request (PS3.4
// J.3.2, Table J.3-1) and encodes the N-EVENT-REPORT-RQ's report (J.3.3,
// Tables J.3-2 and J.3-3, Failure Reasons of PS3.3 C.14.1.1). It is pure:
// bytes in, bytes out, in Implicit or Explicit VR Little Endian, the two
// transfer syntaxes the gateway accepts for this SOP class.
package stgcmt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/dicomgw/dicomgw/pkg/uid"
)

// The SOP class, its well-known instance, its action and its events.
const (
	SOPClassUID    = "1.2.840.10008.1.20.1"
	SOPInstanceUID = "1.2.840.10008.1.20.1.1"
	ActionRequest  = 1 // Action Type ID: Request Storage Commitment
	EventSuccess   = 1 // Event Type ID: every instance committed
	EventFailures  = 2 // Event Type ID: failures exist
)

// Failure Reason (0008,1197) values (PS3.3 C.14.1.1).
const (
	ReasonProcessingFailure       uint16 = 0x0110
	ReasonNoSuchObjectInstance    uint16 = 0x0112
	ReasonResourceLimitation      uint16 = 0x0213
	ReasonSOPClassNotSupported    uint16 = 0x0122
	ReasonClassInstanceConflict   uint16 = 0x0119
	ReasonDuplicateTransactionUID uint16 = 0x0131
)

// Transfer syntaxes a storage commitment data set may be encoded in.
const (
	ImplicitVRLittleEndian = "1.2.840.10008.1.2"
	ExplicitVRLittleEndian = "1.2.840.10008.1.2.1"
)

// Bounds on a request. A Referenced SOP Sequence item is about 130 bytes:
// MaxRequestBytes holds over 100 000 of them, and MaxRefs is many times the
// largest study a modality sends in one go (a few thousand CT slices).
const (
	MaxRequestBytes = 16 << 20
	MaxRefs         = 100000
	maxDepth        = 16 // sequence nesting
)

// Ref is one instance of a request or report.
type Ref struct{ SOPClassUID, SOPInstanceUID string }

// Request is an N-ACTION-RQ's data set.
type Request struct {
	TransactionUID string // (0008,1195)
	Refs           []Ref  // (0008,1199) Referenced SOP Sequence
}

// Failure is an instance that could not be committed, and why.
type Failure struct {
	Ref
	Reason uint16 // Failure Reason (0008,1197)
}

// Report is an N-EVENT-REPORT-RQ's data set.
type Report struct {
	TransactionUID string
	Success        []Ref     // Referenced SOP Sequence, present when not empty
	Failed         []Failure // Failed SOP Sequence, present when not empty
}

// EventTypeID is EventSuccess when nothing failed, else EventFailures.
func (r *Report) EventTypeID() uint16 {
	if len(r.Failed) > 0 {
		return EventFailures
	}
	return EventSuccess
}

// Error is a request the SCP refuses, with the N-ACTION-RSP status that
// says why (PS3.7 10.1.4.1.10).
type Error struct {
	Status uint16
	Reason string
}

func (e *Error) Error() string {
	return fmt.Sprintf("storage commitment request: status 0x%04X: %s", e.Status, e.Reason)
}

// N-ACTION-RSP statuses a decoding error carries.
const (
	statusInvalidArgumentValue = 0x0115
	statusMistypedArgument     = 0x0212
	statusResourceLimitation   = 0x0213
)

func mistyped(format string, args ...any) error {
	return &Error{Status: statusMistypedArgument, Reason: fmt.Sprintf(format, args...)}
}

func invalid(format string, args ...any) error {
	return &Error{Status: statusInvalidArgumentValue, Reason: fmt.Sprintf(format, args...)}
}

// Tags (group 0008) this package reads or writes.
const (
	tagSOPClass      = 0x00081150 // Referenced SOP Class UID
	tagSOPInstance   = 0x00081155 // Referenced SOP Instance UID
	tagTransaction   = 0x00081195 // Transaction UID
	tagFailureReason = 0x00081197 // Failure Reason
	tagFailedSeq     = 0x00081198 // Failed SOP Sequence
	tagRefSeq        = 0x00081199 // Referenced SOP Sequence
	tagItem          = 0xFFFEE000
	tagItemDelim     = 0xFFFEE00D
	tagSeqDelim      = 0xFFFEE0DD
	undefinedLength  = 0xFFFFFFFF
)

// implicitVR is the VR of the tags this package needs, in Implicit VR
// Little Endian; other tags are skipped by their length, or as sequences
// when their length is undefined.
var implicitVR = map[uint32]string{
	tagSOPClass: "UI", tagSOPInstance: "UI", tagTransaction: "UI", tagFailureReason: "US",
	tagFailedSeq: "SQ", tagRefSeq: "SQ",
}

// longVR are the explicit VRs with a reserved field and a 4-byte length
// (PS3.5 7.1.2).
var longVR = map[string]bool{"OB": true, "OD": true, "OF": true, "OL": true, "OV": true, "OW": true, "SQ": true,
	"SV": true, "UC": true, "UN": true, "UR": true, "UT": true, "UV": true}

// decoder walks a data set.
type decoder struct {
	b        []byte
	explicit bool
}

type element struct {
	tag    uint32
	vr     string
	length uint32 // undefinedLength for an undefined-length sequence or item
	at     int    // offset of its value
}

func (el element) sequence() bool { return el.vr == "SQ" || el.length == undefinedLength }

// header reads the element header at off, which must end by end.
func (d *decoder) header(off, end int) (element, error) {
	if end-off < 8 {
		return element{}, mistyped("truncated element header at offset %d", off)
	}
	g := binary.LittleEndian.Uint16(d.b[off:])
	e := binary.LittleEndian.Uint16(d.b[off+2:])
	el := element{tag: uint32(g)<<16 | uint32(e)}
	switch {
	case g == 0xFFFE: // items and delimiters have no VR (PS3.5 7.5)
		el.length = binary.LittleEndian.Uint32(d.b[off+4:])
		el.at = off + 8
		return el, nil
	case !d.explicit:
		el.vr = implicitVR[el.tag]
		el.length = binary.LittleEndian.Uint32(d.b[off+4:])
		el.at = off + 8
	default:
		el.vr = string(d.b[off+4 : off+6])
		if el.vr[0] < 'A' || el.vr[0] > 'Z' || el.vr[1] < 'A' || el.vr[1] > 'Z' {
			return element{}, mistyped("element (%04X,%04X) at offset %d has no valid VR", g, e, off)
		}
		if longVR[el.vr] {
			if end-off < 12 {
				return element{}, mistyped("truncated element header at offset %d", off)
			}
			el.length = binary.LittleEndian.Uint32(d.b[off+8:])
			el.at = off + 12
		} else {
			el.length = uint32(binary.LittleEndian.Uint16(d.b[off+6:]))
			el.at = off + 8
		}
	}
	if el.length == undefinedLength {
		if el.vr != "SQ" && el.vr != "" && el.vr != "UN" {
			return element{}, mistyped("element (%04X,%04X) has an undefined length but is not a sequence", g, e)
		}
	} else if uint64(el.length) > uint64(end-el.at) {
		return element{}, mistyped("element (%04X,%04X) at offset %d: length %d overruns what holds it", g, e, el.at, el.length)
	}
	return el, nil
}

// visitFunc handles an element the caller wants: it returns the offset
// after it, or -1 to have it skipped.
type visitFunc func(el element) (int, error)

func skipAll(element) (int, error) { return -1, nil }

// elements reads the elements from off to end or, when delimited, to an
// item delimiter, and returns the offset after them (after the delimiter).
func (d *decoder) elements(off, end int, delimited bool, depth int, visit visitFunc) (int, error) {
	for {
		if off == end {
			if delimited {
				return 0, mistyped("item of undefined length without its delimiter")
			}
			return off, nil
		}
		el, err := d.header(off, end)
		if err != nil {
			return 0, err
		}
		switch el.tag {
		case tagItemDelim:
			if !delimited {
				return 0, mistyped("item delimiter at offset %d outside an item of undefined length", off)
			}
			return el.at, nil
		case tagItem, tagSeqDelim:
			return 0, mistyped("(%04X,%04X) at offset %d outside a sequence", el.tag>>16, el.tag&0xFFFF, off)
		}
		n, err := visit(el)
		if err != nil {
			return 0, err
		}
		switch {
		case n >= 0:
			off = n
		case el.sequence():
			if off, err = d.sequence(el, end, depth+1, nil); err != nil {
				return 0, err
			}
		default:
			off = el.at + int(el.length)
		}
	}
}

// itemFunc reads one item's elements from off to end (or its delimiter)
// and returns the offset after them.
type itemFunc func(off, end int, delimited bool) (int, error)

// sequence reads the items of el (which lies within end) with item (nil:
// skipped) and returns the offset after the sequence.
func (d *decoder) sequence(el element, end, depth int, item itemFunc) (int, error) {
	if depth > maxDepth {
		return 0, mistyped("sequences nested deeper than %d", maxDepth)
	}
	if item == nil {
		item = func(off, end int, delimited bool) (int, error) {
			return d.elements(off, end, delimited, depth, skipAll)
		}
	}
	defined := el.length != undefinedLength
	seqEnd := end
	if defined {
		seqEnd = el.at + int(el.length)
	}
	off := el.at
	for {
		if defined && off == seqEnd {
			return off, nil
		}
		it, err := d.header(off, seqEnd)
		if err != nil {
			return 0, err
		}
		switch it.tag {
		case tagSeqDelim:
			if defined {
				return 0, mistyped("sequence delimiter in a sequence of defined length")
			}
			return it.at, nil
		case tagItem:
		default:
			return 0, mistyped("(%04X,%04X) at offset %d where an item was expected", it.tag>>16, it.tag&0xFFFF, off)
		}
		delimited := it.length == undefinedLength
		itemEnd := seqEnd
		if !delimited {
			if uint64(it.length) > uint64(seqEnd-it.at) {
				return 0, mistyped("item at offset %d: length %d overruns its sequence", off, it.length)
			}
			itemEnd = it.at + int(it.length)
		}
		if off, err = item(it.at, itemEnd, delimited); err != nil {
			return 0, err
		}
	}
}

// uidValue is a UI value without its padding, checked: it is later
// stored, logged and sent back.
func uidValue(v []byte, what string) (string, error) {
	s := strings.TrimRight(string(v), "\x00 ")
	if s == "" {
		return "", invalid("%s is empty", what)
	}
	if p := uid.Check(s); !uid.Lenient.Accepts(p) {
		return "", invalid("%s %s", what, p)
	}
	return s, nil
}

// DecodeRequest decodes an N-ACTION-RQ data set (Action Type 1) encoded in
// transferSyntax. It keeps the Transaction UID and the Referenced SOP
// Sequence's class and instance UIDs (an instance listed twice is kept
// once, as first listed), and skips the rest (Storage Media File-Set ID
// and UID, Referenced Performed Procedure Step Sequence...), checking its
// structure. Errors are *Error.
func DecodeRequest(data []byte, transferSyntax string) (*Request, error) {
	d := &decoder{b: data}
	switch transferSyntax {
	case ImplicitVRLittleEndian:
	case ExplicitVRLittleEndian:
		d.explicit = true
	default:
		return nil, mistyped("transfer syntax %s is not Implicit or Explicit VR Little Endian", transferSyntax)
	}
	if len(data) > MaxRequestBytes {
		return nil, &Error{Status: statusResourceLimitation, Reason: fmt.Sprintf("data set of %d bytes, at most %d", len(data), MaxRequestBytes)}
	}
	req := &Request{}
	seen := map[string]bool{}
	sawSeq := false
	_, err := d.elements(0, len(data), false, 0, func(el element) (int, error) {
		switch el.tag {
		case tagTransaction:
			if el.sequence() {
				return 0, mistyped("Transaction UID is a sequence")
			}
			v, err := uidValue(data[el.at:el.at+int(el.length)], "Transaction UID")
			if err != nil {
				return 0, err
			}
			req.TransactionUID = v
			return el.at + int(el.length), nil
		case tagRefSeq:
			if !el.sequence() {
				return 0, mistyped("Referenced SOP Sequence is not a sequence")
			}
			sawSeq = true
			return d.sequence(el, len(data), 1, func(off, end int, delimited bool) (int, error) {
				var ref Ref
				n, err := d.elements(off, end, delimited, 1, func(el element) (int, error) {
					var dst *string
					var what string
					switch el.tag {
					case tagSOPClass:
						dst, what = &ref.SOPClassUID, "Referenced SOP Class UID"
					case tagSOPInstance:
						dst, what = &ref.SOPInstanceUID, "Referenced SOP Instance UID"
					default:
						return -1, nil
					}
					if el.sequence() {
						return 0, mistyped("%s is a sequence", what)
					}
					v, err := uidValue(data[el.at:el.at+int(el.length)], what)
					if err != nil {
						return 0, err
					}
					*dst = v
					return el.at + int(el.length), nil
				})
				if err != nil {
					return 0, err
				}
				if ref.SOPClassUID == "" || ref.SOPInstanceUID == "" {
					return 0, invalid("a Referenced SOP Sequence item lacks its SOP class or instance UID")
				}
				if !seen[ref.SOPInstanceUID] {
					if len(req.Refs) == MaxRefs {
						return 0, &Error{Status: statusResourceLimitation, Reason: fmt.Sprintf("more than %d instances in one request", MaxRefs)}
					}
					seen[ref.SOPInstanceUID] = true
					req.Refs = append(req.Refs, ref)
				}
				return n, nil
			})
		}
		return -1, nil
	})
	if err != nil {
		return nil, err
	}
	switch {
	case req.TransactionUID == "":
		return nil, invalid("no Transaction UID (0008,1195)")
	case !sawSeq:
		return nil, invalid("no Referenced SOP Sequence (0008,1199)")
	case len(req.Refs) == 0:
		return nil, invalid("empty Referenced SOP Sequence")
	}
	return req, nil
}

// encoder writes a data set.
type encoder struct {
	b        []byte
	explicit bool
}

func (e *encoder) header(tag uint32, vr string, n int) {
	e.b = binary.LittleEndian.AppendUint16(e.b, uint16(tag>>16))
	e.b = binary.LittleEndian.AppendUint16(e.b, uint16(tag))
	switch {
	case !e.explicit:
		e.b = binary.LittleEndian.AppendUint32(e.b, uint32(n))
	case longVR[vr]:
		e.b = append(e.b, vr[0], vr[1], 0, 0)
		e.b = binary.LittleEndian.AppendUint32(e.b, uint32(n))
	default:
		e.b = append(e.b, vr[0], vr[1])
		e.b = binary.LittleEndian.AppendUint16(e.b, uint16(n))
	}
}

func (e *encoder) uid(tag uint32, v string) {
	n := len(v) + len(v)%2
	e.header(tag, "UI", n)
	e.b = append(e.b, v...)
	if len(v)%2 == 1 {
		e.b = append(e.b, 0)
	}
}

// sequence writes a defined-length sequence of n items, each written by
// item; lengths are patched in once known.
func (e *encoder) sequence(tag uint32, n int, item func(i int)) {
	e.header(tag, "SQ", 0)
	seqLen := len(e.b) - 4
	start := len(e.b)
	for i := range n {
		e.b = binary.LittleEndian.AppendUint16(e.b, 0xFFFE)
		e.b = binary.LittleEndian.AppendUint16(e.b, 0xE000)
		e.b = binary.LittleEndian.AppendUint32(e.b, 0)
		itemLen := len(e.b) - 4
		itemStart := len(e.b)
		item(i)
		binary.LittleEndian.PutUint32(e.b[itemLen:], uint32(len(e.b)-itemStart))
	}
	binary.LittleEndian.PutUint32(e.b[seqLen:], uint32(len(e.b)-start))
}

// EncodeReport encodes an N-EVENT-REPORT-RQ data set in transferSyntax:
// Transaction UID, then the Failed SOP Sequence and the Referenced SOP
// Sequence when not empty, in tag order, defined lengths throughout.
func EncodeReport(r *Report, transferSyntax string) ([]byte, error) {
	e := &encoder{}
	switch transferSyntax {
	case ImplicitVRLittleEndian:
	case ExplicitVRLittleEndian:
		e.explicit = true
	default:
		return nil, fmt.Errorf("stgcmt: transfer syntax %s is not Implicit or Explicit VR Little Endian", transferSyntax)
	}
	check := func(v, what string) error {
		if err := uid.Valid(v); err != nil && !uid.Lenient.Accepts(uid.Check(v)) {
			return fmt.Errorf("stgcmt: %s %q: %v", what, v, err)
		}
		return nil
	}
	if err := check(r.TransactionUID, "Transaction UID"); err != nil {
		return nil, err
	}
	for _, f := range r.Failed {
		if err := errors.Join(check(f.SOPClassUID, "SOP class UID"), check(f.SOPInstanceUID, "SOP instance UID")); err != nil {
			return nil, err
		}
	}
	for _, s := range r.Success {
		if err := errors.Join(check(s.SOPClassUID, "SOP class UID"), check(s.SOPInstanceUID, "SOP instance UID")); err != nil {
			return nil, err
		}
	}
	e.uid(tagTransaction, r.TransactionUID)
	if len(r.Failed) > 0 {
		e.sequence(tagFailedSeq, len(r.Failed), func(i int) {
			e.uid(tagSOPClass, r.Failed[i].SOPClassUID)
			e.uid(tagSOPInstance, r.Failed[i].SOPInstanceUID)
			e.header(tagFailureReason, "US", 2)
			e.b = binary.LittleEndian.AppendUint16(e.b, r.Failed[i].Reason)
		})
	}
	if len(r.Success) > 0 {
		e.sequence(tagRefSeq, len(r.Success), func(i int) {
			e.uid(tagSOPClass, r.Success[i].SOPClassUID)
			e.uid(tagSOPInstance, r.Success[i].SOPInstanceUID)
		})
	}
	return e.b, nil
}
