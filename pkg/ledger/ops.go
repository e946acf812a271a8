package ledger

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync/atomic"
	"time"
)

// opKind is what a queued operation does.
type opKind uint8

const (
	opReceived opKind = iota
	opAttempted
	opGone
	opDelivered
	opDead
	opEnsure
	opRequeue
	opSync
	opPrune
	opExec // a statement of its own (storage commitments)
)

func (k opKind) String() string {
	return [...]string{"received", "attempted", "gone", "delivered", "dead", "ensure", "requeue", "sync", "prune", "exec"}[k]
}

// op is one queued write. Synchronous callers wait on done.
type op struct {
	kind     opKind
	id, dest string
	obj      Object   // received
	objs     []Object // ensure
	retry    Retry    // attempted
	at       time.Time
	reason   string    // dead: why; delivered: what copy (Copy)
	before   time.Time // prune
	limit    int       // prune: rows per chunk
	exec     func(ctx context.Context, tx *sql.Tx) error
	enqueued time.Time
	done     chan result  // nil for asynchronous operations
	state    atomic.Int32 // synchronous operations: opQueued, opCommitting, opAbandoned
	res      result
}

type result struct {
	n   int // prune: objects deleted
	err error
}

// stmts are the write statements, prepared once on the write connection.
type stmts struct {
	insObject, insDelivery, placeholder    *sql.Stmt
	complete, completeDeliveries           *sql.Stmt
	attempted, attemptedNew                *sql.Stmt
	delivered, deliveredNew, dead, deadNew *sql.Stmt
	gone, goneNew, requeue                 *sql.Stmt
}

const (
	sqlInsObject = `INSERT INTO objects (id, sop_instance_uid, sop_class_uid, study_uid, series_uid,
		transfer_syntax, calling_ae, called_ae, peer, received_at, size, complete)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 1) ON CONFLICT (id) DO NOTHING`
	// Completes a row made by a later event (see sqlPlaceholder).
	sqlCompleteObject = `UPDATE objects SET sop_instance_uid = ?, sop_class_uid = ?, study_uid = ?, series_uid = ?,
		transfer_syntax = ?, calling_ae = ?, called_ae = ?, peer = ?, received_at = ?, size = ?, complete = 1
		WHERE id = ? AND complete = 0`
	sqlCompleteDeliveries = `UPDATE deliveries SET received_at = ? WHERE object_id = ?`
	// An existing delivery, whatever its state, is left alone.
	sqlInsDelivery = `INSERT INTO deliveries (object_id, destination, state, received_at, updated_at)
		VALUES (?, ?, 'pending', ?, ?) ON CONFLICT (object_id, destination) DO NOTHING`
	// A row for an object whose receipt was not recorded, made by a later
	// event so that what happened to it is not lost; Ensure or Received
	// completes it.
	sqlPlaceholder = `INSERT INTO objects (id, received_at, complete) VALUES (?, ?, 0) ON CONFLICT (id) DO NOTHING`
	sqlAttempted   = `UPDATE deliveries SET attempts = ?, first_failure = ?, next_attempt = ?, last_error = ?,
		unconfirmed = ?, delay_ns = ?, updated_at = ?
		WHERE object_id = ? AND destination = ? AND state = 'pending'`
	sqlAttemptedNew = `INSERT INTO deliveries (object_id, destination, state, received_at, attempts, first_failure,
		next_attempt, last_error, unconfirmed, delay_ns, updated_at)
		VALUES (?1, ?2, 'pending', (SELECT received_at FROM objects WHERE id = ?1), ?3, ?4, ?5, ?6, ?7, ?8, ?9)
		ON CONFLICT (object_id, destination) DO NOTHING`
	// A confirmed delivery wins over any other state.
	sqlDelivered = `UPDATE deliveries SET state = 'delivered', delivered_at = ?, next_attempt = NULL,
		dead_at = NULL, dead_reason = '', copy = ?, updated_at = ?
		WHERE object_id = ? AND destination = ?`
	sqlDeliveredNew = `INSERT INTO deliveries (object_id, destination, state, received_at, delivered_at, updated_at, copy)
		VALUES (?1, ?2, 'delivered', (SELECT received_at FROM objects WHERE id = ?1), ?3, ?4, ?5)
		ON CONFLICT (object_id, destination) DO NOTHING`
	// A dead letter never overwrites a confirmed delivery.
	sqlDead = `UPDATE deliveries SET state = 'dead', dead_at = ?, dead_reason = ?, next_attempt = NULL, updated_at = ?
		WHERE object_id = ? AND destination = ? AND state <> 'delivered'`
	sqlDeadNew = `INSERT INTO deliveries (object_id, destination, state, received_at, dead_at, dead_reason, updated_at)
		VALUES (?1, ?2, 'dead', (SELECT received_at FROM objects WHERE id = ?1), ?3, ?4, ?5)
		ON CONFLICT (object_id, destination) DO NOTHING`
	sqlPruneSelect = `SELECT id FROM objects WHERE gone_at IS NOT NULL AND gone_at < ? ORDER BY gone_at LIMIT ?`
	sqlGone        = `UPDATE objects SET gone_at = ? WHERE id = ? AND gone_at IS NULL`
	sqlGoneNew     = `INSERT INTO objects (id, received_at, gone_at, complete) VALUES (?, ?, ?, 0) ON CONFLICT (id) DO NOTHING`
	sqlRequeue     = `UPDATE deliveries SET state = 'pending', attempts = 0, first_failure = NULL, next_attempt = NULL,
		last_error = '', unconfirmed = 0, delay_ns = 0, dead_at = NULL, dead_reason = '', updated_at = ?
		WHERE object_id = ? AND destination = ? AND state = 'dead'
			AND NOT EXISTS (SELECT 1 FROM objects WHERE id = ? AND gone_at IS NOT NULL)`
)

func prepare(ctx context.Context, db *sql.DB) (*stmts, error) {
	s := &stmts{}
	for _, p := range []struct {
		dst **sql.Stmt
		sql string
	}{
		{&s.insObject, sqlInsObject}, {&s.insDelivery, sqlInsDelivery}, {&s.placeholder, sqlPlaceholder},
		{&s.complete, sqlCompleteObject}, {&s.completeDeliveries, sqlCompleteDeliveries},
		{&s.attempted, sqlAttempted}, {&s.attemptedNew, sqlAttemptedNew},
		{&s.delivered, sqlDelivered}, {&s.deliveredNew, sqlDeliveredNew},
		{&s.dead, sqlDead}, {&s.deadNew, sqlDeadNew},
		{&s.gone, sqlGone}, {&s.goneNew, sqlGoneNew}, {&s.requeue, sqlRequeue},
	} {
		st, err := db.PrepareContext(ctx, p.sql)
		if err != nil {
			s.close()
			return nil, err
		}
		*p.dst = st
	}
	return s, nil
}

func (s *stmts) close() {
	for _, st := range []*sql.Stmt{s.insObject, s.insDelivery, s.placeholder, s.complete, s.completeDeliveries, s.attempted, s.attemptedNew,
		s.delivered, s.deliveredNew, s.dead, s.deadNew, s.gone, s.goneNew, s.requeue} {
		if st != nil {
			st.Close()
		}
	}
}

// txStmts binds the prepared statements to one transaction.
type txStmts struct {
	ctx context.Context
	tx  *sql.Tx
	s   *stmts
}

func (t txStmts) exec(st *sql.Stmt, args ...any) (int64, error) {
	r, err := t.tx.StmtContext(t.ctx, st).ExecContext(t.ctx, args...)
	if err != nil {
		return 0, err
	}
	return r.RowsAffected()
}

// apply runs o in t. The error is a database error that fails the
// transaction; what o itself answers (Requeue of a delivery that is not
// dead) is left in o.res.
func (o *op) apply(t txStmts, now time.Time) error {
	o.res = result{}
	upd := now.UnixNano()
	switch o.kind {
	case opReceived:
		return insertObject(t, o.obj, upd)
	case opEnsure:
		for _, obj := range o.objs {
			if err := insertObject(t, obj, upd); err != nil {
				return err
			}
		}
	case opAttempted:
		r := o.retry
		n, err := t.exec(t.s.attempted, r.Attempts, ns(r.FirstFailure), ns(r.NextAttempt), clip(r.LastError),
			r.Unconfirmed, int64(r.Delay), upd, o.id, o.dest)
		if err != nil || n > 0 {
			return err
		}
		if err := placeholder(t, o.id, now); err != nil {
			return err
		}
		_, err = t.exec(t.s.attemptedNew, o.id, o.dest, r.Attempts, ns(r.FirstFailure), ns(r.NextAttempt),
			clip(r.LastError), r.Unconfirmed, int64(r.Delay), upd)
		return err
	case opDelivered:
		n, err := t.exec(t.s.delivered, nsOrZero(o.at), clip(o.reason), upd, o.id, o.dest)
		if err != nil || n > 0 {
			return err
		}
		if err := placeholder(t, o.id, o.at); err != nil {
			return err
		}
		_, err = t.exec(t.s.deliveredNew, o.id, o.dest, nsOrZero(o.at), upd, clip(o.reason))
		return err
	case opDead:
		n, err := t.exec(t.s.dead, nsOrZero(o.at), clip(o.reason), upd, o.id, o.dest)
		if err != nil || n > 0 {
			return err
		}
		if err := placeholder(t, o.id, o.at); err != nil {
			return err
		}
		_, err = t.exec(t.s.deadNew, o.id, o.dest, nsOrZero(o.at), clip(o.reason), upd)
		return err
	case opGone:
		n, err := t.exec(t.s.gone, nsOrZero(o.at), o.id)
		if err != nil || n > 0 {
			return err
		}
		_, err = t.exec(t.s.goneNew, o.id, nsOrZero(o.at), nsOrZero(o.at))
		return err
	case opRequeue:
		var err error
		o.res.err, err = requeue(t.ctx, t.tx, t.s.requeue, o.id, o.dest, now)
		return err
	case opPrune:
		var err error
		o.res.n, err = pruneChunk(t.ctx, t.tx, o.before, o.limit)
		return err
	case opExec:
		return o.exec(t.ctx, t.tx)
	case opSync:
	}
	return nil
}

func insertObject(t txStmts, o Object, upd int64) error {
	recv := nsOrZero(o.Received)
	n, err := t.exec(t.s.insObject, o.ID, o.SOPInstanceUID, o.SOPClassUID, o.StudyInstanceUID,
		o.SeriesInstanceUID, o.TransferSyntaxUID, o.CallingAE, o.CalledAE, o.Peer, recv, o.Size)
	if err != nil {
		return err
	}
	if n == 0 { // known already: complete it if a later event made it
		n, err := t.exec(t.s.complete, o.SOPInstanceUID, o.SOPClassUID, o.StudyInstanceUID,
			o.SeriesInstanceUID, o.TransferSyntaxUID, o.CallingAE, o.CalledAE, o.Peer, recv, o.Size, o.ID)
		if err != nil {
			return err
		}
		if n > 0 {
			if _, err := t.exec(t.s.completeDeliveries, recv, o.ID); err != nil {
				return err
			}
		}
	}
	for _, d := range o.Destinations {
		if _, err := t.exec(t.s.insDelivery, o.ID, d, recv, upd); err != nil {
			return err
		}
	}
	return nil
}

func placeholder(t txStmts, id string, at time.Time) error {
	_, err := t.exec(t.s.placeholder, id, nsOrZero(at))
	return err
}

// requeue turns the dead delivery of id to dest back into a pending one
// with its attempts forgotten. answer says why it did not (ErrNotFound,
// ErrNotDead, ErrGone); err is a database error. st may be nil (Admin: not
// prepared).
func requeue(ctx context.Context, tx *sql.Tx, st *sql.Stmt, id, dest string, now time.Time) (answer, err error) {
	var r sql.Result
	if st != nil {
		r, err = tx.StmtContext(ctx, st).ExecContext(ctx, now.UnixNano(), id, dest, id)
	} else {
		r, err = tx.ExecContext(ctx, sqlRequeue, now.UnixNano(), id, dest, id)
	}
	if err != nil {
		return nil, err
	}
	if n, err := r.RowsAffected(); err != nil || n > 0 {
		return nil, err
	}
	var (
		state string
		gone  sql.NullInt64
	)
	err = tx.QueryRowContext(ctx, `SELECT d.state, o.gone_at FROM deliveries d LEFT JOIN objects o ON o.id = d.object_id
		WHERE d.object_id = ? AND d.destination = ?`, id, dest).Scan(&state, &gone)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return fmt.Errorf("ledger: requeue object %q to %q: %w", id, dest, ErrNotFound), nil
	case err != nil:
		return nil, err
	case state != StateDead:
		return fmt.Errorf("ledger: requeue object %q to %q: %w (it is %q)", id, dest, ErrNotDead, state), nil
	default:
		return fmt.Errorf("ledger: requeue object %q to %q: %w", id, dest, ErrGone), nil
	}
}

// pruneChunk deletes at most limit objects gone before `before`, with their
// deliveries.
func pruneChunk(ctx context.Context, tx *sql.Tx, before time.Time, limit int) (int, error) {
	rows, err := tx.QueryContext(ctx, sqlPruneSelect, before.UnixNano(), limit)
	if err != nil {
		return 0, err
	}
	var ids []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			rows.Close()
			return 0, err
		}
		ids = append(ids, id)
	}
	err = rows.Err()
	rows.Close()
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	list, err := idList(ids)
	if err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE object_id IN (SELECT value FROM json_each(?))`, list); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, `DELETE FROM objects WHERE id IN (SELECT value FROM json_each(?))`, list); err != nil {
		return 0, err
	}
	return len(ids), nil
}
