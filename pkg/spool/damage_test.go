package spool

import (
	"bytes"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// sealedSpool opens a spool whose commits are sealed (user extended
// attributes), waiting for its slots.
func sealedSpool(t *testing.T) *Spool {
	t.Helper()
	s, log := openLogged(t, xattrDir(t))
	if got := opened(t, log)["commit"]; got != "sealed slots" {
		t.Fatalf("commit %v on a file system with user extended attributes, want sealed slots", got)
	}
	waitSlots(t, s)
	return s
}

// readAllChecked reads an object's data set through Open, returning what
// the reader handed over and its error.
func readAllChecked(t *testing.T, s *Spool, id string) ([]byte, error) {
	t.Helper()
	d, err := s.Describe(id)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := d.Open()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	var got bytes.Buffer
	_, err = io.Copy(&got, rc)
	return got.Bytes(), err
}

// TestOpenChecksTheSeal: the data set read through Open is the one
// received; a byte flipped in the queued file (while the daemon was
// stopped, say) fails the read with a DamagedError naming the file, and
// the last bytes are never handed over, so no request or copy fed from it
// can complete.
func TestOpenChecksTheSeal(t *testing.T) {
	s := sealedSpool(t)
	ds := dataSet(ctClass, "1.2.3.9", 200_000)
	e, err := store(t, s, meta("1.2.3.9"), ds)
	if err != nil {
		t.Fatal(err)
	}
	got, err := readAllChecked(t, s, e.ID)
	if err != nil || !bytes.Equal(got, ds) {
		t.Fatalf("intact object: %d bytes, err %v", len(got), err)
	}

	for _, at := range []int64{-1, -100_000, -int64(len(ds))} { // last byte, the middle, the first data set byte
		t.Run("flip", func(t *testing.T) {
			f, err := os.OpenFile(e.Path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			off := e.Size + at
			var b [1]byte
			f.ReadAt(b[:], off)
			f.WriteAt([]byte{b[0] ^ 0x40}, off)
			defer func() { f.WriteAt(b[:], off); f.Close() }()

			got, err := readAllChecked(t, s, e.ID)
			var de *DamagedError
			if !errors.As(err, &de) || !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "CRC-32C") {
				t.Fatalf("flipped byte at %d: err %v, want a CRC DamagedError", off, err)
			}
			if de.ID != e.ID || de.File != "queue/"+e.ID+".dcm" {
				t.Errorf("error names %q %q", de.ID, de.File)
			}
			if len(got) >= len(ds) {
				t.Errorf("the reader handed over %d of %d bytes: the whole damaged object", len(got), len(ds))
			}
		})
	}

	// The file meta information is covered too, checked when the object
	// is described.
	f, _ := os.OpenFile(e.Path, os.O_RDWR, 0)
	f.WriteAt([]byte{'X'}, 0) // the preamble
	f.Close()
	if _, err := s.Describe(e.ID); !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), "file meta information's CRC-32C") {
		t.Errorf("preamble changed: err %v", err)
	}
}

// TestDescribeFindsDamage: a file cut short, one with junk appended after
// its sealed end, a seal naming another object and a garbled seal are all
// damage, each named with its file; none is an I/O error to be retried.
func TestDescribeFindsDamage(t *testing.T) {
	s := sealedSpool(t)
	for _, c := range []struct {
		name string
		harm func(t *testing.T, e Entry)
		want string
	}{
		{"truncated", func(t *testing.T, e Entry) { os.Truncate(e.Path, e.Size-1000) }, "its seal says"},
		{"truncated into the header", func(t *testing.T, e Entry) { os.Truncate(e.Path, 200) }, "its seal says"},
		{"junk appended", func(t *testing.T, e Entry) {
			f, _ := os.OpenFile(e.Path, os.O_WRONLY|os.O_APPEND, 0)
			f.Write([]byte("junk after a crash"))
			f.Close()
		}, "its seal says"},
		{"seal of another object", func(t *testing.T, e Entry) {
			unix.Setxattr(e.Path, sealAttr, seal("0000000000000001-00000001", e.Size, 500, 0, 0), 0)
		}, "seal is that of object"},
		{"garbled seal", func(t *testing.T, e Entry) { unix.Setxattr(e.Path, sealAttr, []byte("dicomgw-seal-v1 ???"), 0) }, "seal that cannot be read"},
	} {
		t.Run(c.name, func(t *testing.T) {
			e, err := store(t, s, meta("1.2.3.7"), dataSet(ctClass, "1.2.3.7", 50_000))
			if err != nil {
				t.Fatal(err)
			}
			c.harm(t, e)
			_, err = s.Describe(e.ID)
			var de *DamagedError
			if !errors.As(err, &de) || !strings.Contains(de.Reason, c.want) {
				t.Fatalf("err %v, want a DamagedError: %s", err, c.want)
			}
			if de.File != "queue/"+e.ID+".dcm" {
				t.Errorf("file %q", de.File)
			}
		})
	}
}

// TestDescribeUnsealedTruncated: a file committed the simple way (no seal)
// and cut short is damage too, found by the walk, with its offset.
func TestDescribeUnsealedTruncated(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	e := commitOne(t, s, "1.2.3.8")
	if err := unix.Removexattr(e.Path, sealAttr); err != nil && !errors.Is(err, unix.ENODATA) && !errors.Is(err, unix.ENOTSUP) {
		t.Fatal(err)
	}
	if err := os.Truncate(e.Path, e.Size-10); err != nil {
		t.Fatal(err)
	}
	_, err := s.Describe(e.ID)
	var de *DamagedError
	if !errors.As(err, &de) || de.Offset <= 0 || !strings.Contains(de.Reason, "no longer parses") {
		t.Fatalf("err %v, want a DamagedError from the walk with an offset", err)
	}
}

// TestBadRetryRecordConcernsOneObject: garbage in one object's retry
// record does not stop the listing: the others are listed as usual, the
// bad one carries its damage, and describing it says so; a dead letter
// can still be made of it.
func TestBadRetryRecordConcernsOneObject(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var ids []string
	for _, inst := range []string{"1.2.3.1", "1.2.3.2", "1.2.3.3"} {
		ids = append(ids, commitOne(t, s, inst).ID)
	}
	if err := s.SetRetry(ids[0], Retry{Attempts: 2, LastError: "503"}); err != nil {
		t.Fatal(err)
	}
	bad := filepath.Join(dir, queueDir, ids[1]+retryExt)
	if err := os.WriteFile(bad, []byte("\x00\x01garbage{"), 0o640); err != nil {
		t.Fatal(err)
	}
	items, err := s.Items(StateQueued)
	if err != nil {
		t.Fatalf("Items: %v", err)
	}
	if len(items) != 3 {
		t.Fatalf("%d items, want 3", len(items))
	}
	if items[0].Retry == nil || items[0].Retry.Attempts != 2 || items[0].Damage != nil {
		t.Errorf("good record: %+v", items[0])
	}
	if items[1].Damage == nil || items[1].Damage.File != "queue/"+ids[1]+".retry" {
		t.Errorf("bad record: damage %v", items[1].Damage)
	}
	if items[2].Damage != nil {
		t.Errorf("no record: damage %v", items[2].Damage)
	}
	if _, err := s.Describe(ids[1]); !errors.Is(err, ErrDamaged) {
		t.Errorf("Describe of the bad one: %v", err)
	}
	if _, err := s.Describe(ids[2]); err != nil {
		t.Errorf("Describe of a good one: %v", err)
	}
	// A directory where the record should be: the same.
	os.Remove(bad)
	os.MkdirAll(filepath.Join(bad, "x"), 0o750)
	if _, err := s.Describe(ids[1]); !errors.Is(err, ErrDamaged) {
		t.Errorf("a directory as retry record: %v", err)
	}
	if err := s.Dead(ids[1], "damaged in the spool: its retry record", nil); err != nil {
		t.Errorf("dead letter of the damaged object: %v", err)
	}
	if _, err := os.Lstat(bad); !os.IsNotExist(err) {
		t.Errorf("the bad retry record is still there: %v", err)
	}
}

// TestCommitToRecordsDestinations: the destinations an object is routed to
// are written into its record before the fsync that makes it durable (in
// the space reserved at Create), read back by ReadMeta and Describe, and
// covered by the seal; what CommitTo returns is what Describe finds, so
// the forwarder need not read the file again.
func TestCommitToRecordsDestinations(t *testing.T) {
	for _, sealed := range []bool{true, false} {
		t.Run(map[bool]string{true: "sealed", false: "rename"}[sealed], func(t *testing.T) {
			cfg := Config{Dir: t.TempDir(), RecordReserve: 64}
			if sealed {
				cfg.Dir = xattrDir(t)
			} else {
				cfg.Commit = CommitRename
			}
			s, _ := openWith(t, cfg)
			ds := dataSet(ctClass, "1.2.3.6", 10_000)
			w, err := s.Create(meta("1.2.3.6"))
			if err != nil {
				t.Fatal(err)
			}
			w.Write(ds)
			if _, err := w.Examine(nil); err != nil {
				t.Fatal(err)
			}
			dests := []string{"pacs", "research-copy", "kheops_ct"}
			got, err := w.CommitTo(dests)
			if err != nil {
				t.Fatal(err)
			}
			f, err := os.Open(got.Path)
			if err != nil {
				t.Fatal(err)
			}
			m, off, err := ReadMeta(f)
			f.Close()
			if err != nil || !slices.Equal(m.Destinations, dests) || off != got.DataOffset {
				t.Fatalf("record: %v %v, offset %d (CommitTo said %d)", m.Destinations, err, off, got.DataOffset)
			}
			d, err := s.Describe(got.ID)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(d.Destinations, dests) || d.DataOffset != got.DataOffset || d.Size != got.Size ||
				d.StudyInstanceUID != got.StudyInstanceUID || (d.seal == nil) != (got.seal == nil) || sealed != (d.seal != nil) {
				t.Errorf("Describe %+v\nCommitTo %+v", d, got)
			}
			if d.seal != nil && *d.seal != *got.seal {
				t.Errorf("seal %+v, CommitTo said %+v", *d.seal, *got.seal)
			}
			for _, desc := range []Description{got, d} {
				rc, err := desc.Open()
				if err != nil {
					t.Fatal(err)
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil || !bytes.Equal(b, ds) {
					t.Errorf("data set read back: %d bytes, %v", len(b), err)
				}
			}
		})
	}
	// More destinations than the reserve holds: refused, nothing left.
	s, _ := openWith(t, Config{Dir: t.TempDir(), RecordReserve: 8})
	w, err := s.Create(meta("1.2.3.5"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write(dataSet(ctClass, "1.2.3.5", 100))
	if _, err := w.CommitTo([]string{"a-destination-with-a-long-name", "another-one"}); err == nil || !strings.Contains(err.Error(), "reserved") {
		t.Errorf("err %v, want the reserve named", err)
	}
	if q, _ := s.Items(StateQueued); len(q) != 0 {
		t.Errorf("%d queued after a refused commit", len(q))
	}
}
