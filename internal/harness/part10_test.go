package harness

import (
	"bytes"
	"encoding/binary"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

const (
	testSOPClass = "1.2.840.10008.5.1.4.1.1.7"
	testTS       = "1.2.840.10008.1.2.1"
)

func testDataSet(inst string) Elements {
	var e Elements
	e.Str(0x0008, 0x0016, "UI", testSOPClass)
	e.Str(0x0008, 0x0018, "UI", inst)
	e.Str(0x0010, 0x0010, "PN", "HARNESS^TEST")
	return e
}

// TestPart10Header checks the layout of PS3.10 7.1: 128 zero bytes, "DICM",
// (0002,0000) UL whose value is the length of the rest of the group.
func TestPart10Header(t *testing.T) {
	h := Part10Header(FileMeta{MediaStorageSOPClassUID: testSOPClass, MediaStorageSOPInstanceUID: "1.2.3", TransferSyntaxUID: testTS})
	if !bytes.Equal(h[:128], make([]byte, 128)) || string(h[128:132]) != "DICM" {
		t.Fatalf("no zero preamble and DICM: % X", h[:136])
	}
	if !bytes.Equal(h[132:140], []byte{0x02, 0x00, 0x00, 0x00, 'U', 'L', 4, 0}) {
		t.Fatalf("group length element header: % X", h[132:140])
	}
	if gl := binary.LittleEndian.Uint32(h[140:]); int(gl) != len(h)-144 {
		t.Errorf("group length %d, the group after it is %d bytes", gl, len(h)-144)
	}
	if !bytes.Contains(h, []byte(ImplementationClassUID)) {
		t.Error("no default implementation class UID")
	}
	if bytes.Contains(h, []byte{0x02, 0x00, 0x13, 0x00}) {
		t.Error("(0002,0013) written although no version name was given")
	}
}

// TestWritePart10RoundTrip writes files and reads them back with
// ReadFileMeta, DataSetOffset and DataSet.
func TestWritePart10RoundTrip(t *testing.T) {
	dir := t.TempDir()
	inst := NewUID()
	ds := testDataSet(inst)
	m := FileMeta{
		MediaStorageSOPClassUID:    testSOPClass,
		MediaStorageSOPInstanceUID: inst,
		TransferSyntaxUID:          testTS,
		ImplementationClassUID:     "1.2.3.4",
		ImplementationVersionName:  "HARNESS",
	}
	path := filepath.Join(dir, "small.dcm")
	size, err := WritePart10(path, m, ds, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Size() != size {
		t.Fatalf("file size %v (%v), WritePart10 said %d", fi.Size(), err, size)
	}
	got, err := ReadFileMeta(path)
	if err != nil || got != m {
		t.Errorf("ReadFileMeta = %+v, %v; want %+v", got, err, m)
	}
	if off, err := DataSetOffset(path); err != nil || off != int64(len(Part10Header(m))) {
		t.Errorf("DataSetOffset = %d, %v; want %d", off, err, len(Part10Header(m)))
	}
	if b, err := DataSet(path); err != nil || !bytes.Equal(b, ds) {
		t.Errorf("DataSet = % X, %v; want % X", b, err, []byte(ds))
	}

	// A data set whose last value comes from a reader, and one left as a
	// hole.
	head := append(Elements(nil), ds...)
	head.Header(0x7FE0, 0x0010, "OW", 6)
	zeros := append(append([]byte(nil), head...), 0, 0, 0, 0, 0, 0)
	for _, tc := range []struct {
		name string
		rest io.Reader
		want []byte
	}{
		{"from a reader", strings.NewReader("pixels and more"), append(append([]byte(nil), head...), "pixels"...)},
		{"as a hole", nil, zeros},
	} {
		path := filepath.Join(dir, "rest.dcm")
		if _, err := WritePart10(path, m, head, 6, tc.rest); err != nil {
			t.Fatal(err)
		}
		if b, err := DataSet(path); err != nil || !bytes.Equal(b, tc.want) {
			t.Errorf("%s: DataSet = % X, %v; want % X", tc.name, b, err, tc.want)
		}
	}
}

// TestReadFileMetaRaw: a file without "DICM" is a raw data set.
func TestReadFileMetaRaw(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string][]byte{"raw": testDataSet("1.2.3"), "empty": nil, "short": []byte("DICM")} {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, content, 0o644); err != nil {
			t.Fatal(err)
		}
		fm, err := ReadFileMeta(path)
		off, err2 := DataSetOffset(path)
		if fm != (FileMeta{}) || off != 0 || err != nil || err2 != nil {
			t.Errorf("%s: meta %+v offset %d (%v, %v); want none, 0", name, fm, off, err, err2)
		}
	}
	// A meta group and no data set at all.
	path := filepath.Join(dir, "meta-only")
	m := FileMeta{MediaStorageSOPClassUID: testSOPClass, MediaStorageSOPInstanceUID: "1.2.3", TransferSyntaxUID: testTS}
	if _, err := WritePart10(path, m, nil, 0, nil); err != nil {
		t.Fatal(err)
	}
	if off, err := DataSetOffset(path); err != nil || off != int64(len(Part10Header(m))) {
		t.Errorf("meta only: DataSetOffset = %d, %v", off, err)
	}
}

// TestWritePart10Dcmdump has dcmtk parse what WritePart10 writes, when
// dcmtk is installed (the conformance tests and the benchmark require it).
func TestWritePart10Dcmdump(t *testing.T) {
	dcmdump, err := exec.LookPath("dcmdump")
	if err != nil {
		t.Skip("dcmdump not installed")
	}
	inst := NewUID()
	path := filepath.Join(t.TempDir(), "obj.dcm")
	m := FileMeta{MediaStorageSOPClassUID: testSOPClass, MediaStorageSOPInstanceUID: inst, TransferSyntaxUID: testTS}
	if _, err := WritePart10(path, m, testDataSet(inst), 0, nil); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(dcmdump, path).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "(0008,0018) UI ["+inst+"]") || strings.Contains(string(out), "W: ") {
		t.Errorf("dcmdump %s: %v\n%s", path, err, out)
	}
}

func TestNewUID(t *testing.T) {
	a, b := NewUID(), NewUID()
	if a == b || !strings.HasPrefix(a, "2.25.") || len(a) > 64 {
		t.Errorf("NewUID gave %q and %q", a, b)
	}
}

// TestParsePart10 splits a Part 10 file held in memory, and a raw data
// set, into file meta and data set.
func TestParsePart10(t *testing.T) {
	inst := NewUID()
	ds := testDataSet(inst)
	m := FileMeta{MediaStorageSOPClassUID: testSOPClass, MediaStorageSOPInstanceUID: inst, TransferSyntaxUID: testTS}
	fm, got, err := ParsePart10(append(Part10Header(m), ds...))
	if err != nil || !bytes.Equal(got, ds) {
		t.Fatalf("ParsePart10 = data set of %d bytes, %v; want the %d bytes written", len(got), err, len(ds))
	}
	if fm.MediaStorageSOPInstanceUID != inst || fm.TransferSyntaxUID != testTS || fm.ImplementationClassUID != ImplementationClassUID {
		t.Errorf("ParsePart10 meta = %+v", fm)
	}
	if fm, got, err := ParsePart10(ds); err != nil || fm != (FileMeta{}) || !bytes.Equal(got, ds) {
		t.Errorf("raw data set: meta %+v, %d bytes, %v", fm, len(got), err)
	}
	if _, _, err := ParsePart10(Part10Header(m)[:150]); err == nil {
		t.Error("a meta group cut short parsed without error")
	}
}
