package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Storage commitment requests (PS3.4 J) are kept in the ledger beside the
// deliveries they wait for, so that a restart neither forgets nor repeats
// one: a request is recorded before it is acknowledged, its answer when it
// is decided, and that the report was acknowledged once it was.

// Commitment states.
const (
	CommitWaiting   = "waiting"   // some instance is neither settled nor past the deadline
	CommitReporting = "reporting" // the answer is decided; the report is not acknowledged yet
	CommitReported  = "reported"  // the requester acknowledged the report
	CommitAbandoned = "abandoned" // the report could not be sent for long enough: given up
)

// CommitRef is one instance a commitment request names.
type CommitRef struct {
	SOPClassUID    string `json:"c"`
	SOPInstanceUID string `json:"i"`
}

// CommitResult is the answer for one instance: Reason 0 is committed,
// otherwise the Failure Reason (0008,1197) the report gives.
type CommitResult struct {
	CommitRef
	Reason uint16 `json:"r,omitempty"`
}

// Commitment is one storage commitment request, keyed by the requester's
// AE title and its Transaction UID.
type Commitment struct {
	CallingAE, TransactionUID string
	CalledAE, Peer            string // whom it called, and from where
	Mode                      string // what committed means: "delivered" or "received"
	Refs                      []CommitRef
	RequestedAt, Deadline     time.Time

	State       string
	Results     []CommitResult // once decided
	DecidedAt   time.Time
	Attempts    int // failed attempts to send the report
	NextAttempt time.Time
	LastError   string
	ReportedAt  time.Time
	Via         string // how the report went: "same" or "new" association
}

const commitmentCols = `calling_ae, transaction_uid, called_ae, peer, mode, refs, requested_at, deadline, state,
	results, decided_at, attempts, next_attempt, last_error, reported_at, via`

const (
	// A request repeated with the same Transaction UID starts over: it is
	// the requester asking again (PS3.4 J.3.2 lets it).
	sqlAddCommitment = `INSERT INTO commitments (calling_ae, transaction_uid, called_ae, peer, mode, refs, requested_at,
		deadline, state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'waiting', ?)
		ON CONFLICT (calling_ae, transaction_uid) DO UPDATE SET called_ae = excluded.called_ae, peer = excluded.peer,
			mode = excluded.mode, refs = excluded.refs, requested_at = excluded.requested_at, deadline = excluded.deadline,
			state = 'waiting', results = '', decided_at = NULL, attempts = 0, next_attempt = NULL, last_error = '',
			reported_at = NULL, via = '', updated_at = excluded.updated_at`
	sqlDecideCommitment = `UPDATE commitments SET state = 'reporting', results = ?, decided_at = ?, updated_at = ?
		WHERE calling_ae = ? AND transaction_uid = ? AND state = 'waiting'`
	sqlCommitmentAttempted = `UPDATE commitments SET attempts = ?, next_attempt = ?, last_error = ?, updated_at = ?
		WHERE calling_ae = ? AND transaction_uid = ? AND state = 'reporting'`
	sqlCommitmentReported = `UPDATE commitments SET state = 'reported', reported_at = ?, via = ?, next_attempt = NULL, updated_at = ?
		WHERE calling_ae = ? AND transaction_uid = ? AND state = 'reporting'`
	sqlCommitmentAbandoned = `UPDATE commitments SET state = 'abandoned', last_error = ?, next_attempt = NULL, updated_at = ?
		WHERE calling_ae = ? AND transaction_uid = ? AND state = 'reporting'`
	sqlOpenCommitments = `SELECT ` + commitmentCols + ` FROM commitments WHERE state IN ('waiting', 'reporting')
		ORDER BY requested_at`
	sqlCommitment    = `SELECT ` + commitmentCols + ` FROM commitments WHERE calling_ae = ? AND transaction_uid = ?`
	sqlCommitments   = `SELECT ` + commitmentCols + ` FROM commitments ORDER BY requested_at DESC LIMIT ?`
	sqlPruneCommit   = `DELETE FROM commitments WHERE state IN ('reported', 'abandoned') AND updated_at < ?`
	sqlObjectsBySOP  = `SELECT ` + objectCols + ` FROM objects WHERE sop_instance_uid IN (SELECT value FROM json_each(?))`
	maxCommitmentIDs = 100000
)

// ErrNotOpen: a commitment that is not in the state the change needs (it
// was decided, reported or abandoned already, or never recorded).
var ErrNotOpen = errors.New("no such open storage commitment request")

// exec runs one statement through the writer and waits for its commit;
// want says a row must have changed (else ErrNotOpen).
func (l *Ledger) execCommitment(what string, want bool, stmt string, args ...any) error {
	var changed int64
	r := l.sync(&op{kind: opExec, exec: func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, stmt, args...)
		if err != nil {
			return err
		}
		changed, err = res.RowsAffected()
		return err
	}})
	if r.err != nil {
		return fmt.Errorf("ledger: %s: %w", what, r.err)
	}
	if want && changed == 0 {
		return fmt.Errorf("ledger: %s: %w", what, ErrNotOpen)
	}
	return nil
}

// AddCommitment records a new request (waiting), replacing one of the same
// requester and Transaction UID; it returns once that is committed.
func (l *Ledger) AddCommitment(c Commitment) error {
	refs, err := json.Marshal(c.Refs)
	if err != nil {
		return err
	}
	return l.execCommitment("recording a storage commitment request", true, sqlAddCommitment,
		c.CallingAE, c.TransactionUID, c.CalledAE, c.Peer, c.Mode, string(refs), nsOrZero(c.RequestedAt),
		nsOrZero(c.Deadline), l.now().UnixNano())
}

// DecideCommitment records the answer of a waiting request (it is then
// reporting).
func (l *Ledger) DecideCommitment(callingAE, txUID string, results []CommitResult, at time.Time) error {
	b, err := json.Marshal(results)
	if err != nil {
		return err
	}
	return l.execCommitment("deciding a storage commitment", true, sqlDecideCommitment,
		string(b), nsOrZero(at), l.now().UnixNano(), callingAE, txUID)
}

// CommitmentAttempted records a failed attempt to send a report.
func (l *Ledger) CommitmentAttempted(callingAE, txUID string, attempts int, next time.Time, lastErr string) error {
	return l.execCommitment("recording a storage commitment report attempt", true, sqlCommitmentAttempted,
		attempts, ns(next), clip(lastErr), l.now().UnixNano(), callingAE, txUID)
}

// CommitmentReported records that the requester acknowledged the report.
func (l *Ledger) CommitmentReported(callingAE, txUID, via string, at time.Time) error {
	return l.execCommitment("recording a storage commitment report", true, sqlCommitmentReported,
		nsOrZero(at), via, l.now().UnixNano(), callingAE, txUID)
}

// CommitmentAbandoned records that a report was given up, and why.
func (l *Ledger) CommitmentAbandoned(callingAE, txUID, reason string) error {
	return l.execCommitment("abandoning a storage commitment report", true, sqlCommitmentAbandoned,
		clip(reason), l.now().UnixNano(), callingAE, txUID)
}

// PruneCommitments forgets reported and abandoned requests last changed
// before `before`; it returns how many.
func (l *Ledger) PruneCommitments(before time.Time) (int, error) {
	var n int64
	r := l.sync(&op{kind: opExec, exec: func(ctx context.Context, tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, sqlPruneCommit, before.UnixNano())
		if err != nil {
			return err
		}
		n, err = res.RowsAffected()
		return err
	}})
	if r.err != nil {
		return 0, fmt.Errorf("ledger: pruning storage commitments: %w", r.err)
	}
	return int(n), nil
}

// OpenCommitments returns the requests waiting or reporting, oldest first.
// An unreadable row is skipped (and counted).
func (q *queries) OpenCommitments() ([]Commitment, error) { return q.commitments(sqlOpenCommitments) }

// Commitments returns the requests of any state, newest first; limit <= 0
// means all.
func (q *queries) Commitments(limit int) ([]Commitment, error) {
	return q.commitments(sqlCommitments, limitArg(limit))
}

// commitments lists the requests a statement selects, skipping (and
// counting) the rows it cannot read.
func (q *queries) commitments(stmt string, args ...any) ([]Commitment, error) {
	ctx, cancel := q.ctx()
	defer cancel()
	rows, err := q.db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: storage commitments: %w", err)
	}
	defer rows.Close()
	var out []Commitment
	for rows.Next() {
		c, err := scanCommitment(rows)
		if err != nil {
			q.skip(err.(*RowError))
			continue
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: storage commitments: %w", err)
	}
	return out, nil
}

// Commitment returns one request; false when there is none.
func (q *queries) Commitment(callingAE, txUID string) (Commitment, bool, error) {
	ctx, cancel := q.ctx()
	defer cancel()
	c, err := scanCommitment(q.db.QueryRowContext(ctx, sqlCommitment, callingAE, txUID))
	if errors.Is(err, sql.ErrNoRows) {
		return Commitment{}, false, nil
	}
	if err != nil {
		q.skip(err.(*RowError))
		return Commitment{}, false, err
	}
	return c, true, nil
}

func scanCommitment(r scanner) (Commitment, error) {
	w, err := scanRow(r, "calling_ae", "transaction_uid", "called_ae", "peer", "mode", "refs", "requested_at", "deadline",
		"state", "results", "decided_at", "attempts", "next_attempt", "last_error", "reported_at", "via")
	if err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return Commitment{}, err
		}
		return Commitment{}, &RowError{Table: "commitments", Err: err}
	}
	c := Commitment{
		CallingAE: w.str(0), TransactionUID: w.str(1), CalledAE: w.str(2), Peer: w.str(3), Mode: w.str(4),
		RequestedAt: w.time(6), Deadline: w.time(7), State: w.str(8), DecidedAt: w.time(10),
		Attempts: int(w.num(11)), NextAttempt: w.time(12), LastError: w.str(13), ReportedAt: w.time(14), Via: w.str(15),
	}
	if w.err == nil {
		if err := json.Unmarshal([]byte(w.str(5)), &c.Refs); err != nil {
			w.err = fmt.Errorf("refs: %v", err)
		}
	}
	if s := w.str(9); w.err == nil && s != "" {
		if err := json.Unmarshal([]byte(s), &c.Results); err != nil {
			w.err = fmt.Errorf("results: %v", err)
		}
	}
	switch c.State {
	case CommitWaiting, CommitReporting, CommitReported, CommitAbandoned:
	default:
		if w.err == nil {
			w.err = fmt.Errorf("state: %q is not a storage commitment state", clipState(c.State))
		}
	}
	if w.err != nil {
		return Commitment{}, &RowError{Table: "commitments", ObjectID: c.TransactionUID, Err: w.err}
	}
	return c, nil
}

// InstancesBySOP returns the objects received with each of the SOP
// Instance UIDs, with their deliveries: an instance may have been received
// several times.
func (q *queries) InstancesBySOP(sopUIDs []string) (map[string][]ObjectState, error) {
	out := make(map[string][]ObjectState, len(sopUIDs))
	if len(sopUIDs) == 0 {
		return out, nil
	}
	if len(sopUIDs) > maxCommitmentIDs {
		return nil, fmt.Errorf("ledger: %d SOP instance UIDs asked at once, at most %d", len(sopUIDs), maxCommitmentIDs)
	}
	ctx, cancel := q.ctx()
	defer cancel()
	list, err := idList(sopUIDs)
	if err != nil {
		return nil, err
	}
	rows, err := q.db.QueryContext(ctx, sqlObjectsBySOP, list)
	if err != nil {
		return nil, fmt.Errorf("ledger: objects by SOP instance: %w", err)
	}
	var objs []ObjectState
	for rows.Next() {
		o, err := scanObject(rows)
		if err != nil {
			q.skip(err.(*RowError))
			continue
		}
		objs = append(objs, o)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("ledger: objects by SOP instance: %w", err)
	}
	if err := q.fillDeliveries(ctx, objs); err != nil {
		return nil, err
	}
	for _, o := range objs {
		out[o.SOPInstanceUID] = append(out[o.SOPInstanceUID], o)
	}
	return out, nil
}
