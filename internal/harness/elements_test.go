package harness

import (
	"bytes"
	"testing"
)

// TestElementsWireBytes pins the Explicit VR Little Endian encoding of
// each form (PS3.5 7.1.2) and the padding rules (PS3.5 6.2).
func TestElementsWireBytes(t *testing.T) {
	cases := []struct {
		name string
		add  func(*Elements)
		want []byte
	}{
		{"UI odd: NUL pad", func(e *Elements) { e.Str(0x0008, 0x0016, "UI", "1.2.3") },
			[]byte{0x08, 0x00, 0x16, 0x00, 'U', 'I', 6, 0, '1', '.', '2', '.', '3', 0}},
		{"PN odd: space pad", func(e *Elements) { e.Str(0x0010, 0x0010, "PN", "A^B") },
			[]byte{0x10, 0x00, 0x10, 0x00, 'P', 'N', 4, 0, 'A', '^', 'B', ' '}},
		{"even: no pad", func(e *Elements) { e.Str(0x0008, 0x0060, "CS", "OT") },
			[]byte{0x08, 0x00, 0x60, 0x00, 'C', 'S', 2, 0, 'O', 'T'}},
		{"empty type 2", func(e *Elements) { e.Str(0x0010, 0x0030, "DA", "") },
			[]byte{0x10, 0x00, 0x30, 0x00, 'D', 'A', 0, 0}},
		{"US", func(e *Elements) { e.US(0x0028, 0x0010, 0x0102) },
			[]byte{0x28, 0x00, 0x10, 0x00, 'U', 'S', 2, 0, 0x02, 0x01}},
		{"UL", func(e *Elements) { e.UL(0x0002, 0x0000, 0x01020304) },
			[]byte{0x02, 0x00, 0x00, 0x00, 'U', 'L', 4, 0, 0x04, 0x03, 0x02, 0x01}},
		{"OB: long form", func(e *Elements) { e.Add(0x0002, 0x0001, "OB", []byte{0x00, 0x01}) },
			[]byte{0x02, 0x00, 0x01, 0x00, 'O', 'B', 0, 0, 2, 0, 0, 0, 0x00, 0x01}},
		{"OW header only", func(e *Elements) { e.Header(0x7FE0, 0x0010, "OW", 0x12345678) },
			[]byte{0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0, 0x78, 0x56, 0x34, 0x12}},
		{"UT: long form", func(e *Elements) { e.Str(0x0018, 0x1030, "UT", "x") },
			[]byte{0x18, 0x00, 0x30, 0x10, 'U', 'T', 0, 0, 2, 0, 0, 0, 'x', ' '}},
	}
	for _, tc := range cases {
		var e Elements
		tc.add(&e)
		if !bytes.Equal(e, tc.want) {
			t.Errorf("%s: % X, want % X", tc.name, []byte(e), tc.want)
		}
	}
}

func TestElementsAppend(t *testing.T) {
	e := Elements{0xAA}
	e.US(0x0028, 0x0002, 1)
	e.US(0x0028, 0x0100, 16)
	if len(e) != 1+10+10 || e[0] != 0xAA || e[11] != 0x28 {
		t.Errorf("elements do not follow each other: % X", []byte(e))
	}
}

func TestElementsShortLengthOverflowPanics(t *testing.T) {
	defer func() {
		if recover() == nil {
			t.Error("a 64 KiB LO value did not panic")
		}
	}()
	var e Elements
	e.Header(0x0010, 0x0020, "LO", 0x10000)
}
