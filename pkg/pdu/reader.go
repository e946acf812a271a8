package pdu

import (
	"encoding/binary"
	"io"
	"sync"
)

// Default bounds.
const (
	// DefaultMaxAssociateLength caps an A-ASSOCIATE-RQ/AC body. Real ones
	// are a few KiB (128 presentation contexts of long UIDs stay under
	// 40 KiB); 1 MiB leaves room for large user identity tokens.
	DefaultMaxAssociateLength = 1 << 20
	// DefaultMaxPDataLength is used when Limits.MaxPDataLength is zero.
	DefaultMaxPDataLength = 256 << 10
)

// Limits bound what a Reader accepts from the peer.
type Limits struct {
	// MaxPDataLength is the maximum length we advertised in our maximum
	// length sub-item (PS3.8 D.1): it limits the PDV list, that is the PDU
	// length field, of each P-DATA-TF we receive. A longer P-DATA-TF is a
	// protocol error. Zero means DefaultMaxPDataLength.
	MaxPDataLength uint32
	// MaxAssociateLength caps A-ASSOCIATE-RQ/AC bodies. Zero means
	// DefaultMaxAssociateLength.
	MaxAssociateLength uint32
}

// Pool lends P-DATA buffers of one size to many Readers, so that only
// associations that are moving data hold one.
type Pool struct {
	size int
	p    sync.Pool
}

// NewPool returns a pool of buffers of size bytes; size should equal the
// MaxPDataLength of the Readers that share it.
func NewPool(size uint32) *Pool {
	p := &Pool{size: int(size)}
	p.p.New = func() any { b := make([]byte, p.size); return &b }
	return p
}

func (p *Pool) get(n int) *[]byte {
	if n > p.size {
		b := make([]byte, n)
		return &b
	}
	return p.p.Get().(*[]byte)
}

func (p *Pool) put(b *[]byte) {
	if len(*b) == p.size {
		p.p.Put(b)
	}
}

// Reader reads PDUs from a stream, checking every length against Limits
// before it sizes anything: the header is read into a fixed array, a
// P-DATA-TF into a buffer of at most MaxPDataLength taken from the Pool, and
// an A-ASSOCIATE body grows only as its bytes actually arrive.
//
// The *PDataTF returned by ReadPDU, and the data its PDVs point to, belong to
// the Reader and are valid until the next call to ReadPDU or Release.
type Reader struct {
	r        io.Reader
	lim      Limits
	pool     *Pool
	hdr      [HeaderLen]byte
	buf      *[]byte // P-DATA buffer on loan
	pd       PDataTF
	lastType Type
}

// NewReader returns a Reader of PDUs from r. Readers of one server should
// share a pool whose size is lim.MaxPDataLength; with a nil pool the Reader
// makes its own.
func NewReader(r io.Reader, lim Limits, pool *Pool) *Reader {
	if lim.MaxPDataLength == 0 {
		lim.MaxPDataLength = DefaultMaxPDataLength
	}
	if lim.MaxAssociateLength == 0 {
		lim.MaxAssociateLength = DefaultMaxAssociateLength
	}
	if pool == nil {
		pool = NewPool(lim.MaxPDataLength)
	}
	return &Reader{r: r, lim: lim, pool: pool}
}

// Release returns the P-DATA buffer on loan, if any, to the pool. ReadPDU
// does this itself; call Release when done with the Reader.
func (r *Reader) Release() {
	if r.buf != nil {
		r.pool.put(r.buf)
		r.buf = nil
	}
	r.pd.PDVs = r.pd.PDVs[:0]
}

// ReadPDU reads the next PDU. Errors are either a *Error (the peer sent
// something it must not: abort the association) or an I/O error from the
// underlying reader (io.EOF only when the stream ends cleanly between PDUs).
func (r *Reader) ReadPDU() (PDU, error) {
	r.Release()
	if _, err := io.ReadFull(r.r, r.hdr[:]); err != nil {
		return nil, err
	}
	t := Type(r.hdr[0])
	n := binary.BigEndian.Uint32(r.hdr[2:])
	r.lastType = t
	var body []byte
	switch t {
	case TypeAssociateRQ, TypeAssociateAC:
		if n > r.lim.MaxAssociateLength {
			return nil, errorf(t, AbortInvalidPDUParameterValue, 2, "PDU length %d exceeds the limit of %d", n, r.lim.MaxAssociateLength)
		}
		if n < associateFixedLen {
			return nil, errorf(t, AbortInvalidPDUParameterValue, 2, "PDU length %d is shorter than the %d fixed bytes", n, associateFixedLen)
		}
		var err error
		if body, err = readGrowing(r.r, int(n)); err != nil {
			return nil, err
		}
	case TypePDataTF:
		if n > r.lim.MaxPDataLength {
			return nil, errorf(t, AbortInvalidPDUParameterValue, 2, "PDU length %d exceeds the maximum length %d we advertised", n, r.lim.MaxPDataLength)
		}
		r.buf = r.pool.get(int(n))
		body = (*r.buf)[:n]
		if _, err := io.ReadFull(r.r, body); err != nil {
			return nil, unexpectedEOF(err)
		}
	case TypeAssociateRJ, TypeReleaseRQ, TypeReleaseRP, TypeAbort:
		if n != 4 {
			return nil, errorf(t, AbortInvalidPDUParameterValue, 2, "PDU length %d, must be 4", n)
		}
		var fixed [4]byte
		if _, err := io.ReadFull(r.r, fixed[:]); err != nil {
			return nil, unexpectedEOF(err)
		}
		body = fixed[:]
	default:
		// Nothing of an unknown PDU is read: the association is aborted.
		return nil, errorf(t, AbortUnrecognizedPDU, 0, "unrecognized PDU type 0x%02X (length %d)", uint8(t), n)
	}
	return decodeBody(t, body, &r.pd)
}

// LastType is the type byte of the last PDU header read, valid even when
// ReadPDU failed after the header.
func (r *Reader) LastType() Type { return r.lastType }

// readGrowing reads exactly n bytes, growing its buffer only as data arrives
// so that a peer that declares a large length and sends little costs little.
func readGrowing(r io.Reader, n int) ([]byte, error) {
	b := make([]byte, 0, min(n, 4096))
	for len(b) < n {
		if len(b) == cap(b) {
			b = append(b, make([]byte, min(cap(b), n-len(b)))...)[:len(b)]
		}
		m, err := r.Read(b[len(b):min(cap(b), n)])
		b = b[:len(b)+m]
		if err != nil {
			if len(b) == n {
				break
			}
			return nil, unexpectedEOF(err)
		}
	}
	return b, nil
}

// unexpectedEOF: once a header is read, the end of the stream is a truncated
// PDU.
func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}
