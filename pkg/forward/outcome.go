package forward

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"strings"
	"time"
)

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
		f.log.Error("destination returned the wrong number of results", "endpoint", f.dest.String(), "objects", len(objs), "results", len(results))
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
	f.deliveredAll(batch, results, elapsed)
	for i, it := range batch {
		r := results[i]
		switch r.Outcome {
		case Delivered:
			reachable = true
		case Retry:
			if r.Unconfirmed && it.retry.Unconfirmed+1 >= f.cfg.MaxUnconfirmed {
				reachable = true
				f.dead(it, fmt.Sprintf("the endpoint's answers left this instance out %d times in a row (neither stored nor refused): %s",
					it.retry.Unconfirmed+1, r.Reason), it.retry.Attempts+1)
				continue
			}
			if r.Alone && !it.alone {
				f.mu.Lock()
				it.alone, it.inflight = true, false
				f.mu.Unlock()
				continue
			}
			f.retry(it, r, now, jitter)
		case Dead:
			if r.Damaged {
				f.quarantine(it.obj.ID, it.obj, r.Reason)
				continue
			}
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
		f.m.pauses.WithLabelValues(paused.Cause.String()).Inc()
		f.pauseFor = min(max(2*f.pauseFor, f.cfg.PauseMin), f.cfg.PauseMax)
		f.pausedUntil = f.now().Add(f.pauseFor)
		if f.pauseReason != paused.Reason || f.pauseFor == f.cfg.PauseMin {
			f.log.Error("destination paused: objects are kept until it accepts them again",
				"endpoint", f.dest.String(), "reason", paused.Reason, "retry_in", f.pauseFor)
		}
		f.pauseReason = paused.Reason
		if cv, ok := f.dest.(credentialed); ok {
			f.pauseCreds = cv.CredentialVersion()
		}
	case reachable && !f.pausedUntil.IsZero():
		f.m.up.Set(1)
		f.log.Info("destination accepts objects again", "endpoint", f.dest.String(), "was", f.pauseReason)
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

// BatchQueue is a Queue that records the deliveries of a batch at once
// (one durable commit for all, where Delivered would wait for one each).
type BatchQueue interface {
	Queue
	// DeliveredAll is Delivered for each of ids, and returns each one's
	// error.
	DeliveredAll(ids []string) []error
}

// deliveredAll records the delivered objects of a batch, all at once when
// the queue can.
func (f *Forwarder) deliveredAll(batch []*item, results []Result, elapsed time.Duration) {
	var its []*item
	var rs []Result
	for i, it := range batch {
		if results[i].Outcome == Delivered {
			its, rs = append(its, it), append(rs, results[i])
		}
	}
	if len(its) == 0 {
		return
	}
	errs := make([]error, len(its))
	if bq, ok := f.q.(BatchQueue); ok {
		ids := make([]string, len(its))
		for i, it := range its {
			ids[i] = it.obj.ID
		}
		errs = bq.DeliveredAll(ids)
	} else {
		for i, it := range its {
			errs[i] = f.q.Delivered(it.obj.ID)
		}
	}
	for i, it := range its {
		f.delivered(it, rs[i], errs[i], elapsed)
	}
}

func (f *Forwarder) delivered(it *item, r Result, err error, elapsed time.Duration) {
	if err != nil {
		// The destination has it; if the spool cannot forget it, it is sent
		// again after a restart, which a DICOMweb store takes as a duplicate.
		f.log.Error("delivered, but cannot remove it from the spool", "id", it.obj.ID, "err", err)
	}
	f.forget(it)
	attrs := []any{"id", it.obj.ID, "endpoint", f.dest.String(),
		"sop_instance", it.obj.SOPInstanceUID, "study", it.obj.StudyInstanceUID, "bytes", it.obj.DataSize,
		"attempts", it.retry.Attempts + 1, "request_duration", elapsed.Round(time.Millisecond),
		"since_received", f.now().Sub(it.obj.Received).Round(time.Millisecond)}
	if r.Location != "" {
		attrs = append(attrs, "location", r.Location)
	}
	if r.Filed != 0 {
		attrs = append(attrs, "filed_apart", strings.Join(r.Filed.labels(), ","))
		for _, l := range r.Filed.labels() {
			f.m.filed.WithLabelValues(l).Inc()
		}
	}
	f.log.Info("object delivered", attrs...)
	if r.Filed&FiledDuplicate != 0 {
		f.log.Warn("the archive holds a different object with this SOP Instance UID: this one is kept beside it, for an operator to decide",
			"id", it.obj.ID, "sop_instance", it.obj.SOPInstanceUID, "location", r.Location)
	}
}

func (f *Forwarder) dead(it *item, reason string, attempts int) {
	details := objectDetails(it.obj)
	details["endpoint"] = f.dest.String()
	details["attempts"] = fmt.Sprint(attempts)
	if err := f.q.Dead(it.obj.ID, reason, details); errors.Is(err, fs.ErrNotExist) {
		f.forget(it)
		return
	} else if err != nil {
		f.log.Error("cannot dead-letter object; it stays queued", "id", it.obj.ID, "reason", reason, "err", err)
		f.mu.Lock()
		it.inflight = false
		it.next = f.now().Add(f.cfg.RetryMax)
		f.mu.Unlock()
		return
	}
	f.forget(it)
	f.log.Error("object dead-lettered", "id", it.obj.ID, "endpoint", f.dest.String(),
		"sop_instance", it.obj.SOPInstanceUID, "study", it.obj.StudyInstanceUID, "reason", reason, "attempts", attempts)
}

// objectDetails are the lines of a dead letter's reason file that say
// which object it is.
func objectDetails(o *Object) map[string]string {
	return map[string]string{
		"sop_class_uid":      o.SOPClassUID,
		"sop_instance_uid":   o.SOPInstanceUID,
		"study_instance_uid": o.StudyInstanceUID,
		"transfer_syntax":    o.TransferSyntaxUID,
		"calling_ae":         o.CallingAE,
		"received":           o.Received.UTC().Format(time.RFC3339),
	}
}

// quarantine dead-letters an object whose spool copy is damaged (obj is nil
// when it could not even be described): it is never sent, and the dead
// letter says why, so that an operator can tell it from a refusal.
func (f *Forwarder) quarantine(id string, obj *Object, why string) {
	details := map[string]string{"damaged": "yes"}
	if obj != nil {
		details = objectDetails(obj)
		details["damaged"] = "yes"
	}
	reason := why
	if !strings.HasPrefix(reason, ErrDamaged.Error()) {
		reason = ErrDamaged.Error() + ": " + why
	}
	err := f.q.Dead(id, reason, details)
	f.mu.Lock()
	if it := f.items[id]; it != nil {
		if err != nil {
			// Kept, and not sent: tried again after RetryMax.
			it.inflight, it.next = false, f.now().Add(f.cfg.RetryMax)
		} else {
			delete(f.items, id)
		}
	}
	f.mu.Unlock()
	if err != nil {
		f.log.Error("object damaged in the spool, and it cannot be quarantined; it is not sent", "id", id, "reason", reason, "err", err)
		return
	}
	f.log.Error("object damaged in the spool: quarantined as a dead letter, never sent", "id", id, "reason", reason)
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
	f.mu.Lock()
	f.lastFailure, f.lastFailureReason = now, r.Reason
	f.mu.Unlock()
	if r.Unconfirmed {
		rec.Unconfirmed++
	} else {
		rec.Unconfirmed = 0
	}
	if now.Sub(rec.FirstFailure) >= f.cfg.RetryFor {
		f.dead(it, fmt.Sprintf("still failing after %d attempts over %v: %s", rec.Attempts, now.Sub(rec.FirstFailure).Round(time.Second), r.Reason), rec.Attempts)
		return
	}
	delay := backoffAt(rec.Attempts, f.cfg.RetryMin, f.cfg.RetryMax, jitter)
	delay = max(delay, r.RetryAfter)
	rec.Delay = delay
	rec.NextAttempt = now.Add(delay)
	if err := f.q.Retry(it.obj.ID, rec); errors.Is(err, fs.ErrNotExist) {
		// No longer queued for this destination (quarantined through
		// another, or dead-lettered by an operator): not ours any more.
		f.forget(it)
		return
	} else if err != nil {
		f.log.Error("cannot record the failed attempt", "id", it.obj.ID, "err", err)
	}
	f.mu.Lock()
	it.retry, it.next, it.inflight = rec, rec.NextAttempt, false
	f.mu.Unlock()
	f.log.Warn("delivery failed; will retry", "id", it.obj.ID, "endpoint", f.dest.String(),
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
