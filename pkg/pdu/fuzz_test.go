package pdu

import (
	"bytes"
	"io"
	"reflect"
	"testing"
)

var fuzzLimits = Limits{MaxPDataLength: 1 << 16, MaxAssociateLength: 1 << 16}

func addSeeds(f *testing.F, add func([]byte)) {
	for _, g := range golden {
		add(g.wire)
	}
	// A whole association's worth of PDUs in one stream.
	var stream []byte
	for _, g := range golden {
		stream = append(stream, g.wire...)
	}
	add(stream)
	add(rqWith(appCtx, h("77 00 0003 010203"), echoPC, minUser))
	add(h("04 00 00000008 00000005 01 02 AABB"))
	add([]byte("GET / HTTP/1.1\r\n\r\n"))
}

// roundTrip checks the codec's fixed point: a decoded PDU encodes, decodes to
// an equal PDU, and encodes to the same bytes again.
func roundTrip(t *testing.T, p PDU) {
	t.Helper()
	enc, err := Encode(p)
	if err != nil {
		t.Fatalf("a decoded %v does not encode: %v", p.Type(), err)
	}
	p2, err := Decode(enc)
	if err != nil {
		t.Fatalf("re-encoded %v does not decode: %v\n%x", p.Type(), err, enc)
	}
	if !reflect.DeepEqual(p, p2) {
		t.Fatalf("round trip changed the %v:\n%#v\n%#v", p.Type(), p, p2)
	}
	enc2, err := Encode(p2)
	if err != nil || !bytes.Equal(enc, enc2) {
		t.Fatalf("second encoding differs (%v):\n%x\n%x", err, enc, enc2)
	}
}

// FuzzReadPDU feeds arbitrary bytes to a Reader: it must never panic, and
// every PDU it accepts must survive decode -> encode -> decode unchanged.
func FuzzReadPDU(f *testing.F) {
	addSeeds(f, func(b []byte) { f.Add(b) })
	f.Fuzz(func(t *testing.T, data []byte) {
		r := NewReader(bytes.NewReader(data), fuzzLimits, nil)
		for {
			p, err := r.ReadPDU()
			if err != nil {
				return
			}
			roundTrip(t, p)
		}
	})
}

// chunkReader returns the stream in pieces whose sizes come from sizes,
// cycling (a size of 0 counts as 1: a Reader may not return 0, nil forever).
type chunkReader struct {
	data  []byte
	sizes []byte
	i     int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.data) == 0 {
		return 0, io.EOF
	}
	n := len(p)
	if len(c.sizes) > 0 {
		n = min(n, max(1, int(c.sizes[c.i%len(c.sizes)])))
		c.i++
	}
	n = min(n, len(c.data))
	copy(p, c.data[:n])
	c.data = c.data[n:]
	return n, nil
}

type outcome struct {
	wire []byte
	err  string
}

func readAll(r io.Reader) []outcome {
	pr := NewReader(r, fuzzLimits, nil)
	var out []outcome
	for i := 0; i < 1000; i++ {
		p, err := pr.ReadPDU()
		if err != nil {
			return append(out, outcome{err: err.Error()})
		}
		enc, _ := Encode(p)
		out = append(out, outcome{wire: enc})
	}
	return out
}

// FuzzReadPDUSplit: however the stream is cut into reads (TCP segments),
// the Reader sees the same PDUs and the same errors.
func FuzzReadPDUSplit(f *testing.F) {
	addSeeds(f, func(b []byte) { f.Add(b, []byte{1, 7, 0, 3}) })
	f.Fuzz(func(t *testing.T, data, sizes []byte) {
		whole := readAll(bytes.NewReader(data))
		split := readAll(&chunkReader{data: data, sizes: sizes})
		if !reflect.DeepEqual(whole, split) {
			t.Fatalf("split reads changed the outcome:\nwhole %+v\nsplit %+v", whole, split)
		}
	})
}

// FuzzAssociateItems goes straight at the item and sub-item parser: the
// input is the variable part of an A-ASSOCIATE-RQ or -AC (after the 68
// fixed bytes), so that every mutation lands in the items.
func FuzzAssociateItems(f *testing.F) {
	for _, g := range golden {
		if t := g.pdu.Type(); t == TypeAssociateRQ || t == TypeAssociateAC {
			f.Add(byte(t), g.wire[HeaderLen+associateFixedLen:])
		}
	}
	f.Add(byte(TypeAssociateRQ), cat(appCtx, echoPC, minUser))
	f.Fuzz(func(t *testing.T, typ byte, items []byte) {
		if Type(typ) != TypeAssociateAC {
			typ = byte(TypeAssociateRQ)
		}
		wire := cat([]byte{typ, 0}, be32(associateFixedLen+len(items)), make([]byte, associateFixedLen), items)
		p, err := Decode(wire)
		if err != nil {
			if _, ok := AbortReasonOf(err); !ok {
				t.Fatalf("a decoding failure that is not a protocol error: %v", err)
			}
			return
		}
		roundTrip(t, p)
	})
}
