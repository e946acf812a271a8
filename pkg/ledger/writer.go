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

// commit commits batch, trying again with backoff while commits fail. A
// synchronous caller gets the error once it has waited CommitTimeout (and
// keeps its file: nothing acknowledged is lost); asynchronous operations are
// tried until they commit, or until Close has waited CommitTimeout.
func (l *Ledger) commit(batch []*op) {
	backoff := minBackoff
	for failures := 0; len(batch) > 0; failures++ {
		var err error
		if batch, err = l.try(batch); err == nil {
			return
		}
		l.m.failures.Inc()
		if failures == 0 || failures%20 == 0 {
			l.log.Error("ledger: commit failed; trying again", "path", l.cfg.Path, "operations", len(batch), "failures", failures+1, "err", err)
		}
		batch = l.giveUp(batch, err)
		if len(batch) == 0 {
			return
		}
		wait := backoff
		if d := l.nextDeadline(batch); d < wait {
			wait = max(d, time.Millisecond)
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
	for len(batch) > 0 {
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
		if err := tx.Commit(); err != nil {
			// SQLite may leave the transaction open after a failed
			// COMMIT; the next BEGIN must not find it.
			_, _ = l.wdb.ExecContext(ctx, "ROLLBACK")
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
	return nil, nil
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

// giveUp ends the synchronous operations that have waited CommitTimeout,
// and every operation once Close has; it returns the rest.
func (l *Ledger) giveUp(batch []*op, err error) []*op {
	now := l.now()
	closing := l.closingAt.Load()
	shut := closing != 0 && now.Sub(time.Unix(0, closing)) >= l.cfg.CommitTimeout
	keep := batch[:0]
	lost := 0
	for _, o := range batch {
		switch {
		case shut:
			if o.done == nil {
				lost++
				l.lost.Add(1)
			}
			l.m.rejected.WithLabelValues(rejectShut).Inc()
			l.finish(o, result{err: fmt.Errorf("ledger %s: not committed at shutdown: %w", l.cfg.Path, err)})
		case o.done != nil && now.Sub(o.enqueued) >= l.cfg.CommitTimeout:
			l.m.rejected.WithLabelValues(rejectTimeout).Inc()
			l.finish(o, result{err: fmt.Errorf("ledger %s: %s of object %q not committed after %s: %w", l.cfg.Path, o.kind, o.id, l.cfg.CommitTimeout, err)})
		default:
			keep = append(keep, o)
		}
	}
	if lost > 0 {
		l.log.Error("ledger: giving up at shutdown; the spool's files remain, and the ledger is completed from them at the next start",
			"path", l.cfg.Path, "operations", lost, "err", err)
	}
	clear(batch[len(keep):])
	return keep
}

// nextDeadline is how long until giveUp has something to end in batch.
func (l *Ledger) nextDeadline(batch []*op) time.Duration {
	now := l.now()
	d := time.Duration(1<<63 - 1)
	if c := l.closingAt.Load(); c != 0 {
		d = time.Unix(0, c).Add(l.cfg.CommitTimeout).Sub(now)
	}
	for _, o := range batch {
		if o.done != nil {
			d = min(d, o.enqueued.Add(l.cfg.CommitTimeout).Sub(now))
		}
	}
	return d
}
