package dcmhead

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Tags used by the collection tests, with their dictionary VR.
const (
	tagModality          = 0x00080060 // CS
	tagImageType         = 0x00080008 // CS, 2-n
	tagInstitution       = 0x00080080 // LO
	tagStudyDescription  = 0x00081030 // LO
	tagPatientName       = 0x00100010 // PN
	tagRows              = 0x00280010 // US
	tagSmallestPixel     = 0x00280106 // US or SS
	tagPixelSpacing      = 0x00280030 // DS
	tagReferencedFrames  = 0x00081160 // IS
	tagSimpleFrameList   = 0x00081161 // UL
	tagRescaleIntercept  = 0x00281052 // DS
	tagExposureIndex     = 0x00181411 // DS
	tagDeviationIndex    = 0x00181413 // DS
	tagPrivate           = 0x00091001 // private: not in the dictionary
	tagReferencedSeries  = 0x00081115 // SQ
	tagRequestAttributes = 0x00400275 // SQ
	tagRealWorldLUTFirst = 0x00409216 // US or SS
	tagSelectorIS        = 0x00720064 // IS
	tagSelectorFD        = 0x00720074 // FD
	tagSelectorFL        = 0x00720076 // FL
	tagSelectorUL        = 0x00720078 // UL
	tagSelectorSL        = 0x0072007C // SL
	tagSelectorSS        = 0x0072007E // SS
	tagSelectorSV        = 0x00720082 // SV
	tagSelectorUV        = 0x00720083 // UV
	tagTrailingPadding   = 0xFFFCFFFC // OB
)

// allTags is every tag the collection tests ask for.
var allTags = []uint32{
	tagModality, tagImageType, tagInstitution, tagStudyDescription, tagPatientName, tagRows,
	tagSmallestPixel, tagPixelSpacing, tagReferencedFrames, tagSimpleFrameList, tagRescaleIntercept,
	tagExposureIndex, tagDeviationIndex, tagPrivate, tagReferencedSeries, tagRequestAttributes,
	tagRealWorldLUTFirst, tagSOPClass, tagSOPInstance, tagStudy, tagSeries, tagPixelData,
	tagSelectorIS, tagSelectorFD, tagSelectorFL, tagSelectorUL, tagSelectorSL, tagSelectorSS,
	tagSelectorSV, tagSelectorUV, tagTrailingPadding,
}

func u16le(v ...uint16) string {
	var b []byte
	for _, x := range v {
		b = binary.LittleEndian.AppendUint16(b, x)
	}
	return string(b)
}

func u16be(v ...uint16) string {
	var b []byte
	for _, x := range v {
		b = binary.BigEndian.AppendUint16(b, x)
	}
	return string(b)
}

func u32(order binary.AppendByteOrder, v ...uint32) string {
	var b []byte
	for _, x := range v {
		b = order.AppendUint32(b, x)
	}
	return string(b)
}

func u64(order binary.AppendByteOrder, v ...uint64) string {
	var b []byte
	for _, x := range v {
		b = order.AppendUint64(b, x)
	}
	return string(b)
}

type collectCase struct {
	name string
	enc  Encoding
	data []byte
	want []uint32
	vals map[uint32]string // expected Values (nil: none)
}

func collectCases() []collectCase {
	E, I, B := ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian
	LE, BE := binary.LittleEndian, binary.BigEndian
	long := strings.Repeat("A", MaxValueLength)
	return []collectCase{
		{"text VRs trimmed of trailing padding", E, head(le()).
			el(tagImageType, "CS", `ORIGINAL\PRIMARY\AXIAL `).el(tagModality, "CS", "MR").
			el(tagInstitution, "LO", " Hospital\x00").el(tagStudyDescription, "LO", "").
			el(tagPatientName, "PN", "Doe^J\\ ").bytes(), allTags,
			map[uint32]string{tagSOPClass: testClass, tagSOPInstance: testInst, tagImageType: `ORIGINAL\PRIMARY\AXIAL`,
				tagModality: "MR", tagInstitution: " Hospital", tagStudyDescription: "", tagPatientName: `Doe^J\`}},
		{"only what is wanted", E, head(le()).el(tagModality, "CS", "CT").el(tagInstitution, "LO", "X ").bytes(),
			[]uint32{tagInstitution, 0x12345678, tagInstitution},
			map[uint32]string{tagInstitution: "X"}},
		{"nothing wanted found", E, head(le()).el(tagModality, "CS", "CT").bytes(), []uint32{tagInstitution}, nil},
		{"numbers, little endian", E, le().
			el(tagReferencedFrames, "IS", "1\\2 ").
			el(tagRows, "US", u16le(512)).
			el(tagSelectorSS, "SS", u16le(0xFFFF, 7)).
			el(tagSelectorUL, "UL", u32(LE, 4000000000)).
			el(tagSelectorSL, "SL", u32(LE, 0x80000000, 1)).
			el(tagSelectorSV, "SV", u64(LE, math.MaxUint64)).
			el(tagSelectorUV, "UV", u64(LE, math.MaxUint64)).
			el(tagSelectorFL, "FL", u32(LE, math.Float32bits(0.1), math.Float32bits(-2.5))).
			el(tagSelectorFD, "FD", u64(LE, math.Float64bits(1e300))).bytes(), allTags,
			map[uint32]string{tagReferencedFrames: `1\2`, tagRows: "512", tagSelectorSS: `-1\7`, tagSelectorUL: "4000000000",
				tagSelectorSL: `-2147483648\1`, tagSelectorSV: "-1", tagSelectorUV: "18446744073709551615",
				tagSelectorFL: `0.1\-2.5`, tagSelectorFD: "1e+300"}},
		{"numbers, big endian", B, be().
			el(tagRows, "US", u16be(512)).
			el(tagSelectorSS, "SS", u16be(0xFFFE)).
			el(tagSelectorUL, "UL", u32(BE, 70000)).
			el(tagSelectorFL, "FL", u32(BE, math.Float32bits(0.1))).
			el(tagSelectorFD, "FD", u64(BE, math.Float64bits(-0.25))).
			el(tagModality, "CS", "US").bytes(), allTags,
			map[uint32]string{tagRows: "512", tagSelectorSS: "-2", tagSelectorUL: "70000", tagSelectorFL: "0.1",
				tagSelectorFD: "-0.25", tagModality: "US"}},
		{"implicit VR decoded by the dictionary's VR", I, head(implicit()).
			el(tagModality, "", "CT").el(tagRows, "", u16le(256)).el(tagSelectorFL, "", u32(LE, math.Float32bits(3))).
			el(tagPrivate, "", "AB").el(tagSmallestPixel, "", u16le(0xFFFF)).el(tagReferencedSeries, "", "").bytes(), allTags,
			map[uint32]string{tagSOPClass: testClass, tagSOPInstance: testInst, tagModality: "CT", tagRows: "256", tagSelectorFL: "3"}},
		{"explicit VR: the element's own VR decides", E, le().
			el(tagSmallestPixel, "SS", u16le(0xFFF6)).el(tagRealWorldLUTFirst, "US", u16le(0xFFF6)).
			el(tagModality, "LO", "CT ").el(tagRows, "SS", u16le(0xFFFF)).el(tagPrivate, "LO", "ACME").bytes(), allTags,
			map[uint32]string{tagSmallestPixel: "-10", tagRealWorldLUTFirst: "65526", tagModality: "CT", tagRows: "-1", tagPrivate: "ACME"}},
		{"bulk, sequence and AT values are not collected", E, le().
			el(tagModality, "OB", "CT").el(tagInstitution, "AT", "\x08\x00\x60\x00").hdr(tagReferencedSeries, "SQ", 0).
			el(tagPixelData, "OW", "\x00\x01").el(tagTrailingPadding, "OB", "\x00\x00").bytes(), allTags, nil},
		{"UN decoded by the dictionary's VR", E, le().
			el(tagExposureIndex, "UN", "662 ").el(tagRows, "UN", u16le(77)).el(tagSmallestPixel, "UN", u16le(1)).
			el(tagPrivate, "UN", "AB").bytes(), allTags,
			map[uint32]string{tagExposureIndex: "662", tagRows: "77"}},
		{"UN in big endian: text only", B, be().
			el(tagExposureIndex, "UN", "662 ").el(tagRows, "UN", u16be(77)).bytes(), allTags,
			map[uint32]string{tagExposureIndex: "662"}},
		{"binary value of a wrong length", E, le().el(tagRows, "US", "\x01\x02\x03").el(tagSelectorUL, "UL", "\x01\x02").bytes(), allTags, nil},
		{"value at the length bound", E, le().el(tagStudyDescription, "LO", long).bytes(), allTags,
			map[uint32]string{tagStudyDescription: long}},
		{"value beyond the length bound", E, le().el(tagStudyDescription, "UT", long+"AB").el(tagModality, "CS", "SR").bytes(), allTags,
			map[uint32]string{tagModality: "SR"}},
		{"first of duplicates", E, le().el(tagModality, "CS", "CT").el(tagModality, "CS", "MR").bytes(), allTags,
			map[uint32]string{tagModality: "CT"}},
		{"nested elements are not collected", E, le().undef(tagReferencedSeries, "SQ").item(undefinedLength).
			el(tagModality, "CS", "CT").itemEnd().seqEnd().hdr(tagRequestAttributes, "SQ", 22).item(14).el(tagInstitution, "LO", "Nested").bytes(), allTags, nil},
		{"after pixel data", E, head(le()).el(tagRows, "US", u16le(2)).hdr(tagPixelData, "OW", 40000).raw(strings.Repeat("\x01", 40000)).
			el(tagModality, "CS", "OT").el(tagTrailingPadding, "OB", "\x00\x00").bytes(), allTags,
			map[uint32]string{tagSOPClass: testClass, tagSOPInstance: testInst, tagRows: "2", tagModality: "OT"}},
		{"after encapsulated pixel data", E, le().undef(tagPixelData, "OB").item(0).item(4).raw("\xFF\xD8\xFF\xD9").seqEnd().
			el(tagInstitution, "LO", "After").bytes(), allTags,
			map[uint32]string{tagInstitution: "After"}},
		{"summary UIDs as the summary has them", E, le().el(tagSOPInstance, "UN", " "+testInst+" ").el(tagStudy, "UI", testStudy+"\x00").bytes(),
			[]uint32{tagSOPInstance, tagStudy}, map[uint32]string{tagSOPInstance: testInst, tagStudy: testStudy}},
		{"contents of a CP-246 UN sequence are not collected", B, head(be()).undef(tagPrivate, "UN").
			add(implicit().item(undefinedLength).el(tagModality, "", "CT").itemEnd().seqEnd()).bytes(), allTags,
			map[uint32]string{tagSOPClass: testClass, tagSOPInstance: testInst}},
	}
}

// fmtValues shows Values in tag order.
func fmtValues(m map[uint32]string) string {
	var parts []string
	for _, tag := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%s=%q", fmtTag(tag), m[tag]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func TestWalkCollect(t *testing.T) {
	for _, tc := range collectCases() {
		t.Run(tc.name, func(t *testing.T) {
			const off = 101
			buf := append(append(bytes.Repeat([]byte{0xAA}, off), tc.data...), bytes.Repeat([]byte{0xBB}, 50)...)
			cr := &countingReaderAt{r: bytes.NewReader(buf), lo: off, hi: off + int64(len(tc.data))}
			sum, err := WalkCollect(cr, off, int64(len(tc.data)), tc.enc, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if cr.bad != nil {
				t.Error(cr.bad)
			}
			if tc.vals == nil && sum.Values != nil {
				t.Errorf("Values = %s, want nil", fmtValues(sum.Values))
			}
			if !maps.Equal(sum.Values, tc.vals) {
				t.Errorf("Values = %s\nwant     %s", fmtValues(sum.Values), fmtValues(tc.vals))
			}
			// Everything else is Walk's.
			plain, err := Walk(bytes.NewReader(tc.data), 0, int64(len(tc.data)), tc.enc)
			if err != nil {
				t.Fatal(err)
			}
			sum.Values = nil
			if !sameSummary(sum, plain) {
				t.Errorf("WalkCollect %+v, Walk %+v", sum, plain)
			}
			if tc.enc != ExplicitVRLittleEndian {
				return
			}
			// Deflated, the same values come out.
			z := deflateBytes(t, tc.data)
			dsum, err := WalkCollect(bytes.NewReader(z), 0, int64(len(z)), DeflatedExplicitVRLittleEndian, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			if !maps.Equal(dsum.Values, tc.vals) {
				t.Errorf("deflated: Values = %s\nwant %s", fmtValues(dsum.Values), fmtValues(tc.vals))
			}
		})
	}
}

// TestWalkCollectVerdict asks for every tag of eight whole groups (and some
// private ones) on every hand-built case, malformed ones included: the
// verdict, the error text and the summary must be Walk's, whatever the
// window size.
func TestWalkCollectVerdict(t *testing.T) {
	want := append(wideTagRange(), tagPrivate, 0x00091002, 0x00091010)
	for _, tc := range walkCases() {
		ref, refErr := Walk(bytes.NewReader(tc.data), 0, int64(len(tc.data)), tc.enc)
		for _, w := range []int{MaxValueLength, 4093, windowSize} {
			got, err := walk(bytes.NewReader(tc.data), 0, int64(len(tc.data)), tc.enc, w, newWants(want))
			if errText(err) != errText(refErr) {
				t.Errorf("%s, window %d: error %v, Walk's %v", tc.name, w, err, refErr)
			}
			got.Values = nil
			if !sameSummary(got, ref) {
				t.Errorf("%s, window %d: %+v, Walk's %+v", tc.name, w, got, ref)
			}
		}
	}
}

// wideTagRange returns the tags (gggg,0000)-(gggg,11FF) of the groups 0008,
// 0010, ..., 0040, which hold elements of every collected VR, bulk and
// sequence ones among them, and allTags.
func wideTagRange() []uint32 {
	var ts []uint32
	for g := uint32(0x0008); g <= 0x0040; g += 8 {
		for e := uint32(0); e < 0x1200; e++ {
			ts = append(ts, g<<16|e)
		}
	}
	return append(ts, allTags...)
}

// TestCollectSparseGiB collects elements placed after 1 GiB of Pixel Data
// held in a sparse file: the value is skipped, not read, and what follows is
// collected.
func TestCollectSparseGiB(t *testing.T) {
	const big = 1 << 30
	hdr := head(le()).el(tagRows, "US", u16le(1024)).hdr(tagPixelData, "OW", big).bytes()
	tail := le().el(tagSelectorIS, "IS", "42").el(tagTrailingPadding, "OB", "\x00\x00\x00\x00").bytes()
	size := int64(len(hdr)) + big + int64(len(tail))
	p := filepath.Join(t.TempDir(), "big.dcm")
	if err := os.WriteFile(p, hdr, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(p, size); err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(tail, size-int64(len(tail))); err != nil {
		t.Fatal(err)
	}
	cr := &countingReaderAt{r: f, lo: 0, hi: size}
	sum, err := WalkCollect(cr, 0, size, ExplicitVRLittleEndian, []uint32{tagRows, tagSelectorIS, tagPixelData, tagTrailingPadding})
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{tagRows: "1024", tagSelectorIS: "42"}
	if !maps.Equal(sum.Values, want) {
		t.Errorf("Values = %s, want %s", fmtValues(sum.Values), fmtValues(want))
	}
	if cr.calls > 2 || cr.bytes > 2*windowSize {
		t.Errorf("%d ReadAt calls reading %d bytes", cr.calls, cr.bytes)
	}
	if cr.bad != nil {
		t.Error(cr.bad)
	}
}

// TestCollectOverrun: a wanted value that overruns the data set fails as
// Walk fails, and nothing is collected from it.
func TestCollectOverrun(t *testing.T) {
	data := head(le()).hdr(tagModality, "CS", 10).raw("CT").bytes()
	for _, enc := range []Encoding{ExplicitVRLittleEndian, DeflatedExplicitVRLittleEndian} {
		d := data
		if enc == DeflatedExplicitVRLittleEndian {
			d = deflateBytes(t, data)
		}
		sum, err := WalkCollect(bytes.NewReader(d), 0, int64(len(d)), enc, []uint32{tagModality})
		_, werr := Walk(bytes.NewReader(d), 0, int64(len(d)), enc)
		var fe *FormatError
		if !errors.As(err, &fe) || errText(err) != errText(werr) || !strings.Contains(err.Error(), "value length 10 overruns") {
			t.Errorf("%v: %v, Walk: %v", enc, err, werr)
		}
		if sum.Values != nil {
			t.Errorf("%v: Values = %s", enc, fmtValues(sum.Values))
		}
	}
}

func TestCollects(t *testing.T) {
	for vr, want := range map[string]bool{
		"CS": true, "LO": true, "PN": true, "UI": true, "UT": true, "DS": true, "US": true, "FD": true, "SV": true,
		"SQ": false, "OB": false, "OW": false, "UN": false, "AT": false, "US or SS": false, "OB or OW": false, "": false,
	} {
		if got := Collects(vr); got != want {
			t.Errorf("Collects(%q) = %v", vr, got)
		}
	}
}

func BenchmarkWalkCollect(b *testing.B) {
	want := []uint32{tagModality, tagStudyDescription, tagInstitution, tagSOPClass, tagRows}
	for _, name := range []string{"ct-explicit-le.dcm", "mr-implicit-le.dcm", "sc-deflated-explicit-le.dcm"} {
		c := corpusByName(b, name)
		ds := c.dataSet()
		r := bytes.NewReader(c.data)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(ds)))
			for b.Loop() {
				if _, err := WalkCollect(r, c.meta.dataSetOffset, int64(len(ds)), c.enc, want); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
