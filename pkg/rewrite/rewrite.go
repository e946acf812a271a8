// Package rewrite streams a data set through per-destination changes: it
// sets top-level attributes ("stamps") on a copy, in the data set's own
// transfer syntax, without holding the object in memory. Every other byte,
// pixel data included, is copied as it is; group length elements of the
// groups it changes are dropped (they are retired in data sets, PS3.5 7.2,
// and would be wrong). Deflated data sets are inflated and deflated again
// (PS3.5 A.5).
//
// The input is a data set the spool has already walked (pkg/dcmhead), so
// it is well formed; a malformed one is still an error, never a panic.
package rewrite

import (
	"bufio"
	"compress/flate"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/dicomgw/dicomgw/pkg/uid"
)

// Stamp is a top-level attribute to set: Value is its encoded value (text
// padded to even length).
type Stamp struct {
	Tag   uint32
	VR    string
	Value []byte
}

// ErrMalformed is wrapped by the errors of a data set that cannot be
// walked.
var ErrMalformed = errors.New("rewrite: malformed data set")

// maxDepth bounds the nesting of undefined-length sequences followed.
const maxDepth = 64

// Rewriter applies stamps to data sets of one transfer syntax.
type Rewriter struct {
	m        mode
	deflated bool
	stamps   []Stamp // by tag
	groups   map[uint16]bool
}

type mode struct{ explicit, big bool }

// New returns a Rewriter for data sets in transfer syntax ts.
func New(ts string, stamps []Stamp) (*Rewriter, error) {
	t, ok := uid.LookupTransferSyntax(ts)
	if !ok {
		return nil, fmt.Errorf("rewrite: unknown transfer syntax %s", ts)
	}
	rw := &Rewriter{stamps: slices.Clone(stamps), groups: map[uint16]bool{}}
	switch t.Encoding {
	case uid.EncodingImplicitVRLittleEndian:
	case uid.EncodingExplicitVRLittleEndian:
		rw.m.explicit = true
	case uid.EncodingExplicitVRBigEndian:
		rw.m = mode{explicit: true, big: true}
	case uid.EncodingDeflatedExplicitVRLittleEndian:
		rw.m.explicit, rw.deflated = true, true
	default:
		return nil, fmt.Errorf("rewrite: transfer syntax %s: encoding not supported", ts)
	}
	slices.SortFunc(rw.stamps, func(a, b Stamp) int { return int(int64(a.Tag) - int64(b.Tag)) })
	for i, s := range rw.stamps {
		if i > 0 && rw.stamps[i-1].Tag == s.Tag {
			return nil, fmt.Errorf("rewrite: (%04X,%04X) stamped twice", s.Tag>>16, s.Tag&0xFFFF)
		}
		if s.Tag>>16 == 0x0002 || s.Tag&0xFFFF == 0 || s.Tag>>16 >= 0xFFFA {
			return nil, fmt.Errorf("rewrite: (%04X,%04X) cannot be stamped", s.Tag>>16, s.Tag&0xFFFF)
		}
		if len(s.Value)%2 == 1 {
			return nil, fmt.Errorf("rewrite: (%04X,%04X): odd value length", s.Tag>>16, s.Tag&0xFFFF)
		}
		if len(s.VR) != 2 || (rw.m.explicit && !longVR(s.VR) && len(s.Value) > 0xFFFF) {
			return nil, fmt.Errorf("rewrite: (%04X,%04X): VR %q or value length %d", s.Tag>>16, s.Tag&0xFFFF, s.VR, len(s.Value))
		}
		rw.groups[uint16(s.Tag>>16)] = true
	}
	return rw, nil
}

func longVR(vr string) bool {
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		return true
	}
	return false
}

// Open returns the rewritten data set read from src; closing it closes src.
// A goroutine writes it; it ends when src is exhausted, fails, or the
// reader is closed.
func (rw *Rewriter) Open(src io.ReadCloser) io.ReadCloser {
	pr, pw := io.Pipe()
	done := make(chan struct{})
	go func() {
		defer close(done)
		pw.CloseWithError(rw.Copy(pw, src))
	}()
	return &pipeReader{PipeReader: pr, src: src, done: done}
}

type pipeReader struct {
	*io.PipeReader
	src  io.Closer
	done chan struct{}
}

func (p *pipeReader) Close() error {
	p.PipeReader.Close()
	<-p.done
	return p.src.Close()
}

// Copy writes the rewritten data set read from src to dst.
func (rw *Rewriter) Copy(dst io.Writer, src io.Reader) error {
	var fw *flate.Writer
	if rw.deflated {
		fr := flate.NewReader(src)
		defer fr.Close()
		src = fr
		var err error
		if fw, err = flate.NewWriter(dst, flate.DefaultCompression); err != nil {
			return err
		}
		dst = fw
	}
	bw := bufio.NewWriterSize(dst, 64<<10)
	w := &walker{m: rw.m, br: bufio.NewReaderSize(src, 64<<10), out: bw}
	if err := rw.walk(w); err != nil {
		return err
	}
	if err := bw.Flush(); err != nil {
		return err
	}
	if fw != nil {
		return fw.Close()
	}
	return nil
}

// Size is the length of the rewritten data set of src (which it reads
// whole: for a deflated data set the only way to know).
func (rw *Rewriter) Size(src io.Reader) (int64, error) {
	var c countWriter
	err := rw.Copy(&c, src)
	return int64(c), err
}

type countWriter int64

func (c *countWriter) Write(p []byte) (int, error) { *c += countWriter(len(p)); return len(p), nil }

// walker reads a data set and writes what it keeps.
type walker struct {
	m   mode
	br  *bufio.Reader
	out io.Writer
	off int64
	hdr [12]byte
}

func (w *walker) u16(b []byte) uint16 {
	if w.m.big {
		return binary.BigEndian.Uint16(b)
	}
	return binary.LittleEndian.Uint16(b)
}

func (w *walker) u32(b []byte) uint32 {
	if w.m.big {
		return binary.BigEndian.Uint32(b)
	}
	return binary.LittleEndian.Uint32(b)
}

type header struct {
	tag    uint32
	vr     string
	length uint32
	raw    []byte // the header's bytes as read
}

const undefined = 0xFFFFFFFF

// next reads an element, item or delimiter header; io.EOF at a clean end.
func (w *walker) next(m mode) (header, error) {
	b, err := w.br.Peek(8)
	if len(b) == 0 && errors.Is(err, io.EOF) {
		return header{}, io.EOF
	}
	if len(b) < 8 {
		return header{}, fmt.Errorf("%w: truncated header at offset %d", ErrMalformed, w.off)
	}
	saved := w.m
	w.m = m
	defer func() { w.m = saved }()
	h := header{tag: uint32(w.u16(b))<<16 | uint32(w.u16(b[2:]))}
	n := 8
	switch {
	case h.tag>>16 == 0xFFFE || !m.explicit:
		h.length = w.u32(b[4:])
		if !m.explicit && h.tag>>16 != 0xFFFE && h.length == undefined {
			h.vr = "SQ" // implicit VR: undefined length is a sequence (or UN)
		}
	default:
		h.vr = string(b[4:6])
		if longVR(h.vr) {
			if b, _ = w.br.Peek(12); len(b) < 12 {
				return header{}, fmt.Errorf("%w: truncated header at offset %d", ErrMalformed, w.off)
			}
			h.length, n = w.u32(b[8:]), 12
		} else {
			h.length = uint32(w.u16(b[6:]))
		}
	}
	h.raw = append(w.hdr[:0], b[:n]...)
	if _, err := w.br.Discard(n); err != nil {
		return header{}, err
	}
	w.off += int64(n)
	return h, nil
}

// emit writes b unless out is nil (an element being dropped).
func (w *walker) emit(out io.Writer, b []byte) error {
	if out == nil {
		return nil
	}
	_, err := out.Write(b)
	return err
}

// value copies (or drops) n bytes of value.
func (w *walker) value(out io.Writer, n uint32) error {
	var err error
	var c int64
	if out == nil {
		var d int
		d, err = w.br.Discard(int(n))
		c = int64(d)
	} else {
		c, err = io.CopyN(out, w.br, int64(n))
	}
	w.off += c
	if err != nil {
		if errors.Is(err, io.EOF) {
			return fmt.Errorf("%w: value overruns the data set at offset %d", ErrMalformed, w.off)
		}
		return err
	}
	return nil
}

// element copies (or drops) the rest of element h, whose header is read.
func (w *walker) element(out io.Writer, m mode, h header, depth int) error {
	if h.length != undefined {
		return w.value(out, h.length)
	}
	if depth >= maxDepth {
		return fmt.Errorf("%w: sequences nested deeper than %d", ErrMalformed, maxDepth)
	}
	if h.vr == "UN" {
		m = mode{} // an undefined-length UN is Implicit VR Little Endian inside (PS3.5 6.2.2)
	}
	for {
		it, err := w.next(m)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: sequence without its delimiter", ErrMalformed)
			}
			return err
		}
		if err := w.emit(out, it.raw); err != nil {
			return err
		}
		switch it.tag {
		case 0xFFFEE0DD:
			return nil
		case 0xFFFEE000:
		default:
			return fmt.Errorf("%w: (%04X,%04X) at offset %d where an item was expected", ErrMalformed, it.tag>>16, it.tag&0xFFFF, w.off)
		}
		if it.length != undefined {
			if err := w.value(out, it.length); err != nil {
				return err
			}
			continue
		}
		if err := w.item(out, m, depth+1); err != nil {
			return err
		}
	}
}

// item copies the elements of an undefined-length item up to and with
// its delimiter.
func (w *walker) item(out io.Writer, m mode, depth int) error {
	for {
		h, err := w.next(m)
		if err != nil {
			if errors.Is(err, io.EOF) {
				return fmt.Errorf("%w: item without its delimiter", ErrMalformed)
			}
			return err
		}
		if err := w.emit(out, h.raw); err != nil {
			return err
		}
		if h.tag == 0xFFFEE00D {
			return nil
		}
		if err := w.element(out, m, h, depth); err != nil {
			return err
		}
	}
}

// walk copies the top-level data set, putting the stamps in tag order.
func (rw *Rewriter) walk(w *walker) error {
	stamps := rw.stamps
	for {
		h, err := w.next(w.m)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		if h.tag>>16 == 0xFFFE {
			return fmt.Errorf("%w: (%04X,%04X) at the top level", ErrMalformed, h.tag>>16, h.tag&0xFFFF)
		}
		for len(stamps) > 0 && stamps[0].Tag < h.tag {
			if err := rw.writeStamp(w.out, stamps[0]); err != nil {
				return err
			}
			stamps = stamps[1:]
		}
		out := w.out
		switch {
		case len(stamps) > 0 && stamps[0].Tag == h.tag:
			out = nil // replaced: the stamp goes in its place
		case h.tag&0xFFFF == 0 && rw.groups[uint16(h.tag>>16)]:
			out = nil // the group length of a group that changes
		}
		if err := w.emit(out, h.raw); err != nil {
			return err
		}
		if err := w.element(out, w.m, h, 0); err != nil {
			return err
		}
		if out == nil && len(stamps) > 0 && stamps[0].Tag == h.tag {
			if err := rw.writeStamp(w.out, stamps[0]); err != nil {
				return err
			}
			stamps = stamps[1:]
		}
	}
	for _, s := range stamps {
		if err := rw.writeStamp(w.out, s); err != nil {
			return err
		}
	}
	return nil
}

// writeStamp encodes a stamp in the data set's encoding.
func (rw *Rewriter) writeStamp(out io.Writer, s Stamp) error {
	var order binary.AppendByteOrder = binary.LittleEndian
	if rw.m.big {
		order = binary.BigEndian
	}
	var b []byte
	b = order.AppendUint16(b, uint16(s.Tag>>16))
	b = order.AppendUint16(b, uint16(s.Tag))
	switch {
	case !rw.m.explicit:
		b = order.AppendUint32(b, uint32(len(s.Value)))
	case longVR(s.VR):
		b = append(b, s.VR[0], s.VR[1], 0, 0)
		b = order.AppendUint32(b, uint32(len(s.Value)))
	default:
		b = append(b, s.VR[0], s.VR[1])
		b = order.AppendUint16(b, uint16(len(s.Value)))
	}
	if _, err := out.Write(b); err != nil {
		return err
	}
	_, err := out.Write(s.Value)
	return err
}
