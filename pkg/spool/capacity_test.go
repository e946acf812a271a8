package spool

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func openLimited(t *testing.T, dir string, l Limits, maxObject int64) *Spool {
	t.Helper()
	s, err := Open(Config{Dir: dir, ImplementationClassUID: implUID, ImplementationVersionName: "T", Limits: l, MaxObjectSize: maxObject}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// TestHighAndLowWater: at MaxBytes the spool refuses new objects; it takes
// them again only once it has drained to 90% (no flapping at the limit).
func TestHighAndLowWater(t *testing.T) {
	s := openLimited(t, t.TempDir(), Limits{MaxBytes: 100_000}, 0)
	var ids []string
	for i := 0; ; i++ {
		inst := "1.2." + string(rune('1'+i))
		w, err := s.Create(meta(inst))
		if err != nil {
			if !errors.Is(err, ErrFull) {
				t.Fatal(err)
			}
			break
		}
		if _, err := w.Write(dataSet(ctClass, inst, 15_000)); err != nil {
			w.Abort()
			if !errors.Is(err, ErrFull) {
				t.Fatal(err)
			}
			break
		}
		e, err := w.Commit()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, e.ID)
		if i > 20 {
			t.Fatal("never full")
		}
	}
	if full, why := s.Full(); !full || why == "" {
		// The last object may have been refused as not fitting before the
		// mark was reached; fill the rest to reach it.
		w, _ := s.Create(meta("1.9"))
		w.Write(make([]byte, 100_000-int(s.Used())))
		if full, _ = s.Full(); !full {
			t.Fatalf("not full at %d of 100000 bytes", s.Used())
		}
		w.Abort()
	}
	if _, err := s.Create(meta("1.3.1")); !errors.Is(err, ErrFull) {
		t.Fatalf("Create when full: %v", err)
	}
	if err := s.Admit(); !errors.Is(err, ErrFull) {
		t.Fatalf("Admit when full: %v", err)
	}
	// Delivering one object is not enough to cross the low-water mark...
	used := s.Used()
	if err := s.Delivered(ids[0]); err != nil {
		t.Fatal(err)
	}
	if s.Used() >= used {
		t.Fatal("delivered bytes not subtracted")
	}
	if s.Used() > 90_000 {
		if full, _ := s.Full(); !full {
			t.Fatalf("full flag dropped at %d bytes, above the low mark", s.Used())
		}
	}
	// ...draining further is.
	for _, id := range ids[1:3] {
		s.Delivered(id)
	}
	if full, why := s.Full(); full {
		t.Fatalf("still full at %d bytes: %s", s.Used(), why)
	}
	if err := s.Admit(); err != nil {
		t.Fatal(err)
	}
}

// TestObjectTooLargeEarly: an object larger than what is left is refused
// while it arrives, not after it has been written whole; so is one larger
// than MaxObjectSize. Nothing is left behind, and the bytes are given back.
func TestObjectTooLargeEarly(t *testing.T) {
	dir := t.TempDir()
	s := openLimited(t, dir, Limits{MaxBytes: 50_000}, 30_000)
	w, err := s.Create(meta("1.2"))
	if err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 8_000)
	written := 0
	for {
		if _, err := w.Write(chunk); err != nil {
			if !errors.Is(err, ErrTooLarge) {
				t.Fatalf("err %v, want ErrTooLarge", err)
			}
			break
		}
		written += len(chunk)
	}
	if written > 30_000 {
		t.Fatalf("%d bytes written past --max-object-size", written)
	}
	w.Abort()
	if s.Used() != 0 {
		t.Fatalf("%d bytes still counted after the abort", s.Used())
	}

	s2 := openLimited(t, t.TempDir(), Limits{MaxBytes: 50_000}, 0)
	w, _ = s2.Create(meta("1.3"))
	written = 0
	for {
		if _, err := w.Write(chunk); err != nil {
			if !errors.Is(err, ErrFull) {
				t.Fatalf("err %v, want ErrFull", err)
			}
			break
		}
		written += len(chunk)
	}
	if written > 50_000 {
		t.Fatalf("%d bytes written into a 50000-byte spool", written)
	}
	w.Abort()
	if parts, _ := filepath.Glob(filepath.Join(dir, incomingDir, "[^.]*")); len(parts) != 0 {
		t.Fatalf("partials left: %v", parts)
	}
}

// TestResync: bytes removed by another process (an operator's purge) are
// seen at the next resync.
func TestResync(t *testing.T) {
	dir := t.TempDir()
	s := openLimited(t, dir, Limits{MaxBytes: 1 << 30}, 0)
	e := commitOne(t, s, "1.2.3")
	if err := s.Dead(e.ID, "test", nil); err != nil {
		t.Fatal(err)
	}
	if s.Used() == 0 {
		t.Fatal("dead letter not counted")
	}
	d, _ := OpenDir(dir)
	if n, _, err := d.Purge(StateDead, farFuture()); n != 1 || err != nil {
		t.Fatalf("%d %v", n, err)
	}
	if s.Used() == 0 {
		t.Fatal("the operator's view changed the daemon's count directly")
	}
	if err := s.Resync(); err != nil {
		t.Fatal(err)
	}
	if s.Used() != 0 {
		t.Fatalf("%d bytes after resync of an empty spool", s.Used())
	}
	// Reopening counts what is there.
	commitOne(t, s, "1.2.4")
	used := s.Used()
	s.Close()
	s2 := openLimited(t, dir, Limits{}, 0)
	if s2.Used() != used {
		t.Fatalf("reopened: %d, want %d", s2.Used(), used)
	}
	os.RemoveAll(filepath.Join(dir, "nothing"))
}

func farFuture() time.Time { return time.Now().Add(24 * time.Hour) }
