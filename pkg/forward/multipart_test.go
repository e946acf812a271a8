package forward

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"mime/multipart"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
)

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// The exact bytes of a two-part body (RFC 2046 5.1.1: no CRLF before the
// first delimiter, CRLF before each next one, "--" after the last).
func TestMultipartBodyGolden(t *testing.T) {
	f1 := writeFile(t, "a", "xxxxDATA-ONEyyyy")
	f2 := writeFile(t, "b", "DATA2")
	parts := []part{
		{header: []byte("HDR1"), open: fileOpener(f1, 4, 8), n: 8},
		{header: []byte("H2"), open: fileOpener(f2, 0, 5), n: 5},
	}
	const golden = "--BOUNDARY\r\nContent-Type: application/dicom\r\n\r\nHDR1DATA-ONE" +
		"\r\n--BOUNDARY\r\nContent-Type: application/dicom\r\n\r\nH2DATA2" +
		"\r\n--BOUNDARY--\r\n"
	for name, read := range map[string]func(io.Reader) ([]byte, error){
		"ReadAll":   io.ReadAll,
		"OneByte":   func(r io.Reader) ([]byte, error) { return io.ReadAll(iotest.OneByteReader(r)) },
		"HalfReads": func(r io.Reader) ([]byte, error) { return io.ReadAll(iotest.HalfReader(r)) },
	} {
		t.Run(name, func(t *testing.T) {
			b := newMultipartBody("BOUNDARY", parts)
			if b.Len() != len(golden) {
				t.Errorf("Len() = %d, want %d", b.Len(), len(golden))
			}
			got, err := read(b)
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != golden {
				t.Errorf("body\n%q\nwant\n%q", got, golden)
			}
			if b.file != nil {
				t.Error("a spool file is left open after the body was read")
			}
		})
	}
	// A MIME parser reads it back.
	mr := multipart.NewReader(newMultipartBody("BOUNDARY", parts), "BOUNDARY")
	for i, want := range []string{"HDR1DATA-ONE", "H2DATA2"} {
		p, err := mr.NextPart()
		if err != nil {
			t.Fatalf("part %d: %v", i, err)
		}
		got, _ := io.ReadAll(p)
		if string(got) != want || p.Header.Get("Content-Type") != "application/dicom" {
			t.Errorf("part %d: %q (%s), want %q", i, got, p.Header.Get("Content-Type"), want)
		}
	}
	if _, err := mr.NextPart(); err != io.EOF {
		t.Errorf("after the last part: %v", err)
	}
}

// Len is the number of bytes the body produces, for real spool files of
// any size.
func TestMultipartBodyLen(t *testing.T) {
	dir := t.TempDir()
	var parts []part
	for i, n := range []int{0, 1, 2, 1000, 70000, 300000} {
		o := writeObject(t, dir, spec{ID: string(rune('a' + i)), Study: "1.2", Series: "1.2.3", SOP: "1.2.3.4", Pixels: n})
		parts = append(parts, part{header: []byte(strings.Repeat("h", i*7)), open: o.Open, n: o.DataSize})
		b := newMultipartBody(newBoundary(), parts)
		n, err := io.Copy(io.Discard, b)
		if err != nil {
			t.Fatal(err)
		}
		if n != int64(b.Len()) {
			t.Errorf("%d parts: Len() = %d, produced %d bytes", len(parts), b.Len(), n)
		}
	}
}

func TestMultipartBoundaryInPayload(t *testing.T) {
	const boundary = "dicomgw-0123456789abcdef"
	for _, content := range []string{
		"--" + boundary,
		"pixels...\r\n--" + boundary + "\r\nmore",
		strings.Repeat("z", 100000) + "--" + boundary,                             // beyond the first read
		strings.Repeat("z", 32*1024-5) + "--" + boundary + strings.Repeat("z", 9), // across reads
	} {
		p := writeFile(t, "obj", content)
		b := newMultipartBody(boundary, []part{{header: []byte("H"), open: fileOpener(p, 0, int64(len(content))), n: int64(len(content))}})
		_, err := io.ReadAll(b)
		if !errors.Is(err, errBoundaryInPayload) {
			t.Errorf("payload of %d bytes with the delimiter: err %v, want errBoundaryInPayload", len(content), err)
		}
		b.Close()
		if b.file != nil {
			t.Error("Close left the spool file open")
		}
	}
	// The boundary without its leading "--" is no delimiter.
	p := writeFile(t, "ok", "-"+boundary+"\r\n"+boundary)
	if _, err := io.ReadAll(newMultipartBody(boundary, []part{{open: fileOpener(p, 0, int64(2*len(boundary)+3)), n: int64(2*len(boundary) + 3)}})); err != nil {
		t.Errorf("no delimiter, yet %v", err)
	}
}

// TestMultipartDataSetNotAsRecorded: a data set shorter or longer than the
// spool recorded would make the body differ from its Content-Length: the
// body fails with an error wrapping ErrDamaged and records which part.
func TestMultipartDataSetNotAsRecorded(t *testing.T) {
	p := writeFile(t, "data", "0123456789")
	for _, c := range []struct {
		name   string
		n      int64 // recorded
		reader int64 // what the opener yields
		want   string
	}{
		{"shorter", 20, 8, "ends after 8 of the 20 bytes"},
		{"longer", 5, 10, "longer than the 5 bytes"},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newMultipartBody("B", []part{
				{header: []byte("H"), open: fileOpener(p, 0, 3), n: 3},
				{header: []byte("H"), open: fileOpener(p, 0, c.reader), n: c.n},
			})
			_, err := io.ReadAll(b)
			if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("err %v, want ErrDamaged: %s", err, c.want)
			}
			if b.failed == nil || b.failed.index != 1 {
				t.Errorf("failed part %+v, want index 1", b.failed)
			}
		})
	}
	b := newMultipartBody("B", []part{{open: fileOpener(filepath.Join(t.TempDir(), "missing"), 0, 3), n: 3}})
	if _, err := io.ReadAll(b); !errors.Is(err, os.ErrNotExist) || b.failed == nil || errors.Is(b.failed.err, ErrDamaged) {
		t.Errorf("missing spool file: %v (%+v)", err, b.failed)
	}
}

// matches feeds data to a fresh matcher in the pieces cut at splits.
func matches(pat, data []byte, splits ...int) bool {
	m := newMatcher(pat)
	prev := 0
	found := false
	for _, s := range append(splits, len(data)) {
		if m.found(data[prev:s]) {
			found = true
		}
		prev = s
	}
	return found
}

func TestMatcherEverySplit(t *testing.T) {
	pat := []byte("--dicomgw-0123")
	for _, data := range [][]byte{
		[]byte("--dicomgw-0123"),
		[]byte("ab--dicomgw-0123cd"),
		[]byte("---dicomgw-0123"), // a false start just before
		[]byte("--dicomgw-012--dicomgw-0123"),
	} {
		for i := 0; i <= len(data); i++ {
			if !matches(pat, data, i) {
				t.Errorf("%q split at %d: not found", data, i)
			}
			for j := i; j <= len(data); j++ {
				if !matches(pat, data, i, j) {
					t.Errorf("%q split at %d and %d: not found", data, i, j)
				}
			}
		}
		// One byte at a time.
		var splits []int
		for i := 1; i < len(data); i++ {
			splits = append(splits, i)
		}
		if !matches(pat, data, splits...) {
			t.Errorf("%q byte by byte: not found", data)
		}
	}
	for _, data := range [][]byte{
		[]byte("--dicomgw-012"),
		[]byte("--dicomgw-012X--dicomgw-012"),
		[]byte("-dicomgw-0123"),
	} {
		for i := 0; i <= len(data); i++ {
			for j := i; j <= len(data); j++ {
				if matches(pat, data, i, j) {
					t.Errorf("%q split at %d and %d: found a pattern that is not there", data, i, j)
				}
			}
		}
	}
	// reset forgets the previous part: a pattern split across two parts
	// is not one (a fresh header separates them).
	m := newMatcher(pat)
	m.found([]byte("xx--dicomgw-"))
	m.reset()
	if m.found([]byte("0123")) {
		t.Error("match across a reset")
	}
}

func TestMatcherRandomChunks(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	pat := []byte("--ab-ab")
	for range 3000 {
		data := make([]byte, r.IntN(60))
		for i := range data {
			data[i] = "-ab"[r.IntN(3)]
		}
		var splits []int
		for s := 0; s < len(data); s += r.IntN(9) {
			splits = append(splits, s)
		}
		if got, want := matches(pat, data, splits...), bytes.Contains(data, pat); got != want {
			t.Fatalf("%q in pieces at %v: found %v, want %v", data, splits, got, want)
		}
	}
}

func FuzzMatcher(f *testing.F) {
	f.Add([]byte("xx--dicomgw-abc"), uint8(3), uint8(5))
	f.Add([]byte("--dicomgw-ab--dicomgw-abc"), uint8(12), uint8(1))
	f.Fuzz(func(t *testing.T, data []byte, a, b uint8) {
		pat := []byte("--dicomgw-abc")
		i, j := min(int(a), len(data)), min(int(b), len(data))
		if i > j {
			i, j = j, i
		}
		if got, want := matches(pat, data, i, j), bytes.Contains(data, pat); got != want {
			t.Errorf("%q split at %d, %d: found %v, want %v", data, i, j, got, want)
		}
	})
}

func TestNewBoundary(t *testing.T) {
	a, b := newBoundary(), newBoundary()
	if a == b || len(a) > 70 || !strings.HasPrefix(a, "dicomgw-") {
		t.Errorf("boundaries %q, %q", a, b)
	}
}
