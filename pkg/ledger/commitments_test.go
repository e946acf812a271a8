package ledger

import (
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func commitReq(tx string, refs ...CommitRef) Commitment {
	return Commitment{CallingAE: "MODALITY", TransactionUID: tx, CalledAE: "DICOMGW", Peer: "127.0.0.1", Mode: "delivered",
		Refs: refs, RequestedAt: base, Deadline: base.Add(24 * time.Hour)}
}

// TestCommitmentLifecycle: a request is recorded, decided, its report
// attempted and acknowledged; each step only from the state before it, and
// all of it survives a reopen (a restart neither forgets nor repeats).
func TestCommitmentLifecycle(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	l, _ := openTest(t, Config{Path: path})
	refs := []CommitRef{{"1.2.840.10008.5.1.4.1.1.2", "1.2.3.1"}, {"1.2.840.10008.5.1.4.1.1.2", "1.2.3.2"}}
	mustNil(t, l.AddCommitment(commitReq("1.2.9.1", refs...)))
	mustNil(t, l.AddCommitment(commitReq("1.2.9.2", refs[:1]...)))
	open, err := l.OpenCommitments()
	mustNil(t, err)
	if len(open) != 2 || open[0].TransactionUID != "1.2.9.1" || open[0].State != CommitWaiting || !reflect.DeepEqual(open[0].Refs, refs) ||
		!open[0].Deadline.Equal(base.Add(24*time.Hour)) || open[0].Mode != "delivered" || open[0].CalledAE != "DICOMGW" {
		t.Fatalf("open: %+v", open)
	}
	results := []CommitResult{{refs[0], 0}, {refs[1], 0x0112}}
	mustNil(t, l.DecideCommitment("MODALITY", "1.2.9.1", results, base.Add(time.Minute)))
	if err := l.DecideCommitment("MODALITY", "1.2.9.1", results, base); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("deciding twice: %v, want ErrNotOpen", err)
	}
	if err := l.CommitmentReported("MODALITY", "1.2.9.2", "new", base); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("reporting an undecided request: %v, want ErrNotOpen", err)
	}
	mustNil(t, l.CommitmentAttempted("MODALITY", "1.2.9.1", 1, base.Add(2*time.Minute), "connection refused"))
	mustNil(t, l.Close())

	l2, _ := openTest(t, Config{Path: path})
	open, err = l2.OpenCommitments()
	mustNil(t, err)
	if len(open) != 2 {
		t.Fatalf("after reopen: %d open, want 2", len(open))
	}
	c := open[0]
	if c.State != CommitReporting || !reflect.DeepEqual(c.Results, results) || c.Attempts != 1 || c.LastError != "connection refused" ||
		!c.NextAttempt.Equal(base.Add(2*time.Minute)) || !c.DecidedAt.Equal(base.Add(time.Minute)) {
		t.Fatalf("after reopen: %+v", c)
	}
	mustNil(t, l2.CommitmentReported("MODALITY", "1.2.9.1", "new", base.Add(3*time.Minute)))
	if err := l2.CommitmentReported("MODALITY", "1.2.9.1", "new", base); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("reporting twice: %v, want ErrNotOpen", err)
	}
	got, ok, err := l2.Commitment("MODALITY", "1.2.9.1")
	mustNil(t, err)
	if !ok || got.State != CommitReported || got.Via != "new" || !got.ReportedAt.Equal(base.Add(3*time.Minute)) {
		t.Fatalf("reported: %+v %v", got, ok)
	}
	open, _ = l2.OpenCommitments()
	if len(open) != 1 || open[0].TransactionUID != "1.2.9.2" {
		t.Fatalf("open after the report: %+v", open)
	}
	// The same Transaction UID again starts over.
	mustNil(t, l2.AddCommitment(commitReq("1.2.9.1", refs[1:]...)))
	got, _, _ = l2.Commitment("MODALITY", "1.2.9.1")
	if got.State != CommitWaiting || len(got.Results) != 0 || got.Via != "" || !reflect.DeepEqual(got.Refs, refs[1:]) {
		t.Fatalf("repeated request: %+v", got)
	}
	// Another requester may use the same Transaction UID.
	other := commitReq("1.2.9.1", refs...)
	other.CallingAE = "OTHER"
	mustNil(t, l2.AddCommitment(other))
	open, _ = l2.OpenCommitments()
	if len(open) != 3 {
		t.Fatalf("%d open, want 3", len(open))
	}
	all, err := l2.Commitments(0)
	mustNil(t, err)
	if len(all) != 3 {
		t.Fatalf("Commitments: %d, want 3", len(all))
	}
	if two, _ := l2.Commitments(2); len(two) != 2 {
		t.Fatalf("Commitments(2): %d", len(two))
	}
}

// TestCommitmentAbandonAndPrune: abandoned and reported requests are
// pruned once old; open ones never are.
func TestCommitmentAbandonAndPrune(t *testing.T) {
	l, _ := openTest(t, Config{})
	now := base
	l.now = func() time.Time { return now }
	ref := CommitRef{"1.2.840.10008.5.1.4.1.1.2", "1.2.3.1"}
	for _, tx := range []string{"1.1", "1.2", "1.3"} {
		mustNil(t, l.AddCommitment(commitReq(tx, ref)))
	}
	mustNil(t, l.DecideCommitment("MODALITY", "1.1", []CommitResult{{ref, 0}}, now))
	mustNil(t, l.DecideCommitment("MODALITY", "1.2", []CommitResult{{ref, 0}}, now))
	if err := l.CommitmentAbandoned("MODALITY", "1.3", "never decided"); !errors.Is(err, ErrNotOpen) {
		t.Fatalf("abandoning a waiting request: %v", err)
	}
	mustNil(t, l.CommitmentAbandoned("MODALITY", "1.1", "connection refused for 24h"))
	mustNil(t, l.CommitmentReported("MODALITY", "1.2", "same", now))
	now = base.Add(48 * time.Hour)
	n, err := l.PruneCommitments(base.Add(time.Hour))
	mustNil(t, err)
	if n != 2 {
		t.Fatalf("pruned %d, want 2", n)
	}
	for tx, want := range map[string]bool{"1.1": false, "1.2": false, "1.3": true} {
		if _, ok, _ := l.Commitment("MODALITY", tx); ok != want {
			t.Errorf("%s kept: %v, want %v", tx, ok, want)
		}
	}
}

// TestInstancesBySOP: every object received with a SOP Instance UID comes
// back under it, with its deliveries; unknown UIDs are absent.
func TestInstancesBySOP(t *testing.T) {
	l, _ := openTest(t, Config{})
	a, b := obj(1, "1.2.1", "x", "y"), obj(2, "1.2.1", "x")
	again := obj(3, "1.2.1", "x")
	again.SOPInstanceUID = a.SOPInstanceUID // received twice
	mustNil(t, l.Ensure([]Object{a, b, again}))
	mustNil(t, l.Delivered(a.ID, "x", base))
	mustNil(t, l.Dead(b.ID, "x", "refused", base))
	got, err := l.InstancesBySOP([]string{a.SOPInstanceUID, b.SOPInstanceUID, "1.2.404"})
	mustNil(t, err)
	if len(got) != 2 || len(got[a.SOPInstanceUID]) != 2 || len(got[b.SOPInstanceUID]) != 1 {
		t.Fatalf("InstancesBySOP: %+v", got)
	}
	for _, o := range got[a.SOPInstanceUID] {
		if o.ID == a.ID && (len(o.Deliveries) != 2 || o.Deliveries[0].State != StateDelivered || o.Deliveries[1].State != StatePending) {
			t.Errorf("first copy: %+v", o.Deliveries)
		}
	}
	if d := got[b.SOPInstanceUID][0].Deliveries; len(d) != 1 || d[0].State != StateDead {
		t.Errorf("dead one: %+v", d)
	}
}

// TestCommitmentUnreadableRowSkipped: a row whose JSON or state is damaged
// is skipped and counted; the others are listed.
func TestCommitmentUnreadableRowSkipped(t *testing.T) {
	l, reg := openTest(t, Config{})
	ref := CommitRef{"1.2.840.10008.5.1.4.1.1.2", "1.2.3.1"}
	mustNil(t, l.AddCommitment(commitReq("1.1", ref)))
	mustNil(t, l.AddCommitment(commitReq("1.2", ref)))
	mustNil(t, l.AddCommitment(commitReq("1.3", ref)))
	if _, err := l.wdb.Exec(`UPDATE commitments SET refs = '[{' WHERE transaction_uid = '1.1'`); err != nil {
		t.Fatal(err)
	}
	if _, err := l.wdb.Exec(`UPDATE commitments SET state = 'waiting', requested_at = 'x' WHERE transaction_uid = '1.2'`); err != nil {
		t.Fatal(err)
	}
	open, err := l.OpenCommitments()
	mustNil(t, err)
	if len(open) != 1 || open[0].TransactionUID != "1.3" {
		t.Fatalf("open: %+v", open)
	}
	if n := metric(t, reg, "dicomgw_ledger_unreadable_rows_total"); n != 2 {
		t.Fatalf("unreadable rows counted: %v, want 2", n)
	}
}

// TestMigrationFromVersion1: a ledger of the first schema (before storage
// commitment and copies) is migrated at Open, its objects kept.
func TestMigrationFromVersion1(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	d, err := dsn(path, pragmas(time.Second))
	mustNil(t, err)
	db, err := sql.Open("sqlite", d)
	mustNil(t, err)
	if _, err := db.Exec(migrations[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(fmt.Sprintf("PRAGMA application_id = %d; PRAGMA user_version = 1", applicationID)); err != nil {
		t.Fatal(err)
	}
	o := obj(1, "1.2.1", "a")
	if _, err := db.Exec(`INSERT INTO objects (id, sop_instance_uid, received_at) VALUES (?, ?, ?)`, o.ID, o.SOPInstanceUID, base.UnixNano()); err != nil {
		t.Fatal(err)
	}
	mustNil(t, db.Close())
	if _, err := OpenReader(path); !errors.Is(err, ErrOlderSchema) {
		t.Fatalf("reader of a version 1 ledger: %v, want ErrOlderSchema", err)
	}
	l, _ := openTest(t, Config{Path: path})
	if _, ok, err := l.Object(o.ID); err != nil || !ok {
		t.Fatalf("object after migration: %v %v", ok, err)
	}
	mustNil(t, l.AddCommitment(commitReq("1.1", CommitRef{"1.2.840.10008.5.1.4.1.1.2", o.SOPInstanceUID})))
	var v int
	mustNil(t, l.rdb.QueryRow("PRAGMA user_version").Scan(&v))
	if v != SchemaVersion {
		t.Fatalf("user_version %d, want %d", v, SchemaVersion)
	}
}

// TestDeliveredCopy: a delivery of a copy that was not the original says
// what it was, for spool trace; a delivery of the original says nothing;
// a copy delivered again after a requeue is recorded anew.
func TestDeliveredCopy(t *testing.T) {
	l, _ := openTest(t, Config{})
	o := obj(1, "1.2.1", "pacs", "research")
	mustNil(t, l.Ensure([]Object{o}))
	mustNil(t, l.Delivered(o.ID, "pacs", base))
	mustNil(t, l.DeliveredCopy(o.ID, "research", "stamped ClinicalTrialSponsorName=KP-CT", base))
	got, ok, err := l.Object(o.ID)
	mustNil(t, err)
	if !ok || len(got.Deliveries) != 2 || got.Deliveries[0].Copy != "" || got.Deliveries[1].Copy != "stamped ClinicalTrialSponsorName=KP-CT" {
		t.Fatalf("deliveries: %+v", got.Deliveries)
	}
	// A delivery recorded for an object the ledger did not know yet.
	mustNil(t, l.DeliveredCopy("unknown-object", "research", "stamped X=Y", base))
	d, ok, err := l.Delivery("unknown-object", "research")
	mustNil(t, err)
	if !ok || d.Copy != "stamped X=Y" || d.State != StateDelivered {
		t.Fatalf("delivery of an object not received yet: %+v %v", d, ok)
	}
}
