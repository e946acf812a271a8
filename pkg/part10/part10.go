// Package part10 writes the file meta information of DICOM Part 10 files
// (PS3.10 7.1): the 128-byte preamble, "DICM", and group 0002 in Explicit VR
// Little Endian. The spool writes it in front of every object it receives,
// and the forwarder writes a fresh one in front of every object it sends.
package part10

import "encoding/binary"

// Meta is the file meta information the gateway writes.
type Meta struct {
	SOPClassUID               string // (0002,0002) Media Storage SOP Class UID
	SOPInstanceUID            string // (0002,0003) Media Storage SOP Instance UID
	TransferSyntaxUID         string // (0002,0010)
	ImplementationClassUID    string // (0002,0012)
	ImplementationVersionName string // (0002,0013), omitted when empty
	SourceAE                  string // (0002,0016) Source Application Entity Title, omitted when empty
	// PrivateCreator (0002,0100) and Private (0002,0102) carry private
	// information; both omitted when Private is nil.
	PrivateCreator string
	Private        []byte
}

// PreambleLen is the length of the preamble before "DICM".
const PreambleLen = 128

// AppendMeta appends the preamble, "DICM" and the meta group (with its
// group length (0002,0000) and version (0002,0001) = 00 01) to b.
func AppendMeta(b []byte, m *Meta) []byte {
	b = append(b, make([]byte, PreambleLen)...)
	b = append(b, "DICM"...)
	lenAt := len(b) + 8
	b = appendShort(b, 0x0000, "UL", []byte{0, 0, 0, 0})
	start := len(b)
	b = appendLong(b, 0x0001, "OB", []byte{0x00, 0x01})
	b = appendShort(b, 0x0002, "UI", pad(m.SOPClassUID, 0))
	b = appendShort(b, 0x0003, "UI", pad(m.SOPInstanceUID, 0))
	b = appendShort(b, 0x0010, "UI", pad(m.TransferSyntaxUID, 0))
	b = appendShort(b, 0x0012, "UI", pad(m.ImplementationClassUID, 0))
	if m.ImplementationVersionName != "" {
		b = appendShort(b, 0x0013, "SH", pad(m.ImplementationVersionName, ' '))
	}
	if m.SourceAE != "" {
		b = appendShort(b, 0x0016, "AE", pad(m.SourceAE, ' '))
	}
	if m.Private != nil {
		b = appendShort(b, 0x0100, "UI", pad(m.PrivateCreator, 0))
		b = appendLong(b, 0x0102, "OB", pad(string(m.Private), ' '))
	}
	binary.LittleEndian.PutUint32(b[lenAt:], uint32(len(b)-start))
	return b
}

// pad makes a value even in length (PS3.5 7.1.1): UI with NUL, text with
// space.
func pad(s string, p byte) []byte {
	b := []byte(s)
	if len(b)%2 == 1 {
		b = append(b, p)
	}
	return b
}

// appendShort appends an element with a 2-byte length (PS3.5 7.1.2).
func appendShort(b []byte, elem uint16, vr string, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, 0x0002)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
	return append(b, v...)
}

// appendLong appends an element of a VR with a 4-byte length (OB).
func appendLong(b []byte, elem uint16, vr string, v []byte) []byte {
	b = binary.LittleEndian.AppendUint16(b, 0x0002)
	b = binary.LittleEndian.AppendUint16(b, elem)
	b = append(b, vr...)
	b = append(b, 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	return append(b, v...)
}
