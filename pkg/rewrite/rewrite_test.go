package rewrite

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/suyashkumar/dicom"
	"github.com/suyashkumar/dicom/pkg/tag"

	"github.com/dicomgw/dicomgw/internal/harness"
)

var (
	sponsor  = Stamp{Tag: 0x00120010, VR: "LO", Value: []byte("KAAPANA ")}
	protocol = Stamp{Tag: 0x00120020, VR: "LO", Value: []byte("PROJ-42 ")}
	// A tag every object has: replaced, not added.
	institution = Stamp{Tag: 0x00080080, VR: "LO", Value: []byte("RESEARCH")}
)

// parse reads a Part 10 file with the oracle, panics as errors.
func parse(file []byte) (ds dicom.Dataset, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = errors.New("oracle panicked")
		}
	}()
	return dicom.Parse(bytes.NewReader(file), int64(len(file)), nil, dicom.SkipPixelData())
}

// topLevel lists the top-level tags of a data set, as the oracle sees them.
func topLevel(ds dicom.Dataset) map[tag.Tag]string {
	out := map[tag.Tag]string{}
	for _, e := range ds.Elements {
		if e.Tag.Group == 0x0002 || e.Tag.Element == 0x0000 {
			continue
		}
		out[e.Tag] = e.Value.String()
	}
	return out
}

// TestStampCorpus: every well-formed corpus file, stamped, is read by the
// oracle (github.com/suyashkumar/dicom) with the stamped values and every
// other top-level element as it was, and by dcmtk's dcmdump without an
// error; Size says exactly how long the copy is; without stamps the copy is
// byte for byte the original.
func TestStampCorpus(t *testing.T) {
	files, err := harness.Corpus()
	if err != nil {
		t.Skipf("corpus: %v", err)
	}
	dcmdump, _ := exec.LookPath("dcmdump")
	compared := 0
	for _, cf := range files {
		if !cf.HasPart10 || strings.Contains(cf.Name, "malformed") {
			continue
		}
		t.Run(cf.Name, func(t *testing.T) {
			file, err := os.ReadFile(cf.Path)
			if err != nil {
				t.Fatal(err)
			}
			off, err := harness.DataSetOffset(cf.Path)
			if err != nil {
				t.Fatal(err)
			}
			ds := file[off:]
			plain, err := New(cf.TransferSyntaxUID, nil)
			if err != nil {
				t.Skipf("transfer syntax %s: %v", cf.TransferSyntaxUID, err)
			}
			var same bytes.Buffer
			if err := plain.Copy(&same, bytes.NewReader(ds)); err != nil {
				t.Fatalf("copy without stamps: %v", err)
			}
			if cf.TransferSyntaxUID != "1.2.840.10008.1.2.1.99" && !bytes.Equal(same.Bytes(), ds) {
				t.Fatalf("a copy without stamps differs from the original")
			}
			rw, err := New(cf.TransferSyntaxUID, []Stamp{protocol, institution, sponsor})
			if err != nil {
				t.Fatal(err)
			}
			var out bytes.Buffer
			if err := rw.Copy(&out, bytes.NewReader(ds)); err != nil {
				t.Fatalf("stamping: %v", err)
			}
			if n, err := rw.Size(bytes.NewReader(ds)); err != nil || n != int64(out.Len()) {
				t.Fatalf("Size %d %v, the copy has %d bytes", n, err, out.Len())
			}
			stampedFile := append(bytes.Clone(file[:off]), out.Bytes()...)
			orig, oerr := parse(file)
			got, err := parse(stampedFile)
			if oerr != nil {
				// The oracle cannot read a few corpus files at all
				// (pkg/dcmhead's oracle test lists them); dcmdump still can.
				t.Logf("oracle cannot read the original: %v", oerr)
			} else {
				if err != nil {
					t.Fatalf("oracle cannot read the stamped copy: %v", err)
				}
				want, have := topLevel(orig), topLevel(got)
				for _, s := range []Stamp{sponsor, protocol, institution} {
					tg := tag.Tag{Group: uint16(s.Tag >> 16), Element: uint16(s.Tag)}
					if v := have[tg]; !strings.Contains(v, strings.TrimSpace(string(s.Value))) {
						t.Errorf("%v: %q after stamping, want %q", tg, v, s.Value)
					}
					delete(want, tg)
					delete(have, tg)
				}
				for tg, v := range want {
					if have[tg] != v {
						t.Errorf("%v changed: %.80q -> %.80q", tg, v, have[tg])
					}
				}
				if len(have) != len(want) {
					t.Errorf("%d top-level elements after stamping, want %d", len(have), len(want))
				}
				compared++
			}
			if dcmdump != "" {
				path := filepath.Join(t.TempDir(), "stamped.dcm")
				if err := os.WriteFile(path, stampedFile, 0o600); err != nil {
					t.Fatal(err)
				}
				b, err := exec.Command(dcmdump, "+L", "-M", path).CombinedOutput()
				if err != nil || bytes.Contains(b, []byte("E: ")) || !bytes.Contains(b, []byte("KAAPANA")) || !bytes.Contains(b, []byte("RESEARCH")) {
					t.Errorf("dcmdump of the stamped copy: %v\n%s", err, tail(b))
				}
			}
		})
	}
	if compared < 40 {
		t.Errorf("the oracle compared only %d files", compared)
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

// TestStampBigEndianAndNested pins the bytes of a stamp put into Explicit
// VR Big Endian, before, between and after elements, past an
// undefined-length sequence with an undefined-length item.
func TestStampBigEndianAndNested(t *testing.T) {
	be := []byte{
		0x00, 0x08, 0x00, 0x60, 'C', 'S', 0x00, 0x02, 'C', 'T', // (0008,0060) CS "CT"
		0x00, 0x08, 0x11, 0x40, 'S', 'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF, // (0008,1140) SQ undefined
		0xFF, 0xFE, 0xE0, 0x00, 0xFF, 0xFF, 0xFF, 0xFF, // item, undefined
		0x00, 0x08, 0x11, 0x50, 'U', 'I', 0x00, 0x02, '1', 0, // (0008,1150) UI "1"
		0xFF, 0xFE, 0xE0, 0x0D, 0, 0, 0, 0, // item delimiter
		0xFF, 0xFE, 0xE0, 0xDD, 0, 0, 0, 0, // sequence delimiter
		0x00, 0x20, 0x00, 0x10, 'S', 'H', 0x00, 0x02, 'S', '1', // (0020,0010) SH "S1"
	}
	rw, err := New("1.2.840.10008.1.2.2", []Stamp{{Tag: 0x00100010, VR: "PN", Value: []byte("A^B ")}, {Tag: 0x00400000 | 0x0254, VR: "LO", Value: []byte("XY")}})
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	if err := rw.Copy(&out, bytes.NewReader(be)); err != nil {
		t.Fatal(err)
	}
	want := append(append(append(bytes.Clone(be[:len(be)-10]),
		0x00, 0x10, 0x00, 0x10, 'P', 'N', 0x00, 0x04, 'A', '^', 'B', ' '), be[len(be)-10:]...),
		0x00, 0x40, 0x02, 0x54, 'L', 'O', 0x00, 0x02, 'X', 'Y')
	if !bytes.Equal(out.Bytes(), want) {
		t.Fatalf("\n got %x\nwant %x", out.Bytes(), want)
	}
}

// TestRewriteErrors: a truncated data set, an item at the top level and a
// sequence never closed are errors wrapping ErrMalformed, whatever the cut.
func TestRewriteErrors(t *testing.T) {
	ds := []byte{
		0x08, 0x00, 0x60, 0x00, 'C', 'S', 0x02, 0x00, 'C', 'T',
		0x08, 0x00, 0x40, 0x11, 'S', 'Q', 0, 0, 0xFF, 0xFF, 0xFF, 0xFF,
		0xFE, 0xFF, 0x00, 0xE0, 0xFF, 0xFF, 0xFF, 0xFF,
		0x08, 0x00, 0x50, 0x11, 'U', 'I', 0x02, 0x00, '1', 0,
		0xFE, 0xFF, 0x0D, 0xE0, 0, 0, 0, 0,
		0xFE, 0xFF, 0xDD, 0xE0, 0, 0, 0, 0,
	}
	rw, err := New("1.2.840.10008.1.2.1", []Stamp{sponsor})
	if err != nil {
		t.Fatal(err)
	}
	if err := rw.Copy(io.Discard, bytes.NewReader(ds)); err != nil {
		t.Fatalf("whole: %v", err)
	}
	for n := 1; n < len(ds); n++ {
		err := rw.Copy(io.Discard, bytes.NewReader(ds[:n]))
		if n == 10 || n == len(ds) {
			continue // element boundaries: a shorter data set, but well formed
		}
		if !errors.Is(err, ErrMalformed) {
			t.Errorf("cut at %d: %v, want ErrMalformed", n, err)
		}
	}
	if err := rw.Copy(io.Discard, bytes.NewReader(ds[22:])); !errors.Is(err, ErrMalformed) {
		t.Errorf("an item at the top level: %v", err)
	}
	for _, bad := range [][]Stamp{
		{{Tag: 0x00020010, VR: "UI", Value: []byte("12")}},
		{{Tag: 0x00080000, VR: "UL", Value: []byte("1234")}},
		{{Tag: 0x00100010, VR: "PN", Value: []byte("ABC")}},
		{sponsor, sponsor},
	} {
		if _, err := New("1.2.840.10008.1.2.1", bad); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}

// TestOpenCloses: the streaming reader gives the same bytes as Copy, and
// closing it early ends its goroutine and closes the source.
func TestOpenCloses(t *testing.T) {
	ds := bytes.Repeat([]byte{0x09, 0x00, 0x10, 0x10, 'O', 'B', 0, 0, 0x00, 0x00, 0x01, 0x00}, 1)
	ds = append(ds, make([]byte, 1<<16)...)
	rw, _ := New("1.2.840.10008.1.2.1", []Stamp{sponsor})
	src := &closeRecorder{Reader: bytes.NewReader(ds)}
	r := rw.Open(src)
	got, err := io.ReadAll(r)
	if err != nil {
		t.Fatal(err)
	}
	var want bytes.Buffer
	rw.Copy(&want, bytes.NewReader(ds))
	if !bytes.Equal(got, want.Bytes()) {
		t.Fatal("Open and Copy differ")
	}
	r.Close()
	if !src.closed {
		t.Fatal("source not closed")
	}
	src = &closeRecorder{Reader: bytes.NewReader(ds)}
	r = rw.Open(src)
	r.Read(make([]byte, 10))
	r.Close() // before the end: the writer goroutine must not hang
	if !src.closed {
		t.Fatal("source not closed after an early Close")
	}
}

type closeRecorder struct {
	io.Reader
	closed bool
}

func (c *closeRecorder) Close() error { c.closed = true; return nil }
