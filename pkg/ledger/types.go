// Package ledger is the delivery ledger: an embedded SQLite database that
// holds, per spooled object and per destination, the durable delivery state,
// and keeps the history of what happened to an object after its file has left
// the spool (for the retention the daemon prunes it to).
//
// The daemon writes through one goroutine that owns the write connection and
// commits queued operations in batches, so that the C-STORE path never waits
// for the ledger: the spool's sealed file is the proof of receipt, and after a
// crash the ledger is completed from the spool's files (Ensure). Operator
// commands read it (Reader) and re-queue dead letters (Admin) from another
// process while the daemon runs: the database is in WAL mode, so readers never
// wait for the writer, and writers wait for each other (busy timeout).
package ledger

import (
	"errors"
	"fmt"
	"time"
)

// Object is what the ledger keeps about one spooled object.
type Object struct {
	ID                                                                                  string // the spool's object ID (primary key)
	SOPInstanceUID, SOPClassUID, StudyInstanceUID, SeriesInstanceUID, TransferSyntaxUID string
	CallingAE, CalledAE, Peer                                                           string
	Received                                                                            time.Time
	Size                                                                                int64
	Destinations                                                                        []string // one pending delivery each
}

// Retry is a failed delivery attempt: what the destination's retry policy
// decided after it.
type Retry struct {
	Attempts     int
	FirstFailure time.Time
	NextAttempt  time.Time
	LastError    string
	Unconfirmed  int           // answers in a row that left the object out
	Delay        time.Duration // the wait NextAttempt was set for
}

// Delivery states.
const (
	StatePending   = "pending"
	StateDelivered = "delivered"
	StateDead      = "dead"
)

// States lists every delivery state; a row with another state is unreadable.
var States = []string{StatePending, StateDelivered, StateDead}

func knownState(s string) bool {
	return s == StatePending || s == StateDelivered || s == StateDead
}

// DeliveryState is the state of one object's delivery to one destination.
type DeliveryState struct {
	Destination string
	State       string // "pending", "delivered", "dead"
	Retry       Retry
	DeliveredAt time.Time
	DeadAt      time.Time
	DeadReason  string
	UpdatedAt   time.Time
	// Copy says what the destination was sent when it was not the
	// original: "" for the original, else e.g. "stamped ClinicalTrialSponsorName=KP-CT".
	Copy string
}

// ObjectState is an object with every delivery the ledger has for it.
type ObjectState struct {
	Object                     // Destinations: all of its destinations
	GoneAt     time.Time       // zero while its file is in the spool
	Deliveries []DeliveryState // sorted by destination
	// Incomplete is set when the object's receipt was never recorded (its
	// row was made by a later event: a delivery, a dead letter, its file
	// leaving the spool): only ID and what the events said are known. Ensure
	// completes such a row.
	Incomplete bool
	// Unreadable describes rows of this object the ledger could not read
	// (a state outside States, a value of the wrong type); they are left out
	// of Deliveries.
	Unreadable []string
}

// Query selects objects for Trace. Empty fields do not restrict; From and To
// bound the receive time (From inclusive, To exclusive). Limit <= 0 means no
// limit.
type Query struct {
	StudyInstanceUID, SOPInstanceUID, CallingAE string
	From, To                                    time.Time
	Limit                                       int
}

// DestStats counts one destination's deliveries by state.
type DestStats struct {
	Pending       int
	OldestPending time.Time // receive time of the oldest pending object (zero when none)
	Delivered     int
	Dead          int
}

// Errors.
var (
	// ErrClosed is returned by operations on a closed Ledger.
	ErrClosed = errors.New("ledger: closed")
	// ErrNoLedger: OpenReader or OpenAdmin found no ledger file.
	ErrNoLedger = errors.New("no delivery ledger")
	// ErrDamaged: the file is not an SQLite database or fails its integrity check.
	ErrDamaged = errors.New("damaged or not a database")
	// ErrNotLedger: the file is an SQLite database of something else.
	ErrNotLedger = errors.New("not a dicomgw delivery ledger")
	// ErrNewerSchema: the ledger was written by a newer dicomgw.
	ErrNewerSchema = errors.New("ledger of a newer schema")
	// ErrOlderSchema: OpenReader or OpenAdmin found a ledger that the daemon
	// has not migrated yet (they never migrate).
	ErrOlderSchema = errors.New("ledger of an older schema")
	// ErrNotFound: no such object, or no delivery of it to that destination.
	ErrNotFound = errors.New("not in the ledger")
	// ErrNotDead: Requeue of a delivery that is not a dead letter.
	ErrNotDead = errors.New("not a dead letter")
	// ErrGone: Requeue of an object whose file has left the spool.
	ErrGone = errors.New("its file has left the spool")
)

// RowError is a row the ledger could not read.
type RowError struct {
	Table       string // "objects" or "deliveries"
	ObjectID    string
	Destination string // deliveries only
	Err         error
}

func (e *RowError) Error() string {
	if e.Destination != "" {
		return fmt.Sprintf("ledger: unreadable %s row (object %q, destination %q): %v", e.Table, e.ObjectID, e.Destination, e.Err)
	}
	return fmt.Sprintf("ledger: unreadable %s row (object %q): %v", e.Table, e.ObjectID, e.Err)
}

func (e *RowError) Unwrap() error { return e.Err }

// Bounds on free text kept per delivery: a destination's error or reason can
// be a whole HTML page.
const maxText = 2048

// clip cuts s to at most maxText bytes, at a rune boundary.
func clip(s string) string {
	if len(s) <= maxText {
		return s
	}
	i := maxText
	for i > 0 && s[i]&0xC0 == 0x80 { // continuation byte
		i--
	}
	return s[:i]
}

// ns is t in Unix nanoseconds, nil for the zero time (stored as NULL).
func ns(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return t.UnixNano()
}

// nsOrZero is t in Unix nanoseconds, 0 for the zero time (NOT NULL columns).
func nsOrZero(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNS(v int64, valid bool) time.Time {
	if !valid || v == 0 {
		return time.Time{}
	}
	return time.Unix(0, v)
}
