package part10

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"
)

// TestReadGroupRoundTrip: what AppendMeta writes, ReadGroup reads back,
// element by element, with the data set's offset.
func TestReadGroupRoundTrip(t *testing.T) {
	m := &Meta{SOPClassUID: "1.2.840.10008.5.1.4.1.1.7", SOPInstanceUID: "1.2.3", TransferSyntaxUID: "1.2.840.10008.1.2.1",
		ImplementationClassUID: "2.25.1", ImplementationVersionName: "TEST", SourceAE: "CT1", PrivateCreator: "2.25.1", Private: []byte(`{"v":1}`)}
	head := AppendMeta(nil, m)
	file := append(append([]byte{}, head...), "DATASET"...)
	g, err := ReadGroup(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if g.DataOffset != int64(len(head)) {
		t.Errorf("data offset %d, want %d", g.DataOffset, len(head))
	}
	for el, want := range map[uint16]string{0x0001: "\x00\x01", 0x0002: m.SOPClassUID + "\x00", 0x0003: "1.2.3\x00", 0x0010: m.TransferSyntaxUID + "\x00",
		0x0012: "2.25.1", 0x0013: "TEST", 0x0016: "CT1 ", 0x0102: `{"v":1} `} {
		if got := string(g.Elements[el]); got != want {
			t.Errorf("(0002,%04X) = %q, want %q", el, got, want)
		}
	}
}

// TestReadGroupRefuses: what is not a Part 10 head, or whose lengths would
// reach beyond what was read, is refused before anything is sized by it.
func TestReadGroupRefuses(t *testing.T) {
	good := AppendMeta(nil, &Meta{SOPClassUID: "1.2", SOPInstanceUID: "1.3", TransferSyntaxUID: "1.2.840.10008.1.2.1", ImplementationClassUID: "2.25.1"})
	at := PreambleLen + 4 // the group length element
	cases := map[string]func([]byte) []byte{
		"short":            func(b []byte) []byte { return b[:100] },
		"no DICM":          func(b []byte) []byte { b[PreambleLen] = 'X'; return b },
		"no group length":  func(b []byte) []byte { b[at+2] = 1; return b },
		"huge group":       func(b []byte) []byte { binary.LittleEndian.PutUint32(b[at+8:], 1<<30); return b },
		"group past EOF":   func(b []byte) []byte { return b[:len(b)-3] },
		"element overruns": func(b []byte) []byte { binary.LittleEndian.PutUint16(b[at+12+14:], 0xFFFF); return b },
		"other group":      func(b []byte) []byte { binary.LittleEndian.PutUint16(b[at+12:], 8); return b },
	}
	for name, harm := range cases {
		b := harm(bytes.Clone(good))
		if _, err := ReadGroup(bytes.NewReader(b)); !errors.Is(err, ErrNotPart10) {
			t.Errorf("%s: %v, want ErrNotPart10", name, err)
		}
	}
}

// FuzzReadGroup: whatever the bytes, ReadGroup neither panics nor reads
// an element beyond the group it was told of.
func FuzzReadGroup(f *testing.F) {
	f.Add(AppendMeta(nil, &Meta{SOPClassUID: "1.2", SOPInstanceUID: "1.3", TransferSyntaxUID: "1.2.840.10008.1.2.1", ImplementationClassUID: "2.25.1", Private: []byte("x")}))
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := ReadGroup(bytes.NewReader(b))
		if err != nil {
			return
		}
		if g.DataOffset > int64(len(b)) {
			t.Fatalf("data offset %d beyond %d bytes", g.DataOffset, len(b))
		}
	})
}
