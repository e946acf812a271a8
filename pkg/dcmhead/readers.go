package dcmhead

// The readers a Walk goes through.

import (
	"bufio"
	"fmt"
	"hash/crc32"
	"io"
)

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
