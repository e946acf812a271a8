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
	"fmt"
	"log/slog"
	"math/rand/v2"
	"sort"
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
}

// Object is a queued object as the forwarder sees it.
type Object struct {
	ID                string
	Path              string // the spool file: file meta information, then the data set
	Size              int64  // of the whole file
	DataOffset        int64  // where the data set starts
	SOPClassUID       string
	SOPInstanceUID    string
	TransferSyntaxUID string
	StudyInstanceUID  string // "" when the data set has none
	SeriesInstanceUID string
	CallingAE         string
	Received          time.Time
}

// DataSize is the size of the data set.
func (o *Object) DataSize() int64 { return o.Size - o.DataOffset }

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
}

// Queue is the spool as the forwarder uses it.
type Queue interface {
	// QueuedIDs lists the queued objects, oldest first.
	QueuedIDs() ([]string, error)
	// Describe loads a queued object and its failure history. An error
	// wrapping fs.ErrNotExist means it is no longer queued.
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
		m:     newMetrics(reg, dest),
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

// rescan lists the spool and takes in objects it does not hold yet, up to
// the window: at start, after notifications overflowed, and periodically
// for objects an operator re-queued.
func (f *Forwarder) rescan() {
	ids, err := f.q.QueuedIDs()
	if err != nil {
		f.log.Error("cannot list the spool", "err", err)
		return
	}
	f.mu.Lock()
	known := make(map[string]bool, len(f.pending)+len(f.loading))
	for _, id := range f.pending {
		known[id] = true
	}
	for _, id := range f.loading {
		known[id] = true
	}
	f.overflow = false
	for _, id := range ids {
		if f.held() >= f.cfg.Window {
			f.overflow = true
			break
		}
		if f.items[id] == nil && !known[id] {
			f.pending = append(f.pending, id)
		}
	}
	f.mu.Unlock()
}

// loadPending describes the notified objects and adds them to the items.
func (f *Forwarder) loadPending() {
	f.mu.Lock()
	ids := f.pending
	f.pending, f.loading = nil, ids
	f.mu.Unlock()
	for i, id := range ids {
		obj, rec, err := f.q.Describe(id)
		now := f.now()
		f.mu.Lock()
		f.loading = ids[i+1:]
		if err == nil && f.items[id] == nil {
			f.items[id] = &item{obj: obj, retry: rec, next: rec.NextAttempt, added: now}
		}
		f.mu.Unlock()
		if err != nil {
			// Gone (delivered or dead-lettered meanwhile, or purged by an
			// operator), or unreadable: in both cases not ours to send now.
			f.log.Warn("cannot load queued object", "id", id, "err", err)
		}
	}
	f.mu.Lock()
	again := f.overflow && len(f.items) <= f.cfg.Window/2
	f.mu.Unlock()
	if again {
		f.rescan()
	}
}

// group is the due objects of one study (or one object to be sent alone).
type group struct {
	head  *item // the oldest
	items []*item
	bytes int64
	alone bool
}

// pick chooses the next batch: the due objects of the study whose oldest
// due object is the oldest, within the batch limits. A batch that could
// still grow waits for the linger of its oldest object, and meanwhile the
// other studies go on. When nothing can go now, pick says how long to wait.
func (f *Forwarder) pick() ([]*item, time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := f.now()
	if now.Before(f.pausedUntil) {
		// Credentials replaced (a rotated token file, a new secret): test
		// the destination now rather than at the end of the pause.
		if cv, ok := f.dest.(credentialed); ok {
			if cv.CredentialVersion() != f.pauseCreds {
				f.log.Info("credentials changed: trying the paused destination now", "destination", f.dest.String())
				f.pausedUntil = now
			} else {
				return nil, min(f.pausedUntil.Sub(now), credentialPoll)
			}
		} else {
			return nil, f.pausedUntil.Sub(now)
		}
	}
	if f.probing {
		return nil, time.Hour // the probe's result will wake us
	}
	var wait time.Duration // 0: nothing to wait for
	soon := func(d time.Duration) {
		if wait == 0 || d < wait {
			wait = d
		}
	}
	studies := map[string]*group{}
	var groups []*group
	for _, it := range f.items {
		if it.inflight {
			continue
		}
		if it.next.After(now) {
			soon(it.next.Sub(now))
			continue
		}
		g := studies[it.obj.StudyInstanceUID]
		if it.alone {
			g = &group{alone: true}
			groups = append(groups, g)
		} else if g == nil {
			g = &group{}
			studies[it.obj.StudyInstanceUID] = g
			groups = append(groups, g)
		}
		g.items = append(g.items, it)
		g.bytes += it.obj.DataSize()
		if g.head == nil || it.obj.ID < g.head.obj.ID {
			g.head = it
		}
	}
	sort.Slice(groups, func(i, j int) bool { return groups[i].head.obj.ID < groups[j].head.obj.ID })
	for _, g := range groups {
		full := g.alone || len(g.items) >= f.cfg.BatchMaxInstances || g.bytes >= f.cfg.BatchMaxBytes
		if linger := g.head.added.Add(f.cfg.BatchLinger); !full && g.head.retry.Attempts == 0 && now.Before(linger) {
			soon(linger.Sub(now))
			continue
		}
		sort.Slice(g.items, func(i, j int) bool { return g.items[i].obj.ID < g.items[j].obj.ID })
		batch := g.items[:1]
		bytes := g.head.obj.DataSize()
		for _, it := range g.items[1:] {
			if len(batch) >= f.cfg.BatchMaxInstances || bytes+it.obj.DataSize() > f.cfg.BatchMaxBytes {
				break
			}
			batch = append(batch, it)
			bytes += it.obj.DataSize()
		}
		for _, it := range batch {
			it.inflight = true
		}
		if !f.pausedUntil.IsZero() {
			f.probing = true // the first batch after a pause tests the destination
		}
		return batch, 0
	}
	if wait == 0 {
		wait = time.Hour
	}
	return nil, wait
}

// deliver sends one batch and records what became of each object.
func (f *Forwarder) deliver(ctx context.Context, batch []*item) {
	objs := make([]*Object, len(batch))
	for i, it := range batch {
		objs[i] = it.obj
	}
	start := f.now()
	results := f.dest.Deliver(ctx, objs)
	if len(results) != len(objs) {
		// A destination bug; keep everything and try again later.
		f.log.Error("destination returned the wrong number of results", "destination", f.dest.String(), "objects", len(objs), "results", len(results))
		results = make([]Result, len(objs))
		for i := range results {
			results[i] = Result{Outcome: Retry, Reason: "internal error: destination returned no result"}
		}
	}
	elapsed := f.now().Sub(start)
	f.m.observe(objs, results, elapsed)
	// One time and one jitter for the whole batch: objects that failed
	// together come back together, in one request, rather than one by one.
	now, jitter := f.now(), rand.Float64()
	var paused *Result
	reachable := false
	for i, it := range batch {
		r := results[i]
		switch r.Outcome {
		case Delivered:
			reachable = true
			f.delivered(it, elapsed)
		case Retry:
			if r.Alone && !it.alone {
				f.mu.Lock()
				it.alone, it.inflight = true, false
				f.mu.Unlock()
				continue
			}
			f.retry(it, r, now, jitter)
		case Dead:
			reachable = true
			f.dead(it, r.Reason, it.retry.Attempts+1)
		case Pause:
			paused = &results[i]
			f.unflight(it)
		default: // Abandoned
			f.unflight(it)
		}
	}
	f.mu.Lock()
	f.probing = false
	switch {
	case paused != nil:
		f.m.up.Set(0)
		f.pauseFor = min(max(2*f.pauseFor, f.cfg.PauseMin), f.cfg.PauseMax)
		f.pausedUntil = f.now().Add(f.pauseFor)
		if f.pauseReason != paused.Reason || f.pauseFor == f.cfg.PauseMin {
			f.log.Error("destination paused: objects are kept until it accepts them again",
				"destination", f.dest.String(), "reason", paused.Reason, "retry_in", f.pauseFor)
		}
		f.pauseReason = paused.Reason
		if cv, ok := f.dest.(credentialed); ok {
			f.pauseCreds = cv.CredentialVersion()
		}
	case reachable && !f.pausedUntil.IsZero():
		f.m.up.Set(1)
		f.log.Info("destination accepts objects again", "destination", f.dest.String(), "was", f.pauseReason)
		f.pausedUntil, f.pauseFor, f.pauseReason = time.Time{}, 0, ""
	}
	f.mu.Unlock()
}

func (f *Forwarder) unflight(it *item) {
	f.mu.Lock()
	it.inflight = false
	f.mu.Unlock()
}

func (f *Forwarder) forget(it *item) {
	f.mu.Lock()
	delete(f.items, it.obj.ID)
	f.mu.Unlock()
}

func (f *Forwarder) delivered(it *item, elapsed time.Duration) {
	if err := f.q.Delivered(it.obj.ID); err != nil {
		// The destination has it; if the spool cannot forget it, it is sent
		// again after a restart, which a DICOMweb store takes as a duplicate.
		f.log.Error("delivered, but cannot remove it from the spool", "id", it.obj.ID, "err", err)
	}
	f.forget(it)
	f.log.Info("object delivered", "id", it.obj.ID, "destination", f.dest.String(),
		"sop_instance", it.obj.SOPInstanceUID, "study", it.obj.StudyInstanceUID, "bytes", it.obj.DataSize(),
		"attempts", it.retry.Attempts+1, "request_duration", elapsed.Round(time.Millisecond),
		"since_received", f.now().Sub(it.obj.Received).Round(time.Millisecond))
}

func (f *Forwarder) dead(it *item, reason string, attempts int) {
	details := map[string]string{
		"sop_class_uid":      it.obj.SOPClassUID,
		"sop_instance_uid":   it.obj.SOPInstanceUID,
		"study_instance_uid": it.obj.StudyInstanceUID,
		"transfer_syntax":    it.obj.TransferSyntaxUID,
		"calling_ae":         it.obj.CallingAE,
		"received":           it.obj.Received.UTC().Format(time.RFC3339),
		"destination":        f.dest.String(),
		"attempts":           fmt.Sprint(attempts),
	}
	if err := f.q.Dead(it.obj.ID, reason, details); err != nil {
		f.log.Error("cannot dead-letter object; it stays queued", "id", it.obj.ID, "reason", reason, "err", err)
		f.mu.Lock()
		it.inflight = false
		it.next = f.now().Add(f.cfg.RetryMax)
		f.mu.Unlock()
		return
	}
	f.forget(it)
	f.log.Error("object dead-lettered", "id", it.obj.ID, "destination", f.dest.String(),
		"sop_instance", it.obj.SOPInstanceUID, "study", it.obj.StudyInstanceUID, "reason", reason, "attempts", attempts)
}

// retry records a failed attempt at now and schedules the next one:
// exponential backoff with jitter (0 <= jitter < 1, drawn once per batch),
// at least what the destination asked for, until RetryFor has passed since
// the first failure.
func (f *Forwarder) retry(it *item, r Result, now time.Time, jitter float64) {
	rec := it.retry
	if rec.Attempts == 0 {
		rec.FirstFailure = now
	}
	rec.Attempts++
	rec.LastError = r.Reason
	if now.Sub(rec.FirstFailure) >= f.cfg.RetryFor {
		f.dead(it, fmt.Sprintf("still failing after %d attempts over %v: %s", rec.Attempts, now.Sub(rec.FirstFailure).Round(time.Second), r.Reason), rec.Attempts)
		return
	}
	delay := backoffAt(rec.Attempts, f.cfg.RetryMin, f.cfg.RetryMax, jitter)
	delay = max(delay, r.RetryAfter)
	rec.NextAttempt = now.Add(delay)
	if err := f.q.Retry(it.obj.ID, rec); err != nil {
		f.log.Error("cannot record the failed attempt", "id", it.obj.ID, "err", err)
	}
	f.mu.Lock()
	it.retry, it.next, it.inflight = rec, rec.NextAttempt, false
	f.mu.Unlock()
	f.log.Warn("delivery failed; will retry", "id", it.obj.ID, "destination", f.dest.String(),
		"sop_instance", it.obj.SOPInstanceUID, "reason", r.Reason, "attempts", rec.Attempts, "next_attempt_in", delay.Round(time.Millisecond))
}

// backoff is min·2^(attempts-1), capped at max, with "equal jitter": a
// random half of it, so that objects that failed together do not come back
// together.
func backoff(attempts int, lo, hi time.Duration) time.Duration {
	return backoffAt(attempts, lo, hi, rand.Float64())
}

// backoffAt is backoff with the random part given (0 <= jitter < 1).
func backoffAt(attempts int, lo, hi time.Duration, jitter float64) time.Duration {
	d := lo
	for i := 1; i < attempts && d < hi; i++ {
		d *= 2
	}
	d = min(d, hi)
	return d/2 + time.Duration(jitter*float64(d/2))
}
