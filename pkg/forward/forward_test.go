package forward

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// Scheduler tests: a fake Destination, a fake queue, and the fake clock of
// testing/synctest, so that linger, backoff and pause are exact and instant.

// fakeDest records the batches it is given and answers from respond.
type fakeDest struct {
	mu          sync.Mutex
	calls       [][]string // object IDs per Deliver call
	times       []time.Time
	inflight    int
	maxInflight int
	hold        time.Duration                        // each Deliver takes this long (or until ctx ends)
	respond     func(n int, objs []*Object) []Result // nil: all delivered
	during      func()                               // called inside each Deliver
}

func (d *fakeDest) String() string { return "fake" }

func (d *fakeDest) Deliver(ctx context.Context, objs []*Object) []Result {
	ids := make([]string, len(objs))
	for i, o := range objs {
		ids[i] = o.ID
	}
	d.mu.Lock()
	n := len(d.calls)
	d.calls = append(d.calls, ids)
	d.times = append(d.times, time.Now())
	d.inflight++
	d.maxInflight = max(d.maxInflight, d.inflight)
	respond, during := d.respond, d.during
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		d.inflight--
		d.mu.Unlock()
	}()
	if during != nil {
		during()
	}
	if d.hold > 0 {
		select {
		case <-time.After(d.hold):
		case <-ctx.Done():
			return all(objs, Result{Outcome: Abandoned})
		}
	}
	if respond != nil {
		return respond(n, objs)
	}
	return all(objs, Result{Outcome: Delivered})
}

func (d *fakeDest) batches() [][]string {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.calls)
}

func (d *fakeDest) callTimes() []time.Time {
	d.mu.Lock()
	defer d.mu.Unlock()
	return slices.Clone(d.times)
}

// fakeObj is an object the fake destination never reads: no file.
func fakeObj(id, study string, dataSize int64) *Object {
	return &Object{ID: id, DataSize: dataSize,
		Open:        func() (io.ReadCloser, error) { return nil, errors.New("the fake destination reads nothing") },
		SOPClassUID: ctClass, SOPInstanceUID: "1.2.9." + strings.TrimLeft(id, "0"), TransferSyntaxUID: explicitLE,
		StudyInstanceUID: study, SeriesInstanceUID: study + ".1", Received: time.Now()}
}

func schedConfig() Config {
	return Config{
		Workers: 1, BatchLinger: -1, RetryFor: time.Hour, RetryMin: time.Second, RetryMax: 8 * time.Second,
		PauseMin: time.Second, PauseMax: 4 * time.Second, RescanInterval: time.Hour,
	}
}

// runBubble runs f inside a synctest bubble until stop.
func runBubble(f *Forwarder) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		f.Run(ctx)
	}()
	return func() {
		cancel()
		<-done
	}
}

func TestSchedulerBatchesByStudy(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue(fakeObj("01", "1.1", 10), fakeObj("02", "2.2", 10), fakeObj("03", "1.1", 10),
			fakeObj("04", "2.2", 10), fakeObj("05", "1.1", 10), fakeObj("06", "", 10), fakeObj("07", "", 10))
		d := &fakeDest{}
		stop := runBubble(New(schedConfig(), q, d, nil, nil))
		synctest.Wait()
		stop()
		want := [][]string{{"01", "03", "05"}, {"02", "04"}, {"06", "07"}}
		if got := d.batches(); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("batches %v, want %v", got, want)
		}
		q.checkAccounted(t, nil)
		if !q.allDone() {
			t.Error("objects left queued")
		}
	})
}

func TestSchedulerBatchMaxInstances(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var objs []*Object
		for i := range 5 {
			objs = append(objs, fakeObj(fmt.Sprintf("%02d", i+1), "1.1", 10))
		}
		q := newFakeQueue(objs...)
		d := &fakeDest{}
		cfg := schedConfig()
		cfg.BatchMaxInstances = 2
		stop := runBubble(New(cfg, q, d, nil, nil))
		synctest.Wait()
		stop()
		want := [][]string{{"01", "02"}, {"03", "04"}, {"05"}}
		if got := d.batches(); !slices.EqualFunc(got, want, slices.Equal) {
			t.Errorf("batches %v, want %v", got, want)
		}
	})
}

func TestSchedulerBatchMaxBytes(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		sizes := []int64{400, 400, 400, 3000, 400, 200}
		var objs []*Object
		size := map[string]int64{}
		for i, n := range sizes {
			o := fakeObj(fmt.Sprintf("%02d", i+1), "1.1", n)
			objs = append(objs, o)
			size[o.ID] = n
		}
		q := newFakeQueue(objs...)
		d := &fakeDest{}
		cfg := schedConfig()
		cfg.BatchMaxBytes = 1000
		stop := runBubble(New(cfg, q, d, nil, nil))
		synctest.Wait()
		stop()
		seen := map[string]bool{}
		for _, b := range d.batches() {
			var total int64
			for _, id := range b {
				total += size[id]
				seen[id] = true
			}
			if total > cfg.BatchMaxBytes && len(b) > 1 {
				t.Errorf("batch %v of %d bytes exceeds BatchMaxBytes", b, total)
			}
			if slices.Contains(b, "04") && len(b) != 1 {
				t.Errorf("the object larger than BatchMaxBytes went in batch %v, want alone", b)
			}
		}
		if len(seen) != len(sizes) || !q.allDone() {
			t.Errorf("delivered %d of %d objects", len(seen), len(sizes))
		}
	})
}

func TestSchedulerLinger(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue()
		d := &fakeDest{}
		cfg := schedConfig()
		cfg.BatchLinger = 500 * time.Millisecond
		cfg.BatchMaxInstances = 3
		f := New(cfg, q, d, nil, nil)
		stop := runBubble(f)
		defer stop()
		notify := func(objs ...*Object) {
			q.add(objs...)
			for _, o := range objs {
				f.Notify(o.ID)
			}
		}
		t0 := time.Now()

		// A lone object waits for more of its study...
		notify(fakeObj("01", "1.1", 10))
		time.Sleep(100 * time.Millisecond)
		synctest.Wait()
		if n := len(d.batches()); n != 0 {
			t.Fatalf("%d batches sent during the linger", n)
		}
		notify(fakeObj("02", "1.1", 10))
		time.Sleep(450 * time.Millisecond)
		synctest.Wait()
		got := d.batches()
		if len(got) != 1 || !slices.Equal(got[0], []string{"01", "02"}) {
			t.Fatalf("after the linger: batches %v, want [[01 02]]", got)
		}
		if at := d.callTimes()[0].Sub(t0); at != cfg.BatchLinger {
			t.Errorf("batch sent %v after its first object, want exactly the linger %v", at, cfg.BatchLinger)
		}

		// ...but a full batch goes at once...
		t1 := time.Now()
		notify(fakeObj("03", "2.2", 10), fakeObj("04", "2.2", 10), fakeObj("05", "2.2", 10))
		synctest.Wait()
		if got := d.batches(); len(got) != 2 || !slices.Equal(got[1], []string{"03", "04", "05"}) {
			t.Fatalf("batches %v, want the full one sent", got)
		} else if at := d.callTimes()[1]; !at.Equal(t1) {
			t.Errorf("full batch waited %v", at.Sub(t1))
		}

		// ...even while an older object of another study lingers.
		t2 := time.Now()
		notify(fakeObj("06", "3.3", 10))
		time.Sleep(10 * time.Millisecond)
		notify(fakeObj("07", "4.4", 10), fakeObj("08", "4.4", 10), fakeObj("09", "4.4", 10))
		synctest.Wait()
		got = d.batches()
		if len(got) != 3 || !slices.Equal(got[2], []string{"07", "08", "09"}) {
			t.Fatalf("batches %v: a full batch waited for another study's linger", got)
		}
		time.Sleep(time.Second)
		synctest.Wait()
		got = d.batches()
		if len(got) != 4 || !slices.Equal(got[3], []string{"06"}) {
			t.Fatalf("batches %v, want the lingering object sent after its linger", got)
		}
		if at := d.callTimes()[3].Sub(t2); at != cfg.BatchLinger {
			t.Errorf("lingering object sent after %v, want %v", at, cfg.BatchLinger)
		}
	})
}

func TestSchedulerWorkersBoundConcurrency(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var objs []*Object
		for i := range 20 {
			objs = append(objs, fakeObj(fmt.Sprintf("%02d", i+1), fmt.Sprintf("1.%d", i+1), 10))
		}
		q := newFakeQueue(objs...)
		d := &fakeDest{hold: 50 * time.Millisecond}
		cfg := schedConfig()
		cfg.Workers = 3
		t0 := time.Now()
		stop := runBubble(New(cfg, q, d, nil, nil))
		for !q.allDone() {
			time.Sleep(10 * time.Millisecond)
		}
		took := time.Since(t0)
		stop()
		if d.maxInflight != 3 {
			t.Errorf("%d Deliver calls at once, want Workers = 3", d.maxInflight)
		}
		// 20 batches of 50ms, 3 at a time: 7 rounds.
		if took > 400*time.Millisecond {
			t.Errorf("took %v", took)
		}
	})
}

func TestSchedulerWindow(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var objs []*Object
		for i := range 50 {
			objs = append(objs, fakeObj(fmt.Sprintf("%02d", i+1), fmt.Sprintf("1.%d", i%7), 10))
		}
		q := newFakeQueue()
		cfg := schedConfig()
		cfg.Window = 10
		cfg.Workers = 2
		cfg.RescanInterval = 5 * time.Second
		f := New(cfg, q, nil, nil, nil)
		var held int
		d := &fakeDest{hold: 20 * time.Millisecond, during: func() {
			f.mu.Lock()
			held = max(held, len(f.items)+len(f.pending))
			f.mu.Unlock()
		}}
		f.dest = d
		// Objects are committed and notified while the forwarder loads
		// others: notifications arrive during Describe too.
		var mu sync.Mutex
		next := 0
		notifyOne := func() (left int) {
			mu.Lock()
			defer mu.Unlock()
			if next < len(objs) {
				q.add(objs[next])
				f.Notify(objs[next].ID)
				next++
			}
			return len(objs) - next
		}
		q.onDescribe = func() { notifyOne() }
		t0 := time.Now()
		stop := runBubble(f)
		defer stop()
		for range 25 {
			notifyOne()
		}
		for notifyOne() > 0 || !q.allDone() {
			time.Sleep(100 * time.Millisecond)
		}
		stop()
		// The notifications that did not fit were picked up by rescans
		// once there was room, not by the periodic one.
		if took := time.Since(t0); took >= cfg.RescanInterval || q.lists < 2 {
			t.Errorf("all delivered after %v and %d listings of the spool", took, q.lists)
		}
		if q.maxHeld > cfg.Window {
			t.Errorf("%d objects held in memory at once, Window %d", q.maxHeld, cfg.Window)
		}
		if held > cfg.Window {
			t.Errorf("%d objects held or pending, Window %d", held, cfg.Window)
		}
		q.checkAccounted(t, nil)
	})
}

func TestSchedulerNotifyNeverBlocks(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue()
		cfg := schedConfig()
		cfg.Window = 10
		// A Deliver that never returns until shutdown keeps the one worker
		// busy and the scheduler waiting for it.
		d := &fakeDest{hold: time.Hour}
		f := New(cfg, q, d, nil, nil)
		stop := runBubble(f)
		q.add(fakeObj("00", "1.1", 10))
		f.Notify("00")
		synctest.Wait()
		q.add(fakeObj("01", "1.2", 10))
		f.Notify("01") // picked, waiting for a worker
		synctest.Wait()
		done := make(chan struct{})
		go func() {
			for i := range 100000 {
				f.Notify(fmt.Sprint("x", i))
			}
			close(done)
		}()
		synctest.Wait() // deadlocks (and fails) if Notify blocks
		select {
		case <-done:
		default:
			t.Error("Notify blocked")
		}
		// And without any Run at all.
		g := New(cfg, q, d, nil, nil)
		for i := range 1000 {
			g.Notify(fmt.Sprint(i))
		}
		stop()
	})
}

func TestSchedulerRetryKeepsBatchTogether(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var objs []*Object
		for i := range 10 {
			objs = append(objs, fakeObj(fmt.Sprintf("%02d", i+1), "1.1", 10))
		}
		q := newFakeQueue(objs...)
		d := &fakeDest{respond: func(n int, objs []*Object) []Result {
			if n == 0 {
				return all(objs, Result{Outcome: Retry, Reason: "503"})
			}
			return all(objs, Result{Outcome: Delivered})
		}}
		f := New(schedConfig(), q, d, nil, nil)
		// A clock that moves on at every reading, as a real one does
		// between the objects of a batch.
		var ticks atomic.Int64
		f.now = func() time.Time { return time.Now().Add(time.Duration(ticks.Add(1)) * time.Microsecond) }
		stop := runBubble(f)
		time.Sleep(time.Minute)
		synctest.Wait()
		stop()
		if got := d.batches(); len(got) != 2 || len(got[1]) != 10 {
			t.Errorf("batches %v; a batch that failed together must come back together", got)
		}
		rec := q.record("01")
		for _, o := range objs {
			if r := q.record(o.ID); !r.NextAttempt.Equal(rec.NextAttempt) || r.Attempts != 1 {
				t.Errorf("%s: record %+v, want the batch's %+v", o.ID, r, rec)
			}
		}
		q.checkAccounted(t, nil)
	})
}

func TestSchedulerBackoffSchedule(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue(fakeObj("01", "1.1", 10))
		d := &fakeDest{respond: func(n int, objs []*Object) []Result {
			return all(objs, Result{Outcome: Retry, Reason: "boom"})
		}}
		cfg := schedConfig()
		cfg.RetryFor = 30 * time.Second
		t0 := time.Now()
		f := New(cfg, q, d, nil, nil)
		if at, why := f.LastFailure(); !at.IsZero() || why != "" {
			t.Errorf("last failure before any attempt: %v %q", at, why)
		}
		stop := runBubble(f)
		time.Sleep(time.Minute)
		synctest.Wait()
		stop()
		times := d.callTimes()
		if at, why := f.LastFailure(); !at.Equal(times[len(times)-1]) || why != "boom" {
			t.Errorf("last failure %v %q, want the last attempt's (%v, boom)", at, why, times[len(times)-1])
		}
		// Delays: [0.5,1]s, [1,2]s, [2,4]s, then [4,8]s capped by RetryMax.
		for i := 1; i < len(times); i++ {
			gap := times[i].Sub(times[i-1])
			base := min(cfg.RetryMin<<(i-1), cfg.RetryMax)
			if gap < base/2 || gap > base {
				t.Errorf("retry %d after %v, want within [%v, %v]", i, gap, base/2, base)
			}
		}
		last := times[len(times)-1]
		if last.Sub(t0) < cfg.RetryFor || q.stateOf("01") != "dead" {
			t.Errorf("dead-lettered at %v (state %s); RetryFor %v", last.Sub(t0), q.stateOf("01"), cfg.RetryFor)
		}
		if want := fmt.Sprintf("still failing after %d attempts", len(times)); !strings.Contains(q.reason("01"), want) {
			t.Errorf("reason %q, want %q", q.reason("01"), want)
		}
		if q.details["01"]["attempts"] != fmt.Sprint(len(times)) {
			t.Errorf("details %v", q.details["01"])
		}
	})
}

func TestSchedulerRetryAfterHonoured(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue(fakeObj("01", "1.1", 10))
		d := &fakeDest{respond: func(n int, objs []*Object) []Result {
			if n == 0 {
				return all(objs, Result{Outcome: Retry, Reason: "429", RetryAfter: 90 * time.Second})
			}
			return all(objs, Result{Outcome: Delivered})
		}}
		stop := runBubble(New(schedConfig(), q, d, nil, nil))
		time.Sleep(5 * time.Minute)
		synctest.Wait()
		stop()
		times := d.callTimes()
		if len(times) != 2 || times[1].Sub(times[0]) != 90*time.Second {
			t.Errorf("calls at %v; want the second exactly 90s (Retry-After) after the first", times)
		}
	})
}

func TestSchedulerPauseAndProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue(fakeObj("01", "1.1", 10), fakeObj("02", "2.2", 10), fakeObj("03", "3.3", 10))
		// Each call takes 10ms: long enough for the scheduler to want to
		// send the next batch while the first is refused.
		d := &fakeDest{hold: 10 * time.Millisecond, respond: func(n int, objs []*Object) []Result {
			if n < 2 {
				return all(objs, Result{Outcome: Pause, Reason: "400 Bad Request"})
			}
			return all(objs, Result{Outcome: Delivered})
		}}
		f := New(schedConfig(), q, d, nil, nil)
		t0 := time.Now()
		stop := runBubble(f)
		time.Sleep(20 * time.Millisecond)
		synctest.Wait()
		if p, why := f.Paused(); !p || why != "400 Bad Request" {
			t.Errorf("Paused() = %v, %q", p, why)
		}
		time.Sleep(10 * time.Second)
		synctest.Wait()
		stop()
		var at []time.Duration
		for _, c := range d.callTimes() {
			at = append(at, c.Sub(t0))
		}
		// Refused at 0 (answered at 10ms); the probe after PauseMin (1s) is
		// refused too; the next after 2s gets through, and the rest follow.
		// Nothing is sent during a pause, not even a batch chosen before it.
		ms := time.Millisecond
		want := []time.Duration{0, 1010 * ms, 3020 * ms, 3030 * ms, 3040 * ms}
		if !slices.Equal(at, want) {
			t.Errorf("calls at %v, want %v", at, want)
		}
		for _, b := range d.batches()[:3] {
			if len(b) != 1 || b[0] != "01" {
				t.Errorf("probe batch %v, want the oldest object", b)
			}
		}
		if p, _ := f.Paused(); p {
			t.Error("still paused after a delivery")
		}
		if _, re, _ := q.counts(); re != 0 {
			t.Errorf("%d retry records: a pause counts no attempt", re)
		}
		q.checkAccounted(t, nil)
	})
}

func TestSchedulerDeadLetterFailureKeepsObject(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue(fakeObj("01", "1.1", 10))
		q.failDead = true
		d := &fakeDest{respond: func(n int, objs []*Object) []Result {
			return all(objs, Result{Outcome: Dead, Reason: "C122"})
		}}
		cfg := schedConfig()
		stop := runBubble(New(cfg, q, d, nil, nil))
		time.Sleep(cfg.RetryMax + time.Second)
		synctest.Wait()
		stop()
		if n := len(d.batches()); n != 2 {
			t.Errorf("%d calls in RetryMax+1s, want 2: retried after RetryMax, no hot loop", n)
		}
		q.checkAccounted(t, map[string]string{"01": "queued"})
	})
}

func TestSchedulerWrongResultCount(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue(fakeObj("01", "1.1", 10), fakeObj("02", "1.1", 10))
		d := &fakeDest{respond: func(n int, objs []*Object) []Result {
			if n == 0 {
				return nil
			}
			return all(objs, Result{Outcome: Delivered})
		}}
		stop := runBubble(New(schedConfig(), q, d, nil, nil))
		time.Sleep(time.Minute)
		synctest.Wait()
		stop()
		if rec := q.record("01"); rec.Attempts != 1 {
			t.Errorf("record %+v: a destination bug counts as a failed attempt", rec)
		}
		q.checkAccounted(t, map[string]string{"01": "delivered", "02": "delivered"})
	})
}

func TestSchedulerAbandonedOnShutdown(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		q := newFakeQueue(fakeObj("01", "1.1", 10))
		d := &fakeDest{hold: time.Hour}
		stop := runBubble(New(schedConfig(), q, d, nil, nil))
		synctest.Wait()
		t0 := time.Now()
		stop()
		if took := time.Since(t0); took != 0 {
			t.Errorf("Run took %v to return", took)
		}
		if a, b, c := q.counts(); a+b+c != 0 {
			t.Errorf("an abandoned attempt recorded something: %d %d %d", a, b, c)
		}
		q.checkAccounted(t, map[string]string{"01": "queued"})
	})
}

func TestBackoffBounds(t *testing.T) {
	lo, hi := 10*time.Second, 15*time.Minute
	for attempts := 1; attempts < 200; attempts++ {
		base := hi
		if attempts < 20 {
			base = min(lo<<(attempts-1), hi)
		}
		for range 20 {
			if d := backoff(attempts, lo, hi); d < base/2 || d > base {
				t.Fatalf("backoff(%d) = %v, want within [%v, %v]", attempts, d, base/2, base)
			}
		}
	}
}
