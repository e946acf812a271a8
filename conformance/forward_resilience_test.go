package conformance

import (
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
	"github.com/dicomgw/dicomgw/pkg/spool"
)

// TestForwardEndpointDown: the endpoint is down while objects arrive.
// dicomgw must still acknowledge every object (the spool, not the
// endpoint, makes it safe), record its failed attempts durably (.retry
// beside each object) and deliver everything once the same Orthanc, on the
// same ports and storage, is back.
func TestForwardEndpointDown(t *testing.T) {
	t.Parallel()
	const n = 20
	objs := studyObjects(t, t.TempDir(), n, 16<<10)
	o := startOrthanc(t, nil)
	g := startGateway(t, t.TempDir(), append([]string{"--stow-url", o.BaseURL()}, fastRetry...)...)

	if err := o.Stop(30 * time.Second); err != nil {
		t.Fatalf("stopping Orthanc: %v", err)
	}
	down := time.Now()
	storeAll(t, g.Addr, "DOWNSCU", objs) // every one acknowledged 0000

	// Each object fails (connection refused), is logged and gets a
	// durable retry record (in the delivery ledger).
	deadline := time.Now().Add(60 * time.Second)
	var recs []spool.Retry
	for {
		c := countSpool(t, g.SpoolDir)
		if c.Queued != n {
			t.Fatalf("the endpoint is down, yet the queue holds %d objects, want %d: %v", c.Queued, n, c)
		}
		if recs = retryRecords(t, g.SpoolDir); len(recs) == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 60 s only %d of %d objects have a retry record", len(recs), n)
		}
		time.Sleep(200 * time.Millisecond)
	}
	fails := g.LogRecords("delivery failed; will retry")
	if len(fails) < n {
		t.Errorf("%d \"delivery failed; will retry\" log records, want at least one per object (%d)", len(fails), n)
	}
	for _, r := range fails {
		if reason, _ := r["reason"].(string); !strings.Contains(reason, "connection refused") {
			t.Errorf("failed delivery logged with reason %q, want a refused connection", reason)
			break
		}
	}
	for _, rec := range recs {
		if rec.Attempts < 1 || rec.FirstFailure.Before(down) || !rec.NextAttempt.After(rec.FirstFailure) || !strings.Contains(rec.LastError, "connection refused") {
			t.Errorf("retry record %+v", rec)
		}
	}
	if n, err := o.CountInstances(); err == nil {
		t.Fatalf("Orthanc answers (%d instances) although it was stopped", n)
	}
	// The spool ls view agrees.
	for _, rec := range spoolLs(t, g.SpoolDir, "--state", "queued") {
		if a, _ := rec["attempts"].(float64); a < 1 {
			t.Errorf("spool ls shows a queued object without failed attempts: %v", rec)
		}
	}

	if err := o.Restart(); err != nil {
		t.Fatalf("restarting Orthanc on the same ports: %v", err)
	}
	back := time.Now()
	c := waitDrained(t, g, 60*time.Second)
	if c.Dead != 0 {
		t.Errorf("dead letters after the endpoint came back: %v", c)
	}
	checkArrived(t, o, objs)
	delivered := deliveredRecords(g)
	for _, obj := range objs {
		r := delivered[obj.SOPInstanceUID]
		if len(r) != 1 {
			t.Errorf("%s: %d \"object delivered\" records, want 1", obj.SOPInstanceUID, len(r))
			continue
		}
		if a, _ := r[0]["attempts"].(float64); a < 2 {
			t.Errorf("%s delivered at attempt %v, but every object failed once before", obj.SOPInstanceUID, r[0]["attempts"])
		}
	}
	t.Logf("endpoint down %.1f s; %d failed attempts logged; all %d objects delivered %.1f s after Orthanc was back",
		back.Sub(down).Seconds(), len(fails), n, time.Since(back).Seconds())
}

// TestForwardGatewayKilled: dicomgw is killed (SIGKILL) in the middle of
// forwarding, with many objects queued and a STOW-RS request in flight,
// and started again on the same spool. Every object must reach Orthanc,
// each SOP Instance UID exactly once, and the spool must drain: what was
// in flight is sent again (Orthanc keeps its first copy), nothing is lost.
func TestForwardGatewayKilled(t *testing.T) {
	t.Parallel()
	// Objects large enough that a request of 5 takes Orthanc a while:
	// the kill is likely to find one in flight.
	const n = 120
	objs := studyObjects(t, t.TempDir(), n, 256<<10)
	o := startOrthanc(t, nil)
	spoolDir := t.TempDir()
	args := []string{"--stow-url", o.BaseURL(), "--forward-workers", "1", "--batch-max-instances", "5"}
	g, err := harness.Start(spoolDir, args...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(g.Kill)
	// Orthanc is frozen (SIGSTOP) while the objects arrive: the first
	// batch hangs in flight and the rest queues up. Thawed, it answers,
	// the worker goes on with the next batch, and the gateway is killed
	// as soon as the first delivery is logged.
	if err := o.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	thawed := false
	thaw := func() {
		if !thawed {
			thawed = true
			if err := o.Signal(syscall.SIGCONT); err != nil {
				t.Error(err)
			}
		}
	}
	t.Cleanup(thaw)
	storeAll(t, g.Addr, "KILLSCU", objs)
	if len(g.LogRecords("object delivered")) != 0 {
		t.Fatal("objects delivered while Orthanc was frozen")
	}
	thaw()
	if _, err := g.WaitLog("object delivered", 30*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	// The worker has taken the next batch by now and is sending it.
	time.Sleep(15 * time.Millisecond)
	g.Kill()
	killedAfter := len(g.LogRecords("object delivered"))
	before := countSpool(t, spoolDir)
	stored, err := o.SOPInstanceUIDs()
	if err != nil {
		t.Fatal(err)
	}
	// The ledger is the record of what was delivered: a kill can land
	// between its commit and the spool letting go of the objects (the
	// restart then drops them without sending), or between that and the
	// log lines.
	pending, inLedger := 0, 0
	for _, r := range traceJSON(t, spoolDir, "--calling-ae", "KILLSCU") {
		for _, d := range r.Destinations {
			switch d.State {
			case "delivered":
				inLedger++
			case "pending":
				pending++
			default:
				t.Errorf("%s: %s at %s after the kill", r.SOPInstance, d.State, d.Name)
			}
		}
	}
	t.Logf("killed after %d \"object delivered\" records: Orthanc holds %d, the ledger %d delivered and %d pending, the spool %v",
		killedAfter, len(stored), inLedger, pending, before)
	if pending < n/2 {
		t.Errorf("only %d objects were still pending at the kill: the test did not kill mid-forwarding", pending)
	}
	if pending+inLedger != n {
		t.Errorf("the ledger knows %d pending + %d delivered != %d sent", pending, inLedger, n)
	}
	if killedAfter > inLedger {
		t.Errorf("%d deliveries logged but only %d in the ledger", killedAfter, inLedger)
	}
	if before.Queued < pending || before.Queued > pending+5 {
		t.Errorf("%d objects in the queue for %d pending: every pending object must be there, and at most one batch (5) of delivered ones", before.Queued, pending)
	}
	g2 := startGateway(t, spoolDir, args...)
	c := waitDrained(t, g2, 90*time.Second)
	if c.Dead != 0 {
		t.Errorf("dead letters after the restart: %v", c)
	}
	checkArrived(t, o, objs) // each SOP Instance UID exactly once, data set intact
	if n, err := o.CountInstances(); err != nil || n != len(objs) {
		t.Errorf("Orthanc counts %d instances (%v), want %d", n, err, len(objs))
	}
	// The objects that were stored but not yet taken off the queue when
	// the gateway died went again: at most one batch (one worker).
	again := 0
	for sop := range deliveredRecords(g2) {
		if stored[sop] != "" {
			again++
		}
	}
	if again > 5 {
		t.Errorf("%d objects already in Orthanc were sent again after the restart; at most one batch (5) can have been in flight", again)
	}
	if got := len(g2.LogRecords("object delivered")); got != pending {
		t.Errorf("the restarted gateway delivered %d objects, %d were pending", got, pending)
	}
	t.Logf("after the restart: %d objects delivered, %d of them already stored by Orthanc before the kill (in flight)", pending, again)
}
