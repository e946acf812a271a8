package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/ledger"
	"github.com/dicomgw/dicomgw/pkg/pdu"
	"github.com/dicomgw/dicomgw/pkg/stgcmt"
)

// Storage commitment (PS3.4 J), as the gateway means it. A request is
// recorded in the ledger before its N-ACTION-RSP says Success, and is then
// decided from the ledger: with --commitment delivered, an instance is
// committed once every destination it was routed to has confirmed it
// (received copies of the instance count, however long ago); with
// --commitment received, once it is durable in the spool. An instance the
// gateway never received, one dead-lettered, or one not settled by the
// request's deadline (--commitment-timeout) is a failure. The answer is
// recorded, then reported: on the requester's association while it holds
// it open, else on one the gateway opens to the --remote-ae address of the
// requester's AE title, retried with backoff for reportRetryFor.

const (
	// unknownGrace is how long an instance the ledger does not know may
	// still arrive before it is reported as never received (0112): a
	// modality may send the request on one association while the last
	// C-STOREs of another are being committed.
	unknownGrace = 5 * time.Second
	// evaluateEvery re-examines waiting requests even without news (a
	// round also wakes for the next grace, deadline or report due).
	evaluateEvery = 30 * time.Second
	// A report that cannot be sent is tried again after a growing wait,
	// for at most reportRetryFor after the answer was decided.
	reportRetryMin = 10 * time.Second
	reportRetryMax = 10 * time.Minute
	reportRetryFor = 24 * time.Hour
	// maxReportSenders bounds the reports being sent at once.
	maxReportSenders = 8
	// roundGap spaces the rounds a burst of news would run back to back:
	// each reads the ledger for every waiting request.
	roundGap = 200 * time.Millisecond
)

type commitKey struct{ callingAE, txUID string }

// openCommitment is a request not reported yet, as the manager holds it.
type openCommitment struct {
	c        ledger.Commitment
	reporter *dimse.Reporter // the requester's association, while it may be open
	sending  bool
}

// commitments is the storage commitment manager: dimse's CommitmentHandler,
// and the goroutine that decides and reports.
type commitments struct {
	led     *ledger.Ledger
	log     *slog.Logger
	m       *commitMetrics
	mode    string // "delivered" or "received"
	timeout time.Duration
	remotes atomic.Pointer[map[string]remoteAE]
	now     func() time.Time
	poke    chan struct{}
	sem     chan struct{}
	wg      sync.WaitGroup

	mu   sync.Mutex
	open map[commitKey]*openCommitment
}

func newCommitments(led *ledger.Ledger, mode string, timeout time.Duration, remotes map[string]remoteAE, m *commitMetrics, log *slog.Logger) *commitments {
	c := &commitments{led: led, log: log, m: m, mode: mode, timeout: timeout, now: time.Now,
		poke: make(chan struct{}, 1), sem: make(chan struct{}, maxReportSenders), open: map[commitKey]*openCommitment{}}
	c.setRemotes(remotes)
	m.source = c.openStats
	return c
}

// setRemotes replaces the --remote-ae table (SIGHUP).
func (c *commitments) setRemotes(r map[string]remoteAE) { c.remotes.Store(&r) }

func (c *commitments) remote(ae string) (remoteAE, bool) {
	r, ok := (*c.remotes.Load())[ae]
	return r, ok
}

// news says that an instance was received or settled: waiting requests
// are looked at again.
func (c *commitments) news() {
	select {
	case c.poke <- struct{}{}:
	default:
	}
}

// refuse is an N-ACTION-RSP failure, counted.
func (c *commitments) refuse(outcome string, st dimse.Status, comment string, err error) error {
	c.m.requests.WithLabelValues(outcome).Inc()
	return &dimse.StatusError{Status: st, Comment: comment, Err: err}
}

// RequestCommitment records a request (dimse.CommitmentHandler). It is
// refused at once when its report could not be sent anywhere but on the
// requester's own association, which it may release before the answer is
// decided: a request accepted must be answered.
func (c *commitments) RequestCommitment(req *dimse.CommitmentRequest) error {
	if _, ok := c.remote(req.CallingAE); !ok {
		c.log.Warn("storage commitment request refused: its AE title has no --remote-ae, so a report could not reach it once its association ends",
			"calling_ae", req.CallingAE, "assoc", req.AssociationID)
		return c.refuse("refused", dimse.StatusNotAuthorized, "calling AE has no --remote-ae: no way to send the report", nil)
	}
	r, err := stgcmt.DecodeRequest(req.DataSet, req.TransferSyntaxUID)
	if err != nil {
		var se *stgcmt.Error
		if errors.As(err, &se) {
			c.log.Warn("storage commitment request refused: malformed", "calling_ae", req.CallingAE, "assoc", req.AssociationID, "err", err)
			return c.refuse("malformed", dimse.Status(se.Status), se.Reason, err)
		}
		return c.refuse("malformed", dimse.StatusProcessingFailure, "request data set cannot be read", err)
	}
	now := c.now()
	lc := ledger.Commitment{
		CallingAE: req.CallingAE, TransactionUID: r.TransactionUID, CalledAE: req.CalledAE, Peer: req.RemoteAddr,
		Mode: c.mode, RequestedAt: now, Deadline: now.Add(c.timeout), State: ledger.CommitWaiting,
	}
	for _, ref := range r.Refs {
		lc.Refs = append(lc.Refs, ledger.CommitRef{SOPClassUID: ref.SOPClassUID, SOPInstanceUID: ref.SOPInstanceUID})
	}
	if err := c.led.AddCommitment(lc); err != nil {
		c.log.Error("storage commitment request refused: it cannot be recorded", "calling_ae", req.CallingAE, "err", err)
		return c.refuse("failed", dimse.StatusProcessingFailure, "the request cannot be recorded", err)
	}
	c.mu.Lock()
	c.open[commitKey{lc.CallingAE, lc.TransactionUID}] = &openCommitment{c: lc, reporter: req.Reporter}
	c.mu.Unlock()
	c.m.requests.WithLabelValues("accepted").Inc()
	c.log.Info("storage commitment requested", "calling_ae", req.CallingAE, "transaction_uid", r.TransactionUID,
		"instances", len(lc.Refs), "mode", c.mode, "deadline", lc.Deadline.Format(time.RFC3339), "assoc", req.AssociationID)
	c.news()
	return nil
}

// load takes over the requests left open by the last run: none is
// forgotten, and none reported twice.
func (c *commitments) load() error {
	open, err := c.led.OpenCommitments()
	if err != nil {
		return err
	}
	c.mu.Lock()
	for _, lc := range open {
		c.open[commitKey{lc.CallingAE, lc.TransactionUID}] = &openCommitment{c: lc}
	}
	c.mu.Unlock()
	if len(open) > 0 {
		c.log.Info("storage commitment requests open from the last run", "requests", len(open))
	}
	return nil
}

// run decides and reports until ctx ends; reports being sent are waited
// for (each is bounded by its remote's timeout).
func (c *commitments) run(ctx context.Context) {
	defer c.wg.Wait()
	t := time.NewTimer(evaluateEvery)
	defer t.Stop()
	for {
		next := c.round(ctx)
		select {
		case <-ctx.Done():
			return
		case <-time.After(roundGap):
		}
		wait := evaluateEvery
		if !next.IsZero() {
			wait = min(max(next.Sub(c.now()), 0), evaluateEvery)
		}
		t.Reset(wait)
		select {
		case <-ctx.Done():
			return
		case <-c.poke:
		case <-t.C:
		}
	}
}

// round decides what can be decided and starts the reports that are due.
// It returns when the next round is due without news: the first grace to
// end, deadline or report attempt due (zero: none).
func (c *commitments) round(ctx context.Context) (next time.Time) {
	soonest := func(t time.Time) {
		if next.IsZero() || t.Before(next) {
			next = t
		}
	}
	c.mu.Lock()
	var waiting, due []*openCommitment
	now := c.now()
	for _, oc := range c.open {
		switch {
		case oc.c.State == ledger.CommitWaiting:
			waiting = append(waiting, oc)
			if g := oc.c.RequestedAt.Add(unknownGrace); now.Before(g) {
				soonest(g)
			}
			soonest(oc.c.Deadline)
		case oc.sending:
		case !now.Before(oc.c.NextAttempt):
			due = append(due, oc)
		default:
			soonest(oc.c.NextAttempt)
		}
	}
	c.mu.Unlock()
	if len(waiting) > 0 {
		// What was received before this round is in the ledger.
		if err := c.led.Sync(); err != nil {
			c.log.Error("storage commitment: the ledger cannot be read up to date; trying again", "err", err)
			return now.Add(time.Second)
		}
	}
	for _, oc := range waiting {
		if ctx.Err() != nil {
			return next
		}
		results, decided, err := c.evaluate(oc.c, now)
		if err != nil {
			c.log.Error("storage commitment: cannot look its instances up; trying again", "transaction_uid", oc.c.TransactionUID, "err", err)
			continue
		}
		if !decided {
			continue
		}
		if err := c.led.DecideCommitment(oc.c.CallingAE, oc.c.TransactionUID, results, now); err != nil {
			c.log.Error("storage commitment: cannot record its answer; trying again", "transaction_uid", oc.c.TransactionUID, "err", err)
			continue
		}
		c.mu.Lock()
		oc.c.State, oc.c.Results, oc.c.DecidedAt = ledger.CommitReporting, results, now
		c.mu.Unlock()
		due = append(due, oc)
	}
	for _, oc := range due {
		c.mu.Lock()
		if oc.sending {
			c.mu.Unlock()
			continue
		}
		oc.sending = true
		c.mu.Unlock()
		select {
		case c.sem <- struct{}{}:
		case <-ctx.Done():
			c.mu.Lock()
			oc.sending = false
			c.mu.Unlock()
			return next
		}
		c.wg.Go(func() {
			defer func() { <-c.sem }()
			c.report(ctx, oc)
		})
	}
	return next
}

// evaluate decides each instance of a request, or says it cannot yet.
func (c *commitments) evaluate(lc ledger.Commitment, now time.Time) ([]ledger.CommitResult, bool, error) {
	uids := make([]string, len(lc.Refs))
	for i, r := range lc.Refs {
		uids[i] = r.SOPInstanceUID
	}
	objs, err := c.led.InstancesBySOP(uids)
	if err != nil {
		return nil, false, err
	}
	late := !now.Before(lc.Deadline)
	results := make([]ledger.CommitResult, len(lc.Refs))
	for i, ref := range lc.Refs {
		reason, settled := instanceResult(lc.Mode, ref, objs[ref.SOPInstanceUID], now.Sub(lc.RequestedAt) >= unknownGrace)
		if !settled {
			if !late {
				return nil, false, nil
			}
			reason = stgcmt.ReasonProcessingFailure // not settled in time
		}
		results[i] = ledger.CommitResult{CommitRef: ref, Reason: reason}
	}
	return results, true, nil
}

// instanceResult decides one instance from the objects received with its
// UID: committed (0) if one of them is where it was meant to go (delivered
// to every destination it was routed to or, in mode "received", in the
// ledger at all); settled false while one may still be. The mode is the
// request's: what was promised when it was accepted.
func instanceResult(mode string, ref ledger.CommitRef, objs []ledger.ObjectState, graceOver bool) (reason uint16, settled bool) {
	if len(objs) == 0 {
		return stgcmt.ReasonNoSuchObjectInstance, graceOver
	}
	var pending, sameClass bool
	for _, o := range objs {
		if o.SOPClassUID != ref.SOPClassUID {
			continue
		}
		sameClass = true
		if mode == "received" {
			return 0, true
		}
		all, dead := len(o.Deliveries) > 0, false
		for _, d := range o.Deliveries {
			switch d.State {
			case ledger.StateDelivered:
			case ledger.StateDead:
				all, dead = false, true
			default:
				all = false
			}
		}
		if all {
			return 0, true
		}
		if !dead {
			pending = true
		}
	}
	switch {
	case pending:
		return 0, false
	case !sameClass:
		// PS3.4 J.3.3: received, but only as another SOP class.
		return stgcmt.ReasonClassInstanceConflict, true
	}
	return stgcmt.ReasonProcessingFailure, true // dead-lettered
}

// report sends one decided answer and records what became of it.
func (c *commitments) report(ctx context.Context, oc *openCommitment) {
	c.mu.Lock()
	lc, rep := oc.c, oc.reporter
	c.mu.Unlock()
	rpt := &stgcmt.Report{TransactionUID: lc.TransactionUID}
	for _, r := range lc.Results {
		ref := stgcmt.Ref{SOPClassUID: r.SOPClassUID, SOPInstanceUID: r.SOPInstanceUID}
		if r.Reason == 0 {
			rpt.Success = append(rpt.Success, ref)
		} else {
			rpt.Failed = append(rpt.Failed, stgcmt.Failure{Ref: ref, Reason: r.Reason})
		}
	}
	via, err := "", error(nil)
	if rep != nil {
		via, err = "same", c.sendSame(ctx, rep, rpt)
		if errors.Is(err, dimse.ErrAssociationGone) {
			c.mu.Lock()
			oc.reporter = nil
			c.mu.Unlock()
			rep = nil
		}
	}
	if rep == nil {
		via, err = "new", c.sendNew(ctx, lc, rpt)
	}
	now := c.now()
	if err == nil {
		if lerr := c.led.CommitmentReported(lc.CallingAE, lc.TransactionUID, via, now); lerr != nil {
			// Sent, but not recorded: after a restart it would be sent
			// again, which the requester takes as the same answer.
			c.log.Error("storage commitment reported, but that cannot be recorded", "transaction_uid", lc.TransactionUID, "err", lerr)
		}
		c.m.reports.WithLabelValues(resultLabel(rpt), via).Inc()
		c.m.instances.WithLabelValues("committed").Add(float64(len(rpt.Success)))
		for _, f := range rpt.Failed {
			c.m.instances.WithLabelValues(reasonLabel(f.Reason)).Inc()
		}
		c.log.Info("storage commitment reported", "calling_ae", lc.CallingAE, "transaction_uid", lc.TransactionUID, "via", via,
			"committed", len(rpt.Success), "failed", len(rpt.Failed), "mode", lc.Mode)
		c.mu.Lock()
		delete(c.open, commitKey{lc.CallingAE, lc.TransactionUID})
		c.mu.Unlock()
		return
	}
	if ctx.Err() != nil { // shutting down: tried again at the next start
		c.mu.Lock()
		oc.sending = false
		c.mu.Unlock()
		return
	}
	c.m.reportFailures.Inc()
	attempts := lc.Attempts + 1
	if now.Sub(lc.DecidedAt) >= reportRetryFor {
		reason := fmt.Sprintf("not sent for %v: %v", reportRetryFor, err)
		if lerr := c.led.CommitmentAbandoned(lc.CallingAE, lc.TransactionUID, reason); lerr != nil {
			c.log.Error("storage commitment report abandoned, but that cannot be recorded", "transaction_uid", lc.TransactionUID, "err", lerr)
		}
		c.m.abandoned.Inc()
		c.log.Error("storage commitment report abandoned: the requester was never told", "calling_ae", lc.CallingAE,
			"transaction_uid", lc.TransactionUID, "attempts", attempts, "err", err)
		c.mu.Lock()
		delete(c.open, commitKey{lc.CallingAE, lc.TransactionUID})
		c.mu.Unlock()
		return
	}
	wait := min(reportRetryMin<<min(attempts-1, 16), reportRetryMax)
	next := now.Add(wait)
	if lerr := c.led.CommitmentAttempted(lc.CallingAE, lc.TransactionUID, attempts, next, err.Error()); lerr != nil {
		c.log.Error("storage commitment report attempt cannot be recorded", "transaction_uid", lc.TransactionUID, "err", lerr)
	}
	c.log.Warn("storage commitment report not sent; trying again", "calling_ae", lc.CallingAE, "transaction_uid", lc.TransactionUID,
		"attempts", attempts, "next_in", wait, "err", err)
	c.mu.Lock()
	oc.c.Attempts, oc.c.NextAttempt, oc.c.LastError, oc.sending = attempts, next, err.Error(), false
	c.mu.Unlock()
	c.news() // the run loop learns when this one is due
}

// sendSame sends the report on the requester's own association.
func (c *commitments) sendSame(ctx context.Context, rep *dimse.Reporter, rpt *stgcmt.Report) error {
	data, err := stgcmt.EncodeReport(rpt, rep.TransferSyntax())
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, defaultRemoteTimeout)
	defer cancel()
	st, err := rep.Report(ctx, rpt.EventTypeID(), data)
	if err != nil {
		return err
	}
	if st.Category() == "failure" {
		return fmt.Errorf("the requester answered the report with %v", st)
	}
	return nil
}

// sendNew opens an association to the requester, as the SCP of storage
// commitment (PS3.4 J.3.3: role selection), sends the report and releases.
func (c *commitments) sendNew(ctx context.Context, lc ledger.Commitment, rpt *stgcmt.Report) error {
	r, ok := c.remote(lc.CallingAE)
	if !ok {
		return fmt.Errorf("no --remote-ae for %s any more", lc.CallingAE)
	}
	ctx, cancel := context.WithTimeout(ctx, 3*r.Timeout)
	defer cancel()
	cl, err := dimse.Dial(ctx, r.Addr, dimse.DialConfig{
		CallingAE: lc.CalledAE, CalledAE: lc.CallingAE, Timeout: r.Timeout, TLS: r.TLS,
		Contexts: []dimse.ProposedContext{{AbstractSyntax: stgcmt.SOPClassUID,
			TransferSyntaxes: []string{"1.2.840.10008.1.2.1", "1.2.840.10008.1.2"}}},
		RoleSelections: []pdu.RoleSelection{{SOPClassUID: stgcmt.SOPClassUID, SCU: false, SCP: true}},
	})
	if err != nil {
		return fmt.Errorf("association with %s at %s: %w", lc.CallingAE, r.Addr, err)
	}
	stop := context.AfterFunc(ctx, cl.Interrupt)
	defer stop()
	ts, ok := cl.AcceptedTransferSyntax(stgcmt.SOPClassUID)
	if !ok {
		cl.Abort()
		return fmt.Errorf("%s at %s accepted no presentation context for storage commitment", lc.CallingAE, r.Addr)
	}
	for _, rs := range cl.Accepted().UserInfo.RoleSelections {
		if rs.SOPClassUID == stgcmt.SOPClassUID && !rs.SCP {
			// An acceptor that does not answer role selection is taken to
			// accept the report anyway (many do not negotiate roles).
			cl.Abort()
			return fmt.Errorf("%s at %s refused us the SCP role of storage commitment", lc.CallingAE, r.Addr)
		}
	}
	data, err := stgcmt.EncodeReport(rpt, ts)
	if err != nil {
		cl.Abort()
		return err
	}
	rsp, err := cl.EventReport(stgcmt.SOPClassUID, stgcmt.SOPInstanceUID, rpt.EventTypeID(), data)
	if err != nil {
		cl.Abort()
		return fmt.Errorf("report to %s at %s: %w", lc.CallingAE, r.Addr, err)
	}
	if err := cl.Release(); err != nil {
		c.log.Debug("storage commitment: release after the report", "err", err)
	}
	if rsp.Status.Category() == "failure" {
		return fmt.Errorf("%s answered the report with %v", lc.CallingAE, rsp.Status)
	}
	return nil
}

func resultLabel(r *stgcmt.Report) string {
	if len(r.Failed) > 0 {
		return "failures"
	}
	return "success"
}

func reasonLabel(reason uint16) string {
	switch reason {
	case stgcmt.ReasonNoSuchObjectInstance:
		return "no_such_instance"
	case stgcmt.ReasonClassInstanceConflict:
		return "class_instance_conflict"
	}
	return "processing_failure"
}

// openStats counts the open requests by state, with the oldest's age.
func (c *commitments) openStats() map[string]openStat {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	out := map[string]openStat{ledger.CommitWaiting: {}, ledger.CommitReporting: {}}
	for _, oc := range c.open {
		s := out[oc.c.State]
		s.n++
		since := oc.c.RequestedAt
		if oc.c.State == ledger.CommitReporting {
			since = oc.c.DecidedAt
		}
		s.oldest = max(s.oldest, now.Sub(since))
		out[oc.c.State] = s
	}
	return out
}
