package dcmhead

import (
	"bytes"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/dicomgw/dicomgw/pkg/dict"
	"github.com/suyashkumar/dicom"
)

// TestCollectOracleSuyashkumar asks WalkCollect, on every corpus file the
// oracle (github.com/suyashkumar/dicom, a full parser) can read, for every
// top-level element the oracle found, and compares each collected value with
// the oracle's: text values as strings (the oracle trims leading padding
// too, and splits at backslashes), numbers value by value. Values the walk
// does not collect (bulk, sequences, UN, over MaxValueLength) are skipped,
// and so are text values with bytes outside ASCII, which the oracle converts
// from the Specific Character Set and the walk does not.
func TestCollectOracleSuyashkumar(t *testing.T) {
	opts := []dicom.ParseOption{
		dicom.SkipPixelData(),
		dicom.AllowMissingMetaElementGroupLength(),
		dicom.AllowUnknownSpecificCharacterSet(),
		dicom.AllowMismatchPixelDataLength(),
	}
	var compared, charset int
	seen := map[uint32]int{} // files in which these were compared
	byEnc := map[Encoding]int{}
	named := []uint32{tagModality, tagStudyDescription, tagInstitution, tagSOPClass, tagRows, tagImageType, tagPixelSpacing}
	for _, c := range loadCorpus(t) {
		if c.File == malformedFile {
			continue
		}
		ods, err := parseOracle(filepath.Join(corpusDir, c.File), opts)
		if err != nil {
			t.Logf("%s: oracle cannot parse it: %v", c.File, err)
			continue
		}
		type expect struct {
			vr, val string
		}
		exp := map[uint32]expect{}
		var want []uint32
		for _, e := range ods.Elements {
			tg := e.Tag.Uint32()
			if e.Tag.Group == 0x0002 && c.meta.present {
				continue // the file meta header, not the data set
			}
			want = append(want, tg)
			vr := e.RawValueRepresentation
			if c.enc == ImplicitVRLittleEndian {
				de, ok := dict.ByTag(tg)
				if !ok || de.VR != vr {
					continue // the oracle's dictionary differs, or a private element
				}
			}
			if !Collects(vr) || e.ValueLength > MaxValueLength || e.ValueLength == undefinedLength {
				continue
			}
			var val string
			switch v := e.Value.GetValue().(type) {
			case []string:
				val = strings.Join(v, `\`)
			case []int:
				val = joinNumbers(v, func(n int) string { return strconv.Itoa(n) })
			case []float64:
				val = joinNumbers(v, func(f float64) string { return strconv.FormatFloat(f, 'g', -1, 64) })
			default:
				t.Errorf("%s %s %s: oracle value of type %T", c.File, fmtTag(tg), vr, v)
				continue
			}
			exp[tg] = expect{vr, val}
		}
		sum, err := WalkCollect(bytes.NewReader(c.data), c.meta.dataSetOffset, int64(len(c.dataSet())), c.enc, want)
		if err != nil {
			t.Errorf("%s: %v", c.File, err)
			continue
		}
		for tg, x := range exp {
			got, ok := sum.Values[tg]
			if !ok {
				t.Errorf("%s %s %s: not collected; oracle %q", c.File, fmtTag(tg), x.vr, x.val)
				continue
			}
			g, o := strings.Trim(got, " \x00"), strings.Trim(x.val, " \x00")
			if g != o && nonASCII(got) {
				charset++
				continue
			}
			if g != o {
				t.Errorf("%s %s %s: walk %q, oracle %q", c.File, fmtTag(tg), x.vr, got, x.val)
				continue
			}
			compared++
			seen[tg]++
			byEnc[c.enc]++
		}
	}
	t.Logf("%d values equal to the oracle's; %d differ only by character set conversion", compared, charset)
	if compared < 2000 {
		t.Errorf("only %d values compared", compared)
	}
	for _, enc := range []Encoding{ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian} {
		t.Logf("%s: %d values compared", enc, byEnc[enc])
		if byEnc[enc] < 20 {
			t.Errorf("%s: only %d values compared", enc, byEnc[enc])
		}
	}
	for _, tg := range named {
		e, _ := dict.ByTag(tg)
		t.Logf("%s %s compared in %d files", fmtTag(tg), e.Keyword, seen[tg])
		if seen[tg] < 10 {
			t.Errorf("%s %s compared in only %d files", fmtTag(tg), e.Keyword, seen[tg])
		}
	}
}

func joinNumbers[T any](v []T, f func(T) string) string {
	s := make([]string, len(v))
	for i, x := range v {
		s[i] = f(x)
	}
	return strings.Join(s, `\`)
}

func nonASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 || s[i] == 0x1B {
			return true
		}
	}
	return false
}

// TestCollectCorpusCases pins values of particular corpus files: big endian,
// implicit VR, deflated, and standard attributes sent as UN.
func TestCollectCorpusCases(t *testing.T) {
	for _, tc := range []struct {
		file string
		want map[uint32]string
	}{
		{"mr-explicit-be.dcm", map[uint32]string{tagModality: "MR", tagRows: "64", 0x00280011: "64"}},
		{"mr-implicit-le.dcm", map[uint32]string{tagModality: "MR", tagRows: "64", 0x00280011: "64"}},
		{"sc-deflated-explicit-le.dcm", map[uint32]string{tagModality: "OT", tagRows: "512", 0x00280011: "512"}},
		{"dx-jpeg-lossless-un-vr-3mb.dcm", map[uint32]string{tagExposureIndex: "662", tagDeviationIndex: "-1.835"}},
	} {
		c := corpusByName(t, tc.file)
		want := []uint32{tagModality, tagRows, 0x00280011, tagExposureIndex, tagDeviationIndex}
		sum, err := WalkCollect(bytes.NewReader(c.data), c.meta.dataSetOffset, int64(len(c.dataSet())), c.enc, want)
		if err != nil {
			t.Fatalf("%s: %v", tc.file, err)
		}
		for tg, v := range tc.want {
			if sum.Values[tg] != v {
				t.Errorf("%s %s = %q, want %q", tc.file, fmtTag(tg), sum.Values[tg], v)
			}
		}
		t.Logf("%s (%s): %s", tc.file, c.enc, fmtValues(sum.Values))
	}
}
