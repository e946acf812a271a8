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
func openLogged(t *testing.T, dir string) (*Spool, *logBuffer) {
	t.Helper()
	return openWith(t, Config{Dir: dir})
}

// openWith opens the spool cfg describes (with the test's implementation
// UID and version name) with its log captured.
func openWith(t *testing.T, cfg Config) (*Spool, *logBuffer) {
	t.Helper()
	cfg.ImplementationClassUID, cfg.ImplementationVersionName = implUID, "TEST_1"
	buf := &logBuffer{}
	s, err := Open(cfg, slog.New(slog.NewJSONHandler(buf, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, buf
}

// logBuffer collects a spool's log, written by its goroutines too.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// record returns the fields of the first log record with message msg.
func (b *logBuffer) record(msg string) map[string]any {
	for _, line := range strings.Split(b.String(), "\n") {
		var rec map[string]any
		if json.Unmarshal([]byte(line), &rec) == nil && rec["msg"] == msg {
			return rec
		}
	}
	return nil
}

// opened returns the fields of the "spool opened" log record.
func opened(t *testing.T, log *logBuffer) map[string]any {
	t.Helper()
	if rec := log.record("spool opened"); rec != nil {
		return rec
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

// waitSlots waits until the pool is full, so that the next objects get
// slots (creating them takes a while on some file systems).
func waitSlots(t *testing.T, s *Spool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for len(s.slots.ready) < slotsWanted {
		if time.Now().After(deadline) {
			t.Fatalf("the slot pool holds %d of %d after 20 s", len(s.slots.ready), slotsWanted)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSealedCommit: an object committed through a slot is sealed (its seal
// checks out against its content), queued at once, and its slot's name is
// gone shortly after; a closed spool leaves nothing in incoming/ and only
// empty slots in slots/, which the next Open takes over.
func TestSealedCommit(t *testing.T) {
	dir := xattrDir(t)
	s, log := openLogged(t, dir)
	if got := opened(t, log)["commit"]; got != "sealed slots" {
		t.Fatalf("commit %v on a file system with user extended attributes, want sealed slots", got)
	}
	waitSlots(t, s)
	if n := len(mustReadDir(t, filepath.Join(dir, slotsDir))); n != slotsWanted {
		t.Fatalf("slots/ holds %d files, want the pool's %d", n, slotsWanted)
	}
	deadline := time.Now().Add(5 * time.Second)
	for log.record("spool slots ready") == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no \"spool slots ready\" record once the pool is full:\n%s", log)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if rec := log.record("spool slots ready"); rec["slots"] != float64(slotsWanted) || rec["adopted"] != 0.0 {
		t.Errorf("spool slots ready: %v", rec)
	}
	e, err := store(t, s, meta("1.2.3.1"), dataSet(ctClass, "1.2.3.1", 20_000))
	if err != nil {
		t.Fatal(err)
	}
	expectSeal(t, e, "the committed object")
	if got := listDir(t, filepath.Join(dir, incomingDir)); len(got) != 0 {
		t.Fatalf("incoming/ shows %v after the commit", got)
	}
	deadline = time.Now().Add(5 * time.Second)
	for nlink(t, e.Path) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("the slot's name was never removed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if des := mustReadDir(t, filepath.Join(dir, incomingDir)); len(des) != 0 {
		t.Fatalf("incoming/ after Close: %d entries", len(des))
	}
	left := onlyEmptySlots(t, dir)
	if left != slotsWanted-1 {
		t.Errorf("slots/ after Close: %d empty slots, want %d", left, slotsWanted-1)
	}
	s, log = openLogged(t, dir)
	if got := opened(t, log)["slots_adopted"]; got != float64(left) {
		t.Errorf("reopened: slots_adopted %v, want %d", got, left)
	}
	waitSlots(t, s)
}

// onlyEmptySlots checks that slots/ holds nothing but ready slots and
// returns how many.
func onlyEmptySlots(t *testing.T, dir string) int {
	t.Helper()
	des := mustReadDir(t, filepath.Join(dir, slotsDir))
	for _, de := range des {
		if !emptySlot(filepath.Join(dir, slotsDir, de.Name()), de) {
			t.Errorf("slots/%s is not an empty slot", de.Name())
		}
	}
	return len(des)
}

// TestSealedAbort: an aborted object leaves only ready slots.
func TestSealedAbort(t *testing.T) {
	dir := xattrDir(t)
	s := open(t, dir)
	waitSlots(t, s)
	w, err := s.Create(meta("1.2.3.2"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(dataSet(ctClass, "1.2.3.2", 1000)); err != nil {
		t.Fatal(err)
	}
	slot := w.slot
	if slot == "" || filepath.Dir(slot) != filepath.Join(dir, slotsDir) {
		t.Fatalf("the object was given slot %q, want one in slots/", slot)
	}
	w.Abort()
	if got := listDir(t, filepath.Join(dir, incomingDir)); len(got) != 0 {
		t.Fatalf("incoming/ after Abort: %v", got)
	}
	if _, err := os.Stat(slot); !os.IsNotExist(err) {
		t.Fatalf("the aborted object's slot is still there: %v", err)
	}
	if n := len(listDir(t, filepath.Join(dir, queueDir))); n != 0 {
		t.Fatalf("%d files queued", n)
	}
}

// TestSimpleCommits: without slots (CommitRename, as on a file system
// without extended attributes), objects are committed by rename and
// directory fsync.
func TestSimpleCommits(t *testing.T) {
	dir := xattrDir(t) // where slots would be used, if not told otherwise
	s, log := openWith(t, Config{Dir: dir, Commit: CommitRename})
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

// TestRecoverSealed plays what a crash can leave in slots/ and incoming/
// (where earlier versions kept their slots): Open queues the objects whose
// seal checks out, once, and removes everything else.
func TestRecoverSealed(t *testing.T) {
	dir := xattrDir(t)
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
	in, sl := filepath.Join(dir, incomingDir), filepath.Join(dir, slotsDir)
	readySlots := onlyEmptySlots(t, dir) // the closed spool's, taken over again
	put := func(name string, content []byte, sealValue []byte) {
		t.Helper()
		p := filepath.Join(sl, name)
		if strings.HasPrefix(name, "legacy") {
			p = filepath.Join(in, "."+strings.TrimPrefix(name, "legacy."))
		} else if !strings.HasPrefix(name, slotPrefix) {
			p = filepath.Join(in, name)
		}
		if err := os.WriteFile(p, content, 0o640); err != nil {
			t.Fatal(err)
		}
		if sealValue != nil {
			if err := unix.Setxattr(p, sealAttr, sealValue, 0); err != nil {
				t.Fatal(err)
			}
		}
	}
	crc := func(b []byte) uint32 { return crc32.Checksum(b, castagnoli) }
	const (
		idA = "0000000000000001-00010001" // sealed, not queued: recovered
		idB = "0000000000000002-00020002" // sealed, already queued: not twice
		idC = "0000000000000003-00030003" // sealed, content torn: CRC differs
		idD = "0000000000000004-00040004" // sealed, shorter on disk than sealed
		idJ = "000000000000000a-000a000a" // sealed, longer on disk than sealed: junk appended
	)
	put(".slot-a", good, sealV1(idA, int64(len(good)), crc(good)))
	if err := os.Link(filepath.Join(sl, ".slot-a"), filepath.Join(in, idA+partialExt)); err != nil {
		t.Fatal(err)
	}
	put(".slot-b", good, sealV1(idB, int64(len(good)), crc(good)))
	if err := os.WriteFile(filepath.Join(dir, queueDir, idB+objectExt), good, 0o640); err != nil {
		t.Fatal(err)
	}
	torn := bytes.Clone(good)
	torn[len(torn)-10] ^= 0xff
	put(".slot-c", torn, sealV1(idC, int64(len(good)), crc(good)))
	put("legacy.slot-d", good[:len(good)-100], sealV1(idD, int64(len(good)), crc(good)))
	// The sealed bytes intact, more after them: not the object that was
	// sealed, whose size is part of its seal (removed: see readSeal).
	put(".slot-j", append(bytes.Clone(good), "written after the seal"...), sealV1(idJ, int64(len(good)), crc(good)))
	put(".slot-e", good, sealV1("../../etc/x", int64(len(good)), crc(good)))        // not an ID of ours
	put(".slot-f", good, []byte("dicomgw-seal-v1 0000000000000006-00060006 12 zz")) // not a seal
	put(".slot-g", nil, nil)                                                        // a ready slot
	put("legacy.slot-h", nil, nil)                                                  // an old version's ready slot
	put("0000000000000008-00080008"+partialExt, good[:500], nil)                    // a partial object
	put("legacy.probe-1", []byte("x"), nil)
	// An old version's sealed slot in incoming/: recovered from there.
	const idI = "0000000000000009-00090009"
	put("legacy.slot-i", good, sealV1(idI, int64(len(good)), crc(good)))
	// Version 2 seals (the head and the data set apart), as this version
	// writes them: intact is recovered; a torn head or data set is not.
	hl := len(good) - len(dataSet(ctClass, "1.2.3.4", 3000))
	const (
		idK = "000000000000000b-000b000b" // version 2, intact: recovered
		idL = "000000000000000c-000c000c" // version 2, head torn
		idM = "000000000000000d-000d000d" // version 2, data set torn
	)
	v2 := func(id string) []byte { return seal(id, int64(len(good)), int64(hl), crc(good[:hl]), crc(good[hl:])) }
	put(".slot-k", good, v2(idK))
	headTorn := bytes.Clone(good)
	headTorn[hl-3] ^= 0x20
	put(".slot-l", headTorn, v2(idL))
	put(".slot-m", torn, v2(idM))

	// A recovered object's slot goes only once its queue/ entry is durable:
	// at the first fsync of queue/ holding it, the slot is still there.
	syncs := newSyncRecorder(dir)
	covered := map[string]bool{}
	syncs.onSync = func(ev syncEvent) {
		for _, c := range []struct{ id, slot string }{{idA, filepath.Join(sl, ".slot-a")}, {idI, filepath.Join(in, ".slot-i")}} {
			if ev.dir != filepath.Join(dir, queueDir) || !ev.names[c.id+objectExt] || covered[c.id] {
				continue
			}
			covered[c.id] = true
			if _, err := os.Lstat(c.slot); err != nil {
				t.Errorf("%s was removed before queue/ was fsynced with %s in it: %v", filepath.Base(c.slot), c.id, err)
			}
		}
	}
	s, log := openWith(t, Config{Dir: dir, Syncer: syncs})
	if !covered[idA] || !covered[idI] {
		t.Errorf("Open returned without an fsync of queue/ holding the recovered objects (%v)", covered)
	}
	rec := opened(t, log)
	if rec["recovered"] != 3.0 || rec["partials_removed"] != 1.0 {
		t.Errorf("recovered %v, partials removed %v; want 3 and 1", rec["recovered"], rec["partials_removed"])
	}
	queued := listDir(t, filepath.Join(dir, queueDir))
	want := []string{idA + objectExt, idB + objectExt, idI + objectExt, idK + objectExt}
	if strings.Join(queued, " ") != strings.Join(want, " ") {
		t.Fatalf("queue/ holds %v, want %v", queued, want)
	}
	if b, err := os.ReadFile(filepath.Join(dir, queueDir, idA+objectExt)); err != nil || !bytes.Equal(b, good) {
		t.Fatalf("recovered object differs (%v)", err)
	}
	if des := mustReadDir(t, in); len(des) != 0 {
		t.Errorf("left in incoming/: %d entries", len(des))
	}
	for _, name := range []string{".slot-a", ".slot-b", ".slot-c", ".slot-e", ".slot-f", ".slot-j", ".slot-k", ".slot-l", ".slot-m"} {
		if _, err := os.Lstat(filepath.Join(sl, name)); err == nil {
			t.Errorf("left in slots/: %s", name)
		}
	}
	if rec["slots_adopted"] != float64(readySlots+1) {
		t.Errorf("slots_adopted %v, want %d (.slot-g and the last run's)", rec["slots_adopted"], readySlots+1)
	}
	if nlink(t, filepath.Join(dir, queueDir, idA+objectExt)) != 1 {
		t.Error("the recovered object still has other names")
	}
	items, err := s.Items(StateQueued)
	if err != nil || len(items) != 4 {
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
	dir := xattrDir(t)
	rec := newSyncRecorder(dir)
	s, _ := openWith(t, Config{Dir: dir, Syncer: rec})
	waitSlots(t, s)
	// No refill until all are written: the refill loop may make files, but
	// hands out none before the fsync of slots/ that makes them durable.
	release := rec.hold(filepath.Join(dir, slotsDir))
	defer release()
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
	release()
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
	// Each fsynced before it was queued; those committed by rename with
	// queue/ fsynced after (before Commit returned).
	evs := rec.snapshot()
	for _, w := range ws {
		i := fileSync(evs, w.id)
		if i < 0 || evs[i].queued {
			t.Fatalf("object %s (slot %q): fsync of its file at %d, queued before it: %v", w.id, w.slot, i, i >= 0 && evs[i].queued)
		}
		if w.slot == "" && dirSync(evs, i, filepath.Join(dir, queueDir), w.id+objectExt) < 0 {
			t.Fatalf("object %s was committed by rename without an fsync of queue/ holding it", w.id)
		}
	}
	if slotted != slotsWanted {
		t.Fatalf("%d of %d objects got a slot; the pool holds %d", slotted, n, slotsWanted)
	}
	s.Close()
	if des := mustReadDir(t, filepath.Join(dir, incomingDir)); len(des) != 0 {
		t.Fatalf("incoming/ after Close: %d entries", len(des))
	}
	onlyEmptySlots(t, dir)
	for _, name := range listDir(t, filepath.Join(dir, queueDir)) {
		if nlink(t, filepath.Join(dir, queueDir, name)) != 1 {
			t.Errorf("%s still has another name after Close", name)
		}
		// Those committed the simple way (no slot left) are sealed too:
		// every object is checked against its CRC on its way out.
		expectSeal(t, Entry{ID: strings.TrimSuffix(name, objectExt), Path: filepath.Join(dir, queueDir, name)}, name)
	}
}

// TestDeliveredFileReused: the file of a delivered object with no other
// name becomes an empty slot (same inode, unsealed) that a later object is
// written into; a file with another name (the archive's hard link) is left
// to that name, untouched.
func TestDeliveredFileReused(t *testing.T) {
	dir := xattrDir(t)
	s, _ := openLogged(t, dir)
	waitSlots(t, s)
	inode := func(path string) uint64 {
		t.Helper()
		fi, err := os.Lstat(path)
		if err != nil {
			t.Fatal(err)
		}
		return fi.Sys().(*syscall.Stat_t).Ino
	}
	slotWith := func(ino uint64) string {
		for _, de := range mustReadDir(t, filepath.Join(dir, slotsDir)) {
			p := filepath.Join(dir, slotsDir, de.Name())
			if fi, err := os.Lstat(p); err == nil && fi.Sys().(*syscall.Stat_t).Ino == ino {
				return p
			}
		}
		return ""
	}
	// Make room in the full pool for a recycled slot: take some.
	var held []*Writer
	for i := range 8 {
		inst := "1.2.6." + strconv.Itoa(i+1)
		w, err := s.Create(meta(inst))
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, w)
	}
	defer func() {
		for _, w := range held {
			w.Abort()
		}
	}()

	e, err := store(t, s, meta("1.2.6.100"), dataSet(ctClass, "1.2.6.100", 5000))
	if err != nil {
		t.Fatal(err)
	}
	ino := inode(e.Path)
	used := s.Used()
	if err := os.WriteFile(filepath.Join(dir, queueDir, e.ID+retryExt), []byte("attempts: 1\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := s.Delivered(e.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Lstat(e.Path); !os.IsNotExist(err) {
		t.Fatalf("the delivered object is still queued: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, queueDir, e.ID+retryExt)); !os.IsNotExist(err) {
		t.Fatalf("its retry file is still there: %v", err)
	}
	if got := s.Used(); got != used-e.Size {
		t.Errorf("Used %d after delivery, want %d", got, used-e.Size)
	}
	var slot string
	deadline := time.Now().Add(10 * time.Second)
	for {
		if slot = slotWith(ino); slot != "" {
			de := dirEntry(t, slot)
			if emptySlot(slot, de) {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("the delivered object's file never became an empty slot (%q)", slot)
		}
		time.Sleep(5 * time.Millisecond)
	}

	// Objects written now get slots, the recycled one among them sooner or
	// later; each is sealed and intact.
	for i := 0; slotWith(ino) != ""; i++ {
		if i > slotsWanted+10 {
			t.Fatal("the recycled slot was never used")
		}
		inst := "1.2.6." + strconv.Itoa(1000+i)
		body := dataSet(ctClass, inst, 700)
		e, err := store(t, s, meta(inst), body)
		if err != nil {
			t.Fatal(err)
		}
		if inode(e.Path) == ino {
			expectSeal(t, e, "the object in the recycled file")
			b, _ := os.ReadFile(e.Path)
			if !bytes.HasSuffix(b, body) || int64(len(b)) != e.Size {
				t.Fatalf("the object in the recycled file is not what was written (%d bytes, want %d)", len(b), e.Size)
			}
			break
		}
	}

	// Another name keeps the file: it is not reused.
	e2, err := store(t, s, meta("1.2.6.200"), dataSet(ctClass, "1.2.6.200", 3000))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(e2.Path)
	archived := filepath.Join(dir, "kept.dcm") // another name on the same file system, outside the spool's directories
	if err := os.Link(e2.Path, archived); err != nil {
		t.Fatal(err)
	}
	if err := s.Delivered(e2.ID); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond)
	if slotWith(inode(archived)) != "" {
		t.Fatal("a file with another name was taken as a slot")
	}
	if got, _ := os.ReadFile(archived); !bytes.Equal(got, want) {
		t.Fatal("the other name's content changed")
	}

	// A large object's file is removed, not kept for reuse: its blocks
	// would be held outside the spool's accounting until it is emptied.
	big, err := store(t, s, meta("1.2.6.300"), dataSet(ctClass, "1.2.6.300", reuseMaxSize+1000))
	if err != nil {
		t.Fatal(err)
	}
	bigIno := inode(big.Path)
	deadline = time.Now().Add(5 * time.Second)
	for nlink(t, big.Path) != 1 { // its slot name goes first
		if time.Now().After(deadline) {
			t.Fatal("the slot's name was never removed")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := s.Delivered(big.ID); err != nil {
		t.Fatal(err)
	}
	// Checked at once, while a reused file would still hold its data (an
	// empty slot could be a new file given the freed inode number).
	if p := slotWith(bigIno); p != "" {
		if fi, err := os.Lstat(p); err == nil && fi.Size() > 0 {
			t.Fatalf("a %d-byte file was taken as a slot (%s)", big.Size, p)
		}
	}
	if _, err := os.Lstat(big.Path); !os.IsNotExist(err) {
		t.Fatalf("the delivered large object is still queued: %v", err)
	}
}

func dirEntry(t *testing.T, path string) os.DirEntry {
	t.Helper()
	for _, de := range mustReadDir(t, filepath.Dir(path)) {
		if de.Name() == filepath.Base(path) {
			return de
		}
	}
	t.Fatalf("%s: not found", path)
	return nil
}

// expectSeal fails the test unless e's file carries a seal naming e.
func expectSeal(t *testing.T, e Entry, what string) {
	t.Helper()
	f, err := os.Open(e.Path)
	if err != nil {
		t.Fatal(err)
	}
	id, ok, err := readSeal(f)
	f.Close()
	if err != nil || !ok || id != e.ID {
		t.Fatalf("seal of %s: id %q ok %v err %v, want %q", what, id, ok, err, e.ID)
	}
}
