package spool

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func commitOne(t *testing.T, s *Spool, inst string) Entry {
	t.Helper()
	e, err := store(t, s, meta(inst), dataSet(ctClass, inst, 100))
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// TestLifecycle: queued -> failed attempts recorded -> dead with a
// readable reason -> re-queued -> delivered (deleted, or kept).
func TestLifecycle(t *testing.T) {
	dir := t.TempDir()
	s := open(t, dir)
	e := commitOne(t, s, "1.2.3")

	next := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	r := Retry{Attempts: 2, FirstFailure: next.Add(-2 * time.Hour), NextAttempt: next, LastError: "STOW-RS answered 503"}
	if err := s.SetRetry(e.ID, r); err != nil {
		t.Fatal(err)
	}
	items, err := s.Items(StateQueued)
	if err != nil || len(items) != 1 || items[0].Retry == nil || *items[0].Retry != r {
		t.Fatalf("%+v %v", items, err)
	}
	if _, err := os.Stat(filepath.Join(dir, queueDir, e.ID+retryExt+".tmp")); !os.IsNotExist(err) {
		t.Fatal("temporary retry record left behind")
	}

	if err := s.Dead(e.ID, "the endpoint refused the instance:\nFailureReason 0xC122", map[string]string{"sop_instance_uid": "1.2.3"}); err != nil {
		t.Fatal(err)
	}
	dead, _ := s.Items(StateDead)
	if len(dead) != 1 || dead[0].Reason != "the endpoint refused the instance: FailureReason 0xC122" {
		t.Fatalf("%+v", dead)
	}
	txt, _ := os.ReadFile(filepath.Join(dir, deadDir, e.ID+reasonExt))
	for _, want := range []string{"dead-lettered: ", "reason: the endpoint refused", "sop_instance_uid: 1.2.3"} {
		if !strings.Contains(string(txt), want) {
			t.Errorf("reason file lacks %q:\n%s", want, txt)
		}
	}
	if q, _ := s.Items(StateQueued); len(q) != 0 {
		t.Fatal("still queued")
	}
	if _, err := os.Stat(filepath.Join(dir, queueDir, e.ID+retryExt)); !os.IsNotExist(err) {
		t.Fatal("retry record kept after dead-lettering")
	}

	if err := s.Requeue(e.ID); err != nil {
		t.Fatal(err)
	}
	q, _ := s.Items(StateQueued)
	if len(q) != 1 || q[0].Retry != nil {
		t.Fatalf("requeued: %+v", q)
	}
	if d, _ := s.Items(StateDead); len(d) != 0 {
		t.Fatal("still dead")
	}

	desc, err := s.Describe(e.ID)
	if err != nil || desc.StudyInstanceUID != "1.2.3.4" || desc.SOPInstanceUID != "1.2.3" || desc.DataOffset == 0 {
		t.Fatalf("%+v %v", desc, err)
	}

	if err := s.Delivered(e.ID); err != nil {
		t.Fatal(err)
	}
	for _, st := range States {
		if items, _ := s.Items(st); len(items) != 0 {
			t.Fatalf("%s: %+v", st, items)
		}
	}
}

func TestKeepDeliveredAndPurge(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(Config{Dir: dir, ImplementationClassUID: implUID, ImplementationVersionName: "T", KeepDelivered: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	a, b := commitOne(t, s, "1.1"), commitOne(t, s, "1.2")
	if err := s.Delivered(a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Dead(b.ID, "no", nil); err != nil {
		t.Fatal(err)
	}
	kept, _ := s.Items(StateDelivered)
	if len(kept) != 1 || time.Since(kept[0].Modified) > time.Minute {
		t.Fatalf("%+v", kept)
	}
	// Nothing is old enough yet.
	if n, _, err := s.Purge(StateDelivered, time.Now().Add(-time.Hour)); n != 0 || err != nil {
		t.Fatalf("%d %v", n, err)
	}
	n, bytes, err := s.Purge(StateDead, time.Now().Add(time.Second))
	if n != 1 || bytes != b.Size || err != nil {
		t.Fatalf("%d %d %v", n, bytes, err)
	}
	if _, err := os.Stat(filepath.Join(dir, deadDir, b.ID+reasonExt)); !os.IsNotExist(err) {
		t.Fatal("reason file not purged")
	}
	if _, _, err := s.Purge(StateQueued, time.Now()); err == nil {
		t.Fatal("queued objects purged")
	}
}

// TestIDsAreNotPaths: only IDs the spool made are accepted, so an operator
// typo or a hostile argument never names a file outside the spool.
func TestIDsAreNotPaths(t *testing.T) {
	s := open(t, t.TempDir())
	for _, id := range []string{"", "../../etc/passwd", "18ea147a9950186e-00013e1", "18ea147a9950186e/00013e1e", "18EA147A9950186E-00013E1E", "18ea147a9950186e-00013e1e/.."} {
		if err := s.Delivered(id); err == nil {
			t.Errorf("%q accepted", id)
		}
		if err := s.Dead(id, "x", nil); err == nil {
			t.Errorf("%q accepted", id)
		}
		if err := s.Requeue(id); err == nil {
			t.Errorf("%q accepted", id)
		}
		if err := s.SetRetry(id, Retry{}); err == nil {
			t.Errorf("%q accepted", id)
		}
	}
	e := commitOne(t, s, "1.2")
	if err := validID(e.ID); err != nil {
		t.Fatalf("the spool's own ID %q rejected: %v", e.ID, err)
	}
}

func TestOpenDir(t *testing.T) {
	if _, err := OpenDir(t.TempDir()); err == nil {
		t.Fatal("an empty directory opened as a spool")
	}
	dir := t.TempDir()
	s := open(t, dir)
	commitOne(t, s, "1.2")
	// The operator's view works while the daemon holds the lock.
	d, err := OpenDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if items, err := d.Items(StateQueued); err != nil || len(items) != 1 {
		t.Fatalf("%v %v", items, err)
	}
	if _, err := ParseState("bogus"); err == nil {
		t.Fatal("bogus state parsed")
	}
}
