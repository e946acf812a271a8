package spool

import (
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
)

// ErrDamaged is matched (errors.Is) by every *DamagedError.
var ErrDamaged = errors.New("damaged in the spool")

// DamagedError says that an object's files in the spool do not hold what
// the spool wrote: a data file whose size or CRC-32C differs from its
// seal, a file cut short, a file meta header or a retry record that
// cannot be read. Such an object is never forwarded: it is set aside as a
// dead letter with this error as its reason. Like tsdb's corruption
// errors, it names the file and, where it is known, the offset.
type DamagedError struct {
	ID     string
	File   string // relative to the spool directory, e.g. "queue/<id>.dcm"
	Offset int64  // where the damage shows; -1 when that is not known
	Reason string
}

func (e *DamagedError) Error() string {
	if e.Offset >= 0 {
		return fmt.Sprintf("damaged in the spool: %s at offset %d: %s", e.File, e.Offset, e.Reason)
	}
	return fmt.Sprintf("damaged in the spool: %s: %s", e.File, e.Reason)
}

// Is makes errors.Is(err, ErrDamaged) true.
func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// damaged builds a DamagedError for the file path of object id.
func damaged(id, path string, off int64, format string, args ...any) *DamagedError {
	return &DamagedError{ID: id, File: filepath.Join(filepath.Base(filepath.Dir(path)), filepath.Base(path)),
		Offset: off, Reason: fmt.Sprintf(format, args...)}
}

// Open returns the object's data set, byte for byte as received, read
// from its file and checked on the way: the file must still have the size
// it was described with, and, when it is sealed, the size and CRC-32C of
// its seal. The CRC is known only at the end, so the reader hands over
// the last bytes only once they check out: a request or a copy fed from
// it never completes with damaged data. Its errors wrap ErrDamaged
// (*DamagedError) when the copy is damaged.
//
// Files committed the simple way (no extended attributes) have no seal:
// their length is all that is checked, as before.
func (d *Description) Open() (io.ReadCloser, error) {
	f, err := os.Open(d.Path)
	if err != nil {
		return nil, fmt.Errorf("spool: %w", err)
	}
	fail := func(err error) (io.ReadCloser, error) {
		f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("spool: %w", err))
	}
	if fi.Size() != d.Size {
		return fail(damaged(d.ID, d.Path, min(fi.Size(), d.Size), "the file has %d bytes, %d when it was described", fi.Size(), d.Size))
	}
	r := &checkedReader{id: d.ID, path: d.Path, f: f, sec: io.NewSectionReader(f, d.DataOffset, d.Size-d.DataOffset), left: d.Size - d.DataOffset}
	if si := d.seal; si != nil {
		if fi.Size() != si.size {
			return fail(damaged(d.ID, d.Path, min(fi.Size(), si.size), "the file has %d bytes, its seal says %d", fi.Size(), si.size))
		}
		r.sealed = true
		switch {
		case si.headLen == 0:
			// A version 1 seal: one CRC over the file meta information and
			// the data set.
			h := crc32.New(castagnoli)
			if _, err := io.Copy(h, io.NewSectionReader(f, 0, d.DataOffset)); err != nil {
				return fail(fmt.Errorf("spool: reading %s: %w", filepath.Base(d.Path), err))
			}
			r.crc, r.want = h.Sum32(), si.crc
		case si.headLen != d.DataOffset:
			return fail(damaged(d.ID, d.Path, 0, "its file meta information has %d bytes, its seal says %d", d.DataOffset, si.headLen))
		default:
			// The data set's CRC is checked as it is read; the head, which
			// is not sent, only when the object was described (a record
			// that still reads is what matters of it).
			r.want = si.dataCRC
		}
	}
	return r, nil
}

// checkedReader reads a data set and checks the file it comes from.
type checkedReader struct {
	id, path string
	f        *os.File
	sec      *io.SectionReader
	left     int64 // data set bytes not read yet
	sealed   bool
	crc      uint32 // of the file so far
	want     uint32 // the seal's
	err      error  // sticky
}

func (r *checkedReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n, err := r.sec.Read(p)
	r.left -= int64(n)
	if r.sealed {
		r.crc = crc32.Update(r.crc, castagnoli, p[:n])
	}
	if err != nil && err != io.EOF {
		r.err = fmt.Errorf("spool: reading %s: %w", filepath.Base(r.path), err)
		return n, r.err
	}
	if r.left > 0 && err == io.EOF {
		end, _ := r.sec.Seek(0, io.SeekCurrent)
		r.err = damaged(r.id, r.path, end, "the file ends %d bytes early", r.left)
		return 0, r.err
	}
	if r.left == 0 && r.sealed && r.crc != r.want {
		// The last bytes are withheld: whoever reads this never gets the
		// whole of a damaged object.
		r.err = damaged(r.id, r.path, -1, "CRC-32C %08x, its seal says %08x", r.crc, r.want)
		return 0, r.err
	}
	return n, nil
}

func (r *checkedReader) Close() error { return r.f.Close() }
