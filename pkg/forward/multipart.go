package forward

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
)

// errBoundaryInPayload means the multipart boundary occurred inside an
// object: the request is abandoned and sent again with a new boundary.
var errBoundaryInPayload = errors.New("multipart boundary found inside an object")

// newBoundary returns a random boundary (RFC 2046 5.1.1: at most 70
// characters). 160 random bits make an accidental match practically
// impossible; the body still checks every byte it sends.
func newBoundary() string {
	var b [20]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return "dicomgw-" + hex.EncodeToString(b[:])
}

// part is one object in a multipart/related body: a fresh file meta header
// followed by the data set from the spool.
type part struct {
	header []byte
	open   func() (io.ReadCloser, error) // the data set (Object.Open)
	n      int64                         // data set length
}

// partError is a part whose data set could not be read: the request is
// abandoned (it never completes), and the caller learns which object and
// why (an error wrapping ErrDamaged: quarantine it).
type partError struct {
	index int
	err   error
}

// multipartBody streams a multipart/related body (RFC 2387, PS3.18 8.6.1.2)
// from spool files, opening each file only when its turn comes, so memory
// stays flat whatever the object sizes. It knows its length in advance
// (Len), and it fails with errBoundaryInPayload if the boundary delimiter
// shows up inside a part.
type multipartBody struct {
	boundary string
	parts    []part
	pieces   []func() (io.Reader, error) // what remains to be read, in order
	cur      io.Reader
	file     io.Closer
	scan     *matcher
	length   int64
	failed   *partError // the first part that could not be read
}

const partHeaders = "Content-Type: application/dicom\r\n\r\n"

func newMultipartBody(boundary string, parts []part) *multipartBody {
	b := &multipartBody{boundary: boundary, parts: parts}
	delim := "--" + boundary
	for i, p := range parts {
		open := "\r\n" + delim + "\r\n" + partHeaders
		if i == 0 {
			open = delim + "\r\n" + partHeaders // no CRLF before the first delimiter
		}
		b.pieces = append(b.pieces, literal(open), literal(string(p.header)), b.dataSection(i, p))
		b.length += int64(len(open)+len(p.header)) + p.n
	}
	closing := "\r\n" + delim + "--\r\n"
	b.pieces = append(b.pieces, literal(closing))
	b.length += int64(len(closing))
	b.scan = newMatcher([]byte(delim))
	return b
}

func literal(s string) func() (io.Reader, error) {
	return func() (io.Reader, error) { return bytes.NewReader([]byte(s)), nil }
}

func (b *multipartBody) dataSection(i int, p part) func() (io.Reader, error) {
	return func() (io.Reader, error) {
		rc, err := p.open()
		if err != nil {
			return nil, b.fail(i, err)
		}
		b.file = rc
		b.scan.reset()
		return &scanReader{r: rc, m: b.scan, n: p.n, fail: func(err error) error { return b.fail(i, err) }}, nil
	}
}

// fail records that part i could not be read.
func (b *multipartBody) fail(i int, err error) error {
	if b.failed == nil {
		b.failed = &partError{index: i, err: err}
	}
	return &partReadError{err}
}

// partReadError is what the body's Read returns when a part could not be
// read, so that the HTTP client does not try the same bytes again.
type partReadError struct{ err error }

func (e *partReadError) Error() string { return "reading a spooled object: " + e.err.Error() }
func (e *partReadError) Unwrap() error { return e.err }

// Len is the exact body length, for Content-Length (retryablehttp reads it
// through its LenReader interface).
func (b *multipartBody) Len() int { return int(b.length) }

func (b *multipartBody) Read(p []byte) (int, error) {
	for {
		if b.cur == nil {
			if len(b.pieces) == 0 {
				return 0, io.EOF
			}
			r, err := b.pieces[0]()
			if err != nil {
				return 0, err
			}
			b.pieces = b.pieces[1:]
			b.cur = r
		}
		n, err := b.cur.Read(p)
		if err == io.EOF {
			b.closeFile()
			b.cur = nil
			if n > 0 {
				return n, nil
			}
			continue
		}
		return n, err
	}
}

func (b *multipartBody) closeFile() {
	if b.file != nil {
		b.file.Close()
		b.file = nil
	}
}

// Close releases the open file, if any.
func (b *multipartBody) Close() error {
	b.closeFile()
	b.pieces = nil
	return nil
}

// scanReader checks the bytes of a part for the boundary as they stream,
// and that the data set has exactly the bytes it should: the body's
// Content-Length was promised from them.
type scanReader struct {
	r    io.Reader
	m    *matcher
	n    int64
	read int64
	fail func(error) error
}

func (s *scanReader) Read(p []byte) (int, error) {
	if rest := s.n - s.read; int64(len(p)) > rest {
		p = p[:rest] // a longer data set is caught at the end
	}
	var n int
	var err error
	if len(p) > 0 {
		n, err = s.r.Read(p)
	} else {
		// All promised bytes are read: the data set must end here.
		var one [1]byte
		if m, rerr := s.r.Read(one[:]); m > 0 {
			return 0, s.fail(fmt.Errorf("%w: the data set is longer than the %d bytes recorded", ErrDamaged, s.n))
		} else if rerr != nil && rerr != io.EOF {
			return 0, s.fail(rerr)
		}
		return 0, io.EOF
	}
	s.read += int64(n)
	if s.m.found(p[:n]) {
		return n, errBoundaryInPayload
	}
	if err == io.EOF && s.read != s.n {
		return n, s.fail(fmt.Errorf("%w: the data set ends after %d of the %d bytes recorded", ErrDamaged, s.read, s.n))
	}
	if err != nil && err != io.EOF {
		return n, s.fail(err)
	}
	if err == io.EOF {
		err = nil // the end is confirmed by the next call
	}
	return n, err
}

// matcher finds a pattern in a stream that arrives in pieces.
type matcher struct {
	pat   []byte
	carry []byte // the last len(pat)-1 bytes seen
	win   []byte
}

func newMatcher(pat []byte) *matcher {
	return &matcher{pat: pat, carry: make([]byte, 0, len(pat)), win: make([]byte, 0, 2*len(pat))}
}

func (m *matcher) reset() { m.carry = m.carry[:0] }

func (m *matcher) found(p []byte) bool {
	if len(p) == 0 {
		return false
	}
	// Across the seam between the previous piece and this one.
	m.win = append(append(m.win[:0], m.carry...), p[:min(len(p), len(m.pat)-1)]...)
	if bytes.Contains(m.win, m.pat) || bytes.Contains(p, m.pat) {
		return true
	}
	keep := len(m.pat) - 1
	if len(p) >= keep {
		m.carry = append(m.carry[:0], p[len(p)-keep:]...)
	} else {
		m.carry = append(m.carry, p...)
		if len(m.carry) > keep {
			m.carry = m.carry[len(m.carry)-keep:]
		}
	}
	return false
}
