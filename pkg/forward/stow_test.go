package forward

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Fault injection through a real Forwarder, a real STOW and a fake STOW-RS
// endpoint. Durations are small so that the tests take seconds; request
// counts prove there is no hot loop; checkAccounted proves nothing is lost.

func fastConfig() Config {
	return Config{
		Workers:        2,
		BatchLinger:    -1, // no linger: the objects are all queued before Run
		RetryFor:       time.Hour,
		RetryMin:       100 * time.Millisecond,
		RetryMax:       400 * time.Millisecond,
		PauseMin:       400 * time.Millisecond,
		PauseMax:       time.Second,
		RescanInterval: time.Hour,
	}
}

func fastSTOW(base string) STOWConfig {
	return STOWConfig{
		BaseURL:                base,
		Timeout:                5 * time.Second,
		RetryMax:               2,
		RetryWaitMin:           10 * time.Millisecond,
		RetryWaitMax:           2 * time.Second,
		ImplementationClassUID: "2.25.99",
		UserAgent:              "dicomgw/test",
	}
}

// rig is one fault-injection set-up: spool-like files, a fake queue and a
// fake endpoint.
type rig struct {
	t    *testing.T
	objs []*Object
	q    *fakeQueue
	ep   *endpoint
	cfg  Config
	scfg STOWConfig
}

func newRig(t *testing.T, specs ...spec) *rig {
	t.Helper()
	dir := t.TempDir()
	r := &rig{t: t, cfg: fastConfig()}
	for _, s := range specs {
		r.objs = append(r.objs, writeObject(t, dir, s))
	}
	r.q = newFakeQueue(r.objs...)
	r.ep = newEndpoint(t, r.objs...)
	r.scfg = fastSTOW(r.ep.srv.URL + "/dicom-web")
	return r
}

// forwarder returns a new Forwarder (and STOW) over the rig's queue: a
// second call is a restart.
func (r *rig) forwarder() *Forwarder {
	r.t.Helper()
	s, err := NewSTOW(r.scfg, nil)
	if err != nil {
		r.t.Fatal(err)
	}
	return New(r.cfg, r.q, s, nil, nil)
}

// start runs f until the returned stop is called (or the test ends); stop
// reports how long Run took to return.
func start(t *testing.T, f *Forwarder) (stop func() time.Duration) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		if err := f.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	var once sync.Once
	var took time.Duration
	stop = func() time.Duration {
		once.Do(func() {
			t0 := time.Now()
			cancel()
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				t.Errorf("Run did not return within 10s of its context ending")
			}
			took = time.Since(t0)
		})
		return took
	}
	t.Cleanup(func() { stop() })
	return stop
}

// quiet asserts that the endpoint gets no request for d: no hot loop.
func quiet(t *testing.T, ep *endpoint, d time.Duration) {
	t.Helper()
	n := ep.count()
	time.Sleep(d)
	if m := ep.count(); m != n {
		t.Errorf("%d more requests in %v after the outcome was settled: a hot loop?", m-n, d)
	}
}

func obj(id, study, sop string) spec {
	return spec{ID: id, Study: study, Series: study + ".1", SOP: sop, Pixels: 1024, Fill: id[len(id)-1]}
}

var studyPath = regexp.MustCompile(`^/dicom-web/studies(/[0-9]+(\.[0-9]+)*)?$`)

func TestSTOWDeliversByStudyKeepingQuery(t *testing.T) {
	specs := []spec{
		obj("0001", "1.2.3", "1.2.3.1.1"),
		obj("0002", "1.2.4", "1.2.4.1.1"),
		obj("0003", "1.2.3", "1.2.3.1.2"),
		obj("0004", "../../x", "9.1"),
		obj("0005", "..", "9.2"),
		obj("0006", "", "9.3"),
		obj("0007", "1.2/3", "9.4"),
		obj("0008", "1..2", "9.5"),
		obj("0009", "0123456789abcdef", "9.6"), // hexadecimal: accepted under --uid-policy lenient, never in the path
		obj("0010", "1.2.", "9.7"),
	}
	specs[0].Private, specs[2].Private, specs[3].Private = true, true, true
	r := newRig(t, specs...)
	r.scfg.BaseURL = r.ep.srv.URL + "/dicom-web/?album=X"
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "every object delivered", r.q.allDone)
	quiet(t, r.ep, 200*time.Millisecond)
	stop()

	byPath := map[string][][]string{}
	for _, req := range r.ep.requests() {
		if req.Query != "album=X" {
			t.Errorf("request to %s has query %q, want album=X", req.Path, req.Query)
		}
		if !studyPath.MatchString(req.Path) {
			t.Errorf("request path %q is not /dicom-web/studies[/{valid UID}]", req.Path)
		}
		byPath[req.Path] = append(byPath[req.Path], req.SOPs)
	}
	if got := byPath["/dicom-web/studies/1.2.3"]; len(got) != 1 || !slices.Equal(got[0], []string{"1.2.3.1.1", "1.2.3.1.2"}) {
		t.Errorf("study 1.2.3: requests %v, want one with both instances", got)
	}
	if got := byPath["/dicom-web/studies/1.2.4"]; len(got) != 1 || !slices.Equal(got[0], []string{"1.2.4.1.1"}) {
		t.Errorf("study 1.2.4: requests %v, want one", got)
	}
	// The malformed, non-conforming and missing study UIDs: one request
	// each (one batch per study value), all to /studies.
	if got := byPath["/dicom-web/studies"]; len(got) != 7 {
		t.Errorf("/studies: requests %v, want 7", got)
	}
	if n := r.ep.count(); n != 9 {
		t.Errorf("%d requests, want 9", n)
	}
	if d, re, de := r.q.counts(); d != 10 || re != 0 || de != 0 {
		t.Errorf("delivered %d, retries %d, dead %d; want 10, 0, 0", d, re, de)
	}
	r.q.checkAccounted(t, nil)
}

func TestSTOWRetryAfterWithinAttempt(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
	r.ep.setRespond(script(statusReply(http.StatusServiceUnavailable, 1), reply{}))
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "delivery", r.q.allDone)
	quiet(t, r.ep, 200*time.Millisecond)
	stop()
	reqs := r.ep.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2 (503, then 200 within the attempt)", len(reqs))
	}
	if gap := reqs[1].At.Sub(reqs[0].At); gap < 900*time.Millisecond {
		t.Errorf("second request %v after the first: Retry-After: 1 not honoured", gap)
	}
	if _, re, _ := r.q.counts(); re != 0 {
		t.Errorf("%d retries recorded; an in-request retry records none", re)
	}
	r.q.checkAccounted(t, map[string]string{"0001": "delivered"})
}

func TestSTOWRetryAfterBeyondWaitMaxGoesDurable(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
	r.ep.setRespond(script(statusReply(http.StatusServiceUnavailable, 3600)))
	t0 := time.Now()
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "a retry record", func() bool { return r.q.record("0001").Attempts == 1 })
	quiet(t, r.ep, 500*time.Millisecond)
	stop()
	if n := r.ep.count(); n != 1 {
		t.Errorf("%d requests, want exactly 1: a Retry-After beyond RetryWaitMax ends the attempt", n)
	}
	rec := r.q.record("0001")
	if rec.NextAttempt.Before(t0.Add(time.Hour)) {
		t.Errorf("NextAttempt %v is sooner than the hour the endpoint asked for", rec.NextAttempt.Sub(t0))
	}
	if !strings.Contains(rec.LastError, "503") {
		t.Errorf("LastError %q does not name the 503", rec.LastError)
	}
	r.q.checkAccounted(t, map[string]string{"0001": "queued"})
}

func TestSTOWRetryAfterBeyondDeadlineGoesDurable(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
	r.scfg.Timeout, r.scfg.RetryWaitMax = 500*time.Millisecond, 5*time.Second
	r.ep.setRespond(script(statusReply(http.StatusServiceUnavailable, 2)))
	t0 := time.Now()
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "a retry record", func() bool { return r.q.record("0001").Attempts >= 1 })
	quiet(t, r.ep, 300*time.Millisecond)
	stop()
	if n := r.ep.count(); n != 1 {
		t.Errorf("%d requests, want 1", n)
	}
	rec := r.q.record("0001")
	if !strings.Contains(rec.LastError, "503") || rec.NextAttempt.Before(t0.Add(2*time.Second)) {
		t.Errorf("record %+v: want the 503 and its Retry-After of 2s, not a timeout", rec)
	}
}

func TestSTOWTransientStatusThenSuccess(t *testing.T) {
	for _, code := range []int{http.StatusTooManyRequests, http.StatusInternalServerError, http.StatusBadGateway, http.StatusRequestTimeout} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"), obj("0002", "1.2.3", "1.2.3.1.2"))
			r.ep.setRespond(script(statusReply(code), reply{}))
			stop := start(t, r.forwarder())
			waitFor(t, 5*time.Second, "delivery", r.q.allDone)
			quiet(t, r.ep, 150*time.Millisecond)
			stop()
			if n := r.ep.count(); n != 2 {
				t.Errorf("%d requests, want 2", n)
			}
			if d, re, de := r.q.counts(); d != 2 || re != 0 || de != 0 {
				t.Errorf("delivered %d, retries %d, dead %d; want 2, 0, 0", d, re, de)
			}
			r.q.checkAccounted(t, nil)
		})
	}
}

func TestSTOWConnectionResetMidBody(t *testing.T) {
	s := obj("0001", "1.2.3", "1.2.3.1.1")
	s.Pixels = 4 << 20 // still being written when the connection goes
	r := newRig(t, s)
	r.ep.setRespond(script(reply{reset: true}, reply{}))
	stop := start(t, r.forwarder())
	waitFor(t, 10*time.Second, "delivery", r.q.allDone)
	quiet(t, r.ep, 150*time.Millisecond)
	stop()
	reqs := r.ep.requests()
	if len(reqs) != 2 || reqs[0].Complete || !reqs[1].Complete {
		t.Errorf("requests %+v; want a broken one, then a complete one", reqs)
	}
	r.q.checkAccounted(t, map[string]string{"0001": "delivered"})
}

func TestSTOWHungResponseTimesOutThenRecovers(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
	r.scfg.Timeout = 300 * time.Millisecond
	r.scfg.RetryMax = 0
	r.ep.setRespond(script(reply{hang: true}))
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "a retry after the timeout", func() bool { return r.q.record("0001").Attempts >= 1 })
	if e := r.q.record("0001").LastError; !strings.Contains(e, "time") {
		t.Errorf("LastError %q does not say it timed out", e)
	}
	if s := r.q.stateOf("0001"); s != "queued" {
		t.Fatalf("after a timeout the object is %s, want queued", s)
	}
	r.ep.setRespond(script(reply{}))
	waitFor(t, 5*time.Second, "delivery once the endpoint recovers", r.q.allDone)
	quiet(t, r.ep, 150*time.Millisecond)
	stop()
	retries := len(r.q.retriesOf("0001"))
	if n := r.ep.count(); n != retries+1 {
		t.Errorf("%d requests for %d failed attempts; want one per attempt", n, retries)
	}
	r.q.checkAccounted(t, map[string]string{"0001": "delivered"})
}

func TestSTOWPartialFailure(t *testing.T) {
	r := newRig(t,
		obj("0001", "1.2.3", "1.2.3.1.1"), // A700: retried
		obj("0002", "1.2.3", "1.2.3.1.2"), // C122: dead
		obj("0003", "1.2.3", "1.2.3.1.3"), // A900: dead
		obj("0004", "1.2.3", "1.2.3.1.4"), // referenced
	)
	r.ep.setRespond(script(
		reply{status: http.StatusAccepted, fail: map[string]uint16{"1.2.3.1.1": 0xA700, "1.2.3.1.2": 0xC122, "1.2.3.1.3": 0xA900}},
		reply{},
	))
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "every object settled", r.q.allDone)
	quiet(t, r.ep, 200*time.Millisecond)
	stop()
	r.q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "dead", "0003": "dead", "0004": "delivered"})
	for id, code := range map[string]string{"0002": "0xC122", "0003": "0xA900"} {
		if reason := r.q.reason(id); !strings.Contains(reason, code) {
			t.Errorf("%s dead-lettered with %q; want the FailureReason %s named", id, reason, code)
		}
	}
	reqs := r.ep.requests()
	if len(reqs) != 2 {
		t.Fatalf("%d requests, want 2", len(reqs))
	}
	if !slices.Equal(reqs[1].SOPs, []string{"1.2.3.1.1"}) {
		t.Errorf("second request carries %v; want only the instance that failed with A700", reqs[1].SOPs)
	}
	if rec := r.q.record("0001"); rec.Attempts != 1 || !strings.Contains(rec.LastError, "0xA700") {
		t.Errorf("retry record of 0001: %+v", rec)
	}
}

func TestSTOWConflict(t *testing.T) {
	t.Run("processing failure is retried", func(t *testing.T) {
		r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"), obj("0002", "1.2.3", "1.2.3.1.2"))
		r.ep.setRespond(script(reply{status: http.StatusConflict, failAll: 0x0110}, reply{}))
		stop := start(t, r.forwarder())
		waitFor(t, 5*time.Second, "delivery", r.q.allDone)
		quiet(t, r.ep, 150*time.Millisecond)
		stop()
		if n := r.ep.count(); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
		if rec := r.q.record("0002"); rec.Attempts != 1 {
			t.Errorf("retry record %+v, want one failed attempt", rec)
		}
		r.q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "delivered"})
	})
	t.Run("duplicate counts as delivered", func(t *testing.T) {
		r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
		r.ep.setRespond(script(reply{status: http.StatusConflict, failAll: 0x0111}))
		stop := start(t, r.forwarder())
		waitFor(t, 5*time.Second, "delivery", r.q.allDone)
		quiet(t, r.ep, 150*time.Millisecond)
		stop()
		if n := r.ep.count(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
		r.q.checkAccounted(t, map[string]string{"0001": "delivered"})
	})
	t.Run("answer lost, resent instance stored again", func(t *testing.T) {
		// The endpoint stores the instance but the answer never comes; the
		// re-sent instance is answered 200 (with a warning, as Orthanc
		// does for an instance it already has).
		r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
		r.scfg.Timeout, r.scfg.RetryMax = 300*time.Millisecond, 0
		r.ep.setRespond(script(reply{hang: true}, reply{warn: 0xB000}))
		stop := start(t, r.forwarder())
		waitFor(t, 5*time.Second, "delivery", r.q.allDone)
		quiet(t, r.ep, 150*time.Millisecond)
		stop()
		if n := r.ep.count(); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
		r.q.checkAccounted(t, map[string]string{"0001": "delivered"})
	})
}

func TestSTOWUnauthorized(t *testing.T) {
	tokenFile := func(t *testing.T, tok string) (string, *TokenFile) {
		p := filepath.Join(t.TempDir(), "token")
		if err := os.WriteFile(p, []byte(tok+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		tf, err := NewTokenFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return p, tf
	}
	t.Run("once: refreshed and sent again at once", func(t *testing.T) {
		r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
		_, tf := tokenFile(t, "tok-1")
		r.scfg.Credentials = tf
		r.ep.setRespond(script(statusReply(http.StatusUnauthorized), reply{}))
		f := r.forwarder()
		stop := start(t, f)
		waitFor(t, 5*time.Second, "delivery", r.q.allDone)
		quiet(t, r.ep, 150*time.Millisecond)
		stop()
		if n := r.ep.count(); n != 2 {
			t.Errorf("%d requests, want 2", n)
		}
		if p, why := f.Paused(); p {
			t.Errorf("paused (%s) after a single 401", why)
		}
		if rec := r.q.record("0001"); rec.Attempts != 0 {
			t.Errorf("%d attempts recorded: a refreshed credential is not a failed attempt", rec.Attempts)
		}
		r.q.checkAccounted(t, map[string]string{"0001": "delivered"})
	})
	t.Run("twice pauses, a new token resumes", func(t *testing.T) {
		r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"), obj("0002", "1.2.3", "1.2.3.1.2"))
		path, tf := tokenFile(t, "tok-old")
		r.scfg.Credentials = tf
		r.cfg.PauseMin = time.Minute // only the new token can end this pause within the test
		r.ep.setRespondReq(func(n int, req *http.Request) reply {
			if req.Header.Get("Authorization") != "Bearer tok-new" {
				return statusReply(http.StatusUnauthorized)
			}
			return reply{}
		})
		f := r.forwarder()
		stop := start(t, f)
		waitFor(t, 5*time.Second, "the pause", func() bool { p, _ := f.Paused(); return p })
		if _, why := f.Paused(); !strings.Contains(why, "401") {
			t.Errorf("pause reason %q does not name the 401", why)
		}
		if n := r.ep.count(); n != 2 {
			t.Errorf("%d requests before the pause, want 2 (the 401 and the refreshed retry)", n)
		}
		for _, id := range []string{"0001", "0002"} {
			if s, rec := r.q.stateOf(id), r.q.record(id); s != "queued" || rec.Attempts != 0 {
				t.Errorf("%s during the pause: %s, %d attempts; want queued, 0", id, s, rec.Attempts)
			}
		}
		quiet(t, r.ep, 300*time.Millisecond)
		if err := os.WriteFile(path, []byte("tok-new\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		waitFor(t, 5*time.Second, "delivery with the new token", r.q.allDone)
		quiet(t, r.ep, 150*time.Millisecond)
		stop()
		if n := r.ep.count(); n != 3 {
			t.Errorf("%d requests, want 3 (401, 401, with the new token)", n)
		}
		if p, _ := f.Paused(); p {
			t.Error("still paused after delivery")
		}
		r.q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "delivered"})
	})
	t.Run("without credentials a 401 pauses at once", func(t *testing.T) {
		r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
		r.cfg.PauseMin = time.Minute
		r.ep.setRespond(script(statusReply(http.StatusUnauthorized)))
		f := r.forwarder()
		stop := start(t, f)
		waitFor(t, 5*time.Second, "the pause", func() bool { p, _ := f.Paused(); return p })
		quiet(t, r.ep, 200*time.Millisecond)
		stop()
		if n := r.ep.count(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
	})
}

func TestSTOWConfigurationErrorsPause(t *testing.T) {
	for _, code := range []int{http.StatusBadRequest, http.StatusNotFound, http.StatusUnsupportedMediaType, http.StatusForbidden} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"), obj("0002", "1.2.4", "1.2.4.1.1"))
			r.cfg.Workers = 1
			r.cfg.PauseMin = time.Second
			r.ep.setRespond(script(statusReply(code), reply{}))
			f := r.forwarder()
			stop := start(t, f)
			waitFor(t, 5*time.Second, "the pause", func() bool { p, _ := f.Paused(); return p })
			if _, why := f.Paused(); !strings.Contains(why, fmt.Sprint(code)) {
				t.Errorf("pause reason %q does not name %d", why, code)
			}
			quiet(t, r.ep, r.cfg.PauseMin/2)
			if n := r.ep.count(); n != 1 {
				t.Errorf("%d requests during the pause, want only the refused one", n)
			}
			if d, re, de := r.q.counts(); d+re+de != 0 {
				t.Errorf("during the pause: delivered %d, retries %d, dead %d; want nothing recorded", d, re, de)
			}
			waitFor(t, 5*time.Second, "delivery after the pause", r.q.allDone)
			stop()
			if _, re, _ := r.q.counts(); re != 0 {
				t.Errorf("%d retries recorded: a pause is no failed attempt", re)
			}
			r.q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "delivered"})
		})
	}
}

func TestSTOWRedirects(t *testing.T) {
	// A same-origin 301/302/303 turns a POST into a GET without the body;
	// a DICOMweb server answers GET /studies (QIDO-RS) with 200, which must
	// not be read as "stored". 307/308 keep the method and the body.
	for _, code := range []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther, http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		t.Run(fmt.Sprint(code), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
			var gets atomic.Int32
			mux := http.NewServeMux()
			mux.HandleFunc("/dicom-web/studies/", func(w http.ResponseWriter, req *http.Request) {
				http.Redirect(w, req, "/elsewhere/studies/1.2.3", code)
			})
			mux.HandleFunc("/elsewhere/", func(w http.ResponseWriter, req *http.Request) {
				if req.Method != http.MethodPost {
					gets.Add(1)
					w.Header().Set("Content-Type", "application/dicom+json")
					w.Write([]byte("[]"))
					return
				}
				r.ep.serve(w, req)
			})
			r.ep.setHandler(mux)
			f := r.forwarder()
			stop := start(t, f)
			waitFor(t, 5*time.Second, "the pause or the delivery", func() bool { p, _ := f.Paused(); return p || r.q.allDone() })
			stop()
			if n := gets.Load(); n != 0 {
				t.Errorf("the redirect was followed with %d GET(s)", n)
			}
			if code == http.StatusTemporaryRedirect || code == http.StatusPermanentRedirect {
				reqs := r.ep.requests()
				if len(reqs) != 1 || !reqs[0].Complete || reqs[0].Path != "/elsewhere/studies/1.2.3" {
					t.Errorf("requests %+v: want the POST re-sent whole to the new location", reqs)
				}
				r.q.checkAccounted(t, map[string]string{"0001": "delivered"})
				return
			}
			if _, why := f.Paused(); !strings.Contains(why, "redirect") {
				t.Errorf("pause reason %q", why)
			}
			r.q.checkAccounted(t, map[string]string{"0001": "queued"})
		})
	}
}

func TestSTOWTooLarge(t *testing.T) {
	t.Run("batch is split", func(t *testing.T) {
		r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"), obj("0002", "1.2.3", "1.2.3.1.2"), obj("0003", "1.2.3", "1.2.3.1.3"))
		r.ep.setRespond(script(statusReply(http.StatusRequestEntityTooLarge), reply{}))
		stop := start(t, r.forwarder())
		waitFor(t, 5*time.Second, "delivery", r.q.allDone)
		quiet(t, r.ep, 150*time.Millisecond)
		stop()
		reqs := r.ep.requests()
		if len(reqs) != 4 || len(reqs[0].SOPs) != 3 {
			t.Fatalf("requests %+v; want the batch of 3, then 3 alone", reqs)
		}
		var alone []string
		for _, req := range reqs[1:] {
			if len(req.SOPs) != 1 {
				t.Errorf("resent in a batch of %d", len(req.SOPs))
			}
			alone = append(alone, req.SOPs...)
		}
		slices.Sort(alone)
		if !slices.Equal(alone, reqs[0].SOPs) {
			t.Errorf("resent %v, want %v", alone, reqs[0].SOPs)
		}
		if _, re, _ := r.q.counts(); re != 0 {
			t.Errorf("%d retries recorded; splitting a batch counts no attempt", re)
		}
		r.q.checkAccounted(t, map[string]string{"0001": "delivered", "0002": "delivered", "0003": "delivered"})
	})
	t.Run("single object is dead", func(t *testing.T) {
		r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
		r.ep.setRespond(script(statusReply(http.StatusRequestEntityTooLarge)))
		stop := start(t, r.forwarder())
		waitFor(t, 5*time.Second, "dead letter", r.q.allDone)
		quiet(t, r.ep, 150*time.Millisecond)
		stop()
		if n := r.ep.count(); n != 1 {
			t.Errorf("%d requests, want 1", n)
		}
		if reason := r.q.reason("0001"); !strings.Contains(reason, "too large") {
			t.Errorf("dead-lettered with %q", reason)
		}
		r.q.checkAccounted(t, map[string]string{"0001": "dead"})
	})
}

func TestSTOWRetryForExceeded(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
	r.cfg.RetryFor = 400 * time.Millisecond
	r.cfg.RetryMin, r.cfg.RetryMax = 50*time.Millisecond, 100*time.Millisecond
	r.scfg.RetryMax = 0
	r.ep.setRespond(script(statusReply(http.StatusInternalServerError)))
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "dead letter", r.q.allDone)
	quiet(t, r.ep, 200*time.Millisecond)
	stop()
	n := r.ep.count()
	if n < 2 || n > 20 {
		t.Errorf("%d requests in 400ms with a backoff of 50-100ms", n)
	}
	reason := r.q.reason("0001")
	if want := fmt.Sprintf("still failing after %d attempts", n); !strings.Contains(reason, want) {
		t.Errorf("dead-lettered with %q, want %q", reason, want)
	}
	if re := len(r.q.retriesOf("0001")); re != n-1 {
		t.Errorf("%d retry records for %d attempts", re, n)
	}
	r.q.checkAccounted(t, map[string]string{"0001": "dead"})
}

func TestSTOWShutdownAbandonsHungRequest(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
	r.scfg.Timeout = time.Minute
	r.ep.setRespond(script(reply{hang: true}))
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "the request", func() bool { return r.ep.count() == 1 })
	time.Sleep(50 * time.Millisecond) // the request is now waiting for its answer
	if took := stop(); took > 2*time.Second {
		t.Errorf("Run took %v to return", took)
	}
	if d, re, de := r.q.counts(); d+re+de != 0 {
		t.Errorf("delivered %d, retries %d, dead %d; an abandoned attempt records nothing", d, re, de)
	}
	r.q.checkAccounted(t, map[string]string{"0001": "queued"})
}

func TestSTOWRestartHonoursRetryRecord(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
	r.scfg.RetryMax = 0
	r.ep.setRespond(script(statusReply(http.StatusInternalServerError)))
	first := time.Now().Add(-time.Minute).Round(0)
	next := time.Now().Add(700 * time.Millisecond).Round(0)
	r.q.records["0001"] = RetryRecord{Attempts: 3, FirstFailure: first, NextAttempt: next, LastError: "before the restart", Delay: time.Second}
	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "the attempt", func() bool { return r.q.record("0001").Attempts == 4 })
	stop()
	reqs := r.ep.requests()
	if len(reqs) != 1 {
		t.Fatalf("%d requests, want 1", len(reqs))
	}
	if reqs[0].At.Before(next) {
		t.Errorf("request %v before the recorded NextAttempt", next.Sub(reqs[0].At))
	}
	rec := r.q.record("0001")
	if !rec.FirstFailure.Equal(first) || !rec.NextAttempt.After(reqs[0].At) {
		t.Errorf("record after the restart %+v: FirstFailure must be kept, NextAttempt ahead", rec)
	}
}

func TestSTOWRestartNeitherForgetsNorHotLoops(t *testing.T) {
	r := newRig(t, obj("0001", "1.2.3", "1.2.3.1.1"))
	r.cfg.RetryFor = 72 * time.Hour
	r.ep.setRespond(script(statusReply(http.StatusServiceUnavailable, 3600)))

	stop := start(t, r.forwarder())
	waitFor(t, 5*time.Second, "the first failure", func() bool { return r.q.record("0001").Attempts == 1 })
	stop()
	rec1 := r.q.record("0001")

	// Restart: the hour is not over, so nothing is sent.
	stop = start(t, r.forwarder())
	quiet(t, r.ep, 500*time.Millisecond)
	stop()
	if n := r.ep.count(); n != 1 {
		t.Fatalf("%d requests after a restart within the Retry-After hour, want 1", n)
	}

	// Restart two hours later: sent once, and the attempts keep counting.
	f := r.forwarder()
	later := 2 * time.Hour
	f.now = func() time.Time { return time.Now().Add(later) }
	stop = start(t, f)
	waitFor(t, 5*time.Second, "the second attempt", func() bool { return r.q.record("0001").Attempts == 2 })
	quiet(t, r.ep, 300*time.Millisecond)
	stop()
	if n := r.ep.count(); n != 2 {
		t.Errorf("%d requests, want 2", n)
	}
	rec2 := r.q.record("0001")
	if !rec2.FirstFailure.Equal(rec1.FirstFailure) {
		t.Errorf("FirstFailure changed across the restart: %v -> %v", rec1.FirstFailure, rec2.FirstFailure)
	}
	if rec2.NextAttempt.Before(time.Now().Add(later + time.Hour - time.Minute)) {
		t.Errorf("NextAttempt %v does not honour the second Retry-After", rec2.NextAttempt)
	}
	r.q.checkAccounted(t, map[string]string{"0001": "queued"})
}

// A request that fails without an answer must not put the query string
// (an album or access token) into the reason, which is logged and written
// to the retry record.
func TestSTOWTransportErrorHidesQuery(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: connection refused
	s, err := NewSTOW(STOWConfig{BaseURL: "http://" + addr + "/api?album=SECRETALBUM&x=1", Timeout: 5 * time.Second, RetryMax: 1, RetryWaitMin: time.Millisecond, RetryWaitMax: time.Millisecond}, nil)
	if err != nil {
		t.Fatal(err)
	}
	o := writeObject(t, t.TempDir(), obj("0001", "1.2.3", "1.2.3.1.1"))
	r := s.Deliver(context.Background(), []*Object{o})[0]
	if r.Outcome != Retry || !strings.Contains(r.Reason, "refused") {
		t.Fatalf("result %+v, want a retry naming the refused connection", r)
	}
	if strings.Contains(r.Reason, "SECRETALBUM") || strings.Contains(r.Reason, "album=") {
		t.Fatalf("reason shows the query string: %q", r.Reason)
	}
	if !strings.Contains(r.Reason, addr+"/api/studies/1.2.3") {
		t.Errorf("reason %q does not name the endpoint", r.Reason)
	}
}
