package dict

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/dicomgw/dicomgw/pkg/dict/internal/table"
)

// TestTableInSync regenerates table_gen.go from dictionary.tsv in memory: if
// it fails, dictionary.tsv was edited without running "go generate ./pkg/dict"
// (or table_gen.go was edited by hand).
func TestTableInSync(t *testing.T) {
	f, err := os.Open("dictionary.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, err := table.Generate(f)
	if err != nil {
		t.Fatalf("dictionary.tsv: %v", err)
	}
	got, err := os.ReadFile("table_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("table_gen.go is out of date with dictionary.tsv; run: go generate ./pkg/dict")
	}
}

// TestTSVFromDcmtk converts DCMTK's dicom.dic again, where the same edition is
// installed, and compares the result with the committed dictionary.tsv: the
// TSV is exactly the documented conversion, with no hand edits.
func TestTSVFromDcmtk(t *testing.T) {
	f, err := os.Open(table.DcmtkDic)
	if err != nil {
		t.Skipf("DCMTK's dictionary not installed: %v", err)
	}
	defer f.Close()
	rows, sk, err := table.FromDcmtk(f)
	if err != nil {
		t.Fatal(err)
	}
	committed, err := os.ReadFile("dictionary.tsv")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(committed, []byte("#   "+sk.Generated+"\n")) {
		t.Skipf("installed dicom.dic is another edition (%q)", sk.Generated)
	}
	if got := table.WriteTSV(rows, sk); !bytes.Equal(got, committed) {
		t.Fatal("dictionary.tsv differs from a fresh conversion of " + table.DcmtkDic + "; run: go run dcmtk.go (in pkg/dict)")
	}
}

// TestWellKnown checks entries against PS3.6 Table 6-1 as printed.
func TestWellKnown(t *testing.T) {
	for _, want := range []Entry{
		{0x00080005, "CS", "1-n", "SpecificCharacterSet", false},
		{0x00080008, "CS", "2-n", "ImageType", false},
		{0x00080016, "UI", "1", "SOPClassUID", false},
		{0x00080018, "UI", "1", "SOPInstanceUID", false},
		{0x00080060, "CS", "1", "Modality", false},
		{0x00080080, "LO", "1", "InstitutionName", false},
		{0x00081030, "LO", "1", "StudyDescription", false},
		{0x0008103E, "LO", "1", "SeriesDescription", false},
		{0x00100010, "PN", "1", "PatientName", false},
		{0x00100020, "LO", "1", "PatientID", false},
		{0x0020000D, "UI", "1", "StudyInstanceUID", false},
		{0x00200013, "IS", "1", "InstanceNumber", false},
		{0x00280010, "US", "1", "Rows", false},
		{0x00280030, "DS", "2", "PixelSpacing", false},
		{0x00280106, "US or SS", "1", "SmallestImagePixelValue", false},
		{0x00283006, "US or OW", "1-n", "LUTData", false},
		{0x00400275, "SQ", "1", "RequestAttributesSequence", false},
		{0x00081150, "UI", "1", "ReferencedSOPClassUID", false},
		{0x00020010, "UI", "1", "TransferSyntaxUID", false},
		{0x00041220, "SQ", "1", "DirectoryRecordSequence", false},
		{0x00041200, "UL", "1", "OffsetOfTheFirstDirectoryRecordOfTheRootDirectoryEntity", false},
		{0x00080001, "UL", "1", "LengthToEnd", true},
		{0x00081040, "LO", "1", "InstitutionalDepartmentName", false},
		{0x7FE00010, "OB or OW", "1", "PixelData", false},
		{0xFFFAFFFA, "SQ", "1", "DigitalSignaturesSequence", false},
		{0xFFFCFFFC, "OB", "1", "DataSetTrailingPadding", false},
	} {
		got, ok := ByTag(want.Tag)
		if !ok || got != want {
			t.Errorf("ByTag(%08X) = %+v, %v; want %+v", want.Tag, got, ok, want)
		}
		got, ok = ByKeyword(want.Keyword)
		if !ok || got != want {
			t.Errorf("ByKeyword(%s) = %+v, %v; want %+v", want.Keyword, got, ok, want)
		}
	}
}

// TestLookupEveryEntry looks every entry up both ways, and things that are not
// in the dictionary.
func TestLookupEveryEntry(t *testing.T) {
	if len(entries) < 4000 {
		t.Fatalf("only %d entries", len(entries))
	}
	for i, e := range entries {
		if got, ok := ByTag(e.Tag); !ok || got != e {
			t.Fatalf("ByTag(%08X) = %+v, %v; want %+v", e.Tag, got, ok, e)
		}
		if got, ok := ByKeyword(e.Keyword); !ok || got != e {
			t.Fatalf("ByKeyword(%s) = %+v, %v; want %+v", e.Keyword, got, ok, e)
		}
		if i > 0 && entries[i-1].Tag >= e.Tag {
			t.Fatalf("entries not sorted at %d", i)
		}
		if e.Tag>>16&1 == 1 || e.Tag>>16 == 0 || e.Tag>>16 == 0xFFFE {
			t.Errorf("%08X %s: private, command or item tag in the dictionary", e.Tag, e.Keyword)
		}
	}
	for _, tag := range []uint32{0, 0x00000000, 0x00000100, 0x00090010, 0x00291010, 0x60003000, 0x50003000, 0xFFFEE000, 0xFFFFFFFF, 0x00080002, 0x00100011} {
		if e, ok := ByTag(tag); ok {
			t.Errorf("ByTag(%08X) = %+v, want not found", tag, e)
		}
	}
	for _, kw := range []string{"", "modality", "MODALITY", "Modality ", "RETIRED_LengthToEnd", "OverlayData", "CommandField", "Item", "AAAA", "zzzz"} {
		if e, ok := ByKeyword(kw); ok {
			t.Errorf("ByKeyword(%q) = %+v, want not found", kw, e)
		}
	}
}

// TestVRs checks that every VR is one of PS3.5 6.2, or a choice of them.
func TestVRs(t *testing.T) {
	choices := map[string]int{}
	for _, e := range entries {
		if err := table.CheckVR(e.VR); err != nil {
			t.Errorf("%s: %v", e.Keyword, err)
		}
		if strings.Contains(e.VR, " or ") {
			choices[e.VR]++
		}
	}
	if len(choices) != 4 {
		t.Errorf("VR choices %v, want the four of PS3.6", choices)
	}
}

func BenchmarkByKeyword(b *testing.B) {
	for b.Loop() {
		if _, ok := ByKeyword("StudyDescription"); !ok {
			b.Fatal("not found")
		}
	}
}

func BenchmarkByTag(b *testing.B) {
	for b.Loop() {
		if _, ok := ByTag(0x00081030); !ok {
			b.Fatal("not found")
		}
	}
}
