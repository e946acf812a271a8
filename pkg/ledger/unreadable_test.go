package ledger

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"
)

// Rows with unexpected content (a state outside the set, text where a time
// belongs), as a newer version or a hand edit might leave them, are skipped
// by the reads that list, counted, and reported by Object; the other rows
// are still answered.
func TestUnreadableRowsSkipped(t *testing.T) {
	l, reg := openTest(t, Config{})
	for i := range 4 {
		l.Received(obj(i, "1.2", "a", "b"))
	}
	mustNil(t, l.Dead(obj(3, "").ID, "a", "refused", base.Add(time.Hour)))
	badState, badObject := obj(1, "").ID, obj(2, "").ID
	if _, err := l.wdb.Exec(`UPDATE deliveries SET state = 'limbo' WHERE object_id = ? AND destination = 'a'`, badState); err != nil {
		t.Fatal(err)
	}
	if _, err := l.wdb.Exec(`UPDATE objects SET received_at = 'yesterday' WHERE id = ?`, badObject); err != nil {
		t.Fatal(err)
	}

	got, err := l.Trace(Query{StudyInstanceUID: "1.2"})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, o := range got {
		ids = append(ids, o.ID)
	}
	if !slices.Equal(ids, []string{obj(3, "").ID, obj(1, "").ID, obj(0, "").ID}) {
		t.Fatalf("trace: %v, want the readable objects 3, 1, 0", ids)
	}
	o1 := got[1]
	if len(o1.Deliveries) != 1 || o1.Deliveries[0].Destination != "b" || len(o1.Unreadable) != 1 || !strings.Contains(o1.Unreadable[0], `"limbo"`) {
		t.Fatalf("object with an unreadable delivery: %+v", o1)
	}
	if u := metric(t, reg, "dicomgw_ledger_unreadable_rows_total"); u != 2 {
		t.Fatalf("unreadable rows counted: %v, want 2", u)
	}

	o, ok, err := l.Object(badState)
	if err != nil || !ok || len(o.Unreadable) != 1 || len(o.Deliveries) != 1 {
		t.Fatalf("Object with an unreadable delivery: %+v %v %v", o, ok, err)
	}
	var re *RowError
	if _, _, err := l.Object(badObject); !errors.As(err, &re) || re.Table != "objects" || re.ObjectID != badObject {
		t.Fatalf("Object of an unreadable row: %v", err)
	}
	if _, _, err := l.Delivery(badState, "a"); !errors.As(err, &re) || re.Destination != "a" {
		t.Fatalf("Delivery of an unreadable row: %v", err)
	}

	s, err := l.DestinationStats()
	if err != nil || s["a"].Pending != 2 || s["a"].Dead != 1 || s["b"].Pending != 4 {
		t.Fatalf("stats with an unknown state: %+v %v", s, err)
	}
	p, err := l.Pending("a", 0)
	if err != nil || !slices.Equal(p, []string{obj(0, "").ID, badObject}) {
		t.Fatalf("pending a: %v %v", p, err)
	}
	if dl, err := l.DeadLetters("", 0); err != nil || len(dl) != 1 {
		t.Fatalf("dead letters: %v %v", dl, err)
	}

	// A Reader counts what it skipped, for the command to report.
	r, err := OpenReader(l.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if got, err := r.Trace(Query{}); err != nil || len(got) != 3 || r.Skipped() != 2 {
		t.Fatalf("reader trace: %d objects, %d skipped, %v", len(got), r.Skipped(), err)
	}
}
