package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// holdWriteLock takes the database's write lock from another connection
// (as an operator's command would) until the returned function is called.
func holdWriteLock(t *testing.T, path string) (release func()) {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	conn, err := db.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			if _, err := conn.ExecContext(ctx, "ROLLBACK"); err != nil {
				t.Error(err)
			}
			conn.Close()
			db.Close()
		})
	}
	t.Cleanup(release)
	return release
}

// Many concurrent Delivered callers share commits: while the writer waits
// for the write lock, every caller queues; once it is free, they are all
// committed in at most two transactions (the one the writer had begun, and
// the one that takes the rest), not one each.
func TestConcurrentDeliveredShareCommits(t *testing.T) {
	const n = 200
	l, reg := openTest(t, Config{})
	for i := range n {
		l.Received(obj(i, "1.2", "a"))
	}
	mustNil(t, l.Sync())
	before := metric(t, reg, "dicomgw_ledger_transactions_total")
	opsBefore := histogramSum(t, reg, "dicomgw_ledger_transaction_operations")

	release := holdWriteLock(t, l.cfg.Path)
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Go(func() { errs <- l.Delivered(obj(i, "").ID, "a", base.Add(time.Hour)) })
	}
	waitFor(t, "every caller queued", func() bool { return metric(t, reg, "dicomgw_ledger_queued_operations") == n })
	release()
	wg.Wait()
	close(errs)
	for err := range errs {
		mustNil(t, err)
	}
	commits := metric(t, reg, "dicomgw_ledger_transactions_total") - before
	ops := histogramSum(t, reg, "dicomgw_ledger_transaction_operations") - opsBefore
	t.Logf("%d Delivered callers: %v transactions", n, commits)
	if commits < 1 || commits > 2 || ops != n {
		t.Fatalf("%d concurrent Delivered callers took %v transactions holding %v operations; want at most 2 holding %d", n, commits, ops, n)
	}
	if q := metric(t, reg, "dicomgw_ledger_queued_operations"); q != 0 {
		t.Fatalf("queue length %v after everything returned", q)
	}
	s, err := l.DestinationStats()
	if err != nil || s["a"].Delivered != n {
		t.Fatalf("stats %+v %v", s, err)
	}
}

// Asynchronous operations are committed in batches of at most MaxBatch.
func TestReceivedBatches(t *testing.T) {
	const n = 1000
	l, reg := openTest(t, Config{MaxBatch: 100, FlushEvery: time.Hour})
	release := holdWriteLock(t, l.cfg.Path)
	for i := range n {
		l.Received(obj(i, "1.2", "a", "b"))
	}
	release()
	mustNil(t, l.Sync())
	commits := metric(t, reg, "dicomgw_ledger_transactions_total")
	if commits < n/100 || commits > n/100+2 {
		t.Fatalf("%d Received in %v transactions with MaxBatch 100", n, commits)
	}
	s, err := l.DestinationStats()
	if err != nil || s["a"].Pending != n || s["b"].Pending != n {
		t.Fatalf("stats %+v %v", s, err)
	}
}

// Once Delivered has returned, the delivery is in the file: another
// connection sees it at once, and so does a fresh Open after Close.
func TestDeliveredIsDurable(t *testing.T) {
	l, _ := openTest(t, Config{FlushEvery: time.Hour})
	o := obj(1, "1.2", "a")
	l.Received(o)
	mustNil(t, l.Delivered(o.ID, "a", base.Add(time.Minute)))
	r, err := OpenReader(l.cfg.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if d, ok, err := r.Delivery(o.ID, "a"); err != nil || !ok || d.State != StateDelivered {
		t.Fatalf("another connection sees %+v %v %v", d, ok, err)
	}
	mustNil(t, l.Close())
	l2, _ := openTest(t, Config{Path: l.cfg.Path})
	if d, ok, err := l2.Delivery(o.ID, "a"); err != nil || !ok || d.State != StateDelivered {
		t.Fatalf("a fresh Open sees %+v %v %v", d, ok, err)
	}
}

func init() {
	// crash: receive and deliver objects one after another, printing each
	// ID once Delivered has returned, until killed.
	children["crash"] = func(path string, out io.Writer) error {
		l, err := Open(Config{Path: path}, nil, nil)
		if err != nil {
			return err
		}
		for i := 0; ; i++ {
			o := obj(i, "1.2.3", "a", "b")
			l.Received(o)
			l.Attempted(o.ID, "b", Retry{Attempts: 1, LastError: "down"})
			if err := l.Delivered(o.ID, "a", base.Add(time.Hour)); err != nil {
				return err
			}
			fmt.Fprintln(out, o.ID)
		}
	}
}

// A daemon killed with SIGKILL loses no delivery whose Delivered had
// returned: the child prints each ID after Delivered returns, and every
// printed ID is delivered after the kill, for a Reader (an operator's
// command run right after the crash) and for the next Open.
func TestCrashLosesNothingConfirmed(t *testing.T) {
	path := t.TempDir() + "/ledger.db"
	cmd, out := startChild(t, "crash", path)
	var confirmed []string
	for len(confirmed) < 200 && out.Scan() {
		confirmed = append(confirmed, out.Text())
	}
	if len(confirmed) < 200 {
		t.Fatalf("child confirmed only %d", len(confirmed))
	}
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()
	for out.Scan() { // lines written before the kill were confirmed too
		confirmed = append(confirmed, out.Text())
	}

	r, err := OpenReader(path)
	if err != nil {
		t.Fatal(err)
	}
	check := func(who string, q interface {
		Object(string) (ObjectState, bool, error)
	}) {
		for _, id := range confirmed {
			o, ok, err := q.Object(id)
			if err != nil || !ok || o.Incomplete || len(o.Deliveries) != 2 || o.Deliveries[0].State != StateDelivered {
				t.Fatalf("%s: confirmed object %s after SIGKILL: %+v ok=%v err=%v", who, id, o, ok, err)
			}
			if d := o.Deliveries[1]; d.State != StatePending || d.Retry.Attempts != 1 {
				t.Fatalf("%s: its other delivery: %+v", who, d)
			}
		}
	}
	check("reader", r)
	r.Close()
	l, _ := openTest(t, Config{Path: path})
	check("reopened", l)
	t.Logf("%d confirmed deliveries survived SIGKILL", len(confirmed))
}

func init() {
	// requeue: as an operator's command, re-queue every dead letter of
	// destination a, one commit each.
	children["requeue"] = func(path string, out io.Writer) error {
		a, err := OpenAdmin(path)
		if err != nil {
			return err
		}
		defer a.Close()
		dead, err := a.DeadLetters("a", 0)
		if err != nil {
			return err
		}
		for _, o := range dead {
			if err := a.Requeue(o.ID, "a"); err != nil {
				return err
			}
		}
		fmt.Fprintln(out, len(dead))
		return nil
	}
}

// An operator's requeue from another process while the daemon's writer is
// busy: neither side sees SQLITE_BUSY (they wait for each other), and every
// dead letter of that destination, and only that one, is pending again.
func TestOperatorWritesBesideTheWriter(t *testing.T) {
	const dead = 300
	l, reg := openTest(t, Config{})
	for i := range dead {
		o := obj(i, "1.2", "a", "b")
		l.Received(o)
		mustNil(t, l.Dead(o.ID, "a", "refused", base.Add(time.Hour)))
		mustNil(t, l.Dead(o.ID, "b", "refused", base.Add(time.Hour)))
	}

	stop := make(chan struct{})
	var wg sync.WaitGroup
	var writeErr error
	var written int
	wg.Go(func() { // the daemon keeps receiving and delivering
		for i := dead; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			o := obj(i, "1.3", "a")
			l.Received(o)
			if err := l.Delivered(o.ID, "a", base.Add(time.Hour)); err != nil {
				writeErr = err
				return
			}
			written++
		}
	})
	cmd, out := startChild(t, "requeue", l.cfg.Path)
	var line string
	if out.Scan() {
		line = out.Text()
	}
	err := cmd.Wait()
	close(stop)
	wg.Wait()
	if err != nil || line != fmt.Sprint(dead) {
		t.Fatalf("operator's requeue: %v (printed %q)", err, line)
	}
	mustNil(t, writeErr)
	if f := metric(t, reg, "dicomgw_ledger_commit_failures_total"); f != 0 {
		t.Fatalf("%v commit failures in the daemon", f)
	}
	s, err := l.DestinationStats()
	if err != nil {
		t.Fatal(err)
	}
	if s["a"].Pending != dead || s["a"].Dead != 0 || s["b"].Dead != dead || s["a"].Delivered != written {
		t.Fatalf("after requeue of a: %+v (daemon delivered %d meanwhile)", s, written)
	}
	t.Logf("%d requeued by another process while the daemon committed %d deliveries", dead, written)
}

// While commits fail (here: another connection holds the write lock longer
// than the busy timeout), a synchronous caller gets the error after
// CommitTimeout and its delivery is not recorded (it keeps its file);
// queued receipts are kept and committed once the lock is free.
func TestFailingCommitsBounded(t *testing.T) {
	l, reg := openTest(t, Config{BusyTimeout: 10 * time.Millisecond, CommitTimeout: 200 * time.Millisecond})
	a, b := obj(1, "1.2", "x"), obj(2, "1.2", "x")
	l.Received(a)
	mustNil(t, l.Sync())
	release := holdWriteLock(t, l.cfg.Path)
	l.Received(b)
	err := l.Delivered(a.ID, "x", base.Add(time.Hour))
	if err == nil || !strings.Contains(err.Error(), "not committed after") {
		t.Fatalf("Delivered while the ledger cannot commit: %v", err)
	}
	if metric(t, reg, "dicomgw_ledger_commit_failures_total") == 0 || metric(t, reg, "dicomgw_ledger_rejected_operations_total", "reason", "timeout") != 1 {
		t.Fatal("failures not counted")
	}
	release()
	// The writer retries with a growing wait; on a loaded machine its next
	// try may come later than one CommitTimeout after the release.
	waitFor(t, "a commit once the lock is free", func() bool { return l.Sync() == nil })
	if d, _, _ := l.Delivery(a.ID, "x"); d.State != StatePending {
		t.Fatalf("a delivery whose caller got an error is recorded anyway: %+v", d)
	}
	if _, ok, err := l.Object(b.ID); !ok || err != nil {
		t.Fatalf("a receipt queued while commits failed was lost: %v %v", ok, err)
	}
}

// A synchronous caller queued behind operations that cannot be committed
// (it is not even in the batch the writer keeps trying) still gets its
// error after CommitTimeout, and what it asked for is never written.
func TestSyncCallerBehindStuckQueue(t *testing.T) {
	l, reg := openTest(t, Config{BusyTimeout: 10 * time.Millisecond, CommitTimeout: 200 * time.Millisecond,
		MaxBatch: 2, FlushEvery: time.Millisecond})
	a := obj(0, "1.2", "x")
	l.Received(a)
	mustNil(t, l.Sync())
	release := holdWriteLock(t, l.cfg.Path)
	for i := 1; i <= 5; i++ {
		l.Received(obj(i, "1.2", "x"))
	}
	err := l.Delivered(a.ID, "x", base.Add(time.Hour))
	if err == nil || !strings.Contains(err.Error(), "not committed after") || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("Delivered behind a stuck queue: %v", err)
	}
	if metric(t, reg, "dicomgw_ledger_rejected_operations_total", "reason", "timeout") != 1 {
		t.Fatal("timeout not counted")
	}
	release()
	// The writer retries with a growing wait; on a loaded machine its next
	// try may come later than one CommitTimeout after the release.
	waitFor(t, "a commit once the lock is free", func() bool { return l.Sync() == nil })
	if d, _, _ := l.Delivery(a.ID, "x"); d.State != StatePending {
		t.Fatalf("a delivery whose caller gave up was written: %+v", d)
	}
	if s, err := l.DestinationStats(); err != nil || s["x"].Pending != 6 {
		t.Fatalf("receipts queued while commits failed: %+v %v", s, err)
	}
	if q := metric(t, reg, "dicomgw_ledger_queued_operations"); q != 0 {
		t.Fatalf("queue length %v at rest", q)
	}
}

// Close gives up after CommitTimeout when commits keep failing, and says
// so; it does not hang.
func TestCloseGivesUp(t *testing.T) {
	l, reg := openTest(t, Config{BusyTimeout: 10 * time.Millisecond, CommitTimeout: 200 * time.Millisecond})
	holdWriteLock(t, l.cfg.Path)
	l.Received(obj(1, "1.2", "x"))
	err := l.Close()
	if err == nil || !strings.Contains(err.Error(), "1 operations not committed") {
		t.Fatalf("Close while commits fail: %v", err)
	}
	if metric(t, reg, "dicomgw_ledger_rejected_operations_total", "reason", "shutdown") != 1 {
		t.Fatal("loss at shutdown not counted")
	}
	if err := l.Delivered("x", "y", time.Now()); !errors.Is(err, ErrClosed) {
		t.Fatalf("Delivered after Close: %v", err)
	}
	l.Received(obj(2, "1.2", "x")) // must neither block nor panic
}

// An operation SQLite refuses however often it is tried (here: a trigger
// refuses one object) is rejected and counted; the operations batched with
// it are committed.
func TestBadOperationDoesNotStall(t *testing.T) {
	l, reg := openTest(t, Config{FlushEvery: time.Hour, MaxBatch: 3})
	if _, err := l.wdb.Exec(`CREATE TRIGGER refuse BEFORE INSERT ON objects WHEN NEW.sop_instance_uid = 'poison'
		BEGIN SELECT RAISE(ABORT, 'poisoned'); END`); err != nil {
		t.Fatal(err)
	}
	good1, bad, good2 := obj(1, "1.2", "x"), obj(2, "1.2", "x"), obj(3, "1.2", "x")
	bad.SOPInstanceUID = "poison"
	l.Received(good1)
	l.Received(bad)
	l.Received(good2) // the third fills the batch
	mustNil(t, l.Sync())
	for _, o := range []Object{good1, good2} {
		if _, ok, err := l.Object(o.ID); !ok || err != nil {
			t.Fatalf("%s batched with a refused operation was not committed: %v", o.ID, err)
		}
	}
	if _, ok, _ := l.Object(bad.ID); ok {
		t.Fatal("the refused object is there")
	}
	if metric(t, reg, "dicomgw_ledger_rejected_operations_total", "reason", "invalid") != 1 {
		t.Fatal("rejection not counted")
	}
	if err := l.Ensure([]Object{bad}); err == nil || !strings.Contains(err.Error(), "poisoned") {
		t.Fatalf("a synchronous caller of a refused operation: %v", err)
	}
}

// A queue full of operations makes enqueuers wait (counted), never drops.
func TestFullQueueWaits(t *testing.T) {
	const n = 50
	l, reg := openTest(t, Config{QueueSize: 5, MaxBatch: 5, FlushEvery: time.Millisecond})
	release := holdWriteLock(t, l.cfg.Path)
	done := make(chan struct{})
	go func() {
		for i := range n {
			l.Received(obj(i, "1.2", "x"))
		}
		close(done)
	}()
	waitFor(t, "an enqueuer waiting", func() bool { return metric(t, reg, "dicomgw_ledger_enqueue_waits_total") > 0 })
	release()
	<-done
	mustNil(t, l.Sync())
	if s, err := l.DestinationStats(); err != nil || s["x"].Pending != n {
		t.Fatalf("stats %+v %v", s, err)
	}
}
