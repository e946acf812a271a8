package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/ledger"
	"github.com/dicomgw/dicomgw/pkg/stgcmt"
)

const ctClass = "1.2.840.10008.5.1.4.1.1.2"

func openTestLedger(t *testing.T) *ledger.Ledger {
	t.Helper()
	led, err := ledger.Open(ledger.Config{Path: filepath.Join(t.TempDir(), "ledger.db")}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { led.Close() })
	return led
}

// received puts an object with SOP instance sop, routed to dests, in the
// ledger.
func received(t *testing.T, led *ledger.Ledger, id, class, sop string, at time.Time, dests ...string) {
	t.Helper()
	if err := led.Ensure([]ledger.Object{{ID: id, SOPClassUID: class, SOPInstanceUID: sop, Received: at, Destinations: dests}}); err != nil {
		t.Fatal(err)
	}
}

// TestCommitmentEvaluate: how each instance of a request is decided from
// the ledger, in both modes (the README's table).
func TestCommitmentEvaluate(t *testing.T) {
	led := openTestLedger(t)
	t0 := time.Date(2026, 1, 1, 8, 0, 0, 0, time.UTC)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	received(t, led, "o1", ctClass, "1.9.1", t0.Add(-30*24*time.Hour), "a", "b") // delivered everywhere, a month ago
	must(led.Delivered("o1", "a", t0))
	must(led.Delivered("o1", "b", t0))
	received(t, led, "o2", ctClass, "1.9.2", t0, "a", "b") // one of two delivered
	must(led.Delivered("o2", "a", t0))
	received(t, led, "o3", ctClass, "1.9.3", t0, "a") // dead
	must(led.Dead("o3", "a", "refused", t0))
	received(t, led, "o4", "1.2.840.10008.5.1.4.1.1.4", "1.9.4", t0, "a") // received as MR
	must(led.Delivered("o4", "a", t0))
	received(t, led, "o5a", ctClass, "1.9.5", t0, "a") // dead once, delivered when sent again
	must(led.Dead("o5a", "a", "refused", t0))
	received(t, led, "o5b", ctClass, "1.9.5", t0.Add(time.Minute), "a")
	must(led.Delivered("o5b", "a", t0))
	received(t, led, "o6a", ctClass, "1.9.6", t0, "a") // dead once, pending again
	must(led.Dead("o6a", "a", "refused", t0))
	received(t, led, "o6b", ctClass, "1.9.6", t0.Add(time.Minute), "a")

	refs := func(sops ...string) []ledger.CommitRef {
		var out []ledger.CommitRef
		for _, s := range sops {
			out = append(out, ledger.CommitRef{SOPClassUID: ctClass, SOPInstanceUID: s})
		}
		return out
	}
	req := ledger.Commitment{RequestedAt: t0, Deadline: t0.Add(time.Hour)}
	for _, c := range []struct {
		name    string
		mode    string
		sops    []string
		at      time.Time
		decided bool
		want    map[string]uint16
	}{
		{"delivered everywhere, long ago", "delivered", []string{"1.9.1"}, t0, true, map[string]uint16{"1.9.1": 0}},
		{"one destination left", "delivered", []string{"1.9.1", "1.9.2"}, t0.Add(time.Minute), false, nil},
		{"one destination left, past the deadline", "delivered", []string{"1.9.1", "1.9.2"}, t0.Add(time.Hour), true,
			map[string]uint16{"1.9.1": 0, "1.9.2": stgcmt.ReasonProcessingFailure}},
		{"dead", "delivered", []string{"1.9.3"}, t0, true, map[string]uint16{"1.9.3": stgcmt.ReasonProcessingFailure}},
		{"another class", "delivered", []string{"1.9.4"}, t0, true, map[string]uint16{"1.9.4": stgcmt.ReasonClassInstanceConflict}},
		{"sent again and delivered", "delivered", []string{"1.9.5"}, t0, true, map[string]uint16{"1.9.5": 0}},
		{"sent again, pending", "delivered", []string{"1.9.6"}, t0, false, nil},
		{"never received, within the grace", "delivered", []string{"1.9.1", "1.9.404"}, t0.Add(time.Second), false, nil},
		{"never received", "delivered", []string{"1.9.1", "1.9.404"}, t0.Add(unknownGrace), true,
			map[string]uint16{"1.9.1": 0, "1.9.404": stgcmt.ReasonNoSuchObjectInstance}},
		{"received mode: spooled is enough", "received", []string{"1.9.2", "1.9.6"}, t0, true, map[string]uint16{"1.9.2": 0, "1.9.6": 0}},
		{"received mode: never received", "received", []string{"1.9.404"}, t0.Add(unknownGrace), true,
			map[string]uint16{"1.9.404": stgcmt.ReasonNoSuchObjectInstance}},
		{"received mode: another class", "received", []string{"1.9.4"}, t0, true, map[string]uint16{"1.9.4": stgcmt.ReasonClassInstanceConflict}},
	} {
		cm := &commitments{led: led}
		r := req
		r.Mode = c.mode
		r.Refs = refs(c.sops...)
		results, decided, err := cm.evaluate(r, c.at)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if decided != c.decided {
			t.Errorf("%s: decided %v, want %v (%+v)", c.name, decided, c.decided, results)
			continue
		}
		for _, res := range results {
			if want := c.want[res.SOPInstanceUID]; res.Reason != want {
				t.Errorf("%s: %s reason %#04x, want %#04x", c.name, res.SOPInstanceUID, res.Reason, want)
			}
		}
	}
}

// TestCommitmentRefusedWithoutRemoteAE: a request whose report could not
// reach its requester after its association ends is refused (0124), and
// nothing is recorded.
func TestCommitmentRefusedWithoutRemoteAE(t *testing.T) {
	led := openTestLedger(t)
	reg := prometheus.NewPedanticRegistry()
	cm := newCommitments(led, "delivered", time.Hour, map[string]remoteAE{"CT1": {AE: "CT1", Addr: "127.0.0.1:1"}}, newCommitMetrics(reg), slog.New(slog.DiscardHandler))
	err := cm.RequestCommitment(&dimse.CommitmentRequest{CallingAE: "STRANGER", CalledAE: "DICOMGW", TransferSyntaxUID: "1.2.840.10008.1.2.1"})
	se, ok := err.(*dimse.StatusError)
	if !ok || se.Status != dimse.StatusNotAuthorized || !strings.Contains(se.Comment, "--remote-ae") {
		t.Fatalf("request from an AE with no --remote-ae: %v, want 0124 naming --remote-ae", err)
	}
	// A malformed one from a known AE: the codec's status.
	err = cm.RequestCommitment(&dimse.CommitmentRequest{CallingAE: "CT1", CalledAE: "DICOMGW", TransferSyntaxUID: "1.2.840.10008.1.2.1", DataSet: []byte{1, 2, 3}})
	if se, ok := err.(*dimse.StatusError); !ok || se.Status.Category() != "failure" {
		t.Fatalf("malformed request: %v, want a failure status", err)
	}
	open, _ := led.OpenCommitments()
	if len(open) != 0 {
		t.Fatalf("refused requests recorded: %+v", open)
	}
	if v := testutil.ToFloat64(cm.m.requests.WithLabelValues("refused")); v != 1 {
		t.Errorf("refused counted %v, want 1", v)
	}
	if v := testutil.ToFloat64(cm.m.requests.WithLabelValues("malformed")); v != 1 {
		t.Errorf("malformed counted %v, want 1", v)
	}
}

// TestCommitmentReportRetriedThenAbandoned: a report that cannot be sent
// (nobody listens at the requester's address) is recorded as attempted,
// with a growing wait, counted; once it has failed for reportRetryFor it
// is abandoned, counted, and no longer open.
func TestCommitmentReportRetriedThenAbandoned(t *testing.T) {
	led := openTestLedger(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nobody listens there now
	reg := prometheus.NewPedanticRegistry()
	cm := newCommitments(led, "received", time.Hour, map[string]remoteAE{"CT1": {AE: "CT1", Addr: addr, Timeout: time.Second}},
		newCommitMetrics(reg), slog.New(slog.DiscardHandler))
	now := time.Now()
	cm.now = func() time.Time { return now }
	lc := ledger.Commitment{CallingAE: "CT1", TransactionUID: "1.2.3", CalledAE: "DICOMGW", Mode: "received", RequestedAt: now, Deadline: now.Add(time.Hour),
		Refs: []ledger.CommitRef{{SOPClassUID: ctClass, SOPInstanceUID: "1.9.1"}}}
	if err := led.AddCommitment(lc); err != nil {
		t.Fatal(err)
	}
	received(t, led, "o1", ctClass, "1.9.1", now, "a")
	if err := cm.load(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	cm.round(ctx)
	cm.wg.Wait()
	got, _, _ := led.Commitment("CT1", "1.2.3")
	if got.State != ledger.CommitReporting || got.Attempts != 1 || !got.NextAttempt.Equal(now.Add(reportRetryMin)) || !strings.Contains(got.LastError, addr) {
		t.Fatalf("after a failed report: %+v", got)
	}
	for i, wait := range []time.Duration{2 * reportRetryMin, 4 * reportRetryMin} {
		now = got.NextAttempt
		cm.round(ctx)
		cm.wg.Wait()
		got, _, _ = led.Commitment("CT1", "1.2.3")
		if got.Attempts != i+2 || !got.NextAttempt.Equal(now.Add(wait)) {
			t.Fatalf("attempt %d: %+v, want the next in %v", i+2, got, wait)
		}
	}
	// Not due yet: not tried.
	cm.round(ctx)
	cm.wg.Wait()
	if g, _, _ := led.Commitment("CT1", "1.2.3"); g.Attempts != 3 {
		t.Fatalf("tried before it was due: %d attempts", g.Attempts)
	}
	if v := testutil.ToFloat64(cm.m.reportFailures); v != 3 {
		t.Errorf("report failures %v, want 3", v)
	}
	if s := cm.openStats()[ledger.CommitReporting]; s.n != 1 {
		t.Errorf("open reporting %d, want 1", s.n)
	}
	now = got.DecidedAt.Add(reportRetryFor)
	cm.round(ctx)
	cm.wg.Wait()
	got, _, _ = led.Commitment("CT1", "1.2.3")
	if got.State != ledger.CommitAbandoned || !strings.Contains(got.LastError, fmt.Sprint(reportRetryFor)) {
		t.Fatalf("after %v: %+v, want abandoned", reportRetryFor, got)
	}
	if v := testutil.ToFloat64(cm.m.abandoned); v != 1 {
		t.Errorf("abandoned %v, want 1", v)
	}
	if s := cm.openStats()[ledger.CommitReporting]; s.n != 0 {
		t.Errorf("open reporting %d after abandoning, want 0", s.n)
	}
}

// TestSpoolCommitmentsCommand: `dicomgw spool commitments` lists requests
// newest first, with what each is waiting for, from a ledger the daemon
// holds open.
func TestSpoolCommitmentsCommand(t *testing.T) {
	dir, _, _ := spoolWith(t)
	led, err := ledger.Open(ledger.Config{Path: filepath.Join(dir, ledgerFile)}, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer led.Close()
	t0 := time.Now().Add(-time.Hour)
	ref := ledger.CommitRef{SOPClassUID: ctClass, SOPInstanceUID: "1.9.1"}
	for i, tx := range []string{"1.2.1", "1.2.2", "1.2.3"} {
		c := ledger.Commitment{CallingAE: "CT1", TransactionUID: tx, CalledAE: "DICOMGW", Mode: "delivered",
			RequestedAt: t0.Add(time.Duration(i) * time.Minute), Deadline: t0.Add(24 * time.Hour), Refs: []ledger.CommitRef{ref, {SOPClassUID: ctClass, SOPInstanceUID: "1.9.2"}}}
		if err := led.AddCommitment(c); err != nil {
			t.Fatal(err)
		}
	}
	if err := led.DecideCommitment("CT1", "1.2.2", []ledger.CommitResult{{CommitRef: ref}, {CommitRef: ledger.CommitRef{SOPClassUID: ctClass, SOPInstanceUID: "1.9.2"}, Reason: 0x0112}}, t0); err != nil {
		t.Fatal(err)
	}
	if err := led.CommitmentAttempted("CT1", "1.2.2", 2, t0.Add(time.Hour), "association with CT1 at 10.0.0.1:104: connection refused"); err != nil {
		t.Fatal(err)
	}
	if err := led.DecideCommitment("CT1", "1.2.1", []ledger.CommitResult{{CommitRef: ref}}, t0); err != nil {
		t.Fatal(err)
	}
	if err := led.CommitmentReported("CT1", "1.2.1", "same", t0); err != nil {
		t.Fatal(err)
	}
	code, out, errs := runCmd(t, "spool", "commitments", "--spool-dir", dir)
	if code != 0 {
		t.Fatalf("spool commitments: %d %s", code, errs)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 4 || !strings.Contains(lines[1], "1.2.3") || !strings.Contains(lines[1], "waiting") || !strings.Contains(lines[1], "deadline") ||
		!strings.Contains(lines[2], "reporting") || !strings.Contains(lines[2], "2 attempts") || !strings.Contains(lines[2], "connection refused") ||
		!strings.Contains(lines[3], "reported") || !strings.Contains(lines[3], "requester's association") {
		t.Fatalf("spool commitments:\n%s", out)
	}
	code, out, _ = runCmd(t, "spool", "commitments", "--spool-dir", dir, "--json")
	if code != 0 || strings.Count(out, "\n") != 3 || !strings.Contains(out, `"committed":1,"failed":1`) || !strings.Contains(out, `"report_attempts":2`) {
		t.Fatalf("spool commitments --json:\n%s", out)
	}
}
