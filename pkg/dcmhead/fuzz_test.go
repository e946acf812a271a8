package dcmhead

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// FuzzWalk checks, for arbitrary bytes in each encoding, that Walk
//   - never panics and only ever fails with a *FormatError (the reader
//     cannot fail), whose offset lies in the data set;
//   - never reads outside [off, off+size) nor more than a window at a time;
//   - allocates a bounded amount whatever lengths the data declares;
//   - on success, walked exactly size bytes and counted no more elements
//     than fit;
//   - gives the same result, error text included, with the smallest window
//     and at another offset (the summary is stable);
//   - for a valid Explicit VR Little Endian data set, gives the same summary
//     when the data set is deflated and walked as Deflated Explicit VR LE;
//   - with WalkCollect, asked for fixed tags of every collected VR and for
//     the tags read at the even offsets of the data's first 256 bytes (so
//     the fuzzer's own elements get collected), gives Walk's verdict, error
//     text and summary, reads and allocates within the same bounds, collects
//     only wanted tags with bounded values, and gives the same values with
//     the smallest window and once deflated.
//
// Seeds are in testdata/fuzz/FuzzWalk (regenerate with
// DCMHEAD_WRITE_SEEDS=1 go test -run TestWriteFuzzSeeds ./pkg/dcmhead).
func FuzzWalk(f *testing.F) {
	f.Fuzz(func(t *testing.T, e byte, data []byte) {
		enc := Encoding(e%4 + 1)
		const off = 77
		buf := make([]byte, off+len(data)+13)
		copy(buf[off:], data)
		size := int64(len(data))
		cr := &countingReaderAt{r: bytes.NewReader(buf), lo: off, hi: off + size}

		var ms0, ms1 runtime.MemStats
		runtime.ReadMemStats(&ms0)
		sum, err := Walk(cr, off, size, enc)
		runtime.ReadMemStats(&ms1)
		// Window, inflater state and error text: well under 1 MiB.
		if a := ms1.TotalAlloc - ms0.TotalAlloc; a > 1<<20 {
			t.Fatalf("Walk allocated %d bytes for %d input bytes", a, len(data))
		}
		if cr.bad != nil {
			t.Fatal(cr.bad)
		}
		if err != nil {
			var fe *FormatError
			if !errors.As(err, &fe) {
				t.Fatalf("not a FormatError: %v", err)
			}
			if fe.Offset < 0 || enc != DeflatedExplicitVRLittleEndian && fe.Offset > size {
				t.Fatalf("error offset %d outside the data set of %d bytes: %v", fe.Offset, size, err)
			}
		} else {
			if sum.Size != size {
				t.Fatalf("Size = %d, want %d", sum.Size, size)
			}
			if enc != DeflatedExplicitVRLittleEndian && int64(sum.Elements)*8 > size {
				t.Fatalf("%d elements in %d bytes", sum.Elements, size)
			}
			for _, u := range []string{sum.SOPClassUID, sum.SOPInstanceUID, sum.StudyInstanceUID, sum.SeriesInstanceUID} {
				if len(u) > MaxUIDLength {
					t.Fatalf("UID of %d bytes", len(u))
				}
			}
		}

		sum2, err2 := walk(bytes.NewReader(data), 0, size, enc, MaxUIDLength, nil)
		if err != nil && enc == DeflatedExplicitVRLittleEndian {
			sum2.Size = sum.Size // depends on the inflater's read-ahead
		}
		if !sameSummary(sum2, sum) || errText(err2) != errText(err) {
			t.Fatalf("unstable: window %d at offset %d: %+v, %v; window %d at offset 0: %+v, %v",
				windowSize, off, sum, err, MaxUIDLength, sum2, err2)
		}

		if err == nil && enc == ExplicitVRLittleEndian {
			z := deflateBytes(t, data)
			dsum, derr := Walk(bytes.NewReader(z), 0, int64(len(z)), DeflatedExplicitVRLittleEndian)
			dsum.Size = sum.Size
			if derr != nil || !sameSummary(dsum, sum) {
				t.Fatalf("deflated: %+v, %v; plain: %+v", dsum, derr, sum)
			}
		}

		fuzzCollect(t, enc, data, sum, err)
	})
}

// fuzzCollect checks WalkCollect on data against Walk's result.
func fuzzCollect(t *testing.T, enc Encoding, data []byte, sum Summary, err error) {
	want := append([]uint32(nil), allTags...)
	m := mode{bigEndian: enc == ExplicitVRBigEndian}
	for i := 0; i+4 <= min(len(data), 256); i += 2 {
		want = append(want, m.tag(data[i:]))
	}
	const off = 5
	buf := make([]byte, off+len(data)+7)
	copy(buf[off:], data)
	size := int64(len(data))
	cr := &countingReaderAt{r: bytes.NewReader(buf), lo: off, hi: off + size}

	var ms0, ms1 runtime.MemStats
	runtime.ReadMemStats(&ms0)
	csum, cerr := WalkCollect(cr, off, size, enc, want)
	runtime.ReadMemStats(&ms1)
	if a := ms1.TotalAlloc - ms0.TotalAlloc; a > 1<<20 {
		t.Fatalf("WalkCollect allocated %d bytes for %d input bytes", a, len(data))
	}
	if cr.bad != nil {
		t.Fatal(cr.bad)
	}
	if errText(cerr) != errText(err) {
		t.Fatalf("WalkCollect: %v; Walk: %v", cerr, err)
	}
	for tag, v := range csum.Values {
		if !slices.Contains(want, tag) {
			t.Fatalf("collected %s, not wanted", fmtTag(tag))
		}
		// Text: at most MaxValueLength bytes; numbers: at most 512
		// values of at most 24 characters and a separator.
		if len(v) > MaxValueLength*25/2 {
			t.Fatalf("%s: value of %d bytes", fmtTag(tag), len(v))
		}
	}
	for i, u := range []string{csum.SOPClassUID, csum.SOPInstanceUID, csum.StudyInstanceUID, csum.SeriesInstanceUID} {
		tag := []uint32{tagSOPClass, tagSOPInstance, tagStudy, tagSeries}[i]
		if v, ok := csum.Values[tag]; ok && v != u {
			t.Fatalf("%s: Values %q, summary %q", fmtTag(tag), v, u)
		}
	}
	if csum.Values != nil && len(csum.Values) == 0 {
		t.Fatal("empty, non-nil Values")
	}
	values := csum.Values
	csum.Values = nil
	if !sameSummary(csum, sum) {
		t.Fatalf("WalkCollect %+v; Walk %+v", csum, sum)
	}
	csum.Values = values

	csum2, cerr2 := walk(bytes.NewReader(data), 0, size, enc, MaxValueLength, newWants(want))
	if cerr != nil && enc == DeflatedExplicitVRLittleEndian {
		csum2.Size = csum.Size // depends on the inflater's read-ahead
	}
	if !sameSummary(csum2, csum) || errText(cerr2) != errText(cerr) {
		t.Fatalf("unstable collection: window %d: %+v, %v; window %d: %+v, %v",
			windowSize, csum, cerr, MaxValueLength, csum2, cerr2)
	}

	if cerr == nil && enc == ExplicitVRLittleEndian {
		z := deflateBytes(t, data)
		dsum, derr := WalkCollect(bytes.NewReader(z), 0, int64(len(z)), DeflatedExplicitVRLittleEndian, want)
		dsum.Size = csum.Size
		if derr != nil || !sameSummary(dsum, csum) {
			t.Fatalf("deflated collection: %+v, %v; plain: %+v", dsum, derr, csum)
		}
	}
}

// TestWriteFuzzSeeds (re)writes the committed FuzzWalk seed corpus: small
// corpus data sets and the hand-built cases. It only runs when asked to.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("DCMHEAD_WRITE_SEEDS") == "" {
		t.Skip("set DCMHEAD_WRITE_SEEDS=1 to rewrite testdata/fuzz/FuzzWalk")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzWalk")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := filepath.Glob(filepath.Join(dir, "*"))
	for _, p := range old {
		os.Remove(p)
	}
	write := func(name string, enc Encoding, data []byte) {
		content := fmt.Sprintf("go test fuzz v1\nbyte(%q)\n[]byte(%q)\n", byte(enc-1), data)
		if len(content) > 16<<10 {
			t.Fatalf("%s: seed file of %d bytes is too big", name, len(content))
		}
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range []string{
		"edge-charset-empty.dcm",
		"edge-no-meta-explicit-le.dcm",
		"edge-private-sq-implicit-vr.dcm",
		"edge-un-vr-private-sequence.dcm",
		"sr-basic-undefined-length.dcm",
		"rtstruct-implicit-le-no-meta.dcm",
		"sc-rgb-jpeg-baseline.dcm",
		"seg-binary-implicit-le.dcm",
		"sc-deflated-explicit-le.dcm",
		"mr-explicit-be.dcm",
		"us-rgb-explicit-be.dcm",
		"ct-jpeg-ls-near-lossless.dcm",
	} {
		c := corpusByName(t, name)
		ds := c.dataSet()
		if len(ds) > 4<<10 && c.enc != DeflatedExplicitVRLittleEndian {
			// Keep the longest prefix of whole elements that fits 2 KiB.
			k := 2 << 10
			for ; k > 0; k-- {
				if _, err := Walk(bytes.NewReader(ds), 0, int64(k), c.enc); err == nil {
					break
				}
			}
			ds = ds[:k]
		}
		write("corpus-"+strings.TrimSuffix(name, ".dcm"), c.enc, ds)
	}
	for _, tc := range walkCases() {
		if len(tc.data) == 0 || len(tc.data) > 2<<10 {
			continue
		}
		write("case-"+strings.NewReplacer(" ", "-", "\"", "").Replace(tc.name), tc.enc, tc.data)
	}
}
