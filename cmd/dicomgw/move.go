package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/part10"
	"github.com/dicomgw/dicomgw/pkg/qr"
)

// mover answers C-MOVE (dimse.MoveHandler): the instances the identifier
// selects are listed with QIDO-RS, each retrieved with WADO-RS into a
// temporary file (never held in memory), then sent with C-STORE to the
// move destination, found in --remote-ae.
type mover struct {
	dest    string
	client  *qr.Client
	remote  func(ae string) (remoteAE, bool)
	tmp     string // where retrieved files wait ("": the system's)
	sem     chan struct{}
	log     *slog.Logger
	moves   *prometheus.CounterVec
	stored  *prometheus.CounterVec
	elapsed prometheus.Histogram
}

// maxMoves bounds the retrievals run at once; more wait their turn.
const maxMoves = 4

func newMover(dest string, client *qr.Client, remote func(string) (remoteAE, bool), tmp string, log *slog.Logger, reg prometheus.Registerer) *mover {
	m := &mover{dest: dest, client: client, remote: remote, tmp: tmp, sem: make(chan struct{}, maxMoves), log: log,
		moves: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_qr_retrievals_total",
			Help: "C-MOVE retrievals by outcome: success, failures (some sub-operations failed), refused (unknown destination, bad identifier), cancelled, failed (the DICOMweb server).",
		}, []string{"outcome"}),
		stored: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_qr_retrieved_instances_total",
			Help: "Instances of C-MOVE retrievals by result: sent (C-STORE success or warning to the move destination) or failed.",
		}, []string{"result"}),
		elapsed: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dicomgw_qr_retrieval_duration_seconds",
			Help:    "Time from a C-MOVE request to its final response.",
			Buckets: prometheus.ExponentialBuckets(0.05, 2, 14),
		}),
	}
	for _, o := range []string{"success", "failures", "refused", "cancelled", "failed"} {
		m.moves.WithLabelValues(o)
	}
	m.stored.WithLabelValues("sent")
	m.stored.WithLabelValues("failed")
	if reg != nil {
		reg.MustRegister(m.moves, m.stored, m.elapsed)
	}
	return m
}

// retrieved is an instance waiting in a temporary file.
type retrieved struct {
	inst       qr.Instance
	path       string
	ts, class  string
	dataOffset int64
}

func (mv *mover) Move(ctx context.Context, req *dimse.MoveRequest, progress func(dimse.Progress) error) (p dimse.Progress, err error) {
	start := time.Now()
	outcome := "failed"
	defer func() {
		mv.moves.WithLabelValues(outcome).Inc()
		mv.elapsed.Observe(time.Since(start).Seconds())
	}()
	var r remoteAE
	if req.Sender == nil { // C-MOVE: to a destination of ours
		var ok bool
		if r, ok = mv.remote(req.Destination); !ok {
			outcome = "refused"
			return p, &dimse.StatusError{Status: dimse.StatusMoveDestinationUnknown, Comment: "move destination not in --remote-ae"}
		}
	}
	model := qr.StudyRoot
	if req.SOPClassUID == dimse.PatientRootQueryMove || req.SOPClassUID == dimse.PatientRootQueryGet {
		model = qr.PatientRoot
	}
	q, err := qr.ParseQuery(model, req.TransferSyntaxUID, req.Identifier)
	if err != nil {
		outcome = "refused"
		var qe *qr.Error
		if errors.As(err, &qe) {
			return p, &dimse.StatusError{Status: dimse.Status(qe.Status), Comment: qe.Reason, Err: err}
		}
		return p, err
	}
	select {
	case mv.sem <- struct{}{}:
		defer func() { <-mv.sem }()
	case <-ctx.Done():
		outcome = "cancelled"
		return p, ctx.Err()
	}
	insts, err := mv.client.Instances(ctx, q)
	if err != nil {
		var qe *qr.Error
		if errors.As(err, &qe) {
			outcome = "refused"
			return p, &dimse.StatusError{Status: dimse.Status(qe.Status), Comment: qe.Reason, Err: err}
		}
		if ctx.Err() != nil {
			outcome = "cancelled"
			return p, ctx.Err()
		}
		return p, &dimse.StatusError{Status: dimse.StatusUnableToProcess, Comment: "DICOMweb server failed", Err: err}
	}
	p.Remaining = len(insts)
	dir, err := os.MkdirTemp(mv.tmp, "dicomgw-move-")
	if err != nil {
		return p, &dimse.StatusError{Status: dimse.StatusUnableToSubOperate, Comment: "no room to retrieve", Err: err}
	}
	defer os.RemoveAll(dir)
	// Retrieve everything first: the association to the destination
	// proposes a context for each SOP class and transfer syntax found.
	var files []retrieved
	fail := func(in qr.Instance, why error) {
		p.Remaining--
		p.Failed++
		p.FailedUIDs = append(p.FailedUIDs, in.SOPInstance)
		mv.stored.WithLabelValues("failed").Inc()
		mv.log.Warn("C-MOVE: instance not sent", "sop_instance", in.SOPInstance, "destination", req.Destination, "err", why)
	}
	for i, in := range insts {
		if ctx.Err() != nil {
			outcome = "cancelled"
			return p, ctx.Err()
		}
		f, err := mv.fetch(ctx, dir, i, in)
		if err != nil {
			fail(in, err)
			if perr := progress(p); perr != nil {
				return p, perr
			}
			continue
		}
		files = append(files, f)
	}
	if len(files) > 0 {
		if err := mv.send(ctx, req, r, files, &p, progress, fail); err != nil {
			if ctx.Err() != nil {
				outcome = "cancelled"
			}
			return p, err
		}
	}
	switch {
	case p.Failed > 0:
		outcome = "failures"
	default:
		outcome = "success"
	}
	return p, nil
}

// fetch retrieves one instance into dir and reads its file meta.
func (mv *mover) fetch(ctx context.Context, dir string, i int, in qr.Instance) (retrieved, error) {
	path := filepath.Join(dir, fmt.Sprintf("%06d.dcm", i)) // never a UID: a path is ours
	f, err := os.OpenFile(path, os.O_CREATE|os.O_EXCL|os.O_RDWR, 0o600)
	if err != nil {
		return retrieved{}, err
	}
	defer f.Close()
	if _, err := mv.client.Retrieve(ctx, in, f); err != nil {
		return retrieved{}, err
	}
	g, err := part10.ReadGroup(f)
	if err != nil {
		return retrieved{}, fmt.Errorf("WADO-RS answer is not a Part 10 file: %w", err)
	}
	text := func(e uint16) string { return strings.TrimRight(string(g.Elements[e]), " \x00") }
	rt := retrieved{inst: in, path: path, ts: text(0x0010), class: text(0x0002), dataOffset: g.DataOffset}
	if rt.ts == "" || rt.class == "" {
		return retrieved{}, errors.New("WADO-RS answer without its transfer syntax or SOP class")
	}
	if text(0x0003) != in.SOPInstance {
		return retrieved{}, fmt.Errorf("WADO-RS answered another instance (%.64q)", text(0x0003))
	}
	return rt, nil
}

// send stores the files: a C-GET's back on the requester's association,
// a C-MOVE's on one association to the destination.
func (mv *mover) send(ctx context.Context, req *dimse.MoveRequest, r remoteAE, files []retrieved, p *dimse.Progress,
	progress func(dimse.Progress) error, fail func(qr.Instance, error)) error {
	if req.Sender != nil {
		return mv.storeAll(ctx, req.Sender, files, p, progress, fail)
	}
	type pair struct{ class, ts string }
	seen := map[pair]bool{}
	var ctxs []dimse.ProposedContext
	for _, f := range files {
		k := pair{f.class, f.ts}
		if !seen[k] && len(ctxs) < 128 {
			seen[k] = true
			ctxs = append(ctxs, dimse.ProposedContext{AbstractSyntax: f.class, TransferSyntaxes: []string{f.ts}})
		}
	}
	cl, err := dimse.Dial(ctx, r.Addr, dimse.DialConfig{CallingAE: req.CalledAE, CalledAE: req.Destination, Contexts: ctxs,
		Timeout: r.Timeout, TLS: r.TLS})
	if err != nil {
		for _, f := range files {
			fail(f.inst, err)
		}
		return progress(*p)
	}
	stop := context.AfterFunc(ctx, cl.Interrupt)
	defer stop()
	if err := mv.storeAll(ctx, cl, files, p, progress, fail); err != nil {
		cl.Abort()
		return err
	}
	if err := cl.Release(); err != nil {
		mv.log.Debug("C-MOVE: release of the destination's association", "err", err)
	}
	return nil
}

// storeAll sends each file with to, reporting progress after each.
func (mv *mover) storeAll(ctx context.Context, to dimse.Storer, files []retrieved, p *dimse.Progress,
	progress func(dimse.Progress) error, fail func(qr.Instance, error)) error {
	for _, f := range files {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err := mv.storeOne(to, f); err != nil {
			fail(f.inst, err)
		} else {
			p.Remaining--
			p.Completed++
			mv.stored.WithLabelValues("sent").Inc()
		}
		if err := progress(*p); err != nil {
			return err
		}
	}
	return nil
}

func (mv *mover) storeOne(to dimse.Storer, f retrieved) error {
	if _, ok := to.AcceptedTransferSyntax(f.class); !ok {
		return fmt.Errorf("no accepted context for its SOP class %s", f.class)
	}
	file, err := os.Open(f.path)
	if err != nil {
		return err
	}
	defer file.Close()
	if _, err := file.Seek(f.dataOffset, 0); err != nil {
		return err
	}
	rsp, err := to.Store(f.class, f.inst.SOPInstance, f.ts, file)
	if err != nil {
		return err
	}
	if rsp.Status.Category() == "failure" {
		return fmt.Errorf("C-STORE answered %v", rsp.Status)
	}
	return nil
}
