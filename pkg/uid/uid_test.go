package uid

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/dicomgw/dicomgw/pkg/uid/internal/registry"
)

// TestTableInSync regenerates table_gen.go from registry.tsv in memory: if it
// fails, registry.tsv was edited without running "go generate ./pkg/uid" (or
// table_gen.go was edited by hand).
func TestTableInSync(t *testing.T) {
	f, err := os.Open("registry.tsv")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	want, err := registry.Generate(f)
	if err != nil {
		t.Fatalf("registry.tsv: %v", err)
	}
	got, err := os.ReadFile("table_gen.go")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("table_gen.go is out of date with registry.tsv; run: go generate ./pkg/uid")
	}
}

func TestValid(t *testing.T) {
	uid64 := "1." + strings.Repeat("2", 62)
	uid65 := uid64 + "3"
	if len(uid64) != 64 || len(uid65) != 65 {
		t.Fatal("bad test setup")
	}
	tests := []struct {
		in   string
		want string // substring of the error; "" for valid
	}{
		{"1", ""},
		{"0", ""},
		{"1.2", ""},
		{"1.2.840.10008.5.1.4.1.1.2", ""},
		{"1.2.0.3", ""},
		{uid64, ""},
		{"1.02", ""},         // leading zero: technically invalid, accepted (see Valid)
		{"1.2.840.0001", ""}, // likewise
		{"", "empty"},
		{uid65, "65 characters long"},
		{strings.Repeat("1", 1000), "1000 characters long"},
		{"1..2", "empty component"},
		{"1.2..", "ends with '.'"},
		{".1", "starts with '.'"},
		{".", "starts with '.'"},
		{"1.", "ends with '.'"},
		{"1.2.a", "'a' at offset 4"},
		{"abc", "'a' at offset 0"},
		{"../../x", "'/' at offset 2"},
		{"1.2\x00", `'\x00' at offset 3`},
		{" 1.2", "' ' at offset 0"},
		{"1.2 ", "' ' at offset 3"},
		{"1,2", "',' at offset 1"},
		{"-1", "'-' at offset 0"},
		{"1.2.840.10008.1.2.4.50\n", `'\n' at offset`},
	}
	for _, tt := range tests {
		err := Valid(tt.in)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("Valid(%q) = %v, want nil", tt.in, err)
		case tt.want != "" && err == nil:
			t.Errorf("Valid(%q) = nil, want error containing %q", tt.in, tt.want)
		case tt.want != "" && !strings.Contains(err.Error(), tt.want):
			t.Errorf("Valid(%q) = %q, want error containing %q", tt.in, err, tt.want)
		case err != nil && !errors.Is(err, ErrInvalid):
			t.Errorf("Valid(%q) = %v, does not wrap ErrInvalid", tt.in, err)
		}
	}
}

func TestValidLongErrorDoesNotEchoValue(t *testing.T) {
	err := Valid(strings.Repeat("9", 10000))
	if err == nil || len(err.Error()) > 200 {
		t.Fatalf("Valid(10000 digits) = %v", err)
	}
}

func TestTrim(t *testing.T) {
	tests := []struct{ in, want string }{
		{"1.2.840.10008.1.2", "1.2.840.10008.1.2"},
		{"1.2.840.10008.1.2\x00", "1.2.840.10008.1.2"},
		{"1.2\x00\x00", "1.2"},
		{"1.2 ", "1.2"},
		{"1.2 \x00", "1.2"},
		{"1.2\x00 ", "1.2"},
		{" 1.2", "1.2"},
		{"  1.2 \x00", "1.2"},
		{"", ""},
		{"\x00", ""},
		{"   ", ""},
		{"1.2\x003", "1.2\x003"}, // inner NUL stays, for Valid to reject
		{"\x001.2", "\x001.2"},   // leading NUL is not padding
	}
	for _, tt := range tests {
		if got := Trim(tt.in); got != tt.want {
			t.Errorf("Trim(%q) = %q, want %q", tt.in, got, tt.want)
		}
	}
}

// corpusSOPClasses are the SOP Classes of the repository's test corpus.
var corpusSOPClasses = []string{
	"1.2.840.10008.5.1.4.1.1.3.1", // Ultrasound Multi-frame Image Storage
	"1.2.840.10008.5.1.4.1.1.91.1",
	"1.2.840.10008.5.1.4.1.1.77.1.6",
	"1.2.840.10008.5.1.4.1.1.30",
	"1.2.840.10008.5.1.4.1.1.66.4",
	"1.2.840.10008.5.1.4.1.1.66.7", // Label Map Segmentation Storage
	"1.2.840.10008.5.1.4.1.1.481.8",
	"1.2.840.10008.5.1.4.1.1.9.1.1",
	"1.2.840.10008.5.1.4.1.1.88.11",
	"1.2.840.10008.5.1.4.1.1.88.33",
	"1.2.840.10008.5.1.4.1.1.128",
	"1.2.840.10008.5.1.4.1.1.2.1",
	"1.2.840.10008.5.1.4.1.1.4.1",
	"1.2.840.10008.5.1.4.1.1.1.1",
	"1.2.840.10008.5.1.4.1.1.12.1",
}

func TestCorpusSOPClasses(t *testing.T) {
	for _, u := range corpusSOPClasses {
		if !IsStorageSOPClass(u) {
			t.Errorf("IsStorageSOPClass(%s) = false", u)
		}
		e, ok := Lookup(u)
		if !ok || e.Kind != KindStorage || e.UID != u || e.Name == "" || e.Keyword == "" {
			t.Errorf("Lookup(%s) = %+v, %v", u, e, ok)
		}
	}
}

func TestStorageEntries(t *testing.T) {
	tests := []struct {
		uid, keyword string
		retired      bool
	}{
		{"1.2.840.10008.5.1.4.1.1.3", "UltrasoundMultiFrameImageStorageRetired", true},
		{"1.2.840.10008.5.1.4.1.1.3.1", "UltrasoundMultiFrameImageStorage", false},
		{"1.2.840.10008.5.1.4.1.1.66.7", "LabelMapSegmentationStorage", false},
		{"1.2.840.10008.5.1.4.1.1.2", "CTImageStorage", false},
		{"1.2.840.10008.5.1.4.1.1.7", "SecondaryCaptureImageStorage", false},
		{"1.2.840.10008.5.1.4.1.1.104.1", "EncapsulatedPDFStorage", false},
		{"1.2.840.10008.5.1.1.27", "StoredPrintStorage", true},
		{"1.2.840.10008.5.1.4.1.1.88.1", "TextSRStorageTrial", true},
		// Non-patient objects (PS3.4 GG) and the RT second generation.
		{"1.2.840.10008.5.1.4.38.1", "HangingProtocolStorage", false},
		{"1.2.840.10008.5.1.4.39.1", "ColorPaletteStorage", false},
		{"1.2.840.10008.5.1.4.43.1", "GenericImplantTemplateStorage", false},
		{"1.2.840.10008.5.1.4.44.1", "ImplantAssemblyTemplateStorage", false},
		{"1.2.840.10008.5.1.4.45.1", "ImplantTemplateGroupStorage", false},
		{"1.2.840.10008.5.1.4.1.1.200.1", "CTDefinedProcedureProtocolStorage", false},
		{"1.2.840.10008.5.1.4.1.1.200.3", "ProtocolApprovalStorage", false},
		{"1.2.840.10008.5.1.4.1.1.201.1", "InventoryStorage", false},
		{"1.2.840.10008.5.1.4.34.7", "RTBeamsDeliveryInstructionStorage", false},
		// DICOS and DICONDE.
		{"1.2.840.10008.5.1.4.1.1.501.1", "DICOSCTImageStorage", false},
		{"1.2.840.10008.5.1.4.1.1.601.1", "EddyCurrentImageStorage", false},
	}
	for _, tt := range tests {
		e, ok := Lookup(tt.uid)
		if !ok || e.Kind != KindStorage || e.Keyword != tt.keyword || e.Retired != tt.retired {
			t.Errorf("Lookup(%s) = %+v, %v; want storage %s retired=%v", tt.uid, e, ok, tt.keyword, tt.retired)
		}
	}
}

func TestNotStorage(t *testing.T) {
	// UIDs with "Storage" in their PS3.6 name that are not C-STORE-able
	// objects, and other SOP classes a storage SCP must not accept for C-STORE.
	for _, u := range []string{
		"1.2.840.10008.1.20.1",            // Storage Commitment Push Model SOP Class
		"1.2.840.10008.1.20.1.1",          // Storage Commitment Push Model SOP Instance
		"1.2.840.10008.1.20.2",            // Storage Commitment Pull Model SOP Class
		"1.2.840.10008.1.3.10",            // Media Storage Directory Storage (DICOMDIR)
		"1.2.840.10008.4.2",               // Storage Service Class
		"1.2.840.10008.5.1.4.1.1.201.1.1", // Storage Management SOP Instance
		"1.2.840.10008.5.1.4.1.1.201.5",   // Inventory Creation
		"1.2.840.10008.5.1.4.1.2.2.1",     // Study Root Q/R - FIND
		Verification,
		ApplicationContext,
		ImplicitVRLittleEndian,
		"",
		"1.2.3.4",
	} {
		if IsStorageSOPClass(u) {
			t.Errorf("IsStorageSOPClass(%q) = true", u)
		}
	}
	for _, e := range StorageSOPClasses() {
		if e.Kind != KindStorage {
			t.Errorf("%s: kind %v in StorageSOPClasses", e.UID, e.Kind)
		}
		if !strings.Contains(e.Name, "Storage") {
			t.Errorf("%s: name %q lacks \"Storage\"", e.UID, e.Name)
		}
		for _, bad := range []string{"Storage Commitment", "Media Storage Directory", "Storage Management", "Service Class"} {
			if strings.Contains(e.Name, bad) {
				t.Errorf("%s: %q is not a C-STORE-able SOP class", e.UID, e.Name)
			}
		}
		if strings.HasPrefix(e.UID, "1.2.840.10008.1.20.") || e.UID == "1.2.840.10008.1.3.10" {
			t.Errorf("%s is a Storage Commitment / Media Storage Directory UID", e.UID)
		}
	}
}

func TestTransferSyntaxes(t *testing.T) {
	const (
		ile = EncodingImplicitVRLittleEndian
		ele = EncodingExplicitVRLittleEndian
		ebe = EncodingExplicitVRBigEndian
		dle = EncodingDeflatedExplicitVRLittleEndian
	)
	tests := []struct {
		uid          string
		enc          Encoding
		encapsulated bool
		retired      bool
	}{
		{ImplicitVRLittleEndian, ile, false, false},
		{ExplicitVRLittleEndian, ele, false, false},
		{DeflatedExplicitVRLittleEndian, dle, false, false},
		{ExplicitVRBigEndian, ebe, false, true},
		{"1.2.840.10008.1.2.1.98", ele, true, false}, // Encapsulated Uncompressed
		// JPEG
		{"1.2.840.10008.1.2.4.50", ele, true, false},
		{"1.2.840.10008.1.2.4.51", ele, true, false},
		{"1.2.840.10008.1.2.4.52", ele, true, true},
		{"1.2.840.10008.1.2.4.53", ele, true, true},
		{"1.2.840.10008.1.2.4.54", ele, true, true},
		{"1.2.840.10008.1.2.4.55", ele, true, true},
		{"1.2.840.10008.1.2.4.56", ele, true, true},
		{"1.2.840.10008.1.2.4.57", ele, true, false},
		{"1.2.840.10008.1.2.4.58", ele, true, true},
		{"1.2.840.10008.1.2.4.59", ele, true, true},
		{"1.2.840.10008.1.2.4.60", ele, true, true},
		{"1.2.840.10008.1.2.4.61", ele, true, true},
		{"1.2.840.10008.1.2.4.62", ele, true, true},
		{"1.2.840.10008.1.2.4.63", ele, true, true},
		{"1.2.840.10008.1.2.4.64", ele, true, true},
		{"1.2.840.10008.1.2.4.65", ele, true, true},
		{"1.2.840.10008.1.2.4.66", ele, true, true},
		{"1.2.840.10008.1.2.4.70", ele, true, false},
		// JPEG-LS
		{"1.2.840.10008.1.2.4.80", ele, true, false},
		{"1.2.840.10008.1.2.4.81", ele, true, false},
		// JPEG 2000
		{"1.2.840.10008.1.2.4.90", ele, true, false},
		{"1.2.840.10008.1.2.4.91", ele, true, false},
		{"1.2.840.10008.1.2.4.92", ele, true, false},
		{"1.2.840.10008.1.2.4.93", ele, true, false},
		// JPIP: Pixel Data referenced, not in the data set.
		{"1.2.840.10008.1.2.4.94", ele, false, false},
		{"1.2.840.10008.1.2.4.95", dle, false, false},
		{"1.2.840.10008.1.2.4.204", ele, false, false},
		{"1.2.840.10008.1.2.4.205", dle, false, false},
		// MPEG2, MPEG-4 AVC/H.264, HEVC/H.265
		{"1.2.840.10008.1.2.4.100", ele, true, false},
		{"1.2.840.10008.1.2.4.100.1", ele, true, false},
		{"1.2.840.10008.1.2.4.101", ele, true, false},
		{"1.2.840.10008.1.2.4.101.1", ele, true, false},
		{"1.2.840.10008.1.2.4.102", ele, true, false},
		{"1.2.840.10008.1.2.4.102.1", ele, true, false},
		{"1.2.840.10008.1.2.4.103", ele, true, false},
		{"1.2.840.10008.1.2.4.103.1", ele, true, false},
		{"1.2.840.10008.1.2.4.104", ele, true, false},
		{"1.2.840.10008.1.2.4.104.1", ele, true, false},
		{"1.2.840.10008.1.2.4.105", ele, true, false},
		{"1.2.840.10008.1.2.4.105.1", ele, true, false},
		{"1.2.840.10008.1.2.4.106", ele, true, false},
		{"1.2.840.10008.1.2.4.106.1", ele, true, false},
		{"1.2.840.10008.1.2.4.107", ele, true, false},
		{"1.2.840.10008.1.2.4.108", ele, true, false},
		// JPEG XL
		{"1.2.840.10008.1.2.4.110", ele, true, false},
		{"1.2.840.10008.1.2.4.111", ele, true, false},
		{"1.2.840.10008.1.2.4.112", ele, true, false},
		// HTJ2K
		{"1.2.840.10008.1.2.4.201", ele, true, false},
		{"1.2.840.10008.1.2.4.202", ele, true, false},
		{"1.2.840.10008.1.2.4.203", ele, true, false},
		// RLE
		{"1.2.840.10008.1.2.5", ele, true, false},
		// Retired media-only pseudo syntaxes
		{"1.2.840.10008.1.2.6.1", ele, false, true},
		{"1.2.840.10008.1.2.6.2", ele, false, true},
		// SMPTE ST 2110 (DICOM-RTV)
		{"1.2.840.10008.1.2.7.1", ele, false, false},
		{"1.2.840.10008.1.2.7.2", ele, false, false},
		{"1.2.840.10008.1.2.7.3", ele, false, false},
		// Deflated Image Frame Compression
		{"1.2.840.10008.1.2.8.1", ele, true, false},
		// Papyrus 3 (retired)
		{"1.2.840.10008.1.20", ile, false, true},
	}
	for _, tt := range tests {
		ts, ok := LookupTransferSyntax(tt.uid)
		if !ok {
			t.Errorf("LookupTransferSyntax(%s): not found", tt.uid)
			continue
		}
		if ts.UID != tt.uid || ts.Kind != KindTransferSyntax || ts.Encoding != tt.enc ||
			ts.Encapsulated != tt.encapsulated || ts.Retired != tt.retired || ts.Name == "" || ts.Keyword == "" {
			t.Errorf("LookupTransferSyntax(%s) = %+v; want encoding %v, encapsulated %v, retired %v",
				tt.uid, ts, tt.enc, tt.encapsulated, tt.retired)
		}
		if e, ok := Lookup(tt.uid); !ok || e != ts.Entry {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", tt.uid, e, ok, ts.Entry)
		}
	}
	// Every transfer syntax of the table is covered above.
	if n := len(TransferSyntaxes()); n != len(tests) {
		t.Errorf("%d transfer syntaxes in the table, %d checked here", n, len(tests))
	}
	for _, u := range []string{Verification, "1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.1.2.4", "1.2.840.113619.5.2", ""} {
		if ts, ok := LookupTransferSyntax(u); ok {
			t.Errorf("LookupTransferSyntax(%q) = %+v", u, ts)
		}
	}
}

func TestOtherEntries(t *testing.T) {
	for _, tt := range []struct {
		uid  string
		kind Kind
	}{
		{Verification, KindVerification},
		{ApplicationContext, KindApplicationContext},
	} {
		e, ok := Lookup(tt.uid)
		if !ok || e.Kind != tt.kind || e.Retired {
			t.Errorf("Lookup(%s) = %+v, %v; want kind %v", tt.uid, e, ok, tt.kind)
		}
	}
	if _, ok := Lookup("1.2.3"); ok {
		t.Error("Lookup(1.2.3) found an entry")
	}
}

func TestListsSortedAndCopied(t *testing.T) {
	sc := StorageSOPClasses()
	if len(sc) < 200 {
		t.Fatalf("only %d storage SOP classes", len(sc))
	}
	if !slices.IsSortedFunc(sc, func(a, b Entry) int { return registry.CompareUIDs(a.UID, b.UID) }) {
		t.Error("StorageSOPClasses not sorted by UID")
	}
	ts := TransferSyntaxes()
	if !slices.IsSortedFunc(ts, func(a, b TransferSyntax) int { return registry.CompareUIDs(a.UID, b.UID) }) {
		t.Error("TransferSyntaxes not sorted by UID")
	}
	first := sc[0]
	sc[0].UID = "changed"
	ts[0].Encoding = 0
	if StorageSOPClasses()[0] != first || TransferSyntaxes()[0].Encoding == 0 {
		t.Error("callers can modify the registry through the returned slices")
	}
}

func TestEntriesWellFormed(t *testing.T) {
	var all []Entry
	all = append(all, StorageSOPClasses()...)
	for _, ts := range TransferSyntaxes() {
		all = append(all, ts.Entry)
	}
	all = append(all, otherEntries...)
	for _, e := range all {
		if err := Valid(e.UID); err != nil {
			t.Errorf("%s: %v", e.UID, err)
		}
		if e.Name == "" || e.Keyword == "" || strings.Contains(e.Name, "(Retired)") {
			t.Errorf("%s: bad name/keyword %q / %q", e.UID, e.Name, e.Keyword)
		}
		if got, ok := Lookup(e.UID); !ok || got != e {
			t.Errorf("Lookup(%s) = %+v, %v; want %+v", e.UID, got, ok, e)
		}
	}
	if len(all) != len(entries) {
		t.Errorf("%d entries listed, %d indexed", len(all), len(entries))
	}
}

func TestStrings(t *testing.T) {
	for _, tt := range []struct{ got, want string }{
		{KindStorage.String(), "storage"},
		{KindTransferSyntax.String(), "transfer-syntax"},
		{KindVerification.String(), "verification"},
		{KindApplicationContext.String(), "application-context"},
		{Kind(0).String(), "Kind(0)"},
		{EncodingImplicitVRLittleEndian.String(), "implicit-le"},
		{EncodingExplicitVRLittleEndian.String(), "explicit-le"},
		{EncodingExplicitVRBigEndian.String(), "explicit-be"},
		{EncodingDeflatedExplicitVRLittleEndian.String(), "deflated-explicit-le"},
		{Encoding(9).String(), "Encoding(9)"},
	} {
		if tt.got != tt.want {
			t.Errorf("got %q, want %q", tt.got, tt.want)
		}
	}
}
