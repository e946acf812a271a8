package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/dicomgw/dicomgw/pkg/dimse"
	"github.com/dicomgw/dicomgw/pkg/qr"
)

// finder answers C-FIND from the QIDO-RS of --qr-destination
// (dimse.FindHandler).
type finder struct {
	dest     string
	client   *qr.Client
	log      *slog.Logger
	queries  *prometheus.CounterVec
	matches  prometheus.Counter
	duration *prometheus.HistogramVec
}

func newFinder(dest string, client *qr.Client, log *slog.Logger, reg prometheus.Registerer) *finder {
	f := &finder{dest: dest, client: client, log: log,
		queries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_qr_queries_total",
			Help: "C-FIND queries answered from QIDO-RS, by level (PATIENT, STUDY, SERIES, IMAGE; other when unreadable) and outcome (success, cancelled, refused: the identifier, failed: the DICOMweb server).",
		}, []string{"level", "outcome"}),
		matches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_qr_matches_total",
			Help: "Matches returned to C-FIND queries (Pending responses).",
		}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "dicomgw_qr_query_duration_seconds",
			Help:    "Time from a C-FIND request to its final response, by level.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 14),
		}, []string{"level"}),
	}
	for _, l := range []string{"PATIENT", "STUDY", "SERIES", "IMAGE", "other"} {
		for _, o := range []string{"success", "cancelled", "refused", "failed"} {
			f.queries.WithLabelValues(l, o)
		}
		if l != "other" {
			f.duration.WithLabelValues(l)
		}
	}
	if reg != nil {
		reg.MustRegister(f.queries, f.matches, f.duration)
	}
	return f
}

func (f *finder) Find(ctx context.Context, req *dimse.FindRequest, emit func([]byte) error) error {
	start := time.Now()
	q, err := qr.ParseQuery(req.SOPClassUID, req.TransferSyntaxUID, req.Identifier)
	if err != nil {
		f.queries.WithLabelValues("other", "refused").Inc()
		var qe *qr.Error
		if errors.As(err, &qe) {
			return &dimse.StatusError{Status: dimse.Status(qe.Status), Comment: qe.Reason, Err: err}
		}
		return err
	}
	err = f.client.Find(ctx, q, req.TransferSyntaxUID, func(b []byte) error {
		f.matches.Inc()
		return emit(b)
	})
	f.duration.WithLabelValues(q.Level).Observe(time.Since(start).Seconds())
	switch {
	case err == nil:
		f.queries.WithLabelValues(q.Level, "success").Inc()
		return nil
	case ctx.Err() != nil:
		f.queries.WithLabelValues(q.Level, "cancelled").Inc()
		return err
	}
	f.queries.WithLabelValues(q.Level, "failed").Inc()
	f.log.Warn("C-FIND: the DICOMweb server failed", "destination", f.dest, "level", q.Level, "calling_ae", req.CallingAE, "err", err)
	return &dimse.StatusError{Status: dimse.StatusUnableToProcess, Comment: fmt.Sprintf("DICOMweb server of %s failed", f.dest), Err: err}
}
