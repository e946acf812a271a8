package ledger

import (
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	transactions prometheus.Counter
	opsPerTx     prometheus.Histogram
	commitTime   prometheus.Histogram
	failures     prometheus.Counter
	enqueueWaits prometheus.Counter
	unreadable   prometheus.Counter
	rejected     *prometheus.CounterVec // reason
}

// Reasons an operation is not written, the values of the rejected counter's
// label.
const (
	rejectInvalid = "invalid"  // SQLite refuses it however often it is tried
	rejectTimeout = "timeout"  // a synchronous caller was given the error after CommitTimeout
	rejectClosed  = "closed"   // enqueued after Close
	rejectShut    = "shutdown" // still failing when Close gave up
)

func newMetrics(reg prometheus.Registerer, queued *atomic.Int64) *metrics {
	m := &metrics{
		transactions: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_ledger_transactions_total",
			Help: "Transactions the ledger's writer committed.",
		}),
		opsPerTx: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dicomgw_ledger_transaction_operations",
			Help:    "Operations (receipts, attempts, deliveries, dead letters, ...) per committed transaction.",
			Buckets: []float64{1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000},
		}),
		commitTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "dicomgw_ledger_commit_duration_seconds",
			Help:    "Time to apply and commit one transaction (BEGIN to the fsync of COMMIT).",
			Buckets: prometheus.ExponentialBuckets(0.0005, 2, 14), // 0.5 ms .. ~4 s
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_ledger_commit_failures_total",
			Help: "Transactions that failed (disk full, I/O error, locked) and were tried again.",
		}),
		enqueueWaits: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_ledger_enqueue_waits_total",
			Help: "Operations whose caller waited because the ledger's queue was full.",
		}),
		unreadable: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "dicomgw_ledger_unreadable_rows_total",
			Help: "Ledger rows skipped by a read because their content is unexpected (a state outside pending, delivered, dead; a value of the wrong type).",
		}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "dicomgw_ledger_rejected_operations_total",
			Help: "Operations not written, by reason: invalid (SQLite refuses them), timeout (a synchronous caller got the error and keeps its file), closed (after Close), shutdown (still failing when Close gave up).",
		}, []string{"reason"}),
	}
	for _, r := range []string{rejectInvalid, rejectTimeout, rejectClosed, rejectShut} {
		m.rejected.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.transactions, m.opsPerTx, m.commitTime, m.failures, m.enqueueWaits, m.unreadable, m.rejected,
			prometheus.NewGaugeFunc(prometheus.GaugeOpts{
				Name: "dicomgw_ledger_queued_operations",
				Help: "Operations queued for the ledger's writer and not committed yet.",
			}, func() float64 { return float64(queued.Load()) }))
	}
	return m
}
