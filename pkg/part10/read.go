package part10

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// ErrNotPart10 is wrapped by ReadGroup's errors: what was read is not a
// Part 10 file's preamble and file meta information as this package writes
// and reads them.
var ErrNotPart10 = errors.New("not a Part 10 file")

// MaxGroupLength bounds the file meta group ReadGroup reads: the gateway's
// own are well under 4 KiB, and a length off the disk must not size a
// buffer unchecked.
const MaxGroupLength = 64 << 10

// Group is a file's meta information group (0002), read.
type Group struct {
	// Elements are the values by element number, padding included.
	Elements map[uint16][]byte
	// DataOffset is where the data set begins in the file.
	DataOffset int64
}

// ReadGroup reads the preamble, "DICM" and the file meta information of a
// Part 10 file (PS3.10 7.1: group 0002 in Explicit VR Little Endian, its
// group length (0002,0000) first), checking every length against what was
// read before it sizes anything.
func ReadGroup(r io.ReaderAt) (Group, error) {
	var head [PreambleLen + 4 + 12]byte
	if _, err := r.ReadAt(head[:], 0); err != nil {
		return Group{}, fmt.Errorf("%w: %v", ErrNotPart10, err)
	}
	if string(head[PreambleLen:PreambleLen+4]) != "DICM" {
		return Group{}, fmt.Errorf("%w: no DICM prefix", ErrNotPart10)
	}
	g := head[PreambleLen+4:]
	if binary.LittleEndian.Uint16(g) != 2 || binary.LittleEndian.Uint16(g[2:]) != 0 || string(g[4:6]) != "UL" {
		return Group{}, fmt.Errorf("%w: no file meta group length", ErrNotPart10)
	}
	n := binary.LittleEndian.Uint32(g[8:])
	if n > MaxGroupLength {
		return Group{}, fmt.Errorf("%w: a file meta group of %d bytes", ErrNotPart10, n)
	}
	start := int64(len(head))
	meta := make([]byte, n)
	if _, err := r.ReadAt(meta, start); err != nil {
		return Group{}, fmt.Errorf("%w: file meta group: %v", ErrNotPart10, err)
	}
	out := Group{Elements: map[uint16][]byte{}, DataOffset: start + int64(n)}
	for off := 0; off < len(meta); {
		if off+8 > len(meta) {
			return Group{}, fmt.Errorf("%w: an element header cut at the end of the file meta group", ErrNotPart10)
		}
		if grp := binary.LittleEndian.Uint16(meta[off:]); grp != 2 {
			return Group{}, fmt.Errorf("%w: element of group %04X in the file meta group", ErrNotPart10, grp)
		}
		elem := binary.LittleEndian.Uint16(meta[off+2:])
		var vlen, hdr int
		switch vr := string(meta[off+4 : off+6]); vr {
		case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV": // PS3.5 7.1.2: 4-byte length
			if off+12 > len(meta) {
				return Group{}, fmt.Errorf("%w: element (0002,%04X) cut at the end of the file meta group", ErrNotPart10, elem)
			}
			vlen, hdr = int(binary.LittleEndian.Uint32(meta[off+8:])), 12
		default:
			vlen, hdr = int(binary.LittleEndian.Uint16(meta[off+6:])), 8
		}
		if vlen < 0 || vlen > len(meta)-off-hdr {
			return Group{}, fmt.Errorf("%w: element (0002,%04X) overruns the file meta group", ErrNotPart10, elem)
		}
		out.Elements[elem] = meta[off+hdr : off+hdr+vlen]
		off += hdr + vlen
	}
	return out, nil
}
