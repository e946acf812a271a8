package forward

import (
	"errors"
	"io/fs"
	"sort"
	"time"
)

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
		rec = f.heal(rec, now)
		f.mu.Lock()
		f.loading = ids[i+1:]
		if err == nil && f.items[id] == nil {
			f.items[id] = &item{obj: obj, retry: rec, next: rec.NextAttempt, added: now}
		}
		f.mu.Unlock()
		switch {
		case err == nil:
		case errors.Is(err, fs.ErrNotExist):
			// Delivered or dead-lettered meanwhile, or purged by an
			// operator: not ours any more.
			f.log.Debug("queued object gone before it was loaded", "id", id)
		case errors.Is(err, ErrDamaged):
			// Whatever its files hold, this object is set aside with the
			// reason, and the rest flows.
			f.quarantine(id, nil, err.Error())
		default:
			// Unreadable for now (an I/O error, no descriptors left): the
			// next rescan tries again.
			f.log.Warn("cannot load queued object; trying again at the next rescan", "id", id, "err", err)
		}
	}
	f.mu.Lock()
	again := f.overflow && len(f.items) <= f.cfg.Window/2
	f.mu.Unlock()
	if again {
		f.rescan()
	}
}

// heal bounds what a retry record read from disk may ask for by what the
// clock says now: records written while the clock was ahead (years, after
// a bad NTP or RTC) would otherwise wait that long. Nothing waits longer
// than RetryMax beyond now — or than the wait the record was written for,
// when an endpoint's Retry-After asked for more — and a first failure in
// the future counts from now.
func (f *Forwarder) heal(rec RetryRecord, now time.Time) RetryRecord {
	if lim := now.Add(max(f.cfg.RetryMax, rec.Delay)); rec.NextAttempt.After(lim) {
		f.log.Warn("a retry record asks to wait longer than --retry-max (was the clock ahead?): retrying within --retry-max",
			"next_attempt", rec.NextAttempt.UTC().Format(time.RFC3339), "retry_max", f.cfg.RetryMax)
		rec.NextAttempt = lim
	}
	if rec.FirstFailure.After(now) {
		rec.FirstFailure = now
	}
	return rec
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
				f.log.Info("credentials changed: trying the paused destination now", "endpoint", f.dest.String())
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
		g.bytes += it.obj.DataSize
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
		bytes := g.head.obj.DataSize
		for _, it := range g.items[1:] {
			if len(batch) >= f.cfg.BatchMaxInstances || bytes+it.obj.DataSize > f.cfg.BatchMaxBytes {
				break
			}
			batch = append(batch, it)
			bytes += it.obj.DataSize
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
