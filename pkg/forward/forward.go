// Package forward takes committed objects from the spool and delivers them
// to a destination: a DICOMweb endpoint with STOW-RS, or the local archive.
// It batches objects of one study, retries what can be retried with a
// durable schedule, dead-letters what cannot be delivered, and pauses a
// destination that refuses for reasons an operator must fix — keeping every
// object until it is delivered or dead-lettered.
//
// The forwarder does not know the spool: it meets it through Queue, wired
// in cmd/dicomgw.
package forward

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Outcome is what became of one object in one delivery attempt.
type Outcome uint8

// Outcomes.
const (
	Delivered Outcome = iota + 1 // the destination has it: it leaves the queue
	Retry                        // a transient failure: try again later
	Dead                         // it can never be delivered as it is: dead letter
	Pause                        // the destination refuses for a reason an operator must fix: keep it, stop sending
	Abandoned                    // the attempt was cut short by shutdown: nothing happened
)

func (o Outcome) String() string {
	switch o {
	case Delivered:
		return "delivered"
	case Retry:
		return "retry"
	case Dead:
		return "dead"
	case Pause:
		return "pause"
	case Abandoned:
		return "abandoned"
	}
	return "other"
}

// Result is the outcome for one object.
type Result struct {
	Outcome Outcome
	// Reason says why, for logs, retry records and dead letter files.
	Reason string
	// RetryAfter is the least wait before the next attempt, when the
	// destination said (Retry-After).
	RetryAfter time.Duration
	// Alone, with Retry, asks for the object to be sent again at once in a
	// batch of its own: the batch was refused as a whole (too large), not
	// the object. No attempt is counted.
	Alone bool
	// HTTPStatus is the status of the answer the outcome was read from; 0
	// when there was none (connection failure, timeout, not HTTP).
	HTTPStatus int
	// Cause, with Pause, says why in a closed set (a metric label).
	Cause Cause
	// Unconfirmed, with Retry, says that a well-formed answer left the
	// object out (neither stored nor refused): several such answers in a
	// row dead-letter it (Config.MaxUnconfirmed).
	Unconfirmed bool
	// Damaged, with Dead, says the spool's copy of the object is damaged
	// (Object.Open's reader failed with ErrDamaged): it was not sent, and
	// is quarantined as a dead letter.
	Damaged bool
	// Location, with Delivered, is where the destination keeps the object
	// when it says: the archive gives the file's path in its directory.
	Location string
	// Filed, with Delivered, says why the archive did not file the object
	// under its own UIDs alone.
	Filed Filing
}

// Filing says why the archive filed an object under a name other than its
// UIDs; a set of flags.
type Filing uint8

// Filings.
const (
	FiledNoStudy   Filing = 1 << iota // no Study Instance UID: under the placeholder _no-study-uid
	FiledNoSeries                     // no Series Instance UID: under the placeholder _no-series-uid
	FiledDuplicate                    // a different object holds its SOP Instance UID's name: <sop>+dup-<spool ID>.dcm
)

// labels are the metric label values of the flags in f.
func (f Filing) labels() []string {
	var out []string
	for _, l := range []struct {
		f     Filing
		label string
	}{
		{FiledNoStudy, "no_study_instance_uid"},
		{FiledNoSeries, "no_series_instance_uid"},
		{FiledDuplicate, "duplicate_sop_instance_uid"},
	} {
		if f&l.f != 0 {
			out = append(out, l.label)
		}
	}
	return out
}

// Cause is why a destination was paused.
type Cause uint8

// Causes of a pause.
const (
	CauseNone          Cause = iota
	CauseNotDICOM            // a 2xx answer that is not a DICOM STOW-RS response
	CauseCredentials         // 401 even after a refresh, 403
	CauseRedirect            // a redirect to another origin or with another method
	CauseClientError         // 400, 404, 415 and other 4xx: the base URL or the endpoint's configuration
	CauseNotAuthorized       // FailureReason 0124
	CauseRejected            // A-ASSOCIATE-RJ, permanent: called or calling AE title not recognized...
)

// Causes lists every cause of a pause (the metric's label values).
var Causes = []Cause{CauseNotDICOM, CauseCredentials, CauseRedirect, CauseClientError, CauseNotAuthorized, CauseRejected}

func (c Cause) String() string {
	switch c {
	case CauseNotDICOM:
		return "not_dicom_answer"
	case CauseCredentials:
		return "credentials"
	case CauseRedirect:
		return "redirect"
	case CauseClientError:
		return "client_error"
	case CauseNotAuthorized:
		return "not_authorized"
	case CauseRejected:
		return "association_rejected"
	}
	return "other"
}

// ErrDamaged is wrapped by the errors of Object.Open and of its reader, and
// by Queue.Describe, when the spool's copy of an object is damaged (its
// seal's size or CRC does not match, it is truncated, or its header or
// records cannot be read). Such an object is never sent: it is quarantined
// as a dead letter saying so.
var ErrDamaged = errors.New("damaged in the spool")

// Object is a queued object as the forwarder sees it.
type Object struct {
	ID string
	// Open returns the data set, byte for byte as received. Its reader
	// checks the spool's copy as it goes and fails with an error wrapping
	// ErrDamaged, before handing over the last bytes, when the copy is
	// damaged: a request fed from it never completes.
	Open              func() (io.ReadCloser, error)
	DataSize          int64 // bytes of the data set
	SOPClassUID       string
	SOPInstanceUID    string
	TransferSyntaxUID string
	StudyInstanceUID  string // "" when the data set has none
	SeriesInstanceUID string
	CallingAE         string
	Received          time.Time
}

// Destination delivers objects.
type Destination interface {
	// Deliver sends objects, all of one study (or all without one), and
	// returns one Result per object, in order. It must honour ctx: when ctx
	// ends it returns Abandoned for what it could not finish.
	Deliver(ctx context.Context, objs []*Object) []Result
	String() string
}

// RetryRecord is the durable history of an object's failed attempts.
type RetryRecord struct {
	Attempts     int
	FirstFailure time.Time
	NextAttempt  time.Time
	LastError    string
	// Unconfirmed counts the answers in a row that left the object out.
	Unconfirmed int
	// Delay is the wait NextAttempt was set for, relative to the time of
	// writing (backoff, or a longer Retry-After): a record written while
	// the clock was wrong never waits longer than this from now.
	Delay time.Duration
}

// Queue is the spool as the forwarder uses it.
type Queue interface {
	// QueuedIDs lists the queued objects, oldest first.
	QueuedIDs() ([]string, error)
	// Describe loads a queued object and its failure history. An error
	// wrapping fs.ErrNotExist means it is no longer queued; one wrapping
	// ErrDamaged, that its files are damaged (it is quarantined).
	Describe(id string) (*Object, RetryRecord, error)
	Delivered(id string) error
	Retry(id string, r RetryRecord) error
	Dead(id, reason string, details map[string]string) error
}

// Config tunes a Forwarder. Zero values take the defaults.
type Config struct {
	Workers           int           // requests in flight
	BatchMaxInstances int           // objects per request
	BatchMaxBytes     int64         // bytes per request (a single larger object still goes alone)
	BatchLinger       time.Duration // how long a new object waits for more of its study
	RetryFor          time.Duration // how long an object is retried before it is dead-lettered
	RetryMin          time.Duration // first retry delay; doubled per attempt, with jitter
	RetryMax          time.Duration // longest retry delay
	PauseMin          time.Duration // first pause of a refusing destination; doubled per refusal
	PauseMax          time.Duration
	Window            int           // objects held in memory; more wait in the spool
	RescanInterval    time.Duration // how often the spool is listed again (objects re-queued by an operator)
	MaxUnconfirmed    int           // answers in a row that may leave an object out before it is dead-lettered
}

// Defaults.
const (
	DefaultWorkers           = 4
	DefaultBatchMaxInstances = 50
	DefaultBatchMaxBytes     = 64 << 20
	DefaultBatchLinger       = 200 * time.Millisecond
	DefaultRetryFor          = 72 * time.Hour
	DefaultRetryMin          = 10 * time.Second
	DefaultRetryMax          = 15 * time.Minute
	DefaultPauseMin          = 30 * time.Second
	DefaultPauseMax          = 10 * time.Minute
	DefaultWindow            = 20000
	DefaultRescanInterval    = 30 * time.Second
	DefaultMaxUnconfirmed    = 5
)

func (c Config) withDefaults() Config {
	def := func(v *time.Duration, d time.Duration) {
		if *v <= 0 {
			*v = d
		}
	}
	if c.Workers <= 0 {
		c.Workers = DefaultWorkers
	}
	if c.BatchMaxInstances <= 0 {
		c.BatchMaxInstances = DefaultBatchMaxInstances
	}
	if c.BatchMaxBytes <= 0 {
		c.BatchMaxBytes = DefaultBatchMaxBytes
	}
	if c.BatchLinger < 0 {
		c.BatchLinger = 0
	} else if c.BatchLinger == 0 {
		c.BatchLinger = DefaultBatchLinger
	}
	def(&c.RetryFor, DefaultRetryFor)
	def(&c.RetryMin, DefaultRetryMin)
	def(&c.RetryMax, DefaultRetryMax)
	def(&c.PauseMin, DefaultPauseMin)
	def(&c.PauseMax, DefaultPauseMax)
	def(&c.RescanInterval, DefaultRescanInterval)
	if c.Window <= 0 {
		c.Window = DefaultWindow
	}
	if c.MaxUnconfirmed <= 0 {
		c.MaxUnconfirmed = DefaultMaxUnconfirmed
	}
	return c
}

// item is a queued object the forwarder holds in memory.
type item struct {
	obj      *Object
	retry    RetryRecord
	next     time.Time // not before
	added    time.Time // when it became known: the linger counts from here
	inflight bool
	alone    bool // send in a batch of its own (it was in a batch that was too large)
}

// credentialed is a destination whose credentials can change while it is
// paused (STOW).
type credentialed interface{ CredentialVersion() uint64 }

// credentialPoll is how often a paused destination's credentials are
// checked for a change.
const credentialPoll = time.Second

// Forwarder moves queued objects to a destination.
type Forwarder struct {
	cfg  Config
	q    Queue
	dest Destination
	log  *slog.Logger
	now  func() time.Time
	m    *metrics

	kick chan struct{}

	mu          sync.Mutex
	items       map[string]*item
	pending     []string // notified, not loaded yet
	loading     []string // taken from pending, being described: they count against the window too
	overflow    bool     // notifications were dropped: rescan when there is room
	pausedUntil time.Time
	pauseFor    time.Duration
	pauseReason string
	pauseCreds  uint64 // the destination's credential version when it paused
	probing     bool   // a batch is testing a paused destination
	// The last failed attempt, for an operator: when, and what the
	// destination said.
	lastFailure       time.Time
	lastFailureReason string
}

// New returns a Forwarder; Run starts it.
// Its metrics are registered with reg (nil: not exported).
func New(cfg Config, q Queue, dest Destination, log *slog.Logger, reg prometheus.Registerer) *Forwarder {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Forwarder{
		cfg: cfg.withDefaults(), q: q, dest: dest, log: log, now: time.Now,
		kick:  make(chan struct{}, 1),
		items: make(map[string]*item),
		m:     newMetrics(reg),
	}
	f.m.up.Set(1)
	return f
}

// Notify tells the forwarder that an object was committed. It never blocks:
// the receive path must not wait for the forwarder.
func (f *Forwarder) Notify(id string) {
	f.mu.Lock()
	if f.held() < f.cfg.Window {
		f.pending = append(f.pending, id)
	} else {
		f.overflow = true
	}
	f.mu.Unlock()
	f.wake()
}

// Offer hands the forwarder an object just committed, already described
// (what the commit learned travels with it: nothing is read again). Like
// Notify, it never blocks; beyond the window the object waits on disk for
// a rescan.
func (f *Forwarder) Offer(obj *Object) {
	f.mu.Lock()
	if f.held() < f.cfg.Window {
		if f.items[obj.ID] == nil {
			f.items[obj.ID] = &item{obj: obj, added: f.now()}
		}
	} else {
		f.overflow = true
	}
	f.mu.Unlock()
	f.wake()
}

// held is how many objects count against the window. f.mu is held.
func (f *Forwarder) held() int { return len(f.items) + len(f.pending) + len(f.loading) }

func (f *Forwarder) wake() {
	select {
	case f.kick <- struct{}{}:
	default:
	}
}

// Paused reports whether the destination is paused (refusing until an
// operator acts), and why.
func (f *Forwarder) Paused() (bool, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return !f.pausedUntil.IsZero(), f.pauseReason
}

// LastFailure is when an attempt to deliver last failed (zero: never since
// the start), and why.
func (f *Forwarder) LastFailure() (time.Time, string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.lastFailure, f.lastFailureReason
}

// Run forwards until ctx ends, then waits for the requests in flight to
// finish or be abandoned. Objects are never lost: what was not delivered
// stays queued.
func (f *Forwarder) Run(ctx context.Context) error {
	// A batch is chosen only when a worker is free to send it at once: a
	// batch chosen earlier and left waiting for a worker could go out after
	// the destination was paused meanwhile, or miss objects of its study
	// that arrived while it waited.
	slots := make(chan struct{}, f.cfg.Workers)
	var wg sync.WaitGroup
	defer wg.Wait()

	f.rescan()
	rescan := time.NewTicker(f.cfg.RescanInterval)
	defer rescan.Stop()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			return nil
		}
		if ctx.Err() != nil {
			return nil
		}
		f.loadPending()
		batch, wait := f.pick()
		if batch != nil {
			wg.Add(1)
			go func() {
				defer wg.Done()
				f.deliver(ctx, batch)
				<-slots
				f.wake()
			}()
			continue
		}
		<-slots
		if wait <= 0 || wait > time.Hour {
			wait = time.Hour
		}
		timer.Reset(wait)
		select {
		case <-f.kick:
		case <-timer.C:
		case <-rescan.C:
			f.rescan()
		case <-ctx.Done():
			return nil
		}
		if !timer.Stop() {
			select {
			case <-timer.C:
			default:
			}
		}
	}
}
