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
// the Summary, each bounded by MaxUIDLength.
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
	"bytes"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
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
	return walk(r, off, size, enc, windowSize)
}

// walk is Walk with a chosen window size, at least MaxUIDLength (tests vary
// it to check that results do not depend on where window boundaries fall).
func walk(r io.ReaderAt, off, size int64, enc Encoding, window int) (Summary, error) {
	if window < MaxUIDLength {
		panic("dcmhead: window smaller than MaxUIDLength")
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
		return walkDeflated(r, off, size, window)
	default:
		return Summary{}, fmt.Errorf("dcmhead: unknown encoding %d", uint8(enc))
	}
	w := walker{ra: r, base: off, end: size, buf: make([]byte, min(size, int64(window)))}
	err := w.dataset(m, 0, -1)
	w.sum.Size = w.pos
	return w.sum, err
}

// walkDeflated walks a Deflated Explicit VR Little Endian data set (PS3.5 A.5).
func walkDeflated(r io.ReaderAt, off, size int64, window int) (Summary, error) {
	src := &countingReader{br: bufio.NewReaderSize(&sectionReader{r: r, off: off, end: off + size, size: size}, 16<<10)}
	fr := flate.NewReader(src)
	defer fr.Close()
	zr := &crcReader{r: fr}
	w := walker{zr: zr, zsrc: src, end: -1, buf: make([]byte, window), inflated: true}
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

// crcReader computes the CRC-32 and size of the inflated data, for checking
// a gzip trailer.
type crcReader struct {
	r   io.Reader
	crc uint32
	n   int64
}

func (c *crcReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.crc = crc32.Update(c.crc, crc32.IEEETable, p[:n])
	c.n += int64(n)
	return n, err
}

// sectionReader reads [off, end) of r, reporting a reader that ends early
// as io.ErrUnexpectedEOF rather than io.EOF, so that the inflater does not
// mistake a short file for a truncated deflate stream.
type sectionReader struct {
	r        io.ReaderAt
	off, end int64
	size     int64
}

func (s *sectionReader) Read(p []byte) (int, error) {
	if s.off >= s.end {
		return 0, io.EOF
	}
	p = p[:min(int64(len(p)), s.end-s.off)]
	n, err := s.r.ReadAt(p, s.off)
	s.off += int64(n)
	if n < len(p) {
		if err == nil || err == io.EOF {
			err = fmt.Errorf("reader ended before the %d-byte data set did: %w", s.size, io.ErrUnexpectedEOF)
		}
		return n, err
	}
	return n, nil
}

// countingReader counts the compressed bytes the inflater consumes. Being an
// io.ByteReader, it stops flate from reading ahead of the stream end.
type countingReader struct {
	br  *bufio.Reader
	n   int64
	err error // first error other than io.EOF from the underlying reader
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.br.Read(p)
	c.n += int64(n)
	c.note(err)
	return n, err
}

func (c *countingReader) ReadByte() (byte, error) {
	b, err := c.br.ReadByte()
	if err == nil {
		c.n++
	}
	c.note(err)
	return b, err
}

func (c *countingReader) note(err error) {
	if err != nil && err != io.EOF && c.err == nil {
		c.err = err
	}
}

// walker holds the state of one Walk: a read window over either an
// io.ReaderAt (random access, skips are arithmetic) or an inflating stream
// (skips are reads into the window, discarded).
type walker struct {
	ra   io.ReaderAt
	base int64 // offset of the data set in ra

	zr       io.Reader       // inflater, nil unless deflated
	zsrc     *countingReader // compressed input of zr
	inflated bool
	eof      bool  // zr has reported io.EOF
	zerr     error // zr has failed; reported when its output is used up

	end    int64 // data set size; -1 while unknown (inflating, before EOF)
	pos    int64 // current offset in the data set
	buf    []byte
	bstart int64 // data set offset of buf[0]
	blen   int   // valid bytes in buf

	sum     Summary
	seen    [4]bool
	seenOff [4]int64
}

// where formats an offset for an error message.
func (w *walker) where(off int64) string {
	if w.inflated {
		return fmt.Sprintf("inflated offset %d", off)
	}
	return fmt.Sprintf("offset %d", off)
}

// endText describes the data set end for an error message.
func (w *walker) endText() string {
	if w.inflated {
		if w.end < 0 {
			return "inflated data set end"
		}
		return fmt.Sprintf("inflated data set end (%d bytes)", w.end)
	}
	return fmt.Sprintf("data set end (%d bytes)", w.end)
}

func (w *walker) errAt(off int64, format string, args ...any) error {
	return &FormatError{Offset: off, Reason: fmt.Sprintf(format, args...)}
}

func (w *walker) ioError(off int64, err error) error {
	return fmt.Errorf("dcmhead: reading data set at offset %d: %w", off, err)
}

// streamError converts an error of the inflater.
func (w *walker) streamError(err error) error {
	if w.zsrc.err != nil {
		return w.ioError(w.zsrc.n, w.zsrc.err)
	}
	var cie flate.CorruptInputError
	if errors.As(err, &cie) {
		return &FormatError{Offset: int64(cie), Reason: fmt.Sprintf(
			"deflate stream corrupt at compressed offset %d (inflated offset %d)", int64(cie), w.bstart+int64(w.blen))}
	}
	if errors.Is(err, io.ErrUnexpectedEOF) {
		return &FormatError{Offset: w.zsrc.n, Reason: fmt.Sprintf(
			"deflate stream truncated: compressed data ends at offset %d before the final deflate block (inflated offset %d)",
			w.zsrc.n, w.bstart+int64(w.blen))}
	}
	return w.ioError(w.zsrc.n, err)
}

// peek returns the n bytes at the current position without consuming them.
// n must not exceed the window. If the data set ends first, the returned
// slice is shorter than n (and the data set end is then known).
func (w *walker) peek(n int) ([]byte, error) {
	if i := w.pos - w.bstart; i >= 0 && i+int64(n) <= int64(w.blen) {
		return w.buf[i : i+int64(n)], nil
	}
	if w.zr != nil {
		return w.peekStream(n)
	}
	remain := w.end - w.pos
	if int64(n) > remain {
		return nil, nil
	}
	want := int(min(int64(len(w.buf)), remain))
	m, err := w.ra.ReadAt(w.buf[:want], w.base+w.pos)
	if m < want {
		w.blen = 0
		if err == nil || err == io.EOF {
			err = fmt.Errorf("reader ended before the %d-byte data set did: %w", w.end, io.ErrUnexpectedEOF)
		}
		return nil, w.ioError(w.pos+int64(m), err)
	}
	w.bstart, w.blen = w.pos, m
	return w.buf[:n], nil
}

// peekStream is peek for the inflating stream, where w.pos is always within
// or at the end of the buffered bytes. An inflater error is only reported
// once the bytes inflated before it are used up, so that where an error is
// reported does not depend on the window size.
func (w *walker) peekStream(n int) ([]byte, error) {
	i := int(w.pos - w.bstart)
	if i > 0 {
		w.blen = copy(w.buf, w.buf[i:w.blen])
		w.bstart = w.pos
	}
	for w.blen < n && !w.eof && w.zerr == nil {
		m, err := w.zr.Read(w.buf[w.blen:])
		w.blen += m
		w.noteStream(err)
	}
	if w.blen < n {
		if w.zerr != nil {
			return nil, w.streamError(w.zerr)
		}
		return w.buf[:w.blen], nil
	}
	return w.buf[:n], nil
}

// noteStream records the end or failure of the inflating stream.
func (w *walker) noteStream(err error) {
	switch {
	case err == nil:
	case err == io.EOF:
		w.eof = true
		w.end = w.bstart + int64(w.blen)
	case w.zerr == nil:
		w.zerr = err
	}
}

// atEnd reports whether the current position is the end of the data set.
func (w *walker) atEnd() (bool, error) {
	if w.zr == nil {
		return w.pos == w.end, nil
	}
	b, err := w.peek(1)
	return len(b) == 0 && err == nil, err
}

// What a skipped value belongs to, for error messages.
const (
	ofElement = iota
	ofItem
	ofFragment
)

// skip moves over the n-byte value of the element, item or fragment whose
// header starts at start, failing if it overruns the data set.
func (w *walker) skip(kind int, tag uint32, start, n int64) error {
	if w.zr == nil {
		if n > w.end-w.pos {
			return w.overrun(kind, tag, start, n)
		}
		w.pos += n
		return nil
	}
	if avail := w.bstart + int64(w.blen) - w.pos; n <= avail {
		w.pos += n
		return nil
	}
	// Discard through the window: consume what is buffered, then read and
	// drop the rest.
	need := n - (w.bstart + int64(w.blen) - w.pos)
	w.pos = w.bstart + int64(w.blen)
	w.bstart, w.blen = w.pos, 0
	for need > 0 && !w.eof && w.zerr == nil {
		m, err := w.zr.Read(w.buf[:min(int64(len(w.buf)), need)])
		need -= int64(m)
		w.pos += int64(m)
		w.bstart = w.pos
		w.noteStream(err)
	}
	if need > 0 {
		if w.zerr != nil {
			return w.streamError(w.zerr)
		}
		return w.overrun(kind, tag, start, n)
	}
	return nil
}

func (w *walker) overrun(kind int, tag uint32, start, n int64) error {
	what := "element " + fmtTag(tag)
	switch kind {
	case ofItem:
		what = "item (FFFE,E000)"
	case ofFragment:
		what = "fragment item (FFFE,E000)"
	}
	return w.errAt(start, "%s at %s: value length %d overruns %s", what, w.where(start), n, w.endText())
}

// header reads the header of the element, item or delimiter at the current
// position and moves past it. vr is 0 for implicit VR and for items and
// delimiters, which never carry a VR (PS3.5 7.5).
func (w *walker) header(m mode, inSeq bool) (tag uint32, vr uint16, vl uint32, err error) {
	start := w.pos
	b, err := w.peek(8)
	if err != nil {
		return 0, 0, 0, err
	}
	if len(b) < 8 {
		return 0, 0, 0, w.partial(start, 8)
	}
	tag = m.tag(b)
	if !m.explicit || tag>>16 == 0xFFFE || inSeq {
		w.pos += 8
		return tag, 0, m.u32(b[4:]), nil
	}
	vr = uint16(b[4])<<8 | uint16(b[5])
	switch vrLayout(vr) {
	case 1:
		w.pos += 8
		return tag, vr, uint32(m.u16(b[6:])), nil
	case 2:
		b, err = w.peek(12)
		if err != nil {
			return 0, 0, 0, err
		}
		if len(b) < 12 {
			return 0, 0, 0, w.partial(start, 12)
		}
		w.pos += 12
		return tag, vr, m.u32(b[8:]), nil
	}
	return 0, 0, 0, w.errAt(start, "element %s at %s: invalid VR %s", fmtTag(tag), w.where(start), fmtVR(b[4], b[5]))
}

func (w *walker) partial(start int64, need int) error {
	have := w.end - start
	return w.errAt(start, "partial element header at %s: %d bytes remain before %s, a header needs %d",
		w.where(start), have, w.endText(), need)
}

// dataset walks the elements of a data set: the top-level one (open < 0),
// which ends at the end of the data, or an undefined-length item whose header
// is at offset open, which ends at its item delimitation item (PS3.5 7.5.2).
// depth is the number of sequences enclosing it.
func (w *walker) dataset(m mode, depth int, open int64) error {
	top := open < 0
	for {
		end, err := w.atEnd()
		if err != nil {
			return err
		}
		if end {
			if top {
				return nil
			}
			return w.errAt(open, "undefined-length item at %s not closed by an item delimiter (FFFE,E00D) before %s",
				w.where(open), w.endText())
		}
		start := w.pos
		tag, vr, vl, err := w.header(m, false)
		if err != nil {
			return err
		}
		switch g := tag >> 16; g {
		case 0xFFFE:
			switch tag {
			case tagItemDelim:
				if !top {
					return nil // a non-zero length is tolerated and ignored
				}
				return w.errAt(start, "item delimiter (FFFE,E00D) at %s outside an item", w.where(start))
			case tagSeqDelim:
				if top {
					return w.errAt(start, "sequence delimiter (FFFE,E0DD) at %s outside a sequence", w.where(start))
				}
				return w.errAt(start, "sequence delimiter (FFFE,E0DD) at %s inside the item at %s, which has no item delimiter",
					w.where(start), w.where(open))
			case tagItem:
				return w.errAt(start, "item (FFFE,E000) at %s outside a sequence", w.where(start))
			}
			return w.errAt(start, "invalid tag %s at %s", fmtTag(tag), w.where(start))
		case 0x0000, 0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF:
			// Command group and reserved private groups (PS3.5 7.1): not a
			// data element, most likely padding or garbage.
			return w.errAt(start, "element %s at %s: group %04X is not allowed in a data set", fmtTag(tag), w.where(start), g)
		}
		if top {
			w.sum.Elements++
		}
		if vl == undefinedLength {
			if top && summaryIndex(tag) >= 0 {
				return w.errAt(start, "element %s at %s: undefined length on a UID element", fmtTag(tag), w.where(start))
			}
			if err := w.undefined(m, depth, tag, vr, start); err != nil {
				return err
			}
			continue
		}
		if top {
			if i := summaryIndex(tag); i >= 0 {
				if err := w.readUID(i, tag, start, vl); err != nil {
					return err
				}
				continue
			}
		}
		if err := w.skip(ofElement, tag, start, int64(vl)); err != nil {
			return err
		}
	}
}

// undefined walks the value of an element of undefined length.
func (w *walker) undefined(m mode, depth int, tag uint32, vr uint16, start int64) error {
	switch {
	case (tag == tagPixelData || tag == tagFloatPixel || tag == tagDoublePixel) && vr != vrSQ:
		// Encapsulated pixel data (PS3.5 A.4); float pixel data defensively.
		return w.encapsulated(m, depth+1, tag, start)
	case !m.explicit || vr == vrSQ:
		// In implicit VR any other undefined-length element is a sequence.
		return w.sequence(m, depth+1, tag, start)
	case vr == vrUN:
		// CP-246: the sequence stays in Implicit VR Little Endian.
		return w.sequence(mode{}, depth+1, tag, start)
	}
	return w.errAt(start, "element %s at %s: undefined length is not allowed for VR %s",
		fmtTag(tag), w.where(start), fmtVR(byte(vr>>8), byte(vr)))
}

// sequence walks the items of an undefined-length sequence up to its
// sequence delimitation item (PS3.5 7.5.2). Defined-length items are skipped.
func (w *walker) sequence(m mode, depth int, tag uint32, start int64) error {
	if depth > MaxDepth {
		return w.errAt(start, "sequence %s at %s: nesting deeper than %d levels", fmtTag(tag), w.where(start), MaxDepth)
	}
	for {
		end, err := w.atEnd()
		if err != nil {
			return err
		}
		if end {
			return w.errAt(start, "undefined-length sequence %s at %s not closed by a sequence delimiter (FFFE,E0DD) before %s",
				fmtTag(tag), w.where(start), w.endText())
		}
		istart := w.pos
		itag, _, ilen, err := w.header(m, true)
		if err != nil {
			return err
		}
		switch itag {
		case tagSeqDelim:
			return nil
		case tagItem:
			if ilen == undefinedLength {
				if err := w.dataset(m, depth, istart); err != nil {
					return err
				}
			} else if err := w.skip(ofItem, itag, istart, int64(ilen)); err != nil {
				return err
			}
		case tagItemDelim:
			return w.errAt(istart, "item delimiter (FFFE,E00D) at %s outside an item (in sequence %s at %s)",
				w.where(istart), fmtTag(tag), w.where(start))
		default:
			return w.errAt(istart, "tag %s at %s where an item or sequence delimiter was expected (in sequence %s at %s)",
				fmtTag(itag), w.where(istart), fmtTag(tag), w.where(start))
		}
	}
}

// encapsulated walks encapsulated pixel data: a Basic Offset Table item and
// fragment items, all of defined length, then a sequence delimitation item
// (PS3.5 A.4).
func (w *walker) encapsulated(m mode, depth int, tag uint32, start int64) error {
	if depth > MaxDepth {
		return w.errAt(start, "encapsulated pixel data %s at %s: nesting deeper than %d levels", fmtTag(tag), w.where(start), MaxDepth)
	}
	for {
		end, err := w.atEnd()
		if err != nil {
			return err
		}
		if end {
			return w.errAt(start, "encapsulated pixel data %s at %s not closed by a sequence delimiter (FFFE,E0DD) before %s",
				fmtTag(tag), w.where(start), w.endText())
		}
		istart := w.pos
		itag, _, ilen, err := w.header(m, true)
		if err != nil {
			return err
		}
		switch itag {
		case tagSeqDelim:
			return nil
		case tagItem:
			if ilen == undefinedLength {
				return w.errAt(istart, "fragment item at %s in encapsulated pixel data %s has undefined length",
					w.where(istart), fmtTag(tag))
			}
			if err := w.skip(ofFragment, itag, istart, int64(ilen)); err != nil {
				return err
			}
		default:
			return w.errAt(istart, "tag %s at %s where a fragment item or sequence delimiter was expected (in encapsulated pixel data %s at %s)",
				fmtTag(itag), w.where(istart), fmtTag(tag), w.where(start))
		}
	}
}

// summaryIndex maps the Summary's UID tags to 0..3, other tags to -1.
func summaryIndex(tag uint32) int {
	switch tag {
	case tagSOPClass:
		return 0
	case tagSOPInstance:
		return 1
	case tagStudy:
		return 2
	case tagSeries:
		return 3
	}
	return -1
}

// readUID reads the value of a Summary UID element, bounded by MaxUIDLength.
func (w *walker) readUID(i int, tag uint32, start int64, vl uint32) error {
	if w.seen[i] {
		return w.errAt(start, "element %s at %s: duplicate of the element at %s", fmtTag(tag), w.where(start), w.where(w.seenOff[i]))
	}
	w.seen[i], w.seenOff[i] = true, start
	if vl > MaxUIDLength {
		return w.errAt(start, "element %s at %s: value length %d exceeds the %d-byte limit for a UID",
			fmtTag(tag), w.where(start), vl, MaxUIDLength)
	}
	b, err := w.peek(int(vl))
	if err != nil {
		return err
	}
	if len(b) < int(vl) {
		return w.overrun(ofElement, tag, start, int64(vl))
	}
	s := string(bytes.Trim(b, "\x00 "))
	w.pos += int64(vl)
	switch i {
	case 0:
		w.sum.SOPClassUID = s
	case 1:
		w.sum.SOPInstanceUID = s
	case 2:
		w.sum.StudyInstanceUID = s
	case 3:
		w.sum.SeriesInstanceUID = s
	}
	return nil
}

func fmtTag(tag uint32) string { return fmt.Sprintf("(%04X,%04X)", tag>>16, tag&0xFFFF) }

// fmtVR shows a VR as text when printable, as hex otherwise.
func fmtVR(a, b byte) string {
	if a >= 0x20 && a < 0x7F && b >= 0x20 && b < 0x7F {
		return fmt.Sprintf("%q", string([]byte{a, b}))
	}
	return fmt.Sprintf("0x%02X%02X", a, b)
}
