package ledger

import (
	"strings"
	"testing"
	"time"
)

// Every read the ledger makes is answered by an index (or the primary key)
// and, where it lists, in index order: no statement scans a whole table or
// sorts what it lists, so Trace, Pending and DeadLetters stay fast over 30
// days of objects. Checked on a filled ledger after ANALYZE, as SQLite plans
// with statistics.
func TestQueriesUseIndexes(t *testing.T) {
	l, _ := openTest(t, Config{})
	var objs []Object
	for i := range 3000 {
		o := obj(i, []string{"1.2.1", "1.2.2", "1.2.3"}[i%3], "a", "b", "c")
		o.CallingAE = []string{"CT1", "MR1"}[i%2]
		objs = append(objs, o)
	}
	mustNil(t, l.Ensure(objs))
	for i := range 300 {
		mustNil(t, l.Dead(objs[i].ID, "a", "refused", base.Add(time.Duration(i)*time.Second)))
		mustNil(t, l.Delivered(objs[i+300].ID, "b", base))
		l.Gone(objs[i+600].ID, base)
	}
	mustNil(t, l.Sync())
	if _, err := l.wdb.Exec("ANALYZE"); err != nil {
		t.Fatal(err)
	}

	trace := func(q Query) string { s, _ := traceSQL(q); return s }
	from, to := base, base.Add(time.Hour)
	for _, c := range []struct {
		name, sql string
		uses      string // in the plan: the index that answers
		// scan is the index a step may read whole: the partial index of
		// dead rows, the index in the order asked for under a LIMIT, a
		// covering index for counts. Every other step must SEARCH.
		scan string
	}{
		{"pending", sqlPending, "deliveries_queue", ""},
		{"dead letters", sqlDeadAny, "deliveries_dead_any", "COVERING INDEX deliveries_dead_any"},
		{"dead letters of a destination", sqlDeadDest, "deliveries_dead ", ""},
		{"destination stats", sqlStats, "deliveries_queue", "COVERING INDEX deliveries_queue"},
		{"dead letters by destination", sqlDeadStats, "COVERING INDEX deliveries_dead", "COVERING INDEX deliveries_dead"},
		{"object", sqlObject, "(id=?)", ""},
		{"delivery", sqlDelivery, "PRIMARY KEY (object_id=? AND destination=?)", ""},
		{"known", sqlKnown, "(id=?)", ""},
		{"objects", sqlObjects, "(id=?)", ""},
		{"deliveries of objects", sqlDeliveriesOf, "PRIMARY KEY (object_id=?)", ""},
		{"prune", sqlPruneSelect, "objects_gone", ""},
		{"in spool", sqlInSpool, "objects_here", ""},
		{"trace by study", trace(Query{StudyInstanceUID: "x"}), "objects_study", ""},
		{"trace by SOP", trace(Query{SOPInstanceUID: "x"}), "objects_sop", ""},
		{"trace by calling AE and time", trace(Query{CallingAE: "x", From: from, To: to}), "objects_calling (calling_ae=? AND received_at>? AND received_at<?)", ""},
		{"trace by time", trace(Query{From: from, To: to}), "objects_received (received_at>? AND received_at<?)", ""},
		{"trace of the newest", trace(Query{Limit: 10}), "objects_received", "INDEX objects_received"},
		{"objects by SOP instance", sqlObjectsBySOP, "objects_sop (sop_instance_uid=?)", ""},
		{"open commitments", sqlOpenCommitments, "commitments_open", ""},
		{"commitment", sqlCommitment, "PRIMARY KEY (calling_ae=? AND transaction_uid=?)", ""},
		{"commitments, newest first", sqlCommitments, "commitments_requested", ""},
		{"prune commitments", sqlPruneCommit, "commitments_done (updated_at<?)", ""},
	} {
		rows, err := l.rdb.Query("EXPLAIN QUERY PLAN "+c.sql, make([]any, strings.Count(c.sql, "?"))...)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var plan []string
		for rows.Next() {
			var id, parent, unused int
			var detail string
			if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
				t.Fatal(err)
			}
			plan = append(plan, detail)
		}
		rows.Close()
		p := strings.Join(plan, "; ")
		t.Logf("%s: %s", c.name, p)
		if !strings.Contains(p+" ", c.uses) {
			t.Errorf("%s: not answered by %s: %s", c.name, c.uses, p)
		}
		for _, step := range plan {
			switch {
			case strings.HasPrefix(step, "SEARCH objects USING"), strings.HasPrefix(step, "SEARCH deliveries USING"):
			case strings.HasPrefix(step, "SCAN objects"), strings.HasPrefix(step, "SCAN deliveries"):
				if c.scan == "" || !strings.HasSuffix(step, "USING "+c.scan) {
					t.Errorf("%s: reads a whole table or index: %s", c.name, p)
				}
			case strings.Contains(step, "TEMP B-TREE"):
				t.Errorf("%s: sorts: %s", c.name, p)
			}
		}
	}
}
