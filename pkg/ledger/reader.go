package ledger

import (
	"context"
	"fmt"
	"sync/atomic"
	"time"
)

// Reader reads a ledger, typically one a running daemon writes: an
// operator's command (spool trace, spool list). It never creates, migrates
// or writes the file.
type Reader struct {
	queries
	path    string
	skipped atomic.Int64
}

// OpenReader opens the ledger at path for reading. It fails clearly when
// there is none (ErrNoLedger), when the file is damaged (ErrDamaged) or not a
// ledger (ErrNotLedger), and when its schema is not the one this dicomgw
// reads (ErrNewerSchema, ErrOlderSchema).
func OpenReader(path string) (*Reader, error) {
	p := pragmas(10*time.Second, "query_only(1)")
	p.Set("mode", "ro") // SQLite: never creates, never writes
	db, err := openExisting(path, p)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	r := &Reader{path: path}
	r.queries = queries{db: db, unreadable: func(*RowError) { r.skipped.Add(1) }}
	return r, nil
}

// Skipped is how many unreadable rows the reads so far have skipped.
func (r *Reader) Skipped() int64 { return r.skipped.Load() }

// Close closes the reader.
func (r *Reader) Close() error { return r.db.Close() }

// Admin is an operator's write access beside a running daemon: each write
// is committed at once, waiting (busy timeout) while the daemon's writer
// commits. It also reads.
type Admin struct {
	queries
	path    string
	skipped atomic.Int64
}

// OpenAdmin opens the ledger at path for an operator's writes. Like
// OpenReader, it never creates or migrates the file.
func OpenAdmin(path string) (*Admin, error) {
	p := pragmas(30 * time.Second)
	p.Set("mode", "rw") // SQLite: never creates
	p.Set("_txlock", "immediate")
	db, err := openExisting(path, p)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(2)
	a := &Admin{path: path}
	a.queries = queries{db: db, unreadable: func(*RowError) { a.skipped.Add(1) }}
	return a, nil
}

// Skipped is how many unreadable rows the reads so far have skipped.
func (a *Admin) Skipped() int64 { return a.skipped.Load() }

// Close closes the admin handle.
func (a *Admin) Close() error { return a.db.Close() }

// Requeue turns the dead delivery of object id to dest back into a pending
// one, its attempts and errors cleared, and commits at once. It fails with
// ErrNotFound, ErrNotDead or ErrGone when there is nothing to requeue. A
// running daemon sees the delivery pending the next time it asks the ledger
// (Pending).
func (a *Admin) Requeue(id, dest string) error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	tx, err := a.db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("ledger %s: %w", a.path, err)
	}
	answer, err := requeue(ctx, tx, nil, id, dest, time.Now())
	if err == nil && answer == nil {
		err = tx.Commit()
	} else {
		_ = tx.Rollback()
	}
	if err != nil {
		return fmt.Errorf("ledger %s: requeue: %w", a.path, err)
	}
	return answer
}
