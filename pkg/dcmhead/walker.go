package dcmhead

import (
	"bytes"
	"compress/flate"
	"errors"
	"fmt"
	"io"
)

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

	want []wanted // sorted by tag; nil when nothing is to be collected
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
			if w.want != nil && vl <= MaxValueLength {
				if j := findWant(w.want, tag); j >= 0 {
					if cvr := collectVR(m, w.want[j], vr); cvr != 0 {
						if err := w.collect(tag, cvr, start, vl, m.bigEndian); err != nil {
							return err
						}
						continue
					}
				}
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
		istart, itag, ilen, err := w.nextItem(m, "undefined-length sequence", tag, start)
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
		istart, itag, ilen, err := w.nextItem(m, "encapsulated pixel data", tag, start)
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

// nextItem reads the header of the next item (or delimiter) of what (an
// undefined-length sequence or encapsulated pixel data, tag at start),
// which must not end before its sequence delimiter.
func (w *walker) nextItem(m mode, what string, tag uint32, start int64) (istart int64, itag, ilen uint32, err error) {
	end, err := w.atEnd()
	if err != nil {
		return 0, 0, 0, err
	}
	if end {
		return 0, 0, 0, w.errAt(start, "%s %s at %s not closed by a sequence delimiter (FFFE,E0DD) before %s",
			what, fmtTag(tag), w.where(start), w.endText())
	}
	istart = w.pos
	itag, _, ilen, err = w.header(m, true)
	return istart, itag, ilen, err
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
	if w.want != nil && findWant(w.want, tag) >= 0 {
		w.setValue(tag, s)
	}
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
