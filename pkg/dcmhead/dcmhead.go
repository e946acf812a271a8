// Package dcmhead checks the structure of a received DICOM data set and
// extracts the few identifying attributes the gateway needs before it answers
// a C-STORE request.
//
// Walk reads every top-level element header of the data set, descending only
// where the encoding forces it to (undefined-length sequences and items,
// encapsulated pixel data), and seeks over every defined-length value without
// reading it. It never allocates memory sized by a length read from the data:
// apart from a fixed read window (and, for the deflated transfer syntax, the
// inflater's fixed state) the only allocations are the four UID strings of
// the Summary, each bounded by MaxUIDLength, and, for WalkCollect, the
// values asked for, each bounded by MaxValueLength (a few times that for a
// multi-valued binary value written in decimal).
//
// The encoding rules come from DICOM PS3.5:
//   - 7.1 (Data Elements): element header layouts for implicit and explicit
//     VR, which explicit VRs carry a 32-bit length after two reserved bytes
//     (7.1.2), and the group numbers that cannot appear in a data set (7.1).
//   - 7.3 (Big Endian): tags and lengths are byte-swapped, item and delimiter
//     tags included.
//   - 7.5 (Nesting of Data Sets): items (FFFE,E000), item delimitation items
//     (FFFE,E00D) and sequence delimitation items (FFFE,E0DD), which are always
//     encoded as tag plus 32-bit length, without a VR, even in explicit VR.
//   - 6.2.2 (UN) as amended by CP-246: an explicit-VR element of VR UN with
//     undefined length holds a sequence encoded in Implicit VR Little Endian,
//     whatever the transfer syntax of the enclosing data set.
//   - A.4 (Encapsulation of encoded pixel data): undefined-length pixel data
//     holds defined-length fragment items closed by a sequence delimiter.
//   - A.5 (Deflated Explicit VR Little Endian): the data set is a raw RFC 1951
//     deflate stream, optionally followed by a single NUL pad byte. A gzip
//     trailer (RFC 1952 CRC-32 and size) left after the stream by some
//     writers is tolerated when it matches the inflated data.
package dcmhead

import (
	"bufio"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
)

// Encoding of the data set, decided by the caller from the negotiated
// transfer syntax (PS3.5 Annex A).
type Encoding uint8

// The data set encodings Walk understands. Every standard transfer syntax maps
// onto one of them: the encapsulated (compressed) transfer syntaxes all encode
// the data set in Explicit VR Little Endian (PS3.5 A.4).
const (
	// ImplicitVRLittleEndian is 1.2.840.10008.1.2 (PS3.5 A.1).
	ImplicitVRLittleEndian Encoding = iota + 1
	// ExplicitVRLittleEndian is 1.2.840.10008.1.2.1 and every encapsulated
	// transfer syntax (PS3.5 A.2, A.4).
	ExplicitVRLittleEndian
	// ExplicitVRBigEndian is the retired 1.2.840.10008.1.2.2 (PS3.5 A.3).
	ExplicitVRBigEndian
	// DeflatedExplicitVRLittleEndian is 1.2.840.10008.1.2.1.99 (PS3.5 A.5).
	DeflatedExplicitVRLittleEndian
)

// String returns the transfer syntax name of e.
func (e Encoding) String() string {
	switch e {
	case ImplicitVRLittleEndian:
		return "Implicit VR Little Endian"
	case ExplicitVRLittleEndian:
		return "Explicit VR Little Endian"
	case ExplicitVRBigEndian:
		return "Explicit VR Big Endian"
	case DeflatedExplicitVRLittleEndian:
		return "Deflated Explicit VR Little Endian"
	}
	return fmt.Sprintf("Encoding(%d)", uint8(e))
}

// Limits applied by Walk.
const (
	// MaxDepth is the deepest nesting of undefined-length sequences (and
	// encapsulated pixel data) Walk follows; the top-level data set is depth 0
	// and a sequence in it is depth 1. Deeper nesting is a FormatError.
	MaxDepth = 64
	// MaxUIDLength bounds the value length of the UID elements Walk reads
	// into the Summary. A UI value is at most 64 bytes (PS3.5 6.2); the bound
	// is generous, and a longer value is a FormatError.
	MaxUIDLength = 1024

	// windowSize is the read window: many small elements cost one ReadAt.
	windowSize = 32 << 10
)

// Summary is what the walk found at the top level of the data set.
type Summary struct {
	// SOPClassUID (0008,0016), SOPInstanceUID (0008,0018),
	// StudyInstanceUID (0020,000D) and SeriesInstanceUID (0020,000E), taken
	// from the top-level data set only and trimmed of NUL/space padding;
	// "" when absent.
	SOPClassUID, SOPInstanceUID, StudyInstanceUID, SeriesInstanceUID string
	// Elements is the number of top-level elements seen, every element
	// counted (group lengths, private elements, Data Set Trailing Padding).
	Elements int
	// Size is the number of data set bytes walked: on success the data set
	// size given to Walk (for the deflated encoding, the deflated size). On
	// error it says how far the walk got (for the deflated encoding, how much
	// compressed input the inflater had consumed, read-ahead included).
	Size int64
	// Values holds, by tag, the value of each element WalkCollect was asked
	// for and found in the top-level data set; nil when none was (and always
	// for Walk). See WalkCollect for which values are collected and how
	// they are written.
	Values map[uint32]string
}

// FormatError says why and where the data set is malformed.
//
// Offset is the byte offset from the start of the data set of the construct
// at fault (the element, item or delimiter header; the start of an unclosed
// sequence or item). For DeflatedExplicitVRLittleEndian, offsets are counted
// in the inflated stream, except for errors in the deflate stream itself,
// which count compressed bytes; Reason says which.
type FormatError struct {
	Offset int64
	Reason string
}

// Error returns the reason prefixed with the package name, in a form meant to
// be read in a log, e.g.
// "dcmhead: element (7FE0,0010) at offset 9432: value length 4620 overruns data set end (9630 bytes)".
func (e *FormatError) Error() string { return "dcmhead: " + e.Reason }

// Tags with a structural or summary role.
const (
	tagItem         = 0xFFFEE000 // PS3.5 7.5.2
	tagItemDelim    = 0xFFFEE00D
	tagSeqDelim     = 0xFFFEE0DD
	tagSOPClass     = 0x00080016
	tagSOPInstance  = 0x00080018
	tagStudy        = 0x0020000D
	tagSeries       = 0x0020000E
	tagFloatPixel   = 0x7FE00008
	tagDoublePixel  = 0x7FE00009
	tagPixelData    = 0x7FE00010
	undefinedLength = 0xFFFFFFFF
)

// Value representations whose encoding matters to the walk.
const (
	vrSQ = 'S'<<8 | 'Q'
	vrUN = 'U'<<8 | 'N'
)

// vrLayout classifies an explicit VR (PS3.5 7.1.2, Table 7.1-1 and 7.1-2):
// 0 for an unknown VR, 1 for a 16-bit value length, 2 for two reserved
// bytes and a 32-bit value length.
func vrLayout(vr uint16) int {
	switch vr {
	case 'O'<<8 | 'B', 'O'<<8 | 'D', 'O'<<8 | 'F', 'O'<<8 | 'L', 'O'<<8 | 'V', 'O'<<8 | 'W',
		'S'<<8 | 'Q', 'S'<<8 | 'V', 'U'<<8 | 'C', 'U'<<8 | 'N', 'U'<<8 | 'R', 'U'<<8 | 'T', 'U'<<8 | 'V':
		return 2
	case 'A'<<8 | 'E', 'A'<<8 | 'S', 'A'<<8 | 'T', 'C'<<8 | 'S', 'D'<<8 | 'A', 'D'<<8 | 'S',
		'D'<<8 | 'T', 'F'<<8 | 'L', 'F'<<8 | 'D', 'I'<<8 | 'S', 'L'<<8 | 'O', 'L'<<8 | 'T',
		'P'<<8 | 'N', 'S'<<8 | 'H', 'S'<<8 | 'L', 'S'<<8 | 'S', 'S'<<8 | 'T', 'T'<<8 | 'M',
		'U'<<8 | 'I', 'U'<<8 | 'L', 'U'<<8 | 'S':
		return 1
	}
	return 0
}

// mode is the encoding in force for the data set being walked: it changes
// inside a UN sequence of undefined length (CP-246).
type mode struct {
	explicit  bool
	bigEndian bool
}

func (m mode) u16(b []byte) uint16 {
	if m.bigEndian {
		return uint16(b[0])<<8 | uint16(b[1])
	}
	return uint16(b[1])<<8 | uint16(b[0])
}

func (m mode) u32(b []byte) uint32 {
	if m.bigEndian {
		return uint32(b[0])<<24 | uint32(b[1])<<16 | uint32(b[2])<<8 | uint32(b[3])
	}
	return uint32(b[3])<<24 | uint32(b[2])<<16 | uint32(b[1])<<8 | uint32(b[0])
}

func (m mode) tag(b []byte) uint32 { return uint32(m.u16(b))<<16 | uint32(m.u16(b[2:])) }

// Walk reads the data set of size bytes starting at offset off in r, checks
// its structure and returns what it found.
//
// Every top-level element header is walked to the exact end of the data set;
// defined-length values are skipped by offset arithmetic, never read, except
// for the four UIDs of the Summary. Undefined-length sequences and items and
// encapsulated pixel data are descended into (PS3.5 7.5, A.4); defined-length
// sequences and items are skipped whole. A value overrunning the data set, a
// partial element header, an undefined-length construct left open, a misplaced
// item or delimiter, an invalid explicit VR, nesting beyond MaxDepth, an
// oversized or duplicated summary UID, or bytes after the last complete
// element all give a *FormatError.
//
// With DeflatedExplicitVRLittleEndian the size bytes are a raw deflate stream
// (no zlib header) of an Explicit VR Little Endian data set, possibly followed
// by one NUL pad byte (PS3.5 A.5) or by a gzip trailer that matches the
// inflated data; it is inflated as it is walked, skipped values being
// inflated and discarded. Any other byte after the deflate stream is a
// *FormatError.
//
// Errors from r are returned wrapped, not as a *FormatError. On error the
// returned Summary holds what was found before the fault, which may help a
// log line, but must not be trusted.
func Walk(r io.ReaderAt, off, size int64, enc Encoding) (Summary, error) {
	return walk(r, off, size, enc, windowSize, nil)
}

// WalkCollect is Walk that also collects, into Summary.Values, the values of
// the top-level elements whose tags are in want (as the routes of issue 13
// need them). What it accepts or rejects, and every other field of the
// Summary, are exactly Walk's: collecting changes what is read, never the
// verdict. Nested elements (in sequence items) are not looked at.
//
// A value is collected, as a string, when its VR is one of
//   - AE, AS, CS, DA, DS, DT, IS, LO, LT, PN, SH, ST, TM, UC, UI, UR, UT: the
//     value's bytes with trailing spaces and NULs trimmed; a multi-valued
//     value keeps its backslashes ("ORIGINAL\PRIMARY"). The bytes are not
//     converted from the Specific Character Set nor checked: they may hold
//     any byte, and must be escaped before they are logged or shown;
//   - US, SS, UL, SL, UV, SV, FL, FD: each number in decimal (floats in the
//     shortest form that reads back exactly, strconv 'g' -1), several joined
//     with backslashes, in the byte order of the encoding.
//
// The VR is the element's own in explicit VR. In implicit VR it is the
// dictionary's (pkg/dict): elements the dictionary does not know (private
// ones) or gives a choice of VR for ("US or SS") are not collected. An
// explicit element of VR UN (PS3.5 6.2.2: a sender that did not know it) is
// decoded by the dictionary's VR when that is a text VR, or a binary one in
// little endian. Not collected: elements of any other VR (OB, OD, OF, OL, OV,
// OW, SQ, AT, UN without a usable dictionary VR), values longer than
// MaxValueLength, undefined-length elements, binary values whose length is
// not a multiple of their size; and a value already collected is not
// replaced by a later element with the same tag. The four UIDs of the
// Summary, when wanted, are collected as the Summary has them.
//
// Values are read through the same read window as element headers, so
// collecting costs at most one read per wanted value that is not already in
// the window; bulk values (pixel data and the like) are still skipped by
// offset, never read. With nothing wanted, WalkCollect is Walk.
func WalkCollect(r io.ReaderAt, off, size int64, enc Encoding, want []uint32) (Summary, error) {
	return walk(r, off, size, enc, windowSize, newWants(want))
}

// walk is WalkCollect with a chosen window size, at least MaxUIDLength and
// MaxValueLength (tests vary it to check that results do not depend on where
// window boundaries fall).
func walk(r io.ReaderAt, off, size int64, enc Encoding, window int, want []wanted) (Summary, error) {
	if window < max(MaxUIDLength, MaxValueLength) {
		panic("dcmhead: window smaller than MaxUIDLength or MaxValueLength")
	}
	if r == nil {
		return Summary{}, errors.New("dcmhead: nil reader")
	}
	if off < 0 || size < 0 {
		return Summary{}, fmt.Errorf("dcmhead: invalid data set bounds: offset %d, size %d", off, size)
	}
	var m mode
	switch enc {
	case ImplicitVRLittleEndian:
	case ExplicitVRLittleEndian:
		m = mode{explicit: true}
	case ExplicitVRBigEndian:
		m = mode{explicit: true, bigEndian: true}
	case DeflatedExplicitVRLittleEndian:
		return walkDeflated(r, off, size, window, want)
	default:
		return Summary{}, fmt.Errorf("dcmhead: unknown encoding %d", uint8(enc))
	}
	w := walker{ra: r, base: off, end: size, buf: make([]byte, min(size, int64(window))), want: want}
	err := w.dataset(m, 0, -1)
	w.sum.Size = w.pos
	return w.sum, err
}

// walkDeflated walks a Deflated Explicit VR Little Endian data set (PS3.5 A.5).
func walkDeflated(r io.ReaderAt, off, size int64, window int, want []wanted) (Summary, error) {
	src := &countingReader{br: bufio.NewReaderSize(&sectionReader{r: r, off: off, end: off + size, size: size}, 16<<10)}
	fr := flate.NewReader(src)
	defer fr.Close()
	zr := &crcReader{r: fr}
	w := walker{zr: zr, zsrc: src, end: -1, buf: make([]byte, window), inflated: true, want: want}
	err := w.dataset(mode{explicit: true}, 0, -1)
	w.sum.Size = src.n
	if err != nil {
		return w.sum, err
	}
	// The deflate stream has ended: the inflater reported EOF after its final
	// block, and consumed no byte beyond it since src is an io.ByteReader.
	// PS3.5 A.5 allows a single NUL pad byte after it. Some writers (the
	// corpus has one, sc-deflated-explicit-le.dcm) leave the 8-byte gzip
	// trailer (RFC 1952: CRC-32 and size of the inflated data) after the raw
	// stream; it is accepted when it matches what was inflated.
	streamEnd := src.n
	var tail [10]byte
	rest := size - streamEnd
	t := tail[:min(rest, int64(len(tail)))]
	if _, err := io.ReadFull(src, t); err != nil {
		return w.sum, w.ioError(streamEnd, err)
	}
	if rest > int64(len(tail)) {
		return w.sum, w.trailing(streamEnd, size)
	}
	if len(t) >= 8 && binary.LittleEndian.Uint32(t) == zr.crc && binary.LittleEndian.Uint32(t[4:]) == uint32(zr.n) {
		t = t[8:]
	}
	if len(t) > 1 || len(t) == 1 && t[0] != 0 {
		return w.sum, w.trailing(streamEnd, size)
	}
	w.sum.Size = size
	return w.sum, nil
}

func (w *walker) trailing(streamEnd, size int64) error {
	return &FormatError{Offset: streamEnd, Reason: fmt.Sprintf(
		"deflate stream ends at compressed offset %d but the data set is %d bytes: %d trailing bytes that are neither a NUL pad byte nor a matching gzip trailer",
		streamEnd, size, size-streamEnd)}
}
