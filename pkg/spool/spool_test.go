package spool

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	ctClass  = "1.2.840.10008.5.1.4.1.1.2"
	explicit = "1.2.840.10008.1.2.1"
	implUID  = "2.25.1234"
)

func open(t *testing.T, dir string) *Spool {
	t.Helper()
	s, err := Open(Config{Dir: dir, ImplementationClassUID: implUID, ImplementationVersionName: "TEST_1"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// dataSet builds an Explicit VR Little Endian data set with the given SOP
// class and instance ("" leaves the element out) and pixelBytes of Pixel Data.
func dataSet(sopClass, sopInstance string, pixelBytes int) []byte {
	var b []byte
	short := func(g, e uint16, vr, v string) {
		if len(v)%2 == 1 {
			v += "\x00"
		}
		b = binary.LittleEndian.AppendUint16(b, g)
		b = binary.LittleEndian.AppendUint16(b, e)
		b = append(b, vr...)
		b = binary.LittleEndian.AppendUint16(b, uint16(len(v)))
		b = append(b, v...)
	}
	if sopClass != "" {
		short(0x0008, 0x0016, "UI", sopClass)
	}
	if sopInstance != "" {
		short(0x0008, 0x0018, "UI", sopInstance)
	}
	short(0x0020, 0x000D, "UI", "1.2.3.4")
	b = append(b, 0xE0, 0x7F, 0x10, 0x00, 'O', 'W', 0, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(pixelBytes))
	return append(b, make([]byte, pixelBytes)...)
}

func meta(inst string) Meta {
	return Meta{SOPClassUID: ctClass, SOPInstanceUID: inst, TransferSyntaxUID: explicit,
		CallingAE: "CT1", CalledAE: "DICOMGW", RemoteAddr: "127.0.0.1:5000", AssociationID: "abcd1234",
		Received: time.Date(2026, 11, 21, 10, 0, 0, 0, time.UTC)}
}

// store writes ds in chunks, as fragments arrive, and commits.
func store(t *testing.T, s *Spool, m Meta, ds []byte) (Entry, error) {
	t.Helper()
	w, err := s.Create(m)
	if err != nil {
		t.Fatal(err)
	}
	for p := ds; len(p) > 0; {
		n := min(len(p), 1000)
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	return w.Commit()
}

func listDir(t *testing.T, dir string) []string {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, de := range des {
		if !strings.HasPrefix(de.Name(), slotPrefix) {
			out = append(out, de.Name())
		}
	}
	return out
}

// TestCommit: a committed object is a Part 10 file whose meta information
// carries the command's UIDs, the transfer syntax and our record, followed
// by the data set exactly as received (PS3.10 7.1).
func TestCommit(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	ds := dataSet(ctClass, "1.2.3.4.5", 5000)
	e, err := store(t, s, meta("1.2.3.4.5"), ds)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != e.Size {
		t.Fatalf("size %d, entry says %d", len(b), e.Size)
	}
	if !bytes.Equal(b[:128], make([]byte, 128)) || string(b[128:132]) != "DICM" {
		t.Fatal("no zero preamble and DICM prefix")
	}
	f, _ := os.Open(e.Path)
	defer f.Close()
	m, off, err := ReadMeta(f)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(m, meta("1.2.3.4.5")) {
		t.Fatalf("meta %+v", m)
	}
	if !bytes.Equal(b[off:], ds) {
		t.Fatal("data set bytes differ from what was written")
	}
	for _, want := range [][]byte{
		[]byte("\x02\x00\x01\x00OB\x00\x00\x02\x00\x00\x00\x00\x01"),     // (0002,0001) version 00 01
		append([]byte("\x02\x00\x10\x00UI\x14\x00"), explicit+"\x00"...), // (0002,0010), NUL padded
		[]byte("\x02\x00\x16\x00AE\x04\x00CT1 "),                         // (0002,0016) calling AE, space padded
	} {
		if !bytes.Contains(b[:off], want) {
			t.Errorf("meta group lacks %q", want)
		}
	}
	if got := listDir(t, filepath.Join(dir, incomingDir)); len(got) != 0 {
		t.Fatalf("incoming not empty: %v", got)
	}
}

// TestRejectedObjectsLeaveNothing: A900 and C000 cases, a write error and
// an abort all remove the partial file.
func TestRejectedObjectsLeaveNothing(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	cases := []struct {
		name string
		ds   []byte
		chk  func(error) bool
	}{
		{"instance mismatch", dataSet(ctClass, "9.9.9", 100), func(err error) bool {
			var mm *MismatchError
			return errors.As(err, &mm) && mm.Attribute == "SOP Instance UID" && mm.DataSet == "9.9.9"
		}},
		{"class mismatch", dataSet("1.2.840.10008.5.1.4.1.1.4", "1.2.3", 100), func(err error) bool {
			var mm *MismatchError
			return errors.As(err, &mm) && mm.Attribute == "SOP Class UID"
		}},
		{"no instance UID", dataSet(ctClass, "", 100), func(err error) bool {
			var mm *MismatchError
			return errors.As(err, &mm) && mm.DataSet == ""
		}},
		{"truncated", dataSet(ctClass, "1.2.3", 100)[:120], func(err error) bool { return errors.Is(err, ErrMalformed) }},
		{"empty", nil, func(err error) bool {
			var mm *MismatchError
			return errors.As(err, &mm)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := store(t, s, meta("1.2.3"), c.ds)
			if !c.chk(err) {
				t.Fatalf("err = %v", err)
			}
		})
	}
	w, err := s.Create(meta("1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte{1, 2, 3})
	w.Abort()
	w.Abort()

	// An injected write error (the file is gone from under the writer).
	w, err = s.Create(meta("1.2.3"))
	if err != nil {
		t.Fatal(err)
	}
	w.f.Close()
	if _, err := w.Write([]byte{1, 2}); err == nil {
		t.Fatal("write to a closed file succeeded")
	}
	if _, err := w.Commit(); err == nil {
		t.Fatal("commit after a write error succeeded")
	}
	for _, d := range []string{incomingDir, queueDir} {
		if got := listDir(t, filepath.Join(dir, d)); len(got) != 0 {
			t.Fatalf("%s not empty: %v", d, got)
		}
	}
}

// TestReopen: leftovers of a crash are removed, committed objects found
// again in arrival order, and a second process cannot open the same spool.
func TestReopen(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	var ids []string
	for _, inst := range []string{"1.1", "1.2", "1.3"} {
		e, err := store(t, s, meta(inst), dataSet(ctClass, inst, 10))
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
	}
	w, err := s.Create(meta("1.4"))
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("partial"))
	if _, err := Open(Config{Dir: dir, ImplementationClassUID: implUID, ImplementationVersionName: "X"}, nil); err == nil {
		t.Fatal("second Open of a locked spool succeeded")
	}
	s.Close() // a crash: the writer is never finished

	s2 := open(t, dir)
	if got := listDir(t, filepath.Join(dir, incomingDir)); len(got) != 0 {
		t.Fatalf("partial not removed: %v", got)
	}
	entries, err := s2.List()
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 3 {
		t.Fatalf("%d entries", len(entries))
	}
	for i, e := range entries {
		if e.ID != ids[i] {
			t.Fatalf("entry %d is %s, want %s (arrival order)", i, e.ID, ids[i])
		}
		f, _ := os.Open(e.Path)
		m, _, err := ReadMeta(f)
		f.Close()
		if err != nil || m.SOPInstanceUID != []string{"1.1", "1.2", "1.3"}[i] {
			t.Fatalf("entry %d: %+v %v", i, m, err)
		}
	}
}

func TestReadMetaRejectsForeignFiles(t *testing.T) {
	for name, b := range map[string][]byte{
		"short":      []byte("DICM"),
		"no DICM":    make([]byte, 200),
		"no record":  append(append(make([]byte, 128), "DICM"...), 2, 0, 0, 0, 'U', 'L', 4, 0, 10, 0, 0, 0, 2, 0, 1, 0, 'O', 'B', 0, 0, 2, 0, 0, 0),
		"huge group": append(append(make([]byte, 128), "DICM"...), 2, 0, 0, 0, 'U', 'L', 4, 0, 0xFF, 0xFF, 0xFF, 0xFF),
	} {
		if _, _, err := ReadMeta(bytes.NewReader(b)); !errors.Is(err, ErrNotSpoolFile) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestCreateChecks(t *testing.T) {
	s := open(t, t.TempDir())
	m := meta("1.2")
	m.TransferSyntaxUID = "1.2.3.4"
	if _, err := s.Create(m); err == nil {
		t.Fatal("unknown transfer syntax accepted")
	}
	if _, err := Open(Config{}, nil); err == nil {
		t.Fatal("Open without a directory")
	}
}

// TestLockIsTheDirectory: the spool's lock is an flock on its directory, so
// removing .lock lets no second Open in, whichever path it takes to the
// directory (the same, a symlink, a relative path, a bind mount when run
// as root), and the refusal names the holder's PID, which .lock records
// for operators. A daemon of an earlier version, which locks only .lock,
// is refused as well. Once closed, the spool opens again.
func TestLockIsTheDirectory(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "spool")
	s := open(t, dir)
	pid := strconv.Itoa(os.Getpid())
	if b, err := os.ReadFile(filepath.Join(dir, lockFile)); err != nil || strings.TrimSpace(string(b)) != pid {
		t.Errorf(".lock holds %q (%v), want the PID %s", b, err, pid)
	}
	if err := os.Remove(filepath.Join(dir, lockFile)); err != nil {
		t.Fatal(err)
	}
	paths := []string{dir, filepath.Join(base, "symlink")}
	if err := os.Symlink(dir, paths[1]); err != nil {
		t.Fatal(err)
	}
	if wd, err := os.Getwd(); err == nil {
		if rel, err := filepath.Rel(wd, dir); err == nil {
			paths = append(paths, rel)
		}
	}
	bind := filepath.Join(base, "bind")
	if err := os.Mkdir(bind, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mount(dir, bind, "", syscall.MS_BIND, ""); err == nil {
		t.Cleanup(func() { syscall.Unmount(bind, syscall.MNT_DETACH) })
		paths = append(paths, bind)
	} else {
		t.Logf("no bind mount (%v): that path is not tried", err)
	}
	want := "is in use by another dicomgw (pid " + pid + ")"
	for _, p := range paths {
		s2, err := Open(Config{Dir: p, ImplementationClassUID: implUID, ImplementationVersionName: "X"}, nil)
		if err == nil {
			s2.Close()
			t.Errorf("a second Open by %s succeeded with .lock removed", p)
		} else if !strings.Contains(err.Error(), want) {
			t.Errorf("second Open by %s: %v, want %q", p, err, want)
		}
	}
	// The first still works, and its objects are where they were.
	e, err := store(t, s, meta("1.2.9"), dataSet(ctClass, "1.2.9", 100))
	if err != nil {
		t.Fatal(err)
	}
	s.Close()

	// An earlier version holding .lock.
	old, err := os.OpenFile(filepath.Join(dir, lockFile), os.O_CREATE|os.O_RDWR, 0o640)
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Flock(int(old.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	if s2, err := Open(Config{Dir: dir, ImplementationClassUID: implUID, ImplementationVersionName: "X"}, nil); err == nil {
		s2.Close()
		t.Error("Open succeeded while an earlier version's lock on .lock is held")
	} else if !strings.Contains(err.Error(), "in use by another dicomgw") {
		t.Errorf("Open with .lock held: %v", err)
	}
	old.Close()

	s = open(t, dir)
	if _, err := s.Item(StateQueued, e.ID); err != nil {
		t.Errorf("the object stored while a second Open was refused: %v", err)
	}
}
