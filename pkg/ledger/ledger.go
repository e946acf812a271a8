package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomgw/dicomgw/internal/durable"
	"github.com/prometheus/client_golang/prometheus"
	_ "modernc.org/sqlite" // the "sqlite" database/sql driver
)

// Config configures the daemon's Ledger.
type Config struct {
	Path       string
	FlushEvery time.Duration // longest wait before queued operations are committed (default 20ms)
	MaxBatch   int           // operations per transaction at most (default 1000)
	QueueSize  int           // queued operations before enqueuers block (default 100000)

	// BusyTimeout is how long a write waits for another process's write
	// (an operator's requeue) before it fails and is tried again (default 10s).
	BusyTimeout time.Duration
	// CommitTimeout bounds how long a synchronous caller waits while commits
	// fail (disk full, I/O error): it then gets the error and keeps its file
	// (default 30s). Asynchronous operations are tried until they commit.
	CommitTimeout time.Duration
	// PruneChunk is how many objects one Prune transaction deletes at most
	// (default 500), so that pruning never holds the write lock for long.
	PruneChunk int
}

func (c *Config) defaults() {
	if c.FlushEvery <= 0 {
		c.FlushEvery = 20 * time.Millisecond
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 1000
	}
	if c.QueueSize <= 0 {
		c.QueueSize = 100000
	}
	if c.BusyTimeout <= 0 {
		c.BusyTimeout = 10 * time.Second
	}
	if c.CommitTimeout <= 0 {
		c.CommitTimeout = 30 * time.Second
	}
	if c.PruneChunk <= 0 {
		c.PruneChunk = 500
	}
}

// Ledger is the daemon's handle: one goroutine (the writer) owns the write
// connection and commits queued operations in batches; reads go through a
// separate pool of read-only connections.
type Ledger struct {
	queries
	cfg  Config
	log  *slog.Logger
	m    *metrics
	wdb  *sql.DB // one connection, the writer's
	rdb  *sql.DB
	st   *stmts
	ops  chan *op
	now  func() time.Time
	once sync.Once // logs the first unreadable row

	mu     sync.RWMutex // held for reading while enqueuing; Close takes it to close ops
	closed bool

	queued    atomic.Int64          // enqueued, not committed yet
	closingAt atomic.Int64          // Unix ns when Close began, 0 before
	lost      atomic.Int64          // asynchronous operations given up at shutdown
	lastErr   atomic.Pointer[error] // the last commit's error, nil once one succeeds
	stopped   chan struct{}
	closeErr  error
	closeOnce sync.Once
}

// Open opens (creating or migrating it) the ledger at cfg.Path, checks it,
// and starts the writer. A damaged file is refused with an error naming it
// (errors.Is ErrDamaged).
func Open(cfg Config, log *slog.Logger, reg prometheus.Registerer) (*Ledger, error) {
	cfg.defaults()
	if cfg.Path == "" {
		return nil, fmt.Errorf("ledger: no path")
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := create(cfg.Path); err != nil {
		return nil, fmt.Errorf("ledger %s: %w", cfg.Path, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	// The write connection: WAL so that readers in other processes never
	// wait for it; synchronous=FULL so that a commit that returned survives
	// power loss; BEGIN IMMEDIATE so that a transaction takes the write lock
	// at its start (waiting busy_timeout for another writer) rather than
	// failing half-way with SQLITE_BUSY.
	wp := pragmas(cfg.BusyTimeout, "journal_mode(WAL)", "synchronous(FULL)", "journal_size_limit(67108864)")
	wp.Set("_txlock", "immediate")
	d, err := dsn(cfg.Path, wp)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", cfg.Path, err)
	}
	wdb, err := sql.Open("sqlite", d)
	if err != nil {
		return nil, fmt.Errorf("ledger %s: %w", cfg.Path, err)
	}
	wdb.SetMaxOpenConns(1)
	wdb.SetMaxIdleConns(1)
	wdb.SetConnMaxLifetime(0)
	wdb.SetConnMaxIdleTime(0)
	fail := func(err error) (*Ledger, error) {
		wdb.Close()
		return nil, err
	}
	if err := wdb.PingContext(ctx); err != nil {
		return fail(fileError(cfg.Path, err))
	}
	start := time.Now()
	if err := quickCheck(ctx, wdb, cfg.Path); err != nil {
		return fail(err)
	}
	checked := time.Since(start)
	version, err := checkHeader(ctx, wdb, cfg.Path, true)
	if err != nil {
		return fail(err)
	}
	if err := migrateSchema(ctx, wdb, cfg.Path, version); err != nil {
		return fail(err)
	}
	st, err := prepare(ctx, wdb)
	if err != nil {
		return fail(fileError(cfg.Path, err))
	}

	rd, err := dsn(cfg.Path, pragmas(cfg.BusyTimeout, "query_only(1)"))
	if err != nil {
		st.close()
		return fail(err)
	}
	rdb, err := sql.Open("sqlite", rd)
	if err != nil {
		st.close()
		return fail(fmt.Errorf("ledger %s: %w", cfg.Path, err))
	}
	rdb.SetMaxOpenConns(4)

	l := &Ledger{
		cfg:     cfg,
		log:     log,
		wdb:     wdb,
		rdb:     rdb,
		st:      st,
		ops:     make(chan *op, cfg.QueueSize),
		now:     time.Now,
		stopped: make(chan struct{}),
	}
	l.m = newMetrics(reg, &l.queued)
	l.queries = queries{db: rdb, unreadable: l.unreadableRow}
	log.Info("ledger open", "path", cfg.Path, "schema", SchemaVersion, "migrated_from", version, "quick_check", checked.Round(time.Millisecond))
	go l.run()
	return l, nil
}

// create makes an empty ledger file if there is none: with the spool's
// permissions (SQLite's -wal and -shm files take the database file's), and
// durably, so that the file a commit went into is not itself lost. An empty
// file is an empty database; Open migrates it.
func create(path string) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if errors.Is(err, fs.ErrExist) {
		return nil
	}
	if err != nil {
		return err
	}
	err = f.Sync()
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = durable.SyncDir(filepath.Dir(path))
	}
	return err
}

func (l *Ledger) unreadableRow(e *RowError) {
	l.m.unreadable.Inc()
	l.once.Do(func() {
		l.log.Warn("ledger: skipping an unreadable row (further ones are only counted in dicomgw_ledger_unreadable_rows_total)",
			"table", e.Table, "object", e.ObjectID, "destination", e.Destination, "err", e.Err)
	})
}

// Close commits what is queued, stops the writer and closes the database.
// If commits keep failing, it gives up after CommitTimeout and says how many
// operations were not written.
func (l *Ledger) Close() error {
	l.closeOnce.Do(func() {
		l.closingAt.Store(l.now().UnixNano())
		l.mu.Lock()
		l.closed = true
		close(l.ops)
		l.mu.Unlock()
		<-l.stopped
		l.st.close()
		var errs []error
		if n := l.lost.Load(); n > 0 {
			errs = append(errs, fmt.Errorf("ledger %s: %d operations not committed at shutdown", l.cfg.Path, n))
		}
		if err := l.rdb.Close(); err != nil {
			errs = append(errs, err)
		}
		if err := l.wdb.Close(); err != nil {
			errs = append(errs, err)
		}
		if len(errs) > 0 {
			l.closeErr = fmt.Errorf("%v", errs)
		}
	})
	return l.closeErr
}

// enqueue hands o to the writer; it blocks while the queue is full (and
// counts that), and fails only after Close.
func (l *Ledger) enqueue(o *op) error {
	l.mu.RLock()
	defer l.mu.RUnlock()
	if l.closed {
		l.m.rejected.WithLabelValues(rejectClosed).Inc()
		return ErrClosed
	}
	o.enqueued = l.now()
	l.queued.Add(1)
	select {
	case l.ops <- o:
		return nil
	default:
	}
	l.m.enqueueWaits.Inc()
	l.ops <- o
	return nil
}

// async enqueues o; after Close it can only be logged: the spool's files
// remain the proof of receipt, and Ensure completes the ledger at start-up.
func (l *Ledger) async(o *op) {
	if err := l.enqueue(o); err != nil {
		l.log.Warn("ledger: operation after close not recorded", "op", o.kind.String(), "object", o.id)
	}
}

// sync enqueues o and waits until it is committed or has failed.
func (l *Ledger) sync(o *op) result {
	o.done = make(chan result, 1)
	if err := l.enqueue(o); err != nil {
		return result{err: err}
	}
	return l.wait(o)
}

// Received records a received object and a pending delivery per
// destination; an object the ledger has already is left as it is (new
// destinations are added). Asynchronous.
func (l *Ledger) Received(o Object) {
	o.Destinations = append([]string(nil), o.Destinations...)
	l.async(&op{kind: opReceived, id: o.ID, obj: o})
}

// Attempted records a failed delivery attempt of a pending delivery.
// Asynchronous.
func (l *Ledger) Attempted(id, dest string, r Retry) {
	l.async(&op{kind: opAttempted, id: id, dest: dest, retry: r})
}

// Gone records that the object's file has left the spool. Asynchronous.
func (l *Ledger) Gone(id string, at time.Time) {
	l.async(&op{kind: opGone, id: id, at: at})
}

// Delivered records a confirmed delivery of the original; it returns once
// that is committed. A confirmed delivery overrides any other state.
func (l *Ledger) Delivered(id, dest string, at time.Time) error {
	return l.DeliveredCopy(id, dest, "", at)
}

// DeliveredCopy records a confirmed delivery of a copy that was not the
// original, described by copy (DeliveryState.Copy).
func (l *Ledger) DeliveredCopy(id, dest, copy string, at time.Time) error {
	return l.sync(&op{kind: opDelivered, id: id, dest: dest, reason: copy, at: at}).err
}

// Dead records a dead letter (unless the delivery was confirmed); it returns
// once that is committed.
func (l *Ledger) Dead(id, dest, reason string, at time.Time) error {
	return l.sync(&op{kind: opDead, id: id, dest: dest, reason: reason, at: at}).err
}

// Ensure records, in one transaction, the objects the ledger does not have
// (and completes those it knows only from later events): at start-up, the
// ledger is completed from the spool's files.
func (l *Ledger) Ensure(objs []Object) error {
	cp := make([]Object, len(objs))
	for i, o := range objs {
		o.Destinations = append([]string(nil), o.Destinations...)
		cp[i] = o
	}
	return l.sync(&op{kind: opEnsure, objs: cp}).err
}

// Requeue turns a dead delivery back into a pending one, its attempts and
// errors cleared. It fails with ErrNotFound, ErrNotDead or ErrGone when
// there is nothing to requeue.
func (l *Ledger) Requeue(id, dest string) error {
	return l.sync(&op{kind: opRequeue, id: id, dest: dest}).err
}

// Sync waits until everything queued before the call is committed.
func (l *Ledger) Sync() error {
	return l.sync(&op{kind: opSync}).err
}

// Prune deletes the objects whose files left the spool before `before`, with
// their deliveries, a chunk per transaction; it returns how many objects it
// deleted.
func (l *Ledger) Prune(before time.Time) (int, error) {
	total := 0
	for {
		r := l.sync(&op{kind: opPrune, before: before, limit: l.cfg.PruneChunk})
		total += r.n
		if r.err != nil {
			return total, r.err
		}
		if r.n < l.cfg.PruneChunk {
			return total, nil
		}
	}
}
