package ledger

import (
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// A new file gets the current schema, marked as a ledger; an empty file
// (zero bytes) too.
func TestMigrationFromEmpty(t *testing.T) {
	for _, name := range []string{"absent", "zero-bytes", "odd-path"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ledger.db")
			if name == "odd-path" { // a path is a path, not a URI: '?', '#', '%' included
				dir := filepath.Join(t.TempDir(), "spool?mode=ro#x%41 y")
				if err := os.Mkdir(dir, 0o750); err != nil {
					t.Fatal(err)
				}
				path = filepath.Join(dir, "ledger.db")
			}
			if name == "zero-bytes" {
				if err := os.WriteFile(path, nil, 0o600); err != nil {
					t.Fatal(err)
				}
			}
			l, _ := openTest(t, Config{Path: path})
			var version, app int
			var mode string
			if err := l.rdb.QueryRow("PRAGMA user_version").Scan(&version); err != nil {
				t.Fatal(err)
			}
			if err := l.rdb.QueryRow("PRAGMA application_id").Scan(&app); err != nil {
				t.Fatal(err)
			}
			if err := l.rdb.QueryRow("PRAGMA journal_mode").Scan(&mode); err != nil {
				t.Fatal(err)
			}
			if version != SchemaVersion || app != applicationID || mode != "wal" {
				t.Fatalf("user_version %d application_id %#x journal_mode %s, want %d %#x wal", version, app, mode, SchemaVersion, applicationID)
			}
			var sync int
			if err := l.wdb.QueryRow("PRAGMA synchronous").Scan(&sync); err != nil {
				t.Fatal(err)
			}
			if sync != 2 {
				t.Fatalf("synchronous = %d, want 2 (FULL)", sync)
			}
			l.Received(obj(1, "1.2.3", "a"))
			mustNil(t, l.Sync())
			if name == "absent" { // made with the spool's permissions, and so is its WAL
				for _, p := range []string{path, path + "-wal", path + "-shm"} {
					if st, err := os.Stat(p); err != nil || st.Mode().Perm()&^0o640 != 0 {
						t.Fatalf("%s: %v %v, want at most rw-r-----", p, st.Mode(), err)
					}
				}
			}
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			// Opened again: nothing to migrate, the row is there.
			l2, _ := openTest(t, Config{Path: path})
			if _, ok, err := l2.Object(obj(1, "1.2.3").ID); err != nil || !ok {
				t.Fatalf("after reopening: ok=%v err=%v", ok, err)
			}
			r, err := OpenReader(path)
			if err != nil {
				t.Fatal(err)
			}
			defer r.Close()
			if _, ok, err := r.Object(obj(1, "1.2.3").ID); err != nil || !ok {
				t.Fatalf("reader: ok=%v err=%v", ok, err)
			}
			if _, err := os.Stat(path); err != nil {
				t.Fatalf("the ledger is not where it was asked to be: %v", err)
			}
		})
	}
}

func TestLifecycleAndTrace(t *testing.T) {
	l, _ := openTest(t, Config{})
	const study, other = "1.2.3.4", "1.2.3.5"
	for i := range 5 {
		l.Received(obj(i, study, "pacs", "research"))
	}
	l.Received(obj(10, other, "pacs"))
	r := Retry{Attempts: 2, FirstFailure: base.Add(time.Minute), NextAttempt: base.Add(3 * time.Minute),
		LastError: "HTTP 503", Unconfirmed: 1, Delay: 2 * time.Minute}
	l.Attempted(obj(1, study).ID, "research", r)
	if err := l.Delivered(obj(0, study).ID, "pacs", base.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := l.Dead(obj(2, study).ID, "research", "0xA900 dataset does not match SOP class", base.Add(2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	l.Gone(obj(10, other).ID, base.Add(3*time.Hour))
	if err := l.Sync(); err != nil {
		t.Fatal(err)
	}

	got, err := l.Trace(Query{StudyInstanceUID: study})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 5 {
		t.Fatalf("trace of the study: %d objects, want 5", len(got))
	}
	for i, o := range got { // newest first
		want := obj(4-i, study, "pacs", "research")
		if o.ID != want.ID || o.SOPInstanceUID != want.SOPInstanceUID || o.CallingAE != "MODALITY" ||
			o.CalledAE != "DICOMGW" || o.Peer != want.Peer || o.Size != want.Size || !o.Received.Equal(want.Received) ||
			o.SeriesInstanceUID != want.SeriesInstanceUID || o.TransferSyntaxUID != want.TransferSyntaxUID ||
			o.SOPClassUID != want.SOPClassUID || o.Incomplete || !o.GoneAt.IsZero() {
			t.Fatalf("trace[%d] = %+v, want %+v", i, o, want)
		}
		if !slices.Equal(o.Destinations, []string{"pacs", "research"}) || len(o.Deliveries) != 2 {
			t.Fatalf("trace[%d] destinations %v deliveries %+v", i, o.Destinations, o.Deliveries)
		}
	}
	o0 := got[4]
	if d := o0.Deliveries[0]; d.Destination != "pacs" || d.State != StateDelivered || !d.DeliveredAt.Equal(base.Add(time.Hour)) || d.UpdatedAt.IsZero() {
		t.Fatalf("delivered: %+v", d)
	}
	if d := o0.Deliveries[1]; d.Destination != "research" || d.State != StatePending {
		t.Fatalf("still pending: %+v", d)
	}
	d, ok, err := l.Delivery(obj(1, study).ID, "research")
	if err != nil || !ok || d.State != StatePending || d.Retry.Attempts != 2 || d.Retry.LastError != "HTTP 503" ||
		!d.Retry.FirstFailure.Equal(r.FirstFailure) || !d.Retry.NextAttempt.Equal(r.NextAttempt) ||
		d.Retry.Unconfirmed != 1 || d.Retry.Delay != 2*time.Minute {
		t.Fatalf("attempted: %+v ok=%v err=%v", d, ok, err)
	}
	d, ok, err = l.Delivery(obj(2, study).ID, "research")
	if err != nil || !ok || d.State != StateDead || d.DeadReason != "0xA900 dataset does not match SOP class" || !d.DeadAt.Equal(base.Add(2*time.Hour)) {
		t.Fatalf("dead: %+v ok=%v err=%v", d, ok, err)
	}
	if _, ok, err := l.Delivery(obj(2, study).ID, "nowhere"); ok || err != nil {
		t.Fatalf("unknown destination: ok=%v err=%v", ok, err)
	}

	// By SOP, by calling AE and time range, limit.
	if got, err := l.Trace(Query{SOPInstanceUID: obj(3, study).SOPInstanceUID}); err != nil || len(got) != 1 || got[0].ID != obj(3, study).ID {
		t.Fatalf("trace by SOP: %v %v", got, err)
	}
	got, err = l.Trace(Query{CallingAE: "MODALITY", From: base.Add(time.Second), To: base.Add(4 * time.Second)})
	if err != nil || len(got) != 3 || got[0].ID != obj(3, study).ID || got[2].ID != obj(1, study).ID {
		t.Fatalf("trace by calling AE and range [1s, 4s): %d objects, err %v", len(got), err)
	}
	if got, err := l.Trace(Query{CallingAE: "OTHER"}); err != nil || len(got) != 0 {
		t.Fatalf("trace of an unknown AE: %v %v", got, err)
	}
	if got, err := l.Trace(Query{Limit: 2}); err != nil || len(got) != 2 || got[0].ID != obj(10, other).ID {
		t.Fatalf("trace with limit: %v %v", got, err)
	}
	gone, ok, err := l.Object(obj(10, other).ID)
	if err != nil || !ok || !gone.GoneAt.Equal(base.Add(3*time.Hour)) {
		t.Fatalf("gone object: %+v %v %v", gone, ok, err)
	}
	if _, ok, err := l.Object("nope"); ok || err != nil {
		t.Fatalf("unknown object: ok=%v err=%v", ok, err)
	}

	// Pending: oldest received first, per destination.
	p, err := l.Pending("research", 0)
	if err != nil || !slices.Equal(p, []string{obj(0, study).ID, obj(1, study).ID, obj(3, study).ID, obj(4, study).ID}) {
		t.Fatalf("pending research: %v %v", p, err)
	}
	p, err = l.Pending("pacs", 2)
	if err != nil || !slices.Equal(p, []string{obj(1, study).ID, obj(2, study).ID}) {
		t.Fatalf("pending pacs (limit 2): %v %v", p, err)
	}

	stats, err := l.DestinationStats()
	if err != nil {
		t.Fatal(err)
	}
	if s := stats["pacs"]; s.Pending != 5 || s.Delivered != 1 || s.Dead != 0 || !s.OldestPending.Equal(base.Add(time.Second)) {
		t.Fatalf("pacs stats %+v", s)
	}
	if s := stats["research"]; s.Pending != 4 || s.Delivered != 0 || s.Dead != 1 || !s.OldestPending.Equal(base) {
		t.Fatalf("research stats %+v", s)
	}
}

func TestDeadLettersAndRequeue(t *testing.T) {
	l, _ := openTest(t, Config{})
	for i := range 4 {
		l.Received(obj(i, "1.2.3", "a", "b"))
	}
	mustNil(t, l.Dead(obj(0, "").ID, "a", "refused", base.Add(time.Hour)))
	mustNil(t, l.Dead(obj(1, "").ID, "b", "refused", base.Add(2*time.Hour)))
	mustNil(t, l.Dead(obj(2, "").ID, "a", "refused", base.Add(3*time.Hour)))
	mustNil(t, l.Dead(obj(2, "").ID, "b", "refused", base.Add(30*time.Minute)))
	// A dead letter never overrides a confirmed delivery.
	mustNil(t, l.Delivered(obj(3, "").ID, "a", base.Add(time.Hour)))
	mustNil(t, l.Dead(obj(3, "").ID, "a", "late", base.Add(4*time.Hour)))

	ids := func(os []ObjectState) (s []string) {
		for _, o := range os {
			s = append(s, o.ID)
		}
		return s
	}
	dl, err := l.DeadLetters("a", 0)
	if err != nil || !slices.Equal(ids(dl), []string{obj(2, "").ID, obj(0, "").ID}) {
		t.Fatalf("dead letters of a: %v %v", ids(dl), err)
	}
	if len(dl[0].Deliveries) != 2 || dl[0].StudyInstanceUID != "1.2.3" {
		t.Fatalf("dead letter without its object: %+v", dl[0])
	}
	dl, err = l.DeadLetters("", 0)
	if err != nil || !slices.Equal(ids(dl), []string{obj(2, "").ID, obj(1, "").ID, obj(0, "").ID}) {
		t.Fatalf("dead letters of any destination: %v %v", ids(dl), err)
	}
	if dl, err := l.DeadLetters("", 1); err != nil || len(dl) != 1 {
		t.Fatalf("limit: %v %v", ids(dl), err)
	}

	// Requeue re-queues for that destination only, attempts cleared.
	l.Attempted(obj(2, "").ID, "b", Retry{Attempts: 3}) // ignored: b is dead
	mustNil(t, l.Requeue(obj(2, "").ID, "a"))
	d, _, _ := l.Delivery(obj(2, "").ID, "a")
	if d.State != StatePending || d.DeadReason != "" || !d.DeadAt.IsZero() || d.Retry.Attempts != 0 {
		t.Fatalf("requeued: %+v", d)
	}
	if d, _, _ := l.Delivery(obj(2, "").ID, "b"); d.State != StateDead {
		t.Fatalf("the other destination's dead letter: %+v", d)
	}
	if err := l.Requeue(obj(2, "").ID, "a"); !errors.Is(err, ErrNotDead) {
		t.Fatalf("requeue of a pending delivery: %v", err)
	}
	if err := l.Requeue("nope", "a"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("requeue of an unknown object: %v", err)
	}
	l.Gone(obj(1, "").ID, base.Add(5*time.Hour))
	if err := l.Requeue(obj(1, "").ID, "b"); !errors.Is(err, ErrGone) {
		t.Fatalf("requeue of a gone object: %v", err)
	}
	// A dead letter whose object left the spool (purged) is remembered by
	// Trace, but waits for nobody: not listed, not counted.
	mustNil(t, l.Sync())
	if dl, err := l.DeadLetters("b", 0); err != nil || !slices.Equal(ids(dl), []string{obj(2, "").ID}) {
		t.Fatalf("dead letters of b after one left the spool: %v %v", ids(dl), err)
	}
	stats, err := l.DestinationStats()
	if err != nil || stats["b"].Dead != 1 || stats["a"].Dead != 1 {
		t.Fatalf("dead counts after one left the spool: %+v %v", stats, err)
	}
	if o, ok, err := l.Object(obj(1, "").ID); err != nil || !ok || o.GoneAt.IsZero() || o.Deliveries[1].State != StateDead {
		t.Fatalf("the purged dead letter in the ledger: %+v %v %v", o, ok, err)
	}
}

// Ensure inserts what is missing, leaves what is known (and its later
// state) alone, and completes rows made by later events.
func TestEnsureIdempotent(t *testing.T) {
	l, _ := openTest(t, Config{})
	objs := []Object{obj(0, "1.2", "a"), obj(1, "1.2", "a", "b"), obj(2, "1.2", "b")}
	l.Received(objs[0])
	mustNil(t, l.Delivered(objs[0].ID, "a", base.Add(time.Hour)))
	// A delivery recorded before the receipt (the receipt was lost in a
	// crash): the object is known only from it.
	mustNil(t, l.Delivered(objs[2].ID, "b", base.Add(2*time.Hour)))
	known, err := l.Known([]string{objs[0].ID, objs[1].ID, objs[2].ID})
	if err != nil || !known[objs[0].ID] || known[objs[1].ID] || known[objs[2].ID] {
		t.Fatalf("known before Ensure: %v %v", known, err)
	}
	if o, ok, err := l.Object(objs[2].ID); err != nil || !ok || !o.Incomplete || len(o.Deliveries) != 1 {
		t.Fatalf("incomplete object: %+v %v %v", o, ok, err)
	}
	for range 2 {
		mustNil(t, l.Ensure(objs))
	}
	known, err = l.Known([]string{objs[0].ID, objs[1].ID, objs[2].ID, "other"})
	if err != nil || !known[objs[0].ID] || !known[objs[1].ID] || !known[objs[2].ID] || known["other"] || len(known) != 4 {
		t.Fatalf("known after Ensure: %v %v", known, err)
	}
	if d, _, _ := l.Delivery(objs[0].ID, "a"); d.State != StateDelivered {
		t.Fatalf("Ensure reset a delivered object: %+v", d)
	}
	o, ok, err := l.Object(objs[2].ID)
	if err != nil || !ok || o.Incomplete || o.SOPInstanceUID != objs[2].SOPInstanceUID || !o.Received.Equal(objs[2].Received) ||
		len(o.Deliveries) != 1 || o.Deliveries[0].State != StateDelivered {
		t.Fatalf("completed object: %+v %v %v", o, ok, err)
	}
	var n int
	if err := l.rdb.QueryRow("SELECT count(*) FROM deliveries").Scan(&n); err != nil || n != 4 {
		t.Fatalf("%d delivery rows after Ensure twice, want 4 (%v)", n, err)
	}
	var recv int64
	if err := l.rdb.QueryRow("SELECT received_at FROM deliveries WHERE object_id = ?", objs[2].ID).Scan(&recv); err != nil || recv != objs[2].Received.UnixNano() {
		t.Fatalf("a completed object's delivery keeps the event's time as receive time: %d (%v)", recv, err)
	}
}

func TestPrune(t *testing.T) {
	l, _ := openTest(t, Config{PruneChunk: 3})
	for i := range 10 {
		l.Received(obj(i, "1.2", "a", "b"))
	}
	for i := range 7 { // 0..6 gone, at base+i hours
		l.Gone(obj(i, "").ID, base.Add(time.Duration(i)*time.Hour))
	}
	n, err := l.Prune(base.Add(5 * time.Hour)) // 0..4: two chunks of 3 and 2
	if err != nil || n != 5 {
		t.Fatalf("Prune = %d, %v; want 5", n, err)
	}
	left, err := l.Trace(Query{})
	if err != nil || len(left) != 5 {
		t.Fatalf("after prune: %d objects (%v)", len(left), err)
	}
	for _, o := range left {
		if o.ID < obj(5, "").ID {
			t.Fatalf("object %s should be pruned", o.ID)
		}
	}
	var orphans int
	if err := l.rdb.QueryRow("SELECT count(*) FROM deliveries WHERE object_id NOT IN (SELECT id FROM objects)").Scan(&orphans); err != nil || orphans != 0 {
		t.Fatalf("%d deliveries left without their object (%v)", orphans, err)
	}
	// The objects not gone, paged.
	here, err := l.InSpool("", 2)
	if err != nil || !slices.Equal(here, []string{obj(7, "").ID, obj(8, "").ID}) {
		t.Fatalf("in spool: %v %v", here, err)
	}
	if here, err = l.InSpool(here[1], 0); err != nil || !slices.Equal(here, []string{obj(9, "").ID}) {
		t.Fatalf("in spool, second page: %v %v", here, err)
	}
	if n, err := l.Prune(base.Add(5 * time.Hour)); err != nil || n != 0 {
		t.Fatalf("second prune: %d %v", n, err)
	}
	if n, err := l.Prune(base.Add(100 * time.Hour)); err != nil || n != 2 {
		t.Fatalf("prune of the rest of the gone: %d %v", n, err)
	}
}

func TestOpenReaderMissing(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ledger.db")
	_, err := OpenReader(path)
	if !errors.Is(err, ErrNoLedger) || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), path) {
		t.Fatalf("OpenReader of a missing ledger: %v", err)
	}
	if _, err := OpenAdmin(path); !errors.Is(err, ErrNoLedger) {
		t.Fatalf("OpenAdmin of a missing ledger: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("OpenReader created %s", path)
	}
	// An empty file (not a ledger yet) is refused too, and left empty.
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenReader(path); !errors.Is(err, ErrOlderSchema) {
		t.Fatalf("OpenReader of an empty file: %v", err)
	}
	if st, _ := os.Stat(path); st.Size() != 0 {
		t.Fatalf("OpenReader wrote to %s", path)
	}
}

// A ledger of a newer schema is refused by every opener, and not touched.
func TestNewerSchemaRefused(t *testing.T) {
	l, _ := openTest(t, Config{})
	path := l.cfg.Path
	mustNil(t, l.Close())
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("PRAGMA user_version = 99"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(Config{Path: path}, nil, nil); !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("Open: %v", err)
	}
	if _, err := OpenReader(path); !errors.Is(err, ErrNewerSchema) {
		t.Fatalf("OpenReader: %v", err)
	}
	if _, err := OpenAdmin(path); !errors.Is(err, ErrNewerSchema) || !strings.Contains(err.Error(), "99") {
		t.Fatalf("OpenAdmin: %v", err)
	}
}

// Garbage bytes, and an SQLite database of something else, are refused at
// Open with errors that name the file, and left as they are.
func TestDamagedFileRefused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ledger.db")
	garbage := []byte(strings.Repeat("this is not an SQLite database\x00\x01\x02", 200))
	if err := os.WriteFile(path, garbage, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := Open(Config{Path: path}, nil, nil)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), path) {
		t.Fatalf("Open of garbage: %v", err)
	}
	if b, _ := os.ReadFile(path); string(b) != string(garbage) {
		t.Fatal("Open changed the damaged file")
	}
	if _, err := OpenReader(path); !errors.Is(err, ErrDamaged) {
		t.Fatalf("OpenReader of garbage: %v", err)
	}

	// A valid database with corrupt pages: quick_check refuses it.
	l, _ := openTest(t, Config{Path: filepath.Join(dir, "corrupt.db")})
	for i := range 2000 {
		l.Received(obj(i, "1.2.3.4.5.6.7.8.9", "a", "b"))
	}
	mustNil(t, l.Close())
	b, err := os.ReadFile(l.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	// Smash the pages after the first two (the header and the schema stay
	// readable, so the damage is inside the tables and indexes).
	for i := 3 * 4096; i < len(b) && i < 40*4096; i++ {
		b[i] = byte(i * 7)
	}
	if err := os.WriteFile(l.cfg.Path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Open(Config{Path: l.cfg.Path}, nil, nil)
	t.Logf("corrupt: %v", err)
	if !errors.Is(err, ErrDamaged) || !strings.Contains(err.Error(), l.cfg.Path) {
		t.Fatalf("Open of a corrupt database: %v", err)
	}

	other := filepath.Join(dir, "other.db")
	db, err := sql.Open("sqlite", other)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec("CREATE TABLE t (x)"); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := Open(Config{Path: other}, nil, nil); !errors.Is(err, ErrNotLedger) || !strings.Contains(err.Error(), other) {
		t.Fatalf("Open of another application's database: %v", err)
	}
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
