package dcmhead

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// corpusDir is the shared real-world corpus (not copied into the repository).
const corpusDir = "/work/shared/dicom-corpus"

// corpusEntry is one row of MANIFEST.tsv.
type corpusEntry struct {
	File, TransferSyntax, SOPClass, SOPInstance, Study, Notes string
	Bytes                                                     int64
	Part10                                                    bool
}

// Files whose data set lacks SOP Class/Instance UID: the manifest shows the
// meta header's MediaStorage values for them (see its notes).
var metaUIDFiles = map[string]bool{
	"edge-no-meta-group-length.dcm":   true,
	"edge-private-sq-implicit-vr.dcm": true,
	"edge-un-vr-private-sequence.dcm": true,
}

// Files whose data set SOP Instance UID differs from the meta header's
// MediaStorageSOPInstanceUID (upstream files, unedited).
var metaMismatchFiles = map[string]bool{
	"edge-charset-iso2022-japanese.dcm": true, // ...17462 vs ...17461
	"mr-siemens-csa-private.dcm":        true, // ".0" suffix only in the data set
	"rtdose-multiframe-implicit-le.dcm": true, // 1.9.999... vs 1.2.999...
	"rtimage-implicit-le-2mb.dcm":       true, // unrelated UID in the meta header
	"rtplan-implicit-le.dcm":            true, // 1.2.777... vs 1.2.999...
}

// The one deliberately malformed corpus file.
const malformedFile = "edge-truncated-malformed.dcm"

func loadManifest(t testing.TB) []corpusEntry {
	t.Helper()
	f, err := os.Open(filepath.Join(corpusDir, "MANIFEST.tsv"))
	if errors.Is(err, os.ErrNotExist) {
		t.Skipf("corpus not available at %s", corpusDir)
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	var col map[string]int
	var out []corpusEntry
	for sc.Scan() {
		fields := strings.Split(sc.Text(), "\t")
		if col == nil {
			col = map[string]int{}
			for i, name := range fields {
				col[name] = i
			}
			for _, want := range []string{"file", "bytes", "transfer_syntax_uid", "sop_class_uid", "sop_instance_uid", "study_instance_uid", "has_part10_header", "notes"} {
				if _, ok := col[want]; !ok {
					t.Fatalf("MANIFEST.tsv lacks column %q", want)
				}
			}
			continue
		}
		if len(fields) != len(col) {
			t.Fatalf("MANIFEST.tsv row with %d fields, want %d: %q", len(fields), len(col), fields[0])
		}
		e := corpusEntry{
			File:           fields[col["file"]],
			TransferSyntax: fields[col["transfer_syntax_uid"]],
			SOPClass:       fields[col["sop_class_uid"]],
			SOPInstance:    fields[col["sop_instance_uid"]],
			Study:          fields[col["study_instance_uid"]],
			Notes:          fields[col["notes"]],
			Part10:         fields[col["has_part10_header"]] == "yes",
		}
		if _, err := fmt.Sscan(fields[col["bytes"]], &e.Bytes); err != nil {
			t.Fatalf("%s: bytes: %v", e.File, err)
		}
		out = append(out, e)
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) != 55 {
		t.Fatalf("MANIFEST.tsv has %d files, want 55", len(out))
	}
	return out
}

// encodingFor maps a transfer syntax UID to the data set encoding.
func encodingFor(ts string) Encoding {
	switch ts {
	case "1.2.840.10008.1.2":
		return ImplicitVRLittleEndian
	case "1.2.840.10008.1.2.2":
		return ExplicitVRBigEndian
	case "1.2.840.10008.1.2.1.99":
		return DeflatedExplicitVRLittleEndian
	}
	return ExplicitVRLittleEndian // .1.2.1 and every encapsulated syntax
}

// metaInfo is what the test helper finds in a Part 10 file meta header.
type metaInfo struct {
	present                        bool
	dataSetOffset                  int64
	transferSyntax                 string
	mediaSOPClass, mediaSOPInstace string
	hadGroupLength                 bool
}

// parseMeta locates the data set in a file: after the 128-byte preamble,
// "DICM" and the group 0002 elements (explicit VR LE) when present, else at 0.
// The group's extent comes from (0002,0000) when present; the elements are
// walked either way and must agree with it.
func parseMeta(b []byte) (metaInfo, error) {
	if len(b) < 132 || string(b[128:132]) != "DICM" {
		return metaInfo{}, nil
	}
	mi := metaInfo{present: true}
	pos := int64(132)
	groupEnd := int64(-1)
	for pos+8 <= int64(len(b)) && binary.LittleEndian.Uint16(b[pos:]) == 0x0002 {
		tag := binary.LittleEndian.Uint32(b[pos:])<<16 | binary.LittleEndian.Uint32(b[pos:])>>16
		vr := string(b[pos+4 : pos+6])
		var vl, hdr int64
		switch vr {
		case "OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV":
			if pos+12 > int64(len(b)) {
				return mi, fmt.Errorf("meta element at %d truncated", pos)
			}
			vl, hdr = int64(binary.LittleEndian.Uint32(b[pos+8:])), 12
		default:
			vl, hdr = int64(binary.LittleEndian.Uint16(b[pos+6:])), 8
		}
		if pos+hdr+vl > int64(len(b)) {
			return mi, fmt.Errorf("meta element (%04X,%04X) overruns file", tag>>16, tag&0xFFFF)
		}
		val := b[pos+hdr : pos+hdr+vl]
		str := strings.TrimRight(string(val), "\x00 ")
		switch tag {
		case 0x00020000:
			mi.hadGroupLength = true
			groupEnd = pos + hdr + vl + int64(binary.LittleEndian.Uint32(val))
		case 0x00020002:
			mi.mediaSOPClass = str
		case 0x00020003:
			mi.mediaSOPInstace = str
		case 0x00020010:
			mi.transferSyntax = str
		}
		pos += hdr + vl
	}
	if groupEnd >= 0 && groupEnd != pos {
		return mi, fmt.Errorf("group length says the meta group ends at %d, its elements end at %d", groupEnd, pos)
	}
	mi.dataSetOffset = pos
	return mi, nil
}

type corpusFile struct {
	corpusEntry
	data []byte
	meta metaInfo
	enc  Encoding
}

func (c corpusFile) dataSet() []byte { return c.data[c.meta.dataSetOffset:] }

func loadCorpus(t testing.TB) []corpusFile {
	t.Helper()
	var out []corpusFile
	for _, e := range loadManifest(t) {
		b, err := os.ReadFile(filepath.Join(corpusDir, e.File))
		if err != nil {
			t.Fatal(err)
		}
		if int64(len(b)) != e.Bytes {
			t.Fatalf("%s: %d bytes, manifest says %d", e.File, len(b), e.Bytes)
		}
		mi, err := parseMeta(b)
		if err != nil {
			t.Fatalf("%s: meta header: %v", e.File, err)
		}
		if mi.present != e.Part10 {
			t.Fatalf("%s: Part 10 header present=%v, manifest says %v", e.File, mi.present, e.Part10)
		}
		if mi.present && mi.transferSyntax != e.TransferSyntax {
			t.Fatalf("%s: meta transfer syntax %q, manifest says %q", e.File, mi.transferSyntax, e.TransferSyntax)
		}
		out = append(out, corpusFile{corpusEntry: e, data: b, meta: mi, enc: encodingFor(e.TransferSyntax)})
	}
	return out
}

func corpusByName(t testing.TB, name string) corpusFile {
	t.Helper()
	for _, c := range loadCorpus(t) {
		if c.File == name {
			return c
		}
	}
	t.Fatalf("%s not in corpus", name)
	return corpusFile{}
}

// TestCorpus walks the data set of every corpus file.
func TestCorpus(t *testing.T) {
	files := loadCorpus(t)
	var ok, failed, noGroupLength int
	for _, c := range files {
		t.Run(c.File, func(t *testing.T) {
			if c.meta.present && !c.meta.hadGroupLength {
				noGroupLength++
				if c.File != "edge-no-meta-group-length.dcm" {
					t.Errorf("unexpected meta header without (0002,0000)")
				}
			}
			ds := c.dataSet()
			cr := &countingReaderAt{r: bytes.NewReader(c.data)}
			sum, err := Walk(cr, c.meta.dataSetOffset, int64(len(ds)), c.enc)
			if c.File == malformedFile {
				var fe *FormatError
				if !errors.As(err, &fe) {
					t.Fatalf("want a *FormatError, got %v", err)
				}
				t.Logf("rejected as expected: %v", err)
				if !strings.Contains(err.Error(), "(7FE0,0010)") || !strings.Contains(err.Error(), "overruns data set end") {
					t.Errorf("error does not name the truncated Pixel Data: %v", err)
				}
				failed++
				return
			}
			if err != nil {
				t.Fatalf("Walk: %v", err)
			}
			ok++
			if sum.Size != int64(len(ds)) {
				t.Errorf("Size = %d, want %d", sum.Size, len(ds))
			}
			wantClass, wantInst := c.SOPClass, c.SOPInstance
			lacks := strings.Contains(c.Notes, "dataset lacks SOPInstanceUID")
			if lacks != metaUIDFiles[c.File] {
				t.Fatalf("manifest notes say the data set lacks the SOP UIDs: %v; metaUIDFiles says %v", lacks, metaUIDFiles[c.File])
			}
			if metaUIDFiles[c.File] {
				// The manifest shows the meta header's values; the data set has none.
				if c.SOPClass != c.meta.mediaSOPClass || c.SOPInstance != c.meta.mediaSOPInstace {
					t.Errorf("manifest UIDs %q/%q differ from meta header %q/%q", c.SOPClass, c.SOPInstance, c.meta.mediaSOPClass, c.meta.mediaSOPInstace)
				}
				wantClass, wantInst = "", ""
			}
			if sum.SOPClassUID != wantClass {
				t.Errorf("SOPClassUID = %q, want %q", sum.SOPClassUID, wantClass)
			}
			if sum.SOPInstanceUID != wantInst {
				t.Errorf("SOPInstanceUID = %q, want %q", sum.SOPInstanceUID, wantInst)
			}
			if sum.StudyInstanceUID != c.Study {
				t.Errorf("StudyInstanceUID = %q, want %q", sum.StudyInstanceUID, c.Study)
			}
			// Real files do not always agree with their own meta header: the
			// gateway must take the UIDs from the data set.
			if c.meta.present && !metaUIDFiles[c.File] {
				differs := c.meta.mediaSOPInstace != sum.SOPInstanceUID
				if differs != metaMismatchFiles[c.File] {
					t.Errorf("SOPInstanceUID %q vs MediaStorageSOPInstanceUID %q: differ=%v, want %v",
						sum.SOPInstanceUID, c.meta.mediaSOPInstace, differs, metaMismatchFiles[c.File])
				}
			}
			if sum.Elements == 0 {
				t.Errorf("no elements")
			}
			// The window makes small elements cheap: never more ReadAt calls
			// than one per 32 KiB window plus one per element.
			if c.enc != DeflatedExplicitVRLittleEndian && cr.calls > int(int64(len(ds))/windowSize)+sum.Elements+1 {
				t.Errorf("%d ReadAt calls for %d bytes, %d elements", cr.calls, len(ds), sum.Elements)
			}
			t.Logf("%s: %d elements, %d bytes, %d ReadAt calls, series %s", c.enc, sum.Elements, sum.Size, cr.calls, sum.SeriesInstanceUID)
		})
	}
	if ok != 54 || failed != 1 {
		t.Errorf("%d files walked, %d rejected; want 54 and 1", ok, failed)
	}
	if noGroupLength != 1 {
		t.Errorf("%d meta headers without group length, want 1", noGroupLength)
	}
}

// countingReaderAt counts ReadAt calls and checks that none reads outside
// [lo, hi) when hi > 0.
type countingReaderAt struct {
	r interface {
		ReadAt([]byte, int64) (int, error)
	}
	calls  int
	bytes  int64
	lo, hi int64
	bad    error
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	c.calls++
	c.bytes += int64(len(p))
	if c.hi > 0 && (off < c.lo || off+int64(len(p)) > c.hi) && c.bad == nil {
		c.bad = fmt.Errorf("ReadAt(%d bytes at %d) outside [%d,%d)", len(p), off, c.lo, c.hi)
	}
	if len(p) > windowSize && c.bad == nil {
		c.bad = fmt.Errorf("ReadAt of %d bytes, larger than the window", len(p))
	}
	return c.r.ReadAt(p, off)
}

func BenchmarkWalk(b *testing.B) {
	for _, name := range []string{"ct-explicit-le.dcm", "ecg-waveform.dcm", "dx-jpeg-lossless-un-vr-3mb.dcm", "sc-deflated-explicit-le.dcm"} {
		c := corpusByName(b, name)
		ds := c.dataSet()
		r := bytes.NewReader(c.data)
		b.Run(name, func(b *testing.B) {
			b.ReportAllocs()
			b.SetBytes(int64(len(ds)))
			for b.Loop() {
				if _, err := Walk(r, c.meta.dataSetOffset, int64(len(ds)), c.enc); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
