package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/forward"
	"github.com/dicomgw/dicomgw/pkg/ledger"
	"github.com/dicomgw/dicomgw/pkg/route"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// deliveries is where the spool, the ledger and the forwarders meet. The
// spool holds each object once, with the destinations it was routed to in
// its record; the ledger holds, per object and destination, the delivery
// state (pending, delivered, dead), and is what every forwarder reads and
// writes; and an object's file leaves the queue only when no destination
// is pending any more: removed (or kept in delivered/) when all delivered
// it, moved to dead/ when some could not.
//
// A "delivered" or "dead" is committed to the ledger before the file
// moves, so a crash between the two leaves a file whose ledger says done:
// reconcile finishes it at the next start. A crash before the ledger
// learnt of a committed object leaves a sealed file with its
// destinations: reconcile completes the ledger from it.
type deliveries struct {
	sp      *spool.Spool
	led     *ledger.Ledger
	log     *slog.Logger
	damaged prometheus.Counter
	now     func() time.Time
	// news, if set, is told that an object was received or that a
	// destination is done with one (storage commitment looks again). It
	// must not block.
	news func()

	mu   sync.Mutex
	objs map[string]*objState // objects in queue/ with a destination pending, as far as known

	// Dead letters whose file was missing at the last sweep (forgetPurged),
	// and when it ran; the janitor's goroutine only.
	missing   map[string]bool
	lastSweep time.Time
}

// objState is what is left to do for one object.
type objState struct {
	pending map[string]bool   // destinations not done
	dead    map[string]string // destination -> why it could not deliver
	damaged bool              // its spool copy is damaged (quarantined)
	details map[string]string // what the forwarders said of it (its UIDs...), for its dead letter's reason file
}

func newDeliveries(sp *spool.Spool, led *ledger.Ledger, log *slog.Logger, reg prometheus.Registerer) *deliveries {
	d := &deliveries{sp: sp, led: led, log: log, now: time.Now, objs: map[string]*objState{},
		damaged: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_spool_damaged_objects_total",
			Help: "Objects found damaged in the spool (seal size or CRC mismatch, truncated, unreadable header or records) and quarantined as dead letters for every destination; none of them is ever sent.",
		})}
	if reg != nil {
		reg.MustRegister(d.damaged)
	}
	return d
}

// ledgerObject is the ledger's record of a spooled object.
func ledgerObject(d *spool.Description, dests []string) ledger.Object {
	return ledger.Object{
		ID: d.ID, SOPInstanceUID: d.SOPInstanceUID, SOPClassUID: d.SOPClassUID,
		StudyInstanceUID: d.StudyInstanceUID, SeriesInstanceUID: d.SeriesInstanceUID, TransferSyntaxUID: d.TransferSyntaxUID,
		CallingAE: d.CallingAE, CalledAE: d.CalledAE, Peer: route.PeerAddr(d.RemoteAddr),
		Received: d.Received, Size: d.Size, Destinations: dests,
	}
}

// received records an object just committed with its destinations.
func (d *deliveries) received(desc *spool.Description) {
	d.led.Received(ledgerObject(desc, desc.Destinations))
	d.mu.Lock()
	d.objs[desc.ID] = &objState{pending: setOf(desc.Destinations), dead: map[string]string{}}
	d.mu.Unlock()
	d.tell()
}

func (d *deliveries) tell() {
	if d.news != nil {
		d.news()
	}
}

func setOf(ss []string) map[string]bool {
	m := make(map[string]bool, len(ss))
	for _, s := range ss {
		m[s] = true
	}
	return m
}

// state returns what is left to do for id, from memory or the ledger.
// d.mu is held.
func (d *deliveries) state(id string) (*objState, error) {
	if st := d.objs[id]; st != nil {
		return st, nil
	}
	o, ok, err := d.led.Object(id)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("object %s is not in the ledger: %w", id, fs.ErrNotExist)
	}
	st := stateOf(o)
	d.objs[id] = st
	return st, nil
}

func stateOf(o ledger.ObjectState) *objState {
	st := &objState{pending: map[string]bool{}, dead: map[string]string{}}
	for _, ds := range o.Deliveries {
		switch ds.State {
		case "pending":
			st.pending[ds.Destination] = true
		case "dead":
			st.dead[ds.Destination] = ds.DeadReason
		}
	}
	return st
}

// pendingFor says whether id is pending for dest.
func (d *deliveries) pendingFor(id, dest string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	st, err := d.state(id)
	if err != nil {
		return false, err
	}
	return st.pending[dest], nil
}

// delivered records that dest has id (the original, or the copy described
// by copy), durably, then settles the object.
func (d *deliveries) delivered(id, dest, copy string) error {
	if ok, err := d.pendingFor(id, dest); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("object %s is not pending for %s: %w", id, dest, fs.ErrNotExist)
	}
	if err := d.led.DeliveredCopy(id, dest, copy, d.now()); err != nil {
		return err
	}
	d.settle(id, []string{dest}, "")
	return nil
}

// retry records a failed attempt (in the ledger's next batch).
func (d *deliveries) retry(id, dest string, r forward.RetryRecord) error {
	if ok, err := d.pendingFor(id, dest); err != nil {
		return err
	} else if !ok {
		return fmt.Errorf("object %s is not pending for %s: %w", id, dest, fs.ErrNotExist)
	}
	d.led.Attempted(id, dest, ledger.Retry{Attempts: r.Attempts, FirstFailure: r.FirstFailure, NextAttempt: r.NextAttempt,
		LastError: r.LastError, Unconfirmed: r.Unconfirmed, Delay: r.Delay})
	return nil
}

// dead records that dest cannot deliver id, durably, then settles the
// object. A damaged object (details["damaged"]) is dead for every
// destination still pending: its copy is what is wrong, not one
// destination.
func (d *deliveries) dead(id, dest, reason string, details map[string]string) error {
	d.mu.Lock()
	st, err := d.state(id)
	var dests []string
	if err == nil {
		if details["damaged"] == "yes" {
			for p := range st.pending {
				dests = append(dests, p)
			}
			sort.Strings(dests)
		} else if st.pending[dest] {
			dests = []string{dest}
		}
	}
	d.mu.Unlock()
	if err != nil {
		return err
	}
	if len(dests) == 0 {
		return fmt.Errorf("object %s is not pending for %s: %w", id, dest, fs.ErrNotExist)
	}
	for _, p := range dests {
		if err := d.led.Dead(id, p, reason, d.now()); err != nil {
			return err
		}
	}
	d.mu.Lock()
	if st := d.objs[id]; st != nil {
		if st.details == nil {
			st.details = map[string]string{}
		}
		for k, v := range details {
			switch k {
			case "endpoint", "attempts": // the destination's own
				st.details[dest+"."+k] = v
			default: // the object's
				st.details[k] = v
			}
		}
		st.damaged = st.damaged || details["damaged"] == "yes"
	}
	d.mu.Unlock()
	if details["damaged"] == "yes" {
		d.damaged.Inc()
	}
	d.settle(id, dests, reason)
	return nil
}

// settle marks dests done for id (dead with reason when reason is not
// empty) and, when no destination is pending any more, moves the file:
// out of the spool when every destination has it, to dead/ otherwise.
func (d *deliveries) settle(id string, dests []string, reason string) {
	d.mu.Lock()
	st, err := d.state(id)
	if err != nil {
		d.mu.Unlock()
		d.log.Error("cannot settle an object", "id", id, "err", err)
		return
	}
	for _, p := range dests {
		delete(st.pending, p)
		if reason != "" {
			st.dead[p] = reason
		}
	}
	if len(st.pending) > 0 {
		d.mu.Unlock()
		d.tell()
		return
	}
	delete(d.objs, id)
	d.mu.Unlock()
	d.tell()
	d.finish(id, st)
}

// finish moves the file of an object no destination waits for.
func (d *deliveries) finish(id string, st *objState) {
	if len(st.dead) == 0 {
		if err := d.sp.Delivered(id); err != nil && !errors.Is(err, fs.ErrNotExist) {
			// Every destination has it; if the spool cannot forget it, the
			// next start sees the ledger done and removes it then.
			d.log.Error("delivered everywhere, but cannot remove it from the spool", "id", id, "err", err)
			return
		}
		d.led.Gone(id, d.now())
		return
	}
	reason, details := deadSummary(st.dead)
	for k, v := range st.details {
		if _, ok := details[k]; !ok {
			details[k] = v
		}
	}
	if st.damaged || strings.HasPrefix(reason, spool.ErrDamaged.Error()) {
		details["damaged"] = "yes"
	}
	if err := d.sp.Dead(id, reason, details); err != nil && !errors.Is(err, fs.ErrNotExist) {
		d.log.Error("cannot move a dead letter to dead/; it stays in queue/ (the ledger has its state)", "id", id, "err", err)
	}
}

// deadSummary is a dead letter's reason file: one line saying which
// destinations could not deliver it and why, a line per destination.
func deadSummary(dead map[string]string) (string, map[string]string) {
	names := make([]string, 0, len(dead))
	for n := range dead {
		names = append(names, n)
	}
	sort.Strings(names)
	details := map[string]string{"dead_destinations": strings.Join(names, ",")}
	var parts []string
	for _, n := range names {
		details["destination."+n] = dead[n]
		parts = append(parts, n+": "+dead[n])
	}
	if len(names) == 1 {
		return dead[names[0]], details
	}
	return fmt.Sprintf("%d destinations could not deliver it: %s", len(names), strings.Join(parts, "; ")), details
}

// destQueue is the spool and the ledger as one destination's forwarder
// sees them (forward.Queue).
type destQueue struct {
	d      *deliveries
	name   string
	stamps []stampSpec // set on its copy
}

// maxPending bounds a rescan's listing: the forwarder holds at most its
// window in memory anyway.
const maxPending = forward.DefaultWindow

func (q destQueue) QueuedIDs() ([]string, error) { return q.d.led.Pending(q.name, maxPending) }

func (q destQueue) Describe(id string) (*forward.Object, forward.RetryRecord, error) {
	ds, ok, err := q.d.led.Delivery(id, q.name)
	if err != nil {
		return nil, forward.RetryRecord{}, err
	}
	if !ok || ds.State != "pending" {
		return nil, forward.RetryRecord{}, fmt.Errorf("object %s is not pending for %s: %w", id, q.name, fs.ErrNotExist)
	}
	desc, err := q.d.sp.Describe(id)
	if err != nil {
		return nil, forward.RetryRecord{}, damageOf(err)
	}
	r := ds.Retry
	obj := objectOf(desc)
	if len(q.stamps) > 0 {
		if obj, err = stamped(obj, &desc, q.stamps); err != nil {
			return nil, forward.RetryRecord{}, damageOf(fmt.Errorf("stamping its copy: %w", err))
		}
	}
	return obj, forward.RetryRecord{Attempts: r.Attempts, FirstFailure: r.FirstFailure, NextAttempt: r.NextAttempt,
		LastError: r.LastError, Unconfirmed: r.Unconfirmed, Delay: r.Delay}, nil
}

func (q destQueue) Delivered(id string) error { return q.d.delivered(id, q.name, q.copyOf(id)) }

// copyOf describes the copy of id this destination gets, for the ledger:
// "" for the original, else the stamps with their values for it.
func (q destQueue) copyOf(id string) string {
	if len(q.stamps) == 0 {
		return ""
	}
	desc, err := q.d.sp.Describe(id)
	if err != nil {
		return "stamped (the values cannot be told: " + err.Error() + ")"
	}
	parts := make([]string, len(q.stamps))
	for i, s := range q.stamps {
		parts[i] = s.Keyword + "=" + strings.TrimRight(string(stampValue(s, &desc)), " ")
	}
	return "stamped " + strings.Join(parts, " ")
}

// DeliveredAll records a batch's deliveries concurrently, so that they
// share the ledger's commits rather than wait for one each
// (forward.BatchQueue).
func (q destQueue) DeliveredAll(ids []string) []error {
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Go(func() { errs[i] = q.d.delivered(id, q.name, q.copyOf(id)) })
	}
	wg.Wait()
	return errs
}

func (q destQueue) Retry(id string, r forward.RetryRecord) error { return q.d.retry(id, q.name, r) }

func (q destQueue) Dead(id, reason string, details map[string]string) error {
	return q.d.dead(id, q.name, reason, details)
}

// objectOf is a queued object as the forwarders see it: its data set
// behind the spool's checked reader.
func objectOf(d spool.Description) *forward.Object {
	return &forward.Object{
		ID:                d.ID,
		Open:              func() (io.ReadCloser, error) { return openChecked(&d) },
		DataSize:          d.Size - d.DataOffset,
		SOPClassUID:       d.SOPClassUID,
		SOPInstanceUID:    d.SOPInstanceUID,
		TransferSyntaxUID: d.TransferSyntaxUID,
		StudyInstanceUID:  d.StudyInstanceUID,
		SeriesInstanceUID: d.SeriesInstanceUID,
		CallingAE:         d.CallingAE,
		Received:          d.Received,
	}
}

// legacyRouter decides where an object committed before routing existed
// (its record names no destination) goes: "default" when there is one
// (the only destination there was), else what the routes say.
type legacyRouter func(desc *spool.Description) []string

// ledgerFile is the delivery ledger's file in the spool directory.
const ledgerFile = "ledger.db"

// reconcile makes the ledger and the spool agree at start-up, before any
// forwarder runs: objects the ledger does not know (committed just before
// a crash, or by an earlier version) are added from their records, their
// old retry records taken over (adopt); objects every destination is done
// with are finished (removed, or moved to dead/); dead letters with a
// destination pending again (requeued by an operator while the daemon was
// stopped) are moved back to the queue. It returns how many objects it
// added and finished.
func (d *deliveries) reconcile(route legacyRouter) (added, finished int, err error) {
	for _, state := range []spool.State{spool.StateQueued, spool.StateDead} {
		items, n, err := d.adoptState(state, route)
		if err != nil {
			return added, finished, err
		}
		added += n
		for _, it := range items {
			o, ok, err := d.led.Object(it.ID)
			if err != nil || !ok {
				continue
			}
			st := stateOf(o)
			switch {
			case state == spool.StateQueued && len(st.pending) == 0:
				d.finish(it.ID, st)
				finished++
			case state == spool.StateQueued:
				d.mu.Lock()
				d.objs[it.ID] = st
				d.mu.Unlock()
			case len(st.pending) > 0: // in dead/ with a destination pending: requeued
				if err := d.sp.Requeue(it.ID); err != nil {
					d.log.Error("cannot move a requeued dead letter back to the queue", "id", it.ID, "err", err)
				}
			}
		}
	}
	return added, finished, nil
}

// adopt, while the gateway runs, adds to the ledger what appeared in the
// queue without it (a dead letter of an earlier version that an operator
// requeued); the forwarders find them at their next rescan.
func (d *deliveries) adopt(route legacyRouter) {
	if _, n, err := d.adoptState(spool.StateQueued, route); err != nil {
		d.log.Error("cannot compare the queue with the delivery ledger", "err", err)
	} else if n > 0 {
		d.log.Info("queued objects added to the delivery ledger", "objects", n)
	}
}

// adoptState adds to the ledger the objects in state the ledger does not
// know, from their records, and returns the state's items and how many it
// added. A damaged one is quarantined; one with nowhere to go is
// dead-lettered for an operator.
func (d *deliveries) adoptState(state spool.State, route legacyRouter) ([]spool.Item, int, error) {
	items, err := d.sp.Items(state)
	if err != nil {
		return nil, 0, err
	}
	ids := make([]string, len(items))
	for i, it := range items {
		ids[i] = it.ID
	}
	known, err := d.led.Known(ids)
	if err != nil {
		return nil, 0, err
	}
	var ensure []ledger.Object
	var retries []spool.Item
	for _, it := range items {
		if known[it.ID] {
			continue
		}
		desc, err := spool.DescribeItem(it)
		if errors.Is(err, spool.ErrDamaged) {
			if state == spool.StateQueued {
				d.quarantineFile(it.ID, err)
			}
			continue
		}
		if err != nil {
			d.log.Warn("cannot read a spooled object's record; trying again later", "id", it.ID, "err", err)
			continue
		}
		dests := desc.Destinations
		if len(dests) == 0 {
			dests = route(&desc)
		}
		if len(dests) == 0 {
			if state == spool.StateQueued {
				if err := d.sp.Dead(it.ID, "received before routing existed, and no route matches it now (--unrouted refuse): retry it with --destination", nil); err != nil {
					d.log.Error("cannot dead-letter an unroutable object", "id", it.ID, "err", err)
				}
			}
			continue
		}
		ensure = append(ensure, ledgerObject(&desc, dests))
		if it.Retry != nil {
			retries = append(retries, it)
		}
	}
	if len(ensure) == 0 {
		return items, 0, nil
	}
	if err := d.led.Ensure(ensure); err != nil {
		return nil, 0, err
	}
	for _, it := range retries {
		r := it.Retry
		o, ok, err := d.led.Object(it.ID)
		if err != nil || !ok {
			continue
		}
		for _, ds := range o.Deliveries {
			d.led.Attempted(it.ID, ds.Destination, ledger.Retry{Attempts: r.Attempts, FirstFailure: r.FirstFailure, NextAttempt: r.NextAttempt,
				LastError: r.LastError, Unconfirmed: r.Unconfirmed, Delay: time.Duration(r.DelaySeconds * float64(time.Second))})
		}
	}
	if err := d.led.Sync(); err != nil {
		return nil, 0, err
	}
	for _, it := range retries {
		if err := d.sp.DropRetry(it.ID); err != nil {
			d.log.Warn("cannot remove a retry record taken into the ledger", "id", it.ID, "err", err)
		}
	}
	return items, len(ensure), nil
}

// quarantineFile sets aside a queued object whose files are damaged
// before the ledger knew it (so its destinations are not known).
func (d *deliveries) quarantineFile(id string, why error) {
	d.damaged.Inc()
	if err := d.sp.Dead(id, why.Error(), map[string]string{"damaged": "yes"}); err != nil {
		d.log.Error("object damaged in the spool, and it cannot be quarantined; it is not sent", "id", id, "reason", why.Error(), "err", err)
		return
	}
	d.log.Error("object damaged in the spool: quarantined as a dead letter, never sent", "id", id, "reason", why.Error())
}

// pendingElsewhere lists the destinations objects wait for that are not
// configured (removed from the flags): they keep waiting, and say so.
func pendingElsewhere(led *ledger.Ledger, configured map[string]*dest) ([]string, error) {
	stats, err := led.DestinationStats()
	if err != nil {
		return nil, err
	}
	var out []string
	for name, s := range stats {
		if s.Pending > 0 && configured[name] == nil {
			out = append(out, fmt.Sprintf("%s (%d objects)", name, s.Pending))
		}
	}
	slices.Sort(out)
	return out, nil
}

// sweepEvery is how often forgetPurged looks.
const sweepEvery = 5 * time.Minute

// forgetPurged tells the ledger of dead letters whose files left the spool
// without it (`dicomgw spool purge`, an operator's rm): they no longer
// wait for anyone (the console's list, dicomgw_destination_dead_objects
// and its alert). A file is taken for gone when it was missing at two
// sweeps in a row: one moving between queue/ and dead/ (a retry, an
// object settling) is never missed twice. It is a janitor's chore.
func (d *deliveries) forgetPurged(now time.Time) {
	if now.Sub(d.lastSweep) < sweepEvery {
		return
	}
	d.lastSweep = now
	objs, err := d.led.DeadLetters("", 0)
	if err != nil {
		d.log.Error("cannot list the dead letters to compare them with the spool", "err", err)
		return
	}
	missing := map[string]bool{}
	var gone []string
	for _, o := range objs {
		_, errQ := d.sp.Item(spool.StateQueued, o.ID)
		_, errD := d.sp.Item(spool.StateDead, o.ID)
		if !errors.Is(errQ, fs.ErrNotExist) || !errors.Is(errD, fs.ErrNotExist) {
			continue
		}
		if d.missing[o.ID] {
			gone = append(gone, o.ID)
			d.led.Gone(o.ID, now)
			continue
		}
		missing[o.ID] = true
	}
	d.missing = missing
	if len(gone) > 0 {
		d.log.Info("dead letters purged from the spool outside the gateway: the ledger records that they left it", "objects", len(gone))
	}
}
