package spool

import (
	"bytes"
	"encoding/json"
	"hash/crc32"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// openLogged opens the spool in dir with its log captured.
func openLogged(t *testing.T, dir string) (*Spool, *bytes.Buffer) {
	t.Helper()
	var buf bytes.Buffer
	s, err := Open(Config{Dir: dir, ImplementationClassUID: implUID, ImplementationVersionName: "TEST_1"}, slog.New(slog.NewJSONHandler(&buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &buf
}

// opened returns the fields of the "spool opened" log record.
func opened(t *testing.T, log *bytes.Buffer) map[string]any {
	t.Helper()
	for _, line := range strings.Split(log.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == "spool opened" {
			return rec
		}
	}
	t.Fatalf("no \"spool opened\" record in %s", log)
	return nil
}

func nlink(t *testing.T, path string) uint64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return uint64(fi.Sys().(*syscall.Stat_t).Nlink)
}

// TestSealedCommit: an object committed through a slot is sealed (its seal
// checks out against its content), queued at once, and its slot's name is
// gone shortly after; a closed spool leaves nothing in incoming/.
func TestSealedCommit(t *testing.T) {
	dir := t.TempDir()
	s, log := openLogged(t, dir)
	if got := opened(t, log)["commit"]; got != "sealed slots" {
		t.Skipf("the test file system has no user extended attributes (commit %v)", got)
	}
	time.Sleep(50 * time.Millisecond) // the first slots
	e, err := store(t, s, meta("1.2.3.1"), dataSet(ctClass, "1.2.3.1", 20_000))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	id, ok, err := readSeal(f)
	f.Close()
	if err != nil || !ok || id != e.ID {
		t.Fatalf("seal of the committed object: id %q ok %v err %v, want %q", id, ok, err, e.ID)
	}
	if got := listDir(t, filepath.Join(dir, incomingDir)); len(got) != 0 {
		t.Fatalf("incoming/ shows %v after the commit", got)
	}
	deadline := time.Now().Add(5 * time.Second)
	for nlink(t, e.Path) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the slot's name was never removed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if des, _ := os.ReadDir(filepath.Join(dir, incomingDir)); len(des) != 0 {
		t.Fatalf("incoming/ after Close: %d entries", len(des))
	}
}

// TestSealedAbort: an aborted object leaves only ready slots.
func TestSealedAbort(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	w, err := s.Create(meta("1.2.3.2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(dataSet(ctClass, "1.2.3.2", 1000)); err != nil {
		t.Fatal(err)
	}
	slot := w.slot
	w.Abort()
	if got := listDir(t, filepath.Join(dir, incomingDir)); len(got) != 0 {
		t.Fatalf("incoming/ after Abort: %v", got)
	}
	if slot != "" {
		if _, err := os.Stat(slot); !os.IsNotExist(err) {
			t.Fatalf("the aborted object's slot is still there: %v", err)
		}
	}
	if n := len(listDir(t, filepath.Join(dir, queueDir))); n != 0 {
		t.Fatalf("%d files queued", n)
	}
}

// TestSimpleCommits: without slots (a file system without extended
// attributes), objects are committed by rename and directory fsync.
func TestSimpleCommits(t *testing.T) {
	simpleCommits = true
	defer func() { simpleCommits = false }()
	dir := t.TempDir()
	s, log := openLogged(t, dir)
	if got := opened(t, log)["commit"]; got != "rename" {
		t.Fatalf("commit = %v", got)
	}
	e, err := store(t, s, meta("1.2.3.3"), dataSet(ctClass, "1.2.3.3", 1000))
	if err != nil {
		t.Fatal(err)
	}
	if nlink(t, e.Path) != 1 {
		t.Fatal("a committed object has another name")
	}
	if des, _ := os.ReadDir(filepath.Join(dir, incomingDir)); len(des) != 0 {
		t.Fatalf("incoming/ holds %d entries", len(des))
	}
}

// TestRecoverSealed plays what a crash can leave in incoming/: Open queues
// the objects whose seal checks out, once, and removes everything else.
func TestRecoverSealed(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	// An object as the spool writes it, to copy into the crash's leftovers.
	e, err := store(t, s, meta("1.2.3.4"), dataSet(ctClass, "1.2.3.4", 3000))
	if err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Remove(e.Path); err != nil {
		t.Fatal(err)
	}
	in := filepath.Join(dir, incomingDir)
	put := func(name string, content []byte, sealValue []byte) {
		t.Helper()
		p := filepath.Join(in, name)
		if err := os.WriteFile(p, content, 0o640); err != nil {
			t.Fatal(err)
		}
		if sealValue != nil {
			if err := unix.Setxattr(p, sealAttr, sealValue, 0); err != nil {
				t.Skipf("no user extended attributes here: %v", err)
			}
		}
	}
	crc := func(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
	const (
		idA = "0000000000000001-00010001" // sealed, not queued: recovered
		idB = "0000000000000002-00020002" // sealed, already queued: not twice
		idC = "0000000000000003-00030003" // sealed, content torn: CRC differs
		idD = "0000000000000004-00040004" // sealed, shorter on disk than sealed
	)
	put(".slot-a", good, seal(idA, int64(len(good)), crc(good)))
	if err := os.Link(filepath.Join(in, ".slot-a"), filepath.Join(in, idA+partialExt)); err != nil {
		t.Fatal(err)
	}
	put(".slot-b", good, seal(idB, int64(len(good)), crc(good)))
	if err := os.WriteFile(filepath.Join(dir, queueDir, idB+objectExt), good, 0o640); err != nil {
		t.Fatal(err)
	}
	torn := bytes.Clone(good)
	torn[len(torn)-10] ^= 0xff
	put(".slot-c", torn, seal(idC, int64(len(good)), crc(good)))
	put(".slot-d", good[:len(good)-100], seal(idD, int64(len(good)), crc(good)))
	put(".slot-e", good, seal("../../etc/x", int64(len(good)), crc(good)))          // not an ID of ours
	put(".slot-f", good, []byte("dicomgw-seal-v1 0000000000000006-00060006 12 zz")) // not a seal
	put(".slot-g", nil, nil)                                                        // a ready slot
	put("0000000000000008-00080008"+partialExt, good[:500], nil)                    // a partial object
	put(".probe-1", []byte("x"), nil)

	s, log := openLogged(t, dir)
	rec := opened(t, log)
	if rec["recovered"] != 1.0 || rec["partials_removed"] != 1.0 {
		t.Errorf("recovered %v, partials removed %v; want 1 and 1", rec["recovered"], rec["partials_removed"])
	}
	queued := listDir(t, filepath.Join(dir, queueDir))
	want := []string{idA + objectExt, idB + objectExt}
	if strings.Join(queued, " ") != strings.Join(want, " ") {
		t.Fatalf("queue/ holds %v, want %v", queued, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, queueDir, idA+objectExt)); err != nil || !bytes.Equal(b, good) {
		t.Fatalf("recovered object differs (%v)", err)
	}
	for _, de := range mustReadDir(t, in) {
		if !strings.HasPrefix(de.Name(), slotPrefix) {
			t.Errorf("left in incoming/: %s", de.Name())
		}
	}
	if nlink(t, filepath.Join(dir, queueDir, idA+objectExt)) != 1 {
		t.Error("the recovered object still has other names")
	}
	items, err := s.Items(StateQueued)
	if err != nil || len(items) != 2 {
		t.Fatalf("Items: %d, %v", len(items), err)
	}
}

func mustReadDir(t *testing.T, dir string) []os.DirEntry {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	return des
}

// TestSlotsRunOut: more objects at once than there are slots; those
// without one are committed the simple way, and all are queued once.
func TestSlotsRunOut(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	time.Sleep(50 * time.Millisecond)
	const n = slotsWanted + 20
	ws := make([]*Writer, n)
	slotted := 0
	for i := range ws {
		inst := "1.2.5." + strconv.Itoa(i+1)
		w, err := s.Create(meta(inst))
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(dataSet(ctClass, inst, 500)); err != nil {
			t.Fatal(err)
		}
		if w.slot != "" {
			slotted++
		}
		ws[i] = w
	}
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for _, w := range ws {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := w.Commit(); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if got := len(listDir(t, filepath.Join(dir, queueDir))); got != n {
		t.Fatalf("%d objects queued, want %d", got, n)
	}
	if slotted >= n {
		t.Fatalf("all %d objects got a slot; the pool holds %d", n, slotsWanted)
	}
	s.Close()
	if des := mustReadDir(t, filepath.Join(dir, incomingDir)); len(des) != 0 {
		t.Fatalf("incoming/ after Close: %d entries", len(des))
	}
	for _, name := range listDir(t, filepath.Join(dir, queueDir)) {
		if nlink(t, filepath.Join(dir, queueDir, name)) != 1 {
			t.Errorf("%s still has another name after Close", name)
		}
	}
}
