package ledger

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// Backoff between attempts at a failing transaction.
const (
	minBackoff = 20 * time.Millisecond
	maxBackoff = 5 * time.Second
)

// run is the writer: it takes queued operations in order, collects them
// into a batch and commits the batch in one transaction, until Close closes
// the queue and it is drained.
func (l *Ledger) run() {
	defer close(l.stopped)
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	batch := make([]*op, 0, min(l.cfg.MaxBatch, 4096))
	for {
		first, ok := <-l.ops
		if !ok {
			return
		}
		batch = l.collect(append(batch[:0], first), timer)
		l.commit(batch)
		clear(batch)
	}
}

// collect adds queued operations to batch until it holds MaxBatch or
// FlushEvery has passed since its first. A batch with a synchronous caller
// in it (or during Close) takes only what is queued already and is committed
// at once: callers that queue while a commit is running share the next one
// (group commit), so concurrent callers share fsyncs without waiting for a
// timer.
func (l *Ledger) collect(batch []*op, timer *time.Timer) []*op {
	waiter := batch[0].done != nil
	timer.Reset(l.cfg.FlushEvery)
	defer timer.Stop()
	for len(batch) < l.cfg.MaxBatch {
		if waiter || l.closingAt.Load() != 0 {
			select {
			case o, ok := <-l.ops:
				if !ok {
					return batch
				}
				batch = append(batch, o)
				continue
			default:
				return batch
			}
		}
		select {
		case o, ok := <-l.ops:
			if !ok {
				return batch
			}
			batch = append(batch, o)
			waiter = o.done != nil
		case <-timer.C:
			return batch
		}
	}
	return batch
}

// commit commits batch, trying again with backoff while commits fail.
// Asynchronous operations are tried until they commit, or until Close has
// waited CommitTimeout; a synchronous caller stops waiting by itself after
// CommitTimeout (see wait) and keeps its file: nothing acknowledged is lost.
func (l *Ledger) commit(batch []*op) {
	backoff := minBackoff
	for failures := 0; len(batch) > 0; failures++ {
		var err error
		if batch, err = l.try(batch); err == nil {
			l.lastErr.Store(nil)
			return
		}
		l.lastErr.Store(&err)
		l.m.failures.Inc()
		if failures == 0 || failures%20 == 0 {
			l.log.Error("ledger: commit failed; trying again", "path", l.cfg.Path, "operations", len(batch), "failures", failures+1, "err", err)
		}
		if batch = l.giveUp(batch, err); len(batch) == 0 {
			return
		}
		wait := backoff
		if c := l.closingAt.Load(); c != 0 {
			wait = max(min(wait, time.Until(time.Unix(0, c).Add(l.cfg.CommitTimeout))), time.Millisecond)
		}
		time.Sleep(wait)
		backoff = min(backoff*2, maxBackoff)
	}
}

// try applies batch in one transaction and commits it. An operation that
// SQLite refuses however often it is tried is rejected (logged, counted, its
// caller told) and the rest tried again at once: one bad operation never
// stalls the others. The error is a failure worth trying again; what is
// returned with it is what is left to commit.
func (l *Ledger) try(batch []*op) ([]*op, error) {
	ctx := context.Background()
	for {
		batch = l.dropAbandoned(batch)
		if len(batch) == 0 {
			return nil, nil
		}
		start := time.Now()
		tx, err := l.wdb.BeginTx(ctx, nil)
		if err != nil {
			return batch, err
		}
		t := txStmts{ctx: ctx, tx: tx, s: l.st}
		now := l.now()
		bad := -1
		for i, o := range batch {
			if err = o.apply(t, now); err != nil {
				if !transient(err) {
					bad = i
				}
				break
			}
		}
		if err != nil {
			_ = tx.Rollback()
			if bad < 0 {
				return batch, err
			}
			l.reject(batch[bad], rejectInvalid, err)
			batch = slices.Delete(batch, bad, bad+1)
			continue
		}
		if !l.claim(batch) { // a caller gave up meanwhile: without it
			_ = tx.Rollback()
			continue
		}
		if err := tx.Commit(); err != nil {
			// SQLite may leave the transaction open after a failed
			// COMMIT; the next BEGIN must not find it.
			_, _ = l.wdb.ExecContext(ctx, "ROLLBACK")
			l.unclaim(batch)
			return batch, err
		}
		l.m.transactions.Inc()
		l.m.opsPerTx.Observe(float64(len(batch)))
		l.m.commitTime.Observe(time.Since(start).Seconds())
		for _, o := range batch {
			l.finish(o, o.res)
		}
		return nil, nil
	}
}

// States of a synchronous operation, between its caller and the writer.
const (
	opQueued     int32 = iota // the caller may give up (CAS to opAbandoned)
	opCommitting              // claimed by the writer for the COMMIT under way: the caller waits
	opAbandoned               // the caller gave up: the writer drops it
)

// claim marks every synchronous operation of batch as being committed, so
// that its caller waits for the outcome; false (with nothing claimed) if a
// caller has given up.
func (l *Ledger) claim(batch []*op) bool {
	for i, o := range batch {
		if o.done != nil && !o.state.CompareAndSwap(opQueued, opCommitting) {
			l.unclaim(batch[:i])
			return false
		}
	}
	return true
}

func (l *Ledger) unclaim(batch []*op) {
	for _, o := range batch {
		if o.done != nil {
			o.state.Store(opQueued)
		}
	}
}

func (l *Ledger) dropAbandoned(batch []*op) []*op {
	return slices.DeleteFunc(batch, func(o *op) bool {
		if o.done != nil && o.state.Load() == opAbandoned {
			l.queued.Add(-1)
			return true
		}
		return false
	})
}

// finish ends o: its caller, if it waits, gets r.
func (l *Ledger) finish(o *op, r result) {
	l.queued.Add(-1)
	if o.done != nil {
		o.done <- r
	}
}

func (l *Ledger) reject(o *op, reason string, err error) {
	l.m.rejected.WithLabelValues(reason).Inc()
	if o.done == nil {
		l.log.Error("ledger: operation not recorded", "op", o.kind.String(), "object", o.id, "destination", o.dest, "reason", reason, "err", err)
	}
	l.finish(o, result{err: fmt.Errorf("ledger %s: %s of object %q not recorded: %w", l.cfg.Path, o.kind, o.id, err)})
}

// giveUp ends every operation of batch once Close has waited
// CommitTimeout, and returns what is left.
func (l *Ledger) giveUp(batch []*op, err error) []*op {
	batch = l.dropAbandoned(batch)
	c := l.closingAt.Load()
	if c == 0 || l.now().Sub(time.Unix(0, c)) < l.cfg.CommitTimeout {
		return batch
	}
	lost := 0
	for _, o := range batch {
		if o.done == nil {
			lost++
		}
		l.m.rejected.WithLabelValues(rejectShut).Inc()
		l.finish(o, result{err: fmt.Errorf("ledger %s: not committed at shutdown: %w", l.cfg.Path, err)})
	}
	l.lost.Add(int64(lost))
	if lost > 0 {
		l.log.Error("ledger: giving up at shutdown; the spool's files remain, and the ledger is completed from them at the next start",
			"path", l.cfg.Path, "operations", lost, "err", err)
	}
	return nil
}

// wait waits for the outcome of the synchronous operation o, for
// CommitTimeout at most: then it gives up, unless the writer is committing
// o right now (it then waits for that commit). An operation given up is
// never written, so its caller's error is the truth: it keeps its file.
func (l *Ledger) wait(o *op) result {
	timer := time.NewTimer(l.cfg.CommitTimeout)
	defer timer.Stop()
	select {
	case r := <-o.done:
		return r
	case <-timer.C:
	}
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if o.state.CompareAndSwap(opQueued, opAbandoned) {
			l.m.rejected.WithLabelValues(rejectTimeout).Inc()
			why := "the queue ahead of it was not committed in time"
			if e := l.lastErr.Load(); e != nil {
				why = (*e).Error()
			}
			return result{err: fmt.Errorf("ledger %s: %s of object %q not committed after %s: %s", l.cfg.Path, o.kind, o.id, l.cfg.CommitTimeout, why)}
		}
		select {
		case r := <-o.done:
			return r
		case <-tick.C:
		}
	}
}
