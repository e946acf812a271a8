package ledger

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// queries are the read methods, shared by Ledger, Reader and Admin. Every
// value is a parameter; the SQL is made only of constants.
type queries struct {
	db *sql.DB
	// unreadable is told of each row that is skipped because it cannot be
	// read, so that one bad row never hides the others.
	unreadable func(*RowError)
}

const objectCols = `id, sop_instance_uid, sop_class_uid, study_uid, series_uid, transfer_syntax,
	calling_ae, called_ae, peer, received_at, size, gone_at, complete`

const deliveryCols = `object_id, destination, state, attempts, first_failure, next_attempt,
	last_error, unconfirmed, delay_ns, delivered_at, dead_at, dead_reason, updated_at, copy`

// readTimeout bounds one read (a Trace over a large ledger included).
const readTimeout = 60 * time.Second

func (q *queries) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), readTimeout)
}

func (q *queries) skip(e *RowError) {
	if q.unreadable != nil {
		q.unreadable(e)
	}
}

type scanner interface{ Scan(...any) error }

// row holds one row's values as the driver gives them; its accessors check
// each value's type themselves, so that an error names the column and never
// repeats the value (which could be anything) into a log line.
type row struct {
	names []string
	vals  []any
	err   error // the first wrong value
}

func scanRow(r scanner, names ...string) (*row, error) {
	w := &row{names: names, vals: make([]any, len(names))}
	ptrs := make([]any, len(names))
	for i := range w.vals {
		ptrs[i] = &w.vals[i]
	}
	return w, r.Scan(ptrs...)
}

func (w *row) fail(i int, want string) {
	if w.err == nil {
		got := "NULL"
		if w.vals[i] != nil {
			got = fmt.Sprintf("%T", w.vals[i])
		}
		w.err = fmt.Errorf("column %s holds %s, want %s", w.names[i], got, want)
	}
}

// str is column i as text; NULL is "".
func (w *row) str(i int) string {
	switch v := w.vals[i].(type) {
	case string:
		return v
	case []byte:
		return string(v)
	case nil:
		return ""
	}
	w.fail(i, "text")
	return ""
}

// num is column i as an integer; NULL is 0.
func (w *row) num(i int) int64 {
	switch v := w.vals[i].(type) {
	case int64:
		return v
	case nil:
		return 0
	}
	w.fail(i, "an integer")
	return 0
}

// time is column i (Unix nanoseconds) as a time; NULL and 0 are the zero
// time.
func (w *row) time(i int) time.Time {
	return fromNS(w.num(i), true)
}

var (
	objectNames   = strings.Fields(strings.NewReplacer(",", " ").Replace(objectCols))
	deliveryNames = strings.Fields(strings.NewReplacer(",", " ").Replace(deliveryCols))
)

// scanObject reads one objects row; the error is a *RowError.
func scanObject(r scanner) (ObjectState, error) {
	var o ObjectState
	w, err := scanRow(r, objectNames...)
	if err != nil {
		return o, &RowError{Table: "objects", Err: err}
	}
	o.ID = w.str(0)
	o.SOPInstanceUID, o.SOPClassUID, o.StudyInstanceUID = w.str(1), w.str(2), w.str(3)
	o.SeriesInstanceUID, o.TransferSyntaxUID = w.str(4), w.str(5)
	o.CallingAE, o.CalledAE, o.Peer = w.str(6), w.str(7), w.str(8)
	o.Received, o.Size, o.GoneAt = w.time(9), w.num(10), w.time(11)
	o.Incomplete = w.num(12) == 0
	if w.err != nil {
		return o, &RowError{Table: "objects", ObjectID: o.ID, Err: w.err}
	}
	return o, nil
}

// scanDelivery reads one deliveries row; the error is a *RowError.
func scanDelivery(r scanner) (id string, d DeliveryState, err error) {
	w, err := scanRow(r, deliveryNames...)
	if err != nil {
		return "", d, &RowError{Table: "deliveries", Err: err}
	}
	id = w.str(0)
	d = DeliveryState{
		Destination: w.str(1),
		State:       w.str(2),
		Retry: Retry{
			Attempts:     int(w.num(3)),
			FirstFailure: w.time(4),
			NextAttempt:  w.time(5),
			LastError:    w.str(6),
			Unconfirmed:  int(w.num(7)),
			Delay:        time.Duration(w.num(8)),
		},
		DeliveredAt: w.time(9),
		DeadAt:      w.time(10),
		DeadReason:  w.str(11),
		UpdatedAt:   w.time(12),
		Copy:        w.str(13),
	}
	if w.err == nil && !knownState(d.State) {
		// The state is one of ours or a newer version's word: short,
		// and quoted.
		w.err = fmt.Errorf("state %q is not one of %s", clipState(d.State), strings.Join(States, ", "))
	}
	if w.err != nil {
		return id, DeliveryState{}, &RowError{Table: "deliveries", ObjectID: id, Destination: d.Destination, Err: w.err}
	}
	return id, d, nil
}

func clipState(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// idList is ids as one parameter, read back with json_each: one statement
// for any number of IDs, no SQL built from them.
func idList(ids []string) (string, error) {
	b, err := json.Marshal(ids)
	return string(b), err
}

func limitArg(limit int) int {
	if limit <= 0 {
		return -1 // SQLite: no limit
	}
	return limit
}

// The reads' statements; plan_test.go checks that an index answers each.
const (
	sqlPending = `SELECT object_id FROM deliveries WHERE destination = ? AND state = 'pending'
		ORDER BY received_at, object_id LIMIT ?`
	// Dead letters are the dead deliveries of objects still in the spool:
	// a purged one is remembered (Trace) but waits for nobody.
	sqlDeadAny = `SELECT d.object_id FROM deliveries d JOIN objects o ON o.id = d.object_id
		WHERE d.state = 'dead' AND o.gone_at IS NULL ORDER BY d.dead_at DESC`
	sqlDeadDest = `SELECT d.object_id FROM deliveries d JOIN objects o ON o.id = d.object_id
		WHERE d.state = 'dead' AND d.destination = ? AND o.gone_at IS NULL ORDER BY d.dead_at DESC`
	sqlStats     = `SELECT destination, state, count(*), min(received_at) FROM deliveries WHERE state <> 'dead' GROUP BY destination, state`
	sqlDeadStats = `SELECT d.destination, 'dead', count(*), NULL FROM deliveries d JOIN objects o ON o.id = d.object_id
		WHERE d.state = 'dead' AND o.gone_at IS NULL GROUP BY d.destination`
	sqlObject       = `SELECT ` + objectCols + ` FROM objects WHERE id = ?`
	sqlDelivery     = `SELECT ` + deliveryCols + ` FROM deliveries WHERE object_id = ? AND destination = ?`
	sqlKnown        = `SELECT id FROM objects WHERE id IN (SELECT value FROM json_each(?)) AND complete <> 0`
	sqlObjects      = `SELECT ` + objectCols + ` FROM objects WHERE id IN (SELECT value FROM json_each(?))`
	sqlInSpool      = `SELECT id FROM objects WHERE gone_at IS NULL AND id > ? ORDER BY id LIMIT ?`
	sqlDeliveriesOf = `SELECT ` + deliveryCols + ` FROM deliveries
		WHERE object_id IN (SELECT value FROM json_each(?)) ORDER BY object_id, destination`
)

// traceSQL is the statement for q: constant fragments, and q's values as
// parameters.
func traceSQL(qu Query) (string, []any) {
	var (
		where []string
		args  []any
	)
	if qu.StudyInstanceUID != "" {
		where, args = append(where, "study_uid = ?"), append(args, qu.StudyInstanceUID)
	}
	if qu.SOPInstanceUID != "" {
		where, args = append(where, "sop_instance_uid = ?"), append(args, qu.SOPInstanceUID)
	}
	if qu.CallingAE != "" {
		where, args = append(where, "calling_ae = ?"), append(args, qu.CallingAE)
	}
	if !qu.From.IsZero() {
		where, args = append(where, "received_at >= ?"), append(args, qu.From.UnixNano())
	}
	if !qu.To.IsZero() {
		where, args = append(where, "received_at < ?"), append(args, qu.To.UnixNano())
	}
	stmt := `SELECT ` + objectCols + ` FROM objects`
	if len(where) > 0 {
		stmt += ` WHERE ` + strings.Join(where, " AND ")
	}
	// rowid breaks ties: every index of objects holds it, so no sort is needed.
	stmt += ` ORDER BY received_at DESC, rowid DESC LIMIT ?`
	return stmt, append(args, limitArg(qu.Limit))
}

// Pending returns the IDs of the objects pending for dest, oldest received
// first; limit <= 0 means all.
func (q *queries) Pending(dest string, limit int) ([]string, error) {
	ctx, cancel := q.ctx()
	defer cancel()
	rows, err := q.db.QueryContext(ctx, sqlPending, dest, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("ledger: pending: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id sql.NullString
		if err := rows.Scan(&id); err != nil || !id.Valid {
			q.skip(&RowError{Table: "deliveries", Destination: dest, Err: fmt.Errorf("object_id: %v", err)})
			continue
		}
		ids = append(ids, id.String)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: pending: %w", err)
	}
	return ids, nil
}

// InSpool returns, in ascending order after `after`, the IDs of the objects
// whose files the ledger believes are still in the spool (no Gone recorded);
// limit <= 0 means all. At start-up, those the spool no longer holds are the
// Gone that a crash lost.
func (q *queries) InSpool(after string, limit int) ([]string, error) {
	ctx, cancel := q.ctx()
	defer cancel()
	rows, err := q.db.QueryContext(ctx, sqlInSpool, after, limitArg(limit))
	if err != nil {
		return nil, fmt.Errorf("ledger: in spool: %w", err)
	}
	defer rows.Close()
	var ids []string
	for rows.Next() {
		var id sql.NullString
		if err := rows.Scan(&id); err != nil || !id.Valid {
			q.skip(&RowError{Table: "objects", Err: fmt.Errorf("column id: %v", err)})
			continue
		}
		ids = append(ids, id.String)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: in spool: %w", err)
	}
	return ids, nil
}

// Delivery returns the delivery of object id to dest; false when there is
// none. An unreadable row is an error (a *RowError).
func (q *queries) Delivery(id, dest string) (DeliveryState, bool, error) {
	ctx, cancel := q.ctx()
	defer cancel()
	row := q.db.QueryRowContext(ctx, sqlDelivery, id, dest)
	_, d, err := scanDelivery(row)
	if errors.Is(err, sql.ErrNoRows) {
		return DeliveryState{}, false, nil
	}
	if err != nil {
		q.skip(err.(*RowError))
		return DeliveryState{}, false, err
	}
	return d, true, nil
}

// Object returns object id with all its deliveries; false when the ledger
// does not know it. An unreadable object row is an error (a *RowError);
// unreadable delivery rows are described in ObjectState.Unreadable.
func (q *queries) Object(id string) (ObjectState, bool, error) {
	ctx, cancel := q.ctx()
	defer cancel()
	o, err := scanObject(q.db.QueryRowContext(ctx, sqlObject, id))
	found := err == nil
	if errors.Is(err, sql.ErrNoRows) {
		// Deliveries without their object row can still be told.
		o = ObjectState{}
		o.ID, o.Incomplete = id, true
	} else if err != nil {
		q.skip(err.(*RowError))
		return ObjectState{}, false, err
	}
	states := []ObjectState{o}
	if err := q.fillDeliveries(ctx, states); err != nil {
		return ObjectState{}, false, err
	}
	o = states[0]
	if !found && len(o.Deliveries) == 0 && len(o.Unreadable) == 0 {
		return ObjectState{}, false, nil
	}
	return o, true, nil
}

// Known tells, for each of ids, whether the ledger has its receipt (an object
// row that is complete: one made by a later event counts as unknown, so that
// Ensure completes it).
func (q *queries) Known(ids []string) (map[string]bool, error) {
	known := make(map[string]bool, len(ids))
	for _, id := range ids {
		known[id] = false
	}
	if len(ids) == 0 {
		return known, nil
	}
	list, err := idList(ids)
	if err != nil {
		return nil, err
	}
	ctx, cancel := q.ctx()
	defer cancel()
	rows, err := q.db.QueryContext(ctx, sqlKnown, list)
	if err != nil {
		return nil, fmt.Errorf("ledger: known: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			q.skip(&RowError{Table: "objects", Err: err})
			continue
		}
		known[id] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("ledger: known: %w", err)
	}
	return known, nil
}

// Trace returns the objects that match q, newest received first, with their
// deliveries.
func (q *queries) Trace(qu Query) ([]ObjectState, error) {
	stmt, args := traceSQL(qu)
	ctx, cancel := q.ctx()
	defer cancel()
	rows, err := q.db.QueryContext(ctx, stmt, args...)
	if err != nil {
		return nil, fmt.Errorf("ledger: trace: %w", err)
	}
	var out []ObjectState
	for rows.Next() {
		o, err := scanObject(rows)
		if err != nil {
			q.skip(err.(*RowError))
			continue
		}
		out = append(out, o)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("ledger: trace: %w", err)
	}
	if err := q.fillDeliveries(ctx, out); err != nil {
		return nil, err
	}
	return out, nil
}

// DeadLetters returns the objects still in the spool with a dead delivery
// to dest (any destination when dest is ""), the most recently dead first;
// limit <= 0 means all.
func (q *queries) DeadLetters(dest string, limit int) ([]ObjectState, error) {
	ctx, cancel := q.ctx()
	defer cancel()
	var (
		rows *sql.Rows
		err  error
	)
	// Newest dead first, through the partial indexes of dead rows; an
	// object dead for several destinations is listed once (its newest),
	// and the scan stops at limit objects.
	if dest == "" {
		rows, err = q.db.QueryContext(ctx, sqlDeadAny)
	} else {
		rows, err = q.db.QueryContext(ctx, sqlDeadDest, dest)
	}
	if err != nil {
		return nil, fmt.Errorf("ledger: dead letters: %w", err)
	}
	var ids []string
	seen := map[string]bool{}
	for (limit <= 0 || len(ids) < limit) && rows.Next() {
		var id sql.NullString
		if err := rows.Scan(&id); err != nil || !id.Valid {
			q.skip(&RowError{Table: "deliveries", Destination: dest, Err: fmt.Errorf("column object_id: %v", err)})
			continue
		}
		if !seen[id.String] {
			seen[id.String] = true
			ids = append(ids, id.String)
		}
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("ledger: dead letters: %w", err)
	}
	return q.objects(ctx, ids)
}

// DestinationStats counts deliveries by destination and state; dead ones
// only of objects still in the spool (dead letters waiting for an
// operator).
func (q *queries) DestinationStats() (map[string]DestStats, error) {
	ctx, cancel := q.ctx()
	defer cancel()
	stats := map[string]DestStats{}
	for _, stmt := range []string{sqlStats, sqlDeadStats} {
		if err := q.destinationStats(ctx, stmt, stats); err != nil {
			return nil, err
		}
	}
	return stats, nil
}

func (q *queries) destinationStats(ctx context.Context, stmt string, stats map[string]DestStats) error {
	rows, err := q.db.QueryContext(ctx, stmt)
	if err != nil {
		return fmt.Errorf("ledger: destination stats: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var (
			dest, state string
			n           int
			oldest      sql.NullInt64
		)
		if err := rows.Scan(&dest, &state, &n, &oldest); err != nil {
			q.skip(&RowError{Table: "deliveries", Destination: dest, Err: err})
			continue
		}
		s := stats[dest]
		switch state {
		case StatePending:
			s.Pending, s.OldestPending = n, fromNS(oldest.Int64, oldest.Valid)
		case StateDelivered:
			s.Delivered = n
		case StateDead:
			s.Dead = n
		default:
			for range n {
				q.skip(&RowError{Table: "deliveries", Destination: dest, Err: fmt.Errorf("state %q is not one of %s", clipState(state), strings.Join(States, ", "))})
			}
			continue
		}
		stats[dest] = s
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger: destination stats: %w", err)
	}
	return nil
}

// objects loads the objects ids, in that order, with their deliveries. An
// object known only from its deliveries comes back Incomplete.
func (q *queries) objects(ctx context.Context, ids []string) ([]ObjectState, error) {
	if len(ids) == 0 {
		return nil, nil
	}
	list, err := idList(ids)
	if err != nil {
		return nil, err
	}
	rows, err := q.db.QueryContext(ctx, sqlObjects, list)
	if err != nil {
		return nil, fmt.Errorf("ledger: objects: %w", err)
	}
	byID := make(map[string]ObjectState, len(ids))
	for rows.Next() {
		o, err := scanObject(rows)
		if err != nil {
			q.skip(err.(*RowError))
			continue
		}
		byID[o.ID] = o
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil, fmt.Errorf("ledger: objects: %w", err)
	}
	out := make([]ObjectState, 0, len(ids))
	for _, id := range ids {
		o, ok := byID[id]
		if !ok {
			o.ID, o.Incomplete = id, true
		}
		out = append(out, o)
	}
	return out, q.fillDeliveries(ctx, out)
}

// fillDeliveries loads the deliveries of objs (sorted by destination) and
// sets their Destinations.
func (q *queries) fillDeliveries(ctx context.Context, objs []ObjectState) error {
	if len(objs) == 0 {
		return nil
	}
	at := make(map[string][]int, len(objs))
	ids := make([]string, 0, len(objs))
	for i, o := range objs {
		if _, ok := at[o.ID]; !ok {
			ids = append(ids, o.ID)
		}
		at[o.ID] = append(at[o.ID], i)
	}
	list, err := idList(ids)
	if err != nil {
		return err
	}
	rows, err := q.db.QueryContext(ctx, sqlDeliveriesOf, list)
	if err != nil {
		return fmt.Errorf("ledger: deliveries: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		id, d, err := scanDelivery(rows)
		if err != nil {
			re := err.(*RowError)
			q.skip(re)
			for _, i := range at[id] {
				objs[i].Unreadable = append(objs[i].Unreadable, re.Error())
			}
			continue
		}
		for _, i := range at[id] {
			objs[i].Deliveries = append(objs[i].Deliveries, d)
			objs[i].Destinations = append(objs[i].Destinations, d.Destination)
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("ledger: deliveries: %w", err)
	}
	for i := range objs {
		slices.SortFunc(objs[i].Deliveries, func(a, b DeliveryState) int { return strings.Compare(a.Destination, b.Destination) })
		slices.Sort(objs[i].Destinations)
	}
	return nil
}
