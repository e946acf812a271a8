package conformance

// commitment_scu_test.go: issue 14 through the binary, beside
// commitment_test.go. Storage commitment
// (Push Model, PS3.4 J) with real SCUs: Orthanc 1.10 (it stores a study to
// the gateway and asks for commitment; its REST API shows the report it
// got) and dcmjs-dimse (stgcmt-scu.js). "Committed" means, by default,
// delivered to every destination the instances were routed to: the report
// waits for an upstream that is down, survives a restart, and names what
// was never sent, dead-lettered or too late.

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/dicomgw/dicomgw/internal/harness"
)

// pendingWindow is how long a test watches a request that must not be
// answered yet (the upstream is down): long enough for a gateway that
// answers on receipt to be caught, short enough for the suite.
const pendingWindow = 6 * time.Second

// TestCommitmentOrthancSCU: Orthanc A (AE ORTHANCA) holds studies and
// sends them to gateways with storage commitment requested; the report
// comes back to its DICOM port on a new association (Orthanc releases
// after the N-ACTION-RSP) and Orthanc shows it at /storage-commitment.
func TestCommitmentOrthancSCU(t *testing.T) {
	t.Parallel()
	a := startOrthanc(t, map[string]any{"DicomAet": "ORTHANCA"})
	remoteA := "ORTHANCA=" + a.DICOMAddr()

	// Delivered (the default): Orthanc B, the STOW-RS destination, is down
	// when the study comes; the report stays Pending until B is up and
	// holds every instance, then says Success for each. A second request
	// for one instance delivered long before and one never sent: success
	// for the first, 0112 for the other.
	t.Run("delivered", func(t *testing.T) {
		t.Parallel()
		bPort := freePort(t)
		g := startGateway(t, t.TempDir(), append([]string{
			"--stow-url", "http://127.0.0.1:" + strconv.Itoa(bPort) + "/dicom-web",
			"--remote-ae", remoteA,
		}, fastRetry...)...)
		addModality(t, a, "gw", calledAE, g.Addr)
		objs := studyObjects(t, t.TempDir(), 3, 4<<10)
		uid := orthancStoreCommit(t, a, "gw", uploadObjects(t, a, objs))

		stayPending(t, a, uid, pendingWindow)
		if n := metricValue(t, g, "dicomgw_commitment_open_requests", `state="waiting"`); n != 1 {
			t.Errorf("dicomgw_commitment_open_requests{state=\"waiting\"} = %v with the upstream down, want 1", n)
		}
		b := startOrthanc(t, map[string]any{"HttpPort": bPort})
		r := waitOrthancReport(t, a, uid, 60*time.Second)
		checkOrthancReport(t, r, calledAE, instanceUIDs(objs), nil)
		// Success was said: B must hold everything already, byte for byte.
		checkArrived(t, b, objs)

		never := harness.NewUID()
		uid2 := orthancCommit(t, a, "gw", []scuRef{
			{Class: sopSecondaryCapture, Instance: objs[1].SOPInstanceUID},
			{Class: sopSecondaryCapture, Instance: never},
		})
		r2 := waitOrthancReport(t, a, uid2, 60*time.Second)
		checkOrthancReport(t, r2, calledAE, []string{objs[1].SOPInstanceUID}, map[string]int{never: reasonNoSuchInstance})

		waitMetric(t, g, 1, "dicomgw_commitment_reports_total", `result="success"`, `via="new"`)
		waitMetric(t, g, 1, "dicomgw_commitment_reports_total", `result="failures"`, `via="new"`)
		waitMetric(t, g, 0, "dicomgw_commitment_open_requests", `state="waiting"`)
		waitMetric(t, g, 0, "dicomgw_commitment_open_requests", `state="reporting"`)
		m, err := g.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if n := m.Sum("dicomgw_commitment_requests_total"); n != 2 {
			t.Errorf("dicomgw_commitment_requests_total sums to %v, want 2", n)
		}
		if n := m.Sum("dicomgw_commitment_instances_total"); n != 5 {
			t.Errorf("dicomgw_commitment_instances_total sums to %v, want 5 (3 + 2)", n)
		}
		if n := m.Sum("dicomgw_commitment_report_failures_total"); n != 0 {
			t.Errorf("dicomgw_commitment_report_failures_total = %v, want 0", n)
		}
	})

	// --commitment received: Success as soon as the instances are in the
	// spool, with the upstream down (they are still queued).
	t.Run("received", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir(), "--ae-title", "GWRECV", "--commitment", "received", "--remote-ae", remoteA)
		addModality(t, a, "gwrecv", "GWRECV", g.Addr)
		objs := studyObjects(t, t.TempDir(), 3, 4<<10)
		uid := orthancStoreCommit(t, a, "gwrecv", uploadObjects(t, a, objs))
		r := waitOrthancReport(t, a, uid, 30*time.Second)
		checkOrthancReport(t, r, "GWRECV", instanceUIDs(objs), nil)
		if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) {
			t.Errorf("spool: %v; want the %d objects still queued (the upstream is down)", c, len(objs))
		}
	})

	// --commitment received, the instances stored a while before the
	// request: the answer is ready at once, while Orthanc (which releases
	// right after the N-ACTION-RSP, and takes reports only as an SCP on
	// associations of their own) may still hold its association.
	t.Run("received, stored before", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir(), "--ae-title", "GWRECV2", "--commitment", "received", "--remote-ae", remoteA)
		addModality(t, a, "gwrecv2", "GWRECV2", g.Addr)
		objs := studyObjects(t, t.TempDir(), 2, 4<<10)
		ids := uploadObjects(t, a, objs)
		orthancREST(t, a, http.MethodPost, "/modalities/gwrecv2/store", map[string]any{"Resources": ids, "Synchronous": true})
		time.Sleep(time.Second)
		uid := orthancCommit(t, a, "gwrecv2", refsOf(objs))
		r := waitOrthancReport(t, a, uid, 30*time.Second)
		checkOrthancReport(t, r, "GWRECV2", instanceUIDs(objs), nil)
	})

	// Fan-out: routed to B1 (up) and B2 (down); B1 holding every instance
	// is not enough. Once B2 is up and holds them too: Success.
	t.Run("fan-out", func(t *testing.T) {
		t.Parallel()
		b1 := startOrthanc(t, nil)
		b2Port := freePort(t)
		g := startGateway(t, t.TempDir(), append([]string{
			"--ae-title", "GWFAN",
			"--destination", "b1=" + b1.BaseURL(),
			"--destination", "b2=http://127.0.0.1:" + strconv.Itoa(b2Port) + "/dicom-web",
			"--route", "{} -> b1,b2",
			"--remote-ae", remoteA,
		}, fastRetry...)...)
		addModality(t, a, "gwfan", "GWFAN", g.Addr)
		objs := studyObjects(t, t.TempDir(), 2, 4<<10)
		uid := orthancStoreCommit(t, a, "gwfan", uploadObjects(t, a, objs))
		waitHolds(t, b1, objs, 30*time.Second)
		stayPending(t, a, uid, pendingWindow/2)
		b2 := startOrthanc(t, map[string]any{"HttpPort": b2Port})
		r := waitOrthancReport(t, a, uid, 60*time.Second)
		checkOrthancReport(t, r, "GWFAN", instanceUIDs(objs), nil)
		checkArrived(t, b1, objs)
		checkArrived(t, b2, objs)
	})
}

// TestCommitmentRestartListening: a request pending (the upstream down) when the
// gateway stops cleanly is reported after it starts again on the same
// spool and the upstream comes up, once, on a new association to the
// requester's --remote-ae address (dcmjs-dimse listening there).
func TestCommitmentRestartListening(t *testing.T) {
	t.Parallel()
	upPort, listen := freePort(t), freePort(t)
	spoolDir := t.TempDir()
	args := append([]string{
		"--stow-url", "http://127.0.0.1:" + strconv.Itoa(upPort) + "/dicom-web",
		"--remote-ae", "STGSCU=127.0.0.1:" + strconv.Itoa(listen),
	}, fastRetry...)
	g := startGateway(t, spoolDir, args...)
	objs := studyObjects(t, t.TempDir(), 3, 4<<10)
	storeAll(t, g.Addr, "STGSCU", objs)

	uid := harness.NewUID()
	port, _ := strconv.Atoi(g.Port())
	scu := startSCU(t, scuRequest{Host: g.Host(), Port: port, CallingAE: "STGSCU", CalledAE: calledAE,
		TransactionUID: uid, Refs: refsOf(objs), ListenPort: listen})
	if st, comment := scu.actionStatus(t); st != 0 {
		t.Fatalf("N-ACTION-RSP status %04X (%q), want 0000", st, comment)
	}
	scu.wait(t, "released", 30*time.Second)
	if _, ok := scu.waitFor(2*time.Second, "n-event-report"); ok {
		t.Fatalf("a report with the upstream down: %v", scu.Events("n-event-report"))
	}
	if err := g.Stop(20 * time.Second); err != nil {
		t.Fatalf("dicomgw did not stop cleanly: %v", err)
	}
	if n := len(scu.Events("n-event-report")); n != 0 {
		t.Fatalf("%d reports before the upstream was up: %v", n, scu.Events("n-event-report"))
	}

	g2 := startGateway(t, spoolDir, args...)
	if n := metricValue(t, g2, "dicomgw_commitment_open_requests", `state="waiting"`); n != 1 {
		t.Errorf("after the restart: dicomgw_commitment_open_requests{state=\"waiting\"} = %v, want 1", n)
	}
	up := startOrthanc(t, map[string]any{"HttpPort": upPort})
	e := scu.wait(t, "n-event-report", 60*time.Second)
	checkReport(t, e, uid, instanceUIDs(objs), nil)
	if e.Via != "new" {
		t.Errorf("report via %q, want a new association", e.Via)
	}
	checkArrived(t, up, objs)
	assoc := scu.Events("association")
	if len(assoc) == 0 {
		t.Fatal("a report without an association event")
	}
	if a := assoc[0]; a.CallingAE != calledAE || a.CalledAE != "STGSCU" {
		t.Errorf("the report's association: calling %q called %q, want %q %q", a.CallingAE, a.CalledAE, calledAE, "STGSCU")
	} else if a.Roles == nil || a.Roles.SCU == nil || a.Roles.SCP == nil || *a.Roles.SCU || !*a.Roles.SCP {
		t.Errorf("the report's association proposes roles %s for %s, want SCU=0 SCP=1", a.line, sopStorageCommitment)
	}

	// Once: nothing more comes, and the gateway holds nothing open.
	time.Sleep(3 * time.Second)
	if n := len(scu.Events("n-event-report")); n != 1 {
		t.Errorf("%d reports, want exactly 1: %v", n, scu.Events("n-event-report"))
	}
	waitMetric(t, g2, 1, "dicomgw_commitment_reports_total", `result="success"`, `via="new"`)
	waitMetric(t, g2, 0, "dicomgw_commitment_open_requests", `state="waiting"`)
	waitMetric(t, g2, 0, "dicomgw_commitment_open_requests", `state="reporting"`)
}

// TestCommitmentDcmjsCases: dcmjs-dimse as the SCU, each case on a gateway of
// its own.
func TestCommitmentDcmjsCases(t *testing.T) {
	t.Parallel()
	port := func(g *harness.Gateway) int { p, _ := strconv.Atoi(g.Port()); return p }
	request := func(g *harness.Gateway, callingAE string, refs []scuRef) scuRequest {
		return scuRequest{Host: g.Host(), Port: port(g), CallingAE: callingAE, CalledAE: calledAE, TransactionUID: harness.NewUID(), Refs: refs}
	}
	nowhere := func(t *testing.T) string { return "127.0.0.1:" + strconv.Itoa(freePort(t)) }

	// The requester keeps its association open (received: the answer is
	// ready at once): the report comes on it. Its --remote-ae address has
	// no listener, so a report sent elsewhere would be lost.
	t.Run("same association", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir(), "--commitment", "received", "--remote-ae", "STGSCU="+nowhere(t))
		objs := studyObjects(t, t.TempDir(), 2, 2<<10)
		storeAll(t, g.Addr, "STGSCU", objs)
		req := request(g, "STGSCU", refsOf(objs))
		req.LingerMs = 15000
		scu := startSCU(t, req)
		if st, comment := scu.actionStatus(t); st != 0 {
			t.Fatalf("N-ACTION-RSP status %04X (%q), want 0000", st, comment)
		}
		e := scu.wait(t, "n-event-report", 15*time.Second)
		checkReport(t, e, req.TransactionUID, instanceUIDs(objs), nil)
		if e.Via != "same" {
			t.Errorf("report via %q, want the requester's own association", e.Via)
		}
		waitMetric(t, g, 1, "dicomgw_commitment_reports_total", `result="success"`, `via="same"`)
	})

	// The requester releases at once (delivered, to an archive): the report
	// comes on a new association from the called AE title to the
	// requester's --remote-ae address. The N-ACTION comes before the
	// instances (within the grace for unknown instances).
	t.Run("new association", func(t *testing.T) {
		t.Parallel()
		listen := freePort(t)
		archive := t.TempDir()
		g := startGateway(t, t.TempDir(), "--archive-dir", archive, "--remote-ae", "STGSCU=127.0.0.1:"+strconv.Itoa(listen))
		objs := studyObjects(t, t.TempDir(), 2, 2<<10)
		req := request(g, "STGSCU", refsOf(objs))
		req.ListenPort = listen
		scu := startSCU(t, req)
		if st, comment := scu.actionStatus(t); st != 0 {
			t.Fatalf("N-ACTION-RSP status %04X (%q), want 0000", st, comment)
		}
		scu.wait(t, "released", 30*time.Second)
		storeAll(t, g.Addr, "STGSCU", objs)
		e := scu.wait(t, "n-event-report", 30*time.Second)
		checkReport(t, e, req.TransactionUID, instanceUIDs(objs), nil)
		if e.Via != "new" {
			t.Errorf("report via %q, want a new association", e.Via)
		}
		checkHas(t, "the archive", archiveDataSets(t, archive), objs)
		if a := scu.Events("association"); len(a) != 1 || a[0].CallingAE != calledAE || a[0].CalledAE != "STGSCU" {
			t.Errorf("associations to the listener: %v; want one from %s to STGSCU", a, calledAE)
		}
		waitMetric(t, g, 1, "dicomgw_commitment_reports_total", `result="success"`, `via="new"`)
	})

	// A requester the gateway could not reach (no --remote-ae line for
	// it) is refused at once: 0124 with an Error Comment, no report.
	t.Run("refused", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir(), "--commitment", "received", "--remote-ae", "OTHER="+nowhere(t))
		objs := studyObjects(t, t.TempDir(), 1, 2<<10)
		storeAll(t, g.Addr, "STRANGER", objs)
		req := request(g, "STRANGER", refsOf(objs))
		req.LingerMs = 3000
		scu := startSCU(t, req)
		st, comment := scu.actionStatus(t)
		if st != statusNotAuthorized || comment == "" {
			t.Errorf("N-ACTION-RSP status %04X comment %q, want 0124 with an Error Comment", st, comment)
		}
		scu.wait(t, "released", 30*time.Second)
		if r := scu.Events("n-event-report"); len(r) != 0 {
			t.Errorf("a refused request was reported: %v", r)
		}
		waitMetric(t, g, 0, "dicomgw_commitment_open_requests", `state="waiting"`)
	})

	// --commitment-timeout 3s with the upstream down: every instance fails
	// with 0110.
	t.Run("timeout", func(t *testing.T) {
		t.Parallel()
		listen := freePort(t)
		g := startGateway(t, t.TempDir(), "--commitment-timeout", "3s", "--remote-ae", "STGSCU=127.0.0.1:"+strconv.Itoa(listen))
		objs := studyObjects(t, t.TempDir(), 2, 2<<10)
		storeAll(t, g.Addr, "STGSCU", objs)
		req := request(g, "STGSCU", refsOf(objs))
		req.ListenPort = listen
		scu := startSCU(t, req)
		if st, comment := scu.actionStatus(t); st != 0 {
			t.Fatalf("N-ACTION-RSP status %04X (%q), want 0000", st, comment)
		}
		e := scu.wait(t, "n-event-report", 60*time.Second)
		checkReport(t, e, req.TransactionUID, nil, map[string]int{
			objs[0].SOPInstanceUID: reasonProcessingFailure, objs[1].SOPInstanceUID: reasonProcessingFailure,
		})
		if c := countSpool(t, g.SpoolDir); c.Queued != len(objs) {
			t.Errorf("spool: %v; want the %d objects still queued", c, len(objs))
		}
		waitMetric(t, g, 1, "dicomgw_commitment_reports_total", `result="failures"`, `via="new"`)
	})

	// An instance dead-lettered (retried for 1 s against an upstream that
	// is down) fails with 0110, at once rather than at the timeout.
	t.Run("dead-lettered", func(t *testing.T) {
		t.Parallel()
		listen := freePort(t)
		g := startGateway(t, t.TempDir(), "--stow-url", "http://127.0.0.1:1/dicom-web", "--retry-min", "100ms", "--retry-max", "200ms",
			"--retry-for", "1s", "--remote-ae", "STGSCU=127.0.0.1:"+strconv.Itoa(listen))
		objs := studyObjects(t, t.TempDir(), 1, 2<<10)
		storeAll(t, g.Addr, "STGSCU", objs)
		req := request(g, "STGSCU", refsOf(objs))
		req.ListenPort = listen
		scu := startSCU(t, req)
		if st, comment := scu.actionStatus(t); st != 0 {
			t.Fatalf("N-ACTION-RSP status %04X (%q), want 0000", st, comment)
		}
		e := scu.wait(t, "n-event-report", 60*time.Second)
		checkReport(t, e, req.TransactionUID, nil, map[string]int{objs[0].SOPInstanceUID: reasonProcessingFailure})
		if c := countSpool(t, g.SpoolDir); c.Dead != 1 {
			t.Errorf("spool: %v; want the object dead-lettered", c)
		}
	})

	// A request naming a received instance with another SOP class: 0119
	// for it, success for the other.
	t.Run("class conflict", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir(), "--commitment", "received", "--remote-ae", "STGSCU="+nowhere(t))
		objs := studyObjects(t, t.TempDir(), 2, 2<<10)
		storeAll(t, g.Addr, "STGSCU", objs)
		refs := refsOf(objs)
		refs[1].Class = sopCTImage
		req := request(g, "STGSCU", refs)
		req.LingerMs = 15000
		scu := startSCU(t, req)
		if st, comment := scu.actionStatus(t); st != 0 {
			t.Fatalf("N-ACTION-RSP status %04X (%q), want 0000", st, comment)
		}
		e := scu.wait(t, "n-event-report", 15*time.Second)
		checkReport(t, e, req.TransactionUID, []string{objs[0].SOPInstanceUID}, map[string]int{objs[1].SOPInstanceUID: reasonClassConflict})
	})

	// --commitment off: the Storage Commitment context is rejected, so
	// no N-ACTION can be sent (dcmjs-dimse skips it) and nothing is
	// answered.
	t.Run("off", func(t *testing.T) {
		t.Parallel()
		g := startGateway(t, t.TempDir(), "--commitment", "off", "--remote-ae", "STGSCU="+nowhere(t))
		scu := startSCU(t, request(g, "STGSCU", []scuRef{{Class: sopSecondaryCapture, Instance: harness.NewUID()}}))
		e := scu.wait(t, "association-accepted", 30*time.Second)
		if e.Accepted {
			t.Errorf("--commitment off: the Storage Commitment context was accepted")
		}
		scu.wait(t, "released", 30*time.Second)
		if r := scu.Events("n-action-rsp"); len(r) != 0 {
			t.Errorf("--commitment off: N-ACTION answered: %v", r)
		}
		m, err := g.Scrape()
		if err != nil {
			t.Fatal(err)
		}
		if n := m.Sum("dicomgw_commitment_requests_total"); n != 0 {
			t.Errorf("--commitment off: dicomgw_commitment_requests_total sums to %v", n)
		}
	})
}
