package harness

import (
	"encoding/binary"
	"fmt"
)

// Elements is data elements in Explicit VR Little Endian (PS3.5 7.1.2),
// appended one at a time: a data set, a file meta group, or the start of
// either. Callers append in ascending tag order (PS3.5 7.1).
type Elements []byte

// longVR says whether a VR has the header with two reserved bytes and a
// 32-bit length (PS3.5 Table 7.1-1) rather than a 16-bit length.
func longVR(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}

// Header appends an element header announcing a value of length bytes,
// for a caller that supplies the value itself (a large Pixel Data).
func (e *Elements) Header(group, elem uint16, vr string, length uint32) {
	b := binary.LittleEndian.AppendUint16(*e, group)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	if longVR(vr) {
		b = append(b, 0, 0)
		b = binary.LittleEndian.AppendUint32(b, length)
	} else {
		if length > 0xFFFF {
			panic(fmt.Sprintf("harness: (%04X,%04X) %s value of %d bytes does not fit a 16-bit length", group, elem, vr, length))
		}
		b = binary.LittleEndian.AppendUint16(b, uint16(length))
	}
	*e = b
}

// Add appends an element with value v as given (even length is the
// caller's business: PS3.5 7.1.1).
func (e *Elements) Add(group, elem uint16, vr string, v []byte) {
	e.Header(group, elem, vr, uint32(len(v)))
	*e = append(*e, v...)
}

// Str appends a string value padded to even length: UI with a NUL, the
// other string VRs with a space (PS3.5 6.2).
func (e *Elements) Str(group, elem uint16, vr, s string) {
	v := []byte(s)
	if len(v)%2 == 1 {
		if vr == "UI" {
			v = append(v, 0)
		} else {
			v = append(v, ' ')
		}
	}
	e.Add(group, elem, vr, v)
}

// US appends an unsigned short.
func (e *Elements) US(group, elem uint16, v uint16) {
	e.Add(group, elem, "US", binary.LittleEndian.AppendUint16(nil, v))
}

// UL appends an unsigned long.
func (e *Elements) UL(group, elem uint16, v uint32) {
	e.Add(group, elem, "UL", binary.LittleEndian.AppendUint32(nil, v))
}
