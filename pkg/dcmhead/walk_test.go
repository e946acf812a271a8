package dcmhead

import (
	"bytes"
	"compress/flate"
	"compress/zlib"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strings"
	"testing"
)

// bld builds data sets by hand, in the byte order and VR form of its mode.
type bld struct {
	m mode
	b []byte
}

func le() *bld       { return &bld{m: mode{explicit: true}} }
func be() *bld       { return &bld{m: mode{explicit: true, bigEndian: true}} }
func implicit() *bld { return &bld{m: mode{}} }

func (b *bld) u16(v uint16) {
	if b.m.bigEndian {
		b.b = binary.BigEndian.AppendUint16(b.b, v)
	} else {
		b.b = binary.LittleEndian.AppendUint16(b.b, v)
	}
}

func (b *bld) u32(v uint32) {
	if b.m.bigEndian {
		b.b = binary.BigEndian.AppendUint32(b.b, v)
	} else {
		b.b = binary.LittleEndian.AppendUint32(b.b, v)
	}
}

func (b *bld) tag(t uint32) { b.u16(uint16(t >> 16)); b.u16(uint16(t)) }

// hdr writes an element header of value length l (VR ignored in implicit VR).
func (b *bld) hdr(t uint32, vr string, l uint32) *bld {
	b.tag(t)
	if !b.m.explicit {
		b.u32(l)
		return b
	}
	b.b = append(b.b, vr...)
	switch vr {
	case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
		b.u16(0)
		b.u32(l)
	default:
		b.u16(uint16(l))
	}
	return b
}

// el writes a whole element.
func (b *bld) el(t uint32, vr string, val string) *bld {
	b.hdr(t, vr, uint32(len(val)))
	b.b = append(b.b, val...)
	return b
}

func (b *bld) undef(t uint32, vr string) *bld { return b.hdr(t, vr, undefinedLength) }
func (b *bld) item(l uint32) *bld             { b.tag(tagItem); b.u32(l); return b }
func (b *bld) itemEnd() *bld                  { b.tag(tagItemDelim); b.u32(0); return b }
func (b *bld) seqEnd() *bld                   { b.tag(tagSeqDelim); b.u32(0); return b }
func (b *bld) raw(s string) *bld              { b.b = append(b.b, s...); return b }
func (b *bld) add(o *bld) *bld                { b.b = append(b.b, o.b...); return b }
func (b *bld) bytes() []byte                  { return bytes.Clone(b.b) }
func (b *bld) str() string                    { return string(b.b) }

const (
	testClass = "1.2.840.10008.5.1.4.1.1.7"
	testInst  = "1.2.3.4.5.6.7.8.9"
	testStudy = "1.2.3.4.5"
)

// head is the start of a typical data set: SOP Class and Instance UID.
func head(b *bld) *bld {
	return b.el(tagSOPClass, "UI", testClass+"\x00").el(tagSOPInstance, "UI", testInst+"\x00")
}

// implicitItemContent is an implicit VR element whose bytes, read as
// explicit VR, give the invalid VR 0x1A00.
func implicitItemContent() *bld {
	return implicit().el(0x00081150, "", "1.2.840.10008.5.1.4.1.1.2\x00")
}

type walkCase struct {
	name string
	enc  Encoding
	data []byte
	// Expectations: errSub empty means success.
	errSub   string
	errOff   int64 // checked when errSub != "" and errOff >= 0
	elements int   // checked on success when > 0
	inst     string
}

func walkCases() []walkCase {
	var cs []walkCase
	ok := func(name string, enc Encoding, data []byte, elements int, inst string) {
		cs = append(cs, walkCase{name: name, enc: enc, data: data, elements: elements, inst: inst})
	}
	bad := func(name string, enc Encoding, data []byte, errSub string, errOff int64) {
		cs = append(cs, walkCase{name: name, enc: enc, data: data, errSub: errSub, errOff: errOff})
	}
	E, I, B := ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian
	h := head(le()).str()
	hl := int64(len(h))

	// Well-formed data sets, and what real data does that must be tolerated.
	ok("minimal", E, head(le()).bytes(), 2, testInst)
	ok("empty data set", E, nil, -1, "")
	ok("odd value lengths", E, head(le()).el(0x00100010, "PN", "ABC").el(0x7FE00010, "OB", "12345").bytes(), 4, testInst)
	ok("trailing padding", E, head(le()).el(0xFFFCFFFC, "OB", "\x00\x00\x00\x00").bytes(), 3, testInst)
	ok("group length", E, le().el(0x00080000, "UL", "\x10\x00\x00\x00").add(head(le())).bytes(), 3, testInst)
	ok("out of order", E, le().el(0x00100010, "PN", "X^Y").add(head(le())).el(0x00080005, "CS", "ISO_IR 100").bytes(), 4, testInst)
	ok("private elements", E, head(le()).el(0x00090010, "LO", "ACME").el(0x00091001, "OB", "\x01\x02").bytes(), 4, testInst)
	ok("UN on a standard attribute", E, le().el(tagSOPClass, "UN", testClass).el(tagSOPInstance, "UN", testInst+" ").bytes(), 2, testInst)
	ok("UID with space padding and leading space", E, le().el(tagSOPInstance, "UI", " "+testInst+" ").bytes(), 1, testInst)
	ok("empty undefined-length sequence", E, head(le()).undef(0x00081115, "SQ").seqEnd().bytes(), 3, testInst)
	ok("empty defined-length sequence", E, head(le()).hdr(0x00081115, "SQ", 0).bytes(), 3, testInst)
	ok("zero-length items", E, head(le()).undef(0x00081115, "SQ").item(0).item(undefinedLength).itemEnd().seqEnd().bytes(), 3, testInst)
	ok("nested undefined lengths", E, head(le()).undef(0x0040A730, "SQ").item(undefinedLength).
		el(0x0040A010, "CS", "CONTAINS").undef(0x0040A730, "SQ").item(undefinedLength).el(0x0040A040, "CS", "TEXT").itemEnd().seqEnd().
		itemEnd().seqEnd().bytes(), 3, testInst)
	ok("defined-length sequence is not descended into", E, head(le()).hdr(0x00081115, "SQ", 8).raw("garbage!").bytes(), 3, testInst)
	ok("defined-length item is not descended into", E, head(le()).undef(0x00081115, "SQ").item(6).raw("\xFF\xFF\xFF\xFF\xFF\xFF").seqEnd().bytes(), 3, testInst)
	ok("nested UIDs do not count", E, le().el(tagSOPClass, "UI", testClass).undef(0x00081115, "SQ").item(undefinedLength).
		el(tagSOPInstance, "UI", "9.9.9").itemEnd().seqEnd().bytes(), 2, "")
	ok("non-zero delimiter lengths are tolerated", E, head(le()).undef(0x00081115, "SQ").item(undefinedLength).
		raw("\xFE\xFF\x0D\xE0\x04\x00\x00\x00").raw("\xFE\xFF\xDD\xE0\x04\x00\x00\x00").bytes(), 3, testInst)
	ok("encapsulated pixel data", E, head(le()).el(0x00280010, "US", "\x02\x00").undef(tagPixelData, "OB").
		item(0).item(4).raw("\xFF\xD8\xFF\xD9").item(3).raw("abc").seqEnd().el(0xFFFCFFFC, "OB", "").bytes(), 5, testInst)
	ok("encapsulated float pixel data", E, head(le()).undef(tagFloatPixel, "OF").item(0).item(4).raw("1234").seqEnd().bytes(), 3, testInst)
	ok("encapsulated pixel data as UN", E, head(le()).undef(tagPixelData, "UN").item(0).item(2).raw("12").seqEnd().bytes(), 3, testInst)
	ok("icon sequence with nested encapsulated pixel data", E, head(le()).undef(0x00880200, "SQ").item(undefinedLength).
		undef(tagPixelData, "OB").item(0).item(2).raw("ab").seqEnd().itemEnd().seqEnd().bytes(), 3, testInst)

	// CP-246: UN of undefined length holds implicit VR LE items.
	unSeq := func(outer *bld) *bld {
		outer.undef(0x00091010, "UN")
		in := implicit().item(undefinedLength).add(implicitItemContent()).
			undef(0x00081199, "").item(undefinedLength).add(implicitItemContent()).itemEnd().seqEnd().
			itemEnd().seqEnd()
		return outer.add(in)
	}
	ok("UN undefined length with implicit contents", E, unSeq(head(le()).el(0x00090010, "LO", "ACME")).el(tagStudy, "UI", testStudy).bytes(), 5, testInst)
	ok("UN undefined length in big endian stays implicit little endian", B, unSeq(head(be())).bytes(), 3, testInst)
	// The same items parsed as explicit VR would fail: proof the rule matters.
	bad("SQ with implicit contents is not CP-246", E, head(le()).undef(0x00091010, "SQ").
		add(implicit().item(undefinedLength).add(implicitItemContent()).itemEnd().seqEnd()).bytes(), "invalid VR 0x1A00", hl+12+8)

	// Implicit VR.
	ok("implicit", I, head(implicit()).el(0x00100010, "", "A^B ").bytes(), 3, testInst)
	ok("implicit undefined-length private sequence", I, head(implicit()).undef(0x00091001, "").item(undefinedLength).
		el(0x00091002, "", "ab").itemEnd().item(4).raw("\x00\x00\x00\x00").seqEnd().bytes(), 3, testInst)
	ok("implicit encapsulated pixel data", I, head(implicit()).undef(tagPixelData, "").item(0).item(2).raw("ab").seqEnd().bytes(), 3, testInst)

	// Big endian: tags, lengths and item tags are byte-swapped.
	bigDS := head(be()).el(0x00280010, "US", "\x00\x02").undef(0x00081115, "SQ").item(undefinedLength).
		el(0x00081150, "UI", testClass).itemEnd().item(2).raw("xx").seqEnd().el(0x7FE00010, "OW", "\x00\x01\x00\x02").bytes()
	ok("big endian", B, bigDS, 5, testInst)
	bad("big endian data walked as little endian", E, bigDS, "overruns", 0)

	// Structural faults.
	overrun := head(le()).el(0x00100010, "PN", "X").hdr(0x7FE00010, "OW", 4620).raw("1234").bytes()
	bad("value overruns", E, overrun, "element (7FE0,0010) at offset 69: value length 4620 overruns data set end (85 bytes)", 69)
	bad("UID value overruns", E, le().hdr(tagSOPInstance, "UI", 20).raw("1.2.3").bytes(), "element (0008,0018) at offset 0: value length 20 overruns data set end (13 bytes)", 0)
	bad("partial header", E, head(le()).raw("\x10\x00\x10").bytes(), "partial element header at offset 60: 3 bytes remain", hl)
	bad("partial long header", E, head(le()).raw("\xE0\x7F\x10\x00OB\x00\x00\x10\x00").bytes(), "a header needs 12", hl)
	bad("partial item header", E, head(le()).undef(0x00081115, "SQ").raw("\xFE\xFF\x00\xE0\xFF").bytes(), "partial element header", hl+12)
	bad("unclosed sequence", E, head(le()).undef(0x00081115, "SQ").item(4).raw("abcd").bytes(),
		"undefined-length sequence (0008,1115) at offset 60 not closed by a sequence delimiter (FFFE,E0DD) before data set end (84 bytes)", hl)
	bad("unclosed item", E, head(le()).undef(0x00081115, "SQ").item(undefinedLength).el(0x00081150, "UI", "1.2").bytes(),
		"undefined-length item at offset 72 not closed by an item delimiter", hl+12)
	bad("unclosed encapsulated pixel data", E, head(le()).undef(tagPixelData, "OB").item(0).item(2).raw("ab").bytes(),
		"encapsulated pixel data (7FE0,0010) at offset 60 not closed", hl)
	bad("item overruns", E, head(le()).undef(0x00081115, "SQ").item(100).raw("abcd").seqEnd().bytes(), "item (FFFE,E000) at offset 72: value length 100 overruns", hl+12)
	bad("fragment overruns", E, head(le()).undef(tagPixelData, "OB").item(0).item(100).raw("ab").bytes(), "fragment item (FFFE,E000) at offset 80: value length 100 overruns", hl+20)
	bad("item delimiter at top level", E, head(le()).itemEnd().bytes(), "item delimiter (FFFE,E00D) at offset 60 outside an item", hl)
	bad("item delimiter in sequence outside an item", E, head(le()).undef(0x00081115, "SQ").itemEnd().seqEnd().bytes(),
		"item delimiter (FFFE,E00D) at offset 72 outside an item", hl+12)
	bad("sequence delimiter at top level", E, head(le()).seqEnd().bytes(), "sequence delimiter (FFFE,E0DD) at offset 60 outside a sequence", hl)
	bad("sequence delimiter closing an open item", E, head(le()).undef(0x00081115, "SQ").item(undefinedLength).seqEnd().bytes(),
		"sequence delimiter (FFFE,E0DD) at offset 80 inside the item at offset 72", hl+20)
	bad("item at top level", E, head(le()).item(0).bytes(), "item (FFFE,E000) at offset 60 outside a sequence", hl)
	bad("element instead of item in sequence", E, head(le()).undef(0x00081115, "SQ").el(0x00081150, "UI", "1.2").bytes(),
		"tag (0008,1150) at offset 72 where an item or sequence delimiter was expected", hl+12)
	bad("element instead of fragment", E, head(le()).undef(tagPixelData, "OB").item(0).el(0x00081150, "UI", "1.2").bytes(),
		"tag (0008,1150) at offset 80 where a fragment item or sequence delimiter was expected", hl+20)
	bad("undefined-length fragment", E, head(le()).undef(tagPixelData, "OB").item(undefinedLength).seqEnd().bytes(),
		"fragment item at offset 72 in encapsulated pixel data (7FE0,0010) has undefined length", hl+12)
	bad("invalid FFFE tag", E, head(le()).raw("\xFE\xFF\x00\x00\x00\x00\x00\x00").bytes(), "invalid tag (FFFE,0000)", hl)
	bad("undefined length on OB", E, head(le()).undef(0x00091001, "OB").seqEnd().bytes(), "undefined length is not allowed for VR \"OB\"", hl)
	bad("undefined length on UT", E, head(le()).undef(0x00204000, "UT").seqEnd().bytes(), "undefined length is not allowed for VR \"UT\"", hl)
	bad("undefined length on a UID", I, implicit().undef(tagSOPInstance, "").seqEnd().bytes(), "undefined length on a UID element", 0)
	bad("lowercase VR", E, head(le()).raw("\x10\x00\x10\x00pn\x02\x00AB").bytes(), "invalid VR \"pn\"", hl)
	bad("binary VR", E, head(le()).raw("\x10\x00\x10\x00\x00\x00\x02\x00AB").bytes(), "invalid VR 0x0000", hl)
	bad("unknown VR", E, head(le()).raw("\x10\x00\x10\x00XX\x02\x00AB").bytes(), "invalid VR \"XX\"", hl)
	bad("UID too long", E, le().hdr(tagSOPInstance, "UN", 2000).raw(strings.Repeat("1", 2000)).bytes(), "value length 2000 exceeds the 1024-byte limit", 0)
	bad("UID length near 4 GiB", E, le().hdr(tagSOPInstance, "UN", 0xFFFFFFF0).raw("1.2").bytes(), "value length 4294967280 exceeds", 0)
	bad("duplicate SOP Instance UID", E, head(le()).el(tagSOPInstance, "UI", "6.6.6\x00").bytes(), "duplicate of the element at offset 34", hl)
	bad("group 0000", I, head(implicit()).raw(strings.Repeat("\x00", 8)).bytes(), "group 0000 is not allowed", hl)
	bad("group FFFF", E, head(le()).raw("\xFF\xFF\xFF\xFFOB\x00\x00\x00\x00\x00\x00").bytes(), "group FFFF is not allowed", hl)

	// Trailing garbage after the last complete element.
	bad("trailing NUL bytes", E, head(le()).raw("\x00\x00\x00").bytes(), "partial element header", hl)
	bad("trailing garbage", E, head(le()).raw("\r\ngarbage\r\n").bytes(), "invalid VR", hl)
	bad("trailing zero padding in explicit VR", E, head(le()).raw(strings.Repeat("\x00", 16)).bytes(), "element (0000,0000) at offset 60: invalid VR 0x0000", hl)

	// Nesting bound.
	nest := func(n int) []byte {
		b := head(le())
		for range n {
			b.undef(0x0040A730, "SQ").item(undefinedLength)
		}
		for range n {
			b.itemEnd().seqEnd()
		}
		return b.bytes()
	}
	ok("nesting at the bound", E, nest(MaxDepth), 3, testInst)
	bad("nesting beyond the bound", E, nest(MaxDepth+1), "nesting deeper than 64 levels", hl+20*MaxDepth)
	encapDeep := head(le())
	for range MaxDepth {
		encapDeep.undef(0x0040A730, "SQ").item(undefinedLength)
	}
	encapDeep.undef(tagPixelData, "OB").item(0).seqEnd()
	for range MaxDepth {
		encapDeep.itemEnd().seqEnd()
	}
	bad("encapsulated pixel data beyond the bound", E, encapDeep.bytes(), "encapsulated pixel data (7FE0,0010) at offset 1340: nesting deeper", hl+20*MaxDepth)
	return cs
}

func checkCase(t *testing.T, tc walkCase, sum Summary, err error) {
	t.Helper()
	if tc.errSub == "" {
		if err != nil {
			t.Fatalf("Walk: %v", err)
		}
		if sum.Size != int64(len(tc.data)) {
			t.Errorf("Size = %d, want %d", sum.Size, len(tc.data))
		}
		if tc.elements > 0 && sum.Elements != tc.elements {
			t.Errorf("Elements = %d, want %d", sum.Elements, tc.elements)
		}
		if sum.SOPInstanceUID != tc.inst {
			t.Errorf("SOPInstanceUID = %q, want %q", sum.SOPInstanceUID, tc.inst)
		}
		return
	}
	var fe *FormatError
	if !errors.As(err, &fe) {
		t.Fatalf("want a *FormatError containing %q, got %v", tc.errSub, err)
	}
	if !strings.Contains(err.Error(), tc.errSub) {
		t.Errorf("error %q does not contain %q", err, tc.errSub)
	}
	if !strings.HasPrefix(err.Error(), "dcmhead: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}
	if tc.errOff >= 0 && fe.Offset != tc.errOff {
		t.Errorf("Offset = %d, want %d (%v)", fe.Offset, tc.errOff, err)
	}
}

func TestWalkCases(t *testing.T) {
	for _, tc := range walkCases() {
		t.Run(tc.name, func(t *testing.T) {
			// Place the data set inside a larger buffer so that off matters,
			// and fail any read outside it.
			const off = 333
			buf := append(append(bytes.Repeat([]byte{0xAA}, off), tc.data...), bytes.Repeat([]byte{0xBB}, 50)...)
			cr := &countingReaderAt{r: bytes.NewReader(buf), lo: off, hi: off + int64(len(tc.data))}
			sum, err := Walk(cr, off, int64(len(tc.data)), tc.enc)
			if cr.bad != nil {
				t.Error(cr.bad)
			}
			checkCase(t, tc, sum, err)
		})
	}
}

// TestWalkCasesDeflated runs every explicit VR LE case again through the
// deflated encoding: the verdict must not change, and only the offset kind
// in the messages does.
func TestWalkCasesDeflated(t *testing.T) {
	for _, tc := range walkCases() {
		if tc.enc != ExplicitVRLittleEndian {
			continue
		}
		t.Run(tc.name, func(t *testing.T) {
			z := deflateBytes(t, tc.data)
			sum, err := Walk(bytes.NewReader(z), 0, int64(len(z)), DeflatedExplicitVRLittleEndian)
			tc.errSub = strings.ReplaceAll(tc.errSub, "at offset", "at inflated offset")
			tc.errSub = strings.ReplaceAll(tc.errSub, "before data set end", "before inflated data set end")
			tc.errSub = strings.ReplaceAll(tc.errSub, "overruns data set end", "overruns inflated data set end")
			tc.errSub = strings.ReplaceAll(tc.errSub, "the element at offset", "the element at inflated offset")
			tc.errSub = strings.ReplaceAll(tc.errSub, "the item at offset", "the item at inflated offset")
			tc.errSub = strings.ReplaceAll(tc.errSub, "header at offset", "header at inflated offset")
			tc.data = z
			checkCase(t, tc, sum, err)
		})
	}
}

func deflateBytes(t testing.TB, b []byte) []byte {
	t.Helper()
	var z bytes.Buffer
	fw, err := flate.NewWriter(&z, flate.DefaultCompression)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	return z.Bytes()
}

func TestDeflated(t *testing.T) {
	ds := head(le()).el(tagStudy, "UI", testStudy).el(tagSeries, "UI", "1.2.3.4.5.6\x00").
		undef(0x0040A730, "SQ").item(undefinedLength).el(0x0040A040, "CS", "TEXT").itemEnd().seqEnd().
		hdr(tagPixelData, "OW", 1<<20).raw(strings.Repeat("\x00\x01", 1<<19)).bytes()
	z := deflateBytes(t, ds)
	gz := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(ds)), uint32(len(ds)))
	var zl bytes.Buffer
	zw := zlib.NewWriter(&zl)
	zw.Write(ds)
	zw.Close()
	cases := []struct {
		name   string
		data   []byte
		errSub string
	}{
		{"plain", z, ""},
		{"NUL pad", append(bytes.Clone(z), 0), ""},
		{"gzip trailer", append(bytes.Clone(z), gz...), ""},
		{"gzip trailer and NUL pad", append(append(bytes.Clone(z), gz...), 0), ""},
		{"non-NUL pad", append(bytes.Clone(z), 1), "1 trailing bytes"},
		{"two NUL pads", append(bytes.Clone(z), 0, 0), "2 trailing bytes"},
		{"gzip trailer with a wrong CRC", append(bytes.Clone(z), append([]byte{gz[0] ^ 1}, gz[1:]...)...), "8 trailing bytes"},
		{"gzip trailer with a wrong size", append(append(bytes.Clone(z), gz[:4]...), 1, 2, 3, 4), "8 trailing bytes"},
		{"many trailing bytes", append(bytes.Clone(z), make([]byte, 100)...), "100 trailing bytes"},
		{"truncated stream", z[:len(z)/2], "deflate stream truncated"},
		{"empty stream", nil, "deflate stream truncated"},
		{"zlib wrapper", zl.Bytes(), "deflate stream corrupt"},
		{"corrupt stream", append([]byte{0xFF, 0xFF}, z...), "deflate stream corrupt"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var ms0, ms1 runtime.MemStats
			runtime.ReadMemStats(&ms0)
			sum, err := Walk(bytes.NewReader(tc.data), 0, int64(len(tc.data)), DeflatedExplicitVRLittleEndian)
			runtime.ReadMemStats(&ms1)
			if a := ms1.TotalAlloc - ms0.TotalAlloc; a > 512<<10 {
				t.Errorf("Walk allocated %d bytes inflating a 1 MiB value", a)
			}
			if tc.errSub == "" {
				if err != nil {
					t.Fatal(err)
				}
				want := Summary{SOPClassUID: testClass, SOPInstanceUID: testInst, StudyInstanceUID: testStudy,
					SeriesInstanceUID: "1.2.3.4.5.6", Elements: 6, Size: int64(len(tc.data))}
				if !sameSummary(sum, want) {
					t.Errorf("got %+v, want %+v", sum, want)
				}
				return
			}
			var fe *FormatError
			if !errors.As(err, &fe) || !strings.Contains(err.Error(), tc.errSub) {
				t.Errorf("got %v, want a *FormatError containing %q", err, tc.errSub)
			}
		})
	}
}

// TestDeflatedCorpusTrailer pins down the corpus file that carries a gzip
// trailer after its raw deflate stream, and that the trailer is checked.
func TestDeflatedCorpusTrailer(t *testing.T) {
	c := corpusByName(t, "sc-deflated-explicit-le.dcm")
	ds := c.dataSet()
	fr := flate.NewReader(bytes.NewReader(ds))
	inflated, err := io.ReadAll(fr)
	if err != nil {
		t.Fatal(err)
	}
	trailer := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, crc32.ChecksumIEEE(inflated)), uint32(len(inflated)))
	if !bytes.HasSuffix(ds, trailer) {
		t.Fatalf("expected the data set to end with a gzip trailer")
	}
	for i := range 8 {
		bad := bytes.Clone(ds)
		bad[len(bad)-1-i] ^= 0x10
		_, err := Walk(bytes.NewReader(bad), 0, int64(len(bad)), DeflatedExplicitVRLittleEndian)
		var fe *FormatError
		if !errors.As(err, &fe) || !strings.Contains(err.Error(), "8 trailing bytes") {
			t.Errorf("trailer byte %d flipped: got %v", 7-i, err)
		}
	}
	// Walked as explicit VR LE instead, the deflated data set is rejected.
	inflatedSum, err := Walk(bytes.NewReader(inflated), 0, int64(len(inflated)), ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	sum, err := Walk(bytes.NewReader(ds), 0, int64(len(ds)), DeflatedExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	inflatedSum.Size = sum.Size
	if !sameSummary(sum, inflatedSum) {
		t.Errorf("deflated %+v, inflated %+v", sum, inflatedSum)
	}
	if _, err := Walk(bytes.NewReader(ds), 0, int64(len(ds)), ExplicitVRLittleEndian); err == nil {
		t.Errorf("deflated bytes walked as explicit VR LE")
	}
}

// TestSparseGiB walks a data set whose Pixel Data value is 1 GiB of a sparse
// file: the value must be skipped, not read.
func TestSparseGiB(t *testing.T) {
	const big = 1 << 30
	dir := t.TempDir()
	hdr := head(le()).el(0x00280010, "US", "\x00\x04").hdr(tagPixelData, "OW", big).bytes()
	tail := le().el(0xFFFCFFFC, "OB", "\x00\x00\x00\x00").bytes()
	const off = 132 + 200 // as if after a Part 10 header
	size := int64(len(hdr)) + big + int64(len(tail))
	mk := func(name string, fileSize int64, withTail bool) *os.File {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, append(make([]byte, off), hdr...), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(p, fileSize); err != nil {
			t.Fatal(err)
		}
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		if withTail {
			if _, err := f.WriteAt(tail, off+size-int64(len(tail))); err != nil {
				t.Fatal(err)
			}
		}
		return f
	}

	f := mk("ok.dcm", off+size, true)
	cr := &countingReaderAt{r: f, lo: off, hi: off + size}
	sum, err := Walk(cr, off, size, ExplicitVRLittleEndian)
	if err != nil {
		t.Fatal(err)
	}
	if sum.Elements != 5 || sum.Size != size || sum.SOPInstanceUID != testInst {
		t.Errorf("got %+v", sum)
	}
	if cr.calls > 2 || cr.bytes > 2*windowSize {
		t.Errorf("%d ReadAt calls reading %d bytes to walk a 1 GiB element", cr.calls, cr.bytes)
	}
	if cr.bad != nil {
		t.Error(cr.bad)
	}
	t.Logf("1 GiB data set: %d ReadAt calls, %d bytes read", cr.calls, cr.bytes)

	// The same object cut short by 1 byte: overrun found without reading.
	f2 := mk("short.dcm", off+size-int64(len(tail))-1, false)
	cr = &countingReaderAt{r: f2, lo: off, hi: off + size - int64(len(tail)) - 1}
	_, err = Walk(cr, off, size-int64(len(tail))-1, ExplicitVRLittleEndian)
	var fe *FormatError
	if !errors.As(err, &fe) || fe.Offset != int64(len(hdr))-12 || !strings.Contains(err.Error(), "value length 1073741824 overruns data set end") {
		t.Errorf("got %v", err)
	}
	if cr.calls > 1 {
		t.Errorf("%d ReadAt calls", cr.calls)
	}

	// 1 GiB of encapsulated pixel data in one fragment.
	encHdr := head(le()).undef(tagPixelData, "OB").item(0).item(big).bytes()
	esize := int64(len(encHdr)) + big + 8
	p := filepath.Join(dir, "encap.dcm")
	if err := os.WriteFile(p, encHdr, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, esize); err != nil {
		t.Fatal(err)
	}
	f3, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f3.Close()
	if _, err := f3.WriteAt(le().seqEnd().bytes(), esize-8); err != nil {
		t.Fatal(err)
	}
	cr = &countingReaderAt{r: f3}
	if _, err := Walk(cr, 0, esize, ExplicitVRLittleEndian); err != nil {
		t.Fatal(err)
	}
	if cr.calls > 2 {
		t.Errorf("%d ReadAt calls for a 1 GiB fragment", cr.calls)
	}
}

// TestAllocationsBounded checks that declared lengths do not drive allocation.
func TestAllocationsBounded(t *testing.T) {
	inputs := map[string][]byte{
		"huge pixel data":     head(le()).hdr(tagPixelData, "OW", 0xFFFFFFF0).bytes(),
		"huge UID":            le().hdr(tagSOPInstance, "UN", 0xFFFFFFF0).bytes(),
		"huge item":           head(le()).undef(0x00081115, "SQ").item(0xFFFFFFF0).bytes(),
		"huge private":        head(implicit()).hdr(0x00091001, "", 0xFFFFFFF0).bytes(),
		"many small elements": bytes.Repeat(le().el(0x00100010, "PN", "AB").bytes(), 10000),
	}
	for name, data := range inputs {
		enc := ExplicitVRLittleEndian
		if name == "huge private" {
			enc = ImplicitVRLittleEndian
		}
		r := bytes.NewReader(data)
		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		allocs := testing.AllocsPerRun(10, func() { Walk(r, 0, int64(len(data)), enc) })
		runtime.ReadMemStats(&ms1)
		perRun := (ms1.TotalAlloc - ms0.TotalAlloc) / 11
		if allocs > 32 || perRun > windowSize+4<<10 {
			t.Errorf("%s: %v allocations, %d bytes per Walk", name, allocs, perRun)
		}
	}
}

// errReaderAt fails every read.
type errReaderAt struct{ err error }

func (e errReaderAt) ReadAt([]byte, int64) (int, error) { return 0, e.err }

func TestReaderErrors(t *testing.T) {
	sentinel := errors.New("disk on fire")
	data := head(le()).bytes()
	for _, enc := range []Encoding{ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian} {
		_, err := Walk(errReaderAt{sentinel}, 0, 100, enc)
		var fe *FormatError
		if !errors.Is(err, sentinel) || errors.As(err, &fe) {
			t.Errorf("%v: got %v, want the reader's error, not a FormatError", enc, err)
		}
	}
	// A reader shorter than the declared size is not a format error either.
	var fe *FormatError
	z := deflateBytes(t, data)
	for enc, d := range map[Encoding][]byte{ExplicitVRLittleEndian: data, DeflatedExplicitVRLittleEndian: z, ImplicitVRLittleEndian: head(implicit()).bytes()} {
		for _, cut := range []int{0, 1, len(d) / 2} {
			_, err := Walk(bytes.NewReader(d[:len(d)-cut]), 0, int64(len(d))+10, enc)
			if !errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &fe) {
				t.Errorf("%v, reader %d bytes short: got %v", enc, cut+10, err)
			}
		}
	}
	for _, bad := range []struct {
		r         io.ReaderAt
		off, size int64
		enc       Encoding
	}{
		{nil, 0, 0, ExplicitVRLittleEndian},
		{bytes.NewReader(data), -1, 10, ExplicitVRLittleEndian},
		{bytes.NewReader(data), 0, -1, ExplicitVRLittleEndian},
		{bytes.NewReader(data), 0, 10, 0},
		{bytes.NewReader(data), 0, 10, 5},
	} {
		if _, err := Walk(bad.r, bad.off, bad.size, bad.enc); err == nil || errors.As(err, &fe) {
			t.Errorf("Walk(%v, %d, %d, %v): got %v", bad.r, bad.off, bad.size, bad.enc, err)
		}
	}
}

func TestEncodingString(t *testing.T) {
	for e, want := range map[Encoding]string{
		ImplicitVRLittleEndian:         "Implicit VR Little Endian",
		ExplicitVRLittleEndian:         "Explicit VR Little Endian",
		ExplicitVRBigEndian:            "Explicit VR Big Endian",
		DeflatedExplicitVRLittleEndian: "Deflated Explicit VR Little Endian",
		9:                              "Encoding(9)",
	} {
		if got := e.String(); got != want {
			t.Errorf("%d: %q, want %q", uint8(e), got, want)
		}
	}
}

// TestWindowIndependence walks every corpus file and hand-built case with
// several window sizes: results, errors included, must not depend on where
// the window boundaries fall.
func TestWindowIndependence(t *testing.T) {
	type input struct {
		name string
		r    io.ReaderAt
		off  int64
		size int64
		enc  Encoding
	}
	var ins []input
	for _, c := range loadCorpus(t) {
		ins = append(ins, input{c.File, bytes.NewReader(c.data), c.meta.dataSetOffset, int64(len(c.dataSet())), c.enc})
	}
	for _, tc := range walkCases() {
		ins = append(ins, input{tc.name, bytes.NewReader(tc.data), 0, int64(len(tc.data)), tc.enc})
	}
	for _, in := range ins {
		ref, refErr := walk(in.r, in.off, in.size, in.enc, windowSize, nil)
		for _, w := range []int{MaxUIDLength, MaxUIDLength + 3, 4093, 1 << 16} {
			got, err := walk(in.r, in.off, in.size, in.enc, w, nil)
			if !sameSummary(got, ref) || errText(err) != errText(refErr) {
				t.Errorf("%s, window %d: %+v, %v; window %d: %+v, %v", in.name, w, got, err, windowSize, ref, refErr)
			}
		}
	}
}

// sameSummary compares two summaries, Values included (a nil map differs
// from an empty one: Values is nil when nothing was collected).
func sameSummary(a, b Summary) bool { return reflect.DeepEqual(a, b) }

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
