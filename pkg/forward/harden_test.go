package forward

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

// Issue 12 (hardening): an endpoint's word is checked, damaged spool data
// is never sent, one bad record never stalls the rest, and a wrong clock
// heals.

// TestSTOWLoginPagePauses: a 200 that is an SSO login page (text/html)
// delivers nothing: the destination pauses with the reason, counted by
// cause, every object is kept, and once the endpoint answers in DICOM
// again everything is delivered.
func TestSTOWLoginPagePauses(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"), obj("0002", "1.2.3", "1.2.3.1.2"))
	r.cfg.PauseMin = time.Second
	login := `<html><body><form action="/auth/realms/kheops/login-actions">Sign in</form></body></html>`
	r.ep.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if r.ep.count() == 0 {
			// The proxy answers for the endpoint: it never reaches it.
			r.ep.serve(discardBody{w}, req)
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			w.WriteHeader(http.StatusOK)
			io.WriteString(w, login)
			return
		}
		r.ep.serve(w, req)
	}))
	reg := prometheus.NewPedanticRegistry()
	s, err := NewSTOW(r.scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := New(r.cfg, r.q, s, nil, reg)
	stop := start(t, f)
	waitFor(t, 5*time.Second, "the pause", func() bool { p, _ := f.Paused(); return p })
	if _, why := f.Paused(); !strings.Contains(why, "text/html") || !strings.Contains(why, "not a DICOM STOW-RS response") {
		t.Errorf("pause reason %q", why)
	}
	if d, re, de := r.q.counts(); d+re+de != 0 {
		t.Errorf("on a login page: delivered %d, retries %d, dead %d; want nothing", d, re, de)
	}
	if got := testutil.ToFloat64(f.m.pauses.WithLabelValues("not_dicom_answer")); got != 1 {
		t.Errorf("pauses{cause=not_dicom_answer} = %v", got)
	}
	waitFor(t, 5*time.Second, "delivery after the pause", r.q.allDone)
	stop()
	r.q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "delivered"})
}

// discardBody lets the fake endpoint read and record a request without
// answering it (the proxy answers).
type discardBody struct{ http.ResponseWriter }

func (discardBody) Header() http.Header         { return http.Header{} }
func (discardBody) WriteHeader(int)             {}
func (discardBody) Write(b []byte) (int, error) { return len(b), nil }

// TestSTOWUnconfirmedInstance: an answer that is well-formed but leaves an
// instance out is retried; only several such answers in a row dead-letter
// it, with a reason saying so; another outcome between them starts the
// count again.
func TestSTOWUnconfirmedInstance(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"), obj("0002", "1.2.3", "1.2.3.1.2"))
	r.cfg.MaxUnconfirmed = 3
	leaveOut := func(n int, req *http.Request) reply {
		body := answerJSON([]string{"1.2.3.1.1"}, reply{})
		switch {
		case n == 2:
			// A refusal that is retried (out of resources): the object
			// was not left out this time.
			return reply{status: http.StatusAccepted, fail: map[string]uint16{"1.2.3.1.2": 0xA700}}
		case n > 0:
			body = `{"00081190":{"vr":"UR","Value":["http://x/studies/1.2.3"]}}`
		}
		return reply{body: &body}
	}
	r.ep.setRespondReq(leaveOut)
	stop := start(t, r.forwarder())
	waitFor(t, 10*time.Second, "every object settled", r.q.allDone)
	stop()
	r.q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "dead"})
	if why := r.q.reason("0002"); !strings.Contains(why, "left this instance out 3 times in a row") {
		t.Errorf("reason %q", why)
	}
	var counts []int
	for _, c := range r.q.retriesOf("0002") {
		counts = append(counts, c.Record.Unconfirmed)
	}
	if want := []int{1, 2, 0, 1, 2}; !slices.Equal(counts, want) {
		t.Errorf("unconfirmed counts in the retry records %v, want %v", counts, want)
	}
	if n := r.ep.count(); n != 6 {
		t.Errorf("%d requests, want 6", n)
	}
}

// TestSTOWDamagedObjectNeverSent: an object whose spool copy fails its
// check while it streams is quarantined (a dead letter saying "damaged in
// the spool", counted), the request that carried it never completes, and
// the other objects of its batch go again and are delivered.
func TestSTOWDamagedObjectNeverSent(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"), obj("0002", "1.2.3", "1.2.3.1.2"), obj("0003", "1.2.3", "1.2.3.1.3"))
	r.objs[1].Open = damagedOpener(dataSetOf(t, r.objs[1]))
	r.q = newFakeQueue(r.objs...)
	var incomplete int
	r.ep.setHandler(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, err := io.ReadAll(req.Body)
		if err != nil {
			r.ep.mu.Lock()
			incomplete++
			r.ep.mu.Unlock()
			return
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		r.ep.serve(w, req)
	}))
	reg := prometheus.NewPedanticRegistry()
	s, err := NewSTOW(r.scfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := New(r.cfg, r.q, s, nil, reg)
	stop := start(t, f)
	waitFor(t, 5*time.Second, "every object settled", r.q.allDone)
	stop()
	r.q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "dead", "0003": "delivered"})
	if why := r.q.reason("0002"); !strings.HasPrefix(why, "damaged in the spool") || !strings.Contains(why, "CRC") {
		t.Errorf("reason %q", why)
	}
	if r.q.details["0002"]["damaged"] != "yes" {
		t.Errorf("details %v", r.q.details["0002"])
	}
	for _, req := range r.ep.requests() {
		if slices.Contains(req.SOPs, "1.2.3.1.2") {
			t.Errorf("a complete request carried the damaged object: %v", req.SOPs)
		}
	}
	if incomplete != 1 {
		t.Errorf("%d incomplete requests, want 1 (the one abandoned on the damage)", incomplete)
	}
	if _, re, _ := r.q.counts(); re != 0 {
		t.Errorf("%d retries recorded: the others were not attempted", re)
	}
}

// TestForwarderQuarantinesDamagedRecords: an object whose files cannot be
// described (a garbled retry record, a truncated file) is quarantined at
// once, and the objects around it flow.
func TestForwarderQuarantinesDamagedRecords(t *testing.T) {
	objs := []*Object{fakeObj("0001", "1.2.3", 100), fakeObj("0002", "1.2.3", 100), fakeObj("0003", "1.2.3", 100)}
	q := newFakeQueue(objs...)
	q.damaged = map[string]error{"0002": fmt.Errorf("%w: queue/0002.retry: invalid character 'x'", ErrDamaged)}
	d := &fakeDest{}
	reg := prometheus.NewPedanticRegistry()
	f := New(fastConfig(), q, d, nil, reg)
	stop := start(t, f)
	waitFor(t, 5*time.Second, "every object settled", q.allDone)
	stop()
	q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "dead", "0003": "delivered"})
	if why := q.reason("0002"); !strings.Contains(why, "damaged in the spool: queue/0002.retry") {
		t.Errorf("reason %q", why)
	}
}

// TestForwarderHealsClockAhead: a retry record written while the clock was
// years ahead is retried within RetryMax of now, and its first failure
// counts from now (RetryFor is not over before it began).
func TestForwarderHealsClockAhead(t *testing.T) {
	o := fakeObj("0001", "1.2.3", 100)
	q := newFakeQueue(o)
	ahead := time.Now().AddDate(5, 0, 0)
	q.records["0001"] = RetryRecord{Attempts: 2, FirstFailure: ahead.Add(-time.Hour), NextAttempt: ahead, LastError: "503"}
	d := &fakeDest{}
	cfg := fastConfig()
	begin := time.Now()
	stop := start(t, New(cfg, q, d, nil, nil))
	waitFor(t, 5*time.Second, "the retry", q.allDone)
	stop()
	q.checkAccounted(t, map[string]string{"0001": "delivered"})
	if took := time.Since(begin); took > 5*cfg.RetryMax {
		t.Errorf("delivered after %v; RetryMax is %v", took, cfg.RetryMax)
	}
}

// TestForwarderHealKeepsLongRetryAfter: a record that waits longer than
// RetryMax because the endpoint asked for it (Retry-After), written with
// a right clock, is kept across a restart.
func TestForwarderHealKeepsLongRetryAfter(t *testing.T) {
	f := New(fastConfig(), newFakeQueue(), &fakeDest{}, nil, nil)
	now := time.Now()
	rec := f.heal(RetryRecord{NextAttempt: now.Add(50 * time.Minute), Delay: time.Hour}, now)
	if !rec.NextAttempt.Equal(now.Add(50 * time.Minute)) {
		t.Errorf("a Retry-After of an hour written 10 minutes ago: next attempt moved to %v", rec.NextAttempt.Sub(now))
	}
	rec = f.heal(RetryRecord{NextAttempt: now.AddDate(3, 0, 0), Delay: time.Hour}, now)
	if got := rec.NextAttempt.Sub(now); got != time.Hour {
		t.Errorf("clock ahead by years, Retry-After an hour: waits %v, want an hour", got)
	}
}

// batchQueue is a fakeQueue that records a batch's deliveries at once.
type batchQueue struct {
	*fakeQueue
	calls [][]string
}

func (q *batchQueue) DeliveredAll(ids []string) []error {
	q.mu.Lock()
	q.calls = append(q.calls, append([]string(nil), ids...))
	q.mu.Unlock()
	errs := make([]error, len(ids))
	for i, id := range ids {
		errs[i] = q.Delivered(id)
	}
	return errs
}

// TestDeliveredRecordedPerBatch: a queue that can record several
// deliveries at once (the ledger: one commit for all) gets one call per
// batch with the delivered objects of that batch, not one per object.
func TestDeliveredRecordedPerBatch(t *testing.T) {
	objs := []*Object{fakeObj("0001", "1.2.3", 100), fakeObj("0002", "1.2.3", 100), fakeObj("0003", "1.2.3", 100), fakeObj("0004", "1.2.4", 100)}
	q := &batchQueue{fakeQueue: newFakeQueue(objs...)}
	d := &fakeDest{respond: func(_ int, objs []*Object) []Result {
		out := make([]Result, len(objs))
		for i, o := range objs {
			out[i] = Result{Outcome: Delivered}
			if o.ID == "0002" {
				out[i] = Result{Outcome: Dead, Reason: "refused"}
			}
		}
		return out
	}}
	cfg := fastConfig()
	cfg.Workers = 1
	stop := start(t, New(cfg, q, d, nil, nil))
	waitFor(t, 5*time.Second, "every object settled", q.allDone)
	stop()
	q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "dead", "0003": "delivered", "0004": "delivered"})
	q.mu.Lock()
	defer q.mu.Unlock()
	if fmt.Sprint(q.calls) != "[[0001 0003] [0004]]" {
		t.Errorf("DeliveredAll calls %v, want one per batch with its delivered objects", q.calls)
	}
}
